/* lwIP options for wgmitm's netstack (lwIP 2.1.3, raw API, NO_SYS=1).
 *
 * One point-to-point netif carries decrypted WireGuard inner packets: no link
 * layer, no ARP, no DHCP, no IPv6 neighbour discovery or autoconfiguration.
 * lwIP runs on the libuv loop thread only. The reasons for each choice are in
 * docs/internals/netstack.md. */
#ifndef WGMITM_NETSTACK_LWIPOPTS_H
#define WGMITM_NETSTACK_LWIPOPTS_H

/* ---- System ---------------------------------------------------------- */
#define NO_SYS 1
#define SYS_LIGHTWEIGHT_PROT 0 /* single thread */
#define LWIP_TIMERS 1          /* sys_check_timeouts from a uv_timer */
#define LWIP_NETCONN 0
#define LWIP_SOCKET 0
#define LWIP_ALTCP 0

/* ---- Memory: system malloc ---------------------------------------------
 * Fixed lwIP pools would cap pcbs and pbufs at compile time, and running out
 * silently kills connections. Memory is bounded instead by the windows below
 * times the number of flows, which the netstack limits and counts. */
#define MEM_LIBC_MALLOC 1
#define MEMP_MEM_MALLOC 1
#define MEM_ALIGNMENT 8
#define MEM_STATS 1
#define MEMP_STATS 1
/* Only used as a fragmentation unit when lwIP allocates PBUF_POOL chains. */
#define PBUF_POOL_BUFSIZE 1536
#define PBUF_LINK_HLEN 0 /* no link header */
#define PBUF_LINK_ENCAPSULATION_HLEN 0

/* ---- Network interface ------------------------------------------------- */
#define LWIP_SINGLE_NETIF 1 /* the tunnel is the only netif */
#define LWIP_NETIF_LOOPBACK 0
#define LWIP_HAVE_LOOPIF 0
#define LWIP_NETIF_STATUS_CALLBACK 0
#define LWIP_NETIF_LINK_CALLBACK 0
#define LWIP_NETIF_HOSTNAME 0
/* TCP builds each segment in one pbuf, so output is mostly zero-copy. */
#define LWIP_NETIF_TX_SINGLE_PBUF 1
#define LWIP_ARP 0
#define LWIP_ETHERNET 0
#define LWIP_DHCP 0
#define LWIP_AUTOIP 0
#define LWIP_IGMP 0
#define LWIP_DNS 0
#define LWIP_RAW 0

/* ---- IPv4 -------------------------------------------------------------- */
#define LWIP_IPV4 1
#define IP_FORWARD 0
#define IP_OPTIONS_ALLOWED 1
/* Phones fragment datagrams larger than the tunnel MTU: reassemble, bounded. */
#define IP_REASSEMBLY 1
#define IP_REASS_MAX_PBUFS 256
#define IP_FRAG 1
#define LWIP_ICMP 1
#define LWIP_BROADCAST_PING 0
#define LWIP_MULTICAST_PING 0

/* ---- IPv6 -------------------------------------------------------------- */
#define LWIP_IPV6 1
#define LWIP_IPV6_NUM_ADDRESSES 3
#define LWIP_IPV6_FORWARD 0
#define LWIP_IPV6_FRAG 1
#define LWIP_IPV6_REASS 1
/* 64-bit: the reassembly helper (with a pointer) is larger than the 8-byte
 * fragment header, so it borrows bytes of the header before it. */
#define IPV6_FRAG_COPYHEADER 1
#define LWIP_ICMP6 1
#define LWIP_IPV6_MLD 0
#define LWIP_IPV6_AUTOCONFIG 0
#define LWIP_IPV6_ADDRESS_LIFETIMES 0
#define LWIP_IPV6_SEND_ROUTER_SOLICIT 0
#define LWIP_IPV6_DUP_DETECT_ATTEMPTS 0 /* addresses are valid at once */
#define LWIP_IPV6_DHCP6 0
#define LWIP_ND6_QUEUEING 0
#define LWIP_ND6_ALLOW_RA_UPDATES 0
#define LWIP_ND6_TCP_REACHABILITY_HINTS 0 /* no ND on a p2p link: skip per-ACK work */

/* ---- Checksums ----------------------------------------------------------
 * Inner packets were authenticated by WireGuard's AEAD: checking their
 * checksums again buys nothing. Output checksums are generated; the peer's
 * kernel verifies them. */
#define CHECKSUM_CHECK_IP 0
#define CHECKSUM_CHECK_UDP 0
#define CHECKSUM_CHECK_TCP 0
#define CHECKSUM_CHECK_ICMP 0
#define CHECKSUM_CHECK_ICMP6 0
#define CHECKSUM_GEN_IP 1
#define CHECKSUM_GEN_UDP 1
#define CHECKSUM_GEN_TCP 1
#define CHECKSUM_GEN_ICMP 1
#define CHECKSUM_GEN_ICMP6 1
#define LWIP_CHKSUM_ALGORITHM 3

