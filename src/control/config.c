/* The run-time configuration document: defaults, checks, start and
 * configure. */
#include "control/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomicfile.h"
#include "common/strbuf.h"

enum kind { K_BOOL, K_INT, K_ENUM, K_STRLIST, K_PORTLIST, K_SCOPE, K_OBJLIST };

struct field;
typedef int (*item_check)(const struct config_checks *chk, const char *item, char *why,
			  size_t whylen);

struct field {
	const char *name;
	enum kind kind;
	json_int_t min, max, def;  /* K_INT; K_BOOL: def */
	const char *const *values; /* K_ENUM; the first is the default */
	size_t max_items;          /* lists */
	item_check check;          /* K_STRLIST items */
	const char *key;           /* K_OBJLIST: the member naming an entry */
};

static int check_glob(const struct config_checks *chk, const char *s, char *why, size_t n)
{
	(void)chk;
	if (!*s || strlen(s) > 253) {
		snprintf(why, n, "expected a host name or a glob such as *.example.com");
		return -1;
	}
	for (const char *p = s; *p; p++) {
		if (*p <= ' ' || *p == '/' || *p == ':' || (unsigned char)*p >= 0x7f) {
			snprintf(why, n, "\"%s\" is not a host name or glob (character %ld)", s,
				 (long)(p - s) + 1);
			return -1;
		}
	}
	return 0;
}

static int check_readable(const struct config_checks *chk, const char *s, char *why, size_t n)
{
	(void)chk;
	if (!*s || access(s, R_OK) != 0) {
		snprintf(why, n, "cannot read \"%s\": %s", s, *s ? strerror(errno) : "empty path");
		return -1;
	}
	return 0;
}

static int check_dns(const struct config_checks *chk, const char *s, char *why, size_t n)
{
	return chk && chk->dns_upstream ? chk->dns_upstream(s, why, n) : 0;
}

static const char *const quic_values[] = { "refuse", "passthrough", NULL };

static const struct field fields[] = {
	{ .name = "capture_scope", .kind = K_SCOPE, .max_items = 256 },
	{ .name = "tls_passthrough", .kind = K_STRLIST, .max_items = 64, .check = check_glob },
	{ .name = "auto_passthrough_s", .kind = K_INT, .min = 0, .max = 30 * 86400, .def = 3600 },
	{ .name = "intercept_tls", .kind = K_BOOL, .def = 1 },
	{ .name = "upstream_ca", .kind = K_STRLIST, .max_items = 16, .check = check_readable },
	{ .name = "upstream_insecure_skip_verify", .kind = K_BOOL, .def = 0 },
	{ .name = "body_cap", .kind = K_INT, .min = 0, .max = 16 << 20, .def = 1 << 20 },
	{ .name = "quic", .kind = K_ENUM, .values = quic_values },
	{ .name = "dns_upstreams", .kind = K_STRLIST, .max_items = 8, .check = check_dns },
	{ .name = "allow_host_ports", .kind = K_PORTLIST, .max_items = 16 },
	{ .name = "max_connections", .kind = K_INT, .min = 1, .max = 1000000, .def = 16384 },
	{ .name = "max_connections_per_peer", .kind = K_INT, .min = 0, .max = 1000000, .def = 0 },
	{ .name = "peek_timeout_ms", .kind = K_INT, .min = 100, .max = 600000, .def = 2000 },
	{ .name = "connect_timeout_ms", .kind = K_INT, .min = 100, .max = 600000, .def = 10000 },
	{ .name = "tls_handshake_timeout_ms",
	  .kind = K_INT,
	  .min = 100,
	  .max = 600000,
	  .def = 30000 },
	{ .name = "half_close_timeout_ms",
	  .kind = K_INT,
	  .min = 1000,
	  .max = 86400000,
	  .def = 60000 },
	{ .name = "breakpoint_timeout_s", .kind = K_INT, .min = 1, .max = 86400, .def = 300 },
	{ .name = "intercept_rules", .kind = K_OBJLIST, .max_items = 256, .key = "id" },
	{ .name = "dns_overrides", .kind = K_OBJLIST, .max_items = 64, .key = "name" },
	{ .name = "network_conditions", .kind = K_OBJLIST, .max_items = 64, .key = "device" },
	{ .name = "listeners", .kind = K_OBJLIST, .max_items = 32, .key = "name" },
};

