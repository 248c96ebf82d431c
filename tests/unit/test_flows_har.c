/* HAR export: a flows file of hand-made records (docs/flows.md) read with
 * flowlog_read and mapped to HAR 1.2, field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flows/har.h"
#include "flows/flowlog.h"

/* Records written with ' for " to keep them readable; none holds a '. */
static const char *const records[] = {
	/* 1: a TCP record: no HAR form. */
	"{'type':'tcp','id':'0a0b0c0d-1','peer':'phone','client':'10.66.77.2:40000',"
	"'server':'93.184.216.34:443','start':'2024-05-01T12:00:00.000000Z',"
	"'end':'2024-05-01T12:00:05.000000Z','bytes_up':100,'bytes_down':200,'end_reason':'fin',"
	"'proto':'tls','sni':'example.com'}",
	/* 2: GET with a query and cookies; gzip HTML answer with a Set-Cookie. */
	"{'type':'http','id':'0a0b0c0d-2','peer':'phone','client':'10.66.77.2:40000',"
	"'server':'93.184.216.34:443','start':'2024-05-01T12:00:00.100000Z',"
	"'end':'2024-05-01T12:00:00.131000Z','bytes_up':0,'bytes_down':44,'end_reason':'complete',"
	"'conn':'0a0b0c0d-1','tls':{'client':{'version':'TLSv1.3','cipher':'TLS_AES_128_GCM_SHA256'"
	","
	"'alpn':'http/1.1'},'upstream':{'version':'TLSv1.3','cipher':'TLS_AES_128_GCM_SHA256',"
	"'alpn':'http/1.1'}},'http_version':'HTTP/1.1','method':'GET',"
	"'url':'https://example.com/search?q=caf%C3%A9&lang=en&empty=&flag',"
	"'request':{'headers':[['Host','example.com'],['User-Agent','test/1.0'],"
	"['Cookie','sid=abc123; theme=dark']],'body':{'text':'','size':0,'truncated':false}},"
	"'response':{'headers':[['Content-Type','text/html; charset=utf-8'],"
	"['Content-Encoding','gzip'],['Set-Cookie','id=42; Path=/; Domain=example.com; "
	"Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure; HttpOnly; SameSite=Lax'],"
	"['Content-Length','44']],'body':{'base64':"
	"'H4sIAAAAAAACA7MpsMs4vDInJ1+h/PC2opwUhYHl2egX2AEAsD/"
	"nQ5MAAAA=','size':44,'truncated':false},"
	"'status':200,'reason':'OK'},'timings':{'start':'2024-05-01T12:00:00.100000Z',"
	"'request_end':'2024-05-01T12:00:00.100250Z','response_start':'2024-05-01T12:00:00.130500Z'"
	","
	"'end':'2024-05-01T12:00:00.131000Z'}}",
	/* 3: POST of a form, answered with a redirect (written before 4, started after). */
	"{'type':'http','id':'0a0b0c0d-3','peer':'phone','client':'10.66.77.2:40002',"
	"'server':'93.184.216.34:80','start':'2024-05-01T12:00:02.000000Z',"
	"'end':'2024-05-01T12:00:02.050000Z','bytes_up':27,'bytes_down':0,'end_reason':'complete',"
	"'conn':'0a0b0c0d-10','tls':null,'http_version':'HTTP/1.1','method':'POST',"
	"'url':'http://example.com/login','request':{'headers':[['Host','example.com'],"
	"['Content-Type','application/x-www-form-urlencoded'],['Content-Length','27']],"
	"'body':{'text':'user=alice&pass=p%40ss+word','size':27,'truncated':false}},"
	"'response':{'headers':[['Location','/home'],['Content-Length','0']],"
	"'body':{'text':'','size':0,'truncated':false},'status':302,'reason':'Found'},"
	"'timings':{'start':'2024-05-01T12:00:02.000000Z','request_end':'2024-05-01T12:00:02."
	"001000Z',"
	"'response_start':'2024-05-01T12:00:02.049000Z','end':'2024-05-01T12:00:02.050000Z'}}",
	/* 4: plain HTTP/1.0, a binary (PNG) answer. */
	"{'type':'http','id':'0a0b0c0d-4','peer':null,'client':'10.66.77.3:41000',"
	"'server':'10.0.0.5:8080','start':'2024-05-01T12:00:01.000000Z',"
	"'end':'2024-05-01T12:00:01.003000Z','bytes_up':0,'bytes_down':8,'end_reason':'complete',"
	"'conn':'0a0b0c0d-11','tls':null,'http_version':'HTTP/1.0','method':'GET',"
	"'url':'http://10.0.0.5:8080/img.png','request':{'headers':[['Host','10.0.0.5:8080']],"
	"'body':{'text':'','size':0,'truncated':false}},'response':{'headers':"
	"[['Content-Type','image/"
	"png']],'body':{'base64':'iVBORw0KGgo=','size':8,'truncated':false},"
	"'status':200,'reason':'OK'},'timings':{'start':'2024-05-01T12:00:01.000000Z',"
	"'request_end':'2024-05-01T12:00:01.000100Z','response_start':'2024-05-01T12:00:01.002000Z'"
	","
	"'end':'2024-05-01T12:00:01.003000Z'}}",
	/* 5: binary request body; the answer passed the recording cap. */
	"{'type':'http','id':'0a0b0c0d-5','peer':'phone','client':'10.66.77.2:40004',"
	"'server':'198.51.100.7:443','start':'2024-05-01T12:00:03.000000Z',"
	"'end':'2024-05-01T12:00:03.900000Z','bytes_up':4,'bytes_down':2000000,"
	"'end_reason':'complete','conn':'0a0b0c0d-12','tls':null,'http_version':'HTTP/1.1',"
	"'method':'POST','url':'https://cdn.example.net/upload?x=1','request':{'headers':"
	"[['Host','cdn.example.net'],['Content-Type','application/octet-stream']],"
	"'body':{'base64':'AAEC/w==','size':4,'truncated':false}},'response':{'headers':"
	"[['Content-Type','text/"
	"plain']],'body':{'text':'0123456789','size':2000000,'truncated':true},"
	"'status':200,'reason':'OK'},'timings':{'start':'2024-05-01T12:00:03.000000Z',"
	"'request_end':'2024-05-01T12:00:03.000500Z','response_start':'2024-05-01T12:00:03.100000Z'"
	","
	"'end':'2024-05-01T12:00:03.900000Z'}}",
	/* 6: HTTP/2 with pseudo-headers and split cookies. */
	"{'type':'http','id':'0a0b0c0d-6','peer':'phone','client':'[fd00::2]:40006',"
	"'server':'[2001:db8::10]:443','start':'2024-05-01T12:00:04.000000Z',"
	"'end':'2024-05-01T12:00:04.020000Z','bytes_up':0,'bytes_down':7,'end_reason':'complete',"
	"'conn':'0a0b0c0d-13','tls':{'client':{'version':'TLSv1.3','cipher':'TLS_AES_256_GCM_"
	"SHA384',"
	"'alpn':'h2'},'upstream':{'version':'TLSv1.3','cipher':'TLS_AES_256_GCM_SHA384','alpn':'h2'"
	"}},"
	"'http_version':'HTTP/2','stream_id':3,'method':'GET',"
	"'url':'https://api.example.org/v1/items?page=2','request':{'headers':[[':method','GET'],"
	"[':scheme','https'],[':authority','api.example.org'],[':path','/v1/items?page=2'],"
	"['accept','application/json'],['cookie','a=1'],['cookie','b=2']],"
	"'body':{'text':'','size':0,'truncated':false}},'response':{'headers':[[':status','200'],"
	"['content-type','application/json']],'body':{'text':'[1,2,3]','size':7,'truncated':false},"
	"'status':200},'timings':{'start':'2024-05-01T12:00:04.000000Z',"
	"'request_end':'2024-05-01T12:00:04.000001Z','response_start':'2024-05-01T12:00:04.010000Z'"
	","
	"'end':'2024-05-01T12:00:04.020000Z'}}",
	/* 7: no response came. */
	"{'type':'http','id':'0a0b0c0d-7','peer':'phone','client':'10.66.77.2:40008',"
	"'server':'93.184.216.34:443','start':'2024-05-01T12:00:05.000000Z',"
	"'end':'2024-05-01T12:00:05.250000Z','bytes_up':0,'bytes_down':0,"
	"'end_reason':'upstream_reset','error':'upstream reset the connection',"
	"'conn':'0a0b0c0d-14','tls':null,'http_version':'HTTP/1.1','method':'GET',"
	"'url':'https://example.com/slow','request':{'headers':[['Host','example.com']],"
	"'body':{'text':'','size':0,'truncated':false}},'response':null,"
	"'timings':{'start':'2024-05-01T12:00:05.000000Z','request_end':'2024-05-01T12:00:05."
	"000200Z',"
	"'response_start':null,'end':'2024-05-01T12:00:05.250000Z'}}",
	/* 8: a WebSocket upgrade. */
	"{'type':'http','id':'0a0b0c0d-8','peer':'phone','client':'10.66.77.2:40010',"
	"'server':'203.0.113.9:443','start':'2024-05-01T12:00:06.000000Z',"
	"'end':'2024-05-01T12:00:06.040000Z','bytes_up':0,'bytes_down':0,'end_reason':'complete',"
	"'conn':'0a0b0c0d-15','tls':null,'http_version':'HTTP/1.1','method':'GET',"
	"'url':'https://chat.example.com/socket','request':{'headers':[['Host','chat.example.com'],"
	"['Upgrade','websocket'],['Connection','Upgrade'],['Sec-WebSocket-Version','13'],"
	"['Sec-WebSocket-Key','dGhlIHNhbXBsZSBub25jZQ==']],'body':{'text':'','size':0,"
	"'truncated':false}},'response':{'headers':[['Upgrade','websocket'],['Connection','Upgrade'"
	"],"
	"['Sec-WebSocket-Accept','s3pPLMBiTxaQ9kYGzzhZRbK+xOo=']],'body':{'text':'','size':0,"
	"'truncated':false},'status':101,'reason':'Switching Protocols'},'websocket':true,"
	"'timings':{'start':'2024-05-01T12:00:06.000000Z','request_end':'2024-05-01T12:00:06."
	"000100Z',"
	"'response_start':'2024-05-01T12:00:06.040000Z','end':'2024-05-01T12:00:06.040000Z'}}",
	/* 9: its messages. */
	"{'type':'websocket','id':'0a0b0c0d-9','peer':'phone','client':'10.66.77.2:40010',"
	"'server':'203.0.113.9:443','start':'2024-05-01T12:00:06.500000Z',"
	"'end':'2024-05-01T12:00:06.760000Z','bytes_up':5,'bytes_down':3,'end_reason':'fin',"
	"'conn':'0a0b0c0d-15','url':'wss://chat.example.com/socket','messages':["
	"{'dir':'up','time':'2024-05-01T12:00:06.500000Z','opcode':'text',"
	"'body':{'text':'hello','size':5,'truncated':false}},"
	"{'dir':'down','time':'2024-05-01T12:00:06.750123Z','opcode':'binary',"
	"'body':{'base64':'AQID','size':3,'truncated':false}}],'close':{'code':1000,'reason':'bye'}"
	"}",
	/* 10: a batch of a connection with no upgrade in the file. */
	"{'type':'websocket','id':'0a0b0c0d-16','peer':'phone','client':'10.66.77.2:40012',"
	"'server':'203.0.113.9:443','start':'2024-05-01T12:00:07.000000Z',"
	"'end':'2024-05-01T12:00:07.000000Z','bytes_up':2,'bytes_down':0,'end_reason':'fin',"
	"'conn':'0a0b0c0d-99','url':'wss://other.example.com/','messages':[{'dir':'up',"
	"'time':'2024-05-01T12:00:07.000000Z','opcode':'text','body':{'text':'hi','size':2,"
	"'truncated':false}}]}",
};

