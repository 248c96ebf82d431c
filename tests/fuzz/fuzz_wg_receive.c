/* libFuzzer target for wg_device_receive. Each input runs on a fresh pair of
 * devices with an established session (A is the peer of B), so the fuzzer
 * can reach every stage of the receive path. The first byte picks how the
 * rest reaches B:
 *   0: as a raw datagram;
 *   1: as a raw datagram whose receiver index (bytes 4..7) is replaced by
 *      one of B's live indices (chosen by byte 8), so a forged transport
 *      or cookie reply gets past the index lookup to decryption;
 *   2: as the plaintext of a transport packet A encrypts for B (exercises
 *      trimming, the IPv4/IPv6 checks and the source check);
 *   3: as a datagram from a new source address (roaming attempts).
 * With WGMITM_FUZZ_WRITE_SEEDS=dir, initialisation writes a seed corpus
 * (valid messages of each type) into dir. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wg/crypto.h"
#include "wg/device.h"

struct side {
	struct wg_device *dev;
	struct wg_peer *peer;
	struct wg_endpoint addr;
	struct side *other;
};

static uint8_t priv_a[32], priv_b[32], pub_a[32], pub_b[32];
static uint64_t now = 10 * WG_NS_PER_SEC;
static uint8_t captured[8][256];
static size_t captured_len[8];
static size_t n_captured;
static bool capture;

/* Datagrams wait in a small FIFO and are delivered by pump(): ops.send
 * must not re-enter the device. */
#define NET_MAX 16
static struct {
	struct side *to;
	struct wg_endpoint from;
	size_t len;
	uint8_t buf[2048];
} net[NET_MAX];
static size_t net_count;

static void op_send(void *ctx, const struct wg_endpoint *to, const uint8_t *buf, size_t len)
{
	struct side *s = ctx;
	if (capture && n_captured < 8 && len <= 256) {
		memcpy(captured[n_captured], buf, len);
		captured_len[n_captured++] = len;
	}
	if (net_count == NET_MAX || len > sizeof(net[0].buf))
		return;
	net[net_count].to = s->other;
	net[net_count].from = s->addr;
	net[net_count].len = len;
	memcpy(net[net_count].buf, buf, len);
	net_count++;
}

/* Delivers queued datagrams, a bounded number of rounds. */
static void pump(void)
{
	for (int rounds = 0; net_count && rounds < 64; rounds++) {
		net_count--;
		/* LIFO is fine: each delivery is independent here. */
		size_t i = net_count;
		static uint8_t copy[2048];
		memcpy(copy, net[i].buf, net[i].len);
		struct wg_endpoint from = net[i].from;
		wg_device_receive(net[i].to->dev, &from, copy, net[i].len, now);
	}
	net_count = 0;
}

static volatile uint8_t sink;
static void op_deliver(void *ctx, struct wg_peer *peer, uint8_t *pkt, size_t len)
{
	for (size_t i = 0; i < len; i++)
		sink ^= pkt[i];
}

static void op_wall(void *ctx, struct timespec *out)
{
	out->tv_sec = 1700000000 + (time_t)(now / WG_NS_PER_SEC);
	out->tv_nsec = (long)(now % WG_NS_PER_SEC);
}

static const struct wg_device_ops ops = { op_send, op_deliver, op_wall };

static struct wg_endpoint ep4(const char *ip, uint16_t port)
{
	struct wg_endpoint e;
	memset(&e, 0, sizeof(e));
	e.in4.sin_family = AF_INET;
	e.in4.sin_port = htons(port);
	inet_pton(AF_INET, ip, &e.in4.sin_addr);
	return e;
}

static void pair_up(struct side *a, struct side *b)
{
	struct wg_peer_config c;
	a->dev = wg_device_new(priv_a, &ops, a);
	b->dev = wg_device_new(priv_b, &ops, b);
	if (!a->dev || !b->dev)
		abort();
	a->addr = ep4("192.0.2.1", 51000);
	b->addr = ep4("198.51.100.1", 51820);
	a->other = b;
	b->other = a;
	memset(&c, 0, sizeof(c));
	memcpy(c.public_key, pub_b, 32);
	inet_pton(AF_INET, "10.0.0.1", &c.addr4);
	a->peer = wg_device_peer_add(a->dev, &c);
	memset(&c, 0, sizeof(c));
	memcpy(c.public_key, pub_a, 32);
	inet_pton(AF_INET, "10.0.0.2", &c.addr4);
	inet_pton(AF_INET6, "fd00::2", &c.addr6);
	b->peer = wg_device_peer_add(b->dev, &c);
	if (!a->peer || !b->peer)
		abort();
	wg_peer_set_endpoint(a->peer, &b->addr);
	/* Handshake, confirmed by A's first packet. */
	uint8_t pkt[40] = { 0x45, 0, 0, 40 };
	inet_pton(AF_INET, "10.0.0.2", pkt + 12);
	inet_pton(AF_INET, "10.0.0.1", pkt + 16);
	wg_device_send(a->dev, a->peer, pkt, sizeof(pkt), now);
	pump(); /* initiation -> response -> data */
	pump();
	pump();
}

