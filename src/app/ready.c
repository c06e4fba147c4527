/* ready.c — the pinging thread behind /health; see ready.h.
 *
 * last_ok_us (CLOCK_MONOTONIC, µs) is written by the pinger and read by the loops; nothing else
 * is shared but the stop flag, under mu. */
#include "app/ready.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/store.h"
#include "core/alloc.h"
#include "core/thread.h"

struct app_ready {
    struct store *store;
    unsigned interval_ms, fresh_ms;
    _Atomic uint64_t last_ok_us;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* stop */
    int stop;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void *pinger(void *arg)
{
    struct app_ready *r = arg;
    int was_ok = 1;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += r->interval_ms / 1000;
        until.tv_nsec += (long)(r->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) != ETIMEDOUT)
            ;
        if (r->stop)
            break;
        pthread_mutex_unlock(&r->mu);
        int ok = store_ping(r->store) == STORE_OK;
        if (ok)
            atomic_store(&r->last_ok_us, now_us());
        if (ok != was_ok)
            fprintf(stderr, ok ? "agora: the database answers again%s\n" : "agora: health check failed: %s\n",
                    ok ? "" : store_errmsg(r->store));
        was_ok = ok;
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct app_ready *app_ready_start(const char *db_url, unsigned interval_ms, unsigned fresh_ms, char *err, size_t errlen)
{
    struct app_ready *r = alloc_calloc(1, sizeof(*r));
    r->interval_ms = interval_ms ? interval_ms : APP_READY_INTERVAL_MS;
    r->fresh_ms = fresh_ms ? fresh_ms : APP_READY_FRESH_MS;
    if ((r->store = store_open(db_url, NULL, err, errlen)) == NULL)
        goto fail;
    if (store_ping(r->store) != STORE_OK) {
        snprintf(err, errlen, "the database does not answer: %s", store_errmsg(r->store));
        goto fail;
    }
    atomic_store(&r->last_ok_us, now_us());
    pthread_mutex_init(&r->mu, NULL);
    thread_cond_init(&r->cv);
    int rc = thread_start(&r->tid, pinger, r); /* takes no signals: the daemon's signalfd does */
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the readiness thread: %s", strerror(rc));
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        goto fail;
    }
    return r;
fail:
    store_close(r->store);
    free(r);
    return NULL;
}

int app_ready_ok(const struct app_ready *r)
{
    uint64_t last = atomic_load(&((struct app_ready *)r)->last_ok_us);
    return now_us() - last < (uint64_t)r->fresh_ms * 1000u;
}

uint64_t app_ready_age_us(const struct app_ready *r)
{
    uint64_t last = atomic_load(&((struct app_ready *)r)->last_ok_us), now = now_us();
    return now > last ? now - last : 0;
}

void app_ready_stop(struct app_ready *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->tid, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    store_close(r->store);
    free(r);
}
