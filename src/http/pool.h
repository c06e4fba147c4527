/* pool.h — a bounded pool of handler threads for buffered HTTP handlers.
 *
 * Work that must not run on an event-loop thread (today: the routes that hash a password with
 * Argon2id; later every handler) is handed to a pool of threads. Each thread has its own handler
 * context (for agora server a struct app with its own database connection), made by
 * thread_init on that thread, and runs handler(thread_ctx, req, resp) synchronously and simply.
 * The finished response goes back to the loop that submitted the request through a port: one
 * port per loop, an eventfd the loop watches, and a list of finished jobs.
 *
 * Bounds: at most `threads` handlers run at once; at most `max_queue` jobs wait (across all
 * ports), and a job that has not started within `max_wait_ms` of its submission is not run: its
 * done function is called with resp == NULL (the caller answers 503 with Retry-After). A submit
 * that finds the queue full fails at once (NULL). Nothing grows without bound.
 *
 * Threads and ownership: http_pool_create/destroy on any one thread (the main thread);
 * everything else on a port's loop thread, except the work itself. The request passed to
 * http_pool_submit is copied (head, body, address), so the caller's buffers may go away; the
 * response is owned by the pool and valid only during the done call.
 *
 * Lifetime (the libuv rule): done is called exactly once per successful submit, on the port's
 * loop thread, from the port's own descriptor callback (never from inside http_pool_submit or
 * http_pool_cancel), unless the job was cancelled first; after http_pool_cancel it is never
 * called. A cancelled job that is already running finishes on its thread and is freed by the
 * pool. http_pool_port_close cancels nothing: cancel your jobs first (http_server_free does, by
 * aborting its connections); the port's memory then lives on until its last running job
 * finished. http_pool_destroy waits for the running jobs and joins the threads; every port
 * must be closed before. */
#ifndef AGORA_HTTP_POOL_H
#define AGORA_HTTP_POOL_H
#include <stddef.h>

#include "core/loop.h"
#include "core/prom.h"
#include "http/message.h"

struct http_pool;
struct http_pool_port;
struct http_pool_job;

struct http_pool_config {
    const char *name;     /* for messages, e.g. "hash" */
    unsigned threads;     /* >= 1 */
    unsigned max_queue;   /* jobs waiting for a thread; 0 = 32 per thread */
    unsigned max_wait_ms; /* a job not started within this is answered 503; 0 = 1000 */
    int nice;             /* added to the threads' nice value (0..19): the event loops, which
                             answer /health and every other request, win the CPU from them */
    /* Makes the context of pool thread id (called on that thread). NULL with a message in err
     * fails http_pool_create. */
    void *(*thread_init)(void *ctx, unsigned id, char *err, size_t errlen);
    /* Frees a thread context (on its thread). May be NULL. */
    void (*thread_fini)(void *ctx, void *thread_ctx);
    http_handler_fn handler; /* handler(thread_ctx, req, resp) */
    void *ctx;
};

/* Called on the port's loop thread with the response (status, headers, body), or with NULL when
 * the job waited longer than max_wait_ms and was not run. */
typedef void http_pool_done_fn(void *arg, struct http_response *resp);

/* Starts the threads (each runs thread_init before this returns). NULL with a message in err. */
struct http_pool *http_pool_create(const struct http_pool_config *cfg, char *err, size_t errlen);
/* Lets queued jobs finish, joins the threads (thread_fini on each) and frees the pool. Every port
 * must have been closed. NULL is allowed. */
void http_pool_destroy(struct http_pool *p);

/* Opens a port on loop (watched from now on). NULL when eventfd or watching fails (errno set). */
struct http_pool_port *http_pool_port_open(struct http_pool *p, struct loop *loop);
/* Stops watching and releases the port (loop thread). NULL is allowed. See "Lifetime" above. */
void http_pool_port_close(struct http_pool_port *port);

/* Queues req for a pool thread. Returns the job, or NULL when the queue is full (done is then
 * never called). */
struct http_pool_job *http_pool_submit(struct http_pool_port *port, const struct http_request *req,
                                       http_pool_done_fn *done, void *arg);
/* Withdraws a job (its requester went away): a queued job is dropped, a running one finishes
 * unseen. done is never called for it. */
void http_pool_cancel(struct http_pool_job *job);

/* Counters since creation and gauges (any thread; one consistent copy, taken under the lock the
 * queue takes anyway: the counting costs the request path no lock of its own). */
struct http_pool_stats {
    unsigned long long done;     /* jobs run */
    unsigned long long full;     /* submits refused: queue full */
    unsigned long long expired;  /* jobs answered 503: waited too long */
    unsigned long long canceled; /* jobs withdrawn */
    unsigned threads;            /* the pool's threads */
    unsigned max_queue;          /* jobs that may wait */
    unsigned running;            /* jobs running now */
    unsigned queued;             /* jobs waiting now */
    /* The wait of each job that ran, from submit to a thread taking it (core/prom.h buckets). */
    uint64_t wait_hist[PROM_BUCKETS];
    uint64_t wait_sum_us;
};
void http_pool_stats(struct http_pool *p, struct http_pool_stats *out);

#endif