static void write_seed(const char *dir, const char *name, uint8_t mode, const uint8_t *buf,
		       size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f)
		return;
	fwrite(&mode, 1, 1, f);
	fwrite(buf, 1, len, f);
	fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (!wg_crypto_init())
		abort();
	wg_x25519_keypair(priv_a, pub_a);
	wg_x25519_keypair(priv_b, pub_b);

	const char *dir = getenv("WGMITM_FUZZ_WRITE_SEEDS");
	if (dir) {
		struct side a, b;
		capture = true;
		pair_up(&a, &b); /* initiation, response, data */
		capture = false;
		static const char *names[] = { "initiation", "response", "transport_data",
					       "transport_x" };
		for (size_t i = 0; i < n_captured && i < 4; i++)
			write_seed(dir, names[i], 0, captured[i], captured_len[i]);
		if (n_captured > 2) {
			write_seed(dir, "transport_reindexed", 1, captured[2], captured_len[2]);
			write_seed(dir, "transport_from_elsewhere", 3, captured[2],
				   captured_len[2]);
		}
		/* A cookie reply: B under load answers a new initiation. */
		struct wg_msg_cookie_reply reply;
		memset(&reply, 0, sizeof(reply));
		reply.header.type = WG_MSG_COOKIE_REPLY;
		write_seed(dir, "cookie_reply_shape", 1, (const uint8_t *)&reply, sizeof(reply));
		uint8_t ip4[48] = { 0x45, 0, 0, 48 };
		inet_pton(AF_INET, "10.0.0.2", ip4 + 12);
		inet_pton(AF_INET, "10.0.0.1", ip4 + 16);
		write_seed(dir, "plain_ipv4", 2, ip4, sizeof(ip4));
		uint8_t ip6[48] = { 0x60, 0, 0, 0, 0, 8 };
		inet_pton(AF_INET6, "fd00::2", ip6 + 8);
		inet_pton(AF_INET6, "fd00::1", ip6 + 24);
		write_seed(dir, "plain_ipv6", 2, ip6, sizeof(ip6));
		wg_device_free(a.dev);
		wg_device_free(b.dev);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[WG_MAX_DATAGRAM];
	if (size < 1 || size - 1 > sizeof(buf))
		return 0;
	uint8_t mode = data[0] & 3;
	size_t len = size - 1;
	memcpy(buf, data + 1, len);

	struct side a, b;
	pair_up(&a, &b);
	switch (mode) {
	case 0:
		wg_device_receive(b.dev, &a.addr, buf, len, now);
		break;
	case 1: {
		struct wg_peer *p = b.peer;
		uint32_t idx[4];
		size_t n = 0;
		if (p->current)
			idx[n++] = p->current->entry.index;
		if (p->previous)
			idx[n++] = p->previous->entry.index;
		if (p->next)
			idx[n++] = p->next->entry.index;
		if (p->handshake_entry.linked)
			idx[n++] = p->handshake_entry.index;
		if (len >= 8 && n)
			wg_store_le32(buf + 4, idx[(len > 8 ? buf[8] : 0) % n]);
		wg_device_receive(b.dev, &a.addr, buf, len, now);
		break;
	}
	case 2:
		wg_device_send(a.dev, a.peer, buf, len, now);
		break;
	case 3: {
		struct wg_endpoint other = ep4("203.0.113.9", 4444);
		wg_device_receive(b.dev, &other, buf, len, now);
		break;
	}
	}
	pump();
	wg_device_tick(b.dev, now + 200 * WG_NS_PER_SEC);
	net_count = 0;
	wg_device_free(a.dev);
	wg_device_free(b.dev);
	return 0;
}
