// The web UI: a view per page of the header, chosen by the URL's hash.
import { put, h } from "./dom.js";
import { Live } from "./live.js";
import { flowsView } from "./flows.js";
import { devicesView } from "./devices.js";
import { certsView } from "./certs.js";
import { eventsView, keepLog } from "./events.js";
import { configView } from "./config.js";

const views = { flows: flowsView, devices: devicesView, certs: certsView, events: eventsView, config: configView };
const ctx = { live: new Live() };
keepLog(ctx.live);
let leave = null;
let currentName = null;

const conn = document.getElementById("conn");
ctx.live.on("state", (s) => {
  conn.textContent = s;
  conn.className = `conn ${s}`;
});

function route() {
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0] || "flows");
  const view = views[name] || flowsView;
  if (name === currentName) return;
  currentName = name;
  if (leave) leave();
  leave = null;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("on", a.dataset.view === name);
  const root = document.getElementById("view");
  put(root);
  root.className = `view-${name}`;
  try {
    leave = view(root, ctx) || null;
  } catch (e) {
    put(root, h("p", { class: "error" }, String(e)));
  }
}

window.addEventListener("hashchange", route);
route();
