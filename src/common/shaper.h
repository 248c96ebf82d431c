/* A network condition for one direction of one device's packets, as a
 * slow or lossy link would shape them: a serialisation rate, a delay and
 * random loss, with a bounded queue that drops at its tail as a router's
 * does. Sans-IO: packets in with the time, due packets out by the time.
 *
 * A packet leaves when the link has sent those before it at `rate` and
 * `delay` has passed since. Packets are copied in (only shaped devices pay
 * for that). */
#ifndef WGMITM_COMMON_SHAPER_H
#define WGMITM_COMMON_SHAPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHAPER_MAX_QUEUE (4u << 20) /* bytes waiting, as a large router buffer */

struct shaper_config {
	uint64_t rate;     /* bytes per second; 0: no limit */
	uint32_t delay_ms; /* added to every packet */
	uint32_t loss_ppm; /* packets lost per million */
};

enum shaper_verdict { SHAPER_QUEUED, SHAPER_LOST, SHAPER_FULL };

struct shaper;

struct shaper *shaper_new(const struct shaper_config *cfg, uint64_t seed);
void shaper_free(struct shaper *s);
/* New settings for packets from now on; those queued keep their times. */
void shaper_set(struct shaper *s, const struct shaper_config *cfg);
bool shaper_active(const struct shaper_config *cfg);

enum shaper_verdict shaper_push(struct shaper *s, const uint8_t *pkt, size_t len, uint64_t now_ms);
/* The oldest packet due at now_ms: a pointer valid until the next call
 * (its length in *len), or NULL. */
const uint8_t *shaper_pop(struct shaper *s, uint64_t now_ms, size_t *len);
/* When the next packet is due; UINT64_MAX: none queued. */
uint64_t shaper_next_due(const struct shaper *s);
size_t shaper_queued_bytes(const struct shaper *s);

struct shaper_stats {
	uint64_t passed, lost, full;
};
void shaper_stats(const struct shaper *s, struct shaper_stats *out);

#endif
