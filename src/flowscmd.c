/* `wgmitm flows` and `wgmitm flow`: the store read from the command line.
 * When no `run` holds the store, the command brings it up to date from the
 * log first, so both work whether or not the endpoint runs. */
#include "flowscmd.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flows/decode.h"
#include "flows/fields.h"
#include "flows/filter.h"
#include "flows/query.h"
#include "flows/flowlog.h"
#include "flows/store.h"
#include "state.h"

#define FLOWS_DEFAULT_LIMIT 50
#define FLOW_BODY_SHOWN (64u * 1024) /* of a text body printed */

static volatile sig_atomic_t stop;

static void on_sigint(int sig)
{
	(void)sig;
	stop = 1;
}

/* The store, caught up with the log when nobody else writes it. */
static int open_reader(const char *home, struct store_reader **r)
{
	char db[4200], log[4200];
	snprintf(db, sizeof(db), "%s/%s", home, STORE_FILE);
	snprintf(log, sizeof(log), "%s/%s", home, FLOWLOG_FILE);
	struct store *w;
	int rc = store_open(&w, db, log, NULL);
	if (rc == 0) {
		rc = store_flush(w, 120000);
		store_close(w);
		if (rc < 0)
			fprintf(stderr, "wgmitm: %s: cannot bring the store up to date: %s\n", db,
				strerror(-rc));
	} else if (rc != -EBUSY) {
		fprintf(stderr, "wgmitm: %s: %s\n", db, strerror(-rc));
		return -1;
	}
	rc = store_reader_open(r, db);
	if (rc < 0) {
		fprintf(stderr, "wgmitm: %s: %s\n", db,
			rc == -ENOENT ? "no flows recorded yet" : strerror(-rc));
		return -1;
	}
	return 0;
}

static void human_size(int64_t n, char out[32])
{
	if (n < 1024)
		snprintf(out, 32, "%lldB", (long long)n);
	else if (n < 1024 * 1024)
		snprintf(out, 32, "%.1fK", (double)n / 1024);
	else if (n < 1024LL * 1024 * 1024)
		snprintf(out, 32, "%.1fM", (double)n / (1024 * 1024));
	else
		snprintf(out, 32, "%.1fG", (double)n / (1024.0 * 1024 * 1024));
}

struct rows {
	struct store_row *r;
	char **strs; /* copies, so rows outlive the callback */
	size_t n, cap, nstrs;
	int64_t max_seq;
};

static char *keep(struct rows *rs, const char *s)
{
	if (!s)
		return NULL;
	char *c = strdup(s);
	if (!c)
		return NULL;
	char **n = realloc(rs->strs, (rs->nstrs + 1) * sizeof(*n));
	if (!n) {
		free(c);
		return NULL;
	}
	rs->strs = n;
	rs->strs[rs->nstrs++] = c;
	return c;
}

static int take_row(void *ctx, const struct store_row *row)
{
	struct rows *rs = ctx;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 64;
		struct store_row *r = realloc(rs->r, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		rs->r = r;
		rs->cap = cap;
	}
	struct store_row *c = &rs->r[rs->n++];
	*c = *row;
	c->id = keep(rs, row->id);
	c->type = keep(rs, row->type);
	c->peer = keep(rs, row->peer);
	c->method = keep(rs, row->method);
	c->host = keep(rs, row->host);
	c->url = keep(rs, row->url);
	c->proto = keep(rs, row->proto);
	c->end_reason = keep(rs, row->end_reason);
	c->error = keep(rs, row->error);
	if (row->seq > rs->max_seq)
		rs->max_seq = row->seq;
	return 0;
}

static void rows_free(struct rows *rs)
{
	for (size_t i = 0; i < rs->nstrs; i++)
		free(rs->strs[i]);
	free(rs->strs);
	free(rs->r);
	memset(rs, 0, sizeof(*rs));
}

