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
 * server.
 *
 * Metrics (app/metrics.h): every thread that handles requests counts into a slot of its own;
 * with --metrics-listen, the first worker's loop also serves GET /metrics (and /health) on that
 * address, behind the gate of the balancer's admin API (http/gate.h: the Host check, then the
 * --metrics-token, or loopback clients only when there is none). A scrape runs on that loop,
 * never on the pools, so it is answered while every handler thread is busy. */
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/api.h"
#include "app/app.h"
#include "app/client_addr.h"
#include "app/metrics.h"
#include "app/ready.h"
#include "app/replica.h"
#include "app/store.h"
#include "cli/commands.h"
#include "core/alloc.h"
#include "core/cpus.h"
#include "core/net.h"
#include "core/opts.h"
#include "core/prom.h"
#include "http/climits.h"
#include "http/daemon.h"
#include "http/gate.h"
#include "http/pool.h"
#include "http/server.h"

struct server_opts {
    char listen[128];
    char db[1024];
    char web[PATH_MAX];
    char served_by[128];
    char served_by_header[160]; /* "X-Served-By: ...\r\n" for responses the HTTP layer makes */
    unsigned workers;
    char cpu_affinity[256]; /* off (default), auto or a CPU list (core/cpus.h) */
    struct cpus cpus;
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
    char db_replica[1024];       /* --db-replica: reads go there when they may (app/replica.h) */
    unsigned replica_lag_ms;     /* --replica-max-lag */
    struct app_replica *replica; /* its monitor; NULL: no replica */
    unsigned session_days;
    char metrics_listen[128];
    char metrics_token[HTTP_GATE_TOKEN_MAX];
    int metrics_fd; /* the metrics listener, bound before the workers start */
    struct net_addr metrics_addr;
    struct app_metrics *metrics;         /* every handling thread's counters */
    struct http_server_stats http_stats; /* the HTTP layer's, all workers */
};

/* The metrics listener, on the first worker's loop. */
struct server_metrics {
    struct server_opts *o;
    struct http_server *srv;
    struct http_buffered hb;
    struct http_gate gate;
    struct http_climits *climits; /* connections per client address */
};

/* The metrics listener's connections: a scraper needs one (Prometheus keeps it alive), an
 * operator's curl another. A few per address, so that one address holding silent connections
 * (each lasts the header timeout) cannot take them all and keep every scrape out (review of
 * issue 13); refused clients are closed by the gate. */
#define METRICS_MAX_CONNS    64
#define METRICS_CONNS_PER_IP 8
#define METRICS_HEAD_TIMEOUT 5000

struct server_worker {
    struct app *app;            /* the loop's own: no database (/health, UI files) */
    struct server_metrics *met; /* the first worker's: the metrics listener (else NULL) */
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
                              .session_days = o->session_days,
                              .stats = app_metrics_slot(o->metrics)};
    ac->replica = o->replica;
}

/* GET/HEAD /metrics and /health on the metrics listener, after the gate (loop thread). */
static void metrics_handle(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct server_metrics *m = ctx;
    const struct http_head *h = req->head;
    if (!http_gate_admit(&m->gate, req, resp))
        return;
    int is_metrics = h->path.n == 8 && !memcmp(h->path.p, "/metrics", 8);
    int is_health = h->path.n == 7 && !memcmp(h->path.p, "/health", 7);
    if (!is_metrics && !is_health) {
        http_gate_reply_error(resp, 404, "metrics: only GET /metrics and GET /health are served here");
        return;
    }
    if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
        http_response_header(resp, "Allow", "GET, HEAD");
        http_gate_reply_error(resp, 405, "method not allowed");
        return;
    }
    http_response_header(resp, "Cache-Control", "no-store");
    if (is_health) {
        int ok = app_ready_ok(m->o->ready);
        resp->status = ok ? 200 : 503;
        http_response_header(resp, "Content-Type", "application/json");
        buf_puts(&resp->body, ok ? "{\"status\":\"ok\"}" : "{\"error\":\"database unavailable\"}");
        return;
    }
    struct app_metrics_sources src = {
        .pool = m->o->pool, .hash_pool = m->o->hash_pool, .ready = m->o->ready, .http = &m->o->http_stats};
    src.replica = m->o->replica;
    http_response_header(resp, "Content-Type", PROM_CONTENT_TYPE);
    app_metrics_write(m->o->metrics, &src, &resp->body);
}

