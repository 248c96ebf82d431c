/* The flow store: rows, columns and bodies from the log, paging, the tail
 * (partial lines, restart, a replaced log), duplicates, malformed lines,
 * clear, eviction, and a db that cannot be written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "flows/flowlog.h"
#include "flows/query.h"
#include "flows/schema.h"
#include "flows/store.h"

struct tmp {
	char dir[64];
	char log[128];
	char db[128];
};

/* How long a flush may take: a deadline, not a speed (a loaded machine,
 * sanitizers and parallel tests make seconds of what takes milliseconds). */
#define FLUSH_MS 120000

static int setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/test_store.XXXXXX");
	if (!mkdtemp(t->dir))
		return -1;
	snprintf(t->log, sizeof(t->log), "%s/%s", t->dir, FLOWLOG_FILE);
	snprintf(t->db, sizeof(t->db), "%s/%s", t->dir, STORE_FILE);
	*state = t;
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	struct tmp *t = *state;
	nftw(t->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	free(t);
	return 0;
}

/* ---- records ------------------------------------------------------------- */

static void iso(int64_t us, char out[FLOWLOG_TIME_LEN])
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };
	flowlog_format_time(&ts, out);
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static json_t *common(const char *type, const char *id, int64_t start_us, int64_t end_us)
{
	char a[FLOWLOG_TIME_LEN], b[FLOWLOG_TIME_LEN];
	iso(start_us, a);
	iso(end_us, b);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "type", type, "id", id,
			 "peer", "phone", "client", "10.66.77.2:40000", "server",
			 "93.184.216.34:443", "start", a, "end", b, "bytes_up", (json_int_t)12,
			 "bytes_down", (json_int_t)3400);
}

static json_t *body(const char *text, const char *b64, int size)
{
	json_t *o = json_object();
	if (text)
		json_object_set_new(o, "text", json_string(text));
	if (b64)
		json_object_set_new(o, "base64", json_string(b64));
	json_object_set_new(o, "size", json_integer(size));
	json_object_set_new(o, "truncated", json_false());
	return o;
}

/* An http record for `host`; bodies as given (NULL: none). */
static json_t *http(const char *id, const char *host, int status, json_t *req_body,
		    json_t *resp_body, const char *resp_encoding, int64_t end_us)
{
	json_t *r = common("http", id, end_us - 31000, end_us);
	char url[256];
	snprintf(url, sizeof(url), "https://%s/api/v1/items?id=%s", host, id);
	json_object_set_new(r, "end_reason", json_string("complete"));
	json_object_set_new(r, "conn", json_string("tcp-1"));
	json_object_set_new(r, "tls", json_null());
	json_object_set_new(r, "http_version", json_string("HTTP/1.1"));
	json_object_set_new(r, "method", json_string(req_body ? "POST" : "GET"));
	json_object_set_new(r, "url", json_string(url));
	json_t *req = json_pack("{s:[[s,s],[s,s]]}", "headers", "Host", host, "Content-Type",
				"application/json");
	if (req_body)
		json_object_set_new(req, "body", req_body);
	json_object_set_new(r, "request", req);
	json_t *resp = json_pack("{s:i, s:s, s:[[s,s]]}", "status", status, "reason", "OK",
				 "headers", "Content-Type", "text/html");
	if (resp_encoding)
		json_array_append_new(json_object_get(resp, "headers"),
				      json_pack("[s,s]", "Content-Encoding", resp_encoding));
	if (resp_body)
		json_object_set_new(resp, "body", resp_body);
	json_object_set_new(r, "response", resp);
	return r;
}

static void log_record(struct flowlog *log, json_t *r)
{
	assert_int_equal(flowlog_write(log, r), 0);
	json_decref(r);
}

/* n plain http records with ids "<prefix>-<i>", hosts h0..h4. */
static void log_many(const char *path, const char *prefix, int first, int n)
{
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, path, NULL), 0);
	for (int i = first; i < first + n; i++) {
		char id[64], host[32];
		snprintf(id, sizeof(id), "%s-%d", prefix, i);
		snprintf(host, sizeof(host), "h%d.example", i % 5);
		log_record(log, http(id, host, i % 7 ? 200 : 404, NULL, NULL, NULL,
				     now_us() - 1000000 + i));
	}
	flowlog_close(log);
}

