/* The active WebSocket layer (mitm/wsrw.h) in memory: frames split at
 * every byte boundary, masking, fragments with control frames between
 * them, drops, regex edits, the message cap, protocol errors, and held
 * messages released edited or killed; and the message rules' schema. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/h1rw.h"
#include "mitm/rules.h"
#include "mitm/wsrw.h"

/* ---- frames for the tests ---------------------------------------------------- */

struct buf {
	uint8_t *p;
	size_t n;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	b->p = realloc(b->p, b->n + n + 1);
	assert_non_null(b->p);
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->n = 0;
}

/* One frame: masked (client) with key 0x11 0x22 0x33 0x44, or not. */
static void frame(struct buf *b, bool fin, uint8_t op, bool mask, const char *payload, size_t n)
{
	uint8_t h[14];
	size_t o = 0;
	h[o++] = (uint8_t)((fin ? 0x80 : 0) | op);
	uint8_t mb = mask ? 0x80 : 0;
	if (n < 126) {
		h[o++] = (uint8_t)(mb | n);
	} else {
		assert_true(n <= 0xFFFF);
		h[o++] = mb | 126;
		h[o++] = (uint8_t)(n >> 8);
		h[o++] = (uint8_t)n;
	}
	static const uint8_t key[4] = { 0x11, 0x22, 0x33, 0x44 };
	if (mask) {
		memcpy(h + o, key, 4);
		o += 4;
	}
	buf_add(b, h, o);
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)payload[i] ^ (mask ? key[i & 3] : 0);
		buf_add(b, &c, 1);
	}
}

static void text(struct buf *b, bool client, const char *s)
{
	frame(b, true, 0x1, client, s, strlen(s));
}

/* The frames of an output, decoded on their own. */
struct out_frame {
	bool fin, masked;
	uint8_t op;
	uint8_t key[4];
	char payload[70000];
	size_t n;
};

static size_t decode(const struct buf *b, struct out_frame *f, size_t max)
{
	size_t at = 0, k = 0;
	while (at + 2 <= b->n && k < max) {
		const uint8_t *h = b->p + at;
		struct out_frame *x = &f[k];
		x->fin = h[0] & 0x80;
		x->op = h[0] & 0xF;
		x->masked = h[1] & 0x80;
		size_t len = h[1] & 0x7F, o = 2;
		if (len == 126) {
			len = ((size_t)h[2] << 8) | h[3];
			o = 4;
		} else if (len == 127) {
			len = 0;
			for (int i = 0; i < 8; i++)
				len = (len << 8) | h[2 + i];
			o = 10;
		}
		if (x->masked) {
			memcpy(x->key, h + o, 4);
			o += 4;
		}
		assert_true(at + o + len <= b->n);
		assert_true(len < sizeof(x->payload));
		for (size_t i = 0; i < len; i++)
			x->payload[i] = (char)(h[o + i] ^ (x->masked ? x->key[i & 3] : 0));
		x->payload[len] = '\0';
		x->n = len;
		at += o + len;
		k++;
	}
	assert_int_equal(at, b->n);
	return k;
}

/* ---- the layer's world ----------------------------------------------------------- */

struct world {
	struct buf up, cl;
	int holds, unholds;
	enum held_phase held_phase;
	json_t *info;
	struct ruleset *rs;
	struct rules_ws ws;
	struct wsrw *w;
};

static void w_up(void *ctx, const uint8_t *p, size_t n)
{
	buf_add(&((struct world *)ctx)->up, p, n);
}

static void w_cl(void *ctx, const uint8_t *p, size_t n)
{
	buf_add(&((struct world *)ctx)->cl, p, n);
}

static int w_hold(void *ctx, enum held_phase ph, json_t *info)
{
	struct world *x = ctx;
	x->holds++;
	x->held_phase = ph;
	json_decref(x->info);
	x->info = info;
	return 0;
}

static void w_unhold(void *ctx, enum held_phase ph, const char *why)
{
	(void)ph;
	(void)why;
	((struct world *)ctx)->unholds++;
}

static void w_random(void *ctx, uint8_t key[4])
{
	(void)ctx;
	key[0] = 0xA1;
	key[1] = 0xB2;
	key[2] = 0xC3;
	key[3] = 0xD4;
}

/* The upgrade request world_open matches the rules with. */
static const char *up_host = "ws.test", *up_path = "/chat";

