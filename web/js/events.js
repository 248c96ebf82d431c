// Events: the endpoint's log lines and counters, live from /api/events.
import { h, put } from "./dom.js";
import * as api from "./api.js";

const LOG_MAX = 1000;
const log = []; // kept across visits to the view
let logListener = null;

export function keepLog(live) {
  if (logListener) return;
  logListener = live.on("log", (m) => {
    log.push({ time: new Date(), level: m.level, message: m.message });
    if (log.length > LOG_MAX) log.shift();
  });
}

function counters(stats) {
  return h("div", { class: "counters" }, Object.entries(stats || {}).map(([layer, v]) =>
    h("div", { class: "layer" }, h("h3", null, layer),
      v && typeof v === "object"
        ? h("table", { class: "kv" }, Object.entries(v).map(([k, x]) =>
          h("tr", null, h("th", null, k), h("td", null, typeof x === "object" ? JSON.stringify(x) : String(x)))))
        : h("p", null, String(v)))));
}

export function eventsView(root, ctx) {
  keepLog(ctx.live);
  const status = h("div", { class: "status" });
  const stats = h("div", { class: "stats" }, h("p", { class: "muted" }, "waiting for counters…"));
  const lines = h("div", { class: "log", id: "log" });
  put(root, h("section", { class: "events" },
    h("h2", null, "Status"), status,
    h("h2", null, "Log"), lines,
    h("h2", null, "Counters"), stats));
  const line = (l) => h("div", { class: `l ${l.level}` }, h("span", { class: "t" }, l.time.toLocaleTimeString()), h("span", { class: "lv" }, l.level), h("span", null, l.message));
  put(lines, ...log.map(line));
  const offLog = ctx.live.on("log", (m) => {
    lines.appendChild(line({ time: new Date(), level: m.level, message: m.message }));
    while (lines.childElementCount > LOG_MAX) lines.firstChild.remove();
    lines.scrollTop = lines.scrollHeight;
  });
  const offStats = ctx.live.on("stats", (m) => put(stats, counters(m.stats)));
  api.get("/api/status").then((s) => put(status, h("table", { class: "kv" },
    Object.entries(s).map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, typeof v === "object" ? JSON.stringify(v) : String(v)))))))
    .catch((e) => put(status, h("p", { class: "error" }, e.message)));
  return () => { offLog(); offStats(); };
}
