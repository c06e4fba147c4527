/* pool.c — handler threads, a bounded queue and per-loop completion ports; see pool.h.
 *
 * A job moves QUEUED → RUNNING → DONE under the pool's mutex; a queued job may instead be
 * withdrawn (cancel, or its wait timer) by its loop. A finished job is appended to its port's
 * done list (port mutex) and the port's eventfd is written; the loop drains the list and calls
 * done. The loop-side fields (timer, done, arg) are touched by the loop thread only, the queue
 * links and state under the pool mutex, the done links under the port mutex.
 * A port counts its jobs not yet handed back (refs, plus one for the open port), so a job that
 * finishes after its port was closed finds the port's memory still there and frees both. */
#include "http/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/thread.h"

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_GONE };

struct http_pool_job {
    struct http_pool_port *port;
    /* pool mutex */
    struct http_pool_job *qprev, *qnext;
    enum job_state state;
    uint64_t enq_us;
    int expired; /* not run: waited too long */
    /* port mutex */
    struct http_pool_job *dnext;
    /* loop thread */
    struct loop_timer timer;
    http_pool_done_fn *done; /* NULL once cancelled */
    void *arg;
    /* the copied request and the response (the running thread, then the loop) */
    struct http_head head;
    struct http_request req;
    struct http_response resp;
    char *strings; /* the head's strings, the body and the address, one block */
};

struct http_pool_port {
    struct http_pool *pool;
    struct loop *loop;
    int fd;
    pthread_mutex_t mu;
    unsigned refs; /* 1 while open + jobs not yet handed back */
    int closed;
    struct http_pool_job *done_head, *done_tail;
};

struct pool_thread {
    struct http_pool *pool;
    unsigned id;
    pthread_t tid;
    void *tctx;
    int started, failed;
    char err[256];
};

struct http_pool {
    struct http_pool_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* work queued, or stopping */
    pthread_cond_t started; /* a thread finished thread_init */
    struct http_pool_job *qhead, *qtail;
    unsigned queued;
    unsigned running;
    int stopping;
    struct pool_thread *threads;
    unsigned nthreads; /* threads started */
    struct http_pool_stats stats;
};

/* ---- copying a request ---- */

static size_t str_size(struct http_str s) { return s.p ? s.n + 1 : 0; }

static void str_copy(struct http_str *s, char **at)
{
    if (!s->p)
        return;
    memcpy(*at, s->p, s->n);
    (*at)[s->n] = '\0';
    s->p = *at;
    *at += s->n + 1;
}

/* Fills job->head/req with a copy of req whose strings live in job->strings. */
static void copy_request(struct http_pool_job *job, const struct http_request *req)
{
    const struct http_head *h = req->head;
    const char *addr = req->remote_addr ? req->remote_addr : "";
    size_t n = str_size(h->method_str) + str_size(h->target) + str_size(h->path) + str_size(h->query) +
               str_size(h->reason) + str_size(h->host) + str_size(h->connection);
    for (int i = 0; i < h->nheaders; i++)
        n += str_size(h->headers[i].name) + str_size(h->headers[i].value);
    n += req->body_len + 1 + strlen(addr) + 1;
    job->strings = alloc_malloc(n);
    job->head = *h;
    char *at = job->strings;
    str_copy(&job->head.method_str, &at);
    str_copy(&job->head.target, &at);
    str_copy(&job->head.path, &at);
    str_copy(&job->head.query, &at);
    str_copy(&job->head.reason, &at);
    str_copy(&job->head.host, &at);
    str_copy(&job->head.connection, &at);
    for (int i = 0; i < h->nheaders; i++) {
        str_copy(&job->head.headers[i].name, &at);
        str_copy(&job->head.headers[i].value, &at);
    }
    job->req.head = &job->head;
    job->req.body = at;
    job->req.body_len = req->body_len;
    if (req->body_len)
        memcpy(at, req->body, req->body_len);
    at[req->body_len] = '\0';
    at += req->body_len + 1;
    strcpy(at, addr);
    job->req.remote_addr = at;
}

static void job_free(struct http_pool_job *job)
{
    buf_free(&job->resp.headers);
    buf_free(&job->resp.body);
    free(job->strings);
    free(job);
}

/* ---- ports ---- */

/* Drops one reference; the last one frees the port. Called with port->mu held; unlocks it. */
static void port_unref_unlock(struct http_pool_port *port)
{
    int last = --port->refs == 0;
    pthread_mutex_unlock(&port->mu);
    if (last) {
        close(port->fd);
        pthread_mutex_destroy(&port->mu);
        free(port);
    }
}

