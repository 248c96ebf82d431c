/* The WebSocket observer on frames built here per RFC 6455 5.2: masked
 * client text, 16- and 64-bit lengths, fragmented binary with control
 * frames between the fragments, close code and reason, permessage-deflate
 * (zlib raw deflate, context takeover across messages and
 * no_context_takeover), the body cap (also against a decompression bomb),
 * malformed frames, and the batches (every 100 messages, by age, at
 * finish). Streams are replayed split at every byte boundary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "mitm/websocket.h"

static struct timespec fake_now = { 1714566896, 0 };

static void fake_clock(struct timespec *t)
{
	*t = fake_now;
}

#define MAX_BATCHES 16

struct rec {
	json_t *b[MAX_BATCHES];
	size_t n;
};

static void on_batch(void *ctx, json_t *batch)
{
	struct rec *r = ctx;
	assert_true(r->n < MAX_BATCHES);
	r->b[r->n++] = batch;
}

static void rec_free(struct rec *r)
{
	for (size_t i = 0; i < r->n; i++)
		json_decref(r->b[i]);
	r->n = 0;
}

static struct ws_obs *obs_new(struct rec *r, size_t cap, const char *ext)
{
	struct ws_config cfg = {
		.sink = { .websocket = on_batch, .ctx = r },
		.body_cap = cap,
		.url = "wss://h/s",
		.extensions = ext,
		.clock = fake_clock,
	};
	struct ws_obs *o = ws_obs_new(&cfg);
	assert_non_null(o);
	return o;
}

/* ---- frames -------------------------------------------------------------- */

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

#define F_FIN 0x80
#define F_RSV1 0x40

/* One frame; masked with `key` when key is not NULL. */
static void frame(struct buf *b, uint8_t b0, const uint8_t *key, const void *payload, size_t len)
{
	uint8_t h[14];
	size_t hl = 0;
	h[hl++] = b0;
	uint8_t m = key ? 0x80 : 0;
	if (len < 126) {
		h[hl++] = m | (uint8_t)len;
	} else if (len <= 0xffff) {
		h[hl++] = m | 126;
		h[hl++] = (uint8_t)(len >> 8);
		h[hl++] = (uint8_t)len;
	} else {
		h[hl++] = m | 127;
		for (int i = 7; i >= 0; i--)
			h[hl++] = (uint8_t)((uint64_t)len >> (8 * i));
	}
	if (key) {
		memcpy(h + hl, key, 4);
		hl += 4;
	}
	put(b, h, hl);
	size_t at = b->n;
	put(b, payload, len);
	if (key)
		for (size_t i = 0; i < len; i++)
			b->p[at + i] ^= key[i % 4];
}

static const uint8_t KEY[4] = { 0x37, 0xfa, 0x21, 0x3d };

/* RFC 7692 7.2.1: deflate, sync flush, drop the trailing 00 00 ff ff. */
static size_t pmd_compress(z_stream *z, const void *in, size_t n, uint8_t *out, size_t cap)
{
	z->next_in = (Bytef *)in;
	z->avail_in = (uInt)n;
	z->next_out = out;
	z->avail_out = (uInt)cap;
	assert_int_equal(deflate(z, Z_SYNC_FLUSH), Z_OK);
	assert_int_equal(z->avail_in, 0);
	size_t len = cap - z->avail_out;
	assert_true(len >= 4);
	assert_memory_equal(out + len - 4, "\x00\x00\xff\xff", 4);
	return len - 4;
}

static json_t *msgs(struct rec *r, size_t batch)
{
	assert_true(batch < r->n);
	return json_object_get(r->b[batch], "messages");
}

static void assert_msg(json_t *m, const char *dir, const char *op, const char *key, const char *val)
{
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m, "dir")), dir);
	assert_string_equal(json_string_value(json_object_get(m, "opcode")), op);
	json_t *body = json_object_get(m, "body");
	assert_string_equal(json_string_value(json_object_get(body, key)), val);
}

/* Feeds up/down streams (in that order per step) whole, then split at every
 * byte of the first one; the batches must be the same. */
