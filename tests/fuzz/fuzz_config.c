/* fuzz_config.c — libFuzzer harness for the balancer configuration (src/lb/config.h): the INI
 * file reader, the command-line flags, and lb_parse_duration / lb_parse_size.
 *
 * Build and run with `make fuzz` (or `make fuzz-smoke`); by hand, from the repository root, after
 * `make fuzz` built build-fuzz/libagora.a:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc \
 *         -D_GNU_SOURCE tests/fuzz/fuzz_config.c build-fuzz/libagora.a -linih -ljansson -lsodium \
 *         -lsqlite3 -lpq -lm -pthread -o build-fuzz/fuzz_config
 *   build-fuzz/fuzz_config -max_total_time=30 build-fuzz/corpus/config tests/fuzz/corpus/config
 *
 * Input layout: byte 0 selects the mode (modulo 3), the rest is its text:
 *   0  an INI file: written to a memfd and read with lb_config_load_file("/proc/self/fd/N");
 *   1  flags: the text split at NUL bytes into argv (at most 64 arguments) for
 *      lb_config_from_args; arguments starting with "--config", "--help" or "-h" are dropped so
 *      that no other file is read and nothing is printed;
 *   2  a value: the text (up to the first NUL) given to lb_parse_duration and lb_parse_size.
 * Besides memory errors, leaks and UB the harness traps when the result breaks the contract:
 * return codes other than 0/-1, an empty error message on failure, or a configuration accepted
 * although validation should have rejected it (rise/fall 0, zero health interval/timeout, a
 * health path without '/', percentages above 100, more than 8 retries or 256 workers, too many
 * backends), or string fields that are not NUL-terminated. A duration accepted must be at most
 * 7 days; a size given as plain digits must equal its strtoull value. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lb/config.h"

#define CHECK(x)                                                                                                       \
    do {                                                                                                               \
        if (!(x))                                                                                                      \
            __builtin_trap();                                                                                          \
    } while (0)

#define MAX_ARGS 64

static void check_str(const char *field, size_t size) { CHECK(strnlen(field, size) < size); }

/* Invariants of a configuration that passed validation. */
static void check_valid(const struct lb_config *c)
{
    CHECK(c->rise >= 1 && c->fall >= 1);
    CHECK(c->health_interval_ms > 0 && c->health_timeout_ms > 0);
    CHECK(c->health_path[0] == '/');
    CHECK(c->panic_percent <= 100 && c->retry_budget_percent <= 100 && c->max_eject_percent <= 100);
    CHECK(c->retries <= 8);
    CHECK(c->workers <= 256);
    CHECK(!strcmp(c->hash_key, "client") || !strncmp(c->hash_key, "header:", 7) || !strncmp(c->hash_key, "cookie:", 7));
    CHECK(c->nbackends <= LB_MAX_BACKENDS);
    for (size_t i = 0; i < c->nbackends; i++)
        CHECK(c->backends[i] != NULL);
}

/* Invariants of any configuration, valid or not. */
static void check_strings(const struct lb_config *c)
{
    check_str(c->listen, sizeof(c->listen));
    check_str(c->policy, sizeof(c->policy));
    check_str(c->hash_key, sizeof(c->hash_key));
    check_str(c->access_log, sizeof(c->access_log));
    check_str(c->health_path, sizeof(c->health_path));
    check_str(c->admin_listen, sizeof(c->admin_listen));
    check_str(c->admin_token, sizeof(c->admin_token));
    check_str(c->config_path, sizeof(c->config_path));
    CHECK(c->nbackends <= LB_MAX_BACKENDS);
}

static void check_result(const struct lb_config *c, int r, const char *err, size_t errlen)
{
    CHECK(r == 0 || r == -1);
    CHECK(strnlen(err, errlen) < errlen);
    if (r < 0)
        CHECK(err[0] != '\0');
    else
        check_valid(c);
    check_strings(c);
}

static void fuzz_file(const uint8_t *p, size_t n)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz_config.ini", MFD_CLOEXEC);
        CHECK(fd >= 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(pwrite(fd, p, n, 0) == (ssize_t)n);
    struct lb_config c;
    char err[512];
    lb_config_defaults(&c);
    err[0] = '\0';
    int r = lb_config_load_file(&c, path, err, sizeof(err));
    check_result(&c, r, err, sizeof(err));
    if (r == 0)
        CHECK(!strcmp(c.config_path, path));
    lb_config_free(&c);
    CHECK(c.nbackends == 0);
}

static void fuzz_args(const uint8_t *p, size_t n)
{
    char *text = malloc(n + 1);
    CHECK(text != NULL);
    memcpy(text, p, n);
    text[n] = '\0';
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = "lb";
    for (size_t i = 0; i <= n && argc < MAX_ARGS + 1;) {
        char *a = text + i;
        size_t len = strlen(a);
        if (strncmp(a, "--config", 8) && strcmp(a, "--help") && strcmp(a, "-h"))
            argv[argc++] = a;
        i += len + 1;
    }
    struct lb_config c;
    char err[512];
    lb_config_defaults(&c);
    err[0] = '\0';
    int r = lb_config_from_args(&c, argc, argv, err, sizeof(err));
    check_result(&c, r, err, sizeof(err));
    lb_config_free(&c);
    free(text);
}

static void fuzz_value(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    memcpy(s, p, n);
    s[n] = '\0';
    unsigned ms = 0xdeadbeef, ms2 = 0;
    int r = lb_parse_duration(s, &ms);
    CHECK(r == 0 || r == -1);
    if (r == 0) {
        CHECK(ms <= 7u * 86400u * 1000u);
        CHECK(lb_parse_duration(s, &ms2) == 0 && ms2 == ms); /* deterministic */
    } else {
        CHECK(ms == 0xdeadbeef); /* untouched on failure */
    }
    uint64_t b = 0x5eed, b2 = 0;
    r = lb_parse_size(s, &b);
    CHECK(r == 0 || r == -1);
    if (r == 0) {
        CHECK(lb_parse_size(s, &b2) == 0 && b2 == b);
        size_t digits = strspn(s, "0123456789");
        if (digits > 0 && s[digits] == '\0')
            CHECK(b == strtoull(s, NULL, 10));
    } else {
        CHECK(b == 0x5eed);
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_file(data + 1, size - 1);
        break;
    case 1:
        fuzz_args(data + 1, size - 1);
        break;
    default:
        fuzz_value(data + 1, size - 1);
        break;
    }
    return 0;
}
