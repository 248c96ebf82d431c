// Body viewers. The bytes are a flow's, so untrusted: text goes in text
// nodes, JSON is walked into elements, images are shown only from a blob
// URL of a checked image type (never as a page), everything else as hex.
import { h, put } from "./dom.js";
import { fmtBytes } from "./format.js";

const TEXT_MAX = 1 << 20; // characters shown as text
const HEX_MAX = 64 << 10; // bytes shown as hex
const JSON_NODES_MAX = 20000;
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif",
  "image/bmp", "image/x-icon", "image/vnd.microsoft.icon", "image/svg+xml"]);

export function mediaType(ct) {
  return (ct || "").split(";")[0].trim().toLowerCase();
}

export function isImageType(ct) {
  return IMAGE_TYPES.has(mediaType(ct));
}

export function bytesOfBody(body) {
  if (!body) return new Uint8Array();
  if (typeof body.text === "string") return new TextEncoder().encode(body.text);
  if (typeof body.base64 === "string") {
    const bin = atob(body.base64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  return new Uint8Array();
}

function utf8(bytes) {
  try {
    const s = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return s.includes("\0") ? null : s;
  } catch {
    return null;
  }
}

export function hexView(bytes) {
  const n = Math.min(bytes.length, HEX_MAX);
  const lines = [];
  for (let off = 0; off < n; off += 16) {
    let hex = "", asc = "";
    for (let i = 0; i < 16; i++) {
      if (off + i < n) {
        const b = bytes[off + i];
        hex += b.toString(16).padStart(2, "0") + (i === 7 ? "  " : " ");
        asc += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
      } else {
        hex += i === 7 ? "    " : "   ";
      }
    }
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex} ${asc}`);
  }
  if (bytes.length > n) lines.push(`… ${fmtBytes(bytes.length - n)} more`);
  return h("pre", { class: "hex" }, lines.join("\n"));
}

export function textView(text) {
  const cut = text.length > TEXT_MAX;
  return h("pre", { class: "text" }, cut ? text.slice(0, TEXT_MAX) : text, cut ? `\n… ${text.length - TEXT_MAX} more characters` : null);
}

// A foldable tree: objects and arrays are <details>, open two levels deep.
export function jsonTree(value) {
  let budget = JSON_NODES_MAX;
  function leaf(v) {
    const t = v === null ? "null" : typeof v;
    return h("span", { class: `j-${t}` }, t === "string" ? JSON.stringify(v) : String(v));
  }
  function node(key, v, depth) {
    const label = key === null ? null : h("span", { class: "j-key" }, `${key}: `);
    if (--budget < 0) return h("div", { class: "j-more" }, "…");
    if (v === null || typeof v !== "object") return h("div", { class: "j-row" }, label, leaf(v));
    const arr = Array.isArray(v);
    const entries = arr ? v.map((x, i) => [i, x]) : Object.entries(v);
    const sum = h("summary", null, label, arr ? `[${entries.length}]` : `{${entries.length}}`);
    const d = h("details", { class: "j-node" }, sum);
    if (depth < 2) d.open = true;
    let filled = false;
    const fill = () => {
      if (filled) return;
      filled = true;
      for (const [k, x] of entries) {
        if (budget < 0) {
          d.appendChild(h("div", { class: "j-more" }, "… (too large to show whole: use Text)"));
          break;
        }
        d.appendChild(node(k, x, depth + 1));
      }
    };
    if (d.open) fill();
    else d.addEventListener("toggle", fill);
    return d;
  }
  return h("div", { class: "json" }, node(null, value, 0));
}

function formView(text) {
  const p = new URLSearchParams(text);
  return h("table", { class: "kv" }, [...p].map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, v))));
}

function imageView(bytes, ct) {
  const type = mediaType(ct);
  if (!IMAGE_TYPES.has(type)) return h("p", null, "not an image type");
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const img = h("img", { class: "body-img", alt: `image (${type})`, src: url });
  img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
  img.addEventListener("error", () => URL.revokeObjectURL(url), { once: true });
  return img;
}

// The modes that fit these bytes, best first.
export function modesFor(bytes, ct) {
  const type = mediaType(ct);
  const text = utf8(bytes);
  const modes = [];
  if (IMAGE_TYPES.has(type)) modes.push("image");
  let json;
  if (text !== null && text.trim() && (/json/.test(type) || /^\s*[[{]/.test(text))) {
    try {
      json = JSON.parse(text);
      modes.push("json");
    } catch { /* not JSON */ }
  }
  if (text !== null && type === "application/x-www-form-urlencoded") modes.push("form");
  if (text !== null) modes.push("text");
  modes.push("hex");
  return { modes, text, json };
}

// A viewer with a tab per mode.
export function bodyViewer(bytes, ct, note) {
  const { modes, text, json } = modesFor(bytes, ct);
  const out = h("div", { class: "viewer" });
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const pane = h("div", { class: "pane" });
  const show = (m) => {
    for (const b of tabs.children) b.classList.toggle("on", b.dataset.mode === m);
    if (m === "image") put(pane, imageView(bytes, ct));
    else if (m === "json") put(pane, jsonTree(json));
    else if (m === "form") put(pane, formView(text));
    else if (m === "text") put(pane, textView(m === "text" && json !== undefined ? JSON.stringify(json, null, 2) : text));
    else put(pane, hexView(bytes));
    out.dataset.mode = m;
  };
  for (const m of modes)
    tabs.appendChild(h("button", { type: "button", dataset: { mode: m }, onclick: () => show(m) }, m));
  out.append(tabs, note ? h("span", { class: "note" }, note) : "", pane);
  if (bytes.length === 0) put(pane, h("p", { class: "muted" }, "empty"));
  else show(modes[0]);
  return out;
}
