/* The filter language: parser, simplification, the matcher over struct
 * flow_fields and the compiler to SQL over the store's tables. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "flows/filter.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "flows/decode.h"
#include "flows/schema.h"

/* ---- operators ----------------------------------------------------------- */

enum test_kind { T_ALL, T_TYPE, T_FLAG, T_STATUS, T_REGEX };

enum flag {
	FLAG_ERROR,
	FLAG_NO_RESPONSE,
	FLAG_RESPONSE,
	FLAG_WEBSOCKET,
	FLAG_TLS_REJECTED,
	FLAG_PASSTHROUGH,
	FLAG_REPLAY
};

/* What a regex test searches; an operator may search several. */
enum field {
	FIELD_URL = 1 << 0,
	FIELD_HOST = 1 << 1,
	FIELD_METHOD = 1 << 2,
	FIELD_PEER = 1 << 3,
	FIELD_CLIENT = 1 << 4,
	FIELD_SERVER = 1 << 5,
	FIELD_REQ_CTYPE = 1 << 6,
	FIELD_RESP_CTYPE = 1 << 7,
	FIELD_REQ_HEADERS = 1 << 8,
	FIELD_RESP_HEADERS = 1 << 9,
	FIELD_REQ_BODY = 1 << 10,
	FIELD_RESP_BODY = 1 << 11,
	FIELD_VIA = 1 << 12,
	FIELD_USER = 1 << 13,
	FIELD_LAST = FIELD_USER
};
#define FIELD_HEADERS (FIELD_REQ_HEADERS | FIELD_RESP_HEADERS)
#define FIELD_BODIES (FIELD_REQ_BODY | FIELD_RESP_BODY)

struct op {
	const char *name;
	enum test_kind kind;
	unsigned fields;  /* T_REGEX */
	enum flag flag;   /* T_FLAG */
	const char *type; /* T_TYPE */
};

static const struct op OPS[] = {
	{ "all", T_ALL, 0, 0, NULL },
	{ "b", T_REGEX, FIELD_BODIES, 0, NULL },
	{ "bq", T_REGEX, FIELD_REQ_BODY, 0, NULL },
	{ "bs", T_REGEX, FIELD_RESP_BODY, 0, NULL },
	{ "c", T_STATUS, 0, 0, NULL },
	{ "d", T_REGEX, FIELD_HOST, 0, NULL },
	{ "dns", T_TYPE, 0, 0, "dns" },
	{ "dst", T_REGEX, FIELD_SERVER, 0, NULL },
	{ "e", T_FLAG, 0, FLAG_ERROR, NULL },
	{ "h", T_REGEX, FIELD_HEADERS, 0, NULL },
	{ "hq", T_REGEX, FIELD_REQ_HEADERS, 0, NULL },
	{ "hs", T_REGEX, FIELD_RESP_HEADERS, 0, NULL },
	{ "http", T_TYPE, 0, 0, "http" },
	{ "m", T_REGEX, FIELD_METHOD, 0, NULL },
	{ "passthrough", T_FLAG, 0, FLAG_PASSTHROUGH, NULL },
	{ "peer", T_REGEX, FIELD_PEER, 0, NULL },
	{ "q", T_FLAG, 0, FLAG_NO_RESPONSE, NULL },
	{ "replay", T_FLAG, 0, FLAG_REPLAY, NULL },
	{ "s", T_FLAG, 0, FLAG_RESPONSE, NULL },
	{ "src", T_REGEX, FIELD_CLIENT, 0, NULL },
	{ "t", T_REGEX, FIELD_REQ_CTYPE | FIELD_RESP_CTYPE, 0, NULL },
	{ "tcp", T_TYPE, 0, 0, "tcp" },
	{ "tls-rejected", T_FLAG, 0, FLAG_TLS_REJECTED, NULL },
	{ "tq", T_REGEX, FIELD_REQ_CTYPE, 0, NULL },
	{ "ts", T_REGEX, FIELD_RESP_CTYPE, 0, NULL },
	{ "u", T_REGEX, FIELD_URL, 0, NULL },
	{ "udp", T_TYPE, 0, 0, "udp" },
	{ "user", T_REGEX, FIELD_USER, 0, NULL },
	{ "via", T_REGEX, FIELD_VIA, 0, NULL },
	{ "websocket", T_FLAG, 0, FLAG_WEBSOCKET, NULL },
};

static const struct op *find_op(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof(OPS) / sizeof(OPS[0]); i++)
		if (strlen(OPS[i].name) == n && memcmp(OPS[i].name, name, n) == 0)
			return &OPS[i];
	return NULL;
}

/* ---- regexes ------------------------------------------------------------- */

static pcre2_code *re_compile(const char *pat, size_t len, bool lines, int *code,
			      PCRE2_SIZE *offset)
{
	uint32_t opts = PCRE2_CASELESS | (lines ? PCRE2_MULTILINE : PCRE2_DOLLAR_ENDONLY);
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, code, offset, NULL);
	/* Without JIT (unsupported, no memory) the interpreter answers alike. */
	if (re)
		pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	return re;
}

static pcre2_match_context *match_context(void)
{
	pcre2_match_context *mc = pcre2_match_context_create(NULL);
	if (mc) {
		pcre2_set_match_limit(mc, FILTER_MATCH_LIMIT);
		/* KiB, for the interpreter's backtracking frames. */
		pcre2_set_heap_limit(mc, 64 * 1024);
	}
	return mc;
}

/* Errors (the match limit, UTF-8 checks asked by (*UTF)) are no match. */
static bool re_search(const pcre2_code *re, pcre2_match_data *md, pcre2_match_context *mc,
		      const void *s, size_t n)
{
	if (!s)
		s = "";
	return pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, md, mc) >= 0;
}

/* The bytes ~b searches in a recorded body (filter.h): decoded when that
 * gives any, else as recorded. *decoded is to free. */
static void body_search_bytes(const uint8_t *raw, size_t len, const char *encoding,
			      const uint8_t **p, size_t *n, uint8_t **decoded)
{
	*decoded = NULL;
	*p = raw;
	*n = len;
	if (len == 0 || decode_is_identity(encoding))
		return;
	uint8_t *out;
	size_t outlen;
	enum decode_status st = decode_body(encoding, raw, len, FILTER_BODY_CAP, &out, &outlen);
	if (st == DECODE_COMPLETE || st == DECODE_CAPPED ||
	    ((st == DECODE_TRUNCATED || st == DECODE_ERROR) && outlen > 0)) {
		*p = out;
		*n = outlen;
		*decoded = out;
	} else {
		free(out);
	}
}

/* ---- the tree ------------------------------------------------------------ */

enum node_kind { NODE_AND, NODE_OR, NODE_NOT, NODE_TEST };

