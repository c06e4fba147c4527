/* config.h — the balancer's configuration: defaults, INI file and command-line flags.
 *
 * One table of options (core/opts.h) drives the file (section + key), the flags (--name) and
 * --help, so every setting can be given either way; flags override the file. The file format is
 * INI (parsed by inih): "key = value", "# comment", sections [lb], [backends], [health],
 * [timeouts], [limits].
 * Durations accept "250ms", "10s", "2m" or a plain number of seconds; sizes accept "512", "16k",
 * "64KiB", "1m", "2g". See docs/CONFIG.md for every option. */
#ifndef AGORA_LB_CONFIG_H
#define AGORA_LB_CONFIG_H
#include <stddef.h>
#include <stdint.h>

#include "core/opts.h"

#define LB_MAX_BACKENDS 256
#define LB_MAX_CERTS    16 /* = HTTP_TLS_MAX_CERTS */

struct lb_config {
    char listen[128];
    char *backends[LB_MAX_BACKENDS]; /* specs "http://host:port[,weight=N]", owned */
    size_t nbackends;
    char policy[32];
    char hash_key[128];         /* "client", "header:NAME" or "cookie:NAME" */
    unsigned workers;           /* 0 = number of cores */
    char cpu_affinity[256];     /* off (default), auto or a CPU list (core/cpus.h) */
    char access_log[512];       /* "off", "stdout" or a file path */
    char access_log_format[16]; /* "combined" or "json" (accesslog.h) */
    char upgrade_socket[256];   /* offer the listening sockets to a successor here ("" = off) */
    char upgrade_from[256];     /* take the listening sockets from a running balancer ("" = bind) */
    /* health checks */
    char health_path[256];
    unsigned health_interval_ms, health_timeout_ms;
    unsigned health_status; /* expected status */
    unsigned rise, fall;
    /* timeouts */
    unsigned client_header_timeout_ms, client_idle_timeout_ms, client_body_timeout_ms, client_send_timeout_ms;
    unsigned connect_timeout_ms, response_timeout_ms, shutdown_timeout_ms;
    unsigned try_timeout_ms;    /* one try without a response head this long is retried elsewhere; 0 = off */
    unsigned tunnel_timeout_ms; /* an upgraded (WebSocket) connection idle both ways this long is closed */
    /* limits */
    uint64_t max_header_size, max_line_size, max_body_size;
    unsigned max_connections; /* per worker; 0 = auto (lb_auto_max_connections) */
    unsigned pool_idle_max;   /* idle keep-alive connections kept per backend per worker */
    unsigned pool_idle_timeout_ms;
    unsigned max_tunnels; /* upgraded (WebSocket) connections at once, all workers; then 503 */
    int trust_forwarded;  /* keep a client's X-Forwarded-For (append to it) */
    /* passive health (outlier detection) */
    int passive_health; /* eject on connect failure/reset/timeout/consecutive 5xx */
    unsigned eject_5xx; /* consecutive 5xx responses that eject */
    unsigned eject_base_ms, eject_max_ms;
    unsigned max_eject_percent; /* passive ejection never takes out more than this share */
    unsigned panic_percent;     /* below this share of usable servers, balance over all */
    unsigned slow_start_ms;     /* weight ramp for new and recovering servers; 0 = off */
    /* retries */
    unsigned retries;              /* extra attempts per request */
    unsigned retry_budget_percent; /* retries after sending, as a share of requests */
    uint64_t replay_buffer;        /* request bytes kept for a retry after sending */
    /* client limits (off by default) */
    unsigned max_conns_per_ip; /* 0 = unlimited */
    unsigned rate_limit;       /* requests per second per client address; 0 = off */
    unsigned rate_burst;       /* token-bucket size; 0 = same as rate_limit */
    /* admin API */
    char admin_listen[128];     /* "off" to disable */
    char admin_token[128];      /* bearer token; env AGORA_ADMIN_TOKEN; empty: generated at start */
    char admin_token_file[512]; /* where a generated token is written; empty: the default path */
    char stats_access[16];      /* GET /stats on the public port: "public", "loopback" or "off" */
    char config_path[512];      /* the file read, if any (for SIGHUP) */
    int backends_reset;         /* internal: the next backend given replaces the list */
    /* TLS (http/tls.h): a second listener; certificate i goes with key i, the first is the default */
    char tls_listen[128]; /* "" = none */
    char tls_cert[LB_MAX_CERTS][512];
    char tls_key[LB_MAX_CERTS][512];
    unsigned ntls_cert, ntls_key;
    unsigned tls_handshake_timeout_ms;
    int redirect_https;       /* the plain listener answers 308 to https:// */
    unsigned hsts_s;          /* Strict-Transport-Security max-age on TLS responses; 0 = none */
    int http2;                /* ALPN offers h2 on the TLS listener (http/h2.h); default on */
    int h2c;                  /* HTTP/2 with prior knowledge on the plain listener; default off */
    unsigned h2_max_requests; /* streams per HTTP/2 connection (http_server_limits) */
    int tls_reset;            /* internal: the next --tls-cert/--tls-key replaces the lists (as backends_reset) */
};

/* Fills the defaults: listen :8000, backends 127.0.0.1:8001-8003, least-conn, health GET /health
 * every 10 s with a 5 s timeout, rise 2, fall 3, and the timeouts and limits documented. */
void lb_config_defaults(struct lb_config *cfg);
/* Reads an INI file on top of cfg. Returns 0, or -1 with a message (file:line: what) in err. */
int lb_config_load_file(struct lb_config *cfg, const char *path, char *err, size_t errlen);
/* Applies command-line flags (argv[0] is the subcommand name). --config FILE is read first, then
 * the other flags override it. Returns 0; 1 if --help was given (usage printed); -1 with err set
 * on a bad flag or value. */
int lb_config_from_args(struct lb_config *cfg, int argc, char **argv, char *err, size_t errlen);
/* Prints the flag reference to stdout. */
void lb_config_usage(void);
/* Frees owned strings (backend specs); cfg may be reused after lb_config_defaults. */
void lb_config_free(struct lb_config *cfg);

/* The parsers of durations and sizes are core/opts.h's; these names stay for the balancer's
 * callers and tests. */
static inline int lb_parse_duration(const char *s, unsigned *ms) { return opts_parse_duration(s, ms); }
static inline int lb_parse_size(const char *s, uint64_t *bytes) { return opts_parse_size(s, bytes); }

/* The client side's limits (http/server.h) this configuration sets; the rest default. */
struct http_server_limits;
void lb_config_client_limits(const struct lb_config *cfg, struct http_server_limits *lim);

#endif
