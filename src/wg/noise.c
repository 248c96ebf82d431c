/* Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, WireGuard's handshake, following
 * the whitepaper section 5.4.2-5.4.5 step by step:
 *
 *   IKpsk2:
 *     <- s
 *     ...
 *     -> e, es, s, ss, {t}
 *     <- e, ee, se, psk, {}
 *
 * Notation: C chaining key, H hash, k a one-time AEAD key (nonce 0).
 * Every function works on local copies and writes the handshake only after
 * every check passed; all local secrets are wiped at the single out: exit.
 */
#include "wg/noise.h"

#include <pthread.h>
#include <string.h>

#include <sodium.h>

#include "wg/cookie.h"
#include "wg/tai64n.h"

bool wg_noise_static_init(struct wg_noise_static *st, const uint8_t private_key[WG_KEY_LEN])
{
	memcpy(st->private_key, private_key, WG_KEY_LEN);
	wg_x25519_clamp(st->private_key);
	if (!wg_x25519_public(st->public_key, st->private_key)) {
		wg_noise_static_clear(st);
		return false;
	}
	wg_cookie_derive_mac1_key(st->mac1_key, st->public_key);
	wg_cookie_derive_cookie_key(st->cookie_key, st->public_key);
	return true;
}

void wg_noise_static_clear(struct wg_noise_static *st)
{
	sodium_memzero(st, sizeof(*st));
}

void wg_handshake_set_local(struct wg_handshake *hs, const struct wg_noise_static *local)
{
	/* A low-order remote key leaves zeros here; every handshake then
	 * fails with WG_NOISE_INVALID_KEY. */
	if (!wg_x25519(hs->precomputed_static_static, local->private_key, hs->remote_static))
		sodium_memzero(hs->precomputed_static_static, WG_KEY_LEN);
}

void wg_handshake_init(struct wg_handshake *hs, const struct wg_noise_static *local,
		       const uint8_t remote_static[WG_KEY_LEN],
		       const uint8_t preshared_key[WG_KEY_LEN])
{
	sodium_memzero(hs, sizeof(*hs));
	memcpy(hs->remote_static, remote_static, WG_KEY_LEN);
	if (preshared_key != NULL)
		memcpy(hs->preshared_key, preshared_key, WG_KEY_LEN);
	wg_handshake_set_local(hs, local);
	hs->state = WG_HANDSHAKE_ZEROED;
}

void wg_handshake_clear(struct wg_handshake *hs)
{
	sodium_memzero(hs->ephemeral_private, WG_KEY_LEN);
	sodium_memzero(hs->remote_ephemeral, WG_KEY_LEN);
	sodium_memzero(hs->hash, WG_HASH_LEN);
	sodium_memzero(hs->chaining_key, WG_HASH_LEN);
	hs->remote_index = 0;
	hs->state = WG_HANDSHAKE_ZEROED;
}

void wg_handshake_wipe(struct wg_handshake *hs)
{
	sodium_memzero(hs, sizeof(*hs));
}

const char *wg_noise_result_str(enum wg_noise_result r)
{
	switch (r) {
	case WG_NOISE_OK:
		return "ok";
	case WG_NOISE_DECRYPT_FAILED:
		return "decrypt failed";
	case WG_NOISE_UNKNOWN_PEER:
		return "unknown peer";
	case WG_NOISE_REPLAYED_TIMESTAMP:
		return "replayed timestamp";
	case WG_NOISE_FLOOD:
		return "initiation flood";
	case WG_NOISE_INVALID_KEY:
		return "invalid key";
	case WG_NOISE_WRONG_STATE:
		return "wrong handshake state";
	}
	return "?";
}

/* C0 = HASH(CONSTRUCTION); H0 = HASH(C0 || IDENTIFIER): constants, computed once. */
static uint8_t g_initial_ck[WG_HASH_LEN], g_initial_hash[WG_HASH_LEN];
static pthread_once_t g_initial_once = PTHREAD_ONCE_INIT;

