/* The device: receive dispatch, handshakes in both roles, transport send
 * and receive, timers. Shaped after the Linux module's receive.c / send.c,
 * sans-IO. */
#include "wg/device.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "wg/cookie.h"
#include "wg/crypto.h"
#include "wg/ratelimiter.h"
#include "wg/tai64n.h"

#define INDEX_BUCKETS 4096 /* power of two; indices are random, so the low bits spread */
#define PEER_BUCKETS 256   /* power of two */
#define RATELIMITER_ENTRIES 4096

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct wg_device {
	struct wg_noise_static local;
	struct wg_cookie_checker checker;
	struct wg_ratelimiter ratelimiter;
	struct wg_device_ops ops;
	void *ctx;
	struct wg_timer_params params;
	size_t mtu;

	struct wg_peer *peers;
	size_t n_peers;
	uint8_t hash_key[crypto_shorthash_KEYBYTES];
	struct wg_peer *by_key[PEER_BUCKETS];
	struct wg_peer *by_addr4[PEER_BUCKETS];
	struct wg_peer *by_addr6[PEER_BUCKETS];
	struct wg_index_entry *index[INDEX_BUCKETS];

	/* Load detection: handshake messages in the current window. */
	uint64_t load_window_start;
	uint32_t load_count;
	uint64_t last_under_load;
	bool has_load;

	struct wg_device_stats stats;
	/* Outgoing transport datagrams are sealed here (single-threaded). */
	uint8_t scratch[WG_MAX_DATAGRAM];
};

static const char *const drop_names[WG_DROP__COUNT] = {
	[WG_DROP_BAD_SIZE] = "bad size",
	[WG_DROP_BAD_TYPE] = "bad type",
	[WG_DROP_BAD_MAC1] = "bad mac1",
	[WG_DROP_RATELIMITED] = "ratelimited",
	[WG_DROP_UNDER_LOAD_NO_COOKIE] = "under load, no cookie",
	[WG_DROP_HANDSHAKE_FAILED] = "handshake failed",
	[WG_DROP_COOKIE_INVALID] = "cookie reply invalid",
	[WG_DROP_UNKNOWN_INDEX] = "unknown index",
	[WG_DROP_KEYPAIR_EXPIRED] = "keypair expired",
	[WG_DROP_REPLAY] = "replay",
	[WG_DROP_DECRYPT_FAILED] = "decrypt failed",
	[WG_DROP_BAD_INNER_PACKET] = "bad inner packet",
	[WG_DROP_SOURCE_MISMATCH] = "source mismatch",
	[WG_DROP_QUEUE_OVERFLOW] = "queue overflow",
	[WG_DROP_NO_ENDPOINT] = "no endpoint",
	[WG_DROP_HANDSHAKE_TIMEOUT] = "handshake timeout",
	[WG_DROP_TOO_BIG] = "too big",
	[WG_DROP_NO_MEMORY] = "no memory",
};

const char *wg_drop_reason_str(enum wg_drop_reason r)
{
	return (unsigned)r < WG_DROP__COUNT ? drop_names[r] : "?";
}

static void drop(struct wg_device *dev, enum wg_drop_reason r)
{
	dev->stats.drop[r]++;
}

/* ---- hash tables ---- */

static size_t hash_bytes(const struct wg_device *dev, const void *p, size_t len)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, p, len, dev->hash_key);
	return (size_t)(h & (PEER_BUCKETS - 1));
}

static struct wg_index_entry *index_find(struct wg_device *dev, uint32_t index)
{
	for (struct wg_index_entry *e = dev->index[index & (INDEX_BUCKETS - 1)]; e; e = e->next)
		if (e->index == index)
			return e;
	return NULL;
}

static void index_link(struct wg_device *dev, struct wg_index_entry *e)
{
	struct wg_index_entry **b = &dev->index[e->index & (INDEX_BUCKETS - 1)];
	e->next = *b;
	*b = e;
	e->linked = true;
}

static void index_unlink(struct wg_device *dev, struct wg_index_entry *e)
{
	if (!e->linked)
		return;
	for (struct wg_index_entry **pp = &dev->index[e->index & (INDEX_BUCKETS - 1)]; *pp;
	     pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	}
	e->next = NULL;
	e->linked = false;
}

/* A random local index not in use (whitepaper 5.4.2: "randomly generated"). */
static uint32_t index_alloc(struct wg_device *dev)
{
	uint32_t idx;
	do
		wg_random((uint8_t *)&idx, sizeof(idx));
	while (index_find(dev, idx));
	return idx;
}

/* ---- keypairs ---- */

