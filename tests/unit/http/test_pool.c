/* test_pool.c — the handler pool (src/http/pool.c) with a real loop and threads: results come
 * back on the loop thread, the queue is bounded (a full queue refuses at once), a job that waits
 * too long is answered expired without running, cancelled jobs never call back (queued or
 * running), and a port closed while its job runs is freed by that job (ASan checks the memory). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/loop.h"
#include "http/pool.h"

/* A gate the handler waits on, so tests decide when jobs finish. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
    int entered; /* handlers that started */
    int ran;     /* handlers that finished */
    pthread_t last_thread;
};

static struct gate gate;

static void gate_reset(void)
{
    pthread_mutex_init(&gate.mu, NULL);
    pthread_cond_init(&gate.cv, NULL);
    gate.open = 0;
    gate.entered = gate.ran = 0;
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.open = 1;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

static void wait_entered(int n)
{
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&gate.mu);
        int e = gate.entered;
        pthread_mutex_unlock(&gate.mu);
        if (e >= n)
            return;
        usleep(1000);
    }
    fail_msg("handlers did not start");
}

/* Echoes the body as the response body, status from the path length, after the gate opens. */
static void handler(void *tctx, const struct http_request *req, struct http_response *resp)
{
    pthread_mutex_lock(&gate.mu);
    gate.entered++;
    while (!gate.open)
        pthread_cond_wait(&gate.cv, &gate.mu);
    gate.last_thread = pthread_self();
    pthread_mutex_unlock(&gate.mu);
    assert_int_equal(*(int *)tctx, 42);
    resp->status = 200 + (int)req->head->path.n;
    buf_append(&resp->body, req->body, req->body_len);
    buf_printf(&resp->body, "|%s|%.*s", req->remote_addr, (int)req->head->headers[0].value.n,
               req->head->headers[0].value.p);
    pthread_mutex_lock(&gate.mu);
    gate.ran++;
    pthread_mutex_unlock(&gate.mu);
}

static int tctx_value = 42;
static void *tinit(void *ctx, unsigned id, char *err, size_t errlen) { return &tctx_value; }

struct result {
    int called;
    int status; /* -1: expired (resp NULL) */
    char body[128];
    pthread_t thread;
    struct loop *loop;
    int stop_after;
    int *count;
};

static void done(void *arg, struct http_response *resp)
{
    struct result *r = arg;
    r->called++;
    r->thread = pthread_self();
    r->status = resp ? resp->status : -1;
    if (resp)
        snprintf(r->body, sizeof r->body, "%.*s", (int)buf_used(&resp->body), buf_head(&resp->body));
    if (r->count && ++*r->count == r->stop_after)
        loop_stop(r->loop);
}

static void on_deadline(struct loop *loop, struct loop_timer *t) { loop_stop(loop); }

/* Runs the loop until stopped or ms elapsed. */
static void run_for(struct loop *loop, unsigned ms)
{
    struct loop_timer t = {.fn = on_deadline};
    loop_timer_arm(loop, &t, ms);
    loop_run(loop);
    loop_timer_cancel(loop, &t);
}

/* Builds a request whose strings live in a scratch buffer that the test then overwrites: the
 * pool must have copied them. */
struct fake {
    char scratch[256];
    struct http_head head;
    struct http_request req;
};

static void fake_request(struct fake *f, const char *path, const char *body)
{
    memset(f, 0, sizeof *f);
    size_t pl = strlen(path);
    memcpy(f->scratch, path, pl);
    memcpy(f->scratch + 100, "X-Test", 6);
    memcpy(f->scratch + 120, "value", 5);
    memcpy(f->scratch + 140, body, strlen(body) + 1);
    memcpy(f->scratch + 200, "10.1.2.3", 9);
    f->head.method = HTTP_POST;
    f->head.path = (struct http_str){f->scratch, pl};
    f->head.target = f->head.path;
    f->head.headers[0].name = (struct http_str){f->scratch + 100, 6};
    f->head.headers[0].value = (struct http_str){f->scratch + 120, 5};
    f->head.nheaders = 1;
    f->req.head = &f->head;
    f->req.body = f->scratch + 140;
    f->req.body_len = strlen(body);
    f->req.remote_addr = f->scratch + 200;
}

