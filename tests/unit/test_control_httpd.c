/* The control API's HTTP/1.1 and WebSocket server over real loopback
 * sockets, on a libuv loop this thread pumps (control_testutil.h):
 * routing and query decoding, 404/405/HEAD, keep-alive and pipelining,
 * the body, head and connection bounds, timeouts, asynchronous replies, a
 * streamed response to a client that reads slowly (the server's queue stays
 * bounded), and WebSocket: handshake, echo, fragments, ping, both close
 * handshakes, protocol errors and a slow consumer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "control_testutil.h"

#include "control/httpd.h"

static uv_loop_t loop;
static struct httpd *srv;
static uint16_t port;

/* ---- Routes ---- */

static void hello(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	httpd_resp_header(resp, "X-Test", "yes");
	httpd_reply_json(resp, 200, json_pack("{s:s}", "hello", "world"));
}

/* The path parameters, query and method, as JSON. */
static void show(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	json_t *q = json_array();
	const char *n, *v;
	for (size_t i = 0; httpd_req_query_at(req, i, &n, &v); i++)
		json_array_append_new(q, json_pack("[s,s]", n, v));
	const char *id = httpd_req_param(req, "id"), *rest = httpd_req_param(req, "*");
	httpd_reply_json(resp, 200,
			 json_pack("{s:s,s:s,s:s?,s:s?,s:o,s:s?}", "method", httpd_req_method(req),
				   "path", httpd_req_path(req), "id", id, "rest", rest, "query", q,
				   "x", httpd_req_header(req, "x-CUSTOM")));
}

static void echo(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	size_t len;
	const uint8_t *body = httpd_req_body(req, &len);
	httpd_reply(resp, 200, "application/octet-stream", body, len);
}

/* Answers from the thread pool; counts aborts of answers nobody awaits. */
struct job {
	uv_work_t w;
	struct httpd_resp *resp;
	int delay_ms;
};

static int aborted_calls, async_done;

static void job_work(uv_work_t *w)
{
	struct job *j = w->data;
	usleep((useconds_t)j->delay_ms * 1000);
}

static void job_done(uv_work_t *w, int status)
{
	struct job *j = w->data;
	async_done++;
	httpd_reply_json(j->resp, 200, json_pack("{s:i}", "delay", j->delay_ms));
	free(j);
}

static void on_abort(struct httpd_resp *resp, void *arg)
{
	aborted_calls++;
}

static void async_route(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));
	const char *d = httpd_req_query(req, "ms");
	j->delay_ms = d ? atoi(d) : 30;
	j->resp = resp;
	j->w.data = j;
	httpd_resp_on_abort(resp, on_abort, NULL);
	assert_int_equal(uv_queue_work(&loop, &j->w, job_work, job_done), 0);
}

/* A streamed body of `total` bytes in `chunk`-byte writes: byte i is
 * (i * 7) % 251. */
static struct {
	size_t total, chunk, sent, max_queued;
	int full, eagain, writable, begun;
	bool ended, gone;
} st;

static uint8_t pattern(size_t i)
{
	return (uint8_t)((i * 7) % 251);
}

static void stream_fill(struct httpd_resp *resp, void *arg)
{
	if (arg)
		st.writable++;
	uint8_t *buf = malloc(st.chunk);
	while (st.sent < st.total) {
		size_t n = st.total - st.sent < st.chunk ? st.total - st.sent : st.chunk;
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(st.sent + i);
		int rc = httpd_stream_write(resp, buf, n);
		size_t q = httpd_resp_queued(resp);
		if (q > st.max_queued)
			st.max_queued = q;
		if (rc == -EAGAIN) {
			st.eagain++;
			free(buf);
			return;
		}
		if (rc < 0) {
			st.gone = true;
			break;
		}
		st.sent += n;
		if (rc == HTTPD_FULL) {
			st.full++;
			free(buf);
			return;
		}
	}
	free(buf);
	httpd_stream_end(resp);
	st.ended = true;
}

static void stream_route(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	st.begun++;
	if (httpd_stream_begin(resp, 200, "application/octet-stream", stream_fill, &st) < 0) {
		httpd_stream_end(resp);
		st.ended = true;
		return;
	}
	stream_fill(resp, NULL);
}

/* WebSocket: echo; "close" closes with 4000; "flood N" sends N 1 KiB
 * messages as long as the queue takes them; "polite N" sends N but keeps
 * the queue under half its bound, going on from on_drain. */
static struct {
	int opened, closed, close_code, drains, enobufs;
	long sent, polite_left;
	size_t max_queued;
	struct httpd_ws *ws;
} wsst;

static void ws_open(struct httpd_ws *ws, void *arg)
{
	wsst.opened++;
	wsst.ws = ws;
	assert_string_equal(httpd_req_path(httpd_ws_req(ws)), "/ws");
}

static void ws_polite(struct httpd_ws *ws)
{
	static char msg[1024];
	memset(msg, 'p', sizeof(msg));
	while (wsst.polite_left > 0 && httpd_ws_queued(ws) < httpd_ws_queue_max(ws) / 2 + 1) {
		assert_int_equal(httpd_ws_send_text(ws, msg, sizeof(msg)), 0);
		wsst.polite_left--;
		wsst.sent++;
	}
}

