/* The active HTTP/2 layer between two real nghttp2 sessions in memory: a
 * client session talks to h2rw's server side, h2rw's client side talks to
 * an nghttp2 server session that answers by path. Each action, concurrent
 * streams with one delayed, flow control with a slow reader, mock without
 * an upstream stream, 444 resetting one stream, trailers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/h2rw.h"
#include "mitm/held.h"
#include "mitm/rules.h"

#define MAXS 64
#define BIG (2u << 20)

struct bytes {
	uint8_t *p;
	size_t n;
};

static void bytes_add(struct bytes *b, const uint8_t *p, size_t n)
{
	b->p = realloc(b->p, b->n + n + 1);
	assert_non_null(b->p);
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
}

/* What one side saw of one stream. */
struct seen {
	char hdrs[2048]; /* "name: value\n" ... */
	char trailers[512];
	struct bytes body;
	int status;
	uint32_t rst;
	bool closed, ended;
	int order;   /* completion order on the client */
	size_t sent; /* server: body bytes sent of a big response */
};

struct env {
	nghttp2_session *c, *s;
	struct h2rw *w;
	struct bytes to_c, to_s; /* h2rw's output waiting for each side */
	struct seen cs[MAXS * 2], ss[MAXS * 2];
	int done;
	uint64_t now;
	uint32_t timer_ms;
	bool timer_set;
	bool client_slow; /* the client acknowledges nothing */
	bool server_slow; /* the upstream acknowledges nothing */
	size_t max_buffered;
	unsigned upstream_streams;
	json_t *notes[MAXS * 2];
	struct held *held;
};

static struct env *E;

static void add_hdr(char *dst, size_t cap, const uint8_t *n, size_t nl, const uint8_t *v, size_t vl)
{
	size_t o = strlen(dst);
	snprintf(dst + o, cap - o, "%.*s: %.*s\n", (int)nl, n, (int)vl, v);
}

/* ---- the client session -------------------------------------------------- */

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n, size_t nl,
		    const uint8_t *v, size_t vl, uint8_t fl, void *ud)
{
	(void)s, (void)fl, (void)ud;
	struct seen *x = &E->cs[f->hd.stream_id];
	if (nl == 7 && memcmp(n, ":status", 7) == 0) {
		x->status = atoi((const char *)v);
		return 0;
	}
	if (f->headers.cat == NGHTTP2_HCAT_HEADERS && x->status >= 200)
		add_hdr(x->trailers, sizeof(x->trailers), n, nl, v, vl);
	else
		add_hdr(x->hdrs, sizeof(x->hdrs), n, nl, v, vl);
	return 0;
}

static int c_data(nghttp2_session *s, uint8_t fl, int32_t id, const uint8_t *d, size_t n, void *ud)
{
	(void)fl, (void)ud;
	bytes_add(&E->cs[id].body, d, n);
	if (!E->client_slow)
		nghttp2_session_consume(s, id, n);
	return 0;
}

static int c_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
	(void)s, (void)ud;
	E->cs[id].closed = true;
	E->cs[id].rst = code;
	E->cs[id].order = ++E->done;
	return 0;
}

/* ---- the upstream server session ------------------------------------------ */

struct gen {
	size_t len, off;
	const char *text;
	bool trailers;
	int32_t id;
};
static struct gen gens[MAXS * 2];

static ssize_t gen_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
			nghttp2_data_source *src, void *ud)
{
	(void)ud;
	struct gen *g = src->ptr;
	size_t n = g->len - g->off < len ? g->len - g->off : len;
	for (size_t i = 0; i < n; i++)
		buf[i] =
			g->text ? (uint8_t)g->text[g->off + i] : (uint8_t)('a' + (g->off + i) % 26);
	g->off += n;
	E->ss[id].sent = g->off;
	if (g->off == g->len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (g->trailers) {
			nghttp2_nv t[] = { { (uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, 0 },
					   { (uint8_t *)"grpc-message", (uint8_t *)"ok", 12, 2,
					     0 } };
			nghttp2_submit_trailer(s, id, t, 2);
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		}
	}
	return (ssize_t)n;
}

static int s_begin(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	(void)s, (void)ud;
	if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
		E->upstream_streams++;
	return 0;
}

static int s_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n, size_t nl,
		    const uint8_t *v, size_t vl, uint8_t fl, void *ud)
{
	(void)s, (void)fl, (void)ud;
	struct seen *x = &E->ss[f->hd.stream_id];
	if (f->headers.cat == NGHTTP2_HCAT_HEADERS)
		add_hdr(x->trailers, sizeof(x->trailers), n, nl, v, vl);
	else
		add_hdr(x->hdrs, sizeof(x->hdrs), n, nl, v, vl);
	return 0;
}

