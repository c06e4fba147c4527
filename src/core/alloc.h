/* alloc.h — memory allocation that never returns NULL: out of memory is handled one way.
 *
 * Contract. alloc_malloc, alloc_calloc, alloc_realloc, alloc_strdup and alloc_strndup do what the
 * C library's functions do, except that they never return NULL: when the memory cannot be had they
 * write one line, "agora: out of memory (N bytes)", to stderr and call abort() (alloc_oom). Every
 * allocation in src/ goes through them, so no caller checks for NULL and no function returns NULL
 * or an error code because memory ran out. Free with free() as usual.
 *
 * Why abort instead of recovering (as Redis's zmalloc_oom_handler does): on Linux with overcommit
 * (the default) malloc practically never fails; a short process is killed by the OOM killer when
 * it touches the memory instead. A recovery path could therefore never be exercised by a test,
 * and an untested path that half-unwinds a request is worse than a clean stop that the supervisor
 * (agora up, systemd) restarts. Limits that a client can reach are checked before allocating
 * (body and header limits, queue limits), so an abort here is never a client's choice.
 *
 * Details: a request for 0 bytes returns a unique pointer (never NULL), including from
 * alloc_realloc(p, 0), which does not free p. alloc_calloc aborts when n * size overflows
 * (reported as SIZE_MAX bytes) instead of wrapping around. Thread-safe (the C library's).
 *
 * Memory that libraries allocate themselves: jansson is pointed at alloc_malloc in main (see
 * cli/main.c), so its NULL means malformed input only; SQLite, libsodium and inih report a failed
 * allocation through their own return values, which the modules turn into their ERROR code with a
 * message (STORE_ERROR, auth's -1, the config loader's -1), like any other failure of that call. */
#ifndef AGORA_CORE_ALLOC_H
#define AGORA_CORE_ALLOC_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

char *alloc_strdup(const char *s);
/* Copies at most n bytes of s (fewer if s ends first) and a NUL. */
char *alloc_strndup(const char *s, size_t n);
/* Writes "agora: out of memory (n bytes)" to stderr and aborts. */
_Noreturn void alloc_oom(size_t n);

/* Inline: the balancer allocates a few times per request, and a call per allocation shows there
 * (bench/instr.sh). */
static inline void *alloc_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        alloc_oom(n);
    return p;
}

static inline void *alloc_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        alloc_oom(SIZE_MAX);
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        alloc_oom(n * size);
    return p;
}

static inline void *alloc_realloc(void *p, size_t n)
{
    void *np = realloc(p, n ? n : 1);
    if (!np)
        alloc_oom(n);
    return np;
}

#endif