/* Hands a finished (or expired) job back to its port (pool thread). */
static void port_post(struct http_pool_job *job)
{
    struct http_pool_port *port = job->port;
    pthread_mutex_lock(&port->mu);
    if (port->closed) {
        job_free(job);
        port_unref_unlock(port);
        return;
    }
    job->dnext = NULL;
    int was_empty = port->done_head == NULL;
    if (port->done_tail)
        port->done_tail->dnext = job;
    else
        port->done_head = job;
    port->done_tail = job;
    /* Only the first finished job wakes the loop: it takes the whole list after reading the
     * eventfd, so a job appended to a non-empty list is delivered by the wake-up already sent
     * (one write per batch instead of one per job under load). */
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(port->fd, &one, sizeof(one));
        (void)w;
    }
    pthread_mutex_unlock(&port->mu);
}

/* The port's eventfd is readable: deliver the finished jobs (loop thread). */
static void on_port(struct loop *loop, int fd, int events, void *data)
{
    struct http_pool_port *port = data;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&port->mu);
    struct http_pool_job *list = port->done_head;
    port->done_head = port->done_tail = NULL;
    port->refs++; /* a reference for the walk: a done function may close the port */
    pthread_mutex_unlock(&port->mu);
    while (list) {
        struct http_pool_job *job = list;
        list = job->dnext;
        loop_timer_cancel(loop, &job->timer);
        if (job->done && !port->closed)
            job->done(job->arg, job->expired ? NULL : &job->resp);
        job_free(job);
        pthread_mutex_lock(&port->mu);
        port_unref_unlock(port);
    }
    pthread_mutex_lock(&port->mu);
    port_unref_unlock(port);
}

struct http_pool_port *http_pool_port_open(struct http_pool *p, struct loop *loop)
{
    struct http_pool_port *port = alloc_calloc(1, sizeof(*port));
    port->pool = p;
    port->loop = loop;
    port->refs = 1;
    port->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (port->fd < 0) {
        free(port);
        return NULL;
    }
    pthread_mutex_init(&port->mu, NULL);
    int rc = loop_watch(loop, port->fd, LOOP_READ, on_port, port);
    if (rc < 0) {
        close(port->fd);
        pthread_mutex_destroy(&port->mu);
        free(port);
        errno = -rc;
        return NULL;
    }
    return port;
}

void http_pool_port_close(struct http_pool_port *port)
{
    if (!port)
        return;
    loop_unwatch(port->loop, port->fd);
    pthread_mutex_lock(&port->mu);
    port->closed = 1;
    struct http_pool_job *list = port->done_head;
    port->done_head = port->done_tail = NULL;
    pthread_mutex_unlock(&port->mu);
    while (list) { /* finished but not delivered: their requesters are gone */
        struct http_pool_job *job = list;
        list = job->dnext;
        loop_timer_cancel(port->loop, &job->timer);
        job_free(job);
        pthread_mutex_lock(&port->mu);
        port_unref_unlock(port);
    }
    pthread_mutex_lock(&port->mu);
    port_unref_unlock(port);
}

/* ---- the queue ---- */

static void queue_unlink(struct http_pool *p, struct http_pool_job *job)
{
    if (job->qprev)
        job->qprev->qnext = job->qnext;
    else
        p->qhead = job->qnext;
    if (job->qnext)
        job->qnext->qprev = job->qprev;
    else
        p->qtail = job->qprev;
    job->qprev = job->qnext = NULL;
    p->queued--;
}

/* Removes job from the queue if it is still there (pool mutex not held). Returns 1 if it was. */
static int withdraw(struct http_pool_job *job)
{
    struct http_pool *p = job->port->pool;
    pthread_mutex_lock(&p->mu);
    int queued = job->state == JOB_QUEUED;
    if (queued) {
        queue_unlink(p, job);
        job->state = JOB_GONE;
    }
    pthread_mutex_unlock(&p->mu);
    return queued;
}

/* Drops a job that never ran (loop thread): frees it and its port reference. */
static void drop_unrun(struct http_pool_job *job)
{
    struct http_pool_port *port = job->port;
    loop_timer_cancel(port->loop, &job->timer);
    job_free(job);
    pthread_mutex_lock(&port->mu);
    port_unref_unlock(port);
}

/* The job's wait is over: if no thread took it, answer it as expired now. */
static void on_wait_timer(struct loop *loop, struct loop_timer *t)
{
    struct http_pool_job *job = t->data;
    if (!withdraw(job))
        return; /* running: its result will come */
    struct http_pool *p = job->port->pool;
    pthread_mutex_lock(&p->mu);
    p->stats.expired++;
    pthread_mutex_unlock(&p->mu);
    http_pool_done_fn *done = job->done;
    void *arg = job->arg;
    drop_unrun(job);
    if (done)
        done(arg, NULL);
}

