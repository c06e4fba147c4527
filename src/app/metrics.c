/* metrics.c — the web server's /metrics; see metrics.h. */
#include "app/metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/ready.h"
#include "app/replica.h"
#include "app/store_stats.h"
#include "core/prom.h"
#include "http/parser.h"
#include "http/pool.h"
#include "http/server.h"

/* The statuses the application answers with; any other is counted as "other" (index 0). */
static const int codes[] = {0, 200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503, 507};
#define NCODES (sizeof codes / sizeof codes[0])
static const char *const methods[] = {"GET", "HEAD", "POST", "DELETE", "other"};
#define NMETHODS 5

/* One thread's counters: written by that thread only (bump), read by the scrape. The alignment
 * keeps two threads' slots off each other's cache lines. */
struct app_stats {
    _Alignas(64) atomic_uint_fast64_t requests[APP_ROUTES][NMETHODS][NCODES];
    atomic_uint_fast64_t hist[APP_ROUTES][PROM_BUCKETS]; /* app_handle's time, per bucket */
    atomic_uint_fast64_t sum_us[APP_ROUTES];
    struct store_stats store;
    atomic_uint_fast64_t reads[APP_READ_N]; /* read requests by where they went (replica.h) */
};

struct app_metrics {
    unsigned nslots;
    atomic_uint next;
    struct app_stats *slots;
};

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* One writer: a relaxed load and store, no locked add. */
static void bump(atomic_uint_fast64_t *c, uint64_t n) { atomic_store_explicit(c, LOAD(*c) + n, memory_order_relaxed); }

struct app_metrics *app_metrics_create(unsigned nslots)
{
    struct app_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nslots = nslots;
    m->slots = aligned_alloc(_Alignof(struct app_stats), (nslots ? nslots : 1) * sizeof(struct app_stats));
    if (!m->slots) {
        free(m);
        return NULL;
    }
    memset(m->slots, 0, (nslots ? nslots : 1) * sizeof(struct app_stats));
    return m;
}

