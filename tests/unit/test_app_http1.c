/* The HTTP/1 observer on real byte streams. Every conversation is replayed
 * whole, byte by byte, and split in two at every byte boundary of every
 * chunk: the records must be identical whatever the split. Covered:
 * keep-alive, pipelining, chunked bodies with trailers, HEAD with
 * Content-Length, 100-continue and 103, 204/304, close-delimited responses,
 * the header and body caps, binary and cut-UTF-8 bodies, parse errors,
 * pipeline overflow, finish with pending requests, timings, CONNECT, and an
 * upgrade to WebSocket (frames in the same chunk as the 101). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/http1.h"
#include "mitm/httpflow.h"
#include "mitm/websocket.h"

/* ---- harness ------------------------------------------------------------- */

static struct timespec fake_now = { 1714566896, 0 };

static void fake_clock(struct timespec *t)
{
	*t = fake_now;
}

#define MAX_RECORDS 128

struct rec {
	char *out[MAX_RECORDS];
	size_t n;
};

static void rec_exchange(void *ctx, const struct http_exchange *x)
{
	struct rec *r = ctx;
	json_t *o = json_object();
	assert_int_equal(http_exchange_to_json(x, "10.0.0.5:443", o), 0);
	/* the keys the caller derives from the exchange, for comparison */
	json_object_set_new(o, "x_error", x->error ? json_string(x->error) : json_null());
	json_object_set_new(o, "x_detail", json_string(x->error_detail));
	json_object_set_new(o, "x_req_complete", json_boolean(x->req.complete));
	json_object_set_new(o, "x_resp_complete", json_boolean(x->resp.complete));
	assert_true(r->n < MAX_RECORDS);
	r->out[r->n++] = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
}

static void rec_websocket(void *ctx, json_t *batch)
{
	struct rec *r = ctx;
	json_t *o = json_object();
	json_object_set_new(o, "ws", batch);
	assert_true(r->n < MAX_RECORDS);
	r->out[r->n++] = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
}

static void rec_free(struct rec *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->out[i]);
	r->n = 0;
}

/* One step of a conversation: 'c' client bytes, 's' server bytes,
 * 'E' the server's FIN, 'e' the client's FIN, 'F' finish, 't' clock +1 s. */
struct step {
	char what;
	const char *data;
	size_t len;
};

#define C(s)                                                                                       \
	{                                                                                          \
		'c', s, sizeof(s) - 1                                                              \
	}
#define S(s)                                                                                       \
	{                                                                                          \
		's', s, sizeof(s) - 1                                                              \
	}
#define SEOF                                                                                       \
	{                                                                                          \
		'E', NULL, 0                                                                       \
	}
#define CEOF                                                                                       \
	{                                                                                          \
		'e', NULL, 0                                                                       \
	}
#define TICK                                                                                       \
	{                                                                                          \
		't', NULL, 0                                                                       \
	}
#define END                                                                                        \
	{                                                                                          \
		0, NULL, 0                                                                         \
	}

static struct http1_obs *obs_new(struct rec *r, size_t cap)
{
	struct http1_config cfg = {
		.sink = { .exchange = rec_exchange, .websocket = rec_websocket, .ctx = r },
		.body_cap = cap,
		.scheme = "https",
		.default_authority = "10.0.0.5:443",
		.clock = fake_clock,
	};
	struct http1_obs *o = http1_obs_new(&cfg);
	assert_non_null(o);
	return o;
}

static void feed(struct http1_obs *o, char what, const uint8_t *p, size_t n)
{
	if (what == 'c')
		http1_obs_client(o, p, n);
	else
		http1_obs_server(o, p, n);
}

/* Runs the steps; step `split_step` is cut at `split_at` (or, with
 * split_at == SIZE_MAX, fed one byte at a time; split_step -1: none). The
 * data is copied to the heap so ASan sees reads past a chunk. */
