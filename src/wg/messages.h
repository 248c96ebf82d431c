/* WireGuard wire formats and protocol constants.
 *
 * Every message struct is made of byte arrays only, so its alignment is 1:
 * a struct may be laid over any received buffer without alignment concerns,
 * and there is no padding (checked by the _Static_asserts below). Integer
 * fields are little-endian on the wire; read and write them with
 * wg_load_le32 / wg_store_le32 / wg_load_le64 / wg_store_le64.
 */
#ifndef WGMITM_WG_MESSAGES_H
#define WGMITM_WG_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

/* For functions whose result must be checked (verify, decrypt, init). */
#if defined(__GNUC__) || defined(__clang__)
#define WG_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define WG_WARN_UNUSED
#endif

/* Crypto sizes. */
#define WG_KEY_LEN 32  /* X25519 keys, symmetric keys, preshared key */
#define WG_HASH_LEN 32 /* BLAKE2s-256 */
#define WG_TAG_LEN 16  /* Poly1305 */
#define WG_MAC_LEN 16  /* keyed BLAKE2s-128 (mac1, mac2) */
#define WG_COOKIE_LEN 16
#define WG_TIMESTAMP_LEN 12  /* TAI64N */
#define WG_XNONCE_LEN 24     /* XChaCha20-Poly1305 nonce */
#define WG_AEAD_NONCE_LEN 12 /* ChaCha20-Poly1305 IETF: 4 zero bytes || LE64 counter */
#define wg_encrypted_len(plain_len) ((plain_len) + WG_TAG_LEN)

/* Noise and WireGuard labels (whitepaper 5.4). */
#define WG_NOISE_CONSTRUCTION "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
#define WG_NOISE_IDENTIFIER "WireGuard v1 zx2c4 Jason@zx2c4.com"
#define WG_LABEL_MAC1 "mac1----"
#define WG_LABEL_COOKIE "cookie--"
#define WG_LABEL_LEN 8

/* Message types: one byte then three zero bytes (a little-endian u32). */
enum wg_message_type {
	WG_MSG_INVALID = 0,
	WG_MSG_INITIATION = 1,
	WG_MSG_RESPONSE = 2,
	WG_MSG_COOKIE_REPLY = 3,
	WG_MSG_TRANSPORT = 4,
};

/* Time. All protocol times are in nanoseconds (monotonic clock). */
#define WG_NS_PER_MS 1000000ULL
#define WG_NS_PER_SEC 1000000000ULL

#define WG_REKEY_AFTER_MESSAGES (1ULL << 60)
#define WG_REJECT_AFTER_MESSAGES (UINT64_MAX - (1ULL << 13)) /* 2^64 - 2^13 - 1 */
#define WG_REKEY_AFTER_TIME_NS (120ULL * WG_NS_PER_SEC)
#define WG_REJECT_AFTER_TIME_NS (180ULL * WG_NS_PER_SEC)
#define WG_REKEY_ATTEMPT_TIME_NS (90ULL * WG_NS_PER_SEC)
#define WG_REKEY_TIMEOUT_NS (5ULL * WG_NS_PER_SEC)
#define WG_REKEY_TIMEOUT_JITTER_MAX_NS (333ULL * WG_NS_PER_MS)
#define WG_KEEPALIVE_TIMEOUT_NS (10ULL * WG_NS_PER_SEC)
#define WG_COOKIE_REFRESH_TIME_NS (120ULL * WG_NS_PER_SEC)
/* An initiator stops using a cookie this long before the responder's secret
 * may have rotated, so its mac2 is not computed with a stale cookie. */
#define WG_COOKIE_LATENCY_NS (5ULL * WG_NS_PER_SEC)
/* All keys are zeroed this long after the last handshake. */
#define WG_ZERO_KEYS_AFTER_NS (3ULL * WG_REJECT_AFTER_TIME_NS)
#define WG_MAX_TIMER_HANDSHAKES (WG_REKEY_ATTEMPT_TIME_NS / WG_REKEY_TIMEOUT_NS)
/* Initiations from one peer closer together than this are a flood
 * (wireguard-go HandshakeInitationRate = 1 s / 50). */
#define WG_HANDSHAKE_INITIATION_RATE_NS (WG_NS_PER_SEC / 50)
/* Per-source handshake rate limit (wireguard-go ratelimiter). */
#define WG_RATELIMIT_PACKETS_PER_SEC 20
#define WG_RATELIMIT_BURST 5
/* Under-load detection (wireguard-go): queue of 1024, load when more than
 * 1/8 of it is pending; the state holds for 1 s after it was last seen. */
#define WG_HANDSHAKE_QUEUE_LEN 1024
#define WG_UNDER_LOAD_QUEUE_THRESHOLD (WG_HANDSHAKE_QUEUE_LEN / 8)
#define WG_UNDER_LOAD_AFTER_TIME_NS (1ULL * WG_NS_PER_SEC)
#define WG_PADDING_MULTIPLE 16

/* Wire formats. */
struct wg_msg_header {
	uint8_t type;        /* enum wg_message_type */
	uint8_t reserved[3]; /* zero */
};

