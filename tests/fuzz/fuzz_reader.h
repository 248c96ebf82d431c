/* The input framing the fuzz targets share: single bytes, fixed-size
 * fields and length-prefixed chunks read off the fuzzer's input. */
#ifndef WGMITM_FUZZ_READER_H
#define WGMITM_FUZZ_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct reader {
	const uint8_t *p;
	size_t left;
};

static inline bool get8(struct reader *r, uint8_t *out)
{
	if (r->left == 0)
		return false;
	*out = *r->p++;
	r->left--;
	return true;
}

/* Exactly `n` bytes, or false with nothing read. */
static inline bool get_bytes(struct reader *r, uint8_t *out, size_t n)
{
	if (r->left < n)
		return false;
	memcpy(out, r->p, n);
	r->p += n;
	r->left -= n;
	return true;
}

/* A length (1 byte, or 15 bits over 2 when bit 7 is set) and that many
 * bytes, fewer at the end of the input. */
static inline bool get_chunk(struct reader *r, const uint8_t **data, size_t *len)
{
	uint8_t b, b2;
	if (!get8(r, &b))
		return false;
	size_t n = b;
	if (b & 0x80) {
		if (!get8(r, &b2))
			return false;
		n = (size_t)(b & 0x7f) << 8 | b2;
	}
	if (n > r->left)
		n = r->left;
	*data = r->p;
	*len = n;
	r->p += n;
	r->left -= n;
	return true;
}

#endif
