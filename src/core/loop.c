/* loop.c — epoll + timer-heap event loop; see loop.h for the contract. */
#include "core/loop.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

struct watch {
    loop_io_fn *fn;
    void *data;
    int mask;     /* current interest */
    unsigned gen; /* bumped on unwatch so stale events of this iteration are dropped */
};

struct deferred {
    loop_call_fn *fn;
    void *data;
};

struct loop {
    int epfd;
    int wakefd;
    int nwatches; /* entries in watches: descriptors 0..nwatches-1 */
    int stop;
    uint64_t now_ms;
    struct watch *watches;
    struct loop_timer **heap;
    size_t nheap, capheap;
    struct deferred *defer;
    size_t ndefer, capdefer;
    loop_call_fn *wake_fn;
    void *wake_data;
    unsigned yield_us;    /* loop_yield_after; 0 = never */
    unsigned yield_now;   /* the current amount: yield_us, doubled after each slow yield */
    unsigned yield_quick; /* quick yields in a row since yield_now last changed */
    uint64_t busy_us;     /* time spent in iterations since the last yield or sleep */
    uint64_t end_us;      /* when the last iteration (or the yield after it) ended */
    uint64_t awake_us;    /* when the loop last came back from a sleep (or a preemption) */
};

uint64_t loop_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t clock_ms(void) { return loop_clock_us() / 1000u; }

static void run_deferred(struct loop *loop);

uint64_t loop_now(const struct loop *loop) { return loop->now_ms; }

struct loop *loop_create(int initial_fds)
{
    struct loop *loop = alloc_calloc(1, sizeof(*loop));
    loop->nwatches = initial_fds > 0 ? initial_fds : 64;
    loop->watches = alloc_calloc((size_t)loop->nwatches, sizeof(*loop->watches));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->epfd < 0 || loop->wakefd < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) < 0)
        goto fail;
    loop->now_ms = clock_ms();
    loop->yield_us = loop->yield_now = LOOP_YIELD_US;
    return loop;
fail:
    loop_destroy(loop);
    return NULL;
}

void loop_destroy(struct loop *loop)
{
    if (!loop)
        return;
    run_deferred(loop); /* objects closed last are freed there */
    if (loop->epfd >= 0)
        close(loop->epfd);
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    free(loop->watches);
    free(loop->heap);
    free(loop->defer);
    free(loop);
}

static uint32_t to_epoll(int mask) { return (mask & LOOP_READ ? EPOLLIN : 0) | (mask & LOOP_WRITE ? EPOLLOUT : 0); }

/* Grows the watch table so that fd has an entry (doubling, new entries zeroed). The table may
 * move: no `struct watch *` is kept across a call that can watch (loop_run reads what it needs
 * before each callback). Returns 0, or -ENOMEM when the table would need more than INT_MAX
 * entries (out of memory aborts, core/alloc.h). */
static int grow_watches(struct loop *loop, int fd)
{
    size_t n = (size_t)loop->nwatches;
    while (n <= (size_t)fd)
        n *= 2;
    if (n > INT_MAX)
        return -ENOMEM;
    struct watch *w = alloc_realloc(loop->watches, n * sizeof(*w));
    memset(w + loop->nwatches, 0, (n - (size_t)loop->nwatches) * sizeof(*w));
    loop->watches = w;
    loop->nwatches = (int)n;
    return 0;
}

int loop_watch(struct loop *loop, int fd, int mask, loop_io_fn *fn, void *data)
{
    if (fd < 0)
        return -EBADF;
    if (fd >= loop->nwatches) {
        int rc = grow_watches(loop, fd);
        if (rc < 0)
            return rc;
    }
    struct watch *w = &loop->watches[fd];
    struct epoll_event ev = {.events = to_epoll(mask), .data.u64 = (uint64_t)fd | ((uint64_t)w->gen << 32)};
    int op = w->fn ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(loop->epfd, op, fd, &ev) < 0)
        return -errno;
    w->fn = fn;
    w->data = data;
    w->mask = mask;
    return 0;
}

int loop_set_mask(struct loop *loop, int fd, int mask)
{
    if (fd < 0 || fd >= loop->nwatches)
        return -EBADF;
    struct watch *w = &loop->watches[fd];
    if (w->mask == mask)
        return 0;
    struct epoll_event ev = {.events = to_epoll(mask), .data.u64 = (uint64_t)fd | ((uint64_t)w->gen << 32)};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
        return -errno;
    w->mask = mask;
    return 0;
}

