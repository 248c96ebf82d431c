/* libFuzzer target for the active HTTP/2 layer (mitm/h2rw.h) with a small
 * ruleset (header edits, mock, block 403 and 444, delay, body edits with a
 * 4 KiB cap, response edits, breakpoints on requests and responses,
 * throttles).
 *
 * Input: records of one selector byte and what follows it:
 *   0xFF:          the clock moves 1 s on and h2rw_timeout runs;
 *   0xFE E:        the oldest held item is released, edited as E picks;
 *   0xFD:          the oldest held item is killed;
 *   0xFC:          the clock moves 400 s on: every held item times out;
 *   otherwise:     bit 0 the direction (0 from the client, 1 from the
 *                  upstream), then one byte of length and that many bytes
 *                  (a frame may span records).
 * The client's connection preface is fed first, so inputs need not hold it.
 *
 * Invariants beyond "no crash / no sanitizer report": the bytes buffered
 * stay within the kept bound plus both connection windows; after ops.fail
 * nothing more is written; once the layer is freed, nothing it held stays
 * in the registry.
 *
 * With WGMITM_FUZZ_WRITE_SEEDS=dir, initialisation writes seeds: hand-made
 * conversations (literal HPACK) touching every rule. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mitm/h2rw.h"
#include "mitm/held.h"
#include "mitm/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct ruleset *rules;
static uint64_t clock_ms;
static bool failed;

static const char RULES[] =
	"[{\"id\": \"hdr\", \"conditions\": {\"path_pattern\": \"^/h\"},"
	"  \"actions\": [{\"type\": \"set_header\", \"name\": \"Host\", \"value\": \"x.test\"},"
	"               {\"type\": \"add_header\", \"name\": \"X-A\", \"value\": \"1\"},"
	"               {\"type\": \"remove_header\", \"name\": \"cookie\"}]},"
	" {\"id\": \"mock\", \"conditions\": {\"path_pattern\": \"^/m\"},"
	"  \"actions\": [{\"type\": \"mock\", \"status\": 200, \"body\": \"mocked\"}]},"
	" {\"id\": \"deny\", \"conditions\": {\"path_pattern\": \"^/d\"},"
	"  \"actions\": [{\"type\": \"block\", \"status\": 403}]},"
	" {\"id\": \"kill\", \"conditions\": {\"path_pattern\": \"^/k\"},"
	"  \"actions\": [{\"type\": \"block\", \"status\": 444}]},"
	" {\"id\": \"bp\", \"conditions\": {\"path_pattern\": \"^/p\"},"
	"  \"actions\": [{\"type\": \"breakpoint\"}]},"
	" {\"id\": \"rbp\", \"direction\": \"response\", \"conditions\": {\"path_pattern\": "
	"\"^/q\"}, \"actions\": [{\"type\": \"breakpoint\"}]},"
	" {\"id\": \"tput\", \"direction\": \"both\", \"conditions\": {\"path_pattern\": "
	"\"^/t\"}, \"actions\": [{\"type\": \"throttle\", \"bytes_per_s\": 2048}]},"
	" {\"id\": \"slow\", \"conditions\": {\"path_pattern\": \"^/s\"},"
	"  \"actions\": [{\"type\": \"delay\", \"ms\": 500}]},"
	" {\"id\": \"body\", \"direction\": \"both\", \"conditions\": {\"path_pattern\": \"^/b\"},"
	"  \"actions\": [{\"type\": \"replace_body\", \"regex\": \"a\", \"replacement\": \"bb\"},"
	"               {\"type\": \"set_json\", \"path\": \"x.y\", \"value\": 1}]},"
	" {\"id\": \"resp\", \"direction\": \"response\","
	"  \"actions\": [{\"type\": \"set_status\", \"status\": 201},"
	"               {\"type\": \"set_header\", \"name\": \"X-R\", \"value\": \"1\"},"
	"               {\"type\": \"delay\", \"ms\": 100}]}]";

static void op_out(void *ctx, const uint8_t *p, size_t n)
{
	(void)ctx;
	(void)p;
	(void)n;
	if (failed)
		abort(); /* nothing after fail */
}

