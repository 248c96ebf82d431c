/* The active HTTP/2 layer (h2rw.h).
 *
 * A request's way:   HEADERS from the client (server session `cl`) →
 *                    rules of the request phase → (delay: held) → mock or
 *                    block answered on `cl`, or the edited head submitted
 *                    on the upstream session `up` (after the whole body
 *                    when a body edit keeps it) → DATA pulled by `up`'s
 *                    data source from the stream's buffer.
 * A response's way:  HEADERS from the upstream → rules of the response
 *                    phase → (delay: held) → the edited head on `cl` →
 *                    DATA pulled by `cl`'s data source.
 *
 * Flow control: a DATA chunk is acknowledged to its sender
 * (nghttp2_session_consume) when the other session's data source takes it
 * from the buffer, or at once when a body edit keeps it (bounded by
 * body_cap and H2RW_MAX_KEPT). A held half is the one place a stream
 * waits; holds end by deadline (h2rw_timeout) or by release, so a later
 * breakpoint holds with no deadline and releases after its edit. */
#include "mitm/h2rw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <nghttp2/nghttp2.h>

#include "mitm/held.h"
#include "mitm/httpflow.h"
#include "mitm/rules.h"

#define NO_DEADLINE UINT64_MAX

enum phase { P_REQ = 0, P_RESP = 1 };

/* One message of a stream: the request (client → upstream) or the response. */
struct half {
	struct http_headers h, trailers;
	bool head_done; /* the final head is in; more headers are trailers */
	bool ended;     /* END_STREAM from its sender */
	bool keep;      /* the body is kept whole for an edit */
	bool over;      /* kept past a bound: streamed as it is from there */
	bool edited;    /* the body was replaced: its length is ours */
	bool sent_head; /* the head went to the other side */
	bool held;
	uint64_t deadline; /* NO_DEADLINE: until released */
	bool bp;           /* a breakpoint holds it once it is all in */
	uint64_t held_id;  /* its item in cfg.held; 0: none */
	/* A throttle: body bytes go on at most `rate` a second (a token
	 * bucket); the data source waits until `wake` when it is empty. */
	uint64_t rate, at, wake;
	double tokens;
	bool no_body; /* HEAD, 204, 304 */
	/* Body bytes not yet taken by the other side: buf[off, len). The last
	 * `owed` of them are not acknowledged to the sender yet. */
	uint8_t *buf;
	size_t off, len, cap;
	size_t owed;
	const uint8_t *ext; /* a mock's body (the ruleset's), sent from here */
	size_t ext_len, ext_off;
	struct rules_plan plan;
};

struct h2s {
	struct h2rw *w;
	int32_t cl_id, up_id;
	bool cl_open, up_open;
	char *method, *scheme, *authority, *path, *protocol; /* as sent upstream */
	bool had_host;                                       /* the client sent Host itself */
	char host[256];
	int status; /* the response status as sent to the client */
	json_t *note;
	bool taken;
	bool local; /* answered here: no upstream stream */
	const struct rule_action *answer;
	const struct rule *answer_rule;
	struct half req, resp;
	struct h2s *prev, *next;
};

struct h2rw {
	struct h2rw_config cfg;
	char *peer, *scheme, *default_authority, *upstream_authority, *conn, *client;
	nghttp2_session *cl, *up;
	struct h2s *streams;
	size_t buffered, kept;
	json_t *done; /* "id" → note of finished streams, oldest first */
	uint64_t armed;
	bool dead, freeing, pumping;
};

/* ---- small helpers -------------------------------------------------------- */