static void world_open(struct world *x, const char *rules, size_t cap)
{
	memset(x, 0, sizeof(*x));
	json_error_t je;
	json_t *j = json_loads(rules, 0, &je);
	assert_non_null(j);
	struct rules_error err;
	x->rs = ruleset_new(j, "rules", NULL, NULL, &err);
	if (!x->rs)
		fail_msg("%s: %s", err.field, err.message);
	json_decref(j);
	struct http_headers h = { 0 };
	struct rules_msg m = { .scheme = "https",
			       .host = up_host,
			       .authority = up_host,
			       .path = up_path,
			       .method = "GET",
			       .req_headers = &h };
	assert_true(rules_ws_for(x->rs, &m, &x->ws));
	struct wsrw_config c = { .ops = { .to_upstream = w_up,
					  .to_client = w_cl,
					  .hold = w_hold,
					  .unhold = w_unhold,
					  .random = w_random },
				 .ctx = x,
				 .rules = x->rs,
				 .ws = &x->ws,
				 .url = "wss://ws.test/chat",
				 .msg_cap = cap };
	x->w = wsrw_new(&c);
	assert_non_null(x->w);
}

static void world_close(struct world *x)
{
	wsrw_free(x->w);
	ruleset_unref(x->rs);
	json_decref(x->info);
	buf_free(&x->up);
	buf_free(&x->cl);
}

static const char RULES_EDIT[] =
	"[{\"id\":\"e\",\"direction\":\"both\",\"conditions\":{\"path_pattern\":\"^/chat\"},"
	"\"actions\":[{\"type\":\"ws_replace\",\"regex\":\"secret\",\"replacement\":\"public\"}]},"
	"{\"id\":\"d\",\"direction\":\"both\",\"conditions\":{\"message_pattern\":\"^drop\"},"
	"\"actions\":[{\"type\":\"ws_drop\"}]}]";

static struct out_frame F[16];

/* ---- tests ------------------------------------------------------------------------- */

static void test_split_every_byte(void **state)
{
	(void)state;
	struct buf in = { 0 }, sin = { 0 };
	text(&in, true, "hello secret world");
	text(&in, true, "untouched");
	text(&sin, false, "server secret");
	for (size_t cut = 0; cut <= in.n; cut++) {
		struct world x;
		world_open(&x, RULES_EDIT, 0);
		wsrw_client(x.w, in.p, cut);
		wsrw_client(x.w, in.p + cut, in.n - cut);
		size_t cs = cut < sin.n ? cut : sin.n;
		wsrw_server(x.w, sin.p, cs);
		wsrw_server(x.w, sin.p + cs, sin.n - cs);
		assert_int_equal(decode(&x.up, F, 16), 2);
		assert_string_equal(F[0].payload, "hello public world");
		assert_true(F[0].masked && F[0].fin && F[0].op == 1);
		/* a fresh key, not the client's */
		assert_memory_equal(F[0].key, "\xA1\xB2\xC3\xD4", 4);
		/* an unchanged message goes on as it came */
		assert_string_equal(F[1].payload, "untouched");
		assert_memory_equal(x.up.p + x.up.n - (in.n - 24 - 6) - 0,
				    in.p + in.n - (in.n - 24 - 6), in.n - 24 - 6);
		assert_int_equal(decode(&x.cl, F, 16), 1);
		assert_string_equal(F[0].payload, "server public");
		assert_false(F[0].masked);
		world_close(&x);
	}
	buf_free(&in);
	buf_free(&sin);
}

static void test_fragments_and_control(void **state)
{
	(void)state;
	struct world x;
	world_open(&x, RULES_EDIT, 0);
	struct buf in = { 0 };
	frame(&in, false, 0x1, true, "a sec", 5);
	frame(&in, true, 0x9, true, "ping", 4);
	frame(&in, false, 0x0, true, "r", 1);
	frame(&in, true, 0xA, true, "pong", 4);
	frame(&in, true, 0x0, true, "et!", 3);
	for (size_t i = 0; i < in.n; i++)
		wsrw_client(x.w, in.p + i, 1);
	size_t k = decode(&x.up, F, 16);
	assert_int_equal(k, 3);
	/* the control frames at once, the message whole after them */
	assert_int_equal(F[0].op, 0x9);
	assert_string_equal(F[0].payload, "ping");
	assert_int_equal(F[1].op, 0xA);
	assert_int_equal(F[2].op, 0x1);
	assert_true(F[2].fin);
	assert_string_equal(F[2].payload, "a public!");
	buf_free(&in);

	/* unchanged fragments go on as they came, control frames first */
	buf_free(&x.up);
	frame(&in, false, 0x2, true, "bin", 3);
	frame(&in, true, 0x9, true, "", 0);
	frame(&in, true, 0x0, true, "ary", 3);
	wsrw_client(x.w, in.p, in.n);
	k = decode(&x.up, F, 16);
	assert_int_equal(k, 3);
	assert_int_equal(F[0].op, 0x9);
	assert_int_equal(F[1].op, 0x2);
	assert_false(F[1].fin);
	assert_int_equal(F[2].op, 0x0);
	assert_string_equal(F[2].payload, "ary");
	buf_free(&in);
	world_close(&x);
}

