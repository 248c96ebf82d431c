/* A WireGuard peer: its identity, tunnel addresses, handshake, keypairs
 * (current / previous / next), timers, endpoint, packets waiting for a
 * session, and counters. Peers are created and destroyed by the device
 * (device.h); the struct is visible for the device and for tests, other
 * code uses the functions below. */
#ifndef WGMITM_WG_PEER_H
#define WGMITM_WG_PEER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "wg/cookie.h"
#include "wg/endpoint.h"
#include "wg/keypair.h"
#include "wg/noise.h"
#include "wg/timers.h"

/* Packets waiting for a session, per peer (as wireguard-go's
 * QueueStagedSize); when full the oldest is dropped and counted. */
#define WG_PEER_QUEUE_LEN 128

struct wg_device;

struct wg_queued_packet {
	uint8_t *data; /* malloc'd copy; only while no session exists */
	size_t len;
};

struct wg_peer {
	struct wg_device *dev;
	struct wg_peer *list_next;                          /* device's peer list */
	struct wg_peer *key_next, *addr4_next, *addr6_next; /* hash chains */
	void *user;

	uint8_t public_key[WG_KEY_LEN];
	struct in_addr addr4;  /* INADDR_ANY = none */
	struct in6_addr addr6; /* :: = none */
	bool has_addr4, has_addr6;
	uint16_t persistent_keepalive_s;

	struct wg_handshake handshake;
	struct wg_index_entry handshake_entry; /* the handshake's local index */
	struct wg_cookie_maker cookie;
	/* Keypair slots (whitepaper 5.4.5; Linux noise.c add_new_keypair). */
	struct wg_keypair *current, *previous, *next;
	struct wg_timers timers;

	struct wg_endpoint endpoint; /* AF_UNSPEC until the first authenticated packet */

	struct wg_queued_packet queue[WG_PEER_QUEUE_LEN]; /* ring */
	size_t queue_head, queue_count;

	struct timespec last_handshake_wall; /* zero = never */
	uint64_t last_handshake_mono;
	uint64_t rx_bytes, tx_bytes, rx_packets, tx_packets;
};

/* What `wgmitm peer list` shows. */
struct wg_peer_info {
	uint8_t public_key[WG_KEY_LEN];
	struct in_addr addr4;
	struct in6_addr addr6;
	struct wg_endpoint endpoint;    /* sa_family AF_UNSPEC = none yet */
	struct timespec last_handshake; /* wall clock; {0, 0} = never */
	uint64_t rx_bytes,
		tx_bytes; /* authenticated datagram bytes, handshakes included (as `wg show`) */
	uint64_t rx_packets, tx_packets; /* the same datagrams, counted */
	uint16_t persistent_keepalive_s;
	bool has_session; /* a current keypair usable for sending */
	size_t queued;    /* packets waiting for a handshake */
};

void *wg_peer_user(const struct wg_peer *peer);
void wg_peer_set_user(struct wg_peer *peer, void *user);
void wg_peer_info(const struct wg_peer *peer, struct wg_peer_info *out);
const uint8_t *wg_peer_public_key(const struct wg_peer *peer);
/* Sets where to send before the peer has reached us (a configured
 * Endpoint=); every authenticated packet from the peer overrides it. */
void wg_peer_set_endpoint(struct wg_peer *peer, const struct wg_endpoint *ep);

/* Internal to src/wg (device.c). */
/* Installs a new session in the slots: the initiator uses it at once
 * (current); the responder parks it in next until the first transport
 * packet under it arrives. Displaced keypairs are returned through
 * `dropped` (up to 2) for the caller to unlink and free. */
void wg_peer__add_keypair(struct wg_peer *peer, struct wg_keypair *kp,
			  struct wg_keypair *dropped[2]);
/* If kp is the next keypair, promotes it: next -> current -> previous; the
 * old previous is returned (to free), else NULL. *confirmed tells whether a
 * promotion happened. */
struct wg_keypair *wg_peer__received_with_keypair(struct wg_peer *peer, struct wg_keypair *kp,
						  bool *confirmed);
/* Appends a copy; returns false if it had to drop the oldest (counted by
 * the caller) or could not allocate. */
bool wg_peer__queue_push(struct wg_peer *peer, const uint8_t *pkt, size_t len,
			 bool *dropped_oldest);
struct wg_queued_packet *wg_peer__queue_front(struct wg_peer *peer);
void wg_peer__queue_pop(struct wg_peer *peer);
size_t wg_peer__queue_purge(struct wg_peer *peer);

#endif
