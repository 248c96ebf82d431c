/* TCP and UDP to any destination: a hand-driven client speaks raw segments
 * to the netstack, which terminates them and exposes streams/datagrams. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "inet_testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <string.h>
#include <time.h>

#include "netstack/netstack.h"
#include "netstack/netstack_testing.h"

#define TUN4 "10.77.0.1"
#define PEER4 "10.77.0.2"
#define PEER4B "10.77.0.3"
#define TUN6 "fd77::1"
#define PEER6 "fd77::2"
#define FAR4 "93.184.216.34"
#define FAR6 "2606:4700::1111"

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10

/* ---- Checksums and byte helpers (independent of lwIP) -------------------- */

/* Sum of the pseudo-header for an upper-layer packet of `ulen` bytes. */
static uint32_t pseudo(int v6, const uint8_t *src, const uint8_t *dst, size_t ulen, uint8_t proto)
{
	size_t alen = v6 ? 16 : 4;
	uint32_t acc = sum16(sum16(0, src, alen), dst, alen);
	uint8_t tail[4] = { (uint8_t)(ulen >> 8), (uint8_t)ulen, 0, proto };
	if (v6) {
		uint8_t t6[8] = { 0, 0, (uint8_t)(ulen >> 8), (uint8_t)ulen, 0, 0, 0, proto };
		return sum16(acc, t6, 8);
	}
	return sum16(acc, tail, 4);
}

/* IP header for `ulen` bytes of `proto` from src to dst; returns its length. */
static size_t build_ip(uint8_t *pkt, int v6, const char *src, const char *dst, uint8_t proto,
		       size_t ulen)
{
	uint8_t s[16], d[16];
	assert_int_equal(inet_pton(v6 ? AF_INET6 : AF_INET, src, s), 1);
	assert_int_equal(inet_pton(v6 ? AF_INET6 : AF_INET, dst, d), 1);
	return inet_ip_header(pkt, v6, s, d, proto, ulen);
}

/* ---- A raw TCP client ------------------------------------------------------ */

struct client {
	int v6;
	const char *src, *dst;
	uint16_t sport, dport;
	uint32_t seq; /* next sequence number we send */
	uint32_t ack; /* next sequence number we expect */
};

static size_t build_seg(uint8_t *pkt, const struct client *c, uint8_t flags, uint16_t win,
			const uint8_t *opt, size_t optlen, const void *data, size_t len)
{
	size_t thl = 20 + optlen;
	size_t hl = build_ip(pkt, c->v6, c->src, c->dst, 6, thl + len);
	uint8_t *t = pkt + hl;
	memset(t, 0, thl);
	put16(t, c->sport);
	put16(t + 2, c->dport);
	put32(t + 4, c->seq);
	put32(t + 8, (flags & F_ACK) ? c->ack : 0);
	t[12] = (uint8_t)((thl / 4) << 4);
	t[13] = flags;
	put16(t + 14, win);
	if (optlen > 0)
		memcpy(t + 20, opt, optlen);
	if (len > 0)
		memcpy(t + thl, data, len);
	const uint8_t *s = pkt + (c->v6 ? 8 : 12), *d = pkt + (c->v6 ? 24 : 16);
	put16(t + 16, fold(sum16(pseudo(c->v6, s, d, thl + len, 6), t, thl + len)));
	return hl + thl + len;
}

/* ---- What the netstack emitted ------------------------------------------- */

#define MAX_OUT 128

struct seg {
	int v6;
	const uint8_t *src, *dst; /* addresses in the packet */
	uint8_t proto;
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	const uint8_t *opt;
	size_t optlen;
	const uint8_t *data;
	size_t len;
};

struct fixture {
	uv_loop_t loop;
	struct netstack *ns;
	int nout;
	size_t outlen[MAX_OUT];
	uint8_t out[MAX_OUT][2048];
	/* tcp */
	struct netstack_tcp *conn;
	int accepts;
	int accept_rc;
	struct sockaddr_storage client, dest;
	uint8_t rx[8192];
	size_t rxlen;
	int fins;
	size_t acked;
	int closed;
	int closed_err;
	const char *close_on; /* close from inside recv when data contains this */
	int pause_in_recv;    /* pause again from inside every data recv */
	size_t rx_at_close;   /* rxlen and fins when closed ran */
	int fins_at_close;
	/* udp */
	int udps;
	struct sockaddr_storage uclient, udest;
	uint8_t udata[256];
	size_t ulen;
};

static void on_output(void *ctx, const uint8_t *pkt, size_t len)
{
	struct fixture *f = ctx;
	assert_true(f->nout < MAX_OUT);
	assert_true(len <= sizeof f->out[0]);
	memcpy(f->out[f->nout], pkt, len);
	f->outlen[f->nout++] = len;
}

/* Parses emitted packet i and checks its IP and TCP/UDP checksums. */
static struct seg parse_out(struct fixture *f, int i)
{
	assert_true(i < f->nout);
	const uint8_t *p = f->out[i];
	size_t len = f->outlen[i], hl;
	struct seg s = { 0 };
	s.v6 = (p[0] >> 4) == 6;
	if (s.v6) {
		hl = 40;
		assert_int_equal(40 + get16(p + 4), len);
		s.proto = p[6];
		s.src = p + 8;
		s.dst = p + 24;
	} else {
		hl = (size_t)(p[0] & 15) * 4;
		assert_int_equal(get16(p + 2), len);
		assert_int_equal(fold(sum16(0, p, hl)), 0);
		s.proto = p[9];
		s.src = p + 12;
		s.dst = p + 16;
	}
	const uint8_t *t = p + hl;
	size_t ulen = len - hl;
	assert_int_equal(fold(sum16(pseudo(s.v6, s.src, s.dst, ulen, s.proto), t, ulen)), 0);
	s.sport = get16(t);
	s.dport = get16(t + 2);
	if (s.proto == 17) {
		assert_int_equal(get16(t + 4), ulen);
		s.data = t + 8;
		s.len = ulen - 8;
		return s;
	}
	assert_int_equal(s.proto, 6);
	s.seq = get32(t + 4);
	s.ack = get32(t + 8);
	size_t thl = (size_t)(t[12] >> 4) * 4;
	s.flags = t[13];
	s.win = get16(t + 14);
	s.opt = t + 20;
	s.optlen = thl - 20;
	s.data = t + thl;
	s.len = ulen - thl;
	return s;
}

/* The value of TCP option `kind` in s, or NULL. */
static const uint8_t *tcp_option(const struct seg *s, uint8_t kind)
{
	for (size_t o = 0; o < s->optlen;) {
		uint8_t k = s->opt[o];
		if (k == 0)
			break;
		if (k == 1) {
			o++;
			continue;
		}
		if (k == kind)
			return s->opt + o + 2;
		o += s->opt[o + 1];
	}
	return NULL;
}

static void on_recv(void *arg, const uint8_t *data, size_t len)
{
	struct fixture *f = arg;
	if (len == 0) {
		assert_null(data);
		f->fins++;
		return;
	}
	assert_true(f->rxlen + len <= sizeof f->rx);
	memcpy(f->rx + f->rxlen, data, len);
	f->rxlen += len;
	if (f->pause_in_recv)
		netstack_tcp_pause(f->conn);
	if (f->close_on != NULL && memmem(data, len, f->close_on, strlen(f->close_on)) != NULL) {
		netstack_tcp_close(f->conn);
		f->conn = NULL;
	}
}

