/* The control API's HTTP/1.1 server (see httpd.h): the connection core,
 * which only sees bytes, and the libuv TCP transport under it. */
#include "control/httpd_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"

#define HEADERS_EXTRA_MAX 8192 /* header lines a handler adds */
#define IN_SLACK (64u * 1024)  /* one read past the soft cap; more is a transport ignoring us */
#define RUN_GUARD 1000000

static void conn_run(struct httpd_conn *c);
static void kick_cb(uv_timer_t *t);
static void timer_arm(struct httpd *s, uint64_t due);
static void conn_update_deadline(struct httpd_conn *c);
static void reply_error_v(struct httpd_resp *r, int status, const char *fmt, va_list ap);
static void reply_error(struct httpd_resp *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline struct exch *exch_of_resp(struct httpd_resp *r)
{
	return (struct exch *)((char *)r - offsetof(struct exch, resp));
}

static uint64_t now_ms(const struct httpd *s)
{
	return uv_now(s->loop);
}

/* ---- Text helpers ---------------------------------------------------------- */

/* RFC 3629: no overlongs, surrogates or code points past U+10FFFF. */
bool utf8_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t b = p[i];
		if (b < 0x80) {
			i++;
			continue;
		}
		size_t len;
		uint32_t cp;
		if (b >= 0xc2 && b <= 0xdf) {
			len = 2;
			cp = b & 0x1f;
		} else if (b >= 0xe0 && b <= 0xef) {
			len = 3;
			cp = b & 0x0f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			len = 4;
			cp = b & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

/* JSON strings must be UTF-8: a stray byte (from a path, say) becomes '?'. */
static void utf8_scrub(char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		size_t k = 1;
		while (k <= 4 && i + k <= n && !utf8_valid((const uint8_t *)s + i, k))
			k++;
		if (k > 4 || i + k > n) {
			s[i++] = '?';
			continue;
		}
		i += k;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* %XX (and '+' as space when `plus`) into `out`, which holds n bytes.
 * Returns the length, or -1 for a bad escape or a decoded NUL. */
static long pct_decode(const char *in, size_t n, bool plus, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char ch = in[i];
		if (ch == '%') {
			if (n - i < 3)
				return -1;
			int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			ch = (char)(hi << 4 | lo);
			if (ch == '\0')
				return -1;
			i += 2;
		} else if (ch == '+' && plus) {
			ch = ' ';
		}
		out[o++] = ch;
	}
	return (long)o;
}

static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Does a comma-separated header value hold `token` (case-insensitive)? */
bool header_has_token(const char *value, const char *token)
{
	size_t tl = strlen(token);
	const char *p = value;
	while (p && *p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
			t--;
		if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
			return true;
		p = e;
	}
	return false;
}

static const char *reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 303:
		return "See Other";
	case 304:
		return "Not Modified";
	case 307:
		return "Temporary Redirect";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 410:
		return "Gone";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 421:
		return "Misdirected Request";
	case 422:
		return "Unprocessable Content";
	case 426:
		return "Upgrade Required";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return status < 300   ? "OK"
		       : status < 400 ? "Redirect"
		       : status < 500 ? "Error"
				      : "Server Error";
	}
}

/* ---- Requests ------------------------------------------------------------ */

static const char empty[1] = "";

static inline const char *str_at(const struct httpd_req *r, struct span sp)
{
	return r->arena ? r->arena + sp.off : empty;
}

/* Room for `n` more bytes; the arena never moves while it has them. */
static bool arena_reserve(struct httpd_req *r, size_t n)
{
	if (r->arena_len + n <= r->arena_cap)
		return true;
	size_t cap = r->arena_cap ? r->arena_cap : 1024;
	while (cap < r->arena_len + n)
		cap *= 2;
	if (cap > UINT32_MAX)
		return false;
	char *p = realloc(r->arena, cap);
	if (!p)
		return false;
	r->arena = p;
	r->arena_cap = cap;
	return true;
}

static bool arena_add(struct httpd_req *r, const char *p, size_t n)
{
	if (!arena_reserve(r, n))
		return false;
	memcpy(r->arena + r->arena_len, p, n);
	r->arena_len += n;
	return true;
}

static bool arena_str(struct httpd_req *r, struct span *sp, const char *p, size_t n)
{
	if (!arena_reserve(r, n + 1))
		return false;
	sp->off = (uint32_t)r->arena_len;
	sp->len = (uint32_t)n;
	memcpy(r->arena + r->arena_len, p, n);
	r->arena[r->arena_len + n] = '\0';
	r->arena_len += n + 1;
	return true;
}

static struct exch *exch_new(struct httpd_conn *c)
{
	struct exch *ex = calloc(1, sizeof(*ex));
	if (!ex)
		return NULL;
	ex->req.srv = c->srv;
	memcpy(ex->req.peer, c->peer, sizeof(ex->req.peer));
	ex->resp.conn = c;
	return ex;
}

void exch_free(struct exch *ex)
{
	if (!ex)
		return;
	free(ex->req.arena);
	free(ex->req.query);
	free(ex->req.param);
	free(ex->req.body);
	free(ex->resp.hdrs);
	free(ex);
}

const char *httpd_req_method(const struct httpd_req *r)
{
	return str_at(r, r->method);
}

const char *httpd_req_path(const struct httpd_req *r)
{
	return str_at(r, r->path);
}

static const char *kv_find(const struct httpd_req *r, const struct kv *v, size_t n,
			   const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(str_at(r, v[i].name), name) == 0)
			return str_at(r, v[i].value);
	return NULL;
}

const char *httpd_req_param(const struct httpd_req *r, const char *name)
{
	return kv_find(r, r->param, r->nparam, name);
}

const char *httpd_req_query(const struct httpd_req *r, const char *name)
{
	return kv_find(r, r->query, r->nquery, name);
}

size_t httpd_req_query_count(const struct httpd_req *r)
{
	return r->nquery;
}

bool httpd_req_query_at(const struct httpd_req *r, size_t i, const char **name, const char **value)
{
	if (i >= r->nquery)
		return false;
	*name = str_at(r, r->query[i].name);
	*value = str_at(r, r->query[i].value);
	return true;
}

const char *httpd_req_header(const struct httpd_req *r, const char *name)
{
	for (size_t i = 0; i < r->nhdr; i++)
		if (strcasecmp(str_at(r, r->hdr[i].name), name) == 0)
			return str_at(r, r->hdr[i].value);
	return NULL;
}

size_t httpd_req_header_count(const struct httpd_req *r, const char *name)
{
	size_t n = 0;
	for (size_t i = 0; i < r->nhdr; i++)
		n += strcasecmp(str_at(r, r->hdr[i].name), name) == 0;
	return n;
}

size_t httpd_req_headers(const struct httpd_req *r)
{
	return r->nhdr;
}

bool httpd_req_header_at(const struct httpd_req *r, size_t i, const char **name, const char **value)
{
	if (i >= r->nhdr)
		return false;
	*name = str_at(r, r->hdr[i].name);
	*value = str_at(r, r->hdr[i].value);
	return true;
}

const uint8_t *httpd_req_body(const struct httpd_req *r, size_t *len)
{
	*len = r->body_len;
	return r->body ? r->body : (const uint8_t *)empty;
}

bool httpd_req_is_websocket(const struct httpd_req *r)
{
	return r->websocket;
}

const char *httpd_req_peer(const struct httpd_req *r)
{
	return r->peer;
}

struct httpd *httpd_req_server(const struct httpd_req *r)
{
	return r->srv;
}

