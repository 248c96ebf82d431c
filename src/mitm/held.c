/* The registry of held messages (held.h). Items live in a list, oldest
 * first; the registry is small (HELD_DEFAULT_MAX), so lookups walk it. */
#include "mitm/held.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "flows/flowlog.h"

struct held_item {
	uint64_t id;
	uint64_t deadline; /* monotonic ms */
	enum held_phase phase;
	json_t *info;
	struct held_item_ops ops;
	void *ctx;
	struct held_item *next;
};

struct held {
	struct held_config cfg;
	struct held_item *items, *tail;
	size_t n;
	uint64_t next_id;
};

/* ---- edits ------------------------------------------------------------------ */

static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool token_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_tchar((unsigned char)s[i]))
			return false;
	return true;
}

/* A field value: no CR, LF or NUL (they would split the message). */
static bool value_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return false;
	return true;
}

/* A request target: visible ASCII, no spaces. */
static bool target_ok(const char *s, size_t n)
{
	if (n == 0 || n > HELD_MAX_EDIT_TARGET)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return false;
	return s[0] == '/' || (n == 1 && s[0] == '*') || strncasecmp(s, "http://", 7) == 0 ||
	       strncasecmp(s, "https://", 8) == 0;
}

static int efail(char *why, size_t n, const char *fmt, const char *field)
{
	snprintf(why, n, fmt, field);
	return -1;
}

static int add_header(struct http_headers *h, const char *field, const char *name, size_t nl,
		      const json_t *value, char *why, size_t whylen)
{
	if (!json_is_string(value))
		return efail(why, whylen, "%s: a header value is a string", field);
	const char *v = json_string_value(value);
	size_t vl = json_string_length(value);
	if (!token_ok(name, nl))
		return efail(why, whylen, "%s: a header name is a token (letters, digits, -)",
			     field);
	if (!value_ok(v, vl))
		return efail(why, whylen, "%s: a header value has no CR, LF or NUL", field);
	if (h->n >= HELD_MAX_EDIT_HEADERS)
		return efail(why, whylen, "%s: too many headers", field);
	int rc = http_headers_add(h, name, nl, v, vl);
	if (rc == -E2BIG)
		return efail(why, whylen, "%s: the headers are too large", field);
	if (rc < 0)
		return efail(why, whylen, "%s: out of memory", field);
	return 0;
}

static int parse_body(const json_t *j, struct held_edits *e, char *why, size_t whylen)
{
	const json_t *b = json_object_get(j, "body"), *b64 = json_object_get(j, "body_base64");
	if (b && b64)
		return efail(why, whylen, "%s: give body or body_base64, not both", "body");
	if (b) {
		if (!json_is_string(b))
			return efail(why, whylen, "%s: expected a string", "body");
		size_t n = json_string_length(b);
		if (n > HELD_MAX_EDIT_BODY)
			return efail(why, whylen, "%s: larger than the bound", "body");
		e->body = malloc(n ? n : 1);
		if (!e->body)
			return efail(why, whylen, "%s: out of memory", "body");
		memcpy(e->body, json_string_value(b), n);
		e->body_len = n;
		e->has_body = true;
	} else if (b64) {
		if (!json_is_string(b64))
			return efail(why, whylen, "%s: expected a string", "body_base64");
		size_t n = json_string_length(b64);
		if (n / 4 * 3 > HELD_MAX_EDIT_BODY + 3)
			return efail(why, whylen, "%s: larger than the bound", "body_base64");
		size_t cap = n / 4 * 3 + 3;
		e->body = malloc(cap);
		size_t len = 0;
		if (!e->body)
			return efail(why, whylen, "%s: out of memory", "body_base64");
		if (sodium_base642bin(e->body, cap, json_string_value(b64), n, "\r\n ", &len, NULL,
				      sodium_base64_VARIANT_ORIGINAL) != 0)
			return efail(why, whylen, "%s: not base64", "body_base64");
		e->body_len = len;
		e->has_body = true;
	}
	return 0;
}

