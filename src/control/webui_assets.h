/* The web UI's static files (web/), embedded at build time by
 * cmake/embed.cmake: the binary serves them without the source tree. */
#ifndef WGMITM_CONTROL_WEBUI_ASSETS_H
#define WGMITM_CONTROL_WEBUI_ASSETS_H

#include <stddef.h>

struct webui_asset {
	const char *name;          /* relative to web/: "index.html", "js/app.js" */
	const unsigned char *data; /* NUL-terminated beyond len */
	size_t len;
};

/* Sorted by name. */
extern const struct webui_asset webui_assets[];
extern const size_t webui_nassets;

#endif
