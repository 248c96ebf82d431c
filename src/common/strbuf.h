/* A growable byte string, NUL-terminated at every step (after curl's
 * dynbuf and git's strbuf): for building text and collecting bytes whose
 * size is not known in advance. */
#ifndef WGMITM_COMMON_STRBUF_H
#define WGMITM_COMMON_STRBUF_H

#include <stddef.h>

/* p[len] is always '\0', so p is a C string whenever the bytes hold no
 * NUL. Before the first growth p is a shared empty string (cap 0): it may
 * be read, never written nor freed. The first failure is kept in `err`,
 * and every append after it does nothing and returns it again, so a
 * builder can make its calls and check once at the end; the bytes are
 * those before the failed call. */
struct strbuf {
	char *p;
	size_t len; /* bytes before the NUL */
	size_t cap; /* bytes allocated at p; 0 while p is the shared empty string */
	size_t max; /* the most `len` may reach; 0: no limit */
	int err;    /* 0, -ENOMEM, -E2BIG (over max) or -EINVAL (a bad format) */
};

/* An empty buffer holding at most `max` bytes (0: no limit). Allocates
 * nothing. */
void strbuf_init(struct strbuf *b, size_t max);

/* Room for `n` more bytes and the NUL, so that appending them allocates
 * nothing. 0, or the buffer's error: -ENOMEM, or -E2BIG when len + n would
 * exceed max. */
__attribute__((warn_unused_result)) int strbuf_reserve(struct strbuf *b, size_t n);

/* Appends `n` bytes (none of them on failure). 0 or the buffer's error. */
int strbuf_append(struct strbuf *b, const void *data, size_t n);
int strbuf_append_str(struct strbuf *b, const char *s);
/* Appends printf's output (none of it on failure). 0 or the buffer's error. */
__attribute__((format(printf, 2, 3))) int strbuf_printf(struct strbuf *b, const char *fmt, ...);

/* Empties the buffer and clears its error; the allocation is kept. */
void strbuf_reset(struct strbuf *b);
/* Frees the bytes; the buffer is empty, as after strbuf_init (max kept). */
void strbuf_free(struct strbuf *b);
/* Hands the bytes to the caller (free() them), NUL-terminated, and their
 * length to *len (when not NULL); the buffer is left empty, as after
 * strbuf_free. NULL when the buffer holds an error (the bytes are freed)
 * or an empty string cannot be allocated. */
char *strbuf_detach(struct strbuf *b, size_t *len);

#endif
