/* up.c — `agora up`: the whole platform on one machine, supervised.
 *
 * Starts N web servers (`agora server`, on the N ports after the balancer's) sharing one
 * database, and the balancer (`agora lb`) in front of them, each as a child process of this one
 * (the same executable, so a crash stays isolated). The database is a SQLite file in the data
 * directory by default; --db URL names another (e.g. an existing PostgreSQL, which must answer
 * before the servers start); --postgres runs a private PostgreSQL cluster in DATA/postgres
 * (up_pg.h) as one more child, started and ready before the servers, restarted like them, and
 * stopped last (fast shutdown, SIGQUIT after 20 s, then SIGKILL). A child that
 * exits unexpectedly is restarted with a growing back-off (0.25 s doubling to 8 s, reset after
 * it has run 30 s); meanwhile the balancer routes around the missing server (connect failures
 * are retried on another server and health checks take it out). SIGINT/SIGTERM stop everything:
 * children get SIGTERM and up to 15 s to finish, then SIGKILL.
 *
 * Each web server's /metrics listens on 127.0.0.1:(its port + 1000), e.g. 9001 for :8001.
 * The balancer's admin API listens on 127.0.0.1:(balancer port + 404), e.g. 8404 for :8000; the
 * balancer writes its generated token to DATA/admin.token (0600), read here for each call and by
 * `agora ctl` by default. Once up, it prints the balancer's dashboard address (admin.h).
 * A control socket DATA/agora-up.sock takes one-line commands from `agora ctl server ...`:
 *   add            start one more web server on the next port and add it to the balancer
 *   remove PORT    drain that server in the balancer (no new requests; in-flight ones finish),
 *                  then stop its process (it is not restarted)
 *   list           the supervised processes
 *   upgrade        replace the balancer by a new one that takes its listening sockets
 *                  (--upgrade-from; the old one drains and exits; see ctl_upgrade)
 * and answers with one line of JSON.
 *
 * One module although over 700 lines: starting, supervising (restarts, retirements, upgrades)
 * and the control commands all work on the one table of children and must agree on each
 * child's state. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "app/store.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/up_pg.h"
#include "core/alloc.h"
#include "core/jsonw.h"
#include "core/loop.h"
#include "core/net.h"
#include "core/opts.h"
#include "http/daemon.h"
#include "http/tls.h"
#include "lb/admin.h"
#include "lb/lb.h"

/* A web server's /metrics listener: its API port plus this (loopback only). */
#define UP_METRICS_OFFSET 1000u

#define MAX_CHILDREN 65
#define MAX_ARGS     40

struct child {
    char name[32];
    char *argv[MAX_ARGS];
    int argc;
    pid_t pid;
    uint64_t started_ms;
    uint64_t restart_at_ms; /* 0 = not waiting */
    unsigned backoff_ms;
    unsigned port;          /* web servers: their port */
    int retiring;           /* being drained for removal: not restarted, stopped when drained */
    int retired;            /* removed for good */
    const char *exe;        /* NULL: this executable (agora) */
    const struct up_pg *pg; /* the PostgreSQL server: its set-up in the child */
    uint64_t stop_sent_ms;  /* the PostgreSQL server: when up asked it to stop (0: not yet) */
};

struct up {
    struct child kids[MAX_CHILDREN];
    int nkids;
    char exe[PATH_MAX];
    int stopping;
    char admin[64];                 /* balancer admin API address */
    char token_file[PATH_MAX + 16]; /* DATA/admin.token, rewritten by each balancer start */
    char db[3 * PATH_MAX + 64];
    struct up_pg pg;
    int db_slot; /* the PostgreSQL server's slot, or -1 */
    char web[PATH_MAX];
    unsigned server_workers;
    unsigned server_threads; /* 0: the server's default */
    unsigned db_wait_ms;     /* --db-wait */
    unsigned next_port;
    int ctl_fd;
    char ctl_path[PATH_MAX];
    /* the balancer: its slot, and while an upgrade runs the slot of the one being replaced */
    int lb, lb_old;
    char upgrade_sock[PATH_MAX + 16]; /* DATA/lb-upgrade.sock (lb/lb.h --upgrade-socket) */
};

static uint64_t now_ms(void) { return loop_clock_us() / 1000; }

/* Appends one printf-formatted argument to c's argv. */
static void child_varg(struct child *c, const char *fmt, va_list ap)
{
    char tmp[PATH_MAX + 64];
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    if (c->argc < MAX_ARGS - 1)
        c->argv[c->argc++] = alloc_strdup(tmp);
    c->argv[c->argc] = NULL;
}

