// "Copy as curl": the request of an HTTP exchange as a shell command.
export function shq(s) {
  return `'${String(s).replace(/'/g, "'\\''")}'`;
}

const SKIP = new Set(["content-length", "host", "connection", "transfer-encoding"]);

export function curlOf(rec) {
  const req = rec.request || {};
  const args = ["curl"];
  if (rec.http_version === "HTTP/2") args.push("--http2");
  if (rec.method && rec.method !== "GET") args.push("-X", shq(rec.method));
  args.push(shq(rec.url || ""));
  for (const [n, v] of req.headers || []) {
    if (n.startsWith(":") || SKIP.has(n.toLowerCase())) continue;
    args.push("-H", shq(`${n}: ${v}`));
  }
  const b = req.body;
  if (b && b.size) {
    if (typeof b.text === "string") args.push("--data-binary", shq(b.text));
    else args.push("--data-binary", "@request-body.bin");
  }
  let cmd = args.join(" ");
  if (b && b.size && typeof b.text !== "string")
    cmd = `# the body is binary: save it as request-body.bin (Download in the request's body)\n${cmd}`;
  if (b && b.truncated) cmd = `# the body was cut when recorded (${b.size} bytes sent)\n${cmd}`;
  return cmd;
}
