/* Passive HTTP/1.x observer: two llhttp parsers (one per direction), a FIFO
 * of exchanges, and the hand-over to the WebSocket observer after a 101.
 *
 * How a response finds its request (RFC 9112 9.3.2): responses come in the
 * order of the requests, so the response parser writes into the oldest
 * exchange whose response has not ended. An exchange leaves the FIFO (to
 * the sink) when both its messages have ended; since both directions end
 * their messages in FIFO order, that is always the head.
 *
 * What llhttp cannot know from the response alone is told from
 * on_headers_complete (its return value): 1 = "no body" for 1xx, 204, 304
 * and responses to HEAD (RFC 9112 6.3 rules 1-2); 2 = "no body, then the
 * protocol changes" for 101 and a 2xx to CONNECT (rules 2 and 3 of RFC 9110
 * 9.3.6 / 15.2.2). llhttp then returns HPE_PAUSED_UPGRADE with the position
 * just past the head. */
#include "mitm/http1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "mitm/websocket.h"

struct h1_ex {
	struct http_exchange x;
	struct h1_ex *next;
	bool req_done, resp_done;
	bool head;     /* HEAD: the response has no body */
	bool connect;  /* CONNECT */
	bool ws_offer; /* the request asked for Upgrade: websocket */
};

/* The parse state of one direction. Header names and values, the request
 * target and the reason phrase are gathered in `acc` across chunks, then
 * copied once into the exchange. */
struct h1_side {
	llhttp_t parser;
	struct h1_ex *cur; /* the exchange being written */
	char *acc;
	size_t acc_len, acc_cap;
	size_t name_len;    /* header name: acc[0, name_len) */
	bool acc_over;      /* the item passed the bound: dropped */
	bool in_trailers;   /* after the head: headers are trailers */
	bool informational; /* the response being parsed is a 1xx */
};

struct http1_obs {
	struct http_sink sink;
	size_t body_cap;
	char *scheme, *default_authority;
	struct http_clock clock; /* read once per call */

	struct h1_side req, resp;
	struct h1_ex *head, *tail;
	size_t pending;

	bool failed, finished;
	const char *fail_error; /* set by a callback before failing */
	char fail_detail[96];

	/* Upgrade */
	bool client_paused; /* the request parser stopped after an
	                                  upgrade request or CONNECT */
	bool resume_client; /* its response said no: parse on */
	enum http1_upgrade upgraded;
	enum http1_upgrade pending_upgrade; /* decided at the head, taken at the pause */
	uint8_t *early;                     /* client bytes after the upgrade request */
	size_t early_len, early_cap;
	bool early_truncated;
	size_t server_http_len;
	char *protocol;        /* the 101's Upgrade value */
	char *ws_url, *ws_ext; /* for the WebSocket observer */
	struct ws_obs *ws;

	struct http1_stats stats;
};

static llhttp_settings_t req_settings, resp_settings;
static bool settings_ready;

/* ---- helpers ------------------------------------------------------------- */

static const struct timespec *now(struct http1_obs *o)
{
	return http_clock_now(&o->clock);
}

static struct http1_obs *obs_of(llhttp_t *p)
{
	return p->data;
}

static struct h1_side *side_of(llhttp_t *p)
{
	struct http1_obs *o = p->data;
	return p == &o->req.parser ? &o->req : &o->resp;
}

static void emit(struct http1_obs *o, struct h1_ex *e)
{
	if (o->sink.exchange)
		o->sink.exchange(o->sink.ctx, &e->x);
	o->stats.emitted++;
	http_exchange_free(&e->x);
	free(e);
}

/* Emits the finished exchanges at the head of the FIFO. */
static void pop_done(struct http1_obs *o)
{
	while (o->head && o->head->req_done && o->head->resp_done) {
		struct h1_ex *e = o->head;
		o->head = e->next;
		if (!o->head)
			o->tail = NULL;
		o->pending--;
		if (o->req.cur == e)
			o->req.cur = NULL;
		if (o->resp.cur == e)
			o->resp.cur = NULL;
		emit(o, e);
	}
}

