/* The passive HTTP/2 observer against real HTTP/2: an nghttp2 client
 * session and an nghttp2 server session talk through memory; every byte
 * each one sends is fed to the observer (in chunks of 1 byte, of mixed
 * sizes, or whole) before the other side reads it. The records are
 * compared, key by key, with what the two sessions actually exchanged.
 * Crafted byte streams cover the protocol errors. */
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

#include "mitm/h2obs.h"

#define MAX_SID 2048
#define MAX_RECS 512

/* ---- chunking patterns ---- */

static const size_t pat_whole[] = { SIZE_MAX };
static const size_t pat_one[] = { 1 };
static const size_t pat_mixed[] = { 1, 2, 3, 9, 5, 100, 7, 4096, 13, 1, 16393, 8, 24, 6 };

struct pattern {
	const char *name;
	const size_t *v;
	size_t n;
};
static const struct pattern patterns[] = {
	{ "whole", pat_whole, 1 },
	{ "1-byte", pat_one, 1 },
	{ "mixed", pat_mixed, sizeof(pat_mixed) / sizeof(pat_mixed[0]) },
};
#define N_PATTERNS (sizeof(patterns) / sizeof(patterns[0]))

/* ---- records the sink received ---- */

struct rec {
	json_t *j;
	const char *error; /* copied into err */
	char err[64];
	char detail[96];
	uint32_t sid;
	bool req_complete, resp_complete;
};

/* ---- bodies: generated, so any size costs no memory ---- */

static char body_byte(unsigned seed, size_t off)
{
	return (char)('a' + (seed * 7 + off * 13 + off / 26) % 26);
}

static char *body_text(unsigned seed, size_t len)
{
	char *s = malloc(len + 1);
	assert_non_null(s);
	for (size_t i = 0; i < len; i++)
		s[i] = body_byte(seed, i);
	s[len] = '\0';
	return s;
}

struct body_src {
	size_t len, off;
	unsigned seed;
	const nghttp2_nv *trailers;
	size_t n_trailers;
};

static ssize_t body_read(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *source, void *ud)
{
	struct body_src *b = source->ptr;
	size_t k = b->len - b->off < len ? b->len - b->off : len;
	for (size_t i = 0; i < k; i++)
		buf[i] = (uint8_t)body_byte(b->seed, b->off + i);
	b->off += k;
	if (b->off == b->len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (b->n_trailers) {
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			assert_int_equal(
				nghttp2_submit_trailer(session, sid, b->trailers, b->n_trailers),
				0);
		}
	}
	return (ssize_t)k;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE \
	}

/* ---- the connection under test ---- */

struct srv_stream {
	char path[128];
	bool expect_100;
	size_t body_in;
	struct body_src out;
};

struct cli_stream {
	size_t body_in;
	bool closed;
	uint32_t close_code;
	bool rst_on_headers;
	struct body_src out;
};

struct conn;
typedef void respond_fn(struct conn *c, int32_t sid, struct srv_stream *rq);

struct conn {
	nghttp2_session *client, *server;
	struct h2obs *obs;
	const struct pattern *pat;
	size_t pat_i;
	respond_fn *respond;
	bool pad;
	uint64_t c2s_bytes, s2c_bytes;
	/* frames seen on the wire (types per direction, DATA sizes) */
	unsigned frame_types[2][16];
	size_t max_data_frame;
	int32_t data_order[4096];
	size_t n_data_order;
	uint32_t c_headers_len[256]; /* the client's HEADERS frames */
	size_t n_c_headers;
	uint8_t head[2][9];
	size_t head_have[2];
	uint64_t skip[2];
	struct srv_stream srv[MAX_SID];
	struct cli_stream cli[MAX_SID];
	struct rec recs[MAX_RECS];
	size_t n_recs;
};

static void sink_exchange(void *ctx, const struct http_exchange *x)
{
	struct conn *c = ctx;
	assert_true(c->n_recs < MAX_RECS);
	struct rec *r = &c->recs[c->n_recs++];
	r->j = json_object();
	assert_int_equal(http_exchange_to_json(x, NULL, r->j), 0);
	r->error = x->error ? r->err : NULL;
	if (x->error)
		snprintf(r->err, sizeof(r->err), "%s", x->error);
	snprintf(r->detail, sizeof(r->detail), "%s", x->error_detail);
	r->sid = x->stream_id;
	r->req_complete = x->req.complete;
	r->resp_complete = x->resp.complete;
}

/* Walks the frame headers of one direction (after the preface) to count
 * frame types on the wire. */
static void wire_scan(struct conn *c, int d, const uint8_t *p, size_t n)
{
	while (n) {
		if (c->skip[d]) {
			size_t k = c->skip[d] < n ? (size_t)c->skip[d] : n;
			c->skip[d] -= k;
			p += k;
			n -= k;
			continue;
		}
		c->head[d][c->head_have[d]++] = *p++;
		n--;
		if (c->head_have[d] < 9)
			continue;
		const uint8_t *h = c->head[d];
		uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
		c->frame_types[d][h[3] & 15]++;
		if (h[3] == 1 && d == 0 && c->n_c_headers < 256)
			c->c_headers_len[c->n_c_headers++] = len;
		if (h[3] == 0 && d == 1) {
			if (len > c->max_data_frame)
				c->max_data_frame = len;
			if (c->n_data_order < 4096)
				c->data_order[c->n_data_order++] =
					(int32_t)((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 |
						  (uint32_t)h[7] << 8 | h[8]);
		}
		c->head_have[d] = 0;
		c->skip[d] = len;
	}
}

static void feed(struct conn *c, int d, const uint8_t *p, size_t n)
{
	if (d == 0) {
		/* the client's preface is not a frame */
		size_t pre = c->c2s_bytes < 24 ? 24 - (size_t)c->c2s_bytes : 0;
		if (pre > n)
			pre = n;
		wire_scan(c, 0, p + pre, n - pre);
		c->c2s_bytes += n;
	} else {
		wire_scan(c, 1, p, n);
		c->s2c_bytes += n;
	}
	while (n) {
		size_t k = c->pat->v[c->pat_i++ % c->pat->n];
		if (k > n)
			k = n;
		(d == 0 ? h2obs_client : h2obs_server)(c->obs, p, k);
		p += k;
		n -= k;
	}
}

/* Runs both sessions until neither has anything to send. */
static void pump(struct conn *c)
{
	for (int round = 0; round < 1000000; round++) {
		bool moved = false;
		const uint8_t *data;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(c->client, &data)) > 0) {
			moved = true;
			feed(c, 0, data, (size_t)n);
			assert_int_equal(nghttp2_session_mem_recv(c->server, data, (size_t)n), n);
		}
		assert_true(n >= 0);
		while ((n = nghttp2_session_mem_send(c->server, &data)) > 0) {
			moved = true;
			feed(c, 1, data, (size_t)n);
			assert_int_equal(nghttp2_session_mem_recv(c->client, data, (size_t)n), n);
		}
		assert_true(n >= 0);
		if (!moved)
			return;
	}
	fail_msg("sessions never went quiet");
}