static void keypair_free(struct wg_device *dev, struct wg_keypair *kp)
{
	if (!kp)
		return;
	index_unlink(dev, &kp->entry);
	sodium_memzero(kp, sizeof(*kp));
	free(kp);
	/* Its last full-sized packet may have left a key in this thread's
	 * AEAD context (see wg_crypto_forget_keys). */
	wg_crypto_forget_keys();
}

static void peer_clear_keys(struct wg_device *dev, struct wg_peer *peer)
{
	wg_handshake_clear(&peer->handshake);
	index_unlink(dev, &peer->handshake_entry);
	keypair_free(dev, peer->previous);
	keypair_free(dev, peer->current);
	keypair_free(dev, peer->next);
	peer->previous = peer->current = peer->next = NULL;
}

/* Turns session keys into a keypair that takes over the handshake's local
 * index, and installs it in the peer's slots. */
static struct wg_keypair *keypair_install(struct wg_device *dev, struct wg_peer *peer,
					  const struct wg_session_keys *keys, uint64_t now)
{
	struct wg_keypair *kp = calloc(1, sizeof(*kp));
	if (!kp)
		return NULL;
	memcpy(kp->send_key, keys->send_key, WG_KEY_LEN);
	memcpy(kp->recv_key, keys->recv_key, WG_KEY_LEN);
	kp->remote_index = keys->remote_index;
	kp->initiator = keys->initiator;
	kp->birth = now;
	kp->send_valid = true;
	wg_replay_init(&kp->replay);
	kp->entry.kind = WG_INDEX_KEYPAIR;
	kp->entry.peer = peer;
	kp->entry.index = keys->local_index;
	index_unlink(dev, &peer->handshake_entry);
	index_link(dev, &kp->entry);

	struct wg_keypair *dropped[2];
	wg_peer__add_keypair(peer, kp, dropped);
	keypair_free(dev, dropped[0]);
	keypair_free(dev, dropped[1]);
	return kp;
}

static bool keypair_can_send(struct wg_device *dev, struct wg_keypair *kp, uint64_t now)
{
	if (!kp || !kp->send_valid)
		return false;
	if (!wg_timers_keypair_can_send(&dev->params, kp->birth, kp->send_counter, now)) {
		kp->send_valid = false;
		return false;
	}
	return true;
}

static void wall_now(struct wg_device *dev, struct timespec *ts)
{
	if (dev->ops.wall_time)
		dev->ops.wall_time(dev->ctx, ts);
	else
		clock_gettime(CLOCK_REALTIME, ts);
}

static void mark_handshake(struct wg_device *dev, struct wg_peer *peer, uint64_t now)
{
	wall_now(dev, &peer->last_handshake_wall);
	peer->last_handshake_mono = now;
}

/* ---- sending ---- */

static bool has_endpoint(const struct wg_peer *peer)
{
	return wg_endpoint_len(&peer->endpoint) != 0;
}

static void send_to_peer(struct wg_device *dev, struct wg_peer *peer, const uint8_t *buf,
			 size_t len)
{
	peer->tx_bytes += len;
	peer->tx_packets++;
	dev->ops.send(dev->ctx, &peer->endpoint, buf, len);
}

/* Whitepaper 5.4.2: -> e, es, s, ss, {t}, then mac1/mac2. At most one per
 * rekey_timeout; a retry keeps counting attempts. */
static void send_initiation(struct wg_device *dev, struct wg_peer *peer, bool is_retry,
			    uint64_t now)
{
	if (!has_endpoint(peer))
		return;
	if (!wg_timers_initiation_allowed(&peer->timers, is_retry, now))
		return;

	struct wg_msg_initiation msg;
	uint8_t ts[WG_TIMESTAMP_LEN];
	struct timespec wall;
	wall_now(dev, &wall);
	wg_tai64n_from_timespec(ts, &wall);

	index_unlink(dev, &peer->handshake_entry);
	uint32_t idx = index_alloc(dev);
	if (!wg_noise_create_initiation(&dev->local, &peer->handshake, idx, ts, &msg))
		return;
	peer->handshake_entry.index = idx;
	index_link(dev, &peer->handshake_entry);
	wg_cookie_add_macs(&peer->cookie, (uint8_t *)&msg, sizeof(msg), now);

	wg_timers_any_authenticated_packet_traversal(&peer->timers, now);
	wg_timers_any_authenticated_packet_sent(&peer->timers, now);
	send_to_peer(dev, peer, (const uint8_t *)&msg, sizeof(msg));
	wg_timers_handshake_initiated(&peer->timers, now);
	dev->stats.initiations_sent++;
}

