/* Parent proxy handshakes (parent.h). */
#include "mitm/parent.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <llhttp.h>
#include <sodium.h>

enum { S5_METHOD, S5_AUTH, S5_CONNECT, STEP_DONE, STEP_HTTP };

static bool is_ip6(const char *h)
{
	struct in6_addr a;
	return inet_pton(AF_INET6, h, &a) == 1;
}

static enum parent_result failed(struct parent_hs *h, bool refused, const char *fmt, const char *s)
{
	h->refused = refused;
	snprintf(h->why, sizeof(h->why), fmt, s);
	return PARENT_FAIL;
}

/* ---- HTTP CONNECT ---------------------------------------------------------- */

static int http_begin(struct parent_hs *h, uint8_t *out, size_t *outlen)
{
	bool v6 = is_ip6(h->host);
	int n = snprintf((char *)out, PARENT_MAX_OUT,
			 "CONNECT %s%s%s:%u HTTP/1.1\r\nHost: %s%s%s:%u\r\n", v6 ? "[" : "",
			 h->host, v6 ? "]" : "", h->port, v6 ? "[" : "", h->host, v6 ? "]" : "",
			 h->port);
	if (n < 0 || n >= PARENT_MAX_OUT)
		return -1;
	size_t len = (size_t)n;
	if (h->user[0]) {
		char cred[513];
		int cl = snprintf(cred, sizeof(cred), "%s:%s", h->user, h->pass);
		if (cl < 0 || (size_t)cl >= sizeof(cred))
			return -1;
		char b64[sodium_base64_ENCODED_LEN(512, sodium_base64_VARIANT_ORIGINAL)];
		sodium_bin2base64(b64, sizeof(b64), (const unsigned char *)cred, (size_t)cl,
				  sodium_base64_VARIANT_ORIGINAL);
		sodium_memzero(cred, sizeof(cred));
		n = snprintf((char *)out + len, PARENT_MAX_OUT - len,
			     "Proxy-Authorization: Basic %s\r\n", b64);
		sodium_memzero(b64, sizeof(b64));
		if (n < 0 || (size_t)n >= PARENT_MAX_OUT - len)
			return -1;
		len += (size_t)n;
	}
	if (len + 2 > PARENT_MAX_OUT)
		return -1;
	memcpy(out + len, "\r\n", 2);
	*outlen = len + 2;
	h->step = STEP_HTTP;
	return 0;
}

struct answer {
	bool complete;
	char reason[64];
	size_t reason_len;
};

static int on_status(llhttp_t *p, const char *at, size_t len)
{
	struct answer *a = p->data;
	size_t room = sizeof(a->reason) - 1 - a->reason_len;
	if (len > room)
		len = room;
	/* The parent's words go into logs and records: printable ASCII only. */
	for (size_t i = 0; i < len; i++)
		a->reason[a->reason_len++] = at[i] >= 0x20 && at[i] < 0x7f ? at[i] : '?';
	a->reason[a->reason_len] = '\0';
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	((struct answer *)p->data)->complete = true;
	return HPE_PAUSED;
}

static const llhttp_settings_t answer_settings = {
	.on_status = on_status,
	.on_headers_complete = on_headers_complete,
};

static enum parent_result http_feed(struct parent_hs *h, size_t *used)
{
	struct answer a = { 0 };
	llhttp_t p;
	llhttp_init(&p, HTTP_RESPONSE, &answer_settings);
	p.data = &a;
	llhttp_errno_t e = llhttp_execute(&p, (const char *)h->in, h->in_len);
	if (e == HPE_OK && !a.complete) {
		if (h->in_len == sizeof(h->in))
			return failed(h, false, "parent proxy: %s",
				      "answer head larger than 8 KiB");
		return PARENT_MORE;
	}
	if (!a.complete || e != HPE_PAUSED)
		return failed(h, false, "parent proxy: malformed answer (%s)",
			      llhttp_get_error_reason(&p));
	size_t head = (size_t)((const uint8_t *)llhttp_get_error_pos(&p) - h->in);
	if (p.status_code < 200 || p.status_code > 299) {
		char s[100];
		snprintf(s, sizeof(s), "%d %s", p.status_code, a.reason);
		/* 502/503/504: the parent could not reach the target. */
		return failed(h, p.status_code >= 502 && p.status_code <= 504,
			      "parent proxy answered %s", s);
	}
	*used = head;
	h->step = STEP_DONE;
	return PARENT_DONE;
}

/* ---- SOCKS5 ------------------------------------------------------------------ */

static const char *socks_rep_why(uint8_t rep)
{
	static const char *const why[] = {
		"succeeded",           "general failure",       "not allowed by its ruleset",
		"network unreachable", "host unreachable",      "connection refused",
		"TTL expired",         "command not supported", "address type not supported",
	};
	return rep < sizeof(why) / sizeof(why[0]) ? why[rep] : "unknown reply";
}

static size_t socks_connect_msg(const struct parent_hs *h, uint8_t *out)
{
	size_t n = 0;
	out[n++] = 5;
	out[n++] = 1; /* CONNECT */
	out[n++] = 0;
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, h->host, &a4) == 1) {
		out[n++] = 1;
		memcpy(out + n, &a4, 4);
		n += 4;
	} else if (inet_pton(AF_INET6, h->host, &a6) == 1) {
		out[n++] = 4;
		memcpy(out + n, &a6, 16);
		n += 16;
	} else {
		size_t hl = strlen(h->host); /* < 256: checked at begin */
		out[n++] = 3;
		out[n++] = (uint8_t)hl;
		memcpy(out + n, h->host, hl);
		n += hl;
	}
	out[n++] = (uint8_t)(h->port >> 8);
	out[n++] = (uint8_t)h->port;
	return n;
}

