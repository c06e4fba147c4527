/* metrics.c — the balancer's /metrics; see metrics.h. */
#include "lb/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/loop.h"
#include "core/prom.h"
#include "lb/servers.h"

/* Each server's label set server="KEY" (escaped), made once per scrape: lab[i] for set->servers[i]
 * (one block, freed by free(lab)). */
static const char **server_labels(const struct lb_set *set)
{
    struct buf b = {0};
    size_t *off = alloc_calloc(set->n + 1, sizeof(*off));
    for (size_t i = 0; i < set->n; i++) {
        off[i] = buf_used(&b);
        buf_append(&b, "server=\"", 8);
        prom_label_value(&b, set->servers[i]->key);
        buf_append(&b, "\"", 2); /* and the NUL */
    }
    size_t ptrs = (set->n + 1) * sizeof(char *);
    const char **lab = alloc_malloc(ptrs + buf_used(&b));
    char *text = (char *)lab + ptrs;
    memcpy(text, buf_head(&b), buf_used(&b));
    for (size_t i = 0; i < set->n; i++)
        lab[i] = text + off[i];
    lab[set->n] = NULL;
    free(off);
    buf_free(&b);
    return lab;
}

/* One family with one sample per server, from a field read by get. */
#define PER_SERVER(out, set, name, type, help, expr)                                                                   \
    do {                                                                                                               \
        prom_family(out, name, type, help);                                                                            \
        for (size_t i_ = 0; i_ < (set)->n; i_++) {                                                                     \
            const struct lb_server *s = (set)->servers[i_];                                                            \
            prom_sample(out, name, lab[i_], (uint64_t)(expr));                                                         \
        }                                                                                                              \
    } while (0)

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void histogram(struct buf *out, const char **lab, const struct lb_set *set)
{
    const char *name = "agora_lb_server_response_seconds";
    prom_family(out, name, "histogram",
                "Time from sending a request to the server to its complete response head, in seconds.");
    for (size_t i = 0; i < set->n; i++) {
        const struct lb_server *s = set->servers[i];
        uint64_t counts[PROM_BUCKETS];
        for (unsigned b = 0; b < PROM_BUCKETS; b++)
            counts[b] = LOAD(s->prom_hist[b]);
        prom_histogram(out, name, lab[i], counts, LOAD(s->lat_sum_us));
    }
}

const char *lb_retry_reason_name(enum lb_retry_reason r)
{
    static const char *const names[LB_RETRY_N] = {"connect", "error", "marked_down", "try_timeout"};
    return r < LB_RETRY_N ? names[r] : "other";
}

