/* Internal to src/netstack: the netstack's state and the functions its
 * files share. Includes lwIP headers; nothing outside src/netstack may
 * include it. */
#ifndef WGMITM_NETSTACK_INTERNAL_H
#define WGMITM_NETSTACK_INTERNAL_H

#include <stdbool.h>

#include "netstack.h"

#include "lwip/ip_addr.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/tcp.h"
#include "lwip/udp.h"

/* An IP datagram's length field is 16 bits (IPv6: payload + 40 fixed bytes;
 * jumbograms are refused), and so is a pbuf chain's tot_len. */
#define NETSTACK_MAX_PACKET 0xffff
#define NETSTACK_PORTS 65536

/* The netif's IPv6 slot that briefly holds a packet's destination address
 * while lwIP processes it (see netstack_input). */
#define NETSTACK_IP6_SLOT_DEST (LWIP_IPV6_NUM_ADDRESSES - 1)

union netstack_sockaddr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

struct netstack {
	uv_loop_t *loop;
	uv_timer_t timer;   /* drives sys_check_timeouts */
	uint64_t timer_due; /* loop time the armed timer fires at */
	bool closing;       /* netstack_free: emit and notify nothing more */
	struct netstack_ops ops;
	void *ctx;
	uint32_t max_tcp;
	uint32_t keep_idle_ms; /* first keepalive probe after this much silence */
	struct netif netif;
	struct netstack_stats stats;
	struct netstack_tcp *conns;                 /* accepted, not yet freed */
	struct tcp_pcb *tcp_listen[NETSTACK_PORTS]; /* by port, made on first SYN */
	struct udp_pcb *udp_bound[NETSTACK_PORTS];  /* by port, made on first datagram */
	/* Outbound pbuf chains are flattened here, never into a fresh buffer. */
	uint8_t scratch[NETSTACK_MAX_PACKET];
	/* Inbound chained UDP datagrams (reassembled) are flattened here. */
	uint8_t rx_scratch[NETSTACK_MAX_PACKET];
};

/* Re-arms the lwIP timer after anything that may have added a timeout. */
void netstack__timer_arm(struct netstack *ns);

void netstack__sockaddr_from_ip(const ip_addr_t *ip, u16_t port, union netstack_sockaddr *out);
bool netstack__ip_from_sockaddr(const struct sockaddr *sa, ip_addr_t *ip, u16_t *port);

/* netstack_tcp.c */
void netstack__tcp_listen(struct netstack *ns, u16_t port);
void netstack__tcp_free_all(struct netstack *ns);

/* netstack_udp.c */
struct udp_pcb *netstack__udp_bind(struct netstack *ns, u16_t port);
void netstack__udp_free_all(struct netstack *ns);

#endif
