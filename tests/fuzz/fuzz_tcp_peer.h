/* A hand-made TCP client for fuzz targets of services behind the netstack
 * (the CA page, DNS over TCP): it opens connections to the netstack's
 * tunnel addresses, sends bytes as segments within the server's window,
 * and follows what the netstack sends back, so the service sees what a
 * peer's stream really looks like after lwIP (pauses, held data, the
 * final delivery before a close).
 *
 *   peer 10.77.0.2 / fd77::2 ──segments──► netstack (lwIP) ──stream──► service
 *                                          10.77.0.1 / fd77::1
 *
 * A connection acknowledges the server's data as it arrives, or only when
 * told (tcpp_ack), and announces the window it is given, so the server's
 * send buffer can fill and its writes come up short. Include from one file
 * per target (it brings fuzz_uv.h: lwIP's timers are held there). */
#ifndef WGMITM_FUZZ_TCP_PEER_H
#define WGMITM_FUZZ_TCP_PEER_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_uv.h"
#include "netstack/netstack.h"
#include "netstack/netstack_testing.h"
#include "tests/unit/inet_testutil.h"

#define TCPP_CONNS 4
#define TCPP_MSS 1380
#define TCPP_WSCALE 7  /* ours, announced in the SYN */
#define TCPP_PKTS 2048 /* captured output between two pumps */
#define TCPP_PKT_MAX 1500
#define TCPP_MTU 1420
/* Connections opened per input at most: lwIP keeps closed ones in TIME-WAIT
 * and walks its lists for every segment, so hundreds would only make the
 * input slow. */
#define TCPP_MAX_CONNECTS 32

#define TCPP_FIN 0x01
#define TCPP_SYN 0x02
#define TCPP_RST 0x04
#define TCPP_PSH 0x08
#define TCPP_ACK 0x10

struct tcpp_conn {
	bool live;        /* SYN sent, no reset either way */
	bool established; /* SYN|ACK seen */
	bool v6;
	uint16_t sport, dport;
	uint32_t seq;       /* next sequence number we send */
	uint32_t una;       /* what the server acknowledged */
	uint32_t swnd;      /* the server's window, bytes */
	uint8_t sscale;     /* its window scale */
	uint32_t ack;       /* next byte expected from the server */
	uint32_t ack_told;  /* the acknowledgement we last sent */
	uint16_t wnd_field; /* our window field (bytes >> TCPP_WSCALE) */
	bool manual_ack;    /* data and FIN acknowledged only by tcpp_ack */
	bool ack_due;
	bool fin_sent, fin_rcvd, rst_rcvd;
};

typedef int (*tcpp_accept_fn)(void *ctx, struct stream *conn, const struct sockaddr *client,
			      const struct sockaddr *dest);

struct tcpp {
	struct netstack *ns;
	uint8_t cli4[4], srv4[4], cli6[16], srv6[16];
	uint8_t (*pkts)[TCPP_PKT_MAX];
	size_t lens[TCPP_PKTS];
	size_t npkts;
	struct tcpp_conn c[TCPP_CONNS];
	uint16_t next_port;
	uint32_t next_isn;
	unsigned connects;
	tcpp_accept_fn accept;
	void *accept_ctx;
	/* In-order bytes from the server on connection `i`. */
	void (*on_data)(void *ctx, size_t i, const uint8_t *data, size_t len);
	void *data_ctx;
};

static void tcpp_output(void *ctx, const uint8_t *pkt, size_t len)
{
	struct tcpp *t = ctx;
	if (t->npkts == TCPP_PKTS || len > TCPP_PKT_MAX)
		return; /* lost: retransmitted after ticks, like a real loss */
	memcpy(t->pkts[t->npkts], pkt, len);
	t->lens[t->npkts++] = len;
}

static int tcpp_on_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
			  const struct sockaddr *dest)
{
	struct tcpp *t = ctx;
	return t->accept(t->accept_ctx, netstack_tcp_stream(conn), client, dest);
}

/* The netstack on `loop` with 10.77.0.1 and fd77::1; connections go to
 * `accept`. false when it cannot be made. */
