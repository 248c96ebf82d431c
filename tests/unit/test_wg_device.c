/* Two devices wired back to back in memory. Datagrams go through a FIFO
 * "network" the test pumps, so a send never re-enters the sender, and a
 * test can hold, drop, replay or spoof any datagram. Time is virtual.
 *
 *   A ("phone", 192.0.2.1:51000)  <== net ==>  B ("server", 198.51.100.1:51820)
 *   tunnel 10.0.0.2, fd00::2                   tunnel 10.0.0.1
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wg/cookie.h"
#include "wg/crypto.h"
#include "wg/device.h"

#define S WG_NS_PER_SEC
#define MS WG_NS_PER_MS
#define NET_MAX 4096

struct side;

struct dgram {
	struct side *to;
	struct wg_endpoint from;
	uint8_t *buf;
	size_t len;
};

struct net {
	uint64_t now;
	struct dgram q[NET_MAX];
	size_t head, count;
	bool drop_all;
};

struct side {
	struct net *net;
	const char *name;
	struct wg_device *dev;
	uint8_t priv[32], pub[32];
	struct wg_endpoint addr;    /* where this side's datagrams come from */
	struct side *peers_side[4]; /* who an endpoint maps to */
	size_t n_peers_side;
	/* delivered packets */
	size_t delivered;
	uint8_t last[2048];
	size_t last_len;
	struct wg_peer *last_peer;
	/* last datagram sent, for replay tests */
	uint8_t sent[2048];
	size_t sent_len;
	size_t sent_count;
};

static struct wg_endpoint ep4(const char *ip, uint16_t port)
{
	struct wg_endpoint e;
	memset(&e, 0, sizeof(e));
	e.in4.sin_family = AF_INET;
	e.in4.sin_port = htons(port);
	inet_pton(AF_INET, ip, &e.in4.sin_addr);
	return e;
}

static struct side *side_for(struct side *s, const struct wg_endpoint *to)
{
	for (size_t i = 0; i < s->n_peers_side; i++)
		if (wg_endpoint_equal(&s->peers_side[i]->addr, to))
			return s->peers_side[i];
	return NULL;
}

static void op_send(void *ctx, const struct wg_endpoint *to, const uint8_t *buf, size_t len)
{
	struct side *s = ctx;
	if (len <= sizeof(s->sent)) {
		memcpy(s->sent, buf, len);
		s->sent_len = len;
	}
	s->sent_count++;
	struct side *dst = side_for(s, to);
	struct net *n = s->net;
	if (!dst || n->drop_all)
		return;
	assert_true(n->count < NET_MAX);
	struct dgram *d = &n->q[(n->head + n->count++) % NET_MAX];
	d->to = dst;
	d->from = s->addr;
	d->buf = malloc(len);
	memcpy(d->buf, buf, len);
	d->len = len;
}

static void op_deliver(void *ctx, struct wg_peer *peer, uint8_t *pkt, size_t len)
{
	struct side *s = ctx;
	s->delivered++;
	s->last_peer = peer;
	s->last_len = len;
	if (len <= sizeof(s->last))
		memcpy(s->last, pkt, len);
}

static void op_wall(void *ctx, struct timespec *out)
{
	struct side *s = ctx;
	uint64_t t = 1700000000ULL * S + s->net->now;
	out->tv_sec = (time_t)(t / S);
	out->tv_nsec = (long)(t % S);
}

static const struct wg_device_ops ops = { op_send, op_deliver, op_wall };

/* Delivers one queued datagram; false if none. */
static bool net_step(struct net *n)
{
	if (!n->count)
		return false;
	struct dgram d = n->q[n->head];
	n->head = (n->head + 1) % NET_MAX;
	n->count--;
	wg_device_receive(d.to->dev, &d.from, d.buf, d.len, n->now);
	free(d.buf);
	return true;
}

static void net_pump(struct net *n)
{
	while (net_step(n))
		;
}

static void net_discard(struct net *n)
{
	while (n->count) {
		free(n->q[n->head].buf);
		n->head = (n->head + 1) % NET_MAX;
		n->count--;
	}
}

static void side_init(struct side *s, struct net *n, const char *name, const char *ip,
		      uint16_t port)
{
	memset(s, 0, sizeof(*s));
	s->net = n;
	s->name = name;
	wg_x25519_keypair(s->priv, s->pub);
	s->dev = wg_device_new(s->priv, &ops, s);
	assert_non_null(s->dev);
	s->addr = ep4(ip, port);
}

