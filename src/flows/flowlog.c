/* Connection records as JSONL, one write(2) per line. */
#include "flows/flowlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#define INITIAL_LINE 1024

/* Lines waiting in a batch are written once they reach this much. */
#define BATCH_FLUSH (256u * 1024)

struct flowlog {
	int fd;
	char *buf; /* serialised lines, reused; grows up to a batch plus FLOWLOG_MAX_LINE */
	size_t cap;
	size_t used;    /* batching: bytes of whole lines waiting in buf */
	size_t batched; /* lines waiting */
	bool batching;
	uint64_t lines;
	uint64_t errors;
	uint64_t skipped;
	flowlog_decorate_fn decorate;
	void *decorate_ctx;
	flowlog_gate_fn gate;
	flowlog_observer_fn observer;
	flowlog_begin_fn begin;
	void *gate_ctx, *observer_ctx, *begin_ctx;
};

/* ---- ids --------------------------------------------------------------- */

static atomic_uint_fast64_t id_counter;
static char run_prefix[9];
static atomic_int run_ready;

static void run_prefix_init(void)
{
	if (atomic_load(&run_ready))
		return;
	uint8_t r[4];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		/* No entropy syscall: time and pid still differ across restarts. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint32_t x =
			(uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec ^ ((uint32_t)getpid() << 16);
		memcpy(r, &x, sizeof(r));
	}
	snprintf(run_prefix, sizeof(run_prefix), "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
	atomic_store(&run_ready, 1);
}

void flowlog_new_id(struct flowlog *log, char id[static FLOWLOG_ID_LEN])
{
	(void)log;
	run_prefix_init();
	unsigned long long n = (unsigned long long)atomic_fetch_add(&id_counter, 1) + 1;
	snprintf(id, FLOWLOG_ID_LEN, "%s-%llu", run_prefix, n);
}

/* ---- opening: repair a partial last line -------------------------------- */

/* Offset just past the last '\n' before `size`, or 0. */
static int last_newline_end(int fd, off_t size, off_t *out)
{
	char chunk[4096];
	off_t end = size;
	while (end > 0) {
		off_t start = end > (off_t)sizeof(chunk) ? end - (off_t)sizeof(chunk) : 0;
		size_t n = (size_t)(end - start);
		ssize_t got = pread(fd, chunk, n, start);
		if (got < 0)
			return -errno;
		if ((size_t)got != n)
			return -EIO;
		for (size_t i = n; i > 0; i--) {
			if (chunk[i - 1] == '\n') {
				*out = start + (off_t)i;
				return 0;
			}
		}
		end = start;
	}
	*out = 0;
	return 0;
}

/* A crash can leave the last line without its newline. If what is there is
 * a whole JSON object, only the newline is missing: add it. Otherwise it is
 * a cut record: remove it, so the next line does not glue onto it. */
static int repair_tail(int fd, size_t *repaired)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size == 0)
		return 0;
	char last;
	if (pread(fd, &last, 1, st.st_size - 1) != 1)
		return -EIO;
	if (last == '\n')
		return 0;

	off_t line_start;
	int rc = last_newline_end(fd, st.st_size, &line_start);
	if (rc < 0)
		return rc;
	size_t len = (size_t)(st.st_size - line_start);
	bool whole = false;
	if (len <= FLOWLOG_MAX_LINE) {
		char *tail = malloc(len);
		if (!tail)
			return -ENOMEM;
		if (pread(fd, tail, len, line_start) == (ssize_t)len) {
			json_t *j = json_loadb(tail, len, JSON_ALLOW_NUL, NULL);
			whole = json_is_object(j);
			json_decref(j);
		}
		free(tail);
	}
	if (whole) {
		if (write(fd, "\n", 1) != 1)
			return -errno;
		*repaired = 1;
	} else {
		if (ftruncate(fd, line_start) < 0)
			return -errno;
		*repaired = len;
	}
	return 0;
}

