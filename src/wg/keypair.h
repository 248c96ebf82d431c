/* Transport keypairs and the pure per-packet steps of the transport path.
 *
 * wg_transport_seal / wg_transport_open / wg_transport_inner_len take a key,
 * a counter and buffers and touch no other state, so per-packet crypto can
 * move to a worker thread; the state updates (counter reservation, replay
 * window, keypair rotation, timers) stay with the caller. */
#ifndef WGMITM_WG_KEYPAIR_H
#define WGMITM_WG_KEYPAIR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wg/messages.h"
#include "wg/crypto.h"
#include "wg/replay.h"

struct wg_peer;

/* Where a local index points (one index table per device). */
enum wg_index_kind { WG_INDEX_HANDSHAKE = 1, WG_INDEX_KEYPAIR = 2 };

struct wg_index_entry {
	struct wg_index_entry *next; /* hash chain */
	uint32_t index;
	uint8_t kind; /* enum wg_index_kind */
	bool linked;
	struct wg_peer *peer;
};

/* One session (whitepaper 5.4.5); owned by its peer's current/previous/next
 * slot, allocated when a handshake completes, wiped and freed when it leaves
 * the slots. */
struct wg_keypair {
	struct wg_index_entry entry; /* local index: the receiver index the peer uses */
	uint8_t send_key[WG_KEY_LEN];
	uint8_t recv_key[WG_KEY_LEN];
	uint64_t send_counter; /* next nonce to use */
	uint64_t birth;        /* monotonic ns when derived */
	uint32_t remote_index; /* receiver index we write */
	bool initiator;        /* we sent the initiation */
	bool send_valid;       /* cleared once past REJECT_AFTER_* */
	struct wg_replay replay;
};

/* Largest inner packet: the whole datagram must fit in 65535 bytes. */
#define WG_MAX_PLAINTEXT (65535 - WG_MSG_TRANSPORT_MIN_LEN)
#define WG_MAX_DATAGRAM 65535

/* Padded plaintext length for an inner packet of len bytes: the next
 * multiple of 16, but not past the MTU (a packet already at or over the MTU
 * is not padded). */
size_t wg_transport_padded_len(size_t len, size_t mtu);

/* Writes a transport message to out: header (type 4, receiver index,
 * counter) then ChaCha20-Poly1305(plain || zero padding up to padded_len).
 * out needs WG_MSG_TRANSPORT_MIN_LEN + padded_len bytes; plain may be NULL
 * when len is 0 (keepalive); plain may not overlap out. Returns the
 * datagram length. */
size_t wg_transport_seal(uint8_t *out, uint32_t receiver_index, uint64_t counter,
			 const uint8_t key[WG_KEY_LEN], const uint8_t *plain, size_t len,
			 size_t padded_len);

/* Decrypts a transport message in place: on success the plaintext is at
 * msg + WG_MSG_TRANSPORT_HEADER_LEN, len - WG_MSG_TRANSPORT_MIN_LEN bytes.
 * The counter is read from the header. */
bool wg_transport_open(uint8_t *msg, size_t len, const uint8_t key[WG_KEY_LEN]) WG_WARN_UNUSED;

/* The length of the inner IP packet at the start of a decrypted plaintext:
 * IPv4 total length or IPv6 payload length + 40. 0 if it is neither IPv4 nor
 * IPv6, or is shorter than its header claims. */
size_t wg_transport_inner_len(const uint8_t *p, size_t len);

/* The inner source address: *family 4 or 6 and the address copied to out
 * (4 or 16 bytes). Call only on a packet wg_transport_inner_len accepted. */
void wg_transport_inner_src(const uint8_t *p, int *family, uint8_t out[16]);

#endif
