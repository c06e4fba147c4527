/* config.c — balancer configuration from defaults, an INI file and flags; see config.h. */
#include "lb/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/net.h"

enum opt_type { T_STR, T_DURATION, T_SIZE, T_UINT, T_BOOL, T_BACKEND };

struct opt {
    const char *section;
    const char *key;
    const char *flag;
    enum opt_type type;
    size_t off;
    size_t size; /* T_STR: buffer size */
    const char *help;
};

#define O(f) offsetof(struct lb_config, f)
#define S(f) sizeof(((struct lb_config *)0)->f)
static const struct opt opts[] = {
    {"lb", "listen", "listen", T_STR, O(listen), S(listen), "ADDR:PORT to accept clients on (default :8000)"},
    {"backends", "server", "backend", T_BACKEND, 0, 0,
     "URL[,weight=N] of a web server (repeatable; default http://127.0.0.1:8001-8003)"},
    {"lb", "policy", "policy", T_STR, O(policy), S(policy),
     "least-conn (default), round-robin, random-two, peak-ewma or hash"},
    {"lb", "hash_key", "hash-key", T_STR, O(hash_key), S(hash_key),
     "for --policy hash: client (default), header:NAME or cookie:NAME"},
    {"lb", "workers", "workers", T_UINT, O(workers), 0, "worker threads (default: number of cores)"},
    {"lb", "access_log", "access-log", T_STR, O(access_log), S(access_log), "off (default), stdout, or a file path"},
    {"lb", "trust_forwarded", "trust-forwarded", T_BOOL, O(trust_forwarded), 0,
     "keep clients' X-Forwarded-For and append to it (default off: replaced)"},
    {"health", "path", "health-path", T_STR, O(health_path), S(health_path), "health-check path (default /health)"},
    {"health", "interval", "health-interval", T_DURATION, O(health_interval_ms), 0,
     "time between checks (default 10s)"},
    {"health", "timeout", "health-timeout", T_DURATION, O(health_timeout_ms), 0, "check timeout (default 5s)"},
    {"health", "expect_status", "health-status", T_UINT, O(health_status), 0, "healthy status code (default 200)"},
    {"health", "rise", "health-rise", T_UINT, O(rise), 0, "passes before a down server is up (default 2)"},
    {"health", "fall", "health-fall", T_UINT, O(fall), 0, "failures before an up server is down (default 3)"},
    {"timeouts", "client_header", "client-header-timeout", T_DURATION, O(client_header_timeout_ms), 0,
     "whole request head deadline, then 408 (default 30s)"},
    {"timeouts", "client_idle", "client-idle-timeout", T_DURATION, O(client_idle_timeout_ms), 0,
     "idle keep-alive client connections (default 60s)"},
    {"timeouts", "client_body", "client-body-timeout", T_DURATION, O(client_body_timeout_ms), 0,
     "gap between request body reads, then 408 (default 30s)"},
    {"timeouts", "client_send", "client-send-timeout", T_DURATION, O(client_send_timeout_ms), 0,
     "client not reading its response (default 60s)"},
    {"timeouts", "backend_connect", "connect-timeout", T_DURATION, O(connect_timeout_ms), 0,
     "backend connect, then 502/retry (default 5s)"},
    {"timeouts", "backend_response", "response-timeout", T_DURATION, O(response_timeout_ms), 0,
     "backend response head and gaps in its body, then 504 (default 60s)"},
    {"timeouts", "shutdown", "shutdown-timeout", T_DURATION, O(shutdown_timeout_ms), 0,
     "graceful stop deadline for in-flight requests (default 10s)"},
    {"limits", "max_header_size", "max-header-size", T_SIZE, O(max_header_size), 0,
     "request head limit, then 431 (default 16k)"},
    {"limits", "max_line_size", "max-line-size", T_SIZE, O(max_line_size), 0,
     "request line limit, then 414 (default 8k)"},
    {"limits", "max_body_size", "max-body-size", T_SIZE, O(max_body_size), 0,
     "request body limit, then 413; 0 = unlimited (default 1g)"},
    {"limits", "max_connections", "max-connections", T_UINT, O(max_connections), 0,
     "client connections per worker; 0 = auto, from the descriptor limit (default 0)"},
    {"limits", "pool_idle_max", "pool-size", T_UINT, O(pool_idle_max), 0,
     "idle keep-alive connections kept per backend per worker (default 128)"},
    {"health", "passive", "passive-health", T_BOOL, O(passive_health), 0,
     "eject a server at once on connect failure, reset, timeout or consecutive 5xx (default on)"},
    {"health", "eject_5xx", "eject-5xx", T_UINT, O(eject_5xx), 0, "consecutive 5xx responses that eject (default 5)"},
    {"health", "eject_base", "eject-time", T_DURATION, O(eject_base_ms), 0,
     "first ejection time; doubles with each repeated ejection (default 2s)"},
    {"health", "eject_max", "eject-max-time", T_DURATION, O(eject_max_ms), 0, "longest ejection (default 60s)"},
    {"health", "max_ejection_percent", "max-ejection", T_UINT, O(max_eject_percent), 0,
     "passive health never ejects more than this % of the servers (default 50)"},
    {"health", "panic_percent", "panic-threshold", T_UINT, O(panic_percent), 0,
     "when fewer than this % of servers are healthy, balance over all of them (default 50; 0 = off)"},
    {"health", "slow_start", "slow-start", T_DURATION, O(slow_start_ms), 0,
     "weight ramp for new and recovering servers (default 10s; 0 = off)"},
    {"retries", "retries", "retries", T_UINT, O(retries), 0, "extra attempts on another server (default 2)"},
    {"retries", "budget_percent", "retry-budget", T_UINT, O(retry_budget_percent), 0,
     "retries after a request was sent, as % of requests (default 20)"},
    {"retries", "replay_buffer", "replay-buffer", T_SIZE, O(replay_buffer), 0,
     "request bytes kept so a request can be retried after sending (default 64k)"},
    {"limits", "max_conns_per_ip", "max-conns-per-ip", T_UINT, O(max_conns_per_ip), 0,
     "client connections per address, then 503 and close; 0 = unlimited (default 1000)"},
    {"limits", "rate_limit", "rate-limit", T_UINT, O(rate_limit), 0,
     "requests per second per client address, then 429; 0 = off (default 0)"},
    {"limits", "rate_burst", "rate-burst", T_UINT, O(rate_burst), 0, "burst for --rate-limit (default = rate)"},
    {"admin", "listen", "admin-listen", T_STR, O(admin_listen), S(admin_listen),
     "admin API address, or off (default 127.0.0.1:8404)"},
    {"admin", "token", "admin-token", T_STR, O(admin_token), S(admin_token),
     "admin API bearer token (or env AGORA_ADMIN_TOKEN); default: one is generated at start"},
    {"admin", "token_file", "admin-token-file", T_STR, O(admin_token_file), S(admin_token_file),
     "where a generated token is written, mode 0600 (default $XDG_RUNTIME_DIR/agora-admin-PORT.token, "
     "else /tmp/agora-UID/admin-PORT.token)"},
    {"lb", "stats_access", "stats-access", T_STR, O(stats_access), S(stats_access),
     "who gets the balancer's GET /stats: public (default), loopback (others 403) or off (proxied)"},
    {"timeouts", "pool_idle", "pool-idle-timeout", T_DURATION, O(pool_idle_timeout_ms), 0,
     "close idle backend connections after (default 30s)"},
};
#undef O
#undef S

