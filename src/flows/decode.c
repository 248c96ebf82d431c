/* Content-Encoding decoding with zlib, brotli and zstd, bounded output. */
#include "flows/decode.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <brotli/decode.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

/* zstd's own default: a one-shot frame's window is its whole content, so
 * a lower bound would refuse large bodies; the window buffer only fills as
 * output comes, and the cap bounds that. */
#define ZSTD_WINDOW_LOG_MAX 27

enum coding { CODING_GZIP, CODING_DEFLATE, CODING_BR, CODING_ZSTD };

/* The decoded bytes of one stage. `limit` is the cap plus one, so that
 * holding `limit` bytes means "more than the cap", told apart from a
 * stream that ends exactly at it. */
struct outbuf {
	uint8_t *p;
	size_t len, size, limit;
};

/* Room for more output: false when at the limit (capped) or out of memory
 * (o->size < o->limit then). */
static bool grow(struct outbuf *o, size_t hint)
{
	if (o->size == o->limit)
		return false;
	size_t want = o->size ? o->size * 2 : hint;
	if (want < 4096)
		want = 4096;
	if (want > o->limit || want < o->size)
		want = o->limit;
	uint8_t *p = realloc(o->p, want);
	if (!p)
		return false;
	o->p = p;
	o->size = want;
	return true;
}

/* The status when grow fails. */
static enum decode_status full(const struct outbuf *o)
{
	return o->size == o->limit ? DECODE_CAPPED : DECODE_NOMEM;
}

static size_t hint_for(size_t len)
{
	return len > SIZE_MAX / 4 ? SIZE_MAX : len * 4;
}

/* gzip (members one after another) or zlib: wbits 15 + 32 detects which;
 * -15: raw deflate. */
static enum decode_status run_zlib(const uint8_t *in, size_t len, int wbits, struct outbuf *o)
{
	z_stream zs = { 0 };
	if (inflateInit2(&zs, wbits) != Z_OK)
		return DECODE_NOMEM;
	const uint8_t *end = in + len;
	zs.next_in = (Bytef *)in;
	enum decode_status st;
	for (;;) {
		size_t rest = (size_t)(end - zs.next_in);
		if (zs.avail_in == 0 && rest > 0)
			zs.avail_in = rest > UINT_MAX ? UINT_MAX : (uInt)rest;
		if (o->len == o->size && !grow(o, hint_for(len))) {
			st = full(o);
			break;
		}
		size_t room = o->size - o->len;
		zs.next_out = o->p + o->len;
		zs.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
		int rc = inflate(&zs, Z_NO_FLUSH);
		o->len = (size_t)(zs.next_out - o->p);
		if (rc == Z_STREAM_END) {
			rest = (size_t)(end - zs.next_in);
			if (wbits > 0 && rest >= 2 && zs.next_in[0] == 0x1f &&
			    zs.next_in[1] == 0x8b && inflateReset(&zs) == Z_OK) {
				zs.avail_in = 0;
				continue;
			}
			st = DECODE_COMPLETE;
			break;
		}
		if (rc == Z_OK)
			continue;
		if (rc == Z_BUF_ERROR && zs.next_in == end) {
			st = DECODE_TRUNCATED;
			break;
		}
		st = rc == Z_MEM_ERROR ? DECODE_NOMEM : DECODE_ERROR;
		break;
	}
	inflateEnd(&zs);
	return st;
}

static enum decode_status run_br(const uint8_t *in, size_t len, struct outbuf *o)
{
	BrotliDecoderState *s = BrotliDecoderCreateInstance(NULL, NULL, NULL);
	if (!s)
		return DECODE_NOMEM;
	size_t avail_in = len;
	const uint8_t *next_in = in;
	enum decode_status st;
	for (;;) {
		if (o->len == o->size && !grow(o, hint_for(len))) {
			st = full(o);
			break;
		}
		size_t avail_out = o->size - o->len;
		uint8_t *next_out = o->p + o->len;
		BrotliDecoderResult r = BrotliDecoderDecompressStream(s, &avail_in, &next_in,
								      &avail_out, &next_out, NULL);
		o->len = (size_t)(next_out - o->p);
		if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT)
			continue;
		st = r == BROTLI_DECODER_RESULT_SUCCESS            ? DECODE_COMPLETE
		     : r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT ? DECODE_TRUNCATED
								   : DECODE_ERROR;
		break;
	}
	BrotliDecoderDestroyInstance(s);
	return st;
}

static enum decode_status run_zstd(const uint8_t *in, size_t len, struct outbuf *o)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	if (!d)
		return DECODE_NOMEM;
	if (ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX))) {
		ZSTD_freeDCtx(d);
		return DECODE_ERROR;
	}
	ZSTD_inBuffer ib = { in, len, 0 };
	enum decode_status st;
	for (;;) {
		if (o->len == o->size && !grow(o, hint_for(len))) {
			st = full(o);
			break;
		}
		ZSTD_outBuffer ob = { o->p, o->size, o->len };
		size_t rc = ZSTD_decompressStream(d, &ob, &ib);
		o->len = ob.pos;
		if (ZSTD_isError(rc)) {
			st = ZSTD_getErrorCode(rc) == ZSTD_error_memory_allocation ? DECODE_NOMEM
										   : DECODE_ERROR;
			break;
		}
		if (ib.pos < ib.size || ob.pos == ob.size)
			continue;
		/* Input used up and room left: the decoder has said all it can. */
		st = rc == 0 ? DECODE_COMPLETE : DECODE_TRUNCATED;
		break;
	}
	ZSTD_freeDCtx(d);
	return st;
}