/* Query parameters, decoded into the arena. 0, or -1 for a bad escape. */
static int parse_query(struct httpd_req *r, size_t qoff, size_t qlen)
{
	if (qlen == 0)
		return 0;
	size_t max = qlen / 2 + 1;
	r->query = calloc(max, sizeof(*r->query));
	/* Decoded text is never longer than the raw, plus two NULs a pair. */
	if (!r->query || !arena_reserve(r, qlen + 2 * max))
		return -1;
	const char *q = r->arena + qoff, *end = q + qlen;
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *e = amp ? amp : end;
		if (e > q) {
			const char *eq = memchr(q, '=', (size_t)(e - q));
			const char *ne = eq ? eq : e;
			struct kv *kv = &r->query[r->nquery];
			char *out = r->arena + r->arena_len;
			long n = pct_decode(q, (size_t)(ne - q), true, out);
			if (n < 0)
				return -1;
			out[n] = '\0';
			kv->name = (struct span){ (uint32_t)r->arena_len, (uint32_t)n };
			r->arena_len += (size_t)n + 1;
			out = r->arena + r->arena_len;
			n = eq ? pct_decode(eq + 1, (size_t)(e - eq - 1), true, out) : 0;
			if (n < 0)
				return -1;
			out[n] = '\0';
			kv->value = (struct span){ (uint32_t)r->arena_len, (uint32_t)n };
			r->arena_len += (size_t)n + 1;
			r->nquery++;
		}
		q = amp ? amp + 1 : end;
	}
	return 0;
}

/* A "." or ".." segment, plain or escaped: routes never see one. */
static bool has_dot_segment(const char *path)
{
	const char *p = path;
	while (*p == '/') {
		const char *s = p + 1, *e = strchrnul(s, '/');
		if (e - s <= 6) {
			char tmp[8];
			long n = pct_decode(s, (size_t)(e - s), false, tmp);
			if ((n == 1 && tmp[0] == '.') || (n == 2 && tmp[0] == '.' && tmp[1] == '.'))
				return true;
		}
		p = e;
	}
	return false;
}

/* ---- Routes ------------------------------------------------------------------ */

#define MAX_PARAMS 8

struct rawp {
	const char *name, *v;
	size_t name_len, vlen;
};

/* Matches `path` against `pat`. Returns the parameter count, or -1. */
static int pattern_match(const char *pat, const char *path, struct rawp *ps)
{
	int n = 0;
	const char *a = pat, *b = path;
	while (*a) {
		if (*a != '/' || *b != '/')
			return -1;
		a++;
		b++;
		const char *ae = strchrnul(a, '/'), *be = strchrnul(b, '/');
		if (ae - a == 1 && *a == '*' && !*ae) {
			ps[n++] = (struct rawp){ "*", b, 1, strlen(b) };
			return n;
		}
		if (*a == '{') {
			if (be == b || n == MAX_PARAMS)
				return -1;
			ps[n++] = (struct rawp){ a + 1, b, (size_t)(ae - a - 2), (size_t)(be - b) };
		} else if (ae - a != be - b || memcmp(a, b, (size_t)(ae - a)) != 0) {
			return -1;
		}
		a = ae;
		b = be;
	}
	return *b ? -1 : n;
}

