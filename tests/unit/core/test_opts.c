/* test_opts.c — unit tests for the one option table (src/core/opts.h): every value type and its
 * message for a bad value, ranges, --name=value and --name value, flags without a value, rows
 * set by a function, early rows applied before the others wherever they stand, --help and -h
 * anywhere, unknown options and stray arguments, stopping at the first argument (agora ctl), and
 * the --help layout (padding, long names, continuation lines, text rows). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/opts.h"

struct t {
    char name[8];
    const char *ptr;
    unsigned n, ranged, ms, wait;
    long l;
    uint64_t size;
    int on, force;
    int calls;
    char order[32]; /* which rows were applied, in order */
};

static int note(void *target, const struct opts_def *d, const char *name, const char *val, char *err, size_t errlen)
{
    struct t *t = target;
    if (!strcmp(val, "bad")) {
        snprintf(err, errlen, "%s: bad is bad", name);
        return -1;
    }
    t->calls++;
    strncat(t->order, d->early ? "E" : "C", sizeof(t->order) - strlen(t->order) - 1);
    return 0;
}

#define O(f) offsetof(struct t, f)
static const struct opts_def defs[] = {
    {.flag = "name", .type = OPTS_STR, .off = O(name), .size = 8, .help = "a name"},
    {.flag = "ptr", .type = OPTS_PTR, .off = O(ptr), .arg = "P", .help = "kept as given"},
    {.flag = "n", .type = OPTS_UINT, .off = O(n), .help = "unranged"},
    {.flag = "ranged", .type = OPTS_UINT, .off = O(ranged), .min = 1, .max = 256, .help = "1..256"},
    {.flag = "long", .type = OPTS_LONG, .off = O(l), .min = -5, .max = 5, .help = "-5..5"},
    {.type = OPTS_TEXT, .help = "\nSection:\n"},
    {.flag = "ms", .type = OPTS_DURATION, .off = O(ms), .min = 1, .help = "first line\nsecond line"},
    {.flag = "wait", .type = OPTS_DURATION, .off = O(wait), .min = 1, .max = 3600000, .help = "1ms..1h"},
    {.flag = "size", .type = OPTS_SIZE, .off = O(size), .help = "bytes"},
    {.flag = "on", .type = OPTS_BOOL, .off = O(on), .help = "a switch"},
    {.flag = "force", .type = OPTS_FLAG, .off = O(force), .help = "no value"},
    {.flag = "call", .type = OPTS_CALL, .set = note, .help = "repeatable"},
    {.flag = "early",
     .type = OPTS_CALL,
     .set = note,
     .early = 1,
     .missing = "--early needs a file name",
     .arg = "FILE",
     .help = "applied first"},
    {.flag = "a-very-long-option-name", .type = OPTS_FLAG, .off = O(force), .help = "long"},
};
#undef O
#define NDEFS (sizeof(defs) / sizeof(defs[0]))

/* Parses the NULL-terminated arguments (argv[0] is added) into *t; returns opts_parse's result. */
static int parse(struct t *t, char *err, int flags, int *next, ...)
{
    char *argv[32] = {"cmd"};
    int argc = 1;
    va_list ap;
    va_start(ap, next);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    memset(t, 0, sizeof(*t));
    err[0] = '\0';
    return opts_parse(defs, NDEFS, t, argc, argv, flags, next, err, 256);
}

#define EXPECT_ERR(msg, ...)                                                                                           \
    do {                                                                                                               \
        struct t t_;                                                                                                   \
        char e_[256];                                                                                                  \
        assert_int_equal(parse(&t_, e_, 0, NULL, __VA_ARGS__, NULL), -1);                                              \
        assert_string_equal(e_, msg);                                                                                  \
    } while (0)