struct http_pool_job *http_pool_submit(struct http_pool_port *port, const struct http_request *req,
                                       http_pool_done_fn *done, void *arg)
{
    struct http_pool *p = port->pool;
    pthread_mutex_lock(&p->mu);
    int full = p->queued >= p->cfg.max_queue || p->stopping;
    if (full)
        p->stats.full++;
    pthread_mutex_unlock(&p->mu);
    if (full)
        return NULL;
    struct http_pool_job *job = alloc_calloc(1, sizeof(*job));
    job->port = port;
    job->done = done;
    job->arg = arg;
    job->resp.status = 200;
    copy_request(job, req);
    job->timer.fn = on_wait_timer;
    job->timer.data = job;
    pthread_mutex_lock(&port->mu);
    port->refs++;
    pthread_mutex_unlock(&port->mu);
    pthread_mutex_lock(&p->mu);
    job->enq_us = loop_clock_us();
    job->state = JOB_QUEUED;
    job->qprev = p->qtail;
    if (p->qtail)
        p->qtail->qnext = job;
    else
        p->qhead = job;
    p->qtail = job;
    p->queued++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    loop_timer_arm(port->loop, &job->timer, p->cfg.max_wait_ms);
    return job;
}

void http_pool_cancel(struct http_pool_job *job)
{
    struct http_pool *p = job->port->pool;
    pthread_mutex_lock(&p->mu);
    p->stats.canceled++;
    pthread_mutex_unlock(&p->mu);
    loop_timer_cancel(job->port->loop, &job->timer);
    if (withdraw(job)) {
        drop_unrun(job);
        return;
    }
    job->done = NULL; /* running or finished: freed when handed back, unseen */
}

/* ---- threads ---- */

static void *thread_main(void *arg)
{
    struct pool_thread *t = arg;
    struct http_pool *p = t->pool;
    /* Linux keeps a nice value per thread: lowering this one's priority needs no privilege. A
     * failure only costs the preference, so it is not fatal. */
    if (p->cfg.nice > 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), p->cfg.nice) != 0)
        fprintf(stderr, "agora: %s pool: cannot lower the threads' priority: %s\n", p->cfg.name, strerror(errno));
    t->tctx = p->cfg.thread_init ? p->cfg.thread_init(p->cfg.ctx, t->id, t->err, sizeof(t->err)) : p->cfg.ctx;
    pthread_mutex_lock(&p->mu);
    t->failed = p->cfg.thread_init && !t->tctx;
    t->started = 1;
    pthread_cond_broadcast(&p->started);
    for (;;) {
        while (!p->qhead && !p->stopping && !t->failed)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->qhead || t->failed)
            break; /* stopping, and the queue is empty */
        struct http_pool_job *job = p->qhead;
        queue_unlink(p, job);
        job->state = JOB_RUNNING;
        uint64_t waited = loop_clock_us() - job->enq_us;
        job->expired = waited > (uint64_t)p->cfg.max_wait_ms * 1000;
        if (job->expired) {
            p->stats.expired++;
        } else {
            p->running++;
            p->stats.wait_hist[prom_bucket(waited)]++;
            p->stats.wait_sum_us += waited;
        }
        pthread_mutex_unlock(&p->mu);
        if (!job->expired)
            p->cfg.handler(t->tctx, &job->req, &job->resp);
        pthread_mutex_lock(&p->mu);
        job->state = JOB_DONE;
        p->stats.done += !job->expired;
        p->running -= !job->expired;
        pthread_mutex_unlock(&p->mu);
        port_post(job);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    if (t->tctx && p->cfg.thread_init && p->cfg.thread_fini)
        p->cfg.thread_fini(p->cfg.ctx, t->tctx);
    return NULL;
}

struct http_pool *http_pool_create(const struct http_pool_config *cfg, char *err, size_t errlen)
{
    struct http_pool *p = alloc_calloc(1, sizeof(*p));
    p->cfg = *cfg;
    if (!p->cfg.threads)
        p->cfg.threads = 1;
    if (!p->cfg.max_queue)
        p->cfg.max_queue = 32 * p->cfg.threads;
    if (!p->cfg.max_wait_ms)
        p->cfg.max_wait_ms = 1000;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->started, NULL);
    p->threads = alloc_calloc(p->cfg.threads, sizeof(*p->threads));
    /* Pool threads take no signals (core/thread.h), even when the pool starts before the daemon
     * blocks them. */
    for (unsigned i = 0; i < p->cfg.threads; i++) {
        struct pool_thread *t = &p->threads[i];
        t->pool = p;
        t->id = i;
        int rc = thread_start(&t->tid, thread_main, t);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start %s thread: %s", p->cfg.name ? p->cfg.name : "pool", strerror(rc));
            goto fail;
        }
        p->nthreads++;
        pthread_mutex_lock(&p->mu);
        while (!t->started)
            pthread_cond_wait(&p->started, &p->mu);
        pthread_mutex_unlock(&p->mu);
        if (t->failed) {
            snprintf(err, errlen, "%s", t->err[0] ? t->err : "a pool thread failed to start");
            goto fail;
        }
    }
    return p;
fail:
    http_pool_destroy(p);
    return NULL;
}

void http_pool_destroy(struct http_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i].tid, NULL);
    free(p->threads);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->started);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void http_pool_stats(struct http_pool *p, struct http_pool_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->stats;
    out->threads = p->cfg.threads;
    out->max_queue = p->cfg.max_queue;
    out->running = p->running;
    out->queued = p->queued;
    pthread_mutex_unlock(&p->mu);
}