static void append(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static struct store *open_store(struct tmp *t, const struct store_options *opt)
{
	struct store *s;
	assert_int_equal(store_open(&s, t->dir, NULL, opt), 0);
	return s;
}

static struct store_reader *reader(struct tmp *t)
{
	struct store_reader *r;
	assert_int_equal(store_reader_open(&r, t->dir), 0);
	return r;
}

static int64_t count(struct tmp *t, const char *where)
{
	struct store_reader *r = reader(t);
	int64_t n = -1;
	assert_int_equal(store_count(r, where, NULL, 0, &n), 0);
	store_reader_close(r);
	return n;
}

static bool has(struct tmp *t, const char *id)
{
	struct store_reader *r = reader(t);
	struct flows_param p = { .type = FLOWS_PARAM_TEXT, .text = id };
	int64_t n = -1;
	assert_int_equal(store_count(r, "id = ?1", &p, 1, &n), 0);
	store_reader_close(r);
	return n == 1;
}

/* stderr into a file, to count what was logged. */
struct capture {
	int saved;
	char path[160];
};

static void capture_start(struct capture *c, struct tmp *t)
{
	snprintf(c->path, sizeof(c->path), "%s/stderr", t->dir);
	fflush(stderr);
	c->saved = dup(2);
	int fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	dup2(fd, 2);
	close(fd);
}

static int capture_count(struct capture *c, const char *needle)
{
	fflush(stderr);
	dup2(c->saved, 2);
	close(c->saved);
	FILE *fp = fopen(c->path, "r");
	assert_non_null(fp);
	char line[2048];
	int n = 0;
	while (fgets(line, sizeof(line), fp))
		if (strstr(line, needle))
			n++;
	fclose(fp);
	return n;
}

/* ---- tests --------------------------------------------------------------- */

struct collect {
	int n;
	char ids[6000][32];
	int64_t seqs[6000];
};

static int collect_row(void *ctx, const struct store_row *row)
{
	struct collect *c = ctx;
	snprintf(c->ids[c->n], sizeof(c->ids[0]), "%s", row->id);
	c->seqs[c->n++] = row->seq;
	return 0;
}

static int first_row(void *ctx, const struct store_row *row)
{
	struct store_row *out = ctx;
	*out = *row;
	/* Strings outlive the callback only as copies. */
	static char host[64], url[256], method[16], proto[16], reason[32];
	snprintf(host, sizeof(host), "%s", row->host);
	snprintf(url, sizeof(url), "%s", row->url ? row->url : "");
	snprintf(method, sizeof(method), "%s", row->method ? row->method : "");
	snprintf(proto, sizeof(proto), "%s", row->proto ? row->proto : "");
	snprintf(reason, sizeof(reason), "%s", row->end_reason ? row->end_reason : "");
	out->host = host;
	out->url = url;
	out->method = method;
	out->proto = proto;
	out->end_reason = reason;
	out->id = out->type = out->peer = out->error = NULL;
	return 1;
}

/* Rows, columns and bodies; get gives back the logged record. */
static void test_round_trip(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->log, NULL), 0);
	int64_t end = now_us();
	json_t *recs[6];
	recs[0] = http("rt-1", "Api.Example.com", 201, body("{\"a\":1}", NULL, 7),
		       body(NULL, "H4sIAAAAAAAA/8tIzcnJBwCGphA2BQAAAA==", 25), "gzip", end);
	recs[1] = http("rt-2", "example.org", 404, NULL, body("", NULL, 0), NULL, end);
	recs[2] = common("tcp", "rt-3", end - 5000000, end);
	json_object_set_new(recs[2], "end_reason", json_string("tls:client_rejected"));
	json_object_set_new(recs[2], "proto", json_string("tls"));
	json_object_set_new(recs[2], "sni", json_string("Secure.Example.NET"));
	json_object_set_new(recs[2], "tls_error", json_string("client rejected certificate"));
	recs[3] = common("dns", "rt-4", end - 2000, end);
	json_object_set_new(recs[3], "transport", json_string("udp"));
	json_object_set_new(recs[3], "name", json_string("www.example.test."));
	recs[4] = common("udp", "rt-5", end - 2000, end);
	recs[5] = common("websocket", "rt-6", end - 2000, end);
	json_object_set_new(recs[5], "url", json_string("wss://chat.example.com/ws"));
	json_object_set_new(recs[5], "messages",
			    json_pack("[{s:s,s:s,s:o}]", "dir", "up", "opcode", "text", "body",
				      body("hi", NULL, 2)));
	for (int i = 0; i < 6; i++)
		assert_int_equal(flowlog_write(log, recs[i]), 0);
	flowlog_close(log);

	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct store_stats st;
	store_stats(s, &st);
	assert_int_equal(st.rows, 6);
	struct stat ls;
	assert_int_equal(stat(t->log, &ls), 0);
	assert_int_equal(st.offset, ls.st_size);
	/* Private, like the log. */
	struct stat ds;
	char wal[160];
	snprintf(wal, sizeof(wal), "%s-wal", t->db);
	assert_int_equal(stat(t->db, &ds), 0);
	assert_int_equal(ds.st_mode & 0777, 0600);
	assert_int_equal(stat(wal, &ds), 0);
	assert_int_equal(ds.st_mode & 0777, 0600);

	struct store_reader *r = reader(t);
	for (int i = 0; i < 6; i++) {
		json_t *got;
		const char *id = json_string_value(json_object_get(recs[i], "id"));
		assert_int_equal(store_get(r, id, &got), 0);
		assert_true(json_equal(got, recs[i]));
		/* Same keys in the same order, bodies where they were. */
		char *a = json_dumps(got, JSON_COMPACT), *b = json_dumps(recs[i], JSON_COMPACT);
		assert_string_equal(a, b);
		free(a);
		free(b);
		json_decref(got);
	}
	json_t *none;
	assert_int_equal(store_get(r, "nope", &none), -ENOENT);

	uint8_t *data;
	size_t len;
	char *enc;
	assert_int_equal(store_body(r, "rt-1", 1, &data, &len, &enc), 0);
	assert_int_equal(len, 25);
	assert_int_equal(data[0], 0x1f);
	assert_int_equal(data[1], 0x8b);
	assert_string_equal(enc, "gzip");
	free(data);
	free(enc);
	assert_int_equal(store_body(r, "rt-1", 0, &data, &len, &enc), 0);
	assert_int_equal(len, 7);
	assert_memory_equal(data, "{\"a\":1}", 7);
	assert_null(enc);
	free(data);
	assert_int_equal(store_body(r, "rt-2", 1, &data, &len, &enc), 0);
	assert_int_equal(len, 0);
	assert_non_null(data);
	free(data);
	assert_int_equal(store_body(r, "rt-2", 0, &data, &len, &enc), -ENOENT);
	assert_int_equal(store_body(r, "rt-3", 1, &data, &len, &enc), -ENOENT);

	/* Summary columns. */
	struct store_row row;
	struct flows_param p = { .type = FLOWS_PARAM_TEXT, .text = "rt-1" };
	struct store_query q = { .where = "id = ?1", .params = &p, .nparams = 1 };
	assert_int_equal(store_list(r, &q, first_row, &row, NULL), 1);
	assert_string_equal(row.host, "api.example.com");
	assert_string_equal(row.method, "POST");
	assert_int_equal(row.status, 201);
	assert_int_equal(row.duration_us, 31000);
	assert_int_equal(row.bytes_down, 3400);
	assert_string_equal(row.proto, "HTTP/1.1");
	assert_int_equal(row.flags, STORE_HAS_RESPONSE);
	p.text = "rt-3";
	assert_int_equal(store_list(r, &q, first_row, &row, NULL), 1);
	assert_string_equal(row.host, "secure.example.net");
	assert_int_equal(row.flags, STORE_TLS_REJECTED);
	assert_int_equal(row.duration_us, 5000000);
	p.text = "rt-6";
	assert_int_equal(store_list(r, &q, first_row, &row, NULL), 1);
	assert_int_equal(row.flags, STORE_WEBSOCKET);

	/* A where clause that does not compile, or wants other parameters. */
	struct store_query bad = { .where = "nosuchcolumn = 1" };
	assert_int_equal(store_list(r, &bad, collect_row, NULL, NULL), -EINVAL);
	assert_true(strlen(store_reader_errmsg(r)) > 0);
	bad.where = "host = ?1";
	assert_int_equal(store_list(r, &bad, collect_row, NULL, NULL), -EINVAL);
	int64_t n;
	assert_int_equal(store_count(r, "1); DROP TABLE flows; (1", NULL, 0, &n), -EINVAL);
	assert_int_equal(store_count(r, "status = 404", NULL, 0, &n), 0);
	assert_int_equal(n, 1);

	struct store_stats rs;
	assert_int_equal(store_reader_stats(r, &rs), 0);
	assert_int_equal(rs.flows, 6);
	assert_int_equal(rs.offset, ls.st_size);
	assert_true(rs.db_bytes > 0);
	assert_int_equal(rs.oldest_us, end - 31000);
	store_reader_close(r);
	store_close(s);

	/* The stored columns, straight from SQLite; and the db's settings. */
	sqlite3 *db;
	assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
	sqlite3_stmt *q2;
	assert_int_equal(
		sqlite3_prepare_v2(db,
				   "SELECT host, url, status, req_ctype, resp_ctype, req_headers,"
				   " resp_headers, record, conn, passthrough FROM flows"
				   " WHERE id = 'rt-1'",
				   -1, &q2, NULL),
		SQLITE_OK);
	assert_int_equal(sqlite3_step(q2), SQLITE_ROW);
	assert_string_equal(sqlite3_column_text(q2, 0), "api.example.com");
	assert_string_equal(sqlite3_column_text(q2, 1),
			    "https://Api.Example.com/api/v1/items?id=rt-1");
	assert_int_equal(sqlite3_column_int(q2, 2), 201);
	assert_string_equal(sqlite3_column_text(q2, 3), "application/json");
	assert_string_equal(sqlite3_column_text(q2, 4), "text/html");
	assert_string_equal(sqlite3_column_text(q2, 5),
			    "Host: Api.Example.com\nContent-Type: application/json\n");
	assert_string_equal(sqlite3_column_text(q2, 6),
			    "Content-Type: text/html\nContent-Encoding: gzip\n");
	/* The record without the bodies' bytes, their size kept. */
	const char *rec = (const char *)sqlite3_column_text(q2, 7);
	assert_null(strstr(rec, "H4sI"));
	assert_null(strstr(rec, "\"text\""));
	assert_non_null(strstr(rec, "\"size\":25"));
	assert_string_equal(sqlite3_column_text(q2, 8), "tcp-1");
	sqlite3_finalize(q2);
	const char *checks[][2] = {
		{ "PRAGMA journal_mode", "wal" },
		{ "PRAGMA auto_vacuum", "2" },
		{ "SELECT value FROM meta WHERE key = 'version'", "3" },
		{ "SELECT count(*) FROM flows WHERE via <> 'wireguard' OR user IS NOT NULL", "0" },
		{ "SELECT count(*) FROM flow_fts WHERE flow_fts MATCH '\"example.test\"'", "1" },
		{ "SELECT host FROM flows WHERE type = 'dns'", "www.example.test" },
		{ "SELECT proto FROM flows WHERE type = 'dns'", "udp" },
		{ "SELECT host FROM flows WHERE type = 'udp'", "93.184.216.34" },
		{ "SELECT count(*) FROM bodies", "3" },
		{ "SELECT count(*) FROM flows WHERE url IS NULL", "3" },
	};
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
		assert_int_equal(sqlite3_prepare_v2(db, checks[i][0], -1, &q2, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_step(q2), SQLITE_ROW);
		assert_string_equal(sqlite3_column_text(q2, 0), checks[i][1]);
		sqlite3_finalize(q2);
	}
	sqlite3_close(db);
	for (int i = 0; i < 6; i++)
		json_decref(recs[i]);
}

