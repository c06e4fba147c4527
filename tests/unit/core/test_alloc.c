/* test_alloc.c — unit tests for the allocation wrappers (src/core/alloc.h): out of memory ends the
 * process by SIGABRT after exactly one line on stderr, "agora: out of memory (N bytes)"; a calloc
 * whose n * size overflows aborts instead of wrapping to a small buffer; 0 bytes is never NULL.
 * The failing calls run in a forked child whose stderr is a pipe; the parent reads it to the end
 * and waits (the child dies at once, so both are bounded). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"

/* Under ASan/TSan a failed allocation must come back as NULL (as from the C library) rather than
 * as a sanitizer report, or the wrapper's own path is never reached. The sanitizers call these
 * hooks at start-up; without a sanitizer they are unused. Options given in ASAN_OPTIONS or
 * TSAN_OPTIONS (make asan, make tsan) override these only where they name the same flag. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "allocator_may_return_null=1"; }

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

enum oom_call { OOM_MALLOC, OOM_CALLOC_OVERFLOW, OOM_CALLOC, OOM_REALLOC, OOM_RLIMIT };

static volatile void *sink; /* keeps the compiler from dropping a call whose result is unused */

static void child(enum oom_call what)
{
    switch (what) {
    case OOM_MALLOC:
        sink = alloc_malloc(SIZE_MAX / 2);
        break;
    case OOM_CALLOC_OVERFLOW:
        /* (2^63 + 1) * 2 wraps to 2 in size_t arithmetic: a wrapping check would hand out 2 bytes */
        sink = alloc_calloc(SIZE_MAX / 2 + 2, 2);
        break;
    case OOM_CALLOC:
        sink = alloc_calloc(SIZE_MAX / 4, 2); /* no overflow, just too much */
        break;
    case OOM_REALLOC: {
        void *p = alloc_malloc(16);
        sink = alloc_realloc(p, SIZE_MAX / 2);
        break;
    }
    case OOM_RLIMIT: {
        /* A real shortage rather than an impossible size: 512 MiB under a 256 MiB address space. */
        struct rlimit rl = {256u << 20, 256u << 20};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(3);
        sink = alloc_malloc(512u << 20);
        break;
    }
    }
    _exit(0); /* not reached when the wrapper works */
}

/* Runs child(what) in a fork with stderr on a pipe; returns its wait status and what it wrote. */
static int run_child(enum oom_call what, char *err, size_t errlen)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        struct rlimit core = {0, 0};
        setrlimit(RLIMIT_CORE, &core); /* an expected abort leaves no core file */
        child(what);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n < errlen - 1 && (r = read(fds[0], err + n, errlen - 1 - n)) > 0)
        n += (size_t)r;
    err[n] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

#ifdef UNDER_SANITIZER
/* Drops the sanitizer's own lines ("==PID==WARNING: AddressSanitizer failed to allocate ...",
 * which it prints before returning NULL): what is left must be the wrapper's line alone. */
static void drop_sanitizer_lines(char *s)
{
    char *out = s;
    for (char *line = s; *line;) {
        char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) + 1 : strlen(line);
        if (strncmp(line, "==", 2) != 0) {
            memmove(out, line, n);
            out += n;
        }
        line += n;
    }
    *out = '\0';
}
#endif

static void expect_oom(enum oom_call what, const char *line)
{
    char err[512];
    int status = run_child(what, err, sizeof(err));
#ifdef UNDER_SANITIZER
    drop_sanitizer_lines(err);
#endif
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_string_equal(err, line);
}

static void test_malloc_oom_aborts_with_one_line(void **state)
{
    char line[80];
    snprintf(line, sizeof(line), "agora: out of memory (%zu bytes)\n", SIZE_MAX / 2);
    expect_oom(OOM_MALLOC, line);
}

static void test_calloc_overflow_aborts(void **state)
{
    char line[80];
    snprintf(line, sizeof(line), "agora: out of memory (%zu bytes)\n", SIZE_MAX);
    expect_oom(OOM_CALLOC_OVERFLOW, line);
}

static void test_calloc_oom_reports_product(void **state)
{
    char line[80];
    snprintf(line, sizeof(line), "agora: out of memory (%zu bytes)\n", (SIZE_MAX / 4) * 2);
    expect_oom(OOM_CALLOC, line);
}

static void test_realloc_oom_aborts(void **state)
{
    char line[80];
    snprintf(line, sizeof(line), "agora: out of memory (%zu bytes)\n", SIZE_MAX / 2);
    expect_oom(OOM_REALLOC, line);
}

static void test_rlimit_shortage_aborts(void **state)
{
#ifdef UNDER_SANITIZER
    skip(); /* the sanitizers reserve terabytes of shadow memory: RLIMIT_AS cannot be lowered */
#else
    expect_oom(OOM_RLIMIT, "agora: out of memory (536870912 bytes)\n");
#endif
}

static void test_success_paths(void **state)
{
    unsigned char *z = alloc_calloc(1000, 4);
    for (size_t i = 0; i < 4000; i++)
        assert_int_equal(z[i], 0);
    free(z);

    void *p = alloc_malloc(0); /* 0 bytes: a unique pointer, never NULL */
    assert_non_null(p);
    p = alloc_realloc(p, 0); /* realloc(p, 0) may free p and return NULL; this one does not */
    assert_non_null(p);
    p = alloc_realloc(p, 100);
    memset(p, 'x', 100);
    free(p);
    assert_non_null(p = alloc_calloc(0, 8));
    free(p);

    char *s = alloc_strdup("agora");
    assert_string_equal(s, "agora");
    free(s);
    s = alloc_strndup("balancer", 3);
    assert_string_equal(s, "bal");
    free(s);
    s = alloc_strndup("lb", 10); /* n beyond the end: copies up to the NUL */
    assert_string_equal(s, "lb");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malloc_oom_aborts_with_one_line), cmocka_unit_test(test_calloc_overflow_aborts),
        cmocka_unit_test(test_calloc_oom_reports_product),      cmocka_unit_test(test_realloc_oom_aborts),
        cmocka_unit_test(test_rlimit_shortage_aborts),          cmocka_unit_test(test_success_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
