/* Interception rules: parsing with field-named errors, run's option syntax,
 * matching and its order, the header and body edits, redirects, DNS
 * overrides and the connection gate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mitm/rules.h"

static struct ruleset *compile(const char *json, struct rules_error *err)
{
	json_error_t je;
	json_t *a = json_loads(json, 0, &je);
	assert_non_null(a);
	struct ruleset *rs = ruleset_new(a, "intercept_rules", NULL, "dns_overrides", err);
	json_decref(a);
	return rs;
}

/* Bad rules: the path of the field and a reason. */
static void test_errors(void **state)
{
	(void)state;
	static const struct {
		const char *json, *field, *msg;
	} T[] = {
		{ "[{}]", "intercept_rules[0].id", "required" },
		{ "[{\"id\": \"a b\"}]", "intercept_rules[0].id", "letters" },
		{ "[{\"id\": \"a\", \"bogus\": 1}]", "intercept_rules[0].bogus", "unknown" },
		{ "[{\"id\": \"a\", \"direction\": \"up\"}]", "intercept_rules[0].direction",
		  "expected" },
		{ "[{\"id\": \"a\", \"match\": \"~c abc\"}]", "intercept_rules[0].match", "~c" },
		{ "[{\"id\": \"a\", \"conditions\": {\"host_pattern\": \"(\"}}]",
		  "intercept_rules[0].conditions.host_pattern", "regex" },
		{ "[{\"id\": \"a\", \"actions\": [{\"type\": \"mock\", \"status\": 42}]}]",
		  "intercept_rules[0].actions[0].status", "100" },
		{ "[{\"id\": \"a\", \"actions\": [{\"type\": \"zap\"}]}]",
		  "intercept_rules[0].actions[0].type", "unknown action" },
		{ "[{\"id\": \"a\", \"direction\": \"response\", \"actions\": [{\"type\": "
		  "\"mock\"}]}]",
		  "intercept_rules[0].actions[0].type", "requests" },
		{ "[{\"id\": \"a\", \"actions\": [{\"type\": \"set_header\", \"name\": \"X\", "
		  "\"value\": \"a\\r\\nb\"}]}]",
		  "intercept_rules[0].actions[0].value", "CR" },
		{ "[{\"id\": \"a\", \"actions\": [{\"type\": \"set_status\", \"status\": 200}]}]",
		  "intercept_rules[0].actions[0].type", "responses" },
		{ "[{\"id\": \"a\", \"actions\": [{\"type\": \"mock\", \"body_file\": "
		  "\"/nonexistent/x\"}]}]",
		  "intercept_rules[0].actions[0].body_file", "cannot read" },
		{ "[{\"id\": \"a\", \"actions\": [{\"type\": \"redirect\"}]}]",
		  "intercept_rules[0].actions[0]", "redirect needs" },
		{ "[{\"id\": \"a\"}, {\"id\": \"a\"}]", "intercept_rules[1].id", "already" },
	};
	for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
		struct rules_error err;
		struct ruleset *rs = compile(T[i].json, &err);
		if (rs || strcmp(err.field, T[i].field) != 0 || !strstr(err.message, T[i].msg))
			fail_msg("%s: got %s (%s: %s)", T[i].json, rs ? "a set" : "an error",
				 err.field, err.message);
	}
}

static void hdrs(struct http_headers *h, const char *const *kv)
{
	memset(h, 0, sizeof(*h));
	for (; kv && kv[0]; kv += 2)
		assert_int_equal(http_headers_add(h, kv[0], strlen(kv[0]), kv[1], strlen(kv[1])),
				 0);
}

static struct rules_msg req(const char *host, const char *method, const char *path,
			    const struct http_headers *h)
{
	return (struct rules_msg){ .peer = "phone",
				   .scheme = "https",
				   .host = host,
				   .authority = host,
				   .path = path,
				   .method = method,
				   .req_headers = h };
}

