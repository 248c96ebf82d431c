/* The proxy listeners' users file (users.h). */
#include "listen/users.h"

#include <crypt.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

struct user {
	char *name;
	char *secret; /* a crypt(3) hash when it starts with '$' */
	/* A hash is slow on purpose (tens of ms on the loop thread): the
	 * password last found right is remembered by its digest. */
	unsigned char ok[crypto_generichash_BYTES];
	bool has_ok;
};

struct users {
	struct user *v;
	size_t n;
};

void users_free(struct users *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < u->n; i++) {
		free(u->v[i].name);
		sodium_memzero(u->v[i].secret, strlen(u->v[i].secret));
		free(u->v[i].secret);
	}
	free(u->v);
	free(u);
}

size_t users_count(const struct users *u)
{
	return u ? u->n : 0;
}

static const struct user *find(const struct users *u, const char *name)
{
	for (size_t i = 0; i < u->n; i++)
		if (strcmp(u->v[i].name, name) == 0)
			return &u->v[i];
	return NULL;
}

struct users *users_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	struct users *u = calloc(1, sizeof(*u));
	char *line = NULL;
	size_t cap = 0, cap_users = 0, lineno = 0;
	ssize_t len;
	if (!u)
		goto nomem;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		const char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0' || *s == '#')
			continue;
		const char *colon = strchr(s, ':');
		size_t nl = colon ? (size_t)(colon - s) : 0;
		if (!colon || nl == 0 || nl > USERS_NAME_MAX || colon[1] == '\0') {
			snprintf(err, errlen, "%s:%zu: expected user:password", path, lineno);
			goto fail;
		}
		if (u->n == USERS_MAX) {
			snprintf(err, errlen, "%s:%zu: more than %u users", path, lineno,
				 USERS_MAX);
			goto fail;
		}
		char name[USERS_NAME_MAX + 1];
		memcpy(name, s, nl);
		name[nl] = '\0';
		if (find(u, name)) {
			snprintf(err, errlen, "%s:%zu: user \"%s\" is listed twice", path, lineno,
				 name);
			goto fail;
		}
		if (colon[1] == '$' && strlen(colon + 1) < 13) {
			snprintf(err, errlen, "%s:%zu: the password hash of \"%s\" is too short",
				 path, lineno, name);
			goto fail;
		}
		if (u->n == cap_users) {
			size_t nc = cap_users ? 2 * cap_users : 16;
			struct user *v = realloc(u->v, nc * sizeof(*v));
			if (!v)
				goto nomem;
			u->v = v;
			cap_users = nc;
		}
		u->v[u->n].name = strdup(name);
		u->v[u->n].secret = strdup(colon + 1);
		u->v[u->n].has_ok = false;
		if (!u->v[u->n].name || !u->v[u->n].secret) {
			free(u->v[u->n].name);
			free(u->v[u->n].secret);
			goto nomem;
		}
		u->n++;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (u->n == 0) {
		snprintf(err, errlen, "%s: no users", path);
		goto fail;
	}
	if (line)
		sodium_memzero(line, cap);
	free(line);
	fclose(f);
	return u;
nomem:
	snprintf(err, errlen, "%s: out of memory", path);
fail:
	if (line)
		sodium_memzero(line, cap);
	free(line);
	fclose(f);
	users_free(u);
	return NULL;
}

bool users_has(const struct users *u, const char *user)
{
	return u && user && find(u, user) != NULL;
}

bool users_check(const struct users *u, const char *user, const char *pass)
{
	if (!u || !user || !pass)
		return false;
	struct user *e = (struct user *)find(u, user);
	if (!e)
		return false;
	if (e->secret[0] == '$') {
		unsigned char d[crypto_generichash_BYTES];
		crypto_generichash(d, sizeof(d), (const unsigned char *)pass, strlen(pass), NULL,
				   0);
		if (e->has_ok && sodium_memcmp(d, e->ok, sizeof(d)) == 0)
			return true;
		struct crypt_data cd;
		memset(&cd, 0, sizeof(cd));
		const char *h = crypt_r(pass, e->secret, &cd);
		bool ok = h && h[0] != '*' && strlen(h) == strlen(e->secret) &&
			  sodium_memcmp(h, e->secret, strlen(h)) == 0;
		sodium_memzero(&cd, sizeof(cd));
		if (ok) {
			memcpy(e->ok, d, sizeof(d));
			e->has_ok = true;
		}
		return ok;
	}
	size_t n = strlen(e->secret);
	return strlen(pass) == n && sodium_memcmp(pass, e->secret, n) == 0;
}
