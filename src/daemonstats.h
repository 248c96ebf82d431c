/* The running endpoint's counters, from one table: the "stats:" log lines
 * (SIGUSR1, --stats-interval, shutdown) and GET /api/stats. */
#ifndef WGMITM_DAEMONSTATS_H
#define WGMITM_DAEMONSTATS_H

#include <jansson.h>

#include "daemon_internal.h"

/* Logs the counters' lines (every line but the first two only while the
 * relays run). The per-peer lines are the caller's. */
void daemon_stats_log(const struct daemon *d);

/* The counters by layer: wireguard, netstack, tcp, udp, dns, tls, records
 * (a module's object only while it runs). A new reference. */
json_t *daemon_stats_json(const struct daemon *d);

#endif
