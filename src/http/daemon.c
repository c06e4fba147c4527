/* daemon.c — worker threads, signals and graceful stop; see daemon.h. */
#include "http/daemon.h"

#include "http/handoff.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/net.h"

/* Initial size of each loop's watch table; it grows with the highest descriptor watched. */
#define LOOP_INITIAL_FDS 1024

struct worker_thread {
    const struct http_daemon_ops *ops;
    void *ctx;
    unsigned id;
    int lfd;
    int lfd2; /* cfg->listen2's socket, -1 = none */
    pthread_t tid;
    struct loop *loop;
    void *worker;
    atomic_int stopping; /* set by the main thread before loop_wake */
    atomic_int done;
    uint64_t deadline_ms;
    struct loop_timer poll;
    char err[256];
    int failed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;
};

struct daemon {
    const struct http_daemon_config *cfg;
    const struct http_daemon_ops *ops;
    void *ctx;
    struct worker_thread *w;
    unsigned n;
    struct loop *main;
    int sfd;
    int stopping;
    struct loop_timer poll;
    /* upgrades (handoff.h) */
    int hlfd;              /* offering socket, -1 = none */
    ino_t hino;            /* its inode: removed at exit only if still ours */
    int hcfd;              /* a successor being served, -1 = none */
    struct loop_timer hto; /* gives up on a successor that never says READY */
};

