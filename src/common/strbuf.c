/* A growable byte string. */
#include "common/strbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_MIN_CAP 64

/* Every buffer's bytes before its first growth; never written. */
static char strbuf_empty[1];

void strbuf_init(struct strbuf *b, size_t max)
{
	*b = (struct strbuf){ .p = strbuf_empty, .max = max };
}

static int strbuf_fail(struct strbuf *b, int err)
{
	b->err = err;
	return err;
}

int strbuf_reserve(struct strbuf *b, size_t n)
{
	if (b->err)
		return b->err;
	if (b->max && (n > b->max || b->len > b->max - n))
		return strbuf_fail(b, -E2BIG);
	if (n >= SIZE_MAX - b->len)
		return strbuf_fail(b, -ENOMEM);
	size_t need = b->len + n + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap > SIZE_MAX / 2 ? SIZE_MAX : b->cap * 2;
	if (cap < STRBUF_MIN_CAP)
		cap = STRBUF_MIN_CAP;
	if (cap < need)
		cap = need;
	if (b->max && cap - 1 > b->max)
		cap = b->max + 1;
	char *p = realloc(b->cap ? b->p : NULL, cap);
	if (!p)
		return strbuf_fail(b, -ENOMEM);
	if (!b->cap)
		p[0] = '\0';
	b->p = p;
	b->cap = cap;
	return 0;
}

int strbuf_append(struct strbuf *b, const void *data, size_t n)
{
	int rc = strbuf_reserve(b, n);
	if (rc < 0)
		return rc;
	if (n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int strbuf_append_str(struct strbuf *b, const char *s)
{
	return strbuf_append(b, s, strlen(s));
}

int strbuf_printf(struct strbuf *b, const char *fmt, ...)
{
	if (b->err)
		return b->err;
	/* Into the room there is; when it is too small, once more after
	 * growing to the length the first try measured. */
	size_t room = b->cap ? b->cap - b->len : 0;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return strbuf_fail(b, -EINVAL);
	if ((size_t)n >= room) {
		int rc = strbuf_reserve(b, (size_t)n);
		if (rc < 0) {
			if (b->cap)
				b->p[b->len] = '\0'; /* the first try wrote past it */
			return rc;
		}
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->p[b->len] = '\0';
			return strbuf_fail(b, -EINVAL);
		}
	}
	b->len += (size_t)n;
	return 0;
}

void strbuf_reset(struct strbuf *b)
{
	b->len = 0;
	b->err = 0;
	if (b->cap)
		b->p[0] = '\0';
}

void strbuf_free(struct strbuf *b)
{
	if (b->cap)
		free(b->p);
	strbuf_init(b, b->max);
}

char *strbuf_detach(struct strbuf *b, size_t *len)
{
	char *p = NULL;
	if (!b->err)
		p = b->cap ? b->p : strdup("");
	if (len)
		*len = p ? b->len : 0;
	if (p == b->p)
		strbuf_init(b, b->max);
	else
		strbuf_free(b);
	return p;
}
