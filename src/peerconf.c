#include "peerconf.h"

#include "qr/endpoint.h"
#include "qr/qrcode.h"
#include "qr/wgconf.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CANDIDATES 16

int peerconf_endpoint(const struct state *st, const struct state_peer *p, const char *override,
		      char *out, size_t outlen, FILE *others, char *err, size_t errlen)
{
	const char *given = override && *override ? override : p->endpoint;
	struct qr_endpoint ep;
	if (*given) {
		char perr[256];
		if (qr_endpoint_parse(&ep, given, st->port, perr, sizeof(perr)) < 0) {
			snprintf(err, errlen, "endpoint \"%s\": %s", given, perr);
			return -EINVAL;
		}
		if (qr_endpoint_format(&ep, out, outlen) < 0) {
			snprintf(err, errlen, "endpoint \"%s\": too long", given);
			return -ENOSPC;
		}
		return 0;
	}
	struct qr_endpoint_candidate cand[MAX_CANDIDATES];
	int n = qr_endpoint_detect(st->port, cand, MAX_CANDIDATES);
	if (n <= 0) {
		snprintf(err, errlen,
			 "cannot detect an address a phone could reach (%s); give one with "
			 "--endpoint HOST[:PORT]",
			 n < 0 ? strerror(-n) : "no usable interface address");
		return n < 0 ? n : -EADDRNOTAVAIL;
	}
	snprintf(out, outlen, "%s", cand[0].text);
	if (others && n > 1) {
		fprintf(others, "# endpoint %s (%s) was detected; other addresses of this host:",
			cand[0].text, cand[0].ifname);
		for (int i = 1; i < n; i++)
			fprintf(others, " %s (%s)", cand[i].text, cand[i].ifname);
		fprintf(others, "\n# use --endpoint HOST[:PORT] to pick another\n");
	}
	return 0;
}

