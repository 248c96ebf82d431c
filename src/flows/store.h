/* The flow store: HOME/flows.db, an SQLite copy of the flows file
 * (flowlog.h) with the columns and indexes of schema.h, for lists, filters
 * and search without reading the whole log.
 *
 * The log stays the record of truth. A writer thread tails it: it reads
 * the bytes past the offset it has ingested (pread), inserts each whole
 * line, and stores that offset in the same transaction as the rows, with
 * the log's identity (device, inode, first bytes). So start-up after a
 * crash is a catch-up from the stored offset, a log replaced or cut
 * shorter than the offset is detected and ingested again from its start
 * into emptied tables, and the event loop only ever calls store_notify.
 * A partial last line waits for the rest; a malformed line is counted and
 * skipped; a record whose id is already stored is skipped.
 *
 * Rows are committed every batch_ms (100) or batch_rows (5000), whichever
 * comes first; more than 4 MiB behind (catching up), every second or
 * 50,000 rows. The URL index follows when the log is quiet (it costs more
 * than the rows: capture keeps the CPU while traffic flows); queries test
 * the rows it does not have yet directly, so they see every committed row. Past max_size bytes or max_age seconds the oldest flows
 * (by seq) are evicted. A failed write (disk full, read-only file, ...)
 * is logged once, counted, and retried later; rows are never lost while
 * the log holds them.
 *
 * One writer per db: a second store_open on it (from any process) gets
 * -EBUSY, and should read with a store_reader instead.
 *
 * Readers (store_reader_*) each have their own connection and may run on
 * any thread (one reader per thread at a time), alongside the writer. */
#ifndef WGMITM_FLOWS_STORE_H
#define WGMITM_FLOWS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "flows/param.h"

#define STORE_FILE "flows.db"
#define STORE_DEFAULT_MAX_SIZE (2LL << 30)

struct store_options {
	int64_t max_size;       /* bytes of the db; 0: STORE_DEFAULT_MAX_SIZE; < 0: none */
	int64_t max_age;        /* seconds since a flow ended; 0: none */
	unsigned batch_rows;    /* rows per transaction at most; 0: 5000 */
	unsigned batch_ms;      /* how long new rows may wait for their commit; 0: 100 */
	bool rebuild;           /* empty the tables and ingest the log from its start */
	int64_t max_page_count; /* a hard cap on the db's pages (SQLITE_FULL past it); 0: none */
	/* How long the log must be quiet before the URL index (flow_fts)
	 * takes the new rows; 0: 250 ms; < 0: only at store_flush. Past
	 * 50,000 rows behind it takes them anyway. */
	int index_idle_ms;
	/* The writer at nice 19: it takes the CPU that capture leaves (the
	 * endpoint's choice). false: at the opener's priority. */
	bool background;
};

struct store;

/* Opens (creating it if needed) the db `db` — a directory means
 * DIR/flows.db — for the log at `log_path` (NULL: flows.jsonl next to the
 * db), and starts the writer thread, which catches up in the background.
 * A db of another FLOWS_SCHEMA_VERSION, or not a database, is made anew.
 * `opt` may be NULL. The log need not exist yet. Returns 0 and *out,
 * -EBUSY (another writer has the db), or -errno / -EIO. */
int store_open(struct store **out, const char *db, const char *log_path,
	       const struct store_options *opt) __attribute__((warn_unused_result));

/* New lines may be in the log. Never blocks on the disk (a flag under a
 * mutex the writer holds only to read it); safe from any thread. NULL is
 * a no-op. */
void store_notify(struct store *s);

/* Waits until everything in the log when called is committed (the URL
 * index and the limits applied). Returns 0, -ETIMEDOUT, or the error of the writer's
 * last attempt (it keeps retrying). timeout_ms < 0: no limit. NULL: 0. */
int store_flush(struct store *s, int timeout_ms);

/* Ingests what the log holds (for up to 2 s: the rest is caught up at the
 * next open), commits, stops the thread and closes the db. NULL is a
 * no-op. */
void store_close(struct store *s);

/* Counters. store_stats (writer, from memory, never touches the disk)
 * fills offset, malformed, duplicates, rows, evicted and errors;
 * store_reader_stats fills flows, db_bytes, oldest_us, newest_us, offset,
 * cleared, malformed and duplicates from the db. */
struct store_stats {
	int64_t flows;       /* rows in flows */
	int64_t db_bytes;    /* page_count * page_size */
	int64_t oldest_us;   /* start_us of the oldest flow by seq; 0: none */
	int64_t newest_us;   /* start_us of the newest */
	int64_t offset;      /* bytes of the log ingested and committed */
	int64_t cleared;     /* lines starting before this log offset were cleared */
	uint64_t malformed;  /* lines skipped as malformed (since the last rebuild) */
	uint64_t duplicates; /* records skipped as already stored */
	uint64_t rows;       /* writer: rows inserted since store_open */
	uint64_t evicted;    /* writer: rows evicted since store_open */
	uint64_t errors;     /* writer: failed write attempts since store_open */
};
void store_stats(struct store *s, struct store_stats *out);

/* ---- reading -------------------------------------------------------------- */

struct store_reader;

/* Opens an existing db (a directory means DIR/flows.db) for reading and
 * store_reader_clear. -ENOENT when there is none, -ESTALE when it has
 * another schema version (or is being made). */
int store_reader_open(struct store_reader **out, const char *db)
	__attribute__((warn_unused_result));
void store_reader_close(struct store_reader *r);

/* store_list and store_count calls that run longer than `ms` stop and
 * return -ETIMEDOUT (0: no limit, the default). */
