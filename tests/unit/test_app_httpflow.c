/* Exchange records: header lists (order, duplicates, the byte bound), body
 * capture under a cap, body JSON (UTF-8 text, a sequence cut at the cap,
 * invalid UTF-8 as base64), and the "http" record keys of docs/flows.md
 * checked key by key and in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/httpflow.h"

/* ---- headers ------------------------------------------------------------- */

static void test_headers_order_duplicates_find(void **state)
{
	(void)state;
	struct http_headers h = { 0 };
	assert_int_equal(http_headers_add(&h, "Host", 4, "a.example", 9), 0);
	assert_int_equal(http_headers_add(&h, "Set-Cookie", 10, "a=1", 3), 0);
	assert_int_equal(http_headers_add(&h, "set-cookie", 10, "b=2", 3), 0);
	assert_int_equal(http_headers_add(&h, "X-Empty", 7, "", 0), 0);
	/* more than the initial array size: growth keeps order */
	for (int i = 0; i < 40; i++)
		assert_int_equal(http_headers_add(&h, "X-N", 3, "v", 1), 0);
	assert_int_equal(h.n, 44);
	assert_int_equal(h.bytes, 4 + 9 + 10 + 3 + 10 + 3 + 7 + 40 * 4);
	assert_string_equal(h.v[0].name, "Host");
	assert_string_equal(h.v[2].name, "set-cookie");
	assert_string_equal(h.v[2].value, "b=2");
	assert_int_equal(h.v[3].value_len, 0);
	assert_string_equal(h.v[3].value, "");

	const struct http_header *f = http_headers_find(&h, "SET-COOKIE");
	assert_non_null(f);
	assert_string_equal(f->value, "a=1"); /* the first one */
	assert_null(http_headers_find(&h, "Set-Cookie2"));
	assert_null(http_headers_find(&h, "Set-Cooki"));
	assert_false(h.truncated);
	http_headers_free(&h);
	assert_int_equal(h.n, 0);
	assert_null(h.v);
}

static void test_headers_byte_bound(void **state)
{
	(void)state;
	struct http_headers h = { 0 };
	size_t big = HTTPFLOW_MAX_HEADER_BYTES - 10;
	char *v = malloc(big);
	memset(v, 'x', big);
	assert_int_equal(http_headers_add(&h, "A", 1, v, big - 1), 0);
	/* 10 bytes left: a 6+5 header does not fit, a 4+6 one does */
	assert_int_equal(http_headers_add(&h, "Abcdef", 6, "12345", 5), -E2BIG);
	assert_true(h.truncated);
	assert_int_equal(h.n, 1);
	assert_int_equal(http_headers_add(&h, "Abcd", 4, "123456", 6), 0);
	assert_int_equal(h.bytes, HTTPFLOW_MAX_HEADER_BYTES);
	assert_int_equal(http_headers_add(&h, "", 0, "", 0), 0); /* zero bytes still fit */
	assert_int_equal(http_headers_add(&h, "B", 1, "", 0), -E2BIG);
	/* a single header over the bound on an empty list */
	struct http_headers h2 = { 0 };
	char *huge = malloc(HTTPFLOW_MAX_HEADER_BYTES + 1);
	memset(huge, 'y', HTTPFLOW_MAX_HEADER_BYTES + 1);
	assert_int_equal(http_headers_add(&h2, "", 0, huge, HTTPFLOW_MAX_HEADER_BYTES + 1), -E2BIG);
	assert_true(h2.truncated);
	free(huge);
	free(v);
	http_headers_free(&h);
	http_headers_free(&h2);
}

/* ---- bodies -------------------------------------------------------------- */

