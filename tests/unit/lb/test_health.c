/* test_health.c — unit tests for active health checks (src/lb/health.h).
 *
 * lb_health_apply's rise/fall state machine is driven verdict by verdict with exact expectations;
 * then a real checker runs on a loop against fake servers on 127.0.0.1 (one answering 200, one
 * 503, one port with nothing listening, one that never answers) to check the first-check rule,
 * the request sent, rise after recovery, the ejection hold-off and the timeout. Every loop run is
 * bounded by a watchdog timer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/net.h"
#include "lb/config.h"
#include "lb/health.h"
#include "lb/servers.h"
#include "lb_test.h"

#define WATCHDOG_MS 5000

/* The server's last health-check outcome, copied under its lock (the health thread may be
 * writing it); valid until the next call. */
static const char *last_check(struct lb_server *s)
{
    static _Thread_local char buf[96];
    lb_server_last_check(s, buf, sizeof buf);
    return buf;
}

/* Applies the verdicts in seq ('P' pass, 'F' fail) one by one and checks the state after each
 * against want ('1' up, '0' down). */
static void run_seq(struct lb_server *s, unsigned rise, unsigned fall, const char *seq, const char *want)
{
    assert_int_equal(strlen(seq), strlen(want));
    for (size_t i = 0; seq[i]; i++) {
        lb_health_apply(s, seq[i] == 'P', rise, fall, seq[i] == 'P' ? "HTTP 200" : "HTTP 500");
        int got = atomic_load(&s->healthy);
        if (got != want[i] - '0')
            fail_msg("rise %u fall %u, after \"%.*s\": healthy = %d, want %c", rise, fall, (int)i + 1, seq, got,
                     want[i]);
        assert_string_equal(last_check(s), seq[i] == 'P' ? "HTTP 200" : "HTTP 500");
    }
}

/* Runs seq from a fresh server in the given initial state. */
static void seq_from(int healthy, unsigned rise, unsigned fall, const char *seq, const char *want)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    atomic_store(&s->healthy, healthy);
    run_seq(s, rise, fall, seq, want);
    lb_server_unref(s);
}

static void test_apply_rise2_fall3(void **state)
{
    /* An up server goes down on the third consecutive failure. */
    seq_from(1, 2, 3, "FFF", "110");
    seq_from(1, 2, 3, "PPPFFFF", "1111100");
    /* A pass resets the failure count. */
    seq_from(1, 2, 3, "FFPFFPFFF", "111111110");
    /* A down server comes back on the second consecutive pass. */
    seq_from(0, 2, 3, "PP", "01");
    seq_from(0, 2, 3, "FFFPP", "00001");
    /* A failure resets the pass count. */
    seq_from(0, 2, 3, "PFPFPP", "000001");
    /* A full cycle: down after 3, up after 2, down again after 3. */
    seq_from(1, 2, 3, "FFFPPFFF", "11001110");
    seq_from(1, 2, 3, "FFFPFPPFFPFFF", "1100001111110");
}

static void test_apply_other_thresholds(void **state)
{
    seq_from(1, 1, 1, "FPFPPF", "010110");
    seq_from(1, 3, 1, "FPPPFPPP", "00010001");
    seq_from(0, 1, 5, "PFFFFFP", "1111101");
}

