/* test_loop.c — unit tests for the event loop (src/core/loop.h): timer order, re-arming and
 * cancelling, deferred calls, descriptor watches on pipes, cross-thread wake-ups, and yielding
 * (sched_yield, clock_gettime and epoll_wait are wrapped at link time, -Wl,--wrap in the
 * Makefile: the yield tests count the yields on a fake clock).
 *
 * Every loop_run() is bounded by a watchdog timer (WATCHDOG_MS) that stops the loop and fails the
 * test if the expected event never came; no test sleeps, and the timers used are 0-5 ms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"

#define WATCHDOG_MS 5000
#define MAXLOG      512

/* Records what happened, in order. */
struct log {
    int ev[MAXLOG];
    size_t n;
    int watchdog_fired;
};

static void log_add(struct log *l, int v)
{
    assert_true(l->n < MAXLOG);
    l->ev[l->n++] = v;
}

static void on_watchdog(struct loop *loop, struct loop_timer *t)
{
    ((struct log *)t->data)->watchdog_fired = 1;
    loop_stop(loop);
}

/* Runs loop until something calls loop_stop(), at most WATCHDOG_MS. */
static void run_bounded(struct loop *loop, struct log *l)
{
    struct loop_timer wd = {.fn = on_watchdog, .data = l};
    loop_timer_arm(loop, &wd, WATCHDOG_MS);
    assert_int_equal(loop_run(loop), 0);
    loop_timer_cancel(loop, &wd);
    assert_int_equal(l->watchdog_fired, 0);
}

/* ---- timers ---- */

struct tagged {
    struct loop_timer t;
    struct log *log;
    int tag;
    int stop; /* stop the loop when this one fires */
};

static void on_tagged(struct loop *loop, struct loop_timer *t)
{
    struct tagged *x = t->data;
    assert_false(loop_timer_armed(t)); /* disarmed before its callback runs */
    log_add(x->log, x->tag);
    if (x->stop)
        loop_stop(loop);
}

static void tagged_init(struct tagged *x, struct log *l, int tag)
{
    memset(x, 0, sizeof(*x));
    x->t.fn = on_tagged;
    x->t.data = x;
    x->log = l;
    x->tag = tag;
}

static void test_timers_fire_in_order(void **state)
{
    struct loop *loop = loop_create(64);
    assert_non_null(loop);
    struct log l = {0};
    struct tagged x[5];
    const unsigned delay[5] = {3, 1, 4, 0, 2}; /* tag i fires at delay[i] ms */
    for (int i = 0; i < 5; i++) {
        tagged_init(&x[i], &l, i);
        loop_timer_arm(loop, &x[i].t, delay[i]);
        assert_true(loop_timer_armed(&x[i].t));
    }
    x[2].stop = 1; /* the latest */
    run_bounded(loop, &l);
    const int want[5] = {3, 1, 4, 0, 2};
    assert_int_equal(l.n, 5);
    assert_memory_equal(l.ev, want, sizeof(want));
    for (int i = 0; i < 5; i++)
        assert_false(loop_timer_armed(&x[i].t));
    loop_destroy(loop);
}

static void test_timer_rearm_and_cancel(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    struct tagged a, b, c, d;
    tagged_init(&a, &l, 'a');
    tagged_init(&b, &l, 'b');
    tagged_init(&c, &l, 'c');
    tagged_init(&d, &l, 'd');
    loop_timer_arm(loop, &a.t, 1);
    loop_timer_arm(loop, &b.t, 2);
    loop_timer_arm(loop, &c.t, 1);
    loop_timer_arm(loop, &d.t, 4000);
    loop_timer_arm(loop, &a.t, 3); /* later: now after b */
    loop_timer_arm(loop, &d.t, 4); /* earlier: now last */
    loop_timer_cancel(loop, &c.t);
    assert_false(loop_timer_armed(&c.t));
    loop_timer_cancel(loop, &c.t); /* cancelling twice is harmless */
    d.stop = 1;
    run_bounded(loop, &l);
    const int want[3] = {'b', 'a', 'd'};
    assert_int_equal(l.n, 3);
    assert_memory_equal(l.ev, want, sizeof(want));
    /* A timer that fired can be armed again. */
    l.n = 0;
    loop_timer_arm(loop, &a.t, 0);
    a.stop = 1;
    run_bounded(loop, &l);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ev[0], 'a');
    loop_destroy(loop);
}

/* A timer that re-arms itself from its callback fires again (a periodic timer). */
struct periodic {
    struct loop_timer t;
    int count;
};

static void on_periodic(struct loop *loop, struct loop_timer *t)
{
    struct periodic *p = t->data;
    if (++p->count == 3)
        loop_stop(loop);
    else
        loop_timer_arm(loop, t, 1);
}

