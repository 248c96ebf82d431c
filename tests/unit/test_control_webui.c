/* The web UI's files and pages (control/webui.h) behind the real gate
 * (control/auth.h), over loopback sockets: the app and its files with the
 * token, the login page without it (the API still answers JSON), the
 * headers every UI response carries, and the embedded files themselves
 * (sorted, typed, no inline script in any page). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "control_testutil.h"

#include "control/auth.h"
#include "control/httpd.h"
#include "control/webui.h"
#include "control/webui_assets.h"

static char home[256];
static uv_loop_t loop;
static struct httpd *srv;
static struct auth *auth;
static uint16_t port;

static void api_hello(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	httpd_reply_json(resp, 200, json_pack("{s:s}", "hello", "world"));
}

static int setup(void **state)
{
	snprintf(home, sizeof(home), "/tmp/wgmitm-webui-XXXXXX");
	assert_non_null(mkdtemp(home));
	auth = auth_new(home);
	assert_non_null(auth);
	assert_int_equal(uv_loop_init(&loop), 0);
	tu_loop = &loop;
	srv = httpd_new(&loop, &(struct httpd_config){ 0 });
	assert_non_null(srv);
	assert_int_equal(auth_attach(auth, srv), 0);
	assert_int_equal(httpd_route(srv, "GET", "/api/hello", api_hello, NULL), 0);
	assert_int_equal(webui_attach(srv), 0);
	assert_int_equal(httpd_listen(srv), 0);
	port = httpd_port(srv);
	return 0;
}

static int teardown(void **state)
{
	httpd_free(srv);
	while (uv_loop_alive(&loop)) {
		uv_run(&loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	}
	uv_loop_close(&loop);
	auth_free(auth);
	char path[300];
	snprintf(path, sizeof(path), "%s/%s", home, AUTH_TOKEN_FILE);
	unlink(path);
	rmdir(home);
	return 0;
}

/* `method` `path` with the token as `how`: 0 none, 1 Bearer, 2 cookie, 3
 * a wrong cookie. */
static int request(const char *method, const char *path, int how, struct tu_resp *r)
{
	char req[2048], cred[512] = "";
	const char *t = auth_token(auth);
	if (how == 1)
		snprintf(cred, sizeof(cred), "Authorization: Bearer %s\r\n", t);
	else if (how == 2)
		snprintf(cred, sizeof(cred), "Cookie: wgmitm_token=%s\r\n", t);
	else if (how == 3)
		snprintf(cred, sizeof(cred), "Cookie: wgmitm_token=%.63sx\r\n", t);
	snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n%s\r\n", method, path,
		 port, cred);
	return tu_request(port, req, r);
}

static void expect_ui_headers(const struct tu_resp *r)
{
	const char *csp = tu_header(r, "Content-Security-Policy");
	assert_non_null(csp);
	assert_non_null(strstr(csp, "default-src 'self'"));
	assert_non_null(strstr(csp, "script-src 'self';"));
	assert_non_null(strstr(csp, "object-src 'none'"));
	assert_non_null(strstr(csp, "frame-ancestors 'none'"));
	assert_non_null(strstr(csp, "img-src 'self' blob: data:"));
	char ws[64];
	snprintf(ws, sizeof(ws), "connect-src 'self' ws://127.0.0.1:%u;", port);
	assert_non_null(strstr(csp, ws));
	assert_null(strstr(csp, "unsafe"));
	assert_string_equal(tu_header(r, "X-Content-Type-Options"), "nosniff");
	assert_string_equal(tu_header(r, "X-Frame-Options"), "DENY");
	assert_string_equal(tu_header(r, "Referrer-Policy"), "no-referrer");
}

static bool is_login_page(const struct tu_resp *r)
{
	return r->body && strstr((const char *)r->body, "action=\"/login\"") != NULL;
}

static void test_app_with_token(void **state)
{
	struct tu_resp r;
	for (int how = 1; how <= 2; how++) {
		assert_int_equal(request("GET", "/", how, &r), 200);
		assert_string_equal(tu_header(&r, "Content-Type"), "text/html; charset=utf-8");
		assert_non_null(strstr((const char *)r.body, "src=\"/ui/js/app.js\""));
		expect_ui_headers(&r);
		tu_resp_free(&r);
		assert_int_equal(request("GET", "/ui/js/app.js", how, &r), 200);
		assert_string_equal(tu_header(&r, "Content-Type"),
				    "text/javascript; charset=utf-8");
		const struct webui_asset *a = webui_find("js/app.js");
		assert_non_null(a);
		assert_int_equal(r.body_len, a->len);
		assert_memory_equal(r.body, a->data, a->len);
		expect_ui_headers(&r);
		tu_resp_free(&r);
	}
	assert_int_equal(request("HEAD", "/ui/style.css", 1, &r), 200);
	assert_string_equal(tu_header(&r, "Content-Type"), "text/css; charset=utf-8");
	tu_resp_free(&r);
	/* Only what is embedded, by its exact name. */
	const char *missing[] = {
		"/ui/nothing.js", "/ui/../index.html", "/ui/js/../app.js",
		"/ui/",           "/ui/login.html",    "/ui/%2e%2e/CMakeLists.txt"
	};
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		int st = request("GET", missing[i], 1, &r);
		assert_true(st == 404 || st == 400); /* the server refuses dot segments */
		tu_resp_free(&r);
	}
}

