/* admin.c — runtime control of the server set over HTTP/JSON; see admin.h. */
#include "lb/admin.h"

#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/net.h"
#include "http/server.h"

struct lb_admin {
    struct loop *loop;
    struct lb_shared *sh;
    struct lb_health *health;
    struct http_server *srv;
    struct http_buffered hb;
    struct loop_timer drain_timer;
};

static void reply(struct http_response *resp, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply(struct http_response *resp, int status, const char *fmt, ...)
{
    va_list ap;
    resp->status = status;
    http_response_header(resp, "Content-Type", "application/json");
    va_start(ap, fmt);
    buf_vprintf(&resp->body, fmt, ap);
    va_end(ap);
    buf_puts(&resp->body, "\n");
}

static int is_loopback(const char *ip) { return !strncmp(ip, "127.", 4) || !strcmp(ip, "::1"); }

static int authorized(struct lb_admin *a, const struct http_request *req)
{
    if (is_loopback(req->remote_addr))
        return 1;
    const char *token = a->sh->cfg->admin_token;
    const struct http_header *h = http_find_header(req->head, "authorization");
    if (!token[0] || !h || h->value.n < 7 || strncasecmp(h->value.p, "Bearer ", 7))
        return 0;
    size_t tl = strlen(token);
    return h->value.n - 7 == tl && sodium_memcmp(h->value.p + 7, token, tl) == 0;
}

/* Replaces the registry's set with the current one plus `add` (may be NULL) minus `drop` (may
 * be NULL). */
static void set_change(struct lb_admin *a, struct lb_server *add, struct lb_server *drop)
{
    struct lb_set *cur = lb_registry_get(&a->sh->registry);
    struct lb_server *list[LB_MAX_BACKENDS + 1];
    size_t n = 0;
    for (size_t i = 0; i < cur->n; i++)
        if (cur->servers[i] != drop)
            list[n++] = cur->servers[i];
    if (add)
        list[n++] = add;
    lb_registry_replace(&a->sh->registry, list, n);
    lb_set_unref(cur);
}

/* Finds the server named by path segment seg (len n) in set; NULL if none. */
static struct lb_server *find(struct lb_set *set, const char *seg, size_t n)
{
    for (size_t i = 0; i < set->n; i++) {
        struct lb_server *s = set->servers[i];
        if ((strlen(s->key) == n && !memcmp(s->key, seg, n)) || (strlen(s->url) == n && !memcmp(s->url, seg, n)))
            return s;
    }
    return NULL;
}

static json_t *parse_body(const struct http_request *req, struct http_response *resp)
{
    json_error_t e;
    json_t *j = req->body_len ? json_loadb(req->body, req->body_len, 0, &e) : json_object();
    if (!j || !json_is_object(j)) {
        json_decref(j);
        reply(resp, 400, "{\"error\": \"request body must be a JSON object\"}");
        return NULL;
    }
    return j;
}

static void do_add(struct lb_admin *a, const struct http_request *req, struct http_response *resp)
{
    json_t *j = parse_body(req, resp);
    if (!j)
        return;
    json_t *url = json_object_get(j, "url"), *weight = json_object_get(j, "weight");
    if (!json_is_string(url) || (weight && !json_is_integer(weight))) {
        reply(resp, 400, "{\"error\": \"expected {\\\"url\\\": string, \\\"weight\\\": integer}\"}");
        goto out;
    }
    char spec[600], err[400];
    if (weight)
        snprintf(spec, sizeof(spec), "%s,weight=%lld", json_string_value(url), (long long)json_integer_value(weight));
    else
        snprintf(spec, sizeof(spec), "%s", json_string_value(url));
    struct lb_server *s = lb_server_new(spec, err, sizeof(err));
    if (!s) {
        json_t *e = json_pack("{s:s}", "error", err);
        char *txt = json_dumps(e, 0);
        reply(resp, 422, "%s", txt);
        free(txt);
        json_decref(e);
        goto out;
    }
    struct lb_set *cur = lb_registry_get(&a->sh->registry);
    int exists = lb_set_find(cur, s->key) >= 0;
    size_t n = cur->n;
    lb_set_unref(cur);
    if (exists || n >= LB_MAX_BACKENDS) {
        reply(resp, exists ? 409 : 422, "{\"error\": \"%s\"}",
              exists ? "server already in the set" : "too many servers");
        lb_server_unref(s);
        goto out;
    }
    atomic_store(&s->healthy, 0); /* its first health check (now) decides */
    set_change(a, s, NULL);
    lb_health_kick(a->health);
    fprintf(stderr, "agora lb: admin: added %s\n", s->url);
    reply(resp, 201, "{\"added\": \"%s\", \"address\": \"%s\", \"weight\": %u}", s->url, s->key,
          atomic_load(&s->weight));
    lb_server_unref(s);
out:
    json_decref(j);
}

static void admin_handle(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct lb_admin *a = ctx;
    const struct http_head *h = req->head;
    if (!authorized(a, req)) {
        reply(resp, a->sh->cfg->admin_token[0] ? 401 : 403, "{\"error\": \"admin API: %s\"}",
              a->sh->cfg->admin_token[0] ? "missing or wrong bearer token" : "only loopback clients are allowed");
        return;
    }
    const char *p = h->path.p;
    size_t n = h->path.n;
    if (n == 8 && !memcmp(p, "/servers", 8)) {
        if (h->method == HTTP_GET) {
            struct lb_set *set = lb_registry_get(&a->sh->registry);
            http_response_header(resp, "Content-Type", "application/json");
            lb_stats_json(set, a->sh->policy->name, &resp->body);
            lb_set_unref(set);
        } else if (h->method == HTTP_POST) {
            do_add(a, req, resp);
        } else {
            http_response_header(resp, "Allow", "GET, POST");
            reply(resp, 405, "{\"error\": \"method not allowed\"}");
        }
        return;
    }
    if (n <= 9 || memcmp(p, "/servers/", 9)) {
        reply(resp, 404, "{\"error\": \"no such admin route\"}");
        return;
    }
    const char *seg = p + 9, *end = p + n;
    const char *slash = memchr(seg, '/', (size_t)(end - seg));
    size_t seglen = slash ? (size_t)(slash - seg) : (size_t)(end - seg);
    const char *action = slash ? slash + 1 : NULL;
    size_t alen = slash ? (size_t)(end - action) : 0;
    struct lb_set *set = lb_registry_get(&a->sh->registry);
    struct lb_server *s = find(set, seg, seglen);
    if (!s) {
        reply(resp, 404, "{\"error\": \"no such server in the set (use host:port as shown by GET /servers)\"}");
        goto out;
    }
#define ACTION(x) (alen == sizeof(x) - 1 && !memcmp(action, x, alen))
    if (!action && h->method == HTTP_DELETE) {
        set_change(a, NULL, s);
        fprintf(stderr, "agora lb: admin: removed %s\n", s->url);
        reply(resp, 200, "{\"removed\": \"%s\"}", s->url);
    } else if (action && ACTION("weight") && (h->method == HTTP_PUT || h->method == HTTP_POST)) {
        json_t *j = parse_body(req, resp);
        if (!j)
            goto out;
        json_t *w = json_object_get(j, "weight");
        if (!json_is_integer(w) || json_integer_value(w) < 1 || json_integer_value(w) > 1000) {
            reply(resp, 422, "{\"error\": \"weight must be an integer from 1 to 1000\"}");
        } else {
            atomic_store(&s->weight, (unsigned)json_integer_value(w));
            set_change(a, NULL, NULL); /* new generation: policies rebuild with the new weight */
            reply(resp, 200, "{\"address\": \"%s\", \"weight\": %u}", s->key, atomic_load(&s->weight));
        }
        json_decref(j);
    } else if (action && ACTION("drain") && h->method == HTTP_POST) {
        json_t *j = parse_body(req, resp);
        if (!j)
            goto out;
        json_t *then = json_object_get(j, "then");
        if (then && (!json_is_string(then) ||
                     (strcmp(json_string_value(then), "remove") && strcmp(json_string_value(then), "park")))) {
            reply(resp, 422, "{\"error\": \"then must be \\\"remove\\\" or \\\"park\\\"\"}");
        } else {
            int remove = !then || !strcmp(json_string_value(then), "remove");
            atomic_store(&s->drain_remove, remove);
            atomic_store(&s->admin, LB_ADMIN_DRAINING);
            fprintf(stderr, "agora lb: admin: draining %s\n", s->url);
            reply(resp, 202, "{\"draining\": \"%s\", \"in_flight\": %d, \"then\": \"%s\"}", s->key,
                  atomic_load(&s->inflight), remove ? "remove" : "park");
        }
        json_decref(j);
    } else if (action && ACTION("enable") && h->method == HTTP_POST) {
        atomic_store(&s->admin, LB_ADMIN_ACTIVE);
        atomic_store(&s->up_since_ms, loop_clock_us() / 1000); /* slow start again */
        reply(resp, 200, "{\"enabled\": \"%s\"}", s->key);
    } else if (!action || ACTION("weight") || ACTION("drain") || ACTION("enable")) {
        reply(resp, 405, "{\"error\": \"method not allowed\"}");
    } else {
        reply(resp, 404, "{\"error\": \"no such admin route\"}");
    }
#undef ACTION
out:
    lb_set_unref(set);
}

/* Finishes drains: a draining server with nothing in flight is removed or parked. */
static void on_drain_timer(struct loop *loop, struct loop_timer *t)
{
    struct lb_admin *a = t->data;
    struct lb_set *set = lb_registry_get(&a->sh->registry);
    for (size_t i = 0; i < set->n; i++) {
        struct lb_server *s = set->servers[i];
        if (atomic_load(&s->admin) != LB_ADMIN_DRAINING || atomic_load(&s->inflight) != 0)
            continue;
        if (atomic_load(&s->drain_remove)) {
            set_change(a, NULL, s);
            fprintf(stderr, "agora lb: admin: %s drained and removed\n", s->url);
        } else {
            atomic_store(&s->admin, LB_ADMIN_PARKED);
            fprintf(stderr, "agora lb: admin: %s drained and parked\n", s->url);
        }
    }
    lb_set_unref(set);
    loop_timer_arm(loop, t, 100);
}

struct lb_admin *lb_admin_start(struct loop *loop, struct lb_shared *sh, struct lb_health *health, char *err,
                                size_t errlen)
{
    struct net_addr addr;
    if (net_parse_addr(sh->cfg->admin_listen, &addr) < 0) {
        snprintf(err, errlen, "invalid admin address '%s'", sh->cfg->admin_listen);
        return NULL;
    }
    int fd = net_listen(&addr, 0, 128);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", sh->cfg->admin_listen, strerror(-fd));
        return NULL;
    }
    struct lb_admin *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    a->loop = loop;
    a->sh = sh;
    a->health = health;
    a->hb.fn = admin_handle;
    a->hb.fn_ctx = a;
    struct http_server_limits lim;
    http_server_limits_default(&lim);
    lim.max_body = 16384;
    lim.json_errors = 1;
    lim.max_conns = 64;
    a->srv = http_server_create(loop, fd, &http_server_buffered_ops, &a->hb, &lim);
    if (!a->srv) {
        snprintf(err, errlen, "cannot serve the admin API");
        close(fd);
        free(a);
        return NULL;
    }
    a->drain_timer.fn = on_drain_timer;
    a->drain_timer.data = a;
    loop_timer_arm(loop, &a->drain_timer, 100);
    return a;
}

void lb_admin_stop(struct lb_admin *a)
{
    if (!a)
        return;
    loop_timer_cancel(a->loop, &a->drain_timer);
    http_server_free(a->srv);
    free(a);
}
