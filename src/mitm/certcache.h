/* Leaf certificates by name set: a bounded in-memory cache.
 *
 * Keyed by the sorted set of names (cert_names_key), hashed with SipHash
 * under a random key (client SNI is hostile input), chained buckets and an
 * LRU list threaded through a fixed entry array: a hit is one hash, a short
 * chain walk and an X509_up_ref; a full cache evicts its least recently used
 * entry. Entries older than CERTCACHE_MAX_AGE are minted again, so a
 * long-running endpoint never serves a leaf near its end. Not thread-safe:
 * one cache per loop thread. */
#ifndef WGMITM_MITM_CERTCACHE_H
#define WGMITM_MITM_CERTCACHE_H

#include "mitm/cert.h"

#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CERTCACHE_DEFAULT_CAPACITY 4096
#define CERTCACHE_MAX_AGE (30 * 86400)
#define CERTCACHE_KEY_MAX 8192 /* longer name sets are minted but not cached */

struct certcache;

struct certcache_stats {
	uint64_t hits, misses, evictions;
	size_t size, capacity;
};

/* capacity 0 = CERTCACHE_DEFAULT_CAPACITY. NULL when out of memory. */
struct certcache *certcache_new(size_t capacity);
/* Drops the cache's references (leaves handed out stay valid). */
void certcache_free(struct certcache *c);

/* The leaf for `names`: from the cache, or minted with `m` and cached.
 * Returns a new reference (X509_free it when done; its key is
 * cert_minter_key(m)), or NULL when minting failed. `hit` may be NULL. */
X509 *certcache_get(struct certcache *c, const struct cert_minter *m,
		    const struct cert_names *names, bool *hit);

/* The lower layer, by canonical key: a new reference or NULL. */
X509 *certcache_lookup(struct certcache *c, const char *key, size_t keylen);
/* Stores a reference to `cert` under key (replacing an older one);
 * 0 or -ENOMEM. */
int certcache_insert(struct certcache *c, const char *key, size_t keylen, X509 *cert);

void certcache_stats(const struct certcache *c, struct certcache_stats *out);

#endif