struct node {
	enum node_kind kind;
	unsigned column; /* where it starts in the text */
	/* NODE_AND, NODE_OR, NODE_NOT (one kid) */
	struct node **kids;
	size_t nkids;
	unsigned depth; /* and/or levels, as SQL nests them (simplified tree) */
	/* NODE_TEST */
	const struct op *op;
	bool neg;
	bool drives;           /* flow_fts can drive the query from it (filter_sql.driven) */
	int status, status_hi; /* ~c: status_hi > status for a class (4xx) */
	char *pattern;
	size_t patlen;
	pcre2_code *re;
};

struct filter {
	struct node *root;
	size_t drivers; /* tests marked `drives` */
	pcre2_match_data *md;
	pcre2_match_context *mc;
};

static void node_free(struct node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->nkids; i++)
		node_free(n->kids[i]);
	free(n->kids);
	free(n->pattern);
	pcre2_code_free(n->re);
	free(n);
}

/* ---- parser -------------------------------------------------------------- */

struct parser {
	const char *s;
	size_t len, pos;
	struct filter_error *err;
	bool failed;
};

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

static unsigned column_at(const struct parser *p, size_t pos)
{
	unsigned col = 1;
	for (size_t i = 0; i < pos && i < p->len; i++)
		if (((unsigned char)p->s[i] & 0xc0) != 0x80)
			col++;
	return col;
}

static void fail(struct parser *p, size_t pos, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail(struct parser *p, size_t pos, const char *fmt, ...)
{
	if (p->failed)
		return;
	p->failed = true;
	p->err->column = column_at(p, pos);
	int n = snprintf(p->err->message, sizeof(p->err->message), "column %u: ", p->err->column);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err->message + n, sizeof(p->err->message) - (size_t)n, fmt, ap);
	va_end(ap);
}

static void nomem(struct parser *p)
{
	if (p->failed)
		return;
	p->failed = true;
	p->err->column = 0;
	snprintf(p->err->message, sizeof(p->err->message), "out of memory");
}

static void skip_space(struct parser *p)
{
	while (p->pos < p->len && is_space(p->s[p->pos]))
		p->pos++;
}

/* The end of a bare word from pos: whitespace, or a ")" that closes no "("
 * of the word (so "(~u a(b|c))" works); a backslash keeps the next
 * character in. */
static size_t word_end(const struct parser *p, size_t pos)
{
	int depth = 0;
	size_t i = pos;
	while (i < p->len && !is_space(p->s[i])) {
		char c = p->s[i];
		if (c == '\\' && i + 1 < p->len && !is_space(p->s[i + 1])) {
			i += 2;
			continue;
		}
		if (c == '(') {
			depth++;
		} else if (c == ')') {
			if (depth == 0)
				break;
			depth--;
		}
		i++;
	}
	return i;
}

/* What is at pos, quoted, for "got ..." in messages. */
static void what_is_at(const struct parser *p, size_t pos, char *out, size_t n)
{
	if (pos >= p->len) {
		snprintf(out, n, "the end");
		return;
	}
	/* An operator, or one character (what the messages are about). */
	size_t e = pos + 1;
	if (p->s[pos] == '~')
		while (e < p->len && is_name_char(p->s[e]))
			e++;
	const char *more = "";
	if (e - pos > 40) {
		e = pos + 40;
		while (e > pos && ((unsigned char)p->s[e] & 0xc0) == 0x80)
			e--;
		more = "...";
	}
	snprintf(out, n, "\"%.*s%s\"", (int)(e - pos), p->s + pos, more);
}

static struct node *new_node(struct parser *p, enum node_kind kind, size_t pos)
{
	struct node *n = calloc(1, sizeof(*n));
	if (!n) {
		nomem(p);
		return NULL;
	}
	n->kind = kind;
	n->column = column_at(p, pos);
	return n;
}

/* An operator's argument: text (NUL terminated), and for each of its
 * bytes the position in the expression it came from (map[len]: the end). */
struct arg {
	char *text;
	size_t len;
	size_t *map;
};

static void arg_free(struct arg *a)
{
	free(a->text);
	free(a->map);
}

/* A quoted string at pos ("..." or '...', backslash escaping the quote and
 * itself) or a bare word, into a. */
static bool read_arg(struct parser *p, struct arg *a)
{
	size_t start = p->pos;
	char q = p->s[start];
	bool quoted = q == '"' || q == '\'';
	size_t end = quoted ? p->len : word_end(p, start);
	size_t room = end - start + 1;
	a->text = malloc(room);
	a->map = malloc(room * sizeof(*a->map));
	a->len = 0;
	if (!a->text || !a->map) {
		nomem(p);
		return false;
	}
	if (!quoted) {
		for (size_t i = start; i < end; i++) {
			a->map[a->len] = i;
			a->text[a->len++] = p->s[i];
		}
		a->map[a->len] = end;
		a->text[a->len] = '\0';
		p->pos = end;
		return true;
	}
	size_t i = start + 1;
	while (i < p->len && p->s[i] != q) {
		if (p->s[i] == '\\' && i + 1 < p->len && (p->s[i + 1] == q || p->s[i + 1] == '\\'))
			i++;
		a->map[a->len] = i;
		a->text[a->len++] = p->s[i++];
	}
	if (i >= p->len) {
		fail(p, start, "the string starting here is never closed (a %c is missing)", q);
		return false;
	}
	a->map[a->len] = i;
	a->text[a->len] = '\0';
	p->pos = i + 1;
	return true;
}

static struct node *regex_test(struct parser *p, const struct op *op, size_t start, struct arg *a,
			       bool bare)
{
	int code;
	PCRE2_SIZE off;
	pcre2_code *re = re_compile(a->text, a->len, op->fields & FIELD_HEADERS, &code, &off);
	if (!re) {
		char msg[160];
		pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof(msg));
		if (code == PCRE2_ERROR_HEAP_FAILED)
			nomem(p);
		else if (bare)
			fail(p, a->map[off < a->len ? off : a->len],
			     "bad regex (a word without an operator searches URLs, as ~u): %s",
			     msg);
		else
			fail(p, a->map[off < a->len ? off : a->len], "bad regex for ~%s: %s",
			     op->name, msg);
		return NULL;
	}
	struct node *n = new_node(p, NODE_TEST, start);
	if (!n) {
		pcre2_code_free(re);
		return NULL;
	}
	n->op = op;
	n->re = re;
	n->pattern = a->text;
	n->patlen = a->len;
	a->text = NULL;
	return n;
}

static struct node *status_test(struct parser *p, const struct op *op, size_t start, size_t at,
				const struct arg *a)
{
	int v = 0, hi;
	/* A class: 1xx to 9xx. */
	bool cls = a->len == 3 && a->text[0] >= '1' && a->text[0] <= '9' &&
		   (a->text[1] | 0x20) == 'x' && (a->text[2] | 0x20) == 'x';
	bool ok = cls || (a->len >= 1 && a->len <= 3);
	for (size_t i = 0; ok && !cls && i < a->len; i++) {
		ok = a->text[i] >= '0' && a->text[i] <= '9';
		v = v * 10 + (a->text[i] - '0');
	}
	if (cls) {
		v = (a->text[0] - '0') * 100;
		hi = v + 99;
	} else {
		hi = v;
	}
	if (!ok || v < 100) {
		fail(p, at,
		     "~%s needs a status code from 100 to 999 or a class such as 4xx, got "
		     "\"%.40s%s\"",
		     op->name, a->text, a->len > 40 ? "..." : "");
		return NULL;
	}
	struct node *n = new_node(p, NODE_TEST, start);
	if (n) {
		n->op = op;
		n->status = v;
		n->status_hi = hi;
	}
	return n;
}

