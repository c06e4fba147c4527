/* test_cpus.c — unit tests for src/core/cpus.c: off, auto and CPU lists (their order, ranges,
 * spaces), each refusal with its message and the set left off, worker i's CPU in turn, and the
 * list written back as ranges. The lists use CPUs this process may run on (sched_getaffinity). */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/cpus.h"

#define HINT " (off, auto, or a list such as 0,2-3)"

static struct cpus set; /* 2 KiB: not on cmocka's stack */
static unsigned allowed[CPUS_MAX], nallowed;

static int setup(void **state)
{
    cpu_set_t s;
    if (sched_getaffinity(0, sizeof(s), &s) != 0)
        return -1;
    nallowed = 0;
    for (unsigned c = 0; c < CPUS_MAX; c++)
        if (CPU_ISSET(c, &s))
            allowed[nallowed++] = c;
    return 0;
}

static void test_off_pins_nothing(void **state)
{
    char err[200] = "";
    set.n = 7;
    assert_int_equal(cpus_parse("off", &set, err, sizeof(err)), 0);
    assert_int_equal(set.n, 0);
    assert_int_equal(cpus_of(&set, 0), -1);
    assert_int_equal(cpus_of(NULL, 3), -1);
}

static void test_auto_is_every_allowed_cpu_ascending_and_workers_take_them_in_turn(void **state)
{
    char err[200] = "";
    assert_int_equal(cpus_parse("auto", &set, err, sizeof(err)), 0);
    assert_int_equal(set.n, nallowed);
    for (unsigned i = 0; i < nallowed; i++)
        assert_int_equal(set.cpu[i], allowed[i]);
    for (unsigned i = 0; i < 3 * nallowed; i++)
        assert_int_equal(cpus_of(&set, i), (int)allowed[i % nallowed]);
}

static void test_a_list_keeps_its_order_ranges_and_spaces(void **state)
{
    char err[200] = "", spec[64], out[64];
    unsigned last = allowed[nallowed - 1], first = allowed[0];
    if (last == first) { /* one CPU: one to list */
        snprintf(spec, sizeof(spec), " %u ", first);
        assert_int_equal(cpus_parse(spec, &set, err, sizeof(err)), 0);
        assert_int_equal(set.n, 1);
        assert_int_equal(cpus_of(&set, 5), (int)first);
        return;
    }
    snprintf(spec, sizeof(spec), " %u ,%u", last, first);
    assert_int_equal(cpus_parse(spec, &set, err, sizeof(err)), 0);
    assert_int_equal(set.n, 2);
    assert_int_equal(cpus_of(&set, 0), (int)last);
    assert_int_equal(cpus_of(&set, 1), (int)first);
    assert_int_equal(cpus_of(&set, 2), (int)last);
    cpus_format(&set, out, sizeof(out));
    snprintf(spec, sizeof(spec), "%u,%u", last, first);
    assert_string_equal(out, spec);
    /* A range of the first two allowed CPUs when they are neighbours. */
    if (allowed[1] == allowed[0] + 1) {
        snprintf(spec, sizeof(spec), "%u-%u", allowed[0], allowed[1]);
        assert_int_equal(cpus_parse(spec, &set, err, sizeof(err)), 0);
        assert_int_equal(set.n, 2);
        cpus_format(&set, out, sizeof(out));
        assert_string_equal(out, spec);
    }
}

static void refused(const char *spec, const char *message)
{
    char err[200] = "";
    set.n = 5;
    assert_int_equal(cpus_parse(spec, &set, err, sizeof(err)), -1);
    assert_string_equal(err, message);
    assert_int_equal(set.n, 0); /* a failed parse leaves the set off */
}