int flowlog_open(struct flowlog **out, const char *path, size_t *repaired)
{
	size_t fixed = 0;
	*out = NULL;
	if (repaired)
		*repaired = 0;
	struct flowlog *log = calloc(1, sizeof(*log));
	if (!log)
		return -ENOMEM;
	log->cap = INITIAL_LINE;
	log->buf = malloc(log->cap);
	if (!log->buf) {
		free(log);
		return -ENOMEM;
	}
	/* O_RDWR: the repair reads the tail. */
	log->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (log->fd < 0) {
		int rc = -errno;
		free(log->buf);
		free(log);
		return rc;
	}
	/* The flows are the user's browsing: an older, wider file is narrowed. */
	struct stat st;
	int rc = 0;
	if (fstat(log->fd, &st) < 0)
		rc = -errno;
	else if (!S_ISREG(st.st_mode))
		rc = -EINVAL;
	else if ((st.st_mode & 077) && fchmod(log->fd, 0600) < 0)
		rc = -errno;
	if (rc == 0)
		rc = repair_tail(log->fd, &fixed);
	if (rc < 0) {
		close(log->fd);
		free(log->buf);
		free(log);
		return rc;
	}
	if (repaired)
		*repaired = fixed;
	*out = log;
	return 0;
}

void flowlog_close(struct flowlog *log)
{
	if (!log)
		return;
	(void)flowlog_flush(log);
	close(log->fd);
	free(log->buf);
	free(log);
}

/* ---- writing ------------------------------------------------------------ */

/* ---- serialising ---------------------------------------------------------
 * Compact JSON, keys in insertion order, written straight into log->buf:
 * several times faster than json_dumpb, which escapes byte by byte through
 * a callback (a 1 KiB body cost ~26 us there). Strings are copied in runs
 * between the bytes that need escaping; UTF-8 passes through as it is. */

/* 0: copy; else the escape letter, or 'u' for \u00XX. */
static const char json_escape[256] = {
	['"'] = '"',  ['\\'] = '\\', [0x00] = 'u', [0x01] = 'u', [0x02] = 'u', [0x03] = 'u',
	[0x04] = 'u', [0x05] = 'u',  [0x06] = 'u', [0x07] = 'u', [0x08] = 'b', [0x09] = 't',
	[0x0a] = 'n', [0x0b] = 'u',  [0x0c] = 'f', [0x0d] = 'r', [0x0e] = 'u', [0x0f] = 'u',
	[0x10] = 'u', [0x11] = 'u',  [0x12] = 'u', [0x13] = 'u', [0x14] = 'u', [0x15] = 'u',
	[0x16] = 'u', [0x17] = 'u',  [0x18] = 'u', [0x19] = 'u', [0x1a] = 'u', [0x1b] = 'u',
	[0x1c] = 'u', [0x1d] = 'u',  [0x1e] = 'u', [0x1f] = 'u',
};

struct jbuf {
	struct flowlog *log;
	size_t len;
	int err;
};

static bool jb_reserve(struct jbuf *b, size_t n)
{
	struct flowlog *log = b->log;
	if (b->err)
		return false;
	if (log->used + b->len + n + 1 <= log->cap) /* + 1: the newline */
		return true;
	if (b->len + n + 1 > FLOWLOG_MAX_LINE) {
		b->err = -EMSGSIZE;
		return false;
	}
	size_t cap = log->cap;
	while (cap < log->used + b->len + n + 1)
		cap *= 2;
	if (cap > log->used + FLOWLOG_MAX_LINE)
		cap = log->used + FLOWLOG_MAX_LINE;
	char *nb = realloc(log->buf, cap);
	if (!nb) {
		b->err = -ENOMEM;
		return false;
	}
	log->buf = nb;
	log->cap = cap;
	return true;
}

static void jb_put(struct jbuf *b, const char *p, size_t n)
{
	if (jb_reserve(b, n)) {
		memcpy(b->log->buf + b->log->used + b->len, p, n);
		b->len += n;
	}
}

static void jb_string(struct jbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	jb_put(b, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		char e = json_escape[(uint8_t)s[i]];
		if (!e)
			continue;
		jb_put(b, s + run, i - run);
		char esc[6] = { '\\', e };
		size_t el = 2;
		if (e == 'u') {
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[(uint8_t)s[i] >> 4];
			esc[5] = hex[(uint8_t)s[i] & 15];
			el = 6;
		}
		jb_put(b, esc, el);
		run = i + 1;
	}
	jb_put(b, s + run, n - run);
	jb_put(b, "\"", 1);
}