/* `of` becomes a peer of `on` with tunnel address ip4 (and ip6). */
static struct wg_peer *add_peer(struct side *on, struct side *of, const char *ip4, const char *ip6,
				bool set_ep)
{
	struct wg_peer_config c;
	memset(&c, 0, sizeof(c));
	memcpy(c.public_key, of->pub, 32);
	if (ip4)
		inet_pton(AF_INET, ip4, &c.addr4);
	if (ip6)
		inet_pton(AF_INET6, ip6, &c.addr6);
	c.user = of;
	struct wg_peer *p = wg_device_peer_add(on->dev, &c);
	assert_non_null(p);
	if (set_ep)
		wg_peer_set_endpoint(p, &of->addr);
	on->peers_side[on->n_peers_side++] = of;
	return p;
}

static size_t make_ipv4(uint8_t *buf, const char *src, const char *dst, size_t payload,
			uint8_t fill)
{
	size_t total = 20 + payload;
	memset(buf, 0, 20);
	buf[0] = 0x45;
	buf[2] = (uint8_t)(total >> 8);
	buf[3] = (uint8_t)total;
	buf[8] = 64;
	buf[9] = 17;
	inet_pton(AF_INET, src, buf + 12);
	inet_pton(AF_INET, dst, buf + 16);
	memset(buf + 20, fill, payload);
	return total;
}

static size_t make_ipv6(uint8_t *buf, const char *src, const char *dst, size_t payload,
			uint8_t fill)
{
	memset(buf, 0, 40);
	buf[0] = 0x60;
	buf[4] = (uint8_t)(payload >> 8);
	buf[5] = (uint8_t)payload;
	buf[6] = 17;
	buf[7] = 64;
	inet_pton(AF_INET6, src, buf + 8);
	inet_pton(AF_INET6, dst, buf + 24);
	memset(buf + 40, fill, payload);
	return 40 + payload;
}

struct pair {
	struct net net;
	struct side a, b;
	struct wg_peer *a_to_b; /* B as seen by A */
	struct wg_peer *b_to_a; /* A as seen by B */
};

static struct pair *pair_new(void)
{
	struct pair *p = calloc(1, sizeof(*p));
	p->net.now = 10 * S;
	side_init(&p->a, &p->net, "A", "192.0.2.1", 51000);
	side_init(&p->b, &p->net, "B", "198.51.100.1", 51820);
	p->a_to_b = add_peer(&p->a, &p->b, "10.0.0.1", NULL, true);
	p->b_to_a = add_peer(&p->b, &p->a, "10.0.0.2", "fd00::2", false);
	return p;
}

static void pair_free(struct pair *p)
{
	net_discard(&p->net);
	wg_device_free(p->a.dev);
	wg_device_free(p->b.dev);
	free(p);
}

static void advance(struct pair *p, uint64_t dt)
{
	p->net.now += dt;
	wg_device_tick(p->a.dev, p->net.now);
	wg_device_tick(p->b.dev, p->net.now);
	net_pump(&p->net);
}

/* A sends one packet to B, which starts and completes the handshake. */
static void pair_connect(struct pair *p)
{
	uint8_t pkt[128];
	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 25, 0xab);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	net_pump(&p->net);
}

static void test_handshake_and_data(void **state)
{
	struct pair *p = pair_new();
	uint8_t pkt[1500];

	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 25, 0xab);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	assert_int_equal(p->a_to_b->queue_count, 1); /* waits for the handshake */
	assert_int_equal(p->net.count, 1);           /* the initiation */
	assert_int_equal(p->net.q[p->net.head].len, WG_MSG_INITIATION_LEN);
	net_pump(&p->net);

	const struct wg_device_stats *sa = wg_device_stats(p->a.dev),
				     *sb = wg_device_stats(p->b.dev);
	assert_int_equal(sa->handshakes_initiator, 1);
	assert_int_equal(sb->handshakes_responder, 1);
	assert_int_equal(sa->initiations_sent, 1);
	assert_int_equal(sb->responses_sent, 1);
	assert_int_equal(p->b.delivered, 1);
	assert_int_equal(p->b.last_len, n);
	assert_memory_equal(p->b.last, pkt, n);
	assert_ptr_equal(p->b.last_peer, p->b_to_a);
	assert_ptr_equal(wg_peer_user(p->b_to_a), &p->a);
	/* 45 bytes padded to 48: 16 header + 48 + 16 tag. */
	assert_int_equal(p->a.sent_len, 16 + 48 + 16);

	/* B answers; A checks B's tunnel address as the source. */
	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.2", 1000, 0x5a);
	assert_ptr_equal(wg_device_peer_by_dst(p->b.dev, pkt, n), p->b_to_a);
	wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
	assert_int_equal(p->b.sent_len, 16 + 1024 + 16);
	net_pump(&p->net);
	assert_int_equal(p->a.delivered, 1);
	assert_memory_equal(p->a.last, pkt, n);

	/* Padding never goes past the MTU. */
	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.2", 1415 - 20, 0x11);
	wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
	assert_int_equal(p->b.sent_len, 16 + 1420 + 16);
	net_pump(&p->net);
	assert_int_equal(p->a.delivered, 2);
	assert_int_equal(p->a.last_len, 1415);

	struct wg_peer_info info;
	wg_peer_info(p->b_to_a, &info);
	assert_true(wg_endpoint_equal(&info.endpoint, &p->a.addr));
	assert_true(info.has_session);
	assert_true(info.last_handshake.tv_sec > 1700000000);
	assert_true(info.rx_bytes > 0 && info.tx_bytes > 0);
	assert_memory_equal(info.public_key, p->a.pub, 32);

	/* Duplicate key or address is refused. */
	struct wg_peer_config c;
	memset(&c, 0, sizeof(c));
	memcpy(c.public_key, p->a.pub, 32);
	errno = 0;
	assert_null(wg_device_peer_add(p->b.dev, &c));
	assert_int_equal(errno, EEXIST);
	wg_x25519_keypair(pkt, c.public_key);
	inet_pton(AF_INET, "10.0.0.2", &c.addr4);
	assert_null(wg_device_peer_add(p->b.dev, &c));
	assert_int_equal(errno, EEXIST);
	memcpy(c.public_key, wg_device_public_key(p->b.dev), 32);
	c.addr4.s_addr = 0;
	assert_null(wg_device_peer_add(p->b.dev, &c));
	assert_int_equal(errno, EINVAL);
	pair_free(p);
}

