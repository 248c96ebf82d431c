/* HOST[:PORT] parsing and endpoint auto-detection. */
#include "qr/endpoint.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define ROUTE_LINE_MAX 512
#define RTF_UP_FLAG 0x0001     /* RTF_UP from <linux/route.h> */
#define RTF_REJECT_FLAG 0x0200 /* RTF_REJECT: an unreachable route */

static void set_err(char *err, size_t errcap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errcap, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errcap == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errcap, fmt, ap);
	va_end(ap);
}

/* Decimal 1..65535, digits only (no sign, no spaces). */
static bool parse_port(const char *s, size_t len, uint16_t *port)
{
	unsigned long v = 0;

	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* RFC 1123 host name: dot-separated labels of letters, digits and hyphens,
 * 1..63 each, no hyphen at either end; the last label not all digits (that
 * would be a mistyped IPv4 address). One trailing dot is allowed. */
static bool valid_hostname(const char *s, size_t len)
{
	size_t label = 0;
	bool all_digits = true;

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0 || len > QR_ENDPOINT_HOST_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '.') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return false;
			if (i == len && all_digits)
				return false;
			label = 0;
			all_digits = true;
			continue;
		}
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && c != '-')
			return false;
		if (c == '-' && label == 0)
			return false;
		if (!isdigit(c))
			all_digits = false;
		label++;
	}
	return true;
}

int qr_endpoint_parse(struct qr_endpoint *out, const char *text, uint16_t default_port, char *err,
		      size_t errcap)
{
	struct qr_endpoint ep = { .family = AF_UNSPEC };
	const char *host, *port_s = NULL;
	size_t host_len, port_len = 0, len;

	if (text == NULL || text[0] == '\0') {
		set_err(err, errcap, "empty endpoint");
		return -EINVAL;
	}
	len = strlen(text);
	if (text[0] == '[') {
		const char *close = memchr(text, ']', len);
		if (close == NULL) {
			set_err(err, errcap, "'%s': missing ']' after the IPv6 address", text);
			return -EINVAL;
		}
		host = text + 1;
		host_len = (size_t)(close - host);
		if (close[1] == ':') {
			port_s = close + 2;
			port_len = strlen(port_s);
		} else if (close[1] != '\0') {
			set_err(err, errcap, "'%s': expected ':PORT' after ']'", text);
			return -EINVAL;
		}
		char buf[INET6_ADDRSTRLEN];
		struct in6_addr a6;
		if (host_len == 0 || host_len >= sizeof(buf)) {
			set_err(err, errcap, "'%s': bad IPv6 address", text);
			return -EINVAL;
		}
		memcpy(buf, host, host_len);
		buf[host_len] = '\0';
		if (inet_pton(AF_INET6, buf, &a6) != 1) {
			set_err(err, errcap, "'%s': bad IPv6 address '%s'", text, buf);
			return -EINVAL;
		}
		ep.family = AF_INET6;
		inet_ntop(AF_INET6, &a6, ep.host, sizeof(ep.host));
	} else {
		const char *colon = strchr(text, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			set_err(err, errcap,
				"'%s': write an IPv6 address in brackets, e.g. [%s]:51820", text,
				text);
			return -EINVAL;
		}
		host = text;
		host_len = colon != NULL ? (size_t)(colon - text) : len;
		if (colon != NULL) {
			port_s = colon + 1;
			port_len = strlen(port_s);
		}
		char buf[QR_ENDPOINT_HOST_MAX + 2];
		struct in_addr a4;
		if (host_len == 0 || host_len >= sizeof(buf)) {
			set_err(err, errcap, "'%s': %s host", text,
				host_len == 0 ? "missing" : "too long a");
			return -EINVAL;
		}
		memcpy(buf, host, host_len);
		buf[host_len] = '\0';
		if (inet_pton(AF_INET, buf, &a4) == 1) {
			ep.family = AF_INET;
			inet_ntop(AF_INET, &a4, ep.host, sizeof(ep.host));
		} else if (valid_hostname(buf, host_len)) {
			for (size_t i = 0; i < host_len && i < QR_ENDPOINT_HOST_MAX; i++)
				ep.host[i] = (char)tolower((unsigned char)buf[i]);
		} else {
			set_err(err, errcap,
				"'%s': '%s' is neither an IPv4 address nor a host name", text, buf);
			return -EINVAL;
		}
	}
	if (port_s != NULL) {
		if (!parse_port(port_s, port_len, &ep.port)) {
			set_err(err, errcap, "'%s': bad port '%s' (1..65535)", text, port_s);
			return -EINVAL;
		}
	} else if (default_port != 0) {
		ep.port = default_port;
	} else {
		set_err(err, errcap, "'%s': missing ':PORT'", text);
		return -EINVAL;
	}
	*out = ep;
	return 0;
}

int qr_endpoint_format(const struct qr_endpoint *ep, char *buf, size_t cap)
{
	int n;

	if (ep->family == AF_INET6)
		n = snprintf(buf, cap, "[%s]:%u", ep->host, (unsigned)ep->port);
	else
		n = snprintf(buf, cap, "%s:%u", ep->host, (unsigned)ep->port);
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}

