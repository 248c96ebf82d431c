/* Where the interception rules come from (docs/rules.md), and the one set
 * compiled from them all, in this order:
 *   1. HOME/rules.json: an array of rules, or {"rules": [...],
 *      "dns_overrides": [...]}; reloaded when it changes;
 *   2. the configuration's intercept_rules and dns_overrides (the API's
 *      start and configure, saved in HOME/config.json);
 *   3. run's options (--map-remote, --modify-headers, ... and
 *      --dns-override), which live as long as the process.
 * A source that does not compile is refused with the field that is wrong
 * and the running set stays. Rule ids are unique across the sources. */
#ifndef WGMITM_RULESRC_H
#define WGMITM_RULESRC_H

#include <jansson.h>

#include "control/config.h"

struct ruleset;
struct rulesrc;

/* install: called with each new set (a borrowed reference: take one to
 * keep it). cli_rules and cli_dns: arrays from rules_from_option (NULL:
 * none), referenced. */
struct rulesrc *rulesrc_new(const char *home, json_t *cli_rules, json_t *cli_dns,
			    void (*install)(void *ctx, struct ruleset *rs), void *ctx);
void rulesrc_free(struct rulesrc *s);

/* Reads HOME/rules.json again (a missing file is no rules). 0, or -1 with
 * the reason logged (the running rules stay). */
int rulesrc_reload_file(struct rulesrc *s);

/* The configuration's lists changed. 0, or -1 with err set. */
int rulesrc_set_config(struct rulesrc *s, const json_t *rules, const json_t *dns,
		       struct config_error *err);

/* The set in force (borrowed); never NULL after rulesrc_new. */
struct ruleset *rulesrc_current(const struct rulesrc *s);

/* Every rule of every source as JSON, each with "source" ("file",
 * "config" or "options"). A new array. */
json_t *rulesrc_list(const struct rulesrc *s);

#endif
