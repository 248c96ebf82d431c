/* The active HTTP/1.1 layer (h1rw.h).
 *
 * A request's way:   head parsed → rules of the request phase → (delay:
 *                    held) → mock/block answered here, or the edited head
 *                    (and the body, streamed or kept for an edit) upstream
 *                    → queued for its response.
 * A response's way:  head parsed → rules of the response phase, with its
 *                    request → the edited head and the body to the client
 *                    → its request leaves the queue.
 * Held states stop the client's parser (HPE_PAUSED); what the client sends
 * meanwhile waits in `held`, bounded. */
#include "mitm/h1rw.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "mitm/http1.h"
#include "mitm/httpflow.h"
#include "mitm/rules.h"
#include "mitm/wsrw.h"

struct rwreq {
	char *method, *authority, *host, *path;
	struct http_headers h; /* as sent upstream */
	json_t *note;          /* the exchange's note (a reference) */
	bool head;             /* HEAD: its response has no body */
	bool local;            /* answered here (mock, block): no response comes */
	bool taken;            /* its note went to a record already */
	struct rwreq *next;
};

/* One direction's message being parsed. */
struct side {
	llhttp_t p;
	struct http_headers h;
	char *start; /* request target, or reason phrase */
	size_t start_len;
	char *field;
	size_t field_len;
	char *value;
	size_t value_len;
	bool oversize; /* the head went over its bound */
	bool chunked;  /* the body comes chunked (re-chunked on the way) */
	bool keep;     /* the body is kept for an edit */
	bool drop;     /* the body goes nowhere (answered here) */
	uint8_t *buf;  /* kept body */
	size_t len;
	bool over;    /* past the cap: streamed as it is from there */
	bool encoded; /* Content-Encoding: the edit is skipped */
	struct rules_plan plan;
	bool planned;
	json_t *note;
	int status;      /* response: the status to send */
	bool head_out;   /* the head has been written */
	bool throttled;  /* a throttle runs for this message */
	bool bp;         /* a breakpoint holds it once it is all in */
	bool nobody;     /* response: no body may follow (HEAD, 204, 304) */
	char method[32]; /* request: the method sent, when a release changed it */
};

struct h1rw {
	struct h1rw_config cfg;
	char *peer, *default_authority, *upstream_authority;
	struct side req, resp;
	struct rwreq *queue, *tail; /* sent upstream (or answered here), oldest first */
	size_t queued;
	struct rwreq *cur_req; /* the request being parsed, once its head is in */
	json_t *notes;         /* finished notes for the records, in order */
	bool passthrough;      /* upgraded or unparseable: bytes as they are */
	bool dead;             /* reset */
	/* Delays and retargets: bytes for the upstream wait in `upbuf` from
	 * each mark on; the first mark runs (ops.delay or ops.retarget, then
	 * h1rw_resume). A retarget runs once `wait` more responses are in. */
	uint8_t *upbuf;
	size_t uplen;
	struct mark {
		size_t off;
		uint32_t ms;            /* a delay */
		bool retarget, started; /* a retarget (target NULL: the dialled server) */
		struct h1rw_target *target;
		size_t wait;       /* responses still due before it */
		struct rwreq *req; /* whose redirect it is (for its note) */
	} marks[HTTP1_MAX_PENDING + 1];
	size_t nmarks;
	/* Where upstream bytes go once every mark has run (NULL: the dialled
	 * server): what the next request is compared with. */
	struct h1rw_target *last;
	bool failed; /* a retarget failed: the 502 is out, nothing more */
	/* The client parser is paused while a local answer waits for the
	 * responses before it; client bytes wait in `held`. */
	bool held_answer;
	uint8_t *held;
	size_t held_len;
	const struct rule_action *answer; /* the mock or block to send */
	const struct rule *answer_rule;
	/* Breakpoints: the request held (its parser stopped after it, the
	 * client's next bytes in `held`), and whether a response is held (its
	 * parser stopped after it, the server's next bytes in `sheld`). */
	struct rwreq *req_held;
	bool resp_held;
	uint8_t *sheld;
	size_t sheld_len;
	/* WebSocket message rules: the upgrade request being parsed selected
	 * some (ws_req, ws_sel); after it the client's bytes wait in `held`
	 * for its response (ws_wait); a 101 hands both sides to `ws`, any
	 * other final status ends the wait (ws_refused: the rest passes
	 * through, as after any upgrade). */
	struct rules_ws ws_sel;
	bool ws_req, ws_wait, ws_refused;
	char *ws_url;
	struct wsrw *ws;
};

static llhttp_settings_t req_settings, resp_settings;

static void resp_head(struct h1rw *w);
static bool settings_ready;

static struct h1rw *rw_of(llhttp_t *p)
{
	return p->data;
}

static struct side *side_of(llhttp_t *p)
{
	struct h1rw *w = rw_of(p);
	return p == &w->req.p ? &w->req : &w->resp;
}

/* ---- small helpers ---------------------------------------------------------- */

static int grow(char **s, size_t *len, const char *at, size_t n, bool *oversize)
{
	if (*len + n > HTTPFLOW_MAX_HEADER_BYTES) {
		*oversize = true;
		return 0;
	}
	char *ns = realloc(*s, *len + n + 1);
	if (!ns)
		return -1;
	memcpy(ns + *len, at, n);
	*len += n;
	ns[*len] = '\0';
	*s = ns;
	return 0;
}

static void side_reset(struct side *s)
{
	http_headers_free(&s->h);
	free(s->start);
	free(s->field);
	free(s->value);
	free(s->buf);
	json_decref(s->note);
	llhttp_t keep = s->p;
	memset(s, 0, sizeof(*s));
	s->p = keep;
}

static void out_up(struct h1rw *w, const void *p, size_t n)
{
	if (!n || w->dead)
		return;
	if (w->nmarks == 0) {
		w->cfg.ops.to_upstream(w->cfg.ctx, p, n);
		return;
	}
	if (w->uplen + n > H1RW_MAX_HELD) {
		/* Held beyond the bound (the caller pauses the client earlier):
		 * the delays end here. A retarget cannot: those bytes have no
		 * server yet. */
		for (size_t i = 0; i < w->nmarks; i++)
			if (w->marks[i].retarget) {
				w->dead = false;
				w->cfg.ops.reset(w->cfg.ctx,
						 "redirect (held bytes over the bound)");
				w->dead = true;
				return;
			}
		w->nmarks = 0;
		w->cfg.ops.to_upstream(w->cfg.ctx, w->upbuf, w->uplen);
		w->cfg.ops.to_upstream(w->cfg.ctx, p, n);
		w->uplen = 0;
		return;
	}
	uint8_t *nb = realloc(w->upbuf, w->uplen + n);
	if (!nb)
		return;
	memcpy(nb + w->uplen, p, n);
	w->upbuf = nb;
	w->uplen += n;
}

/* The first mark runs, when it can: a delay at once, a retarget once the
 * responses due before it are in. */
static void mark_start(struct h1rw *w)
{
	struct mark *m = &w->marks[0];
	if (w->nmarks == 0 || m->started || w->dead)
		return;
	if (m->retarget && m->wait > 0)
		return;
	m->started = true;
	if (m->retarget)
		w->cfg.ops.retarget(w->cfg.ctx, m->target);
	else
		w->cfg.ops.delay(w->cfg.ctx, m->ms);
}

