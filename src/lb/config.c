/* config.c — balancer configuration from defaults, an INI file and flags (one core/opts table);
 * see config.h. */
#include "lb/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cpus.h"
#include "core/net.h"
#include "core/opts.h"
#include "http/server.h"

static int add_backend(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                       size_t errlen);
static int read_config(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                       size_t errlen);
static int add_tls_file(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                        size_t errlen);

/* The option table (core/opts.h): section and key in the INI file, the flag, the type, the field
 * and the --help text. --config is read before the other flags, which override it. */
#define O(f) offsetof(struct lb_config, f)
#define S(f) sizeof(((struct lb_config *)0)->f)
#define ROW(sec, k, fl, t, o, sz, h)                                                                                   \
    {                                                                                                                  \
        .section = sec, .key = k, .flag = fl, .type = t, .off = o, .size = sz, .help = h                               \
    }
static const struct opts_def opts[] = {
    {.flag = "config",
     .type = OPTS_CALL,
     .help = "read settings from an INI file (flags override it)",
     .arg = "FILE",
     .set = read_config,
     .early = 1,
     .missing = "--config needs a file name"},
    ROW("lb", "listen", "listen", OPTS_STR, O(listen), S(listen), "ADDR:PORT to accept clients on (default :8000)"),
    {.section = "backends",
     .key = "server",
     .flag = "backend",
     .type = OPTS_CALL,
     .help = "URL[,weight=N] of a web server (repeatable; default http://127.0.0.1:8001-8003)",
     .set = add_backend},
    ROW("lb", "policy", "policy", OPTS_STR, O(policy), S(policy),
        "least-conn (default), round-robin, random-two, peak-ewma or hash"),
    ROW("lb", "hash_key", "hash-key", OPTS_STR, O(hash_key), S(hash_key),
        "for --policy hash: client (default), header:NAME or cookie:NAME"),
    ROW("lb", "workers", "workers", OPTS_UINT, O(workers), 0, "worker threads (default: number of cores)"),
    ROW("lb", "cpu_affinity", "cpu-affinity", OPTS_STR, O(cpu_affinity), S(cpu_affinity),
        "pin worker i to the i-th CPU of: off (default: not pinned), auto (the CPUs this process may run on) or a "
        "list such as 0,2-3"),
    ROW("lb", "access_log", "access-log", OPTS_STR, O(access_log), S(access_log),
        "off (default), stdout, or a file path"),
    ROW("lb", "upgrade_socket", "upgrade-socket", OPTS_STR, O(upgrade_socket), S(upgrade_socket),
        "unix socket where a new balancer can take this one's listening sockets (upgrades without a dropped "
        "connection; default off)"),
    ROW(NULL, NULL, "upgrade-from", OPTS_STR, O(upgrade_from), S(upgrade_from),
        "take the listening sockets of the balancer offering them at this unix socket, then it stops"),
    ROW("lb", "access_log_format", "access-log-format", OPTS_STR, O(access_log_format), S(access_log_format),
        "combined (default) or json (with the request id, retries and upstream times)"),
    ROW("lb", "trust_forwarded", "trust-forwarded", OPTS_BOOL, O(trust_forwarded), 0,
        "keep clients' X-Forwarded-For and append to it (default off: replaced)"),
    ROW("health", "path", "health-path", OPTS_STR, O(health_path), S(health_path),
        "health-check path (default /health)"),
    ROW("health", "interval", "health-interval", OPTS_DURATION, O(health_interval_ms), 0,
        "time between checks (default 10s)"),
    ROW("health", "timeout", "health-timeout", OPTS_DURATION, O(health_timeout_ms), 0, "check timeout (default 5s)"),
    ROW("health", "expect_status", "health-status", OPTS_UINT, O(health_status), 0,
        "healthy status code (default 200)"),
    ROW("health", "rise", "health-rise", OPTS_UINT, O(rise), 0, "passes before a down server is up (default 2)"),
    ROW("health", "fall", "health-fall", OPTS_UINT, O(fall), 0, "failures before an up server is down (default 3)"),
    ROW("timeouts", "client_header", "client-header-timeout", OPTS_DURATION, O(client_header_timeout_ms), 0,
        "whole request head deadline, then 408 (default 30s)"),
    ROW("timeouts", "client_idle", "client-idle-timeout", OPTS_DURATION, O(client_idle_timeout_ms), 0,
        "idle keep-alive client connections (default 60s)"),
    ROW("timeouts", "client_body", "client-body-timeout", OPTS_DURATION, O(client_body_timeout_ms), 0,
        "gap between request body reads, then 408 (default 30s)"),
    ROW("timeouts", "client_send", "client-send-timeout", OPTS_DURATION, O(client_send_timeout_ms), 0,
        "client not reading its response (default 60s)"),
    ROW("timeouts", "backend_connect", "connect-timeout", OPTS_DURATION, O(connect_timeout_ms), 0,
        "backend connect, then 502/retry (default 5s)"),
    ROW("timeouts", "backend_response", "response-timeout", OPTS_DURATION, O(response_timeout_ms), 0,
        "backend response head and gaps in its body, then 504 (default 60s)"),
    ROW("timeouts", "try", "try-timeout", OPTS_DURATION, O(try_timeout_ms), 0,
        "one try without a response head, then retried elsewhere when safe (default 0 = off)"),
    ROW("timeouts", "shutdown", "shutdown-timeout", OPTS_DURATION, O(shutdown_timeout_ms), 0,
        "graceful stop deadline for in-flight requests (default 10s)"),
    ROW("limits", "max_header_size", "max-header-size", OPTS_SIZE, O(max_header_size), 0,
        "request head limit, then 431 (default 16k)"),
    ROW("limits", "max_line_size", "max-line-size", OPTS_SIZE, O(max_line_size), 0,
        "request line limit, then 414 (default 8k)"),
    ROW("limits", "max_body_size", "max-body-size", OPTS_SIZE, O(max_body_size), 0,
        "request body limit, then 413; 0 = unlimited (default 1g)"),
    ROW("limits", "max_connections", "max-connections", OPTS_UINT, O(max_connections), 0,
        "client connections per worker; 0 = auto, from the descriptor limit (default 0)"),
    ROW("limits", "pool_idle_max", "pool-size", OPTS_UINT, O(pool_idle_max), 0,
        "idle keep-alive connections kept per backend per worker (default 128)"),
    ROW("health", "passive", "passive-health", OPTS_BOOL, O(passive_health), 0,
        "eject a server at once on connect failure, reset, timeout or consecutive 5xx (default on)"),
    ROW("health", "eject_5xx", "eject-5xx", OPTS_UINT, O(eject_5xx), 0,
        "consecutive 5xx responses that eject (default 5)"),
    ROW("health", "eject_base", "eject-time", OPTS_DURATION, O(eject_base_ms), 0,
        "first ejection time; doubles with each repeated ejection (default 2s)"),
    ROW("health", "eject_max", "eject-max-time", OPTS_DURATION, O(eject_max_ms), 0, "longest ejection (default 60s)"),
    ROW("health", "max_ejection_percent", "max-ejection", OPTS_UINT, O(max_eject_percent), 0,
        "passive health never ejects more than this % of the servers (default 50)"),
    ROW("health", "panic_percent", "panic-threshold", OPTS_UINT, O(panic_percent), 0,
        "when fewer than this % of servers are healthy, balance over all of them (default 50; 0 = off)"),
    ROW("health", "slow_start", "slow-start", OPTS_DURATION, O(slow_start_ms), 0,
        "weight ramp for new and recovering servers (default 10s; 0 = off)"),
    ROW("retries", "retries", "retries", OPTS_UINT, O(retries), 0, "extra attempts on another server (default 2)"),
    ROW("retries", "budget_percent", "retry-budget", OPTS_UINT, O(retry_budget_percent), 0,
        "retries after a request was sent, as % of requests (default 20)"),
    ROW("retries", "replay_buffer", "replay-buffer", OPTS_SIZE, O(replay_buffer), 0,
        "request bytes kept so a request can be retried after sending (default 64k)"),
    ROW("limits", "max_conns_per_ip", "max-conns-per-ip", OPTS_UINT, O(max_conns_per_ip), 0,
        "client connections per address (an HTTP/2 connection: its open streams, at least 1), then 503; "
        "0 = unlimited (default 1000)"),
    ROW("limits", "rate_limit", "rate-limit", OPTS_UINT, O(rate_limit), 0,
        "requests per second per client address, then 429; 0 = off (default 0)"),
    ROW("limits", "rate_burst", "rate-burst", OPTS_UINT, O(rate_burst), 0, "burst for --rate-limit (default = rate)"),
    ROW("admin", "listen", "admin-listen", OPTS_STR, O(admin_listen), S(admin_listen),
        "admin API address, or off (default 127.0.0.1:8404)"),
    ROW("admin", "token", "admin-token", OPTS_STR, O(admin_token), S(admin_token),
        "admin API bearer token (or env AGORA_ADMIN_TOKEN); default: one is generated at start"),
    ROW("admin", "token_file", "admin-token-file", OPTS_STR, O(admin_token_file), S(admin_token_file),
        "where a generated token is written, mode 0600 (default $XDG_RUNTIME_DIR/agora-admin-PORT.token, "
        "else /tmp/agora-UID/admin-PORT.token)"),
    ROW("lb", "stats_access", "stats-access", OPTS_STR, O(stats_access), S(stats_access),
        "who gets the balancer's GET /stats: public (default), loopback (others 403) or off (proxied)"),
    ROW("timeouts", "pool_idle", "pool-idle-timeout", OPTS_DURATION, O(pool_idle_timeout_ms), 0,
        "close idle backend connections after (default 30s)"),
    ROW("timeouts", "tunnel", "tunnel-timeout", OPTS_DURATION, O(tunnel_timeout_ms), 0,
        "close a WebSocket tunnel after this long without a byte either way (default 1h)"),
    ROW("limits", "max_tunnels", "max-tunnels", OPTS_UINT, O(max_tunnels), 0,
        "WebSocket tunnels open at once, all workers, then 503; 0 = none allowed (default 10000)"),
    ROW("lb", "tls_listen", "tls-listen", OPTS_STR, O(tls_listen), S(tls_listen),
        "ADDR:PORT to accept TLS (HTTPS) clients on (default off; needs --tls-cert and --tls-key)"),
    {.section = "lb",
     .key = "tls_cert",
     .flag = "tls-cert",
     .type = OPTS_CALL,
     .arg = "FILE",
     .off = O(tls_cert),
     .help = "PEM certificate (chain) for --tls-listen; repeatable, chosen by SNI, the first is the default",
     .set = add_tls_file},
    {.section = "lb",
     .key = "tls_key",
     .flag = "tls-key",
     .type = OPTS_CALL,
     .arg = "FILE",
     .off = O(tls_key),
     .help = "PEM private key of the --tls-cert given in the same position",
     .set = add_tls_file},
    ROW("timeouts", "tls_handshake", "tls-handshake-timeout", OPTS_DURATION, O(tls_handshake_timeout_ms), 0,
        "TLS handshake deadline from accept, then close (default 10s)"),
    ROW("lb", "redirect_https", "redirect-https", OPTS_BOOL, O(redirect_https), 0,
        "the plain listener answers every request with 308 to https:// (default off)"),
    ROW("lb", "hsts", "hsts", OPTS_UINT, O(hsts_s), 0,
        "Strict-Transport-Security max-age in seconds on TLS responses; 0 = none (default 0)"),
    ROW("lb", "http2", "http2", OPTS_BOOL, O(http2), 0,
        "HTTP/2 to TLS clients that offer it by ALPN (h2 preferred over http/1.1; default on)"),
    ROW("limits", "h2_max_requests", "h2-max-requests", OPTS_UINT, O(h2_max_requests), 0,
        "requests (streams) per HTTP/2 connection, then GOAWAY and the client opens another (default 100000)"),
    ROW("lb", "h2c", "h2c", OPTS_BOOL, O(h2c), 0,
        "HTTP/2 with prior knowledge (h2c) on the plain listener, beside HTTP/1.1 (default off)"),
};
#undef O
#undef S
#undef ROW

