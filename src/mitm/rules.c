/* Interception rules: parsing and checking, matching, the header and body
 * edits. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "mitm/rules.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "flows/fields.h"
#include "flows/filter.h"

/* ---- errors --------------------------------------------------------------- */

static int fail(struct rules_error *err, const char *path, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct rules_error *err, const char *path, const char *key, const char *fmt, ...)
{
	if (key && *key)
		snprintf(err->field, sizeof(err->field), "%s%s%s", path, *path ? "." : "", key);
	else
		snprintf(err->field, sizeof(err->field), "%s", path);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* A field's path, cut to the buffer when it is deeper than any real one. */
static void subpath(char *dst, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void subpath(char *dst, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, n, fmt, ap);
	va_end(ap);
}

/* ---- small checks ----------------------------------------------------------- */

static bool is_token(const char *s)
{
	if (!*s)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p <= ' ' || *p >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *p))
			return false;
	return true;
}

static bool is_header_value(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return false;
	return true;
}

static bool key_in(const char *k, const char *const *keys)
{
	for (; *keys; keys++)
		if (strcmp(k, *keys) == 0)
			return true;
	return false;
}

static int only_keys(const json_t *o, const char *const *keys, const char *path,
		     struct rules_error *err)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v)
	{
		if (!key_in(k, keys))
			return fail(err, path, k, "unknown key");
	}
	return 0;
}

static void *re_new(const char *pat, size_t len, bool caseless, const char *path, const char *key,
		    struct rules_error *err)
{
	if (len > RULES_MAX_TEXT) {
		fail(err, path, key, "longer than %u bytes", RULES_MAX_TEXT);
		return NULL;
	}
	int code;
	PCRE2_SIZE off;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, caseless ? PCRE2_CASELESS : 0, &code,
				       &off, NULL);
	if (!re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(code, msg, sizeof(msg));
		fail(err, path, key, "regex: %s at offset %zu", (const char *)msg, (size_t)off);
		return NULL;
	}
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	return re;
}

static pcre2_match_context *match_ctx(void)
{
	static pcre2_match_context *mc;
	if (!mc) {
		mc = pcre2_match_context_create(NULL);
		if (mc) {
			pcre2_set_match_limit(mc, FILTER_MATCH_LIMIT);
			pcre2_set_heap_limit(mc, 64 * 1024);
		}
	}
	return mc;
}

static bool re_find(void *re, const char *s, size_t n)
{
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
	if (!md)
		return false;
	int rc = pcre2_match(re, (PCRE2_SPTR)(s ? s : ""), s ? n : 0, 0, 0, md, match_ctx());
	pcre2_match_data_free(md);
	return rc >= 0;
}

/* A string member: NULL when absent; -1 (err set) when not a string or
 * too long. */
static int get_str(const json_t *o, const char *key, const char *path, bool required,
		   const char **out, size_t *len, struct rules_error *err)
{
	const json_t *v = json_object_get(o, key);
	*out = NULL;
	if (len)
		*len = 0;
	if (!v) {
		if (required)
			return fail(err, path, key, "required");
		return 0;
	}
	if (!json_is_string(v))
		return fail(err, path, key, "expected a string");
	size_t n = json_string_length(v);
	if (n > RULES_MAX_TEXT && strcmp(key, "body") != 0)
		return fail(err, path, key, "longer than %u bytes", RULES_MAX_TEXT);
	*out = json_string_value(v);
	if (len)
		*len = n;
	return 0;
}

static int get_int(const json_t *o, const char *key, const char *path, json_int_t min,
		   json_int_t max, json_int_t def, json_int_t *out, struct rules_error *err)
{
	const json_t *v = json_object_get(o, key);
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return fail(err, path, key, "expected an integer from %lld to %lld", (long long)min,
			    (long long)max);
	*out = json_integer_value(v);
	return 0;
}

static char *dup_n(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

static int parse_dir(const json_t *o, const char *key, const char *path, enum rule_dir def,
		     enum rule_dir *out, struct rules_error *err)
{
	const char *s;
	if (get_str(o, key, path, false, &s, NULL, err) < 0)
		return -1;
	if (!s)
		*out = def;
	else if (strcmp(s, "request") == 0)
		*out = RULE_REQUEST;
	else if (strcmp(s, "response") == 0)
		*out = RULE_RESPONSE;
	else if (strcmp(s, "both") == 0)
		*out = RULE_BOTH;
	else
		return fail(err, path, key, "expected \"request\", \"response\" or \"both\"");
	return 0;
}

/* ---- actions -------------------------------------------------------------- */

static const struct {
	const char *name;
	enum rule_action_kind kind;
	enum rule_dir sides; /* where it can act */
} KINDS[] = {
	{ "set_header", RA_SET_HEADER, RULE_BOTH },
	{ "add_header", RA_ADD_HEADER, RULE_BOTH },
	{ "remove_header", RA_REMOVE_HEADER, RULE_BOTH },
	{ "replace_body", RA_REPLACE_BODY, RULE_BOTH },
	{ "set_json", RA_SET_JSON, RULE_BOTH },
	{ "set_status", RA_SET_STATUS, RULE_RESPONSE },
	{ "delay", RA_DELAY, RULE_BOTH },
	{ "throttle", RA_THROTTLE, RULE_BOTH },
	{ "mock", RA_MOCK, RULE_REQUEST },
	{ "block", RA_BLOCK, RULE_REQUEST },
	{ "redirect", RA_REDIRECT, RULE_REQUEST },
	{ "breakpoint", RA_BREAKPOINT, RULE_BOTH },
	{ "ws_replace", RA_WS_REPLACE, RULE_BOTH },
	{ "ws_drop", RA_WS_DROP, RULE_BOTH },
	{ "ws_breakpoint", RA_WS_BREAKPOINT, RULE_BOTH },
};

static void action_free(struct rule_action *a)
{
	free(a->name);
	free(a->value);
	pcre2_code_free(a->re);
	free(a->replacement);
	for (size_t i = 0; i < a->npath; i++)
		free(a->path[i]);
	free(a->path);
	json_decref(a->json);
	for (size_t i = 0; i < a->nheaders; i++) {
		free(a->headers[i].name);
		free(a->headers[i].value);
	}
	free(a->headers);
	free(a->body);
	free(a->scheme);
	free(a->host);
	free(a->rpath);
	memset(a, 0, sizeof(*a));
}

static int read_body_file(const char *file, const char *path, struct rule_action *a,
			  struct rules_error *err)
{
	FILE *fp = fopen(file, "rb");
	if (!fp)
		return fail(err, path, "body_file", "cannot read \"%s\": %s", file,
			    strerror(errno));
	a->body = malloc(RULES_MAX_FILE_BODY + 1 > 65536 ? 65536 : RULES_MAX_FILE_BODY + 1);
	size_t cap = 65536, len = 0;
	while (a->body) {
		size_t got = fread(a->body + len, 1, cap - len, fp);
		len += got;
		if (len > RULES_MAX_FILE_BODY)
			break;
		if (got == 0)
			break;
		if (len == cap) {
			size_t ncap = cap * 2 > RULES_MAX_FILE_BODY + 1 ? RULES_MAX_FILE_BODY + 1
									: cap * 2;
			uint8_t *nb = realloc(a->body, ncap);
			if (!nb) {
				free(a->body);
				a->body = NULL;
				break;
			}
			a->body = nb;
			cap = ncap;
		}
	}
	bool bad = ferror(fp);
	fclose(fp);
	if (!a->body)
		return fail(err, path, "body_file", "out of memory");
	if (bad)
		return fail(err, path, "body_file", "cannot read \"%s\"", file);
	if (len > RULES_MAX_FILE_BODY)
		return fail(err, path, "body_file", "\"%s\" is larger than %u bytes", file,
			    RULES_MAX_FILE_BODY);
	a->body_len = len;
	a->has_body = true;
	return 0;
}

static int add_mock_header(struct rule_action *a, const char *name, const char *value, size_t vlen,
			   const char *path, struct rules_error *err)
{
	if (!is_token(name) || strlen(name) > RULES_MAX_TEXT)
		return fail(err, path, NULL, "\"%.64s\" is not a header name", name);
	if (!is_header_value(value, vlen) || vlen > RULES_MAX_TEXT)
		return fail(err, path, NULL, "a header value holds no CR, LF or NUL");
	if (a->nheaders == 64)
		return fail(err, path, NULL, "at most 64 headers");
	struct rule_header *nh = realloc(a->headers, (a->nheaders + 1) * sizeof(*nh));
	if (!nh)
		return fail(err, path, NULL, "out of memory");
	a->headers = nh;
	nh[a->nheaders].name = strdup(name);
	nh[a->nheaders].value = dup_n(value, vlen);
	a->nheaders++;
	if (!nh[a->nheaders - 1].name || !nh[a->nheaders - 1].value)
		return fail(err, path, NULL, "out of memory");
	return 0;
}

static int parse_mock_headers(const json_t *h, const char *path, struct rule_action *a,
			      struct rules_error *err)
{
	char p[200];
	subpath(p, sizeof(p), "%s.headers", path);
	if (json_is_object(h)) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)h, k, v)
		{
			if (!json_is_string(v))
				return fail(err, p, k, "expected a string");
			if (add_mock_header(a, k, json_string_value(v), json_string_length(v), p,
					    err) < 0)
				return -1;
		}
		return 0;
	}
	if (!json_is_array(h))
		return fail(err, p, NULL, "expected an object or an array of [name, value]");
	size_t i;
	json_t *v;
	json_array_foreach(h, i, v)
	{
		char q[220];
		subpath(q, sizeof(q), "%s[%zu]", p, i);
		const json_t *n = json_array_get(v, 0), *val = json_array_get(v, 1);
		if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_string(n) ||
		    !json_is_string(val))
			return fail(err, q, NULL, "expected [name, value]");
		if (add_mock_header(a, json_string_value(n), json_string_value(val),
				    json_string_length(val), q, err) < 0)
			return -1;
	}
	return 0;
}

