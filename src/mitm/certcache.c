#include "mitm/certcache.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NIL UINT32_MAX

struct entry {
	uint64_t hash;
	char *key; /* NULL: free */
	size_t keylen;
	X509 *cert;
	time_t created;
	uint32_t chain;      /* next in bucket, or next free */
	uint32_t prev, next; /* LRU: head is most recent */
};

struct certcache {
	struct entry *entries;
	uint32_t *buckets;
	size_t capacity, mask, size;
	uint32_t free_head, lru_head, lru_tail;
	uint64_t hits, misses, evictions;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
};

struct certcache *certcache_new(size_t capacity)
{
	if (capacity == 0)
		capacity = CERTCACHE_DEFAULT_CAPACITY;
	if (capacity >= NIL / 2 || sodium_init() < 0)
		return NULL;
	size_t nb = 1;
	while (nb < capacity * 2)
		nb <<= 1;
	struct certcache *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->entries = calloc(capacity, sizeof(*c->entries));
	c->buckets = malloc(nb * sizeof(*c->buckets));
	if (!c->entries || !c->buckets) {
		free(c->entries);
		free(c->buckets);
		free(c);
		return NULL;
	}
	c->capacity = capacity;
	c->mask = nb - 1;
	for (size_t i = 0; i < nb; i++)
		c->buckets[i] = NIL;
	for (size_t i = 0; i < capacity; i++)
		c->entries[i].chain = i + 1 < capacity ? (uint32_t)(i + 1) : NIL;
	c->free_head = 0;
	c->lru_head = c->lru_tail = NIL;
	randombytes_buf(c->hash_key, sizeof(c->hash_key));
	return c;
}

void certcache_free(struct certcache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->capacity; i++) {
		free(c->entries[i].key);
		X509_free(c->entries[i].cert);
	}
	free(c->entries);
	free(c->buckets);
	free(c);
}

static uint64_t hash_of(const struct certcache *c, const char *key, size_t keylen)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, (const unsigned char *)key, keylen, c->hash_key);
	return h;
}

static void lru_unlink(struct certcache *c, uint32_t i)
{
	struct entry *e = &c->entries[i];
	if (e->prev != NIL)
		c->entries[e->prev].next = e->next;
	else
		c->lru_head = e->next;
	if (e->next != NIL)
		c->entries[e->next].prev = e->prev;
	else
		c->lru_tail = e->prev;
}

static void lru_push_front(struct certcache *c, uint32_t i)
{
	struct entry *e = &c->entries[i];
	e->prev = NIL;
	e->next = c->lru_head;
	if (c->lru_head != NIL)
		c->entries[c->lru_head].prev = i;
	c->lru_head = i;
	if (c->lru_tail == NIL)
		c->lru_tail = i;
}

static uint32_t find(const struct certcache *c, uint64_t h, const char *key, size_t keylen)
{
	for (uint32_t i = c->buckets[h & c->mask]; i != NIL; i = c->entries[i].chain) {
		const struct entry *e = &c->entries[i];
		if (e->hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0)
			return i;
	}
	return NIL;
}

/* Unhooks entry i from its bucket and the LRU list and frees its contents. */
static void drop(struct certcache *c, uint32_t i)
{
	struct entry *e = &c->entries[i];
	uint32_t *link = &c->buckets[e->hash & c->mask];
	while (*link != i)
		link = &c->entries[*link].chain;
	*link = e->chain;
	lru_unlink(c, i);
	free(e->key);
	X509_free(e->cert);
	memset(e, 0, sizeof(*e));
	e->chain = c->free_head;
	c->free_head = i;
	c->size--;
}

X509 *certcache_lookup(struct certcache *c, const char *key, size_t keylen)
{
	uint64_t h = hash_of(c, key, keylen);
	uint32_t i = find(c, h, key, keylen);
	if (i == NIL)
		return NULL;
	struct entry *e = &c->entries[i];
	if (time(NULL) - e->created > CERTCACHE_MAX_AGE) {
		drop(c, i);
		return NULL;
	}
	if (c->lru_head != i) {
		lru_unlink(c, i);
		lru_push_front(c, i);
	}
	X509_up_ref(e->cert);
	return e->cert;
}

int certcache_insert(struct certcache *c, const char *key, size_t keylen, X509 *cert)
{
	uint64_t h = hash_of(c, key, keylen);
	uint32_t old = find(c, h, key, keylen);
	if (old != NIL)
		drop(c, old);
	if (c->free_head == NIL) {
		drop(c, c->lru_tail);
		c->evictions++;
	}
	char *copy = malloc(keylen ? keylen : 1);
	if (!copy || !X509_up_ref(cert)) {
		free(copy);
		return -ENOMEM;
	}
	memcpy(copy, key, keylen);
	uint32_t i = c->free_head;
	struct entry *e = &c->entries[i];
	c->free_head = e->chain;
	e->hash = h;
	e->key = copy;
	e->keylen = keylen;
	e->cert = cert;
	e->created = time(NULL);
	e->chain = c->buckets[h & c->mask];
	c->buckets[h & c->mask] = i;
	lru_push_front(c, i);
	c->size++;
	return 0;
}

X509 *certcache_get(struct certcache *c, const struct cert_minter *m,
		    const struct cert_names *names, bool *hit)
{
	char key[CERTCACHE_KEY_MAX];
	size_t keylen = cert_names_key(names, key, sizeof(key));
	X509 *x = keylen ? certcache_lookup(c, key, keylen) : NULL;
	if (hit)
		*hit = x != NULL;
	if (x) {
		c->hits++;
		return x;
	}
	c->misses++;
	x = cert_mint_names(m, names);
	/* A failed insert only costs a later mint. */
	if (x && keylen)
		(void)certcache_insert(c, key, keylen, x);
	return x;
}

void certcache_stats(const struct certcache *c, struct certcache_stats *out)
{
	out->hits = c->hits;
	out->misses = c->misses;
	out->evictions = c->evictions;
	out->size = c->size;
	out->capacity = c->capacity;
}