/* Following the cursor visits every flow once, newest first. */
static void test_paging(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "pg", 0, 5000);
	struct store *s = open_store(t, &(struct store_options){ .batch_rows = 64 });
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct store_reader *r = reader(t);
	static struct collect c;
	memset(&c, 0, sizeof(c));
	struct store_query q = { .limit = 37 };
	int pages = 0;
	do {
		assert_int_equal(store_list(r, &q, collect_row, &c, &q.cursor), 0);
		pages++;
	} while (q.cursor);
	assert_int_equal(c.n, 5000);
	assert_int_equal(pages, (5000 + 36) / 37);
	for (int i = 0; i < 5000; i++) {
		char want[32];
		snprintf(want, sizeof(want), "pg-%d", 4999 - i);
		assert_string_equal(c.ids[i], want);
		if (i)
			assert_true(c.seqs[i] < c.seqs[i - 1]);
	}

	/* Oldest first, filtered by a bound parameter. */
	memset(&c, 0, sizeof(c));
	struct flows_param p[2] = { { .type = FLOWS_PARAM_TEXT, .text = "h3.example" },
				    { .type = FLOWS_PARAM_INT, .i = 200 } };
	q = (struct store_query){ .where = "host = ?1 AND status = ?2",
				  .params = p,
				  .nparams = 2,
				  .limit = 50,
				  .oldest_first = true };
	do
		assert_int_equal(store_list(r, &q, collect_row, &c, &q.cursor), 0);
	while (q.cursor);
	int want = 0;
	for (int i = 0; i < 5000; i++)
		want += i % 5 == 3 && i % 7 != 0;
	assert_int_equal(c.n, want);
	for (int i = 1; i < c.n; i++)
		assert_true(c.seqs[i] > c.seqs[i - 1]);
	int64_t n;
	assert_int_equal(store_count(r, "host = ?1 AND status = ?2", p, 2, &n), 0);
	assert_int_equal(n, want);

	/* A substring from the trigram index, alone and with a where clause
	 * (index-driven, and where-driven when the index would take long to
	 * give a page), paged to the end. */
	const struct {
		const char *match, *where;
		int want;
	} subs[] = {
		{ "url : \"id=pg-12\"", "url LIKE '%id=pg-12%'", 111 }, /* pg-12, -120.., -1200.. */
		{ "url : \"items\"", "url LIKE '%items%'", 5000 },
		{ "url : \"items\"", "host = 'h3.example' AND status = 200 AND url LIKE '%items%'",
		  want },
		{ "url : \"items\"", "id = 'pg-3' AND url LIKE '%items%'", 1 },
		{ "url : \"id=pg-3\" AND host : \"h3.\"",
		  "status = 404 AND url LIKE '%id=pg-3%' AND host LIKE '%h3.%'", 0 },
		{ "host : \"h4.ex\"", "status = 404 AND host LIKE '%h4.ex%'", 0 },
	};
	int w404 = 0;
	for (int i = 0; i < 5000; i++)
		w404 += i % 5 == 4 && i % 7 == 0;
	for (size_t k = 0; k < sizeof(subs) / sizeof(subs[0]); k++) {
		for (int oldest = 0; oldest < 2; oldest++) {
			memset(&c, 0, sizeof(c));
			q = (struct store_query){ .match = subs[k].match,
						  .where = subs[k].where,
						  .limit = 97,
						  .oldest_first = oldest };
			do
				assert_int_equal(store_list(r, &q, collect_row, &c, &q.cursor), 0);
			while (q.cursor);
			int expect = subs[k].want;
			if (k == 4)
				for (int i = 0; i < 5000; i++)
					expect +=
						i % 5 == 3 && i % 7 == 0 &&
						(i == 3 || (i >= 30 && i < 40) ||
						 (i >= 300 && i < 400) || (i >= 3000 && i < 4000));
			if (k == 5)
				expect = w404;
			assert_int_equal(c.n, expect);
			for (int i = 1; i < c.n; i++)
				assert_true(oldest ? c.seqs[i] > c.seqs[i - 1]
						   : c.seqs[i] < c.seqs[i - 1]);
		}
	}
	/* The where clause's ?1 is its own, wherever ours are in the text. */
	struct flows_param h3 = { .type = FLOWS_PARAM_TEXT, .text = "h3.example" };
	for (int k = 0; k < 2; k++) {
		memset(&c, 0, sizeof(c));
		q = (struct store_query){ .where = k ? "flows.id = ?1 AND url LIKE '%items%'"
						     : "flows.host = ?1 AND url LIKE '%items%'",
					  .params = &h3,
					  .nparams = 1,
					  .match = "url : \"items\"" };
		if (k)
			h3.text = "pg-3";
		do
			assert_int_equal(store_list(r, &q, collect_row, &c, &q.cursor), 0);
		while (q.cursor);
		assert_int_equal(c.n, k ? 1 : 1000);
	}
	/* A flow's seq as a cursor: the page just older and just newer. */
	int64_t seq;
	assert_int_equal(store_seq(r, "pg-2500", &seq), 0);
	assert_int_equal(store_seq(r, "pg-none", &seq), -ENOENT);
	assert_int_equal(store_seq(r, "pg-2500", &seq), 0);
	for (int oldest = 0; oldest < 2; oldest++) {
		memset(&c, 0, sizeof(c));
		q = (struct store_query){ .cursor = seq, .limit = 3, .oldest_first = oldest };
		assert_int_equal(store_list(r, &q, collect_row, &c, NULL), 0);
		assert_int_equal(c.n, 3);
		assert_string_equal(c.ids[0], oldest ? "pg-2501" : "pg-2499");
		assert_string_equal(c.ids[2], oldest ? "pg-2503" : "pg-2497");
	}
	q = (struct store_query){ .match = "url : \"", .where = "1" };
	assert_int_equal(store_list(r, &q, collect_row, &c, NULL), -EINVAL);
	/* A match must come with a where clause that tests it. */
	q = (struct store_query){ .match = "url : \"items\"" };
	assert_int_equal(store_list(r, &q, collect_row, &c, NULL), -EINVAL);
	store_reader_close(r);
	store_close(s);
}

