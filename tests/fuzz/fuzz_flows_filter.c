/* libFuzzer target for the filter language (flows/filter.h). The input is
 * an expression (up to its first NUL).
 *
 * Invariants beyond "no crash / no sanitizer report": a refused expression
 * has a column within the text (1 to its length + 1, in characters) and a
 * message starting "column N: "; one that parses compiles to SQL that
 * SQLite prepares and runs over an in-memory store holding the records
 * below (filled as the store will, tests/unit/flows_testutil.h), and that
 * selects exactly the records the matcher matches, in both its forms (the
 * WHERE clause, and the one driven by the trigram index when there is one). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flows/filter.h"
#include "flows/schema.h"
#include "tests/unit/flows_testutil.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define H(id, peer, server, method, url)                                                           \
	"{'type':'http','id':'" id "','peer':" peer                                                \
	",'client':'10.66.77.2:4000','server':'" server                                            \
	"','start':'2024-05-01T12:00:00Z','end':'2024-05-01T12:00:01Z','method':'" method          \
	"','url':'" url "',"

/* JSON with ' for ", head then rest; bodies coded with gzip, br and zstd
 * beforehand. */
static const char *const RECORDS[][2] = {
	{ H("h1", "'phone'", "93.184.216.34:443", "GET", "https://example.com/index.html?q=1"),
	  "'request':{'headers':[['user-agent','curl/8.0'],['accept','*/*']]},"
	  "'response':{'status':200,'headers':[['content-type','text/html'],"
	  "['content-encoding','gzip']],'body':{'base64':"
	  "'H4sIAAAAAAACA7PJKMnNsbMpySzJSbXzSM3JyVdIr8osUCjPL8pJsdGHiNvog1UBADGIfhgsAAAA',"
	  "'size':44}}}" },
	{ H("h2", "'laptop'", "203.0.113.10:443", "POST", "https://api.example.com/v1/users"),
	  "'request':{'headers':[['Content-Type','application/json']],"
	  "'body':{'text':'{\\'name\\':\\'alice\\'}','size':16}},"
	  "'response':{'status':201,'headers':[['content-encoding','br'],['x-multi','a'],"
	  "['X-Multi','b']],'body':{'base64':'Cw6AeyJpZCI6NDIsInRva2VuIjoic2VjcmV0LWJyIn0D',"
	  "'size':33}}}" },
	{ H("h3", "'phone'", "198.51.100.7:80", "get", "http://shop.test/cart"),
	  "'request':{'headers':[]},'response':{'status':404,'headers':[['content-type',"
	  "'text/plain'],['content-encoding','zstd']],'body':{'base64':"
	  "'KLUv/SAVqQAAY2FydCBub3QgZm91bmQgKHpzdGQp','size':30}}}" },
	{ H("h4", "null", "93.184.216.34:8443", "GET", "https://Example.com:8443/search?q=Needle"),
	  "'request':{'headers':[['host','Example.com']]},'response':null,"
	  "'error':'upstream closed'}" },
	{ H("h5", "'tablet'", "203.0.113.11:443", "PUT",
	    "https://cdn.example.net/\\u212Aelvin/caf\\u00e9"),
	  "'request':{'headers':[],'body':{'base64':'iVBORw0KGgo=','size':8}},"
	  "'response':{'status':500,'headers':[['content-encoding','gzip']],'body':{'base64':"
	  "'H4sIAAAAAAACA7PJKMnNsbMpySzJSbXzSM3JyQ==','size':44,'truncated':true}}}" },
	{ H("h6", "'phone'", "203.0.113.12:443", "GET", "https://chat.example.com/ws"),
	  "'request':{'headers':[['upgrade','websocket']]},'response':{'status':101,"
	  "'headers':[['content-encoding','compress']],'body':{'text':'not coded','size':9}},"
	  "'websocket':true}" },
	{ "", "{'type':'websocket','id':'w1','peer':'phone','url':'wss://chat.example.com/ws',"
	      "'messages':[]}" },
	{ "", "{'type':'tcp','id':'t1','peer':'phone','client':'10.66.77.2:4001',"
	      "'server':'93.184.216.34:443','proto':'tls','sni':'example.com'}" },
	{ "", "{'type':'tcp','id':'t2','peer':'laptop','server':'198.51.100.20:443',"
	      "'proto':'tls-passthrough','sni':'bank.example.org','passthrough':'auto'}" },
	{ "", "{'type':'tcp','id':'t3','peer':'tablet','server':'[2001:db8::1]:443','proto':'tls',"
	      "'end_reason':'tls:client_rejected','tls_error':'client rejected certificate'}" },
	{ "", "{'type':'udp','id':'u1','peer':'laptop','client':'10.66.77.3:6000',"
	      "'server':'192.0.2.9:5353'}" },
	{ "",
	  "{'type':'dns','id':'d1','peer':'phone','transport':'udp','name':'www.example.com.'}" },
};
#define NREC (sizeof(RECORDS) / sizeof(RECORDS[0]))

