/* test_passive.c — unit tests for passive health and the retry budget (src/lb/passive.h): which
 * failures eject, the max-eject cap, 5xx streaks, latency samples, and the budget's arithmetic.
 * No sockets: servers from lb_server_new, failures reported by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lb/passive.h"
#include "lb_test.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct fx {
    struct lb_config cfg;
    size_t n;
    struct lb_server *s[8];
    struct lb_set *set;
};

static void fx_init(struct fx *f, size_t n)
{
    memset(f, 0, sizeof(*f));
    lb_config_defaults(&f->cfg);
    f->n = n;
    for (size_t i = 0; i < n; i++) {
        char spec[64];
        snprintf(spec, sizeof(spec), "http://127.0.0.1:%zu", 8001 + i);
        f->s[i] = new_server(spec);
    }
    f->set = lb_set_new(f->s, n, 1);
}

static void fx_done(struct fx *f)
{
    lb_set_unref(f->set);
    for (size_t i = 0; i < f->n; i++)
        lb_server_unref(f->s[i]);
    lb_config_free(&f->cfg);
}

static int healthy(const struct lb_server *s) { return atomic_load(&s->healthy); }

/* Every kind of failure ejects a healthy server at once; an ejected one stays ejected once. */
static void test_fail_ejects(void **state)
{
    struct fx f;
    fx_init(&f, 8);
    f.cfg.max_eject_percent = 100;
    enum lb_fail kinds[] = {LB_FAIL_CONNECT, LB_FAIL_IO, LB_FAIL_TIMEOUT, LB_FAIL_5XX};
    for (size_t k = 0; k < N(kinds); k++) {
        lb_passive_fail(f.set, f.s[k], &f.cfg, kinds[k]);
        assert_false(healthy(f.s[k]));
        assert_int_equal(atomic_load(&f.s[k]->ejections_total), 1);
    }
    lb_passive_fail(f.set, f.s[0], &f.cfg, LB_FAIL_CONNECT);
    assert_int_equal(atomic_load(&f.s[0]->ejections_total), 1);
    assert_true(healthy(f.s[4]));
    fx_done(&f);
}

/* --passive-health off: nothing is ejected. */
static void test_fail_off(void **state)
{
    struct fx f;
    fx_init(&f, 2);
    f.cfg.passive_health = 0;
    lb_passive_fail(f.set, f.s[0], &f.cfg, LB_FAIL_CONNECT);
    assert_true(healthy(f.s[0]));
    assert_int_equal(atomic_load(&f.s[0]->ejections_total), 0);
    fx_done(&f);
}

/* Never more than max_eject_percent of the active servers out; draining ones do not count. */
static void test_max_eject(void **state)
{
    struct fx f;
    fx_init(&f, 5);
    f.cfg.passive_health = 1;
    f.cfg.max_eject_percent = 50;
    atomic_store(&f.s[4]->admin, LB_ADMIN_DRAINING);    /* 4 active */
    lb_passive_fail(f.set, f.s[0], &f.cfg, LB_FAIL_IO); /* 1 of 4 out */
    lb_passive_fail(f.set, f.s[1], &f.cfg, LB_FAIL_IO); /* 2 of 4 = 50% */
    lb_passive_fail(f.set, f.s[2], &f.cfg, LB_FAIL_IO); /* 3 of 4 would pass the cap */
    assert_false(healthy(f.s[0]));
    assert_false(healthy(f.s[1]));
    assert_true(healthy(f.s[2]));
    assert_true(healthy(f.s[3]));
    /* one back up: room for one more */
    atomic_store(&f.s[0]->healthy, 1);
    lb_passive_fail(f.set, f.s[2], &f.cfg, LB_FAIL_TIMEOUT);
    assert_false(healthy(f.s[2]));
    fx_done(&f);
}

/* eject_5xx consecutive 5xx eject (and start a new streak); any other status ends the streak. */
static void test_5xx_streak(void **state)
{
    struct fx f;
    fx_init(&f, 4);
    f.cfg.passive_health = 1;
    f.cfg.max_eject_percent = 100;
    f.cfg.eject_5xx = 3;
    struct lb_server *s = f.s[0];
    lb_passive_status(f.set, s, &f.cfg, 500);
    lb_passive_status(f.set, s, &f.cfg, 503);
    lb_passive_status(f.set, s, &f.cfg, 404); /* ends the streak */
    assert_int_equal(atomic_load(&s->consec_5xx), 0);
    lb_passive_status(f.set, s, &f.cfg, 502);
    lb_passive_status(f.set, s, &f.cfg, 200);
    lb_passive_status(f.set, s, &f.cfg, 500);
    lb_passive_status(f.set, s, &f.cfg, 500);
    assert_true(healthy(s));
    assert_int_equal(atomic_load(&s->consec_5xx), 2);
    lb_passive_status(f.set, s, &f.cfg, 599);
    assert_false(healthy(s));
    assert_int_equal(atomic_load(&s->consec_5xx), 0);
    /* eject_5xx 0: a streak never ejects */
    f.cfg.eject_5xx = 0;
    for (int i = 0; i < 20; i++)
        lb_passive_status(f.set, f.s[1], &f.cfg, 500);
    assert_true(healthy(f.s[1]));
    assert_int_equal(atomic_load(&f.s[1]->consec_5xx), 20);
    fx_done(&f);
}

/* A completed response: one histogram sample, the per-request EWMA sample, 5xx counted as error. */
static void test_done(void **state)
{
    struct fx f;
    fx_init(&f, 1);
    struct lb_server *s = f.s[0];
    lb_passive_done(s, 8000, 4, 1000000, 200);
    uint64_t samples = 0;
    for (size_t i = 0; i < LB_HIST_BUCKETS; i++)
        samples += atomic_load(&s->hist[i]);
    assert_int_equal(samples, 1);
    assert_true(s->ewma_us == 2000.0); /* 8 ms behind 4 requests: 2 ms each */
    assert_int_equal(s->ewma_stamp_us, 1000000);
    assert_int_equal(atomic_load(&s->errors), 0);
    lb_passive_done(s, 9000, 0, 1000001, 502); /* queued 0 counts as 1: a peak */
    assert_true(s->ewma_us == 9000.0);
    assert_int_equal(atomic_load(&s->errors), 1);
    fx_done(&f);
}

/* The budget: 10 retries to start with, percent/100 of a retry per request, at most 100 saved. */
static void test_retry_budget(void **state)
{
    struct lb_retry_budget b;
    lb_retry_budget_init(&b);
    for (int i = 0; i < 10; i++)
        assert_true(lb_retry_budget_take(&b));
    assert_false(lb_retry_budget_take(&b));
    for (int i = 0; i < 4; i++)
        lb_retry_budget_earn(&b, 20); /* 0.8 of a retry */
    assert_false(lb_retry_budget_take(&b));
    lb_retry_budget_earn(&b, 20); /* 1.0 */
    assert_true(lb_retry_budget_take(&b));
    assert_false(lb_retry_budget_take(&b));
    for (int i = 0; i < 1000; i++)
        lb_retry_budget_earn(&b, 100);
    int taken = 0;
    while (lb_retry_budget_take(&b))
        taken++;
    assert_int_equal(taken, 100);
    lb_retry_budget_earn(&b, 0);
    assert_false(lb_retry_budget_take(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_ejects), cmocka_unit_test(test_fail_off), cmocka_unit_test(test_max_eject),
        cmocka_unit_test(test_5xx_streak),  cmocka_unit_test(test_done),     cmocka_unit_test(test_retry_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