static void on_sent(void *arg, size_t len)
{
	struct fixture *f = arg;
	f->acked += len;
}

static void on_closed(void *arg, int err)
{
	struct fixture *f = arg;
	f->closed++;
	f->closed_err = err;
	f->rx_at_close = f->rxlen;
	f->fins_at_close = f->fins;
	f->conn = NULL;
}

static int on_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
		     const struct sockaddr *dest)
{
	struct fixture *f = ctx;
	f->accepts++;
	memcpy(&f->client, client,
	       client->sa_family == AF_INET ? sizeof(struct sockaddr_in)
					    : sizeof(struct sockaddr_in6));
	memcpy(&f->dest, dest,
	       dest->sa_family == AF_INET ? sizeof(struct sockaddr_in)
					  : sizeof(struct sockaddr_in6));
	if (f->accept_rc != 0)
		return f->accept_rc;
	static const struct stream_cb ops = {
		.recv = on_recv,
		.sent = on_sent,
		.closed = on_closed,
	};
	netstack_tcp_set_ops(conn, &ops, f);
	f->conn = conn;
	return 0;
}

static void on_udp(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
		   const uint8_t *data, size_t len)
{
	struct fixture *f = ctx;
	f->udps++;
	memcpy(&f->uclient, client, sizeof(struct sockaddr_in6));
	memcpy(&f->udest, dest, sizeof(struct sockaddr_in6));
	assert_true(len <= sizeof f->udata);
	memcpy(f->udata, data, len);
	f->ulen = len;
}

static int setup(void **state)
{
	static struct fixture f;
	memset(&f, 0, sizeof f);
	assert_int_equal(uv_loop_init(&f.loop), 0);
	struct netstack_config cfg = { .mtu = 1420 };
	assert_int_equal(inet_pton(AF_INET, TUN4, &cfg.addr4), 1);
	assert_int_equal(inet_pton(AF_INET6, TUN6, &cfg.addr6), 1);
	struct netstack_ops ops = { .output = on_output,
				    .tcp_accept = on_accept,
				    .udp_recv = on_udp };
	f.ns = netstack_new(&f.loop, &cfg, &ops, &f);
	assert_non_null(f.ns);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int closed = f->closed;
	netstack_free(f->ns);
	assert_int_equal(f->closed, closed); /* no callbacks while freeing */
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	return 0;
}

static void send_seg(struct fixture *f, struct client *c, uint8_t flags, const void *data,
		     size_t len)
{
	uint8_t pkt[2048];
	netstack_input(f->ns, pkt, build_seg(pkt, c, flags, 0xffff, NULL, 0, data, len));
	c->seq += (uint32_t)len + ((flags & (F_SYN | F_FIN)) ? 1 : 0);
}

/* SYN (MSS 1380, window scale 7), SYN|ACK checked, ACK: returns the
 * netstack's initial sequence number + 1. */
static void handshake(struct fixture *f, struct client *c, uint16_t want_mss)
{
	static const uint8_t opt[8] = { 2, 4, 0x05, 0x64, 1, 3, 3, 7 };
	uint8_t pkt[256];
	int before = f->nout;
	netstack_input(f->ns, pkt, build_seg(pkt, c, F_SYN, 0xffff, opt, sizeof opt, NULL, 0));
	c->seq++;
	assert_int_equal(f->nout, before + 1);
	struct seg s = parse_out(f, before);
	assert_int_equal(s.flags, F_SYN | F_ACK);
	assert_int_equal(s.sport, c->dport);
	assert_int_equal(s.dport, c->sport);
	assert_int_equal(s.ack, c->seq);
	/* Source: the address the client dialled; destination: the client. */
	uint8_t want[16];
	assert_int_equal(inet_pton(c->v6 ? AF_INET6 : AF_INET, c->dst, want), 1);
	assert_memory_equal(s.src, want, c->v6 ? 16 : 4);
	assert_int_equal(inet_pton(c->v6 ? AF_INET6 : AF_INET, c->src, want), 1);
	assert_memory_equal(s.dst, want, c->v6 ? 16 : 4);
	const uint8_t *mss = tcp_option(&s, 2);
	assert_non_null(mss);
	assert_int_equal(get16(mss), want_mss);
	const uint8_t *ws = tcp_option(&s, 3);
	assert_non_null(ws);
	assert_int_equal(ws[0], 5); /* TCP_RCV_SCALE */
	c->ack = s.seq + 1;
	send_seg(f, c, F_ACK, NULL, 0);
}

/* ---- Tests ------------------------------------------------------------------ */

static void test_tcp4_any_destination_stream(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, FAR4, 40000, 443, 1000, 0 };
	handshake(f, &c, 1380);
	assert_int_equal(f->accepts, 1);
	assert_non_null(f->conn);
	const struct sockaddr_in *cl = (const struct sockaddr_in *)&f->client;
	const struct sockaddr_in *de = (const struct sockaddr_in *)&f->dest;
	char buf[64];
	assert_int_equal(cl->sin_family, AF_INET);
	assert_string_equal(inet_ntop(AF_INET, &cl->sin_addr, buf, sizeof buf), PEER4);
	assert_int_equal(ntohs(cl->sin_port), 40000);
	assert_string_equal(inet_ntop(AF_INET, &de->sin_addr, buf, sizeof buf), FAR4);
	assert_int_equal(ntohs(de->sin_port), 443);

	/* Client -> upper layer. */
	static const char req[] = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
	send_seg(f, &c, F_PSH | F_ACK, req, strlen(req));
	assert_int_equal(f->rxlen, strlen(req));
	assert_memory_equal(f->rx, req, strlen(req));

	/* Upper layer -> client. */
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	int before = f->nout;
	assert_true(netstack_tcp_writable(f->conn) >= 1024 * 1024 - 1);
	assert_int_equal(netstack_tcp_write(f->conn, (const uint8_t *)resp, strlen(resp)),
			 strlen(resp));
	assert_true(f->nout > before);
	struct seg s = parse_out(f, f->nout - 1);
	assert_int_equal(s.len, strlen(resp));
	assert_memory_equal(s.data, resp, strlen(resp));
	assert_int_equal(s.seq, c.ack);
	assert_int_equal(s.ack, c.seq); /* it also acknowledges the request */
	assert_int_equal(s.sport, 443);
	c.ack += (uint32_t)s.len;
	send_seg(f, &c, F_ACK, NULL, 0);
	assert_int_equal(f->acked, strlen(resp));

	/* Client half-closes; we still write, then close our side. */
	send_seg(f, &c, F_FIN | F_ACK, NULL, 0);
	assert_int_equal(f->fins, 1);
	assert_int_equal(netstack_tcp_write(f->conn, (const uint8_t *)"bye", 3), 3);
	assert_int_equal(netstack_tcp_shutdown(f->conn), 0);
	s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_FIN);
	c.ack = s.seq + (uint32_t)s.len + 1;
	send_seg(f, &c, F_ACK, NULL, 0);
	assert_int_equal(f->closed, 1); /* both directions closed: lwIP frees it */
	assert_int_equal(f->closed_err, 0);

	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_accepted, 1);
	assert_int_equal(st.tcp_active, 0);
	assert_int_equal(st.tcp_listeners, 1);
}

