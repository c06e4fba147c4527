/* proxy.h — the balancer's per-worker request path: choose a server, forward, stream back.
 *
 * A struct lb_worker runs on one thread with its own loop, its own listening socket
 * (SO_REUSEPORT) and its own pools of keep-alive connections to the backends. It is the
 * http_server handler (server.h) for its clients: for each request it picks a server with the
 * configured policy over the current server-set snapshot, sends the request head and streams the
 * body to a pooled (or new) backend connection, parses the response head and streams the
 * response back, with backpressure in both directions. /health and /stats are answered by the
 * balancer itself. Shared state (struct lb_shared) is read-only except for atomics.
 *
 * The parts, one module each: proxy.c (the worker, the client side of an exchange, dispatch and
 * retries) and relay.c (the backend side, the response) sharing exchange.h; select.h (which
 * server), upstream.h (backend connections and pools), passive.h (passive health, retry budget),
 * rewrite.h (the heads), local.h (/health, /stats), accesslog.h. */
#ifndef AGORA_LB_PROXY_H
#define AGORA_LB_PROXY_H
#include <pthread.h>
#include <stdatomic.h>

#include "core/loop.h"
#include "lb/config.h"
#include "lb/events.h"
#include "lb/metrics.h"
#include "lb/policy.h"
#include "lb/servers.h"

struct http_tls;

struct lb_shared {
    const struct lb_config *cfg; /* immutable while workers run (reload swaps servers only) */
    struct lb_registry registry;
    const struct lb_policy_ops *policy;
    int access_log_fd;            /* -1 = off */
    struct http_climits *climits; /* per-address limits, NULL when off */
    atomic_int stopping;          /* graceful shutdown requested */
    struct lb_counters counters;  /* for /metrics */
    struct lb_events *events;     /* the event log (events.h), for the dashboard */
    struct http_tls *tls;         /* the TLS listener's certificates (http/tls.h), NULL = none */
    const char *hsts;             /* "Strict-Transport-Security: ...\r\n" for TLS responses, or NULL */
    /* the workers' servers of each listener, which spread their connections (http/server.h);
     * NULL with one worker */
    struct http_spread *spread, *spread_tls;
    /* the workers, for lb_proxy_servers_down: a list through lb_worker's next, under workers_mu
     * (initialised with lb_shared_init) */
    pthread_mutex_t workers_mu;
    struct lb_worker *workers;
};

struct lb_worker;

/* Initialises what lb_shared needs besides its plain fields (the workers' list and its lock);
 * lb_shared_destroy undoes it once no worker is left. */
void lb_shared_init(struct lb_shared *sh);
void lb_shared_destroy(struct lb_shared *sh);

/* Any thread (the health checker's, after raising a server's `downs`, health.h): wakes every
 * worker, which then looks at its exchanges on servers marked down since it last looked (see
 * proxy.c: retried elsewhere when safe, else, by how the server's checks failed, left to finish
 * or answered 502 at once, or cut once the response began). */
void lb_proxy_servers_down(struct lb_shared *sh);

/* Creates a worker on loop that accepts on listen_fd, and with TLS (sh->tls) on tls_fd when it is
 * not -1 (both owned from now on). NULL on failure. */
struct lb_worker *lb_worker_create(struct lb_shared *sh, struct loop *loop, int listen_fd, int tls_fd, unsigned id);
/* Begins a graceful stop: no new connections; busy ones close after their response. */
void lb_worker_shutdown(struct lb_worker *w);
/* Client connections still open. */
unsigned lb_worker_conns(const struct lb_worker *w);
/* Closes everything and frees the worker (on its own thread, after its loop stopped). */
void lb_worker_free(struct lb_worker *w);
/* On the worker's thread when its loop was woken (http_daemon's worker_wake): handles the
 * exchanges on servers marked down since the last look. */
void lb_worker_wake(struct lb_worker *w);

#endif
