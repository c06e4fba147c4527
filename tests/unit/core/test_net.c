/* test_net.c — unit tests for the socket helpers (src/core/net.h): address parsing and
 * formatting, listening and connecting on 127.0.0.1 with port 0, and the "no descriptor left open
 * on failure" rule. Every wait is a poll() with a bounded timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/net.h"

#define POLL_MS 5000

/* Parses s and checks family, length and the formatted form. */
static void expect_addr(const char *s, int family, const char *formatted)
{
    struct net_addr a;
    char out[64];
    int rc = net_parse_addr(s, &a);
    if (rc != 0)
        fail_msg("net_parse_addr(\"%s\") = %d, want 0", s, rc);
    assert_int_equal(a.ss.ss_family, family);
    assert_int_equal(a.len, family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    net_format_addr(&a, out, sizeof(out));
    assert_string_equal(out, formatted);
}

static void test_parse_forms(void **state)
{
    expect_addr("127.0.0.1:8080", AF_INET, "127.0.0.1:8080");
    expect_addr("10.1.2.3:0", AF_INET, "10.1.2.3:0");
    expect_addr("192.168.0.1:65535", AF_INET, "192.168.0.1:65535");
    expect_addr("[::1]:443", AF_INET6, "[::1]:443");
    expect_addr("[2001:db8::7]:80", AF_INET6, "[2001:db8::7]:80");
    expect_addr("[::]:9", AF_INET6, "[::]:9");
    /* All interfaces. */
    expect_addr(":8000", AF_INET, "0.0.0.0:8000");
    expect_addr("8000", AF_INET, "0.0.0.0:8000");
    expect_addr("*:81", AF_INET, "0.0.0.0:81");
    expect_addr("0.0.0.0:82", AF_INET, "0.0.0.0:82");
    /* localhost resolves, IPv4 preferred. */
    expect_addr("localhost:9", AF_INET, "127.0.0.1:9");
}

/* One definition of loopback for the admin bind, the admin Host check and --stats-access. */
static void test_loopback(void **state)
{
    static const char *const yes[] = {"127.0.0.1", "127.255.1.2", "::1", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"};
    static const char *const no[] = {"128.0.0.1", "10.0.0.1",  "0.0.0.0", "::", "::2",  "::ffff:10.0.0.1",
                                     "fe80::1",   "localhost", "127.0.0", "",   "[::1]"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_int_equal(net_ip_is_loopback(yes[i]), 1);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_int_equal(net_ip_is_loopback(no[i]), 0);
    struct net_addr a;
    assert_int_equal(net_parse_addr("127.0.0.1:80", &a), 0);
    assert_int_equal(net_is_loopback((const struct sockaddr *)&a.ss), 1);
    assert_int_equal(net_parse_addr("[::1]:80", &a), 0);
    assert_int_equal(net_is_loopback((const struct sockaddr *)&a.ss), 1);
    assert_int_equal(net_parse_addr("0.0.0.0:80", &a), 0);
    assert_int_equal(net_is_loopback((const struct sockaddr *)&a.ss), 0);
}

static void test_parse_fields(void **state)
{
    struct net_addr a;
    assert_int_equal(net_parse_addr("127.0.0.1:8080", &a), 0);
    const struct sockaddr_in *in = (const struct sockaddr_in *)&a.ss;
    assert_int_equal(ntohs(in->sin_port), 8080);
    assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000001);
    assert_int_equal(net_parse_addr(":8000", &a), 0);
    assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_ANY);
    assert_int_equal(net_parse_addr("[::1]:443", &a), 0);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a.ss;
    assert_int_equal(ntohs(in6->sin6_port), 443);
    assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
}

static void test_parse_errors(void **state)
{
    static const char *const bad[] = {
        "",                /* no port */
        ":",               /* empty port */
        "127.0.0.1:",      /* empty port */
        "127.0.0.1:65536", /* port out of range */
        "127.0.0.1:99999", /* port out of range */
        "127.0.0.1:-1",    /* negative port */
        "127.0.0.1:80x",   /* trailing junk */
        "127.0.0.1:x80",   /* not a number */
        "[::1]",           /* no port */
        "[::1]:",          /* empty port */
        "[::1]80",         /* no colon after the bracket */
        "[::1",            /* unclosed bracket */
        "[::1]:70000",     /* port out of range */
        "abc",             /* a bare word is a (bad) port */
    };
    struct net_addr a;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = net_parse_addr(bad[i], &a);
        if (rc != -EINVAL)
            fail_msg("net_parse_addr(\"%s\") = %d, want -EINVAL", bad[i], rc);
    }
    /* Hosts too long for the internal buffer are rejected without a lookup. */
    char longhost[400];
    memset(longhost, 'h', 300);
    strcpy(longhost + 300, ":80");
    assert_int_equal(net_parse_addr(longhost, &a), -EINVAL);
    longhost[0] = '[';
    strcpy(longhost + 299, "]:80");
    assert_int_equal(net_parse_addr(longhost, &a), -EINVAL);
}