static void test_tcp6_any_destination_reset_by_client(void **state)
{
	struct fixture *f = *state;
	struct client c = { 1, PEER6, FAR6, 50000, 80, 7, 0 };
	handshake(f, &c, 1360); /* MTU 1420 - 40 - 20 */
	assert_int_equal(f->accepts, 1);
	const struct sockaddr_in6 *de = (const struct sockaddr_in6 *)&f->dest;
	char buf[64];
	assert_int_equal(de->sin6_family, AF_INET6);
	assert_string_equal(inet_ntop(AF_INET6, &de->sin6_addr, buf, sizeof buf), FAR6);
	assert_int_equal(ntohs(de->sin6_port), 80);

	send_seg(f, &c, F_PSH | F_ACK, "ping", 4);
	assert_int_equal(f->rxlen, 4);
	send_seg(f, &c, F_RST | F_ACK, NULL, 0);
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->closed_err, -ECONNRESET);
	assert_null(f->conn);
}

static void test_tcp_refused_and_aborted(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, FAR4, 40001, 22, 1, 0 };
	f->accept_rc = -1;
	handshake(f, &c, 1380);
	assert_int_equal(f->accepts, 1);
	struct seg s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_RST);

	/* Accepted, then aborted by the upper layer: a reset goes out and no
     * callback follows. */
	f->accept_rc = 0;
	struct client c2 = { 0, PEER4, FAR4, 40002, 22, 1, 0 };
	handshake(f, &c2, 1380);
	assert_non_null(f->conn);
	netstack_tcp_abort(f->conn);
	f->conn = NULL;
	s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_RST);
	assert_int_equal(f->closed, 0);

	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_refused, 1);
	assert_int_equal(st.tcp_accepted, 1);
	assert_int_equal(st.tcp_active, 0);
}

/* Beyond max_tcp, connections are reset after the handshake. */
static void test_tcp_max_connections(void **state)
{
	struct fixture *f = *state;
	netstack_free(f->ns);
	struct netstack_config cfg = { .mtu = 1420, .max_tcp = 2 };
	assert_int_equal(inet_pton(AF_INET, TUN4, &cfg.addr4), 1);
	struct netstack_ops ops = { .output = on_output, .tcp_accept = on_accept };
	f->ns = netstack_new(&f->loop, &cfg, &ops, f);
	assert_non_null(f->ns);
	for (uint16_t i = 0; i < 3; i++) {
		struct client c = { 0, PEER4, FAR4, (uint16_t)(42000 + i), 443, 1, 0 };
		handshake(f, &c, 1380);
	}
	assert_int_equal(f->accepts, 2);
	struct seg s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_RST);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_active, 2);
	assert_int_equal(st.tcp_refused, 1);
	/* One closes: room for another. */
	netstack_tcp_abort(f->conn);
	struct client c = { 0, PEER4, FAR4, 42010, 443, 1, 0 };
	handshake(f, &c, 1380);
	assert_int_equal(f->accepts, 3);
}

/* Half-open connections per port are capped (TCP_DEFAULT_LISTEN_BACKLOG):
 * SYNs past it get no answer; completing one handshake makes room. */
static void test_tcp_syn_backlog(void **state)
{
	struct fixture *f = *state;
	struct client first = { 0, PEER4, FAR4, 43000, 443, 1, 0 };
	send_seg(f, &first, F_SYN, NULL, 0);
	struct seg s = parse_out(f, 0);
	first.ack = s.seq + 1;
	for (uint16_t i = 1; i < 70; i++) {
		struct client c = { 0, PEER4, FAR4, (uint16_t)(43000 + i), 443, 1, 0 };
		send_seg(f, &c, F_SYN, NULL, 0);
	}
	assert_int_equal(f->nout, 64);
	send_seg(f, &first, F_ACK, NULL, 0);
	assert_int_equal(f->accepts, 1);
	struct client late = { 0, PEER4, FAR4, 43100, 443, 1, 0 };
	send_seg(f, &late, F_SYN, NULL, 0);
	assert_int_equal(f->nout, 65);
}

/* While paused, data is held and the advertised window shrinks by it. */
/* A source that sends SYNs it never completes holds at most
 * NETSTACK_HALF_OPEN_PER_SOURCE half-open connections over all ports: it
 * cannot fill a port's backlog for other peers (lwIP's backlog is per port,
 * and a full one dropped every SYN to it), nor keep a pcb for each port. */
static void test_tcp_half_open_per_source(void **state)
{
	struct fixture *f = *state;
	for (uint16_t i = 0; i < 100; i++) {
		struct client c = { 0, PEER4, FAR4, (uint16_t)(44000 + i), 443, 1, 0 };
		send_seg(f, &c, F_SYN, NULL, 0);
	}
	assert_int_equal(f->nout, NETSTACK_HALF_OPEN_PER_SOURCE);
	struct client other_port = { 0, PEER4, FAR4, 44200, 80, 1, 0 };
	send_seg(f, &other_port, F_SYN, NULL, 0);
	assert_int_equal(f->nout, NETSTACK_HALF_OPEN_PER_SOURCE);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_syn_limited, 100 - NETSTACK_HALF_OPEN_PER_SOURCE + 1);

	/* Another source still gets through to the same port, end to end. */
	struct client b = { 0, PEER4B, FAR4, 44300, 443, 1, 0 };
	handshake(f, &b, 1380);
	assert_int_equal(f->accepts, 1);

	/* The half-open ones expire (SYN-ACK retransmissions give up) and the
     * source may open connections again. */
	for (int i = 0; i < 300; i++) { /* 300 s, the retransmissions of each second */
		f->nout = 0;
		netstack__test_tcp_ticks(f->ns, 10);
	}
	int before = f->nout;
	struct client again = { 0, PEER4, FAR4, 44400, 443, 1, 0 };
	send_seg(f, &again, F_SYN, NULL, 0);
	assert_int_equal(f->nout, before + 1);
	struct seg s = parse_out(f, before);
	assert_int_equal(s.flags, F_SYN | F_ACK);
}

static void test_tcp_pause_resume(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, TUN4, 40003, 8080, 1, 0 };
	handshake(f, &c, 1380);
	netstack_tcp_pause(f->conn);
	uint8_t data[1000];
	for (int i = 0; i < 2; i++) {
		memset(data, 'a' + i, sizeof data);
		send_seg(f, &c, F_ACK, data, sizeof data);
	}
	assert_int_equal(f->rxlen, 0);
	/* lwIP acks every second segment at once. */
	struct seg s = parse_out(f, f->nout - 1);
	assert_int_equal(s.ack, c.seq);
	assert_int_equal((uint32_t)s.win << 5, ((1024 * 1024 - 2000) >> 5) << 5);

	netstack_tcp_resume(f->conn);
	assert_int_equal(f->rxlen, 2000);
	assert_int_equal(f->rx[0], 'a');
	assert_int_equal(f->rx[1999], 'b');
	send_seg(f, &c, F_PSH | F_ACK, "x", 1);
	s = parse_out(f, f->nout - 1);
	assert_int_equal(f->rxlen, 2001);
	(void)s;
}