static int split_list(const char *list, char *err, size_t errlen, const char *what,
		      int (*each)(void *ctx, const char *item, char *err, size_t errlen), void *ctx)
{
	char buf[STATE_LIST_MAX];
	snprintf(buf, sizeof(buf), "%s", list);
	char *save = NULL;
	for (char *tok = strtok_r(buf, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		int rc = each(ctx, tok, err, errlen);
		if (rc < 0) {
			size_t n = strlen(err);
			snprintf(err + n, errlen - n, " (in %s)", what);
			return rc;
		}
	}
	return 0;
}

static int add_allowed(void *ctx, const char *item, char *err, size_t errlen)
{
	struct qr_wgconf *c = ctx;
	if (c->n_allowed == QR_WGCONF_MAX_ALLOWED) {
		snprintf(err, errlen, "more than %d networks", QR_WGCONF_MAX_ALLOWED);
		return -EINVAL;
	}
	return qr_cidr_parse(&c->allowed[c->n_allowed++], item, err, errlen);
}

static int add_app(void *ctx, const char *item, char *err, size_t errlen)
{
	struct qr_wgconf *c = ctx;
	if (c->n_apps == QR_WGCONF_MAX_APPS || strlen(item) > QR_WGCONF_APP_MAX) {
		snprintf(err, errlen, "\"%s\": at most %d packages of %d characters", item,
			 QR_WGCONF_MAX_APPS, QR_WGCONF_APP_MAX);
		return -EINVAL;
	}
	snprintf(c->apps[c->n_apps++], QR_WGCONF_APP_MAX + 1, "%s", item);
	return 0;
}

char *peerconf_render(const struct state *st, const struct state_peer *p, const char *endpoint,
		      char *err, size_t errlen)
{
	struct qr_wgconf *c = malloc(sizeof(*c));
	char *text = malloc(QR_WGCONF_TEXT_MAX);
	int rc = -ENOMEM;
	if (!c || !text) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	qr_wgconf_init(c);
	memcpy(c->private_key, p->private_key, QR_WGCONF_KEY_LEN);
	c->address4.family = AF_INET;
	c->address4.addr.v4 = p->addr4;
	c->address4.prefix = 32;
	c->address6.family = AF_INET6;
	c->address6.addr.v6 = p->addr6;
	c->address6.prefix = 128;
	/* The endpoint's own tunnel addresses answer DNS. */
	struct in_addr s4;
	struct in6_addr s6;
	addrpool_server(&st->pool, &s4, &s6);
	c->n_dns = 2;
	c->dns[0].family = AF_INET;
	c->dns[0].addr.v4 = s4;
	c->dns[1].family = AF_INET6;
	c->dns[1].addr.v6 = s6;
	c->mtu = p->mtu;
	memcpy(c->public_key, st->public_key, QR_WGCONF_KEY_LEN);
	c->has_psk = true;
	memcpy(c->psk, p->preshared_key, QR_WGCONF_KEY_LEN);
	c->keepalive = p->keepalive;
	char perr[256];
	if (qr_endpoint_parse(&c->endpoint, endpoint, st->port, perr, sizeof(perr)) < 0) {
		snprintf(err, errlen, "endpoint \"%s\": %s", endpoint, perr);
		rc = -EINVAL;
		goto out;
	}
	if (*p->allowed_ips) {
		c->n_allowed = 0;
		if ((rc = split_list(p->allowed_ips, err, errlen, "allowed IPs", add_allowed, c)) <
		    0)
			goto out;
		if (c->n_allowed == 0) {
			snprintf(err, errlen, "allowed IPs: the list is empty");
			rc = -EINVAL;
			goto out;
		}
	}
	if (*p->include_apps || *p->exclude_apps) {
		c->apps_mode = *p->include_apps ? QR_WGCONF_APPS_INCLUDE : QR_WGCONF_APPS_EXCLUDE;
		rc = split_list(*p->include_apps ? p->include_apps : p->exclude_apps, err, errlen,
				"applications", add_app, c);
		if (rc < 0)
			goto out;
	}
	rc = qr_wgconf_render(c, text, QR_WGCONF_TEXT_MAX, NULL, err, errlen);
out:
	if (c) {
		qr_wgconf_wipe(c);
		free(c);
	}
	if (rc < 0 && text) {
		sodium_memzero(text, QR_WGCONF_TEXT_MAX);
		free(text);
		return NULL;
	}
	return text;
}

int peerconf_print(const struct state *st, const struct state_peer *p, const char *override,
		   FILE *out, char *err, size_t errlen)
{
	char ep[QR_ENDPOINT_TEXT_MAX];
	int rc = peerconf_endpoint(st, p, override, ep, sizeof(ep), out, err, errlen);
	if (rc < 0)
		return rc;
	char *text = peerconf_render(st, p, ep, err, errlen);
	if (!text)
		return -EINVAL;
	fprintf(out, "# peer %s\n%s\n", p->name, text);
	struct qr_code code = { 0 };
	unsigned quiet;
	rc = qr_code_encode_for_terminal(&code, text, strlen(text), 80, &quiet);
	if (rc == 0)
		/* Escapes only for a terminal: a log file gets plain blocks. */
		rc = qr_code_write_terminal(
			&code, out, isatty(fileno(out)) ? QR_TERM_ANSI : QR_TERM_PLAIN, quiet);
	qr_code_free(&code);
	if (rc < 0)
		snprintf(err, errlen, "cannot print the QR code: %s", qr_code_strerror(rc));
	fprintf(out,
		"\nScan it in the WireGuard app: + > Scan from QR code.\n"
		"`wgmitm peer config %s > %s.conf` writes the config as a file.\n",
		p->name, p->name);
	sodium_memzero(text, strlen(text));
	free(text);
	return rc;
}

int peerconf_save_qr(const char *text, const char *png, const char *svg, char *err, size_t errlen)
{
	struct qr_code code = { 0 };
	int rc = qr_code_encode(&code, text, strlen(text), QR_CODE_LEVEL_M);
	if (rc < 0) {
		snprintf(err, errlen, "cannot encode the QR code: %s", qr_code_strerror(rc));
		return rc;
	}
	if (png && (rc = qr_code_save_png(&code, png, 8)) < 0)
		snprintf(err, errlen, "%s: %s", png, qr_code_strerror(rc));
	if (rc == 0 && svg && (rc = qr_code_save_svg(&code, svg, 8)) < 0)
		snprintf(err, errlen, "%s: %s", svg, qr_code_strerror(rc));
	qr_code_free(&code);
	return rc;
}
