/* Flow records: formatting, one line per write, reading back a file cut by a
 * crash, the repair on open, the file mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flows/flowlog.h"

struct tmp {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/test_flowlog.XXXXXX");
	if (!mkdtemp(t->dir))
		return -1;
	snprintf(t->path, sizeof(t->path), "%s/%s", t->dir, FLOWLOG_FILE);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tmp *t = *state;
	unlink(t->path);
	rmdir(t->dir);
	free(t);
	return 0;
}

static void sa4(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

static void sa6(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	static char buf[1 << 16];
	*len = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[*len] = 0;
	fclose(fp);
	return buf;
}

static void test_format_addr(void **ctx)
{
	(void)ctx;
	struct sockaddr_storage ss;
	char s[FLOWLOG_ADDR_LEN];
	sa4(&ss, "10.66.77.2", 51234);
	assert_int_equal(flowlog_format_addr((struct sockaddr *)&ss, s), 16);
	assert_string_equal(s, "10.66.77.2:51234");
	sa6(&ss, "2606:4700::1111", 443);
	flowlog_format_addr((struct sockaddr *)&ss, s);
	assert_string_equal(s, "[2606:4700::1111]:443");
	sa6(&ss, "::ffff:1.2.3.4", 80);
	flowlog_format_addr((struct sockaddr *)&ss, s);
	assert_string_equal(s, "[::ffff:1.2.3.4]:80");
	sa6(&ss, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	flowlog_format_addr((struct sockaddr *)&ss, s);
	assert_string_equal(s, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
	ss.ss_family = AF_UNIX;
	assert_int_equal(flowlog_format_addr((struct sockaddr *)&ss, s), -EAFNOSUPPORT);
	assert_string_equal(s, "?");
}

static void test_format_time(void **ctx)
{
	(void)ctx;
	char s[FLOWLOG_TIME_LEN];
	struct timespec ts = { .tv_sec = 1714566896, .tv_nsec = 123456789 };
	flowlog_format_time(&ts, s);
	assert_string_equal(s, "2024-05-01T12:34:56.123456Z");
	ts = (struct timespec){ .tv_sec = 0, .tv_nsec = 999 };
	flowlog_format_time(&ts, s);
	assert_string_equal(s, "1970-01-01T00:00:00.000000Z");
	ts = (struct timespec){ .tv_sec = 4102444799, .tv_nsec = 999999999 };
	flowlog_format_time(&ts, s);
	assert_string_equal(s, "2099-12-31T23:59:59.999999Z");
}

static void test_ids(void **ctx)
{
	(void)ctx;
	char a[FLOWLOG_ID_LEN], b[FLOWLOG_ID_LEN];
	flowlog_new_id(NULL, a);
	flowlog_new_id(NULL, b);
	/* "<8 hex>-<n>", same run prefix, counter one apart. */
	assert_true(strlen(a) >= 10);
	assert_int_equal(a[8], '-');
	for (int i = 0; i < 8; i++)
		assert_non_null(strchr("0123456789abcdef", a[i]));
	assert_memory_equal(a, b, 9);
	assert_int_equal(strtoull(b + 9, NULL, 10), strtoull(a + 9, NULL, 10) + 1);
}