static int parse_json_path(const char *s, const char *path, struct rule_action *a,
			   struct rules_error *err)
{
	if (strncmp(s, "$.", 2) == 0)
		s += 2;
	if (!*s)
		return fail(err, path, "path", "empty path");
	size_t n = 1;
	for (const char *p = s; *p; p++)
		n += *p == '.';
	if (n > 32)
		return fail(err, path, "path", "at most 32 levels");
	a->path = calloc(n, sizeof(*a->path));
	if (!a->path)
		return fail(err, path, "path", "out of memory");
	const char *p = s;
	for (size_t i = 0; i < n; i++) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		if (len == 0)
			return fail(err, path, "path", "empty key at level %zu", i + 1);
		a->path[i] = dup_n(p, len);
		a->npath = i + 1;
		if (!a->path[i])
			return fail(err, path, "path", "out of memory");
		p = dot ? dot + 1 : p + len;
	}
	return 0;
}

static int parse_redirect(const json_t *o, const char *path, struct rule_action *a,
			  struct rules_error *err)
{
	const char *s;
	size_t n;
	if (get_str(o, "url_regex", path, false, &s, &n, err) < 0)
		return -1;
	if (s) {
		if (!(a->re = re_new(s, n, false, path, "url_regex", err)))
			return -1;
		const char *r;
		if (get_str(o, "replacement", path, true, &r, &n, err) < 0)
			return -1;
		if (!(a->replacement = dup_n(r, n)))
			return fail(err, path, "replacement", "out of memory");
		if (json_object_get(o, "scheme") || json_object_get(o, "host") ||
		    json_object_get(o, "port") || json_object_get(o, "path"))
			return fail(err, path, "url_regex",
				    "either url_regex and replacement, or scheme/host/port/path");
		return 0;
	}
	if (get_str(o, "scheme", path, false, &s, NULL, err) < 0)
		return -1;
	if (s) {
		if (strcmp(s, "http") && strcmp(s, "https"))
			return fail(err, path, "scheme", "expected \"http\" or \"https\"");
		a->scheme = strdup(s);
	}
	if (get_str(o, "host", path, false, &s, &n, err) < 0)
		return -1;
	if (s) {
		if (n == 0 || n > 253)
			return fail(err, path, "host", "expected a host name or address");
		for (size_t i = 0; i < n; i++)
			if (s[i] <= ' ' || s[i] >= 0x7f || strchr("/?#@[]", s[i]))
				return fail(err, path, "host", "\"%s\" is not a host name", s);
		a->host = strdup(s);
	}
	json_int_t port;
	if (get_int(o, "port", path, 1, 65535, 0, &port, err) < 0)
		return -1;
	a->port = (uint16_t)port;
	if (get_str(o, "path", path, false, &s, &n, err) < 0)
		return -1;
	if (s) {
		if (s[0] != '/' || !is_header_value(s, n))
			return fail(err, path, "path", "expected a path beginning with /");
		for (size_t i = 0; i < n; i++)
			if (s[i] == ' ')
				return fail(err, path, "path", "a space must be written %%20");
		a->rpath = dup_n(s, n);
	}
	if (!a->scheme && !a->host && !a->port && !a->rpath)
		return fail(err, path, NULL,
			    "redirect needs url_regex and replacement, or one of scheme, host, "
			    "port, path");
	return 0;
}