static void test_login_page_without_token(void **state)
{
	struct tu_resp r;
	/* The app's pages: the login form, never the app. */
	const char *pages[] = { "/", "/ui/js/app.js", "/ui/index.html" };
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		for (int how = 0; how <= 3; how += 3) {
			assert_int_equal(request("GET", pages[i], how, &r), 401);
			assert_string_equal(tu_header(&r, "Content-Type"),
					    "text/html; charset=utf-8");
			assert_true(is_login_page(&r));
			assert_null(strstr((const char *)r.body, "app.js"));
			assert_true((how == 3) ==
				    (strstr((const char *)r.body, "not the right one") != NULL));
			expect_ui_headers(&r);
			tu_resp_free(&r);
		}
	}
	/* Its stylesheet is the one file anyone may have. */
	assert_int_equal(request("GET", "/ui/login.css", 0, &r), 200);
	tu_resp_free(&r);
	/* The API stays JSON. */
	assert_int_equal(request("GET", "/api/hello", 0, &r), 401);
	assert_string_equal(tu_header(&r, "Content-Type"), "application/json");
	assert_false(is_login_page(&r));
	tu_resp_free(&r);
	assert_int_equal(request("GET", "/api/hello", 1, &r), 200);
	tu_resp_free(&r);
	/* Not a page: a POST to / is the API's 401. */
	assert_int_equal(request("POST", "/", 0, &r), 401);
	assert_false(is_login_page(&r));
	tu_resp_free(&r);
}

static void test_assets(void **state)
{
	assert_true(webui_nassets >= 5);
	for (size_t i = 0; i < webui_nassets; i++) {
		const struct webui_asset *a = &webui_assets[i];
		if (i)
			assert_true(strcmp(webui_assets[i - 1].name, a->name) < 0);
		assert_ptr_equal(webui_find(a->name), a);
		assert_int_equal(a->data[a->len], 0);
		assert_int_equal(strlen((const char *)a->data), a->len);
		assert_string_not_equal(webui_content_type(a->name), "application/octet-stream");
		/* Pages load scripts only from files, and set no inline style
		 * or handler: the CSP would refuse them. */
		if (strstr(a->name, ".html")) {
			const char *p = (const char *)a->data;
			while ((p = strstr(p, "<script"))) {
				const char *end = strchr(p, '>');
				assert_non_null(end);
				assert_non_null(memmem(p, (size_t)(end - p), " src=", 5));
				assert_non_null(strstr(end, "</script>"));
				assert_ptr_equal(strstr(end, "</script>"), end + 1);
				p = end;
			}
			assert_null(strstr((const char *)a->data, " style="));
			assert_null(strstr((const char *)a->data, " onclick="));
			assert_null(strstr((const char *)a->data, " onload="));
		}
	}
	assert_null(webui_find("nothing"));
	assert_null(webui_find(""));
	assert_non_null(webui_find("index.html"));
	assert_non_null(webui_find("login.html"));
	assert_string_equal(webui_content_type("a/b.js"), "text/javascript; charset=utf-8");
	assert_string_equal(webui_content_type("x.svg"), "image/svg+xml");
	assert_string_equal(webui_content_type("noext"), "application/octet-stream");
	assert_true(webui_is_page("GET", "/"));
	assert_true(webui_is_page("HEAD", "/ui/x"));
	assert_false(webui_is_page("POST", "/"));
	assert_false(webui_is_page("GET", "/api/flows"));
	assert_false(webui_is_page("GET", "/mcp"));
	assert_true(webui_is_public("GET", "/ui/login.css"));
	assert_false(webui_is_public("GET", "/ui/style.css"));
	char csp[512];
	webui_csp(NULL, csp, sizeof(csp));
	assert_null(strstr(csp, "ws://"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_app_with_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_page_without_token, setup, teardown),
		cmocka_unit_test(test_assets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
