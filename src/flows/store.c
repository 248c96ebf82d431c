/* The flow store: a writer thread tailing flows.jsonl into SQLite, and
 * readers on their own connections. */
#include "flows/store.h"
#include "flows/filter.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "common/log.h"
#include "flows/fields.h"
#include "flows/flowlog.h"
#include "flows/recscan.h"
#include "flows/schema.h"

#define DEFAULT_BATCH_ROWS 5000
#define DEFAULT_BATCH_MS 100
#define READ_CHUNK (1u << 20)
/* A line and its newline; longer ones are no record flowlog writes. */
#define MAX_BUF ((size_t)FLOWLOG_MAX_LINE + 1)
/* Bytes of the first line kept as the log's identity: its id (random per
 * run) and start time are in them. */
#define HEAD_LEN 256
#define POLL_MS 1000      /* a wake without notify: another process's lines, age */
#define CHECK_MS 500      /* how often the log's path and head are checked */
#define AGE_CHECK_MS 1000 /* how often max_age is applied */
#define EVICT_MAX 5000    /* rows per eviction transaction */
#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 30000
#define BUSY_MS 5000
#define CATCHUP_BEHIND (4 << 20) /* log bytes not yet read */
#define CATCHUP_MS 1000
#define CATCHUP_ROWS 50000
#define DRAIN_MS 2000      /* what store_close waits for the log's rest */
#define INDEX_IDLE_MS 250  /* a quiet log: the URL index takes the new rows */
#define INDEX_CHUNK 2000   /* rows per URL index transaction */
#define INDEX_BEHIND 50000 /* rows the URL index may lag under load */

/* ---- small helpers ------------------------------------------------------- */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t real_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int errno_of(int sqlite_rc)
{
	switch (sqlite_rc & 0xff) {
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CANTOPEN:
		return -EACCES;
	case SQLITE_INTERRUPT:
		return -ETIMEDOUT; /* only a reader's time limit interrupts */
	case SQLITE_ERROR:
	case SQLITE_RANGE:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* `path` made absolute (the thread and readers may not share the cwd),
 * with "/name" appended when it is a directory and name is not NULL. */
static char *abs_path(const char *path, const char *name)
{
	struct stat st;
	char *out = NULL;
	char cwd[PATH_MAX];
	const char *prefix = "";
	if (path[0] != '/') {
		if (!getcwd(cwd, sizeof(cwd)))
			return NULL;
		prefix = cwd;
	}
	bool dir = name && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
	if (asprintf(&out, "%s%s%s%s%s", prefix, prefix[0] ? "/" : "", path, dir ? "/" : "",
		     dir ? name : "") < 0)
		return NULL;
	return out;
}

static char *sibling(const char *path, const char *name)
{
	const char *slash = strrchr(path, '/');
	char *out = NULL;
	int n = slash ? (int)(slash - path) : 0;
	if (asprintf(&out, "%.*s/%s", n, path, name) < 0)
		return NULL;
	return out;
}

/* One value of a one-row query: 0, 1 when it gave no row or NULL, or
 * -(SQLite's code). */
static int query_int(sqlite3 *db, const char *sql, int64_t arg, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return -rc;
	if (sqlite3_bind_parameter_count(st) > 0)
		sqlite3_bind_int64(st, 1, arg);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*out = sqlite3_column_int64(st, 0);
		rc = 0;
	} else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
		rc = 1;
	} else {
		rc = -rc;
	}
	sqlite3_finalize(st);
	return rc;
}

/* A meta value, as query_int. */
static int meta_get(sqlite3 *db, const char *key, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?1", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return -rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? 1 : -rc;
	}
	sqlite3_finalize(st);
	return rc;
}

/* ---- the writer ---------------------------------------------------------- */

enum {
	ST_INSERT,
	ST_FTS_INDEX,
	ST_BODY,
	ST_META,
	ST_CLEARED,
	ST_FTS_DELETE,
	ST_BODIES_DELETE,
	ST_FLOWS_DELETE,
	ST_OLDEST_N,
	ST_NEWEST_BELOW,
	ST_YOUNG,
	ST_PAGES,
	ST_FREE,
	ST_N
};

static const char *const stmt_sql[ST_N] = {
	[ST_INSERT] =
		("INSERT OR IGNORE INTO flows (seq, id, type, start_us, end_us, duration_us,"
		 " peer, client, server, conn, host, method, url, status, req_ctype, resp_ctype,"
		 " req_headers, resp_headers, bytes_up, bytes_down, proto, passthrough,"
		 " tls_rejected, websocket, has_response, end_reason, error, record, via, user,"
		 " replay_of)"
		 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
		 " ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30,"
		 " ?31)"),
	[ST_FTS_INDEX] = ("INSERT INTO flow_fts (rowid, url, host)"
			  " SELECT seq, url, host FROM flows WHERE seq > ?1 AND seq <= ?2"),
	[ST_BODY] = "INSERT INTO bodies (seq, part, encoding, data) VALUES (?1, ?2, ?3, ?4)",
	[ST_META] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
	[ST_CLEARED] = "SELECT value FROM meta WHERE key = 'cleared'",
	[ST_FTS_DELETE] = ("INSERT INTO flow_fts (flow_fts, rowid, url, host)"
			   " SELECT 'delete', seq, url, host FROM flows WHERE seq <= ?1"),
	[ST_BODIES_DELETE] = "DELETE FROM bodies WHERE seq <= ?1",
	[ST_FLOWS_DELETE] = "DELETE FROM flows WHERE seq <= ?1",
	[ST_OLDEST_N] = "SELECT seq FROM flows WHERE seq < ?1 ORDER BY seq LIMIT 1 OFFSET ?2",
	[ST_NEWEST_BELOW] = "SELECT max(seq) FROM flows WHERE seq < ?1",
	[ST_YOUNG] = "SELECT seq FROM flows WHERE end_us >= ?1 ORDER BY seq LIMIT 1",
	[ST_PAGES] = "PRAGMA page_count",
	[ST_FREE] = "PRAGMA freelist_count",
};

struct store {
	char *db_path, *log_path;
	int lock_fd;
	sqlite3 *db;
	int64_t max_size, max_age;
	unsigned batch_rows, batch_ms;
	int index_idle_ms;
	bool rebuild;
	bool background;
	pthread_t thread;

	pthread_mutex_t mu;
	pthread_cond_t wake, flushed;
	atomic_bool pending; /* set by store_notify */
	bool stop;
	atomic_int_fast64_t stop_at; /* store_close: stop reading then; 0: not closing */
	uint64_t flush_req, flush_done;
	int flush_rc;

	/* The thread's own. */
	sqlite3_stmt *st[ST_N];
	int fd;        /* the log, -1 until it exists */
	dev_t cur_dev; /* of fd */
	ino_t cur_ino;
	dev_t dev; /* of the log the rows come from; 0/0: none yet */
	ino_t ino;
	unsigned char head[HEAD_LEN];
	size_t head_len;      /* 0: not known yet */
	int64_t offset;       /* committed: the log bytes the rows stand for */
	int64_t next_seq;     /* committed */
	int64_t fts_seq;      /* committed: flow_fts has every row up to it */
	int64_t last_read_ms; /* when log bytes last came */
	uint64_t malformed, duplicates;
	int64_t cleared;
	char *buf;
	size_t cap, len;
	int64_t pos;      /* log offset of buf[0] */
	int64_t done;     /* log offset past the last line handled */
	bool skipping;    /* inside a line longer than MAX_BUF */
	int64_t log_size; /* at the last check */
	bool txn, txn_catchup;
	int64_t txn_deadline;
	unsigned txn_lines;
	int64_t txn_seq; /* next_seq within the transaction */
	uint64_t txn_malformed, txn_duplicates, txn_rows;
	bool warned_malformed;
	bool failing;
	unsigned backoff_ms;
	int64_t retry_at;
	int64_t last_check, last_age;
	int64_t page_size;
	bool wrote; /* committed since the limits were last applied */
	char errmsg[256];
	struct rec_scan scan;

	/* For store_stats. */
	atomic_int_fast64_t a_offset;
	atomic_uint_fast64_t a_malformed, a_duplicates, a_rows, a_evicted, a_errors;
};

/* Records an SQLite failure of `what` and returns it as -errno. */
static int sq_fail(struct store *s, int rc, const char *what)
{
	snprintf(s->errmsg, sizeof(s->errmsg), "%s: %s", what, sqlite3_errmsg(s->db));
	return errno_of(rc);
}

static sqlite3_stmt *stmt(struct store *s, int i)
{
	if (!s->st[i] && sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
					    &s->st[i], NULL) != SQLITE_OK) {
		snprintf(s->errmsg, sizeof(s->errmsg), "prepare: %s", sqlite3_errmsg(s->db));
		return NULL;
	}
	sqlite3_reset(s->st[i]);
	sqlite3_clear_bindings(s->st[i]);
	return s->st[i];
}

