/* replica.c — read replicas with read-your-writes; see replica.h (the rules) and store.h
 * (store_position, store_replay).
 *
 * Shared state: the monitor writes state, replayed, received, lag_us and checked_us (atomics),
 * handler threads read them, and write `written` (an atomic maximum) and `want` (a check asked
 * for). mu and cv only wake the monitor (a handler signals when it turned want from 0 to 1, so at
 * most once per check) and stop it. The ring of first-seen positions is the monitor's alone. */
#include "app/replica.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/api.h"
#include "app/metrics.h"
#include "app/req.h"
#include "app/store.h"
#include "core/alloc.h"
#include "core/thread.h"

enum { DOWN, UP, LAGGING };

#define RING 256 /* positions noted with the time first seen (lag measurement) */

struct app_replica {
    char *url;
    char *primary_url; /* the watcher's (NULL: no watcher) */
    int64_t max_lag_us;
    _Atomic int state;
    _Atomic uint64_t replayed, received, written;
    _Atomic int64_t checked_us; /* when the last successful check ended; 0: none yet */
    _Atomic int64_t lag_us;
    _Atomic uint64_t checks;
    atomic_int want; /* a read asked for a check */
    pthread_t tid, wtid;
    pthread_mutex_t mu;
    pthread_cond_t cv, wcv; /* wake the monitor; wake the watcher (to stop) */
    int stop, watching;
    struct store *pstore; /* the watcher's own: the primary */
    /* the monitor's own */
    struct store *store;
    struct {
        uint64_t pos;
        int64_t t;
    } ring[RING];
    unsigned first, n;
    int64_t unstreamed_us; /* since when the replica has not been streaming (0: it is) */
    int shown;             /* the state last logged, -1 none */
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* ---- positions ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses 1-8 hex digits of s[0, n) into *v. */
static int hex32(const char *s, size_t n, uint64_t *v)
{
    if (n < 1 || n > 8)
        return 0;
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = hexval(s[i]);
        if (d < 0)
            return 0;
        *v = *v << 4 | (uint64_t)d;
    }
    return 1;
}

int app_replica_parse(const char *s, size_t n, uint64_t *pos)
{
    uint64_t hi, lo;
    const char *slash = n <= APP_REPLICA_POS_MAX ? memchr(s, '/', n) : NULL;
    if (slash == NULL || !hex32(s, (size_t)(slash - s), &hi) || !hex32(slash + 1, n - (size_t)(slash - s) - 1, &lo))
        return 0;
    *pos = hi << 32 | lo;
    return 1;
}

void app_replica_format(uint64_t pos, char out[APP_REPLICA_POS_MAX])
{
    snprintf(out, APP_REPLICA_POS_MAX, "%" PRIX32 "/%" PRIX32, (uint32_t)(pos >> 32), (uint32_t)pos);
}

uint64_t app_replica_request_position(const struct http_head *h)
{
    uint64_t best = 0, p;
    struct http_str c;
    const struct http_str *v = req_header(h, APP_REPLICA_HEADER);
    if (v != NULL && app_replica_parse(v->p, v->n, &p))
        best = p;
    if (req_cookie(h, APP_REPLICA_COOKIE, &c) && app_replica_parse(c.p, c.n, &p))
        best = max_u64(best, p);
    return best;
}

/* ---- routing (any thread) ---- */