/* Encrypts one packet (len 0 = keepalive) under kp and sends it. */
static void send_transport(struct wg_device *dev, struct wg_peer *peer, struct wg_keypair *kp,
			   const uint8_t *pkt, size_t len, uint64_t now)
{
	size_t padded = wg_transport_padded_len(len, dev->mtu);
	uint64_t counter = kp->send_counter++;
	size_t n = wg_transport_seal(dev->scratch, kp->remote_index, counter, kp->send_key, pkt,
				     len, padded);

	wg_timers_any_authenticated_packet_traversal(&peer->timers, now);
	send_to_peer(dev, peer, dev->scratch, n);
	dev->stats.tx_packets++;
	dev->stats.tx_bytes += n;
	wg_timers_any_authenticated_packet_sent(&peer->timers, now);
	if (len)
		wg_timers_data_sent(&peer->timers, now);
	else
		dev->stats.tx_keepalives++;
}

/* Whitepaper 6.2, on send: rekey past REKEY_AFTER_MESSAGES, or when we
 * initiated the session and it is REKEY_AFTER_TIME old. */
static void keep_key_fresh_send(struct wg_device *dev, struct wg_peer *peer, uint64_t now)
{
	struct wg_keypair *kp = peer->current;
	if (kp && kp->send_valid &&
	    wg_timers_rekey_on_send(&dev->params, kp->initiator, kp->birth, kp->send_counter, now))
		send_initiation(dev, peer, false, now);
}

/* Sends what waits in the queue if a session allows it, else (re)starts a
 * handshake; the packets stay queued meanwhile. */
static void send_staged(struct wg_device *dev, struct wg_peer *peer, uint64_t now)
{
	struct wg_keypair *kp = peer->current;
	if (!keypair_can_send(dev, kp, now)) {
		send_initiation(dev, peer, false, now);
		return;
	}
	struct wg_queued_packet *q;
	while ((q = wg_peer__queue_front(peer))) {
		send_transport(dev, peer, kp, q->data, q->len, now);
		wg_peer__queue_pop(peer);
		if (!keypair_can_send(dev, kp, now))
			break; /* the counter ran out: the rest waits for a new session */
	}
	if (peer->queue_count)
		send_initiation(dev, peer, false, now);
	else
		keep_key_fresh_send(dev, peer, now);
}

static void send_keepalive(struct wg_device *dev, struct wg_peer *peer, uint64_t now)
{
	if (!has_endpoint(peer))
		return;
	if (peer->queue_count) {
		send_staged(dev, peer, now);
		return;
	}
	struct wg_keypair *kp = peer->current;
	if (!keypair_can_send(dev, kp, now)) {
		send_initiation(dev, peer, false, now);
		return;
	}
	send_transport(dev, peer, kp, NULL, 0, now);
	keep_key_fresh_send(dev, peer, now);
}

void wg_device_send(struct wg_device *dev, struct wg_peer *peer, const uint8_t *ip_packet,
		    size_t len, uint64_t now)
{
	if (len > WG_MAX_PLAINTEXT) {
		drop(dev, WG_DROP_TOO_BIG);
		return;
	}
	if (!has_endpoint(peer)) {
		drop(dev, WG_DROP_NO_ENDPOINT);
		return;
	}
	/* Fast path: nothing waiting and a usable session: no copy. */
	if (peer->queue_count == 0 && keypair_can_send(dev, peer->current, now)) {
		send_transport(dev, peer, peer->current, ip_packet, len, now);
		keep_key_fresh_send(dev, peer, now);
		return;
	}
	bool dropped_oldest;
	if (!wg_peer__queue_push(peer, ip_packet, len, &dropped_oldest)) {
		drop(dev, WG_DROP_NO_MEMORY);
		return;
	}
	if (dropped_oldest)
		drop(dev, WG_DROP_QUEUE_OVERFLOW);
	send_staged(dev, peer, now);
}

/* ---- receiving ---- */

static struct wg_handshake *lookup_static(void *ctx, const uint8_t remote_static[WG_KEY_LEN])
{
	struct wg_peer *peer = wg_device_peer_by_key(ctx, remote_static);
	return peer ? &peer->handshake : NULL;
}

static struct wg_handshake *lookup_handshake_index(void *ctx, uint32_t receiver_index)
{
	struct wg_index_entry *e = index_find(ctx, receiver_index);
	return e && e->kind == WG_INDEX_HANDSHAKE ? &e->peer->handshake : NULL;
}

/* More than under_load_handshakes handshake messages with a valid MAC1 in
 * the current window, or load seen less than under_load_hold ago. Counts
 * this message: call it only once MAC1 passed. */
