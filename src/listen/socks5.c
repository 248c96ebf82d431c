/* SOCKS5 messages (socks5.h). */
#include "listen/socks5.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include <uv.h>

int socks5_parse_greeting(const uint8_t *p, size_t n, bool *no_auth, bool *userpass)
{
	if (n < 1)
		return 0;
	if (p[0] != SOCKS5_VERSION)
		return -1;
	if (n < 2)
		return 0;
	size_t m = p[1];
	if (m == 0)
		return -1;
	if (n < 2 + m)
		return 0;
	*no_auth = *userpass = false;
	for (size_t i = 0; i < m; i++) {
		*no_auth |= p[2 + i] == SOCKS5_NO_AUTH;
		*userpass |= p[2 + i] == SOCKS5_USERPASS;
	}
	return (int)(2 + m);
}

int socks5_parse_userpass(const uint8_t *p, size_t n, char user[256], char pass[256])
{
	if (n < 1)
		return 0;
	if (p[0] != 1)
		return -1;
	if (n < 2)
		return 0;
	size_t ul = p[1];
	if (n < 3 + ul)
		return 0;
	size_t pl = p[2 + ul];
	if (n < 3 + ul + pl)
		return 0;
	if (ul == 0 || memchr(p + 2, 0, ul) || memchr(p + 3 + ul, 0, pl))
		return -1;
	memcpy(user, p + 2, ul);
	user[ul] = '\0';
	memcpy(pass, p + 3 + ul, pl);
	pass[pl] = '\0';
	return (int)(3 + ul + pl);
}

/* What a resolver may be given: no spaces, controls or '/'. */
static bool name_ok(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] <= ' ' || p[i] == 0x7f || p[i] == '/')
			return false;
	return true;
}

int socks5_parse_request(const uint8_t *p, size_t n, struct socks5_req *r, uint8_t *rep)
{
	*rep = SOCKS5_FAILURE;
	if (n < 4)
		return 0;
	if (p[0] != SOCKS5_VERSION || p[2] != 0)
		return -1;
	memset(r, 0, sizeof(*r));
	r->cmd = p[1];
	r->atyp = p[3];
	size_t alen;
	switch (r->atyp) {
	case 1:
		alen = 4;
		break;
	case 4:
		alen = 16;
		break;
	case 3:
		if (n < 5)
			return 0;
		alen = 1 + (size_t)p[4];
		if (p[4] == 0)
			return -1;
		break;
	default:
		*rep = SOCKS5_ATYP_UNSUPPORTED;
		return -1;
	}
	if (n < 4 + alen + 2)
		return 0;
	const uint8_t *a = p + 4;
	r->port = (uint16_t)(a[alen] << 8 | a[alen + 1]);
	if (r->atyp == 1) {
		struct sockaddr_in *s = (struct sockaddr_in *)&r->addr;
		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		s->sin_port = htons(r->port);
		inet_ntop(AF_INET, a, r->host, sizeof(r->host));
	} else if (r->atyp == 4) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&r->addr;
		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		s->sin6_port = htons(r->port);
		inet_ntop(AF_INET6, a, r->host, sizeof(r->host));
	} else {
		size_t hl = a[0];
		if (!name_ok(a + 1, hl))
			return -1;
		memcpy(r->host, a + 1, hl);
		r->host[hl] = '\0';
	}
	if (r->port == 0 && r->cmd != SOCKS5_UDP_ASSOCIATE)
		return -1;
	*rep = SOCKS5_OK;
	return (int)(4 + alen + 2);
}

size_t socks5_reply(uint8_t *out, uint8_t rep, const struct sockaddr *bound)
{
	out[0] = SOCKS5_VERSION;
	out[1] = rep;
	out[2] = 0;
	if (bound && bound->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)bound;
		out[3] = 4;
		memcpy(out + 4, &s->sin6_addr, 16);
		memcpy(out + 20, &s->sin6_port, 2);
		return 22;
	}
	out[3] = 1;
	if (bound && bound->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)bound;
		memcpy(out + 4, &s->sin_addr, 4);
		memcpy(out + 8, &s->sin_port, 2);
	} else {
		memset(out + 4, 0, 6);
	}
	return 10;
}

uint8_t socks5_rep_for(int uv_err)
{
	switch (uv_err) {
	case UV_ECONNREFUSED:
		return SOCKS5_REFUSED;
	case UV_ENETUNREACH:
		return SOCKS5_NET_UNREACHABLE;
	case UV_EHOSTUNREACH:
	case UV_EAI_NONAME:
	case UV_EAI_AGAIN:
		return SOCKS5_HOST_UNREACHABLE;
	case UV_ETIMEDOUT:
		return SOCKS5_TTL_EXPIRED;
	default:
		return SOCKS5_FAILURE;
	}
}

int socks5_parse_udp(const uint8_t *p, size_t n, struct socks5_udp_hdr *h)
{
	if (n < 4 || p[0] != 0 || p[1] != 0)
		return SOCKS5_UDP_MALFORMED;
	if (p[2] != 0)
		return SOCKS5_UDP_FRAGMENT;
	const uint8_t *a = p + 4;
	size_t alen;
	switch (p[3]) {
	case 1:
		alen = 4;
		break;
	case 4:
		alen = 16;
		break;
	case 3:
		if (n < 5 || p[4] == 0)
			return SOCKS5_UDP_MALFORMED;
		alen = 1 + (size_t)p[4];
		break;
	default:
		return SOCKS5_UDP_MALFORMED;
	}
	if (n < 4 + alen + 2)
		return SOCKS5_UDP_MALFORMED;
	uint16_t port = (uint16_t)(a[alen] << 8 | a[alen + 1]);
	if (port == 0 || (p[3] == 3 && !name_ok(a + 1, alen - 1)))
		return SOCKS5_UDP_MALFORMED;
	h->atyp = p[3];
	h->port = port;
	if (h->atyp == 1) {
		struct sockaddr_in *s = (struct sockaddr_in *)&h->addr;
		memset(s, 0, sizeof(*s));
		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		s->sin_port = htons(port);
	} else if (h->atyp == 4) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h->addr;
		memset(s, 0, sizeof(*s));
		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		s->sin6_port = htons(port);
	} else {
		h->name_len = alen - 1;
		memcpy(h->name, a + 1, h->name_len);
		h->name[h->name_len] = '\0';
	}
	return (int)(4 + alen + 2);
}

size_t socks5_udp_header(uint8_t *out, const struct sockaddr *from)
{
	out[0] = out[1] = out[2] = 0;
	if (from->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)from;
		out[3] = 1;
		memcpy(out + 4, &s->sin_addr, 4);
		memcpy(out + 8, &s->sin_port, 2);
		return 10;
	}
	if (from->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)from;
		out[3] = 4;
		memcpy(out + 4, &s->sin6_addr, 16);
		memcpy(out + 20, &s->sin6_port, 2);
		return 22;
	}
	return 0;
}