/* The responder keeps its new keypair in "next" until the initiator's first
 * transport packet; the initiator uses its keypair immediately. */
static void test_responder_next_rule(void **state)
{
	struct pair *p = pair_new();
	wg_device_tick(p->a.dev, p->net.now);
	/* A has nothing to send: a keepalive would start a handshake too; use
	 * the timer path by sending a packet and holding the network. */
	uint8_t pkt[128];
	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 10, 1);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	assert_true(net_step(&p->net)); /* initiation -> B, response queued */
	assert_non_null(p->b_to_a->next);
	assert_null(p->b_to_a->current);
	struct wg_keypair *b_next = p->b_to_a->next;
	assert_false(b_next->initiator);

	assert_true(net_step(&p->net)); /* response -> A: current at once */
	assert_non_null(p->a_to_b->current);
	assert_true(p->a_to_b->current->initiator);
	assert_null(p->a_to_b->next);
	assert_int_equal(p->net.count, 1);         /* A's queued packet */
	assert_ptr_equal(p->b_to_a->next, b_next); /* B still waits */

	/* B cannot send with next: its packet waits (and no initiation
	 * starts: the response B sent holds them back for REKEY_TIMEOUT). */
	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.2", 10, 2);
	wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
	assert_int_equal(p->b_to_a->queue_count, 1);

	assert_true(net_step(&p->net)); /* A's data -> B confirms */
	assert_ptr_equal(p->b_to_a->current, b_next);
	assert_null(p->b_to_a->next);
	assert_int_equal(p->b_to_a->queue_count, 0); /* flushed under the confirmed keypair */
	assert_int_equal(p->b.delivered, 1);
	net_pump(&p->net);
	assert_true(p->a.delivered >= 1);
	pair_free(p);
}

/* Continuous traffic both ways across several rekeys with short timers:
 * nothing is lost. */
static void test_rekey_under_traffic(void **state)
{
	struct pair *p = pair_new();
	struct wg_timer_params tp;
	wg_timer_params_default(&tp);
	tp.rekey_after_time = 5 * S;
	tp.reject_after_time = 9 * S;
	tp.keepalive_timeout = 2 * S;
	tp.rekey_timeout = 1 * S;
	tp.rekey_attempt_time = 6 * S;
	tp.zero_keys_after = 27 * S;
	wg_device_set_timer_params(p->a.dev, &tp);
	wg_device_set_timer_params(p->b.dev, &tp);

	pair_connect(p);
	size_t sent_ab = 1, sent_ba = 0;
	uint8_t pkt[256];
	for (unsigned i = 0; i < 3000; i++) { /* 30 s, every 10 ms */
		advance(p, 10 * MS);
		size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 100, (uint8_t)i);
		wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
		sent_ab++;
		n = make_ipv4(pkt, "10.0.0.1", "10.0.0.2", 60, (uint8_t)i);
		wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
		sent_ba++;
		net_pump(&p->net);
	}
	const struct wg_device_stats *sa = wg_device_stats(p->a.dev),
				     *sb = wg_device_stats(p->b.dev);
	assert_int_equal(p->b.delivered, sent_ab);
	assert_int_equal(p->a.delivered, sent_ba);
	assert_true(sa->handshakes_initiator >= 5);
	assert_true(sb->handshakes_responder >= 5);
	for (int r = 0; r < WG_DROP__COUNT; r++) {
		if (sa->drop[r] || sb->drop[r])
			fail_msg("drop %s: A %llu B %llu", wg_drop_reason_str(r),
				 (unsigned long long)sa->drop[r], (unsigned long long)sb->drop[r]);
	}
	/* The session in use is never older than REJECT_AFTER_TIME. */
	assert_true(p->net.now - p->a_to_b->current->birth < 9 * S);

	/* Then silence: keys are zeroed after zero_keys_after. */
	advance(p, 10 * S);
	advance(p, 20 * S);
	assert_null(p->a_to_b->current);
	assert_null(p->b_to_a->current);
	assert_null(p->a_to_b->previous);
	pair_free(p);
}