static enum decode_status run(enum coding c, const uint8_t *in, size_t len, struct outbuf *o)
{
	switch (c) {
	case CODING_GZIP:
		return run_zlib(in, len, 15 + 32, o);
	case CODING_DEFLATE: {
		/* Meant to be zlib-wrapped; some servers send it raw. */
		enum decode_status st = run_zlib(in, len, 15 + 32, o);
		if (st != DECODE_ERROR)
			return st;
		struct outbuf raw = { .limit = o->limit };
		enum decode_status rst = run_zlib(in, len, -15, &raw);
		if (rst == DECODE_ERROR && raw.len <= o->len) {
			free(raw.p);
			return st;
		}
		free(o->p);
		*o = raw;
		return rst;
	}
	case CODING_BR:
		return run_br(in, len, o);
	case CODING_ZSTD:
		return run_zstd(in, len, o);
	}
	return DECODE_ERROR;
}

/* The codings of a Content-Encoding list, in the order applied. -1: one
 * is unknown, or too many. */
static int parse_codings(const char *enc, enum coding *out, size_t *n)
{
	*n = 0;
	if (!enc)
		return 0;
	for (const char *p = enc;;) {
		size_t len = strcspn(p, ",");
		const char *a = p, *b = p + len;
		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
			b--;
		size_t tl = (size_t)(b - a);
		int c = -1;
		if (tl == 0 || (tl == 8 && strncasecmp(a, "identity", 8) == 0))
			c = -2;
		else if ((tl == 4 && strncasecmp(a, "gzip", 4) == 0) ||
			 (tl == 6 && strncasecmp(a, "x-gzip", 6) == 0))
			c = CODING_GZIP;
		else if (tl == 7 && strncasecmp(a, "deflate", 7) == 0)
			c = CODING_DEFLATE;
		else if (tl == 2 && strncasecmp(a, "br", 2) == 0)
			c = CODING_BR;
		else if (tl == 4 && strncasecmp(a, "zstd", 4) == 0)
			c = CODING_ZSTD;
		if (c == -1 || (c >= 0 && *n == DECODE_MAX_CODINGS))
			return -1;
		if (c >= 0)
			out[(*n)++] = (enum coding)c;
		if (!p[len])
			return 0;
		p += len + 1;
	}
}

bool decode_is_identity(const char *encoding)
{
	enum coding c[DECODE_MAX_CODINGS];
	size_t n;
	return parse_codings(encoding, c, &n) == 0 && n == 0;
}

static int rank(enum decode_status s)
{
	switch (s) {
	case DECODE_COMPLETE:
		return 0;
	case DECODE_TRUNCATED:
		return 1;
	case DECODE_CAPPED:
		return 2;
	case DECODE_ERROR:
		return 3;
	default:
		return 4;
	}
}

enum decode_status decode_body(const char *encoding, const uint8_t *in, size_t len, size_t cap,
			       uint8_t **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	enum coding c[DECODE_MAX_CODINGS];
	size_t n;
	if (parse_codings(encoding, c, &n) != 0)
		return DECODE_UNKNOWN;
	if (len == 0)
		return DECODE_COMPLETE;
	if (cap > SIZE_MAX / 2)
		cap = SIZE_MAX / 2;
	if (n == 0) {
		size_t keep = len > cap ? cap : len;
		if (keep && !(*out = malloc(keep)))
			return DECODE_NOMEM;
		if (keep)
			memcpy(*out, in, keep);
		*outlen = keep;
		return len > cap ? DECODE_CAPPED : DECODE_COMPLETE;
	}
	const uint8_t *cur = in;
	size_t curlen = len;
	uint8_t *owned = NULL;
	enum decode_status worst = DECODE_COMPLETE;
	for (size_t i = n; i-- > 0;) {
		struct outbuf o = { .limit = cap + 1 };
		enum decode_status st = curlen ? run(c[i], cur, curlen, &o) : DECODE_COMPLETE;
		if (o.len > cap) {
			o.len = cap;
			st = DECODE_CAPPED;
		}
		free(owned);
		owned = o.p;
		cur = o.p;
		curlen = o.len;
		if (st == DECODE_NOMEM) {
			free(owned);
			return DECODE_NOMEM;
		}
		if (rank(st) > rank(worst))
			worst = st;
	}
	if (curlen == 0) {
		free(owned);
		owned = NULL;
	}
	*out = owned;
	*outlen = curlen;
	return worst;
}

const char *decode_status_name(enum decode_status s)
{
	switch (s) {
	case DECODE_COMPLETE:
		return "complete";
	case DECODE_TRUNCATED:
		return "truncated";
	case DECODE_CAPPED:
		return "capped";
	case DECODE_ERROR:
		return "invalid data";
	case DECODE_UNKNOWN:
		return "unknown encoding";
	case DECODE_NOMEM:
		return "out of memory";
	}
	return "?";
}