unsigned http_daemon_cpus(void)
{
    /* The CPUs this process may run on (taskset, a container's cpuset), not the machine's: workers
     * past those would share cores. A CPU quota (cgroup cpu.max) is not looked at. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void on_worker_poll(struct loop *loop, struct loop_timer *t)
{
    struct worker_thread *wt = t->data;
    if (wt->ops->worker_conns(wt->worker) == 0 || loop_now(loop) >= wt->deadline_ms) {
        loop_stop(loop);
        return;
    }
    loop_timer_arm(loop, t, 50);
}

static void on_worker_wake(struct loop *loop, void *data)
{
    struct worker_thread *wt = data;
    if (wt->ops->worker_wake)
        wt->ops->worker_wake(wt->worker);
    if (!atomic_load(&wt->stopping) || loop_timer_armed(&wt->poll))
        return;
    wt->ops->worker_shutdown(wt->worker);
    wt->poll.fn = on_worker_poll;
    wt->poll.data = wt;
    loop_timer_arm(loop, &wt->poll, 0);
}

static void *worker_main(void *arg)
{
    struct worker_thread *wt = arg;
    wt->loop = loop_create(LOOP_INITIAL_FDS);
    if (wt->loop)
        wt->worker = wt->ops->worker_create(wt->ctx, wt->loop, wt->lfd, wt->lfd2, wt->id, wt->err, sizeof(wt->err));
    else
        snprintf(wt->err, sizeof(wt->err), "cannot create event loop: %s", strerror(errno));
    pthread_mutex_lock(&wt->mu);
    wt->failed = !wt->worker;
    wt->started = 1;
    pthread_cond_signal(&wt->cv);
    pthread_mutex_unlock(&wt->mu);
    if (!wt->worker) {
        close(wt->lfd);
        if (wt->lfd2 >= 0)
            close(wt->lfd2);
        loop_destroy(wt->loop);
        wt->loop = NULL;
        atomic_store(&wt->done, 1);
        return NULL;
    }
    loop_on_wake(wt->loop, on_worker_wake, wt);
    loop_run(wt->loop);
    wt->ops->worker_free(wt->worker);
    wt->worker = NULL;
    loop_destroy(wt->loop);
    atomic_store(&wt->done, 1);
    return NULL;
}

static void begin_stop(struct daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    for (unsigned i = 0; i < d->n; i++) {
        struct worker_thread *wt = &d->w[i];
        wt->deadline_ms = loop_clock_us() / 1000 + d->cfg->shutdown_ms;
        atomic_store(&wt->stopping, 1);
        loop_wake(wt->loop);
    }
}

static void on_main_poll(struct loop *loop, struct loop_timer *t)
{
    struct daemon *d = t->data;
    int all = 1;
    for (unsigned i = 0; i < d->n; i++)
        all &= atomic_load(&d->w[i].done);
    if (all) {
        loop_stop(loop);
        return;
    }
    loop_timer_arm(loop, t, 50);
}

static void begin_stop_and_poll(struct daemon *d)
{
    begin_stop(d);
    d->poll.fn = on_main_poll;
    d->poll.data = d;
    loop_timer_arm(d->main, &d->poll, 0);
}

static void on_signal(struct loop *loop, int fd, int events, void *data)
{
    struct daemon *d = data;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            if (d->ops->reload)
                d->ops->reload(d->ctx);
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            if (d->stopping) {
                fprintf(stderr, "%s: second stop signal, exiting now\n", d->cfg->name);
                _exit(1);
            }
            fprintf(stderr, "%s: stopping (finishing in-flight requests, up to %u ms)\n", d->cfg->name,
                    d->cfg->shutdown_ms);
            begin_stop_and_poll(d);
        }
    }
}

/* ---- upgrades ---- */

#define HANDOFF_READY_MS 30000 /* a successor has this long to start serving */

static void handoff_drop(struct daemon *d)
{
    if (d->hcfd < 0)
        return;
    loop_unwatch(d->main, d->hcfd);
    close(d->hcfd);
    d->hcfd = -1;
    loop_timer_cancel(d->main, &d->hto);
}

static void on_handoff_timeout(struct loop *loop, struct loop_timer *t)
{
    struct daemon *d = t->data;
    fprintf(stderr, "%s: upgrade: the new process did not start serving within %d ms; still serving\n", d->cfg->name,
            HANDOFF_READY_MS);
    handoff_drop(d);
}

static void on_handoff_conn(struct loop *loop, int fd, int events, void *data)
{
    struct daemon *d = data;
    int r = http_handoff_ready(fd);
    if (r == 0)
        return;
    handoff_drop(d);
    if (r < 0) {
        fprintf(stderr, "%s: upgrade: the new process went away before serving; still serving\n", d->cfg->name);
        return;
    }
    fprintf(stderr,
            "%s: upgrade: the new process serves the listening sockets; finishing in-flight requests (up to %u ms)\n",
            d->cfg->name, d->cfg->shutdown_ms);
    begin_stop_and_poll(d);
}

static void on_handoff_accept(struct loop *loop, int fd, int events, void *data)
{
    struct daemon *d = data;
    int cfd = http_handoff_accept(fd);
    if (cfd == -EAGAIN)
        return;
    if (cfd < 0) {
        fprintf(stderr, "%s: upgrade: refused a connection to %s: %s\n", d->cfg->name, d->cfg->handoff_path,
                cfd == -EPERM ? "another user" : strerror(-cfd));
        return;
    }
    if (d->stopping || d->hcfd >= 0) {
        close(cfd); /* one successor at a time, and none while stopping */
        return;
    }
    int fds[HTTP_HANDOFF_MAX_FDS];
    unsigned nfds = 0;
    for (unsigned i = 0; i < d->n; i++)
        fds[nfds++] = d->w[i].lfd;
    for (unsigned i = 0; i < d->n && d->cfg->listen2; i++)
        fds[nfds++] = d->w[i].lfd2;
    int rc = http_handoff_send(cfd, fds, nfds);
    if (rc < 0 || loop_watch(loop, cfd, LOOP_READ, on_handoff_conn, d) < 0) {
        fprintf(stderr, "%s: upgrade: cannot pass the listening sockets: %s\n", d->cfg->name,
                strerror(rc < 0 ? -rc : EIO));
        close(cfd);
        return;
    }
    d->hcfd = cfd;
    d->hto.fn = on_handoff_timeout;
    d->hto.data = d;
    loop_timer_arm(loop, &d->hto, HANDOFF_READY_MS);
    fprintf(stderr, "%s: upgrade: passed %u listening socket(s) to a new process\n", d->cfg->name, nfds);
}

/* Starts offering the listening sockets at cfg->handoff_path. Returns 0 or -1 (message printed). */
static int handoff_start(struct daemon *d)
{
    d->hlfd = http_handoff_listen(d->cfg->handoff_path);
    if (d->hlfd < 0) {
        fprintf(stderr, "%s: cannot offer upgrades at %s: %s\n", d->cfg->name, d->cfg->handoff_path,
                strerror(-d->hlfd));
        return -1;
    }
    struct stat st;
    d->hino = stat(d->cfg->handoff_path, &st) == 0 ? st.st_ino : 0;
    loop_watch(d->main, d->hlfd, LOOP_READ, on_handoff_accept, d);
    return 0;
}

static void handoff_stop(struct daemon *d)
{
    handoff_drop(d);
    if (d->hlfd < 0)
        return;
    loop_unwatch(d->main, d->hlfd);
    close(d->hlfd);
    d->hlfd = -1;
    /* A successor may have put its own socket at the path already: leave that one. */
    struct stat st;
    if (stat(d->cfg->handoff_path, &st) == 0 && st.st_ino == d->hino)
        unlink(d->cfg->handoff_path);
}

/* 1 if listening socket fd is bound to a (compared as text, "127.0.0.1:8000"). */
static int bound_to(int fd, const struct net_addr *a)
{
    struct net_addr got = {.len = sizeof(got.ss)};
    socklen_t len = sizeof(got.ss);
    if (getsockname(fd, (struct sockaddr *)&got.ss, &len) < 0)
        return 0;
    got.len = len;
    char x[80], y[80];
    net_format_addr(&got, x, sizeof(x));
    net_format_addr(a, y, sizeof(y));
    return !strcmp(x, y);
}

unsigned long http_daemon_raise_fd_limit(const char *name, unsigned long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fprintf(stderr, "%s: cannot read the descriptor limit: %s\n", name, strerror(errno));
        return 1024;
    }
    /* Up to the hard limit, uncapped: the loops' watch tables and the kernel's descriptor table
     * grow with the highest descriptor actually used, so a high limit costs nothing until used,
     * and nothing here uses select() (FD_SETSIZE). */
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            rl.rlim_cur = was;
    }
    unsigned long now = rl.rlim_cur == RLIM_INFINITY ? ULONG_MAX : (unsigned long)rl.rlim_cur;
    char from[64] = "";
    if (rl.rlim_cur != was)
        snprintf(from, sizeof(from), " (raised from %lu)", (unsigned long)was);
    if (now < want)
        fprintf(stderr,
                "%s: descriptor limit %lu%s; warning: 10,000 clients (C10k) need at least %lu: raise the hard limit "
                "(ulimit -Hn, systemd LimitNOFILE=)\n",
                name, now, from, want);
    else
        fprintf(stderr, "%s: descriptor limit %lu%s\n", name, now, from);
    return now;
}

