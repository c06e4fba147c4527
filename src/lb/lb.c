/* lb.c — `agora lb`: configuration, the server set, workers, health checks, SIGHUP reload.
 *
 * The main thread owns the configuration and the registry; workers read the registry's
 * snapshots. A reload (SIGHUP) re-reads the config file (then the command-line flags again, so
 * flags keep overriding the file) and applies a changed backend list: servers that stay keep
 * their object (state, counters, pooled connections), new ones are created and checked at once,
 * removed ones leave the set while their in-flight requests finish. Other settings need a
 * restart; the reload says so when they changed. */
#include "lb/lb.h"

#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/cpus.h"
#include "http/climits.h"
#include "http/daemon.h"
#include "http/tls.h"
#include "lb/admin.h"
#include "lb/config.h"
#include "lb/health.h"
#include "lb/proxy.h"

struct lb {
    struct lb_config cfg;
    struct lb_shared sh;
    struct lb_health *health;
    struct lb_admin *admin;
    struct loop *main_loop;
    char hsts[64];    /* sh.hsts points here */
    struct cpus cpus; /* cfg.cpu_affinity */
    int argc;
    char **argv;
};

/* Would cpu_affinity pin the workers as they are ("0-1" and "0,1" do, and auto and its CPUs)? A
 * value naming a CPU the process may no longer run on does not. */
static int same_pinning(const struct lb *lb, const char *cpu_affinity)
{
    struct cpus next; /* cpus_parse sets it, or leaves it off */
    char err[200];
    if (!strcmp(cpu_affinity, lb->cfg.cpu_affinity))
        return 1;
    return cpus_parse(cpu_affinity, &next, err, sizeof(err)) == 0 && cpus_same(&next, &lb->cpus);
}

/* The certificate and key lists of cfg as arrays of pointers (into cfg) for http/tls.h. */
static void tls_files(const struct lb_config *cfg, const char **certs, const char **keys)
{
    for (unsigned i = 0; i < cfg->ntls_cert; i++) {
        certs[i] = cfg->tls_cert[i];
        keys[i] = cfg->tls_key[i];
    }
}

/* SIGHUP with TLS: loads the certificates the configuration names now. New handshakes use them;
 * connections keep theirs. On any error the running ones stay. */
static void reload_tls(struct lb *lb, const struct lb_config *next)
{
    if (!lb->sh.tls)
        return;
    const char *certs[LB_MAX_CERTS], *keys[LB_MAX_CERTS];
    char err[700];
    tls_files(next, certs, keys);
    if (!next->tls_listen[0] || http_tls_reload(lb->sh.tls, certs, keys, next->ntls_cert, err, sizeof(err)) < 0) {
        fprintf(stderr, "agora lb: reload: keeping the running TLS certificates: %s\n",
                next->tls_listen[0] ? err : "tls-listen was removed (a change of listeners needs a restart)");
        return;
    }
    fprintf(stderr, "agora lb: reload: TLS certificates loaded (%u)\n", next->ntls_cert);
}

/* Builds servers for the specs; reuses (with a new reference) those of `old` with the same URL.
 * New servers log to events. Returns the count, or -1 with err set. out must hold
 * LB_MAX_BACKENDS. */
static int build_servers(const struct lb_config *cfg, const struct lb_set *old, struct lb_events *events,
                         struct lb_server **out, char *err, size_t errlen)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->nbackends; i++) {
        struct lb_server *s = lb_server_new(cfg->backends[i], err, errlen);
        if (!s)
            goto fail;
        s->events = events;
        for (size_t k = 0; k < n; k++) {
            if (!strcmp(out[k]->key, s->key)) {
                snprintf(err, errlen, "backend %s is listed twice", s->url);
                lb_server_unref(s);
                goto fail;
            }
        }
        int at = old ? lb_set_find(old, s->key) : -1;
        if (at >= 0) {
            struct lb_server *keep = old->servers[at];
            atomic_store(&keep->weight, atomic_load(&s->weight));
            lb_server_unref(s);
            lb_server_ref(keep);
            s = keep;
        }
        out[n++] = s;
    }
    return (int)n;
fail:
    while (n > 0)
        lb_server_unref(out[--n]);
    return -1;
}

static void *worker_create(void *ctx, struct loop *loop, int listen_fd, int listen_fd2, unsigned id, char *err,
                           size_t errlen)
{
    struct lb *lb = ctx;
    struct lb_worker *w = lb_worker_create(&lb->sh, loop, listen_fd, listen_fd2, id);
    if (!w)
        snprintf(err, errlen, "out of memory or descriptors");
    return w;
}

static void worker_shutdown(void *w) { lb_worker_shutdown(w); }
static unsigned worker_conns(void *w) { return lb_worker_conns(w); }
static void worker_free(void *w) { lb_worker_free(w); }
static void worker_wake(void *w) { lb_worker_wake(w); }

/* The health checker marked a server down: the workers rescue the requests waiting on it. */
static void on_server_down(void *sh) { lb_proxy_servers_down(sh); }

