/* The daemon's proxy listeners (src/listen): checked before anything
 * binds, opened once the relay exists, closed before it. */
#ifndef WGMITM_DAEMONLISTEN_H
#define WGMITM_DAEMONLISTEN_H

#include <stddef.h>

#include <jansson.h>

struct config_error;
struct daemon;
struct daemon_options;

/* Before anything binds: two listeners on one port, a listener on the
 * API's port, a non-loopback listener without --users (unless
 * --allow-open-proxy). 0, or -1 with the reason in err. */
int daemon_listeners_check(const struct daemon_options *o, char *err, size_t errlen);

/* Loads --users, binds wrap's proxy and the configuration's listeners.
 * 0, or -1 (logged). */
int daemon_listeners_open(struct daemon *d);

/* The configuration's "listeners" (listen/entry.h) in force: an entry
 * that did not change keeps its socket and its clients, a removed or
 * changed one is closed, a new one binds. Every entry is checked before
 * anything changes (a port two listeners want, the API's or WireGuard's
 * port, an open listener without --allow-open-proxy); a bind that fails
 * puts back the listeners there were. 0, or -1 with err naming the entry. */
int daemon_listeners_set(struct daemon *d, const json_t *list, struct config_error *err);

/* run's --http-proxy, --socks5, --reverse, --forward and --udp-forward as
 * entries of "listeners". */
json_t *daemon_listeners_from_options(const struct daemon_options *o);

void daemon_listeners_close(struct daemon *d);

/* Resolves --upstream-proxy hosts and gives them to the relay. 0, or -1
 * (logged, naming the option). */
int daemon_parents_apply(struct daemon *d);

#endif