static inline bool tcpp_init(struct tcpp *t, uv_loop_t *loop, tcpp_accept_fn accept,
			     void *accept_ctx)
{
	memset(t, 0, sizeof(*t));
	/* Static: a fresh 3 MB allocation per input would be page faults. */
	static uint8_t pkts[TCPP_PKTS][TCPP_PKT_MAX];
	t->pkts = pkts;
	inet_pton(AF_INET, "10.77.0.2", t->cli4);
	inet_pton(AF_INET, "10.77.0.1", t->srv4);
	inet_pton(AF_INET6, "fd77::2", t->cli6);
	inet_pton(AF_INET6, "fd77::1", t->srv6);
	struct netstack_config cfg = { .mtu = TCPP_MTU, .keepalive_idle_s = 1 };
	memcpy(&cfg.addr4, t->srv4, 4);
	memcpy(&cfg.addr6, t->srv6, 16);
	struct netstack_ops ops = { .output = tcpp_output, .tcp_accept = tcpp_on_accept };
	t->accept = accept;
	t->accept_ctx = accept_ctx;
	t->next_port = 40000;
	t->next_isn = 0x10000000;
	uint64_t order = fuv_order;
	t->ns = netstack_new(loop, &cfg, &ops, t);
	if (!t->ns)
		return false;
	/* lwIP's timers read the real clock: tcpp_ticks runs them instead. */
	fuv_hold_since(order);
	return true;
}

/* After the service let go of its connections (they are aborted here with
 * no callbacks). */
static inline void tcpp_free(struct tcpp *t)
{
	netstack_free(t->ns);
	t->ns = NULL;
	t->pkts = NULL;
}

static size_t tcpp_build(const struct tcpp *t, const struct tcpp_conn *c, uint8_t flags,
			 const uint8_t *opt, size_t optlen, const uint8_t *data, size_t len,
			 uint8_t *pkt)
{
	size_t thl = 20 + optlen, ulen = thl + len;
	const uint8_t *src = c->v6 ? t->cli6 : t->cli4, *dst = c->v6 ? t->srv6 : t->srv4;
	size_t ihl = inet_ip_header(pkt, c->v6, src, dst, 6, ulen);
	uint8_t *tcp = pkt + ihl;
	memset(tcp, 0, thl);
	put16(tcp, c->sport);
	put16(tcp + 2, c->dport);
	put32(tcp + 4, c->seq);
	put32(tcp + 8, (flags & TCPP_ACK) ? c->ack_told : 0);
	tcp[12] = (uint8_t)((thl / 4) << 4);
	tcp[13] = flags;
	put16(tcp + 14, (flags & TCPP_SYN) ? 0xffff : c->wnd_field);
	if (optlen)
		memcpy(tcp + 20, opt, optlen);
	if (len)
		memcpy(tcp + thl, data, len);
	put16(tcp + 16, inet_checksum(c->v6, src, dst, 6, tcp, ulen));
	return ihl + ulen;
}

static void tcpp_pump(struct tcpp *t);

static void tcpp_seg(struct tcpp *t, struct tcpp_conn *c, uint8_t flags, const uint8_t *data,
		     size_t len)
{
	static const uint8_t syn_opt[8] = { 2, 4, TCPP_MSS >> 8, TCPP_MSS & 0xff, 1,
					    3, 3, TCPP_WSCALE };
	uint8_t pkt[TCPP_PKT_MAX + 100];
	bool syn = flags & TCPP_SYN;
	if (!c->manual_ack)
		c->ack_told = c->ack;
	size_t n = tcpp_build(t, c, flags, syn ? syn_opt : NULL, syn ? sizeof(syn_opt) : 0, data,
			      len, pkt);
	c->seq += (uint32_t)len + ((flags & (TCPP_SYN | TCPP_FIN)) ? 1 : 0);
	netstack_input(t->ns, pkt, n);
}

