/* Link seams for fuzz targets: the libuv calls through which the code under
 * test reaches sockets or the clock are defined here instead, so a target
 * runs in one process without network I/O, on a clock it moves itself, and
 * every input behaves the same on every run. Defined in the target's own
 * object, these definitions win over libuv's when the program is linked;
 * libuv's internal calls are unaffected. Include from one file per target.
 *
 *   clock  uv_now is fuv_now. uv_timer_start/stop only record the timer;
 *          fuv_advance(ms) moves the clock and fires what falls due, in
 *          order of due time, except timers held with fuv_hold_since (the
 *          netstack's: lwIP reads the real clock, so its TCP timers are
 *          run by netstack__test_tcp_ticks instead).
 *   UDP    uv_udp_bind and uv_udp_connect succeed (or fail once, as asked
 *          with fuv_fail), uv_udp_recv_start registers the callbacks,
 *          uv_udp_try_send records the datagram (fuv_sent) and returns its
 *          length. fuv_udp_deliver hands a datagram to a reading socket
 *          through its callbacks, as libuv's receive path does.
 *   TCP    uv_tcp_connect and uv_write stay pending until the target
 *          completes them (fuv_connect_done, fuv_write_done; uv_write's
 *          bytes are recorded like datagrams). fuv_tcp_deliver feeds bytes
 *          through alloc_cb/read_cb in the pieces the alloc callback asks
 *          for.
 *   close  uv_close forgets the handle's timer, registrations and pending
 *          requests, then calls libuv's uv_close. The requests are cancelled
 *          (UV_ECANCELED) at the next fuv_pump, before the loop runs the
 *          close callbacks, as libuv does.
 *   random libsodium's generator is replaced by a fixed sequence restarted
 *          by fuv_reset (fresh DNS IDs, hash keys).
 *
 * Handles are still initialised by libuv (uv_udp_init_ex opens a socket that
 * is never bound, read or written; uv_tcp_init opens none), so libuv closes
 * and frees them as usual. */
#ifndef WGMITM_FUZZ_UV_H
#define WGMITM_FUZZ_UV_H

#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <uv.h>

#define FUV_MAX 512     /* timers, registrations, requests each */
#define FUV_SENT_MAX 64 /* recorded datagrams and writes kept */

enum fuv_op {
	FUV_UDP_BIND,
	FUV_UDP_CONNECT,
	FUV_UDP_RECV_START,
	FUV_UDP_SEND,
	FUV_TCP_CONNECT,
	FUV_READ_START,
	FUV_WRITE,
	FUV_OP_COUNT
};

struct fuv_timer {
	uv_timer_t *h;
	uv_timer_cb cb;
	uint64_t due, order;
};

struct fuv_udp {
	uv_udp_t *h;
	uv_alloc_cb alloc;
	uv_udp_recv_cb recv; /* NULL: not reading */
	bool connected;
	struct sockaddr_storage peer;
};

struct fuv_stream {
	uv_stream_t *s;
	uv_alloc_cb alloc;
	uv_read_cb read;
};

struct fuv_req {
	void *req; /* uv_connect_t or uv_write_t */
	uv_handle_t *h;
	bool write;
	union {
		uv_connect_cb connect;
		uv_write_cb write;
	} cb;
};

/* One datagram or write the code under test sent. */
struct fuv_msg {
	uv_handle_t *h;
	bool tcp;
	struct sockaddr_storage to; /* the destination (UDP) */
	uint8_t *data;
	size_t len;
};