static void test_values(void **state)
{
    struct t t;
    char err[256];
    int next = -1;
    assert_int_equal(parse(&t, err, 0, &next, "--name", "abc", "--ptr=p", "--n", "1000000000", "--ranged=256", "--long",
                           "-5", "--ms", "1.5s", "--size", "64KiB", "--on", "yes", "--force", "--call", "x", "--call=y",
                           NULL),
                     0);
    assert_int_equal(next, 19);
    assert_string_equal(t.name, "abc");
    assert_string_equal(t.ptr, "p");
    assert_int_equal(t.n, 1000000000);
    assert_int_equal(t.ranged, 256);
    assert_int_equal(t.l, -5);
    assert_int_equal(t.ms, 1500);
    assert_int_equal(t.size, 65536);
    assert_int_equal(t.on, 1);
    assert_int_equal(t.force, 1);
    assert_int_equal(t.calls, 2);
    assert_int_equal(parse(&t, err, 0, NULL, "--wait", "1h", NULL), 0); /* max itself */
    assert_int_equal(t.wait, 3600000);
    assert_int_equal(parse(&t, err, 0, NULL, "--on=off", "--name=", "--ms", "1ms", NULL), 0);
    assert_int_equal(t.on, 0);
    assert_string_equal(t.name, "");
    assert_int_equal(t.ms, 1);
}

static void test_bad_values(void **state)
{
    EXPECT_ERR("--name: value too long", "--name", "12345678");
    EXPECT_ERR("--n: 'x' is not a non-negative integer", "--n", "x");
    EXPECT_ERR("--n: '-1' is not a non-negative integer", "--n=-1");
    EXPECT_ERR("--n: '1000000001' is not a non-negative integer", "--n", "1000000001");
    EXPECT_ERR("--ranged must be 1..256 (got '0')", "--ranged", "0");
    EXPECT_ERR("--ranged must be 1..256 (got '257')", "--ranged", "257");
    EXPECT_ERR("--ranged must be 1..256 (got '2x')", "--ranged", "2x");
    EXPECT_ERR("--ranged must be 1..256 (got '')", "--ranged=");
    EXPECT_ERR("--long must be -5..5 (got '6')", "--long", "6");
    EXPECT_ERR("--ms: 'soon' is not a duration (e.g. 500ms, 10s, 2m)", "--ms", "soon");
    EXPECT_ERR("--ms must be at least 1ms (got '0')", "--ms", "0"); /* a duration, below min */
    EXPECT_ERR("--ms must be at least 1ms (got '0s')", "--ms", "0s");
    EXPECT_ERR("--wait must be 1ms..1h (got '2h')", "--wait", "2h"); /* above max */
    EXPECT_ERR("--wait must be 1ms..1h (got '3601s')", "--wait", "3601s");
    EXPECT_ERR("--wait must be 1ms..1h (got '0')", "--wait", "0");
    EXPECT_ERR("--wait: '10 minutes' is not a duration (e.g. 500ms, 10s, 2m)", "--wait", "10 minutes");
    EXPECT_ERR("--size: 'big' is not a size (e.g. 16k, 1m)", "--size", "big");
    EXPECT_ERR("--on: 'maybe' is not on/off", "--on", "maybe");
    EXPECT_ERR("option --force takes no value", "--force=1");
    EXPECT_ERR("--call: bad is bad", "--call", "bad");
}

static void test_argument_errors(void **state)
{
    EXPECT_ERR("unknown option '--bogus' (see --help)", "--bogus");
    EXPECT_ERR("unknown option '--bogus' (see --help)", "--bogus=1");
    EXPECT_ERR("unknown option '--' (see --help)", "--");
    EXPECT_ERR("unknown option '--namex' (see --help)", "--namex", "a"); /* no prefix matching */
    EXPECT_ERR("unexpected argument 'pos' (see --help)", "pos");
    EXPECT_ERR("unexpected argument '-x' (see --help)", "-x");
    EXPECT_ERR("option --name needs a value", "--name");
    EXPECT_ERR("option --call needs a value", "--n", "2", "--call");
    EXPECT_ERR("--early needs a file name", "--early");
}

static void test_help_wins(void **state)
{
    struct t t;
    char err[256];
    assert_int_equal(parse(&t, err, 0, NULL, "--n", "x", "--help", "--bogus", NULL), OPTS_HELP);
    assert_int_equal(parse(&t, err, 0, NULL, "-h", NULL), OPTS_HELP);
    assert_int_equal(t.n, 0); /* nothing applied */
    assert_int_equal(parse(&t, err, 0, NULL, "--name", "--help", NULL), OPTS_HELP);
}

static void test_early_rows_first(void **state)
{
    struct t t;
    char err[256];
    assert_int_equal(parse(&t, err, 0, NULL, "--call", "1", "--early", "f", "--call", "2", NULL), 0);
    assert_string_equal(t.order, "ECC");
    /* An early row's error comes before the others' (which are not applied). */
    assert_int_equal(parse(&t, err, 0, NULL, "--bogus", "--n", "1", "--early", "bad", NULL), -1);
    assert_string_equal(err, "--early: bad is bad");
    assert_int_equal(t.n, 0);
}