void lb_config_defaults(struct lb_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen, sizeof(cfg->listen), ":8000");
    for (int i = 0; i < 3; i++) {
        char spec[64];
        snprintf(spec, sizeof(spec), "http://127.0.0.1:%d", 8001 + i);
        cfg->backends[cfg->nbackends++] = alloc_strdup(spec);
    }
    snprintf(cfg->policy, sizeof(cfg->policy), "least-conn");
    snprintf(cfg->hash_key, sizeof(cfg->hash_key), "client");
    snprintf(cfg->access_log, sizeof(cfg->access_log), "off");
    snprintf(cfg->cpu_affinity, sizeof(cfg->cpu_affinity), "off");
    snprintf(cfg->access_log_format, sizeof(cfg->access_log_format), "combined");
    snprintf(cfg->health_path, sizeof(cfg->health_path), "/health");
    cfg->health_interval_ms = 10000;
    cfg->health_timeout_ms = 5000;
    cfg->health_status = 200;
    cfg->rise = 2;
    cfg->fall = 3;
    cfg->client_header_timeout_ms = 30000;
    cfg->client_idle_timeout_ms = 60000;
    cfg->client_body_timeout_ms = 30000;
    cfg->client_send_timeout_ms = 60000;
    cfg->connect_timeout_ms = 5000;
    cfg->response_timeout_ms = 60000;
    cfg->shutdown_timeout_ms = 10000;
    cfg->max_header_size = 16384;
    /* One address may hold at most this many connections: far above what browsers (6 per host)
     * or a large NAT need, far below the descriptors that would take the site down for others. */
    cfg->max_conns_per_ip = 1000;
    cfg->max_line_size = 8192;
    cfg->max_body_size = 1ull << 30;
    cfg->max_connections = 0; /* auto: lb_auto_max_connections() */
    cfg->pool_idle_max = 128;
    cfg->pool_idle_timeout_ms = 30000;
    cfg->tunnel_timeout_ms = 3600000;
    cfg->max_tunnels = 10000;
    cfg->tls_handshake_timeout_ms = 10000;
    cfg->passive_health = 1;
    cfg->http2 = 1;
    cfg->h2_max_requests = 100000;
    cfg->eject_5xx = 5;
    cfg->eject_base_ms = 2000;
    cfg->eject_max_ms = 60000;
    cfg->max_eject_percent = 50;
    cfg->panic_percent = 50;
    cfg->slow_start_ms = 10000;
    cfg->retries = 2;
    cfg->retry_budget_percent = 20;
    cfg->replay_buffer = 65536;
    snprintf(cfg->admin_listen, sizeof(cfg->admin_listen), "127.0.0.1:8404");
    snprintf(cfg->stats_access, sizeof(cfg->stats_access), "public");
    const char *tok = getenv("AGORA_ADMIN_TOKEN");
    if (tok)
        snprintf(cfg->admin_token, sizeof(cfg->admin_token), "%s", tok);
}

