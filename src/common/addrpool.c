#include "common/addrpool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int split_cidr(const char *cidr, char *addr, size_t addrlen, long *prefix, long max)
{
	const char *slash = strchr(cidr, '/');
	if (!slash || (size_t)(slash - cidr) >= addrlen)
		return -EINVAL;
	memcpy(addr, cidr, (size_t)(slash - cidr));
	addr[slash - cidr] = '\0';
	char *end;
	errno = 0;
	*prefix = strtol(slash + 1, &end, 10);
	if (errno || end == slash + 1 || *end != '\0' || *prefix < 0 || *prefix > max)
		return -EINVAL;
	return 0;
}

int addrpool_parse4(const char *cidr, struct in_addr *net, uint8_t *prefix)
{
	char addr[INET_ADDRSTRLEN];
	long p;
	if (split_cidr(cidr, addr, sizeof(addr), &p, 32) < 0 || inet_pton(AF_INET, addr, net) != 1)
		return -EINVAL;
	/* Need room for the endpoint, one peer, network and broadcast. */
	if (p < 8 || p > 30)
		return -EINVAL;
	uint32_t host_mask = p == 32 ? 0 : (0xffffffffu >> p);
	if (ntohl(net->s_addr) & host_mask)
		return -EINVAL;
	*prefix = (uint8_t)p;
	return 0;
}

int addrpool_parse6(const char *cidr, struct in6_addr *net, uint8_t *prefix)
{
	char addr[INET6_ADDRSTRLEN];
	long p;
	if (split_cidr(cidr, addr, sizeof(addr), &p, 128) < 0 ||
	    inet_pton(AF_INET6, addr, net) != 1)
		return -EINVAL;
	/* Host numbers are 32 bits wide and sit in the last four bytes. */
	if (p < 48 || p > 96)
		return -EINVAL;
	for (long bit = p; bit < 128; bit++)
		if (net->s6_addr[bit / 8] & (0x80 >> (bit % 8)))
			return -EINVAL;
	*prefix = (uint8_t)p;
	return 0;
}

static struct in_addr host4(const struct addrpool *pool, uint32_t n)
{
	struct in_addr a = { .s_addr = htonl(ntohl(pool->net4.s_addr) + n) };
	return a;
}

static struct in6_addr host6(const struct addrpool *pool, uint32_t n)
{
	struct in6_addr a = pool->net6;
	for (int i = 15; i >= 12; i--, n >>= 8)
		a.s6_addr[i] |= (uint8_t)(n & 0xff);
	return a;
}

void addrpool_server(const struct addrpool *pool, struct in_addr *a4, struct in6_addr *a6)
{
	*a4 = host4(pool, 1);
	*a6 = host6(pool, 1);
}

int addrpool_allocate(const struct addrpool *pool, const struct in_addr *used4, size_t nused,
		      struct in_addr *a4, struct in6_addr *a6)
{
	uint32_t hosts = (0xffffffffu >> pool->prefix4) - 1; /* without the broadcast */
	for (uint32_t n = 2; n <= hosts; n++) {
		struct in_addr cand = host4(pool, n);
		bool taken = false;
		for (size_t i = 0; i < nused && !taken; i++)
			taken = used4[i].s_addr == cand.s_addr;
		if (!taken) {
			*a4 = cand;
			*a6 = host6(pool, n);
			return 0;
		}
	}
	return -ENOSPC;
}

bool addrpool_contains4(const struct addrpool *pool, struct in_addr a)
{
	uint32_t mask = pool->prefix4 ? 0xffffffffu << (32 - pool->prefix4) : 0;
	return (ntohl(a.s_addr) & mask) == ntohl(pool->net4.s_addr);
}

bool addrpool_contains6(const struct addrpool *pool, const struct in6_addr *a)
{
	for (int bit = 0; bit < pool->prefix6; bit++) {
		uint8_t m = 0x80 >> (bit % 8);
		if ((a->s6_addr[bit / 8] & m) != (pool->net6.s6_addr[bit / 8] & m))
			return false;
	}
	return true;
}
