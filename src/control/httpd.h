/* The control API's HTTP/1.1 and WebSocket server, on the daemon's libuv
 * loop. Small and bounded on purpose: every buffer has a cap, every wait a
 * timeout, so one client (or a page in a browser) cannot take memory or
 * connections from the rest.
 *
 * It does no authentication itself: control/auth.h installs the gate that
 * every request passes first (token, Host, Origin). httpd_listen refuses a
 * non-loopback address while no gate is installed.
 *
 * Requests are parsed by llhttp, one at a time per connection: pipelined
 * requests wait (their bytes buffered up to a cap, then the socket is no
 * longer read) and are answered in order. A request is routed once its head
 * is read: the gate, then the route table (404, 405 with Allow), then the
 * body is read (413 past max_body) and the handler called.
 *
 * Lifetimes. A handler gets a request and its response, valid until it
 * finishes the response: with httpd_reply / httpd_reply_json /
 * httpd_reply_error, or httpd_stream_begin ... httpd_stream_end. It may
 * return first and finish later (asynchronous, e.g. from uv_queue_work's
 * after_work); until then later requests on the connection wait. Every
 * response must be finished exactly once, even when the client has gone:
 * the calls then only free it. httpd_resp_on_abort tells a handler the
 * client went (a reset or a failed write: a FIN alone may be a half-close
 * awaiting the answer, which is still sent).
 *
 * Timeouts: idle_ms between requests and for a stalled write (bytes queued
 * and none taken by the client), head_ms for a request head from its first
 * byte, body_ms for its body (408 then), ws_close_ms for a close handshake,
 * linger_ms reading after our FIN. None runs while a handler works or on an
 * open WebSocket with nothing queued.
 *
 * Streaming. httpd_stream_begin sends the head (chunked transfer encoding;
 * for an HTTP/1.0 client, no length and a close at the end). Each
 * httpd_stream_write is one chunk. The bytes the connection holds for the
 * client (queued and not yet taken by the socket) are bounded by out_high:
 * a write is accepted while fewer are queued, so the queue never holds
 * more than out_high plus one write. Once a write returns HTTPD_FULL or
 * -EAGAIN, the handler stops; `writable` is called when the queue has
 * drained to half of out_high, or when the client has gone (the next write
 * then returns -EPIPE). Callbacks never run from inside an httpd_* call a
 * handler makes: a handler may write from `writable` without recursion.
 *
 * WebSocket (RFC 6455). A WebSocket route answers a valid upgrade with 101
 * and then exchanges frames: client frames must be masked (1002 otherwise),
 * fragmented messages are reassembled up to ws_max_message (1009 past it),
 * text must be UTF-8 (1007), pings are answered, the close handshake is
 * answered and times out after ws_close_ms. No extension or subprotocol is
 * negotiated.
 *
 * WebSocket backpressure, the choice made here: the frames queued for one
 * client are bounded by ws_queue_max. A send that would pass it drops what
 * was queued and not yet handed to the socket (whole frames only), sends a
 * close with 1008 and returns -ENOBUFS; on_close follows. A slow consumer
 * therefore costs at most ws_queue_max. Handlers that would rather thin
 * their output than lose the client watch httpd_ws_queued: on_drain is
 * called when the queue falls to a quarter of the bound after having held
 * more than half, the moment to send a coalesced summary.
 *
 * Not thread-safe: everything runs on the loop's thread. */
#ifndef WGMITM_CONTROL_HTTPD_H
#define WGMITM_CONTROL_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#define HTTPD_DEFAULT_HOST "127.0.0.1"
#define HTTPD_MAX_HEAD (16u * 1024)   /* request line and headers */
#define HTTPD_MAX_HEADERS 100         /* header fields in one request */
#define HTTPD_MAX_BODY (1024u * 1024) /* request body */
#define HTTPD_MAX_CONNS 256
#define HTTPD_IDLE_MS 60000          /* keep-alive wait, and a stalled write */
#define HTTPD_HEAD_MS 10000          /* a request head, from its first byte */
#define HTTPD_BODY_MS 30000          /* a request body, after the head */
#define HTTPD_OUT_HIGH (256u * 1024) /* bytes queued for one client */
#define HTTPD_WS_MAX_MESSAGE (1024u * 1024)
#define HTTPD_WS_QUEUE_MAX (1024u * 1024)
#define HTTPD_WS_CLOSE_MS 5000 /* waiting for the client's close frame */
#define HTTPD_LINGER_MS 2000   /* reading after our FIN, so the client reads our answer */

