// The flows view: the filter bar with quick filters, the live list and the
// selected flow's detail.
import { h, put, clear } from "./dom.js";
import * as api from "./api.js";
import { FlowList, listHeader } from "./flowlist.js";
import { showFlow } from "./detail.js";

// A literal as a quoted regex argument of the filter language.
function literal(s) {
  const re = s.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&");
  return `"${re.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

export function filterOf(text, quick) {
  const parts = [];
  const t = text.trim();
  if (t) parts.push(t);
  if (quick.peer) parts.push(`~peer ${literal(quick.peer).replace(/^"/, '"^').replace(/"$/, '$"')}`);
  if (quick.host) parts.push(`~d ${literal(quick.host.toLowerCase())}`);
  if (quick.status) parts.push(`~c ${quick.status}`);
  if (quick.type) parts.push(quick.type);
  // The text alone keeps the columns of its errors; with quick filters it
  // is grouped (errors are then found with the text alone, see apply).
  if (parts.length > 1 && t) parts[0] = `(${t})`;
  return { filter: parts.join(" & "), text: t, grouped: parts.length > 1 && !!t };
}

export function flowsView(root, ctx) {
  const url = new URLSearchParams(location.hash.split("?")[1] || "");
  const input = h("input", {
    id: "filter", class: "filter", type: "search", spellcheck: "false", autocomplete: "off",
    placeholder: "filter: ~d example.com & ~c 4xx   (docs/filters.md)", value: url.get("filter") || "",
    "aria-label": "filter expression",
  });
  const err = h("div", { class: "filter-error", hidden: true, role: "alert" });
  const peerSel = h("select", { "aria-label": "device" }, h("option", { value: "" }, "all devices"));
  const hostIn = h("input", { type: "search", placeholder: "host", class: "q-host", "aria-label": "host" });
  const statusSel = h("select", { "aria-label": "status" },
    ["", "2xx", "3xx", "4xx", "5xx"].map((s) => h("option", { value: s }, s || "any status")));
  const typeSel = h("select", { "aria-label": "type" },
    [["", "any type"], ["~http", "HTTP"], ["~websocket", "WebSocket"], ["~tcp", "TCP"], ["~udp", "UDP"], ["~dns", "DNS"],
     ["~e", "errors"], ["~tls-rejected", "rejected certificate"], ["~passthrough", "passthrough"]]
      .map(([v, t]) => h("option", { value: v }, t)));
  const follow = h("button", { class: "toggle on", title: "new flows enter at the top", type: "button" }, "Following");
  const pill = h("button", { class: "pill", hidden: true, type: "button" });
  const har = h("a", { class: "btn", title: "the current filter's HTTP exchanges as HAR", download: "wgmitm.har" }, "Export HAR");
  const info = h("span", { class: "info" });
  const scroller = h("div", { class: "vl", id: "flowlist", role: "grid", "aria-label": "flows" });
  const detail = h("section", { class: "detail", id: "detail", hidden: true });

  put(root,
    h("section", { class: "flows" },
      h("form", { class: "filterbar", onsubmit: (e) => { e.preventDefault(); apply(); } },
        h("div", { class: "filter-row" }, input, h("button", { type: "submit" }, "Apply")),
        err,
        h("div", { class: "quick" }, peerSel, hostIn, statusSel, typeSel, follow, pill,
          h("button", { type: "button", onclick: () => list.reset(current.filter).catch(showErr), title: "newest flows" }, "Top"),
          h("button", { type: "button", onclick: () => list.toEnd().catch(showErr), title: "oldest flows" }, "End"),
          har, info)),
      h("div", { class: "split" },
        h("div", { class: "list" }, listHeader(), scroller),
        detail)));

  const list = new FlowList(scroller, {
    onSelect: (f) => {
      detail.hidden = false;
      root.querySelector(".split").classList.add("with-detail");
      showFlow(detail, f.id, {
        close: () => {
          detail.hidden = true;
          root.querySelector(".split").classList.remove("with-detail");
        },
      });
    },
    onState: (s) => {
      follow.textContent = s.following ? "Following" : "Paused";
      follow.classList.toggle("on", s.following);
      const waiting = s.pending || (!s.atHead && s.following);
      pill.hidden = !waiting;
      pill.textContent = s.pending ? `▲ ${s.pending} new` : "▲ newer flows";
      info.textContent = `${s.rows} rows held${s.loading ? " · loading…" : ""}`;
    },
  });
  follow.addEventListener("click", () => list.setFollowing(!list.following));
  pill.addEventListener("click", () => list.showNew());

  let current = { filter: "" };
  function showErr(e) {
    err.hidden = false;
    put(err, e.message || String(e));
  }

  // Each apply is numbered; when the latest is done (list shown or error
  // shown) the list says so in data-applied, which the browser tests wait
  // for rather than guessing from rows that may still be the last filter's.
  let applies = 0;
  async function apply() {
    const seq = ++applies;
    try {
      await applyFilter();
    } finally {
      if (seq === applies) scroller.dataset.applied = String(seq);
    }
  }

  async function applyFilter() {
    const q = filterOf(input.value, {
      peer: peerSel.value, host: hostIn.value.trim(), status: statusSel.value, type: typeSel.value,
    });
    err.hidden = true;
    clear(err);
    input.classList.remove("bad");
    // Subscribed first: what is recorded while the page loads is not missed.
    ctx.live.subscribe(q.filter || true);
    try {
      await list.reset(q.filter);
    } catch (e0) {
      let e = e0;
      if (e.column && q.grouped) {
        // Where in the text typed: ask about the text alone.
        try {
          await api.get(`/api/flows${api.qs({ filter: q.text, limit: 1 })}`);
        } catch (e1) {
          e = e1;
        }
      }
      if (e.column && (!q.grouped || e !== e0)) {
        const col = e.column; // in the text typed
        input.classList.add("bad");
        const text = input.value.trim();
        const at = Math.max(0, Math.min(col - 1, text.length));
        err.hidden = false;
        put(err,
          h("div", { class: "msg" }, e.message),
          h("pre", { class: "caret" },
            text.slice(0, at), h("mark", null, text.slice(at, at + 1) || " "), text.slice(at + 1), "\n",
            " ".repeat(at) + "^"));
        err.dataset.column = String(col);
        input.focus();
        const start = input.value.indexOf(text) + at;
        input.setSelectionRange(start, start + 1);
      } else {
        showErr(e);
      }
      return;
    }
    current = q;
    har.href = `/api/har${api.qs({ filter: q.filter })}`;
    const u = new URLSearchParams();
    if (input.value.trim()) u.set("filter", input.value.trim());
    const s = u.toString();
    history.replaceState(null, "", `#/flows${s ? "?" + s : ""}`);
  }

  for (const e of [peerSel, statusSel, typeSel]) e.addEventListener("change", apply);
  hostIn.addEventListener("change", apply);

  const offFlow = ctx.live.on("flow", (m) => list.live(m.flow));
  const offDropped = ctx.live.on("dropped", () => list.dropped());
  const offRe = ctx.live.on("reconnect", () => list.dropped());
  api.get("/api/peers").then((j) => {
    for (const p of j.peers) peerSel.appendChild(h("option", { value: p.name }, p.name));
  }).catch(() => {});
  har.href = "/api/har";
  apply();
  return () => { offFlow(); offDropped(); offRe(); };
}
