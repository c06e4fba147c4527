/* client.c — blocking HTTP client for the command line; see client.h. */
#include "cli/client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/net.h"
#include "http/parser.h"

/* Waits until fd is ready for events or the deadline passes. Returns 1 ready, 0 timeout. */
static int wait_fd(int fd, short events, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = loop_clock_us() / 1000;
        if (now >= deadline_ms)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)(deadline_ms - now));
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return 0;
    }
}

int cli_http(const char *addr, const char *method, const char *path, const char *token, const char *json_body,
             unsigned timeout_ms, int *status, struct buf *body, char *err, size_t errlen)
{
    struct net_addr a;
    struct buf req = {0}, in = {0};
    int rc = -1, fd = -1;
    uint64_t deadline = loop_clock_us() / 1000 + timeout_ms;
    if (net_parse_addr(addr, &a) < 0) {
        snprintf(err, errlen, "invalid address '%s'", addr);
        goto out;
    }
    fd = net_connect(&a);
    if (fd < 0 || !wait_fd(fd, POLLOUT, deadline)) {
        snprintf(err, errlen, "cannot connect to %s: %s", addr, fd < 0 ? strerror(-fd) : "timed out");
        goto out;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(soerr));
        goto out;
    }
    buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: agora-cli\r\n", method, path,
               addr);
    if (token && *token)
        buf_printf(&req, "Authorization: Bearer %s\r\n", token);
    if (json_body)
        buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(json_body),
                   json_body);
    else
        buf_puts(&req, "Content-Length: 0\r\n\r\n");
    while (buf_used(&req)) {
        if (!wait_fd(fd, POLLOUT, deadline)) {
            snprintf(err, errlen, "%s: timed out sending", addr);
            goto out;
        }
        ssize_t n = send(fd, buf_head(&req), buf_used(&req), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(err, errlen, "%s: send failed: %s", addr, strerror(errno));
            goto out;
        }
        if (n > 0)
            buf_consume(&req, (size_t)n);
    }
    for (;;) {
        if (!wait_fd(fd, POLLIN, deadline)) {
            snprintf(err, errlen, "%s: timed out waiting for the answer", addr);
            goto out;
        }
        char *dst = buf_reserve(&in, 16384);
        ssize_t n = recv(fd, dst, 16384, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            break;
        buf_commit(&in, (size_t)n);
        if (buf_used(&in) > (16u << 20)) {
            snprintf(err, errlen, "%s: answer too large", addr);
            goto out;
        }
    }
    struct http_head h;
    int hl = http_parse_response(buf_head(&in), buf_used(&in), HTTP_GET, NULL, &h);
    if (hl <= 0) {
        snprintf(err, errlen, "%s: malformed or incomplete HTTP answer", addr);
        goto out;
    }
    *status = h.status;
    size_t blen = buf_used(&in) - (size_t)hl;
    if (h.body == HTTP_BODY_LENGTH && (uint64_t)h.content_length < blen)
        blen = (size_t)h.content_length;
    buf_append(body, buf_head(&in) + hl, blen);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    buf_free(&req);
    buf_free(&in);
    return rc;
}