#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static const struct field *field_find(const char *name)
{
	for (size_t i = 0; i < NFIELDS; i++)
		if (strcmp(fields[i].name, name) == 0)
			return &fields[i];
	return NULL;
}

static int fail(struct config_error *err, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct config_error *err, const char *field, const char *fmt, ...)
{
	snprintf(err->field, sizeof(err->field), "%s", field);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

static json_t *field_default(const struct field *f)
{
	switch (f->kind) {
	case K_BOOL:
		return json_boolean(f->def);
	case K_INT:
		return json_integer(f->def);
	case K_ENUM:
		return json_string(f->values[0]);
	case K_STRLIST:
	case K_PORTLIST:
	case K_OBJLIST:
		return json_array();
	case K_SCOPE:
		return json_pack("{s:[],s:[]}", "includes", "excludes");
	}
	return NULL;
}

json_t *config_defaults(void)
{
	json_t *d = json_object();
	for (size_t i = 0; i < NFIELDS; i++)
		json_object_set_new(d, fields[i].name, field_default(&fields[i]));
	return d;
}

/* ---- Checking one value --------------------------------------------------- */

static const char *kind_name(enum kind k)
{
	switch (k) {
	case K_BOOL:
		return "true or false";
	case K_INT:
		return "an integer";
	case K_ENUM:
		return "a string";
	case K_STRLIST:
		return "an array of strings";
	case K_PORTLIST:
		return "an array of ports";
	case K_SCOPE:
		return "an object with includes and excludes";
	case K_OBJLIST:
		return "an array of objects";
	}
	return "?";
}

static bool is_scope_object(const json_t *e)
{
	return json_is_object(e) &&
	       (json_object_get(e, "hostname") || json_object_get(e, "url_prefix") ||
		json_object_get(e, "method"));
}

static int check_scope_entry(const json_t *e, const char *path, const struct config_checks *chk,
			     struct config_error *err)
{
	char why[200] = "";
	if (json_is_string(e)) {
		if (chk && chk->filter && chk->filter(json_string_value(e), why, sizeof(why)) < 0)
			return fail(err, path, "bad filter expression: %s", why);
		if (!*json_string_value(e))
			return fail(err, path, "an empty filter expression");
		return 0;
	}
	if (!json_is_object(e))
		return fail(err, path,
			    "expected a filter expression or {\"hostname\", \"url_prefix\", "
			    "\"method\"}");
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)e, k, v)
	{
		if (strcmp(k, "hostname") && strcmp(k, "url_prefix") && strcmp(k, "method"))
			return fail(err, path,
				    "unknown key \"%s\" (a scope rule has hostname, url_prefix, "
				    "method)",
				    k);
		if (!json_is_string(v) || !*json_string_value(v))
			return fail(err, path, "%s: expected a non-empty string", k);
	}
	if (!is_scope_object(e))
		return fail(err, path, "a scope rule needs hostname, url_prefix or method");
	const char *host = json_string_value(json_object_get(e, "hostname"));
	if (host && check_glob(chk, host, why, sizeof(why)) < 0)
		return fail(err, path, "hostname: %s", why);
	char *expr = config_scope_filter(e);
	if (!expr)
		return fail(err, path, "cannot express this rule as a filter");
	int rc = 0;
	if (chk && chk->filter && chk->filter(expr, why, sizeof(why)) < 0)
		rc = fail(err, path, "%s", why);
	free(expr);
	return rc;
}

