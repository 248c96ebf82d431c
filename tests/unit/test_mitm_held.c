/* Breakpoints: the held registry (ids, bounds, release, kill, timeouts,
 * edits parsed with field-named errors) and the HTTP/1.1 layer holding,
 * releasing as is or edited, killing and timing out, in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/h1rw.h"
#include "mitm/held.h"
#include "mitm/rules.h"

/* ---- the registry ---------------------------------------------------------- */

struct rec {
	int released, killed, events;
	bool edited;
	char last[16];
	uint64_t last_id;
};

static void rec_release(void *ctx, uint64_t id, const struct held_edits *e)
{
	struct rec *r = ctx;
	r->released++;
	r->edited = e != NULL;
	r->last_id = id;
}

static void rec_kill(void *ctx, uint64_t id)
{
	struct rec *r = ctx;
	r->killed++;
	r->last_id = id;
}

static void rec_event(void *ctx, const char *what, const json_t *item)
{
	struct rec *r = ctx;
	assert_non_null(json_object_get(item, "id"));
	r->events++;
	snprintf(r->last, sizeof(r->last), "%s", what);
}

static const struct held_item_ops rec_ops = { .release = rec_release, .kill = rec_kill };

static json_t *info(const char *phase)
{
	return json_pack("{s:s,s:s}", "phase", phase, "url", "https://x/");
}

static void test_registry(void **state)
{
	(void)state;
	struct rec r = { 0 };
	struct held *h = held_new(&(struct held_config){
		.max = 2, .timeout_ms = 1000, .event = rec_event, .ctx = &r });
	uint64_t a = held_add(h, info("request"), &rec_ops, &r, 0);
	uint64_t b = held_add(h, info("response"), &rec_ops, &r, 500);
	assert_true(a && b && a != b);
	assert_string_equal(r.last, "held");
	assert_int_equal(held_add(h, info("request"), &rec_ops, &r, 0), 0); /* full */
	json_t *l = held_list(h);
	assert_int_equal(json_array_size(l), 2);
	assert_non_null(json_object_get(json_array_get(l, 0), "deadline"));
	json_decref(l);
	char why[256];
	/* Bad edits: the field is named, the item stays. */
	json_t *bad = json_pack("{s:s}", "method", "GE T");
	assert_int_equal(held_release(h, a, bad, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "method"));
	json_decref(bad);
	bad = json_pack("{s:i}", "status", 201); /* a request has no status */
	assert_int_equal(held_release(h, a, bad, why, sizeof(why)), -EINVAL);
	json_decref(bad);
	assert_int_equal(held_count(h), 2);
	json_t *ok = json_pack("{s:{s:s}}", "set_headers", "X-A", "1");
	assert_int_equal(held_release(h, a, ok, why, sizeof(why)), 0);
	json_decref(ok);
	assert_int_equal(r.released, 1);
	assert_true(r.edited);
	assert_string_equal(r.last, "released");
	assert_int_equal(held_release(h, a, NULL, why, sizeof(why)), -ENOENT);
	/* Timeouts release as it is. */
	assert_int_equal(held_expire(h, 1000), 1500);
	assert_int_equal(held_expire(h, 1500), 0);
	assert_int_equal(r.released, 2);
	assert_false(r.edited);
	assert_string_equal(r.last, "timeout");
	/* Kill, remove. */
	uint64_t c = held_add(h, info("request"), &rec_ops, &r, 2000);
	assert_int_equal(held_kill(h, c), 0);
	assert_int_equal(r.killed, 1);
	assert_int_equal(held_kill(h, c), -ENOENT);
	uint64_t d = held_add(h, info("request"), &rec_ops, &r, 2000);
	held_remove(h, d, "closed");
	assert_string_equal(r.last, "closed");
	assert_int_equal(held_count(h), 0);
	assert_int_equal(r.released, 2);
	held_add(h, info("request"), &rec_ops, &r, 2000); /* freed with the registry */
	held_free(h);
}