static int parse_action(const json_t *o, const char *path, enum rule_dir rule_dir,
			struct rule_action *a, struct rules_error *err)
{
	if (!json_is_object(o))
		return fail(err, path, NULL, "expected an object with a \"type\"");
	const char *type;
	if (get_str(o, "type", path, true, &type, NULL, err) < 0)
		return -1;
	size_t k;
	for (k = 0; k < sizeof(KINDS) / sizeof(KINDS[0]); k++)
		if (strcmp(KINDS[k].name, type) == 0)
			break;
	if (k == sizeof(KINDS) / sizeof(KINDS[0]))
		return fail(err, path, "type",
			    "unknown action \"%.40s\" (set_header, add_header, remove_header, "
			    "replace_body, set_json, set_status, delay, throttle, mock, block, "
			    "redirect, breakpoint, ws_replace, ws_drop, ws_breakpoint)",
			    type);
	a->kind = KINDS[k].kind;
	enum rule_dir def = (enum rule_dir)(rule_dir & KINDS[k].sides);
	if (!def)
		return fail(err, path, "type", "%s acts on %s: the rule's direction must cover it",
			    type, KINDS[k].sides == RULE_REQUEST ? "requests" : "responses");
	if (parse_dir(o, "on", path, def, &a->on, err) < 0)
		return -1;
	if ((a->on & ~KINDS[k].sides) || (a->on & ~rule_dir))
		return fail(err, path, "on", "outside the rule's direction or what %s acts on",
			    type);
	static const char *const header_keys[] = { "type", "on", "name", "value", NULL };
	static const char *const body_keys[] = {
		"type", "on", "regex", "replacement", "body", NULL
	};
	static const char *const json_keys[] = { "type", "on", "path", "value", NULL };
	static const char *const status_keys[] = { "type", "on", "status", NULL };
	static const char *const delay_keys[] = { "type", "on", "ms", NULL };
	static const char *const throttle_keys[] = { "type", "on", "bytes_per_s", NULL };
	static const char *const mock_keys[] = { "type", "on",        "status", "headers",
						 "body", "body_file", NULL };
	static const char *const redirect_keys[] = { "type",        "on",     "url_regex",
						     "replacement", "scheme", "host",
						     "port",        "path",   NULL };
	static const char *const bp_keys[] = { "type", "on", NULL };
	static const char *const ws_replace_keys[] = { "type", "on", "regex", "replacement", NULL };
	const char *s;
	size_t n;
	json_int_t iv;
	switch (a->kind) {
	case RA_SET_HEADER:
	case RA_ADD_HEADER:
	case RA_REMOVE_HEADER:
		if (only_keys(o, header_keys, path, err) < 0 ||
		    get_str(o, "name", path, true, &s, NULL, err) < 0)
			return -1;
		if (!is_token(s))
			return fail(err, path, "name", "\"%.64s\" is not a header name", s);
		a->name = strdup(s);
		if (a->kind == RA_REMOVE_HEADER) {
			if (json_object_get(o, "value"))
				return fail(err, path, "value", "remove_header takes no value");
			break;
		}
		if (get_str(o, "value", path, true, &s, &n, err) < 0)
			return -1;
		if (!is_header_value(s, n))
			return fail(err, path, "value", "a header value holds no CR, LF or NUL");
		a->value = dup_n(s, n);
		break;
	case RA_REPLACE_BODY:
		if (only_keys(o, body_keys, path, err) < 0 ||
		    get_str(o, "regex", path, false, &s, &n, err) < 0)
			return -1;
		if (s) {
			if (!(a->re = re_new(s, n, false, path, "regex", err)))
				return -1;
			if (json_object_get(o, "body"))
				return fail(err, path, "body",
					    "either regex and replacement, or body");
			if (get_str(o, "replacement", path, true, &s, &n, err) < 0)
				return -1;
			a->replacement = dup_n(s, n);
			break;
		}
		if (json_object_get(o, "replacement"))
			return fail(err, path, "replacement", "a replacement needs a regex");
		if (get_str(o, "body", path, true, &s, &n, err) < 0)
			return -1;
		if (n > RULES_MAX_INLINE_BODY)
			return fail(err, path, "body", "longer than %u bytes",
				    RULES_MAX_INLINE_BODY);
		a->body = (uint8_t *)dup_n(s, n);
		a->body_len = n;
		a->has_body = true;
		break;
	case RA_SET_JSON:
		if (only_keys(o, json_keys, path, err) < 0 ||
		    get_str(o, "path", path, true, &s, NULL, err) < 0 ||
		    parse_json_path(s, path, a, err) < 0)
			return -1;
		if (!json_object_get(o, "value"))
			return fail(err, path, "value", "required");
		a->json = json_deep_copy(json_object_get(o, "value"));
		break;
	case RA_SET_STATUS:
		if (only_keys(o, status_keys, path, err) < 0 ||
		    get_int(o, "status", path, 100, 999, -1, &iv, err) < 0)
			return -1;
		if (iv < 0)
			return fail(err, path, "status", "required");
		a->status = (int)iv;
		break;
	case RA_DELAY:
		if (only_keys(o, delay_keys, path, err) < 0 ||
		    get_int(o, "ms", path, 0, RULES_MAX_DELAY_MS, -1, &iv, err) < 0)
			return -1;
		if (iv < 0)
			return fail(err, path, "ms", "required");
		a->ms = (uint32_t)iv;
		break;
	case RA_THROTTLE:
		if (only_keys(o, throttle_keys, path, err) < 0 ||
		    get_int(o, "bytes_per_s", path, 1, (json_int_t)1 << 40, -1, &iv, err) < 0)
			return -1;
		if (iv < 0)
			return fail(err, path, "bytes_per_s", "required");
		a->rate = (uint64_t)iv;
		break;
	case RA_MOCK:
		if (only_keys(o, mock_keys, path, err) < 0 ||
		    get_int(o, "status", path, 100, 999, 200, &iv, err) < 0)
			return -1;
		a->status = (int)iv;
		if (json_object_get(o, "headers") &&
		    parse_mock_headers(json_object_get(o, "headers"), path, a, err) < 0)
			return -1;
		if (get_str(o, "body", path, false, &s, &n, err) < 0)
			return -1;
		if (s) {
			if (json_object_get(o, "body_file"))
				return fail(err, path, "body_file", "either body or body_file");
			if (n > RULES_MAX_INLINE_BODY)
				return fail(err, path, "body", "longer than %u bytes",
					    RULES_MAX_INLINE_BODY);
			a->body = (uint8_t *)dup_n(s, n);
			a->body_len = n;
			a->has_body = true;
		} else {
			if (get_str(o, "body_file", path, false, &s, NULL, err) < 0)
				return -1;
			if (s && read_body_file(s, path, a, err) < 0)
				return -1;
		}
		break;
	case RA_BLOCK:
		if (only_keys(o, status_keys, path, err) < 0 ||
		    get_int(o, "status", path, 100, 999, 444, &iv, err) < 0)
			return -1;
		a->status = (int)iv;
		break;
	case RA_REDIRECT:
		if (only_keys(o, redirect_keys, path, err) < 0 ||
		    parse_redirect(o, path, a, err) < 0)
			return -1;
		break;
	case RA_BREAKPOINT:
	case RA_WS_DROP:
	case RA_WS_BREAKPOINT:
		if (only_keys(o, bp_keys, path, err) < 0)
			return -1;
		break;
	case RA_WS_REPLACE:
		if (only_keys(o, ws_replace_keys, path, err) < 0 ||
		    get_str(o, "regex", path, true, &s, &n, err) < 0)
			return -1;
		if (!(a->re = re_new(s, n, false, path, "regex", err)))
			return -1;
		if (get_str(o, "replacement", path, true, &s, &n, err) < 0)
			return -1;
		if (n > RULES_MAX_TEXT)
			return fail(err, path, "replacement", "longer than %u bytes",
				    RULES_MAX_TEXT);
		a->replacement = dup_n(s, n);
		break;
	}
	if ((a->kind == RA_SET_HEADER || a->kind == RA_ADD_HEADER) && (!a->name || !a->value))
		return fail(err, path, NULL, "out of memory");
	return 0;
}

/* ---- rules ---------------------------------------------------------------- */

static void rule_free(struct rule *r)
{
	filter_free(r->filter);
	pcre2_code_free(r->host_re);
	pcre2_code_free(r->path_re);
	pcre2_code_free(r->msg_re);
	for (size_t i = 0; i < r->nmethods; i++)
		free(r->methods[i]);
	for (size_t i = 0; i < r->nhdr; i++) {
		free(r->hdr[i].name);
		pcre2_code_free(r->hdr[i].re);
	}
	free(r->device);
	for (size_t i = 0; i < r->nactions; i++)
		action_free(&r->actions[i]);
	memset(r, 0, sizeof(*r));
}