/* A write cut short by a crash. */
static const char partial_line[] = "{\"type\":\"http\",\"id\":\"0a0b0c0d-99\",\"peer\":\"pho";

static char *dq(const char *s)
{
	char *d = strdup(s);
	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

struct fixture {
	char dir[64], flows[128], out[128];
	json_t *har; /* the HAR after a dump and load */
	json_t *entries;
	struct har_stats stats;
	bool partial;
};

static int feed(void *ctx, size_t line, json_t *record, const char *error)
{
	struct har *h = ctx;
	assert_null(error);
	char err[256] = "";
	int rc = har_add_record(h, record, err, sizeof(err));
	if (rc != 0)
		fail_msg("line %zu: %s", line, err);
	return 0;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_har.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->flows, sizeof(f->flows), "%s/flows.jsonl", f->dir);
	snprintf(f->out, sizeof(f->out), "%s/out.har", f->dir);
	FILE *fp = fopen(f->flows, "w");
	for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++) {
		char *line = dq(records[i]);
		fprintf(fp, "%s\n", line);
		free(line);
	}
	fputs(partial_line, fp);
	fclose(fp);

	struct har *h = har_create("9.8.7");
	if (!h || flowlog_read(f->flows, feed, h, &f->partial) != 0)
		return -1;
	if (har_finish(h, &f->stats) != 0)
		return -1;
	/* What a reader of the file sees. */
	fp = fopen(f->out, "w");
	int rc = har_write(h, fp);
	fclose(fp);
	har_free(h);
	if (rc != 0)
		return -1;
	json_error_t jerr;
	f->har = json_load_file(f->out, 0, &jerr);
	if (!f->har)
		return -1;
	f->entries = json_object_get(json_object_get(f->har, "log"), "entries");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	json_decref(f->har);
	unlink(f->flows);
	unlink(f->out);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* entries[i] after sorting, found by its record id. */
