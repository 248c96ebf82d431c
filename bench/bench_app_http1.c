/* Throughput of the HTTP/1 observer on a keep-alive connection of
 * exchanges with 1 KiB response bodies (a browser-like GET, a typical
 * response head), fed in 16 KiB chunks (a TLS record's worth) each way.
 * Two sinks: one that only counts (the observer alone) and one that renders
 * each exchange's JSON record, then also serialises it with json_dumps
 * (what the flow log pays). Also a WebSocket stream of 1 KiB masked text
 * messages.
 *
 *   bench_app_http1 [exchanges [observer]]   (default 200000; "observer":
 *                                             the observer alone) */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mitm/http1.h"
#include "mitm/httpflow.h"
#include "mitm/websocket.h"

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static unsigned long long counted;

static void count_exchange(void *ctx, const struct http_exchange *x)
{
	(void)ctx;
	counted += x->resp.body.size;
}

static void record_exchange(void *ctx, const struct http_exchange *x)
{
	(void)ctx;
	json_t *r = json_object();
	http_exchange_to_json(x, "10.0.0.1:443", r);
	counted += json_object_size(r);
	json_decref(r);
}

static void json_exchange(void *ctx, const struct http_exchange *x)
{
	(void)ctx;
	json_t *r = json_object();
	http_exchange_to_json(x, "10.0.0.1:443", r);
	char *s = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
	counted += strlen(s);
	free(s);
	json_decref(r);
}

static void drop_batch(void *ctx, json_t *b)
{
	(void)ctx;
	counted += json_array_size(json_object_get(b, "messages"));
	json_decref(b);
}

struct stream {
	uint8_t *p;
	size_t n;
	size_t *off; /* where each exchange's message starts */
};

static void build(struct stream *up, struct stream *down, size_t count)
{
	static const char req[] =
		"GET /api/v1/items?page=%zu&limit=20 HTTP/1.1\r\n"
		"Host: api.example.com\r\n"
		"User-Agent: Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, "
		"like Gecko) "
		"Chrome/124.0 Mobile Safari/537.36\r\n"
		"Accept: application/json\r\nAccept-Encoding: gzip, deflate, br\r\n"
		"Accept-Language: en-US,en;q=0.9\r\nCookie: "
		"session=0123456789abcdef0123456789abcdef\r\n\r\n";
	static const char resp[] =
		"HTTP/1.1 200 OK\r\nDate: Wed, 01 May 2024 12:34:56 GMT\r\nContent-Type: "
		"application/json\r\n"
		"Content-Length: 1024\r\nCache-Control: no-store\r\nServer: nginx\r\n"
		"X-Request-Id: 5f2b6c1e-9d3a-4b7e-8c2f-1a0b9c8d7e6f\r\n\r\n";
	char body[1024];
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = "{\"id\":12345,\"name\":\"item\"},"[i % 27];
	size_t ucap = count * (sizeof(req) + 16), dcap = count * (sizeof(resp) + sizeof(body));
	up->p = malloc(ucap);
	down->p = malloc(dcap);
	up->off = malloc((count + 1) * sizeof(size_t));
	down->off = malloc((count + 1) * sizeof(size_t));
	up->n = down->n = 0;
	for (size_t i = 0; i < count; i++) {
		up->off[i] = up->n;
		down->off[i] = down->n;
		up->n += (size_t)snprintf((char *)up->p + up->n, ucap - up->n, req, i);
		memcpy(down->p + down->n, resp, sizeof(resp) - 1);
		down->n += sizeof(resp) - 1;
		memcpy(down->p + down->n, body, sizeof(body));
		down->n += sizeof(body);
	}
	up->off[count] = up->n;
	down->off[count] = down->n;
}

static void feed(struct http1_obs *o, bool server, const uint8_t *p, size_t n)
{
	const size_t chunk = 16384;
	for (size_t i = 0; i < n; i += chunk) {
		size_t k = n - i < chunk ? n - i : chunk;
		(server ? http1_obs_server : http1_obs_client)(o, p + i, k);
	}
}