static void test_stop_at_argument(void **state)
{
    struct t t;
    char err[256];
    int next = -1;
    assert_int_equal(parse(&t, err, OPTS_STOP_AT_ARG, &next, "--n", "3", "add", "--ranged", "x", "--help", NULL), 0);
    assert_int_equal(next, 3);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.ranged, 0);
    assert_int_equal(parse(&t, err, OPTS_STOP_AT_ARG, &next, NULL), 0);
    assert_int_equal(next, 1);
    assert_int_equal(parse(&t, err, OPTS_STOP_AT_ARG, &next, "--help", "list", NULL), OPTS_HELP);
}

static void test_usage_layout(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    opts_usage(f, defs, NDEFS, 12);
    fclose(f);
    assert_string_equal(text, "  --name VALUE a name\n"
                              "  --ptr P      kept as given\n"
                              "  --n N        unranged\n"
                              "  --ranged N   1..256\n"
                              "  --long N     -5..5\n"
                              "\nSection:\n"
                              "  --ms DURATION  first line\n"
                              "               second line\n"
                              "  --wait DURATION  1ms..1h\n"
                              "  --size SIZE  bytes\n"
                              "  --on on|off  a switch\n"
                              "  --force      no value\n"
                              "  --call VALUE repeatable\n"
                              "  --early FILE applied first\n"
                              "  --a-very-long-option-name  long\n"
                              "  --help       show this help\n");
    free(text);
}

static void test_parse_duration_and_size(void **state)
{
    unsigned ms = 7;
    uint64_t b = 7;
    assert_int_equal(opts_parse_duration("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(opts_parse_duration("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(opts_parse_duration("nan", &ms), -1);
    assert_int_equal(opts_parse_duration("169h", &ms), -1);
    assert_int_equal(ms, 120000);
    assert_int_equal(opts_parse_size("2g", &b), 0);
    assert_int_equal(b, 2ull << 30);
    assert_int_equal(opts_parse_size("16 KiB", &b), 0);
    assert_int_equal(b, 16384);
    assert_int_equal(opts_parse_size("-1", &b), -1);
    assert_int_equal(opts_parse_size("99999999999999999999", &b), -1);
    assert_int_equal(b, 16384);
}

/* A command built with OPTS_ROW: opts_cmd_parse's exit codes and where it stopped. */
struct c {
    unsigned n;
    const char *who;
};
static const struct opts_def cdefs[] = {
    OPTS_ROW(struct c, "n", OPTS_UINT, n, 1, 9, NULL, NULL, "a digit"),
    OPTS_ROW(struct c, "who", OPTS_PTR, who, 0, 0, "NAME", NULL, "a name"),
};
static const struct opts_cmd ccmd = {
    .name = "agora test", .head = "usage: agora test\n", .defs = cdefs, .n = 2, .width = 10, .flags = OPTS_STOP_AT_ARG};

static void test_command(void **state)
{
    struct c c = {0};
    int next = 0;
    char *ok[] = {"test", "--n=3", "--who", "me", "rest", NULL};
    assert_int_equal(opts_cmd_parse(&ccmd, &c, 5, ok, &next), OPTS_CONTINUE);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.who, "me");
    assert_int_equal(next, 4);
    char *bad[] = {"test", "--n", "10", NULL};
    assert_int_equal(opts_cmd_parse(&ccmd, &c, 3, bad, NULL), 2); /* "agora test: --n must be 1..9 (got '10')" */
    assert_int_equal(c.n, 3);
    char *help[] = {"test", "--help", NULL};
    fflush(stdout);
    assert_int_equal(opts_cmd_parse(&ccmd, &c, 2, help, NULL), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    opts_cmd_usage(&ccmd, f);
    fclose(f);
    assert_string_equal(text,
                        "usage: agora test\n  --n N      a digit\n  --who NAME a name\n  --help     show this help\n");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),           cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_argument_errors),  cmocka_unit_test(test_help_wins),
        cmocka_unit_test(test_early_rows_first), cmocka_unit_test(test_stop_at_argument),
        cmocka_unit_test(test_usage_layout),     cmocka_unit_test(test_parse_duration_and_size),
        cmocka_unit_test(test_command),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
