/* server.c — `agora server`: a web server of the social network.
 *
 * The request model (docs/ARCHITECTURE.md): N worker threads (http/daemon.h), each an event loop
 * that does only network I/O and HTTP, hand every complete request that needs the database to a
 * bounded pool of handler threads (http/pool.h; --threads), each with a struct app holding its
 * own store connection; the response goes back to the request's loop. Requests that hash a
 * password (sign-up, log-in: app_hashes_password) go to a second pool, the hashing threads (at a
 * lower priority), so that a log-in flood cannot take every handler. The loops answer by
 * themselves only what needs no database (app_on_loop): /health, from the readiness state a
 * pinging thread keeps (app/ready.h), and the UI's files. Both pools and the pinger are shared by
 * every worker of the process; they start before the workers and stop after them (a graceful
 * stop lets the workers' waiting requests finish first). Stateless: any request may go to any
 * server. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/api.h"
#include "app/app.h"
#include "app/client_addr.h"
#include "app/ready.h"
#include "cli/commands.h"
#include "core/alloc.h"
#include "core/opts.h"
#include "http/daemon.h"
#include "http/pool.h"
#include "http/server.h"

struct server_opts {
    char listen[128];
    char db[1024];
    char web[PATH_MAX];
    char served_by[128];
    char served_by_header[160]; /* "X-Served-By: ...\r\n" for responses the HTTP layer makes */
    unsigned workers;
    unsigned idle_ms;
    unsigned threads; /* handler threads; 0 = the store's default (server_default_threads) */
    unsigned queue;   /* 0 = 32 per thread */
    unsigned queue_wait_ms;
    unsigned hash_threads; /* 0 = number of CPUs */
    unsigned hash_queue;   /* 0 = 32 per thread */
    unsigned hash_wait_ms;
    struct app_limits limits;
    struct client_trust trust;
    int trust_set;               /* a --trusted-proxy flag replaced the default */
    struct http_pool *pool;      /* handler threads */
    struct http_pool *hash_pool; /* hashing threads */
    struct app_ready *ready;
    unsigned session_days;
};

struct server_worker {
    struct app *app; /* the loop's own: no database (/health, UI files) */
    struct http_server *srv;
    struct http_buffered hb;
    struct http_pool_port *port, *hash_port;
};

static void app_config_of(const struct server_opts *o, struct app_config *ac)
{
    *ac = (struct app_config){.db_url = o->db,
                              .ready = o->ready,
                              .served_by = o->served_by,
                              .web_dir = o->web,
                              .limits = &o->limits,
                              .trust = &o->trust,
                              .session_days = o->session_days};
}

/* A pool thread (handler or hashing): an app with a database connection of its own. */
static void *pool_thread_init(void *ctx, unsigned id, char *err, size_t errlen)
{
    struct app_config ac;
    app_config_of(ctx, &ac);
    return app_open(&ac, err, errlen);
}

static void pool_thread_fini(void *ctx, void *app) { app_close(app); }

/* Which thread answers req: a hashing thread, a handler thread, or (NULL) the loop itself. The
 * UI's files stay on the loop: they touch no database, are a few small files the page cache
 * holds, and a page of the UI should not queue behind database work nor take handler room. */
static struct http_pool_port *pick(void *ctx, const struct http_request *req)
{
    struct server_worker *w = ctx;
    if (app_hashes_password(req))
        return w->hash_port;
    return app_on_loop(req) ? NULL : w->port;
}

/* Handler threads when --threads is not given. SQLite: as many as cores, since reads (WAL
 * readers run concurrently) are CPU work on pages in memory and more threads than cores would
 * only take turns; plus one, because SQLite has one writer at a time (across every server on the
 * file) and a write waiting for the lock sleeps in the busy handler, holding its thread: the
 * spare one keeps reads going meanwhile. At least 2, for the same reason on one core.
 * PostgreSQL: 4 per core, at least 8, at most 64. A handler thread spends most of a request
 * waiting for the database's answer (a round trip, and the server's own work on other cores or
 * machines), so a few per core keep the cores busy; each holds a connection, and every server
 * on the database adds its own, against PostgreSQL's max_connections (100 by default): three
 * servers on two cores take 3 × 8 = 24. */
