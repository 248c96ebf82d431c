/* The indexed fields of each record type, as the store and the matcher read
 * them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "flows/fields.h"

static json_t *load(const char *text)
{
	char *s = strdup(text);
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_error_t err;
	json_t *j = json_loads(s, 0, &err);
	free(s);
	assert_non_null(j);
	return j;
}

static void test_http(void **ctx)
{
	(void)ctx;
	json_t *r = load(
		"{'type':'http','id':'ab-2','peer':'phone','client':'10.66.77.2:40000',"
		"'server':'93.184.216.34:443','start':'2024-05-01T12:00:00.100000Z',"
		"'end':'2024-05-01T12:00:00.131Z','bytes_up':3,'bytes_down':44,"
		"'end_reason':'complete','conn':'ab-1','http_version':'HTTP/2','method':'POST',"
		"'url':'https://User@API.Example.com:8443/v1?q=1',"
		"'request':{'headers':[['content-type','application/json']],"
		"'body':{'text':'{}','size':2,'truncated':false}},"
		"'response':{'status':201,'headers':[['Content-Type','text/plain'],"
		"['content-type','x/ignored']],'body':{'base64':'aGk=','size':2}}}");
	struct flow_fields f;
	assert_int_equal(flow_fields_read(r, &f), 0);
	assert_string_equal(f.type, "http");
	assert_string_equal(f.id, "ab-2");
	assert_string_equal(f.peer, "phone");
	assert_string_equal(f.conn, "ab-1");
	assert_string_equal(f.host, "api.example.com");
	assert_string_equal(f.method, "POST");
	assert_string_equal(f.proto, "HTTP/2");
	assert_int_equal(f.status, 201);
	assert_true(f.has_response);
	assert_string_equal(f.req_ctype, "application/json");
	assert_string_equal(f.resp_ctype, "text/plain");
	assert_int_equal(f.start_us, 1714564800100000LL);
	assert_int_equal(f.end_us - f.start_us, 31000);
	assert_int_equal(f.bytes_down, 44);
	assert_null(f.error);
	assert_false(f.websocket);
	json_t *sum = flow_summary_json(&f);
	assert_string_equal(json_string_value(json_object_get(sum, "host")), "api.example.com");
	assert_int_equal(json_integer_value(json_object_get(sum, "status")), 201);
	assert_int_equal(json_integer_value(json_object_get(sum, "size")), 47);
	assert_true(json_real_value(json_object_get(sum, "duration_ms")) == 31.0);
	assert_string_equal(json_string_value(json_object_get(sum, "start")),
			    "2024-05-01T12:00:00.100000Z");
	assert_true(json_is_null(json_object_get(sum, "error")));
	json_decref(sum);
	size_t len;
	uint8_t *owned;
	const uint8_t *b = flow_body_bytes(f.resp_body, &len, &owned);
	assert_int_equal(len, 2);
	assert_memory_equal(b, "hi", 2);
	assert_non_null(owned);
	free(owned);
	b = flow_body_bytes(f.req_body, &len, &owned);
	assert_int_equal(len, 2);
	assert_null(owned);
	json_decref(r);

	/* No response; an IPv6 literal host. */
	r = load("{'type':'http','id':'ab-3','url':'http://[FD00::1]:8080/','method':'GET',"
		 "'request':{'headers':[]},'response':null,'end_reason':'upstream_reset',"
		 "'error':'upstream closed'}");
	assert_int_equal(flow_fields_read(r, &f), 0);
	assert_string_equal(f.host, "fd00::1");
	assert_false(f.has_response);
	assert_int_equal(f.status, 0);
	assert_string_equal(f.error, "upstream closed");
	assert_null(f.peer);
	json_decref(r);
}

static void test_other_types(void **ctx)
{
	(void)ctx;
	struct flow_fields f;
	json_t *r = load("{'type':'tcp','id':'ab-1','server':'93.184.216.34:443','proto':'tls',"
			 "'sni':'Example.COM','end_reason':'tls:client_rejected',"
			 "'tls_error':'client rejected certificate: alert unknown CA received'}");
	assert_int_equal(flow_fields_read(r, &f), 0);
	assert_string_equal(f.host, "example.com");
	assert_true(f.tls_rejected);
	assert_false(f.passthrough);
	assert_string_equal(f.error, "client rejected certificate: alert unknown CA received");
	json_decref(r);

	r = load("{'type':'tcp','id':'ab-4','server':'[2001:db8::5]:443',"
		 "'proto':'tls-passthrough','passthrough':'auto'}");
	assert_int_equal(flow_fields_read(r, &f), 0);
	assert_string_equal(f.host, "2001:db8::5");
	assert_true(f.passthrough);
	json_decref(r);

	r = load("{'type':'dns','id':'ab-5','transport':'udp','name':'www.Example.test.',"
		 "'rcode':'NOERROR'}");
	assert_int_equal(flow_fields_read(r, &f), 0);
	assert_string_equal(f.host, "www.example.test");
	assert_string_equal(f.proto, "udp");
	json_decref(r);

	r = load("{'type':'udp','id':'ab-6','server':'192.0.2.9:5353'}");
	assert_int_equal(flow_fields_read(r, &f), 0);
	assert_string_equal(f.host, "192.0.2.9");
	json_decref(r);

	r = load(
		"{'type':'websocket','id':'ab-7','url':'wss://chat.example.com/ws','messages':[]}");
	assert_int_equal(flow_fields_read(r, &f), 0);
	assert_true(f.websocket);
	assert_string_equal(f.host, "chat.example.com");
	json_decref(r);

	/* Not a record. */
	r = load("{'id':'x'}");
	assert_int_equal(flow_fields_read(r, &f), -1);
	assert_null(f.id);
	json_decref(r);
	assert_int_equal(flow_time_us("2024-05-01T12:00:00Z"), 1714564800000000LL);
	json_t *t = flow_time_json(1714564800100200LL);
	assert_string_equal(json_string_value(t), "2024-05-01T12:00:00.100200Z");
	json_decref(t);
	t = flow_time_json(0);
	assert_true(json_is_null(t));
	json_decref(t);
	assert_int_equal(flow_time_us("2024-05-01 12:00:00"), 0);
	assert_int_equal(flow_time_us(NULL), 0);
}

static void test_headers_text(void **ctx)
{
	(void)ctx;
	json_t *h = load("[['Host','a.test'],['x-multi','1'],['X-Multi',''],['bad'],[1,'x']]");
	char *text;
	size_t len;
	assert_int_equal(flow_headers_text(h, &text, &len), 0);
	assert_string_equal(text, "Host: a.test\nx-multi: 1\nX-Multi: \n");
	assert_int_equal(len, strlen(text));
	free(text);
	json_decref(h);
	/* No headers: empty text; not an array: NULL. */
	h = json_array();
	assert_int_equal(flow_headers_text(h, &text, &len), 0);
	assert_string_equal(text, "");
	free(text);
	json_decref(h);
	assert_int_equal(flow_headers_text(NULL, &text, &len), 0);
	assert_null(text);
	assert_int_equal(len, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http),
		cmocka_unit_test(test_other_types),
		cmocka_unit_test(test_headers_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