static void mark_drop(struct mark *m)
{
	free(m->target);
	memset(m, 0, sizeof(*m));
}

/* From here on, bytes for the upstream wait `ms` longer. */
static void delay_mark(struct h1rw *w, uint32_t ms)
{
	if (w->nmarks == sizeof(w->marks) / sizeof(w->marks[0]))
		return;
	struct mark *m = &w->marks[w->nmarks++];
	memset(m, 0, sizeof(*m));
	m->off = w->uplen;
	m->ms = ms;
	mark_start(w);
}

static bool target_eq(const struct h1rw_target *a, const struct h1rw_target *b)
{
	if (!a || !b)
		return a == b;
	return a->port == b->port && strcmp(a->scheme, b->scheme) == 0 &&
	       strcasecmp(a->host, b->host) == 0;
}

/* From here on, bytes for the upstream go to `t` (owned; NULL: the dialled
 * server), after the `wait` responses due now. false: no room. */
static bool retarget_mark(struct h1rw *w, struct h1rw_target *t, struct rwreq *q)
{
	if (w->nmarks == sizeof(w->marks) / sizeof(w->marks[0])) {
		free(t);
		return false;
	}
	struct mark *m = &w->marks[w->nmarks++];
	memset(m, 0, sizeof(*m));
	m->off = w->uplen;
	m->retarget = true;
	m->target = t;
	m->wait = w->queued;
	m->req = q;
	free(w->last);
	w->last = NULL;
	if (t) {
		w->last = malloc(sizeof(*t));
		if (w->last)
			*w->last = *t;
	}
	mark_start(w);
	return true;
}

static void out_cl(struct h1rw *w, const void *p, size_t n)
{
	if (n && !w->dead)
		w->cfg.ops.to_client(w->cfg.ctx, p, n);
}

/* A head in one buffer: the start line, the headers, the blank line. */
static void write_head(struct h1rw *w, bool up, const char *line, const struct http_headers *h)
{
	size_t need = strlen(line) + 2 + 2;
	for (size_t i = 0; i < h->n; i++)
		need += h->v[i].name_len + h->v[i].value_len + 4;
	char *b = malloc(need);
	if (!b)
		return;
	size_t o = (size_t)sprintf(b, "%s\r\n", line);
	for (size_t i = 0; i < h->n; i++) {
		memcpy(b + o, h->v[i].name, h->v[i].name_len);
		o += h->v[i].name_len;
		b[o++] = ':';
		b[o++] = ' ';
		memcpy(b + o, h->v[i].value, h->v[i].value_len);
		o += h->v[i].value_len;
		b[o++] = '\r';
		b[o++] = '\n';
	}
	b[o++] = '\r';
	b[o++] = '\n';
	if (up)
		out_up(w, b, o);
	else
		out_cl(w, b, o);
	free(b);
}

static void headers_set_length(struct http_headers *h, size_t n)
{
	http_headers_remove(h, "content-length");
	http_headers_remove(h, "transfer-encoding");
	char v[32];
	int l = snprintf(v, sizeof(v), "%zu", n);
	(void)http_headers_add(h, "Content-Length", 14, v, (size_t)l);
}

static const char *reason_for(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 304:
		return "Not Modified";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	}
	return status < 300   ? "OK"
	       : status < 400 ? "Redirect"
	       : status < 500 ? "Client Error"
			      : "Server Error";
}

/* ---- the request side ----------------------------------------------------- */

static int on_field(llhttp_t *p, const char *at, size_t n)
{
	struct side *s = side_of(p);
	return grow(&s->field, &s->field_len, at, n, &s->oversize) ? HPE_USER : 0;
}

static int on_value(llhttp_t *p, const char *at, size_t n)
{
	struct side *s = side_of(p);
	return grow(&s->value, &s->value_len, at, n, &s->oversize) ? HPE_USER : 0;
}

static int on_value_complete(llhttp_t *p)
{
	struct side *s = side_of(p);
	if (s->field && !s->oversize &&
	    http_headers_add(&s->h, s->field, s->field_len, s->value ? s->value : "",
			     s->value_len) == -ENOMEM)
		return HPE_USER;
	free(s->field);
	free(s->value);
	s->field = s->value = NULL;
	s->field_len = s->value_len = 0;
	return 0;
}

static int on_start(llhttp_t *p, const char *at, size_t n)
{
	struct side *s = side_of(p);
	return grow(&s->start, &s->start_len, at, n, &s->oversize) ? HPE_USER : 0;
}