/* Emits everything still queued with `error` and stops recording. */
static void drain(struct http1_obs *o, const char *error, const char *detail)
{
	const struct timespec *t = now(o);
	while (o->head) {
		struct h1_ex *e = o->head;
		o->head = e->next;
		if (!(e->req_done && e->resp_done)) {
			e->x.error = error;
			snprintf(e->x.error_detail, sizeof(e->x.error_detail), "%s",
				 detail ? detail : "");
		}
		if (e->x.end.tv_sec == 0 && e->x.end.tv_nsec == 0)
			e->x.end = *t;
		emit(o, e);
	}
	o->tail = NULL;
	o->pending = 0;
	o->req.cur = o->resp.cur = NULL;
}

static struct h1_ex *ex_new(struct http1_obs *o)
{
	struct h1_ex *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	http_exchange_init(&e->x, o->body_cap);
	if (http_strdup_n(&e->x.scheme, o->scheme, strlen(o->scheme)) != 0) {
		free(e);
		return NULL;
	}
	if (o->tail)
		o->tail->next = e;
	else
		o->head = e;
	o->tail = e;
	o->pending++;
	return e;
}

/* Stops recording: what is queued is emitted with the error. When nothing
 * is, one empty exchange carries it, so the failure is on record. */
static void fail(struct http1_obs *o, const char *error, const char *detail)
{
	if (o->failed)
		return;
	if (!o->head) {
		struct h1_ex *e = ex_new(o);
		if (e)
			e->x.start = *now(o);
	}
	drain(o, error, detail);
	o->failed = true;
}

static void fail_parse(struct http1_obs *o, struct h1_side *s, llhttp_errno_t err)
{
	if (o->fail_error) {
		fail(o, o->fail_error, o->fail_detail);
		return;
	}
	char detail[96];
	const char *reason = llhttp_get_error_reason(&s->parser);
	snprintf(detail, sizeof(detail), "%s: %s %s", s == &o->req ? "request" : "response",
		 llhttp_errno_name(err), reason ? reason : "");
	fail(o, "parse_error", detail);
}

/* Gathers a span of a name, value, target or reason phrase. */
static void acc_add(struct h1_side *s, const char *at, size_t n)
{
	if (s->acc_over)
		return;
	if (n > HTTPFLOW_MAX_HEADER_BYTES - s->acc_len) {
		/* Keep what fits, so a cut target is the same prefix however the
		 * bytes were chunked. */
		n = HTTPFLOW_MAX_HEADER_BYTES - s->acc_len;
		s->acc_over = true;
	}
	if (n == 0) /* llhttp reports empty spans; acc may still be NULL */
		return;
	size_t need = s->acc_len + n;
	if (need > s->acc_cap) {
		size_t cap = s->acc_cap ? s->acc_cap : 256;
		while (cap < need)
			cap *= 2;
		char *a = realloc(s->acc, cap);
		if (!a) {
			s->acc_over = true;
			s->acc_len = 0;
			return;
		}
		s->acc = a;
		s->acc_cap = cap;
	}
	memcpy(s->acc + s->acc_len, at, n);
	s->acc_len = need;
}

static void acc_reset(struct h1_side *s)
{
	s->acc_len = 0;
	s->name_len = 0;
	s->acc_over = false;
}

static struct http_message *msg_of(struct h1_side *s, struct http1_obs *o)
{
	return s == &o->req ? &s->cur->x.req : &s->cur->x.resp;
}

static bool value_has_token(const struct http_header *h, const char *token)
{
	/* a comma-separated list; tokens compared without case */
	size_t tl = strlen(token);
	const char *v = h->value, *end = h->value + h->value_len;
	while (v < end) {
		while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
			v++;
		const char *t = v;
		while (v < end && *v != ',')
			v++;
		const char *te = v;
		while (te > t && (te[-1] == ' ' || te[-1] == '\t'))
			te--;
		if ((size_t)(te - t) == tl && strncasecmp(t, token, tl) == 0)
			return true;
	}
	return false;
}