/* A whole record, keys in the documented order. */
static void test_record_format(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	size_t repaired = 99;
	assert_int_equal(flowlog_open(&log, t->path, &repaired), 0);
	assert_int_equal(repaired, 0);

	struct sockaddr_storage c, s;
	sa4(&c, "10.66.77.2", 40000);
	sa6(&s, "2001:db8::5", 443);
	struct flowlog_flow f;
	flowlog_flow_begin(&f, log, "tcp", "phone", (struct sockaddr *)&c, (struct sockaddr *)&s);
	strcpy(f.id, "0badcafe-7");
	f.start = (struct timespec){ 1714566896, 1000 };
	f.end = (struct timespec){ 1714566897, 500000000 };
	f.bytes_up = 517;
	f.bytes_down = 1ull << 40;
	f.end_reason = "fin";
	assert_int_equal(flowlog_write_flow(log, &f), 0);

	/* UDP: packets, no peer, an error. */
	flowlog_flow_begin(&f, log, "udp", NULL, (struct sockaddr *)&c, (struct sockaddr *)&s);
	strcpy(f.id, "0badcafe-8");
	f.start = (struct timespec){ 1714566896, 0 };
	f.end = (struct timespec){ 1714566926, 0 };
	f.has_packets = true;
	f.packets_up = 3;
	f.packets_down = 2;
	f.bytes_up = 120;
	f.bytes_down = 80;
	f.end_reason = "timeout";
	snprintf(f.error, sizeof(f.error), "ICMP \"port unreachable\"");
	assert_int_equal(flowlog_write_flow(log, &f), 0);

	/* Type-specific keys follow the common ones. */
	json_t *o = flowlog_flow_json(&f);
	assert_non_null(o);
	json_object_set_new(o, "query", json_string("example.com"));
	assert_int_equal(flowlog_write(log, o), 0);
	json_decref(o);

	json_t *not_object = json_integer(3);
	assert_int_equal(flowlog_write(log, not_object), -EINVAL); /* borrowed */
	json_decref(not_object);
	assert_int_equal(flowlog_lines(log), 3);
	assert_int_equal(flowlog_errors(log), 1);
	flowlog_close(log);

	size_t len;
	const char *text = slurp(t->path, &len);
	const char *want =
		"{\"type\":\"tcp\",\"id\":\"0badcafe-7\",\"peer\":\"phone\",\"client\":\"10.66.77."
		"2:40000\","
		"\"server\":\"[2001:db8::5]:443\",\"start\":\"2024-05-01T12:34:56.000001Z\","
		"\"end\":\"2024-05-01T12:34:57.500000Z\",\"bytes_up\":517,\"bytes_down\":"
		"1099511627776,"
		"\"end_reason\":\"fin\"}\n"
		"{\"type\":\"udp\",\"id\":\"0badcafe-8\",\"peer\":null,\"client\":\"10.66.77.2:"
		"40000\","
		"\"server\":\"[2001:db8::5]:443\",\"start\":\"2024-05-01T12:34:56.000000Z\","
		"\"end\":\"2024-05-01T12:35:26.000000Z\",\"bytes_up\":120,\"bytes_down\":80,"
		"\"packets_up\":3,\"packets_down\":2,\"end_reason\":\"timeout\","
		"\"error\":\"ICMP \\\"port unreachable\\\"\"}\n";
	assert_memory_equal(text, want, strlen(want));
	/* The third line: the second record plus the added key, last. */
	const char *third = text + strlen(want);
	const char *tail = ",\"query\":\"example.com\"}\n";
	assert_int_equal(strlen(third),
			 strlen(want) - (strchr(want, '\n') + 1 - want) - 2 + strlen(tail));
	assert_string_equal(third + strlen(third) - strlen(tail), tail);
	assert_memory_equal(third, strchr(want, '\n') + 1, strlen(strchr(want, '\n') + 1) - 2);
}

