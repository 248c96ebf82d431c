/* lwIP hooks (LWIP_HOOK_FILENAME), included by lwIP's sources after their
 * own headers, so lwIP types are known here. Implemented in arch/sys_arch.c. */
#ifndef WGMITM_NETSTACK_HOOKS_H
#define WGMITM_NETSTACK_HOOKS_H

/* lwIP 2.1's default initial sequence number is a counter plus tcp_ticks:
 * predictable. RFC 6528 instead: a 4 µs clock plus a keyed hash of the
 * connection's addresses and ports. */
u32_t netstack__tcp_isn(const ip_addr_t *local_ip, u16_t local_port, const ip_addr_t *remote_ip,
			u16_t remote_port);
#define LWIP_HOOK_TCP_ISN netstack__tcp_isn

/* Half-open connections (SYN_RCVD, in a listen backlog) per source address
 * (patches/lwip/0003): one peer cannot fill a port's backlog for everyone,
 * nor keep a pcb per port it sends SYNs to. */
struct tcp_pcb;
int netstack__half_open_allowed(const ip_addr_t *src);
void netstack__half_open(const struct tcp_pcb *pcb, int delta);
#define LWIP_HOOK_TCP_HALF_OPEN_ALLOWED(src) netstack__half_open_allowed(src)
#define LWIP_HOOK_TCP_HALF_OPEN(pcb, delta) netstack__half_open((pcb), (delta))

/* For netstack__test_fail_next_segment (netstack_testing.h): an assert in
 * the middle of lwIP's processing of an established connection's segment.
 * Otherwise one load and branch per segment. */
struct tcp_pcb;
err_t netstack__tcp_inpacket(const struct tcp_pcb *pcb);
#define LWIP_HOOK_TCP_INPACKET_PCB(pcb, hdr, optlen, opt1len, opt2, p)                             \
	netstack__tcp_inpacket((const struct tcp_pcb *)(pcb))

#endif