static int req_begin(llhttp_t *p)
{
	side_reset(&rw_of(p)->req);
	rw_of(p)->ws_req = false;
	return 0;
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

/* The request line as it goes upstream. */
static void req_line(llhttp_t *p, const struct side *s, char *out, size_t n)
{
	snprintf(out, n, "%s %s HTTP/%d.%d",
		 s->method[0] ? s->method
			      : llhttp_method_name((llhttp_method_t)llhttp_get_method(p)),
		 s->start ? s->start : "/", p->http_major, p->http_minor);
}

static void emit_req_head(struct h1rw *w)
{
	struct side *s = &w->req;
	if (s->head_out || s->drop)
		return;
	s->head_out = true;
	size_t need = (s->start_len) + 64;
	char *line = malloc(need);
	if (!line)
		return;
	req_line(&s->p, s, line, need);
	write_head(w, true, line, &s->h);
	free(line);
}

static void queue_push(struct h1rw *w, struct rwreq *q)
{
	if (w->tail)
		w->tail->next = q;
	else
		w->queue = q;
	w->tail = q;
	w->queued++;
}

static void rwreq_free(struct rwreq *q)
{
	free(q->method);
	free(q->authority);
	free(q->host);
	free(q->path);
	http_headers_free(&q->h);
	json_decref(q->note);
	free(q);
}

/* q leaves the queue head; its note waits for its record unless taken. */
static void queue_pop(struct h1rw *w)
{
	struct rwreq *q = w->queue;
	if (!q)
		return;
	if (!q->taken)
		json_array_append(w->notes, q->note);
	w->queue = q->next;
	if (!w->queue)
		w->tail = NULL;
	w->queued--;
	for (size_t i = 0; i < w->nmarks; i++) {
		if (w->marks[i].req == q)
			w->marks[i].req = NULL;
		if (w->marks[i].wait)
			w->marks[i].wait--;
	}
	rwreq_free(q);
	mark_start(w); /* a retarget waiting for this response */
}

/* The tightest throttle of `plan` on `phase`, 0: none. */

static void throttle(struct h1rw *w, struct side *s, enum rule_dir phase, uint64_t rate)
{
	if (!w->cfg.ops.throttle || w->dead || (!rate && !s->throttled))
		return;
	s->throttled = rate != 0;
	w->cfg.ops.throttle(w->cfg.ctx, (int)phase, rate);
}

static uint16_t default_port(const char *scheme)
{
	return strcmp(scheme, "https") == 0 ? 443 : 80;
}

/* A redirect: the request line and Host header name the new URL; another
 * server gets a retarget mark. 0, or -1 when it is skipped (the note says
 * why). */
static int redirect(struct h1rw *w, struct side *s, struct rwreq *q, const struct rule_action *a,
		    const struct rule *r)
{
	char scheme[8], host[256], path[8192];
	uint16_t port;
	if (rules_redirect_target(a, w->cfg.scheme, q->authority, q->path, scheme, sizeof(scheme),
				  host, sizeof(host), &port, path, sizeof(path)) < 0) {
		rules_note_action(q->note, "request:redirect skipped (the new URL is not a usable "
					   "http(s) URL)");
		return -1;
	}
	const char *colon =
		q->authority[0] == '[' ? strstr(q->authority, "]:") : strrchr(q->authority, ':');
	long op = colon ? strtol(colon + (q->authority[0] == '[' ? 2 : 1), NULL, 10) : 0;
	uint16_t oport = op > 0 && op < 65536 ? (uint16_t)op : default_port(w->cfg.scheme);
	bool same = strcmp(scheme, w->cfg.scheme) == 0 && strcasecmp(host, q->host) == 0 &&
		    port == oport;
	if (!same && !w->cfg.ops.retarget) {
		rules_note_action(q->note,
				  "request:redirect skipped (no other server on this path)");
		return -1;
	}
	char hv[300];
	bool v6 = strchr(host, ':') != NULL;
	int hl = snprintf(hv, sizeof(hv), v6 ? "[%s]" : "%s", host);
	if (port != default_port(scheme))
		hl += snprintf(hv + hl, sizeof(hv) - (size_t)hl, ":%u", port);
	char *np = strdup(path);
	if (!np)
		return -1;
	free(s->start);
	s->start = np;
	s->start_len = strlen(np);
	http_headers_remove(&s->h, "host");
	(void)http_headers_add(&s->h, "Host", 4, hv, (size_t)hl);
	char url[8600];
	snprintf(url, sizeof(url), "%s://%s%s", scheme, hv, path);
	json_object_set_new(q->note, "redirected_to", json_string(url));
	json_object_set_new(q->note, "redirected_by", json_string(r->id));
	rules_note_action(q->note, "request:redirect");
	if (same)
		return w->last && !retarget_mark(w, NULL, q) ? -1 : 0;
	struct h1rw_target t = { .port = port };
	snprintf(t.scheme, sizeof(t.scheme), "%s", scheme);
	snprintf(t.host, sizeof(t.host), "%s", host);
	if (target_eq(&t, w->last))
		return 0;
	struct h1rw_target *nt = malloc(sizeof(*nt));
	if (!nt)
		return -1;
	*nt = t;
	return retarget_mark(w, nt, q) ? 0 : -1;
}

/* Whether the request asks for a WebSocket (an Upgrade token "websocket"). */
static bool asks_websocket(const struct http_headers *h)
{
	const struct http_header *u = http_headers_find(h, "upgrade");
	if (!u)
		return false;
	for (const char *v = u->value; *v; v++)
		if (strncasecmp(v, "websocket", 9) == 0 &&
		    (v == u->value || !isalnum((unsigned char)v[-1])) &&
		    !isalnum((unsigned char)v[9]))
			return true;
	return false;
}

/* The upgrade request `q` selected message rules: nothing may be
 * compressed (the extensions offer goes), and the note says which. */
static void ws_select(struct h1rw *w, struct side *s, struct rwreq *q)
{
	w->ws_req = true;
	json_t *ids = json_array();
	for (size_t i = 0; i < w->ws_sel.n; i++)
		json_array_append_new(ids, json_string(w->ws_sel.v[i]->id));
	json_object_set_new(q->note, "websocket_rules", ids);
	if (http_headers_find(&s->h, "sec-websocket-extensions")) {
		http_headers_remove(&s->h, "sec-websocket-extensions");
		rules_note_action(q->note, "request:remove_header Sec-WebSocket-Extensions "
					   "(WebSocket message rules)");
	}
	const char *path = q->path[0] == '/' ? q->path : "/";
	size_t ul = strlen(q->authority) + strlen(path) + 8;
	free(w->ws_url);
	w->ws_url = malloc(ul);
	if (w->ws_url)
		snprintf(w->ws_url, ul, "%s://%s%s",
			 strcmp(w->cfg.scheme, "https") == 0 ? "wss" : "ws", q->authority, path);
}

static int req_headers_complete(llhttp_t *p)
{
	struct h1rw *w = rw_of(p);
	struct side *s = &w->req;
	if (s->oversize)
		return HPE_USER;
	struct rwreq *q = calloc(1, sizeof(*q));
	if (!q)
		return HPE_USER;
	const char *method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
	if (w->upstream_authority) {
		http_headers_remove(&s->h, "host");
		if (http_headers_add(&s->h, "Host", 4, w->upstream_authority,
				     strlen(w->upstream_authority)) < 0) {
			free(q);
			return HPE_USER;
		}
	}
	const struct http_header *hh = http_headers_find(&s->h, "host");
	const char *auth = hh ? hh->value : w->default_authority;
	char host[256];
	host_of(auth, host, sizeof(host));
	q->method = strdup(method);
	q->authority = strdup(auth ? auth : "");
	q->host = strdup(host);
	q->path = strdup(s->start ? s->start : "/");
	q->head = strcmp(method, "HEAD") == 0;
	q->note = json_object();
	w->cur_req = q;
	struct rules_msg m = { .peer = w->peer,
			       .scheme = w->cfg.scheme,
			       .host = host,
			       .authority = q->authority,
			       .path = q->path,
			       .method = method,
			       .req_headers = &s->h };
	s->chunked = (p->flags & F_CHUNKED) != 0;
	bool any = rules_plan_for(w->cfg.rules, RULE_REQUEST, &m, &s->plan);
	s->planned = true;
	json_t *orig_headers = NULL;
	if (any) {
		rules_note_plan(q->note, &s->plan, RULE_REQUEST, "request");
		orig_headers = http_headers_json(&s->h);
		(void)rules_apply_headers(&s->plan, RULE_REQUEST, &s->h);
	}
	const struct rule_action *t = s->plan.terminal;
	if (t && (t->kind == RA_MOCK || t->kind == RA_BLOCK)) {
		char b[96];
		snprintf(b, sizeof(b), "request:%s", rules_action_name(t->kind));
		rules_note_action(q->note, b);
		json_object_set_new(q->note, t->kind == RA_MOCK ? "mocked_by" : "blocked_by",
				    json_string(s->plan.terminal_rule->id));
		w->answer = t;
		w->answer_rule = s->plan.terminal_rule;
		s->drop = true;
		q->local = true;
		json_decref(orig_headers);
		if (t->kind == RA_BLOCK && t->status == 444) {
			w->dead = false;
			w->cfg.ops.reset(w->cfg.ctx, s->plan.terminal_rule->id);
			w->dead = true;
			rwreq_free(q);
			w->cur_req = NULL;
			return HPE_PAUSED;
		}
		return 0;
	}
	bool redirected = false;
	if (t && t->kind == RA_REDIRECT) {
		redirected = redirect(w, s, q, t, s->plan.terminal_rule) == 0;
	} else if (t && t->kind == RA_BREAKPOINT && w->cfg.ops.hold) {
		/* Held once it is all in: the head waits, the body is kept. */
		s->bp = true;
		rules_note_action(q->note, "request:breakpoint");
		json_object_set_new(q->note, "request_breakpoint_by",
				    json_string(s->plan.terminal_rule->id));
	} else if (t) {
		char b[96];
		snprintf(b, sizeof(b), "request:%s skipped (not supported on HTTP/1.1 yet)",
			 rules_action_name(t->kind));
		rules_note_action(q->note, b);
	}
	if (!redirected && w->last && !retarget_mark(w, NULL, q))
		return HPE_USER; /* back to the dialled server */
	bool edit_body = false;
	for (size_t i = 0; i < s->plan.ntransforms; i++)
		if ((s->plan.transforms[i]->on & RULE_REQUEST) &&
		    (s->plan.transforms[i]->kind == RA_REPLACE_BODY ||
		     s->plan.transforms[i]->kind == RA_SET_JSON))
			edit_body = true;
	if (edit_body) {
		const struct http_header *ce = http_headers_find(&s->h, "content-encoding");
		if (ce && strcasecmp(ce->value, "identity") != 0) {
			s->encoded = true;
			rules_note_action(q->note, "request body edit skipped: Content-Encoding");
		} else {
			s->keep = true;
		}
	}
	w->ws_req = false;
	bool show = any;
	if (asks_websocket(&s->h) && rules_ws_for(w->cfg.rules, &m, &w->ws_sel)) {
		if (!orig_headers)
			orig_headers = http_headers_json(&s->h);
		show = true;
		ws_select(w, s, q);
	}
	if (show) {
		json_object_set_new(q->note, "request_original_headers", orig_headers);
		json_object_set_new(q->note, "request_headers_upstream", http_headers_json(&s->h));
	}
	uint32_t delay = 0;
	for (size_t i = 0; i < s->plan.ntransforms; i++)
		if (s->plan.transforms[i]->kind == RA_DELAY &&
		    (s->plan.transforms[i]->on & RULE_REQUEST))
			delay += s->plan.transforms[i]->ms;
	if (delay)
		delay_mark(w, delay);
	if (s->bp)
		s->keep = true;
	throttle(w, s, RULE_REQUEST, rules_plan_rate(&s->plan, RULE_REQUEST));
	if (!s->keep)
		emit_req_head(w);
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct h1rw *w = rw_of(p);
	struct side *s = side_of(p);
	bool up = s == &w->req;
	if (s->drop)
		return 0;
	if (s->keep && !s->over) {
		if (s->len + n <= w->cfg.body_cap) {
			uint8_t *nb = realloc(s->buf, s->len + n);
			if (!nb)
				return HPE_USER;
			memcpy(nb + s->len, at, n);
			s->buf = nb;
			s->len += n;
			return 0;
		}
		/* Past the cap: what was kept goes on unchanged, then the rest. */
		s->over = true;
		json_t *note = up ? (w->cur_req ? w->cur_req->note : NULL) : s->note;
		if (note) {
			char b[128];
			snprintf(b, sizeof(b), "%s %s skipped: larger than %zu bytes",
				 up ? "request" : "response", s->bp ? "breakpoint" : "body edit",
				 w->cfg.body_cap);
			rules_note_action(note, b);
		}
		s->bp = false;
		if (up)
			emit_req_head(w);
		else
			resp_head(w);
		if (s->len) {
			if (s->chunked) {
				char hx[24];
				int l = snprintf(hx, sizeof(hx), "%zx\r\n", s->len);
				up ? out_up(w, hx, (size_t)l) : out_cl(w, hx, (size_t)l);
			}
			up ? out_up(w, s->buf, s->len) : out_cl(w, s->buf, s->len);
			if (s->chunked)
				up ? out_up(w, "\r\n", 2) : out_cl(w, "\r\n", 2);
		}
		free(s->buf);
		s->buf = NULL;
		s->len = 0;
	}
	if (s->chunked) {
		char hx[24];
		int l = snprintf(hx, sizeof(hx), "%zx\r\n", n);
		up ? out_up(w, hx, (size_t)l) : out_cl(w, hx, (size_t)l);
	}
	up ? out_up(w, at, n) : out_cl(w, at, n);
	if (s->chunked)
		up ? out_up(w, "\r\n", 2) : out_cl(w, "\r\n", 2);
	return 0;
}

/* A kept body, edited, with its head. */
static void flush_kept(struct h1rw *w, struct side *s, enum rule_dir phase, json_t *note)
{
	uint8_t *nb = NULL;
	size_t nl = 0;
	int rc = rules_apply_body(&s->plan, phase, s->buf, s->len, w->cfg.body_cap, &nb, &nl);
	if (rc < 0 && note) {
		char b[128];
		snprintf(b, sizeof(b), "%s body edit skipped: %s",
			 phase == RULE_REQUEST ? "request" : "response",
			 rc == -E2BIG ? "the result is over the cap" : "no memory");
		rules_note_action(note, b);
	}
	const uint8_t *body = nb ? nb : s->buf;
	size_t len = nb ? nl : s->len;
	headers_set_length(&s->h, len);
	s->chunked = false;
	if (nb && note)
		json_object_set_new(
			note,
			phase == RULE_REQUEST ? "request_body_upstream" : "response_body_original",
			phase == RULE_REQUEST ? http_body_json(nb, nl, nl, false)
					      : http_body_json(s->buf, s->len, s->len, false));
	bool up = phase == RULE_REQUEST;
	if (up) {
		emit_req_head(w);
		out_up(w, body, len);
	} else {
		resp_head(w);
		out_cl(w, body, len);
	}
	free(nb);
}

/* The mock or block of the current request, to the client. */
static void send_answer(struct h1rw *w)
{
	const struct rule_action *a = w->answer;
	if (!a)
		return;
	w->answer = NULL;
	struct http_headers h = { 0 };
	const uint8_t *body;
	size_t len;
	char blocked[160];
	if (a->kind == RA_MOCK) {
		for (size_t i = 0; i < a->nheaders; i++)
			(void)http_headers_add(&h, a->headers[i].name, strlen(a->headers[i].name),
					       a->headers[i].value, strlen(a->headers[i].value));
		body = a->body;
		len = a->has_body ? a->body_len : 0;
	} else {
		len = (size_t)snprintf(blocked, sizeof(blocked), "blocked by rule %s\n",
				       w->answer_rule->id);
		body = (const uint8_t *)blocked;
		(void)http_headers_add(&h, "Content-Type", 12, "text/plain", 10);
	}
	headers_set_length(&h, len);
	char line[64];
	snprintf(line, sizeof(line), "HTTP/1.1 %d %s", a->status, reason_for(a->status));
	write_head(w, false, line, &h);
	out_cl(w, body, len);
	http_headers_free(&h);
}

/* ---- breakpoints ------------------------------------------------------------ */

/* The body rules of a held message run before it is shown: the kept body
 * becomes what would go on. */
static void bp_apply_body_rules(struct h1rw *w, struct side *s, enum rule_dir phase, json_t *note)
{
	if (!s->plan.needs_body || s->encoded)
		return;
	const struct http_header *ce = http_headers_find(&s->h, "content-encoding");
	if (ce && strcasecmp(ce->value, "identity") != 0)
		return;
	uint8_t *nb = NULL;
	size_t nl = 0;
	if (rules_apply_body(&s->plan, phase, s->buf, s->len, w->cfg.body_cap, &nb, &nl) < 0 || !nb)
		return;
	if (note)
		json_object_set_new(
			note,
			phase == RULE_REQUEST ? "request_body_upstream" : "response_body_original",
			phase == RULE_REQUEST ? http_body_json(nb, nl, nl, false)
					      : http_body_json(s->buf, s->len, s->len, false));
	free(s->buf);
	s->buf = nb;
	s->len = nl;
	headers_set_length(&s->h, nl);
	s->chunked = false;
}

/* The held message's description for the registry. */
static json_t *bp_info(struct h1rw *w, struct side *s, const struct rwreq *q, enum held_phase phase)
{
	const char *method = s == &w->req
				     ? llhttp_method_name((llhttp_method_t)llhttp_get_method(&s->p))
				     : q->method;
	const char *path = s == &w->req ? (s->start ? s->start : "/") : q->path;
	const char *auth = q->authority;
	size_t ul = strlen(w->cfg.scheme) + strlen(auth) + strlen(path) + 8;
	char *url = malloc(ul);
	if (!url)
		return NULL;
	if (path[0] == '/')
		snprintf(url, ul, "%s://%s%s", w->cfg.scheme, auth, path);
	else
		snprintf(url, ul, "%s", path);
	size_t pv = s->len < HELD_PREVIEW ? s->len : HELD_PREVIEW;
	json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:b}", "phase",
			      phase == HELD_REQUEST ? "request" : "response", "proto", "http/1.1",
			      "method", method, "url", url, "rule",
			      s->plan.terminal_rule ? s->plan.terminal_rule->id : "", "headers",
			      http_headers_json(&s->h), "body",
			      http_body_json(s->buf, pv, s->len, pv < s->len), "nobody", s->nobody);
	free(url);
	if (o && phase == HELD_RESPONSE)
		json_object_set_new(o, "status", json_integer(s->status));
	if (o && w->peer)
		json_object_set_new(o, "peer", json_string(w->peer));
	return o;
}