/* Interfaces a phone on the LAN normally cannot reach, or reaches only
 * through another network: container bridges and their veth ends (Docker,
 * Podman, libvirt, LXC, Kubernetes CNIs) and VPN tunnels. */
static bool virtual_ifname(const char *name)
{
	static const char *const prefixes[] = {
		"docker", "br-",    "veth",  "virbr",     "vnet", "cni",     "flannel",
		"cali",   "podman", "lxcbr", "lxdbr",     "kube", "vboxnet", "vmnet",
		"tun",    "tap",    "wg",    "tailscale", "zt",   "utun",
	};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

/* The tier of one address, or -1 when a LAN client cannot use it at all. */
static int classify(const struct qr_endpoint_iface *ifc)
{
	if (!(ifc->flags & IFF_UP) || !(ifc->flags & IFF_RUNNING) || (ifc->flags & IFF_LOOPBACK))
		return -1;
	if (ifc->family == AF_INET) {
		uint32_t a = ntohl(ifc->addr.v4.s_addr);
		if ((a >> 24) == 0 || (a >> 24) == 127 || (a >> 16) == 0xa9fe || (a >> 28) >= 0xe)
			return -1; /* 0/8, 127/8, 169.254/16, multicast, reserved */
		if (virtual_ifname(ifc->name))
			return QR_ENDPOINT_VIRTUAL;
		if (ifc->default_route)
			return QR_ENDPOINT_DEFAULT_V4;
		if ((a >> 24) == 10 || (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8 ||
		    (a >> 22) == (0x64400000u >> 22))
			return QR_ENDPOINT_PRIVATE_V4; /* 10/8, 172.16/12, 192.168/16, 100.64/10 */
		return QR_ENDPOINT_PUBLIC_V4;
	}
	if (ifc->family == AF_INET6) {
		const struct in6_addr *a = &ifc->addr.v6;
		if (IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LOOPBACK(a) ||
		    IN6_IS_ADDR_MULTICAST(a) || IN6_IS_ADDR_LINKLOCAL(a) ||
		    IN6_IS_ADDR_SITELOCAL(a) || IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a))
			return -1;
		if (virtual_ifname(ifc->name))
			return QR_ENDPOINT_VIRTUAL;
		if (ifc->default_route)
			return QR_ENDPOINT_DEFAULT_V6;
		if ((a->s6_addr[0] & 0xfe) == 0xfc)
			return QR_ENDPOINT_ULA_V6;
		return QR_ENDPOINT_GLOBAL_V6;
	}
	return -1;
}

size_t qr_endpoint_rank(const struct qr_endpoint_iface *ifaces, size_t n, uint16_t port,
			struct qr_endpoint_candidate *out, size_t cap)
{
	size_t count = 0;

	/* One pass per tier keeps equal tiers in input order (a stable sort). */
	for (int tier = QR_ENDPOINT_DEFAULT_V4; tier <= QR_ENDPOINT_VIRTUAL; tier++) {
		for (size_t i = 0; i < n && count < cap; i++) {
			const struct qr_endpoint_iface *ifc = &ifaces[i];
			struct qr_endpoint_candidate c = { .tier = (enum qr_endpoint_tier)tier };
			bool dup = false;

			if (classify(ifc) != tier)
				continue;
			c.ep.family = ifc->family;
			c.ep.port = port;
			inet_ntop(ifc->family, &ifc->addr, c.ep.host, sizeof(c.ep.host));
			if (qr_endpoint_format(&c.ep, c.text, sizeof(c.text)) < 0)
				continue;
			snprintf(c.ifname, sizeof(c.ifname), "%s", ifc->name);
			for (size_t j = 0; j < count && !dup; j++)
				dup = strcmp(out[j].text, c.text) == 0;
			if (!dup)
				out[count++] = c;
		}
	}
	return count;
}

/* Copies one line (without its newline) into buf; returns the next line or NULL. */
static const char *next_line(const char *p, char *buf, size_t cap)
{
	const char *nl = strchr(p, '\n');
	size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);

	if (len >= cap)
		len = cap - 1;
	memcpy(buf, p, len);
	buf[len] = '\0';
	return nl != NULL ? nl + 1 : NULL;
}

/* "Iface Destination Gateway Flags RefCnt Use Metric Mask ...", hex fields. */
static bool route4_default(const char *line, char name[IF_NAMESIZE])
{
	char ifname[IF_NAMESIZE];
	unsigned dest, gw, flags, mask;

	if (sscanf(line, "%15s %x %x %x %*d %*d %*d %x", ifname, &dest, &gw, &flags, &mask) != 5)
		return false; /* also skips the header line */
	if (dest != 0 || mask != 0 || !(flags & RTF_UP_FLAG) || (flags & RTF_REJECT_FLAG))
		return false;
	memcpy(name, ifname, sizeof(ifname));
	return true;
}

