/* admin.c — runtime control of the server set over HTTP/JSON; see admin.h.
 *
 * Every route (the server set, /metrics, the dashboard's data) sits behind the same gate: the
 * Host check against DNS rebinding and the bearer token with its throttle (http/gate.h, shared
 * with the web server's /metrics listener), then the JSON-only bodies. The documents themselves
 * are written elsewhere (servers.c, metrics.c, dashboard.c). */
#include "lb/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/jsonw.h"
#include "core/net.h"
#include "http/climits.h"
#include "http/gate.h"
#include "http/server.h"
#include "lb/dashboard.h"
#include "lb/events.h"
#include "lb/metrics.h"

struct lb_admin {
    struct loop *loop;
    struct lb_shared *sh;
    struct lb_health *health;
    struct http_server *srv;
    struct http_buffered hb;
    struct loop_timer drain_timer;
    struct lb_dashboard *dash;    /* the dashboard's series sampler */
    struct http_gate gate;        /* Host, token (configured or generated) and its throttle */
    char token_path[512];         /* the file a generated token was written to; "" if none */
    struct http_climits *climits; /* connections per client address */
};

/* The admin listener's connections: 64, at most 16 from one address (the operator's browser
 * takes 6 per tab, agora ctl and the scrapers a few more), and a request head within 10 s: one
 * address's silent connections took all 64, each for the 30 s header timeout, and kept the
 * operator, the dashboard and the scrapes out (review of issue 13). */
#define ADMIN_MAX_CONNS    64
#define ADMIN_CONNS_PER_IP 16
#define ADMIN_HEAD_TIMEOUT 10000

/* Starts a JSON answer with this status: sets Content-Type and opens the document's object in w
 * (the spaced layout, as jansson writes). The caller adds members and calls reply_end. */
static void reply_begin(struct http_response *resp, int status, struct jsonw *w)
{
    resp->status = status;
    http_response_header(resp, "Content-Type", "application/json");
    jsonw_init(w, &resp->body, JSONW_SPACED);
    jsonw_object(w);
}

static void reply_end(struct jsonw *w)
{
    jsonw_end(w);
    buf_puts(w->b, "\n");
}

/* 1 if a request body is declared as JSON: the media type of Content-Type (before any
 * parameters, case-insensitive) is application/json. */
static int is_json(const struct http_request *req)
{
    const struct http_header *h = http_find_header(req->head, "content-type");
    if (!h)
        return 0;
    size_t n = h->value.n;
    const char *semi = memchr(h->value.p, ';', n);
    if (semi)
        n = (size_t)(semi - h->value.p);
    while (n > 0 && (h->value.p[n - 1] == ' ' || h->value.p[n - 1] == '\t'))
        n--;
    return n == 16 && !strncasecmp(h->value.p, "application/json", 16);
}

/* The gate (http/gate.h: Host, then the token and its throttle), then the body type. Returns 1
 * when the request may proceed; otherwise the refusal is in resp (403, 429, 401 or 415). */
