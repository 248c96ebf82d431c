/* The passive HTTP/1.x observer: records every request/response exchange
 * of one connection (httpflow.h) from the plaintext bytes going each way,
 * and the WebSocket messages after an upgrade (websocket.h).
 *
 * Sans-IO: the caller forwards the bytes unchanged and shows them to the
 * observer, in whatever chunks they arrive; nothing is held back. Two llhttp
 * parsers, one per direction. Requests wait in a FIFO (pipelining, at most
 * HTTP1_MAX_PENDING); each response is matched to the oldest request
 * without one. 1xx responses before the final one are listed in
 * `informational`; responses to HEAD, 204 and 304 have no body whatever
 * their Content-Length says; a response without length ends with the
 * server's FIN (http1_obs_server_eof). An exchange goes to sink.exchange
 * once its request and its response have both ended, or at
 * http1_obs_finish with an error.
 *
 * Upgrades. After a 101 to "websocket", the observer records the frames
 * itself: keep feeding every byte, and call http1_obs_tick from a timer so
 * batches are written while messages flow. After a 2xx to CONNECT or a 101
 * to another protocol, recording stops; http1_obs_upgraded says where the
 * new protocol starts so the caller may hand the rest to another observer.
 * Client bytes sent after an upgrade request and before its response are
 * copied (at most HTTP1_MAX_EARLY_BYTES) until the response says whether
 * they are HTTP or the new protocol.
 *
 * A parse error stops recording: the pending exchanges (or, when none, one
 * empty exchange) are emitted with error "parse_error" and a detail, and
 * http1_obs_failed() says so; more than HTTP1_MAX_PENDING requests without
 * a response do the same with error "pipeline_overflow".
 *
 * Bounded: headers by HTTPFLOW_MAX_HEADER_BYTES per message (the request
 * target and reason phrase by the same bound), bodies by `body_cap`,
 * pending requests by HTTP1_MAX_PENDING. Body bytes are appended in the
 * chunks llhttp hands over; nothing is allocated per byte.
 *
 * Not thread-safe; the sink is called synchronously from the feeding
 * functions and must not call back into the observer. */
#ifndef WGMITM_MITM_HTTP1_H
#define WGMITM_MITM_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mitm/httpflow.h"

#define HTTP1_MAX_PENDING 64
#define HTTP1_MAX_EARLY_BYTES (64u * 1024)

struct http1_config {
	struct http_sink sink;               /* copied; both callbacks may be NULL */
	size_t body_cap;                     /* bytes kept of each body and WebSocket
	                                  message (usually HTTPFLOW_DEFAULT_BODY_CAP) */
	const char *scheme;                  /* "https" or "http"; NULL: "https" (copied) */
	const char *default_authority;       /* the server "ip:port", for requests
	                                  without Host (copied; NULL: none) */
	void (*clock)(struct timespec *now); /* NULL: CLOCK_REALTIME */
};

enum http1_upgrade {
	HTTP1_UPGRADE_NONE,
	HTTP1_UPGRADE_WEBSOCKET, /* 101 to websocket: frames recorded here */
	HTTP1_UPGRADE_CONNECT,   /* 2xx to CONNECT: a tunnel, not recorded */
	HTTP1_UPGRADE_OTHER,     /* 101 to another protocol: not recorded */
};

struct http1_upgrade_info {
	/* Bytes of the server chunk that completed the 101/2xx head that were
	 * HTTP; the rest of that chunk is the new protocol. */
	size_t server_http_len;
	/* Client bytes seen after the upgrade request (the observer's copy,
	 * valid until the next call into the observer). */
	const uint8_t *client_early;
	size_t client_early_len;
	bool client_early_truncated; /* more than HTTP1_MAX_EARLY_BYTES came */
	const char *protocol;        /* the 101's Upgrade value, or NULL */
};

struct http1_stats {
	uint64_t requests; /* request heads begun */
	uint64_t emitted;  /* exchanges handed to the sink */
};

struct http1_obs;

/* NULL with errno ENOMEM. */
struct http1_obs *http1_obs_new(const struct http1_config *cfg) __attribute__((warn_unused_result));
/* Frees; emits nothing (call http1_obs_finish first). NULL is a no-op. */
void http1_obs_free(struct http1_obs *o);

/* Bytes the client sent (requests) and the server sent (responses). */
void http1_obs_client(struct http1_obs *o, const uint8_t *p, size_t n);
void http1_obs_server(struct http1_obs *o, const uint8_t *p, size_t n);
/* A FIN from the client / the server. The server's ends a response
 * delimited by the connection close. */
void http1_obs_client_eof(struct http1_obs *o);
void http1_obs_server_eof(struct http1_obs *o);

/* The connection ended: the exchanges not yet emitted are emitted with
 * error `reason` ("client_reset", "upstream_reset", "connection_closed",
 * "shutdown"; NULL: "connection_closed"; it must be a static string), the
 * WebSocket messages pending are flushed, and recording stops. */
void http1_obs_finish(struct http1_obs *o, const char *reason);

/* Timer hook for WebSocket batches (websocket.h ws_obs_tick); a no-op
 * before an upgrade. */
void http1_obs_tick(struct http1_obs *o, const struct timespec *now);

/* Recording stopped on a parse error or pipeline overflow (bytes still flow). */
bool http1_obs_failed(const struct http1_obs *o);

/* What the connection became; `info` (may be NULL) gets where. */
enum http1_upgrade http1_obs_upgraded(const struct http1_obs *o, struct http1_upgrade_info *info);

struct http1_stats http1_obs_stats(const struct http1_obs *o);

#endif
