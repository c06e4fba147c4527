/* test_metrics.c — unit tests for the web server's counters (src/app/metrics.c,
 * src/app/store_stats.c): slots taken until none is left, requests counted in two slots summed
 * by the scrape under their route pattern (an unknown route and an unlisted status become
 * "other"), a series absent until its first request, the handler histogram per route, store
 * calls timed per operation with their failures by kind, and no sources: no pool families'
 * samples. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "app/metrics.h"
#include "app/store.h"
#include "app/store_stats.h"
#include "http/parser.h"

static void test_slots_and_sums(void **state)
{
    struct app_metrics *m = app_metrics_create(2);
    assert_non_null(m);
    struct app_stats *a = app_metrics_slot(m), *b = app_metrics_slot(m);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_null(app_metrics_slot(m)); /* all taken */
    assert_true(((uintptr_t)a & 63) == 0 && ((uintptr_t)b & 63) == 0);
    unsigned home = ROUTER_NONE;
    for (unsigned i = 0; i < router_count(); i++)
        if (!strcmp(router_pattern(i), "/api/v1/timelines/home"))
            home = i;
    assert_int_not_equal(home, ROUTER_NONE);
    app_stats_request(a, home, HTTP_GET, 200, 300);  /* <= 0.5 ms */
    app_stats_request(b, home, HTTP_GET, 200, 2000); /* <= 2.5 ms */
    app_stats_request(b, home, HTTP_GET, 200, 2000);
    app_stats_request(a, ROUTER_NONE, HTTP_GET, 404, 10);
    app_stats_request(a, 999, HTTP_PUT, 418, 10); /* out of range: other, other, other */
    app_stats_request(b, APP_ROUTE_HEALTH, HTTP_HEAD, 200, 1);
    app_stats_request(NULL, home, HTTP_GET, 200, 1); /* no slot: nothing */
    struct store_stats *ss = app_stats_store(a);
    store_stats_end(ss, STORE_OP_home, store_stats_begin(ss), STORE_OK);
    store_stats_end(ss, STORE_OP_post_create, store_stats_begin(ss), STORE_BUSY);
    store_stats_end(ss, STORE_OP_post_create, store_stats_begin(ss), STORE_FULL);
    store_stats_end(ss, STORE_OP_post_create, store_stats_begin(ss), STORE_CONFLICT); /* the caller's */
    store_stats_end(NULL, STORE_OP_home, store_stats_begin(NULL), STORE_ERROR);
    assert_int_equal(store_stats_begin(NULL), 0);

    struct buf out = {0};
    struct app_metrics_sources src = {0};
    app_metrics_write(m, &src, &out);
    const char *t = buf_cstr(&out);
    assert_non_null(strstr(t, "\nagora_server_requests_total{route=\"/api/v1/timelines/home\",method=\"GET\","
                              "code=\"200\"} 3\n"));
    assert_non_null(strstr(t, "\nagora_server_requests_total{route=\"other\",method=\"GET\",code=\"404\"} 1\n"));
    assert_non_null(strstr(t, "\nagora_server_requests_total{route=\"other\",method=\"other\",code=\"other\"} 1\n"));
    assert_non_null(strstr(t, "\nagora_server_requests_total{route=\"/health\",method=\"HEAD\",code=\"200\"} 1\n"));
    assert_null(strstr(t, "code=\"201\"")); /* never counted: not written */
    assert_non_null(strstr(t,
                           "agora_server_handler_seconds_bucket{route=\"/api/v1/timelines/home\",le=\"0.0005\"} 1\n"
                           "agora_server_handler_seconds_bucket{route=\"/api/v1/timelines/home\",le=\"0.001\"} 1\n"
                           "agora_server_handler_seconds_bucket{route=\"/api/v1/timelines/home\",le=\"0.0025\"} 3\n"));
    assert_non_null(strstr(t, "agora_server_handler_seconds_sum{route=\"/api/v1/timelines/home\"} 0.004300\n"
                              "agora_server_handler_seconds_count{route=\"/api/v1/timelines/home\"} 3\n"));
    assert_non_null(strstr(t, "agora_server_store_seconds_count{op=\"home\"} 1\n"));
    assert_non_null(strstr(t, "agora_server_store_seconds_count{op=\"post_create\"} 3\n"));
    assert_null(strstr(t, "op=\"follow\"")); /* never called */
    assert_non_null(strstr(t, "agora_server_db_errors_total{kind=\"error\"} 0\n"
                              "agora_server_db_errors_total{kind=\"busy\"} 1\n"
                              "agora_server_db_errors_total{kind=\"full\"} 1\n"));
    /* no pools, no HTTP layer, no readiness: their families have no samples */
    assert_null(strstr(t, "agora_server_pool_busy{"));
    assert_null(strstr(t, "agora_server_db_up "));
    buf_free(&out);
    app_metrics_free(m);
    app_metrics_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_and_sums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
