/* libFuzzer target for the client config parser, the HOST[:PORT] parser
 * and the setconf stripper. Invariants checked beyond "no crash":
 * - whatever parses renders, and the rendering parses back to the same text;
 * - stripping never grows the text by more than one final newline;
 * - an endpoint that parses formats to text that parses to the same endpoint. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qr/endpoint.h"
#include "qr/wgconf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_config(const char *text, size_t size)
{
	static struct qr_wgconf c, back;
	static char a[QR_WGCONF_TEXT_MAX], b[QR_WGCONF_TEXT_MAX], err[QR_WGCONF_ERR_MAX];
	size_t la, lb;

	if (qr_wgconf_parse(&c, text, size, "fuzz.conf", err, sizeof(err)) != 0) {
		if (strncmp(err, "fuzz.conf:", 10) != 0)
			abort(); /* every error names the file and line */
		return;
	}
	if (qr_wgconf_render(&c, a, sizeof(a), &la, err, sizeof(err)) != 0)
		abort();
	if (qr_wgconf_parse(&back, a, la, "rendered", err, sizeof(err)) != 0)
		abort();
	if (qr_wgconf_render(&back, b, sizeof(b), &lb, err, sizeof(err)) != 0)
		abort();
	if (la != lb || memcmp(a, b, la) != 0)
		abort();
}

static void check_strip(const char *text, size_t size)
{
	static char out[2 * QR_WGCONF_TEXT_MAX];
	size_t n;

	if (qr_wgconf_strip_for_setconf(text, size, out, sizeof(out), &n) == 0 &&
	    (n > size + 1 || out[n] != '\0'))
		abort();
}

static void check_endpoint(const uint8_t *data, size_t size)
{
	char text[QR_ENDPOINT_TEXT_MAX + 16], out[QR_ENDPOINT_TEXT_MAX], err[256];
	struct qr_endpoint ep, back;

	if (size >= sizeof(text))
		size = sizeof(text) - 1;
	memcpy(text, data, size);
	text[size] = '\0';
	if (qr_endpoint_parse(&ep, text, 51820, err, sizeof(err)) != 0)
		return;
	if (qr_endpoint_format(&ep, out, sizeof(out)) < 0)
		abort();
	if (qr_endpoint_parse(&back, out, 0, err, sizeof(err)) != 0)
		abort();
	if (back.family != ep.family || back.port != ep.port || strcmp(back.host, ep.host) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > QR_WGCONF_TEXT_MAX)
		return 0;
	check_config((const char *)data, size);
	check_strip((const char *)data, size);
	check_endpoint(data, size);
	return 0;
}
