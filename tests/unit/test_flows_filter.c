/* The filter language: parsing (operators, precedence, quoting, errors and
 * their columns), and both back ends over one table of records: every
 * expression is matched against each record's struct flow_fields and run
 * as SQL over an in-memory store filled the way schema.h says
 * (flows_testutil.h), and both must give the expected set. The compressed
 * bodies are made with each library's encoder (flows_testutil.h too). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "flows/fields.h"
#include "flows/filter.h"
#include "flows/schema.h"
#include "tests/unit/flows_testutil.h"

/* ---- bodies -------------------------------------------------------------- */

/* `text` coded as `how`: "gzip", "deflate", "br", "zstd", "gzip, br". */
static struct flows_test_buf encode(const char *how, const char *text)
{
	size_t n = strlen(text);
	if (strcmp(how, "gzip") == 0)
		return flows_test_zlib(text, n, 15 + 16);
	if (strcmp(how, "deflate") == 0)
		return flows_test_zlib(text, n, 15);
	if (strcmp(how, "br") == 0)
		return flows_test_brotli(text, n);
	if (strcmp(how, "zstd") == 0)
		return flows_test_zstd(text, n);
	assert_string_equal(how, "gzip, br");
	struct flows_test_buf gz = flows_test_zlib(text, n, 15 + 16);
	struct flows_test_buf b = flows_test_brotli(gz.p, gz.len);
	free(gz.p);
	return b;
}

