/* Protocol detection and ClientHello parsing; see sniff.h.
 *
 * The ClientHello may be split over several records (RFC 8446 5.1), so it is
 * read through a map of record fragments instead of one contiguous span; in
 * the usual single-record case every read is a plain array index. */
#include "mitm/sniff.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

const char *sniff_proto_name(enum sniff_proto proto)
{
	switch (proto) {
	case SNIFF_NEED_MORE:
		return "need-more";
	case SNIFF_TLS:
		return "tls";
	case SNIFF_HTTP1:
		return "http1";
	case SNIFF_H2_PRIOR_KNOWLEDGE:
		return "h2c-prior-knowledge";
	case SNIFF_OTHER:
		return "other";
	}
	return "other";
}

/* ---- Classification --------------------------------------------------- */

/* RFC 9113 3.4: the client connection preface. */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(h2_preface) - 1)

/* Request methods taken as HTTP/1: RFC 9110 9.1, PATCH (RFC 5789), WebDAV
 * (RFC 4918, 3253, 3648, 3744, 4791, 5323, 5842), the UPnP/GENA ones that
 * run over TCP, link/unlink (RFC 2068), PURGE (caches) and QUERY. */
static const char *const http_methods[] = {
	"GET",
	"HEAD",
	"POST",
	"PUT",
	"DELETE",
	"CONNECT",
	"OPTIONS",
	"TRACE",
	"PATCH",
	"PROPFIND",
	"PROPPATCH",
	"MKCOL",
	"COPY",
	"MOVE",
	"LOCK",
	"UNLOCK",
	"VERSION-CONTROL",
	"REPORT",
	"CHECKOUT",
	"CHECKIN",
	"UNCHECKOUT",
	"MKWORKSPACE",
	"UPDATE",
	"LABEL",
	"MERGE",
	"BASELINE-CONTROL",
	"MKACTIVITY",
	"ORDERPATCH",
	"ACL",
	"MKCALENDAR",
	"SEARCH",
	"BIND",
	"REBIND",
	"UNBIND",
	"NOTIFY",
	"SUBSCRIBE",
	"UNSUBSCRIBE",
	"LINK",
	"UNLINK",
	"PURGE",
	"QUERY",
};
#define HTTP_METHOD_MAX 16 /* "BASELINE-CONTROL" */

/* 0: p[0..n) names no method and starts none; 1: starts one; 2: is one. */
static int http_method_match(const uint8_t *p, size_t n)
{
	int best = 0;
	for (size_t i = 0; i < sizeof(http_methods) / sizeof(http_methods[0]); i++) {
		size_t len = strlen(http_methods[i]);
		if (n <= len && memcmp(p, http_methods[i], n) == 0) {
			if (n == len)
				return 2;
			best = 1;
		}
	}
	return best;
}

/* RFC 9112 3.2: the request-target is visible ASCII; bytes >= 0x80 are let
 * through as some clients send raw UTF-8 paths. */
static bool http_target_byte(uint8_t c)
{
	return (c > 0x20 && c < 0x7f) || c >= 0x80;
}

/* RFC 9112 3: request-line = method SP request-target SP HTTP-version CRLF */
static enum sniff_proto classify_http1(const uint8_t *p, size_t n)
{
	static const char version[] = "HTTP/1.";
	size_t i = 0, t;

	/* Only the first SNIFF_MAX_REQUEST_LINE bytes count, so the verdict
	 * does not change past them. */
	if (n > SNIFF_MAX_REQUEST_LINE)
		n = SNIFF_MAX_REQUEST_LINE;
	const enum sniff_proto cut = n == SNIFF_MAX_REQUEST_LINE ? SNIFF_HTTP1 : SNIFF_NEED_MORE;

	/* method SP */
	while (i < n && i <= HTTP_METHOD_MAX && p[i] != ' ')
		i++;
	if (i == n)
		return http_method_match(p, n) ? SNIFF_NEED_MORE : SNIFF_OTHER;
	if (p[i] != ' ' || http_method_match(p, i) != 2)
		return SNIFF_OTHER;
	i++;

