/* The passive HTTP/2 observer's cost, on byte streams an nghttp2 client and
 * server produced (recorded once, then replayed; only the replay is timed):
 *   data:  one response of 256 MiB in 16 KiB DATA frames: MB/s through
 *          h2obs keeping the whole body (one copy), with the default 1 MiB
 *          cap (the rest is counted, never read) and with cap 0, against an
 *          nghttp2 client session receiving the same bytes (what
 *          terminating HTTP/2 instead of watching it would cost);
 *          and 128 responses of 1 MiB, every byte kept under the cap;
 *   small: 20000 GETs with a typical browser header set and 200-byte
 *          responses, 100 streams at a time: exchanges/s through h2obs,
 *          and with each exchange also made into its JSON line.
 * Times are CPU time of the thread, best of 5.
 * Usage: bench_app_h2obs [data MiB] [small requests] */
#include "mitm/h2obs.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE \
	}

/* CPU time of this thread: the machine may be busy with other work. */
static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- a recorded conversation: segments in the order they were sent ---- */

struct seg {
	int dir;
	size_t off, len;
};

struct transcript {
	uint8_t *buf;
	size_t len, cap;
	struct seg *segs;
	size_t n, segcap;
	uint64_t bytes[2];
};

static void record(struct transcript *t, int dir, const uint8_t *p, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2;
		t->buf = realloc(t->buf, t->cap);
	}
	if (t->n == t->segcap) {
		t->segcap = t->segcap ? t->segcap * 2 : 1024;
		t->segs = realloc(t->segs, t->segcap * sizeof(*t->segs));
	}
	if (!t->buf || !t->segs)
		abort();
	memcpy(t->buf + t->len, p, n);
	t->segs[t->n++] = (struct seg){ dir, t->len, n };
	t->len += n;
	t->bytes[dir] += n;
}

struct gen {
	nghttp2_session *client, *server;
	struct transcript *t;
	size_t body_len;
};

static ssize_t gen_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
			nghttp2_data_source *src, void *ud)
{
	size_t *left = src->ptr;
	size_t k = *left < len ? *left : len;
	memset(buf, 'x', k);
	*left -= k;
	if (*left == 0) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		free(left);
	}
	return (ssize_t)k;
}

static int gen_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct gen *g = ud;
	if (s != g->server || f->hd.type != NGHTTP2_HEADERS ||
	    !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	static const nghttp2_nv resp[] = {
		NV(":status", "200"),
		NV("content-type", "application/json"),
		NV("cache-control", "no-store"),
		NV("server", "bench"),
	};
	size_t *left = malloc(sizeof(*left));
	*left = g->body_len;
	nghttp2_data_provider prd = { .source.ptr = left, .read_callback = gen_read };
	nghttp2_submit_response(s, f->hd.stream_id, resp, 4, &prd);
	return 0;
}

static void gen_pump(struct gen *g)
{
	for (int moved = 1; moved;) {
		moved = 0;
		const uint8_t *d;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(g->client, &d)) > 0) {
			moved = 1;
			record(g->t, 0, d, (size_t)n);
			nghttp2_session_mem_recv(g->server, d, (size_t)n);
		}
		while ((n = nghttp2_session_mem_send(g->server, &d)) > 0) {
			moved = 1;
			record(g->t, 1, d, (size_t)n);
			nghttp2_session_mem_recv(g->client, d, (size_t)n);
		}
	}
}

static const nghttp2_nv browser_headers[] = {
	NV(":method", "GET"),
	NV(":scheme", "https"),
	NV(":authority", "www.example.com"),
	NV(":path", "/api/v1/items?page=2"),
	NV("user-agent", "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/120.0 Mobile"),
	NV("accept", "application/json, text/plain, */*"),
	NV("accept-language", "en-US,en;q=0.9"),
	NV("accept-encoding", "gzip, deflate, br"),
	NV("cookie", "sid=4f9c2a7e51b04d2e; theme=dark"),
};
#define N_BROWSER (sizeof(browser_headers) / sizeof(browser_headers[0]))

/* requests in batches of `batch` concurrent streams, each answered with
 * body_len bytes */
static void generate(struct transcript *t, size_t requests, size_t batch, size_t body_len,
		     bool big_window)
{
	struct gen g = { .t = t, .body_len = body_len };
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, gen_frame);
	nghttp2_session_client_new(&g.client, cb, &g);
	nghttp2_session_server_new(&g.server, cb, &g);
	nghttp2_session_callbacks_del(cb);
	nghttp2_settings_entry cs[] = { { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1u << 31) - 1 } };
	nghttp2_submit_settings(g.client, 0, cs, big_window ? 1 : 0);
	nghttp2_submit_settings(g.server, 0, NULL, 0);
	if (big_window)
		nghttp2_session_set_local_window_size(g.client, 0, 0, (1u << 31) - 1);
	for (size_t i = 0; i < requests;) {
		for (size_t k = 0; k < batch && i < requests; k++, i++)
			nghttp2_submit_request(g.client, NULL, browser_headers, N_BROWSER, NULL,
					       NULL);
		gen_pump(&g);
	}
	nghttp2_session_del(g.client);
	nghttp2_session_del(g.server);
}

/* ---- replay ---- */

static uint64_t n_exchanges, n_errors;
static bool to_json;