static void test_format_ip(void **state)
{
    char out[64];
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(1)};
    inet_pton(AF_INET, "203.0.113.9", &in.sin_addr);
    net_format_ip((const struct sockaddr *)&in, out, sizeof(out));
    assert_string_equal(out, "203.0.113.9");
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:198.51.100.7", &in6.sin6_addr); /* IPv4-mapped: shown as IPv4 */
    net_format_ip((const struct sockaddr *)&in6, out, sizeof(out));
    assert_string_equal(out, "198.51.100.7");
    inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
    net_format_ip((const struct sockaddr *)&in6, out, sizeof(out));
    assert_string_equal(out, "2001:db8::1");
    struct sockaddr un = {.sa_family = AF_UNIX};
    net_format_ip(&un, out, sizeof(out));
    assert_string_equal(out, "unix");
}

/* Number of open descriptors of this process. */
static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int wait_fd(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, POLL_MS);
    assert_int_equal(r, 1);
    return p.revents;
}

static unsigned bound_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    assert_int_equal(sin.sin_family, AF_INET);
    return ntohs(sin.sin_port);
}

static void test_listen_connect(void **state)
{
    struct net_addr a;
    assert_int_equal(net_parse_addr("127.0.0.1:0", &a), 0);
    int lfd = net_listen(&a, 0, 16);
    assert_true(lfd >= 0);
    assert_true(fcntl(lfd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
    int one = 0;
    socklen_t olen = sizeof(one);
    assert_int_equal(getsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, &olen), 0);
    assert_int_equal(one, 1);
    unsigned port = bound_port(lfd);
    assert_true(port > 0);

    char spec[32];
    snprintf(spec, sizeof(spec), "127.0.0.1:%u", port);
    struct net_addr to;
    assert_int_equal(net_parse_addr(spec, &to), 0);
    int cfd = net_connect(&to);
    assert_true(cfd >= 0);
    assert_true(fcntl(cfd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(cfd, F_GETFD) & FD_CLOEXEC);
    int nodelay = 0;
    olen = sizeof(nodelay);
    assert_int_equal(getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &olen), 0);
    assert_int_equal(nodelay, 1);

    assert_true(wait_fd(cfd, POLLOUT) & POLLOUT);
    int err = -1;
    olen = sizeof(err);
    assert_int_equal(getsockopt(cfd, SOL_SOCKET, SO_ERROR, &err, &olen), 0);
    assert_int_equal(err, 0);

    assert_true(wait_fd(lfd, POLLIN) & POLLIN);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    int sfd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
    assert_true(sfd >= 0);
    char ip[64];
    net_format_ip((const struct sockaddr *)&peer, ip, sizeof(ip));
    assert_string_equal(ip, "127.0.0.1");
    nodelay = 0;
    olen = sizeof(nodelay);
    assert_int_equal(net_tune(sfd), 0);
    assert_int_equal(getsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &olen), 0);
    assert_int_equal(nodelay, 1);

    assert_int_equal(send(cfd, "ping", 4, MSG_NOSIGNAL), 4);
    assert_true(wait_fd(sfd, POLLIN) & POLLIN);
    char got[8] = {0};
    assert_int_equal(recv(sfd, got, sizeof(got), 0), 4);
    assert_string_equal(got, "ping");
    close(sfd);
    close(cfd);
    close(lfd);
}

