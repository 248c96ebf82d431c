/* libFuzzer target for the CA page (http://wgmitm.internal): the HTTP
 * requests a peer sends to port 80 of the tunnel address, over real netstack
 * connections from a hand-made TCP client (fuzz_tcp_peer.h), into
 * capage_tcp_accept and the connection's recv/sent callbacks.
 *
 * Input: byte 0 picks max_conns (bits 0-1: default, 1, 2, 4) and idle_ms
 * (bits 2-3: default, 100, 1000, 5000 ms); then
 * operations, each a byte: bits 0-2 the operation, bits 3-4 the connection
 * (up to four at once), bits 5-7 an argument:
 *   0 connect      arg bit 0: IPv6; bit 1: acknowledge only on "ack";
 *                  bit 2: announce a 1 KiB window
 *   1 data         a length (1 byte; bit 7 set: 15 bits over 2 bytes), the
 *                  bytes, sent as far as the server's window allows
 *   2 fin          3 reset
 *   4 ack          acknowledge what arrived; arg picks the window announced
 *   5 ticks        lwIP's TCP timers, 1 << arg ticks of 100 ms
 *   6 time         the page's clock moves on (idle close), arg picks how far
 *   7 pipeline     a count byte and a length-prefixed chunk sent that many
 *                  times (fills the server's send buffer with few bytes)
 * The clock and sockets are fuzz_uv.h's: nothing waits on real time.
 *
 * Invariants beyond "no crash / no sanitizer report": what each connection
 * receives is a sequence of whole responses ("HTTP/1.1 " status line, a
 * status the page uses, Content-Length, then that many body bytes unless it
 * answered HEAD); never more connections than max_conns are open; at the
 * end, once the idle time has passed in silence, none is. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "fuzz_uv.h"
#include "fuzz_tcp_peer.h"

#include "mitm/capage.h"
#include "fuzz_reader.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed CA (P-256; the subject has characters the page must escape), so
 * every run serves the same bytes. Only the certificate is needed. */
static const char ca_pem[] = "-----BEGIN CERTIFICATE-----\n"
			     "MIIB0jCCAXigAwIBAgIUdB+hcK079UNwg07tr5ObTmNOCvowCgYIKoZIzj0EAwIw\n"
			     "NTEPMA0GA1UECgwGd2dtaXRtMSIwIAYDVQQDDBl3Z21pdG0gQ0EgPGZ1eno+ICYg\n"
			     "InRlc3QiMB4XDTI2MTIwMzA3NTg0M1oXDTM2MTEzMDA3NTg0M1owNTEPMA0GA1UE\n"
			     "CgwGd2dtaXRtMSIwIAYDVQQDDBl3Z21pdG0gQ0EgPGZ1eno+ICYgInRlc3QiMFkw\n"
			     "EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEQq5rAycYq3+IyKxGveDomOV9REzvagOo\n"
			     "pHOTFxERgvEIjSTmdL/UUBg1bTZNPizbSdXHtsLTGwrH7dyTtvn3a6NmMGQwHQYD\n"
			     "VR0OBBYEFJbaK+AUm0aJJSZxWlhDvbyOSB4yMB8GA1UdIwQYMBaAFJbaK+AUm0aJ\n"
			     "JSZxWlhDvbyOSB4yMBIGA1UdEwEB/wQIMAYBAf8CAQAwDgYDVR0PAQH/BAQDAgEG\n"
			     "MAoGCCqGSM49BAMCA0gAMEUCIAn5w+Atw66+sHqLwG7LD2EaCu+W+FiDCAJcFLKf\n"
			     "Fs4FAiEA4HkBQwb63v1oS0CVr3NsQZhJxSLDTeQPskMaN/qZXv8=\n"
			     "-----END CERTIFICATE-----\n";

static X509 *ca;
static uv_loop_t loop;
static bool debug; /* WGMITM_FUZZ_DEBUG set: what each input did, on stderr */

/* ---- What a connection receives: whole responses ---------------------- */

enum rx_state { RX_HEAD, RX_AFTER_HEAD, RX_BODY };

struct rx {
	enum rx_state st;
	char head[CAPAGE_MAX_HEAD];
	size_t head_len;
	size_t body_left; /* Content-Length of the last head */
	char peek[9];     /* after a head: the body, or the next head (HEAD) */
	size_t peek_len;
};

static struct rx rx[TCPP_CONNS];

static void head_done(struct rx *r)
{
	static const char *const statuses[] = { "200 ", "400 ", "404 ", "405 ",
						"413 ", "414 ", "431 " };
	bool ok = r->head_len > 9 && memcmp(r->head, "HTTP/1.1 ", 9) == 0;
	bool known = false;
	for (size_t i = 0; ok && i < sizeof(statuses) / sizeof(statuses[0]); i++)
		known |= r->head_len > 13 && memcmp(r->head + 9, statuses[i], 4) == 0;
	r->head[r->head_len] = '\0';
	const char *cl = strstr(r->head, "\r\nContent-Length: ");
	if (!ok || !known || !cl) {
		fprintf(stderr, "not a response head: %s\n", r->head);
		abort();
	}
	r->body_left = strtoul(cl + 18, NULL, 10);
	r->head_len = 0;
	r->peek_len = 0;
	r->st = RX_AFTER_HEAD;
}

static void rx_byte(struct rx *r, char ch);

/* After a head: a body never starts with a status line, so 9 bytes tell a
 * HEAD response (the next head follows) from a GET's body. */
