/* A chained hash table keyed by short strings. Few keys (one per peer with
 * something open), so a fixed bucket array is enough. */
#include "common/tally.h"

#include <stdlib.h>
#include <string.h>

#define TALLY_BUCKETS 256

struct tally_entry {
	struct tally_entry *next;
	uint32_t hash;
	uint32_t count;
	char key[]; /* NUL-terminated */
};

struct tally {
	struct tally_entry *bucket[TALLY_BUCKETS];
	size_t keys;
	uint64_t refused;
};

static uint32_t hash_of(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

struct tally *tally_new(void)
{
	return calloc(1, sizeof(struct tally));
}

void tally_free(struct tally *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < TALLY_BUCKETS; i++)
		for (struct tally_entry *e = t->bucket[i], *n; e; e = n) {
			n = e->next;
			free(e);
		}
	free(t);
}

static struct tally_entry *find(const struct tally *t, const char *key, uint32_t h)
{
	for (struct tally_entry *e = t->bucket[h % TALLY_BUCKETS]; e; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

struct tally_entry *tally_take(struct tally *t, const char *key, uint32_t cap)
{
	if (!key)
		key = "";
	uint32_t h = hash_of(key);
	struct tally_entry *e = find(t, key, h);
	if (!e) {
		if (cap == 0) {
			t->refused++;
			return NULL;
		}
		size_t n = strlen(key);
		e = malloc(sizeof(*e) + n + 1);
		if (!e)
			return NULL;
		memcpy(e->key, key, n + 1);
		e->hash = h;
		e->count = 0;
		e->next = t->bucket[h % TALLY_BUCKETS];
		t->bucket[h % TALLY_BUCKETS] = e;
		t->keys++;
	} else if (e->count >= cap) {
		t->refused++;
		return NULL;
	}
	e->count++;
	return e;
}

void tally_give(struct tally *t, struct tally_entry *e)
{
	if (!e || --e->count > 0)
		return;
	struct tally_entry **p = &t->bucket[e->hash % TALLY_BUCKETS];
	while (*p != e)
		p = &(*p)->next;
	*p = e->next;
	t->keys--;
	free(e);
}

void tally_give_key(struct tally *t, const char *key)
{
	if (!key)
		key = "";
	tally_give(t, find(t, key, hash_of(key)));
}

uint32_t tally_count(const struct tally *t, const char *key)
{
	if (!key)
		key = "";
	const struct tally_entry *e = find(t, key, hash_of(key));
	return e ? e->count : 0;
}

size_t tally_keys(const struct tally *t)
{
	return t->keys;
}

uint64_t tally_refused(const struct tally *t)
{
	return t->refused;
}
