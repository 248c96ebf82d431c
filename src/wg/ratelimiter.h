/* Per-source handshake rate limiter: a token bucket of
 * WG_RATELIMIT_PACKETS_PER_SEC with a burst of WG_RATELIMIT_BURST per IPv4
 * address or IPv6 /64, in a fixed-size table allocated once.
 *
 * The table is set-associative: a keyed hash (SipHash, random key) picks a
 * bucket of WG_RATELIMITER_WAYS slots. A slot idle for longer than a full
 * refill is as good as empty and is reused; if a bucket has no such slot
 * the least recently used one is evicted. So the table never grows, needs
 * no garbage-collection pass, and a spoofing attacker cannot aim at one
 * bucket. Time is passed in (monotonic ns). Not thread-safe.
 */
#ifndef WGMITM_WG_RATELIMITER_H
#define WGMITM_WG_RATELIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wg/endpoint.h"
#include "wg/messages.h"

#define WG_RATELIMITER_WAYS 8

struct wg_ratelimiter_entry {
	uint64_t key;     /* IPv4 address or IPv6 /64 prefix */
	uint64_t last_ns; /* last time the bucket was refilled */
	uint64_t tokens;  /* in ns of credit; one packet costs 1 s / rate */
	uint8_t family;   /* 0 = empty slot, 4, 6 */
};

struct wg_ratelimiter {
	struct wg_ratelimiter_entry *slots; /* n_buckets * WG_RATELIMITER_WAYS */
	size_t n_buckets;                   /* power of two */
	uint8_t hash_key[16];
	uint64_t evictions; /* live entries pushed out by a full bucket */
};

/* Allocates room for at least max_entries sources (rounded up to a power of
 * two number of buckets). Returns false on allocation failure. */
bool wg_ratelimiter_init(struct wg_ratelimiter *rl, size_t max_entries) WG_WARN_UNUSED;
void wg_ratelimiter_free(struct wg_ratelimiter *rl);

/* true if a handshake message from src may be processed now (and takes a
 * token). An unset endpoint is never allowed. */
bool wg_ratelimiter_allow(struct wg_ratelimiter *rl, const struct wg_endpoint *src,
			  uint64_t now_ns);

/* Number of slots in use that have not fully refilled at now_ns. */
size_t wg_ratelimiter_count(const struct wg_ratelimiter *rl, uint64_t now_ns);

#endif