static void test_body_cap(void **state)
{
	(void)state;
	struct http_body b;
	http_body_init(&b, 5000);
	uint8_t chunk[777];
	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (uint8_t)i;
	for (int i = 0; i < 10; i++)
		http_body_append(&b, chunk, sizeof(chunk));
	assert_int_equal(b.size, 7770);
	assert_int_equal(b.len, 5000);
	assert_true(b.truncated);
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(b.data[i], (uint8_t)(i % 777));
	http_body_free(&b);
	assert_null(b.data);
	assert_int_equal(b.cap, 5000);

	/* exactly the cap: not truncated */
	http_body_init(&b, 10);
	http_body_append(&b, chunk, 4);
	http_body_append(&b, chunk, 6);
	assert_int_equal(b.len, 10);
	assert_false(b.truncated);
	http_body_append(&b, chunk, 0);
	assert_false(b.truncated);
	http_body_append(&b, chunk, 1);
	assert_true(b.truncated);
	assert_int_equal(b.size, 11);
	http_body_free(&b);

	/* cap 0 keeps nothing and counts everything */
	http_body_init(&b, 0);
	http_body_append(&b, chunk, 100);
	assert_null(b.data);
	assert_int_equal(b.size, 100);
	assert_true(b.truncated);
	http_body_free(&b);
}

/* ---- body JSON ----------------------------------------------------------- */

static void check_body(json_t *j, const char *key, const char *value, uint64_t size, bool trunc)
{
	assert_non_null(j);
	assert_int_equal(json_object_size(j), 3);
	const char *keys[3];
	size_t k = 0;
	const char *name;
	json_t *v;
	json_object_foreach(j, name, v) keys[k++] = name;
	assert_string_equal(keys[0], key);
	assert_string_equal(keys[1], "size");
	assert_string_equal(keys[2], "truncated");
	assert_string_equal(json_string_value(json_object_get(j, key)), value);
	assert_int_equal(json_integer_value(json_object_get(j, "size")), size);
	assert_true(json_is_boolean(json_object_get(j, "truncated")));
	assert_int_equal(json_is_true(json_object_get(j, "truncated")), trunc);
	json_decref(j);
}

static void test_body_json(void **state)
{
	(void)state;
	check_body(http_body_json(NULL, 0, 0, false), "text", "", 0, false);
	check_body(http_body_json((const uint8_t *)"hello", 5, 5, false), "text", "hello", 5,
		   false);
	const char *u = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80";
	check_body(http_body_json((const uint8_t *)u, strlen(u), strlen(u), false), "text", u,
		   strlen(u), false);
	/* binary: base64 of the kept bytes */
	const uint8_t bin[] = { 0x00, 0xff, 0x10, 0x80 };
	check_body(http_body_json(bin, 4, 4, false), "base64", "AP8QgA==", 4, false);
	/* a 4-byte sequence cut at the cap: dropped when truncated */
	check_body(http_body_json((const uint8_t *)"ab\xf0\x9f\x98", 5, 9, true), "text", "ab", 9,
		   true);
	check_body(http_body_json((const uint8_t *)"ab\xe2", 3, 4, true), "text", "ab", 4, true);
	/* the same bytes as a whole body are not UTF-8 */
	check_body(http_body_json((const uint8_t *)"ab\xe2", 3, 3, false), "base64", "YWLi", 3,
		   false);
	/* invalid inside a truncated body is still base64 */
	check_body(http_body_json((const uint8_t *)"\xff"
						   "abc",
				  4, 100, true),
		   "base64", "/2FiYw==", 100, true);
	/* overlong, surrogate, above U+10FFFF, lone continuation, 0xC1 lead */
	const char *bad[] = { "\xc0\x80",         "\xe0\x80\xaf",     "\xed\xa0\x80",
			      "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\x80",
			      "\xc1\xbf",         "a\xe2\x82\x62" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *j = http_body_json((const uint8_t *)bad[i], strlen(bad[i]), strlen(bad[i]),
					   true);
		assert_non_null(json_object_get(j, "base64"));
		assert_null(json_object_get(j, "text"));
		json_decref(j);
	}
	/* edges that are valid: U+10FFFF, U+D7FF, U+E000, U+0800 */
	const char *good = "\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80\xe0\xa0\x80";
	check_body(http_body_json((const uint8_t *)good, strlen(good), 13, false), "text", good, 13,
		   false);
	/* long ASCII run then a multibyte char (the 8-byte fast path) */
	char longs[64];
	memset(longs, 'z', sizeof(longs));
	memcpy(longs + 60, "\xc3\xa9", 2);
	longs[62] = 'q';
	longs[63] = '\0';
	check_body(http_body_json((const uint8_t *)longs, 63, 63, false), "text", longs, 63, false);
	/* NUL is valid UTF-8 but marks binary data: base64 */
	check_body(http_body_json((const uint8_t *)"a\0b", 3, 3, false), "base64", "YQBi", 3,
		   false);
}