static uint64_t fuv_now;
static uint64_t fuv_order;
static struct fuv_timer fuv_timers[FUV_MAX];
static size_t fuv_ntimers;
static const uv_timer_t *fuv_held[8];
static size_t fuv_nheld;
static struct fuv_udp fuv_udps[FUV_MAX];
static size_t fuv_nudps;
static struct fuv_stream fuv_streams[FUV_MAX];
static size_t fuv_nstreams;
static struct fuv_req fuv_reqs[FUV_MAX];
static size_t fuv_nreqs;
static struct fuv_req fuv_cancelled[FUV_MAX];
static size_t fuv_ncancelled;
static struct fuv_msg fuv_sent_ring[FUV_SENT_MAX];
static size_t fuv_sent_head, fuv_nsent; /* oldest at fuv_sent_head */
static uint64_t fuv_sent_total;         /* ever recorded */
static int fuv_fail_next[FUV_OP_COUNT];
static uint64_t fuv_rng;

/* The next call of `op` fails with `err` (a UV_E* code), once. */
static inline void fuv_fail(enum fuv_op op, int err)
{
	fuv_fail_next[op] = err;
}

static inline int fuv_take_fail(enum fuv_op op)
{
	int e = fuv_fail_next[op];
	fuv_fail_next[op] = 0;
	return e;
}

/* ---- random ------------------------------------------------------------ */

static uint32_t fuv_random(void)
{
	/* xorshift64* */
	fuv_rng ^= fuv_rng >> 12;
	fuv_rng ^= fuv_rng << 25;
	fuv_rng ^= fuv_rng >> 27;
	return (uint32_t)((fuv_rng * 0x2545F4914F6CDD1DULL) >> 32);
}

static void fuv_random_buf(void *const buf, const size_t size)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < size; i++)
		p[i] = (uint8_t)fuv_random();
}

static const char *fuv_random_name(void)
{
	return "fuzz-fixed";
}

static randombytes_implementation fuv_random_impl = {
	.implementation_name = fuv_random_name,
	.random = fuv_random,
	.buf = fuv_random_buf,
};

/* From LLVMFuzzerInitialize, before anything calls sodium_init. */
static inline void fuv_init(void)
{
	if (randombytes_set_implementation(&fuv_random_impl) != 0 || sodium_init() < 0)
		abort();
}

/* The i-th recorded datagram or write, oldest first (i < fuv_nsent). */
static inline struct fuv_msg *fuv_sent(size_t i)
{
	return &fuv_sent_ring[(fuv_sent_head + i) % FUV_SENT_MAX];
}

/* ---- bookkeeping ----------------------------------------------------- */

static void fuv_msg_add(uv_handle_t *h, bool tcp, const struct sockaddr *to, const uv_buf_t bufs[],
			unsigned nbufs)
{
	if (fuv_nsent == FUV_SENT_MAX) {
		free(fuv_sent_ring[fuv_sent_head].data);
		fuv_sent_head = (fuv_sent_head + 1) % FUV_SENT_MAX;
		fuv_nsent--;
	}
	size_t len = 0;
	for (unsigned i = 0; i < nbufs; i++)
		len += bufs[i].len;
	fuv_sent_total++;
	struct fuv_msg *m = &fuv_sent_ring[(fuv_sent_head + fuv_nsent++) % FUV_SENT_MAX];
	memset(m, 0, sizeof(*m));
	m->h = h;
	m->tcp = tcp;
	if (to)
		memcpy(&m->to, to,
		       to->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						 : sizeof(struct sockaddr_in));
	m->data = malloc(len ? len : 1);
	if (!m->data)
		abort();
	for (unsigned i = 0; i < nbufs; i++) {
		memcpy(m->data + m->len, bufs[i].base, bufs[i].len);
		m->len += bufs[i].len;
	}
}

static struct fuv_udp *fuv_udp_find(const uv_udp_t *h, bool create)
{
	for (size_t i = 0; i < fuv_nudps; i++)
		if (fuv_udps[i].h == h)
			return &fuv_udps[i];
	if (!create)
		return NULL;
	if (fuv_nudps == FUV_MAX)
		abort();
	struct fuv_udp *u = &fuv_udps[fuv_nudps++];
	memset(u, 0, sizeof(*u));
	u->h = (uv_udp_t *)h;
	return u;
}

