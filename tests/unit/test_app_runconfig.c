/* The configuration applied to a running endpoint: run's options as a
 * document, and the capture scope gating what the flow log takes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flows/flowlog.h"
#include "runconfig.h"

static json_t *load(const char *text)
{
	char *s = strdup(text);
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
	free(s);
	assert_non_null(j);
	return j;
}

static void test_options(void **ctx)
{
	(void)ctx;
	struct daemon_options o = { .auto_passthrough_s = -1, .body_cap = -1 };
	json_t *d = runconfig_from_options(&o);
	assert_int_equal(json_object_size(d), 0); /* nothing given: nothing overrides */
	json_decref(d);
	o.passthrough[0] = "*.apple.com";
	o.npassthrough = 1;
	o.no_intercept = true;
	o.body_cap = 0;
	o.host_ports[0] = 3000;
	o.nhost_ports = 1;
	o.max_tcp = 100;
	d = runconfig_from_options(&o);
	json_t *want = load("{'tls_passthrough':['*.apple.com'],'intercept_tls':false,'body_cap':0,"
			    "'allow_host_ports':[3000],'max_connections':100}");
	assert_true(json_equal(d, want));
	json_decref(want);
	/* Over a saved document: the options win, the rest is kept. */
	json_t *saved =
		load("{'tls_passthrough':['*.x.com'],'max_connections':7,'quic':'passthrough'}");
	struct config_error err;
	json_t *cur = config_start(saved, &runconfig_checks, &err);
	json_t *eff = config_configure(cur, d, &runconfig_checks, &err);
	assert_non_null(eff);
	assert_string_equal(
		json_string_value(json_array_get(json_object_get(eff, "tls_passthrough"), 0)),
		"*.apple.com");
	assert_int_equal(json_integer_value(json_object_get(eff, "max_connections")), 100);
	assert_string_equal(json_string_value(json_object_get(eff, "quic")), "passthrough");
	json_decref(saved);
	json_decref(cur);
	json_decref(eff);
	json_decref(d);
}

static void test_filter_check(void **ctx)
{
	(void)ctx;
	struct config_error err;
	json_t *req = load("{'capture_scope':{'excludes':['~d ok','~c abc']}}");
	assert_null(config_start(req, &runconfig_checks, &err));
	assert_string_equal(err.field, "capture_scope.excludes[1]");
	assert_non_null(strstr(err.message, "column"));
	json_decref(req);
	req = load("{'dns_upstreams':['not an address']}");
	assert_null(config_start(req, &runconfig_checks, &err));
	assert_string_equal(err.field, "dns_upstreams[0]");
	json_decref(req);
}

static void write_rec(struct flowlog *log, const char *id, const char *url, const char *method)
{
	json_t *r = json_pack("{s:s,s:s,s:s,s:s}", "type", "http", "id", id, "url", url, "method",
			      method);
	assert_int_equal(flowlog_write(log, r), 0);
	json_decref(r);
}

static int collect_ids(void *ctx, size_t line, json_t *record, const char *error)
{
	(void)line;
	assert_null(error);
	char *ids = ctx;
	strcat(ids, json_string_value(json_object_get(record, "id")));
	strcat(ids, " ");
	return 0;
}

/* Includes select, excludes win, object rules act as filters; a later
 * document replaces the scope, and an empty one records everything. */
static void test_scope(void **ctx)
{
	(void)ctx;
	char dir[] = "/tmp/wgmitm-scope-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/flows.jsonl", dir);
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, path, NULL), 0);
	struct runconfig_scope *scope = NULL;
	struct runconfig_targets t = { .log = log, .scope = &scope };
	struct config_error err;
	json_t *req = load("{'capture_scope':{'includes':[{'hostname':'*.target.com'},'~m POST'],"
			   "'excludes':[{'hostname':'static.target.com'}]}}");
	json_t *doc = config_start(req, &runconfig_checks, &err);
	assert_non_null(doc);
	assert_int_equal(runconfig_apply(&t, NULL, doc, &err), 0);
	assert_non_null(scope);
	write_rec(log, "a", "https://api.target.com/x", "GET");     /* included */
	write_rec(log, "b", "https://static.target.com/x", "GET");  /* excluded */
	write_rec(log, "c", "https://other.com/x", "GET");          /* not included */
	write_rec(log, "d", "https://other.com/x", "POST");         /* included by ~m */
	write_rec(log, "e", "https://static.target.com/x", "POST"); /* excludes win */
	assert_int_equal(flowlog_skipped(log), 3);

	json_t *req2 = load("{'capture_scope':{'includes':[],'excludes':[]}}");
	json_t *doc2 = config_configure(doc, req2, &runconfig_checks, &err);
	assert_int_equal(runconfig_apply(&t, doc, doc2, &err), 0);
	assert_null(scope);
	write_rec(log, "f", "https://other.com/x", "GET");
	flowlog_close(log);
	char ids[64] = "";
	assert_int_equal(flowlog_read(path, collect_ids, ids, NULL), 0);
	assert_string_equal(ids, "a d f ");
	unlink(path);
	rmdir(dir);
	json_decref(req);
	json_decref(req2);
	json_decref(doc);
	json_decref(doc2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_filter_check),
		cmocka_unit_test(test_scope),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
