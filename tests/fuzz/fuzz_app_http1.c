/* libFuzzer target for the HTTP/1 observer and, after an upgrade, the
 * WebSocket observer.
 *
 * Input: byte 0 picks the body cap (bits 0-1), a server FIN at the end
 * (bit 2), a finish reason (bit 3), a WebSocket tick before the finish
 * (bit 4); then chunks, each a header byte (bit 7: server, else client;
 * bits 0-6: length, 127 = a 2-byte big-endian length follows) and the bytes.
 *
 * Invariants beyond "no crash / no sanitizer report":
 * - every emitted exchange renders to JSON;
 * - the records are the same when every chunk is fed one byte at a time
 *   (the observer must not depend on how the stream was cut). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/http1.h"
#include "mitm/httpflow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OUT (1u << 20)

struct out {
	char *buf;
	size_t len;
	bool overflow;
};

static void out_add(struct out *o, const char *s)
{
	size_t n = strlen(s);
	if (o->len + n + 1 > MAX_OUT) {
		o->overflow = true;
		return;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len++] = '\n';
}

static void on_exchange(void *ctx, const struct http_exchange *x)
{
	json_t *r = json_object();
	if (!r)
		return;
	if (http_exchange_to_json(x, "10.0.0.1:80", r) != 0)
		abort();
	json_object_set_new(r, "error", x->error ? json_string(x->error) : json_null());
	json_object_set_new(r, "detail", json_string(x->error_detail));
	char *s = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!s)
		abort();
	out_add(ctx, s);
	free(s);
	json_decref(r);
}

static void on_websocket(void *ctx, json_t *batch)
{
	char *s = json_dumps(batch, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!s)
		abort();
	out_add(ctx, s);
	free(s);
	json_decref(batch);
}

static void fixed_clock(struct timespec *t)
{
	t->tv_sec = 1714566896;
	t->tv_nsec = 0;
}

static void run(const uint8_t *data, size_t size, bool bytewise, struct out *out)
{
	static const size_t caps[] = { 0, 16, 1024, HTTPFLOW_DEFAULT_BODY_CAP };
	uint8_t flags = data[0];
	struct http1_config cfg = {
		.sink = { .exchange = on_exchange, .websocket = on_websocket, .ctx = out },
		.body_cap = caps[flags & 3],
		.scheme = flags & 0x20 ? "http" : "https",
		.default_authority = "10.0.0.1:80",
		.clock = fixed_clock,
	};
	struct http1_obs *o = http1_obs_new(&cfg);
	if (!o)
		return;
	size_t i = 1;
	while (i < size) {
		uint8_t h = data[i++];
		size_t len = h & 0x7f;
		if (len == 127) {
			if (i + 2 > size)
				break;
			len = ((size_t)data[i] << 8) | data[i + 1];
			i += 2;
		}
		if (len > size - i)
			len = size - i;
		/* a heap copy of exactly the chunk, so reads past it are caught */
		uint8_t *chunk = malloc(len ? len : 1);
		memcpy(chunk, data + i, len);
		void (*feed)(struct http1_obs *, const uint8_t *, size_t) =
			h & 0x80 ? http1_obs_server : http1_obs_client;
		if (bytewise) {
			for (size_t k = 0; k < len; k++)
				feed(o, chunk + k, 1);
		} else {
			feed(o, chunk, len);
		}
		free(chunk);
		i += len;
		struct http1_upgrade_info info;
		enum http1_upgrade up = http1_obs_upgraded(o, &info);
		if (up != HTTP1_UPGRADE_NONE && info.client_early_len > HTTP1_MAX_EARLY_BYTES)
			abort();
	}
	if (flags & 4)
		http1_obs_server_eof(o);
	if (flags & 0x10) {
		struct timespec t = { 1714566999, 0 };
		http1_obs_tick(o, &t);
	}
	http1_obs_finish(o, flags & 8 ? "client_reset" : "connection_closed");
	http1_obs_free(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	static char buf_a[MAX_OUT], buf_b[MAX_OUT];
	struct out a = { buf_a, 0, false };
	run(data, size, false, &a);
	if (size <= 4096) {
		struct out b = { buf_b, 0, false };
		run(data, size, true, &b);
		if (!a.overflow && !b.overflow &&
		    (a.len != b.len || memcmp(a.buf, b.buf, a.len) != 0)) {
			fprintf(stderr, "whole:\n%.*s\nbyte by byte:\n%.*s\n", (int)a.len, a.buf,
				(int)b.len, b.buf);
			abort();
		}
	}
	return 0;
}
