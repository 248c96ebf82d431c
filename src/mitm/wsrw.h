/* The active WebSocket layer: applies the message rules of one upgraded
 * connection (mitm/rules.h, rules_ws_for; docs/rules.md, "WebSocket
 * messages") to each message after the 101.
 *
 * Sans-IO, like mitm/h1rw.h: feed the bytes each side sent, get the bytes
 * for each side through the callbacks. Each direction has its own frame
 * parser (RFC 6455 5.2). A direction no selected rule acts on is passed on
 * byte for byte, unparsed. On a direction a rule acts on:
 *
 *   - control frames (ping, pong, close) go on at once, as they came, also
 *     between the fragments of a message; a close waits behind a message
 *     that is held;
 *   - the frames of a data message are kept (up to `msg_cap` bytes of
 *     payload) until its last fragment; then the rules see the whole
 *     message: it is dropped, edited (ws_replace on text) or held; an
 *     unchanged message goes on as it came (its frames, its masks), an
 *     edited one as one frame, masked with a fresh random key from the
 *     client, unmasked from the server;
 *   - a message larger than the cap goes on unchanged from there, frame by
 *     frame, and the note says so;
 *   - a frame that breaks the protocol (reserved opcode or RSV bits, a
 *     fragmented or long control frame, a continuation without a message,
 *     a client frame without a mask or a server frame with one) stops the
 *     rules on that direction: what was kept goes on, then every byte as it
 *     is, and the note says why.
 *
 * No extension is understood: the caller removes Sec-WebSocket-Extensions
 * from the upgrade request, so nothing is compressed (RSV1 is a protocol
 * error here).
 *
 * Breakpoints: a held message waits in the registry (ops.hold, with "proto"
 * "websocket" and the text); the bytes its side sends after it wait behind
 * it (the protocol's order), up to WSRW_MAX_HELD, then the message goes on
 * as it is (ops.unhold). The caller pauses the client above
 * wsrw_backlog() > WSRW_MAX_HELD / 2. Memory per direction: the cap, plus
 * the held bytes. Loop thread only. */
#ifndef WGMITM_MITM_WSRW_H
#define WGMITM_MITM_WSRW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mitm/held.h"
#include "mitm/rules.h"

#define WSRW_DEFAULT_MSG_CAP (1u << 20)
#define WSRW_MAX_HELD (1u << 20)
#define WSRW_MAX_NOTES 256 /* message entries of one note */
#define WSRW_NOTE_PREVIEW 1024

struct wsrw;

struct wsrw_ops {
	void (*to_upstream)(void *ctx, const uint8_t *p, size_t n);
	void (*to_client)(void *ctx, const uint8_t *p, size_t n);
	/* A message is held: HELD_REQUEST from the client, HELD_RESPONSE
	 * from the server; `info` (stolen) describes it. 0: held, call
	 * wsrw_release or wsrw_kill later (never from inside); nonzero: it
	 * goes on. NULL: breakpoints are skipped. */
	int (*hold)(void *ctx, enum held_phase phase, json_t *info);
	/* The layer released a held message itself (bytes over the bound,
	 * the side ended): forget its item. */
	void (*unhold)(void *ctx, enum held_phase phase, const char *why);
	/* The mask keys of edited client frames (tests); NULL: RAND_bytes. */
	void (*random)(void *ctx, uint8_t key[4]);
};

struct wsrw_config {
	struct wsrw_ops ops;
	void *ctx;
	struct ruleset *rules;     /* a reference is taken */
	const struct rules_ws *ws; /* copied; its rules are of `rules` */
	const char *url;           /* "wss://host/path" for the held items (copied) */
	const char *peer;          /* copied; NULL: none */
	size_t msg_cap;            /* 0: WSRW_DEFAULT_MSG_CAP */
};

struct wsrw *wsrw_new(const struct wsrw_config *cfg) __attribute__((warn_unused_result));
void wsrw_free(struct wsrw *w);

/* Bytes the client sent / the server sent, in chunks of any size. After
 * wsrw_kill nothing more is written. */
void wsrw_client(struct wsrw *w, const uint8_t *p, size_t n);
void wsrw_server(struct wsrw *w, const uint8_t *p, size_t n);
/* A side ended its stream: a message of its side that is held goes on as
 * it is (ops.unhold), then what was kept of an unfinished one. */
void wsrw_eof(struct wsrw *w, enum held_phase side);

/* A held message goes on, as it is (e NULL) or with the body of the edits
 * (only `body` is used: the new text). */
void wsrw_release(struct wsrw *w, enum held_phase phase, const struct held_edits *e);
/* A held message is killed: nothing more is written (the caller ends the
 * connection). */
void wsrw_kill(struct wsrw *w, enum held_phase phase);
bool wsrw_holding(const struct wsrw *w, enum held_phase phase);

/* Client bytes waiting behind a held message. */
size_t wsrw_backlog(const struct wsrw *w);

/* What the rules did since the last call (a new reference), NULL when
 * nothing: {"matched": [ids], "messages": [{"dir", "rule", "action",
 * "size", "sent"?, "why"?}], "more": n}. */
json_t *wsrw_take_note(struct wsrw *w);

#endif
