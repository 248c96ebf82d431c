/* A peer's client config as the phone imports it, built from the state. */
#ifndef WGMITM_PEERCONF_H
#define WGMITM_PEERCONF_H

#include "state.h"

#include <stddef.h>
#include <stdio.h>

/* The endpoint written into configs: `override` (HOST[:PORT]), else the
 * peer's stored endpoint, else the best detected host address. When
 * `others` is given, the other detected candidates are written to it so the
 * user can pick one. Returns 0 or -errno with a message in err. */
int peerconf_endpoint(const struct state *st, const struct state_peer *p, const char *override,
		      char *out, size_t outlen, FILE *others, char *err, size_t errlen);

/* The wg-quick text of a peer's config (malloc'ed, caller frees). */
char *peerconf_render(const struct state *st, const struct state_peer *p, const char *endpoint,
		      char *err, size_t errlen);

/* The text and a terminal QR code of it, as shown by `peer add` and on first run. */
int peerconf_print(const struct state *st, const struct state_peer *p, const char *override,
		   FILE *out, char *err, size_t errlen);

/* Writes the QR code of a config text as PNG and/or SVG (either may be NULL). */
int peerconf_save_qr(const char *text, const char *png, const char *svg, char *err, size_t errlen);

#endif