/* An item of a list field; `path` names it. */
static int check_item(const struct field *f, const json_t *v, const char *path,
		      const struct config_checks *chk, struct config_error *err)
{
	char why[200] = "";
	switch (f->kind) {
	case K_STRLIST:
		if (!json_is_string(v))
			return fail(err, path, "expected a string");
		if (f->check && f->check(chk, json_string_value(v), why, sizeof(why)) < 0)
			return fail(err, path, "%s", why);
		return 0;
	case K_PORTLIST:
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 65535)
			return fail(err, path, "expected a port, 1 to 65535");
		return 0;
	case K_OBJLIST: {
		if (!json_is_object(v) || !json_is_string(json_object_get(v, f->key)))
			return fail(err, path, "expected an object with a string \"%s\"", f->key);
		int (*check)(const json_t *, const char *, struct config_error *) =
			!chk                                      ? NULL
			: strcmp(f->name, "intercept_rules") == 0 ? chk->rule
			: strcmp(f->name, "dns_overrides") == 0   ? chk->dns_override
			: strcmp(f->name, "listeners") == 0       ? chk->listener
								  : chk->condition;
		return check ? check(v, path, err) : 0;
	}
	default:
		return check_scope_entry(v, path, chk, err);
	}
}

static int check_list(const struct field *f, const json_t *a, const char *path,
		      const struct config_checks *chk, struct config_error *err)
{
	if (!json_is_array(a))
		return fail(err, path, "expected an array");
	if (json_array_size(a) > f->max_items)
		return fail(err, path, "at most %zu entries", f->max_items);
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		char p[128];
		snprintf(p, sizeof(p), "%s[%zu]", path, i);
		if (check_item(f, v, p, chk, err) < 0)
			return -1;
		for (size_t j = 0; f->kind == K_OBJLIST && j < i; j++)
			if (json_equal(json_object_get(json_array_get(a, j), f->key),
				       json_object_get(v, f->key)))
				return fail(err, p, "%s \"%s\" is already entry %zu", f->key,
					    json_string_value(json_object_get(v, f->key)), j);
	}
	return 0;
}

static int check_value(const struct field *f, const json_t *v, const struct config_checks *chk,
		       struct config_error *err)
{
	switch (f->kind) {
	case K_BOOL:
		if (!json_is_boolean(v))
			return fail(err, f->name, "expected %s", kind_name(f->kind));
		return 0;
	case K_INT:
		if (!json_is_integer(v) || json_integer_value(v) < f->min ||
		    json_integer_value(v) > f->max)
			return fail(err, f->name, "expected an integer from %lld to %lld",
				    (long long)f->min, (long long)f->max);
		return 0;
	case K_ENUM:
		for (size_t i = 0; json_is_string(v) && f->values[i]; i++)
			if (strcmp(json_string_value(v), f->values[i]) == 0)
				return 0;
		return fail(err, f->name, "expected \"%s\" or \"%s\"", f->values[0], f->values[1]);
	case K_STRLIST:
	case K_PORTLIST:
	case K_OBJLIST:
		return check_list(f, v, f->name, chk, err);
	case K_SCOPE: {
		if (!json_is_object(v))
			return fail(err, f->name, "expected %s", kind_name(f->kind));
		const char *k;
		json_t *l;
		json_object_foreach((json_t *)v, k, l)
		{
			char p[128];
			snprintf(p, sizeof(p), "%s.%s", f->name, k);
			if (strcmp(k, "includes") && strcmp(k, "excludes"))
				return fail(err, p,
					    "unknown key (capture_scope has includes and "
					    "excludes)");
			if (check_list(f, l, p, chk, err) < 0)
				return -1;
		}
		return 0;
	}
	}
	return -1;
}

/* ---- Editing lists ---------------------------------------------------------- */

static bool list_has(const json_t *a, const json_t *v)
{
	size_t i;
	json_t *x;
	json_array_foreach(a, i, x) if (json_equal(x, v)) return true;
	return false;
}