	/* request-target SP */
	for (t = i; i < n && http_target_byte(p[i]); i++)
		;
	if (i == n)
		return cut;
	if (p[i] != ' ' || i == t)
		return SNIFF_OTHER;
	i++;

	/* HTTP-version = "HTTP/" DIGIT "." DIGIT, with 1 as the major */
	for (size_t k = 0; k < sizeof(version) - 1; k++, i++) {
		if (i == n)
			return cut;
		if (p[i] != (uint8_t)version[k])
			return SNIFF_OTHER;
	}
	if (i == n)
		return cut;
	if (p[i] < '0' || p[i] > '9')
		return SNIFF_OTHER;
	i++;

	/* CRLF (RFC 9112 2.2: a bare LF may be taken as the line end) */
	if (i == n)
		return cut;
	if (p[i] == '\n')
		return SNIFF_HTTP1;
	if (p[i] != '\r')
		return SNIFF_OTHER;
	i++;
	if (i == n)
		return cut;
	return p[i] == '\n' ? SNIFF_HTTP1 : SNIFF_OTHER;
}

/* RFC 8446 5.1: ContentType(1) ProtocolVersion(2) length(2), then the
 * first handshake byte, msg_type (4). */
static enum sniff_proto classify_tls(const uint8_t *p, size_t n)
{
	/* legacy_record_version is ignored by receivers, but every client
	 * sends 3.x with x <= 4: anything else is not TLS. */
	if (n < 2)
		return SNIFF_NEED_MORE;
	if (p[1] != 3)
		return SNIFF_OTHER;
	if (n < 3)
		return SNIFF_NEED_MORE;
	if (p[2] > 4)
		return SNIFF_OTHER;
	if (n < 5)
		return SNIFF_NEED_MORE;
	size_t len = (size_t)p[3] << 8 | p[4];
	/* no zero-length handshake fragments, none over 2^14 */
	if (len == 0 || len > SNIFF_TLS_MAX_FRAGMENT)
		return SNIFF_OTHER;
	if (n < 6)
		return SNIFF_NEED_MORE;
	return p[5] == SNIFF_TLS_HT_CLIENT_HELLO ? SNIFF_TLS : SNIFF_OTHER;
}

enum sniff_proto sniff_classify(const uint8_t *p, size_t n)
{
	if (n == 0)
		return SNIFF_NEED_MORE;
	if (p[0] == SNIFF_TLS_CT_HANDSHAKE)
		return classify_tls(p, n);

	/* PRI is not an HTTP/1 method: a preface prefix waits for all 24. */
	size_t k = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
	bool preface = memcmp(p, h2_preface, k) == 0;
	if (preface && n >= H2_PREFACE_LEN)
		return SNIFF_H2_PRIOR_KNOWLEDGE;
	enum sniff_proto r = classify_http1(p, n);
	return preface && r == SNIFF_OTHER ? SNIFF_NEED_MORE : r;
}

/* ---- ClientHello: reading across records ------------------------------- */

/* The handshake bytes: fragment i is p[off[i] .. off[i] + len[i]). */
struct hs {
	const uint8_t *p;
	const uint8_t *flat; /* the bytes when there is one fragment */
	size_t off[SNIFF_MAX_RECORDS], len[SNIFF_MAX_RECORDS];
};

/* Handshake byte o; the caller keeps o below the fragments' total. */
static inline uint8_t hs_at(const struct hs *h, size_t o)
{
	if (h->flat)
		return h->flat[o];
	size_t i = 0;
	while (o >= h->len[i])
		o -= h->len[i++];
	return h->p[h->off[i] + o];
}

/* A bounded reader over handshake bytes [pos, end). */
struct rd {
	const struct hs *h;
	size_t pos, end;
};

static inline size_t rd_left(const struct rd *r)
{
	return r->end - r->pos;
}