static int admit(struct lb_admin *a, const struct http_request *req, struct http_response *resp)
{
    if (!http_gate_admit(&a->gate, req, resp))
        return 0;
    if (req->body_len > 0 && !is_json(req)) {
        http_gate_reply_error(resp, 415, "admin API: request bodies must be Content-Type: application/json");
        return 0;
    }
    return 1;
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
        http_gate_reply_error(resp, 400, "request body must be a JSON object");
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
        http_gate_reply_error(resp, 400, "expected {\"url\": string, \"weight\": integer}");
        goto out;
    }
    char spec[600], err[400];
    if (weight)
        snprintf(spec, sizeof(spec), "%s,weight=%lld", json_string_value(url), (long long)json_integer_value(weight));
    else
        snprintf(spec, sizeof(spec), "%s", json_string_value(url));
    struct lb_server *s = lb_server_new(spec, err, sizeof(err));
    if (!s) {
        http_gate_reply_error(resp, 422, "%s", err);
        goto out;
    }
    struct lb_set *cur = lb_registry_get(&a->sh->registry);
    int exists = lb_set_find(cur, s->key) >= 0;
    size_t n = cur->n;
    lb_set_unref(cur);
    if (exists || n >= LB_MAX_BACKENDS) {
        http_gate_reply_error(resp, exists ? 409 : 422, "%s",
                              exists ? "server already in the set" : "too many servers");
        lb_server_unref(s);
        goto out;
    }
    atomic_store(&s->healthy, 0); /* its first health check (now) decides */
    s->events = a->sh->events;
    set_change(a, s, NULL);
    lb_events_add(a->sh->events, LB_EV_ADDED, s->key, "weight %u", atomic_load(&s->weight));
    lb_health_kick(a->health);
    fprintf(stderr, "agora lb: admin: added %s\n", s->url);
    struct jsonw w;
    reply_begin(resp, 201, &w);
    jsonw_kv_str(&w, "added", s->url);
    jsonw_kv_str(&w, "address", s->key);
    jsonw_kv_uint(&w, "weight", atomic_load(&s->weight));
    reply_end(&w);
    lb_server_unref(s);
out:
    json_decref(j);
}

/* The dashboard page's headers: nothing but its own files may run or load, it is never framed. */
#define DASHBOARD_CSP                                                                                                  \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "                    \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static void serve_page(const struct http_request *req, struct http_response *resp, const char *type, const char *data,
                       size_t len)
{
    if (req->head->method != HTTP_GET && req->head->method != HTTP_HEAD) {
        http_response_header(resp, "Allow", "GET, HEAD");
        http_gate_reply_error(resp, 405, "method not allowed");
        return;
    }
    http_response_header(resp, "Content-Type", "%s", type);
    http_response_header(resp, "Cache-Control", "no-cache");
    http_response_header(resp, "Content-Security-Policy", "%s", DASHBOARD_CSP);
    http_response_header(resp, "X-Content-Type-Options", "nosniff");
    http_response_header(resp, "Referrer-Policy", "no-referrer");
    buf_append(&resp->body, data, len);
}

/* Reads the query of /events and /series: empty, or "since=N" (decimal, at most 18 digits).
 * Returns 0 with N (0 when absent) in since, -1 if the query is anything else. */
static int query_since(struct http_str q, uint64_t *since)
{
    *since = 0;
    if (q.n == 0)
        return 0;
    if (q.n < 7 || q.n > 6 + 18 || memcmp(q.p, "since=", 6))
        return -1;
    for (size_t i = 6; i < q.n; i++) {
        if (q.p[i] < '0' || q.p[i] > '9')
            return -1;
        *since = *since * 10 + (uint64_t)(q.p[i] - '0');
    }
    return 0;
}