/* A line without its newline waits for it; store_notify (no flush) makes
 * new lines visible within a second. */
static void test_partial_line(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "pl", 0, 3);
	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	const char *line = "{\"type\":\"tcp\",\"id\":\"pl-partial\",\"server\":\"192.0.2.1:80\"}\n";
	size_t half = strlen(line) / 2;
	char first[128];
	memcpy(first, line, half);
	first[half] = 0;
	append(t->log, first);
	store_notify(s);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	assert_int_equal(count(t, NULL), 3);
	append(t->log, line + half);
	store_notify(s);
	int64_t n = 0;
	for (int i = 0; i < 100 && n != 4; i++) {
		usleep(10000);
		n = count(t, NULL);
	}
	assert_int_equal(n, 4);
	assert_true(has(t, "pl-partial"));
	struct store_stats st;
	store_stats(s, &st);
	assert_int_equal(st.malformed, 0);
	store_close(s);
}

/* Lines logged while the store is closed (a crash) are caught up from
 * the stored offset, each once. */
static void test_restart(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "rs", 0, 100);
	/* Closing drains what the log holds. */
	struct store *s = open_store(t, NULL);
	store_close(s);
	assert_int_equal(count(t, NULL), 100);
	log_many(t->log, "rs", 100, 50);
	s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct store_stats st;
	store_stats(s, &st);
	assert_int_equal(st.rows, 50);
	assert_int_equal(st.duplicates, 0);
	/* A second writer on the same db is refused. */
	struct store *other;
	assert_int_equal(store_open(&other, t->dir, NULL, NULL), -EBUSY);
	store_close(s);
	assert_int_equal(count(t, NULL), 150);
	assert_true(has(t, "rs-149"));

	/* A rebuild reads it all again into empty tables. */
	s = open_store(t, &(struct store_options){ .rebuild = true });
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_stats(s, &st);
	assert_int_equal(st.rows, 150);
	assert_int_equal(st.duplicates, 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 150);
}

