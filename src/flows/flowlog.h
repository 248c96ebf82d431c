/* Connection records: one JSON object per line (JSONL), appended to
 * HOME/flows.jsonl, one per finished TCP or UDP flow and per DNS query.
 *
 * Each line (or batch of whole lines, see flowlog_set_batching) is written
 * with a single write(2) on an O_APPEND descriptor, so lines never
 * interleave and a crash (kill -9) leaves at most the last line partial;
 * flowlog_read skips such a line, and flowlog_open repairs it before
 * appending.
 *
 * Common keys, in this order:
 *   "type"          "tcp", "udp", "dns" (later "http", ...)
 *   "id"            "<run>-<n>": 8 random hex digits per process, then a
 *                   counter from 1, so ids are unique across restarts
 *   "peer"          peer name (null when unknown)
 *   "client"        "ip:port" or "[ip6]:port"
 *   "server"        the original destination, same format
 *   "start", "end"  RFC 3339 UTC with microseconds, "2024-05-01T12:34:56.123456Z"
 *   "bytes_up", "bytes_down"       payload bytes client→server, server→client
 *   "packets_up", "packets_down"   datagrams (UDP, DNS), omitted for TCP
 *   "end_reason"    "fin", "client_reset", "upstream_reset", "upstream_refused",
 *                   "upstream_unreachable", "timeout", "policy:<verdict>",
 *                   "shutdown", "error"
 *   "error"         a message, only when there was one
 *   "via", "command"  wgmitm wrap's records only (added last by its decorator)
 * Record types add their own keys after these. */
#ifndef WGMITM_MITM_FLOWLOG_H
#define WGMITM_MITM_FLOWLOG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>

#define FLOWLOG_FILE "flows.jsonl"
#define FLOWLOG_ID_LEN 32   /* "89abcdef-18446744073709551615" + NUL fits */
#define FLOWLOG_ADDR_LEN 64 /* "[ffff:...:255.255.255.255%scope]:65535" fits */
#define FLOWLOG_TIME_LEN 32 /* "2024-05-01T12:34:56.123456Z" + NUL */
#define FLOWLOG_PEER_LEN 64
/* Longer records are refused (-EMSGSIZE). Room for two bodies at the
 * largest --body-cap (16 MiB each, base64) plus their headers. */
#define FLOWLOG_MAX_LINE (64u << 20)

struct flowlog;

/* Opens (O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC, mode 0600) the file at
 * `path`. A partial last line left by a crash is cut off (or, when it is a
 * whole JSON value missing only its newline, completed) so appended lines
 * start on a line of their own; `repaired` (may be NULL) receives the
 * number of bytes cut or added. Returns 0 and *out, or -errno. */
int flowlog_open(struct flowlog **out, const char *path, size_t *repaired)
	__attribute__((warn_unused_result));

/* Closes the file and frees the log. NULL is a no-op. */
void flowlog_close(struct flowlog *log);

/* A fresh record id ("<run>-<n>"), unique across processes and restarts.
 * `log` may be NULL (the counter and run prefix are per process). */
void flowlog_new_id(struct flowlog *log, char id[static FLOWLOG_ID_LEN]);

/* Appends `record` (a JSON object; borrowed, the caller keeps its
 * reference) as one compact line, keys in insertion order, with one
 * write(2). Returns 0, -EINVAL (not an object), -ENOMEM, -EMSGSIZE (over
 * FLOWLOG_MAX_LINE) or -errno of the write (a short write is -EIO).
 * Counts failures (flowlog_errors). */
int flowlog_write(struct flowlog *log, json_t *record);

/* Batching (for an event loop): flowlog_write only queues the line, and
 * the caller calls flowlog_flush once per loop iteration, so a busy loop
 * writes its records with one write(2) instead of one each. The queue is
 * also written when it reaches 256 KiB and at flowlog_close. A crash loses
 * at most the lines of the current iteration; the file stays valid JSONL.
 * Turning batching off flushes. */
void flowlog_set_batching(struct flowlog *log, bool on);
/* Writes the queued lines. 0 or -errno (the queued lines are then lost and
 * counted as errors). NULL or nothing queued: 0. */
int flowlog_flush(struct flowlog *log);

/* The capture scope: a record the gate refuses is not written (counted in
 * flowlog_skipped) and not observed. NULL: everything is written. */
/* Called with every record before the gate: may add keys to it. */
typedef void (*flowlog_decorate_fn)(void *ctx, json_t *record);
void flowlog_set_decorator(struct flowlog *log, flowlog_decorate_fn fn, void *ctx);

