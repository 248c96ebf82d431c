/* MAC1, MAC2 and cookie replies (whitepaper 5.4.4 and 5.4.7).
 *
 * Responder side (one per device): wg_cookie_checker validates mac1 (before
 * any Diffie-Hellman) and mac2, and creates cookie replies; its secret
 * rotates every WG_COOKIE_REFRESH_TIME_NS.
 * Initiator side (one per peer): wg_cookie_maker adds mac1/mac2 to the
 * initiations and responses we send and consumes the cookie replies we get.
 *
 *   mac1   = MAC(HASH("mac1----" || S_receiver), msg up to mac1)
 *   cookie = MAC(secret, source IP || port)
 *   mac2   = MAC(cookie, msg up to mac2)
 *   reply  = XAEAD(HASH("cookie--" || S_receiver), random nonce, cookie, AD = mac1)
 *
 * Times are monotonic nanoseconds passed in by the caller. Not thread-safe
 * per object.
 */
#ifndef WGMITM_WG_COOKIE_H
#define WGMITM_WG_COOKIE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wg/crypto.h"
#include "wg/endpoint.h"
#include "wg/messages.h"
#include "wg/noise.h"

/* HASH("mac1----" || public_key) and HASH("cookie--" || public_key). */
void wg_cookie_derive_mac1_key(uint8_t out[WG_HASH_LEN], const uint8_t public_key[WG_KEY_LEN]);
void wg_cookie_derive_cookie_key(uint8_t out[WG_HASH_LEN], const uint8_t public_key[WG_KEY_LEN]);

struct wg_cookie_checker {
	uint8_t mac1_key[WG_HASH_LEN];
	uint8_t cookie_key[WG_HASH_LEN];
	uint8_t secret[WG_HASH_LEN];
	uint64_t secret_birth_ns;
	bool has_secret;
};

enum wg_cookie_mac_state {
	WG_COOKIE_MAC_INVALID = 0,
	WG_COOKIE_MAC_VALID_NO_COOKIE,   /* mac1 good; mac2 absent, stale, wrong or not checked */
	WG_COOKIE_MAC_VALID_WITH_COOKIE, /* mac1 and mac2 good */
};

/* Takes the mac1 and cookie keys from our static identity (call again if it
 * changes). */
void wg_cookie_checker_init(struct wg_cookie_checker *c, const struct wg_noise_static *local);
void wg_cookie_checker_wipe(struct wg_cookie_checker *c);

/* Checks mac1 of an initiation or response (msg, len: the whole datagram,
 * len must be WG_MSG_INITIATION_LEN or WG_MSG_RESPONSE_LEN, else INVALID),
 * and mac2 only if check_mac2 (the device always asks: whether it is under
 * load is only known once mac1 passed; the answer matters under load): mac2
 * must be the MAC of the cookie for src under the current secret, which
 * must be younger than WG_COOKIE_REFRESH_TIME_NS (the secret rotates only
 * when a reply is created). No Diffie-Hellman, constant-time comparisons. */
enum wg_cookie_mac_state wg_cookie_validate(const struct wg_cookie_checker *c, const uint8_t *msg,
					    size_t len, const struct wg_endpoint *src,
					    bool check_mac2, uint64_t now_ns) WG_WARN_UNUSED;

/* Builds the cookie reply to an initiation or response from src: receiver
 * index = the message's sender index, random nonce, AD = the message's mac1.
 * Rotates the secret first if it is older than WG_COOKIE_REFRESH_TIME_NS.
 * false if len is not an initiation/response length or src is unset. */
bool wg_cookie_create_reply(struct wg_cookie_checker *c, struct wg_msg_cookie_reply *out,
			    const uint8_t *msg, size_t len, const struct wg_endpoint *src,
			    uint64_t now_ns) WG_WARN_UNUSED;

struct wg_cookie_maker {
	uint8_t mac1_key[WG_HASH_LEN];   /* HASH("mac1----" || S_peer) */
	uint8_t cookie_key[WG_HASH_LEN]; /* HASH("cookie--" || S_peer) */
	uint8_t cookie[WG_COOKIE_LEN];
	uint64_t cookie_birth_ns;
	bool has_cookie;
	uint8_t last_mac1_sent[WG_MAC_LEN];
	bool has_sent_mac1;
};

void wg_cookie_maker_init(struct wg_cookie_maker *m, const uint8_t remote_static[WG_KEY_LEN]);
void wg_cookie_maker_wipe(struct wg_cookie_maker *m);

/* Writes mac1 (and mac2 if we hold a cookie younger than
 * WG_COOKIE_REFRESH_TIME_NS - WG_COOKIE_LATENCY_NS, else zeros) into the
 * last 32 bytes of an outgoing initiation or response (len must be one of
 * those lengths, else nothing is written and false is returned), and
 * remembers mac1 for the cookie reply that may answer it. */
bool wg_cookie_add_macs(struct wg_cookie_maker *m, uint8_t *msg, size_t len, uint64_t now_ns);

/* Decrypts a cookie reply (the caller found this maker by its receiver
 * index) with AD = the last mac1 we sent, and stores the cookie. false if
 * we sent no mac1 since the last reply, or it does not decrypt. */
bool wg_cookie_consume_reply(struct wg_cookie_maker *m, const struct wg_msg_cookie_reply *reply,
			     uint64_t now_ns) WG_WARN_UNUSED;

#endif