void store_reader_set_timeout(struct store_reader *r, unsigned ms);

/* SQLite's message for the reader's last error ("" when none). */
const char *store_reader_errmsg(const struct store_reader *r);

/* The reader's connection, to register the SQL functions a where clause
 * calls (the filter language's). Only on the reader's thread. */
struct sqlite3;
struct sqlite3 *store_reader_sqlite(struct store_reader *r);

/* flags of a row */
#define STORE_PASSTHROUGH 0x1u
#define STORE_TLS_REJECTED 0x2u
#define STORE_WEBSOCKET 0x4u
#define STORE_HAS_RESPONSE 0x8u

/* A list row: the summary columns. Strings (NULL where the column is) are
 * valid during the callback only. */
struct store_row {
	int64_t seq;
	const char *id, *type;
	int64_t start_us, duration_us;
	const char *peer, *method;
	int status;
	const char *host, *url; /* host: "" when none */
	int64_t bytes_up, bytes_down;
	const char *proto;
	unsigned flags; /* STORE_* */
	const char *end_reason, *error;
	const char *via, *user, *replay_of; /* via: never NULL */
};

/* `where`: an SQL expression over flows' columns (NULL or "": every flow),
 * its parameters bound ?1..?n from params. It may use the trigram index,
 * e.g. "seq IN (SELECT rowid FROM flow_fts WHERE flow_fts MATCH ?1)", but
 * a substring every listed flow must have is faster as `match`: an FTS5
 * query over flow_fts (columns url, host), e.g. "url : \"/api/\"" (with
 * the trigram tokenizer a quoted string of 3 or more characters matches
 * as a substring). The index then gives the page in seq order (a page in
 * milliseconds at 1,000,000 flows, for rare and common substrings alike),
 * unless `where` is the narrower side, which is found out and used.
 * `where` must test what `match` asks for (match only narrows the rows
 * to test): the rows the index does not have yet are tested with `where`
 * alone. A match without a where clause is -EINVAL.
 * `cursor`: 0 for the first page, else the next_cursor of the previous
 * page. limit 0: 100, at most 10000. */
struct store_query {
	const char *where;
	const struct flows_param *params;
	size_t nparams;
	const char *match; /* NULL: none */
	int64_t cursor;
	unsigned limit;
	bool oldest_first; /* default: newest first (seq descending) */
};

/* Returns a nonzero value to stop the listing (store_list returns it). */
typedef int (*store_row_cb)(void *ctx, const struct store_row *row);

/* Calls cb for each row of one page, in seq order, and sets *next_cursor
 * (may be NULL) to the cursor of the following page, or 0 when this was
 * the last. Returns 0, cb's value, -EINVAL (the where clause or its
 * parameters do not compile, see store_reader_errmsg) or -EIO. */
int store_list(struct store_reader *r, const struct store_query *q, store_row_cb cb, void *ctx,
	       int64_t *next_cursor);

/* The number of flows `where` matches (NULL: all). */
int store_count(struct store_reader *r, const char *where, const struct flows_param *params,
		size_t nparams, int64_t *out);

/* Accounting: the traffic of the flows `where` matches (NULL: all),
 * grouped by device (peer), user, host or way in (via), biggest first:
 * connections are the tcp, udp and dns records, whose bytes (payload each
 * way) are summed; exchanges the http records, counted only (their body
 * bytes are inside their connection's). At most `limit` groups (0: 100,
 * at most 10000); a group whose key the records lack (no peer, no user) has
 * key NULL. cb as store_list's. 0, cb's value, -EINVAL or -EIO. */
enum store_group { STORE_BY_DEVICE, STORE_BY_USER, STORE_BY_HOST, STORE_BY_VIA };
struct store_usage {
	const char *key;
	int64_t connections, exchanges, bytes_up, bytes_down;
};
typedef int (*store_usage_cb)(void *ctx, const struct store_usage *u);
int store_usage(struct store_reader *r, enum store_group by, const char *where,
		const struct flows_param *params, size_t nparams, unsigned limit, store_usage_cb cb,
		void *ctx);

/* The number of flows of peer `peer` and the start of its newest one (0
 * when it has none): a range of the (peer, seq) index counted and its
 * last entry read, in one read transaction. 0, -ETIMEDOUT or -EIO. */
int store_peer_flows(struct store_reader *r, const char *peer, int64_t *count,
		     int64_t *last_start_us);

/* The position of flow `id` in the store, for a store_query cursor: a
 * listing newest first from cursor `seq` starts with the flow just older
 * than `id`, oldest first with the one just newer. 0, -ENOENT or -EIO. */
int store_seq(struct store_reader *r, const char *id, int64_t *seq);
/* The record `id` as logged, its bodies put back ({"text"} when the bytes
 * are UTF-8 without NUL, else {"base64"}, as flowlog writes them). *out is
 * a new reference. 0, -ENOENT or -EIO. */
int store_get(struct store_reader *r, const char *id, json_t **out);

/* The bytes of body `part` (0 request, 1 response) of flow `id`, still
 * content-encoded, and that Content-Encoding (NULL: none). *data (never
 * NULL on success, even when empty) and *encoding are the caller's to
 * free. 0, -ENOENT (no such flow or body) or -EIO. */
int store_body(struct store_reader *r, const char *id, int part, uint8_t **data, size_t *len,
	       char **encoding);

/* Deletes every flow. The log is kept, so the lines logged up to now
 * (including those the writer has not reached) stay cleared: neither
 * catch-up nor a rebuild from the same log brings them back. */
int store_reader_clear(struct store_reader *r);

int store_reader_stats(struct store_reader *r, struct store_stats *out);

#endif