int http_daemon_run(const struct http_daemon_config *cfg, const struct http_daemon_ops *ops, void *ctx)
{
    struct daemon d = {.cfg = cfg, .ops = ops, .ctx = ctx, .sfd = -1, .hlfd = -1, .hcfd = -1};
    int takeover = -1; /* the connection to the process whose sockets were taken */
    int rc = 1;
    struct net_addr addr, addr2;
    if (net_parse_addr(cfg->listen, &addr) < 0) {
        fprintf(stderr, "%s: invalid listen address '%s' (expected HOST:PORT)\n", cfg->name, cfg->listen);
        return 1;
    }
    if (cfg->listen2 && net_parse_addr(cfg->listen2, &addr2) < 0) {
        fprintf(stderr, "%s: invalid listen address '%s' (expected HOST:PORT)\n", cfg->name, cfg->listen2);
        return 1;
    }
    unsigned per = cfg->listen2 ? 2 : 1; /* listening sockets per worker */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* Blocked in every thread (workers inherit the mask); delivered through the signalfd. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    d.n = cfg->workers ? cfg->workers : 1;
    int taken[HTTP_HANDOFF_MAX_FDS];
    unsigned ntaken = 0;
    if (cfg->takeover_path) {
        char err[256];
        takeover = http_handoff_take(cfg->takeover_path, 5000, taken, HTTP_HANDOFF_MAX_FDS, &ntaken, err, sizeof(err));
        if (takeover < 0) {
            fprintf(stderr, "%s: upgrade: %s\n", cfg->name, err);
            return 1;
        }
        if (ntaken % per) {
            fprintf(stderr, "%s: upgrade: took %u listening socket(s), not %u per worker: listen addresses differ\n",
                    cfg->name, ntaken, per);
            for (unsigned i = 0; i < ntaken; i++)
                close(taken[i]);
            close(takeover);
            return 1;
        }
        for (unsigned i = 0; i < ntaken; i++) {
            /* The first half must be --listen's sockets, the second listen2's: a successor whose
             * listeners differ (TLS added or removed, another port) would serve them wrongly. */
            const struct net_addr *want = per == 2 && i >= ntaken / 2 ? &addr2 : &addr;
            if (!bound_to(taken[i], want)) {
                fprintf(stderr,
                        "%s: upgrade: the listening sockets taken are not those of this configuration (%s%s%s); "
                        "the running process goes on\n",
                        cfg->name, cfg->listen, cfg->listen2 ? " and " : "", cfg->listen2 ? cfg->listen2 : "");
                for (unsigned k = 0; k < ntaken; k++)
                    close(taken[k]);
                close(takeover);
                return 1;
            }
        }
        if (ntaken / per != d.n)
            fprintf(stderr, "%s: upgrade: took %u listening socket(s): running %u worker(s), not %u\n", cfg->name,
                    ntaken, ntaken / per, d.n);
        d.n = ntaken / per;
    }
    d.w = alloc_calloc(d.n, sizeof(*d.w));
    d.main = loop_create(LOOP_INITIAL_FDS);
    d.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (!d.main || d.sfd < 0) {
        fprintf(stderr, "%s: start-up failed: %s\n", cfg->name, strerror(errno));
        goto out;
    }
    for (unsigned i = 0; i < d.n && takeover >= 0; i++) {
        d.w[i].lfd = taken[i];
        d.w[i].lfd2 = per == 2 ? taken[d.n + i] : -1;
    }
    for (unsigned i = 0; i < d.n && takeover < 0; i++) {
        int fd = net_listen(&addr, 1, 4096);
        int fd2 = fd >= 0 && cfg->listen2 ? net_listen(&addr2, 1, 4096) : -1;
        if (fd < 0 || (cfg->listen2 && fd2 < 0)) {
            fprintf(stderr, "%s: cannot listen on %s: %s\n", cfg->name, fd < 0 ? cfg->listen : cfg->listen2,
                    strerror(fd < 0 ? -fd : -fd2));
            if (fd >= 0)
                close(fd);
            for (unsigned k = 0; k < i; k++) {
                close(d.w[k].lfd);
                if (d.w[k].lfd2 >= 0)
                    close(d.w[k].lfd2);
            }
            goto out;
        }
        d.w[i].lfd = fd;
        d.w[i].lfd2 = fd2;
    }
    unsigned started = 0;
    for (unsigned i = 0; i < d.n; i++) {
        struct worker_thread *wt = &d.w[i];
        wt->ops = ops;
        wt->ctx = ctx;
        wt->id = i;
        pthread_mutex_init(&wt->mu, NULL);
        pthread_cond_init(&wt->cv, NULL);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        int cpu = cpus_of(cfg->cpus, i), e = 0;
        if (cpu >= 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            e = pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
        }
        if (e == 0)
            e = pthread_create(&wt->tid, &attr, worker_main, wt);
        pthread_attr_destroy(&attr);
        if (e != 0) {
            if (cpu >= 0)
                fprintf(stderr, "%s: cannot start worker %u on CPU %d: %s\n", cfg->name, i, cpu, strerror(e));
            else
                fprintf(stderr, "%s: cannot start worker thread: %s\n", cfg->name, strerror(e));
            break; /* its sockets are closed below, with those of the workers not started */
        }
        pthread_mutex_lock(&wt->mu);
        while (!wt->started)
            pthread_cond_wait(&wt->cv, &wt->mu);
        pthread_mutex_unlock(&wt->mu);
        started++;
        if (wt->failed) {
            fprintf(stderr, "%s: worker %u failed to start: %s\n", cfg->name, i, wt->err);
            break;
        }
    }
    int ok = started == d.n;
    for (unsigned i = 0; ok && i < d.n; i++)
        ok = !d.w[i].failed;
    if (ok && cpus_of(cfg->cpus, 0) >= 0) {
        char list[256];
        struct cpus used = *cfg->cpus; /* the CPUs the workers take, not a longer list's rest */
        if (used.n > d.n)
            used.n = d.n;
        cpus_format(&used, list, sizeof(list));
        if (used.n == 1)
            fprintf(stderr, "%s: %s pinned to CPU %s\n", cfg->name, d.n > 1 ? "workers" : "worker", list);
        else if (d.n > used.n)
            fprintf(stderr, "%s: workers pinned to CPUs %s, in turn (%u workers on %u CPUs)\n", cfg->name, list, d.n,
                    used.n);
        else
            fprintf(stderr, "%s: workers pinned to CPUs %s, one each\n", cfg->name, list);
    }
    if (ok && cfg->handoff_path && handoff_start(&d) < 0)
        ok = 0; /* the workers are stopped below */
    if (ok) {
        if (ops->main_start)
            ops->main_start(ctx, d.main);
        loop_watch(d.main, d.sfd, LOOP_READ, on_signal, &d);
        if (takeover >= 0) {
            /* Every worker accepts on its socket: the old process may stop. */
            http_handoff_done(takeover);
            takeover = -1;
            fprintf(stderr, "%s: upgrade: serving the listening sockets of the previous process\n", cfg->name);
        }
        rc = 0;
        loop_run(d.main);
        handoff_stop(&d);
    } else {
        for (unsigned i = started; i < d.n; i++) {
            close(d.w[i].lfd);
            if (d.w[i].lfd2 >= 0)
                close(d.w[i].lfd2);
        }
        for (unsigned i = 0; i < started; i++) {
            struct worker_thread *wt = &d.w[i];
            if (wt->loop && !atomic_load(&wt->done)) {
                wt->deadline_ms = 0;
                atomic_store(&wt->stopping, 1);
                loop_wake(wt->loop);
            }
        }
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(d.w[i].tid, NULL);
    if (ok && ops->main_stop)
        ops->main_stop(ctx);
out:
    if (takeover >= 0)
        close(takeover); /* no READY: the old process keeps serving */
    if (d.sfd >= 0)
        close(d.sfd);
    loop_destroy(d.main);
    free(d.w);
    return rc;
}
