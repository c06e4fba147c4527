/* up.c — `agora up`: the whole platform on one machine, supervised.
 *
 * Starts N web servers (`agora server`, on the N ports after the balancer's) sharing one SQLite
 * database in the data directory, and the balancer (`agora lb`) in front of them, each as a
 * child process of this one (the same executable, so a crash stays isolated). A child that
 * exits unexpectedly is restarted with a growing back-off (0.25 s doubling to 8 s, reset after
 * it has run 30 s); meanwhile the balancer routes around the missing server (connect failures
 * are retried on another server and health checks take it out). SIGINT/SIGTERM stop everything:
 * children get SIGTERM and up to 15 s to finish, then SIGKILL. */
#include <errno.h>
#include <stdarg.h>
#include <arpa/inet.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "core/loop.h"
#include "core/net.h"

#define MAX_CHILDREN 65
#define MAX_ARGS 40

struct child {
    char name[32];
    char *argv[MAX_ARGS];
    int argc;
    pid_t pid;
    uint64_t started_ms;
    uint64_t restart_at_ms; /* 0 = not waiting */
    unsigned backoff_ms;
};

struct up {
    struct child kids[MAX_CHILDREN];
    int nkids;
    char exe[PATH_MAX];
    int stopping;
};

static uint64_t now_ms(void) { return loop_clock_us() / 1000; }

