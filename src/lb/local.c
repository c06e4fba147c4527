/* local.c — the balancer's own answers (/health, /stats); see local.h. */
#include "lb/local.h"

#include <string.h>

#include "core/buf.h"
#include "core/net.h"

static const struct {
    const char *path;
    size_t len;
    enum lb_local what;
} own[] = {
    {"/health", 7, LB_LOCAL_HEALTH},
    {"/stats", 6, LB_LOCAL_STATS},
};

enum lb_local lb_local_match(const struct http_head *h, const char *stats_access)
{
    if ((h->method != HTTP_GET && h->method != HTTP_HEAD) || h->query.n)
        return LB_LOCAL_NONE;
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
        if (h->path.n != own[i].len || memcmp(h->path.p, own[i].path, own[i].len))
            continue;
        if (own[i].what == LB_LOCAL_STATS && !strcmp(stats_access, "off"))
            return LB_LOCAL_NONE;
        return own[i].what;
    }
    return LB_LOCAL_NONE;
}

int lb_local_answer(struct http_conn *c, const struct http_head *h, enum lb_local what, const struct lb_set *set,
                    const char *policy, const char *stats_access)
{
    int stats = what == LB_LOCAL_STATS;
    if (stats && !strcmp(stats_access, "loopback") && !net_ip_is_loopback(http_conn_remote_ip(c))) {
        http_conn_respond_error(c, 403, "/stats is only available from loopback (--stats-access loopback)", 0);
        return 0;
    }
    struct buf body = {0}, out = {0};
    if (stats)
        lb_stats_json(set, policy, &body);
    else
        buf_puts(&body, "OK");
    http_write_status_line(&out, 200);
    buf_printf(&out, "Content-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n%s\r\n",
               stats ? "application/json" : "text/plain; charset=utf-8", buf_used(&body),
               h->keep_alive ? "" : "Connection: close\r\n");
    if (h->method != HTTP_HEAD)
        buf_append(&out, buf_head(&body), buf_used(&body));
    http_conn_send(c, buf_head(&out), buf_used(&out));
    buf_free(&body);
    buf_free(&out);
    return 1;
}