/* REKEY_AFTER_MESSAGES, shortened: a new session every 20 packets (at most
 * one initiation per REKEY_TIMEOUT, hence the 300 ms spacing). */
static void test_rekey_after_messages(void **state)
{
	struct pair *p = pair_new();
	struct wg_timer_params tp;
	wg_timer_params_default(&tp);
	tp.rekey_after_messages = 20;
	tp.reject_after_messages = 40;
	wg_device_set_timer_params(p->a.dev, &tp);
	wg_device_set_timer_params(p->b.dev, &tp);
	pair_connect(p);
	uint8_t pkt[128];
	for (int i = 0; i < 100; i++) {
		advance(p, 300 * MS);
		size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 30, (uint8_t)i);
		wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
		net_pump(&p->net);
	}
	assert_int_equal(p->b.delivered, 101);
	assert_true(wg_device_stats(p->a.dev)->handshakes_initiator >= 4);
	assert_true(p->a_to_b->current->send_counter < 40);
	pair_free(p);
}

/* The endpoint follows the latest authenticated packet only. */
static void test_roaming(void **state)
{
	struct pair *p = pair_new();
	pair_connect(p);
	assert_true(wg_endpoint_equal(&p->b_to_a->endpoint, &p->a.addr));

	/* A moves (new NAT mapping). */
	struct wg_endpoint moved = ep4("203.0.113.7", 40000);
	p->a.addr = moved;
	uint8_t pkt[128];
	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 20, 3);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	uint8_t good[256];
	size_t good_len = p->a.sent_len;
	memcpy(good, p->a.sent, good_len);
	net_pump(&p->net);
	assert_true(wg_endpoint_equal(&p->b_to_a->endpoint, &moved));

	/* Spoofed from elsewhere: a tampered copy and a replayed copy. */
	struct wg_endpoint spoof = ep4("192.0.2.66", 666);
	uint8_t bad[256];
	memcpy(bad, good, good_len);
	bad[8] += 5; /* a fresh counter, so it gets as far as decryption */
	const struct wg_device_stats *sb = wg_device_stats(p->b.dev);
	wg_device_receive(p->b.dev, &spoof, bad, good_len, p->net.now);
	assert_int_equal(sb->drop[WG_DROP_DECRYPT_FAILED], 1);
	memcpy(bad, good, good_len);
	wg_device_receive(p->b.dev, &spoof, bad, good_len, p->net.now);
	assert_int_equal(sb->drop[WG_DROP_REPLAY], 1);
	assert_true(wg_endpoint_equal(&p->b_to_a->endpoint, &moved));
	/* Replies go to the new address. */
	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.2", 20, 4);
	wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
	assert_int_equal(p->net.count, 1);
	assert_ptr_equal(p->net.q[p->net.head].to, &p->a);
	net_pump(&p->net);
	pair_free(p);
}

