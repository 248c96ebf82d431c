// One flow: its record from /api/flows/ID, decoded bodies from
// /api/flows/ID/PART/body?decode=1, the connection's record, and the
// views of each type (HTTP exchange, WebSocket messages, DNS answers, TCP
// first bytes). Everything shown is text or elements built here.
import { h, put, download, copyText } from "./dom.js";
import * as api from "./api.js";
import { fmtDateTime, fmtBytes, fmtMs } from "./format.js";
import { bodyViewer, bytesOfBody, hexView, jsonTree } from "./viewers.js";
import { curlOf } from "./curl.js";

const BODY_FETCH_MAX = 64 << 20;
let shown = 0; // the flow on screen; older loads are dropped

function kv(pairs) {
  return h("table", { class: "kv" },
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
      .map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, v instanceof Node ? v : String(v)))));
}

function section(title, body, open = true) {
  const d = h("details", { class: "sec", open }, h("summary", null, title), body);
  return d;
}

function headerTable(headers) {
  if (!headers || !headers.length) return h("p", { class: "muted" }, "no headers");
  return h("table", { class: "headers" },
    headers.map(([n, v]) => h("tr", null, h("th", null, n), h("td", null, v))));
}

export function header(headers, name) {
  const l = name.toLowerCase();
  for (const [n, v] of headers || []) if (n.toLowerCase() === l) return v;
  return null;
}

// A body section: fetched decoded when opened.
function bodySection(id, part, msg) {
  const b = msg && msg.body;
  const ct = header(msg && msg.headers, "content-type");
  if (!b || !b.size) return h("p", { class: "muted body-empty" }, "no body");
  const box = h("div", { class: "body", dataset: { part } });
  const enc = header(msg.headers, "content-encoding");
  const note = [fmtBytes(b.size), enc ? `${enc}, decoded` : null, b.truncated ? "truncated when recorded" : null]
    .filter(Boolean).join(" · ");
  const dl = h("button", { type: "button", onclick: async () => {
    const res = await api.raw(`/api/flows/${api.enc(id)}/${part}/body?decode=1`);
    download(`${id}-${part}.bin`, await res.arrayBuffer());
  } }, "Download");
  box.append(h("div", { class: "body-bar" }, h("span", { class: "note" }, note), dl), h("p", { class: "muted" }, "loading…"));
  (async () => {
    if (b.size > BODY_FETCH_MAX) {
      put(box, box.firstChild, h("p", null, "too large to show: download it"));
      return;
    }
    const res = await api.raw(`/api/flows/${api.enc(id)}/${part}/body?decode=1`);
    const left = res.headers.get("X-Wgmitm-Body");
    const bytes = new Uint8Array(await res.arrayBuffer());
    put(box, box.firstChild, bodyViewer(bytes, ct, left ? `decoding: ${left}` : null));
  })().catch((e) => put(box, box.firstChild, h("p", { class: "error" }, e.message)));
  return box;
}

// The certificate the upstream presented (on the tcp record only): the
// upstream's own strings, shown as text.
function certView(c) {
  const str = (v) => (typeof v === "string" ? v : null);
  const sans = Array.isArray(c.sans) ? c.sans.filter((x) => typeof x === "string") : [];
  const more = Number.isInteger(c.sans_more) && c.sans_more > 0 ? ` (and ${c.sans_more} more)` : "";
  const verdict = c.verified === true ? "verified"
    : `not verified: ${str(c.verify_error) || "unknown reason"}${c.insecure === true ? " (--insecure-upstream: the connection went on)" : ""}`;
  return h("div", { class: "cert" },
    h("h4", null, "Upstream certificate"),
    kv([["subject", str(c.subject)], ["issuer", str(c.issuer)],
      ["names", sans.length ? sans.join(", ") + more : "none"],
      ["valid from", str(c.not_before)], ["valid until", str(c.not_after)],
      ["SHA-256", str(c.sha256)],
      ["verification", h("span", { class: c.verified === true ? "cert-ok" : "cert-bad", dataset: { verified: String(c.verified === true) } }, verdict)]]));
}

