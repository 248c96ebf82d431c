/* The CA install page.
 *
 * First the responses alone (capage_site_respond): every path's status,
 * headers and body; the PEM and DER parse with OpenSSL and are the CA; the
 * iOS profile is well-formed XML holding the DER in base64 with UUIDs that
 * depend only on the CA.
 *
 * Then the server over a real in-process netstack connection:
 *
 *   netstack_client.h ──segments──► netstack (lwIP) ──stream──► capage
 *   10.77.0.2:4xxxx                  dialled 10.77.0.1:80
 *
 * keep-alive, pipelining past the send buffer, HEAD, Connection: close,
 * HTTP/1.0, bodies refused (413), the head bound (431), idle close. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "netstack_client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <llhttp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mitm/ca.h"
#include "mitm/capage.h"
#include "netstack/netstack.h"

#define TUN4 "10.77.0.1"
#define PEER4 "10.77.0.2"
#define TUN6 "fd77::1"
#define PEER6 "fd77::2"

/* ---- Response helpers ------------------------------------------------------ */

/* The value of header `name` in a response head (a copy), or NULL. */
static char *header(const uint8_t *head, size_t len, const char *name)
{
	static char val[512];
	size_t nlen = strlen(name);
	const char *p = (const char *)head, *end = p + len;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			break;
		if ((size_t)(eol - p) > nlen + 1 && strncasecmp(p, name, nlen) == 0 &&
		    p[nlen] == ':') {
			const char *v = p + nlen + 1;
			while (*v == ' ')
				v++;
			size_t vlen = (size_t)(eol - v);
			if (vlen && v[vlen - 1] == '\r')
				vlen--;
			assert_true(vlen < sizeof(val));
			memcpy(val, v, vlen);
			val[vlen] = '\0';
			return val;
		}
		p = eol + 1;
	}
	return NULL;
}

static int status_of(const uint8_t *head, size_t len)
{
	assert_true(len > 12);
	assert_memory_equal(head, "HTTP/1.1 ", 9);
	return atoi((const char *)head + 9);
}

static void respond(const struct capage_site *s, int method, const char *target, bool keep,
		    struct capage_response *r)
{
	capage_site_respond(s, method, target, strlen(target), keep, r);
	assert_int_equal(status_of(r->head, r->head_len), r->status);
	assert_memory_equal(r->head + r->head_len - 4, "\r\n\r\n", 4);
	if (method == HTTP_GET) {
		char *cl = header(r->head, r->head_len, "Content-Length");
		assert_non_null(cl);
		assert_int_equal(strtoul(cl, NULL, 10), r->body_len);
	} else {
		assert_null(r->body);
		assert_int_equal(r->body_len, 0);
	}
}

/* A minimal XML well-formedness check: declaration, doctype, balanced
 * elements, no stray '<' or '&' in text. */
static void assert_wellformed_xml(const char *x, size_t len)
{
	const char *stack[32];
	size_t stack_len[32];
	int depth = 0, roots = 0;
	const char *p = x, *end = x + len;
	while (p < end) {
		if (*p == '&') {
			assert_true(strncmp(p, "&amp;", 5) == 0 || strncmp(p, "&lt;", 4) == 0 ||
				    strncmp(p, "&gt;", 4) == 0 || strncmp(p, "&quot;", 6) == 0 ||
				    strncmp(p, "&#39;", 5) == 0);
			p++;
			continue;
		}
		if (*p != '<') {
			p++;
			continue;
		}
		const char *gt = memchr(p, '>', (size_t)(end - p));
		assert_non_null(gt);
		assert_null(memchr(p + 1, '<', (size_t)(gt - p - 1)));
		if (p[1] == '?' || p[1] == '!') {
			assert_int_equal(depth, 0);
		} else if (p[1] == '/') {
			assert_true(depth > 0);
			depth--;
			assert_int_equal((size_t)(gt - p - 2), stack_len[depth]);
			assert_memory_equal(p + 2, stack[depth], stack_len[depth]);
		} else if (gt[-1] != '/') {
			size_t n = 0;
			while (p + 1 + n < gt && !isspace((unsigned char)p[1 + n]))
				n++;
			assert_true(depth < 32);
			if (depth == 0)
				roots++;
			stack[depth] = p + 1;
			stack_len[depth++] = n;
		}
		p = gt + 1;
	}
	assert_int_equal(depth, 0);
	assert_int_equal(roots, 1);
}

