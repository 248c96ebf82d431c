/* A stream: one byte stream from a client, the one interface between a way
 * in (the tunnel's netstack, a proxy listener's socket) and the engine.
 *
 * A small function table in the style of curl's connection filters. The
 * owner of a stream (the relay, the tunnel's DNS over TCP, the CA page)
 * sets its callbacks once and from then on talks only through stream_*,
 * so it never knows how the bytes arrived.
 *
 * Contract, whatever the kind:
 * - recv(data, len): bytes from the client, in order, valid only during the
 *   call; len 0 (data NULL) is the client's FIN (writing is still allowed).
 *   Not called while paused, except that a kind may deliver what it had
 *   already accepted right before closed(0).
 * - sent(len): the client took `len` more bytes: stream_write has room.
 * - closed(err): the stream is gone: 0 after an orderly close both ways,
 *   -ECONNRESET (client reset), -ECONNABORTED (gave up), -ENOMEM. The
 *   stream is freed when it returns: do not close it. Not called after
 *   stream_close or stream_abort.
 * Calls made from inside a callback are allowed (closing or aborting the
 * stream the callback is for too). Loop thread only. */
#ifndef WGMITM_COMMON_STREAM_H
#define WGMITM_COMMON_STREAM_H

#include <stddef.h>
#include <stdint.h>

struct stream;

struct stream_cb {
	void (*recv)(void *arg, const uint8_t *data, size_t len);
	void (*sent)(void *arg, size_t len);
	void (*closed)(void *arg, int err);
};

struct stream_ops {
	void (*set_cb)(struct stream *s, const struct stream_cb *cb, void *arg);
	/* Queues up to len bytes toward the client (copied); returns how
	 * many it took (0 when full: wait for sent). */
	size_t (*write)(struct stream *s, const uint8_t *data, size_t len);
	/* Bytes write would take now. */
	size_t (*writable)(const struct stream *s);
	/* Backpressure: while paused no recv, and the client is made to wait
	 * (a closed window, a socket no longer read). */
	void (*pause)(struct stream *s);
	void (*resume)(struct stream *s);
	/* Half-close: a FIN after the queued bytes; receiving goes on.
	 * 0 or -ENOTCONN. */
	int (*shutdown)(struct stream *s);
	/* Orderly close (FIN after the queued bytes) or reset. Either frees
	 * the stream; no callback follows. */
	void (*close)(struct stream *s);
	void (*abort)(struct stream *s);
};

/* Embedded in each kind's own handle. */
struct stream {
	const struct stream_ops *ops;
};

static inline void stream_set_cb(struct stream *s, const struct stream_cb *cb, void *arg)
{
	s->ops->set_cb(s, cb, arg);
}

static inline size_t stream_write(struct stream *s, const uint8_t *data, size_t len)
{
	return s->ops->write(s, data, len);
}

static inline size_t stream_writable(const struct stream *s)
{
	return s->ops->writable(s);
}

static inline void stream_pause(struct stream *s)
{
	s->ops->pause(s);
}

static inline void stream_resume(struct stream *s)
{
	s->ops->resume(s);
}

static inline int stream_shutdown(struct stream *s)
{
	return s->ops->shutdown(s);
}

static inline void stream_close(struct stream *s)
{
	s->ops->close(s);
}

static inline void stream_abort(struct stream *s)
{
	s->ops->abort(s);
}

#endif