static bool count_handshake_load(struct wg_device *dev, uint64_t now)
{
	const struct wg_timer_params *p = &dev->params;
	if (now - dev->load_window_start >= p->under_load_window || now < dev->load_window_start) {
		dev->load_window_start = now;
		dev->load_count = 0;
	}
	if (dev->load_count < UINT32_MAX)
		dev->load_count++;
	if (dev->load_count > p->under_load_handshakes) {
		if (!wg_device_under_load(dev, now))
			dev->stats.under_load_events++;
		dev->has_load = true;
		dev->last_under_load = now;
		return true;
	}
	return wg_device_under_load(dev, now);
}

bool wg_device_under_load(const struct wg_device *dev, uint64_t now)
{
	return dev->has_load && now >= dev->last_under_load &&
	       now - dev->last_under_load < dev->params.under_load_hold;
}

static void authenticated_received(struct wg_peer *peer, size_t len, uint64_t now)
{
	peer->rx_bytes += len;
	peer->rx_packets++;
	wg_timers_any_authenticated_packet_received(&peer->timers, now);
	wg_timers_any_authenticated_packet_traversal(&peer->timers, now);
}

static void handshake_failed(struct wg_device *dev, enum wg_noise_result r)
{
	drop(dev, WG_DROP_HANDSHAKE_FAILED);
	if ((unsigned)r < WG_NOISE_RESULT_COUNT)
		dev->stats.handshake_failed[r]++;
}

/* Responder: consume the initiation, answer <- e, ee, se, psk, {}, derive
 * the session (parked in next). */
static void receive_initiation(struct wg_device *dev, const struct wg_endpoint *from,
			       const uint8_t *buf, uint64_t now)
{
	const struct wg_msg_initiation *msg = (const struct wg_msg_initiation *)buf;
	struct wg_handshake *hs = NULL;
	enum wg_noise_result r =
		wg_noise_consume_initiation(&dev->local, msg, lookup_static, dev, now, &hs);
	if (r != WG_NOISE_OK) {
		handshake_failed(dev, r);
		return;
	}
	struct wg_peer *peer = container_of(hs, struct wg_peer, handshake);
	peer->endpoint = *from; /* roaming: the latest authenticated source */

	struct wg_msg_response resp;
	index_unlink(dev, &peer->handshake_entry);
	uint32_t idx = index_alloc(dev);
	if (!wg_noise_create_response(hs, idx, &resp)) {
		handshake_failed(dev, WG_NOISE_INVALID_KEY);
		return;
	}
	peer->handshake_entry.index = idx;
	index_link(dev, &peer->handshake_entry);
	wg_cookie_add_macs(&peer->cookie, (uint8_t *)&resp, sizeof(resp), now);

	struct wg_session_keys keys;
	if (!wg_noise_begin_session(hs, &keys)) {
		handshake_failed(dev, WG_NOISE_WRONG_STATE);
		return;
	}
	struct wg_keypair *kp = keypair_install(dev, peer, &keys, now);
	wg_session_keys_wipe(&keys);
	if (!kp) {
		drop(dev, WG_DROP_NO_MEMORY);
		return;
	}
	wg_timers_session_derived(&peer->timers, now);
	wg_timers_any_authenticated_packet_traversal(&peer->timers, now);
	wg_timers_any_authenticated_packet_sent(&peer->timers, now);
	send_to_peer(dev, peer, (const uint8_t *)&resp, sizeof(resp));
	wg_timers_handshake_response_sent(&peer->timers, now);
	dev->stats.responses_sent++;
	authenticated_received(peer, WG_MSG_INITIATION_LEN, now);
}

/* Initiator: consume the response; the session is usable at once. */
static void receive_response(struct wg_device *dev, const struct wg_endpoint *from,
			     const uint8_t *buf, uint64_t now)
{
	const struct wg_msg_response *msg = (const struct wg_msg_response *)buf;
	struct wg_handshake *hs = NULL;
	enum wg_noise_result r =
		wg_noise_consume_response(&dev->local, msg, lookup_handshake_index, dev, &hs);
	if (r != WG_NOISE_OK) {
		handshake_failed(dev, r);
		return;
	}
	struct wg_peer *peer = container_of(hs, struct wg_peer, handshake);
	peer->endpoint = *from;

	struct wg_session_keys keys;
	if (!wg_noise_begin_session(hs, &keys)) {
		handshake_failed(dev, WG_NOISE_WRONG_STATE);
		return;
	}
	struct wg_keypair *kp = keypair_install(dev, peer, &keys, now);
	wg_session_keys_wipe(&keys);
	if (!kp) {
		drop(dev, WG_DROP_NO_MEMORY);
		return;
	}
	wg_timers_session_derived(&peer->timers, now);
	wg_timers_handshake_complete(&peer->timers, now);
	mark_handshake(dev, peer, now);
	dev->stats.handshakes_initiator++;
	authenticated_received(peer, WG_MSG_RESPONSE_LEN, now);
	/* Sends what waited for this session, or a keepalive so the responder
	 * gets its confirmation at once. */
	send_keepalive(dev, peer, now);
}