static void test_timer_rearm_from_callback(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    struct periodic p = {.t = {.fn = on_periodic}};
    p.t.data = &p;
    loop_timer_arm(loop, &p.t, 1);
    run_bounded(loop, &l);
    assert_int_equal(p.count, 3);
    assert_false(loop_timer_armed(&p.t));
    loop_destroy(loop);
}

/* Heap integrity under many arms, re-arms and cancels: timers fire in order of their deadline,
 * cancelled ones never fire, every armed one fires exactly once. */
#define NT 200
struct many {
    struct loop_timer t;
    uint64_t *last_when;
    int *fired;
    int *remaining;
    int ok_order;
};

static void on_many(struct loop *loop, struct loop_timer *t)
{
    struct many *m = t->data;
    if (t->when_ms < *m->last_when)
        m->ok_order = 0;
    *m->last_when = t->when_ms;
    (*m->fired)++;
    if (--*m->remaining == 0)
        loop_stop(loop);
}

static void test_timer_heap_many(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    struct many m[NT];
    uint64_t last_when = 0;
    int fired[NT] = {0}, remaining = 0;
    unsigned seed = 7;
    for (int i = 0; i < NT; i++) {
        m[i] = (struct many){.t = {.fn = on_many, .data = &m[i]},
                             .last_when = &last_when,
                             .fired = &fired[i],
                             .remaining = &remaining,
                             .ok_order = 1};
        seed = seed * 1103515245u + 12345u;
        loop_timer_arm(loop, &m[i].t, (seed >> 16) % 6);
    }
    for (int i = 0; i < NT; i++) {
        seed = seed * 1103515245u + 12345u;
        switch ((seed >> 16) % 3) {
        case 0:
            loop_timer_cancel(loop, &m[i].t);
            break;
        case 1:
            loop_timer_arm(loop, &m[i].t, (seed >> 20) % 6);
            break;
        default:
            break;
        }
    }
    for (int i = 0; i < NT; i++)
        remaining += loop_timer_armed(&m[i].t);
    assert_true(remaining > 0);
    int expect_fired[NT];
    for (int i = 0; i < NT; i++)
        expect_fired[i] = loop_timer_armed(&m[i].t);
    run_bounded(loop, &l);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(fired[i], expect_fired[i]);
        assert_true(m[i].ok_order);
    }
    loop_destroy(loop);
}

/* ---- deferred calls ---- */

struct dctx {
    struct log *log;
    int tag;
    int chain; /* defer this many more */
};

static void on_deferred(struct loop *loop, void *data)
{
    struct dctx *d = data;
    log_add(d->log, d->tag);
    if (d->chain > 0) {
        d->chain--;
        d->tag++;
        loop_defer(loop, on_deferred, d);
    } else {
        loop_stop(loop);
    }
}

struct io_defer {
    struct log *log;
    struct dctx d;
    int rfd;
};

static void on_io_defers(struct loop *loop, int fd, int events, void *data)
{
    struct io_defer *x = data;
    char c;
    assert_int_equal(events, LOOP_READ);
    assert_int_equal(read(fd, &c, 1), 1);
    log_add(x->log, 'r');
    loop_defer(loop, on_deferred, &x->d);
    loop_unwatch(loop, fd);
}

static void on_timer_logs(struct loop *loop, struct loop_timer *t) { log_add(t->data, 't'); }

/* A deferred call runs after the descriptor and timer callbacks of the same iteration. */
static void test_defer_runs_after_callbacks(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(write(p[1], "x", 1), 1); /* readable at the first epoll_wait */
    struct io_defer x = {.log = &l, .d = {.log = &l, .tag = 'D', .chain = 0}, .rfd = p[0]};
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_io_defers, &x), 0);
    struct loop_timer t = {.fn = on_timer_logs, .data = &l};
    loop_timer_arm(loop, &t, 0); /* due in the same iteration */
    run_bounded(loop, &l);
    const int want[3] = {'r', 't', 'D'};
    assert_int_equal(l.n, 3);
    assert_memory_equal(l.ev, want, sizeof(want));
    close(p[0]);
    close(p[1]);
    loop_destroy(loop);
}

static void on_timer_defers(struct loop *loop, struct loop_timer *t)
{
    struct dctx *d = t->data;
    log_add(d->log, 't');
    loop_defer(loop, on_deferred, d);
}

/* Deferred calls that defer more run in the same iteration, past the initial capacity (64). */
static void test_defer_chain(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    struct dctx d = {.log = &l, .tag = 1000, .chain = 150};
    struct loop_timer t = {.fn = on_timer_defers, .data = &d};
    loop_timer_arm(loop, &t, 0);
    run_bounded(loop, &l);
    assert_int_equal(l.n, 152);
    assert_int_equal(l.ev[0], 't');
    for (int i = 1; i < 152; i++)
        assert_int_equal(l.ev[i], 1000 + i - 1);
    loop_destroy(loop);
}