static void finalize_all(struct store *s)
{
	for (int i = 0; i < ST_N; i++) {
		sqlite3_finalize(s->st[i]);
		s->st[i] = NULL;
	}
}

static int exec(struct store *s, const char *sql)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : sq_fail(s, rc, sql);
}

/* Runs a statement without rows to completion. */
static int run(struct store *s, sqlite3_stmt *st, const char *what)
{
	if (!st)
		return -EIO;
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		rc = sq_fail(s, rc, what);
		sqlite3_reset(st);
		return rc;
	}
	sqlite3_reset(st);
	return 0;
}

/* A one-integer statement: 0 and *out, 1 when it gave no row or NULL. */
static int one(struct store *s, sqlite3_stmt *st, int64_t *out, const char *what)
{
	if (!st)
		return -EIO;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*out = sqlite3_column_int64(st, 0);
		rc = 0;
	} else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
		rc = 1;
	} else {
		rc = sq_fail(s, rc, what);
	}
	sqlite3_reset(st);
	return rc;
}

static int meta_set(struct store *s, const char *key, int64_t v)
{
	sqlite3_stmt *st = stmt(s, ST_META);
	if (!st)
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, v);
	return run(s, st, "meta");
}

static int meta_set_blob(struct store *s, const char *key, const void *p, size_t n)
{
	sqlite3_stmt *st = stmt(s, ST_META);
	if (!st)
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, n ? p : "", (int)n, SQLITE_STATIC);
	return run(s, st, "meta");
}

/* The position the rows stand for, as one transaction commits it. */
static int write_meta(struct store *s, int64_t offset)
{
	int rc = meta_set(s, "offset", offset);
	if (!rc)
		rc = meta_set(s, "next_seq", s->txn_seq);
	if (!rc)
		rc = meta_set(s, "malformed", (int64_t)(s->malformed + s->txn_malformed));
	if (!rc)
		rc = meta_set(s, "duplicates", (int64_t)(s->duplicates + s->txn_duplicates));
	if (!rc)
		rc = meta_set(s, "log_dev", (int64_t)s->dev);
	if (!rc)
		rc = meta_set(s, "log_ino", (int64_t)s->ino);
	if (!rc)
		rc = meta_set_blob(s, "log_head", s->head, s->head_len);
	return rc;
}

static int begin(struct store *s)
{
	if (s->txn)
		return 0;
	int rc = exec(s, "BEGIN IMMEDIATE");
	if (rc)
		return rc;
	s->txn = true;
	/* Far behind (a catch-up, a rebuild): bigger transactions, which
	 * write about half as much; new flows still show within a second. */
	s->txn_catchup = s->log_size - s->done > CATCHUP_BEHIND;
	s->txn_deadline = mono_ms() + (s->txn_catchup ? CATCHUP_MS : s->batch_ms);
	s->txn_lines = 0;
	s->txn_seq = s->next_seq;
	s->txn_malformed = s->txn_duplicates = s->txn_rows = 0;
	/* A reader may have cleared up to a point past what is ingested. */
	int64_t cleared = 0;
	rc = one(s, stmt(s, ST_CLEARED), &cleared, "cleared");
	if (rc < 0)
		return rc;
	s->cleared = cleared;
	return 0;
}

static int commit(struct store *s)
{
	if (!s->txn)
		return 0;
	int rc = write_meta(s, s->done);
	if (!rc)
		rc = exec(s, "COMMIT");
	if (rc)
		return rc;
	s->txn = false;
	s->offset = s->done;
	s->next_seq = s->txn_seq;
	s->malformed += s->txn_malformed;
	s->duplicates += s->txn_duplicates;
	s->wrote = true;
	atomic_store(&s->a_offset, s->offset);
	atomic_store(&s->a_malformed, s->malformed);
	atomic_store(&s->a_duplicates, s->duplicates);
	atomic_fetch_add(&s->a_rows, s->txn_rows);
	if (s->failing) {
		log_info("flow store: writing %s again", s->db_path);
		s->failing = false;
	}
	return 0;
}

/* Back to the last commit: its rows and offset stand, the rest is read
 * again. */
