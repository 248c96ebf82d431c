/* Byte order and RFC 1071 checksum helpers for unit tests that build and
 * parse IP packets by hand, independently of lwIP. Header-only. */
#ifndef WGMITM_TESTS_INET_TESTUTIL_H
#define WGMITM_TESTS_INET_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t sum16(uint32_t acc, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		acc += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		acc += (uint32_t)p[len - 1] << 8;
	return acc;
}

/* Folds the sum and complements it: the checksum to write. */
static inline uint16_t fold(uint32_t acc)
{
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)~acc;
}

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) << 16 | get16(p + 2);
}

/* The IPv4 (20 bytes) or IPv6 (40 bytes) header of a packet carrying
 * `ulen` bytes of `proto` from src to dst (4 or 16 bytes each), TTL 64;
 * returns its length. */
static inline size_t inet_ip_header(uint8_t *pkt, bool v6, const uint8_t *src, const uint8_t *dst,
				    uint8_t proto, size_t ulen)
{
	if (v6) {
		memset(pkt, 0, 40);
		pkt[0] = 0x60;
		put16(pkt + 4, (uint16_t)ulen);
		pkt[6] = proto;
		pkt[7] = 64;
		memcpy(pkt + 8, src, 16);
		memcpy(pkt + 24, dst, 16);
		return 40;
	}
	memset(pkt, 0, 20);
	pkt[0] = 0x45;
	put16(pkt + 2, (uint16_t)(20 + ulen));
	pkt[8] = 64;
	pkt[9] = proto;
	memcpy(pkt + 12, src, 4);
	memcpy(pkt + 16, dst, 4);
	put16(pkt + 10, fold(sum16(0, pkt, 20)));
	return 20;
}

/* The checksum of `ulen` bytes of `proto` at seg (whose own checksum field
 * is zero) with the pseudo-header of src and dst. */
static inline uint16_t inet_checksum(bool v6, const uint8_t *src, const uint8_t *dst, uint8_t proto,
				     const uint8_t *seg, size_t ulen)
{
	size_t alen = v6 ? 16 : 4;
	uint8_t ph[4] = { 0, proto, (uint8_t)(ulen >> 8), (uint8_t)ulen };
	return fold(sum16(sum16(sum16(sum16(0, src, alen), dst, alen), ph, 4), seg, ulen));
}

#endif