/* A big-endian integer of `bytes` (1..3) bytes. */
static inline bool rd_uint(struct rd *r, size_t bytes, size_t *v)
{
	if (rd_left(r) < bytes)
		return false;
	*v = 0;
	for (size_t i = 0; i < bytes; i++)
		*v = *v << 8 | hs_at(r->h, r->pos + i);
	r->pos += bytes;
	return true;
}

static inline bool rd_skip(struct rd *r, size_t k)
{
	if (rd_left(r) < k)
		return false;
	r->pos += k;
	return true;
}

/* Copies the next k bytes (k <= rd_left) without moving past them. */
static inline void rd_copy(const struct rd *r, void *dst, size_t k)
{
	if (r->h->flat) {
		memcpy(dst, r->h->flat + r->pos, k);
		return;
	}
	for (size_t i = 0; i < k; i++)
		((uint8_t *)dst)[i] = hs_at(r->h, r->pos + i);
}

/* A vector (RFC 8446 3.4): a length of `bytes` bytes, then that many bytes,
 * which must fit in r. *v reads them; r moves past them. */
static inline bool rd_vec(struct rd *r, size_t bytes, struct rd *v)
{
	size_t len;
	if (!rd_uint(r, bytes, &len) || rd_left(r) < len)
		return false;
	*v = (struct rd){ r->h, r->pos, r->pos + len };
	r->pos += len;
	return true;
}

/* ---- ClientHello: extensions ------------------------------------------- */

static int fail(struct sniff_hello *out, const char *why)
{
	out->reason = why;
	return -EPROTO;
}

/* RFC 6066 3: "HostName" contains the fully qualified DNS hostname of the
 * server, in ASCII, without a trailing dot; literal IP addresses are not
 * permitted (recorded here, flagged). */
static int take_host_name(struct rd *name, struct sniff_hello *out)
{
	size_t len = rd_left(name), label = 0;
	bool colon = false;

	if (len == 0)
		return fail(out, "server_name: empty host_name");
	if (hs_at(name->h, name->end - 1) == '.')
		len--; /* stored without it */
	if (len == 0)
		return fail(out, "server_name: host_name is only a dot");
	if (len > SNIFF_SNI_MAX)
		return fail(out, "server_name: host_name longer than 253 bytes");
	const char *why = NULL;
	rd_copy(name, out->sni, len);
	out->sni[len] = '\0';
	for (size_t i = 0; i < len && !why; i++) {
		uint8_t c = (uint8_t)out->sni[i];
		if (c == '.') {
			if (label == 0)
				why = "server_name: empty label in host_name";
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || c == '-' || c == '_' || c == ':') {
			colon |= c == ':';
			if (++label > 63)
				why = "server_name: label longer than 63 bytes";
		} else {
			why = "server_name: host_name byte outside [A-Za-z0-9._-]";
		}
	}
	uint8_t addr[16];
	if (!why && colon && inet_pton(AF_INET6, out->sni, addr) != 1)
		why = "server_name: ':' in a host_name that is no IPv6 address";
	if (why) {
		out->sni[0] = '\0'; /* no unchecked bytes left for a careless logger */
		return fail(out, why);
	}
	out->sni_len = len;
	out->sni_is_ip = colon || inet_pton(AF_INET, out->sni, addr) == 1;
	out->sni_present = true;
	return 0;
}

/* RFC 6066 3:
 *   struct { NameType name_type; select (name_type) { case host_name: HostName; } name; } ServerName;
 *   struct { ServerName server_name_list<1..2^16-1> } ServerNameList; */