static void test_apply_counters(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    /* Up: passes do not count towards rise, failures count towards fall. */
    lb_health_apply(s, 1, 2, 3, "ok");
    assert_int_equal(s->hc_rise, 0);
    assert_int_equal(s->hc_fall, 0);
    lb_health_apply(s, 0, 2, 3, "bad");
    assert_int_equal(s->hc_fall, 1);
    lb_health_apply(s, 0, 2, 3, "bad");
    assert_int_equal(s->hc_fall, 2);
    lb_health_apply(s, 1, 2, 3, "ok");
    assert_int_equal(s->hc_fall, 0);
    assert_int_equal(s->hc_rise, 0);
    lb_health_apply(s, 0, 2, 3, "bad");
    lb_health_apply(s, 0, 2, 3, "bad");
    lb_health_apply(s, 0, 2, 3, "bad");
    assert_int_equal(atomic_load(&s->healthy), 0);
    assert_int_equal(s->hc_fall, 0); /* reset on the transition */
    /* Down: failures do not count towards fall, passes count towards rise. */
    lb_health_apply(s, 0, 2, 3, "bad");
    assert_int_equal(s->hc_fall, 0);
    assert_int_equal(s->hc_rise, 0);
    lb_health_apply(s, 1, 2, 3, "ok");
    assert_int_equal(s->hc_rise, 1);
    uint64_t before = loop_clock_us() / 1000;
    lb_health_apply(s, 1, 2, 3, "back");
    uint64_t after = loop_clock_us() / 1000;
    assert_int_equal(atomic_load(&s->healthy), 1);
    assert_int_equal(s->hc_rise, 0);
    assert_string_equal(last_check(s), "back");
    /* Coming up stamps up_since_ms with the loop clock. */
    uint64_t up = atomic_load(&s->up_since_ms);
    assert_true(up >= before && up <= after);
    lb_server_unref(s);
}

/* ---- a real checker against fake servers ---- */

struct fake {
    struct loop *loop;
    int lfd;
    unsigned port;
    int status;     /* answered status */
    char req[1024]; /* the last request head received */
    size_t reqlen;
    int cfd; /* connection being served, or -1 */
};

static void on_fake_conn(struct loop *loop, int fd, int events, void *data)
{
    struct fake *f = data;
    ssize_t n = recv(fd, f->req + f->reqlen, sizeof(f->req) - 1 - f->reqlen, 0);
    if (n > 0) {
        f->reqlen += (size_t)n;
        f->req[f->reqlen] = '\0';
        if (!strstr(f->req, "\r\n\r\n"))
            return;
        char resp[128];
        int len = snprintf(resp, sizeof(resp), "HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n", f->status);
        assert_int_equal(send(fd, resp, (size_t)len, MSG_NOSIGNAL), len);
    }
    loop_unwatch(loop, fd);
    close(fd);
    f->cfd = -1;
}

static void on_fake_accept(struct loop *loop, int fd, int events, void *data)
{
    struct fake *f = data;
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0)
        return;
    assert_int_equal(f->cfd, -1); /* one check at a time per server */
    f->cfd = c;
    f->reqlen = 0;
    f->req[0] = '\0';
    assert_int_equal(loop_watch(loop, c, LOOP_READ, on_fake_conn, f), 0);
}