static bool pattern_valid(const char *pat)
{
	if (pat[0] != '/')
		return false;
	int params = 0;
	const char *p = pat;
	while (*p == '/') {
		const char *s = p + 1, *e = strchrnul(s, '/');
		size_t n = (size_t)(e - s);
		if (n == 1 && *s == '*') {
			if (*e)
				return false; /* "*" only last */
		} else if (n > 0 && *s == '{') {
			if (n < 3 || s[n - 1] != '}' || ++params > MAX_PARAMS)
				return false;
			for (size_t i = 1; i + 1 < n; i++)
				if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') ||
				      (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
					return false;
		} else {
			for (size_t i = 0; i < n; i++)
				if (strchr("{}*?%#", s[i]) || (unsigned char)s[i] <= ' ')
					return false;
		}
		p = e;
	}
	return *p == '\0';
}

static int add_route(struct httpd *s, const char *method, const char *pattern, httpd_handler fn,
		     const struct httpd_ws_handler *ws, void *arg)
{
	if (!pattern || !pattern_valid(pattern))
		return -EINVAL;
	if (method) {
		if (!*method || strlen(method) > 32)
			return -EINVAL;
		for (const char *m = method; *m; m++)
			if (!is_tchar((unsigned char)*m))
				return -EINVAL;
	}
	struct route *n = realloc(s->routes, (s->nroutes + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	s->routes = n;
	struct route *rt = &n[s->nroutes];
	*rt = (struct route){ method ? strdup(method) : NULL, strdup(pattern), fn, ws, arg };
	if ((method && !rt->method) || !rt->pattern) {
		free(rt->method);
		free(rt->pattern);
		return -ENOMEM;
	}
	s->nroutes++;
	return 0;
}

int httpd_route(struct httpd *s, const char *method, const char *pattern, httpd_handler fn,
		void *arg)
{
	if (!s || !fn || !method)
		return -EINVAL;
	return add_route(s, method, pattern, fn, NULL, arg);
}

int httpd_route_ws(struct httpd *s, const char *pattern, const struct httpd_ws_handler *h,
		   void *arg)
{
	if (!s || !h)
		return -EINVAL;
	return add_route(s, NULL, pattern, NULL, h, arg);
}

void httpd_set_gate(struct httpd *s, httpd_gate fn, void *arg)
{
	s->gate = fn;
	s->gate_arg = arg;
}

static const char *route_method(const struct route *rt)
{
	return rt->method ? rt->method : "GET";
}

/* The route for the request, its parameters decoded; or the status to
 * answer (404, 405 with `allow` filled, 400 for a bad parameter). */
static int route_find(struct httpd *s, struct exch *ex, char *allow, size_t allow_len)
{
	struct httpd_req *r = &ex->req;
	const char *method = str_at(r, r->method);
	/* A copy: the parameters point into it while the arena grows. */
	char *path = strdup(str_at(r, r->path));
	if (!path)
		return 500;
	struct rawp ps[MAX_PARAMS + 1];
	bool path_known = false;
	int status = 0;
	allow[0] = '\0';
	for (size_t i = 0; i < s->nroutes; i++) {
		const struct route *rt = &s->routes[i];
		int n = pattern_match(rt->pattern, path, ps);
		if (n < 0)
			continue;
		path_known = true;
		const char *m = route_method(rt);
		bool same = strcmp(m, method) == 0 || (r->head && strcmp(m, "GET") == 0);
		if (!same) {
			/* Allow: each method once, HEAD after GET. */
			const char *add[2] = { m, strcmp(m, "GET") == 0 ? "HEAD" : NULL };
			for (int k = 0; k < 2 && add[k]; k++) {
				if (header_has_token(allow, add[k]))
					continue;
				size_t used = strlen(allow);
				snprintf(allow + used, allow_len - used, "%s%s", used ? ", " : "",
					 add[k]);
			}
			continue;
		}
		r->param = calloc((size_t)n + 1, sizeof(*r->param));
		if (!r->param) {
			free(path);
			return 500;
		}
		for (int k = 0; k < n && !status; k++) {
			struct kv *kv = &r->param[k];
			if (!arena_reserve(r, ps[k].name_len + ps[k].vlen + 2)) {
				status = 500;
				break;
			}
			char *out = r->arena + r->arena_len;
			long dn = pct_decode(ps[k].v, ps[k].vlen, false, out);
			if (dn < 0) {
				status = 400;
				break;
			}
			out[dn] = '\0';
			kv->value = (struct span){ (uint32_t)r->arena_len, (uint32_t)dn };
			r->arena_len += (size_t)dn + 1;
			arena_str(r, &kv->name, ps[k].name, ps[k].name_len);
			r->nparam++;
		}
		if (!status)
			ex->route = rt;
		free(path);
		return status;
	}
	free(path);
	return path_known ? 405 : 404;
}

/* ---- Output ---------------------------------------------------------------- */

size_t conn_queued(const struct httpd_conn *c)
{
	return c->out_len + c->inflight;
}

bool conn_append(struct httpd_conn *c, const void *p, size_t n)
{
	if (c->mode == M_DEAD)
		return false;
	if (n == 0)
		return true;
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n)
			cap *= 2;
		uint8_t *q = realloc(c->out, cap);
		if (!q) {
			log_warn("control: %s: out of memory for a response", c->peer);
			conn_abort(c);
			return false;
		}
		c->out = q;
		c->out_cap = cap;
	}
	bool was_empty = conn_queued(c) == 0;
	if (was_empty)
		c->last_progress = now_ms(c->srv); /* a stall counts from here */
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
	size_t q = conn_queued(c);
	if (q > c->srv->stats.queued_peak)
		c->srv->stats.queued_peak = q;
	/* Sent from outside the connection's run (a broadcast, say): the
	 * stall timeout starts now, not at its next run. */
	if (was_empty && !c->running)
		conn_update_deadline(c);
	return true;
}

void conn_notify_output(struct httpd_conn *c)
{
	if (c->mode != M_DEAD && c->out_len > 0)
		c->t->output(c->ctx);
}

size_t httpd_conn_take(struct httpd_conn *c, uint8_t **buf)
{
	if (c->mode == M_DEAD || c->out_len == 0) {
		*buf = NULL;
		return 0;
	}
	size_t n = c->out_len;
	*buf = c->out;
	c->inflight += n;
	c->out = NULL;
	c->out_len = c->out_cap = 0;
	c->out_floor = 0;
	return n;
}

size_t httpd_conn_queued(const struct httpd_conn *c)
{
	return conn_queued(c);
}

/* ---- Responses ------------------------------------------------------------ */

enum framing { FR_LENGTH, FR_CHUNKED, FR_CLOSE, FR_NONE };

/* Defaults a handler's own header replaces. */
static const struct {
	const char *name, *line;
} defaults[] = {
	{ "Cache-Control", "Cache-Control: no-store\r\n" },
	{ "X-Content-Type-Options", "X-Content-Type-Options: nosniff\r\n" },
	{ "X-Frame-Options", "X-Frame-Options: DENY\r\n" },
	{ "Referrer-Policy", "Referrer-Policy: no-referrer\r\n" },
	{ "Content-Security-Policy",
	  "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n" },
};

static struct httpd *api_enter(struct httpd_resp *r)
{
	struct httpd *s = r->conn ? r->conn->srv : NULL;
	if (s)
		s->in_api++;
	return s;
}

static void api_leave(struct httpd *s)
{
	if (s)
		s->in_api--;
}

void conn_changed(struct httpd_conn *c)
{
	struct httpd *s = c->srv;
	if (c->mode == M_DEAD)
		return;
	if (c->running) {
		c->rerun = true;
		return;
	}
	c->kick = true;
	if (!s->kick_armed && !s->shut) {
		s->kick_armed = true;
		uv_timer_start(&s->kick, kick_cb, 0, 0);
	}
}

static void resp_finish(struct httpd_resp *r)
{
	r->state = R_DONE;
	r->want_writable = false;
	if (!r->conn) {
		if (r->depth == 0)
			exch_free(exch_of_resp(r));
		return;
	}
	conn_changed(r->conn);
}

static void date_now(char out[40])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static bool text_ok(const char *v)
{
	for (; *v; v++)
		if (*v == '\r' || *v == '\n')
			return false;
	return true;
}

/* The status line and headers, into the connection's output. */
static void resp_head(struct httpd_resp *r, int status, const char *ctype, enum framing fr,
		      size_t len)
{
	struct httpd_conn *c = r->conn;
	struct exch *ex = exch_of_resp(r);
	struct httpd *s = c->srv;
	/* Answered before its body was read: the body is never read. */
	bool body_unread = c->ex == ex && c->ps != P_DONE && c->body_pending;
	if (s->shut || !c->keep_alive || fr == FR_CLOSE || body_unread)
		c->close_after = true;
	char date[40], line[256];
	date_now(date);
	int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
			 reason(status), date);
	conn_append(c, line, (size_t)n);
	if (ctype && *ctype) {
		if (text_ok(ctype) && strlen(ctype) < 200) {
			n = snprintf(line, sizeof(line), "Content-Type: %s\r\n", ctype);
			conn_append(c, line, (size_t)n);
		} else {
			log_warn("control: a handler's content type was refused (CR/LF or too "
				 "long)");
		}
	}
	if (fr == FR_LENGTH) {
		n = snprintf(line, sizeof(line), "Content-Length: %zu\r\n", len);
		conn_append(c, line, (size_t)n);
	} else if (fr == FR_CHUNKED) {
		conn_append(c, "Transfer-Encoding: chunked\r\n", 28);
	}
	if (c->close_after)
		conn_append(c, "Connection: close\r\n", 19);
	else if (ex->req.minor == 0)
		conn_append(c, "Connection: keep-alive\r\n", 24);
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
		if (!(r->defaults_set & (1u << i)))
			conn_append(c, defaults[i].line, strlen(defaults[i].line));
	conn_append(c, r->hdrs, r->hdrs_len);
	conn_append(c, "\r\n", 2);
	s->stats.requests++;
	log_debug("control: %s %s %s: %d", c->peer, str_at(&ex->req, ex->req.method),
		  str_at(&ex->req, ex->req.path), status);
}

static int resp_header(struct httpd_resp *r, const char *name, const char *value)
{
	if (r->state != R_NONE)
		return -EALREADY;
	if (!name || !value || !*name || strlen(name) > 64)
		return -EINVAL;
	for (const char *p = name; *p; p++)
		if (!is_tchar((unsigned char)*p))
			return -EINVAL;
	if (!text_ok(value))
		return -EINVAL;
	static const char *const own[] = { "Content-Length", "Transfer-Encoding", "Connection",
					   "Date", "Content-Type" };
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (strcasecmp(name, own[i]) == 0)
			return -EINVAL;
	size_t add = strlen(name) + strlen(value) + 4;
	if (r->hdrs_len + add > HEADERS_EXTRA_MAX)
		return -ENOSPC;
	char *h = realloc(r->hdrs, r->hdrs_len + add + 1);
	if (!h)
		return -ENOMEM;
	r->hdrs = h;
	snprintf(h + r->hdrs_len, add + 1, "%s: %s\r\n", name, value);
	r->hdrs_len += add;
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
		if (strcasecmp(name, defaults[i].name) == 0)
			r->defaults_set |= 1u << i;
	return 0;
}

int httpd_resp_header(struct httpd_resp *resp, const char *name, const char *value)
{
	return resp_header(resp, name, value);
}

