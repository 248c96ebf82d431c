/* Open things per key, each key with a cap: how many connections or flows
 * each peer holds, so that one peer cannot take every slot of a shared
 * table. A key's entry lives while its count is above zero. */
#ifndef WGMITM_COMMON_TALLY_H
#define WGMITM_COMMON_TALLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tally;
struct tally_entry;

struct tally *tally_new(void);
void tally_free(struct tally *t);

/* One more for `key` (NULL: the empty key) unless it already holds `cap`.
 * Returns its entry, for tally_give, or NULL: at the cap (counted in
 * tally_refused) or out of memory. */
struct tally_entry *tally_take(struct tally *t, const char *key, uint32_t cap);
/* One less for the entry tally_take returned. */
void tally_give(struct tally *t, struct tally_entry *e);
/* One less for `key`; nothing when it holds nothing. */
void tally_give_key(struct tally *t, const char *key);

uint32_t tally_count(const struct tally *t, const char *key);
/* Keys holding anything. */
size_t tally_keys(const struct tally *t);
/* tally_take calls refused at a cap since tally_new. */
uint64_t tally_refused(const struct tally *t);

#endif
