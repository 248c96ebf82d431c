/* The UDP relay: every datagram a tunnel client sends to any destination
 * (netstack ops.udp_recv) becomes part of a flow keyed by (client address,
 * destination). A flow owns one connected UDP socket toward the real
 * destination, so whatever arrives on it is an answer for exactly that flow
 * and goes back to the client as if sent from the destination.
 *
 * The client address identifies the peer: WireGuard only delivers inner
 * packets whose source lies in the sending peer's allowed addresses.
 *
 * Policy first (mitm/policy.h): refused destinations never reach a socket;
 * their datagrams are counted into a socketless flow (one record per burst,
 * end_reason "policy:<verdict>") and, when an unreachable callback is set,
 * answered with ICMP administratively prohibited. Datagrams to our own
 * services (POLICY_LOCAL_SERVICE: DNS on our tunnel address) go to the
 * `local` callback and make no flow here.
 *
 * Flows end after an idle time (no datagram either way): `idle_ms`, or the
 * shorter `dns_idle_ms` for port 53 of other resolvers, whose exchanges are
 * one query and one answer. The table is bounded: when it is full, new
 * flows are refused and counted, and one peer holds at most
 * `max_flows_per_peer` of it, so a peer that opens flows without end
 * cannot take the others' room (its further datagrams are dropped and
 * counted in peer_limit until some of its flows end). An ICMP port unreachable from upstream
 * (ECONNREFUSED on the connected socket) ends the flow, "upstream_refused",
 * and is passed on to the client through `unreachable`.
 *
 * QUIC: datagrams to port 443 of any destination the policy allows are
 * refused by default (UDP_RELAY_QUIC_REFUSE) with ICMP port unreachable,
 * so apps fall back to TLS over TCP, which can be intercepted; they are
 * counted into a socketless flow like policy refusals, end_reason
 * "quic_refused". UDP_RELAY_QUIC_PASSTHROUGH relays them like any UDP.
 *
 * One record per finished flow through flowlog: type "udp", the common keys
 * (bytes and packets each way, start, end, end_reason "idle",
 * "upstream_refused", "upstream_unreachable", "policy:<verdict>",
 * "quic_refused", "shutdown", "error"), plus "upstream" when a host port
 * was rewritten, and "via" and "user" for a listener's flows.
 *
 * Other ways in (listen/: SOCKS5 UDP ASSOCIATE, UDP forwards) run relays of
 * their own, with no netstack: `send` is their reply path, `via` and `user`
 * say how the flows came in. Their clients and destinations may differ in
 * family (an IPv4 client sending to an IPv6 destination). */
#ifndef WGMITM_MITM_UDP_H
#define WGMITM_MITM_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

struct netstack;
struct policy;
struct flowlog;

#define UDP_RELAY_DEFAULT_MAX_FLOWS 4096
#define UDP_RELAY_DEFAULT_IDLE_MS 60000
#define UDP_RELAY_DEFAULT_DNS_IDLE_MS 30000
#define UDP_RELAY_QUIC_PORT 443
#define UDP_RELAY_BUF_SIZE 65536 /* one datagram from upstream */
#define UDP_RELAY_MAX_PROTECTED 16

enum udp_relay_quic {
	UDP_RELAY_QUIC_REFUSE = 0,  /* ICMP port unreachable: apps fall back to TCP */
	UDP_RELAY_QUIC_PASSTHROUGH, /* relayed like other UDP (not decrypted) */
};

enum udp_relay_unreach {
	UDP_RELAY_UNREACH_PORT,       /* upstream refused (or could not be reached) */
	UDP_RELAY_UNREACH_PROHIBITED, /* the destination policy refused it */
};

/* The endpoint's own UDP ports on the capture host (WireGuard, UDP
 * forwards): a flow to one of them on any address of the host, loopback
 * included, would loop back into the endpoint. */
struct udp_relay_ports {
	uint16_t port[UDP_RELAY_MAX_PROTECTED];
	size_t n;
};

struct udp_relay_config {
	const struct policy *policy; /* borrowed, must outlive the relay; required */
	struct flowlog *log;         /* borrowed; NULL: no records */
	size_t max_flows;            /* 0: UDP_RELAY_DEFAULT_MAX_FLOWS */
	uint32_t max_flows_per_peer; /* of those, one peer's; 0 (or above max_flows): half */
	uint32_t idle_ms;            /* 0: UDP_RELAY_DEFAULT_IDLE_MS */
	uint32_t dns_idle_ms;        /* 0: UDP_RELAY_DEFAULT_DNS_IDLE_MS */
	enum udp_relay_quic quic;    /* UDP to port 443; default: refused */

