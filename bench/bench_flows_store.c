/* The flow store at scale: N generated records (mostly http, some tcp,
 * dns, udp and websocket; 5,000 hosts, Zipf-distributed; bodies on 10% of
 * the exchanges) in a flows file in a temp dir, then
 *   ingestion: store_open catching up from the log (rows/s), against two
 *             baselines in the same run: parsing alone (jansson +
 *             flow_fields_read) and parsing plus a plain INSERT of the same
 *             columns into a table with no index, no FTS, no bodies split;
 *   live:     the store following a log appended at 10,000 rows/s (the
 *             HTTPS path's rate), its cpu per row and share of a core until
 *             the last row is committed, against the appending alone, and
 *             then the URL index's cpu (it follows when the log is quiet);
 *   queries:  at N flows, the median of 7 runs (warm) of a first page of
 *             100 newest, page 100 through the cursor, host = ? (rare and
 *             common host), status = 404, URL substring (trigram FTS, a
 *             rare and a common substring, in the forms the filter compiler
 *             may use), and counts.
 * Goals at 1,000,000 flows: a page < 5 ms, host or status filter < 50 ms,
 * URL substring < 100 ms.
 *
 * Usage: bench_flows_store [N, default 1000000] [dir, default /tmp]
 *        bench_flows_store --live FLOWS_FILE [RATE, default 10000]
 *        (BENCH_KEEP=1 keeps the temp dir, with its flows file and db)
 *        bench_flows_store --queries DIR   (the queries alone, on a kept db) */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "flows/fields.h"
#include "flows/flowlog.h"
#include "flows/recscan.h"
#include "flows/store.h"

#define HOSTS 5000
#define RUNS 7

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Every thread's: the store's writer, or the baseline on the main one. */
static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- generating --------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static unsigned below(unsigned n)
{
	return (unsigned)(next() % n);
}

static double unit(void)
{
	return (double)(next() >> 11) / (double)(1ull << 53);
}

static char hosts[HOSTS][64];
static double host_cdf[HOSTS];

static const char *const subs[] = { "www",  "api",    "cdn", "static", "img",   "m",
				    "auth", "events", "ws",  "edge",   "media", "app" };
static const char *const words[] = { "example", "shop",   "news",    "social", "video", "mail",
				     "cloud",   "search", "maps",    "music",  "bank",  "travel",
				     "sport",   "games",  "weather", "photo",  "chat",  "docs" };
static const char *const tlds[] = { "com", "net", "org", "io", "de", "co.uk", "app" };

/* Host 0 is the most common (about a tenth of all flows), 4999 the rarest. */
static void make_hosts(void)
{
	double sum = 0;
	for (int i = 0; i < HOSTS; i++) {
		snprintf(hosts[i], sizeof(hosts[i]), "%s.%s%d.%s",
			 subs[i % (sizeof(subs) / sizeof(subs[0]))],
			 words[(i / 12) % (sizeof(words) / sizeof(words[0]))], i,
			 tlds[i % (sizeof(tlds) / sizeof(tlds[0]))]);
		sum += 1.0 / (i + 1);
		host_cdf[i] = sum;
	}
	for (int i = 0; i < HOSTS; i++)
		host_cdf[i] /= sum;
}

static int pick_host(void)
{
	double u = unit();
	int lo = 0, hi = HOSTS - 1;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (host_cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void iso(int64_t us, char out[FLOWLOG_TIME_LEN])
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };
	flowlog_format_time(&ts, out);
}