/* Closing from inside the recv callback sends a FIN, and nothing breaks
 * when later segments arrive for the detached connection. */
static void test_tcp_close_inside_recv(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, FAR4, 40004, 443, 1, 0 };
	handshake(f, &c, 1380);
	f->close_on = "quit";
	send_seg(f, &c, F_PSH | F_ACK, "quit", 4);
	assert_null(f->conn);
	struct seg s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_FIN);
	assert_int_equal(s.ack, c.seq);
	send_seg(f, &c, F_PSH | F_ACK, "more", 4); /* lwIP's default handler takes it */
	c.ack = s.seq + 1;
	send_seg(f, &c, F_FIN | F_ACK, NULL, 0);
	assert_int_equal(f->closed, 0);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_active, 0);
}

/* netstack_free with live connections: no callbacks, nothing leaked. */
static void test_tcp_free_with_open_connections(void **state)
{
	struct fixture *f = *state;
	for (uint16_t i = 0; i < 3; i++) {
		struct client c = { i & 1,
				    i & 1 ? PEER6 : PEER4,
				    i & 1 ? FAR6 : FAR4,
				    (uint16_t)(41000 + i),
				    (uint16_t)(1000 + i),
				    1,
				    0 };
		handshake(f, &c, i & 1 ? 1360 : 1380);
		send_seg(f, &c, F_PSH | F_ACK, "held", 4);
		netstack_tcp_pause(f->conn);
		send_seg(f, &c, F_PSH | F_ACK, "more", 4);
	}
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_active, 3);
	assert_int_equal(st.tcp_listeners, 3);
}

/* Not terminated: multicast destinations, and a plain reset for a segment
 * that opens nothing. */
static void test_tcp_not_terminated(void **state)
{
	struct fixture *f = *state;
	struct client m = { 0, PEER4, "224.0.0.251", 40005, 5353, 1, 0 };
	send_seg(f, &m, F_SYN, NULL, 0);
	assert_int_equal(f->nout, 0);
	struct client c = { 0, PEER4, FAR4, 40006, 9999, 1, 5 };
	send_seg(f, &c, F_ACK, NULL, 0);
	assert_int_equal(f->nout, 1);
	struct seg s = parse_out(f, 0);
	assert_true(s.flags & F_RST);
	assert_int_equal(f->accepts, 0);
}

/* The client sends data and FIN while the upper layer is paused; the upper
 * layer then shuts down its side and the client acknowledges that FIN
 * (CLOSE-WAIT -> LAST-ACK -> closed). lwIP acknowledged the held bytes long
 * ago: they and the FIN reach recv before closed(0), although the upper
 * layer is paused (and pauses again inside recv). */
static void test_tcp_closed_delivers_held_data(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, FAR4, 40020, 443, 1, 0 };
	handshake(f, &c, 1380);
	netstack_tcp_pause(f->conn);
	send_seg(f, &c, F_PSH | F_ACK, "held ", 5);
	send_seg(f, &c, F_PSH | F_ACK, "bytes", 5);
	send_seg(f, &c, F_FIN | F_ACK, NULL, 0);
	assert_int_equal(f->rxlen, 0);
	assert_int_equal(f->fins, 0);
	struct seg s = parse_out(f, f->nout - 1);
	assert_int_equal(s.ack, c.seq); /* data and FIN acknowledged */

	assert_int_equal(netstack_tcp_shutdown(f->conn), 0);
	s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_FIN);
	c.ack = s.seq + 1;
	f->pause_in_recv = 1;
	send_seg(f, &c, F_ACK, NULL, 0);
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->closed_err, 0);
	assert_int_equal(f->rx_at_close, 10);
	assert_memory_equal(f->rx, "held bytes", 10);
	assert_int_equal(f->fins_at_close, 1);
	assert_null(f->conn);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_active, 0);
}

/* The upper layer shut down first and the client acknowledged it
 * (FIN-WAIT-2); the client's data and FIN then arrive while paused: lwIP
 * moves to TIME-WAIT, which it ends alone (without a callback), so the
 * connection is reported closed at once, after the held data and the FIN.
 * TIME-WAIT then expires with nothing left pointing at the pcb. */
static void test_tcp_time_wait_closes(void **state)
{
	struct fixture *f = *state;
	struct client c = { 1, PEER6, FAR6, 40021, 443, 1, 0 };
	handshake(f, &c, 1360);
	assert_int_equal(netstack_tcp_shutdown(f->conn), 0);
	struct seg s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_FIN);
	c.ack = s.seq + 1;
	send_seg(f, &c, F_ACK, NULL, 0);
	assert_int_equal(f->closed, 0);

	netstack_tcp_pause(f->conn);
	send_seg(f, &c, F_FIN | F_PSH | F_ACK, "last words", 10);
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->closed_err, 0);
	assert_int_equal(f->rx_at_close, 10);
	assert_memory_equal(f->rx, "last words", 10);
	assert_int_equal(f->fins_at_close, 1);
	assert_null(f->conn);
	s = parse_out(f, f->nout - 1);
	assert_int_equal(s.ack, c.seq);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_active, 0);

	/* A retransmitted FIN in TIME-WAIT is acknowledged again, quietly. */
	c.seq--;
	int before = f->nout;
	send_seg(f, &c, F_FIN | F_ACK, NULL, 0);
	assert_int_equal(f->nout, before + 1);
	/* TIME-WAIT (60 s) of timers: the pcb goes, no callback. */
	netstack__test_tcp_ticks(f->ns, NETSTACK_TCP_TIME_WAIT_MS / NETSTACK_TCP_TICK_MS + 2);
	assert_int_equal(f->closed, 1);
	before = f->nout;
	send_seg(f, &c, F_ACK, NULL, 0);
	s = parse_out(f, before); /* nothing knows the connection: reset */
	assert_true(s.flags & F_RST);
}

/* Simultaneous close: our FIN crosses the client's (CLOSING). Both
 * directions are closed: closed(0) at once; lwIP finishes alone. */
static void test_tcp_closing_closes(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, FAR4, 40022, 443, 1, 0 };
	handshake(f, &c, 1380);
	assert_int_equal(netstack_tcp_shutdown(f->conn), 0);
	struct seg s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_FIN);
	send_seg(f, &c, F_FIN | F_ACK, NULL, 0); /* does not acknowledge our FIN */
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->closed_err, 0);
	assert_int_equal(f->fins_at_close, 1);
	c.ack = s.seq + 1;
	send_seg(f, &c, F_ACK, NULL, 0);
	netstack__test_tcp_ticks(f->ns, NETSTACK_TCP_TIME_WAIT_MS / NETSTACK_TCP_TICK_MS + 2);
	assert_int_equal(f->closed, 1);
}

/* Runs TCP timer ticks one at a time until the connection closes or
 * `max` ticks passed; records the tick (from 1) of every keepalive probe:
 * an empty ACK one below what we sent last (snd_nxt - 1). Returns the tick
 * of the close, 0 if none. */