static void initial_compute(void)
{
	wg_hash(g_initial_ck, (const uint8_t *)WG_NOISE_CONSTRUCTION,
		sizeof(WG_NOISE_CONSTRUCTION) - 1, NULL, 0);
	wg_hash(g_initial_hash, g_initial_ck, WG_HASH_LEN, (const uint8_t *)WG_NOISE_IDENTIFIER,
		sizeof(WG_NOISE_IDENTIFIER) - 1);
}

/* C = C0; H = HASH(H0 || S_resp). */
static void handshake_start(uint8_t ck[WG_HASH_LEN], uint8_t h[WG_HASH_LEN],
			    const uint8_t responder_static[WG_KEY_LEN])
{
	pthread_once(&g_initial_once, initial_compute);
	memcpy(ck, g_initial_ck, WG_HASH_LEN);
	wg_hash(h, g_initial_hash, WG_HASH_LEN, responder_static, WG_KEY_LEN);
}

/* H = HASH(H || data) */
static void mix_hash(uint8_t h[WG_HASH_LEN], const uint8_t *data, size_t len)
{
	wg_hash(h, h, WG_HASH_LEN, data, len);
}

/* e (sending or receiving a public ephemeral): C = KDF1(C, E); H = HASH(H || E). */
static void mix_ephemeral(uint8_t ck[WG_HASH_LEN], uint8_t h[WG_HASH_LEN],
			  const uint8_t e_pub[WG_KEY_LEN])
{
	wg_kdf1(ck, ck, e_pub, WG_KEY_LEN);
	mix_hash(h, e_pub, WG_KEY_LEN);
}

/* (C, k) = KDF2(C, DH(priv, pub)); false if the DH result is all zeros. */
static bool mix_dh(uint8_t ck[WG_HASH_LEN], uint8_t key[WG_KEY_LEN], const uint8_t priv[WG_KEY_LEN],
		   const uint8_t pub[WG_KEY_LEN])
{
	uint8_t dh[WG_KEY_LEN];
	bool ok = wg_x25519(dh, priv, pub);

	if (ok) {
		if (key != NULL)
			wg_kdf2(ck, key, ck, dh, WG_KEY_LEN);
		else
			wg_kdf1(ck, ck, dh, WG_KEY_LEN);
	}
	sodium_memzero(dh, sizeof(dh));
	return ok;
}

/* (C, k) = KDF2(C, precomputed DH); false if it is all zeros. */
static bool mix_precomputed_dh(uint8_t ck[WG_HASH_LEN], uint8_t key[WG_KEY_LEN],
			       const uint8_t dh[WG_KEY_LEN])
{
	static const uint8_t zero[WG_KEY_LEN];

	if (sodium_memcmp(dh, zero, WG_KEY_LEN) == 0)
		return false;
	wg_kdf2(ck, key, ck, dh, WG_KEY_LEN);
	return true;
}

/* ciphertext = AEAD(k, 0, plaintext, H); H = HASH(H || ciphertext). */
static void encrypt_and_hash(uint8_t *dst, const uint8_t *src, size_t len,
			     const uint8_t key[WG_KEY_LEN], uint8_t h[WG_HASH_LEN])
{
	wg_aead_encrypt(dst, src, len, h, WG_HASH_LEN, 0, key);
	mix_hash(h, dst, wg_encrypted_len(len));
}

/* plaintext = AEAD-open(k, 0, ciphertext, H); H = HASH(H || ciphertext). */
static bool decrypt_and_hash(uint8_t *dst, const uint8_t *src, size_t plain_len,
			     const uint8_t key[WG_KEY_LEN], uint8_t h[WG_HASH_LEN])
{
	if (!wg_aead_decrypt(dst, src, wg_encrypted_len(plain_len), h, WG_HASH_LEN, 0, key))
		return false;
	mix_hash(h, src, wg_encrypted_len(plain_len));
	return true;
}