void lb_config_defaults(struct lb_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen, sizeof(cfg->listen), ":8000");
    for (int i = 0; i < 3; i++) {
        char spec[64];
        snprintf(spec, sizeof(spec), "http://127.0.0.1:%d", 8001 + i);
        cfg->backends[cfg->nbackends++] = strdup(spec);
    }
    snprintf(cfg->policy, sizeof(cfg->policy), "least-conn");
    snprintf(cfg->hash_key, sizeof(cfg->hash_key), "client");
    snprintf(cfg->access_log, sizeof(cfg->access_log), "off");
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
    cfg->passive_health = 1;
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

int lb_parse_duration(const char *s, unsigned *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || !isdigit((unsigned char)*s))
        return -1; /* also rejects nan, inf and signs */
    while (*end == ' ')
        end++;
    double mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else
        return -1;
    double r = v * mult;
    if (r > 86400000.0 * 7)
        return -1;
    *ms = (unsigned)(r + 0.5);
    return 0;
}

int lb_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    while (*end == ' ')
        end++;
    uint64_t mult = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        mult = 1024;
        end++;
        break;
    case 'm':
        mult = 1024 * 1024;
        end++;
        break;
    case 'g':
        mult = 1024ull * 1024 * 1024;
        end++;
        break;
    default:
        return -1;
    }
    if (mult > 1 && (!strcmp(end, "") || !strcasecmp(end, "b") || !strcasecmp(end, "ib")))
        end += strlen(end);
    if (*end)
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *bytes = v * mult;
    return 0;
}