/* `cur` edited by `edit`: an array replaces it; {"add", "remove"} edits
 * it (added entries already present stay once, removing an absent one is
 * no error). A new array, or NULL with err set. */
static json_t *list_edit(const struct field *f, const json_t *cur, const json_t *edit,
			 const char *path, bool merge, const struct config_checks *chk,
			 struct config_error *err)
{
	if (json_is_array(edit)) {
		if (check_list(f, edit, path, chk, err) < 0)
			return NULL;
		json_t *out = json_array();
		size_t i;
		json_t *v;
		json_array_foreach(edit, i, v) if (!list_has(out, v)) json_array_append(out, v);
		return out;
	}
	if (!merge || !json_is_object(edit)) {
		fail(err, path,
		     merge ? "expected an array or {\"add\": [...], \"remove\": [...]}"
			   : "expected an array (replace takes whole values)");
		return NULL;
	}
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)edit, k, v)
	{
		char p[128];
		snprintf(p, sizeof(p), "%s.%s", path, k);
		if (strcmp(k, "add") && strcmp(k, "remove")) {
			fail(err, p, "unknown key (a list is edited with add and remove)");
			return NULL;
		}
		if (check_list(f, v, p, chk, err) < 0)
			return NULL;
	}
	const json_t *add = json_object_get(edit, "add"), *rm = json_object_get(edit, "remove");
	json_t *out = json_array();
	size_t i;
	json_array_foreach(cur, i, v) if (!list_has(rm, v) && !list_has(out, v))
		json_array_append(out, v);
	json_array_foreach(add, i, v) if (!list_has(out, v)) json_array_append(out, v);
	if (json_array_size(out) > f->max_items) {
		json_decref(out);
		fail(err, path, "at most %zu entries", f->max_items);
		return NULL;
	}
	return out;
}

/* The index of the entry whose key is `key`, or -1. */
static long objlist_find(const struct field *f, const json_t *a, const json_t *key)
{
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v) if (json_equal(json_object_get(v, f->key), key)) return (long)i;
	return -1;
}

/* A list of objects edited by key (config.h). A new array, or NULL with
 * err set. */
static json_t *objlist_edit(const struct field *f, const json_t *cur, const json_t *edit,
			    const char *path, const struct config_checks *chk,
			    struct config_error *err)
{
	bool rules = strcmp(f->key, "id") == 0;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)edit, k, v)
	{
		char p[128];
		snprintf(p, sizeof(p), "%s.%s", path, k);
		bool keys = strcmp(k, "remove") == 0 ||
			    (rules && (strcmp(k, "enable") == 0 || strcmp(k, "disable") == 0));
		if (!keys && strcmp(k, "add") != 0) {
			fail(err, p, "unknown key (edited with add, remove%s)",
			     rules ? ", enable and disable" : "");
			return NULL;
		}
		if (!json_is_array(v)) {
			fail(err, p, "expected an array");
			return NULL;
		}
		size_t i;
		json_t *x;
		json_array_foreach(v, i, x)
		{
			if (keys && !json_is_string(x)) {
				char q[160];
				snprintf(q, sizeof(q), "%s[%zu]", p, i);
				fail(err, q, "expected the %s of an entry", f->key);
				return NULL;
			}
		}
		if (!keys && check_list(f, v, p, chk, err) < 0)
			return NULL;
	}
	json_t *out = json_deep_copy(cur);
	size_t i;
	json_t *x;
	json_array_foreach(json_object_get(edit, "remove"), i, x)
	{
		long at = objlist_find(f, out, x);
		if (at >= 0)
			json_array_remove(out, (size_t)at);
	}
	json_array_foreach(json_object_get(edit, "add"), i, x)
	{
		long at = objlist_find(f, out, json_object_get(x, f->key));
		if (at >= 0)
			json_array_set(out, (size_t)at, x);
		else
			json_array_append(out, x);
	}
	for (int on = 0; rules && on < 2; on++) {
		const char *what = on ? "enable" : "disable";
		json_array_foreach(json_object_get(edit, what), i, x)
		{
			long at = objlist_find(f, out, x);
			if (at < 0) {
				char q[160];
				snprintf(q, sizeof(q), "%s.%s[%zu]", path, what, i);
				fail(err, q, "no rule has the id \"%s\"", json_string_value(x));
				json_decref(out);
				return NULL;
			}
			json_object_set_new(json_array_get(out, (size_t)at), "enabled",
					    json_boolean(on));
		}
	}
	if (json_array_size(out) > f->max_items) {
		json_decref(out);
		fail(err, path, "at most %zu entries", f->max_items);
		return NULL;
	}
	return out;
}

