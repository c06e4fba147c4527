/* test_ready.c — the cached readiness state behind /health (app/ready.h) on a real SQLite file:
 * ready at start, unready within `fresh` once the database file is renamed away (the SQLite
 * ping checks that the file at its path is still the one open), ready again by itself once it
 * is back; a database that does not open fails the start. Short intervals keep it quick. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "app/ready.h"
#include "app/store.h"

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (bounded: 100 naps of 20 ms) until app_ready_ok(r) == want; returns the naps taken, or
 * -1. */
static int wait_ready(struct app_ready *r, int want)
{
    for (int i = 0; i < 100; i++) {
        if (app_ready_ok(r) == want)
            return i;
        nap_ms(20);
    }
    return -1;
}

static void test_unready_while_the_file_is_away(void **state)
{
    char dir[] = "/tmp/agora-ready-XXXXXX", path[128], away[140], url[160], err[256] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    snprintf(away, sizeof away, "%s/t.db.away", dir);
    snprintf(url, sizeof url, "sqlite:%s", path);
    struct store *st = store_open(url, NULL, err, sizeof err); /* makes the schema */
    assert_non_null(st);
    store_close(st);
    struct app_ready *r = app_ready_start(url, 50, 300, err, sizeof err);
    if (r == NULL)
        fail_msg("app_ready_start: %s", err);
    assert_int_equal(app_ready_ok(r), 1);
    assert_int_equal(rename(path, away), 0);
    int naps = wait_ready(r, 0);
    assert_true(naps >= 0);
    assert_int_equal(rename(away, path), 0);
    assert_true(wait_ready(r, 1) >= 0);
    nap_ms(400); /* longer than fresh: the pinger keeps it ready */
    assert_int_equal(app_ready_ok(r), 1);
    app_ready_stop(r);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_start_fails_without_a_database(void **state)
{
    char err[256] = "";
    assert_null(app_ready_start("sqlite:/nonexistent-dir/x/t.db", 0, 0, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
    assert_null(app_ready_start("nosuch:thing", 0, 0, err, sizeof err));
    app_ready_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unready_while_the_file_is_away),
        cmocka_unit_test(test_start_fails_without_a_database),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
