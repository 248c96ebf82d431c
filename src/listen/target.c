/* Fixed-target listener specs (target.h). */
#include "listen/target.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_port(const char *s, size_t n, uint16_t *out)
{
	unsigned v = 0;
	if (n == 0 || n > 5)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

int listen_parse_addr(const char *s, size_t n, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	const char *colon = NULL;
	for (size_t i = n; i-- > 0;)
		if (s[i] == ':') {
			colon = s + i;
			break;
		}
	char host[INET6_ADDRSTRLEN] = "127.0.0.1";
	const char *port = s;
	size_t plen = n;
	if (colon) {
		const char *h = s;
		size_t hl = (size_t)(colon - s);
		if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		if (hl == 0 || hl >= sizeof(host))
			return -1;
		memcpy(host, h, hl);
		host[hl] = '\0';
		port = colon + 1;
		plen = n - (size_t)(port - s);
	}
	uint16_t p;
	if (parse_port(port, plen, &p) < 0)
		return -1;
	struct sockaddr_in *v4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(p);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(p);
		return 0;
	}
	return -1;
}

/* A name: letters, digits, '-', '_' and dots, as the resolver takes it. */
static bool valid_name(const char *h)
{
	if (!h[0])
		return false;
	for (const char *p = h; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
			return false;
	return true;
}

int listen_parse_hostport(const char *s, size_t n, uint16_t default_port, struct listen_target *t)
{
	const char *port = NULL;
	size_t hl;
	const char *h = s;
	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close)
			return -1;
		h = s + 1;
		hl = (size_t)(close - h);
		size_t rest = n - (size_t)(close + 1 - s);
		if (rest) {
			if (close[1] != ':')
				return -1;
			port = close + 2;
		}
		struct in6_addr a6;
		char tmp[INET6_ADDRSTRLEN];
		if (hl == 0 || hl >= sizeof(tmp))
			return -1;
		memcpy(tmp, h, hl);
		tmp[hl] = '\0';
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return -1;
	} else {
		const char *colon = memchr(s, ':', n);
		hl = colon ? (size_t)(colon - s) : n;
		if (colon)
			port = colon + 1;
	}
	if (hl == 0 || hl > LISTEN_HOST_MAX)
		return -1;
	memcpy(t->host, h, hl);
	t->host[hl] = '\0';
	if (s[0] != '[' && !valid_name(t->host))
		return -1;
	if (port)
		return parse_port(port, n - (size_t)(port - s), &t->port);
	if (!default_port)
		return -1;
	t->port = default_port;
	return 0;
}

int listen_parse_reverse(const char *spec, struct listen_target *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->via = "reverse";
	t->shape.client = RELAY_CLIENT_SNIFF;
	t->shape.proto = RELAY_PROTO_AUTO;
	t->shape.insecure = -1;
	const char *at = strrchr(spec, '@');
	if (!at) {
		snprintf(err, errlen, "expected URL@[ADDR:]PORT");
		return -1;
	}
	const char *url = spec;
	uint16_t dport;
	if (strncmp(url, "https://", 8) == 0) {
		t->shape.upstream_tls = true;
		url += 8;
		dport = 443;
	} else if (strncmp(url, "http://", 7) == 0) {
		url += 7;
		dport = 80;
	} else {
		snprintf(err, errlen, "the URL must begin with http:// or https://");
		return -1;
	}
	size_t n = (size_t)(at - url);
	const char *slash = memchr(url, '/', n);
	if (slash) {
		if ((size_t)(at - slash) != 1) {
			snprintf(err, errlen,
				 "the URL has a path: a reverse listener forwards every path");
			return -1;
		}
		n = (size_t)(slash - url);
	}
	if (listen_parse_hostport(url, n, dport, t) < 0) {
		snprintf(err, errlen, "the URL's host or port is not valid");
		return -1;
	}
	const char *l = at + 1, *comma = strchr(l, ',');
	size_t ln = comma ? (size_t)(comma - l) : strlen(l);
	if (listen_parse_addr(l, ln, &t->addr) < 0) {
		snprintf(err, errlen, "expected [ADDR:]PORT after '@'");
		return -1;
	}
	if (comma && strcmp(comma + 1, "keep-host") != 0) {
		snprintf(err, errlen, "after [ADDR:]PORT only \",keep-host\" may follow");
		return -1;
	}
	if (!comma) {
		bool v6 = strchr(t->host, ':') != NULL;
		int n2 = snprintf(t->authority, sizeof(t->authority), v6 ? "[%s]" : "%s", t->host);
		if (t->port != dport)
			snprintf(t->authority + n2, sizeof(t->authority) - (size_t)n2, ":%u",
				 t->port);
	}
	return 0;
}