/* -- server callbacks -- */

static int srv_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct conn *c = ud;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
		assert_true(f->hd.stream_id < MAX_SID);
		memset(&c->srv[f->hd.stream_id], 0, sizeof(c->srv[0]));
	}
	return 0;
}

static int srv_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		      size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		      void *ud)
{
	struct conn *c = ud;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct srv_stream *rq = &c->srv[f->hd.stream_id];
	if (namelen == 5 && memcmp(name, ":path", 5) == 0 && valuelen < sizeof(rq->path))
		memcpy(rq->path, value, valuelen);
	if (namelen == 6 && memcmp(name, "expect", 6) == 0)
		rq->expect_100 = true;
	return 0;
}

static int srv_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
		    void *ud)
{
	struct conn *c = ud;
	c->srv[sid].body_in += len;
	return 0;
}

static int srv_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct conn *c = ud;
	int32_t sid = f->hd.stream_id;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST &&
	    c->srv[sid].expect_100) {
		const nghttp2_nv cont[] = { NV(":status", "100") };
		assert_int_equal(
			nghttp2_submit_headers(s, NGHTTP2_FLAG_NONE, sid, NULL, cont, 1, NULL), 0);
	}
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && c->respond)
		c->respond(c, sid, &c->srv[sid]);
	return 0;
}

/* -- client callbacks -- */

static int cli_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
		    void *ud)
{
	struct conn *c = ud;
	c->cli[sid].body_in += len;
	return 0;
}

static int cli_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct conn *c = ud;
	int32_t sid = f->hd.stream_id;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_RESPONSE &&
	    c->cli[sid].rst_on_headers)
		assert_int_equal(
			nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL), 0);
	return 0;
}

static int cli_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	struct conn *c = ud;
	c->cli[sid].closed = true;
	c->cli[sid].close_code = code;
	return 0;
}

/* Padded length: cycles through no padding, an empty pad, and more. */
static ssize_t pad_select(nghttp2_session *s, const nghttp2_frame *f, size_t max, void *ud)
{
	size_t want = f->hd.length + (f->hd.length % 3 == 0 ? 0 : 1 + f->hd.length % 61);
	return (ssize_t)(want < max ? want : max);
}

static ssize_t big_frames(nghttp2_session *s, uint8_t type, int32_t sid, int32_t conn_window,
			  int32_t stream_window, uint32_t remote_max, void *ud)
{
	int32_t w = conn_window < stream_window ? conn_window : stream_window;
	return w < (int32_t)remote_max ? w : (ssize_t)remote_max;
}

struct conn_opts {
	size_t body_cap;
	size_t max_streams;
	bool pad;
	bool big_frames; /* server sends DATA up to the client's max */
	const nghttp2_settings_entry *client_settings, *server_settings;
	size_t n_client_settings, n_server_settings;
	size_t client_deflate_table; /* 0: nghttp2's default */
};

static struct conn *conn_new(const struct pattern *pat, const struct conn_opts *opt)
{
	struct conn *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->pat = pat;
	struct h2obs_config cfg = {
		.sink = { .exchange = sink_exchange, .ctx = c },
		.body_cap = opt && opt->body_cap ? opt->body_cap : HTTPFLOW_DEFAULT_BODY_CAP,
		.max_streams = opt ? opt->max_streams : 0,
	};
	c->obs = h2obs_new(&cfg);
	assert_non_null(c->obs);

	nghttp2_session_callbacks *cb;
	assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, srv_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, srv_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, srv_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, srv_frame);
	if (opt && opt->pad)
		nghttp2_session_callbacks_set_select_padding_callback(cb, pad_select);
	if (opt && opt->big_frames)
		nghttp2_session_callbacks_set_data_source_read_length_callback(cb, big_frames);
	assert_int_equal(nghttp2_session_server_new(&c->server, cb, c), 0);
	nghttp2_session_callbacks_del(cb);

	assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cli_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cli_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, cli_close);
	if (opt && opt->pad)
		nghttp2_session_callbacks_set_select_padding_callback(cb, pad_select);
	nghttp2_option *o;
	assert_int_equal(nghttp2_option_new(&o), 0);
	if (opt && opt->client_deflate_table)
		nghttp2_option_set_max_deflate_dynamic_table_size(o, opt->client_deflate_table);
	assert_int_equal(nghttp2_session_client_new2(&c->client, cb, c, o), 0);
	nghttp2_option_del(o);
	nghttp2_session_callbacks_del(cb);

	assert_int_equal(nghttp2_submit_settings(c->client, NGHTTP2_FLAG_NONE,
						 opt ? opt->client_settings : NULL,
						 opt ? opt->n_client_settings : 0),
			 0);
	assert_int_equal(nghttp2_submit_settings(c->server, NGHTTP2_FLAG_NONE,
						 opt ? opt->server_settings : NULL,
						 opt ? opt->n_server_settings : 0),
			 0);
	return c;
}

static void conn_free(struct conn *c)
{
	for (size_t i = 0; i < c->n_recs; i++)
		json_decref(c->recs[i].j);
	h2obs_free(c->obs);
	nghttp2_session_del(c->client);
	nghttp2_session_del(c->server);
	free(c);
}

static struct rec *rec_for(struct conn *c, uint32_t sid)
{
	for (size_t i = 0; i < c->n_recs; i++)
		if (c->recs[i].sid == sid)
			return &c->recs[i];
	fail_msg("no record for stream %u", (unsigned)sid);
	return NULL;
}

/* -- requests and responses -- */

static int32_t get(struct conn *c, const char *path)
{
	nghttp2_nv nv[] = {
		NV(":method", "GET"),
		NV(":scheme", "https"),
		NV(":authority", "example.com"),
		{ (uint8_t *)":path", (uint8_t *)path, 5, strlen(path), NGHTTP2_NV_FLAG_NONE },
		NV("user-agent", "h2obs-test/1"),
	};
	int32_t sid = nghttp2_submit_request(c->client, NULL, nv, 5, NULL, NULL);
	assert_true(sid > 0);
	return sid;
}

