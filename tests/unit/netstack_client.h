/* A hand-made TCP client (IPv4 and IPv6) for unit tests of services behind
 * a real in-process netstack (the CA page, DNS over TCP, the TCP relay):
 *
 *   nsc_client ──segments──► netstack (lwIP) ──tcp_accept──► service
 *   peer4:sport              dialled addr4:dport (or any address, IPv6 too)
 *
 * It sends segments within the server's window, acknowledges whatever
 * arrives in order, and keeps what it received, the FINs and the RSTs, so
 * a test sees the service through what lwIP really does with the stream.
 * It never retransmits. A client can also act as a slow reader (a small
 * window, acknowledgements spaced out), answer a FIN with its own, or go
 * silent. Real libuv loop and clock, unlike tests/fuzz/fuzz_tcp_peer.h.
 * Header-only; include after cmocka.h. */
#ifndef WGMITM_TESTS_NETSTACK_CLIENT_H
#define WGMITM_TESTS_NETSTACK_CLIENT_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "inet_testutil.h"
#include "netstack/netstack.h"

#define NSC_FIN 0x01
#define NSC_SYN 0x02
#define NSC_RST 0x04
#define NSC_PSH 0x08
#define NSC_ACK 0x10
#define NSC_WSCALE_OURS 7
#define NSC_WSCALE_LWIP 5 /* lwipopts.h TCP_RCV_SCALE */
#define NSC_MSS 1380
#define NSC_MAX_PKTS 8192 /* output held between two pumps */
#define NSC_PKT_MAX 1500
#define NSC_MAX_CLIENTS 16
#define NSC_MAX_INFLIGHT (512u * 1024) /* nsc_client_write's bytes unacknowledged */

struct nsc_client {
	bool v6;
	uint8_t src[16], dst[16]; /* may be changed before the first segment */
	uint16_t sport, dport;
	uint32_t seq, una, ack, wnd;
	bool established; /* the handshake's last ACK sent */
	int rsts, fins;
	bool fin_sent, rst_sent; /* by nsc_client_fin, nsc_client_rst */
	uint8_t *rx;             /* every byte received in order */
	size_t rxlen, rxcap;
	bool ack_due;
	uint64_t last_ack;
	/* How it behaves; may be changed at any time. */
	bool mute;           /* hears nothing and acknowledges nothing (gone silent) */
	bool fin_back;       /* answers the server's FIN with its own */
	uint16_t adv;        /* the window it advertises (scaled by NSC_WSCALE_OURS); 0: 0xffff */
	unsigned ack_gap_ms; /* once established, acknowledges at most this often */
};

/* The service behind the netstack and where clients dial it. */
struct nsc_config {
	struct netstack_config net; /* the tunnel addresses; clients dial addr4 */
	const char *peer4;          /* the clients' address */
	const char *peer6;          /* the IPv6 clients' address (nsc_client_dial) */
	uint16_t dport;
	int (*tcp_accept)(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
			  const struct sockaddr *dest);
	void *tcp_accept_ctx;
};

struct nsc {
	uv_loop_t *loop;
	struct netstack *ns;
	struct nsc_config cfg;
	uint8_t (*pkts)[NSC_PKT_MAX];
	size_t pktlen[NSC_MAX_PKTS];
	size_t npkts, dropped;
	struct nsc_client *clients[NSC_MAX_CLIENTS];
	size_t nclients;
};

static inline size_t nsc_build_seg(uint8_t *pkt, const struct nsc_client *c, uint8_t flags,
				   const uint8_t *opt, size_t optlen, const void *data, size_t len)
{
	size_t thl = 20 + optlen, ulen = thl + len;
	size_t hl = inet_ip_header(pkt, c->v6, c->src, c->dst, 6, ulen);
	uint8_t *t = pkt + hl;
	memset(t, 0, thl);
	put16(t, c->sport);
	put16(t + 2, c->dport);
	put32(t + 4, c->seq);
	put32(t + 8, (flags & NSC_ACK) ? c->ack : 0);
	t[12] = (uint8_t)((thl / 4) << 4);
	t[13] = flags;
	put16(t + 14, c->adv ? c->adv : 0xffff);
	if (optlen)
		memcpy(t + 20, opt, optlen);
	if (len)
		memcpy(t + thl, data, len);
	put16(t + 16, inet_checksum(c->v6, c->src, c->dst, 6, t, ulen));
	return hl + ulen;
}

/* Held until the next pump: output must not call back into the netstack. */
static inline void nsc_output(void *ctx, const uint8_t *pkt, size_t len)
{
	struct nsc *s = ctx;
	if (s->npkts == NSC_MAX_PKTS || len > NSC_PKT_MAX) {
		s->dropped++;
		return;
	}
	memcpy(s->pkts[s->npkts], pkt, len);
	s->pktlen[s->npkts++] = len;
}