static void run_splits(const struct buf *up, const struct buf *down, size_t cap, const char *ext,
		       struct rec *ref)
{
	struct ws_obs *o = obs_new(ref, cap, ext);
	ws_obs_client(o, up->p, up->n);
	ws_obs_server(o, down->p, down->n);
	ws_obs_finish(o);
	ws_obs_free(o);
	char *want = NULL;
	{
		json_t *a = json_array();
		for (size_t i = 0; i < ref->n; i++)
			json_array_append(a, ref->b[i]);
		want = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(a);
	}
	for (int which = 0; which < 2; which++) {
		const struct buf *s = which ? down : up;
		for (size_t at = 0; at <= s->n; at++) {
			struct rec r = { 0 };
			o = obs_new(&r, cap, ext);
			if (which)
				ws_obs_client(o, up->p, up->n);
			uint8_t *a = malloc(at ? at : 1), *b = malloc(s->n - at ? s->n - at : 1);
			memcpy(a, s->p, at);
			memcpy(b, s->p + at, s->n - at);
			(which ? ws_obs_server : ws_obs_client)(o, a, at);
			(which ? ws_obs_server : ws_obs_client)(o, b, s->n - at);
			free(a);
			free(b);
			if (!which)
				ws_obs_server(o, down->p, down->n);
			ws_obs_finish(o);
			ws_obs_free(o);
			json_t *arr = json_array();
			for (size_t i = 0; i < r.n; i++)
				json_array_append(arr, r.b[i]);
			char *got = json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER);
			json_decref(arr);
			if (strcmp(got, want) != 0)
				fail_msg("%s split at %zu:\n got %s\nwant %s",
					 which ? "down" : "up", at, got, want);
			free(got);
			rec_free(&r);
		}
	}
	free(want);
}

/* ---- tests --------------------------------------------------------------- */

static void test_text_fragments_control(void **state)
{
	(void)state;
	struct buf up = { 0 }, down = { 0 };
	/* masked text */
	frame(&up, F_FIN | 0x1, KEY, "Hello, \xe2\x82\xac", 10);
	/* fragmented binary with a ping and a pong between the fragments */
	const uint8_t bin[] = { 0x00, 0xff, 0x01, 0xfe, 0x02, 0xfd };
	frame(&up, 0x2, KEY, bin, 2);
	frame(&up, F_FIN | 0x9, KEY, "p1", 2);
	frame(&up, 0x0, KEY, bin + 2, 2);
	frame(&up, F_FIN | 0xa, KEY, "", 0);
	frame(&up, F_FIN | 0x0, KEY, bin + 4, 2);
	/* close with code and reason */
	frame(&up, F_FIN | 0x8, KEY, "\x03\xe9going away", 12);
	/* server: unmasked text, 16-bit length, its close without a reason */
	char mid[300];
	memset(mid, 'm', sizeof(mid));
	frame(&down, F_FIN | 0x1, NULL, "srv", 3);
	frame(&down, F_FIN | 0x1, NULL, mid, sizeof(mid));
	frame(&down, F_FIN | 0x8, NULL, "\x03\xe8", 2);

	struct rec r = { 0 };
	run_splits(&up, &down, 1024, NULL, &r);
	assert_int_equal(r.n, 1);
	json_t *b = r.b[0];
	const char *k;
	json_t *v;
	const char *order[] = { "url", "messages", "close" };
	size_t i = 0;
	json_object_foreach(b, k, v) assert_string_equal(k, order[i++]);
	assert_int_equal(i, 3);
	assert_string_equal(json_string_value(json_object_get(b, "url")), "wss://h/s");
	json_t *m = msgs(&r, 0);
	assert_int_equal(json_array_size(m), 8);
	assert_msg(json_array_get(m, 0), "up", "text", "text", "Hello, \xe2\x82\xac");
	assert_msg(json_array_get(m, 1), "up", "ping", "text", "p1");
	assert_msg(json_array_get(m, 2), "up", "pong", "text", "");
	assert_msg(json_array_get(m, 3), "up", "binary", "base64", "AP8B/gL9");
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(json_array_get(m, 3), "body"), "size")),
			 6);
	assert_msg(json_array_get(m, 4), "up", "close", "text", "going away");
	assert_msg(json_array_get(m, 5), "down", "text", "text", "srv");
	json_t *big = json_object_get(json_array_get(m, 6), "body");
	assert_int_equal(json_string_length(json_object_get(big, "text")), 300);
	assert_msg(json_array_get(m, 7), "down", "close", "text", "");
	json_t *entry = json_array_get(m, 0);
	i = 0;
	const char *eorder[] = { "dir", "time", "opcode", "body" };
	json_object_foreach(entry, k, v) assert_string_equal(k, eorder[i++]);
	assert_string_equal(json_string_value(json_object_get(entry, "time")),
			    "2024-05-01T12:34:56.000000Z");
	/* the first close frame */
	json_t *c = json_object_get(b, "close");
	assert_string_equal(json_string_value(json_object_get(c, "dir")), "up");
	assert_int_equal(json_integer_value(json_object_get(c, "code")), 1001);
	assert_string_equal(json_string_value(json_object_get(c, "reason")), "going away");
	rec_free(&r);
	free(up.p);
	free(down.p);
}