static unsigned server_default_threads(const char *db)
{
    unsigned cpus = http_daemon_cpus();
    if (strncmp(db, "postgres://", 11) == 0 || strncmp(db, "postgresql://", 13) == 0) {
        unsigned n = 4 * cpus;
        return n < 8 ? 8 : n > 64 ? 64 : n;
    }
    return cpus + 1 < 2 ? 2 : cpus + 1;
}

static void *worker_create(void *ctx, struct loop *loop, int listen_fd, unsigned id, char *err, size_t errlen)
{
    struct server_opts *o = ctx;
    struct server_worker *w = alloc_calloc(1, sizeof(*w));
    struct app_config ac;
    app_config_of(o, &ac);
    ac.db_url = NULL; /* the loop answers only what needs no database */
    w->app = app_open(&ac, err, errlen);
    if (!w->app) {
        free(w);
        return NULL;
    }
    w->port = http_pool_port_open(o->pool, loop);
    w->hash_port = w->port ? http_pool_port_open(o->hash_pool, loop) : NULL;
    if (!w->hash_port) {
        snprintf(err, errlen, "cannot open the pools' ports");
        http_pool_port_close(w->port);
        app_close(w->app);
        free(w);
        return NULL;
    }
    w->hb.fn = app_handle;
    w->hb.fn_ctx = w->app;
    w->hb.pick = pick;
    w->hb.pick_ctx = w;
    struct http_server_limits lim;
    http_server_limits_default(&lim);
    lim.max_body = API_MAX_BODY;
    lim.json_errors = 1;
    lim.extra_headers = o->served_by_header;
    lim.idle_timeout_ms = o->idle_ms;
    w->srv = http_server_create(loop, listen_fd, &http_server_buffered_ops, &w->hb, &lim);
    if (!w->srv) {
        snprintf(err, errlen, "cannot watch the listening socket");
        http_pool_port_close(w->hash_port);
        http_pool_port_close(w->port);
        app_close(w->app);
        free(w);
        return NULL;
    }
    return w;
}

static void worker_shutdown(void *p) { http_server_shutdown(((struct server_worker *)p)->srv); }
static unsigned worker_conns(void *p) { return http_server_conns(((struct server_worker *)p)->srv); }
static void worker_free(void *p)
{
    struct server_worker *w = p;
    http_server_free(w->srv); /* aborts its connections, which withdraws their pool jobs */
    http_pool_port_close(w->hash_port);
    http_pool_port_close(w->port);
    app_close(w->app);
    free(w);
}

const char *cli_default_web_dir(char *out, size_t outlen)
{
    const char *env = getenv("AGORA_WEB");
    if (env && *env) {
        snprintf(out, outlen, "%s", env);
        return out;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char cand[PATH_MAX + 32];
            snprintf(cand, sizeof(cand), "%s/../web/index.html", exe);
            if (access(cand, R_OK) == 0) {
                snprintf(out, outlen, "%s/../web", exe);
                return out;
            }
        }
    }
    snprintf(out, outlen, "web");
    return out;
}

/* Parses "N/DURATION" (N >= 1) or "off" into l. Returns 0 or -1. */
static int parse_limit(const char *v, struct app_limit *l)
{
    if (!strcmp(v, "off")) {
        l->count = 0;
        return 0;
    }
    char *end;
    unsigned ms;
    long n = strtol(v, &end, 10);
    if (end == v || *end != '/' || n < 1 || n > 1000000 || opts_parse_duration(end + 1, &ms) < 0 || ms == 0)
        return -1;
    l->count = (int)n;
    l->window_ms = ms;
    return 0;
}

/* OPTS_CALL for the throttles: the struct app_limit at d->off. */
static int set_limit(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                     size_t errlen)
{
    if (parse_limit(val, (struct app_limit *)((char *)target + d->off)) < 0) {
        snprintf(err, errlen, "%s: '%s' is not N/DURATION (e.g. 10/15m) or off", name, val);
        return -1;
    }
    return 0;
}