static enum parent_result socks_feed(struct parent_hs *h, size_t *used, uint8_t *out,
				     size_t *outlen)
{
	const uint8_t *p = h->in;
	size_t n = h->in_len;
	switch (h->step) {
	case S5_METHOD:
		if (n < 2)
			return PARENT_MORE;
		if (p[0] != 5)
			return failed(h, false, "parent proxy: %s", "not a SOCKS5 answer");
		*used = 2;
		if (p[1] == 0x02 && h->user[0]) {
			size_t ul = strlen(h->user), pl = strlen(h->pass);
			out[0] = 1;
			out[1] = (uint8_t)ul;
			memcpy(out + 2, h->user, ul);
			out[2 + ul] = (uint8_t)pl;
			memcpy(out + 3 + ul, h->pass, pl);
			*outlen = 3 + ul + pl;
			h->step = S5_AUTH;
			return PARENT_MORE;
		}
		if (p[1] != 0x00)
			return failed(h, false, "parent proxy: %s",
				      h->user[0] ? "SOCKS5 offered no method we speak"
						 : "SOCKS5 wants credentials");
		*outlen = socks_connect_msg(h, out);
		h->step = S5_CONNECT;
		return PARENT_MORE;
	case S5_AUTH:
		if (n < 2)
			return PARENT_MORE;
		*used = 2;
		if (p[0] != 1 || p[1] != 0)
			return failed(h, false, "parent proxy: %s",
				      "SOCKS5 refused the credentials");
		*outlen = socks_connect_msg(h, out);
		h->step = S5_CONNECT;
		return PARENT_MORE;
	case S5_CONNECT: {
		if (n < 5)
			return PARENT_MORE;
		if (p[0] != 5)
			return failed(h, false, "parent proxy: %s", "not a SOCKS5 reply");
		if (p[1] != 0)
			return failed(h, p[1] == 5 || p[1] == 4 || p[1] == 3,
				      "parent proxy (SOCKS5): %s", socks_rep_why(p[1]));
		size_t len;
		if (p[3] == 1)
			len = 4 + 4 + 2;
		else if (p[3] == 4)
			len = 4 + 16 + 2;
		else if (p[3] == 3)
			len = 4 + 1 + (size_t)p[4] + 2;
		else
			return failed(h, false, "parent proxy: %s",
				      "SOCKS5 reply of an unknown type");
		if (n < len)
			return PARENT_MORE;
		*used = len;
		h->step = STEP_DONE;
		return PARENT_DONE;
	}
	default:
		return failed(h, false, "parent proxy: %s", "handshake already over");
	}
}

/* ---- the handshake --------------------------------------------------------- */

int parent_begin(struct parent_hs *h, enum parent_kind kind, const char *host, uint16_t port,
		 const char *user, const char *pass, uint8_t *out, size_t *outlen)
{
	memset(h, 0, sizeof(*h));
	h->kind = kind;
	h->port = port;
	*outlen = 0;
	if (!host || !host[0] || strlen(host) >= sizeof(h->host)) {
		snprintf(h->why, sizeof(h->why), "parent proxy: the target's name is too long");
		return -1;
	}
	snprintf(h->host, sizeof(h->host), "%s", host);
	if (user && user[0]) {
		if (strlen(user) >= sizeof(h->user) ||
		    strlen(pass ? pass : "") >= sizeof(h->pass)) {
			snprintf(h->why, sizeof(h->why), "parent proxy: credentials too long");
			return -1;
		}
		snprintf(h->user, sizeof(h->user), "%s", user);
		snprintf(h->pass, sizeof(h->pass), "%s", pass ? pass : "");
	}
	if (kind == PARENT_HTTP) {
		if (http_begin(h, out, outlen) < 0) {
			snprintf(h->why, sizeof(h->why), "parent proxy: request too long");
			return -1;
		}
		return 0;
	}
	out[0] = 5;
	out[1] = h->user[0] ? 2 : 1;
	out[2] = h->user[0] ? 0x02 : 0x00;
	out[3] = 0x00;
	*outlen = h->user[0] ? 4 : 3;
	h->step = S5_METHOD;
	return 0;
}

enum parent_result parent_feed(struct parent_hs *h, const uint8_t *p, size_t n, size_t *used,
			       uint8_t *out, size_t *outlen)
{
	*outlen = 0;
	*used = 0;
	/* A step's answer is a prefix of what came: each message is answered
	 * before the next is sent, so only after the last one may bytes
	 * follow (the target's). */
	size_t room = sizeof(h->in) - h->in_len;
	size_t take = n < room ? n : room;
	memcpy(h->in + h->in_len, p, take);
	h->in_len += take;
	size_t step_used = 0;
	enum parent_result r = h->kind == PARENT_HTTP ? http_feed(h, &step_used)
						      : socks_feed(h, &step_used, out, outlen);
	if (r == PARENT_FAIL)
		return r;
	if (step_used == 0) {
		*used = take; /* all of it is this answer, so far */
		return r;
	}
	size_t after = h->in_len - step_used; /* came from p, past the answer */
	h->in_len = 0;
	*used = take - after;
	if (r == PARENT_MORE && (after > 0 || take < n)) {
		*outlen = 0;
		return failed(h, false, "parent proxy: %s", "sent more than its answer");
	}
	return r;
}
