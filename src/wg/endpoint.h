/* A peer's UDP endpoint (IPv4 or IPv6 address and port). */
#ifndef WGMITM_WG_ENDPOINT_H
#define WGMITM_WG_ENDPOINT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

struct wg_endpoint {
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	};
};

/* IP (16 bytes at most) || port (2 bytes). */
#define WG_ENDPOINT_SOURCE_MAX 18

/* Copies a socket address (AF_INET or AF_INET6) into *ep; false for any
 * other family or a too-short length. */
static inline bool wg_endpoint_set(struct wg_endpoint *ep, const struct sockaddr *sa, size_t len)
{
	memset(ep, 0, sizeof(*ep));
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		memcpy(&ep->in4, sa, sizeof(struct sockaddr_in));
		return true;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		memcpy(&ep->in6, sa, sizeof(struct sockaddr_in6));
		return true;
	}
	return false;
}

/* The length to pass to sendto(); 0 when the endpoint is unset. */
static inline size_t wg_endpoint_len(const struct wg_endpoint *ep)
{
	switch (ep->sa.sa_family) {
	case AF_INET:
		return sizeof(struct sockaddr_in);
	case AF_INET6:
		return sizeof(struct sockaddr_in6);
	default:
		return 0;
	}
}

/* Same family, address, port (and IPv6 scope). */
static inline bool wg_endpoint_equal(const struct wg_endpoint *a, const struct wg_endpoint *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET)
		return a->in4.sin_port == b->in4.sin_port &&
		       a->in4.sin_addr.s_addr == b->in4.sin_addr.s_addr;
	if (a->sa.sa_family == AF_INET6)
		return a->in6.sin6_port == b->in6.sin6_port &&
		       a->in6.sin6_scope_id == b->in6.sin6_scope_id &&
		       memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(struct in6_addr)) == 0;
	return false;
}

/* The address bytes that identify the source: 4 for IPv4 (also for an
 * IPv4-mapped IPv6 address, so a dual-stack socket keys a client the same
 * way), 16 for IPv6, 0 for an unset endpoint. Returns the length written. */
static inline size_t wg_endpoint_ip_bytes(const struct wg_endpoint *ep, uint8_t out[16])
{
	if (ep->sa.sa_family == AF_INET) {
		memcpy(out, &ep->in4.sin_addr, 4);
		return 4;
	}
	if (ep->sa.sa_family == AF_INET6) {
		if (IN6_IS_ADDR_V4MAPPED(&ep->in6.sin6_addr)) {
			memcpy(out, &ep->in6.sin6_addr.s6_addr[12], 4);
			return 4;
		}
		memcpy(out, &ep->in6.sin6_addr, 16);
		return 16;
	}
	return 0;
}

/* The bytes a cookie is computed over: IP || port, the port little-endian as
 * wireguard-go's AddrPort.MarshalBinary writes it. Only this host reads them
 * back, so the byte order is a local choice. Returns the length (6 or 18;
 * 0 for an unset endpoint). */
static inline size_t wg_endpoint_cookie_source(const struct wg_endpoint *ep,
					       uint8_t out[WG_ENDPOINT_SOURCE_MAX])
{
	size_t n = wg_endpoint_ip_bytes(ep, out);
	uint16_t port;

	if (n == 0)
		return 0;
	port = ntohs(ep->sa.sa_family == AF_INET ? ep->in4.sin_port : ep->in6.sin6_port);
	out[n] = (uint8_t)port;
	out[n + 1] = (uint8_t)(port >> 8);
	return n + 2;
}

#endif
