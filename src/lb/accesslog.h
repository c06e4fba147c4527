/* accesslog.h — the balancer's access log: one line per request, buffered per worker.
 *
 * Two formats (--access-log-format). combined: the combined log format followed by the server and
 * the time taken:
 *   IP - - [03/Dec/2026:06:53:59 +0000] "GET /path HTTP/1.1" 200 1234 "referer" "agent" host:port 0.412
 * (the request target cut at 100 bytes; `"` and `\` in the referer and agent written as `'`; `-`
 * for an empty field or when no server was chosen; milliseconds since the request head began).
 * json: one object per line with the same facts and the request id, the retries and the upstream
 * times (milliseconds since the request head began; null when it did not happen):
 *   {"time":"2026-12-03T06:53:59.123Z","client":"IP","request_id":"...","request":"GET /path HTTP/1.1",
 *    "status":200,"bytes":1234,"referer":"-","agent":"-","server":"host:port","retries":0,
 *    "retry_reasons":[],"connect_ms":0.101,"header_ms":0.350,"total_ms":0.412}
 * ("retry_reasons": the kinds of the retries made, in the order of enum lb_retry_reason, e.g.
 * ["marked_down"] or ["try_timeout"]; metrics.h names them.)
 * A WebSocket tunnel's line is written when it closes: status 101, bytes (and json's "bytes") what
 * the client received, the time its whole life; json adds "tunnel_to_server" (bytes from the client).
 * Each worker appends to its own buffer and writes it to the shared descriptor when it passes
 * 32 KiB, once a second, and when the worker ends: one write() per batch, so workers' lines do
 * not interleave mid-line. A failed write (a full disk) drops the batch: logging never stops the
 * proxy. With the log off (fd < 0) nothing is kept or formatted. */
#ifndef AGORA_LB_ACCESSLOG_H
#define AGORA_LB_ACCESSLOG_H
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "http/parser.h"

enum lb_log_format { LB_LOG_COMBINED = 0, LB_LOG_JSON };

struct lb_access_log {
    int fd; /* -1 = off; not owned */
    enum lb_log_format format;
    struct loop *loop;
    struct buf buf; /* lines not yet written */
    struct loop_timer timer;
};

/* What a request's line needs from its head, copied when the request arrives (only when the log
 * is on), so that writing the line needs nothing else from the request. */
struct lb_log_req {
    char line[160]; /* "GET /path HTTP/1.1" */
    char referer[128], agent[160];
};

/* What a finished request's line says besides its head (times on loop_clock_us; 0 = did not
 * happen). */
struct lb_log_entry {
    const char *client_ip;
    const char *request_id;
    int status;
    uint64_t body_bytes;
    const char *server_key; /* NULL when no server was chosen */
    unsigned retries;       /* attempts after the first */
    unsigned retry_reasons; /* bit (1 << enum lb_retry_reason, metrics.h) for each kind of retry made */
    uint64_t start_us, connect_us, header_us;
    int tunnel;                /* a WebSocket tunnel: status 101, body_bytes what the client got */
    uint64_t tunnel_to_server; /* ... and the bytes the server got from the client */
};

/* Starts a log writing to fd (-1 = off) in this format from loop's thread; the flush timer runs
 * on loop. */
void lb_access_log_init(struct lb_access_log *log, struct loop *loop, int fd, enum lb_log_format format);
/* Writes what is buffered and stops the timer. */
void lb_access_log_close(struct lb_access_log *log);

static inline int lb_access_log_on(const struct lb_access_log *log) { return log->fd >= 0; }

/* Copies what the line needs from h into r. Call only when the log is on. */
void lb_log_req_capture(struct lb_log_req *r, const struct http_head *h);

/* Appends the line of a finished request (r as captured) and flushes past 32 KiB. Does nothing
 * when the log is off. */
void lb_access_log_write(struct lb_access_log *log, const struct lb_log_req *r, const struct lb_log_entry *e);

#endif