/* ---- the record ---------------------------------------------------------- */

static void assert_keys(json_t *o, const char *const *want)
{
	const char *name;
	json_t *v;
	size_t i = 0;
	json_object_foreach(o, name, v)
	{
		assert_non_null(want[i]);
		assert_string_equal(name, want[i]);
		i++;
	}
	assert_null(want[i]);
}

static void add_header(struct http_headers *h, const char *n, const char *v)
{
	assert_int_equal(http_headers_add(h, n, strlen(n), v, strlen(v)), 0);
}

static void assert_header(json_t *a, size_t i, const char *n, const char *v)
{
	json_t *pair = json_array_get(a, i);
	assert_int_equal(json_array_size(pair), 2);
	assert_string_equal(json_string_value(json_array_get(pair, 0)), n);
	assert_string_equal(json_string_value(json_array_get(pair, 1)), v);
}

static void test_record_full(void **state)
{
	(void)state;
	struct http_exchange x;
	http_exchange_init(&x, 4);
	assert_int_equal(x.req.body.cap, 4);
	assert_int_equal(x.resp.body.cap, 4);
	assert_int_equal(http_strdup_n(&x.version, "HTTP/1.1", 8), 0);
	assert_int_equal(http_strdup_n(&x.method, "POST", 4), 0);
	assert_int_equal(http_strdup_n(&x.scheme, "https", 5), 0);
	assert_int_equal(http_strdup_n(&x.authority, "api.example:8443xx", 16), 0);
	assert_int_equal(http_strdup_n(&x.path, "/v1/x?q=1", 9), 0);
	add_header(&x.req.headers, "Host", "api.example:8443");
	add_header(&x.req.headers, "X-A", "1");
	add_header(&x.req.headers, "X-A", "2");
	http_body_append(&x.req.body, (const uint8_t *)"hello", 5);
	x.req.complete = true;
	x.status = 200;
	assert_int_equal(http_strdup_n(&x.reason, "OK", 2), 0);
	add_header(&x.resp.headers, "Content-Type", "application/octet-stream");
	add_header(&x.resp.headers, "X-Latin", "caf\xe9"); /* ISO-8859-1 byte */
	add_header(&x.resp.trailers, "Grpc-Status", "0");
	http_body_append(&x.resp.body, (const uint8_t *)"\x01\xff", 2);
	x.informational[0] = 100;
	x.informational[1] = 103;
	x.n_informational = 2;
	x.start = (struct timespec){ 1714566896, 123456789 };
	x.request_end = (struct timespec){ 1714566896, 200000000 };
	x.response_start = (struct timespec){ 1714566897, 0 };
	x.end = (struct timespec){ 1714566897, 999999999 };

	json_t *rec = json_object();
	json_object_set_new(rec, "type", json_string("http"));
	assert_int_equal(http_exchange_to_json(&x, "10.0.0.1:443", rec), 0);
	static const char *const top[] = { "type",     "http_version",  "method",  "url", "request",
					   "response", "informational", "timings", NULL };
	assert_keys(rec, top);
	assert_string_equal(json_string_value(json_object_get(rec, "http_version")), "HTTP/1.1");
	assert_string_equal(json_string_value(json_object_get(rec, "method")), "POST");
	assert_string_equal(json_string_value(json_object_get(rec, "url")),
			    "https://api.example:8443/v1/x?q=1");

	json_t *req = json_object_get(rec, "request");
	static const char *const reqk[] = { "headers", "body", NULL };
	assert_keys(req, reqk);
	json_t *h = json_object_get(req, "headers");
	assert_int_equal(json_array_size(h), 3);
	assert_header(h, 0, "Host", "api.example:8443");
	assert_header(h, 1, "X-A", "1");
	assert_header(h, 2, "X-A", "2");
	json_t *b = json_object_get(req, "body");
	assert_string_equal(json_string_value(json_object_get(b, "text")), "hell");
	assert_int_equal(json_integer_value(json_object_get(b, "size")), 5);
	assert_true(json_is_true(json_object_get(b, "truncated")));

	json_t *resp = json_object_get(rec, "response");
	static const char *const respk[] = {
		"status", "reason", "headers", "trailers", "body", NULL
	};
	assert_keys(resp, respk);
	assert_int_equal(json_integer_value(json_object_get(resp, "status")), 200);
	assert_string_equal(json_string_value(json_object_get(resp, "reason")), "OK");
	h = json_object_get(resp, "headers");
	assert_header(h, 0, "Content-Type", "application/octet-stream");
	assert_header(h, 1, "X-Latin", "caf\xc3\xa9");
	assert_header(json_object_get(resp, "trailers"), 0, "Grpc-Status", "0");
	b = json_object_get(resp, "body");
	assert_string_equal(json_string_value(json_object_get(b, "base64")), "Af8=");

	json_t *inf = json_object_get(rec, "informational");
	assert_int_equal(json_array_size(inf), 2);
	assert_int_equal(json_integer_value(json_array_get(inf, 0)), 100);
	assert_int_equal(json_integer_value(json_array_get(inf, 1)), 103);

	json_t *t = json_object_get(rec, "timings");
	static const char *const tk[] = { "start", "request_end", "response_start", "end", NULL };
	assert_keys(t, tk);
	assert_string_equal(json_string_value(json_object_get(t, "start")),
			    "2024-05-01T12:34:56.123456Z");
	assert_string_equal(json_string_value(json_object_get(t, "request_end")),
			    "2024-05-01T12:34:56.200000Z");
	assert_string_equal(json_string_value(json_object_get(t, "end")),
			    "2024-05-01T12:34:57.999999Z");
	json_decref(rec);
	http_exchange_free(&x);
	assert_null(x.method);
	assert_int_equal(x.req.body.cap, 4); /* free leaves the exchange reusable */
	http_exchange_free(&x);
}

