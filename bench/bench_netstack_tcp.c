/* Netstack throughput on one core, in memory (no crypto, no sockets):
 *   upload:   client segments of 1380 bytes through netstack_input to the
 *             upper layer's recv, the client acknowledged like a peer would;
 *   download: netstack_tcp_write of 64 KiB chunks out through ops.output,
 *             the client acknowledging every batch;
 *   echo:     ICMP echo request in, reply out (packets per second).
 * Baseline in the same run: memcpy of the same bytes (the one copy the
 * netstack must make on input).
 *
 * Usage: bench_netstack_tcp [MiB per direction, default 256] */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "netstack/netstack.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

struct state {
	struct netstack_tcp *conn;
	size_t rx;
	size_t out_pkts, out_bytes;
	uint32_t last_seq, last_len; /* highest data segment seen */
	uint8_t last_flags;
};

static void on_output(void *ctx, const uint8_t *pkt, size_t len)
{
	struct state *st = ctx;
	st->out_pkts++;
	st->out_bytes += len;
	if ((pkt[0] >> 4) == 4 && pkt[9] == 6) {
		const uint8_t *t = pkt + 20;
		size_t dlen = len - 20 - (size_t)(t[12] >> 4) * 4;
		st->last_flags = t[13];
		if (dlen > 0) {
			st->last_seq = get32(t + 4);
			st->last_len = (uint32_t)dlen;
		} else if (st->last_len == 0) {
			st->last_seq = get32(t + 4); /* SYN|ACK */
		}
	}
}

static void on_recv(void *arg, const uint8_t *data, size_t len)
{
	struct state *st = arg;
	(void)data;
	st->rx += len;
}

static int on_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *c,
		     const struct sockaddr *d)
{
	struct state *st = ctx;
	(void)c;
	(void)d;
	static const struct stream_cb ops = { .recv = on_recv };
	netstack_tcp_set_ops(conn, &ops, st);
	st->conn = conn;
	return 0;
}

/* A TCP/IPv4 segment from 10.77.0.2:40000 to 93.184.216.34:443. Checksums
 * are left zero: the netstack does not check them (AEAD-authenticated). */
static size_t seg(uint8_t *pkt, uint32_t seq, uint32_t ack, uint8_t flags, size_t dlen)
{
	size_t len = 20 + 20 + dlen;
	memset(pkt, 0, 40);
	pkt[0] = 0x45;
	put16(pkt + 2, (uint16_t)len);
	pkt[8] = 64;
	pkt[9] = 6;
	inet_pton(AF_INET, "10.77.0.2", pkt + 12);
	inet_pton(AF_INET, "93.184.216.34", pkt + 16);
	uint8_t *t = pkt + 20;
	put16(t, 40000);
	put16(t + 2, 443);
	put32(t + 4, seq);
	put32(t + 8, ack);
	t[12] = 5 << 4;
	t[13] = flags;
	put16(t + 14, 0xffff);
	return len;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 256;
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct state st = { 0 };
	struct netstack_config cfg = { .mtu = 1420 };
	inet_pton(AF_INET, "10.77.0.1", &cfg.addr4);
	struct netstack_ops ops = { .output = on_output, .tcp_accept = on_accept };
	struct netstack *ns = netstack_new(&loop, &cfg, &ops, &st);
	if (ns == NULL)
		return 1;

	static uint8_t pkt[2048];
	/* SYN with MSS 1380 (without it lwIP must assume 536) and window
     * scale 7, so the client's window is not the limit. */
	seg(pkt, 1000, 0, 0x02, 0);
	static const uint8_t opt[8] = { 2, 4, 0x05, 0x64, 1, 3, 3, 7 };
	pkt[20 + 12] = 7 << 4;
	memcpy(pkt + 40, opt, sizeof opt);
	put16(pkt + 2, 48);
	netstack_input(ns, pkt, 48);
	uint32_t cseq = 1001, cack = st.last_seq + 1;
	netstack_input(ns, pkt, seg(pkt, cseq, cack, 0x10, 0));
	if (st.conn == NULL) {
		fprintf(stderr, "handshake failed\n");
		return 1;
	}

	/* Upload. */
	const size_t mss = 1380, total = mib << 20;
	size_t segs = total / mss;
	double t0 = now_s();
	for (size_t i = 0; i < segs; i++) {
		netstack_input(ns, pkt, seg(pkt, cseq, cack, 0x10, mss));
		cseq += (uint32_t)mss;
	}
	double up = now_s() - t0;
	if (st.rx != segs * mss) {
		fprintf(stderr, "upload lost data: %zu of %zu\n", st.rx, segs * mss);
		return 1;
	}

	/* Baseline: copying the same bytes once. */
	static uint8_t dst[2048];
	t0 = now_s();
	for (size_t i = 0; i < segs; i++) {
		pkt[i & 1023] ^= 1;
		memcpy(dst, pkt, 40 + mss);
		__asm__ volatile("" : : "r"(dst) : "memory");
	}
	double cp = now_s() - t0;

	/* Download. */
	static uint8_t chunk[65536];
	memset(chunk, 'd', sizeof chunk);
	size_t sent = 0, out0 = st.out_pkts;
	st.last_len = 0;
	t0 = now_s();
	while (sent < total) {
		sent += netstack_tcp_write(st.conn, chunk, sizeof chunk);
		if (st.last_len != 0) { /* acknowledge everything seen so far */
			cack = st.last_seq + st.last_len;
			netstack_input(ns, pkt, seg(pkt, cseq, cack, 0x10, 0));
		}
	}
	double down = now_s() - t0;
	size_t down_pkts = st.out_pkts - out0;

	/* ICMP echo. */
	uint8_t echo[84];
	memset(echo, 0, sizeof echo);
	echo[0] = 0x45;
	put16(echo + 2, sizeof echo);
	echo[8] = 64;
	echo[9] = 1;
	inet_pton(AF_INET, "10.77.0.2", echo + 12);
	inet_pton(AF_INET, "10.77.0.1", echo + 16);
	echo[20] = 8;
	size_t echoes = 2000000, e0 = st.out_pkts;
	t0 = now_s();
	for (size_t i = 0; i < echoes; i++)
		netstack_input(ns, echo, sizeof echo);
	double ping = now_s() - t0;

	printf("netstack upload:   %7.0f MB/s  %5.2f Mpkt/s  (%zu MiB in 1380-byte segments)\n",
	       (double)(segs * mss) / up / 1e6, (double)segs / up / 1e6, mib);
	printf("memcpy baseline:   %7.0f MB/s  (same bytes, one copy)\n",
	       (double)(segs * mss) / cp / 1e6);
	printf("netstack download: %7.0f MB/s  %5.2f Mpkt/s  (%zu segments out)\n",
	       (double)sent / down / 1e6, (double)down_pkts / down / 1e6, down_pkts);
	printf("icmp echo:         %7.2f Mpkt/s  (%zu replies)\n", (double)echoes / ping / 1e6,
	       st.out_pkts - e0);
	netstack_tcp_abort(st.conn);
	netstack_free(ns);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return 0;
}