/* An operator at pos ("~..."), with its argument if it takes one. */
static struct node *parse_op(struct parser *p)
{
	size_t start = p->pos, e = start + 1;
	while (e < p->len && is_name_char(p->s[e]))
		e++;
	if (e == start + 1) {
		fail(p, start, "\"~\" must be followed by an operator name, such as ~u or ~d");
		return NULL;
	}
	const struct op *op = find_op(p->s + start + 1, e - start - 1);
	if (!op) {
		fail(p, start, "unknown operator \"~%.*s\" (docs/filters.md lists them)",
		     (int)(e - start - 1 > 40 ? 40 : e - start - 1), p->s + start + 1);
		return NULL;
	}
	p->pos = e;
	if (op->kind != T_REGEX && op->kind != T_STATUS) {
		struct node *n = new_node(p, NODE_TEST, start);
		if (n)
			n->op = op;
		return n;
	}
	const char *what = op->kind == T_STATUS ? "a status code" : "a regex";
	skip_space(p);
	size_t at = p->pos;
	char got[64];
	if (at >= p->len || p->s[at] == ')') {
		what_is_at(p, at, got, sizeof(got));
		fail(p, at, "~%s needs %s, got %s", op->name, what, got);
		return NULL;
	}
	if (strchr("~!&|", p->s[at])) {
		what_is_at(p, at, got, sizeof(got));
		fail(p, at, "~%s needs %s, got %s (quote it to search for that text)", op->name,
		     what, got);
		return NULL;
	}
	struct arg a = { 0 };
	struct node *n = NULL;
	if (read_arg(p, &a))
		n = op->kind == T_STATUS ? status_test(p, op, start, at, &a)
					 : regex_test(p, op, start, &a, false);
	arg_free(&a);
	return n;
}

static struct node *parse_or(struct parser *p, unsigned nesting, const char *after);

/* A test, a group or a negation. `after`: what came before, for messages
 * (NULL at the start of the expression or of a juxtaposed term). */
static struct node *parse_term(struct parser *p, unsigned nesting, const char *after)
{
	skip_space(p);
	size_t at = p->pos;
	char c = at < p->len ? p->s[at] : '\0';
	char got[64];
	if (at >= p->len || c == ')' || c == '&' || c == '|') {
		what_is_at(p, at, got, sizeof(got));
		if (!after && at >= p->len)
			fail(p, at, "empty expression");
		else if (after && strcmp(after, "(") == 0 && c == ')')
			fail(p, at, "empty parentheses");
		else if (after)
			fail(p, at, "\"%s\" needs an expression after it, got %s", after, got);
		else
			fail(p, at, "expected an expression, got %s", got);
		return NULL;
	}
	if (c == '(' || c == '!') {
		if (nesting >= FILTER_MAX_NESTING) {
			fail(p, at, "more than %d nested parentheses and \"!\"",
			     FILTER_MAX_NESTING);
			return NULL;
		}
		p->pos++;
		if (c == '!') {
			struct node *kid = parse_term(p, nesting + 1, "!");
			if (!kid)
				return NULL;
			struct node *n = new_node(p, NODE_NOT, at);
			struct node **kids = n ? malloc(sizeof(*kids)) : NULL;
			if (!kids) {
				nomem(p);
				free(n);
				node_free(kid);
				return NULL;
			}
			kids[0] = kid;
			n->kids = kids;
			n->nkids = 1;
			return n;
		}
		struct node *inner = parse_or(p, nesting + 1, "(");
		if (!inner)
			return NULL;
		skip_space(p);
		if (p->pos >= p->len || p->s[p->pos] != ')') {
			fail(p, at, "\"(\" is never closed");
			node_free(inner);
			return NULL;
		}
		p->pos++;
		inner->column = column_at(p, at);
		return inner;
	}
	if (c == '~')
		return parse_op(p);
	struct arg a = { 0 };
	struct node *n = NULL;
	if (read_arg(p, &a))
		n = regex_test(p, find_op("u", 1), at, &a, true);
	arg_free(&a);
	return n;
}

/* Terms joined by `sep` ('&', or '|'); for '&', juxtaposed terms too. */
static struct node *parse_list(struct parser *p, unsigned nesting, const char *after, char sep)
{
	skip_space(p);
	size_t start = p->pos;
	struct node **kids = NULL;
	size_t n = 0, cap = 0;
	const char *ctx = after;
	for (;;) {
		struct node *k =
			sep == '|' ? parse_list(p, nesting, ctx, '&') : parse_term(p, nesting, ctx);
		if (!k)
			goto fail;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			struct node **nk = realloc(kids, ncap * sizeof(*kids));
			if (!nk) {
				node_free(k);
				nomem(p);
				goto fail;
			}
			kids = nk;
			cap = ncap;
		}
		kids[n++] = k;
		skip_space(p);
		if (p->pos >= p->len)
			break;
		char c = p->s[p->pos];
		if (c == sep) {
			p->pos++;
			ctx = sep == '&' ? "&" : "|";
		} else if (sep == '&' && c != '|' && c != ')') {
			ctx = NULL;
		} else {
			break;
		}
	}
	if (n == 1) {
		struct node *only = kids[0];
		free(kids);
		return only;
	}
	struct node *list = new_node(p, sep == '&' ? NODE_AND : NODE_OR, start);
	if (!list)
		goto fail;
	list->kids = kids;
	list->nkids = n;
	return list;
fail:
	for (size_t i = 0; i < n; i++)
		node_free(kids[i]);
	free(kids);
	return NULL;
}

static struct node *parse_or(struct parser *p, unsigned nesting, const char *after)
{
	return parse_list(p, nesting, after, '|');
}

/* ---- simplification ------------------------------------------------------ */

/* More than this many terms at one level are put in parenthesized groups
 * of this many in SQL: SQLite's expression depth grows with a chain. */
#define SQL_CHAIN 64

/* The order terms are tried in: cheap tests first, groups last (in SQL
 * that also keeps the deepest expressions at the top of a chain). */
static unsigned cost(const struct node *n)
{
	if (n->kind != NODE_TEST)
		return 10 + n->depth;
	if (n->op->kind != T_REGEX)
		return 0;
	if (n->op->fields & FIELD_BODIES)
		return 3;
	if (n->op->fields & FIELD_HEADERS)
		return 2;
	return 1;
}

static void sort_kids(struct node *n)
{
	/* Insertion sort: stable, and lists are short. */
	for (size_t i = 1; i < n->nkids; i++) {
		struct node *k = n->kids[i];
		unsigned c = cost(k);
		size_t j = i;
		for (; j > 0 && cost(n->kids[j - 1]) > c; j--)
			n->kids[j] = n->kids[j - 1];
		n->kids[j] = k;
	}
}

