/* libFuzzer target for the active WebSocket layer (mitm/wsrw.h): both
 * directions of one upgraded connection under one of a few fixed rule sets.
 *
 * Input: byte 0 picks the rule set (low bits), a small message cap (bit
 * 7) and the way in (bit 6: through the HTTP/1.1 layer, mitm/h1rw.h, which
 * gets a WebSocket upgrade request from the client first, so the server's
 * bytes start with its response); then records of [op][len][len bytes]: op bit 0 says which side
 * speaks (0 the client, 1 the server); before the bytes, bit 1 releases a
 * held message of that side (bit 2: with an edited body), bit 3 kills it;
 * after them, bit 4 ends that side's stream. The caller's duties are kept
 * as relay.c keeps them: the client is not fed while its backlog is over
 * WSRW_MAX_HELD / 2, and notes are taken.
 *
 * Invariants beyond "no crash / no sanitizer report": nothing is written
 * after a kill; a side is held once at a time and released only when held;
 * the backlog stays within WSRW_MAX_HELD; under the rule set that matches
 * nothing every byte in comes out, on its own side, once both sides
 * ended. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/h1rw.h"
#include "mitm/rules.h"
#include "mitm/wsrw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const SETS[] = {
	/* a rule that never changes anything (every byte comes out) */
	"[{\"id\":\"n\",\"direction\":\"both\",\"actions\":["
	"{\"type\":\"ws_replace\",\"regex\":\"(?!)\",\"replacement\":\"x\"}]}]",
	/* edits and drops both ways */
	"[{\"id\":\"e\",\"direction\":\"both\",\"actions\":["
	"{\"type\":\"ws_replace\",\"regex\":\"a+\",\"replacement\":\"[$0]\"},"
	"{\"type\":\"ws_replace\",\"regex\":\"b\",\"replacement\":\"\"}]},"
	"{\"id\":\"d\",\"direction\":\"both\",\"conditions\":{\"message_pattern\":\"^d\"},"
	"\"actions\":[{\"type\":\"ws_drop\"}]}]",
	/* breakpoints on one side, edits on the other */
	"[{\"id\":\"b\",\"direction\":\"both\",\"conditions\":{\"message_pattern\":\"h\"},"
	"\"actions\":[{\"type\":\"ws_breakpoint\"}]},"
	"{\"id\":\"r\",\"direction\":\"response\",\"actions\":["
	"{\"type\":\"ws_replace\",\"regex\":\"x\",\"replacement\":\"\\u00e9\"},"
	"{\"type\":\"ws_breakpoint\"}]}]",
	/* the client's messages only */
	"[{\"id\":\"c\",\"actions\":[{\"type\":\"ws_drop\"}]}]",
};
#define NSETS (sizeof(SETS) / sizeof(SETS[0]))

static struct ruleset *sets[NSETS];
static struct held_edits edits;

struct sink {
	bool killed;
	bool held[2];
	uint64_t out[2]; /* to the upstream, to the client */
};

static void to_upstream(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	(void)p;
	if (s->killed)
		__builtin_trap();
	s->out[0] += n;
}

static void to_client(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	(void)p;
	if (s->killed)
		__builtin_trap();
	s->out[1] += n;
}

static int on_hold(void *ctx, enum held_phase ph, json_t *info)
{
	struct sink *s = ctx;
	if (s->held[ph - 1] || !json_is_object(info) ||
	    strcmp(json_string_value(json_object_get(info, "proto")), "websocket") != 0)
		__builtin_trap();
	json_decref(info);
	s->held[ph - 1] = true;
	return 0;
}

static void on_unhold(void *ctx, enum held_phase ph, const char *why)
{
	struct sink *s = ctx;
	if (!s->held[ph - 1] || !why)
		__builtin_trap();
	s->held[ph - 1] = false;
}

static void fixed_key(void *ctx, uint8_t key[4])
{
	(void)ctx;
	memcpy(key, "\x01\x02\x03\x04", 4);
}

static void init(void)
{
	for (size_t i = 0; i < NSETS; i++) {
		json_t *j = json_loads(SETS[i], 0, NULL);
		struct rules_error err;
		sets[i] = ruleset_new(j, "rules", NULL, NULL, &err);
		json_decref(j);
		if (!sets[i])
			__builtin_trap();
	}
	json_t *e = json_pack("{s:s}", "body", "edited");
	char why[64];
	if (held_edits_parse(e, HELD_REQUEST, &edits, why, sizeof(why)) < 0)
		__builtin_trap();
	json_decref(e);
}

static void on_reset(void *ctx, const char *rule_id)
{
	(void)ctx;
	(void)rule_id;
	__builtin_trap(); /* no block rule */
}

static const char UPGRADE[] = "GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n"
			      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
			      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			      "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n";

