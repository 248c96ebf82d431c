/* The netstack: a userspace TCP/IP stack (lwIP) fed with the decrypted inner
 * IP packets of the WireGuard tunnel. It answers ICMP/ICMPv6 echo on the
 * tunnel addresses and hands every IP packet it sends back to the caller,
 * which routes it to the peer that owns the destination address.
 *
 * lwIP keeps global state, so there is at most one netstack per process, and
 * every call happens on the thread that runs its libuv loop. */
#ifndef WGMITM_NETSTACK_H
#define WGMITM_NETSTACK_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/stream.h"

#define NETSTACK_DEFAULT_MTU 1420
#define NETSTACK_DEFAULT_MAX_TCP 4096
/* TCP keepalive on accepted connections: the first probe after this much
 * silence from the client, then one every interval; after count unanswered
 * probes the connection is reset and ops.closed gets -ECONNABORTED. */
#define NETSTACK_DEFAULT_KEEPALIVE_IDLE_S 120
#define NETSTACK_MAX_KEEPALIVE_IDLE_S (7 * 24 * 3600)
#define NETSTACK_KEEPALIVE_INTERVAL_S 10
#define NETSTACK_KEEPALIVE_COUNT 6
/* Half-open TCP connections (SYN received, handshake not done) one source
 * address may have, over all ports; its further SYNs are dropped (the
 * client retries). A port's backlog holds 255. */
#define NETSTACK_HALF_OPEN_PER_SOURCE 64

struct netstack_config {
	struct in_addr addr4;  /* tunnel IPv4 address (network order); 0.0.0.0: none */
	struct in6_addr addr6; /* tunnel IPv6 address; ::: none */
	uint16_t mtu;          /* tunnel MTU, 1280..65535; 0: NETSTACK_DEFAULT_MTU */
	/* Accepted TCP connections at once; more are reset. Each may buffer up
     * to 1 MiB each way (TCP_WND, TCP_SND_BUF). 0: NETSTACK_DEFAULT_MAX_TCP. */
	uint32_t max_tcp; /* see netstack_set_max_tcp */
	/* Seconds of client silence before the first keepalive probe, up to
     * NETSTACK_MAX_KEEPALIVE_IDLE_S. 0: NETSTACK_DEFAULT_KEEPALIVE_IDLE_S. */
	uint32_t keepalive_idle_s;
};

/* One TCP connection a client opened to any address, terminated here. */
struct netstack_tcp;

struct netstack_ops {
	/* One IP packet (v4 or v6) the stack sends toward a peer; the caller
     * routes it by its destination address. The buffer is valid only for
     * the duration of the call. Called from inside netstack_input, the
     * netstack's timer and the send functions; it must not call back into
     * the netstack. */
	void (*output)(void *ctx, const uint8_t *pkt, size_t len);

	/* A client completed a TCP handshake with `dest`, whatever address and
     * port it dialled. Return 0 after netstack_tcp_set_ops to take the
     * connection; nonzero resets it. NULL: every connection is reset. */
	int (*tcp_accept)(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
			  const struct sockaddr *dest);

	/* A UDP datagram from `client` to `dest` (any address). `data` is valid
     * only during the call. NULL: datagrams are dropped. */
	void (*udp_recv)(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
			 const uint8_t *data, size_t len);
};

/* A connection's callbacks are a stream's (common/stream.h), set in
 * tcp_accept. Here, in particular: recv is not called while paused, except
 * right before closed(0): data held by a pause was already acknowledged to
 * the client, so it is delivered then whatever the pause (at most one
 * window), followed by the FIN; closed(0) comes after an orderly close of
 * both directions (lwIP may still finish it, e.g. TIME-WAIT, on its own);
 * -ECONNABORTED when retransmissions or keepalives gave up. */

/* Counters since netstack_new. The lwip_* fields are lwIP's own protocol
 * drops (bad header, nothing listening, not addressed to us, ...). */
struct netstack_stats {
	uint64_t in_packets; /* packets handed to lwIP */
	uint64_t in_bytes;
	uint64_t out_packets; /* packets handed to ops.output */
	uint64_t out_bytes;
	uint64_t out_flattened;    /* of those, chained pbufs copied into one buffer */
	uint64_t drop_short;       /* shorter than the fixed IP header */
	uint64_t drop_version;     /* neither IPv4 nor IPv6 */
	uint64_t drop_length;      /* header lengths inconsistent with the buffer */
	uint64_t drop_ext_header;  /* IPv6 extension header chain malformed */
	uint64_t drop_nomem;       /* no memory for the packet */
	uint64_t drop_lwip_assert; /* failed an lwIP assert: dropped, its connection reset */
	uint64_t tcp_accepted;     /* handed to ops.tcp_accept and taken */
	uint64_t tcp_refused;      /* reset: no tcp_accept, refused, over max_tcp, no memory */
	uint64_t
		tcp_syn_limited; /* SYNs dropped: the source had NETSTACK_HALF_OPEN_PER_SOURCE half-open */
	uint64_t tcp_active;    /* accepted and not yet closed (gauge) */
	uint64_t tcp_listeners; /* ports with a listener (gauge) */
	uint64_t tcp_time_wait; /* closed connections lwIP keeps in TIME-WAIT
                                 (60 s; gauge, counted when read; one pcb, 312 bytes, each) */
	uint64_t udp_in;        /* datagrams handed to ops.udp_recv */
	uint64_t udp_out;       /* datagrams sent by netstack_udp_send */
	uint64_t udp_drop;      /* no udp_recv, or no memory for a pcb */
	uint64_t udp_unreach;   /* ICMP unreachable sent by netstack_udp_unreachable */
	uint64_t lwip_ip4_drop;
	uint64_t lwip_ip6_drop;
	uint64_t lwip_icmp4_drop;
	uint64_t lwip_icmp6_drop;
	uint64_t lwip_tcp_drop;
	uint64_t lwip_udp_drop;
	uint64_t lwip_frag_drop; /* IPv4 and IPv6 reassembly */
	uint64_t lwip_mem_err;   /* lwIP allocation failures, all protocols */
};