static struct http_pool *make_pool(unsigned threads, unsigned queue, unsigned wait_ms)
{
    char err[256] = "";
    struct http_pool_config c = {.name = "test",
                                 .threads = threads,
                                 .max_queue = queue,
                                 .max_wait_ms = wait_ms,
                                 .thread_init = tinit,
                                 .handler = handler};
    struct http_pool *p = http_pool_create(&c, err, sizeof err);
    if (!p)
        fail_msg("%s", err);
    return p;
}

static void test_result_comes_back_on_the_loop(void **state)
{
    gate_reset();
    gate_open();
    struct loop *loop = loop_create(64);
    struct http_pool *p = make_pool(2, 4, 1000);
    struct http_pool_port *port = http_pool_port_open(p, loop);
    assert_non_null(port);
    int count = 0;
    struct result r = {.loop = loop, .stop_after = 1, .count = &count};
    struct fake f;
    fake_request(&f, "/abc", "hello");
    assert_non_null(http_pool_submit(port, &f.req, done, &r));
    memset(f.scratch, 'z', sizeof f.scratch); /* the pool works on its own copy */
    assert_int_equal(r.called, 0);            /* never called from inside submit */
    run_for(loop, 5000);
    assert_int_equal(r.called, 1);
    assert_int_equal(r.status, 204);
    assert_string_equal(r.body, "hello|10.1.2.3|value");
    assert_true(pthread_equal(r.thread, pthread_self()));          /* done ran on the loop thread */
    assert_false(pthread_equal(gate.last_thread, pthread_self())); /* the handler did not */
    http_pool_port_close(port);
    http_pool_destroy(p);
    loop_destroy(loop);
}

static void test_full_queue_refuses_and_waiting_too_long_expires(void **state)
{
    gate_reset();
    struct loop *loop = loop_create(64);
    struct http_pool *p = make_pool(1, 2, 100);
    struct http_pool_port *port = http_pool_port_open(p, loop);
    int count = 0;
    struct result r[4];
    struct fake f;
    fake_request(&f, "/x", "b");
    for (int i = 0; i < 4; i++)
        r[i] = (struct result){.loop = loop, .stop_after = 3, .count = &count};
    assert_non_null(http_pool_submit(port, &f.req, done, &r[0]));
    wait_entered(1); /* the only thread holds job 0 */
    assert_non_null(http_pool_submit(port, &f.req, done, &r[1]));
    assert_non_null(http_pool_submit(port, &f.req, done, &r[2]));
    assert_null(http_pool_submit(port, &f.req, done, &r[3])); /* queue of 2 is full */
    struct http_pool_stats st;
    http_pool_stats(p, &st); /* the gauges: one running, two waiting */
    assert_int_equal(st.threads, 1);
    assert_int_equal(st.max_queue, 2);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.queued, 2);
    /* jobs 1 and 2 wait longer than 100 ms: answered expired, without running */
    run_for(loop, 400);
    assert_int_equal(r[1].called, 1);
    assert_int_equal(r[1].status, -1);
    assert_int_equal(r[2].called, 1);
    assert_int_equal(r[2].status, -1);
    assert_int_equal(r[0].called, 0);
    gate_open();
    run_for(loop, 5000);
    assert_int_equal(r[0].called, 1);
    assert_int_equal(r[0].status, 202);
    assert_int_equal(r[3].called, 0);
    assert_int_equal(gate.ran, 1);
    http_pool_stats(p, &st);
    assert_int_equal(st.done, 1);
    assert_int_equal(st.full, 1);
    assert_int_equal(st.expired, 2);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.queued, 0);
    uint64_t waits = 0; /* only the job that ran is in the queue-wait histogram */
    for (unsigned b = 0; b < PROM_BUCKETS; b++)
        waits += st.wait_hist[b];
    assert_int_equal(waits, 1);
    assert_true(st.wait_sum_us < 100000);
    http_pool_port_close(port);
    http_pool_destroy(p);
    loop_destroy(loop);
}