static int parse_conditions(const json_t *c, const char *path, struct rule *r,
			    struct rules_error *err)
{
	char p[180];
	subpath(p, sizeof(p), "%s.conditions", path);
	if (!json_is_object(c))
		return fail(err, p, NULL, "expected an object");
	static const char *const keys[] = { "host_pattern", "path_pattern",    "methods",
					    "header_match", "message_pattern", NULL };
	if (only_keys(c, keys, p, err) < 0)
		return -1;
	const char *s;
	size_t n;
	if (get_str(c, "host_pattern", p, false, &s, &n, err) < 0)
		return -1;
	if (s && !(r->host_re = re_new(s, n, true, p, "host_pattern", err)))
		return -1;
	if (get_str(c, "path_pattern", p, false, &s, &n, err) < 0)
		return -1;
	if (s && !(r->path_re = re_new(s, n, false, p, "path_pattern", err)))
		return -1;
	if (get_str(c, "message_pattern", p, false, &s, &n, err) < 0)
		return -1;
	if (s && !(r->msg_re = re_new(s, n, false, p, "message_pattern", err)))
		return -1;
	const json_t *m = json_object_get(c, "methods");
	if (m) {
		if (!json_is_array(m) || json_array_size(m) > RULES_MAX_CONDS)
			return fail(err, p, "methods", "expected an array of at most %u methods",
				    RULES_MAX_CONDS);
		size_t i;
		json_t *v;
		json_array_foreach(m, i, v)
		{
			if (!json_is_string(v) || !is_token(json_string_value(v)) ||
			    json_string_length(v) > 32)
				return fail(err, p, "methods", "entry %zu is not a method", i);
			r->methods[r->nmethods] = strdup(json_string_value(v));
			if (!r->methods[r->nmethods++])
				return fail(err, p, "methods", "out of memory");
		}
	}
	const json_t *h = json_object_get(c, "header_match");
	if (h) {
		if (!json_is_object(h) || json_object_size(h) > RULES_MAX_CONDS)
			return fail(err, p, "header_match",
				    "expected an object of at most %u header: regex entries",
				    RULES_MAX_CONDS);
		char hp[200];
		subpath(hp, sizeof(hp), "%s.header_match", p);
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)h, k, v)
		{
			if (!is_token(k))
				return fail(err, hp, k, "not a header name");
			if (!json_is_string(v))
				return fail(err, hp, k, "expected a regex");
			r->hdr[r->nhdr].name = strdup(k);
			r->hdr[r->nhdr].re = re_new(json_string_value(v), json_string_length(v),
						    true, hp, k, err);
			r->nhdr++;
			if (!r->hdr[r->nhdr - 1].re)
				return -1;
			if (!r->hdr[r->nhdr - 1].name)
				return fail(err, hp, k, "out of memory");
		}
	}
	return 0;
}

static int rule_parse(const json_t *o, const char *path, struct rule *r, struct rules_error *err)
{
	memset(r, 0, sizeof(*r));
	if (!json_is_object(o))
		return fail(err, path, NULL, "expected a rule object");
	static const char *const keys[] = { "id",         "enabled", "direction", "match",
					    "conditions", "device",  "actions",   NULL };
	if (only_keys(o, keys, path, err) < 0)
		return -1;
	const char *s;
	size_t n;
	if (get_str(o, "id", path, true, &s, &n, err) < 0)
		return -1;
	if (n == 0 || n >= RULES_ID_LEN)
		return fail(err, path, "id", "expected 1 to %d characters", RULES_ID_LEN - 1);
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._:-", s[i]))
			return fail(err, path, "id", "letters, digits and . _ : - only");
	memcpy(r->id, s, n);
	const json_t *en = json_object_get(o, "enabled");
	if (en && !json_is_boolean(en))
		return fail(err, path, "enabled", "expected true or false");
	r->enabled = !en || json_is_true(en);
	if (parse_dir(o, "direction", path, RULE_REQUEST, &r->dir, err) < 0)
		return -1;
	if (get_str(o, "match", path, false, &s, NULL, err) < 0)
		return -1;
	if (s) {
		struct filter_error fe;
		r->filter = filter_parse(s, &fe);
		if (!r->filter)
			return fail(err, path, "match", "%s",
				    fe.column ? fe.message : "out of memory");
	}
	if (json_object_get(o, "conditions") &&
	    parse_conditions(json_object_get(o, "conditions"), path, r, err) < 0)
		return -1;
	if (get_str(o, "device", path, false, &s, &n, err) < 0)
		return -1;
	if (s) {
		if (n == 0 || n > 63)
			return fail(err, path, "device", "expected a peer name");
		r->device = strdup(s);
	}
	const json_t *acts = json_object_get(o, "actions");
	if (!acts) {
		/* The capture-proxy API's intercept rule: hold what matches. */
		r->actions[0].kind = RA_BREAKPOINT;
		r->actions[0].on = r->dir;
		r->nactions = 1;
	} else {
		char ap[180];
		subpath(ap, sizeof(ap), "%s.actions", path);
		if (!json_is_array(acts) || json_array_size(acts) == 0 ||
		    json_array_size(acts) > RULES_MAX_ACTIONS)
			return fail(err, ap, NULL, "expected an array of 1 to %u actions",
				    RULES_MAX_ACTIONS);
		size_t i;
		json_t *v;
		json_array_foreach(acts, i, v)
		{
			char p[200];
			subpath(p, sizeof(p), "%s[%zu]", ap, i);
			r->nactions = i + 1;
			if (parse_action(v, p, r->dir, &r->actions[i], err) < 0)
				return -1;
		}
	}
	for (size_t i = 0; i < r->nactions; i++) {
		if (r->actions[i].kind >= RA_WS_REPLACE) {
			r->ws_dir = (enum rule_dir)(r->ws_dir | r->actions[i].on);
			continue;
		}
		r->has_request |= (r->actions[i].on & RULE_REQUEST) != 0;
		r->has_response |= (r->actions[i].on & RULE_RESPONSE) != 0;
	}
	if (r->msg_re && !r->ws_dir) {
		char p[180];
		subpath(p, sizeof(p), "%s.conditions", path);
		return fail(err, p, "message_pattern",
			    "a condition on WebSocket messages: the rule needs a ws_ action");
	}
	return 0;
}

int rules_check(const json_t *rule, const char *path, struct rules_error *err)
{
	struct rule r;
	int rc = rule_parse(rule, path, &r, err);
	rule_free(&r);
	return rc;
}

/* ---- DNS overrides ---------------------------------------------------------- */

static int parse_addr(const char *s, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, s, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		return 0;
	}
	return -1;
}

static int dns_name_ok(const char *s, size_t n)
{
	const char *p = s;
	if (n >= 2 && s[0] == '*' && s[1] == '.') {
		p += 2;
		n -= 2;
	}
	if (n == 0 || n > 253)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)p[i]) && p[i] != '-' && p[i] != '.' && p[i] != '_')
			return -1;
	return 0;
}

static int dns_parse(const json_t *o, const char *path, struct rules_dns *d,
		     struct rules_error *err)
{
	memset(d, 0, sizeof(*d));
	if (!json_is_object(o))
		return fail(err, path, NULL, "expected {\"name\", \"addresses\"}");
	static const char *const keys[] = { "name", "addresses", "device", NULL };
	if (only_keys(o, keys, path, err) < 0)
		return -1;
	const char *s;
	size_t n;
	if (get_str(o, "name", path, true, &s, &n, err) < 0)
		return -1;
	while (n > 0 && s[n - 1] == '.')
		n--;
	if (dns_name_ok(s, n) < 0)
		return fail(err, path, "name", "expected a DNS name or *.name");
	for (size_t i = 0; i < n; i++)
		d->name[i] = (char)tolower((unsigned char)s[i]);
	const json_t *a = json_object_get(o, "addresses");
	if (!json_is_array(a) || json_array_size(a) == 0 ||
	    json_array_size(a) > RULES_DNS_MAX_ADDRS)
		return fail(err, path, "addresses", "expected 1 to %u IP addresses",
			    RULES_DNS_MAX_ADDRS);
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		if (!json_is_string(v) || parse_addr(json_string_value(v), &d->addrs[i]) < 0)
			return fail(err, path, "addresses", "entry %zu is not an IP address", i);
		d->naddrs = i + 1;
	}
	if (get_str(o, "device", path, false, &s, &n, err) < 0)
		return -1;
	if (s) {
		if (n == 0 || n >= sizeof(d->device))
			return fail(err, path, "device", "expected a peer name");
		memcpy(d->device, s, n);
	}
	return 0;
}