static void child_arg(struct child *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void child_arg(struct child *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    child_varg(c, fmt, ap);
    va_end(ap);
}

/* Appends a flag and its printf-formatted value. */
static void child_flag(struct child *c, const char *flag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void child_flag(struct child *c, const char *flag, const char *fmt, ...)
{
    va_list ap;
    child_arg(c, "%s", flag);
    va_start(ap, fmt);
    child_varg(c, fmt, ap);
    va_end(ap);
}

static int spawn(struct up *u, struct child *c)
{
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "agora up: cannot start %s: %s\n", c->name, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* Own process group: a Ctrl-C in the terminal reaches only `agora up`, which then stops
         * the children in order (one signal each, so their stop stays graceful). And a child
         * whose supervisor dies is told to stop. */
        setpgid(0, 0);
        if (c->pg && up_pg_child_setup(c->pg) < 0)
            _exit(127);
        /* After the identity change, which clears it. PostgreSQL's fast shutdown is SIGINT. */
        prctl(PR_SET_PDEATHSIG, c->pg ? SIGINT : SIGTERM);
        if (getppid() == 1)
            _exit(0); /* the supervisor died before prctl */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        const char *exe = c->exe ? c->exe : u->exe;
        execv(exe, c->argv);
        fprintf(stderr, "agora up: cannot run %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    c->started_ms = now_ms();
    c->restart_at_ms = 0;
    return 0;
}

struct up_opts {
    char listen[128], data[PATH_MAX], policy[32], access_log[PATH_MAX], db[1024];
    char tls_listen[128], tls_cert[PATH_MAX], tls_key[PATH_MAX];
    unsigned nservers, server_workers, server_threads, lb_workers;
    unsigned db_wait_ms;
    int postgres;
};

#define ROW(fl, t, f, lo, hi, a, h) OPTS_ROW(struct up_opts, fl, t, f, lo, hi, a, NULL, h)
static const struct opts_def flags[] = {
    ROW("listen", OPTS_STR, listen, 0, 0, "ADDR:PORT",
        "balancer address (default :8000); servers use the next N ports\non 127.0.0.1"),
    ROW("servers", OPTS_UINT, nservers, 1, MAX_CHILDREN - 1, NULL, "number of web servers (default 3)"),
    ROW("data", OPTS_STR, data, 0, 0, "DIR", "data directory, database at DIR/agora.db (default ./data)"),
    ROW("db", OPTS_STR, db, 0, 0, "URL",
        "the servers' database instead: sqlite:PATH or an existing\nPostgreSQL, postgres://USER@HOST:PORT/DBNAME"),
    ROW("db-wait", OPTS_DURATION, db_wait_ms, 1, 3600000, "DURATION",
        "how long --db's PostgreSQL may take to answer at start\n(default 10s)"),
    ROW("postgres", OPTS_FLAG, postgres, 0, 0, NULL,
        "run a private PostgreSQL cluster in DIR/postgres (initdb\non the first run; Unix socket only) and use it"),
    ROW("policy", OPTS_STR, policy, 0, 0, "NAME", "balancing policy (default least-conn)"),
    ROW("server-workers", OPTS_UINT, server_workers, 1, 64, NULL, "worker threads per web server (default 1)"),
    ROW("server-threads", OPTS_UINT, server_threads, 1, 1024, NULL,
        "handler threads per web server (default: the server's\nown, cores + 1 for SQLite)"),
    ROW("lb-workers", OPTS_UINT, lb_workers, 1, 256, NULL, "balancer worker threads (default: number of cores)"),
    ROW("access-log", OPTS_STR, access_log, 0, 0, "DEST", "balancer access log: off (default), stdout or a file"),
    ROW("tls-listen", OPTS_STR, tls_listen, 0, 0, "ADDR:PORT",
        "the balancer's HTTPS address (default: the --listen host,\nits port + 443, e.g. :8443), or off"),
    ROW("tls-cert", OPTS_STR, tls_cert, 0, 0, "FILE",
        "certificate for HTTPS (default: a self-signed one for\nlocalhost, made on the first run in DIR/tls-cert.pem)"),
    ROW("tls-key", OPTS_STR, tls_key, 0, 0, "FILE", "its private key (default DIR/tls-key.pem, mode 0600)"),
};
#undef ROW

static const struct opts_cmd command = {
    .name = "agora up",
    .head = "usage: agora up [options]\n\n"
            "Runs the whole platform on this machine: the load balancer and N web servers sharing one\n"
            "database (SQLite by default). Ctrl-C (or SIGTERM) stops everything cleanly.\n\n",
    OPTS_TABLE(flags),
    .width = 20,
};

/* Waits (bounded) until addr accepts connections. */
static int wait_port(const struct net_addr *a, unsigned ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end) {
        int fd = net_connect(a);
        if (fd >= 0) {
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            close(fd);
            if (!err)
                return 0;
        }
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

/* Fills slot c as a web server on port. */
static void make_server(struct up *u, struct child *c, unsigned port)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "server %u", port);
    c->port = port;
    child_arg(c, "agora");
    child_arg(c, "server");
    child_flag(c, "--listen", "127.0.0.1:%u", port);
    child_flag(c, "--db", "%s", u->db);
    child_flag(c, "--workers", "%u", u->server_workers);
    if (u->server_threads)
        child_flag(c, "--threads", "%u", u->server_threads);
    child_flag(c, "--web", "%s", u->web);
    if (port + UP_METRICS_OFFSET <= 65535) /* loopback only: no token is needed (http/gate.h) */
        child_flag(c, "--metrics-listen", "127.0.0.1:%u", port + UP_METRICS_OFFSET);
}

/* Writes the JSON document in b (written with core/jsonw) and a newline to the control
 * connection fd, then frees b. */
static void ctl_answer(int fd, struct buf *b)
{
    buf_puts(b, "\n");
    ssize_t w = write(fd, buf_head(b), buf_used(b));
    (void)w;
    buf_free(b);
}

/* Answers {"error": message}, the message printf-formatted. */
static void ctl_error(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctl_error(int fd, const char *fmt, ...)
{
    char msg[512];
    struct buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    jsonw_doc_str(&b, JSONW_SPACED, "error", msg);
    ctl_answer(fd, &b);
}

/* Asks the balancer's admin API; returns the HTTP status or -1. */
static int admin(struct up *u, const char *method, const char *path, const char *body)
{
    int status = -1;
    struct buf out = {0};
    char err[256], token[LB_ADMIN_TOKEN_MAX] = "";
    const char *env = getenv("AGORA_ADMIN_TOKEN"); /* the balancer uses it too, and writes no file */
    if (env && *env)
        snprintf(token, sizeof(token), "%s", env);
    else if (lb_admin_read_token(u->token_file, token, sizeof(token)) < 0)
        fprintf(stderr, "agora up: admin API: no token in %s yet\n", u->token_file);
    if (cli_http(u->admin, method, path, token, body, 5000, &status, &out, err, sizeof(err)) < 0) {
        fprintf(stderr, "agora up: admin API: %s\n", err);
        status = -1;
    }
    buf_free(&out);
    return status;
}

/* Prints where the balancer's dashboard is. With the token in the link's fragment (never sent
 * to the server) only when stdout is a terminal and the token file's token was accepted by the
 * admin API (waiting up to 5 s for the balancer to write it); a log that captures stdout must
 * not collect the admin token: it gets the token file's name instead. */
static void print_dashboard(struct up *u)
{
    char token[LB_ADMIN_TOKEN_MAX] = "", err[256];
    const char *env = getenv("AGORA_ADMIN_TOKEN");
    int status = -1;
    uint64_t deadline = now_ms() + 5000;
    while (status != 200 && now_ms() < deadline && !(env && *env) && isatty(STDOUT_FILENO)) {
        struct buf out = {0}; /* a cheap call: no points are newer than that */
        if (lb_admin_read_token(u->token_file, token, sizeof(token)) < 0 ||
            cli_http(u->admin, "GET", "/series?since=999999999", token, NULL, 1000, &status, &out, err, sizeof(err)) <
                0)
            status = -1;
        buf_free(&out);
        if (status != 200) {
            struct timespec ts = {0, 100 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    if (status == 200)
        printf("dashboard: http://%s/dashboard#token=%s\n", u->admin, token);
    else
        printf("dashboard: http://%s/dashboard  (admin token: %s)\n", u->admin,
               env && *env ? "$AGORA_ADMIN_TOKEN" : u->token_file);
    sodium_memzero(token, sizeof(token));
}

/* Stops a web server for good: SIGTERM, and no restart. */
static void retire(struct child *c)
{
    c->retired = 1;
    c->restart_at_ms = 0;
    if (c->pid > 0)
        kill(c->pid, SIGTERM);
}

static void ctl_add(struct up *u, int fd)
{
    if (u->nkids >= MAX_CHILDREN) {
        ctl_error(fd, "at most %d processes", MAX_CHILDREN);
        return;
    }
    unsigned port = u->next_port++;
    struct child *c = &u->kids[u->nkids];
    make_server(u, c, port);
    if (spawn(u, c) < 0) {
        ctl_error(fd, "cannot start a server process");
        return;
    }
    u->nkids++;
    struct net_addr sa;
    char a[64], url[80];
    struct buf body = {0};
    struct jsonw w;
    snprintf(a, sizeof(a), "127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "http://%s", a);
    net_parse_addr(a, &sa);
    if (wait_port(&sa, 10000) < 0) {
        retire(c);
        ctl_error(fd, "server on port %u did not start listening", port);
        return;
    }
    jsonw_doc_str(&body, JSONW_SPACED, "url", url);
    int st = admin(u, "POST", "/servers", buf_cstr(&body));
    buf_free(&body);
    if (st != 201 && st != 409) {
        retire(c);
        ctl_error(fd, "balancer refused the new server (status %d)", st);
        return;
    }
    fprintf(stderr, "agora up: added server on port %u\n", port);
    jsonw_init(&w, &body, JSONW_SPACED);
    jsonw_object(&w);
    jsonw_kv_str(&w, "added", url);
    jsonw_kv_int(&w, "pid", c->pid);
    jsonw_end(&w);
    ctl_answer(fd, &body);
}

/* Upgrades the balancer in place: a new `agora lb` (the executable at its path now, so a new
 * binary is picked up) with the same flags and the web servers running now takes the old one's
 * listening sockets (--upgrade-from); the old one finishes its requests and exits by itself.
 * Until it has, the old one stays the supervised balancer: if the new one fails first, nothing
 * changes. */
static void ctl_upgrade(struct up *u, int fd)
{
    struct child *old = &u->kids[u->lb];
    if (u->lb_old >= 0) {
        ctl_error(fd, "an upgrade of the balancer is in progress");
        return;
    }
    if (old->pid <= 0) {
        ctl_error(fd, "the balancer is not running (it is being restarted)");
        return;
    }
    if (u->nkids >= MAX_CHILDREN) {
        ctl_error(fd, "at most %d processes", MAX_CHILDREN);
        return;
    }
    struct child *c = &u->kids[u->nkids];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "balancer");
    for (int k = 0; k < old->argc; k++) {
        if (!strcmp(old->argv[k], "--backend") || !strcmp(old->argv[k], "--upgrade-from")) {
            k++; /* and its value: the servers are those running now */
            continue;
        }
        child_arg(c, "%s", old->argv[k]);
    }
    for (int i = 0; i < u->nkids; i++) {
        struct child *s = &u->kids[i];
        if (s->port && !s->retired && !s->retiring && c->argc < MAX_ARGS - 4)
            child_flag(c, "--backend", "http://127.0.0.1:%u", s->port);
    }
    child_flag(c, "--upgrade-from", "%s", u->upgrade_sock);
    if (spawn(u, c) < 0) {
        ctl_error(fd, "cannot start a balancer process");
        return;
    }
    u->lb_old = u->lb;
    u->lb = u->nkids++;
    fprintf(stderr, "agora up: upgrading the balancer: pid %d takes over from pid %d\n", c->pid, old->pid);
    struct buf body = {0};
    struct jsonw w;
    jsonw_init(&w, &body, JSONW_SPACED);
    jsonw_object(&w);
    jsonw_kv_int(&w, "upgrading_from_pid", old->pid);
    jsonw_kv_int(&w, "pid", c->pid);
    jsonw_end(&w);
    ctl_answer(fd, &body);
}

/* A balancer exited during an upgrade: the old one (done: the new one serves) or the new one
 * (failed: the old one goes on). Returns 1 when the exit is accounted for. */
static int upgrade_exit(struct up *u, int slot, int status)
{
    if (u->lb_old < 0 || (slot != u->lb_old && slot != u->lb))
        return 0;
    struct child *gone = &u->kids[slot];
    gone->retired = 1;
    if (slot == u->lb_old) {
        struct child *now = &u->kids[u->lb];
        /* Restarts of the new one bind afresh: drop --upgrade-from from its flags. */
        for (int k = 0; k + 1 < now->argc; k++)
            if (!strcmp(now->argv[k], "--upgrade-from")) {
                free(now->argv[k]);
                free(now->argv[k + 1]);
                memmove(&now->argv[k], &now->argv[k + 2], sizeof(now->argv[0]) * (size_t)(now->argc - k - 1));
                now->argc -= 2;
                break;
            }
        fprintf(stderr, "agora up: balancer upgraded: pid %d serves, the old one exited (status %d)\n", now->pid,
                WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    } else {
        u->lb = u->lb_old;
        fprintf(stderr, "agora up: the new balancer exited before taking over; pid %d goes on\n", u->kids[u->lb].pid);
    }
    u->lb_old = -1;
    return 1;
}

static void ctl_remove(struct up *u, int fd, unsigned port)
{
    for (int i = 0; i < u->nkids; i++) {
        struct child *c = &u->kids[i];
        if (c->port != port || c->retired || c->pg)
            continue;
        char path[96];
        snprintf(path, sizeof(path), "/servers/127.0.0.1:%u/drain", port);
        int st = admin(u, "POST", path, "{\"then\": \"remove\"}");
        if (st != 202 && st != 404) {
            ctl_error(fd, "balancer refused to drain (status %d)", st);
            return;
        }
        c->retiring = 1;
        fprintf(stderr, "agora up: draining server on port %u\n", port);
        char url[64];
        struct buf b = {0};
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
        jsonw_doc_str(&b, JSONW_SPACED, "draining", url);
        ctl_answer(fd, &b);
        return;
    }
    ctl_error(fd, "no web server on port %u", port);
}

static void ctl_list(struct up *u, int fd)
{
    struct buf b = {0};
    struct jsonw w;
    jsonw_init(&w, &b, JSONW_SPACED);
    jsonw_object(&w);
    jsonw_key(&w, "processes");
    jsonw_array(&w);
    for (int i = 0; i < u->nkids; i++) {
        struct child *c = &u->kids[i];
        jsonw_object(&w);
        jsonw_kv_str(&w, "name", c->name);
        jsonw_kv_int(&w, "pid", c->pid);
        jsonw_kv_str(&w, "state",
                     c->retired    ? "removed"
                     : c->retiring ? "draining"
                     : c->pid > 0  ? "running"
                                   : "restarting");
        jsonw_end(&w);
    }
    jsonw_end(&w);
    jsonw_end(&w);
    ctl_answer(fd, &b);
}

static void on_ctl(struct up *u)
{
    int fd = accept4(u->ctl_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char cmd[128];
    ssize_t n = read(fd, cmd, sizeof(cmd) - 1);
    if (n > 0) {
        cmd[n] = '\0';
        cmd[strcspn(cmd, "\r\n")] = '\0';
        unsigned port;
        if (u->stopping)
            ctl_error(fd, "agora up is stopping");
        else if (!strcmp(cmd, "add"))
            ctl_add(u, fd);
        else if (!strcmp(cmd, "list"))
            ctl_list(u, fd);
        else if (!strcmp(cmd, "upgrade"))
            ctl_upgrade(u, fd);
        else if (sscanf(cmd, "remove %u", &port) == 1)
            ctl_remove(u, fd, port);
        else
            ctl_error(fd, "unknown command (add, remove PORT, list, upgrade)");
    }
    close(fd);
}

/* Stops retiring servers once the balancer no longer lists them. */
static void check_retiring(struct up *u)
{
    for (int i = 0; i < u->nkids; i++) {
        struct child *c = &u->kids[i];
        if (!c->retiring || c->retired)
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/servers/127.0.0.1:%u/drain", c->port);
        /* A drain request on a server that is gone answers 404: drained and removed. */
        int st = admin(u, "POST", path, "{\"then\": \"remove\"}");
        if (st == 404) {
            retire(c);
            fprintf(stderr, "agora up: server on port %u drained and stopped\n", c->port);
        }
    }
}

static int ctl_listen(struct up *u, const char *data)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/agora-up.sock", data) >= (int)sizeof(sa.sun_path))
        return -1;
    snprintf(u->ctl_path, sizeof(u->ctl_path), "%s", sa.sun_path);
    unlink(sa.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    chmod(sa.sun_path, 0600);
    u->ctl_fd = fd;
    return 0;
}

/* Stops the PostgreSQL server now (at start-up failures): fast shutdown, then immediate after
 * 20 s, then SIGKILL after 25 s; waits for it. */
static void stop_db_now(struct up *u)
{
    struct child *c = u->db_slot >= 0 ? &u->kids[u->db_slot] : NULL;
    if (!c || c->pid <= 0)
        return;
    kill(c->pid, SIGINT);
    uint64_t t0 = now_ms();
    int stage = 0, status;
    while (waitpid(c->pid, &status, WNOHANG) == 0) {
        if (stage == 0 && now_ms() - t0 > 20000) {
            kill(c->pid, SIGQUIT);
            stage = 1;
        } else if (stage == 1 && now_ms() - t0 > 25000) {
            kill(c->pid, SIGKILL);
            stage = 2;
        }
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    c->pid = 0;
}

/* Once every other child has exited: asks the PostgreSQL server to stop (fast shutdown: it
 * disconnects its clients, writes a checkpoint and exits), then escalates as stop_db_now does.
 * Called on every turn of the supervising loop while stopping. */
static void stop_db_step(struct up *u)
{
    struct child *c = &u->kids[u->db_slot];
    if (c->pid <= 0)
        return;
    uint64_t now = now_ms();
    if (!c->stop_sent_ms) {
        fprintf(stderr, "agora up: stopping PostgreSQL (fast shutdown)\n");
        kill(c->pid, SIGINT);
        c->stop_sent_ms = now;
    } else if (now - c->stop_sent_ms > 25000) {
        kill(c->pid, SIGKILL);
    } else if (now - c->stop_sent_ms > 20000) {
        kill(c->pid, SIGQUIT);
    }
}

/* Starts the PostgreSQL server of --postgres in its slot and waits (bounded) until it accepts
 * connections and the database "agora" exists. 0, or -1 (reported on stderr). */
static int start_db(struct up *u)
{
    char err[512];
    struct child *c = &u->kids[u->db_slot];
    if (spawn(u, c) < 0)
        return -1;
    int exited;
    if (up_pg_wait_ready(&u->pg, c->pid, 60000, &exited, err, sizeof(err)) < 0) {
        if (exited != -1)
            c->pid = 0; /* reaped */
        fprintf(stderr, "agora up: %s\n", err);
        up_pg_log_tail(&u->pg, 15);
        return -1;
    }
    fprintf(stderr, "agora up: PostgreSQL (pid %d, %s) accepts connections on %s\n", c->pid, u->pg.bindir, u->pg.dir);
    return 0;
}

int cmd_up(int argc, char **argv)
{
    struct up_opts o = {.listen = ":8000",
                        .data = "data",
                        .policy = "least-conn",
                        .access_log = "off",
                        .nservers = 3,
                        .server_workers = 1,
                        .db_wait_ms = 10000};
    int r = opts_cmd_parse(&command, &o, argc, argv, NULL);
    if (r != OPTS_CONTINUE)
        return r;
    if (o.postgres && o.db[0]) {
        fprintf(stderr, "agora up: --db and --postgres exclude each other\n");
        return 2;
    }
    const char *listen = o.listen, *data = o.data, *policy = o.policy, *access_log = o.access_log;
    unsigned nservers = o.nservers, server_workers = o.server_workers, lb_workers = o.lb_workers;
    struct net_addr la;
    if (net_parse_addr(listen, &la) < 0 || la.ss.ss_family != AF_INET) {
        fprintf(stderr, "agora up: invalid --listen '%s' (expected IPv4 HOST:PORT)\n", listen);
        return 2;
    }
    unsigned port = ntohs(((struct sockaddr_in *)&la.ss)->sin_port);
    if (port == 0 || port + 404 > 65535 || port + nservers > 65535) {
        fprintf(stderr, "agora up: --listen needs a port with %u free ports after it (and port + 404 for admin)\n",
                nservers);
        return 2;
    }
    if (mkdir(data, 0700) < 0 && errno != EEXIST) { /* the database and secrets: owner only */
        fprintf(stderr, "agora up: cannot create data directory '%s': %s\n", data, strerror(errno));
        return 1;
    }
    /* HTTPS beside HTTP: the balancer's second listener, with the operator's certificate or one
     * made here on the first run (self-signed, for localhost: browsers warn, curl needs -k). */
    char tls_listen[160] = "", tls_cert[PATH_MAX + 32] = "", tls_key[PATH_MAX + 32] = "";
    if (strcmp(o.tls_listen, "off")) {
        if (!o.tls_cert[0] != !o.tls_key[0]) {
            fprintf(stderr, "agora up: --tls-cert and --tls-key go together\n");
            return 2;
        }
        if (o.tls_listen[0]) {
            snprintf(tls_listen, sizeof(tls_listen), "%s", o.tls_listen);
        } else if (port + 443 > 65535) {
            fprintf(stderr, "agora up: no HTTPS port after %u: give --tls-listen ADDR:PORT or --tls-listen off\n",
                    port);
            return 2;
        } else {
            struct net_addr ta = la;
            ((struct sockaddr_in *)&ta.ss)->sin_port = htons((uint16_t)(port + 443));
            net_format_addr(&ta, tls_listen, sizeof(tls_listen));
        }
        if (o.tls_cert[0]) {
            snprintf(tls_cert, sizeof(tls_cert), "%s", o.tls_cert);
            snprintf(tls_key, sizeof(tls_key), "%s", o.tls_key);
        } else {
            snprintf(tls_cert, sizeof(tls_cert), "%s/tls-cert.pem", data);
            snprintf(tls_key, sizeof(tls_key), "%s/tls-key.pem", data);
            if (access(tls_cert, F_OK) < 0 || access(tls_key, F_OK) < 0) {
                char terr[600];
                if (http_tls_self_signed(tls_cert, tls_key, "localhost", "DNS:localhost,IP:127.0.0.1,IP:::1", 825, terr,
                                         sizeof(terr)) < 0) {
                    fprintf(stderr, "agora up: %s\n", terr);
                    return 1;
                }
                fprintf(stderr, "agora up: made a self-signed certificate for localhost: %s (key %s, mode 0600)\n",
                        tls_cert, tls_key);
            }
        }
    }
    http_daemon_raise_fd_limit("agora up", LB_C10K_FDS); /* the children inherit it */
    struct up *u = alloc_calloc(1, sizeof(*u));
    u->db_slot = -1;
    int rc = 1;
    ssize_t n = readlink("/proc/self/exe", u->exe, sizeof(u->exe) - 1);
    if (n <= 0) {
        fprintf(stderr, "agora up: cannot find my own executable\n");
        goto out;
    }
    u->exe[n] = '\0';
    u->ctl_fd = -1;
    cli_default_web_dir(u->web, sizeof(u->web));
    char err[512];
    if (o.db[0]) {
        snprintf(u->db, sizeof(u->db), "%s", o.db);
        u->db_wait_ms = o.db_wait_ms;
    } else if (o.postgres) {
        if (up_pg_prepare(&u->pg, data, err, sizeof(err)) < 0) {
            fprintf(stderr, "agora up: %s\n", err);
            if (strstr(err, "initdb failed"))
                up_pg_log_tail(&u->pg, 15);
            goto out;
        }
        fprintf(stderr, "agora up: %s PostgreSQL cluster in %s\n", u->pg.created ? "created (initdb) a" : "using the",
                u->pg.dir);
        snprintf(u->db, sizeof(u->db), "%s", u->pg.url);
    } else {
        snprintf(u->db, sizeof(u->db), "sqlite:%s/agora.db", data);
    }
    snprintf(u->admin, sizeof(u->admin), "127.0.0.1:%u", port + 404);
    snprintf(u->token_file, sizeof(u->token_file), "%s/admin.token", data);
    u->server_workers = server_workers;
    u->server_threads = o.server_threads;
    u->next_port = port + 1 + nservers;
    if (ctl_listen(u, data) < 0)
        fprintf(stderr, "agora up: control socket unavailable in %s: %s (agora ctl server ... will not work)\n", data,
                strerror(errno));

    /* Children: the servers in slots 0..N-1, the balancer in the last slot used at start. */
    struct child *lb = &u->kids[nservers];
    snprintf(lb->name, sizeof(lb->name), "balancer");
    child_arg(lb, "agora");
    child_arg(lb, "lb");
    child_flag(lb, "--listen", "%s", listen);
    child_flag(lb, "--admin-listen", "%s", u->admin);
    child_flag(lb, "--admin-token-file", "%s", u->token_file);
    child_flag(lb, "--policy", "%s", policy);
    child_flag(lb, "--health-interval", "%s", "2s");
    child_flag(lb, "--health-timeout", "%s", "1s");
    child_flag(lb, "--access-log", "%s", access_log);
    snprintf(u->upgrade_sock, sizeof(u->upgrade_sock), "%s/lb-upgrade.sock", data);
    child_flag(lb, "--upgrade-socket", "%s", u->upgrade_sock);
    if (tls_listen[0]) {
        child_flag(lb, "--tls-listen", "%s", tls_listen);
        child_flag(lb, "--tls-cert", "%s", tls_cert);
        child_flag(lb, "--tls-key", "%s", tls_key);
    }
    if (lb_workers) {
        child_flag(lb, "--workers", "%u", lb_workers);
    }
    for (unsigned i = 0; i < nservers; i++) {
        make_server(u, &u->kids[i], port + 1 + i);
        child_flag(lb, "--backend", "http://127.0.0.1:%u", port + 1 + i);
    }
    u->nkids = (int)nservers + 1;
    if (o.postgres) {
        struct child *c = &u->kids[u->nkids];
        snprintf(c->name, sizeof(c->name), "postgres");
        for (int k = 0; u->pg.argv[k]; k++)
            child_arg(c, "%s", u->pg.argv[k]);
        c->exe = u->pg.exe;
        c->pg = &u->pg;
        u->db_slot = u->nkids++;
    }
    u->lb = (int)nservers;
    u->lb_old = -1;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        fprintf(stderr, "agora up: signalfd: %s\n", strerror(errno));
        goto out;
    }
    if (u->db_slot >= 0 && start_db(u) < 0)
        goto out;
    if (!strncmp(u->db, "postgres://", 11) || !strncmp(u->db, "postgresql://", 13)) {
        /* An existing PostgreSQL: say now, clearly, if it is not there (each server would fail). */
        if (up_db_ping(u->db, u->db_wait_ms, err, sizeof(err)) < 0) {
            char shown[sizeof(u->db)];
            snprintf(shown, sizeof(shown), "%s", u->db);
            store_redact(u->db, shown, sizeof(shown));
            fprintf(stderr, "agora up: the database %s: %s\n", shown, err);
            goto out;
        }
    }
    for (int i = 0; i < u->nkids; i++) {
        if (i == u->db_slot)
            continue;
        if (spawn(u, &u->kids[i]) < 0)
            goto out;
        if (i == 0) {
            /* Let the first server create the schema before the others race for it. */
            struct net_addr sa;
            char a[64];
            snprintf(a, sizeof(a), "127.0.0.1:%u", port + 1);
            net_parse_addr(a, &sa);
            wait_port(&sa, 10000);
        }
    }
    struct net_addr probe = la;
    if (((struct sockaddr_in *)&probe.ss)->sin_addr.s_addr == htonl(INADDR_ANY))
        ((struct sockaddr_in *)&probe.ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char shown[80];
    net_format_addr(&probe, shown, sizeof(shown));
    if (wait_port(&probe, 10000) == 0) {
        printf("agora is up: open http://%s/  (%u web servers, data in %s; Ctrl-C to stop)\n", shown, nservers, data);
        if (tls_listen[0]) {
            struct net_addr tprobe;
            char tshown[80];
            if (net_parse_addr(tls_listen, &tprobe) == 0 && tprobe.ss.ss_family == AF_INET &&
                ((struct sockaddr_in *)&tprobe.ss)->sin_addr.s_addr == htonl(INADDR_ANY))
                ((struct sockaddr_in *)&tprobe.ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            net_format_addr(&tprobe, tshown, sizeof(tshown));
            if (!strncmp(tshown, "127.0.0.1:", 10)) /* the name the self-signed certificate is for */
                printf("https: https://localhost:%s/%s\n", tshown + 10, o.tls_cert[0] ? "" : "  (self-signed)");
            else
                printf("https: https://%s/\n", tshown);
        }
        char dbshown[sizeof(u->db)];
        snprintf(dbshown, sizeof(dbshown), "%s", u->db);
        store_redact(u->db, dbshown, sizeof(dbshown));
        printf("database: %s%s\n", dbshown, u->db_slot >= 0 ? "  (PostgreSQL run by agora up)" : "");
        if (port + 1 + UP_METRICS_OFFSET <= 65535)
            printf("server metrics: http://127.0.0.1:%u/metrics ... :%u/metrics  (each web server's port + %u; "
                   "loopback only)\n",
                   port + 1 + UP_METRICS_OFFSET, port + nservers + UP_METRICS_OFFSET, UP_METRICS_OFFSET);
        print_dashboard(u);
    } else
        printf("agora up: the balancer is not answering on %s yet; still trying\n", shown);
    fflush(stdout);

    uint64_t kill_at = 0, next_retire_check = 0;
    for (;;) {
        int alive = 0, others = 0;
        uint64_t next_wake = 0;
        for (int i = 0; i < u->nkids; i++) {
            alive += u->kids[i].pid > 0;
            others += u->kids[i].pid > 0 && i != u->db_slot;
            if (u->kids[i].restart_at_ms && (!next_wake || u->kids[i].restart_at_ms < next_wake))
                next_wake = u->kids[i].restart_at_ms;
        }
        if (u->stopping && !alive)
            break;
        if (u->stopping && now_ms() >= kill_at) {
            for (int i = 0; i < u->nkids; i++)
                if (u->kids[i].pid > 0 && i != u->db_slot)
                    kill(u->kids[i].pid, SIGKILL);
        }
        /* The database last: the servers' last requests finish first. */
        if (u->stopping && !others && u->db_slot >= 0)
            stop_db_step(u);
        int timeout_ms = 200;
        if (next_wake && !u->stopping && next_wake < now_ms() + 200)
            timeout_ms = next_wake > now_ms() ? (int)(next_wake - now_ms()) : 0;
        struct pollfd pf[2] = {{.fd = sfd, .events = POLLIN}, {.fd = u->ctl_fd, .events = POLLIN}};
        int np = poll(pf, u->ctl_fd >= 0 ? 2 : 1, timeout_ms);
        if (np > 0 && (pf[1].revents & POLLIN))
            on_ctl(u);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            if ((si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) && !u->stopping) {
                printf("agora up: stopping...\n");
                fflush(stdout);
                u->stopping = 1;
                kill_at = now_ms() + 15000;
                /* The balancer first, so it stops taking requests, then the servers (the
                 * database once they have exited). */
                for (int i = u->nkids - 1; i >= 0; i--)
                    if (u->kids[i].pid > 0 && i != u->db_slot)
                        kill(u->kids[i].pid, SIGTERM);
            }
        }
        /* Reap whatever exited (SIGCHLD may coalesce). */
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0)
                break;
            for (int i = 0; i < u->nkids; i++) {
                struct child *c = &u->kids[i];
                if (c->pid != pid)
                    continue;
                c->pid = 0;
                if (u->stopping || c->retired || upgrade_exit(u, i, status))
                    break;
                uint64_t ran = now_ms() - c->started_ms;
                c->backoff_ms =
                    ran > 30000 || !c->backoff_ms ? 250 : (c->backoff_ms * 2 > 8000 ? 8000 : c->backoff_ms * 2);
                c->restart_at_ms = now_ms() + c->backoff_ms;
                if (WIFSIGNALED(status))
                    fprintf(stderr, "agora up: %s (pid %d) killed by signal %d; restarting in %u ms\n", c->name, pid,
                            WTERMSIG(status), c->backoff_ms);
                else
                    fprintf(stderr, "agora up: %s (pid %d) exited with status %d; restarting in %u ms\n", c->name, pid,
                            WEXITSTATUS(status), c->backoff_ms);
                break;
            }
        }
        if (!u->stopping) {
            for (int i = 0; i < u->nkids; i++) {
                struct child *c = &u->kids[i];
                if (!c->pid && !c->retired && c->restart_at_ms && now_ms() >= c->restart_at_ms)
                    spawn(u, c);
            }
            if (now_ms() >= next_retire_check) {
                check_retiring(u);
                next_retire_check = now_ms() + 500;
            }
        }
    }
    close(sfd);
    printf("agora up: stopped\n");
    rc = 0;
out:
    stop_db_now(u);
    up_pg_free(&u->pg);
    if (u->ctl_fd >= 0) {
        close(u->ctl_fd);
        unlink(u->ctl_path);
    }
    for (int i = 0; i < MAX_CHILDREN; i++)
        for (int k = 0; k < u->kids[i].argc; k++)
            free(u->kids[i].argv[k]);
    free(u);
    return rc;
}
