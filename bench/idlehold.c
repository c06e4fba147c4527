/* idlehold.c — the idle-connection holder of bench/idle.sh (issue 15).
 *
 * Usage: idlehold PORT N
 * Opens N keep-alive TCP connections to 127.0.0.1:PORT, completes one "GET / HTTP/1.1" on each
 * (the whole response is read: Content-Length framing), then holds them idle, sending nothing,
 * until SIGTERM or SIGINT. It prints "ready N" on stdout once every connection is idle (or
 * "failed K: reason" and exits 1 when a connection or its request failed), and at the end
 * "closed_by_peer K": how many held connections the proxy had closed meanwhile (0 shows that they
 * were really held the whole time).
 *
 * It raises its descriptor limit (RLIMIT_NOFILE) to the hard limit, as the proxies do; N must fit
 * under it (20,000 on the benchmark machine). Runs in its own process so that the proxies'
 * resident memory is measured alone. Blocking sockets with a 10 s receive timeout: the
 * connections are opened one after another, which takes about a second for 10,000 on loopback. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) { stop = sig; }

/* Reads one response (head, then Content-Length bytes of body) from fd. Returns 0 on a 2xx. */
static int read_response(int fd)
{
    char buf[16384];
    size_t len = 0;
    char *end = NULL;
    while (!end) {
        if (len == sizeof(buf) - 1)
            return -1;
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (strncmp(buf, "HTTP/1.1 2", 10) != 0)
        return -1;
    size_t head = (size_t)(end + 4 - buf);
    long long clen = 0;
    for (char *p = buf; p < end; p++) {
        if (strncasecmp(p, "\r\ncontent-length:", 17) == 0) {
            clen = strtoll(p + 17, NULL, 10);
            break;
        }
    }
    long long left = clen - (long long)(len - head);
    while (left > 0) {
        ssize_t n = recv(fd, buf, sizeof(buf) < (size_t)left ? sizeof(buf) : (size_t)left, 0);
        if (n <= 0)
            return -1;
        left -= n;
    }
    return left == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: idlehold PORT N\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long n = atol(argv[2]);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (n <= 0 || (rlim_t)n + 16 > rl.rlim_cur) {
        fprintf(stderr, "idlehold: N=%ld does not fit under the descriptor limit %llu\n", n,
                (unsigned long long)rl.rlim_cur);
        return 2;
    }
    /* Blocked until sigsuspend below, so that a signal cannot slip in before the wait. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    int *fds = calloc((size_t)n, sizeof(*fds));
    if (!fds)
        return 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idlehold\r\n\r\n";
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            printf("failed %ld: socket: %s\n", i, strerror(errno));
            return 1;
        }
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            printf("failed %ld: connect: %s\n", i, strerror(errno));
            return 1;
        }
        if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(req) - 1 || read_response(fd) < 0) {
            printf("failed %ld: the request got no complete 2xx response\n", i);
            return 1;
        }
        fds[i] = fd;
    }
    printf("ready %ld\n", n);
    fflush(stdout);
    while (!stop)
        sigsuspend(&old);
    /* A connection the proxy closed is readable (EOF) or in error. */
    long closed = 0;
    for (long i = 0; i < n; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (fds[i] > 0 && poll(&p, 1, 0) == 1)
            closed++;
    }
    printf("closed_by_peer %ld\n", closed);
    return 0;
}