int rules_check_dns(const json_t *o, const char *path, struct rules_error *err)
{
	struct rules_dns d;
	return dns_parse(o, path, &d, err);
}

const struct rules_dns *ruleset_dns_lookup(const struct ruleset *rs, const char *name,
					   const char *peer)
{
	if (!rs || rs->ndns == 0)
		return NULL;
	char low[256];
	size_t n = strlen(name);
	while (n > 0 && name[n - 1] == '.')
		n--;
	if (n >= sizeof(low))
		return NULL;
	for (size_t i = 0; i < n; i++)
		low[i] = (char)tolower((unsigned char)name[i]);
	low[n] = '\0';
	const struct rules_dns *best = NULL;
	size_t best_len = 0;
	for (size_t i = 0; i < rs->ndns; i++) {
		const struct rules_dns *d = &rs->dns[i];
		if (d->device[0] && (!peer || strcmp(d->device, peer) != 0))
			continue;
		if (d->name[0] == '*') {
			size_t sl = strlen(d->name) - 1; /* ".example.com" */
			if (n > sl && strcmp(low + n - sl, d->name + 1) == 0 && sl > best_len) {
				best = d;
				best_len = sl;
			}
		} else if (strcmp(d->name, low) == 0) {
			/* Exact beats every wildcard; a device's own beats the rest. */
			if (!best || best->name[0] == '*' || (d->device[0] && !best->device[0])) {
				best = d;
				best_len = SIZE_MAX;
			}
		}
	}
	return best;
}

/* ---- sets ----------------------------------------------------------------- */

struct ruleset *ruleset_ref(struct ruleset *rs)
{
	if (rs)
		rs->refs++;
	return rs;
}

void ruleset_unref(struct ruleset *rs)
{
	if (!rs || --rs->refs > 0)
		return;
	for (size_t i = 0; i < rs->n; i++)
		rule_free(&rs->v[i]);
	free(rs->v);
	free(rs);
}

struct ruleset *ruleset_new(const json_t *rules, const char *path, const json_t *dns,
			    const char *dns_path, struct rules_error *err)
{
	memset(err, 0, sizeof(*err));
	if (rules && (!json_is_array(rules) || json_array_size(rules) > RULES_MAX)) {
		fail(err, path, NULL, "expected an array of at most %u rules", RULES_MAX);
		return NULL;
	}
	if (dns && (!json_is_array(dns) || json_array_size(dns) > RULES_DNS_MAX)) {
		fail(err, dns_path, NULL, "expected an array of at most %u overrides",
		     RULES_DNS_MAX);
		return NULL;
	}
	struct ruleset *rs = calloc(1, sizeof(*rs));
	size_t n = json_array_size(rules);
	if (!rs || !(rs->v = calloc(n ? n : 1, sizeof(*rs->v)))) {
		free(rs);
		fail(err, path, NULL, "out of memory");
		return NULL;
	}
	rs->refs = 1;
	for (size_t i = 0; i < n; i++) {
		char p[128];
		subpath(p, sizeof(p), "%s[%zu]", path, i);
		rs->n = i + 1;
		if (rule_parse(json_array_get(rules, i), p, &rs->v[i], err) < 0)
			goto bad;
		for (size_t j = 0; j < i; j++)
			if (strcmp(rs->v[j].id, rs->v[i].id) == 0) {
				fail(err, p, "id", "\"%s\" is already the id of rule %zu",
				     rs->v[i].id, j);
				goto bad;
			}
		if (rs->v[i].enabled)
			rs->enabled_http++;
	}
	for (size_t i = 0; i < json_array_size(dns); i++) {
		char p[128];
		subpath(p, sizeof(p), "%s[%zu]", dns_path, i);
		if (dns_parse(json_array_get(dns, i), p, &rs->dns[i], err) < 0)
			goto bad;
		rs->ndns = i + 1;
	}
	return rs;
bad:
	ruleset_unref(rs);
	return NULL;
}

/* ---- run's options ---------------------------------------------------------- */

/* Splits "|a|b|c" at its first character: up to `max` parts. -1 when the
 * value is empty or has more parts. */
static int split_spec(const char *v, char **parts, size_t max, size_t *n)
{
	*n = 0;
	if (!v[0] || !v[1])
		return -1;
	char sep = v[0];
	const char *p = v + 1;
	for (;;) {
		const char *e = strchr(p, sep);
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (*n == max)
			return -1;
		parts[(*n)++] = dup_n(p, len);
		if (!e)
			return 0;
		p = e + 1;
	}
}