void lb_config_free(struct lb_config *cfg)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        free(cfg->backends[i]);
        cfg->backends[i] = NULL;
    }
    cfg->nbackends = 0;
}

/* OPTS_CALL for --backend / [backends] server: adds one backend spec; the first one of a file or
 * of the command line replaces the list (the defaults, or the file's). */
static int add_backend(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                       size_t errlen)
{
    struct lb_config *cfg = target;
    if (cfg->backends_reset) {
        lb_config_free(cfg);
        cfg->backends_reset = 0;
    }
    if (cfg->nbackends >= LB_MAX_BACKENDS) {
        snprintf(err, errlen, "%s: too many backends (at most %d)", name, LB_MAX_BACKENDS);
        return -1;
    }
    cfg->backends[cfg->nbackends++] = alloc_strdup(val);
    return 0;
}

/* OPTS_CALL for --tls-cert and --tls-key (the row's off names the list): adds one file to its list; the first
 * one of a file or of the command line replaces both lists. */
static int add_tls_file(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                        size_t errlen)
{
    struct lb_config *cfg = target;
    if (cfg->tls_reset) {
        cfg->ntls_cert = cfg->ntls_key = 0;
        cfg->tls_reset = 0;
    }
    int is_key = d->off == offsetof(struct lb_config, tls_key);
    unsigned *n = is_key ? &cfg->ntls_key : &cfg->ntls_cert;
    char(*list)[512] = is_key ? cfg->tls_key : cfg->tls_cert;
    if (*n >= LB_MAX_CERTS) {
        snprintf(err, errlen, "%s: too many certificates (at most %d)", name, LB_MAX_CERTS);
        return -1;
    }
    if (strlen(val) >= sizeof(list[0])) {
        snprintf(err, errlen, "%s: file name too long", name);
        return -1;
    }
    snprintf(list[(*n)++], sizeof(list[0]), "%s", val);
    return 0;
}