static void respond_with(struct conn *c, int32_t sid, const char *status, size_t len, unsigned seed,
			 const nghttp2_nv *trailers, size_t n_trailers)
{
	nghttp2_nv nv[] = {
		{ (uint8_t *)":status", (uint8_t *)status, 7, strlen(status),
		  NGHTTP2_NV_FLAG_NONE },
		NV("content-type", "text/plain"),
		NV("server", "h2obs-test-server"),
	};
	struct body_src *b = &c->srv[sid].out;
	*b = (struct body_src){
		.len = len, .seed = seed, .trailers = trailers, .n_trailers = n_trailers
	};
	nghttp2_data_provider prd = { .source.ptr = b, .read_callback = body_read };
	assert_int_equal(
		nghttp2_submit_response(c->server, sid, nv, 3, len || n_trailers ? &prd : NULL), 0);
}

/* Answers /size/N with N body bytes (seeded by the stream id). */
static void respond_size(struct conn *c, int32_t sid, struct srv_stream *rq)
{
	size_t len = 0;
	if (strncmp(rq->path, "/size/", 6) == 0)
		len = strtoul(rq->path + 6, NULL, 10);
	respond_with(c, sid, "200", len, (unsigned)sid, NULL, 0);
}

/* -- JSON checks -- */

static void assert_json(const json_t *got, const char *expect)
{
	json_error_t err;
	json_t *e = json_loads(expect, JSON_DECODE_ANY, &err);
	if (!e)
		fail_msg("bad expectation %s: %s", expect, err.text);
	if (!got || !json_equal(got, e)) {
		char *g = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		print_error("got      %s\nexpected %s\n", g ? g : "(nothing)", expect);
		free(g);
		json_decref(e);
		fail();
	}
	json_decref(e);
}

static const json_t *at(const json_t *j, const char *path)
{
	char key[64];
	while (j && *path) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);
		assert_true(n < sizeof(key));
		memcpy(key, path, n);
		key[n] = '\0';
		j = json_object_get(j, key);
		path += n + (dot ? 1 : 0);
	}
	return j;
}

static void assert_key(const json_t *rec, const char *path, const char *expect)
{
	const json_t *j = at(rec, path);
	if (!j)
		fail_msg("no key %s", path);
	assert_json(j, expect);
}

static void assert_body(const json_t *rec, const char *path, unsigned seed, size_t kept,
			uint64_t size)
{
	const json_t *b = at(rec, path);
	assert_non_null(b);
	assert_int_equal(json_integer_value(json_object_get(b, "size")), size);
	assert_int_equal(json_is_true(json_object_get(b, "truncated")), size > kept);
	const char *text = json_string_value(json_object_get(b, "text"));
	assert_non_null(text);
	assert_int_equal(strlen(text), kept);
	char *want = body_text(seed, kept);
	assert_memory_equal(text, want, kept);
	free(want);
}

static void assert_timings(const json_t *rec, bool response)
{
	const json_t *t = json_object_get(rec, "timings");
	assert_true(json_is_string(json_object_get(t, "start")));
	assert_true(json_is_string(json_object_get(t, "end")));
	assert_true(json_is_string(json_object_get(t, "response_start")) == response);
}

static const char *get_headers_json(const char *path)
{
	static char buf[512];
	snprintf(buf, sizeof(buf),
		 "[[\":method\",\"GET\"],[\":scheme\",\"https\"],[\":authority\",\"example.com\"],"
		 "[\":path\",\"%s\"],[\"user-agent\",\"h2obs-test/1\"]]",
		 path);
	return buf;
}

#define RESP_HEADERS(status)                                                                       \
	"[[\":status\",\"" status "\"],[\"content-type\",\"text/plain\"],"                         \
	"[\"server\",\"h2obs-test-server\"]]"

/* A complete GET of /size/N on stream sid. */
static void assert_get_record(struct conn *c, int32_t sid, size_t len, size_t cap)
{
	struct rec *r = rec_for(c, (uint32_t)sid);
	char path[64], url[96];
	snprintf(path, sizeof(path), "/size/%zu", len);
	snprintf(url, sizeof(url), "\"https://example.com%s\"", path);
	assert_null(r->error);
	assert_true(r->req_complete && r->resp_complete);
	assert_key(r->j, "http_version", "\"HTTP/2\"");
	char sidj[16];
	snprintf(sidj, sizeof(sidj), "%d", sid);
	assert_key(r->j, "stream_id", sidj);
	assert_key(r->j, "method", "\"GET\"");
	assert_key(r->j, "url", url);
	assert_key(r->j, "request.headers", get_headers_json(path));
	assert_key(r->j, "request.body", "{\"text\":\"\",\"size\":0,\"truncated\":false}");
	assert_key(r->j, "response.status", "200");
	assert_key(r->j, "response.headers", RESP_HEADERS("200"));
	assert_null(json_object_get(r->j, "informational"));
	assert_null(at(r->j, "response.trailers"));
	assert_body(r->j, "response.body", (unsigned)sid, len < cap ? len : cap, len);
	assert_timings(r->j, true);
}

/* ---- tests ---- */

/* Concurrent streams whose DATA frames interleave on the wire. */
static void test_concurrent_interleaved(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn *c = conn_new(&patterns[p], NULL);
		c->respond = respond_size;
		int32_t sid[5];
		size_t len[5];
		char path[32];
		for (int i = 0; i < 5; i++) {
			len[i] = 30000 + 7919 * (size_t)i;
			snprintf(path, sizeof(path), "/size/%zu", len[i]);
			sid[i] = get(c, path);
		}
		pump(c);
		assert_false(h2obs_failed(c->obs));
		assert_int_equal(c->n_recs, 5);
		for (int i = 0; i < 5; i++) {
			assert_int_equal(c->cli[sid[i]].body_in, len[i]);
			assert_get_record(c, sid[i], len[i], HTTPFLOW_DEFAULT_BODY_CAP);
		}
		/* the server's DATA frames really alternated between streams */
		size_t switches = 0;
		for (size_t i = 1; i < c->n_data_order; i++)
			switches += c->data_order[i] != c->data_order[i - 1];
		assert_true(switches >= 8);
		struct h2obs_stats st = h2obs_stats(c->obs);
		assert_int_equal(st.streams_seen, 5);
		assert_int_equal(st.emitted, 5);
		assert_int_equal(st.dropped, 0);
		h2obs_finish(c->obs, "shutdown");
		assert_int_equal(c->n_recs, 5);
		conn_free(c);
	}
}

/* Hundreds of streams open at once, finishing in a different order than
 * they opened (the stream table grows and deletes out of order). */
static void test_many_streams(void **state)
{
	struct conn *c = conn_new(&patterns[2], NULL);
	c->respond = respond_size;
	int32_t sid[300];
	char path[32];
	for (int i = 0; i < 300; i++) {
		snprintf(path, sizeof(path), "/size/%d", (i * 7919) % 20000);
		sid[i] = get(c, path);
	}
	pump(c);
	assert_false(h2obs_failed(c->obs));
	assert_int_equal(c->n_recs, 300);
	for (int i = 0; i < 300; i++)
		assert_get_record(c, sid[i], (size_t)(i * 7919) % 20000, HTTPFLOW_DEFAULT_BODY_CAP);
	conn_free(c);
}

