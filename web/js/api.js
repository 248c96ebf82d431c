// The control API, from the page: same origin, the login cookie.

export class ApiError extends Error {
  constructor(status, message, extra = {}) {
    super(message);
    this.status = status;
    this.column = extra.column;
    this.field = extra.field;
  }
}

async function fail(res) {
  let message = `HTTP ${res.status}`, extra = {};
  try {
    const j = await res.json();
    if (j && j.error) {
      message = j.error.message || message;
      extra = j.error;
    }
  } catch { /* not JSON */ }
  if (res.status === 401) location.reload(); // the login page
  throw new ApiError(res.status, message, extra);
}

export async function raw(path, opts = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...opts });
  if (!res.ok) await fail(res);
  return res;
}

export async function get(path, opts) {
  return (await raw(path, opts)).json();
}

export async function send(method, path, body) {
  const res = await raw(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return res.status === 204 ? null : res.json();
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params))
    if (v !== undefined && v !== null && v !== "") u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : "";
}

export const enc = encodeURIComponent;