/* Pushes ! down to the tests (negating them), merges nested lists of one
 * kind, orders the terms and sets depths. -1: no memory (the tree stays
 * whole, for node_free). */
static int simplify(struct node **slot, bool neg)
{
	struct node *n = *slot;
	while (n->kind == NODE_NOT) {
		struct node *kid = n->kids[0];
		free(n->kids);
		free(n);
		n = kid;
		neg = !neg;
	}
	*slot = n;
	if (n->kind == NODE_TEST) {
		n->neg ^= neg;
		return 0;
	}
	if (neg)
		n->kind = n->kind == NODE_AND ? NODE_OR : NODE_AND;
	size_t total = 0;
	for (size_t i = 0; i < n->nkids; i++) {
		if (simplify(&n->kids[i], neg) != 0)
			return -1;
		total += n->kids[i]->kind == n->kind ? n->kids[i]->nkids : 1;
	}
	if (total > n->nkids) {
		struct node **kids = malloc(total * sizeof(*kids));
		if (!kids)
			return -1;
		size_t k = 0;
		for (size_t i = 0; i < n->nkids; i++) {
			struct node *kid = n->kids[i];
			if (kid->kind != n->kind) {
				kids[k++] = kid;
				continue;
			}
			memcpy(kids + k, kid->kids, kid->nkids * sizeof(*kids));
			k += kid->nkids;
			free(kid->kids);
			free(kid);
		}
		free(n->kids);
		n->kids = kids;
		n->nkids = total;
	}
	unsigned depth = 0;
	for (size_t i = 0; i < n->nkids; i++)
		if (n->kids[i]->depth > depth)
			depth = n->kids[i]->depth;
	n->depth = depth + 1 + (n->nkids > SQL_CHAIN);
	sort_kids(n);
	return 0;
}

/* The list nested past FILTER_MAX_DEPTH, for the message. */
static const struct node *too_deep(const struct node *n)
{
	for (unsigned level = 0; level < FILTER_MAX_DEPTH; level++) {
		const struct node *deepest = NULL;
		for (size_t i = 0; i < n->nkids; i++)
			if (!deepest || n->kids[i]->depth > deepest->depth)
				deepest = n->kids[i];
		if (!deepest || deepest->kind == NODE_TEST)
			break;
		n = deepest;
	}
	return n;
}

static size_t mark_drivers(struct node *root);

struct filter *filter_parse(const char *text, struct filter_error *err)
{
	struct filter_error dummy;
	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	if (!text)
		text = "";
	struct parser p = { .s = text, .len = strnlen(text, FILTER_MAX_LEN + 1), .err = err };
	if (p.len > FILTER_MAX_LEN) {
		p.len = FILTER_MAX_LEN;
		fail(&p, FILTER_MAX_LEN, "the expression is longer than %d bytes", FILTER_MAX_LEN);
		return NULL;
	}
	struct node *root = parse_or(&p, 0, NULL);
	if (root && !p.failed) {
		skip_space(&p);
		if (p.pos < p.len)
			fail(&p, p.pos, "\")\" without a matching \"(\"");
	}
	if (root && !p.failed && simplify(&root, false) != 0)
		nomem(&p);
	if (root && !p.failed && root->depth > FILTER_MAX_DEPTH) {
		const struct node *deep = too_deep(root);
		p.failed = true;
		err->column = deep->column;
		snprintf(err->message, sizeof(err->message),
			 "column %u: & and | nest more than %d levels deep here", deep->column,
			 FILTER_MAX_DEPTH);
	}
	struct filter *f = NULL;
	if (root && !p.failed) {
		f = calloc(1, sizeof(*f));
		if (f) {
			f->root = root;
			f->drivers = mark_drivers(root);
			f->md = pcre2_match_data_create(1, NULL);
			f->mc = match_context();
		}
		if (!f || !f->md || !f->mc) {
			filter_free(f);
			f = NULL;
			root = NULL;
			nomem(&p);
		}
	}
	if (!f)
		node_free(root);
	return f;
}

void filter_free(struct filter *f)
{
	if (!f)
		return;
	node_free(f->root);
	pcre2_match_data_free(f->md);
	pcre2_match_context_free(f->mc);
	free(f);
}

/* ---- matcher ------------------------------------------------------------- */

/* One match: header texts and body bytes made once, when first needed. */
struct eval {
	const struct filter *f;
	const struct flow_fields *ff;
	struct {
		bool done;
		char *text;
		size_t len;
	} headers[2];
	struct {
		bool done;
		const uint8_t *p;
		size_t len;
		uint8_t *owned, *decoded;
	} bodies[2];
};

static bool search_str(struct eval *e, const struct node *n, const char *s)
{
	return s && re_search(n->re, e->f->md, e->f->mc, s, strlen(s));
}

static bool search_headers(struct eval *e, const struct node *n, int part)
{
	if (!e->headers[part].done) {
		e->headers[part].done = true;
		flow_headers_text(part ? e->ff->resp_headers : e->ff->req_headers,
				  &e->headers[part].text, &e->headers[part].len);
	}
	return e->headers[part].text &&
	       re_search(n->re, e->f->md, e->f->mc, e->headers[part].text, e->headers[part].len);
}

static bool search_body(struct eval *e, const struct node *n, int part)
{
	if (!e->bodies[part].done) {
		e->bodies[part].done = true;
		const json_t *headers = part ? e->ff->resp_headers : e->ff->req_headers;
		size_t len;
		const uint8_t *raw = flow_body_bytes(part ? e->ff->resp_body : e->ff->req_body,
						     &len, &e->bodies[part].owned);
		if (raw)
			body_search_bytes(raw, len, flow_header(headers, "content-encoding"),
					  &e->bodies[part].p, &e->bodies[part].len,
					  &e->bodies[part].decoded);
	}
	return e->bodies[part].len > 0 &&
	       re_search(n->re, e->f->md, e->f->mc, e->bodies[part].p, e->bodies[part].len);
}

static bool test_field(struct eval *e, const struct node *n, unsigned field)
{
	const struct flow_fields *ff = e->ff;
	switch (field) {
	case FIELD_URL:
		return search_str(e, n, ff->url);
	case FIELD_HOST:
		return search_str(e, n, ff->host);
	case FIELD_METHOD:
		return search_str(e, n, ff->method);
	case FIELD_PEER:
		return search_str(e, n, ff->peer);
	case FIELD_CLIENT:
		return search_str(e, n, ff->client);
	case FIELD_SERVER:
		return search_str(e, n, ff->server);
	case FIELD_REQ_CTYPE:
		return search_str(e, n, ff->req_ctype);
	case FIELD_RESP_CTYPE:
		return search_str(e, n, ff->resp_ctype);
	case FIELD_REQ_HEADERS:
		return search_headers(e, n, 0);
	case FIELD_RESP_HEADERS:
		return search_headers(e, n, 1);
	case FIELD_REQ_BODY:
		return search_body(e, n, 0);
	case FIELD_RESP_BODY:
		return search_body(e, n, 1);
	case FIELD_VIA:
		return search_str(e, n, ff->via);
	case FIELD_USER:
		return search_str(e, n, ff->user);
	}
	return false;
}