/* Hands a message that is all in to ops.hold. true: held. */
static bool bp_hold(struct h1rw *w, struct side *s, struct rwreq *q, enum held_phase phase)
{
	json_t *note = phase == HELD_REQUEST ? q->note : s->note;
	bp_apply_body_rules(w, s, phase == HELD_REQUEST ? RULE_REQUEST : RULE_RESPONSE, note);
	json_t *info = bp_info(w, s, q, phase);
	const char *k = phase == HELD_REQUEST ? "request_breakpoint" : "response_breakpoint";
	if (info && w->cfg.ops.hold(w->cfg.ctx, phase, info) == 0) {
		json_object_set_new(note, k, json_string("held"));
		return true;
	}
	json_object_set_new(note, k, json_string("skipped: not held (too many held)"));
	return false;
}

/* A held or kept message's body goes on: with a length when it was kept
 * from a chunked message or edited, as it came otherwise. */
static void bp_send(struct h1rw *w, struct side *s, bool up, bool length)
{
	if (!s->nobody && (length || s->chunked)) {
		headers_set_length(&s->h, s->len);
		s->chunked = false;
	}
	if (up) {
		emit_req_head(w);
		out_up(w, s->buf, s->len);
	} else {
		resp_head(w);
		if (!s->nobody)
			out_cl(w, s->buf, s->len);
	}
}

