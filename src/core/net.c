/* net.c — socket helpers; see net.h. */
#include "core/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int net_parse_addr(const char *s, struct net_addr *out)
{
    char host[256];
    const char *port;
    memset(out, 0, sizeof(*out));
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end == s + 1 || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
            return -EINVAL;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            host[0] = '\0';
            port = s;
        } else {
            if ((size_t)(colon - s) >= sizeof(host))
                return -EINVAL;
            memcpy(host, s, (size_t)(colon - s));
            host[colon - s] = '\0';
            port = colon + 1;
        }
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535)
        return -EINVAL;
    if (!host[0] || !strcmp(host, "*") || !strcmp(host, "0.0.0.0")) {
        struct sockaddr_in *in = (struct sockaddr_in *)&out->ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        in->sin_addr.s_addr = htonl(INADDR_ANY);
        out->len = sizeof(*in);
        return 0;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)&out->ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        out->len = sizeof(*in);
        return 0;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
        out->len = sizeof(*in6);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -EINVAL;
    struct addrinfo *pick = res;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    memcpy(&out->ss, pick->ai_addr, pick->ai_addrlen);
    out->len = pick->ai_addrlen;
    if (pick->ai_family == AF_INET)
        ((struct sockaddr_in *)&out->ss)->sin_port = htons((uint16_t)p);
    else
        ((struct sockaddr_in6 *)&out->ss)->sin6_port = htons((uint16_t)p);
    freeaddrinfo(res);
    return 0;
}

void net_format_ip(const struct sockaddr *sa, char *out, size_t outlen)
{
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        /* Show IPv4-mapped addresses as plain IPv4. */
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], out, (socklen_t)outlen);
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)outlen);
    } else if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outlen);
    } else {
        snprintf(out, outlen, "unix");
    }
}

int net_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
    }
    return 0;
}

int net_ip_is_loopback(const char *ip)
{
    struct sockaddr_in in4 = {.sin_family = AF_INET};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    if (inet_pton(AF_INET, ip, &in4.sin_addr) == 1)
        return net_is_loopback((const struct sockaddr *)&in4);
    if (inet_pton(AF_INET6, ip, &in6.sin6_addr) == 1)
        return net_is_loopback((const struct sockaddr *)&in6);
    return 0;
}

void net_format_addr(const struct net_addr *a, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    net_format_ip(sa, ip, sizeof(ip));
    unsigned port = sa->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
                                              : ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        snprintf(out, outlen, "[%s]:%u", ip, port);
    else
        snprintf(out, outlen, "%s:%u", ip, port);
}

int net_tune(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 && errno != EOPNOTSUPP && errno != ENOPROTOOPT)
        return -errno;
    return 0;
}

int net_probe_peer(int fd)
{
    int on = 1, idle = 1, intvl = 1, cnt = 127; /* the most Linux takes: the caller decides */
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0)
        return -errno;
    return 0;
}

long net_peer_unanswered_ms(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -errno;
    if (ti.tcpi_state != 1 /* TCP_ESTABLISHED */)
        return 0; /* connecting (its own timeout), or closing: reads and writes will say */
    if (ti.tcpi_probes == 0 && ti.tcpi_retransmits == 0)
        return 0; /* nothing of ours waits for an answer: a keep-alive, window probe or data */
    return ti.tcpi_last_ack_recv < ti.tcpi_last_data_recv ? (long)ti.tcpi_last_ack_recv : (long)ti.tcpi_last_data_recv;
}

int net_listen(const struct net_addr *a, int reuseport, int backlog)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, err;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, backlog) < 0)
        goto fail;
    return fd;
fail:
    err = -errno;
    close(fd);
    return err;
}

int net_connect(const struct net_addr *a)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int net_local_shortage(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == EADDRNOTAVAIL;
}

ssize_t net_read(int fd, struct buf *b, size_t max)
{
    size_t total = 0;
    while (total < max) {
        size_t want = max - total < 65536 ? max - total : 65536;
        ssize_t n = recv(fd, buf_reserve(b, want), want, 0);
        if (n > 0) {
            buf_commit(b, (size_t)n);
            total += (size_t)n;
            if ((size_t)n < want)
                break; /* drained */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (total)
            break;
        if (n == 0)
            return 0;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    return (ssize_t)total;
}
