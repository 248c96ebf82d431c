/* The endpoint a phone is told to reach: HOST:PORT parsing and formatting,
 * and auto-detection of the host addresses a LAN client can reach.
 *
 * Detection is split so it can be tested without the machine's interfaces:
 * qr_endpoint_rank() is a pure function over a list of interface addresses;
 * qr_endpoint_detect() only gathers that list (getifaddrs, /proc/net/route,
 * /proc/net/ipv6_route) and calls it. */
#ifndef WGMITM_QR_ENDPOINT_H
#define WGMITM_QR_ENDPOINT_H

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QR_ENDPOINT_HOST_MAX 253 /* a DNS name; IPv6 text is shorter (45) */
/* "[" host "]" ":" 65535 and the NUL */
#define QR_ENDPOINT_TEXT_MAX (QR_ENDPOINT_HOST_MAX + 2 + 6 + 1)

struct qr_endpoint {
	/* AF_INET or AF_INET6 for an address literal, AF_UNSPEC for a DNS name */
	int family;
	/* Canonical text without brackets: inet_ntop form for literals, the
	 * name as given (lower-cased) otherwise. */
	char host[QR_ENDPOINT_HOST_MAX + 1];
	uint16_t port;
};

/* Parses "HOST[:PORT]": an IPv4 literal, a bracketed IPv6 literal
 * ("[fd00::1]" or "[fd00::1]:51820") or a DNS name. A bare IPv6 literal is
 * refused (a trailing ":51820" would silently become part of the address).
 * default_port is used when no port is given; 0 makes the port required.
 * Returns 0, or -EINVAL with a message in err (may be NULL). */
int qr_endpoint_parse(struct qr_endpoint *out, const char *text, uint16_t default_port, char *err,
		      size_t errcap);

/* Writes "HOST:PORT", IPv6 in brackets. Returns the length, or -ENOSPC. */
int qr_endpoint_format(const struct qr_endpoint *ep, char *buf, size_t cap);

/* One address of one interface, as detection sees it. */
struct qr_endpoint_iface {
	char name[IF_NAMESIZE];
	unsigned flags; /* IFF_UP, IFF_RUNNING, IFF_LOOPBACK, ... */
	int family;     /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr;
	/* The interface holds the default route of this address's family. */
	bool default_route;
};

/* Why a candidate sits where it does; lower is better. */
enum qr_endpoint_tier {
	QR_ENDPOINT_DEFAULT_V4 = 0, /* IPv4 on the default-route interface */
	QR_ENDPOINT_DEFAULT_V6,     /* global IPv6 on the default-route interface */
	QR_ENDPOINT_PRIVATE_V4,     /* RFC 1918 / CGNAT IPv4 elsewhere */
	QR_ENDPOINT_PUBLIC_V4,      /* other IPv4 */
	QR_ENDPOINT_GLOBAL_V6,      /* global unicast IPv6 (2000::/3) */
	QR_ENDPOINT_ULA_V6,         /* unique local IPv6 (fc00::/7) */
	QR_ENDPOINT_VIRTUAL,        /* container bridge, veth or VPN interface */
};

struct qr_endpoint_candidate {
	struct qr_endpoint ep;
	char text[QR_ENDPOINT_TEXT_MAX]; /* "HOST:PORT" */
	char ifname[IF_NAMESIZE];
	enum qr_endpoint_tier tier;
};

/* Ranks the addresses a LAN client could reach, best first. Skipped:
 * interfaces that are down, not running or loopback; unspecified, loopback,
 * multicast, link-local (169.254/16, fe80::/10) and IPv4-mapped addresses.
 * Container bridges and VPN interfaces (docker*, br-*, veth*, virbr*,
 * tun*, wg*, tailscale*, ...) are kept but ranked last: a phone on the LAN
 * normally cannot reach them, yet one may be the right answer (a phone on
 * the same tailnet). Ties keep input order. Writes at most cap candidates
 * and returns how many were written. */
size_t qr_endpoint_rank(const struct qr_endpoint_iface *ifaces, size_t n, uint16_t port,
			struct qr_endpoint_candidate *out, size_t cap);

/* The interfaces that hold a default route, from the text of
 * /proc/net/route (IPv4) or /proc/net/ipv6_route (IPv6). Writes at most cap
 * names; returns how many. "lo" (the kernel's unreachable IPv6 default) is
 * never reported. */
size_t qr_endpoint_default_ifaces4(const char *proc_route, char (*names)[IF_NAMESIZE], size_t cap);
size_t qr_endpoint_default_ifaces6(const char *proc_ipv6_route, char (*names)[IF_NAMESIZE],
				   size_t cap);

/* Detects this host's candidates: getifaddrs() plus the default routes,
 * ranked by qr_endpoint_rank(). Returns the number written (0 when the host
 * has no usable address), or -errno when the interfaces cannot be listed.
 * out[0] is the best guess. */
int qr_endpoint_detect(uint16_t port, struct qr_endpoint_candidate *out, size_t cap);

#endif