static void test_edits(void **state)
{
	(void)state;
	static const struct {
		const char *json;
		enum held_phase phase;
		const char *field; /* NULL: accepted */
	} T[] = {
		{ "{}", HELD_REQUEST, NULL },
		{ "{\"method\": \"PUT\", \"path\": \"/a?b=1\", \"body\": \"x\"}", HELD_REQUEST,
		  NULL },
		{ "{\"status\": 201, \"headers\": [[\"A\", \"1\"]], \"body_base64\": \"aGk=\"}",
		  HELD_RESPONSE, NULL },
		{ "{\"bogus\": 1}", HELD_REQUEST, "bogus" },
		{ "{\"path\": \"/a b\"}", HELD_REQUEST, "path" },
		{ "{\"path\": \"x\"}", HELD_REQUEST, "path" },
		{ "{\"status\": 99}", HELD_RESPONSE, "status" },
		{ "{\"method\": \"GET\"}", HELD_RESPONSE, "method" },
		{ "{\"headers\": [[\"A\"]]}", HELD_REQUEST, "headers[0]" },
		{ "{\"headers\": [[\"A B\", \"1\"]]}", HELD_REQUEST, "headers[0]" },
		{ "{\"set_headers\": {\"A\": \"x\\r\\nB: y\"}}", HELD_REQUEST, "set_headers.A" },
		{ "{\"remove_headers\": [1]}", HELD_REQUEST, "remove_headers[0]" },
		{ "{\"body\": \"a\", \"body_base64\": \"YQ==\"}", HELD_REQUEST, "body" },
		{ "{\"body_base64\": \"!!\"}", HELD_REQUEST, "body_base64" },
		{ "[1]", HELD_REQUEST, "edits" },
	};
	for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
		json_t *j = json_loads(T[i].json, 0, NULL);
		assert_non_null(j);
		struct held_edits e;
		char why[256] = "";
		int rc = held_edits_parse(j, T[i].phase, &e, why, sizeof(why));
		json_decref(j);
		if (!T[i].field) {
			if (rc != 0)
				fail_msg("%s: %s", T[i].json, why);
			held_edits_free(&e);
			continue;
		}
		if (rc == 0 || strncmp(why, T[i].field, strlen(T[i].field)) != 0)
			fail_msg("%s: expected an error on %s, got %d (%s)", T[i].json, T[i].field,
				 rc, why);
	}
	/* Header edits: the whole list, then removals, then sets. */
	json_t *j =
		json_loads("{\"headers\": [[\"A\", \"1\"], [\"B\", \"2\"], [\"B\", \"3\"]],"
			   " \"remove_headers\": [\"a\"], \"set_headers\": {\"b\": \"9\", \"C\": "
			   "\"4\"}}",
			   0, NULL);
	struct held_edits e;
	char why[256];
	assert_int_equal(held_edits_parse(j, HELD_REQUEST, &e, why, sizeof(why)), 0);
	json_decref(j);
	struct http_headers h = { 0 };
	assert_int_equal(http_headers_add(&h, "Z", 1, "0", 1), 0);
	assert_int_equal(held_edits_apply_headers(&e, &h), 0);
	assert_int_equal(h.n, 2);
	assert_string_equal(h.v[0].name, "b");
	assert_string_equal(h.v[0].value, "9");
	assert_string_equal(h.v[1].name, "C");
	http_headers_free(&h);
	held_edits_free(&e);
}

/* ---- the HTTP/1.1 layer -------------------------------------------------------- */

struct conn {
	struct h1rw *w;
	struct held *reg;
	char up[8192], cl[8192];
	size_t uplen, cllen;
	uint64_t id[2];
	bool reset;
	uint64_t now;
};

static void to_up(void *ctx, const uint8_t *p, size_t n)
{
	struct conn *c = ctx;
	assert_true(c->uplen + n < sizeof(c->up));
	memcpy(c->up + c->uplen, p, n);
	c->uplen += n;
	c->up[c->uplen] = '\0';
}

static void to_cl(void *ctx, const uint8_t *p, size_t n)
{
	struct conn *c = ctx;
	assert_true(c->cllen + n < sizeof(c->cl));
	memcpy(c->cl + c->cllen, p, n);
	c->cllen += n;
	c->cl[c->cllen] = '\0';
}

static void on_reset(void *ctx, const char *id)
{
	(void)id;
	((struct conn *)ctx)->reset = true;
}

static void on_delay(void *ctx, uint32_t ms)
{
	(void)ctx;
	(void)ms;
}

static void c_release(void *ctx, uint64_t id, const struct held_edits *e)
{
	struct conn *c = ctx;
	enum held_phase ph = c->id[0] == id ? HELD_REQUEST : HELD_RESPONSE;
	c->id[ph - 1] = 0;
	h1rw_release(c->w, ph, e);
}

