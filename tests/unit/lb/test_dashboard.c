/* test_dashboard.c — unit tests for the dashboard's series and page (src/lb/dashboard.c) and the
 * event log (src/lb/events.c).
 *
 * Includes dashboard.c to drive its sampler by hand (sample() once per "second", no timer): exact
 * request counts and percentiles per point, the ring's bound of LB_SERIES_LEN points, since=,
 * servers leaving and joining the set; the state names; the compiled-in page files. Then the
 * event log: ids, the ring's bound, since=, a NULL log, long and hostile details. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>

#include "lb/dashboard.c"
#include "lb/events.h"
#include "lb_test.h"

struct fixture {
    struct lb_config cfg;
    struct lb_shared sh;
    struct lb_server *a, *b;
    struct lb_dashboard *d;
};

static void setup(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    lb_config_defaults(&f->cfg);
    f->cfg.slow_start_ms = 0;
    f->sh.cfg = &f->cfg;
    f->sh.policy = lb_policy_find("round-robin");
    f->a = new_server("http://127.0.0.1:9001");
    f->b = new_server("http://127.0.0.1:9002");
    struct lb_server *list[] = {f->a, f->b};
    lb_registry_init(&f->sh.registry, lb_set_new(list, 2, 1));
    f->d = alloc_calloc(1, sizeof(*f->d)); /* no loop, no timer: sample() is called by hand */
    f->d->sh = &f->sh;
}

static void teardown(struct fixture *f)
{
    for (size_t i = 0; i < f->d->ntracks; i++)
        track_free(f->d->tracks[i]);
    free(f->d);
    lb_registry_destroy(&f->sh.registry);
    lb_server_unref(f->a);
    lb_server_unref(f->b);
    lb_config_free(&f->cfg);
}

static json_t *series(struct fixture *f, uint64_t since)
{
    struct buf b = {0};
    lb_dashboard_series_json(f->d, since, &b);
    json_error_t e;
    json_t *j = json_loadb(buf_head(&b), buf_used(&b), 0, &e);
    if (!j)
        fail_msg("not JSON (%s): %s", e.text, buf_cstr(&b));
    buf_free(&b);
    return j;
}

static json_t *points_of(json_t *doc, size_t server)
{
    return json_object_get(json_array_get(json_object_get(doc, "servers"), server), "points");
}

static void test_points_count_exactly(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    /* second k: k requests to a (each taking k ms), none to b */
    for (unsigned k = 1; k <= 5; k++) {
        for (unsigned i = 0; i < k; i++) {
            atomic_fetch_add(&f.a->total, 1);
            lb_hist_record(f.a, k * 1000);
        }
        if (k == 3)
            atomic_fetch_add(&f.a->errors, 2);
        sample(f.d);
    }
    json_t *doc = series(&f, 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "seq")), 5);
    json_t *pa = points_of(doc, 0), *pb = points_of(doc, 1);
    assert_int_equal(json_array_size(pa), 5);
    assert_int_equal(json_array_size(pb), 5);
    for (unsigned k = 1; k <= 5; k++) {
        json_t *p = json_array_get(pa, k - 1), *q = json_array_get(pb, k - 1);
        assert_int_equal(json_integer_value(json_array_get(p, 0)), k);              /* seq */
        assert_int_equal(json_integer_value(json_array_get(p, 2)), k);              /* requests */
        assert_int_equal(json_integer_value(json_array_get(p, 7)), k == 3 ? 2 : 0); /* errors */
        /* k ms falls in a bucket whose upper bound is within 25 % above it */
        double p50 = json_real_value(json_array_get(p, 5)), p99 = json_real_value(json_array_get(p, 6));
        assert_true(p50 >= k && p50 <= k * 1.25);
        assert_true(p99 == p50);
        assert_int_equal(json_integer_value(json_array_get(q, 2)), 0);
        assert_true(json_is_null(json_array_get(q, 5)) && json_is_null(json_array_get(q, 6)));
    }
    json_t *tot = json_object_get(json_object_get(doc, "totals"), "points");
    assert_int_equal(json_array_size(tot), 5);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(tot, 4), 2)), 5);
    json_decref(doc);
    /* since: the newer points only */
    doc = series(&f, 3);
    assert_int_equal(json_array_size(points_of(doc, 0)), 2);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(points_of(doc, 0), 0), 0)), 4);
    json_decref(doc);
    doc = series(&f, 5);
    assert_int_equal(json_array_size(points_of(doc, 0)), 0);
    json_decref(doc);
    teardown(&f);
}

