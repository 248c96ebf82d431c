/* The filter language's SQL over a store of many flows: the time to answer
 * one page (100 flows, newest first, as a list view asks) for filters the
 * store should answer from an index, and for some it cannot.
 *
 *   bench_flows_filter [FLOWS [DB]]   FLOWS: 1000000; DB: a file to keep
 *                                     (reused when it already holds FLOWS)
 *
 * The flows are synthetic: 2,000 hosts, URLs with a path and a query, a mix
 * of statuses, methods, peers and record types. No baseline: the targets
 * are 50 ms for a host or status page and 100 ms for a URL substring. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flows/filter.h"
#include "flows/schema.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t rng = 88172645463325252ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void check(sqlite3 *db, int rc, const char *what)
{
	if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
		exit(1);
	}
}

static long long count(sqlite3 *db)
{
	sqlite3_stmt *st;
	long long n = -1;
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM flows", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void fill(sqlite3 *db, long long n)
{
	static const char *const types[] = { "http", "http", "http", "http", "http", "http",
					     "http", "tcp",  "tcp",  "dns",  "udp" };
	static const char *const methods[] = { "GET", "GET", "GET", "GET", "POST", "PUT", "HEAD" };
	static const int statuses[] = { 200, 200, 200, 200, 200, 200, 200, 200,
					204, 304, 301, 404, 404, 500, 503 };
	static const char *const peers[] = { "phone", "laptop", "tablet", "tv", "watch" };
	check(db, sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), "begin");
	sqlite3_stmt *ins, *fts;
	check(db,
	      sqlite3_prepare_v2(db,
				 "INSERT INTO flows (seq, id, type, start_us, end_us, duration_us,"
				 " peer, client, server, host, method, url, status, bytes_up,"
				 " bytes_down, passthrough, tls_rejected, websocket, has_response,"
				 " record) VALUES (?1, ?2, ?3, ?4, ?4, 0, ?5, '10.66.77.2:40000',"
				 " '192.0.2.1:443', ?6, ?7, ?8, ?9, 0, 0, 0, 0, 0, ?10, '{}')",
				 -1, &ins, NULL),
	      "prepare");
	check(db,
	      sqlite3_prepare_v2(db, "INSERT INTO flow_fts (rowid, url, host) VALUES (?, ?, ?)", -1,
				 &fts, NULL),
	      "prepare");
	for (long long i = 1; i <= n; i++) {
		const char *type = types[next() % 11];
		bool http = strcmp(type, "http") == 0;
		char id[32], host[64], url[160];
		snprintf(id, sizeof(id), "bench-%lld", i);
		unsigned h = (unsigned)(next() % 2000);
		if (h % 4 == 0)
			snprintf(host, sizeof(host), "cdn%u.shop%u.test", h, h % 50);
		else
			snprintf(host, sizeof(host), "api%u.example%u.com", h, h % 10);
		snprintf(url, sizeof(url), "https://%s/%s/%u/item/%u?q=%llx", host,
			 h % 3 ? "api/v2" : "static", h, (unsigned)(next() % 100000),
			 (unsigned long long)(next() % 0xffffff));
		sqlite3_bind_int64(ins, 1, i);
		sqlite3_bind_text(ins, 2, id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(ins, 3, type, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 4, 1714564800000000LL + i * 1000);
		sqlite3_bind_text(ins, 5, peers[next() % 5], -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 6, host, -1, SQLITE_TRANSIENT);
		if (http) {
			sqlite3_bind_text(ins, 7, methods[next() % 7], -1, SQLITE_STATIC);
			sqlite3_bind_text(ins, 8, url, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int(ins, 9, statuses[next() % 15]);
			sqlite3_bind_int(ins, 10, 1);
		} else {
			sqlite3_bind_null(ins, 7);
			sqlite3_bind_null(ins, 8);
			sqlite3_bind_int(ins, 9, 0);
			sqlite3_bind_int(ins, 10, 0);
		}
		check(db, sqlite3_step(ins), "insert");
		sqlite3_reset(ins);
		sqlite3_bind_int64(fts, 1, i);
		if (http)
			sqlite3_bind_text(fts, 2, url, -1, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(fts, 2);
		sqlite3_bind_text(fts, 3, host, -1, SQLITE_TRANSIENT);
		check(db, sqlite3_step(fts), "insert fts");
		sqlite3_reset(fts);
		if (i % 100000 == 0) {
			fprintf(stderr, "\r%lld flows", i);
			check(db, sqlite3_exec(db, "COMMIT; BEGIN", NULL, NULL, NULL), "commit");
		}
	}
	fprintf(stderr, "\n");
	sqlite3_finalize(ins);
	sqlite3_finalize(fts);
	check(db, sqlite3_exec(db, "COMMIT; ANALYZE", NULL, NULL, NULL), "commit");
}

static double median(double *t, int n)
{
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (t[j] < t[i]) {
				double x = t[i];
				t[i] = t[j];
				t[j] = x;
			}
	return t[n / 2];
}

/* The median time of a page and of the page after it (ms), for query q
 * whose last parameter is the cursor. */
