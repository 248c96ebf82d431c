/* A bound parameter of a WHERE clause over the store's tables: the filter
 * compiler fills them, the store binds them (?1, ?2, ... in order). */
#ifndef WGMITM_FLOWS_PARAM_H
#define WGMITM_FLOWS_PARAM_H

#include <stdint.h>

enum flows_param_type { FLOWS_PARAM_TEXT, FLOWS_PARAM_INT };

struct flows_param {
	enum flows_param_type type;
	union {
		const char *text; /* borrowed: valid while the query runs */
		int64_t i;
	};
};

#endif
