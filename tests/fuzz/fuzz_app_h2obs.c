/* libFuzzer target for the passive HTTP/2 observer (h2obs).
 *
 * Input: byte 0 picks how bytes reach the observer:
 *   bits 0-1: chunking (0 whole segments, 1 single bytes, 2 a cycle of
 *             mixed sizes, 3 sizes read from the input's own bytes);
 *   bit 7:    the client preface is fed first, so inputs need not hold it.
 * Then segments: one byte whose low bit is the direction (0 client to
 * server, 1 back), two bytes of big-endian length, that many bytes. Every
 * exchange is turned into its JSON record, as the flow writer would, and
 * the records (timings aside) must equal those of a second run fed whole
 * segments: chunking never changes what is recorded.
 *
 * With WGMITM_FUZZ_WRITE_SEEDS=dir, initialisation writes a seed corpus:
 * transcripts of an nghttp2 client and server (GET, POST with body and
 * trailers, padding, server push, resets, large header blocks, a large
 * HPACK table) in this format. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "mitm/h2obs.h"

static bool verbose; /* WGMITM_FUZZ_VERBOSE: print the records */

/* The records of one run, timings left out, to compare runs. */
struct out {
	char *buf;
	size_t len, cap;
};

static void out_add(struct out *o, const char *s, size_t n)
{
	if (o->len + n + 1 > o->cap) {
		o->cap = (o->len + n + 1) * 2;
		o->buf = realloc(o->buf, o->cap);
		if (!o->buf)
			abort();
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len++] = '\n';
}

static void sink_exchange(void *ctx, const struct http_exchange *x)
{
	struct out *out = ctx;
	if (!x->version || !x->scheme)
		abort();
	if (x->req.body.len > x->req.body.cap || x->resp.body.len > x->resp.body.cap)
		abort();
	json_t *rec = json_object();
	if (!rec)
		return;
	if (http_exchange_to_json(x, "fuzz.example:443", rec) == 0) {
		json_object_del(rec, "timings");
		json_object_set_new(rec, "error", json_string(x->error ? x->error : ""));
		json_object_set_new(rec, "detail", json_string(x->error_detail));
		char *s = json_dumps(rec, JSON_COMPACT);
		if (s) {
			if (verbose)
				fprintf(stderr, "%.400s\n", s);
			out_add(out, s, strlen(s));
		}
		free(s);
	}
	json_decref(rec);
}

static const size_t mixed[] = { 1, 3, 9, 2, 17, 5, 64, 7, 1000, 4 };

static void feed(struct h2obs *o, int dir, const uint8_t *p, size_t n, unsigned mode,
		 const uint8_t *sizes, size_t n_sizes, size_t *k)
{
	while (n) {
		size_t c;
		switch (mode) {
		case 0:
			c = n;
			break;
		case 1:
			c = 1;
			break;
		case 2:
			c = mixed[(*k)++ % (sizeof(mixed) / sizeof(mixed[0]))];
			break;
		default:
			c = n_sizes ? 1 + sizes[(*k)++ % n_sizes] % 32 : n;
			break;
		}
		if (c > n)
			c = n;
		(dir ? h2obs_server : h2obs_client)(o, p, c);
		p += c;
		n -= c;
	}
}

/* ---- seeds ---- */

struct transcript {
	uint8_t *buf;
	size_t len, cap;
};

static void put(struct transcript *t, int dir, const uint8_t *p, size_t n)
{
	while (n) {
		size_t c = n > 65535 ? 65535 : n;
		if (t->len + 3 + c > t->cap) {
			t->cap = (t->len + 3 + c) * 2;
			t->buf = realloc(t->buf, t->cap);
			if (!t->buf)
				abort();
		}
		t->buf[t->len++] = (uint8_t)dir;
		t->buf[t->len++] = (uint8_t)(c >> 8);
		t->buf[t->len++] = (uint8_t)c;
		memcpy(t->buf + t->len, p, c);
		t->len += c;
		p += c;
		n -= c;
	}
}

