/* The store's record reader: fields, header texts, bodies and the record
 * left without them, read from hand-made lines, and the lines it must
 * refuse as jansson does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "flows/recscan.h"

/* ' stands for " in these lines; none holds a '. */
static char *line_of(const char *s)
{
	char *l = strdup(s);
	for (char *p = l; *p; p++)
		if (*p == '\'')
			*p = '"';
	return l;
}

static int scan(struct rec_scan *rs, const char *s)
{
	char *l = line_of(s);
	/* Not NUL-terminated where the store reads it: copy without the NUL. */
	size_t n = strlen(l);
	char *exact = malloc(n ? n : 1);
	memcpy(exact, l, n);
	free(l);
	int rc = rec_scan(rs, exact, n);
	/* The results point into the line: keep it for the test's checks. */
	static char *kept;
	free(kept);
	kept = exact;
	return rc;
}

static void test_http(void **state)
{
	(void)state;
	struct rec_scan rs = { 0 };
	assert_int_equal(
		scan(&rs,
		     "{'type':'http','id':'r-2','peer':'phone','client':'10.0.0.2:4000',"
		     "'server':'1.2.3.4:443','start':'2024-05-01T12:00:00.100000Z',"
		     "'end':'2024-05-01T12:00:00.131000Z','bytes_up':5,'bytes_down':44,"
		     "'end_reason':'complete','conn':'r-1','method':'POST',"
		     "'url':'https://API.Example.com:8443/v1?q=\\u00e9','http_version':'HTTP/1.1',"
		     "'request':{'headers':[['Host','api.example.com'],['Content-Type',"
		     "'application/json'],['X-Esc','a\\tb']],'body':{'text':'{\\'a\\':1}',"
		     "'size':7,'truncated':false}},'response':{'status':201,'headers':"
		     "[['content-encoding','gzip'],['Content-Type','text/plain']],"
		     "'body':{'size':3,'base64':'AAEC'}},'websocket':false}"),
		0);
	const struct flow_fields *f = &rs.f;
	assert_string_equal(f->type, "http");
	assert_string_equal(f->id, "r-2");
	assert_string_equal(f->peer, "phone");
	assert_string_equal(f->conn, "r-1");
	assert_string_equal(f->host, "api.example.com");
	assert_string_equal(f->url, "https://API.Example.com:8443/v1?q=\xc3\xa9");
	assert_string_equal(f->method, "POST");
	assert_string_equal(f->proto, "HTTP/1.1");
	assert_int_equal(f->status, 201);
	assert_true(f->has_response);
	assert_false(f->websocket);
	assert_int_equal(f->end_us - f->start_us, 31000);
	assert_int_equal(f->bytes_up, 5);
	assert_string_equal(f->req_ctype, "application/json");
	assert_string_equal(f->resp_ctype, "text/plain");
	assert_string_equal(rs.headers[0],
			    "Host: api.example.com\nContent-Type: application/json\nX-Esc: a\tb\n");
	assert_int_equal(rs.headers_len[0], strlen(rs.headers[0]));
	assert_string_equal(rs.headers[1], "content-encoding: gzip\nContent-Type: text/plain\n");
	assert_true(rs.body[0].present);
	assert_int_equal(rs.body[0].len, 7);
	assert_memory_equal(rs.body[0].data, "{\"a\":1}", 7);
	assert_null(rs.body[0].encoding);
	assert_true(rs.body[1].present);
	assert_int_equal(rs.body[1].len, 3);
	assert_memory_equal(rs.body[1].data, "\0\1\2", 3);
	assert_string_equal(rs.body[1].encoding, "gzip");

	/* The record keeps everything but the content. */
	json_t *j = json_loadb(rs.record, rs.record_len, 0, NULL);
	assert_non_null(j);
	json_t *b0 = json_object_get(json_object_get(j, "request"), "body");
	json_t *b1 = json_object_get(json_object_get(j, "response"), "body");
	assert_null(json_object_get(b0, "text"));
	assert_int_equal(json_integer_value(json_object_get(b0, "size")), 7);
	assert_true(json_is_false(json_object_get(b0, "truncated")));
	assert_null(json_object_get(b1, "base64"));
	assert_int_equal(json_integer_value(json_object_get(b1, "size")), 3);
	assert_int_equal(
		json_integer_value(json_object_get(json_object_get(j, "response"), "status")), 201);
	json_decref(j);
	rec_scan_free(&rs);
}

