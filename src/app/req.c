/* req.c — request reading helpers; see req.h. */
#include "app/req.h"

#include <string.h>

static inline unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

int req_ieq(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n && lit[i] != '\0'; i++)
        if (lower((unsigned char)s[i]) != lower((unsigned char)lit[i]))
            return 0;
    return i == n && lit[i] == '\0';
}

const struct http_str *req_header(const struct http_head *h, const char *name)
{
    for (int i = 0; i < h->nheaders; i++)
        if (req_ieq(h->headers[i].name.p, h->headers[i].name.n, name))
            return &h->headers[i].value;
    return NULL;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

long req_percent_decode(const char *in, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval((unsigned char)in[i + 1])) < 0 ||
                (lo = hexval((unsigned char)in[i + 2])) < 0)
                return -1;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= outlen)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long)o;
}

int req_query_param(struct http_str query, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = query.p, *end = query.p + query.n;
    while (p != NULL && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : stop;
            return req_percent_decode(v, (size_t)(stop - v), out, outlen) < 0 ? -1 : 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

int req_cookie(const struct http_head *h, const char *name, struct http_str *out)
{
    size_t nl = strlen(name);
    for (int i = 0; i < h->nheaders; i++) {
        if (!req_ieq(h->headers[i].name.p, h->headers[i].name.n, "cookie"))
            continue;
        const char *p = h->headers[i].value.p, *end = p + h->headers[i].value.n;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            if (eq != NULL && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0) {
                const char *v = eq + 1, *ve = stop;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                if (ve - v >= 2 && v[0] == '"' && ve[-1] == '"') {
                    v++;
                    ve--;
                }
                out->p = v;
                out->n = (size_t)(ve - v);
                return 1;
            }
            p = stop;
        }
    }
    return 0;
}

int req_parse_id(const char *s, size_t n, int64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > (uint64_t)INT64_MAX)
        return 0;
    *out = (int64_t)v;
    return 1;
}

int req_media_type_is(const struct http_str *ct, const char *type)
{
    size_t b = 0, e = 0;
    while (e < ct->n && ct->p[e] != ';')
        e++;
    while (b < e && (ct->p[b] == ' ' || ct->p[b] == '\t'))
        b++;
    while (e > b && (ct->p[e - 1] == ' ' || ct->p[e - 1] == '\t'))
        e--;
    return req_ieq(ct->p + b, e - b, type);
}

/* Splits "host[:port]" s[0,n) at its port: sets *hn to the host's length and returns the port
 * (digits only, 1-65535), 0 when there is none, or -1 when it is malformed. An IPv6 literal is
 * "[...]" with the port after the bracket. */
static long split_port(const char *s, size_t n, size_t *hn)
{
    size_t i = n;
    while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9')
        i--;
    if (i == 0 || i == n || s[i - 1] != ':' || (s[0] == '[' && s[i - 2] != ']')) {
        *hn = n;
        if (n == 0 || memchr(s, '@', n) != NULL || memchr(s, '/', n) != NULL)
            return -1;
        if (s[0] == '[' ? s[n - 1] != ']' : memchr(s, ':', n) != NULL)
            return -1;
        return 0;
    }
    long port = 0;
    if (n - i > 5)
        return -1;
    for (size_t k = i; k < n; k++)
        port = port * 10 + (s[k] - '0');
    *hn = i - 1;
    if (port < 1 || port > 65535 || *hn == 0 || memchr(s, '@', *hn) != NULL || memchr(s, '/', *hn) != NULL)
        return -1;
    if (s[0] == '[' ? s[*hn - 1] != ']' : memchr(s, ':', *hn) != NULL)
        return -1;
    return port;
}

int req_same_origin(const struct http_str *origin, const struct http_str *host)
{
    long def, op, hp;
    size_t skip, ohn, hhn;
    if (origin == NULL || host == NULL)
        return 0;
    if (origin->n > 7 && req_ieq(origin->p, 7, "http://"))
        skip = 7, def = 80;
    else if (origin->n > 8 && req_ieq(origin->p, 8, "https://"))
        skip = 8, def = 443;
    else
        return 0;
    const char *o = origin->p + skip;
    size_t on = origin->n - skip;
    if ((op = split_port(o, on, &ohn)) < 0 || (hp = split_port(host->p, host->n, &hhn)) < 0)
        return 0;
    if (ohn != hhn)
        return 0;
    for (size_t i = 0; i < ohn; i++)
        if (lower((unsigned char)o[i]) != lower((unsigned char)host->p[i]))
            return 0;
    return (op == 0 ? def : op) == (hp == 0 ? def : hp);
}
