/* Tunnel address pools: the endpoint takes the first host address of each
 * pool, peers get the lowest free one. A peer's IPv6 address carries the
 * same host number as its IPv4 address, so the pair reads as one. */
#ifndef WGMITM_COMMON_ADDRPOOL_H
#define WGMITM_COMMON_ADDRPOOL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct addrpool {
	struct in_addr net4;
	uint8_t prefix4; /* 8..30 */
	struct in6_addr net6;
	uint8_t prefix6; /* 48..96 */
};

/* Parses "10.66.77.0/24" / "fd00::/64"; host bits must be zero. 0 or -EINVAL. */
int addrpool_parse4(const char *cidr, struct in_addr *net, uint8_t *prefix);
int addrpool_parse6(const char *cidr, struct in6_addr *net, uint8_t *prefix);

/* The endpoint's own addresses: host number 1 of each pool. */
void addrpool_server(const struct addrpool *pool, struct in_addr *a4, struct in6_addr *a6);

/* Host number 2.. of the lowest pair not in `used4` (IPv4 addresses in use).
 * Returns 0, or -ENOSPC when the IPv4 pool is full. */
int addrpool_allocate(const struct addrpool *pool, const struct in_addr *used4, size_t nused,
		      struct in_addr *a4, struct in6_addr *a6);

/* True when the address lies inside the pool. */
bool addrpool_contains4(const struct addrpool *pool, struct in_addr a);
bool addrpool_contains6(const struct addrpool *pool, const struct in6_addr *a);

#endif
