/* The control API's token and the checks every request passes (auth.h). */
#include "control/auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/atomicfile.h"
#include "common/log.h"
#include "control/webui.h"

struct auth {
	char path[4200];
	char token[AUTH_TOKEN_MAX + 1];
	uint8_t hash[crypto_generichash_BYTES];
};

static bool token_chars_ok(const char *t, size_t n)
{
	if (n < AUTH_TOKEN_MIN || n > AUTH_TOKEN_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = t[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

static int token_read(struct auth *a, int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		log_error("control: %s is not a regular file of this user's: remove it to make a "
			  "new token",
			  a->path);
		return -EPERM;
	}
	if (st.st_mode & 077) {
		log_warn("control: %s could be read by others: now 0600 (consider making a new "
			 "token: remove the file)",
			 a->path);
		if (fchmod(fd, 0600) < 0)
			return -errno;
	}
	char buf[AUTH_TOKEN_MAX + 8];
	size_t n = 0;
	for (;;) {
		ssize_t k = read(fd, buf + n, sizeof(buf) - 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0 || (n += (size_t)k) == sizeof(buf) - 1)
			break;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	if (!token_chars_ok(buf, n)) {
		sodium_memzero(buf, sizeof(buf));
		log_error("control: %s does not hold a token (%d to %d characters of A-Z a-z 0-9 _ "
			  "-): remove it to make a new one",
			  a->path, AUTH_TOKEN_MIN, AUTH_TOKEN_MAX);
		return -EINVAL;
	}
	memcpy(a->token, buf, n);
	a->token[n] = '\0';
	sodium_memzero(buf, sizeof(buf));
	return 0;
}

static int token_create(struct auth *a)
{
	uint8_t raw[32];
	char line[2 * sizeof(raw) + 2];
	randombytes_buf(raw, sizeof(raw));
	sodium_bin2hex(a->token, sizeof(a->token), raw, sizeof(raw));
	sodium_memzero(raw, sizeof(raw));
	int n = snprintf(line, sizeof(line), "%s\n", a->token);
	int rc = atomicfile_write(a->path, line, (size_t)n, 0600);
	sodium_memzero(line, sizeof(line));
	if (rc < 0)
		log_error("control: cannot write %s: %s", a->path, strerror(-rc));
	else
		log_info("control: made a new API token in %s", a->path);
	return rc;
}

struct auth *auth_new(const char *home)
{
	if (!home || !*home) {
		errno = EINVAL;
		return NULL;
	}
	if (sodium_init() < 0) {
		errno = ENOSYS;
		return NULL;
	}
	struct auth *a = sodium_malloc(sizeof(*a));
	if (!a) {
		errno = ENOMEM;
		return NULL;
	}
	memset(a, 0, sizeof(*a));
	if ((size_t)snprintf(a->path, sizeof(a->path), "%s/%s", home, AUTH_TOKEN_FILE) >=
	    sizeof(a->path)) {
		sodium_free(a);
		errno = ENAMETOOLONG;
		return NULL;
	}
	int rc;
	int fd = open(a->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		rc = token_read(a, fd);
		close(fd);
	} else if (errno == ENOENT) {
		rc = token_create(a);
	} else {
		rc = -errno;
		log_error("control: cannot read %s: %s", a->path, strerror(errno));
	}
	if (rc < 0) {
		sodium_free(a);
		errno = -rc;
		return NULL;
	}
	crypto_generichash(a->hash, sizeof(a->hash), (const uint8_t *)a->token, strlen(a->token),
			   NULL, 0);
	return a;
}

void auth_free(struct auth *a)
{
	if (a)
		sodium_free(a); /* zeroes it */
}

const char *auth_token(const struct auth *a)
{
	return a->token;
}

const char *auth_token_path(const struct auth *a)
{
	return a->path;
}

bool auth_token_ok(const struct auth *a, const char *presented)
{
	if (!presented)
		return false;
	/* Hashes have one length whatever was sent, so the compare takes the
	 * same time for every wrong token. */
	uint8_t h[crypto_generichash_BYTES];
	crypto_generichash(h, sizeof(h), (const uint8_t *)presented, strlen(presented), NULL, 0);
	return sodium_memcmp(h, a->hash, sizeof(h)) == 0;
}

/* ---- Host and Origin -------------------------------------------------------- */

/* Splits "host", "host:port", "[v6]" or "[v6]:port". false when malformed. */
static bool split_hostport(const char *in, size_t n, char *host, size_t hostlen, long *port)
{
	const char *hs = in, *he, *rest;
	if (n > 0 && in[0] == '[') {
		const char *close = memchr(in, ']', n);
		if (!close)
			return false;
		hs = in + 1;
		he = close;
		rest = close + 1;
	} else {
		const char *colon = memchr(in, ':', n);
		he = colon ? colon : in + n;
		rest = he;
		if (colon && memchr(colon + 1, ':', (size_t)(in + n - colon - 1)))
			return false; /* IPv6 needs brackets */
	}
	size_t hl = (size_t)(he - hs);
	if (hl == 0 || hl >= hostlen)
		return false;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	*port = -1;
	size_t rl = (size_t)(in + n - rest);
	if (rl == 0)
		return true;
	if (rest[0] != ':' || rl < 2 || rl > 6)
		return false;
	long p = 0;
	for (size_t i = 1; i < rl; i++) {
		if (rest[i] < '0' || rest[i] > '9')
			return false;
		p = p * 10 + (rest[i] - '0');
	}
	*port = p;
	return true;
}

/* A name or IP literal that reaches this listener without DNS. */
static bool host_allowed(const struct httpd *s, const char *host, bool bracketed)
{
	if (!bracketed && strcasecmp(host, "localhost") == 0)
		return true;
	const char *bind = httpd_host(s);
	struct in_addr h4, b4;
	struct in6_addr h6, b6;
	bool bind6 = strchr(bind, ':') != NULL;
	if (!bracketed && inet_pton(AF_INET, host, &h4) == 1) {
		if (ntohl(h4.s_addr) == INADDR_LOOPBACK)
			return true;
		if (bind6) {
			/* "::" takes IPv4 too. */
			return inet_pton(AF_INET6, bind, &b6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&b6);
		}
		return inet_pton(AF_INET, bind, &b4) == 1 &&
		       (b4.s_addr == INADDR_ANY || b4.s_addr == h4.s_addr);
	}
	if (bracketed && inet_pton(AF_INET6, host, &h6) == 1) {
		if (IN6_IS_ADDR_LOOPBACK(&h6))
			return true;
		return bind6 && inet_pton(AF_INET6, bind, &b6) == 1 &&
		       (IN6_IS_ADDR_UNSPECIFIED(&b6) || memcmp(&b6, &h6, sizeof(h6)) == 0);
	}
	return false;
}

static bool authority_ok(const struct httpd *s, const char *v, size_t n, bool default_80)
{
	char host[64];
	long port;
	if (!split_hostport(v, n, host, sizeof(host), &port))
		return false;
	if (port < 0)
		port = default_80 ? 80 : httpd_port(s);
	return port == httpd_port(s) && host_allowed(s, host, v[0] == '[');
}

static bool origin_ok(const struct httpd *s, const char *origin)
{
	if (strncasecmp(origin, "http://", 7) != 0)
		return false;
	const char *auth = origin + 7;
	return *auth && !strpbrk(auth, "/?#@") && authority_ok(s, auth, strlen(auth), true);
}

/* ---- The gate ------------------------------------------------------------------ */

static const char *cookie_token(const struct httpd_req *r, char *out, size_t outlen)
{
	const char *name, *value;
	size_t cl = strlen(AUTH_COOKIE);
	for (size_t i = 0; httpd_req_header_at(r, i, &name, &value); i++) {
		if (strcasecmp(name, "Cookie") != 0)
			continue;
		const char *p = value;
		while (*p) {
			while (*p == ' ' || *p == ';')
				p++;
			const char *e = strchrnul(p, ';');
			if ((size_t)(e - p) > cl && strncmp(p, AUTH_COOKIE, cl) == 0 &&
			    p[cl] == '=') {
				size_t vl = (size_t)(e - p) - cl - 1;
				while (vl && p[cl + vl] == ' ')
					vl--;
				if (vl < outlen) {
					memcpy(out, p + cl + 1, vl);
					out[vl] = '\0';
					return out;
				}
			}
			p = e;
		}
	}
	return NULL;
}

static void unauthorized(struct httpd_resp *resp, const struct auth *a, bool wrong)
{
	httpd_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"wgmitm\"");
	if (wrong)
		httpd_reply_error(resp, 401,
				  "the API token is wrong: the right one is in %s (send "
				  "\"Authorization: Bearer <token>\", or open /login?token=<token> "
				  "once in the browser)",
				  a->path);
	else
		httpd_reply_error(resp, 401,
				  "this API needs the token in %s: send \"Authorization: Bearer "
				  "<token>\", or open /login?token=<token> once in the browser",
				  a->path);
}

static bool gate(struct httpd_req *r, struct httpd_resp *resp, void *arg)
{
	struct auth *a = arg;
	struct httpd *s = httpd_req_server(r);
	const char *host = httpd_req_header(r, "Host");
	if (!host || !authority_ok(s, host, strlen(host), false)) {
		httpd_reply_error(resp, 421,
				  "the Host header (%s) does not name this API: use "
				  "http://127.0.0.1:%u/ or http://localhost:%u/ (other names are "
				  "refused, against DNS rebinding)",
				  host ? host : "missing", httpd_port(s), httpd_port(s));
		return false;
	}
	size_t origins = httpd_req_header_count(r, "Origin");
	const char *origin = httpd_req_header(r, "Origin");
	if (origins > 1 || (origin && !origin_ok(s, origin))) {
		httpd_reply_error(resp, 403,
				  "cross-origin requests are refused (Origin: %s): the API answers "
				  "only its own pages at http://127.0.0.1:%u",
				  origins > 1 ? "repeated" : origin, httpd_port(s));
		return false;
	}
	const char *site = httpd_req_header(r, "Sec-Fetch-Site");
	if (site && strcasecmp(site, "same-origin") != 0 && strcasecmp(site, "none") != 0) {
		httpd_reply_error(
			resp, 403,
			"requests from other sites are refused (Sec-Fetch-Site: %s): open "
			"the API's address directly",
			site);
		return false;
	}
	if (strcmp(httpd_req_path(r), AUTH_LOGIN_PATH) == 0 &&
	    (strcmp(httpd_req_method(r), "GET") == 0 || strcmp(httpd_req_method(r), "HEAD") == 0))
		return true; /* the login route checks the token itself */
	if (webui_is_public(httpd_req_method(r), httpd_req_path(r)))
		return true;
	/* A browser opening the UI without the token gets the login form. */
	bool page =
		webui_is_page(httpd_req_method(r), httpd_req_path(r)) && !httpd_req_is_websocket(r);
	const char *authz = httpd_req_header(r, "Authorization");
	char cookie[AUTH_TOKEN_MAX + 2];
	const char *presented = NULL;
	if (authz) {
		if (strncasecmp(authz, "Bearer ", 7) == 0) {
			presented = authz + 7;
			while (*presented == ' ')
				presented++;
		}
	} else {
		presented = cookie_token(r, cookie, sizeof(cookie));
	}
	if (!presented) {
		if (page)
			webui_reply_login(r, resp, 401, false);
		else
			unauthorized(resp, a, false);
		return false;
	}
	bool ok = auth_token_ok(a, presented);
	sodium_memzero(cookie, sizeof(cookie));
	if (!ok) {
		if (page)
			webui_reply_login(r, resp, 401, true);
		else
			unauthorized(resp, a, true);
		return false;
	}
	return true;
}

static void login(struct httpd_req *r, struct httpd_resp *resp, void *arg)
{
	struct auth *a = arg;
	const char *token = httpd_req_query(r, "token");
	if (!token || !*token) {
		webui_reply_login(r, resp, 401, false);
		return;
	}
	if (!auth_token_ok(a, token)) {
		webui_reply_login(r, resp, 401, true);
		return;
	}
	char cookie[AUTH_TOKEN_MAX + 96];
	snprintf(cookie, sizeof(cookie), "%s=%s; HttpOnly; SameSite=Strict; Path=/", AUTH_COOKIE,
		 a->token);
	httpd_resp_header(resp, "Set-Cookie", cookie);
	sodium_memzero(cookie, sizeof(cookie));
	httpd_resp_header(resp, "Location", "/");
	static const char body[] = "Logged in: continue at /\n";
	httpd_reply(resp, 303, "text/plain; charset=utf-8", body, sizeof(body) - 1);
}

int auth_attach(struct auth *a, struct httpd *s)
{
	if (!a || !s)
		return -EINVAL;
	int rc = httpd_route(s, "GET", AUTH_LOGIN_PATH, login, a);
	if (rc < 0)
		return rc;
	httpd_set_gate(s, gate, a);
	return 0;
}

int auth_login_url(const struct auth *a, const struct httpd *s, char *out, size_t len)
{
	const char *bind = httpd_host(s);
	struct in_addr b4;
	struct in6_addr b6;
	const char *host = "127.0.0.1";
	bool v6 = false;
	if (inet_pton(AF_INET, bind, &b4) == 1 && b4.s_addr != INADDR_ANY) {
		host = bind;
	} else if (inet_pton(AF_INET6, bind, &b6) == 1 && !IN6_IS_ADDR_UNSPECIFIED(&b6)) {
		host = bind;
		v6 = true;
	}
	int n = snprintf(out, len, "http://%s%s%s:%u%s?token=%s", v6 ? "[" : "", host,
			 v6 ? "]" : "", httpd_port(s), AUTH_LOGIN_PATH, a->token);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}