static void sink(void *ctx, const struct http_exchange *x)
{
	n_exchanges++;
	n_errors += x->error != NULL;
	if (!to_json)
		return;
	json_t *rec = json_object();
	http_exchange_to_json(x, NULL, rec);
	char *s = json_dumps(rec, JSON_COMPACT);
	free(s);
	json_decref(rec);
}

static double replay_h2obs(const struct transcript *t, size_t body_cap)
{
	struct h2obs_config cfg = { .sink = { .exchange = sink }, .body_cap = body_cap };
	struct h2obs *o = h2obs_new(&cfg);
	if (!o)
		abort();
	double t0 = now_s();
	for (size_t i = 0; i < t->n; i++) {
		const struct seg *s = &t->segs[i];
		(s->dir ? h2obs_server : h2obs_client)(o, t->buf + s->off, s->len);
	}
	h2obs_finish(o, "shutdown");
	double dt = now_s() - t0;
	if (h2obs_failed(o))
		abort();
	h2obs_free(o);
	return dt;
}

/* nghttp2 as a terminating client: the same server bytes into a session
 * that has sent the same requests. */
static double replay_nghttp2(const struct transcript *t, size_t requests)
{
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session *c;
	nghttp2_session_client_new(&c, cb, NULL);
	nghttp2_session_callbacks_del(cb);
	nghttp2_settings_entry cs[] = { { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1u << 31) - 1 } };
	nghttp2_submit_settings(c, 0, cs, 1);
	nghttp2_session_set_local_window_size(c, 0, 0, (1u << 31) - 1);
	for (size_t i = 0; i < requests; i++)
		nghttp2_submit_request(c, NULL, browser_headers, N_BROWSER, NULL, NULL);
	const uint8_t *d;
	while (nghttp2_session_mem_send(c, &d) > 0)
		;
	double t0 = now_s();
	for (size_t i = 0; i < t->n; i++) {
		const struct seg *s = &t->segs[i];
		if (s->dir &&
		    nghttp2_session_mem_recv(c, t->buf + s->off, s->len) != (ssize_t)s->len)
			abort();
	}
	double dt = now_s() - t0;
	nghttp2_session_del(c);
	return dt;
}

static double best(double a, double b)
{
	return a < b ? a : b;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
	size_t small = argc > 2 ? strtoul(argv[2], NULL, 10) : 20000;
	const int reps = 5;

	struct transcript data = { 0 };
	generate(&data, 1, 1, mib << 20, true);
	double mb = (double)(data.bytes[0] + data.bytes[1]) / 1e6;
	double tc = 1e9, tz = 1e9, tn = 1e9, tf = 1e9;
	n_errors = 0;
	for (int r = 0; r < reps; r++) {
		tf = best(tf, replay_h2obs(&data, mib << 20));
		tc = best(tc, replay_h2obs(&data, HTTPFLOW_DEFAULT_BODY_CAP));
		tz = best(tz, replay_h2obs(&data, 0));
		tn = best(tn, replay_nghttp2(&data, 1));
	}
	if (n_errors)
		abort();
	printf("data: %zu MiB body, %zu segments (mean %.0f bytes)\n", mib, data.n,
	       (double)data.len / (double)data.n);
	printf("  h2obs, whole body kept:  %8.0f MB/s (one copy into the record)\n", mb / tf);
	printf("  h2obs, body cap 1 MiB:   %8.0f MB/s (%.0f ns per 16 KiB frame)\n", mb / tc,
	       tc / (double)data.n * 1e9);
	printf("  h2obs, body cap 0:       %8.0f MB/s\n", mb / tz);
	printf("  nghttp2 client session:  %8.0f MB/s (baseline: terminating instead)\n", mb / tn);

	/* every byte recorded: 1 MiB responses under the 1 MiB cap */
	struct transcript each = { 0 };
	generate(&each, 128, 1, 1 << 20, true);
	double mb_each = (double)(each.bytes[0] + each.bytes[1]) / 1e6, te = 1e9;
	for (int r = 0; r < reps; r++)
		te = best(te, replay_h2obs(&each, HTTPFLOW_DEFAULT_BODY_CAP));
	if (n_errors)
		abort();
	printf("data: 128 responses of 1 MiB, all kept (cap 1 MiB)\n");
	printf("  h2obs:                   %8.0f MB/s\n", mb_each / te);
	free(each.buf);
	free(each.segs);

	struct transcript sm = { 0 };
	generate(&sm, small, 100, 200, false);
	double t1 = 1e9, t2 = 1e9;
	for (int r = 0; r < reps; r++) {
		n_exchanges = 0;
		to_json = false;
		t1 = best(t1, replay_h2obs(&sm, HTTPFLOW_DEFAULT_BODY_CAP));
		if (n_exchanges != small || n_errors)
			abort();
		to_json = true;
		t2 = best(t2, replay_h2obs(&sm, HTTPFLOW_DEFAULT_BODY_CAP));
	}
	printf("small: %zu GETs, %.0f + %.0f bytes per exchange up/down\n", small,
	       (double)sm.bytes[0] / (double)small, (double)sm.bytes[1] / (double)small);
	printf("  h2obs:                   %8.0f exchanges/s (%.2f us each)\n", (double)small / t1,
	       t1 / (double)small * 1e6);
	printf("  h2obs + JSON line:       %8.0f exchanges/s (%.2f us each)\n", (double)small / t2,
	       t2 / (double)small * 1e6);
	free(data.buf);
	free(data.segs);
	free(sm.buf);
	free(sm.segs);
	return 0;
}