static void test_drop_and_note(void **state)
{
	(void)state;
	struct world x;
	world_open(&x, RULES_EDIT, 0);
	struct buf in = { 0 };
	text(&in, false, "drop me");
	text(&in, false, "keep me");
	wsrw_server(x.w, in.p, in.n);
	assert_int_equal(decode(&x.cl, F, 16), 1);
	assert_string_equal(F[0].payload, "keep me");
	json_t *n = wsrw_take_note(x.w);
	assert_non_null(n);
	json_t *m = json_array_get(json_object_get(n, "messages"), 0);
	assert_string_equal(json_string_value(json_object_get(m, "action")), "ws_drop");
	assert_string_equal(json_string_value(json_object_get(m, "rule")), "d");
	assert_string_equal(json_string_value(json_object_get(m, "dir")), "response");
	json_decref(n);
	assert_null(wsrw_take_note(x.w));
	buf_free(&in);
	world_close(&x);
}

static void test_cap(void **state)
{
	(void)state;
	struct world x;
	world_open(&x, RULES_EDIT, 16);
	struct buf in = { 0 };
	frame(&in, false, 0x1, true, "secret secret ", 14);
	frame(&in, true, 0x0, true, "secret secret ", 14);
	text(&in, true, "a secret");
	wsrw_client(x.w, in.p, in.n);
	/* the big one as it came, byte for byte; the next edited */
	size_t k = decode(&x.up, F, 16);
	assert_int_equal(k, 3);
	assert_memory_equal(x.up.p, in.p, 2 * (2 + 4 + 14));
	assert_string_equal(F[2].payload, "a public");
	json_t *n = wsrw_take_note(x.w);
	json_t *m = json_array_get(json_object_get(n, "messages"), 0);
	assert_string_equal(json_string_value(json_object_get(m, "action")), "over_cap");
	json_decref(n);
	buf_free(&in);
	world_close(&x);

	/* empty fragments do not grow what is kept past twice the cap */
	world_open(&x, RULES_EDIT, 64);
	frame(&in, false, 0x1, true, "", 0);
	for (int i = 0; i < 100; i++)
		frame(&in, false, 0x0, true, "", 0);
	frame(&in, true, 0x0, true, "secret", 6);
	wsrw_client(x.w, in.p, in.n);
	assert_int_equal(x.up.n, in.n); /* over the cap: as it came */
	assert_memory_equal(x.up.p, in.p, in.n);
	buf_free(&in);
	world_close(&x);

	/* a length with its top bit set breaks the protocol */
	world_open(&x, RULES_EDIT, 0);
	static const uint8_t huge[] = { 0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 'x' };
	wsrw_client(x.w, huge, sizeof(huge));
	assert_int_equal(x.up.n, sizeof(huge));
	world_close(&x);
}

static void test_protocol_error(void **state)
{
	(void)state;
	struct world x;
	world_open(&x, RULES_EDIT, 0);
	struct buf in = { 0 };
	text(&in, false, "a secret"); /* unmasked from the client */
	text(&in, true, "a secret");
	wsrw_client(x.w, in.p, 3);
	wsrw_client(x.w, in.p + 3, in.n - 3);
	assert_int_equal(x.up.n, in.n);
	assert_memory_equal(x.up.p, in.p, in.n);
	buf_free(&in);
	world_close(&x);
}

static const char RULES_BP[] =
	"[{\"id\":\"b\",\"direction\":\"both\",\"conditions\":{\"message_pattern\":\"hold\"},"
	"\"actions\":[{\"type\":\"ws_breakpoint\"}]}]";