static bool test(struct eval *e, const struct node *n)
{
	const struct flow_fields *ff = e->ff;
	switch (n->op->kind) {
	case T_ALL:
		return true;
	case T_TYPE:
		return ff->type && strcmp(ff->type, n->op->type) == 0;
	case T_STATUS:
		return ff->status >= n->status && ff->status <= n->status_hi;
	case T_FLAG:
		switch (n->op->flag) {
		case FLAG_ERROR:
			return ff->error != NULL;
		case FLAG_NO_RESPONSE:
			return ff->type && strcmp(ff->type, "http") == 0 && !ff->has_response;
		case FLAG_RESPONSE:
			return ff->has_response;
		case FLAG_WEBSOCKET:
			return ff->websocket;
		case FLAG_TLS_REJECTED:
			return ff->tls_rejected;
		case FLAG_PASSTHROUGH:
			return ff->passthrough;
		case FLAG_REPLAY:
			return ff->replay_of != NULL;
		}
		return false;
	case T_REGEX:
		for (unsigned bit = 1; bit <= FIELD_LAST; bit <<= 1)
			if ((n->op->fields & bit) && test_field(e, n, bit))
				return true;
		return false;
	}
	return false;
}

static bool eval(struct eval *e, const struct node *n)
{
	switch (n->kind) {
	case NODE_AND:
		for (size_t i = 0; i < n->nkids; i++)
			if (!eval(e, n->kids[i]))
				return false;
		return true;
	case NODE_OR:
		for (size_t i = 0; i < n->nkids; i++)
			if (eval(e, n->kids[i]))
				return true;
		return false;
	case NODE_TEST:
		return test(e, n) != n->neg;
	case NODE_NOT:
		break;
	}
	return false;
}

bool filter_match(const struct filter *f, const struct flow_fields *ff)
{
	struct eval e = { .f = f, .ff = ff };
	bool r = eval(&e, f->root);
	for (int i = 0; i < 2; i++) {
		free(e.headers[i].text);
		free(e.bodies[i].owned);
		free(e.bodies[i].decoded);
	}
	return r;
}

/* Three-valued: 0 false, 1 true, 2 unknown. */
static int may_eval(const struct filter *f, const struct node *n, const char *host,
		    const char *peer)
{
	switch (n->kind) {
	case NODE_AND: {
		int r = 1;
		for (size_t i = 0; i < n->nkids; i++) {
			int k = may_eval(f, n->kids[i], host, peer);
			if (k == 0)
				return 0;
			if (k == 2)
				r = 2;
		}
		return r;
	}
	case NODE_OR: {
		int r = 0;
		for (size_t i = 0; i < n->nkids; i++) {
			int k = may_eval(f, n->kids[i], host, peer);
			if (k == 1)
				return 1;
			if (k == 2)
				r = 2;
		}
		return r;
	}
	case NODE_TEST: {
		int v = 2;
		if (n->op->kind == T_ALL)
			v = 1;
		else if (n->op->kind == T_TYPE)
			v = strcmp(n->op->type, "http") == 0;
		else if (n->op->kind == T_REGEX && n->op->fields == FIELD_HOST && host)
			v = re_search(n->re, f->md, f->mc, host, strlen(host));
		else if (n->op->kind == T_REGEX && n->op->fields == FIELD_PEER)
			v = peer && re_search(n->re, f->md, f->mc, peer, strlen(peer));
		if (v != 2 && n->neg)
			v = !v;
		return v;
	}
	case NODE_NOT:
		break;
	}
	return 2;
}

bool filter_may_match_host(const struct filter *f, const char *host, const char *peer)
{
	return may_eval(f, f->root, host, peer) != 0;
}

/* ---- what an index can do for a regex ------------------------------------ */

#define MAX_RUNS 16
#define MIN_RUN 3
/* ASCII case variants of at most 2^this many strings for an IN list. */
#define MAX_VARIANT_LETTERS 10

/* lit: the literal characters, in order; runs: stretches of it every match
 * contains (ASCII, MIN_RUN or longer); exact: the regex is ^lit$. */
struct facts {
	char *lit;
	size_t litlen;
	bool exact;
	size_t nruns;
	struct {
		size_t start, len;
	} runs[MAX_RUNS];
};

struct scan {
	struct facts *a;
	size_t run_start;
	bool last_lit;
};

static void end_run(struct scan *sc)
{
	struct facts *a = sc->a;
	/* Only its ASCII stretches: the trigram index folds other
	 * characters' case, the regex does not. */
	size_t i = sc->run_start;
	while (i < a->litlen) {
		while (i < a->litlen && (unsigned char)a->lit[i] >= 0x80)
			i++;
		size_t s = i;
		while (i < a->litlen && (unsigned char)a->lit[i] < 0x80)
			i++;
		if (i - s >= MIN_RUN && a->nruns < MAX_RUNS) {
			a->runs[a->nruns].start = s;
			a->runs[a->nruns].len = i - s;
			a->nruns++;
		}
	}
	sc->run_start = a->litlen;
	sc->last_lit = false;
}

static void add_lit(struct scan *sc, char c)
{
	sc->a->lit[sc->a->litlen++] = c;
	sc->last_lit = true;
}

/* A quantifier that may repeat the last atom zero times: that atom is not
 * required. */
static void drop_last(struct scan *sc)
{
	if (sc->last_lit && sc->a->litlen > sc->run_start)
		sc->a->litlen--;
	sc->last_lit = false;
}

static bool is_ascii_punct(unsigned char c)
{
	return c > ' ' && c < 0x7f &&
	       !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
}

/* The end of a character class opening at p[i]; 0 when it is one we do
 * not follow (\Q...\E inside, unterminated). */
static size_t class_end(const char *p, size_t n, size_t i)
{
	i++;
	if (i < n && p[i] == '^')
		i++;
	if (i < n && p[i] == ']')
		i++;
	while (i < n && p[i] != ']') {
		if (p[i] == '\\') {
			if (i + 1 >= n || p[i + 1] == 'Q' || p[i + 1] == 'E')
				return 0;
			i += 2;
		} else if (p[i] == '[' && i + 1 < n && p[i + 1] == ':') {
			const char *close = memmem(p + i + 2, n - i - 2, ":]", 2);
			if (!close)
				return 0;
			i = (size_t)(close - p) + 2;
		} else {
			i++;
		}
	}
	return i < n ? i + 1 : 0;
}

/* Reads what an index can use from a regex (one that compiled). Any
 * alternation, group or escape not known here gives nothing. a->lit must
 * hold n bytes. */