static void bp_edits_body(struct side *s, const struct held_edits *e)
{
	if (!e || !e->has_body)
		return;
	free(s->buf);
	s->buf = NULL;
	s->len = 0;
	if (e->body_len) {
		s->buf = malloc(e->body_len);
		if (!s->buf)
			return;
		memcpy(s->buf, e->body, e->body_len);
		s->len = e->body_len;
	}
}

static int req_done(struct h1rw *w, struct rwreq *q);
static int resp_done(struct h1rw *w);

static int req_message_complete(llhttp_t *p)
{
	struct h1rw *w = rw_of(p);
	struct side *s = &w->req;
	struct rwreq *q = w->cur_req;
	w->cur_req = NULL;
	if (!q)
		return 0;
	throttle(w, s, RULE_REQUEST, 0);
	if (s->bp && !s->over && !w->dead) {
		if (bp_hold(w, s, q, HELD_REQUEST)) {
			w->req_held = q;
			return HPE_PAUSED; /* the client's next bytes wait in `held` */
		}
		bp_send(w, s, true, false);
		return req_done(w, q);
	}
	if (s->keep && !s->over)
		flush_kept(w, s, RULE_REQUEST, q->note);
	else if (s->chunked && !s->drop)
		out_up(w, "0\r\n\r\n", 5);
	return req_done(w, q);
}

/* The request is out (or answered here): it waits for its response. */
static int req_done(struct h1rw *w, struct rwreq *q)
{
	struct side *s = &w->req;
	for (size_t i = 0; i < s->h.n; i++)
		(void)http_headers_add(&q->h, s->h.v[i].name, s->h.v[i].name_len, s->h.v[i].value,
				       s->h.v[i].value_len);
	queue_push(w, q);
	if (q->local) {
		/* Answered here, in order: after every response before it. */
		if (w->queue != q) {
			w->held_answer = true;
			return HPE_PAUSED;
		}
		send_answer(w);
		queue_pop(w);
	}
	if (w->queued > HTTP1_MAX_PENDING)
		return HPE_USER;
	return 0;
}

/* ---- the response side ---------------------------------------------------- */

static int resp_begin(llhttp_t *p)
{
	side_reset(&rw_of(p)->resp);
	return 0;
}

static void resp_head(struct h1rw *w)
{
	struct side *s = &w->resp;
	if (s->head_out)
		return;
	s->head_out = true;
	char line[HTTPFLOW_MAX_HEADER_BYTES < 512 ? 512 : 512];
	bool same = s->status == (int)llhttp_get_status_code(&s->p);
	snprintf(line, sizeof(line), "HTTP/%d.%d %d %.400s", s->p.http_major, s->p.http_minor,
		 s->status, same && s->start ? s->start : reason_for(s->status));
	write_head(w, false, line, &s->h);
}