/* Through the HTTP/1.1 layer: the same duties, its entry points. */
static void via_h1rw(const uint8_t *data, size_t size, struct ruleset *rs)
{
	struct sink s = { 0 };
	struct h1rw_config c = { .ops = { .to_upstream = to_upstream,
					  .to_client = to_client,
					  .reset = on_reset,
					  .hold = on_hold,
					  .unhold = on_unhold },
				 .ctx = &s,
				 .rules = rs,
				 .scheme = "https",
				 .default_authority = "ws.test:443" };
	struct h1rw *w = h1rw_new(&c);
	if (!w)
		return;
	h1rw_client(w, (const uint8_t *)UPGRADE, sizeof(UPGRADE) - 1);
	json_decref(h1rw_take_note(w));
	bool ended = false;
	size_t at = 1;
	while (at + 2 <= size) {
		uint8_t op = data[at];
		size_t len = data[at + 1];
		at += 2;
		if (len > size - at)
			len = size - at;
		int side = op & 1;
		enum held_phase ph = side ? HELD_RESPONSE : HELD_REQUEST;
		if ((op & 0x02) && s.held[side]) {
			s.held[side] = false;
			h1rw_release(w, ph, (op & 0x04) ? &edits : NULL);
		}
		if ((op & 0x08) && s.held[side]) {
			s.held[side] = false;
			h1rw_kill(w, ph);
			s.killed = true;
		}
		if (!s.killed && (s.held[0] != h1rw_holding(w, HELD_REQUEST) ||
				  s.held[1] != h1rw_holding(w, HELD_RESPONSE)))
			__builtin_trap();
		if (side && !ended)
			h1rw_server(w, data + at, len);
		else if (!side && h1rw_backlog(w) <= H1RW_MAX_HELD / 2)
			h1rw_client(w, data + at, len);
		if (h1rw_backlog(w) > H1RW_MAX_HELD + 2 * 65536)
			__builtin_trap();
		if ((op & 0x10) && side && !ended) {
			ended = true;
			h1rw_server_eof(w);
		}
		at += len;
		json_decref(h1rw_take_ws_note(w));
		json_decref(h1rw_take_note(w));
	}
	h1rw_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!sets[0])
		init();
	if (size < 1)
		return 0;
	size_t set = (data[0] & 0x3F) % NSETS;
	if (data[0] & 0x40) {
		via_h1rw(data, size, sets[set]);
		return 0;
	}
	struct http_headers h = { 0 };
	struct rules_msg m = { .scheme = "https",
			       .host = "ws.test",
			       .authority = "ws.test",
			       .path = "/",
			       .method = "GET",
			       .req_headers = &h };
	struct rules_ws ws;
	if (!rules_ws_for(sets[set], &m, &ws))
		__builtin_trap();
	struct sink s = { 0 };
	struct wsrw_config c = { .ops = { .to_upstream = to_upstream,
					  .to_client = to_client,
					  .hold = on_hold,
					  .unhold = on_unhold,
					  .random = fixed_key },
				 .ctx = &s,
				 .rules = sets[set],
				 .ws = &ws,
				 .url = "wss://ws.test/",
				 .msg_cap = (data[0] & 0x80) ? 64 : 0 };
	struct wsrw *w = wsrw_new(&c);
	if (!w)
		return 0;
	uint64_t in[2] = { 0, 0 };
	bool ended[2] = { false, false };
	size_t at = 1;
	while (at + 2 <= size) {
		uint8_t op = data[at];
		size_t len = data[at + 1];
		at += 2;
		if (len > size - at)
			len = size - at;
		int side = op & 1;
		enum held_phase ph = side ? HELD_RESPONSE : HELD_REQUEST;
		if ((op & 0x02) && s.held[side]) {
			s.held[side] = false;
			wsrw_release(w, ph, (op & 0x04) ? &edits : NULL);
		}
		if ((op & 0x08) && s.held[side]) {
			s.held[side] = false;
			wsrw_kill(w, ph);
			s.killed = true;
		}
		if (!s.killed && (s.held[0] != wsrw_holding(w, HELD_REQUEST) ||
				  s.held[1] != wsrw_holding(w, HELD_RESPONSE)))
			__builtin_trap();
		if (!ended[side] && !(side == 0 && wsrw_backlog(w) > WSRW_MAX_HELD / 2)) {
			if (side)
				wsrw_server(w, data + at, len);
			else
				wsrw_client(w, data + at, len);
			in[side] += len;
		}
		if (wsrw_backlog(w) > WSRW_MAX_HELD)
			__builtin_trap();
		if ((op & 0x10) && !ended[side]) {
			ended[side] = true;
			wsrw_eof(w, ph);
			if (s.held[side] && !s.killed)
				__builtin_trap();
		}
		at += len;
		json_decref(wsrw_take_note(w));
	}
	if (set == 0 && !s.killed) {
		for (int i = 0; i < 2; i++)
			if (!ended[i])
				wsrw_eof(w, i ? HELD_RESPONSE : HELD_REQUEST);
		if (s.out[0] != in[0] || s.out[1] != in[1])
			__builtin_trap();
	}
	json_decref(wsrw_take_note(w));
	wsrw_free(w);
	return 0;
}