static int s_data(nghttp2_session *s, uint8_t fl, int32_t id, const uint8_t *d, size_t n, void *ud)
{
	(void)fl, (void)ud;
	bytes_add(&E->ss[id].body, d, n);
	if (!E->server_slow)
		nghttp2_session_consume(s, id, n);
	return 0;
}

/* Answers by path once the request is complete. */
static void s_answer(nghttp2_session *s, int32_t id)
{
	struct seen *x = &E->ss[id];
	struct gen *g = &gens[id];
	memset(g, 0, sizeof(*g));
	const char *ctype = "text/plain";
	if (strstr(x->hdrs, ":path: /upreset")) {
		nghttp2_submit_rst_stream(s, 0, id, NGHTTP2_REFUSED_STREAM);
		return;
	}
	if (strstr(x->hdrs, ":path: /big") || strstr(x->hdrs, ":path: /large") ||
	    strstr(x->hdrs, ":path: /tbig")) {
		g->len = BIG;
	} else if (strstr(x->hdrs, ":path: /json")) {
		g->text = "{\"user\":{\"role\":\"guest\"},\"n\":1}";
		ctype = "application/json";
	} else if (strstr(x->hdrs, ":path: /grpc")) {
		g->text = "\0\0\0\0\0";
		g->len = 5;
		g->trailers = true;
		ctype = "application/grpc";
	} else if (strstr(x->hdrs, ":path: /echo")) {
		g->text = x->body.p ? (const char *)x->body.p : "";
		g->len = x->body.n;
	} else {
		g->text = "hello from upstream";
	}
	if (g->text && !g->len)
		g->len = strlen(g->text);
	nghttp2_nv nv[] = { { (uint8_t *)":status", (uint8_t *)"200", 7, 3, 0 },
			    { (uint8_t *)"content-type", (uint8_t *)ctype, 12, strlen(ctype), 0 },
			    { (uint8_t *)"x-up", (uint8_t *)"1", 4, 1, 0 } };
	nghttp2_data_provider prd = { .source.ptr = g, .read_callback = gen_read };
	assert_int_equal(nghttp2_submit_response(s, id, nv, 3, &prd), 0);
}

static int s_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	(void)ud;
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		E->ss[f->hd.stream_id].ended = true;
		s_answer(s, f->hd.stream_id);
	}
	return 0;
}

static int s_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
	(void)s, (void)ud;
	E->ss[id].closed = true;
	E->ss[id].rst = code;
	return 0;
}

/* ---- h2rw ops --------------------------------------------------------------- */

static void op_up(void *ctx, const uint8_t *p, size_t n)
{
	(void)ctx;
	bytes_add(&E->to_s, p, n);
}

static void op_cl(void *ctx, const uint8_t *p, size_t n)
{
	(void)ctx;
	bytes_add(&E->to_c, p, n);
}

static void op_timer(void *ctx, uint32_t ms)
{
	(void)ctx;
	E->timer_ms = ms;
	E->timer_set = true;
}

static void op_fail(void *ctx, const char *why)
{
	(void)ctx;
	fail_msg("h2rw failed: %s", why);
}

static uint64_t op_now(void *ctx)
{
	(void)ctx;
	return E->now;
}

static struct ruleset *compile(const char *json)
{
	json_error_t je;
	json_t *a = json_loads(json, 0, &je);
	assert_non_null(a);
	struct rules_error err;
	struct ruleset *rs = ruleset_new(a, "intercept_rules", NULL, NULL, &err);
	if (!rs)
		fail_msg("%s: %s", err.field, err.message);
	json_decref(a);
	return rs;
}