static int resp_headers_complete(llhttp_t *p)
{
	struct h1rw *w = rw_of(p);
	struct side *s = &w->resp;
	if (s->oversize)
		return HPE_USER;
	int status = llhttp_get_status_code(p);
	s->status = status;
	s->chunked = (p->flags & F_CHUNKED) != 0;
	struct rwreq *q = w->queue;
	while (q && q->local)
		q = q->next; /* cannot happen: answered ones leave at once */
	int ret = 0;
	if (status >= 100 && status < 200 && status != 101)
		ret = 1;
	else if (status == 101 || (q && strcmp(q->method, "CONNECT") == 0 && status < 300))
		ret = 2;
	else if ((q && q->head) || status == 204 || status == 304)
		ret = 1;
	if (q && status >= 200) {
		struct rules_msg m = { .peer = w->peer,
				       .scheme = w->cfg.scheme,
				       .host = q->host,
				       .authority = q->authority,
				       .path = q->path,
				       .method = q->method,
				       .req_headers = &q->h,
				       .status = status,
				       .resp_headers = &s->h };
		s->note = json_incref(q->note);
		if (rules_plan_for(w->cfg.rules, RULE_RESPONSE, &m, &s->plan)) {
			rules_note_plan(s->note, &s->plan, RULE_RESPONSE, "response");
			json_object_set_new(s->note, "response_original",
					    json_pack("{s:i,s:o}", "status", status, "headers",
						      http_headers_json(&s->h)));
			(void)rules_apply_headers(&s->plan, RULE_RESPONSE, &s->h);
			for (size_t i = 0; i < s->plan.ntransforms; i++) {
				const struct rule_action *a = s->plan.transforms[i];
				if (a->kind == RA_SET_STATUS && (a->on & RULE_RESPONSE))
					s->status = a->status;
				if ((a->kind == RA_REPLACE_BODY || a->kind == RA_SET_JSON) &&
				    (a->on & RULE_RESPONSE) && ret == 0)
					s->keep = true;
			}
			const struct rule_action *t = s->plan.terminal;
			if (t && t->kind == RA_BREAKPOINT && w->cfg.ops.hold && ret != 2) {
				s->bp = true;
				s->nobody = ret == 1;
				rules_note_action(s->note, "response:breakpoint");
				json_object_set_new(s->note, "response_breakpoint_by",
						    json_string(s->plan.terminal_rule->id));
			} else if (t) {
				char b[96];
				snprintf(b, sizeof(b),
					 "response:%s skipped (not supported on HTTP/1.1 yet)",
					 rules_action_name(t->kind));
				rules_note_action(s->note, b);
			}
			const struct http_header *ce = http_headers_find(&s->h, "content-encoding");
			if (s->keep && ce && strcasecmp(ce->value, "identity") != 0) {
				s->keep = false;
				s->encoded = true;
				rules_note_action(s->note,
						  "response body edit skipped: Content-Encoding");
			}
			if (s->bp && ret == 0)
				s->keep = true; /* the whole body, whatever its encoding */
		}
	}
	if (q && status >= 200)
		throttle(w, s, RULE_RESPONSE, rules_plan_rate(&s->plan, RULE_RESPONSE));
	if (!s->keep && !s->bp)
		resp_head(w);
	return ret;
}

static int resp_message_complete(llhttp_t *p)
{
	struct h1rw *w = rw_of(p);
	struct side *s = &w->resp;
	int status = llhttp_get_status_code(p);
	if (status >= 100 && status < 200 && status != 101)
		return 0; /* interim: its request waits for the final one */
	throttle(w, s, RULE_RESPONSE, 0);
	if (w->ws_wait && status != 101)
		w->ws_refused = true; /* no WebSocket: the rest as after any upgrade */
	if (s->bp && !s->over && !w->dead && w->queue) {
		if (bp_hold(w, s, w->queue, HELD_RESPONSE)) {
			w->resp_held = true;
			return HPE_PAUSED; /* the server's next bytes wait in `sheld` */
		}
		bp_send(w, s, false, false);
		return resp_done(w);
	}
	if (s->bp && !s->head_out)
		resp_head(w); /* dead: nothing more is held */
	if (s->keep && !s->over)
		flush_kept(w, s, RULE_RESPONSE, s->note);
	else if (s->chunked)
		out_cl(w, "0\r\n\r\n", 5);
	return resp_done(w);
}

/* The response is out: its request leaves the queue. */
static int resp_done(struct h1rw *w)
{
	queue_pop(w);
	if (w->held_answer && w->queue && w->queue->local) {
		/* Every response before the local answer is out. */
		w->held_answer = false;
		send_answer(w);
		queue_pop(w);
		return HPE_PAUSED; /* the client's parser goes on from h1rw_server */
	}
	return 0;
}

static void settings_init(void)
{
	if (settings_ready)
		return;
	llhttp_settings_init(&req_settings);
	req_settings.on_message_begin = req_begin;
	req_settings.on_url = on_start;
	req_settings.on_header_field = on_field;
	req_settings.on_header_value = on_value;
	req_settings.on_header_value_complete = on_value_complete;
	req_settings.on_headers_complete = req_headers_complete;
	req_settings.on_body = on_body;
	req_settings.on_message_complete = req_message_complete;
	llhttp_settings_init(&resp_settings);
	resp_settings.on_message_begin = resp_begin;
	resp_settings.on_status = on_start;
	resp_settings.on_header_field = on_field;
	resp_settings.on_header_value = on_value;
	resp_settings.on_header_value_complete = on_value_complete;
	resp_settings.on_headers_complete = resp_headers_complete;
	resp_settings.on_body = on_body;
	resp_settings.on_message_complete = resp_message_complete;
	settings_ready = true;
}

/* ---- feeding -------------------------------------------------------------- */

static void hold(struct h1rw *w, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	if (w->held_len + n > H1RW_MAX_HELD) {
		/* The caller should have paused the client: pass the rest on. */
		w->passthrough = true;
		return;
	}
	uint8_t *nb = realloc(w->held, w->held_len + n);
	if (!nb) {
		w->passthrough = true;
		return;
	}
	memcpy(nb + w->held_len, p, n);
	w->held = nb;
	w->held_len += n;
}

static bool client_held(const struct h1rw *w)
{
	return w->held_answer || w->req_held || w->ws_wait;
}

static void feed_client(struct h1rw *w, const uint8_t *p, size_t n)
{
	while (n > 0 && !w->dead && !w->passthrough) {
		llhttp_errno_t e = llhttp_execute(&w->req.p, (const char *)p, n);
		if (e == HPE_OK)
			return;
		const uint8_t *at = (const uint8_t *)llhttp_get_error_pos(&w->req.p);
		size_t used = at && at >= p && at <= p + n ? (size_t)(at - p) : n;
		if (e == HPE_PAUSED) {
			llhttp_resume(&w->req.p);
			if (w->dead)
				return;
			if (client_held(w)) {
				hold(w, p + used, n - used);
				return;
			}
			p += used;
			n -= used;
			continue;
		}
		if (e == HPE_PAUSED_UPGRADE && w->ws_req) {
			/* The client's frames wait for the 101. */
			w->ws_wait = true;
			hold(w, p + used, n - used);
			return;
		}
		/* An upgrade or an error: the rest as it is, both ways. */
		w->passthrough = true;
		out_up(w, p + used, n - used);
		return;
	}
	if (w->passthrough && n)
		out_up(w, p, n);
}

void h1rw_client(struct h1rw *w, const uint8_t *p, size_t n)
{
	if (w->dead || n == 0)
		return;
	if (w->ws) {
		wsrw_client(w->ws, p, n);
		return;
	}
	if (w->passthrough) {
		out_up(w, p, n);
		return;
	}
	if (client_held(w) || w->held_len) {
		hold(w, p, n);
		if (w->passthrough) {
			out_up(w, w->held, w->held_len);
			out_up(w, p, n);
			free(w->held);
			w->held = NULL;
			w->held_len = 0;
		}
		return;
	}
	feed_client(w, p, n);
}