static void rollback(struct store *s)
{
	if (s->txn || !sqlite3_get_autocommit(s->db))
		(void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	s->txn = false;
	s->pos = s->done = s->offset;
	s->len = 0;
	s->skipping = false;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static int insert(struct store *s, const struct rec_scan *rs)
{
	const struct flow_fields *f = &rs->f;
	sqlite3_stmt *st = stmt(s, ST_INSERT);
	if (!st)
		return -EIO;
	int64_t seq = s->txn_seq;
	int64_t dur = f->start_us && f->end_us > f->start_us ? f->end_us - f->start_us : 0;
	sqlite3_bind_int64(st, 1, seq);
	bind_text(st, 2, f->id);
	bind_text(st, 3, f->type);
	sqlite3_bind_int64(st, 4, f->start_us);
	sqlite3_bind_int64(st, 5, f->end_us);
	sqlite3_bind_int64(st, 6, dur);
	bind_text(st, 7, f->peer);
	bind_text(st, 8, f->client);
	bind_text(st, 9, f->server);
	bind_text(st, 10, f->conn);
	bind_text(st, 11, f->host);
	bind_text(st, 12, f->method);
	bind_text(st, 13, f->url);
	sqlite3_bind_int(st, 14, f->status);
	bind_text(st, 15, f->req_ctype);
	bind_text(st, 16, f->resp_ctype);
	for (int i = 0; i < 2; i++) {
		if (rs->headers[i])
			sqlite3_bind_text(st, 17 + i, rs->headers[i], (int)rs->headers_len[i],
					  SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 17 + i);
	}
	sqlite3_bind_int64(st, 19, f->bytes_up);
	sqlite3_bind_int64(st, 20, f->bytes_down);
	bind_text(st, 21, f->proto);
	sqlite3_bind_int(st, 22, f->passthrough);
	sqlite3_bind_int(st, 23, f->tls_rejected);
	sqlite3_bind_int(st, 24, f->websocket);
	sqlite3_bind_int(st, 25, f->has_response);
	bind_text(st, 26, f->end_reason);
	bind_text(st, 27, f->error);
	sqlite3_bind_text(st, 28, rs->record, (int)rs->record_len, SQLITE_STATIC);
	bind_text(st, 29, f->via);
	bind_text(st, 30, f->user);
	bind_text(st, 31, f->replay_of);
	int rc = run(s, st, "insert flow");
	if (rc)
		return rc;
	if (sqlite3_changes(s->db) == 0) {
		s->txn_duplicates++;
		return 0;
	}
	for (int i = 0; i < 2; i++) {
		const struct rec_body *b = &rs->body[i];
		if (!b->present)
			continue;
		if (!(st = stmt(s, ST_BODY)))
			return -EIO;
		sqlite3_bind_int64(st, 1, seq);
		sqlite3_bind_int(st, 2, i);
		bind_text(st, 3, b->encoding);
		if (b->len)
			sqlite3_bind_blob(st, 4, b->data, (int)b->len, SQLITE_STATIC);
		else
			sqlite3_bind_zeroblob(st, 4, 0);
		if ((rc = run(s, st, "insert body")))
			return rc;
	}
	s->txn_seq++;
	s->txn_rows++;
	return 0;
}

/* One whole line (without its newline) starting at log offset `at`. */
static int line(struct store *s, const char *p, size_t n, int64_t at)
{
	if (at == 0 && s->head_len == 0) {
		s->head_len = n + 1 < HEAD_LEN ? n + 1 : HEAD_LEN;
		memcpy(s->head, p, s->head_len);
	}
	if (at < s->cleared || n == 0)
		return 0;
	int rc = rec_scan(&s->scan, p, n);
	if (rc == -1) {
		s->txn_malformed++;
		if (!s->warned_malformed) {
			log_warn("flow store: %s: skipping a malformed line at byte %lld",
				 s->log_path, (long long)at);
			s->warned_malformed = true;
		}
		return 0;
	}
	return rc ? rc : insert(s, &s->scan);
}

/* The whole lines in buf. */
static int lines(struct store *s)
{
	char *p = s->buf, *end = s->buf + s->len, *nl;
	int rc = 0;
	while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
		if ((rc = begin(s)))
			break;
		if (s->skipping) {
			s->skipping = false;
			s->txn_malformed++;
		} else if ((rc = line(s, p, (size_t)(nl - p), s->pos + (p - s->buf)))) {
			break;
		}
		p = nl + 1;
		s->done = s->pos + (p - s->buf);
		if (++s->txn_lines >= (s->txn_catchup ? CATCHUP_ROWS : s->batch_rows) ||
		    mono_ms() >= s->txn_deadline) {
			if ((rc = commit(s)))
				break;
		}
	}
	if (rc)
		return rc;
	size_t used = (size_t)(p - s->buf);
	memmove(s->buf, p, s->len - used);
	s->len -= used;
	s->pos += (int64_t)used;
	if (s->cap > READ_CHUNK && s->len < READ_CHUNK / 2) {
		char *nb = realloc(s->buf, READ_CHUNK);
		if (nb) {
			s->buf = nb;
			s->cap = READ_CHUNK;
		}
	}
	return 0;
}

/* Reads the log from where it was left to its end. */
static int ingest(struct store *s)
{
	if (s->fd < 0)
		return 0;
	for (;;) {
		if (s->len == s->cap) {
			if (s->cap < MAX_BUF) {
				size_t cap = s->cap * 2 < MAX_BUF ? s->cap * 2 : MAX_BUF;
				char *nb = realloc(s->buf, cap);
				if (!nb)
					return -ENOMEM;
				s->buf = nb;
				s->cap = cap;
			} else {
				/* No record is this long: drop it up to its end. */
				s->skipping = true;
				s->pos += (int64_t)s->len;
				s->len = 0;
			}
		}
		ssize_t n = pread(s->fd, s->buf + s->len, s->cap - s->len, s->pos + (off_t)s->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(s->errmsg, sizeof(s->errmsg), "read %s: %s", s->log_path,
				 strerror(errno));
			return -errno;
		}
		if (n == 0)
			return 0;
		s->last_read_ms = mono_ms();
		s->len += (size_t)n;
		int rc = lines(s);
		if (rc)
			return rc;
		int64_t stop_at = atomic_load(&s->stop_at);
		if (stop_at && mono_ms() >= stop_at && s->log_size > s->done) {
			log_info("flow store: closing with %lld bytes of %s to ingest at the next "
				 "start",
				 (long long)(s->log_size - s->done), s->log_path);
			return 0;
		}
	}
}

/* Empty tables, offset 0: what a replaced log or a rebuild starts from.
 * The clear mark stays when the log is the same one. */
static int reset_tables(struct store *s, bool same_log, const char *why)
{
	log_info("flow store: %s; ingesting %s from its start", why, s->log_path);
	rollback(s);
	finalize_all(s);
	int64_t cleared = 0;
	int rc = exec(s, "BEGIN IMMEDIATE");
	if (!rc && same_log) {
		int q = meta_get(s->db, "cleared", &cleared);
		if (q < 0)
			rc = sq_fail(s, -q, "cleared");
	}
	if (!rc)
		rc = exec(s, "DROP TABLE IF EXISTS flow_fts; DROP TABLE IF EXISTS bodies;"
			     " DROP TABLE IF EXISTS flows;" FLOWS_SCHEMA_SQL);
	if (rc) {
		rollback(s);
		return rc;
	}
	/* write_meta writes from s; all of it is put back if this fails. */
	dev_t dev = s->dev;
	ino_t ino = s->ino;
	size_t head_len = s->head_len;
	uint64_t malformed = s->malformed, duplicates = s->duplicates;
	s->txn = true;
	s->txn_seq = s->next_seq;
	s->txn_malformed = s->txn_duplicates = s->txn_rows = 0;
	s->malformed = s->duplicates = 0;
	s->dev = s->cur_dev;
	s->ino = s->cur_ino;
	s->head_len = 0;
	rc = write_meta(s, 0);
	if (!rc)
		rc = meta_set(s, "cleared", cleared);
	/* No row below next_seq is left. */
	if (!rc)
		rc = meta_set(s, "fts_seq", s->next_seq - 1);
	if (!rc)
		rc = exec(s, "COMMIT");
	s->txn = false;
	if (rc) {
		s->dev = dev;
		s->ino = ino;
		s->head_len = head_len;
		s->malformed = malformed;
		s->duplicates = duplicates;
		rollback(s);
		return rc;
	}
	s->offset = s->pos = s->done = 0;
	s->len = 0;
	s->skipping = false;
	s->cleared = cleared;
	s->fts_seq = s->next_seq - 1;
	atomic_store(&s->a_offset, 0);
	atomic_store(&s->a_malformed, 0);
	atomic_store(&s->a_duplicates, 0);
	(void)exec(s, "PRAGMA incremental_vacuum");
	return 0;
}

static int open_log(struct store *s)
{
	int fd = open(s->log_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 1 : -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	if (s->fd >= 0)
		close(s->fd);
	s->fd = fd;
	s->cur_dev = st.st_dev;
	s->cur_ino = st.st_ino;
	return 0;
}

/* Is the log still the one the rows come from, and not shorter? */
static int check_log(struct store *s, bool full)
{
	int64_t now = mono_ms();
	int rc;
	if (s->fd < 0) {
		rc = open_log(s);
		if (rc)
			return rc > 0 ? 0 : rc;
		full = true;
	} else if (full || now - s->last_check >= CHECK_MS) {
		struct stat pst;
		/* Renamed over or removed and made again: follow the path.
		 * Removed only: keep reading what is left. */
		if (stat(s->log_path, &pst) == 0 &&
		    (pst.st_dev != s->cur_dev || pst.st_ino != s->cur_ino)) {
			rc = open_log(s);
			if (rc < 0)
				return rc;
		}
		full = true;
	}
	if (full)
		s->last_check = now;
	if (s->dev == 0 && s->ino == 0 && s->offset == 0 && !s->txn) {
		s->dev = s->cur_dev;
		s->ino = s->cur_ino;
	}
	struct stat st;
	if (fstat(s->fd, &st) < 0)
		return -errno;
	const char *why = NULL;
	if (s->cur_dev != s->dev || s->cur_ino != s->ino)
		why = "the flows file was replaced";
	else if (st.st_size < s->done)
		why = "the flows file is shorter than what was ingested";
	else if (full && s->head_len && st.st_size >= (off_t)s->head_len) {
		unsigned char head[HEAD_LEN];
		ssize_t n = pread(s->fd, head, s->head_len, 0);
		if (n == (ssize_t)s->head_len && memcmp(head, s->head, s->head_len) != 0)
			why = "the flows file was rewritten";
	}
	s->log_size = st.st_size;
	if (why)
		return reset_tables(s, false, why);
	return 0;
}

/* Deletes the oldest flows below seq `below`, at most `rows`, in one
 * transaction. The number deleted, or -errno. */
/* Ends a BEGIN IMMEDIATE of evict or index_urls: COMMIT when rc is 0,
 * else (or when COMMIT fails) ROLLBACK. Returns rc or COMMIT's error. */
static int end_txn(struct store *s, int rc)
{
	if (!rc)
		rc = exec(s, "COMMIT");
	if (rc)
		(void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

static int64_t evict(struct store *s, int64_t below, int64_t rows)
{
	sqlite3_stmt *st = stmt(s, ST_OLDEST_N);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, below);
	sqlite3_bind_int64(st, 2, rows - 1);
	int64_t hi;
	int rc = one(s, st, &hi, "evict");
	if (rc == 1) {
		st = stmt(s, ST_NEWEST_BELOW);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, below);
		rc = one(s, st, &hi, "evict");
	}
	if (rc)
		return rc < 0 ? rc : 0;
	if ((rc = exec(s, "BEGIN IMMEDIATE")))
		return rc;
	static const int order[] = { ST_FTS_DELETE, ST_BODIES_DELETE, ST_FLOWS_DELETE };
	int64_t n = 0;
	for (size_t i = 0; i < 3 && !rc; i++) {
		st = stmt(s, order[i]);
		if (!st) {
			rc = -EIO;
			break;
		}
		/* flow_fts holds (and may be told to delete) only what it took. */
		sqlite3_bind_int64(st, 1,
				   order[i] == ST_FTS_DELETE && hi > s->fts_seq ? s->fts_seq : hi);
		rc = run(s, st, "evict");
		n = sqlite3_changes(s->db);
	}
	if (!rc && hi > s->fts_seq)
		rc = meta_set(s, "fts_seq", hi);
	if ((rc = end_txn(s, rc)))
		return rc;
	if (hi > s->fts_seq)
		s->fts_seq = hi;
	atomic_fetch_add(&s->a_evicted, (uint64_t)n);
	return n;
}

static int db_pages(struct store *s, int64_t *used, int64_t *free_pages)
{
	int64_t pages = 0, fl = 0;
	int rc = one(s, stmt(s, ST_PAGES), &pages, "page_count");
	if (rc >= 0)
		rc = one(s, stmt(s, ST_FREE), &fl, "freelist_count");
	if (rc < 0)
		return rc;
	*used = pages - fl;
	*free_pages = fl;
	return 0;
}

/* max_size: past it, evict the oldest flows, as many as should bring the
 * pages in use a tenth under it (so eviction runs in rounds, not at every
 * commit), then again while still over it. Deleting from the trigram
 * index first adds delete markers, which a merge step folds away. */
static int limit_size(struct store *s)
{
	int64_t used, fl, page = s->page_size;
	int rc = db_pages(s, &used, &fl);
	if (rc)
		return rc;
	int64_t max_pages = s->max_size / page;
	if (used > max_pages) {
		int64_t target = max_pages - max_pages / 10, count = 0;
		rc = query_int(s->db, "SELECT count(*) FROM flows", 0, &count);
		if (rc < 0)
			return sq_fail(s, -rc, "count");
		for (int round = 0; used > max_pages && count > 0 && round < 64; round++) {
			int64_t want = count * (used - target) / used + 1;
			while (want > 0) {
				int64_t n =
					evict(s, INT64_MAX, want < EVICT_MAX ? want : EVICT_MAX);
				if (n < 0)
					return (int)n;
				if (n == 0)
					break;
				count -= n;
				want -= n;
			}
			if ((rc = exec(s, "INSERT INTO flow_fts (flow_fts, rank) VALUES ('merge', -"
					  "2000)")) ||
			    (rc = db_pages(s, &used, &fl)))
				return rc;
		}
	}
	/* Freed pages go back to the file system once they add up. */
	if (fl > 0 && (fl * page >= (4 << 20) || fl * page >= s->max_size / 32))
		return exec(s, "PRAGMA incremental_vacuum");
	return 0;
}

static int limit_age(struct store *s)
{
	sqlite3_stmt *st = stmt(s, ST_YOUNG);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, real_us() - s->max_age * 1000000);
	int64_t below = INT64_MAX;
	int rc = one(s, st, &below, "age");
	if (rc < 0)
		return rc;
	bool any = false;
	int64_t n;
	while ((n = evict(s, below, EVICT_MAX)) > 0)
		any = true;
	if (n < 0)
		return (int)n;
	return any ? exec(s, "PRAGMA incremental_vacuum") : 0;
}

static int limits(struct store *s, bool force)
{
	int rc = 0;
	if (s->max_size > 0 && (s->wrote || force))
		rc = limit_size(s);
	s->wrote = false;
	int64_t now = mono_ms();
	if (!rc && s->max_age > 0 && (force || now - s->last_age >= AGE_CHECK_MS)) {
		s->last_age = now;
		rc = limit_age(s);
	}
	return rc;
}

static void fail(struct store *s, int rc)
{
	rollback(s);
	atomic_fetch_add(&s->a_errors, 1);
	if (!s->errmsg[0])
		snprintf(s->errmsg, sizeof(s->errmsg), "%s", strerror(-rc));
	if (!s->failing) {
		log_warn("flow store: cannot write %s (%s); capture goes on, retrying", s->db_path,
			 s->errmsg);
		s->failing = true;
		s->backoff_ms = RETRY_MIN_MS;
	} else if (s->backoff_ms < RETRY_MAX_MS) {
		s->backoff_ms *= 2;
	}
	s->retry_at = mono_ms() + s->backoff_ms;
}

/* One pass: the log checked, read to its end, due rows committed, the
 * limits applied. */
/* Gives the URL index the committed rows it lacks, INDEX_CHUNK a
 * transaction; unless `all`, it stops when new lines wait (storing them
 * comes first) or the store closes. */
static int index_urls(struct store *s, bool all)
{
	while (s->fts_seq < s->next_seq - 1) {
		if (!all && (atomic_load(&s->pending) || atomic_load(&s->stop_at)))
			return 0;
		int64_t hi = s->fts_seq + INDEX_CHUNK;
		if (hi > s->next_seq - 1)
			hi = s->next_seq - 1;
		int rc = exec(s, "BEGIN IMMEDIATE");
		if (rc)
			return rc;
		sqlite3_stmt *st = stmt(s, ST_FTS_INDEX);
		if (!st) {
			rc = -EIO;
		} else {
			sqlite3_bind_int64(st, 1, s->fts_seq);
			sqlite3_bind_int64(st, 2, hi);
			rc = run(s, st, "index urls");
		}
		if (!rc)
			rc = meta_set(s, "fts_seq", hi);
		if ((rc = end_txn(s, rc)))
			return rc;
		s->fts_seq = hi;
		s->wrote = true;
	}
	return 0;
}

/* When the URL index should take new rows: the log quiet long enough,
 * too many rows behind, or a flush. */
static bool index_due(struct store *s, bool flush)
{
	int64_t behind = s->next_seq - 1 - s->fts_seq;
	if (behind <= 0 || s->txn)
		return false;
	return flush || behind >= INDEX_BEHIND ||
	       (s->index_idle_ms >= 0 && mono_ms() - s->last_read_ms >= s->index_idle_ms);
}

static int pass(struct store *s, bool first, bool force, bool flush)
{
	s->errmsg[0] = '\0';
	int rc = 0;
	if (s->rebuild) {
		/* The log's identity, for the emptied tables. */
		if (s->fd < 0)
			(void)open_log(s);
		rc = reset_tables(s, true, "rebuilding the flow store");
		if (!rc)
			s->rebuild = false;
	}
	if (!rc)
		rc = check_log(s, first || force);
	if (!rc)
		rc = ingest(s);
	if (!rc && s->txn && (force || mono_ms() >= s->txn_deadline))
		rc = commit(s);
	if (!rc && index_due(s, flush))
		rc = index_urls(s, flush);
	if (!rc && !s->txn)
		rc = limits(s, force);
	if (rc)
		fail(s, rc);
	return rc;
}

static void deadline_ts(struct timespec *ts, int64_t at_ms)
{
	ts->tv_sec = at_ms / 1000;
	ts->tv_nsec = (at_ms % 1000) * 1000000;
}

static void *writer_main(void *arg)
{
	struct store *s = arg;
	bool first = true;
	/* The store is an index of the log: it takes the CPU that capture
	 * leaves. Under a load that fills every core it falls behind and
	 * catches up once the load eases; the log has every record meanwhile.
	 * Nice 19 rather than SCHED_IDLE: a share small enough not to slow
	 * capture, yet never none (several busy processes starved it). */
	if (s->background)
		(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	(void)pthread_setname_np(pthread_self(), "wgmitm-store");
	for (;;) {
		pthread_mutex_lock(&s->mu);
		while (!first && !s->stop && s->flush_req == s->flush_done) {
			int64_t now = mono_ms(), wake = now + POLL_MS;
			if (s->failing) {
				if (now >= s->retry_at)
					break;
				wake = s->retry_at;
			} else {
				if (atomic_load(&s->pending))
					break;
				if (s->txn) {
					if (now >= s->txn_deadline)
						break;
					if (s->txn_deadline < wake)
						wake = s->txn_deadline;
				} else if (s->fts_seq < s->next_seq - 1 && s->index_idle_ms >= 0) {
					int64_t at = s->last_read_ms + s->index_idle_ms;
					if (now >= at)
						break;
					if (at < wake)
						wake = at;
				}
			}
			struct timespec ts;
			deadline_ts(&ts, wake);
			if (pthread_cond_timedwait(&s->wake, &s->mu, &ts) == ETIMEDOUT)
				break;
		}
		bool stop = s->stop;
		uint64_t req = s->flush_req;
		bool flush = req != s->flush_done;
		atomic_store(&s->pending, false);
		pthread_mutex_unlock(&s->mu);

		int rc = pass(s, first, flush || stop, flush && !stop);
		first = false;
		if (flush) {
			pthread_mutex_lock(&s->mu);
			s->flush_done = req;
			s->flush_rc = rc;
			pthread_cond_broadcast(&s->flushed);
			pthread_mutex_unlock(&s->mu);
		}
		if (stop)
			break;
	}
	return NULL;
}

/* ---- opening ------------------------------------------------------------- */

static void unlink_db(const char *path)
{
	char *p;
	unlink(path);
	if (asprintf(&p, "%s-wal", path) >= 0) {
		unlink(p);
		free(p);
	}
	if (asprintf(&p, "%s-shm", path) >= 0) {
		unlink(p);
		free(p);
	}
}

/* 0: ready; 1: of another version or not a database (make it anew);
 * else -errno. */
static int init_db(struct store *s)
{
	sqlite3 *db = s->db;
	sqlite3_busy_timeout(db, BUSY_MS);
	/* Before the first table, or they stay as they are. A record is 1 to
	 * 3 KB: with 16 KiB pages a commit writes a quarter as many WAL frames
	 * (pwrite calls) as with 4 KiB for the same rows, and the writer took
	 * 25-40% less cpu per row (bench_flows_store --live). */
	int rc = sqlite3_exec(db, "PRAGMA page_size = 16384; PRAGMA auto_vacuum = INCREMENTAL",
			      NULL, NULL, NULL);
	if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT)
		return 1;
	if (rc != SQLITE_OK)
		return sq_fail(s, rc, "auto_vacuum");
	int64_t tables = 0;
	rc = query_int(db, "SELECT count(*) FROM sqlite_master", 0, &tables);
	if (rc == -SQLITE_NOTADB || rc == -SQLITE_CORRUPT)
		return 1;
	if (rc < 0)
		return sq_fail(s, -rc, "sqlite_master");
	if (tables > 0) {
		int64_t version = 0;
		/* SQLITE_ERROR: no meta table. */
		rc = meta_get(db, "version", &version);
		if (rc == -SQLITE_NOTADB || rc == -SQLITE_CORRUPT || rc == -SQLITE_ERROR ||
		    rc == 1 || (rc == 0 && version != FLOWS_SCHEMA_VERSION))
			return 1;
		if (rc < 0)
			return sq_fail(s, -rc, "version");
	}
	/* A 64 MiB WAL (4096 pages of 16 KiB) before a checkpoint: index pages
	 * that several commits change are copied into the db once (a catch-up
	 * of 400,000 flows wrote 17% less). */
	rc = sqlite3_exec(db,
			  "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
			  " PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 4096;"
			  " PRAGMA journal_size_limit = 67108864;",
			  NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return sq_fail(s, rc, "pragmas");
	if (tables == 0) {
		char sql[128];
		snprintf(sql, sizeof(sql),
			 "INSERT INTO meta VALUES ('version', %d); INSERT INTO meta VALUES"
			 " ('fts_seq', 0);",
			 FLOWS_SCHEMA_VERSION);
		rc = sqlite3_exec(db, "BEGIN IMMEDIATE;" FLOWS_SCHEMA_SQL, NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			rc = sq_fail(s, rc, "schema");
			(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return rc;
		}
	}
	return 0;
}

/* The flows are the user's browsing: the db (and its WAL and shm files,
 * which SQLite makes with the db's mode) are the user's alone. No fd on
 * an existing db is opened and closed here: that would drop the POSIX
 * locks SQLite holds on it for readers in this process. */
static int private_file(struct store *s)
{
	int fd = open(s->db_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	struct stat st;
	if (errno != EEXIST || stat(s->db_path, &st) < 0 ||
	    ((st.st_mode & 077) && chmod(s->db_path, 0600) < 0)) {
		snprintf(s->errmsg, sizeof(s->errmsg), "%s", strerror(errno));
		return -errno;
	}
	return 0;
}

static int open_db(struct store *s)
{
	for (int attempt = 0;; attempt++) {
		int rc = private_file(s);
		if (rc)
			return rc;
		rc = sqlite3_open_v2(
			s->db_path, &s->db,
			SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
		if (rc == SQLITE_OK)
			rc = init_db(s);
		else
			rc = sq_fail(s, rc, "open");
		if (rc == 0)
			return 0;
		sqlite3_close(s->db);
		s->db = NULL;
		if (rc < 0 || attempt > 0)
			return rc < 0 ? rc : -EIO;
		log_info("flow store: %s is of another version; making it anew", s->db_path);
		unlink_db(s->db_path);
	}
}

static int load_meta(struct store *s)
{
	int64_t v;
	if (meta_get(s->db, "offset", &v) == 0)
		s->offset = v;
	if (meta_get(s->db, "next_seq", &v) == 0)
		s->next_seq = v;
	if (meta_get(s->db, "fts_seq", &v) == 0)
		s->fts_seq = v;
	if (meta_get(s->db, "malformed", &v) == 0)
		s->malformed = (uint64_t)v;
	if (meta_get(s->db, "duplicates", &v) == 0)
		s->duplicates = (uint64_t)v;
	if (meta_get(s->db, "cleared", &v) == 0)
		s->cleared = v;
	if (meta_get(s->db, "log_dev", &v) == 0)
		s->dev = (dev_t)v;
	if (meta_get(s->db, "log_ino", &v) == 0)
		s->ino = (ino_t)v;
	int64_t max = 0;
	int rc = query_int(s->db, "SELECT max(seq) FROM flows", 0, &max);
	if (rc < 0)
		return sq_fail(s, -rc, "max(seq)");
	if (query_int(s->db, "PRAGMA page_size", 0, &s->page_size) != 0 || s->page_size <= 0)
		s->page_size = 4096;
	if (s->next_seq <= max)
		s->next_seq = max + 1;
	if (s->next_seq < 1)
		s->next_seq = 1;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'log_head'", -1, &st,
			       NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW) {
			int n = sqlite3_column_bytes(st, 0);
			const void *p = sqlite3_column_blob(st, 0);
			if (p && n > 0 && n <= HEAD_LEN) {
				memcpy(s->head, p, (size_t)n);
				s->head_len = (size_t)n;
			}
		}
		sqlite3_finalize(st);
	}
	s->pos = s->done = s->offset;
	atomic_store(&s->a_offset, s->offset);
	atomic_store(&s->a_malformed, s->malformed);
	atomic_store(&s->a_duplicates, s->duplicates);
	/* Where readers find the log, for store_reader_clear. */
	sqlite3_stmt *ins;
	rc = sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO meta VALUES ('log_path', ?1)", -1,
				&ins, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(ins, 1, s->log_path, -1, SQLITE_STATIC);
		rc = sqlite3_step(ins) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
		sqlite3_finalize(ins);
	}
	return rc == SQLITE_OK ? 0 : sq_fail(s, rc, "log_path");
}

static void free_store(struct store *s)
{
	finalize_all(s);
	if (s->db)
		sqlite3_close(s->db);
	if (s->fd >= 0)
		close(s->fd);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	rec_scan_free(&s->scan);
	free(s->buf);
	free(s->db_path);
	free(s->log_path);
	free(s);
}

int store_open(struct store **out, const char *db, const char *log_path,
	       const struct store_options *opt)
{
	static const struct store_options defaults = { 0 };
	*out = NULL;
	if (!opt)
		opt = &defaults;
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = s->lock_fd = -1;
	s->db_path = abs_path(db, STORE_FILE);
	if (log_path)
		s->log_path = abs_path(log_path, NULL);
	else if (s->db_path)
		s->log_path = sibling(s->db_path, FLOWLOG_FILE);
	s->cap = READ_CHUNK;
	s->buf = malloc(s->cap);
	if (!s->db_path || !s->log_path || !s->buf) {
		free_store(s);
		return -ENOMEM;
	}
	s->max_size = opt->max_size ? opt->max_size : STORE_DEFAULT_MAX_SIZE;
	s->max_age = opt->max_age > 0 ? opt->max_age : 0;
	s->batch_rows = opt->batch_rows ? opt->batch_rows : DEFAULT_BATCH_ROWS;
	s->batch_ms = opt->batch_ms ? opt->batch_ms : DEFAULT_BATCH_MS;
	s->rebuild = opt->rebuild;
	s->background = opt->background;
	s->index_idle_ms = opt->index_idle_ms ? opt->index_idle_ms : INDEX_IDLE_MS;

	/* SQLite's own locks are per transaction; this one is per writer. */
	char *lock = NULL;
	int rc = asprintf(&lock, "%s.lock", s->db_path) < 0 ? -ENOMEM : 0;
	if (!rc) {
		s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (s->lock_fd < 0)
			rc = -errno;
		else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0)
			rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
	}
	free(lock);
	if (!rc) {
		rc = open_db(s);
		if (rc)
			log_warn("flow store: cannot open %s (%s)", s->db_path, s->errmsg);
	}
	if (!rc)
		rc = load_meta(s);
	if (!rc && opt->max_page_count > 0) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld",
			 (long long)opt->max_page_count);
		rc = exec(s, sql);
	}
	if (rc) {
		free_store(s);
		return rc;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->wake, &ca);
	pthread_cond_init(&s->flushed, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&s->thread, NULL, writer_main, s);
	if (rc) {
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->wake);
		pthread_cond_destroy(&s->flushed);
		free_store(s);
		return -rc;
	}
	*out = s;
	return 0;
}