static sqlite3 *db;
static json_t *records[NREC];
static struct flow_fields fields[NREC];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (sqlite3_open(":memory:", &db) != SQLITE_OK || filter_sqlite_register(db) != SQLITE_OK ||
	    sqlite3_exec(db, FLOWS_SCHEMA_SQL, NULL, NULL, NULL) != SQLITE_OK)
		abort();
	for (size_t i = 0; i < NREC; i++) {
		char *s = malloc(strlen(RECORDS[i][0]) + strlen(RECORDS[i][1]) + 1);
		if (!s)
			abort();
		strcat(strcpy(s, RECORDS[i][0]), RECORDS[i][1]);
		for (char *p = s; *p; p++)
			if (*p == '\'')
				*p = '"';
		json_error_t err;
		records[i] = json_loads(s, 0, &err);
		free(s);
		if (!records[i]) {
			fprintf(stderr, "record %zu: %s\n", i, err.text);
			abort();
		}
		if (flow_fields_read(records[i], &fields[i]) != 0 ||
		    flows_test_insert(db, (int64_t)i + 1, records[i]) != SQLITE_OK)
			abort();
	}
	return 0;
}

static unsigned characters(const char *s)
{
	unsigned n = 0;
	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

static uint32_t run_query(const char *text, const char *q, const struct filter_sql *s)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "%s\nSQL does not prepare: %s\n%s\n", text, sqlite3_errmsg(db), q);
		abort();
	}
	if (filter_sql_bind(st, s) != SQLITE_OK)
		abort();
	uint32_t set = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		set |= 1u << (sqlite3_column_int(st, 0) - 1);
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "%s\nSQL fails: %s\n%s\n", text, sqlite3_errmsg(db), q);
		abort();
	}
	sqlite3_finalize(st);
	return set;
}

/* The records the WHERE form selects; the driven form must agree. */
static uint32_t sql_set(const char *text, const struct filter_sql *s)
{
	char *q = malloc(strlen(s->where) + (s->driven ? strlen(s->driven) : 0) + 128);
	if (!q)
		abort();
	sprintf(q, "SELECT seq FROM flows WHERE %s", s->where);
	uint32_t set = run_query(text, q, s);
	if (s->driven) {
		sprintf(q,
			"SELECT flows.seq FROM flow_fts CROSS JOIN flows ON flows.seq = "
			"flow_fts.rowid WHERE flow_fts MATCH ?%zu AND (%s)",
			s->fts_param, s->driven);
		uint32_t driven = run_query(text, q, s);
		if (driven != set) {
			fprintf(stderr, "%s\nWHERE form 0x%x, driven form 0x%x\n%s\n", text, set,
				driven, q);
			abort();
		}
	}
	free(q);
	return set;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FILTER_MAX_LEN + 64)
		return 0;
	char *text = malloc(size + 1);
	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';

	struct filter_error err;
	struct filter *f = filter_parse(text, &err);
	if (!f) {
		char prefix[32];
		int n = snprintf(prefix, sizeof(prefix), "column %u: ", err.column);
		if (err.column < 1 || err.column > characters(text) + 1 ||
		    strncmp(err.message, prefix, (size_t)n) != 0 || !err.message[n]) {
			fprintf(stderr, "%s\nbad error: %u \"%s\"\n", text, err.column,
				err.message);
			abort();
		}
		free(text);
		return 0;
	}
	uint32_t m = 0;
	for (size_t i = 0; i < NREC; i++)
		if (filter_match(f, &fields[i]))
			m |= 1u << i;
	struct filter_sql s;
	if (filter_to_sql(f, &s) != 0)
		abort();
	uint32_t q = sql_set(text, &s);
	if (m != q) {
		fprintf(stderr, "%s\nmatcher 0x%x, SQL 0x%x\n%s\n", text, m, q, s.where);
		abort();
	}
	filter_sql_free(&s);
	filter_free(f);
	free(text);
	return 0;
}