static void test_each_bad_value_is_refused_with_its_message(void **state)
{
    refused("", "cpu-affinity: no value" HINT);
    refused(" \t", "cpu-affinity: no value" HINT);
    refused("0,", "cpu-affinity: a CPU number is missing" HINT);
    refused("-3", "cpu-affinity: a CPU number is missing" HINT);
    refused("Auto", "cpu-affinity: 'Auto' is not a CPU number" HINT);
    refused("0;1", "cpu-affinity: ';1' is not part of a CPU list" HINT);
    refused("0 1", "cpu-affinity: '1' is not part of a CPU list" HINT);
    refused("5-2", "cpu-affinity: range 5-2 is backwards");
    refused("1024", "cpu-affinity: CPU 1024 is out of range (0-1023)");
    refused("0-1024", "cpu-affinity: CPU 1024 is out of range (0-1023)");
    refused("184467440737095516160", "cpu-affinity: CPU 184467440737095516160 is out of range (0-1023)");
    char spec[32], message[240], may[96];
    snprintf(spec, sizeof(spec), "%u,%u", allowed[0], allowed[0]);
    snprintf(message, sizeof(message), "cpu-affinity: CPU %u is listed twice", allowed[0]);
    refused(spec, message);
    /* The message names the CPUs the process may run on, as ranges. */
    static struct cpus all;
    char err[200];
    assert_int_equal(cpus_parse("auto", &all, err, sizeof(err)), 0);
    cpus_format(&all, may, sizeof(may));
    if (allowed[nallowed - 1] < CPUS_MAX - 1) {
        snprintf(message, sizeof(message), "cpu-affinity: CPU %d is not one this process may run on (it may run on %s)",
                 CPUS_MAX - 1, may);
        refused("1023", message);
    }
}

static void test_blanks_are_allowed_around_the_value_and_its_parts(void **state)
{
    char err[200] = "", spec[64];
    assert_int_equal(cpus_parse(" \toff ", &set, err, sizeof(err)), 0);
    assert_int_equal(set.n, 0);
    assert_int_equal(cpus_parse("\tauto ", &set, err, sizeof(err)), 0);
    assert_int_equal(set.n, nallowed);
    snprintf(spec, sizeof(spec), " %u - %u ", allowed[0], allowed[0]);
    assert_int_equal(cpus_parse(spec, &set, err, sizeof(err)), 0);
    assert_int_equal(set.n, 1);
    assert_int_equal(cpus_of(&set, 1), (int)allowed[0]);
}

static void test_check_looks_at_the_spelling_only_and_same_compares_pinnings(void **state)
{
    char err[200] = "";
    assert_int_equal(cpus_check("1023, 0-3", err, sizeof(err)), 0); /* whatever this process may use */
    assert_int_equal(cpus_check("auto", err, sizeof(err)), 0);
    assert_int_equal(cpus_check("3-1", err, sizeof(err)), -1);
    assert_string_equal(err, "cpu-affinity: range 3-1 is backwards");
    static struct cpus a, b;
    a.n = 2, a.cpu[0] = 0, a.cpu[1] = 1;
    b.n = 2, b.cpu[0] = 0, b.cpu[1] = 1;
    assert_true(cpus_same(&a, &b));
    b.cpu[0] = 1, b.cpu[1] = 0; /* the same CPUs, another order: worker 0 moves */
    assert_false(cpus_same(&a, &b));
    b.n = 1;
    assert_false(cpus_same(&a, &b));
    a.n = b.n = 0;
    assert_true(cpus_same(&a, &b));
}

static void test_format_writes_ranges_and_truncates(void **state)
{
    struct cpus s = {.n = 6, .cpu = {0, 1, 2, 5, 7, 8}};
    char out[64];
    cpus_format(&s, out, sizeof(out));
    assert_string_equal(out, "0-2,5,7-8");
    cpus_format(&s, out, 8); /* what fits, then ",..." */
    assert_string_equal(out, "0-2,...");
    cpus_format(&s, out, 5);
    assert_string_equal(out, "...");
    cpus_format(&s, out, 3);
    assert_string_equal(out, "");
    cpus_format(&s, out, 10); /* exactly fits */
    assert_string_equal(out, "0-2,5,7-8");
    s.n = 0;
    cpus_format(&s, out, sizeof(out));
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_pins_nothing),
        cmocka_unit_test(test_auto_is_every_allowed_cpu_ascending_and_workers_take_them_in_turn),
        cmocka_unit_test(test_a_list_keeps_its_order_ranges_and_spaces),
        cmocka_unit_test(test_each_bad_value_is_refused_with_its_message),
        cmocka_unit_test(test_blanks_are_allowed_around_the_value_and_its_parts),
        cmocka_unit_test(test_check_looks_at_the_spelling_only_and_same_compares_pinnings),
        cmocka_unit_test(test_format_writes_ranges_and_truncates),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