void loop_unwatch(struct loop *loop, int fd)
{
    if (fd < 0 || fd >= loop->nwatches || !loop->watches[fd].fn)
        return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    struct watch *w = &loop->watches[fd];
    w->fn = NULL;
    w->data = NULL;
    w->mask = 0;
    w->gen++;
}

/* ---- timers: binary min-heap on key_ms; heap_idx is 1-based so 0 means "not armed" ----
 *
 * Re-arming a timer to a later deadline only records the deadline (when_ms) and leaves the timer
 * where it is in the heap (key_ms, the earlier deadline): the common case — a connection's idle or
 * header timer pushed back on every request — costs no sift through a heap that may hold a timer
 * per idle connection (tens of thousands). When such a timer reaches the top, run_timers moves it
 * down to its real deadline instead of firing it (nginx keeps timers it would move by less than
 * 300 ms where they are for the same reason, but fires them early; here none fires early). */

static void heap_swap(struct loop *loop, size_t a, size_t b)
{
    struct loop_timer *t = loop->heap[a];
    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->heap_idx = a + 1;
    loop->heap[b]->heap_idx = b + 1;
}

static void heap_up(struct loop *loop, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (loop->heap[p]->key_ms <= loop->heap[i]->key_ms)
            break;
        heap_swap(loop, p, i);
        i = p;
    }
}

static void heap_down(struct loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < loop->nheap && loop->heap[l]->key_ms < loop->heap[m]->key_ms)
            m = l;
        if (r < loop->nheap && loop->heap[r]->key_ms < loop->heap[m]->key_ms)
            m = r;
        if (m == i)
            break;
        heap_swap(loop, i, m);
        i = m;
    }
}

void loop_timer_cancel(struct loop *loop, struct loop_timer *t)
{
    if (!t->heap_idx)
        return;
    size_t i = t->heap_idx - 1;
    size_t last = --loop->nheap;
    if (i != last) {
        heap_swap(loop, i, last);
        heap_down(loop, i);
        heap_up(loop, i);
    }
    t->heap_idx = 0;
}

void loop_timer_arm(struct loop *loop, struct loop_timer *t, uint64_t delay_ms)
{
    uint64_t when = loop->now_ms + delay_ms;
    if (t->heap_idx) {
        t->when_ms = when;
        if (when < t->key_ms) {
            t->key_ms = when;
            heap_up(loop, t->heap_idx - 1);
        }
        return; /* later: moved down only if it reaches the top (run_timers) */
    }
    if (loop->nheap == loop->capheap) {
        loop->capheap = loop->capheap ? loop->capheap * 2 : 64;
        loop->heap = alloc_realloc(loop->heap, loop->capheap * sizeof(*loop->heap));
    }
    t->when_ms = t->key_ms = when;
    loop->heap[loop->nheap] = t;
    t->heap_idx = ++loop->nheap;
    heap_up(loop, loop->nheap - 1);
}

static void run_timers(struct loop *loop)
{
    while (loop->nheap > 0 && loop->heap[0]->key_ms <= loop->now_ms) {
        struct loop_timer *t = loop->heap[0];
        if (t->key_ms != t->when_ms) {
            /* pushed back while armed: to its real place (expired ones then fire in deadline
             * order) */
            t->key_ms = t->when_ms;
            heap_down(loop, 0);
            continue;
        }
        loop_timer_cancel(loop, t);
        t->fn(loop, t);
    }
}

/* ---- deferred calls and cross-thread wake-ups ---- */

void loop_defer(struct loop *loop, loop_call_fn *fn, void *data)
{
    if (loop->ndefer == loop->capdefer) {
        loop->capdefer = loop->capdefer ? loop->capdefer * 2 : 64;
        loop->defer = alloc_realloc(loop->defer, loop->capdefer * sizeof(*loop->defer));
    }
    loop->defer[loop->ndefer++] = (struct deferred){fn, data};
}

static void run_deferred(struct loop *loop)
{
    /* A deferred call may defer more; run until none is left. */
    for (size_t i = 0; i < loop->ndefer; i++)
        loop->defer[i].fn(loop, loop->defer[i].data);
    loop->ndefer = 0;
}