static void test_cancel_queued_and_running(void **state)
{
    gate_reset();
    struct loop *loop = loop_create(64);
    struct http_pool *p = make_pool(1, 4, 5000);
    struct http_pool_port *port = http_pool_port_open(p, loop);
    int count = 0;
    struct result r[3];
    struct fake f;
    fake_request(&f, "/x", "b");
    for (int i = 0; i < 3; i++)
        r[i] = (struct result){.loop = loop, .stop_after = 1, .count = &count};
    struct http_pool_job *running = http_pool_submit(port, &f.req, done, &r[0]);
    wait_entered(1);
    struct http_pool_job *queued = http_pool_submit(port, &f.req, done, &r[1]);
    assert_non_null(http_pool_submit(port, &f.req, done, &r[2]));
    http_pool_cancel(queued);  /* dropped from the queue: never runs */
    http_pool_cancel(running); /* finishes unseen */
    gate_open();
    run_for(loop, 5000); /* stops when job 2 is delivered */
    run_for(loop, 50);
    assert_int_equal(r[0].called, 0);
    assert_int_equal(r[1].called, 0);
    assert_int_equal(r[2].called, 1);
    assert_int_equal(gate.ran, 2); /* jobs 0 and 2 ran, 1 did not */
    http_pool_port_close(port);
    http_pool_destroy(p);
    loop_destroy(loop);
}

/* The requester goes away while its job runs (connection closed, then its server freed): the
 * job is cancelled, the port closed, and the job still finishing on its thread frees itself and
 * the port's memory. Nothing leaks (ASan) and nothing is called back. */
static void test_port_closed_while_job_runs(void **state)
{
    gate_reset();
    struct loop *loop = loop_create(64);
    struct http_pool *p = make_pool(1, 4, 5000);
    struct http_pool_port *port = http_pool_port_open(p, loop);
    struct result r = {0};
    struct fake f;
    fake_request(&f, "/x", "b");
    struct http_pool_job *job = http_pool_submit(port, &f.req, done, &r);
    wait_entered(1);
    http_pool_cancel(job);
    http_pool_port_close(port);
    gate_open();
    http_pool_destroy(p); /* joins: the job has finished */
    assert_int_equal(gate.ran, 1);
    assert_int_equal(r.called, 0);
    loop_destroy(loop);
}

/* Five jobs queued behind one thread all run and are all delivered. */
static void test_every_queued_job_runs(void **state)
{
    gate_reset();
    gate_open();
    struct loop *loop = loop_create(64);
    struct http_pool *p = make_pool(1, 8, 5000);
    struct http_pool_port *port = http_pool_port_open(p, loop);
    int count = 0;
    struct result r[5];
    struct fake f;
    fake_request(&f, "/x", "b");
    for (int i = 0; i < 5; i++) {
        r[i] = (struct result){.loop = loop, .stop_after = 5, .count = &count};
        assert_non_null(http_pool_submit(port, &f.req, done, &r[i]));
    }
    run_for(loop, 5000);
    for (int i = 0; i < 5; i++)
        assert_int_equal(r[i].called, 1);
    http_pool_port_close(port);
    http_pool_destroy(p);
    assert_int_equal(gate.ran, 5);
    loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_comes_back_on_the_loop),
        cmocka_unit_test(test_full_queue_refuses_and_waiting_too_long_expires),
        cmocka_unit_test(test_cancel_queued_and_running),
        cmocka_unit_test(test_port_closed_while_job_runs),
        cmocka_unit_test(test_every_queued_job_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