static void ws_message(struct httpd_ws *ws, bool binary, const uint8_t *data, size_t len, void *arg)
{
	if (!binary && len == 5 && memcmp(data, "close", 5) == 0) {
		assert_int_equal(httpd_ws_close(ws, 4000, "bye"), 0);
		assert_int_equal(httpd_ws_send_text(ws, "late", 4), -EPIPE);
		return;
	}
	if (!binary && len > 6 && memcmp(data, "flood ", 6) == 0) {
		static char msg[1024];
		memset(msg, 'f', sizeof(msg));
		long n = atol((const char *)data + 6);
		for (long i = 0; i < n; i++) {
			int rc = httpd_ws_send_text(ws, msg, sizeof(msg));
			if (httpd_ws_queued(ws) > wsst.max_queued)
				wsst.max_queued = httpd_ws_queued(ws);
			if (rc == -ENOBUFS) {
				wsst.enobufs++;
				assert_int_equal(httpd_ws_send_text(ws, msg, 1), -EPIPE);
				return;
			}
			assert_int_equal(rc, 0);
			wsst.sent++;
		}
		return;
	}
	if (!binary && len > 7 && memcmp(data, "polite ", 7) == 0) {
		wsst.polite_left = atol((const char *)data + 7);
		ws_polite(ws);
		return;
	}
	int rc = binary ? httpd_ws_send_binary(ws, data, len)
			: httpd_ws_send_text(ws, (const char *)data, len);
	assert_int_equal(rc, 0);
}

static void ws_drain(struct httpd_ws *ws, void *arg)
{
	wsst.drains++;
	ws_polite(ws);
}

static void ws_closed(struct httpd_ws *ws, int code, void *arg)
{
	wsst.closed++;
	wsst.close_code = code;
	wsst.ws = NULL;
}

static const struct httpd_ws_handler ws_handler = {
	.on_open = ws_open,
	.on_message = ws_message,
	.on_drain = ws_drain,
	.on_close = ws_closed,
};

/* ---- Server ---- */

static void start(const struct httpd_config *cfg)
{
	assert_int_equal(uv_loop_init(&loop), 0);
	tu_loop = &loop;
	srv = httpd_new(&loop, cfg);
	assert_non_null(srv);
	assert_int_equal(httpd_route(srv, "GET", "/hello", hello, NULL), 0);
	assert_int_equal(httpd_route(srv, "GET", "/items/{id}", show, NULL), 0);
	assert_int_equal(httpd_route(srv, "DELETE", "/items/{id}", show, NULL), 0);
	assert_int_equal(httpd_route(srv, "GET", "/files/*", show, NULL), 0);
	assert_int_equal(httpd_route(srv, "GET", "/", show, NULL), 0);
	assert_int_equal(httpd_route(srv, "POST", "/echo", echo, NULL), 0);
	assert_int_equal(httpd_route(srv, "GET", "/async", async_route, NULL), 0);
	assert_int_equal(httpd_route(srv, "GET", "/stream", stream_route, NULL), 0);
	assert_int_equal(httpd_route_ws(srv, "/ws", &ws_handler, NULL), 0);
	assert_int_equal(httpd_listen(srv), 0);
	port = httpd_port(srv);
	assert_true(port > 0);
	memset(&st, 0, sizeof(st));
	memset(&wsst, 0, sizeof(wsst));
	aborted_calls = async_done = 0;
}

static struct httpd_stats stats(void)
{
	struct httpd_stats s;
	httpd_get_stats(srv, &s);
	return s;
}

