/* The control API's authentication (control/auth.h): the token file, then
 * a server with the checks installed, over real loopback sockets: Bearer,
 * the login cookie, Host (DNS rebinding), Origin and Sec-Fetch-Site,
 * WebSocket handshakes from other origins, and the constant-time compare
 * (sodium_memcmp is interposed here to count its calls). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "control_testutil.h"

#include <dlfcn.h>
#include <sodium.h>
#include <sys/stat.h>

#include "control/auth.h"
#include "control/httpd.h"

static int memcmp_calls;

/* Interposed: the real one, counted. */
int sodium_memcmp(const void *const b1_, const void *const b2_, size_t len)
{
	static int (*real)(const void *, const void *, size_t);
	if (!real)
		real = (int (*)(const void *, const void *, size_t))dlsym(RTLD_NEXT,
									  "sodium_memcmp");
	memcmp_calls++;
	return real(b1_, b2_, len);
}

static char home[256];
static uv_loop_t loop;
static struct httpd *srv;
static struct auth *auth;
static uint16_t port;
static int ws_opened;

static void make_home(void)
{
	snprintf(home, sizeof(home), "/tmp/wgmitm-auth-XXXXXX");
	assert_non_null(mkdtemp(home));
}

static void remove_home(void)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/%s", home, AUTH_TOKEN_FILE);
	unlink(path);
	rmdir(home);
}

static void hello(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	httpd_reply_json(resp, 200, json_pack("{s:s}", "hello", "world"));
}

static void ws_open(struct httpd_ws *ws, void *arg)
{
	ws_opened++;
}

static const struct httpd_ws_handler ws_handler = { .on_open = ws_open };

static void start(const char *host)
{
	make_home();
	auth = auth_new(home);
	assert_non_null(auth);
	assert_int_equal(uv_loop_init(&loop), 0);
	tu_loop = &loop;
	struct httpd_config cfg = { .host = host };
	srv = httpd_new(&loop, &cfg);
	assert_non_null(srv);
	assert_int_equal(httpd_route(srv, "GET", "/hello", hello, NULL), 0);
	assert_int_equal(httpd_route(srv, "POST", "/hello", hello, NULL), 0);
	assert_int_equal(httpd_route_ws(srv, "/ws", &ws_handler, NULL), 0);
	assert_int_equal(auth_attach(auth, srv), 0);
	assert_int_equal(httpd_listen(srv), 0);
	port = httpd_port(srv);
	ws_opened = 0;
}