static int ext_server_name(struct rd *e, struct sniff_hello *out)
{
	struct rd list;
	if (!rd_vec(e, 2, &list) || rd_left(e) != 0)
		return fail(out, "server_name: list length does not match the extension");
	if (rd_left(&list) == 0)
		return fail(out, "server_name: empty list");
	while (rd_left(&list) != 0) {
		size_t type;
		struct rd name;
		if (!rd_uint(&list, 1, &type) || !rd_vec(&list, 2, &name))
			return fail(out, "server_name: entry longer than the list");
		/* Only host_name is defined; every name type so far shares its
		 * opaque<1..2^16-1> shape, so others are skipped. */
		if (type != SNIFF_SNI_HOST_NAME)
			continue;
		/* "MUST NOT contain more than one name of the same name_type" */
		if (out->sni_present)
			return fail(out, "server_name: two host_name entries");
		int err = take_host_name(&name, out);
		if (err)
			return err;
	}
	return 0;
}

/* RFC 7301 3.1:
 *   opaque ProtocolName<1..2^8-1>;
 *   struct { ProtocolName protocol_name_list<2..2^16-1> } ProtocolNameList;
 * "Empty strings MUST NOT be included". */
static int ext_alpn(struct rd *e, struct sniff_hello *out)
{
	struct rd list;
	if (!rd_vec(e, 2, &list) || rd_left(e) != 0)
		return fail(out, "alpn: list length does not match the extension");
	if (rd_left(&list) < 2)
		return fail(out, "alpn: list shorter than 2 bytes");
	out->alpn_present = true;
	while (rd_left(&list) != 0) {
		struct rd name;
		if (!rd_vec(&list, 1, &name))
			return fail(out, "alpn: protocol name longer than the list");
		size_t len = rd_left(&name);
		if (len == 0)
			return fail(out, "alpn: empty protocol name");
		/* Keep the leading names that fit, in wire format. */
		if (out->alpn_truncated || out->n_alpn == SNIFF_MAX_ALPN ||
		    out->alpn_wire_len + 1 + len > SNIFF_ALPN_WIRE_MAX) {
			out->alpn_truncated = true;
			continue;
		}
		uint8_t *w = out->alpn_wire + out->alpn_wire_len;
		out->alpn_off[out->n_alpn++] = (uint16_t)out->alpn_wire_len;
		w[0] = (uint8_t)len;
		rd_copy(&name, w + 1, len);
		out->alpn_wire_len += 1 + len;
	}
	return 0;
}

/* RFC 8701 2: GREASE versions are 0x?A?A with both bytes equal. */
static bool grease(size_t v)
{
	return (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff);
}

/* RFC 8446 4.2.1: struct { ProtocolVersion versions<2..254>; } in a
 * ClientHello. */
static int ext_supported_versions(struct rd *e, struct sniff_hello *out, size_t *max)
{
	struct rd list;
	if (!rd_vec(e, 1, &list) || rd_left(e) != 0)
		return fail(out, "supported_versions: list length does not match the extension");
	if (rd_left(&list) < 2 || rd_left(&list) % 2 != 0)
		return fail(out, "supported_versions: list length not even and >= 2");
	size_t v;
	while (rd_uint(&list, 2, &v)) {
		if (v == SNIFF_TLS13)
			out->tls13_offered = true;
		if (!grease(v) && v > *max)
			*max = v;
	}
	return 0;
}

/* RFC 8446 4.2.11:
 *   struct { opaque identity<1..2^16-1>; uint32 obfuscated_ticket_age; } PskIdentity;
 *   opaque PskBinderEntry<32..255>;
 *   struct { PskIdentity identities<7..2^16-1>; PskBinderEntry binders<33..2^16-1>; } OfferedPsks;
 * "Clients MUST NOT send more binders than identities" (or fewer). */
