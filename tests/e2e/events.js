// Live events of the control API: subscribes with a filter and prints each
// event of TYPE ("flow", "flow_start" or "held") as its URL (or host; for
// "held", EVENT PHASE URL) as it arrives, one a line, until N of them or
// the time is up; first prints "subscribed" once the server confirmed.
//   node events.js URL TOKEN N SECONDS [TYPE]
const WebSocket = require("ws");
const [url, token, n, secs, type = "flow"] = process.argv.slice(2);
let seen = 0;
const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
const timer = setTimeout(() => {
  console.error(`events: ${seen} of ${n} ${type} events in ${secs} s`);
  process.exit(1);
}, Number(secs) * 1000);
ws.on("message", (data) => {
  const m = JSON.parse(data.toString());
  if (m.type === "subscribed") console.log("subscribed");
  if (m.type === "error") {
    console.error(`events: ${m.message}`);
    process.exit(1);
  }
  if (m.type !== type) return;
  console.log(m.flow ? m.flow.url || m.flow.host : `${m.event} ${m.item.phase} ${m.item.url}`);
  if (++seen >= Number(n)) {
    clearTimeout(timer);
    ws.close();
    process.exit(0);
  }
});
ws.on("error", (e) => {
  console.error(`events: ${e.message}`);
  process.exit(1);
});
