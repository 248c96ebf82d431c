/* libFuzzer target for the active HTTP/1.1 layer (mitm/h1rw.h): both
 * directions of one connection under one of a few fixed rule sets.
 *
 * Input: byte 0 picks the rule set; then records of [op][len][len bytes]:
 * op bit 0 says which side speaks (0 the client, 1 the upstream), bit 1
 * ends the upstream's stream after the bytes, bit 2 ends a running delay
 * or retarget first, bit 3 fails a running retarget instead; then, for
 * breakpoints, bit 4 releases a held request and bit 6 a held response
 * (bit 5: with edits), bit 7 kills what is held. The caller's duties are
 * kept as relay.c keeps them: the client is
 * not fed while the layer holds more than H1RW_MAX_HELD / 2 of its bytes,
 * and the notes are taken.
 *
 * Invariants beyond "no crash / no sanitizer report": nothing is written
 * after a reset or a failed retarget, a delay or retarget is only asked
 * for while none runs, a retarget names an http(s) server, nothing is
 * written after a kill, one request and one response at most are held, the held
 * client bytes stay within H1RW_MAX_HELD plus one chunk, and what goes to
 * either side is bounded by what came in plus the answers' size. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/h1rw.h"
#include "mitm/http1.h"
#include "mitm/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const SETS[] = {
	/* headers both ways, a delay, a status */
	"[{\"id\":\"h\",\"direction\":\"both\",\"actions\":["
	"{\"type\":\"set_header\",\"name\":\"X-A\",\"value\":\"1\"},"
	"{\"type\":\"remove_header\",\"name\":\"Cookie\"},"
	"{\"type\":\"add_header\",\"name\":\"X-B\",\"value\":\"2\",\"on\":\"response\"},"
	"{\"type\":\"delay\",\"ms\":5},"
	"{\"type\":\"set_status\",\"status\":418}]}]",
	/* body edits both ways */
	"[{\"id\":\"b\",\"direction\":\"both\",\"actions\":["
	"{\"type\":\"replace_body\",\"regex\":\"a+\",\"replacement\":\"[$0]\"},"
	"{\"type\":\"set_json\",\"path\":\"user.name\",\"value\":\"dog\"}]}]",
	/* a mock on one path, a block on another, a reset on a third */
	"[{\"id\":\"m\",\"conditions\":{\"path_pattern\":\"^/m\"},\"actions\":["
	"{\"type\":\"mock\",\"status\":200,\"headers\":{\"Content-Type\":\"text/plain\"},"
	"\"body\":\"mocked\"}]},"
	"{\"id\":\"k\",\"conditions\":{\"path_pattern\":\"^/b\"},\"actions\":["
	"{\"type\":\"block\",\"status\":403}]},"
	"{\"id\":\"r\",\"conditions\":{\"path_pattern\":\"^/r\"},\"actions\":["
	"{\"type\":\"block\",\"status\":444}]}]",
	/* a filter match, methods and a header condition */
	"[{\"id\":\"f\",\"match\":\"~m POST & ~h json\",\"conditions\":{\"methods\":[\"POST\"],"
	"\"header_match\":{\"Content-Type\":\"json\"}},\"actions\":["
	"{\"type\":\"set_json\",\"path\":\"items.0\",\"value\":7},"
	"{\"type\":\"set_header\",\"name\":\"Content-Length\",\"value\":\"9\"}]},"
	"{\"id\":\"s\",\"direction\":\"response\",\"match\":\"~s\",\"actions\":["
	"{\"type\":\"replace_body\",\"body\":\"whole\"}]}]",
	/* redirects: another server, the same one with another path, a delay */
	"[{\"id\":\"x\",\"conditions\":{\"path_pattern\":\"^/x\"},\"actions\":["
	"{\"type\":\"redirect\",\"url_regex\":\"^https://[^/]*/x\","
	"\"replacement\":\"http://staging.test:8080/y\"}]},"
	"{\"id\":\"p\",\"conditions\":{\"path_pattern\":\"^/p\"},\"actions\":["
	"{\"type\":\"redirect\",\"path\":\"/q\"}]},"
	"{\"id\":\"d\",\"conditions\":{\"path_pattern\":\"^/d\"},\"actions\":["
	"{\"type\":\"delay\",\"ms\":3},"
	"{\"type\":\"redirect\",\"host\":\"other.test\",\"port\":9443}]}]",
	/* breakpoints: requests on one path, responses on another, a header edit */
	"[{\"id\":\"q\",\"conditions\":{\"path_pattern\":\"^/h\"}},"
	"{\"id\":\"s\",\"direction\":\"response\",\"conditions\":{\"path_pattern\":\"^/[hs]\"}},"
	"{\"id\":\"e\",\"direction\":\"both\",\"actions\":["
	"{\"type\":\"set_header\",\"name\":\"X-A\",\"value\":\"1\"},"
	"{\"type\":\"replace_body\",\"regex\":\"a\",\"replacement\":\"b\"}]}]",
};
/* The edits a release with edits makes, for each phase. */
static const char EDITS_REQ[] = "{\"method\":\"PUT\",\"path\":\"/x?y\",\"headers\":[[\"A\",\"1\"],"
				"[\"Transfer-Encoding\",\"chunked\"]],\"body\":\"edited\"}";
static const char EDITS_RESP[] = "{\"status\":299,\"remove_headers\":[\"Content-Length\"],"
				 "\"set_headers\":{\"X-B\":\"2\"},\"body\":\"\"}";
static struct held_edits edits_req, edits_resp;
#define NSETS (sizeof(SETS) / sizeof(SETS[0]))

static struct ruleset *sets[NSETS];

struct sink {
	struct h1rw *w;
	bool reset, delaying, failed, killed;
	bool held[2];
	uint64_t up, cl;
};

