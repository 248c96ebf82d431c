/* wg-quick client configs: render, parse, validate, strip for `wg setconf`. */
#include "qr/wgconf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

static void set_err(char *err, size_t errcap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errcap, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errcap == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errcap, fmt, ap);
	va_end(ap);
}

/* ---- keys ---- */

void qr_wgconf_key_to_base64(char out[static QR_WGCONF_KEY_B64_LEN + 1],
			     const uint8_t key[static QR_WGCONF_KEY_LEN])
{
	sodium_bin2base64(out, QR_WGCONF_KEY_B64_LEN + 1, key, QR_WGCONF_KEY_LEN,
			  sodium_base64_VARIANT_ORIGINAL);
}

bool qr_wgconf_key_from_base64(uint8_t key[static QR_WGCONF_KEY_LEN], const char *b64)
{
	uint8_t tmp[QR_WGCONF_KEY_LEN];
	size_t bin_len = 0;
	const char *end = NULL;
	bool ok;

	if (strnlen(b64, QR_WGCONF_KEY_B64_LEN + 1) != QR_WGCONF_KEY_B64_LEN)
		return false;
	ok = sodium_base642bin(tmp, sizeof(tmp), b64, QR_WGCONF_KEY_B64_LEN, NULL, &bin_len, &end,
			       sodium_base64_VARIANT_ORIGINAL) == 0 &&
	     bin_len == QR_WGCONF_KEY_LEN && end == b64 + QR_WGCONF_KEY_B64_LEN;
	if (ok)
		memcpy(key, tmp, sizeof(tmp));
	sodium_memzero(tmp, sizeof(tmp));
	return ok;
}

/* ---- addresses ---- */

static bool host_bits_clear(const struct qr_cidr *c)
{
	const uint8_t *b = c->family == AF_INET ? (const uint8_t *)&c->addr.v4 : c->addr.v6.s6_addr;
	unsigned bits = c->family == AF_INET ? 32 : 128;

	for (unsigned i = c->prefix; i < bits; i++)
		if (b[i / 8] & (0x80u >> (i % 8)))
			return false;
	return true;
}

static int cidr_parse(struct qr_cidr *out, const char *text, bool allow_host_bits, char *err,
		      size_t errcap)
{
	char buf[INET6_ADDRSTRLEN];
	const char *slash = strchr(text, '/');
	size_t alen = slash != NULL ? (size_t)(slash - text) : strlen(text);
	struct qr_cidr c = { 0 };
	unsigned max;

	if (alen == 0 || alen >= sizeof(buf)) {
		set_err(err, errcap, "bad CIDR '%s'", text);
		return -EINVAL;
	}
	memcpy(buf, text, alen);
	buf[alen] = '\0';
	if (inet_pton(AF_INET, buf, &c.addr.v4) == 1) {
		c.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, &c.addr.v6) == 1) {
		c.family = AF_INET6;
		max = 128;
	} else {
		set_err(err, errcap, "bad CIDR '%s': '%s' is not an IP address", text, buf);
		return -EINVAL;
	}
	c.prefix = (uint8_t)max;
	if (slash != NULL) {
		const char *p = slash + 1;
		size_t plen = strlen(p);
		unsigned v = 0;
		bool digits = plen >= 1 && plen <= 3 && strspn(p, "0123456789") == plen;
		for (size_t i = 0; digits && i < plen; i++)
			v = v * 10 + (unsigned)(p[i] - '0');
		if (!digits || v > max) {
			set_err(err, errcap, "bad CIDR '%s': prefix length must be 0..%u", text,
				max);
			return -EINVAL;
		}
		c.prefix = (uint8_t)v;
	}
	if (!allow_host_bits && !host_bits_clear(&c)) {
		set_err(err, errcap, "bad CIDR '%s': bits set after the /%u prefix", text,
			(unsigned)c.prefix);
		return -EINVAL;
	}
	*out = c;
	return 0;
}

int qr_cidr_parse(struct qr_cidr *out, const char *text, char *err, size_t errcap)
{
	return cidr_parse(out, text, false, err, errcap);
}

