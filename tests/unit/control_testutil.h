/* A client for the control server's tests over real loopback sockets, on
 * the thread that runs the server's loop: every wait pumps the loop, so a
 * test reads like blocking client code. HTTP responses (Content-Length,
 * chunked, HEAD, 1xx) and WebSocket frames are parsed here independently of
 * src/control. Header-only; include after cmocka.h. */
#ifndef WGMITM_TESTS_CONTROL_TESTUTIL_H
#define WGMITM_TESTS_CONTROL_TESTUTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

static uv_loop_t *tu_loop;

static inline uint64_t tu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The server's loop runs for `ms`. */
static inline void tu_pump(int ms)
{
	uint64_t end = tu_now() + (uint64_t)ms;
	do {
		uv_run(tu_loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	} while (tu_now() < end);
}

/* A connection to 127.0.0.1:port (or [::1]:port when v6); a small receive
 * buffer when rcvbuf. */
static inline int tu_connect_to(uint16_t port, int rcvbuf, bool v6)
{
	int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	a6.sin6_addr = in6addr_loopback;
	int rc = v6 ? connect(fd, (struct sockaddr *)&a6, sizeof(a6))
		    : connect(fd, (struct sockaddr *)&a, sizeof(a));
	assert_true(rc == 0 || errno == EINPROGRESS);
	uint64_t end = tu_now() + 2000;
	for (;;) {
		uv_run(tu_loop, UV_RUN_NOWAIT);
		struct pollfd p = { fd, POLLOUT, 0 };
		if (poll(&p, 1, 1) == 1)
			break;
		assert_true(tu_now() < end);
	}
	int err = 0;
	socklen_t el = sizeof(err);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
	assert_int_equal(err, 0);
	tu_pump(2); /* accepted */
	return fd;
}

static inline int tu_connect(uint16_t port, int rcvbuf)
{
	return tu_connect_to(port, rcvbuf, false);
}

static inline void tu_send(int fd, const void *data, size_t n)
{
	const uint8_t *p = data;
	uint64_t end = tu_now() + 5000;
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
			continue;
		}
		assert_true(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
		assert_true(tu_now() < end);
		tu_pump(1);
	}
	uv_run(tu_loop, UV_RUN_NOWAIT);
}

/* Closes with a reset (SO_LINGER 0): the server sees the client gone at
 * once, where a FIN could be a half-close awaiting its answer. */
