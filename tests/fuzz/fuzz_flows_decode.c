/* libFuzzer target for Content-Encoding decoding (flows/decode.h).
 *
 * Input: byte 0 picks the encoding (bits 0-3, a list below) and the cap
 * (bits 4-5: 1 MiB, 4 KiB, 1 byte, 0); the rest is the body.
 *
 * Invariants beyond "no crash / no sanitizer report": the output never
 * passes the cap, is NULL exactly when empty, and is empty for an unknown
 * coding; identity copies the body; for one coding other than deflate
 * (whose raw fallback depends on where the zlib attempt fails), a smaller
 * cap gives a prefix of the output, capped. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flows/decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const encodings[16] = {
	NULL,       "gzip",          "deflate",         "br",
	"zstd",     "x-gzip",        "identity",        "gzip, br",
	"br, zstd", "zstd, gzip",    "deflate, br",     "br, br",
	"compress", "gzip,,deflate", " Zstd ,identity", "gzip, gzip, gzip",
};

static const size_t caps[4] = { 1u << 20, 4096, 1, 0 };

static bool single(const char *enc)
{
	return enc && (strcmp(enc, "gzip") == 0 || strcmp(enc, "x-gzip") == 0 ||
		       strcmp(enc, "br") == 0 || strcmp(enc, "zstd") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *enc = encodings[data[0] & 15];
	size_t cap = caps[(data[0] >> 4) & 3];
	const uint8_t *body = data + 1;
	size_t len = size - 1;

	uint8_t *out;
	size_t outlen;
	enum decode_status st = decode_body(enc, body, len, cap, &out, &outlen);
	if (outlen > cap || (out == NULL) != (outlen == 0))
		abort();
	if (st == DECODE_UNKNOWN && outlen)
		abort();
	if (decode_is_identity(enc)) {
		size_t want = len > cap ? cap : len;
		if (outlen != want || (want && memcmp(out, body, want) != 0) ||
		    st != (len > cap ? DECODE_CAPPED : DECODE_COMPLETE))
			abort();
	}
	if (single(enc) && outlen > 1) {
		uint8_t *half;
		size_t halflen;
		enum decode_status hst = decode_body(enc, body, len, outlen / 2, &half, &halflen);
		if (hst != DECODE_CAPPED || halflen != outlen / 2 ||
		    memcmp(half, out, halflen) != 0)
			abort();
		free(half);
	}
	free(out);
	return 0;
}