bool wg_noise_create_initiation(const struct wg_noise_static *local, struct wg_handshake *hs,
				uint32_t local_index, const uint8_t timestamp[WG_TIMESTAMP_LEN],
				struct wg_msg_initiation *out)
{
	uint8_t ck[WG_HASH_LEN], h[WG_HASH_LEN], key[WG_KEY_LEN];
	uint8_t e_priv[WG_KEY_LEN];
	bool ok = false;

	memset(out, 0, sizeof(*out));
	out->header.type = WG_MSG_INITIATION;
	wg_store_le32(out->sender_index, local_index);
	handshake_start(ck, h, hs->remote_static);

	/* e */
	wg_x25519_keypair(e_priv, out->unencrypted_ephemeral);
	mix_ephemeral(ck, h, out->unencrypted_ephemeral);

	/* es */
	if (!mix_dh(ck, key, e_priv, hs->remote_static))
		goto out;

	/* s */
	encrypt_and_hash(out->encrypted_static, local->public_key, WG_KEY_LEN, key, h);

	/* ss */
	if (!mix_precomputed_dh(ck, key, hs->precomputed_static_static))
		goto out;

	/* {t} */
	encrypt_and_hash(out->encrypted_timestamp, timestamp, WG_TIMESTAMP_LEN, key, h);

	/* Success: the handshake now waits for the response. */
	memcpy(hs->ephemeral_private, e_priv, WG_KEY_LEN);
	memcpy(hs->hash, h, WG_HASH_LEN);
	memcpy(hs->chaining_key, ck, WG_HASH_LEN);
	sodium_memzero(hs->remote_ephemeral, WG_KEY_LEN);
	hs->local_index = local_index;
	hs->remote_index = 0;
	hs->state = WG_HANDSHAKE_CREATED_INITIATION;
	ok = true;
out:
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(h, sizeof(h));
	sodium_memzero(key, sizeof(key));
	sodium_memzero(e_priv, sizeof(e_priv));
	if (!ok)
		sodium_memzero(out, sizeof(*out));
	return ok;
}

enum wg_noise_result wg_noise_consume_initiation(const struct wg_noise_static *local,
						 const struct wg_msg_initiation *msg,
						 wg_noise_lookup_static_fn lookup, void *ctx,
						 uint64_t now_ns, struct wg_handshake **out)
{
	uint8_t ck[WG_HASH_LEN], h[WG_HASH_LEN], key[WG_KEY_LEN];
	uint8_t s_remote[WG_KEY_LEN];
	uint8_t t[WG_TIMESTAMP_LEN];
	struct wg_handshake *hs = NULL;
	enum wg_noise_result r;

	*out = NULL;
	handshake_start(ck, h, local->public_key);

	/* e */
	mix_ephemeral(ck, h, msg->unencrypted_ephemeral);

	/* es */
	if (!mix_dh(ck, key, local->private_key, msg->unencrypted_ephemeral)) {
		r = WG_NOISE_INVALID_KEY;
		goto out;
	}

	/* s */
	if (!decrypt_and_hash(s_remote, msg->encrypted_static, WG_KEY_LEN, key, h)) {
		r = WG_NOISE_DECRYPT_FAILED;
		goto out;
	}

	/* Find the peer by the static key the initiator proved it knows. */
	hs = lookup(ctx, s_remote);
	if (hs == NULL || sodium_memcmp(hs->remote_static, s_remote, WG_KEY_LEN) != 0) {
		hs = NULL;
		r = WG_NOISE_UNKNOWN_PEER;
		goto out;
	}
	*out = hs;

	/* ss */
	if (!mix_precomputed_dh(ck, key, hs->precomputed_static_static)) {
		r = WG_NOISE_INVALID_KEY;
		goto out;
	}

	/* {t} */
	if (!decrypt_and_hash(t, msg->encrypted_timestamp, WG_TIMESTAMP_LEN, key, h)) {
		r = WG_NOISE_DECRYPT_FAILED;
		goto out;
	}

	/* Replay: the timestamp must be newer than any accepted before. */
	if (!wg_tai64n_is_newer(t, hs->latest_timestamp)) {
		r = WG_NOISE_REPLAYED_TIMESTAMP;
		goto out;
	}
	/* Flood: at most one initiation per WG_HANDSHAKE_INITIATION_RATE_NS. */
	if (hs->has_consumed_initiation &&
	    now_ns - hs->last_initiation_consumption_ns < WG_HANDSHAKE_INITIATION_RATE_NS) {
		r = WG_NOISE_FLOOD;
		goto out;
	}

	/* Success: copy everything to the peer's handshake. */
	memcpy(hs->remote_ephemeral, msg->unencrypted_ephemeral, WG_KEY_LEN);
	memcpy(hs->latest_timestamp, t, WG_TIMESTAMP_LEN);
	memcpy(hs->hash, h, WG_HASH_LEN);
	memcpy(hs->chaining_key, ck, WG_HASH_LEN);
	sodium_memzero(hs->ephemeral_private, WG_KEY_LEN);
	hs->remote_index = wg_load_le32(msg->sender_index);
	hs->last_initiation_consumption_ns = now_ns;
	hs->has_consumed_initiation = true;
	hs->state = WG_HANDSHAKE_CONSUMED_INITIATION;
	r = WG_NOISE_OK;
out:
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(h, sizeof(h));
	sodium_memzero(key, sizeof(key));
	sodium_memzero(s_remote, sizeof(s_remote));
	sodium_memzero(t, sizeof(t));
	return r;
}

