/* Which TLS connections are relayed untouched instead of intercepted.
 *
 * Rules: host globs from --passthrough ("*.apple.com", "pinned.example"),
 * matched case-insensitively against the SNI, or the dialled IP when there
 * is none. Automatic entries: when a client rejects our certificate for a
 * host (a pinning app), that (peer, host) pair passes through for a while so
 * the app keeps working; the table is bounded and keyed with SipHash (SNI is
 * client input), a collision replaces the older entry. */
#ifndef WGMITM_MITM_PASSTHRU_H
#define WGMITM_MITM_PASSTHRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PASSTHRU_MAX_RULES 64
#define PASSTHRU_AUTO_SLOTS 4096
#define PASSTHRU_DEFAULT_AUTO_S 3600
#define PASSTHRU_GLOB_LEN 256 /* longest rule + NUL */

struct passthru;

/* auto_s: how long an automatic entry lasts (0: never add any). */
struct passthru *passthru_new(uint32_t auto_s);
void passthru_free(struct passthru *p);

/* Adds a rule; -EINVAL for an empty or over-long pattern, -ENOSPC. */
int passthru_add_rule(struct passthru *p, const char *glob);
/* Forgets every rule (automatic entries stay). */
void passthru_clear_rules(struct passthru *p);
/* How long automatic entries added from now on last (0: none added). */
void passthru_set_auto_s(struct passthru *p, uint32_t auto_s);

/* The rule matching host, or NULL. */
const char *passthru_rule(const struct passthru *p, const char *host);

/* Automatic entries; `now` in seconds of any monotonic clock. */
void passthru_auto_add(struct passthru *p, const char *peer, const char *host, uint64_t now);
bool passthru_auto_has(const struct passthru *p, const char *peer, const char *host, uint64_t now);
size_t passthru_auto_count(const struct passthru *p, uint64_t now);

#endif
