/* A shaped link for one direction of one device (shaper.h). */
#include "common/shaper.h"

#include <stdlib.h>
#include <string.h>

struct spkt {
	struct spkt *next;
	uint64_t due_ms;
	size_t len;
	uint8_t data[];
};

struct shaper {
	struct shaper_config cfg;
	struct spkt *head, *tail;
	struct spkt *out; /* handed out by the last pop, freed at the next call */
	size_t bytes;
	double link_free_ms; /* when the link has sent everything queued */
	uint64_t rng;
	struct shaper_stats st;
};

/* xorshift64*: loss needs no more than an even spread. */
static uint64_t rnd(struct shaper *s)
{
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 0x2545F4914F6CDD1Dull;
}

bool shaper_active(const struct shaper_config *cfg)
{
	return cfg->rate || cfg->delay_ms || cfg->loss_ppm;
}

struct shaper *shaper_new(const struct shaper_config *cfg, uint64_t seed)
{
	struct shaper *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->cfg = *cfg;
	s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
	return s;
}

void shaper_free(struct shaper *s)
{
	if (!s)
		return;
	free(s->out);
	while (s->head) {
		struct spkt *p = s->head;
		s->head = p->next;
		free(p);
	}
	free(s);
}

void shaper_set(struct shaper *s, const struct shaper_config *cfg)
{
	s->cfg = *cfg;
}

enum shaper_verdict shaper_push(struct shaper *s, const uint8_t *pkt, size_t len, uint64_t now_ms)
{
	if (s->cfg.loss_ppm && rnd(s) % 1000000u < s->cfg.loss_ppm) {
		s->st.lost++;
		return SHAPER_LOST;
	}
	if (s->bytes + len > SHAPER_MAX_QUEUE) {
		s->st.full++;
		return SHAPER_FULL;
	}
	struct spkt *p = malloc(sizeof(*p) + len);
	if (!p) {
		s->st.full++;
		return SHAPER_FULL;
	}
	double start = s->link_free_ms > (double)now_ms ? s->link_free_ms : (double)now_ms;
	double sent = s->cfg.rate ? start + (double)len * 1000.0 / (double)s->cfg.rate : start;
	s->link_free_ms = sent;
	p->due_ms = (uint64_t)sent + s->cfg.delay_ms;
	/* A lower delay set meanwhile never reorders the queue. */
	if (s->tail && p->due_ms < s->tail->due_ms)
		p->due_ms = s->tail->due_ms;
	p->len = len;
	p->next = NULL;
	memcpy(p->data, pkt, len);
	if (s->tail)
		s->tail->next = p;
	else
		s->head = p;
	s->tail = p;
	s->bytes += len;
	return SHAPER_QUEUED;
}

const uint8_t *shaper_pop(struct shaper *s, uint64_t now_ms, size_t *len)
{
	free(s->out);
	s->out = NULL;
	struct spkt *p = s->head;
	if (!p || p->due_ms > now_ms)
		return NULL;
	s->head = p->next;
	if (!s->head)
		s->tail = NULL;
	s->bytes -= p->len;
	s->st.passed++;
	s->out = p;
	*len = p->len;
	return p->data;
}

uint64_t shaper_next_due(const struct shaper *s)
{
	return s->head ? s->head->due_ms : UINT64_MAX;
}

size_t shaper_queued_bytes(const struct shaper *s)
{
	return s->bytes;
}

void shaper_stats(const struct shaper *s, struct shaper_stats *out)
{
	*out = s->st;
}
