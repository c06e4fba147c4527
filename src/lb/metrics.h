/* metrics.h — the balancer's /metrics: its counters in the Prometheus text exposition format.
 *
 * What is counted where. Per server (struct lb_server, relaxed atomics, written by the workers on
 * the request path and read here without a lock; a scrape sees each value as it is at that
 * moment): requests sent, responses by status class, in flight, errors, retries away from it,
 * connect failures, ejections, backend connections open and idle in the pools, bytes each way,
 * and the response-time histogram (the time from sending the request to the complete response
 * head, as the passive health records it). For the balancer as a whole (struct lb_counters in
 * lb_shared): the answers it made itself, by status — its request path's (the backend never
 * answered: 502/503/504; refusals: 400) and its HTTP layer's (malformed or too large requests,
 * timeouts, per-address limits: 400/408/413/414/429/431/501/503/505) —, open client
 * connections, retries by reason, retry-budget refusals, reloads, WebSocket tunnels (open, opened, refused, bytes each
 * way); and gauges read at scrape time (the configuration
 * generation, the number of servers).
 *
 * Conventions (prometheus.io/docs/practices/naming): names agora_lb_*, counters end in _total,
 * times in seconds, sizes in bytes; labels have bounded values only (the server's host:port from
 * the configuration, a status class, a state from a fixed list); every family has HELP and TYPE.
 * The histogram buckets span 0.5 ms to 10 s, the range from a fast backend on loopback to the
 * response timeout's order; they and the text format's pieces are core/prom.h's, shared with
 * the web server's /metrics. */
#ifndef AGORA_LB_METRICS_H
#define AGORA_LB_METRICS_H
#include <stdatomic.h>
#include <stdint.h>

#include "core/buf.h"
#include "http/server.h"

struct lb_set;

/* Why a request was sent to another server (agora_lb_retries_total{reason}, and the access
 * log's "retry_reasons"): nothing reached the first (connect), it failed after sending (error: a
 * reset, a close, a failed write), the active checks marked it down while the request waited
 * (marked_down), or --try-timeout passed without a response head (try_timeout). */
enum lb_retry_reason { LB_RETRY_CONNECT, LB_RETRY_ERROR, LB_RETRY_MARKED_DOWN, LB_RETRY_TRY_TIMEOUT, LB_RETRY_N };

/* The label value of a reason ("connect", "error", "marked_down", "try_timeout"). */
const char *lb_retry_reason_name(enum lb_retry_reason r);

struct lb_counters {
    struct http_answers answers;              /* made by the balancer's request path */
    struct http_server_stats http;            /* its HTTP layer's: client connections, answers it made */
    struct http_spread *spread[2];            /* the plain and TLS listeners' groups (proxy.h), or NULL */
    atomic_uint_fast64_t budget_refusals;     /* retries the retry budget refused */
    atomic_uint_fast64_t retries[LB_RETRY_N]; /* retries made, by reason */
    atomic_uint_fast64_t reloads;             /* successful SIGHUP reloads */
    /* WebSocket tunnels (lb/tunnel.c) */
    atomic_int tunnel_slots;              /* tunnels open or being asked for (the max_tunnels cap) */
    atomic_int tunnels_open;              /* tunnels open (after the 101) */
    atomic_uint_fast64_t tunnels_total;   /* tunnels opened */
    atomic_uint_fast64_t tunnels_refused; /* upgrades refused: max_tunnels reached */
    atomic_uint_fast64_t tunnel_bytes_to_server, tunnel_bytes_to_client;
};

/* Appends the exposition of the set and counters to out (text format 0.0.4). */
void lb_metrics_write(const struct lb_set *set, const struct lb_counters *c, struct buf *out);

#endif
