/* Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it (whitepaper
 * 5.4), both roles, sans I/O: messages in, messages out, state in a
 * struct wg_handshake the caller owns (one per peer).
 *
 *   <- s
 *   ...
 *   -> e, es, s, ss, {t}
 *   <- e, ee, se, psk, {}
 *
 * MAC1/MAC2 are not touched here: cookie.h adds and checks them.
 * Functions write to a handshake only after every check passed.
 * Not thread-safe per handshake: the caller serialises access to one
 * wg_handshake (different handshakes may be used concurrently).
 */
#ifndef WGMITM_WG_NOISE_H
#define WGMITM_WG_NOISE_H

#include <stdbool.h>
#include <stdint.h>

#include "wg/crypto.h"
#include "wg/messages.h"

/* Our static identity, with the keys derived from our public key. */
struct wg_noise_static {
	uint8_t private_key[WG_KEY_LEN];
	uint8_t public_key[WG_KEY_LEN];
	uint8_t mac1_key[WG_HASH_LEN]; /* HASH("mac1----" || public_key): checks incoming mac1 */
	uint8_t cookie_key
		[WG_HASH_LEN]; /* HASH("cookie--" || public_key): encrypts our cookie replies */
};

/* Clamps a copy of private_key and derives the rest. false if the public
 * key would be all zeros (never for a clamped key; kept for safety). */
bool wg_noise_static_init(struct wg_noise_static *st,
			  const uint8_t private_key[WG_KEY_LEN]) WG_WARN_UNUSED;
void wg_noise_static_clear(struct wg_noise_static *st);

enum wg_handshake_state {
	WG_HANDSHAKE_ZEROED = 0,
	WG_HANDSHAKE_CREATED_INITIATION,
	WG_HANDSHAKE_CONSUMED_INITIATION,
	WG_HANDSHAKE_CREATED_RESPONSE,
	WG_HANDSHAKE_CONSUMED_RESPONSE,
};

struct wg_handshake {
	enum wg_handshake_state state;
	uint8_t remote_static[WG_KEY_LEN];
	uint8_t precomputed_static_static
		[WG_KEY_LEN];              /* DH(s, S_remote); zeros if S_remote is low-order */
	uint8_t preshared_key[WG_KEY_LEN]; /* zeros when none */
	uint8_t ephemeral_private[WG_KEY_LEN];
	uint8_t remote_ephemeral[WG_KEY_LEN];
	uint8_t hash[WG_HASH_LEN];
	uint8_t chaining_key[WG_HASH_LEN];
	uint8_t latest_timestamp[WG_TIMESTAMP_LEN]; /* newest initiation timestamp accepted */
	uint64_t last_initiation_consumption_ns; /* monotonic; valid if has_consumed_initiation */
	bool has_consumed_initiation;
	uint32_t local_index;  /* ours, chosen by the caller */
	uint32_t remote_index; /* theirs */
};

/* Sets up a peer's handshake: remote static key, optional preshared key
 * (NULL = none, i.e. zeros), and precomputes DH(s, S_remote). A low-order
 * remote key is accepted here, but every handshake with it will fail. */
void wg_handshake_init(struct wg_handshake *hs, const struct wg_noise_static *local,
		       const uint8_t remote_static[WG_KEY_LEN],
		       const uint8_t preshared_key[WG_KEY_LEN]);
/* Recomputes the precomputed DH after our static key changed. */
void wg_handshake_set_local(struct wg_handshake *hs, const struct wg_noise_static *local);
/* Forgets the handshake in progress (ephemeral secrets, hash, chaining key)
 * and returns to WG_HANDSHAKE_ZEROED; keeps the peer's identity, the
 * preshared key and the replay/flood state. */
void wg_handshake_clear(struct wg_handshake *hs);
/* Wipes everything. */
void wg_handshake_wipe(struct wg_handshake *hs);