static unsigned listen_local(int *fd)
{
    struct net_addr a;
    assert_int_equal(net_parse_addr("127.0.0.1:0", &a), 0);
    *fd = net_listen(&a, 0, 16);
    assert_true(*fd >= 0);
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

static void fake_start(struct fake *f, struct loop *loop, int status, int serve)
{
    memset(f, 0, sizeof(*f));
    f->loop = loop;
    f->status = status;
    f->cfd = -1;
    f->port = listen_local(&f->lfd);
    if (serve) /* otherwise connections complete in the backlog but are never answered */
        assert_int_equal(loop_watch(loop, f->lfd, LOOP_READ, on_fake_accept, f), 0);
}

static void fake_stop(struct fake *f)
{
    if (f->cfd >= 0) {
        loop_unwatch(f->loop, f->cfd);
        close(f->cfd);
    }
    loop_unwatch(f->loop, f->lfd);
    close(f->lfd);
}

/* Waits (bounded) until every server in the set has a last check other than "". */
struct waiter {
    struct loop_timer poll, watchdog;
    struct lb_server **servers;
    size_t n;
    int timed_out;
};

static void on_poll(struct loop *loop, struct loop_timer *t)
{
    struct waiter *w = t->data;
    for (size_t i = 0; i < w->n; i++)
        if (last_check(w->servers[i])[0] == '\0') {
            loop_timer_arm(loop, t, 1);
            return;
        }
    loop_stop(loop);
}

static void on_watchdog(struct loop *loop, struct loop_timer *t)
{
    ((struct waiter *)t->data)->timed_out = 1;
    loop_stop(loop);
}

static void wait_checked(struct loop *loop, struct lb_server **servers, size_t n)
{
    struct waiter w = {.servers = servers, .n = n};
    w.poll = (struct loop_timer){.fn = on_poll, .data = &w};
    w.watchdog = (struct loop_timer){.fn = on_watchdog, .data = &w};
    loop_timer_arm(loop, &w.poll, 0);
    loop_timer_arm(loop, &w.watchdog, WATCHDOG_MS);
    assert_int_equal(loop_run(loop), 0);
    loop_timer_cancel(loop, &w.poll);
    loop_timer_cancel(loop, &w.watchdog);
    assert_int_equal(w.timed_out, 0);
}

static void clear_last(struct lb_server **servers, size_t n)
{
    for (size_t i = 0; i < n; i++)
        lb_server_set_last_check(servers[i], "", "");
}

/* Going down raises `downs` (the proxy's cue to end the requests waiting there) and says so by
 * its return value; a server the proxy ejected still counts failing checks towards fall and is
 * marked down by them, once. */
static void test_apply_marks_down(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    assert_int_equal(lb_health_apply(s, 0, 2, 2, "bad"), 0);
    assert_int_equal(lb_health_apply(s, 0, 2, 2, "bad"), 1);
    assert_int_equal(atomic_load(&s->downs), 1);
    assert_int_equal(lb_health_apply(s, 0, 2, 2, "bad"), 0); /* already down: once */
    assert_int_equal(lb_health_apply(s, 0, 2, 2, "bad"), 0);
    assert_int_equal(atomic_load(&s->downs), 1);
    assert_int_equal(lb_health_apply(s, 1, 2, 2, "ok"), 0);
    assert_int_equal(lb_health_apply(s, 1, 2, 2, "ok"), 0);
    assert_int_equal(atomic_load(&s->healthy), 1);
    /* Ejected by the proxy (healthy 0, the checks' verdict up): failing checks still count. */
    assert_int_equal(lb_server_eject(s, 1000, 1000, "test"), 1);
    assert_int_equal(lb_health_apply(s, 0, 2, 2, "bad"), 0);
    assert_int_equal(lb_health_apply(s, 0, 2, 2, "bad"), 1);
    assert_int_equal(atomic_load(&s->downs), 2);
    assert_int_equal(atomic_load(&s->healthy), 0);
    assert_int_equal(lb_health_apply(s, 0, 2, 2, "bad"), 0);
    assert_int_equal(atomic_load(&s->downs), 2);
    lb_server_unref(s);
}

static void test_checker(void **state)
{
    struct loop *loop = loop_create(1024);
    assert_non_null(loop);
    struct fake ok, err;
    fake_start(&ok, loop, 200, 1);
    fake_start(&err, loop, 503, 1);
    int dead_fd;
    unsigned dead_port = listen_local(&dead_fd);
    close(dead_fd); /* nothing listens there any more */

    char spec[3][64];
    snprintf(spec[0], sizeof(spec[0]), "http://127.0.0.1:%u", ok.port);
    snprintf(spec[1], sizeof(spec[1]), "http://127.0.0.1:%u", err.port);
    snprintf(spec[2], sizeof(spec[2]), "http://127.0.0.1:%u", dead_port);
    struct lb_server *s[3];
    for (int i = 0; i < 3; i++)
        s[i] = new_server(spec[i]);
    clear_last(s, 3);
    atomic_store(&s[0]->healthy, 0); /* the first check decides at once, both ways */
    struct lb_set *set = lb_set_new(s, 3, 1);
    struct lb_registry reg;
    lb_registry_init(&reg, set);

    struct lb_config cfg;
    lb_config_defaults(&cfg);
    snprintf(cfg.health_path, sizeof(cfg.health_path), "/hc");
    cfg.health_interval_ms = 600000; /* only the rounds this test asks for */
    cfg.health_timeout_ms = 3000;
    struct lb_health *h = lb_health_start(loop, &cfg, &reg);
    assert_non_null(h);

    /* Round 1 (started at once): every server's state is decided by its first check. */
    wait_checked(loop, s, 3);
    assert_int_equal(atomic_load(&s[0]->healthy), 1);
    assert_string_equal(last_check(s[0]), "HTTP 200");
    assert_int_equal(atomic_load(&s[1]->healthy), 0);
    assert_string_equal(last_check(s[1]), "HTTP 503");
    assert_int_equal(atomic_load(&s[2]->healthy), 0);
    assert_string_equal(last_check(s[2]), "connect failed: Connection refused");
    for (int i = 0; i < 3; i++)
        assert_int_equal(s[i]->hc_checked, 1);
    char want[256];
    snprintf(want, sizeof(want),
             "GET /hc HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: agora-health\r\nConnection: close\r\n\r\n",
             ok.port);
    assert_string_equal(ok.req, want);

    /* Round 2: the 503 server recovers; one pass is not enough (rise 2)... */
    err.status = 200;
    clear_last(s, 3);
    lb_health_kick(h);
    wait_checked(loop, s, 3);
    assert_int_equal(atomic_load(&s[0]->healthy), 1);
    assert_int_equal(atomic_load(&s[1]->healthy), 0);
    assert_string_equal(last_check(s[1]), "HTTP 200");
    assert_int_equal(s[1]->hc_rise, 1);
    assert_int_equal(atomic_load(&s[2]->healthy), 0);

    /* ...round 3: the second consecutive pass brings it back. */
    clear_last(s, 3);
    lb_health_kick(h);
    wait_checked(loop, s, 3);
    assert_int_equal(atomic_load(&s[1]->healthy), 1);
    assert_int_equal(s[1]->hc_rise, 0);

    /* Round 4: a passively ejected server does not count passing checks before its time is up. */
    assert_int_equal(lb_server_eject(s[0], 600000, 600000, "test"), 1);
    clear_last(s, 3);
    lb_health_kick(h);
    wait_checked(loop, s, 3);
    assert_int_equal(atomic_load(&s[0]->healthy), 0);
    assert_string_equal(last_check(s[0]), "HTTP 200 (ejected)");
    assert_int_equal(s[0]->hc_rise, 0);

    /* Round 5: once the ejection time is over, passes count again (rise applies). */
    atomic_store(&s[0]->ejected_until_ms, 0);
    clear_last(s, 3);
    lb_health_kick(h);
    wait_checked(loop, s, 3);
    assert_string_equal(last_check(s[0]), "HTTP 200");
    assert_int_equal(atomic_load(&s[0]->healthy), 0);
    assert_int_equal(s[0]->hc_rise, 1);

    lb_health_stop(h);
    lb_registry_destroy(&reg);
    for (int i = 0; i < 3; i++)
        lb_server_unref(s[i]);
    lb_config_free(&cfg);
    fake_stop(&ok);
    fake_stop(&err);
    loop_destroy(loop);
}

/* A server that accepts but never answers fails its check at the timeout. */
static void test_checker_timeout(void **state)
{
    struct loop *loop = loop_create(1024);
    struct fake silent;
    fake_start(&silent, loop, 200, 0);
    char spec[64];
    snprintf(spec, sizeof(spec), "http://127.0.0.1:%u", silent.port);
    struct lb_server *s = new_server(spec);
    clear_last(&s, 1);
    struct lb_set *set = lb_set_new(&s, 1, 1);
    struct lb_registry reg;
    lb_registry_init(&reg, set);
    struct lb_config cfg;
    lb_config_defaults(&cfg);
    cfg.health_interval_ms = 600000;
    cfg.health_timeout_ms = 20;
    struct lb_health *h = lb_health_start(loop, &cfg, &reg);
    wait_checked(loop, &s, 1);
    assert_string_equal(last_check(s), "timeout waiting for response");
    assert_int_equal(atomic_load(&s->healthy), 0);
    lb_health_stop(h);
    lb_registry_destroy(&reg);
    lb_server_unref(s);
    lb_config_free(&cfg);
    fake_stop(&silent);
    loop_destroy(loop);
}

/* Stopping with checks in flight cancels them and frees everything (checked under ASan). */
static void test_stop_in_flight(void **state)
{
    struct loop *loop = loop_create(1024);
    struct fake silent;
    fake_start(&silent, loop, 200, 0);
    char spec[64];
    snprintf(spec, sizeof(spec), "http://127.0.0.1:%u", silent.port);
    struct lb_server *s = new_server(spec);
    struct lb_set *set = lb_set_new(&s, 1, 1);
    struct lb_registry reg;
    lb_registry_init(&reg, set);
    struct lb_config cfg;
    lb_config_defaults(&cfg);
    struct lb_health *h = lb_health_start(loop, &cfg, &reg);
    lb_health_kick(h); /* starts the check now, without running the loop */
    lb_health_kick(h); /* already in flight: skipped */
    lb_health_stop(h);
    lb_health_stop(NULL);
    assert_int_equal(atomic_load(&s->refs), 2); /* the set's and ours: the check's was dropped */
    assert_int_equal(s->hc_checked, 0);
    lb_registry_destroy(&reg);
    lb_server_unref(s);
    lb_config_free(&cfg);
    fake_stop(&silent);
    loop_destroy(loop);
}

/* A check that cannot get a descriptor is no verdict (issue 9: once the workers held 1,100
 * connections every check failed with "too many open files" and every server went down). The
 * soft descriptor limit is lowered to the lowest free descriptor, so the check's socket() fails
 * with EMFILE: an up server with one failure counted and a never-checked one keep their state and
 * counts; the last check says why. With the limit restored the next round decides as usual. */
static void test_no_descriptor_is_no_verdict(void **state)
{
    struct loop *loop = loop_create(16);
    struct fake ok;
    fake_start(&ok, loop, 200, 1);
    char spec[64];
    snprintf(spec, sizeof(spec), "http://127.0.0.1:%u", ok.port);
    struct lb_server *s[2];
    s[0] = new_server(spec);
    s[1] = new_server("http://127.0.0.1:1"); /* never checked: would be refused */
    clear_last(s, 2);
    s[0]->hc_checked = 1;
    atomic_store(&s[0]->healthy, 1);
    s[0]->hc_fall = 2; /* one more failure would take it down (fall 3) */
    atomic_store(&s[1]->healthy, 1);
    struct lb_set *set = lb_set_new(s, 2, 1);
    struct lb_registry reg;
    lb_registry_init(&reg, set);
    struct lb_config cfg;
    lb_config_defaults(&cfg);
    cfg.health_interval_ms = 600000;
    struct lb_health *h = lb_health_start(loop, &cfg, &reg);

    struct rlimit saved, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    int lowest = dup(0);
    assert_true(lowest >= 0);
    close(lowest);
    low = saved;
    low.rlim_cur = (rlim_t)lowest; /* no new descriptor can be opened */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    for (int round = 0; round < 3; round++)
        lb_health_kick(h); /* each check is skipped at once, nothing stays in flight */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(last_check(s[i]), "not checked: Too many open files (no verdict)");
        assert_int_equal(atomic_load(&s[i]->healthy), 1);
        assert_int_equal(s[i]->hc_rise, 0);
    }
    assert_int_equal(s[0]->hc_fall, 2);
    assert_int_equal(s[0]->hc_checked, 1);
    assert_int_equal(s[1]->hc_checked, 0);

    /* Descriptors again: the checks run and decide (a pass resets the failure count; the first
     * check of the never-checked server decides its state). */
    clear_last(s, 2);
    lb_health_kick(h);
    wait_checked(loop, s, 2);
    assert_string_equal(last_check(s[0]), "HTTP 200");
    assert_int_equal(s[0]->hc_fall, 0);
    assert_int_equal(atomic_load(&s[0]->healthy), 1);
    assert_string_equal(last_check(s[1]), "connect failed: Connection refused");
    assert_int_equal(atomic_load(&s[1]->healthy), 0);
    assert_int_equal(s[1]->hc_checked, 1);

    lb_health_stop(h);
    lb_registry_destroy(&reg);
    for (int i = 0; i < 2; i++)
        lb_server_unref(s[i]);
    lb_config_free(&cfg);
    fake_stop(&ok);
    loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_rise2_fall3), cmocka_unit_test(test_apply_other_thresholds),
        cmocka_unit_test(test_apply_counters),    cmocka_unit_test(test_apply_marks_down),
        cmocka_unit_test(test_checker),           cmocka_unit_test(test_checker_timeout),
        cmocka_unit_test(test_stop_in_flight),    cmocka_unit_test(test_no_descriptor_is_no_verdict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
