/* Content-Encoding decoding (RFC 9110 8.4) of recorded bodies: identity,
 * gzip, x-gzip, deflate (zlib-wrapped, or raw as some servers send it), br,
 * zstd, and lists of them ("gzip, br": applied in that order, so decoded
 * last to first). Names are case-insensitive; "identity" and empty list
 * members are skipped.
 *
 * The output is bounded by a cap, so a small hostile body (a zip bomb)
 * cannot take more memory than about that. Concatenated gzip members and
 * zstd frames decode as one body; bytes after the end of a gzip, deflate or
 * br stream are ignored. */
#ifndef WGMITM_FLOWS_DECODE_H
#define WGMITM_FLOWS_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The cap the filters and the store decode bodies with. */
#define DECODE_DEFAULT_CAP (16u << 20)

/* At most this many codings in one list (more: DECODE_UNKNOWN). */
#define DECODE_MAX_CODINGS 8

enum decode_status {
	DECODE_COMPLETE,  /* every coding ended cleanly */
	DECODE_TRUNCATED, /* the input ends inside a stream: out holds what decoded */
	DECODE_CAPPED,    /* the output passed the cap: out holds its first cap bytes */
	DECODE_ERROR,     /* invalid data: out holds what decoded before it */
	DECODE_UNKNOWN,   /* a coding not handled here (or too many): out is empty */
	DECODE_NOMEM,     /* out is empty */
};

/* Decodes `len` bytes coded as `encoding` (a Content-Encoding value; NULL
 * or empty: identity, the bytes copied) into *out (malloc'd, for free; NULL
 * when nothing decoded) and *outlen. An empty input decodes to an empty
 * output, complete, whatever the (known) codings. Of several problems in a
 * list the worst is told: NOMEM, then ERROR, CAPPED, TRUNCATED. */
enum decode_status decode_body(const char *encoding, const uint8_t *in, size_t len, size_t cap,
			       uint8_t **out, size_t *outlen);

/* Whether `encoding` leaves the bytes as they are (NULL, empty, only
 * "identity" members), so callers can skip the copy. */
bool decode_is_identity(const char *encoding);

/* "complete", "truncated", ... for messages. */
const char *decode_status_name(enum decode_status s);

#endif
