/* Where a tunnel client may connect. A pure classifier of destination
 * addresses: it decides from the address alone (whatever a crafted packet
 * says), never from a DNS name, and does no I/O.
 *
 * Defaults (DESIGN.md): loopback, unspecified, link-local and multicast or
 * broadcast destinations are refused; other tunnel clients (anything in the
 * pools but our own addresses) are refused, so peers cannot reach each
 * other; our own tunnel addresses serve only our local services (DNS on
 * :53 by default; `run` adds the CA page on TCP :80) and the host ports
 * opted into with --allow-host-port, which are rewritten to the host's
 * loopback. IPv4-mapped IPv6 destinations (::ffff:a.b.c.d) are classified
 * as their IPv4 address. */
#ifndef WGMITM_MITM_POLICY_H
#define WGMITM_MITM_POLICY_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/addrpool.h"

#define POLICY_MAX_PORTS 32
#define POLICY_DNS_PORT 53

enum policy_verdict {
	POLICY_ALLOW = 0,     /* relay to the destination (rewritten: v4-mapped unmapped) */
	POLICY_LOCAL_SERVICE, /* one of our own services on our tunnel address */
	POLICY_HOST_PORT, /* our tunnel address, an --allow-host-port port: rewritten to loopback */
	POLICY_REFUSE_LOOPBACK,    /* 127.0.0.0/8, ::1 */
	POLICY_REFUSE_UNSPECIFIED, /* 0.0.0.0/8, :: */
	POLICY_REFUSE_LINK_LOCAL,  /* 169.254.0.0/16 (cloud metadata), fe80::/10 */
	POLICY_REFUSE_MULTICAST,   /* 224.0.0.0/4, ff00::/8 */
	POLICY_REFUSE_BROADCAST,   /* 255.255.255.255 */
	POLICY_REFUSE_PEER,        /* another address inside the tunnel pools */
	POLICY_REFUSE_OWN_ADDRESS, /* our tunnel address, a port we do not serve */
	POLICY_REFUSE_FAMILY,      /* neither AF_INET nor AF_INET6, or not TCP/UDP */
	POLICY_VERDICT_COUNT
};

struct policy {
	struct in_addr addr4; /* the endpoint's tunnel addresses */
	struct in6_addr addr6;
	struct addrpool pool;                 /* the peers' pools (both families) */
	uint16_t local_tcp[POLICY_MAX_PORTS]; /* ports we serve on addr4/addr6 */
	size_t nlocal_tcp;
	uint16_t local_udp[POLICY_MAX_PORTS];
	size_t nlocal_udp;
	uint16_t host_ports[POLICY_MAX_PORTS]; /* --allow-host-port, TCP and UDP */
	size_t nhost_ports;
	/* Tests only: loopback destinations are ALLOWed (a local upstream
	 * server stands in for the internet). Never set by the CLI. */
	bool allow_loopback;
};

/* Our addresses from the pool (addrpool_server); DNS (:53, TCP and UDP) as
 * the only local service; no host ports. */
void policy_init(struct policy *p, const struct addrpool *pool);

/* --allow-host-port PORT. 0, -EINVAL (port 0) or -ENOSPC. Idempotent. */
int policy_add_host_port(struct policy *p, uint16_t port);
void policy_clear_host_ports(struct policy *p);

/* Another service of ours on the tunnel addresses (proto IPPROTO_TCP or
 * IPPROTO_UDP). 0, -EINVAL or -ENOSPC. Idempotent. */
int policy_add_local_port(struct policy *p, int proto, uint16_t port);

/* Classifies a flow of `proto` (IPPROTO_TCP / IPPROTO_UDP) to `dest`.
 * When `rewritten` is not NULL it receives the address to connect to
 * upstream for ALLOW (dest itself, or the plain IPv4 address of a
 * v4-mapped one) and HOST_PORT (127.0.0.1 or ::1, same port, same family
 * as the tunnel address dialled); for other verdicts it is a copy of dest
 * (unmapped). */
enum policy_verdict policy_check(const struct policy *p, int proto, const struct sockaddr *dest,
				 struct sockaddr_storage *rewritten);

/* "allow", "local_service", "host_port", "loopback", "unspecified",
 * "link_local", "multicast", "broadcast", "peer", "own_address", "family";
 * records write refusals as "policy:<name>". Never NULL. */
const char *policy_verdict_name(enum policy_verdict v);

/* True for the REFUSE_* verdicts. */
static inline bool policy_refused(enum policy_verdict v)
{
	return v >= POLICY_REFUSE_LOOPBACK;
}

#endif
