/* server.c — `agora server`: a web server of the social network.
 *
 * Runs N worker threads (http/daemon.h), each with its own struct app (its own database
 * connection) behind the buffered HTTP handler. Stateless: any request may go to any server.
 * Requests that hash a password (sign-up, log-in: app_hashes_password) never run on a worker's
 * event loop: they go to a bounded pool of hashing threads (http/pool.h), each with a struct app
 * of its own, shared by every worker of the process; everything else, /health included, runs on
 * the loop. The pool is started before the workers and stopped after them (a graceful stop lets
 * the workers' waiting requests finish first). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/api.h"
#include "app/app.h"
#include "app/client_addr.h"
#include "cli/commands.h"
#include "http/daemon.h"
#include "http/pool.h"
#include "http/server.h"
#include "lb/config.h"

struct server_opts {
    char listen[128];
    char db[1024];
    char web[PATH_MAX];
    char served_by[128];
    char served_by_header[160]; /* "X-Served-By: ...\r\n" for responses the HTTP layer makes */
    unsigned workers;
    unsigned idle_ms;
    unsigned hash_threads; /* 0 = number of CPUs */
    unsigned hash_queue;   /* 0 = 32 per thread */
    unsigned hash_wait_ms;
    struct app_limits limits;
    struct client_trust trust;
    int trust_set; /* a --trusted-proxy flag replaced the default */
    struct http_pool *pool;
    int session_days;
};

struct server_worker {
    struct app *app;
    struct http_server *srv;
    struct http_buffered hb;
    struct http_pool_port *port;
};

static void app_config_of(const struct server_opts *o, struct app_config *ac)
{
    *ac = (struct app_config){
        .db_url = o->db, .served_by = o->served_by, .web_dir = o->web, .limits = &o->limits, .trust = &o->trust,
        .session_days = o->session_days};
}

/* The hashing pool's threads: each has an app (a database connection) of its own. */
static void *hash_thread_init(void *ctx, unsigned id, char *err, size_t errlen)
{
    struct app_config ac;
    app_config_of(ctx, &ac);
    return app_open(&ac, err, errlen);
}

static void hash_thread_fini(void *ctx, void *app) { app_close(app); }

static struct http_pool_port *pick(void *ctx, const struct http_request *req)
{
    struct server_worker *w = ctx;
    return app_hashes_password(req) ? w->port : NULL;
}

