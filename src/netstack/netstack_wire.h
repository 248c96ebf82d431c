/* Wire formats the netstack writes itself (lwIP builds everything else):
 * the headers of an ICMP/ICMPv6 destination unreachable and of the datagram
 * it quotes. Multi-byte fields are in network order; the structs are only
 * filled on the stack and copied into the packet (no aligned access to
 * packet bytes). */
#ifndef WGMITM_NETSTACK_WIRE_H
#define WGMITM_NETSTACK_WIRE_H

#include <stdint.h>

#define NETSTACK_IPPROTO_ICMP 1
#define NETSTACK_IPPROTO_UDP 17
#define NETSTACK_IPPROTO_ICMPV6 58

/* RFC 791 */
struct netstack_ip4_hdr {
	uint8_t ver_ihl; /* 0x45: version 4, 5 words, no options */
	uint8_t tos;
	uint16_t total_len;
	uint16_t id;
	uint16_t frag; /* flags (DF 0x4000) and fragment offset */
	uint8_t ttl;
	uint8_t proto;
	uint16_t csum;
	uint8_t src[4];
	uint8_t dst[4];
};
_Static_assert(sizeof(struct netstack_ip4_hdr) == 20, "IPv4 header");
#define NETSTACK_IP4_DF 0x4000

/* RFC 8200 */
struct netstack_ip6_hdr {
	uint8_t ver_tc_flow[4]; /* 0x60 0 0 0: version 6, class 0, no flow label */
	uint16_t payload_len;
	uint8_t next;
	uint8_t hop_limit;
	uint8_t src[16];
	uint8_t dst[16];
};
_Static_assert(sizeof(struct netstack_ip6_hdr) == 40, "IPv6 header");

/* RFC 768 */
struct netstack_udp_hdr {
	uint16_t sport;
	uint16_t dport;
	uint16_t len;
	uint16_t csum;
};
_Static_assert(sizeof(struct netstack_udp_hdr) == 8, "UDP header");

/* RFC 792 destination unreachable / RFC 4443 section 3.1: the same 8 bytes
 * (the 32 "unused" bits are zero for the codes sent here). */
struct netstack_icmp_unreach_hdr {
	uint8_t type;
	uint8_t code;
	uint16_t csum;
	uint32_t unused;
};
_Static_assert(sizeof(struct netstack_icmp_unreach_hdr) == 8, "ICMP unreachable header");

#define NETSTACK_ICMP4_UNREACH 3 /* RFC 792 */
#define NETSTACK_ICMP4_CODE_PORT 3
#define NETSTACK_ICMP4_CODE_PROHIBITED 13 /* RFC 1812 section 5.2.7.1 */
#define NETSTACK_ICMP6_UNREACH 1          /* RFC 4443 section 3.1 */
#define NETSTACK_ICMP6_CODE_PROHIBITED 1
#define NETSTACK_ICMP6_CODE_PORT 4

/* Bounds on the whole error message: RFC 1812 section 4.3.2.3 (IPv4, 576
 * bytes) and RFC 4443 section 2.4 (c) (IPv6, the minimum MTU, 1280). */
#define NETSTACK_ICMP4_ERROR_MAX 576
#define NETSTACK_ICMP6_ERROR_MAX 1280

#endif
