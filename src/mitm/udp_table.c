#include "mitm/udp_table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

struct udp_table_list {
	uint32_t head, tail;
};

struct udp_table {
	struct udp_table_entry *entries;
	uint32_t capacity;
	uint32_t count;
	uint32_t *buckets; /* heads of hash chains */
	uint32_t mask;     /* buckets - 1 (a power of two) */
	uint32_t free_head;
	struct udp_table_list lists[UDP_TABLE_CLASSES];
	uint64_t timeouts_ms[UDP_TABLE_CLASSES];
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
};

bool udp_flow_key_make(struct udp_flow_key *key, const struct sockaddr *client,
		       const struct sockaddr *dest)
{
	memset(key, 0, sizeof(*key));
	if (client->sa_family != dest->sa_family)
		return false;
	const struct sockaddr *src[2] = { client, dest };
	union udp_addr *dst[2] = { &key->client, &key->dest };
	for (int i = 0; i < 2; i++) {
		if (src[i]->sa_family == AF_INET) {
			const struct sockaddr_in *a = (const struct sockaddr_in *)src[i];
			dst[i]->in4.sin_family = AF_INET;
			dst[i]->in4.sin_port = a->sin_port;
			dst[i]->in4.sin_addr = a->sin_addr;
		} else if (src[i]->sa_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)src[i];
			dst[i]->in6.sin6_family = AF_INET6;
			dst[i]->in6.sin6_port = a->sin6_port;
			dst[i]->in6.sin6_addr = a->sin6_addr;
		} else {
			return false;
		}
	}
	return true;
}

/* family, port, address of both ends: 2 × (1 + 2 + 16) bytes at most. */
static size_t key_bytes(const struct udp_flow_key *k, uint8_t out[38])
{
	size_t n = 0;
	const union udp_addr *a[2] = { &k->client, &k->dest };
	for (int i = 0; i < 2; i++) {
		out[n++] = (uint8_t)a[i]->sa.sa_family;
		if (a[i]->sa.sa_family == AF_INET) {
			memcpy(out + n, &a[i]->in4.sin_port, 2);
			memcpy(out + n + 2, &a[i]->in4.sin_addr, 4);
			n += 6;
		} else {
			memcpy(out + n, &a[i]->in6.sin6_port, 2);
			memcpy(out + n + 2, &a[i]->in6.sin6_addr, 16);
			n += 18;
		}
	}
	return n;
}

static bool key_equal(const struct udp_flow_key *x, const struct udp_flow_key *y)
{
	uint8_t bx[38], by[38];
	size_t nx = key_bytes(x, bx), ny = key_bytes(y, by);
	return nx == ny && memcmp(bx, by, nx) == 0;
}

static uint32_t key_bucket(const struct udp_table *t, const struct udp_flow_key *k)
{
	uint8_t b[38];
	size_t n = key_bytes(k, b);
	unsigned char h[crypto_shorthash_BYTES];
	crypto_shorthash(h, b, n, t->hash_key);
	uint32_t v;
	memcpy(&v, h, sizeof(v));
	return v & t->mask;
}

struct udp_table *udp_table_new(size_t capacity, const uint64_t timeouts_ms[UDP_TABLE_CLASSES])
{
	if (capacity == 0 || capacity > (1u << 24)) {
		errno = EINVAL;
		return NULL;
	}
	if (sodium_init() < 0) {
		errno = ENOMEM;
		return NULL;
	}
	struct udp_table *t = calloc(1, sizeof(*t));
	if (!t)
		goto fail;
	uint32_t nb = 1;
	while (nb < 2 * capacity)
		nb <<= 1;
	t->entries = calloc(capacity, sizeof(*t->entries));
	t->buckets = malloc(nb * sizeof(*t->buckets));
	if (!t->entries || !t->buckets)
		goto fail_free;
	t->capacity = (uint32_t)capacity;
	t->mask = nb - 1;
	for (uint32_t i = 0; i < nb; i++)
		t->buckets[i] = UDP_TABLE_NONE;
	/* Free list in index order, so a fresh table fills from entry 0. */
	for (uint32_t i = 0; i < t->capacity; i++)
		t->entries[i].next = i + 1 < t->capacity ? i + 1 : UDP_TABLE_NONE;
	t->free_head = 0;
	for (int c = 0; c < UDP_TABLE_CLASSES; c++) {
		t->lists[c].head = t->lists[c].tail = UDP_TABLE_NONE;
		t->timeouts_ms[c] = timeouts_ms[c];
	}
	randombytes_buf(t->hash_key, sizeof(t->hash_key));
	return t;

fail_free:
	free(t->entries);
	free(t->buckets);
	free(t);
fail:
	errno = ENOMEM;
	return NULL;
}