static void receive_handshake(struct wg_device *dev, const struct wg_endpoint *from,
			      const uint8_t *buf, size_t len, enum wg_message_type type,
			      uint64_t now)
{
	/* MAC1 before the load count: a wrong one is junk from anyone, dropped
	 * at the cost of one keyed hash, and must not switch on cookie mode.
	 * Load is the work a valid MAC1 asks for (a Diffie-Hellman), what the
	 * references measure as their queue of pending handshakes. MAC2 is
	 * checked along (it only costs anything while a cookie secret is live)
	 * since whether this message tips the device into load is not known
	 * yet. */
	enum wg_cookie_mac_state mac = wg_cookie_validate(&dev->checker, buf, len, from, true, now);
	if (mac == WG_COOKIE_MAC_INVALID) {
		drop(dev, WG_DROP_BAD_MAC1);
		return;
	}
	bool under_load = count_handshake_load(dev, now);
	if (under_load) {
		if (mac != WG_COOKIE_MAC_VALID_WITH_COOKIE) {
			/* Whitepaper 5.3: answer with a cookie, do no DH. */
			struct wg_msg_cookie_reply reply;
			if (wg_cookie_create_reply(&dev->checker, &reply, buf, len, from, now)) {
				dev->ops.send(dev->ctx, from, (const uint8_t *)&reply,
					      sizeof(reply));
				dev->stats.cookie_replies_sent++;
			}
			drop(dev, WG_DROP_UNDER_LOAD_NO_COOKIE);
			return;
		}
		if (!wg_ratelimiter_allow(&dev->ratelimiter, from, now)) {
			drop(dev, WG_DROP_RATELIMITED);
			return;
		}
	}
	if (type == WG_MSG_INITIATION)
		receive_initiation(dev, from, buf, now);
	else
		receive_response(dev, from, buf, now);
}

static void receive_cookie_reply(struct wg_device *dev, const uint8_t *buf, uint64_t now)
{
	const struct wg_msg_cookie_reply *msg = (const struct wg_msg_cookie_reply *)buf;
	struct wg_index_entry *e = index_find(dev, wg_load_le32(msg->receiver_index));
	if (!e) {
		drop(dev, WG_DROP_UNKNOWN_INDEX);
		return;
	}
	if (!wg_cookie_consume_reply(&e->peer->cookie, msg, now)) {
		drop(dev, WG_DROP_COOKIE_INVALID);
		return;
	}
	dev->stats.cookie_replies_received++;
}

/* State updates after a transport packet decrypted and passed the replay
 * window (Linux receive.c wg_packet_consume_data_done). */
static void transport_received(struct wg_device *dev, struct wg_peer *peer, struct wg_keypair *kp,
			       const struct wg_endpoint *from, uint8_t *plain, size_t plen,
			       size_t len, uint64_t now)
{
	peer->endpoint = *from; /* roaming */
	dev->stats.rx_packets++;
	dev->stats.rx_bytes += len;

	bool confirmed;
	struct wg_keypair *old = wg_peer__received_with_keypair(peer, kp, &confirmed);
	if (confirmed) {
		/* The initiator used the responder's next keypair: it is now
		 * current, and the handshake is complete on this side too. */
		keypair_free(dev, old);
		wg_timers_handshake_complete(&peer->timers, now);
		mark_handshake(dev, peer, now);
		dev->stats.handshakes_responder++;
		send_staged(dev, peer, now);
	}

	/* Whitepaper 6.2, on receive. */
	struct wg_keypair *cur = peer->current;
	if (cur && cur->send_valid &&
	    wg_timers_rekey_on_receive(&peer->timers, cur->initiator, cur->birth, now))
		send_initiation(dev, peer, false, now);

	authenticated_received(peer, len, now);
	if (plen == 0) {
		dev->stats.rx_keepalives++;
		return;
	}
	wg_timers_data_received(&peer->timers, now);

	size_t inner = wg_transport_inner_len(plain, plen);
	if (!inner) {
		drop(dev, WG_DROP_BAD_INNER_PACKET);
		return;
	}
	int family;
	uint8_t src[16];
	wg_transport_inner_src(plain, &family, src);
	bool ok = family == 4 ? peer->has_addr4 && memcmp(src, &peer->addr4, 4) == 0
			      : peer->has_addr6 && memcmp(src, &peer->addr6, 16) == 0;
	if (!ok) {
		drop(dev, WG_DROP_SOURCE_MISMATCH);
		return;
	}
	dev->stats.rx_inner_bytes += inner;
	dev->ops.deliver(dev->ctx, peer, plain, inner);
}