/* OPTS_CALL for --config FILE (an early row: read before the other flags). */
static int read_config(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                       size_t errlen)
{
    return lb_config_load_file(target, val, err, errlen);
}

/* 1 if the admin address "HOST:PORT" binds only to loopback (127.0.0.0/8, ::1, localhost). An
 * unparsable address counts as not loopback (lb_admin_start reports it). */
static int admin_on_loopback(const char *listen)
{
    struct net_addr a;
    return net_parse_addr(listen, &a) == 0 && net_is_loopback((const struct sockaddr *)&a.ss);
}

static int validate(struct lb_config *cfg, char *err, size_t errlen)
{
    if (cfg->rise == 0 || cfg->fall == 0) {
        snprintf(err, errlen, "health rise and fall must be at least 1");
        return -1;
    }
    if (cfg->tunnel_timeout_ms == 0) {
        snprintf(err, errlen, "tunnel-timeout must be greater than 0");
        return -1;
    }
    if (cfg->health_interval_ms == 0 || cfg->health_timeout_ms == 0) {
        snprintf(err, errlen, "health interval and timeout must be greater than 0");
        return -1;
    }
    if (cfg->health_path[0] != '/') {
        snprintf(err, errlen, "health path must start with '/'");
        return -1;
    }
    if (cfg->panic_percent > 100 || cfg->retry_budget_percent > 100 || cfg->max_eject_percent > 100) {
        snprintf(err, errlen, "panic-threshold, max-ejection and retry-budget are percentages (0..100)");
        return -1;
    }
    if (cfg->retries > 8) {
        snprintf(err, errlen, "retries: at most 8");
        return -1;
    }
    if (cfg->workers > 256) {
        snprintf(err, errlen, "workers: at most 256");
        return -1;
    }
    if (cpus_check(cfg->cpu_affinity, err, errlen) < 0) /* the CPUs themselves: at start (lb_main) */
        return -1;
    if (strncmp(cfg->hash_key, "client", 7) && strncmp(cfg->hash_key, "header:", 7) &&
        strncmp(cfg->hash_key, "cookie:", 7)) {
        snprintf(err, errlen, "hash-key must be client, header:NAME or cookie:NAME");
        return -1;
    }
    if (strcmp(cfg->access_log_format, "combined") && strcmp(cfg->access_log_format, "json")) {
        snprintf(err, errlen, "access-log-format must be combined or json");
        return -1;
    }
    if (strcmp(cfg->stats_access, "public") && strcmp(cfg->stats_access, "loopback") &&
        strcmp(cfg->stats_access, "off")) {
        snprintf(err, errlen, "stats-access must be public, loopback or off");
        return -1;
    }
    if (cfg->ntls_cert != cfg->ntls_key) {
        snprintf(err, errlen, "tls-cert and tls-key come in pairs: %u certificate(s), %u key(s)", cfg->ntls_cert,
                 cfg->ntls_key);
        return -1;
    }
    if (cfg->tls_listen[0] && cfg->ntls_cert == 0) {
        snprintf(err, errlen, "tls-listen needs a certificate and its key (--tls-cert FILE --tls-key FILE)");
        return -1;
    }
    if (!cfg->tls_listen[0] && (cfg->ntls_cert || cfg->redirect_https || cfg->hsts_s)) {
        snprintf(err, errlen, "tls-cert, tls-key, redirect-https and hsts need tls-listen");
        return -1;
    }
    /* An AGORA_ADMIN_TOKEN too long for the buffer would be cut, and no client sending the whole
     * token would match: refuse it (--admin-token's option row refuses a long flag the same way). */
    const char *env_tok = getenv("AGORA_ADMIN_TOKEN");
    if (env_tok && strlen(env_tok) >= sizeof(cfg->admin_token) &&
        !strncmp(cfg->admin_token, env_tok, sizeof(cfg->admin_token) - 1)) {
        snprintf(err, errlen, "AGORA_ADMIN_TOKEN: value too long (at most %zu characters)",
                 sizeof(cfg->admin_token) - 1);
        return -1;
    }
    /* A generated token is only good for clients that can read its file, i.e. on this machine:
     * an admin API reachable from other machines must have a token the operator chose. */
    if (strcmp(cfg->admin_listen, "off") && !cfg->admin_token[0] && !admin_on_loopback(cfg->admin_listen)) {
        snprintf(err, errlen,
                 "the admin API on %s (not a loopback address) needs a token: set --admin-token, [admin] token "
                 "or AGORA_ADMIN_TOKEN, or bind it to 127.0.0.1",
                 cfg->admin_listen);
        return -1;
    }
    return 0;
}

