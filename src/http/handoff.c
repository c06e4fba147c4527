/* handoff.c — listening sockets passed to a successor; see handoff.h. */
#include "http/handoff.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define HELLO "AGORA-HANDOFF 1 "

static int unix_addr(const char *path, struct sockaddr_un *a)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a->sun_path))
        return -ENAMETOOLONG;
    strcpy(a->sun_path, path);
    return 0;
}

int http_handoff_listen(const char *path)
{
    struct sockaddr_un a;
    int rc = unix_addr(path, &a);
    if (rc < 0)
        return rc;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST; /* never remove anything but a socket */
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    mode_t old = umask(0177); /* the socket file is created 0600 */
    rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
    umask(old);
    if (rc < 0 || listen(fd, 4) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int http_handoff_accept(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || (cred.uid != getuid() && cred.uid != 0)) {
        close(fd);
        return -EPERM;
    }
    return fd;
}

int http_handoff_send(int cfd, const int *fds, unsigned n)
{
    if (n == 0 || n > HTTP_HANDOFF_MAX_FDS)
        return -EINVAL;
    char line[32];
    int len = snprintf(line, sizeof(line), HELLO "%u\n", n);
    struct iovec iov = {.iov_base = line, .iov_len = (size_t)len};
    char ctl[CMSG_SPACE(sizeof(int) * HTTP_HANDOFF_MAX_FDS)];
    memset(ctl, 0, sizeof(ctl));
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
    /* The line is short: the socket takes it whole or fails. */
    ssize_t w = sendmsg(cfd, &msg, MSG_NOSIGNAL);
    if (w < 0)
        return -errno;
    return w == len ? 0 : -EIO;
}

int http_handoff_ready(int cfd)
{
    char buf[16];
    ssize_t r = recv(cfd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return r == 6 && !memcmp(buf, "READY\n", 6) ? 1 : -1;
}

int http_handoff_take(const char *path, unsigned timeout_ms, int *fds, unsigned max, unsigned *n, char *err,
                      size_t errlen)
{
    struct sockaddr_un a;
    int rc = unix_addr(path, &a);
    if (rc < 0) {
        snprintf(err, errlen, "%s: path too long", path);
        return rc;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return rc;
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot reach a running process at %s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)timeout_ms) <= 0) {
        snprintf(err, errlen, "no answer from %s within %u ms", path, timeout_ms);
        close(fd);
        return -ETIMEDOUT;
    }
    char line[64];
    struct iovec iov = {.iov_base = line, .iov_len = sizeof(line) - 1};
    char ctl[CMSG_SPACE(sizeof(int) * HTTP_HANDOFF_MAX_FDS)];
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
    ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    unsigned got = 0;
    struct cmsghdr *cm = r > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        got = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        if (got > max) {
            for (unsigned i = 0; i < got; i++) {
                int extra;
                memcpy(&extra, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                close(extra);
            }
            snprintf(err, errlen, "%s offers %u sockets, more than %u", path, got, max);
            close(fd);
            return -E2BIG;
        }
        memcpy(fds, CMSG_DATA(cm), got * sizeof(int));
    }
    unsigned announced = 0;
    if (r > 0) {
        line[r] = '\0';
        if (strncmp(line, HELLO, strlen(HELLO)) || sscanf(line + strlen(HELLO), "%u", &announced) != 1)
            announced = 0;
    }
    if (got == 0 || announced != got || (msg.msg_flags & MSG_CTRUNC)) {
        for (unsigned i = 0; i < got; i++)
            close(fds[i]);
        snprintf(err, errlen, "%s: not a listening-socket handoff", path);
        close(fd);
        return -EPROTO;
    }
    *n = got;
    return fd;
}

void http_handoff_done(int cfd)
{
    ssize_t w = send(cfd, "READY\n", 6, MSG_NOSIGNAL);
    (void)w; /* the old process gone already: nothing to tell */
    close(cfd);
}