static void test_held_released_edited(void **state)
{
	(void)state;
	struct world x;
	world_open(&x, RULES_BP, 0);
	struct buf in = { 0 };
	text(&in, true, "please hold");
	text(&in, true, "after");
	frame(&in, true, 0x9, true, "p", 1);
	wsrw_client(x.w, in.p, in.n);
	assert_int_equal(x.holds, 1);
	assert_int_equal(x.held_phase, HELD_REQUEST);
	assert_true(wsrw_holding(x.w, HELD_REQUEST));
	assert_int_equal(x.up.n, 0); /* the later ones wait behind it */
	assert_true(wsrw_backlog(x.w) > 0);
	assert_string_equal(json_string_value(json_object_get(x.info, "proto")), "websocket");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(x.info, "body"), "text")),
		"please hold");
	/* the server's side goes on meanwhile */
	struct buf s = { 0 };
	text(&s, false, "server");
	wsrw_server(x.w, s.p, s.n);
	assert_int_equal(x.cl.n, s.n);

	struct held_edits e = { 0 };
	char why[64];
	json_t *ej = json_pack("{s:s}", "body", "edited text");
	assert_int_equal(held_edits_parse(ej, HELD_REQUEST, &e, why, sizeof(why)), 0);
	json_decref(ej);
	wsrw_release(x.w, HELD_REQUEST, &e);
	held_edits_free(&e);
	assert_false(wsrw_holding(x.w, HELD_REQUEST));
	assert_int_equal(decode(&x.up, F, 16), 3);
	assert_string_equal(F[0].payload, "edited text");
	assert_true(F[0].masked);
	assert_string_equal(F[1].payload, "after");
	assert_int_equal(F[2].op, 0x9);
	json_t *n = wsrw_take_note(x.w);
	json_t *m = json_array_get(json_object_get(n, "messages"), 0);
	assert_string_equal(json_string_value(json_object_get(m, "why")), "edited");
	json_decref(n);
	buf_free(&in);
	buf_free(&s);
	world_close(&x);
}

static void test_held_killed_and_bound(void **state)
{
	(void)state;
	struct world x;
	world_open(&x, RULES_BP, 0);
	struct buf in = { 0 };
	text(&in, false, "hold on");
	text(&in, false, "then");
	wsrw_server(x.w, in.p, in.n);
	assert_int_equal(x.holds, 1);
	assert_int_equal(x.held_phase, HELD_RESPONSE);
	wsrw_kill(x.w, HELD_RESPONSE);
	wsrw_server(x.w, in.p, in.n);
	wsrw_client(x.w, in.p, in.n);
	assert_int_equal(x.cl.n, 0);
	assert_int_equal(x.up.n, 0);
	buf_free(&in);
	world_close(&x);

	/* bytes past the bound behind a held message: it goes on as it is */
	world_open(&x, RULES_BP, 0);
	text(&in, false, "hold on");
	wsrw_server(x.w, in.p, in.n);
	static uint8_t big[WSRW_MAX_HELD];
	memset(big, 'x', sizeof(big));
	wsrw_server(x.w, big, sizeof(big) - 10);
	assert_int_equal(x.unholds, 0);
	wsrw_server(x.w, big, 64);
	assert_int_equal(x.unholds, 1);
	assert_false(wsrw_holding(x.w, HELD_RESPONSE));
	assert_memory_equal(x.cl.p, in.p, in.n);
	buf_free(&in);
	world_close(&x);
}