static void analyse(const char *p, size_t n, struct facts *a)
{
	a->litlen = 0;
	a->nruns = 0;
	a->exact = false;
	struct scan sc = { .a = a };
	bool exact = n > 0 && p[0] == '^', anchored_end = false;
	size_t i = exact ? 1 : 0;
	while (i < n) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\\') {
			unsigned char d = i + 1 < n ? (unsigned char)p[i + 1] : 0;
			if (is_ascii_punct(d)) {
				add_lit(&sc, (char)d);
			} else if (d && (strchr("dDwWsShHvVRbBAzZGKXCtnrfae", d) ||
					 (d == 'N' && (i + 2 >= n || p[i + 2] != '{')))) {
				end_run(&sc);
				exact = false;
			} else {
				goto nothing;
			}
			i += 2;
			continue;
		}
		i++;
		switch (c) {
		case '|':
		case '(':
		case ')':
			goto nothing;
		case '$':
			end_run(&sc);
			if (i == n)
				anchored_end = true;
			else
				exact = false;
			continue;
		case '^':
		case '.':
			end_run(&sc);
			exact = false;
			continue;
		case '[':
			i = class_end(p, n, i - 1);
			if (!i)
				goto nothing;
			end_run(&sc);
			exact = false;
			continue;
		case '*':
		case '?':
		case '{':
		case '+':
			if (c != '+')
				drop_last(&sc);
			end_run(&sc);
			exact = false;
			if (c == '{') {
				while (i < n &&
				       ((p[i] >= '0' && p[i] <= '9') || p[i] == ',' || p[i] == ' '))
					i++;
				if (i < n && p[i] == '}')
					i++;
			}
			/* Lazy and possessive forms. */
			if (i < n && (p[i] == '?' || p[i] == '+'))
				i++;
			continue;
		default:
			add_lit(&sc, (char)c);
			continue;
		}
	}
	end_run(&sc);
	a->exact = exact && anchored_end;
	return;
nothing:
	a->litlen = 0;
	a->nruns = 0;
	a->exact = false;
}

/* ---- SQL ----------------------------------------------------------------- */

struct sqlgen {
	char *buf;
	size_t len, cap;
	struct flows_param *params;
	size_t nparams, pcap;
	bool nomem;
	/* The driven form: the tests flow_fts drives (the root, or tests of
	 * the root's &) leave out their index lookup; their MATCH queries,
	 * joined by AND, are noted. */
	bool driven;
	char *match;
	size_t match_len, match_param, drivers;
};

static void put_n(struct sqlgen *g, const char *s, size_t n)
{
	if (g->nomem)
		return;
	if (g->len + n + 1 > g->cap) {
		size_t ncap = g->cap ? g->cap : 256;
		while (ncap < g->len + n + 1)
			ncap *= 2;
		char *nb = realloc(g->buf, ncap);
		if (!nb) {
			g->nomem = true;
			return;
		}
		g->buf = nb;
		g->cap = ncap;
	}
	memcpy(g->buf + g->len, s, n);
	g->len += n;
	g->buf[g->len] = '\0';
}

static void put(struct sqlgen *g, const char *s)
{
	put_n(g, s, strlen(s));
}

static void putf(struct sqlgen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct sqlgen *g, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		g->nomem = true;
	else
		put_n(g, tmp, (size_t)n);
}

static struct flows_param *new_param(struct sqlgen *g)
{
	if (g->nomem)
		return NULL;
	if (g->nparams == g->pcap) {
		size_t ncap = g->pcap ? g->pcap * 2 : 8;
		struct flows_param *np = realloc(g->params, ncap * sizeof(*np));
		if (!np) {
			g->nomem = true;
			return NULL;
		}
		g->params = np;
		g->pcap = ncap;
	}
	struct flows_param *p = &g->params[g->nparams++];
	memset(p, 0, sizeof(*p));
	return p;
}

/* A text parameter taking `text` (malloc'd, NUL terminated); its number. */
static size_t param_take(struct sqlgen *g, char *text)
{
	struct flows_param *p = text ? new_param(g) : NULL;
	if (!p) {
		free(text);
		g->nomem = true;
		return 0;
	}
	p->type = FLOWS_PARAM_TEXT;
	p->text = text;
	return g->nparams;
}

static size_t param_text(struct sqlgen *g, const char *s, size_t len)
{
	return param_take(g, strndup(s, len));
}

static size_t param_int(struct sqlgen *g, int64_t v)
{
	struct flows_param *p = new_param(g);
	if (!p)
		return 0;
	p->type = FLOWS_PARAM_INT;
	p->i = v;
	return g->nparams;
}

static const char *field_column(unsigned field)
{
	switch (field) {
	case FIELD_URL:
		return "url";
	case FIELD_HOST:
		return "host";
	case FIELD_METHOD:
		return "method";
	case FIELD_PEER:
		return "peer";
	case FIELD_CLIENT:
		return "client";
	case FIELD_SERVER:
		return "server";
	case FIELD_REQ_CTYPE:
		return "req_ctype";
	case FIELD_RESP_CTYPE:
		return "resp_ctype";
	case FIELD_REQ_HEADERS:
		return "req_headers";
	case FIELD_RESP_HEADERS:
		return "resp_headers";
	case FIELD_VIA:
		return "via";
	case FIELD_USER:
		return "user";
	}
	return NULL;
}

/* The FTS5 query for the runs in column `col`: each a string ("" doubled). */
static char *fts_query(const struct facts *a, const char *col, size_t *len)
{
	size_t n = strlen(col) + 8;
	for (size_t r = 0; r < a->nruns; r++)
		n += a->runs[r].len * 2 + 8;
	char *q = malloc(n), *o = q;
	if (!q)
		return NULL;
	o += sprintf(o, "%s : %s", col, a->nruns > 1 ? "(" : "");
	for (size_t r = 0; r < a->nruns; r++) {
		if (r)
			o += sprintf(o, " AND ");
		*o++ = '"';
		for (size_t i = 0; i < a->runs[r].len; i++) {
			char c = a->lit[a->runs[r].start + i];
			if (c == '"')
				*o++ = '"';
			*o++ = c;
		}
		*o++ = '"';
	}
	if (a->nruns > 1)
		*o++ = ')';
	*o = '\0';
	*len = (size_t)(o - q);
	return q;
}

/* A JSON array of every ASCII case variant of lit, or NULL when it has
 * more than MAX_VARIANT_LETTERS letters or other than printable ASCII. */
static char *case_variants(const char *lit, size_t n)
{
	size_t letters = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)lit[i];
		if (c < 0x20 || c >= 0x7f)
			return NULL;
		if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
			letters++;
	}
	if (letters > MAX_VARIANT_LETTERS)
		return NULL;
	size_t count = (size_t)1 << letters, each = 2 * n + 3;
	char *out = malloc(count * each + 3), *o = out;
	if (!out)
		return NULL;
	*o++ = '[';
	for (size_t v = 0; v < count; v++) {
		if (v)
			*o++ = ',';
		*o++ = '"';
		size_t bit = 0;
		for (size_t i = 0; i < n; i++) {
			char c = lit[i];
			if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
				c = (v >> bit++) & 1 ? (char)(c & ~0x20) : (char)(c | 0x20);
			if (c == '"' || c == '\\')
				*o++ = '\\';
			*o++ = c;
		}
		*o++ = '"';
	}
	*o++ = ']';
	*o = '\0';
	return out;
}