static void print_row(const struct store_row *r, bool json)
{
	if (json) {
		json_t *o = json_pack("{s:s,s:s,s:o,s:s?,s:s?,s:s?,s:s?,s:I,s:I,s:s?,s:s?}", "id",
				      r->id, "type", r->type, "start", flow_time_json(r->start_us),
				      "peer", r->peer, "method", r->method, "host", r->host, "url",
				      r->url, "bytes_up", (json_int_t)r->bytes_up, "bytes_down",
				      (json_int_t)r->bytes_down, "end_reason", r->end_reason,
				      "error", r->error);
		json_object_set_new(o, "status", r->status ? json_integer(r->status) : json_null());
		json_object_set_new(o, "duration_ms", json_real((double)r->duration_us / 1000));
		char *t = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		if (t) {
			puts(t);
			free(t);
		}
		return;
	}
	time_t secs = (time_t)(r->start_us / 1000000);
	struct tm tm;
	char when[16] = "-";
	if (r->start_us && localtime_r(&secs, &tm))
		strftime(when, sizeof(when), "%H:%M:%S", &tm);
	char size[32], status[8] = "-", dur[32];
	human_size(r->bytes_up + r->bytes_down, size);
	if (r->status)
		snprintf(status, sizeof(status), "%d", r->status);
	if (r->duration_us >= 1000000)
		snprintf(dur, sizeof(dur), "%.1fs", (double)r->duration_us / 1e6);
	else
		snprintf(dur, sizeof(dur), "%lldms", (long long)(r->duration_us / 1000));
	const char *what = r->url ? r->url : (r->host && *r->host ? r->host : "-");
	char flag[32] = "";
	if (r->flags & STORE_TLS_REJECTED)
		snprintf(flag, sizeof(flag), "  [rejected our cert]");
	else if (r->flags & STORE_PASSTHROUGH)
		snprintf(flag, sizeof(flag), "  [passthrough]");
	else if (r->error)
		snprintf(flag, sizeof(flag), "  [error]");
	printf("%-8s  %-12.12s  %-9s  %-6s  %-4s  %s  %s  %s%s\n", when, r->peer ? r->peer : "-",
	       r->type, r->method ? r->method : "", status, what, size, dur, flag);
}

static const char *flows_usage =
	"wgmitm flows [FILTER] [--limit N] [--json] [--follow]\n"
	"  FILTER     a filter expression (docs/filters.md), e.g. '~d example.com & ~c 500'\n"
	"  --limit N  the newest N flows (50), oldest first\n"
	"  --json     one JSON object a line\n"
	"  --follow   then print new flows as they are recorded (Ctrl-C ends)";