/* The <string> after <key>NAME</key> at the profile's top level (the last
 * one in the document: the payload's own keys come first). */
static void plist_string(const char *x, const char *key, char *out, size_t outlen)
{
	char k[128];
	snprintf(k, sizeof(k), "<key>%s</key>", key);
	const char *p = NULL, *q = x;
	while ((q = strstr(q, k)) != NULL)
		p = q++;
	assert_non_null(p);
	p = strstr(p, "<string>");
	assert_non_null(p);
	p += 8;
	const char *e = strstr(p, "</string>");
	assert_non_null(e);
	assert_true((size_t)(e - p) < outlen);
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = '\0';
}

struct ca_pair {
	X509 *cert;
	EVP_PKEY *key;
};

static void make_ca(struct ca_pair *ca)
{
	char err[512];
	assert_int_equal(ca_generate(&ca->cert, &ca->key, err, sizeof(err)), 0);
}

static void free_ca(struct ca_pair *ca)
{
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
}

static struct capage_site *site_for(X509 *cert)
{
	struct in_addr a4;
	struct in6_addr a6;
	assert_int_equal(inet_pton(AF_INET, TUN4, &a4), 1);
	assert_int_equal(inet_pton(AF_INET6, TUN6, &a6), 1);
	struct capage_site *s = capage_site_new(cert, &a4, &a6);
	assert_non_null(s);
	return s;
}

static void test_page(void **ctx)
{
	(void)ctx;
	struct ca_pair ca;
	make_ca(&ca);
	struct capage_site *s = site_for(ca.cert);
	struct capage_response r;
	respond(s, HTTP_GET, "/", true, &r);
	assert_int_equal(r.status, 200);
	assert_false(r.close);
	assert_string_equal(header(r.head, r.head_len, "Content-Type"), "text/html; charset=utf-8");
	assert_string_equal(header(r.head, r.head_len, "Connection"), "keep-alive");
	assert_non_null(strstr(header(r.head, r.head_len, "Content-Security-Policy"),
			       "default-src 'none'"));
	assert_null(header(r.head, r.head_len, "Content-Disposition"));
	size_t hlen;
	const char *html = capage_site_html(s, &hlen);
	assert_int_equal(hlen, r.body_len);
	assert_memory_equal(html, r.body, hlen);
	char fp[CA_FINGERPRINT_LEN];
	ca_fingerprint(ca.cert, fp);
	assert_non_null(strstr(html, fp));
	char cn[256];
	X509_NAME_get_text_by_NID(X509_get_subject_name(ca.cert), NID_commonName, cn, sizeof(cn));
	assert_non_null(strstr(html, cn));
	assert_non_null(strstr(html, "name=\"viewport\""));
	assert_non_null(strstr(html, "Encryption &amp; credentials"));
	assert_non_null(strstr(html, "Certificate Trust Settings"));
	assert_non_null(strstr(html, "network_security_config"));
	assert_non_null(strstr(html, "Conscrypt"));
	assert_non_null(strstr(html, "href=\"/ca.mobileconfig\""));
	assert_non_null(strstr(html, "href=\"/ca.crt\""));
	assert_non_null(strstr(html, "http://wgmitm.internal/"));
	assert_non_null(strstr(html, "http://" TUN4 "/"));
	assert_non_null(strstr(html, "http://[" TUN6 "]/"));
	/* Nothing loaded from elsewhere. */
	assert_null(strstr(html, "src="));
	assert_null(strstr(html, "<link"));
	assert_true(hlen < 16 * 1024);
	respond(s, HTTP_GET, "/index.html?from=qr", false, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.close);
	assert_string_equal(header(r.head, r.head_len, "Connection"), "close");
	capage_site_free(s);
	free_ca(&ca);
}