static const struct {
	const char *name;
	enum relay_proto proto;
} protos[] = {
	{ "auto", RELAY_PROTO_AUTO }, { "raw", RELAY_PROTO_RAW },
	{ "http", RELAY_PROTO_HTTP }, { "http2", RELAY_PROTO_HTTP2 },
	{ "grpc", RELAY_PROTO_GRPC }, { "websocket", RELAY_PROTO_HTTP },
	{ "sse", RELAY_PROTO_HTTP },
};

static int parse_bool(const char *v, size_t n, bool *out)
{
	if ((n == 4 && memcmp(v, "true", 4) == 0) || (n == 1 && v[0] == '1'))
		*out = true;
	else if ((n == 5 && memcmp(v, "false", 5) == 0) || (n == 1 && v[0] == '0'))
		*out = false;
	else
		return -1;
	return 0;
}

int listen_parse_forward(const char *spec, struct listen_target *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->via = "forward";
	t->shape.client = RELAY_CLIENT_PLAIN;
	t->shape.proto = RELAY_PROTO_AUTO;
	t->shape.insecure = -1;
	const char *eq = strchr(spec, '=');
	if (!eq) {
		snprintf(err, errlen, "expected [ADDR:]PORT=HOST:PORT[,OPTION...]");
		return -1;
	}
	if (listen_parse_addr(spec, (size_t)(eq - spec), &t->addr) < 0) {
		snprintf(err, errlen, "expected [ADDR:]PORT before '='");
		return -1;
	}
	const char *target = eq + 1;
	const char *comma = strchr(target, ',');
	size_t tn = comma ? (size_t)(comma - target) : strlen(target);
	if (listen_parse_hostport(target, tn, 0, t) < 0) {
		snprintf(err, errlen, "expected HOST:PORT after '='");
		return -1;
	}
	while (comma) {
		const char *o = comma + 1;
		comma = strchr(o, ',');
		size_t on = comma ? (size_t)(comma - o) : strlen(o);
		const char *oeq = memchr(o, '=', on);
		size_t kn = oeq ? (size_t)(oeq - o) : on;
		const char *v = oeq ? oeq + 1 : NULL;
		size_t vn = oeq ? on - kn - 1 : 0;
		bool b = true;
		if (kn == 8 && memcmp(o, "protocol", 8) == 0 && v) {
			size_t i;
			for (i = 0; i < sizeof(protos) / sizeof(protos[0]); i++)
				if (strlen(protos[i].name) == vn &&
				    memcmp(protos[i].name, v, vn) == 0)
					break;
			if (i == sizeof(protos) / sizeof(protos[0])) {
				snprintf(err, errlen,
					 "protocol=%.*s: expected auto, raw, http, http2, grpc, "
					 "websocket or sse",
					 (int)(vn > 40 ? 40 : vn), v);
				return -1;
			}
			t->shape.proto = protos[i].proto;
			continue;
		}
		if (v && parse_bool(v, vn, &b) < 0) {
			snprintf(err, errlen, "%.*s: expected true or false",
				 (int)(on > 60 ? 60 : on), o);
			return -1;
		}
		if (kn == 3 && memcmp(o, "tls", 3) == 0)
			t->shape.client = b ? RELAY_CLIENT_TLS : RELAY_CLIENT_PLAIN;
		else if (kn == 12 && memcmp(o, "upstream-tls", 12) == 0)
			t->shape.upstream_tls = b;
		else if (kn == 8 && memcmp(o, "insecure", 8) == 0)
			t->shape.insecure = b ? 1 : 0;
		else {
			snprintf(err, errlen,
				 "unknown option \"%.*s\" (protocol=, tls, upstream-tls, insecure)",
				 (int)(on > 60 ? 60 : on), o);
			return -1;
		}
	}
	return 0;
}

int listen_parse_udp_forward(const char *spec, struct listen_target *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->via = "forward";
	const char *eq = strchr(spec, '=');
	if (!eq) {
		snprintf(err, errlen, "expected [ADDR:]PORT=HOST:PORT");
		return -1;
	}
	if (listen_parse_addr(spec, (size_t)(eq - spec), &t->addr) < 0) {
		snprintf(err, errlen, "expected [ADDR:]PORT before '='");
		return -1;
	}
	const char *target = eq + 1;
	if (strchr(target, ',')) {
		snprintf(err, errlen, "a UDP forward takes no options");
		return -1;
	}
	if (listen_parse_hostport(target, strlen(target), 0, t) < 0) {
		snprintf(err, errlen, "expected HOST:PORT after '='");
		return -1;
	}
	return 0;
}