static void token(char *out, size_t n)
{
	static const char a[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	for (size_t i = 0; i + 1 < n; i++)
		out[i] = a[below(36)];
	out[n - 1] = 0;
}

/* A rare URL substring: in about one URL in 100,000. */
#define RARE "zqxjkvw"

static void path(char *out, size_t n, unsigned i)
{
	char t[17], u[9];
	token(t, sizeof(t));
	token(u, sizeof(u));
	static const char *const res[] = { "users",  "items",    "orders", "feed",
					   "search", "comments", "likes",  "cart" };
	unsigned k = below(100);
	if (i % 100000 == 77)
		snprintf(out, n, "/api/v2/%s/" RARE "/%s", res[below(8)], u);
	else if (k < 40)
		snprintf(out, n, "/api/v%u/%s/%u?fields=%s&page=%u", 1 + below(3), res[below(8)],
			 below(1000000), u, below(50));
	else if (k < 60)
		snprintf(out, n, "/static/js/%s.%s.js", res[below(8)], t);
	else if (k < 75)
		snprintf(out, n, "/images/%u/%s.%s", below(10000), u, below(2) ? "png" : "jpg");
	else if (k < 85)
		snprintf(out, n, "/%s/%s-%u.html", words[below(18)], u, below(100000));
	else if (k < 92)
		snprintf(out, n, "/collect?v=1&tid=UA-%u&cid=%s", below(100000), t);
	else
		snprintf(out, n, "/");
}

static const char *pick_status(const char *method)
{
	unsigned k = below(1000);
	if (strcmp(method, "OPTIONS") == 0)
		return "204";
	return k < 700   ? "200"
	       : k < 760 ? "304"
	       : k < 800 ? "204"
	       : k < 840 ? "302"
	       : k < 860 ? "301"
	       : k < 910 ? "404"
	       : k < 930 ? "403"
	       : k < 945 ? "500"
	       : k < 960 ? "503"
	       : k < 980 ? "201"
			 : "206";
}

static const char *pick_method(void)
{
	unsigned k = below(100);
	return k < 75   ? "GET"
	       : k < 90 ? "POST"
	       : k < 93 ? "PUT"
	       : k < 95 ? "DELETE"
	       : k < 98 ? "OPTIONS"
			: "HEAD";
}

struct gen {
	FILE *fp;
	char *b64;
	size_t b64cap;
	uint8_t bin[4096];
	char text[4096];
};

/* A BODY object: JSON-ish text, or base64 of binary bytes. */
static void put_body(struct gen *g, bool binary, unsigned len)
{
	if (binary) {
		for (unsigned i = 0; i < len; i++)
			g->bin[i] = (uint8_t)next();
		size_t need = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
		if (need > g->b64cap) {
			g->b64 = realloc(g->b64, need);
			g->b64cap = need;
		}
		sodium_bin2base64(g->b64, need, g->bin, len, sodium_base64_VARIANT_ORIGINAL);
		fprintf(g->fp, "{\"base64\":\"%s\",\"size\":%u,\"truncated\":false}", g->b64, len);
		return;
	}
	unsigned n = 0;
	while (n + 40 < len && n + 40 < sizeof(g->text)) {
		char t[9];
		token(t, sizeof(t));
		n += (unsigned)snprintf(g->text + n, sizeof(g->text) - n,
					"{\\\"id\\\":%u,\\\"name\\\":\\\"%s\\\"},", below(100000),
					t);
	}
	fprintf(g->fp, "{\"text\":\"[%.*s]\",\"size\":%u,\"truncated\":false}", (int)n, g->text,
		n + 2);
}

static void common(struct gen *g, const char *type, unsigned i, int64_t start, int64_t end,
		   unsigned server_octet, unsigned port, long up, long down)
{
	char a[FLOWLOG_TIME_LEN], b[FLOWLOG_TIME_LEN];
	iso(start, a);
	iso(end, b);
	fprintf(g->fp,
		"{\"type\":\"%s\",\"id\":\"b3nc4f10-%u\",\"peer\":\"%s\",\"client\":\"10.66.77.%u:%"
		"u\","
		"\"server\":\"203.0.%u.%u:%u\",\"start\":\"%s\",\"end\":\"%s\",\"bytes_up\":%ld,"
		"\"bytes_down\":%ld",
		type, i + 1, below(4) ? "phone" : "laptop", 2 + below(3), 30000 + below(30000),
		server_octet % 256, (server_octet * 7) % 256, port, a, b, up, down);
}

static void gen_record(struct gen *g, unsigned i, int64_t t)
{
	int h = pick_host();
	const char *host = hosts[h];
	unsigned k = below(100);
	int64_t dur = 1000 + below(400000);
	if (k < 80) {
		const char *method = pick_method();
		const char *status = pick_status(method);
		bool bodies = below(10) == 0;
		bool post = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
		unsigned req_len = bodies && post ? 100 + below(900) : 0;
		unsigned resp_len = bodies ? 200 + below(3500) : 0;
		bool binary = below(10) < 3;
		bool h2 = below(3) != 0;
		char p[160];
		path(p, sizeof(p), i);
		common(g, "http", i, t - dur, t, (unsigned)h, 443, (long)req_len,
		       (long)(resp_len ? resp_len : below(50000)));
		fprintf(g->fp,
			",\"end_reason\":\"complete\",\"conn\":\"b3nc4f10-c%u\",\"tls\":{"
			"\"client\":"
			"{\"version\":\"TLSv1.3\",\"cipher\":\"TLS_AES_128_GCM_SHA256\",\"alpn\":"
			"\"%s\"},"
			"\"upstream\":{\"version\":\"TLSv1.3\",\"cipher\":\"TLS_AES_256_GCM_"
			"SHA384\","
			"\"alpn\":\"%s\"}},\"http_version\":\"%s\",%s\"method\":\"%s\","
			"\"url\":\"https://%s%s\",\"request\":{\"headers\":[",
			i / 8, h2 ? "h2" : "http/1.1", h2 ? "h2" : "http/1.1",
			h2 ? "HTTP/2" : "HTTP/1.1", h2 ? "\"stream_id\":1," : "", method, host, p);
		if (h2)
			fprintf(g->fp,
				"[\":method\",\"%s\"],[\":scheme\",\"https\"],[\":authority\",\"%"
				"s\"],"
				"[\":path\",\"%s\"],",
				method, host, p);
		else
			fprintf(g->fp, "[\"Host\",\"%s\"],", host);
		fprintf(g->fp,
			"[\"user-agent\",\"Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 "
			"(KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36\"],"
			"[\"accept\",\"*/*\"],[\"accept-encoding\",\"gzip, br\"],"
			"[\"accept-language\",\"en-US,en;q=0.9\"]%s]",
			req_len ? ",[\"content-type\",\"application/json\"]" : "");
		if (req_len) {
			fprintf(g->fp, ",\"body\":");
			put_body(g, false, req_len);
		}
		fprintf(g->fp,
			"},\"response\":{\"status\":%s,%s\"headers\":[[\"content-type\",\"%s\"],"
			"[\"content-length\",\"%u\"],[\"cache-control\",\"max-age=%u\"],"
			"[\"date\",\"Mon, 01 Dec 2026 12:00:00 GMT\"],[\"server\",\"nginx\"]%s]",
			status, h2 ? "" : "\"reason\":\"OK\",",
			binary ? "image/png" : "application/json; charset=utf-8", resp_len,
			below(86400),
			bodies && binary && below(2) ? ",[\"content-encoding\",\"gzip\"]" : "");
		if (resp_len) {
			fprintf(g->fp, ",\"body\":");
			put_body(g, binary, resp_len);
		}
		char a[FLOWLOG_TIME_LEN], b[FLOWLOG_TIME_LEN];
		iso(t - dur / 2, a);
		iso(t, b);
		fprintf(g->fp,
			"},\"timings\":{\"start\":\"%s\",\"request_end\":\"%s\",\"response_start\":"
			"\"%s\",\"end\":\"%s\"}}\n",
			a, a, b, b);
	} else if (k < 90) {
		common(g, "tcp", i, t - dur * 20, t, (unsigned)h, 443, (long)below(20000),
		       (long)below(2000000));
		const char *reason = below(20)  ? "fin"
				     : below(2) ? "tls:client_rejected"
						: "client_reset";
		fprintf(g->fp,
			",\"end_reason\":\"%s\",\"proto\":\"%s\",\"sni\":\"%s\",\"alpn_offered\":"
			"[\"h2\",\"http/"
			"1.1\"],\"tls\":{\"client\":{\"version\":\"TLSv1.3\",\"cipher\":"
			"\"TLS_AES_128_GCM_SHA256\",\"alpn\":\"h2\"},\"upstream\":null}}\n",
			reason, below(10) ? "tls" : "tls-passthrough", host);
	} else if (k < 96) {
		common(g, "dns", i, t - 2000, t, 0, 53, 34, 86);
		fprintf(g->fp,
			",\"packets_up\":1,\"packets_down\":1,\"end_reason\":\"answered\","
			"\"transport\":\"udp\",\"name\":\"%s\",\"qtype\":\"A\",\"rcode\":"
			"\"NOERROR\","
			"\"answers\":[{\"name\":\"%s\",\"type\":\"A\",\"ttl\":60,\"data\":"
			"\"203.0.%u.%u\"}],\"upstream\":\"127.0.0.1:53\",\"duration_ms\":0.412}\n",
			host, host, (unsigned)h % 256, ((unsigned)h * 7) % 256);
	} else if (k < 99) {
		common(g, "udp", i, t - 30000000, t, (unsigned)h, 443, (long)below(9000),
		       (long)below(90000));
		fprintf(g->fp, ",\"packets_up\":%u,\"packets_down\":%u,\"end_reason\":\"idle\"}\n",
			1 + below(20), 1 + below(80));
	} else {
		common(g, "websocket", i, t - dur, t, (unsigned)h, 443, 60, 200);
		char a[FLOWLOG_TIME_LEN];
		iso(t - dur, a);
		fprintf(g->fp,
			",\"end_reason\":\"fin\",\"conn\":\"b3nc4f10-c%u\",\"url\":\"wss://%s/"
			"socket\","
			"\"messages\":[{\"dir\":\"up\",\"time\":\"%s\",\"opcode\":\"text\","
			"\"body\":"
			"{\"text\":\"{\\\"op\\\":1}\",\"size\":8,\"truncated\":false}},{\"dir\":"
			"\"down\",\"time\":\"%s\",\"opcode\":\"text\",\"body\":{\"text\":\"ok\","
			"\"size\":2,\"truncated\":false}}]}\n",
			i / 8, host, a, a);
	}
}

static void generate(const char *path, unsigned n)
{
	struct gen g = { .fp = fopen(path, "w") };
	if (!g.fp) {
		perror(path);
		exit(1);
	}
	static char buf[1 << 20];
	setvbuf(g.fp, buf, _IOFBF, sizeof(buf));
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	/* One flow every 10 ms, ending now. */
	int64_t t = (int64_t)ts.tv_sec * 1000000 - (int64_t)n * 10000;
	for (unsigned i = 0; i < n; i++) {
		t += 5000 + below(10000);
		gen_record(&g, i, t);
	}
	fclose(g.fp);
	free(g.b64);
}

/* ---- baselines ---------------------------------------------------------- */

/* Each line parsed as the store parses it (rec_scan), or with jansson and
 * flow_fields_read; with `db`, also inserted into a plain table (same
 * columns, no index, no FTS, the line as the record). */
static double baseline(const char *log, const char *db_path, bool use_jansson, unsigned *rows,
		       double *cpu)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	if (db_path) {
		if (sqlite3_open(db_path, &db) != SQLITE_OK ||
		    sqlite3_exec(
			    db,
			    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
			    " PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 16384;"
			    "CREATE TABLE plain (seq INTEGER PRIMARY KEY, id, type, start_us,"
			    " end_us, duration_us, peer, client, server, conn, host, method, url,"
			    " status, req_ctype, resp_ctype, bytes_up, bytes_down, proto,"
			    " passthrough, tls_rejected, websocket, has_response, end_reason,"
			    " error, record)",
			    NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_prepare_v2(db,
				       "INSERT INTO plain VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
				       " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
				       -1, &st, NULL) != SQLITE_OK) {
			fprintf(stderr, "baseline db: %s\n", sqlite3_errmsg(db));
			exit(1);
		}
	}
	FILE *fp = fopen(log, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	unsigned n = 0;
	double t0 = now_s(), c0 = cpu_s();
	if (db)
		sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	struct rec_scan rs = { 0 };
	while ((len = getline(&line, &cap, fp)) > 0) {
		json_t *rec = NULL;
		struct flow_fields f;
		if (use_jansson) {
			rec = json_loadb(line, (size_t)len - 1, JSON_ALLOW_NUL, NULL);
			if (!rec || flow_fields_read(rec, &f) < 0) {
				json_decref(rec);
				continue;
			}
		} else {
			if (rec_scan(&rs, line, (size_t)len - 1))
				continue;
			f = rs.f;
		}
		if (st) {
			const char *text[] = { f.id, f.type };
			for (int i = 0; i < 2; i++)
				sqlite3_bind_text(st, i + 1, text[i], -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 3, f.start_us);
			sqlite3_bind_int64(st, 4, f.end_us);
			sqlite3_bind_int64(st, 5, f.end_us - f.start_us);
			const char *more[] = { f.peer, f.client, f.server, f.conn,
					       f.host, f.method, f.url };
			for (int i = 0; i < 7; i++)
				sqlite3_bind_text(st, 6 + i, more[i], -1, SQLITE_STATIC);
			sqlite3_bind_int(st, 13, f.status);
			sqlite3_bind_text(st, 14, f.req_ctype, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 15, f.resp_ctype, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 16, f.bytes_up);
			sqlite3_bind_int64(st, 17, f.bytes_down);
			sqlite3_bind_text(st, 18, f.proto, -1, SQLITE_STATIC);
			sqlite3_bind_int(st, 19, f.passthrough);
			sqlite3_bind_int(st, 20, f.tls_rejected);
			sqlite3_bind_int(st, 21, f.websocket);
			sqlite3_bind_int(st, 22, f.has_response);
			sqlite3_bind_text(st, 23, f.end_reason, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 24, f.error, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 25, line, (int)len - 1, SQLITE_STATIC);
			if (sqlite3_step(st) != SQLITE_DONE) {
				fprintf(stderr, "baseline insert: %s\n", sqlite3_errmsg(db));
				exit(1);
			}
			sqlite3_reset(st);
			if (++n % 5000 == 0)
				sqlite3_exec(db, "COMMIT; BEGIN", NULL, NULL, NULL);
		} else {
			n++;
		}
		json_decref(rec);
	}
	if (db)
		sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	rec_scan_free(&rs);
	double dt = now_s() - t0;
	*cpu = cpu_s() - c0;
	free(line);
	fclose(fp);
	sqlite3_finalize(st);
	sqlite3_close(db);
	*rows = n;
	return dt;
}

/* ---- live --------------------------------------------------------------- */

/* The first `rows` lines of `src` appended to a new log in `dir` at `rate`
 * lines a second, every millisecond (as flowlog batches them), with a
 * store following it, or (the baseline) the appending alone. Returns the
 * process's cpu seconds up to the store's commit of the last line (*lag:
 * seconds from the last append to it); *index_cpu: what the URL index then
 * takes (store_flush). */
static unsigned live_rows; /* lines the last live() appended */

static double live(const char *src, const char *dir, unsigned rate, unsigned rows, bool store,
		   double *lag, double *index_cpu)
{
	int in = open(src, O_RDONLY);
	struct stat st;
	if (in < 0 || fstat(in, &st) < 0) {
		perror(src);
		exit(1);
	}
	char *data = malloc((size_t)st.st_size + 1);
	size_t *ends = malloc(sizeof(*ends) * (rows + 1));
	if (!data || !ends || read(in, data, (size_t)st.st_size) != st.st_size) {
		perror("read");
		exit(1);
	}
	close(in);
	unsigned have = 0;
	for (size_t i = 0; i < (size_t)st.st_size && have < rows; i++)
		if (data[i] == '\n')
			ends[have++] = i + 1;
	live_rows = have;
	char log[300], db[300];
	snprintf(log, sizeof(log), "%s/" FLOWLOG_FILE, dir);
	snprintf(db, sizeof(db), "%s/" STORE_FILE, dir);
	unlink(log);
	unlink(db);
	int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	struct store *s = NULL;
	if (fd < 0 ||
	    (store && store_open(&s, dir, NULL, &(struct store_options){ .max_size = -1 }))) {
		fprintf(stderr, "live: cannot open %s\n", dir);
		exit(1);
	}
	sync();
	double c0 = cpu_s(), t0 = now_s();
	unsigned sent = 0;
	size_t off = 0;
	while (sent < have) {
		unsigned due = (unsigned)((now_s() - t0) * rate);
		if (due > have)
			due = have;
		if (due > sent) {
			if (write(fd, data + off, ends[due - 1] - off) !=
			    (ssize_t)(ends[due - 1] - off)) {
				perror("write");
				exit(1);
			}
			off = ends[due - 1];
			sent = due;
			store_notify(s);
		}
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	double t_end = now_s();
	/* Committed, as the list shows them; the URL index follows later. */
	for (struct store_stats st; s;) {
		store_stats(s, &st);
		if (st.offset == (int64_t)off)
			break;
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	*lag = now_s() - t_end;
	double cpu = cpu_s() - c0;
	*index_cpu = 0;
	if (s) {
		double c1 = cpu_s();
		if (store_flush(s, -1)) {
			fprintf(stderr, "live: store failed\n");
			exit(1);
		}
		*index_cpu = cpu_s() - c1;
	}
	store_close(s);
	close(fd);
	free(data);
	free(ends);
	return cpu;
}

/* ---- queries ------------------------------------------------------------ */

struct page {
	int n;
};

static int on_row(void *ctx, const struct store_row *row)
{
	struct page *p = ctx;
	(void)row;
	p->n++;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The median of RUNS runs of one page, in ms; *rows: that page's rows. */
static double time_list(struct store_reader *r, const struct store_query *q, int *rows)
{
	double t[RUNS];
	for (int i = 0; i < RUNS; i++) {
		struct page p = { 0 };
		int64_t next;
		double t0 = now_s();
		int rc = store_list(r, q, on_row, &p, &next);
		t[i] = (now_s() - t0) * 1e3;
		if (rc) {
			fprintf(stderr, "list %s: %d %s\n", q->where ? q->where : "", rc,
				store_reader_errmsg(r));
			exit(1);
		}
		*rows = p.n;
	}
	qsort(t, RUNS, sizeof(t[0]), cmp_double);
	return t[RUNS / 2];
}

static void query(struct store_reader *r, const char *name, const char *where, const char *param,
		  const char *match, double goal)
{
	struct flows_param p = { .type = FLOWS_PARAM_TEXT, .text = param };
	struct store_query q = {
		.where = where, .params = &p, .nparams = param ? 1 : 0, .match = match, .limit = 100
	};
	int rows;
	double ms = time_list(r, &q, &rows);
	printf("  %-48s %8.2f ms  %3d rows  %s\n", name, ms, rows,
	       goal ? (ms < goal ? "ok" : "OVER GOAL") : "");
}

static void count(struct store_reader *r, const char *name, const char *where, const char *param)
{
	struct flows_param p = { .type = FLOWS_PARAM_TEXT, .text = param };
	double t[RUNS];
	int64_t n = 0;
	for (int i = 0; i < RUNS; i++) {
		double t0 = now_s();
		if (store_count(r, where, &p, param ? 1 : 0, &n)) {
			fprintf(stderr, "count: %s\n", store_reader_errmsg(r));
			exit(1);
		}
		t[i] = (now_s() - t0) * 1e3;
	}
	qsort(t, RUNS, sizeof(t[0]), cmp_double);
	printf("  %-48s %8.2f ms  %lld\n", name, t[RUNS / 2], (long long)n);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

#define LAG_ROWS 50000

/* URL substring queries in the two forms a filter compiles to: the index
 * driving (match, with the test in the where clause), or the where clause
 * driving. */
static void substrings(struct store_reader *r, const char *note)
{
	const char *rare = "url : \"" RARE "\"", *common = "url : \"/api/\"";
	const char *t_rare = "instr(url, '" RARE "') > 0", *t_common = "instr(url, '/api/') > 0";
	char name[96], w[160];
#define SUB(label, extra, param, m, t)                                                             \
	do {                                                                                       \
		snprintf(name, sizeof(name), "%s%s", label, note);                                 \
		snprintf(w, sizeof(w), "%s%s", extra, t);                                          \
		query(r, name, w, param, m, 100);                                                  \
	} while (0)
	SUB("url substring (rare)", "", NULL, rare, t_rare);
	SUB("url substring (common)", "", NULL, common, t_common);
	SUB("url substring (common) AND status = 404", "status = 404 AND ", NULL, common, t_common);
	SUB("url substring (rare) AND status = 404", "status = 404 AND ", NULL, rare, t_rare);
	SUB("url substring (common) AND host = ? (rare)", "host = ?1 AND ", hosts[HOSTS - 1],
	    common, t_common);
	SUB("url substring (rare) AND host = ? (common)", "host = ?1 AND ", hosts[0], rare, t_rare);
#undef SUB
}

static void queries(const char *dir)
{
	struct store_reader *r;
	if (store_reader_open(&r, dir)) {
		fprintf(stderr, "reader failed\n");
		exit(1);
	}
	int64_t flows = 0;
	store_count(r, NULL, NULL, 0, &flows);
	printf("queries at %lld flows (median of %d, warm):\n", (long long)flows, RUNS);
	query(r, "first page, newest 100", NULL, NULL, NULL, 5);
	struct store_query q = { .limit = 100 };
	struct page p;
	for (int i = 0; i < 99; i++)
		store_list(r, &q, on_row, &p, &q.cursor);
	int got;
	double ms = time_list(r, &q, &got);
	printf("  %-48s %8.2f ms  %3d rows  %s\n", "page 100 by cursor", ms, got,
	       ms < 5 ? "ok" : "OVER GOAL");
	query(r, "host = ? (rare host)", "host = ?1", hosts[HOSTS - 1], NULL, 50);
	query(r, "host = ? (common host)", "host = ?1", hosts[0], NULL, 50);
	query(r, "status = 404", "status = 404", NULL, NULL, 50);
	query(r, "type = 'dns' AND host = ?", "type = 'dns' AND host = ?1", hosts[3], NULL, 50);
	substrings(r, "");
	/* The URL index behind by as much as it may lag under load: those rows
	 * are tested directly. */
	char db_path[300];
	snprintf(db_path, sizeof(db_path), "%s/" STORE_FILE, dir);
	sqlite3 *w;
	char sql[128];
	snprintf(sql, sizeof(sql), "UPDATE meta SET value = value - %d WHERE key = 'fts_seq'",
		 LAG_ROWS);
	if (sqlite3_open(db_path, &w) == SQLITE_OK &&
	    sqlite3_exec(w, sql, NULL, NULL, NULL) == SQLITE_OK) {
		substrings(r, ", index 50,000 behind");
		snprintf(sql, sizeof(sql),
			 "UPDATE meta SET value = value + %d WHERE key = 'fts_seq'", LAG_ROWS);
		sqlite3_exec(w, sql, NULL, NULL, NULL);
	}
	sqlite3_close(w);
	const char *rare = "url : \"" RARE "\"", *common = "url : \"/api/\"";
	const char *fts_in = "seq IN (SELECT rowid FROM flow_fts WHERE flow_fts MATCH ?1)";
	query(r, "for comparison: where seq IN (MATCH) (rare)", fts_in, rare, NULL, 0);
	query(r, "for comparison: where seq IN (MATCH) (common)", fts_in, common, NULL, 0);
	count(r, "count(*)", NULL, NULL);
	count(r, "count host = ? (common)", "host = ?1", hosts[0]);
	count(r, "count status = 404", "status = 404", NULL);
	count(r, "count url substring (common)", fts_in, common);
	store_reader_close(r);
}

int main(int argc, char **argv)
{
	if (argc > 2 && strcmp(argv[1], "--queries") == 0) {
		make_hosts();
		queries(argv[2]);
		return 0;
	}
	if (argc > 2 && strcmp(argv[1], "--live") == 0) {
		/* The live phase alone, on a flows file of one's own. */
		unsigned rate = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 10000;
		char dir[] = "/tmp/bench_flows_store.XXXXXX";
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			return 1;
		}
		double lag, index_cpu,
			base = live(argv[2], dir, rate, 1000000, false, &lag, &index_cpu);
		unsigned rows = live_rows;
		double with = live(argv[2], dir, rate, 1000000, true, &lag, &index_cpu);
		printf("live, %u rows/s, %u rows of %s: store cpu %.1f us/row until committed"
		       " (appending alone %.2f s cpu, with the store %.2f s; last commit %.0f ms "
		       "after"
		       " the last line); then the URL index %.1f us/row\n",
		       rate, rows, argv[2], (with - base) / rows * 1e6, base, with, lag * 1e3,
		       index_cpu / rows * 1e6);
		nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
		return 0;
	}
	unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1000000;
	char dir[256];
	snprintf(dir, sizeof(dir), "%s/bench_flows_store.XXXXXX", argc > 2 ? argv[2] : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	char log[300], plain[300];
	snprintf(log, sizeof(log), "%s/" FLOWLOG_FILE, dir);
	snprintf(plain, sizeof(plain), "%s/plain.db", dir);

	make_hosts();
	double t0 = now_s();
	generate(log, n);
	struct stat st;
	stat(log, &st);
	printf("generated %u records, %.0f MB, in %.1f s (%s)\n", n, st.st_size / 1e6, now_s() - t0,
	       dir);

	/* Each timed phase starts with no writeback of the one before. */
	sync();
	unsigned rows;
	double cpu_parse, cpu_raw, cpu_store;
	double parse = baseline(log, NULL, true, &rows, &cpu_parse);
	printf("parse, jansson:    %8.0f rows/s  cpu %5.1f s  (json_loadb + flow_fields_read)\n",
	       rows / parse, cpu_parse);
	parse = baseline(log, NULL, false, &rows, &cpu_parse);
	printf("parse, rec_scan:   %8.0f rows/s  cpu %5.1f s  (the store's reader)\n", rows / parse,
	       cpu_parse);
	double raw = baseline(log, plain, false, &rows, &cpu_raw);
	printf("plain INSERT:      %8.0f rows/s  cpu %5.1f s  (baseline: rec_scan + INSERT, no"
	       " index, no FTS)\n",
	       rows / raw, cpu_raw);
	unlink(plain);
	sync();

	struct store *s;
	t0 = now_s();
	double c0 = cpu_s();
	if (store_open(&s, dir, NULL, &(struct store_options){ .max_size = -1 }) ||
	    store_flush(s, -1)) {
		fprintf(stderr, "store failed\n");
		return 1;
	}
	double ingest = now_s() - t0;
	cpu_store = cpu_s() - c0;
	struct store_stats ss;
	store_stats(s, &ss);
	store_close(s);
	char db[300];
	snprintf(db, sizeof(db), "%s/" STORE_FILE, dir);
	stat(db, &st);
	printf("store catch-up:    %8.0f rows/s  cpu %5.1f s  (%llu rows in %.1f s; %.2fx the"
	       " baseline's time, %.2fx its cpu; db %.0f MB)\n",
	       ss.rows / ingest, cpu_store, (unsigned long long)ss.rows, ingest, ingest / raw,
	       cpu_store / cpu_raw, st.st_size / 1e6);

	queries(dir);

	/* The store against the HTTPS path's rate (bench/store.sh reaches
	 * about 12,000 exchanges/s here): its share of a core. */
	unsigned rate = 10000, lrows = n < 50000 ? n : 50000;
	char live_dir[300];
	snprintf(live_dir, sizeof(live_dir), "%s/live", dir);
	mkdir(live_dir, 0700);
	double lag, index_cpu, base = live(log, live_dir, rate, lrows, false, &lag, &index_cpu);
	double with = live(log, live_dir, rate, lrows, true, &lag, &index_cpu);
	printf("live, %u rows/s:  store cpu %.1f us/row, %.0f%% of a core (appending alone %.2f s"
	       " cpu, with the store %.2f s; last commit %.0f ms after the last line); then the"
	       " URL index %.1f us/row\n",
	       rate, (with - base) / lrows * 1e6, (with - base) / ((double)lrows / rate) * 100,
	       base, with, lag * 1e3, index_cpu / lrows * 1e6);

	if (!getenv("BENCH_KEEP"))
		nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	return 0;
}