static void test_certificates(void **ctx)
{
	(void)ctx;
	struct ca_pair ca;
	make_ca(&ca);
	struct capage_site *s = site_for(ca.cert);
	static const struct {
		const char *path, *type, *file;
		bool der;
	} cases[] = {
		{ "/ca.crt", "application/x-x509-ca-cert", "wgmitm-ca.crt", false },
		{ "/ca.pem", "application/x-x509-ca-cert", "wgmitm-ca.pem", false },
		{ "/ca.cer", "application/pkix-cert", "wgmitm-ca.cer", true },
		{ "/ca.der", "application/pkix-cert", "wgmitm-ca.der", true },
		{ "http://wgmitm.internal/ca.der", "application/pkix-cert", "wgmitm-ca.der", true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct capage_response r;
		respond(s, HTTP_GET, cases[i].path, true, &r);
		assert_int_equal(r.status, 200);
		assert_string_equal(header(r.head, r.head_len, "Content-Type"), cases[i].type);
		char want[128];
		snprintf(want, sizeof(want), "attachment; filename=\"%s\"", cases[i].file);
		assert_string_equal(header(r.head, r.head_len, "Content-Disposition"), want);
		X509 *got;
		if (cases[i].der) {
			const unsigned char *p = r.body;
			got = d2i_X509(NULL, &p, (long)r.body_len);
			assert_ptr_equal(p, r.body + r.body_len);
		} else {
			assert_memory_equal(r.body, "-----BEGIN CERTIFICATE-----\n", 28);
			BIO *b = BIO_new_mem_buf(r.body, (int)r.body_len);
			got = PEM_read_bio_X509(b, NULL, NULL, NULL);
			BIO_free(b);
		}
		assert_non_null(got);
		assert_int_equal(X509_cmp(got, ca.cert), 0);
		X509_free(got);

		/* HEAD: the same head, no body. */
		struct capage_response h;
		respond(s, HTTP_HEAD, cases[i].path, true, &h);
		assert_ptr_equal(h.head, r.head);
		assert_int_equal(h.head_len, r.head_len);
	}
	capage_site_free(s);
	free_ca(&ca);
}

static void test_mobileconfig(void **ctx)
{
	(void)ctx;
	struct ca_pair ca, other;
	make_ca(&ca);
	make_ca(&other);
	struct capage_site *s = site_for(ca.cert), *again = site_for(ca.cert),
			   *s2 = site_for(other.cert);
	struct capage_response r, r2, r3;
	respond(s, HTTP_GET, "/ca.mobileconfig", true, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(header(r.head, r.head_len, "Content-Type"),
			    "application/x-apple-aspen-config");
	assert_string_equal(header(r.head, r.head_len, "Content-Disposition"),
			    "attachment; filename=\"wgmitm-ca.mobileconfig\"");
	char *x = strndup((const char *)r.body, r.body_len);
	assert_wellformed_xml(x, r.body_len);
	assert_non_null(strstr(x, "<!DOCTYPE plist"));
	assert_non_null(strstr(x, "<string>com.apple.security.root</string>"));
	assert_non_null(strstr(x, "<key>PayloadType</key>\n\t<string>Configuration</string>"));
	assert_non_null(strstr(x, "<key>PayloadDisplayName</key>\n\t<string>wgmitm CA</string>"));
	assert_non_null(strstr(x, "<key>PayloadVersion</key>\n\t<integer>1</integer>\n</dict>"));
	/* Exactly one payload, holding the DER. */
	const char *first = strstr(x, "com.apple.security.root");
	assert_null(strstr(first + 1, "com.apple.security.root"));
	uint8_t *der = NULL;
	int derlen = i2d_X509(ca.cert, &der);
	assert_true(derlen > 0);
	char *b64 = malloc((size_t)(4 * ((derlen + 2) / 3) + 1));
	EVP_EncodeBlock((unsigned char *)b64, der, derlen);
	size_t blen = strlen(b64);
	char *data = malloc(blen + 16);
	memcpy(data, "<data>", 6);
	memcpy(data + 6, b64, blen);
	memcpy(data + 6 + blen, "</data>", 8);
	assert_non_null(strstr(x, data));
	free(data);
	free(b64);
	OPENSSL_free(der);

	/* UUIDs: well-formed, distinct, derived from the CA alone. */
	char uuid[64], id[128];
	plist_string(x, "PayloadUUID", uuid, sizeof(uuid));
	plist_string(x, "PayloadIdentifier", id, sizeof(id));
	assert_int_equal(strlen(uuid), 36);
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			assert_int_equal(uuid[i], '-');
		else
			assert_true(isxdigit((unsigned char)uuid[i]));
	}
	assert_int_equal(uuid[14], '8'); /* RFC 9562 version 8 */
	assert_non_null(strchr("89AB", uuid[19]));
	assert_memory_equal(id, "internal.wgmitm.ca.", 19);
	/* The root payload's own UUID (the first one) differs from the profile's. */
	const char *inner = strstr(x, "<key>PayloadUUID</key>");
	assert_non_null(inner);
	inner = strstr(inner, "<string>") + 8;
	assert_int_equal(strncmp(inner, uuid, 36) != 0, 1);
	assert_int_equal(inner[36], '<');
	respond(again, HTTP_GET, "/ca.mobileconfig", true, &r2);
	assert_int_equal(r2.body_len, r.body_len);
	assert_memory_equal(r2.body, r.body, r.body_len);
	respond(s2, HTTP_GET, "/ca.mobileconfig", true, &r3);
	char *x3 = strndup((const char *)r3.body, r3.body_len);
	char uuid3[64], id3[128];
	plist_string(x3, "PayloadUUID", uuid3, sizeof(uuid3));
	plist_string(x3, "PayloadIdentifier", id3, sizeof(id3));
	assert_string_not_equal(uuid, uuid3);
	assert_string_not_equal(id, id3);
	free(x3);
	free(x);
	capage_site_free(s);
	capage_site_free(again);
	capage_site_free(s2);
	free_ca(&ca);
	free_ca(&other);
}

static void test_errors(void **ctx)
{
	(void)ctx;
	struct ca_pair ca;
	make_ca(&ca);
	struct capage_site *s = site_for(ca.cert);
	struct capage_response r;
	static const char *missing[] = { "/favicon.ico", "/ca.pem/", "/CA.PEM", "/ca.pem.bak", "" };
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		respond(s, HTTP_GET, missing[i], true, &r);
		assert_int_equal(r.status, 404);
		assert_false(r.close);
		assert_string_equal(header(r.head, r.head_len, "Connection"), "keep-alive");
	}
	respond(s, HTTP_HEAD, "/nothing", false, &r);
	assert_int_equal(r.status, 404);
	assert_true(r.close);
	capage_site_respond(s, HTTP_POST, "/ca.pem", 7, true, &r);
	assert_int_equal(r.status, 405);
	assert_true(r.close);
	assert_string_equal(header(r.head, r.head_len, "Allow"), "GET, HEAD");
	static const int errs[] = { 400, 405, 413, 414, 431 };
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		capage_site_error(s, errs[i], &r);
		assert_int_equal(r.status, errs[i]);
		assert_int_equal(status_of(r.head, r.head_len), errs[i]);
		assert_true(r.close);
		assert_string_equal(header(r.head, r.head_len, "Connection"), "close");
	}
	assert_null(capage_site_new(NULL, NULL, NULL));
	capage_site_free(s);
	free_ca(&ca);
}