json_t *rules_from_option(const char *opt, const char *value, unsigned n, struct rules_error *err)
{
	memset(err, 0, sizeof(*err));
	char path[64];
	snprintf(path, sizeof(path), "--%s", opt);
	char id[RULES_ID_LEN];
	subpath(id, sizeof(id), "%s-%u", opt, n);
	json_t *r = NULL;
	if (strcmp(opt, "dns-override") == 0) {
		const char *eq = strchr(value, '=');
		if (!eq || eq == value || !eq[1]) {
			fail(err, path, NULL, "expected NAME=ADDR[,ADDR]");
			return NULL;
		}
		json_t *addrs = json_array();
		const char *p = eq + 1;
		for (;;) {
			const char *c = strchr(p, ',');
			size_t len = c ? (size_t)(c - p) : strlen(p);
			json_array_append_new(addrs, json_stringn(p, len));
			if (!c)
				break;
			p = c + 1;
		}
		r = json_pack("{s:s%,s:o}", "name", value, (size_t)(eq - value), "addresses",
			      addrs);
		if (!r) {
			fail(err, path, NULL, "not UTF-8 text");
			return NULL;
		}
		if (rules_check_dns(r, path, err) < 0) {
			json_decref(r);
			return NULL;
		}
		return r;
	}
	if (strcmp(opt, "intercept") == 0) {
		if (!*value) {
			fail(err, path, "FILTER", "expected a filter expression");
			return NULL;
		}
		/* mitmproxy's intercept: ~s holds responses. */
		bool resp = strstr(value, "~s") != NULL;
		r = json_pack("{s:s,s:s,s:s,s:[{s:s}]}", "id", id, "direction",
			      resp ? "response" : "request", "match", value, "actions", "type",
			      "breakpoint");
		goto check;
	}
	char *parts[4] = { 0 };
	size_t np = 0;
	size_t want = strcmp(opt, "block-list") == 0 ? 2 : 3;
	static const char *const names[][3] = {
		{ "FILTER", "URL-REGEX", "REPLACEMENT" }, /* map-remote */
		{ "FILTER", "URL-REGEX", "PATH" },        /* map-local */
		{ "FILTER", "NAME", "VALUE" },            /* modify-headers */
		{ "FILTER", "REGEX", "REPLACEMENT" },     /* modify-body */
		{ "FILTER", "STATUS", "" },               /* block-list */
	};
	int which = strcmp(opt, "map-remote") == 0       ? 0
		    : strcmp(opt, "map-local") == 0      ? 1
		    : strcmp(opt, "modify-headers") == 0 ? 2
		    : strcmp(opt, "modify-body") == 0    ? 3
		    : strcmp(opt, "block-list") == 0     ? 4
							 : -1;
	if (which < 0) {
		fail(err, path, NULL, "not a rule option");
		return NULL;
	}
	if (split_spec(value, parts, want, &np) < 0 || np < want - 1) {
		for (size_t i = 0; i < np; i++)
			free(parts[i]);
		if (want == 3)
			fail(err, path, NULL,
			     "expected |[FILTER|]%s|%s (the first character "
			     "separates)",
			     names[which][1], names[which][2]);
		else
			fail(err, path, NULL,
			     "expected |[FILTER|]STATUS (the first character separates)");
		return NULL;
	}
	const char *filter = np == want ? parts[0] : NULL;
	const char *a = parts[np - want + 1], *b = want == 3 ? parts[np - 1] : NULL;
	if (filter && !*filter)
		filter = NULL;
	json_t *act = NULL;
	const char *dir = "request";
	switch (which) {
	case 0:
		if (!*a) {
			fail(err, path, names[which][1], "empty");
			break;
		}
		act = json_pack("{s:s,s:s,s:s}", "type", "redirect", "url_regex", a, "replacement",
				b);
		break;
	case 1: {
		if (!*a || !*b) {
			fail(err, path, *a ? "PATH" : "URL-REGEX", "empty");
			break;
		}
		/* mitmproxy matches the regex against the URL: a condition of
		 * its own, the filter ANDed. */
		struct rules_error e2;
		void *re = re_new(a, strlen(a), false, path, "URL-REGEX", &e2);
		if (!re) {
			*err = e2;
			break;
		}
		pcre2_code_free(re);
		char *m = NULL;
		size_t ml = strlen(a) + (filter ? strlen(filter) : 0) + 16;
		m = malloc(ml);
		if (!m)
			break;
		/* ~u takes a quoted regex: quotes and backslashes escaped. */
		size_t o = 0;
		o += (size_t)snprintf(m + o, ml - o, "%s%s~u \"", filter ? filter : "",
				      filter ? " & " : "");
		for (const char *p = a; *p; p++) {
			if (*p == '"' || *p == '\\') {
				char *nm = realloc(m, ml + 1);
				if (!nm)
					break;
				m = nm;
				ml++;
				m[o++] = '\\';
			}
			m[o++] = *p;
		}
		m[o++] = '"';
		m[o] = '\0';
		act = json_pack("{s:s,s:s}", "type", "mock", "body_file", b);
		r = json_pack("{s:s,s:s,s:s,s:[o]}", "id", id, "direction", dir, "match", m,
			      "actions", act);
		free(m);
		act = NULL;
		filter = NULL;
		break;
	}
	case 2:
		if (!is_token(a)) {
			fail(err, path, "NAME", "\"%.64s\" is not a header name", a);
			break;
		}
		/* mitmproxy's modify_headers acts on requests and responses. */
		dir = "both";
		act = *b ? json_pack("{s:s,s:s,s:s}", "type", "set_header", "name", a, "value", b)
			 : json_pack("{s:s,s:s}", "type", "remove_header", "name", a);
		break;
	case 3:
		if (!*a) {
			fail(err, path, "REGEX", "empty");
			break;
		}
		dir = "both";
		act = json_pack("{s:s,s:s,s:s}", "type", "replace_body", "regex", a, "replacement",
				b);
		break;
	case 4: {
		char *end;
		long st = strtol(a, &end, 10);
		if (!*a || *end || st < 100 || st > 999) {
			fail(err, path, "STATUS", "expected a status from 100 to 999 (444 resets)");
			break;
		}
		act = json_pack("{s:s,s:I}", "type", "block", "status", (json_int_t)st);
		break;
	}
	}
	if (act) {
		r = json_pack("{s:s,s:s,s:[o]}", "id", id, "direction", dir, "actions", act);
		if (r && filter)
			json_object_set_new(r, "match", json_string(filter));
	}
	for (size_t i = 0; i < np; i++)
		free(parts[i]);
	if (!r) {
		/* "--opt.NAME" reads better as "--opt: NAME". */
		size_t pl = strlen(path);
		if (strncmp(err->field, path, pl) == 0 && err->field[pl] == '.') {
			char f[sizeof(err->field)];
			snprintf(f, sizeof(f), "%s", err->field + pl + 1);
			subpath(err->field, sizeof(err->field), "%s: %s", path, f);
		}
		if (!err->message[0])
			fail(err, path, NULL, "not UTF-8 text, or out of memory");
		return NULL;
	}
check:
	if (!r) {
		fail(err, path, NULL, "not UTF-8 text, or out of memory");
		return NULL;
	}
	if (rules_check(r, path, err) < 0) {
		/* Name the option's field: "match" is its FILTER. */
		const char *f = strrchr(err->field, '.');
		const char *what = !f                         ? ""
				   : strcmp(f, ".match") == 0 ? "FILTER"
				   : strstr(f, "url_regex")   ? "URL-REGEX"
				   : strstr(f, "regex")       ? "REGEX"
				   : strstr(f, "body_file")   ? "PATH"
				   : strstr(f, "name")        ? "NAME"
				   : strstr(f, "value")       ? "VALUE"
				   : strstr(f, "status")      ? "STATUS"
				   : strstr(f, "replacement") ? "REPLACEMENT"
							      : f + 1;
		if (!f && strstr(err->message, "regex"))
			what = "URL-REGEX";
		snprintf(err->field, sizeof(err->field), "%s%s%s", path, *what ? ": " : "", what);
		json_decref(r);
		return NULL;
	}
	return r;
}

/* ---- matching --------------------------------------------------------------- */

static bool rule_host_may(const struct rule *r, const char *peer, const char *host)
{
	if (!r->enabled)
		return false;
	if (r->device && (!peer || strcmp(r->device, peer) != 0))
		return false;
	if (host && r->host_re && !re_find(r->host_re, host, strlen(host)))
		return false;
	if (r->filter && !filter_may_match_host(r->filter, host, peer))
		return false;
	return true;
}

bool ruleset_may_apply(const struct ruleset *rs, const char *peer, const char *host)
{
	if (!rs || rs->enabled_http == 0)
		return false;
	for (size_t i = 0; i < rs->n; i++)
		if (rule_host_may(&rs->v[i], peer, host))
			return true;
	return false;
}

static const char *header_value(const struct http_headers *h, const char *name)
{
	const struct http_header *x = h ? http_headers_find(h, name) : NULL;
	return x ? x->value : NULL;
}

/* Every header `name` has: does one match? */
static bool header_cond(const struct http_headers *h, const char *name, void *re)
{
	for (size_t i = 0; h && i < h->n; i++)
		if (strcasecmp(h->v[i].name, name) == 0 &&
		    re_find(re, h->v[i].value, h->v[i].value_len))
			return true;
	return false;
}

struct match_ctx {
	const struct rules_msg *m;
	bool ff_ready;
	struct flow_fields ff;
	json_t *req_h, *resp_h;
	char url[8192];
};

static const struct flow_fields *match_fields(struct match_ctx *c)
{
	if (c->ff_ready)
		return &c->ff;
	const struct rules_msg *m = c->m;
	c->ff_ready = true;
	memset(&c->ff, 0, sizeof(c->ff));
	c->ff.type = "http";
	c->ff.peer = m->peer;
	snprintf(c->ff.host, sizeof(c->ff.host), "%s", m->host ? m->host : "");
	c->ff.method = m->method;
	if (m->path && m->path[0] == '/')
		snprintf(c->url, sizeof(c->url), "%s://%s%s", m->scheme ? m->scheme : "https",
			 m->authority ? m->authority : "", m->path);
	else
		snprintf(c->url, sizeof(c->url), "%s", m->path ? m->path : "");
	c->ff.url = c->url;
	c->ff.status = m->status;
	c->ff.has_response = m->status != 0;
	c->req_h = m->req_headers ? http_headers_json(m->req_headers) : json_array();
	c->ff.req_headers = c->req_h;
	c->ff.req_ctype = header_value(m->req_headers, "content-type");
	if (m->resp_headers) {
		c->resp_h = http_headers_json(m->resp_headers);
		c->ff.resp_headers = c->resp_h;
		c->ff.resp_ctype = header_value(m->resp_headers, "content-type");
	}
	return &c->ff;
}