static void test_ring_keeps_the_last_points(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    for (unsigned k = 1; k <= LB_SERIES_LEN + 10; k++) {
        atomic_fetch_add(&f.a->total, k);
        sample(f.d);
    }
    json_t *doc = series(&f, 0);
    json_t *pa = points_of(doc, 0);
    assert_int_equal(json_array_size(pa), LB_SERIES_LEN);
    for (size_t i = 0; i < LB_SERIES_LEN; i++) {
        json_t *p = json_array_get(pa, i);
        assert_int_equal(json_integer_value(json_array_get(p, 0)), 11 + i);
        assert_int_equal(json_integer_value(json_array_get(p, 2)), 11 + i);
    }
    assert_int_equal(json_array_size(json_object_get(json_object_get(doc, "totals"), "points")), LB_SERIES_LEN);
    json_decref(doc);
    teardown(&f);
}

static void test_tracks_follow_the_set(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    sample(f.d);
    sample(f.d);
    assert_int_equal(f.d->ntracks, 2);
    int refs = atomic_load(&f.b->refs);
    lb_registry_replace(&f.sh.registry, &f.a, 1); /* b leaves */
    sample(f.d);
    assert_int_equal(f.d->ntracks, 1);
    assert_int_equal(atomic_load(&f.b->refs), refs - 2); /* neither the set nor the track holds it */
    struct lb_server *c = new_server("http://127.0.0.1:9003");
    atomic_store(&c->total, 4); /* sent before the next sample: counted in c's first point */
    struct lb_server *list[] = {f.a, c};
    lb_registry_replace(&f.sh.registry, list, 2);
    json_t *doc = series(&f, 0); /* joined since the last sample: no points yet */
    assert_int_equal(json_array_size(points_of(doc, 1)), 0);
    json_decref(doc);
    sample(f.d);
    doc = series(&f, 0);
    assert_int_equal(json_array_size(points_of(doc, 0)), 4);
    json_t *pc = points_of(doc, 1);
    assert_int_equal(json_array_size(pc), 1);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(pc, 0), 0)), 4);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(pc, 0), 2)), 4);
    json_decref(doc);
    lb_server_unref(c);
    teardown(&f);
}

static void test_states(void **state)
{
    (void)state;
    struct lb_server *s = new_server("http://127.0.0.1:9001");
    atomic_store(&s->up_since_ms, 1000);
    assert_string_equal(lb_dashboard_state(s, 1500, 1000), "slow start");
    assert_string_equal(lb_dashboard_state(s, 2000, 1000), "up");
    assert_string_equal(lb_dashboard_state(s, 1500, 0), "up");
    atomic_store(&s->healthy, 0);
    assert_string_equal(lb_dashboard_state(s, 2000, 1000), "down");
    atomic_store(&s->ejected_until_ms, 3000);
    assert_string_equal(lb_dashboard_state(s, 2000, 1000), "ejected");
    assert_string_equal(lb_dashboard_state(s, 3000, 1000), "down");
    atomic_store(&s->admin, LB_ADMIN_DRAINING);
    assert_string_equal(lb_dashboard_state(s, 2000, 1000), "draining");
    atomic_store(&s->admin, LB_ADMIN_PARKED);
    assert_string_equal(lb_dashboard_state(s, 2000, 1000), "parked");
    lb_server_unref(s);
}

static void test_page_files(void **state)
{
    (void)state;
    const char *type, *data;
    size_t len;
    assert_int_equal(lb_dashboard_file("/dashboard", 10, &type, &data, &len), 1);
    assert_string_equal(type, "text/html; charset=utf-8");
    assert_true(len > 100 && !memcmp(data, "<!doctype html>", 15));
    assert_int_equal(lb_dashboard_file("/dashboard/dashboard.js", 23, &type, &data, &len), 1);
    assert_string_equal(type, "text/javascript; charset=utf-8");
    assert_true(len > 1000 && !memcmp(data, "// dashboard.js", 15));
    assert_int_equal(lb_dashboard_file("/dashboard/x", 12, &type, &data, &len), 0);
    assert_int_equal(lb_dashboard_file("/dashboardx", 11, &type, &data, &len), 0);
    assert_int_equal(lb_dashboard_file("/dashboard/dashboard.js", 22, &type, &data, &len), 0); /* a prefix */
}