void loop_on_wake(struct loop *loop, loop_call_fn *fn, void *data)
{
    loop->wake_fn = fn;
    loop->wake_data = data;
}

void loop_wake(struct loop *loop)
{
    uint64_t one = 1;
    ssize_t r = write(loop->wakefd, &one, sizeof(one));
    (void)r;
}

void loop_stop(struct loop *loop) { loop->stop = 1; }

void loop_yield_after(struct loop *loop, unsigned us)
{
    loop->yield_us = loop->yield_now = us;
    loop->yield_quick = 0;
    loop->busy_us = 0;
}

/* Yields the CPU and adapts the amount of work before the next yield ("Yielding" in loop.h). One
 * quick yield proves nothing (a busy neighbour that has had more than its share lets some return
 * at once): only LOOP_YIELD_QUICK_N in a row undo a back-off. */
static void yield_cpu(struct loop *loop)
{
    loop->busy_us = 0;
    uint64_t before = loop->end_us; /* read by loop_run just before */
    sched_yield();
    loop->end_us = loop_clock_us();
    uint64_t took = loop->end_us - before;
    unsigned most = loop->yield_us > LOOP_YIELD_MAX_US ? loop->yield_us : LOOP_YIELD_MAX_US;
    if (took >= LOOP_YIELD_SLOW_US) {
        loop->yield_now = loop->yield_now > most / 2 ? most : loop->yield_now * 2;
        loop->yield_quick = 0;
    } else if (loop->yield_now > loop->yield_us && ++loop->yield_quick == LOOP_YIELD_QUICK_N) {
        loop->yield_now = loop->yield_now / 2 > loop->yield_us ? loop->yield_now / 2 : loop->yield_us;
        loop->yield_quick = 0;
    }
}

int loop_run(struct loop *loop)
{
    struct epoll_event evs[256];
    loop->stop = 0;
    while (!loop->stop) {
        int timeout = -1;
        if (loop->ndefer)
            timeout = 0;
        else if (loop->nheap) {
            uint64_t now = clock_ms();
            uint64_t when = loop->heap[0]->key_ms; /* may wake early for a pushed-back timer */
            timeout = when <= now ? 0 : (int)(when - now > 60000 ? 60000 : when - now);
        }
        int n = epoll_wait(loop->epfd, evs, 256, timeout);
        if (n < 0 && errno != EINTR)
            return -errno;
        uint64_t start_us = loop_clock_us();
        loop->now_ms = start_us / 1000u;
        if (start_us - loop->end_us >= LOOP_YIELD_SLEPT_US) {
            loop->busy_us = 0; /* the loop slept, or was preempted: others have had the CPU */
            loop->awake_us = start_us;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == UINT64_MAX) {
                uint64_t v;
                ssize_t r = read(loop->wakefd, &v, sizeof(v));
                (void)r;
                if (loop->wake_fn)
                    loop->wake_fn(loop, loop->wake_data);
                continue;
            }
            int fd = (int)(evs[i].data.u64 & 0xffffffffu);
            unsigned gen = (unsigned)(evs[i].data.u64 >> 32);
            /* A callback may grow (move) the table: w is not used after the call. */
            struct watch *w = &loop->watches[fd];
            if (!w->fn || w->gen != gen)
                continue;
            int ev = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                ev |= LOOP_READ;
            if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                ev |= LOOP_WRITE;
            /* Hang-ups and errors are always delivered, even to a paused descriptor: its owner
             * must close it, or level-triggered epoll would report it forever. */
            if (!(evs[i].events & (EPOLLHUP | EPOLLERR)))
                ev &= w->mask;
            if (ev)
                w->fn(loop, fd, ev, w->data);
        }
        run_timers(loop);
        run_deferred(loop);
        /* Yielding (loop.h): a task this iteration woke onto this CPU runs now, not at the tick. */
        loop->end_us = loop_clock_us();
        loop->busy_us += loop->end_us - start_us;
        if (loop->yield_us && loop->busy_us >= loop->yield_now &&
            loop->end_us - loop->awake_us >= LOOP_YIELD_AWAKE_US && !loop->stop)
            yield_cpu(loop);
    }
    return 0;
}
