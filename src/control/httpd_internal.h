/* What httpd.c and httpd_ws.c share: the connection, its request and
 * response, and the WebSocket state. Not for other folders. */
#ifndef WGMITM_CONTROL_HTTPD_INTERNAL_H
#define WGMITM_CONTROL_HTTPD_INTERNAL_H

#include "control/httpd.h"

#include <llhttp.h>

#define HTTPD_PEER_MAX 64
#define HTTPD_WS_IN_CAP (64u * 1024) /* unparsed frame bytes held */

struct route {
	char *method; /* NULL: WebSocket (GET) */
	char *pattern;
	httpd_handler fn;
	const struct httpd_ws_handler *ws;
	void *arg;
};

struct httpd {
	uv_loop_t *loop;
	struct httpd_config cfg;
	char host[64];
	uint16_t port;
	uv_tcp_t listener;
	uv_timer_t timer; /* the earliest connection deadline */
	uint64_t timer_due;
	uv_timer_t kick; /* work deferred out of handlers' calls */
	bool kick_armed;
	bool listening, listener_used, shut;
	int handles; /* open libuv handles; freed when 0 and no connections */
	struct route *routes;
	size_t nroutes;
	httpd_gate gate;
	void *gate_arg;
	struct httpd_conn *first;
	struct httpd_stats stats;
	int in_api; /* inside an httpd_* call made by a handler */
	uint8_t rbuf[64 * 1024];
};

/* A string in the request's arena: offset and length (NUL follows). */
struct span {
	uint32_t off, len;
};

struct kv {
	struct span name, value;
};

struct httpd_req {
	struct httpd *srv;
	char *arena;
	size_t arena_len, arena_cap;
	struct span method, target, path;
	struct kv hdr[HTTPD_MAX_HEADERS];
	size_t nhdr;
	bool in_value; /* the last header piece was a value */
	bool hdr_over; /* past HTTPD_MAX_HEADERS */
	struct kv *query, *param;
	size_t nquery, nparam;
	uint8_t *body;
	size_t body_len, body_cap;
	bool head, websocket;
	uint8_t major, minor;
	char peer[HTTPD_PEER_MAX];
};

enum resp_state { R_NONE, R_STREAM, R_DONE };

struct httpd_resp {
	struct httpd_conn *conn; /* NULL: detached (the client went) */
	enum resp_state state;
	char *hdrs; /* extra header lines, "Name: value\r\n" each */
	size_t hdrs_len;
	unsigned defaults_set; /* DEF_* bits replaced by httpd_resp_header */
	bool head_only, chunked, no_body;
	bool aborted, want_writable;
	int depth; /* inside a callback of ours: a finish only marks it */
	void (*abort_fn)(struct httpd_resp *, void *);
	void *abort_arg;
	httpd_writable writable;
	void *writable_arg;
};

/* One request and its response: they live and die together. */
struct exch {
	struct httpd_req req;
	struct httpd_resp resp;
	const struct route *route;
	bool dispatched;
};

enum conn_mode { M_HTTP, M_WS, M_FINISH, M_LINGER, M_DEAD };
enum parse_state { P_IDLE, P_HEAD, P_BODY, P_DONE };

struct httpd_conn {
	struct httpd *srv;
	const struct httpd_transport *t;
	void *ctx;
	struct httpd_conn *prev, *next;
	char peer[HTTPD_PEER_MAX];
	llhttp_t parser;
	enum conn_mode mode;
	enum parse_state ps;
	struct exch *ex; /* the request being read or answered */
	size_t head_bytes;
	bool keep_alive, close_after, body_pending, eof, reading, running, rerun, kick;
	uint8_t *in;
	size_t in_len, in_cap;
	uint8_t *out, *spare;
	size_t out_len, out_cap, spare_cap, inflight;
	size_t out_floor; /* bytes of out a WebSocket overflow must keep */
	uint64_t phase_start, last_progress, deadline;
	struct httpd_ws *ws;
};

enum ws_state { WS_OPEN, WS_CLOSING, WS_DONE };

struct httpd_ws {
	struct httpd_conn *conn;
	struct exch *ex; /* the upgrade request */
	const struct httpd_ws_handler *h;
	void *arg, *data;
	enum ws_state state;
	bool notified, notify_pending, opened, drain_armed;
	int close_code;
	/* the frame being read */
	bool have_hdr, fin, in_msg, msg_binary;
	uint8_t opcode, mask[4];
	uint64_t plen, pgot;
	uint8_t ctl[125];
	uint8_t *msg;
	size_t msg_len, msg_cap;
};

/* httpd.c, for httpd_ws.c */
size_t conn_queued(const struct httpd_conn *c);
bool conn_append(struct httpd_conn *c, const void *p, size_t n);
void conn_notify_output(struct httpd_conn *c);
void conn_changed(struct httpd_conn *c);
void conn_begin_finish(struct httpd_conn *c);
void conn_abort(struct httpd_conn *c);
void exch_free(struct exch *ex);
bool utf8_valid(const uint8_t *p, size_t n);
/* Does a comma-separated header value hold `token` (case-insensitive)? */
bool header_has_token(const char *value, const char *token);

/* httpd_ws.c */
/* Validates the handshake of a WebSocket route's request: 0, or the status
 * to answer (with the message put in `why`). */
int ws_check_handshake(const struct httpd_req *r, const char **why);
/* Answers 101 and turns the connection into a WebSocket. */
void ws_upgrade(struct httpd_conn *c, struct exch *ex);
/* Parses buffered frames and delivers what is due; true when it did
 * something. */
bool ws_run(struct httpd_conn *c);
/* The connection is going: on_close (1006 unless another code is due). */
void ws_conn_gone(struct httpd_conn *c);
/* The deadline of a closing WebSocket (0: none). */
uint64_t ws_deadline(const struct httpd_conn *c);
void ws_expire(struct httpd_conn *c);

#endif