static void test_mode_0600(void **state)
{
	struct tmp *t = *state;
	mode_t old = umask(0);
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->path, NULL), 0);
	umask(old);
	struct stat st;
	assert_int_equal(stat(t->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	flowlog_close(log);

	/* A file left world-readable by someone else is narrowed on open. */
	assert_int_equal(chmod(t->path, 0644), 0);
	assert_int_equal(flowlog_open(&log, t->path, NULL), 0);
	assert_int_equal(stat(t->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	flowlog_close(log);

	assert_int_equal(flowlog_open(&log, t->dir, NULL) < 0, 1); /* a directory */
	assert_null(log);
}

struct collected {
	size_t n;
	size_t lines[16];
	char ids[16][FLOWLOG_ID_LEN];
	size_t errors;
	size_t error_line[16];
	int stop_after;
};

static int collect(void *ctx, size_t line, json_t *record, const char *error)
{
	struct collected *c = ctx;
	if (record) {
		assert_null(error);
		c->lines[c->n] = line;
		snprintf(c->ids[c->n], FLOWLOG_ID_LEN, "%s",
			 json_string_value(json_object_get(record, "id")));
		c->n++;
	} else {
		assert_non_null(error);
		c->error_line[c->errors++] = line;
	}
	if (c->stop_after && c->n == (size_t)c->stop_after)
		return 42;
	return 0;
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void test_read_partial_last_line(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->path, NULL), 0);
	struct sockaddr_storage c, s;
	sa4(&c, "10.66.77.2", 40000);
	sa4(&s, "93.184.216.34", 80);
	char ids[3][FLOWLOG_ID_LEN];
	for (int i = 0; i < 3; i++) {
		struct flowlog_flow f;
		flowlog_flow_begin(&f, log, "tcp", "phone", (struct sockaddr *)&c,
				   (struct sockaddr *)&s);
		f.end_reason = "fin";
		strcpy(ids[i], f.id);
		assert_int_equal(flowlog_write_flow(log, &f), 0);
	}
	flowlog_close(log);

	/* kill -9 in the middle of the third write: cut the file mid-line. */
	struct stat st;
	assert_int_equal(stat(t->path, &st), 0);
	size_t len;
	const char *text = slurp(t->path, &len);
	const char *third = strchr(strchr(text, '\n') + 1, '\n') + 1;
	off_t cut = (off_t)(third - text) + 25;
	assert_int_equal(truncate(t->path, cut), 0);

	struct collected got = { 0 };
	bool partial = false;
	assert_int_equal(flowlog_read(t->path, collect, &got, &partial), 0);
	assert_true(partial);
	assert_int_equal(got.n, 2);
	assert_int_equal(got.errors, 0);
	assert_string_equal(got.ids[0], ids[0]);
	assert_string_equal(got.ids[1], ids[1]);
	assert_int_equal(got.lines[1], 2);

	/* Reopening cuts the partial line off; the next record starts clean. */
	size_t repaired = 0;
	assert_int_equal(flowlog_open(&log, t->path, &repaired), 0);
	assert_int_equal(repaired, 25);
	struct flowlog_flow f;
	flowlog_flow_begin(&f, log, "udp", "phone", (struct sockaddr *)&c, (struct sockaddr *)&s);
	assert_int_equal(flowlog_write_flow(log, &f), 0);
	flowlog_close(log);
	memset(&got, 0, sizeof(got));
	assert_int_equal(flowlog_read(t->path, collect, &got, &partial), 0);
	assert_false(partial);
	assert_int_equal(got.n, 3);
	assert_int_equal(got.errors, 0);
	assert_string_equal(got.ids[2], f.id);
}

static void test_read_errors(void **state)
{
	struct tmp *t = *state;
	/* A bad line in the middle is reported with its number; empty lines
	 * are skipped; a bad last line (even with its newline) is skipped. */
	write_file(t->path, "{\"id\":\"a\"}\n"
			    "\n"
			    "{\"id\":\"b\",\n"
			    "[1,2]\n"
			    "{\"id\":\"c\"}\n"
			    "{\"id\":\"d\"\n");
	struct collected got = { 0 };
	bool partial = false;
	assert_int_equal(flowlog_read(t->path, collect, &got, &partial), 0);
	assert_true(partial);
	assert_int_equal(got.n, 2);
	assert_string_equal(got.ids[0], "a");
	assert_string_equal(got.ids[1], "c");
	assert_int_equal(got.lines[1], 5);
	assert_int_equal(got.errors, 2);
	assert_int_equal(got.error_line[0], 3);
	assert_int_equal(got.error_line[1], 4);

	/* A complete last record missing only its newline is a record. */
	write_file(t->path, "{\"id\":\"a\"}\n{\"id\":\"b\"}");
	memset(&got, 0, sizeof(got));
	assert_int_equal(flowlog_read(t->path, collect, &got, &partial), 0);
	assert_false(partial);
	assert_int_equal(got.n, 2);
	/* ...and opening adds the newline rather than cutting it. */
	struct flowlog *log;
	size_t repaired = 0;
	assert_int_equal(flowlog_open(&log, t->path, &repaired), 0);
	assert_int_equal(repaired, 1);
	flowlog_close(log);
	size_t len;
	assert_string_equal(slurp(t->path, &len), "{\"id\":\"a\"}\n{\"id\":\"b\"}\n");

	/* The callback stops the read. */
	memset(&got, 0, sizeof(got));
	got.stop_after = 1;
	assert_int_equal(flowlog_read(t->path, collect, &got, NULL), 42);
	assert_int_equal(got.n, 1);

	/* A file with nothing but a cut line: nothing, partial. */
	write_file(t->path, "{\"type\":\"tc");
	memset(&got, 0, sizeof(got));
	assert_int_equal(flowlog_read(t->path, collect, &got, &partial), 0);
	assert_true(partial);
	assert_int_equal(got.n + got.errors, 0);
	assert_int_equal(flowlog_open(&log, t->path, &repaired), 0);
	assert_int_equal(repaired, 11);
	flowlog_close(log);
	struct stat st;
	assert_int_equal(stat(t->path, &st), 0);
	assert_int_equal(st.st_size, 0);

	assert_int_equal(flowlog_read("/nonexistent/flows.jsonl", collect, &got, NULL), -ENOENT);
}

/* Each record is one write(2): two logs on one file (two processes, or a
 * writer and a rotation) never interleave inside a line. */
static void test_two_writers(void **state)
{
	struct tmp *t = *state;
	struct flowlog *a, *b;
	assert_int_equal(flowlog_open(&a, t->path, NULL), 0);
	assert_int_equal(flowlog_open(&b, t->path, NULL), 0);
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	for (int i = 0; i < 200; i++) {
		json_t *o = json_pack("{s:s, s:i, s:s}", "type", "test", "n", i, "pad", big);
		assert_int_equal(flowlog_write(i % 2 ? a : b, o), 0);
		json_decref(o);
	}
	flowlog_close(a);
	flowlog_close(b);
	FILE *fp = fopen(t->path, "r");
	char *line = NULL;
	size_t cap = 0;
	int n = 0;
	while (getline(&line, &cap, fp) > 0) {
		json_t *j = json_loads(line, 0, NULL);
		assert_non_null(j);
		assert_int_equal(json_integer_value(json_object_get(j, "n")), n);
		json_decref(j);
		n++;
	}
	free(line);
	fclose(fp);
	assert_int_equal(n, 200);
}

static void test_too_long(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->path, NULL), 0);
	char *huge = malloc(FLOWLOG_MAX_LINE);
	memset(huge, 'y', FLOWLOG_MAX_LINE - 1);
	huge[FLOWLOG_MAX_LINE - 1] = 0;
	json_t *o = json_pack("{s:s}", "pad", huge);
	assert_int_equal(flowlog_write(log, o), -EMSGSIZE);
	json_decref(o);
	free(huge);
	assert_int_equal(flowlog_errors(log), 1);
	flowlog_close(log);
	struct stat st;
	assert_int_equal(stat(t->path, &st), 0);
	assert_int_equal(st.st_size, 0);
}