static void test_schema(void **state)
{
	(void)state;
	static const struct {
		const char *rule, *field;
	} bad[] = {
		{ "{\"id\":\"a\",\"actions\":[{\"type\":\"ws_replace\",\"replacement\":\"x\"}]}",
		  "r.actions[0].regex" },
		{ "{\"id\":\"a\",\"actions\":[{\"type\":\"ws_replace\",\"regex\":\"(\","
		  "\"replacement\":\"x\"}]}",
		  "r.actions[0].regex" },
		{ "{\"id\":\"a\",\"actions\":[{\"type\":\"ws_drop\",\"regex\":\"x\"}]}",
		  "r.actions[0].regex" },
		{ "{\"id\":\"a\",\"conditions\":{\"message_pattern\":\"x\"},"
		  "\"actions\":[{\"type\":\"set_header\",\"name\":\"A\",\"value\":\"1\"}]}",
		  "r.conditions.message_pattern" },
		{ "{\"id\":\"a\",\"conditions\":{\"message_pattern\":\"[\"},"
		  "\"actions\":[{\"type\":\"ws_drop\"}]}",
		  "r.conditions.message_pattern" },
		{ "{\"id\":\"a\",\"direction\":\"request\","
		  "\"actions\":[{\"type\":\"ws_drop\",\"on\":\"response\"}]}",
		  "r.actions[0].on" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *j = json_loads(bad[i].rule, 0, NULL);
		assert_non_null(j);
		struct rules_error err;
		memset(&err, 0, sizeof(err));
		assert_int_equal(rules_check(j, "r", &err), -1);
		if (strcmp(err.field, bad[i].field) != 0)
			fail_msg("rule %zu: %s (%s), expected %s", i, err.field, err.message,
				 bad[i].field);
		json_decref(j);
	}
	/* the example of docs/rules.md */
	static const char DOC[] =
		"[{\"id\": \"no-typing\", \"direction\": \"response\","
		" \"match\": \"~d chat\\\\.example\\\\.com\","
		" \"conditions\": {\"path_pattern\": \"^/socket\","
		" \"message_pattern\": \"\\\"type\\\": *\\\"typing\\\"\"},"
		" \"actions\": [{\"type\": \"ws_drop\"}]},"
		" {\"id\": \"premium\", \"direction\": \"both\","
		" \"conditions\": {\"path_pattern\": \"^/socket\"},"
		" \"actions\": [{\"type\": \"ws_replace\", \"regex\": \"\\\"premium\\\": *false\","
		" \"replacement\": \"\\\"premium\\\": true\"}]}]";
	struct world x;
	up_host = "chat.example.com";
	up_path = "/socket";
	world_open(&x, DOC, 0);
	up_host = "ws.test";
	up_path = "/chat";
	assert_int_equal(x.ws.n, 2);
	struct buf in = { 0 };
	text(&in, false, "{\"type\": \"typing\"}");
	text(&in, false, "{\"premium\": false}");
	wsrw_server(x.w, in.p, in.n);
	assert_int_equal(decode(&x.cl, F, 16), 1);
	assert_string_equal(F[0].payload, "{\"premium\": true}");
	buf_free(&in);
	world_close(&x);

	/* ws_ actions are not part of an HTTP plan; the upgrade selects them */
	json_t *j = json_loads("[{\"id\":\"w\",\"conditions\":{\"path_pattern\":\"^/ws\"},"
			       "\"actions\":[{\"type\":\"ws_drop\"}]}]",
			       0, NULL);
	struct rules_error err;
	struct ruleset *rs = ruleset_new(j, "rules", NULL, NULL, &err);
	assert_non_null(rs);
	json_decref(j);
	struct http_headers h = { 0 };
	struct rules_msg m = { .scheme = "https",
			       .host = "x",
			       .authority = "x",
			       .path = "/ws",
			       .method = "GET",
			       .req_headers = &h };
	struct rules_plan plan;
	assert_false(rules_plan_for(rs, RULE_REQUEST, &m, &plan));
	struct rules_ws ws;
	assert_true(rules_ws_for(rs, &m, &ws));
	m.path = "/other";
	assert_false(rules_ws_for(rs, &m, &ws));
	ruleset_unref(rs);
}

/* ---- through the HTTP/1.1 layer --------------------------------------------------- */

static void h_up(void *ctx, const uint8_t *p, size_t n)
{
	buf_add(&((struct world *)ctx)->up, p, n);
}

static void h_cl(void *ctx, const uint8_t *p, size_t n)
{
	buf_add(&((struct world *)ctx)->cl, p, n);
}

static void h_reset(void *ctx, const char *id)
{
	(void)ctx;
	(void)id;
	fail_msg("reset");
}

static struct h1rw *h1_open(struct world *x, const char *rules)
{
	memset(x, 0, sizeof(*x));
	json_t *j = json_loads(rules, 0, NULL);
	struct rules_error err;
	x->rs = ruleset_new(j, "rules", NULL, NULL, &err);
	assert_non_null(x->rs);
	json_decref(j);
	struct h1rw_config c = {
		.ops = { .to_upstream = h_up, .to_client = h_cl, .reset = h_reset },
		.ctx = x,
		.rules = x->rs,
		.scheme = "https",
		.default_authority = "ws.test:443"
	};
	struct h1rw *w = h1rw_new(&c);
	assert_non_null(w);
	return w;
}

static const char UPGRADE[] =
	"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n"
	"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	"Sec-WebSocket-Version: 13\r\n"
	"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
static const char SWITCH[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			     "Connection: Upgrade\r\n"
			     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

static void test_h1rw_upgrade(void **state)
{
	(void)state;
	struct world x;
	struct h1rw *w = h1_open(&x, RULES_EDIT);
	struct buf in = { 0 };
	buf_add(&in, UPGRADE, strlen(UPGRADE));
	text(&in, true, "early secret"); /* before the 101: it waits */
	h1rw_client(w, in.p, in.n);
	x.up.p[x.up.n] = '\0';
	assert_null(strstr((char *)x.up.p, "Sec-WebSocket-Extensions"));
	assert_non_null(strstr((char *)x.up.p, "Sec-WebSocket-Key"));
	size_t head = x.up.n;
	assert_non_null(strstr((char *)x.up.p, "\r\n\r\n"));
	assert_int_equal((size_t)(strstr((char *)x.up.p, "\r\n\r\n") - (char *)x.up.p) + 4, head);
	json_t *note = h1rw_take_note(w);
	assert_non_null(json_object_get(note, "websocket_rules"));
	json_decref(note);

	struct buf sv = { 0 };
	buf_add(&sv, SWITCH, strlen(SWITCH));
	text(&sv, false, "a secret from the server");
	h1rw_server(w, sv.p, sv.n);
	assert_true(h1rw_websocket(w));
	assert_true(x.cl.n > strlen(SWITCH));
	assert_memory_equal(x.cl.p, "HTTP/1.1 101", 12);
	struct buf frames = { .p = x.cl.p + strlen(SWITCH), .n = x.cl.n - strlen(SWITCH) };
	assert_int_equal(decode(&frames, F, 16), 1);
	assert_string_equal(F[0].payload, "a public from the server");
	struct buf upf = { .p = x.up.p + head, .n = x.up.n - head };
	assert_int_equal(decode(&upf, F, 16), 1);
	assert_string_equal(F[0].payload, "early public");
	buf_free(&in);
	text(&in, true, "drop this");
	text(&in, true, "later secret");
	h1rw_client(w, in.p, in.n);
	upf = (struct buf){ .p = x.up.p + head, .n = x.up.n - head };
	assert_int_equal(decode(&upf, F, 16), 2);
	assert_string_equal(F[1].payload, "later public");
	note = h1rw_take_ws_note(w);
	assert_non_null(note);
	json_decref(note);
	h1rw_free(w);
	buf_free(&in);
	buf_free(&sv);
	world_close(&x);

	/* refused: what waited goes on as it came, then everything as it is */
	w = h1_open(&x, RULES_EDIT);
	buf_add(&in, UPGRADE, strlen(UPGRADE));
	text(&in, true, "early secret");
	h1rw_client(w, in.p, in.n);
	head = x.up.n;
	static const char NO[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
	h1rw_server(w, (const uint8_t *)NO, strlen(NO));
	assert_false(h1rw_websocket(w));
	assert_int_equal(x.up.n - head, 2 + 4 + 12);
	assert_memory_equal(x.up.p + head, in.p + strlen(UPGRADE), 18);
	h1rw_free(w);
	buf_free(&in);
	world_close(&x);

	/* no message rule for this path: an upgrade passes through as before */
	w = h1_open(&x, "[{\"id\":\"h\",\"conditions\":{\"path_pattern\":\"^/x\"},"
			"\"actions\":[{\"type\":\"ws_drop\"}]}]");
	buf_add(&in, UPGRADE, strlen(UPGRADE));
	h1rw_client(w, in.p, in.n);
	x.up.p[x.up.n] = '\0';
	assert_non_null(strstr((char *)x.up.p, "Sec-WebSocket-Extensions"));
	h1rw_free(w);
	buf_free(&in);
	world_close(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_every_byte),
		cmocka_unit_test(test_fragments_and_control),
		cmocka_unit_test(test_drop_and_note),
		cmocka_unit_test(test_cap),
		cmocka_unit_test(test_protocol_error),
		cmocka_unit_test(test_held_released_edited),
		cmocka_unit_test(test_held_killed_and_bound),
		cmocka_unit_test(test_schema),
		cmocka_unit_test(test_h1rw_upgrade),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
