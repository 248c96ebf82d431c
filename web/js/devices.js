// Devices: the peers, adding one (its QR code on screen, to scan with the
// WireGuard app), removing one, downloading its configuration.
import { h, put, download } from "./dom.js";
import * as api from "./api.js";
import { ago, fmtBytes } from "./format.js";

function splitList(s) {
  return s.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);
}

async function downloadConfig(name) {
  const res = await api.raw(`/api/peers/${api.enc(name)}/config`);
  download(`${name}.conf`, await res.arrayBuffer());
}

function qrBlock(name, config) {
  // The QR comes from the API (qr.png), loaded as this origin's image.
  const img = h("img", { class: "qr", id: "qr", alt: `QR code of ${name}'s configuration`,
    src: `/api/peers/${api.enc(name)}/qr.png`, width: 320, height: 320 });
  return h("div", { class: "qr-box" },
    h("h3", null, `Scan with the WireGuard app: ${name}`),
    h("p", null, "In the app: + → Scan from QR code, then allow the VPN configuration and turn the tunnel on."),
    img,
    h("div", { class: "tools" },
      h("button", { type: "button", onclick: () => downloadConfig(name) }, "Download config"),
      h("button", { type: "button", onclick: (e) => {
        const pre = e.target.closest(".qr-box").querySelector("pre");
        pre.hidden = !pre.hidden;
      } }, "Show config")),
    h("pre", { class: "config", hidden: true }, config || ""));
}

export function devicesView(root) {
  const table = h("tbody");
  const msg = h("div", { class: "form-error", role: "alert", hidden: true });
  const qrArea = h("div", { class: "qr-area" });
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9_.\\-]+", placeholder: "phone2", maxlength: 64, id: "dev-name" });
  const mode = h("select", { name: "mode", id: "dev-mode" },
    h("option", { value: "all" }, "all traffic"),
    h("option", { value: "apps" }, "only these Android apps"),
    h("option", { value: "exclude" }, "all but these Android apps"));
  const apps = h("input", { name: "apps", id: "dev-apps", placeholder: "com.example.app, org.other.app" });
  const allowed = h("input", { name: "allowed_ips", id: "dev-allowed", placeholder: "0.0.0.0/0, ::/0 (split tunnel: list the networks)" });
  const endpoint = h("input", { name: "endpoint", id: "dev-endpoint", placeholder: "HOST[:PORT] the device dials (default: detected)" });

  const form = h("form", { class: "add-device", onsubmit: async (e) => {
    e.preventDefault();
    msg.hidden = true;
    const body = { name: name.value.trim() };
    if (mode.value === "apps" && apps.value.trim()) body.apps = splitList(apps.value);
    if (mode.value === "exclude" && apps.value.trim()) body.exclude_apps = splitList(apps.value);
    if (allowed.value.trim()) body.allowed_ips = allowed.value.trim();
    if (endpoint.value.trim()) body.endpoint = endpoint.value.trim();
    try {
      const r = await api.send("POST", "/api/peers", body);
      put(qrArea, qrBlock(r.name, r.config));
      name.value = "";
      refresh();
    } catch (err) {
      msg.hidden = false;
      put(msg, err.message);
    }
  } },
  h("h2", null, "Add a device"),
  h("label", null, "Name ", name),
  h("label", null, "Tunnel ", mode),
  h("label", null, "Apps ", apps),
  h("label", null, "Allowed IPs ", allowed),
  h("label", null, "Endpoint ", endpoint),
  h("button", { type: "submit", id: "dev-add" }, "Add device"), msg);

  put(root, h("section", { class: "devices" },
    h("h2", null, "Devices"),
    h("table", { class: "grid" },
      h("thead", null, h("tr", null, ["Name", "Addresses", "Endpoint", "Last handshake", "Received", "Sent", "Flows", "Last flow", "Apps", ""].map((t) => h("th", null, t)))),
      table),
    form, qrArea));

  async function refresh() {
    let j;
    try {
      j = await api.get("/api/peers");
    } catch (e) {
      put(table, h("tr", null, h("td", { colspan: 10, class: "error" }, e.message)));
      return;
    }
    put(table, ...j.peers.map((p) => {
      const rm = h("button", { type: "button", class: "danger" }, "Remove");
      rm.addEventListener("click", async () => {
        if (!rm.classList.contains("armed")) {
          rm.classList.add("armed");
          rm.textContent = "Remove: sure?";
          setTimeout(() => { rm.classList.remove("armed"); rm.textContent = "Remove"; }, 4000);
          return;
        }
        try {
          await api.send("DELETE", `/api/peers/${api.enc(p.name)}`);
        } catch (e) {
          put(msg, e.message);
          msg.hidden = false;
        }
        refresh();
      });
      const apps = (p.apps && p.apps.length ? `only ${[].concat(p.apps).join(", ")}` : "") ||
        (p.exclude_apps && p.exclude_apps.length ? `not ${[].concat(p.exclude_apps).join(", ")}` : "");
      return h("tr", { dataset: { peer: p.name } },
        h("td", null, h("a", { href: `#/flows?filter=${encodeURIComponent(`~peer ^${p.name.replace(/[.\\^$|?*+()[\]{}]/g, "\\$&")}$`)}`, title: "this device's flows" }, p.name)),
        h("td", null, [p.address, p.address6].filter(Boolean).join(", ")),
        h("td", null, p.endpoint || ""),
        h("td", null, p.last_handshake ? ago(p.last_handshake) : "never"),
        h("td", null, fmtBytes(p.rx_bytes || 0)), h("td", null, fmtBytes(p.tx_bytes || 0)),
        h("td", { class: "c-flows", title: "flows in the store" }, Number.isInteger(p.flows) ? p.flows.toLocaleString("en-US") : "–"),
        h("td", { class: "c-lastflow", title: p.last_flow || "" }, p.last_flow ? ago(p.last_flow) : "none"),
        h("td", null, apps),
        h("td", { class: "acts" },
          h("button", { type: "button", onclick: () => put(qrArea, qrBlock(p.name, "")) }, "QR"),
          h("button", { type: "button", onclick: () => downloadConfig(p.name) }, "Config"), rm));
    }));
  }
  refresh();
  const t = setInterval(refresh, 5000);
  return () => clearInterval(t);
}