static json_t *entry(struct fixture *f, const char *id)
{
	size_t i;
	json_t *e;
	json_array_foreach(
		f->entries, i,
		e) if (strcmp(json_string_value(json_object_get(json_object_get(e, "_wgmitm"),
								"id")),
			      id) == 0) return e;
	fail_msg("no entry for %s", id);
	return NULL;
}

static json_t *at(json_t *root, const char *path)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	json_t *v = root;
	for (char *save, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
		char *end;
		long idx = strtol(k, &end, 10);
		v = *end == '\0' ? json_array_get(v, (size_t)idx) : json_object_get(v, k);
	}
	return v;
}

static const char *s_at(json_t *root, const char *path)
{
	json_t *v = at(root, path);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static double num(json_t *root, const char *path)
{
	json_t *v = at(root, path);
	assert_true(json_is_number(v));
	return json_number_value(v);
}

/* ms to whole µs (libm is not linked). */
static long long us_of(double ms)
{
	return (long long)(ms * 1000.0 + (ms >= 0 ? 0.5 : -0.5));
}

static double absd(double x)
{
	return x < 0 ? -x : x;
}

static void test_log(void **state)
{
	struct fixture *f = *state;
	assert_true(f->partial);
	assert_string_equal(s_at(f->har, "log.version"), "1.2");
	assert_string_equal(s_at(f->har, "log.creator.name"), "wgmitm");
	assert_string_equal(s_at(f->har, "log.creator.version"), "9.8.7");
	assert_null(at(f->har, "log.pages"));
	assert_int_equal(json_array_size(f->entries), 7);
	assert_int_equal(f->stats.entries, 7);
	assert_int_equal(f->stats.ignored, 1);
	assert_int_equal(f->stats.ws_messages, 2);
	assert_int_equal(f->stats.ws_unmatched, 1);
	/* Sorted by start, not file order (3 was written before 4). */
	static const char *const order[] = { "0a0b0c0d-2", "0a0b0c0d-4", "0a0b0c0d-3", "0a0b0c0d-5",
					     "0a0b0c0d-6", "0a0b0c0d-7", "0a0b0c0d-8" };
	for (size_t i = 0; i < 7; i++) {
		json_t *e = json_array_get(f->entries, i);
		assert_string_equal(s_at(e, "_wgmitm.id"), order[i]);
	}
}

/* Every entry: send + wait + receive = time, none negative, the others -1. */
static void test_timings_sum(void **state)
{
	struct fixture *f = *state;
	size_t i;
	json_t *e;
	json_array_foreach(f->entries, i, e)
	{
		double send = num(e, "timings.send"), wait = num(e, "timings.wait"),
		       receive = num(e, "timings.receive"), time = num(e, "time");
		assert_true(send >= 0 && wait >= 0 && receive >= 0);
		assert_int_equal(us_of(send) + us_of(wait) + us_of(receive), us_of(time));
		assert_true(absd(send + wait + receive - time) < 1e-9);
		assert_int_equal(json_integer_value(at(e, "timings.blocked")), -1);
		assert_int_equal(json_integer_value(at(e, "timings.dns")), -1);
		assert_int_equal(json_integer_value(at(e, "timings.connect")), -1);
		assert_int_equal(json_integer_value(at(e, "timings.ssl")), -1);
		assert_true(json_is_object(at(e, "cache")));
		assert_int_equal(json_object_size(at(e, "cache")), 0);
	}
}

static void test_get_with_query(void **state)
{
	struct fixture *f = *state;
	json_t *e = entry(f, "0a0b0c0d-2");
	assert_string_equal(s_at(e, "startedDateTime"), "2024-05-01T12:00:00.100Z");
	assert_int_equal(us_of(num(e, "time")), 31000);
	assert_int_equal(us_of(num(e, "timings.send")), 250);
	assert_int_equal(us_of(num(e, "timings.wait")), 30250);
	assert_int_equal(us_of(num(e, "timings.receive")), 500);
	assert_string_equal(s_at(e, "serverIPAddress"), "93.184.216.34");
	assert_string_equal(s_at(e, "connection"), "0a0b0c0d-1");

	assert_string_equal(s_at(e, "request.method"), "GET");
	assert_string_equal(s_at(e, "request.url"),
			    "https://example.com/search?q=caf%C3%A9&lang=en&empty=&flag");
	assert_string_equal(s_at(e, "request.httpVersion"), "HTTP/1.1");
	assert_int_equal(json_array_size(at(e, "request.headers")), 3);
	assert_string_equal(s_at(e, "request.headers.1.name"), "User-Agent");
	assert_string_equal(s_at(e, "request.headers.1.value"), "test/1.0");
	/* Query pairs as Chrome: split, still percent-encoded. */
	assert_int_equal(json_array_size(at(e, "request.queryString")), 4);
	assert_string_equal(s_at(e, "request.queryString.0.name"), "q");
	assert_string_equal(s_at(e, "request.queryString.0.value"), "caf%C3%A9");
	assert_string_equal(s_at(e, "request.queryString.2.name"), "empty");
	assert_string_equal(s_at(e, "request.queryString.2.value"), "");
	assert_string_equal(s_at(e, "request.queryString.3.name"), "flag");
	assert_string_equal(s_at(e, "request.queryString.3.value"), "");
	assert_int_equal(json_array_size(at(e, "request.cookies")), 2);
	assert_string_equal(s_at(e, "request.cookies.0.name"), "sid");
	assert_string_equal(s_at(e, "request.cookies.0.value"), "abc123");
	assert_string_equal(s_at(e, "request.cookies.1.name"), "theme");
	assert_string_equal(s_at(e, "request.cookies.1.value"), "dark");
	assert_int_equal(json_integer_value(at(e, "request.headersSize")), -1);
	assert_int_equal(json_integer_value(at(e, "request.bodySize")), 0);
	assert_null(at(e, "request.postData"));

	assert_int_equal(json_integer_value(at(e, "response.status")), 200);
	assert_string_equal(s_at(e, "response.statusText"), "OK");
	assert_string_equal(s_at(e, "response.httpVersion"), "HTTP/1.1");
	assert_string_equal(s_at(e, "response.redirectURL"), "");
	assert_int_equal(json_integer_value(at(e, "response.bodySize")), 44);
	/* gzip decoded: 147 bytes of UTF-8, 103 saved. */
	assert_int_equal(json_integer_value(at(e, "response.content.size")), 147);
	assert_int_equal(json_integer_value(at(e, "response.content.compression")), 103);
	assert_string_equal(s_at(e, "response.content.mimeType"), "text/html; charset=utf-8");
	assert_null(at(e, "response.content.encoding"));
	const char *text = s_at(e, "response.content.text");
	assert_non_null(text);
	assert_int_equal(strlen(text), 147);
	assert_memory_equal(text, "<p>h\xc3\xa9llo w\xc3\xb6rld h\xc3\xa9llo", 22);
	assert_string_equal(text + strlen(text) - 4, "</p>");
	/* Set-Cookie with its attributes. */
	assert_int_equal(json_array_size(at(e, "response.cookies")), 1);
	json_t *c = at(e, "response.cookies.0");
	assert_string_equal(s_at(c, "name"), "id");
	assert_string_equal(s_at(c, "value"), "42");
	assert_string_equal(s_at(c, "path"), "/");
	assert_string_equal(s_at(c, "domain"), "example.com");
	assert_string_equal(s_at(c, "expires"), "2037-10-21T07:28:00.000Z");
	assert_true(json_is_true(at(c, "httpOnly")));
	assert_true(json_is_true(at(c, "secure")));
	assert_string_equal(s_at(c, "sameSite"), "Lax");

	assert_string_equal(s_at(e, "_wgmitm.peer"), "phone");
	assert_string_equal(s_at(e, "_wgmitm.client"), "10.66.77.2:40000");
	assert_string_equal(s_at(e, "_wgmitm.tls.client.version"), "TLSv1.3");
	assert_true(json_is_false(at(e, "_wgmitm.truncated")));
}

static void test_post_form(void **state)
{
	struct fixture *f = *state;
	json_t *e = entry(f, "0a0b0c0d-3");
	assert_string_equal(s_at(e, "request.method"), "POST");
	assert_int_equal(json_array_size(at(e, "request.queryString")), 0);
	assert_int_equal(json_integer_value(at(e, "request.bodySize")), 27);
	assert_string_equal(s_at(e, "request.postData.mimeType"),
			    "application/x-www-form-urlencoded");
	assert_string_equal(s_at(e, "request.postData.text"), "user=alice&pass=p%40ss+word");
	assert_int_equal(json_array_size(at(e, "request.postData.params")), 2);
	assert_string_equal(s_at(e, "request.postData.params.0.name"), "user");
	assert_string_equal(s_at(e, "request.postData.params.0.value"), "alice");
	assert_string_equal(s_at(e, "request.postData.params.1.name"), "pass");
	assert_string_equal(s_at(e, "request.postData.params.1.value"), "p%40ss+word");
	assert_int_equal(json_integer_value(at(e, "response.status")), 302);
	assert_string_equal(s_at(e, "response.statusText"), "Found");
	assert_string_equal(s_at(e, "response.redirectURL"), "/home");
	assert_int_equal(json_integer_value(at(e, "response.content.size")), 0);
	assert_string_equal(s_at(e, "response.content.mimeType"), "x-unknown");
	assert_null(at(e, "response.content.text"));
	assert_string_equal(s_at(e, "serverIPAddress"), "93.184.216.34");
}

static void test_binary_response(void **state)
{
	struct fixture *f = *state;
	json_t *e = entry(f, "0a0b0c0d-4");
	assert_string_equal(s_at(e, "request.httpVersion"), "HTTP/1.0");
	assert_string_equal(s_at(e, "serverIPAddress"), "10.0.0.5");
	assert_string_equal(s_at(e, "response.content.mimeType"), "image/png");
	assert_string_equal(s_at(e, "response.content.text"), "iVBORw0KGgo=");
	assert_string_equal(s_at(e, "response.content.encoding"), "base64");
	assert_int_equal(json_integer_value(at(e, "response.content.size")), 8);
	assert_null(at(e, "response.content.compression"));
	assert_true(json_is_null(at(e, "_wgmitm.peer")));
	assert_true(json_is_null(at(e, "_wgmitm.tls")));
}

static void test_truncated_and_binary_request(void **state)
{
	struct fixture *f = *state;
	json_t *e = entry(f, "0a0b0c0d-5");
	assert_int_equal(json_array_size(at(e, "request.queryString")), 1);
	assert_string_equal(s_at(e, "request.queryString.0.name"), "x");
	assert_string_equal(s_at(e, "request.queryString.0.value"), "1");
	assert_int_equal(json_integer_value(at(e, "request.bodySize")), 4);
	assert_string_equal(s_at(e, "request.postData.mimeType"), "application/octet-stream");
	assert_string_equal(s_at(e, "request.postData.text"), "AAEC/w==");
	assert_string_equal(s_at(e, "request.postData._encoding"), "base64");
	assert_null(at(e, "request.postData.params"));
	assert_int_equal(json_integer_value(at(e, "response.bodySize")), 2000000);
	assert_int_equal(json_integer_value(at(e, "response.content.size")), 2000000);
	assert_string_equal(s_at(e, "response.content.text"), "0123456789");
	assert_string_equal(s_at(e, "response.content.comment"),
			    "truncated: 10 of 2000000 bytes recorded");
	assert_true(json_is_true(at(e, "_wgmitm.truncated")));
}

static void test_h2(void **state)
{
	struct fixture *f = *state;
	json_t *e = entry(f, "0a0b0c0d-6");
	assert_string_equal(s_at(e, "request.httpVersion"), "http/2.0");
	assert_string_equal(s_at(e, "response.httpVersion"), "http/2.0");
	assert_string_equal(s_at(e, "request.method"), "GET");
	assert_string_equal(s_at(e, "request.url"), "https://api.example.org/v1/items?page=2");
	/* Pseudo-headers left out; the cookie crumbs of h2 all parsed. */
	json_t *h = at(e, "request.headers");
	assert_int_equal(json_array_size(h), 3);
	assert_string_equal(s_at(h, "0.name"), "accept");
	assert_string_equal(s_at(h, "1.name"), "cookie");
	assert_string_equal(s_at(h, "2.value"), "b=2");
	assert_int_equal(json_array_size(at(e, "request.cookies")), 2);
	assert_string_equal(s_at(e, "request.cookies.1.name"), "b");
	assert_int_equal(json_array_size(at(e, "response.headers")), 1);
	assert_string_equal(s_at(e, "response.headers.0.name"), "content-type");
	assert_string_equal(s_at(e, "response.statusText"), "");
	assert_int_equal(json_integer_value(at(e, "response.status")), 200);
	assert_string_equal(s_at(e, "response.content.text"), "[1,2,3]");
	assert_string_equal(s_at(e, "serverIPAddress"), "2001:db8::10");
	assert_int_equal(json_integer_value(at(e, "_wgmitm.stream_id")), 3);
	assert_int_equal(us_of(num(e, "timings.send")), 1);
}

static void test_no_response(void **state)
{
	struct fixture *f = *state;
	json_t *e = entry(f, "0a0b0c0d-7");
	assert_int_equal(json_integer_value(at(e, "response.status")), 0);
	assert_string_equal(s_at(e, "response.statusText"), "");
	assert_string_equal(s_at(e, "response._error"), "upstream reset the connection");
	assert_int_equal(json_array_size(at(e, "response.headers")), 0);
	assert_int_equal(json_integer_value(at(e, "response.content.size")), 0);
	assert_string_equal(s_at(e, "comment"), "no response: upstream reset the connection");
	assert_string_equal(s_at(e, "_wgmitm.end_reason"), "upstream_reset");
	/* Sent in 0.2 ms, then waited until the reset: no receive phase. */
	assert_int_equal(us_of(num(e, "timings.send")), 200);
	assert_int_equal(us_of(num(e, "timings.wait")), 249800);
	assert_int_equal(us_of(num(e, "timings.receive")), 0);
	assert_int_equal(us_of(num(e, "time")), 250000);
}

static void test_websocket(void **state)
{
	struct fixture *f = *state;
	json_t *e = entry(f, "0a0b0c0d-8");
	assert_string_equal(s_at(e, "_resourceType"), "websocket");
	assert_int_equal(json_integer_value(at(e, "response.status")), 101);
	json_t *m = at(e, "_webSocketMessages");
	assert_int_equal(json_array_size(m), 2);
	assert_string_equal(s_at(m, "0.type"), "send");
	assert_int_equal(json_integer_value(at(m, "0.opcode")), 1);
	assert_string_equal(s_at(m, "0.data"), "hello");
	/* 2024-05-01T12:00:06.500Z in epoch seconds. */
	assert_true(absd(num(m, "0.time") - 1714564806.5) < 1e-6);
	assert_string_equal(s_at(m, "1.type"), "receive");
	assert_int_equal(json_integer_value(at(m, "1.opcode")), 2);
	assert_string_equal(s_at(m, "1.data"), "AQID");
	assert_true(absd(num(m, "1.time") - 1714564806.750) < 1e-6);
	assert_int_equal(json_integer_value(at(e, "_wgmitm.websocket_close.code")), 1000);
	/* Other entries carry no messages. */
	assert_null(at(entry(f, "0a0b0c0d-2"), "_webSocketMessages"));
}

/* Records fed one by one: decoding variants and refusals. */
static json_t *one_entry(const char *rec_sq, char *err, size_t errlen, int *rc)
{
	char *text = dq(rec_sq);
	json_error_t jerr;
	json_t *rec = json_loads(text, 0, &jerr);
	free(text);
	assert_non_null(rec);
	struct har *h = har_create("1");
	*rc = har_add_record(h, rec, err, errlen);
	json_decref(rec);
	json_t *har = NULL;
	if (*rc == 0) {
		char *text = NULL;
		size_t len = 0;
		FILE *fp = open_memstream(&text, &len);
		assert_int_equal(har_finish(h, NULL), 0);
		assert_int_equal(har_write(h, fp), 0);
		fclose(fp);
		har = json_loadb(text, len, 0, &jerr);
		assert_non_null(har);
		free(text);
	}
	har_free(h);
	return har;
}

#define HTTP_HEAD                                                                                  \
	"{'type':'http','id':'x-1','peer':null,'client':'10.66.77.2:1','server':'192.0.2.1:80',"   \
	"'start':'2024-05-01T12:00:00Z','end':'2024-05-01T12:00:01Z','bytes_up':0,'bytes_down':0," \
	"'end_reason':'complete','conn':'x-0','tls':null,'http_version':'HTTP/1.1',"

static void test_decoding(void **state)
{
	(void)state;
	char err[256];
	int rc;
	/* Raw deflate (no zlib header), as some servers send "deflate". */
	json_t *har = one_entry(
		HTTP_HEAD "'method':'GET','url':'http://a/','request':{'headers':[],"
			  "'body':{'text':'','size':0,'truncated':false}},'response':{'headers':"
			  "[['Content-Encoding','deflate']],'body':{'base64':"
			  "'s8koyc2xyzi8MicnX6H88LainBQbfbAYAA==','size':25,'truncated':false},"
			  "'status':200,'reason':'OK'},'timings':null}",
		err, sizeof(err), &rc);
	assert_int_equal(rc, 0);
	json_t *e = at(har, "log.entries.0");
	assert_string_equal(s_at(e, "response.content.text"),
			    "<html>h\xc3\xa9llo w\xc3\xb6rld</html>");
	assert_int_equal(json_integer_value(at(e, "response.content.size")), 26);
	/* No timings: the record's start and end, all in send. */
	assert_string_equal(s_at(e, "startedDateTime"), "2024-05-01T12:00:00.000Z");
	assert_int_equal(us_of(num(e, "time")), 1000000);
	json_decref(har);

	/* A gzip body cut by the cap: what decodes is kept, and said. */
	har = one_entry(
		HTTP_HEAD
		"'method':'GET','url':'http://a/','request':{'headers':[],"
		"'body':{'text':'','size':0,'truncated':false}},'response':{'headers':"
		"[['Content-Encoding','gzip'],['Content-Type','text/html']],'body':{'base64':"
		"'H4sIAAAAAAACA7MpsMs4vDInJ1+h','size':44,'truncated':true},"
		"'status':200,'reason':'OK'},'timings':null}",
		err, sizeof(err), &rc);
	assert_int_equal(rc, 0);
	e = at(har, "log.entries.0");
	const char *text = s_at(e, "response.content.text");
	assert_non_null(text);
	assert_true(strncmp(text, "<p>h", 4) == 0);
	assert_int_equal(json_integer_value(at(e, "response.content.size")), 44);
	assert_non_null(
		strstr(s_at(e, "response.content.comment"), "truncated: 21 of 44 bytes recorded"));
	assert_non_null(strstr(s_at(e, "response.content.comment"), "decoded what was recorded"));
	json_decref(har);

	/* Bytes a URI cannot hold are escaped; the query pairs stay as sent. */
	har = one_entry(HTTP_HEAD
			"'method':'GET','url':'http://a/p a|th?q={x}&r=50%&s=%41\xc3\xa9',"
			"'request':{'headers':[]},'response':null,'timings':null}",
			err, sizeof(err), &rc);
	assert_int_equal(rc, 0);
	e = at(har, "log.entries.0");
	assert_string_equal(s_at(e, "request.url"),
			    "http://a/p%20a%7Cth?q=%7Bx%7D&r=50%25&s=%41%C3%A9");
	assert_string_equal(s_at(e, "request.queryString.0.value"), "{x}");
	assert_string_equal(s_at(e, "request.queryString.1.value"), "50%");
	json_decref(har);

	/* An encoding we do not decode stays as recorded. */
	har = one_entry(HTTP_HEAD
			"'method':'GET','url':'http://a/','request':{'headers':[],"
			"'body':{'text':'','size':0,'truncated':false}},'response':{'headers':"
			"[['Content-Encoding','br']],'body':{'base64':'iw+AaGVsbG8D','size':9,'"
			"truncated':false},"
			"'status':200,'reason':'OK'},'timings':null}",
			err, sizeof(err), &rc);
	assert_int_equal(rc, 0);
	e = at(har, "log.entries.0");
	assert_string_equal(s_at(e, "response.content.text"), "iw+AaGVsbG8D");
	assert_string_equal(s_at(e, "response.content.encoding"), "base64");
	assert_string_equal(s_at(e, "response.content.comment"),
			    "Content-Encoding br not decoded: text is the encoded body");
	json_decref(har);
}

static void test_refusals(void **state)
{
	(void)state;
	char err[256];
	int rc;
	json_t *har = one_entry(HTTP_HEAD "'method':'GET','request':{'headers':[]},'response':null,"
					  "'timings':null}",
				err, sizeof(err), &rc);
	assert_null(har);
	assert_int_equal(rc, -EINVAL);
	assert_string_equal(err, "http record: \"url\" is not a string");

	/* A request that never parsed has a null method: skipped, not an error. */
	struct har *h = har_create("1");
	char *text = dq(HTTP_HEAD "'method':null,'url':'http://a/','request':{'headers':[]},"
				  "'response':null,'timings':null}");
	json_t *rec = json_loads(text, 0, NULL);
	free(text);
	assert_int_equal(har_add_record(h, rec, err, sizeof(err)), 0);
	json_decref(rec);
	/* A batch without its connection id cannot be placed: counted. */
	rec = json_pack("{s:s, s:[]}", "type", "websocket", "messages");
	assert_int_equal(har_add_record(h, rec, err, sizeof(err)), 0);
	json_decref(rec);
	struct har_stats st;
	assert_int_equal(har_finish(h, &st), 0);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.skipped, 1);
	assert_int_equal(st.ws_unmatched, 1);
	har_free(h);

	har = one_entry(HTTP_HEAD "'method':'GET','url':'/relative','request':{'headers':[]},"
				  "'response':null,'timings':null}",
			err, sizeof(err), &rc);
	assert_null(har);
	assert_int_equal(rc, -EINVAL);
	assert_string_equal(err, "http record: \"url\" is not absolute");

	har = one_entry(HTTP_HEAD "'method':'GET','url':'http://a/','request':{'headers':[['a']]},"
				  "'response':null,'timings':null}",
			err, sizeof(err), &rc);
	assert_null(har);
	assert_int_equal(rc, -EINVAL);
	assert_string_equal(err, "request header 0 is not a [name, value] pair of strings");

	har = one_entry(HTTP_HEAD "'method':'GET','url':'http://a/','request':{'headers':[]},"
				  "'response':null,'timings':{'start':'yesterday'}}",
			err, sizeof(err), &rc);
	assert_null(har);
	assert_string_equal(err, "\"start\" is not an RFC 3339 time");
}

static void test_time_helpers(void **state)
{
	(void)state;
	int64_t us;
	assert_true(har_parse_time("2024-05-01T12:34:56.123456Z", &us));
	assert_int_equal(us, 1714566896123456LL);
	assert_true(har_parse_time("2024-05-01T14:34:56.5+02:00", &us));
	assert_int_equal(us, 1714566896500000LL);
	assert_false(har_parse_time("2024-05-01 12:34:56Z", &us));
	assert_false(har_parse_time("2024-05-01T12:34:56", &us));
	assert_false(har_parse_time("2024-05-01T12:34:56.Z", &us));
	char out[32];
	har_format_time(1714566896123456LL, out);
	assert_string_equal(out, "2024-05-01T12:34:56.123Z");
	har_format_time(0, out);
	assert_string_equal(out, "1970-01-01T00:00:00.000Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timings_sum, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_with_query, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_form, setup, teardown),
		cmocka_unit_test_setup_teardown(test_binary_response, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_and_binary_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_h2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_response, setup, teardown),
		cmocka_unit_test_setup_teardown(test_websocket, setup, teardown),
		cmocka_unit_test(test_decoding),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_time_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
