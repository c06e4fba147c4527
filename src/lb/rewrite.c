/* rewrite.c — the request head for the backend and the response head for the client; see
 * rewrite.h. */
#include "lb/rewrite.h"

#include <string.h>

/* 1 if the field `name` of message m is not forwarded as it is: hop-by-hop fields, those m's
 * Connection headers list, and the fields the balancer always writes itself (the framing,
 * X-Request-Id). Matched by length first: most names have a length none of these has. */
static inline int is_hop_by_hop(struct http_str name, const struct http_head *m)
{
    const char *lit;
    switch (name.n) {
    case 2:
        lit = "te";
        break;
    case 7:
        lit = (name.p[0] | 0x20) == 'u' ? "upgrade" : "trailer";
        break;
    case 10:
        lit = (name.p[0] | 0x20) == 'k' ? "keep-alive" : "connection";
        break;
    case 12:
        lit = (name.p[0] | 0x20) == 'x' ? "x-request-id" : NULL; /* not content-type */
        break;
    case 14:
        lit = "content-length";
        break;
    case 16:
        lit = "proxy-connection";
        break;
    case 17:
        lit = "transfer-encoding";
        break;
    default:
        lit = NULL;
    }
    if (lit && http_str_ieq(name, lit))
        return 1;
    return http_connection_lists(m, name);
}

/* "Content-Length: N\r\n" without printf (every proxied message writes one). */
static void put_length(struct buf *b, int64_t n)
{
    buf_append(b, "Content-Length: ", 16);
    buf_put_u64(b, (unsigned long long)n);
    buf_append(b, "\r\n", 2);
}

const char *lb_rewrite_acted_on(const struct http_head *h)
{
    static const char *const acted_on[] = {"idempotency-key", "expect"};
    if (!h->conn_names)
        return NULL;
    for (size_t i = 0; i < sizeof(acted_on) / sizeof(acted_on[0]); i++)
        if (http_connection_lists(h, (struct http_str){acted_on[i], strlen(acted_on[i])}))
            return acted_on[i];
    return NULL;
}