static void run(const struct step *steps, size_t cap, int split_step, size_t split_at,
		struct rec *r)
{
	fake_now = (struct timespec){ 1714566896, 0 };
	struct http1_obs *o = obs_new(r, cap);
	bool finished = false;
	for (int i = 0; steps[i].what; i++) {
		const struct step *s = &steps[i];
		switch (s->what) {
		case 'c':
		case 's': {
			uint8_t *b = malloc(s->len ? s->len : 1);
			memcpy(b, s->data, s->len);
			if (i == split_step && split_at == SIZE_MAX) {
				for (size_t k = 0; k < s->len; k++) {
					uint8_t *one = malloc(1);
					*one = b[k];
					feed(o, s->what, one, 1);
					free(one);
				}
			} else if (i == split_step) {
				uint8_t *a = malloc(split_at ? split_at : 1);
				memcpy(a, b, split_at);
				feed(o, s->what, a, split_at);
				free(a);
				feed(o, s->what, b + split_at, s->len - split_at);
			} else {
				feed(o, s->what, b, s->len);
			}
			free(b);
			break;
		}
		case 'E':
			http1_obs_server_eof(o);
			break;
		case 'e':
			http1_obs_client_eof(o);
			break;
		case 'F':
			http1_obs_finish(o, "connection_closed");
			finished = true;
			break;
		case 't':
			fake_now.tv_sec++;
			break;
		}
	}
	if (!finished)
		http1_obs_finish(o, "connection_closed");
	http1_obs_free(o);
}

/* The records of the whole-chunk run, checked equal under every split. */
static void run_all_splits(const struct step *steps, size_t cap, struct rec *ref)
{
	run(steps, cap, -1, 0, ref);
	for (int i = 0; steps[i].what; i++) {
		if (steps[i].what != 'c' && steps[i].what != 's')
			continue;
		for (size_t at = 0; at <= steps[i].len + 1; at++) {
			struct rec r = { 0 };
			run(steps, cap, i, at > steps[i].len ? SIZE_MAX : at, &r);
			if (r.n != ref->n)
				fail_msg("step %d split %zu: %zu records, want %zu", i, at, r.n,
					 ref->n);
			for (size_t k = 0; k < r.n; k++)
				if (strcmp(r.out[k], ref->out[k]) != 0)
					fail_msg("step %d split %zu record %zu:\n got %s\nwant %s",
						 i, at, k, r.out[k], ref->out[k]);
			rec_free(&r);
		}
	}
}

static json_t *parse(const char *s)
{
	json_error_t e;
	json_t *j = json_loads(s, 0, &e);
	assert_non_null(j);
	return j;
}

static const char *jstr(json_t *o, const char *path)
{
	/* "a.b.c": nested object keys */
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", path);
	json_t *cur = o;
	for (char *tok = strtok(buf, "."); tok; tok = strtok(NULL, "."))
		cur = json_object_get(cur, tok);
	assert_true(json_is_string(cur));
	return json_string_value(cur);
}

static json_t *jget(json_t *o, const char *path)
{
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", path);
	json_t *cur = o;
	for (char *tok = strtok(buf, "."); tok; tok = strtok(NULL, "."))
		cur = json_object_get(cur, tok);
	return cur;
}

static void assert_header(json_t *headers, size_t i, const char *n, const char *v)
{
	json_t *p = json_array_get(headers, i);
	assert_non_null(p);
	assert_string_equal(json_string_value(json_array_get(p, 0)), n);
	assert_string_equal(json_string_value(json_array_get(p, 1)), v);
}

/* ---- conversations ------------------------------------------------------- */

