/* The store's reading of a flow record: its fields (fields.h), header
 * texts and bodies taken straight from the line's bytes in one pass,
 * without building a JSON tree. The store's writer reads every line of
 * the log; parsing it with jansson and serialising it again without its
 * bodies cost more than SQLite's inserts.
 *
 * It accepts exactly the lines that json_loadb(JSON_ALLOW_NUL) followed by
 * flow_fields_read accept (syntax, UTF-8, escapes, surrogates, integer and
 * real ranges, depth 2048, NUL-free keys; a repeated key: the last one
 * counts), and reads the same values (fuzz_flows_recscan checks both).
 * One difference: jansson lets a raw NUL byte follow a number or a literal
 * (a quirk of its stream); that is not JSON, and is refused here. */
#ifndef WGMITM_FLOWS_RECSCAN_H
#define WGMITM_FLOWS_RECSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flows/fields.h"

/* A body object's content ("text", else "base64" decoded), moved out of
 * the record. */
struct rec_body {
	bool present;
	const uint8_t *data; /* present: len bytes (NULL when 0) */
	size_t len;
	const char *encoding; /* the part's first Content-Encoding; NULL: none */
};

struct rec_scan {
	struct flow_fields f; /* its json members are NULL */
	/* http: "name: value\n" per [name, value] pair of strings, in order
	 * (flow_headers_text's form); NULL when "headers" is not an array. */
	const char *headers[2];
	size_t headers_len[2];
	struct rec_body body[2]; /* 0 request, 1 response */
	/* The line without the bodies' content members (their "size" and
	 * "truncated" stay), or the line itself when no body moved. */
	const char *record;
	size_t record_len;

	/* Working memory, kept from line to line. */
	char *arena, *cut;
	size_t arena_cap, arena_used, cut_cap;
};

/* Reads `line` (n bytes, no newline needed; it must stay valid while the
 * results are used). 0; -1 when the line is not a record (not JSON, not
 * an object, no string "type" and "id"); -ENOMEM. Every pointer in `rs`
 * is valid until the next rec_scan or rec_scan_free. */
int rec_scan(struct rec_scan *rs, const char *line, size_t n);

/* Frees the working memory (rs stays usable; zero-initialised to begin). */
void rec_scan_free(struct rec_scan *rs);

#endif