static void reply(struct httpd_resp *r, int status, const char *ctype, const void *body, size_t len)
{
	if (r->state != R_NONE) {
		log_error("control: a response was finished twice (status %d)", status);
		return;
	}
	struct httpd_conn *c = r->conn;
	if (c && c->mode != M_DEAD) {
		if (status < 200 || status > 599)
			status = 500;
		bool no_body = r->head_only || status == 204 || status == 304;
		resp_head(r, status, ctype, status == 204 ? FR_NONE : FR_LENGTH, len);
		if (!no_body)
			conn_append(c, body, len);
		conn_notify_output(c);
	}
	resp_finish(r);
}

void httpd_reply(struct httpd_resp *resp, int status, const char *content_type, const void *body,
		 size_t len)
{
	struct httpd *s = api_enter(resp);
	reply(resp, status, content_type, body, len);
	api_leave(s);
}

static void reply_json(struct httpd_resp *r, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text) {
		reply_error(r, 500, "the server could not build its answer (out of memory?)");
		return;
	}
	reply(r, status, "application/json", text, strlen(text));
	free(text);
}

void httpd_reply_json(struct httpd_resp *resp, int status, json_t *body)
{
	struct httpd *s = api_enter(resp);
	reply_json(resp, status, body);
	api_leave(s);
}

static void reply_error_v(struct httpd_resp *r, int status, const char *fmt, va_list ap)
{
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	utf8_scrub(msg);
	json_t *j = json_pack("{s:{s:i,s:s}}", "error", "status", status, "message", msg);
	if (!j) {
		static const char fallback[] =
			"{\"error\":{\"status\":500,\"message\":\"out of memory\"}}";
		reply(r, 500, "application/json", fallback, sizeof(fallback) - 1);
		return;
	}
	reply_json(r, status, j);
}

static void reply_error(struct httpd_resp *r, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_error_v(r, status, fmt, ap);
	va_end(ap);
}

void httpd_reply_error(struct httpd_resp *resp, int status, const char *fmt, ...)
{
	struct httpd *s = api_enter(resp);
	va_list ap;
	va_start(ap, fmt);
	reply_error_v(resp, status, fmt, ap);
	va_end(ap);
	api_leave(s);
}

void httpd_resp_on_abort(struct httpd_resp *resp, void (*fn)(struct httpd_resp *, void *),
			 void *arg)
{
	resp->abort_fn = fn;
	resp->abort_arg = arg;
}

bool httpd_resp_aborted(const struct httpd_resp *resp)
{
	return resp->aborted || !resp->conn || resp->conn->mode == M_DEAD;
}

int httpd_stream_begin(struct httpd_resp *resp, int status, const char *content_type,
		       httpd_writable fn, void *arg)
{
	if (resp->state != R_NONE) {
		log_error("control: a streamed response began after its response");
		return -EALREADY;
	}
	resp->state = R_STREAM;
	resp->writable = fn;
	resp->writable_arg = arg;
	struct httpd_conn *c = resp->conn;
	if (!c || c->mode == M_DEAD) {
		resp->no_body = true;
		return -EPIPE;
	}
	struct httpd *s = api_enter(resp);
	struct exch *ex = exch_of_resp(resp);
	if (status < 200 || status > 599)
		status = 500;
	resp->no_body = resp->head_only || status == 204 || status == 304;
	enum framing fr = status == 204 ? FR_NONE : ex->req.minor == 0 ? FR_CLOSE : FR_CHUNKED;
	resp->chunked = fr == FR_CHUNKED;
	resp_head(resp, status, content_type, fr, 0);
	conn_notify_output(c);
	api_leave(s);
	return resp->no_body ? -EPIPE : 0;
}

int httpd_stream_write(struct httpd_resp *resp, const void *data, size_t len)
{
	if (resp->state != R_STREAM || resp->no_body || !resp->conn || resp->conn->mode == M_DEAD)
		return -EPIPE;
	struct httpd_conn *c = resp->conn;
	if (len == 0)
		return 0;
	if (conn_queued(c) >= c->srv->cfg.out_high) {
		resp->want_writable = true;
		return -EAGAIN;
	}
	struct httpd *s = api_enter(resp);
	if (resp->chunked) {
		char hdr[24];
		int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
		conn_append(c, hdr, (size_t)n);
	}
	conn_append(c, data, len);
	if (resp->chunked)
		conn_append(c, "\r\n", 2);
	conn_notify_output(c);
	bool full = conn_queued(c) >= s->cfg.out_high;
	if (full)
		resp->want_writable = true;
	api_leave(s);
	if (c->mode == M_DEAD)
		return -EPIPE;
	return full ? HTTPD_FULL : 0;
}

void httpd_stream_end(struct httpd_resp *resp)
{
	if (resp->state != R_STREAM) {
		log_error("control: httpd_stream_end without httpd_stream_begin");
		return;
	}
	struct httpd *s = api_enter(resp);
	struct httpd_conn *c = resp->conn;
	if (c && c->mode != M_DEAD && !resp->no_body && resp->chunked) {
		conn_append(c, "0\r\n\r\n", 5);
		conn_notify_output(c);
	}
	resp_finish(resp);
	api_leave(s);
}

size_t httpd_resp_queued(const struct httpd_resp *resp)
{
	return resp->conn ? conn_queued(resp->conn) : 0;
}

/* ---- Parsing --------------------------------------------------------------- */

static struct httpd_conn *conn_of(llhttp_t *p)
{
	return p->data;
}

