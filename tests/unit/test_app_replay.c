/* Replay: the request built from a record and its edits (the bytes it
 * sends, what it refuses), URLs, and the engine on a loop against a
 * loopback server: the record written, the policy, a refused port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mitm/replay.h"

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fail_msg("bad JSON in the test: %s: %s", e.text, text);
	return j;
}

#define H1_RECORD                                                                                  \
	"{\"type\":\"http\",\"id\":\"ab-1\",\"peer\":\"phone\",\"client\":\"10.0.0.2:5000\","      \
	"\"server\":\"203.0.113.10:8443\",\"http_version\":\"HTTP/1.1\",\"method\":\"GET\","       \
	"\"url\":\"https://www.test:8443/headers?x=1\",\"request\":{\"headers\":["                 \
	"[\"Host\",\"www.test:8443\"],[\"User-Agent\",\"curl\"],[\"Accept\",\"*/*\"],"             \
	"[\"Connection\",\"keep-alive\"]],\"body\":{\"text\":\"\",\"size\":0,"                     \
	"\"truncated\":false}}}"

static char *build_wire(const char *record, const char *edits, struct replay_request *r)
{
	json_t *rec = load(record), *ed = edits ? load(edits) : NULL;
	char err[256] = "";
	int rc = replay_build(rec, ed, r, err, sizeof(err));
	json_decref(rec);
	json_decref(ed);
	if (rc < 0)
		fail_msg("replay_build: %s", err);
	size_t n;
	uint8_t *w = replay_serialize(r, &n);
	assert_non_null(w);
	char *s = malloc(n + 1);
	memcpy(s, w, n);
	s[n] = '\0';
	free(w);
	return s;
}

static void test_as_recorded(void **ctx)
{
	(void)ctx;
	struct replay_request r;
	char *w = build_wire(H1_RECORD, NULL, &r);
	assert_string_equal(w, "GET /headers?x=1 HTTP/1.1\r\nHost: www.test:8443\r\n"
			       "User-Agent: curl\r\nAccept: */*\r\nConnection: close\r\n\r\n");
	assert_true(r.tls);
	assert_true(r.use_server);
	assert_int_equal(r.port, 8443);
	assert_string_equal(r.host, "www.test");
	assert_string_equal(r.peer, "phone");
	assert_string_equal(r.replay_of, "ab-1");
	assert_int_equal(json_array_size(r.edits), 0);
	assert_string_equal(r.note, "");
	free(w);
	replay_request_free(&r);
}

static void test_edits(void **ctx)
{
	(void)ctx;
	struct replay_request r;
	char *w =
		build_wire(H1_RECORD,
			   "{\"method\":\"POST\",\"headers\":{\"user-agent\":\"x\",\"Accept\":null,"
			   "\"X-New\":\"1\"},\"body\":\"hello\"}",
			   &r);
	assert_string_equal(w, "POST /headers?x=1 HTTP/1.1\r\nHost: www.test:8443\r\n"
			       "user-agent: x\r\nX-New: 1\r\nContent-Length: 5\r\n"
			       "Connection: close\r\n\r\nhello");
	char *e = json_dumps(r.edits, JSON_COMPACT);
	assert_string_equal(e, "[\"method\",\"headers\",\"body\"]");
	free(e);
	assert_true(r.use_server);
	free(w);
	replay_request_free(&r);

	/* Another host: resolved, and Host follows; a binary body. */
	w = build_wire(H1_RECORD, "{\"url\":\"http://Other.Test/p#frag\",\"body_base64\":\"AAEC\"}",
		       &r);
	assert_false(r.use_server);
	assert_false(r.tls);
	assert_int_equal(r.port, 80);
	assert_memory_equal(w, "GET /p HTTP/1.1\r\nHost: other.test\r\n", 35);
	assert_int_equal(r.body_len, 3);
	assert_memory_equal(r.body, "\x00\x01\x02", 3);
	assert_non_null(strstr(w, "Content-Length: 3\r\n"));
	free(w);
	replay_request_free(&r);

	/* The same server, another path: still dialled as recorded. */
	w = build_wire(H1_RECORD, "{\"url\":\"https://www.test:8443?q\"}", &r);
	assert_true(r.use_server);
	assert_memory_equal(w, "GET /?q HTTP/1.1\r\n", 18);
	free(w);
	replay_request_free(&r);

	/* Host may be set; the edit replaces it in place. */
	w = build_wire(H1_RECORD, "{\"headers\":{\"host\":\"staging.test\"}}", &r);
	assert_memory_equal(w, "GET /headers?x=1 HTTP/1.1\r\nhost: staging.test\r\nUser-Agent", 57);
	free(w);
	replay_request_free(&r);
}

