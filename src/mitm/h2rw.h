/* The active HTTP/2 layer: terminates HTTP/2 on both legs of one
 * intercepted connection (ALPN h2) and applies the interception rules
 * (mitm/rules.h) to each request and response. Only connections that a
 * rule may apply to get one (ruleset_may_apply); all others stay on the
 * relay's byte-for-byte path.
 *
 * Sans-IO: feed the plaintext from each side, get the bytes for each side
 * through the callbacks. Towards the client an nghttp2 server session,
 * towards the upstream an nghttp2 client session; each client stream maps
 * to one upstream stream (none when answered here).
 *
 * Per stream: header edits (":authority" is edited as "host"), set_status,
 * mock and block answered here without an upstream stream (block 444
 * resets that stream only: RST_STREAM INTERNAL_ERROR), delays that hold
 * one stream while the others go on, body edits that keep the body up to
 * `body_cap` (past the cap, past the connection's H2RW_MAX_KEPT, or with a
 * Content-Encoding, the edit is skipped and the note says why). Trailers
 * pass both ways.
 *
 * Flow control is manual on both sessions: DATA read from one side is
 * acknowledged (WINDOW_UPDATE) only once the other side's session has
 * taken it, so a slow reader or a held stream costs at most its stream
 * window (H2RW_STREAM_WINDOW) and never blocks the others until more than
 * H2RW_CONN_WINDOW / H2RW_STREAM_WINDOW streams are stuck at once; kept
 * bodies are bounded by body_cap per stream and H2RW_MAX_KEPT in all.
 *
 * Each stream gets a note (a JSON object for the "rules" key of its http
 * record, docs/flows.md), taken by the client's stream id. Loop thread
 * only; the callbacks must not call back into the layer. */
#ifndef WGMITM_MITM_H2RW_H
#define WGMITM_MITM_H2RW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define H2RW_DEFAULT_BODY_CAP (4u << 20)
#define H2RW_STREAM_WINDOW 65535u
#define H2RW_CONN_WINDOW (16u * 65535u)
#define H2RW_MAX_STREAMS 100u     /* concurrent streams offered to the client */
#define H2RW_MAX_KEPT (16u << 20) /* body bytes kept for edits, all streams */
#define H2RW_MAX_NOTES 1024u      /* finished notes waiting for their record */

struct ruleset;
struct h2rw;

struct h2rw_ops {
	void (*to_upstream)(void *ctx, const uint8_t *p, size_t n);
	void (*to_client)(void *ctx, const uint8_t *p, size_t n);
	/* Call h2rw_timeout in `ms` (replaces the last request; a call that
	 * finds nothing due is harmless). */
	void (*timer)(void *ctx, uint32_t ms);
	/* A protocol error on one side: the GOAWAYs are out, nothing more
	 * will be written; the caller ends the connection. */
	void (*fail)(void *ctx, const char *why);
	/* Monotonic milliseconds; NULL: CLOCK_MONOTONIC. */
	uint64_t (*now_ms)(void *ctx);
};

struct h2rw_config {
	struct h2rw_ops ops;
	void *ctx;
	struct ruleset *rules;         /* a reference is taken */
	const char *peer;              /* copied; NULL: none */
	const char *scheme;            /* "https" (copied; NULL: "https") */
	const char *default_authority; /* the server "ip:port" (copied) */
	/* Every request's Host (:authority) replaced by this before the rules
	 * see it: a reverse listener's upstream (copied); NULL: kept. */
	const char *upstream_authority;
	size_t body_cap; /* 0: H2RW_DEFAULT_BODY_CAP */
	/* Breakpoints: a stream's request, once all of it is in, or its
	 * response, waits in this registry (mitm/held.h) until released
	 * (edited or not) or killed (the stream is reset both ways); the
	 * connection's other streams go on. NULL: breakpoints are skipped.
	 * conn and client name the connection in the items (copied). */
	struct held *held;
	const char *conn, *client;
};

/* NULL on ENOMEM. Writes nothing until h2rw_flush or the first bytes. */
struct h2rw *h2rw_new(const struct h2rw_config *cfg) __attribute__((warn_unused_result));
void h2rw_free(struct h2rw *w);

/* Sends what both sessions have queued (the prefaces and SETTINGS first). */
void h2rw_flush(struct h2rw *w);

/* Plaintext from the client / from the upstream. */
void h2rw_client(struct h2rw *w, const uint8_t *p, size_t n);
void h2rw_server(struct h2rw *w, const uint8_t *p, size_t n);

/* The timer asked for through ops.timer is due. */
void h2rw_timeout(struct h2rw *w);

/* Whether a protocol error ended the layer (ops.fail was called). */
bool h2rw_failed(const struct h2rw *w);

/* Body bytes buffered now, all streams (for tests and stats). */
size_t h2rw_buffered(const struct h2rw *w);

/* The note of the client's stream `stream_id` (a new reference), or NULL
 * when no rule touched it. A finished stream's note is handed out once. */
json_t *h2rw_take_note(struct h2rw *w, uint32_t stream_id);

#endif
