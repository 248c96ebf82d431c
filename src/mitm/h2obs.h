/* The passive HTTP/2 observer: records every stream of one connection as an
 * exchange (httpflow.h) from the plaintext bytes going each way.
 *
 * Both TLS legs speak the same ALPN, so the connection is end to end between
 * client and server and the relay forwards bytes unchanged; the observer
 * only watches them, in whatever chunks they arrive, and never holds data
 * back. Each direction has its own frame parser (RFC 9113 section 4) and
 * its own HPACK inflater (nghttp2's), fed every header block in order.
 *
 * Feed each side's bytes before forwarding them to the other side, so the
 * observer sees a SETTINGS frame before its acknowledgement: the settings
 * one side sends (SETTINGS_HEADER_TABLE_SIZE, SETTINGS_MAX_FRAME_SIZE) bind
 * the other side's encoder and frame sizes from the point where the other
 * side acknowledges them.
 *
 * Bounded: at most `max_streams` streams are recorded at a time (more are
 * counted as dropped, their header blocks still decoded), header lists by
 * HTTPFLOW_MAX_HEADER_BYTES, bodies by `body_cap`. DATA frames allocate
 * nothing beyond a body's geometric growth up to its cap.
 *
 * A frame or HPACK error makes further decoding impossible: the open
 * streams are emitted with error "parse_error" and a detail (or, when none
 * is open, one record carrying the error), recording stops, and
 * h2obs_failed() says so. The caller keeps forwarding bytes.
 *
 * Not thread-safe; the sink is called synchronously from h2obs_client,
 * h2obs_server and h2obs_finish and must not call back into the observer. */
#ifndef WGMITM_MITM_H2OBS_H
#define WGMITM_MITM_H2OBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mitm/httpflow.h"

#define H2OBS_DEFAULT_MAX_STREAMS 1024

struct h2obs_config {
	struct http_sink sink;         /* copied; sink.exchange may be NULL */
	size_t body_cap;               /* bytes kept of each body (0 keeps none;
	                                  the usual value is HTTPFLOW_DEFAULT_BODY_CAP) */
	const char *scheme;            /* of every URL; NULL: "https" (copied) */
	const char *default_authority; /* when a request has neither :authority
	                                  nor Host, e.g. "10.0.0.5:8443"; NULL:
	                                  none (copied) */
	size_t max_streams;            /* recorded at once; 0: H2OBS_DEFAULT_MAX_STREAMS */
};

struct h2obs_stats {
	uint64_t streams_seen; /* streams opened by either side */
	uint64_t emitted;      /* exchanges handed to the sink */
	uint64_t dropped;      /* streams not recorded (over max_streams) */
	uint64_t frames[2];    /* frames parsed, client→server and back */
};

struct h2obs;

/* NULL with errno ENOMEM. */
struct h2obs *h2obs_new(const struct h2obs_config *cfg) __attribute__((warn_unused_result));
/* Emits nothing: call h2obs_finish first to record unfinished streams. */
void h2obs_free(struct h2obs *o);

/* Bytes the client sent (starting with the connection preface) and bytes
 * the server sent, in order, in chunks of any size. */
void h2obs_client(struct h2obs *o, const uint8_t *p, size_t n);
void h2obs_server(struct h2obs *o, const uint8_t *p, size_t n);

/* The connection ended: emits every stream still open with error `reason`
 * (NULL: "connection_closed"; it need only live during the call) and stops
 * recording. */
void h2obs_finish(struct h2obs *o, const char *reason);

/* A protocol error stopped recording (bytes still flow). */
bool h2obs_failed(const struct h2obs *o);
struct h2obs_stats h2obs_stats(const struct h2obs *o);

#endif