/* OPTS_CALL for --trusted-proxy: the first one replaces the loopback default, later ones add. */
static int set_trusted(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                       size_t errlen)
{
    struct server_opts *o = target;
    char msg[160];
    if (!o->trust_set) {
        o->trust.n = 0;
        o->trust_set = 1;
    }
    if (client_trust_add(&o->trust, val, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "%s: %s", name, msg);
        return -1;
    }
    return 0;
}

#define ROW(fl, t, f, lo, hi, a, fn, h) OPTS_ROW(struct server_opts, fl, t, f, lo, hi, a, fn, h)
static const struct opts_def flags[] = {
    ROW("listen", OPTS_STR, listen, 0, 0, "ADDR:PORT", NULL, "address to serve on (default 127.0.0.1:8001)"),
    ROW("db", OPTS_STR, db, 0, 0, "URL", NULL,
        "database: sqlite:PATH or postgres://[user@host[:port]]/dbname (libpq URI;\nPG* variables apply) (default "
        "sqlite:data/agora.db)"),
    ROW("workers", OPTS_UINT, workers, 1, 256, NULL, NULL,
        "event-loop threads (network I/O and HTTP; no database)\n(default: number of cores)"),
    ROW("web", OPTS_STR, web, 0, 0, "DIR", NULL, "directory of the web UI files (default: the installed web/)"),
    ROW("served-by", OPTS_STR, served_by, 0, 0, "NAME", NULL,
        "value of the X-Served-By header (default: the listen address)"),
    ROW("idle-timeout", OPTS_DURATION, idle_ms, 1, 0, NULL, NULL,
        "close idle keep-alive connections after (default 60s)"),
    {.type = OPTS_TEXT,
     .help = "\nThe event loops (workers) do only network I/O and HTTP, and answer /health (from\n"
             "a cached state: the database answered within 3 s) and the UI's files. Every API\n"
             "request runs on a pool of handler threads:\n"},
    ROW("threads", OPTS_UINT, threads, 1, 1024, NULL, NULL,
        "handler threads, each with its own database connection\n(default for SQLite: cores + 1; PostgreSQL: 4 x "
        "cores, 8-64)"),
    ROW("queue", OPTS_UINT, queue, 1, 100000, NULL, NULL,
        "requests that may wait for a handler thread (default 32\nper thread); beyond, 503 with Retry-After"),
    ROW("queue-wait", OPTS_DURATION, queue_wait_ms, 1, 0, NULL, NULL,
        "a request that waits longer gets 503 with Retry-After\n(default 1s)"),
    {.type = OPTS_TEXT,
     .help = "\nPassword hashing (sign-up and log-in) runs on a pool of its own, at a lower\n"
             "priority, so that a log-in flood cannot take the handler threads:\n"},
    ROW("hash-threads", OPTS_UINT, hash_threads, 1, 256, NULL, NULL,
        "hashing threads, each with its own database connection\n(default: number of cores)"),
    ROW("hash-queue", OPTS_UINT, hash_queue, 1, 100000, NULL, NULL,
        "requests that may wait for a hashing thread (default 32\nper thread); beyond, 503 with Retry-After"),
    ROW("hash-wait", OPTS_DURATION, hash_wait_ms, 1, 0, NULL, NULL,
        "a request that waits longer gets 503 with Retry-After\n(default 1s)"),
    {.type = OPTS_TEXT,
     .help = "\nThrottles, counted in the database (so shared by every server on it); a full\n"
             "one answers 429 with Retry-After. LIMIT is N/DURATION (e.g. 10/15m) or off:\n"},
    ROW("login-limit", OPTS_CALL, limits.login_account, 0, 0, "LIMIT", set_limit,
        "failed log-ins per account (default 10/15m); a successful\nlog-in clears it"),
    ROW("login-address-limit", OPTS_CALL, limits.login_address, 0, 0, "LIMIT", set_limit,
        "failed log-ins per client address (default 50/15m)"),
    ROW("signup-limit", OPTS_CALL, limits.signup_address, 0, 0, "LIMIT", set_limit,
        "sign-ups per client address (default 5/10m)"),
    ROW("trusted-proxy", OPTS_CALL, trust, 0, 0, "ADDR[/BITS][,...]", set_trusted,
        "peers whose X-Forwarded-For names the client\n(repeatable; default 127.0.0.0/8,::1; 'none': no one); the\n"
        "client is the right-most address not itself trusted.\nIPv6 clients are counted by /64"),
    ROW("session-days", OPTS_UINT, session_days, 1, 3650, NULL, NULL,
        "a log-in session unused for N days expires (sliding;\n1..3650, default 30)"),
};
#undef ROW