/* Creates the netstack on `loop` (lwIP timers run as a uv_timer there; the
 * timer does not keep the loop alive by itself). `cfg` and `ops` are copied.
 * Returns NULL with errno set: EINVAL (bad config), EBUSY (a netstack
 * already exists), ENOMEM. */
struct netstack *netstack_new(uv_loop_t *loop, const struct netstack_config *cfg,
			      const struct netstack_ops *ops, void *ctx)
	__attribute__((warn_unused_result));

/* One decrypted, source-checked inner IP packet (v4 or v6). The bytes are
 * copied; replies may be emitted through ops.output before this returns.
 * Bytes past the length in the IP header are ignored; non-IP or malformed
 * packets are dropped and counted. */
void netstack_input(struct netstack *ns, const uint8_t *pkt, size_t len);

void netstack_get_stats(const struct netstack *ns, struct netstack_stats *out);

/* A new bound for accepted TCP connections (0: the default); those over it
 * stay until they end, only new ones are refused. */
void netstack_set_max_tcp(struct netstack *ns, uint32_t max_tcp);

/* ---- TCP connections ----------------------------------------------------
 * The handle stays valid until the caller closes or aborts it, or until
 * ops.closed returns. Calls made from inside a callback are allowed (also
 * closing or aborting the connection the callback is for). */

void netstack_tcp_set_ops(struct netstack_tcp *conn, const struct stream_cb *ops, void *arg);

/* The connection as a stream: stream_* calls are the netstack_tcp_* below. */
struct stream *netstack_tcp_stream(struct netstack_tcp *conn);

/* Queues up to `len` bytes toward the client (copied) and sends what the
 * window allows. Returns the bytes taken, possibly fewer than `len` (0 when
 * the send buffer is full: wait for ops.sent). */
size_t netstack_tcp_write(struct netstack_tcp *conn, const uint8_t *data, size_t len);

/* Bytes netstack_tcp_write would take now. */
size_t netstack_tcp_writable(const struct netstack_tcp *conn);

/* Backpressure from the upper layer: while paused, received data is held
 * and not acknowledged as consumed, so the client's window closes (at most
 * one window, TCP_WND, is held). Resume delivers what was held (ops.recv may
 * run before it returns). */
void netstack_tcp_pause(struct netstack_tcp *conn);
void netstack_tcp_resume(struct netstack_tcp *conn);

/* Half-close: a FIN follows the queued data; receiving continues.
 * Returns 0 or -ENOTCONN. */
int netstack_tcp_shutdown(struct netstack_tcp *conn);

/* Orderly close (FIN after queued data, unread data discarded) or reset.
 * Either frees the handle; no callback follows. */
void netstack_tcp_close(struct netstack_tcp *conn);
void netstack_tcp_abort(struct netstack_tcp *conn);

/* ---- UDP -----------------------------------------------------------------
 * Sends `len` bytes from `from` (the address and port the client sent to)
 * to `to` (the client). Both of one family. Returns 0, -EAFNOSUPPORT,
 * -EMSGSIZE or -ENOMEM. */
int netstack_udp_send(struct netstack *ns, const struct sockaddr *from, const struct sockaddr *to,
		      const uint8_t *data, size_t len);

/* Why a datagram could not be delivered (netstack_udp_unreachable). */
enum netstack_unreach {
	NETSTACK_UNREACH_PORT,       /* port unreachable: the upstream refused it
                                    (ICMPv4 type 3 code 3, ICMPv6 type 1 code 4) */
	NETSTACK_UNREACH_PROHIBITED, /* administratively prohibited: policy refused it
                                    (ICMPv4 type 3 code 13, ICMPv6 type 1 code 1) */
};

/* Sends an ICMP destination unreachable (IPv4 type 3, IPv6 type 1) from
 * `dest`'s address to `client` about the UDP datagram client -> dest whose
 * payload is `data`. The message quotes a reconstructed IP + UDP header of
 * that datagram (lengths and UDP checksum as sent) and the start of `data`:
 * the whole error is at most 576 bytes over IPv4 (RFC 1812 4.3.2.3; RFC 792
 * asks only for 8 bytes past the IP header) and 1280 over IPv6 (RFC 4443
 * 2.4). `client` and `dest` are of one family, unicast. Nothing is kept;
 * the packet goes out through ops.output before this returns (not from
 * inside ops.output). Rate limiting is the caller's.
 * Returns 0, -EAFNOSUPPORT (families), -EINVAL (not unicast, bad reason),
 * -EMSGSIZE (len larger than any datagram), -ENOMEM (never at present: the
 * message is built on the stack). */
int netstack_udp_unreachable(struct netstack *ns, const struct sockaddr *client,
			     const struct sockaddr *dest, const uint8_t *data, size_t len,
			     enum netstack_unreach reason);

/* Aborts every TCP connection (no callbacks: the caller has forgotten
 * them), removes the netif and stops the timer. The memory is released when
 * the loop next runs (libuv closes handles asynchronously); another netstack
 * can be created right away. Not from inside a callback. NULL is a no-op. */
void netstack_free(struct netstack *ns);

#endif
