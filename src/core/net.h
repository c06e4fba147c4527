/* net.h — socket helpers: address parsing, listening and non-blocking connecting sockets.
 * All functions return a descriptor or 0 on success, and -errno (or -EINVAL for a bad address
 * string) on failure; no function leaves a descriptor open when it fails. */
#ifndef AGORA_NET_H
#define AGORA_NET_H
#include <errno.h>
#include <netinet/in.h>
#include <sys/types.h>

#include "core/buf.h"
#include <stddef.h>
#include <sys/socket.h>

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* Parses "HOST:PORT", "[V6]:PORT" or ":PORT"/"PORT" (all interfaces). HOST is an IP literal or
 * "localhost" (resolved with getaddrinfo, IPv4 preferred). */
int net_parse_addr(const char *s, struct net_addr *out);
/* Formats the address as "ip:port" into out (at least 64 bytes). */
void net_format_addr(const struct net_addr *a, char *out, size_t outlen);
/* Formats only the IP of a peer address. */
void net_format_ip(const struct sockaddr *sa, char *out, size_t outlen);
/* 1 if sa is a loopback address: 127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104 (IPv4-mapped). */
int net_is_loopback(const struct sockaddr *sa);
/* The same for an address in text (IPv4, or IPv6 without brackets); 0 when it does not parse. */
int net_ip_is_loopback(const char *ip);
/* Creates a non-blocking listening TCP socket (SO_REUSEADDR; SO_REUSEPORT if reuseport). */
int net_listen(const struct net_addr *a, int reuseport, int backlog);
/* Reads what a non-blocking fd has now, up to max bytes, appending to b. Returns the number of
 * bytes read (> 0); 0 at end of stream with nothing read; -EAGAIN when nothing is available;
 * another -errno on error. An end of stream or error after some bytes is reported by the next
 * call (level-triggered readiness makes sure there is one). */
ssize_t net_read(int fd, struct buf *b, size_t max);
/* Writes what b holds to the socket fd (MSG_NOSIGNAL) until it is empty or the socket is full,
 * consuming what was written. Returns the bytes written (>= 0; b keeps the rest when the socket is
 * full), or -errno when the connection failed (EPIPE, ECONNRESET, ...). A failure may follow a
 * partial write in the same call: b is consumed by what went out all the same, so a caller that
 * counts the bytes sent counts them from buf_used(b), not from a negative return. The one send
 * loop of the code base: client and server connections, and the balancer's backend connections. */
static inline ssize_t net_write(int fd, struct buf *b)
{
    /* Inline: it runs two or three times per proxied request, and a call costs a measurable
     * share of the request there (bench/instr.sh). */
    size_t total = 0;
    while (buf_used(b) > 0) {
        ssize_t n = send(fd, buf_head(b), buf_used(b), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(b, (size_t)n);
            total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return n < 0 ? -errno : -EPIPE;
    }
    return (ssize_t)total;
}
/* Starts a non-blocking connect with TCP_NODELAY; the connect may still be in progress.
 * Returns the descriptor or -errno. */
int net_connect(const struct net_addr *a);
/* 1 if errno value err says this process or host is short of something (descriptors, buffers,
 * memory, local ports) rather than that the peer is unwell: such a failure is no verdict on it. */
int net_local_shortage(int err);
/* Sets TCP_NODELAY on an accepted socket (accept4 already made it non-blocking). */
int net_tune(int fd);
/* Has the kernel find out whether the peer of the connected TCP socket fd is still there: TCP
 * keep-alive probes after 1 s without anything received, then every second (up to 127 of them),
 * which a live peer acknowledges at once however busy its process is. With net_peer_silent_ms the
 * caller tells a cut link or a host powered off (unanswered for longer than it allows) from a
 * live peer. No TCP_USER_TIMEOUT: it also aborts a live peer that keeps its receive window closed
 * (Linux >= 5.11), e.g. a busy server not reading an upload yet. 0 or -errno. */
int net_probe_peer(int fd);
/* While a keep-alive or window probe or a retransmission of fd's is unanswered: milliseconds
 * since the peer of the connected TCP socket fd last sent anything, an acknowledgement or data
 * (TCP_INFO); else 0 (also when fd is not established). A live peer keeping its window closed is
 * probed at growing intervals and answers each probe: 0 in between. -errno if unknown. */
long net_peer_unanswered_ms(int fd);

#endif