static void fuv_timer_remove(const uv_timer_t *h)
{
	for (size_t i = 0; i < fuv_ntimers; i++) {
		if (fuv_timers[i].h == h) {
			fuv_timers[i] = fuv_timers[--fuv_ntimers];
			return;
		}
	}
}

static bool fuv_is_held(const uv_timer_t *h)
{
	for (size_t i = 0; i < fuv_nheld; i++)
		if (fuv_held[i] == h)
			return true;
	return false;
}

/* Everything recorded about a handle that is being closed. */
static void fuv_forget(const uv_handle_t *h)
{
	fuv_timer_remove((const uv_timer_t *)h);
	for (size_t i = 0; i < fuv_nheld;)
		if ((const uv_handle_t *)fuv_held[i] == h)
			fuv_held[i] = fuv_held[--fuv_nheld];
		else
			i++;
	for (size_t i = 0; i < fuv_nudps;)
		if ((const uv_handle_t *)fuv_udps[i].h == h)
			fuv_udps[i] = fuv_udps[--fuv_nudps];
		else
			i++;
	for (size_t i = 0; i < fuv_nstreams;)
		if ((const uv_handle_t *)fuv_streams[i].s == h)
			fuv_streams[i] = fuv_streams[--fuv_nstreams];
		else
			i++;
	/* Pending requests are cancelled in the order they were made. */
	size_t keep = 0;
	for (size_t i = 0; i < fuv_nreqs; i++) {
		if (fuv_reqs[i].h == h) {
			if (fuv_ncancelled == FUV_MAX)
				abort();
			fuv_cancelled[fuv_ncancelled++] = fuv_reqs[i];
		} else {
			fuv_reqs[keep++] = fuv_reqs[i];
		}
	}
	fuv_nreqs = keep;
	/* Records of what it sent stay, but must not name a freed handle. */
	for (size_t i = 0; i < fuv_nsent; i++)
		if (fuv_sent(i)->h == h)
			fuv_sent(i)->h = NULL;
}

/* ---- the seams ---------------------------------------------------------- */

uint64_t uv_now(const uv_loop_t *loop)
{
	(void)loop;
	return fuv_now;
}

int uv_timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t timeout, uint64_t repeat)
{
	if (!cb || repeat || uv_is_closing((uv_handle_t *)h))
		return UV_EINVAL; /* nothing here repeats */
	fuv_timer_remove(h);
	if (fuv_ntimers == FUV_MAX)
		abort();
	uint64_t due = fuv_now + timeout < fuv_now ? UINT64_MAX : fuv_now + timeout;
	fuv_timers[fuv_ntimers++] = (struct fuv_timer){ h, cb, due, fuv_order++ };
	return 0;
}

int uv_timer_stop(uv_timer_t *h)
{
	fuv_timer_remove(h);
	return 0;
}

void uv_close(uv_handle_t *h, uv_close_cb cb)
{
	static void (*real)(uv_handle_t *, uv_close_cb);
	if (!real) {
		real = (void (*)(uv_handle_t *, uv_close_cb))dlsym(RTLD_NEXT, "uv_close");
		if (!real)
			abort();
	}
	fuv_forget(h);
	real(h, cb);
}

int uv_udp_bind(uv_udp_t *h, const struct sockaddr *addr, unsigned flags)
{
	(void)h;
	(void)addr;
	(void)flags;
	return fuv_take_fail(FUV_UDP_BIND);
}

int uv_udp_connect(uv_udp_t *h, const struct sockaddr *addr)
{
	int e = fuv_take_fail(FUV_UDP_CONNECT);
	if (e)
		return e;
	struct fuv_udp *u = fuv_udp_find(h, true);
	if (!addr) {
		u->connected = false;
		return 0;
	}
	if (u->connected)
		return UV_EISCONN;
	u->connected = true;
	memcpy(&u->peer, addr,
	       addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in));
	return 0;
}

