/* MAC1, MAC2 and cookie replies: whitepaper 5.4.4 (macs) and 5.4.7
 * (cookie replies), wireguard-go device/cookie.go, the kernel's cookie.c. */
#include "wg/cookie.h"

#include <string.h>

#include <sodium.h>

/* HASH(label || public_key) */
static void derive_key(uint8_t out[WG_HASH_LEN], const char label[WG_LABEL_LEN],
		       const uint8_t public_key[WG_KEY_LEN])
{
	wg_hash(out, (const uint8_t *)label, WG_LABEL_LEN, public_key, WG_KEY_LEN);
}

void wg_cookie_derive_mac1_key(uint8_t out[WG_HASH_LEN], const uint8_t public_key[WG_KEY_LEN])
{
	derive_key(out, WG_LABEL_MAC1, public_key);
}

void wg_cookie_derive_cookie_key(uint8_t out[WG_HASH_LEN], const uint8_t public_key[WG_KEY_LEN])
{
	derive_key(out, WG_LABEL_COOKIE, public_key);
}

/* Only initiations and responses carry macs, in their last 32 bytes. */
static bool has_macs(size_t len)
{
	return len == WG_MSG_INITIATION_LEN || len == WG_MSG_RESPONSE_LEN;
}

/* mac1 = MAC(key, msg up to mac1) */
static void compute_mac1(uint8_t out[WG_MAC_LEN], const uint8_t key[WG_HASH_LEN],
			 const uint8_t *msg, size_t len)
{
	wg_mac(out, key, WG_HASH_LEN, msg, len - sizeof(struct wg_msg_macs));
}

/* mac2 = MAC(cookie, msg up to mac2) */
static void compute_mac2(uint8_t out[WG_MAC_LEN], const uint8_t cookie[WG_COOKIE_LEN],
			 const uint8_t *msg, size_t len)
{
	wg_mac(out, cookie, WG_COOKIE_LEN, msg, len - WG_MAC_LEN);
}

static bool secret_fresh(const struct wg_cookie_checker *c, uint64_t now_ns)
{
	return c->has_secret && now_ns - c->secret_birth_ns < WG_COOKIE_REFRESH_TIME_NS;
}

/* cookie = MAC(secret, source IP || port); false for an unset source. */
static bool compute_cookie(uint8_t out[WG_COOKIE_LEN], const struct wg_cookie_checker *c,
			   const struct wg_endpoint *src)
{
	uint8_t source[WG_ENDPOINT_SOURCE_MAX];
	size_t n = wg_endpoint_cookie_source(src, source);

	if (n == 0)
		return false;
	wg_mac(out, c->secret, sizeof(c->secret), source, n);
	return true;
}

void wg_cookie_checker_init(struct wg_cookie_checker *c, const struct wg_noise_static *local)
{
	sodium_memzero(c, sizeof(*c));
	memcpy(c->mac1_key, local->mac1_key, WG_HASH_LEN);
	memcpy(c->cookie_key, local->cookie_key, WG_HASH_LEN);
}

void wg_cookie_checker_wipe(struct wg_cookie_checker *c)
{
	sodium_memzero(c, sizeof(*c));
}

enum wg_cookie_mac_state wg_cookie_validate(const struct wg_cookie_checker *c, const uint8_t *msg,
					    size_t len, const struct wg_endpoint *src,
					    bool check_mac2, uint64_t now_ns)
{
	const struct wg_msg_macs *macs;
	uint8_t mac[WG_MAC_LEN];
	uint8_t cookie[WG_COOKIE_LEN];
	enum wg_cookie_mac_state state = WG_COOKIE_MAC_INVALID;

	if (!has_macs(len))
		return WG_COOKIE_MAC_INVALID;
	macs = (const struct wg_msg_macs *)(msg + len - sizeof(struct wg_msg_macs));

	/* mac1: proves the sender knows our public key. */
	compute_mac1(mac, c->mac1_key, msg, len);
	if (sodium_memcmp(mac, macs->mac1, WG_MAC_LEN) != 0)
		goto out;
	state = WG_COOKIE_MAC_VALID_NO_COOKIE;
	if (!check_mac2 || !secret_fresh(c, now_ns) || !compute_cookie(cookie, c, src))
		goto out;

	/* mac2: proves the sender received our cookie at this address. */
	compute_mac2(mac, cookie, msg, len);
	if (sodium_memcmp(mac, macs->mac2, WG_MAC_LEN) == 0)
		state = WG_COOKIE_MAC_VALID_WITH_COOKIE;
out:
	sodium_memzero(cookie, sizeof(cookie));
	sodium_memzero(mac, sizeof(mac));
	return state;
}

