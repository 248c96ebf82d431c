// Certificates: the capture CA (fingerprint, download, install steps per
// platform), the hosts whose certificate each device rejected (pinned
// apps) with a one-click passthrough, and the passthrough list.
import { h, put } from "./dom.js";
import * as api from "./api.js";
import { ago } from "./format.js";

const STEPS = [
  ["Android", [
    "With the tunnel on, open http://wgmitm.internal in the phone's browser and tap Android (.crt).",
    "Settings → Security → Encryption & credentials → Install a certificate → CA certificate → Install anyway; pick the file.",
    "Apps trust user CAs only when they opt in (network_security_config); Chrome does.",
  ]],
  ["iPhone, iPad", [
    "With the tunnel on, open http://wgmitm.internal in Safari and tap iPhone / iPad profile.",
    "Settings → Profile Downloaded → Install.",
    "Settings → General → About → Certificate Trust Settings → turn on full trust for the wgmitm CA.",
  ]],
  ["macOS", ["sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain wgmitm-ca.pem"]],
  ["Windows", ["certutil -addstore Root wgmitm-ca.pem (as administrator)"]],
  ["Debian, Ubuntu", ["sudo cp wgmitm-ca.pem /usr/local/share/ca-certificates/wgmitm-ca.crt && sudo update-ca-certificates"]],
  ["Firefox", ["Settings → Privacy & Security → Certificates → View Certificates → Authorities → Import."]],
  ["curl", ["curl --cacert wgmitm-ca.pem https://…"]],
];

// Groups rejected-certificate connections by device and host.
export function rejectedByDevice(flows) {
  const by = new Map();
  for (const f of flows) {
    const dev = f.peer || "(no device)";
    if (!by.has(dev)) by.set(dev, new Map());
    const hosts = by.get(dev);
    const e = hosts.get(f.host) || { host: f.host, count: 0, last: f.start };
    e.count++;
    if (f.start > e.last) e.last = f.start;
    hosts.set(f.host, e);
  }
  return by;
}

export function certsView(root) {
  const ca = h("div", { class: "ca" }, h("p", { class: "muted" }, "loading…"));
  const rejected = h("div", { class: "rejected" }, h("p", { class: "muted" }, "loading…"));
  const pass = h("div", { class: "passlist" });
  const msg = h("div", { class: "form-error", role: "alert", hidden: true });
  put(root, h("section", { class: "certs" },
    h("h2", null, "Capture CA"), ca,
    h("h2", null, "Install it"),
    h("div", { class: "steps" }, STEPS.map(([name, lines]) =>
      h("details", null, h("summary", null, name), h("ol", null, lines.map((l) => h("li", null, l)))))),
    h("h2", null, "Certificates rejected by devices"),
    h("p", { class: "muted" }, "Apps that pin their certificates refuse ours. Pass their hosts through to let them work (their traffic is then relayed without interception)."),
    rejected, msg,
    h("h2", null, "Passed through"), pass));

  api.get("/api/ca").then((c) => put(ca, h("table", { class: "kv" },
    h("tr", null, h("th", null, "subject"), h("td", null, c.subject)),
    h("tr", null, h("th", null, "SHA-256"), h("td", { class: "fp", id: "ca-fp" }, c.fingerprint_sha256))),
  h("a", { class: "btn", href: "/api/ca.pem", download: "wgmitm-ca.pem" }, "Download the CA (PEM)")))
    .catch((e) => put(ca, h("p", { class: "error" }, e.message)));

  async function passthrough(glob, add) {
    msg.hidden = true;
    try {
      await api.send("PATCH", "/api/config", { operation: "merge", tls_passthrough: add ? { add: [glob] } : { remove: [glob] } });
    } catch (e) {
      msg.hidden = false;
      put(msg, e.message);
    }
    load();
  }

  async function load() {
    let cfg = { tls_passthrough: [] };
    try {
      cfg = await api.get("/api/config");
    } catch (e) {
      put(pass, h("p", { class: "error" }, e.message));
    }
    const globs = cfg.tls_passthrough || [];
    put(pass, globs.length
      ? h("ul", null, globs.map((g) => h("li", null, h("code", null, g), " ",
        h("button", { type: "button", onclick: () => passthrough(g, false) }, "Intercept again"))))
      : h("p", { class: "muted" }, "nothing"));
    try {
      const j = await api.get(`/api/flows${api.qs({ filter: "~tls-rejected", limit: 1000 })}`);
      const by = rejectedByDevice(j.flows);
      if (!by.size) {
        put(rejected, h("p", { class: "muted" }, "none yet"));
        return;
      }
      put(rejected, ...[...by].map(([dev, hosts]) => h("div", { class: "dev" },
        h("h3", null, dev),
        h("table", { class: "grid" },
          h("tr", null, ["Host", "Connections", "Last", ""].map((t) => h("th", null, t))),
          [...hosts.values()].map((e) => h("tr", { dataset: { host: e.host } },
            h("td", null, e.host), h("td", null, e.count), h("td", null, ago(e.last)),
            h("td", null, globs.includes(e.host) ? h("span", { class: "muted" }, "passed through")
              : h("button", { type: "button", class: "pass-btn", onclick: () => passthrough(e.host, true) }, "Pass through"))))))));
    } catch (e) {
      put(rejected, h("p", { class: "error" }, e.message));
    }
  }
  load();
}