void lb_request_id(const struct http_head *h, int trust, uint64_t *state, char out[LB_REQUEST_ID_MAX + 1])
{
    const struct http_header *hd = trust ? http_find_header(h, "x-request-id") : NULL;
    if (hd && http_request_id_ok(hd->value)) {
        memcpy(out, hd->value.p, hd->value.n);
        out[hd->value.n] = '\0';
        return;
    }
    for (int i = 0; i < 2; i++) {
        uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        /* 16 hex digits of z's 16 nibbles (in no particular order: they are random), 8 at a time:
         * one nibble per byte, then '0'-'9' or 'a'-'f' per byte without a branch. */
        for (int half = 0; half < 2; half++) {
            uint64_t nib = (z >> (4 * half)) & 0x0F0F0F0F0F0F0F0Full;
            uint64_t letters = ((nib + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
            uint64_t text = nib + 0x3030303030303030ull + letters * ('a' - '0' - 10);
            memcpy(out + 16 * i + 8 * half, &text, 8);
        }
    }
    out[32] = '\0';
}

/* "X-Request-Id: ID\r\n" in one append (every proxied message writes one). */
static void put_request_id(struct buf *b, const char *id)
{
    size_t n = strlen(id);
    char *p = buf_reserve(b, 16 + n);
    memcpy(p, "X-Request-Id: ", 14);
    memcpy(p + 14, id, n);
    memcpy(p + 14 + n, "\r\n", 2);
    buf_commit(b, 16 + n);
}

static void put_header(struct buf *b, const struct http_header *hd)
{
    buf_append(b, hd->name.p, hd->name.n);
    buf_append(b, ": ", 2);
    buf_append(b, hd->value.p, hd->value.n);
    buf_append(b, "\r\n", 2);
}

int lb_rewrite_request(struct buf *b, const struct http_head *h, const char *client_ip, const char *host_header,
                       int trust_forwarded, const char *request_id, int https)
{
    buf_append(b, h->method_str.p, h->method_str.n);
    buf_append(b, " ", 1);
    if (h->target.n && h->target.p[0] != '/' && h->method != HTTP_OPTIONS) {
        /* absolute-form: origin servers get origin-form (RFC 9112 §3.2.1) */
        buf_append(b, h->path.p, h->path.n);
        if (h->query.n) {
            buf_append(b, "?", 1);
            buf_append(b, h->query.p, h->query.n);
        }
    } else {
        buf_append(b, h->target.p, h->target.n);
    }
    buf_puts(b, " HTTP/1.1\r\n");
    const struct http_header *xff = NULL;
    for (int i = 0; i < h->nheaders; i++) {
        const struct http_header *hd = &h->headers[i];
        if (is_hop_by_hop(hd->name, h))
            continue;
        if (http_str_ieq(hd->name, "x-forwarded-for")) {
            if (trust_forwarded && !xff)
                xff = hd;
            continue;
        }
        if (http_str_ieq(hd->name, "x-forwarded-proto"))
            continue;
        if (hd->value.n == 0 && http_str_ieq(hd->name, "host"))
            continue; /* an empty Host is replaced by the server's below: never two Host fields */
        put_header(b, hd);
    }
    if (!h->host.n)
        buf_printf(b, "Host: %s\r\n", host_header);
    if (xff)
        buf_printf(b, "X-Forwarded-For: %.*s, %s\r\n", (int)xff->value.n, xff->value.p, client_ip);
    else {
        buf_append(b, "X-Forwarded-For: ", 17);
        buf_puts(b, client_ip);
        buf_append(b, "\r\n", 2);
    }
    buf_puts(b, https ? "X-Forwarded-Proto: https\r\n" : "X-Forwarded-Proto: http\r\n");
    put_request_id(b, request_id);
    int chunked = 0;
    if (h->body == HTTP_BODY_CHUNKED) {
        buf_puts(b, "Transfer-Encoding: chunked\r\n");
        chunked = 1;
    } else if (h->content_length >= 0) {
        put_length(b, h->content_length);
    }
    buf_puts(b, "\r\n");
    return chunked;
}

int lb_rewrite_response(struct buf *b, const struct http_head *r, int req_minor, int will_close, int *keep_alive,
                        const char *request_id, const char *extra)
{
    buf_printf(b, "HTTP/1.1 %d %.*s\r\n", r->status, (int)r->reason.n, r->reason.p);
    for (int i = 0; i < r->nheaders; i++)
        if (!is_hop_by_hop(r->headers[i].name, r))
            put_header(b, &r->headers[i]);
    put_request_id(b, request_id);
    if (extra)
        buf_puts(b, extra);
    /* One value, even where the backend sent a list of equal ones; none on 1xx and 204, which
     * cannot have one (RFC 9110 §8.6). */
    if (r->content_length >= 0 && r->status != 204 && r->status >= 200)
        put_length(b, r->content_length);
    int chunked = 0;
    if (r->body == HTTP_BODY_CHUNKED || r->body == HTTP_BODY_EOF) {
        if (req_minor >= 1) {
            buf_puts(b, "Transfer-Encoding: chunked\r\n");
            chunked = 1;
        } else {
            *keep_alive = 0; /* HTTP/1.0 client: the body ends when we close */
        }
    }
    if (will_close)
        *keep_alive = 0;
    if (!*keep_alive)
        buf_puts(b, "Connection: close\r\n");
    else if (req_minor == 0)
        buf_puts(b, "Connection: keep-alive\r\n");
    buf_puts(b, "\r\n");
    return chunked;
}

int lb_rewrite_is_websocket(const struct http_head *h, int request)
{
    if (!h->upgrade)
        return 0;
    if (request && (h->method != HTTP_GET || h->minor != 1 || h->body != HTTP_BODY_NONE))
        return 0;
    const struct http_header *up = NULL;
    for (int i = 0; i < h->nheaders; i++) {
        if (!http_str_ieq(h->headers[i].name, "upgrade"))
            continue;
        if (up)
            return 0; /* several Upgrade fields: not the one protocol asked for */
        up = &h->headers[i];
    }
    return up && http_str_ieq(up->value, "websocket");
}

void lb_rewrite_upgrade_request(struct buf *b)
{
    b->len -= 2; /* the empty line, written again below */
    buf_puts(b, "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
}

void lb_rewrite_switch(struct buf *b, const struct http_head *r, const char *request_id)
{
    buf_printf(b, "HTTP/1.1 101 %.*s\r\n", (int)r->reason.n, r->reason.p);
    for (int i = 0; i < r->nheaders; i++)
        if (!is_hop_by_hop(r->headers[i].name, r))
            put_header(b, &r->headers[i]);
    put_request_id(b, request_id);
    buf_puts(b, "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
}