/* Sets one option from text. backends_reset: a pointer to a flag that is cleared the first time
 * a backend is set, so that the first --backend (or file entry) replaces the defaults. */
/* `name` is how the setting is shown in messages: the flag or "[section] key". */
static int set_opt(struct lb_config *cfg, const struct opt *o, const char *name, const char *val, int *backends_reset,
                   char *err, size_t errlen)
{
    char *field = (char *)cfg + o->off;
    switch (o->type) {
    case T_STR:
        if (strlen(val) >= o->size) {
            snprintf(err, errlen, "%s: value too long", name);
            return -1;
        }
        strcpy(field, val);
        return 0;
    case T_DURATION:
        if (lb_parse_duration(val, (unsigned *)field) < 0) {
            snprintf(err, errlen, "%s: '%s' is not a duration (e.g. 500ms, 10s, 2m)", name, val);
            return -1;
        }
        return 0;
    case T_SIZE:
        if (lb_parse_size(val, (uint64_t *)field) < 0) {
            snprintf(err, errlen, "%s: '%s' is not a size (e.g. 16k, 1m)", name, val);
            return -1;
        }
        return 0;
    case T_UINT: {
        char *end;
        errno = 0;
        unsigned long v = strtoul(val, &end, 10);
        if (!isdigit((unsigned char)*val) || *end || errno || v > 1000000000ul) {
            snprintf(err, errlen, "%s: '%s' is not a non-negative integer", name, val);
            return -1;
        }
        *(unsigned *)field = (unsigned)v;
        return 0;
    }
    case T_BOOL:
        if (!strcmp(val, "on") || !strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "1"))
            *(int *)field = 1;
        else if (!strcmp(val, "off") || !strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "0"))
            *(int *)field = 0;
        else {
            snprintf(err, errlen, "%s: '%s' is not on/off", name, val);
            return -1;
        }
        return 0;
    case T_BACKEND:
        if (*backends_reset) {
            lb_config_free(cfg);
            *backends_reset = 0;
        }
        if (cfg->nbackends >= LB_MAX_BACKENDS) {
            snprintf(err, errlen, "%s: too many backends (at most %d)", name, LB_MAX_BACKENDS);
            return -1;
        }
        cfg->backends[cfg->nbackends++] = strdup(val);
        return 0;
    }
    return -1;
}

/* 1 if the admin address "HOST:PORT" binds only to loopback (127.0.0.0/8, ::1, localhost). An
 * unparsable address counts as not loopback (lb_admin_start reports it). */