/* Serves the metrics listener (its descriptor taken by the server) on loop. NULL with err set. */
static struct server_metrics *metrics_start(struct server_opts *o, struct loop *loop, char *err, size_t errlen)
{
    struct server_metrics *m = alloc_calloc(1, sizeof(*m));
    m->o = o;
    http_gate_init(&m->gate, o->metrics_listen, &o->metrics_addr);
    m->gate.log_prefix = "agora server: metrics";
    m->gate.api = "metrics";
    m->gate.addr_name = "metrics address";
    m->gate.realm = "agora-metrics";
    m->gate.token_hint = "the token is agora server's --metrics-token";
    snprintf(m->gate.token, sizeof(m->gate.token), "%s", o->metrics_token);
    m->hb.fn = metrics_handle;
    m->hb.fn_ctx = m;
    struct http_server_limits lim;
    http_server_limits_default(&lim);
    lim.max_body = 1024;
    lim.json_errors = 1;
    lim.max_conns = METRICS_MAX_CONNS;
    lim.header_timeout_ms = METRICS_HEAD_TIMEOUT;
    lim.climits = m->climits = http_climits_new(METRICS_CONNS_PER_IP, 0, 0);
    m->srv = m->climits ? http_server_create(loop, o->metrics_fd, &http_server_buffered_ops, &m->hb, &lim) : NULL;
    if (!m->srv) {
        snprintf(err, errlen, "cannot serve the metrics listener");
        http_climits_free(m->climits);
        free(m);
        return NULL;
    }
    o->metrics_fd = -1; /* the server's now */
    return m;
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
 * PostgreSQL: 4 per core, at least 8, at most 16. A handler thread spends most of a request
 * waiting for the database's answer (a round trip, and the server's own work on other cores or
 * machines), so a few per core keep the cores busy; each holds a connection, and every server
 * on the database adds its own (handler threads + hashing threads + 1 for readiness) against
 * PostgreSQL's max_connections (100 by default): three servers on two cores take 3 × 11 = 33.
 * The cap keeps a few servers on large machines within that default; more needs --threads and
 * a larger max_connections (docs/CONFIG.md). */
static unsigned server_default_threads(const char *db)
{
    unsigned cpus = http_daemon_cpus();
    if (strncmp(db, "postgres://", 11) == 0 || strncmp(db, "postgresql://", 13) == 0) {
        unsigned n = 4 * cpus;
        return n < 8 ? 8 : n > 16 ? 16 : n;
    }
    return cpus + 1 < 2 ? 2 : cpus + 1;
}

static void *worker_create(void *ctx, struct loop *loop, int listen_fd, int listen_fd2, unsigned id, char *err,
                           size_t errlen)
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
    if (id == 0 && o->metrics_fd >= 0 && (w->met = metrics_start(o, loop, err, errlen)) == NULL) {
        http_pool_port_close(w->hash_port);
        http_pool_port_close(w->port);
        app_close(w->app);
        free(w);
        return NULL;
    }
    struct http_server_limits lim;
    http_server_limits_default(&lim);
    lim.max_body = API_MAX_BODY;
    lim.json_errors = 1;
    lim.extra_headers = o->served_by_header;
    lim.idle_timeout_ms = o->idle_ms;
    lim.stats = &o->http_stats;
    w->srv = http_server_create(loop, listen_fd, &http_server_buffered_ops, &w->hb, &lim);
    if (!w->srv) {
        snprintf(err, errlen, "cannot watch the listening socket");
        if (w->met) {
            http_server_free(w->met->srv);
            http_climits_free(w->met->climits);
        }
        free(w->met);
        http_pool_port_close(w->hash_port);
        http_pool_port_close(w->port);
        app_close(w->app);
        free(w);
        return NULL;
    }
    return w;
}

