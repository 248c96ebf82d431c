/* A listener of the configuration (entry.h): checked member by member,
 * then turned into the spec run's options take and parsed by the one
 * parser of each kind, so that both ways to start a listener mean the
 * same. */
#include "entry.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "flows/flowlog.h"

#define SPEC_MAX 1024

/* Members each type takes besides name, type, listen and spec. */
static const struct {
	const char *type;
	enum listen_kind kind;
	const char *members[6];
} types[] = {
	{ "http-proxy", LISTEN_PROXY, { "max_connections" } },
	{ "socks5", LISTEN_PROXY, { "max_connections" } },
	{ "http-proxy+socks5", LISTEN_PROXY, { "max_connections" } },
	{ "reverse", LISTEN_TARGET, { "url", "keep_host", "max_connections" } },
	{ "forward",
	  LISTEN_TARGET,
	  { "target", "protocol", "tls", "upstream_tls", "upstream_insecure_skip_verify",
	    "max_connections" } },
	{ "udp-forward", LISTEN_UDP_FORWARD, { "target" } },
};
#define NTYPES (sizeof(types) / sizeof(types[0]))

static const char *const protocols[] = { "auto", "raw",       "http", "http2",
					 "grpc", "websocket", "sse",  NULL };

static int fail(char *field, size_t fieldlen, const char *name, char *why, size_t whylen,
		const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int fail(char *field, size_t fieldlen, const char *name, char *why, size_t whylen,
		const char *fmt, ...)
{
	snprintf(field, fieldlen, "%s", name);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return -1;
}

#define FAIL(member, ...) fail(field, fieldlen, member, why, whylen, __VA_ARGS__)

static bool takes(size_t ti, const char *member)
{
	for (size_t i = 0; i < 6 && types[ti].members[i]; i++)
		if (strcmp(types[ti].members[i], member) == 0)
			return true;
	return false;
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > LISTEN_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

/* "listen": "[ADDR:]PORT" or a port number, as text. */
static int listen_text(const json_t *v, char *out, size_t n)
{
	if (json_is_integer(v)) {
		json_int_t p = json_integer_value(v);
		if (p < 1 || p > 65535)
			return -1;
		snprintf(out, n, "%d", (int)p);
	} else if (json_is_string(v) && json_string_length(v) < n) {
		snprintf(out, n, "%s", json_string_value(v));
	} else {
		return -1;
	}
	struct sockaddr_storage a;
	return listen_parse_addr(out, strlen(out), &a);
}

/* The fields as the option's spec. */
static int build_spec(const json_t *e, size_t ti, char *spec, size_t n, char *field,
		      size_t fieldlen, char *why, size_t whylen)
{
	char l[128];
	if (listen_text(json_object_get(e, "listen"), l, sizeof(l)) < 0)
		return FAIL("listen", "expected \"[ADDR:]PORT\" or a port, 1 to 65535");
	if (types[ti].kind == LISTEN_PROXY) {
		snprintf(spec, n, "%s", l);
		return 0;
	}
	if (types[ti].kind == LISTEN_TARGET && strcmp(types[ti].type, "reverse") == 0) {
		const char *url = json_string_value(json_object_get(e, "url"));
		if (!url)
			return FAIL("url", "a reverse listener needs \"url\": "
					   "\"http[s]://HOST[:PORT]\"");
		const json_t *kh = json_object_get(e, "keep_host");
		if (kh && !json_is_boolean(kh))
			return FAIL("keep_host", "expected true or false");
		if ((size_t)snprintf(spec, n, "%s@%s%s", url, l,
				     json_is_true(kh) ? ",keep-host" : "") >= n)
			return FAIL("url", "too long");
		return 0;
	}
	const char *target = json_string_value(json_object_get(e, "target"));
	struct listen_target t;
	if (!target || strpbrk(target, ",=@") ||
	    listen_parse_hostport(target, strlen(target), 0, &t) < 0)
		return FAIL("target", "expected \"HOST:PORT\"");
	int w = snprintf(spec, n, "%s=%s", l, target);
	if (types[ti].kind == LISTEN_UDP_FORWARD)
		return 0;
	const json_t *p = json_object_get(e, "protocol");
	if (p) {
		size_t i = 0;
		while (json_is_string(p) && protocols[i] &&
		       strcmp(protocols[i], json_string_value(p)))
			i++;
		if (!json_is_string(p) || !protocols[i])
			return FAIL("protocol",
				    "expected auto, raw, http, http2, grpc, websocket or sse");
		w += snprintf(spec + w, n - (size_t)w, ",protocol=%s", protocols[i]);
	}
	static const char *const flags[][2] = { { "tls", "tls" },
						{ "upstream_tls", "upstream-tls" },
						{ "upstream_insecure_skip_verify", "insecure" } };
	for (size_t i = 0; i < 3; i++) {
		const json_t *b = json_object_get(e, flags[i][0]);
		if (!b || (i == 2 && json_is_null(b)))
			continue;
		if (!json_is_boolean(b))
			return FAIL(flags[i][0], "expected true or false");
		w += snprintf(spec + w, n - (size_t)w, ",%s=%s", flags[i][1],
			      json_is_true(b) ? "true" : "false");
	}
	return 0;
}

int listen_entry_parse(const json_t *e, struct listen_entry *out, char *field, size_t fieldlen,
		       char *why, size_t whylen)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(e))
		return FAIL("", "expected an object");
	const char *name = json_string_value(json_object_get(e, "name"));
	if (!name || !name_ok(name))
		return FAIL("name", "expected 1 to %d printable characters, no spaces",
			    LISTEN_NAME_MAX);
	snprintf(out->name, sizeof(out->name), "%s", name);
	const char *type = json_string_value(json_object_get(e, "type"));
	size_t ti = 0;
	while (type && ti < NTYPES && strcmp(types[ti].type, type))
		ti++;
	if (!type || ti == NTYPES)
		return FAIL("type", "expected http-proxy, socks5, http-proxy+socks5, reverse, "
				    "forward or udp-forward");
	out->type = types[ti].type;
	out->kind = types[ti].kind;
	const json_t *spec = json_object_get(e, "spec");
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)e, k, v)
	{
		if (!strcmp(k, "name") || !strcmp(k, "type") || !strcmp(k, "spec"))
			continue;
		if (spec && strcmp(k, "max_connections"))
			return FAIL(k, "give either \"spec\" or the fields, not both");
		if (strcmp(k, "listen") && !takes(ti, k))
			return FAIL(k, "not a member of a %s listener", out->type);
	}
	const json_t *mc = json_object_get(e, "max_connections");
	if (mc) {
		if (!json_is_integer(mc) || json_integer_value(mc) < 1 ||
		    json_integer_value(mc) > 1000000)
			return FAIL("max_connections", "expected 1 to 1000000");
		out->max_connections = (uint32_t)json_integer_value(mc);
	}
	char text[SPEC_MAX];
	const char *member = "spec";
	if (spec) {
		if (!json_is_string(spec) || json_string_length(spec) >= sizeof(text))
			return FAIL("spec", "expected a string of at most %zu bytes",
				    sizeof(text) - 1);
		snprintf(text, sizeof(text), "%s", json_string_value(spec));
	} else {
		if (build_spec(e, ti, text, sizeof(text), field, fieldlen, why, whylen) < 0)
			return -1;
		member = out->kind == LISTEN_PROXY || out->kind == LISTEN_UDP_FORWARD ? "listen"
			 : strcmp(out->type, "reverse") == 0                          ? "url"
										      : "target";
	}
	char w[200] = "";
	int rc;
	switch (out->kind) {
	case LISTEN_PROXY:
		out->http = strcmp(out->type, "socks5") != 0;
		out->socks5 = strcmp(out->type, "http-proxy") != 0;
		rc = listen_parse_addr(text, strlen(text), &out->t.addr);
		if (rc < 0)
			snprintf(w, sizeof(w), "expected [ADDR:]PORT");
		break;
	case LISTEN_TARGET:
		rc = strcmp(out->type, "reverse") == 0
			     ? listen_parse_reverse(text, &out->t, w, sizeof(w))
			     : listen_parse_forward(text, &out->t, w, sizeof(w));
		break;
	default:
		rc = listen_parse_udp_forward(text, &out->t, w, sizeof(w));
		break;
	}
	if (rc < 0)
		return FAIL(member, "%s", w);
	return 0;
}

json_t *listen_entry_from_spec(const char *type, const char *spec,
			       const struct sockaddr_storage *addr)
{
	char a[FLOWLOG_ADDR_LEN], name[LISTEN_NAME_MAX + 1];
	flowlog_format_addr((const struct sockaddr *)addr, a);
	snprintf(name, sizeof(name), "%s@%s", type, a);
	return json_pack("{s:s,s:s,s:s}", "name", name, "type", type, "spec", spec);
}