static void c_kill(void *ctx, uint64_t id)
{
	struct conn *c = ctx;
	enum held_phase ph = c->id[0] == id ? HELD_REQUEST : HELD_RESPONSE;
	c->id[ph - 1] = 0;
	h1rw_kill(c->w, ph);
}

static const struct held_item_ops c_ops = { .release = c_release, .kill = c_kill };

static int on_hold(void *ctx, enum held_phase ph, json_t *info)
{
	struct conn *c = ctx;
	uint64_t id = held_add(c->reg, info, &c_ops, c, c->now);
	if (!id)
		return -1;
	c->id[ph - 1] = id;
	return 0;
}

static void on_unhold(void *ctx, enum held_phase ph, const char *why)
{
	struct conn *c = ctx;
	held_remove(c->reg, c->id[ph - 1], why);
	c->id[ph - 1] = 0;
}

static struct ruleset *rs_of(const char *json)
{
	json_t *a = json_loads(json, 0, NULL);
	assert_non_null(a);
	struct rules_error err;
	struct ruleset *rs = ruleset_new(a, "intercept_rules", NULL, NULL, &err);
	if (!rs)
		fail_msg("%s: %s", err.field, err.message);
	json_decref(a);
	return rs;
}

static void conn_open(struct conn *c, const char *rules)
{
	memset(c, 0, sizeof(*c));
	c->reg = held_new(&(struct held_config){ .timeout_ms = 1000 });
	struct ruleset *rs = rs_of(rules);
	struct h1rw_config cfg = { .ops = { .to_upstream = to_up,
					    .to_client = to_cl,
					    .reset = on_reset,
					    .delay = on_delay,
					    .hold = on_hold,
					    .unhold = on_unhold },
				   .ctx = c,
				   .rules = rs,
				   .peer = "phone",
				   .scheme = "https",
				   .default_authority = "203.0.113.10:443" };
	c->w = h1rw_new(&cfg);
	assert_non_null(c->w);
	ruleset_unref(rs);
}

static void conn_close(struct conn *c)
{
	h1rw_free(c->w);
	held_free(c->reg);
}

static void cl(struct conn *c, const char *s)
{
	h1rw_client(c->w, (const uint8_t *)s, strlen(s));
}

static void sv(struct conn *c, const char *s)
{
	h1rw_server(c->w, (const uint8_t *)s, strlen(s));
}

static void release(struct conn *c, uint64_t id, const char *edits)
{
	json_t *j = edits ? json_loads(edits, 0, NULL) : NULL;
	char why[256];
	int rc = held_release(c->reg, id, j, why, sizeof(why));
	if (rc)
		fail_msg("release: %s", why);
	json_decref(j);
}

static const char *REQ_BP = "[{\"id\": \"bp\", \"match\": \"~u /hold\"}]";