/* ---- UDP --------------------------------------------------------------- */
#define LWIP_UDP 1
#define LWIP_UDPLITE 0

/* ---- TCP ----------------------------------------------------------------
 * Tunnel MTU 1420: MSS 1380 over IPv4; lwIP derives 1360 for IPv6 from the
 * netif MTU (TCP_CALCULATE_EFF_SEND_MSS). Windows sized for ~100 Mbit/s at
 * 80 ms RTT (1 MiB); data is acknowledged only as the upper layer consumes
 * it (tcp_recved), which is the backpressure. */
#define LWIP_TCP 1
#undef TCP_MSS /* <netinet/tcp.h> (via uv.h) has a legacy TCP_MSS of 512 */
#define TCP_MSS 1380
#define TCP_CALCULATE_EFF_SEND_MSS 1
#define LWIP_WND_SCALE 1
#define TCP_RCV_SCALE 5 /* max window 0xffff << 5 = 2 MiB */
#define TCP_WND (1024 * 1024)
#define TCP_SND_BUF (1024 * 1024)
/* Segments are built one pbuf each (TX_SINGLE_PBUF), so a full send buffer
 * is about TCP_SND_BUF / TCP_MSS pbufs; 4x leaves room for small writes. */
#define TCP_SND_QUEUELEN ((4 * TCP_SND_BUF + TCP_MSS - 1) / TCP_MSS)
#define TCP_SNDLOWAT (32 * 1024)
#define TCP_SNDQUEUELOWAT (TCP_SND_QUEUELEN / 2)
#define TCP_OVERSIZE TCP_MSS
#define TCP_QUEUE_OOSEQ 1
/* Tell the phone what we hold out of order; with patches/lwip/0001 also
 * SACK-based loss recovery as a sender. */
#define LWIP_TCP_SACK_OUT 1
#define LWIP_TCP_MAX_SACK_NUM 4
/* Half-open connections per destination port; beyond it SYNs are ignored
 * (the client retries), so a SYN flood cannot grow memory without bound. */
#define TCP_LISTEN_BACKLOG 1
#define TCP_DEFAULT_LISTEN_BACKLOG                                                                 \
	255 /* per port (a u8_t); one source holds at most NETSTACK_HALF_OPEN_PER_SOURCE */
/* Keepalive per accepted pcb (keep_idle from netstack_config); a phone
 * that leaves without FIN or RST is then found out. */
#define LWIP_TCP_KEEPALIVE 1
#define TCP_KEEPIDLE_DEFAULT 120000UL
#define TCP_KEEPINTVL_DEFAULT 10000UL
#define TCP_KEEPCNT_DEFAULT 6U
#define LWIP_TCP_TIMESTAMPS 0
#define LWIP_CALLBACK_API 1
#define LWIP_EVENT_API 0
#define TCP_MAXRTX 12
/* lwIP's retransmission timeout counts in slow ticks (2 x TCP_TMR_INTERVAL)
 * and never goes below one tick. With the default 250 ms timer a lost
 * segment that fast retransmit does not repair (a tail loss; several
 * losses in one window before the SACK patch) costs 0.5-1 s, which turns
 * 0.25% loss at a phone's receive buffer into a stall-bound transfer. 50 ms ticks keep the
 * RTO near RTT + 100 ms; the exponential backoff (up to x128) still gives
 * about 3 minutes before a connection is given up. */
#define TCP_TMR_INTERVAL 50
/* TIME-WAIT (2 x MSL) of 60 s as Linux's TCP_TIMEWAIT_LEN instead of lwIP's
 * 2 min: a closed connection costs a pcb (312 bytes) for that long, and every
 * new SYN walks the TIME-WAIT list. */
#define TCP_MSL 30000UL
#define TCP_SYNMAXRTX 6

/* ---- Statistics (read by netstack_get_stats) -------------------------- */
#define LWIP_STATS 1
#define LWIP_STATS_DISPLAY 0
#define LWIP_STATS_LARGE 1 /* 32-bit counters */
#define LINK_STATS 1
#define IP_STATS 1
#define IPFRAG_STATS 1
#define ICMP_STATS 1
#define UDP_STATS 1
#define TCP_STATS 1
#define IP6_STATS 1
#define ICMP6_STATS 1
#define IP6_FRAG_STATS 1
#define ND6_STATS 1
#define MLD6_STATS 0
#define IGMP_STATS 0
#define ETHARP_STATS 0
#define SYS_STATS 0

/* ---- Hooks (netstack_hooks.h): RFC 6528 initial sequence numbers ------ */
#define LWIP_HOOK_FILENAME "netstack_hooks.h"

/* ---- Debug ------------------------------------------------------------- */
/* Asserts stay on (LWIP_NOASSERT undefined): they abort, so fuzzing finds
 * them. LWIP_DEBUG stays off: no per-packet diagnostics. */

#endif