static void test_connect_refused(void **state)
{
    struct net_addr a;
    assert_int_equal(net_parse_addr("127.0.0.1:0", &a), 0);
    int lfd = net_listen(&a, 0, 1);
    assert_true(lfd >= 0);
    char spec[32];
    snprintf(spec, sizeof(spec), "127.0.0.1:%u", bound_port(lfd));
    close(lfd); /* nothing listens there now */
    struct net_addr to;
    assert_int_equal(net_parse_addr(spec, &to), 0);
    int fds_before = count_fds();
    int cfd = net_connect(&to);
    if (cfd < 0) {
        assert_int_equal(cfd, -ECONNREFUSED);
        assert_int_equal(count_fds(), fds_before);
        return;
    }
    /* In progress: the refusal shows up as SO_ERROR. */
    wait_fd(cfd, POLLOUT);
    int err = 0;
    socklen_t olen = sizeof(err);
    assert_int_equal(getsockopt(cfd, SOL_SOCKET, SO_ERROR, &err, &olen), 0);
    assert_int_equal(err, ECONNREFUSED);
    close(cfd);
}

static void test_listen_failures_leave_no_fd(void **state)
{
    struct net_addr a;
    assert_int_equal(net_parse_addr("127.0.0.1:0", &a), 0);
    int lfd = net_listen(&a, 0, 16);
    assert_true(lfd >= 0);
    char spec[32];
    snprintf(spec, sizeof(spec), "127.0.0.1:%u", bound_port(lfd));
    struct net_addr same;
    assert_int_equal(net_parse_addr(spec, &same), 0);
    int before = count_fds();
    assert_int_equal(net_listen(&same, 0, 16), -EADDRINUSE);
    assert_int_equal(net_listen(&same, 1, 16), -EADDRINUSE); /* the first one lacks SO_REUSEPORT */
    /* An address that is not local cannot be bound. */
    struct net_addr far;
    assert_int_equal(net_parse_addr("192.0.2.1:0", &far), 0);
    assert_int_equal(net_listen(&far, 0, 16), -EADDRNOTAVAIL);
    assert_int_equal(count_fds(), before);
    close(lfd);
}

static void test_listen_reuseport(void **state)
{
    struct net_addr a;
    assert_int_equal(net_parse_addr("127.0.0.1:0", &a), 0);
    int l1 = net_listen(&a, 1, 16);
    assert_true(l1 >= 0);
    char spec[32];
    snprintf(spec, sizeof(spec), "127.0.0.1:%u", bound_port(l1));
    struct net_addr same;
    assert_int_equal(net_parse_addr(spec, &same), 0);
    int l2 = net_listen(&same, 1, 16); /* both with SO_REUSEPORT: allowed */
    assert_true(l2 >= 0);
    assert_int_equal(bound_port(l2), bound_port(l1));
    close(l1);
    close(l2);
}

/* On a non-TCP socket TCP_NODELAY is ignored and nothing else changes. */
static void test_tune_unix(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int fl = fcntl(sv[0], F_GETFL);
    assert_int_equal(net_tune(sv[0]), 0);
    assert_int_equal(fcntl(sv[0], F_GETFL), fl);
    close(sv[0]);
    close(sv[1]);
}

/* net_write: everything when there is room, the rest kept when the socket is full, -EPIPE (no
 * SIGPIPE) once the peer is gone. */
static void test_write(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct buf b = {0};
    buf_puts(&b, "hello");
    assert_int_equal(net_write(sv[0], &b), 5);
    assert_int_equal(buf_used(&b), 0);
    char got[8];
    assert_int_equal(read(sv[1], got, sizeof(got)), 5);
    assert_memory_equal(got, "hello", 5);
    assert_int_equal(net_write(sv[0], &b), 0); /* nothing to write */

    /* More than the socket holds: part is written, the rest stays queued in order. */
    size_t big = 8 << 20;
    char *p = buf_reserve(&b, big);
    for (size_t i = 0; i < big; i++)
        p[i] = (char)(i % 251);
    buf_commit(&b, big);
    ssize_t n = net_write(sv[0], &b);
    assert_true(n > 0 && (size_t)n < big);
    assert_int_equal(buf_used(&b), big - (size_t)n);
    assert_int_equal((unsigned char)buf_head(&b)[0], (unsigned char)((size_t)n % 251));

    close(sv[1]);
    assert_int_equal(net_write(sv[0], &b), -EPIPE);
    close(sv[0]);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write),
        cmocka_unit_test(test_parse_forms),
        cmocka_unit_test(test_parse_fields),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_format_ip),
        cmocka_unit_test(test_listen_connect),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_listen_failures_leave_no_fd),
        cmocka_unit_test(test_listen_reuseport),
        cmocka_unit_test(test_tune_unix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