/* ---- Over a netstack connection ------------------------------------------- */

struct fixture {
	uv_loop_t loop;
	struct nsc net;
	struct capage *page;
	struct ca_pair ca;
};

static int on_accept(void *ctx, struct netstack_tcp *conn, const struct sockaddr *client,
		     const struct sockaddr *dest)
{
	struct fixture *f = ctx;
	assert_int_equal(ntohs(((const struct sockaddr_in *)dest)->sin_port), CAPAGE_PORT);
	return capage_tcp_accept(f->page, netstack_tcp_stream(conn), client, dest);
}

/* Three peers, by client port modulo 3, so one address stands for several. */
static const char *peer_of(void *ctx, const struct sockaddr *client)
{
	static const char *names[3] = { "phone", "tablet", "laptop" };
	(void)ctx;
	return names[ntohs(((const struct sockaddr_in *)client)->sin_port) % 3];
}

static void fixture_init(struct fixture *f, uint32_t idle_ms)
{
	memset(f, 0, sizeof(*f));
	assert_int_equal(uv_loop_init(&f->loop), 0);
	make_ca(&f->ca);
	struct nsc_config nc = { .net.mtu = 1420,
				 .peer4 = PEER4,
				 .dport = CAPAGE_PORT,
				 .tcp_accept = on_accept,
				 .tcp_accept_ctx = f };
	assert_int_equal(inet_pton(AF_INET, TUN4, &nc.net.addr4), 1);
	assert_int_equal(inet_pton(AF_INET6, TUN6, &nc.net.addr6), 1);
	nsc_init(&f->net, &f->loop, &nc);
	struct capage_config cc = { .ca = f->ca.cert,
				    .addr4 = nc.net.addr4,
				    .addr6 = nc.net.addr6,
				    .idle_ms = idle_ms,
				    .max_conns = 4,
				    .peer_name = peer_of };
	f->page = capage_new(&f->loop, &cc);
	assert_non_null(f->page);
}

