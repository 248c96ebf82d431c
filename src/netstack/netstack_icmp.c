/* ICMP and ICMPv6 destination unreachable for UDP datagrams the upper layer
 * could not deliver. lwIP's own icmp_dest_unreach and icmp6_dest_unreach
 * only work on the pbuf being received (and send from the netif's address);
 * these errors are decided later, by the relay, from the datagram's
 * addresses and bytes, so the message is built here: outer header, ICMP
 * header, then the datagram as the client sent it (header reconstructed,
 * as much payload as the RFC's size bound allows). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <arpa/inet.h>

#include "netstack_internal.h"
#include "netstack_wire.h"

/* RFC 1071: one's complement sum of 16-bit big-endian words. */
static uint32_t netstack__sum(uint32_t acc, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		acc += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		acc += (uint32_t)p[len - 1] << 8;
	return acc;
}

/* Folds the sum and complements it, in network order for the header. */
static uint16_t netstack__csum(uint32_t acc)
{
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return htons((uint16_t)~acc);
}

/* Pseudo-header sum (RFC 768 / RFC 8200 section 8.1) for `ulen` bytes of
 * upper-layer protocol `proto` between two addresses of `alen` bytes. */
static uint32_t netstack__pseudo(const uint8_t *src, const uint8_t *dst, size_t alen, uint32_t ulen,
				 uint8_t proto)
{
	uint32_t acc = netstack__sum(netstack__sum(0, src, alen), dst, alen);
	return acc + (ulen >> 16) + (ulen & 0xffff) + proto;
}

/* The UDP header of the datagram client -> dest, with its real checksum
 * (the client's stack may check what it sent against the quote). */
static void netstack__udp_quote(struct netstack_udp_hdr *u, const uint8_t *src, const uint8_t *dst,
				size_t alen, uint16_t sport, uint16_t dport, const uint8_t *data,
				size_t len)
{
	u->sport = htons(sport);
	u->dport = htons(dport);
	u->len = htons((uint16_t)(sizeof *u + len));
	u->csum = 0;
	uint32_t acc =
		netstack__pseudo(src, dst, alen, (uint32_t)(sizeof *u + len), NETSTACK_IPPROTO_UDP);
	acc = netstack__sum(acc, (const uint8_t *)u, sizeof *u);
	acc = netstack__sum(acc, data, len);
	u->csum = netstack__csum(acc);
	if (u->csum == 0)
		u->csum = 0xffff; /* 0 means "no checksum" (RFC 768) */
}

/* Unicast only: RFC 1122 section 3.2.2 and RFC 4443 section 2.4 (e) forbid
 * errors about datagrams to multicast or broadcast, or from a source that
 * is not one host. */
static bool netstack__unicast4(const uint8_t a[4])
{
	static const uint8_t zero[4], ones[4] = { 255, 255, 255, 255 };
	return memcmp(a, zero, 4) != 0 && memcmp(a, ones, 4) != 0 && (a[0] & 0xf0) != 0xe0;
}

static bool netstack__unicast6(const uint8_t a[16])
{
	static const uint8_t zero[16];
	return a[0] != 0xff && memcmp(a, zero, 16) != 0;
}