/* Wherever the moved member is in its object, what is left is JSON. */
static void test_cut_positions(void **state)
{
	(void)state;
	static const char *const bodies[] = {
		"{'text':'x'}",
		"{ 'text' : 'x' , 'size' : 1 }",
		"{'size':1,'text':'x'}",
		"{'size':1,'text':'x','truncated':true}",
		"{'size':1 , 'text':'x' ,'truncated':true}",
		"{'text':'old','size':1,'text':'x'}",
		"{'text':'x','base64':'AAAA'}",
	};
	struct rec_scan rs = { 0 };
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char l[256];
		snprintf(l, sizeof(l), "{'type':'http','id':'c','request':{'body':%s}}", bodies[i]);
		assert_int_equal(scan(&rs, l), 0);
		assert_true(rs.body[0].present);
		assert_int_equal(rs.body[0].len, 1);
		assert_memory_equal(rs.body[0].data, "x", 1);
		json_t *j = json_loadb(rs.record, rs.record_len, 0, NULL);
		if (!j)
			fail_msg("case %zu: %.*s", i, (int)rs.record_len, rs.record);
		json_t *b = json_object_get(json_object_get(j, "request"), "body");
		assert_true(json_is_object(b));
		const char *left = json_string_value(json_object_get(b, "text"));
		/* An earlier duplicate stays; the value read is the last one. */
		assert_true(left == NULL || strcmp(left, "old") == 0);
		json_decref(j);
	}
	/* Not base64: it stays in the record. */
	assert_int_equal(scan(&rs, "{'type':'http','id':'c','request':{'body':{'base64':'!!'}}}"),
			 0);
	assert_false(rs.body[0].present);
	assert_int_equal(rs.record_len, strlen("{'type':'http','id':'c','request':{'body':{'base64'"
					       ":'!!'}}}"));
	rec_scan_free(&rs);
}

static void test_other_types(void **state)
{
	(void)state;
	struct rec_scan rs = { 0 };
	assert_int_equal(
		scan(&rs, "{'type':'tcp','id':'t','server':'1.2.3.4:443','sni':'Foo.EXAMPLE',"
			  "'proto':'tls','end_reason':'tls:client_rejected','tls_error':'bad'}"),
		0);
	assert_string_equal(rs.f.host, "foo.example");
	assert_true(rs.f.tls_rejected);
	assert_false(rs.f.passthrough);
	assert_string_equal(rs.f.error, "bad");
	assert_null(rs.headers[0]);
	assert_false(rs.body[0].present);

	assert_int_equal(scan(&rs, "{'type':'tcp','id':'t','server':'[2001:db8::1]:443',"
				   "'passthrough':'pinned'}"),
			 0);
	assert_string_equal(rs.f.host, "2001:db8::1");
	assert_true(rs.f.passthrough);

	assert_int_equal(
		scan(&rs, "{'type':'dns','id':'d','name':'Example.com.','transport':'tcp'}"), 0);
	assert_string_equal(rs.f.host, "example.com");
	assert_string_equal(rs.f.proto, "tcp");

	/* Wrong types read as absent; the last of a repeated key counts. */
	assert_int_equal(scan(&rs,
			      "{'type':'udp','id':'u','peer':7,'bytes_up':1.5,'bytes_down':3,"
			      "'bytes_down':4,'server':'9.9.9.9:53','\\u0073erver':'8.8.8.8:53'}"),
			 0);
	assert_null(rs.f.peer);
	assert_int_equal(rs.f.bytes_up, 0);
	assert_int_equal(rs.f.bytes_down, 4);
	assert_string_equal(rs.f.host, "8.8.8.8");
	/* An http record's response that is not an object: no response. */
	assert_int_equal(scan(&rs, "{'type':'http','id':'h','response':[1]}"), 0);
	assert_false(rs.f.has_response);
	rec_scan_free(&rs);
}

