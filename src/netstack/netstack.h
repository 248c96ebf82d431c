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
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define NETSTACK_DEFAULT_MTU 1420

struct netstack_config {
    struct in_addr addr4;   /* tunnel IPv4 address (network order); 0.0.0.0: none */
    struct in6_addr addr6;  /* tunnel IPv6 address; ::: none */
    uint16_t mtu;           /* tunnel MTU, 1280..65535; 0: NETSTACK_DEFAULT_MTU */
};

struct netstack_ops {
    /* One IP packet (v4 or v6) the stack sends toward a peer; the caller
     * routes it by its destination address. The buffer is valid only for
     * the duration of the call. Called from inside netstack_input and from
     * the netstack's timer; it must not call back into the netstack. */
    void (*output)(void *ctx, const uint8_t *pkt, size_t len);
};

/* Counters since netstack_new. The lwip_* fields are lwIP's own protocol
 * drops (bad header, nothing listening, not addressed to us, ...). */
struct netstack_stats {
    uint64_t in_packets;      /* packets handed to lwIP */
    uint64_t in_bytes;
    uint64_t out_packets;     /* packets handed to ops.output */
    uint64_t out_bytes;
    uint64_t out_flattened;   /* of those, chained pbufs copied into one buffer */
    uint64_t drop_short;      /* shorter than the fixed IP header */
    uint64_t drop_version;    /* neither IPv4 nor IPv6 */
    uint64_t drop_length;     /* header lengths inconsistent with the buffer */
    uint64_t drop_ext_header; /* IPv6 extension header chain malformed */
    uint64_t drop_nomem;      /* no memory for the packet */
    uint64_t lwip_ip4_drop;
    uint64_t lwip_ip6_drop;
    uint64_t lwip_icmp4_drop;
    uint64_t lwip_icmp6_drop;
    uint64_t lwip_tcp_drop;
    uint64_t lwip_udp_drop;
    uint64_t lwip_frag_drop;  /* IPv4 and IPv6 reassembly */
    uint64_t lwip_mem_err;    /* lwIP allocation failures, all protocols */
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

/* Removes the netif and stops the timer. The memory is released when the
 * loop next runs (libuv closes handles asynchronously); another netstack can
 * be created right away. NULL is a no-op. */
void netstack_free(struct netstack *ns);

#endif