/* Deferring from outside the loop makes the first iteration run it without blocking. */
static void test_defer_before_run(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    struct dctx d = {.log = &l, .tag = 5, .chain = 0};
    loop_defer(loop, on_deferred, &d);
    run_bounded(loop, &l);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ev[0], 5);
    loop_destroy(loop);
}

/* ---- descriptors ---- */

struct pipe_reader {
    struct log *log;
    int calls;
};

/* Reads one byte per call: level-triggered, so it is called again while bytes remain. */
static void on_read_one(struct loop *loop, int fd, int events, void *data)
{
    struct pipe_reader *r = data;
    char c;
    assert_int_equal(events, LOOP_READ);
    assert_int_equal(read(fd, &c, 1), 1);
    log_add(r->log, c);
    if (++r->calls == 3) {
        loop_unwatch(loop, fd);
        loop_stop(loop);
    }
}

static void test_watch_pipe_read(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    struct pipe_reader r = {.log = &l};
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_read_one, &r), 0);
    assert_int_equal(write(p[1], "abc", 3), 3);
    run_bounded(loop, &l);
    const int want[3] = {'a', 'b', 'c'};
    assert_int_equal(l.n, 3);
    assert_memory_equal(l.ev, want, sizeof(want));
    close(p[0]);
    close(p[1]);
    loop_destroy(loop);
}

struct pipe_writer {
    int calls;
    int rfd;
    struct log *log;
};

/* Writable at once; after switching to mask 0 it must not be called again. */
static void on_writable(struct loop *loop, int fd, int events, void *data)
{
    struct pipe_writer *w = data;
    w->calls++;
    assert_int_equal(events, LOOP_WRITE);
    assert_int_equal(write(fd, "w", 1), 1);
    assert_int_equal(loop_set_mask(loop, fd, 0), 0);
    assert_int_equal(loop_set_mask(loop, fd, 0), 0); /* unchanged: a no-op */
}

static void call_stop(struct loop *loop, void *data) { loop_stop(loop); }

static void on_reader_stops(struct loop *loop, int fd, int events, void *data)
{
    struct pipe_writer *w = data;
    char c;
    assert_int_equal(events, LOOP_READ);
    assert_int_equal(read(fd, &c, 1), 1);
    log_add(w->log, c);
    loop_unwatch(loop, fd);
    loop_defer(loop, call_stop, NULL);
}

static void test_watch_pipe_write_and_mask(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    struct pipe_writer w = {.rfd = p[0], .log = &l};
    assert_int_equal(loop_watch(loop, p[1], LOOP_WRITE, on_writable, &w), 0);
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_reader_stops, &w), 0);
    run_bounded(loop, &l);
    assert_int_equal(w.calls, 1);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ev[0], 'w');
    /* Re-enabling LOOP_WRITE makes it fire again. */
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_reader_stops, &w), 0);
    assert_int_equal(loop_set_mask(loop, p[1], LOOP_WRITE), 0);
    run_bounded(loop, &l);
    assert_int_equal(w.calls, 2);
    assert_int_equal(l.n, 2);
    loop_unwatch(loop, p[1]);
    close(p[0]);
    close(p[1]);
    loop_destroy(loop);
}

/* Two descriptors ready in the same iteration: the first callback unwatches the other, whose
 * pending event must then be dropped. */
struct pair {
    int fds[2];
    int calls;
};

static void on_pair(struct loop *loop, int fd, int events, void *data)
{
    struct pair *p = data;
    p->calls++;
    loop_unwatch(loop, p->fds[0]);
    loop_unwatch(loop, p->fds[1]);
    loop_defer(loop, call_stop, NULL);
}