static void time_pages(sqlite3 *db, const char *q, const struct filter_sql *s, int *rows,
		       double *first, double *second)
{
	sqlite3_stmt *st;
	check(db, sqlite3_prepare_v2(db, q, -1, &st, NULL), q);
	int cursor_param = sqlite3_bind_parameter_count(st);
	double times[2][5];
	for (int run = 0; run < 5; run++) {
		long long cursor = 1LL << 62;
		for (int p = 0; p < 2; p++) {
			double t0 = now_ms();
			check(db, filter_sql_bind(st, s), "bind");
			sqlite3_bind_int64(st, cursor_param, cursor);
			int n = 0;
			while (sqlite3_step(st) == SQLITE_ROW) {
				cursor = sqlite3_column_int64(st, 0);
				n++;
			}
			sqlite3_reset(st);
			times[p][run] = now_ms() - t0;
			if (p == 0)
				*rows = n;
		}
	}
	*first = median(times[0], 5);
	*second = median(times[1], 5);
	sqlite3_finalize(st);
}

static void page(sqlite3 *db, const char *expr)
{
	struct filter_error err;
	struct filter *f = filter_parse(expr, &err);
	if (!f) {
		fprintf(stderr, "%s: %s\n", expr, err.message);
		exit(1);
	}
	struct filter_sql s;
	if (filter_to_sql(f, &s) != 0)
		exit(1);
	char *q = malloc(strlen(s.where) + (s.driven ? strlen(s.driven) : 0) + 256);
	sprintf(q,
		"SELECT flows.seq FROM flows WHERE (%s) AND flows.seq < ?%zu ORDER BY flows.seq "
		"DESC LIMIT 100",
		s.where, s.nparams + 1);
	int rows;
	double a, b;
	time_pages(db, q, &s, &rows, &a, &b);
	printf("%-40s %4d  %8.2f %8.2f", expr, rows, a, b);
	if (s.driven) {
		sprintf(q,
			"SELECT flows.seq FROM flow_fts CROSS JOIN flows ON flows.seq = "
			"flow_fts.rowid WHERE flow_fts MATCH ?%zu AND flow_fts.rowid < ?%zu AND "
			"(%s) "
			"ORDER BY flow_fts.rowid DESC LIMIT 100",
			s.fts_param, s.nparams + 1, s.driven);
		int drows;
		time_pages(db, q, &s, &drows, &a, &b);
		if (drows != rows) {
			fprintf(stderr, "%s: %d rows driven, %d not\n", expr, drows, rows);
			exit(1);
		}
		printf("  %8.2f %8.2f", a, b);
	}
	printf("\n");
	free(q);
	filter_sql_free(&s);
	filter_free(f);
}

int main(int argc, char **argv)
{
	long long n = argc > 1 ? atoll(argv[1]) : 1000000;
	const char *path = argc > 2 ? argv[2] : ":memory:";
	sqlite3 *db;
	if (sqlite3_open(path, &db) != SQLITE_OK || filter_sqlite_register(db) != SQLITE_OK)
		return 1;
	check(db,
	      sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA cache_size=-262144", NULL, NULL,
			   NULL),
	      "pragma");
	check(db, sqlite3_exec(db, FLOWS_SCHEMA_SQL, NULL, NULL, NULL), "schema");
	if (count(db) != n) {
		check(db,
		      sqlite3_exec(db, "DELETE FROM flows; DELETE FROM flow_fts", NULL, NULL, NULL),
		      "empty");
		double t0 = now_ms();
		fill(db, n);
		fprintf(stderr, "filled in %.1f s\n", (now_ms() - t0) / 1e3);
	}
	printf("%lld flows; ms for a page of 100 and the next, median of 5 runs\n", n);
	printf("%-40s %4s  %17s  %17s\n", "filter", "rows", "WHERE form", "driven form");
	const char *filters[] = {
		"~c 404",
		"~c 503 ~m ^put$",
		"~d ^api7\\.example7\\.com$",
		"~d example3.com",
		"~d shop8.test",
		"~d cdn1236",
		"~u /item/98765",
		"~u /api/v2/",
		"/1237/item/",
		"~m ^post$",
		"~peer ^tv$",
		"~tcp",
		"~c 404 ~d ^api7\\.example7\\.com$",
		"~d example3.com & ~c 500",
		"~u item/4242 | ~d ^cdn8\\.shop8\\.test$",
		"~u 'item/[0-9]+7\\?q=abc'",
		"~u item.*abcde",
		"~u a.c",
		/* Worst for the driven form: a literal in most flows, with a test
		 * that matches none of them. */
		"~d example ~c 599",
	};
	for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
		page(db, filters[i]);
	sqlite3_close(db);
	return 0;
}