int held_edits_parse(const json_t *j, enum held_phase phase, struct held_edits *e, char *why,
		     size_t whylen)
{
	memset(e, 0, sizeof(*e));
	if (!j || json_is_null(j))
		return 0;
	if (!json_is_object(j))
		return efail(why, whylen, "%s: expected a JSON object of edits", "edits");
	static const char *const known[] = { "method",  "path",        "status",
					     "headers", "set_headers", "remove_headers",
					     "body",    "body_base64" };
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)j, k, v)
	{
		bool ok = false;
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			ok |= strcmp(k, known[i]) == 0;
		if (!ok) {
			snprintf(why, whylen,
				 "%.64s: unknown field (edits have method, path, status, headers, "
				 "set_headers, remove_headers, body, body_base64)",
				 k);
			goto fail;
		}
	}
	const json_t *m = json_object_get(j, "method");
	if (m) {
		if (phase != HELD_REQUEST) {
			efail(why, whylen, "%s: a response has no method", "method");
			goto fail;
		}
		if (!json_is_string(m) || json_string_length(m) >= sizeof(e->method) ||
		    !token_ok(json_string_value(m), json_string_length(m))) {
			efail(why, whylen, "%s: expected a method such as GET or POST", "method");
			goto fail;
		}
		memcpy(e->method, json_string_value(m), json_string_length(m) + 1);
	}
	const json_t *p = json_object_get(j, "path");
	if (p) {
		if (phase != HELD_REQUEST) {
			efail(why, whylen, "%s: a response has no path", "path");
			goto fail;
		}
		if (!json_is_string(p) || !target_ok(json_string_value(p), json_string_length(p))) {
			efail(why, whylen,
			      "%s: expected a path such as /a?b=1 (no spaces or control "
			      "characters)",
			      "path");
			goto fail;
		}
		e->path = strdup(json_string_value(p));
		if (!e->path) {
			efail(why, whylen, "%s: out of memory", "path");
			goto fail;
		}
	}
	const json_t *s = json_object_get(j, "status");
	if (s) {
		if (phase != HELD_RESPONSE) {
			efail(why, whylen, "%s: a request has no status", "status");
			goto fail;
		}
		if (!json_is_integer(s) || json_integer_value(s) < 100 ||
		    json_integer_value(s) > 599) {
			efail(why, whylen, "%s: expected a status from 100 to 599", "status");
			goto fail;
		}
		e->status = (int)json_integer_value(s);
	}
	const json_t *hs = json_object_get(j, "headers");
	if (hs) {
		if (!json_is_array(hs)) {
			efail(why, whylen, "%s: expected [[name, value], ...]", "headers");
			goto fail;
		}
		e->has_headers = true;
		size_t i;
		json_t *x;
		json_array_foreach(hs, i, x)
		{
			char f[40];
			snprintf(f, sizeof(f), "headers[%zu]", i);
			if (!json_is_array(x) || json_array_size(x) != 2 ||
			    !json_is_string(json_array_get(x, 0))) {
				efail(why, whylen, "%s: expected [name, value]", f);
				goto fail;
			}
			const json_t *n = json_array_get(x, 0);
			if (add_header(&e->headers, f, json_string_value(n), json_string_length(n),
				       json_array_get(x, 1), why, whylen) < 0)
				goto fail;
		}
	}
	const json_t *sh = json_object_get(j, "set_headers");
	if (sh) {
		if (!json_is_object(sh)) {
			efail(why, whylen, "%s: expected {name: value, ...}", "set_headers");
			goto fail;
		}
		json_object_foreach((json_t *)sh, k, v)
		{
			char f[96];
			snprintf(f, sizeof(f), "set_headers.%.64s", k);
			if (add_header(&e->set, f, k, strlen(k), v, why, whylen) < 0)
				goto fail;
		}
	}
	const json_t *rh = json_object_get(j, "remove_headers");
	if (rh) {
		if (!json_is_array(rh) || json_array_size(rh) > HELD_MAX_EDIT_HEADERS) {
			efail(why, whylen, "%s: expected an array of names", "remove_headers");
			goto fail;
		}
		e->remove = calloc(json_array_size(rh) + 1, sizeof(char *));
		if (!e->remove) {
			efail(why, whylen, "%s: out of memory", "remove_headers");
			goto fail;
		}
		size_t i;
		json_t *x;
		json_array_foreach(rh, i, x)
		{
			if (!json_is_string(x) ||
			    !token_ok(json_string_value(x), json_string_length(x))) {
				snprintf(why, whylen, "remove_headers[%zu]: expected a header name",
					 i);
				goto fail;
			}
			e->remove[e->nremove] = strdup(json_string_value(x));
			if (!e->remove[e->nremove]) {
				efail(why, whylen, "%s: out of memory", "remove_headers");
				goto fail;
			}
			e->nremove++;
		}
	}
	if (parse_body(j, e, why, whylen) < 0)
		goto fail;
	return 0;
