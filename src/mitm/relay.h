/* The TCP relay: every TCP stream a tunnel client opens (netstack
 * ops.tcp_accept) is checked against the destination policy, then relayed
 * as it is to a real socket connected to the original destination (or, for
 * an --allow-host-port port of our tunnel address, to the host's loopback).
 *
 * Mapping between the two legs:
 *   client data        → uv_try_write, the rest copied into uv_write requests
 *   upstream data      → stream_write, straight from one shared read
 *                        buffer sized to what the netstack can take
 *   client FIN         → uv_shutdown after the queued writes
 *   upstream EOF       → stream_shutdown after the pending bytes
 *   client RST / gave up     → upstream closed with RST (uv_tcp_close_reset)
 *   upstream RST / error     → stream_abort (the client sees RST)
 *   upstream refused, unreachable, connect timeout → stream_abort at once
 *
 * Backpressure, both ways bounded per connection:
 *   - the client is paused (its TCP window closes) while the upstream is
 *     being dialled, and while more than max_buffer bytes wait in the
 *     upstream write queue (resumed below half);
 *   - the upstream socket is read only as far as the netstack can take
 *     (stream_writable); when it is full, reading stops until
 *     ops.sent. A remainder the netstack refused is kept (at most one
 *     read, RELAY_READ_SIZE) and reading stops until it is flushed.
 * In flight, lwIP's 1 MiB windows carry 100 Mbit/s at 80 ms RTT.
 *
 * Every state ends (one timer per flow, rearmed as the flow moves on):
 *   dialling            connect_timeout_ms → "upstream_unreachable"
 *   first bytes held    sniff_timeout_ms without a verdict → relayed raw
 *                       ("tls-passthrough" with tls_error when they began
 *                       a ClientHello)
 *   upstream handshake  handshake_timeout_ms → the 502 path (tls_error
 *                       "upstream TLS: handshake timed out ...")
 *   client handshake    handshake_timeout_ms → after our Certificate a
 *   (also for the 502)  rejection, else "tls:client_error"
 *   502 waiting         handshake_timeout_ms for the request → the 502's
 *                       connection closes, "tls:upstream_error"
 *   half-closed         one direction ended and no traffic (bytes in from
 *                       either side, bytes the client acknowledged) for a
 *                       whole half_close_timeout_ms period → "timeout",
 *                       reset both ways
 *   both sides open     no timer: an idle connection is normal; TCP
 *                       keepalive ends it when a side is gone ("timeout":
 *                       the netstack's probes to the client, the kernel's
 *                       to the upstream, 60 s idle then 6 probes 10 s apart)
 * A client FIN during a handshake ends the flow at once (the client can no
 * longer send its Finished): right after our Certificate it is a rejection
 * (below), before it "tls:client_error" ("closed during the upstream
 * handshake"); during the 502, the 502's connection closes. A client reset
 * right after our Certificate is a rejection too.
 *
 * Interception: the client's first bytes pick what happens (mitm/sniff.h).
 *   TLS ClientHello: unless a passthrough rule or an automatic entry covers
 *     the host, TLS is terminated on both legs (mitm/tls.h), upstream first:
 *     the upstream handshake uses the client's SNI and ALPN list, the leaf
 *     for the client carries the SNI and the upstream certificate's names,
 *     and the client gets the ALPN the upstream chose, so both legs speak the
 *     same protocol and the plaintext passes through unchanged. An upstream
 *     that fails (handshake or verification) gets the client a 502 with the
 *     reason (mitm/errpage.h, over HTTP/1.1 or h2); the failed upstream
 *     connection is closed then. A client that rejects our certificate (a
 *     certificate alert, or a close, reset or silence right after our
 *     Certificate: grpc-core and many pinning apps just close) puts the
 *     host on the automatic passthrough list for its peer; bytes that are
 *     not TLS there are a failure, not a rejection.
 *   HTTP/1 request line, or the h2 preface: plain HTTP, recorded.
 *   Anything else, or the upstream speaking first: relayed raw.
 * HTTP is watched by passive observers (mitm/http1.h, mitm/h2obs.h,
 * mitm/websocket.h) that never hold bytes back; each exchange becomes an
 * "http" record, WebSocket messages "websocket" batches. HTTP/2 is
 * recognised by ALPN "h2" or "grpc-exp" (grpc-core's name for it), or by
 * the h2 preface in the clear.
 *
 * One record per flow through flowlog, type "tcp": the common keys, plus
 * "upstream" when a host port was rewritten to loopback, and the
 * interception keys of docs/flows.md. end_reason: "fin" (both sides closed
 * in order), "client_reset", "upstream_reset", "upstream_refused",
 * "upstream_unreachable", "timeout" (the client or the upstream stopped
 * answering TCP, or a half-closed flow was idle),
 * "policy:<verdict>" (refused, reset at once), "limit:peer_connections"
 * (the peer held max_per_peer flows: reset at once), "shutdown", "error",
 * "tls:client_rejected", "tls:client_error", "tls:upstream_error". */