static size_t netstack__unreach4(uint8_t *pkt, const struct sockaddr_in *client,
				 const struct sockaddr_in *dest, const uint8_t *data, size_t len,
				 uint8_t code)
{
	struct netstack_ip4_hdr ip, qip;
	struct netstack_icmp_unreach_hdr icmp;
	struct netstack_udp_hdr udp;
	size_t quoted = len;
	size_t room = NETSTACK_ICMP4_ERROR_MAX - sizeof ip - sizeof icmp - sizeof qip - sizeof udp;
	if (quoted > room)
		quoted = room;
	size_t total = sizeof ip + sizeof icmp + sizeof qip + sizeof udp + quoted;

	/* The quoted datagram: IP header as the client sent it, as far as it
     * can be known (no id, no options, a typical TTL), then UDP. */
	memset(&qip, 0, sizeof qip);
	qip.ver_ihl = 0x45;
	qip.total_len = htons((uint16_t)(sizeof qip + sizeof udp + len));
	qip.ttl = 64;
	qip.proto = NETSTACK_IPPROTO_UDP;
	memcpy(qip.src, &client->sin_addr, 4);
	memcpy(qip.dst, &dest->sin_addr, 4);
	qip.csum = netstack__csum(netstack__sum(0, (const uint8_t *)&qip, sizeof qip));
	netstack__udp_quote(&udp, qip.src, qip.dst, 4, ntohs(client->sin_port),
			    ntohs(dest->sin_port), data, len);

	/* The error, from the address the client sent to (RFC 792: type 3,
     * code, checksum over the ICMP message, 32 unused bits). */
	memset(&icmp, 0, sizeof icmp);
	icmp.type = NETSTACK_ICMP4_UNREACH;
	icmp.code = code;
	size_t off = sizeof ip;
	memcpy(pkt + off, &icmp, sizeof icmp);
	off += sizeof icmp;
	memcpy(pkt + off, &qip, sizeof qip);
	off += sizeof qip;
	memcpy(pkt + off, &udp, sizeof udp);
	off += sizeof udp;
	if (quoted > 0) /* data may be NULL when len is 0 */
		memcpy(pkt + off, data, quoted);
	uint16_t csum = netstack__csum(netstack__sum(0, pkt + sizeof ip, total - sizeof ip));
	memcpy(pkt + sizeof ip + offsetof(struct netstack_icmp_unreach_hdr, csum), &csum, 2);

	/* Outer header: never fragmented (576 < any tunnel MTU), so DF and id 0
     * (RFC 6864 section 4.1). */
	memset(&ip, 0, sizeof ip);
	ip.ver_ihl = 0x45;
	ip.total_len = htons((uint16_t)total);
	ip.frag = htons(NETSTACK_IP4_DF);
	ip.ttl = 64;
	ip.proto = NETSTACK_IPPROTO_ICMP;
	memcpy(ip.src, &dest->sin_addr, 4);
	memcpy(ip.dst, &client->sin_addr, 4);
	ip.csum = netstack__csum(netstack__sum(0, (const uint8_t *)&ip, sizeof ip));
	memcpy(pkt, &ip, sizeof ip);
	return total;
}

static size_t netstack__unreach6(uint8_t *pkt, const struct sockaddr_in6 *client,
				 const struct sockaddr_in6 *dest, const uint8_t *data, size_t len,
				 uint8_t code)
{
	struct netstack_ip6_hdr ip, qip;
	struct netstack_icmp_unreach_hdr icmp;
	struct netstack_udp_hdr udp;
	size_t quoted = len;
	size_t room = NETSTACK_ICMP6_ERROR_MAX - sizeof ip - sizeof icmp - sizeof qip - sizeof udp;
	if (quoted > room)
		quoted = room;
	size_t plen = sizeof icmp + sizeof qip + sizeof udp + quoted;

	memset(&qip, 0, sizeof qip);
	qip.ver_tc_flow[0] = 0x60;
	qip.payload_len = htons((uint16_t)(sizeof udp + len));
	qip.next = NETSTACK_IPPROTO_UDP;
	qip.hop_limit = 64;
	memcpy(qip.src, &client->sin6_addr, 16);
	memcpy(qip.dst, &dest->sin6_addr, 16);
	netstack__udp_quote(&udp, qip.src, qip.dst, 16, ntohs(client->sin6_port),
			    ntohs(dest->sin6_port), data, len);

	memset(&ip, 0, sizeof ip);
	ip.ver_tc_flow[0] = 0x60;
	ip.payload_len = htons((uint16_t)plen);
	ip.next = NETSTACK_IPPROTO_ICMPV6;
	ip.hop_limit = 64;
	memcpy(ip.src, &dest->sin6_addr, 16);
	memcpy(ip.dst, &client->sin6_addr, 16);

	/* RFC 4443 section 3.1: type 1, code, checksum (with the pseudo-header,
     * section 2.3), 32 unused bits, then as much of the invoking packet as
     * fits in the minimum MTU. */
	memset(&icmp, 0, sizeof icmp);
	icmp.type = NETSTACK_ICMP6_UNREACH;
	icmp.code = code;
	size_t off = 0;
	memcpy(pkt + off, &ip, sizeof ip);
	off += sizeof ip;
	memcpy(pkt + off, &icmp, sizeof icmp);
	off += sizeof icmp;
	memcpy(pkt + off, &qip, sizeof qip);
	off += sizeof qip;
	memcpy(pkt + off, &udp, sizeof udp);
	off += sizeof udp;
	if (quoted > 0) /* data may be NULL when len is 0 */
		memcpy(pkt + off, data, quoted);
	uint32_t acc =
		netstack__pseudo(ip.src, ip.dst, 16, (uint32_t)plen, NETSTACK_IPPROTO_ICMPV6);
	uint16_t csum = netstack__csum(netstack__sum(acc, pkt + sizeof ip, plen));
	memcpy(pkt + sizeof ip + offsetof(struct netstack_icmp_unreach_hdr, csum), &csum, 2);
	return sizeof ip + plen;
}

