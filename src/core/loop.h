/* loop.h — the event loop: epoll for descriptors, a min-heap for timers (after Redis ae.c).
 *
 * One loop per thread; a loop is used only by the thread that runs it, except loop_wake(),
 * which any thread may call. Descriptor callbacks are level-triggered: a callback registered for
 * LOOP_READ is called while the descriptor stays readable. Timers are intrusive (struct
 * loop_timer lives inside its owner), so arming and cancelling never allocate.
 * Deferred calls (loop_defer) run after every callback of the current iteration has returned:
 * that is where connections are freed, so no callback ever sees a freed object.
 * Any descriptor number the process can open can be watched: the watch table grows on demand, so
 * the only limit is the process's descriptor limit (RLIMIT_NOFILE).
 *
 * Yielding: a loop that has stayed awake for LOOP_YIELD_AWAKE_US calls sched_yield() at the end of
 * an iteration once it has done LOOP_YIELD_US of work (callbacks, timers, deferred calls) since it
 * last yielded or slept. "Slept" is a gap of LOOP_YIELD_SLEPT_US or more between the end of one
 * iteration and the start of the next: a wait in epoll_wait, or a preemption there. A loop that
 * stays busy is not blocked, and a task its writes woke (a backend or web server on the same
 * machine, a local client) is often queued on the loop's own CPU, where the scheduler lets the
 * loop run on until its tick, milliseconds later; the yield lets that task run now. A loop that
 * sleeps every few iterations gives the CPU away there, and does not yield. With nothing else
 * runnable on the CPU a yield returns at once: the cost is one system call per LOOP_YIELD_US of
 * work. A yield that took LOOP_YIELD_SLOW_US or more gave the CPU to a busy task for a whole time
 * slice: the amount of work before the next yield then doubles, up to LOOP_YIELD_MAX_US (or the
 * base, if that is more), and LOOP_YIELD_QUICK_N quick yields in a row halve it again, so a
 * CPU-bound neighbour (a password hash, another worker) does not get the CPU every 100 µs. A yield
 * is not a sleep: the loop stays awake. loop_yield_after changes the base amount.
 * Limits: the time is wall-clock time, so an iteration in which the loop was preempted counts as
 * work; a yield reorders only the loop's own cgroup (the scheduler picks between groups first), so
 * a backend in another cgroup may not gain from it (such a yield returns at once, as a quick one). */
#ifndef AGORA_LOOP_H
#define AGORA_LOOP_H
#include <stddef.h>
#include <stdint.h>

#define LOOP_READ  1
#define LOOP_WRITE 2

#define LOOP_YIELD_US       100    /* work between two yields (see above) */
#define LOOP_YIELD_SLOW_US  1000   /* a yield this long backs off */
#define LOOP_YIELD_QUICK_N  8      /* quick yields in a row that undo one back-off */
#define LOOP_YIELD_SLEPT_US 30     /* a gap between iterations this long is a sleep */
#define LOOP_YIELD_AWAKE_US 2000   /* awake this long before yielding */
#define LOOP_YIELD_MAX_US   100000 /* the most work between two yields after backing off */

struct loop;
struct loop_timer;

typedef void loop_io_fn(struct loop *loop, int fd, int events, void *data);
typedef void loop_timer_fn(struct loop *loop, struct loop_timer *t);
typedef void loop_call_fn(struct loop *loop, void *data);

struct loop_timer {
    uint64_t when_ms; /* the deadline: absolute, loop clock */
    uint64_t key_ms;  /* private: its place in the heap (<= when_ms; see loop_timer_arm) */
    size_t heap_idx;  /* position in the heap + 1; 0 = not armed */
    loop_timer_fn *fn;
    void *data;
};

/* Creates a loop whose watch table starts with initial_fds entries (it grows when a higher
 * descriptor is watched; <= 0 picks a small default). NULL when epoll or eventfd fails (errno set). */
struct loop *loop_create(int initial_fds);
/* Runs the deferred calls still pending, then frees the loop. */
void loop_destroy(struct loop *loop);

/* Watches fd for the events in mask (LOOP_READ|LOOP_WRITE), calling fn(loop, fd, events, data).
 * Replaces any previous registration of fd. Returns 0 or -errno (-EBADF for a negative fd,
 * -ENOMEM if fd is beyond what the table can index, or epoll_ctl's error). */
int loop_watch(struct loop *loop, int fd, int mask, loop_io_fn *fn, void *data);
/* Changes the event mask of a watched fd (0 = watch nothing but keep the registration).
 * Cheap when the mask is unchanged. Returns 0 or -errno (-EBADF or -ENOENT when fd is not watched). */
int loop_set_mask(struct loop *loop, int fd, int mask);
/* Stops watching fd (call before close). Pending events for fd in this iteration are dropped. */
void loop_unwatch(struct loop *loop, int fd);

/* Arms (or re-arms) t to fire once after delay_ms. fn/data must be set in t beforehand. */
void loop_timer_arm(struct loop *loop, struct loop_timer *t, uint64_t delay_ms);
void loop_timer_cancel(struct loop *loop, struct loop_timer *t);
static inline int loop_timer_armed(const struct loop_timer *t) { return t->heap_idx != 0; }

/* Schedules fn(loop, data) to run after the current iteration's callbacks. Never fails. */
void loop_defer(struct loop *loop, loop_call_fn *fn, void *data);
/* Sets the function run when another thread calls loop_wake() (in the loop's thread). */
void loop_on_wake(struct loop *loop, loop_call_fn *fn, void *data);
/* Thread-safe: wakes the loop and makes it run its on-wake function. */
void loop_wake(struct loop *loop);

/* Milliseconds of the loop's monotonic clock, refreshed once per iteration. */
uint64_t loop_now(const struct loop *loop);
/* Monotonic clock in microseconds, read now. */
uint64_t loop_clock_us(void);

/* Runs until loop_stop(). Returns 0, or -errno if epoll_wait failed. */
int loop_run(struct loop *loop);
/* Makes loop_run() return after the current iteration (same thread only; use loop_wake + an
 * on-wake function from other threads). */
void loop_stop(struct loop *loop);
/* Sets the base amount of work between two yields (see the top of this file) to us
 * microseconds, and counts the work again from 0; 0 never yields. The default is LOOP_YIELD_US.
 * The rule of LOOP_YIELD_AWAKE_US still applies. */
void loop_yield_after(struct loop *loop, unsigned us);

#endif