/* One field's SQL for a regex test whose pattern is ?pat. */
/* Appends a driving test's MATCH query to the driven form's. */
static void add_match(struct sqlgen *g, const char *q, size_t len)
{
	if (!q || g->nomem)
		return;
	char *m = realloc(g->match, g->match_len + len + 8);
	if (!m) {
		g->nomem = true;
		return;
	}
	g->match = m;
	g->match_len += (size_t)sprintf(m + g->match_len, "%s(%s)", g->drivers ? " AND " : "", q);
	g->drivers++;
}

/* The pattern's parameter, made when first used. */
static size_t pattern_param(struct sqlgen *g, const struct node *n, size_t *pat)
{
	if (!*pat)
		*pat = param_text(g, n->pattern, n->patlen);
	return *pat;
}

static void sql_field(struct sqlgen *g, const struct node *n, unsigned field, size_t *pat,
		      const struct facts *a)
{
	const char *col = field_column(field);
	if (field == FIELD_HOST && a->exact) {
		char *low = malloc(a->litlen + 1);
		if (low) {
			for (size_t i = 0; i < a->litlen; i++) {
				char c = a->lit[i];
				low[i] = c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
			}
			low[a->litlen] = '\0';
		}
		putf(g, "flows.host = ?%zu", param_take(g, low));
		return;
	}
	if ((field == FIELD_METHOD || field == FIELD_PEER || field == FIELD_VIA ||
	     field == FIELD_USER) &&
	    a->exact) {
		char *variants = case_variants(a->lit, a->litlen);
		if (variants) {
			size_t v = param_take(g, variants);
			putf(g,
			     "(flows.%s IS NOT NULL AND flows.%s IN (SELECT value FROM "
			     "json_each(?%zu)))",
			     col, col, v);
			return;
		}
	}
	if ((field == FIELD_URL || field == FIELD_HOST) && a->nruns > 0) {
		size_t len;
		char *q = fts_query(a, col, &len);
		if (g->driven && n->drives)
			add_match(g, q, len);
		size_t fts = param_take(g, q);
		if (g->driven && n->drives) {
			g->match_param = fts;
			putf(g, "wgmitm_regexp(?%zu, flows.%s)", pattern_param(g, n, pat), col);
			return;
		}
		putf(g,
		     "(flows.seq IN (SELECT rowid FROM flow_fts WHERE flow_fts MATCH ?%zu UNION "
		     "ALL "
		     "SELECT seq FROM flows WHERE seq > " FLOWS_FTS_SEQ_SQL ") AND "
		     "wgmitm_regexp(?%zu, flows.%s))",
		     fts, pattern_param(g, n, pat), col);
		return;
	}
	if (field & FIELD_BODIES) {
		putf(g,
		     "EXISTS (SELECT 1 FROM bodies WHERE bodies.seq = flows.seq AND bodies.part %s "
		     "AND wgmitm_body(?%zu, bodies.data, bodies.encoding))",
		     (n->op->fields & FIELD_BODIES) == FIELD_BODIES ? "IN (0, 1)"
		     : field == FIELD_REQ_BODY                      ? "= 0"
								    : "= 1",
		     pattern_param(g, n, pat));
		return;
	}
	putf(g, "wgmitm_regexp%s(?%zu, flows.%s)", field & FIELD_HEADERS ? "_lines" : "",
	     pattern_param(g, n, pat), col);
}

static void sql_test(struct sqlgen *g, const struct node *n)
{
	if (n->neg)
		put(g, "NOT ");
	switch (n->op->kind) {
	case T_ALL:
		put(g, "1");
		return;
	case T_TYPE:
		putf(g, "flows.type = '%s'", n->op->type);
		return;
	case T_STATUS:
		if (n->status_hi > n->status) {
			size_t lo = param_int(g, n->status);
			putf(g, "flows.status BETWEEN ?%zu AND ?%zu", lo,
			     param_int(g, n->status_hi));
		} else {
			putf(g, "flows.status = ?%zu", param_int(g, n->status));
		}
		return;
	case T_FLAG: {
		static const char *const sql[] = {
			[FLAG_ERROR] = "flows.error IS NOT NULL",
			[FLAG_NO_RESPONSE] = "(flows.type = 'http' AND flows.has_response = 0)",
			[FLAG_RESPONSE] = "flows.has_response <> 0",
			[FLAG_WEBSOCKET] = "flows.websocket <> 0",
			[FLAG_TLS_REJECTED] = "flows.tls_rejected <> 0",
			[FLAG_PASSTHROUGH] = "flows.passthrough <> 0",
			[FLAG_REPLAY] = "flows.replay_of IS NOT NULL",
		};
		put(g, sql[n->op->flag]);
		return;
	}
	case T_REGEX:
		break;
	}
	struct facts a = { .lit = malloc(n->patlen + 1) };
	if (!a.lit) {
		g->nomem = true;
		return;
	}
	analyse(n->pattern, n->patlen, &a);
	size_t pat = 0;
	unsigned fields = n->op->fields;
	/* Both bodies are one subquery. */
	if ((fields & FIELD_BODIES) == FIELD_BODIES)
		fields &= ~(unsigned)FIELD_RESP_BODY;
	bool several = (fields & (fields - 1)) != 0;
	if (several)
		put(g, "(");
	bool first = true;
	for (unsigned bit = 1; bit <= FIELD_LAST; bit <<= 1) {
		if (!(fields & bit))
			continue;
		if (!first)
			put(g, " OR ");
		first = false;
		sql_field(g, n, bit, &pat, &a);
	}
	if (several)
		put(g, ")");
	free(a.lit);
}

static void sql_node(struct sqlgen *g, const struct node *n);

static void sql_chain(struct sqlgen *g, const struct node *n, size_t from, size_t to)
{
	const char *sep = n->kind == NODE_AND ? " AND " : " OR ";
	put(g, "(");
	for (size_t i = from; i < to; i++) {
		if (i > from)
			put(g, sep);
		sql_node(g, n->kids[i]);
	}
	put(g, ")");
}

static void sql_node(struct sqlgen *g, const struct node *n)
{
	if (n->kind == NODE_TEST) {
		sql_test(g, n);
		return;
	}
	if (n->nkids <= SQL_CHAIN) {
		sql_chain(g, n, 0, n->nkids);
		return;
	}
	/* Groups of SQL_CHAIN (nkids <= FILTER_MAX_LEN, so one level). */
	const char *sep = n->kind == NODE_AND ? " AND " : " OR ";
	put(g, "(");
	for (size_t i = 0; i < n->nkids; i += SQL_CHAIN) {
		if (i)
			put(g, sep);
		sql_chain(g, n, i, i + SQL_CHAIN < n->nkids ? i + SQL_CHAIN : n->nkids);
	}
	put(g, ")");
}