struct seedgen {
	nghttp2_session *client, *server;
	struct transcript t;
	int scenario;
	size_t body_len;
	size_t body_off[64];
};

static ssize_t seed_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
			 nghttp2_data_source *src, void *ud)
{
	struct seedgen *g = ud;
	size_t *off = &g->body_off[sid % 64];
	size_t k = g->body_len - *off < len ? g->body_len - *off : len;
	for (size_t i = 0; i < k; i++)
		buf[i] = (uint8_t)('a' + (*off + i) % 26);
	*off += k;
	if (*off == g->body_len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (g->scenario == 1) {
			static const nghttp2_nv tr[] = {
				{ (uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, 0 },
			};
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			nghttp2_submit_trailer(s, sid, tr, 1);
		}
	}
	return (ssize_t)k;
}

static int seed_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct seedgen *g = ud;
	int32_t sid = f->hd.stream_id;
	if (s != g->server || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
	    (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA))
		return 0;
	static const nghttp2_nv resp[] = {
		{ (uint8_t *)":status", (uint8_t *)"200", 7, 3, 0 },
		{ (uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, 0 },
	};
	nghttp2_data_provider prd = { .read_callback = seed_read };
	if (g->scenario == 3) {
		static const nghttp2_nv push[] = {
			{ (uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0 },
			{ (uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0 },
			{ (uint8_t *)":authority", (uint8_t *)"a.example", 10, 9, 0 },
			{ (uint8_t *)":path", (uint8_t *)"/pushed.css", 5, 11, 0 },
		};
		int32_t p = nghttp2_submit_push_promise(s, 0, sid, push, 4, NULL);
		if (p > 0)
			nghttp2_submit_response(s, p, resp, 2, &prd);
	}
	if (g->scenario == 4 && sid == 3) {
		nghttp2_submit_rst_stream(s, 0, sid, NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	if (g->scenario == 4 && sid == 5)
		nghttp2_submit_goaway(s, 0, 1, NGHTTP2_NO_ERROR, NULL, 0);
	nghttp2_submit_response(s, sid, resp, 2, &prd);
	return 0;
}

static ssize_t seed_pad(nghttp2_session *s, const nghttp2_frame *f, size_t max, void *ud)
{
	size_t want = f->hd.length + 1 + f->hd.length % 17;
	return (ssize_t)(want < max ? want : max);
}

static void seed_pump(struct seedgen *g)
{
	for (int moved = 1; moved;) {
		moved = 0;
		const uint8_t *d;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(g->client, &d)) > 0) {
			moved = 1;
			put(&g->t, 0, d, (size_t)n);
			nghttp2_session_mem_recv(g->server, d, (size_t)n);
		}
		while ((n = nghttp2_session_mem_send(g->server, &d)) > 0) {
			moved = 1;
			put(&g->t, 1, d, (size_t)n);
			nghttp2_session_mem_recv(g->client, d, (size_t)n);
		}
	}
}

static void seed_write(const char *dir, int scenario)
{
	struct seedgen g = { .scenario = scenario, .body_len = scenario == 0 ? 5000 : 300 };
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, seed_frame);
	if (scenario == 2)
		nghttp2_session_callbacks_set_select_padding_callback(cb, seed_pad);
	nghttp2_option *opt;
	nghttp2_option_new(&opt);
	if (scenario == 6)
		nghttp2_option_set_max_deflate_dynamic_table_size(opt, 65536);
	nghttp2_session_client_new2(&g.client, cb, &g, opt);
	nghttp2_session_server_new2(&g.server, cb, &g, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);

	nghttp2_settings_entry cs[] = { { NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 65536 } };
	nghttp2_settings_entry ss[] = { { NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 65536 },
					{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100 } };
	nghttp2_submit_settings(g.client, 0, cs, scenario == 0 ? 1 : 0);
	nghttp2_submit_settings(g.server, 0, ss, scenario == 6 ? 2 : 0);

	static char big[20][1500];
	static char names[20][12];
	for (int i = 0; i < 20; i++) {
		for (int k = 0; k < 1499; k++)
			big[i][k] = (char)('!' + (i * 7 + k * k) % 94);
		snprintf(names[i], sizeof(names[i]), "x-h%d", i);
	}
	for (int r = 0; r < (scenario == 4 ? 3 : 2); r++) {
		nghttp2_nv nv[32] = {
			{ (uint8_t *)":method", (uint8_t *)(scenario == 1 ? "POST" : "GET"), 7,
			  scenario == 1 ? 4 : 3, 0 },
			{ (uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0 },
			{ (uint8_t *)":authority", (uint8_t *)"a.example", 10, 9, 0 },
			{ (uint8_t *)":path", (uint8_t *)"/index.html?q=1", 5, 15, 0 },
			{ (uint8_t *)"user-agent", (uint8_t *)"seed/1", 10, 6, 0 },
		};
		size_t n = 5;
		if (scenario == 5 || scenario == 6)
			for (int i = 0; i < (scenario == 5 ? 12 : 8); i++, n++)
				nv[n] = (nghttp2_nv){ (uint8_t *)names[i], (uint8_t *)big[i],
						      strlen(names[i]), scenario == 5 ? 1499 : 300,
						      0 };
		nghttp2_data_provider prd = { .read_callback = seed_read };
		nghttp2_submit_request(g.client, NULL, nv, n, scenario == 1 ? &prd : NULL, NULL);
		if (scenario != 4)
			seed_pump(&g);
		if (scenario == 5)
			break;
	}
	seed_pump(&g);

	char path[512];
	snprintf(path, sizeof(path), "%s/seed-%d", dir, scenario);
	FILE *f = fopen(path, "wb");
	if (f) {
		uint8_t mode = (uint8_t)(scenario % 4);
		fwrite(&mode, 1, 1, f);
		fwrite(g.t.buf, 1, g.t.len, f);
		fclose(f);
	}
	free(g.t.buf);
	nghttp2_session_del(g.client);
	nghttp2_session_del(g.server);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	verbose = getenv("WGMITM_FUZZ_VERBOSE") != NULL;
	const char *dir = getenv("WGMITM_FUZZ_WRITE_SEEDS");
	if (dir)
		for (int s = 0; s <= 6; s++)
			seed_write(dir, s);
	return 0;
}

/* One run of the input through a fresh observer, chunked per `mode`. */
static void run(const uint8_t *data, size_t size, unsigned mode, struct out *out)
{
	struct h2obs_config cfg = {
		.sink = { .exchange = sink_exchange, .ctx = out },
		.body_cap = 4096,
		.max_streams = 16,
		.default_authority = (data[0] & 0x40) ? "10.0.0.1:8443" : NULL,
	};
	struct h2obs *o = h2obs_new(&cfg);
	if (!o)
		abort();
	size_t k = 0;
	if (data[0] & 0x80) {
		static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
		h2obs_client(o, (const uint8_t *)preface, 24);
	}
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	while (n >= 3) {
		int dir = p[0] & 1;
		size_t len = (size_t)p[1] << 8 | p[2];
		p += 3;
		n -= 3;
		if (len > n)
			len = n;
		feed(o, dir, p, len, mode, data + 1, size - 1, &k);
		p += len;
		n -= len;
	}
	h2obs_finish(o, "shutdown");
	struct h2obs_stats st = h2obs_stats(o);
	if (st.emitted > st.streams_seen + 1)
		abort();
	h2obs_free(o);
}

/* The input's chunking and then whole segments: how bytes are split
 * must never change what is recorded. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct out a = { 0 }, b = { 0 };
	run(data, size, data[0] & 3, &a);
	run(data, size, 0, &b);
	if (a.len != b.len || (a.len && memcmp(a.buf, b.buf, a.len) != 0)) {
		fprintf(stderr, "chunked:\n%.*s\nwhole:\n%.*s\n", (int)a.len, a.buf ? a.buf : "",
			(int)b.len, b.buf ? b.buf : "");
		abort();
	}
	free(a.buf);
	free(b.buf);
	return 0;
}