/* Answers the current request with an error and closes after it. */
static void conn_fail(struct httpd_conn *c, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void conn_fail(struct httpd_conn *c, int status, const char *fmt, ...)
{
	c->close_after = true;
	c->in_len = 0;
	if (!c->ex) {
		c->ex = exch_new(c);
		if (!c->ex) {
			conn_abort(c);
			return;
		}
	}
	struct exch *ex = c->ex;
	ex->dispatched = true;
	if (ex->resp.state == R_NONE) {
		va_list ap;
		va_start(ap, fmt);
		reply_error_v(&ex->resp, status, fmt, ap);
		va_end(ap);
	}
}

static int on_message_begin(llhttp_t *p)
{
	struct httpd_conn *c = conn_of(p);
	if (!c->ex && !(c->ex = exch_new(c)))
		return -1;
	c->ps = P_HEAD;
	c->phase_start = now_ms(c->srv);
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct httpd_req *r = &conn_of(p)->ex->req;
	if (r->target.len == 0)
		r->target.off = (uint32_t)r->arena_len;
	r->target.len += (uint32_t)len;
	return arena_add(r, at, len) ? 0 : -1;
}

static int on_url_complete(llhttp_t *p)
{
	struct httpd_req *r = &conn_of(p)->ex->req;
	if (r->target.len == 0)
		r->target.off = (uint32_t)r->arena_len;
	return arena_add(r, "", 1) ? 0 : -1;
}

static bool close_value(struct httpd_req *r)
{
	if (!r->in_value)
		return true;
	r->in_value = false;
	struct kv *h = &r->hdr[r->nhdr - 1];
	/* Trimmed at both ends. */
	char *v = r->arena + h->value.off;
	size_t n = h->value.len;
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	size_t lead = 0;
	while (lead < n && (v[lead] == ' ' || v[lead] == '\t'))
		lead++;
	h->value.off += (uint32_t)lead;
	h->value.len = (uint32_t)(n - lead);
	if (!arena_add(r, "", 1))
		return false;
	r->arena[h->value.off + h->value.len] = '\0';
	return true;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct httpd_req *r = &conn_of(p)->ex->req;
	if (r->hdr_over)
		return 0;
	if (r->in_value || r->nhdr == 0 || r->hdr[r->nhdr - 1].value.off) {
		if (!close_value(r))
			return -1;
		if (r->nhdr == HTTPD_MAX_HEADERS) {
			r->hdr_over = true;
			return 0;
		}
		struct kv *h = &r->hdr[r->nhdr++];
		h->name = (struct span){ (uint32_t)r->arena_len, 0 };
		h->value = (struct span){ 0, 0 };
	}
	r->hdr[r->nhdr - 1].name.len += (uint32_t)len;
	return arena_add(r, at, len) ? 0 : -1;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct httpd_req *r = &conn_of(p)->ex->req;
	if (r->hdr_over)
		return 0;
	if (!arena_add(r, "", 1))
		return -1;
	/* The value starts here, even when it is empty. */
	r->hdr[r->nhdr - 1].value = (struct span){ (uint32_t)r->arena_len, 0 };
	r->in_value = true;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct httpd_req *r = &conn_of(p)->ex->req;
	if (r->hdr_over)
		return 0;
	r->hdr[r->nhdr - 1].value.len += (uint32_t)len;
	return arena_add(r, at, len) ? 0 : -1;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct httpd_req *r = &conn_of(p)->ex->req;
	if (r->hdr_over)
		return 0;
	return close_value(r) ? 0 : -1;
}

/* What makes a request unanswerable before routing: 0 or a status. */
static int head_checks(struct httpd_conn *c, struct httpd_req *r, const char **why)
{
	if (r->major != 1) {
		*why = "only HTTP/1.0 and HTTP/1.1 are spoken here";
		return 505;
	}
	size_t hosts = httpd_req_header_count(r, "Host");
	if (hosts > 1 || (hosts == 0 && r->minor >= 1)) {
		*why = "an HTTP/1.1 request needs exactly one Host header";
		return 400;
	}
	const char *target = str_at(r, r->target);
	if (target[0] != '/') {
		*why = "the request target must be a path starting with '/'";
		return 400;
	}
	size_t tlen = r->target.len;
	const char *q = memchr(target, '?', tlen);
	size_t plen = q ? (size_t)(q - target) : tlen;
	size_t toff = r->target.off;
	if (!arena_reserve(r, tlen + 1)) {
		*why = "out of memory";
		return 500;
	}
	arena_str(r, &r->path, r->arena + toff, plen);
	if (has_dot_segment(str_at(r, r->path))) {
		*why = "the path has a '.' or '..' segment";
		return 400;
	}
	if (q && parse_query(r, toff + plen + 1, tlen - plen - 1) < 0) {
		*why = "the query string has a bad %-escape (or %00)";
		return 400;
	}
	const char *up = httpd_req_header(r, "Upgrade");
	r->websocket = up && header_has_token(up, "websocket");
	(void)c;
	return 0;
}

/* Routing once the head is read; the body (if any) comes next. Refusals
 * are answered here, before reading a body nobody wants. */
static int on_headers_complete(llhttp_t *p)
{
	struct httpd_conn *c = conn_of(p);
	struct httpd *s = c->srv;
	struct exch *ex = c->ex;
	struct httpd_req *r = &ex->req;
	struct httpd_resp *resp = &ex->resp;
	if (!close_value(r))
		return -1;
	c->ps = P_BODY;
	c->phase_start = now_ms(s);
	r->major = p->http_major;
	r->minor = p->http_minor;
	c->keep_alive = llhttp_should_keep_alive(p);
	const char *mname = llhttp_method_name((llhttp_method_t)p->method);
	r->head = p->method == HTTP_HEAD;
	resp->head_only = r->head;
	bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
	c->body_pending = has_body;
	if (!arena_str(r, &r->method, mname, strlen(mname)))
		return -1;
	bool upgrade_ok = false;
	const char *why = NULL;
	char allow[256];
	int status = 0;
	if (r->hdr_over) {
		status = 431;
		why = "the request has more header fields than the server takes";
	} else {
		status = head_checks(c, r, &why);
	}
	if (status) {
		reply_error(resp, status, "%s", why);
		goto refused;
	}
	if (s->gate) {
		resp->depth++;
		bool pass = s->gate(r, resp, s->gate_arg);
		resp->depth--;
		if (!pass) {
			if (resp->state == R_NONE)
				reply_error(resp, 403, "refused");
			goto refused;
		}
		if (resp->state != R_NONE) {
			log_error("control: the gate answered a request and let it through");
			goto refused;
		}
	}
	status = route_find(s, ex, allow, sizeof(allow));
	if (status == 405) {
		resp_header(resp, "Allow", allow);
		reply_error(resp, 405, "%s is not allowed on %s; allowed: %s", str_at(r, r->method),
			    str_at(r, r->path), allow);
		goto refused;
	} else if (status == 404) {
		reply_error(resp, 404, "nothing at %s", str_at(r, r->path));
		goto refused;
	} else if (status) {
		reply_error(resp, status, "%s",
			    status == 400 ? "a path parameter has a bad %-escape (or %00)"
					  : "out of memory");
		goto refused;
	}
	if (ex->route->ws) {
		status = ws_check_handshake(r, &why);
		if (status == 0 && has_body) {
			status = 400;
			why = "a WebSocket handshake has no body";
		}
		if (status) {
			if (status == 426) {
				resp_header(resp, "Upgrade", "websocket");
				resp_header(resp, "Sec-WebSocket-Version", "13");
			}
			reply_error(resp, status, "%s", why);
			goto refused;
		}
		upgrade_ok = true;
	}
	if (!upgrade_ok)
		p->upgrade = 0;
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > s->cfg.max_body) {
		reply_error(resp, 413, "the body is over %zu bytes", s->cfg.max_body);
		goto refused;
	}
	const char *expect = httpd_req_header(r, "Expect");
	if (expect) {
		if (strcasecmp(expect, "100-continue") != 0) {
			reply_error(resp, 417, "only \"Expect: 100-continue\" is understood");
			goto refused;
		}
		if (has_body && r->minor >= 1) {
			conn_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
			conn_notify_output(c);
		}
	}
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0) {
		r->body = malloc((size_t)p->content_length + 1);
		if (!r->body)
			return -1;
		r->body_cap = (size_t)p->content_length + 1;
	}
	return 0;
refused:
	p->upgrade = 0;
	return has_body ? -1 : 0; /* its body is not read */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct httpd_conn *c = conn_of(p);
	struct httpd_req *r = &c->ex->req;
	size_t max = c->srv->cfg.max_body;
	if (r->body_len + len > max) {
		c->close_after = true;
		reply_error(&c->ex->resp, 413, "the body is over %zu bytes", max);
		return -1;
	}
	if (r->body_len + len + 1 > r->body_cap) {
		size_t cap = r->body_cap ? r->body_cap : 4096;
		while (cap < r->body_len + len + 1)
			cap *= 2;
		if (cap > max + 1)
			cap = max + 1;
		uint8_t *b = realloc(r->body, cap);
		if (!b)
			return -1;
		r->body = b;
		r->body_cap = cap;
	}
	memcpy(r->body + r->body_len, at, len);
	r->body_len += len;
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct httpd_conn *c = conn_of(p);
	struct httpd_req *r = &c->ex->req;
	if (r->body)
		r->body[r->body_len] = '\0';
	c->ps = P_DONE;
	c->body_pending = false;
	return HPE_PAUSED; /* one request at a time */
}

static const llhttp_settings_t parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_url_complete = on_url_complete,
	.on_header_field = on_header_field,
	.on_header_field_complete = on_header_field_complete,
	.on_header_value = on_header_value,
	.on_header_value_complete = on_header_value_complete,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