static void receive_transport(struct wg_device *dev, const struct wg_endpoint *from, uint8_t *buf,
			      size_t len, uint64_t now)
{
	const struct wg_msg_transport *msg = (const struct wg_msg_transport *)buf;
	struct wg_index_entry *e = index_find(dev, wg_load_le32(msg->receiver_index));
	if (!e || e->kind != WG_INDEX_KEYPAIR) {
		drop(dev, WG_DROP_UNKNOWN_INDEX);
		return;
	}
	struct wg_keypair *kp = container_of(e, struct wg_keypair, entry);
	uint64_t counter = wg_load_le64(msg->counter);
	if (!wg_timers_keypair_can_receive(&dev->params, kp->birth, now)) {
		/* The peer still talks on a session we retired (its timers run
		 * slower than ours, or it only receives and never rekeys): if
		 * the packet is authentic, offer a new session now instead of
		 * dropping its traffic until its own timers notice. Initiations
		 * are rate-limited by the timers, so replays cost nothing. */
		if (wg_replay_check(&kp->replay, counter) &&
		    wg_transport_open(buf, len, kp->recv_key) &&
		    wg_replay_update(&kp->replay, counter))
			send_initiation(dev, e->peer, false, now);
		drop(dev, WG_DROP_KEYPAIR_EXPIRED);
		return;
	}
	/* Cheap pre-check; the window is only updated after authentication. */
	if (!wg_replay_check(&kp->replay, counter)) {
		drop(dev, WG_DROP_REPLAY);
		return;
	}
	if (!wg_transport_open(buf, len, kp->recv_key)) {
		drop(dev, WG_DROP_DECRYPT_FAILED);
		return;
	}
	if (!wg_replay_update(&kp->replay, counter)) {
		drop(dev, WG_DROP_REPLAY);
		return;
	}
	transport_received(dev, e->peer, kp, from, buf + WG_MSG_TRANSPORT_HEADER_LEN,
			   len - WG_MSG_TRANSPORT_MIN_LEN, len, now);
}

void wg_device_receive(struct wg_device *dev, const struct wg_endpoint *from, uint8_t *buf,
		       size_t len, uint64_t now)
{
	dev->stats.rx_datagrams++;
	dev->stats.rx_datagram_bytes += len;

	/* Exact size per type first: the cheapest rejection of junk. */
	enum wg_message_type type = wg_message_classify(buf, len);
	switch (type) {
	case WG_MSG_INITIATION:
	case WG_MSG_RESPONSE:
		receive_handshake(dev, from, buf, len, type, now);
		return;
	case WG_MSG_COOKIE_REPLY:
		receive_cookie_reply(dev, buf, now);
		return;
	case WG_MSG_TRANSPORT:
		receive_transport(dev, from, buf, len, now);
		return;
	case WG_MSG_INVALID:
		break;
	}
	if (len >= 4 && buf[1] == 0 && buf[2] == 0 && buf[3] == 0 && buf[0] >= WG_MSG_INITIATION &&
	    buf[0] <= WG_MSG_TRANSPORT)
		drop(dev, WG_DROP_BAD_SIZE);
	else if (len < 4)
		drop(dev, WG_DROP_BAD_SIZE);
	else
		drop(dev, WG_DROP_BAD_TYPE);
}

/* ---- timers ---- */

static void peer_fire_timers(struct wg_device *dev, struct wg_peer *peer, uint64_t now)
{
	unsigned a = wg_timers_expire(&peer->timers, now);
	if (a & WG_TIMER_RETRY_HANDSHAKE)
		send_initiation(dev, peer, true, now);
	if (a & WG_TIMER_GIVE_UP)
		dev->stats.drop[WG_DROP_HANDSHAKE_TIMEOUT] += wg_peer__queue_purge(peer);
	if (a & WG_TIMER_NEW_HANDSHAKE)
		send_initiation(dev, peer, false, now);
	if (a & (WG_TIMER_SEND_KEEPALIVE | WG_TIMER_PERSISTENT_KEEPALIVE))
		send_keepalive(dev, peer, now);
	if (a & WG_TIMER_ZERO_KEYS)
		peer_clear_keys(dev, peer);
}

