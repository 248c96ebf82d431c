/* The CA install page: prebuilt responses and a small HTTP/1.1 server over
 * netstack connections. llhttp parses requests; nothing here reads HTTP by
 * hand. */
#include "mitm/capage.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <llhttp.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/strbuf.h"
#include "common/tally.h"
#include "mitm/ca.h"
#include "mitm/localname.h"
#include "common/stream.h"

#define CAPAGE_IN_CAP (64u * 1024) /* client bytes kept while a response is pending */

/* ---- Building text ----------------------------------------------------- */

/* Text for HTML and XML alike: & < > " ' escaped. */
static void append_escaped(struct strbuf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&':
			strbuf_append_str(b, "&amp;");
			break;
		case '<':
			strbuf_append_str(b, "&lt;");
			break;
		case '>':
			strbuf_append_str(b, "&gt;");
			break;
		case '"':
			strbuf_append_str(b, "&quot;");
			break;
		case '\'':
			strbuf_append_str(b, "&#39;");
			break;
		default:
			strbuf_append(b, s, 1);
		}
	}
}

/* ---- The site ---------------------------------------------------------- */

enum capage_res {
	RES_PAGE,
	RES_CRT,
	RES_PEM,
	RES_CER,
	RES_DER,
	RES_MOBILECONFIG,
	RES_NOT_FOUND,
	RES_COUNT
};

enum capage_err { ERR_400, ERR_405, ERR_413, ERR_414, ERR_431, ERR_COUNT };

static const int err_status[ERR_COUNT] = { 400, 405, 413, 414, 431 };

struct capage_site {
	struct strbuf body[RES_COUNT];
	struct strbuf head[RES_COUNT][2]; /* [keep-alive, close] */
	struct strbuf err[ERR_COUNT];     /* head and body in one */
};

struct route {
	const char *path;
	enum capage_res res;
};

static const struct route routes[] = {
	{ "/", RES_PAGE },
	{ "/index.html", RES_PAGE },
	{ "/ca.crt", RES_CRT },
	{ "/ca.pem", RES_PEM },
	{ "/ca.cer", RES_CER },
	{ "/ca.der", RES_DER },
	{ "/ca.mobileconfig", RES_MOBILECONFIG },
};

/* Content type and download name of each resource. */
static const struct {
	int status;
	const char *type;
	const char *filename; /* NULL: shown, not downloaded */
} res_meta[RES_COUNT] = {
	[RES_PAGE] = { 200, "text/html; charset=utf-8", NULL },
	[RES_CRT] = { 200, "application/x-x509-ca-cert", "wgmitm-ca.crt" },
	[RES_PEM] = { 200, "application/x-x509-ca-cert", "wgmitm-ca.pem" },
	[RES_CER] = { 200, "application/pkix-cert", "wgmitm-ca.cer" },
	[RES_DER] = { 200, "application/pkix-cert", "wgmitm-ca.der" },
	[RES_MOBILECONFIG] = { 200, "application/x-apple-aspen-config", "wgmitm-ca.mobileconfig" },
	[RES_NOT_FOUND] = { 404, "text/plain; charset=utf-8", NULL },
};

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	default:
		return "Request Header Fields Too Large"; /* 431 */
	}
}

/* The CN (UTF-8) of the certificate's subject, or "" */
static void subject_cn(X509 *cert, char *out, size_t outlen)
{
	out[0] = '\0';
	X509_NAME *name = X509_get_subject_name(cert);
	int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (i < 0)
		return;
	unsigned char *utf8 = NULL;
	int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
	if (n > 0)
		snprintf(out, outlen, "%.*s", n, (const char *)utf8);
	OPENSSL_free(utf8);
}

static void subject_text(X509 *cert, char *out, size_t outlen)
{
	out[0] = '\0';
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return;
	if (X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
		int n = BIO_read(b, out, (int)outlen - 1);
		out[n > 0 ? n : 0] = '\0';
	}
	BIO_free(b);
}

/* A UUID from the CA's fingerprint and a label: the first 16 bytes of
 * SHA-256(fingerprint || label) with the RFC 9562 version 8 (custom) and
 * variant bits. The same CA always gives the same UUIDs. */