/* httpd_stream_write: queued, and the queue is now full. */
#define HTTPD_FULL 1

struct httpd;
struct httpd_req;
struct httpd_resp;
struct httpd_ws;
struct httpd_conn;

/* Zero fields take the defaults above. */
struct httpd_config {
	const char *host; /* bind address (IPv4 or IPv6 literal); NULL: 127.0.0.1 */
	uint16_t port;    /* 0: the system picks one (httpd_port) */
	size_t max_head;
	size_t max_body;
	unsigned max_conns;
	uint32_t idle_ms, head_ms, body_ms;
	size_t out_high;
	size_t ws_max_message;
	size_t ws_queue_max;
	uint32_t ws_close_ms;
	uint32_t linger_ms;
};

struct httpd_stats {
	uint64_t conns_accepted;
	uint64_t conns_refused;   /* over max_conns: closed at once */
	uint64_t conns_timed_out; /* idle, slow head or body, stalled write */
	uint64_t requests;        /* responses started, errors included */
	uint64_t ws_opened;
	uint64_t ws_overflows; /* closed with 1008: the client read too slowly */
	unsigned conns_active;
	size_t queued_peak; /* most bytes one connection held for its client */
};

/* ---- Server ----------------------------------------------------------- */

/* NULL with errno (EINVAL: a bad config; ENOMEM). Listens only after
 * httpd_listen, so routes can be added first. */
struct httpd *httpd_new(uv_loop_t *loop, const struct httpd_config *cfg)
	__attribute__((warn_unused_result));
/* Binds and listens. Returns 0 or -errno (-EPERM: a non-loopback address
 * without a gate). */
int httpd_listen(struct httpd *s);
/* The port listened on (the configured one before httpd_listen). */
uint16_t httpd_port(const struct httpd *s);
/* The bind address as configured ("127.0.0.1", "::1", "0.0.0.0", ...). */
const char *httpd_host(const struct httpd *s);
void httpd_get_stats(const struct httpd *s, struct httpd_stats *out);
/* Closes the listener and every connection (pending responses are
 * detached: their handlers still finish them) and frees the server once
 * libuv has closed its handles: run the loop after. NULL is a no-op. */
void httpd_free(struct httpd *s);

/* ---- Routes ----------------------------------------------------------- */

typedef void (*httpd_handler)(struct httpd_req *req, struct httpd_resp *resp, void *arg);

/* Let through (true), or refuse after answering (false, having called
 * httpd_reply_error). Runs for every request once its head is read, before
 * routing; it must answer before it returns. */
typedef bool (*httpd_gate)(struct httpd_req *req, struct httpd_resp *resp, void *arg);

struct httpd_ws_handler {
	/* The 101 is queued; the request stays readable (httpd_ws_req). */
	void (*on_open)(struct httpd_ws *ws, void *arg);
	/* A whole message; `data` is valid during the call (text: UTF-8,
	 * NUL-terminated beyond len). */
	void (*on_message)(struct httpd_ws *ws, bool binary, const uint8_t *data, size_t len,
			   void *arg);
	/* Optional: the queue fell to a quarter of ws_queue_max after having
	 * held more than half. */
	void (*on_drain)(struct httpd_ws *ws, void *arg);
	/* Once, last: the WebSocket is gone and `ws` must not be used again.
	 * `code`: the client's close code (1005: none given), ours when the
	 * server closed (1002, 1007, 1008, 1009, or httpd_ws_close's), 1006
	 * when the connection dropped. */
	void (*on_close)(struct httpd_ws *ws, int code, void *arg);
};

/* Patterns are paths of segments: a literal segment matches itself, "{name}"
 * one non-empty segment (httpd_req_param), and a last segment "*" the rest
 * of the path, empty or not (param "*"). A route for GET also answers HEAD.
 * The first matching route wins. Returns 0 or -errno (-EINVAL: a bad
 * pattern or method). `method` and `pattern` are copied. */