static void ask_check(struct app_replica *r)
{
    if (atomic_load_explicit(&r->want, memory_order_relaxed) || atomic_exchange(&r->want, 1))
        return; /* asked already: one wake-up per check */
    pthread_mutex_lock(&r->mu);
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

enum app_read app_replica_route(struct app_replica *r, uint64_t pos)
{
    int64_t checked = atomic_load(&r->checked_us);
    int state = atomic_load(&r->state);
    if (state == DOWN || checked == 0 || now_us() - checked > APP_REPLICA_STALE_MS * 1000LL)
        return APP_READ_DOWN;
    if (state == LAGGING)
        return APP_READ_LAGGING;
    if (pos == 0 || pos <= atomic_load(&r->replayed))
        return APP_READ_REPLICA;
    /* not replayed as far as the cache knows: a check helps only for a position known to exist */
    if (pos <= max_u64(atomic_load(&r->received), atomic_load(&r->written)))
        ask_check(r);
    return APP_READ_POSITION;
}

void app_replica_wrote(struct app_replica *r, uint64_t pos)
{
    uint64_t cur = atomic_load_explicit(&r->written, memory_order_relaxed);
    while (pos > cur && !atomic_compare_exchange_weak(&r->written, &cur, pos))
        ;
}

void app_replica_status(const struct app_replica *r, struct app_replica_status *out)
{
    int64_t checked = atomic_load(&r->checked_us);
    int state = atomic_load(&r->state);
    int fresh = checked != 0 && now_us() - checked <= APP_REPLICA_STALE_MS * 1000LL;
    out->up = fresh && state == UP;
    out->lagging = fresh && state == LAGGING;
    out->lag_ms = atomic_load(&r->lag_us) / 1000;
    out->replayed = atomic_load(&r->replayed);
    out->checks = atomic_load(&r->checks);
}

/* ---- the handler thread's side ---- */

/* This thread's replica connection, opened on first use; NULL when it cannot be had now. */
static struct store *thread_store(struct app *app)
{
    int64_t now = now_us();
    if (now < app->replica_retry_us)
        return NULL;
    if (app->replica_store != NULL)
        return app->replica_store;
    char err[256];
    struct store_options so = {
        .fanout_limit = app->store->fanout_limit, .session_ttl_ms = app->store->session_ttl_ms, .replica = 1};
    app->replica_store = store_open(app->replica->url, &so, err, sizeof err);
    if (app->replica_store == NULL) {
        fprintf(stderr, "agora: cannot connect to the replica (reads go to the primary): %s\n", err);
        app->replica_retry_us = now + APP_REPLICA_RETRY_MS * 1000LL;
        return NULL;
    }
    app->replica_store->stats = app->store->stats;
    return app->replica_store;
}

/* 1 when the replica's answer is asked again from the primary (replica.h). */
static int redo(int status) { return status == 401 || status == 404 || status >= 500; }

unsigned app_replica_read(struct api *a, unsigned (*run)(struct api *a))
{
    struct app *app = a->app;
    enum app_read why = app_replica_route(app->replica, app_replica_request_position(a->head));
    struct store *rs = why == APP_READ_REPLICA ? thread_store(app) : NULL;
    if (why == APP_READ_REPLICA && rs == NULL)
        why = APP_READ_DOWN;
    if (rs == NULL) {
        app_stats_read(app->stats, why);
        return run(a);
    }
    /* the handler reads app->store: the replica's for this run (the thread's own app) */
    struct api fresh = *a;
    size_t headers = a->resp->headers.len;
    struct store *primary = app->store;
    app->store = rs;
    unsigned route = run(a);
    app->store = primary;
    if (!redo(a->resp->status)) {
        app_stats_read(app->stats, APP_READ_REPLICA);
        return route;
    }
    if (a->resp->status >= 500) { /* the replica failed: this thread keeps off it for a while */
        app->replica_retry_us = now_us() + APP_REPLICA_RETRY_MS * 1000LL;
        ask_check(app->replica);
    }
    *a = fresh; /* as before the first run: nothing of its answer stays */
    a->resp->status = 200;
    a->resp->headers.len = headers;
    buf_reset(&a->resp->body);
    app_stats_read(app->stats, APP_READ_FALLBACK);
    return run(a);
}

void app_replica_after_write(struct api *a)
{
    uint64_t pos;
    char text[APP_REPLICA_POS_MAX];
    if (a->resp->status >= 400 || store_position(a->app->store, &pos) != STORE_OK)
        return;
    app_replica_wrote(a->app->replica, pos);
    app_replica_format(pos, text);
    http_response_header(a->resp, APP_REPLICA_HEADER, "%s", text);
    http_response_header(a->resp, "Set-Cookie", "%s=%s; Max-Age=%d; Path=/; HttpOnly; SameSite=Lax", APP_REPLICA_COOKIE,
                         text, APP_REPLICA_COOKIE_AGE);
}

/* ---- the monitor ---- */

static const char *const state_name[] = {"down", "up", "lagging"};

static void set_state(struct app_replica *r, int state, const char *why)
{
    atomic_store(&r->state, state);
    if (state == r->shown)
        return;
    r->shown = state;
    if (state == DOWN)
        fprintf(stderr, "agora: replica down (reads go to the primary): %s\n", why);
    else
        fprintf(stderr, "agora: replica %s: %s\n", state_name[state], why);
}

/* Notes pos as seen at now (when it is new) and drops what the replica has replayed. Returns the
 * age of the oldest position not replayed (µs), 0 when none. */
static int64_t lag_of(struct app_replica *r, uint64_t seen, uint64_t replayed, int64_t now)
{
    unsigned last = (r->first + r->n - 1) % RING;
    if (seen > replayed && (r->n == 0 || seen > r->ring[last].pos)) {
        if (r->n == RING) {
            r->ring[last].pos = seen; /* full: the newest entry grows (its time stays: lag over- not under-stated) */
        } else {
            last = (r->first + r->n++) % RING;
            r->ring[last].pos = seen;
            r->ring[last].t = now;
        }
    }
    while (r->n > 0 && r->ring[r->first].pos <= replayed) {
        r->first = (r->first + 1) % RING;
        r->n--;
    }
    return r->n > 0 ? now - r->ring[r->first].t : 0;
}

static void check(struct app_replica *r)
{
    char err[256], why[200];
    struct store_replay rp;
    atomic_fetch_add(&r->checks, 1);
    if (r->store == NULL) {
        struct store_options so = {.replica = 1};
        if ((r->store = store_open(r->url, &so, err, sizeof err)) == NULL) {
            set_state(r, DOWN, err);
            return;
        }
    }
    int rc = store_replay(r->store, &rp);
    int64_t now = now_us();
    if (rc != STORE_OK) {
        set_state(r, DOWN, store_errmsg(r->store));
        return;
    }
    if (!rp.standby) { /* promoted, or the URL names a primary: not the primary's copy any more */
        set_state(r, DOWN, "the database is not a standby (not in recovery)");
        return;
    }
    int64_t lag = lag_of(r, max_u64(rp.received, atomic_load(&r->written)), rp.replayed, now);
    if (rp.streaming)
        r->unstreamed_us = 0;
    else if (r->unstreamed_us == 0)
        r->unstreamed_us = now;
    if (r->unstreamed_us != 0 && now - r->unstreamed_us > lag)
        lag = now - r->unstreamed_us;
    atomic_store(&r->replayed, rp.replayed);
    atomic_store(&r->received, rp.received);
    atomic_store(&r->lag_us, lag);
    atomic_store(&r->checked_us, now);
    snprintf(why, sizeof why, "%.3f s behind (bound %.3f s)%s", (double)lag / 1e6, (double)r->max_lag_us / 1e6,
             rp.streaming ? "" : ", not streaming from its primary");
    set_state(r, lag > r->max_lag_us ? LAGGING : UP, why);
}

static void *monitor(void *arg)
{
    struct app_replica *r = arg;
    int64_t last = 0;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        int state = atomic_load(&r->state);
        int64_t next = last + (state == DOWN ? APP_REPLICA_RETRY_MS : APP_REPLICA_CHECK_MS) * 1000LL;
        if (atomic_load(&r->want) && state == UP && last + APP_REPLICA_GAP_US < next)
            next = last + APP_REPLICA_GAP_US;
        int64_t now = now_us();
        if (now < next) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            int64_t ns = until.tv_nsec + (next - now) * 1000;
            until.tv_sec += ns / 1000000000;
            until.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&r->cv, &r->mu, &until); /* woken: by a read's ask, or to stop */
            continue;
        }
        atomic_store(&r->want, 0);
        pthread_mutex_unlock(&r->mu);
        check(r);
        last = now_us();
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* The watcher: notes the primary's flushed position every APP_REPLICA_CHECK_MS as a position seen
 * (app_replica_wrote), so that lag shows even on a server that writes nothing itself while the
 * replica's stream stalls with its connection open (the standby then still says it streams, and
 * its received position stops). Its own thread and connection: a primary that does not answer
 * (a failover) delays only the watcher, never the replica's checks. */
