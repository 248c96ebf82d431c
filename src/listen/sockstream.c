/* A stream over an accepted TCP socket (sockstream.h).
 *
 * The handle is freed only in uv_close's callback, which libuv runs after
 * the callbacks of every request still pending (cancelled), so no callback
 * of ours can find it gone; `done` marks that the owner hears nothing more. */
#include "listen/sockstream.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct sockstream {
	struct stream st; /* first: the ops find the handle from it */
	uv_tcp_t h;
	struct stream_cb cb;
	void *arg;
	uint8_t *unread;
	size_t unread_len, unread_off;
	size_t queued; /* bytes in uv_write requests */
	uv_shutdown_t sreq;
	bool reading;          /* uv_read_start is on */
	bool paused;           /* by the owner */
	bool eof;              /* the client's FIN was read */
	bool eof_told;         /* ... and delivered */
	bool shut, shut_done;  /* our FIN: asked, sent */
	bool close_after_shut; /* close() while the FIN waits for the queue */
	bool done;             /* the owner hears nothing more */
	bool closing;          /* uv_close issued */
	void (*on_free)(void *ctx);
	void *on_free_ctx;
};

struct ss_write {
	uv_write_t req;
	struct sockstream *ss;
	size_t len;
	uint8_t data[];
};

/* One read at a time on the loop thread: the bytes are handed on during
 * the read callback, so one buffer serves every stream. */
static uint8_t ss_rbuf[64 * 1024];

static struct sockstream *ss_of(struct stream *s)
{
	return (struct sockstream *)s;
}

static void ss_on_close(uv_handle_t *h)
{
	struct sockstream *ss = h->data;
	if (ss->on_free)
		ss->on_free(ss->on_free_ctx);
	free(ss->unread);
	free(ss);
}

static void ss_close_handle(struct sockstream *ss)
{
	if (ss->closing)
		return;
	ss->closing = true;
	uv_close((uv_handle_t *)&ss->h, ss_on_close);
}

/* The connection is gone under the owner: tell it, then let go. */
static void ss_fail(struct sockstream *ss, int err)
{
	if (ss->done)
		return;
	ss->done = true;
	if (ss->cb.closed)
		ss->cb.closed(ss->arg, err);
	ss_close_handle(ss);
}

static void ss_read_stop(struct sockstream *ss)
{
	if (ss->reading) {
		uv_read_stop((uv_stream_t *)&ss->h);
		ss->reading = false;
	}
}

/* Both FINs are through: an orderly end. */
static void ss_check_both(struct sockstream *ss)
{
	if (ss->done || !ss->eof_told || !ss->shut_done)
		return;
	ss->done = true;
	if (ss->cb.closed)
		ss->cb.closed(ss->arg, 0);
	ss_close_handle(ss);
}

static void ss_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h;
	(void)hint;
	*buf = uv_buf_init((char *)ss_rbuf, sizeof(ss_rbuf));
}

static void ss_deliver(struct sockstream *ss);

static void ss_on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
	struct sockstream *ss = h->data;
	if (nread == 0 || ss->done)
		return;
	if (nread > 0) {
		if (ss->cb.recv)
			ss->cb.recv(ss->arg, (const uint8_t *)buf->base, (size_t)nread);
		return;
	}
	ss_read_stop(ss);
	if (nread == UV_EOF) {
		ss->eof = true;
		ss_deliver(ss);
		return;
	}
	ss_fail(ss, nread == UV_ECONNRESET ? -ECONNRESET : -ECONNABORTED);
}

/* What was given back, then the FIN, as far as the pause lets. */
static void ss_deliver(struct sockstream *ss)
{
	while (!ss->done && !ss->paused && ss->unread_off < ss->unread_len) {
		size_t off = ss->unread_off, n = ss->unread_len - off;
		/* The owner may give bytes back again: deliver from a copy. */
		uint8_t *p = ss->unread;
		ss->unread = NULL;
		ss->unread_len = ss->unread_off = 0;
		if (ss->cb.recv)
			ss->cb.recv(ss->arg, p + off, n);
		free(p);
	}
	if (ss->done || ss->paused)
		return;
	if (ss->eof && !ss->eof_told) {
		ss->eof_told = true;
		if (ss->cb.recv)
			ss->cb.recv(ss->arg, NULL, 0);
		ss_check_both(ss);
	}
}

static void ss_set_cb(struct stream *s, const struct stream_cb *cb, void *arg)
{
	struct sockstream *ss = ss_of(s);
	ss->cb = *cb;
	ss->arg = arg;
}

static void ss_on_write(uv_write_t *req, int status)
{
	struct ss_write *w = req->data;
	struct sockstream *ss = w->ss;
	size_t len = w->len;
	free(w);
	ss->queued -= len;
	if (status == UV_ECANCELED)
		return;
	if (status < 0) {
		ss_fail(ss, -ECONNRESET);
		return;
	}
	if (!ss->done && ss->cb.sent)
		ss->cb.sent(ss->arg, len);
}

static size_t ss_writable(const struct stream *s)
{
	const struct sockstream *ss = (const struct sockstream *)s;
	if (ss->done || ss->shut || ss->queued >= SOCKSTREAM_SNDBUF)
		return 0;
	return SOCKSTREAM_SNDBUF - ss->queued;
}