/* The metrics listener stops with the rest: a scrape during a graceful stop may be refused. */
static void worker_shutdown(void *p)
{
    struct server_worker *w = p;
    http_server_shutdown(w->srv);
    if (w->met)
        http_server_shutdown(w->met->srv);
}
static unsigned worker_conns(void *p)
{
    struct server_worker *w = p;
    return http_server_conns(w->srv) + (w->met ? http_server_conns(w->met->srv) : 0);
}
static void worker_free(void *p)
{
    struct server_worker *w = p;
    if (w->met) {
        http_server_free(w->met->srv);
        http_climits_free(w->met->climits);
        sodium_memzero(w->met->gate.token, sizeof(w->met->gate.token));
        free(w->met);
    }
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
    ROW("db-replica", OPTS_STR, db_replica, 0, 0, "URL", NULL,
        "a read replica of --db (a PostgreSQL hot standby): API\n"
        "reads go there unless it has not replayed the client's\n"
        "last write yet, or is down or lagging (default: none)"),
    ROW("replica-max-lag", OPTS_DURATION, replica_lag_ms, 1, 0, NULL, NULL,
        "a replica further behind than this is skipped (default 5s)"),
    ROW("workers", OPTS_UINT, workers, 1, 256, NULL, NULL,
        "event-loop threads (network I/O and HTTP; no database)\n(default: number of cores)"),
    ROW("cpu-affinity", OPTS_STR, cpu_affinity, 0, 0, "CPUS", NULL,
        "pin worker i to the i-th CPU of: off (default: not pinned),\nauto (the CPUs this process may run on) or a "
        "list such as\n0,2-3; the handler threads are not pinned"),
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
        "cores, 8-16)"),
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
    {.type = OPTS_TEXT,
     .help = "\nMetrics in the Prometheus text format (GET /metrics, and GET /health), served\n"
             "by an event loop on a listener of their own (default: none):\n"},
    ROW("metrics-listen", OPTS_STR, metrics_listen, 0, 0, "ADDR", NULL,
        "serve /metrics on ADDR:PORT (e.g. 127.0.0.1:9101);\nwithout a token only loopback clients are answered,\n"
        "and the address must be a loopback one"),
    ROW("metrics-token", OPTS_STR, metrics_token, 0, 0, "TOKEN", NULL,
        "a scrape must send Authorization: Bearer TOKEN (from\nany address; also AGORA_METRICS_TOKEN)"),
};
#undef ROW

static const struct opts_cmd command = {
    .name = "agora server",
    .head = "usage: agora server [options]\n\n"
            "A web server of the social network (JSON API under /api/v1 and the web UI).\n\n",
    OPTS_TABLE(flags),
    .width = 22,
};

/* Binds the metrics listener (before the workers start, so that a taken port or a forbidden
 * address stops the server at once). Without a token the address must be a loopback one: the
 * gate would refuse every other client anyway, and an operator who bound 0.0.0.0 surely meant
 * to scrape from elsewhere. Returns 0, or -1 with err set. */
static int open_metrics(struct server_opts *o, char *err, size_t errlen)
{
    if (net_parse_addr(o->metrics_listen, &o->metrics_addr) < 0) {
        snprintf(err, errlen, "invalid --metrics-listen address '%s'", o->metrics_listen);
        return -1;
    }
    if (!o->metrics_token[0] && !net_is_loopback((const struct sockaddr *)&o->metrics_addr.ss)) {
        snprintf(err, errlen,
                 "--metrics-listen %s is not a loopback address: give a --metrics-token (or "
                 "AGORA_METRICS_TOKEN) that scrapers must send",
                 o->metrics_listen);
        return -1;
    }
    if (o->metrics_token[0] && strlen(o->metrics_token) < 16)
        fprintf(stderr,
                "agora server: warning: the metrics token has only %zu characters; use 32 or more random ones\n",
                strlen(o->metrics_token));
    int fd = net_listen(&o->metrics_addr, 0, 64);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s for metrics: %s", o->metrics_listen, strerror(-fd));
        return -1;
    }
    /* The port actually bound (":0" in tests). */
    o->metrics_addr.len = sizeof(o->metrics_addr.ss);
    getsockname(fd, (struct sockaddr *)&o->metrics_addr.ss, &o->metrics_addr.len);
    o->metrics_fd = fd;
    return 0;
}