static void test_unwatch_drops_pending(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    int a[2], b[2];
    assert_int_equal(pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(write(a[1], "1", 1), 1);
    assert_int_equal(write(b[1], "2", 1), 1);
    struct pair p = {.fds = {a[0], b[0]}};
    assert_int_equal(loop_watch(loop, a[0], LOOP_READ, on_pair, &p), 0);
    assert_int_equal(loop_watch(loop, b[0], LOOP_READ, on_pair, &p), 0);
    run_bounded(loop, &l);
    assert_int_equal(p.calls, 1);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
    loop_destroy(loop);
}

/* A hang-up is delivered even to a descriptor watched with mask 0, as READ|WRITE. */
static void on_hup(struct loop *loop, int fd, int events, void *data)
{
    *(int *)data = events;
    loop_unwatch(loop, fd);
    loop_stop(loop);
}

static void test_hangup_delivered_when_paused(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    int p[2], events = -1;
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(loop_watch(loop, p[0], 0, on_hup, &events), 0);
    close(p[1]);
    run_bounded(loop, &l);
    assert_int_equal(events, LOOP_READ | LOOP_WRITE);
    close(p[0]);
    loop_destroy(loop);
}

/* A second loop_watch of the same descriptor replaces the callback and data. */
static void on_replaced_old(struct loop *loop, int fd, int events, void *data) { fail_msg("old callback called"); }

static void test_watch_replaces(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    struct pipe_reader r = {.log = &l};
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_replaced_old, NULL), 0);
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_read_one, &r), 0);
    assert_int_equal(write(p[1], "xyz", 3), 3);
    run_bounded(loop, &l);
    assert_int_equal(r.calls, 3);
    close(p[0]);
    close(p[1]);
    loop_destroy(loop);
}

/* Watching after unwatch (e.g. a reused descriptor number) works. */
static void test_rewatch_after_unwatch(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_replaced_old, NULL), 0);
    loop_unwatch(loop, p[0]);
    loop_unwatch(loop, p[0]); /* twice is harmless */
    struct pipe_reader r = {.log = &l};
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_read_one, &r), 0);
    assert_int_equal(write(p[1], "123", 3), 3);
    run_bounded(loop, &l);
    assert_int_equal(r.calls, 3);
    close(p[0]);
    close(p[1]);
    loop_destroy(loop);
}

static void test_watch_errors(void **state)
{
    struct loop *loop = loop_create(16);
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(loop_watch(loop, -1, LOOP_READ, on_replaced_old, NULL), -EBADF);
    /* Not an open descriptor: the table grows, then epoll refuses it. */
    assert_int_equal(loop_watch(loop, 1000, LOOP_READ, on_replaced_old, NULL), -EBADF);
    int f = open("/dev/null", O_RDONLY | O_CLOEXEC); /* epoll cannot watch /dev/null */
    assert_true(f >= 0);
    assert_int_equal(loop_watch(loop, f, LOOP_READ, on_replaced_old, NULL), -EPERM);
    close(f);
    assert_int_equal(loop_set_mask(loop, -1, LOOP_READ), -EBADF);
    assert_int_equal(loop_set_mask(loop, 1 << 20, LOOP_READ), -EBADF); /* beyond the table */
    assert_int_equal(loop_set_mask(loop, p[0], LOOP_READ), -ENOENT);   /* in it, not watched */
    /* Ignored: */
    loop_unwatch(loop, -1);
    loop_unwatch(loop, 99);
    close(p[0]);
    close(p[1]);
    loop_destroy(loop);
    loop_destroy(NULL);
}

/* Descriptors far above the initial table size are watched (the table grows, keeping the
 * watches it had): a loop created for 16 serves a pipe dup2'ed to a high number next to one on a
 * low number, and a callback that makes the table grow (by watching a higher descriptor) runs
 * safely. Regression: the balancer's main loop was created for 1024 descriptors and every health
 * check failed once the workers held more (issue 9). */
struct high {
    struct log *log;
    int grow_fd; /* watched from the first callback, so the table moves under loop_run */
    int calls;
};

static void on_high(struct loop *loop, int fd, int events, void *data)
{
    struct high *h = data;
    char c;
    assert_int_equal(events, LOOP_READ);
    assert_int_equal(read(fd, &c, 1), 1);
    log_add(h->log, c);
    if (h->grow_fd >= 0) {
        assert_int_equal(loop_watch(loop, h->grow_fd, LOOP_READ, on_high, h), 0);
        h->grow_fd = -1;
    }
    loop_unwatch(loop, fd);
    if (++h->calls == 3)
        loop_stop(loop);
}

static int dup_high(int fd, int target)
{
    int h = dup2(fd, target);
    assert_int_equal(h, target);
    return h;
}

