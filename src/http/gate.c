/* gate.c — the Host, token and loopback checks of operators' endpoints; see gate.h. */
#include "http/gate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/jsonw.h"
#include "core/loop.h"

void http_gate_init(struct http_gate *g, const char *listen, const struct net_addr *addr)
{
    memset(g, 0, sizeof(*g));
    g->log_prefix = "agora lb: admin";
    g->api = "admin API";
    g->addr_name = "admin address";
    g->realm = "agora-admin";
    g->token_hint = "see agora lb --help for where the token is";
    const char *start = listen, *end;
    if (listen[0] == '[') {
        g->host_bracketed = 1;
        start = listen + 1;
        end = strchr(start, ']');
    } else {
        end = strrchr(listen, ':');
    }
    if (!end)
        end = start; /* "PORT": all interfaces */
    snprintf(g->host, sizeof(g->host), "%.*s", (int)(end - start), start);
    if (addr->ss.ss_family == AF_INET)
        g->wildcard = ((const struct sockaddr_in *)&addr->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    else if (addr->ss.ss_family == AF_INET6)
        g->wildcard = IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&addr->ss)->sin6_addr);
}

void http_gate_reply_error(struct http_response *resp, int status, const char *fmt, ...)
{
    struct jsonw w;
    struct buf msg = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    resp->status = status;
    http_response_header(resp, "Content-Type", "application/json");
    jsonw_init(&w, &resp->body, JSONW_SPACED);
    jsonw_object(&w);
    jsonw_kv_str(&w, "error", buf_cstr(&msg));
    jsonw_end(&w);
    buf_puts(&resp->body, "\n");
    buf_free(&msg);
}

/* Copies at most 100 bytes of v into out for a log line, control bytes shown as '?'. */
static const char *printable(const char *v, size_t n, char *out, size_t outlen)
{
    size_t k = 0;
    for (size_t i = 0; i < n && i < 100 && k + 1 < outlen; i++)
        out[k++] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
    out[k] = '\0';
    return out;
}

/* 1 if a refusal may be logged now (at most HTTP_GATE_LOG_PER_S a second); else counts it as
 * left out. Entering a new second, first says how many were left out in the last. */
static int log_allowed(struct http_gate *g)
{
    uint64_t sec = loop_clock_us() / 1000000;
    if (sec != g->log_second) {
        if (g->log_dropped)
            fprintf(stderr, "%s: %u more refusal(s) not logged (at most %d a second)\n", g->log_prefix, g->log_dropped,
                    HTTP_GATE_LOG_PER_S);
        g->log_second = sec;
        g->log_count = 0;
        g->log_dropped = 0;
    }
    if (g->log_count < HTTP_GATE_LOG_PER_S) {
        g->log_count++;
        return 1;
    }
    g->log_dropped++;
    return 0;
}

int http_gate_host_allowed(const struct http_gate *g, const char *v, size_t n)
{
    char host[256];
    const char *end = v + n, *hp, *he, *rest;
    int bracketed = n > 0 && v[0] == '[';
    if (bracketed) {
        he = memchr(v, ']', n);
        if (!he)
            return 0;
        hp = v + 1;
        rest = he + 1;
    } else {
        const char *colon = NULL;
        for (const char *p = v; p < end; p++)
            if (*p == ':')
                colon = p;
        hp = v;
        he = colon ? colon : end;
        rest = he;
    }
    if (rest < end) { /* ":port", digits only */
        if (*rest != ':' || rest + 1 == end)
            return 0;
        for (const char *p = rest + 1; p < end; p++)
            if (*p < '0' || *p > '9')
                return 0;
    }
    if (he <= hp || (size_t)(he - hp) >= sizeof(host))
        return 0;
    memcpy(host, hp, (size_t)(he - hp));
    host[he - hp] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    int is_v4 = !bracketed && inet_pton(AF_INET, host, &a4) == 1;
    int is_v6 = bracketed && inet_pton(AF_INET6, host, &a6) == 1;
    if (!bracketed && !strcasecmp(host, "localhost"))
        return 1;
    if ((is_v4 || is_v6) && net_ip_is_loopback(host))
        return 1;
    if (g->host[0] && bracketed == g->host_bracketed && !strcasecmp(host, g->host))
        return 1;
    return g->wildcard && (is_v4 || is_v6);
}

/* The failure slot of ip (windows that ended are freed on the way); NULL if it has none. */
static struct http_gate_fail *fail_find(struct http_gate *g, const char *ip, uint64_t now)
{
    struct http_gate_fail *found = NULL;
    for (size_t i = 0; i < HTTP_GATE_FAIL_SLOTS; i++) {
        struct http_gate_fail *f = &g->fails[i];
        if (f->since_ms && now - f->since_ms >= HTTP_GATE_FAIL_WINDOW_MS)
            f->since_ms = 0;
        if (f->since_ms && !strcmp(f->ip, ip))
            found = f;
    }
    return found;
}

