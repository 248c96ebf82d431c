/* The filter language (docs/filters.md): mitmproxy's filter expressions
 * plus what a tunnel knows (~peer, ~tls-rejected, ~passthrough). One parser
 * makes one tree; two back ends answer from it alike:
 * - filter_match, over struct flow_fields (live events);
 * - filter_to_sql, a WHERE clause over schema.h's tables (the store).
 *
 * The tree is simplified as it is built: ! is pushed down to the tests
 * (De Morgan; every test is true or false, never unknown, in both back
 * ends) and nested & or | of the same kind are merged.
 *
 * Regexes are PCRE2, searched (not anchored), case-insensitive for ASCII
 * letters, over the bytes (no UTF-8 mode unless the pattern asks with
 * (*UTF)); $ matches only at the very end, except for the header tests,
 * which are multiline ("name: value\n" per header, ^ and $ per line). A
 * regex needing more than FILTER_MATCH_LIMIT steps on one value counts as
 * not matching there. An absent value (NULL column) never matches, and !
 * of such a test is true. ~b, ~bq, ~bs search the body decoded by its
 * Content-Encoding (decode.h, FILTER_BODY_CAP): when it does not decode
 * completely, the bytes that did decode, else the body as recorded; an
 * empty or absent body matches nothing.
 *
 * The forms the store can answer from an index (schema.h), others scan:
 * - ~c CODE: status = ? (flows_status);
 * - ~tcp, ~udp, ~dns, ~http: type = '...' (flows_type);
 * - ~d ^literal$: host = ? (flows_host; host is stored lowercase);
 * - ~m ^literal$, ~peer ^literal$ (literals of printable ASCII with at
 *   most 10 letters): method / peer IN (each ASCII case variant)
 *   (flows_method, flows_peer);
 * - ~u, ~d and bare words whose regex must contain ASCII literal runs of 3
 *   or more characters ("example.com", "/api/v[0-9]+/users", "^https://"):
 *   the trigram index flow_fts narrows the rows (MATCH on those runs, which
 *   is case-insensitive like the regex), then the regex decides; when such
 *   tests are the filter or among its top-level &, filter_sql.driven lets
 *   the query walk flow_fts newest first and stop at a page.
 * A "literal" is plain characters and backslash-escaped punctuation ("\.").
 *
 * A filter is used by one thread at a time (it holds PCRE2 match data). */
#ifndef WGMITM_FLOWS_FILTER_H
#define WGMITM_FLOWS_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "flows/fields.h"
#include "flows/param.h"

/* Longer expressions are refused (bytes). */
#define FILTER_MAX_LEN 4096
/* Parentheses and ! nested deeper are refused. */
#define FILTER_MAX_NESTING 64
/* & inside | inside & ... (after simplification) deeper than this is
 * refused: SQLite's parser stack holds about this much. */
#define FILTER_MAX_DEPTH 16
/* PCRE2's match limit per value searched. */
#define FILTER_MATCH_LIMIT 1000000
/* Bodies are decoded up to this many bytes for ~b. */
#define FILTER_BODY_CAP (16u << 20)

struct filter;

/* column: 1-based, in characters (UTF-8 code points) of the text. */
struct filter_error {
	unsigned column;
	char message[256]; /* "column 5: ~c needs a status code, got \"abc\"" */
};

/* NULL on a syntax error (err filled) or no memory (column 0). */
struct filter *filter_parse(const char *text, struct filter_error *err);
void filter_free(struct filter *f);

/* Whether the flow matches. */
bool filter_match(const struct filter *f, const struct flow_fields *ff);

/* Whether some "http" flow of `peer` (NULL: none) to `host` (NULL:
 * unknown) could match: the tests of the host alone (~d) and of the peer
 * alone (~peer), ~all and the type tests are answered, every other test
 * may go either way. False only when no such flow can match. */
bool filter_may_match_host(const struct filter *f, const char *host, const char *peer);

/* The SQL form. `where` is an expression over the table `flows` (it names
 * its columns flows.<column>, so the query must not alias it) and, in
 * subqueries, `bodies` and `flow_fts`. It uses the functions of
 * filter_sqlite_register and the parameters ?1..?nparams, params[i] being
 * ?(i + 1): bind them with filter_sql_bind; number the query's own
 * parameters from nparams + 1, or name them.
 *
 * The store must fill the tables from struct flow_fields as schema.h says:
 * text columns with its strings as C strings (NULL stays NULL), req_headers
 * and resp_headers with flow_headers_text, a bodies row per body whose
 * flow_body_bytes are non-NULL with `encoding` the message's first
 * Content-Encoding header (flow_header), and flow_fts with url and host. */
/* fts_param and driven: when the filter is one test the trigram index can
 * narrow (a ~u, ~d or bare word with a literal, below), or such a test &
 * others, the number of that test's MATCH parameter and a WHERE clause
 * without its index lookup, for a query that walks flow_fts newest first
 * and stops at a page, however many flows match:
 *   SELECT ... FROM flow_fts CROSS JOIN flows ON flows.seq = flow_fts.rowid
 *   WHERE flow_fts MATCH ?<fts_param> AND flow_fts.rowid < ?<cursor>
 *     AND (<driven>) ORDER BY flow_fts.rowid DESC LIMIT 100
 * (`where` makes SQLite read every flow containing the literal first: fine
 * when few do, slow when most do). 0 and NULL otherwise. */
struct filter_sql {
	char *where;
	size_t nparams;
	struct flows_param *params; /* their text is the filter_sql's */
	size_t fts_param;
	char *driven;
};

/* 0, or -ENOMEM (out zeroed). */
int filter_to_sql(const struct filter *f, struct filter_sql *out);
void filter_sql_free(struct filter_sql *s);

/* Binds ?1..?nparams of `st`. An SQLite result code. */
int filter_sql_bind(sqlite3_stmt *st, const struct filter_sql *s);

/* Registers the SQL functions the WHERE clauses use on `db`:
 * wgmitm_regexp(pattern, text) and wgmitm_regexp_lines(pattern, text),
 * wgmitm_body(pattern, data, encoding), each 0 or 1 (0 for NULL text). An
 * SQLite result code. */
int filter_sqlite_register(sqlite3 *db);

#endif