void store_notify(struct store *s)
{
	if (!s || atomic_exchange(&s->pending, true))
		return;
	pthread_mutex_lock(&s->mu);
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->mu);
}

int store_flush(struct store *s, int timeout_ms)
{
	if (!s)
		return 0;
	int64_t until = mono_ms() + timeout_ms;
	pthread_mutex_lock(&s->mu);
	uint64_t mine = ++s->flush_req;
	pthread_cond_signal(&s->wake);
	int rc = 0;
	while (s->flush_done < mine) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&s->flushed, &s->mu);
			continue;
		}
		struct timespec ts;
		deadline_ts(&ts, until);
		if (pthread_cond_timedwait(&s->flushed, &s->mu, &ts) == ETIMEDOUT &&
		    s->flush_done < mine) {
			rc = -ETIMEDOUT;
			break;
		}
	}
	if (!rc)
		rc = s->flush_rc;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	atomic_store(&s->stop_at, mono_ms() + DRAIN_MS);
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->wake);
	pthread_cond_destroy(&s->flushed);
	free_store(s);
}

void store_stats(struct store *s, struct store_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!s)
		return;
	out->offset = atomic_load(&s->a_offset);
	out->malformed = atomic_load(&s->a_malformed);
	out->duplicates = atomic_load(&s->a_duplicates);
	out->rows = atomic_load(&s->a_rows);
	out->evicted = atomic_load(&s->a_evicted);
	out->errors = atomic_load(&s->a_errors);
}