static void stop(void)
{
	httpd_free(srv);
	srv = NULL;
	uint64_t end = tu_now() + 5000;
	while (uv_loop_alive(&loop)) {
		assert_true(tu_now() < end);
		uv_run(&loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	}
	assert_int_equal(uv_loop_close(&loop), 0);
}

static json_t *body_json(const struct tu_resp *r)
{
	json_t *j = json_loadb((const char *)r->body, r->body_len, 0, NULL);
	assert_non_null(j);
	return j;
}

/* The message of an error response; asserts its shape. */
static const char *error_message(const struct tu_resp *r, int status)
{
	static char msg[1024];
	assert_int_equal(r->status, status);
	assert_string_equal(tu_header(r, "Content-Type"), "application/json");
	json_t *j = body_json(r);
	json_t *e = json_object_get(j, "error");
	assert_int_equal(json_integer_value(json_object_get(e, "status")), status);
	const char *m = json_string_value(json_object_get(e, "message"));
	assert_non_null(m);
	assert_true(strlen(m) > 10);
	snprintf(msg, sizeof(msg), "%s", m);
	json_decref(j);
	return msg;
}

/* ---- Tests ---- */

static void test_routing(void **state)
{
	start(NULL);
	char req[512];
	struct tu_resp r;
	snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(tu_request(port, req, &r), 200);
	assert_string_equal((char *)r.body, "{\"hello\":\"world\"}");
	assert_string_equal(tu_header(&r, "X-Test"), "yes");
	assert_string_equal(tu_header(&r, "Cache-Control"), "no-store");
	assert_string_equal(tu_header(&r, "X-Content-Type-Options"), "nosniff");
	assert_non_null(tu_header(&r, "Date"));
	tu_resp_free(&r);

	tu_request(port, "GET /items/42 HTTP/1.1\r\nHost: x\r\nX-Custom: v\r\n\r\n", &r);
	json_t *j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "42");
	assert_string_equal(json_string_value(json_object_get(j, "x")), "v");
	assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
	json_decref(j);
	tu_resp_free(&r);

	/* A parameter is percent-decoded; '+' stays in a path. */
	tu_request(port, "GET /items/a%2Fb+c HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "a/b+c");
	assert_string_equal(json_string_value(json_object_get(j, "path")), "/items/a%2Fb+c");
	json_decref(j);
	tu_resp_free(&r);

	tu_request(port, "GET /files/a/b/c.txt HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "rest")), "a/b/c.txt");
	json_decref(j);
	tu_resp_free(&r);
	tu_request(port, "GET /files/ HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "rest")), "");
	json_decref(j);
	tu_resp_free(&r);
	tu_request(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	tu_resp_free(&r);

	/* Exact segments: no trailing slash, no empty parameter. */
	tu_request(port, "GET /items/ HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_non_null(strstr(error_message(&r, 404), "/items/"));
	tu_resp_free(&r);
	tu_request(port, "GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 404);
	tu_resp_free(&r);
	tu_request(port, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 404);
	tu_resp_free(&r);

	/* 405 lists what the path takes, HEAD after GET. */
	tu_request(port, "POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r);
	error_message(&r, 405);
	assert_string_equal(tu_header(&r, "Allow"), "GET, HEAD, DELETE");
	tu_resp_free(&r);
	tu_request(port, "DELETE /items/7 HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	tu_resp_free(&r);

	/* HEAD: the GET's head, no body. */
	tu_request(port, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(tu_header(&r, "Content-Length"), "17");
	assert_null(r.body);

	/* Refused before routing. */
	tu_request(port, "GET /items/%zz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	tu_request(port, "GET /files/a/../b HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	tu_request(port, "GET /files/%2e%2E/b HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	tu_request(port, "GET /items/a%00 HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	tu_request(port, "GET http://x/hello HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	tu_request(port, "GET /hello HTTP/1.1\r\n\r\n", &r);
	assert_non_null(strstr(error_message(&r, 400), "Host"));
	tu_resp_free(&r);
	tu_request(port, "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	tu_request(port, "GET /hello HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", &r);
	error_message(&r, 417);
	tu_resp_free(&r);

	/* Garbage: 400 and closed. */
	int fd = tu_connect(port, 0);
	struct tu_buf b = { 0 };
	tu_sends(fd, "NOT HTTP AT ALL\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	error_message(&r, 400);
	assert_string_equal(tu_header(&r, "Connection"), "close");
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);
	stop();
}

static void test_query(void **state)
{
	start(NULL);
	struct tu_resp r;
	tu_request(port,
		   "GET /items/1?a=1&b=x+y%21&&c&d=&a=2&%E2%82%AC=%e2%82%ac HTTP/1.1\r\nHost: "
		   "x\r\n\r\n",
		   &r);
	json_t *j = body_json(&r);
	json_t *q = json_object_get(j, "query");
	const char *want[][2] = {
		{ "a", "1" }, { "b", "x y!" }, { "c", "" },
		{ "d", "" },  { "a", "2" },    { "\xe2\x82\xac", "\xe2\x82\xac" }
	};
	assert_int_equal(json_array_size(q), 6);
	for (size_t i = 0; i < 6; i++) {
		json_t *kv = json_array_get(q, i);
		assert_string_equal(json_string_value(json_array_get(kv, 0)), want[i][0]);
		assert_string_equal(json_string_value(json_array_get(kv, 1)), want[i][1]);
	}
	json_decref(j);
	tu_resp_free(&r);
	tu_request(port, "GET /items/1?a=%4 HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	tu_request(port, "GET /items/1?a=%00 HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	stop();
}

static void test_keepalive_pipelining(void **state)
{
	start(NULL);
	int fd = tu_connect(port, 0);
	struct tu_buf b = { 0 };
	struct tu_resp r;
	/* Five requests in one write, one answered from the thread pool in
	 * the middle: answers come in order. */
	tu_sends(fd, "GET /items/1 HTTP/1.1\r\nHost: x\r\n\r\n"
		     "GET /async?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n"
		     "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"
		     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
		     "GET /items/3 HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	json_t *j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "1");
	json_decref(j);
	tu_resp_free(&r);
	tu_get_resp(fd, &b, false, &r);
	assert_string_equal((char *)r.body, "{\"delay\":50}");
	tu_resp_free(&r);
	tu_get_resp(fd, &b, true, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(tu_header(&r, "Content-Length"), "17");
	tu_get_resp(fd, &b, false, &r);
	assert_string_equal((char *)r.body, "hello");
	tu_resp_free(&r);
	tu_get_resp(fd, &b, false, &r);
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "3");
	json_decref(j);
	tu_resp_free(&r);
	assert_int_equal(b.off, b.len);

	/* Still open: a request split across writes, a chunked body. */
	tu_sends(fd, "POST /echo HTTP/1.1\r\nHo");
	tu_pump(20);
	tu_sends(fd, "st: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
	tu_pump(20);
	tu_sends(fd, "2\r\nde\r\n0\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	assert_string_equal((char *)r.body, "abcde");
	assert_null(tu_header(&r, "Connection"));
	tu_resp_free(&r);

	/* Connection: close is honoured: answered, then closed. */
	tu_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		     "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(tu_header(&r, "Connection"), "close");
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	assert_int_equal(b.off, b.len); /* nothing for the second */
	tu_buf_free(&b);
	close(fd);

	/* HTTP/1.0: closed after one answer unless it asks for keep-alive. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	assert_string_equal(tu_header(&r, "Connection"), "keep-alive");
	tu_resp_free(&r);
	tu_sends(fd, "GET /hello HTTP/1.0\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	assert_string_equal(tu_header(&r, "Connection"), "close");
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);

	/* A client that half-closes after its request still gets the answer. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "GET /async?ms=20 HTTP/1.1\r\nHost: x\r\n\r\n");
	shutdown(fd, SHUT_WR);
	tu_get_resp(fd, &b, false, &r);
	assert_string_equal((char *)r.body, "{\"delay\":20}");
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);
	stop();
}

static void test_body_limit(void **state)
{
	struct httpd_config cfg = { .max_body = 1000 };
	start(&cfg);
	struct tu_resp r;
	char req[4096], body[2001];
	memset(body, 'b', sizeof(body));
	body[1000] = 0;
	snprintf(req, sizeof(req),
		 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n%s", body);
	tu_request(port, req, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 1000);
	tu_resp_free(&r);

	/* Over by its Content-Length: refused before the body, closed. */
	int fd = tu_connect(port, 0);
	struct tu_buf b = { 0 };
	tu_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	assert_non_null(strstr(error_message(&r, 413), "1000"));
	assert_string_equal(tu_header(&r, "Connection"), "close");
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);

	/* Over in chunks: refused when the bound is passed. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
	body[1000] = 'b';
	body[600] = 0;
	for (int i = 0; i < 2; i++) {
		snprintf(req, sizeof(req), "258\r\n%s\r\n", body);
		tu_sends(fd, req);
	}
	tu_get_resp(fd, &b, false, &r);
	error_message(&r, 413);
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);

	/* Expect: 100-continue: told to go on, then answered. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: "
		     "100-continue\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	assert_int_equal(r.status, 100);
	tu_sends(fd, "abc");
	tu_get_resp(fd, &b, false, &r);
	assert_string_equal((char *)r.body, "abc");
	tu_resp_free(&r);
	/* ... and refused without a 100 when too big. */
	tu_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: "
		     "100-continue\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	error_message(&r, 413);
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);

	/* A refused route with a body unread closes too; without one it keeps
	 * the connection. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	assert_null(tu_header(&r, "Connection"));
	tu_resp_free(&r);
	tu_sends(fd, "POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd");
	tu_get_resp(fd, &b, false, &r);
	error_message(&r, 404);
	assert_string_equal(tu_header(&r, "Connection"), "close");
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);
	stop();
}

static void test_head_limit(void **state)
{
	struct httpd_config cfg = { .max_head = 1024 };
	start(&cfg);
	struct tu_resp r;
	char req[4096], big[2048];
	memset(big, 'h', sizeof(big));
	big[900] = 0;
	snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
	assert_int_equal(tu_request(port, req, &r), 200);
	tu_resp_free(&r);
	big[900] = 'h';
	big[2000] = 0;
	int fd = tu_connect(port, 0);
	struct tu_buf b = { 0 };
	snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
	tu_sends(fd, req);
	tu_get_resp(fd, &b, false, &r);
	assert_non_null(strstr(error_message(&r, 431), "1024"));
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);

	/* A head that never ends, a byte at a time, is cut at the bound. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "GET /hello HTTP/1.1\r\nX-Long: ");
	for (int i = 0; i < 1100 && !b.closed; i++) {
		tu_send(fd, "a", 1);
		tu_read_some(fd, &b, 0);
	}
	tu_get_resp(fd, &b, false, &r);
	error_message(&r, 431);
	tu_resp_free(&r);
	tu_buf_free(&b);
	close(fd);

	/* Too many header fields. */
	char *many = malloc(HTTPD_MAX_HEADERS * 8 + 64);
	strcpy(many, "GET /hello HTTP/1.1\r\nHost: x\r\n");
	for (int i = 0; i < HTTPD_MAX_HEADERS; i++)
		strcat(many, "A: b\r\n");
	strcat(many, "\r\n");
	tu_request(port, many, &r);
	error_message(&r, 431);
	tu_resp_free(&r);
	free(many);
	stop();
}

static void test_async_and_abort(void **state)
{
	start(NULL);
	struct tu_resp r;
	assert_int_equal(tu_request(port, "GET /async?ms=10 HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
	tu_resp_free(&r);
	assert_int_equal(aborted_calls, 0);

	/* The client goes before the answer: told, and the late answer only
	 * frees. */
	int fd = tu_connect(port, 0);
	tu_sends(fd, "GET /async?ms=150 HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_pump(20);
	tu_reset(fd);
	tu_pump(50);
	assert_int_equal(aborted_calls, 1);
	int before = async_done;
	uint64_t end = tu_now() + 3000;
	while (async_done == before && tu_now() < end)
		tu_pump(5);
	assert_int_equal(async_done, before + 1);
	assert_int_equal(stats().conns_active, 0);

	/* The server goes first: its pending answers are finished later. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "GET /async?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_pump(20);
	before = async_done;
	stop(); /* the loop runs until the work is done and answered */
	assert_int_equal(async_done, before + 1);
	close(fd);
}

static void test_stream_backpressure(void **state)
{
	/* Backpressure, not timeouts (test_timeouts): the client shares the
	 * server's thread, and under ASan on a busy machine reading 24 MiB
	 * through it took longer than the 60 s stall window. */
	struct httpd_config cfg = { .out_high = 64 * 1024, .idle_ms = 600000 };
	start(&cfg);
	st.total = 24u * 1024 * 1024;
	st.chunk = 16 * 1024;
	int fd = tu_connect(port, 4096);
	struct tu_buf b = { 0 };
	tu_sends(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
	/* Not reading: the handler is held back, the queue stays bounded. */
	tu_pump(300);
	size_t held = st.sent;
	assert_true(held < st.total);
	assert_true(st.full + st.eagain > 0);
	tu_pump(100);
	assert_int_equal(st.sent, held);
	size_t bound = cfg.out_high + st.chunk + 32;
	assert_true(st.max_queued <= bound);
	assert_true(stats().queued_peak <= bound);
	/* Reading slowly, then at speed: every byte arrives, in order. */
	for (int i = 0; i < 50; i++) {
		tu_read_some(fd, &b, 4096);
		tu_pump(1);
	}
	struct tu_resp r;
	tu_read_until_tail(fd, &b, "\r\n0\r\n\r\n", 60000);
	tu_get_resp(fd, &b, false, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.chunked);
	assert_int_equal(r.body_len, st.total);
	for (size_t i = 0; i < r.body_len; i += 4093)
		assert_int_equal(r.body[i], pattern(i));
	assert_int_equal(r.body[r.body_len - 1], pattern(r.body_len - 1));
	tu_resp_free(&r);
	assert_true(st.ended);
	assert_true(st.writable > 0);
	assert_true(stats().queued_peak <= bound);
	fprintf(stderr, "stream: %zu bytes, %d full, %d writable, peak %zu queued (bound %zu)\n",
		st.total, st.full, st.writable, stats().queued_peak, bound);

	/* HEAD: the head only, the handler told at once. */
	memset(&st, 0, sizeof(st));
	st.total = 100000;
	st.chunk = 1000;
	tu_sends(fd, "HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_get_resp(fd, &b, true, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(tu_header(&r, "Transfer-Encoding"), "chunked");
	assert_true(st.ended);
	assert_int_equal(st.sent, 0);

	/* HTTP/1.0: no chunks, the end is the close. */
	memset(&st, 0, sizeof(st));
	st.total = 300000;
	st.chunk = 7000;
	tu_sends(fd, "GET /stream HTTP/1.0\r\n\r\n");
	assert_true(tu_wait_closed(fd, &b, 5000));
	tu_get_resp(fd, &b, false, &r);
	assert_false(r.chunked);
	assert_int_equal(r.body_len, st.total);
	assert_int_equal(r.body[299999], pattern(299999));
	tu_resp_free(&r);
	tu_buf_free(&b);
	close(fd);

	/* A client that goes mid-stream: the handler hears it in writable. */
	memset(&st, 0, sizeof(st));
	st.total = 64u * 1024 * 1024;
	st.chunk = 16 * 1024;
	fd = tu_connect(port, 4096);
	tu_sends(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_pump(100);
	assert_false(st.ended);
	tu_reset(fd);
	uint64_t end = tu_now() + 3000;
	while (!st.ended && tu_now() < end)
		tu_pump(5);
	assert_true(st.ended);
	assert_true(st.gone);
	stop();
}

static void test_timeouts(void **state)
{
	struct httpd_config cfg = { .idle_ms = 150, .head_ms = 200, .body_ms = 200 };
	start(&cfg);
	/* Idle after a request: closed. */
	int fd = tu_connect(port, 0);
	struct tu_buf b = { 0 };
	struct tu_resp r;
	tu_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	tu_resp_free(&r);
	uint64_t t0 = tu_now();
	assert_true(tu_wait_closed(fd, &b, 2000));
	assert_true(tu_now() - t0 >= 100);
	tu_buf_free(&b);
	close(fd);
	/* Silent from the start: closed. */
	fd = tu_connect(port, 0);
	assert_true(tu_wait_closed(fd, &b, 2000));
	assert_int_equal(b.len, 0);
	tu_buf_free(&b);
	close(fd);
	/* A head that trickles (slowloris): 408 when its time is up, even
	 * though bytes keep coming. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "GET /hello HTTP/1.1\r\n");
	t0 = tu_now();
	while (!b.closed && tu_now() - t0 < 2000) {
		tu_sends(fd, "X: y\r\n");
		tu_pump(20);
		tu_read_some(fd, &b, 0);
	}
	tu_get_resp(fd, &b, false, &r);
	error_message(&r, 408);
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);
	/* A body that never comes. */
	fd = tu_connect(port, 0);
	tu_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
	tu_get_resp(fd, &b, false, &r);
	error_message(&r, 408);
	tu_resp_free(&r);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);
	assert_true(stats().conns_timed_out >= 4);
	stop();
}

static void test_connection_limit(void **state)
{
	struct httpd_config cfg = { .max_conns = 3 };
	start(&cfg);
	int fds[4];
	for (int i = 0; i < 3; i++)
		fds[i] = tu_connect(port, 0);
	fds[3] = tu_connect(port, 0);
	struct tu_buf b = { 0 };
	assert_true(tu_wait_closed(fds[3], &b, 2000));
	assert_int_equal(b.len, 0);
	tu_buf_free(&b);
	close(fds[3]);
	assert_int_equal(stats().conns_refused, 1);
	assert_int_equal(stats().conns_active, 3);
	for (int i = 0; i < 3; i++) {
		struct tu_resp r;
		tu_sends(fds[i], "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
		tu_get_resp(fds[i], &b, false, &r);
		assert_int_equal(r.status, 200);
		tu_resp_free(&r);
		tu_buf_free(&b);
	}
	/* A slot freed is a slot taken again. */
	close(fds[0]);
	tu_pump(20);
	fds[0] = tu_connect(port, 0);
	struct tu_resp r;
	tu_sends(fds[0], "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_get_resp(fds[0], &b, false, &r);
	assert_int_equal(r.status, 200);
	tu_resp_free(&r);
	tu_buf_free(&b);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	stop();
}

static void test_websocket(void **state)
{
	start(NULL);
	struct tu_buf b = { 0 };
	struct tu_frame f;
	int fd = tu_ws_open(port, "/ws", NULL, &b);
	tu_pump(5);
	assert_int_equal(wsst.opened, 1);
	/* Echo, text and binary, short and long lengths. */
	tu_ws_frame(fd, 1, true, "hello", 5, true);
	tu_ws_get(fd, &b, &f);
	assert_int_equal(f.op, 1);
	assert_true(f.fin);
	assert_int_equal(f.len, 5);
	assert_memory_equal(f.data, "hello", 5);
	size_t sizes[] = { 0, 125, 126, 65535, 65536, 300000 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint8_t *m = malloc(sizes[i] + 1);
		for (size_t k = 0; k < sizes[i]; k++)
			m[k] = pattern(k + i);
		tu_ws_frame(fd, 2, true, m, sizes[i], true);
		tu_ws_get(fd, &b, &f);
		assert_int_equal(f.op, 2);
		assert_int_equal(f.len, sizes[i]);
		assert_memory_equal(f.data, m, sizes[i]);
		free(m);
	}
	/* Fragments with a ping between them: the pong first, then the whole
	 * message. */
	tu_ws_frame(fd, 1, false, "Hel", 3, true);
	tu_ws_frame(fd, 9, true, "abc", 3, true);
	tu_ws_frame(fd, 0, false, "l", 1, true);
	tu_ws_frame(fd, 0, true, "o \xe2\x82\xac", 5, true);
	tu_ws_get(fd, &b, &f);
	assert_int_equal(f.op, 10);
	assert_int_equal(f.len, 3);
	assert_memory_equal(f.data, "abc", 3);
	tu_ws_get(fd, &b, &f);
	assert_int_equal(f.op, 1);
	assert_int_equal(f.len, 9);
	assert_memory_equal(f.data, "Hello \xe2\x82\xac", 9);
	/* A frame split across writes. */
	uint8_t raw[] = { 0x81, 0x83, 1, 2, 3, 4, 'x' ^ 1, 'y' ^ 2, 'z' ^ 3 };
	tu_send(fd, raw, 3);
	tu_pump(10);
	tu_send(fd, raw + 3, sizeof(raw) - 3);
	tu_ws_get(fd, &b, &f);
	assert_memory_equal(f.data, "xyz", 3);
	/* The client closes: echoed, then the server closes TCP. */
	tu_ws_close_frame(fd, 1000, "done");
	tu_ws_get(fd, &b, &f);
	assert_int_equal(tu_ws_close_code(&f), 1000);
	assert_true(tu_wait_closed(fd, &b, 3000));
	assert_int_equal(wsst.closed, 1);
	assert_int_equal(wsst.close_code, 1000);
	tu_buf_free(&b);
	close(fd);

	/* The server closes: the client answers, then TCP closes. */
	fd = tu_ws_open(port, "/ws", NULL, &b);
	tu_ws_frame(fd, 1, true, "close", 5, true);
	tu_ws_get(fd, &b, &f);
	assert_int_equal(tu_ws_close_code(&f), 4000);
	assert_int_equal(f.len, 5);
	assert_memory_equal(f.data + 2, "bye", 3);
	tu_pump(5);
	assert_int_equal(wsst.closed, 2);
	assert_int_equal(wsst.close_code, 4000);
	tu_ws_frame(fd, 1, true, "ignored", 7, true); /* after its close: dropped */
	tu_ws_close_frame(fd, 4000, NULL);
	assert_true(tu_wait_closed(fd, &b, 3000));
	assert_int_equal(b.off, b.len);
	tu_buf_free(&b);
	close(fd);

	/* A plain GET on a WebSocket route: 426. Version 8: 426 saying 13. */
	struct tu_resp r;
	char req[512];
	snprintf(req, sizeof(req), "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
	tu_request(port, req, &r);
	error_message(&r, 426);
	assert_string_equal(tu_header(&r, "Upgrade"), "websocket");
	tu_resp_free(&r);
	tu_request(
		port,
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
		&r);
	error_message(&r, 426);
	assert_string_equal(tu_header(&r, "Sec-WebSocket-Version"), "13");
	tu_resp_free(&r);
	tu_request(port,
		   "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		   "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
		   &r);
	error_message(&r, 400);
	tu_resp_free(&r);
	/* Upgrade asked on a plain route: answered as HTTP. */
	tu_request(
		port,
		"GET /hello HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		&r);
	assert_int_equal(r.status, 200);
	tu_resp_free(&r);
	stop();
}

/* A frame the server must refuse: the close code it sends, then TCP closes
 * and on_close says the same. */
static void ws_refused(const void *raw, size_t n, bool as_frame, uint8_t op, int code)
{
	struct tu_buf b = { 0 };
	struct tu_frame f;
	int closed = wsst.closed;
	int fd = tu_ws_open(port, "/ws", NULL, &b);
	if (as_frame)
		tu_ws_frame(fd, op, true, raw, n, true);
	else
		tu_send(fd, raw, n);
	tu_ws_get(fd, &b, &f);
	assert_int_equal(tu_ws_close_code(&f), code);
	assert_true(tu_wait_closed(fd, &b, 3000));
	assert_int_equal(wsst.closed, closed + 1);
	assert_int_equal(wsst.close_code, code);
	tu_buf_free(&b);
	close(fd);
}

static void test_websocket_errors(void **state)
{
	struct httpd_config cfg = { .ws_max_message = 4096 };
	start(&cfg);
	/* Unmasked client frame. */
	uint8_t unmasked[] = { 0x81, 0x02, 'h', 'i' };
	ws_refused(unmasked, sizeof(unmasked), false, 0, 1002);
	/* Reserved bits, unknown opcode, fragmented ping, long ping. */
	uint8_t rsv[] = { 0xc1, 0x80, 0, 0, 0, 0 };
	ws_refused(rsv, sizeof(rsv), false, 0, 1002);
	uint8_t op3[] = { 0x83, 0x80, 0, 0, 0, 0 };
	ws_refused(op3, sizeof(op3), false, 0, 1002);
	uint8_t fragping[] = { 0x09, 0x80, 0, 0, 0, 0 };
	ws_refused(fragping, sizeof(fragping), false, 0, 1002);
	uint8_t longping[200] = { 0 };
	ws_refused(longping, sizeof(longping), true, 9, 1002);
	/* A continuation without a message. */
	ws_refused("x", 1, true, 0, 1002);
	/* Over ws_max_message, at once and in fragments. */
	uint8_t *big = calloc(1, 5000);
	ws_refused(big, 5000, true, 2, 1009);
	struct tu_buf b = { 0 };
	struct tu_frame f;
	int fd = tu_ws_open(port, "/ws", NULL, &b);
	tu_ws_frame(fd, 2, false, big, 3000, true);
	tu_ws_frame(fd, 0, true, big, 3000, true);
	tu_ws_get(fd, &b, &f);
	assert_int_equal(tu_ws_close_code(&f), 1009);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);
	free(big);
	/* Text that is not UTF-8; a bad close code; a 1-byte close. */
	ws_refused("\xc3\x28", 2, true, 1, 1007);
	uint8_t badcode[] = { 0x03, 0xed }; /* 1005 may not be sent */
	ws_refused(badcode, 2, true, 8, 1002);
	ws_refused("x", 1, true, 8, 1002);
	/* The connection drops: 1006. */
	fd = tu_ws_open(port, "/ws", NULL, &b);
	close(fd);
	tu_pump(50);
	assert_int_equal(wsst.close_code, 1006);
	tu_buf_free(&b);
	stop();
}

static void test_websocket_slow_consumer(void **state)
{
	struct httpd_config cfg = { .ws_queue_max = 256 * 1024 };
	start(&cfg);
	struct tu_buf b = { 0 };
	struct tu_frame f;
	/* A client that does not read while the server floods: the queue
	 * stays under its bound, the client is closed with 1008. */
	int fd = tu_connect(port, 4096);
	char req[512];
	snprintf(
		req, sizeof(req),
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
	tu_sends(fd, req);
	tu_pump(20);
	const char *cmd = "flood 1000000"; /* 1 GB if nothing stopped it */
	tu_ws_frame(fd, 1, true, cmd, strlen(cmd), true);
	for (int i = 0; i < 200 && !wsst.enobufs; i++)
		tu_pump(5);
	assert_int_equal(wsst.enobufs, 1);
	assert_true(wsst.sent > 0);
	assert_true(wsst.max_queued <= cfg.ws_queue_max);
	assert_true(stats().queued_peak <= cfg.ws_queue_max + 160);
	assert_int_equal(stats().ws_overflows, 1);
	tu_pump(5);
	assert_int_equal(wsst.closed, 1);
	assert_int_equal(wsst.close_code, 1008);
	/* When it reads at last: the 101, whole frames, then close 1008. */
	struct tu_resp r;
	tu_get_resp(fd, &b, true, &r);
	assert_int_equal(r.status, 101);
	long frames = 0;
	for (;;) {
		tu_ws_get(fd, &b, &f);
		if (f.op == 8)
			break;
		assert_int_equal(f.op, 1);
		assert_int_equal(f.len, 1024);
		frames++;
	}
	assert_int_equal(tu_ws_close_code(&f), 1008);
	assert_true(frames < wsst.sent); /* what was never handed out was dropped */
	tu_ws_close_frame(fd, 1008, NULL);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);

	/* A handler that watches the queue and goes on from on_drain loses
	 * nothing, however slowly the client reads. */
	memset(&wsst, 0, sizeof(wsst));
	fd = tu_connect(port, 4096);
	tu_sends(fd, req);
	tu_pump(20);
	cmd = "polite 3000";
	tu_ws_frame(fd, 1, true, cmd, strlen(cmd), true);
	tu_get_resp(fd, &b, true, &r);
	long got = 0;
	while (got < 3000) {
		tu_ws_get(fd, &b, &f);
		assert_int_equal(f.op, 1);
		assert_int_equal(f.len, 1024);
		got++;
		if (got % 100 == 0)
			tu_pump(2);
	}
	assert_int_equal(wsst.sent, 3000);
	assert_true(wsst.drains > 0);
	assert_int_equal(stats().ws_overflows, 1);
	assert_int_equal(wsst.closed, 0);
	tu_ws_close_frame(fd, 1000, NULL);
	tu_ws_get(fd, &b, &f);
	assert_int_equal(tu_ws_close_code(&f), 1000);
	assert_true(tu_wait_closed(fd, &b, 3000));
	tu_buf_free(&b);
	close(fd);
	stop();
}

/* Sends from outside any callback of the server's, as a broadcast would. */
static void broadcast(uv_timer_t *t)
{
	static char msg[1024];
	memset(msg, 'b', sizeof(msg));
	for (int i = 0; i < 6000 && wsst.ws; i++)
		if (httpd_ws_send_text(wsst.ws, msg, sizeof(msg)) == 0)
			wsst.sent++;
}

static void test_websocket_stalled_reader(void **state)
{
	/* A queue big enough never to overflow: the stalled write is what
	 * closes a client that stopped reading. */
	struct httpd_config cfg = { .ws_queue_max = 16u * 1024 * 1024, .idle_ms = 300 };
	start(&cfg);
	int fd = tu_connect(port, 4096);
	tu_sends(
		fd,
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
	tu_pump(20);
	assert_non_null(wsst.ws);
	uv_timer_t t;
	uv_timer_init(&loop, &t);
	uv_timer_start(&t, broadcast, 0, 0);
	uint64_t t0 = tu_now();
	while (!wsst.closed && tu_now() - t0 < 3000)
		tu_pump(10);
	assert_int_equal(wsst.sent, 6000);
	assert_int_equal(wsst.closed, 1);
	assert_int_equal(wsst.close_code, 1006);
	assert_int_equal(stats().ws_overflows, 0);
	assert_true(stats().conns_timed_out >= 1);
	assert_true(tu_now() - t0 >= 250);
	uv_close((uv_handle_t *)&t, NULL);
	close(fd);
	stop();
}

static void test_ipv6(void **state)
{
	struct httpd_config cfg = { .host = "::1" };
	start(&cfg);
	assert_string_equal(httpd_host(srv), "::1");
	int fd = tu_connect_to(port, 0, true);
	struct tu_buf b = { 0 };
	struct tu_resp r;
	tu_sends(fd, "GET /hello HTTP/1.1\r\nHost: [::1]\r\n\r\n");
	tu_get_resp(fd, &b, false, &r);
	assert_int_equal(r.status, 200);
	tu_resp_free(&r);
	tu_buf_free(&b);
	close(fd);
	stop();
}

static void test_api_misuse(void **state)
{
	uv_loop_t l;
	uv_loop_init(&l);
	struct httpd *s = httpd_new(&l, NULL);
	assert_non_null(s);
	assert_int_equal(httpd_route(s, "GET", "noslash", hello, NULL), -EINVAL);
	assert_int_equal(httpd_route(s, "GET", "/a/*/b", hello, NULL), -EINVAL);
	assert_int_equal(httpd_route(s, "GET", "/a/{}", hello, NULL), -EINVAL);
	assert_int_equal(httpd_route(s, "GET", "/a/{b-c}", hello, NULL), -EINVAL);
	assert_int_equal(httpd_route(s, "GE T", "/a", hello, NULL), -EINVAL);
	assert_int_equal(httpd_route(s, "GET", "/a/{b}/{c}/*", hello, NULL), 0);
	httpd_free(s);
	uv_run(&l, UV_RUN_DEFAULT);
	uv_loop_close(&l);
	struct httpd_config bad = { .host = "localhost" };
	assert_null(httpd_new(&l, &bad));
	/* Not loopback and no gate: refused. */
	uv_loop_init(&l);
	struct httpd_config any = { .host = "0.0.0.0" };
	s = httpd_new(&l, &any);
	assert_int_equal(httpd_listen(s), -EPERM);
	httpd_free(s);
	uv_run(&l, UV_RUN_DEFAULT);
	uv_loop_close(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routing),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_keepalive_pipelining),
		cmocka_unit_test(test_body_limit),
		cmocka_unit_test(test_head_limit),
		cmocka_unit_test(test_async_and_abort),
		cmocka_unit_test(test_stream_backpressure),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_connection_limit),
		cmocka_unit_test(test_websocket),
		cmocka_unit_test(test_websocket_errors),
		cmocka_unit_test(test_websocket_slow_consumer),
		cmocka_unit_test(test_websocket_stalled_reader),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_api_misuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
