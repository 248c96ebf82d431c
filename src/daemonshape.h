/* Network conditions per device (the configuration's network_conditions):
 * latency, bandwidth each way and loss, applied to the device's packets
 * in the tunnel, so every app on it sees a slow or lossy link. Devices
 * without one keep the direct path. Loop thread only. */
#ifndef WGMITM_DAEMONSHAPE_H
#define WGMITM_DAEMONSHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct daemon;
struct daemon_peer;
struct config_error;

#define DAEMON_MAX_CONDITIONS 64

/* Checks and installs the list ([{"device", "latency_ms", "down_kbps",
 * "up_kbps", "loss_percent"}]); NULL: none. -1 with err naming the field,
 * the running conditions kept. */
int daemon_shape_set(struct daemon *d, const json_t *list, struct config_error *err);
/* One entry of the list, checked (for the configuration's checks). */
int daemon_shape_check(const json_t *o, const char *path, struct config_error *err);
/* A peer was added: its condition, if one names it. */
void daemon_shape_peer(struct daemon *d, struct daemon_peer *dp);
void daemon_shape_peer_free(struct daemon_peer *dp);
/* A packet to (down) or from (up) a shaped peer: true when the shaper took
 * it (queued or lost); false: send it as always. */
bool daemon_shape_down(struct daemon *d, struct daemon_peer *dp, const uint8_t *pkt, size_t len);
bool daemon_shape_up(struct daemon *d, struct daemon_peer *dp, const uint8_t *pkt, size_t len);
void daemon_shape_close(struct daemon *d);

#endif
