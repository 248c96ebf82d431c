// The configuration: a field per entry of /api/config, saved with the
// API's merge semantics (only the fields changed are sent); a refused
// value is shown at its field.
import { h, put } from "./dom.js";
import * as api from "./api.js";

function editorFor(key, value) {
  if (typeof value === "boolean") return h("input", { type: "checkbox", checked: value, name: key });
  if (typeof value === "number") return h("input", { type: "number", value: String(value), name: key, step: "any" });
  if (typeof value === "string") return h("input", { type: "text", value, name: key });
  if (Array.isArray(value) && value.every((x) => typeof x === "string"))
    return h("textarea", { name: key, rows: Math.max(2, value.length + 1), dataset: { kind: "lines" } }, value.join("\n"));
  return h("textarea", { name: key, rows: 6, dataset: { kind: "json" }, spellcheck: "false" }, JSON.stringify(value, null, 2));
}

function valueOf(el, orig) {
  if (el.type === "checkbox") return el.checked;
  if (el.type === "number") return el.value === "" ? null : Number(el.value);
  if (el.dataset.kind === "lines") return el.value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (el.dataset.kind === "json") return JSON.parse(el.value);
  return typeof orig === "string" ? el.value : el.value;
}

export function configView(root) {
  const form = h("form", { class: "config-form" });
  const msg = h("div", { class: "form-note", role: "status" });
  put(root, h("section", { class: "config" },
    h("h2", null, "Configuration"),
    h("p", { class: "muted" }, "Changes apply to connections that begin after them and are saved in HOME/config.json. Lists take one entry a line. See docs/config.md."),
    form, msg));

  let doc = null;
  async function load() {
    doc = await api.get("/api/config");
    const rows = Object.entries(doc).map(([k, v]) => h("div", { class: "field", dataset: { field: k } },
      h("label", null, h("span", { class: "k" }, k), editorFor(k, v)),
      h("div", { class: "field-error", hidden: true })));
    put(form, ...rows, h("div", { class: "tools" },
      h("button", { type: "submit", id: "cfg-save" }, "Save changes"),
      h("button", { type: "button", onclick: () => load() }, "Revert")));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    for (const fe of form.querySelectorAll(".field-error")) fe.hidden = true;
    const change = { operation: "merge" };
    let n = 0;
    for (const [k, v] of Object.entries(doc)) {
      const el = form.elements[k];
      if (!el) continue;
      let nv;
      try {
        nv = valueOf(el, v);
      } catch (err) {
        showField(k, `not JSON: ${err.message}`);
        return;
      }
      if (JSON.stringify(nv) !== JSON.stringify(v)) {
        change[k] = nv;
        n++;
      }
    }
    if (!n) {
      put(msg, "nothing changed");
      return;
    }
    try {
      await api.send("PATCH", "/api/config", change);
      put(msg, `saved ${n} field${n > 1 ? "s" : ""}`);
      await load();
    } catch (err) {
      if (err.field) showField(err.field, err.message);
      else put(msg, err.message);
    }
  });

  function showField(field, message) {
    const top = field.split(/[.[]/)[0];
    const box = form.querySelector(`.field[data-field="${CSS.escape(top)}"] .field-error`);
    if (box) {
      box.hidden = false;
      put(box, `${field}: ${message}`);
    } else {
      put(msg, `${field}: ${message}`);
    }
    put(msg, "not saved: see the field");
  }
  load().catch((e) => put(form, h("p", { class: "error" }, e.message)));
}