static size_t ss_write(struct stream *s, const uint8_t *data, size_t len)
{
	struct sockstream *ss = ss_of(s);
	size_t n = ss_writable(s);
	if (n > len)
		n = len;
	if (n == 0)
		return 0;
	size_t off = 0;
	if (ss->queued == 0) {
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
		int r = uv_try_write((uv_stream_t *)&ss->h, &b, 1);
		if (r > 0)
			off = (size_t)r;
		/* An error other than EAGAIN comes back from uv_write below,
		 * in its callback, where the owner may hear it. */
	}
	if (off == n)
		return n;
	struct ss_write *w = malloc(sizeof(*w) + (n - off));
	if (!w)
		return off;
	memcpy(w->data, data + off, n - off);
	w->ss = ss;
	w->len = n - off;
	w->req.data = w;
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
	if (uv_write(&w->req, (uv_stream_t *)&ss->h, &b, 1, ss_on_write) < 0) {
		free(w);
		return off;
	}
	ss->queued += w->len;
	return n;
}

static void ss_pause(struct stream *s)
{
	struct sockstream *ss = ss_of(s);
	ss->paused = true;
	ss_read_stop(ss);
}

static void ss_resume(struct stream *s)
{
	struct sockstream *ss = ss_of(s);
	ss->paused = false;
	ss_deliver(ss);
	if (ss->done || ss->paused || ss->eof || ss->reading || ss->unread_len)
		return;
	if (uv_read_start((uv_stream_t *)&ss->h, ss_on_alloc, ss_on_read) == 0)
		ss->reading = true;
	else
		ss_fail(ss, -ECONNABORTED);
}

static void ss_on_shutdown(uv_shutdown_t *req, int status)
{
	struct sockstream *ss = req->data;
	ss->shut_done = true;
	if (ss->close_after_shut) {
		ss_close_handle(ss);
		return;
	}
	if (status == UV_ECANCELED)
		return;
	if (status < 0) {
		ss_fail(ss, -ECONNRESET);
		return;
	}
	ss_check_both(ss);
}

static int ss_shutdown(struct stream *s)
{
	struct sockstream *ss = ss_of(s);
	if (ss->done)
		return -ENOTCONN;
	if (ss->shut)
		return 0;
	ss->sreq.data = ss;
	if (uv_shutdown(&ss->sreq, (uv_stream_t *)&ss->h, ss_on_shutdown) < 0)
		return -ENOTCONN;
	ss->shut = true;
	return 0;
}

static void ss_close(struct stream *s)
{
	struct sockstream *ss = ss_of(s);
	if (ss->closing || ss->close_after_shut)
		return;
	ss->done = true;
	ss_read_stop(ss);
	if (!ss->shut) {
		ss->sreq.data = ss;
		if (uv_shutdown(&ss->sreq, (uv_stream_t *)&ss->h, ss_on_shutdown) == 0) {
			ss->shut = true;
			ss->close_after_shut = true;
			return;
		}
	} else if (!ss->shut_done) {
		ss->close_after_shut = true;
		return;
	}
	ss_close_handle(ss);
}

static void ss_abort(struct stream *s)
{
	struct sockstream *ss = ss_of(s);
	ss->done = true;
	if (ss->closing)
		return;
	ss_read_stop(ss);
	ss->closing = true;
	/* With a FIN pending libuv refuses the reset: a plain close then. */
	if (uv_tcp_close_reset(&ss->h, ss_on_close) != 0)
		uv_close((uv_handle_t *)&ss->h, ss_on_close);
}

static const struct stream_ops ss_ops = {
	.set_cb = ss_set_cb,
	.write = ss_write,
	.writable = ss_writable,
	.pause = ss_pause,
	.resume = ss_resume,
	.shutdown = ss_shutdown,
	.close = ss_close,
	.abort = ss_abort,
};

struct sockstream *sockstream_accept(uv_loop_t *loop, uv_stream_t *server, int *err)
{
	struct sockstream *ss = calloc(1, sizeof(*ss));
	if (!ss) {
		*err = UV_ENOMEM;
		return NULL;
	}
	ss->st.ops = &ss_ops;
	ss->paused = true;
	int rc = uv_tcp_init(loop, &ss->h);
	if (rc < 0) {
		free(ss);
		*err = rc;
		return NULL;
	}
	ss->h.data = ss;
	rc = uv_accept(server, (uv_stream_t *)&ss->h);
	if (rc < 0) {
		*err = rc;
		ss->done = true;
		ss_close_handle(ss);
		return NULL;
	}
	uv_tcp_nodelay(&ss->h, 1);
	return ss;
}

struct stream *sockstream_stream(struct sockstream *ss)
{
	return &ss->st;
}

int sockstream_unread(struct sockstream *ss, const uint8_t *data, size_t len)
{
	if (len == 0)
		return 0;
	size_t have = ss->unread_len - ss->unread_off;
	uint8_t *p = malloc(have + len);
	if (!p)
		return -ENOMEM;
	if (have)
		memcpy(p, ss->unread + ss->unread_off, have);
	memcpy(p + have, data, len);
	free(ss->unread);
	ss->unread = p;
	ss->unread_off = 0;
	ss->unread_len = have + len;
	return 0;
}

void sockstream_on_free(struct sockstream *ss, void (*fn)(void *ctx), void *ctx)
{
	ss->on_free = fn;
	ss->on_free_ctx = ctx;
}

int sockstream_peer(const struct sockstream *ss, struct sockaddr_storage *out)
{
	int len = sizeof(*out);
	return uv_tcp_getpeername(&ss->h, (struct sockaddr *)out, &len);
}

int sockstream_local(const struct sockstream *ss, struct sockaddr_storage *out)
{
	int len = sizeof(*out);
	return uv_tcp_getsockname(&ss->h, (struct sockaddr *)out, &len);
}