int flowscmd_list(int argc, char **argv, const char *home_override)
{
	static const struct option longopts[] = { { "limit", required_argument, NULL, 'n' },
						  { "json", no_argument, NULL, 'j' },
						  { "follow", no_argument, NULL, 'f' },
						  { "help", no_argument, NULL, 'h' },
						  { 0 } };
	unsigned long limit = FLOWS_DEFAULT_LIMIT;
	bool json = false, follow = false;
	optind = 0; /* GNU getopt: start over, permuting again */
	opterr = 1;
	int c;
	while ((c = getopt_long(argc, argv, "n:fj", longopts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'n':
			limit = strtoul(optarg, &end, 10);
			if (*end || limit == 0 || limit > 10000) {
				fprintf(stderr, "wgmitm: --limit \"%s\": expected 1 to 10000\n",
					optarg);
				return 2;
			}
			break;
		case 'j':
			json = true;
			break;
		case 'f':
			follow = true;
			break;
		case 'h':
			puts(flows_usage);
			return 0;
		default:
			fprintf(stderr, "usage: %s\n", flows_usage);
			return 2;
		}
	}
	if (optind + 1 < argc) {
		fprintf(stderr, "wgmitm: one FILTER expression (quote it)\nusage: %s\n",
			flows_usage);
		return 2;
	}
	const char *text = optind < argc ? argv[optind] : NULL;
	struct flows_query fq;
	struct filter_error fe;
	if (flows_query_make(&fq, text, &fe) < 0) {
		if (!fe.column) {
			fprintf(stderr, "wgmitm: out of memory\n");
			return 1;
		}
		fprintf(stderr, "wgmitm: %s\n  %s\n  %*s^\n", fe.message, text, (int)fe.column - 1,
			"");
		return 2;
	}
	char home[4096];
	if (state_home_resolve(home_override, home, sizeof(home)) < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory\n");
		return 1;
	}
	struct store_reader *r;
	int status = 1;
	if (open_reader(home, &r) < 0)
		goto out;
	struct store_query q = fq.q;
	q.limit = (unsigned)limit;
	struct rows rs = { 0 };
	if (store_list(r, &q, take_row, &rs, NULL) < 0) {
		fprintf(stderr, "wgmitm: %s\n", store_reader_errmsg(r));
		rows_free(&rs);
		store_reader_close(r);
		goto out;
	}
	if (!json && (rs.n || follow))
		printf("%-8s  %-12s  %-9s  %-6s  %-4s  %s\n", "TIME", "PEER", "TYPE", "METHOD",
		       "CODE", "URL  SIZE  DURATION");
	for (size_t i = rs.n; i-- > 0;)
		print_row(&rs.r[i], json);
	fflush(stdout);
	int64_t last = rs.max_seq;
	rows_free(&rs);
	signal(SIGINT, on_sigint);
	signal(SIGTERM, on_sigint);
	while (follow && !stop) {
		/* New rows since the last one printed, oldest first. */
		usleep(300000);
		struct store_query fq = q;
		fq.oldest_first = true;
		fq.cursor = last;
		fq.limit = 1000;
		if (store_list(r, &fq, take_row, &rs, NULL) < 0) {
			fprintf(stderr, "wgmitm: %s\n", store_reader_errmsg(r));
			break;
		}
		for (size_t i = 0; i < rs.n; i++)
			print_row(&rs.r[i], json);
		fflush(stdout);
		if (rs.max_seq > last)
			last = rs.max_seq;
		rows_free(&rs);
	}
	store_reader_close(r);
	status = 0;
out:
	flows_query_free(&fq);
	return status;
}

/* ---- One flow ---------------------------------------------------------------- */

static void print_headers(const json_t *headers)
{
	size_t i;
	json_t *h;
	json_array_foreach(headers, i, h)
		printf("%s: %s\n", json_string_value(json_array_get(h, 0)) ?: "",
		       json_string_value(json_array_get(h, 1)) ?: "");
}

/* A body as text when it decodes to text, else a line saying what it is. */
static void print_body(struct store_reader *r, const char *id, int part, const json_t *msg)
{
	const json_t *body = json_object_get(msg, "body");
	json_int_t size = json_integer_value(json_object_get(body, "size"));
	if (!json_is_object(body) || size == 0)
		return;
	uint8_t *data;
	size_t len;
	char *enc;
	if (store_body(r, id, part, &data, &len, &enc) < 0)
		return;
	uint8_t *dec = NULL;
	size_t dlen = 0;
	const char *note = "";
	if (!decode_is_identity(enc)) {
		enum decode_status ds =
			decode_body(enc, data, len, DECODE_DEFAULT_CAP, &dec, &dlen);
		if (dec) {
			free(data);
			data = dec;
			len = dlen;
			note = ds == DECODE_COMPLETE ? "" : " (decoded in part)";
		} else {
			note = " (still encoded)";
		}
	}
	bool text = len > 0 && !memchr(data, 0, len);
	if (text) {
		json_t *probe = json_stringn((const char *)data, len);
		text = probe != NULL;
		json_decref(probe);
	}
	printf("\n");
	if (text) {
		size_t shown = len > FLOW_BODY_SHOWN ? FLOW_BODY_SHOWN : len;
		fwrite(data, 1, shown, stdout);
		if (data[shown - 1] != '\n')
			printf("\n");
		if (shown < len)
			printf("[%zu more bytes: wgmitm flow --json, or GET "
			       "/api/flows/%s/%s/body]\n",
			       len - shown, id, part ? "response" : "request");
	} else {
		printf("[%zu bytes of binary%s%s%s]\n", len, enc ? ", " : "", enc ? enc : "", note);
	}
	if (json_is_true(json_object_get(body, "truncated")))
		printf("[recorded %zu of %lld bytes: the body cap]\n", len, (long long)size);
	else if (*note && text)
		printf("[%s]\n", note + 2);
	free(data);
	free(enc);
}

int flowscmd_show(int argc, char **argv, const char *home_override)
{
	static const char *usage = "wgmitm flow ID [--json]";
	bool json = argc == 3 && strcmp(argv[2], "--json") == 0;
	if (argc != 2 && !json) {
		fprintf(stderr, "usage: %s\n", usage);
		return 2;
	}
	char home[4096];
	if (state_home_resolve(home_override, home, sizeof(home)) < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory\n");
		return 1;
	}
	struct store_reader *r;
	if (open_reader(home, &r) < 0)
		return 1;
	const char *id = argv[1];
	json_t *rec;
	int rc = store_get(r, id, &rec);
	if (rc < 0) {
		fprintf(stderr, "wgmitm: %s\n",
			rc == -ENOENT ? "no flow with this id (see `wgmitm flows`)"
				      : store_reader_errmsg(r));
		store_reader_close(r);
		return 1;
	}
	if (json) {
		char *t = json_dumps(rec, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (t)
			puts(t);
		free(t);
		json_decref(rec);
		store_reader_close(r);
		return 0;
	}
	struct flow_fields ff;
	flow_fields_read(rec, &ff);
	char st[40] = "", et[40] = "";
	json_t *ts = flow_time_json(ff.start_us), *te = flow_time_json(ff.end_us);
	snprintf(st, sizeof(st), "%s", json_string_value(ts) ?: "-");
	snprintf(et, sizeof(et), "%s", json_string_value(te) ?: "-");
	json_decref(ts);
	json_decref(te);
	printf("%s %s  peer %s  %s -> %s\n", ff.type, ff.id, ff.peer ? ff.peer : "-",
	       ff.client ? ff.client : "-", ff.server ? ff.server : "-");
	printf("%s .. %s  up %lld B  down %lld B  %s%s%s\n", st, et, (long long)ff.bytes_up,
	       (long long)ff.bytes_down, ff.end_reason ? ff.end_reason : "", ff.error ? ": " : "",
	       ff.error ? ff.error : "");
	if (strcmp(ff.type, "http") == 0) {
		const json_t *req = json_object_get(rec, "request");
		const json_t *resp = json_object_get(rec, "response");
		printf("\n%s %s %s\n", ff.method ? ff.method : "?", ff.url ? ff.url : "?",
		       ff.proto ? ff.proto : "");
		print_headers(json_object_get(req, "headers"));
		print_body(r, id, 0, req);
		if (json_is_object(resp)) {
			const char *reason = json_string_value(json_object_get(resp, "reason"));
			printf("\n%d%s%s\n", ff.status, reason ? " " : "", reason ? reason : "");
			print_headers(json_object_get(resp, "headers"));
			print_body(r, id, 1, resp);
		} else {
			printf("\n(no response)\n");
		}
	} else {
		/* Other types: their own keys, as recorded. */
		char *t = json_dumps(rec, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (t)
			printf("\n%s\n", t);
		free(t);
	}
	json_decref(rec);
	store_reader_close(r);
	return 0;
}

/* ---- store rebuild ----------------------------------------------------------------- */

int flowscmd_store(int argc, char **argv, const char *home_override)
{
	static const char *usage = "wgmitm store rebuild [--flows FILE]";
	if (argc < 2 || strcmp(argv[1], "rebuild") != 0) {
		fprintf(stderr, "usage: %s\n", usage);
		return 2;
	}
	const char *flows = NULL;
	if (argc == 4 && strcmp(argv[2], "--flows") == 0) {
		flows = argv[3];
	} else if (argc != 2) {
		fprintf(stderr, "usage: %s\n", usage);
		return 2;
	}
	char home[4096];
	if (state_home_resolve(home_override, home, sizeof(home)) < 0) {
		fprintf(stderr, "wgmitm: cannot find the home directory\n");
		return 1;
	}
	char db[4200], log[4200];
	snprintf(db, sizeof(db), "%s/%s", home, STORE_FILE);
	snprintf(log, sizeof(log), "%s/%s", home, FLOWLOG_FILE);
	if (!flows)
		flows = log;
	if (access(flows, R_OK) != 0) {
		fprintf(stderr, "wgmitm: %s: %s\n", flows, strerror(errno));
		return 1;
	}
	struct store_options so = { .rebuild = true, .max_size = -1 };
	struct store *s;
	int rc = store_open(&s, db, flows, &so);
	if (rc == -EBUSY) {
		fprintf(stderr, "wgmitm: %s: `wgmitm run` keeps this store; stop it first\n", db);
		return 1;
	}
	if (rc < 0) {
		fprintf(stderr, "wgmitm: %s: %s\n", db, strerror(-rc));
		return 1;
	}
	rc = store_flush(s, -1);
	struct store_stats st;
	store_stats(s, &st);
	store_close(s);
	if (rc < 0) {
		fprintf(stderr, "wgmitm: %s: %s\n", db, strerror(-rc));
		return 1;
	}
	printf("%s: %llu flows from %s (%llu malformed lines skipped, %llu duplicates)\n", db,
	       (unsigned long long)st.rows, flows, (unsigned long long)st.malformed,
	       (unsigned long long)st.duplicates);
	return 0;
}