static void to_upstream(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	(void)p;
	if (s->reset || s->failed || s->killed)
		__builtin_trap();
	s->up += n;
}

static void to_client(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	(void)p;
	if (s->reset || s->failed || s->killed)
		__builtin_trap();
	s->cl += n;
}

static void on_reset(void *ctx, const char *rule_id)
{
	struct sink *s = ctx;
	if (!rule_id || s->reset)
		__builtin_trap();
	s->reset = true;
}

static void on_delay(void *ctx, uint32_t ms)
{
	struct sink *s = ctx;
	if (s->delaying || ms == 0)
		__builtin_trap();
	s->delaying = true;
}

static void on_retarget(void *ctx, const struct h1rw_target *t)
{
	struct sink *s = ctx;
	if (s->delaying)
		__builtin_trap();
	if (t && (t->port == 0 || !t->host[0] ||
		  (strcmp(t->scheme, "http") != 0 && strcmp(t->scheme, "https") != 0)))
		__builtin_trap();
	s->delaying = true;
}

static int on_hold(void *ctx, enum held_phase ph, json_t *info)
{
	struct sink *s = ctx;
	if (s->held[ph - 1] || !json_is_object(info) || !json_object_get(info, "url"))
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

static void drain_notes(struct h1rw *w)
{
	json_t *n;
	while ((n = h1rw_take_note(w)) != NULL)
		json_decref(n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	if (!sets[0]) {
		for (size_t i = 0; i < NSETS; i++) {
			json_t *j = json_loads(SETS[i], 0, NULL);
			struct rules_error err;
			sets[i] = j ? ruleset_new(j, "rules", NULL, NULL, &err) : NULL;
			json_decref(j);
			if (!sets[i]) {
				fprintf(stderr, "rule set %zu: %s: %s\n", i, err.field,
					err.message);
				abort();
			}
		}
		char why[256];
		json_t *a = json_loads(EDITS_REQ, 0, NULL), *b = json_loads(EDITS_RESP, 0, NULL);
		if (held_edits_parse(a, HELD_REQUEST, &edits_req, why, sizeof(why)) < 0 ||
		    held_edits_parse(b, HELD_RESPONSE, &edits_resp, why, sizeof(why)) < 0) {
			fprintf(stderr, "edits: %s\n", why);
			abort();
		}
		json_decref(a);
		json_decref(b);
	}
	struct sink s = { 0 };
	struct h1rw_config cfg = {
		.ops = { .to_upstream = to_upstream,
			 .to_client = to_client,
			 .reset = on_reset,
			 .delay = on_delay,
			 .retarget = on_retarget,
			 .hold = on_hold,
			 .unhold = on_unhold },
		.ctx = &s,
		.rules = sets[data[0] % NSETS],
		.peer = "phone",
		.scheme = "https",
		.default_authority = "203.0.113.10:443",
		.body_cap = 1024,
	};
	struct h1rw *w = h1rw_new(&cfg);
	if (!w)
		return 0;
	s.w = w;
	uint64_t in_up = 0, in_cl = 0;
	size_t i = 1;
	while (i + 2 <= size && !s.reset) {
		uint8_t op = data[i];
		size_t len = data[i + 1];
		i += 2;
		if (len > size - i)
			len = size - i;
		if ((op & 12) && s.delaying) {
			s.delaying = false;
			if (op & 8) {
				h1rw_upstream_failed(w, "refused");
				s.failed = true; /* the 502 is out: nothing more */
			} else {
				h1rw_resume(w);
			}
		}
		if (s.reset || s.failed)
			break;
		if ((op & 16) && s.held[0]) {
			s.held[0] = false;
			h1rw_release(w, HELD_REQUEST, (op & 32) ? &edits_req : NULL);
		}
		if ((op & 64) && s.held[1] && !s.reset) {
			s.held[1] = false;
			h1rw_release(w, HELD_RESPONSE, (op & 32) ? &edits_resp : NULL);
		}
		if ((op & 128) && (s.held[0] || s.held[1]) && !s.reset) {
			h1rw_kill(w, s.held[0] ? HELD_REQUEST : HELD_RESPONSE);
			s.killed = true;
		}
		if (s.reset || s.killed)
			break;
		if (op & 1) {
			in_cl += len;
			h1rw_server(w, data + i, len);
			if (!s.reset && (op & 2))
				h1rw_server_eof(w);
		} else if (h1rw_backlog(w) <= H1RW_MAX_HELD / 2) {
			in_up += len;
			h1rw_client(w, data + i, len);
		}
		if (h1rw_backlog(w) > H1RW_MAX_HELD + 256)
			__builtin_trap();
		i += len;
		drain_notes(w);
	}
	while (s.delaying && !s.reset && !s.failed && !s.killed) {
		s.delaying = false;
		h1rw_resume(w);
	}
	/* Released as the API would: the item leaves the registry first, and
	 * a request pipelined behind may be held next (bounded: each release
	 * takes a whole message from what was held). */
	for (int round = 0; round < 2 * HTTP1_MAX_PENDING && !s.reset && !s.killed; round++) {
		int ph = s.held[0] ? 0 : s.held[1] ? 1 : -1;
		if (ph < 0)
			break;
		s.held[ph] = false;
		h1rw_release(w, ph == 0 ? HELD_REQUEST : HELD_RESPONSE, NULL);
	}
	drain_notes(w);
	/* Heads are written again and answers added, but nothing grows
	 * without bound: a generous multiple of what came in. */
	if (s.up > 4 * in_up + 65536 || s.cl > 4 * in_cl + 65536 * 4)
		__builtin_trap();
	h1rw_free(w);
	return 0;
}