int httpd_route(struct httpd *s, const char *method, const char *pattern, httpd_handler fn,
		void *arg);
/* A WebSocket route (GET): a plain GET there gets 426. `h` is borrowed for
 * the server's lifetime. */
int httpd_route_ws(struct httpd *s, const char *pattern, const struct httpd_ws_handler *h,
		   void *arg);
/* The gate every request passes first; NULL removes it. */
void httpd_set_gate(struct httpd *s, httpd_gate fn, void *arg);

/* ---- Requests --------------------------------------------------------- */

/* "GET", "POST", ...; "HEAD" for a HEAD routed to a GET route. */
const char *httpd_req_method(const struct httpd_req *r);
/* The path as sent, without the query ("/api/flows/12"). */
const char *httpd_req_path(const struct httpd_req *r);
/* A path parameter ("{name}" or "*"), percent-decoded; NULL: none. */
const char *httpd_req_param(const struct httpd_req *r, const char *name);
/* The first value of a query parameter, decoded (%XX, '+' as space); ""
 * for a name without '='; NULL when absent. */
const char *httpd_req_query(const struct httpd_req *r, const char *name);
size_t httpd_req_query_count(const struct httpd_req *r);
/* The i-th query parameter in order; false past the end. */
bool httpd_req_query_at(const struct httpd_req *r, size_t i, const char **name, const char **value);
/* The first header `name` (case-insensitive), trimmed; NULL when absent. */
const char *httpd_req_header(const struct httpd_req *r, const char *name);
/* How many times header `name` was sent. */
size_t httpd_req_header_count(const struct httpd_req *r, const char *name);
size_t httpd_req_headers(const struct httpd_req *r);
bool httpd_req_header_at(const struct httpd_req *r, size_t i, const char **name,
			 const char **value);
/* The body (NUL-terminated beyond *len, so text is a C string). */
const uint8_t *httpd_req_body(const struct httpd_req *r, size_t *len);
/* The WebSocket handshake of a WebSocket route (for the gate). */
bool httpd_req_is_websocket(const struct httpd_req *r);
/* The client ("127.0.0.1:53412"), for logs. */
const char *httpd_req_peer(const struct httpd_req *r);
/* The server the request came to (for the gate's Host checks). */
struct httpd *httpd_req_server(const struct httpd_req *r);

/* ---- Responses -------------------------------------------------------- */

/* Adds a header to the response (before it starts). Returns 0, -EINVAL (a
 * name that is not a token, a value with CR, LF or NUL, or one the server
 * sets itself: Content-Length, Transfer-Encoding, Connection) or -EALREADY.
 * Cache-Control (no-store), X-Content-Type-Options (nosniff),
 * X-Frame-Options (DENY), Referrer-Policy (no-referrer) and
 * Content-Security-Policy (default-src 'none'; frame-ancestors 'none')
 * are sent by default; a header of the same name set here replaces the
 * default (the web UI sets its own CSP). */
int httpd_resp_header(struct httpd_resp *resp, const char *name, const char *value);
/* The whole response; `body` is copied. HEAD gets the head only. */
void httpd_reply(struct httpd_resp *resp, int status, const char *content_type, const void *body,
		 size_t len);
/* `body` is serialized compactly and its reference taken (like
 * json_object_set_new); NULL answers 500. */