static void test_refused(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"",
		"   ",
		"[]",
		"{}",
		"{'type':'tcp'}",
		"{'type':'tcp','id':5}",
		"{'type':'tcp','id':'x'} x",
		"{'type':'tcp','id':'x',}",
		"{'type':'tcp','id':'x'",
		"{'type':'tcp','id':'x','a':01}",
		"{'type':'tcp','id':'x','a':1.}",
		"{'type':'tcp','id':'x','a':-}",
		"{'type':'tcp','id':'x','a':9223372036854775808}",
		"{'type':'tcp','id':'x','a':-9223372036854775809}",
		"{'type':'tcp','id':'x','a':1e400}",
		"{'type':'tcp','id':'x','a':'\\ud800'}",
		"{'type':'tcp','id':'x','a':'\\udc00'}",
		"{'type':'tcp','id':'x','a':'\\x'}",
		"{'type':'tcp','id':'x','a':tru}",
		"{'type':'tcp','id':'x','a\\u0000':1}",
		"{'type':'tcp','id':'x','a':'\xc0\xaf'}",
		"{'type':'tcp','id':'x','a':'\xed\xa0\x80'}",
		"{'type':'tcp','id':'x','a':'\xf4\x90\x80\x80'}",
		"{'type':'tcp','id':'x','a':'\x01'}",
		"{'type':'tcp','id':'x' 'a':1}",
	};
	struct rec_scan rs = { 0 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (scan(&rs, bad[i]) != -1)
			fail_msg("accepted: %s", bad[i]);
	/* Accepted edges. */
	assert_int_equal(scan(&rs, "{'type':'tcp','id':'x','a':-9223372036854775808,'b':1e-400,"
				   "'c':'\\ud83d\\ude00\\u0000','d':[[[]]],'e':{}}"),
			 0);

	/* jansson's depth: 2048 levels in all. */
	size_t depth = 2048;
	char *deep = malloc(64 + 2 * depth);
	char *p = deep + sprintf(deep, "{\"type\":\"tcp\",\"id\":\"x\",\"a\":");
	memset(p, '[', depth - 1);
	memset(p + depth - 1, ']', depth - 1);
	strcpy(p + 2 * (depth - 1), "}");
	assert_int_equal(rec_scan(&rs, deep, strlen(deep)), 0);
	free(deep);
	depth = 2049;
	deep = malloc(64 + 2 * depth);
	p = deep + sprintf(deep, "{\"type\":\"tcp\",\"id\":\"x\",\"a\":");
	memset(p, '[', depth - 1);
	memset(p + depth - 1, ']', depth - 1);
	strcpy(p + 2 * (depth - 1), "}");
	assert_int_equal(rec_scan(&rs, deep, strlen(deep)), -1);
	free(deep);
	rec_scan_free(&rs);
}

/* One reader for many lines, as the store keeps it: a large line, then
 * small ones, each read right. */
static void test_reuse(void **state)
{
	(void)state;
	struct rec_scan rs = { 0 };
	size_t big = 6u << 20;
	char *l = malloc(big + 128);
	int n = sprintf(l, "{\"type\":\"http\",\"id\":\"big\",\"request\":{\"body\":{\"text\":\"");
	memset(l + n, 'a', big);
	strcpy(l + n + big, "\"}}}");
	assert_int_equal(rec_scan(&rs, l, strlen(l)), 0);
	assert_int_equal(rs.body[0].len, big);
	free(l);
	for (int i = 0; i < 3; i++) {
		char s[128];
		snprintf(s, sizeof(s),
			 "{'type':'http','id':'s%d','request':{'body':{'text':'%d'}}}", i, i);
		assert_int_equal(scan(&rs, s), 0);
		assert_int_equal(rs.body[0].len, 1);
		assert_int_equal(rs.body[0].data[0], '0' + i);
		char id[8];
		snprintf(id, sizeof(id), "s%d", i);
		assert_string_equal(rs.f.id, id);
	}
	assert_true(rs.arena_cap <= (4u << 20));
	rec_scan_free(&rs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http),        cmocka_unit_test(test_cut_positions),
		cmocka_unit_test(test_other_types), cmocka_unit_test(test_refused),
		cmocka_unit_test(test_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
