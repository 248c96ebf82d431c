/* For the flows tests: bodies compressed with each library's encoder (the
 * decode and filter tests; the library itself only decodes), and the flow
 * store's tables filled from records the way schema.h and filter.h say the
 * store fills them, for the filter's unit test and fuzz target (the store
 * itself is not needed to check the SQL back end). */
#ifndef WGMITM_TESTS_FLOWS_TESTUTIL_H
#define WGMITM_TESTS_FLOWS_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <brotli/encode.h>
#include <jansson.h>
#include <sqlite3.h>
#include <zlib.h>
#include <zstd.h>

#include "flows/fields.h"

/* ---- compressed bodies ---------------------------------------------------- */

/* Bytes a test made (malloc'd: free p). */
struct flows_test_buf {
	uint8_t *p;
	size_t len;
};

/* An encoder that fails is the test's own fault: it stops there. */
static inline void flows_test_require(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "flows_testutil: %s failed\n", what);
		abort();
	}
}

/* `in` deflated by zlib; wbits 15 + 16: gzip, 15: zlib, -15: raw deflate. */
static inline struct flows_test_buf flows_test_zlib(const void *in, size_t len, int wbits)
{
	z_stream zs = { 0 };
	flows_test_require(deflateInit2(&zs, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) == Z_OK,
			   "deflateInit2");
	size_t cap = deflateBound(&zs, len) + 32;
	struct flows_test_buf b = { malloc(cap), 0 };
	flows_test_require(b.p != NULL, "malloc");
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = b.p;
	zs.avail_out = (uInt)cap;
	flows_test_require(deflate(&zs, Z_FINISH) == Z_STREAM_END, "deflate");
	b.len = zs.total_out;
	deflateEnd(&zs);
	return b;
}

static inline struct flows_test_buf flows_test_brotli(const void *in, size_t len)
{
	size_t n = BrotliEncoderMaxCompressedSize(len) + 16;
	struct flows_test_buf b = { malloc(n), n };
	flows_test_require(b.p != NULL, "malloc");
	flows_test_require(BrotliEncoderCompress(5, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, len,
						 in, &b.len, b.p),
			   "BrotliEncoderCompress");
	return b;
}

static inline struct flows_test_buf flows_test_zstd(const void *in, size_t len)
{
	size_t n = ZSTD_compressBound(len);
	struct flows_test_buf b = { malloc(n), 0 };
	flows_test_require(b.p != NULL, "malloc");
	b.len = ZSTD_compress(b.p, n, in, len, 3);
	flows_test_require(!ZSTD_isError(b.len), "ZSTD_compress");
	return b;
}

/* ---- the store's tables --------------------------------------------------- */