/* "dest plen src splen nexthop metric refcnt use flags iface", hex fields. */
static bool route6_default(const char *line, char name[IF_NAMESIZE])
{
	char dest[33], src[33], hop[33], ifname[IF_NAMESIZE];
	unsigned plen, splen, metric, refcnt, use, flags;

	if (sscanf(line, "%32s %x %32s %x %32s %x %x %x %x %15s", dest, &plen, src, &splen, hop,
		   &metric, &refcnt, &use, &flags, ifname) != 10)
		return false;
	if (strspn(dest, "0") != 32 || plen != 0 || !(flags & RTF_UP_FLAG) ||
	    (flags & RTF_REJECT_FLAG) || strcmp(ifname, "lo") == 0)
		return false;
	memcpy(name, ifname, sizeof(ifname));
	return true;
}

static size_t add_name(char (*names)[IF_NAMESIZE], size_t count, size_t cap,
		       const char name[IF_NAMESIZE])
{
	for (size_t i = 0; i < count; i++)
		if (strcmp(names[i], name) == 0)
			return count;
	if (count < cap)
		memcpy(names[count++], name, IF_NAMESIZE);
	return count;
}

size_t qr_endpoint_default_ifaces4(const char *proc_route, char (*names)[IF_NAMESIZE], size_t cap)
{
	char line[ROUTE_LINE_MAX], name[IF_NAMESIZE];
	size_t count = 0;

	for (const char *p = proc_route; p != NULL && *p != '\0';) {
		p = next_line(p, line, sizeof(line));
		if (route4_default(line, name))
			count = add_name(names, count, cap, name);
	}
	return count;
}

size_t qr_endpoint_default_ifaces6(const char *proc_ipv6_route, char (*names)[IF_NAMESIZE],
				   size_t cap)
{
	char line[ROUTE_LINE_MAX], name[IF_NAMESIZE];
	size_t count = 0;

	for (const char *p = proc_ipv6_route; p != NULL && *p != '\0';) {
		p = next_line(p, line, sizeof(line));
		if (route6_default(line, name))
			count = add_name(names, count, cap, name);
	}
	return count;
}

#define DEFAULT_IFACES_MAX 16

/* Reads a routing table line by line: a router's table can be large, and
 * only the default routes matter. A missing file means no such routes. */
static size_t read_defaults(const char *path, bool (*is_default)(const char *, char *),
			    char (*names)[IF_NAMESIZE], size_t cap)
{
	char line[ROUTE_LINE_MAX], name[IF_NAMESIZE];
	size_t count = 0;
	FILE *f = fopen(path, "re");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (is_default(line, name))
			count = add_name(names, count, cap, name);
	fclose(f);
	return count;
}

static bool name_in(const char *name, char (*names)[IF_NAMESIZE], size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

int qr_endpoint_detect(uint16_t port, struct qr_endpoint_candidate *out, size_t cap)
{
	char def4[DEFAULT_IFACES_MAX][IF_NAMESIZE], def6[DEFAULT_IFACES_MAX][IF_NAMESIZE];
	struct ifaddrs *list, *ifa;
	struct qr_endpoint_iface *ifaces;
	size_t n4, n6, n = 0, total = 0;

	n4 = read_defaults("/proc/net/route", route4_default, def4, DEFAULT_IFACES_MAX);
	n6 = read_defaults("/proc/net/ipv6_route", route6_default, def6, DEFAULT_IFACES_MAX);
	if (getifaddrs(&list) != 0)
		return -errno;
	for (ifa = list; ifa != NULL; ifa = ifa->ifa_next)
		total++;
	ifaces = calloc(total > 0 ? total : 1, sizeof(*ifaces));
	if (ifaces == NULL) {
		freeifaddrs(list);
		return -ENOMEM;
	}
	for (ifa = list; ifa != NULL; ifa = ifa->ifa_next) {
		struct qr_endpoint_iface *ifc = &ifaces[n];
		if (ifa->ifa_addr == NULL || ifa->ifa_name == NULL)
			continue;
		if (ifa->ifa_addr->sa_family == AF_INET) {
			ifc->addr.v4 =
				((const struct sockaddr_in *)(const void *)ifa->ifa_addr)->sin_addr;
			ifc->default_route = name_in(ifa->ifa_name, def4, n4);
		} else if (ifa->ifa_addr->sa_family == AF_INET6) {
			ifc->addr.v6 = ((const struct sockaddr_in6 *)(const void *)ifa->ifa_addr)
					       ->sin6_addr;
			ifc->default_route = name_in(ifa->ifa_name, def6, n6);
		} else {
			continue;
		}
		ifc->family = ifa->ifa_addr->sa_family;
		ifc->flags = ifa->ifa_flags;
		snprintf(ifc->name, sizeof(ifc->name), "%s", ifa->ifa_name);
		n++;
	}
	freeifaddrs(list);
	size_t count = qr_endpoint_rank(ifaces, n, port, out, cap);
	free(ifaces);
	return (int)count;
}