static void test_watch_high_fd(void **state)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 1200)
        skip(); /* the descriptor limit itself is too low for the numbers used here */
    int top = rl.rlim_cur > 5000 ? 4999 : (int)rl.rlim_cur - 1;
    struct loop *loop = loop_create(16);
    assert_non_null(loop);
    struct log l = {0};
    int a[2], b[2], c[2];
    assert_int_equal(pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(pipe2(c, O_NONBLOCK | O_CLOEXEC), 0);
    int hb = dup_high(b[0], 1100); /* past 1024, the old main-loop size */
    int hc = dup_high(c[0], top);  /* watched from a callback: the table grows again */
    struct high h = {.log = &l, .grow_fd = hc};
    assert_int_equal(loop_watch(loop, a[0], LOOP_READ, on_high, &h), 0);
    assert_int_equal(loop_watch(loop, hb, LOOP_READ, on_high, &h), 0);
    assert_int_equal(loop_set_mask(loop, hb, LOOP_READ), 0);
    assert_int_equal(write(a[1], "a", 1), 1);
    assert_int_equal(write(b[1], "b", 1), 1);
    assert_int_equal(write(c[1], "c", 1), 1);
    run_bounded(loop, &l);
    assert_int_equal(h.calls, 3);
    assert_int_equal(l.n, 3);
    /* a and b in either order (same iteration), then c, watched during the first callback. */
    assert_int_equal(l.ev[0] + l.ev[1], 'a' + 'b');
    assert_int_equal(l.ev[2], 'c');
    int fds[] = {a[0], a[1], b[0], b[1], c[0], c[1], hb, hc};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
    loop_destroy(loop);
}

/* ---- cross-thread wake-ups ---- */

struct waker {
    struct loop *loop;
    pthread_t loop_thread;
    int woken;
    int in_loop_thread;
};

static void on_wake(struct loop *loop, void *data)
{
    struct waker *w = data;
    w->woken++;
    w->in_loop_thread = pthread_equal(pthread_self(), w->loop_thread);
    loop_stop(loop);
}

static void *wake_thread(void *arg)
{
    loop_wake(((struct waker *)arg)->loop);
    return NULL;
}

static void test_wake_from_thread(void **state)
{
    struct loop *loop = loop_create(64);
    struct log l = {0};
    struct waker w = {.loop = loop, .loop_thread = pthread_self()};
    loop_on_wake(loop, on_wake, &w);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wake_thread, &w), 0);
    run_bounded(loop, &l);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(w.woken, 1);
    assert_true(w.in_loop_thread);
    /* Several wake-ups before the loop runs coalesce into one call (the eventfd is drained). */
    w.woken = 0;
    loop_wake(loop);
    loop_wake(loop);
    run_bounded(loop, &l);
    assert_int_equal(w.woken, 1);
    loop_destroy(loop);
}

/* ---- clocks ---- */

static void on_check_now(struct loop *loop, struct loop_timer *t)
{
    uint64_t *armed_at = t->data;
    /* The loop clock is refreshed each iteration and the timer is not early. */
    assert_true(loop_now(loop) >= *armed_at + 2);
    loop_stop(loop);
}

static void test_clock(void **state)
{
    uint64_t a = loop_clock_us(), b = loop_clock_us();
    assert_true(b >= a);
    struct loop *loop = loop_create(64);
    struct log l = {0};
    uint64_t armed_at = loop_now(loop);
    assert_true(armed_at <= loop_clock_us() / 1000);
    struct loop_timer t = {.fn = on_check_now, .data = &armed_at};
    loop_timer_arm(loop, &t, 2);
    assert_int_equal(t.when_ms, armed_at + 2);
    run_bounded(loop, &l);
    loop_destroy(loop);
}

static void on_watchdog_stop(struct loop *loop, struct loop_timer *t)
{
    (void)t;
    loop_stop(loop);
}

/* A timer pushed back while armed stays where it was in the heap until it reaches the top
 * (loop.c): it must still fire at its new deadline, never at the old one. */
struct stamp {
    struct loop_timer t;
    uint64_t fired_ms;
};

static void on_stamp(struct loop *loop, struct loop_timer *t)
{
    struct stamp *st = t->data;
    st->fired_ms = loop_now(loop);
    loop_stop(loop);
}

static void test_timer_pushed_back_fires_at_its_new_deadline(void **state)
{
    struct loop *loop = loop_create(64);
    struct stamp st = {.t = {.fn = on_stamp}};
    st.t.data = &st;
    uint64_t start = loop_now(loop);
    loop_timer_arm(loop, &st.t, 20);
    loop_timer_arm(loop, &st.t, 150); /* pushed back: the heap keeps its old place (20 ms) */
    assert_int_equal(st.t.when_ms, start + 150);
    struct loop_timer guard = {.fn = on_watchdog_stop, .data = NULL};
    loop_timer_arm(loop, &guard, 2000);
    assert_int_equal(loop_run(loop), 0);
    assert_true(st.fired_ms >= start + 150);
    assert_false(loop_timer_armed(&st.t));
    loop_timer_cancel(loop, &guard);
    loop_destroy(loop);
}

/* Many timers armed, pushed back, pulled forward and cancelled in a random order (also from the
 * callbacks, as connections re-arm each other's timers): every armed timer fires exactly once,
 * never before its deadline, and they fire in deadline order. */
#define LAZY_N 300
struct lazy {
    struct loop_timer t[LAZY_N];
    int fired[LAZY_N];
    int pending;
    uint64_t last_when;
    int early, out_of_order;
    unsigned rnd;
};

