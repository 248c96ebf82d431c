/* The flow store's tables (SQLite), shared by the store, which fills them
 * from struct flow_fields, and the filter language, which compiles to SQL
 * over them. One row per record of the flows file.
 *
 * flows: the columns lists and filters need, indexed; `seq` is the order in
 * which records reached the log, the keyset cursor (newest first: seq
 * DESC). `record` is the record as logged, with each body's content moved
 * to `bodies` (its size and truncated flag stay). Text columns hold NULL
 * where struct flow_fields has NULL; `host` is '' when none.
 * req_headers / resp_headers: every header as "name: value\n", in wire
 * order, for the header filters.
 *
 * bodies: part 0 is the request body, 1 the response body, as recorded
 * (still content-encoded); `encoding` is the Content-Encoding it was sent
 * with (NULL: none). A rowid table: in a WITHOUT ROWID one a body over
 * about 1 KB spills to an overflow page of its own, so a 1.5 KB body took
 * 4.6 KB instead of 2.
 *
 * flow_fts: trigram index over url and host for substring search (FTS5,
 * external content: deleting a row needs the 'delete' command with its
 * values). It follows the rows when the log is quiet (indexing a URL costs
 * more than storing its row): meta 'fts_seq' is the seq up to which every
 * row is in it; the rows above are found by testing them directly
 * (FLOWS_FTS_SEQ_SQL). */
#ifndef WGMITM_FLOWS_SCHEMA_H
#define WGMITM_FLOWS_SCHEMA_H

#define FLOWS_SCHEMA_VERSION 3

/* The seq up to which flow_fts has every row, as an SQL expression. */
#define FLOWS_FTS_SEQ_SQL "(SELECT value FROM meta WHERE key = 'fts_seq')"

#define FLOWS_SCHEMA_SQL                                                                           \
	"CREATE TABLE IF NOT EXISTS flows ("                                                       \
	" seq INTEGER PRIMARY KEY,"                                                                \
	" id TEXT NOT NULL UNIQUE,"                                                                \
	" type TEXT NOT NULL,"                                                                     \
	" start_us INTEGER NOT NULL,"                                                              \
	" end_us INTEGER NOT NULL,"                                                                \
	" duration_us INTEGER NOT NULL,"                                                           \
	" peer TEXT,"                                                                              \
	" client TEXT,"                                                                            \
	" server TEXT,"                                                                            \
	" conn TEXT,"                                                                              \
	" host TEXT NOT NULL,"                                                                     \
	" method TEXT,"                                                                            \
	" url TEXT,"                                                                               \
	" status INTEGER NOT NULL,"                                                                \
	" req_ctype TEXT,"                                                                         \
	" resp_ctype TEXT,"                                                                        \
	" req_headers TEXT,"                                                                       \
	" resp_headers TEXT,"                                                                      \
	" bytes_up INTEGER NOT NULL,"                                                              \
	" bytes_down INTEGER NOT NULL,"                                                            \
	" proto TEXT,"                                                                             \
	" passthrough INTEGER NOT NULL,"                                                           \
	" tls_rejected INTEGER NOT NULL,"                                                          \
	" websocket INTEGER NOT NULL,"                                                             \
	" has_response INTEGER NOT NULL,"                                                          \
	" end_reason TEXT,"                                                                        \
	" error TEXT,"                                                                             \
	" via TEXT NOT NULL,"                                                                      \
	" user TEXT,"                                                                              \
	" replay_of TEXT,"                                                                         \
	" record TEXT NOT NULL);"                                                                  \
	"CREATE INDEX IF NOT EXISTS flows_start ON flows(start_us);"                               \
	"CREATE INDEX IF NOT EXISTS flows_peer ON flows(peer, seq);"                               \
	"CREATE INDEX IF NOT EXISTS flows_type ON flows(type, seq);"                               \
	"CREATE INDEX IF NOT EXISTS flows_host ON flows(host, seq);"                               \
	"CREATE INDEX IF NOT EXISTS flows_method ON flows(method, seq);"                           \
	"CREATE INDEX IF NOT EXISTS flows_status ON flows(status, seq);"                           \
	"CREATE INDEX IF NOT EXISTS flows_conn ON flows(conn);"                                    \
	"CREATE INDEX IF NOT EXISTS flows_replay_of ON flows(replay_of) WHERE replay_of IS NOT "   \
	"NULL;"                                                                                    \
	"CREATE TABLE IF NOT EXISTS bodies ("                                                      \
	" seq INTEGER NOT NULL,"                                                                   \
	" part INTEGER NOT NULL,"                                                                  \
	" encoding TEXT,"                                                                          \
	" data BLOB NOT NULL,"                                                                     \
	" PRIMARY KEY (seq, part));"                                                               \
	"CREATE VIRTUAL TABLE IF NOT EXISTS flow_fts USING fts5("                                  \
	" url, host, content='flows', content_rowid='seq', tokenize='trigram');"                   \
	"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"

#endif