/* ---- callbacks shared by both directions --------------------------------- */

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	acc_add(side_of(p), at, n);
	return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct h1_side *s = side_of(p);
	s->name_len = s->acc_len;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
	acc_add(side_of(p), at, n);
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct http1_obs *o = obs_of(p);
	struct h1_side *s = side_of(p);
	if (s->cur) {
		struct http_message *m = msg_of(s, o);
		struct http_headers *h = s->in_trailers ? &m->trailers : &m->headers;
		/* An empty name and value (a bare ":") leave nothing accumulated. */
		const char *acc = s->acc ? s->acc : "";
		if (s->acc_over)
			h->truncated = true;
		else
			(void)http_headers_add(h, acc, s->name_len, acc + s->name_len,
					       s->acc_len - s->name_len);
		/* The authority as soon as Host is seen, so a request cut short
		 * in its head still has its URL. */
		if (s == &o->req && !s->in_trailers && !s->cur->x.authority && !s->acc_over &&
		    s->name_len == 4 && strncasecmp(acc, "host", 4) == 0)
			(void)http_strdup_n(&s->cur->x.authority, acc + s->name_len,
					    s->acc_len - s->name_len);
	}
	acc_reset(s);
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct http1_obs *o = obs_of(p);
	struct h1_side *s = side_of(p);
	if (s->cur)
		http_body_append(&msg_of(s, o)->body, (const uint8_t *)at, n);
	return 0;
}

static void set_version(struct http_exchange *x, llhttp_t *p)
{
	char v[16];
	int n = snprintf(v, sizeof(v), "HTTP/%u.%u", llhttp_get_http_major(p),
			 llhttp_get_http_minor(p));
	(void)http_strdup_n(&x->version, v, (size_t)n);
}

/* ---- requests ------------------------------------------------------------ */

static int req_message_begin(llhttp_t *p)
{
	struct http1_obs *o = obs_of(p);
	struct h1_side *s = &o->req;
	o->stats.requests++;
	if (o->pending >= HTTP1_MAX_PENDING) {
		o->fail_error = "pipeline_overflow";
		snprintf(o->fail_detail, sizeof(o->fail_detail),
			 "more than %d requests awaiting a response", HTTP1_MAX_PENDING);
		return -1;
	}
	struct h1_ex *e = ex_new(o);
	if (!e) {
		o->fail_error = "parse_error";
		snprintf(o->fail_detail, sizeof(o->fail_detail), "out of memory");
		return -1;
	}
	e->x.start = *now(o);
	s->cur = e;
	s->in_trailers = false;
	acc_reset(s);
	return 0;
}

static int req_url(llhttp_t *p, const char *at, size_t n)
{
	acc_add(&obs_of(p)->req, at, n);
	return 0;
}

static int req_url_complete(llhttp_t *p)
{
	struct h1_side *s = &obs_of(p)->req;
	if (s->cur)
		(void)http_strdup_n(&s->cur->x.path, s->acc, s->acc_len);
	if (s->acc_over && s->cur)
		s->cur->x.req.headers.truncated = true;
	acc_reset(s);
	return 0;
}

static int req_headers_complete(llhttp_t *p)
{
	struct h1_side *s = &obs_of(p)->req;
	s->in_trailers = true;
	struct h1_ex *e = s->cur;
	if (!e)
		return 0;
	uint8_t m = llhttp_get_method(p);
	const char *name = llhttp_method_name((llhttp_method_t)m);
	(void)http_strdup_n(&e->x.method, name, strlen(name));
	set_version(&e->x, p);
	e->head = m == HTTP_HEAD;
	e->connect = m == HTTP_CONNECT;
	const struct http_header *h = http_headers_find(&e->x.req.headers, "upgrade");
	e->ws_offer = h && value_has_token(h, "websocket");
	return 0;
}

static int req_message_complete(llhttp_t *p)
{
	struct http1_obs *o = obs_of(p);
	struct h1_ex *e = o->req.cur;
	if (!e)
		return 0;
	e->req_done = true;
	e->x.req.complete = true;
	e->x.request_end = *now(o);
	o->req.cur = NULL;
	pop_done(o);
	return 0;
}

/* ---- responses ----------------------------------------------------------- */

static int resp_message_begin(llhttp_t *p)
{
	struct http1_obs *o = obs_of(p);
	struct h1_side *s = &o->resp;
	s->in_trailers = false;
	s->informational = false;
	acc_reset(s);
	if (!s->cur) {
		struct h1_ex *e = o->head;
		while (e && e->resp_done)
			e = e->next;
		if (!e) {
			/* A response no request asked for (e.g. a 408 before any). */
			if (o->pending >= HTTP1_MAX_PENDING) {
				o->fail_error = "pipeline_overflow";
				snprintf(o->fail_detail, sizeof(o->fail_detail),
					 "responses without requests");
				return -1;
			}
			e = ex_new(o);
			if (!e) {
				o->fail_error = "parse_error";
				snprintf(o->fail_detail, sizeof(o->fail_detail), "out of memory");
				return -1;
			}
			e->req_done = true;
		}
		s->cur = e;
	}
	if (s->cur->x.response_start.tv_sec == 0 && s->cur->x.response_start.tv_nsec == 0)
		s->cur->x.response_start = *now(o);
	return 0;
}