static const char *RULES =
	"[{\"id\": \"hdr\", \"conditions\": {\"path_pattern\": \"^/hdr\"},"
	"  \"actions\": [{\"type\": \"set_header\", \"name\": \"X-Set\", \"value\": \"yes\"},"
	"               {\"type\": \"add_header\", \"name\": \"x-add\", \"value\": \"2\"},"
	"               {\"type\": \"remove_header\", \"name\": \"x-gone\"},"
	"               {\"type\": \"set_header\", \"name\": \"Host\", \"value\": "
	"\"edited.test\"}]},"
	" {\"id\": \"mock\", \"conditions\": {\"path_pattern\": \"^/mock\"},"
	"  \"actions\": [{\"type\": \"mock\", \"status\": 201, \"headers\": {\"X-Mock\": \"1\"},"
	"               \"body\": \"mocked!\"}]},"
	" {\"id\": \"deny\", \"conditions\": {\"path_pattern\": \"^/deny\"},"
	"  \"actions\": [{\"type\": \"block\", \"status\": 403}]},"
	" {\"id\": \"kill\", \"conditions\": {\"path_pattern\": \"^/kill\"},"
	"  \"actions\": [{\"type\": \"block\", \"status\": 444}]},"
	" {\"id\": \"slow\", \"conditions\": {\"path_pattern\": \"^/slow\"},"
	"  \"actions\": [{\"type\": \"delay\", \"ms\": 500}]},"
	" {\"id\": \"rbody\", \"conditions\": {\"path_pattern\": \"^/echo\"},"
	"  \"actions\": [{\"type\": \"replace_body\", \"regex\": \"cat\", \"replacement\": "
	"\"dog\"}]},"
	" {\"id\": \"resp\", \"direction\": \"response\", \"conditions\": {\"path_pattern\": "
	"\"^/json\"},"
	"  \"actions\": [{\"type\": \"set_json\", \"path\": \"user.role\", \"value\": \"admin\"},"
	"               {\"type\": \"set_header\", \"name\": \"X-Resp\", \"value\": \"r\"},"
	"               {\"type\": \"remove_header\", \"name\": \"x-up\"},"
	"               {\"type\": \"set_status\", \"status\": 299}]},"
	" {\"id\": \"bigedit\", \"direction\": \"response\", \"conditions\": {\"path_pattern\": "
	"\"^/big\"},"
	"  \"actions\": [{\"type\": \"replace_body\", \"regex\": \"zzz\", \"replacement\": "
	"\"y\"}]},"
	" {\"id\": \"tput\", \"direction\": \"response\", \"conditions\": {\"path_pattern\": "
	"\"^/tbig\"}, \"actions\": [{\"type\": \"throttle\", \"bytes_per_s\": 262144}]},"
	" {\"id\": \"bp\", \"conditions\": {\"path_pattern\": \"^/bp\"},"
	"  \"actions\": [{\"type\": \"breakpoint\"}]},"
	" {\"id\": \"rbp\", \"direction\": \"response\", \"conditions\": {\"path_pattern\": "
	"\"^/rbp\"}, \"actions\": [{\"type\": \"breakpoint\"}]},"
	" {\"id\": \"grpc\", \"conditions\": {\"path_pattern\": \"^/grpc\"},"
	"  \"actions\": [{\"type\": \"set_header\", \"name\": \"x-grpc-rule\", \"value\": "
	"\"1\"}]}]";

static const char *upstream_authority; /* the next setup's (a reverse listener's) */

static int setup(void **state)
{
	static struct env env;
	memset(&env, 0, sizeof(env));
	memset(gens, 0, sizeof(gens));
	E = &env;
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;
	assert_int_equal(nghttp2_option_new(&opt), 0);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
	assert_int_equal(nghttp2_session_client_new2(&env.c, cb, NULL, opt), 0);
	nghttp2_session_callbacks_del(cb);
	assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, s_begin);
	nghttp2_session_callbacks_set_on_header_callback(cb, s_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, s_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, s_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, s_close);
	assert_int_equal(nghttp2_session_server_new2(&env.s, cb, NULL, opt), 0);
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	nghttp2_submit_settings(env.c, 0, NULL, 0);
	nghttp2_submit_settings(env.s, 0, NULL, 0);
	struct ruleset *rs = compile(RULES);
	env.held = held_new(&(struct held_config){ 0 });
	assert_non_null(env.held);
	struct h2rw_config cfg = { .ops = { .to_upstream = op_up,
					    .to_client = op_cl,
					    .timer = op_timer,
					    .fail = op_fail,
					    .now_ms = op_now },
				   .rules = rs,
				   .peer = "phone",
				   .scheme = "https",
				   .default_authority = "10.0.0.1:443",
				   .upstream_authority = upstream_authority,
				   .held = env.held,
				   .conn = "c1",
				   .client = "10.0.0.2:5000",
				   .body_cap = 1u << 20 };
	env.w = h2rw_new(&cfg);
	assert_non_null(env.w);
	ruleset_unref(rs);
	h2rw_flush(env.w);
	*state = &env;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	h2rw_free(E->w);
	assert_int_equal(held_count(E->held), 0); /* the layer took its items back */
	held_free(E->held);
	nghttp2_session_del(E->c);
	nghttp2_session_del(E->s);
	for (size_t i = 0; i < MAXS * 2; i++) {
		free(E->cs[i].body.p);
		free(E->ss[i].body.p);
		json_decref(E->notes[i]);
	}
	free(E->to_c.p);
	free(E->to_s.p);
	return 0;
}