bool wg_noise_create_response(struct wg_handshake *hs, uint32_t local_index,
			      struct wg_msg_response *out)
{
	uint8_t ck[WG_HASH_LEN], h[WG_HASH_LEN], key[WG_KEY_LEN], tau[WG_HASH_LEN];
	uint8_t e_priv[WG_KEY_LEN];
	bool ok = false;

	memset(out, 0, sizeof(*out));
	if (hs->state != WG_HANDSHAKE_CONSUMED_INITIATION)
		goto out;
	memcpy(ck, hs->chaining_key, WG_HASH_LEN);
	memcpy(h, hs->hash, WG_HASH_LEN);
	out->header.type = WG_MSG_RESPONSE;
	wg_store_le32(out->sender_index, local_index);
	wg_store_le32(out->receiver_index, hs->remote_index);

	/* e */
	wg_x25519_keypair(e_priv, out->unencrypted_ephemeral);
	mix_ephemeral(ck, h, out->unencrypted_ephemeral);

	/* ee */
	if (!mix_dh(ck, NULL, e_priv, hs->remote_ephemeral))
		goto out;

	/* se */
	if (!mix_dh(ck, NULL, e_priv, hs->remote_static))
		goto out;

	/* psk: (C, tau, k) = KDF3(C, Q); H = HASH(H || tau) */
	wg_kdf3(ck, tau, key, ck, hs->preshared_key, WG_KEY_LEN);
	mix_hash(h, tau, WG_HASH_LEN);

	/* {} */
	encrypt_and_hash(out->encrypted_nothing, NULL, 0, key, h);

	/* Success: the session can begin. */
	memcpy(hs->ephemeral_private, e_priv, WG_KEY_LEN);
	memcpy(hs->hash, h, WG_HASH_LEN);
	memcpy(hs->chaining_key, ck, WG_HASH_LEN);
	hs->local_index = local_index;
	hs->state = WG_HANDSHAKE_CREATED_RESPONSE;
	ok = true;
out:
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(h, sizeof(h));
	sodium_memzero(key, sizeof(key));
	sodium_memzero(tau, sizeof(tau));
	sodium_memzero(e_priv, sizeof(e_priv));
	if (!ok)
		sodium_memzero(out, sizeof(*out));
	return ok;
}