static unsigned lazy_rand(struct lazy *z)
{
    z->rnd = z->rnd * 1103515245u + 12345u;
    return z->rnd >> 16;
}

static void lazy_arm(struct loop *loop, struct lazy *z, int i, uint64_t ms)
{
    if (!loop_timer_armed(&z->t[i]))
        z->pending++;
    z->fired[i] = 0;
    loop_timer_arm(loop, &z->t[i], ms);
}

static void on_lazy(struct loop *loop, struct loop_timer *t)
{
    struct lazy *z = t->data;
    int i = (int)(t - z->t);
    if (loop_now(loop) < t->when_ms)
        z->early++;
    if (t->when_ms < z->last_when)
        z->out_of_order++;
    z->last_when = t->when_ms;
    z->fired[i]++;
    z->pending--;
    /* Push back (or forward) another armed timer, or cancel one, from the callback. */
    int j = (int)(lazy_rand(z) % LAZY_N);
    if (loop_timer_armed(&z->t[j])) {
        if (lazy_rand(z) % 4 == 0) {
            loop_timer_cancel(loop, &z->t[j]);
            z->pending--;
        } else {
            uint64_t now = loop_now(loop);
            uint64_t floor = z->last_when > now ? z->last_when - now : 0; /* keeps the order check exact */
            lazy_arm(loop, z, j, floor + lazy_rand(z) % 40);
        }
    }
    if (z->pending == 0)
        loop_stop(loop);
}

static void test_timer_lazy_heap_random(void **state)
{
    struct loop *loop = loop_create(64);
    static struct lazy z;
    memset(&z, 0, sizeof(z));
    z.rnd = 12345;
    for (int i = 0; i < LAZY_N; i++) {
        z.t[i].fn = on_lazy;
        z.t[i].data = &z;
        lazy_arm(loop, &z, i, 1 + lazy_rand(&z) % 50);
    }
    for (int k = 0; k < 3000; k++) {
        int i = (int)(lazy_rand(&z) % LAZY_N);
        if (lazy_rand(&z) % 5 == 0) {
            if (loop_timer_armed(&z.t[i])) {
                loop_timer_cancel(loop, &z.t[i]);
                z.pending--;
            }
        } else {
            lazy_arm(loop, &z, i, lazy_rand(&z) % 80);
        }
    }
    int armed = z.pending;
    assert_true(armed > 0);
    struct loop_timer guard = {.fn = on_watchdog_stop, .data = NULL};
    loop_timer_arm(loop, &guard, 5000);
    assert_int_equal(loop_run(loop), 0);
    assert_int_equal(z.pending, 0);
    assert_int_equal(z.early, 0);
    assert_int_equal(z.out_of_order, 0);
    for (int i = 0; i < LAZY_N; i++) {
        assert_false(loop_timer_armed(&z.t[i]));
        assert_true(z.fired[i] <= 1);
    }
    loop_timer_cancel(loop, &guard);
    loop_destroy(loop);
}

/* ---- yielding ---- */

/* The yield tests run on a fake monotonic clock (clock_gettime is wrapped as well): the callbacks'
 * work, the slow yields and the waits in epoll_wait (wrapped too) advance it, so every count below
 * is exact on any machine. */
static int fake_clock; /* CLOCK_MONOTONIC reads fake_us */
static uint64_t fake_us;
static unsigned yields;      /* calls of sched_yield */
static unsigned slow_yields; /* the next calls that take 2 ms, as a yield to a busy task does */

int __real_clock_gettime(clockid_t clk, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clk, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clk, struct timespec *ts)
{
    if (!fake_clock || clk != CLOCK_MONOTONIC)
        return __real_clock_gettime(clk, ts);
    ts->tv_sec = (time_t)(fake_us / 1000000u);
    ts->tv_nsec = (long)(fake_us % 1000000u) * 1000;
    return 0;
}

static unsigned sleep_us; /* each epoll_wait takes this long on the fake clock */

int __real_epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout);
int __wrap_epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout);
int __wrap_epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
    int n = __real_epoll_wait(epfd, evs, max, timeout);
    if (fake_clock)
        fake_us += sleep_us;
    return n;
}

int __wrap_sched_yield(void);
int __wrap_sched_yield(void)
{
    yields++;
    if (slow_yields) {
        slow_yields--;
        fake_us += 2000;
    }
    return 0;
}

#define SPIN_N 12

/* Iteration i (the pipe stays readable) works spin_us[i] microseconds and notes how many yields
 * came before it; the last one stops the loop. */
