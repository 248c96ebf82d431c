/* lwIP port for NO_SYS=1 on Linux: the clock, diagnostics, asserts and
 * random numbers lwIP asks its platform for. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <sodium.h>

#include "lwip/opt.h"
#include "lwip/sys.h"

/* Milliseconds from a monotonic clock; lwIP only compares differences, so
 * wrapping at 2^32 ms is fine. */
u32_t sys_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (u32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

void netstack__diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lwip: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

_Noreturn void netstack__assert(const char *msg, const char *file, int line)
{
    fprintf(stderr, "lwip: assertion \"%s\" failed at %s:%d\n", msg, file, line);
    fflush(stderr);
    abort();
}

uint32_t netstack__rand(void)
{
    return randombytes_random();
}
