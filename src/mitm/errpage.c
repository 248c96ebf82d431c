/* The 502 answer for a failed upstream; see errpage.h. */
#include "mitm/errpage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#define ERRPAGE_OUT_MAX (64u * 1024)

struct errpage {
	bool h2;
	bool done;        /* the answer is queued in full */
	size_t head_seen; /* HTTP/1: request bytes so far */
	uint8_t tail[3];  /* HTTP/1: the last bytes of the previous read */
	size_t tail_len;
	char body[400];
	size_t body_len;
	nghttp2_session *session; /* HTTP/2 */
	unsigned answered;        /* HTTP/2 streams answered */
	uint8_t out[ERRPAGE_OUT_MAX];
	size_t out_len;
};

static void out_put(struct errpage *e, const void *p, size_t n)
{
	if (n > sizeof(e->out) - e->out_len)
		n = sizeof(e->out) - e->out_len; /* more than 64 KiB of answer is never needed */
	memcpy(e->out + e->out_len, p, n);
	e->out_len += n;
}

/* ---- HTTP/2 --------------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	(void)s;
	(void)stream_id;
	(void)src;
	struct errpage *e = user;
	size_t n = e->body_len < length ? e->body_len : length;
	memcpy(buf, e->body, n);
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct errpage *e = user;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	nghttp2_nv nva[] = {
		NV(":status", "502"),
		NV("content-type", "text/plain; charset=utf-8"),
		NV("x-wgmitm-error", "upstream"),
	};
	nghttp2_data_provider dp = { .read_callback = read_body };
	if (nghttp2_submit_response(s, f->hd.stream_id, nva, sizeof(nva) / sizeof(nva[0]), &dp) ==
	    0)
		e->answered++;
	/* One answer per connection is enough: no new streams after this. */
	(void)nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR, NULL,
				    0);
	return 0;
}

static void h2_drain(struct errpage *e)
{
	for (;;) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(e->session, &p);
		if (n <= 0)
			break;
		out_put(e, p, (size_t)n);
	}
	if (e->answered && !nghttp2_session_want_write(e->session))
		e->done = true;
}

/* ---- common --------------------------------------------------------------- */

struct errpage *errpage_new(bool h2, const char *reason)
{
	struct errpage *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->h2 = h2;
	int n = snprintf(e->body, sizeof(e->body), "wgmitm: %s\n", reason);
	e->body_len = n < 0 ? 0 : (size_t)n < sizeof(e->body) ? (size_t)n : sizeof(e->body) - 1;
	if (!h2)
		return e;
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb) != 0) {
		free(e);
		return NULL;
	}
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	int rc = nghttp2_session_server_new(&e->session, cb, e);
	nghttp2_session_callbacks_del(cb);
	if (rc != 0 || nghttp2_submit_settings(e->session, NGHTTP2_FLAG_NONE, NULL, 0) != 0) {
		errpage_free(e);
		return NULL;
	}
	h2_drain(e);
	return e;
}

void errpage_free(struct errpage *e)
{
	if (!e)
		return;
	nghttp2_session_del(e->session);
	free(e);
}

int errpage_client(struct errpage *e, const uint8_t *p, size_t n)
{
	if (e->done)
		return 0;
	if (e->h2) {
		if (nghttp2_session_mem_recv(e->session, p, n) < 0)
			return -EPROTO;
		h2_drain(e);
		return 0;
	}
	/* HTTP/1: the answer goes out at the end of the first head; the end
	 * may straddle two reads, so look back three bytes. */
	static const char end[] = "\r\n\r\n";
	bool found = memmem(p, n, end, 4) != NULL;
	if (!found && e->tail_len) {
		uint8_t edge[6];
		size_t k = n < 3 ? n : 3;
		memcpy(edge, e->tail, e->tail_len);
		memcpy(edge + e->tail_len, p, k);
		found = memmem(edge, e->tail_len + k, end, 4) != NULL;
	}
	if (n >= 3) {
		memcpy(e->tail, p + n - 3, 3);
		e->tail_len = 3;
	} else {
		size_t keep = e->tail_len + n > 3 ? 3 - n : e->tail_len;
		memmove(e->tail, e->tail + e->tail_len - keep, keep);
		memcpy(e->tail + keep, p, n);
		e->tail_len = keep + n;
	}
	e->head_seen += n;
	if (!found && e->head_seen < ERRPAGE_MAX_HEAD)
		return 0;
	char head[200];
	int hl = snprintf(
		head, sizeof(head),
		"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"
		"Content-Length: %zu\r\nConnection: close\r\nX-Wgmitm-Error: upstream\r\n\r\n",
		e->body_len);
	out_put(e, head, (size_t)hl);
	out_put(e, e->body, e->body_len);
	e->done = true;
	return 0;
}

size_t errpage_out(struct errpage *e, const uint8_t **p)
{
	*p = e->out;
	return e->out_len;
}

void errpage_consume(struct errpage *e, size_t n)
{
	if (n >= e->out_len) {
		e->out_len = 0;
		return;
	}
	memmove(e->out, e->out + n, e->out_len - n);
	e->out_len -= n;
}

bool errpage_done(const struct errpage *e)
{
	return e->done;
}