static unsigned tick_until_closed(struct fixture *f, uint32_t snd_nxt, unsigned max,
				  unsigned *probes, int *nprobes)
{
	*nprobes = 0;
	for (unsigned t = 1; t <= max; t++) {
		f->nout = 0;
		netstack__test_tcp_ticks(f->ns, 1);
		for (int i = 0; i < f->nout; i++) {
			struct seg s = parse_out(f, i);
			if (s.flags == F_ACK && s.len == 0 && s.seq == snd_nxt - 1) {
				assert_true(*nprobes < 16);
				probes[(*nprobes)++] = t;
			}
		}
		if (f->closed)
			return t;
	}
	return 0;
}

/* A client that vanishes without FIN or RST: after 120 s of silence one
 * probe every 10 s; an answer starts the idle time again; six unanswered
 * probes reset the connection (-ECONNABORTED). */
static void test_tcp_keepalive(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, FAR4, 40030, 443, 1, 0 };
	handshake(f, &c, 1380);
	const unsigned per_s = 1000 / NETSTACK_TCP_TICK_MS;
	unsigned probes[16];
	int n;

	/* Not before 120 s of silence. */
	assert_int_equal(tick_until_closed(f, c.ack, 120 * per_s, probes, &n), 0);
	assert_int_equal(n, 0);
	/* Then a probe, which the client answers. */
	assert_int_equal(tick_until_closed(f, c.ack, 2 * per_s, probes, &n), 0);
	assert_int_equal(n, 1);
	assert_true(probes[0] <= 1 * per_s + 1);
	send_seg(f, &c, F_ACK, NULL, 0);

	/* The client is gone from here on. */
	unsigned closed_at = tick_until_closed(f, c.ack, 400 * per_s, probes, &n);
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->closed_err, -ECONNABORTED);
	assert_null(f->conn);
	assert_int_equal(n, NETSTACK_KEEPALIVE_COUNT);
	assert_in_range(probes[0], 120 * per_s, 121 * per_s);
	for (int i = 1; i < n; i++)
		assert_in_range(probes[i] - probes[i - 1], 10 * per_s - 1, 10 * per_s + 1);
	assert_in_range(closed_at, 180 * per_s, 181 * per_s);
	/* The client, should it come back, hears a reset. */
	struct seg s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_RST);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_active, 0);
}

/* lwIP sends no keepalives after our FIN was acknowledged (FIN-WAIT-2):
 * the netstack does, with the configured idle time (30 s here). */
static void test_tcp_keepalive_fin_wait_2(void **state)
{
	struct fixture *f = *state;
	netstack_free(f->ns);
	struct netstack_config cfg = { .keepalive_idle_s = NETSTACK_MAX_KEEPALIVE_IDLE_S + 1 };
	struct netstack_ops ops = { .output = on_output, .tcp_accept = on_accept };
	assert_null(netstack_new(&f->loop, &cfg, &ops, f));
	assert_int_equal(errno, EINVAL);
	cfg.keepalive_idle_s = 30;
	assert_int_equal(inet_pton(AF_INET, TUN4, &cfg.addr4), 1);
	f->ns = netstack_new(&f->loop, &cfg, &ops, f);
	assert_non_null(f->ns);

	struct client c = { 0, PEER4, FAR4, 40031, 443, 1, 0 };
	handshake(f, &c, 1380);
	assert_int_equal(netstack_tcp_shutdown(f->conn), 0);
	struct seg s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_FIN);
	c.ack = s.seq + 1;
	send_seg(f, &c, F_ACK, NULL, 0); /* FIN-WAIT-2 */

	const unsigned per_s = 1000 / NETSTACK_TCP_TICK_MS;
	unsigned probes[16];
	int n;
	unsigned closed_at = tick_until_closed(f, c.ack, 200 * per_s, probes, &n);
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->closed_err, -ECONNABORTED);
	assert_int_equal(n, NETSTACK_KEEPALIVE_COUNT);
	assert_in_range(probes[0], 30 * per_s, 32 * per_s);
	for (int i = 1; i < n; i++)
		assert_in_range(probes[i] - probes[i - 1], 10 * per_s - 2, 10 * per_s + 2);
	assert_in_range(closed_at, 90 * per_s, 92 * per_s);
	s = parse_out(f, f->nout - 1);
	assert_true(s.flags & F_RST);
}

/* 10,000 short connections that the upper layer closes first (a server
 * that closes after its answer): each leaves lwIP a TIME-WAIT pcb for 60 s
 * (2 x TCP_MSL). With MEMP_MEM_MALLOC nothing caps them, so their cost is
 * what matters: measured with mallinfo2 (zero under ASan, which replaces
 * malloc: the bound is then not checked), and all of it returns once
 * TIME-WAIT ends. */
static void test_tcp_time_wait_cost(void **state)
{
	struct fixture *f = *state;
	enum { N = 10000 };
	struct mallinfo2 m0 = mallinfo2();
	struct timespec t[4];
	for (unsigned i = 0; i < N; i++) {
		if (i == 0 || i == 1000 || i == N - 1000)
			clock_gettime(CLOCK_MONOTONIC, &t[i == 0 ? 0 : i == 1000 ? 1 : 2]);
		f->nout = 0;
		struct client c = { 0, PEER4, FAR4, (uint16_t)(10000 + i), 80, 1, 0 };
		handshake(f, &c, 1380);
		netstack_tcp_close(f->conn);
		f->conn = NULL;
		struct seg s = parse_out(f, f->nout - 1);
		assert_true(s.flags & F_FIN);
		c.ack = s.seq + 1;
		send_seg(f, &c, F_FIN | F_ACK, NULL, 0); /* -> TIME-WAIT */
	}
	clock_gettime(CLOCK_MONOTONIC, &t[3]);
	struct mallinfo2 m1 = mallinfo2();
	/* Each new SYN walks lwIP's TIME-WAIT list (tcp_input): a measure, not a bound. */
	double first = (double)(t[1].tv_sec - t[0].tv_sec) * 1e6 +
		       (double)(t[1].tv_nsec - t[0].tv_nsec) / 1e3;
	double last = (double)(t[3].tv_sec - t[2].tv_sec) * 1e6 +
		      (double)(t[3].tv_nsec - t[2].tv_nsec) / 1e3;
	print_message("TIME-WAIT: %.2f us per connection with none, %.2f us with %u in TIME-WAIT\n",
		      first / 1000, last / 1000, N - 1000);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_accepted, N);
	assert_int_equal(st.tcp_active, 0);
	assert_int_equal(st.tcp_time_wait, N);
	if (m1.uordblks != 0) {
		size_t per = (m1.uordblks - m0.uordblks) / N;
		print_message("TIME-WAIT: %zu bytes of heap per connection\n", per);
		assert_true(per <= 512);
	}

	netstack__test_tcp_ticks(f->ns, NETSTACK_TCP_TIME_WAIT_MS / NETSTACK_TCP_TICK_MS - 2);
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_time_wait, N); /* not before 60 s */
	netstack__test_tcp_ticks(f->ns, 4);
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.tcp_time_wait, 0);
	struct mallinfo2 m2 = mallinfo2();
	if (m2.uordblks != 0)
		assert_true(m2.uordblks <= m0.uordblks + 64 * 1024);
	assert_int_equal(f->closed, 0);
}

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 7 + (i >> 8));
}

/* Upload: the client sends 400 KB without waiting for acknowledgements.
 * That only fits because the window is scaled (1 MiB, far above 64 KiB);
 * every byte reaches the upper layer in order. */
