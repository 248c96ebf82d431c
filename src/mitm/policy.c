/* Destination policy: a pure function of the address. */
#include "mitm/policy.h"

#include <errno.h>
#include <string.h>

#include <arpa/inet.h>

void policy_init(struct policy *p, const struct addrpool *pool)
{
	memset(p, 0, sizeof(*p));
	p->pool = *pool;
	addrpool_server(pool, &p->addr4, &p->addr6);
	p->local_tcp[p->nlocal_tcp++] = POLICY_DNS_PORT;
	p->local_udp[p->nlocal_udp++] = POLICY_DNS_PORT;
}

static bool port_in(const uint16_t *ports, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (ports[i] == port)
			return true;
	return false;
}

static int port_add(uint16_t *ports, size_t *n, uint16_t port)
{
	if (port == 0)
		return -EINVAL;
	if (port_in(ports, *n, port))
		return 0;
	if (*n >= POLICY_MAX_PORTS)
		return -ENOSPC;
	ports[(*n)++] = port;
	return 0;
}

int policy_add_host_port(struct policy *p, uint16_t port)
{
	return port_add(p->host_ports, &p->nhost_ports, port);
}

void policy_clear_host_ports(struct policy *p)
{
	p->nhost_ports = 0;
}

int policy_add_local_port(struct policy *p, int proto, uint16_t port)
{
	if (proto == IPPROTO_TCP)
		return port_add(p->local_tcp, &p->nlocal_tcp, port);
	if (proto == IPPROTO_UDP)
		return port_add(p->local_udp, &p->nlocal_udp, port);
	return -EINVAL;
}

/* Our own address: only what we serve there. Local services win over a
 * host port of the same number (our DNS stays ours). */
static enum policy_verdict own_address(const struct policy *p, int proto, uint16_t port)
{
	if (proto == IPPROTO_TCP && port_in(p->local_tcp, p->nlocal_tcp, port))
		return POLICY_LOCAL_SERVICE;
	if (proto == IPPROTO_UDP && port_in(p->local_udp, p->nlocal_udp, port))
		return POLICY_LOCAL_SERVICE;
	if (port_in(p->host_ports, p->nhost_ports, port))
		return POLICY_HOST_PORT;
	return POLICY_REFUSE_OWN_ADDRESS;
}

static enum policy_verdict check4(const struct policy *p, int proto, struct sockaddr_in *sin)
{
	uint32_t a = ntohl(sin->sin_addr.s_addr);
	if (p->addr4.s_addr != INADDR_ANY && sin->sin_addr.s_addr == p->addr4.s_addr) {
		enum policy_verdict v = own_address(p, proto, ntohs(sin->sin_port));
		if (v == POLICY_HOST_PORT)
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return v;
	}
	if ((a >> 24) == 0)
		return POLICY_REFUSE_UNSPECIFIED;
	if ((a >> 24) == 127)
		return p->allow_loopback ? POLICY_ALLOW : POLICY_REFUSE_LOOPBACK;
	if ((a >> 16) == 0xa9fe)
		return POLICY_REFUSE_LINK_LOCAL;
	if ((a >> 28) == 0xe)
		return POLICY_REFUSE_MULTICAST;
	if (a == 0xffffffffu)
		return POLICY_REFUSE_BROADCAST;
	if (p->pool.prefix4 && addrpool_contains4(&p->pool, sin->sin_addr))
		return POLICY_REFUSE_PEER;
	return POLICY_ALLOW;
}

static enum policy_verdict check6(const struct policy *p, int proto, struct sockaddr_in6 *sin6)
{
	const struct in6_addr *a = &sin6->sin6_addr;
	if (!IN6_IS_ADDR_UNSPECIFIED(&p->addr6) && IN6_ARE_ADDR_EQUAL(a, &p->addr6)) {
		enum policy_verdict v = own_address(p, proto, ntohs(sin6->sin6_port));
		if (v == POLICY_HOST_PORT) {
			sin6->sin6_addr = in6addr_loopback;
			sin6->sin6_scope_id = 0;
		}
		return v;
	}
	if (IN6_IS_ADDR_UNSPECIFIED(a))
		return POLICY_REFUSE_UNSPECIFIED;
	if (IN6_IS_ADDR_LOOPBACK(a))
		return p->allow_loopback ? POLICY_ALLOW : POLICY_REFUSE_LOOPBACK;
	if (IN6_IS_ADDR_LINKLOCAL(a))
		return POLICY_REFUSE_LINK_LOCAL;
	if (IN6_IS_ADDR_MULTICAST(a))
		return POLICY_REFUSE_MULTICAST;
	if (p->pool.prefix6 && addrpool_contains6(&p->pool, a))
		return POLICY_REFUSE_PEER;
	return POLICY_ALLOW;
}

enum policy_verdict policy_check(const struct policy *p, int proto, const struct sockaddr *dest,
				 struct sockaddr_storage *rewritten)
{
	struct sockaddr_storage tmp;
	struct sockaddr_storage *out = rewritten ? rewritten : &tmp;
	memset(out, 0, sizeof(*out));
	if (!dest)
		return POLICY_REFUSE_FAMILY;
	bool proto_ok = proto == IPPROTO_TCP || proto == IPPROTO_UDP;

	if (dest->sa_family == AF_INET) {
		memcpy(out, dest, sizeof(struct sockaddr_in));
		return proto_ok ? check4(p, proto, (struct sockaddr_in *)out)
				: POLICY_REFUSE_FAMILY;
	}
	if (dest->sa_family != AF_INET6)
		return POLICY_REFUSE_FAMILY;
	if (!proto_ok) {
		memcpy(out, dest, sizeof(struct sockaddr_in6));
		return POLICY_REFUSE_FAMILY;
	}

	const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)dest;
	if (IN6_IS_ADDR_V4MAPPED(&d6->sin6_addr)) {
		/* ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket: judge (and
		 * connect to) the IPv4 address. */
		struct sockaddr_in *sin = (struct sockaddr_in *)out;
		sin->sin_family = AF_INET;
		sin->sin_port = d6->sin6_port;
		memcpy(&sin->sin_addr, &d6->sin6_addr.s6_addr[12], 4);
		return check4(p, proto, sin);
	}
	memcpy(out, dest, sizeof(struct sockaddr_in6));
	return check6(p, proto, (struct sockaddr_in6 *)out);
}

const char *policy_verdict_name(enum policy_verdict v)
{
	static const char *const names[POLICY_VERDICT_COUNT] = {
		[POLICY_ALLOW] = "allow",
		[POLICY_LOCAL_SERVICE] = "local_service",
		[POLICY_HOST_PORT] = "host_port",
		[POLICY_REFUSE_LOOPBACK] = "loopback",
		[POLICY_REFUSE_UNSPECIFIED] = "unspecified",
		[POLICY_REFUSE_LINK_LOCAL] = "link_local",
		[POLICY_REFUSE_MULTICAST] = "multicast",
		[POLICY_REFUSE_BROADCAST] = "broadcast",
		[POLICY_REFUSE_PEER] = "peer",
		[POLICY_REFUSE_OWN_ADDRESS] = "own_address",
		[POLICY_REFUSE_FAMILY] = "family",
	};
	if ((unsigned)v >= POLICY_VERDICT_COUNT || !names[v])
		return "unknown";
	return names[v];
}