void app_metrics_free(struct app_metrics *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

struct app_stats *app_metrics_slot(struct app_metrics *m)
{
    unsigned i = atomic_fetch_add(&m->next, 1);
    return i < m->nslots ? &m->slots[i] : NULL;
}

struct store_stats *app_stats_store(struct app_stats *s) { return s ? &s->store : NULL; }

static unsigned code_index(int status)
{
    for (unsigned i = 1; i < NCODES; i++)
        if (codes[i] == status)
            return i;
    return 0;
}

static unsigned method_index(int method)
{
    switch (method) {
    case HTTP_GET:
        return 0;
    case HTTP_HEAD:
        return 1;
    case HTTP_POST:
        return 2;
    case HTTP_DELETE:
        return 3;
    default:
        return 4;
    }
}

void app_stats_request(struct app_stats *s, unsigned route, int method, int status, uint64_t us)
{
    if (!s)
        return;
    if (route >= APP_ROUTES)
        route = APP_ROUTE_OTHER;
    bump(&s->requests[route][method_index(method)][code_index(status)], 1);
    bump(&s->hist[route][prom_bucket(us)], 1);
    bump(&s->sum_us[route], us);
}

void app_stats_read(struct app_stats *s, unsigned why)
{
    if (s && why < APP_READ_N)
        bump(&s->reads[why], 1);
}

static const char *route_name(unsigned r)
{
    if (r == APP_ROUTE_HEALTH)
        return "/health";
    if (r == APP_ROUTE_STATIC)
        return "static";
    const char *p = router_pattern(r);
    return p ? p : "other";
}

/* The routes in the order written: the table's, then other, /health, static. */
static unsigned route_at(unsigned k)
{
    unsigned n = router_count();
    return k < n ? k : k == n ? APP_ROUTE_OTHER : k == n + 1 ? APP_ROUTE_HEALTH : APP_ROUTE_STATIC;
}

static void requests(struct app_metrics *m, struct buf *out, struct buf *lab)
{
    unsigned used = atomic_load(&m->next) < m->nslots ? atomic_load(&m->next) : m->nslots;
    prom_family(out, "agora_server_requests_total", "counter",
                "Requests the application answered, by route (the route table's pattern; other: an unknown API "
                "path; static: the UI's files), method and status.");
    for (unsigned k = 0; k < router_count() + 3; k++) {
        unsigned r = route_at(k);
        for (unsigned me = 0; me < NMETHODS; me++)
            for (unsigned c = 0; c < NCODES; c++) {
                uint64_t v = 0;
                for (unsigned i = 0; i < used; i++)
                    v += LOAD(m->slots[i].requests[r][me][c]);
                if (!v)
                    continue; /* a series appears with its first request */
                buf_reset(lab);
                buf_puts(lab, "route=\"");
                prom_label_value(lab, route_name(r));
                if (codes[c])
                    buf_printf(lab, "\",method=\"%s\",code=\"%d\"", methods[me], codes[c]);
                else
                    buf_printf(lab, "\",method=\"%s\",code=\"other\"", methods[me]);
                prom_sample(out, "agora_server_requests_total", buf_cstr(lab), v);
            }
    }
    prom_family(out, "agora_server_handler_seconds", "histogram",
                "Time the application took to answer a request (on its handler, hashing or event-loop thread), by "
                "route, in seconds.");
    for (unsigned k = 0; k < router_count() + 3; k++) {
        unsigned r = route_at(k);
        uint64_t counts[PROM_BUCKETS] = {0}, sum = 0, total = 0;
        for (unsigned i = 0; i < used; i++) {
            for (unsigned b = 0; b < PROM_BUCKETS; b++)
                counts[b] += LOAD(m->slots[i].hist[r][b]);
            sum += LOAD(m->slots[i].sum_us[r]);
        }
        for (unsigned b = 0; b < PROM_BUCKETS; b++)
            total += counts[b];
        if (!total)
            continue;
        buf_reset(lab);
        buf_puts(lab, "route=\"");
        prom_label_value(lab, route_name(r));
        buf_puts(lab, "\"");
        prom_histogram(out, "agora_server_handler_seconds", buf_cstr(lab), counts, sum);
    }
    prom_family(out, "agora_server_store_seconds", "histogram",
                "Time of the database calls, by store operation, in seconds.");
    uint64_t fails[STORE_FAIL_N] = {0};
    for (unsigned op = 0; op < STORE_OP_N; op++) {
        uint64_t counts[PROM_BUCKETS] = {0}, sum = 0, total = 0;
        for (unsigned i = 0; i < used; i++) {
            for (unsigned b = 0; b < PROM_BUCKETS; b++)
                counts[b] += LOAD(m->slots[i].store.hist[op][b]);
            sum += LOAD(m->slots[i].store.sum_us[op]);
        }
        for (unsigned b = 0; b < PROM_BUCKETS; b++)
            total += counts[b];
        if (!total)
            continue;
        buf_reset(lab);
        buf_printf(lab, "op=\"%s\"", store_stats_op_name(op));
        prom_histogram(out, "agora_server_store_seconds", buf_cstr(lab), counts, sum);
    }
    for (unsigned i = 0; i < used; i++)
        for (unsigned k = 0; k < STORE_FAIL_N; k++)
            fails[k] += LOAD(m->slots[i].store.fails[k]);
    prom_family(out, "agora_server_db_errors_total", "counter",
                "Database calls that failed, by kind: error (unexpected), busy (locked through every retry), full "
                "(the database or its disk is full).");
    prom_sample(out, "agora_server_db_errors_total", "kind=\"error\"", fails[STORE_FAIL_ERROR]);
    prom_sample(out, "agora_server_db_errors_total", "kind=\"busy\"", fails[STORE_FAIL_BUSY]);
    prom_sample(out, "agora_server_db_errors_total", "kind=\"full\"", fails[STORE_FAIL_FULL]);
}

static void pools(const struct app_metrics_sources *src, struct buf *out)
{
    struct {
        const char *labels;
        struct http_pool *p;
        struct http_pool_stats st;
    } ps[2] = {{"pool=\"handler\"", src->pool, {0}}, {"pool=\"hashing\"", src->hash_pool, {0}}};
    for (int i = 0; i < 2; i++)
        if (ps[i].p)
            http_pool_stats(ps[i].p, &ps[i].st);
#define EACH_POOL(name, type, help, expr)                                                                              \
    do {                                                                                                               \
        prom_family(out, name, type, help);                                                                            \
        for (int i_ = 0; i_ < 2; i_++)                                                                                 \
            if (ps[i_].p) {                                                                                            \
                const struct http_pool_stats *st = &ps[i_].st;                                                         \
                prom_sample(out, name, ps[i_].labels, (uint64_t)(expr));                                               \
            }                                                                                                          \
    } while (0)
    EACH_POOL("agora_server_pool_threads", "gauge",
              "Threads of the pool (handler: API requests; hashing: sign-ups and log-ins, one password hash each).",
              st->threads);
    EACH_POOL("agora_server_pool_busy", "gauge", "Threads of the pool running a request now.", st->running);
    EACH_POOL("agora_server_pool_queued", "gauge", "Requests waiting for a thread of the pool now.", st->queued);
    EACH_POOL("agora_server_pool_queue_limit", "gauge", "Requests that may wait for a thread of the pool; beyond, 503.",
              st->max_queue);
    prom_family(out, "agora_server_pool_refusals_total", "counter",
                "Requests answered 503 by the pool: its queue was full, or no thread took them in time.");
    char lab[64];
    for (int i = 0; i < 2; i++) {
        if (!ps[i].p)
            continue;
        snprintf(lab, sizeof(lab), "%s,reason=\"queue_full\"", ps[i].labels);
        prom_sample(out, "agora_server_pool_refusals_total", lab, ps[i].st.full);
        snprintf(lab, sizeof(lab), "%s,reason=\"wait_timeout\"", ps[i].labels);
        prom_sample(out, "agora_server_pool_refusals_total", lab, ps[i].st.expired);
    }
    prom_family(out, "agora_server_pool_queue_wait_seconds", "histogram",
                "Time a request waited for a thread of the pool (queued to picked up), of those that ran, in "
                "seconds.");
    for (int i = 0; i < 2; i++)
        if (ps[i].p)
            prom_histogram(out, "agora_server_pool_queue_wait_seconds", ps[i].labels, ps[i].st.wait_hist,
                           ps[i].st.wait_sum_us);
#undef EACH_POOL
}

/* The read replica: where reads went and why, and its state as the monitor last saw it. */
static void replica(struct app_metrics *m, const struct app_replica *r, struct buf *out)
{
    static const char *const labels[APP_READ_N] = {
        [APP_READ_REPLICA] = "db=\"replica\",reason=\"ok\"",
        [APP_READ_POSITION] = "db=\"primary\",reason=\"position\"",
        [APP_READ_DOWN] = "db=\"primary\",reason=\"down\"",
        [APP_READ_LAGGING] = "db=\"primary\",reason=\"lagging\"",
        [APP_READ_FALLBACK] = "db=\"primary\",reason=\"fallback\"",
    };
    unsigned used = atomic_load(&m->next) < m->nslots ? atomic_load(&m->next) : m->nslots;
    struct app_replica_status st;
    app_replica_status(r, &st);
    prom_family(out, "agora_server_reads_total", "counter",
                "Read requests (GET, HEAD of the API) by the database that answered them: the replica, or the "
                "primary and why (position: the client's last write was not replayed yet; down: the replica does "
                "not answer; lagging: it lags beyond the bound; fallback: the replica failed or answered 401/404 "
                "and the primary was asked again).");
    for (unsigned k = 0; k < APP_READ_N; k++) {
        uint64_t v = 0;
        for (unsigned i = 0; i < used; i++)
            v += LOAD(m->slots[i].reads[k]);
        prom_sample(out, "agora_server_reads_total", labels[k], v);
    }
    prom_family(out, "agora_server_replica_up", "gauge",
                "Whether reads may go to the replica now (1): it answered lately, is a standby, within the lag bound.");
    prom_sample(out, "agora_server_replica_up", NULL, (uint64_t)st.up);
    prom_family(out, "agora_server_replica_lagging", "gauge", "Whether the replica answers but lags beyond the bound.");
    prom_sample(out, "agora_server_replica_lagging", NULL, (uint64_t)st.lagging);
    prom_family(out, "agora_server_replica_lag_seconds", "gauge", "The replica's lag as last measured, in seconds.");
    prom_sample_seconds(out, "agora_server_replica_lag_seconds", NULL,
                        (uint64_t)(st.lag_ms > 0 ? st.lag_ms : 0) * 1000);
    prom_family(out, "agora_server_replica_replayed_bytes", "gauge",
                "The replica's replay position as last seen (a WAL LSN, in bytes).");
    prom_sample(out, "agora_server_replica_replayed_bytes", NULL, st.replayed);
    prom_family(out, "agora_server_replica_checks_total", "counter",
                "Times the server asked the replica where it stands (periodic, and at most one per 2 ms asked for by "
                "reads).");
    prom_sample(out, "agora_server_replica_checks_total", NULL, st.checks);
}

void app_metrics_write(struct app_metrics *m, const struct app_metrics_sources *src, struct buf *out)
{
    struct buf labels = {0};
    requests(m, out, &labels);
    buf_free(&labels);
    pools(src, out);
    if (src->http) {
        prom_family(out, "agora_server_http_answers_total", "counter",
                    "Responses the HTTP layer made itself (malformed or too large requests, timeouts, 503 when a "
                    "pool refused), by status.");
        for (unsigned i = 1; i <= HTTP_ANSWER_N; i++) {
            unsigned k = i % HTTP_ANSWER_N; /* the codes in order, "other" (index 0) last */
            char lab[32];
            if (k)
                snprintf(lab, sizeof(lab), "code=\"%d\"", http_answers_code(k));
            else
                snprintf(lab, sizeof(lab), "code=\"other\"");
            prom_sample(out, "agora_server_http_answers_total", lab, LOAD(src->http->answers.by_code[k]));
        }
        int conns = atomic_load_explicit(&src->http->conns, memory_order_relaxed);
        prom_family(out, "agora_server_client_connections", "gauge", "Open client connections, all workers.");
        prom_sample(out, "agora_server_client_connections", NULL, conns > 0 ? (uint64_t)conns : 0);
    }
    if (src->replica)
        replica(m, src->replica, out);
    if (src->ready) {
        prom_family(out, "agora_server_db_up", "gauge",
                    "Whether the database answered a ping within the readiness window (1) or not (0).");
        prom_sample(out, "agora_server_db_up", NULL, app_ready_ok(src->ready) ? 1 : 0);
        prom_family(out, "agora_server_db_last_ok_ping_age_seconds", "gauge",
                    "Seconds since the database last answered the readiness thread's ping.");
        prom_sample_seconds(out, "agora_server_db_last_ok_ping_age_seconds", NULL, app_ready_age_us(src->ready));
    }
}