int qr_cidr_format(const struct qr_cidr *c, char *buf, size_t cap)
{
	char a[INET6_ADDRSTRLEN];
	int n;

	if (inet_ntop(c->family, &c->addr, a, sizeof(a)) == NULL)
		return -EINVAL;
	n = snprintf(buf, cap, "%s/%u", a, (unsigned)c->prefix);
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}

static bool valid_cidr(const struct qr_cidr *c, bool allow_host_bits)
{
	if (c->family == AF_INET)
		return c->prefix <= 32 && (allow_host_bits || host_bits_clear(c));
	if (c->family == AF_INET6)
		return c->prefix <= 128 && (allow_host_bits || host_bits_clear(c));
	return false;
}

/* Java package name as Android uses it: dot-separated identifiers of
 * letters, digits and '_', none starting with a digit. */
static bool valid_app(const char *s)
{
	size_t len = strnlen(s, QR_WGCONF_APP_MAX + 1), seg = 0;

	if (len == 0 || len > QR_WGCONF_APP_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i == len || c == '.') {
			if (seg == 0)
				return false;
			seg = 0;
		} else if (isalpha(c) || c == '_' || (isdigit(c) && seg > 0)) {
			seg++;
		} else {
			return false;
		}
	}
	return true;
}

/* ---- init, wipe, validate ---- */

void qr_wgconf_init(struct qr_wgconf *c)
{
	memset(c, 0, sizeof(*c));
	c->n_allowed = 2;
	c->allowed[0].family = AF_INET;
	c->allowed[1].family = AF_INET6;
}

void qr_wgconf_wipe(struct qr_wgconf *c)
{
	sodium_memzero(c, sizeof(*c));
}

