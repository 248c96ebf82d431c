/* The passive WebSocket observer: records the messages of one connection
 * after its 101 (RFC 6455), in batches of JSON (record type "websocket",
 * docs/flows.md), from the bytes going each way.
 *
 * Like the HTTP observers it only watches: bytes arrive in chunks of any
 * size, are forwarded by the caller unchanged, and nothing is held back.
 * Each direction has its own frame parser (RFC 6455 5.2): client frames are
 * unmasked, fragments are assembled into one message (kept up to the body
 * cap, the full size counted), control frames may come between fragments.
 * With permessage-deflate (RFC 7692) negotiated in the 101's
 * Sec-WebSocket-Extensions, compressed messages (RSV1) are inflated with
 * zlib; inflated bytes beyond the cap are counted, not kept, so memory stays
 * bounded whatever the ratio.
 *
 * A batch {"url", "messages"[, "close"][, "error"]} goes to sink.websocket
 * every WS_BATCH_MESSAGES messages, from ws_obs_tick when the oldest
 * pending message is WS_BATCH_SECONDS old, and from ws_obs_finish.
 * "close" is the first close frame seen: {"dir", "code", "reason"} (code
 * null when the frame had no status). A malformed frame (reserved opcode,
 * RSV bits not negotiated, fragmented or oversized control frame,
 * continuation without a message, undecompressible data) stops recording:
 * the pending messages are flushed with "error" set, then bytes are only
 * counted.
 *
 * Not thread-safe; the sink is called synchronously from the feeding
 * functions and must not call back into the observer. */
#ifndef WGMITM_MITM_WEBSOCKET_H
#define WGMITM_MITM_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mitm/httpflow.h"

#define WS_BATCH_MESSAGES 100
#define WS_BATCH_SECONDS 1

struct ws_config {
	struct http_sink sink;               /* copied; only sink.websocket is used */
	size_t body_cap;                     /* bytes kept of each message (0 keeps none) */
	const char *url;                     /* "wss://host/path" (copied; NULL: "") */
	const char *extensions;              /* the 101's Sec-WebSocket-Extensions value,
	                                  NULL: none (read during ws_obs_new) */
	void (*clock)(struct timespec *now); /* NULL: CLOCK_REALTIME */
};

struct ws_stats {
	uint64_t frames[2];   /* client→server, server→client */
	uint64_t messages[2]; /* data and control messages recorded */
	uint64_t batches;     /* handed to the sink */
};

struct ws_obs;

/* NULL with errno ENOMEM. */
struct ws_obs *ws_obs_new(const struct ws_config *cfg) __attribute__((warn_unused_result));
/* Emits nothing: call ws_obs_finish first. NULL is a no-op. */
void ws_obs_free(struct ws_obs *o);

/* Frames the client sent and frames the server sent, in chunks of any size. */
void ws_obs_client(struct ws_obs *o, const uint8_t *p, size_t n);
void ws_obs_server(struct ws_obs *o, const uint8_t *p, size_t n);

/* From a timer: flushes the pending messages when the oldest is
 * WS_BATCH_SECONDS older than `now` (CLOCK_REALTIME, the clock of the
 * message times). */
void ws_obs_tick(struct ws_obs *o, const struct timespec *now);

/* The connection ended: flushes what is pending (and a close frame not yet
 * reported); later bytes are ignored. */
void ws_obs_finish(struct ws_obs *o);

/* A malformed frame stopped recording (bytes still flow). */
bool ws_obs_failed(const struct ws_obs *o);
struct ws_stats ws_obs_stats(const struct ws_obs *o);

#endif