void lb_metrics_write(const struct lb_set *set, const struct lb_counters *c, struct buf *out)
{
    uint64_t now_ms = loop_clock_us() / 1000;
    const char **lab = server_labels(set);
    prom_family(out, "agora_lb_servers", "gauge", "Servers in the set.");
    buf_printf(out, "agora_lb_servers %zu\n", set->n);
    prom_family(out, "agora_lb_config_generation", "gauge",
                "Generation of the server set (grows with every reload and admin change).");
    buf_printf(out, "agora_lb_config_generation %u\n", set->gen);
    prom_family(out, "agora_lb_reloads_total", "counter", "Successful configuration reloads (SIGHUP).");
    buf_printf(out, "agora_lb_reloads_total %llu\n", (unsigned long long)LOAD(c->reloads));
    prom_family(out, "agora_lb_answers_total", "counter",
                "Responses the balancer made itself (no server answered, the request was refused or malformed, a "
                "timeout or a limit), by status.");
    for (unsigned i = 1; i <= HTTP_ANSWER_N; i++) {
        unsigned k = i % HTTP_ANSWER_N; /* the codes in order, "other" (index 0) last */
        uint64_t v = LOAD(c->answers.by_code[k]) + LOAD(c->http.answers.by_code[k]);
        if (k)
            buf_printf(out, "agora_lb_answers_total{code=\"%d\"} %llu\n", http_answers_code(k), (unsigned long long)v);
        else
            buf_printf(out, "agora_lb_answers_total{code=\"other\"} %llu\n", (unsigned long long)v);
    }
    prom_family(out, "agora_lb_client_connections", "gauge", "Open client connections, all workers.");
    int conns = LOAD(c->http.conns);
    buf_printf(out, "agora_lb_client_connections %d\n", conns > 0 ? conns : 0);
    prom_family(out, "agora_lb_worker_client_connections", "gauge",
                "Open client connections of each worker, by listener (with two workers or more; a connection "
                "queued from one worker to another counts for the second).");
    static const char *const listener[2] = {"http", "https"};
    for (int l = 0; l < 2; l++) {
        unsigned workers[HTTP_SPREAD_MAX], wconns[HTTP_SPREAD_MAX]; /* every worker, not the first 64 */
        unsigned n = http_spread_loads(c->spread[l], workers, wconns, HTTP_SPREAD_MAX);
        for (unsigned i = 0; i < n; i++)
            buf_printf(out, "agora_lb_worker_client_connections{listener=\"%s\",worker=\"%u\"} %u\n", listener[l],
                       workers[i], wconns[i]);
    }
    prom_family(out, "agora_lb_connections_spread_total", "counter",
                "Client connections a worker passed, before reading them, to a worker holding fewer (each "
                "worker's own listening socket gets connections by a hash of their addresses, blind to load).");
    for (int l = 0; l < 2; l++)
        if (c->spread[l])
            buf_printf(out, "agora_lb_connections_spread_total{listener=\"%s\"} %lu\n", listener[l],
                       http_spread_handed(c->spread[l]));
    prom_family(out, "agora_lb_tls_handshake_failures_total", "counter",
                "TLS handshakes on --tls-listen that failed (not TLS, no common protocol or cipher, an error) or "
                "missed the handshake deadline.");
    buf_printf(out, "agora_lb_tls_handshake_failures_total %llu\n", (unsigned long long)LOAD(c->http.tls_failed));
    prom_family(out, "agora_lb_retries_total", "counter",
                "Requests sent to another server after a try failed, by reason (connect: nothing was sent; error: "
                "failed after sending; marked_down: the server was marked down by the health checks while the "
                "request waited; try_timeout: no response head within the try timeout).");
    for (unsigned r = 0; r < LB_RETRY_N; r++)
        buf_printf(out, "agora_lb_retries_total{reason=\"%s\"} %llu\n", lb_retry_reason_name(r),
                   (unsigned long long)LOAD(c->retries[r]));
    prom_family(out, "agora_lb_retry_budget_refusals_total", "counter",
                "Retries not made because the retry budget was spent.");
    buf_printf(out, "agora_lb_retry_budget_refusals_total %llu\n", (unsigned long long)LOAD(c->budget_refusals));
    prom_family(out, "agora_lb_tunnels", "gauge", "WebSocket tunnels open (upgraded connections), all workers.");
    int tunnels = LOAD(c->tunnels_open);
    buf_printf(out, "agora_lb_tunnels %d\n", tunnels > 0 ? tunnels : 0);
    prom_family(out, "agora_lb_tunnels_total", "counter", "WebSocket tunnels opened (101 relayed).");
    buf_printf(out, "agora_lb_tunnels_total %llu\n", (unsigned long long)LOAD(c->tunnels_total));
    prom_family(out, "agora_lb_tunnels_refused_total", "counter",
                "WebSocket upgrades answered 503 because max_tunnels were open.");
    buf_printf(out, "agora_lb_tunnels_refused_total %llu\n", (unsigned long long)LOAD(c->tunnels_refused));
    prom_family(out, "agora_lb_tunnel_bytes_total", "counter",
                "Bytes relayed through WebSocket tunnels, by direction.");
    buf_printf(out, "agora_lb_tunnel_bytes_total{direction=\"to_server\"} %llu\n",
               (unsigned long long)LOAD(c->tunnel_bytes_to_server));
    buf_printf(out, "agora_lb_tunnel_bytes_total{direction=\"to_client\"} %llu\n",
               (unsigned long long)LOAD(c->tunnel_bytes_to_client));

    PER_SERVER(out, set, "agora_lb_server_up", "gauge", "Whether the server's last health check passed (1) or not (0).",
               LOAD(s->healthy) ? 1 : 0);
    prom_family(out, "agora_lb_server_admin_state", "gauge",
                "The server's administrative state: 1 for the state it is in, 0 for the others.");
    static const char *const states[] = {"active", "draining", "parked"};
    for (size_t i = 0; i < set->n; i++) {
        const struct lb_server *s = set->servers[i];
        int st = LOAD(s->admin);
        for (int k = 0; k < 3; k++) {
            char extra[32];
            snprintf(extra, sizeof(extra), "state=\"%s\"", states[k]);
            prom_sample2(out, "agora_lb_server_admin_state", lab[i], extra, st == k);
        }
    }
    PER_SERVER(out, set, "agora_lb_server_ejected", "gauge",
               "Whether passive health has taken the server out for now (1) or not (0).",
               LOAD(s->ejected_until_ms) > now_ms);
    PER_SERVER(out, set, "agora_lb_server_weight", "gauge", "The server's configured weight.", LOAD(s->weight));
    PER_SERVER(out, set, "agora_lb_server_in_flight", "gauge", "Requests sent to the server and not yet complete.",
               LOAD(s->inflight) > 0 ? LOAD(s->inflight) : 0);
    PER_SERVER(out, set, "agora_lb_server_requests_total", "counter",
               "Requests sent to the server (each attempt, retries included).", LOAD(s->total));
    prom_family(out, "agora_lb_server_responses_total", "counter",
                "Response heads from the server relayed, by status class.");
    for (size_t i = 0; i < set->n; i++) {
        const struct lb_server *s = set->servers[i];
        for (int k = 0; k < 5; k++) {
            char extra[24];
            snprintf(extra, sizeof(extra), "code=\"%dxx\"", k + 1);
            prom_sample2(out, "agora_lb_server_responses_total", lab[i], extra, LOAD(s->responses[k]));
        }
    }
    PER_SERVER(out, set, "agora_lb_server_errors_total", "counter",
               "Failed requests: connect, send and receive failures, timeouts and 5xx responses.", LOAD(s->errors));
    PER_SERVER(out, set, "agora_lb_server_connect_failures_total", "counter",
               "Connections to the server that could not be made.", LOAD(s->connect_failures));
    PER_SERVER(out, set, "agora_lb_server_retries_total", "counter",
               "Requests that failed on the server and were sent to another.", LOAD(s->retries));
    PER_SERVER(out, set, "agora_lb_server_ejections_total", "counter", "Times passive health took the server out.",
               LOAD(s->ejections_total));
    prom_family(out, "agora_lb_server_connections", "gauge",
                "Backend connections to the server: open (all), and idle in the keep-alive pools.");
    for (size_t i = 0; i < set->n; i++) {
        const struct lb_server *s = set->servers[i];
        int open = LOAD(s->conns_open), idle = LOAD(s->conns_idle);
        prom_sample2(out, "agora_lb_server_connections", lab[i], "state=\"open\"", open > 0 ? (uint64_t)open : 0);
        prom_sample2(out, "agora_lb_server_connections", lab[i], "state=\"idle\"", idle > 0 ? (uint64_t)idle : 0);
    }
    PER_SERVER(out, set, "agora_lb_server_sent_bytes_total", "counter", "Request bytes written to the server.",
               LOAD(s->bytes_sent));
    PER_SERVER(out, set, "agora_lb_server_received_bytes_total", "counter", "Response bytes read from the server.",
               LOAD(s->bytes_received));
    histogram(out, lab, set);
    free(lab);
}