static inline void tu_reset(int fd)
{
	struct linger l = { 1, 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

static inline void tu_sends(int fd, const char *s)
{
	tu_send(fd, s, strlen(s));
}

struct tu_buf {
	uint8_t *p;
	size_t len, cap, off; /* off: what the parsers below have taken */
	bool closed;          /* EOF or reset */
};

static inline void tu_buf_free(struct tu_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* Reads what is there, up to `max` bytes (0: no limit). */
static inline void tu_read_some(int fd, struct tu_buf *b, size_t max)
{
	for (;;) {
		if (b->len + 65536 + 1 > b->cap) {
			b->cap = b->cap ? b->cap * 2 : 131072;
			b->p = realloc(b->p, b->cap);
			assert_non_null(b->p);
		}
		size_t room = 65536;
		if (max && room > max)
			room = max;
		ssize_t k = recv(fd, b->p + b->len, room, 0);
		if (k > 0) {
			b->len += (size_t)k;
			b->p[b->len] = 0;
			if (max)
				return;
			continue;
		}
		if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			b->closed = true;
		return;
	}
}

/* Pumps and reads until the peer closes; false on timeout. */
static inline bool tu_wait_closed(int fd, struct tu_buf *b, int ms)
{
	uint64_t end = tu_now() + (uint64_t)ms;
	while (!b->closed) {
		if (tu_now() > end)
			return false;
		tu_pump(1);
		tu_read_some(fd, b, 0);
	}
	return true;
}

/* ---- HTTP responses ---- */

struct tu_resp {
	int status;
	char head[16384];
	uint8_t *body;
	size_t body_len;
	bool chunked;
};

static inline const char *tu_header(const struct tu_resp *r, const char *name)
{
	static char val[2048];
	size_t nl = strlen(name);
	const char *p = strstr(r->head, "\r\n");
	while (p && p[2] != '\r') {
		p += 2;
		const char *eol = strstr(p, "\r\n");
		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			size_t vl = (size_t)(eol - v);
			assert_true(vl < sizeof(val));
			memcpy(val, v, vl);
			val[vl] = 0;
			return val;
		}
		p = eol;
	}
	return NULL;
}

static inline void tu_resp_free(struct tu_resp *r)
{
	free(r->body);
	r->body = NULL;
}

/* One response at b->off: 1 when whole (off moves past it), 0 when more
 * bytes are needed. Asserts it is well-formed. `until_close`: a body
 * without length runs to EOF (HTTP/1.0 streams). */
static inline int tu_parse_resp(struct tu_buf *b, bool head_only, struct tu_resp *r)
{
	if (b->len == b->off)
		return 0;
	const char *start = (const char *)b->p + b->off;
	size_t avail = b->len - b->off;
	const char *end = memmem(start, avail, "\r\n\r\n", 4);
	if (!end)
		return 0;
	size_t hl = (size_t)(end - start) + 4;
	assert_true(hl < sizeof(r->head));
	memset(r, 0, sizeof(*r));
	memcpy(r->head, start, hl);
	r->head[hl] = 0;
	assert_memory_equal(r->head, "HTTP/1.1 ", 9);
	r->status = atoi(r->head + 9);
	assert_true(r->status >= 100 && r->status <= 599);
	const char *cl = tu_header(r, "Content-Length");
	long len = cl ? atol(cl) : -1;
	const char *te = tu_header(r, "Transfer-Encoding");
	r->chunked = te && strcasecmp(te, "chunked") == 0;
	assert_false(r->chunked && len >= 0); /* never both */
	size_t pos = hl;
	if (head_only || r->status < 200 || r->status == 204 || r->status == 304) {
		b->off += pos;
		return 1;
	}
	if (r->chunked) {
		uint8_t *body = NULL;
		size_t blen = 0;
		for (;;) {
			const char *line = start + pos;
			const char *eol = memmem(line, avail - pos, "\r\n", 2);
			if (!eol) {
				free(body);
				return 0;
			}
			char *e;
			unsigned long n = strtoul(line, &e, 16);
			assert_true(e == eol);
			pos += (size_t)(eol - line) + 2;
			if (avail - pos < n + 2) {
				free(body);
				return 0;
			}
			if (n == 0) {
				assert_memory_equal(start + pos, "\r\n", 2);
				pos += 2;
				break;
			}
			body = realloc(body, blen + n + 1);
			memcpy(body + blen, start + pos, n);
			blen += n;
			pos += n;
			assert_memory_equal(start + pos, "\r\n", 2);
			pos += 2;
		}
		r->body = body;
		r->body_len = blen;
	} else if (len >= 0) {
		if (avail - pos < (size_t)len)
			return 0;
		r->body = malloc((size_t)len + 1);
		memcpy(r->body, start + pos, (size_t)len);
		r->body[len] = 0;
		r->body_len = (size_t)len;
		pos += (size_t)len;
	} else {
		if (!b->closed)
			return 0; /* to EOF */
		r->body_len = avail - pos;
		r->body = malloc(r->body_len + 1);
		memcpy(r->body, start + pos, r->body_len);
		r->body[r->body_len] = 0;
		pos = avail;
	}
	b->off += pos;
	return 1;
}

/* Pumps and reads until one whole response is in; fails the test after
 * `ms`. */
static inline void tu_get_resp(int fd, struct tu_buf *b, bool head_only, struct tu_resp *r)
{
	uint64_t end = tu_now() + 5000;
	for (;;) {
		if (tu_parse_resp(b, head_only, r) == 1)
			return;
		if (b->closed) {
			fprintf(stderr, "closed with %zu bytes unparsed\n", b->len - b->off);
			fail();
		}
		if (tu_now() > end) {
			fprintf(stderr, "no whole response: %zu bytes unparsed\n", b->len - b->off);
			fail();
		}
		tu_pump(1);
		tu_read_some(fd, b, 0);
	}
}

/* Pumps and reads until the bytes end with `tail` (a chunked body's last
 * chunk, say), without parsing on every read. */
static inline void tu_read_until_tail(int fd, struct tu_buf *b, const char *tail, int ms)
{
	size_t tl = strlen(tail);
	uint64_t end = tu_now() + (uint64_t)ms;
	while (b->len - b->off < tl || memcmp(b->p + b->len - tl, tail, tl) != 0) {
		assert_false(b->closed);
		assert_true(tu_now() < end);
		tu_pump(1);
		tu_read_some(fd, b, 0);
	}
}

/* One request on a fresh connection, its response, and the connection. */
static inline int tu_request(uint16_t port, const char *req, struct tu_resp *r)
{
	int fd = tu_connect(port, 0);
	struct tu_buf b = { 0 };
	tu_sends(fd, req);
	tu_get_resp(fd, &b, strncmp(req, "HEAD ", 5) == 0, r);
	tu_buf_free(&b);
	close(fd);
	return r->status;
}

/* ---- WebSocket frames ---- */

static inline void tu_ws_frame(int fd, uint8_t op, bool fin, const void *data, size_t n, bool mask)
{
	uint8_t *f = malloc(n + 14);
	size_t hl = 2;
	f[0] = (uint8_t)((fin ? 0x80 : 0) | op);
	if (n < 126) {
		f[1] = (uint8_t)n;
	} else if (n <= 0xffff) {
		f[1] = 126;
		f[2] = (uint8_t)(n >> 8);
		f[3] = (uint8_t)n;
		hl = 4;
	} else {
		f[1] = 127;
		for (int i = 0; i < 8; i++)
			f[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
		hl = 10;
	}
	static const uint8_t key[4] = { 0x37, 0xfa, 0x21, 0x3d };
	if (mask) {
		f[1] |= 0x80;
		memcpy(f + hl, key, 4);
		hl += 4;
	}
	const uint8_t *p = data;
	for (size_t i = 0; i < n; i++)
		f[hl + i] = mask ? p[i] ^ key[i & 3] : p[i];
	tu_send(fd, f, hl + n);
	free(f);
}

static inline void tu_ws_close_frame(int fd, int code, const char *reason)
{
	uint8_t b[125] = { (uint8_t)(code >> 8), (uint8_t)code };
	size_t rl = reason ? strlen(reason) : 0;
	if (rl)
		memcpy(b + 2, reason, rl);
	tu_ws_frame(fd, 8, true, b, 2 + rl, true);
}

struct tu_frame {
	uint8_t op;
	bool fin;
	uint8_t *data;
	size_t len;
};

/* One server frame at b->off: 1, or 0 when incomplete. Server frames are
 * never masked. */
static inline int tu_ws_parse(struct tu_buf *b, struct tu_frame *f)
{
	size_t avail = b->len - b->off;
	if (avail < 2)
		return 0;
	const uint8_t *p = b->p + b->off;
	assert_int_equal(p[0] & 0x70, 0);
	assert_int_equal(p[1] & 0x80, 0);
	size_t hl = 2;
	uint64_t n = p[1] & 0x7f;
	if (n == 126) {
		if (avail < 4)
			return 0;
		n = (uint64_t)p[2] << 8 | p[3];
		hl = 4;
	} else if (n == 127) {
		if (avail < 10)
			return 0;
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | p[2 + i];
		hl = 10;
	}
	if (avail - hl < n)
		return 0;
	f->op = p[0] & 0x0f;
	f->fin = p[0] & 0x80;
	f->len = (size_t)n;
	f->data = b->p + b->off + hl;
	b->off += hl + (size_t)n;
	return 1;
}

static inline void tu_ws_get(int fd, struct tu_buf *b, struct tu_frame *f)
{
	uint64_t end = tu_now() + 5000;
	for (;;) {
		if (tu_ws_parse(b, f) == 1)
			return;
		assert_false(b->closed);
		assert_true(tu_now() < end);
		tu_pump(1);
		tu_read_some(fd, b, 0);
	}
}

static inline int tu_ws_close_code(const struct tu_frame *f)
{
	assert_int_equal(f->op, 8);
	return f->len >= 2 ? f->data[0] << 8 | f->data[1] : 1005;
}

/* A WebSocket handshake to `path` with `extra` header lines; asserts the
 * 101 and its Sec-WebSocket-Accept (RFC 6455's example key). */
static inline int tu_ws_open(uint16_t port, const char *path, const char *extra, struct tu_buf *b)
{
	int fd = tu_connect(port, 0);
	char req[2048];
	snprintf(
		req, sizeof(req),
		"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUpgrade: websocket\r\n"
		"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		"Sec-WebSocket-Version: 13\r\n%s\r\n",
		path, port, extra ? extra : "");
	tu_sends(fd, req);
	struct tu_resp r;
	tu_get_resp(fd, b, true, &r);
	assert_int_equal(r.status, 101);
	assert_string_equal(tu_header(&r, "Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_true(strcasecmp(tu_header(&r, "Upgrade"), "websocket") == 0);
	return fd;
}

#endif
