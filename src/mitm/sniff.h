/* Protocol detection from the first bytes a tunnel client sends on a new TCP
 * stream, and the ClientHello fields interception decides on (SNI, ALPN,
 * versions). Pure: bytes in, a verdict out; no I/O, no allocation, never a
 * read past n.
 *
 * Use: buffer the client's bytes (at most SNIFF_MAX_PEEK), call
 * sniff_classify after each read until it decides; for SNIFF_TLS call
 * sniff_client_hello after each read until it stops saying -EAGAIN. The
 * buffered bytes are then handed on unchanged (to OpenSSL through a memory
 * BIO, llhttp, nghttp2 or the raw relay). A server-speaks-first protocol
 * (SMTP, SSH to some servers, FTP) sends nothing: the caller needs its own
 * timeout after which it relays raw. */
#ifndef WGMITM_MITM_SNIFF_H
#define WGMITM_MITM_SNIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Wire constants ------------------------------------------------------
 * Parsed with explicit byte reads, so no struct mirrors the wire. */

/* RFC 8446 5.1: TLSPlaintext = type(1) legacy_record_version(2) length(2). */
#define SNIFF_TLS_RECORD_HEADER 5
#define SNIFF_TLS_MAX_FRAGMENT 16384u /* 2^14 */
#define SNIFF_TLS_CT_HANDSHAKE 22     /* ContentType handshake */
/* RFC 8446 4: Handshake = msg_type(1) length(3). */
#define SNIFF_TLS_HANDSHAKE_HEADER 4
#define SNIFF_TLS_HT_CLIENT_HELLO 1 /* HandshakeType client_hello */

/* Extension types (IANA TLS ExtensionType registry). */
#define SNIFF_EXT_SERVER_NAME 0         /* RFC 6066 3 */
#define SNIFF_EXT_ALPN 16               /* RFC 7301 3.1 */
#define SNIFF_EXT_SESSION_TICKET 35     /* RFC 5077 3.2 */
#define SNIFF_EXT_PRE_SHARED_KEY 41     /* RFC 8446 4.2.11 */
#define SNIFF_EXT_EARLY_DATA 42         /* RFC 8446 4.2.10 */
#define SNIFF_EXT_SUPPORTED_VERSIONS 43 /* RFC 8446 4.2.1 */
#define SNIFF_EXT_ECH 0xfe0d            /* draft-ietf-tls-esni: encrypted_client_hello */

#define SNIFF_SNI_HOST_NAME 0 /* RFC 6066 3 NameType host_name */
#define SNIFF_TLS13 0x0304

/* ---- Bounds ------------------------------------------------------------ */

/* A ClientHello handshake message (header included) larger than this, or
 * spread over more than SNIFF_MAX_RECORDS records, is refused with -E2BIG:
 * the records holding an accepted one never exceed SNIFF_MAX_HELLO bytes. */
#define SNIFF_MAX_HELLO_MSG (16u * 1024)
#define SNIFF_MAX_RECORDS 4
#define SNIFF_MAX_HELLO (SNIFF_MAX_HELLO_MSG + SNIFF_TLS_RECORD_HEADER * SNIFF_MAX_RECORDS)
/* sniff_classify decides an HTTP/1 request line within this many bytes: one
 * still valid and unfinished here is taken as HTTP/1 (a long target). */
#define SNIFF_MAX_REQUEST_LINE 8192u
/* The most either function ever asks the caller to buffer. */
#define SNIFF_MAX_PEEK SNIFF_MAX_HELLO
_Static_assert(SNIFF_MAX_REQUEST_LINE <= SNIFF_MAX_PEEK, "peek buffer holds a request line");

#define SNIFF_SNI_MAX 253        /* DNS name without the trailing dot */
#define SNIFF_MAX_ALPN 16        /* protocols kept from the client's list */
#define SNIFF_ALPN_WIRE_MAX 1024 /* bytes of the list kept, wire format */

/* ---- Classification --------------------------------------------------- */

enum sniff_proto {
	SNIFF_NEED_MORE,          /* the bytes so far fit more than one verdict */
	SNIFF_TLS,                /* a handshake record starting a ClientHello
	                              (decided from 6 bytes; the hello itself is
	                              checked by sniff_client_hello) */
	SNIFF_HTTP1,              /* "METHOD SP target SP HTTP/1.d CRLF" with a
	                              known method (LF alone also ends the line) */
	SNIFF_H2_PRIOR_KNOWLEDGE, /* the 24-byte HTTP/2 connection preface */
	SNIFF_OTHER,              /* none of these: relay raw */
};

/* The verdict for the first n bytes a client sent (n may be 0). Returns as
 * soon as one verdict is certain, reads only p[0..n), and never answers
 * SNIFF_NEED_MORE for n >= SNIFF_MAX_REQUEST_LINE. Once it decides, longer
 * inputs with the same prefix get the same verdict. */