static void *watcher(void *arg)
{
    struct app_replica *r = arg;
    char err[256];
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        struct store_replay rp;
        if (r->pstore == NULL) {
            struct store_options so = {.replica = 1}; /* no migration: only asks where the WAL is */
            r->pstore = store_open(r->primary_url, &so, err, sizeof err);
        }
        if (r->pstore != NULL && store_replay(r->pstore, &rp) == STORE_OK && !rp.standby && rp.current > 0)
            app_replica_wrote(r, rp.current);
        int pause_ms = r->pstore != NULL ? APP_REPLICA_CHECK_MS : APP_REPLICA_RETRY_MS;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t ns = until.tv_nsec + (int64_t)pause_ms * 1000000;
        until.tv_sec += ns / 1000000000;
        until.tv_nsec = ns % 1000000000;
        pthread_mutex_lock(&r->mu);
        if (!r->stop)
            pthread_cond_timedwait(&r->wcv, &r->mu, &until);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct app_replica *app_replica_start(const char *url, const char *primary_url, int64_t max_lag_ms, char *err,
                                      size_t errlen)
{
    if (url == NULL || (strncmp(url, "postgres://", 11) != 0 && strncmp(url, "postgresql://", 13) != 0)) {
        snprintf(err, errlen, "a read replica must be PostgreSQL (postgres://... or postgresql://...)");
        return NULL;
    }
    struct app_replica *r = alloc_calloc(1, sizeof *r);
    r->url = alloc_strdup(url);
    r->max_lag_us = (max_lag_ms > 0 ? max_lag_ms : APP_REPLICA_MAX_LAG_MS) * 1000;
    r->shown = -1;
    thread_cond_init(&r->cv);
    thread_cond_init(&r->wcv);
    pthread_mutex_init(&r->mu, NULL);
    int e = thread_start(&r->tid, monitor, r); /* takes no signals: the daemon's signalfd does */
    if (e != 0) {
        snprintf(err, errlen, "cannot start the replica's monitor: %s", strerror(e));
        pthread_cond_destroy(&r->cv);
        pthread_cond_destroy(&r->wcv);
        pthread_mutex_destroy(&r->mu);
        free(r->url);
        free(r);
        return NULL;
    }
    if (primary_url != NULL) {
        r->primary_url = alloc_strdup(primary_url);
        if ((e = thread_start(&r->wtid, watcher, r)) != 0) {
            snprintf(err, errlen, "cannot start the replica's watcher of the primary: %s", strerror(e));
            app_replica_stop(r);
            return NULL;
        }
        r->watching = 1;
    }
    return r;
}

void app_replica_stop(struct app_replica *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_cond_signal(&r->wcv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->tid, NULL);
    if (r->watching)
        pthread_join(r->wtid, NULL);
    store_close(r->store);
    store_close(r->pstore);
    free(r->primary_url);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->wcv);
    pthread_mutex_destroy(&r->mu);
    free(r->url);
    free(r);
}
