/* server.c — `agora server`: a web server of the social network.
 *
 * Runs N worker threads (http/daemon.h), each with its own struct app (its own database
 * connection) behind the buffered HTTP handler. Stateless: any request may go to any server. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/app.h"
#include "cli/commands.h"
#include "http/daemon.h"
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
    int session_days;
};

struct server_worker {
    struct app *app;
    struct http_server *srv;
    struct http_buffered hb;
};

static void *worker_create(void *ctx, struct loop *loop, int listen_fd, unsigned id, char *err, size_t errlen)
{
    struct server_opts *o = ctx;
    struct server_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    struct app_config ac = {
        .db_url = o->db, .served_by = o->served_by, .web_dir = o->web, .session_days = o->session_days};
    w->app = app_open(&ac, err, errlen);
    if (!w->app) {
        free(w);
        return NULL;
    }
    w->hb.fn = app_handle;
    w->hb.fn_ctx = w->app;
    struct http_server_limits lim;
    http_server_limits_default(&lim);
    lim.max_body = 64 * 1024;
    lim.json_errors = 1;
    lim.extra_headers = o->served_by_header;
    lim.idle_timeout_ms = o->idle_ms;
    w->srv = http_server_create(loop, listen_fd, &http_server_buffered_ops, &w->hb, &lim);
    if (!w->srv) {
        snprintf(err, errlen, "cannot watch the listening socket");
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
    http_server_free(w->srv);
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
           "  --session-days N       a log-in session unused for N days expires (sliding;\n"
           "                         1..3650, default 30)\n"
           "  --help                 show this help\n");
}

int cmd_server(int argc, char **argv)
{
    struct server_opts o = {.workers = 0, .idle_ms = 60000, .session_days = 30};
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
        } else {
            fprintf(stderr, "agora server: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!o.served_by[0])
        snprintf(o.served_by, sizeof(o.served_by), "%s", o.listen);
    snprintf(o.served_by_header, sizeof(o.served_by_header), "X-Served-By: %s\r\n", o.served_by);
    unsigned workers = o.workers ? o.workers : http_daemon_cpus();
    fprintf(stderr, "agora server: listening on %s, %u worker(s), db %s\n", o.listen, workers, o.db);
    struct http_daemon_config dc = {
        .listen = o.listen, .workers = workers, .shutdown_ms = 10000, .name = "agora server"};
    struct http_daemon_ops ops = {
        .worker_create = worker_create,
        .worker_shutdown = worker_shutdown,
        .worker_conns = worker_conns,
        .worker_free = worker_free,
    };
    int rc = http_daemon_run(&dc, &ops, &o);
    if (rc == 0)
        fprintf(stderr, "agora server: stopped\n");
    return rc;
}