#ifndef WGMITM_MITM_RELAY_H
#define WGMITM_MITM_RELAY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>
#include <uv.h>

#include "common/stream.h"
#include "mitm/policy.h"

struct flowlog;
struct tls_ctx;
struct passthru;

#define RELAY_DEFAULT_MAX_BUFFER (256u * 1024) /* client → upstream queue */
#define RELAY_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define RELAY_READ_SIZE (64u * 1024) /* one upstream read */
#define RELAY_DEFAULT_SNIFF_TIMEOUT_MS 2000
#define RELAY_DEFAULT_HANDSHAKE_TIMEOUT_MS 30000
#define RELAY_DEFAULT_HALF_CLOSE_TIMEOUT_MS 60000
#define RELAY_UPSTREAM_KEEPALIVE_IDLE_S 60 /* then probes every 10 s, 6 at most */
#define RELAY_UPSTREAM_KEEPALIVE_INTERVAL_S 10
#define RELAY_UPSTREAM_KEEPALIVE_COUNT 6

struct relay_config {
	const struct policy *policy; /* borrowed, must outlive the relay; required */
	struct flowlog *log;         /* borrowed; NULL: no records */
	/* The name of the peer owning a client address, for records (NULL or
	 * returning NULL: unknown). The string is copied at once. */
	const char *(*peer_name)(void *ctx, const struct sockaddr *client);
	void *peer_ctx;
	size_t max_buffer;           /* upstream write queue bound; 0: default */
	uint32_t connect_timeout_ms; /* 0: RELAY_DEFAULT_CONNECT_TIMEOUT_MS */
	/* The timeouts of the states above; 0: the RELAY_DEFAULT_* values. */
	uint32_t sniff_timeout_ms;      /* the rest of undecided first bytes */
	uint32_t handshake_timeout_ms;  /* each TLS handshake; the 502's request */
	uint32_t half_close_timeout_ms; /* a half-closed flow without traffic */
	/* Interception. tls NULL: TLS is relayed as it is (still recorded
	 * with its SNI). passthrough may be NULL. */
	struct tls_ctx *tls;          /* borrowed */
	struct passthru *passthrough; /* borrowed */
	size_t body_cap;              /* bytes of each HTTP body recorded (0: none;
	                                  usually HTTPFLOW_DEFAULT_BODY_CAP) */
	bool no_http;                 /* do not parse or record HTTP */
	bool no_intercept;            /* TLS relayed as it is even with tls set */
	/* Flows one peer (by peer_name) may hold at once; over it a new one
	 * is reset and recorded with end_reason "limit:peer_connections".
	 * 0: no cap. */
	uint32_t max_per_peer;
	/* A listener's authenticated user: flows at once (over it a new one
	 * is refused, "limit:user_connections"; 0: max_per_peer, as for a
	 * peer), and bytes per second each way (0 and 1: client → upstream
	 * and upstream → client; 0: none) shared by all of the user's flows. */
	uint32_t max_per_user;
	uint64_t user_rate[2];
	/* The names the tunnel's DNS answered (mitm/dnsnames.h; borrowed,
	 * NULL: none): a tunnel flow's parent proxy is chosen by the name its
	 * peer looked up for the address, and asked for it. */
	struct dnsnames *names;
	/* Breakpoints (mitm/held.h): a held message is released as it is
	 * after this long (0: HELD_DEFAULT_TIMEOUT_MS; also taken by
	 * relay_reconfigure, for items held from then on). held_event gets
	 * the registry's events (NULL: none). */
	uint32_t breakpoint_timeout_ms;
	void (*held_event)(void *ctx, const char *what, const json_t *item);
	void *held_ctx;
};

