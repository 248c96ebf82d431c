/* A filter expression as a store query: its SQL (filter.h) put into a
 * struct store_query, the indexed driven form when there is one. */
#ifndef WGMITM_FLOWS_QUERY_H
#define WGMITM_FLOWS_QUERY_H

#include "flows/filter.h"
#include "flows/store.h"

struct flows_query {
	struct filter_sql sql;
	struct store_query q; /* where, params (sql's), match set; cursor, limit the caller's */
};

/* Parses `text` (NULL or "": every flow) into `out`. 0; -1 with `err`
 * filled on a syntax error (column 0: no memory). */
int flows_query_make(struct flows_query *out, const char *text, struct filter_error *err);
void flows_query_free(struct flows_query *fq);

#endif