static void respond_created(struct conn *c, int32_t sid, struct srv_stream *rq)
{
	respond_with(c, sid, "201", 17, 99, NULL, 0);
}

static int32_t post(struct conn *c, const char *path, size_t len, unsigned seed,
		    const nghttp2_nv *extra, size_t n_extra, const nghttp2_nv *trailers,
		    size_t n_trailers)
{
	nghttp2_nv nv[8] = {
		NV(":method", "POST"),
		NV(":scheme", "https"),
		NV(":authority", "api.example.com:8443"),
		{ (uint8_t *)":path", (uint8_t *)path, 5, strlen(path), NGHTTP2_NV_FLAG_NONE },
	};
	assert_true(n_extra <= 4);
	memcpy(nv + 4, extra, n_extra * sizeof(*extra));
	/* the request body source lives until the stream is done */
	static struct body_src srcs[64];
	static size_t next;
	struct body_src *b = &srcs[next++ % 64];
	*b = (struct body_src){
		.len = len, .seed = seed, .trailers = trailers, .n_trailers = n_trailers
	};
	nghttp2_data_provider prd = { .source.ptr = b, .read_callback = body_read };
	int32_t sid = nghttp2_submit_request(c->client, NULL, nv, 4 + n_extra, &prd, NULL);
	assert_true(sid > 0);
	return sid;
}

static void test_post_body(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn *c = conn_new(&patterns[p], NULL);
		c->respond = respond_created;
		const nghttp2_nv extra[] = { NV("content-type", "text/plain") };
		int32_t sid = post(c, "/upload?x=1", 70000, 5, extra, 1, NULL, 0);
		pump(c);
		assert_int_equal(c->srv[sid].body_in, 70000);
		assert_int_equal(c->n_recs, 1);
		struct rec *r = rec_for(c, (uint32_t)sid);
		assert_null(r->error);
		assert_key(r->j, "method", "\"POST\"");
		assert_key(r->j, "url", "\"https://api.example.com:8443/upload?x=1\"");
		assert_key(r->j, "request.headers",
			   "[[\":method\",\"POST\"],[\":scheme\",\"https\"],"
			   "[\":authority\",\"api.example.com:8443\"],[\":path\",\"/upload?x=1\"],"
			   "[\"content-type\",\"text/plain\"]]");
		assert_body(r->j, "request.body", 5, 70000, 70000);
		assert_key(r->j, "response.status", "201");
		assert_body(r->j, "response.body", 99, 17, 17);
		assert_timings(r->j, true);
		assert_true(json_is_string(at(r->j, "timings.request_end")));
		conn_free(c);
	}
}

/* A body over the cap: the first `cap` bytes kept, the full size counted. */
static void test_body_over_cap(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p += 2) {
		struct conn_opts opt = { .body_cap = 65536 };
		struct conn *c = conn_new(&patterns[p], &opt);
		c->respond = respond_size;
		int32_t sid = get(c, "/size/3000000");
		const nghttp2_nv extra[] = { NV("content-type", "text/plain") };
		int32_t up = post(c, "/up", 100000, 3, extra, 1, NULL, 0);
		pump(c);
		assert_int_equal(c->n_recs, 2);
		assert_get_record(c, sid, 3000000, 65536);
		assert_key(rec_for(c, (uint32_t)sid)->j, "response.body.truncated", "true");
		struct rec *r = rec_for(c, (uint32_t)up);
		assert_body(r->j, "request.body", 3, 65536, 100000);
		conn_free(c);
	}
}

/* gRPC: request and response bodies, then trailers on both sides. */
static const nghttp2_nv grpc_trailers[] = { NV("grpc-status", "0"), NV("grpc-message", "ok") };
static const nghttp2_nv req_trailers[] = { NV("x-checksum", "abc123") };

static void respond_grpc(struct conn *c, int32_t sid, struct srv_stream *rq)
{
	nghttp2_nv nv[] = { NV(":status", "200"), NV("content-type", "application/grpc") };
	struct body_src *b = &c->srv[sid].out;
	*b = (struct body_src){ .len = 100, .seed = 8, .trailers = grpc_trailers, .n_trailers = 2 };
	nghttp2_data_provider prd = { .source.ptr = b, .read_callback = body_read };
	assert_int_equal(nghttp2_submit_response(c->server, sid, nv, 2, &prd), 0);
}

static void test_trailers_grpc(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn *c = conn_new(&patterns[p], NULL);
		c->respond = respond_grpc;
		const nghttp2_nv extra[] = { NV("content-type", "application/grpc"),
					     NV("te", "trailers") };
		int32_t sid = post(c, "/pkg.Service/Call", 40, 4, extra, 2, req_trailers, 1);
		pump(c);
		assert_int_equal(c->n_recs, 1);
		struct rec *r = rec_for(c, (uint32_t)sid);
		assert_null(r->error);
		assert_key(r->j, "url", "\"https://api.example.com:8443/pkg.Service/Call\"");
		assert_body(r->j, "request.body", 4, 40, 40);
		assert_key(r->j, "request.trailers", "[[\"x-checksum\",\"abc123\"]]");
		assert_key(r->j, "response.headers",
			   "[[\":status\",\"200\"],[\"content-type\",\"application/grpc\"]]");
		assert_body(r->j, "response.body", 8, 100, 100);
		assert_key(r->j, "response.trailers",
			   "[[\"grpc-status\",\"0\"],[\"grpc-message\",\"ok\"]]");
		/* the trailers were a second HEADERS frame from the server */
		assert_int_equal(c->frame_types[1][NGHTTP2_HEADERS], 2);
		conn_free(c);
	}
}

static void respond_reset_or_size(struct conn *c, int32_t sid, struct srv_stream *rq)
{
	if (strcmp(rq->path, "/refuse") == 0)
		assert_int_equal(nghttp2_submit_rst_stream(c->server, NGHTTP2_FLAG_NONE, sid,
							   NGHTTP2_REFUSED_STREAM),
				 0);
	else
		respond_size(c, sid, rq);
}

