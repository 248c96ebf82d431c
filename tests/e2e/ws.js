// WebSocket test peers (Debian's node-ws; run with NODE_PATH=/usr/share/nodejs).
//   ws.js server PORT CERT KEY        wss echo server on every address
//   ws.js client URL CAFILE N         sends N text and N binary messages,
//                                     checks every echo, closes with 1000
//   ws.js rules URL CAFILE            sends "hello secret", "drop me", "last";
//                                     expects the echoes "hello public" and
//                                     "last" (a rule edits one, drops one) and
//                                     no extension (nothing is compressed)
//   ws.js expect URL CAFILE SEND WANT SEND and WANT are JSON arrays of text
//                                     messages: sends SEND, expects the
//                                     echoes WANT in order, closes with 1000
'use strict';
const fs = require('fs');
const https = require('https');
const WebSocket = require('ws');

const [mode, ...a] = process.argv.slice(2);
if (mode === 'server') {
  const [port, cert, key] = a;
  const srv = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
  const wss = new WebSocket.Server({ server: srv, perMessageDeflate: true });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  srv.listen(Number(port), '::');
} else if (mode === 'client') {
  const [url, ca, n] = a;
  const count = Number(n);
  const ws = new WebSocket(url, { ca: fs.readFileSync(ca), perMessageDeflate: true });
  const want = [];
  for (let i = 0; i < count; i++) {
    want.push({ data: `text message ${i} ` + 'x'.repeat(i * 10), binary: false });
    want.push({ data: Buffer.from([0, 1, 2, 255, i & 255]), binary: true });
  }
  let got = 0;
  const timer = setTimeout(() => { console.error('timeout'); process.exit(2); }, 20000);
  ws.on('open', () => want.forEach((m) => ws.send(m.data, { binary: m.binary })));
  ws.on('message', (data, isBinary) => {
    const w = want[got++];
    const same = isBinary === w.binary && Buffer.compare(Buffer.from(data), Buffer.from(w.data)) === 0;
    if (!same) { console.error(`message ${got - 1} differs`); process.exit(1); }
    if (got === want.length) ws.close(1000, 'done');
  });
  ws.on('close', (code) => { clearTimeout(timer); process.exit(got === want.length && code === 1000 ? 0 : 1); });
  ws.on('error', (e) => { console.error(String(e)); process.exit(1); });
} else if (mode === 'rules' || mode === 'expect') {
  const [url, ca] = a;
  const send = mode === 'rules' ? ['hello secret', 'drop me', 'last'] : JSON.parse(a[2]);
  const want = mode === 'rules' ? ['hello public', 'last'] : JSON.parse(a[3]);
  const ws = new WebSocket(url, { ca: fs.readFileSync(ca), perMessageDeflate: true });
  const got = [];
  const timer = setTimeout(() => { console.error('timeout, got ' + JSON.stringify(got)); process.exit(2); }, 40000);
  ws.on('open', () => {
    if (ws.extensions) { console.error('extensions negotiated: ' + ws.extensions); process.exit(1); }
    send.forEach((m) => ws.send(m));
  });
  ws.on('message', (data) => {
    got.push(String(data));
    if (got.length === want.length) ws.close(1000, 'done');
  });
  ws.on('close', (code) => {
    clearTimeout(timer);
    const ok = JSON.stringify(got) === JSON.stringify(want) && code === 1000;
    if (!ok) console.error('got ' + JSON.stringify(got) + ' close ' + code);
    process.exit(ok ? 0 : 1);
  });
  ws.on('error', (e) => { console.error(String(e)); process.exit(1); });
} else {
  console.error('usage: ws.js server PORT CERT KEY | client URL CAFILE N | rules URL CAFILE | expect URL CAFILE SEND WANT');
  process.exit(64);
}