static void test_close_not_utf8(void **state)
{
	(void)state;
	struct rec r = { 0 };
	struct ws_obs *o = obs_new(&r, 64, NULL);
	ws_obs_server(o, (const uint8_t *)"\x88\x03\x03\xea\xff", 5);
	ws_obs_client(o, (const uint8_t *)"\x88\x80\x00\x00\x00\x00", 6); /* no status */
	ws_obs_finish(o);
	ws_obs_free(o);
	assert_int_equal(r.n, 1);
	json_t *c = json_object_get(r.b[0], "close");
	assert_string_equal(json_string_value(json_object_get(c, "dir")), "down");
	assert_int_equal(json_integer_value(json_object_get(c, "code")), 1002);
	assert_string_equal(json_string_value(json_object_get(c, "reason")), "");
	json_t *m = msgs(&r, 0);
	assert_msg(json_array_get(m, 0), "down", "close", "base64", "/w==");
	assert_msg(json_array_get(m, 1), "up", "close", "text", "");
	rec_free(&r);

	o = obs_new(&r, 64, NULL);
	ws_obs_client(o, (const uint8_t *)"\x88\x80\x00\x00\x00\x00", 6);
	ws_obs_finish(o);
	ws_obs_free(o);
	assert_true(json_is_null(json_object_get(json_object_get(r.b[0], "close"), "code")));
	rec_free(&r);
}

static void test_64bit_length_and_cap(void **state)
{
	(void)state;
	struct buf up = { 0 }, down = { 0 };
	size_t n = 70000; /* over 65535: the 64-bit length form */
	uint8_t *p = malloc(n);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)('a' + i % 26);
	frame(&up, F_FIN | 0x1, KEY, p, n);
	frame(&down, F_FIN | 0x2, NULL, p, n);
	assert_int_equal(up.p[1], 0x80 | 127);
	assert_int_equal(down.p[1], 127);

	struct rec r = { 0 };
	struct ws_obs *o = obs_new(&r, 100000, NULL);
	ws_obs_client(o, up.p, up.n);
	ws_obs_server(o, down.p, down.n);
	ws_obs_finish(o);
	ws_obs_free(o);
	json_t *m = msgs(&r, 0);
	json_t *body = json_object_get(json_array_get(m, 0), "body");
	assert_int_equal(json_string_length(json_object_get(body, "text")), n);
	assert_memory_equal(json_string_value(json_object_get(body, "text")), p, n);
	rec_free(&r);

	/* cap 10: the first ten kept, unmasked; the size counted */
	o = obs_new(&r, 10, NULL);
	ws_obs_client(o, up.p, up.n);
	ws_obs_finish(o);
	ws_obs_free(o);
	body = json_object_get(json_array_get(msgs(&r, 0), 0), "body");
	assert_string_equal(json_string_value(json_object_get(body, "text")), "abcdefghij");
	assert_int_equal(json_integer_value(json_object_get(body, "size")), n);
	assert_true(json_is_true(json_object_get(body, "truncated")));
	rec_free(&r);
	free(p);
	free(up.p);
	free(down.p);
}

