/* The fields of a flow record (one flows.jsonl object, docs/flows.md) that
 * lists, filters and the store's columns use, read in this one place so
 * that the store's SQL and the live matcher see the same values.
 *
 * Strings point into the record (or into the struct, for `host`): valid
 * while both live. Absent keys read as NULL, 0 or false; a record of an
 * unknown type still reads (type as written), so old or newer files load. */
#ifndef WGMITM_FLOWS_FIELDS_H
#define WGMITM_FLOWS_FIELDS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#define FLOW_HOST_LEN 256

struct flow_fields {
	const char *type; /* "tcp", "udp", "dns", "http", "websocket", ... */
	const char *id;
	const char *peer;            /* NULL: none */
	const char *client, *server; /* "ip:port" or "[ip6]:port" */
	const char *conn;            /* http, websocket: the id of its tcp record */
	int64_t start_us, end_us;    /* µs since the epoch; 0: absent or unreadable */
	/* http, websocket: the URL's host; tcp: the SNI, else the server's
	 * address; dns: the query name (no final dot); udp: the server's
	 * address. Lowercase. Empty when none. */
	char host[FLOW_HOST_LEN];
	const char *method;                 /* http */
	const char *url;                    /* http, websocket */
	int status;                         /* http: the final response status; 0: none */
	const char *req_ctype, *resp_ctype; /* http: first Content-Type of each */
	int64_t bytes_up, bytes_down;
	/* tcp: "tls", "tls-passthrough", "http", "raw"; http: its http_version;
	 * dns: "udp" or "tcp" (the transport). */
	const char *proto;
	bool passthrough;  /* tcp relayed without interception (proto tls-passthrough) */
	bool tls_rejected; /* the client refused our certificate (tls:client_rejected) */
	bool websocket;    /* a websocket record, or an http exchange that upgraded */
	bool has_response; /* http: a response came */
	const char *end_reason;
	/* The record's error, else its tls_error, else NULL. */
	const char *error;
	/* http: [[name, value], ...] as recorded; NULL when absent. */
	const json_t *req_headers, *resp_headers;
	/* http: BODY objects ({"text"} or {"base64"}, "size", "truncated"). */
	const json_t *req_body, *resp_body;
	/* The way in ("wireguard" when the record names none), the user it
	 * authenticated (NULL: none), and the flow a replay resent (NULL). */
	const char *via, *user, *replay_of;
};

/* Reads `record`. -1 when it is not an object or has no string "type"
 * and "id"; `out` is then zeroed. */
int flow_fields_read(const json_t *record, struct flow_fields *out);

/* The record's own values that the fields derive from, as a reader takes
 * them: the top-level string members (NULL when absent or not a string),
 * integers (0 when absent or not an integer), and from "response" (when
 * it is an object) its integer "status". Both readers, flow_fields_read
 * over a parsed record and rec_scan (recscan.h) over a line's bytes, fill
 * this and call flow_fields_derive, so they agree. */
struct flow_raw {
	const char *type, *id, *peer, *client, *server, *conn, *start, *end;
	const char *end_reason, *error, *tls_error, *url, *method, *http_version;
	const char *proto, *sni, *name, *transport, *via, *user, *replay_of;
	int64_t bytes_up, bytes_down, status;
	bool has_response; /* "response" is an object */
	bool websocket;    /* "websocket" is true */
	bool passthrough;  /* "passthrough" is a string */
	const char *req_ctype, *resp_ctype;
};

/* Fills `out` (its json members left NULL) from `raw`; -1, with `out`
 * zeroed, when raw has no type or id. */
int flow_fields_derive(const struct flow_raw *raw, struct flow_fields *out);

/* The outline of a flow that lists and live events show: id, type, start,
 * duration_ms, peer, method, status, host, url, bytes_up, bytes_down,
 * size, proto, passthrough, tls_rejected, websocket, end_reason, error,
 * via, user, replay_of
 * (absent values as null). A new reference. */
json_t *flow_summary_json(const struct flow_fields *f);

/* An RFC 3339 UTC time with microseconds of `us` since the epoch; null
 * for 0. */
json_t *flow_time_json(int64_t us);

/* Microseconds since the epoch of an RFC 3339 UTC time as flowlog writes
 * it ("2026-01-02T03:04:05.123456Z", fraction optional); 0 when unreadable. */
int64_t flow_time_us(const char *rfc3339);

/* The bytes of a BODY object: text as is, base64 decoded into a new buffer
 * (*owned set, for free). NULL, with *len 0, when it holds none. */
const uint8_t *flow_body_bytes(const json_t *body, size_t *len, uint8_t **owned);

/* The value of the first header `name` (case-insensitive) in a headers
 * array; NULL when none. */
const char *flow_header(const json_t *headers, const char *name);

/* A headers array as the store's req_headers / resp_headers text and the
 * header filters see it: "name: value\n" per [name, value] pair of strings,
 * in order (other entries skipped). *text is malloc'd (for free) and NUL
 * terminated; NULL, with *len 0, when `headers` is not an array. 0, or
 * -ENOMEM. */
int flow_headers_text(const json_t *headers, char **text, size_t *len);

#endif