static void test_tcp_upload_beyond_64k_window(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, FAR4, 40010, 443, 5000, 0 };
	handshake(f, &c, 1380);
	static uint8_t sink[400 * 1380];
	static uint8_t seg[1380];
	size_t got = 0;
	for (size_t k = 0; k < 300; k++) {
		for (size_t i = 0; i < sizeof seg; i++)
			seg[i] = pattern(k * sizeof seg + i);
		f->rxlen = 0;
		f->nout = 0;
		send_seg(f, &c, F_ACK, seg, sizeof seg);
		assert_int_equal(f->rxlen, sizeof seg);
		memcpy(sink + got, f->rx, f->rxlen);
		got += f->rxlen;
	}
	for (size_t i = 0; i < got; i++)
		if (sink[i] != pattern(i))
			fail_msg("byte %zu differs", i);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.lwip_tcp_drop, 0);
}

/* Download: 512 KiB written by the upper layer in as few calls as the send
 * buffer allows, acknowledged by the client as segments arrive; checks the
 * bytes, the segment sizes (MSS) and that sent() accounts for everything. */
static void test_tcp_download(void **state)
{
	struct fixture *f = *state;
	struct client c = { 1, PEER6, FAR6, 40011, 443, 9000, 0 };
	handshake(f, &c, 1360);
	const size_t total = 512 * 1024;
	static uint8_t src[512 * 1024];
	for (size_t i = 0; i < total; i++)
		src[i] = pattern(i);
	uint32_t base = c.ack;
	size_t written = 0, received = 0, acked_to = 0;
	int rounds = 0;
	f->nout = 0;
	while (received < total) {
		assert_true(++rounds < 10000);
		if (written < total)
			written += netstack_tcp_write(f->conn, src + written, total - written);
		/* The client takes in-order segments (a retransmission would be a
         * failure here: nothing is lost). */
		for (int i = 0; i < f->nout; i++) {
			struct seg s = parse_out(f, i);
			if (s.len == 0)
				continue;
			assert_true(s.len <= 1360);
			assert_int_equal(s.seq - base, received);
			assert_memory_equal(s.data, src + received, s.len);
			received += s.len;
		}
		f->nout = 0;
		if (received == acked_to)
			fail_msg("stalled at %zu written, %zu received", written, received);
		/* One cumulative ACK per batch; lwIP sends more from inside. */
		c.ack = base + (uint32_t)received;
		acked_to = received;
		send_seg(f, &c, F_ACK, NULL, 0);
	}
	assert_int_equal(written, total);
	assert_int_equal(f->acked, total);
}

/* ---- Loss recovery (patches/lwip/0001-tcp-sack-recovery.patch) ----------- */

/* A download through a lossy path, modelled in memory: every segment the
 * netstack emits is queued "in flight"; the client takes them one by one,
 * drops the transmissions `drop` picks, and answers each arrival with an
 * ACK (with SACK blocks if negotiated), as Linux does in quickack mode. No
 * TCP timer runs: whatever is lost must be repaired from ACKs alone, and
 * the loop fails if the transfer stalls. */
#define LR_TOTAL (256 * 1024)
#define LR_QUEUE 512

struct lossy {
	struct fixture *f;
	struct client c;
	int sack;      /* SACK permitted was negotiated */
	uint32_t base; /* sequence number of byte 0 */
	uint8_t src[LR_TOTAL];
	uint8_t rx[LR_TOTAL];
	uint8_t have[LR_TOTAL];
	size_t rcv_nxt, high;         /* in-order end, end of the highest arrival */
	uint16_t tx[LR_TOTAL / 1000]; /* transmissions per segment (offset / MSS) */
	int (*drop)(size_t idx, int nth);
	size_t mss;
	unsigned ticks;        /* TCP slow ticks it took (retransmission timeouts) */
	int (*drop_ack)(void); /* optional: loses ACKs too */
	uint8_t q[LR_QUEUE][1600];
	size_t qlen[LR_QUEUE];
	size_t qh, qt;
};

static void lr_drain(struct lossy *l)
{
	struct fixture *f = l->f;
	for (int i = 0; i < f->nout; i++) {
		assert_true(l->qt - l->qh < LR_QUEUE);
		assert_true(f->outlen[i] <= sizeof l->q[0]);
		memcpy(l->q[l->qt % LR_QUEUE], f->out[i], f->outlen[i]);
		l->qlen[l->qt % LR_QUEUE] = f->outlen[i];
		l->qt++;
	}
	f->nout = 0;
}

/* The ACK for what arrived: cumulative plus up to 4 SACK blocks, the one
 * holding the latest arrival first (RFC 2018 4). */
static void lr_ack(struct lossy *l, size_t last)
{
	uint8_t opt[4 + 4 * 8] = { 1, 1, 5, 2 };
	size_t optlen = 0, n = 0;
	if (l->sack && l->high > l->rcv_nxt) {
		size_t blocks[8][2], nb = 0;
		for (size_t i = l->rcv_nxt; i < l->high && nb < 8;) {
			if (!l->have[i]) {
				i++;
				continue;
			}
			size_t s = i;
			while (i < l->high && l->have[i])
				i++;
			blocks[nb][0] = s;
			blocks[nb][1] = i;
			nb++;
		}
		size_t first = 0;
		for (size_t b = 0; b < nb; b++)
			if (last >= blocks[b][0] && last < blocks[b][1])
				first = b;
		for (size_t k = 0; k < nb && n < 4; k++) {
			size_t b = k == 0 ? first : (k <= first ? k - 1 : k);
			put32(opt + 4 + 8 * n, l->base + (uint32_t)blocks[b][0]);
			put32(opt + 8 + 8 * n, l->base + (uint32_t)blocks[b][1]);
			n++;
		}
		opt[3] = (uint8_t)(2 + 8 * n);
		optlen = 4 + 8 * n;
	}
	uint8_t pkt[256];
	l->c.ack = l->base + (uint32_t)l->rcv_nxt;
	if (l->drop_ack != NULL && l->drop_ack())
		return;
	/* window 2048 << 7 = 256 KiB: bounds the flight (and the queue), and
     * leaves room for new data while a window is being repaired */
	netstack_input(l->f->ns, pkt, build_seg(pkt, &l->c, F_ACK, 2048, opt, optlen, NULL, 0));
}

