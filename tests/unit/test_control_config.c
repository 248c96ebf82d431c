/* The configuration document: defaults, start (reset) against configure
 * (merge and replace), list edits, checks naming the field, load and save. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control/config.h"

static json_t *load(const char *text)
{
	char *s = strdup(text);
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_error_t err;
	json_t *j = json_loads(s, JSON_DECODE_ANY, &err);
	if (!j)
		fail_msg("%s: %s", text, err.text);
	free(s);
	return j;
}

/* `field` of `doc` equals the JSON text `want`. */
static void has(const json_t *doc, const char *field, const char *want)
{
	json_t *w = load(want);
	json_t *got = json_object_get(doc, field);
	if (!json_equal(got, w)) {
		char *g = json_dumps(got, JSON_ENCODE_ANY);
		fail_msg("%s: got %s, want %s", field, g, want);
	}
	json_decref(w);
}

static int reject_tilde_x(const char *expr, char *why, size_t n)
{
	if (strstr(expr, "~x")) {
		snprintf(why, n, "column %ld: unknown operator ~x",
			 (long)(strstr(expr, "~x") - expr) + 1);
		return -1;
	}
	return 0;
}

static const struct config_checks checks = { .filter = reject_tilde_x };

static void test_defaults(void **ctx)
{
	(void)ctx;
	json_t *d = config_defaults();
	has(d, "capture_scope", "{'includes':[],'excludes':[]}");
	has(d, "tls_passthrough", "[]");
	has(d, "max_connections", "16384");
	has(d, "intercept_tls", "true");
	has(d, "quic", "'refuse'");
	has(d, "body_cap", "1048576");
	has(d, "peek_timeout_ms", "2000");
	json_decref(d);
}

/* The anti-pattern of seed 000: a second start wipes what the first set;
 * configure keeps it. */
static void test_start_resets_configure_merges(void **ctx)
{
	(void)ctx;
	struct config_error err;
	json_t *req = load("{'capture_scope':{'includes':[{'hostname':'api.target.com'}]},"
			   "'tls_passthrough':['*.googleapis.com'],'max_connections':100}");
	json_t *a = config_start(req, &checks, &err);
	assert_non_null(a);
	json_decref(req);
	has(a, "tls_passthrough", "['*.googleapis.com']");
	has(a, "capture_scope", "{'includes':[{'hostname':'api.target.com'}],'excludes':[]}");

	req = load("{'body_cap':0}");
	json_t *b = config_start(req, &checks, &err);
	has(b, "tls_passthrough", "[]");
	has(b, "max_connections", "16384");
	has(b, "capture_scope", "{'includes':[],'excludes':[]}");
	has(b, "body_cap", "0");
	json_decref(b);

	json_t *c = config_configure(a, req, &checks, &err);
	assert_non_null(c);
	json_decref(req);
	has(c, "tls_passthrough", "['*.googleapis.com']");
	has(c, "max_connections", "100");
	has(c, "body_cap", "0");
	has(a, "body_cap", "1048576"); /* the current document is not changed */

	/* Lists: add (no duplicates), remove (absent is fine), or a whole array. */
	req = load("{'operation':'merge','tls_passthrough':{'add':['*.example.com',"
		   "'*.googleapis.com'],'remove':['nothere.com']},"
		   "'capture_scope':{'excludes':{'add':['~d static']}}}");
	json_t *d = config_configure(c, req, &checks, &err);
	assert_non_null(d);
	json_decref(req);
	has(d, "tls_passthrough", "['*.googleapis.com','*.example.com']");
	has(d, "capture_scope",
	    "{'includes':[{'hostname':'api.target.com'}],'excludes':['~d static']}");
	req = load("{'tls_passthrough':{'remove':['*.googleapis.com']},'allow_host_ports':[3000,"
		   "3000,8080]}");
	json_t *e = config_configure(d, req, &checks, &err);
	json_decref(req);
	has(e, "tls_passthrough", "['*.example.com']");
	has(e, "allow_host_ports", "[3000,8080]");

	/* Replace: whole values only. */
	req = load("{'operation':'replace','capture_scope':{'includes':['~m POST']}}");
	json_t *f = config_configure(e, req, &checks, &err);
	json_decref(req);
	has(f, "capture_scope", "{'includes':['~m POST'],'excludes':[]}");
	has(f, "tls_passthrough", "['*.example.com']");
	req = load("{'operation':'replace','tls_passthrough':{'add':['x.com']}}");
	assert_null(config_configure(f, req, &checks, &err));
	json_decref(req);
	assert_string_equal(err.field, "tls_passthrough");
	assert_non_null(strstr(err.message, "replace takes whole values"));
	json_decref(a);
	json_decref(c);
	json_decref(d);
	json_decref(e);
	json_decref(f);
}