/* RST_STREAM from either side ends that stream only. */
static void test_rst_stream(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn *c = conn_new(&patterns[p], NULL);
		c->respond = respond_reset_or_size;
		int32_t cancel = get(c, "/size/500000");
		c->cli[cancel].rst_on_headers = true;
		int32_t refused = get(c, "/refuse");
		int32_t ok = get(c, "/size/20000");
		pump(c);
		assert_true(c->cli[cancel].closed);
		assert_int_equal(c->cli[refused].close_code, NGHTTP2_REFUSED_STREAM);
		assert_int_equal(c->n_recs, 3);

		struct rec *r = rec_for(c, (uint32_t)cancel);
		assert_string_equal(r->error, "client_reset");
		assert_string_equal(r->detail, "CANCEL");
		assert_key(r->j, "response.status", "200");
		assert_key(r->j, "url", "\"https://example.com/size/500000\"");
		assert_false(r->resp_complete);

		r = rec_for(c, (uint32_t)refused);
		assert_string_equal(r->error, "upstream_reset");
		assert_string_equal(r->detail, "REFUSED_STREAM");
		assert_key(r->j, "response", "null");
		assert_true(r->req_complete);
		assert_timings(r->j, false);

		assert_get_record(c, ok, 20000, HTTPFLOW_DEFAULT_BODY_CAP);
		conn_free(c);
	}
}

/* The server answers streams 1 and 3 and sends GOAWAY with last stream 3:
 * 5 and 7 were never processed. */
static void respond_goaway(struct conn *c, int32_t sid, struct srv_stream *rq)
{
	if (sid <= 3)
		respond_size(c, sid, rq);
	if (sid == 7)
		assert_int_equal(nghttp2_submit_goaway(c->server, NGHTTP2_FLAG_NONE, 3,
						       NGHTTP2_NO_ERROR, NULL, 0),
				 0);
}

static void test_goaway(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn *c = conn_new(&patterns[p], NULL);
		c->respond = respond_goaway;
		for (int i = 0; i < 4; i++)
			assert_int_equal(get(c, i < 2 ? "/size/1000" : "/size/0"), 1 + 2 * i);
		pump(c);
		assert_int_equal(c->frame_types[1][NGHTTP2_GOAWAY], 1);
		assert_int_equal(c->n_recs, 4);
		assert_get_record(c, 1, 1000, HTTPFLOW_DEFAULT_BODY_CAP);
		assert_get_record(c, 3, 1000, HTTPFLOW_DEFAULT_BODY_CAP);
		for (uint32_t sid = 5; sid <= 7; sid += 2) {
			struct rec *r = rec_for(c, sid);
			assert_string_equal(r->error, "connection_closed");
			assert_string_equal(r->detail, "GOAWAY NO_ERROR, last stream 3");
			assert_key(r->j, "response", "null");
			assert_key(r->j, "method", "\"GET\"");
		}
		conn_free(c);
	}
}

/* Expect: 100-continue: the interim response is listed, not recorded as
 * the response head. */
static void test_100_continue(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn *c = conn_new(&patterns[p], NULL);
		c->respond = respond_created;
		const nghttp2_nv extra[] = { NV("expect", "100-continue") };
		int32_t sid = post(c, "/big", 3000, 6, extra, 1, NULL, 0);
		pump(c);
		assert_int_equal(c->frame_types[1][NGHTTP2_HEADERS], 2);
		assert_int_equal(c->n_recs, 1);
		struct rec *r = rec_for(c, (uint32_t)sid);
		assert_null(r->error);
		assert_key(r->j, "informational", "[100]");
		assert_key(r->j, "response.status", "201");
		assert_key(r->j, "response.headers", RESP_HEADERS("201"));
		assert_body(r->j, "request.body", 6, 3000, 3000);
		conn_free(c);
	}
}

/* The same headers on many requests: after the first, HPACK sends them
 * as dynamic table indexes, which the observer must resolve. */
static void hpack_run(const struct conn_opts *opt, size_t n_req, bool expect_small)
{
	static const char cookie[] =
		"session=0123456789abcdef0123456789abcdef; prefs=dark-mode-compact-view; "
		"tracking=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	char bigval[20][400];
	for (int i = 0; i < 20; i++) {
		for (int k = 0; k < 399; k++)
			bigval[i][k] = (char)('A' + (i * 31 + k * 17) % 58);
		bigval[i][399] = '\0';
	}
	char bigname[20][16];
	struct conn *c = conn_new(&patterns[2], opt);
	c->respond = respond_size;
	for (size_t i = 0; i < n_req; i++) {
		nghttp2_nv nv[32] = {
			NV(":method", "GET"),
			NV(":scheme", "https"),
			NV(":authority", "example.com"),
			NV(":path", "/size/10"),
			NV("user-agent", "h2obs-test/1"),
			{ (uint8_t *)"cookie", (uint8_t *)cookie, 6, sizeof(cookie) - 1,
			  NGHTTP2_NV_FLAG_NONE },
		};
		size_t n = 6;
		if (opt && opt->client_deflate_table)
			for (int k = 0; k < 20; k++, n++) {
				snprintf(bigname[k], sizeof(bigname[k]), "x-big-%d", k);
				nv[n] = (nghttp2_nv){ (uint8_t *)bigname[k], (uint8_t *)bigval[k],
						      strlen(bigname[k]), 399,
						      NGHTTP2_NV_FLAG_NONE };
			}
		assert_true(nghttp2_submit_request(c->client, NULL, nv, n, NULL, NULL) > 0);
		pump(c);
		assert_int_equal(c->n_recs, i + 1);
		struct rec *r = &c->recs[i];
		assert_null(r->error);
		assert_int_equal(r->sid, 2 * i + 1);
		const json_t *h = at(r->j, "request.headers");
		assert_int_equal(json_array_size(h), n);
		for (size_t k = 0; k < n; k++) {
			const json_t *pair = json_array_get(h, k);
			assert_int_equal(json_string_length(json_array_get(pair, 0)),
					 nv[k].namelen);
			assert_memory_equal(json_string_value(json_array_get(pair, 0)), nv[k].name,
					    nv[k].namelen);
			assert_int_equal(json_string_length(json_array_get(pair, 1)),
					 nv[k].valuelen);
			assert_memory_equal(json_string_value(json_array_get(pair, 1)), nv[k].value,
					    nv[k].valuelen);
		}
		assert_key(r->j, "response.headers", RESP_HEADERS("200"));
		assert_body(r->j, "response.body", (unsigned)r->sid, 10, 10);
	}
	assert_false(h2obs_failed(c->obs));
	/* the first request's block against the last one's */
	assert_int_equal(c->n_c_headers, n_req);
	uint32_t first = c->c_headers_len[0], last = c->c_headers_len[n_req - 1];
	print_message("HEADERS block: first %u bytes, last %u\n", (unsigned)first, (unsigned)last);
	if (expect_small)
		assert_true(last * 8 < first);
	else
		assert_true(last * 4 > first * 3);
	conn_free(c);
}