static int admin_on_loopback(const char *listen)
{
    struct net_addr a;
    if (net_parse_addr(listen, &a) < 0)
        return 0;
    if (a.ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&a.ss)->sin_addr.s_addr) >> 24) == 127;
    if (a.ss.ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&a.ss)->sin6_addr);
    return 0;
}

static int validate(struct lb_config *cfg, char *err, size_t errlen)
{
    if (cfg->rise == 0 || cfg->fall == 0) {
        snprintf(err, errlen, "health rise and fall must be at least 1");
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
    if (strncmp(cfg->hash_key, "client", 7) && strncmp(cfg->hash_key, "header:", 7) &&
        strncmp(cfg->hash_key, "cookie:", 7)) {
        snprintf(err, errlen, "hash-key must be client, header:NAME or cookie:NAME");
        return -1;
    }
    if (strcmp(cfg->stats_access, "public") && strcmp(cfg->stats_access, "loopback") &&
        strcmp(cfg->stats_access, "off")) {
        snprintf(err, errlen, "stats-access must be public, loopback or off");
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
    int backends_reset;
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
        if (!strcmp(opts[i].section, section) && !strcmp(opts[i].key, name)) {
            char e[256];
            if (set_opt(ctx->cfg, &opts[i], name, value, &ctx->backends_reset, e, sizeof(e)) < 0) {
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
    struct ini_ctx ctx = {cfg, 1, e, sizeof(e), 0};
    struct line_reader lr = {.f = fopen(path, "r")};
    if (!lr.f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int r = ini_parse_stream(read_line, &lr, on_ini_entry, &ctx); /* r > 0: line of the first error */
    fclose(lr.f);
    if (lr.too_long) {
        snprintf(err, errlen, "%s:%d: line too long (at most %d characters)", path, lr.lineno, INI_MAX_LINE - 2);
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

void lb_config_usage(void)
{
    printf("usage: agora lb [--config FILE] [options]\n\n"
           "The load balancer: a reverse proxy that sends each request to the least busy healthy\n"
           "web server. Every option can also be set in the config file (see docs/CONFIG.md).\n\n"
           "  --config FILE                     read settings from an INI file (flags override it)\n");
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        const char *arg = opts[i].type == T_DURATION ? " DURATION"
                          : opts[i].type == T_SIZE   ? " SIZE"
                          : opts[i].type == T_UINT   ? " N"
                          : opts[i].type == T_BOOL   ? " on|off"
                                                     : " VALUE";
        char left[64];
        snprintf(left, sizeof(left), "--%s%s", opts[i].flag, arg);
        printf("  %-33s %s\n", left, opts[i].help);
    }
    printf("  %-33s %s\n", "--help", "show this help");
    printf("\nSignals: SIGTERM/SIGINT stop gracefully; SIGHUP re-reads the config file.\n");
}

int lb_config_from_args(struct lb_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    /* First pass: --help and --config. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            lb_config_usage();
            return 1;
        }
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
            const char *v = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                snprintf(err, errlen, "--config needs a file name");
                return -1;
            }
            if (lb_config_load_file(cfg, v, err, errlen) < 0)
                return -1;
        }
    }
    int backends_reset = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config") || !strncmp(a, "--config=", 9)) {
            if (a[8] != '=')
                i++;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = NULL;
        for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++)
            if (strlen(opts[k].flag) == nlen && !strncmp(opts[k].flag, name, nlen))
                o = &opts[k];
        if (!o) {
            snprintf(err, errlen, "unknown option '%.*s' (see --help)", (int)(nlen + 2), a);
            return -1;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            snprintf(err, errlen, "option --%s needs a value", o->flag);
            return -1;
        }
        char e[256];
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", o->flag);
        if (set_opt(cfg, o, flag, val, &backends_reset, e, sizeof(e)) < 0) {
            snprintf(err, errlen, "%s", e);
            return -1;
        }
    }
    return validate(cfg, err, errlen);
}