static int resp_status(llhttp_t *p, const char *at, size_t n)
{
	acc_add(&obs_of(p)->resp, at, n);
	return 0;
}

static int resp_status_complete(llhttp_t *p)
{
	struct h1_side *s = &obs_of(p)->resp;
	if (s->cur)
		(void)http_strdup_n(&s->cur->x.reason, s->acc, s->acc_len);
	acc_reset(s);
	return 0;
}

static int resp_headers_complete(llhttp_t *p)
{
	struct http1_obs *o = obs_of(p);
	struct h1_side *s = &o->resp;
	struct h1_ex *e = s->cur;
	s->in_trailers = true;
	if (!e)
		return 0;
	int status = llhttp_get_status_code(p);
	if (!e->x.version)
		set_version(&e->x, p);

	/* 1xx but 101: interim, its headers dropped; the final one follows. */
	if (status >= 100 && status < 200 && status != 101) {
		size_t max = sizeof(e->x.informational) / sizeof(e->x.informational[0]);
		if (e->x.n_informational < max)
			e->x.informational[e->x.n_informational++] = status;
		http_headers_free(&e->x.resp.headers);
		free(e->x.reason);
		e->x.reason = NULL;
		s->informational = true;
		return 1;
	}
	e->x.status = status;

	if (status == 101) {
		const struct http_header *h = http_headers_find(&e->x.resp.headers, "upgrade");
		if (h)
			(void)http_strdup_n(&o->protocol, h->value, h->value_len);
		if (h && value_has_token(h, "websocket")) {
			e->x.websocket = true;
			o->pending_upgrade = HTTP1_UPGRADE_WEBSOCKET;
			const struct http_header *x =
				http_headers_find(&e->x.resp.headers, "sec-websocket-extensions");
			if (x)
				(void)http_strdup_n(&o->ws_ext, x->value, x->value_len);
			/* ws(s)://authority/path of the upgrade request */
			const char *auth = e->x.authority         ? e->x.authority
					   : o->default_authority ? o->default_authority
								  : "";
			const char *path = e->x.path ? e->x.path : "/";
			size_t need = strlen(auth) + strlen(path) + 8;
			free(o->ws_url);
			o->ws_url = malloc(need);
			if (o->ws_url)
				snprintf(o->ws_url, need, "%s://%s%s",
					 strcmp(o->scheme, "http") == 0 ? "ws" : "wss", auth, path);
		} else {
			o->pending_upgrade = HTTP1_UPGRADE_OTHER;
		}
		return 2;
	}
	if (e->connect && status >= 200 && status < 300) {
		o->pending_upgrade = HTTP1_UPGRADE_CONNECT;
		return 2;
	}
	if (e->head || status == 204 || status == 304)
		return 1;
	return 0;
}

static int resp_message_complete(llhttp_t *p)
{
	struct http1_obs *o = obs_of(p);
	struct h1_side *s = &o->resp;
	if (s->informational) {
		s->informational = false;
		return 0;
	}
	struct h1_ex *e = s->cur;
	if (!e)
		return 0;
	e->resp_done = true;
	e->x.resp.complete = true;
	e->x.end = *now(o);
	s->cur = NULL;
	/* An upgrade request or CONNECT turned down: its connection stays HTTP. */
	bool resume = o->client_paused && o->pending_upgrade == HTTP1_UPGRADE_NONE && e == o->tail;
	pop_done(o);
	if (resume) {
		/* Stop here so the client's next requests are queued before the
		 * rest of this chunk's responses look for theirs. */
		o->resume_client = true;
		return HPE_PAUSED;
	}
	return 0;
}