uint64_t wg_device_tick(struct wg_device *dev, uint64_t now)
{
	uint64_t next = WG_TIMER_OFF;
	for (struct wg_peer *peer = dev->peers; peer; peer = peer->list_next) {
		if (wg_timers_next(&peer->timers) <= now)
			peer_fire_timers(dev, peer, now);
		uint64_t n = wg_timers_next(&peer->timers);
		if (n < next)
			next = n;
	}
	return next;
}

uint64_t wg_device_next_deadline(const struct wg_device *dev)
{
	uint64_t next = WG_TIMER_OFF;
	for (const struct wg_peer *peer = dev->peers; peer; peer = peer->list_next) {
		uint64_t n = wg_timers_next(&peer->timers);
		if (n < next)
			next = n;
	}
	return next;
}

/* ---- device and peers ---- */

struct wg_device *wg_device_new(const uint8_t private_key[WG_KEY_LEN],
				const struct wg_device_ops *ops, void *ctx)
{
	if (!wg_crypto_init())
		return NULL;
	struct wg_device *dev = calloc(1, sizeof(*dev));
	if (!dev)
		return NULL;
	if (!wg_noise_static_init(&dev->local, private_key))
		goto fail_free;
	if (!wg_ratelimiter_init(&dev->ratelimiter, RATELIMITER_ENTRIES))
		goto fail_static;
	wg_cookie_checker_init(&dev->checker, &dev->local);
	dev->ops = *ops;
	dev->ctx = ctx;
	wg_timer_params_default(&dev->params);
	dev->mtu = WG_DEFAULT_MTU;
	wg_random(dev->hash_key, sizeof(dev->hash_key));
	return dev;

fail_static:
	wg_noise_static_clear(&dev->local);
fail_free:
	sodium_memzero(dev, sizeof(*dev));
	free(dev);
	return NULL;
}

static void peer_unlink(struct wg_device *dev, struct wg_peer *peer)
{
	struct wg_peer **pp;
	for (pp = &dev->peers; *pp; pp = &(*pp)->list_next)
		if (*pp == peer) {
			*pp = peer->list_next;
			break;
		}
	for (pp = &dev->by_key[hash_bytes(dev, peer->public_key, WG_KEY_LEN)]; *pp;
	     pp = &(*pp)->key_next)
		if (*pp == peer) {
			*pp = peer->key_next;
			break;
		}
	if (peer->has_addr4)
		for (pp = &dev->by_addr4[hash_bytes(dev, &peer->addr4, 4)]; *pp;
		     pp = &(*pp)->addr4_next)
			if (*pp == peer) {
				*pp = peer->addr4_next;
				break;
			}
	if (peer->has_addr6)
		for (pp = &dev->by_addr6[hash_bytes(dev, &peer->addr6, 16)]; *pp;
		     pp = &(*pp)->addr6_next)
			if (*pp == peer) {
				*pp = peer->addr6_next;
				break;
			}
	dev->n_peers--;
}

static void peer_destroy(struct wg_device *dev, struct wg_peer *peer)
{
	peer_clear_keys(dev, peer);
	wg_peer__queue_purge(peer);
	wg_timers_stop(&peer->timers);
	wg_handshake_wipe(&peer->handshake);
	wg_cookie_maker_wipe(&peer->cookie);
	sodium_memzero(peer, sizeof(*peer));
	free(peer);
}

void wg_device_free(struct wg_device *dev)
{
	if (!dev)
		return;
	while (dev->peers) {
		struct wg_peer *peer = dev->peers;
		peer_unlink(dev, peer);
		peer_destroy(dev, peer);
	}
	wg_ratelimiter_free(&dev->ratelimiter);
	wg_cookie_checker_wipe(&dev->checker);
	wg_noise_static_clear(&dev->local);
	sodium_memzero(dev, sizeof(*dev));
	free(dev);
}

const uint8_t *wg_device_public_key(const struct wg_device *dev)
{
	return dev->local.public_key;
}

static struct wg_peer *peer_by_addr4(struct wg_device *dev, const void *a)
{
	for (struct wg_peer *p = dev->by_addr4[hash_bytes(dev, a, 4)]; p; p = p->addr4_next)
		if (memcmp(&p->addr4, a, 4) == 0)
			return p;
	return NULL;
}

static struct wg_peer *peer_by_addr6(struct wg_device *dev, const void *a)
{
	for (struct wg_peer *p = dev->by_addr6[hash_bytes(dev, a, 16)]; p; p = p->addr6_next)
		if (memcmp(&p->addr6, a, 16) == 0)
			return p;
	return NULL;
}