static double run_http(const struct stream *up, const struct stream *down, size_t count,
		       void (*sink)(void *, const struct http_exchange *))
{
	struct http1_config cfg = {
		.sink = { .exchange = sink },
		.body_cap = HTTPFLOW_DEFAULT_BODY_CAP,
		.scheme = "https",
	};
	struct http1_obs *o = http1_obs_new(&cfg);
	/* 8 requests in flight, then their responses, like a browser */
	const size_t per = 8;
	double t0 = now_s();
	for (size_t i = 0; i < count; i += per) {
		size_t e = i + per < count ? i + per : count;
		feed(o, false, up->p + up->off[i], up->off[e] - up->off[i]);
		feed(o, true, down->p + down->off[i], down->off[e] - down->off[i]);
	}
	double t = now_s() - t0;
	struct http1_stats st = http1_obs_stats(o);
	http1_obs_finish(o, "connection_closed");
	if (st.emitted != count || http1_obs_failed(o))
		fprintf(stderr, "unexpected: emitted %llu of %zu, failed %d\n",
			(unsigned long long)st.emitted, count, http1_obs_failed(o));
	http1_obs_free(o);
	return t;
}

static double run_ws(size_t count, size_t *bytes)
{
	size_t len = 1024, fl = 2 + 2 + 4 + len;
	uint8_t *s = malloc(count * fl);
	const uint8_t key[4] = { 1, 2, 3, 4 };
	for (size_t i = 0; i < count; i++) {
		uint8_t *f = s + i * fl;
		f[0] = 0x81;
		f[1] = 0x80 | 126;
		f[2] = (uint8_t)(len >> 8);
		f[3] = (uint8_t)len;
		memcpy(f + 4, key, 4);
		for (size_t k = 0; k < len; k++)
			f[8 + k] = (uint8_t)('a' + k % 26) ^ key[k % 4];
	}
	struct ws_config cfg = { .sink = { .websocket = drop_batch },
				 .body_cap = HTTPFLOW_DEFAULT_BODY_CAP,
				 .url = "wss://h/" };
	struct ws_obs *o = ws_obs_new(&cfg);
	double t0 = now_s();
	for (size_t i = 0; i < count * fl; i += 16384)
		ws_obs_client(o, s + i, count * fl - i < 16384 ? count * fl - i : 16384);
	ws_obs_finish(o);
	double t = now_s() - t0;
	ws_obs_free(o);
	free(s);
	*bytes = count * fl;
	return t;
}

int main(int argc, char **argv)
{
	size_t count = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
	bool only_observer = argc > 2 && strcmp(argv[2], "observer") == 0;
	struct stream up, down;
	build(&up, &down, count);
	double mb = (double)(up.n + down.n) / 1e6;
	printf("keep-alive stream: %zu exchanges, %.1f MB (up %.1f, down %.1f), 16 KiB chunks\n",
	       count, mb, (double)up.n / 1e6, (double)down.n / 1e6);
	for (int rep = 0; rep < 3; rep++) {
		double t = run_http(&up, &down, count, count_exchange);
		if (only_observer) {
			printf("  observer only %6.1f MB/s (%5.2f us/exchange)\n", mb / t,
			       t * 1e6 / (double)count);
			continue;
		}
		double tr = run_http(&up, &down, count, record_exchange);
		double tj = run_http(&up, &down, count, json_exchange);
		printf("  observer only %6.1f MB/s (%5.2f us/exchange) | + record built %6.1f MB/s "
		       "(%5.2f us) | + json_dumps %6.1f MB/s (%5.2f us)\n",
		       mb / t, t * 1e6 / (double)count, mb / tr, tr * 1e6 / (double)count, mb / tj,
		       tj * 1e6 / (double)count);
	}
	for (int rep = 0; rep < 3 && !only_observer; rep++) {
		size_t bytes;
		double t = run_ws(count, &bytes);
		printf("  websocket, 1 KiB masked text messages (batch objects built, not dumped): "
		       "%7.1f MB/s\n",
		       (double)bytes / 1e6 / t);
	}
	free(up.p);
	free(down.p);
	free(up.off);
	free(down.off);
	return counted == 0;
}