/* All matching transforms in order; the first terminal action wins. */
static void test_order(void **state)
{
	(void)state;
	struct rules_error err;
	struct ruleset *rs = compile(
		"[{\"id\": \"h1\", \"conditions\": {\"host_pattern\": \"^api\\\\.test$\"},"
		"  \"actions\": [{\"type\": \"set_header\", \"name\": \"X-A\", \"value\": \"1\"}]},"
		" {\"id\": \"off\", \"enabled\": false, \"actions\": [{\"type\": \"block\"}]},"
		" {\"id\": \"m1\", \"conditions\": {\"path_pattern\": \"^/v1/\", \"methods\": "
		"[\"post\"]},"
		"  \"actions\": [{\"type\": \"mock\", \"status\": 201, \"body\": \"hi\"}]},"
		" {\"id\": \"h2\", \"match\": \"~hq X-Debug\","
		"  \"actions\": [{\"type\": \"add_header\", \"name\": \"X-A\", \"value\": \"2\"},"
		"               {\"type\": \"block\", \"status\": 403}]},"
		" {\"id\": \"r1\", \"direction\": \"response\", \"match\": \"~c 404\","
		"  \"actions\": [{\"type\": \"set_status\", \"status\": 200}]}]",
		&err);
	assert_non_null(rs);
	struct http_headers h;
	const char *kv[] = { "X-Debug", "yes", "Host", "api.test", NULL };
	hdrs(&h, kv);
	struct rules_msg m = req("api.test", "POST", "/v1/x", &h);
	struct rules_plan plan;
	assert_true(rules_plan_for(rs, RULE_REQUEST, &m, &plan));
	assert_int_equal(plan.nmatched, 3);
	assert_string_equal(plan.matched[0]->id, "h1");
	assert_string_equal(plan.matched[1]->id, "m1");
	assert_string_equal(plan.matched[2]->id, "h2");
	assert_int_equal(plan.ntransforms, 2);
	assert_int_equal(plan.terminal->kind, RA_MOCK); /* m1 before h2's block */
	assert_int_equal(plan.terminal->status, 201);
	assert_int_equal(rules_apply_headers(&plan, RULE_REQUEST, &h), 0);
	assert_int_equal(h.n, 4);
	assert_string_equal(h.v[2].name, "X-A");
	assert_string_equal(h.v[2].value, "1");
	assert_string_equal(h.v[3].value, "2");

	/* GET: no mock; the block of h2 is the terminal. */
	m.method = "GET";
	assert_true(rules_plan_for(rs, RULE_REQUEST, &m, &plan));
	assert_int_equal(plan.terminal->kind, RA_BLOCK);
	assert_int_equal(plan.terminal->status, 403);

	/* Another host, no X-Debug: nothing. */
	http_headers_free(&h);
	hdrs(&h, NULL);
	m = req("www.test", "GET", "/", &h);
	assert_false(rules_plan_for(rs, RULE_REQUEST, &m, &plan));

	/* The response phase sees the status. */
	struct http_headers rh;
	hdrs(&rh, NULL);
	m.status = 404;
	m.resp_headers = &rh;
	assert_true(rules_plan_for(rs, RULE_RESPONSE, &m, &plan));
	assert_string_equal(plan.matched[0]->id, "r1");
	m.status = 200;
	assert_false(rules_plan_for(rs, RULE_RESPONSE, &m, &plan));
	http_headers_free(&h);
	http_headers_free(&rh);
	ruleset_unref(rs);
}

/* Which connections leave the fast path. */
static void test_gate(void **state)
{
	(void)state;
	struct rules_error err;
	struct ruleset *rs = compile(
		"[{\"id\": \"a\", \"match\": \"~d ^api\\\\.test$ & ~m POST\", \"actions\": "
		"[{\"type\": \"block\"}]},"
		" {\"id\": \"b\", \"device\": \"tablet\", \"actions\": [{\"type\": \"block\"}]},"
		" {\"id\": \"c\", \"conditions\": {\"host_pattern\": \"staging\"}, \"actions\": "
		"[{\"type\": \"block\"}]}]",
		&err);
	assert_non_null(rs);
	assert_true(ruleset_may_apply(rs, "phone", "api.test"));
	assert_false(ruleset_may_apply(rs, "phone", "www.test"));
	assert_true(ruleset_may_apply(rs, "phone", "x.staging.test"));
	assert_true(ruleset_may_apply(rs, "tablet", "www.test"));
	assert_true(ruleset_may_apply(rs, "phone", NULL)); /* host unknown */
	ruleset_unref(rs);
	rs = compile("[{\"id\": \"a\", \"match\": \"!~d ^www\", \"actions\": [{\"type\": "
		     "\"block\"}]}]",
		     &err);
	assert_false(ruleset_may_apply(rs, "phone", "www.test"));
	assert_true(ruleset_may_apply(rs, "phone", "api.test"));
	ruleset_unref(rs);
	rs = compile("[]", &err);
	assert_false(ruleset_may_apply(rs, "phone", "api.test"));
	ruleset_unref(rs);
}

