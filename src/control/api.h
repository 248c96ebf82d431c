/* The control API: the routes of docs/api.md on control/httpd, behind
 * control/auth, over the flow store, the configuration and what the
 * running endpoint reports through `struct api_ops`. Also serves MCP's
 * streamable HTTP transport at /mcp and the live events WebSocket. */
#ifndef WGMITM_CONTROL_API_H
#define WGMITM_CONTROL_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "control/config.h"

#define API_DEFAULT_PORT 8081

/* What only the running endpoint knows, on the loop's thread. Results are
 * new references; errors are messages a person can act on. */
struct api_ops {
	json_t *(*status)(void *ctx); /* version, uptime, listen addresses, ... */
	json_t *(*stats)(void *ctx);  /* the counters SIGUSR1 prints */
	json_t *(*peers)(void *ctx);  /* [{name, address, address6, public_key,
				       *   endpoint, last_handshake, rx_bytes, ...}] */
	/* {"name", "allowed_ips", "apps", "exclude_apps", "endpoint", "mtu",
	 * "keepalive"} → {"name", ..., "config"}. -1: err set (400). */
	int (*peer_add)(void *ctx, const json_t *req, json_t **out, char *err, size_t errlen);
	/* -1: no such peer (404), err set. */
	int (*peer_remove)(void *ctx, const char *name, char *err, size_t errlen);
	/* The client config text (secret), malloc'ed; NULL: err set (404). */
	char *(*peer_config)(void *ctx, const char *name, char *err, size_t errlen);
	/* Its QR code, PNG or SVG, malloc'ed. -1: err set (404). */
	int (*peer_qr)(void *ctx, const char *name, bool svg, uint8_t **data, size_t *len,
		       char *err, size_t errlen);
	/* {"fingerprint_sha256", "subject", "not_after", "pem"}; NULL: no CA. */
	json_t *(*ca)(void *ctx);
	/* The configuration in force (borrowed). */
	const json_t *(*config_get)(void *ctx);
	/* A complete, checked document to apply and save. -1: err names what
	 * could not be applied. */
	int (*config_set)(void *ctx, json_t *doc, struct config_error *err);
	/* Resends the http `record` (borrowed) with `edits` (an object, or
	 * NULL). 0: `done` is called later, once, with the HTTP status and
	 * the answer (a reference handed over). -1: *status (400, 429, 503)
	 * and err set. NULL: the endpoint does not replay (503). */
	int (*replay)(void *ctx, const json_t *record, const json_t *edits,
		      void (*done)(void *arg, int status, json_t *answer), void *arg, int *status,
		      char *err, size_t errlen);
	/* Breakpoints (docs/rules.md): the messages held now (an array);
	 * release one as it is (edits NULL) or edited (mitm/held.h's JSON);
	 * kill one. 0, -ENOENT (404) or -EINVAL (400, err names the field). */
	json_t *(*held_list)(void *ctx);
	int (*held_release)(void *ctx, uint64_t id, const json_t *edits, char *err, size_t errlen);
	int (*held_kill)(void *ctx, uint64_t id);
	/* Every rule of every source, each with "source" ("file", "config",
	 * "options"); only "config" rules are edited through the API. */
	json_t *(*rules_list)(void *ctx);
	void *ctx;
};

struct api_config {
	const char *home;       /* the token and api.json live here */
	const char *host;       /* bind address; NULL: 127.0.0.1 */
	uint16_t port;          /* 0: any free port */
	const char *store_path; /* HOME/flows.db; NULL: no flow routes (503) */
	const struct api_ops *ops;
	const struct config_checks *checks;
};

struct api;

/* Listens, writes HOME/api.json (address, port, pid) and creates the token
 * when there is none. NULL with a message in err. */
struct api *api_new(uv_loop_t *loop, const struct api_config *cfg, char *err, size_t errlen);

/* The port listened on, and the login link that sets the cookie. */
uint16_t api_port(const struct api *a);
void api_login_url(const struct api *a, char *out, size_t outlen);

/* A record the flow log just took (the flowlog observer): live events to
 * the subscribers whose filter it matches. */
void api_flow_recorded(struct api *a, const json_t *record);

/* A flow that began (the flowlog begin observer): "flow_start" events for
 * subscribers whose filter its first fields match. */
struct flowlog_flow;
void api_flow_started(struct api *a, const struct flowlog_flow *f);

/* A breakpoint event (mitm/held.h: "held", "released", "killed",
 * "timeout", "closed") for subscribers of held events. */
void api_held_event(struct api *a, const char *what, const json_t *item);

/* A log line, for subscribers of log events. */
void api_log_line(struct api *a, const char *level, const char *line);

/* Removes HOME/api.json and closes everything; run the loop after. */
void api_free(struct api *a);

#endif