static json_t *body_json(struct flows_test_buf b, bool truncated)
{
	size_t n = sodium_base64_ENCODED_LEN(b.len, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(n);
	sodium_bin2base64(b64, n, b.p, b.len, sodium_base64_VARIANT_ORIGINAL);
	json_t *o = json_pack("{s:s, s:I, s:b}", "base64", b64, "size", (json_int_t)b.len,
			      "truncated", truncated);
	free(b64);
	return o;
}

/* ---- records ------------------------------------------------------------- */

/* JSON with ' for ". */
static json_t *load(const char *text)
{
	char *s = strdup(text);
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_error_t err;
	json_t *j = json_loads(s, 0, &err);
	if (!j)
		fail_msg("%s: %s", err.text, text);
	free(s);
	return j;
}

/* The keys every http record here starts with. */
#define HTTP(id, peer, client, server, method, url)                                                \
	"{'type':'http','id':'" id "','peer':" peer ",'client':'" client "','server':'" server     \
	"','start':'2024-05-01T12:00:00Z','end':'2024-05-01T12:00:01Z','http_version':'HTTP/1.1'," \
	"'method':'" method "','url':'" url "',"

struct record {
	const char *head, *rest; /* the JSON: head (may be "") then rest */
	/* A response body made here: `plain` coded as `coding`; `cut`: only the
	 * first half of the coded bytes, recorded as truncated. */
	const char *coding, *plain;
	bool cut;
};

static char big_text[9000];

static const struct record RECORDS[] = {
	/* 0 */
	{ HTTP("h-gzip", "'phone'", "10.66.77.2:40001", "93.184.216.34:443", "GET",
	       "https://example.com/index.html"),
	  "'request':{'headers':[[':authority','example.com'],['user-agent','curl/8.0'],"
	  "['accept','*/*']]},"
	  "'response':{'status':200,'headers':[['content-type','text/html; charset=utf-8'],"
	  "['content-encoding','gzip'],['server','nginx']]},'end_reason':'complete'}",
	  "gzip", "<html><title>Hello gzip world</title></html>", false },
	/* 1 */
	{ HTTP("h-post-br", "'laptop'", "10.66.77.3:50000", "203.0.113.10:443", "POST",
	       "https://api.example.com/v1/users?id=42"),
	  "'request':{'headers':[['content-type','application/json'],['x-api-key','k-123']],"
	  "'body':{'text':'{\\'name\\':\\'alice\\'}','size':16}},"
	  "'response':{'status':201,'headers':[['Content-Type','application/json'],"
	  "['Content-Encoding','br']]}}",
	  "br", "{\"id\":42,\"token\":\"secret-br\"}", false },
	/* 2 */
	{ HTTP("h-404-zstd", "'phone'", "10.66.77.2:40002", "198.51.100.7:80", "GET",
	       "http://shop.test/cart"),
	  "'request':{'headers':[]},"
	  "'response':{'status':404,'headers':[['content-type','text/plain'],"
	  "['content-encoding','zstd']]}}",
	  "zstd", "cart not found (zstd)", false },
	/* 3 */
	{ HTTP("h-noresp", "'tablet'", "10.66.77.4:1234", "93.184.216.34:8443", "GET",
	       "https://Example.com:8443/search?q=Needle"),
	  "'request':{'headers':[['host','Example.com:8443']]},'response':null,"
	  "'end_reason':'upstream_reset','error':'upstream closed the connection'}",
	  NULL, NULL, false },
	/* 4: a PNG request body; a gzip response cut by the recording cap */
	{ HTTP("h-500-cut", "'laptop'", "10.66.77.3:50001", "203.0.113.11:443", "PUT",
	       "https://cdn.example.net/upload"),
	  "'request':{'headers':[['content-type','image/png']],"
	  "'body':{'base64':'iVBORw0KGgo=','size':8}},"
	  "'response':{'status':500,'headers':[['content-type','text/plain'],"
	  "['content-encoding','gzip']]}}",
	  "gzip", big_text, true },
	/* 5 */
	{ HTTP("h-ws-upgrade", "'phone'", "10.66.77.2:40003", "203.0.113.12:443", "GET",
	       "https://chat.example.com/ws"),
	  "'request':{'headers':[['upgrade','websocket'],['connection','Upgrade']]},"
	  "'response':{'status':101,'headers':[['upgrade','websocket']]},'websocket':true}",
	  NULL, NULL, false },
	/* 6 */
	{ "",
	  "{'type':'websocket','id':'ws','peer':'phone','client':'10.66.77.2:40003',"
	  "'server':'203.0.113.12:443','conn':'tcp-ws','url':'wss://chat.example.com/ws',"
	  "'messages':[{'dir':'up','opcode':'text','body':{'text':'hi there','size':8}}]}",
	  NULL, NULL, false },
	/* 7 */
	{ "",
	  "{'type':'tcp','id':'tcp-tls','peer':'phone','client':'10.66.77.2:40004',"
	  "'server':'93.184.216.34:443','proto':'tls','sni':'example.com','end_reason':'fin'}",
	  NULL, NULL, false },
	/* 8 */
	{ "",
	  "{'type':'tcp','id':'tcp-pass','peer':'laptop','client':'10.66.77.3:50002',"
	  "'server':'198.51.100.20:443','proto':'tls-passthrough','sni':'bank.example.org',"
	  "'passthrough':'rule:*.example.org','end_reason':'fin'}",
	  NULL, NULL, false },
	/* 9 */
	{ "",
	  "{'type':'tcp','id':'tcp-rej','peer':'tablet','client':'10.66.77.4:1235',"
	  "'server':'203.0.113.50:443','proto':'tls','sni':'pinned.app.test',"
	  "'end_reason':'tls:client_rejected',"
	  "'tls_error':'client rejected certificate: alert unknown CA received'}",
	  NULL, NULL, false },
	/* 10 */
	{ "",
	  "{'type':'tcp','id':'tcp-raw','peer':null,'client':'10.66.77.9:5555',"
	  "'server':'10.0.0.5:22','proto':'raw','end_reason':'fin'}",
	  NULL, NULL, false },
	/* 11 */
	{ "",
	  "{'type':'udp','id':'udp','peer':'laptop','client':'10.66.77.3:6000',"
	  "'server':'192.0.2.9:5353'}",
	  NULL, NULL, false },
	/* 12 */
	{ "",
	  "{'type':'dns','id':'dns-www','peer':'phone','client':'10.66.77.2:53001',"
	  "'server':'10.66.77.1:53','transport':'udp','name':'www.example.com.'}",
	  NULL, NULL, false },
	/* 13 */
	{ "",
	  "{'type':'dns','id':'dns-err','peer':'tablet','client':'10.66.77.4:53002',"
	  "'server':'10.66.77.1:53','transport':'tcp','name':'tracker.ads.test.',"
	  "'end_reason':'timeout','error':'no answer after 5000 ms'}",
	  NULL, NULL, false },
	/* 14: a method sent in lowercase */
	{ HTTP("h-lower", "'phone'", "10.66.77.2:40005", "198.51.100.8:80", "get",
	       "http://lower.test/Path"),
	  "'request':{'headers':[]},"
	  "'response':{'status':200,'headers':[['Content-Type','text/plain']]}}",
	  NULL, NULL, false },
	/* 15 */
	{ HTTP("h-deflate", "'phone'", "10.66.77.2:40006", "93.184.216.34:443", "GET",
	       "https://example.com/deflated"),
	  "'request':{'headers':[]},"
	  "'response':{'status':200,'headers':[['content-encoding','deflate'],"
	  "['content-type','text/plain']]}}",
	  "deflate", "deflated body text", false },
	/* 16 */
	{ HTTP("h-chain", "'laptop'", "10.66.77.3:50003", "203.0.113.10:443", "GET",
	       "https://api.example.com/chain"),
	  "'request':{'headers':[]},"
	  "'response':{'status':200,'headers':[['content-encoding','gzip, br']]}}",
	  "gzip, br", "double encoded payload", false },
	/* 17: a coding not decoded: searched as recorded */
	{ HTTP("h-compress", "'laptop'", "10.66.77.3:50004", "93.184.216.34:443", "GET",
	       "https://example.com/compress"),
	  "'request':{'headers':[]},"
	  "'response':{'status':200,'headers':[['content-encoding','compress']],"
	  "'body':{'text':'raw compress bytes','size':18}}}",
	  NULL, NULL, false },
	/* 18: not gzip at all: searched as recorded */
	{ HTTP("h-bad-gzip", "'phone'", "10.66.77.2:40007", "93.184.216.34:443", "GET",
	       "https://example.com/badgzip"),
	  "'request':{'headers':[]},"
	  "'response':{'status':200,'headers':[['content-encoding','gzip']],"
	  "'body':{'text':'not really gzip at all','size':22}}}",
	  NULL, NULL, false },
	/* 19: an empty body */
	{ HTTP("h-head", "'phone'", "10.66.77.2:40008", "192.0.2.80:443", "HEAD",
	       "https://xn--bcher-kva.example/"),
	  "'request':{'headers':[]},"
	  "'response':{'status':302,'headers':[['Location','https://example.com/'],"
	  "['X-Multi','a'],['x-multi','b'],['content-encoding','gzip']],"
	  "'body':{'text':'','size':0}}}",
	  NULL, NULL, false },
	/* 20 */
	{ "",
	  "{'type':'tcp','id':'tcp-v6','peer':'phone','client':'[fd00::2]:40009',"
	  "'server':'[2001:db8::1]:443','proto':'tls','end_reason':'upstream_refused',"
	  "'error':'connect: connection refused'}",
	  NULL, NULL, false },
	/* 21: KELVIN SIGN, which the trigram index folds to k and the regex does not */
	{ HTTP("h-kelvin", "'phone'", "10.66.77.2:40010", "192.0.2.81:443", "GET",
	       "https://unicode.example/\\u212Aelvin/caf\\u00e9"),
	  "'request':{'headers':[]},'response':{'status':200,'headers':[]}}", NULL, NULL, false },
	/* 22: through a listener, with a user */
	{ "",
	  "{'type':'tcp','id':'tcp-socks','peer':null,'client':'127.0.0.1:41000',"
	  "'server':'192.0.2.90:443','proto':'raw','end_reason':'fin','via':'socks5',"
	  "'user':'alice'}",
	  NULL, NULL, false },
	/* 23: a replay */
	{ HTTP("h-replay", "null", "127.0.0.1:0", "192.0.2.91:443", "DELETE",
	       "https://replay.test/item/7"),
	  "'request':{'headers':[]},'response':{'status':204,'headers':[]},'via':'replay',"
	  "'replay_of':'h-post-br'}",
	  NULL, NULL, false },
};
#define NREC (sizeof(RECORDS) / sizeof(RECORDS[0]))

static json_t *records[NREC];
static struct flow_fields fields[NREC];
static sqlite3 *db;

static void exec(const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
}

static int setup(void **ctx)
{
	(void)ctx;
	if (sodium_init() < 0)
		return -1;
	/* Letters that compress badly, so half the gzip stream decodes only
	 * the start of it. */
	strcpy(big_text, "server error begins here. ");
	uint32_t x = 7;
	for (size_t i = strlen(big_text); i < sizeof(big_text) - 1; i++) {
		x = x * 1103515245 + 12345;
		big_text[i] = (char)('a' + (x >> 16) % 26);
	}
	big_text[sizeof(big_text) - 1] = '\0';

	if (sqlite3_open(":memory:", &db) != SQLITE_OK || filter_sqlite_register(db) != SQLITE_OK)
		return -1;
	exec(FLOWS_SCHEMA_SQL);
	for (size_t i = 0; i < NREC; i++) {
		char *json = malloc(strlen(RECORDS[i].head) + strlen(RECORDS[i].rest) + 1);
		strcat(strcpy(json, RECORDS[i].head), RECORDS[i].rest);
		records[i] = load(json);
		free(json);
		if (RECORDS[i].coding) {
			struct flows_test_buf b = encode(RECORDS[i].coding, RECORDS[i].plain);
			if (RECORDS[i].cut)
				b.len /= 2;
			json_object_set_new(json_object_get(records[i], "response"), "body",
					    body_json(b, RECORDS[i].cut));
			free(b.p);
		}
		assert_int_equal(flow_fields_read(records[i], &fields[i]), 0);
		assert_int_equal(flows_test_insert(db, (int64_t)i + 1, records[i]), SQLITE_OK);
	}
	return 0;
}

static int teardown(void **ctx)
{
	(void)ctx;
	for (size_t i = 0; i < NREC; i++)
		json_decref(records[i]);
	sqlite3_close(db);
	return 0;
}

/* ---- both back ends ------------------------------------------------------ */

/* The records (bit i: RECORDS[i]) a query selects, with the filter's
 * parameters bound. */
static uint32_t run_query(const char *q, const struct filter_sql *s, const char *expr)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s: %s", expr, q, sqlite3_errmsg(db));
	assert_int_equal(filter_sql_bind(st, s), SQLITE_OK);
	uint32_t set = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		set |= 1u << (sqlite3_column_int(st, 0) - 1);
	if (rc != SQLITE_DONE)
		fail_msg("%s: %s", expr, sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return set;
}

#define DRIVEN_QUERY                                                                               \
	"SELECT flows.seq FROM flow_fts CROSS JOIN flows ON flows.seq = flow_fts.rowid WHERE "     \
	"flow_fts MATCH ?%zu AND (%s)"

/* The records the SQL form selects; the driven form, when there is one,
 * must select the same. */
static uint32_t sql_set(const struct filter *f, const char *expr)
{
	struct filter_sql s;
	assert_int_equal(filter_to_sql(f, &s), 0);
	char *q = malloc(strlen(s.where) + (s.driven ? strlen(s.driven) : 0) + 128);
	sprintf(q, "SELECT seq FROM flows WHERE %s", s.where);
	uint32_t set = run_query(q, &s, expr);
	if (s.driven) {
		sprintf(q, DRIVEN_QUERY, s.fts_param, s.driven);
		uint32_t driven = run_query(q, &s, expr);
		if (driven != set)
			fail_msg("%s: the driven form gives 0x%x, the WHERE form 0x%x", expr,
				 driven, set);
	}
	free(q);
	filter_sql_free(&s);
	return set;
}

static uint32_t match_set(const struct filter *f)
{
	uint32_t set = 0;
	for (size_t i = 0; i < NREC; i++)
		if (filter_match(f, &fields[i]))
			set |= 1u << i;
	return set;
}

static const char *show(uint32_t set, char *buf)
{
	char *o = buf;
	*o = '\0';
	for (size_t i = 0; i < NREC; i++)
		if (set & (1u << i))
			o += sprintf(o, "%s%zu", o == buf ? "" : ",", i);
	return buf;
}

#define END (-1)
#define ALL 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23
#define HTTP_ALL 0, 1, 2, 3, 4, 5, 14, 15, 16, 17, 18, 19, 21, 23

static const struct {
	const char *expr;
	int want[NREC + 1];
} CASES[] = {
	{ "~all", { ALL, END } },
	{ "!~all", { END } },
	{ "~http", { HTTP_ALL, END } },
	{ "~tcp", { 7, 8, 9, 10, 20, 22, END } },
	{ "~udp", { 11, END } },
	{ "~dns", { 12, 13, END } },
	{ "~websocket", { 5, 6, END } },
	{ "~c 404", { 2, END } },
	{ "~c 200", { 0, 14, 15, 16, 17, 18, 21, END } },
	{ "!~c 200", { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 19, 20, 22, 23, END } },
	{ "~c 101 | ~websocket", { 5, 6, END } },
	{ "~c 2xx", { 0, 1, 14, 15, 16, 17, 18, 21, 23, END } },
	{ "~c 5XX", { 4, END } },
	{ "~c 3xx | ~c 1xx", { 5, 19, END } },
	{ "~http !~c 2xx", { 2, 3, 4, 5, 19, END } },
	/* "." is any character: example.net and the IDN host are not. */
	{ "~d example.com", { 0, 1, 3, 5, 6, 7, 12, 15, 16, 17, 18, END } },
	{ "~d ^example\\.com$", { 0, 3, 7, 15, 17, 18, END } },
	{ "~d ^EXAMPLE\\.COM$", { 0, 3, 7, 15, 17, 18, END } },
	{ "~d xn--", { 19, END } },
	{ "~d 2001:db8", { 20, END } },
	{ "~d ^$", { END } },
	{ "~d ^chat\\.example\\.com$ !~websocket", { END } },
	/* Bare words search URLs. */
	{ "example.com", { 0, 1, 3, 5, 6, 15, 16, 17, 18, END } },
	{ "needle", { 3, END } },
	{ "~u \\?q=", { 3, END } },
	{ "~u ^https://api\\.", { 1, 16, END } },
	{ "~u /v1/users", { 1, END } },
	{ "~u 'https://example.com/index.html'", { 0, END } },
	/* The trigram index finds this one (KELVIN SIGN folds to k), the
	 * regex, case-insensitive for ASCII only, does not. */
	{ "kelvin", { END } },
	{ "elvin", { 21, END } },
	{ "'caf\xc3\xa9'", { 21, END } },
	{ "~m POST", { 1, END } },
	{ "~m ^get$", { 0, 2, 3, 5, 14, 15, 16, 17, 18, 21, END } },
	{ "~m ^(get|head)$", { 0, 2, 3, 5, 14, 15, 16, 17, 18, 19, 21, END } },
	{ "~m ^GET$ & !~peer phone", { 3, 16, 17, END } },
	{ "~peer ^phone$", { 0, 2, 5, 6, 7, 12, 14, 15, 18, 19, 20, 21, END } },
	{ "~peer ^PHONE$", { 0, 2, 5, 6, 7, 12, 14, 15, 18, 19, 20, 21, END } },
	{ "!~peer .", { 10, 22, 23, END } },
	{ "~via ^wireguard$",
	  { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, END } },
	{ "~via ^SOCKS5$", { 22, END } },
	{ "~via sock|repl", { 22, 23, END } },
	{ "~user ^alice$", { 22, END } },
	{ "!~user .", { 0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
			12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, END } },
	{ "~replay", { 23, END } },
	{ "~replay & ~c 2xx", { 23, END } },
	{ "~http !~replay ~c 204", { END } },
	{ "~e", { 3, 9, 13, 20, END } },
	{ "~q", { 3, END } },
	{ "~s", { 0, 1, 2, 4, 5, 14, 15, 16, 17, 18, 19, 21, 23, END } },
	{ "~tls-rejected", { 9, END } },
	{ "~passthrough", { 8, END } },
	{ "~dst :443$", { 0, 1, 4, 5, 6, 7, 8, 9, 15, 16, 17, 18, 19, 20, 21, 22, 23, END } },
	{ "~src ^10\\.66\\.77\\.3:", { 1, 4, 8, 11, 16, 17, END } },
	/* Bodies, decoded. */
	{ "~bs hello", { 0, END } },
	{ "~b secret-br", { 1, END } },
	{ "~bq alice", { 1, END } },
	{ "~bs alice", { END } },
	{ "~b \"not found \\(zstd\\)\"", { 2, END } },
	{ "~bs 'error begins'", { 4, END } },
	{ "~bq ^\\x89PNG", { 4, END } },
	{ "~b \"double encoded\"", { 16, END } },
	{ "~b deflated", { 15, END } },
	{ "~b 'raw compress'", { 17, END } },
	{ "~b 'really gzip'", { 18, END } },
	{ "~b .", { 0, 1, 2, 4, 15, 16, 17, 18, END } },
	{ "!~b .", { 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 19, 20, 21, 22, 23, END } },
	/* Headers, one line each. */
	{ "~h '^x-multi: b$'", { 19, END } },
	{ "~hq user-agent", { 0, END } },
	{ "~hs \"^server: nginx$\"", { 0, END } },
	{ "~hq '^server: nginx$'", { END } },
	{ "~h content-encoding:\\s*br", { 1, END } },
	{ "~h .", { 0, 1, 2, 3, 4, 5, 14, 15, 16, 17, 18, 19, END } },
	{ "!~h .", { 6, 7, 8, 9, 10, 11, 12, 13, 20, 21, 22, 23, END } },
	{ "~t json", { 1, END } },
	{ "~ts ^text/plain$", { 2, 4, 14, 15, END } },
	{ "~tq png", { 4, END } },
	/* Precedence, grouping, juxtaposition. */
	{ "~tcp | ~udp & ~peer laptop", { 7, 8, 9, 10, 11, 20, 22, END } },
	{ "(~tcp | ~udp) & ~peer laptop", { 8, 11, END } },
	{ "~http ~c 200 ~peer laptop", { 16, 17, END } },
	{ "!(~http | ~tcp)", { 6, 11, 12, 13, END } },
	{ "!!~dns", { 12, 13, END } },
	{ "!(~e | !~tcp)", { 7, 8, 10, 22, END } },
	{ "~q foo", { END } },
	{ "~q search", { 3, END } },
	/* Several tests the trigram index narrows, joined by &. */
	{ "~u /v1/ ~d api ~m ^post$", { 1, END } },
	{ "example.com ~d 'example\\.com$' ~c 200", { 0, 15, 16, 17, 18, END } },
	{ "~u html ~d xyz", { END } },
};

static void test_back_ends(void **ctx)
{
	(void)ctx;
	char a[128], b[128];
	for (size_t c = 0; c < sizeof(CASES) / sizeof(CASES[0]); c++) {
		struct filter_error err;
		struct filter *f = filter_parse(CASES[c].expr, &err);
		if (!f)
			fail_msg("%s: %s", CASES[c].expr, err.message);
		uint32_t want = 0;
		for (const int *i = CASES[c].want; *i != END; i++)
			want |= 1u << *i;
		uint32_t m = match_set(f), s = sql_set(f, CASES[c].expr);
		if (m != want)
			fail_msg("%s: matcher gives {%s}, expected {%s}", CASES[c].expr, show(m, a),
				 show(want, b));
		if (s != want)
			fail_msg("%s: SQL gives {%s}, expected {%s}", CASES[c].expr, show(s, a),
				 show(want, b));
		filter_free(f);
	}
}

/* The plan of a store-like page query. */
static char *plan(const char *expr)
{
	struct filter_error err;
	struct filter *f = filter_parse(expr, &err);
	assert_non_null(f);
	struct filter_sql s;
	assert_int_equal(filter_to_sql(f, &s), 0);
	char *q = malloc(strlen(s.where) + 128);
	sprintf(q,
		"EXPLAIN QUERY PLAN SELECT seq FROM flows WHERE %s ORDER BY flows.seq DESC "
		"LIMIT 100",
		s.where);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	char *out = calloc(1, 4096);
	while (sqlite3_step(st) == SQLITE_ROW) {
		strncat(out, (const char *)sqlite3_column_text(st, 3), 4000 - strlen(out));
		strcat(out, "\n");
	}
	sqlite3_finalize(st);
	free(q);
	filter_sql_free(&s);
	filter_free(f);
	return out;
}

static void expect_plan(const char *expr, const char *uses)
{
	char *p = plan(expr);
	if (!strstr(p, uses) || strstr(p, "SCAN flows"))
		fail_msg("%s: expected a plan using %s without scanning flows, got:\n%s", expr,
			 uses, p);
	free(p);
}

/* The plan of the driven form's page query. */
static char *driven_plan(const char *expr)
{
	struct filter *f = filter_parse(expr, NULL);
	assert_non_null(f);
	struct filter_sql s;
	assert_int_equal(filter_to_sql(f, &s), 0);
	assert_non_null(s.driven);
	char *q = malloc(strlen(s.driven) + 256);
	sprintf(q,
		"EXPLAIN QUERY PLAN " DRIVEN_QUERY
		" AND flow_fts.rowid < ?%zu ORDER BY flow_fts.rowid DESC LIMIT 100",
		s.fts_param, s.driven, s.nparams + 1);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	char *out = calloc(1, 4096);
	while (sqlite3_step(st) == SQLITE_ROW) {
		strncat(out, (const char *)sqlite3_column_text(st, 3), 4000 - strlen(out));
		strcat(out, "\n");
	}
	sqlite3_finalize(st);
	free(q);
	filter_sql_free(&s);
	filter_free(f);
	return out;
}

static void test_indexes(void **ctx)
{
	(void)ctx;
	expect_plan("~c 404", "INDEX flows_status (status=?)");
	expect_plan("~c 4xx", "INDEX flows_status (status>? AND status<?)");
	expect_plan("~tcp", "INDEX flows_type (type=?)");
	expect_plan("~d ^example\\.com$", "INDEX flows_host (host=?)");
	expect_plan("~m ^get$", "INDEX flows_method (method=?)");
	expect_plan("~peer ^phone$", "INDEX flows_peer (peer=?)");
	expect_plan("~d example.com", "VIRTUAL TABLE INDEX");
	expect_plan("needle", "VIRTUAL TABLE INDEX");
	expect_plan("~u /v1/users ~c 200", "VIRTUAL TABLE INDEX");
	/* A regex without a literal of three characters scans. */
	char *p = plan("~u a.b");
	assert_non_null(strstr(p, "SCAN flows"));
	free(p);

	/* The driven form walks flow_fts newest first (no sort), each flow
	 * found by its rowid. */
	const char *driven[] = { "needle", "~d example.com ~c 200", "~u /v1/ ~d api ~m ^post$" };
	for (size_t i = 0; i < sizeof(driven) / sizeof(*driven); i++) {
		p = driven_plan(driven[i]);
		if (strncmp(p, "SCAN flow_fts VIRTUAL TABLE INDEX", 33) != 0 ||
		    !strstr(p, "SEARCH flows USING INTEGER PRIMARY KEY (rowid=?)") ||
		    strstr(p, "TEMP B-TREE") || strstr(p, "SCAN flows"))
			fail_msg("%s: driven plan:\n%s", driven[i], p);
		free(p);
	}
}

/* ---- parsing ------------------------------------------------------------- */

static void parses(const char *expr)
{
	struct filter_error err;
	struct filter *f = filter_parse(expr, &err);
	if (!f)
		fail_msg("%s: %s", expr, err.message);
	filter_free(f);
}

static void refused(const char *expr, unsigned column, const char *message)
{
	struct filter_error err;
	struct filter *f = filter_parse(expr, &err);
	if (f)
		fail_msg("%s: parsed, expected \"%s\"", expr, message);
	if (err.column != column || strcmp(err.message, message) != 0)
		fail_msg("%s: got %u \"%s\", expected %u \"%s\"", expr, err.column, err.message,
			 column, message);
}

/* Whether `expr` selects the same records as `same` in both back ends. */
static void equivalent(const char *expr, const char *same)
{
	struct filter *a = filter_parse(expr, NULL), *b = filter_parse(same, NULL);
	assert_non_null(a);
	assert_non_null(b);
	char x[128], y[128];
	uint32_t ma = match_set(a), mb = match_set(b);
	if (ma != mb || sql_set(a, expr) != sql_set(b, same))
		fail_msg("%s gives {%s}, %s gives {%s}", expr, show(ma, x), same, show(mb, y));
	filter_free(a);
	filter_free(b);
}

static void test_operators(void **ctx)
{
	(void)ctx;
	const char *no_arg[] = { "all", "dns", "e",         "http",         "q",          "s",
				 "tcp", "udp", "websocket", "tls-rejected", "passthrough" };
	const char *regex_arg[] = { "b",  "bq", "bs", "d",  "dst", "src", "h",   "hq",
				    "hs", "m",  "t",  "tq", "ts",  "u",   "peer" };
	char buf[64];
	for (size_t i = 0; i < sizeof(no_arg) / sizeof(*no_arg); i++) {
		snprintf(buf, sizeof(buf), "~%s", no_arg[i]);
		parses(buf);
		/* Not eating the next word: it is a URL search of its own. */
		snprintf(buf, sizeof(buf), "~%s search", no_arg[i]);
		char same[64];
		snprintf(same, sizeof(same), "~%s & ~u search", no_arg[i]);
		equivalent(buf, same);
	}
	for (size_t i = 0; i < sizeof(regex_arg) / sizeof(*regex_arg); i++) {
		snprintf(buf, sizeof(buf), "~%s x", regex_arg[i]);
		parses(buf);
		snprintf(buf, sizeof(buf), "~%s", regex_arg[i]);
		char msg[96];
		snprintf(msg, sizeof(msg), "column %zu: ~%s needs a regex, got the end",
			 strlen(buf) + 1, regex_arg[i]);
		refused(buf, (unsigned)strlen(buf) + 1, msg);
	}
	parses("~c 200");
	parses("~c '404'");
	parses("~c 999");
}

static void test_syntax(void **ctx)
{
	(void)ctx;
	/* Precedence: ! over &, & over |. */
	equivalent("~tcp | ~udp & ~peer laptop", "~tcp | (~udp & ~peer laptop)");
	equivalent("!~tcp & ~peer phone", "(!~tcp) & ~peer phone");
	equivalent("~http ~c 200", "~http & ~c 200");
	equivalent("~tcp ~peer phone | ~dns", "(~tcp & ~peer phone) | ~dns");
	equivalent("!(~tcp | ~dns)", "!~tcp & !~dns");
	equivalent("((((~tcp))))", "~tcp");
	equivalent("~tcp|~udp", "~tcp | ~udp");
	equivalent("(~tcp)(~udp)", "~tcp & ~udp");
	/* Quoting: the quote and backslash escaped, other escapes kept for
	 * the regex. */
	equivalent("\"not found \\(zstd\\)\"", "~u 'not found \\(zstd\\)'");
	equivalent("~b \"error begins\"", "~b 'error\\ begins'");
	equivalent("~b 'double\\\\ encoded'", "~b \"double encoded\"");
	equivalent("~u \"q=Need\\\"le\"", "~u 'q=Need\"le'");
	equivalent("~d\"example\"", "~d example");
	/* A bare word runs to whitespace or a ")" it did not open. */
	equivalent("(~u (search|cart))", "~u 'search|cart'");
	equivalent("~u search|cart", "~u '(search|cart)'");
	equivalent("~u a\\)", "~u 'a\\)'");
	parses("~u foo&bar");
	parses("'' ");
	parses("~u \"\"");
	parses("~tcp\n|\t~udp");
	/* 64 nested parentheses and ! are the most. */
	char deep[4 * FILTER_MAX_NESTING + 16] = "";
	for (int i = 0; i < FILTER_MAX_NESTING; i++)
		strcat(deep, i % 2 ? "(" : "!");
	strcat(deep, "~tcp");
	for (int i = 0; i < FILTER_MAX_NESTING / 2; i++)
		strcat(deep, ")");
	parses(deep);
	/* & inside | ... FILTER_MAX_DEPTH deep are the most (the innermost
	 * group is one test, not a list). */
	char levels[512] = "";
	for (int i = 0; i < FILTER_MAX_DEPTH; i++)
		strcat(levels, i % 2 ? "~tcp | (" : "~udp & (");
	strcat(levels, "~dns");
	for (int i = 0; i < FILTER_MAX_DEPTH; i++)
		strcat(levels, ")");
	parses(levels);
}

static void test_errors(void **ctx)
{
	(void)ctx;
	refused("", 1, "column 1: empty expression");
	refused("   ", 4, "column 4: empty expression");
	refused("~c abc", 4,
		"column 4: ~c needs a status code from 100 to 999 or a class such as 4xx, got "
		"\"abc\"");
	refused("~c 99", 4,
		"column 4: ~c needs a status code from 100 to 999 or a class such as 4xx, got "
		"\"99\"");
	refused("~c 1000", 4,
		"column 4: ~c needs a status code from 100 to 999 or a class such as 4xx, got "
		"\"1000\"");
	refused("~c 0xx", 4,
		"column 4: ~c needs a status code from 100 to 999 or a class such as 4xx, got "
		"\"0xx\"");
	refused("~c", 3, "column 3: ~c needs a status code, got the end");
	refused("(~c)", 4, "column 4: ~c needs a status code, got \")\"");
	refused("~x", 1, "column 1: unknown operator \"~x\" (docs/filters.md lists them)");
	refused("~tcp ~Tcp", 6, "column 6: unknown operator \"~Tcp\" (docs/filters.md lists them)");
	refused("~", 1, "column 1: \"~\" must be followed by an operator name, such as ~u or ~d");
	refused("(~u a", 1, "column 1: \"(\" is never closed");
	refused("~tcp | (~udp & (~dns)", 8, "column 8: \"(\" is never closed");
	refused("~u a)", 5, "column 5: \")\" without a matching \"(\"");
	refused("~tcp )", 6, "column 6: \")\" without a matching \"(\"");
	refused("()", 2, "column 2: empty parentheses");
	refused("~u (a", 6, "column 6: bad regex for ~u: missing closing parenthesis");
	refused("~h [z-a]", 7, "column 7: bad regex for ~h: range out of order in character class");
	refused("a**", 3,
		"column 3: bad regex (a word without an operator searches URLs, as ~u): quantifier "
		"does not follow a repeatable item");
	refused("\"abc", 1, "column 1: the string starting here is never closed (a \" is missing)");
	refused("~d 'abc\\'", 4,
		"column 4: the string starting here is never closed (a ' is missing)");
	refused("~d ~c", 4,
		"column 4: ~d needs a regex, got \"~c\" (quote it to search for that text)");
	refused("~d & ~c 200", 4,
		"column 4: ~d needs a regex, got \"&\" (quote it to search for that text)");
	refused("a &", 4, "column 4: \"&\" needs an expression after it, got the end");
	refused("& a", 1, "column 1: expected an expression, got \"&\"");
	refused("a | | b", 5, "column 5: \"|\" needs an expression after it, got \"|\"");
	refused("~tcp !", 7, "column 7: \"!\" needs an expression after it, got the end");
	refused("~tcp | )", 8, "column 8: \"|\" needs an expression after it, got \")\"");
	/* Columns count characters, not bytes. */
	refused("'\xc3\xa9' ~x", 5,
		"column 5: unknown operator \"~x\" (docs/filters.md lists them)");

	/* Bounds. */
	char *big = malloc(FILTER_MAX_LEN + 2);
	memset(big, 'a', FILTER_MAX_LEN + 1);
	big[FILTER_MAX_LEN + 1] = '\0';
	refused(big, FILTER_MAX_LEN + 1, "column 4097: the expression is longer than 4096 bytes");
	big[FILTER_MAX_LEN] = '\0';
	parses(big);
	free(big);
	char deep[2 * FILTER_MAX_NESTING + 16] = "";
	for (int i = 0; i <= FILTER_MAX_NESTING; i++)
		strcat(deep, "(");
	refused(deep, FILTER_MAX_NESTING + 1,
		"column 65: more than 64 nested parentheses and \"!\"");
	memset(deep, '!', FILTER_MAX_NESTING + 1);
	refused(deep, FILTER_MAX_NESTING + 1,
		"column 65: more than 64 nested parentheses and \"!\"");
	char levels[512] = "";
	for (int i = 0; i <= FILTER_MAX_DEPTH; i++)
		strcat(levels, i % 2 ? "~tcp | (" : "~udp & (");
	strcat(levels, "~dns");
	for (int i = 0; i <= FILTER_MAX_DEPTH; i++)
		strcat(levels, ")");
	/* The list at level 17: the group opened by the 16th "(". */
	refused(levels, 8 * FILTER_MAX_DEPTH,
		"column 128: & and | nest more than 16 levels deep here");

	struct filter_error err;
	assert_null(filter_parse(NULL, &err));
	assert_string_equal(err.message, "column 1: empty expression");
	assert_null(filter_parse("~x", NULL));
}

/* The SQL is the documented shape: qualified columns, numbered parameters. */
static void test_sql_shape(void **ctx)
{
	(void)ctx;
	struct filter *f = filter_parse("~c 404 ~d ^Example\\.com$", NULL);
	assert_non_null(f);
	struct filter_sql s;
	assert_int_equal(filter_to_sql(f, &s), 0);
	assert_string_equal(s.where, "(flows.status = ?1 AND flows.host = ?2)");
	assert_int_equal(s.nparams, 2);
	assert_int_equal(s.params[0].type, FLOWS_PARAM_INT);
	assert_int_equal(s.params[0].i, 404);
	assert_int_equal(s.params[1].type, FLOWS_PARAM_TEXT);
	assert_string_equal(s.params[1].text, "example.com");
	/* The host equality answers better than the trigram index. */
	assert_int_equal(s.fts_param, 0);
	assert_null(s.driven);
	filter_sql_free(&s);
	filter_free(f);

	f = filter_parse("~u abc ~c 200", NULL);
	assert_int_equal(filter_to_sql(f, &s), 0);
	/* The rows the index has not taken yet are tested directly. */
	assert_string_equal(s.where, "(flows.status = ?1 AND (flows.seq IN (SELECT rowid FROM "
				     "flow_fts WHERE flow_fts MATCH ?2 UNION ALL SELECT seq FROM "
				     "flows WHERE seq > " FLOWS_FTS_SEQ_SQL ") AND "
				     "wgmitm_regexp(?3, flows.url)))");
	assert_int_equal(s.fts_param, 2);
	assert_string_equal(s.driven, "(flows.status = ?1 AND wgmitm_regexp(?3, flows.url))");
	assert_string_equal(s.params[1].text, "url : \"abc\"");
	filter_sql_free(&s);
	filter_free(f);

	/* Several driving tests: one MATCH for all, a parameter of its own. */
	f = filter_parse("~u abc ~d 'de\"f'", NULL);
	assert_int_equal(filter_to_sql(f, &s), 0);
	assert_int_equal(s.nparams, 5);
	assert_int_equal(s.fts_param, 5);
	assert_string_equal(s.params[4].text, "(url : \"abc\") AND (host : \"de\"\"f\")");
	assert_string_equal(s.driven, "(wgmitm_regexp(?2, flows.url) AND wgmitm_regexp(?4, "
				      "flows.host))");
	filter_sql_free(&s);
	filter_free(f);

	/* None under | or !. */
	const char *undriven[] = { "~u abc | ~c 200", "!~u abcd", "~u a.b", "~b abcd" };
	for (size_t i = 0; i < sizeof(undriven) / sizeof(*undriven); i++) {
		f = filter_parse(undriven[i], NULL);
		assert_int_equal(filter_to_sql(f, &s), 0);
		assert_null(s.driven);
		filter_sql_free(&s);
		filter_free(f);
	}

	/* The query's own parameters come after the filter's. */
	f = filter_parse("~peer ^phone$ | ~tcp", NULL);
	assert_int_equal(filter_to_sql(f, &s), 0);
	char q[512];
	snprintf(q, sizeof(q), "SELECT count(*) FROM flows WHERE (%s) AND flows.seq < ?%zu",
		 s.where, s.nparams + 1);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(filter_sql_bind(st, &s), SQLITE_OK);
	sqlite3_bind_int(st, (int)s.nparams + 1, 9);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	/* Records 0..7: phone's 0, 2, 5, 6, 7 and tcp 7. */
	assert_int_equal(sqlite3_column_int(st, 0), 5);
	sqlite3_finalize(st);
	filter_sql_free(&s);
	filter_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_back_ends), cmocka_unit_test(test_indexes),
		cmocka_unit_test(test_operators), cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_errors),    cmocka_unit_test(test_sql_shape),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