static json_t *events(struct lb_events *ev, uint64_t since, unsigned limit)
{
    struct buf b = {0};
    lb_events_json(ev, since, limit, &b);
    json_error_t e;
    json_t *j = json_loadb(buf_head(&b), buf_used(&b), 0, &e);
    if (!j)
        fail_msg("not JSON (%s): %s", e.text, buf_cstr(&b));
    buf_free(&b);
    return j;
}

static void test_event_ring(void **state)
{
    (void)state;
    lb_events_add(NULL, LB_EV_UP, "x", "nothing happens"); /* no log: a no-op */
    struct lb_events *ev = lb_events_new();
    json_t *j = events(ev, 0, LB_EVENTS_MAX);
    assert_int_equal(json_integer_value(json_object_get(j, "first")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "last")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "events")), 0);
    json_decref(j);
    for (int i = 1; i <= LB_EVENTS_MAX + 44; i++)
        lb_events_add(ev, LB_EV_WEIGHT, "127.0.0.1:1", "%d", i);
    j = events(ev, 0, LB_EVENTS_MAX);
    assert_int_equal(json_integer_value(json_object_get(j, "first")), 45);
    assert_int_equal(json_integer_value(json_object_get(j, "last")), LB_EVENTS_MAX + 44);
    json_t *list = json_object_get(j, "events");
    assert_int_equal(json_array_size(list), LB_EVENTS_MAX);
    for (size_t i = 0; i < LB_EVENTS_MAX; i++) {
        json_t *e = json_array_get(list, i);
        char want[16];
        snprintf(want, sizeof(want), "%zu", 45 + i);
        assert_int_equal(json_integer_value(json_object_get(e, "id")), 45 + i);
        assert_string_equal(json_string_value(json_object_get(e, "detail")), want);
        assert_string_equal(json_string_value(json_object_get(e, "kind")), "weight");
    }
    json_decref(j);
    j = events(ev, 290, 3); /* since and limit: the oldest three after 290 */
    list = json_object_get(j, "events");
    assert_int_equal(json_array_size(list), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 0), "id")), 291);
    json_decref(j);
    j = events(ev, LB_EVENTS_MAX + 44, LB_EVENTS_MAX);
    assert_int_equal(json_array_size(json_object_get(j, "events")), 0);
    json_decref(j);
    lb_events_free(ev);
}

static void test_event_details_are_bounded_and_escaped(void **state)
{
    (void)state;
    struct lb_events *ev = lb_events_new();
    char long_detail[400];
    memset(long_detail, 'x', sizeof(long_detail) - 1);
    long_detail[sizeof(long_detail) - 1] = '\0';
    lb_events_add(ev, LB_EV_DOWN, "127.0.0.1:1", "%s", long_detail);
    lb_events_add(ev, LB_EV_RELOAD, NULL, "quote \" backslash \\ newline \n bad byte \xff");
    json_t *j = events(ev, 0, LB_EVENTS_MAX);
    json_t *list = json_object_get(j, "events");
    assert_int_equal(strlen(json_string_value(json_object_get(json_array_get(list, 0), "detail"))), 159);
    json_t *e = json_array_get(list, 1);
    assert_string_equal(json_string_value(json_object_get(e, "server")), "");
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "reload");
    assert_string_equal(json_string_value(json_object_get(e, "detail")),
                        "quote \" backslash \\ newline \n bad byte \xef\xbf\xbd");
    json_decref(j);
    lb_events_free(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_points_count_exactly),
        cmocka_unit_test(test_ring_keeps_the_last_points),
        cmocka_unit_test(test_tracks_follow_the_set),
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_page_files),
        cmocka_unit_test(test_event_ring),
        cmocka_unit_test(test_event_details_are_bounded_and_escaped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
