/* Token-bucket rate limiter for handshake messages, per source address
 * (wireguard-go ratelimiter.go; the kernel's ratelimiter.c): each source
 * earns one packet every 1 s / 20 and holds at most 5. Tokens are counted in
 * nanoseconds of credit so refilling is a subtraction of timestamps. */
#include "wg/ratelimiter.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define PACKET_COST_NS (WG_NS_PER_SEC / WG_RATELIMIT_PACKETS_PER_SEC)
#define TOKEN_MAX_NS (PACKET_COST_NS * WG_RATELIMIT_BURST)

/* IPv4: the address; IPv6: its /64 (one subscriber usually owns a whole
 * /64, so limiting per address would be trivially evaded). */
static bool source_key(const struct wg_endpoint *src, uint64_t *key, uint8_t *family)
{
	uint8_t ip[16];
	size_t n = wg_endpoint_ip_bytes(src, ip);
	uint32_t v4;

	if (n == 4) {
		memcpy(&v4, ip, 4);
		*key = v4;
		*family = 4;
		return true;
	}
	if (n == 16) {
		memcpy(key, ip, 8);
		*family = 6;
		return true;
	}
	return false;
}

/* A slot whose bucket has had time to refill completely holds nothing a
 * fresh slot would not: it is free for reuse. */
static bool slot_live(const struct wg_ratelimiter_entry *e, uint64_t now_ns)
{
	return e->family != 0 && (now_ns < e->last_ns || now_ns - e->last_ns < TOKEN_MAX_NS);
}

bool wg_ratelimiter_init(struct wg_ratelimiter *rl, size_t max_entries)
{
	size_t buckets = 1;

	memset(rl, 0, sizeof(*rl));
	while (buckets * WG_RATELIMITER_WAYS < max_entries && buckets < ((size_t)1 << 28))
		buckets <<= 1;
	rl->slots = calloc(buckets * WG_RATELIMITER_WAYS, sizeof(*rl->slots));
	if (rl->slots == NULL)
		return false;
	rl->n_buckets = buckets;
	if (sodium_init() < 0) {
		wg_ratelimiter_free(rl);
		return false;
	}
	randombytes_buf(rl->hash_key, sizeof(rl->hash_key));
	return true;
}

void wg_ratelimiter_free(struct wg_ratelimiter *rl)
{
	free(rl->slots);
	memset(rl, 0, sizeof(*rl));
}

bool wg_ratelimiter_allow(struct wg_ratelimiter *rl, const struct wg_endpoint *src, uint64_t now_ns)
{
	uint8_t material[9];
	uint8_t digest[crypto_shorthash_BYTES];
	uint64_t key, h;
	uint8_t family;
	struct wg_ratelimiter_entry *bucket, *victim = NULL;

	if (!source_key(src, &key, &family))
		return false;

	/* SipHash with a random key: an attacker cannot aim at one bucket. */
	memcpy(material, &key, 8);
	material[8] = family;
	crypto_shorthash(digest, material, sizeof(material), rl->hash_key);
	memcpy(&h, digest, sizeof(h));
	bucket = &rl->slots[(h & (rl->n_buckets - 1)) * WG_RATELIMITER_WAYS];

	for (size_t i = 0; i < WG_RATELIMITER_WAYS; i++) {
		struct wg_ratelimiter_entry *e = &bucket[i];

		if (e->family == family && e->key == key) {
			/* Known source: refill by the time elapsed, then pay. */
			if (now_ns > e->last_ns) {
				e->tokens += now_ns - e->last_ns;
				if (e->tokens > TOKEN_MAX_NS)
					e->tokens = TOKEN_MAX_NS;
				e->last_ns = now_ns;
			}
			if (e->tokens < PACKET_COST_NS)
				return false;
			e->tokens -= PACKET_COST_NS;
			return true;
		}
		/* Victim preference: a free slot, else the least recently used. */
		if (victim == NULL || (slot_live(victim, now_ns) &&
				       (!slot_live(e, now_ns) || e->last_ns < victim->last_ns)))
			victim = e;
	}

	/* New source: a full bucket, minus this packet. */
	if (slot_live(victim, now_ns))
		rl->evictions++;
	victim->key = key;
	victim->family = family;
	victim->last_ns = now_ns;
	victim->tokens = TOKEN_MAX_NS - PACKET_COST_NS;
	return true;
}

size_t wg_ratelimiter_count(const struct wg_ratelimiter *rl, uint64_t now_ns)
{
	size_t n = 0;

	for (size_t i = 0; i < rl->n_buckets * WG_RATELIMITER_WAYS; i++)
		n += slot_live(&rl->slots[i], now_ns);
	return n;
}