static bool rule_matches(const struct rule *r, enum rule_dir phase, struct match_ctx *c)
{
	const struct rules_msg *m = c->m;
	if (!r->enabled || (phase && !(r->dir & phase)))
		return false;
	if (r->device && (!m->peer || strcmp(r->device, m->peer) != 0))
		return false;
	if (r->host_re && !re_find(r->host_re, m->host, m->host ? strlen(m->host) : 0))
		return false;
	if (r->path_re && !re_find(r->path_re, m->path, m->path ? strlen(m->path) : 0))
		return false;
	if (r->nmethods) {
		bool any = false;
		for (size_t i = 0; i < r->nmethods && !any; i++)
			any = m->method && strcasecmp(r->methods[i], m->method) == 0;
		if (!any)
			return false;
	}
	const struct http_headers *h = phase == RULE_RESPONSE ? m->resp_headers : m->req_headers;
	for (size_t i = 0; i < r->nhdr; i++)
		if (!header_cond(h, r->hdr[i].name, r->hdr[i].re))
			return false;
	if (r->filter && !filter_match(r->filter, match_fields(c)))
		return false;
	return true;
}

uint64_t rules_plan_rate(const struct rules_plan *plan, enum rule_dir phase)
{
	uint64_t rate = 0;
	for (size_t i = 0; i < plan->ntransforms; i++) {
		const struct rule_action *a = plan->transforms[i];
		if (a->kind == RA_THROTTLE && (a->on & phase) && (!rate || a->rate < rate))
			rate = a->rate;
	}
	return rate;
}

bool rules_plan_for(const struct ruleset *rs, enum rule_dir phase, const struct rules_msg *m,
		    struct rules_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	if (!rs)
		return false;
	struct match_ctx c = { .m = m };
	for (size_t i = 0; i < rs->n && plan->nmatched < RULES_MAX_MATCHED; i++) {
		const struct rule *r = &rs->v[i];
		if (!(phase == RULE_REQUEST ? r->has_request : r->has_response))
			continue;
		if (!rule_matches(r, phase, &c))
			continue;
		plan->matched[plan->nmatched++] = r;
		for (size_t k = 0; k < r->nactions; k++) {
			const struct rule_action *a = &r->actions[k];
			if (!(a->on & phase))
				continue;
			if (a->kind >= RA_WS_REPLACE)
				continue; /* WebSocket messages: rules_ws_plan_for */
			if (a->kind >= RA_MOCK) {
				if (!plan->terminal) {
					plan->terminal = a;
					plan->terminal_rule = r;
				}
				continue;
			}
			if (plan->ntransforms <
			    sizeof(plan->transforms) / sizeof(plan->transforms[0]))
				plan->transforms[plan->ntransforms++] = a;
			if (a->kind == RA_REPLACE_BODY || a->kind == RA_SET_JSON)
				plan->needs_body = true;
		}
	}
	json_decref(c.req_h);
	json_decref(c.resp_h);
	return plan->nmatched > 0;
}

bool rules_ws_for(const struct ruleset *rs, const struct rules_msg *m, struct rules_ws *out)
{
	memset(out, 0, sizeof(*out));
	if (!rs)
		return false;
	struct match_ctx c = { .m = m };
	for (size_t i = 0; i < rs->n && out->n < RULES_MAX_MATCHED; i++) {
		const struct rule *r = &rs->v[i];
		/* The upgrade request is matched whatever the direction: it
		 * says which way the messages are taken. */
		if (r->ws_dir && rule_matches(r, (enum rule_dir)0, &c))
			out->v[out->n++] = r;
	}
	json_decref(c.req_h);
	json_decref(c.resp_h);
	return out->n > 0;
}

bool rules_ws_plan_for(const struct rules_ws *sel, enum rule_dir dir, bool text, const uint8_t *msg,
		       size_t len, struct rules_ws_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	for (size_t i = 0; i < sel->n; i++) {
		const struct rule *r = sel->v[i];
		if (!(r->ws_dir & dir))
			continue;
		if (r->msg_re && (!text || !re_find(r->msg_re, (const char *)msg, len)))
			continue;
		plan->matched[plan->nmatched++] = r;
		for (size_t k = 0; k < r->nactions; k++) {
			const struct rule_action *a = &r->actions[k];
			if (a->kind < RA_WS_REPLACE || !(a->on & dir))
				continue;
			if (a->kind == RA_WS_REPLACE) {
				if (text &&
				    plan->nedits < sizeof(plan->edits) / sizeof(plan->edits[0]))
					plan->edits[plan->nedits++] = a;
			} else if (!plan->terminal) {
				plan->terminal = a;
				plan->terminal_rule = r;
			}
		}
	}
	return plan->nmatched > 0;
}

/* ---- edits ---------------------------------------------------------------- */

