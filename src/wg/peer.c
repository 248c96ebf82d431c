#include "wg/peer.h"

#include <stdlib.h>
#include <string.h>

void *wg_peer_user(const struct wg_peer *peer)
{
	return peer->user;
}

void wg_peer_set_user(struct wg_peer *peer, void *user)
{
	peer->user = user;
}

const uint8_t *wg_peer_public_key(const struct wg_peer *peer)
{
	return peer->public_key;
}

void wg_peer_set_endpoint(struct wg_peer *peer, const struct wg_endpoint *ep)
{
	peer->endpoint = *ep;
}

void wg_peer_info(const struct wg_peer *peer, struct wg_peer_info *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->public_key, peer->public_key, WG_KEY_LEN);
	out->addr4 = peer->addr4;
	out->addr6 = peer->addr6;
	out->endpoint = peer->endpoint;
	out->last_handshake = peer->last_handshake_wall;
	out->rx_bytes = peer->rx_bytes;
	out->tx_bytes = peer->tx_bytes;
	out->rx_packets = peer->rx_packets;
	out->tx_packets = peer->tx_packets;
	out->persistent_keepalive_s = peer->persistent_keepalive_s;
	out->has_session = peer->current && peer->current->send_valid;
	out->queued = peer->queue_count;
}

void wg_peer__add_keypair(struct wg_peer *peer, struct wg_keypair *kp,
			  struct wg_keypair *dropped[2])
{
	dropped[0] = dropped[1] = NULL;
	if (kp->initiator) {
		/* We sent the initiation and got the response: the new keypair is
		 * confirmed and usable now. A pending next (from a simultaneous
		 * handshake where we were responder) becomes previous so packets
		 * already sent under it still decrypt. */
		if (peer->next) {
			dropped[0] = peer->current;
			dropped[1] = peer->previous;
			peer->previous = peer->next;
			peer->next = NULL;
		} else {
			dropped[0] = peer->previous;
			peer->previous = peer->current;
		}
		peer->current = kp;
	} else {
		/* Responder: we may not send with it until the initiator proves it
		 * has it (its first transport packet), so it waits in next; the old
		 * next and previous go. */
		dropped[0] = peer->next;
		dropped[1] = peer->previous;
		peer->previous = NULL;
		peer->next = kp;
	}
}

struct wg_keypair *wg_peer__received_with_keypair(struct wg_peer *peer, struct wg_keypair *kp,
						  bool *confirmed)
{
	*confirmed = false;
	if (!kp || peer->next != kp)
		return NULL;
	struct wg_keypair *old = peer->previous;
	peer->previous = peer->current;
	peer->current = kp;
	peer->next = NULL;
	*confirmed = true;
	return old;
}

bool wg_peer__queue_push(struct wg_peer *peer, const uint8_t *pkt, size_t len, bool *dropped_oldest)
{
	*dropped_oldest = false;
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return false;
	if (len)
		memcpy(copy, pkt, len);
	if (peer->queue_count == WG_PEER_QUEUE_LEN) {
		wg_peer__queue_pop(peer);
		*dropped_oldest = true;
	}
	size_t tail = (peer->queue_head + peer->queue_count) % WG_PEER_QUEUE_LEN;
	peer->queue[tail].data = copy;
	peer->queue[tail].len = len;
	peer->queue_count++;
	return true;
}

struct wg_queued_packet *wg_peer__queue_front(struct wg_peer *peer)
{
	return peer->queue_count ? &peer->queue[peer->queue_head] : NULL;
}

void wg_peer__queue_pop(struct wg_peer *peer)
{
	if (!peer->queue_count)
		return;
	struct wg_queued_packet *q = &peer->queue[peer->queue_head];
	free(q->data);
	q->data = NULL;
	q->len = 0;
	peer->queue_head = (peer->queue_head + 1) % WG_PEER_QUEUE_LEN;
	peer->queue_count--;
}

size_t wg_peer__queue_purge(struct wg_peer *peer)
{
	size_t n = peer->queue_count;
	while (peer->queue_count)
		wg_peer__queue_pop(peer);
	return n;
}