static void test_source_check(void **state)
{
	struct pair *p = pair_new();
	pair_connect(p);
	const struct wg_device_stats *sb = wg_device_stats(p->b.dev);
	size_t before = p->b.delivered;
	uint8_t pkt[256];

	size_t n = make_ipv4(pkt, "10.0.0.99", "10.0.0.1", 20, 1); /* not A's address */
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	net_pump(&p->net);
	assert_int_equal(sb->drop[WG_DROP_SOURCE_MISMATCH], 1);
	assert_int_equal(p->b.delivered, before);

	n = make_ipv6(pkt, "fd00::2", "fd00::1", 30, 2); /* A's /128 */
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	net_pump(&p->net);
	assert_int_equal(p->b.delivered, before + 1);
	assert_int_equal(p->b.last_len, 70);
	assert_memory_equal(p->b.last, pkt, n);

	n = make_ipv6(pkt, "fd00::3", "fd00::1", 30, 2);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	net_pump(&p->net);
	assert_int_equal(sb->drop[WG_DROP_SOURCE_MISMATCH], 2);

	/* Not IP, and shorter than its header claims. */
	memcpy(pkt, "hello, world", 12);
	wg_device_send(p->a.dev, p->a_to_b, pkt, 12, p->net.now);
	n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 20, 1);
	pkt[3] = 200; /* claims 200 bytes, has 40 (+ padding 8) */
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	net_pump(&p->net);
	assert_int_equal(sb->drop[WG_DROP_BAD_INNER_PACKET], 2);
	assert_int_equal(p->b.delivered, before + 1);
	/* A keepalive is not an inner packet and is not delivered. */
	uint64_t ka = sb->rx_keepalives;
	advance(p, 11 * S); /* B received data: passive keepalive to A; A likewise */
	assert_true(wg_device_stats(p->a.dev)->rx_keepalives + sb->rx_keepalives > ka);
	pair_free(p);
}

static void test_garbage(void **state)
{
	struct pair *p = pair_new();
	pair_connect(p);
	const struct wg_device_stats *sb = wg_device_stats(p->b.dev);
	struct wg_endpoint from = ep4("192.0.2.200", 1234);
	uint8_t buf[512];
	memset(buf, 0, sizeof(buf));

	wg_device_receive(p->b.dev, &from, buf, 0, p->net.now);
	wg_device_receive(p->b.dev, &from, buf, 3, p->net.now);
	assert_int_equal(sb->drop[WG_DROP_BAD_SIZE], 2);
	buf[0] = 5;
	wg_device_receive(p->b.dev, &from, buf, 64, p->net.now);
	buf[0] = 1;
	buf[2] = 1; /* reserved byte */
	wg_device_receive(p->b.dev, &from, buf, 148, p->net.now);
	assert_int_equal(sb->drop[WG_DROP_BAD_TYPE], 2);
	buf[2] = 0;
	wg_device_receive(p->b.dev, &from, buf, 147, p->net.now); /* initiation, short */
	buf[0] = 2;
	wg_device_receive(p->b.dev, &from, buf, 93, p->net.now);
	buf[0] = 3;
	wg_device_receive(p->b.dev, &from, buf, 63, p->net.now);
	buf[0] = 4;
	wg_device_receive(p->b.dev, &from, buf, 31, p->net.now);
	assert_int_equal(sb->drop[WG_DROP_BAD_SIZE], 6);

	/* Right sizes, junk contents. */
	wg_random(buf + 4, 144);
	buf[0] = 1;
	wg_device_receive(p->b.dev, &from, buf, 148, p->net.now);
	buf[0] = 2;
	wg_device_receive(p->b.dev, &from, buf, 92, p->net.now);
	assert_int_equal(sb->drop[WG_DROP_BAD_MAC1], 2);
	buf[0] = 3;
	wg_device_receive(p->b.dev, &from, buf, 64, p->net.now);
	buf[0] = 4;
	wg_device_receive(p->b.dev, &from, buf, 100, p->net.now);
	assert_int_equal(sb->drop[WG_DROP_UNKNOWN_INDEX], 2);
	/* A transport packet with a real index but a forged body. */
	wg_store_le32(buf + 4, p->b_to_a->current->entry.index);
	wg_device_receive(p->b.dev, &from, buf, 100, p->net.now);
	assert_int_equal(sb->drop[WG_DROP_DECRYPT_FAILED], 1);
	/* Nothing moved. */
	assert_true(wg_endpoint_equal(&p->b_to_a->endpoint, &p->a.addr));
	assert_int_equal(sb->rx_datagrams, 3 + 12); /* the handshake's 3 + these 12 */
	pair_free(p);
}

static void test_replay_dropped(void **state)
{
	struct pair *p = pair_new();
	pair_connect(p);
	uint8_t pkt[128], copy[256];
	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 20, 9);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	size_t len = p->a.sent_len;
	memcpy(copy, p->a.sent, len);
	net_pump(&p->net);
	size_t before = p->b.delivered;
	wg_device_receive(p->b.dev, &p->a.addr, copy, len, p->net.now);
	assert_int_equal(wg_device_stats(p->b.dev)->drop[WG_DROP_REPLAY], 1);
	assert_int_equal(p->b.delivered, before);
	pair_free(p);
}