bool wg_cookie_create_reply(struct wg_cookie_checker *c, struct wg_msg_cookie_reply *out,
			    const uint8_t *msg, size_t len, const struct wg_endpoint *src,
			    uint64_t now_ns)
{
	const struct wg_msg_macs *macs;
	uint8_t cookie[WG_COOKIE_LEN];
	bool ok = false;

	if (!has_macs(len))
		return false;
	macs = (const struct wg_msg_macs *)(msg + len - sizeof(struct wg_msg_macs));

	/* Rotate the secret every COOKIE_REFRESH_TIME. */
	if (!secret_fresh(c, now_ns)) {
		wg_random(c->secret, sizeof(c->secret));
		c->secret_birth_ns = now_ns;
		c->has_secret = true;
	}
	if (!compute_cookie(cookie, c, src))
		goto out;

	memset(out, 0, sizeof(*out));
	out->header.type = WG_MSG_COOKIE_REPLY;
	/* Both initiation and response have their sender index at offset 4. */
	memcpy(out->receiver_index, msg + offsetof(struct wg_msg_initiation, sender_index), 4);
	wg_random(out->nonce, sizeof(out->nonce));
	/* XAEAD(HASH("cookie--" || our public), nonce, cookie, AD = mac1) */
	wg_xaead_encrypt(out->encrypted_cookie, cookie, WG_COOKIE_LEN, macs->mac1, WG_MAC_LEN,
			 out->nonce, c->cookie_key);
	ok = true;
out:
	sodium_memzero(cookie, sizeof(cookie));
	return ok;
}

void wg_cookie_maker_init(struct wg_cookie_maker *m, const uint8_t remote_static[WG_KEY_LEN])
{
	sodium_memzero(m, sizeof(*m));
	wg_cookie_derive_mac1_key(m->mac1_key, remote_static);
	wg_cookie_derive_cookie_key(m->cookie_key, remote_static);
}

void wg_cookie_maker_wipe(struct wg_cookie_maker *m)
{
	sodium_memzero(m, sizeof(*m));
}

bool wg_cookie_add_macs(struct wg_cookie_maker *m, uint8_t *msg, size_t len, uint64_t now_ns)
{
	struct wg_msg_macs *macs;

	if (!has_macs(len))
		return false;
	macs = (struct wg_msg_macs *)(msg + len - sizeof(struct wg_msg_macs));

	compute_mac1(macs->mac1, m->mac1_key, msg, len);
	memcpy(m->last_mac1_sent, macs->mac1, WG_MAC_LEN);
	m->has_sent_mac1 = true;

	/* mac2 only with a cookie the responder's secret still produces. */
	if (m->has_cookie &&
	    now_ns - m->cookie_birth_ns < WG_COOKIE_REFRESH_TIME_NS - WG_COOKIE_LATENCY_NS)
		compute_mac2(macs->mac2, m->cookie, msg, len);
	else
		memset(macs->mac2, 0, WG_MAC_LEN);
	return true;
}

bool wg_cookie_consume_reply(struct wg_cookie_maker *m, const struct wg_msg_cookie_reply *reply,
			     uint64_t now_ns)
{
	uint8_t cookie[WG_COOKIE_LEN];
	bool ok = false;

	/* A reply must answer a message we sent (its AD is our mac1). */
	if (!m->has_sent_mac1)
		goto out;
	if (!wg_xaead_decrypt(cookie, reply->encrypted_cookie, sizeof(reply->encrypted_cookie),
			      m->last_mac1_sent, WG_MAC_LEN, reply->nonce, m->cookie_key))
		goto out;
	memcpy(m->cookie, cookie, WG_COOKIE_LEN);
	m->cookie_birth_ns = now_ns;
	m->has_cookie = true;
	m->has_sent_mac1 = false;
	ok = true;
out:
	sodium_memzero(cookie, sizeof(cookie));
	return ok;
}