static void test_hpack_dynamic_table(void **state)
{
	/* with the default 4 KiB table: after the first request, every field
	 * is one index */
	hpack_run(NULL, 60, true);
	/* a dynamic table of 64 KiB the server allowed and the client used:
	 * 20 fields of 400 bytes only fit after the SETTINGS ACK */
	static const nghttp2_settings_entry big[] = { { NGHTTP2_SETTINGS_HEADER_TABLE_SIZE,
							65536 } };
	struct conn_opts opt = { .server_settings = big,
				 .n_server_settings = 1,
				 .client_deflate_table = 65536 };
	hpack_run(&opt, 30, true);
}

static void test_hpack_table_size_zero(void **state)
{
	/* the server allows no dynamic table: the client must say so (a
	 * table size update) and send everything literally */
	static const nghttp2_settings_entry zero[] = { { NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0 } };
	struct conn_opts opt = { .server_settings = zero, .n_server_settings = 1 };
	hpack_run(&opt, 20, false);
}

/* Padded HEADERS and DATA from both sides, HEADERS with priority fields. */
static void test_padding_priority(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn_opts opt = { .pad = true };
		struct conn *c = conn_new(&patterns[p], &opt);
		c->respond = respond_size;
		nghttp2_priority_spec pri;
		nghttp2_priority_spec_init(&pri, 0, 200, 0);
		nghttp2_nv nv[] = {
			NV(":method", "GET"),
			NV(":scheme", "https"),
			NV(":authority", "example.com"),
			NV(":path", "/size/50000"),
			NV("user-agent", "h2obs-test/1"),
		};
		int32_t s1 = nghttp2_submit_request(c->client, &pri, nv, 5, NULL, NULL);
		const nghttp2_nv extra[] = { NV("content-type", "text/plain") };
		int32_t s2 = post(c, "/p", 33333, 2, extra, 1, NULL, 0);
		pump(c);
		assert_int_equal(c->n_recs, 2);
		assert_get_record(c, s1, 50000, HTTPFLOW_DEFAULT_BODY_CAP);
		assert_body(rec_for(c, (uint32_t)s2)->j, "request.body", 2, 33333, 33333);
		conn_free(c);
	}
}

/* The client raises SETTINGS_MAX_FRAME_SIZE; the server then sends DATA
 * frames far over 16 KiB. */
static void test_max_frame_size(void **state)
{
	static const nghttp2_settings_entry cs[] = {
		{ NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 1 << 20 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1 << 24) },
	};
	for (size_t p = 0; p < N_PATTERNS; p += 2) {
		struct conn_opts opt = { .client_settings = cs,
					 .n_client_settings = 2,
					 .big_frames = true,
					 .body_cap = 4 << 20 };
		struct conn *c = conn_new(&patterns[p], &opt);
		c->respond = respond_size;
		assert_int_equal(nghttp2_session_set_local_window_size(c->client, NGHTTP2_FLAG_NONE,
								       0, 1 << 24),
				 0);
		int32_t sid = get(c, "/size/3000000");
		pump(c);
		assert_true(c->max_data_frame > 500000);
		assert_int_equal(c->n_recs, 1);
		assert_get_record(c, sid, 3000000, 4 << 20);
		conn_free(c);
	}
}

/* Header blocks over 16 KiB span HEADERS and CONTINUATION frames. */
static void respond_big_headers(struct conn *c, int32_t sid, struct srv_stream *rq)
{
	static char vals[12][2001];
	static char names[12][16];
	nghttp2_nv nv[13] = { NV(":status", "200") };
	for (int i = 0; i < 12; i++) {
		for (int k = 0; k < 2000; k++)
			vals[i][k] = (char)('!' + (i * 13 + k * k * 7) % 94);
		snprintf(names[i], sizeof(names[i]), "x-resp-%d", i);
		nv[i + 1] = (nghttp2_nv){ (uint8_t *)names[i], (uint8_t *)vals[i], strlen(names[i]),
					  2000, NGHTTP2_NV_FLAG_NONE };
	}
	assert_int_equal(nghttp2_submit_response(c->server, sid, nv, 13, NULL), 0);
}

static void test_continuation(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn *c = conn_new(&patterns[p], NULL);
		c->respond = respond_big_headers;
		static char vals[20][2001];
		static char names[20][16];
		nghttp2_nv nv[24] = {
			NV(":method", "GET"),
			NV(":scheme", "https"),
			NV(":authority", "example.com"),
			NV(":path", "/h"),
		};
		for (int i = 0; i < 20; i++) {
			for (int k = 0; k < 2000; k++)
				vals[i][k] = (char)('!' + (i * 31 + k * k * 3 + k) % 94);
			snprintf(names[i], sizeof(names[i]), "x-req-%d", i);
			nv[4 + i] = (nghttp2_nv){ (uint8_t *)names[i], (uint8_t *)vals[i],
						  strlen(names[i]), 2000, NGHTTP2_NV_FLAG_NONE };
		}
		int32_t sid = nghttp2_submit_request(c->client, NULL, nv, 24, NULL, NULL);
		assert_true(sid > 0);
		pump(c);
		assert_true(c->frame_types[0][NGHTTP2_CONTINUATION] >= 1);
		assert_true(c->frame_types[1][NGHTTP2_CONTINUATION] >= 1);
		assert_int_equal(c->n_recs, 1);
		struct rec *r = rec_for(c, (uint32_t)sid);
		assert_null(r->error);
		const json_t *h = at(r->j, "request.headers");
		assert_int_equal(json_array_size(h), 24);
		for (int i = 0; i < 20; i++) {
			const json_t *pair = json_array_get(h, (size_t)(4 + i));
			assert_string_equal(json_string_value(json_array_get(pair, 0)), names[i]);
			assert_string_equal(json_string_value(json_array_get(pair, 1)), vals[i]);
		}
		h = at(r->j, "response.headers");
		assert_int_equal(json_array_size(h), 13);
		assert_string_equal(json_string_value(json_array_get(json_array_get(h, 12), 0)),
				    "x-resp-11");
		assert_int_equal(json_string_length(json_array_get(json_array_get(h, 12), 1)),
				 2000);
		assert_key(r->j, "response.status", "200");
		conn_free(c);
	}
}

/* PUSH_PROMISE: the promised stream is an exchange of its own. */
static void respond_push(struct conn *c, int32_t sid, struct srv_stream *rq)
{
	nghttp2_nv pnv[] = {
		NV(":method", "GET"),
		NV(":scheme", "https"),
		NV(":authority", "example.com"),
		NV(":path", "/size/777"),
	};
	int32_t promised =
		nghttp2_submit_push_promise(c->server, NGHTTP2_FLAG_NONE, sid, pnv, 4, NULL);
	assert_true(promised > 0);
	memcpy(c->srv[promised].path, "/size/777", 10);
	respond_size(c, promised, &c->srv[promised]);
	respond_size(c, sid, rq);
}