static void child_arg(struct child *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void child_arg(struct child *c, const char *fmt, ...)
{
    char tmp[PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (c->argc < MAX_ARGS - 1)
        c->argv[c->argc++] = strdup(tmp);
    c->argv[c->argc] = NULL;
}

static int spawn(struct up *u, struct child *c)
{
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "agora up: cannot start %s: %s\n", c->name, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(u->exe, c->argv);
        fprintf(stderr, "agora up: cannot run %s: %s\n", u->exe, strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    c->started_ms = now_ms();
    c->restart_at_ms = 0;
    return 0;
}

static void usage(void)
{
    printf("usage: agora up [options]\n\n"
           "Runs the whole platform on this machine: the load balancer and N web servers sharing one\n"
           "SQLite database. Ctrl-C (or SIGTERM) stops everything cleanly.\n\n"
           "  --listen ADDR:PORT   balancer address (default :8000); servers use the next N ports\n"
           "                       on 127.0.0.1\n"
           "  --servers N          number of web servers (default 3)\n"
           "  --data DIR           data directory, database at DIR/agora.db (default ./data)\n"
           "  --policy NAME        balancing policy (default least-conn)\n"
           "  --server-workers N   worker threads per web server (default 1)\n"
           "  --lb-workers N       balancer worker threads (default: number of cores)\n"
           "  --access-log DEST    balancer access log: off (default), stdout or a file\n"
           "  --help               show this help\n");
}

static int parse_uint(const char *v, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < (long)lo || n > (long)hi)
        return -1;
    *out = (unsigned)n;
    return 0;
}

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

int cmd_up(int argc, char **argv)
{
    static struct up u; /* large; lives for the whole process (main's setup, not shared state) */
    char listen[128] = ":8000", data[PATH_MAX] = "data", policy[32] = "least-conn", access_log[PATH_MAX] = "off";
    unsigned nservers = 3, server_workers = 1, lb_workers = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            fprintf(stderr, "agora up: %s needs a value (see --help)\n", a);
            return 2;
        }
        if (!strcmp(a, "--listen"))
            snprintf(listen, sizeof(listen), "%s", v);
        else if (!strcmp(a, "--data"))
            snprintf(data, sizeof(data), "%s", v);
        else if (!strcmp(a, "--policy"))
            snprintf(policy, sizeof(policy), "%s", v);
        else if (!strcmp(a, "--access-log"))
            snprintf(access_log, sizeof(access_log), "%s", v);
        else if (!strcmp(a, "--servers")) {
            if (parse_uint(v, 1, MAX_CHILDREN - 1, &nservers) < 0) {
                fprintf(stderr, "agora up: --servers must be 1..%d\n", MAX_CHILDREN - 1);
                return 2;
            }
        } else if (!strcmp(a, "--server-workers")) {
            if (parse_uint(v, 1, 64, &server_workers) < 0) {
                fprintf(stderr, "agora up: --server-workers must be 1..64\n");
                return 2;
            }
        } else if (!strcmp(a, "--lb-workers")) {
            if (parse_uint(v, 1, 256, &lb_workers) < 0) {
                fprintf(stderr, "agora up: --lb-workers must be 1..256\n");
                return 2;
            }
        } else {
            fprintf(stderr, "agora up: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    struct net_addr la;
    if (net_parse_addr(listen, &la) < 0) {
        fprintf(stderr, "agora up: invalid --listen '%s' (expected HOST:PORT)\n", listen);
        return 2;
    }
    unsigned port = ntohs(((struct sockaddr_in *)&la.ss)->sin_port);
    if (port == 0 || port + nservers > 65535) {
        fprintf(stderr, "agora up: --listen needs a port with %u free ports after it\n", nservers);
        return 2;
    }
    if (mkdir(data, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "agora up: cannot create data directory '%s': %s\n", data, strerror(errno));
        return 1;
    }
    ssize_t n = readlink("/proc/self/exe", u.exe, sizeof(u.exe) - 1);
    if (n <= 0) {
        fprintf(stderr, "agora up: cannot find my own executable\n");
        return 1;
    }
    u.exe[n] = '\0';
    char web[PATH_MAX];
    cli_default_web_dir(web, sizeof(web));

    /* Children: servers first, then the balancer. */
    struct child *lb = &u.kids[nservers];
    snprintf(lb->name, sizeof(lb->name), "balancer");
    child_arg(lb, "agora");
    child_arg(lb, "lb");
    child_arg(lb, "--listen");
    child_arg(lb, "%s", listen);
    child_arg(lb, "--policy");
    child_arg(lb, "%s", policy);
    child_arg(lb, "--health-interval");
    child_arg(lb, "2s");
    child_arg(lb, "--health-timeout");
    child_arg(lb, "1s");
    child_arg(lb, "--access-log");
    child_arg(lb, "%s", access_log);
    if (lb_workers) {
        child_arg(lb, "--workers");
        child_arg(lb, "%u", lb_workers);
    }
    for (unsigned i = 0; i < nservers; i++) {
        struct child *c = &u.kids[i];
        snprintf(c->name, sizeof(c->name), "server %u", port + 1 + i);
        child_arg(c, "agora");
        child_arg(c, "server");
        child_arg(c, "--listen");
        child_arg(c, "127.0.0.1:%u", port + 1 + i);
        child_arg(c, "--db");
        child_arg(c, "sqlite:%s/agora.db", data);
        child_arg(c, "--workers");
        child_arg(c, "%u", server_workers);
        child_arg(c, "--web");
        child_arg(c, "%s", web);
        child_arg(lb, "--backend");
        child_arg(lb, "http://127.0.0.1:%u", port + 1 + i);
    }
    u.nkids = (int)nservers + 1;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "agora up: signalfd: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 0; i < u.nkids; i++) {
        if (spawn(&u, &u.kids[i]) < 0)
            return 1;
        if (i == (int)nservers - 1) {
            /* Let the first server create the schema before the others race for it. */
            struct net_addr sa;
            char a[64];
            snprintf(a, sizeof(a), "127.0.0.1:%u", port + 1);
            net_parse_addr(a, &sa);
            wait_port(&sa, 5000);
        }
    }
    struct net_addr probe = la;
    if (((struct sockaddr_in *)&probe.ss)->sin_addr.s_addr == htonl(INADDR_ANY))
        ((struct sockaddr_in *)&probe.ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char shown[80];
    net_format_addr(&probe, shown, sizeof(shown));
    if (wait_port(&probe, 10000) == 0)
        printf("agora is up: open http://%s/  (%u web servers, data in %s; Ctrl-C to stop)\n", shown, nservers, data);
    else
        printf("agora up: the balancer is not answering on %s yet; still trying\n", shown);
    fflush(stdout);

    uint64_t kill_at = 0;
    for (;;) {
        int alive = 0;
        uint64_t next_wake = 0;
        for (int i = 0; i < u.nkids; i++) {
            alive += u.kids[i].pid > 0;
            if (u.kids[i].restart_at_ms && (!next_wake || u.kids[i].restart_at_ms < next_wake))
                next_wake = u.kids[i].restart_at_ms;
        }
        if (u.stopping && !alive)
            break;
        if (u.stopping && now_ms() >= kill_at) {
            for (int i = 0; i < u.nkids; i++)
                if (u.kids[i].pid > 0)
                    kill(u.kids[i].pid, SIGKILL);
        }
        int timeout_ms = 1000;
        if (next_wake && !u.stopping)
            timeout_ms = next_wake > now_ms() ? (int)(next_wake - now_ms()) : 0;
        struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            if (!u.stopping) {
                printf("agora up: stopping...\n");
                fflush(stdout);
                u.stopping = 1;
                kill_at = now_ms() + 15000;
                /* The balancer first, so it stops taking requests, then the servers. */
                for (int i = u.nkids - 1; i >= 0; i--)
                    if (u.kids[i].pid > 0)
                        kill(u.kids[i].pid, SIGTERM);
            }
        }
        /* Reap whatever exited (SIGCHLD may coalesce). */
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0)
                break;
            for (int i = 0; i < u.nkids; i++) {
                struct child *c = &u.kids[i];
                if (c->pid != pid)
                    continue;
                c->pid = 0;
                if (u.stopping)
                    break;
                uint64_t ran = now_ms() - c->started_ms;
                c->backoff_ms = ran > 30000 || !c->backoff_ms ? 250 : (c->backoff_ms * 2 > 8000 ? 8000 : c->backoff_ms * 2);
                c->restart_at_ms = now_ms() + c->backoff_ms;
                if (WIFSIGNALED(status))
                    fprintf(stderr, "agora up: %s (pid %d) killed by signal %d; restarting in %u ms\n", c->name, pid,
                            WTERMSIG(status), c->backoff_ms);
                else
                    fprintf(stderr, "agora up: %s (pid %d) exited with status %d; restarting in %u ms\n", c->name,
                            pid, WEXITSTATUS(status), c->backoff_ms);
                break;
            }
        }
        if (!u.stopping) {
            for (int i = 0; i < u.nkids; i++) {
                struct child *c = &u.kids[i];
                if (!c->pid && c->restart_at_ms && now_ms() >= c->restart_at_ms)
                    spawn(&u, c);
            }
        }
    }
    close(sfd);
    printf("agora up: stopped\n");
    for (int i = 0; i < u.nkids; i++)
        for (int k = 0; k < u.kids[i].argc; k++)
            free(u.kids[i].argv[k]);
    return 0;
}