/* ---- start and configure ---------------------------------------------------- */

/* `req`'s fields applied to `doc` (changed in place). `whole`: start,
 * values are whole; else configure with merge or replace. */
static int apply(json_t *doc, const json_t *req, bool whole, bool merge,
		 const struct config_checks *chk, struct config_error *err)
{
	if (!json_is_object(req))
		return fail(err, "", "expected a JSON object");
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)req, k, v)
	{
		if (!whole && strcmp(k, "operation") == 0)
			continue;
		const struct field *f = field_find(k);
		if (!f)
			return fail(err, k, "unknown field");
		bool list = f->kind == K_STRLIST || f->kind == K_PORTLIST || f->kind == K_OBJLIST;
		if (whole || (!merge && f->kind == K_SCOPE) || (!list && f->kind != K_SCOPE)) {
			if (f->kind == K_SCOPE && json_is_object(v)) {
				/* Whole: what it omits is empty. */
				if (check_value(f, v, chk, err) < 0)
					return -1;
				json_t *s = field_default(f);
				json_object_update_existing(s, v);
				json_object_set_new(doc, k, s);
				continue;
			}
			if (check_value(f, v, chk, err) < 0)
				return -1;
			json_object_set(doc, k, v);
			continue;
		}
		if (f->kind == K_OBJLIST && merge && json_is_object(v)) {
			json_t *n = objlist_edit(f, json_object_get(doc, k), v, k, chk, err);
			if (!n)
				return -1;
			json_object_set_new(doc, k, n);
			continue;
		}
		if (f->kind != K_SCOPE) {
			json_t *n = list_edit(f, json_object_get(doc, k), v, k, merge, chk, err);
			if (!n)
				return -1;
			json_object_set_new(doc, k, n);
			continue;
		}
		if (!json_is_object(v))
			return fail(err, k, "expected an object with includes and excludes");
		json_t *scope = json_deep_copy(json_object_get(doc, k));
		const char *sk;
		json_t *sv;
		json_object_foreach(v, sk, sv)
		{
			char p[128];
			snprintf(p, sizeof(p), "%s.%s", k, sk);
			if (strcmp(sk, "includes") && strcmp(sk, "excludes")) {
				json_decref(scope);
				return fail(
					err, p,
					"unknown key (capture_scope has includes and excludes)");
			}
			json_t *n =
				list_edit(f, json_object_get(scope, sk), sv, p, merge, chk, err);
			if (!n) {
				json_decref(scope);
				return -1;
			}
			json_object_set_new(scope, sk, n);
		}
		json_object_set_new(doc, k, scope);
	}
	return 0;
}

json_t *config_start(const json_t *req, const struct config_checks *chk, struct config_error *err)
{
	memset(err, 0, sizeof(*err));
	json_t *doc = config_defaults();
	if (req && apply(doc, req, true, false, chk, err) < 0) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}