struct wg_peer *wg_device_peer_add(struct wg_device *dev, const struct wg_peer_config *cfg)
{
	static const uint8_t zero6[16];
	bool has4 = cfg->addr4.s_addr != 0;
	bool has6 = memcmp(&cfg->addr6, zero6, 16) != 0;

	if (sodium_memcmp(cfg->public_key, dev->local.public_key, WG_KEY_LEN) == 0) {
		errno = EINVAL;
		return NULL;
	}
	if (wg_device_peer_by_key(dev, cfg->public_key) ||
	    (has4 && peer_by_addr4(dev, &cfg->addr4)) ||
	    (has6 && peer_by_addr6(dev, &cfg->addr6))) {
		errno = EEXIST;
		return NULL;
	}
	struct wg_peer *peer = calloc(1, sizeof(*peer));
	if (!peer) {
		errno = ENOMEM;
		return NULL;
	}
	peer->dev = dev;
	peer->user = cfg->user;
	memcpy(peer->public_key, cfg->public_key, WG_KEY_LEN);
	peer->addr4 = cfg->addr4;
	peer->addr6 = cfg->addr6;
	peer->has_addr4 = has4;
	peer->has_addr6 = has6;
	peer->persistent_keepalive_s = cfg->persistent_keepalive_s;
	wg_handshake_init(&peer->handshake, &dev->local, cfg->public_key,
			  cfg->has_psk ? cfg->preshared_key : NULL);
	peer->handshake_entry.kind = WG_INDEX_HANDSHAKE;
	peer->handshake_entry.peer = peer;
	wg_cookie_maker_init(&peer->cookie, cfg->public_key);
	wg_timers_init(&peer->timers, &dev->params,
		       (uint64_t)cfg->persistent_keepalive_s * WG_NS_PER_SEC);

	peer->list_next = dev->peers;
	dev->peers = peer;
	size_t h = hash_bytes(dev, peer->public_key, WG_KEY_LEN);
	peer->key_next = dev->by_key[h];
	dev->by_key[h] = peer;
	if (has4) {
		h = hash_bytes(dev, &peer->addr4, 4);
		peer->addr4_next = dev->by_addr4[h];
		dev->by_addr4[h] = peer;
	}
	if (has6) {
		h = hash_bytes(dev, &peer->addr6, 16);
		peer->addr6_next = dev->by_addr6[h];
		dev->by_addr6[h] = peer;
	}
	dev->n_peers++;
	return peer;
}

void wg_device_peer_remove(struct wg_device *dev, struct wg_peer *peer)
{
	if (!peer)
		return;
	peer_unlink(dev, peer);
	peer_destroy(dev, peer);
}

struct wg_peer *wg_device_peer_by_key(struct wg_device *dev, const uint8_t public_key[WG_KEY_LEN])
{
	for (struct wg_peer *p = dev->by_key[hash_bytes(dev, public_key, WG_KEY_LEN)]; p;
	     p = p->key_next)
		if (sodium_memcmp(p->public_key, public_key, WG_KEY_LEN) == 0)
			return p;
	return NULL;
}

struct wg_peer *wg_device_peer_by_dst(struct wg_device *dev, const uint8_t *ip_packet, size_t len)
{
	if (len >= 20 && ip_packet[0] >> 4 == 4)
		return peer_by_addr4(dev, ip_packet + 16);
	if (len >= 40 && ip_packet[0] >> 4 == 6)
		return peer_by_addr6(dev, ip_packet + 24);
	return NULL;
}

struct wg_peer *wg_device_peer_first(struct wg_device *dev)
{
	return dev->peers;
}

struct wg_peer *wg_device_peer_next(struct wg_peer *peer)
{
	return peer->list_next;
}

size_t wg_device_peer_count(const struct wg_device *dev)
{
	return dev->n_peers;
}

void wg_device_set_timer_params(struct wg_device *dev, const struct wg_timer_params *params)
{
	dev->params = *params;
}

const struct wg_timer_params *wg_device_timer_params(const struct wg_device *dev)
{
	return &dev->params;
}

void wg_device_set_mtu(struct wg_device *dev, size_t mtu)
{
	dev->mtu = mtu < WG_MAX_PLAINTEXT ? mtu : WG_MAX_PLAINTEXT;
}

size_t wg_device_mtu(const struct wg_device *dev)
{
	return dev->mtu;
}

const struct wg_device_stats *wg_device_stats(const struct wg_device *dev)
{
	return &dev->stats;
}
