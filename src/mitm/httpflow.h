/* One recorded HTTP exchange (HTTP/1.x or HTTP/2), shared by the HTTP/1 and
 * HTTP/2 observers, and its JSON record (type "http", docs/flows.md).
 *
 * The observers only watch the plaintext bytes going each way; they never
 * hold data back. What they keep is bounded: headers up to
 * HTTPFLOW_MAX_HEADER_BYTES per message, bodies up to the body cap (the full
 * size is still counted and the record says it was truncated). */
#ifndef WGMITM_MITM_HTTPFLOW_H
#define WGMITM_MITM_HTTPFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#define HTTPFLOW_DEFAULT_BODY_CAP (1u << 20)
#define HTTPFLOW_MAX_HEADER_BYTES (256u * 1024) /* names + values of one message */
/* Body bytes kept at once by all exchanges of the process (allocations). */
#define HTTPFLOW_DEFAULT_BUDGET ((size_t)256 << 20)

struct http_header {
	char *name, *value; /* NUL-terminated copies (may hold NUL bytes
	                                  inside for h2; lengths are authoritative) */
	size_t name_len, value_len;
};

/* Ordered header list, duplicates kept, as seen on the wire. */
struct http_headers {
	struct http_header *v;
	size_t n, cap;
	size_t bytes;   /* sum of name_len + value_len */
	bool truncated; /* headers beyond HTTPFLOW_MAX_HEADER_BYTES dropped */
};

/* Appends a copy. Returns 0, or -E2BIG (over the byte bound: not added,
 * `truncated` set) or -ENOMEM. */
int http_headers_add(struct http_headers *h, const char *name, size_t name_len, const char *value,
		     size_t value_len);
/* The first value of `name` (ASCII case-insensitive), or NULL. */
const struct http_header *http_headers_find(const struct http_headers *h, const char *name);
void http_headers_free(struct http_headers *h);
/* Removes every header called `name` (any case). */
void http_headers_remove(struct http_headers *h, const char *name);
/* [[name, value], ...] as the records write them (bytes that are not
 * UTF-8 escaped); NULL when out of memory. */
json_t *http_headers_json(const struct http_headers *h);

/* A body as recorded: the first `cap` bytes, and how many there were. */
struct http_body {
	uint8_t *data;
	size_t len;     /* bytes kept, <= cap */
	size_t cap;     /* set by http_body_init; 0 keeps nothing */
	uint64_t size;  /* bytes seen (decoded from chunking, not
	                                  content-decoded) */
	bool truncated; /* size > len */
};

void http_body_init(struct http_body *b, size_t cap);
/* Counts n bytes and keeps what fits under the cap (grows geometrically;
 * on allocation failure keeps counting and marks truncated). */
void http_body_append(struct http_body *b, const uint8_t *p, size_t n);
void http_body_free(struct http_body *b);

/* The process-wide budget of kept body bytes (one loop thread): beyond it
 * bodies are counted but no longer kept, and marked truncated. */
void http_body_set_budget(size_t bytes);
/* Bytes kept now, and how often the budget cut a body short. */
void http_body_usage(size_t *kept, uint64_t *cuts);

struct http_message {
	struct http_headers headers;
	struct http_headers trailers;
	struct http_body body;
	bool complete; /* the message ended normally */
};

/* An exchange. Strings are owned (malloc'd, NUL-terminated) or NULL. */
struct http_exchange {
	char *version; /* "HTTP/1.1", "HTTP/1.0", "HTTP/2" */
	char *method;
	char *scheme;       /* "https" or "http" */
	char *authority;    /* Host header or :authority */
	char *path;         /* request target as sent ("/a?b", or
	                                  absolute-form / "*" / authority-form) */
	uint32_t stream_id; /* HTTP/2 stream, 0 for HTTP/1 */
	struct http_message req;
	int status;   /* 0: no response */
	char *reason; /* HTTP/1 reason phrase, NULL for h2 */
	struct http_message resp;
	int informational[4]; /* 1xx statuses seen before the final one */
	size_t n_informational;
	bool websocket; /* 101 with Upgrade: websocket followed */
	/* CLOCK_REALTIME; zero: not reached. */
	struct timespec start;          /* first byte of the request */
	struct timespec request_end;    /* last byte of the request seen */
	struct timespec response_start; /* first byte of the response head */
	struct timespec end;            /* last byte of the response, or the error */
	const char *error;              /* static string, NULL when none, e.g.
	                                  "client_reset", "upstream_reset",
	                                  "connection_closed", "parse_error:..." */
	char error_detail[96];          /* free text, "" when none */
};

/* Zeroes x and sets the body caps of both messages. */
void http_exchange_init(struct http_exchange *x, size_t body_cap);
void http_exchange_free(struct http_exchange *x);
/* Sets *dst to a NUL-terminated copy of [s, s+n). 0 or -ENOMEM. */
int http_strdup_n(char **dst, const char *s, size_t n);

/* Adds the "http" record keys (documented in docs/flows.md) to `record`,
 * which already holds the common flowlog keys. The absolute URL is built
 * from scheme, authority (or `default_authority`, e.g. "10.0.0.5:8080",
 * when the request had none) and path. 0 or -ENOMEM. */
int http_exchange_to_json(const struct http_exchange *x, const char *default_authority,
			  json_t *record);

/* A body as JSON: {"text": ...} when the kept bytes are UTF-8 (a sequence
 * cut by truncation at the end is dropped), else {"base64": ...}, plus
 * "size" and "truncated". Exposed for the WebSocket records. */
json_t *http_body_json(const uint8_t *data, size_t len, uint64_t size, bool truncated);

/* The time of one observer call: read at most once per call (the caller
 * clears `valid` when a call begins), from `read` or CLOCK_REALTIME. */
struct http_clock {
	void (*read)(struct timespec *now); /* NULL: CLOCK_REALTIME (tests pass a fake) */
	struct timespec now;
	bool valid;
};
const struct timespec *http_clock_now(struct http_clock *c);

/* Where an observer's finished exchanges go. The sink may keep nothing from
 * x after returning; the observer frees it. */
struct http_sink {
	void (*exchange)(void *ctx, const struct http_exchange *x);
	/* One batch of WebSocket messages (record type "websocket"): `batch` is a
	 * JSON object with the keys docs/flows.md lists for it, owned by the
	 * sink afterwards. */
	void (*websocket)(void *ctx, json_t *batch);
	void *ctx;
};

#endif