static void conn_consume(struct httpd_conn *c, size_t used)
{
	if (used >= c->in_len) {
		c->in_len = 0;
		return;
	}
	memmove(c->in, c->in + used, c->in_len - used);
	c->in_len -= used;
}

/* Parses buffered bytes until a request is complete, the head bound is
 * reached or the bytes run out. Returns true when something changed. */
static bool conn_parse(struct httpd_conn *c)
{
	struct httpd *s = c->srv;
	size_t budget = c->in_len;
	bool in_head = c->ps == P_IDLE || c->ps == P_HEAD;
	if (in_head) {
		size_t room = s->cfg.max_head > c->head_bytes ? s->cfg.max_head - c->head_bytes : 0;
		if (room == 0) {
			conn_fail(c, 431, "the request line and headers are over %zu bytes",
				  s->cfg.max_head);
			return true;
		}
		if (budget > room)
			budget = room;
	}
	enum parse_state before = c->ps;
	llhttp_errno_t e = llhttp_execute(&c->parser, (const char *)c->in, budget);
	size_t used = budget;
	if (e == HPE_PAUSED) {
		used = (size_t)((const uint8_t *)llhttp_get_error_pos(&c->parser) - c->in);
		llhttp_resume(&c->parser);
	} else if (e == HPE_PAUSED_UPGRADE) {
		used = (size_t)((const uint8_t *)llhttp_get_error_pos(&c->parser) - c->in);
	} else if (e != HPE_OK) {
		if (c->mode == M_DEAD)
			return true;
		if (c->ex && c->ex->resp.state != R_NONE) {
			/* Refused with its body unread: the answer is out. */
			c->close_after = true;
			c->ex->dispatched = true;
			c->in_len = 0;
			return true;
		}
		conn_fail(c, e == HPE_CB_HEADERS_COMPLETE || e == HPE_USER ? 500 : 400,
			  "the request is not valid HTTP/1.1 (%s)",
			  llhttp_get_error_reason(&c->parser));
		return true;
	}
	conn_consume(c, used);
	if (in_head && (c->ps == P_IDLE || c->ps == P_HEAD))
		c->head_bytes += used;
	return used > 0 || c->ps != before;
}

/* ---- Connections ------------------------------------------------------------ */

static void timer_cb(uv_timer_t *t);

static void timer_arm(struct httpd *s, uint64_t due)
{
	if (s->shut || due >= s->timer_due)
		return;
	uint64_t now = now_ms(s);
	s->timer_due = due;
	uv_timer_start(&s->timer, timer_cb, due > now ? due - now : 0, 0);
}

static uint64_t min_deadline(uint64_t a, uint64_t b)
{
	return !a ? b : !b ? a : a < b ? a : b;
}

static void conn_update_deadline(struct httpd_conn *c)
{
	struct httpd *s = c->srv;
	const struct httpd_config *cfg = &s->cfg;
	uint64_t d = 0;
	bool stalled = conn_queued(c) > 0;
	switch (c->mode) {
	case M_HTTP:
		if (c->ps == P_HEAD)
			d = c->phase_start + cfg->head_ms;
		else if (c->ps == P_BODY)
			d = c->phase_start + cfg->body_ms;
		else if (!c->ex && !stalled)
			d = c->phase_start + cfg->idle_ms;
		break;
	case M_WS:
		d = ws_deadline(c);
		break;
	case M_FINISH:
		stalled = true;
		break;
	case M_LINGER:
		d = c->phase_start + cfg->linger_ms;
		break;
	case M_DEAD:
		c->deadline = 0;
		return;
	}
	if (stalled)
		d = min_deadline(d, c->last_progress + cfg->idle_ms);
	c->deadline = d;
	if (d)
		timer_arm(s, d);
}

static void conn_update_reading(struct httpd_conn *c)
{
	bool want;
	switch (c->mode) {
	case M_HTTP:
		want = !c->eof && c->in_len < c->srv->cfg.max_head;
		break;
	case M_WS:
		want = !c->eof && c->in_len < HTTPD_WS_IN_CAP;
		break;
	case M_FINISH:
	case M_LINGER:
		want = !c->eof;
		break;
	default:
		return;
	}
	if (want != c->reading) {
		c->reading = want;
		c->t->reading(c->ctx, want);
	}
}

void conn_abort(struct httpd_conn *c)
{
	if (c->mode == M_DEAD)
		return;
	c->mode = M_DEAD;
	c->deadline = 0;
	c->t->close(c->ctx);
}

/* No more requests: what is queued is written, then FIN, then a short
 * linger reading (and dropping) what the client still sends, so that our
 * last answer is not lost to a reset. */
void conn_begin_finish(struct httpd_conn *c)
{
	if (c->mode == M_DEAD || c->mode == M_FINISH || c->mode == M_LINGER)
		return;
	struct exch *ex = c->ex;
	if (ex) {
		c->ex = NULL;
		if (ex->dispatched && ex->resp.state != R_DONE) {
			ex->resp.conn = NULL; /* cannot happen today; never freed twice */
			ex->resp.aborted = true;
		} else {
			exch_free(ex);
		}
	}
	c->mode = M_FINISH;
	c->in_len = 0;
	c->close_after = true;
}

static void dispatch(struct httpd_conn *c, struct exch *ex)
{
	ex->dispatched = true;
	if (ex->resp.state != R_NONE)
		return; /* answered already, before its body */
	const struct route *rt = ex->route;
	if (!rt) {
		reply_error(&ex->resp, 500, "no route");
		return;
	}
	if (rt->ws) {
		ws_upgrade(c, ex);
		return;
	}
	rt->fn(&ex->req, &ex->resp, rt->arg);
}

/* One step of work; false when the connection must wait. */
static bool conn_step(struct httpd_conn *c)
{
	struct httpd *s = c->srv;
	struct exch *ex = c->ex;
	if (c->ws && ws_run(c))
		return true;
	if (c->mode == M_HTTP && ex) {
		struct httpd_resp *r = &ex->resp;
		if (r->state == R_DONE && (c->ps == P_DONE || c->close_after)) {
			c->ex = NULL;
			exch_free(ex);
			c->ps = P_IDLE;
			c->head_bytes = 0;
			c->phase_start = now_ms(s);
			if (c->close_after)
				conn_begin_finish(c);
			return true;
		}
		if (r->state == R_STREAM && r->want_writable &&
		    conn_queued(c) <= s->cfg.out_high / 2) {
			r->want_writable = false;
			if (r->writable)
				r->writable(r, r->writable_arg);
			return true;
		}
		if (c->ps == P_DONE && !ex->dispatched) {
			dispatch(c, ex);
			return true;
		}
	}
	if (c->mode == M_HTTP && c->in_len > 0 && c->ps != P_DONE &&
	    conn_queued(c) < s->cfg.out_high)
		return conn_parse(c);
	if (c->mode == M_HTTP && c->eof && c->in_len == 0) {
		if (ex && ex->dispatched && ex->resp.state != R_DONE) {
			c->close_after = true; /* answered, then closed */
			return false;
		}
		conn_begin_finish(c);
		return true;
	}
	if (c->mode == M_FINISH && conn_queued(c) == 0) {
		if (c->eof) {
			conn_abort(c);
			return false;
		}
		c->mode = M_LINGER;
		c->phase_start = now_ms(s);
		c->t->shutdown(c->ctx);
		return true;
	}
	return false;
}

