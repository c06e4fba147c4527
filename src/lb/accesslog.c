/* accesslog.c — the balancer's buffered access log; see accesslog.h. */
#include "lb/accesslog.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "core/jsonw.h"
#include "lb/metrics.h"

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

void lb_access_log_init(struct lb_access_log *log, struct loop *loop, int fd, enum lb_log_format format)
{
    log->fd = fd;
    log->format = format;
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
    snprintf(r->line, sizeof(r->line), "%.*s %.*s HTTP/%s", (int)h->method_str.n, h->method_str.p,
             (int)(h->target.n > 100 ? 100 : h->target.n), h->target.p,
             h->http2   ? "2.0"
             : h->minor ? "1.1"
                        : "1.0");
    for (char *p = r->line; *p; p++) /* the target may hold '"' (h1 and h2 allow it): as copy_header */
        if (*p == '"' || *p == '\\')
            *p = '\'';
    copy_header(h, "referer", r->referer, sizeof(r->referer));
    copy_header(h, "user-agent", r->agent, sizeof(r->agent));
}

/* Milliseconds from start to t, or null when t did not happen. */
static void put_ms(struct jsonw *w, const char *key, uint64_t start_us, uint64_t t_us)
{
    jsonw_key(w, key);
    if (t_us)
        jsonw_double(w, (double)(t_us - start_us) / 1000.0, 3);
    else
        jsonw_null(w);
}

static void write_json(struct lb_access_log *log, const struct lb_log_req *r, const struct lb_log_entry *e,
                       uint64_t now_us)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char date[40];
    size_t n = strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(date + n, sizeof(date) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    struct jsonw w;
    jsonw_init(&w, &log->buf, JSONW_COMPACT);
    jsonw_object(&w);
    jsonw_kv_str(&w, "time", date);
    jsonw_kv_str(&w, "client", e->client_ip);
    jsonw_kv_str(&w, "request_id", e->request_id);
    jsonw_kv_str(&w, "request", r->line);
    jsonw_kv_int(&w, "status", e->status);
    jsonw_kv_uint(&w, "bytes", e->body_bytes);
    jsonw_kv_str(&w, "referer", r->referer);
    jsonw_kv_str(&w, "agent", r->agent);
    jsonw_key(&w, "server");
    if (e->server_key)
        jsonw_cstr(&w, e->server_key);
    else
        jsonw_null(&w);
    jsonw_kv_uint(&w, "retries", e->retries);
    jsonw_key(&w, "retry_reasons");
    jsonw_array(&w);
    for (unsigned r = 0; r < LB_RETRY_N; r++)
        if (e->retry_reasons & (1u << r))
            jsonw_cstr(&w, lb_retry_reason_name(r));
    jsonw_end(&w);
    put_ms(&w, "connect_ms", e->start_us, e->connect_us);
    put_ms(&w, "header_ms", e->start_us, e->header_us);
    put_ms(&w, "total_ms", e->start_us, now_us);
    if (e->tunnel)
        jsonw_kv_uint(&w, "tunnel_to_server", e->tunnel_to_server);
    jsonw_end(&w);
    buf_append(&log->buf, "\n", 1);
}

void lb_access_log_write(struct lb_access_log *log, const struct lb_log_req *r, const struct lb_log_entry *e)
{
    if (log->fd < 0)
        return;
    uint64_t now_us = loop_clock_us();
    if (log->format == LB_LOG_JSON) {
        write_json(log, r, e, now_us);
    } else {
        time_t now = time(NULL);
        struct tm tm;
        char date[40];
        localtime_r(&now, &tm);
        strftime(date, sizeof(date), "%d/%b/%Y:%H:%M:%S %z", &tm);
        double ms = (double)(now_us - e->start_us) / 1000.0;
        buf_printf(&log->buf, "%s - - [%s] \"%s\" %d %llu \"%s\" \"%s\" %s %.3f\n", e->client_ip, date, r->line,
                   e->status, (unsigned long long)e->body_bytes, r->referer, r->agent,
                   e->server_key ? e->server_key : "-", ms);
    }
    if (buf_used(&log->buf) > FLUSH_AT)
        flush(log);
}