static void test_removed_peer(void **state)
{
	struct pair *p = pair_new();
	pair_connect(p);
	uint32_t idx = p->b_to_a->current->entry.index;
	wg_device_peer_remove(p->b.dev, p->b_to_a);
	assert_null(wg_device_peer_by_key(p->b.dev, p->a.pub));
	assert_int_equal(wg_device_peer_count(p->b.dev), 0);
	p->b.n_peers_side = 1; /* B still routes datagrams back to A's address */

	const struct wg_device_stats *sb = wg_device_stats(p->b.dev);
	uint8_t pkt[128];
	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 20, 9);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	assert_int_equal(wg_load_le32(p->a.sent + 4), idx);
	net_pump(&p->net);
	assert_int_equal(sb->drop[WG_DROP_UNKNOWN_INDEX], 1);

	/* A new initiation from A: unknown static key. */
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now); /* still has a session */
	advance(p, 200 * S); /* A's session expires; data restarts a handshake */
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	net_pump(&p->net);
	assert_true(sb->handshake_failed[WG_NOISE_UNKNOWN_PEER] >= 1);
	assert_int_equal(p->b.delivered, 1);
	pair_free(p);
}

static void test_two_peers(void **state)
{
	struct pair *p = pair_new();
	struct side c;
	side_init(&c, &p->net, "C", "192.0.2.3", 52000);
	struct wg_peer *c_to_b = add_peer(&c, &p->b, "10.0.0.1", NULL, true);
	struct wg_peer *b_to_c = add_peer(&p->b, &c, "10.0.0.3", NULL, false);

	pair_connect(p);
	uint8_t pkt[128];
	size_t n = make_ipv4(pkt, "10.0.0.3", "10.0.0.1", 33, 7);
	wg_device_send(c.dev, c_to_b, pkt, n, p->net.now);
	net_pump(&p->net);
	assert_int_equal(p->b.delivered, 2);
	assert_ptr_equal(p->b.last_peer, b_to_c);
	assert_int_equal(wg_device_stats(p->b.dev)->handshakes_responder, 2);

	/* Routing by inner destination. */
	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.3", 10, 1);
	struct wg_peer *dst = wg_device_peer_by_dst(p->b.dev, pkt, n);
	assert_ptr_equal(dst, b_to_c);
	wg_device_send(p->b.dev, dst, pkt, n, p->net.now);
	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.2", 10, 1);
	dst = wg_device_peer_by_dst(p->b.dev, pkt, n);
	assert_ptr_equal(dst, p->b_to_a);
	wg_device_send(p->b.dev, dst, pkt, n, p->net.now);
	net_pump(&p->net);
	assert_int_equal(c.delivered, 1);
	assert_int_equal(p->a.delivered, 1);
	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.9", 10, 1);
	assert_null(wg_device_peer_by_dst(p->b.dev, pkt, n));

	size_t count = 0;
	for (struct wg_peer *it = wg_device_peer_first(p->b.dev); it; it = wg_device_peer_next(it))
		count++;
	assert_int_equal(count, 2);
	net_discard(&p->net);
	wg_device_free(c.dev);
	pair_free(p);
}

/* Under load the responder answers with a cookie; the initiator's retry
 * carries MAC2 and goes through. */
static void test_cookie_under_load(void **state)
{
	struct pair *p = pair_new();
	struct wg_timer_params tp;
	wg_timer_params_default(&tp);
	tp.under_load_handshakes = 0; /* every handshake message means load */
	wg_device_set_timer_params(p->b.dev, &tp);
	const struct wg_device_stats *sa = wg_device_stats(p->a.dev),
				     *sb = wg_device_stats(p->b.dev);

	uint8_t pkt[128];
	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 20, 9);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	net_pump(&p->net);
	assert_int_equal(sb->cookie_replies_sent, 1);
	assert_int_equal(sb->drop[WG_DROP_UNDER_LOAD_NO_COOKIE], 1);
	assert_int_equal(sb->responses_sent, 0);
	assert_int_equal(sa->cookie_replies_received, 1);
	assert_true(wg_device_under_load(p->b.dev, p->net.now));

	/* The retransmission (REKEY_TIMEOUT + jitter later) has MAC2. */
	advance(p, 5 * S + 400 * MS);
	assert_int_equal(sa->initiations_sent, 2);
	assert_int_equal(sb->responses_sent, 1);
	assert_int_equal(sa->handshakes_initiator, 1);
	assert_int_equal(sb->handshakes_responder, 1);
	assert_int_equal(p->b.delivered, 1);
	pair_free(p);
}

/* A handshake-sized datagram with a valid MAC1 (the sender knows `to`'s
 * public key) and garbage inside: it fails only after MAC1. */