static void op_timer(void *ctx, uint32_t ms)
{
	(void)ctx;
	(void)ms;
}

static void op_fail(void *ctx, const char *why)
{
	(void)ctx;
	(void)why;
	failed = true;
}

static uint64_t op_now(void *ctx)
{
	(void)ctx;
	return clock_ms;
}

/* ---- seeds ------------------------------------------------------------------ */

struct seed {
	uint8_t b[8192];
	size_t n;
};

static void put(struct seed *s, const void *p, size_t n)
{
	if (s->n + n <= sizeof(s->b)) {
		memcpy(s->b + s->n, p, n);
		s->n += n;
	}
}

/* One direction's bytes as records of at most 255. */
static void rec(struct seed *s, int dir, const uint8_t *p, size_t n)
{
	while (n) {
		size_t k = n > 255 ? 255 : n;
		uint8_t h[2] = { (uint8_t)dir, (uint8_t)k };
		put(s, h, 2);
		put(s, p, k);
		p += k;
		n -= k;
	}
}

static size_t frame(uint8_t *o, uint8_t type, uint8_t flags, uint32_t sid, const uint8_t *p,
		    size_t n)
{
	o[0] = (uint8_t)(n >> 16);
	o[1] = (uint8_t)(n >> 8);
	o[2] = (uint8_t)n;
	o[3] = type;
	o[4] = flags;
	o[5] = (uint8_t)(sid >> 24);
	o[6] = (uint8_t)(sid >> 16);
	o[7] = (uint8_t)(sid >> 8);
	o[8] = (uint8_t)sid;
	if (n)
		memcpy(o + 9, p, n);
	return 9 + n;
}

static size_t lit(uint8_t *o, const char *name, const char *value)
{
	size_t a = strlen(name), b = strlen(value), k = 0;
	o[k++] = 0x00;
	o[k++] = (uint8_t)a;
	memcpy(o + k, name, a);
	k += a;
	o[k++] = (uint8_t)b;
	memcpy(o + k, value, b);
	return k + b;
}

static void headers(struct seed *s, int dir, uint32_t sid, bool end, const char *const *kv)
{
	uint8_t blk[1024], f[1100];
	size_t n = 0;
	for (size_t i = 0; kv[i]; i += 2)
		n += lit(blk + n, kv[i], kv[i + 1]);
	rec(s, dir, f, frame(f, 1, (uint8_t)(4 | (end ? 1 : 0)), sid, blk, n));
}

static void data(struct seed *s, int dir, uint32_t sid, bool end, const char *p)
{
	uint8_t f[1100];
	rec(s, dir, f, frame(f, 0, end ? 1 : 0, sid, (const uint8_t *)p, strlen(p)));
}

static void settings(struct seed *s, int dir, bool ackit)
{
	uint8_t f[16];
	rec(s, dir, f, frame(f, 4, 0, 0, NULL, 0));
	if (ackit)
		rec(s, dir, f, frame(f, 4, 1, 0, NULL, 0));
}

static void write_seeds(const char *dir)
{
	static const char *const paths[] = { "/h", "/m", "/d", "/k", "/s", "/b", "/x" };
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		struct seed s = { .n = 0 };
		settings(&s, 0, true);
		settings(&s, 1, true);
		const char *req[] = { ":method",    "POST",   ":scheme",      "https",
				      ":authority", "a.test", ":path",        paths[i],
				      "cookie",     "c=1",    "content-type", "application/json",
				      NULL };
		headers(&s, 0, 1, false, req);
		data(&s, 0, 1, true, "{\"x\": {\"y\": 0}, \"a\": \"aaa\"}");
		const char *req2[] = { ":method", "GET",   ":scheme", "https", ":authority",
				       "a.test",  ":path", "/x",      NULL };
		headers(&s, 0, 3, true, req2);
		uint8_t t = 0xFF;
		put(&s, &t, 1);
		const char *resp[] = { ":status", "200", "content-type", "application/json", NULL };
		headers(&s, 1, 1, false, resp);
		data(&s, 1, 1, false, "{\"x\": {\"y\": 5}, \"a\": \"a\"}");
		const char *trl[] = { "grpc-status", "0", NULL };
		headers(&s, 1, 1, true, trl);
		headers(&s, 1, 3, false, resp);
		data(&s, 1, 3, true, "aaaa");
		put(&s, &t, 1);
		char path[512];
		snprintf(path, sizeof(path), "%s/seed-%zu", dir, i);
		FILE *fp = fopen(path, "wb");
		if (fp) {
			fwrite(s.b, 1, s.n, fp);
			fclose(fp);
		}
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	json_t *a = json_loads(RULES, 0, NULL);
	struct rules_error err;
	rules = ruleset_new(a, "intercept_rules", NULL, NULL, &err);
	json_decref(a);
	if (!rules) {
		fprintf(stderr, "%s: %s\n", err.field, err.message);
		abort();
	}
	const char *dir = getenv("WGMITM_FUZZ_WRITE_SEEDS");
	if (dir)
		write_seeds(dir);
	return 0;
}