int uv_udp_recv_start(uv_udp_t *h, uv_alloc_cb alloc_cb, uv_udp_recv_cb recv_cb)
{
	if (!alloc_cb || !recv_cb)
		return UV_EINVAL;
	int e = fuv_take_fail(FUV_UDP_RECV_START);
	if (e)
		return e;
	struct fuv_udp *u = fuv_udp_find(h, true);
	if (u->recv)
		return UV_EALREADY;
	u->alloc = alloc_cb;
	u->recv = recv_cb;
	return 0;
}

int uv_udp_recv_stop(uv_udp_t *h)
{
	struct fuv_udp *u = fuv_udp_find(h, false);
	if (u)
		u->recv = NULL;
	return 0;
}

int uv_udp_try_send(uv_udp_t *h, const uv_buf_t bufs[], unsigned nbufs, const struct sockaddr *addr)
{
	struct fuv_udp *u = fuv_udp_find(h, false);
	bool connected = u && u->connected;
	if (!connected && !addr)
		return UV_EDESTADDRREQ;
	if (connected && addr)
		return UV_EISCONN;
	int e = fuv_take_fail(FUV_UDP_SEND);
	if (e)
		return e;
	fuv_msg_add((uv_handle_t *)h, false, addr ? addr : (const struct sockaddr *)&u->peer, bufs,
		    nbufs);
	return (int)fuv_sent(fuv_nsent - 1)->len;
}

int uv_tcp_connect(uv_connect_t *req, uv_tcp_t *h, const struct sockaddr *addr, uv_connect_cb cb)
{
	(void)addr;
	int e = fuv_take_fail(FUV_TCP_CONNECT);
	if (e)
		return e;
	if (fuv_nreqs == FUV_MAX)
		abort();
	req->handle = (uv_stream_t *)h;
	fuv_reqs[fuv_nreqs++] =
		(struct fuv_req){ .req = req, .h = (uv_handle_t *)h, .cb.connect = cb };
	return 0;
}

int uv_read_start(uv_stream_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
	if (!alloc_cb || !read_cb)
		return UV_EINVAL;
	int e = fuv_take_fail(FUV_READ_START);
	if (e)
		return e;
	for (size_t i = 0; i < fuv_nstreams; i++)
		if (fuv_streams[i].s == s)
			return UV_EALREADY;
	if (fuv_nstreams == FUV_MAX)
		abort();
	fuv_streams[fuv_nstreams++] = (struct fuv_stream){ s, alloc_cb, read_cb };
	return 0;
}

int uv_write(uv_write_t *req, uv_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, uv_write_cb cb)
{
	int e = fuv_take_fail(FUV_WRITE);
	if (e)
		return e;
	if (fuv_nreqs == FUV_MAX)
		abort();
	req->handle = s;
	fuv_msg_add((uv_handle_t *)s, true, NULL, bufs, nbufs);
	fuv_reqs[fuv_nreqs++] = (struct fuv_req){
		.req = req, .h = (uv_handle_t *)s, .write = true, .cb.write = cb
	};
	return 0;
}

/* ---- driving ------------------------------------------------------------- */

/* A fresh input: the clock at a fixed start, the random sequence restarted,
 * no failures asked for. */
static inline void fuv_reset(void)
{
	memset(fuv_fail_next, 0, sizeof(fuv_fail_next));
	fuv_now = 1000000;
	fuv_order = 0;
	fuv_rng = 0x9e3779b97f4a7c15ULL;
}

/* The end of an input, after the code under test was freed and fuv_pump
 * ran: anything still recorded belongs to a handle that was never closed
 * (a leak libuv would keep polling). The records of what was sent are
 * freed. */