json_t *config_configure(const json_t *cur, const json_t *req, const struct config_checks *chk,
			 struct config_error *err)
{
	memset(err, 0, sizeof(*err));
	const json_t *op = json_object_get(req, "operation");
	bool merge = true;
	if (op) {
		if (json_is_string(op) && strcmp(json_string_value(op), "replace") == 0) {
			merge = false;
		} else if (!json_is_string(op) || strcmp(json_string_value(op), "merge") != 0) {
			fail(err, "operation", "expected \"merge\" or \"replace\"");
			return NULL;
		}
	}
	/* A document that lacks fields (an older file) gets their defaults. */
	json_t *doc = config_defaults();
	if (json_is_object(cur))
		json_object_update_existing(doc, (json_t *)cur);
	if (apply(doc, req, false, merge, chk, err) < 0) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}

json_t *config_load(const char *path, const struct config_checks *chk, struct config_error *err)
{
	memset(err, 0, sizeof(*err));
	if (access(path, F_OK) != 0 && errno == ENOENT)
		return config_defaults();
	json_error_t je;
	json_t *saved = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!saved) {
		fail(err, "", "%s: line %d column %d: %s", path, je.line, je.column, je.text);
		return NULL;
	}
	json_t *doc = config_start(saved, chk, err);
	json_decref(saved);
	if (!doc) {
		char msg[sizeof(err->message)];
		snprintf(msg, sizeof(msg), "%s", err->message);
		/* A long path cuts the message short; the field still shows. */
		if (snprintf(err->message, sizeof(err->message), "%s: %s%s%s", path, err->field,
			     *err->field ? ": " : "", msg) >= (int)sizeof(err->message))
			err->message[sizeof(err->message) - 1] = '\0';
	}
	return doc;
}

int config_save(const char *path, const json_t *doc)
{
	char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (!text)
		return -ENOMEM;
	size_t n = strlen(text);
	text[n] = '\0';
	char *line = realloc(text, n + 2);
	if (!line) {
		free(text);
		return -ENOMEM;
	}
	line[n] = '\n';
	int rc = atomicfile_write(path, line, n + 1, 0600);
	free(line);
	return rc;
}

/* ---- Scope rules as filters ---------------------------------------------------- */

/* `s` as a regex matching it literally, inside a quoted filter argument:
 * regex escapes are backslashes, and a quoted argument escapes backslash
 * and the quote with a backslash. */
static void append_literal(struct strbuf *b, const char *s)
{
	for (; *s; s++) {
		if (strchr(".^$|()[]{}*+?\\/", *s))
			strbuf_append_str(b, "\\\\");
		if (*s == '"')
			strbuf_append_str(b, "\\");
		strbuf_append(b, s, 1);
	}
}

char *config_scope_filter(const json_t *e)
{
	if (json_is_string(e))
		return strdup(json_string_value(e));
	if (!is_scope_object(e))
		return NULL;
	const char *host = json_string_value(json_object_get(e, "hostname"));
	const char *prefix = json_string_value(json_object_get(e, "url_prefix"));
	const char *method = json_string_value(json_object_get(e, "method"));
	struct strbuf b;
	strbuf_init(&b, 0);
	if (host) {
		strbuf_append_str(&b, "~d \"^");
		if (strncmp(host, "*.", 2) == 0) {
			strbuf_append_str(&b, ".+\\\\.");
			host += 2;
		}
		append_literal(&b, host);
		strbuf_append_str(&b, "$\"");
	}
	if (prefix) {
		/* The path of the URL: after the scheme and the authority. */
		strbuf_append_str(&b, b.len ? " & ~u \"^[a-z][a-z0-9+.-]*://[^/]+"
					    : "~u \"^[a-z][a-z0-9+.-]*://[^/]+");
		append_literal(&b, prefix);
		strbuf_append_str(&b, "\"");
	}
	if (method) {
		strbuf_append_str(&b, b.len ? " & ~m \"^" : "~m \"^");
		append_literal(&b, method);
		strbuf_append_str(&b, "$\"");
	}
	if (!b.len) {
		strbuf_free(&b);
		return NULL;
	}
	return strbuf_detach(&b, NULL);
}
