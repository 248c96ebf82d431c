/* Peer changes in the state directory. */
#include "peerops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "peerconf.h"
#include "qr/qrcode.h"

void peerops_wipe(char *text)
{
	if (!text)
		return;
	sodium_memzero(text, strlen(text));
	free(text);
}

static int set_field(char *dst, size_t cap, const char *value, const char *what, char *err,
		     size_t errlen)
{
	if (!value)
		return 0;
	if ((size_t)snprintf(dst, cap, "%s", value) >= cap) {
		snprintf(err, errlen, "%s is too long (at most %zu characters)", what, cap - 1);
		return -1;
	}
	return 0;
}

int peerops_add(const char *home, const struct peerops_spec *spec, char **config, char *err,
		size_t errlen)
{
	if (config)
		*config = NULL;
	if (spec->apps && spec->exclude_apps && *spec->apps && *spec->exclude_apps) {
		snprintf(err, errlen, "apps and exclude_apps cannot be used together");
		return -1;
	}
	if (spec->mtu && (spec->mtu < 1280 || spec->mtu > 9000)) {
		snprintf(err, errlen, "mtu: expected 1280 to 9000");
		return -1;
	}
	if (spec->keepalive > 65535) {
		snprintf(err, errlen, "keepalive: expected seconds, 0 to 65535");
		return -1;
	}
	struct state st;
	if (state_open(&st, home, true, err, errlen) < 0)
		return -1;
	int status = -1;
	char *text = NULL;
	struct state_peer *p;
	if (state_lock(&st, err, errlen) < 0 || state_reload_peers(&st, err, errlen) < 0 ||
	    state_peer_create(&st, spec->name, &p, err, errlen) < 0)
		goto out;
	p->mtu = (uint16_t)(spec->mtu ? spec->mtu : STATE_DEFAULT_MTU);
	p->keepalive = (uint16_t)(spec->keepalive >= 0 ? spec->keepalive : STATE_DEFAULT_KEEPALIVE);
	if (set_field(p->endpoint, sizeof(p->endpoint), spec->endpoint, "endpoint", err, errlen) <
		    0 ||
	    set_field(p->allowed_ips, sizeof(p->allowed_ips), spec->allowed_ips, "allowed_ips", err,
		      errlen) < 0 ||
	    set_field(p->include_apps, sizeof(p->include_apps), spec->apps, "apps", err, errlen) <
		    0 ||
	    set_field(p->exclude_apps, sizeof(p->exclude_apps), spec->exclude_apps, "exclude_apps",
		      err, errlen) < 0)
		goto out;
	/* Render before saving: a bad endpoint or CIDR list must not be stored. */
	char ep[320];
	if (peerconf_endpoint(&st, p, NULL, ep, sizeof(ep), NULL, err, errlen) < 0)
		goto out;
	text = peerconf_render(&st, p, ep, err, errlen);
	if (!text || state_save_peers(&st, err, errlen) < 0)
		goto out;
	status = 0;
	if (config) {
		*config = text;
		text = NULL;
	}
out:
	peerops_wipe(text);
	state_close(&st);
	return status;
}

int peerops_remove(const char *home, const char *name, char *err, size_t errlen)
{
	struct state st;
	if (state_open(&st, home, false, err, errlen) < 0)
		return -1;
	int status = -1;
	if (state_lock(&st, err, errlen) < 0 || state_reload_peers(&st, err, errlen) < 0)
		goto out;
	if (state_peer_remove(&st, name) < 0) {
		snprintf(err, errlen, "no peer named \"%s\"", name);
		goto out;
	}
	if (state_save_peers(&st, err, errlen) < 0)
		goto out;
	status = 0;
out:
	state_close(&st);
	return status;
}

char *peerops_config(const char *home, const char *name, const char *endpoint, char *err,
		     size_t errlen)
{
	struct state st;
	if (state_open(&st, home, false, err, errlen) < 0)
		return NULL;
	char *text = NULL;
	struct state_peer *p = state_peer_find(&st, name);
	char ep[320];
	if (!p)
		snprintf(err, errlen, "no peer named \"%s\"", name);
	else if (peerconf_endpoint(&st, p, endpoint, ep, sizeof(ep), NULL, err, errlen) == 0)
		text = peerconf_render(&st, p, ep, err, errlen);
	state_close(&st);
	return text;
}

int peerops_qr(const char *text, bool svg, uint8_t **out, size_t *len, char *err, size_t errlen)
{
	*out = NULL;
	*len = 0;
	struct qr_code code = { 0 };
	int rc = qr_code_encode(&code, text, strlen(text), QR_CODE_LEVEL_M);
	if (rc < 0) {
		snprintf(err, errlen, "cannot encode the QR code: %s", qr_code_strerror(rc));
		return -1;
	}
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	if (!f) {
		qr_code_free(&code);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rc = svg ? qr_code_write_svg(&code, f, 8) : qr_code_write_png(&code, f, 8);
	qr_code_free(&code);
	if (fclose(f) != 0 || rc < 0) {
		free(buf);
		snprintf(err, errlen, "cannot write the QR code: %s",
			 rc < 0 ? qr_code_strerror(rc) : "out of memory");
		return -1;
	}
	*out = (uint8_t *)buf;
	*len = n;
	return 0;
}
