// Building the page without HTML parsing: every string becomes a text
// node or an attribute value, so text from a flow can never become markup.

// h("div", {class: "x", onclick: fn, title: "t"}, "text", node, [more]):
// an element. Props starting with "on" are listeners; "dataset" an object;
// others are set with setAttribute (never href/src from flow data: callers
// pass only URLs they built themselves).
export function h(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k === "value") e.value = v;
      else if (k === "checked") e.checked = !!v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(e, children);
  return e;
}

export function append(parent, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
  return parent;
}

export function clear(e) {
  while (e.firstChild) e.removeChild(e.firstChild);
  return e;
}

// Replaces the children of `e`.
export function put(e, ...children) {
  clear(e);
  return append(e, children);
}

// A download of bytes the page holds, never opened as a page.
export function download(name, blob) {
  const url = URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" }));
  const a = h("a", { href: url, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}