static void make_mac1_initiation(uint8_t buf[WG_MSG_INITIATION_LEN], const uint8_t to_pub[32])
{
	uint8_t mac1_key[WG_HASH_LEN];
	wg_random(buf, WG_MSG_INITIATION_LEN);
	memset(buf, 0, 4);
	buf[0] = WG_MSG_INITIATION;
	wg_cookie_derive_mac1_key(mac1_key, to_pub);
	wg_mac(buf + WG_MSG_INITIATION_LEN - 32, mac1_key, WG_HASH_LEN, buf,
	       WG_MSG_INITIATION_LEN - 32);
	memset(buf + WG_MSG_INITIATION_LEN - 16, 0, 16);
}

/* Handshake-sized junk with a wrong MAC1 is dropped before it counts as
 * load: however much of it comes, no cookie mode, and a real peer's
 * initiation in the same window gets a response at once. Initiations with a
 * valid MAC1 (work that needs a Diffie-Hellman) still put the device under
 * load. */
static void test_bad_mac1_is_not_load(void **state)
{
	struct pair *p = pair_new();
	const struct wg_device_stats *sb = wg_device_stats(p->b.dev);
	uint32_t threshold = wg_device_timer_params(p->b.dev)->under_load_handshakes;
	struct wg_endpoint junk_from = ep4("203.0.113.9", 4444);
	uint8_t buf[WG_MSG_INITIATION_LEN];
	unsigned flood = 4 * threshold;

	for (unsigned i = 0; i < flood; i++) {
		wg_random(buf, sizeof(buf));
		memset(buf, 0, 4);
		buf[0] = WG_MSG_INITIATION;
		wg_device_receive(p->b.dev, &junk_from, buf, sizeof(buf), p->net.now);
	}
	assert_int_equal(sb->drop[WG_DROP_BAD_MAC1], flood);
	assert_false(wg_device_under_load(p->b.dev, p->net.now));
	assert_int_equal(sb->under_load_events, 0);

	/* A joins while the junk is still in the window. */
	pair_connect(p);
	assert_int_equal(sb->cookie_replies_sent, 0);
	assert_int_equal(sb->drop[WG_DROP_UNDER_LOAD_NO_COOKIE], 0);
	assert_int_equal(sb->responses_sent, 1);
	assert_int_equal(sb->handshakes_responder, 1);
	assert_int_equal(wg_device_stats(p->a.dev)->initiations_sent, 1);
	assert_int_equal(p->b.delivered, 1);

	/* The same number with a valid MAC1: load. A's initiation is one of
	 * the messages counted, so threshold - 1 more reach the limit and the
	 * next one tips it. */
	for (unsigned i = 0; i < flood; i++) {
		make_mac1_initiation(buf, p->b.pub);
		wg_device_receive(p->b.dev, &junk_from, buf, sizeof(buf), p->net.now);
	}
	assert_int_equal(sb->drop[WG_DROP_BAD_MAC1], flood);
	assert_true(wg_device_under_load(p->b.dev, p->net.now));
	assert_int_equal(sb->under_load_events, 1);
	assert_int_equal(sb->drop[WG_DROP_HANDSHAKE_FAILED], threshold - 1);
	assert_int_equal(sb->drop[WG_DROP_UNDER_LOAD_NO_COOKIE], flood - (threshold - 1));
	assert_int_equal(sb->cookie_replies_sent, flood - (threshold - 1));
	pair_free(p);
}

/* Sending a response counts as sending a handshake, as in the Linux module
 * (send.c wg_packet_send_handshake_response sets last_sent_handshake) and
 * wireguard-go (SendHandshakeResponse): data the responder has before the
 * initiator confirms the session waits for that confirmation instead of
 * starting a crossing initiation. Without a confirmation the responder
 * initiates, but not before REKEY_TIMEOUT. */