static void test_push_promise(void **state)
{
	for (size_t p = 0; p < N_PATTERNS; p++) {
		struct conn *c = conn_new(&patterns[p], NULL);
		c->respond = respond_push;
		int32_t sid = get(c, "/size/100");
		pump(c);
		assert_int_equal(c->frame_types[1][NGHTTP2_PUSH_PROMISE], 1);
		assert_int_equal(c->n_recs, 2);
		assert_get_record(c, sid, 100, HTTPFLOW_DEFAULT_BODY_CAP);
		struct rec *r = rec_for(c, 2);
		assert_null(r->error);
		assert_key(r->j, "stream_id", "2");
		assert_key(r->j, "url", "\"https://example.com/size/777\"");
		assert_key(r->j, "request.headers",
			   "[[\":method\",\"GET\"],[\":scheme\",\"https\"],[\":authority\","
			   "\"example.com\"],"
			   "[\":path\",\"/size/777\"]]");
		assert_key(r->j, "response.status", "200");
		assert_body(r->j, "response.body", 2, 777, 777);
		conn_free(c);
	}
}

/* Unanswered streams are emitted by h2obs_finish with its reason. */
static void test_finish(void **state)
{
	struct conn *c = conn_new(&patterns[1], NULL);
	int32_t sid = get(c, "/size/5");
	pump(c);
	assert_int_equal(c->n_recs, 0);
	h2obs_finish(c->obs, "shutdown");
	assert_int_equal(c->n_recs, 1);
	struct rec *r = rec_for(c, (uint32_t)sid);
	assert_string_equal(r->error, "shutdown");
	assert_true(r->req_complete);
	assert_key(r->j, "response", "null");
	assert_key(r->j, "url", "\"https://example.com/size/5\"");
	/* nothing more after finishing */
	h2obs_finish(c->obs, "shutdown");
	get(c, "/size/6");
	pump(c);
	assert_int_equal(c->n_recs, 1);
	conn_free(c);
}

/* Beyond max_streams open streams, new ones are counted and skipped, yet
 * their header blocks still feed the HPACK state. */
static void test_stream_cap(void **state)
{
	struct conn_opts opt = { .max_streams = 2 };
	struct conn *c = conn_new(&patterns[2], &opt);
	c->respond = respond_size;
	int32_t sid[4];
	for (int i = 0; i < 4; i++)
		sid[i] = get(c, "/size/64");
	pump(c);
	assert_int_equal(c->n_recs, 2);
	assert_get_record(c, sid[0], 64, HTTPFLOW_DEFAULT_BODY_CAP);
	assert_get_record(c, sid[1], 64, HTTPFLOW_DEFAULT_BODY_CAP);
	int32_t again = get(c, "/size/64");
	pump(c);
	assert_int_equal(c->n_recs, 3);
	assert_get_record(c, again, 64, HTTPFLOW_DEFAULT_BODY_CAP);
	struct h2obs_stats st = h2obs_stats(c->obs);
	assert_int_equal(st.streams_seen, 5);
	assert_int_equal(st.dropped, 2);
	assert_int_equal(st.emitted, 3);
	conn_free(c);
}

/* ---- crafted byte streams ---- */

static struct conn *crafted_conn(void)
{
	struct conn *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	struct h2obs_config cfg = {
		.sink = { .exchange = sink_exchange, .ctx = c },
		.body_cap = 1024,
		.default_authority = "10.0.0.5:8443",
	};
	c->obs = h2obs_new(&cfg);
	assert_non_null(c->obs);
	return c;
}

static void crafted_free(struct conn *c)
{
	for (size_t i = 0; i < c->n_recs; i++)
		json_decref(c->recs[i].j);
	h2obs_free(c->obs);
	free(c);
}

static size_t frame(uint8_t *out, uint32_t len, uint8_t type, uint8_t flags, uint32_t sid,
		    const void *payload)
{
	out[0] = (uint8_t)(len >> 16);
	out[1] = (uint8_t)(len >> 8);
	out[2] = (uint8_t)len;
	out[3] = type;
	out[4] = flags;
	out[5] = (uint8_t)(sid >> 24);
	out[6] = (uint8_t)(sid >> 16);
	out[7] = (uint8_t)(sid >> 8);
	out[8] = (uint8_t)sid;
	if (payload)
		memcpy(out + 9, payload, len);
	return 9 + len;
}

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* Client preface + empty SETTINGS, server empty SETTINGS. */
static void crafted_start(struct conn *c)
{
	uint8_t b[64];
	h2obs_client(c->obs, (const uint8_t *)preface, 24);
	h2obs_client(c->obs, b, frame(b, 0, NGHTTP2_SETTINGS, 0, 0, NULL));
	h2obs_server(c->obs, b, frame(b, 0, NGHTTP2_SETTINGS, 0, 0, NULL));
}

/* A request head with literal fields only (RFC 7541 6.2.2, no indexing),
 * no :authority and no Host: the default authority stands in. */
static size_t literal_get(uint8_t *out, uint32_t sid, uint8_t flags)
{
	static const uint8_t block[] = {
		0x82,                 /* :method GET (static 2) */
		0x87,                 /* :scheme https (static 7) */
		0x04, 0x02, '/', 'x', /* :path "/x", name static 4 */
	};
	return frame(out, sizeof(block), NGHTTP2_HEADERS, flags, sid, block);
}

static void test_crafted_default_authority(void **state)
{
	struct conn *c = crafted_conn();
	uint8_t b[128];
	crafted_start(c);
	h2obs_client(c->obs, b,
		     literal_get(b, 1, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM));
	/* response: :status 204 (static index 9), END_HEADERS | END_STREAM */
	const uint8_t resp[] = { 0x89 };
	h2obs_server(c->obs, b, frame(b, 1, NGHTTP2_HEADERS, 0x5, 1, resp));
	assert_int_equal(c->n_recs, 1);
	assert_null(c->recs[0].error);
	assert_key(c->recs[0].j, "url", "\"https://10.0.0.5:8443/x\"");
	assert_key(c->recs[0].j, "response.status", "204");
	crafted_free(c);
}