/* The window scale in a SYN's options, or 0. */
static uint8_t tcpp_wscale(const uint8_t *opt, size_t len)
{
	for (size_t i = 0; i < len;) {
		if (opt[i] == 0)
			break;
		if (opt[i] == 1) {
			i++;
			continue;
		}
		if (i + 1 >= len || opt[i + 1] < 2)
			break;
		if (opt[i] == 3 && opt[i + 1] == 3 && i + 2 < len)
			return opt[i + 2] > 14 ? 14 : opt[i + 2];
		i += opt[i + 1];
	}
	return 0;
}

static void tcpp_packet(struct tcpp *t, const uint8_t *p, size_t len)
{
	bool v6;
	size_t ihl, total;
	if (len >= 20 && (p[0] >> 4) == 4 && p[9] == 6) {
		v6 = false;
		ihl = (size_t)(p[0] & 15) * 4;
		total = get16(p + 2);
	} else if (len >= 40 && (p[0] >> 4) == 6 && p[6] == 6) {
		v6 = true;
		ihl = 40;
		total = 40 + (size_t)get16(p + 4);
	} else {
		return; /* ICMP and the like: nothing a client needs */
	}
	if (total > len || ihl + 20 > total)
		abort(); /* the netstack sent a malformed packet */
	const uint8_t *tcp = p + ihl;
	size_t thl = (size_t)(tcp[12] >> 4) * 4;
	if (thl < 20 || ihl + thl > total)
		abort();
	struct tcpp_conn *c = NULL;
	for (size_t i = 0; i < TCPP_CONNS; i++)
		if (t->c[i].live && t->c[i].v6 == v6 && t->c[i].sport == get16(tcp + 2))
			c = &t->c[i];
	if (!c)
		return;
	size_t idx = (size_t)(c - t->c);
	uint32_t seq = get32(tcp + 4), ack = get32(tcp + 8);
	uint8_t flags = tcp[13];
	size_t dlen = total - ihl - thl;
	if (flags & TCPP_RST) {
		c->rst_rcvd = true;
		c->live = false;
		return;
	}
	if (flags & TCPP_SYN) {
		if (c->established)
			return;
		c->established = true;
		c->ack = seq + 1;
		c->ack_told = c->ack;
		c->una = ack;
		c->sscale = tcpp_wscale(tcp + 20, thl - 20);
		c->swnd = get16(tcp + 14);
		c->ack_due = true;
		return;
	}
	if (!c->established)
		return;
	if (flags & TCPP_ACK) {
		if ((int32_t)(ack - c->una) > 0)
			c->una = ack;
		c->swnd = (uint32_t)get16(tcp + 14) << c->sscale;
	}
	if (dlen > 0) {
		/* In order, or a retransmission reaching past what we have. */
		int32_t off = (int32_t)(c->ack - seq);
		if (off >= 0 && (size_t)off < dlen && !c->fin_rcvd) {
			c->ack += (uint32_t)(dlen - (size_t)off);
			if (t->on_data)
				t->on_data(t->data_ctx, idx, tcp + thl + off, dlen - (size_t)off);
		}
		c->ack_due = true; /* also a duplicate: it was not acknowledged */
	}
	if ((flags & TCPP_FIN) && !c->fin_rcvd && seq + (uint32_t)dlen == c->ack) {
		c->fin_rcvd = true;
		c->ack++;
		c->ack_due = true;
	}
}

/* Handles what the netstack sent and acknowledges it (unless manual),
 * until nothing new comes. */
static void tcpp_pump(struct tcpp *t)
{
	for (int round = 0; round < 64 && t->npkts > 0; round++) {
		size_t n = t->npkts;
		for (size_t i = 0; i < n; i++)
			tcpp_packet(t, t->pkts[i], t->lens[i]);
		/* Handling sends nothing; the acknowledgements below may make
		 * the netstack send more, handled in the next round. */
		memmove(t->pkts, t->pkts + n, (t->npkts - n) * sizeof(*t->pkts));
		memmove(t->lens, t->lens + n, (t->npkts - n) * sizeof(t->lens[0]));
		t->npkts -= n;
		for (size_t i = 0; i < TCPP_CONNS; i++) {
			struct tcpp_conn *c = &t->c[i];
			if (!c->live || !c->ack_due)
				continue;
			c->ack_due = false;
			/* Manual: nothing new is acknowledged before tcpp_ack (the
			 * handshake's ACK withholds nothing, so it goes). */
			if (c->manual_ack && c->ack_told != c->ack)
				continue;
			tcpp_seg(t, c, TCPP_ACK, NULL, 0);
		}
	}
}

