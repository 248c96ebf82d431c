/* Filter expressions as store queries. */
#include "flows/query.h"

#include <stdio.h>
#include <string.h>

int flows_query_make(struct flows_query *out, const char *text, struct filter_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!text || !*text)
		return 0;
	struct filter *f = filter_parse(text, err);
	if (!f)
		return -1;
	int rc = filter_to_sql(f, &out->sql);
	filter_free(f);
	if (rc != 0) {
		memset(err, 0, sizeof(*err));
		snprintf(err->message, sizeof(err->message), "out of memory");
		return -1;
	}
	size_t n = out->sql.nparams;
	out->q.params = out->sql.params;
	out->q.nparams = n;
	/* Walk the trigram index newest first when a literal narrows it: a
	 * page then costs a page, however many flows hold the literal. */
	if (out->sql.driven && out->sql.fts_param >= 1 && out->sql.fts_param <= n &&
	    out->sql.params[out->sql.fts_param - 1].type == FLOWS_PARAM_TEXT) {
		out->q.where = out->sql.driven;
		out->q.match = out->sql.params[out->sql.fts_param - 1].text;
	} else {
		out->q.where = out->sql.where;
	}
	return 0;
}

void flows_query_free(struct flows_query *fq)
{
	filter_sql_free(&fq->sql);
	memset(fq, 0, sizeof(*fq));
}