static void test_keep_alive(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Dup: 1\r\nX-Dup: "
		  "2\r\n\r\n"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"),
		C("POST /b HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc"),
		S("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 1024, &ref);
	assert_int_equal(ref.n, 2);

	json_t *a = parse(ref.out[0]);
	static const char *const keys[] = { "http_version", "method",  "url",     "request",
					    "response",     "timings", "x_error", NULL };
	const char *k;
	json_t *v;
	size_t i = 0;
	json_object_foreach(a, k, v)
	{
		if (!keys[i])
			break;
		assert_string_equal(k, keys[i]);
		i++;
	}
	assert_string_equal(jstr(a, "http_version"), "HTTP/1.1");
	assert_string_equal(jstr(a, "method"), "GET");
	assert_string_equal(jstr(a, "url"), "https://example.com/a?x=1");
	json_t *h = jget(a, "request.headers");
	assert_int_equal(json_array_size(h), 4);
	assert_header(h, 0, "Host", "example.com");
	assert_header(h, 1, "Accept", "*/*");
	assert_header(h, 2, "X-Dup", "1");
	assert_header(h, 3, "X-Dup", "2");
	assert_string_equal(jstr(a, "request.body.text"), "");
	assert_int_equal(json_integer_value(jget(a, "response.status")), 200);
	assert_string_equal(jstr(a, "response.reason"), "OK");
	assert_header(jget(a, "response.headers"), 1, "Content-Type", "text/plain");
	assert_string_equal(jstr(a, "response.body.text"), "hello");
	assert_int_equal(json_integer_value(jget(a, "response.body.size")), 5);
	assert_true(json_is_false(jget(a, "response.body.truncated")));
	assert_null(jget(a, "response.trailers"));
	assert_null(jget(a, "informational"));
	assert_null(jget(a, "websocket"));
	assert_true(json_is_null(jget(a, "x_error")));
	assert_true(json_is_true(jget(a, "x_resp_complete")));
	assert_string_equal(jstr(a, "timings.start"), "2024-05-01T12:34:56.000000Z");
	assert_string_equal(jstr(a, "timings.end"), "2024-05-01T12:34:56.000000Z");
	json_decref(a);

	json_t *b = parse(ref.out[1]);
	assert_string_equal(jstr(b, "method"), "POST");
	assert_string_equal(jstr(b, "url"), "https://example.com/b");
	assert_string_equal(jstr(b, "request.body.text"), "abc");
	assert_int_equal(json_integer_value(jget(b, "response.status")), 201);
	assert_string_equal(jstr(b, "response.reason"), "Created");
	json_decref(b);
	rec_free(&ref);
}

static void test_pipelined(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
		  "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
		  "PUT /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nzz"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
		  "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\ntwo"),
		S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthree\r\n0\r\n\r\n"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 1024, &ref);
	assert_int_equal(ref.n, 3);
	const char *paths[] = { "https://h/1", "https://h/2", "https://h/3" };
	const char *bodies[] = { "one", "two", "three" };
	int status[] = { 200, 404, 200 };
	for (int i = 0; i < 3; i++) {
		json_t *j = parse(ref.out[i]);
		assert_string_equal(jstr(j, "url"), paths[i]);
		assert_string_equal(jstr(j, "response.body.text"), bodies[i]);
		assert_int_equal(json_integer_value(jget(j, "response.status")), status[i]);
		json_decref(j);
	}
	json_t *j = parse(ref.out[2]);
	assert_string_equal(jstr(j, "method"), "PUT");
	assert_string_equal(jstr(j, "request.body.text"), "zz");
	json_decref(j);
	rec_free(&ref);
}

static void test_chunked_trailers(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
		  "3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\n\r\n"),
		S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
		  "4\r\nwxyz\r\n0\r\nX-Sum: 42\r\nX-Other: a b\r\n\r\n"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 1024, &ref);
	assert_int_equal(ref.n, 1);
	json_t *j = parse(ref.out[0]);
	assert_string_equal(jstr(j, "request.body.text"), "abc0123456789abcdef");
	assert_int_equal(json_integer_value(jget(j, "request.body.size")), 19);
	assert_string_equal(jstr(j, "response.body.text"), "wxyz");
	json_t *h = jget(j, "response.headers");
	assert_int_equal(json_array_size(h), 2);
	assert_header(h, 1, "Trailer", "X-Sum");
	json_t *t = jget(j, "response.trailers");
	assert_int_equal(json_array_size(t), 2);
	assert_header(t, 0, "X-Sum", "42");
	assert_header(t, 1, "X-Other", "a b");
	json_decref(j);
	rec_free(&ref);
}