/* Whether flow_fts can drive the query from test n: a ~u, ~d or bare word
 * with literal runs (and no equality, which an index answers better). */
static bool can_drive(const struct node *n)
{
	if (n->kind != NODE_TEST || n->neg || n->op->kind != T_REGEX ||
	    (n->op->fields != FIELD_URL && n->op->fields != FIELD_HOST))
		return false;
	struct facts a = { .lit = malloc(n->patlen + 1) };
	if (!a.lit)
		return false;
	analyse(n->pattern, n->patlen, &a);
	free(a.lit);
	return a.nruns > 0 && !(n->op->fields == FIELD_HOST && a.exact);
}

/* Marks the tests flow_fts can drive the query from; how many. */
static size_t mark_drivers(struct node *root)
{
	size_t n = 0;
	if (can_drive(root)) {
		root->drives = true;
		return 1;
	}
	if (root->kind != NODE_AND)
		return 0;
	for (size_t i = 0; i < root->nkids; i++) {
		if (can_drive(root->kids[i])) {
			root->kids[i]->drives = true;
			n++;
		}
	}
	return n;
}

int filter_to_sql(const struct filter *f, struct filter_sql *out)
{
	memset(out, 0, sizeof(*out));
	struct sqlgen g = { 0 };
	sql_node(&g, f->root);
	/* The driven form again: parameters are made in the same order, so
	 * they number alike; the second set is dropped. */
	struct sqlgen d = { .driven = true };
	if (f->drivers && !g.nomem) {
		sql_node(&d, f->root);
		struct filter_sql drop = { .nparams = d.nparams, .params = d.params };
		filter_sql_free(&drop);
		if (d.nomem || d.nparams != g.nparams || d.drivers != f->drivers)
			g.nomem = true;
		/* Several: their queries joined, a parameter of its own (which
		 * `where` does not use; filter_sql_bind skips it there). */
		else if (d.drivers > 1) {
			d.match_param = param_take(&g, d.match);
			d.match = NULL;
		}
	}
	free(d.match);
	if (g.nomem) {
		struct filter_sql s = {
			.where = g.buf, .nparams = g.nparams, .params = g.params, .driven = d.buf
		};
		filter_sql_free(&s);
		return -ENOMEM;
	}
	out->where = g.buf;
	out->nparams = g.nparams;
	out->params = g.params;
	out->fts_param = d.buf ? d.match_param : 0;
	out->driven = d.buf;
	return 0;
}

void filter_sql_free(struct filter_sql *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nparams; i++)
		if (s->params[i].type == FLOWS_PARAM_TEXT)
			free((char *)s->params[i].text);
	free(s->params);
	free(s->where);
	free(s->driven);
	memset(s, 0, sizeof(*s));
}

int filter_sql_bind(sqlite3_stmt *st, const struct filter_sql *s)
{
	/* A form may leave the last ones out (fts_param, in `where`). */
	size_t n = (size_t)sqlite3_bind_parameter_count(st);
	for (size_t i = 0; i < s->nparams && i < n; i++) {
		const struct flows_param *p = &s->params[i];
		int rc = p->type == FLOWS_PARAM_INT
				 ? sqlite3_bind_int64(st, (int)i + 1, p->i)
				 : sqlite3_bind_text(st, (int)i + 1, p->text, -1, SQLITE_STATIC);
		if (rc != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

/* ---- SQL functions ------------------------------------------------------- */

/* A statement's compiled pattern (sqlite3_set_auxdata keeps it). */
struct re_aux {
	pcre2_code *re;
	pcre2_match_data *md;
	pcre2_match_context *mc;
};

static void aux_free(void *p)
{
	struct re_aux *a = p;
	pcre2_code_free(a->re);
	pcre2_match_data_free(a->md);
	pcre2_match_context_free(a->mc);
	free(a);
}

/* The compiled argument 0; *fresh: not yet kept with set_auxdata. NULL
 * with the result set on an error. */
static struct re_aux *aux_get(sqlite3_context *ctx, sqlite3_value *pattern, bool lines, bool *fresh)
{
	*fresh = false;
	struct re_aux *a = sqlite3_get_auxdata(ctx, 0);
	if (a)
		return a;
	const char *pat = (const char *)sqlite3_value_text(pattern);
	if (!pat) {
		sqlite3_result_int(ctx, 0);
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		sqlite3_result_error_nomem(ctx);
		return NULL;
	}
	int code;
	PCRE2_SIZE off;
	a->re = re_compile(pat, (size_t)sqlite3_value_bytes(pattern), lines, &code, &off);
	a->md = pcre2_match_data_create(1, NULL);
	a->mc = match_context();
	if (!a->re) {
		char msg[160];
		pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof(msg));
		sqlite3_result_error(ctx, msg, -1);
		aux_free(a);
		return NULL;
	}
	if (!a->md || !a->mc) {
		sqlite3_result_error_nomem(ctx);
		aux_free(a);
		return NULL;
	}
	*fresh = true;
	return a;
}

static void regexp_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	bool fresh;
	struct re_aux *a = aux_get(ctx, argv[0], sqlite3_user_data(ctx) != NULL, &fresh);
	if (!a)
		return;
	int r = 0;
	if (sqlite3_value_type(argv[1]) != SQLITE_NULL) {
		const unsigned char *s = sqlite3_value_text(argv[1]);
		r = re_search(a->re, a->md, a->mc, s, (size_t)sqlite3_value_bytes(argv[1]));
	}
	/* Kept after use: SQLite may free it at once. */
	if (fresh)
		sqlite3_set_auxdata(ctx, 0, a, aux_free);
	sqlite3_result_int(ctx, r);
}

static void body_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	bool fresh;
	struct re_aux *a = aux_get(ctx, argv[0], false, &fresh);
	if (!a)
		return;
	int r = 0;
	if (sqlite3_value_type(argv[1]) != SQLITE_NULL) {
		const uint8_t *raw = sqlite3_value_blob(argv[1]);
		size_t len = (size_t)sqlite3_value_bytes(argv[1]);
		const char *enc = (const char *)sqlite3_value_text(argv[2]);
		const uint8_t *p;
		size_t n;
		uint8_t *decoded;
		body_search_bytes(raw, len, enc, &p, &n, &decoded);
		r = n > 0 && re_search(a->re, a->md, a->mc, p, n);
		free(decoded);
	}
	if (fresh)
		sqlite3_set_auxdata(ctx, 0, a, aux_free);
	sqlite3_result_int(ctx, r);
}

int filter_sqlite_register(sqlite3 *db)
{
	static int lines = 1;
	const int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
	int rc = sqlite3_create_function_v2(db, "wgmitm_regexp", 2, flags, NULL, regexp_fn, NULL,
					    NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_create_function_v2(db, "wgmitm_regexp_lines", 2, flags, &lines,
						regexp_fn, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_create_function_v2(db, "wgmitm_body", 3, flags, NULL, body_fn, NULL,
						NULL, NULL);
	return rc;
}