/* Runs the transfer to the end; returns the number of retransmissions. */
static int lr_run(struct lossy *l)
{
	struct fixture *f = l->f;
	size_t written = 0;
	int rexmits = 0;
	for (size_t i = 0; i < LR_TOTAL; i++)
		l->src[i] = pattern(i);
	f->nout = 0;
	while (l->rcv_nxt < LR_TOTAL) {
		if (written < LR_TOTAL)
			written +=
				netstack_tcp_write(f->conn, l->src + written, LR_TOTAL - written);
		lr_drain(l);
		if (l->qh == l->qt) {
			/* nothing in flight: only a retransmission timeout helps */
			if (++l->ticks > 50)
				fail_msg("stalled at %zu of %d bytes", l->rcv_nxt, LR_TOTAL);
			netstack__test_tcp_ticks(f->ns, 1);
			continue;
		}
		uint8_t *p = l->q[l->qh % LR_QUEUE];
		f->nout = 0;
		memcpy(f->out[0], p, l->qlen[l->qh % LR_QUEUE]);
		f->outlen[0] = l->qlen[l->qh % LR_QUEUE];
		f->nout = 1;
		l->qh++;
		struct seg s = parse_out(f, 0);
		f->nout = 0;
		if (s.len == 0)
			continue;
		size_t off = s.seq - l->base;
		assert_true(off + s.len <= LR_TOTAL);
		assert_memory_equal(s.data, l->src + off, s.len);
		size_t idx = off / l->mss;
		int nth = ++l->tx[idx];
		if (nth > 1)
			rexmits++;
		if (l->drop(idx, nth))
			continue;
		memcpy(l->rx + off, s.data, s.len);
		memset(l->have + off, 1, s.len);
		if (off + s.len > l->high)
			l->high = off + s.len;
		while (l->rcv_nxt < LR_TOTAL && l->have[l->rcv_nxt])
			l->rcv_nxt++;
		lr_ack(l, off);
	}
	lr_drain(l);
	assert_memory_equal(l->rx, l->src, LR_TOTAL);
	assert_int_equal(written, LR_TOTAL);
	assert_int_equal(f->acked, LR_TOTAL);
	return rexmits;
}

static struct lossy lr;

static void lr_start(struct fixture *f, int sack, int (*drop)(size_t, int))
{
	memset(&lr, 0, sizeof lr);
	lr.f = f;
	lr.c = (struct client){ 0, PEER4, FAR4, 40020, 443, 7000, 0 };
	lr.sack = sack;
	lr.drop = drop;
	lr.mss = 1380;
	/* MSS 1380, window scale 7, SACK permitted (or NOPs) */
	uint8_t opt[12] = { 2, 4, 0x05, 0x64, 1, 3, 3, 7, 1, 1, 1, 1 };
	if (sack) {
		opt[10] = 4;
		opt[11] = 2;
	}
	uint8_t pkt[256];
	netstack_input(f->ns, pkt, build_seg(pkt, &lr.c, F_SYN, 0xffff, opt, sizeof opt, NULL, 0));
	lr.c.seq++;
	assert_int_equal(f->nout, 1);
	struct seg s = parse_out(f, 0);
	assert_int_equal(s.flags, F_SYN | F_ACK);
	/* SACK permitted answered only when offered */
	if (sack)
		assert_non_null(tcp_option(&s, 4));
	else
		assert_null(tcp_option(&s, 4));
	lr.c.ack = s.seq + 1;
	lr.base = s.seq + 1;
	f->nout = 0;
	send_seg(f, &lr.c, F_ACK, NULL, 0);
	assert_non_null(f->conn);
}

/* Four segments of one window lost, two of them adjacent. */
static int drop_holes(size_t idx, int nth)
{
	return nth == 1 && (idx == 40 || idx == 43 || idx == 44 || idx == 60);
}

/* With SACK, each hole is retransmitted once from ACKs alone (lwIP 2.1.3
 * repairs one loss per window and waits for a timeout for the rest), and
 * nothing the client holds is sent again. */
static void test_tcp_sack_recovery(void **state)
{
	lr_start(*state, 1, drop_holes);
	assert_int_equal(lr_run(&lr), 4);
	assert_int_equal(lr.ticks, 0);
	for (size_t i = 0; i < LR_TOTAL / 1380; i++)
		assert_int_equal(lr.tx[i], drop_holes(i, 1) ? 2 : 1);
}

/* The retransmission of a hole is lost as well: data sent after it being
 * SACKed shows that, and it goes out a third time without a timeout. */
static int drop_twice(size_t idx, int nth)
{
	return (idx == 50 && nth <= 2) || (idx == 53 && nth == 1);
}

static void test_tcp_sack_lost_retransmission(void **state)
{
	lr_start(*state, 1, drop_twice);
	assert_int_equal(lr_run(&lr), 3);
	assert_int_equal(lr.ticks, 0);
	assert_int_equal(lr.tx[50], 3);
	assert_int_equal(lr.tx[53], 2);
}

/* Without SACK (NewReno, RFC 6582): the partial ACK after the first
 * retransmission sends the next hole at once. */
static int drop_two(size_t idx, int nth)
{
	return nth == 1 && (idx == 40 || idx == 44);
}

static void test_tcp_newreno_partial_ack(void **state)
{
	lr_start(*state, 0, drop_two);
	assert_int_equal(lr_run(&lr), 2);
	assert_int_equal(lr.ticks, 0);
	assert_int_equal(lr.tx[40], 2);
	assert_int_equal(lr.tx[44], 2);
}

/* Losses at the very end leave too few duplicate ACKs for recovery: the
 * timeout repairs them, with the SACK scoreboard dropped on the way
 * (RFC 2018 8), and the transfer still completes byte-exact. */
#define LR_LAST (LR_TOTAL / 1380)
static int drop_tail(size_t idx, int nth)
{
	return nth == 1 && (idx == LR_LAST - 2 || idx == LR_LAST);
}

static void test_tcp_sack_tail_loss_timeout(void **state)
{
	lr_start(*state, 1, drop_tail);
	int rexmits = lr_run(&lr);
	assert_true(lr.ticks > 0);
	assert_true(rexmits >= 2);
	assert_int_equal(lr.tx[LR_LAST - 2], 2);
	assert_int_equal(lr.tx[LR_LAST], 2);
}

/* 5% random loss each way, from a fixed seed: byte-exact, and few
 * retransmission timeouts (Reno needed one for most windows). */
static uint32_t lr_rand = 12345;
static int lr_chance(void)
{
	lr_rand = lr_rand * 1103515245u + 12345u;
	return (lr_rand >> 16) % 100 < 5;
}

static int drop_random(size_t idx, int nth)
{
	(void)idx;
	(void)nth;
	return lr_chance();
}

static void test_tcp_sack_random_loss(void **state)
{
	lr_start(*state, 1, drop_random);
	lr.drop_ack = lr_chance;
	int rexmits = lr_run(&lr);
	print_message("5%% loss each way: %d retransmissions, %u ticks of timeouts\n", rexmits,
		      lr.ticks);
	assert_true(lr.ticks <= 10);
}

/* A bare FIN exactly 2^31 before rcv_nxt: lwIP's signed sequence test took
 * it for a segment overlapping rcv_nxt and its trim asserted ("insane
 * offset!", found by fuzz_netstack_input), which aborted every peer's
 * session. It is a duplicate: acknowledged, dropped, the stream goes on. */
static void fin_2pow31_behind(struct fixture *f, struct client *c)
{
	handshake(f, c, c->v6 ? 1360 : 1380);
	send_seg(f, c, F_PSH | F_ACK, "hello", 5);
	send_seg(f, c, F_PSH | F_ACK, "Pause", 5);
	uint32_t next = c->seq;
	c->seq = next - 0x80000000u;
	int before = f->nout;
	send_seg(f, c, F_FIN | F_ACK, NULL, 0);
	c->seq = next;
	assert_int_equal(f->nout, before + 1);
	struct seg s = parse_out(f, before);
	assert_int_equal(s.flags, F_ACK);
	assert_int_equal(s.ack, next);
	assert_int_equal(f->fins, 0);
	assert_int_equal(f->closed, 0);
	send_seg(f, c, F_PSH | F_ACK, "more", 4);
	assert_int_equal(f->rxlen, 14);
	assert_memory_equal(f->rx, "helloPausemore", 14);
	send_seg(f, c, F_FIN | F_ACK, NULL, 0);
	assert_int_equal(f->fins, 1);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.drop_lwip_assert, 0);
}