static void test_head_204_304(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("HEAD /big HTTP/1.1\r\nHost: h\r\n\r\n"
		  "DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n"
		  "GET /c HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"e\"\r\n\r\n"
		  "GET /d HTTP/1.1\r\nHost: h\r\n\r\n"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
		  "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"
		  "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"e\"\r\n\r\n"
		  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 1024, &ref);
	assert_int_equal(ref.n, 4);
	int status[] = { 200, 204, 304, 200 };
	const char *body[] = { "", "", "", "ok" };
	for (int i = 0; i < 4; i++) {
		json_t *j = parse(ref.out[i]);
		assert_int_equal(json_integer_value(jget(j, "response.status")), status[i]);
		assert_string_equal(jstr(j, "response.body.text"), body[i]);
		assert_true(json_is_null(jget(j, "x_error")));
		json_decref(j);
	}
	json_t *j = parse(ref.out[0]);
	assert_string_equal(jstr(j, "method"), "HEAD");
	assert_header(jget(j, "response.headers"), 0, "Content-Length", "1000");
	json_decref(j);
	rec_free(&ref);
}

static void test_informational(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: "
		  "4\r\n\r\n"),
		S("HTTP/1.1 100 Continue\r\n\r\n"),
		C("data"),
		S("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
		  "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 1024, &ref);
	assert_int_equal(ref.n, 1);
	json_t *j = parse(ref.out[0]);
	json_t *inf = jget(j, "informational");
	assert_int_equal(json_array_size(inf), 2);
	assert_int_equal(json_integer_value(json_array_get(inf, 0)), 100);
	assert_int_equal(json_integer_value(json_array_get(inf, 1)), 103);
	assert_int_equal(json_integer_value(jget(j, "response.status")), 200);
	assert_string_equal(jstr(j, "response.reason"), "OK");
	/* the 103's headers are not the final response's */
	assert_int_equal(json_array_size(jget(j, "response.headers")), 1);
	assert_string_equal(jstr(j, "request.body.text"), "data");
	assert_string_equal(jstr(j, "response.body.text"), "done");
	json_decref(j);
	rec_free(&ref);
}

static void test_close_delimited(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("GET /old HTTP/1.0\r\n\r\n"),
		S("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of "),
		S("it until close"),
		SEOF,
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 1024, &ref);
	assert_int_equal(ref.n, 1);
	json_t *j = parse(ref.out[0]);
	assert_string_equal(jstr(j, "http_version"), "HTTP/1.0");
	/* no Host: the server address */
	assert_string_equal(jstr(j, "url"), "https://10.0.0.5:443/old");
	assert_string_equal(jstr(j, "response.body.text"), "all of it until close");
	assert_true(json_is_null(jget(j, "x_error")));
	json_decref(j);
	rec_free(&ref);

	/* cut before the FIN: recorded with the finish reason */
	static const struct step cut[] = {
		C("GET /old HTTP/1.1\r\nHost: h\r\n\r\n"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
		SEOF,
		END,
	};
	run_all_splits(cut, 1024, &ref);
	assert_int_equal(ref.n, 1);
	j = parse(ref.out[0]);
	assert_string_equal(jstr(j, "x_error"), "connection_closed");
	assert_string_equal(jstr(j, "response.body.text"), "abc");
	assert_true(json_is_false(jget(j, "x_resp_complete")));
	json_decref(j);
	rec_free(&ref);
}

static void test_after_connection_close(void **state)
{
	(void)state;
	/* a client that sends on after "Connection: close": still recorded */
	static const struct step steps[] = {
		C("GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
		  "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nA"),
		SEOF,
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 64, &ref);
	assert_int_equal(ref.n, 2);
	json_t *j = parse(ref.out[0]);
	assert_true(json_is_null(jget(j, "x_error")));
	assert_string_equal(jstr(j, "response.body.text"), "A");
	json_decref(j);
	j = parse(ref.out[1]);
	assert_string_equal(jstr(j, "url"), "https://h/2");
	assert_string_equal(jstr(j, "x_error"), "connection_closed");
	json_decref(j);
	rec_free(&ref);
}

