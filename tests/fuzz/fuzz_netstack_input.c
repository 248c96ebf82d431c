/* Arbitrary bytes as decrypted inner packets. lwIP asserts abort (see
 * arch/cc.h), so a reachable assert is a crash here. The first byte picks
 * how the rest is split into packets, so sequences (fragments, TCP
 * handshakes) are reachable too. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netstack/netstack.h"
#include "netstack/netstack_testing.h"

/* One netstack per input, freed at the end: state held across packets
 * (reassembly queues) is released by netstack_free, and leaks show. */
static uv_loop_t loop;
static bool loop_ready;
static struct netstack *ns;

static void sink(void *ctx, const uint8_t *pkt, size_t len)
{
	(void)ctx;
	/* Touch every byte so ASan checks the whole output buffer. */
	volatile uint8_t x = 0;
	for (size_t i = 0; i < len; i++)
		x ^= pkt[i];
	(void)x;
}

/* The upper layer the fuzzer talks to: echoes TCP and UDP, and lets the
 * data steer pause/resume/shutdown/close/abort so those paths run too. */
static void conn_recv(void *arg, const uint8_t *data, size_t len)
{
	struct netstack_tcp *conn = arg;
	if (len == 0) {
		netstack_tcp_shutdown(conn);
		return;
	}
	switch (data[0]) {
	case 'A':
		netstack_tcp_abort(conn);
		return;
	case 'C':
		netstack_tcp_close(conn);
		return;
	case 'P':
		netstack_tcp_pause(conn);
		return;
	case 'S':
		netstack_tcp_shutdown(conn);
		return;
	default:
		netstack_tcp_write(conn, data, len);
	}
}

static void conn_sent(void *arg, size_t len)
{
	(void)len;
	netstack_tcp_resume(arg);
}

static void conn_closed(void *arg, int err)
{
	(void)arg;
	(void)err;
}

static int on_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
		     const struct sockaddr *dest)
{
	(void)ctx;
	(void)client;
	static const struct stream_cb ops = {
		.recv = conn_recv,
		.sent = conn_sent,
		.closed = conn_closed,
	};
	if (dest->sa_family == AF_INET && ((const struct sockaddr_in *)dest)->sin_port == htons(7))
		return -1; /* refused */
	netstack_tcp_set_ops(conn, &ops, conn);
	return 0;
}

static void on_udp(void *ctx, const struct sockaddr *client, const struct sockaddr *dest,
		   const uint8_t *data, size_t len)
{
	(void)ctx;
	/* 'U': refused, with an ICMP unreachable quoting the datagram. */
	if (len >= 2 && data[0] == 'U')
		netstack_udp_unreachable(ns, client, dest, data, len,
					 data[1] & 1 ? NETSTACK_UNREACH_PROHIBITED
						     : NETSTACK_UNREACH_PORT);
	else
		netstack_udp_send(ns, dest, client, data, len);
}

static void setup(void)
{
	if (!loop_ready) {
		uv_loop_init(&loop);
		loop_ready = true;
	}
	/* Keepalive after 1 s of silence, so ticking reaches probes and give-up. */
	struct netstack_config cfg = { .mtu = 1420, .keepalive_idle_s = 1 };
	/* 10.77.0.1 and fd77::1 */
	cfg.addr4.s_addr = htonl(0x0a4d0001);
	cfg.addr6.s6_addr[0] = 0xfd;
	cfg.addr6.s6_addr[1] = 0x77;
	cfg.addr6.s6_addr[15] = 1;
	struct netstack_ops ops = { .output = sink, .tcp_accept = on_accept, .udp_recv = on_udp };
	ns = netstack_new(&loop, &cfg, &ops, NULL);
	if (ns == NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	setup();
	/* Mode byte: bit 0 set = one packet; otherwise packets are prefixed by
     * a 2-byte length. Bit 2: 5 s of TCP timers after every packet
     * (retransmissions, keepalives, TIME-WAIT). */
	uint8_t mode = data[0];
	data++;
	size--;
	if (mode & 1) {
		netstack_input(ns, data, size);
	} else {
		while (size >= 2) {
			size_t n = (size_t)data[0] << 8 | data[1];
			data += 2;
			size -= 2;
			if (n > size)
				n = size;
			netstack_input(ns, data, n);
			if (mode & 4)
				netstack__test_tcp_ticks(ns, 10);
			data += n;
			size -= n;
		}
	}
	/* Run lwIP's timers (reassembly expiry, TCP) now and then. */
	if (mode & 2)
		uv_run(&loop, UV_RUN_NOWAIT);
	netstack_free(ns);
	ns = NULL;
	uv_run(&loop, UV_RUN_NOWAIT); /* closes the timer, frees the netstack */
	return 0;
}