static int ext_pre_shared_key(struct rd *e, struct sniff_hello *out)
{
	struct rd ids, binders, one;
	size_t n_ids = 0, n_binders = 0;
	if (!rd_vec(e, 2, &ids) || !rd_vec(e, 2, &binders) || rd_left(e) != 0)
		return fail(out, "pre_shared_key: lists do not match the extension");
	if (rd_left(&ids) == 0 || rd_left(&binders) == 0)
		return fail(out, "pre_shared_key: empty identities or binders");
	while (rd_left(&ids) != 0) {
		if (!rd_vec(&ids, 2, &one) || rd_left(&one) == 0 || !rd_skip(&ids, 4))
			return fail(out, "pre_shared_key: identity does not fit the list");
		n_ids++;
	}
	while (rd_left(&binders) != 0) {
		if (!rd_vec(&binders, 1, &one) || rd_left(&one) < 32)
			return fail(out, "pre_shared_key: binder does not fit the list or is under "
					 "32 bytes");
		n_binders++;
	}
	if (n_ids != n_binders)
		return fail(out, "pre_shared_key: binders and identities differ in number");
	out->psk = true;
	return 0;
}

/* draft-ietf-tls-esni-22 5:
 *   enum { outer(0), inner(1) } ECHClientHelloType;
 *   struct { ECHClientHelloType type; select (type) {
 *     case outer: HpkeSymmetricCipherSuite cipher_suite; uint8 config_id;
 *                 opaque enc<0..2^16-1>; opaque payload<1..2^16-1>;
 *     case inner: Empty; }; } ECHClientHello; */
static int ext_ech(struct rd *e, struct sniff_hello *out)
{
	size_t type;
	struct rd enc, payload;
	if (!rd_uint(e, 1, &type))
		return fail(out, "encrypted_client_hello: empty");
	if (type == 1) {
		if (rd_left(e) != 0)
			return fail(out, "encrypted_client_hello: inner is not empty");
	} else if (type == 0) {
		if (!rd_skip(e, 4 + 1) || !rd_vec(e, 2, &enc) || !rd_vec(e, 2, &payload) ||
		    rd_left(e) != 0)
			return fail(
				out,
				"encrypted_client_hello: outer fields do not match the extension");
		if (rd_left(&payload) == 0)
			return fail(out, "encrypted_client_hello: empty payload");
		out->ech_outer = true;
	} else {
		return fail(out, "encrypted_client_hello: type is neither outer nor inner");
	}
	out->ech = true;
	return 0;
}

/* The extensions read here, one bit each: RFC 8446 4.2 "There MUST NOT be
 * more than one extension of the same type in a given extension block"
 * (checked for these, as OpenSSL checks it for the ones it knows). */
enum {
	SEEN_SNI = 1 << 0,
	SEEN_ALPN = 1 << 1,
	SEEN_TICKET = 1 << 2,
	SEEN_PSK = 1 << 3,
	SEEN_EARLY = 1 << 4,
	SEEN_VERSIONS = 1 << 5,
	SEEN_ECH = 1 << 6,
};

static unsigned seen_bit(size_t type)
{
	switch (type) {
	case SNIFF_EXT_SERVER_NAME:
		return SEEN_SNI;
	case SNIFF_EXT_ALPN:
		return SEEN_ALPN;
	case SNIFF_EXT_SESSION_TICKET:
		return SEEN_TICKET;
	case SNIFF_EXT_PRE_SHARED_KEY:
		return SEEN_PSK;
	case SNIFF_EXT_EARLY_DATA:
		return SEEN_EARLY;
	case SNIFF_EXT_SUPPORTED_VERSIONS:
		return SEEN_VERSIONS;
	case SNIFF_EXT_ECH:
		return SEEN_ECH;
	}
	return 0;
}

