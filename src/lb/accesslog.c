/* accesslog.c — the balancer's buffered access log; see accesslog.h. */
#include "lb/accesslog.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_AT 32768

static void flush(struct lb_access_log *log)
{
    if (buf_used(&log->buf) == 0 || log->fd < 0)
        return;
    ssize_t n = write(log->fd, buf_head(&log->buf), buf_used(&log->buf));
    (void)n; /* a full disk must not stop the proxy */
    buf_reset(&log->buf);
}

static void on_timer(struct loop *loop, struct loop_timer *t)
{
    struct lb_access_log *log = t->data;
    flush(log);
    loop_timer_arm(loop, t, 1000);
}

void lb_access_log_init(struct lb_access_log *log, struct loop *loop, int fd)
{
    log->fd = fd;
    log->loop = loop;
    log->buf = (struct buf){0};
    log->timer.fn = on_timer;
    log->timer.data = log;
    if (fd >= 0)
        loop_timer_arm(loop, &log->timer, 1000);
}

void lb_access_log_close(struct lb_access_log *log)
{
    flush(log);
    buf_free(&log->buf);
    loop_timer_cancel(log->loop, &log->timer);
}

static void copy_header(const struct http_head *h, const char *name, char *out, size_t outlen)
{
    const struct http_header *hd = http_find_header(h, name);
    size_t n = 0;
    if (hd)
        for (size_t i = 0; i < hd->value.n && n + 1 < outlen; i++) {
            char ch = hd->value.p[i];
            out[n++] = ch == '"' || ch == '\\' ? '\'' : ch;
        }
    out[n] = '\0';
    if (!n && outlen > 1)
        snprintf(out, outlen, "-");
}

void lb_log_req_capture(struct lb_log_req *r, const struct http_head *h)
{
    snprintf(r->line, sizeof(r->line), "%.*s %.*s HTTP/1.%d", (int)h->method_str.n, h->method_str.p,
             (int)(h->target.n > 100 ? 100 : h->target.n), h->target.p, h->minor);
    copy_header(h, "referer", r->referer, sizeof(r->referer));
    copy_header(h, "user-agent", r->agent, sizeof(r->agent));
}

void lb_access_log_write(struct lb_access_log *log, const struct lb_log_req *r, const char *client_ip, int status,
                         uint64_t body_bytes, const char *server_key, uint64_t start_us)
{
    if (log->fd < 0)
        return;
    time_t now = time(NULL);
    struct tm tm;
    char date[40];
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%d/%b/%Y:%H:%M:%S %z", &tm);
    double ms = (double)(loop_clock_us() - start_us) / 1000.0;
    buf_printf(&log->buf, "%s - - [%s] \"%s\" %d %llu \"%s\" \"%s\" %s %.3f\n", client_ip, date, r->line, status,
               (unsigned long long)body_bytes, r->referer, r->agent, server_key ? server_key : "-", ms);
    if (buf_used(&log->buf) > FLUSH_AT)
        flush(log);
}