static void test_h2_record(void **ctx)
{
	(void)ctx;
	struct replay_request r;
	char *w = build_wire(
		"{\"type\":\"http\",\"id\":\"ab-2\",\"server\":\"[2001:db8::10]:443\","
		"\"http_version\":\"HTTP/2\",\"method\":\"POST\",\"url\":\"https://h2.test/api\","
		"\"request\":{\"headers\":[[\":method\",\"POST\"],[\":authority\",\"h2.test\"],"
		"[\":path\",\"/api\"],[\"cookie\",\"a=1\"],[\"te\",\"trailers\"],"
		"[\"cookie\",\"b=2\"],[\"content-length\",\"2\"]],"
		"\"body\":{\"base64\":\"e30=\",\"size\":2,\"truncated\":false}}}",
		NULL, &r);
	assert_string_equal(w, "POST /api HTTP/1.1\r\nHost: h2.test\r\nCookie: a=1; b=2\r\n"
			       "Content-Length: 2\r\nConnection: close\r\n\r\n{}");
	assert_string_equal(r.note, "recorded over HTTP/2, replayed over HTTP/1.1");
	assert_true(r.use_server);
	assert_int_equal(r.server.ss_family, AF_INET6);
	free(w);
	replay_request_free(&r);
}

static void test_refused(void **ctx)
{
	(void)ctx;
	static const struct {
		const char *record, *edits, *why;
	} t[] = {
		{ "{\"type\":\"tcp\",\"id\":\"x\"}", NULL, "a tcp record, not an HTTP request" },
		{ "{\"type\":\"http\",\"id\":\"x\",\"websocket\":true}", NULL, "WebSocket" },
		{ "{\"type\":\"http\",\"id\":\"x\",\"method\":\"PUT\",\"url\":\"http://a/\","
		  "\"request\":{\"body\":{\"text\":\"abc\",\"size\":9000000,\"truncated\":true}}}",
		  NULL, "body cap" },
		{ H1_RECORD, "{\"method\":\"GE T\"}", "not a method" },
		{ H1_RECORD, "{\"method\":\"CONNECT\"}", "CONNECT" },
		{ H1_RECORD, "{\"verb\":\"GET\"}", "verb: unknown edit" },
		{ H1_RECORD, "[1]", "a JSON object" },
		{ H1_RECORD, "{\"url\":\"ftp://a/\"}", "http:// or https://" },
		{ H1_RECORD, "{\"url\":\"https://u:p@a/\"}", "user information" },
		{ H1_RECORD, "{\"url\":\"https://a:0/\"}", "port" },
		{ H1_RECORD, "{\"url\":\"https://a:70000/\"}", "port" },
		{ H1_RECORD, "{\"url\":\"https://a:8x/\"}", "port" },
		{ H1_RECORD, "{\"url\":\"https://a b/\"}", "space" },
		{ H1_RECORD, "{\"url\":\"https:///x\"}", "no host" },
		{ H1_RECORD, "{\"url\":\"https://[::1/\"}", "]" },
		{ H1_RECORD, "{\"url\":\"https://[zz]/\"}", "not an IPv6" },
		{ H1_RECORD, "{\"url\":\"https://a\\u00e9/\"}", "not ASCII" },
		{ H1_RECORD, "{\"url\":7}", "url: expected a string" },
		{ H1_RECORD, "{\"body\":\"a\",\"body_base64\":\"YQ==\"}", "one of them" },
		{ H1_RECORD, "{\"body_base64\":\"!!\"}", "not base64" },
		{ H1_RECORD, "{\"headers\":{\"Bad Name\":\"1\"}}", "not a header name" },
		{ H1_RECORD, "{\"headers\":{\"X\":\"a\\r\\nB: c\"}}", "CR, LF or NUL" },
		{ H1_RECORD, "{\"headers\":{\"X\":1}}", "expected a string" },
		{ H1_RECORD, "{\"headers\":{\"Content-Length\":\"1\"}}", "set by the replay" },
		{ H1_RECORD, "{\"headers\":{\"Host\":null}}", "Host cannot be removed" },
		{ H1_RECORD, "{\"headers\":[]}", "expected an object" },
		{ H1_RECORD, "{\"timeout_ms\":50}", "timeout_ms: expected 100 to" },
		{ H1_RECORD, "{\"timeout_ms\":\"5\"}", "timeout_ms: expected 100 to" },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		json_t *rec = load(t[i].record), *ed = t[i].edits ? load(t[i].edits) : NULL;
		struct replay_request r;
		char err[256] = "";
		int rc = replay_build(rec, ed, &r, err, sizeof(err));
		replay_request_free(&r);
		json_decref(rec);
		json_decref(ed);
		if (rc != -1 || !strstr(err, t[i].why))
			fail_msg("case %zu: rc %d, \"%s\" (want \"%s\")", i, rc, err, t[i].why);
	}
}