static void fixture_free(struct fixture *f)
{
	capage_free(f->page);
	nsc_free(&f->net);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	free_ca(&f->ca);
}

/* Responses parsed from the client's received bytes. */
struct parsed {
	int status[400];
	size_t body_off[400], body_len[400];
	int n;
	size_t used;
};

/* Splits rx into responses; `head_only` marks which were to HEAD. */
static void parse_responses(const struct nsc_client *c, const bool *head_only, struct parsed *out)
{
	memset(out, 0, sizeof(*out));
	size_t off = 0;
	while (off < c->rxlen && out->n < 400) {
		const uint8_t *p = c->rx + off;
		const uint8_t *e = memmem(p, c->rxlen - off, "\r\n\r\n", 4);
		if (!e)
			break;
		size_t hlen = (size_t)(e - p) + 4;
		char *cl = header(p, hlen, "Content-Length");
		assert_non_null(cl);
		size_t blen = strtoul(cl, NULL, 10);
		if (head_only && head_only[out->n])
			blen = 0;
		if (off + hlen + blen > c->rxlen)
			break;
		out->status[out->n] = status_of(p, hlen);
		out->body_off[out->n] = off + hlen;
		out->body_len[out->n] = blen;
		out->n++;
		off += hlen + blen;
	}
	out->used = off;
}

struct want {
	struct nsc_client *c;
	int n;
};

static bool got_responses(void *arg)
{
	struct want *w = arg;
	struct parsed *p = malloc(sizeof(*p));
	parse_responses(w->c, NULL, p);
	bool ok = p->n >= w->n;
	free(p);
	return ok;
}

static void ca_pem(X509 *cert, char **pem, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_X509(b, cert), 1);
	char *d;
	long n = BIO_get_mem_data(b, &d);
	*pem = malloc((size_t)n);
	memcpy(*pem, d, (size_t)n);
	*len = (size_t)n;
	BIO_free(b);
}

static void test_conn_keepalive(void **ctx)
{
	(void)ctx;
	struct fixture f;
	fixture_init(&f, 0);
	struct nsc_client *c = nsc_client_new(&f.net, 40001);
	nsc_client_connect(&f.net, c);
	const char *req1 = "GET /ca.pem HTTP/1.1\r\nHost: wgmitm.internal\r\n\r\n";
	nsc_client_write(&f.net, c, req1, strlen(req1));
	struct want w = { c, 1 };
	assert_true(nsc_run_until(&f.net, got_responses, &w, 2000));
	/* The second request on the same connection, after the first answer. */
	const char *req2 = "HEAD /ca.der HTTP/1.1\r\nHost: wgmitm.internal\r\n\r\n";
	nsc_client_write(&f.net, c, req2, strlen(req2));
	const char *req3 = "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n";
	nsc_client_write(&f.net, c, req3, strlen(req3));
	const char *req4 = "GET /ca.der HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	nsc_client_write(&f.net, c, req4, strlen(req4));
	assert_true(nsc_run_until(&f.net, nsc_got_fin, c, 2000));
	bool head_only[4] = { false, true, false, false };
	struct parsed p;
	parse_responses(c, head_only, &p);
	assert_int_equal(p.n, 4);
	assert_int_equal(p.used, c->rxlen);
	assert_int_equal(p.status[0], 200);
	char *pem;
	size_t pem_len;
	ca_pem(f.ca.cert, &pem, &pem_len);
	assert_int_equal(p.body_len[0], pem_len);
	assert_memory_equal(c->rx + p.body_off[0], pem, pem_len);
	free(pem);
	assert_int_equal(p.status[1], 200);
	assert_int_equal(p.body_len[1], 0);
	assert_int_equal(p.status[2], 404);
	assert_int_equal(p.status[3], 200);
	const unsigned char *d = c->rx + p.body_off[3];
	X509 *got = d2i_X509(NULL, &d, (long)p.body_len[3]);
	assert_non_null(got);
	assert_int_equal(X509_cmp(got, f.ca.cert), 0);
	X509_free(got);
	assert_int_equal(c->rsts, 0);
	struct capage_stats st;
	capage_get_stats(f.page, &st);
	assert_int_equal(st.requests, 4);
	assert_int_equal(st.pem, 1);
	assert_int_equal(st.der, 2);
	assert_int_equal(st.not_found, 1);
	assert_int_equal(st.conns_active, 0);
	fixture_free(&f);
}