static void conn_run(struct httpd_conn *c)
{
	if (c->running || c->mode == M_DEAD)
		return;
	c->running = true;
	c->kick = false;
	long guard = 0;
	do {
		c->rerun = false;
		while (c->mode != M_DEAD && conn_step(c)) {
			if (++guard > RUN_GUARD) {
				log_error("control: %s: a connection made no progress; closed",
					  c->peer);
				conn_abort(c);
			}
		}
	} while (c->rerun && c->mode != M_DEAD);
	c->running = false;
	if (c->mode != M_DEAD) {
		conn_update_reading(c);
		conn_update_deadline(c);
	}
}

/* From the transport: run now, unless inside a call of a handler's. */
static void conn_poke(struct httpd_conn *c)
{
	if (c->running) {
		c->rerun = true; /* the loop in conn_run sees it */
		return;
	}
	if (c->srv->in_api) {
		conn_changed(c);
		return;
	}
	conn_run(c);
}

static void kick_cb(uv_timer_t *t)
{
	struct httpd *s = t->data;
	s->kick_armed = false;
	for (struct httpd_conn *c = s->first, *next; c; c = next) {
		next = c->next;
		if (c->kick)
			conn_run(c);
	}
}

static void timer_cb(uv_timer_t *t)
{
	struct httpd *s = t->data;
	s->timer_due = UINT64_MAX;
	uint64_t now = now_ms(s), next = 0;
	for (struct httpd_conn *c = s->first; c; c = c->next) {
		if (c->mode == M_DEAD || !c->deadline)
			continue;
		if (c->deadline > now) {
			next = min_deadline(next, c->deadline);
			continue;
		}
		s->stats.conns_timed_out++;
		c->deadline = 0;
		if (c->mode == M_HTTP && (c->ps == P_HEAD || c->ps == P_BODY) &&
		    conn_queued(c) == 0) {
			log_debug("control: %s: request too slow", c->peer);
			conn_fail(c, 408, "the request took too long to arrive");
			conn_run(c);
		} else if (c->mode == M_WS && conn_queued(c) == 0) {
			ws_expire(c);
		} else {
			conn_abort(c);
		}
		if (c->mode != M_DEAD && c->deadline)
			next = min_deadline(next, c->deadline);
	}
	if (next)
		timer_arm(s, next);
}

struct httpd_conn *httpd_conn_new(struct httpd *s, const struct httpd_transport *t, void *ctx,
				  const char *peer)
{
	if (s->shut || s->stats.conns_active >= s->cfg.max_conns) {
		s->stats.conns_refused++;
		errno = EMFILE;
		return NULL;
	}
	struct httpd_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		s->stats.conns_refused++;
		errno = ENOMEM;
		return NULL;
	}
	c->srv = s;
	c->t = t;
	c->ctx = ctx;
	snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "?");
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
	c->mode = M_HTTP;
	c->ps = P_IDLE;
	c->reading = true;
	c->phase_start = now_ms(s);
	c->next = s->first;
	if (s->first)
		s->first->prev = c;
	s->first = c;
	s->stats.conns_accepted++;
	s->stats.conns_active++;
	conn_update_deadline(c);
	return c;
}

void httpd_conn_feed(struct httpd_conn *c, const uint8_t *data, size_t len)
{
	if (c->mode == M_DEAD || c->eof || len == 0)
		return;
	if (c->mode == M_FINISH || c->mode == M_LINGER)
		return; /* nothing more is read */
	size_t soft = c->mode == M_WS ? HTTPD_WS_IN_CAP : c->srv->cfg.max_head;
	if (c->in_len + len > soft + IN_SLACK) {
		log_debug("control: %s: sent on while held back; closed", c->peer);
		conn_abort(c);
		return;
	}
	if (c->in_len + len > c->in_cap) {
		size_t cap = c->in_cap ? c->in_cap : 4096;
		while (cap < c->in_len + len)
			cap *= 2;
		uint8_t *n = realloc(c->in, cap);
		if (!n) {
			conn_abort(c);
			return;
		}
		c->in = n;
		c->in_cap = cap;
	}
	memcpy(c->in + c->in_len, data, len);
	c->in_len += len;
	conn_poke(c);
}

void httpd_conn_eof(struct httpd_conn *c)
{
	if (c->mode == M_DEAD || c->eof)
		return;
	c->eof = true;
	c->reading = false;
	if (c->mode == M_LINGER) {
		conn_abort(c);
		return;
	}
	conn_poke(c);
}

void httpd_conn_sent(struct httpd_conn *c, uint8_t *buf, size_t len)
{
	free(buf);
	c->inflight = len < c->inflight ? c->inflight - len : 0;
	if (c->mode == M_DEAD)
		return;
	c->last_progress = now_ms(c->srv);
	conn_poke(c);
}

static void srv_maybe_release(struct httpd *s)
{
	if (!s->shut || s->handles > 0 || s->first)
		return;
	for (size_t i = 0; i < s->nroutes; i++) {
		free(s->routes[i].method);
		free(s->routes[i].pattern);
	}
	free(s->routes);
	free(s);
}

void httpd_conn_free(struct httpd_conn *c)
{
	if (!c)
		return;
	struct httpd *s = c->srv;
	c->mode = M_DEAD;
	if (c->ws)
		ws_conn_gone(c);
	struct exch *ex = c->ex;
	c->ex = NULL;
	if (ex) {
		struct httpd_resp *r = &ex->resp;
		if (ex->dispatched && r->state != R_DONE) {
			/* The handler still holds it: detached, told, freed when
			 * it finishes. */
			r->conn = NULL;
			r->aborted = true;
			r->depth++;
			if (r->abort_fn)
				r->abort_fn(r, r->abort_arg);
			if (r->state == R_STREAM && r->want_writable && r->writable) {
				r->want_writable = false;
				r->writable(r, r->writable_arg);
			}
			r->depth--;
			if (r->state == R_DONE)
				exch_free(ex);
		} else {
			exch_free(ex);
		}
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		s->first = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->stats.conns_active--;
	free(c->in);
	free(c->out);
	free(c);
	srv_maybe_release(s);
}

/* ---- The libuv transport ------------------------------------------------------ */

struct sock {
	uv_tcp_t tcp;
	struct httpd *srv;
	struct httpd_conn *conn;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	uint8_t *wbuf;
	size_t wlen;
	bool writing, reading, closing;
};

static void sock_closed(uv_handle_t *h)
{
	struct sock *k = h->data;
	if (k->conn)
		httpd_conn_free(k->conn);
	free(k);
}

static void sock_close(struct sock *k)
{
	if (k->closing)
		return;
	k->closing = true;
	uv_close((uv_handle_t *)&k->tcp, sock_closed);
}

static void sock_write(struct sock *k);

static void sock_written(uv_write_t *req, int status)
{
	struct sock *k = req->data;
	k->writing = false;
	if (status < 0 || k->closing) {
		free(k->wbuf);
		k->wbuf = NULL;
		sock_close(k);
		return;
	}
	uint8_t *buf = k->wbuf;
	k->wbuf = NULL;
	httpd_conn_sent(k->conn, buf, k->wlen);
	sock_write(k);
}

static void sock_write(struct sock *k)
{
	if (k->writing || k->closing)
		return;
	uint8_t *buf;
	size_t n = httpd_conn_take(k->conn, &buf);
	if (!n)
		return;
	k->wbuf = buf;
	k->wlen = n;
	k->writing = true;
	k->wreq.data = k;
	uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
	int rc = uv_write(&k->wreq, (uv_stream_t *)&k->tcp, &b, 1, sock_written);
	if (rc < 0) {
		k->writing = false;
		free(buf);
		k->wbuf = NULL;
		sock_close(k);
	}
}

static void sock_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct sock *k = h->data;
	(void)hint;
	*buf = uv_buf_init((char *)k->srv->rbuf, sizeof(k->srv->rbuf));
}