typedef bool (*flowlog_gate_fn)(void *ctx, const json_t *record);
void flowlog_set_gate(struct flowlog *log, flowlog_gate_fn gate, void *ctx);
uint64_t flowlog_skipped(const struct flowlog *log);

/* Called with each record written (or queued, when batching), on the
 * writer's thread, after it went into the log: the store and live events
 * follow the log from here. The record is borrowed for the call. */
typedef void (*flowlog_observer_fn)(void *ctx, const json_t *record);
void flowlog_set_observer(struct flowlog *log, flowlog_observer_fn fn, void *ctx);

struct flowlog_flow;
/* Called as each flow begins (flowlog_flow_begin), for live "started"
 * events; the flow is borrowed for the call. */
typedef void (*flowlog_begin_fn)(void *ctx, const struct flowlog_flow *f);
void flowlog_set_begin_observer(struct flowlog *log, flowlog_begin_fn fn, void *ctx);

/* Lines written (or queued) and writes that failed since flowlog_open. */
uint64_t flowlog_lines(const struct flowlog *log);
uint64_t flowlog_errors(const struct flowlog *log);

/* "ip:port" / "[ip6]:port" (v4-mapped IPv6 stays in IPv6 form). Returns
 * the length, or -EAFNOSUPPORT (out is then "?"). */
int flowlog_format_addr(const struct sockaddr *sa, char out[static FLOWLOG_ADDR_LEN]);

/* The address alone ("10.0.0.1", "2001:db8::1") and its port. Returns
 * AF_INET or AF_INET6, or -EAFNOSUPPORT (out is then "?", port 0). */
int flowlog_format_ip(const struct sockaddr *sa, char out[static INET6_ADDRSTRLEN], unsigned *port);

/* A CLOCK_REALTIME timespec as RFC 3339 UTC with microseconds. */
void flowlog_format_time(const struct timespec *ts, char out[static FLOWLOG_TIME_LEN]);

/* The common part of a flow record. Fill it as the flow runs; strings are
 * copied in, so the flow owns no pointers but end_reason/error. */
struct flowlog_flow {
	const char *type; /* "tcp", "udp", "dns" (static string) */
	char id[FLOWLOG_ID_LEN];
	char peer[FLOWLOG_PEER_LEN]; /* "": unknown (written as null) */
	struct sockaddr_storage client;
	struct sockaddr_storage server;
	struct timespec start, end;    /* CLOCK_REALTIME */
	uint64_t bytes_up, bytes_down; /* client → server, server → client */
	uint64_t packets_up, packets_down;
	bool has_packets;       /* write packets_*: UDP and DNS */
	const char *end_reason; /* static string, or NULL (written as null) */
	char error[128];        /* "": none (key omitted) */
	const char *via;        /* the listener (static string); NULL: the tunnel (key omitted) */
	char user[FLOWLOG_PEER_LEN]; /* the listener's authenticated user; "": none (omitted) */
};

/* Starts a flow: type, a new id, peer (NULL: unknown), addresses, start
 * time now; counters zero. */
void flowlog_flow_begin(struct flowlog_flow *f, struct flowlog *log, const char *type,
			const char *peer, const struct sockaddr *client,
			const struct sockaddr *server);

/* The record of a flow as a new JSON object with the common keys in the
 * documented order (end time: f->end, or now when it is zero). The caller
 * may add type-specific keys, then flowlog_write and json_decref. NULL on
 * allocation failure. */
json_t *flowlog_flow_json(const struct flowlog_flow *f);

/* flowlog_flow_json + flowlog_write + json_decref. `log` NULL: no-op, 0. */
int flowlog_write_flow(struct flowlog *log, const struct flowlog_flow *f);

/* Reads a flows file line by line. For each valid line cb gets the line
 * number (from 1) and the record (borrowed: valid during the call), error
 * NULL. An invalid line other than the last gets record NULL and a message
 * in `error`; an invalid or unterminated-and-invalid LAST line is skipped
 * silently (a write cut short by a crash) and *partial (may be NULL) set.
 * Empty lines are ignored. A nonzero return from cb stops the read and is
 * returned. Returns 0, cb's value, or -errno (open/read failure). */
typedef int (*flowlog_read_cb)(void *ctx, size_t line, json_t *record, const char *error);
int flowlog_read(const char *path, flowlog_read_cb cb, void *ctx, bool *partial);

#endif
