/* Who may use the control API: secure by default, and no switch turns it
 * off, whatever address the server listens on.
 *
 * The token is 32 random bytes from libsodium as 64 hex characters, in
 * HOME/api-token (mode 0600): created when absent, read when present. A
 * token of one's own (32 to 256 characters of A-Z a-z 0-9 _ -) is read too.
 * A token file that others may read is made 0600, with a warning.
 *
 * Every request passes these checks before it is routed, in this order:
 *
 *  1. Host must name this listener: "localhost", "127.0.0.1", "[::1]" or
 *     the bind address, with the listener's port or without one; bound to
 *     every address (0.0.0.0, ::), any IP literal too. A name an attacker's
 *     DNS points at 127.0.0.1 (DNS rebinding) fails here: 421.
 *  2. Origin, when sent (browsers send it cross-origin, on POSTs and on
 *     every WebSocket handshake), must be the API's own: "http://", an
 *     allowed host as above, and ":PORT" (none for port 80). Anything else,
 *     "null" or a repeated Origin included: 403.
 *  3. Sec-Fetch-Site, when sent, must be "same-origin" or "none" (typed or
 *     opened from outside the browser). "cross-site" is refused, and so is
 *     "same-site": another port of localhost is another program's page.
 *  4. The token, as "Authorization: Bearer TOKEN" or, when no Authorization
 *     is sent, the cookie wgmitm_token=TOKEN; compared in constant time
 *     (hashed, then sodium_memcmp). Missing or wrong: 401 naming the file.
 *
 * GET /login?token=TOKEN is the only route without step 4: with the right
 * token it sets "wgmitm_token=TOKEN; HttpOnly; SameSite=Strict; Path=/"
 * (a session cookie) and redirects to /; without one or with a wrong one,
 * 401 with the web UI's login page (webui.h). The UI's pages (/ and /ui/)
 * without a valid token get that page too, where the API answers JSON;
 * the login page's stylesheet alone needs no token.
 *
 * Cookies are not told apart by port: another web server on localhost
 * receives this cookie when the browser visits it. The Bearer header is
 * the way for programs; the cookie is for the web UI. */
#ifndef WGMITM_CONTROL_AUTH_H
#define WGMITM_CONTROL_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "control/httpd.h"

#define AUTH_TOKEN_FILE "api-token"
#define AUTH_COOKIE "wgmitm_token"
#define AUTH_LOGIN_PATH "/login"
#define AUTH_TOKEN_MIN 32
#define AUTH_TOKEN_MAX 256

struct auth;

/* Reads HOME/api-token, creating it when absent (HOME must exist). NULL
 * with errno, and a log line naming the file: EINVAL (not a token), EPERM
 * (not a regular file of ours), or the system's. */
struct auth *auth_new(const char *home) __attribute__((warn_unused_result));
void auth_free(struct auth *a);

const char *auth_token(const struct auth *a);
const char *auth_token_path(const struct auth *a);

/* Installs the checks as the server's gate and adds GET /login. `a` must
 * outlive `s`. Returns 0 or -errno. */
int auth_attach(struct auth *a, struct httpd *s);

/* Is `presented` the token? Constant time in its content and length. */
bool auth_token_ok(const struct auth *a, const char *presented);

/* The link that logs a browser in: "http://127.0.0.1:PORT/login?token=...".
 * Returns 0, or -ENOSPC when `len` is too small. */
int auth_login_url(const struct auth *a, const struct httpd *s, char *out, size_t len);

#endif