/* ---- reading ------------------------------------------------------------- */

struct store_reader {
	sqlite3 *db;
	char errmsg[256];
	unsigned timeout_ms; /* 0: none */
	uint64_t deadline_ns;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* SQLite calls this every few thousand steps: nonzero interrupts. */
static int r_progress(void *arg)
{
	const struct store_reader *r = arg;
	return r->deadline_ns && mono_ns() > r->deadline_ns;
}

/* The time limit starts over for each call of the reading API. */
static void r_arm(struct store_reader *r)
{
	r->deadline_ns = r->timeout_ms ? mono_ns() + (uint64_t)r->timeout_ms * 1000000u : 0;
}

void store_reader_set_timeout(struct store_reader *r, unsigned ms)
{
	r->timeout_ms = ms;
	sqlite3_progress_handler(r->db, ms ? 4096 : 0, ms ? r_progress : NULL, r);
}

static int r_fail(struct store_reader *r, int rc)
{
	snprintf(r->errmsg, sizeof(r->errmsg), "%s", sqlite3_errmsg(r->db));
	return errno_of(rc);
}

int store_reader_open(struct store_reader **out, const char *db)
{
	*out = NULL;
	char *path = abs_path(db, STORE_FILE);
	if (!path)
		return -ENOMEM;
	struct stat st;
	if (stat(path, &st) < 0) {
		int rc = -errno;
		free(path);
		return rc;
	}
	struct store_reader *r = calloc(1, sizeof(*r));
	if (!r) {
		free(path);
		return -ENOMEM;
	}
	int rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	free(path);
	if (rc != SQLITE_OK) {
		rc = errno_of(rc);
		store_reader_close(r);
		return rc;
	}
	sqlite3_busy_timeout(r->db, BUSY_MS);
	/* The functions the filter language's WHERE clauses call. */
	if (filter_sqlite_register(r->db) != SQLITE_OK) {
		store_reader_close(r);
		return -ENOMEM;
	}
	int64_t version = 0;
	rc = meta_get(r->db, "version", &version);
	if (rc != 0 || version != FLOWS_SCHEMA_VERSION) {
		/* SQLITE_ERROR: no meta table yet. */
		rc = rc < 0 && rc != -SQLITE_ERROR ? errno_of(-rc) : -ESTALE;
		store_reader_close(r);
		return rc;
	}
	/* Reads only, but for store_reader_clear: a where clause cannot write. */
	(void)sqlite3_exec(r->db, "PRAGMA query_only = 1", NULL, NULL, NULL);
	*out = r;
	return 0;
}

void store_reader_close(struct store_reader *r)
{
	if (!r)
		return;
	sqlite3_close(r->db);
	free(r);
}

const char *store_reader_errmsg(const struct store_reader *r)
{
	return r->errmsg;
}

sqlite3 *store_reader_sqlite(struct store_reader *r)
{
	return r->db;
}

/* Prepares `sql` (one statement) and binds the where clause's parameters,
 * expecting `extra` more of its own. */
static int prepare_where(struct store_reader *r, const char *sql, const struct flows_param *params,
			 size_t nparams, int extra, sqlite3_stmt **out)
{
	const char *tail;
	int rc = sqlite3_prepare_v2(r->db, sql, -1, out, &tail);
	if (rc != SQLITE_OK)
		return r_fail(r, rc);
	tail += strspn(tail, " \t\n;");
	if (*tail || sqlite3_bind_parameter_count(*out) != (int)nparams + extra) {
		snprintf(r->errmsg, sizeof(r->errmsg),
			 *tail ? "more than one statement" : "the where clause wants %d parameters",
			 sqlite3_bind_parameter_count(*out) - extra);
		sqlite3_finalize(*out);
		*out = NULL;
		return -EINVAL;
	}
	for (size_t i = 0; i < nparams; i++) {
		if (params[i].type == FLOWS_PARAM_INT)
			rc = sqlite3_bind_int64(*out, (int)i + 1, params[i].i);
		else
			rc = sqlite3_bind_text(*out, (int)i + 1, params[i].text, -1, SQLITE_STATIC);
		if (rc != SQLITE_OK) {
			rc = r_fail(r, rc);
			sqlite3_finalize(*out);
			*out = NULL;
			return rc;
		}
	}
	return 0;
}

/* The where clause alone: it compiles, is one expression, and numbers its
 * parameters within ?1..?n (the statements number theirs after n). */
static int check_where(struct store_reader *r, const char *where, size_t nparams)
{
	char *sql;
	if (asprintf(&sql, "SELECT 1 FROM flows WHERE (%s)", where) < 0)
		return -ENOMEM;
	sqlite3_stmt *st;
	const char *tail;
	int rc = sqlite3_prepare_v2(r->db, sql, -1, &st, &tail);
	if (rc != SQLITE_OK) {
		free(sql);
		return r_fail(r, rc);
	}
	int wants = sqlite3_bind_parameter_count(st);
	tail += strspn(tail, " \t\n;");
	bool more = *tail; /* tail points into sql */
	free(sql);
	rc = 0;
	if (more || wants > (int)nparams) {
		snprintf(r->errmsg, sizeof(r->errmsg),
			 more ? "more than one statement"
			      : "the where clause wants %d parameters, %zu given",
			 wants, nparams);
		rc = -EINVAL;
	}
	sqlite3_finalize(st);
	return rc;
}

#define ROW_COLUMNS                                                                                \
	"flows.seq, flows.id, flows.type, flows.start_us, flows.duration_us, flows.peer,"          \
	" flows.method, flows.status, flows.host, flows.url, flows.bytes_up, flows.bytes_down,"    \
	" flows.proto, flows.passthrough, flows.tls_rejected, flows.websocket,"                    \
	" flows.has_response, flows.end_reason, flows.error, flows.via, flows.user,"               \
	" flows.replay_of"

/* A match and a where clause: candidates of the trigram index examined
 * before the where clause is taken as the narrower side. */
#define MATCH_BUDGET 4096

static bool nonblank(const char *s)
{
	return s && s[strspn(s, " \t\n")];
}

/* With both a match and a where clause, which drives the page: the
 * trigram index in seq order (its rows checked against the where clause)
 * is right unless MATCH_BUDGET of them give less than a page, and then
 * the where clause's rows (each checked against the index) are. */
static int fts_drives(struct store_reader *r, const struct store_query *q, int64_t cursor,
		      unsigned limit, bool *fts)
{
	const char *op = q->oldest_first ? ">" : "<", *dir = q->oldest_first ? "ASC" : "DESC";
	size_t n = q->nparams;
	char *sql;
	if (asprintf(&sql,
		     "SELECT CASE WHEN (%s) THEN 1 ELSE 0 END FROM (SELECT rowid AS m_seq"
		     " FROM flow_fts WHERE flow_fts MATCH ?%zu AND rowid %s ?%zu"
		     " ORDER BY rowid %s LIMIT ?%zu) JOIN flows ON flows.seq = m_seq",
		     q->where, n + 1, op, n + 2, dir, n + 3) < 0)
		return -ENOMEM;
	sqlite3_stmt *st;
	int rc = prepare_where(r, sql, q->params, n, 3, &st);
	free(sql);
	if (rc)
		return rc;
	sqlite3_bind_text(st, (int)n + 1, q->match, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, (int)n + 2, cursor);
	sqlite3_bind_int64(st, (int)n + 3, MATCH_BUDGET);
	unsigned seen = 0, hits = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		seen++;
		hits += (unsigned)sqlite3_column_int(st, 0);
		if (hits > limit)
			break;
	}
	*fts = hits > limit || seen < MATCH_BUDGET;
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : r_fail(r, rc);
	sqlite3_finalize(st);
	return rc;
}