static void test_pending_at_finish(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HT"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 1024, &ref);
	assert_int_equal(ref.n, 3);
	json_t *j = parse(ref.out[0]);
	assert_true(json_is_null(jget(j, "x_error")));
	json_decref(j);
	j = parse(ref.out[1]);
	assert_string_equal(jstr(j, "x_error"), "connection_closed");
	assert_true(json_is_null(jget(j, "response")));
	assert_true(json_is_true(jget(j, "x_req_complete")));
	assert_true(json_is_null(jget(j, "timings.response_start")));
	json_decref(j);
	j = parse(ref.out[2]);
	assert_true(json_is_false(jget(j, "x_req_complete")));
	assert_true(json_is_null(jget(j, "timings.request_end")));
	json_decref(j);
	rec_free(&ref);
}

static void test_timings(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\na"),
		TICK,
		C("b"),
		TICK,
		S("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nx"),
		TICK,
		S("y"),
		END,
	};
	struct rec ref = { 0 };
	run(steps, 100, -1, 0, &ref);
	assert_int_equal(ref.n, 1);
	json_t *j = parse(ref.out[0]);
	assert_string_equal(jstr(j, "timings.start"), "2024-05-01T12:34:56.000000Z");
	assert_string_equal(jstr(j, "timings.request_end"), "2024-05-01T12:34:57.000000Z");
	assert_string_equal(jstr(j, "timings.response_start"), "2024-05-01T12:34:58.000000Z");
	assert_string_equal(jstr(j, "timings.end"), "2024-05-01T12:34:59.000000Z");
	json_decref(j);
	rec_free(&ref);
}