// A null leg: plaintext on that side (a reverse or forward listener
// terminates or originates TLS on one side only), or a failed upstream.
function tlsLegs(tls, via) {
  if (!tls) return null;
  const plain = via === "reverse" || via === "forward";
  const leg = (name, l) => l ? [name, `${l.version || "?"} · ${l.cipher || "?"} · ALPN ${l.alpn || "none"}`] : [name, plain ? "plaintext" : null];
  const legs = kv([leg("client ↔ wgmitm", tls.client), leg("wgmitm ↔ upstream", tls.upstream)]);
  const cert = tls.upstream && tls.upstream.cert && typeof tls.upstream.cert === "object" ? certView(tls.upstream.cert) : null;
  return cert ? h("div", { class: "tls" }, legs, cert) : legs;
}

function timings(rec) {
  const t = rec.timings;
  if (!t || !t.start) return null;
  const t0 = new Date(t.start).getTime();
  const end = new Date(t.end || t.response_start || t.request_end || t.start).getTime();
  const span = Math.max(end - t0, 0.001);
  const steps = [["request sent", t.start, t.request_end], ["waiting", t.request_end, t.response_start], ["response", t.response_start, t.end]];
  return h("div", { class: "timings" }, steps.map(([name, a, b]) => {
    if (!a || !b) return h("div", { class: "t-row" }, h("span", { class: "t-name" }, name), h("span", { class: "muted" }, "not reached"));
    const s = new Date(a).getTime() - t0, e = new Date(b).getTime() - t0;
    const bar = h("span", { class: "t-bar" });
    bar.style.marginLeft = `${(100 * s) / span}%`;
    bar.style.width = `${Math.max((100 * (e - s)) / span, 0.5)}%`;
    return h("div", { class: "t-row" }, h("span", { class: "t-name" }, name), h("span", { class: "t-track" }, bar), h("span", { class: "t-ms" }, fmtMs(e - s)));
  }));
}

function summary(rec) {
  const dur = rec.start && rec.end ? new Date(rec.end) - new Date(rec.start) : null;
  return kv([
    ["type", rec.type], ["id", rec.id], ["device", rec.peer], ["client", rec.client], ["server", rec.server],
    ["upstream", rec.upstream], ["start", fmtDateTime(rec.start)], ["duration", dur !== null ? fmtMs(dur) : null],
    ["bytes up / down", `${fmtBytes(rec.bytes_up)} / ${fmtBytes(rec.bytes_down)}`],
    ["protocol", rec.http_version || rec.proto], ["SNI", rec.sni],
    ["ALPN offered", Array.isArray(rec.alpn_offered) ? rec.alpn_offered.join(", ") : rec.alpn_offered],
    ["passthrough", rec.passthrough], ["TLS error", rec.tls_error], ["end", rec.end_reason], ["error", rec.error],
  ]);
}

function connection(rec, open) {
  if (!rec.conn) return null;
  const box = h("div", { class: "conn-rec" }, h("p", { class: "muted" }, "loading…"));
  api.get(`/api/flows/${api.enc(rec.conn)}`)
    .then((c) => put(box, summary(c), tlsLegs(c.tls, c.via), h("button", { type: "button", onclick: () => open(c.id) }, "Open the connection")))
    .catch((e) => put(box, h("p", { class: "muted" }, e.status === 404 ? "written when the connection ends" : e.message)));
  return section("Connection", box, false);
}

function wsMessages(rec) {
  const msgs = rec.messages || [];
  const list = h("div", { class: "ws-msgs" });
  for (const m of msgs) {
    const bytes = bytesOfBody(m.body);
    const more = h("div", { class: "ws-body", hidden: true });
    const row = h("div", { class: `ws-msg ${m.dir}` },
      h("span", { class: "dir" }, m.dir === "up" ? "▲ up" : "▼ down"),
      h("span", null, m.opcode), h("span", null, fmtBytes(m.body ? m.body.size : 0)),
      h("span", { class: "t" }, fmtDateTime(m.time)),
      h("span", { class: "preview" }, m.body && typeof m.body.text === "string" ? m.body.text.slice(0, 120) : ""));
    row.addEventListener("click", () => {
      more.hidden = !more.hidden;
      if (!more.hidden && !more.firstChild) more.appendChild(bodyViewer(bytes, m.opcode === "text" ? "text/plain" : ""));
    });
    list.append(row, more);
  }
  if (rec.close) list.append(h("p", null, `close: ${rec.close.dir} ${rec.close.code ?? ""} ${rec.close.reason || ""}`));
  return section(`WebSocket messages (${msgs.length})`, list);
}