static void test_urls(void **ctx)
{
	(void)ctx;
	static const struct {
		const char *url, *host, *target;
		bool tls;
		uint16_t port;
	} t[] = {
		{ "https://[2001:DB8::1]:8443/a?b#frag", "2001:db8::1", "/a?b", true, 8443 },
		{ "HTTP://X.Test", "x.test", "", false, 80 },
		{ "http://h?q=1", "h", "?q=1", false, 80 },
		{ "https://10.0.0.1/", "10.0.0.1", "/", true, 443 },
		{ "https://h:65535#x", "h", "", true, 65535 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		bool tls;
		char host[REPLAY_HOST_LEN], err[128];
		uint16_t port;
		size_t off, len;
		assert_int_equal(
			replay_parse_url(t[i].url, &tls, host, &port, &off, &len, err, sizeof(err)),
			0);
		assert_string_equal(host, t[i].host);
		assert_int_equal(tls, t[i].tls);
		assert_int_equal(port, t[i].port);
		assert_int_equal(len, strlen(t[i].target));
		assert_memory_equal(t[i].url + off, t[i].target, len);
	}
}

/* ---- The engine against a loopback server ------------------------------------ */

struct server {
	uv_tcp_t listener, conn;
	bool have_conn;
	char got[4096];
	size_t got_len;
	const char *answer;
	uint16_t port;
};

struct outcome {
	int calls, status;
	char id[FLOWLOG_ID_LEN], end_reason[64], error[256];
	json_t *record;
};

static void srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct server *s = h->data;
	(void)hint;
	*b = uv_buf_init(s->got + s->got_len, (unsigned)(sizeof(s->got) - 1 - s->got_len));
}

static void srv_written(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct server *s = st->data;
	(void)b;
	if (n <= 0)
		return;
	s->got_len += (size_t)n;
	s->got[s->got_len] = '\0';
	char *end = strstr(s->got, "\r\n\r\n");
	const char *cl = strstr(s->got, "Content-Length: ");
	size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
	if (end && s->got_len >= (size_t)(end + 4 - s->got) + body) {
		/* Answered, and the connection kept open: the length ends it. */
		uv_write_t *w = malloc(sizeof(*w));
		uv_buf_t out = uv_buf_init((char *)s->answer, (unsigned)strlen(s->answer));
		uv_write(w, st, &out, 1, srv_written);
	}
}

static void srv_accept(uv_stream_t *l, int status)
{
	struct server *s = l->data;
	assert_int_equal(status, 0);
	assert_false(s->have_conn);
	uv_tcp_init(l->loop, &s->conn);
	s->conn.data = s;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
	s->have_conn = true;
	uv_read_start((uv_stream_t *)&s->conn, srv_alloc, srv_read);
}

static void srv_start(uv_loop_t *loop, struct server *s)
{
	memset(s, 0, sizeof(*s));
	uv_tcp_init(loop, &s->listener);
	s->listener.data = s;
	struct sockaddr_in a;
	uv_ip4_addr("127.0.0.1", 0, &a);
	assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 8, srv_accept), 0);
	int len = sizeof(a);
	uv_tcp_getsockname(&s->listener, (struct sockaddr *)&a, &len);
	s->port = ntohs(a.sin_port);
}

static void srv_stop(struct server *s)
{
	uv_close((uv_handle_t *)&s->listener, NULL);
	if (s->have_conn)
		uv_close((uv_handle_t *)&s->conn, NULL);
}

static void on_done(void *arg, const struct replay_result *r)
{
	struct outcome *o = arg;
	o->calls++;
	o->status = r->status;
	snprintf(o->id, sizeof(o->id), "%s", r->id);
	snprintf(o->end_reason, sizeof(o->end_reason), "%s", r->end_reason);
	snprintf(o->error, sizeof(o->error), "%s", r->error ? r->error : "");
	o->record = r->record ? json_deep_copy(r->record) : NULL;
}

