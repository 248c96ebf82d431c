/* The answer of an --auth-url endpoint (listen/authext.h), fed as it
 * arrives: every prefix of the input. Checks: once an answer is whole or
 * refused, a longer input says the same (the bytes before decide), and a
 * whole answer's status is a three-digit one. */
#include <stdint.h>
#include <stdlib.h>

#include "listen/authext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		size = 8192; /* the endpoint's head is cut there */
	int first = 0, first_status = 0;
	size_t step = size / 16 + 1;
	for (size_t n = 0; n <= size; n += step) {
		int status = -1;
		int rc = authext_parse_answer(data, n, &status);
		if (rc == 1 && (status < 100 || status > 999))
			abort();
		if (first != 0 && (rc != first || (rc == 1 && status != first_status)))
			abort();
		if (rc != 0 && first == 0) {
			first = rc;
			first_status = status;
		}
	}
	return 0;
}