struct spinner {
    unsigned sleep_us;            /* each wait in epoll_wait ... */
    unsigned sleep_after[SPIN_N]; /* ... or, when not 0, the wait after iteration i */
    unsigned spin_us[SPIN_N];
    unsigned yields_before[SPIN_N];
    int n, iters;
};

static void on_spin(struct loop *loop, int fd, int events, void *data)
{
    struct spinner *s = data;
    s->yields_before[s->n] = yields;
    fake_us += s->spin_us[s->n];
    sleep_us = s->sleep_after[s->n] ? s->sleep_after[s->n] : s->sleep_us;
    if (++s->n == s->iters)
        loop_stop(loop);
}

/* Runs s on a fresh loop whose yield amount is us (UINT_MAX: the default), slow the first `slow`
 * yields. Returns the yields made. */
static unsigned run_spinner(struct spinner *s, unsigned us, unsigned slow)
{
    fake_clock = 1;
    fake_us = 1000000000;
    yields = 0;
    sleep_us = s->sleep_us;
    slow_yields = slow;
    struct loop *loop = loop_create(64);
    struct log l = {0};
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(write(p[1], "x", 1), 1); /* never read: readable at every iteration */
    if (us != UINT_MAX)
        loop_yield_after(loop, us);
    assert_int_equal(loop_watch(loop, p[0], LOOP_READ, on_spin, s), 0);
    run_bounded(loop, &l);
    assert_int_equal(s->n, s->iters);
    close(p[0]);
    close(p[1]);
    loop_destroy(loop);
    fake_clock = 0;
    assert_int_equal(slow_yields, 0);
    return yields;
}

/* Runs s (see run_spinner) and checks the yields made before each iteration against want; the
 * last iteration stops the loop without a yield, so want's last entry is also the total. */
static void check_yields(struct spinner *s, unsigned us, unsigned slow, const unsigned *want)
{
    assert_int_equal(run_spinner(s, us, slow), want[s->iters - 1]);
    assert_memory_equal(s->yields_before, want, s->iters * sizeof(*want));
}

/* By default: no yield before the loop has been awake for LOOP_YIELD_AWAKE_US (2 ms), then one
 * at the end of every iteration of LOOP_YIELD_US (100 µs) of work or more. */
static void test_yield_after_work(void **state)
{
    struct spinner s = {.spin_us = {LOOP_YIELD_AWAKE_US - 1, 1, 300, 0}, .iters = 4};
    const unsigned want[4] = {0, 0, 1, 2};
    check_yields(&s, UINT_MAX, 0, want);
}

/* The work adds up over iterations and counts again from 0 after a yield: with 1 ms, after an
 * iteration of 2 ms (a yield), iterations of 0.6 ms yield after the second, not the third. */
static void test_yield_counts_work_across_iterations(void **state)
{
    struct spinner s = {.spin_us = {2000, 600, 600, 600, 0}, .iters = 5};
    const unsigned want[5] = {0, 1, 1, 2, 2};
    check_yields(&s, 1000, 0, want);
}

/* A slow yield (2 ms, over LOOP_YIELD_SLOW_US) doubles the work before the next one; seven quick
 * ones in a row change nothing, the eighth halves it again. With 1 ms: 2 ms (slow yield, now 2 ms),
 * seven of 2 ms (quick yields), 1 ms (none: 1 of 2 ms), 1 ms (the eighth quick yield, now 1 ms),
 * 1 ms (a yield). */
static void test_yield_backs_off_after_a_slow_yield(void **state)
{
    struct spinner s = {.spin_us = {2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 1000, 1000, 1000, 0}, .iters = 12};
    const unsigned want[SPIN_N] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10};
    check_yields(&s, 1000, 1, want);
}

/* Backing off stops at LOOP_YIELD_MAX_US: from 40 ms, two slow yields make it 80 ms, then 100 ms
 * (not 160). */
static void test_yield_back_off_is_capped(void **state)
{
    struct spinner s = {.spin_us = {40000, 80000, 99999, 1, 0}, .iters = 5};
    const unsigned want[5] = {0, 1, 2, 2, 3};
    check_yields(&s, 40000, 2, want);
}

/* Above LOOP_YIELD_MAX_US the base itself is the cap: from 150 ms a slow yield leaves it at
 * 150 ms (a cap of 100 ms would make the next 149.999 ms yield). */
static void test_yield_back_off_cap_is_the_base_when_more(void **state)
{
    struct spinner s = {.spin_us = {150000, 149999, 1, 0}, .iters = 4};
    const unsigned want[4] = {0, 1, 1, 2};
    check_yields(&s, 150000, 1, want);
}

/* A yield is not a sleep, even a slow one: the loop stays awake, so after a slow yield (now
 * 200 µs) an iteration of 300 µs yields again at once. */
