/* alloc.c — allocation that aborts on out of memory; see alloc.h for the contract. */
#include "core/alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Noreturn void alloc_oom(size_t n)
{
    /* No stdio buffering and no allocation on this path: format into the stack, one write(). */
    char line[64];
    int len = snprintf(line, sizeof(line), "agora: out of memory (%zu bytes)\n", n);
    if (len > 0) {
        ssize_t w = write(STDERR_FILENO, line, (size_t)len);
        (void)w;
    }
    abort();
}

char *alloc_strdup(const char *s) { return alloc_strndup(s, SIZE_MAX); }

char *alloc_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = alloc_malloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}