static void settings_init(void)
{
	if (settings_ready)
		return;
	llhttp_settings_init(&req_settings);
	req_settings.on_message_begin = req_message_begin;
	req_settings.on_url = req_url;
	req_settings.on_url_complete = req_url_complete;
	req_settings.on_header_field = on_header_field;
	req_settings.on_header_field_complete = on_header_field_complete;
	req_settings.on_header_value = on_header_value;
	req_settings.on_header_value_complete = on_header_value_complete;
	req_settings.on_headers_complete = req_headers_complete;
	req_settings.on_body = on_body;
	req_settings.on_message_complete = req_message_complete;

	llhttp_settings_init(&resp_settings);
	resp_settings.on_message_begin = resp_message_begin;
	resp_settings.on_status = resp_status;
	resp_settings.on_status_complete = resp_status_complete;
	resp_settings.on_header_field = on_header_field;
	resp_settings.on_header_field_complete = on_header_field_complete;
	resp_settings.on_header_value = on_header_value;
	resp_settings.on_header_value_complete = on_header_value_complete;
	resp_settings.on_headers_complete = resp_headers_complete;
	resp_settings.on_body = on_body;
	resp_settings.on_message_complete = resp_message_complete;
	settings_ready = true;
}

/* ---- lifetime ------------------------------------------------------------ */

struct http1_obs *http1_obs_new(const struct http1_config *cfg)
{
	settings_init();
	struct http1_obs *o = calloc(1, sizeof(*o));
	if (!o)
		goto fail;
	o->sink = cfg->sink;
	o->body_cap = cfg->body_cap;
	o->clock.read = cfg->clock;
	const char *scheme = cfg->scheme ? cfg->scheme : "https";
	if (http_strdup_n(&o->scheme, scheme, strlen(scheme)) != 0)
		goto fail;
	if (cfg->default_authority && http_strdup_n(&o->default_authority, cfg->default_authority,
						    strlen(cfg->default_authority)) != 0)
		goto fail;
	llhttp_init(&o->req.parser, HTTP_REQUEST, &req_settings);
	llhttp_init(&o->resp.parser, HTTP_RESPONSE, &resp_settings);
	o->req.parser.data = o;
	o->resp.parser.data = o;
	/* Bytes after a "Connection: close" message are the endpoints' business;
	 * the observer records them instead of calling them an error. */
	llhttp_set_lenient_keep_alive(&o->req.parser, 1);
	llhttp_set_lenient_keep_alive(&o->resp.parser, 1);
	return o;
fail:
	http1_obs_free(o);
	errno = ENOMEM;
	return NULL;
}

void http1_obs_free(struct http1_obs *o)
{
	if (!o)
		return;
	while (o->head) {
		struct h1_ex *e = o->head;
		o->head = e->next;
		http_exchange_free(&e->x);
		free(e);
	}
	ws_obs_free(o->ws);
	free(o->req.acc);
	free(o->resp.acc);
	free(o->early);
	free(o->protocol);
	free(o->ws_url);
	free(o->ws_ext);
	free(o->scheme);
	free(o->default_authority);
	free(o);
}

/* ---- feeding ------------------------------------------------------------- */

static void early_add(struct http1_obs *o, const uint8_t *p, size_t n)
{
	size_t room = HTTP1_MAX_EARLY_BYTES - o->early_len;
	if (n > room) {
		n = room;
		o->early_truncated = true;
	}
	if (n == 0)
		return;
	if (o->early_len + n > o->early_cap) {
		size_t cap = o->early_cap ? o->early_cap : 1024;
		while (cap < o->early_len + n)
			cap *= 2;
		if (cap > HTTP1_MAX_EARLY_BYTES)
			cap = HTTP1_MAX_EARLY_BYTES;
		uint8_t *b = realloc(o->early, cap);
		if (!b) {
			o->early_truncated = true;
			return;
		}
		o->early = b;
		o->early_cap = cap;
	}
	memcpy(o->early + o->early_len, p, n);
	o->early_len += n;
}

static void client_exec(struct http1_obs *o, const uint8_t *p, size_t n)
{
	if (o->client_paused) {
		early_add(o, p, n);
		return;
	}
	llhttp_errno_t err = llhttp_execute(&o->req.parser, (const char *)p, n);
	if (err == HPE_OK)
		return;
	if (err == HPE_PAUSED_UPGRADE) {
		/* An upgrade request or CONNECT: what follows is HTTP only if the
		 * response turns it down. */
		size_t used = (size_t)((const uint8_t *)llhttp_get_error_pos(&o->req.parser) - p);
		o->client_paused = true;
		early_add(o, p + used, n - used);
		return;
	}
	fail_parse(o, &o->req, err);
}

