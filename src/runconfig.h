/* The configuration document (control/config.h) applied to the running
 * endpoint's modules, and `run`'s options as a document of their own. At
 * start: HOME/config.json, then the options given on the command line over
 * it; later, what the API's start and configure produce. */
#ifndef WGMITM_RUNCONFIG_H
#define WGMITM_RUNCONFIG_H

#include <jansson.h>

#include "control/config.h"
#include "daemon.h"

struct relay;
struct udp_relay;
struct tls_ctx;
struct passthru;
struct dns_proxy;
struct policy;
struct netstack;
struct flowlog;
struct runconfig_scope;
struct rulesrc;

/* What a document changes; any may be NULL (not running). */
struct runconfig_targets {
	struct relay *relay;
	struct udp_relay *udp_relay;
	struct tls_ctx *tls; /* NULL: no CA, nothing intercepted */
	struct passthru *passthru;
	struct dns_proxy *dns;
	struct policy *policy;
	struct netstack *ns;
	unsigned api_port; /* never a host port; 0: no API */
	/* The capture scope: compiled here and installed as the log's gate;
	 * *scope is the one in force (runconfig_scope_free at the end). */
	struct flowlog *log;
	struct runconfig_scope **scope;
	struct rulesrc *rules; /* intercept_rules and dns_overrides go here */
	/* network_conditions go here (NULL: not applied) */
	int (*conditions)(void *ctx, const json_t *list, struct config_error *err);
	void *conditions_ctx;
};

void runconfig_scope_free(struct runconfig_scope *s);

/* The fields `run`'s options set (only those given), for config_configure
 * over the saved document. */
json_t *runconfig_from_options(const struct daemon_options *o);

/* The checks of control/config.h that need this program's parsers. */
extern const struct config_checks runconfig_checks;

/* Applies `doc` (complete, as config_start/config_configure return it);
 * `prev` is the document in force (NULL at start), so that only what
 * changed is rebuilt (the upstream TLS trust, the DNS upstreams). -1 with
 * `err` set when something could not be applied; what was applied stays. */
int runconfig_apply(const struct runconfig_targets *t, const json_t *prev, const json_t *doc,
		    struct config_error *err);

#endif
