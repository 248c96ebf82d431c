/* The daemon's proxy listeners (src/listen): checked before anything
 * binds, opened once the relay exists, closed before it. */
#ifndef WGMITM_DAEMONLISTEN_H
#define WGMITM_DAEMONLISTEN_H

#include <stddef.h>

struct daemon;
struct daemon_options;

/* Before anything binds: two listeners on one port, a listener on the
 * API's port, a non-loopback listener without --users (unless
 * --allow-open-proxy). 0, or -1 with the reason in err. */
int daemon_listeners_check(const struct daemon_options *o, char *err, size_t errlen);

/* Loads --users and binds every listener. 0, or -1 (logged). */
int daemon_listeners_open(struct daemon *d);

void daemon_listeners_close(struct daemon *d);

/* Resolves --upstream-proxy hosts and gives them to the relay. 0, or -1
 * (logged, naming the option). */
int daemon_parents_apply(struct daemon *d);

#endif