static void test_record_no_response(void **state)
{
	(void)state;
	struct http_exchange x;
	http_exchange_init(&x, 100);
	http_strdup_n(&x.version, "HTTP/2", 6);
	x.stream_id = 7;
	http_strdup_n(&x.method, "GET", 3);
	http_strdup_n(&x.scheme, "https", 5);
	http_strdup_n(&x.path, "/", 1);
	add_header(&x.req.headers, ":method", "GET");
	x.req.headers.truncated = true;
	x.websocket = true;
	x.start = (struct timespec){ 1714566896, 0 };
	x.error = "client_reset";

	json_t *rec = json_object();
	assert_int_equal(http_exchange_to_json(&x, "10.0.0.1:8443", rec), 0);
	static const char *const top[] = { "http_version", "stream_id", "method",  "url", "request",
					   "response",     "websocket", "timings", NULL };
	assert_keys(rec, top);
	assert_int_equal(json_integer_value(json_object_get(rec, "stream_id")), 7);
	/* no authority: the server address */
	assert_string_equal(json_string_value(json_object_get(rec, "url")),
			    "https://10.0.0.1:8443/");
	assert_true(json_is_null(json_object_get(rec, "response")));
	assert_true(json_is_true(json_object_get(rec, "websocket")));
	json_t *req = json_object_get(rec, "request");
	static const char *const reqk[] = { "headers", "headers_truncated", "body", NULL };
	assert_keys(req, reqk);
	json_t *b = json_object_get(req, "body");
	assert_string_equal(json_string_value(json_object_get(b, "text")), "");
	assert_int_equal(json_integer_value(json_object_get(b, "size")), 0);
	json_t *t = json_object_get(rec, "timings");
	assert_true(json_is_string(json_object_get(t, "start")));
	assert_true(json_is_null(json_object_get(t, "request_end")));
	assert_true(json_is_null(json_object_get(t, "response_start")));
	assert_true(json_is_null(json_object_get(t, "end")));
	json_decref(rec);
	http_exchange_free(&x);
}