	/* How the flows came in (a static string, "socks5", "forward"; NULL:
	 * the tunnel) and who (copied at once; NULL or "": nobody), for the
	 * records. */
	const char *via;
	const char *user;

	/* Flows to these ports on the host's own addresses are refused like
	 * policy refusals ("policy:own_service"). Borrowed, read as each flow
	 * begins (it may grow while the relay runs). NULL: none. */
	const struct udp_relay_ports *protect;

	/* Where answers from upstream are read: UDP_RELAY_BUF_SIZE bytes,
	 * borrowed, which relays of one loop may share (each answer is used
	 * only during the call that reads it). NULL: the relay's own. */
	uint8_t *recv_buf;

	/* Datagrams for our own services, e.g. dns_proxy_udp. NULL: dropped. */
	void (*local)(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
		      const uint8_t *data, size_t len);
	void *local_ctx;

	/* The name of the peer owning a client address, for records (NULL or
	 * returning NULL: unknown). The string is copied at once. */
	const char *(*peer_name)(void *ctx, const struct sockaddr *client);
	void *peer_ctx;

	/* Sends ICMP destination unreachable to `client` for its datagram to
	 * `dest`, quoting the datagram (to be wired to the netstack's ICMP
	 * unreachable). NULL: such datagrams are only dropped and counted. */
	void (*unreachable)(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
			    const uint8_t *data, size_t len, enum udp_relay_unreach why);
	void *unreachable_ctx;

	/* The reply path: NULL sends with netstack_udp_send(ns, from, to, ...).
	 * Set by tests that run without a netstack. Returns 0 or -errno. */
	int (*send)(void *ctx, const struct sockaddr *from, const struct sockaddr *to,
		    const uint8_t *data, size_t len);
	void *send_ctx;
};

struct udp_relay_stats {
	uint64_t flows_active;               /* gauge, socketless policy flows included */
	uint64_t flows_opened;               /* flows with an upstream socket */
	uint64_t flows_refused;              /* socketless flows made for refused destinations */
	uint64_t flows_idle;                 /* ended by the idle timeout */
	uint64_t flows_upstream_refused;     /* ended by ECONNREFUSED */
	uint64_t flows_error;                /* socket, connect or receive errors */
	uint64_t table_full;                 /* datagrams dropped: no room for a new flow */
	uint64_t peer_limit;                 /* datagrams dropped: the peer held its share */
	uint64_t policy_drop;                /* datagrams to refused destinations */
	uint64_t quic_refused;               /* datagrams to port 443 refused (QUIC) */
	uint64_t own_service;                /* datagrams to our own ports (cfg.protect) */
	uint64_t local;                      /* datagrams handed to `local` */
	uint64_t datagrams_up, bytes_up;     /* client -> upstream, sent */
	uint64_t datagrams_down, bytes_down; /* upstream -> client, sent */
	uint64_t send_drop;                  /* upstream socket refused a datagram (EAGAIN, ...) */
	uint64_t reply_drop;                 /* the reply path refused an answer */
	uint64_t unreachable_sent;           /* ICMP unreachable asked of `unreachable` */
	uint64_t records;                    /* records handed to flowlog */
};

/* `ns` may be NULL when cfg->send is set. cfg is copied. NULL with errno
 * EINVAL or ENOMEM. */
struct udp_relay *udp_relay_new(uv_loop_t *loop, struct netstack *ns,
				const struct udp_relay_config *cfg)
	__attribute__((warn_unused_result));

/* One datagram from a tunnel client (the netstack's ops.udp_recv). `data`
 * is used only during the call. */
void udp_relay_recv(struct udp_relay *r, const struct sockaddr *client, const struct sockaddr *dest,
		    const uint8_t *data, size_t len);

void udp_relay_get_stats(const struct udp_relay *r, struct udp_relay_stats *out);

/* For flows that begin from now on. */
void udp_relay_set_quic(struct udp_relay *r, enum udp_relay_quic quic);

/* Ends every flow ("shutdown", records written) and stops the timer; later
 * datagrams are dropped. Idempotent. */
void udp_relay_shutdown(struct udp_relay *r);

/* udp_relay_shutdown with `reason` (a static string) as the end_reason of
 * the flows that had a socket ("association_closed"). */
void udp_relay_stop(struct udp_relay *r, const char *reason);

/* Shuts down if needed; the memory is released once libuv has closed the
 * sockets (the loop must run again). NULL is a no-op. */
void udp_relay_free(struct udp_relay *r);

#endif
