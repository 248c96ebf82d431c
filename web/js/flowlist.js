// The flow list: a virtual list over the server's pages. The browser holds
// a window of at most MAX_ROWS outlines around what is on screen, fetched
// with keyset paging (before=ID / after=ID of the window's edge rows) and
// trimmed on the far side as the reader scrolls; only the rows in view
// (plus a few) exist in the DOM, recycled as the list scrolls. New flows
// come from the events WebSocket, filtered on the server, and enter at the
// top: while following, the rows in view stay where they are unless the
// reader is at the very top; while paused, they wait in `pending`.
import { h, clear } from "./dom.js";
import * as api from "./api.js";
import { fmtTime, fmtBytes, fmtMs, splitUrl } from "./format.js";

export const ROW_H = 24;
const PAGE = 200; // rows per fetch
const MAX_ROWS = 1200; // rows held at most
const MARGIN = 150; // fetch when fewer rows than this lie beyond the view
const PENDING_MAX = 5000;

const COLS = [
  ["time", "Time"], ["peer", "Device"], ["method", "Method"], ["host", "Host"],
  ["path", "Path"], ["status", "Status"], ["type", "Type"], ["size", "Size"],
  ["dur", "Duration"], ["flags", ""],
];

export function listHeader() {
  return h("div", { class: "lhead row" }, COLS.map(([k, t]) => h("span", { class: `c-${k}` }, t)));
}

function typeLabel(f) {
  if (f.type === "tcp" && f.proto) return `tcp · ${f.proto}`;
  if (f.websocket && f.type === "http") return "http→ws";
  return f.type || "";
}

function statusClass(s) {
  return s ? `s${Math.floor(s / 100)}` : "";
}