static inline int nsc_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
			     const struct sockaddr *dest)
{
	struct nsc *s = ctx;
	return s->cfg.tcp_accept(s->cfg.tcp_accept_ctx, conn, client, dest);
}

static inline void nsc_init(struct nsc *s, uv_loop_t *loop, const struct nsc_config *cfg)
{
	memset(s, 0, sizeof(*s));
	s->loop = loop;
	s->cfg = *cfg;
	s->pkts = malloc(sizeof(*s->pkts) * NSC_MAX_PKTS);
	assert_non_null(s->pkts);
	struct netstack_ops ops = { .output = nsc_output, .tcp_accept = nsc_accept };
	s->ns = netstack_new(loop, &cfg->net, &ops, s);
	assert_non_null(s->ns);
}

/* Frees the netstack (the service must be done with its connections) and
 * the clients; the loop still has to run for the netstack's handles. */
static inline void nsc_free(struct nsc *s)
{
	netstack_free(s->ns);
	s->ns = NULL;
	for (size_t i = 0; i < s->nclients; i++) {
		free(s->clients[i]->rx);
		free(s->clients[i]);
	}
	s->nclients = 0;
	free(s->pkts);
	s->pkts = NULL;
}

/* A client from cfg.peer4 (cfg.peer6 when v6) to dst:dport. */
static inline struct nsc_client *nsc_client_dial(struct nsc *s, bool v6, uint16_t sport,
						 const char *dst, uint16_t dport)
{
	assert_true(s->nclients < NSC_MAX_CLIENTS);
	struct nsc_client *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	int af = v6 ? AF_INET6 : AF_INET;
	c->v6 = v6;
	assert_int_equal(inet_pton(af, v6 ? s->cfg.peer6 : s->cfg.peer4, c->src), 1);
	assert_int_equal(inet_pton(af, dst, c->dst), 1);
	c->sport = sport;
	c->dport = dport;
	c->seq = 1000u * sport;
	c->una = c->seq;
	s->clients[s->nclients++] = c;
	return c;
}

/* A client from cfg.peer4 to cfg.net.addr4:cfg.dport. */
static inline struct nsc_client *nsc_client_new(struct nsc *s, uint16_t sport)
{
	char dst[INET_ADDRSTRLEN];
	assert_non_null(inet_ntop(AF_INET, &s->cfg.net.addr4, dst, sizeof(dst)));
	return nsc_client_dial(s, false, sport, dst, s->cfg.dport);
}

static inline void nsc_client_send(struct nsc *s, struct nsc_client *c, uint8_t flags,
				   const void *data, size_t len)
{
	uint8_t pkt[NSC_PKT_MAX + 100];
	static const uint8_t syn_opt[8] = { 2, 4, 0x05, 0x64, 1, 3, 3, NSC_WSCALE_OURS };
	bool syn = flags & NSC_SYN;
	netstack_input(s->ns, pkt,
		       nsc_build_seg(pkt, c, flags, syn ? syn_opt : NULL, syn ? 8 : 0, data, len));
	c->seq += (uint32_t)len + ((flags & (NSC_SYN | NSC_FIN)) ? 1 : 0);
}

/* Its FIN, or its RST, once (neither after a RST). After its RST the client
 * hears nothing more. */
static inline void nsc_client_fin(struct nsc *s, struct nsc_client *c)
{
	if (c->fin_sent || c->rst_sent)
		return;
	c->fin_sent = true;
	nsc_client_send(s, c, NSC_ACK | NSC_FIN, NULL, 0);
}

static inline void nsc_client_rst(struct nsc *s, struct nsc_client *c)
{
	if (c->rst_sent)
		return;
	c->rst_sent = true;
	nsc_client_send(s, c, NSC_ACK | NSC_RST, NULL, 0);
}

static inline uint64_t nsc_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* What the netstack emitted: SYN|ACK, data in order, FIN, RST; then ACKs
 * (and FINs for fin_back). */