static void admin_handle(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct lb_admin *a = ctx;
    const struct http_head *h = req->head;
    const char *p = h->path.p;
    size_t n = h->path.n;
    const char *type, *data;
    size_t len;
    if (lb_dashboard_file(p, n, &type, &data, &len)) {
        /* The page holds no data: it is served without the token (Host is checked as always). */
        if (http_gate_admit_host(&a->gate, req, resp))
            serve_page(req, resp, type, data, len);
        return;
    }
    if (!admit(a, req, resp))
        return;
    if ((n == 7 && !memcmp(p, "/events", 7)) || (n == 7 && !memcmp(p, "/series", 7))) {
        uint64_t since;
        if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
            http_response_header(resp, "Allow", "GET");
            http_gate_reply_error(resp, 405, "method not allowed");
        } else if (query_since(h->query, &since) < 0) {
            http_gate_reply_error(resp, 400, "the query may only be since=N (a decimal number)");
        } else {
            http_response_header(resp, "Content-Type", "application/json");
            http_response_header(resp, "Cache-Control", "no-store");
            if (p[1] == 'e')
                lb_events_json(a->sh->events, since, LB_EVENTS_MAX, &resp->body);
            else
                lb_dashboard_series_json(a->dash, since, &resp->body);
        }
        return;
    }
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
            http_gate_reply_error(resp, 405, "method not allowed");
        }
        return;
    }
    if (n == 8 && !memcmp(p, "/metrics", 8)) {
        if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
            http_response_header(resp, "Allow", "GET");
            http_gate_reply_error(resp, 405, "method not allowed");
            return;
        }
        struct lb_set *set = lb_registry_get(&a->sh->registry);
        http_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
        lb_metrics_write(set, &a->sh->counters, &resp->body);
        lb_set_unref(set);
        return;
    }
    if (n <= 9 || memcmp(p, "/servers/", 9)) {
        http_gate_reply_error(resp, 404, "no such admin route");
        return;
    }
    const char *seg = p + 9, *end = p + n;
    const char *slash = memchr(seg, '/', (size_t)(end - seg));
    size_t seglen = slash ? (size_t)(slash - seg) : (size_t)(end - seg);
    const char *action = slash ? slash + 1 : NULL;
    size_t alen = slash ? (size_t)(end - action) : 0;
    struct lb_set *set = lb_registry_get(&a->sh->registry);
    struct lb_server *s = find(set, seg, seglen);
    struct jsonw w;
    if (!s) {
        http_gate_reply_error(resp, 404, "no such server in the set (use host:port as shown by GET /servers)");
        goto out;
    }
#define ACTION(x) (alen == sizeof(x) - 1 && !memcmp(action, x, alen))
    if (!action && h->method == HTTP_DELETE) {
        set_change(a, NULL, s);
        fprintf(stderr, "agora lb: admin: removed %s\n", s->url);
        lb_events_add(a->sh->events, LB_EV_REMOVED, s->key, "by the admin API");
        reply_begin(resp, 200, &w);
        jsonw_kv_str(&w, "removed", s->url);
        reply_end(&w);
    } else if (action && ACTION("weight") && (h->method == HTTP_PUT || h->method == HTTP_POST)) {
        json_t *j = parse_body(req, resp);
        if (!j)
            goto out;
        json_t *wt = json_object_get(j, "weight");
        if (!json_is_integer(wt) || json_integer_value(wt) < 1 || json_integer_value(wt) > 1000) {
            http_gate_reply_error(resp, 422, "weight must be an integer from 1 to 1000");
        } else {
            unsigned was = atomic_exchange(&s->weight, (unsigned)json_integer_value(wt));
            set_change(a, NULL, NULL); /* new generation: policies rebuild with the new weight */
            lb_events_add(a->sh->events, LB_EV_WEIGHT, s->key, "%u -> %u", was, atomic_load(&s->weight));
            reply_begin(resp, 200, &w);
            jsonw_kv_str(&w, "address", s->key);
            jsonw_kv_uint(&w, "weight", atomic_load(&s->weight));
            reply_end(&w);
        }
        json_decref(j);
    } else if (action && ACTION("drain") && h->method == HTTP_POST) {
        json_t *j = parse_body(req, resp);
        if (!j)
            goto out;
        json_t *then = json_object_get(j, "then");
        if (then && (!json_is_string(then) ||
                     (strcmp(json_string_value(then), "remove") && strcmp(json_string_value(then), "park")))) {
            http_gate_reply_error(resp, 422, "then must be \"remove\" or \"park\"");
        } else {
            int remove = !then || !strcmp(json_string_value(then), "remove");
            atomic_store(&s->drain_remove, remove);
            atomic_store(&s->admin, LB_ADMIN_DRAINING);
            fprintf(stderr, "agora lb: admin: draining %s\n", s->url);
            lb_events_add(a->sh->events, LB_EV_DRAINING, s->key, "then %s; %d in flight", remove ? "remove" : "park",
                          atomic_load(&s->inflight));
            reply_begin(resp, 202, &w);
            jsonw_kv_str(&w, "draining", s->key);
            jsonw_kv_int(&w, "in_flight", atomic_load(&s->inflight));
            jsonw_kv_str(&w, "then", remove ? "remove" : "park");
            reply_end(&w);
        }
        json_decref(j);
    } else if (action && ACTION("enable") && h->method == HTTP_POST) {
        int was = atomic_exchange(&s->admin, LB_ADMIN_ACTIVE);
        atomic_store(&s->up_since_ms, loop_clock_us() / 1000); /* slow start again */
        if (was != LB_ADMIN_ACTIVE)
            lb_events_add(a->sh->events, LB_EV_ENABLED, s->key, "was %s",
                          was == LB_ADMIN_DRAINING ? "draining" : "parked");
        reply_begin(resp, 200, &w);
        jsonw_kv_str(&w, "enabled", s->key);
        reply_end(&w);
    } else if (!action || ACTION("weight") || ACTION("drain") || ACTION("enable")) {
        http_gate_reply_error(resp, 405, "method not allowed");
    } else {
        http_gate_reply_error(resp, 404, "no such admin route");
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
            lb_events_add(a->sh->events, LB_EV_DRAINED, s->key, "removed");
        } else {
            atomic_store(&s->admin, LB_ADMIN_PARKED);
            fprintf(stderr, "agora lb: admin: %s drained and parked\n", s->url);
            lb_events_add(a->sh->events, LB_EV_DRAINED, s->key, "parked");
        }
    }
    lb_set_unref(set);
    loop_timer_arm(loop, t, 100);
}

