/* The client config a phone imports: one [Interface] and one [Peer] in
 * wg-quick format, rendered, parsed and validated.
 *
 * What the official apps accept (checked against their parsers):
 * - Android (com.wireguard.config): [Interface] PrivateKey, Address, DNS,
 *   MTU, ListenPort, IncludedApplications, ExcludedApplications; [Peer]
 *   PublicKey, PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive. Any
 *   other key is an error; the two application lists exclude each other.
 * - iOS/macOS (WireGuardKit): the same keys WITHOUT the application lists:
 *   a config with IncludedApplications or ExcludedApplications fails to
 *   import there. Address, DNS and AllowedIPs may repeat; other keys not.
 * Both treat keys and section names case-insensitively and '#' anywhere as
 * the start of a comment, like wg-quick. */
#ifndef WGMITM_QR_WGCONF_H
#define WGMITM_QR_WGCONF_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qr/endpoint.h"

#define QR_WGCONF_KEY_LEN 32
#define QR_WGCONF_KEY_B64_LEN 44 /* base64 of 32 bytes: 43 characters and one '=' */
#define QR_WGCONF_MAX_DNS 8
#define QR_WGCONF_MAX_ALLOWED 64
#define QR_WGCONF_MAX_APPS 32
#define QR_WGCONF_APP_MAX 127 /* longest Android package name we accept */
#define QR_WGCONF_LINE_MAX 4096
/* Enough for any config that respects the limits above. */
#define QR_WGCONF_TEXT_MAX 16384
/* MTU bounds: 576 is the smallest IPv4 datagram every host must take; a
 * tunnel with an IPv6 address needs 1280 (RFC 8200), enforced separately. */
#define QR_WGCONF_MTU_MIN 576
#define QR_WGCONF_MTU_MIN_V6 1280
#define QR_WGCONF_MTU_MAX 65535
#define QR_WGCONF_ERR_MAX 256

/* An address with a prefix length: "10.0.0.0/8", "fd00::/64". */
struct qr_cidr {
	int family; /* AF_INET or AF_INET6; 0 = absent */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr;
	uint8_t prefix;
};

/* One DNS server (an address, not a search domain). */
struct qr_ipaddr {
	int family; /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr;
};

enum qr_wgconf_apps {
	QR_WGCONF_APPS_ALL = 0, /* no application list: every app uses the tunnel */
	QR_WGCONF_APPS_INCLUDE, /* IncludedApplications: only these apps */
	QR_WGCONF_APPS_EXCLUDE, /* ExcludedApplications: all apps but these */
};

struct qr_wgconf {
	/* [Interface] */
	uint8_t private_key[QR_WGCONF_KEY_LEN]; /* secret: wipe with qr_wgconf_wipe() */
	struct qr_cidr address4;                /* family 0 = absent; normally /32 */
	struct qr_cidr address6;                /* family 0 = absent; normally /128 */
	size_t n_dns;
	struct qr_ipaddr dns[QR_WGCONF_MAX_DNS];
	uint16_t mtu;         /* 0 = absent */
	uint16_t listen_port; /* 0 = absent (the phone picks one) */
	enum qr_wgconf_apps apps_mode;
	size_t n_apps;
	char apps[QR_WGCONF_MAX_APPS][QR_WGCONF_APP_MAX + 1];

	/* [Peer] */
	uint8_t public_key[QR_WGCONF_KEY_LEN];
	bool has_psk;
	uint8_t psk[QR_WGCONF_KEY_LEN]; /* secret */
	struct qr_endpoint endpoint;
	size_t n_allowed;
	struct qr_cidr allowed[QR_WGCONF_MAX_ALLOWED];
	uint16_t keepalive; /* seconds; 0 = absent (off) */
};

/* Empty config with AllowedIPs = 0.0.0.0/0, ::/0 (the whole traffic). */
void qr_wgconf_init(struct qr_wgconf *c);

/* Zeroes the whole struct, secrets included (sodium_memzero). */
void qr_wgconf_wipe(struct qr_wgconf *c);

/* Checks what the phone apps would check, plus our own limits: a private
 * key and public key, at least one Address, an Endpoint with a port, MTU in
 * range, not both application lists, valid package names and CIDRs (host
 * bits clear). Returns 0, or -EINVAL with a message in err (may be NULL). */
int qr_wgconf_validate(const struct qr_wgconf *c, char *err, size_t errcap)
	__attribute__((warn_unused_result));

/* Renders the wg-quick text, in this fixed order:
 *   [Interface] PrivateKey, ListenPort, Address, DNS, MTU,
 *               IncludedApplications | ExcludedApplications
 *   (blank line)
 *   [Peer] PublicKey, PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive
 * "Key = Value" lines, lists joined by ", ", final newline, absent fields
 * omitted. Writes a NUL-terminated string; *len (may be NULL) gets its
 * length. Returns 0, -EINVAL (invalid config, message in err) or -ENOSPC.
 * The text holds the private key: the caller wipes it after use. */
int qr_wgconf_render(const struct qr_wgconf *c, char *buf, size_t cap, size_t *len, char *err,
		     size_t errcap) __attribute__((warn_unused_result));

/* Parses wg-quick text (len bytes, need not be NUL-terminated) into *out.
 * name labels errors ("client.conf:7: unknown key 'Tabel' in [Interface]");
 * line numbers start at 1. Accepts exactly the keys listed above, one
 * [Interface] and one [Peer]; Address, DNS, AllowedIPs and the application
 * lists may repeat (their values add up), other keys may not. Runs
 * qr_wgconf_validate() at the end. On error *out is wiped. Returns 0 or
 * -EINVAL with the message in err. */
int qr_wgconf_parse(struct qr_wgconf *out, const char *text, size_t len, const char *name,
		    char *err, size_t errcap) __attribute__((warn_unused_result));

/* Copies wg-quick text to out without the keys only wg-quick and the apps
 * understand (Address, DNS, MTU, Table, PreUp, PostUp, PreDown, PostDown,
 * SaveConfig, IncludedApplications, ExcludedApplications, in any case), so
 * that `wg setconf` accepts it. Other lines, comments included, are kept;
 * the output ends with a newline. Returns 0 or -ENOSPC; *outlen (may be
 * NULL) gets the length of the NUL-terminated result. */
int qr_wgconf_strip_for_setconf(const char *text, size_t len, char *out, size_t cap, size_t *outlen)
	__attribute__((warn_unused_result));

/* Renders and strips in one step. Same results as qr_wgconf_render(). */
int qr_wgconf_render_setconf(const struct qr_wgconf *c, char *buf, size_t cap, size_t *len,
			     char *err, size_t errcap) __attribute__((warn_unused_result));

/* Base64 (standard alphabet, padded) of a 32-byte key. out gets 44
 * characters and a NUL. */
void qr_wgconf_key_to_base64(char out[static QR_WGCONF_KEY_B64_LEN + 1],
			     const uint8_t key[static QR_WGCONF_KEY_LEN]);
/* Decodes exactly 44 characters to exactly 32 bytes; false otherwise. */
bool qr_wgconf_key_from_base64(uint8_t key[static QR_WGCONF_KEY_LEN], const char *b64)
	__attribute__((warn_unused_result));

/* "10.0.0.0/8", "fd00::/64"; a bare address means /32 or /128. Host bits
 * must be clear. Returns 0 or -EINVAL with a message in err. */
int qr_cidr_parse(struct qr_cidr *out, const char *text, char *err, size_t errcap);
/* Writes "ADDR/PREFIX"; returns the length or -ENOSPC. */
int qr_cidr_format(const struct qr_cidr *c, char *buf, size_t cap);

#endif