int qr_wgconf_validate(const struct qr_wgconf *c, char *err, size_t errcap)
{
	char ep[QR_ENDPOINT_TEXT_MAX];
	struct qr_endpoint check;

	if (sodium_is_zero(c->private_key, sizeof(c->private_key))) {
		set_err(err, errcap, "[Interface] has no PrivateKey");
		return -EINVAL;
	}
	if (c->address4.family == 0 && c->address6.family == 0) {
		set_err(err, errcap, "[Interface] has no Address");
		return -EINVAL;
	}
	if ((c->address4.family != 0 &&
	     (c->address4.family != AF_INET || !valid_cidr(&c->address4, true))) ||
	    (c->address6.family != 0 &&
	     (c->address6.family != AF_INET6 || !valid_cidr(&c->address6, true)))) {
		set_err(err, errcap, "bad Address");
		return -EINVAL;
	}
	if (c->n_dns > QR_WGCONF_MAX_DNS) {
		set_err(err, errcap, "too many DNS servers (at most %d)", QR_WGCONF_MAX_DNS);
		return -EINVAL;
	}
	for (size_t i = 0; i < c->n_dns; i++) {
		if (c->dns[i].family != AF_INET && c->dns[i].family != AF_INET6) {
			set_err(err, errcap, "bad DNS server #%zu", i + 1);
			return -EINVAL;
		}
	}
	if (c->mtu != 0 && c->mtu < QR_WGCONF_MTU_MIN) {
		set_err(err, errcap, "MTU %u out of range %d..%d", (unsigned)c->mtu,
			QR_WGCONF_MTU_MIN, QR_WGCONF_MTU_MAX);
		return -EINVAL;
	}
	if (c->mtu != 0 && c->mtu < QR_WGCONF_MTU_MIN_V6 && c->address6.family != 0) {
		set_err(err, errcap, "MTU %u is below %d, the minimum for the IPv6 Address",
			(unsigned)c->mtu, QR_WGCONF_MTU_MIN_V6);
		return -EINVAL;
	}
	if (c->n_apps > QR_WGCONF_MAX_APPS) {
		set_err(err, errcap, "too many applications (at most %d)", QR_WGCONF_MAX_APPS);
		return -EINVAL;
	}
	if ((c->apps_mode == QR_WGCONF_APPS_ALL) != (c->n_apps == 0) ||
	    (unsigned)c->apps_mode > QR_WGCONF_APPS_EXCLUDE) {
		set_err(err, errcap, "application list and its mode disagree");
		return -EINVAL;
	}
	for (size_t i = 0; i < c->n_apps; i++) {
		if (!valid_app(c->apps[i])) {
			set_err(err, errcap, "bad application name '%.*s'", QR_WGCONF_APP_MAX,
				c->apps[i]);
			return -EINVAL;
		}
	}
	if (sodium_is_zero(c->public_key, sizeof(c->public_key))) {
		set_err(err, errcap, "[Peer] has no PublicKey");
		return -EINVAL;
	}
	if (c->endpoint.host[0] == '\0' || c->endpoint.port == 0) {
		set_err(err, errcap,
			"[Peer] has no Endpoint (the phone would not know where to connect)");
		return -EINVAL;
	}
	/* The endpoint must read back as itself: catches a bad host or family. */
	if (qr_endpoint_format(&c->endpoint, ep, sizeof(ep)) < 0 ||
	    qr_endpoint_parse(&check, ep, 0, NULL, 0) != 0 || check.family != c->endpoint.family ||
	    strcmp(check.host, c->endpoint.host) != 0) {
		set_err(err, errcap, "bad Endpoint");
		return -EINVAL;
	}
	if (c->n_allowed > QR_WGCONF_MAX_ALLOWED) {
		set_err(err, errcap, "too many AllowedIPs (at most %d)", QR_WGCONF_MAX_ALLOWED);
		return -EINVAL;
	}
	for (size_t i = 0; i < c->n_allowed; i++) {
		if (!valid_cidr(&c->allowed[i], false)) {
			set_err(err, errcap, "bad AllowedIPs entry #%zu", i + 1);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- render ---- */

struct out {
	char *p;
	size_t cap, len;
	bool full;
};

static void out_add(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_add(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->cap - o->len) {
		o->full = true;
		return;
	}
	o->len += (size_t)n;
}

static void out_cidr(struct out *o, const struct qr_cidr *c, bool first)
{
	char buf[INET6_ADDRSTRLEN + 4];

	if (qr_cidr_format(c, buf, sizeof(buf)) < 0) {
		o->full = true;
		return;
	}
	out_add(o, "%s%s", first ? "" : ", ", buf);
}

int qr_wgconf_render(const struct qr_wgconf *c, char *buf, size_t cap, size_t *len, char *err,
		     size_t errcap)
{
	char key[QR_WGCONF_KEY_B64_LEN + 1], ep[QR_ENDPOINT_TEXT_MAX];
	struct out o = { .p = buf, .cap = cap };
	int rc;

	if (cap == 0)
		return -ENOSPC;
	buf[0] = '\0';
	rc = qr_wgconf_validate(c, err, errcap);
	if (rc != 0)
		return rc;

	out_add(&o, "[Interface]\n");
	qr_wgconf_key_to_base64(key, c->private_key);
	out_add(&o, "PrivateKey = %s\n", key);
	if (c->listen_port != 0)
		out_add(&o, "ListenPort = %u\n", (unsigned)c->listen_port);
	out_add(&o, "Address = ");
	if (c->address4.family != 0)
		out_cidr(&o, &c->address4, true);
	if (c->address6.family != 0)
		out_cidr(&o, &c->address6, c->address4.family == 0);
	out_add(&o, "\n");
	if (c->n_dns > 0) {
		out_add(&o, "DNS = ");
		for (size_t i = 0; i < c->n_dns; i++) {
			char a[INET6_ADDRSTRLEN];
			inet_ntop(c->dns[i].family, &c->dns[i].addr, a, sizeof(a));
			out_add(&o, "%s%s", i == 0 ? "" : ", ", a);
		}
		out_add(&o, "\n");
	}
	if (c->mtu != 0)
		out_add(&o, "MTU = %u\n", (unsigned)c->mtu);
	if (c->n_apps > 0) {
		out_add(&o, "%s = ",
			c->apps_mode == QR_WGCONF_APPS_INCLUDE ? "IncludedApplications"
							       : "ExcludedApplications");
		for (size_t i = 0; i < c->n_apps; i++)
			out_add(&o, "%s%s", i == 0 ? "" : ", ", c->apps[i]);
		out_add(&o, "\n");
	}

	out_add(&o, "\n[Peer]\n");
	qr_wgconf_key_to_base64(key, c->public_key);
	out_add(&o, "PublicKey = %s\n", key);
	if (c->has_psk) {
		qr_wgconf_key_to_base64(key, c->psk);
		out_add(&o, "PresharedKey = %s\n", key);
	}
	if (c->n_allowed > 0) {
		out_add(&o, "AllowedIPs = ");
		for (size_t i = 0; i < c->n_allowed; i++)
			out_cidr(&o, &c->allowed[i], i == 0);
		out_add(&o, "\n");
	}
	qr_endpoint_format(&c->endpoint, ep, sizeof(ep));
	out_add(&o, "Endpoint = %s\n", ep);
	if (c->keepalive != 0)
		out_add(&o, "PersistentKeepalive = %u\n", (unsigned)c->keepalive);

	sodium_memzero(key, sizeof(key));
	if (o.full) {
		sodium_memzero(buf, cap);
		set_err(err, errcap, "config longer than the %zu-byte buffer", cap);
		return -ENOSPC;
	}
	if (len != NULL)
		*len = o.len;
	return 0;
}

/* ---- parse ---- */

enum section { SEC_NONE, SEC_INTERFACE, SEC_PEER };

enum key_id {
	K_PRIVATEKEY,
	K_LISTENPORT,
	K_ADDRESS,
	K_DNS,
	K_MTU,
	K_INCLUDEDAPPS,
	K_EXCLUDEDAPPS,
	K_PUBLICKEY,
	K_PRESHAREDKEY,
	K_ALLOWEDIPS,
	K_ENDPOINT,
	K_KEEPALIVE,
	K_COUNT
};

static const struct {
	const char *name; /* canonical spelling, for messages */
	enum section section;
	bool repeat; /* values of repeated lines add up */
} keys[K_COUNT] = {
	[K_PRIVATEKEY] = { "PrivateKey", SEC_INTERFACE, false },
	[K_LISTENPORT] = { "ListenPort", SEC_INTERFACE, false },
	[K_ADDRESS] = { "Address", SEC_INTERFACE, true },
	[K_DNS] = { "DNS", SEC_INTERFACE, true },
	[K_MTU] = { "MTU", SEC_INTERFACE, false },
	[K_INCLUDEDAPPS] = { "IncludedApplications", SEC_INTERFACE, true },
	[K_EXCLUDEDAPPS] = { "ExcludedApplications", SEC_INTERFACE, true },
	[K_PUBLICKEY] = { "PublicKey", SEC_PEER, false },
	[K_PRESHAREDKEY] = { "PresharedKey", SEC_PEER, false },
	[K_ALLOWEDIPS] = { "AllowedIPs", SEC_PEER, true },
	[K_ENDPOINT] = { "Endpoint", SEC_PEER, false },
	[K_KEEPALIVE] = { "PersistentKeepalive", SEC_PEER, false },
};

static const char *section_name(enum section s)
{
	return s == SEC_INTERFACE ? "[Interface]" : "[Peer]";
}

struct parser {
	struct qr_wgconf c;
	const char *name;
	unsigned lineno;
	unsigned seen[K_COUNT]; /* line of the first occurrence, 0 = not seen */
	unsigned interface_line, peer_line;
	char msg[QR_WGCONF_ERR_MAX];
};

/* Decimal in [lo, hi], digits only. */
static bool parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *v)
{
	size_t n = strlen(s);

	if (n == 0 || n > 6 || strspn(s, "0123456789") != n)
		return false;
	*v = strtoul(s, NULL, 10);
	return *v >= lo && *v <= hi;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* Calls item() on each comma-separated entry of value; an empty entry is an error. */
static int each_item(struct parser *ps, enum key_id k, char *value,
		     int (*item)(struct parser *, enum key_id, const char *))
{
	char *save = NULL;
	size_t n = strlen(value);

	if (value[0] == ',' || value[n - 1] == ',' || strstr(value, ",,") != NULL) {
		set_err(ps->msg, sizeof(ps->msg), "empty entry in the %s list", keys[k].name);
		return -EINVAL;
	}
	for (char *tok = strtok_r(value, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		tok = trim(tok);
		if (*tok == '\0') {
			set_err(ps->msg, sizeof(ps->msg), "empty entry in the %s list",
				keys[k].name);
			return -EINVAL;
		}
		int rc = item(ps, k, tok);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int item_address(struct parser *ps, enum key_id k, const char *tok)
{
	struct qr_cidr a;
	char why[160];

	if (cidr_parse(&a, tok, true, why, sizeof(why)) != 0) {
		set_err(ps->msg, sizeof(ps->msg), "Address: %s", why);
		return -EINVAL;
	}
	struct qr_cidr *slot = a.family == AF_INET ? &ps->c.address4 : &ps->c.address6;
	if (slot->family != 0) {
		set_err(ps->msg, sizeof(ps->msg),
			"Address: more than one %s address (a client has one of each)",
			a.family == AF_INET ? "IPv4" : "IPv6");
		return -EINVAL;
	}
	*slot = a;
	return 0;
}

static int item_dns(struct parser *ps, enum key_id k, const char *tok)
{
	struct qr_ipaddr d = { 0 };

	if (inet_pton(AF_INET, tok, &d.addr.v4) == 1)
		d.family = AF_INET;
	else if (inet_pton(AF_INET6, tok, &d.addr.v6) == 1)
		d.family = AF_INET6;
	else {
		set_err(ps->msg, sizeof(ps->msg), "DNS: '%s' is not an IP address", tok);
		return -EINVAL;
	}
	if (ps->c.n_dns >= QR_WGCONF_MAX_DNS) {
		set_err(ps->msg, sizeof(ps->msg), "DNS: more than %d servers", QR_WGCONF_MAX_DNS);
		return -EINVAL;
	}
	ps->c.dns[ps->c.n_dns++] = d;
	return 0;
}

static int item_app(struct parser *ps, enum key_id k, const char *tok)
{
	if (!valid_app(tok)) {
		set_err(ps->msg, sizeof(ps->msg), "%s: '%.*s' is not an Android package name",
			keys[k].name, QR_WGCONF_APP_MAX, tok);
		return -EINVAL;
	}
	if (ps->c.n_apps >= QR_WGCONF_MAX_APPS) {
		set_err(ps->msg, sizeof(ps->msg), "%s: more than %d applications", keys[k].name,
			QR_WGCONF_MAX_APPS);
		return -EINVAL;
	}
	snprintf(ps->c.apps[ps->c.n_apps++], QR_WGCONF_APP_MAX + 1, "%s", tok);
	return 0;
}

static int item_allowed(struct parser *ps, enum key_id k, const char *tok)
{
	char why[160];

	if (ps->c.n_allowed >= QR_WGCONF_MAX_ALLOWED) {
		set_err(ps->msg, sizeof(ps->msg), "AllowedIPs: more than %d entries",
			QR_WGCONF_MAX_ALLOWED);
		return -EINVAL;
	}
	if (qr_cidr_parse(&ps->c.allowed[ps->c.n_allowed], tok, why, sizeof(why)) != 0) {
		set_err(ps->msg, sizeof(ps->msg), "AllowedIPs: %s", why);
		return -EINVAL;
	}
	ps->c.n_allowed++;
	return 0;
}

static int parse_key(struct parser *ps, enum key_id k, uint8_t key[static QR_WGCONF_KEY_LEN],
		     const char *value)
{
	if (!qr_wgconf_key_from_base64(key, value)) {
		/* Secret values are not echoed. */
		if (k == K_PUBLICKEY)
			set_err(ps->msg, sizeof(ps->msg),
				"PublicKey: '%.60s' is not the base64 of 32 bytes", value);
		else
			set_err(ps->msg, sizeof(ps->msg),
				"%s: not the base64 of 32 bytes (44 characters ending in '=')",
				keys[k].name);
		return -EINVAL;
	}
	return 0;
}

static int apply(struct parser *ps, enum key_id k, char *value)
{
	unsigned long v;
	char why[QR_WGCONF_ERR_MAX - 32];

	switch (k) {
	case K_PRIVATEKEY:
		return parse_key(ps, k, ps->c.private_key, value);
	case K_PUBLICKEY:
		return parse_key(ps, k, ps->c.public_key, value);
	case K_PRESHAREDKEY:
		ps->c.has_psk = true;
		return parse_key(ps, k, ps->c.psk, value);
	case K_LISTENPORT:
		if (!parse_uint(value, 1, 65535, &v)) {
			set_err(ps->msg, sizeof(ps->msg), "ListenPort: '%.40s' is not 1..65535",
				value);
			return -EINVAL;
		}
		ps->c.listen_port = (uint16_t)v;
		return 0;
	case K_MTU:
		if (!parse_uint(value, QR_WGCONF_MTU_MIN, QR_WGCONF_MTU_MAX, &v)) {
			set_err(ps->msg, sizeof(ps->msg), "MTU: '%.40s' is not in %d..%d", value,
				QR_WGCONF_MTU_MIN, QR_WGCONF_MTU_MAX);
			return -EINVAL;
		}
		ps->c.mtu = (uint16_t)v;
		return 0;
	case K_KEEPALIVE:
		if (strcasecmp(value, "off") == 0) {
			ps->c.keepalive = 0;
			return 0;
		}
		if (!parse_uint(value, 0, 65535, &v)) {
			set_err(ps->msg, sizeof(ps->msg),
				"PersistentKeepalive: '%.40s' is not 'off' or 0..65535", value);
			return -EINVAL;
		}
		ps->c.keepalive = (uint16_t)v;
		return 0;
	case K_ENDPOINT:
		if (qr_endpoint_parse(&ps->c.endpoint, value, 0, why, sizeof(why)) != 0) {
			set_err(ps->msg, sizeof(ps->msg), "Endpoint: %s", why);
			return -EINVAL;
		}
		return 0;
	case K_ADDRESS:
		return each_item(ps, k, value, item_address);
	case K_DNS:
		return each_item(ps, k, value, item_dns);
	case K_ALLOWEDIPS:
		return each_item(ps, k, value, item_allowed);
	case K_INCLUDEDAPPS:
	case K_EXCLUDEDAPPS: {
		enum qr_wgconf_apps mode =
			k == K_INCLUDEDAPPS ? QR_WGCONF_APPS_INCLUDE : QR_WGCONF_APPS_EXCLUDE;
		if (ps->c.apps_mode != QR_WGCONF_APPS_ALL && ps->c.apps_mode != mode) {
			set_err(ps->msg, sizeof(ps->msg),
				"IncludedApplications and ExcludedApplications exclude each other");
			return -EINVAL;
		}
		ps->c.apps_mode = mode;
		return each_item(ps, k, value, item_app);
	}
	case K_COUNT:
		break;
	}
	return -EINVAL;
}

/* One line, without its newline and with the comment cut off. */
static int parse_line(struct parser *ps, enum section *sec, char *line)
{
	char *hash = strchr(line, '#'), *eq, *key, *value;

	if (hash != NULL)
		*hash = '\0';
	line = trim(line);
	if (*line == '\0')
		return 0;
	if (*line == '[') {
		if (strcasecmp(line, "[Interface]") == 0) {
			if (ps->interface_line != 0) {
				set_err(ps->msg, sizeof(ps->msg),
					"second [Interface] section (first on line %u)",
					ps->interface_line);
				return -EINVAL;
			}
			ps->interface_line = ps->lineno;
			*sec = SEC_INTERFACE;
		} else if (strcasecmp(line, "[Peer]") == 0) {
			if (ps->peer_line != 0) {
				set_err(ps->msg, sizeof(ps->msg),
					"second [Peer] section (first on line %u): a client "
					"config has exactly one peer",
					ps->peer_line);
				return -EINVAL;
			}
			ps->peer_line = ps->lineno;
			*sec = SEC_PEER;
		} else {
			set_err(ps->msg, sizeof(ps->msg),
				"unknown section '%.60s' (expected [Interface] or [Peer])", line);
			return -EINVAL;
		}
		return 0;
	}
	eq = strchr(line, '=');
	if (eq == NULL) {
		set_err(ps->msg, sizeof(ps->msg), "expected 'Key = Value' or a [Section]");
		return -EINVAL;
	}
	*eq = '\0';
	key = trim(line);
	value = trim(eq + 1);
	if (*key == '\0' || strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					"0123456789_") != strlen(key)) {
		set_err(ps->msg, sizeof(ps->msg), "bad key '%.60s'", key);
		return -EINVAL;
	}
	if (*sec == SEC_NONE) {
		set_err(ps->msg, sizeof(ps->msg),
			"'%.60s' before any [Interface] or [Peer] section", key);
		return -EINVAL;
	}
	enum key_id k = K_COUNT;
	for (int i = 0; i < K_COUNT; i++)
		if (strcasecmp(key, keys[i].name) == 0)
			k = (enum key_id)i;
	if (k == K_COUNT) {
		set_err(ps->msg, sizeof(ps->msg), "unknown key '%.60s' in %s", key,
			section_name(*sec));
		return -EINVAL;
	}
	if (keys[k].section != *sec) {
		set_err(ps->msg, sizeof(ps->msg), "%s belongs in %s, not in %s", keys[k].name,
			section_name(keys[k].section), section_name(*sec));
		return -EINVAL;
	}
	if (*value == '\0') {
		set_err(ps->msg, sizeof(ps->msg), "empty value for %s", keys[k].name);
		return -EINVAL;
	}
	if (ps->seen[k] != 0 && !keys[k].repeat) {
		set_err(ps->msg, sizeof(ps->msg), "duplicate key %s (first on line %u)",
			keys[k].name, ps->seen[k]);
		return -EINVAL;
	}
	if (ps->seen[k] == 0)
		ps->seen[k] = ps->lineno;
	return apply(ps, k, value);
}

/* What must be present, reported at the line of the section it belongs to. */
static int check_required(struct parser *ps, unsigned last_line, unsigned *at)
{
	static const enum key_id required[] = { K_PRIVATEKEY, K_ADDRESS, K_PUBLICKEY, K_ENDPOINT };

	if (ps->interface_line == 0 || ps->peer_line == 0) {
		*at = last_line;
		set_err(ps->msg, sizeof(ps->msg), "no %s section",
			ps->interface_line == 0 ? "[Interface]" : "[Peer]");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		enum key_id k = required[i];
		if (ps->seen[k] == 0) {
			*at = keys[k].section == SEC_INTERFACE ? ps->interface_line : ps->peer_line;
			set_err(ps->msg, sizeof(ps->msg), "missing required key %s in %s",
				keys[k].name, section_name(keys[k].section));
			return -EINVAL;
		}
	}
	if (ps->c.mtu != 0 && ps->c.mtu < QR_WGCONF_MTU_MIN_V6 && ps->c.address6.family != 0) {
		*at = ps->seen[K_MTU];
		set_err(ps->msg, sizeof(ps->msg),
			"MTU %u is below %d, the minimum for the IPv6 Address", (unsigned)ps->c.mtu,
			QR_WGCONF_MTU_MIN_V6);
		return -EINVAL;
	}
	*at = ps->interface_line;
	return qr_wgconf_validate(&ps->c, ps->msg, sizeof(ps->msg));
}

int qr_wgconf_parse(struct qr_wgconf *out, const char *text, size_t len, const char *name,
		    char *err, size_t errcap)
{
	struct parser ps;
	char line[QR_WGCONF_LINE_MAX + 1];
	enum section sec = SEC_NONE;
	size_t pos = 0;
	unsigned at = 0;
	int rc = 0;

	memset(&ps, 0, sizeof(ps));
	ps.name = name != NULL ? name : "<config>";
	while (pos < len) {
		const char *start = text + pos;
		const char *nl = memchr(start, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - start) : len - pos;

		pos += n + (nl != NULL ? 1 : 0);
		ps.lineno++;
		at = ps.lineno;
		if (n > QR_WGCONF_LINE_MAX) {
			set_err(ps.msg, sizeof(ps.msg), "line longer than %d bytes",
				QR_WGCONF_LINE_MAX);
			rc = -EINVAL;
			break;
		}
		if (memchr(start, '\0', n) != NULL) {
			set_err(ps.msg, sizeof(ps.msg), "NUL byte in line");
			rc = -EINVAL;
			break;
		}
		memcpy(line, start, n);
		line[n] = '\0';
		rc = parse_line(&ps, &sec, line);
		if (rc != 0)
			break;
	}
	if (rc == 0)
		rc = check_required(&ps, ps.lineno > 0 ? ps.lineno : 1, &at);
	if (rc == 0) {
		*out = ps.c;
	} else {
		qr_wgconf_wipe(out);
		set_err(err, errcap, "%s:%u: %s", ps.name, at, ps.msg);
	}
	sodium_memzero(line, sizeof(line));
	sodium_memzero(&ps, sizeof(ps));
	return rc;
}

/* ---- strip for wg setconf ---- */

static bool wg_quick_only(const char *key, size_t n)
{
	static const char *const names[] = {
		"Address",
		"DNS",
		"MTU",
		"Table",
		"PreUp",
		"PostUp",
		"PreDown",
		"PostDown",
		"SaveConfig",
		"IncludedApplications",
		"ExcludedApplications",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == n && strncasecmp(key, names[i], n) == 0)
			return true;
	return false;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

int qr_wgconf_strip_for_setconf(const char *text, size_t len, char *out, size_t cap, size_t *outlen)
{
	bool in_interface = false;
	size_t pos = 0, o = 0;

	while (pos < len) {
		const char *start = text + pos;
		const char *nl = memchr(start, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - start) : len - pos;
		const char *hash = memchr(start, '#', n);
		size_t content = hash != NULL ? (size_t)(hash - start) : n;
		size_t b = 0, e = content;
		bool drop = false;

		pos += n + (nl != NULL ? 1 : 0);
		while (b < e && is_blank(start[b]))
			b++;
		while (e > b && is_blank(start[e - 1]))
			e--;
		if (b < e && start[b] == '[') {
			in_interface =
				e - b == 11 && strncasecmp(start + b, "[Interface]", 11) == 0;
		} else if (in_interface && b < e) {
			const char *eq = memchr(start + b, '=', e - b);
			if (eq != NULL) {
				size_t ke = (size_t)(eq - start);
				while (ke > b && is_blank(start[ke - 1]))
					ke--;
				drop = wg_quick_only(start + b, ke - b);
			}
		}
		if (drop)
			continue;
		if (o + n + 2 > cap)
			return -ENOSPC;
		memcpy(out + o, start, n);
		o += n;
		out[o++] = '\n';
	}
	if (o + 1 > cap)
		return -ENOSPC;
	out[o] = '\0';
	if (outlen != NULL)
		*outlen = o;
	return 0;
}

int qr_wgconf_render_setconf(const struct qr_wgconf *c, char *buf, size_t cap, size_t *len,
			     char *err, size_t errcap)
{
	char full[QR_WGCONF_TEXT_MAX];
	size_t n;
	int rc = qr_wgconf_render(c, full, sizeof(full), &n, err, errcap);

	if (rc == 0) {
		rc = qr_wgconf_strip_for_setconf(full, n, buf, cap, len);
		if (rc != 0)
			set_err(err, errcap, "config longer than the %zu-byte buffer", cap);
	}
	sodium_memzero(full, sizeof(full));
	return rc;
}
