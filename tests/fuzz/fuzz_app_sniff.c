/* libFuzzer target for sniff_classify and sniff_client_hello. The input is
 * checked as sent and, when it is one TLS record, again with the record's
 * payload split into three records at offsets taken from the input's last
 * two bytes (so the fuzzer reaches hellos spread over records). Invariants
 * beyond "no crash":
 * - a verdict, once given for a prefix, holds for the longer input (the
 *   classifier's, and the parser's other than -EAGAIN);
 * - a parsed hello lies within the input (consumed <= n), parses the same
 *   from exactly its records, and is incomplete one byte short of them;
 * - -EAGAIN asks for more than n and at most SNIFF_MAX_HELLO bytes;
 *   failures give a reason; a parsed hello is classified TLS;
 * - the SNI is NUL-terminated whatever the result; on success its length
 *   matches, its bytes are the allowed ones, and the ALPN offsets and
 *   lengths tile alpn_wire exactly.
 * Every call sees a block of exactly n bytes, so ASan sees any read past n. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "mitm/sniff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *copy_exact(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n ? n : 1);
	if (!q)
		abort();
	memcpy(q, p, n);
	return q;
}

static enum sniff_proto classify_exact(const uint8_t *p, size_t n)
{
	uint8_t *q = copy_exact(p, n);
	enum sniff_proto r = sniff_classify(q, n);
	free(q);
	return r;
}

static int parse_exact(const uint8_t *p, size_t n, struct sniff_hello *h)
{
	uint8_t *q = copy_exact(p, n);
	int r = sniff_client_hello(q, n, h);
	free(q);
	return r;
}

static void check_hello(const struct sniff_hello *h, size_t n)
{
	if (h->consumed == 0 || h->consumed > n || h->consumed > SNIFF_MAX_HELLO)
		abort();
	if (h->reason || h->need || h->n_records < 1 || h->n_records > SNIFF_MAX_RECORDS)
		abort();
	if (h->sni_len > SNIFF_SNI_MAX || h->sni[h->sni_len] != '\0' ||
	    strlen(h->sni) != h->sni_len || h->sni_present != (h->sni_len != 0))
		abort();
	for (size_t i = 0; i < h->sni_len; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:",
			    h->sni[i]))
			abort();
	if (h->sni_is_ip && !h->sni_present)
		abort();
	if (h->n_alpn > SNIFF_MAX_ALPN || h->alpn_wire_len > SNIFF_ALPN_WIRE_MAX)
		abort();
	if ((h->n_alpn || h->alpn_truncated) && !h->alpn_present)
		abort();
	size_t at = 0;
	for (size_t i = 0; i < h->n_alpn; i++) {
		size_t len;
		const uint8_t *name = sniff_hello_alpn(h, i, &len);
		if (h->alpn_off[i] != at || len == 0 ||
		    name + len > h->alpn_wire + h->alpn_wire_len)
			abort();
		at += 1 + len;
	}
	if (at != h->alpn_wire_len || (h->ech_outer && !h->ech))
		abort();
	if (h->tls13_offered && h->max_version < SNIFF_TLS13)
		abort();
}

/* p holds exactly n bytes. */
static void check(const uint8_t *p, size_t n)
{
	static struct sniff_hello h, again;

	/* Classification: verdicts on prefixes hold for the whole. */
	enum sniff_proto verdict = sniff_classify(p, n);
	if (verdict > SNIFF_OTHER || (verdict == SNIFF_NEED_MORE && n >= SNIFF_MAX_REQUEST_LINE))
		abort();
	const size_t ks[] = { 0, 1, 2, 5, 6, 23, n / 2, n - (n > 0) };
	for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
		if (ks[i] >= n)
			continue;
		enum sniff_proto v = classify_exact(p, ks[i]);
		if (v != SNIFF_NEED_MORE && v != verdict)
			abort();
	}

	/* ClientHello parsing. */
	int r = sniff_client_hello(p, n, &h);
	if (!memchr(h.sni, '\0', sizeof(h.sni)))
		abort();
	switch (r) {
	case 0:
		check_hello(&h, n);
		if (verdict != SNIFF_TLS)
			abort();
		if (parse_exact(p, h.consumed, &again) != 0 ||
		    memcmp(&h, &again, offsetof(struct sniff_hello, sni)) != 0 ||
		    strcmp(h.sni, again.sni) != 0 ||
		    memcmp(h.alpn_off, again.alpn_off, h.n_alpn * sizeof(h.alpn_off[0])) != 0 ||
		    memcmp(h.alpn_wire, again.alpn_wire, h.alpn_wire_len) != 0)
			abort();
		if (parse_exact(p, h.consumed - 1, &again) != -EAGAIN)
			abort();
		break;
	case -EAGAIN:
		if (h.need <= n || h.need > SNIFF_MAX_HELLO || h.reason)
			abort();
		break;
	case -EPROTO:
	case -E2BIG:
		if (!h.reason || !h.reason[0])
			abort();
		break;
	default:
		abort();
	}
	for (size_t k = n / 2; k < n; k += (n - k + 1) / 2) {
		int rk = parse_exact(p, k, &again);
		if (rk != -EAGAIN && rk != r)
			abort();
		if (rk == -EAGAIN && (again.need <= k || again.need > SNIFF_MAX_HELLO))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t split[SNIFF_MAX_HELLO + 64];

	check(data, size);

	/* One record: its payload again in three records. */
	if (size < 8 || size > SNIFF_MAX_HELLO_MSG || data[0] != SNIFF_TLS_CT_HANDSHAKE)
		return 0;
	size_t len = (size_t)data[3] << 8 | data[4];
	if (len + 5 != size)
		return 0;
	size_t a = 1 + data[size - 2] % (len - 1), b = 1 + data[size - 1] % (len - 1);
	if (a > b) {
		size_t t = a;
		a = b;
		b = t;
	}
	const size_t bounds[] = { 0, a, b, len };
	size_t k = 0;
	for (int i = 0; i < 3; i++) {
		size_t from = bounds[i], to = bounds[i + 1];
		if (to == from)
			continue;
		memcpy(split + k, data, 3);
		split[k + 3] = (uint8_t)((to - from) >> 8);
		split[k + 4] = (uint8_t)(to - from);
		memcpy(split + k + 5, data + 5 + from, to - from);
		k += 5 + to - from;
	}
	uint8_t *exact = copy_exact(split, k);
	check(exact, k);
	free(exact);
	return 0;
}
