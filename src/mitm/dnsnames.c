/* Names the tunnel's DNS answered (dnsnames.h). */
#include "mitm/dnsnames.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define PEER_MAX 64
#define WAYS 4 /* entries per bucket */

struct entry {
	uint64_t expires; /* 0: free */
	uint64_t learned;
	uint8_t alen;
	uint8_t addr[16];
	char peer[PEER_MAX];
	char name[DNSNAMES_NAME_MAX + 1];
};

struct dnsnames {
	uint8_t key[crypto_shorthash_KEYBYTES];
	struct entry e[DNSNAMES_SLOTS];
};

struct dnsnames *dnsnames_new(void)
{
	struct dnsnames *m = calloc(1, sizeof(*m));
	if (m)
		randombytes_buf(m->key, sizeof(m->key));
	return m;
}

void dnsnames_free(struct dnsnames *m)
{
	free(m);
}

/* The first entry of the bucket for (peer, addr). */
static size_t bucket(const struct dnsnames *m, const char *peer, const uint8_t *addr, size_t alen)
{
	uint8_t in[PEER_MAX + 1 + 16];
	size_t pl = peer ? strnlen(peer, PEER_MAX - 1) : 0;
	memcpy(in, peer ? peer : "", pl);
	in[pl] = 0;
	memcpy(in + pl + 1, addr, alen);
	uint8_t h[crypto_shorthash_BYTES];
	crypto_shorthash(h, in, pl + 1 + alen, m->key);
	uint64_t v;
	memcpy(&v, h, sizeof(v));
	return (size_t)(v % (DNSNAMES_SLOTS / WAYS)) * WAYS;
}

static bool same(const struct entry *e, const char *peer, const uint8_t *addr, size_t alen)
{
	return e->alen == alen && memcmp(e->addr, addr, alen) == 0 &&
	       strcmp(e->peer, peer ? peer : "") == 0;
}

void dnsnames_learn(struct dnsnames *m, const char *peer, const uint8_t *addr, size_t alen,
		    const char *name, uint32_t ttl_s, uint64_t now_s)
{
	if (!m || (alen != 4 && alen != 16) || !name || !name[0] ||
	    strlen(name) > DNSNAMES_NAME_MAX || (peer && strlen(peer) >= PEER_MAX))
		return;
	if (ttl_s < DNSNAMES_MIN_TTL_S)
		ttl_s = DNSNAMES_MIN_TTL_S;
	if (ttl_s > DNSNAMES_MAX_TTL_S)
		ttl_s = DNSNAMES_MAX_TTL_S;
	struct entry *b = &m->e[bucket(m, peer, addr, alen)], *use = NULL;
	for (int i = 0; i < WAYS && !use; i++)
		if (b[i].expires && same(&b[i], peer, addr, alen))
			use = &b[i]; /* the newest answer wins */
	for (int i = 0; i < WAYS && !use; i++)
		if (!b[i].expires || b[i].expires <= now_s)
			use = &b[i];
	if (!use) {
		use = &b[0];
		for (int i = 1; i < WAYS; i++)
			if (b[i].learned < use->learned)
				use = &b[i];
	}
	use->expires = now_s + ttl_s;
	use->learned = now_s;
	use->alen = (uint8_t)alen;
	memcpy(use->addr, addr, alen);
	strcpy(use->peer, peer ? peer : "");
	strcpy(use->name, name);
	/* Names are kept as answered but without the root's dot. */
	size_t n = strlen(use->name);
	if (n > 1 && use->name[n - 1] == '.')
		use->name[n - 1] = '\0';
}

const char *dnsnames_lookup(const struct dnsnames *m, const char *peer, const struct sockaddr *dest,
			    uint64_t now_s)
{
	if (!m || !dest)
		return NULL;
	const uint8_t *addr;
	size_t alen;
	if (dest->sa_family == AF_INET) {
		addr = (const uint8_t *)&((const struct sockaddr_in *)dest)->sin_addr;
		alen = 4;
	} else if (dest->sa_family == AF_INET6) {
		addr = (const uint8_t *)&((const struct sockaddr_in6 *)dest)->sin6_addr;
		alen = 16;
	} else {
		return NULL;
	}
	if (peer && strlen(peer) >= PEER_MAX)
		return NULL;
	const struct entry *b = &m->e[bucket(m, peer, addr, alen)];
	for (int i = 0; i < WAYS; i++)
		if (b[i].expires > now_s && same(&b[i], peer, addr, alen))
			return b[i].name;
	return NULL;
}
