/* Replay window, RFC 6479 section 2 ("window with redundant bits"): the bitmap
 * is a ring of words; sliding forward clears whole words instead of shifting
 * bits, so the cost of a far jump is bounded by the ring size. */
#include "wg/replay.h"

#include <string.h>

#define WORD_SHIFT 6 /* log2(WG_REPLAY_WORD_BITS) */

void wg_replay_init(struct wg_replay *r)
{
	memset(r, 0, sizeof(*r));
}

bool wg_replay_check(const struct wg_replay *r, uint64_t counter)
{
	if (counter >= WG_REJECT_AFTER_MESSAGES)
		return false;
	uint64_t n = counter + 1; /* shift by one so that "nothing seen" is 0 */
	if (n > r->top)
		return true;
	if (r->top - n > WG_REPLAY_WINDOW)
		return false;
	uint64_t word = (n >> WORD_SHIFT) & (WG_REPLAY_WORDS - 1);
	return !(r->bitmap[word] & (UINT64_C(1) << (n & (WG_REPLAY_WORD_BITS - 1))));
}

bool wg_replay_update(struct wg_replay *r, uint64_t counter)
{
	if (counter >= WG_REJECT_AFTER_MESSAGES)
		return false;
	uint64_t n = counter + 1;
	uint64_t index = n >> WORD_SHIFT;

	if (n > r->top) {
		/* Slide forward: clear every word between the old top and the new
		 * one, at most the whole ring. */
		uint64_t cur = r->top >> WORD_SHIFT;
		uint64_t steps = index - cur;
		if (steps > WG_REPLAY_WORDS)
			steps = WG_REPLAY_WORDS;
		for (uint64_t i = 1; i <= steps; i++)
			r->bitmap[(cur + i) & (WG_REPLAY_WORDS - 1)] = 0;
		r->top = n;
	} else if (r->top - n > WG_REPLAY_WINDOW) {
		/* Behind the window. */
		return false;
	}

	uint64_t *w = &r->bitmap[index & (WG_REPLAY_WORDS - 1)];
	uint64_t bit = UINT64_C(1) << (n & (WG_REPLAY_WORD_BITS - 1));
	if (*w & bit)
		return false;
	*w |= bit;
	return true;
}