struct wg_msg_macs {
	uint8_t mac1[WG_MAC_LEN];
	uint8_t mac2[WG_MAC_LEN];
};

struct wg_msg_initiation {
	struct wg_msg_header header;
	uint8_t sender_index[4]; /* LE32 */
	uint8_t unencrypted_ephemeral[WG_KEY_LEN];
	uint8_t encrypted_static[wg_encrypted_len(WG_KEY_LEN)];
	uint8_t encrypted_timestamp[wg_encrypted_len(WG_TIMESTAMP_LEN)];
	struct wg_msg_macs macs;
};

struct wg_msg_response {
	struct wg_msg_header header;
	uint8_t sender_index[4];   /* LE32 */
	uint8_t receiver_index[4]; /* LE32 */
	uint8_t unencrypted_ephemeral[WG_KEY_LEN];
	uint8_t encrypted_nothing[wg_encrypted_len(0)];
	struct wg_msg_macs macs;
};

struct wg_msg_cookie_reply {
	struct wg_msg_header header;
	uint8_t receiver_index[4]; /* LE32 */
	uint8_t nonce[WG_XNONCE_LEN];
	uint8_t encrypted_cookie[wg_encrypted_len(WG_COOKIE_LEN)];
};

struct wg_msg_transport {
	struct wg_msg_header header;
	uint8_t receiver_index[4]; /* LE32 */
	uint8_t counter[8];        /* LE64 */
	uint8_t encrypted_data[];  /* ciphertext || 16-byte tag */
};

#define WG_MSG_INITIATION_LEN 148
#define WG_MSG_RESPONSE_LEN 92
#define WG_MSG_COOKIE_REPLY_LEN 64
#define WG_MSG_TRANSPORT_HEADER_LEN 16
#define WG_MSG_TRANSPORT_MIN_LEN (WG_MSG_TRANSPORT_HEADER_LEN + WG_TAG_LEN)

_Static_assert(sizeof(struct wg_msg_header) == 4, "header size");
_Static_assert(sizeof(struct wg_msg_macs) == 32, "macs size");
_Static_assert(sizeof(struct wg_msg_initiation) == WG_MSG_INITIATION_LEN, "initiation size");
_Static_assert(sizeof(struct wg_msg_response) == WG_MSG_RESPONSE_LEN, "response size");
_Static_assert(sizeof(struct wg_msg_cookie_reply) == WG_MSG_COOKIE_REPLY_LEN, "cookie reply size");
_Static_assert(sizeof(struct wg_msg_transport) == WG_MSG_TRANSPORT_HEADER_LEN,
	       "transport header size");
_Static_assert(WG_MSG_TRANSPORT_MIN_LEN == 32, "transport minimum size");
_Static_assert(offsetof(struct wg_msg_initiation, macs) == WG_MSG_INITIATION_LEN - 32, "macs last");
_Static_assert(offsetof(struct wg_msg_response, macs) == WG_MSG_RESPONSE_LEN - 32, "macs last");
_Static_assert(offsetof(struct wg_msg_initiation, sender_index) == 4, "sender index at 4");
_Static_assert(offsetof(struct wg_msg_response, sender_index) == 4, "sender index at 4");

/* Little-endian helpers (byte by byte: no alignment or host-order assumption). */
static inline uint32_t wg_load_le32(const uint8_t p[4])
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void wg_store_le32(uint8_t p[4], uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint64_t wg_load_le64(const uint8_t p[8])
{
	return (uint64_t)wg_load_le32(p) | (uint64_t)wg_load_le32(p + 4) << 32;
}

static inline void wg_store_le64(uint8_t p[8], uint64_t v)
{
	wg_store_le32(p, (uint32_t)v);
	wg_store_le32(p + 4, (uint32_t)(v >> 32));
}

/* The message type of a datagram whose length is exactly right for it
 * (transport: at least WG_MSG_TRANSPORT_MIN_LEN), else WG_MSG_INVALID.
 * Checking the exact length first is the cheapest rejection of junk. */
static inline enum wg_message_type wg_message_classify(const uint8_t *buf, size_t len)
{
	if (len < 4 || buf[1] != 0 || buf[2] != 0 || buf[3] != 0)
		return WG_MSG_INVALID;
	switch (buf[0]) {
	case WG_MSG_INITIATION:
		return len == WG_MSG_INITIATION_LEN ? WG_MSG_INITIATION : WG_MSG_INVALID;
	case WG_MSG_RESPONSE:
		return len == WG_MSG_RESPONSE_LEN ? WG_MSG_RESPONSE : WG_MSG_INVALID;
	case WG_MSG_COOKIE_REPLY:
		return len == WG_MSG_COOKIE_REPLY_LEN ? WG_MSG_COOKIE_REPLY : WG_MSG_INVALID;
	case WG_MSG_TRANSPORT:
		return len >= WG_MSG_TRANSPORT_MIN_LEN ? WG_MSG_TRANSPORT : WG_MSG_INVALID;
	default:
		return WG_MSG_INVALID;
	}
}

#endif