/* Moves bytes until nothing moves. */
static void run(void)
{
	for (int round = 0; round < 100000; round++) {
		bool moved = false;
		const uint8_t *d;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(E->c, &d)) > 0) {
			h2rw_client(E->w, d, (size_t)n);
			moved = true;
		}
		while ((n = nghttp2_session_mem_send(E->s, &d)) > 0) {
			h2rw_server(E->w, d, (size_t)n);
			moved = true;
		}
		if (E->to_c.n) {
			struct bytes b = E->to_c;
			memset(&E->to_c, 0, sizeof(E->to_c));
			assert_int_equal(nghttp2_session_mem_recv(E->c, b.p, b.n), (ssize_t)b.n);
			free(b.p);
			moved = true;
		}
		if (E->to_s.n) {
			struct bytes b = E->to_s;
			memset(&E->to_s, 0, sizeof(E->to_s));
			assert_int_equal(nghttp2_session_mem_recv(E->s, b.p, b.n), (ssize_t)b.n);
			free(b.p);
			moved = true;
		}
		if (h2rw_buffered(E->w) > E->max_buffered)
			E->max_buffered = h2rw_buffered(E->w);
		if (!moved)
			return;
	}
	fail_msg("no quiet point");
}

static int32_t get(const char *path, const char *extra_name, const char *extra_value)
{
	nghttp2_nv nv[] = { { (uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0 },
			    { (uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0 },
			    { (uint8_t *)":authority", (uint8_t *)"api.test", 10, 8, 0 },
			    { (uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0 },
			    { (uint8_t *)extra_name, (uint8_t *)extra_value,
			      extra_name ? strlen(extra_name) : 0,
			      extra_value ? strlen(extra_value) : 0, 0 } };
	int32_t id = nghttp2_submit_request(E->c, NULL, nv, extra_name ? 5 : 4, NULL, NULL);
	assert_true(id > 0);
	return id;
}

static struct gen reqbody;

static int32_t post_n(const char *path, const char *body, size_t len)
{
	nghttp2_nv nv[] = { { (uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0 },
			    { (uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0 },
			    { (uint8_t *)":authority", (uint8_t *)"api.test", 10, 8, 0 },
			    { (uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0 } };
	reqbody = (struct gen){ .text = body, .len = len };
	nghttp2_data_provider prd = { .source.ptr = &reqbody, .read_callback = gen_read };
	int32_t id = nghttp2_submit_request(E->c, NULL, nv, 4, &prd, NULL);
	assert_true(id > 0);
	return id;
}

static int32_t post(const char *path, const char *body)
{
	return post_n(path, body, strlen(body));
}

static json_t *note(int32_t id)
{
	json_t *n = h2rw_take_note(E->w, (uint32_t)id);
	E->notes[id] = n;
	return n;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_headers(void **state)
{
	(void)state;
	int32_t id = get("/hdr", "x-gone", "1");
	int32_t plain = get("/plain", "x-gone", "1");
	run();
	assert_true(E->cs[id].closed);
	assert_int_equal(E->cs[id].rst, 0);
	assert_int_equal(E->cs[id].status, 200);
	assert_string_equal((char *)E->cs[id].body.p, "hello from upstream");
	/* The upstream stream ids are h2rw's: find the one for /hdr. */
	bool found = false;
	for (int i = 1; i < MAXS; i += 2) {
		const char *h = E->ss[i].hdrs;
		if (!strstr(h, ":path: /hdr"))
			continue;
		found = true;
		assert_non_null(strstr(h, "x-set: yes\n"));
		assert_non_null(strstr(h, "x-add: 2\n"));
		assert_null(strstr(h, "x-gone"));
		assert_non_null(strstr(h, ":authority: edited.test\n"));
		assert_null(strstr(h, "host:"));
	}
	assert_true(found);
	json_t *n = note(id);
	assert_non_null(n);
	assert_string_equal(json_string_value(json_array_get(json_object_get(n, "matched"), 0)),
			    "hdr");
	assert_null(note(plain));                        /* no rule touched it */
	assert_null(h2rw_take_note(E->w, (uint32_t)id)); /* once */
}

static int setup_reverse(void **state)
{
	upstream_authority = "backend.test:8443";
	int rc = setup(state);
	upstream_authority = NULL;
	return rc;
}

/* A reverse listener's upstream name replaces :authority and Host before
 * the rules see it. */
static void test_upstream_authority(void **state)
{
	(void)state;
	int32_t id = get("/plain", "host", "api.test");
	run();
	assert_int_equal(E->cs[id].status, 200);
	bool found = false;
	for (int i = 1; i < MAXS; i += 2) {
		const char *h = E->ss[i].hdrs;
		if (!strstr(h, ":path: /plain"))
			continue;
		found = true;
		assert_non_null(strstr(h, ":authority: backend.test:8443\n"));
		assert_null(strstr(h, "api.test"));
	}
	assert_true(found);
}

static uint64_t held_only(const char *phase)
{
	assert_int_equal(held_count(E->held), 1);
	json_t *l = held_list(E->held);
	json_t *it = json_array_get(l, 0);
	assert_string_equal(json_string_value(json_object_get(it, "proto")), "h2");
	assert_string_equal(json_string_value(json_object_get(it, "phase")), phase);
	assert_string_equal(json_string_value(json_object_get(it, "conn")), "c1");
	uint64_t id = (uint64_t)json_integer_value(json_object_get(it, "id"));
	json_decref(l);
	return id;
}

static void release(uint64_t id, const char *edits)
{
	json_error_t je;
	json_t *e = edits ? json_loads(edits, 0, &je) : NULL;
	char why[200];
	if (held_release(E->held, id, e, why, sizeof(why)) < 0)
		fail_msg("release: %s", why);
	json_decref(e);
}

/* A held stream waits while the others of the connection go on; it goes
 * on edited, a held response with a new status and body, and a killed one
 * is reset alone. */
static void test_breakpoints(void **state)
{
	(void)state;
	int32_t bp = get("/bp", "x-orig", "1");
	int32_t plain = get("/plain", NULL, NULL);
	run();
	assert_int_equal(E->cs[plain].status, 200);
	assert_true(E->cs[plain].closed);
	assert_false(E->cs[bp].closed);
	uint64_t id = held_only("request");
	release(id, "{\"path\": \"/bp2\", \"set_headers\": {\"x-edited\": \"yes\"}}");
	run();
	assert_true(E->cs[bp].closed);
	assert_int_equal(E->cs[bp].status, 200);
	bool found = false;
	for (int i = 1; i < MAXS; i += 2)
		if (strstr(E->ss[i].hdrs, ":path: /bp2\n")) {
			found = true;
			assert_non_null(strstr(E->ss[i].hdrs, "x-edited: yes\n"));
			assert_non_null(strstr(E->ss[i].hdrs, "x-orig: 1\n"));
		}
	assert_true(found);
	json_t *n = note(bp);
	assert_string_equal(json_string_value(json_object_get(n, "request_breakpoint")), "edited");

	int32_t r = get("/rbp", NULL, NULL);
	run();
	assert_false(E->cs[r].closed);
	release(held_only("response"), "{\"status\": 201, \"body\": \"changed\"}");
	run();
	assert_int_equal(E->cs[r].status, 201);
	assert_string_equal((char *)E->cs[r].body.p, "changed");

	int32_t k = get("/bpk", NULL, NULL);
	run();
	assert_int_equal(held_kill(E->held, held_only("request")), 0);
	run();
	assert_true(E->cs[k].closed);
	assert_int_not_equal(E->cs[k].rst, 0);
	int32_t after = get("/plain", NULL, NULL);
	run();
	assert_int_equal(E->cs[after].status, 200);

	/* A held stream the client resets leaves the registry. */
	int32_t gone = get("/bp", NULL, NULL);
	run();
	(void)held_only("request");
	nghttp2_submit_rst_stream(E->c, NGHTTP2_FLAG_NONE, gone, NGHTTP2_CANCEL);
	run();
	assert_int_equal(held_count(E->held), 0);
}

static void test_mock_block_reset(void **state)
{
	(void)state;
	int32_t m = get("/mock", NULL, NULL);
	int32_t b = get("/deny", NULL, NULL);
	int32_t k = get("/kill", NULL, NULL);
	int32_t ok = get("/after", NULL, NULL);
	run();
	assert_int_equal(E->cs[m].status, 201);
	assert_string_equal((char *)E->cs[m].body.p, "mocked!");
	assert_non_null(strstr(E->cs[m].hdrs, "x-mock: 1\n"));
	assert_non_null(strstr(E->cs[m].hdrs, "content-length: 7\n"));
	assert_int_equal(E->cs[b].status, 403);
	assert_non_null(strstr((char *)E->cs[b].body.p, "blocked by rule deny"));
	assert_true(E->cs[k].closed);
	assert_int_equal(E->cs[k].rst, NGHTTP2_INTERNAL_ERROR);
	assert_int_equal(E->cs[k].status, 0);
	/* Only that stream: the connection goes on. */
	assert_int_equal(E->cs[ok].status, 200);
	assert_int_equal(E->cs[ok].rst, 0);
	assert_int_equal(E->upstream_streams, 1); /* mock, block, 444: none upstream */
	int32_t again = get("/again", NULL, NULL);
	run();
	assert_int_equal(E->cs[again].status, 200);
	assert_string_equal(json_string_value(json_object_get(note(m), "mocked_by")), "mock");
	assert_string_equal(json_string_value(json_object_get(note(b), "blocked_by")), "deny");
	json_t *reset = json_object_get(note(k), "reset");
	assert_true(json_is_true(reset));
}

static void test_delay_concurrent(void **state)
{
	(void)state;
	int32_t slow = get("/slow", NULL, NULL);
	int32_t a = get("/a", NULL, NULL);
	int32_t b = get("/b", NULL, NULL);
	run();
	assert_true(E->timer_set);
	assert_int_equal(E->timer_ms, 500);
	assert_true(E->cs[a].closed && E->cs[b].closed);
	assert_false(E->cs[slow].closed);
	assert_int_equal(E->upstream_streams, 2);
	E->now += 200;
	h2rw_timeout(E->w); /* early: nothing due */
	run();
	assert_false(E->cs[slow].closed);
	E->now += 300;
	h2rw_timeout(E->w);
	run();
	assert_true(E->cs[slow].closed);
	assert_int_equal(E->cs[slow].status, 200);
	assert_int_equal(E->cs[slow].order, 3);
}

/* A throttled response streams at its rate on the layer's clock while
 * the connection's other streams go on at once. */
static void test_throttle(void **state)
{
	(void)state;
	int32_t big = get("/tbig", NULL, NULL);
	run();
	int32_t plain = get("/plain", NULL, NULL);
	run();
	assert_true(E->cs[plain].closed);
	assert_int_equal(E->cs[plain].status, 200);
	assert_false(E->cs[big].closed);
	uint64_t start = E->now;
	for (int i = 0; i < 10000 && !E->cs[big].closed; i++) {
		assert_true(E->timer_set);
		E->now += E->timer_ms ? E->timer_ms : 1;
		E->timer_set = false;
		h2rw_timeout(E->w);
		run();
	}
	assert_true(E->cs[big].closed);
	assert_int_equal(E->cs[big].body.n, BIG);
	/* 2 MiB at 256 KiB/s: 8 s, less the first burst. */
	uint64_t took = E->now - start;
	if (took < 7000 || took > 9000)
		fail_msg("2 MiB at 256 KiB/s took %llu ms", (unsigned long long)took);
}

static void test_bodies(void **state)
{
	(void)state;
	int32_t e = post("/echo", "a cat and a cat");
	run();
	assert_string_equal((char *)E->cs[e].body.p, "a dog and a dog");
	int32_t j = get("/json", NULL, NULL);
	run();
	assert_int_equal(E->cs[j].status, 299);
	json_t *body = json_loads((char *)E->cs[j].body.p, 0, NULL);
	assert_non_null(body);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(body, "user"), "role")), "admin");
	json_decref(body);
	assert_non_null(strstr(E->cs[j].hdrs, "x-resp: r\n"));
	assert_null(strstr(E->cs[j].hdrs, "x-up"));
	char cl[64];
	snprintf(cl, sizeof(cl), "content-length: %zu\n", E->cs[j].body.n);
	assert_non_null(strstr(E->cs[j].hdrs, cl));
	json_t *n = note(j);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(n, "response_original"),
							    "status")),
			 200);
	assert_non_null(json_object_get(n, "response_body_original"));
}

/* A 2 MiB response edit is over the 1 MiB cap: skipped, streamed. */
static void test_body_cap(void **state)
{
	(void)state;
	int32_t id = get("/big", NULL, NULL);
	run();
	assert_int_equal(E->cs[id].body.n, BIG);
	json_t *n = note(id);
	json_t *acts = json_object_get(n, "actions");
	bool said = false;
	for (size_t i = 0; i < json_array_size(acts); i++)
		said |= strstr(json_string_value(json_array_get(acts, i)), "larger than") != NULL;
	assert_true(said);
}

/* Streaming without any body rule: h2rw buffers at most one window. */
static void test_flow_bounded(void **state)
{
	(void)state;
	E->client_slow = true;
	/* a path no rule keeps; the server makes it big */
	int32_t b = get("/large", NULL, NULL);
	(void)b;
	int32_t other = get("/small", NULL, NULL);
	run();
	assert_true(E->cs[other].closed); /* not stalled by the held-up big one */
	assert_true(E->max_buffered <= 2 * H2RW_STREAM_WINDOW);
	E->client_slow = false;
	nghttp2_session_consume(E->c, b, E->cs[b].body.n);
	nghttp2_session_consume(E->c, other, E->cs[other].body.n);
	run();
	assert_true(E->cs[b].closed);
	assert_int_equal(E->cs[b].body.n, BIG);
}

/* An upload to an upstream that reads nothing: h2rw holds at most one
 * stream window of it, and a stream beside it still completes. */
static void test_upload_bounded(void **state)
{
	(void)state;
	E->server_slow = true;
	int32_t up = post_n("/upload", NULL, BIG);
	int32_t other = get("/small", NULL, NULL);
	run();
	assert_false(E->cs[up].closed);
	assert_true(E->cs[other].closed);
	assert_int_equal(E->cs[other].status, 200);
	assert_true(E->max_buffered <= H2RW_STREAM_WINDOW);
	assert_true(reqbody.off <= 3 * H2RW_STREAM_WINDOW);
	E->server_slow = false;
	for (int i = 1; i < MAXS; i += 2)
		nghttp2_session_consume(E->s, i, E->ss[i].body.n);
	run();
	assert_true(E->cs[up].closed);
	size_t got = 0;
	for (int i = 1; i < MAXS; i += 2)
		got += E->ss[i].body.n;
	assert_int_equal(got, BIG);
}

/* The upstream resets a stream: that client stream is reset with its code. */
static void test_upstream_reset(void **state)
{
	(void)state;
	int32_t r = get("/upreset", NULL, NULL);
	int32_t ok = get("/fine", NULL, NULL);
	run();
	assert_int_equal(E->cs[r].rst, NGHTTP2_REFUSED_STREAM);
	assert_int_equal(E->cs[ok].status, 200);
	assert_int_equal(h2rw_buffered(E->w), 0);
}

static void test_trailers(void **state)
{
	(void)state;
	int32_t id = post("/grpc.Svc/Call", "\0");
	run();
	assert_int_equal(E->cs[id].status, 200);
	assert_int_equal(E->cs[id].rst, 0);
	assert_non_null(strstr(E->cs[id].trailers, "grpc-status: 0\n"));
	assert_non_null(strstr(E->cs[id].trailers, "grpc-message: ok\n"));
	bool seen = false;
	for (int i = 1; i < MAXS; i += 2)
		seen |= strstr(E->ss[i].hdrs, "x-grpc-rule: 1\n") != NULL;
	assert_true(seen);
}

/* A client reset of a held stream opens nothing upstream. */
static void test_client_reset(void **state)
{
	(void)state;
	int32_t slow = get("/slow", NULL, NULL);
	run();
	nghttp2_submit_rst_stream(E->c, 0, slow, NGHTTP2_CANCEL);
	run();
	E->now += 1000;
	h2rw_timeout(E->w);
	run();
	assert_int_equal(E->upstream_streams, 0);
	assert_int_equal(h2rw_buffered(E->w), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_authority, setup_reverse, teardown),
		cmocka_unit_test_setup_teardown(test_breakpoints, setup, teardown),
		cmocka_unit_test_setup_teardown(test_throttle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mock_block_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delay_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bodies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flow_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upload_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trailers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_reset, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
