// The control server's WebSocket against Node's ws package (Debian's
// node-ws): echo of text, binary, a fragmented and a large message, ping,
// a flood, both close handshakes, and the refusals (no token, another
// origin). Run by test_control_clients.sh: node control_ws.js PORT TOKEN
'use strict';
const WebSocket = require('/usr/share/nodejs/ws');
const assert = require('assert');

const [port, token] = process.argv.slice(2);
const url = `ws://127.0.0.1:${port}/ws`;
const auth = { Authorization: 'Bearer ' + token };

setTimeout(() => { console.error('timed out'); process.exit(1); }, 20000).unref();

function open(headers) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (req, res) => {
      req.destroy(); // ws leaves it to us once we listen
      reject(new Error('status ' + res.statusCode));
    });
    ws.once('error', reject);
  });
}

function next(ws) {
  return new Promise(resolve => ws.once('message', (data, binary) => resolve({ data, binary })));
}

function closed(ws) {
  return new Promise(resolve => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

async function refused(headers, status) {
  try {
    await open(headers);
  } catch (e) {
    assert.strictEqual(e.message, 'status ' + status);
    return;
  }
  throw new Error('opened, expected ' + status);
}

async function main() {
  let ws = await open(auth);
  ws.send('hello');
  let m = await next(ws);
  assert.strictEqual(m.binary, false);
  assert.strictEqual(m.data.toString(), 'hello');

  const bin = Buffer.from([0, 1, 2, 253, 254, 255]);
  ws.send(bin);
  m = await next(ws);
  assert.strictEqual(m.binary, true);
  assert.deepStrictEqual(m.data, bin);

  ws.send('frag', { fin: false });
  ws.send('ment€', { fin: true });
  m = await next(ws);
  assert.strictEqual(m.data.toString(), 'fragment€');

  const big = Buffer.alloc(700 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) % 251;
  ws.send(big);
  m = await next(ws);
  assert.ok(m.data.equals(big), 'large message echoed');

  const pong = new Promise(resolve => ws.once('pong', resolve));
  ws.ping('are you there');
  assert.strictEqual((await pong).toString(), 'are you there');

  let n = 0;
  const all = new Promise(resolve => {
    const on = () => { if (++n === 300) { ws.off('message', on); resolve(); } };
    ws.on('message', on);
  });
  ws.send('flood 300');
  await all;

  // The server closes (4000), the client answers.
  const c1 = closed(ws);
  ws.send('close');
  const r1 = await c1;
  assert.strictEqual(r1.code, 4000);
  assert.strictEqual(r1.reason, 'asked to');

  // The client closes.
  ws = await open(auth);
  const c2 = closed(ws);
  ws.close(1000, 'bye');
  assert.strictEqual((await c2).code, 1000);

  await refused({}, 401);
  await refused({ Authorization: 'Bearer wrong' }, 401);
  await refused({ ...auth, Origin: 'http://evil.example' }, 403);
  await refused({ ...auth, Host: 'evil.example' }, 421);
  // Same origin, as the web UI would.
  ws = await open({ ...auth, Origin: `http://127.0.0.1:${port}` });
  ws.close();
  console.log('ws: ok');
}

main().catch(e => { console.error(e); process.exit(1); });
