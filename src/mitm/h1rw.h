/* The active HTTP/1.1 layer: terminates HTTP/1.1 on both legs of one
 * intercepted connection and applies the interception rules (mitm/rules.h)
 * to each message. Only connections that a rule may apply to get one
 * (ruleset_may_apply); all others stay on the relay's byte-for-byte path.
 *
 * Sans-IO: feed the plaintext from each side, get the bytes for each side
 * through the callbacks. Two llhttp parsers, message by message; requests
 * go upstream in order and keep-alive and pipelining stay intact, but a
 * request waits while one before it is held (a delay) and a mocked answer
 * waits until every response before it has gone to the client.
 *
 * What it writes: each head is written again from its parsed form (the
 * request line or status line, the headers in order, edited); bodies are
 * passed on as they come (Content-Length bodies byte for byte, chunked
 * bodies in chunks of their own, trailers dropped), except when a body
 * edit needs the whole body: it is then kept up to `body_cap` bytes and
 * sent with a new Content-Length. Past the cap, or when the body is
 * compressed (a Content-Encoding other than identity), the edit is skipped,
 * what was kept goes on unchanged, and the exchange's note says why.
 *
 * A redirect rewrites the request line and the Host header; when it names
 * another server (scheme, host or port), the upstream changes between
 * messages (ops.retarget), after every response due from the one before.
 *
 * After an upgrade (101, a CONNECT) or a parse error, the rest of the
 * connection passes through unchanged both ways, except a WebSocket whose
 * upgrade request selected message rules (rules_ws_for): that request goes
 * without Sec-WebSocket-Extensions, the client's bytes after it wait for
 * the response, and after a 101 both sides go through the WebSocket layer
 * (mitm/wsrw.h); its held messages use ops.hold / h1rw_release /
 * h1rw_kill as HTTP messages do (HELD_REQUEST: from the client).
 *
 * Each exchange gets a note (a JSON object for the "rules" key of its http
 * record, docs/flows.md), taken in order with h1rw_take_note. Bounded:
 * HTTP1_MAX_PENDING requests without a response, heads by
 * HTTPFLOW_MAX_HEADER_BYTES, client bytes held by H1RW_MAX_HELD (the
 * caller pauses the client above h1rw_backlog). Loop thread only. */
#ifndef WGMITM_MITM_H1RW_H
#define WGMITM_MITM_H1RW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mitm/held.h"

#define H1RW_DEFAULT_BODY_CAP (4u << 20)
#define H1RW_MAX_HELD (1u << 20)

struct ruleset;
struct h1rw;
struct h1rw_target;

struct h1rw_ops {
	void (*to_upstream)(void *ctx, const uint8_t *p, size_t n);
	void (*to_client)(void *ctx, const uint8_t *p, size_t n);
	/* A block rule with status 444: reset the connection (both ways). */
	void (*reset)(void *ctx, const char *rule_id);
	/* Bytes for the upstream are held from now on: call h1rw_resume in
	 * ms (one delay runs at a time; the next is asked for then). */
	void (*delay)(void *ctx, uint32_t ms);
	/* A redirect (map remote): bytes for the upstream go to `t` from now
	 * on (NULL: back to the server the client dialled). Open it and call
	 * h1rw_resume once it is up, or h1rw_upstream_failed; never call
	 * either from inside. Asked only when no response of the current
	 * server is due. NULL: redirects to another server are skipped. */
	void (*retarget)(void *ctx, const struct h1rw_target *t);
	/* A throttle rule: bytes of the current request (RULE_REQUEST, from
	 * the client) or response (RULE_RESPONSE, from the upstream) come at
	 * most `rate` bytes/s from now on; 0 ends it. NULL: skipped. */
	void (*throttle)(void *ctx, int phase, uint64_t rate);
	/* A breakpoint holds a message (docs/rules.md, "Breakpoints"): a
	 * request once it has all come from the client, before any of it
	 * goes upstream (the requests behind it wait, in order), or a
	 * response once it has all come from the server, before any of it
	 * goes to the client. `info` (stolen) describes it for the registry
	 * (mitm/held.h). Return 0 and later call h1rw_release or h1rw_kill
	 * (never from inside); nonzero: not held, it goes on as it is. One
	 * request and one response at most are held at a time. NULL:
	 * breakpoints are skipped. */
	int (*hold)(void *ctx, enum held_phase phase, json_t *info);
	/* The layer released a held message itself (server bytes over the
	 * bound while a response was held, or the server closed): forget
	 * its item. */
	void (*unhold)(void *ctx, enum held_phase phase, const char *why);
};

struct h1rw_target {
	char scheme[8]; /* "https" or "http" */
	char host[256]; /* a name or an IP literal (no brackets) */
	uint16_t port;
};

struct h1rw_config {
	struct h1rw_ops ops;
	void *ctx;
	struct ruleset *rules;         /* a reference is taken */
	const char *peer;              /* copied; NULL: none */
	const char *scheme;            /* "https" or "http" */
	const char *default_authority; /* the server "ip:port" (copied) */
	/* Every request's Host (:authority) replaced by this before the rules
	 * see it: a reverse listener's upstream (copied); NULL: kept. */
	const char *upstream_authority;
	size_t body_cap; /* 0: H1RW_DEFAULT_BODY_CAP */
};

struct h1rw *h1rw_new(const struct h1rw_config *cfg);
void h1rw_free(struct h1rw *w);

/* Plaintext from the client / from the upstream. The callbacks are called
 * from inside; after `reset` nothing more is written. */
void h1rw_client(struct h1rw *w, const uint8_t *p, size_t n);
void h1rw_server(struct h1rw *w, const uint8_t *p, size_t n);
/* The upstream ended its stream (a response without a length ends here). */
void h1rw_server_eof(struct h1rw *w);

/* A delay is over, or the server of a retarget is up: what it held goes
 * upstream. */
void h1rw_resume(struct h1rw *w);
/* The server of a retarget cannot be reached (`why`): the client gets a
 * 502 saying so and the connection is over (nothing more is written;
 * close it once that answer is out). */
void h1rw_upstream_failed(struct h1rw *w, const char *why);

/* A held message goes on, as it is (e NULL) or edited: a request's
 * method, target, headers and body, a response's status, headers and
 * body (Content-Length follows a new body). */
void h1rw_release(struct h1rw *w, enum held_phase phase, const struct held_edits *e);
/* A held message is killed: nothing more is written (end the connection;
 * its exchange's note says "killed"). */
void h1rw_kill(struct h1rw *w, enum held_phase phase);
/* Whether a message of `phase` is held now. */
bool h1rw_holding(const struct h1rw *w, enum held_phase phase);

/* Client bytes held now (pause the client above H1RW_MAX_HELD / 2). */
size_t h1rw_backlog(const struct h1rw *w);

/* Whether the connection is a WebSocket going through the message rules. */
bool h1rw_websocket(const struct h1rw *w);
/* What the message rules did since the last call (wsrw_take_note), NULL:
 * nothing, or not a WebSocket. */
json_t *h1rw_take_ws_note(struct h1rw *w);

/* The next exchange's note, oldest first (a new reference), or NULL. */
json_t *h1rw_take_note(struct h1rw *w);

#endif