struct engine_env {
	uv_loop_t loop;
	struct flowlog *log;
	struct policy policy;
	struct replay_engine *e;
	char path[64];
};

static void env_open(struct engine_env *v, bool allow_loopback)
{
	memset(v, 0, sizeof(*v));
	uv_loop_init(&v->loop);
	snprintf(v->path, sizeof(v->path), "/tmp/wgmitm-replay-XXXXXX");
	int fd = mkstemp(v->path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(flowlog_open(&v->log, v->path, NULL), 0);
	struct addrpool pool;
	assert_int_equal(addrpool_parse4("10.66.77.0/24", &pool.net4, &pool.prefix4), 0);
	assert_int_equal(addrpool_parse6("fd00:66:77::/64", &pool.net6, &pool.prefix6), 0);
	policy_init(&v->policy, &pool);
	v->policy.allow_loopback = allow_loopback;
	struct replay_config cfg = { .log = v->log, .policy = &v->policy, .body_cap = 4 };
	v->e = replay_engine_new(&v->loop, &cfg);
	assert_non_null(v->e);
}

static void env_close(struct engine_env *v)
{
	replay_engine_free(v->e);
	uv_run(&v->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&v->loop), 0);
	flowlog_close(v->log);
	unlink(v->path);
}

static void start(struct engine_env *v, uint16_t port, const char *edits, struct outcome *o)
{
	char rec[1024];
	snprintf(rec, sizeof(rec),
		 "{\"type\":\"http\",\"id\":\"orig-1\",\"peer\":\"phone\",\"client\":"
		 "\"10.66.77.2:4000\",\"server\":\"127.0.0.1:%u\",\"method\":\"GET\",\"url\":"
		 "\"http://127.0.0.1:%u/"
		 "x\",\"request\":{\"headers\":[[\"Host\",\"127.0.0.1:%u\"]]}}",
		 port, port, port);
	json_t *r = load(rec), *ed = edits ? load(edits) : NULL;
	struct replay_request req;
	char err[256];
	assert_int_equal(replay_build(r, ed, &req, err, sizeof(err)), 0);
	json_decref(r);
	json_decref(ed);
	memset(o, 0, sizeof(*o));
	assert_int_equal(replay_start(v->e, &req, on_done, o), 0);
	assert_int_equal(o->calls, 0); /* never from inside replay_start */
}

static void test_engine_complete(void **ctx)
{
	(void)ctx;
	struct engine_env v;
	env_open(&v, true);
	struct server s;
	srv_start(&v.loop, &s);
	s.answer = "HTTP/1.1 201 Created\r\nContent-Length: 10\r\nX-S: 1\r\n\r\n0123456789";
	struct outcome o;
	start(&v, s.port, "{\"method\":\"PUT\",\"headers\":{\"X-Edit\":\"yes\"},\"body\":\"hi\"}",
	      &o);
	while (o.calls == 0 && uv_run(&v.loop, UV_RUN_ONCE))
		;
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.status, 201);
	assert_string_equal(o.end_reason, "complete");
	assert_string_equal(o.error, "");
	assert_true(o.id[0] != '\0');
	assert_non_null(strstr(s.got, "PUT /x HTTP/1.1\r\n"));
	assert_non_null(strstr(s.got, "X-Edit: yes\r\n"));
	assert_non_null(strstr(s.got, "\r\n\r\nhi"));
	json_t *rec = o.record;
	assert_string_equal(json_string_value(json_object_get(rec, "type")), "http");
	assert_string_equal(json_string_value(json_object_get(rec, "via")), "replay");
	assert_string_equal(json_string_value(json_object_get(rec, "replay_of")), "orig-1");
	assert_string_equal(json_string_value(json_object_get(rec, "peer")), "phone");
	assert_string_equal(json_string_value(json_object_get(rec, "client")), "10.66.77.2:4000");
	assert_string_equal(json_string_value(json_object_get(rec, "method")), "PUT");
	assert_true(json_is_null(json_object_get(rec, "tls")));
	json_t *resp = json_object_get(rec, "response");
	assert_int_equal(json_integer_value(json_object_get(resp, "status")), 201);
	/* The body cap (4 here) holds for the response. */
	json_t *body = json_object_get(resp, "body");
	assert_string_equal(json_string_value(json_object_get(body, "text")), "0123");
	assert_true(json_is_true(json_object_get(body, "truncated")));
	assert_int_equal(json_integer_value(json_object_get(body, "size")), 10);
	json_decref(rec);
	srv_stop(&s);
	env_close(&v);
}