static void test_bodies(void **state)
{
	(void)state;
	struct rules_error err;
	struct ruleset *rs = compile(
		"[{\"id\": \"a\", \"direction\": \"both\", \"actions\": ["
		"  {\"type\": \"replace_body\", \"regex\": \"(c[a-z]+)\", \"replacement\": "
		"\"<$1>\", \"on\": \"response\"},"
		"  {\"type\": \"set_json\", \"path\": \"user.role\", \"value\": \"admin\", \"on\": "
		"\"response\"},"
		"  {\"type\": \"set_json\", \"path\": \"items.1\", \"value\": 9, \"on\": "
		"\"response\"}]}]",
		&err);
	assert_non_null(rs);
	struct http_headers h;
	hdrs(&h, NULL);
	struct rules_msg m = req("a.test", "GET", "/", &h);
	m.status = 200;
	m.resp_headers = &h;
	struct rules_plan plan;
	assert_true(rules_plan_for(rs, RULE_RESPONSE, &m, &plan));
	assert_true(plan.needs_body);
	const char *in = "{\"user\": {\"name\": \"cat\"}, \"items\": [1, 2]}";
	uint8_t *out;
	size_t n;
	assert_int_equal(rules_apply_body(&plan, RULE_RESPONSE, (const uint8_t *)in, strlen(in),
					  4096, &out, &n),
			 0);
	assert_non_null(out);
	char *s = strndup((char *)out, n);
	assert_string_equal(s,
			    "{\"user\":{\"name\":\"<cat>\",\"role\":\"admin\"},\"items\":[1,9]}");
	free(s);
	free(out);
	/* Over the cap: refused, the body stays. */
	assert_int_equal(rules_apply_body(&plan, RULE_RESPONSE, (const uint8_t *)in, strlen(in), 10,
					  &out, &n),
			 -E2BIG);
	/* Not JSON: the JSON edits do nothing, the regex still applies. */
	assert_int_equal(
		rules_apply_body(&plan, RULE_RESPONSE, (const uint8_t *)"cow", 3, 4096, &out, &n),
		0);
	assert_int_equal(n, 5);
	assert_memory_equal(out, "<cow>", 5);
	free(out);
	http_headers_free(&h);
	ruleset_unref(rs);
}

static void test_redirect(void **state)
{
	(void)state;
	struct rules_error err;
	struct ruleset *rs = compile(
		"[{\"id\": \"a\", \"actions\": [{\"type\": \"redirect\", \"host\": "
		"\"staging.test\", "
		"\"port\": 8443}]},"
		" {\"id\": \"b\", \"actions\": [{\"type\": \"redirect\", \"url_regex\": "
		"\"^https://api\\\\.test/v1/\", \"replacement\": \"http://10.0.0.9:8080/v2/\"}]}]",
		&err);
	assert_non_null(rs);
	char scheme[8], host[256], path[1024];
	uint16_t port;
	assert_int_equal(rules_redirect_target(&rs->v[0].actions[0], "https", "api.test", "/v1/x?y",
					       scheme, sizeof(scheme), host, sizeof(host), &port,
					       path, sizeof(path)),
			 0);
	assert_string_equal(scheme, "https");
	assert_string_equal(host, "staging.test");
	assert_int_equal(port, 8443);
	assert_string_equal(path, "/v1/x?y");
	assert_int_equal(rules_redirect_target(&rs->v[1].actions[0], "https", "api.test", "/v1/x?y",
					       scheme, sizeof(scheme), host, sizeof(host), &port,
					       path, sizeof(path)),
			 0);
	assert_string_equal(scheme, "http");
	assert_string_equal(host, "10.0.0.9");
	assert_int_equal(port, 8080);
	assert_string_equal(path, "/v2/x?y");
	/* A bracketed host: ":PORT" alone may follow, 1 to 65535. */
	assert_int_equal(rules_redirect_target(&rs->v[0].actions[0], "https", "[2001:db8::1]:8443",
					       "/", scheme, sizeof(scheme), host, sizeof(host),
					       &port, path, sizeof(path)),
			 0);
	static const char *const bad[] = { "[.:T]://P", "[::1]:0", "[::1]:70000", "[::1]x",
					   "[::1]:8x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(rules_redirect_target(&rs->v[0].actions[0], "https", bad[i], "/",
						       scheme, sizeof(scheme), host, sizeof(host),
						       &port, path, sizeof(path)),
				 -1);
	ruleset_unref(rs);
}