static void resume_client(struct http1_obs *o)
{
	o->resume_client = false;
	o->client_paused = false;
	llhttp_resume_after_upgrade(&o->req.parser);
	uint8_t *b = o->early;
	size_t n = o->early_len;
	o->early = NULL;
	o->early_len = o->early_cap = 0;
	o->early_truncated = false;
	if (n)
		client_exec(o, b, n);
	free(b);
}

static void start_websocket(struct http1_obs *o)
{
	struct ws_config wc = {
		.sink = o->sink,
		.body_cap = o->body_cap,
		.url = o->ws_url,
		.extensions = o->ws_ext,
		.clock = o->clock.read,
	};
	o->ws = ws_obs_new(&wc);
	if (o->ws && o->early_len)
		ws_obs_client(o->ws, o->early, o->early_len);
}

void http1_obs_client(struct http1_obs *o, const uint8_t *p, size_t n)
{
	if (o->ws) {
		ws_obs_client(o->ws, p, n);
		return;
	}
	if (o->failed || o->finished || o->upgraded != HTTP1_UPGRADE_NONE || n == 0)
		return;
	o->clock.valid = false;
	client_exec(o, p, n);
}

void http1_obs_server(struct http1_obs *o, const uint8_t *p, size_t n)
{
	if (o->ws) {
		ws_obs_server(o->ws, p, n);
		return;
	}
	if (o->failed || o->finished || o->upgraded != HTTP1_UPGRADE_NONE || n == 0)
		return;
	o->clock.valid = false;
	llhttp_errno_t err = llhttp_execute(&o->resp.parser, (const char *)p, n);
	while (err == HPE_PAUSED && o->resume_client) {
		size_t used = (size_t)((const uint8_t *)llhttp_get_error_pos(&o->resp.parser) - p);
		llhttp_resume(&o->resp.parser);
		resume_client(o);
		if (o->failed)
			return;
		p += used;
		n -= used;
		err = n ? llhttp_execute(&o->resp.parser, (const char *)p, n) : HPE_OK;
	}
	if (err == HPE_OK)
		return;
	if (err == HPE_PAUSED_UPGRADE) {
		size_t used = (size_t)((const uint8_t *)llhttp_get_error_pos(&o->resp.parser) - p);
		o->server_http_len = used;
		o->upgraded = o->pending_upgrade != HTTP1_UPGRADE_NONE ? o->pending_upgrade
								       : HTTP1_UPGRADE_OTHER;
		if (o->upgraded == HTTP1_UPGRADE_WEBSOCKET) {
			start_websocket(o);
			if (o->ws && used < n)
				ws_obs_server(o->ws, p + used, n - used);
		}
		return;
	}
	fail_parse(o, &o->resp, err);
}

void http1_obs_client_eof(struct http1_obs *o)
{
	/* Requests never end by close (RFC 9112 6.3 rule 6): nothing to finish
	 * but a parser in the middle of one, which http1_obs_finish reports. */
	(void)o;
}

void http1_obs_server_eof(struct http1_obs *o)
{
	if (o->ws || o->failed || o->finished || o->upgraded != HTTP1_UPGRADE_NONE)
		return;
	o->clock.valid = false;
	/* A response delimited by the close ends here (RFC 9112 6.3 rule 8);
	 * anything else cut short stays pending for http1_obs_finish. */
	if (o->resp.cur)
		(void)llhttp_finish(&o->resp.parser);
}

void http1_obs_finish(struct http1_obs *o, const char *reason)
{
	if (o->finished)
		return;
	o->finished = true;
	o->clock.valid = false;
	if (o->ws)
		ws_obs_finish(o->ws);
	if (!o->failed)
		drain(o, reason ? reason : "connection_closed", NULL);
}

void http1_obs_tick(struct http1_obs *o, const struct timespec *t)
{
	if (o->ws)
		ws_obs_tick(o->ws, t);
}

bool http1_obs_failed(const struct http1_obs *o)
{
	return o->failed || (o->ws && ws_obs_failed(o->ws));
}

enum http1_upgrade http1_obs_upgraded(const struct http1_obs *o, struct http1_upgrade_info *info)
{
	if (info) {
		info->server_http_len = o->server_http_len;
		info->client_early = o->early;
		info->client_early_len = o->early_len;
		info->client_early_truncated = o->early_truncated;
		info->protocol = o->protocol;
	}
	return o->upgraded;
}

struct http1_stats http1_obs_stats(const struct http1_obs *o)
{
	return o->stats;
}
