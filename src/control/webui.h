/* The web UI: the static files of web/ (embedded in the binary at build
 * time, webui_assets.h) served by the control API's server, and the login
 * page the gate shows a browser without the token.
 *
 *   GET /           the app (web/index.html)
 *   GET /ui/NAME    web/NAME (scripts, styles, icons)
 *   the login page  for a page request without a valid token (auth.h):
 *                   a form that opens /login?token=...
 *
 * Every UI response carries the UI's Content-Security-Policy (scripts and
 * styles from this origin only, no inline script, images from this origin
 * and blob: URLs, connections to this origin and its WebSocket, no
 * framing, no plugins) besides the server's defaults (nosniff, DENY,
 * no-referrer, no-store). Names are looked up in the embedded table only:
 * nothing is read from the file system at run time. */
#ifndef WGMITM_CONTROL_WEBUI_H
#define WGMITM_CONTROL_WEBUI_H

#include <stdbool.h>
#include <stddef.h>

#include "control/httpd.h"

struct webui_asset;

/* Routes GET / and GET /ui/{*} on `s`. Returns 0 or -errno. */
int webui_attach(struct httpd *s);

/* The embedded file `name` ("index.html", "js/app.js"); NULL when none. */
const struct webui_asset *webui_find(const char *name);

/* "text/javascript; charset=utf-8" and so on, from the name's extension. */
const char *webui_content_type(const char *name);

/* Is `path` a page a browser navigates to (the app's, not the API's)? The
 * gate answers those with the login page rather than a JSON 401. */
bool webui_is_page(const char *method, const char *path);

/* May anyone GET it, without the token? The login page's stylesheet only. */
bool webui_is_public(const char *method, const char *path);

/* The login page, 401 (or 200 when `status` says so), with a note when
 * the token presented was wrong. */
void webui_reply_login(struct httpd_req *req, struct httpd_resp *resp, int status, bool wrong);

/* The Content-Security-Policy of UI responses for a request that came
 * with `host` (already checked by the gate). */
void webui_csp(const char *host, char *out, size_t len);

#endif