void httpd_reply_json(struct httpd_resp *resp, int status, json_t *body);
/* {"error": {"status": N, "message": "..."}}: say what to do about it. */
void httpd_reply_error(struct httpd_resp *resp, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* `fn` is called once if the client goes before the response is finished.
 * The response must still be finished. */
void httpd_resp_on_abort(struct httpd_resp *resp, void (*fn)(struct httpd_resp *, void *),
			 void *arg);
/* The client went: finishing the response only frees it. */
bool httpd_resp_aborted(const struct httpd_resp *resp);

typedef void (*httpd_writable)(struct httpd_resp *resp, void *arg);
/* Sends the head of a streamed response. Returns 0, or -EPIPE when no body
 * will be sent (the client went, or HEAD): finish with httpd_stream_end
 * either way. */
int httpd_stream_begin(struct httpd_resp *resp, int status, const char *content_type,
		       httpd_writable fn, void *arg);
/* One chunk (a zero `len` is a no-op). Returns 0 (queued, more welcome),
 * HTTPD_FULL (queued; wait for `writable`), -EAGAIN (not queued, the queue
 * is full; wait for `writable`) or -EPIPE (not queued and never will be:
 * call httpd_stream_end). */
int httpd_stream_write(struct httpd_resp *resp, const void *data, size_t len);
/* The last chunk; the response and its request are freed. */
void httpd_stream_end(struct httpd_resp *resp);
/* Bytes the connection holds for the client now. */
size_t httpd_resp_queued(const struct httpd_resp *resp);

/* ---- WebSocket -------------------------------------------------------- */

const struct httpd_req *httpd_ws_req(const struct httpd_ws *ws);
void httpd_ws_set_data(struct httpd_ws *ws, void *data);
void *httpd_ws_data(const struct httpd_ws *ws);
/* One text message (UTF-8, not checked here) or binary message. Returns 0,
 * -ENOBUFS (past ws_queue_max: the connection is being closed with 1008)
 * or -EPIPE (closing already). */
int httpd_ws_send_text(struct httpd_ws *ws, const char *data, size_t len);
int httpd_ws_send_binary(struct httpd_ws *ws, const void *data, size_t len);
/* Starts the close handshake with `code` (1000, 1001, 1008, 1011 or
 * 3000-4999) and a short `reason` (NULL: none; cut to 123 bytes). Returns
 * 0, -EINVAL or -EPIPE; on_close follows, with `code`. */
int httpd_ws_close(struct httpd_ws *ws, int code, const char *reason);
/* Bytes queued for this client now, and the bound. */
size_t httpd_ws_queued(const struct httpd_ws *ws);
size_t httpd_ws_queue_max(const struct httpd_ws *ws);

/* ---- Connections without sockets -------------------------------------- */

/* The byte-processing core under a transport: the listener's libuv TCP
 * connections are one, the unit tests and the fuzz target drive others.
 * The core calls the transport:
 *   output    bytes are waiting: take them with httpd_conn_take
 *   reading   deliver input (true) or hold it (false): backpressure. One
 *             more delivery of up to 64 KiB may follow a false; a transport
 *             that keeps feeding is closed
 *   shutdown  everything was written: send FIN, keep delivering input and
 *             EOF (a short linger, so the last answer is not lost to a
 *             reset)
 *   close     stop: close the connection, then call httpd_conn_free
 * A transport may take output, report it sent and feed input from inside
 * these callbacks (the core defers what it must); it never calls
 * httpd_conn_free from inside them. */
struct httpd_transport {
	void (*output)(void *ctx);
	void (*reading)(void *ctx, bool on);
	void (*shutdown)(void *ctx);
	void (*close)(void *ctx);
};

/* A connection from `peer` (text for logs, copied). NULL with errno
 * EMFILE past max_conns, ENOMEM. */
struct httpd_conn *httpd_conn_new(struct httpd *s, const struct httpd_transport *t, void *ctx,
				  const char *peer);
/* Client bytes. */
void httpd_conn_feed(struct httpd_conn *c, const uint8_t *data, size_t len);
/* The client sent FIN. */
void httpd_conn_eof(struct httpd_conn *c);
/* Takes every byte waiting (ownership of a malloc'd buffer passes to the
 * transport); 0 and NULL when none. */
size_t httpd_conn_take(struct httpd_conn *c, uint8_t **buf);
/* Bytes taken reached the socket; `buf` comes back (reused or freed). */
void httpd_conn_sent(struct httpd_conn *c, uint8_t *buf, size_t len);
/* Bytes waiting plus taken and not yet reported sent. */
size_t httpd_conn_queued(const struct httpd_conn *c);
/* The transport is gone: pending responses are detached, a WebSocket gets
 * on_close(1006). Buffers taken and not given back are the transport's to
 * free(). */
void httpd_conn_free(struct httpd_conn *c);

#endif