static int r_exec(struct store_reader *r, const char *sql)
{
	int rc = sqlite3_exec(r->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : r_fail(r, rc);
}

/* Steps a prepared page query, calling cb for each row; *rows and *last
 * carry across the statements of one page. 1 when the page is full and
 * one more row exists (*next_cursor set), 0 when done, cb's nonzero value
 * as 2 + (its value stored in *stop), or -errno. */
static int emit(struct store_reader *r, sqlite3_stmt *st, unsigned limit, unsigned *rows,
		int64_t *last, int64_t *next_cursor, store_row_cb cb, void *ctx, int *stop)
{
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*rows == limit) {
			if (next_cursor)
				*next_cursor = *last;
			return 1;
		}
		struct store_row row = {
			.seq = sqlite3_column_int64(st, 0),
			.id = (const char *)sqlite3_column_text(st, 1),
			.type = (const char *)sqlite3_column_text(st, 2),
			.start_us = sqlite3_column_int64(st, 3),
			.duration_us = sqlite3_column_int64(st, 4),
			.peer = (const char *)sqlite3_column_text(st, 5),
			.method = (const char *)sqlite3_column_text(st, 6),
			.status = sqlite3_column_int(st, 7),
			.host = (const char *)sqlite3_column_text(st, 8),
			.url = (const char *)sqlite3_column_text(st, 9),
			.bytes_up = sqlite3_column_int64(st, 10),
			.bytes_down = sqlite3_column_int64(st, 11),
			.proto = (const char *)sqlite3_column_text(st, 12),
			.flags = (sqlite3_column_int(st, 13) ? STORE_PASSTHROUGH : 0) |
				 (sqlite3_column_int(st, 14) ? STORE_TLS_REJECTED : 0) |
				 (sqlite3_column_int(st, 15) ? STORE_WEBSOCKET : 0) |
				 (sqlite3_column_int(st, 16) ? STORE_HAS_RESPONSE : 0),
			.end_reason = (const char *)sqlite3_column_text(st, 17),
			.error = (const char *)sqlite3_column_text(st, 18),
			.via = (const char *)sqlite3_column_text(st, 19),
			.user = (const char *)sqlite3_column_text(st, 20),
			.replay_of = (const char *)sqlite3_column_text(st, 21),
		};
		*last = row.seq;
		(*rows)++;
		if ((*stop = cb(ctx, &row)))
			return 2;
	}
	return rc == SQLITE_DONE ? 0 : r_fail(r, rc);
}

