/* The sources of the interception rules, compiled into one set. */
#include "rulesrc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "mitm/rules.h"

struct rulesrc {
	char path[4200];
	json_t *file_rules, *file_dns;
	json_t *cfg_rules, *cfg_dns;
	json_t *cli_rules, *cli_dns;
	struct ruleset *cur;
	void (*install)(void *ctx, struct ruleset *rs);
	void *ctx;
};

static void concat(json_t *out, const json_t *a)
{
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v) json_array_append(out, v);
}

/* The set of the three sources, or NULL with err set. */
static struct ruleset *build(const struct rulesrc *s, const json_t *file_rules,
			     const json_t *file_dns, const json_t *cfg_rules, const json_t *cfg_dns,
			     struct rules_error *err)
{
	json_t *r = json_array(), *d = json_array();
	concat(r, file_rules);
	concat(r, cfg_rules);
	concat(r, s->cli_rules);
	concat(d, file_dns);
	concat(d, cfg_dns);
	concat(d, s->cli_dns);
	struct ruleset *rs = ruleset_new(r, "rules", d, "dns_overrides", err);
	json_decref(r);
	json_decref(d);
	return rs;
}

static void install(struct rulesrc *s, struct ruleset *rs)
{
	ruleset_unref(s->cur);
	s->cur = rs;
	if (s->install)
		s->install(s->ctx, rs);
}

struct rulesrc *rulesrc_new(const char *home, json_t *cli_rules, json_t *cli_dns,
			    void (*inst)(void *ctx, struct ruleset *rs), void *ctx)
{
	struct rulesrc *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	snprintf(s->path, sizeof(s->path), "%s/%s", home, RULES_FILE);
	s->cli_rules = cli_rules ? json_incref(cli_rules) : json_array();
	s->cli_dns = cli_dns ? json_incref(cli_dns) : json_array();
	s->file_rules = json_array();
	s->file_dns = json_array();
	s->cfg_rules = json_array();
	s->cfg_dns = json_array();
	s->install = inst;
	s->ctx = ctx;
	struct rules_error err;
	struct ruleset *rs = build(s, NULL, NULL, NULL, NULL, &err);
	if (!rs) {
		log_error("command line: %s: %s", err.field, err.message);
		rulesrc_free(s);
		return NULL;
	}
	install(s, rs);
	(void)rulesrc_reload_file(s);
	return s;
}

void rulesrc_free(struct rulesrc *s)
{
	if (!s)
		return;
	json_decref(s->file_rules);
	json_decref(s->file_dns);
	json_decref(s->cfg_rules);
	json_decref(s->cfg_dns);
	json_decref(s->cli_rules);
	json_decref(s->cli_dns);
	ruleset_unref(s->cur);
	free(s);
}

int rulesrc_reload_file(struct rulesrc *s)
{
	json_t *rules = NULL, *dns = NULL;
	bool absent = access(s->path, F_OK) != 0 && errno == ENOENT;
	if (absent) {
		rules = json_array();
		dns = json_array();
	} else {
		json_error_t je;
		json_t *doc = json_load_file(s->path, JSON_REJECT_DUPLICATES, &je);
		if (!doc) {
			log_error("%s: line %d column %d: %s; keeping the running rules", s->path,
				  je.line, je.column, je.text);
			return -1;
		}
		if (json_is_array(doc)) {
			rules = json_incref(doc);
			dns = json_array();
		} else if (json_is_object(doc)) {
			const char *k;
			json_t *v;
			json_object_foreach(doc, k, v)
			{
				if (strcmp(k, "rules") && strcmp(k, "dns_overrides")) {
					log_error("%s: %s: unknown key (rules and dns_overrides); "
						  "keeping the running rules",
						  s->path, k);
					json_decref(doc);
					return -1;
				}
			}
			rules = json_incref(json_object_get(doc, "rules"));
			dns = json_incref(json_object_get(doc, "dns_overrides"));
			if (!rules)
				rules = json_array();
			if (!dns)
				dns = json_array();
		}
		json_decref(doc);
		if (!rules) {
			log_error("%s: expected an array of rules or {\"rules\", "
				  "\"dns_overrides\"}; keeping the running rules",
				  s->path);
			return -1;
		}
	}
	struct rules_error err;
	/* The file alone first, so its errors name its own entries. */
	struct ruleset *alone = ruleset_new(rules, "rules", dns, "dns_overrides", &err);
	struct ruleset *rs = alone ? build(s, rules, dns, s->cfg_rules, s->cfg_dns, &err) : NULL;
	ruleset_unref(alone);
	if (!rs) {
		log_error("%s: %s: %s; keeping the running rules", s->path, err.field, err.message);
		json_decref(rules);
		json_decref(dns);
		return -1;
	}
	json_decref(s->file_rules);
	json_decref(s->file_dns);
	s->file_rules = rules;
	s->file_dns = dns;
	if (!absent) /* every load of the file, so an edit is seen to land */
		log_info("%s: %zu rules, %zu DNS overrides", s->path, json_array_size(rules),
			 json_array_size(dns));
	install(s, rs);
	return 0;
}

int rulesrc_set_config(struct rulesrc *s, const json_t *rules, const json_t *dns,
		       struct config_error *err)
{
	struct rules_error e;
	struct ruleset *rs = build(s, s->file_rules, s->file_dns, rules, dns, &e);
	if (!rs) {
		/* The combined list: an id used in rules.json or by run's options too. */
		snprintf(err->field, sizeof(err->field), "intercept_rules");
		if (snprintf(err->message, sizeof(err->message), "%.100s: %.150s", e.field,
			     e.message) < 0)
			err->message[0] = '\0';
		return -1;
	}
	json_decref(s->cfg_rules);
	json_decref(s->cfg_dns);
	s->cfg_rules = rules ? json_deep_copy(rules) : json_array();
	s->cfg_dns = dns ? json_deep_copy(dns) : json_array();
	install(s, rs);
	return 0;
}

struct ruleset *rulesrc_current(const struct rulesrc *s)
{
	return s->cur;
}

static void list_add(json_t *out, const json_t *a, const char *source)
{
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		json_t *c = json_deep_copy(v);
		json_object_set_new(c, "source", json_string(source));
		json_array_append_new(out, c);
	}
}

json_t *rulesrc_list(const struct rulesrc *s)
{
	json_t *out = json_array();
	list_add(out, s->file_rules, "file");
	list_add(out, s->cfg_rules, "config");
	list_add(out, s->cli_rules, "options");
	return out;
}