/* A held request goes nowhere; the one behind it waits; released edited. */
static void test_hold_request(void **state)
{
	(void)state;
	struct conn c;
	conn_open(&c, REQ_BP);
	cl(&c, "POST /hold HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\n\r\nabc"
	       "GET /next HTTP/1.1\r\nHost: www.test\r\n\r\n");
	assert_int_equal(c.uplen, 0);
	assert_true(c.id[0] != 0);
	assert_true(h1rw_holding(c.w, HELD_REQUEST));
	json_t *it = held_get(c.reg, c.id[0]);
	assert_string_equal(json_string_value(json_object_get(it, "method")), "POST");
	assert_string_equal(json_string_value(json_object_get(it, "url")), "https://www.test/hold");
	assert_string_equal(json_string_value(json_object_get(it, "rule")), "bp");
	assert_string_equal(json_string_value(json_object_get(json_object_get(it, "body"), "text")),
			    "abc");
	json_decref(it);
	release(&c, c.id[0],
		"{\"method\": \"PUT\", \"path\": \"/headers\", \"set_headers\": {\"X-Edit\": "
		"\"1\"}, \"body\": \"hello\"}");
	assert_false(h1rw_holding(c.w, HELD_REQUEST));
	assert_non_null(strstr(c.up, "PUT /headers HTTP/1.1\r\n"));
	assert_non_null(strstr(c.up, "X-Edit: 1\r\n"));
	assert_non_null(strstr(c.up, "Content-Length: 5\r\n"));
	assert_non_null(strstr(c.up, "\r\n\r\nhello"));
	/* The pipelined request went on after it, in order. */
	assert_true(strstr(c.up, "GET /next") > strstr(c.up, "hello"));
	sv(&c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n");
	assert_non_null(strstr(c.cl, "200 OK"));
	json_t *n = h1rw_take_note(c.w);
	assert_string_equal(json_string_value(json_object_get(n, "request_breakpoint")), "edited");
	assert_non_null(json_object_get(n, "request_held"));
	json_decref(n);
	conn_close(&c);
}

/* Timed out: released as it is. Killed: nothing more is written. */
static void test_timeout_and_kill(void **state)
{
	(void)state;
	struct conn c;
	conn_open(&c, REQ_BP);
	cl(&c, "GET /hold/1 HTTP/1.1\r\nHost: www.test\r\n\r\n");
	assert_int_equal(c.uplen, 0);
	assert_int_equal(held_expire(c.reg, 999), 1000);
	assert_int_equal(c.uplen, 0);
	assert_int_equal(held_expire(c.reg, 1000), 0);
	assert_string_equal(c.up, "GET /hold/1 HTTP/1.1\r\nHost: www.test\r\n\r\n");
	sv(&c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	cl(&c, "GET /hold/2 HTTP/1.1\r\nHost: www.test\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
	size_t before = c.uplen, cbefore = c.cllen;
	assert_int_equal(held_kill(c.reg, c.id[0]), 0);
	cl(&c, "GET /y HTTP/1.1\r\n\r\n");
	sv(&c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	assert_int_equal(c.uplen, before);
	assert_int_equal(c.cllen, cbefore);
	json_t *n;
	bool killed = false;
	while ((n = h1rw_take_note(c.w)) != NULL) {
		const char *o = json_string_value(json_object_get(n, "request_breakpoint"));
		killed |= o && strcmp(o, "killed") == 0;
		json_decref(n);
	}
	assert_true(killed);
	conn_close(&c);
}

/* A response held before the client; released with a new status, headers
 * and body; the server's next bytes wait behind it. */
static void test_hold_response(void **state)
{
	(void)state;
	struct conn c;
	conn_open(&c, "[{\"id\": \"rbp\", \"direction\": \"response\", \"match\": \"~u /r\"}]");
	cl(&c,
	   "GET /r HTTP/1.1\r\nHost: www.test\r\n\r\nGET /s HTTP/1.1\r\nHost: www.test\r\n\r\n");
	assert_true(c.uplen > 0);
	sv(&c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	       "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext");
	assert_int_equal(c.cllen, 0);
	assert_true(c.id[1] != 0);
	json_t *it = held_get(c.reg, c.id[1]);
	assert_int_equal(json_integer_value(json_object_get(it, "status")), 200);
	assert_string_equal(json_string_value(json_object_get(it, "phase")), "response");
	json_decref(it);
	release(&c, c.id[1],
		"{\"status\": 503, \"set_headers\": {\"X-R\": \"1\"}, \"body\": \"no\"}");
	assert_non_null(strstr(c.cl, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(c.cl, "X-R: 1\r\n"));
	assert_non_null(strstr(c.cl, "Content-Length: 2\r\n"));
	assert_null(strstr(c.cl, "chunked"));
	assert_non_null(strstr(c.cl, "\r\n\r\nno"));
	assert_true(strstr(c.cl, "next") > strstr(c.cl, "\r\n\r\nno"));
	/* The server closes while a response is held: it goes at once. */
	cl(&c, "GET /r2 HTTP/1.1\r\nHost: www.test\r\n\r\n");
	sv(&c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
	assert_true(c.id[1] != 0);
	size_t before = c.cllen;
	h1rw_server_eof(c.w);
	assert_int_equal(c.id[1], 0);
	assert_int_equal(held_count(c.reg), 0);
	assert_true(c.cllen > before);
	conn_close(&c);
}

/* The connection goes away while an item is held: freed, no callback. */
static void test_free_while_held(void **state)
{
	(void)state;
	struct conn c;
	conn_open(&c, REQ_BP);
	cl(&c, "GET /hold HTTP/1.1\r\nHost: www.test\r\n\r\nGET /a HTTP/1.1\r\n\r\n");
	assert_int_equal(held_count(c.reg), 1);
	held_remove(c.reg, c.id[0], "closed");
	conn_close(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registry),      cmocka_unit_test(test_edits),
		cmocka_unit_test(test_hold_request),  cmocka_unit_test(test_timeout_and_kill),
		cmocka_unit_test(test_hold_response), cmocka_unit_test(test_free_while_held),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