static void main_start(void *ctx, struct loop *loop)
{
    struct lb *lb = ctx;
    lb->main_loop = loop;
    lb->health = lb_health_start(loop, &lb->cfg, &lb->sh.registry);
    lb_health_on_down(lb->health, on_server_down, &lb->sh);
    if (strcmp(lb->cfg.admin_listen, "off")) {
        char err[300];
        lb->admin = lb_admin_start(loop, &lb->sh, lb->health, err, sizeof(err));
        if (!lb->admin)
            fprintf(stderr, "agora lb: admin API disabled: %s\n", err);
        else
            fprintf(stderr, "agora lb: admin API on %s\n", lb->cfg.admin_listen);
    }
}

static void main_stop(void *ctx)
{
    struct lb *lb = ctx;
    lb_admin_stop(lb->admin);
    lb->admin = NULL;
    lb_health_stop(lb->health);
    lb->health = NULL;
}

static void reload(void *ctx)
{
    struct lb *lb = ctx;
    struct lb_config next;
    char err[512];
    lb_config_defaults(&next);
    if (lb_config_from_args(&next, lb->argc, lb->argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "agora lb: reload failed, keeping the running configuration: %s\n", err);
        lb_config_free(&next);
        return;
    }
    reload_tls(lb, &next);
    if (lb->sh.tls)
        http_tls_set_h2(lb->sh.tls, next.http2); /* new handshakes */
    struct lb_set *old = lb_registry_get(&lb->sh.registry);
    struct lb_server *servers[LB_MAX_BACKENDS];
    int n = build_servers(&next, old, lb->sh.events, servers, err, sizeof(err));
    lb_set_unref(old);
    if (n < 0) {
        fprintf(stderr, "agora lb: reload failed, keeping the running configuration: %s\n", err);
        lb_config_free(&next);
        return;
    }
    lb_registry_replace(&lb->sh.registry, servers, (size_t)n);
    for (int i = 0; i < n; i++)
        lb_server_unref(servers[i]);
    /* Keep the new backend list in the running configuration. */
    lb_config_free(&lb->cfg);
    for (size_t i = 0; i < next.nbackends; i++) {
        lb->cfg.backends[i] = next.backends[i];
        next.backends[i] = NULL;
    }
    lb->cfg.nbackends = next.nbackends;
    next.nbackends = 0;
    if (strcmp(next.listen, lb->cfg.listen) || strcmp(next.policy, lb->cfg.policy) || next.workers != lb->cfg.workers ||
        !same_pinning(lb, next.cpu_affinity))
        fprintf(stderr, "agora lb: reload: listen, policy, workers and cpu-affinity changes need a restart\n");
    if (strcmp(next.tls_listen, lb->cfg.tls_listen) || next.redirect_https != lb->cfg.redirect_https ||
        next.hsts_s != lb->cfg.hsts_s)
        fprintf(stderr, "agora lb: reload: tls-listen, redirect-https and hsts changes need a restart\n");
    lb_config_free(&next);
    fprintf(stderr, "agora lb: reloaded: %d backend(s)\n", n);
    lb_events_add(lb->sh.events, LB_EV_RELOAD, NULL, "%d server(s)", n);
    atomic_fetch_add_explicit(&lb->sh.counters.reloads, 1, memory_order_relaxed);
    if (lb->health)
        lb_health_kick(lb->health);
}

unsigned lb_auto_max_connections(unsigned long fd_limit, unsigned workers)
{
    /* As HAProxy derives its maxconn from the descriptor limit: every client connection may need
     * a second descriptor for its backend, so only half of what is left after the reserve is
     * promised to clients. Past that a worker pauses accepting; new clients wait in the backlog
     * rather than a backend connect failing for want of a descriptor. */
    unsigned long reserve = fd_limit / 4 < 1024 ? fd_limit / 4 : 1024;
    unsigned long per = (fd_limit - reserve) / 2 / (workers ? workers : 1);
    return per == 0 ? 1 : per > UINT_MAX ? UINT_MAX : (unsigned)per;
}