static void stop(void)
{
	httpd_free(srv);
	while (uv_loop_alive(&loop)) {
		uv_run(&loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	}
	uv_loop_close(&loop);
	auth_free(auth);
	remove_home();
}

/* GET /hello with `headers` (lines ending in \r\n; Host is added when
 * none is given). */
static int get(const char *headers, struct tu_resp *r)
{
	char req[4096];
	bool has_host = strncasecmp(headers, "Host:", 5) == 0 || strstr(headers, "\nHost:");
	char host[64] = "";
	if (!has_host)
		snprintf(host, sizeof(host), "Host: 127.0.0.1:%u\r\n", port);
	snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\n%s%s\r\n", host, headers);
	return tu_request(port, req, r);
}

static int get_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int get_status(const char *fmt, ...)
{
	char headers[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(headers, sizeof(headers), fmt, ap);
	va_end(ap);
	struct tu_resp r;
	int status = get(headers, &r);
	tu_resp_free(&r);
	return status;
}

static const char *message(const struct tu_resp *r)
{
	static char msg[1024];
	json_t *j = json_loadb((const char *)r->body, r->body_len, 0, NULL);
	assert_non_null(j);
	json_t *e = json_object_get(j, "error");
	assert_int_equal(json_integer_value(json_object_get(e, "status")), r->status);
	snprintf(msg, sizeof(msg), "%s", json_string_value(json_object_get(e, "message")));
	json_decref(j);
	return msg;
}

/* ---- The token file ---- */

static void test_token_file(void **state)
{
	make_home();
	char path[300];
	snprintf(path, sizeof(path), "%s/api-token", home);
	struct auth *a = auth_new(home);
	assert_non_null(a);
	assert_string_equal(auth_token_path(a), path);
	struct stat stt;
	assert_int_equal(stat(path, &stt), 0);
	assert_int_equal(stt.st_mode & 0777, 0600);
	char token[300];
	snprintf(token, sizeof(token), "%s", auth_token(a));
	assert_int_equal(strlen(token), 64);
	for (const char *p = token; *p; p++)
		assert_non_null(strchr("0123456789abcdef", *p));
	FILE *f = fopen(path, "r");
	char line[300] = "";
	assert_non_null(fgets(line, sizeof(line), f));
	fclose(f);
	assert_int_equal(strlen(line), 65);
	assert_memory_equal(line, token, 64);
	assert_true(auth_token_ok(a, token));
	assert_false(auth_token_ok(a, "nope"));
	auth_free(a);

	/* Read again when present: the same token. */
	a = auth_new(home);
	assert_string_equal(auth_token(a), token);
	auth_free(a);
	/* Loose permissions are tightened. */
	chmod(path, 0644);
	a = auth_new(home);
	assert_non_null(a);
	assert_int_equal(stat(path, &stt), 0);
	assert_int_equal(stt.st_mode & 0777, 0600);
	auth_free(a);
	/* A token of one's own is taken; something else is refused, kept. */
	f = fopen(path, "w");
	fputs("my-own_token-0123456789abcdefghijklmnop\n", f);
	fclose(f);
	a = auth_new(home);
	assert_non_null(a);
	assert_string_equal(auth_token(a), "my-own_token-0123456789abcdefghijklmnop");
	auth_free(a);
	f = fopen(path, "w");
	fputs("too short\n", f);
	fclose(f);
	errno = 0;
	assert_null(auth_new(home));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(stat(path, &stt), 0);
	assert_int_equal(stt.st_size, 10);
	/* A symlink is not followed. */
	unlink(path);
	assert_int_equal(symlink("/etc/hostname", path), 0);
	assert_null(auth_new(home));
	unlink(path);
	remove_home();
	errno = 0;
	assert_null(auth_new("/nonexistent/wgmitm-home"));
	assert_int_equal(errno, ENOENT);
}

/* ---- Token on requests ---- */

static void test_bearer(void **state)
{
	start(NULL);
	const char *t = auth_token(auth);
	assert_int_equal(get_status("Authorization: Bearer %s\r\n", t), 200);
	assert_int_equal(get_status("Authorization: bearer   %s\r\n", t), 200);
	struct tu_resp r;
	get("", &r);
	assert_int_equal(r.status, 401);
	assert_non_null(strstr(message(&r), "this API needs the token in"));
	assert_non_null(strstr(message(&r), auth_token_path(auth)));
	assert_string_equal(tu_header(&r, "WWW-Authenticate"), "Bearer realm=\"wgmitm\"");
	tu_resp_free(&r);
	char wrong[80];
	snprintf(wrong, sizeof(wrong), "%s", t);
	wrong[10] ^= 1;
	get("Authorization: Bearer x\r\n", &r);
	assert_int_equal(r.status, 401);
	assert_non_null(strstr(message(&r), "wrong"));
	tu_resp_free(&r);
	assert_int_equal(get_status("Authorization: Bearer %s\r\n", wrong), 401);
	assert_int_equal(get_status("Authorization: Bearer %sx\r\n", t), 401);
	assert_int_equal(get_status("Authorization: Bearer %.63s\r\n", t), 401);
	assert_int_equal(get_status("Authorization: Basic %s\r\n", t), 401);
	/* Every route: unknown paths get 401 too, not 404. */
	char req[256];
	snprintf(req, sizeof(req), "GET /nothing HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", port);
	assert_int_equal(tu_request(port, req, &r), 401);
	tu_resp_free(&r);
	stop();
}

static void test_cookie_login(void **state)
{
	start(NULL);
	const char *t = auth_token(auth);
	struct tu_resp r;
	char req[1024];
	snprintf(req, sizeof(req), "GET /login?token=%s HTTP/1.1\r\nHost: localhost:%u\r\n\r\n", t,
		 port);
	assert_int_equal(tu_request(port, req, &r), 303);
	assert_string_equal(tu_header(&r, "Location"), "/");
	char want[256];
	snprintf(want, sizeof(want), "wgmitm_token=%s; HttpOnly; SameSite=Strict; Path=/", t);
	assert_string_equal(tu_header(&r, "Set-Cookie"), want);
	assert_string_equal(tu_header(&r, "Cache-Control"), "no-store");
	assert_string_equal(tu_header(&r, "Referrer-Policy"), "no-referrer");
	tu_resp_free(&r);
	/* The cookie then opens every route. */
	assert_int_equal(get_status("Cookie: wgmitm_token=%s\r\n", t), 200);
	assert_int_equal(get_status("Cookie: a=b; wgmitm_token=%s; c=d\r\n", t), 200);
	assert_int_equal(get_status("Cookie: a=b\r\nCookie: wgmitm_token=%s\r\n", t), 200);
	assert_int_equal(get_status("Cookie: wgmitm_token=%.60s\r\n", t), 401);
	assert_int_equal(get_status("Cookie: xwgmitm_token=%s\r\n", t), 401);
	/* An Authorization header, when sent, is what counts. */
	assert_int_equal(get_status("Authorization: Bearer x\r\nCookie: wgmitm_token=%s\r\n", t),
			 401);
	/* A wrong or missing login token: 401, no cookie. */
	snprintf(req, sizeof(req),
		 "GET /login?token=%.63s%c HTTP/1.1\r\nHost: localhost:%u\r\n\r\n", t,
		 t[63] == '0' ? '1' : '0', port);
	assert_int_equal(tu_request(port, req, &r), 401);
	assert_null(tu_header(&r, "Set-Cookie"));
	/* The login page, saying the token was wrong. */
	assert_string_equal(tu_header(&r, "Content-Type"), "text/html; charset=utf-8");
	assert_non_null(strstr((const char *)r.body, "action=\"/login\""));
	assert_non_null(strstr((const char *)r.body, "not the right one"));
	assert_non_null(strstr(tu_header(&r, "Content-Security-Policy"), "script-src 'self'"));
	tu_resp_free(&r);
	snprintf(req, sizeof(req), "GET /login HTTP/1.1\r\nHost: localhost:%u\r\n\r\n", port);
	assert_int_equal(tu_request(port, req, &r), 401);
	assert_null(tu_header(&r, "Set-Cookie"));
	assert_non_null(strstr((const char *)r.body, "action=\"/login\""));
	assert_null(strstr((const char *)r.body, "not the right one"));
	tu_resp_free(&r);
	/* Only GET: a POST to /login needs the token like anything else. */
	snprintf(req, sizeof(req),
		 "POST /login?token=%s HTTP/1.1\r\nHost: localhost:%u\r\nContent-Length: 0\r\n\r\n",
		 t, port);
	assert_int_equal(tu_request(port, req, &r), 401);
	tu_resp_free(&r);
	snprintf(req, sizeof(req),
		 "POST /login HTTP/1.1\r\nHost: localhost:%u\r\nAuthorization: Bearer %s\r\n"
		 "Content-Length: 0\r\n\r\n",
		 port, t);
	assert_int_equal(tu_request(port, req, &r), 405);
	tu_resp_free(&r);
	/* The login link. */
	char url[512], expect[512];
	assert_int_equal(auth_login_url(auth, srv, url, sizeof(url)), 0);
	snprintf(expect, sizeof(expect), "http://127.0.0.1:%u/login?token=%s", port, t);
	assert_string_equal(url, expect);
	assert_int_equal(auth_login_url(auth, srv, url, 20), -ENOSPC);
	stop();
}

/* ---- Host, Origin, Sec-Fetch-Site ---- */

static void test_host(void **state)
{
	start(NULL);
	const char *t = auth_token(auth);
	struct tu_resp r;
	/* DNS rebinding: a name of the attacker's resolving to 127.0.0.1. */
	char h[256];
	snprintf(h, sizeof(h), "Host: evil.example\r\nAuthorization: Bearer %s\r\n", t);
	assert_int_equal(get(h, &r), 421);
	assert_non_null(strstr(message(&r), "evil.example"));
	assert_non_null(strstr(message(&r), "rebinding"));
	tu_resp_free(&r);
	/* Refused before the token is even looked at. */
	assert_int_equal(get_status("Host: evil.example:%u\r\n", port), 421);
	const char *bad[] = { "evil.example:%u",
			      "localhost.evil.example:%u",
			      "127.0.0.2:%u",
			      "127.0.0.1:1",
			      "127.0.0.1:%u0",
			      "::1",
			      "[::2]:%u",
			      "127.0.0.1:",
			      "127.0.0.1:x",
			      "[::1",
			      "" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char host[64];
		snprintf(host, sizeof(host), bad[i], port);
		assert_int_equal(get_status("Host: %s\r\nAuthorization: Bearer %s\r\n", host, t),
				 421);
	}
	const char *good[] = { "127.0.0.1:%u", "127.0.0.1", "localhost:%u",
			       "LocalHost",    "[::1]:%u",  "[::1]" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char host[64];
		snprintf(host, sizeof(host), good[i], port);
		assert_int_equal(get_status("Host: %s\r\nAuthorization: Bearer %s\r\n", host, t),
				 200);
	}
	/* HTTP/1.0 without Host. */
	char req[256];
	snprintf(req, sizeof(req), "GET /hello HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n", t);
	assert_int_equal(tu_request(port, req, &r), 421);
	tu_resp_free(&r);
	stop();
}

static void test_origin(void **state)
{
	start(NULL);
	const char *t = auth_token(auth);
	const char *good[] = { "http://127.0.0.1:%u", "http://localhost:%u", "http://[::1]:%u",
			       "HTTP://LOCALHOST:%u" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char o[64];
		snprintf(o, sizeof(o), good[i], port);
		assert_int_equal(get_status("Origin: %s\r\nAuthorization: Bearer %s\r\n", o, t),
				 200);
	}
	const char *bad[] = { "http://evil.example",     "null",
			      "https://127.0.0.1:%u",    "http://127.0.0.1:1",
			      "http://127.0.0.1",        "http://127.0.0.1:%u/x",
			      "http://u@127.0.0.1:%u",   "http://evil.example:%u",
			      "http://127.0.0.1:%u.evil" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char o[64];
		snprintf(o, sizeof(o), bad[i], port);
		struct tu_resp r;
		char h[512];
		snprintf(h, sizeof(h), "Origin: %s\r\nAuthorization: Bearer %s\r\n", o, t);
		assert_int_equal(get(h, &r), 403);
		assert_non_null(strstr(message(&r), "cross-origin"));
		tu_resp_free(&r);
	}
	/* Two Origins, even good ones. */
	assert_int_equal(get_status("Origin: http://127.0.0.1:%u\r\nOrigin: http://127.0.0.1:%u\r\n"
				    "Authorization: Bearer %s\r\n",
				    port, port, t),
			 403);
	/* Sec-Fetch-Site: only our own pages and typed addresses. */
	assert_int_equal(
		get_status("Sec-Fetch-Site: same-origin\r\nAuthorization: Bearer %s\r\n", t), 200);
	assert_int_equal(get_status("Sec-Fetch-Site: none\r\nAuthorization: Bearer %s\r\n", t),
			 200);
	assert_int_equal(
		get_status("Sec-Fetch-Site: cross-site\r\nAuthorization: Bearer %s\r\n", t), 403);
	assert_int_equal(get_status("Sec-Fetch-Site: same-site\r\nAuthorization: Bearer %s\r\n", t),
			 403);
	/* A cross-site form POST with the login cookie. */
	char req[1024];
	struct tu_resp r;
	snprintf(req, sizeof(req),
		 "POST /hello HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nOrigin: http://evil.example\r\n"
		 "Cookie: wgmitm_token=%s\r\nContent-Length: 3\r\n\r\na=b",
		 port, t);
	assert_int_equal(tu_request(port, req, &r), 403);
	assert_string_equal(tu_header(&r, "Connection"), "close");
	tu_resp_free(&r);
	stop();
}

static void test_websocket_origin(void **state)
{
	start(NULL);
	const char *t = auth_token(auth);
	char req[1024];
	struct tu_resp r;
	const char *fmt = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUpgrade: websocket\r\n"
			  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			  "Sec-WebSocket-Version: 13\r\n%s\r\n";
	char extra[512];
	/* From another origin, even with the cookie: refused, never upgraded. */
	snprintf(extra, sizeof(extra), "Origin: http://evil.example\r\nCookie: wgmitm_token=%s\r\n",
		 t);
	snprintf(req, sizeof(req), fmt, port, extra);
	assert_int_equal(tu_request(port, req, &r), 403);
	tu_resp_free(&r);
	snprintf(extra, sizeof(extra),
		 "Origin: http://localhost:3000\r\nCookie: wgmitm_token=%s\r\n", t);
	snprintf(req, sizeof(req), fmt, port, extra);
	assert_int_equal(tu_request(port, req, &r), 403);
	tu_resp_free(&r);
	/* Without the token. */
	snprintf(extra, sizeof(extra), "Origin: http://127.0.0.1:%u\r\n", port);
	snprintf(req, sizeof(req), fmt, port, extra);
	assert_int_equal(tu_request(port, req, &r), 401);
	tu_resp_free(&r);
	assert_int_equal(ws_opened, 0);
	/* Our own page with the cookie: upgraded. */
	struct tu_buf b = { 0 };
	snprintf(extra, sizeof(extra), "Origin: http://127.0.0.1:%u\r\nCookie: wgmitm_token=%s\r\n",
		 port, t);
	int fd = tu_ws_open(port, "/ws", extra, &b);
	tu_pump(5);
	assert_int_equal(ws_opened, 1);
	tu_buf_free(&b);
	close(fd);
	stop();
}

static void test_constant_time(void **state)
{
	start(NULL);
	const char *t = auth_token(auth);
	int before = memcmp_calls;
	assert_true(auth_token_ok(auth, t));
	assert_int_equal(memcmp_calls, before + 1);
	assert_false(auth_token_ok(auth, ""));
	assert_false(auth_token_ok(auth, NULL));
	assert_int_equal(memcmp_calls, before + 2);
	/* Requests go through it: the right token, a wrong one, a cookie. */
	before = memcmp_calls;
	assert_int_equal(get_status("Authorization: Bearer %s\r\n", t), 200);
	assert_int_equal(get_status("Authorization: Bearer wrong\r\n"), 401);
	assert_int_equal(get_status("Cookie: wgmitm_token=%s\r\n", t), 200);
	assert_int_equal(memcmp_calls, before + 3);
	stop();
}

static void test_wildcard_bind(void **state)
{
	/* Every address: still the token; Host may be any IP literal (what a
	 * remote user types), never a name other than localhost. */
	start("0.0.0.0");
	const char *t = auth_token(auth);
	assert_int_equal(get_status("Host: 10.1.2.3:%u\r\n", port), 401);
	assert_int_equal(get_status("Host: 10.1.2.3:%u\r\nAuthorization: Bearer %s\r\n", port, t),
			 200);
	assert_int_equal(
		get_status("Host: evil.example:%u\r\nAuthorization: Bearer %s\r\n", port, t), 421);
	assert_int_equal(get_status("Host: [fd00::1]:%u\r\nAuthorization: Bearer %s\r\n", port, t),
			 421);
	assert_int_equal(
		get_status("Origin: http://10.1.2.3:%u\r\nAuthorization: Bearer %s\r\n", port, t),
		200);
	char url[512];
	assert_int_equal(auth_login_url(auth, srv, url, sizeof(url)), 0);
	assert_memory_equal(url, "http://127.0.0.1:", 17);
	stop();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_file),    cmocka_unit_test(test_bearer),
		cmocka_unit_test(test_cookie_login),  cmocka_unit_test(test_host),
		cmocka_unit_test(test_origin),        cmocka_unit_test(test_websocket_origin),
		cmocka_unit_test(test_constant_time), cmocka_unit_test(test_wildcard_bind),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