fail:
	held_edits_free(e);
	return -1;
}

void held_edits_free(struct held_edits *e)
{
	if (!e)
		return;
	free(e->path);
	http_headers_free(&e->headers);
	http_headers_free(&e->set);
	for (size_t i = 0; i < e->nremove; i++)
		free(e->remove[i]);
	free(e->remove);
	free(e->body);
	memset(e, 0, sizeof(*e));
}

bool held_edits_any(const struct held_edits *e)
{
	return e && (e->method[0] || e->path || e->status || e->has_headers || e->set.n ||
		     e->nremove || e->has_body);
}

static void headers_drop(struct http_headers *h, const char *name)
{
	size_t o = 0;
	for (size_t i = 0; i < h->n; i++) {
		if (strcasecmp(h->v[i].name, name) == 0) {
			h->bytes -= h->v[i].name_len + h->v[i].value_len;
			free(h->v[i].name); /* the value shares its block */
			continue;
		}
		h->v[o++] = h->v[i];
	}
	h->n = o;
}

static int headers_copy(struct http_headers *to, const struct http_headers *from)
{
	for (size_t i = 0; i < from->n; i++) {
		int rc = http_headers_add(to, from->v[i].name, from->v[i].name_len,
					  from->v[i].value, from->v[i].value_len);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int held_edits_apply_headers(const struct held_edits *e, struct http_headers *h)
{
	if (!e)
		return 0;
	if (e->has_headers) {
		struct http_headers n = { 0 };
		int rc = headers_copy(&n, &e->headers);
		if (rc < 0) {
			http_headers_free(&n);
			return rc;
		}
		http_headers_free(h);
		*h = n;
	}
	for (size_t i = 0; i < e->nremove; i++)
		headers_drop(h, e->remove[i]);
	for (size_t i = 0; i < e->set.n; i++)
		headers_drop(h, e->set.v[i].name);
	return headers_copy(h, &e->set);
}

/* ---- the registry ------------------------------------------------------------- */

struct held *held_new(const struct held_config *cfg)
{
	struct held *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->cfg = *cfg;
	if (!h->cfg.max)
		h->cfg.max = HELD_DEFAULT_MAX;
	if (!h->cfg.timeout_ms)
		h->cfg.timeout_ms = HELD_DEFAULT_TIMEOUT_MS;
	h->next_id = 1;
	return h;
}

static void item_free(struct held_item *it)
{
	json_decref(it->info);
	free(it);
}

void held_free(struct held *h)
{
	if (!h)
		return;
	while (h->items) {
		struct held_item *it = h->items;
		h->items = it->next;
		item_free(it);
	}
	free(h);
}

void held_set_timeout(struct held *h, uint32_t ms)
{
	h->cfg.timeout_ms = ms ? (ms > HELD_MAX_TIMEOUT_MS ? HELD_MAX_TIMEOUT_MS : ms)
			       : HELD_DEFAULT_TIMEOUT_MS;
}

uint32_t held_timeout(const struct held *h)
{
	return h->cfg.timeout_ms;
}

static void emit(struct held *h, const char *what, const json_t *item)
{
	if (h->cfg.event)
		h->cfg.event(h->cfg.ctx, what, item);
}

static json_t *wall_after(uint64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	char t[FLOWLOG_TIME_LEN];
	flowlog_format_time(&ts, t);
	return json_string(t);
}

uint64_t held_add(struct held *h, json_t *info, const struct held_item_ops *ops, void *ctx,
		  uint64_t now_ms)
{
	if (!info)
		return 0;
	struct held_item *it = h->n < h->cfg.max ? calloc(1, sizeof(*it)) : NULL;
	if (!it) {
		json_decref(info);
		return 0;
	}
	it->id = h->next_id++;
	it->deadline = now_ms + h->cfg.timeout_ms;
	const char *ph = json_string_value(json_object_get(info, "phase"));
	it->phase = ph && strcmp(ph, "response") == 0 ? HELD_RESPONSE : HELD_REQUEST;
	it->info = info;
	it->ops = *ops;
	it->ctx = ctx;
	json_object_set_new(info, "id", json_integer((json_int_t)it->id));
	json_object_set_new(info, "held_since", wall_after(0));
	json_object_set_new(info, "deadline", wall_after(h->cfg.timeout_ms));
	json_object_set_new(info, "timeout_ms", json_integer((json_int_t)h->cfg.timeout_ms));
	if (h->tail)
		h->tail->next = it;
	else
		h->items = it;
	h->tail = it;
	h->n++;
	emit(h, "held", info);
	return it->id;
}

/* The item leaves the list (not freed). NULL: unknown. */
static struct held_item *unlink_item(struct held *h, uint64_t id)
{
	struct held_item *prev = NULL;
	for (struct held_item *it = h->items; it; prev = it, it = it->next) {
		if (it->id != id)
			continue;
		if (prev)
			prev->next = it->next;
		else
			h->items = it->next;
		if (h->tail == it)
			h->tail = prev;
		h->n--;
		it->next = NULL;
		return it;
	}
	return NULL;
}

static struct held_item *find(const struct held *h, uint64_t id)
{
	for (struct held_item *it = h->items; it; it = it->next)
		if (it->id == id)
			return it;
	return NULL;
}

void held_remove(struct held *h, uint64_t id, const char *why)
{
	struct held_item *it = h ? unlink_item(h, id) : NULL;
	if (!it)
		return;
	json_object_set_new(it->info, "reason", json_string(why ? why : "closed"));
	emit(h, "closed", it->info);
	item_free(it);
}

int held_release(struct held *h, uint64_t id, const json_t *edits, char *why, size_t whylen)
{
	struct held_item *it = find(h, id);
	if (!it) {
		snprintf(why, whylen, "no held item has the id %llu", (unsigned long long)id);
		return -ENOENT;
	}
	struct held_edits e;
	if (held_edits_parse(edits, it->phase, &e, why, whylen) < 0)
		return -EINVAL;
	(void)unlink_item(h, id);
	bool any = held_edits_any(&e);
	json_object_set_new(it->info, "edited", json_boolean(any));
	emit(h, "released", it->info);
	it->ops.release(it->ctx, id, any ? &e : NULL);
	held_edits_free(&e);
	item_free(it);
	return 0;
}

int held_kill(struct held *h, uint64_t id)
{
	struct held_item *it = unlink_item(h, id);
	if (!it)
		return -ENOENT;
	emit(h, "killed", it->info);
	it->ops.kill(it->ctx, id);
	item_free(it);
	return 0;
}

uint64_t held_expire(struct held *h, uint64_t now_ms)
{
	/* One at a time from the head: a callback may add or remove items. */
	for (;;) {
		struct held_item *due = NULL;
		for (struct held_item *it = h->items; it && !due; it = it->next)
			if (it->deadline <= now_ms)
				due = it;
		if (!due)
			break;
		(void)unlink_item(h, due->id);
		emit(h, "timeout", due->info);
		due->ops.release(due->ctx, due->id, NULL);
		item_free(due);
	}
	uint64_t next = 0;
	for (struct held_item *it = h->items; it; it = it->next)
		if (!next || it->deadline < next)
			next = it->deadline;
	return next;
}

json_t *held_list(const struct held *h)
{
	json_t *a = json_array();
	for (struct held_item *it = h->items; it && a; it = it->next)
		json_array_append(a, it->info);
	return a;
}

json_t *held_get(const struct held *h, uint64_t id)
{
	struct held_item *it = find(h, id);
	return it ? json_incref(it->info) : NULL;
}

size_t held_count(const struct held *h)
{
	return h->n;
}