int lb_admin_default_token_path(unsigned port, int make_dir, char *out, size_t outlen, char *err, size_t errlen)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (xdg && xdg[0] == '/') {
        n = snprintf(out, outlen, "%s/agora-admin-%u.token", xdg, port);
    } else {
        /* No per-user runtime directory: a private one in /tmp, made and checked like tmux's
         * /tmp/tmux-UID (ours, a directory, not a symlink, no access for others). */
        char dir[64];
        uid_t uid = geteuid();
        snprintf(dir, sizeof(dir), "/tmp/agora-%u", (unsigned)uid);
        if (make_dir && mkdir(dir, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %.64s: %s", dir, strerror(errno));
            return -1;
        }
        struct stat st;
        if (lstat(dir, &st) == 0 && (!S_ISDIR(st.st_mode) || st.st_uid != uid || (st.st_mode & 077))) {
            snprintf(err, errlen, "%s is not a private directory of uid %u (mode 0700): refusing to use it", dir,
                     (unsigned)uid);
            return -1;
        }
        n = snprintf(out, outlen, "%s/admin-%u.token", dir, port);
    }
    if (n < 0 || (size_t)n >= outlen) {
        snprintf(err, errlen, "token file path too long");
        return -1;
    }
    return 0;
}

int lb_admin_read_token(const char *path, char *out, size_t outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, out, outlen);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        n--;
    if (n == 0 || (size_t)n >= outlen)
        return -EINVAL;
    for (ssize_t i = 0; i < n; i++)
        if (out[i] <= 0x20 || out[i] >= 0x7f)
            return -EINVAL;
    out[n] = '\0';
    return 0;
}

/* Writes token to path, mode 0600, atomically: a new file (O_EXCL, never through a symlink)
 * next to it, fsync'ed, then renamed over path. Returns 0, or -1 with err set. */
