/* Replay: a recorded HTTP request sent again, as it was or edited, and
 * its exchange recorded as a new "http" flow linked to the original
 * (`replay_of`, docs/flows.md).
 *
 * Two parts. replay_build is sans-IO: from the original record and a JSON
 * object of edits it makes the HTTP/1.1 request to send (and refuses what
 * cannot be replayed, with a reason a person can act on). The engine sends
 * it on the libuv loop, never blocking it: the name resolved on the thread
 * pool (uv_getaddrinfo), the destination checked by the tunnel's policy,
 * TLS through the same tls_ctx as the relay's upstream legs (the
 * --upstream-ca files, --insecure-upstream, the same verification), the
 * exchange watched by the HTTP/1 observer so the record is like any other,
 * its response body kept up to the body cap, the whole bounded by a
 * timeout.
 *
 * HTTP/1.1 only: a request recorded over HTTP/2 is replayed over HTTP/1.1
 * (its pseudo-headers become the request line and Host), and the record
 * says so in `replay_note`. */
#ifndef WGMITM_MITM_REPLAY_H
#define WGMITM_MITM_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>
#include <uv.h>

#include "flows/flowlog.h"
#include "mitm/httpflow.h"
#include "mitm/policy.h"

#define REPLAY_TIMEOUT_MS 20000 /* a whole replay, DNS to the last byte */
#define REPLAY_MAX_TIMEOUT_MS 600000
#define REPLAY_MAX_INFLIGHT 16
#define REPLAY_MAX_BODY (16u << 20) /* request body sent at most */
#define REPLAY_HOST_LEN 256
#define REPLAY_METHOD_LEN 32

/* A request ready to send. Owned strings; replay_request_free. */
struct replay_request {
	char method[REPLAY_METHOD_LEN];
	bool tls;                   /* https */
	char host[REPLAY_HOST_LEN]; /* the URL's host, IPv6 without brackets */
	uint16_t port;
	char *target;                /* origin-form: "/path?query" */
	struct http_headers headers; /* to send, in order: Host first */
	uint8_t *body;
	size_t body_len;
	/* Where the original went, when the URL still names it: dialled as
	 * is (what the device dialled, DNS overrides included). Otherwise
	 * the host is resolved. */
	bool use_server;
	struct sockaddr_storage server;
	struct sockaddr_storage client; /* the original's client, for the record */
	char peer[FLOWLOG_PEER_LEN];    /* "": none */
	char replay_of[FLOWLOG_ID_LEN];
	char note[128];      /* "": none; for the record's replay_note */
	uint32_t timeout_ms; /* this replay's bound; 0: the engine's */
	json_t *edits;       /* the names of the edits made, ["method", "url", ...] */
};

/* The request for `record` (an "http" record as the store returns it,
 * bodies included) with `edits` applied (NULL or an object: "method",
 * "url", "headers" {name: value or null}, "body" text or "body_base64").
 * 0, or -1 with `err` saying why (the caller answers 400). */
int replay_build(const json_t *record, const json_t *edits, struct replay_request *out, char *err,
		 size_t errlen) __attribute__((warn_unused_result));
void replay_request_free(struct replay_request *r);

/* The request's bytes on the wire (HTTP/1.1, Connection: close). A new
 * buffer (free), or NULL when out of memory. */
uint8_t *replay_serialize(const struct replay_request *r, size_t *len);

/* An absolute http(s) URL: scheme, host (IPv6 literal without brackets,
 * lowercased), port (the scheme's default when none), and the offset of
 * the origin-form target in `url` ("" when it has no path: send "/").
 * A fragment is not part of the target. -1 with `err` when it is not
 * one (userinfo, a bad port, spaces or control bytes included). */
int replay_parse_url(const char *url, bool *tls, char host[static REPLAY_HOST_LEN], uint16_t *port,
		     size_t *target_off, size_t *target_len, char *err, size_t errlen);

struct tls_ctx;

struct replay_config {
	struct flowlog *log;         /* borrowed; required */
	struct tls_ctx *tls;         /* borrowed; NULL: https replays refused */
	const struct policy *policy; /* borrowed; required */
	size_t body_cap;             /* response (and request) bytes recorded */
	uint32_t timeout_ms;         /* 0: REPLAY_TIMEOUT_MS */
};

/* How a replay ended. Valid during the callback. */
struct replay_result {
	const char *id;         /* the new flow; "" when none was recorded */
	int status;             /* the response status; 0: none */
	const char *end_reason; /* "complete", "upstream_refused", "timeout", ... */
	const char *error;      /* NULL: none */
	const json_t *record;   /* the record as written (borrowed), or NULL */
};
typedef void (*replay_done_fn)(void *arg, const struct replay_result *r);

struct replay_engine;

struct replay_engine *replay_engine_new(uv_loop_t *loop, const struct replay_config *cfg);

/* Sends `req` (taken, whatever the result). `done` is called once, later,
 * never from inside this call. 0, -EBUSY (REPLAY_MAX_INFLIGHT replays in
 * flight), -ESHUTDOWN or -ENOMEM. */
int replay_start(struct replay_engine *e, struct replay_request *req, replay_done_fn done,
		 void *arg);

/* Replays in flight now. */
size_t replay_inflight(const struct replay_engine *e);

/* Ends every replay in flight (each recorded with end_reason "shutdown",
 * its `done` called now) and refuses new ones. */
void replay_engine_shutdown(struct replay_engine *e);
/* Shuts down, then frees once libuv closed its handles: run the loop
 * after. NULL is a no-op. */
void replay_engine_free(struct replay_engine *e);

#endif
