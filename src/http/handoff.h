/* handoff.h — passing a running service's listening sockets to its successor, for upgrades
 * (a new binary or configuration) that drop no connection: HAProxy's `-x`, nginx's USR2.
 *
 * The running process offers its sockets on a unix stream socket at a path it creates (mode
 * 0600; an existing socket there is replaced). A successor connects and receives one message:
 * the line "AGORA-HANDOFF 1 N\n" with the N listening descriptors attached (SCM_RIGHTS). It
 * serves them — the kernel's accept queues are the same, so no connection waiting in them is
 * lost — and writes "READY\n" on the same connection once it accepts on all of them. Only then
 * does the old process stop accepting and finish its connections (a graceful stop); if the
 * successor goes away without READY, the old process keeps serving as if nothing happened. Only
 * a peer with the same user id (or root) is served (SO_PEERCRED): it gets the sockets.
 *
 * Return codes: a descriptor (>= 0) or -errno for the system-call wrappers; the protocol steps
 * say what they return. */
#ifndef AGORA_HTTP_HANDOFF_H
#define AGORA_HTTP_HANDOFF_H
#include <stddef.h>

#define HTTP_HANDOFF_MAX_FDS 256 /* the most workers a service runs */

/* Old side. Creates the offering socket at path (non-blocking, close-on-exec). */
int http_handoff_listen(const char *path);
/* Accepts a successor from lfd and checks its user: the connection's descriptor, -EAGAIN when
 * none is waiting, -EPERM for another user (refused and closed), or another -errno. */
int http_handoff_accept(int lfd);
/* Sends the n listening descriptors on the connection. Returns 0 or -errno. */
int http_handoff_send(int cfd, const int *fds, unsigned n);
/* Reads what the successor said on the connection: 1 for READY, 0 for nothing yet (EAGAIN),
 * -1 when it went away or said something else. */
int http_handoff_ready(int cfd);

/* New side. Connects to path and receives the descriptors (blocking, at most timeout_ms): on
 * success returns the connection (to answer READY on later) and fills fds[0..*n); else -errno
 * (ECONNREFUSED/ENOENT: nobody offers there; EPROTO: not a handoff message) with a reason in
 * err. */
int http_handoff_take(const char *path, unsigned timeout_ms, int *fds, unsigned max, unsigned *n, char *err,
                      size_t errlen);
/* Tells the old process that this one serves its sockets now, and closes the connection. */
void http_handoff_done(int cfd);

#endif