static void expect_error(const char *req_text, bool start, const char *field, const char *msg)
{
	struct config_error err;
	json_t *cur = config_defaults();
	json_t *req = load(req_text);
	json_t *out = start ? config_start(req, &checks, &err)
			    : config_configure(cur, req, &checks, &err);
	if (out)
		fail_msg("%s was accepted", req_text);
	if (strcmp(err.field, field) != 0 || !strstr(err.message, msg))
		fail_msg("%s: got %s: %s; want %s: ...%s...", req_text, err.field, err.message,
			 field, msg);
	json_decref(req);
	json_decref(cur);
}

static void test_errors(void **ctx)
{
	(void)ctx;
	expect_error("{'max_connection':5}", false, "max_connection", "unknown field");
	expect_error("{'max_connections':0}", true, "max_connections", "from 1 to 1000000");
	expect_error("{'max_connections':'10'}", false, "max_connections", "integer");
	expect_error("{'quic':'maybe'}", false, "quic", "\"refuse\" or \"passthrough\"");
	expect_error("{'intercept_tls':1}", false, "intercept_tls", "true or false");
	expect_error("{'operation':'patch'}", false, "operation", "merge");
	expect_error("{'operation':'merge'}", true, "operation", "unknown field");
	expect_error("{'tls_passthrough':['ok.com','bad/host']}", false, "tls_passthrough[1]",
		     "not a host name");
	expect_error("{'allow_host_ports':[0]}", false, "allow_host_ports[0]", "port");
	expect_error("{'capture_scope':{'includes':['~d a','~x b']}}", false,
		     "capture_scope.includes[1]", "column 1: unknown operator ~x");
	expect_error("{'capture_scope':{'include':[]}}", false, "capture_scope.include",
		     "unknown key");
	expect_error("{'capture_scope':{'excludes':[{'host':'x'}]}}", false,
		     "capture_scope.excludes[0]", "unknown key \"host\"");
	expect_error("{'capture_scope':{'excludes':[{}]}}", false, "capture_scope.excludes[0]",
		     "needs hostname");
	expect_error("{'upstream_ca':['/nonexistent/ca.pem']}", false, "upstream_ca[0]",
		     "cannot read");
	expect_error("[1]", false, "", "JSON object");
	expect_error("{'tls_passthrough':{'add':['a.com'],'drop':['b.com']}}", false,
		     "tls_passthrough.drop", "add and remove");
}

static void test_scope_filters(void **ctx)
{
	(void)ctx;
	static const struct {
		const char *entry, *want;
	} cases[] = {
		{ "'~d x'", "~d x" },
		{ "{'hostname':'api.target.com'}", "~d \"^api\\\\.target\\\\.com$\"" },
		{ "{'hostname':'*.target.com'}", "~d \"^.+\\\\.target\\\\.com$\"" },
		{ "{'hostname':'*.t.com','url_prefix':'/api/','method':'POST'}",
		  "~d \"^.+\\\\.t\\\\.com$\" & ~u \"^[a-z][a-z0-9+.-]*://[^/]+\\\\/api\\\\/\" & "
		  "~m \"^POST$\"" },
		{ "{'url_prefix':'/a\\\"b'}", "~u \"^[a-z][a-z0-9+.-]*://[^/]+\\\\/a\\\"b\"" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *e = load(cases[i].entry);
		char *f = config_scope_filter(e);
		assert_non_null(f);
		if (strcmp(f, cases[i].want) != 0)
			fail_msg("%s: got %s, want %s", cases[i].entry, f, cases[i].want);
		free(f);
		json_decref(e);
	}
	json_t *empty = json_object();
	assert_null(config_scope_filter(empty));
	json_decref(empty);
}

static void test_load_save(void **ctx)
{
	(void)ctx;
	char dir[] = "/tmp/wgmitm-config-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, CONFIG_FILE);
	struct config_error err;
	json_t *d = config_load(path, &checks, &err); /* missing: the defaults */
	assert_non_null(d);
	has(d, "max_connections", "16384");
	json_t *req = load("{'max_connections':7,'tls_passthrough':{'add':['a.example']}}");
	json_t *c = config_configure(d, req, &checks, &err);
	json_decref(req);
	assert_int_equal(config_save(path, c), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	json_t *back = config_load(path, &checks, &err);
	assert_non_null(back);
	assert_true(json_equal(back, c));
	json_decref(back);

	/* A bad saved value names the file and the field. */
	FILE *f = fopen(path, "w");
	fputs("{\"max_connections\": -1}\n", f);
	fclose(f);
	assert_null(config_load(path, &checks, &err));
	assert_non_null(strstr(err.message, path));
	assert_non_null(strstr(err.message, "max_connections"));
	f = fopen(path, "w");
	fputs("{\"max_connections\": ", f);
	fclose(f);
	assert_null(config_load(path, &checks, &err));
	assert_non_null(strstr(err.message, "line 1"));
	unlink(path);
	rmdir(dir);
	json_decref(d);
	json_decref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_start_resets_configure_merges),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_scope_filters),
		cmocka_unit_test(test_load_save),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