static int extensions(struct rd *exts, struct sniff_hello *out)
{
	unsigned seen = 0;
	size_t max = 0;
	int err = 0;

	while (rd_left(exts) != 0) {
		/* struct { ExtensionType extension_type; opaque extension_data<0..2^16-1>; } */
		size_t type;
		struct rd e;
		if (!rd_uint(exts, 2, &type) || !rd_vec(exts, 2, &e))
			return fail(out, "extension longer than the extensions block");
		/* 4.2.11: pre_shared_key "MUST be the last extension" */
		if (seen & SEEN_PSK)
			return fail(out, "pre_shared_key is not the last extension");
		unsigned bit = seen_bit(type);
		if (seen & bit)
			return fail(out, "the same extension twice");
		seen |= bit;
		out->n_extensions++;
		switch (type) {
		case SNIFF_EXT_SERVER_NAME:
			err = ext_server_name(&e, out);
			break;
		case SNIFF_EXT_ALPN:
			err = ext_alpn(&e, out);
			break;
		case SNIFF_EXT_SESSION_TICKET:
			/* RFC 5077 3.2: empty announces support, a ticket resumes */
			out->ticket = rd_left(&e) != 0;
			break;
		case SNIFF_EXT_PRE_SHARED_KEY:
			err = ext_pre_shared_key(&e, out);
			break;
		case SNIFF_EXT_EARLY_DATA:
			/* 4.2.10: empty in a ClientHello */
			if (rd_left(&e) != 0)
				return fail(out, "early_data: not empty");
			out->early_data = true;
			break;
		case SNIFF_EXT_SUPPORTED_VERSIONS:
			err = ext_supported_versions(&e, out, &max);
			break;
		case SNIFF_EXT_ECH:
			err = ext_ech(&e, out);
			break;
		}
		if (err)
			return err;
	}
	if (max != 0)
		out->max_version = (uint16_t)max;
	return 0;
}

/* ---- ClientHello ------------------------------------------------------- */

static int again(struct sniff_hello *out, size_t need)
{
	out->need = need;
	return -EAGAIN;
}

static int too_big(struct sniff_hello *out, const char *why)
{
	out->reason = why;
	return -E2BIG;
}