int netstack_udp_unreachable(struct netstack *ns, const struct sockaddr *client,
			     const struct sockaddr *dest, const uint8_t *data, size_t len,
			     enum netstack_unreach reason)
{
	if (client->sa_family != dest->sa_family ||
	    (client->sa_family != AF_INET && client->sa_family != AF_INET6))
		return -EAFNOSUPPORT;
	if ((reason != NETSTACK_UNREACH_PORT && reason != NETSTACK_UNREACH_PROHIBITED) ||
	    (data == NULL && len > 0))
		return -EINVAL;
	bool v6 = client->sa_family == AF_INET6;
	/* The quoted lengths must be ones a real datagram could have had. */
	size_t max = NETSTACK_MAX_PACKET - sizeof(struct netstack_udp_hdr) -
		     (v6 ? 0 : sizeof(struct netstack_ip4_hdr));
	if (len > max)
		return -EMSGSIZE;

	uint8_t pkt[NETSTACK_ICMP6_ERROR_MAX]; /* the larger bound */
	_Static_assert(NETSTACK_ICMP4_ERROR_MAX <= sizeof pkt, "IPv4 error fits");
	size_t n;
	if (v6) {
		const struct sockaddr_in6 *c = (const struct sockaddr_in6 *)client;
		const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)dest;
		if (!netstack__unicast6(c->sin6_addr.s6_addr) ||
		    !netstack__unicast6(d->sin6_addr.s6_addr))
			return -EINVAL;
		n = netstack__unreach6(pkt, c, d, data, len,
				       reason == NETSTACK_UNREACH_PORT
					       ? NETSTACK_ICMP6_CODE_PORT
					       : NETSTACK_ICMP6_CODE_PROHIBITED);
	} else {
		const struct sockaddr_in *c = (const struct sockaddr_in *)client;
		const struct sockaddr_in *d = (const struct sockaddr_in *)dest;
		if (!netstack__unicast4((const uint8_t *)&c->sin_addr) ||
		    !netstack__unicast4((const uint8_t *)&d->sin_addr))
			return -EINVAL;
		n = netstack__unreach4(pkt, c, d, data, len,
				       reason == NETSTACK_UNREACH_PORT
					       ? NETSTACK_ICMP4_CODE_PORT
					       : NETSTACK_ICMP4_CODE_PROHIBITED);
	}
	if (ns->closing)
		return 0;
	/* Straight to the caller, as lwIP's output would: the packet is
     * complete and never fragmented. */
	ns->stats.out_packets++;
	ns->stats.out_bytes += n;
	ns->stats.udp_unreach++;
	ns->ops.output(ns->ctx, pkt, n);
	return 0;
}
