/* metrics.h — the web server's /metrics: its counters in the Prometheus text exposition format.
 *
 * What is counted where. Every thread that runs app_handle (each event loop, handler thread and
 * hashing thread) owns one struct app_stats, a slot of the process's struct app_metrics: the
 * requests it answered by route (the router's pattern with * for a segment, never the path;
 * an unknown API path is "other", the UI's files "static", and "/health"), method and status; the
 * time app_handle took, per route; and its store's calls (store_stats.h: time per operation,
 * failures by kind). One writer per slot, so the counters are relaxed atomics written with a
 * plain load and store — no lock and no locked instruction on the request path —, each slot on
 * cache lines of its own; a scrape sums the slots. From elsewhere, read at scrape time: the
 * pools' gauges and counters (http/pool.h: threads, busy, queued, queue-full and timed-out
 * refusals, and the queue-wait histogram, kept under the pool's own lock which the queue takes
 * anyway), the HTTP layer's answers and open connections (http/server.h), and readiness
 * (ready.h: is the database up, seconds since its last successful ping).
 *
 * Conventions as the balancer's (lb/metrics.h, the same core/prom.h writer and buckets): names
 * agora_server_*, counters end in _total, times in seconds, labels with bounded values only (a
 * route from the table, a method from five, a status from a fixed list or "other", an operation
 * from the store's list, a pool's name).
 *
 * Threads: app_metrics_create/free on the main thread; app_metrics_slot on any thread (each
 * thread takes its slot once); app_stats_request on the slot's thread only; app_metrics_write
 * on any thread. */
#ifndef AGORA_APP_METRICS_H
#define AGORA_APP_METRICS_H
#include <stdint.h>

#include "app/router.h"
#include "core/buf.h"

struct app_metrics;
struct app_stats;
struct app_ready;
struct app_replica;
struct http_pool;
struct http_server_stats;
struct store_stats;

/* Routes counted besides the router's (app_stats_request's route). */
#define APP_ROUTE_OTHER  ROUTER_NONE      /* an API path no route matches */
#define APP_ROUTE_HEALTH (ROUTER_MAX + 1) /* /health */
#define APP_ROUTE_STATIC (ROUTER_MAX + 2) /* the UI's files (and 405s outside /api) */
#define APP_ROUTES       (ROUTER_MAX + 3)

/* Where the gauges and counters kept outside the slots are read (each may be NULL). */
struct app_metrics_sources {
    struct http_pool *pool;         /* the handler threads */
    struct http_pool *hash_pool;    /* the hashing threads */
    const struct app_ready *ready;  /* the database's readiness */
    struct http_server_stats *http; /* the HTTP layer's answers and connections */

    const struct app_replica *replica; /* the read replica's state (replica.h) */
};

/* Makes room for nslots threads' counters. NULL when out of memory. */
struct app_metrics *app_metrics_create(unsigned nslots);
/* Frees m (after every thread that took a slot stopped). NULL is allowed. */
void app_metrics_free(struct app_metrics *m);
/* The next unused slot, zeroed; NULL when all are taken (that thread then counts nothing). */
struct app_stats *app_metrics_slot(struct app_metrics *m);
/* The slot's store counters: what struct store's stats points at (store_stats.h). */
struct store_stats *app_stats_store(struct app_stats *s);
/* Counts one request answered on the slot's thread: route (a router index, or APP_ROUTE_*),
 * its method, the response's status, and how long app_handle took (µs). */
void app_stats_request(struct app_stats *s, unsigned route, int method, int status, uint64_t us);
/* Counts one read request by where it went (enum app_read, replica.h). */
void app_stats_read(struct app_stats *s, unsigned why);
/* Appends the exposition of every slot and of src to out (text format 0.0.4). */
void app_metrics_write(struct app_metrics *m, const struct app_metrics_sources *src, struct buf *out);

#endif
