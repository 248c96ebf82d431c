/* The 502 answer for a failed upstream: HTTP/1.1 after the request head
 * (also when its end straddles two reads), HTTP/2 to a real nghttp2 client
 * session, garbage refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "mitm/errpage.h"

static void test_http1(void **state)
{
	(void)state;
	struct errpage *e = errpage_new(false, "upstream certificate: self-signed certificate");
	assert_non_null(e);
	const uint8_t *out;
	static const char a[] = "GET / HTTP/1.1\r\nHost: x\r\n\r";
	assert_int_equal(errpage_client(e, (const uint8_t *)a, strlen(a)), 0);
	assert_false(errpage_done(e));
	assert_int_equal(errpage_out(e, &out), 0);
	assert_int_equal(errpage_client(e, (const uint8_t *)"\n", 1), 0); /* the end straddles */
	assert_true(errpage_done(e));
	size_t n = errpage_out(e, &out);
	assert_true(n > 0);
	char text[1024];
	memcpy(text, out, n);
	text[n] = 0;
	assert_memory_equal(text, "HTTP/1.1 502 Bad Gateway\r\n", 26);
	assert_non_null(strstr(text, "Connection: close\r\n"));
	assert_non_null(
		strstr(text, "\r\n\r\nwgmitm: upstream certificate: self-signed certificate\n"));
	errpage_consume(e, n);
	assert_int_equal(errpage_out(e, &out), 0);
	errpage_free(e);
}

struct h2client {
	int status;
	char body[512];
	size_t body_len;
	bool closed, goaway;
};

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	(void)s;
	(void)f;
	(void)flags;
	struct h2client *c = user;
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		char v[8] = "";
		memcpy(v, value, valuelen < 7 ? valuelen : 7);
		c->status = atoi(v);
	}
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		   void *user)
{
	(void)s;
	(void)flags;
	(void)id;
	struct h2client *c = user;
	if (len <= sizeof(c->body) - c->body_len) {
		memcpy(c->body + c->body_len, data, len);
		c->body_len += len;
	}
	return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t err, void *user)
{
	(void)s;
	(void)id;
	(void)err;
	((struct h2client *)user)->closed = true;
	return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	(void)s;
	if (f->hd.type == NGHTTP2_GOAWAY)
		((struct h2client *)user)->goaway = true;
	return 0;
}

static void test_h2(void **state)
{
	(void)state;
	struct h2client hc = { 0 };
	nghttp2_session_callbacks *cb;
	assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
	nghttp2_session *cl;
	assert_int_equal(nghttp2_session_client_new(&cl, cb, &hc), 0);
	nghttp2_session_callbacks_del(cb);
	assert_int_equal(nghttp2_submit_settings(cl, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	nghttp2_nv req[] = {
		{ (uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0 },
		{ (uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0 },
		{ (uint8_t *)":authority", (uint8_t *)"api.test", 10, 8, 0 },
		{ (uint8_t *)":path", (uint8_t *)"/svc/Method", 5, 11, 0 },
		{ (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0 },
	};
	assert_true(nghttp2_submit_request(cl, NULL, req, 5, NULL, NULL) > 0);

	struct errpage *e = errpage_new(true, "upstream TLS: alert handshake failure received");
	assert_non_null(e);
	for (int round = 0; round < 10 && !hc.closed; round++) {
		const uint8_t *p;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(cl, &p)) > 0)
			assert_int_equal(errpage_client(e, p, (size_t)n), 0);
		size_t m = errpage_out(e, &p);
		if (m) {
			assert_int_equal(nghttp2_session_mem_recv(cl, p, m), (ssize_t)m);
			errpage_consume(e, m);
		}
	}
	assert_true(hc.closed);
	assert_true(hc.goaway);
	assert_int_equal(hc.status, 502);
	hc.body[hc.body_len] = 0;
	assert_string_equal(hc.body, "wgmitm: upstream TLS: alert handshake failure received\n");
	assert_true(errpage_done(e));
	errpage_free(e);
	nghttp2_session_del(cl);
}

static void test_h2_garbage(void **state)
{
	(void)state;
	struct errpage *e = errpage_new(true, "x");
	static const char junk[] = "GET / HTTP/1.1\r\n\r\n";
	assert_int_equal(errpage_client(e, (const uint8_t *)junk, strlen(junk)), -EPROTO);
	errpage_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http1),
		cmocka_unit_test(test_h2),
		cmocka_unit_test(test_h2_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
