/* Network conditions per device (daemonshape.h). */
#include "daemonshape.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/shaper.h"
#include "control/config.h"
#include "daemon_internal.h"
#include "netstack/netstack.h"
#include "wg/device.h"

static int cond_fail(struct config_error *err, const char *path, const char *key, const char *msg)
{
	snprintf(err->field, sizeof(err->field), "%.100s%s%.20s", path, key ? "." : "",
		 key ? key : "");
	snprintf(err->message, sizeof(err->message), "%s", msg);
	return -1;
}

static int num(const json_t *o, const char *key, double max, double *out, struct config_error *err,
	       const char *path)
{
	const json_t *v = json_object_get(o, key);
	*out = 0;
	if (!v)
		return 0;
	if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > max ||
	    !isfinite(json_number_value(v))) {
		char m[96];
		snprintf(m, sizeof(m), "expected a number from 0 to %.0f", max);
		return cond_fail(err, path, key, m);
	}
	*out = json_number_value(v);
	return 0;
}

static int cond_parse(const json_t *o, const char *path, struct daemon_condition *c,
		      struct config_error *err)
{
	if (!json_is_object(o))
		return cond_fail(err, path, NULL, "expected an object");
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v)
	{
		if (strcmp(k, "device") && strcmp(k, "latency_ms") && strcmp(k, "down_kbps") &&
		    strcmp(k, "up_kbps") && strcmp(k, "loss_percent"))
			return cond_fail(err, path, k,
					 "unknown key (device, latency_ms, down_kbps, up_kbps, "
					 "loss_percent)");
	}
	const char *dev = json_string_value(json_object_get(o, "device"));
	if (!dev || !dev[0] || strlen(dev) >= sizeof(c->device))
		return cond_fail(err, path, "device", "expected a device name");
	double lat, down, up, loss;
	if (num(o, "latency_ms", 60000, &lat, err, path) < 0 ||
	    num(o, "down_kbps", 10000000, &down, err, path) < 0 ||
	    num(o, "up_kbps", 10000000, &up, err, path) < 0 ||
	    num(o, "loss_percent", 100, &loss, err, path) < 0)
		return -1;
	memset(c, 0, sizeof(*c));
	snprintf(c->device, sizeof(c->device), "%s", dev);
	/* The latency is the round trip's: half each way. */
	c->down.delay_ms = (uint32_t)(lat / 2);
	c->up.delay_ms = (uint32_t)(lat - lat / 2);
	c->down.rate = (uint64_t)(down * 1000 / 8);
	c->up.rate = (uint64_t)(up * 1000 / 8);
	c->down.loss_ppm = c->up.loss_ppm = (uint32_t)(loss * 10000);
	if (down > 0 && c->down.rate == 0)
		c->down.rate = 1;
	if (up > 0 && c->up.rate == 0)
		c->up.rate = 1;
	return 0;
}

int daemon_shape_check(const json_t *o, const char *path, struct config_error *err)
{
	struct daemon_condition c;
	return cond_parse(o, path, &c, err);
}

static const struct daemon_condition *cond_for(const struct daemon *d, const char *name)
{
	for (size_t i = 0; i < d->nconds; i++)
		if (strcmp(d->conds[i].device, name) == 0)
			return &d->conds[i];
	return NULL;
}

static void shape_one(struct shaper **s, const struct shaper_config *c, uint64_t seed)
{
	if (!shaper_active(c)) {
		/* What is queued still goes out: the peer's queue empties
		 * through the timer before the shaper goes. */
		if (*s && shaper_queued_bytes(*s) == 0) {
			shaper_free(*s);
			*s = NULL;
		} else if (*s) {
			shaper_set(*s, c);
		}
		return;
	}
	if (*s)
		shaper_set(*s, c);
	else
		*s = shaper_new(c, seed);
}

void daemon_shape_peer(struct daemon *d, struct daemon_peer *dp)
{
	const struct daemon_condition *c = cond_for(d, dp->name);
	struct shaper_config none = { 0 };
	uint64_t seed = uv_hrtime() ^ (uintptr_t)dp;
	shape_one(&dp->down, c ? &c->down : &none, seed);
	shape_one(&dp->up, c ? &c->up : &none, seed * 31 + 7);
}