int store_list(struct store_reader *r, const struct store_query *q, store_row_cb cb, void *ctx,
	       int64_t *next_cursor)
{
	r->errmsg[0] = '\0';
	r_arm(r);
	/* next_cursor may be &q->cursor. */
	int64_t cursor = q->cursor ? q->cursor : q->oldest_first ? 0 : INT64_MAX;
	if (next_cursor)
		*next_cursor = 0;
	unsigned limit = q->limit ? q->limit : 100;
	if (limit > 10000)
		limit = 10000;
	bool where = nonblank(q->where), match = nonblank(q->match), fts = match;
	if (match && !where) {
		snprintf(r->errmsg, sizeof(r->errmsg),
			 "a match needs a where clause that tests it");
		return -EINVAL;
	}
	int rc;
	if (where && (rc = check_where(r, q->where, q->nparams)))
		return rc;
	/* One snapshot for the index's extent and the rows. */
	bool own_txn = sqlite3_get_autocommit(r->db);
	if (own_txn && (rc = r_exec(r, "BEGIN")))
		return rc;
	if (match && (rc = fts_drives(r, q, cursor, limit, &fts)))
		goto out;
	const char *op = q->oldest_first ? ">" : "<", *dir = q->oldest_first ? "ASC" : "DESC";
	/* Ours follow the where clause's ?1..?n, whatever the order in the text. */
	size_t n = q->nparams, p_match = n + 1, p_cursor = n + 1 + match, p_limit = p_cursor + 1;
	/* The index drives: the rows it has not taken yet are a segment of
	 * their own, tested by the where clause (newest first, they come
	 * first). */
	char *sql[2] = { NULL, NULL };
	int nsql = 1;
	if (fts) {
		char *idx, *tail;
		if (asprintf(&idx,
			     "SELECT " ROW_COLUMNS " FROM (SELECT rowid AS m_seq FROM flow_fts"
			     " WHERE flow_fts MATCH ?%zu AND rowid %s ?%zu ORDER BY rowid %s)"
			     " JOIN flows ON flows.seq = m_seq WHERE (%s) ORDER BY m_seq %s LIMIT "
			     "?%zu",
			     p_match, op, p_cursor, dir, q->where, dir, p_limit) < 0)
			idx = NULL;
		if (asprintf(&tail,
			     "SELECT " ROW_COLUMNS
			     " FROM flows WHERE (%s) AND flows.seq > " FLOWS_FTS_SEQ_SQL
			     " AND flows.seq %s ?%zu ORDER BY flows.seq %s LIMIT ?%zu",
			     q->where, op, p_cursor, dir, p_limit) < 0)
			tail = NULL;
		sql[0] = q->oldest_first ? idx : tail;
		sql[1] = q->oldest_first ? tail : idx;
		nsql = 2;
		rc = idx && tail ? 0 : -1;
	} else if (match) {
		rc = asprintf(
			&sql[0],
			"SELECT " ROW_COLUMNS " FROM flows WHERE (%s) AND flows.seq %s ?%zu AND"
			" (flows.seq > " FLOWS_FTS_SEQ_SQL " OR EXISTS (SELECT 1 FROM flow_fts"
			" WHERE flow_fts MATCH ?%zu AND rowid = flows.seq))"
			" ORDER BY flows.seq %s LIMIT ?%zu",
			q->where, op, p_cursor, p_match, dir, p_limit);
	} else {
		rc = asprintf(&sql[0],
			      "SELECT " ROW_COLUMNS " FROM flows WHERE %s%s%s flows.seq %s ?%zu"
			      " ORDER BY flows.seq %s LIMIT ?%zu",
			      where ? "(" : "", where ? q->where : "", where ? ") AND" : "", op,
			      p_cursor, dir, p_limit);
	}
	if (rc < 0) {
		free(sql[0]);
		free(sql[1]);
		rc = -ENOMEM;
		goto out;
	}
	unsigned rows = 0;
	int64_t last = 0;
	int stop = 0;
	rc = 0;
	for (int i = 0; i < nsql && rc == 0; i++) {
		sqlite3_stmt *st;
		if ((rc = prepare_where(r, sql[i], q->params, n, match ? 3 : 2, &st)))
			break;
		if (match)
			sqlite3_bind_text(st, (int)p_match, q->match, -1, SQLITE_STATIC);
		/* The second segment goes on from the first's last row. */
		sqlite3_bind_int64(st, (int)p_cursor, rows ? last : cursor);
		/* One more than the page: whether there is a next one. */
		sqlite3_bind_int64(st, (int)p_limit, (int64_t)(limit - rows) + 1);
		rc = emit(r, st, limit, &rows, &last, next_cursor, cb, ctx, &stop);
		sqlite3_finalize(st);
	}
	free(sql[0]);
	free(sql[1]);
	if (rc == 2)
		rc = stop;
	else if (rc == 1)
		rc = 0;
out:
	if (own_txn)
		(void)sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
	return rc;
}

int store_count(struct store_reader *r, const char *where, const struct flows_param *params,
		size_t nparams, int64_t *out)
{
	r->errmsg[0] = '\0';
	r_arm(r);
	*out = 0;
	bool w = nonblank(where);
	char *sql;
	if (asprintf(&sql, "SELECT count(*) FROM flows%s%s%s", w ? " WHERE (" : "", w ? where : "",
		     w ? ")" : "") < 0)
		return -ENOMEM;
	sqlite3_stmt *st;
	int rc = prepare_where(r, sql, params, nparams, 0, &st);
	free(sql);
	if (rc)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = 0;
	} else {
		rc = r_fail(r, rc);
	}
	sqlite3_finalize(st);
	return rc;
}

int store_usage(struct store_reader *r, enum store_group by, const char *where,
		const struct flows_param *params, size_t nparams, unsigned limit, store_usage_cb cb,
		void *ctx)
{
	static const char *const col[] = {
		[STORE_BY_DEVICE] = "peer",
		[STORE_BY_USER] = "user",
		[STORE_BY_HOST] = "host",
		[STORE_BY_VIA] = "via",
	};
	if ((unsigned)by >= sizeof(col) / sizeof(col[0]))
		return -EINVAL;
	if (limit == 0)
		limit = 100;
	if (limit > 10000)
		limit = 10000;
	r->errmsg[0] = '\0';
	r_arm(r);
	bool w = nonblank(where);
	char *sql;
	if (asprintf(&sql,
		     "SELECT %s,"
		     " count(*) FILTER (WHERE type IN ('tcp', 'udp', 'dns')),"
		     " count(*) FILTER (WHERE type = 'http'),"
		     " coalesce(sum(bytes_up) FILTER (WHERE type IN ('tcp', 'udp', 'dns')), 0),"
		     " coalesce(sum(bytes_down) FILTER (WHERE type IN ('tcp', 'udp', 'dns')), 0)"
		     " FROM flows%s%s%s GROUP BY 1 ORDER BY 4 + 5 DESC, 2 DESC LIMIT %u",
		     col[by], w ? " WHERE (" : "", w ? where : "", w ? ")" : "", limit) < 0)
		return -ENOMEM;
	sqlite3_stmt *st;
	int rc = prepare_where(r, sql, params, nparams, 0, &st);
	free(sql);
	if (rc)
		return rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_usage u = {
			.key = (const char *)sqlite3_column_text(st, 0),
			.connections = sqlite3_column_int64(st, 1),
			.exchanges = sqlite3_column_int64(st, 2),
			.bytes_up = sqlite3_column_int64(st, 3),
			.bytes_down = sqlite3_column_int64(st, 4),
		};
		int stop = cb(ctx, &u);
		if (stop) {
			sqlite3_finalize(st);
			return stop;
		}
	}
	rc = rc == SQLITE_DONE ? 0 : r_fail(r, rc);
	sqlite3_finalize(st);
	return rc;
}