static void test_tcp4_fin_2pow31_behind(void **state)
{
	struct client c = { 0, PEER4, FAR4, 40013, 443, 1000, 0 };
	fin_2pow31_behind(*state, &c);
}

static void test_tcp6_fin_2pow31_behind(void **state)
{
	struct client c = { 1, PEER6, FAR6, 40014, 443, 0x7fffffffu, 0 };
	fin_2pow31_behind(*state, &c);
}

/* A failed lwIP assert while it processes one connection's segment resets
 * that connection, counts the packet, and leaves the netstack serving
 * others (and leaks nothing: the suite runs under LeakSanitizer). */
static void test_tcp_assert_contained(void **state)
{
	struct fixture *f = *state;
	struct client c = { 0, PEER4, FAR4, 40015, 443, 1, 0 };
	handshake(f, &c, 1380);
	send_seg(f, &c, F_PSH | F_ACK, "one", 3);
	assert_int_equal(f->rxlen, 3);

	netstack__test_fail_next_segment();
	int before = f->nout;
	send_seg(f, &c, F_PSH | F_ACK, "two", 3);
	assert_int_equal(f->rxlen, 3);
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->closed_err, -ECONNABORTED);
	assert_true(f->nout > before);
	struct seg s = parse_out(f, f->nout - 1); /* after the pending ACK of "one" */
	assert_true(s.flags & F_RST);
	assert_int_equal(s.dport, 40015);
	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.drop_lwip_assert, 1);
	assert_int_equal(st.tcp_active, 0);

	/* The next connection works end to end, IPv6 too. */
	struct client c2 = { 1, PEER6, FAR6, 40016, 443, 5, 0 };
	handshake(f, &c2, 1360);
	send_seg(f, &c2, F_PSH | F_ACK, "three", 5);
	assert_int_equal(f->rxlen, 8);
	assert_memory_equal(f->rx, "onethree", 8);
	assert_int_equal(netstack_tcp_write(f->conn, (const uint8_t *)"ok", 2), 2);
	s = parse_out(f, f->nout - 1);
	assert_int_equal(s.len, 2);
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.drop_lwip_assert, 1);
	assert_int_equal(st.tcp_active, 1);
}

static void udp_roundtrip(struct fixture *f, int v6)
{
	const char *peer = v6 ? PEER6 : PEER4, *far = v6 ? "2001:4860:4860::8888" : "8.8.8.8";
	int af = v6 ? AF_INET6 : AF_INET;
	uint8_t pkt[256];
	static const char q[] = "query bytes";
	size_t hl = build_ip(pkt, v6, peer, far, 17, 8 + strlen(q));
	uint8_t *u = pkt + hl;
	put16(u, 5353);
	put16(u + 2, 53);
	put16(u + 4, (uint16_t)(8 + strlen(q)));
	put16(u + 6, 0);
	memcpy(u + 8, q, strlen(q));
	put16(u + 6,
	      fold(sum16(pseudo(v6, pkt + (v6 ? 8 : 12), pkt + (v6 ? 24 : 16), 8 + strlen(q), 17),
			 u, 8 + strlen(q))));
	netstack_input(f->ns, pkt, hl + 8 + strlen(q));

	assert_int_equal(f->udps, 1);
	assert_int_equal(f->ulen, strlen(q));
	assert_memory_equal(f->udata, q, strlen(q));
	char buf[64];
	if (v6) {
		const struct sockaddr_in6 *cl = (const struct sockaddr_in6 *)&f->uclient;
		const struct sockaddr_in6 *de = (const struct sockaddr_in6 *)&f->udest;
		assert_string_equal(inet_ntop(af, &cl->sin6_addr, buf, sizeof buf), peer);
		assert_int_equal(ntohs(cl->sin6_port), 5353);
		assert_string_equal(inet_ntop(af, &de->sin6_addr, buf, sizeof buf), far);
		assert_int_equal(ntohs(de->sin6_port), 53);
	} else {
		const struct sockaddr_in *cl = (const struct sockaddr_in *)&f->uclient;
		const struct sockaddr_in *de = (const struct sockaddr_in *)&f->udest;
		assert_string_equal(inet_ntop(af, &cl->sin_addr, buf, sizeof buf), peer);
		assert_int_equal(ntohs(cl->sin_port), 5353);
		assert_string_equal(inet_ntop(af, &de->sin_addr, buf, sizeof buf), far);
		assert_int_equal(ntohs(de->sin_port), 53);
	}

	static const char a[] = "answer bytes!";
	assert_int_equal(netstack_udp_send(f->ns, (const struct sockaddr *)&f->udest,
					   (const struct sockaddr *)&f->uclient, (const uint8_t *)a,
					   strlen(a)),
			 0);
	assert_int_equal(f->nout, 1);
	struct seg s = parse_out(f, 0);
	assert_int_equal(s.proto, 17);
	assert_int_equal(s.sport, 53);
	assert_int_equal(s.dport, 5353);
	assert_int_equal(s.len, strlen(a));
	assert_memory_equal(s.data, a, strlen(a));
	uint8_t want[16];
	assert_int_equal(inet_pton(af, far, want), 1);
	assert_memory_equal(s.src, want, v6 ? 16 : 4);
	assert_int_equal(inet_pton(af, peer, want), 1);
	assert_memory_equal(s.dst, want, v6 ? 16 : 4);

	struct netstack_stats st;
	netstack_get_stats(f->ns, &st);
	assert_int_equal(st.udp_in, 1);
	assert_int_equal(st.udp_out, 1);

	/* Mixed families are refused. */
	struct sockaddr_in other = { .sin_family = AF_INET, .sin_port = htons(1) };
	struct sockaddr_in6 other6 = { .sin6_family = AF_INET6, .sin6_port = htons(1) };
	const struct sockaddr *wrong =
		v6 ? (const struct sockaddr *)&other : (const struct sockaddr *)&other6;
	assert_int_equal(netstack_udp_send(f->ns, (const struct sockaddr *)&f->udest, wrong,
					   (const uint8_t *)a, 1),
			 -EAFNOSUPPORT);
}

static void test_udp4_any_destination(void **state)
{
	udp_roundtrip(*state, 0);
}

static void test_udp6_any_destination(void **state)
{
	udp_roundtrip(*state, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tcp4_any_destination_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp6_any_destination_reset_by_client, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tcp_refused_and_aborted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_max_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_syn_backlog, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_half_open_per_source, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_pause_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_close_inside_recv, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_closed_delivers_held_data, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tcp_time_wait_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_closing_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_keepalive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_keepalive_fin_wait_2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_time_wait_cost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_free_with_open_connections, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tcp_not_terminated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_upload_beyond_64k_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_download, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_sack_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_sack_lost_retransmission, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_newreno_partial_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_sack_tail_loss_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_sack_random_loss, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp4_fin_2pow31_behind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp6_fin_2pow31_behind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_assert_contained, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp4_any_destination, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp6_any_destination, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
