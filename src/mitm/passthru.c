/* Passthrough rules and automatic entries; see passthru.h. */
#include "mitm/passthru.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define PASSTHRU_KEY_MAX 320 /* peer name + NUL + host */

struct passthru_auto {
	uint64_t expires; /* 0: free */
	uint16_t len;
	char key[PASSTHRU_KEY_MAX];
};

struct passthru {
	uint32_t auto_s;
	size_t nrules;
	char rules[PASSTHRU_MAX_RULES][PASSTHRU_GLOB_LEN];
	uint8_t hash_key[crypto_shorthash_KEYBYTES];
	struct passthru_auto slots[PASSTHRU_AUTO_SLOTS];
};

struct passthru *passthru_new(uint32_t auto_s)
{
	struct passthru *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->auto_s = auto_s;
	randombytes_buf(p->hash_key, sizeof(p->hash_key));
	return p;
}

void passthru_free(struct passthru *p)
{
	free(p);
}

int passthru_add_rule(struct passthru *p, const char *glob)
{
	size_t n = strlen(glob);
	if (n == 0 || n >= PASSTHRU_GLOB_LEN)
		return -EINVAL;
	if (p->nrules == PASSTHRU_MAX_RULES)
		return -ENOSPC;
	memcpy(p->rules[p->nrules++], glob, n + 1);
	return 0;
}

void passthru_clear_rules(struct passthru *p)
{
	p->nrules = 0;
}

void passthru_set_auto_s(struct passthru *p, uint32_t auto_s)
{
	p->auto_s = auto_s;
}

const char *passthru_rule(const struct passthru *p, const char *host)
{
	for (size_t i = 0; i < p->nrules; i++)
		if (fnmatch(p->rules[i], host, FNM_CASEFOLD) == 0)
			return p->rules[i];
	return NULL;
}

/* "peer\0host" (host lower-cased): the table key. 0 when it does not fit. */
static size_t auto_key(const char *peer, const char *host, char out[PASSTHRU_KEY_MAX])
{
	size_t pl = peer ? strlen(peer) : 0, hl = strlen(host);
	if (pl + 1 + hl > PASSTHRU_KEY_MAX)
		return 0;
	if (pl)
		memcpy(out, peer, pl);
	out[pl] = 0;
	for (size_t i = 0; i < hl; i++) {
		char c = host[i];
		out[pl + 1 + i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
	}
	return pl + 1 + hl;
}

static struct passthru_auto *auto_slot(const struct passthru *p, const char *key, size_t len)
{
	uint8_t h[crypto_shorthash_BYTES];
	crypto_shorthash(h, (const uint8_t *)key, len, p->hash_key);
	uint64_t v;
	memcpy(&v, h, sizeof(v));
	return (struct passthru_auto *)&p->slots[v % PASSTHRU_AUTO_SLOTS];
}

void passthru_auto_add(struct passthru *p, const char *peer, const char *host, uint64_t now)
{
	char key[PASSTHRU_KEY_MAX];
	size_t len = auto_key(peer, host, key);
	if (p->auto_s == 0 || len == 0)
		return;
	struct passthru_auto *s = auto_slot(p, key, len);
	memcpy(s->key, key, len);
	s->len = (uint16_t)len;
	s->expires = now + p->auto_s;
}

bool passthru_auto_has(const struct passthru *p, const char *peer, const char *host, uint64_t now)
{
	char key[PASSTHRU_KEY_MAX];
	size_t len = auto_key(peer, host, key);
	if (len == 0)
		return false;
	const struct passthru_auto *s = auto_slot(p, key, len);
	return s->expires > now && s->len == len && memcmp(s->key, key, len) == 0;
}

size_t passthru_auto_count(const struct passthru *p, uint64_t now)
{
	size_t n = 0;
	for (size_t i = 0; i < PASSTHRU_AUTO_SLOTS; i++)
		n += p->slots[i].expires > now;
	return n;
}