/* 390 pipelined requests: about 1.5 MB of answers, more than the 1 MiB
 * send buffer, so writing waits for ops.sent; all arrive, in order. */
static void test_conn_pipelined(void **ctx)
{
	(void)ctx;
	struct fixture f;
	fixture_init(&f, 0);
	struct nsc_client *c = nsc_client_new(&f.net, 40002);
	nsc_client_connect(&f.net, c);
	enum { N = 390 };
	char *reqs = malloc(N * 64);
	size_t len = 0;
	for (int i = 0; i < N; i++)
		len += (size_t)sprintf(reqs + len, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n",
				       i % 3 == 2 ? "/ca.mobileconfig" : "/");
	nsc_client_write(&f.net, c, reqs, len);
	free(reqs);
	struct want w = { c, N };
	assert_true(nsc_run_until(&f.net, got_responses, &w, 10000));
	struct parsed *p = malloc(sizeof(*p));
	parse_responses(c, NULL, p);
	assert_int_equal(p->n, N);
	assert_int_equal(p->used, c->rxlen);
	size_t html_len;
	const char *html = NULL;
	for (int i = 0; i < N; i++) {
		assert_int_equal(p->status[i], 200);
		const char *body = (const char *)c->rx + p->body_off[i];
		if (i % 3 == 2) {
			assert_memory_equal(body, "<?xml", 5);
		} else {
			if (!html) {
				html = body;
				html_len = p->body_len[i];
				assert_true(html_len > 3000);
			}
			assert_int_equal(p->body_len[i], html_len);
			assert_memory_equal(body, html, html_len);
		}
	}
	assert_true(c->rxlen > 1024 * 1024);
	assert_int_equal(c->fins, 0);
	free(p);
	struct capage_stats st;
	capage_get_stats(f.page, &st);
	assert_int_equal(st.page, 260);
	assert_int_equal(st.mobileconfig, 130);
	assert_int_equal(st.bytes_sent, c->rxlen);
	fixture_free(&f);
}

