/* SOCKS5 (RFC 1928) and its username/password authentication (RFC 1929):
 * the client's messages (untrusted bytes) and our replies, and the header
 * of UDP ASSOCIATE's datagrams (RFC 1928 section 7). Sans-IO. */
#ifndef WGMITM_LISTEN_SOCKS5_H
#define WGMITM_LISTEN_SOCKS5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SOCKS5_VERSION 5
#define SOCKS5_NO_AUTH 0x00
#define SOCKS5_USERPASS 0x02
#define SOCKS5_NO_METHOD 0xff

/* Reply codes. */
enum socks5_rep {
	SOCKS5_OK = 0,
	SOCKS5_FAILURE = 1,
	SOCKS5_NOT_ALLOWED = 2,
	SOCKS5_NET_UNREACHABLE = 3,
	SOCKS5_HOST_UNREACHABLE = 4,
	SOCKS5_REFUSED = 5,
	SOCKS5_TTL_EXPIRED = 6,
	SOCKS5_CMD_UNSUPPORTED = 7,
	SOCKS5_ATYP_UNSUPPORTED = 8,
};

enum socks5_cmd { SOCKS5_CONNECT = 1, SOCKS5_BIND = 2, SOCKS5_UDP_ASSOCIATE = 3 };

/* Each parser returns the bytes it used (> 0), 0 when p[0..n) is a
 * prefix (call again with more), or -1 when malformed. */

/* VER NMETHODS METHODS...: which of the two methods we speak it offers. */
int socks5_parse_greeting(const uint8_t *p, size_t n, bool *no_auth, bool *userpass);

/* VER(1) ULEN UNAME PLEN PASSWD: NUL-terminated copies (a NUL inside
 * either is malformed). */
int socks5_parse_userpass(const uint8_t *p, size_t n, char user[256], char pass[256]);

struct socks5_req {
	uint8_t cmd;
	uint8_t atyp;                 /* 1 IPv4, 3 domain name, 4 IPv6 */
	char host[256];               /* the name (atyp 3), else the address as text */
	struct sockaddr_storage addr; /* atyp 1 and 4, with the port */
	uint16_t port;
};

/* VER CMD RSV ATYP DST.ADDR DST.PORT. -1 also for an address type other
 * than 1, 3 and 4, which cannot be skipped (*rep says which reply), and for
 * port 0, except in UDP ASSOCIATE, where DST is where the client will send
 * from and zeros mean it does not know yet. */
int socks5_parse_request(const uint8_t *p, size_t n, struct socks5_req *r, uint8_t *rep);

/* VER REP RSV ATYP BND.ADDR BND.PORT into out (at least 22 bytes);
 * bound NULL: 0.0.0.0:0. Returns its length. */
size_t socks5_reply(uint8_t *out, uint8_t rep, const struct sockaddr *bound);

/* The reply for a failed dial (a libuv error). */
uint8_t socks5_rep_for(int uv_err);

/* A UDP ASSOCIATE datagram's header: RSV(2, zero) FRAG ATYP DST.ADDR
 * DST.PORT, then DATA. */
struct socks5_udp_hdr {
	uint8_t atyp;                 /* 1 IPv4, 3 domain name, 4 IPv6 */
	uint16_t port;                /* never 0 */
	char name[256];               /* atyp 3: the name, NUL-terminated */
	size_t name_len;              /* atyp 3 */
	struct sockaddr_storage addr; /* atyp 1 and 4, with the port */
};

#define SOCKS5_UDP_MALFORMED (-1)
#define SOCKS5_UDP_FRAGMENT (-2)

/* One whole datagram p[0..n): the header's length (DATA is p + it, maybe
 * empty), SOCKS5_UDP_FRAGMENT for FRAG other than 0 (we do not reassemble:
 * such datagrams are dropped), or SOCKS5_UDP_MALFORMED (cut short, RSV not
 * zero, an unknown ATYP, an empty name or one with spaces, controls or
 * '/', port 0). h is filled only on success. */
int socks5_parse_udp(const uint8_t *p, size_t n, struct socks5_udp_hdr *h);

#define SOCKS5_UDP_HDR_MAX 22 /* the header of an answer: ATYP 4 */

/* The header for an answer from `from` (AF_INET or AF_INET6) into out
 * (SOCKS5_UDP_HDR_MAX bytes): FRAG 0, ATYP 1 or 4. Its length, 10 or 22;
 * 0 for another family. */
size_t socks5_udp_header(uint8_t *out, const struct sockaddr *from);

#endif