/* Edits a release may carry, picked by a byte. */
static const char *const edits[] = {
	NULL,
	"{}",
	"{\"set_headers\": {\"x-e\": \"1\"}, \"remove_headers\": [\"host\"]}",
	"{\"body\": \"replaced body\"}",
	"{\"body\": \"\"}",
	"{\"path\": \"/other?x\", \"method\": \"POST\", \"headers\": [[\"a\", \"b\"]]}",
	"{\"status\": 204}",
	"{\"status\": 500, \"body\": \"no\"}",
};

static uint64_t oldest(struct held *h)
{
	json_t *l = held_list(h);
	uint64_t id = (uint64_t)json_integer_value(json_object_get(json_array_get(l, 0), "id"));
	json_decref(l);
	return id;
}

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t n)
{
	failed = false;
	clock_ms = 0;
	struct held *held = held_new(&(struct held_config){ .max = 4 });
	if (!held)
		return 0;
	struct h2rw_config cfg = { .ops = { .to_upstream = op_out,
					    .to_client = op_out,
					    .timer = op_timer,
					    .fail = op_fail,
					    .now_ms = op_now },
				   .rules = rules,
				   .peer = "phone",
				   .default_authority = "10.0.0.1:443",
				   .body_cap = 4096,
				   .held = held,
				   .conn = "c",
				   .client = "10.0.0.2:1" };
	struct h2rw *w = h2rw_new(&cfg);
	if (!w) {
		held_free(held);
		return 0;
	}
	h2rw_flush(w);
	static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	h2rw_client(w, preface, sizeof(preface) - 1);
	size_t i = 0;
	while (i < n && !failed) {
		uint8_t sel = p[i++];
		if (sel == 0xFF) {
			clock_ms += 1000;
			h2rw_timeout(w);
		} else if (sel == 0xFE) {
			uint8_t e = i < n ? p[i++] : 0;
			uint64_t id = oldest(held);
			json_t *j = edits[e % 8] ? json_loads(edits[e % 8], 0, NULL) : NULL;
			char why[128];
			if (id)
				(void)held_release(held, id, j, why, sizeof(why));
			json_decref(j);
		} else if (sel == 0xFD) {
			uint64_t id = oldest(held);
			if (id)
				(void)held_kill(held, id);
		} else if (sel == 0xFC) {
			clock_ms += 400000;
			(void)held_expire(held, clock_ms);
		} else {
			if (i >= n)
				break;
			size_t len = p[i++];
			if (len > n - i)
				len = n - i;
			if (sel & 1)
				h2rw_server(w, p + i, len);
			else
				h2rw_client(w, p + i, len);
			i += len;
		}
		if (h2rw_buffered(w) > H2RW_MAX_KEPT + 2 * H2RW_CONN_WINDOW + 2 * 4096 + (1u << 16))
			abort();
		for (uint32_t sid = 1; sid < 8; sid += 2)
			json_decref(h2rw_take_note(w, sid));
	}
	h2rw_free(w);
	if (held_count(held) != 0)
		abort();
	held_free(held);
	return 0;
}