void daemon_shape_peer_free(struct daemon_peer *dp)
{
	shaper_free(dp->down);
	shaper_free(dp->up);
	dp->down = dp->up = NULL;
}

int daemon_shape_set(struct daemon *d, const json_t *list, struct config_error *err)
{
	struct daemon_condition next[DAEMON_MAX_CONDITIONS];
	size_t n = 0, i;
	json_t *o;
	if (list && !json_is_array(list))
		return cond_fail(err, "network_conditions", NULL, "expected an array of objects");
	json_array_foreach(list, i, o)
	{
		char path[64];
		snprintf(path, sizeof(path), "network_conditions[%zu]", i);
		if (n == DAEMON_MAX_CONDITIONS)
			return cond_fail(err, path, NULL, "too many (at most 64)");
		if (cond_parse(o, path, &next[n], err) < 0)
			return -1;
		for (size_t j = 0; j < n; j++)
			if (strcmp(next[j].device, next[n].device) == 0)
				return cond_fail(err, path, "device",
						 "a second condition for this device");
		n++;
	}
	memcpy(d->conds, next, n * sizeof(next[0]));
	d->nconds = n;
	for (size_t p = 0; p < d->npeers; p++)
		daemon_shape_peer(d, d->peers[p]);
	if (n)
		log_info("network conditions on %zu device%s", n, n == 1 ? "" : "s");
	return 0;
}

static void shape_timer_fired(uv_timer_t *t);

/* The timer watches the earliest packet due of any peer. */
static void shape_arm(struct daemon *d)
{
	uint64_t due = UINT64_MAX;
	for (size_t i = 0; i < d->npeers; i++) {
		struct daemon_peer *dp = d->peers[i];
		if (dp->down && shaper_next_due(dp->down) < due)
			due = shaper_next_due(dp->down);
		if (dp->up && shaper_next_due(dp->up) < due)
			due = shaper_next_due(dp->up);
	}
	if (due == UINT64_MAX || d->stopping) {
		uv_timer_stop(&d->shape_timer);
		return;
	}
	uint64_t now = uv_now(d->loop);
	uv_timer_start(&d->shape_timer, shape_timer_fired, due > now ? due - now : 0, 0);
}

static void shape_timer_fired(uv_timer_t *t)
{
	struct daemon *d = t->data;
	uv_update_time(d->loop);
	uint64_t now = uv_now(d->loop);
	for (size_t i = 0; i < d->npeers; i++) {
		struct daemon_peer *dp = d->peers[i];
		const uint8_t *p;
		size_t len;
		while (dp->up && d->ns && (p = shaper_pop(dp->up, now, &len)) != NULL)
			netstack_input(d->ns, p, len);
		while (dp->down && (p = shaper_pop(dp->down, now, &len)) != NULL)
			wg_device_send(d->dev, dp->wp, p, len, uv_hrtime());
		/* A condition removed: its shaper goes once it is empty. */
		daemon_shape_peer(d, dp);
	}
	shape_arm(d);
}

static bool shape_push(struct daemon *d, struct shaper *s, const uint8_t *pkt, size_t len)
{
	if (!s)
		return false;
	if (!d->shape_timer_init) {
		uv_timer_init(d->loop, &d->shape_timer);
		d->shape_timer.data = d;
		d->shape_timer_init = true;
	}
	if (shaper_push(s, pkt, len, uv_now(d->loop)) == SHAPER_QUEUED)
		shape_arm(d);
	return true;
}

bool daemon_shape_down(struct daemon *d, struct daemon_peer *dp, const uint8_t *pkt, size_t len)
{
	return dp && shape_push(d, dp->down, pkt, len);
}

bool daemon_shape_up(struct daemon *d, struct daemon_peer *dp, const uint8_t *pkt, size_t len)
{
	return dp && shape_push(d, dp->up, pkt, len);
}

void daemon_shape_close(struct daemon *d)
{
	if (d->shape_timer_init && !uv_is_closing((uv_handle_t *)&d->shape_timer))
		uv_close((uv_handle_t *)&d->shape_timer, NULL);
}