enum sniff_proto sniff_classify(const uint8_t *p, size_t n);

/* A printable name ("need-more", "tls", "http1", "h2c-prior-knowledge",
 * "other") for logs and flow records. */
const char *sniff_proto_name(enum sniff_proto proto);

/* ---- ClientHello ------------------------------------------------------- */

struct sniff_hello {
	size_t consumed;    /* 0: bytes of the records holding the
	                              ClientHello (<= n); anything after them is
	                              not part of it (e.g. early data) */
	size_t need;        /* -EAGAIN: call again once at least this
	                              many bytes are buffered (n < need <=
	                              SNIFF_MAX_HELLO); else 0 */
	const char *reason; /* -EPROTO / -E2BIG: the check that failed,
	                              a static string for logs; else NULL */

	uint16_t legacy_version;  /* ClientHello.legacy_version (0x0303 from any
	                              TLS 1.2/1.3 client) */
	uint16_t max_version;     /* highest version offered: supported_versions
	                              (GREASE skipped) if sent, else legacy_version */
	bool tls13_offered;       /* supported_versions lists 0x0304 */
	uint8_t n_records;        /* TLS records the ClientHello spans (1..4) */
	uint16_t n_cipher_suites; /* entries of cipher_suites (GREASE included) */
	uint16_t n_extensions;    /* extensions in the ClientHello */

	bool sni_present; /* a server_name extension with a host_name */
	bool sni_is_ip;   /* ...which is an IPv4/IPv6 literal (RFC 6066
	                              forbids it; kept so the caller can decide) */
	size_t sni_len;   /* strlen(sni) */

	bool alpn_present;    /* an application_layer_protocol_negotiation
	                              extension */
	bool alpn_truncated;  /* the list had more than SNIFF_MAX_ALPN names
	                              or SNIFF_ALPN_WIRE_MAX bytes: only the
	                              leading names that fit are kept */
	size_t n_alpn;        /* names kept */
	size_t alpn_wire_len; /* bytes used in alpn_wire */

	bool ech;        /* an encrypted_client_hello extension (real or
	                              GREASE: they look alike on purpose) */
	bool ech_outer;  /* ...of type outer (0): the real server name
	                              is encrypted, sni is the public name */
	bool ticket;     /* session_ticket extension carries a ticket
	                              (TLS 1.2 resumption attempt) */
	bool psk;        /* pre_shared_key extension (TLS 1.3
	                              resumption or external PSK) */
	bool early_data; /* early_data extension: 0-RTT records follow */

	/* The arrays last: the parser clears the fields above and writes
	 * these only up to their lengths. */
	char sni[SNIFF_SNI_MAX + 1];            /* host_name as sent (case kept, a trailing
	                              dot dropped), NUL-terminated; "" if absent.
	                              Only [A-Za-z0-9._-] (':' for an IPv6
	                              literal), labels 1..63 bytes */
	uint16_t alpn_off[SNIFF_MAX_ALPN];      /* alpn_wire offset of each kept
	                              name's length byte (see sniff_hello_alpn) */
	uint8_t alpn_wire[SNIFF_ALPN_WIRE_MAX]; /* the kept names in wire format
	                              (length byte, name; repeated), as
	                              SSL_set_alpn_protos takes them */
};
_Static_assert(sizeof(struct sniff_hello) <= 3072, "kept small: lives in a connection briefly");

/* Parses the ClientHello in the TLS records at p[0..n) (RFC 8446 4.1.2 with
 * the record layer of 5.1; handshake records and messages only, so also
 * TLS 1.0-1.2 clients). A ClientHello may be split over up to
 * SNIFF_MAX_RECORDS records; a record holding it must hold nothing else.
 * Every length is checked against its container. Returns
 *   0        parsed; out filled, out->consumed set
 *   -EAGAIN  incomplete so far; out->need says how many bytes to wait for
 *   -EPROTO  malformed; out->reason says which check failed
 *   -E2BIG   larger than SNIFF_MAX_HELLO_MSG / SNIFF_MAX_RECORDS allow
 * Unless it returns 0, only need (-EAGAIN) and reason (-EPROTO, -E2BIG)
 * are meaningful; sni is still a NUL-terminated string, possibly empty. */
__attribute__((warn_unused_result)) int sniff_client_hello(const uint8_t *p, size_t n,
							   struct sniff_hello *out);

/* The i-th kept ALPN name (i < h->n_alpn): not NUL-terminated, *len bytes
 * (1..255), pointing into h->alpn_wire. */
static inline const uint8_t *sniff_hello_alpn(const struct sniff_hello *h, size_t i, size_t *len)
{
	*len = h->alpn_wire[h->alpn_off[i]];
	return h->alpn_wire + h->alpn_off[i] + 1;
}

#endif
