// The live events WebSocket (/api/events): one connection for the page,
// reconnecting, with the flow subscription of the list and the log and
// counters the event view shows.

export class Live {
  constructor() {
    this.handlers = new Map(); // type -> Set of fn
    this.flowFilter = true; // true: every flow; string: a filter
    this.gen = 0; // subscriptions sent; flows of older ones are ignored
    this.acked = 0;
    this.backoff = 500;
    this.state = "offline";
    this.connect();
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  emit(type, msg) {
    for (const fn of this.handlers.get(type) || []) fn(msg);
  }

  setState(s) {
    this.state = s;
    this.emit("state", s);
  }

  connect() {
    const url = `ws://${location.host}/api/events?stats=1&log=1`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.setState("connecting");
    ws.onopen = () => {
      this.backoff = 500;
      this.gen = 0;
      this.acked = -1; // the server's answer to the query string comes first
      this.setState("live");
      this.subscribe(this.flowFilter);
    };
    ws.onmessage = (ev) => {
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (m.type === "error") this.acked++; // a refused subscription is answered too
      if (m.type === "subscribed") {
        this.acked++;
        this.emit("subscribed", m);
        return;
      }
      if (m.type === "flow" && this.acked < this.gen) return; // an older subscription's
      this.emit(m.type, m);
    };
    ws.onclose = () => {
      if (this.ws === ws) {
        this.setState("offline");
        this.emit("reconnect", null);
        this.retry();
      }
    };
  }

  retry() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  }

  // true: every flow; a filter string: those; the list subscribes anew
  // with each filter it shows.
  subscribe(filter) {
    this.flowFilter = filter || true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.gen++;
      this.ws.send(JSON.stringify({ flows: this.flowFilter }));
    }
  }
}