static bool derived_uuid(const uint8_t fp[32], const char *label, char out[37])
{
	uint8_t in[32 + 64], md[EVP_MAX_MD_SIZE];
	size_t llen = strlen(label);
	unsigned mdlen = 0;
	if (llen > 64)
		return false;
	memcpy(in, fp, 32);
	memcpy(in + 32, label, llen);
	if (EVP_Digest(in, 32 + llen, md, &mdlen, EVP_sha256(), NULL) != 1)
		return false;
	md[6] = (uint8_t)((md[6] & 0x0f) | 0x80);
	md[8] = (uint8_t)((md[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X",
		 md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10],
		 md[11], md[12], md[13], md[14], md[15]);
	return true;
}

/* False when the UUIDs or the base64 could not be made; the buffer holds
 * its own errors. */
static bool build_mobileconfig(struct strbuf *b, const uint8_t *der, size_t derlen,
			       const uint8_t fp[32], const char *cn)
{
	char profile_uuid[37], root_uuid[37], id[17];
	if (!derived_uuid(fp, "wgmitm profile", profile_uuid) ||
	    !derived_uuid(fp, "wgmitm root payload", root_uuid))
		return false;
	snprintf(id, sizeof(id), "%02x%02x%02x%02x%02x%02x%02x%02x", fp[0], fp[1], fp[2], fp[3],
		 fp[4], fp[5], fp[6], fp[7]);
	size_t b64cap = 4 * ((derlen + 2) / 3) + 1;
	char *b64 = malloc(b64cap);
	if (!b64)
		return false;
	EVP_EncodeBlock((unsigned char *)b64, der, (int)derlen);
	strbuf_append_str(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			     "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
			     "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
			     "<plist version=\"1.0\">\n<dict>\n"
			     "\t<key>PayloadContent</key>\n\t<array>\n\t\t<dict>\n"
			     "\t\t\t<key>PayloadCertificateFileName</"
			     "key>\n\t\t\t<string>wgmitm-ca.cer</string>\n"
			     "\t\t\t<key>PayloadContent</key>\n\t\t\t<data>");
	strbuf_append_str(b, b64);
	strbuf_append_str(b, "</data>\n"
			     "\t\t\t<key>PayloadDescription</key>\n"
			     "\t\t\t<string>The wgmitm capture CA, as a trusted root</string>\n"
			     "\t\t\t<key>PayloadDisplayName</key>\n\t\t\t<string>");
	append_escaped(b, cn[0] ? cn : "wgmitm CA");
	strbuf_printf(
		b,
		"</string>\n"
		"\t\t\t<key>PayloadIdentifier</key>\n\t\t\t<string>internal.wgmitm.ca.%s.root</"
		"string>\n"
		"\t\t\t<key>PayloadType</key>\n\t\t\t<string>com.apple.security.root</string>\n"
		"\t\t\t<key>PayloadUUID</key>\n\t\t\t<string>%s</string>\n"
		"\t\t\t<key>PayloadVersion</key>\n\t\t\t<integer>1</integer>\n"
		"\t\t</dict>\n\t</array>\n",
		id, root_uuid);
	strbuf_printf(
		b,
		"\t<key>PayloadDescription</key>\n"
		"\t<string>Trust the wgmitm capture CA. After installing, enable it in Settings, "
		"General, About, Certificate Trust Settings.</string>\n"
		"\t<key>PayloadDisplayName</key>\n\t<string>wgmitm CA</string>\n"
		"\t<key>PayloadIdentifier</key>\n\t<string>internal.wgmitm.ca.%s</string>\n"
		"\t<key>PayloadRemovalDisallowed</key>\n\t<false/>\n"
		"\t<key>PayloadType</key>\n\t<string>Configuration</string>\n"
		"\t<key>PayloadUUID</key>\n\t<string>%s</string>\n"
		"\t<key>PayloadVersion</key>\n\t<integer>1</integer>\n"
		"</dict>\n</plist>\n",
		id, profile_uuid);
	free(b64);
	return true;
}

static void build_page(struct strbuf *b, const char *fp_text, const char *subject, const char *cn,
		       const char *until, const struct in_addr *a4, const struct in6_addr *a6)
{
	strbuf_append_str(
		b,
		"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
		"<title>wgmitm CA</title>\n<style>\n"
		"body{font:16px/1.45 system-ui,-apple-system,sans-serif;margin:0 "
		"auto;max-width:40em;"
		"padding:1em;color:#222;background:#fff}\n"
		"h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em}\n"
		"code,.fp{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}\n"
		".fp{word-break:break-all;background:#f3f3f3;padding:.4em;border-radius:4px}\n"
		".dl a{display:inline-block;margin:.25em .3em .25em 0;padding:.55em .9em;"
		"border-radius:6px;background:#1a5fb4;color:#fff;text-decoration:none}\n"
		"ol{padding-left:1.3em}li{margin:.3em 0}small{color:#555}\n"
		"@media(prefers-color-scheme:dark){body{background:#111;color:#ddd}"
		".fp{background:#222}small{color:#aaa}}\n"
		"</style></head><body>\n"
		"<h1>wgmitm CA</h1>\n"
		"<p>Traffic through this tunnel is decrypted with certificates signed by this CA. "
		"Install and trust it on this device to see HTTPS.</p>\n"
		"<p><b>Subject</b><br><span class=\"fp\">");
	append_escaped(b, subject);
	strbuf_append_str(b, "</span></p>\n<p><b>SHA-256 fingerprint</b><br><span class=\"fp\">");
	append_escaped(b, fp_text);
	strbuf_append_str(
		b, "</span><br><small>Compare it with <code>wgmitm ca show</code> on the capture "
		   "host before trusting it.");
	if (until[0]) {
		strbuf_append_str(b, " Valid until ");
		append_escaped(b, until);
		strbuf_append_str(b, ".");
	}
	strbuf_append_str(
		b,
		"</small></p>\n"
		"<p class=\"dl\"><a href=\"/ca.crt\">Android (.crt)</a>"
		"<a href=\"/ca.mobileconfig\">iPhone / iPad profile</a>"
		"<a href=\"/ca.pem\">PEM</a><a href=\"/ca.cer\">DER (.cer)</a></p>\n"
		"<h2>Android</h2>\n<ol>\n"
		"<li>Download <a href=\"/ca.crt\">wgmitm-ca.crt</a>.</li>\n"
		"<li>Settings &rarr; Security &rarr; Encryption &amp; credentials &rarr; Install a "
		"certificate &rarr; <b>CA certificate</b> &rarr; Install anyway, and pick the "
		"file. "
		"(Menus differ by maker: search Settings for &ldquo;CA certificate&rdquo;.)</li>\n"
		"</ol>\n<p><small>Since Android 7, apps trust user CAs only if they opt in "
		"(network_security_config); Chrome does, most apps do not. The system store needs "
		"root, and since Android 14 it lives in the Conscrypt APEX.</small></p>\n"
		"<h2>iPhone, iPad</h2>\n<ol>\n"
		"<li>In Safari, download the <a href=\"/ca.mobileconfig\">profile</a> and allow "
		"it.</li>\n"
		"<li>Settings &rarr; <b>Profile Downloaded</b> &rarr; Install.</li>\n"
		"<li>Settings &rarr; General &rarr; About &rarr; <b>Certificate Trust Settings</b> "
		"&rarr; enable full trust for &ldquo;");
	append_escaped(b, cn[0] ? cn : "wgmitm CA");
	strbuf_append_str(
		b,
		"&rdquo;.</li>\n</ol>\n"
		"<h2>Desktop and tools</h2>\n<ul>\n"
		"<li>curl: <code>curl --cacert wgmitm-ca.pem https://&hellip;</code></li>\n"
		"<li>Debian, Ubuntu: copy to <code>/usr/local/share/ca-certificates/wgmitm-ca.crt"
		"</code>, run <code>sudo update-ca-certificates</code></li>\n"
		"<li>macOS: <code>sudo security add-trusted-cert -d -r trustRoot -k "
		"/Library/Keychains/System.keychain wgmitm-ca.pem</code></li>\n"
		"<li>Windows: <code>certutil -addstore -f Root wgmitm-ca.cer</code></li>\n"
		"<li>Firefox: Settings &rarr; Privacy &amp; Security &rarr; Certificates &rarr; "
		"Import</li>\n"
		"<li>Python requests: <code>REQUESTS_CA_BUNDLE</code>; Node.js: "
		"<code>NODE_EXTRA_CA_CERTS</code></li>\n</ul>\n"
		"<p><small>This page is served by wgmitm inside the tunnel at "
		"http://" LOCALNAME_HOST "/");
	char text[INET6_ADDRSTRLEN];
	if (a4 && a4->s_addr != INADDR_ANY && inet_ntop(AF_INET, a4, text, sizeof(text)))
		strbuf_printf(b, ", http://%s/", text);
	if (a6 && !IN6_IS_ADDR_UNSPECIFIED(a6) && inet_ntop(AF_INET6, a6, text, sizeof(text)))
		strbuf_printf(b, ", http://[%s]/", text);
	strbuf_append_str(b, ".</small></p>\n</body></html>\n");
}

static void build_head(struct strbuf *h, int status, const char *type, const char *filename,
		       size_t body_len, bool close, bool html)
{
	strbuf_printf(h, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n", status,
		      reason(status), type, body_len);
	if (filename)
		strbuf_printf(h, "Content-Disposition: attachment; filename=\"%s\"\r\n", filename);
	if (html)
		strbuf_append_str(
			h,
			"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
			"Referrer-Policy: no-referrer\r\n");
	if (status == 405)
		strbuf_append_str(h, "Allow: GET, HEAD\r\n");
	strbuf_append_str(h, "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
	strbuf_append_str(h,
			  close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n");
}

void capage_site_free(struct capage_site *s)
{
	if (!s)
		return;
	for (int r = 0; r < RES_COUNT; r++) {
		strbuf_free(&s->body[r]);
		strbuf_free(&s->head[r][0]);
		strbuf_free(&s->head[r][1]);
	}
	for (int e = 0; e < ERR_COUNT; e++)
		strbuf_free(&s->err[e]);
	free(s);
}

struct capage_site *capage_site_new(X509 *ca, const struct in_addr *addr4,
				    const struct in6_addr *addr6)
{
	if (!ca) {
		errno = EINVAL;
		return NULL;
	}
	struct capage_site *s = calloc(1, sizeof(*s));
	if (!s) {
		errno = ENOMEM;
		return NULL;
	}
	for (int r = 0; r < RES_COUNT; r++) {
		strbuf_init(&s->body[r], 0);
		strbuf_init(&s->head[r][0], 0);
		strbuf_init(&s->head[r][1], 0);
	}
	for (int e = 0; e < ERR_COUNT; e++)
		strbuf_init(&s->err[e], 0);
	uint8_t fp[32];
	unsigned fplen = 0;
	char fp_text[CA_FINGERPRINT_LEN], subject[1024], cn[256], until[64] = "";
	uint8_t *der = NULL;
	int derlen = i2d_X509(ca, &der);
	BIO *pem = BIO_new(BIO_s_mem());
	char *pem_data = NULL;
	long pem_len = 0;
	bool ok = derlen > 0 && pem && PEM_write_bio_X509(pem, ca) == 1 &&
		  (pem_len = BIO_get_mem_data(pem, &pem_data)) > 0 &&
		  X509_digest(ca, EVP_sha256(), fp, &fplen) == 1 && fplen == 32;
	if (ok) {
		ca_fingerprint(ca, fp_text);
		subject_text(ca, subject, sizeof(subject));
		subject_cn(ca, cn, sizeof(cn));
		struct tm tm;
		if (ASN1_TIME_to_tm(X509_get0_notAfter(ca), &tm) == 1)
			strftime(until, sizeof(until), "%Y-%m-%d", &tm);

		build_page(&s->body[RES_PAGE], fp_text, subject, cn, until, addr4, addr6);
		strbuf_append(&s->body[RES_CRT], pem_data, (size_t)pem_len);
		strbuf_append(&s->body[RES_PEM], pem_data, (size_t)pem_len);
		strbuf_append(&s->body[RES_CER], (const char *)der, (size_t)derlen);
		strbuf_append(&s->body[RES_DER], (const char *)der, (size_t)derlen);
		ok = build_mobileconfig(&s->body[RES_MOBILECONFIG], der, (size_t)derlen, fp, cn);
		strbuf_append_str(&s->body[RES_NOT_FOUND],
				  "Not found. The CA is at /ca.pem; see /.\n");
		for (int r = 0; r < RES_COUNT; r++)
			for (int c = 0; c < 2; c++)
				build_head(&s->head[r][c], res_meta[r].status, res_meta[r].type,
					   res_meta[r].filename, s->body[r].len, c == 1,
					   r == RES_PAGE);
		for (int e = 0; e < ERR_COUNT; e++) {
			char body[64];
			int n = snprintf(body, sizeof(body), "%d %s\n", err_status[e],
					 reason(err_status[e]));
			build_head(&s->err[e], err_status[e], "text/plain; charset=utf-8", NULL,
				   (size_t)n, true, false);
			strbuf_append(&s->err[e], body, (size_t)n);
		}
		for (int r = 0; r < RES_COUNT; r++)
			ok = ok && !s->body[r].err && !s->head[r][0].err && !s->head[r][1].err;
		for (int e = 0; e < ERR_COUNT; e++)
			ok = ok && !s->err[e].err;
	}
	OPENSSL_free(der);
	BIO_free(pem);
	if (!ok) {
		capage_site_free(s);
		errno = ENOMEM;
		return NULL;
	}
	return s;
}

const char *capage_site_html(const struct capage_site *s, size_t *len)
{
	*len = s->body[RES_PAGE].len;
	return s->body[RES_PAGE].p;
}

void capage_site_respond(const struct capage_site *s, int method, const char *target,
			 size_t target_len, bool keep_alive, struct capage_response *out)
{
	memset(out, 0, sizeof(*out));
	if (method != HTTP_GET && method != HTTP_HEAD) {
		capage_site_error(s, 405, out);
		return;
	}
	/* Absolute form (RFC 9112 3.2.2): the path starts after the authority. */
	const char *p = target, *end = target + target_len;
	if (target_len > 7 && strncasecmp(target, "http://", 7) == 0) {
		p = memchr(target + 7, '/', target_len - 7);
		if (!p) {
			p = "/";
			end = p + 1;
		}
	}
	const char *q = memchr(p, '?', (size_t)(end - p));
	size_t plen = (size_t)((q ? q : end) - p);
	enum capage_res res = RES_NOT_FOUND;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (strlen(routes[i].path) == plen && memcmp(routes[i].path, p, plen) == 0)
			res = routes[i].res;
	const struct strbuf *h = &s->head[res][keep_alive ? 0 : 1];
	out->status = res_meta[res].status;
	out->head = (const uint8_t *)h->p;
	out->head_len = h->len;
	if (method == HTTP_GET) {
		out->body = (const uint8_t *)s->body[res].p;
		out->body_len = s->body[res].len;
	}
	out->close = !keep_alive;
}

void capage_site_error(const struct capage_site *s, int status, struct capage_response *out)
{
	int e = 0;
	while (e < ERR_COUNT - 1 && err_status[e] != status)
		e++;
	if (err_status[e] != status)
		e = ERR_400;
	memset(out, 0, sizeof(*out));
	out->status = err_status[e];
	out->head = (const uint8_t *)s->err[e].p;
	out->head_len = s->err[e].len;
	out->close = true;
}

/* ---- Connections ------------------------------------------------------- */

struct capage_conn {
	struct capage *srv;
	struct stream *conn;
	struct capage_conn *prev, *next; /* srv list, oldest activity first */
	struct tally_entry *share;       /* this connection in srv.per_peer */
	uint64_t idle_due;
	llhttp_t parser;
	char target[CAPAGE_MAX_TARGET];
	size_t target_len;
	bool target_over;
	size_t head_bytes; /* of the current request, before its headers ended */
	bool headers_done, msg_done;
	int reject;  /* set by a callback: this error, then close */
	uint8_t *in; /* client bytes not yet parsed */
	size_t in_len, in_cap;
	struct capage_response resp; /* being written; status 0: none */
	size_t resp_off;             /* bytes of head + body written */
	bool paused, eof, processing;
};

struct capage {
	uv_loop_t *loop;
	struct capage_config cfg;
	struct capage_site *site;
	struct capage_conn *first, *last;
	struct tally *per_peer; /* connections per peer, against half of max_conns */
	uint32_t peer_max;
	uv_timer_t timer;
	uint64_t timer_due;
	bool shut, freeing, timer_closed;
	struct capage_stats stats;
};

static void timer_arm(struct capage *s);

static void capage_release(struct capage *s)
{
	capage_site_free(s->site);
	tally_free(s->per_peer);
	free(s);
}

static void list_unlink(struct capage_conn *c)
{
	struct capage *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->first = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		s->last = c->prev;
	c->prev = c->next = NULL;
}

/* Activity: the connection moves to the end of the idle order. */
static void conn_touch(struct capage_conn *c)
{
	struct capage *s = c->srv;
	c->idle_due = uv_now(s->loop) + s->cfg.idle_ms;
	if (s->last != c) {
		list_unlink(c);
		c->prev = s->last;
		if (s->last)
			s->last->next = c;
		else
			s->first = c;
		s->last = c;
	}
	timer_arm(s);
}

static void conn_forget(struct capage_conn *c)
{
	struct capage *s = c->srv;
	list_unlink(c);
	tally_give(s->per_peer, c->share);
	s->stats.conns_active--;
	free(c->in);
	free(c);
}

static void conn_close(struct capage_conn *c)
{
	stream_close(c->conn);
	conn_forget(c);
}

/* ---- llhttp callbacks ---- */

static int on_message_begin(llhttp_t *p)
{
	struct capage_conn *c = p->data;
	c->target_len = 0;
	c->target_over = false;
	c->headers_done = false;
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct capage_conn *c = p->data;
	if (c->target_over || len > sizeof(c->target) - c->target_len) {
		c->target_over = true;
		return 0;
	}
	memcpy(c->target + c->target_len, at, len);
	c->target_len += len;
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct capage_conn *c = p->data;
	c->headers_done = true;
	if (p->method != HTTP_GET && p->method != HTTP_HEAD)
		c->reject = 405;
	else if (c->target_over)
		c->reject = 414;
	else if ((p->flags & (F_CHUNKED | F_TRANSFER_ENCODING)) ||
		 ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0))
		c->reject = 413; /* nothing here takes a body */
	return c->reject ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct capage_conn *c = p->data;
	c->msg_done = true;
	return HPE_PAUSED; /* one response at a time */
}

static const llhttp_settings_t parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_headers_complete = on_headers_complete,
	.on_message_complete = on_message_complete,
};

/* Counted by resource: the response's head says which it is. */
static void count_response(struct capage *s, const struct capage_response *r)
{
	s->stats.requests++;
	int res = RES_COUNT;
	for (int i = 0; i < RES_COUNT && res == RES_COUNT; i++)
		if (r->head == (const uint8_t *)s->site->head[i][0].p ||
		    r->head == (const uint8_t *)s->site->head[i][1].p)
			res = i;
	switch (res) {
	case RES_PAGE:
		s->stats.page++;
		break;
	case RES_CRT:
	case RES_PEM:
		s->stats.pem++;
		break;
	case RES_CER:
	case RES_DER:
		s->stats.der++;
		break;
	case RES_MOBILECONFIG:
		s->stats.mobileconfig++;
		break;
	case RES_NOT_FOUND:
		s->stats.not_found++;
		break;
	default:
		s->stats.rejected++;
	}
}

static void conn_reject(struct capage_conn *c, int status)
{
	capage_site_error(c->srv->site, status, &c->resp);
	c->resp_off = 0;
	c->in_len = 0; /* nothing after a rejected request is read */
	count_response(c->srv, &c->resp);
}

/* Parses what is buffered until one request is complete (a response is
 * then pending), the head bound is hit, or the bytes run out. */
static void conn_parse(struct capage_conn *c)
{
	size_t budget = c->in_len;
	if (!c->headers_done) {
		size_t room = CAPAGE_MAX_HEAD - c->head_bytes;
		if (room == 0) {
			conn_reject(c, 431);
			return;
		}
		if (budget > room)
			budget = room;
	}
	c->msg_done = false;
	bool head_before = c->headers_done;
	llhttp_errno_t e = llhttp_execute(&c->parser, (const char *)c->in, budget);
	size_t used = budget;
	if (e == HPE_PAUSED) {
		used = (size_t)((const uint8_t *)llhttp_get_error_pos(&c->parser) - c->in);
		llhttp_resume(&c->parser);
	} else if (e != HPE_OK) {
		conn_reject(c, c->reject ? c->reject : 400);
		return;
	}
	memmove(c->in, c->in + used, c->in_len - used);
	c->in_len -= used;
	if (c->msg_done) {
		struct capage *s = c->srv;
		bool keep = llhttp_should_keep_alive(&c->parser) && !c->parser.upgrade && !s->shut;
		capage_site_respond(s->site, c->parser.method, c->target, c->target_len, keep,
				    &c->resp);
		c->resp_off = 0;
		count_response(s, &c->resp);
		c->head_bytes = 0;
		c->headers_done = false;
		return;
	}
	if (!head_before && !c->headers_done)
		c->head_bytes += used;
}

/* Hands the pending response to the netstack as far as it takes it.
 * Returns true when all of it was taken. */
static bool conn_flush(struct capage_conn *c)
{
	struct capage_response *r = &c->resp;
	size_t total = r->head_len + r->body_len;
	while (c->resp_off < total) {
		bool in_head = c->resp_off < r->head_len;
		const uint8_t *src =
			in_head ? r->head + c->resp_off : r->body + (c->resp_off - r->head_len);
		size_t left = in_head ? r->head_len - c->resp_off : total - c->resp_off;
		if (stream_writable(c->conn) == 0)
			return false; /* ops.sent calls again */
		size_t n = stream_write(c->conn, src, left);
		c->resp_off += n;
		c->srv->stats.bytes_sent += n;
		if (n < left)
			return false;
	}
	return true;
}

/* Writes, parses and reads in turn until it must wait for the client. */
static void conn_process(struct capage_conn *c)
{
	if (c->processing)
		return; /* a resume below delivered data: the loop sees it */
	c->processing = true;
	for (;;) {
		if (c->resp.status) {
			if (!conn_flush(c))
				break;
			bool close = c->resp.close;
			memset(&c->resp, 0, sizeof(c->resp));
			if (close) {
				conn_close(c);
				return;
			}
			continue;
		}
		if (c->in_len > 0) {
			/* Always progress: a request, the whole buffer, or the
			 * head bound (431 on the next call). */
			conn_parse(c);
			continue;
		}
		if (c->eof) {
			conn_close(c); /* the client is done and so are we */
			return;
		}
		if (c->paused) {
			c->paused = false;
			stream_resume(c->conn); /* may deliver: tcp_recv appends */
			if (c->in_len > 0 || c->eof)
				continue;
		}
		break;
	}
	c->processing = false;
	/* A response waits for the client: hold its further requests. */
	if (c->resp.status && !c->paused) {
		c->paused = true;
		stream_pause(c->conn);
	}
}

static void tcp_recv(void *arg, const uint8_t *data, size_t len)
{
	struct capage_conn *c = arg;
	conn_touch(c);
	if (len == 0) {
		c->eof = true;
	} else if (c->resp.status && c->resp.close) {
		return; /* after a final response: discarded */
	} else {
		if (c->in_len + len > CAPAGE_IN_CAP) {
			/* Only when delivered despite a pause (the close drain)
			 * or pipelined far ahead: not worth keeping. */
			stream_abort(c->conn);
			conn_forget(c);
			return;
		}
		if (c->in_len + len > c->in_cap) {
			size_t cap = c->in_cap ? c->in_cap : 2048;
			while (cap < c->in_len + len)
				cap *= 2;
			uint8_t *n = realloc(c->in, cap);
			if (!n) {
				stream_abort(c->conn);
				conn_forget(c);
				return;
			}
			c->in = n;
			c->in_cap = cap;
		}
		memcpy(c->in + c->in_len, data, len);
		c->in_len += len;
	}
	if (c->processing) {
		/* Delivered by our own resume: one chunk at a time, the loop
		 * in conn_process parses it. */
		if (!c->paused) {
			c->paused = true;
			stream_pause(c->conn);
		}
		return;
	}
	conn_process(c);
}

static void tcp_sent(void *arg, size_t len)
{
	struct capage_conn *c = arg;
	(void)len;
	if (!c->resp.status)
		return;
	conn_touch(c);
	conn_process(c);
}

static void tcp_closed(void *arg, int err)
{
	(void)err;
	conn_forget(arg);
}

int capage_tcp_accept(void *ctx, struct stream *conn, const struct sockaddr *client,
		      const struct sockaddr *dest)
{
	struct capage *s = ctx;
	(void)dest;
	if (s->shut || s->stats.conns_active >= s->cfg.max_conns) {
		s->stats.conns_refused++;
		return -1;
	}
	/* A phone opens a handful; one peer cannot hold every slot. */
	const char *peer = s->cfg.peer_name ? s->cfg.peer_name(s->cfg.peer_ctx, client) : NULL;
	struct tally_entry *share = tally_take(s->per_peer, peer, s->peer_max);
	if (!share) {
		s->stats.conns_refused_peer++;
		return -1;
	}
	struct capage_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		tally_give(s->per_peer, share);
		s->stats.conns_refused++;
		return -1;
	}
	c->share = share;
	c->srv = s;
	c->conn = conn;
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
	s->stats.conns_accepted++;
	s->stats.conns_active++;
	static const struct stream_cb ops = {
		.recv = tcp_recv,
		.sent = tcp_sent,
		.closed = tcp_closed,
	};
	stream_set_cb(conn, &ops, c);
	/* Linked at the end by its first touch. */
	c->prev = s->last;
	if (s->last)
		s->last->next = c;
	else
		s->first = c;
	s->last = c;
	conn_touch(c);
	return 0;
}