/* A log renamed over, or cut shorter, is ingested again from its start. */
static void test_replaced_log(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "old", 0, 20);
	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	assert_int_equal(count(t, NULL), 20);

	char other[160];
	snprintf(other, sizeof(other), "%s/new.jsonl", t->dir);
	log_many(other, "new", 0, 5);
	assert_int_equal(rename(other, t->log), 0);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	assert_int_equal(count(t, NULL), 5);
	assert_false(has(t, "old-0"));
	assert_true(has(t, "new-4"));

	/* Cut to nothing, then written again (same inode). */
	assert_int_equal(truncate(t->log, 0), 0);
	log_many(t->log, "cut", 0, 2);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	assert_int_equal(count(t, NULL), 2);
	assert_true(has(t, "cut-1"));
	store_close(s);

	/* Rewritten in place past the offset while the store was closed: the
	 * first line differs. */
	assert_int_equal(truncate(t->log, 0), 0);
	log_many(t->log, "again", 0, 30);
	s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 30);
	assert_false(has(t, "cut-1"));
}

/* The same records logged twice are stored once. */
static void test_duplicates(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "dup", 0, 10);
	log_many(t->log, "dup", 5, 10);
	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct store_stats st;
	store_stats(s, &st);
	assert_int_equal(st.rows, 15);
	assert_int_equal(st.duplicates, 5);
	assert_int_equal(st.errors, 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 15);
	struct store_reader *r = reader(t);
	struct store_stats rs;
	assert_int_equal(store_reader_stats(r, &rs), 0);
	assert_int_equal(rs.duplicates, 5);
	store_reader_close(r);
}

static void test_malformed(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "ml", 0, 2);
	append(t->log, "not json\n[1,2]\n{\"type\":\"tcp\"}\n\n{\"id\":\"x\",\"type\":3}\n");
	log_many(t->log, "ml", 2, 2);
	struct capture c;
	capture_start(&c, t);
	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct store_stats st;
	store_stats(s, &st);
	store_close(s);
	assert_int_equal(capture_count(&c, "malformed"), 1);
	assert_int_equal(st.malformed, 4);
	assert_int_equal(st.rows, 4);
	assert_int_equal(count(t, NULL), 4);
}

/* Cleared flows stay cleared: after more lines, a restart, lines logged
 * while the store was closed, and a rebuild. */
static void test_clear(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "cl", 0, 10);
	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct store_reader *r = reader(t);
	assert_int_equal(store_reader_clear(r), 0);
	assert_int_equal(count(t, NULL), 0);
	log_many(t->log, "cl", 10, 3);
	store_notify(s);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	assert_int_equal(count(t, NULL), 3);
	store_close(s);

	/* Logged while closed, then cleared: not ingested at the next open. */
	log_many(t->log, "cl", 13, 4);
	assert_int_equal(store_reader_clear(r), 0);
	log_many(t->log, "cl", 17, 2);
	s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 2);
	assert_true(has(t, "cl-17"));
	assert_true(has(t, "cl-18"));

	s = open_store(t, &(struct store_options){ .rebuild = true });
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 2);
	store_reader_close(r);
}