static const char *url_of(const char *scheme, const char *auth, const char *path, const char *def,
			  char *out, size_t cap)
{
	struct http_exchange x;
	http_exchange_init(&x, 0);
	if (scheme)
		http_strdup_n(&x.scheme, scheme, strlen(scheme));
	if (auth)
		http_strdup_n(&x.authority, auth, strlen(auth));
	if (path)
		http_strdup_n(&x.path, path, strlen(path));
	json_t *rec = json_object();
	assert_int_equal(http_exchange_to_json(&x, def, rec), 0);
	snprintf(out, cap, "%s", json_string_value(json_object_get(rec, "url")));
	json_decref(rec);
	http_exchange_free(&x);
	return out;
}

static void test_record_url_forms(void **state)
{
	(void)state;
	char u[256];
	assert_string_equal(url_of("http", "h", "/p", NULL, u, sizeof(u)), "http://h/p");
	/* absolute-form as sent (a proxy request) */
	assert_string_equal(url_of("http", "h", "http://other/x", NULL, u, sizeof(u)),
			    "http://other/x");
	/* asterisk-form */
	assert_string_equal(url_of("https", "h:1", "*", NULL, u, sizeof(u)), "https://h:1");
	/* authority-form (CONNECT) */
	assert_string_equal(url_of("https", NULL, "example.com:443", "1.2.3.4:443", u, sizeof(u)),
			    "https://example.com:443");
	assert_string_equal(url_of("https", NULL, "/", NULL, u, sizeof(u)), "https:///");
	/* a long target takes the heap path */
	char longp[3000];
	longp[0] = '/';
	memset(longp + 1, 'a', sizeof(longp) - 2);
	longp[sizeof(longp) - 1] = '\0';
	char big[3100];
	url_of("https", "h", longp, NULL, big, sizeof(big));
	assert_int_equal(strlen(big), strlen("https://h") + strlen(longp));
}

/* The process-wide budget: a body that would grow past it keeps what its
 * allocation holds and is marked truncated; freeing gives the bytes back. */
static void test_body_budget(void **state)
{
	(void)state;
	static uint8_t chunk[100 * 1024];
	memset(chunk, 'x', sizeof(chunk));
	size_t kept;
	uint64_t cuts;
	http_body_usage(&kept, &cuts);
	assert_int_equal(kept, 0);
	http_body_set_budget(160 * 1024);
	struct http_body a, b;
	http_body_init(&a, 1 << 20);
	http_body_init(&b, 1 << 20);
	http_body_append(&a, chunk, sizeof(chunk)); /* 128 KiB allocated */
	assert_int_equal(a.len, sizeof(chunk));
	assert_false(a.truncated);
	http_body_append(&b, chunk, sizeof(chunk)); /* would need 128 KiB more */
	assert_true(b.truncated);
	assert_int_equal(b.size, sizeof(chunk));
	assert_true(b.len < sizeof(chunk));
	http_body_usage(&kept, &cuts);
	assert_true(kept <= 160 * 1024);
	assert_int_equal(cuts, 1);
	/* a still fills its own allocation. */
	http_body_append(&a, chunk, 28 * 1024);
	assert_int_equal(a.len, 128 * 1024);
	http_body_free(&a);
	http_body_free(&b);
	http_body_usage(&kept, &cuts);
	assert_int_equal(kept, 0);
	http_body_set_budget(HTTPFLOW_DEFAULT_BUDGET);
	http_body_init(&b, 1 << 20);
	http_body_append(&b, chunk, sizeof(chunk));
	assert_false(b.truncated);
	http_body_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_headers_order_duplicates_find),
		cmocka_unit_test(test_headers_byte_bound),
		cmocka_unit_test(test_body_cap),
		cmocka_unit_test(test_body_json),
		cmocka_unit_test(test_body_budget),
		cmocka_unit_test(test_record_full),
		cmocka_unit_test(test_record_no_response),
		cmocka_unit_test(test_record_url_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