static void test_permessage_deflate(void **state)
{
	(void)state;
	z_stream zc, zs;
	memset(&zc, 0, sizeof(zc));
	memset(&zs, 0, sizeof(zs));
	assert_int_equal(deflateInit2(&zc, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	uint8_t c[4096];
	struct buf up = { 0 }, down = { 0 };
	const char *m1 = "{\"type\":\"subscribe\",\"channel\":\"ticker\",\"symbol\":\"BTC-USD\"}";
	size_t n = pmd_compress(&zc, m1, strlen(m1), c, sizeof(c));
	frame(&up, F_FIN | F_RSV1 | 0x1, KEY, c, n);
	/* the same text again: with context takeover it is a back-reference */
	size_t n2 = pmd_compress(&zc, m1, strlen(m1), c, sizeof(c));
	assert_true(n2 < n);
	frame(&up, F_FIN | F_RSV1 | 0x1, KEY, c, n2);
	/* an uncompressed message between compressed ones */
	frame(&up, F_FIN | 0x1, KEY, "plain", 5);
	/* server: a compressed message in three fragments, RSV1 on the first */
	char text[2000];
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = "abcdefgh"[i % 8];
	n = pmd_compress(&zs, text, sizeof(text), c, sizeof(c));
	assert_true(n > 3);
	frame(&down, F_RSV1 | 0x1, NULL, c, 1);
	frame(&down, 0x0, NULL, c + 1, 1);
	frame(&down, F_FIN | 0x0, NULL, c + 2, n - 2);
	/* an empty compressed message: a lone 0x00 (RFC 7692 7.2.3.6) */
	frame(&down, F_FIN | F_RSV1 | 0x2, NULL, "\x00", 1);

	struct rec r = { 0 };
	run_splits(&up, &down, 4096, "permessage-deflate; client_max_window_bits=15", &r);
	json_t *m = msgs(&r, 0);
	assert_int_equal(json_array_size(m), 5);
	assert_msg(json_array_get(m, 0), "up", "text", "text", m1);
	assert_msg(json_array_get(m, 1), "up", "text", "text", m1);
	assert_msg(json_array_get(m, 2), "up", "text", "text", "plain");
	json_t *body = json_object_get(json_array_get(m, 3), "body");
	assert_int_equal(json_integer_value(json_object_get(body, "size")), sizeof(text));
	assert_memory_equal(json_string_value(json_object_get(body, "text")), text, sizeof(text));
	assert_msg(json_array_get(m, 4), "down", "binary", "text", "");
	rec_free(&r);

	/* the same bytes without the extension negotiated: RSV1 is malformed */
	struct ws_obs *o = obs_new(&r, 4096, "x-webkit-deflate-frame");
	ws_obs_client(o, up.p, up.n);
	assert_true(ws_obs_failed(o));
	ws_obs_finish(o);
	ws_obs_free(o);
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(json_string_value(json_object_get(r.b[0], "error")), "RSV1"));
	assert_int_equal(json_array_size(msgs(&r, 0)), 0);
	rec_free(&r);
	deflateEnd(&zc);
	deflateEnd(&zs);
	free(up.p);
	free(down.p);
}

static void test_deflate_no_context_takeover(void **state)
{
	(void)state;
	/* Each client message from a fresh compressor (client_no_context_takeover),
	 * the extension second in the list, names in mixed case. */
	z_stream zc;
	uint8_t c[1024];
	struct buf up = { 0 }, down = { 0 };
	const char *msgs_txt[] = { "first message", "second message", "first message" };
	for (int i = 0; i < 3; i++) {
		memset(&zc, 0, sizeof(zc));
		assert_int_equal(deflateInit2(&zc, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY),
				 Z_OK);
		size_t n = pmd_compress(&zc, msgs_txt[i], strlen(msgs_txt[i]), c, sizeof(c));
		frame(&up, F_FIN | F_RSV1 | 0x1, KEY, c, n);
		deflateEnd(&zc);
	}
	frame(&down, F_FIN | 0x1, NULL, "ok", 2);
	struct rec r = { 0 };
	run_splits(&up, &down, 1024,
		   "foo; bar=1, Permessage-Deflate; Client_No_Context_Takeover; "
		   "server_max_window_bits=10",
		   &r);
	json_t *m = msgs(&r, 0);
	assert_int_equal(json_array_size(m), 4);
	for (int i = 0; i < 3; i++)
		assert_msg(json_array_get(m, (size_t)i), "up", "text", "text", msgs_txt[i]);
	rec_free(&r);
	free(up.p);
	free(down.p);
}

static void test_deflate_bomb_capped(void **state)
{
	(void)state;
	/* 8 MiB of one letter compress to a few KiB; 64 bytes are kept, all counted */
	size_t big = 8u << 20;
	uint8_t *zeros = malloc(big);
	memset(zeros, 'a', big);
	size_t cap = compressBound((uLong)big);
	uint8_t *c = malloc(cap);
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
	size_t n = pmd_compress(&z, zeros, big, c, cap);
	deflateEnd(&z);
	assert_true(n < big / 100);
	struct buf down = { 0 };
	frame(&down, F_FIN | F_RSV1 | 0x2, NULL, c, n);
	struct rec r = { 0 };
	struct ws_obs *o = obs_new(&r, 64, "permessage-deflate");
	ws_obs_server(o, down.p, down.n);
	ws_obs_finish(o);
	ws_obs_free(o);
	json_t *body = json_object_get(json_array_get(msgs(&r, 0), 0), "body");
	assert_int_equal(json_integer_value(json_object_get(body, "size")), big);
	assert_true(json_is_true(json_object_get(body, "truncated")));
	assert_int_equal(json_string_length(json_object_get(body, "text")), 64);
	rec_free(&r);
	free(down.p);
	free(c);
	free(zeros);
}

static void test_malformed(void **state)
{
	(void)state;
	struct {
		const char *bytes;
		size_t len;
		const char *why;
	} cases[] = {
		{ "\x83\x00", 2, "reserved opcode" },
		{ "\x00\x00", 2, "continuation without" },
		{ "\x09\x00", 2, "bad control" },         /* fragmented ping */
		{ "\x89\x7e\x00\x80", 4, "bad control" }, /* 128-byte ping */
		{ "\xa1\x00", 2, "RSV2" },
		{ "\x01\x00\x81\x00", 4, "new message inside" },
		{ "\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00", 10, "top bit" },
		{ "\xc1\x01\xff", 3, "RSV1 without" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rec r = { 0 };
		struct ws_obs *o = obs_new(&r, 64, NULL);
		/* one good message first: it is flushed with the error */
		ws_obs_server(o, (const uint8_t *)"\x81\x02ok", 4);
		ws_obs_server(o, (const uint8_t *)cases[i].bytes, cases[i].len);
		assert_true(ws_obs_failed(o));
		ws_obs_server(o, (const uint8_t *)"\x81\x02no", 4); /* ignored */
		ws_obs_finish(o);
		ws_obs_free(o);
		assert_int_equal(r.n, 1);
		const char *err = json_string_value(json_object_get(r.b[0], "error"));
		assert_non_null(err);
		if (!strstr(err, cases[i].why))
			fail_msg("case %zu: %s", i, err);
		assert_int_equal(json_array_size(msgs(&r, 0)), 1);
		rec_free(&r);
	}
	/* corrupt deflate data */
	struct rec r = { 0 };
	struct ws_obs *o = obs_new(&r, 64, "permessage-deflate");
	ws_obs_server(o, (const uint8_t *)"\xc1\x03\xff\xff\xff", 5);
	assert_true(ws_obs_failed(o));
	ws_obs_finish(o);
	ws_obs_free(o);
	assert_int_equal(r.n, 1);
	assert_non_null(json_object_get(r.b[0], "error"));
	rec_free(&r);
}

static void test_batches(void **state)
{
	(void)state;
	struct rec r = { 0 };
	fake_now = (struct timespec){ 1714566896, 0 };
	struct ws_obs *o = obs_new(&r, 64, NULL);
	for (int i = 0; i < 250; i++)
		ws_obs_server(o, (const uint8_t *)"\x81\x01x", 3);
	assert_int_equal(r.n, 2);
	assert_int_equal(json_array_size(msgs(&r, 0)), 100);
	assert_int_equal(json_array_size(msgs(&r, 1)), 100);
	/* the 50 pending: not yet a second old */
	struct timespec t = { 1714566896, 999999999 };
	ws_obs_tick(o, &t);
	assert_int_equal(r.n, 2);
	t.tv_sec++;
	t.tv_nsec = 0;
	ws_obs_tick(o, &t);
	assert_int_equal(r.n, 3);
	assert_int_equal(json_array_size(msgs(&r, 2)), 50);
	ws_obs_tick(o, &t); /* nothing pending: no empty batch */
	assert_int_equal(r.n, 3);
	/* the age counts from the oldest pending message */
	fake_now.tv_sec += 10;
	ws_obs_client(o, (const uint8_t *)"\x81\x80\x00\x00\x00\x00", 6);
	t = fake_now;
	t.tv_nsec = 500000000;
	ws_obs_tick(o, &t);
	assert_int_equal(r.n, 3);
	ws_obs_finish(o);
	assert_int_equal(r.n, 4);
	assert_int_equal(json_array_size(msgs(&r, 3)), 1);
	ws_obs_finish(o); /* once */
	ws_obs_server(o, (const uint8_t *)"\x81\x01x", 3);
	assert_int_equal(r.n, 4);
	struct ws_stats st = ws_obs_stats(o);
	assert_int_equal(st.frames[1], 250);
	assert_int_equal(st.messages[0], 1);
	assert_int_equal(st.batches, 4);
	ws_obs_free(o);
	rec_free(&r);

	/* nothing at all: no batch */
	o = obs_new(&r, 64, NULL);
	ws_obs_finish(o);
	ws_obs_free(o);
	assert_int_equal(r.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_fragments_control),
		cmocka_unit_test(test_close_not_utf8),
		cmocka_unit_test(test_64bit_length_and_cap),
		cmocka_unit_test(test_permessage_deflate),
		cmocka_unit_test(test_deflate_no_context_takeover),
		cmocka_unit_test(test_deflate_bomb_capped),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_batches),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