function dnsAnswers(rec) {
  const a = rec.answers || [];
  return section("DNS", h("div", null,
    kv([["name", rec.name], ["type", rec.qtype], ["rcode", rec.rcode], ["transport", rec.transport], ["upstream", rec.upstream]]),
    a.length ? h("table", { class: "grid" }, h("tr", null, ["name", "type", "TTL", "data"].map((t) => h("th", null, t))),
      a.map((x) => h("tr", null, h("td", null, x.name), h("td", null, x.type), h("td", null, x.ttl), h("td", null, x.data))))
      : h("p", { class: "muted" }, "no answers")));
}

export async function showFlow(root, id, { close }) {
  const me = ++shown;
  put(root, h("p", { class: "muted" }, "loading…"));
  let rec;
  try {
    rec = await api.get(`/api/flows/${api.enc(id)}`);
  } catch (e) {
    if (me === shown) put(root, h("p", { class: "error" }, e.message));
    return;
  }
  if (me !== shown) return;
  const open = (other) => showFlow(root, other, { close });
  const title = rec.type === "http" || rec.type === "websocket"
    ? [rec.method ? h("b", null, rec.method, " ") : null, h("span", { class: "url" }, rec.url || ""),
       rec.response && rec.response.status ? h("b", { class: `st s${Math.floor(rec.response.status / 100)}` }, " ", rec.response.status) : null]
    : [h("b", null, rec.type, " "), h("span", null, `${rec.client || ""} → ${rec.sni || rec.name || rec.server || ""}`)];
  const tools = h("div", { class: "tools" });
  if (rec.type === "http") {
    const status = h("span", { class: "note" });
    tools.append(
      h("button", { type: "button", onclick: async () => {
        const text = curlOf(rec);
        status.textContent = (await copyText(text)) ? "copied" : "";
        if (!status.textContent) tools.append(h("textarea", { class: "curl", readonly: true }, text));
      } }, "Copy as curl"),
      status);
  }
  tools.append(h("button", { type: "button", onclick: () => download(`${rec.id}.json`, JSON.stringify(rec, null, 2)) }, "Download record"));
  const parts = [
    h("div", { class: "d-head" }, h("div", { class: "d-title" }, title),
      h("button", { type: "button", class: "close", title: "close", onclick: close }, "×")),
    tools,
    section("Summary", summary(rec)),
  ];
  if (rec.type === "http") {
    parts.push(
      section("Request", h("div", null, headerTable(rec.request && rec.request.headers), bodySection(rec.id, "request", rec.request))),
      section("Response", rec.response
        ? h("div", null, headerTable(rec.response.headers), bodySection(rec.id, "response", rec.response))
        : h("p", { class: "muted" }, "no response")));
    const t = timings(rec);
    if (t) parts.push(section("Timings", t));
    if (rec.tls) parts.push(section("TLS", tlsLegs(rec.tls, rec.via)));
    if (rec.websocket) parts.push(h("p", { class: "muted" }, "Upgraded to WebSocket: its messages are the websocket flows of this URL (filter ~websocket)."));
  }
  if (rec.type === "websocket") parts.push(wsMessages(rec));
  if (rec.type === "dns") parts.push(dnsAnswers(rec));
  if (rec.type === "tcp") {
    if (rec.tls) parts.push(section("TLS", tlsLegs(rec.tls, rec.via)));
    if (rec.first_up) parts.push(section("First bytes up", hexView(bytesOfBody(rec.first_up))));
    if (rec.first_down) parts.push(section("First bytes down", hexView(bytesOfBody(rec.first_down))));
  }
  const c = connection(rec, open);
  if (c) parts.push(c);
  parts.push(section("Record", jsonTree(rec), false));
  put(root, ...parts);
  root.dataset.flow = rec.id;
}