/* The serialiser writes what jansson reads back as the same value: every
 * byte that needs escaping, UTF-8 as it is, NUL, nesting, number limits;
 * and a line stays one line. */
static void test_serialise_roundtrip(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->path, NULL), 0);
	char all[256];
	for (int i = 0; i < 255; i++)
		all[i] = (char)(i + 1);
	json_t *o = json_object();
	json_object_set_new(o, "type", json_string("http"));
	json_object_set_new(o, "ascii", json_stringn_nocheck(all, 127));
	json_object_set_new(o, "quote\"key\\\n", json_string("v"));
	json_object_set_new(o, "utf8",
			    json_string("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 caf\xc3\xa9"));
	json_object_set_new(o, "nul", json_stringn("a\0b", 3));
	json_object_set_new(o, "empty", json_string(""));
	json_object_set_new(o, "nested",
			    json_pack("{s:[i,i,{s:n,s:b,s:b}],s:{}}", "a", (json_int_t)INT64_MIN,
				      (json_int_t)INT64_MAX, "n", "t", 1, "f", 0, "o"));
	json_object_set_new(o, "reals", json_pack("[f,f,f,f]", 0.5, 1.0, -1e300, 123456.789));
	assert_int_equal(flowlog_write(log, o), 0);
	flowlog_close(log);

	size_t len;
	char *text = slurp(t->path, &len);
	assert_true(len > 0 && text[len - 1] == '\n');
	assert_null(memchr(text, '\n', len - 1));
	json_error_t je;
	json_t *back = json_loadb(text, len, JSON_ALLOW_NUL, &je);
	assert_non_null(back);
	assert_true(json_equal(o, back));
	/* Key order is kept. */
	const char *k;
	json_t *v;
	const char *want[] = { "type", "ascii", "quote\"key\\\n", "utf8",
			       "nul",  "empty", "nested",         "reals" };
	size_t i = 0;
	json_object_foreach(back, k, v) assert_string_equal(k, want[i++]);
	assert_int_equal(i, 8);
	assert_true(json_is_real(json_array_get(json_object_get(back, "reals"), 1)));
	json_decref(back);
	json_decref(o);
}