/* ---- Idle timer, setup, teardown ------------------------------------------ */

static void on_timer(uv_timer_t *t)
{
	struct capage *s = t->data;
	s->timer_due = UINT64_MAX;
	uint64_t now = uv_now(s->loop);
	while (s->first && s->first->idle_due <= now) {
		s->stats.conns_idle++;
		conn_close(s->first);
	}
	timer_arm(s);
}

/* The list is in idle order: the first connection is due first. */
static void timer_arm(struct capage *s)
{
	if (s->shut || !s->first)
		return;
	uint64_t due = s->first->idle_due;
	if (due >= s->timer_due)
		return;
	uint64_t now = uv_now(s->loop);
	s->timer_due = due;
	uv_timer_start(&s->timer, on_timer, due > now ? due - now : 0, 0);
}

struct capage *capage_new(uv_loop_t *loop, const struct capage_config *cfg)
{
	if (!loop || !cfg || !cfg->ca) {
		errno = EINVAL;
		return NULL;
	}
	struct capage *s = calloc(1, sizeof(*s));
	if (!s) {
		errno = ENOMEM;
		return NULL;
	}
	s->loop = loop;
	s->cfg = *cfg;
	s->cfg.ca = NULL; /* borrowed only here */
	if (!s->cfg.max_conns)
		s->cfg.max_conns = CAPAGE_DEFAULT_MAX_CONNS;
	if (!s->cfg.idle_ms)
		s->cfg.idle_ms = CAPAGE_IDLE_MS;
	s->peer_max = s->cfg.max_conns > 1 ? (uint32_t)(s->cfg.max_conns / 2) : 1;
	s->site = capage_site_new(cfg->ca, &cfg->addr4, &cfg->addr6);
	s->per_peer = tally_new();
	if (!s->site || !s->per_peer) {
		int err = s->site ? ENOMEM : errno;
		capage_release(s);
		errno = err;
		return NULL;
	}
	s->timer_due = UINT64_MAX;
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	return s;
}

void capage_get_stats(const struct capage *c, struct capage_stats *out)
{
	*out = c->stats;
}

static void timer_closed(uv_handle_t *h)
{
	struct capage *s = h->data;
	s->timer_closed = true;
	if (s->freeing)
		capage_release(s);
}

void capage_shutdown(struct capage *s)
{
	if (s->shut)
		return;
	s->shut = true;
	while (s->first) {
		struct capage_conn *c = s->first;
		stream_abort(c->conn);
		conn_forget(c);
	}
	uv_close((uv_handle_t *)&s->timer, timer_closed);
}

void capage_free(struct capage *s)
{
	if (!s)
		return;
	capage_shutdown(s);
	s->freeing = true;
	if (s->timer_closed)
		capage_release(s);
}