int rules_apply_headers(const struct rules_plan *plan, enum rule_dir phase, struct http_headers *h)
{
	for (size_t i = 0; i < plan->ntransforms; i++) {
		const struct rule_action *a = plan->transforms[i];
		if (!(a->on & phase))
			continue;
		if (a->kind == RA_REMOVE_HEADER || a->kind == RA_SET_HEADER)
			http_headers_remove(h, a->name);
		if (a->kind == RA_SET_HEADER || a->kind == RA_ADD_HEADER) {
			int rc = http_headers_add(h, a->name, strlen(a->name), a->value,
						  strlen(a->value));
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

int rules_body_replace(const struct rule_action *a, const uint8_t *in, size_t len, size_t cap,
		       uint8_t **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	if (!a->re) {
		if (a->body_len > cap)
			return -E2BIG;
		*out = malloc(a->body_len ? a->body_len : 1);
		if (!*out)
			return -ENOMEM;
		if (a->body_len)
			memcpy(*out, a->body, a->body_len);
		*outlen = a->body_len;
		return 0;
	}
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(a->re, NULL);
	if (!md)
		return -ENOMEM;
	PCRE2_SIZE size = len + 256 < cap ? len + 256 : cap;
	for (int attempt = 0; attempt < 2; attempt++) {
		uint8_t *buf = malloc(size ? size : 1);
		if (!buf) {
			pcre2_match_data_free(md);
			return -ENOMEM;
		}
		PCRE2_SIZE olen = size;
		int rc = pcre2_substitute(
			a->re, (PCRE2_SPTR)(len ? (const char *)in : ""), len, 0,
			PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, md, match_ctx(),
			(PCRE2_SPTR)a->replacement, PCRE2_ZERO_TERMINATED, buf, &olen);
		if (rc >= 0) {
			pcre2_match_data_free(md);
			*out = buf;
			*outlen = olen;
			return 0;
		}
		free(buf);
		if (rc != PCRE2_ERROR_NOMEMORY || olen > cap || attempt == 1) {
			pcre2_match_data_free(md);
			return rc == PCRE2_ERROR_NOMEMORY ? -E2BIG : -EINVAL;
		}
		size = olen; /* the length it needs (with a NUL) */
	}
	pcre2_match_data_free(md);
	return -EINVAL;
}

int rules_body_set_json(const struct rule_action *a, const uint8_t *in, size_t len, size_t cap,
			uint8_t **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	json_error_t je;
	json_t *doc = json_loadb((const char *)in, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
	if (!doc)
		return -EINVAL;
	json_t *cur = doc;
	int rc = 0;
	for (size_t i = 0; i < a->npath && rc == 0; i++) {
		const char *k = a->path[i];
		bool last = i + 1 == a->npath;
		if (json_is_array(cur)) {
			char *end;
			unsigned long idx = strtoul(k, &end, 10);
			if (*end || !isdigit((unsigned char)k[0]) || idx >= json_array_size(cur)) {
				rc = -ENOENT;
				break;
			}
			if (last)
				json_array_set(cur, idx, a->json);
			else
				cur = json_array_get(cur, idx);
		} else if (json_is_object(cur)) {
			if (last) {
				json_object_set(cur, k, a->json);
			} else {
				json_t *nx = json_object_get(cur, k);
				if (!nx) {
					nx = json_object();
					json_object_set_new(cur, k, nx);
				}
				cur = nx;
			}
		} else {
			rc = -ENOENT;
		}
	}
	if (rc == 0) {
		char *s = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
		if (!s)
			rc = -ENOMEM;
		else if (strlen(s) > cap) {
			free(s);
			rc = -E2BIG;
		} else {
			*outlen = strlen(s);
			*out = (uint8_t *)s;
		}
	}
	json_decref(doc);
	return rc;
}

int rules_apply_body(const struct rules_plan *plan, enum rule_dir phase, const uint8_t *body,
		     size_t len, size_t cap, uint8_t **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	uint8_t *cur = NULL;
	size_t curlen = len;
	for (size_t i = 0; i < plan->ntransforms; i++) {
		const struct rule_action *a = plan->transforms[i];
		if (!(a->on & phase) || (a->kind != RA_REPLACE_BODY && a->kind != RA_SET_JSON))
			continue;
		uint8_t *nb;
		size_t nl;
		const uint8_t *src = cur ? cur : body;
		int rc = a->kind == RA_REPLACE_BODY
				 ? rules_body_replace(a, src, curlen, cap, &nb, &nl)
				 : rules_body_set_json(a, src, curlen, cap, &nb, &nl);
		if (rc == -ENOENT || rc == -EINVAL)
			continue; /* not JSON, no such path: this edit does nothing */
		if (rc < 0) {
			free(cur);
			return rc;
		}
		free(cur);
		cur = nb;
		curlen = nl;
	}
	*out = cur;
	*outlen = cur ? curlen : 0;
	return 0;
}

/* ---- redirects -------------------------------------------------------------- */

/* Splits an absolute http(s) URL. */
static int url_split(const char *url, char *scheme, size_t sl, char *host, size_t hl,
		     uint16_t *port, char *path, size_t pl)
{
	const char *p = strstr(url, "://");
	if (!p || (size_t)(p - url) >= sl)
		return -1;
	memcpy(scheme, url, (size_t)(p - url));
	scheme[p - url] = '\0';
	for (char *s = scheme; *s; s++)
		*s = (char)tolower((unsigned char)*s);
	if (strcmp(scheme, "http") && strcmp(scheme, "https"))
		return -1;
	p += 3;
	const char *slash = p + strcspn(p, "/?#");
	const char *hs = p, *he = slash;
	*port = strcmp(scheme, "https") == 0 ? 443 : 80;
	if (*hs == '[') {
		const char *rb = memchr(hs, ']', (size_t)(slash - hs));
		if (!rb)
			return -1;
		hs++;
		he = rb;
		if (rb + 1 < slash) {
			/* Only ":PORT" may follow the brackets. */
			char *end;
			long v = rb[1] == ':' ? strtol(rb + 2, &end, 10) : 0;
			if (v <= 0 || v > 65535 || end != slash)
				return -1;
			*port = (uint16_t)v;
		}
	} else {
		const char *colon = memchr(hs, ':', (size_t)(slash - hs));
		if (colon) {
			he = colon;
			long v = strtol(colon + 1, NULL, 10);
			if (v <= 0 || v > 65535)
				return -1;
			*port = (uint16_t)v;
		}
	}
	if (he == hs || (size_t)(he - hs) >= hl)
		return -1;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	if (strlen(slash) + 2 > pl)
		return -1;
	snprintf(path, pl, "%s%s", *slash == '/' ? "" : "/", slash);
	return 0;
}

int rules_redirect_target(const struct rule_action *a, const char *scheme, const char *authority,
			  const char *path, char *out_scheme, size_t schemelen, char *out_host,
			  size_t hostlen, uint16_t *out_port, char *out_path, size_t pathlen)
{
	char url[8192];
	if ((size_t)snprintf(url, sizeof(url), "%s://%s%s", scheme, authority, path) >= sizeof(url))
		return -1;
	if (a->re) {
		char outu[8192];
		PCRE2_SIZE olen = sizeof(outu);
		pcre2_match_data *md = pcre2_match_data_create_from_pattern(a->re, NULL);
		if (!md)
			return -1;
		int rc = pcre2_substitute(a->re, (PCRE2_SPTR)url, PCRE2_ZERO_TERMINATED, 0,
					  PCRE2_SUBSTITUTE_GLOBAL, md, match_ctx(),
					  (PCRE2_SPTR)a->replacement, PCRE2_ZERO_TERMINATED,
					  (PCRE2_UCHAR *)outu, &olen);
		pcre2_match_data_free(md);
		if (rc < 0)
			return -1;
		return url_split(outu, out_scheme, schemelen, out_host, hostlen, out_port, out_path,
				 pathlen);
	}
	if (url_split(url, out_scheme, schemelen, out_host, hostlen, out_port, out_path, pathlen) <
	    0)
		return -1;
	bool default_port = *out_port == (strcmp(out_scheme, "https") == 0 ? 443 : 80);
	if (a->scheme) {
		snprintf(out_scheme, schemelen, "%s", a->scheme);
		if (default_port)
			*out_port = strcmp(out_scheme, "https") == 0 ? 443 : 80;
	}
	if (a->host)
		snprintf(out_host, hostlen, "%s", a->host);
	if (a->port)
		*out_port = a->port;
	if (a->rpath) {
		if (strlen(a->rpath) >= pathlen)
			return -1;
		snprintf(out_path, pathlen, "%s", a->rpath);
	}
	return 0;
}

/* ---- notes for the records ------------------------------------------------ */

const char *rules_action_name(enum rule_action_kind k)
{
	static const char *const n[] = { "set_header",   "add_header", "remove_header",
					 "replace_body", "set_json",   "set_status",
					 "delay",        "throttle",   "mock",
					 "block",        "redirect",   "breakpoint",
					 "ws_replace",   "ws_drop",    "ws_breakpoint" };
	return (size_t)k < sizeof(n) / sizeof(n[0]) ? n[k] : "?";
}

void rules_note_action(json_t *note, const char *what)
{
	json_t *a = json_object_get(note, "actions");
	if (!a) {
		a = json_array();
		json_object_set_new(note, "actions", a);
	}
	json_array_append_new(a, json_string(what));
}

void rules_note_plan(json_t *note, const struct rules_plan *plan, enum rule_dir phase,
		     const char *side)
{
	json_t *m = json_object_get(note, "matched");
	if (!m) {
		m = json_array();
		json_object_set_new(note, "matched", m);
	}
	for (size_t i = 0; i < plan->nmatched; i++) {
		bool seen = false;
		size_t k;
		json_t *v;
		json_array_foreach(m, k, v) seen |=
			strcmp(json_string_value(v), plan->matched[i]->id) == 0;
		if (!seen)
			json_array_append_new(m, json_string(plan->matched[i]->id));
	}
	char b[96];
	for (size_t i = 0; i < plan->ntransforms; i++) {
		const struct rule_action *a = plan->transforms[i];
		if (!(a->on & phase))
			continue;
		snprintf(b, sizeof(b), "%s:%s%s%s", side, rules_action_name(a->kind),
			 a->name ? " " : "", a->name ? a->name : "");
		rules_note_action(note, b);
	}
}