/* Past max_size the oldest go; the newest stay. */
static void test_evict_size(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->log, NULL), 0);
	char text[1500];
	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = 0;
	for (int i = 0; i < 3000; i++) {
		char id[32];
		snprintf(id, sizeof(id), "ev-%d", i);
		log_record(log, http(id, "big.example", 200, NULL, body(text, NULL, 1499), NULL,
				     now_us()));
	}
	flowlog_close(log);
	const int64_t max = 1 << 20;
	struct store *s = open_store(t, &(struct store_options){ .max_size = max });
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct store_stats st;
	store_stats(s, &st);
	store_close(s);
	assert_true(st.evicted > 0);
	assert_int_equal(st.rows, 3000);
	struct store_reader *r = reader(t);
	struct store_stats rs;
	assert_int_equal(store_reader_stats(r, &rs), 0);
	store_reader_close(r);
	assert_true(rs.db_bytes <= max);
	assert_int_equal(rs.flows, 3000 - (int64_t)st.evicted);
	assert_true(rs.flows > 100);
	assert_true(has(t, "ev-2999"));
	assert_false(has(t, "ev-0"));
	/* What is left is the newest, without a gap. */
	char oldest[32];
	snprintf(oldest, sizeof(oldest), "ev-%lld", (long long)(3000 - rs.flows));
	assert_true(has(t, oldest));
}

/* Past max_age (since a flow ended) the oldest go. */
static void test_evict_age(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->log, NULL), 0);
	int64_t now = now_us();
	for (int i = 0; i < 300; i++) {
		char id[32];
		snprintf(id, sizeof(id), "age-%d", i);
		int64_t end = i < 200 ? now - 2 * 86400000000LL + i : now - 60000000;
		log_record(log, http(id, "a.example", 200, NULL, body("b", NULL, 1), NULL, end));
	}
	flowlog_close(log);
	struct store *s = open_store(t, &(struct store_options){ .max_age = 86400 });
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 100);
	assert_false(has(t, "age-199"));
	assert_true(has(t, "age-200"));
	sqlite3 *db;
	assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
	sqlite3_stmt *q;
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT (SELECT count(*) FROM bodies),"
					    " (SELECT count(*) FROM flow_fts WHERE flow_fts MATCH"
					    " '\"a.example\"')",
					    -1, &q, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(q, 0), 100);
	assert_int_equal(sqlite3_column_int(q, 1), 100);
	sqlite3_finalize(q);
	sqlite3_close(db);
}

/* A db that cannot grow (as on a full disk): logged once, counted,
 * retried; nothing crashes, and the rows come once there is room. */
static void test_write_failure(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "wf", 0, 200);
	struct capture c;
	capture_start(&c, t);
	struct store *s = open_store(t, &(struct store_options){ .max_page_count = 1 });
	int rc = store_flush(s, FLUSH_MS);
	log_many(t->log, "wf", 200, 10);
	store_notify(s);
	int rc2 = store_flush(s, FLUSH_MS);
	struct store_stats st;
	store_stats(s, &st);
	store_close(s);
	int warned = capture_count(&c, "cannot write");
	assert_int_equal(rc, -ENOSPC);
	assert_int_equal(rc2, -ENOSPC);
	assert_int_equal(warned, 1);
	assert_true(st.errors >= 2);
	assert_int_equal(st.offset, 0);

	/* With room, everything the log holds arrives. */
	s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 210);
}

struct lister {
	struct tmp *t;
	atomic_bool stop;
	int errors, rounds;
	int64_t last;
	bool shrank;
};

static int count_row(void *ctx, const struct store_row *row)
{
	(void)row;
	(*(int *)ctx)++;
	return 0;
}

static void *list_loop(void *arg)
{
	struct lister *l = arg;
	struct store_reader *r;
	if (store_reader_open(&r, l->t->dir)) {
		l->errors++;
		return NULL;
	}
	while (!atomic_load(&l->stop)) {
		int n = 0;
		int64_t total;
		struct store_query q = { .limit = 50 };
		if (store_list(r, &q, count_row, &n, NULL) || store_count(r, NULL, NULL, 0, &total))
			l->errors++;
		if (total < l->last)
			l->shrank = true;
		l->last = total;
		l->rounds++;
		/* The writer runs at SCHED_IDLE: readers that never pause would
		 * keep it from ever running on a machine with as many cores. */
		usleep(2000);
	}
	store_reader_close(r);
	return NULL;
}

/* Readers on their own threads read while the writer writes. */
static void test_concurrent_readers(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "cr", 0, 1);
	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct lister l[2] = { { .t = t }, { .t = t } };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, list_loop, &l[i]), 0);
	for (int b = 0; b < 20; b++) {
		log_many(t->log, "cr", 1 + b * 100, 100);
		store_notify(s);
		usleep(5000);
	}
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	usleep(20000);
	for (int i = 0; i < 2; i++) {
		atomic_store(&l[i].stop, true);
		pthread_join(th[i], NULL);
		assert_int_equal(l[i].errors, 0);
		assert_false(l[i].shrank);
		assert_true(l[i].rounds > 0);
		assert_int_equal(l[i].last, 2001);
	}
	store_close(s);
}

/* A reader's time limit stops a query that runs too long (a cross join
 * of 3000 rows with itself), and the next one runs in full again. */
static void test_reader_timeout(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "to", 0, 3000);
	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	struct store_reader *r = reader(t);
	store_reader_set_timeout(r, 1);
	const char *slow = "(SELECT count(*) FROM flows a, flows b WHERE a.id < b.id) > 0";
	int64_t n;
	assert_int_equal(store_count(r, slow, NULL, 0, &n), -ETIMEDOUT);
	store_reader_set_timeout(r, 0);
	assert_int_equal(store_count(r, NULL, NULL, 0, &n), 0);
	assert_int_equal(n, 3000);
	store_reader_set_timeout(r, 10000);
	assert_int_equal(store_count(r, "status > 0", NULL, 0, &n), 0);
	store_reader_close(r);
	store_close(s);
}