static void rx_decide(struct rx *r)
{
	if (r->body_left == 0 || memcmp(r->peek, "HTTP/1.1 ", 9) == 0) {
		r->st = RX_HEAD;
		r->body_left = 0;
	} else {
		r->st = RX_BODY;
	}
	size_t n = r->peek_len;
	r->peek_len = 0;
	for (size_t i = 0; i < n; i++)
		rx_byte(r, r->peek[i]);
}

static void rx_byte(struct rx *r, char ch)
{
	switch (r->st) {
	case RX_HEAD:
		if (r->head_len + 1 >= sizeof(r->head)) {
			fprintf(stderr, "response head without an end\n");
			abort();
		}
		r->head[r->head_len++] = ch;
		if (r->head_len >= 4 && memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4) == 0)
			head_done(r);
		return;
	case RX_AFTER_HEAD:
		r->peek[r->peek_len++] = ch;
		if (r->peek_len == sizeof(r->peek) || r->body_left == 0)
			rx_decide(r);
		return;
	case RX_BODY:
		if (--r->body_left == 0)
			r->st = RX_HEAD;
		return;
	}
}

static void on_data(void *ctx, size_t i, const uint8_t *data, size_t len)
{
	(void)ctx;
	for (size_t k = 0; k < len; k++)
		rx_byte(&rx[i], (char)data[k]);
}

/* ---- The target ------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuv_init();
	BIO *b = BIO_new_mem_buf(ca_pem, -1);
	ca = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!ca || uv_loop_init(&loop) != 0)
		abort();
	debug = getenv("WGMITM_FUZZ_DEBUG") != NULL;
	return 0;
}

static const uint16_t windows[8] = { 0xffff, 64, 8, 1, 0, 0x200, 16, 2 };
static const uint64_t advances[8] = { 1, 10, 100, 1000, 5000, 30000, 60000, 600000 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	fuv_reset();
	memset(rx, 0, sizeof(rx));
	static const size_t max_conns[4] = { 0, 1, 2, 4 };
	static const uint32_t idle[4] = { 0, 100, 1000, 5000 };
	struct capage_config cfg = {
		.ca = ca,
		.max_conns = max_conns[data[0] & 3],
		.idle_ms = idle[(data[0] >> 2) & 3],
	};
	inet_pton(AF_INET, "10.77.0.1", &cfg.addr4);
	inet_pton(AF_INET6, "fd77::1", &cfg.addr6);
	size_t limit = cfg.max_conns ? cfg.max_conns : CAPAGE_DEFAULT_MAX_CONNS;
	struct capage *page = capage_new(&loop, &cfg);
	if (!page)
		abort();
	static struct tcpp t;
	if (!tcpp_init(&t, &loop, capage_tcp_accept, page))
		abort();
	t.on_data = on_data;

	struct reader r = { data + 1, size - 1 };
	uint8_t op;
	for (int n = 0; n < 1024 && get8(&r, &op); n++) {
		size_t i = (op >> 3) & 3;
		unsigned arg = op >> 5;
		const uint8_t *chunk;
		size_t len;
		uint8_t count;
		switch (op & 7) {
		case 0:
			if (tcpp_connect(&t, i, arg & 1, CAPAGE_PORT, arg & 2,
					 arg & 4 ? 8 : 0xffff))
				memset(&rx[i], 0, sizeof(rx[i]));
			break;
		case 1:
			if (get_chunk(&r, &chunk, &len))
				tcpp_send(&t, i, chunk, len);
			break;
		case 2:
			tcpp_fin(&t, i);
			break;
		case 3:
			tcpp_rst(&t, i);
			break;
		case 4:
			tcpp_ack(&t, i, windows[arg]);
			break;
		case 5:
			tcpp_ticks(&t, 1u << arg);
			break;
		case 6:
			fuv_advance(advances[arg]);
			tcpp_pump(&t);
			break;
		case 7:
			if (!get8(&r, &count) || !get_chunk(&r, &chunk, &len))
				break;
			for (unsigned k = 0; k < count && len > 0; k++)
				if (tcpp_send(&t, i, chunk, len) < len)
					break; /* the window is closed */
			break;
		}
		struct capage_stats st;
		capage_get_stats(page, &st);
		if (st.conns_active > limit) {
			fprintf(stderr, "%llu connections open, max_conns %zu\n",
				(unsigned long long)st.conns_active, limit);
			abort();
		}
	}

	/* With the clock moved on by the idle time and the clients silent,
	 * every connection is closed, whatever it was doing. */
	fuv_advance((cfg.idle_ms ? cfg.idle_ms : CAPAGE_IDLE_MS) + 1);
	tcpp_pump(&t);
	struct capage_stats end;
	capage_get_stats(page, &end);
	if (end.conns_active != 0) {
		fprintf(stderr, "%llu connections open after the idle time\n",
			(unsigned long long)end.conns_active);
		abort();
	}

	if (debug) {
		struct capage_stats st;
		capage_get_stats(page, &st);
		fprintf(stderr,
			"accepted %llu refused %llu idle %llu requests %llu (page %llu pem %llu "
			"der %llu "
			"mobileconfig %llu 404 %llu rejected %llu) bytes %llu\n",
			(unsigned long long)st.conns_accepted, (unsigned long long)st.conns_refused,
			(unsigned long long)st.conns_idle, (unsigned long long)st.requests,
			(unsigned long long)st.page, (unsigned long long)st.pem,
			(unsigned long long)st.der, (unsigned long long)st.mobileconfig,
			(unsigned long long)st.not_found, (unsigned long long)st.rejected,
			(unsigned long long)st.bytes_sent);
	}
	capage_free(page);
	tcpp_free(&t);
	fuv_pump(&loop);
	fuv_finish();
	return 0;
}