static void jb_value(struct jbuf *b, json_t *v, int depth)
{
	char num[32];
	int n;
	if (depth > 64) {
		b->err = -EINVAL;
		return;
	}
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *key;
		json_t *val;
		bool first = true;
		jb_put(b, "{", 1);
		json_object_foreach(v, key, val)
		{
			if (!first)
				jb_put(b, ",", 1);
			first = false;
			jb_string(b, key, strlen(key));
			jb_put(b, ":", 1);
			jb_value(b, val, depth + 1);
		}
		jb_put(b, "}", 1);
		return;
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *val;
		jb_put(b, "[", 1);
		json_array_foreach(v, i, val)
		{
			if (i)
				jb_put(b, ",", 1);
			jb_value(b, val, depth + 1);
		}
		jb_put(b, "]", 1);
		return;
	}
	case JSON_STRING:
		jb_string(b, json_string_value(v), json_string_length(v));
		return;
	case JSON_INTEGER:
		n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		jb_put(b, num, (size_t)n);
		return;
	case JSON_REAL:
		n = snprintf(num, sizeof(num), "%.17g", json_real_value(v));
		/* Keep it a real when read back ("1" → "1.0"). */
		if (!strpbrk(num, ".eE") && n + 2 < (int)sizeof(num)) {
			memcpy(num + n, ".0", 3);
			n += 2;
		}
		jb_put(b, num, (size_t)n);
		return;
	case JSON_TRUE:
		jb_put(b, "true", 4);
		return;
	case JSON_FALSE:
		jb_put(b, "false", 5);
		return;
	case JSON_NULL:
		jb_put(b, "null", 4);
		return;
	}
}

/* Serialises after the lines already waiting in log->buf, followed by a
 * newline; returns the length. */
static int serialise(struct flowlog *log, json_t *record, size_t *len)
{
	struct jbuf b = { .log = log };
	jb_value(&b, record, 0);
	if (b.err)
		return b.err;
	log->buf[log->used + b.len] = '\n'; /* jb_reserve kept room for it */
	*len = b.len + 1;
	return 0;
}

/* One write(2) of whole lines: with O_APPEND they land whole at the end,
 * or (disk full, crash) cut, and then they are cut off again. */
static int write_lines(struct flowlog *log, const char *p, size_t len)
{
	ssize_t n;
	do
		n = write(log->fd, p, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if ((size_t)n != len) {
		struct stat st;
		if (fstat(log->fd, &st) == 0 && st.st_size >= n)
			(void)!ftruncate(log->fd, st.st_size - n);
		return -EIO;
	}
	return 0;
}

void flowlog_set_batching(struct flowlog *log, bool on)
{
	if (!on)
		(void)flowlog_flush(log);
	log->batching = on;
}

int flowlog_flush(struct flowlog *log)
{
	if (!log || log->used == 0)
		return 0;
	int rc = write_lines(log, log->buf, log->used);
	if (rc < 0) {
		/* The whole batch was cut off: those lines are lost. */
		log->errors += log->batched;
		log->lines -= log->batched;
	}
	log->used = 0;
	log->batched = 0;
	return rc;
}

static int write_record(struct flowlog *log, json_t *record)
{
	size_t len = 0;
	int rc = json_is_object(record) ? serialise(log, record, &len) : -EINVAL;
	if (rc == 0 && log->batching) {
		log->used += len;
		log->batched++;
		log->lines++;
		if (log->used >= BATCH_FLUSH)
			rc = flowlog_flush(log);
		return rc;
	}
	if (rc == 0)
		rc = write_lines(log, log->buf, len);
	if (rc < 0)
		log->errors++;
	else
		log->lines++;
	return rc;
}

int flowlog_write(struct flowlog *log, json_t *record)
{
	if (log->decorate)
		log->decorate(log->decorate_ctx, record);
	if (log->gate && !log->gate(log->gate_ctx, record)) {
		log->skipped++;
		return 0;
	}
	int rc = write_record(log, record);
	if (rc == 0 && log->observer)
		log->observer(log->observer_ctx, record);
	return rc;
}

void flowlog_set_decorator(struct flowlog *log, flowlog_decorate_fn fn, void *ctx)
{
	log->decorate = fn;
	log->decorate_ctx = ctx;
}

void flowlog_set_gate(struct flowlog *log, flowlog_gate_fn gate, void *ctx)
{
	log->gate = gate;
	log->gate_ctx = ctx;
}

void flowlog_set_observer(struct flowlog *log, flowlog_observer_fn fn, void *ctx)
{
	log->observer = fn;
	log->observer_ctx = ctx;
}

uint64_t flowlog_skipped(const struct flowlog *log)
{
	return log->skipped;
}

uint64_t flowlog_lines(const struct flowlog *log)
{
	return log->lines;
}

uint64_t flowlog_errors(const struct flowlog *log)
{
	return log->errors;
}

/* ---- formatting --------------------------------------------------------- */

int flowlog_format_ip(const struct sockaddr *sa, char out[static INET6_ADDRSTRLEN], unsigned *port)
{
	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, out, INET6_ADDRSTRLEN);
		*port = ntohs(sin->sin_port);
		return AF_INET;
	}
	if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, out, INET6_ADDRSTRLEN);
		*port = ntohs(sin6->sin6_port);
		return AF_INET6;
	}
	snprintf(out, INET6_ADDRSTRLEN, "?");
	*port = 0;
	return -EAFNOSUPPORT;
}

