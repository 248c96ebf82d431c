/* Transport replay window: an RFC 6479 sliding bitmap of 8192 bits, of which
 * 8128 (WG_REPLAY_WINDOW) trail the highest counter seen, as in wireguard-go
 * replay/replay.go and the Linux module's counter_validate(). Pure: no
 * allocation, no locking (one receive context owns one window). */
#ifndef WGMITM_WG_REPLAY_H
#define WGMITM_WG_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "wg/messages.h" /* WG_REJECT_AFTER_MESSAGES */

#define WG_REPLAY_BITS_TOTAL 8192u
#define WG_REPLAY_WORD_BITS 64u
#define WG_REPLAY_WORDS (WG_REPLAY_BITS_TOTAL / WG_REPLAY_WORD_BITS)
/* One word of the ring is recycled while sliding: a counter up to
 * WG_REPLAY_WINDOW below the highest one seen is still accepted. */
#define WG_REPLAY_WINDOW (WG_REPLAY_BITS_TOTAL - WG_REPLAY_WORD_BITS)

struct wg_replay {
	/* Highest counter accepted so far, plus one; 0 = nothing accepted yet. */
	uint64_t top;
	uint64_t bitmap[WG_REPLAY_WORDS];
};

void wg_replay_init(struct wg_replay *r);

/* Cheap test without state change, for use before decryption: false if the
 * counter is surely a replay, too old or at/after REJECT_AFTER_MESSAGES. */
bool wg_replay_check(const struct wg_replay *r, uint64_t counter);

/* Accept or reject an authenticated counter and record it. Returns true the
 * first time a counter inside the window is seen. Call only after the packet
 * decrypted, or an attacker could burn counters. */
__attribute__((warn_unused_result)) bool wg_replay_update(struct wg_replay *r, uint64_t counter);

/* Highest counter accepted so far + 1 (0 when none). */
static inline uint64_t wg_replay_next(const struct wg_replay *r)
{
	return r->top;
}

#endif