static void test_conn_rejects(void **ctx)
{
	(void)ctx;
	struct fixture f;
	fixture_init(&f, 0);

	/* A head over 16 KiB: 431, then the connection closes. */
	struct nsc_client *c = nsc_client_new(&f.net, 40003);
	nsc_client_connect(&f.net, c);
	char *big = malloc(20000);
	size_t n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: a\r\nX-Fill: ");
	memset(big + n, 'a', 17000);
	n += 17000;
	n += (size_t)sprintf(big + n, "\r\n\r\n");
	nsc_client_write(&f.net, c, big, n);
	free(big);
	assert_true(nsc_run_until(&f.net, nsc_got_fin, c, 2000));
	struct parsed p;
	parse_responses(c, NULL, &p);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.status[0], 431);

	/* A body: 413. */
	c = nsc_client_new(&f.net, 40004);
	nsc_client_connect(&f.net, c);
	const char *post = "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
	nsc_client_write(&f.net, c, post, strlen(post));
	assert_true(nsc_run_until(&f.net, nsc_got_fin, c, 2000));
	parse_responses(c, NULL, &p);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.status[0], 413);

	/* Another method: 405; garbage: 400. */
	c = nsc_client_new(&f.net, 40005);
	nsc_client_connect(&f.net, c);
	const char *put = "PUT /ca.pem HTTP/1.1\r\nHost: a\r\n\r\n";
	nsc_client_write(&f.net, c, put, strlen(put));
	assert_true(nsc_run_until(&f.net, nsc_got_fin, c, 2000));
	parse_responses(c, NULL, &p);
	assert_int_equal(p.status[0], 405);
	c = nsc_client_new(&f.net, 40006);
	nsc_client_connect(&f.net, c);
	nsc_client_write(&f.net, c, "\x16\x03\x01\x02\x00\x01", 6); /* a TLS hello on port 80 */
	assert_true(nsc_run_until(&f.net, nsc_got_fin, c, 2000));
	parse_responses(c, NULL, &p);
	assert_int_equal(p.status[0], 400);

	/* HTTP/1.0 without keep-alive: one answer, then FIN. */
	c = nsc_client_new(&f.net, 40007);
	nsc_client_connect(&f.net, c);
	const char *old = "GET /ca.crt HTTP/1.0\r\n\r\n";
	nsc_client_write(&f.net, c, old, strlen(old));
	assert_true(nsc_run_until(&f.net, nsc_got_fin, c, 2000));
	parse_responses(c, NULL, &p);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.status[0], 200);
	assert_non_null(strstr(header(c->rx, p.body_off[0], "Connection"), "close"));

	struct capage_stats st;
	capage_get_stats(f.page, &st);
	assert_int_equal(st.rejected, 4);
	assert_int_equal(st.pem, 1);
	assert_int_equal(st.conns_active, 0);
	fixture_free(&f);
}

static void test_conn_idle(void **ctx)
{
	(void)ctx;
	struct fixture f;
	fixture_init(&f, 200);
	struct nsc_client *c = nsc_client_new(&f.net, 40008);
	nsc_client_connect(&f.net, c);
	const char *req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
	nsc_client_write(&f.net, c, req, strlen(req));
	struct want w = { c, 1 };
	assert_true(nsc_run_until(&f.net, got_responses, &w, 2000));
	uint64_t t0 = nsc_now_ms();
	assert_true(nsc_run_until(&f.net, nsc_got_fin, c, 2000));
	uint64_t waited = nsc_now_ms() - t0;
	assert_true(waited >= 150);
	struct capage_stats st;
	capage_get_stats(f.page, &st);
	assert_int_equal(st.conns_idle, 1);
	assert_int_equal(st.conns_active, 0);

	/* Over max_conns (4): the fifth is reset (no peer holds more than 2). */
	struct nsc_client *cs[5];
	nsc_connect_all(&f.net, cs, 5, 40010, 1);
	int resets = 0;
	for (int i = 0; i < 5; i++)
		resets += cs[i]->rsts > 0;
	assert_int_equal(resets, 1);
	capage_get_stats(f.page, &st);
	assert_int_equal(st.conns_refused, 1);
	assert_int_equal(st.conns_active, 4);
	fixture_free(&f);
}

/* One peer holds at most half of max_conns; the others still get theirs. */
static void test_conn_peer_share(void **ctx)
{
	(void)ctx;
	struct fixture f;
	fixture_init(&f, 0);
	struct nsc_client *phone[3], *tablet[2];
	nsc_connect_all(&f.net, phone, 3, 40020, 3); /* 40020 % 3 == 0: all the phone's */
	assert_int_equal(phone[0]->rsts + phone[1]->rsts, 0);
	assert_int_equal(phone[2]->rsts, 1);
	nsc_connect_all(&f.net, tablet, 2, 40021, 3); /* 40021 % 3 == 1: the tablet's */
	assert_int_equal(tablet[0]->rsts + tablet[1]->rsts, 0);
	struct capage_stats st;
	capage_get_stats(f.page, &st);
	assert_int_equal(st.conns_refused_peer, 1);
	assert_int_equal(st.conns_refused, 0);
	assert_int_equal(st.conns_active, 4);
	fixture_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page),
		cmocka_unit_test(test_certificates),
		cmocka_unit_test(test_mobileconfig),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_conn_keepalive),
		cmocka_unit_test(test_conn_pipelined),
		cmocka_unit_test(test_conn_rejects),
		cmocka_unit_test(test_conn_idle),
		cmocka_unit_test(test_conn_peer_share),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
