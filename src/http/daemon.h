/* daemon.h — run a multi-threaded HTTP service: worker threads, signals, graceful stop.
 *
 * Shared by `agora lb` and `agora server`. The calling (main) thread binds one SO_REUSEPORT
 * listening socket per worker (so a busy port is reported before anything starts), starts the
 * workers, each with its own loop, and then runs a main loop of its own that handles signals
 * (through a signalfd) and whatever the service adds to it (the balancer's health checks):
 *   SIGTERM, SIGINT  graceful stop: workers stop accepting, finish in-flight requests, and the
 *                    process returns from http_daemon_run once all are idle or the deadline passed
 *   SIGHUP           ops->reload(ctx) in the main thread (if set)
 * Upgrades: with handoff_path the main loop offers the listening sockets to a successor started
 * with takeover_path (handoff.h); once the successor says it serves them, this process stops
 * as on SIGTERM, and its idle keep-alive connections are closed after a short grace, during
 * which a request that arrives on one is still answered (with Connection: close).
 * Worker objects are created, shut down and freed on their own threads. */
#ifndef AGORA_HTTP_DAEMON_H
#define AGORA_HTTP_DAEMON_H
#include <stddef.h>

#include "core/cpus.h"
#include "core/loop.h"

struct http_daemon_ops {
    /* Creates a worker on its thread's loop serving listen_fd, and listen_fd2 when it is not -1
     * (cfg->listen2); both owned by the worker on success. Returns NULL on failure with a message
     * in err. */
    void *(*worker_create)(void *ctx, struct loop *loop, int listen_fd, int listen_fd2, unsigned id, char *err,
                           size_t errlen);
    void (*worker_shutdown)(void *worker);
    unsigned (*worker_conns)(void *worker);
    void (*worker_free)(void *worker);
    /* Worker thread: its loop was woken by another thread (loop_wake) for the worker's own
     * purposes, e.g. the balancer's health checker marking a server down (may be NULL). Called
     * on every wake, a stop's included. */
    void (*worker_wake)(void *worker);
    /* Main thread: called once before serving with the main loop (may be NULL). */
    void (*main_start)(void *ctx, struct loop *main_loop);
    /* Main thread: called after the workers stopped (may be NULL). */
    void (*main_stop)(void *ctx);
    /* SIGHUP (may be NULL). */
    void (*reload)(void *ctx);
};

struct http_daemon_config {
    const char *listen;   /* "ADDR:PORT" */
    const char *listen2;  /* a second address every worker accepts on too (the balancer's TLS one); NULL = none */
    unsigned workers;     /* >= 1 */
    unsigned shutdown_ms; /* graceful-stop deadline */
    const char *name;     /* for messages, e.g. "agora lb" */
    /* Upgrades (handoff.h): offer this process's listening sockets to a successor at this unix
     * socket path (NULL = do not), and take them from a running process at this path instead of
     * binding (NULL = bind). A process that took N sockets runs N workers (N / 2 with listen2:
     * the first half are the listen sockets, the second the listen2 ones). */
    const char *handoff_path;
    const char *takeover_path;
    /* Worker i runs only on CPU cpus_of(cpus, i) (core/cpus.h); NULL or off: not pinned. */
    const struct cpus *cpus;
};

/* Raises the soft descriptor limit (RLIMIT_NOFILE) to the hard limit and reports the limit in
 * force on stderr, once per call: "NAME: descriptor limit N (raised from M)", with a warning when
 * N is below want (the descriptors the command needs for 10,000 clients). Each command calls it
 * once at start, before http_daemon_run (children of `agora up` inherit the raised limit).
 * Returns the limit in force. */
unsigned long http_daemon_raise_fd_limit(const char *name, unsigned long want);

/* Runs until SIGTERM/SIGINT and the graceful stop. Returns 0 on a clean stop, 1 on a start-up
 * failure (message printed to stderr). */
int http_daemon_run(const struct http_daemon_config *cfg, const struct http_daemon_ops *ops, void *ctx);

/* Number of CPUs this process may run on (its affinity mask; at least 1). */
unsigned http_daemon_cpus(void);

#endif