int lb_main(int argc, char **argv)
{
    struct lb *lb = alloc_calloc(1, sizeof(*lb));
    char err[512];
    if (sodium_init() < 0) { /* request ids and the admin token are seeded from it */
        fprintf(stderr, "agora lb: cannot initialise libsodium\n");
        free(lb);
        return 1;
    }
    int rc = 1;
    lb->argc = argc;
    lb->argv = argv;
    lb_config_defaults(&lb->cfg);
    int r = lb_config_from_args(&lb->cfg, argc, argv, err, sizeof(err));
    if (r == 1) {
        rc = 0;
        goto out;
    }
    if (r < 0) {
        fprintf(stderr, "agora lb: %s\n", err);
        goto out;
    }
    if (cpus_parse(lb->cfg.cpu_affinity, &lb->cpus, err, sizeof(err)) < 0) { /* the CPUs this process may use */
        fprintf(stderr, "agora lb: %s\n", err);
        goto out;
    }
    lb->sh.cfg = &lb->cfg;
    lb_shared_init(&lb->sh);
    lb->sh.events = lb_events_new();
    lb->sh.policy = lb_policy_find(lb->cfg.policy);
    if (!lb->sh.policy) {
        fprintf(stderr, "agora lb: unknown policy '%s' (least-conn, round-robin, random-two, peak-ewma, hash)\n",
                lb->cfg.policy);
        goto out;
    }
    struct lb_server *servers[LB_MAX_BACKENDS];
    int n = build_servers(&lb->cfg, NULL, lb->sh.events, servers, err, sizeof(err));
    if (n < 0) {
        fprintf(stderr, "agora lb: %s\n", err);
        goto out;
    }
    lb_registry_init(&lb->sh.registry, lb_set_new(servers, (size_t)n, 1));
    for (int i = 0; i < n; i++)
        lb_server_unref(servers[i]);
    lb->sh.access_log_fd = -1;
    if (!strcmp(lb->cfg.access_log, "stdout"))
        lb->sh.access_log_fd = STDOUT_FILENO;
    else if (strcmp(lb->cfg.access_log, "off")) {
        lb->sh.access_log_fd = open(lb->cfg.access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (lb->sh.access_log_fd < 0) {
            fprintf(stderr, "agora lb: cannot open access log '%s': %m\n", lb->cfg.access_log);
            lb_registry_destroy(&lb->sh.registry);
            goto out;
        }
    }
    if (lb->cfg.tls_listen[0]) {
        const char *certs[LB_MAX_CERTS], *keys[LB_MAX_CERTS];
        tls_files(&lb->cfg, certs, keys);
        lb->sh.tls = http_tls_new(certs, keys, lb->cfg.ntls_cert, err, sizeof(err));
        if (!lb->sh.tls) {
            fprintf(stderr, "agora lb: %s\n", err);
            lb_registry_destroy(&lb->sh.registry);
            if (lb->sh.access_log_fd > STDOUT_FILENO)
                close(lb->sh.access_log_fd);
            goto out;
        }
        http_tls_set_h2(lb->sh.tls, lb->cfg.http2);
        if (lb->cfg.hsts_s) {
            snprintf(lb->hsts, sizeof(lb->hsts), "Strict-Transport-Security: max-age=%u\r\n", lb->cfg.hsts_s);
            lb->sh.hsts = lb->hsts;
        }
    }
    if (lb->cfg.max_conns_per_ip || lb->cfg.rate_limit)
        lb->sh.climits = http_climits_new(lb->cfg.max_conns_per_ip, lb->cfg.rate_limit, lb->cfg.rate_burst);
    unsigned workers = lb->cfg.workers ? lb->cfg.workers : http_daemon_cpus();
    unsigned long fd_limit = http_daemon_raise_fd_limit("agora lb", LB_C10K_FDS);
    if (!lb->cfg.max_connections)
        lb->cfg.max_connections = lb_auto_max_connections(fd_limit, workers);
    fprintf(
        stderr,
        "agora lb: listening on %s, %u worker(s), policy %s, %d backend(s), up to %u client connections per worker\n",
        lb->cfg.listen, workers, lb->sh.policy->name, n, lb->cfg.max_connections);
    if (lb->sh.tls)
        fprintf(stderr, "agora lb: TLS on %s, %u certificate(s)\n", lb->cfg.tls_listen, lb->cfg.ntls_cert);
    if (workers > 1) {
        lb->sh.spread = http_spread_new();
        lb->sh.spread_tls = lb->sh.tls ? http_spread_new() : NULL;
        lb->sh.counters.spread[0] = lb->sh.spread;
        lb->sh.counters.spread[1] = lb->sh.spread_tls;
    }
    struct http_daemon_config dc = {.listen = lb->cfg.listen,
                                    .listen2 = lb->cfg.tls_listen[0] ? lb->cfg.tls_listen : NULL,
                                    .workers = workers,
                                    .shutdown_ms = lb->cfg.shutdown_timeout_ms,
                                    .name = "agora lb",
                                    .handoff_path = lb->cfg.upgrade_socket[0] ? lb->cfg.upgrade_socket : NULL,
                                    .takeover_path = lb->cfg.upgrade_from[0] ? lb->cfg.upgrade_from : NULL,
                                    .cpus = &lb->cpus};
    struct http_daemon_ops ops = {
        .worker_create = worker_create,
        .worker_shutdown = worker_shutdown,
        .worker_conns = worker_conns,
        .worker_free = worker_free,
        .worker_wake = worker_wake,
        .main_start = main_start,
        .main_stop = main_stop,
        .reload = reload,
    };
    rc = http_daemon_run(&dc, &ops, lb);
    if (lb->sh.access_log_fd > STDOUT_FILENO)
        close(lb->sh.access_log_fd);
    lb_registry_destroy(&lb->sh.registry);
    http_climits_free(lb->sh.climits);
    http_spread_free(lb->sh.spread); /* the servers are freed: they left */
    http_spread_free(lb->sh.spread_tls);
    http_tls_free(lb->sh.tls);
    if (rc == 0)
        fprintf(stderr, "agora lb: stopped\n");
out:
    if (lb->sh.cfg)
        lb_shared_destroy(&lb->sh);
    lb_config_free(&lb->cfg);
    lb_events_free(lb->sh.events);
    free(lb);
    return rc;
}