int sniff_client_hello(const uint8_t *p, size_t n, struct sniff_hello *out)
{
	struct hs h = { .p = p };
	size_t off = 0;     /* start of the next record in p */
	size_t have = 0;    /* handshake bytes in complete records */
	size_t msg_len = 0; /* the whole handshake message, 0: unknown */
	size_t nrec = 0;

	/* The arrays at the end are only meaningful up to their lengths. */
	memset(out, 0, offsetof(struct sniff_hello, sni));
	out->sni[0] = '\0';

	/* RFC 8446 5.1: the handshake records, until they hold the whole
	 * ClientHello. Each is checked as soon as its header arrives, so a
	 * hopeless one is refused without waiting for the rest. */
	for (;;) {
		if (nrec == SNIFF_MAX_RECORDS)
			return too_big(out,
				       "ClientHello spans more than SNIFF_MAX_RECORDS records");
		if (n - off < SNIFF_TLS_RECORD_HEADER)
			return again(out, off + SNIFF_TLS_RECORD_HEADER);
		/* "Handshake messages MUST NOT be interleaved with other record types" */
		if (p[off] != SNIFF_TLS_CT_HANDSHAKE)
			return fail(out,
				    nrec ? "record inside the ClientHello is not a handshake record"
					 : "record is not a handshake record");
		if (p[off + 1] != 3 || p[off + 2] > 4)
			return fail(out, "record version is not 3.0-3.4");
		size_t rlen = (size_t)p[off + 3] << 8 | p[off + 4];
		/* "MUST NOT send zero-length fragments of Handshake types";
		 * "The length MUST NOT exceed 2^14 bytes" */
		if (rlen == 0)
			return fail(out, "zero-length handshake record");
		if (rlen > SNIFF_TLS_MAX_FRAGMENT)
			return fail(out, "record longer than 2^14 bytes");
		size_t avail = n - off - SNIFF_TLS_RECORD_HEADER;
		if (avail > rlen)
			avail = rlen;
		h.off[nrec] = off + SNIFF_TLS_RECORD_HEADER;
		h.len[nrec] = avail;

		/* RFC 8446 4: Handshake = msg_type(1) length(3), perhaps
		 * itself split over records. */
		if (msg_len == 0 && have + avail >= SNIFF_TLS_HANDSHAKE_HEADER) {
			if (hs_at(&h, 0) != SNIFF_TLS_HT_CLIENT_HELLO)
				return fail(out, "handshake message is not a ClientHello");
			msg_len = SNIFF_TLS_HANDSHAKE_HEADER + ((size_t)hs_at(&h, 1) << 16 |
								(size_t)hs_at(&h, 2) << 8 |
								hs_at(&h, 3));
			if (msg_len > SNIFF_MAX_HELLO_MSG)
				return too_big(out, "ClientHello longer than SNIFF_MAX_HELLO_MSG");
		}
		if (msg_len != 0) {
			/* 5.1: a message preceding a key change (0-RTT) must
			 * end its record, and nothing else comes in the first
			 * flight. */
			if (have + rlen > msg_len)
				return fail(out, "data after the ClientHello in its record");
			if (have + rlen < msg_len && nrec + 1 == SNIFF_MAX_RECORDS)
				return too_big(
					out,
					"ClientHello spans more than SNIFF_MAX_RECORDS records");
		}
		/* Wait for the whole record, or, while the handshake header is
		 * unknown, just for the header. */
		if (avail < rlen)
			return again(out,
				     off + SNIFF_TLS_RECORD_HEADER +
					     (msg_len ? rlen : SNIFF_TLS_HANDSHAKE_HEADER - have));
		have += rlen;
		off += SNIFF_TLS_RECORD_HEADER + rlen;
		nrec++;
		if (have == msg_len)
			break;
	}
	if (nrec == 1)
		h.flat = p + h.off[0];

	/* RFC 8446 4.1.2:
	 *   struct {
	 *       ProtocolVersion legacy_version = 0x0303;
	 *       Random random;
	 *       opaque legacy_session_id<0..32>;
	 *       CipherSuite cipher_suites<2..2^16-2>;
	 *       opaque legacy_compression_methods<1..2^8-1>;
	 *       Extension extensions<8..2^16-1>;
	 *   } ClientHello; */
	struct rd r = { &h, SNIFF_TLS_HANDSHAKE_HEADER, msg_len }, v;
	size_t x;

	/* legacy_version: 3.x; anything older is SSL 2 */
	if (!rd_uint(&r, 2, &x))
		return fail(out, "ClientHello ends in legacy_version");
	if (x >> 8 != 3)
		return fail(out, "legacy_version is not 3.x");
	out->legacy_version = (uint16_t)x;
	out->max_version = (uint16_t)x;
	/* random */
	if (!rd_skip(&r, 32))
		return fail(out, "ClientHello ends in random");
	/* legacy_session_id<0..32> */
	if (!rd_vec(&r, 1, &v))
		return fail(out, "legacy_session_id longer than the ClientHello");
	if (rd_left(&v) > 32)
		return fail(out, "legacy_session_id longer than 32 bytes");
	/* cipher_suites<2..2^16-2>: two bytes each */
	if (!rd_vec(&r, 2, &v))
		return fail(out, "cipher_suites longer than the ClientHello");
	if (rd_left(&v) < 2 || rd_left(&v) % 2 != 0)
		return fail(out, "cipher_suites length not even and >= 2");
	out->n_cipher_suites = (uint16_t)(rd_left(&v) / 2);
	/* legacy_compression_methods<1..2^8-1> */
	if (!rd_vec(&r, 1, &v))
		return fail(out, "legacy_compression_methods longer than the ClientHello");
	if (rd_left(&v) == 0)
		return fail(out, "legacy_compression_methods empty");
	/* extensions: may be absent before TLS 1.3 (RFC 5246 7.4.1.2) */
	if (rd_left(&r) != 0) {
		if (!rd_vec(&r, 2, &v))
			return fail(out, "extensions longer than the ClientHello");
		if (rd_left(&r) != 0)
			return fail(out, "bytes after the extensions");
		int err = extensions(&v, out);
		if (err)
			return err;
	}

	out->n_records = (uint8_t)nrec;
	out->consumed = off;
	return 0;
}