/* A db of another schema version is made anew; readers refuse it. */
static void test_version(void **state)
{
	struct tmp *t = *state;
	log_many(t->log, "v", 0, 3);
	struct store *s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_close(s);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "UPDATE meta SET value = 999 WHERE key = 'version';"
				      " DELETE FROM flows WHERE id = 'v-0'",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	struct store_reader *r;
	assert_int_equal(store_reader_open(&r, t->dir), -ESTALE);
	s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 3);

	/* Not a database at all. */
	unlink(t->db);
	char wal[160];
	snprintf(wal, sizeof(wal), "%s-wal", t->db);
	unlink(wal);
	append(t->db, "this is not an SQLite file, just text that is long enough to look.\n");
	s = open_store(t, NULL);
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	store_close(s);
	assert_int_equal(count(t, NULL), 3);
}

/* Waits (without a flush) until the writer has committed the whole log. */
static void wait_ingested(struct tmp *t, struct store *s)
{
	struct stat ls;
	assert_int_equal(stat(t->log, &ls), 0);
	store_notify(s);
	for (int i = 0; i < FLUSH_MS / 10; i++) {
		struct store_stats st;
		store_stats(s, &st);
		if (st.offset == ls.st_size)
			return;
		usleep(10000);
	}
	fail_msg("the writer did not take the log");
}

static int64_t sql_int(struct store_reader *r, const char *sql)
{
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(store_reader_sqlite(r), sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Every flow a filter selects, paged by 97 both ways; also counted. */
static int filter_rows(struct store_reader *r, const char *filter)
{
	struct flows_query fq;
	struct filter_error err;
	assert_int_equal(flows_query_make(&fq, filter, &err), 0);
	static struct collect c;
	int n = -1;
	for (int oldest = 0; oldest < 2; oldest++) {
		memset(&c, 0, sizeof(c));
		fq.q.limit = 97;
		fq.q.cursor = 0;
		fq.q.oldest_first = oldest;
		do
			assert_int_equal(store_list(r, &fq.q, collect_row, &c, &fq.q.cursor), 0);
		while (fq.q.cursor);
		for (int i = 1; i < c.n; i++)
			assert_true(oldest ? c.seqs[i] > c.seqs[i - 1] : c.seqs[i] < c.seqs[i - 1]);
		if (n >= 0)
			assert_int_equal(c.n, n);
		n = c.n;
	}
	int64_t counted;
	assert_int_equal(store_count(r, fq.q.where, fq.q.params, fq.q.nparams, &counted), 0);
	assert_int_equal(counted, n);
	flows_query_free(&fq);
	return n;
}

/* The URL index lags the rows under load: queries see every committed
 * row all the same, whether the index has none of them, all, or part. */
static void test_index_lag(void **state)
{
	struct tmp *t = *state;
	struct store *s = open_store(t, &(struct store_options){ .index_idle_ms = -1 });
	log_many(t->log, "lag", 0, 3000);
	wait_ingested(t, s);
	struct store_reader *r = reader(t);
	assert_int_equal(sql_int(r, "SELECT value FROM meta WHERE key = 'fts_seq'"), 0);
	assert_int_equal(sql_int(r, "SELECT count(*) FROM flow_fts WHERE flow_fts MATCH "
				    "'\"items\"'"),
			 0);
	static const struct {
		const char *filter;
		int want;
	} cases[] = {
		{ "items", 3000 },
		{ "~u id=lag-12", 111 }, /* lag-12, -120..129, -1200..1299 */
		{ "~d h3.exa", 600 },
		{ "~u lag-12 | ~d h4.example", -1 }, /* not driven by the index; counted below */
		{ "~u lag-12 & ~c 404", -1 },
	};
	int got[5][3];
	for (size_t k = 0; k < 5; k++)
		got[k][0] = filter_rows(r, cases[k].filter);
	/* All indexed. */
	assert_int_equal(store_flush(s, FLUSH_MS), 0);
	assert_int_equal(sql_int(r, "SELECT value FROM meta WHERE key = 'fts_seq'"), 3000);
	for (size_t k = 0; k < 5; k++)
		got[k][1] = filter_rows(r, cases[k].filter);
	/* Part: 1000 more, not indexed. */
	log_many(t->log, "lag", 3000, 1000);
	wait_ingested(t, s);
	assert_int_equal(sql_int(r, "SELECT value FROM meta WHERE key = 'fts_seq'"), 3000);
	assert_int_equal(filter_rows(r, "items"), 4000);
	assert_int_equal(filter_rows(r, "~u id=lag-3"), 1 + 10 + 100 + 1000);
	store_reader_close(r);
	store_close(s);
	for (size_t k = 0; k < 5; k++) {
		int want = cases[k].want;
		if (k == 4) {
			want = 0;
			for (int i = 0; i < 3000; i++) {
				char id[16];
				snprintf(id, sizeof(id), "%d", i);
				want += i % 7 == 0 && strncmp(id, "12", 2) == 0;
			}
		}
		if (k == 3) {
			want = 0;
			for (int i = 0; i < 3000; i++) {
				char id[16];
				snprintf(id, sizeof(id), "%d", i);
				want += strncmp(id, "12", 2) == 0 || i % 5 == 4;
			}
		}
		assert_int_equal(got[k][0], want);
		assert_int_equal(got[k][1], want);
	}
}

/* A peer's flow count and newest flow, from the (peer, seq) index (the
 * plan says so): 30 flows of phone, the last one newest, 5 of tablet, none
 * of a peer that never sent any. */
static void test_peer_flows(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->log, NULL), 0);
	int64_t t0 = now_us() - 10000000;
	for (int i = 0; i < 35; i++) {
		char id[32];
		snprintf(id, sizeof(id), "pf-%d", i);
		json_t *r = http(id, "h.example", 200, NULL, NULL, NULL, t0 + i * 1000);
		if (i % 7 == 3)
			json_object_set_new(r, "peer", json_string("tablet"));
		log_record(log, r);
	}
	flowlog_close(log);
	struct store *s = open_store(t, NULL);
	wait_ingested(t, s);
	struct store_reader *r = reader(t);
	int64_t n = -1, last = -1;
	assert_int_equal(store_peer_flows(r, "phone", &n, &last), 0);
	assert_int_equal(n, 30);
	assert_int_equal(last, t0 + 34 * 1000 - 31000);
	assert_int_equal(store_peer_flows(r, "tablet", &n, &last), 0);
	assert_int_equal(n, 5);
	assert_int_equal(last, t0 + 31 * 1000 - 31000);
	assert_int_equal(store_peer_flows(r, "nobody", &n, &last), 0);
	assert_int_equal(n, 0);
	assert_int_equal(last, 0);
	const char *sql[] = {
		"EXPLAIN QUERY PLAN SELECT count(*) FROM flows WHERE peer = 'phone'",
		"EXPLAIN QUERY PLAN SELECT start_us FROM flows WHERE peer = 'phone' ORDER BY seq "
		"DESC LIMIT 1",
	};
	for (size_t i = 0; i < 2; i++) {
		sqlite3_stmt *st;
		assert_int_equal(sqlite3_prepare_v2(store_reader_sqlite(r), sql[i], -1, &st, NULL),
				 SQLITE_OK);
		int rows = 0;
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *d = (const char *)sqlite3_column_text(st, 3);
			assert_non_null(strstr(d, "INDEX flows_peer (peer=?)"));
			assert_null(strstr(d, "TEMP B-TREE"));
			rows++;
		}
		assert_int_equal(rows, 1);
		sqlite3_finalize(st);
	}
	store_reader_close(r);
	store_close(s);
}