static inline void nsc_pump(struct nsc *s)
{
	for (size_t i = 0; i < s->npkts; i++) {
		const uint8_t *p = s->pkts[i];
		size_t len = s->pktlen[i];
		unsigned version = p[0] >> 4;
		bool v6 = version == 6;
		if ((version != 4 && !v6) || (v6 ? p[6] : p[9]) != 6)
			continue; /* TCP only */
		size_t hl = v6 ? 40 : (size_t)(p[0] & 15) * 4;
		const uint8_t *t = p + hl;
		struct nsc_client *c = NULL;
		for (size_t k = 0; k < s->nclients; k++)
			if (s->clients[k]->sport == get16(t + 2) && s->clients[k]->v6 == v6)
				c = s->clients[k];
		if (!c || c->mute || c->rst_sent)
			continue;
		uint32_t seq = get32(t + 4), ack = get32(t + 8);
		uint8_t flags = t[13];
		size_t thl = (size_t)(t[12] >> 4) * 4, dlen = len - hl - thl;
		if (flags & NSC_RST) {
			c->rsts++;
			continue;
		}
		if (flags & NSC_SYN) {
			c->ack = seq + 1;
			c->una = ack;
			c->wnd = get16(t + 14); /* not scaled in a SYN */
			c->ack_due = true;
			continue;
		}
		if (flags & NSC_ACK) {
			if ((int32_t)(ack - c->una) > 0)
				c->una = ack;
			c->wnd = (uint32_t)get16(t + 14) << NSC_WSCALE_LWIP;
		}
		if (dlen > 0 && seq == c->ack) {
			if (c->rxlen + dlen > c->rxcap) {
				c->rxcap = (c->rxlen + dlen) * 2;
				c->rx = realloc(c->rx, c->rxcap);
				assert_non_null(c->rx);
			}
			memcpy(c->rx + c->rxlen, t + thl, dlen);
			c->rxlen += dlen;
			c->ack += (uint32_t)dlen;
			c->ack_due = true;
		} else if (dlen > 0) {
			c->ack_due = true; /* a retransmission: say again where we are */
		}
		if ((flags & NSC_FIN) && seq + dlen == c->ack) {
			c->fins++;
			c->ack++;
			c->ack_due = true;
		}
	}
	s->npkts = 0;
	for (size_t k = 0; k < s->nclients; k++) {
		struct nsc_client *c = s->clients[k];
		if (c->mute || c->rst_sent || c->rsts)
			continue;
		if (c->ack_due && (c->ack_gap_ms == 0 || !c->established ||
				   nsc_now_ms() - c->last_ack >= c->ack_gap_ms)) {
			c->ack_due = false;
			c->last_ack = nsc_now_ms();
			nsc_client_send(s, c, NSC_ACK, NULL, 0);
			c->established = true;
		}
		if (c->fin_back && c->fins > 0)
			nsc_client_fin(s, c);
	}
}

/* Runs the loop and pumps until cond(arg) or `ms` passed; false on timeout. */
static inline bool nsc_run_until(struct nsc *s, bool (*cond)(void *), void *arg, unsigned ms)
{
	uint64_t end = nsc_now_ms() + ms;
	for (;;) {
		nsc_pump(s);
		if (cond(arg))
			return true;
		if (nsc_now_ms() > end)
			return false;
		if (uv_run(s->loop, UV_RUN_NOWAIT) == 0 || s->npkts == 0)
			usleep(200);
	}
}

/* Runs the loop and pumps for `ms`. */
static inline void nsc_run_for(struct nsc *s, unsigned ms)
{
	uint64_t end = nsc_now_ms() + ms;
	while (nsc_now_ms() < end) {
		uv_run(s->loop, UV_RUN_NOWAIT);
		nsc_pump(s);
		usleep(200);
	}
}

static inline bool nsc_is_established(void *arg)
{
	return ((struct nsc_client *)arg)->established;
}

static inline bool nsc_got_fin(void *arg)
{
	return ((struct nsc_client *)arg)->fins > 0;
}

/* The handshake only: a service refusing the connection resets it after
 * this returns (see the next pump). */
static inline void nsc_client_connect(struct nsc *s, struct nsc_client *c)
{
	nsc_client_send(s, c, NSC_SYN, NULL, 0);
	assert_true(nsc_run_until(s, nsc_is_established, c, 2000));
}

/* Sends all of `data` as the server's window allows, NSC_MAX_INFLIGHT
 * unacknowledged at most (10 s in all at most). */
static inline void nsc_client_write(struct nsc *s, struct nsc_client *c, const void *data,
				    size_t len)
{
	const uint8_t *d = data;
	size_t off = 0;
	uint64_t end = nsc_now_ms() + 10000;
	while (off < len) {
		assert_true(nsc_now_ms() < end);
		size_t n = len - off > NSC_MSS ? NSC_MSS : len - off;
		uint32_t inflight = c->seq - c->una;
		if (inflight + n > c->wnd || inflight > NSC_MAX_INFLIGHT) {
			uv_run(s->loop, UV_RUN_NOWAIT);
			nsc_pump(s);
			if (s->npkts == 0)
				usleep(100);
			continue;
		}
		nsc_client_send(s, c, NSC_ACK | NSC_PSH, d + off, n);
		off += n;
		nsc_pump(s);
	}
}

/* n clients from ports port0, port0 + step, ...: every SYN first, then a
 * few rounds, so the service sees them all and its refusals arrive. */
static inline void nsc_connect_all(struct nsc *s, struct nsc_client **cs, int n, uint16_t port0,
				   uint16_t step)
{
	for (int i = 0; i < n; i++) {
		cs[i] = nsc_client_new(s, (uint16_t)(port0 + i * step));
		nsc_client_send(s, cs[i], NSC_SYN, NULL, 0);
	}
	for (int i = 0; i < 20; i++) {
		uv_run(s->loop, UV_RUN_NOWAIT);
		nsc_pump(s);
	}
}

#endif