export class FlowList {
  constructor(scroller, { onSelect, onState }) {
    this.el = scroller;
    this.space = h("div", { class: "vl-space" });
    this.el.appendChild(this.space);
    this.pool = [];
    this.onSelect = onSelect;
    this.onState = onState || (() => {});
    this.rows = [];
    this.ids = new Set();
    this.pending = [];
    this.queue = []; // live flows waiting for the next frame
    this.following = true;
    this.atHead = this.atTail = false;
    this.selected = null;
    this.gen = 0;
    this.loading = false;
    this.filter = "";
    this.early = null;
    this.el.addEventListener("scroll", () => this.schedule());
    this.el.tabIndex = 0;
    this.el.addEventListener("keydown", (e) => this.key(e));
    new ResizeObserver(() => this.schedule()).observe(this.el);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.flushLive();
      this.render();
      this.maybeLoad();
    });
  }

  state() {
    this.onState({
      rows: this.rows.length, pending: this.pending.length, atHead: this.atHead,
      atTail: this.atTail, following: this.following, loading: this.loading,
    });
  }

  setRows(rows) {
    this.rows = rows;
    this.ids = new Set(rows.map((r) => r.id));
  }

  // A new filter (already checked by the server) or the same one anew:
  // the newest page.
  async reset(filter) {
    this.filter = filter;
    const gen = ++this.gen;
    this.pending = [];
    this.queue = [];
    this.early = []; // live flows that came while the page loaded
    this.loading = true;
    this.state();
    let page;
    try {
      page = await api.get(`/api/flows${api.qs({ filter, limit: PAGE })}`);
    } catch (e) {
      if (gen === this.gen) this.early = null;
      throw e;
    } finally {
      if (gen === this.gen) this.loading = false;
    }
    if (gen !== this.gen) return;
    for (const f of page.flows) f.fromStore = true;
    this.setRows(page.flows);
    this.atHead = true;
    this.atTail = !page.next_cursor;
    this.el.scrollTop = 0;
    const early = this.early.filter((f) => !this.ids.has(f.id));
    this.early = null;
    if (this.following) this.insertTop(early);
    else this.pending.push(...early);
    // A flow recorded just before the subscription took effect, and not
    // yet in the store (it commits every 100 ms, later when busy): asked
    // for again a few times.
    for (const ms of [300, 1000, 3000]) setTimeout(() => this.catchUp(gen), ms);
    this.schedule();
    this.state();
  }

  async toEnd() {
    const gen = ++this.gen;
    this.pending = [];
    this.loading = true;
    const page = await api.get(`/api/flows${api.qs({ filter: this.filter, limit: PAGE, order: "oldest" })}`);
    this.loading = false;
    if (gen !== this.gen) return;
    for (const f of page.flows) f.fromStore = true;
    this.setRows(page.flows.reverse());
    this.atTail = true;
    this.atHead = !page.next_cursor;
    this.render();
    this.el.scrollTop = this.rows.length * ROW_H;
    this.schedule();
    this.state();
  }

  async load(dir) {
    const gen = this.gen;
    const edge = dir === "older" ? this.rows[this.rows.length - 1] : this.rows[0];
    if (!edge) return;
    this.loading = true;
    let page;
    try {
      const p = { filter: this.filter, limit: PAGE };
      p[dir === "older" ? "before" : "after"] = edge.id;
      page = await api.get(`/api/flows${api.qs(p)}`);
    } catch (e) {
      this.loading = false;
      // A live row the store has not taken in yet: try again shortly.
      if (e.status === 404) setTimeout(() => this.schedule(), 300);
      return;
    }
    this.loading = false;
    if (gen !== this.gen) return;
    for (const f of page.flows) f.fromStore = true;
    const fresh = page.flows.filter((f) => !this.ids.has(f.id));
    for (const f of fresh) this.ids.add(f.id);
    if (dir === "older") {
      this.rows.push(...fresh);
      this.atTail = !page.next_cursor;
      this.trim("top");
    } else {
      fresh.reverse();
      this.rows.unshift(...fresh);
      this.el.scrollTop += fresh.length * ROW_H;
      if (!page.next_cursor) {
        this.atHead = true;
        if (this.following) this.mergePending();
      }
      this.trim("bottom");
    }
    this.schedule();
    this.state();
  }

  async catchUp(gen) {
    if (gen !== this.gen || this.loading) return;
    const p = { filter: this.filter, limit: PAGE };
    // The newest row that came from the store (live rows may not be in it yet).
    const newest = this.rows.find((f) => f.fromStore);
    if (newest) p.after = newest.id;
    let page;
    try {
      page = await api.get(`/api/flows${api.qs(p)}`);
    } catch {
      return;
    }
    if (gen !== this.gen) return;
    for (const f of page.flows) f.fromStore = true;
    const fresh = page.flows.filter((f) => !this.ids.has(f.id));
    if (!newest) fresh.reverse(); // the first page comes newest first
    if (this.following && this.atHead) this.insertTop(fresh);
    else this.pending.push(...fresh);
    this.schedule();
    this.state();
  }

  // Keeps the window at MAX_ROWS, dropping from the side away from the view.
  trim(side) {
    const extra = this.rows.length - MAX_ROWS;
    if (extra <= 0) return;
    let dropped;
    if (side === "top") {
      dropped = this.rows.splice(0, extra);
      this.el.scrollTop -= extra * ROW_H;
      this.atHead = false;
    } else {
      dropped = this.rows.splice(MAX_ROWS);
      this.atTail = false;
    }
    for (const f of dropped) this.ids.delete(f.id);
  }

  maybeLoad() {
    if (this.loading || !this.rows.length) return;
    const first = Math.floor(this.el.scrollTop / ROW_H);
    const last = first + Math.ceil(this.el.clientHeight / ROW_H);
    if (!this.atTail && last > this.rows.length - MARGIN) this.load("older");
    else if (!this.atHead && first < MARGIN) this.load("newer");
  }

  // A flow from the WebSocket (oldest first as they come).
  live(f) {
    if (this.ids.has(f.id)) return;
    if (this.early) {
      this.early.push(f);
      return;
    }
    if (this.atHead && this.following) {
      this.queue.push(f);
      this.schedule();
      return;
    }
    this.pending.push(f);
    if (this.pending.length > PENDING_MAX) {
      this.pending.shift();
      this.atHead = false; // some will come from the store instead
    }
    this.state();
  }

  // The store missed sending us some: they come from the store.
  dropped() {
    this.atHead = false;
    this.schedule();
  }

  flushLive() {
    if (!this.queue.length) return;
    const batch = this.queue.filter((f) => !this.ids.has(f.id));
    this.queue = [];
    this.insertTop(batch);
  }

  insertTop(batch) {
    if (!batch.length) return;
    for (const f of batch) this.ids.add(f.id);
    batch.reverse();
    const atTop = this.el.scrollTop < ROW_H / 2;
    this.rows.unshift(...batch);
    // The reader's rows stay put, unless they watch the top.
    if (!atTop || !this.following) this.el.scrollTop += batch.length * ROW_H;
    this.trim("bottom");
    this.state();
  }

  mergePending() {
    const p = this.pending.filter((f) => !this.ids.has(f.id));
    this.pending = [];
    this.insertTop(p);
  }

  setFollowing(on) {
    this.following = on;
    if (on) this.showNew();
    this.state();
  }

  // The "new flows" pill: the newest flows, at the top.
  showNew() {
    if (this.atHead) {
      this.mergePending();
      this.el.scrollTop = 0;
      this.schedule();
    } else {
      this.reset(this.filter).catch(() => {});
    }
  }

  render() {
    this.space.style.height = `${this.rows.length * ROW_H}px`;
    const first = Math.max(0, Math.floor(this.el.scrollTop / ROW_H) - 8);
    const n = Math.ceil(this.el.clientHeight / ROW_H) + 16;
    const last = Math.min(this.rows.length, first + n);
    while (this.pool.length < n) {
      const cells = {};
      const row = h("div", { class: "row flow" }, COLS.map(([k]) => (cells[k] = h("span", { class: `c-${k}` }))));
      row.cells = cells;
      row.addEventListener("click", () => this.select(row.flow));
      this.pool.push(row);
      this.space.appendChild(row);
    }
    for (let i = 0; i < this.pool.length; i++) {
      const row = this.pool[i], idx = first + i;
      if (idx >= last) {
        row.hidden = true;
        row.flow = null;
        continue;
      }
      row.hidden = false;
      row.style.transform = `translateY(${idx * ROW_H}px)`;
      const f = this.rows[idx];
      if (row.flow !== f) this.fill(row, f);
      row.classList.toggle("sel", this.selected === f.id);
    }
  }

  fill(row, f) {
    row.flow = f;
    const c = row.cells;
    const [, path] = splitUrl(f.url);
    c.time.textContent = fmtTime(f.start);
    c.peer.textContent = f.peer || "";
    c.method.textContent = f.method || "";
    c.host.textContent = f.host || "";
    c.host.title = f.host || "";
    c.path.textContent = path;
    c.path.title = f.url || "";
    c.status.textContent = f.status || "";
    c.status.className = `c-status ${statusClass(f.status)}`;
    c.type.textContent = typeLabel(f);
    c.size.textContent = fmtBytes(f.size);
    c.dur.textContent = fmtMs(f.duration_ms);
    clear(c.flags);
    if (f.tls_rejected) c.flags.appendChild(h("b", { class: "badge rej", title: "the client rejected our certificate" }, "rejected"));
    if (f.passthrough) c.flags.appendChild(h("b", { class: "badge pass", title: "TLS passed through" }, "pass"));
    if (f.websocket) c.flags.appendChild(h("b", { class: "badge ws" }, "ws"));
    if (f.error) c.flags.appendChild(h("b", { class: "badge err", title: f.error }, "error"));
    row.classList.toggle("error", !!f.error);
    row.dataset.id = f.id;
  }

  select(f) {
    if (!f) return;
    this.selected = f.id;
    this.render();
    this.onSelect(f);
  }

  key(e) {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    e.preventDefault();
    let i = this.rows.findIndex((f) => f.id === this.selected);
    i = Math.max(0, Math.min(this.rows.length - 1, i + (e.key === "ArrowDown" ? 1 : -1)));
    const f = this.rows[i];
    if (!f) return;
    const top = i * ROW_H;
    if (top < this.el.scrollTop) this.el.scrollTop = top;
    else if (top + ROW_H > this.el.scrollTop + this.el.clientHeight) this.el.scrollTop = top + ROW_H - this.el.clientHeight;
    this.select(f);
  }
}