enum wg_noise_result {
	WG_NOISE_OK = 0,
	WG_NOISE_DECRYPT_FAILED, /* an AEAD tag did not verify (wrong keys, tampering, wrong PSK) */
	WG_NOISE_UNKNOWN_PEER,   /* no handshake for this static key / receiver index */
	WG_NOISE_REPLAYED_TIMESTAMP, /* TAI64N not newer than the peer's latest */
	WG_NOISE_FLOOD,              /* initiations from this peer less than 1 s / 50 apart */
	WG_NOISE_INVALID_KEY,        /* a DH result was all zeros (low-order point) */
	WG_NOISE_WRONG_STATE,        /* e.g. a response when no initiation was sent */
};
const char *wg_noise_result_str(enum wg_noise_result r);

/* Finds the handshake of the peer with this static key; NULL if none. */
typedef struct wg_handshake *(*wg_noise_lookup_static_fn)(void *ctx,
							  const uint8_t remote_static[WG_KEY_LEN]);
/* Finds the handshake whose local_index is receiver_index; NULL if none. */
typedef struct wg_handshake *(*wg_noise_lookup_index_fn)(void *ctx, uint32_t receiver_index);

/* Initiator: -> e, es, s, ss, {t}. Fills *out except macs (zeroed; see
 * wg_cookie_add_macs). hs becomes CREATED_INITIATION with local_index.
 * false (hs untouched) if a DH result is all zeros. */
bool wg_noise_create_initiation(const struct wg_noise_static *local, struct wg_handshake *hs,
				uint32_t local_index, const uint8_t timestamp[WG_TIMESTAMP_LEN],
				struct wg_msg_initiation *out) WG_WARN_UNUSED;

/* Responder: consumes an initiation (mac1 must have been checked already).
 * On WG_NOISE_OK *out is the peer's handshake, now CONSUMED_INITIATION, with
 * its remote_index, latest_timestamp and last_initiation_consumption_ns
 * (= now_ns) updated. On any other result no handshake is modified and
 * *out is the peer's handshake if it was identified, else NULL. */
enum wg_noise_result wg_noise_consume_initiation(const struct wg_noise_static *local,
						 const struct wg_msg_initiation *msg,
						 wg_noise_lookup_static_fn lookup, void *ctx,
						 uint64_t now_ns,
						 struct wg_handshake **out) WG_WARN_UNUSED;

/* Responder: <- e, ee, se, psk, {}. hs must be CONSUMED_INITIATION; it
 * becomes CREATED_RESPONSE with local_index. Fills *out except macs. */
bool wg_noise_create_response(struct wg_handshake *hs, uint32_t local_index,
			      struct wg_msg_response *out) WG_WARN_UNUSED;

/* Initiator: consumes a response (mac1 checked already). lookup finds the
 * handshake by the message's receiver index; it must be CREATED_INITIATION.
 * On WG_NOISE_OK it becomes CONSUMED_RESPONSE with remote_index set. */
enum wg_noise_result wg_noise_consume_response(const struct wg_noise_static *local,
					       const struct wg_msg_response *msg,
					       wg_noise_lookup_index_fn lookup, void *ctx,
					       struct wg_handshake **out) WG_WARN_UNUSED;

/* Transport keys of one session. */
struct wg_session_keys {
	uint8_t send_key[WG_KEY_LEN];
	uint8_t recv_key[WG_KEY_LEN];
	uint32_t local_index;  /* receiver index the peer puts in packets for us */
	uint32_t remote_index; /* receiver index we put in packets for the peer */
	bool initiator;
};

/* Derives the transport keys once the handshake is complete (initiator:
 * CONSUMED_RESPONSE; responder: CREATED_RESPONSE), then wipes the ephemeral
 * secrets, hash and chaining key and returns hs to ZEROED. false (nothing
 * changed) in any other state. */
bool wg_noise_begin_session(struct wg_handshake *hs, struct wg_session_keys *out) WG_WARN_UNUSED;
void wg_session_keys_wipe(struct wg_session_keys *keys);

#endif