static void test_engine_failures(void **ctx)
{
	(void)ctx;
	struct engine_env v;
	/* Loopback refused by the policy, as for a device. */
	env_open(&v, false);
	struct outcome o;
	start(&v, 8080, NULL, &o);
	uv_run(&v.loop, UV_RUN_DEFAULT);
	assert_int_equal(o.calls, 1);
	assert_string_equal(o.end_reason, "policy:loopback");
	assert_non_null(strstr(o.error, "127.0.0.1:8080 is refused"));
	assert_string_equal(json_string_value(json_object_get(o.record, "end_reason")),
			    "policy:loopback");
	assert_true(json_is_null(json_object_get(o.record, "response")));
	json_decref(o.record);
	/* ... unless the port is an --allow-host-port one. */
	assert_int_equal(policy_add_host_port(&v.policy, 1), 0);
	start(&v, 1, NULL, &o);
	uv_run(&v.loop, UV_RUN_DEFAULT);
	assert_int_equal(o.calls, 1);
	assert_string_equal(o.end_reason, "upstream_refused");
	assert_non_null(strstr(o.error, "connect to 127.0.0.1:1"));
	json_decref(o.record);
	env_close(&v);

	/* A server that never answers: the timeout, recorded. Then a
	 * shutdown ends what is in flight. */
	env_open(&v, true);
	struct server s;
	srv_start(&v.loop, &s);
	s.answer = "";
	struct replay_config cfg = { .log = v.log, .policy = &v.policy, .timeout_ms = 200 };
	struct replay_engine *quick = replay_engine_new(&v.loop, &cfg);
	char rec[512];
	snprintf(rec, sizeof(rec),
		 "{\"type\":\"http\",\"id\":\"o\",\"method\":\"GET\",\"url\":\"http://127.0.0.1:%u/"
		 "\"}",
		 s.port);
	json_t *r = load(rec);
	struct replay_request req;
	char err[128];
	assert_int_equal(replay_build(r, NULL, &req, err, sizeof(err)), 0);
	memset(&o, 0, sizeof(o));
	assert_int_equal(replay_start(quick, &req, on_done, &o), 0);
	while (o.calls == 0 && uv_run(&v.loop, UV_RUN_ONCE))
		;
	assert_string_equal(o.end_reason, "timeout");
	assert_non_null(strstr(o.error, "within 200 ms"));
	json_decref(o.record);
	/* A replay's own timeout_ms wins over the engine's. */
	struct server s3;
	srv_start(&v.loop, &s3);
	s3.answer = "";
	snprintf(rec, sizeof(rec),
		 "{\"type\":\"http\",\"id\":\"o\",\"method\":\"GET\",\"url\":\"http://127.0.0.1:%u/"
		 "\"}",
		 s3.port);
	json_t *r3 = load(rec), *ed = load("{\"timeout_ms\": 300}");
	assert_int_equal(replay_build(r3, ed, &req, err, sizeof(err)), 0);
	json_decref(ed);
	json_decref(r3);
	assert_int_equal(req.timeout_ms, 300);
	memset(&o, 0, sizeof(o));
	assert_int_equal(replay_start(quick, &req, on_done, &o), 0);
	while (o.calls == 0 && uv_run(&v.loop, UV_RUN_ONCE))
		;
	assert_string_equal(o.end_reason, "timeout");
	assert_non_null(strstr(o.error, "within 300 ms"));
	json_decref(o.record);
	struct outcome o2;
	start(&v, s.port, NULL, &o2);
	assert_int_equal(replay_inflight(v.e), 1);
	replay_engine_shutdown(v.e);
	assert_int_equal(o2.calls, 1);
	assert_string_equal(o2.end_reason, "shutdown");
	json_decref(o2.record);
	assert_int_equal(replay_build(r, NULL, &req, err, sizeof(err)), 0);
	assert_int_equal(replay_start(v.e, &req, on_done, &o2), -ESHUTDOWN);
	json_decref(r);
	replay_engine_free(quick);
	srv_stop(&s);
	srv_stop(&s3);
	env_close(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_as_recorded),
		cmocka_unit_test(test_edits),
		cmocka_unit_test(test_h2_record),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_engine_complete),
		cmocka_unit_test(test_engine_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
