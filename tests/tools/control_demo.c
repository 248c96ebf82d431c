/* A control server with a few test routes, for real clients (curl, Node's
 * ws) in tests/tools/test_control_clients.sh.
 *
 *   control_demo HOME [PORT]
 *
 * Prints "port N", "token T" and "ready" on stdout, then serves until its
 * stdin closes or it gets SIGTERM/SIGINT. Routes (all behind control/auth):
 *   GET  /hello            {"hello": "world"}
 *   GET  /echo/{id}?...    the path parameter, query and some headers
 *   POST /upload           {"bytes": N, "sha256": "..."} of the body
 *   GET  /stream?n=N       N lines "line <i>\n", chunked, with backpressure
 *   GET  /async            answered from the thread pool
 *   WS   /ws               echoes messages; "close" closes with 4000,
 *                          "flood N" sends N 1 KiB messages */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#include "common/log.h"
#include "control/auth.h"
#include "control/httpd.h"

static uv_loop_t *loop;
static struct httpd *srv;
static struct auth *auth;
static uv_signal_t sigterm, sigint;
static uv_pipe_t in;

static void hello(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	httpd_reply_json(resp, 200, json_pack("{s:s}", "hello", "world"));
}

static void echo(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	json_t *q = json_object();
	const char *n, *v;
	for (size_t i = 0; httpd_req_query_at(req, i, &n, &v); i++)
		json_object_set_new(q, n, json_string(v));
	const char *ua = httpd_req_header(req, "User-Agent");
	httpd_reply_json(resp, 200,
			 json_pack("{s:s,s:s,s:o,s:s?}", "id", httpd_req_param(req, "id"), "method",
				   httpd_req_method(req), "query", q, "user_agent", ua));
}

static void upload(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	size_t len;
	const uint8_t *body = httpd_req_body(req, &len);
	unsigned char md[32];
	unsigned mdlen = 0;
	char hex[65];
	EVP_Digest(body, len, md, &mdlen, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	httpd_reply_json(resp, 200,
			 json_pack("{s:I,s:s}", "bytes", (json_int_t)len, "sha256", hex));
}

struct stream {
	long i, n;
};

static void stream_more(struct httpd_resp *resp, void *arg)
{
	struct stream *st = arg;
	for (;;) {
		if (st->i >= st->n) {
			httpd_stream_end(resp);
			free(st);
			return;
		}
		char line[64];
		int len = snprintf(line, sizeof(line), "line %ld\n", st->i);
		int rc = httpd_stream_write(resp, line, (size_t)len);
		if (rc == -EAGAIN)
			return;
		if (rc < 0) {
			httpd_stream_end(resp);
			free(st);
			return;
		}
		st->i++;
		if (rc == HTTPD_FULL)
			return;
	}
}

static void stream(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	const char *n = httpd_req_query(req, "n");
	struct stream *st = calloc(1, sizeof(*st));
	st->n = n ? atol(n) : 10;
	if (httpd_stream_begin(resp, 200, "text/plain", stream_more, st) < 0) {
		httpd_stream_end(resp);
		free(st);
		return;
	}
	stream_more(resp, st);
}

struct job {
	uv_work_t work;
	struct httpd_resp *resp;
	long answer;
};

static void job_work(uv_work_t *w)
{
	struct job *j = w->data;
	usleep(20000);
	j->answer = 42;
}

static void job_done(uv_work_t *w, int status)
{
	struct job *j = w->data;
	httpd_reply_json(j->resp, 200, json_pack("{s:I}", "answer", (json_int_t)j->answer));
	free(j);
}

static void async(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));
	j->resp = resp;
	j->work.data = j;
	uv_queue_work(loop, &j->work, job_work, job_done);
}

static void ws_message(struct httpd_ws *ws, bool binary, const uint8_t *data, size_t len, void *arg)
{
	if (!binary && len == 5 && memcmp(data, "close", 5) == 0) {
		httpd_ws_close(ws, 4000, "asked to");
		return;
	}
	if (!binary && len > 6 && memcmp(data, "flood ", 6) == 0) {
		long n = atol((const char *)data + 6);
		char msg[1024];
		memset(msg, 'x', sizeof(msg));
		for (long i = 0; i < n; i++)
			if (httpd_ws_send_text(ws, msg, sizeof(msg)) < 0)
				return;
		return;
	}
	if (binary)
		httpd_ws_send_binary(ws, data, len);
	else
		httpd_ws_send_text(ws, (const char *)data, len);
}

static void ws_close(struct httpd_ws *ws, int code, void *arg)
{
	fprintf(stderr, "control_demo: WebSocket closed: %d\n", code);
}

static const struct httpd_ws_handler ws_handler = {
	.on_message = ws_message,
	.on_close = ws_close,
};

static void stop(void)
{
	httpd_free(srv);
	srv = NULL;
	uv_close((uv_handle_t *)&sigterm, NULL);
	uv_close((uv_handle_t *)&sigint, NULL);
	uv_close((uv_handle_t *)&in, NULL);
}

static void on_signal(uv_signal_t *h, int sig)
{
	stop();
}

static void in_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	static char b[256];
	*buf = uv_buf_init(b, sizeof(b));
}

static void in_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	if (n < 0)
		stop();
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: control_demo HOME [PORT]\n");
		return 2;
	}
	if (getenv("CONTROL_DEMO_DEBUG"))
		log_set_level(LOG_DEBUG);
	loop = uv_default_loop();
	auth = auth_new(argv[1]);
	struct httpd_config cfg = { .port = argc > 2 ? (uint16_t)atoi(argv[2]) : 0 };
	srv = auth ? httpd_new(loop, &cfg) : NULL;
	if (!srv || auth_attach(auth, srv) < 0 || httpd_route(srv, "GET", "/hello", hello, NULL) ||
	    httpd_route(srv, "GET", "/echo/{id}", echo, NULL) ||
	    httpd_route(srv, "POST", "/upload", upload, NULL) ||
	    httpd_route(srv, "GET", "/stream", stream, NULL) ||
	    httpd_route(srv, "GET", "/async", async, NULL) ||
	    httpd_route_ws(srv, "/ws", &ws_handler, NULL) || httpd_listen(srv) < 0) {
		fprintf(stderr, "control_demo: cannot start: %s\n", strerror(errno));
		return 1;
	}
	printf("port %u\ntoken %s\nready\n", httpd_port(srv), auth_token(auth));
	fflush(stdout);
	uv_signal_init(loop, &sigterm);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_signal_init(loop, &sigint);
	uv_signal_start(&sigint, on_signal, SIGINT);
	uv_pipe_init(loop, &in, 0);
	uv_pipe_open(&in, 0);
	uv_read_start((uv_stream_t *)&in, in_alloc, in_read);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	auth_free(auth);
	return 0;
}
