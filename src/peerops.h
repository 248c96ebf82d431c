/* Adding, removing and exporting peers in the state directory: what
 * `wgmitm peer` does and what the control API does for it. The running
 * endpoint sees the change by watching the directory. */
#ifndef WGMITM_PEEROPS_H
#define WGMITM_PEEROPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state.h"

struct peerops_spec {
	const char *name;
	const char *endpoint;     /* HOST[:PORT]; NULL: detect when rendering */
	const char *allowed_ips;  /* NULL: everything */
	const char *apps;         /* Android IncludedApplications, comma-separated */
	const char *exclude_apps; /* Android ExcludedApplications */
	unsigned mtu;             /* 0: STATE_DEFAULT_MTU */
	int keepalive;            /* -1: STATE_DEFAULT_KEEPALIVE */
};

/* Creates the peer and saves it. *config (may be NULL) receives its client
 * config text, malloc'ed, secret: peerops_wipe it. -1 with `err` set (a bad
 * name, a name in use, a bad endpoint or list: nothing saved). */
int peerops_add(const char *home, const struct peerops_spec *spec, char **config, char *err,
		size_t errlen);

/* -1 with `err` set when there is no such peer. */
int peerops_remove(const char *home, const char *name, char *err, size_t errlen);

/* The client config text of a peer (secret: peerops_wipe it). */
char *peerops_config(const char *home, const char *name, const char *endpoint, char *err,
		     size_t errlen);

/* A QR code of `text` as PNG or SVG in memory (malloc'ed). */
int peerops_qr(const char *text, bool svg, uint8_t **out, size_t *len, char *err, size_t errlen);

/* Clears and frees a config text. */
void peerops_wipe(char *text);

#endif