/* Opens connection `i` (a live one is reset first) from a fresh port to
 * `dport` of the tunnel address of the family asked. Returns false (and
 * does nothing) past TCPP_MAX_CONNECTS connections. The handshake brings
 * no data, so what the caller keeps about connection `i` can be reset
 * after. */
static inline bool tcpp_connect(struct tcpp *t, size_t i, bool v6, uint16_t dport, bool manual_ack,
				uint16_t wnd_field)
{
	if (t->connects >= TCPP_MAX_CONNECTS)
		return false;
	t->connects++;
	struct tcpp_conn *c = &t->c[i % TCPP_CONNS];
	if (c->live) {
		tcpp_seg(t, c, TCPP_RST | TCPP_ACK, NULL, 0);
		c->live = false;
		tcpp_pump(t);
	}
	memset(c, 0, sizeof(*c));
	c->live = true;
	c->v6 = v6;
	c->sport = t->next_port++;
	if (t->next_port >= 60000)
		t->next_port = 40000;
	c->dport = dport;
	c->seq = t->next_isn;
	t->next_isn += 0x01000193;
	c->una = c->seq;
	c->wnd_field = wnd_field;
	tcpp_seg(t, c, TCPP_SYN, NULL, 0);
	tcpp_pump(t);
	c->manual_ack = manual_ack;
	return true;
}

static inline struct tcpp_conn *tcpp_open_conn(struct tcpp *t, size_t i)
{
	struct tcpp_conn *c = &t->c[i % TCPP_CONNS];
	return c->live && c->established ? c : NULL;
}

/* Sends as much of `data` as the server's window takes, in segments of at
 * most one MSS. Returns the bytes sent. */
static inline size_t tcpp_send(struct tcpp *t, size_t i, const uint8_t *data, size_t len)
{
	size_t sent = 0;
	struct tcpp_conn *c;
	while (len > 0 && (c = tcpp_open_conn(t, i)) != NULL && !c->fin_sent) {
		uint32_t inflight = c->seq - c->una;
		size_t room = c->swnd > inflight ? c->swnd - inflight : 0;
		size_t n = len < TCPP_MSS ? len : TCPP_MSS;
		if (n > room)
			n = room;
		if (n == 0)
			break;
		tcpp_seg(t, c, TCPP_ACK | TCPP_PSH, data, n);
		data += n;
		len -= n;
		sent += n;
		tcpp_pump(t);
	}
	return sent;
}

static inline void tcpp_fin(struct tcpp *t, size_t i)
{
	struct tcpp_conn *c = tcpp_open_conn(t, i);
	if (!c || c->fin_sent)
		return;
	c->fin_sent = true;
	tcpp_seg(t, c, TCPP_FIN | TCPP_ACK, NULL, 0);
	tcpp_pump(t);
}

static inline void tcpp_rst(struct tcpp *t, size_t i)
{
	struct tcpp_conn *c = &t->c[i % TCPP_CONNS];
	if (!c->live)
		return;
	tcpp_seg(t, c, TCPP_RST | TCPP_ACK, NULL, 0);
	c->live = false;
	tcpp_pump(t);
}

/* Acknowledges everything received and announces `wnd_field`. */
static inline void tcpp_ack(struct tcpp *t, size_t i, uint16_t wnd_field)
{
	struct tcpp_conn *c = tcpp_open_conn(t, i);
	if (!c)
		return;
	c->ack_told = c->ack;
	c->wnd_field = wnd_field;
	c->ack_due = false;
	tcpp_seg(t, c, TCPP_ACK, NULL, 0);
	tcpp_pump(t);
}

/* lwIP's TCP timers for `ticks` x 100 ms: retransmissions, persist probes,
 * keepalives. */
static inline void tcpp_ticks(struct tcpp *t, unsigned ticks)
{
	netstack__test_tcp_ticks(t->ns, ticks);
	tcpp_pump(t);
}

#endif