static const struct opts_cmd command = {
    .name = "agora server",
    .head = "usage: agora server [options]\n\n"
            "A web server of the social network (JSON API under /api/v1 and the web UI).\n\n",
    OPTS_TABLE(flags),
    .width = 22,
};

int cmd_server(int argc, char **argv)
{
    struct server_opts o = {
        .workers = 0, .idle_ms = 60000, .queue_wait_ms = 1000, .hash_wait_ms = 1000, .session_days = 30};
    app_limits_default(&o.limits);
    client_trust_default(&o.trust);
    snprintf(o.listen, sizeof(o.listen), "127.0.0.1:8001");
    snprintf(o.db, sizeof(o.db), "sqlite:data/agora.db");
    cli_default_web_dir(o.web, sizeof(o.web));
    int r = opts_cmd_parse(&command, &o, argc, argv, NULL);
    if (r != OPTS_CONTINUE)
        return r;
    if (!o.served_by[0])
        snprintf(o.served_by, sizeof(o.served_by), "%s", o.listen);
    snprintf(o.served_by_header, sizeof(o.served_by_header), "X-Served-By: %s\r\n", o.served_by);
    unsigned workers = o.workers ? o.workers : http_daemon_cpus();
    /* One descriptor per client (no cap: past the limit, accepting pauses), plus a reserve. */
    http_daemon_raise_fd_limit("agora server", 10000 + 1024);
    unsigned threads = o.threads ? o.threads : server_default_threads(o.db);
    unsigned hash_threads = o.hash_threads ? o.hash_threads : http_daemon_cpus();
    char err[256];
    int rc = 1;
    /* First, so that every app below answers /health from it; it also checks the database. */
    o.ready = app_ready_start(o.db, 0, 0, err, sizeof(err));
    if (!o.ready)
        goto fail;
    struct http_pool_config pc = {.name = "handler",
                                  .threads = threads,
                                  .max_queue = o.queue,
                                  .max_wait_ms = o.queue_wait_ms,
                                  .thread_init = pool_thread_init,
                                  .thread_fini = pool_thread_fini,
                                  .handler = app_handle,
                                  .ctx = &o};
    if ((o.pool = http_pool_create(&pc, err, sizeof(err))) == NULL)
        goto fail;
    struct http_pool_config hc = {.name = "hashing",
                                  .threads = hash_threads,
                                  .max_queue = o.hash_queue,
                                  .max_wait_ms = o.hash_wait_ms,
                                  .nice = 10, /* a login flood must not slow the event loops */
                                  .thread_init = pool_thread_init,
                                  .thread_fini = pool_thread_fini,
                                  .handler = app_handle,
                                  .ctx = &o};
    if ((o.hash_pool = http_pool_create(&hc, err, sizeof(err))) == NULL)
        goto fail;
    fprintf(stderr, "agora server: listening on %s, %u worker(s), %u handler thread(s), %u hashing thread(s), db %s\n",
            o.listen, workers, threads, hash_threads, o.db);
    struct http_daemon_config dc = {
        .listen = o.listen, .workers = workers, .shutdown_ms = 10000, .name = "agora server"};
    struct http_daemon_ops ops = {
        .worker_create = worker_create,
        .worker_shutdown = worker_shutdown,
        .worker_conns = worker_conns,
        .worker_free = worker_free,
    };
    rc = http_daemon_run(&dc, &ops, &o);
    /* after the workers: their requests waiting on the pools are answered */
    http_pool_destroy(o.hash_pool);
    http_pool_destroy(o.pool);
    app_ready_stop(o.ready);
    if (rc == 0)
        fprintf(stderr, "agora server: stopped\n");
    return rc;
fail:
    fprintf(stderr, "agora server: %s\n", err);
    http_pool_destroy(o.hash_pool);
    http_pool_destroy(o.pool);
    app_ready_stop(o.ready);
    return 1;
}
