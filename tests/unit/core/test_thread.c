/* test_thread.c — unit tests for src/core/thread.c: a thread started with thread_start has every
 * signal blocked while its creator's mask is left as it was, whatever that mask is; a condition
 * variable of thread_cond_init times out against a CLOCK_MONOTONIC deadline. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "core/thread.h"

/* The signals the daemon takes through its signalfd, and one it never uses. */
static const int checked[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR2, SIGPIPE};

static void *report_mask(void *arg)
{
    sigset_t *mask = arg;
    pthread_sigmask(SIG_SETMASK, NULL, mask);
    return NULL;
}

static void test_thread_blocks_every_signal_and_restores_the_callers_mask(void **state)
{
    sigset_t none, mine, theirs;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL); /* a creator that blocks nothing */
    pthread_t tid;
    assert_int_equal(thread_start(&tid, report_mask, &theirs), 0);
    pthread_join(tid, NULL);
    for (size_t i = 0; i < sizeof checked / sizeof checked[0]; i++)
        assert_int_equal(sigismember(&theirs, checked[i]), 1);
    pthread_sigmask(SIG_SETMASK, NULL, &mine);
    for (size_t i = 0; i < sizeof checked / sizeof checked[0]; i++)
        assert_int_equal(sigismember(&mine, checked[i]), 0);

    sigset_t one; /* a creator that blocks SIGHUP keeps exactly that */
    sigemptyset(&one);
    sigaddset(&one, SIGHUP);
    pthread_sigmask(SIG_SETMASK, &one, NULL);
    assert_int_equal(thread_start(&tid, report_mask, &theirs), 0);
    pthread_join(tid, NULL);
    assert_int_equal(sigismember(&theirs, SIGTERM), 1);
    pthread_sigmask(SIG_SETMASK, NULL, &mine);
    assert_int_equal(sigismember(&mine, SIGHUP), 1);
    assert_int_equal(sigismember(&mine, SIGTERM), 0);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
}

static void test_cond_times_out_on_the_monotonic_clock(void **state)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    thread_cond_init(&cv);
    struct timespec t0, deadline, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    deadline = t0;
    deadline.tv_nsec += 50 * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&mu);
    int rc;
    do
        rc = pthread_cond_timedwait(&cv, &mu, &deadline);
    while (rc == 0);
    pthread_mutex_unlock(&mu);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(rc, ETIMEDOUT);
    int64_t waited_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    /* a deadline read on CLOCK_REALTIME would be decades past: no wait at all */
    assert_true(waited_ms >= 49);
    pthread_cond_destroy(&cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thread_blocks_every_signal_and_restores_the_callers_mask),
        cmocka_unit_test(test_cond_times_out_on_the_monotonic_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
