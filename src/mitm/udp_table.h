/* The UDP flow table: a bounded map from (client address, destination) to a
 * flow, with idle expiry. Pure bookkeeping: no sockets, no clock (every call
 * that needs the time takes `now_ms`), so it is tested without the loop.
 *
 * Entries live in one array allocated at udp_table_new (no allocation per
 * flow or packet). Each entry belongs to one timeout class; a class keeps its
 * entries in a list ordered by last activity, so with one idle timeout per
 * class each list is also ordered by deadline and expiry is O(1): the next
 * deadline is the earliest head. Keys are hashed with SipHash under a random
 * key, so a client cannot aim its source ports at one bucket. */
#ifndef WGMITM_MITM_UDP_TABLE_H
#define WGMITM_MITM_UDP_TABLE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define UDP_TABLE_CLASSES 2
#define UDP_TABLE_NONE UINT32_MAX

/* An address of either family, as the key stores it. */
union udp_addr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

struct udp_flow_key {
	union udp_addr client;
	union udp_addr dest;
};

/* One flow. `data` belongs to the caller; the rest is the table's. */
struct udp_table_entry {
	struct udp_flow_key key;
	void *data;
	uint64_t deadline_ms; /* last activity + the class's timeout */
	uint8_t cls;
	bool used;
	uint32_t hnext;      /* bucket chain */
	uint32_t prev, next; /* class list (or free list, next only) */
};

struct udp_table;

/* `capacity` flows at most (1..2^24); `timeouts_ms[c]` is the idle timeout
 * of class c. Returns NULL with errno EINVAL or ENOMEM. */
struct udp_table *udp_table_new(size_t capacity, const uint64_t timeouts_ms[UDP_TABLE_CLASSES])
	__attribute__((warn_unused_result));
void udp_table_free(struct udp_table *t);

/* Builds a key from two addresses (port and address only: flow info, scope
 * and padding do not distinguish flows). Returns false for a family other
 * than AF_INET/AF_INET6 or two different families. */
bool udp_flow_key_make(struct udp_flow_key *key, const struct sockaddr *client,
		       const struct sockaddr *dest);

struct udp_table_entry *udp_table_lookup(struct udp_table *t, const struct udp_flow_key *key);

/* Adds a flow of class `cls`, active at `now_ms`. Returns NULL when the
 * table is full (errno ENOSPC), the key is present (EEXIST) or cls is out
 * of range (EINVAL). */
struct udp_table_entry *udp_table_insert(struct udp_table *t, const struct udp_flow_key *key,
					 unsigned cls, uint64_t now_ms);

/* Activity on a flow: its deadline moves to now + its class's timeout. */
void udp_table_touch(struct udp_table *t, struct udp_table_entry *e, uint64_t now_ms);

/* Forgets a flow; the entry's memory is reused by a later insert. */
void udp_table_remove(struct udp_table *t, struct udp_table_entry *e);

/* The flow whose deadline passed first, if any deadline is <= now_ms
 * (the caller removes it, then asks again); NULL otherwise. */
struct udp_table_entry *udp_table_expired(struct udp_table *t, uint64_t now_ms);

/* The earliest deadline, or UINT64_MAX when the table is empty. */
uint64_t udp_table_next_deadline(const struct udp_table *t);

/* Any flow (for shutdown: remove it and ask again); NULL when empty. */
struct udp_table_entry *udp_table_first(struct udp_table *t);

size_t udp_table_count(const struct udp_table *t);
size_t udp_table_capacity(const struct udp_table *t);

#endif