int cmd_server(int argc, char **argv)
{
    struct server_opts o = {
        .workers = 0, .idle_ms = 60000, .queue_wait_ms = 1000, .hash_wait_ms = 1000, .session_days = 30};
    app_limits_default(&o.limits);
    client_trust_default(&o.trust);
    snprintf(o.listen, sizeof(o.listen), "127.0.0.1:8001");
    snprintf(o.cpu_affinity, sizeof(o.cpu_affinity), "off");
    snprintf(o.db, sizeof(o.db), "sqlite:data/agora.db");
    cli_default_web_dir(o.web, sizeof(o.web));
    o.metrics_fd = -1;
    const char *env_token = getenv("AGORA_METRICS_TOKEN");
    if (env_token && strlen(env_token) >= sizeof(o.metrics_token)) {
        /* as --metrics-token does: cut, the scraper's token would never match */
        fprintf(stderr, "agora server: AGORA_METRICS_TOKEN: value too long (at most %zu characters)\n",
                sizeof(o.metrics_token) - 1);
        return 1;
    }
    if (env_token && *env_token)
        snprintf(o.metrics_token, sizeof(o.metrics_token), "%s", env_token);
    int r = opts_cmd_parse(&command, &o, argc, argv, NULL);
    if (r != OPTS_CONTINUE)
        return r;
    if (o.db_replica[0] && strncmp(o.db, "postgres://", 11) != 0 && strncmp(o.db, "postgresql://", 13) != 0) {
        fprintf(stderr, "agora server: --db-replica needs a PostgreSQL --db (postgres://...): a replica is a "
                        "PostgreSQL hot standby of it\n");
        return 1;
    }
    char perr[256];
    if (cpus_parse(o.cpu_affinity, &o.cpus, perr, sizeof(perr)) < 0) {
        fprintf(stderr, "agora server: %s\n", perr);
        return 1;
    }
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
    /* A slot for every thread that handles requests: the loops and both pools. */
    o.metrics = app_metrics_create(workers + threads + hash_threads);
    if (!o.metrics) {
        fprintf(stderr, "agora server: out of memory\n");
        return 1;
    }
    if (o.metrics_listen[0] && open_metrics(&o, err, sizeof(err)) < 0)
        goto fail;
    /* First, so that every app below answers /health from it; it also checks the database. */
    o.ready = app_ready_start(o.db, 0, 0, err, sizeof(err));
    if (!o.ready)
        goto fail;
    /* Before the pools: their apps take it from the options. It need not answer yet. */
    if (o.db_replica[0] &&
        (o.replica = app_replica_start(o.db_replica, o.db, o.replica_lag_ms ? o.replica_lag_ms : APP_REPLICA_MAX_LAG_MS,
                                       err, sizeof(err))) == NULL)
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
    char db_shown[sizeof o.db]; /* never the password */
    snprintf(db_shown, sizeof db_shown, "%s", o.db);
    store_redact(o.db, db_shown, sizeof db_shown);
    fprintf(stderr, "agora server: listening on %s, %u worker(s), %u handler thread(s), %u hashing thread(s), db %s\n",
            o.listen, workers, threads, hash_threads, db_shown);
    if (o.replica) {
        snprintf(db_shown, sizeof db_shown, "%s", o.db_replica);
        store_redact(o.db_replica, db_shown, sizeof db_shown);
        fprintf(stderr, "agora server: read replica %s (skipped beyond %u ms of lag)\n", db_shown,
                o.replica_lag_ms ? o.replica_lag_ms : APP_REPLICA_MAX_LAG_MS);
    }
    if (o.metrics_fd >= 0) {
        char shown[80];
        net_format_addr(&o.metrics_addr, shown, sizeof(shown));
        fprintf(stderr, "agora server: metrics on http://%s/metrics (%s)\n", shown,
                o.metrics_token[0] ? "bearer token" : "loopback clients only");
    }
    struct http_daemon_config dc = {
        .listen = o.listen, .workers = workers, .shutdown_ms = 10000, .name = "agora server", .cpus = &o.cpus};
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
    app_replica_stop(o.replica);
    app_ready_stop(o.ready);
    if (o.metrics_fd >= 0)
        close(o.metrics_fd);
    app_metrics_free(o.metrics);
    sodium_memzero(o.metrics_token, sizeof(o.metrics_token));
    if (rc == 0)
        fprintf(stderr, "agora server: stopped\n");
    return rc;
fail:
    fprintf(stderr, "agora server: %s\n", err);
    http_pool_destroy(o.hash_pool);
    http_pool_destroy(o.pool);
    app_replica_stop(o.replica);
    app_ready_stop(o.ready);
    if (o.metrics_fd >= 0)
        close(o.metrics_fd);
    app_metrics_free(o.metrics);
    sodium_memzero(o.metrics_token, sizeof(o.metrics_token));
    return 1;
}