static int usage_collect(void *ctx, const struct store_usage *u)
{
	json_array_append_new(
		ctx, json_pack("{s:s?,s:I,s:I,s:I,s:I}", "key", u->key, "c",
			       (json_int_t)u->connections, "x", (json_int_t)u->exchanges, "up",
			       (json_int_t)u->bytes_up, "down", (json_int_t)u->bytes_down));
	return 0;
}

/* Accounting: connection records' bytes summed per group, exchanges only
 * counted; a filter narrows; groups without a key are null. */
static void test_usage(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->log, NULL), 0);
	int64_t t0 = now_us() - 10000000;
	for (int i = 0; i < 12; i++) {
		char id[32];
		snprintf(id, sizeof(id), "u-%d", i);
		json_t *r = common(i % 3 == 2 ? "http" : "tcp", id, t0 + i, t0 + i + 5);
		json_object_set_new(r, "bytes_up", json_integer(100 * (i + 1)));
		json_object_set_new(r, "bytes_down", json_integer(1000));
		json_object_set_new(r, "end_reason", json_string("fin"));
		if (i >= 6) {
			json_object_set_new(r, "peer", json_null());
			json_object_set_new(r, "via", json_string("http-proxy"));
			if (i >= 9)
				json_object_set_new(r, "user", json_string("alice"));
		}
		log_record(log, r);
	}
	flowlog_close(log);
	struct store *s = open_store(t, NULL);
	wait_ingested(t, s);
	struct store_reader *r = reader(t);

	json_t *rows = json_array();
	assert_int_equal(store_usage(r, STORE_BY_VIA, NULL, NULL, 0, 0, usage_collect, rows), 0);
	/* tcp: i = 0,1,3,4 (wireguard), 6,7,9,10 (http-proxy); http: 2,5 and 8,11. */
	json_t *want =
		json_pack("[{s:s,s:i,s:i,s:i,s:i},{s:s,s:i,s:i,s:i,s:i}]", "key", "http-proxy", "c",
			  4, "x", 2, "up", 700 + 800 + 1000 + 1100, "down", 4000, "key",
			  "wireguard", "c", 4, "x", 2, "up", 100 + 200 + 400 + 500, "down", 4000);
	if (!json_equal(rows, want)) {
		char *d = json_dumps(rows, 0);
		fail_msg("by via: %s", d);
	}
	json_decref(want);
	json_array_clear(rows);

	assert_int_equal(store_usage(r, STORE_BY_USER, NULL, NULL, 0, 1, usage_collect, rows), 0);
	assert_int_equal(json_array_size(rows), 1); /* the limit */
	assert_true(json_is_null(json_object_get(json_array_get(rows, 0), "key")));
	json_array_clear(rows);

	struct flows_param p = { .type = FLOWS_PARAM_TEXT, .text = "alice" };
	assert_int_equal(
		store_usage(r, STORE_BY_DEVICE, "user = ?1", &p, 1, 0, usage_collect, rows), 0);
	want = json_pack("[{s:n,s:i,s:i,s:i,s:i}]", "key", "c", 2, "x", 1, "up", 1000 + 1100,
			 "down", 2000);
	assert_true(json_equal(rows, want));
	json_decref(want);
	json_decref(rows);
	store_reader_close(r);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_paging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replaced_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clear, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_age, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_lag, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_flows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