static void test_caps(void **state)
{
	(void)state;
	/* body over the cap: 16 kept, 40 counted; binary → base64; UTF-8 cut */
	static const struct step steps[] = {
		C("POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n"
		  "0123456789012345678901234567890123456789"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n\x00\x01\xfe\xff\x80\x7f"),
		C("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n"
		  "abcdefghijklmn\xe2\x82\xac\xe2\x82\xac"), /* the cap cuts the first euro sign */
		S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 16, &ref);
	assert_int_equal(ref.n, 2);
	json_t *j = parse(ref.out[0]);
	assert_string_equal(jstr(j, "request.body.text"), "0123456789012345");
	assert_int_equal(json_integer_value(jget(j, "request.body.size")), 40);
	assert_true(json_is_true(jget(j, "request.body.truncated")));
	assert_string_equal(jstr(j, "response.body.base64"), "AAH+/4B/");
	assert_int_equal(json_integer_value(jget(j, "response.body.size")), 6);
	json_decref(j);
	j = parse(ref.out[1]);
	assert_string_equal(jstr(j, "request.body.text"), "abcdefghijklmn");
	assert_int_equal(json_integer_value(jget(j, "request.body.size")), 20);
	json_decref(j);
	rec_free(&ref);
}

static void test_header_cap(void **state)
{
	(void)state;
	/* 300 KiB of headers: the first ones kept up to 256 KiB, the flag set */
	size_t nh = 300;
	size_t cap = 64 + nh * 1100;
	char *req = malloc(cap);
	size_t len = (size_t)snprintf(req, cap, "GET /h HTTP/1.1\r\nHost: h\r\n");
	char val[1024];
	memset(val, 'v', sizeof(val) - 1);
	val[sizeof(val) - 1] = '\0';
	for (size_t i = 0; i < nh; i++)
		len += (size_t)snprintf(req + len, cap - len, "X-%04zu: %s\r\n", i, val);
	len += (size_t)snprintf(req + len, cap - len, "\r\n");
	struct step steps[] = {
		{ 'c', req, len },
		S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk"),
		END,
	};
	struct rec ref = { 0 };
	run(steps, 16, -1, 0, &ref);
	assert_int_equal(ref.n, 1);
	json_t *j = parse(ref.out[0]);
	json_t *h = jget(j, "request.headers");
	size_t per = 6 + 1023;
	assert_int_equal(json_array_size(h), 1 + (HTTPFLOW_MAX_HEADER_BYTES - 5) / per);
	assert_true(json_is_true(jget(j, "request.headers_truncated")));
	assert_null(jget(j, "response.headers_truncated"));
	assert_string_equal(jstr(j, "response.body.text"), "k");
	json_decref(j);
	rec_free(&ref);
	/* byte by byte gives the same */
	struct rec r2 = { 0 };
	run(steps, 16, 0, SIZE_MAX, &r2);
	assert_int_equal(r2.n, 1);
	run(steps, 16, -1, 0, &ref);
	assert_string_equal(r2.out[0], ref.out[0]);
	rec_free(&r2);
	rec_free(&ref);
	free(req);
}

static void test_long_target(void **state)
{
	(void)state;
	/* a 300 KiB request target: the first 256 KiB kept, whatever the cuts */
	size_t tl = 300 * 1024;
	char *req = malloc(tl + 64);
	memcpy(req, "GET /", 5);
	memset(req + 5, 'p', tl - 1);
	size_t len = 4 + tl;
	len += (size_t)sprintf(req + len, " HTTP/1.1\r\nHost: h\r\n\r\n");
	struct step steps[] = {
		{ 'c', req, len },
		S("HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\n\r\n"),
		END,
	};
	struct rec ref = { 0 };
	run(steps, 16, -1, 0, &ref);
	assert_int_equal(ref.n, 1);
	json_t *j = parse(ref.out[0]);
	assert_int_equal(strlen(jstr(j, "url")), strlen("https://h") + HTTPFLOW_MAX_HEADER_BYTES);
	assert_true(json_is_true(jget(j, "request.headers_truncated")));
	assert_int_equal(json_integer_value(jget(j, "response.status")), 414);
	json_decref(j);
	size_t cuts[] = { 1,
			  4096,
			  HTTPFLOW_MAX_HEADER_BYTES - 1,
			  HTTPFLOW_MAX_HEADER_BYTES + 4,
			  HTTPFLOW_MAX_HEADER_BYTES + 5,
			  len - 3 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		struct rec r = { 0 };
		run(steps, 16, 0, cuts[i], &r);
		assert_int_equal(r.n, 1);
		assert_string_equal(r.out[0], ref.out[0]);
		rec_free(&r);
	}
	rec_free(&ref);
	free(req);
}

static void test_parse_error(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
		C("GET /bad HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n"),
		S("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 64, &ref);
	assert_int_equal(ref.n, 2);
	json_t *j = parse(ref.out[1]);
	assert_string_equal(jstr(j, "x_error"), "parse_error");
	assert_non_null(strstr(jstr(j, "x_detail"), "request: HPE_INVALID_CONTENT_LENGTH"));
	assert_string_equal(jstr(j, "url"), "https://h/bad");
	json_decref(j);
	rec_free(&ref);

	/* not HTTP at all: one record carries the error */
	struct rec r = { 0 };
	struct http1_obs *o = obs_new(&r, 64);
	http1_obs_client(o, (const uint8_t *)"\x16\x03\x01\x02\x00", 5);
	assert_true(http1_obs_failed(o));
	http1_obs_client(o, (const uint8_t *)"more", 4);
	http1_obs_finish(o, "connection_closed");
	http1_obs_free(o);
	assert_int_equal(r.n, 1);
	j = parse(r.out[0]);
	assert_string_equal(jstr(j, "x_error"), "parse_error");
	assert_true(json_is_null(jget(j, "method")));
	json_decref(j);
	rec_free(&r);
}

static void test_pipeline_overflow(void **state)
{
	(void)state;
	struct rec r = { 0 };
	struct http1_obs *o = obs_new(&r, 64);
	const char *req = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
	for (int i = 0; i < HTTP1_MAX_PENDING; i++)
		http1_obs_client(o, (const uint8_t *)req, strlen(req));
	assert_false(http1_obs_failed(o));
	assert_int_equal(r.n, 0);
	http1_obs_client(o, (const uint8_t *)req, strlen(req));
	assert_true(http1_obs_failed(o));
	assert_int_equal(r.n, HTTP1_MAX_PENDING);
	json_t *j = parse(r.out[0]);
	assert_string_equal(jstr(j, "x_error"), "pipeline_overflow");
	json_decref(j);
	/* bytes still arrive; nothing more is recorded */
	http1_obs_server(o, (const uint8_t *)"HTTP/1.1 200 OK\r\n\r\n", 19);
	http1_obs_finish(o, "connection_closed");
	assert_int_equal(r.n, HTTP1_MAX_PENDING);
	assert_int_equal(http1_obs_stats(o).emitted, HTTP1_MAX_PENDING);
	http1_obs_free(o);
	rec_free(&r);
}

static void test_orphan_response(void **state)
{
	(void)state;
	static const struct step steps[] = {
		S("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
		SEOF,
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 64, &ref);
	assert_int_equal(ref.n, 1);
	json_t *j = parse(ref.out[0]);
	assert_int_equal(json_integer_value(jget(j, "response.status")), 408);
	assert_true(json_is_null(jget(j, "method")));
	assert_string_equal(jstr(j, "http_version"), "HTTP/1.1");
	json_decref(j);
	rec_free(&ref);
}

static void test_connect(void **state)
{
	(void)state;
	/* refused: the connection stays HTTP */
	static const struct step refused[] = {
		C("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
		S("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"),
		C("GET /next HTTP/1.1\r\nHost: h\r\n\r\n"),
		S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(refused, 64, &ref);
	assert_int_equal(ref.n, 2);
	json_t *j = parse(ref.out[0]);
	assert_string_equal(jstr(j, "method"), "CONNECT");
	assert_string_equal(jstr(j, "url"), "https://example.com:443");
	json_decref(j);
	j = parse(ref.out[1]);
	assert_string_equal(jstr(j, "url"), "https://h/next");
	json_decref(j);
	rec_free(&ref);

	/* accepted: a tunnel; where it starts each way */
	struct rec r = { 0 };
	struct http1_obs *o = obs_new(&r, 64);
	const char *c =
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01";
	http1_obs_client(o, (const uint8_t *)c, strlen(c));
	assert_int_equal(http1_obs_upgraded(o, NULL), HTTP1_UPGRADE_NONE);
	const char *s = "HTTP/1.1 200 Connection Established\r\n\r\nTUNNEL";
	http1_obs_server(o, (const uint8_t *)s, strlen(s));
	struct http1_upgrade_info info;
	assert_int_equal(http1_obs_upgraded(o, &info), HTTP1_UPGRADE_CONNECT);
	assert_int_equal(info.server_http_len, strlen(s) - 6);
	assert_int_equal(info.client_early_len, 3);
	assert_memory_equal(info.client_early, "\x16\x03\x01", 3);
	assert_int_equal(r.n, 1);
	http1_obs_client(o, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18); /* ignored */
	http1_obs_finish(o, "connection_closed");
	assert_int_equal(r.n, 1);
	assert_false(http1_obs_failed(o));
	http1_obs_free(o);
	rec_free(&r);
}

/* llhttp reports empty spans (here an empty target before anything was
 * gathered): nothing to copy, and no memcpy from a NULL buffer (UBSan;
 * found by fuzz_app_http1). */
static void test_empty_span_first(void **state)
{
	(void)state;
	struct rec r = { 0 };
	struct http1_obs *o = obs_new(&r, 64);
	const char *c = "CONNECT \r\nHost:\r\n\r\n";
	http1_obs_client(o, (const uint8_t *)c, strlen(c));
	http1_obs_finish(o, "connection_closed");
	assert_int_equal(r.n, 1);
	json_t *j = parse(r.out[0]);
	assert_string_equal(jstr(j, "method"), "CONNECT");
	assert_header(jget(j, "request.headers"), 0, "Host", "");
	json_decref(j);
	http1_obs_free(o);
	rec_free(&r);
}

static void test_websocket_upgrade(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("GET /chat?room=1 HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
		  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		  "Sec-WebSocket-Version: 13\r\n\r\n"),
		/* a masked "Hi" sent before the 101 arrives */
		C("\x81\x82\x01\x02\x03\x04"
		  "Ik"),
		S("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
		  "Upgrade\r\n"
		  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
		  "\x81\x05hello\x89\x00"),
		C("\x8a\x80\x00\x00\x00\x00"),
		S("\x88\x04\x03\xe8ok"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 64, &ref);
	assert_int_equal(ref.n, 2);
	json_t *j = parse(ref.out[0]);
	assert_true(json_is_true(jget(j, "websocket")));
	assert_int_equal(json_integer_value(jget(j, "response.status")), 101);
	assert_true(json_is_null(jget(j, "x_error")));
	json_decref(j);
	j = parse(ref.out[1]);
	json_t *ws = jget(j, "ws");
	assert_string_equal(jstr(ws, "url"), "wss://ws.example/chat?room=1");
	json_t *m = jget(ws, "messages");
	assert_int_equal(json_array_size(m), 5);
	json_t *e = json_array_get(m, 0);
	assert_string_equal(jstr(e, "dir"), "up");
	assert_string_equal(jstr(e, "opcode"), "text");
	assert_string_equal(jstr(e, "body.text"), "Hi");
	e = json_array_get(m, 1);
	assert_string_equal(jstr(e, "dir"), "down");
	assert_string_equal(jstr(e, "body.text"), "hello");
	assert_string_equal(jstr(json_array_get(m, 2), "opcode"), "ping");
	assert_string_equal(jstr(json_array_get(m, 3), "opcode"), "pong");
	e = json_array_get(m, 4);
	assert_string_equal(jstr(e, "opcode"), "close");
	assert_string_equal(jstr(e, "dir"), "down");
	assert_string_equal(jstr(e, "body.text"), "ok");
	assert_int_equal(json_integer_value(jget(ws, "close.code")), 1000);
	assert_string_equal(jstr(ws, "close.reason"), "ok");
	json_decref(j);
	rec_free(&ref);
}

static void test_upgrade_refused(void **state)
{
	(void)state;
	static const struct step steps[] = {
		C("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		  "GET /after HTTP/1.1\r\nHost: h\r\n\r\n"),
		S("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"
		  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
		END,
	};
	struct rec ref = { 0 };
	run_all_splits(steps, 64, &ref);
	assert_int_equal(ref.n, 2);
	json_t *j = parse(ref.out[0]);
	assert_int_equal(json_integer_value(jget(j, "response.status")), 426);
	assert_null(jget(j, "websocket"));
	json_decref(j);
	j = parse(ref.out[1]);
	assert_string_equal(jstr(j, "url"), "https://h/after");
	assert_string_equal(jstr(j, "response.body.text"), "ok");
	json_decref(j);
	rec_free(&ref);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keep_alive),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_chunked_trailers),
		cmocka_unit_test(test_head_204_304),
		cmocka_unit_test(test_informational),
		cmocka_unit_test(test_close_delimited),
		cmocka_unit_test(test_after_connection_close),
		cmocka_unit_test(test_pending_at_finish),
		cmocka_unit_test(test_timings),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_header_cap),
		cmocka_unit_test(test_long_target),
		cmocka_unit_test(test_parse_error),
		cmocka_unit_test(test_pipeline_overflow),
		cmocka_unit_test(test_orphan_response),
		cmocka_unit_test(test_connect),
		cmocka_unit_test(test_empty_span_first),
		cmocka_unit_test(test_websocket_upgrade),
		cmocka_unit_test(test_upgrade_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