int store_peer_flows(struct store_reader *r, const char *peer, int64_t *count,
		     int64_t *last_start_us)
{
	/* Both SEARCH flows USING (COVERING) INDEX flows_peer (peer=?). */
	static const char *const sql[2] = {
		"SELECT count(*) FROM flows WHERE peer = ?1",
		"SELECT start_us FROM flows WHERE peer = ?1 ORDER BY seq DESC LIMIT 1",
	};
	int64_t *out[2] = { count, last_start_us };
	r->errmsg[0] = '\0';
	*count = 0;
	*last_start_us = 0;
	r_arm(r);
	int rc = r_exec(r, "BEGIN");
	for (int i = 0; i < 2 && rc == 0; i++) {
		sqlite3_stmt *st = NULL;
		int e = sqlite3_prepare_v2(r->db, sql[i], -1, &st, NULL);
		if (e == SQLITE_OK)
			e = sqlite3_bind_text(st, 1, peer, -1, SQLITE_STATIC);
		if (e == SQLITE_OK) {
			e = sqlite3_step(st);
			if (e == SQLITE_ROW)
				*out[i] = sqlite3_column_int64(st, 0);
			if (e == SQLITE_ROW || e == SQLITE_DONE)
				e = SQLITE_OK;
		}
		if (e != SQLITE_OK)
			rc = r_fail(r, e);
		sqlite3_finalize(st);
	}
	(void)sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
	return rc;
}

/* A body as flowlog writes it: text when it can be, else base64. */
static json_t *body_value(const uint8_t *p, size_t n, const char **key)
{
	json_t *v = NULL;
	if (!memchr(p, 0, n))
		v = json_stringn((const char *)p, n);
	if (v) {
		*key = "text";
		return v;
	}
	size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(cap);
	if (!b64)
		return NULL;
	sodium_bin2base64(b64, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
	v = json_string(b64);
	free(b64);
	*key = "base64";
	return v;
}

/* Puts a body back first in its BODY object, where flowlog writes it. */
static int restore_body(json_t *rec, int part, const uint8_t *p, size_t n)
{
	json_t *msg = json_object_get(rec, part ? "response" : "request");
	json_t *body = json_object_get(msg, "body");
	if (!json_is_object(body))
		return 0;
	const char *key;
	json_t *v = body_value(p ? p : (const uint8_t *)"", n, &key);
	json_t *nb = json_object();
	if (!v || !nb || json_object_set_new(nb, key, v) || json_object_update(nb, body) ||
	    json_object_set_new(msg, "body", nb)) {
		json_decref(nb);
		return -ENOMEM;
	}
	return 0;
}

int store_seq(struct store_reader *r, const char *id, int64_t *seq)
{
	r->errmsg[0] = '\0';
	*seq = 0;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(r->db, "SELECT seq FROM flows WHERE id = ?1", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return r_fail(r, rc);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*seq = sqlite3_column_int64(st, 0);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : r_fail(r, rc);
	}
	sqlite3_finalize(st);
	return rc;
}

int store_get(struct store_reader *r, const char *id, json_t **out)
{
	r->errmsg[0] = '\0';
	*out = NULL;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(r->db,
				    "SELECT f.record, b.part, b.data FROM flows f"
				    " LEFT JOIN bodies b ON b.seq = f.seq WHERE f.id = ?1"
				    " ORDER BY b.part",
				    -1, &st, NULL);
	if (rc != SQLITE_OK)
		return r_fail(r, rc);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	json_t *rec = NULL;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (!rec) {
			const char *text = (const char *)sqlite3_column_text(st, 0);
			rec = json_loadb(text ? text : "", (size_t)sqlite3_column_bytes(st, 0),
					 JSON_ALLOW_NUL, NULL);
			if (!rec) {
				snprintf(r->errmsg, sizeof(r->errmsg), "record %s does not parse",
					 id);
				sqlite3_finalize(st);
				return -EIO;
			}
		}
		if (sqlite3_column_type(st, 1) == SQLITE_NULL)
			continue;
		if (restore_body(rec, sqlite3_column_int(st, 1), sqlite3_column_blob(st, 2),
				 (size_t)sqlite3_column_bytes(st, 2))) {
			json_decref(rec);
			sqlite3_finalize(st);
			return -ENOMEM;
		}
	}
	rc = rc == SQLITE_DONE ? 0 : r_fail(r, rc);
	sqlite3_finalize(st);
	if (rc) {
		json_decref(rec);
		return rc;
	}
	if (!rec)
		return -ENOENT;
	*out = rec;
	return 0;
}

int store_body(struct store_reader *r, const char *id, int part, uint8_t **data, size_t *len,
	       char **encoding)
{
	r->errmsg[0] = '\0';
	*data = NULL;
	*len = 0;
	*encoding = NULL;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(r->db,
				    "SELECT b.encoding, b.data FROM flows f JOIN bodies b"
				    " ON b.seq = f.seq WHERE f.id = ?1 AND b.part = ?2",
				    -1, &st, NULL);
	if (rc != SQLITE_OK)
		return r_fail(r, rc);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, part);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *enc = (const char *)sqlite3_column_text(st, 0);
		const void *p = sqlite3_column_blob(st, 1);
		size_t n = (size_t)sqlite3_column_bytes(st, 1);
		*data = malloc(n ? n : 1);
		*encoding = enc ? strdup(enc) : NULL;
		if (!*data || (enc && !*encoding)) {
			free(*data);
			free(*encoding);
			*data = NULL;
			*encoding = NULL;
			rc = -ENOMEM;
		} else {
			if (n)
				memcpy(*data, p, n);
			*len = n;
			rc = 0;
		}
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : r_fail(r, rc);
	}
	sqlite3_finalize(st);
	return rc;
}

int store_reader_clear(struct store_reader *r)
{
	r->errmsg[0] = '\0';
	int rc = r_exec(r, "PRAGMA query_only = 0");
	if (!rc)
		rc = r_exec(r, "BEGIN IMMEDIATE");
	if (rc)
		goto out;
	int64_t offset = 0, cleared = 0, dev = 0, ino = 0;
	(void)meta_get(r->db, "offset", &offset);
	(void)meta_get(r->db, "cleared", &cleared);
	(void)meta_get(r->db, "log_dev", &dev);
	(void)meta_get(r->db, "log_ino", &ino);
	int64_t mark = offset > cleared ? offset : cleared;
	/* What is logged but not yet ingested is cleared too. */
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db, "SELECT value FROM meta WHERE key = 'log_path'", -1, &st,
			       NULL) == SQLITE_OK) {
		struct stat ls;
		const char *path = NULL;
		if (sqlite3_step(st) == SQLITE_ROW)
			path = (const char *)sqlite3_column_text(st, 0);
		if (path && stat(path, &ls) == 0 &&
		    ((dev == 0 && ino == 0) ||
		     ((int64_t)ls.st_dev == dev && (int64_t)ls.st_ino == ino)) &&
		    ls.st_size > mark)
			mark = ls.st_size;
		sqlite3_finalize(st);
	}
	char sql[96];
	snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO meta VALUES ('cleared', %lld)",
		 (long long)mark);
	rc = r_exec(r, "DELETE FROM flows; DELETE FROM bodies;"
		       " INSERT INTO flow_fts (flow_fts) VALUES ('delete-all');");
	if (!rc)
		rc = r_exec(r, sql);
	if (!rc)
		rc = r_exec(r, "COMMIT");
	if (rc)
		(void)sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
	else
		(void)r_exec(r, "PRAGMA incremental_vacuum");
out:
	(void)sqlite3_exec(r->db, "PRAGMA query_only = 1", NULL, NULL, NULL);
	return rc;
}

int store_reader_stats(struct store_reader *r, struct store_stats *out)
{
	r->errmsg[0] = '\0';
	memset(out, 0, sizeof(*out));
	int rc = r_exec(r, "BEGIN");
	if (rc)
		return rc;
	int64_t pages = 0, page = 0, v;
	int q = query_int(r->db, "SELECT count(*) FROM flows", 0, &out->flows);
	if (q >= 0)
		q = query_int(r->db, "PRAGMA page_count", 0, &pages);
	if (q >= 0)
		q = query_int(r->db, "PRAGMA page_size", 0, &page);
	if (q >= 0)
		q = query_int(r->db, "SELECT start_us FROM flows ORDER BY seq LIMIT 1", 0,
			      &out->oldest_us);
	if (q >= 0)
		q = query_int(r->db, "SELECT start_us FROM flows ORDER BY seq DESC LIMIT 1", 0,
			      &out->newest_us);
	if (q < 0)
		rc = r_fail(r, -q);
	out->db_bytes = pages * page;
	if (meta_get(r->db, "offset", &v) == 0)
		out->offset = v;
	if (meta_get(r->db, "cleared", &v) == 0)
		out->cleared = v;
	if (meta_get(r->db, "malformed", &v) == 0)
		out->malformed = (uint64_t)v;
	if (meta_get(r->db, "duplicates", &v) == 0)
		out->duplicates = (uint64_t)v;
	(void)sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
	return rc;
}