enum wg_noise_result wg_noise_consume_response(const struct wg_noise_static *local,
					       const struct wg_msg_response *msg,
					       wg_noise_lookup_index_fn lookup, void *ctx,
					       struct wg_handshake **out)
{
	uint8_t ck[WG_HASH_LEN] = { 0 }, h[WG_HASH_LEN] = { 0 }, key[WG_KEY_LEN] = { 0 };
	uint8_t tau[WG_HASH_LEN] = { 0 }, e_priv[WG_KEY_LEN] = { 0 };
	uint8_t empty[1];
	struct wg_handshake *hs;
	enum wg_noise_result r;

	*out = NULL;
	hs = lookup(ctx, wg_load_le32(msg->receiver_index));
	if (hs == NULL) {
		r = WG_NOISE_UNKNOWN_PEER;
		goto out;
	}
	*out = hs;
	if (hs->state != WG_HANDSHAKE_CREATED_INITIATION) {
		r = WG_NOISE_WRONG_STATE;
		goto out;
	}
	memcpy(ck, hs->chaining_key, WG_HASH_LEN);
	memcpy(h, hs->hash, WG_HASH_LEN);
	memcpy(e_priv, hs->ephemeral_private, WG_KEY_LEN);

	/* e */
	mix_ephemeral(ck, h, msg->unencrypted_ephemeral);

	/* ee */
	if (!mix_dh(ck, NULL, e_priv, msg->unencrypted_ephemeral)) {
		r = WG_NOISE_INVALID_KEY;
		goto out;
	}

	/* se */
	if (!mix_dh(ck, NULL, local->private_key, msg->unencrypted_ephemeral)) {
		r = WG_NOISE_INVALID_KEY;
		goto out;
	}

	/* psk: (C, tau, k) = KDF3(C, Q); H = HASH(H || tau) */
	wg_kdf3(ck, tau, key, ck, hs->preshared_key, WG_KEY_LEN);
	mix_hash(h, tau, WG_HASH_LEN);

	/* {} */
	if (!decrypt_and_hash(empty, msg->encrypted_nothing, 0, key, h)) {
		r = WG_NOISE_DECRYPT_FAILED;
		goto out;
	}

	/* Success: copy everything to the handshake. */
	memcpy(hs->remote_ephemeral, msg->unencrypted_ephemeral, WG_KEY_LEN);
	memcpy(hs->hash, h, WG_HASH_LEN);
	memcpy(hs->chaining_key, ck, WG_HASH_LEN);
	hs->remote_index = wg_load_le32(msg->sender_index);
	hs->state = WG_HANDSHAKE_CONSUMED_RESPONSE;
	r = WG_NOISE_OK;
out:
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(h, sizeof(h));
	sodium_memzero(key, sizeof(key));
	sodium_memzero(tau, sizeof(tau));
	sodium_memzero(e_priv, sizeof(e_priv));
	return r;
}

bool wg_noise_begin_session(struct wg_handshake *hs, struct wg_session_keys *out)
{
	/* (T_i^send = T_r^recv, T_i^recv = T_r^send) = KDF2(C, empty) */
	if (hs->state == WG_HANDSHAKE_CONSUMED_RESPONSE) {
		wg_kdf2(out->send_key, out->recv_key, hs->chaining_key, NULL, 0);
		out->initiator = true;
	} else if (hs->state == WG_HANDSHAKE_CREATED_RESPONSE) {
		wg_kdf2(out->recv_key, out->send_key, hs->chaining_key, NULL, 0);
		out->initiator = false;
	} else {
		return false;
	}
	out->local_index = hs->local_index;
	out->remote_index = hs->remote_index;
	/* The handshake's secrets are spent: forget them. */
	sodium_memzero(hs->ephemeral_private, WG_KEY_LEN);
	sodium_memzero(hs->remote_ephemeral, WG_KEY_LEN);
	sodium_memzero(hs->hash, WG_HASH_LEN);
	sodium_memzero(hs->chaining_key, WG_HASH_LEN);
	hs->state = WG_HANDSHAKE_ZEROED;
	return true;
}

void wg_session_keys_wipe(struct wg_session_keys *keys)
{
	sodium_memzero(keys, sizeof(*keys));
}
