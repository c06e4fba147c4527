/* test_config.c — unit tests for the balancer configuration (src/lb/config.h): defaults, every
 * flag, an INI file with every section and key, durations and sizes, exact error messages, and
 * the precedence rules (flags override --config; the first --backend replaces the defaults).
 * INI files are written to mkstemp() files under /tmp and removed by each test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lb/config.h"
#include "lb/lb.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Writes text to a new temporary file; its path goes to path (64 bytes). */
static void write_tmp(char *path, const char *text)
{
    snprintf(path, 64, "/tmp/agora-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

/* Runs lb_config_from_args on defaults with the given arguments (argv[0] is added). */
static int from_args(struct lb_config *cfg, char *err, size_t errlen, size_t argc, const char *const *args)
{
    char *argv[600];
    assert_true(argc + 1 <= N(argv));
    argv[0] = "lb";
    for (size_t i = 0; i < argc; i++)
        argv[i + 1] = (char *)args[i];
    lb_config_defaults(cfg);
    err[0] = '\0';
    return lb_config_from_args(cfg, (int)argc + 1, argv, err, errlen);
}

#define FROM_ARGS(cfg, err, ...)                                                                                       \
    from_args((cfg), (err), sizeof(err), N(((const char *const[]){__VA_ARGS__})), (const char *const[]){__VA_ARGS__})

/* Expects the flags to be rejected with exactly this message. */
#define EXPECT_ARGS_ERROR(msg, ...)                                                                                    \
    do {                                                                                                               \
        struct lb_config c_;                                                                                           \
        char e_[512];                                                                                                  \
        assert_int_equal(FROM_ARGS(&c_, e_, __VA_ARGS__), -1);                                                         \
        assert_string_equal(e_, (msg));                                                                                \
        lb_config_free(&c_);                                                                                           \
    } while (0)

/* Loads text as a file on top of the defaults; returns the result, the path in path (64). */
static int load_text(struct lb_config *cfg, const char *text, char *path, char *err, size_t errlen)
{
    write_tmp(path, text);
    lb_config_defaults(cfg);
    err[0] = '\0';
    int r = lb_config_load_file(cfg, path, err, errlen);
    unlink(path);
    return r;
}

/* Expects the file text to be rejected with "PATH:" followed by exactly rest. */
static void expect_file_error(const char *text, const char *rest)
{
    struct lb_config c;
    char path[64], err[512], want[600];
    assert_int_equal(load_text(&c, text, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:%s", path, rest);
    assert_string_equal(err, want);
    lb_config_free(&c);
}

static void test_defaults(void **state)
{
    unsetenv("AGORA_ADMIN_TOKEN");
    struct lb_config c;
    lb_config_defaults(&c);
    assert_string_equal(c.listen, ":8000");
    assert_int_equal(c.nbackends, 3);
    assert_string_equal(c.backends[0], "http://127.0.0.1:8001");
    assert_string_equal(c.backends[1], "http://127.0.0.1:8002");
    assert_string_equal(c.backends[2], "http://127.0.0.1:8003");
    assert_string_equal(c.policy, "least-conn");
    assert_string_equal(c.hash_key, "client");
    assert_int_equal(c.workers, 0);
    assert_string_equal(c.access_log, "off");
    assert_string_equal(c.health_path, "/health");
    assert_int_equal(c.health_interval_ms, 10000);
    assert_int_equal(c.health_timeout_ms, 5000);
    assert_int_equal(c.health_status, 200);
    assert_int_equal(c.rise, 2);
    assert_int_equal(c.fall, 3);
    assert_int_equal(c.client_header_timeout_ms, 30000);
    assert_int_equal(c.client_idle_timeout_ms, 60000);
    assert_int_equal(c.client_body_timeout_ms, 30000);
    assert_int_equal(c.client_send_timeout_ms, 60000);
    assert_int_equal(c.connect_timeout_ms, 5000);
    assert_int_equal(c.response_timeout_ms, 60000);
    assert_int_equal(c.shutdown_timeout_ms, 10000);
    assert_int_equal(c.max_header_size, 16384);
    assert_int_equal(c.max_line_size, 8192);
    assert_int_equal(c.max_body_size, 1073741824);
    assert_int_equal(c.max_connections, 0); /* auto: from the descriptor limit */
    assert_int_equal(c.pool_idle_max, 128);
    assert_int_equal(c.pool_idle_timeout_ms, 30000);
    assert_int_equal(c.trust_forwarded, 0);
    assert_int_equal(c.passive_health, 1);
    assert_int_equal(c.eject_5xx, 5);
    assert_int_equal(c.eject_base_ms, 2000);
    assert_int_equal(c.eject_max_ms, 60000);
    assert_int_equal(c.max_eject_percent, 50);
    assert_int_equal(c.panic_percent, 50);
    assert_int_equal(c.slow_start_ms, 10000);
    assert_int_equal(c.retries, 2);
    assert_int_equal(c.retry_budget_percent, 20);
    assert_int_equal(c.replay_buffer, 65536);
    assert_int_equal(c.max_conns_per_ip, 1000);
    assert_int_equal(c.rate_limit, 0);
    assert_int_equal(c.rate_burst, 0);
    assert_string_equal(c.admin_listen, "127.0.0.1:8404");
    assert_string_equal(c.admin_token, "");
    assert_string_equal(c.config_path, "");
    /* No flags at all: the defaults pass validation unchanged. */
    char err[256];
    char *argv[] = {"lb"};
    assert_int_equal(lb_config_from_args(&c, 1, argv, err, sizeof(err)), 0);
    assert_int_equal(c.nbackends, 3);
    lb_config_free(&c);
    assert_int_equal(c.nbackends, 0);
    assert_null(c.backends[0]);
}

static void test_admin_token_env(void **state)
{
    struct lb_config c;
    setenv("AGORA_ADMIN_TOKEN", "from-env", 1);
    lb_config_defaults(&c);
    assert_string_equal(c.admin_token, "from-env");
    lb_config_free(&c);
    char err[256];
    assert_int_equal(FROM_ARGS(&c, err, "--admin-token", "from-flag"), 0);
    assert_string_equal(c.admin_token, "from-flag");
    lb_config_free(&c);
    unsetenv("AGORA_ADMIN_TOKEN");
    lb_config_defaults(&c);
    assert_string_equal(c.admin_token, "");
    lb_config_free(&c);
}

/* The non-default values used by both the every-flag and the every-key tests. */
static void check_custom(const struct lb_config *c)
{
    assert_string_equal(c->listen, "127.0.0.1:9000");
    assert_int_equal(c->nbackends, 2);
    assert_string_equal(c->backends[0], "http://127.0.0.1:9101,weight=3");
    assert_string_equal(c->backends[1], "http://127.0.0.1:9102");
    assert_string_equal(c->policy, "round-robin");
    assert_string_equal(c->hash_key, "header:X-User");
    assert_int_equal(c->workers, 3);
    assert_string_equal(c->access_log, "/tmp/agora-access.log");
    assert_int_equal(c->trust_forwarded, 1);
    assert_string_equal(c->health_path, "/healthz");
    assert_int_equal(c->health_interval_ms, 250);
    assert_int_equal(c->health_timeout_ms, 2000);
    assert_int_equal(c->health_status, 204);
    assert_int_equal(c->rise, 4);
    assert_int_equal(c->fall, 5);
    assert_int_equal(c->client_header_timeout_ms, 11000);
    assert_int_equal(c->client_idle_timeout_ms, 120000);
    assert_int_equal(c->client_body_timeout_ms, 12000);
    assert_int_equal(c->client_send_timeout_ms, 13000);
    assert_int_equal(c->connect_timeout_ms, 1500);
    assert_int_equal(c->response_timeout_ms, 3600000);
    assert_int_equal(c->shutdown_timeout_ms, 3000);
    assert_int_equal(c->pool_idle_timeout_ms, 45000);
    assert_int_equal(c->max_header_size, 32768);
    assert_int_equal(c->max_line_size, 4096);
    assert_int_equal(c->max_body_size, 2097152);
    assert_int_equal(c->max_connections, 500);
    assert_int_equal(c->pool_idle_max, 16);
    assert_int_equal(c->passive_health, 0);
    assert_int_equal(c->eject_5xx, 7);
    assert_int_equal(c->eject_base_ms, 500);
    assert_int_equal(c->eject_max_ms, 30000);
    assert_int_equal(c->max_eject_percent, 40);
    assert_int_equal(c->panic_percent, 25);
    assert_int_equal(c->slow_start_ms, 0);
    assert_int_equal(c->retries, 3);
    assert_int_equal(c->retry_budget_percent, 50);
    assert_int_equal(c->replay_buffer, 131072);
    assert_int_equal(c->max_conns_per_ip, 10);
    assert_int_equal(c->rate_limit, 100);
    assert_int_equal(c->rate_burst, 200);
    assert_string_equal(c->admin_listen, "127.0.0.1:9404");
    assert_string_equal(c->admin_token, "s3cret");
}

static void test_every_flag(void **state)
{
    struct lb_config c;
    char err[256];
    int r = FROM_ARGS(&c, err, "--listen", "127.0.0.1:9000", "--backend", "http://127.0.0.1:9101,weight=3",
                      "--backend=http://127.0.0.1:9102", "--policy", "round-robin", "--hash-key=header:X-User",
                      "--workers", "3", "--access-log", "/tmp/agora-access.log", "--trust-forwarded", "on",
                      "--health-path", "/healthz", "--health-interval", "250ms", "--health-timeout", "2s",
                      "--health-status", "204", "--health-rise", "4", "--health-fall", "5", "--client-header-timeout",
                      "11s", "--client-idle-timeout", "2m", "--client-body-timeout", "12s", "--client-send-timeout",
                      "13s", "--connect-timeout", "1500ms", "--response-timeout", "1h", "--shutdown-timeout", "3",
                      "--pool-idle-timeout", "45s", "--max-header-size", "32k", "--max-line-size", "4KiB",
                      "--max-body-size", "2m", "--max-connections", "500", "--pool-size", "16", "--passive-health",
                      "off", "--eject-5xx", "7", "--eject-time", "500ms", "--eject-max-time", "30s", "--max-ejection",
                      "40", "--panic-threshold", "25", "--slow-start", "0", "--retries", "3", "--retry-budget", "50",
                      "--replay-buffer", "128k", "--max-conns-per-ip", "10", "--rate-limit", "100", "--rate-burst",
                      "200", "--admin-listen", "127.0.0.1:9404", "--admin-token", "s3cret");
    assert_string_equal(err, "");
    assert_int_equal(r, 0);
    check_custom(&c);
    assert_string_equal(c.config_path, "");
    lb_config_free(&c);
}

static void test_bool_spellings(void **state)
{
    static const char *const on[] = {"on", "true", "yes", "1"}, *const off[] = {"off", "false", "no", "0"};
    struct lb_config c;
    char err[256];
    for (size_t i = 0; i < N(on); i++) {
        assert_int_equal(FROM_ARGS(&c, err, "--trust-forwarded", on[i], "--passive-health", off[i]), 0);
        assert_int_equal(c.trust_forwarded, 1);
        assert_int_equal(c.passive_health, 0);
        lb_config_free(&c);
        assert_int_equal(FROM_ARGS(&c, err, "--trust-forwarded", off[i], "--passive-health", on[i]), 0);
        assert_int_equal(c.trust_forwarded, 0);
        assert_int_equal(c.passive_health, 1);
        lb_config_free(&c);
    }
}

static const char every_key_ini[] = "# every section and key\n"
                                    "; both comment styles\n"
                                    "\n"
                                    "[lb]\n"
                                    "listen = 127.0.0.1:9000\n"
                                    "policy = round-robin\n"
                                    "hash_key = header:X-User\n"
                                    "workers = 3\n"
                                    "access_log = /tmp/agora-access.log\n"
                                    "trust_forwarded = yes\n"
                                    "\n"
                                    "[backends]\n"
                                    "server = http://127.0.0.1:9101,weight=3\n"
                                    "server = http://127.0.0.1:9102\n"
                                    "\n"
                                    "[health]\n"
                                    "path = /healthz\n"
                                    "interval = 250ms\n"
                                    "timeout = 2s\n"
                                    "expect_status = 204\n"
                                    "rise = 4\n"
                                    "fall = 5\n"
                                    "passive = false\n"
                                    "eject_5xx = 7\n"
                                    "eject_base = 500ms\n"
                                    "eject_max = 30s\n"
                                    "max_ejection_percent = 40\n"
                                    "panic_percent = 25\n"
                                    "slow_start = 0\n"
                                    "\n"
                                    "[timeouts]\n"
                                    "client_header = 11s\n"
                                    "client_idle = 2m\n"
                                    "client_body = 12s\n"
                                    "client_send = 13s\n"
                                    "backend_connect = 1500ms\n"
                                    "backend_response = 1h\n"
                                    "shutdown = 3\n"
                                    "pool_idle = 45s\n"
                                    "\n"
                                    "[limits]\n"
                                    "max_header_size = 32k\n"
                                    "max_line_size = 4KiB\n"
                                    "max_body_size = 2m\n"
                                    "max_connections = 500\n"
                                    "pool_idle_max = 16\n"
                                    "max_conns_per_ip = 10\n"
                                    "rate_limit = 100\n"
                                    "rate_burst = 200\n"
                                    "\n"
                                    "[retries]\n"
                                    "retries = 3\n"
                                    "budget_percent = 50\n"
                                    "replay_buffer = 128k\n"
                                    "\n"
                                    "[admin]\n"
                                    "listen = 127.0.0.1:9404\n"
                                    "token = s3cret\n";

static void test_ini_every_key(void **state)
{
    struct lb_config c;
    char path[64], err[512];
    int r = load_text(&c, every_key_ini, path, err, sizeof(err));
    assert_string_equal(err, "");
    assert_int_equal(r, 0);
    check_custom(&c);
    assert_string_equal(c.config_path, path);
    lb_config_free(&c);
}

static void test_ini_inline_comment_and_spaces(void **state)
{
    struct lb_config c;
    char path[64], err[512];
    assert_int_equal(load_text(&c, "[lb]\n  policy=hash   ; inline comment\nworkers   =   2\n", path, err, sizeof(err)),
                     0);
    assert_string_equal(c.policy, "hash");
    assert_int_equal(c.workers, 2);
    lb_config_free(&c);
}

static void test_ini_errors(void **state)
{
    expect_file_error("[lb]\nbogus = 1\n", "2: unknown setting 'bogus' in section [lb]");
    expect_file_error("# c\n[nope]\nkey = 1\n", "3: unknown setting 'key' in section [nope]");
    expect_file_error("listen = :1\n", "1: unknown setting 'listen' in section []");
    expect_file_error("[lb]\nserver = http://127.0.0.1:1\n", "2: unknown setting 'server' in section [lb]");
    expect_file_error("[health]\n\ninterval = soon\n",
                      "3: [health] interval: 'soon' is not a duration (e.g. 500ms, 10s, 2m)");
    expect_file_error("[limits]\nmax_body_size = lots\n",
                      "2: [limits] max_body_size: 'lots' is not a size (e.g. 16k, 1m)");
    expect_file_error("[lb]\ntrust_forwarded = maybe\n", "2: [lb] trust_forwarded: 'maybe' is not on/off");
    expect_file_error("[lb]\nworkers = -2\n", "2: [lb] workers: '-2' is not a non-negative integer");
    expect_file_error("[lb]\nworkers = 1000000001\n", "2: [lb] workers: '1000000001' is not a non-negative integer");
    expect_file_error("[admin]\ntoken = "
                      "0123456789012345678901234567890123456789012345678901234567890123456789"
                      "012345678901234567890123456789012345678901234567890123456789\n",
                      "2: [admin] token: value too long");
    expect_file_error("[lb\n", "1: syntax error");
    expect_file_error("[lb]\nlisten\n", "2: syntax error");
    /* The first error is the one reported. */
    expect_file_error("[lb]\nworkers = x\npolicy = hash\nbogus = 1\n",
                      "2: [lb] workers: 'x' is not a non-negative integer");
    /* A file that cannot be read. */
    struct lb_config c;
    char err[256];
    lb_config_defaults(&c);
    assert_int_equal(lb_config_load_file(&c, "/nonexistent/agora.ini", err, sizeof(err)), -1);
    assert_string_equal(err, "/nonexistent/agora.ini: cannot open: No such file or directory");
    lb_config_free(&c);
}

/* Validation runs after the file: its messages carry no file:line prefix. */
static void test_ini_validation(void **state)
{
    struct lb_config c;
    char path[64], err[512];
    /* Validation errors name the file. */
    char want[600];
    assert_int_equal(load_text(&c, "[health]\nrise = 0\n", path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: health rise and fall must be at least 1", path);
    assert_string_equal(err, want);
    lb_config_free(&c);
    assert_int_equal(load_text(&c, "[lb]\nhash_key = ip\n", path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: hash-key must be client, header:NAME or cookie:NAME", path);
    assert_string_equal(err, want);
    lb_config_free(&c);
}

/* The file's backends replace the defaults; indented lines continue the previous key (inih). */
static void test_ini_backends_replace_defaults(void **state)
{
    struct lb_config c;
    char path[64], err[512];
    assert_int_equal(
        load_text(&c, "[backends]\nserver = http://10.0.0.1:1\n  http://10.0.0.2:2\nserver = http://10.0.0.3:3\n", path,
                  err, sizeof(err)),
        0);
    assert_int_equal(c.nbackends, 3);
    assert_string_equal(c.backends[0], "http://10.0.0.1:1");
    assert_string_equal(c.backends[1], "http://10.0.0.2:2");
    assert_string_equal(c.backends[2], "http://10.0.0.3:3");
    lb_config_free(&c);
    /* A file without [backends] keeps the defaults. */
    assert_int_equal(load_text(&c, "[lb]\nworkers = 1\n", path, err, sizeof(err)), 0);
    assert_int_equal(c.nbackends, 3);
    assert_string_equal(c.backends[0], "http://127.0.0.1:8001");
    lb_config_free(&c);
}

/* inih (Debian libinih, INI_MAX_LINE 200) cannot hold longer lines; rather than let it split
 * one (storing a truncated value and parsing the rest as a new line), the loader refuses the
 * file and names the line. */
static void test_ini_long_line(void **state)
{
    char text[400], value[301];
    memset(value, 'a', 300);
    value[0] = '/';
    value[300] = '\0';
    snprintf(text, sizeof(text), "[lb]\naccess_log = %s\n", value);
    struct lb_config c;
    char path[64], err[512];
    assert_int_equal(load_text(&c, text, path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":2: line too long (at most 198 characters)"));
    lb_config_free(&c);
}

static void test_config_then_flags(void **state)
{
    char path[64];
    write_tmp(path, "[lb]\npolicy = round-robin\nworkers = 3\n[backends]\nserver = http://10.0.0.1:1\n"
                    "server = http://10.0.0.2:2\n[health]\nrise = 7\n");
    struct lb_config c;
    char err[256];
    /* Flags override the file wherever they appear; the first --backend replaces the file's. */
    assert_int_equal(FROM_ARGS(&c, err, "--workers", "5", "--config", path, "--backend", "http://10.0.0.9:9"), 0);
    assert_string_equal(c.policy, "round-robin");
    assert_int_equal(c.workers, 5);
    assert_int_equal(c.rise, 7);
    assert_int_equal(c.nbackends, 1);
    assert_string_equal(c.backends[0], "http://10.0.0.9:9");
    assert_string_equal(c.config_path, path);
    lb_config_free(&c);
    /* --config=FILE; without --backend the file's backends stay. */
    char arg[80];
    snprintf(arg, sizeof(arg), "--config=%s", path);
    assert_int_equal(FROM_ARGS(&c, err, arg, "--policy", "hash"), 0);
    assert_string_equal(c.policy, "hash");
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.nbackends, 2);
    assert_string_equal(c.backends[1], "http://10.0.0.2:2");
    lb_config_free(&c);
    unlink(path);
}

static void test_first_backend_replaces_defaults(void **state)
{
    struct lb_config c;
    char err[256];
    assert_int_equal(FROM_ARGS(&c, err, "--backend", "http://10.0.0.1:1"), 0);
    assert_int_equal(c.nbackends, 1);
    assert_string_equal(c.backends[0], "http://10.0.0.1:1");
    lb_config_free(&c);
    assert_int_equal(
        FROM_ARGS(&c, err, "--backend", "http://10.0.0.1:1", "--workers", "1", "--backend=b", "--backend", "c"), 0);
    assert_int_equal(c.nbackends, 3);
    assert_string_equal(c.backends[0], "http://10.0.0.1:1");
    assert_string_equal(c.backends[1], "b");
    assert_string_equal(c.backends[2], "c");
    lb_config_free(&c);
    /* Exactly LB_MAX_BACKENDS is fine. */
    const char *args[2 * LB_MAX_BACKENDS];
    for (size_t i = 0; i < LB_MAX_BACKENDS; i++) {
        args[2 * i] = "--backend";
        args[2 * i + 1] = "http://127.0.0.1:1";
    }
    assert_int_equal(from_args(&c, err, sizeof(err), 2 * LB_MAX_BACKENDS, args), 0);
    assert_int_equal(c.nbackends, LB_MAX_BACKENDS);
    lb_config_free(&c);
}

static void test_flag_errors(void **state)
{
    EXPECT_ARGS_ERROR("unknown option '--bogus' (see --help)", "--bogus");
    EXPECT_ARGS_ERROR("unknown option '--bogus' (see --help)", "--bogus=1");
    EXPECT_ARGS_ERROR("unknown option '--' (see --help)", "--");
    EXPECT_ARGS_ERROR("unexpected argument 'positional' (see --help)", "positional");
    EXPECT_ARGS_ERROR("unexpected argument '-x' (see --help)", "-x");
    EXPECT_ARGS_ERROR("option --listen needs a value", "--listen");
    EXPECT_ARGS_ERROR("option --backend needs a value", "--workers", "2", "--backend");
    EXPECT_ARGS_ERROR("--config needs a file name", "--config");
    EXPECT_ARGS_ERROR("/nonexistent/agora.ini: cannot open: No such file or directory", "--config",
                      "/nonexistent/agora.ini");
    /* Value errors of flags whose file key has the same name as the flag. */
    EXPECT_ARGS_ERROR("--workers: 'x' is not a non-negative integer", "--workers", "x");
    EXPECT_ARGS_ERROR("--workers: '-1' is not a non-negative integer", "--workers=-1");
    EXPECT_ARGS_ERROR("--workers: '' is not a non-negative integer", "--workers=");
    EXPECT_ARGS_ERROR("--workers: '2x' is not a non-negative integer", "--workers", "2x");
    EXPECT_ARGS_ERROR("--retries: '1000000001' is not a non-negative integer", "--retries", "1000000001");
    EXPECT_ARGS_ERROR("--listen: value too long", "--listen",
                      "0123456789012345678901234567890123456789012345678901234567890123456789"
                      "0123456789012345678901234567890123456789012345678901234567890123456789");
    EXPECT_ARGS_ERROR("--policy: value too long", "--policy", "0123456789012345678901234567890123456789");
    /* Validation. */
    EXPECT_ARGS_ERROR("health rise and fall must be at least 1", "--health-rise", "0");
    EXPECT_ARGS_ERROR("health rise and fall must be at least 1", "--health-fall", "0");
    EXPECT_ARGS_ERROR("health interval and timeout must be greater than 0", "--health-interval", "0");
    EXPECT_ARGS_ERROR("health interval and timeout must be greater than 0", "--health-timeout", "0ms");
    EXPECT_ARGS_ERROR("health path must start with '/'", "--health-path", "health");
#define PERCENT_MSG "panic-threshold, max-ejection and retry-budget are percentages (0..100)"
    EXPECT_ARGS_ERROR(PERCENT_MSG, "--panic-threshold", "101");
    EXPECT_ARGS_ERROR(PERCENT_MSG, "--retry-budget", "101");
    EXPECT_ARGS_ERROR(PERCENT_MSG, "--max-ejection", "101");
    EXPECT_ARGS_ERROR("retries: at most 8", "--retries", "9");
    EXPECT_ARGS_ERROR("workers: at most 256", "--workers", "257");
    EXPECT_ARGS_ERROR("hash-key must be client, header:NAME or cookie:NAME", "--hash-key", "ip");
    EXPECT_ARGS_ERROR("hash-key must be client, header:NAME or cookie:NAME", "--hash-key", "clientx");
}

static void test_flag_limits_accepted(void **state)
{
    struct lb_config c;
    char err[256];
    assert_int_equal(FROM_ARGS(&c, err, "--retries", "8", "--workers", "256", "--panic-threshold", "100",
                               "--retry-budget", "0", "--max-ejection", "100", "--hash-key", "cookie:sid",
                               "--max-body-size", "0"),
                     0);
    assert_int_equal(c.retries, 8);
    assert_int_equal(c.workers, 256);
    assert_int_equal(c.panic_percent, 100);
    assert_int_equal(c.retry_budget_percent, 0);
    assert_int_equal(c.max_eject_percent, 100);
    assert_string_equal(c.hash_key, "cookie:sid");
    assert_int_equal(c.max_body_size, 0);
    lb_config_free(&c);
    assert_int_equal(FROM_ARGS(&c, err, "--health-rise=1", "--health-fall=1", "--max-connections=1000000000"), 0);
    assert_int_equal(c.rise, 1);
    assert_int_equal(c.fall, 1);
    assert_int_equal(c.max_connections, 1000000000);
    lb_config_free(&c);
}

/* Regression: value errors of flags were reported with the INI key instead of the flag name, so
 * the message named an option that does not exist ("--interval", "--trust_forwarded", "--path"),
 * and a "too many backends" error got a stray "--" prefix (config.c: set_opt() formatted with
 * o->key; lb_config_from_args() prefixed "--" to whatever set_opt wrote). The expected messages
 * below name the flag the user typed. */
static void test_flag_error_names_the_flag(void **state)
{
    EXPECT_ARGS_ERROR("--health-interval: 'soon' is not a duration (e.g. 500ms, 10s, 2m)", "--health-interval", "soon");
    EXPECT_ARGS_ERROR("--max-header-size: 'big' is not a size (e.g. 16k, 1m)", "--max-header-size", "big");
    EXPECT_ARGS_ERROR("--trust-forwarded: 'maybe' is not on/off", "--trust-forwarded", "maybe");
    EXPECT_ARGS_ERROR(
        "--health-path: value too long", "--health-path",
        "/" /* 300 bytes */
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
        "012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678");
    const char *args[2 * LB_MAX_BACKENDS + 2];
    for (size_t i = 0; i < LB_MAX_BACKENDS + 1; i++) {
        args[2 * i] = "--backend";
        args[2 * i + 1] = "http://127.0.0.1:1";
    }
    struct lb_config c;
    char err[256];
    assert_int_equal(from_args(&c, err, sizeof(err), 2 * LB_MAX_BACKENDS + 2, args), -1);
    assert_string_equal(err, "--backend: too many backends (at most 256)");
    lb_config_free(&c);
}

/* Regression: any argument that merely started with "--config" was taken for --config, so a
 * mistyped "--configfile x" read the file "x" instead of being reported as an unknown option. */
static void test_config_prefix_is_not_config(void **state)
{
    EXPECT_ARGS_ERROR("unknown option '--configfile' (see --help)", "--configfile", "/nonexistent/agora.ini");
}

static void test_parse_duration(void **state)
{
    static const struct {
        const char *s;
        unsigned ms;
    } ok[] = {
        {"250ms", 250},   {"10s", 10000},      {"2m", 120000},  {"1h", 3600000}, {"5", 5000},
        {"0", 0},         {"0ms", 0},          {"1.5s", 1500},  {"0.5", 500},    {"1.5ms", 2},
        {"90m", 5400000}, {"168h", 604800000}, {"10 s", 10000}, {"100 ms", 100}, {"604800", 604800000},
    };
    static const char *const bad[] = {
        "",       "ms", "s",     "abc",  "-1",     "-5s", "10x",   "10sec",
        "10 sec", "1d", "10ms ", "169h", "604801", "inf", "1e999", "5 m s",
    };
    for (size_t i = 0; i < N(ok); i++) {
        unsigned ms = 12345;
        if (lb_parse_duration(ok[i].s, &ms) != 0)
            fail_msg("lb_parse_duration(\"%s\") failed", ok[i].s);
        if (ms != ok[i].ms)
            fail_msg("lb_parse_duration(\"%s\") = %u, want %u", ok[i].s, ms, ok[i].ms);
    }
    for (size_t i = 0; i < N(bad); i++) {
        unsigned ms = 12345;
        if (lb_parse_duration(bad[i], &ms) != -1)
            fail_msg("lb_parse_duration(\"%s\") accepted (%u ms)", bad[i], ms);
        assert_int_equal(ms, 12345); /* untouched on failure */
    }
}

/* Regression: "nan" (and "NaN", "nanms") passed every check in lb_parse_duration (NaN < 0 and
 * NaN > limit are both false) and were converted to unsigned, which is undefined behaviour (UBSan:
 * float-cast-overflow); the call returned 0 with an arbitrary value and "--health-interval nan"
 * was accepted. The fix rejects !(v >= 0). */
static void test_parse_duration_nan(void **state)
{
    unsigned ms = 12345;
    assert_int_equal(lb_parse_duration("nan", &ms), -1);
    assert_int_equal(lb_parse_duration("nanms", &ms), -1);
    assert_int_equal(ms, 12345);
}

static void test_parse_size(void **state)
{
    static const struct {
        const char *s;
        uint64_t bytes;
    } ok[] = {
        {"512", 512},
        {"0", 0},
        {"16k", 16384},
        {"16K", 16384},
        {"16kb", 16384},
        {"64KiB", 65536},
        {"64kib", 65536},
        {"1m", 1048576},
        {"1MiB", 1048576},
        {"2g", 2147483648ull},
        {"2GB", 2147483648ull},
        {"1 k", 1024},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183g", 17179869183ull << 30},
    };
    static const char *const bad[] = {
        "",
        "k",
        "-1",
        "+1",
        " 1",
        "1x",
        "1kx",
        "1kibx",
        "1.5k",
        "16 KiBs",
        "1t",
        "0x10",
        "99999999999999999999",
        "17179869184g",
        "18446744073709551616",
    };
    for (size_t i = 0; i < N(ok); i++) {
        uint64_t b = 12345;
        if (lb_parse_size(ok[i].s, &b) != 0)
            fail_msg("lb_parse_size(\"%s\") failed", ok[i].s);
        if (b != ok[i].bytes)
            fail_msg("lb_parse_size(\"%s\") = %llu, want %llu", ok[i].s, (unsigned long long)b,
                     (unsigned long long)ok[i].bytes);
    }
    for (size_t i = 0; i < N(bad); i++) {
        uint64_t b = 12345;
        if (lb_parse_size(bad[i], &b) != -1)
            fail_msg("lb_parse_size(\"%s\") accepted (%llu)", bad[i], (unsigned long long)b);
        assert_int_equal(b, 12345);
    }
}

/* --help prints the reference (every flag) to stdout and returns 1. */
/* --admin-token-file and --stats-access (flags and INI keys), their defaults and validation, and
 * the refusal of an admin API on a non-loopback address without a configured token. */
static void test_admin_and_stats_access(void **state)
{
    struct lb_config c;
    char err[512], path[64];
    unsetenv("AGORA_ADMIN_TOKEN");
    lb_config_defaults(&c);
    assert_string_equal(c.admin_token_file, "");
    assert_string_equal(c.stats_access, "public");
    lb_config_free(&c);
    assert_int_equal(FROM_ARGS(&c, err, "--admin-token-file", "/run/agora/admin.token", "--stats-access", "loopback"),
                     0);
    assert_string_equal(c.admin_token_file, "/run/agora/admin.token");
    assert_string_equal(c.stats_access, "loopback");
    lb_config_free(&c);
    assert_int_equal(
        load_text(&c, "[lb]\nstats_access = off\n[admin]\ntoken_file = /tmp/t.token\n", path, err, sizeof(err)), 0);
    assert_string_equal(c.stats_access, "off");
    assert_string_equal(c.admin_token_file, "/tmp/t.token");
    lb_config_free(&c);
    EXPECT_ARGS_ERROR("stats-access must be public, loopback or off", "--stats-access", "private");
    EXPECT_ARGS_ERROR("stats-access must be public, loopback or off", "--stats-access", "");
    /* Loopback admin addresses need no configured token (one is generated)... */
    static const char *const loopback[] = {"127.0.0.1:9404", "127.3.2.1:9404", "[::1]:9404", "localhost:9404", "off"};
    for (size_t i = 0; i < N(loopback); i++) {
        assert_int_equal(FROM_ARGS(&c, err, "--admin-listen", loopback[i]), 0);
        lb_config_free(&c);
    }
    /* ...others do: the balancer refuses to start without one. */
    static const char *const outside[] = {"0.0.0.0:9404", ":9404",          "9404",
                                          "[::]:9404",    "192.0.2.1:9404", "[2001:db8::1]:9404"};
    for (size_t i = 0; i < N(outside); i++) {
        char want[300];
        snprintf(want, sizeof(want),
                 "the admin API on %s (not a loopback address) needs a token: set --admin-token, [admin] token or "
                 "AGORA_ADMIN_TOKEN, or bind it to 127.0.0.1",
                 outside[i]);
        EXPECT_ARGS_ERROR(want, "--admin-listen", outside[i]);
        assert_int_equal(FROM_ARGS(&c, err, "--admin-listen", outside[i], "--admin-token", "a-token-chosen-by-me"), 0);
        lb_config_free(&c);
        setenv("AGORA_ADMIN_TOKEN", "from-the-environment", 1);
        assert_int_equal(FROM_ARGS(&c, err, "--admin-listen", outside[i]), 0);
        lb_config_free(&c);
        unsetenv("AGORA_ADMIN_TOKEN");
    }
}

static void test_help(void **state)
{
    char path[64];
    write_tmp(path, "");
    fflush(stdout);
    int saved = dup(1);
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    struct lb_config c;
    char err[256];
    int r = FROM_ARGS(&c, err, "--workers", "2", "--help", "--bogus");
    lb_config_free(&c);
    int r2 = FROM_ARGS(&c, err, "-h");
    lb_config_free(&c);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    assert_int_equal(r, 1);
    assert_int_equal(r2, 1);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char out[16384];
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    fclose(f);
    unlink(path);
    assert_true(!strncmp(out, "usage: agora lb [--config FILE] [options]\n", 42));
    static const char *const flags[] = {
        "--config FILE",
        "--listen VALUE",
        "--backend VALUE",
        "--policy VALUE",
        "--hash-key VALUE",
        "--workers N",
        "--access-log VALUE",
        "--trust-forwarded on|off",
        "--health-path VALUE",
        "--health-interval DURATION",
        "--health-timeout DURATION",
        "--health-status N",
        "--health-rise N",
        "--health-fall N",
        "--client-header-timeout DURATION",
        "--client-idle-timeout DURATION",
        "--client-body-timeout DURATION",
        "--client-send-timeout DURATION",
        "--connect-timeout DURATION",
        "--response-timeout DURATION",
        "--shutdown-timeout DURATION",
        "--max-header-size SIZE",
        "--max-line-size SIZE",
        "--max-body-size SIZE",
        "--max-connections N",
        "--pool-size N",
        "--passive-health on|off",
        "--eject-5xx N",
        "--eject-time DURATION",
        "--eject-max-time DURATION",
        "--max-ejection N",
        "--panic-threshold N",
        "--slow-start DURATION",
        "--retries N",
        "--retry-budget N",
        "--replay-buffer SIZE",
        "--max-conns-per-ip N",
        "--rate-limit N",
        "--rate-burst N",
        "--admin-listen VALUE",
        "--admin-token VALUE",
        "--admin-token-file VALUE",
        "--stats-access VALUE",
        "--pool-idle-timeout DURATION",
        "--help",
    };
    for (size_t i = 0; i < N(flags); i++) {
        char line[80];
        snprintf(line, sizeof(line), "\n  %s ", flags[i]);
        if (!strstr(out, line))
            fail_msg("usage lacks \"%s\"", flags[i]);
    }
}

/* --max-connections 0 (auto): (limit - reserve) / 2 per client, shared by the workers; the reserve
 * is a quarter of the limit, at most 1024. */
static void test_auto_max_connections(void **state)
{
    assert_int_equal(lb_auto_max_connections(1048576, 2), (1048576 - 1024) / 2 / 2);
    assert_int_equal(lb_auto_max_connections(65536, 1), (65536 - 1024) / 2);
    assert_int_equal(lb_auto_max_connections(LB_C10K_FDS, 1), 10000); /* C10k's limit holds 10,000 */
    assert_int_equal(lb_auto_max_connections(LB_C10K_FDS, 4), 2500);
    assert_int_equal(lb_auto_max_connections(20000, 2), (20000 - 1024) / 2 / 2);
    assert_int_equal(lb_auto_max_connections(1024, 1), (1024 - 256) / 2);
    assert_int_equal(lb_auto_max_connections(4, 8), 1); /* never 0 (0 would mean unlimited) */
    assert_int_equal(lb_auto_max_connections(0, 0), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_max_connections),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_admin_token_env),
        cmocka_unit_test(test_every_flag),
        cmocka_unit_test(test_bool_spellings),
        cmocka_unit_test(test_ini_every_key),
        cmocka_unit_test(test_ini_inline_comment_and_spaces),
        cmocka_unit_test(test_ini_errors),
        cmocka_unit_test(test_ini_validation),
        cmocka_unit_test(test_ini_backends_replace_defaults),
        cmocka_unit_test(test_ini_long_line),
        cmocka_unit_test(test_config_then_flags),
        cmocka_unit_test(test_first_backend_replaces_defaults),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_flag_limits_accepted),
        cmocka_unit_test(test_flag_error_names_the_flag),
        cmocka_unit_test(test_config_prefix_is_not_config),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_duration_nan),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_admin_and_stats_access),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