static inline int flows_test_bind_str(sqlite3_stmt *st, int i, const char *s)
{
	return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

static inline int flows_test_bind_headers(sqlite3_stmt *st, int i, const json_t *headers)
{
	char *text;
	size_t len;
	if (flow_headers_text(headers, &text, &len) != 0)
		return SQLITE_NOMEM;
	int rc = text ? sqlite3_bind_text(st, i, text, (int)len, SQLITE_TRANSIENT)
		      : sqlite3_bind_null(st, i);
	free(text);
	return rc;
}

static inline int flows_test_step(sqlite3_stmt *st, int rc)
{
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
	sqlite3_finalize(st);
	return rc;
}

/* One record into flows, bodies and flow_fts with this seq. An SQLite
 * result code. */
static inline int flows_test_insert(sqlite3 *db, int64_t seq, const json_t *rec)
{
	struct flow_fields f;
	if (flow_fields_read(rec, &f) != 0)
		return SQLITE_MISUSE;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(
		db,
		"INSERT INTO flows (seq, id, type, start_us, end_us, duration_us, peer, client, "
		"server,"
		" conn, host, method, url, status, req_ctype, resp_ctype, req_headers, "
		"resp_headers,"
		" bytes_up, bytes_down, proto, passthrough, tls_rejected, websocket, has_response,"
		" end_reason, error, record, via, user, replay_of) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
		" ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23,"
		" ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)",
		-1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	/* Any failure leaves a non-zero bit. */
	int bad = 0;
	bad |= sqlite3_bind_int64(st, 1, seq);
	bad |= flows_test_bind_str(st, 2, f.id);
	bad |= flows_test_bind_str(st, 3, f.type);
	bad |= sqlite3_bind_int64(st, 4, f.start_us);
	bad |= sqlite3_bind_int64(st, 5, f.end_us);
	bad |= sqlite3_bind_int64(st, 6, f.end_us - f.start_us);
	bad |= flows_test_bind_str(st, 7, f.peer);
	bad |= flows_test_bind_str(st, 8, f.client);
	bad |= flows_test_bind_str(st, 9, f.server);
	bad |= flows_test_bind_str(st, 10, f.conn);
	bad |= flows_test_bind_str(st, 11, f.host);
	bad |= flows_test_bind_str(st, 12, f.method);
	bad |= flows_test_bind_str(st, 13, f.url);
	bad |= sqlite3_bind_int(st, 14, f.status);
	bad |= flows_test_bind_str(st, 15, f.req_ctype);
	bad |= flows_test_bind_str(st, 16, f.resp_ctype);
	bad |= flows_test_bind_headers(st, 17, f.req_headers);
	bad |= flows_test_bind_headers(st, 18, f.resp_headers);
	bad |= sqlite3_bind_int64(st, 19, f.bytes_up);
	bad |= sqlite3_bind_int64(st, 20, f.bytes_down);
	bad |= flows_test_bind_str(st, 21, f.proto);
	bad |= sqlite3_bind_int(st, 22, f.passthrough);
	bad |= sqlite3_bind_int(st, 23, f.tls_rejected);
	bad |= sqlite3_bind_int(st, 24, f.websocket);
	bad |= sqlite3_bind_int(st, 25, f.has_response);
	bad |= flows_test_bind_str(st, 26, f.end_reason);
	bad |= flows_test_bind_str(st, 27, f.error);
	/* The store moves body contents out of `record`; filters never read it. */
	char *text = json_dumps(rec, JSON_COMPACT);
	bad |= flows_test_bind_str(st, 28, text);
	free(text);
	bad |= flows_test_bind_str(st, 29, f.via);
	bad |= flows_test_bind_str(st, 30, f.user);
	bad |= flows_test_bind_str(st, 31, f.replay_of);
	rc = bad ? SQLITE_ERROR : SQLITE_OK;
	if ((rc = flows_test_step(st, rc)) != SQLITE_OK)
		return rc;

	const json_t *bodies[2] = { f.req_body, f.resp_body };
	const json_t *headers[2] = { f.req_headers, f.resp_headers };
	for (int part = 0; part < 2; part++) {
		size_t len;
		uint8_t *owned;
		const uint8_t *data = flow_body_bytes(bodies[part], &len, &owned);
		if (!data)
			continue;
		rc = sqlite3_prepare_v2(db,
					"INSERT INTO bodies (seq, part, encoding, data)"
					" VALUES (?, ?, ?, ?)",
					-1, &st, NULL);
		if (rc == SQLITE_OK) {
			sqlite3_bind_int64(st, 1, seq);
			sqlite3_bind_int(st, 2, part);
			flows_test_bind_str(st, 3, flow_header(headers[part], "content-encoding"));
			/* Non-NULL even when empty: an empty blob, not NULL. */
			sqlite3_bind_blob(st, 4, data, (int)len, SQLITE_TRANSIENT);
			rc = flows_test_step(st, SQLITE_OK);
		}
		free(owned);
		if (rc != SQLITE_OK)
			return rc;
	}

	rc = sqlite3_prepare_v2(db, "INSERT INTO flow_fts (rowid, url, host) VALUES (?, ?, ?)", -1,
				&st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, seq);
	flows_test_bind_str(st, 2, f.url);
	flows_test_bind_str(st, 3, f.host);
	return flows_test_step(st, SQLITE_OK);
}

#endif