static void test_yield_is_not_a_sleep(void **state)
{
    struct spinner s = {.spin_us = {2000, 300, 0}, .iters = 3};
    const unsigned want[3] = {0, 1, 2};
    check_yields(&s, UINT_MAX, 1, want);
}

/* One sleep between iterations of a loop that has been awake long enough counts the work from 0
 * again: with 3 ms, 3 ms (a yield), 2 ms, a sleep, 2 ms (awake 2 ms, but 2 of 3 ms of work: none;
 * without the sleep it would be 4 ms). */
static void test_yield_work_counts_from_a_sleep(void **state)
{
    struct spinner s = {.sleep_after = {0, LOOP_YIELD_SLEPT_US}, .spin_us = {3000, 2000, 2000, 0}, .iters = 4};
    const unsigned want[4] = {0, 1, 1, 1};
    check_yields(&s, 3000, 0, want);
}

/* A sleep in epoll_wait (LOOP_YIELD_SLEPT_US or more) gives the CPU away: the loop is awake again
 * from 0 and its work counts from 0, so with 1 ms, iterations of 0.6 ms with such a sleep between
 * them never yield. With waits of 1 µs less the loop stays awake: after 2 ms (the fourth
 * iteration) its 2.4 ms of work make one yield. */
static void test_yield_count_starts_again_after_a_sleep(void **state)
{
    struct spinner s = {.sleep_us = LOOP_YIELD_SLEPT_US, .spin_us = {600, 600, 600, 600, 0}, .iters = 5};
    assert_int_equal(run_spinner(&s, 1000, 0), 0);
    struct spinner t = {.sleep_us = LOOP_YIELD_SLEPT_US - 1, .spin_us = {600, 600, 600, 600, 0}, .iters = 5};
    assert_int_equal(run_spinner(&t, 1000, 0), 1);
    assert_int_equal(t.yields_before[3], 0);
    assert_int_equal(t.yields_before[4], 1);
}

/* loop_yield_after(loop, 0): never. */
static void test_yield_off(void **state)
{
    struct spinner s = {.spin_us = {3000, 3000, 0}, .iters = 3};
    assert_int_equal(run_spinner(&s, 0, 0), 0);
}

/* The iteration that stops the loop does not yield, however long it worked. */
static void test_no_yield_after_stop(void **state)
{
    struct spinner s = {.spin_us = {0, 3000}, .iters = 2};
    assert_int_equal(run_spinner(&s, UINT_MAX, 0), 0);
}

/* The fake clock is off again even when a yield test failed half-way (cmocka jumps out of it). */
static int fake_clock_off(void **state)
{
    fake_clock = 0;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_order),
        cmocka_unit_test(test_timer_rearm_and_cancel),
        cmocka_unit_test(test_timer_pushed_back_fires_at_its_new_deadline),
        cmocka_unit_test(test_timer_lazy_heap_random),
        cmocka_unit_test(test_timer_rearm_from_callback),
        cmocka_unit_test(test_timer_heap_many),
        cmocka_unit_test(test_defer_runs_after_callbacks),
        cmocka_unit_test(test_defer_chain),
        cmocka_unit_test(test_defer_before_run),
        cmocka_unit_test(test_watch_pipe_read),
        cmocka_unit_test(test_watch_pipe_write_and_mask),
        cmocka_unit_test(test_unwatch_drops_pending),
        cmocka_unit_test(test_hangup_delivered_when_paused),
        cmocka_unit_test(test_watch_replaces),
        cmocka_unit_test(test_rewatch_after_unwatch),
        cmocka_unit_test(test_watch_errors),
        cmocka_unit_test(test_watch_high_fd),
        cmocka_unit_test(test_wake_from_thread),
        cmocka_unit_test(test_clock),
        cmocka_unit_test_teardown(test_yield_after_work, fake_clock_off),
        cmocka_unit_test_teardown(test_yield_counts_work_across_iterations, fake_clock_off),
        cmocka_unit_test_teardown(test_yield_backs_off_after_a_slow_yield, fake_clock_off),
        cmocka_unit_test_teardown(test_yield_back_off_is_capped, fake_clock_off),
        cmocka_unit_test_teardown(test_yield_back_off_cap_is_the_base_when_more, fake_clock_off),
        cmocka_unit_test_teardown(test_yield_is_not_a_sleep, fake_clock_off),
        cmocka_unit_test_teardown(test_yield_work_counts_from_a_sleep, fake_clock_off),
        cmocka_unit_test_teardown(test_yield_count_starts_again_after_a_sleep, fake_clock_off),
        cmocka_unit_test_teardown(test_yield_off, fake_clock_off),
        cmocka_unit_test_teardown(test_no_yield_after_stop, fake_clock_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