static void test_response_holds_back_initiation(void **state)
{
	struct pair *p = pair_new();
	const struct wg_device_stats *sa = wg_device_stats(p->a.dev),
				     *sb = wg_device_stats(p->b.dev);
	uint8_t pkt[128];

	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 10, 1);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	assert_true(net_step(&p->net)); /* initiation -> B; its response queued */
	assert_int_equal(sb->responses_sent, 1);
	assert_int_equal(p->net.count, 1);

	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.2", 10, 2);
	wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
	assert_int_equal(p->b_to_a->queue_count, 1);
	assert_int_equal(sb->initiations_sent, 0);
	assert_int_equal(p->net.count, 1); /* still only the response */

	net_pump(&p->net); /* response -> A, A's data -> B confirms, B flushes */
	assert_int_equal(sb->initiations_sent, 0);
	assert_int_equal(sa->initiations_sent, 1);
	assert_int_equal(sa->handshakes_initiator, 1);
	assert_int_equal(sb->handshakes_responder, 1);
	assert_int_equal(sa->responses_sent, 0);
	assert_int_equal(p->b_to_a->queue_count, 0);
	assert_int_equal(p->b.delivered, 1);
	assert_int_equal(p->a.delivered, 1);
	pair_free(p);

	/* The response is lost: B's data waits REKEY_TIMEOUT, then B initiates. */
	p = pair_new();
	sa = wg_device_stats(p->a.dev);
	sb = wg_device_stats(p->b.dev);
	n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 10, 1);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	assert_true(net_step(&p->net));
	net_discard(&p->net);
	uint64_t responded = p->net.now;
	p->net.now += 4 * S;
	n = make_ipv4(pkt, "10.0.0.1", "10.0.0.2", 10, 2);
	wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
	assert_int_equal(sb->initiations_sent, 0);
	assert_int_equal(p->net.count, 0);
	p->net.now = responded + wg_device_timer_params(p->b.dev)->rekey_timeout;
	wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
	assert_int_equal(sb->initiations_sent, 1);
	net_pump(&p->net); /* B's initiation -> A, response -> B, B sends both */
	assert_int_equal(sb->handshakes_initiator, 1);
	assert_int_equal(p->b_to_a->queue_count, 0);
	assert_int_equal(sa->responses_sent, 1);
	assert_int_equal(p->a.delivered, 2);
	pair_free(p);
}

/* A keypair's keys do not outlive it in the thread's AEAD context, where a
 * full-sized packet (the OpenSSL path) leaves its key: freeing the keypair
 * (here: removing the peer) clears the context. */
static void test_keypair_free_clears_aead_context(void **state)
{
	struct pair *p = pair_new();
	pair_connect(p);
	uint8_t key[32], zero[32], want[16], want_zero[16], got[16], pkt[1500];
	memcpy(key, p->a_to_b->current->send_key, 32);
	memset(zero, 0, sizeof(zero));
	wg_crypto__aead_encrypt_sodium(want, NULL, 0, NULL, 0, 0, key);
	wg_crypto__aead_encrypt_sodium(want_zero, NULL, 0, NULL, 0, 0, zero);

	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 1400, 0x33);
	wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	net_pump(&p->net); /* A seals and B opens under key, on this thread */
	assert_int_equal(p->b.delivered, 2);
	wg_crypto__aead_context_tag(got);
	assert_memory_equal(got, want, 16);

	wg_device_peer_remove(p->b.dev, p->b_to_a);
	p->b_to_a = NULL;
	wg_crypto__aead_context_tag(got);
	assert_memory_not_equal(got, want, 16);
	assert_memory_equal(got, want_zero, 16);
	pair_free(p);
}

/* No answer at all: retries, then the queue is dropped and counted. */
static void test_give_up(void **state)
{
	struct pair *p = pair_new();
	p->net.drop_all = true;
	uint8_t pkt[128];
	size_t n = make_ipv4(pkt, "10.0.0.2", "10.0.0.1", 20, 9);
	for (int i = 0; i < 130; i++)
		wg_device_send(p->a.dev, p->a_to_b, pkt, n, p->net.now);
	const struct wg_device_stats *sa = wg_device_stats(p->a.dev);
	assert_int_equal(sa->drop[WG_DROP_QUEUE_OVERFLOW], 2);
	assert_int_equal(p->a_to_b->queue_count, WG_PEER_QUEUE_LEN);
	for (int i = 0; i < 150; i++)
		advance(p, 1 * S);
	assert_int_equal(sa->initiations_sent, 1 + WG_MAX_TIMER_HANDSHAKES + 1);
	assert_int_equal(sa->drop[WG_DROP_HANDSHAKE_TIMEOUT], WG_PEER_QUEUE_LEN);
	assert_int_equal(p->a_to_b->queue_count, 0);
	/* B never saw an endpoint for A: nothing to send to. */
	wg_device_send(p->b.dev, p->b_to_a, pkt, n, p->net.now);
	assert_int_equal(wg_device_stats(p->b.dev)->drop[WG_DROP_NO_ENDPOINT], 1);
	pair_free(p);
}

static int setup(void **state)
{
	return wg_crypto_init() ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_and_data),
		cmocka_unit_test(test_responder_next_rule),
		cmocka_unit_test(test_rekey_under_traffic),
		cmocka_unit_test(test_rekey_after_messages),
		cmocka_unit_test(test_roaming),
		cmocka_unit_test(test_source_check),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_replay_dropped),
		cmocka_unit_test(test_removed_peer),
		cmocka_unit_test(test_two_peers),
		cmocka_unit_test(test_cookie_under_load),
		cmocka_unit_test(test_bad_mac1_is_not_load),
		cmocka_unit_test(test_response_holds_back_initiation),
		cmocka_unit_test(test_keypair_free_clears_aead_context),
		cmocka_unit_test(test_give_up),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