static void test_crafted_errors(void **state)
{
	uint8_t b[64];
	struct conn *c;

	/* not the preface */
	c = crafted_conn();
	h2obs_client(c->obs, (const uint8_t *)"GET / HTTP/1.1\r\n", 16);
	assert_true(h2obs_failed(c->obs));
	assert_int_equal(c->n_recs, 1);
	assert_string_equal(c->recs[0].error, "parse_error");
	assert_string_equal(c->recs[0].detail, "client: not the HTTP/2 connection preface");
	h2obs_client(c->obs, (const uint8_t *)preface, 24);
	h2obs_finish(c->obs, "shutdown");
	assert_int_equal(c->n_recs, 1);
	crafted_free(c);

	/* the server's first frame must be SETTINGS */
	c = crafted_conn();
	h2obs_server(c->obs, b, frame(b, 8, NGHTTP2_PING, 0, 0, "12345678"));
	assert_true(h2obs_failed(c->obs));
	assert_string_equal(c->recs[0].detail, "server: first frame is type 6, not SETTINGS");
	crafted_free(c);

	/* a frame over the default 16 KiB limit */
	c = crafted_conn();
	crafted_start(c);
	frame(b, 16385, NGHTTP2_DATA, 0, 1, NULL);
	h2obs_server(c->obs, b, 9);
	assert_true(h2obs_failed(c->obs));
	assert_string_equal(c->recs[0].detail,
			    "server: frame type 0 of 16385 bytes over max frame size 16384");
	crafted_free(c);

	/* an HPACK error (index 0) with a stream open: that stream carries it */
	c = crafted_conn();
	crafted_start(c);
	h2obs_client(c->obs, b,
		     literal_get(b, 1, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM));
	const uint8_t bad[] = { 0x80 };
	h2obs_server(c->obs, b, frame(b, 1, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, bad));
	assert_true(h2obs_failed(c->obs));
	assert_int_equal(c->n_recs, 1);
	assert_int_equal(c->recs[0].sid, 1);
	assert_string_equal(c->recs[0].error, "parse_error");
	assert_non_null(strstr(c->recs[0].detail, "server: HPACK on stream 1"));
	assert_key(c->recs[0].j, "method", "\"GET\"");
	crafted_free(c);

	/* padding longer than the frame */
	c = crafted_conn();
	crafted_start(c);
	const uint8_t pad[] = { 200, 'a', 'b' };
	h2obs_client(c->obs, b, frame(b, 3, NGHTTP2_DATA, NGHTTP2_FLAG_PADDED, 1, pad));
	assert_true(h2obs_failed(c->obs));
	assert_string_equal(c->recs[0].detail, "client: padding of 200 bytes in a 3-byte frame");
	crafted_free(c);

	/* a frame between HEADERS and its CONTINUATION */
	c = crafted_conn();
	crafted_start(c);
	h2obs_client(c->obs, b, literal_get(b, 1, 0));
	h2obs_client(c->obs, b, frame(b, 8, NGHTTP2_PING, 0, 0, "12345678"));
	assert_true(h2obs_failed(c->obs));
	assert_string_equal(c->recs[0].detail,
			    "client: frame type 6 inside the header block of stream 1");
	crafted_free(c);

	/* a block cut inside a literal, ended by END_HEADERS */
	c = crafted_conn();
	crafted_start(c);
	const uint8_t cut[] = { 0x04, 0x05, '/' };
	h2obs_client(c->obs, b, frame(b, 3, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, cut));
	assert_true(h2obs_failed(c->obs));
	assert_non_null(strstr(c->recs[0].detail, "client: HPACK on stream 1"));
	crafted_free(c);
}

/* An empty CONTINUATION ends the block; a HEADERS frame carrying only
 * padding and priority opens it. */
static void test_crafted_empty_fragments(void **state)
{
	struct conn *c = crafted_conn();
	uint8_t b[128];
	crafted_start(c);
	/* HEADERS: PADDED | PRIORITY, pad 3, priority 5 bytes, no fragment */
	const uint8_t hp[] = { 3, 0, 0, 0, 0, 15, 0, 0, 0 };
	h2obs_client(c->obs, b,
		     frame(b, sizeof(hp), NGHTTP2_HEADERS,
			   NGHTTP2_FLAG_PADDED | NGHTTP2_FLAG_PRIORITY | NGHTTP2_FLAG_END_STREAM, 1,
			   hp));
	const uint8_t frag[] = { 0x82, 0x87, 0x84, 0x41, 0x01, 'h' }; /* :authority "h" */
	h2obs_client(c->obs, b, frame(b, sizeof(frag), NGHTTP2_CONTINUATION, 0, 1, frag));
	h2obs_client(c->obs, b,
		     frame(b, 0, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1, NULL));
	const uint8_t resp[] = { 0x88 }; /* :status 200 */
	h2obs_server(c->obs, b, frame(b, 1, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, resp));
	const uint8_t data[] = { 2, 'o', 'k', 0, 0 };
	h2obs_server(c->obs, b,
		     frame(b, sizeof(data), NGHTTP2_DATA,
			   NGHTTP2_FLAG_PADDED | NGHTTP2_FLAG_END_STREAM, 1, data));
	assert_false(h2obs_failed(c->obs));
	assert_int_equal(c->n_recs, 1);
	assert_null(c->recs[0].error);
	assert_key(c->recs[0].j, "url", "\"https://h/\"");
	assert_key(c->recs[0].j, "response.body",
		   "{\"text\":\"ok\",\"size\":2,\"truncated\":false}");
	crafted_free(c);
}

/* Random bytes after a valid start: no crash, no hang, at most one error. */
static void test_crafted_garbage(void **state)
{
	uint32_t x = 12345;
	uint8_t buf[4096];
	for (int round = 0; round < 200; round++) {
		struct conn *c = crafted_conn();
		crafted_start(c);
		for (size_t i = 0; i < sizeof(buf); i++) {
			x = x * 1103515245u + 12345u;
			buf[i] = (uint8_t)(x >> 16);
		}
		size_t n = 1 + (x >> 8) % sizeof(buf);
		h2obs_client(c->obs, buf, n / 2);
		h2obs_server(c->obs, buf + n / 2, n - n / 2);
		h2obs_finish(c->obs, "shutdown");
		assert_true(c->n_recs <= 2);
		crafted_free(c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_concurrent_interleaved),
		cmocka_unit_test(test_many_streams),
		cmocka_unit_test(test_post_body),
		cmocka_unit_test(test_body_over_cap),
		cmocka_unit_test(test_trailers_grpc),
		cmocka_unit_test(test_rst_stream),
		cmocka_unit_test(test_goaway),
		cmocka_unit_test(test_100_continue),
		cmocka_unit_test(test_hpack_dynamic_table),
		cmocka_unit_test(test_hpack_table_size_zero),
		cmocka_unit_test(test_padding_priority),
		cmocka_unit_test(test_max_frame_size),
		cmocka_unit_test(test_continuation),
		cmocka_unit_test(test_push_promise),
		cmocka_unit_test(test_finish),
		cmocka_unit_test(test_stream_cap),
		cmocka_unit_test(test_crafted_default_authority),
		cmocka_unit_test(test_crafted_errors),
		cmocka_unit_test(test_crafted_empty_fragments),
		cmocka_unit_test(test_crafted_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
