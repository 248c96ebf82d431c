/* A proxy listener: HTTP proxy (absolute-form requests and CONNECT),
 * SOCKS5 (CONNECT with IPv4, IPv6 and names; no-auth or
 * username/password), or both on one port, told apart by the first byte
 * (5: SOCKS5).
 *
 * It reads what the client says it wants (its request head, or the SOCKS
 * exchange), checks the credentials, resolves the destination and hands
 * the connection to the relay as a stream (mitm/relay.h,
 * relay_stream_accept): from there on it is the engine's, as a tunnel
 * connection is, with the destination policy, interception, rules and
 * records (via "http-proxy" or "socks5", and the user). The client hears
 * the outcome as its protocol says: "200 Connection established" or a 502
 * with the reason, a SOCKS reply code; 407 or a SOCKS auth failure for
 * credentials, 403 / "not allowed" for the policy, 503 / failure past
 * max_connections.
 *
 * With a fixed target (reverse, forward) there is nothing to say: each
 * connection goes to the target at once, shaped as the listener declares
 * (relay_shape).
 *
 * SOCKS5 UDP ASSOCIATE, when the config has `udp`, makes an association
 * (listen/socksudp.h) that takes the control connection over; without it
 * the reply is 7 (command not supported).
 *
 * A request in absolute form goes to its server with the head rewritten
 * (listen/proxyreq.h) and "Connection: close": one server per client
 * connection. Loop thread only. */
#ifndef WGMITM_LISTEN_PROXY_H
#define WGMITM_LISTEN_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#define PROXY_DEFAULT_MAX_CONNECTIONS 4096
#define PROXY_DEFAULT_HEAD_TIMEOUT_MS 10000

struct relay;
struct users;
struct listen_target;
struct socks_udp_config;
struct socks_udp_stats;

struct proxy_config {
	bool http, socks5; /* at least one, or a target */
	/* A fixed target (listen/target.h: reverse, forward): each connection
	 * is handed on at once, nothing read; users and the head timeout do
	 * not apply, and a failed dial resets the client. Copied. */
	const struct listen_target *target;
	struct sockaddr_storage addr;
	struct relay *relay;
	const struct users *users; /* NULL: no authentication; else required */
	const char *peer;          /* the flows' peer name (borrowed); NULL: none */
	/* Credentials the users file does not name are asked of this endpoint
	 * (listen/authext.h; borrowed). With it, credentials are required. */
	struct authext *auth;
	uint32_t max_connections; /* open client connections; 0: the default */
	uint32_t head_timeout_ms; /* to say what it wants; 0: the default */
	/* SOCKS5 UDP ASSOCIATE (listen/socksudp.h); NULL: refused. Copied. */
	const struct socks_udp_config *udp;
};

struct proxy_stats {
	uint64_t accepted, handed, open;
	uint64_t auth_failed, bad_request, refused_limit, refused_policy, resolve_failed;
	uint64_t udp_associations; /* UDP ASSOCIATE requests that made one */
};

/* Binds and listens. NULL with a libuv error in *err (UV_EADDRINUSE...). */
struct proxy *proxy_new(uv_loop_t *loop, const struct proxy_config *cfg, int *err)
	__attribute__((warn_unused_result));

/* The bound port (for port 0). */
uint16_t proxy_port(const struct proxy *p);

void proxy_get_stats(const struct proxy *p, struct proxy_stats *out);

/* The UDP associations' counters; false (out untouched) without them. */
bool proxy_get_udp_stats(const struct proxy *p, struct socks_udp_stats *out);

/* New users for connections that authenticate from now on (borrowed; the
 * caller keeps it alive while the proxy uses it). */
void proxy_set_users(struct proxy *p, const struct users *u);

/* Stops listening, closes the connections still saying what they want
 * (those handed on are the relay's) and ends the UDP associations. Freed once libuv has closed the
 * handles (the loop must run). NULL: no-op. */
void proxy_free(struct proxy *p);

#endif