static int write_token_file(const char *path, const char *token, char *err, size_t errlen)
{
    char tmp[600];
    int fd = -1, rc = -1;
    if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "token file path too long");
        return -1;
    }
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST && attempt == 0)
            unlink(tmp); /* left by an earlier process with our pid */
        else if (fd < 0)
            break;
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %.300s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t len = strlen(token);
    if (fchmod(fd, 0600) < 0 || write(fd, token, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
        snprintf(err, errlen, "cannot write %.300s: %s", tmp, strerror(errno));
        goto out;
    }
    if (close(fd) < 0) {
        fd = -1;
        snprintf(err, errlen, "cannot write %.300s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot rename a new file to %.300s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* Sets a->gate.token: the configured one, or a new random one (256 bits, hex) written to the token
 * file (the configured path, or the default one for the port actually bound). */
static int setup_token(struct lb_admin *a, int fd, char *err, size_t errlen)
{
    const struct lb_config *cfg = a->sh->cfg;
    if (cfg->admin_token[0]) {
        snprintf(a->gate.token, sizeof(a->gate.token), "%s", cfg->admin_token);
        if (strlen(a->gate.token) < 16)
            fprintf(stderr, "agora lb: warning: the admin token has only %zu characters; use 32 or more random ones\n",
                    strlen(a->gate.token));
        return 0;
    }
    char path[sizeof(a->token_path)], e[400];
    if (cfg->admin_token_file[0]) {
        snprintf(path, sizeof(path), "%s", cfg->admin_token_file);
    } else {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        unsigned port = 0;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
        if (lb_admin_default_token_path(port, 1, path, sizeof(path), e, sizeof(e)) < 0) {
            snprintf(err, errlen, "no place for the admin token: %s (set --admin-token-file)", e);
            return -1;
        }
    }
    unsigned char raw[32];
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -1;
    }
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(a->gate.token, sizeof(a->gate.token), raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    if (write_token_file(path, a->gate.token, e, sizeof(e)) < 0) {
        snprintf(err, errlen, "cannot write the admin token file: %s", e);
        return -1;
    }
    snprintf(a->token_path, sizeof(a->token_path), "%s", path);
    fprintf(stderr, "agora lb: admin API token generated, in %s (mode 0600)\n", path);
    return 0;
}

/* Removes a generated token's file if it still holds our token (a newer balancer may have
 * replaced it), and wipes the token from memory. */
static void forget_token(struct lb_admin *a)
{
    char cur[LB_ADMIN_TOKEN_MAX];
    if (a->token_path[0] && lb_admin_read_token(a->token_path, cur, sizeof(cur)) == 0 && !strcmp(cur, a->gate.token))
        unlink(a->token_path);
    sodium_memzero(a->gate.token, sizeof(a->gate.token));
}

struct lb_admin *lb_admin_start(struct loop *loop, struct lb_shared *sh, struct lb_health *health, char *err,
                                size_t errlen)
{
    struct net_addr addr;
    if (net_parse_addr(sh->cfg->admin_listen, &addr) < 0) {
        snprintf(err, errlen, "invalid admin address '%s'", sh->cfg->admin_listen);
        return NULL;
    }
    /* With upgrades on, the successor binds the admin address while this process still holds it
     * (both sockets need SO_REUSEPORT); the old one stops answering when it stops. */
    int fd = net_listen(&addr, sh->cfg->upgrade_socket[0] != '\0', 128);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", sh->cfg->admin_listen, strerror(-fd));
        return NULL;
    }
    struct lb_admin *a = alloc_calloc(1, sizeof(*a));
    a->loop = loop;
    a->sh = sh;
    a->health = health;
    http_gate_init(&a->gate, sh->cfg->admin_listen, &addr);
    if (setup_token(a, fd, err, errlen) < 0) {
        close(fd);
        free(a);
        return NULL;
    }
    a->hb.fn = admin_handle;
    a->hb.fn_ctx = a;
    struct http_server_limits lim;
    http_server_limits_default(&lim);
    lim.max_body = 16384;
    lim.json_errors = 1;
    lim.max_conns = ADMIN_MAX_CONNS;
    lim.header_timeout_ms = ADMIN_HEAD_TIMEOUT;
    lim.climits = a->climits = http_climits_new(ADMIN_CONNS_PER_IP, 0, 0);
    a->srv = http_server_create(loop, fd, &http_server_buffered_ops, &a->hb, &lim);
    if (!a->srv) {
        snprintf(err, errlen, "cannot serve the admin API");
        close(fd);
        forget_token(a);
        http_climits_free(a->climits);
        free(a);
        return NULL;
    }
    a->dash = lb_dashboard_start(loop, sh);
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
    lb_dashboard_stop(a->dash);
    http_server_free(a->srv);
    http_climits_free(a->climits);
    forget_token(a);
    free(a);
}
