/* A bound parameter of a WHERE clause over the store's tables: the filter
 * compiler fills them (struct filter_sql), the store binds them (struct
 * store_query; ?1, ?2, ... in order). */
#ifndef WGMITM_FLOWS_PARAM_H
#define WGMITM_FLOWS_PARAM_H

#include <stdint.h>

enum flows_param_type { FLOWS_PARAM_TEXT, FLOWS_PARAM_INT };

struct flows_param {
	enum flows_param_type type;
	union {
		const char *text; /* NUL-terminated; a filter_sql's own (filter_sql_free),
				   * borrowed by a store_query while it runs */
		int64_t i;
	};
};

#endif