static void *worker_create(void *ctx, struct loop *loop, int listen_fd, unsigned id, char *err, size_t errlen)
{
    struct server_opts *o = ctx;
    struct server_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    struct app_config ac;
    app_config_of(o, &ac);
    w->app = app_open(&ac, err, errlen);
    if (!w->app) {
        free(w);
        return NULL;
    }
    w->port = http_pool_port_open(o->pool, loop);
    if (!w->port) {
        snprintf(err, errlen, "cannot open the hashing pool's port");
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

static void usage(void)
{
    printf("usage: agora server [options]\n\n"
           "A web server of the social network (JSON API under /api/v1 and the web UI).\n\n"
           "  --listen ADDR:PORT     address to serve on (default 127.0.0.1:8001)\n"
           "  --db URL               database: sqlite:PATH (default sqlite:data/agora.db)\n"
           "  --workers N            worker threads, each with its own database connection\n"
           "                         (default: number of cores)\n"
           "  --web DIR              directory of the web UI files (default: the installed web/)\n"
           "  --served-by NAME       value of the X-Served-By header (default: the listen address)\n"
           "  --idle-timeout DURATION  close idle keep-alive connections after (default 60s)\n"
           "\nPassword hashing (sign-up and log-in) runs on a pool of threads, never on the\n"
           "event loops that answer everything else (/health included):\n"
           "  --hash-threads N       hashing threads, each with its own database connection\n"
           "                         (default: number of cores)\n"
           "  --hash-queue N         requests that may wait for a hashing thread (default 32\n"
           "                         per thread); beyond, 503 with Retry-After\n"
           "  --hash-wait DURATION   a request that waits longer gets 503 with Retry-After\n"
           "                         (default 1s)\n"
           "\nThrottles, counted in the database (so shared by every server on it); a full\n"
           "one answers 429 with Retry-After. LIMIT is N/DURATION (e.g. 10/15m) or off:\n"
           "  --login-limit LIMIT    failed log-ins per account (default 10/15m); a successful\n"
           "                         log-in clears it\n"
           "  --login-address-limit LIMIT  failed log-ins per client address (default 50/15m)\n"
           "  --signup-limit LIMIT   sign-ups per client address (default 5/10m)\n"
           "  --trusted-proxy ADDR[/BITS][,...]  peers whose X-Forwarded-For names the client\n"
           "                         (repeatable; default 127.0.0.0/8,::1; 'none': no one); the\n"
           "                         client is the right-most address not itself trusted.\n"
           "                         IPv6 clients are counted by /64\n"
           "  --session-days N       a log-in session unused for N days expires (sliding;\n"
           "                         1..3650, default 30)\n"
           "  --help                 show this help\n");
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
    if (end == v || *end != '/' || n < 1 || n > 1000000 || lb_parse_duration(end + 1, &ms) < 0 || ms == 0)
        return -1;
    l->count = (int)n;
    l->window_ms = ms;
    return 0;
}

int cmd_server(int argc, char **argv)
{
    struct server_opts o = {.workers = 0, .idle_ms = 60000, .hash_wait_ms = 1000, .session_days = 30};
    app_limits_default(&o.limits);
    client_trust_default(&o.trust);
    snprintf(o.listen, sizeof(o.listen), "127.0.0.1:8001");
    snprintf(o.db, sizeof(o.db), "sqlite:data/agora.db");
    cli_default_web_dir(o.web, sizeof(o.web));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "agora server: %s needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--listen"))
            snprintf(o.listen, sizeof(o.listen), "%s", v);
        else if (!strcmp(a, "--db"))
            snprintf(o.db, sizeof(o.db), "%s", v);
        else if (!strcmp(a, "--web"))
            snprintf(o.web, sizeof(o.web), "%s", v);
        else if (!strcmp(a, "--served-by"))
            snprintf(o.served_by, sizeof(o.served_by), "%s", v);
        else if (!strcmp(a, "--workers")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 256) {
                fprintf(stderr, "agora server: --workers must be 1..256\n");
                return 2;
            }
            o.workers = (unsigned)n;
        } else if (!strcmp(a, "--session-days")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < 1 || n > 3650) {
                fprintf(stderr, "agora server: --session-days must be 1..3650\n");
                return 2;
            }
            o.session_days = (int)n;
        } else if (!strcmp(a, "--idle-timeout")) {
            if (lb_parse_duration(v, &o.idle_ms) < 0 || o.idle_ms == 0) {
                fprintf(stderr, "agora server: --idle-timeout: '%s' is not a duration\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--hash-threads") || !strcmp(a, "--hash-queue")) {
            char *end;
            long n = strtol(v, &end, 10);
            long max = !strcmp(a, "--hash-threads") ? 256 : 100000;
            if (*end || n < 1 || n > max) {
                fprintf(stderr, "agora server: %s must be 1..%ld\n", a, max);
                return 2;
            }
            *(!strcmp(a, "--hash-threads") ? &o.hash_threads : &o.hash_queue) = (unsigned)n;
        } else if (!strcmp(a, "--hash-wait")) {
            if (lb_parse_duration(v, &o.hash_wait_ms) < 0 || o.hash_wait_ms == 0) {
                fprintf(stderr, "agora server: --hash-wait: '%s' is not a duration\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--login-limit") || !strcmp(a, "--login-address-limit") || !strcmp(a, "--signup-limit")) {
            struct app_limit *l = !strcmp(a, "--login-limit")           ? &o.limits.login_account
                                  : !strcmp(a, "--login-address-limit") ? &o.limits.login_address
                                                                        : &o.limits.signup_address;
            if (parse_limit(v, l) < 0) {
                fprintf(stderr, "agora server: %s: '%s' is not N/DURATION (e.g. 10/15m) or off\n", a, v);
                return 2;
            }
        } else if (!strcmp(a, "--trusted-proxy")) {
            char msg[160];
            if (!o.trust_set) {
                o.trust.n = 0; /* the flags replace the loopback default */
                o.trust_set = 1;
            }
            if (client_trust_add(&o.trust, v, msg, sizeof(msg)) < 0) {
                fprintf(stderr, "agora server: --trusted-proxy: %s\n", msg);
                return 2;
            }
        } else {
            fprintf(stderr, "agora server: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!o.served_by[0])
        snprintf(o.served_by, sizeof(o.served_by), "%s", o.listen);
    snprintf(o.served_by_header, sizeof(o.served_by_header), "X-Served-By: %s\r\n", o.served_by);
    unsigned workers = o.workers ? o.workers : http_daemon_cpus();
    /* One descriptor per client (no cap: past the limit, accepting pauses), plus a reserve. */
    http_daemon_raise_fd_limit("agora server", 10000 + 1024);
    unsigned hash_threads = o.hash_threads ? o.hash_threads : http_daemon_cpus();
    char err[256];
    struct http_pool_config pc = {.name = "hashing",
                                  .threads = hash_threads,
                                  .max_queue = o.hash_queue,
                                  .max_wait_ms = o.hash_wait_ms,
                                  .thread_init = hash_thread_init,
                                  .thread_fini = hash_thread_fini,
                                  .handler = app_handle,
                                  .ctx = &o};
    o.pool = http_pool_create(&pc, err, sizeof(err));
    if (!o.pool) {
        fprintf(stderr, "agora server: %s\n", err);
        return 1;
    }
    fprintf(stderr, "agora server: listening on %s, %u worker(s), %u hashing thread(s), db %s\n", o.listen, workers,
            hash_threads, o.db);
    struct http_daemon_config dc = {
        .listen = o.listen, .workers = workers, .shutdown_ms = 10000, .name = "agora server"};
    struct http_daemon_ops ops = {
        .worker_create = worker_create,
        .worker_shutdown = worker_shutdown,
        .worker_conns = worker_conns,
        .worker_free = worker_free,
    };
    int rc = http_daemon_run(&dc, &ops, &o);
    http_pool_destroy(o.pool); /* after the workers: their requests waiting on it are answered */
    if (rc == 0)
        fprintf(stderr, "agora server: stopped\n");
    return rc;
}