struct relay_stats {
	uint64_t open;     /* flows relayed now (gauge) */
	uint64_t accepted; /* flows relayed (ALLOW and HOST_PORT) */
	uint64_t local;    /* handed to the local service hook */
	uint64_t refused;  /* refused by the policy, all verdicts */
	uint64_t refused_by[POLICY_VERDICT_COUNT];
	uint64_t refused_peer_limit; /* reset: the peer held max_per_peer flows */
	uint64_t connect_failed;     /* refused, unreachable or timed out upstream */
	uint64_t connect_refused;    /* of those, ECONNREFUSED */
	uint64_t connect_timeout;    /* of those, our connect timer */
	uint64_t client_resets;      /* the client reset (or gave up on) a flow */
	uint64_t upstream_resets;    /* the upstream reset or failed a flow */
	uint64_t bytes_up;           /* client → upstream, received from the client */
	uint64_t bytes_down;         /* upstream → client, read from the upstream */
	uint64_t client_pauses;      /* the upstream write queue went over max_buffer */
	uint64_t upstream_stops;     /* the netstack was full: upstream reads stopped */
	uint64_t records;            /* records handed to flowlog */
	/* What the first bytes of accepted flows were. */
	uint64_t proto_tls, proto_http, proto_h2c, proto_raw;
	uint64_t intercepted; /* TLS flows decrypted on both legs */
	uint64_t passthrough_rule, passthrough_auto;
	uint64_t tls_client_rejected; /* the client refused our certificate */
	uint64_t tls_client_failed;   /* other client-leg handshake failures */
	uint64_t tls_upstream_failed; /* upstream handshake or verification failed */
	uint64_t http_exchanges;      /* HTTP records written */
	uint64_t ws_batches;          /* WebSocket batch records written */
	uint64_t rules_connections;   /* HTTP/1.1 flows a rule may apply to (mitm/h1rw.h) */
	uint64_t redirects;           /* upstreams a redirect rule opened (mitm/upconn.h) */
	uint64_t throttled;           /* messages a throttle rule slowed */
	uint64_t parent_dials;        /* flows dialled through a parent proxy */
	uint64_t parent_failed;       /* of those, the parent failed or refused */
};

/* cfg is copied. NULL with errno EINVAL (no policy) or ENOMEM.
 * Sets SIGPIPE to ignored for the process if it has the default action
 * (a write to a reset upstream then fails with EPIPE instead). */
struct relay *relay_new(uv_loop_t *loop, const struct relay_config *cfg)
	__attribute__((warn_unused_result));

/* For the netstack's ops.tcp_accept: applies the policy, then takes the
 * connection (sets its ops, dials upstream) and returns 0; or returns
 * nonzero, and the netstack resets it (refused destinations, an upstream
 * that failed at once, no memory, after relay_shutdown). LOCAL_SERVICE
 * verdicts go to the hook below and return what it returns. */
int relay_tcp_accept(struct relay *r, struct stream *conn, const struct sockaddr *client,
		     const struct sockaddr *dest);

/* What a listener with a fixed target (reverse, forward) says its
 * streams are, instead of what the tunnel guesses from the first bytes:
 * whether the client speaks TLS, whether the upstream does (each side
 * independently: TLS terminated, originated, both or neither), and the
 * protocol inside. The upstream is verified against `name` (sent as SNI),
 * and a client's leaf carries its SNI, or `name` when it sends none.
 * Passthrough rules do not apply: the listener's configuration says what
 * to do with TLS. */
enum relay_client_tls {
	RELAY_CLIENT_SNIFF, /* TLS terminated when the first bytes are a ClientHello */
	RELAY_CLIENT_PLAIN, /* relayed as they are, TLS or not */
	RELAY_CLIENT_TLS,   /* must begin TLS (else "tls:client_error") */
};
enum relay_proto {
	RELAY_PROTO_AUTO, /* the first bytes decide (HTTP/1, the h2 preface, else raw) */
	RELAY_PROTO_RAW,  /* bytes, no HTTP parsing */
	RELAY_PROTO_HTTP, /* HTTP/1.x; also "websocket" and "sse", which are HTTP/1.1 */
	RELAY_PROTO_HTTP2,
	RELAY_PROTO_GRPC, /* HTTP/2 */
};
struct relay_shape {
	enum relay_client_tls client;
	enum relay_proto proto;
	bool upstream_tls;
	int insecure;     /* upstream verification: -1 as configured, 0 verify, 1 do not */
	const char *name; /* the target's host (copied); NULL or an IP literal: none */
	/* HTTP requests' Host (:authority) becomes this (copied): a reverse
	 * listener's upstream. NULL: kept. Such streams take the active layer. */
	const char *authority;
};

/* A stream from a listener (src/listen): who it is from and how its client
 * is told the outcome of the dial. */
struct relay_origin {
	const char *via;  /* the listener's kind, a static string ("http-proxy", "socks5") */
	const char *user; /* authenticated user (copied); NULL: none */
	const char *peer; /* the record's peer and max_per_peer's key (copied); NULL: none */
	/* Called once: err 0 when the upstream is connected (before any
	 * client byte is relayed), else the dial's failure (a libuv error)
	 * and the reason the record gives. The callback may write its answer
	 * to `s` (a proxy's "200", a 502, a SOCKS reply); after a failure the
	 * relay then closes the stream (FIN, not reset). NULL: the tunnel's
	 * behaviour (the client is reset on failure). */
	void (*dialled)(void *ctx, struct stream *s, int err, const char *why);
	void *ctx;
	const struct relay_shape *shape; /* copied; NULL: as the tunnel's streams */
	/* The name the client asked for (CONNECT, SOCKS, a forward's target):
	 * what a parent proxy is chosen by and asked for. NULL: the address. */
	const char *host;
};

