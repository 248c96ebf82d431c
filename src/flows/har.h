/* HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) from flow
 * records (docs/flows.md): one entry per "http" record, WebSocket messages
 * of the "websocket" batches attached to their upgrade request's entry the
 * way Chrome DevTools exports them ("_webSocketMessages"). Other record
 * types are ignored.
 *
 * Records are converted as they are fed and each entry is kept as JSON
 * text, not as the record's tree. The entries stay in memory until
 * har_write, since they are sorted by start time: memory grows with the
 * size of the HAR (bodies are capped when recorded, 1 MiB by default).
 *
 * Mapping choices (docs/usage.md, "Export"):
 * - httpVersion as Chrome exports it: "HTTP/1.1", "HTTP/1.0", and
 *   "http/2.0" for HTTP/2.
 * - HTTP/2 pseudo-headers are not in headers (Chrome keeps the request's;
 *   tools that replay a HAR would send them as ordinary headers); method
 *   and url carry them.
 * - queryString and postData.params are split on '&' and '=' but left
 *   percent-encoded, as Chrome does.
 * - Response bodies are content-decoded (gzip, deflate) as the spec asks;
 *   other codings stay encoded, with a comment. Text that is not UTF-8 is
 *   base64 with content.encoding "base64". A binary request body is base64
 *   in postData.text with "_encoding": "base64" (HAR 1.2 has no encoding
 *   for postData).
 * - timings: blocked, dns, connect and ssl are -1 (the connection is not
 *   per exchange); send, wait and receive come from the record's timings,
 *   in ms rounded to the microsecond, and time is their sum.
 * - An exchange without a response gets status 0 and "_error", as Chrome
 *   writes failed requests.
 * - "_wgmitm" on each entry: record id, peer, client, tls, end_reason,
 *   error, truncated. */
#ifndef WGMITM_HAR_H
#define WGMITM_HAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* Response bodies are not decompressed past this (decompression bombs). */
#define HAR_MAX_DECODED (64u << 20)

struct har;

struct har_stats {
	size_t entries;      /* "http" records */
	size_t ws_messages;  /* WebSocket messages attached to an entry */
	size_t ws_unmatched; /* "websocket" batches with no upgrade entry */
	size_t ignored;      /* tcp, udp, dns, unknown types */
	size_t skipped;      /* "http" records with a null method or url */
};

/* A builder; `creator_version` (copied) goes to log.creator.version.
 * NULL on allocation failure. */
struct har *har_create(const char *creator_version);

/* Converts one flow record (borrowed). Returns 0, -ENOMEM, or -EINVAL with
 * a message in err when an "http" or "websocket" record lacks a key HAR
 * needs or has one of the wrong type. An "http" record whose method or url
 * is null (its request never parsed) is skipped and counted. */
int har_add_record(struct har *h, json_t *record, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Attaches the WebSocket messages to their upgrade's entry and sorts the
 * entries by start time (file order among equal times). 0 or -ENOMEM.
 * Call once, after the last har_add_record. */
int har_finish(struct har *h, struct har_stats *stats) __attribute__((warn_unused_result));

/* Writes the HAR ({"log": {...}}, 2-space indent) to `fp`, entry by entry.
 * 0, -ENOMEM or -EIO. */
int har_write(const struct har *h, FILE *fp) __attribute__((warn_unused_result));

void har_free(struct har *h);

/* Helpers, exposed for the tests. */

/* "2024-05-01T12:34:56.123456Z" (RFC 3339; "Z" or "+hh:mm" / "-hh:mm") to
 * microseconds since the epoch. false when it does not parse. */
bool har_parse_time(const char *text, int64_t *us);
/* Microseconds since the epoch as "2024-05-01T12:34:56.123Z". */
void har_format_time(int64_t us, char out[static 32]);

#endif
