/* The run-time configuration: one JSON document, the same through the API,
 * MCP and HOME/config.json. Field names follow the capture-proxy control
 * API our users' agents already know (capture_scope, tls_passthrough,
 * max_connections, peek_timeout_ms, ...).
 *
 * Two ways to change it, never to be confused:
 * - start: the request is the whole configuration; every field it omits
 *   goes back to its default.
 * - configure: the request changes only the fields it names. With
 *   "operation": "merge" (the default) a list is either replaced by an
 *   array or edited with {"add": [...], "remove": [...]}, and capture_scope's
 *   includes and excludes likewise; with "operation": "replace" each named
 *   field is replaced whole (arrays and objects only, no add/remove).
 *   intercept_rules and dns_overrides are lists of objects edited by key
 *   (a rule's "id", an override's "name"): {"add": [...]} replaces the
 *   entries with the same key in place and appends the others,
 *   {"remove": ["key", ...]} drops them, and for rules {"enable": [ids]}
 *   and {"disable": [ids]} set "enabled" (an unknown id is an error there).
 *
 * Every request is checked whole before anything changes: an unknown field,
 * a wrong type or a bad value fails with the field's path (e.g.
 * "capture_scope.includes[1]") and a message, and the current document
 * stays as it was. Documents returned are complete: every field present. */
#ifndef WGMITM_CONTROL_CONFIG_H
#define WGMITM_CONTROL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define CONFIG_FILE "config.json"

struct config_error {
	char field[128]; /* path of the offending field; "" for the request itself */
	char message[512];
};

/* Checks of values that other modules understand (a filter expression, a
 * DNS upstream): 0, or -1 with a reason in `why`. NULL: accepted as is. */
struct config_checks {
	int (*filter)(const char *expr, char *why, size_t whylen);
	int (*dns_upstream)(const char *addr, char *why, size_t whylen);
	/* One entry of intercept_rules or dns_overrides (mitm/rules.h);
	 * `path` names it ("intercept_rules[2]"), err names the field inside. */
	int (*rule)(const json_t *rule, const char *path, struct config_error *err);
	int (*dns_override)(const json_t *o, const char *path, struct config_error *err);
	int (*condition)(const json_t *o, const char *path, struct config_error *err);
	int (*listener)(const json_t *o, const char *path, struct config_error *err);
};

/* The defaults, every field. */
json_t *config_defaults(void);

/* start: `req` over the defaults. A new document, or NULL with `err` set. */
json_t *config_start(const json_t *req, const struct config_checks *chk, struct config_error *err);

/* configure: `req` applied to `cur` (not changed). A new document, or NULL
 * with `err` set. */
json_t *config_configure(const json_t *cur, const json_t *req, const struct config_checks *chk,
			 struct config_error *err);

/* HOME/config.json: the saved document over the defaults (a missing file
 * is the defaults). NULL with `err` naming the file and the field. */
json_t *config_load(const char *path, const struct config_checks *chk, struct config_error *err);

/* Written atomically, 0600. 0 or -errno. */
int config_save(const char *path, const json_t *doc);

/* One capture scope entry as a filter expression: a string is one already;
 * {"hostname", "url_prefix", "method"} (the object form) becomes the
 * expression it means. A new string, or NULL (not a valid entry). */
char *config_scope_filter(const json_t *entry);

#endif