int flowlog_format_addr(const struct sockaddr *sa, char out[static FLOWLOG_ADDR_LEN])
{
	char ip[INET6_ADDRSTRLEN];
	unsigned port;
	int af = flowlog_format_ip(sa, ip, &port);
	if (af < 0) {
		snprintf(out, FLOWLOG_ADDR_LEN, "?");
		return af;
	}
	return snprintf(out, FLOWLOG_ADDR_LEN, af == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
}

void flowlog_format_time(const struct timespec *ts, char out[static FLOWLOG_TIME_LEN])
{
	struct tm tm;
	time_t sec = ts->tv_sec;
	if (!gmtime_r(&sec, &tm)) {
		snprintf(out, FLOWLOG_TIME_LEN, "1970-01-01T00:00:00.000000Z");
		return;
	}
	char date[24];
	if (strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		date[0] = 0;
	unsigned usec = (unsigned)((ts->tv_nsec / 1000) % 1000000);
	snprintf(out, FLOWLOG_TIME_LEN, "%.20s.%06uZ", date, usec);
}

/* ---- flow records ------------------------------------------------------- */

static void copy_addr(struct sockaddr_storage *to, const struct sockaddr *from)
{
	memset(to, 0, sizeof(*to));
	if (!from)
		return;
	if (from->sa_family == AF_INET)
		memcpy(to, from, sizeof(struct sockaddr_in));
	else if (from->sa_family == AF_INET6)
		memcpy(to, from, sizeof(struct sockaddr_in6));
}

void flowlog_flow_begin(struct flowlog_flow *f, struct flowlog *log, const char *type,
			const char *peer, const struct sockaddr *client,
			const struct sockaddr *server)
{
	memset(f, 0, sizeof(*f));
	f->type = type;
	flowlog_new_id(log, f->id);
	if (peer)
		snprintf(f->peer, sizeof(f->peer), "%s", peer);
	copy_addr(&f->client, client);
	copy_addr(&f->server, server);
	clock_gettime(CLOCK_REALTIME, &f->start);
	if (log && log->begin)
		log->begin(log->begin_ctx, f);
}

void flowlog_set_begin_observer(struct flowlog *log, flowlog_begin_fn fn, void *ctx)
{
	log->begin = fn;
	log->begin_ctx = ctx;
}

static int set_str(json_t *o, const char *key, const char *s)
{
	return json_object_set_new(o, key, s ? json_string(s) : json_null());
}

static int set_u64(json_t *o, const char *key, uint64_t v)
{
	/* json_int_t is long long: byte counts stay far below 2^63. */
	return json_object_set_new(o, key,
				   json_integer((json_int_t)(v > INT64_MAX ? INT64_MAX : v)));
}

json_t *flowlog_flow_json(const struct flowlog_flow *f)
{
	char client[FLOWLOG_ADDR_LEN], server[FLOWLOG_ADDR_LEN];
	char start[FLOWLOG_TIME_LEN], end[FLOWLOG_TIME_LEN];
	struct timespec end_ts = f->end;
	if (end_ts.tv_sec == 0 && end_ts.tv_nsec == 0)
		clock_gettime(CLOCK_REALTIME, &end_ts);
	flowlog_format_addr((const struct sockaddr *)&f->client, client);
	flowlog_format_addr((const struct sockaddr *)&f->server, server);
	flowlog_format_time(&f->start, start);
	flowlog_format_time(&end_ts, end);

	json_t *o = json_object();
	if (!o)
		return NULL;
	int rc = 0;
	rc |= set_str(o, "type", f->type);
	rc |= set_str(o, "id", f->id);
	rc |= set_str(o, "peer", f->peer[0] ? f->peer : NULL);
	rc |= set_str(o, "client", client);
	rc |= set_str(o, "server", f->server.ss_family == AF_UNSPEC ? NULL : server);
	rc |= set_str(o, "start", start);
	rc |= set_str(o, "end", end);
	rc |= set_u64(o, "bytes_up", f->bytes_up);
	rc |= set_u64(o, "bytes_down", f->bytes_down);
	if (f->has_packets) {
		rc |= set_u64(o, "packets_up", f->packets_up);
		rc |= set_u64(o, "packets_down", f->packets_down);
	}
	rc |= set_str(o, "end_reason", f->end_reason);
	if (f->via)
		rc |= set_str(o, "via", f->via);
	if (f->user[0])
		rc |= set_str(o, "user", f->user);
	if (f->error[0])
		rc |= set_str(o, "error", f->error);
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int flowlog_write_flow(struct flowlog *log, const struct flowlog_flow *f)
{
	if (!log)
		return 0;
	json_t *o = flowlog_flow_json(f);
	if (!o) {
		log->errors++;
		return -ENOMEM;
	}
	int rc = flowlog_write(log, o);
	json_decref(o);
	return rc;
}

/* ---- reading ------------------------------------------------------------ */

/* Parses one line (without its newline). NULL and a message when invalid. */
static json_t *parse_line(const char *line, size_t len, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j = json_loadb(line, len, JSON_ALLOW_NUL, &je);
	if (!j) {
		snprintf(err, errlen, "%s (column %d)", je.text, je.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(err, errlen, "not a JSON object");
		return NULL;
	}
	return j;
}

int flowlog_read(const char *path, flowlog_read_cb cb, void *ctx, bool *partial)
{
	if (partial)
		*partial = false;
	FILE *fp = fopen(path, "re");
	if (!fp)
		return -errno;

	/* One line of lookahead: only the last line may be a cut record. */
	char *cur = NULL, *next = NULL;
	size_t cur_cap = 0, next_cap = 0;
	ssize_t cur_len = getline(&cur, &cur_cap, fp);
	size_t lineno = 0;
	int rc = 0;
	while (cur_len >= 0 && rc == 0) {
		lineno++;
		ssize_t next_len = getline(&next, &next_cap, fp);
		bool last = next_len < 0;
		size_t len = (size_t)cur_len;
		if (len > 0 && cur[len - 1] == '\n')
			len--;
		if (len > 0) {
			char err[200];
			json_t *rec = parse_line(cur, len, err, sizeof(err));
			if (rec) {
				rc = cb(ctx, lineno, rec, NULL);
				json_decref(rec);
			} else if (last) {
				if (partial)
					*partial = true;
			} else {
				rc = cb(ctx, lineno, NULL, err);
			}
		}
		char *t = cur;
		cur = next;
		next = t;
		size_t tc = cur_cap;
		cur_cap = next_cap;
		next_cap = tc;
		cur_len = next_len;
	}
	if (rc == 0 && ferror(fp))
		rc = -EIO;
	free(cur);
	free(next);
	fclose(fp);
	return rc;
}