/* The client bytes held so far go upstream as they are, and all after
 * them: the layer is done parsing. */
static void held_out_raw(struct h1rw *w)
{
	w->passthrough = true;
	uint8_t *b = w->held;
	size_t n = w->held_len;
	w->held = NULL;
	w->held_len = 0;
	out_up(w, b, n);
	free(b);
}

/* Client bytes held while the parser was stopped go on. */
static void release_held(struct h1rw *w)
{
	while (!client_held(w) && w->held_len && !w->dead) {
		uint8_t *b = w->held;
		size_t n = w->held_len;
		w->held = NULL;
		w->held_len = 0;
		feed_client(w, b, n);
		free(b);
	}
}

void h1rw_resume(struct h1rw *w)
{
	if (w->nmarks == 0 || w->dead || !w->marks[0].started)
		return;
	/* The first mark is done: its bytes go, up to the next mark. */
	size_t end = w->nmarks > 1 ? w->marks[1].off : w->uplen;
	mark_drop(&w->marks[0]);
	memmove(&w->marks[0], &w->marks[1], (w->nmarks - 1) * sizeof(w->marks[0]));
	w->nmarks--;
	memset(&w->marks[w->nmarks], 0, sizeof(w->marks[0]));
	for (size_t i = 0; i < w->nmarks; i++)
		w->marks[i].off -= end;
	if (end)
		w->cfg.ops.to_upstream(w->cfg.ctx, w->upbuf, end);
	if (w->dead)
		return;
	memmove(w->upbuf, w->upbuf + end, w->uplen - end);
	w->uplen -= end;
	mark_start(w);
}

void h1rw_upstream_failed(struct h1rw *w, const char *why)
{
	if (w->dead)
		return;
	if (w->nmarks && w->marks[0].retarget && w->marks[0].req)
		json_object_set_new(w->marks[0].req->note, "redirect_error", json_string(why));
	char body[512], head[160];
	int bl = snprintf(body, sizeof(body),
			  "wgmitm: the redirect's server cannot be reached: %s\n", why);
	if (bl >= (int)sizeof(body))
		bl = (int)sizeof(body) - 1;
	int hl = snprintf(head, sizeof(head),
			  "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
			  "Content-Length: %d\r\nConnection: close\r\n\r\n",
			  bl);
	out_cl(w, head, (size_t)hl);
	out_cl(w, body, (size_t)bl);
	w->dead = true;
	w->failed = true;
}

static void release_response(struct h1rw *w, const struct held_edits *e, const char *why);

/* ---- WebSocket messages ---------------------------------------------------- */

static void ws_to_upstream(void *ctx, const uint8_t *p, size_t n)
{
	out_up(ctx, p, n);
}

static void ws_to_client(void *ctx, const uint8_t *p, size_t n)
{
	out_cl(ctx, p, n);
}

static int ws_hold(void *ctx, enum held_phase phase, json_t *info)
{
	struct h1rw *w = ctx;
	if (!w->cfg.ops.hold) {
		json_decref(info);
		return -1;
	}
	return w->cfg.ops.hold(w->cfg.ctx, phase, info);
}

static void ws_unhold(void *ctx, enum held_phase phase, const char *why)
{
	struct h1rw *w = ctx;
	if (w->cfg.ops.unhold)
		w->cfg.ops.unhold(w->cfg.ctx, phase, why);
}

/* The 101 is out: both sides go through the message rules from here; the
 * client's frames that waited go first. 0, or -1 (no memory: the rest
 * passes through). */
static int ws_start(struct h1rw *w)
{
	struct wsrw_config c = { .ops = { .to_upstream = ws_to_upstream,
					  .to_client = ws_to_client,
					  .hold = w->cfg.ops.hold ? ws_hold : NULL,
					  .unhold = ws_unhold },
				 .ctx = w,
				 .rules = w->cfg.rules,
				 .ws = &w->ws_sel,
				 .url = w->ws_url,
				 .peer = w->peer };
	w->ws = wsrw_new(&c);
	if (!w->ws)
		return -1;
	w->ws_wait = false;
	uint8_t *b = w->held;
	size_t bn = w->held_len;
	w->held = NULL;
	w->held_len = 0;
	wsrw_client(w->ws, b, bn);
	free(b);
	return 0;
}

/* Server bytes while a response is held wait, bounded: past the bound the
 * response is released as it is (the server is not read less for it). */
static void sheld_add(struct h1rw *w, const uint8_t *p, size_t n)
{
	uint8_t *nb =
		w->sheld_len + n <= H1RW_MAX_HELD ? realloc(w->sheld, w->sheld_len + n) : NULL;
	if (!nb) {
		if (w->cfg.ops.unhold)
			w->cfg.ops.unhold(w->cfg.ctx, HELD_RESPONSE, "server bytes over the bound");
		release_response(w, NULL, "released: server bytes over the bound");
		h1rw_server(w, p, n);
		return;
	}
	memcpy(nb + w->sheld_len, p, n);
	w->sheld = nb;
	w->sheld_len += n;
}

void h1rw_server(struct h1rw *w, const uint8_t *p, size_t n)
{
	if (w->dead || n == 0)
		return;
	if (w->ws) {
		wsrw_server(w->ws, p, n);
		return;
	}
	if (w->passthrough) {
		out_cl(w, p, n);
		return;
	}
	if (w->resp_held) {
		sheld_add(w, p, n);
		return;
	}
	while (n > 0 && !w->dead) {
		llhttp_errno_t e = llhttp_execute(&w->resp.p, (const char *)p, n);
		if (e == HPE_OK)
			break;
		const uint8_t *at = (const uint8_t *)llhttp_get_error_pos(&w->resp.p);
		size_t used = at && at >= p && at <= p + n ? (size_t)(at - p) : n;
		if (e == HPE_PAUSED) {
			llhttp_resume(&w->resp.p);
			if (w->resp_held) {
				if (n > used)
					sheld_add(w, p + used, n - used);
				return;
			}
			release_held(w);
			p += used;
			n -= used;
			continue;
		}
		if (e == HPE_PAUSED_UPGRADE && w->ws_wait && !w->ws_refused &&
		    llhttp_get_status_code(&w->resp.p) == 101 && ws_start(w) == 0) {
			wsrw_server(w->ws, p + used, n - used);
			return;
		}
		w->passthrough = true;
		out_cl(w, p + used, n - used);
		break;
	}
	if (w->ws_wait && (w->ws_refused || w->passthrough)) {
		/* No WebSocket after all: what the client sent waits no more. */
		w->ws_wait = false;
		held_out_raw(w);
		return;
	}
	release_held(w);
}

void h1rw_server_eof(struct h1rw *w)
{
	if (w->ws) {
		wsrw_eof(w->ws, HELD_RESPONSE);
		return;
	}
	if (w->dead || w->passthrough)
		return;
	if (w->resp_held) {
		/* The connection ends after it: it cannot wait. */
		if (w->cfg.ops.unhold)
			w->cfg.ops.unhold(w->cfg.ctx, HELD_RESPONSE, "the server closed");
		release_response(w, NULL, "released: the server closed");
		if (w->dead || w->passthrough)
			return;
	}
	(void)llhttp_finish(&w->resp.p);
}