void udp_table_free(struct udp_table *t)
{
	if (!t)
		return;
	free(t->entries);
	free(t->buckets);
	free(t);
}

static uint32_t index_of(const struct udp_table *t, const struct udp_table_entry *e)
{
	return (uint32_t)(e - t->entries);
}

struct udp_table_entry *udp_table_lookup(struct udp_table *t, const struct udp_flow_key *key)
{
	for (uint32_t i = t->buckets[key_bucket(t, key)]; i != UDP_TABLE_NONE;
	     i = t->entries[i].hnext)
		if (key_equal(&t->entries[i].key, key))
			return &t->entries[i];
	return NULL;
}

static void list_append(struct udp_table *t, uint32_t i)
{
	struct udp_table_entry *e = &t->entries[i];
	struct udp_table_list *l = &t->lists[e->cls];
	e->next = UDP_TABLE_NONE;
	e->prev = l->tail;
	if (l->tail != UDP_TABLE_NONE)
		t->entries[l->tail].next = i;
	else
		l->head = i;
	l->tail = i;
}

static void list_unlink(struct udp_table *t, uint32_t i)
{
	struct udp_table_entry *e = &t->entries[i];
	struct udp_table_list *l = &t->lists[e->cls];
	if (e->prev != UDP_TABLE_NONE)
		t->entries[e->prev].next = e->next;
	else
		l->head = e->next;
	if (e->next != UDP_TABLE_NONE)
		t->entries[e->next].prev = e->prev;
	else
		l->tail = e->prev;
}

struct udp_table_entry *udp_table_insert(struct udp_table *t, const struct udp_flow_key *key,
					 unsigned cls, uint64_t now_ms)
{
	if (cls >= UDP_TABLE_CLASSES) {
		errno = EINVAL;
		return NULL;
	}
	if (udp_table_lookup(t, key)) {
		errno = EEXIST;
		return NULL;
	}
	if (t->free_head == UDP_TABLE_NONE) {
		errno = ENOSPC;
		return NULL;
	}
	uint32_t i = t->free_head;
	struct udp_table_entry *e = &t->entries[i];
	t->free_head = e->next;
	memset(e, 0, sizeof(*e));
	e->key = *key;
	e->used = true;
	e->cls = (uint8_t)cls;
	e->deadline_ms = now_ms + t->timeouts_ms[cls];
	uint32_t b = key_bucket(t, key);
	e->hnext = t->buckets[b];
	t->buckets[b] = i;
	list_append(t, i);
	t->count++;
	return e;
}

void udp_table_touch(struct udp_table *t, struct udp_table_entry *e, uint64_t now_ms)
{
	uint32_t i = index_of(t, e);
	e->deadline_ms = now_ms + t->timeouts_ms[e->cls];
	if (t->lists[e->cls].tail == i)
		return;
	list_unlink(t, i);
	list_append(t, i);
}

void udp_table_remove(struct udp_table *t, struct udp_table_entry *e)
{
	uint32_t i = index_of(t, e);
	uint32_t *link = &t->buckets[key_bucket(t, &e->key)];
	while (*link != i)
		link = &t->entries[*link].hnext;
	*link = e->hnext;
	list_unlink(t, i);
	memset(e, 0, sizeof(*e));
	e->next = t->free_head;
	t->free_head = i;
	t->count--;
}

/* The class whose head has the earliest deadline, or -1 when all are empty. */
static int earliest_class(const struct udp_table *t)
{
	int best = -1;
	for (int c = 0; c < UDP_TABLE_CLASSES; c++) {
		uint32_t h = t->lists[c].head;
		if (h == UDP_TABLE_NONE)
			continue;
		if (best < 0 ||
		    t->entries[h].deadline_ms < t->entries[t->lists[best].head].deadline_ms)
			best = c;
	}
	return best;
}

struct udp_table_entry *udp_table_expired(struct udp_table *t, uint64_t now_ms)
{
	int c = earliest_class(t);
	if (c < 0)
		return NULL;
	struct udp_table_entry *e = &t->entries[t->lists[c].head];
	return e->deadline_ms <= now_ms ? e : NULL;
}

uint64_t udp_table_next_deadline(const struct udp_table *t)
{
	int c = earliest_class(t);
	return c < 0 ? UINT64_MAX : t->entries[t->lists[c].head].deadline_ms;
}

struct udp_table_entry *udp_table_first(struct udp_table *t)
{
	for (int c = 0; c < UDP_TABLE_CLASSES; c++)
		if (t->lists[c].head != UDP_TABLE_NONE)
			return &t->entries[t->lists[c].head];
	return NULL;
}

size_t udp_table_count(const struct udp_table *t)
{
	return t->count;
}

size_t udp_table_capacity(const struct udp_table *t)
{
	return t->capacity;
}