struct ini_ctx {
    struct lb_config *cfg;
    char *err;
    size_t errlen;
    int failed;
};

static int on_ini_entry(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *ctx = user;
    if (ctx->failed)
        return 0;
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (opts[i].section && !strcmp(opts[i].section, section) && !strcmp(opts[i].key, name)) {
            char e[256];
            if (opts_set(&opts[i], ctx->cfg, name, value, e, sizeof(e)) < 0) {
                snprintf(ctx->err, ctx->errlen, "[%s] %s", section, e);
                ctx->failed = 1;
                return 0;
            }
            return 1;
        }
    }
    snprintf(ctx->err, ctx->errlen, "unknown setting '%s' in section [%s]", name, section);
    ctx->failed = 1;
    return 0;
}

/* Line reader for inih that notices lines longer than inih's buffer (which inih would split). */
struct line_reader {
    FILE *f;
    int lineno;
    int too_long;
};

static char *read_line(char *str, int num, void *stream)
{
    struct line_reader *r = stream;
    if (r->too_long || !fgets(str, num, r->f))
        return NULL;
    r->lineno++;
    size_t n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(r->f)) {
        r->too_long = 1;
        return NULL;
    }
    return str;
}

int lb_config_load_file(struct lb_config *cfg, const char *path, char *err, size_t errlen)
{
    char e[400] = "";
    struct ini_ctx ctx = {cfg, e, sizeof(e), 0};
    struct line_reader lr = {.f = fopen(path, "r")};
    if (!lr.f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    cfg->backends_reset = 1;
    cfg->tls_reset = 1;
    int r = ini_parse_stream(read_line, &lr, on_ini_entry, &ctx); /* r > 0: line of the first error */
    fclose(lr.f);
    cfg->backends_reset = 1; /* the first --backend after the file replaces the file's list */
    cfg->tls_reset = 1;
    if (lr.too_long) {
        snprintf(err, errlen, "%s:%d: line too long (at most %d characters)", path, lr.lineno, INI_MAX_LINE - 2);
        return -1;
    }
    if (r < 0) { /* -2: inih could not allocate its line buffer (only in a heap-buffer build of it) */
        snprintf(err, errlen, "%s: out of memory reading the file", path);
        return -1;
    }
    if (r != 0 || ctx.failed) {
        if (!ctx.failed)
            snprintf(e, sizeof(e), "syntax error");
        snprintf(err, errlen, "%s:%d: %s", path, r, e);
        return -1;
    }
    snprintf(cfg->config_path, sizeof(cfg->config_path), "%s", path);
    if (validate(cfg, e, sizeof(e)) < 0) {
        snprintf(err, errlen, "%s: %s", path, e);
        return -1;
    }
    return 0;
}

static const struct opts_cmd command = {
    .name = "agora lb",
    .head = "usage: agora lb [--config FILE] [options]\n\n"
            "The load balancer: a reverse proxy that sends each request to the least busy healthy\n"
            "web server. Every option can also be set in the config file (see docs/CONFIG.md).\n\n",
    .tail = "\nSignals: SIGTERM/SIGINT stop gracefully; SIGHUP re-reads the config file.\n",
    OPTS_TABLE(opts),
    .width = 33,
};

void lb_config_usage(void) { opts_cmd_usage(&command, stdout); }

int lb_config_from_args(struct lb_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    cfg->backends_reset = 1;
    cfg->tls_reset = 1;
    int r = opts_parse(opts, sizeof(opts) / sizeof(opts[0]), cfg, argc, argv, 0, NULL, err, errlen);
    if (r == OPTS_HELP) {
        lb_config_usage();
        return 1;
    }
    if (r < 0)
        return -1;
    return validate(cfg, err, errlen);
}

void lb_config_client_limits(const struct lb_config *cfg, struct http_server_limits *lim)
{
    http_server_limits_default(lim);
    lim->max_line = cfg->max_line_size;
    lim->max_head = cfg->max_header_size;
    lim->max_body = cfg->max_body_size;
    lim->header_timeout_ms = cfg->client_header_timeout_ms;
    lim->idle_timeout_ms = cfg->client_idle_timeout_ms;
    lim->body_timeout_ms = cfg->client_body_timeout_ms;
    lim->send_timeout_ms = cfg->client_send_timeout_ms;
    lim->max_conns = cfg->max_connections;
    lim->handshake_timeout_ms = cfg->tls_handshake_timeout_ms;
    lim->h2c = cfg->h2c;
    lim->h2_max_requests = cfg->h2_max_requests;
}