static uint64_t now_ms(struct h2rw *w)
{
	if (w->cfg.ops.now_ms)
		return w->cfg.ops.now_ms(w->cfg.ctx);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static size_t half_size(const struct half *h)
{
	return h->len - h->off;
}

/* Acknowledges n bytes of a half to its sender. */
static void ack(struct h2s *s, enum phase ph, size_t n)
{
	struct h2rw *w = s->w;
	if (!n)
		return;
	nghttp2_session *src = ph == P_REQ ? w->cl : w->up;
	bool open = ph == P_REQ ? s->cl_open : s->up_open;
	int32_t id = ph == P_REQ ? s->cl_id : s->up_id;
	if (open)
		(void)nghttp2_session_consume(src, id, n);
	else
		(void)nghttp2_session_consume_connection(src, n);
}

static int half_append(struct h2s *s, struct half *h, const uint8_t *p, size_t n, bool acked)
{
	if (n == 0)
		return 0;
	if (h->len + n > h->cap) {
		if (h->off) {
			memmove(h->buf, h->buf + h->off, h->len - h->off);
			h->len -= h->off;
			h->off = 0;
		}
		if (h->len + n > h->cap) {
			size_t nc = h->cap ? h->cap : 4096;
			while (nc < h->len + n)
				nc *= 2;
			uint8_t *nb = realloc(h->buf, nc);
			if (!nb)
				return -ENOMEM;
			h->buf = nb;
			h->cap = nc;
		}
	}
	memcpy(h->buf + h->len, p, n);
	h->len += n;
	s->w->buffered += n;
	if (acked)
		s->w->kept += n;
	else
		h->owed += n;
	return 0;
}

/* Takes up to n bytes from the front; acknowledges the owed ones among them. */
static size_t half_take(struct h2s *s, enum phase ph, uint8_t *out, size_t n)
{
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	size_t have = half_size(h);
	if (n > have)
		n = have;
	if (out && n)
		memcpy(out, h->buf + h->off, n);
	h->off += n;
	s->w->buffered -= n;
	size_t left = have - n;
	size_t early = have - h->owed; /* acked bytes are in front */
	size_t early_taken = n < early ? n : early;
	s->w->kept -= early_taken;
	if (h->owed > left) {
		ack(s, ph, h->owed - left);
		h->owed = left;
	}
	if (h->off == h->len)
		h->off = h->len = 0;
	return n;
}

static void half_drop(struct h2s *s, enum phase ph)
{
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	(void)half_take(s, ph, NULL, half_size(h));
}

static void half_free(struct half *h)
{
	http_headers_free(&h->h);
	http_headers_free(&h->trailers);
	free(h->buf);
}

static void headers_set_length(struct http_headers *h, size_t n)
{
	http_headers_remove(h, "content-length");
	char v[32];
	int l = snprintf(v, sizeof(v), "%zu", n);
	(void)http_headers_add(h, "content-length", 14, v, (size_t)l);
}

static bool plan_edits_body(const struct rules_plan *plan, enum rule_dir phase)
{
	for (size_t i = 0; i < plan->ntransforms; i++)
		if ((plan->transforms[i]->on & phase) &&
		    (plan->transforms[i]->kind == RA_REPLACE_BODY ||
		     plan->transforms[i]->kind == RA_SET_JSON))
			return true;
	return false;
}

static uint32_t plan_delay(const struct rules_plan *plan, enum rule_dir phase)
{
	uint64_t ms = 0;
	for (size_t i = 0; i < plan->ntransforms; i++)
		if (plan->transforms[i]->kind == RA_DELAY && (plan->transforms[i]->on & phase))
			ms += plan->transforms[i]->ms;
	return ms > RULES_MAX_DELAY_MS ? RULES_MAX_DELAY_MS : (uint32_t)ms;
}

/* What a paced source gives at least at once: a tenth of a second's
 * worth, within [1 KiB, 16 KiB] (one DATA frame). */
static double pace_quantum(uint64_t rate)
{
	uint64_t q = rate / 10;
	return (double)(q < 1024 ? 1024 : q > 16384 ? 16384 : q);
}

static void host_of(const char *authority, char *host, size_t n)
{
	const char *a = authority ? authority : "";
	size_t len;
	if (*a == '[') {
		const char *rb = strchr(a, ']');
		a++;
		len = rb ? (size_t)(rb - a) : strlen(a);
	} else {
		const char *c = strrchr(a, ':');
		len = c ? (size_t)(c - a) : strlen(a);
	}
	if (len >= n)
		len = n - 1;
	for (size_t i = 0; i < len; i++)
		host[i] = (char)((a[i] >= 'A' && a[i] <= 'Z') ? a[i] + 32 : a[i]);
	host[len] = '\0';
}

/* Headers HTTP/2 forbids (RFC 9113 section 8.2.2); "host" unless the
 * client sent one. */
static bool not_sent(const struct http_header *e, bool keep_host)
{
	static const char *const conn[] = { "connection", "keep-alive", "proxy-connection",
					    "transfer-encoding", "upgrade" };
	for (size_t i = 0; i < sizeof(conn) / sizeof(conn[0]); i++)
		if (strcasecmp(e->name, conn[i]) == 0)
			return true;
	if (strcasecmp(e->name, "te") == 0 && strcasecmp(e->value, "trailers") != 0)
		return true;
	if (!keep_host && strcasecmp(e->name, "host") == 0)
		return true;
	return e->name_len == 0 || e->name[0] == ':';
}

/* An nva for nghttp2 (which copies it): pseudo-headers first, then `h`
 * with lowercase names. Free with nva_free. */
struct nva {
	nghttp2_nv *v;
	size_t n;
	char *names; /* the lowercase copies */
};

static int nva_build(struct nva *o, const char *const *pseudo, const struct http_headers *h,
		     bool keep_host)
{
	size_t np = 0, namebytes = 1;
	while (pseudo && pseudo[2 * np])
		np++;
	size_t nh = h ? h->n : 0;
	for (size_t i = 0; i < nh; i++)
		namebytes += h->v[i].name_len + 1;
	o->v = calloc(np + nh + 1, sizeof(*o->v));
	o->names = malloc(namebytes);
	o->n = 0;
	if (!o->v || !o->names) {
		free(o->v);
		free(o->names);
		return -ENOMEM;
	}
	for (size_t i = 0; i < np; i++) {
		const char *name = pseudo[2 * i], *value = pseudo[2 * i + 1];
		if (!value)
			continue;
		o->v[o->n++] = (nghttp2_nv){ (uint8_t *)name, (uint8_t *)value, strlen(name),
					     strlen(value), NGHTTP2_NV_FLAG_NONE };
	}
	char *nm = o->names;
	for (size_t i = 0; i < nh; i++) {
		const struct http_header *e = &h->v[i];
		if (not_sent(e, keep_host))
			continue;
		for (size_t k = 0; k < e->name_len; k++)
			nm[k] = (char)((e->name[k] >= 'A' && e->name[k] <= 'Z') ? e->name[k] + 32
										: e->name[k]);
		o->v[o->n++] = (nghttp2_nv){ (uint8_t *)nm, (uint8_t *)e->value, e->name_len,
					     e->value_len, NGHTTP2_NV_FLAG_NONE };
		nm += e->name_len + 1;
	}
	return 0;
}

static void nva_free(struct nva *o)
{
	free(o->v);
	free(o->names);
}

/* ---- holds and the timer -------------------------------------------------- */

static void continue_req(struct h2s *s);
static void continue_resp(struct h2s *s);

static void rearm(struct h2rw *w)
{
	uint64_t next = NO_DEADLINE;
	for (struct h2s *s = w->streams; s; s = s->next) {
		if (s->req.held && s->req.deadline < next)
			next = s->req.deadline;
		if (s->resp.held && s->resp.deadline < next)
			next = s->resp.deadline;
		if (s->req.wake && s->req.wake < next)
			next = s->req.wake;
		if (s->resp.wake && s->resp.wake < next)
			next = s->resp.wake;
	}
	if (next == NO_DEADLINE || next == w->armed || !w->cfg.ops.timer)
		return;
	w->armed = next;
	uint64_t now = now_ms(w);
	uint64_t ms = next > now ? next - now : 0;
	w->cfg.ops.timer(w->cfg.ctx, ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms);
}

/* One half of a stream waits: the request before it goes upstream (or is
 * answered), the response before it goes to the client. ms NO_DEADLINE:
 * until stream_release. */
static void stream_hold(struct h2s *s, enum phase ph, uint64_t ms)
{
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	h->held = true;
	h->deadline = ms == NO_DEADLINE ? NO_DEADLINE : now_ms(s->w) + ms;
}

static void stream_release(struct h2s *s, enum phase ph)
{
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	if (!h->held)
		return;
	h->held = false;
	if (ph == P_REQ)
		continue_req(s);
	else
		continue_resp(s);
}

/* ---- data sources --------------------------------------------------------- */

static ssize_t source_read(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t len,
			   uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct h2rw *w = ud;
	struct h2s *s = src->ptr;
	enum phase ph = session == w->up ? P_REQ : P_RESP;
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	size_t n;
	if (h->ext) {
		n = h->ext_len - h->ext_off < len ? h->ext_len - h->ext_off : len;
		memcpy(buf, h->ext + h->ext_off, n);
		h->ext_off += n;
		if (h->ext_off == h->ext_len)
			*flags |= NGHTTP2_DATA_FLAG_EOF;
		return (ssize_t)n;
	}
	if (h->rate && half_size(h) > 0) {
		/* Paced: what the bucket holds, or wait for a quantum. */
		uint64_t now = now_ms(w);
		double q = pace_quantum(h->rate);
		double burst = (double)(h->rate / 4) > 2 * q ? (double)(h->rate / 4) : 2 * q;
		h->tokens += (double)h->rate * (double)(now - h->at) / 1000.0;
		if (h->tokens > burst)
			h->tokens = burst;
		h->at = now;
		if (h->tokens < q && h->tokens < (double)half_size(h)) {
			h->wake = now + (uint64_t)((q - h->tokens) * 1000.0 / (double)h->rate) + 1;
			rearm(w);
			return NGHTTP2_ERR_DEFERRED;
		}
		if ((double)len > h->tokens)
			len = (size_t)h->tokens;
	}
	n = half_take(s, ph, buf, len);
	if (h->rate)
		h->tokens -= (double)n;
	if (half_size(h) == 0 && h->ended) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (h->trailers.n) {
			struct nva t;
			if (nva_build(&t, NULL, &h->trailers, false) == 0) {
				if (t.n && nghttp2_submit_trailer(session, sid, t.v, t.n) == 0)
					*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
				nva_free(&t);
			}
		}
		return (ssize_t)n;
	}
	if (n == 0)
		return NGHTTP2_ERR_DEFERRED;
	return (ssize_t)n;
}