/* %XX sequences decoded; -1 for a bad one, or one that makes a NUL. */
static int percent_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '%') {
			if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
			    !isxdigit((unsigned char)s[i + 2]))
				return -1;
			char hex[3] = { s[i + 1], s[i + 2], 0 };
			ch = (unsigned char)strtoul(hex, NULL, 16);
			if (ch == 0)
				return -1;
			i += 2;
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	return 0;
}

int listen_parse_parent(const char *spec, struct listen_parent *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	struct relay_parent *p = &out->p;
	const char *rest;
	if (strncmp(spec, "http://", 7) == 0) {
		rest = spec + 7;
	} else if (strncmp(spec, "socks5://", 9) == 0 || strncmp(spec, "socks5h://", 10) == 0) {
		p->socks5 = true;
		rest = strstr(spec, "://") + 3;
	} else {
		snprintf(err, errlen, "the URL must begin with http:// or socks5://");
		return -1;
	}
	/* [creds@]authority[@glob]: with two '@' both are there; with one,
	 * what follows it is the authority when it is HOST:PORT. */
	const char *at1 = strchr(rest, '@');
	const char *at2 = at1 ? strchr(at1 + 1, '@') : NULL;
	if (at2 && strchr(at2 + 1, '@')) {
		snprintf(err, errlen, "too many '@' (write an '@' in a password as %%40)");
		return -1;
	}
	const char *creds = NULL, *auth = rest, *glob = NULL;
	size_t cn = 0, an = strlen(rest);
	struct listen_target probe;
	if (at2) {
		creds = rest;
		cn = (size_t)(at1 - rest);
		auth = at1 + 1;
		an = (size_t)(at2 - auth);
		glob = at2 + 1;
	} else if (at1) {
		memset(&probe, 0, sizeof(probe));
		const char *tail = at1 + 1;
		if (listen_parse_hostport(tail, strlen(tail), 0, &probe) == 0) {
			creds = rest;
			cn = (size_t)(at1 - rest);
			auth = tail;
			an = strlen(tail);
		} else {
			an = (size_t)(at1 - rest);
			glob = tail;
		}
	}
	if (an && auth[an - 1] == '/')
		an--; /* "http://parent:3128/" */
	struct listen_target t;
	memset(&t, 0, sizeof(t));
	if (listen_parse_hostport(auth, an, 0, &t) < 0) {
		snprintf(err, errlen, "expected HOST:PORT for the proxy");
		return -1;
	}
	memcpy(out->host, t.host, sizeof(out->host));
	out->port = t.port;
	if (creds) {
		const char *colon = memchr(creds, ':', cn);
		size_t un = colon ? (size_t)(colon - creds) : cn;
		if (un == 0 || percent_decode(creds, un, p->user, sizeof(p->user)) < 0 ||
		    (colon &&
		     percent_decode(colon + 1, cn - un - 1, p->pass, sizeof(p->pass)) < 0)) {
			snprintf(err, errlen,
				 "the credentials are not valid (USER:PASS, %%XX escapes)");
			return -1;
		}
	}
	if (glob) {
		if (!glob[0]) {
			snprintf(err, errlen, "nothing after '@': a host glob or device=NAME");
			return -1;
		}
		if (strncmp(glob, "device=", 7) == 0) {
			if (!glob[7] || strlen(glob + 7) >= sizeof(p->device)) {
				snprintf(err, errlen, "device=NAME: a peer's name");
				return -1;
			}
			snprintf(p->device, sizeof(p->device), "%s", glob + 7);
		} else {
			if (strlen(glob) >= sizeof(p->glob)) {
				snprintf(err, errlen, "the host glob is too long");
				return -1;
			}
			snprintf(p->glob, sizeof(p->glob), "%s", glob);
		}
	}
	bool v6 = strchr(out->host, ':') != NULL;
	snprintf(p->label, sizeof(p->label), "%s://%s%s%s:%u", p->socks5 ? "socks5" : "http",
		 v6 ? "[" : "", out->host, v6 ? "]" : "", out->port);
	return 0;
}
