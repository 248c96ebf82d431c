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

/* ATYP ADDR PORT, in requests and in UDP datagrams alike. */
struct addr {
	uint8_t atyp; /* 1 IPv4, 3 domain name, 4 IPv6 */
	uint16_t port;
	size_t name_len;            /* atyp 3 */
	char name[256];             /* atyp 3, NUL-terminated */
	struct sockaddr_storage sa; /* atyp 1 and 4, with the port */
};

#define ADDR_MORE 0
#define ADDR_BAD (-1)
#define ADDR_ATYP (-2) /* an address type other than 1, 3 and 4 */

/* The address at p[0..n): its length, or one of the ADDR_ values. */
static int addr_parse(const uint8_t *p, size_t n, struct addr *a)
{
	if (n < 1)
		return ADDR_MORE;
	size_t alen;
	switch (p[0]) {
	case 1:
		alen = 4;
		break;
	case 4:
		alen = 16;
		break;
	case 3:
		if (n < 2)
			return ADDR_MORE;
		if (p[1] == 0)
			return ADDR_BAD;
		alen = 1 + (size_t)p[1];
		break;
	default:
		return ADDR_ATYP;
	}
	if (n < 1 + alen + 2)
		return ADDR_MORE;
	const uint8_t *v = p + 1;
	memset(a, 0, sizeof(*a));
	a->atyp = p[0];
	a->port = (uint16_t)(v[alen] << 8 | v[alen + 1]);
	if (a->atyp == 1) {
		struct sockaddr_in *s = (struct sockaddr_in *)&a->sa;
		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, v, 4);
		s->sin_port = htons(a->port);
	} else if (a->atyp == 4) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&a->sa;
		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, v, 16);
		s->sin6_port = htons(a->port);
	} else {
		if (!name_ok(v + 1, alen - 1))
			return ADDR_BAD;
		a->name_len = alen - 1;
		memcpy(a->name, v + 1, a->name_len);
	}
	return (int)(1 + alen + 2);
}

/* ATYP ADDR PORT of `sa` (IPv4 or IPv6; anything else is 0.0.0.0:0) at
 * out; its length. */
static size_t addr_put(uint8_t *out, const struct sockaddr *sa)
{
	if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
		out[0] = 4;
		memcpy(out + 1, &s->sin6_addr, 16);
		memcpy(out + 17, &s->sin6_port, 2);
		return 19;
	}
	out[0] = 1;
	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
		memcpy(out + 1, &s->sin_addr, 4);
		memcpy(out + 5, &s->sin_port, 2);
	} else {
		memset(out + 1, 0, 6);
	}
	return 7;
}

int socks5_parse_request(const uint8_t *p, size_t n, struct socks5_req *r, uint8_t *rep)
{
	*rep = SOCKS5_FAILURE;
	if (n < 4)
		return 0;
	if (p[0] != SOCKS5_VERSION || p[2] != 0)
		return -1;
	struct addr a;
	int len = addr_parse(p + 3, n - 3, &a);
	if (len == ADDR_ATYP)
		*rep = SOCKS5_ATYP_UNSUPPORTED;
	if (len <= 0)
		return len == ADDR_MORE ? 0 : -1;
	memset(r, 0, sizeof(*r));
	r->cmd = p[1];
	r->atyp = a.atyp;
	r->port = a.port;
	r->addr = a.sa;
	if (a.atyp == 3)
		memcpy(r->host, a.name, a.name_len + 1);
	else if (a.atyp == 1)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&a.sa)->sin_addr, r->host,
			  sizeof(r->host));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a.sa)->sin6_addr, r->host,
			  sizeof(r->host));
	if (r->port == 0 && r->cmd != SOCKS5_UDP_ASSOCIATE)
		return -1;
	*rep = SOCKS5_OK;
	return 3 + len;
}

size_t socks5_reply(uint8_t *out, uint8_t rep, const struct sockaddr *bound)
{
	out[0] = SOCKS5_VERSION;
	out[1] = rep;
	out[2] = 0;
	return 3 + addr_put(out + 3, bound);
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
	struct addr a;
	int len = addr_parse(p + 3, n - 3, &a); /* a datagram is whole: more is malformed */
	if (len <= 0 || a.port == 0)
		return SOCKS5_UDP_MALFORMED;
	h->atyp = a.atyp;
	h->port = a.port;
	h->addr = a.sa;
	h->name_len = a.name_len;
	memcpy(h->name, a.name, a.name_len + 1);
	return 3 + len;
}

size_t socks5_udp_header(uint8_t *out, const struct sockaddr *from)
{
	if (from->sa_family != AF_INET && from->sa_family != AF_INET6)
		return 0;
	out[0] = out[1] = out[2] = 0;
	return 3 + addr_put(out + 3, from);
}