/* Batching: lines wait until flowlog_flush (or close), then land whole. */
static void test_batching(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->path, NULL), 0);
	flowlog_set_batching(log, true);
	for (int i = 0; i < 3; i++) {
		json_t *o = json_pack("{s:s,s:i}", "type", "tcp", "n", i);
		assert_int_equal(flowlog_write(log, o), 0);
		json_decref(o);
	}
	size_t len;
	slurp(t->path, &len);
	assert_int_equal(len, 0);
	assert_int_equal(flowlog_lines(log), 3);
	assert_int_equal(flowlog_flush(log), 0);
	const char *text = slurp(t->path, &len);
	assert_string_equal(text, "{\"type\":\"tcp\",\"n\":0}\n{\"type\":\"tcp\",\"n\":1}\n"
				  "{\"type\":\"tcp\",\"n\":2}\n");
	json_t *o = json_pack("{s:s}", "type", "udp");
	assert_int_equal(flowlog_write(log, o), 0);
	json_decref(o);
	flowlog_close(log); /* flushes */
	text = slurp(t->path, &len);
	assert_non_null(strstr(text, "{\"type\":\"udp\"}\n"));
}

static bool only_even(void *ctx, const json_t *record)
{
	(void)ctx;
	return json_integer_value(json_object_get(record, "n")) % 2 == 0;
}

static void seen(void *ctx, const json_t *record)
{
	int *sum = ctx;
	*sum += 1 + (int)json_integer_value(json_object_get(record, "n"));
}

/* The gate (capture scope) keeps records out of the log and away from the
 * observer; the observer sees each record written, in order. */
static void test_gate_observer(void **state)
{
	struct tmp *t = *state;
	struct flowlog *log;
	assert_int_equal(flowlog_open(&log, t->path, NULL), 0);
	int sum = 0;
	flowlog_set_gate(log, only_even, NULL);
	flowlog_set_observer(log, seen, &sum);
	for (int i = 0; i < 5; i++) {
		json_t *o = json_pack("{s:s,s:i}", "type", "tcp", "n", i);
		assert_int_equal(flowlog_write(log, o), 0);
		json_decref(o);
	}
	assert_int_equal(sum, 1 + 3 + 5); /* n = 0, 2, 4 */
	assert_int_equal(flowlog_lines(log), 3);
	assert_int_equal(flowlog_skipped(log), 2);
	flowlog_set_gate(log, NULL, NULL);
	json_t *o = json_pack("{s:s,s:i}", "type", "tcp", "n", 1);
	assert_int_equal(flowlog_write(log, o), 0);
	json_decref(o);
	flowlog_close(log);
	size_t len;
	const char *text = slurp(t->path, &len);
	assert_string_equal(text, "{\"type\":\"tcp\",\"n\":0}\n{\"type\":\"tcp\",\"n\":2}\n"
				  "{\"type\":\"tcp\",\"n\":4}\n{\"type\":\"tcp\",\"n\":1}\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_addr),
		cmocka_unit_test(test_format_time),
		cmocka_unit_test(test_ids),
		cmocka_unit_test_setup_teardown(test_record_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode_0600, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_partial_last_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_long, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gate_observer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serialise_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batching, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