/* ---- the request ---------------------------------------------------------- */

static void rst_client(struct h2s *s, uint32_t code)
{
	if (s->cl_open)
		(void)nghttp2_submit_rst_stream(s->w->cl, NGHTTP2_FLAG_NONE, s->cl_id, code);
}

static void send_answer(struct h2s *s)
{
	struct h2rw *w = s->w;
	const struct rule_action *a = s->answer;
	s->answer = NULL;
	if (!a || !s->cl_open)
		return;
	if (a->kind == RA_BLOCK && a->status == 444) {
		json_object_set_new(s->note, "reset", json_true());
		rst_client(s, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	struct http_headers h = { 0 };
	if (a->kind == RA_MOCK) {
		for (size_t i = 0; i < a->nheaders; i++)
			(void)http_headers_add(&h, a->headers[i].name, strlen(a->headers[i].name),
					       a->headers[i].value, strlen(a->headers[i].value));
		s->resp.ext = a->has_body ? a->body : (const uint8_t *)"";
		s->resp.ext_len = a->has_body ? a->body_len : 0;
		if (s->resp.ext_len == 0)
			s->resp.ext = NULL;
	} else {
		char b[160];
		int l = snprintf(b, sizeof(b), "blocked by rule %s\n", s->answer_rule->id);
		(void)http_headers_add(&h, "content-type", 12, "text/plain", 10);
		(void)half_append(s, &s->resp, (const uint8_t *)b, (size_t)l, true);
	}
	size_t blen = s->resp.ext ? s->resp.ext_len : half_size(&s->resp);
	headers_set_length(&h, blen);
	s->status = a->status;
	s->resp.head_done = s->resp.ended = s->resp.sent_head = true;
	char st[16];
	snprintf(st, sizeof(st), "%d", a->status);
	const char *pseudo[] = { ":status", st, NULL };
	struct nva nv;
	if (nva_build(&nv, pseudo, &h, false) == 0) {
		nghttp2_data_provider prd = { .source.ptr = s, .read_callback = source_read };
		if (nghttp2_submit_response(w->cl, s->cl_id, nv.v, nv.n, blen ? &prd : NULL) != 0)
			rst_client(s, NGHTTP2_INTERNAL_ERROR);
		nva_free(&nv);
	}
	http_headers_free(&h);
}

static void open_upstream(struct h2s *s)
{
	struct h2rw *w = s->w;
	s->req.sent_head = true;
	bool connect = s->method && strcmp(s->method, "CONNECT") == 0 && !s->protocol;
	const char *pseudo[] = { ":method",    s->method,
				 ":scheme",    connect ? NULL : s->scheme,
				 ":authority", s->authority[0] ? s->authority : NULL,
				 ":path",      connect ? NULL : s->path,
				 ":protocol",  s->protocol,
				 NULL };
	struct nva nv;
	if (nva_build(&nv, pseudo, &s->req.h, s->had_host) < 0) {
		rst_client(s, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	bool body = !(s->req.ended && half_size(&s->req) == 0 && s->req.trailers.n == 0 &&
		      !s->req.edited);
	nghttp2_data_provider prd = { .source.ptr = s, .read_callback = source_read };
	int32_t id = nghttp2_submit_request(w->up, NULL, nv.v, nv.n, body ? &prd : NULL, s);
	nva_free(&nv);
	if (id < 0) {
		/* After the upstream's GOAWAY: the client may try again elsewhere. */
		rules_note_action(s->note, "upstream stream refused");
		rst_client(s, NGHTTP2_REFUSED_STREAM);
		half_drop(s, P_REQ);
		return;
	}
	s->up_id = id;
	s->up_open = true;
}

/* A kept body, edited. */
static void flush_kept(struct h2s *s, enum phase ph)
{
	struct h2rw *w = s->w;
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	enum rule_dir dir = ph == P_REQ ? RULE_REQUEST : RULE_RESPONSE;
	const char *side = ph == P_REQ ? "request" : "response";
	uint8_t *nb = NULL;
	size_t nl = 0;
	const uint8_t *cur = h->buf ? h->buf + h->off : (const uint8_t *)"";
	int rc = rules_apply_body(&h->plan, dir, cur, half_size(h), w->cfg.body_cap, &nb, &nl);
	h->keep = false;
	char b[128];
	if (rc < 0) {
		snprintf(b, sizeof(b), "%s body edit skipped: %s", side,
			 rc == -E2BIG    ? "the result is over the cap"
			 : rc == -EPROTO ? "Content-Encoding"
					 : "no memory");
		rules_note_action(s->note, b);
		return;
	}
	if (!nb)
		return;
	if (w->kept - half_size(h) + nl > H2RW_MAX_KEPT) {
		snprintf(b, sizeof(b),
			 "%s body edit skipped: the connection keeps too much already", side);
		rules_note_action(s->note, b);
		free(nb);
		return;
	}
	json_object_set_new(s->note,
			    ph == P_REQ ? "request_body_upstream" : "response_body_original",
			    ph == P_REQ ? http_body_json(nb, nl, nl, false)
					: http_body_json(cur, half_size(h), half_size(h), false));
	half_drop(s, ph);
	if (half_append(s, h, nb, nl, true) < 0)
		rules_note_action(s->note, "body edit skipped: no memory");
	free(nb);
	headers_set_length(&h->h, half_size(h));
	h->edited = true;
}

/* ---- breakpoints ---------------------------------------------------------- */

static void pump(struct h2rw *w);

/* The held message's description for the registry. */
static json_t *bp_info(struct h2s *s, enum phase ph)
{
	struct h2rw *w = s->w;
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	size_t n = half_size(h), pv = n < HELD_PREVIEW ? n : HELD_PREVIEW;
	size_t ul = strlen(s->scheme) + strlen(s->authority) + strlen(s->path) + 8;
	char *url = malloc(ul);
	if (!url)
		return NULL;
	snprintf(url, ul, "%s://%s%s", s->scheme, s->authority, s->path);
	json_t *o = json_pack(
		"{s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:b,s:s,s:s,s:i}", "phase",
		ph == P_REQ ? "request" : "response", "proto", "h2", "method", s->method, "url",
		url, "rule", h->plan.terminal_rule ? h->plan.terminal_rule->id : "", "headers",
		http_headers_json(&h->h), "body",
		http_body_json(h->buf ? h->buf + h->off : (const uint8_t *)"", pv, n, pv < n),
		"nobody", ph == P_RESP && h->no_body, "conn", w->conn, "client", w->client,
		"stream", (int)s->cl_id);
	free(url);
	if (o && ph == P_RESP)
		json_object_set_new(o, "status", json_integer(s->status));
	if (o && w->peer)
		json_object_set_new(o, "peer", json_string(w->peer));
	return o;
}

static enum phase bp_phase(const struct h2s *s, uint64_t id)
{
	return s->req.held_id == id ? P_REQ : P_RESP;
}

/* A body given in the edits replaces the kept one; its length is ours. */
static void bp_edit_body(struct h2s *s, enum phase ph, const struct held_edits *e)
{
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	if (!e->has_body)
		return;
	half_drop(s, ph);
	if (e->body_len && half_append(s, h, e->body, e->body_len, true) < 0)
		rules_note_action(s->note, "breakpoint body edit skipped: no memory");
	headers_set_length(&h->h, half_size(h));
	h->edited = true;
}

static void bp_release(void *ctx, uint64_t id, const struct held_edits *e)
{
	struct h2s *s = ctx;
	struct h2rw *w = s->w;
	enum phase ph = bp_phase(s, id);
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	h->held_id = 0;
	const char *key = ph == P_REQ ? "request_breakpoint" : "response_breakpoint";
	if (e && ph == P_REQ) {
		json_object_set_new(s->note, "request_held",
				    json_pack("{s:s,s:s,s:o}", "method", s->method, "path", s->path,
					      "headers", http_headers_json(&h->h)));
		char *m = e->method[0] ? strdup(e->method) : NULL;
		char *path = e->path ? strdup(e->path) : NULL;
		if (m) {
			free(s->method);
			s->method = m;
		}
		if (path) {
			free(s->path);
			s->path = path;
		}
		(void)held_edits_apply_headers(e, &h->h);
		const struct http_header *nh = http_headers_find(&h->h, "host");
		char *na = nh && strcmp(nh->value, s->authority) ? strdup(nh->value) : NULL;
		if (na) {
			free(s->authority);
			s->authority = na;
			host_of(s->authority, s->host, sizeof(s->host));
		}
		bp_edit_body(s, ph, e);
		json_object_set_new(s->note, "request_headers_upstream", http_headers_json(&h->h));
	} else if (e) {
		json_object_set_new(s->note, "response_held",
				    json_pack("{s:i,s:o}", "status", s->status, "headers",
					      http_headers_json(&h->h)));
		if (e->status)
			s->status = e->status;
		(void)held_edits_apply_headers(e, &h->h);
		bp_edit_body(s, ph, e);
	}
	json_object_set_new(s->note, key, json_string(e ? "edited" : "released"));
	stream_release(s, ph);
	pump(w);
}

/* Killed: the stream is reset both ways; the connection goes on. */
static void bp_kill(void *ctx, uint64_t id)
{
	struct h2s *s = ctx;
	struct h2rw *w = s->w;
	enum phase ph = bp_phase(s, id);
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	h->held_id = 0;
	h->held = false;
	json_object_set_new(s->note, ph == P_REQ ? "request_breakpoint" : "response_breakpoint",
			    json_string("killed"));
	rst_client(s, NGHTTP2_CANCEL);
	if (s->up_open)
		(void)nghttp2_submit_rst_stream(w->up, NGHTTP2_FLAG_NONE, s->up_id, NGHTTP2_CANCEL);
	pump(w);
}

static const struct held_item_ops bp_ops = { .release = bp_release, .kill = bp_kill };

/* A breakpoint's message is all in: it waits in the registry. false: not
 * held (the registry is full), it goes on. */
static bool bp_hold(struct h2s *s, enum phase ph)
{
	struct h2rw *w = s->w;
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	h->bp = false;
	const char *key = ph == P_REQ ? "request_breakpoint" : "response_breakpoint";
	json_t *info = bp_info(s, ph);
	uint64_t id = info ? held_add(w->cfg.held, info, &bp_ops, s, now_ms(w)) : 0;
	if (!id) {
		json_object_set_new(s->note, key, json_string("skipped: not held (too many held)"));
		return false;
	}
	h->held_id = id;
	json_object_set_new(s->note, key, json_string("held"));
	stream_hold(s, ph, NO_DEADLINE);
	return true;
}

/* The terminal action is a breakpoint: keep the whole message for it. */
static void bp_mark(struct h2s *s, enum phase ph)
{
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	const char *side = ph == P_REQ ? "request" : "response";
	char b[64];
	snprintf(b, sizeof(b), "%s:breakpoint", side);
	rules_note_action(s->note, b);
	snprintf(b, sizeof(b), "%s_breakpoint_by", side);
	json_object_set_new(s->note, b, json_string(h->plan.terminal_rule->id));
	h->bp = true;
	h->keep = true;
}

static void continue_req(struct h2s *s)
{
	struct h2rw *w = s->w;
	struct half *h = &s->req;
	if (!h->head_done || h->held || !s->cl_open)
		return;
	if (s->local) {
		half_drop(s, P_REQ); /* what the client sends goes nowhere */
		if (s->answer)
			send_answer(s);
		return;
	}
	if (!h->sent_head) {
		if (h->keep && !h->over && !h->ended)
			return;
		if (h->keep && !h->over)
			flush_kept(s, P_REQ);
		if (h->bp && !h->over && bp_hold(s, P_REQ))
			return;
		open_upstream(s);
		return;
	}
	if (s->up_open)
		(void)nghttp2_session_resume_data(w->up, s->up_id);
	else
		half_drop(s, P_REQ);
}

static void request_head(struct h2s *s)
{
	struct h2rw *w = s->w;
	struct half *h = &s->req;
	h->head_done = true;
	if (w->upstream_authority) {
		free(s->authority);
		s->authority = strdup(w->upstream_authority);
		if (http_headers_find(&h->h, "host")) {
			http_headers_remove(&h->h, "host");
			(void)http_headers_add(&h->h, "host", 4, w->upstream_authority,
					       strlen(w->upstream_authority));
		}
	}
	const struct http_header *hh = http_headers_find(&h->h, "host");
	s->had_host = hh != NULL;
	if (!s->authority) {
		const char *a = hh ? hh->value : w->default_authority ? w->default_authority : "";
		s->authority = strdup(a);
	}
	if (!s->scheme)
		s->scheme = strdup(w->scheme);
	if (!s->method)
		s->method = strdup("GET");
	if (!s->path)
		s->path = strdup("/");
	if (!s->authority || !s->scheme || !s->method || !s->path) {
		rst_client(s, NGHTTP2_INTERNAL_ERROR);
		s->local = true;
		return;
	}
	/* Rules see (and edit) :authority as Host, as on HTTP/1.1. */
	if (!s->had_host)
		(void)http_headers_add(&h->h, "host", 4, s->authority, strlen(s->authority));
	host_of(s->authority, s->host, sizeof(s->host));
	struct rules_msg m = { .peer = w->peer,
			       .scheme = s->scheme,
			       .host = s->host,
			       .authority = s->authority,
			       .path = s->path,
			       .method = s->method,
			       .req_headers = &h->h };
	if (!rules_plan_for(w->cfg.rules, RULE_REQUEST, &m, &h->plan)) {
		continue_req(s);
		return;
	}
	rules_note_plan(s->note, &h->plan, RULE_REQUEST, "request");
	json_t *orig = http_headers_json(&h->h);
	(void)rules_apply_headers(&h->plan, RULE_REQUEST, &h->h);
	const struct http_header *nh = http_headers_find(&h->h, "host");
	if (nh && strcmp(nh->value, s->authority) != 0) {
		char *na = strdup(nh->value);
		if (na) {
			free(s->authority);
			s->authority = na;
			host_of(s->authority, s->host, sizeof(s->host));
		}
	}
	json_object_set_new(s->note, "request_original_headers", orig);
	const struct rule_action *t = h->plan.terminal;
	if (t && (t->kind == RA_MOCK || t->kind == RA_BLOCK)) {
		char b[96];
		snprintf(b, sizeof(b), "request:%s", rules_action_name(t->kind));
		rules_note_action(s->note, b);
		json_object_set_new(s->note, t->kind == RA_MOCK ? "mocked_by" : "blocked_by",
				    json_string(h->plan.terminal_rule->id));
		s->local = true;
		s->answer = t;
		s->answer_rule = h->plan.terminal_rule;
	} else {
		if (t && t->kind == RA_BREAKPOINT && w->cfg.held) {
			bp_mark(s, P_REQ);
		} else if (t) {
			char b[96];
			snprintf(b, sizeof(b), "request:%s skipped (not supported on HTTP/2 yet)",
				 rules_action_name(t->kind));
			rules_note_action(s->note, b);
		}
		if (plan_edits_body(&h->plan, RULE_REQUEST)) {
			const struct http_header *ce = http_headers_find(&h->h, "content-encoding");
			if (ce && strcasecmp(ce->value, "identity") != 0)
				rules_note_action(s->note,
						  "request body edit skipped: Content-Encoding");
			else
				h->keep = true;
		}
		json_t *up = http_headers_json(&h->h);
		if (!s->had_host) {
			/* What goes upstream: :authority, not Host. */
			size_t k;
			json_t *v;
			json_array_foreach(up, k, v)
			{
				if (strcasecmp(json_string_value(json_array_get(v, 0)), "host") ==
				    0)
					json_array_set_new(v, 0, json_string(":authority"));
			}
		}
		json_object_set_new(s->note, "request_headers_upstream", up);
	}
	uint32_t ms = plan_delay(&h->plan, RULE_REQUEST);
	if (ms)
		stream_hold(s, P_REQ, ms);
	if ((h->rate = rules_plan_rate(&h->plan, RULE_REQUEST)) != 0) {
		h->at = now_ms(w);
		h->tokens = pace_quantum(h->rate);
	}
	continue_req(s);
}

/* ---- the response --------------------------------------------------------- */

static void send_response(struct h2s *s)
{
	struct h2rw *w = s->w;
	struct half *h = &s->resp;
	h->sent_head = true;
	char st[16];
	snprintf(st, sizeof(st), "%d", s->status);
	const char *pseudo[] = { ":status", st, NULL };
	struct nva nv;
	if (nva_build(&nv, pseudo, &h->h, true) < 0) {
		rst_client(s, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	bool body = !(h->ended && half_size(h) == 0 && h->trailers.n == 0 && !h->edited);
	nghttp2_data_provider prd = { .source.ptr = s, .read_callback = source_read };
	if (nghttp2_submit_response(w->cl, s->cl_id, nv.v, nv.n, body ? &prd : NULL) != 0)
		rst_client(s, NGHTTP2_INTERNAL_ERROR);
	nva_free(&nv);
}

static void continue_resp(struct h2s *s)
{
	struct h2rw *w = s->w;
	struct half *h = &s->resp;
	if (!h->head_done || h->held)
		return;
	if (!s->cl_open) {
		half_drop(s, P_RESP);
		return;
	}
	if (!h->sent_head) {
		if (h->keep && !h->over && !h->ended)
			return;
		if (h->keep && !h->over)
			flush_kept(s, P_RESP);
		if (h->bp && !h->over && bp_hold(s, P_RESP))
			return;
		send_response(s);
		return;
	}
	(void)nghttp2_session_resume_data(w->cl, s->cl_id);
}

static void response_head(struct h2s *s)
{
	struct h2rw *w = s->w;
	struct half *h = &s->resp;
	h->head_done = true;
	h->no_body = strcmp(s->method, "HEAD") == 0 || s->status == 204 || s->status == 304;
	struct rules_msg m = { .peer = w->peer,
			       .scheme = s->scheme,
			       .host = s->host,
			       .authority = s->authority,
			       .path = s->path,
			       .method = s->method,
			       .req_headers = &s->req.h,
			       .status = s->status,
			       .resp_headers = &h->h };
	if (rules_plan_for(w->cfg.rules, RULE_RESPONSE, &m, &h->plan)) {
		rules_note_plan(s->note, &h->plan, RULE_RESPONSE, "response");
		json_object_set_new(s->note, "response_original",
				    json_pack("{s:i,s:o}", "status", s->status, "headers",
					      http_headers_json(&h->h)));
		(void)rules_apply_headers(&h->plan, RULE_RESPONSE, &h->h);
		for (size_t i = 0; i < h->plan.ntransforms; i++) {
			const struct rule_action *a = h->plan.transforms[i];
			if (a->kind == RA_SET_STATUS && (a->on & RULE_RESPONSE))
				s->status = a->status;
		}
		if (h->plan.terminal && h->plan.terminal->kind == RA_BREAKPOINT && w->cfg.held) {
			bp_mark(s, P_RESP);
		} else if (h->plan.terminal) {
			char b[96];
			snprintf(b, sizeof(b), "response:%s skipped (not supported on HTTP/2 yet)",
				 rules_action_name(h->plan.terminal->kind));
			rules_note_action(s->note, b);
		}
		if (plan_edits_body(&h->plan, RULE_RESPONSE) && !h->no_body) {
			const struct http_header *ce = http_headers_find(&h->h, "content-encoding");
			if (ce && strcasecmp(ce->value, "identity") != 0)
				rules_note_action(s->note,
						  "response body edit skipped: Content-Encoding");
			else
				h->keep = true;
		}
		uint32_t ms = plan_delay(&h->plan, RULE_RESPONSE);
		if (ms)
			stream_hold(s, P_RESP, ms);
		if ((h->rate = rules_plan_rate(&h->plan, RULE_RESPONSE)) != 0) {
			h->at = now_ms(w);
			h->tokens = pace_quantum(h->rate);
		}
	}
	continue_resp(s);
}

/* A 1xx (not 101, which HTTP/2 has not) goes on as it is. */
static void interim(struct h2s *s)
{
	struct half *h = &s->resp;
	if (s->cl_open && !h->sent_head) {
		char st[16];
		snprintf(st, sizeof(st), "%d", s->status);
		const char *pseudo[] = { ":status", st, NULL };
		struct nva nv;
		if (nva_build(&nv, pseudo, &h->h, true) == 0) {
			(void)nghttp2_submit_headers(s->w->cl, NGHTTP2_FLAG_NONE, s->cl_id, NULL,
						     nv.v, nv.n, NULL);
			nva_free(&nv);
		}
	}
	http_headers_free(&h->h);
	memset(&h->h, 0, sizeof(h->h));
	s->status = 0;
}

/* ---- streams -------------------------------------------------------------- */

/* Its held items leave the registry: nothing will release them here. */
static void stream_unhold(struct h2s *s, const char *why)
{
	struct half *hs[] = { &s->req, &s->resp };
	for (size_t i = 0; i < 2; i++)
		if (hs[i]->held_id) {
			held_remove(s->w->cfg.held, hs[i]->held_id, why);
			hs[i]->held_id = 0;
		}
}

static void stream_free(struct h2s *s)
{
	struct h2rw *w = s->w;
	stream_unhold(s, "closed");
	if (s->prev)
		s->prev->next = s->next;
	else
		w->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->buffered -= half_size(&s->req) + half_size(&s->resp);
	w->kept -= (half_size(&s->req) - s->req.owed) + (half_size(&s->resp) - s->resp.owed);
	if (!s->taken && json_object_size(s->note) && !w->freeing) {
		char k[16];
		snprintf(k, sizeof(k), "%u", (unsigned)s->cl_id);
		if (json_object_size(w->done) >= H2RW_MAX_NOTES) {
			const char *oldest = json_object_iter_key(json_object_iter(w->done));
			if (oldest)
				json_object_del(w->done, oldest);
		}
		json_object_set(w->done, k, s->note);
	}
	json_decref(s->note);
	half_free(&s->req);
	half_free(&s->resp);
	free(s->method);
	free(s->scheme);
	free(s->authority);
	free(s->path);
	free(s->protocol);
	free(s);
}

static struct h2s *stream_new(struct h2rw *w, int32_t id)
{
	struct h2s *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->w = w;
	s->cl_id = id;
	s->cl_open = true;
	s->note = json_object();
	if (!s->note) {
		free(s);
		return NULL;
	}
	s->next = w->streams;
	if (w->streams)
		w->streams->prev = s;
	w->streams = s;
	return s;
}

static struct h2s *stream_of(struct h2rw *w, nghttp2_session *session, int32_t id)
{
	struct h2s *s = nghttp2_session_get_stream_user_data(session, id);
	(void)w;
	return s;
}

/* ---- nghttp2 callbacks (both sessions) ------------------------------------ */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct h2rw *w = ud;
	if (w->freeing || session != w->cl || frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct h2s *s = stream_new(w, frame->hd.stream_id);
	if (!s)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	(void)nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
	return 0;
}

static int set_str(char **dst, const uint8_t *v, size_t n)
{
	free(*dst);
	return http_strdup_n(dst, (const char *)v, n);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct h2rw *w = ud;
	(void)flags;
	if (w->freeing || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct h2s *s = stream_of(w, session, frame->hd.stream_id);
	if (!s)
		return 0;
	bool req = session == w->cl;
	struct half *h = req ? &s->req : &s->resp;
	int rc = 0;
	if (h->head_done) {
		rc = http_headers_add(&h->trailers, (const char *)name, namelen,
				      (const char *)value, valuelen);
	} else if (namelen && name[0] == ':') {
		if (req) {
			if (namelen == 7 && memcmp(name, ":method", 7) == 0)
				rc = set_str(&s->method, value, valuelen);
			else if (namelen == 7 && memcmp(name, ":scheme", 7) == 0)
				rc = set_str(&s->scheme, value, valuelen);
			else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
				rc = set_str(&s->authority, value, valuelen);
			else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
				rc = set_str(&s->path, value, valuelen);
			else if (namelen == 9 && memcmp(name, ":protocol", 9) == 0)
				rc = set_str(&s->protocol, value, valuelen);
		} else if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
			int st = 0;
			for (size_t i = 0; i < valuelen && i < 3; i++)
				st = st * 10 + (value[i] - '0');
			s->status = st;
		}
	} else {
		rc = http_headers_add(&h->h, (const char *)name, namelen, (const char *)value,
				      valuelen);
	}
	/* Over the bound or out of memory: that stream is reset. */
	return rc < 0 ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct h2rw *w = ud;
	if (w->freeing)
		return 0;
	bool from_client = session == w->cl;
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		if (from_client)
			(void)nghttp2_submit_goaway(w->up, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR,
						    NULL, 0);
		else
			/* No new streams from the client: they could not go on. */
			(void)nghttp2_submit_goaway(w->cl, NGHTTP2_FLAG_NONE,
						    nghttp2_session_get_last_proc_stream_id(w->cl),
						    NGHTTP2_NO_ERROR, NULL, 0);
		return 0;
	}
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	struct h2s *s = stream_of(w, session, frame->hd.stream_id);
	if (!s)
		return 0;
	bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
	if (from_client) {
		if (end)
			s->req.ended = true;
		if (frame->hd.type == NGHTTP2_HEADERS && !s->req.head_done)
			request_head(s);
		else if (end)
			continue_req(s);
		return 0;
	}
	if (frame->hd.type == NGHTTP2_HEADERS && !s->resp.head_done) {
		if (s->status >= 100 && s->status < 200) {
			interim(s);
			return 0;
		}
		if (end)
			s->resp.ended = true;
		response_head(s);
		return 0;
	}
	if (end) {
		s->resp.ended = true;
		continue_resp(s);
	}
	return 0;
}

static void keep_over(struct h2s *s, enum phase ph, const char *why)
{
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	char b[128];
	snprintf(b, sizeof(b), "%s body edit skipped: %s", ph == P_REQ ? "request" : "response",
		 why);
	rules_note_action(s->note, b);
	h->over = true;
	if (ph == P_REQ)
		continue_req(s);
	else
		continue_resp(s);
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t sid, const uint8_t *data,
			 size_t len, void *ud)
{
	struct h2rw *w = ud;
	(void)flags;
	struct h2s *s = w->freeing ? NULL : stream_of(w, session, sid);
	if (!s) {
		(void)nghttp2_session_consume(session, sid, len);
		return 0;
	}
	enum phase ph = session == w->cl ? P_REQ : P_RESP;
	struct half *h = ph == P_REQ ? &s->req : &s->resp;
	bool gone = ph == P_REQ ? (s->local || (h->sent_head && !s->up_open)) : !s->cl_open;
	if (gone || (ph == P_RESP && h->no_body)) {
		(void)nghttp2_session_consume(session, sid, len);
		return 0;
	}
	bool keeping = h->keep && !h->over;
	if (half_append(s, h, data, len, keeping) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (keeping) {
		(void)nghttp2_session_consume(session, sid, len);
		if (half_size(h) > w->cfg.body_cap) {
			char b[64];
			snprintf(b, sizeof(b), "larger than %zu bytes", w->cfg.body_cap);
			keep_over(s, ph, b);
		} else if (w->kept > H2RW_MAX_KEPT) {
			keep_over(s, ph, "the connection keeps too much already");
		}
		return 0;
	}
	if (h->sent_head)
		(void)nghttp2_session_resume_data(ph == P_REQ ? w->up : w->cl,
						  ph == P_REQ ? s->up_id : s->cl_id);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t sid, uint32_t code, void *ud)
{
	struct h2rw *w = ud;
	if (w->freeing)
		return 0;
	struct h2s *s = stream_of(w, session, sid);
	if (!s)
		return 0;
	if (session == w->cl) {
		s->cl_open = false;
		half_drop(s, P_RESP);
		if (s->up_open) {
			/* The client is gone (reset, or done before the upload
			 * was): the upstream stream ends too. */
			uint32_t c = code == NGHTTP2_NO_ERROR && s->resp.ended ? NGHTTP2_NO_ERROR
									       : NGHTTP2_CANCEL;
			(void)nghttp2_submit_rst_stream(w->up, NGHTTP2_FLAG_NONE, s->up_id, c);
		}
		half_drop(s, P_REQ); /* acknowledged on the connection */
		s->req.held = s->resp.held = false;
		stream_unhold(s, "the client closed the stream");
	} else {
		s->up_open = false;
		half_drop(s, P_REQ);
		if (!s->resp.ended) {
			if (code != NGHTTP2_NO_ERROR)
				json_object_set_new(s->note, "upstream_reset", json_integer(code));
			rst_client(s, code == NGHTTP2_NO_ERROR ? NGHTTP2_INTERNAL_ERROR : code);
		}
	}
	if (!s->cl_open && !s->up_open)
		stream_free(s);
	return 0;
}

/* A request HEADERS nghttp2 could not send (the upstream's GOAWAY came
 * first): the stream never opened, and no close will be reported. */
static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame, int err,
			     void *ud)
{
	struct h2rw *w = ud;
	(void)err;
	if (w->freeing || session != w->up || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	for (struct h2s *s = w->streams; s; s = s->next) {
		if (s->up_id != frame->hd.stream_id || !s->up_open)
			continue;
		if (nghttp2_session_get_stream_user_data(session, s->up_id))
			return 0; /* open: its close comes */
		s->up_open = false;
		half_drop(s, P_REQ);
		rules_note_action(s->note, "upstream stream refused");
		rst_client(s, NGHTTP2_REFUSED_STREAM);
		if (!s->cl_open)
			stream_free(s);
		return 0;
	}
	return 0;
}

/* ---- driving -------------------------------------------------------------- */

static void fail(struct h2rw *w, const char *why)
{
	if (w->dead)
		return;
	w->dead = true;
	if (w->cfg.ops.fail)
		w->cfg.ops.fail(w->cfg.ctx, why);
}

/* Sends what both sessions have, until neither has more (what one sends
 * can acknowledge data of the other). */
static void pump(struct h2rw *w)
{
	if (w->pumping)
		return;
	w->pumping = true;
	for (int round = 0; round < 1000 && !w->dead; round++) {
		bool any = false;
		for (int k = 0; k < 2 && !w->dead; k++) {
			nghttp2_session *sess = k ? w->cl : w->up;
			for (;;) {
				const uint8_t *d;
				ssize_t n = nghttp2_session_mem_send(sess, &d);
				if (n < 0) {
					fail(w, nghttp2_strerror((int)n));
					break;
				}
				if (n == 0)
					break;
				any = true;
				if (k)
					w->cfg.ops.to_client(w->cfg.ctx, d, (size_t)n);
				else
					w->cfg.ops.to_upstream(w->cfg.ctx, d, (size_t)n);
				if (w->dead)
					break;
			}
		}
		if (!any)
			break;
	}
	w->pumping = false;
	if (!w->dead)
		rearm(w);
}

static void feed(struct h2rw *w, nghttp2_session *sess, const uint8_t *p, size_t n)
{
	if (w->dead)
		return;
	ssize_t rc = nghttp2_session_mem_recv(sess, p, n);
	if (rc < 0) {
		/* Its GOAWAY (when there is one) goes out, the other side hears
		 * the connection end. */
		nghttp2_session *other = sess == w->cl ? w->up : w->cl;
		(void)nghttp2_session_terminate_session(other, NGHTTP2_NO_ERROR);
		pump(w);
		char why[96];
		snprintf(why, sizeof(why), "HTTP/2 from the %s: %s",
			 sess == w->cl ? "client" : "upstream", nghttp2_strerror((int)rc));
		fail(w, why);
		return;
	}
	pump(w);
}

void h2rw_client(struct h2rw *w, const uint8_t *p, size_t n)
{
	feed(w, w->cl, p, n);
}

void h2rw_server(struct h2rw *w, const uint8_t *p, size_t n)
{
	feed(w, w->up, p, n);
}

void h2rw_flush(struct h2rw *w)
{
	if (!w->dead)
		pump(w);
}

void h2rw_timeout(struct h2rw *w)
{
	if (w->dead)
		return;
	w->armed = NO_DEADLINE;
	uint64_t now = now_ms(w);
	for (struct h2s *s = w->streams; s; s = s->next) {
		if (s->req.held && s->req.deadline <= now)
			stream_release(s, P_REQ);
		if (s->resp.held && s->resp.deadline <= now)
			stream_release(s, P_RESP);
		if (s->req.wake && s->req.wake <= now) {
			s->req.wake = 0;
			if (s->up_open)
				(void)nghttp2_session_resume_data(w->up, s->up_id);
		}
		if (s->resp.wake && s->resp.wake <= now) {
			s->resp.wake = 0;
			if (s->cl_open)
				(void)nghttp2_session_resume_data(w->cl, s->cl_id);
		}
	}
	rearm(w);
	pump(w);
}

bool h2rw_failed(const struct h2rw *w)
{
	return w->dead;
}

size_t h2rw_buffered(const struct h2rw *w)
{
	return w->buffered;
}

json_t *h2rw_take_note(struct h2rw *w, uint32_t stream_id)
{
	for (struct h2s *s = w->streams; s; s = s->next)
		if ((uint32_t)s->cl_id == stream_id) {
			if (s->taken || json_object_size(s->note) == 0)
				return NULL;
			s->taken = true;
			return json_incref(s->note);
		}
	char k[16];
	snprintf(k, sizeof(k), "%u", (unsigned)stream_id);
	json_t *n = json_incref(json_object_get(w->done, k));
	if (n)
		json_object_del(w->done, k);
	return n;
}

/* ---- setup ---------------------------------------------------------------- */

static nghttp2_session_callbacks *callbacks(void)
{
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb) != 0)
		return NULL;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
	return cb;
}

struct h2rw *h2rw_new(const struct h2rw_config *cfg)
{
	struct h2rw *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->cfg = *cfg;
	if (!w->cfg.body_cap)
		w->cfg.body_cap = H2RW_DEFAULT_BODY_CAP;
	w->cfg.rules = ruleset_ref(cfg->rules);
	w->armed = NO_DEADLINE;
	w->peer = cfg->peer ? strdup(cfg->peer) : NULL;
	w->scheme = strdup(cfg->scheme ? cfg->scheme : "https");
	w->default_authority = cfg->default_authority ? strdup(cfg->default_authority) : NULL;
	w->upstream_authority = cfg->upstream_authority ? strdup(cfg->upstream_authority) : NULL;
	w->conn = strdup(cfg->conn ? cfg->conn : "");
	w->client = strdup(cfg->client ? cfg->client : "");
	w->done = json_object();
	nghttp2_session_callbacks *cb = callbacks();
	nghttp2_option *opt = NULL;
	if (!cb || nghttp2_option_new(&opt) != 0)
		goto fail;
	nghttp2_option_set_no_auto_window_update(opt, 1);
	if (!w->done || !w->scheme || (cfg->peer && !w->peer) ||
	    (cfg->default_authority && !w->default_authority) ||
	    (cfg->upstream_authority && !w->upstream_authority) || !w->conn || !w->client ||
	    nghttp2_session_server_new2(&w->cl, cb, w, opt) != 0 ||
	    nghttp2_session_client_new2(&w->up, cb, w, opt) != 0)
		goto fail;
	nghttp2_settings_entry to_client[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2RW_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2RW_STREAM_WINDOW },
	};
	nghttp2_settings_entry to_upstream[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2RW_STREAM_WINDOW },
	};
	if (nghttp2_submit_settings(w->cl, NGHTTP2_FLAG_NONE, to_client, 2) != 0 ||
	    nghttp2_submit_settings(w->up, NGHTTP2_FLAG_NONE, to_upstream, 2) != 0 ||
	    nghttp2_session_set_local_window_size(w->cl, NGHTTP2_FLAG_NONE, 0, H2RW_CONN_WINDOW) !=
		    0 ||
	    nghttp2_session_set_local_window_size(w->up, NGHTTP2_FLAG_NONE, 0, H2RW_CONN_WINDOW) !=
		    0)
		goto fail;
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	return w;
fail:
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	h2rw_free(w);
	return NULL;
}

void h2rw_free(struct h2rw *w)
{
	if (!w)
		return;
	w->freeing = true;
	nghttp2_session_del(w->cl);
	nghttp2_session_del(w->up);
	while (w->streams)
		stream_free(w->streams);
	json_decref(w->done);
	free(w->peer);
	free(w->scheme);
	free(w->default_authority);
	free(w->upstream_authority);
	free(w->conn);
	free(w->client);
	ruleset_unref(w->cfg.rules);
	free(w);
}