static inline void fuv_finish(void)
{
	if (fuv_ntimers || fuv_nudps || fuv_nstreams || fuv_nreqs || fuv_ncancelled) {
		fprintf(stderr,
			"fuzz_uv: %zu timers, %zu UDP, %zu streams, %zu requests left "
			"after an input (handles not closed)\n",
			fuv_ntimers, fuv_nudps, fuv_nstreams, fuv_nreqs + fuv_ncancelled);
		abort();
	}
	for (size_t i = 0; i < fuv_nsent; i++)
		free(fuv_sent(i)->data);
	fuv_nsent = 0;
	fuv_sent_head = 0;
}

/* The timers started since fuv_order was `order` are never fired by
 * fuv_advance (until their handle is closed). */
static inline void fuv_hold_since(uint64_t order)
{
	for (size_t i = 0; i < fuv_ntimers; i++)
		if (fuv_timers[i].order >= order && !fuv_is_held(fuv_timers[i].h)) {
			if (fuv_nheld == sizeof(fuv_held) / sizeof(fuv_held[0]))
				abort();
			fuv_held[fuv_nheld++] = fuv_timers[i].h;
		}
}

/* Moves the clock `ms` on, firing the timers that fall due (a callback may
 * start, stop or close timers). A timer re-armed to fire at once, over and
 * over, would spin the real loop: that aborts. */
static inline void fuv_advance(uint64_t ms)
{
	uint64_t end = fuv_now + ms < fuv_now ? UINT64_MAX : fuv_now + ms;
	unsigned spins = 0;
	for (;;) {
		size_t best = FUV_MAX;
		for (size_t i = 0; i < fuv_ntimers; i++) {
			const struct fuv_timer *t = &fuv_timers[i];
			if (t->due > end || fuv_is_held(t->h))
				continue;
			if (best == FUV_MAX || t->due < fuv_timers[best].due ||
			    (t->due == fuv_timers[best].due && t->order < fuv_timers[best].order))
				best = i;
		}
		if (best == FUV_MAX)
			break;
		struct fuv_timer t = fuv_timers[best];
		fuv_timers[best] = fuv_timers[--fuv_ntimers];
		if (t.due > fuv_now) {
			fuv_now = t.due;
			spins = 0;
		} else if (++spins > 10000) {
			fprintf(stderr, "fuzz_uv: a timer keeps firing without the clock moving\n");
			abort();
		}
		t.cb(t.h);
	}
	fuv_now = end;
}

/* The loop's turn: cancelled requests get UV_ECANCELED, then libuv runs the
 * close callbacks (and those of handles closed from them). */
static inline void fuv_pump(uv_loop_t *loop)
{
	for (int round = 0; round < 64; round++) {
		while (fuv_ncancelled > 0) {
			struct fuv_req r = fuv_cancelled[0];
			memmove(fuv_cancelled, fuv_cancelled + 1, sizeof(r) * --fuv_ncancelled);
			if (r.write && r.cb.write)
				r.cb.write(r.req, UV_ECANCELED);
			else if (!r.write && r.cb.connect)
				r.cb.connect(r.req, UV_ECANCELED);
		}
		if (!uv_loop_alive(loop))
			return;
		uv_run(loop, UV_RUN_NOWAIT);
	}
}

/* The i-th reading UDP socket (i modulo their number), or NULL. */
static inline uv_udp_t *fuv_udp_reader(size_t i)
{
	size_t n = 0;
	for (size_t k = 0; k < fuv_nudps; k++)
		n += fuv_udps[k].recv != NULL;
	if (n == 0)
		return NULL;
	i %= n;
	for (size_t k = 0; k < fuv_nudps; k++)
		if (fuv_udps[k].recv && i-- == 0)
			return fuv_udps[k].h;
	return NULL;
}

/* A datagram for `h` (reading) from `from` (for a connected socket: its
 * peer, whatever `from` says, as the kernel filters), or with `err` < 0 a
 * receive error, or with `data` NULL the "nothing more to read" call.
 * Larger than the buffer the alloc callback gives: cut, UV_UDP_PARTIAL. */