static void sock_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct sock *k = st->data;
	if (k->closing)
		return;
	if (n > 0) {
		httpd_conn_feed(k->conn, (const uint8_t *)buf->base, (size_t)n);
	} else if (n == UV_EOF) {
		uv_read_stop(st);
		k->reading = false;
		httpd_conn_eof(k->conn);
	} else if (n < 0) {
		sock_close(k);
	}
}

static void t_output(void *ctx)
{
	sock_write(ctx);
}

static void t_reading(void *ctx, bool on)
{
	struct sock *k = ctx;
	if (k->closing || on == k->reading)
		return;
	if (on) {
		if (uv_read_start((uv_stream_t *)&k->tcp, sock_alloc, sock_read) == 0)
			k->reading = true;
	} else {
		uv_read_stop((uv_stream_t *)&k->tcp);
		k->reading = false;
	}
}

static void sock_shut(uv_shutdown_t *req, int status)
{
	struct sock *k = req->data;
	if (status < 0 && status != UV_ECANCELED)
		sock_close(k);
}

static void t_shutdown(void *ctx)
{
	struct sock *k = ctx;
	if (k->closing)
		return;
	k->sreq.data = k;
	if (uv_shutdown(&k->sreq, (uv_stream_t *)&k->tcp, sock_shut) < 0)
		sock_close(k);
}

static void t_close(void *ctx)
{
	sock_close(ctx);
}

static const struct httpd_transport sock_transport = {
	.output = t_output,
	.reading = t_reading,
	.shutdown = t_shutdown,
	.close = t_close,
};

static void refused_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct httpd *s = server->data;
	if (status < 0) {
		log_warn("control: accept: %s", uv_strerror(status));
		return;
	}
	struct sock *k = calloc(1, sizeof(*k));
	if (!k) {
		log_warn("control: accept: out of memory");
		return;
	}
	k->srv = s;
	uv_tcp_init(s->loop, &k->tcp);
	k->tcp.data = k;
	if (uv_accept(server, (uv_stream_t *)&k->tcp) != 0) {
		uv_close((uv_handle_t *)&k->tcp, refused_closed);
		return;
	}
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	char peer[HTTPD_PEER_MAX] = "?", ip[INET6_ADDRSTRLEN] = "?";
	if (uv_tcp_getpeername(&k->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
		if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
			snprintf(peer, sizeof(peer), "%s:%u", ip, ntohs(a->sin_port));
		} else if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
			snprintf(peer, sizeof(peer), "[%s]:%u", ip, ntohs(a->sin6_port));
		}
	}
	k->conn = httpd_conn_new(s, &sock_transport, k, peer);
	if (!k->conn) {
		log_debug("control: %s refused: %u connections open", peer, s->stats.conns_active);
		uv_close((uv_handle_t *)&k->tcp, refused_closed);
		return;
	}
	uv_tcp_nodelay(&k->tcp, 1);
	if (uv_read_start((uv_stream_t *)&k->tcp, sock_alloc, sock_read) == 0)
		k->reading = true;
}

/* ---- The server --------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
	struct httpd *s = h->data;
	s->handles--;
	srv_maybe_release(s);
}

struct httpd *httpd_new(uv_loop_t *loop, const struct httpd_config *cfg)
{
	if (!loop) {
		errno = EINVAL;
		return NULL;
	}
	struct httpd_config c = cfg ? *cfg : (struct httpd_config){ 0 };
	const char *host = c.host ? c.host : HTTPD_DEFAULT_HOST;
	struct in6_addr a6;
	struct in_addr a4;
	if (strlen(host) >= 64 ||
	    (inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1)) {
		errno = EINVAL;
		return NULL;
	}
	if (!c.max_head)
		c.max_head = HTTPD_MAX_HEAD;
	if (!c.max_body)
		c.max_body = HTTPD_MAX_BODY;
	if (!c.max_conns)
		c.max_conns = HTTPD_MAX_CONNS;
	if (!c.idle_ms)
		c.idle_ms = HTTPD_IDLE_MS;
	if (!c.head_ms)
		c.head_ms = HTTPD_HEAD_MS;
	if (!c.body_ms)
		c.body_ms = HTTPD_BODY_MS;
	if (!c.out_high)
		c.out_high = HTTPD_OUT_HIGH;
	if (!c.ws_max_message)
		c.ws_max_message = HTTPD_WS_MAX_MESSAGE;
	if (!c.ws_queue_max)
		c.ws_queue_max = HTTPD_WS_QUEUE_MAX;
	if (!c.ws_close_ms)
		c.ws_close_ms = HTTPD_WS_CLOSE_MS;
	if (!c.linger_ms)
		c.linger_ms = HTTPD_LINGER_MS;
	if (c.max_head < 256 || c.max_head > 1024 * 1024 || c.max_body > (size_t)1 << 30 ||
	    c.ws_max_message > (size_t)1 << 30) {
		errno = EINVAL;
		return NULL;
	}
	struct httpd *s = calloc(1, sizeof(*s));
	if (!s) {
		errno = ENOMEM;
		return NULL;
	}
	s->loop = loop;
	s->cfg = c;
	snprintf(s->host, sizeof(s->host), "%s", host);
	s->cfg.host = s->host;
	s->port = c.port;
	s->timer_due = UINT64_MAX;
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	uv_timer_init(loop, &s->kick);
	s->kick.data = s;
	s->handles = 2;
	return s;
}

static bool addr_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_LOOPBACK(a))
		return true;
	return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
}

int httpd_listen(struct httpd *s)
{
	if (s->listener_used || s->shut)
		return -EALREADY;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(s->host, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(s->port);
		inet_pton(AF_INET6, s->host, &a->sin6_addr);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(s->port);
		inet_pton(AF_INET, s->host, &a->sin_addr);
	}
	if (!addr_loopback((struct sockaddr *)&ss) && !s->gate) {
		log_error("control: refusing to listen on %s without authentication", s->host);
		return -EPERM;
	}
	int rc = uv_tcp_init(s->loop, &s->listener);
	if (rc < 0)
		return rc;
	s->listener.data = s;
	s->listener_used = true;
	s->handles++;
	rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
	if (rc == 0) {
		int len = sizeof(ss);
		rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
	}
	if (rc < 0) {
		uv_close((uv_handle_t *)&s->listener, handle_closed);
		return rc;
	}
	s->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						: ((struct sockaddr_in6 *)&ss)->sin6_port);
	s->listening = true;
	return 0;
}

uint16_t httpd_port(const struct httpd *s)
{
	return s->port;
}

const char *httpd_host(const struct httpd *s)
{
	return s->host;
}

void httpd_get_stats(const struct httpd *s, struct httpd_stats *out)
{
	*out = s->stats;
}

void httpd_free(struct httpd *s)
{
	if (!s || s->shut)
		return;
	s->shut = true;
	if (s->listening)
		uv_close((uv_handle_t *)&s->listener, handle_closed);
	uv_close((uv_handle_t *)&s->timer, handle_closed);
	uv_close((uv_handle_t *)&s->kick, handle_closed);
	for (struct httpd_conn *c = s->first; c; c = c->next) {
		if (c->ws && !c->ws->notified && !c->ws->notify_pending) {
			c->ws->notify_pending = true;
			c->ws->close_code = 1001;
		}
		conn_abort(c);
	}
	srv_maybe_release(s);
}