/* ---- releasing ---------------------------------------------------------------- */

/* An edited message keeps a length that fits its body. */
static bool bp_needs_length(const struct side *s)
{
	return s->len > 0 || http_headers_find(&s->h, "content-length") ||
	       http_headers_find(&s->h, "transfer-encoding");
}

static void note_outcome(json_t *note, const char *key, const struct held_edits *e, const char *why)
{
	json_object_set_new(note, key, json_string(why ? why : e ? "edited" : "released"));
}

static void release_request(struct h1rw *w, const struct held_edits *e, const char *why)
{
	struct rwreq *q = w->req_held;
	struct side *s = &w->req;
	w->req_held = NULL;
	if (!q)
		return;
	if (e) {
		const char *m = llhttp_method_name((llhttp_method_t)llhttp_get_method(&s->p));
		json_object_set_new(q->note, "request_held",
				    json_pack("{s:s,s:s,s:o}", "method", m, "path",
					      s->start ? s->start : "/", "headers",
					      http_headers_json(&s->h)));
		if (e->method[0]) {
			snprintf(s->method, sizeof(s->method), "%s", e->method);
			char *nm = strdup(e->method);
			if (nm) {
				free(q->method);
				q->method = nm;
			}
			q->head = strcmp(e->method, "HEAD") == 0;
		}
		if (e->path) {
			char *a = strdup(e->path), *b = strdup(e->path);
			if (a && b) {
				free(s->start);
				s->start = a;
				s->start_len = strlen(a);
				free(q->path);
				q->path = b;
			} else {
				free(a);
				free(b);
			}
		}
		(void)held_edits_apply_headers(e, &s->h);
		bp_edits_body(s, e);
		json_object_set_new(q->note, "request_headers_upstream", http_headers_json(&s->h));
		if (e->has_body)
			json_object_set_new(q->note, "request_body_upstream",
					    http_body_json(s->buf, s->len, s->len, false));
	}
	note_outcome(q->note, "request_breakpoint", e, why);
	bp_send(w, s, true, e && bp_needs_length(s));
	if (w->dead)
		return;
	if (req_done(w, q) == HPE_USER) {
		/* Too many requests without a response: the rest as it is. */
		held_out_raw(w);
		return;
	}
	release_held(w);
}

static void release_response(struct h1rw *w, const struct held_edits *e, const char *why)
{
	struct side *s = &w->resp;
	if (!w->resp_held)
		return;
	w->resp_held = false;
	if (e) {
		json_object_set_new(s->note, "response_held",
				    json_pack("{s:i,s:o}", "status", s->status, "headers",
					      http_headers_json(&s->h)));
		if (e->status)
			s->status = e->status;
		(void)held_edits_apply_headers(e, &s->h);
		if (!s->nobody)
			bp_edits_body(s, e);
	}
	note_outcome(s->note, "response_breakpoint", e, why);
	bp_send(w, s, false, e && bp_needs_length(s));
	if (w->dead)
		return;
	(void)resp_done(w);
	uint8_t *b = w->sheld;
	size_t n = w->sheld_len;
	w->sheld = NULL;
	w->sheld_len = 0;
	release_held(w);
	if (n)
		h1rw_server(w, b, n);
	free(b);
}

void h1rw_release(struct h1rw *w, enum held_phase phase, const struct held_edits *e)
{
	if (w->ws)
		wsrw_release(w->ws, phase, e);
	else if (phase == HELD_REQUEST)
		release_request(w, e, NULL);
	else
		release_response(w, e, NULL);
}

void h1rw_kill(struct h1rw *w, enum held_phase phase)
{
	if (w->ws)
		wsrw_kill(w->ws, phase);
	if (phase == HELD_REQUEST && w->req_held) {
		struct rwreq *q = w->req_held;
		w->req_held = NULL;
		json_object_set_new(q->note, "request_breakpoint", json_string("killed"));
		queue_push(w, q); /* its note goes to its record, in order */
	} else if (phase == HELD_RESPONSE && w->resp_held) {
		w->resp_held = false;
		json_object_set_new(w->resp.note, "response_breakpoint", json_string("killed"));
	}
	w->dead = true;
}

bool h1rw_holding(const struct h1rw *w, enum held_phase phase)
{
	if (w->ws)
		return wsrw_holding(w->ws, phase);
	return phase == HELD_REQUEST ? w->req_held != NULL : w->resp_held;
}

size_t h1rw_backlog(const struct h1rw *w)
{
	return w->held_len + w->uplen + (w->ws ? wsrw_backlog(w->ws) : 0);
}

bool h1rw_websocket(const struct h1rw *w)
{
	return w->ws != NULL;
}

json_t *h1rw_take_ws_note(struct h1rw *w)
{
	return w->ws ? wsrw_take_note(w->ws) : NULL;
}

json_t *h1rw_take_note(struct h1rw *w)
{
	if (json_array_size(w->notes) == 0) {
		/* The record of the oldest exchange can come before its end
		 * here (the observer saw its last byte). */
		for (struct rwreq *q = w->queue; q; q = q->next)
			if (!q->taken) {
				q->taken = true;
				return json_incref(q->note);
			}
		return NULL;
	}
	json_t *n = json_incref(json_array_get(w->notes, 0));
	json_array_remove(w->notes, 0);
	return n;
}

struct h1rw *h1rw_new(const struct h1rw_config *cfg)
{
	settings_init();
	struct h1rw *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->cfg = *cfg;
	if (!w->cfg.body_cap)
		w->cfg.body_cap = H1RW_DEFAULT_BODY_CAP;
	w->cfg.rules = ruleset_ref(cfg->rules);
	w->peer = cfg->peer ? strdup(cfg->peer) : NULL;
	w->default_authority = cfg->default_authority ? strdup(cfg->default_authority) : NULL;
	w->upstream_authority = cfg->upstream_authority ? strdup(cfg->upstream_authority) : NULL;
	w->notes = json_array();
	llhttp_init(&w->req.p, HTTP_REQUEST, &req_settings);
	llhttp_init(&w->resp.p, HTTP_RESPONSE, &resp_settings);
	w->req.p.data = w;
	w->resp.p.data = w;
	if (!w->notes || (cfg->peer && !w->peer) ||
	    (cfg->upstream_authority && !w->upstream_authority)) {
		h1rw_free(w);
		return NULL;
	}
	return w;
}

void h1rw_free(struct h1rw *w)
{
	if (!w)
		return;
	side_reset(&w->req);
	side_reset(&w->resp);
	while (w->queue) {
		struct rwreq *q = w->queue;
		w->queue = q->next;
		rwreq_free(q);
	}
	if (w->cur_req)
		rwreq_free(w->cur_req);
	if (w->req_held)
		rwreq_free(w->req_held);
	free(w->sheld);
	wsrw_free(w->ws);
	free(w->ws_url);
	json_decref(w->notes);
	free(w->held);
	free(w->upbuf);
	for (size_t i = 0; i < w->nmarks; i++)
		mark_drop(&w->marks[i]);
	free(w->last);
	free(w->peer);
	free(w->default_authority);
	free(w->upstream_authority);
	ruleset_unref(w->cfg.rules);
	free(w);
}