/* run's options: mitmproxy's syntax, errors naming the option's field. */
static void test_options(void **state)
{
	(void)state;
	static const struct {
		const char *opt, *value;
		const char *expect; /* a fragment of the JSON, or NULL: an error */
		const char *field;  /* the error's field */
	} T[] = {
		{ "modify-headers", "|~d example|X-A|1", "\"set_header\"", NULL },
		{ "modify-headers", "/X-A/", "\"remove_header\"", NULL },
		{ "modify-headers", ":~c nope:X:1", NULL, "--modify-headers: FILTER" },
		{ "modify-headers", "|X A|1", NULL, "--modify-headers: NAME" },
		{ "map-remote", "|^https://a\\.test/|https://b.test/", "\"url_regex\"", NULL },
		{ "map-remote", "|(|x", NULL, "--map-remote: URL-REGEX" },
		{ "map-local", "|/v1/|/nonexistent", NULL, "--map-local: PATH" },
		{ "modify-body", "|~s|foo|bar", "\"replace_body\"", NULL },
		{ "block-list", "|~d ads|444", "\"block\"", NULL },
		{ "block-list", "|~d ads|4444", NULL, "--block-list: STATUS" },
		{ "block-list", "|a|b|c", NULL, "--block-list" },
		{ "intercept", "~s & ~c 500", "\"response\"", NULL },
		{ "intercept", "~d api", "\"breakpoint\"", NULL },
		{ "dns-override", "*.staging.test=10.0.0.1,fd00::1", "\"addresses\"", NULL },
		{ "dns-override", "x.test=banana", NULL, "--dns-override.addresses" },
		{ "dns-override", "x.test", NULL, "--dns-override" },
	};
	for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
		struct rules_error err;
		json_t *r = rules_from_option(T[i].opt, T[i].value, 1, &err);
		char *s = r ? json_dumps(r, JSON_COMPACT) : NULL;
		if (T[i].expect ? !s || !strstr(s, T[i].expect)
				: s || strcmp(err.field, T[i].field) != 0)
			fail_msg("--%s %s: %s (%s: %s)", T[i].opt, T[i].value, s ? s : "error",
				 err.field, err.message);
		free(s);
		json_decref(r);
	}
	/* map-local reads its file; the URL regex becomes the match. */
	char path[] = "/tmp/wgmitm-rules-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "local", 5), 5);
	close(fd);
	char spec[128];
	snprintf(spec, sizeof(spec), "|/v1/\"x|%s", path);
	struct rules_error err;
	json_t *r = rules_from_option("map-local", spec, 2, &err);
	assert_non_null(r);
	assert_string_equal(json_string_value(json_object_get(r, "match")), "~u \"/v1/\\\"x\"");
	json_t *a = json_array();
	json_array_append_new(a, r);
	struct ruleset *rs = ruleset_new(a, "x", NULL, "d", &err);
	json_decref(a);
	assert_non_null(rs);
	assert_int_equal(rs->v[0].actions[0].body_len, 5);
	ruleset_unref(rs);
	unlink(path);
}

static void test_dns(void **state)
{
	(void)state;
	json_error_t je;
	json_t *d =
		json_loads("[{\"name\": \"*.staging.test\", \"addresses\": [\"10.0.0.1\"]},"
			   " {\"name\": \"api.staging.test.\", \"addresses\": [\"10.0.0.2\"]},"
			   " {\"name\": \"API.test\", \"addresses\": [\"fd00::3\"], \"device\": "
			   "\"tablet\"}]",
			   0, &je);
	struct rules_error err;
	struct ruleset *rs = ruleset_new(NULL, "r", d, "dns_overrides", &err);
	json_decref(d);
	assert_non_null(rs);
	const struct rules_dns *x = ruleset_dns_lookup(rs, "a.b.staging.test.", "phone");
	assert_non_null(x);
	assert_string_equal(x->name, "*.staging.test");
	x = ruleset_dns_lookup(rs, "API.staging.test", NULL);
	assert_string_equal(x->name, "api.staging.test");
	assert_null(ruleset_dns_lookup(rs, "staging.test", "phone"));
	assert_null(ruleset_dns_lookup(rs, "api.test", "phone"));
	x = ruleset_dns_lookup(rs, "api.test", "tablet");
	assert_non_null(x);
	assert_int_equal(x->addrs[0].ss_family, AF_INET6);
	assert_false(ruleset_may_apply(rs, "phone", "a")); /* no HTTP rules */
	ruleset_unref(rs);
	d = json_loads("[{\"name\": \"a..b/\", \"addresses\": [\"10.0.0.1\"]}]", 0, &je);
	assert_null(ruleset_new(NULL, "r", d, "dns_overrides", &err));
	assert_string_equal(err.field, "dns_overrides[0].name");
	json_decref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errors),   cmocka_unit_test(test_order),
		cmocka_unit_test(test_gate),     cmocka_unit_test(test_bodies),
		cmocka_unit_test(test_redirect), cmocka_unit_test(test_options),
		cmocka_unit_test(test_dns),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