/* relay_tcp_accept for a listener's stream. Never uses the local hook
 * below (the tunnel's own services are the tunnel's). Returns 0 when the
 * stream is taken (even when the dial then fails: `dialled` says so), or
 * nonzero and the caller answers and closes it: -ECONNREFUSED (the
 * destination policy), -EMFILE (the peer's share of connections),
 * -ESHUTDOWN, -ENOMEM or a libuv error. */
/* The record of a listener's connection that never reached the relay: a
 * name that did not resolve, the listener's own connection limit. dest
 * NULL: none known (the record's server is null). `error` may be NULL. */
void relay_record_listener_failure(struct relay *r, const struct sockaddr *client,
				   const struct sockaddr *dest, const struct relay_origin *o,
				   const char *reason, const char *error);

int relay_stream_accept(struct relay *r, struct stream *conn, const struct sockaddr *client,
			const struct sockaddr *dest, const struct relay_origin *o);

/* Our own TCP services on the tunnel addresses (DNS over TCP on :53). The
 * hook owns the connection when it returns 0. NULL: such flows are reset. */
/* From now on, for flows that begin (and the timers flows arm later): the
 * timeouts, body_cap, no_intercept and max_per_peer of cfg; the rest of
 * cfg is ignored. */
void relay_reconfigure(struct relay *r, const struct relay_config *cfg);

/* A port of the endpoint's own services on the capture host (the control
 * API): a relayed connection that reaches it on any of the host's own
 * addresses, loopback included, is reset and recorded with end_reason
 * "policy:own_service", whatever the policy allowed. 0 or -ENOSPC. */
#define RELAY_MAX_PROTECTED 8
int relay_protect_port(struct relay *r, uint16_t port);

/* The interception rules for flows that begin from now on (a reference is
 * taken; NULL: none). A flow whose device and SNI no enabled rule can
 * match stays on the byte-for-byte path; HTTP/1.1 flows that one may
 * match go through the active layer (mitm/h1rw.h), and their http records
 * get a "rules" key. */
struct ruleset;
void relay_set_rules(struct relay *r, struct ruleset *rs);

/* Parent (upstream) proxies: a flow whose host (the name its listener
 * was asked for, else the address) matches `glob` and whose device
 * matches `device` is dialled through the parent, HTTP CONNECT or SOCKS5
 * (mitm/parent.h), instead of directly; the first match wins. The
 * destination policy still applies to the destination; the parent's own
 * address is the user's choice (loopback allowed), except the endpoint's
 * own ports. A parent that fails or refuses is the flow's error: a 502 or
 * a SOCKS reply for a listener's client, a reset for the tunnel's; the tcp
 * record says "upstream_proxy". Host-port flows (--allow-host-port) never
 * go through a parent. */
#define RELAY_MAX_PARENTS 16
struct relay_parent {
	bool socks5;
	struct sockaddr_storage addr; /* the parent, with its port */
	char user[256], pass[256];    /* "": no credentials */
	char glob[256];               /* host glob, case-insensitive; "": every host */
	char device[64];              /* a peer's name; "": every device and listener */
	char label[280];              /* "http://host:port", no credentials: for records */
};
/* For flows from now on (copied). 0, or -ENOSPC past RELAY_MAX_PARENTS. */
int relay_set_parents(struct relay *r, const struct relay_parent *p, size_t n);

void relay_set_local_tcp(struct relay *r,
			 int (*accept)(void *ctx, struct stream *conn,
				       const struct sockaddr *client, const struct sockaddr *dest),
			 void *ctx);

/* The messages breakpoints hold now (mitm/held.h): list, release, kill.
 * Timeouts run on the relay's 1 s tick. */
struct held;
struct held *relay_held(struct relay *r);

void relay_get_stats(const struct relay *r, struct relay_stats *out);

/* Ends every flow: both legs are reset (a FIN would make a cut response
 * look complete), records are written with end_reason "shutdown". Later
 * connections are refused. Call before netstack_free (whose connection
 * handles the relay holds). Idempotent. */
void relay_shutdown(struct relay *r);

/* Shuts down if needed; the memory is released once libuv has closed the
 * sockets (the loop must run again). NULL is a no-op. */
void relay_free(struct relay *r);

#endif