/* A new failure slot for ip (fail_find found none): a free one, else the oldest window. */
static struct http_gate_fail *fail_new(struct http_gate *g, const char *ip, uint64_t now)
{
    struct http_gate_fail *f = &g->fails[0];
    for (size_t i = 1; i < HTTP_GATE_FAIL_SLOTS && f->since_ms; i++)
        if (g->fails[i].since_ms < f->since_ms)
            f = &g->fails[i];
    snprintf(f->ip, sizeof(f->ip), "%s", ip);
    f->since_ms = now ? now : 1;
    f->count = 0;
    return f;
}

int http_gate_token_ok(const struct http_gate *g, const struct http_request *req, int *present)
{
    const struct http_header *h = http_find_header(req->head, "authorization");
    *present = h != NULL;
    if (!h || h->value.n < 7 || strncasecmp(h->value.p, "Bearer ", 7))
        return 0;
    size_t tl = strlen(g->token);
    return tl > 0 && h->value.n - 7 == tl && sodium_memcmp(h->value.p + 7, g->token, tl) == 0;
}

int http_gate_admit_host(struct http_gate *g, const struct http_request *req, struct http_response *resp)
{
    const struct http_head *h = req->head;
    char shown[128];
    if (!h->host.n || !h->target.n || h->target.p[0] != '/' || !http_gate_host_allowed(g, h->host.p, h->host.n)) {
        if (log_allowed(g))
            fprintf(stderr, "%s: refused %s: Host '%s' is not this machine's %s\n", g->log_prefix, req->remote_addr,
                    printable(h->host.p, h->host.n, shown, sizeof(shown)), g->addr_name);
        http_gate_reply_error(resp, 403,
                              "%s: the Host header must be localhost, a loopback address or the %s (DNS rebinding "
                              "defence)",
                              g->api, g->addr_name);
        resp->close = 1;
        return 0;
    }
    return 1;
}

int http_gate_admit(struct http_gate *g, const struct http_request *req, struct http_response *resp)
{
    if (!http_gate_admit_host(g, req, resp))
        return 0;
    if (!g->token[0]) {
        if (req->remote_addr && net_ip_is_loopback(req->remote_addr))
            return 1;
        if (log_allowed(g))
            fprintf(stderr, "%s: refused %s: not a loopback client, and no token is configured\n", g->log_prefix,
                    req->remote_addr);
        http_gate_reply_error(resp, 403, "%s: only loopback clients may connect (no token is configured)", g->api);
        resp->close = 1;
        return 0;
    }
    uint64_t now = loop_clock_us() / 1000;
    int present;
    if (http_gate_token_ok(g, req, &present))
        return 1;
    struct http_gate_fail *f = fail_find(g, req->remote_addr, now);
    if (present && f && f->count >= HTTP_GATE_FAIL_LIMIT) {
        unsigned wait_s = (unsigned)((f->since_ms + HTTP_GATE_FAIL_WINDOW_MS - now + 999) / 1000);
        http_response_header(resp, "Retry-After", "%u", wait_s);
        http_gate_reply_error(resp, 429, "%s: too many failed attempts from %s; retry in %u s", g->api,
                              req->remote_addr, wait_s);
        resp->close = 1;
        return 0;
    }
    if (present) {
        if (!f)
            f = fail_new(g, req->remote_addr, now);
        f->count++;
        if (log_allowed(g))
            fprintf(stderr, "%s: refused %s: wrong bearer token (%u of %d allowed a minute)\n", g->log_prefix,
                    req->remote_addr, f->count, HTTP_GATE_FAIL_LIMIT);
        if (f->count == HTTP_GATE_FAIL_LIMIT)
            fprintf(stderr, "%s: throttling %s for %d s\n", g->log_prefix, req->remote_addr,
                    HTTP_GATE_FAIL_WINDOW_MS / 1000);
    } else {
        if (log_allowed(g))
            fprintf(stderr, "%s: refused %s: no bearer token\n", g->log_prefix, req->remote_addr);
    }
    http_response_header(resp, "WWW-Authenticate", "Bearer realm=\"%s\"%s", g->realm,
                         present ? ", error=\"invalid_token\"" : "");
    http_gate_reply_error(resp, 401, "%s: %s bearer token (send Authorization: Bearer TOKEN; %s)", g->api,
                          present ? "wrong" : "missing", g->token_hint);
    resp->close = 1;
    return 0;
}