static inline void fuv_udp_deliver(uv_udp_t *h, int err, const uint8_t *data, size_t len,
				   const struct sockaddr *from)
{
	struct fuv_udp *u = fuv_udp_find(h, false);
	if (!u || !u->recv)
		return;
	uv_udp_recv_cb recv = u->recv;
	uv_buf_t buf = uv_buf_init(NULL, 0);
	u->alloc((uv_handle_t *)h, 65536, &buf);
	if (!buf.base || buf.len == 0) {
		recv(h, UV_ENOBUFS, &buf, NULL, 0);
		return;
	}
	if (err < 0) {
		recv(h, err, &buf, NULL, 0);
		return;
	}
	if (!data) {
		recv(h, 0, &buf, NULL, 0);
		return;
	}
	/* The callbacks may have closed it. */
	if (!(u = fuv_udp_find(h, false)))
		return;
	size_t n = len < buf.len ? len : buf.len;
	memcpy(buf.base, data, n);
	struct sockaddr_storage src;
	const struct sockaddr *sa = u->connected ? (const struct sockaddr *)&u->peer : from;
	memset(&src, 0, sizeof(src));
	memcpy(&src, sa,
	       sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					 : sizeof(struct sockaddr_in));
	recv(h, (ssize_t)n, &buf, (const struct sockaddr *)&src,
	     len > buf.len ? UV_UDP_PARTIAL : 0);
}

/* The i-th reading stream (modulo), or NULL. */
static inline uv_stream_t *fuv_stream_reader(size_t i)
{
	return fuv_nstreams ? fuv_streams[i % fuv_nstreams].s : NULL;
}

static struct fuv_stream *fuv_stream_find(const uv_stream_t *s)
{
	for (size_t i = 0; i < fuv_nstreams; i++)
		if (fuv_streams[i].s == s)
			return &fuv_streams[i];
	return NULL;
}

/* Bytes arriving on a reading stream, or with `err` < 0 (UV_EOF, a reset)
 * the end of it. Read in the pieces the alloc callback asks for; stops
 * when the stream is closed from a callback. */
static inline void fuv_tcp_deliver(uv_stream_t *s, int err, const uint8_t *data, size_t len)
{
	struct fuv_stream *st;
	do {
		if (!(st = fuv_stream_find(s)))
			return;
		uv_read_cb read = st->read;
		uv_buf_t buf = uv_buf_init(NULL, 0);
		st->alloc((uv_handle_t *)s, 65536, &buf);
		if (!fuv_stream_find(s))
			return;
		if (!buf.base || buf.len == 0) {
			read(s, UV_ENOBUFS, &buf);
			return;
		}
		if (err < 0) {
			read(s, err, &buf);
			return;
		}
		size_t n = len < buf.len ? len : buf.len;
		memcpy(buf.base, data, n);
		read(s, (ssize_t)n, &buf);
		data += n;
		len -= n;
	} while (len > 0);
}

/* Completes the i-th pending connect or write (modulo their number) with
 * `status`. Returns false when none is pending. */
static inline bool fuv_req_done(bool write, size_t i, int status)
{
	size_t n = 0;
	for (size_t k = 0; k < fuv_nreqs; k++)
		n += fuv_reqs[k].write == write;
	if (n == 0)
		return false;
	i %= n;
	for (size_t k = 0; k < fuv_nreqs; k++) {
		if (fuv_reqs[k].write != write || i-- != 0)
			continue;
		struct fuv_req r = fuv_reqs[k];
		memmove(fuv_reqs + k, fuv_reqs + k + 1, sizeof(r) * (fuv_nreqs - k - 1));
		fuv_nreqs--;
		if (write && r.cb.write)
			r.cb.write(r.req, status);
		else if (!write && r.cb.connect)
			r.cb.connect(r.req, status);
		return true;
	}
	return false;
}

static inline bool fuv_connect_done(size_t i, int status)
{
	return fuv_req_done(false, i, status);
}

static inline bool fuv_write_done(size_t i, int status)
{
	return fuv_req_done(true, i, status);
}

#endif
