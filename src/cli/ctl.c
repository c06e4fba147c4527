/* ctl.c — `agora ctl`: runtime control of a running balancer (admin API, see lb/admin.h) and of
 * a running `agora up` (its control socket, see cli/up.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/commands.h"
#include "core/jsonw.h"
#include "core/net.h"
#include "core/opts.h"
#include "lb/admin.h"

struct ctl_opts {
    const char *admin, *token, *token_file, *data;
};

#define ROW(fl, f, a, h) OPTS_ROW(struct ctl_opts, fl, OPTS_PTR, f, 0, 0, a, NULL, h)
static const struct opts_def flags[] = {
    ROW("admin", admin, "ADDR", "the admin API (default 127.0.0.1:8404)"),
    ROW("token", token, "TOKEN", "the bearer token"),
    ROW("token-file", token_file, "FILE", "read the token from FILE"),
    ROW("data", data, "DIR", "`agora up`'s data directory (default ./data)"),
};
#undef ROW

static const struct opts_cmd command = {
    .name = "agora ctl",
    .head = "usage: agora ctl [--admin ADDR] [--token-file FILE | --token TOKEN] [--data DIR] COMMAND\n"
            "       agora ctl [--data DIR] server add|remove PORT|list\n"
            "       agora ctl [--data DIR] upgrade\n\n"
            "Changes a running balancer without a restart, through its admin API (default\n"
            "127.0.0.1:8404). The bearer token is the first of: --token, --token-file FILE,\n"
            "$AGORA_ADMIN_TOKEN, the file a balancer on ADDR's port generates by default\n"
            "($XDG_RUNTIME_DIR/agora-admin-PORT.token, else /tmp/agora-UID/admin-PORT.token),\n"
            "DIR/admin.token (`agora up`'s; --data, default ./data).\n\n"
            "  list                      servers with state, weight, in-flight and counters\n"
            "  add URL [--weight N]      add a server (checked at once, slow start)\n"
            "  remove ADDR               remove a server now (in-flight requests finish)\n"
            "  drain ADDR [--park]       no new requests; removed (or parked) once idle\n"
            "  enable ADDR               put a drained or parked server back\n"
            "  weight ADDR N             set a server's weight\n\n"
            "With `agora up` running (data directory --data, default ./data):\n"
            "  server add                start one more web server and add it to the balancer\n"
            "  server remove PORT        drain the web server on PORT, then stop it\n"
            "  server list               the processes `agora up` supervises\n"
            "  upgrade                   replace `agora up`'s balancer by a new one (the agora binary\n"
            "                            on disk now) without dropping a request\n\n"
            "ADDR is host:port as shown by `list`.\n\n"
            "Options (before the command):\n",
    OPTS_TABLE(flags),
    .width = 24,
    .flags = OPTS_STOP_AT_ARG,
};

/* The admin API to call and how to authenticate. */
struct ctl {
    const char *admin;            /* host:port */
    const char *token;            /* NULL: none found */
    char source[700];             /* where the token came from, for a refusal's message */
    char buf[LB_ADMIN_TOKEN_MAX]; /* a token read from a file */
};

static void explain_refusal(const struct ctl *k, int status)
{
    if (status == 401)
        fprintf(stderr, "agora ctl: the admin API refused the token (%s)\n", k->source);
}

static int admin_call(const struct ctl *k, const char *method, const char *path, const char *body)
{
    const char *admin = k->admin, *token = k->token;
    int status = 0;
    struct buf out = {0};
    char err[300];
    if (cli_http(admin, method, path, token, body, 10000, &status, &out, err, sizeof(err)) < 0) {
        fprintf(stderr, "agora ctl: %s\n", err);
        return 1;
    }
    int ok = status >= 200 && status < 300;
    fprintf(ok ? stdout : stderr, "%s%s", ok ? "" : "agora ctl: ", buf_cstr(&out));
    if (!ok)
        explain_refusal(k, status);
    buf_free(&out);
    return ok ? 0 : 1;
}

static int print_list(const struct ctl *k)
{
    const char *admin = k->admin, *token = k->token;
    int status = 0;
    struct buf out = {0};
    char err[300];
    if (cli_http(admin, "GET", "/servers", token, NULL, 10000, &status, &out, err, sizeof(err)) < 0) {
        fprintf(stderr, "agora ctl: %s\n", err);
        return 1;
    }
    json_error_t e;
    json_t *j = status == 200 ? json_loads(buf_cstr(&out), 0, &e) : NULL;
    json_t *servers = json_object_get(j, "servers");
    if (!json_is_array(servers)) {
        fprintf(stderr, "agora ctl: unexpected answer (%d): %s", status, buf_cstr(&out));
        explain_refusal(k, status);
        json_decref(j);
        buf_free(&out);
        return 1;
    }
    printf("%-24s %-9s %6s %9s %10s %8s %9s %9s\n", "ADDRESS", "STATE", "WEIGHT", "IN-FLIGHT", "REQUESTS", "ERRORS",
           "P50(ms)", "P99(ms)");
    size_t i;
    json_t *s;
    json_array_foreach(servers, i, s)
    {
        printf("%-24s %-9s %6lld %9lld %10lld %8lld %9.2f %9.2f\n", json_string_value(json_object_get(s, "address")),
               json_string_value(json_object_get(s, "state")), json_integer_value(json_object_get(s, "weight")),
               json_integer_value(json_object_get(s, "in_flight")), json_integer_value(json_object_get(s, "requests")),
               json_integer_value(json_object_get(s, "errors")),
               json_number_value(json_object_get(s, "latency_p50_ms")),
               json_number_value(json_object_get(s, "latency_p99_ms")));
    }
    json_decref(j);
    buf_free(&out);
    return 0;
}

/* Sends one line to `agora up`'s control socket and prints the one-line answer. */
static int up_call(const char *data, const char *line)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/agora-up.sock", data) >= (int)sizeof(sa.sun_path)) {
        fprintf(stderr, "agora ctl: data directory path too long\n");
        return 1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "agora ctl: cannot reach `agora up` at %s: %s (is it running with --data %s?)\n", sa.sun_path,
                strerror(errno), data);
        if (fd >= 0)
            close(fd);
        return 1;
    }
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t w = write(fd, line, strlen(line));
    (void)w;
    char ans[8192];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, ans + got, sizeof(ans) - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == sizeof(ans) - 1)
            break;
    }
    close(fd);
    ans[got] = '\0';
    if (!got) {
        fprintf(stderr, "agora ctl: no answer from `agora up`\n");
        return 1;
    }
    int ok = strstr(ans, "\"error\"") == NULL;
    fprintf(ok ? stdout : stderr, "%s", ans);
    return ok ? 0 : 1;
}

/* Finds the admin token (see usage) for k->admin into k->token and k->source (k->token NULL
 * when there is none). Returns -1 when the file named by --token-file cannot be read. */
static int find_token(struct ctl *k, const char *flag_token, const char *token_file, const char *data)
{
    const char *env = getenv("AGORA_ADMIN_TOKEN");
    char path[600], err[300];
    struct net_addr a;
    int r;
    k->token = NULL;
    if (flag_token) {
        snprintf(k->source, sizeof(k->source), "from --token");
        k->token = flag_token;
    } else if (token_file) {
        if ((r = lb_admin_read_token(token_file, k->buf, sizeof(k->buf))) < 0) {
            fprintf(stderr, "agora ctl: cannot read a token from %s: %s\n", token_file,
                    r == -EINVAL ? "no token in it" : strerror(-r));
            return -1;
        }
        snprintf(k->source, sizeof(k->source), "from %.600s", token_file);
        k->token = k->buf;
    } else if (env && *env) {
        snprintf(k->source, sizeof(k->source), "from AGORA_ADMIN_TOKEN");
        k->token = env;
    } else {
        unsigned port = 0;
        if (net_parse_addr(k->admin, &a) == 0)
            port = ntohs(a.ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a.ss)->sin6_port
                                                    : ((struct sockaddr_in *)&a.ss)->sin_port);
        if (port && lb_admin_default_token_path(port, 0, path, sizeof(path), err, sizeof(err)) == 0 &&
            lb_admin_read_token(path, k->buf, sizeof(k->buf)) == 0) {
            snprintf(k->source, sizeof(k->source), "from %s", path);
            k->token = k->buf;
        } else {
            snprintf(path, sizeof(path), "%.580s/admin.token", data);
            if (lb_admin_read_token(path, k->buf, sizeof(k->buf)) == 0) {
                snprintf(k->source, sizeof(k->source), "from %s", path);
                k->token = k->buf;
            }
        }
    }
    if (!k->token)
        snprintf(k->source, sizeof(k->source), "none found: use --token-file, --token or AGORA_ADMIN_TOKEN");
    return 0;
}

int cmd_ctl(int argc, char **argv)
{
    struct ctl_opts o = {.admin = "127.0.0.1:8404", .data = "data"};
    int i;
    int r = opts_cmd_parse(&command, &o, argc, argv, &i);
    if (r != OPTS_CONTINUE)
        return r;
    const char *admin = o.admin, *flag_token = o.token, *token_file = o.token_file, *data = o.data;
    if (i >= argc) {
        opts_cmd_usage(&command, stdout);
        return 2;
    }
    const char *cmd = argv[i++];
    int rest = argc - i;
    struct ctl k = {.admin = admin};
    /* `server ...` and `upgrade` go to `agora up`'s control socket, not to the admin API. */
    if (!strcmp(cmd, "upgrade") && rest == 0)
        return up_call(data, "upgrade\n");
    if (strcmp(cmd, "server") && find_token(&k, flag_token, token_file, data) < 0)
        return 2;
    char path[512], body[700];
    if (!strcmp(cmd, "list") && rest == 0)
        return print_list(&k);
    if (!strcmp(cmd, "add") && (rest == 1 || (rest == 3 && !strcmp(argv[i + 1], "--weight")))) {
        long weight = 0;
        if (rest == 3) {
            char *end;
            weight = strtol(argv[i + 2], &end, 10);
            if (*end || weight < 1 || weight > 1000) {
                fprintf(stderr, "agora ctl: --weight must be 1..1000\n");
                return 2;
            }
        }
        struct buf b = {0};
        struct jsonw w;
        jsonw_init(&w, &b, JSONW_SPACED);
        jsonw_object(&w);
        jsonw_kv_str(&w, "url", argv[i]);
        if (weight) {
            jsonw_kv_int(&w, "weight", weight);
        }
        jsonw_end(&w);
        int rc = admin_call(&k, "POST", "/servers", buf_cstr(&b));
        buf_free(&b);
        return rc;
    }
    if (!strcmp(cmd, "remove") && rest == 1) {
        snprintf(path, sizeof(path), "/servers/%s", argv[i]);
        return admin_call(&k, "DELETE", path, NULL);
    }
    if (!strcmp(cmd, "drain") && (rest == 1 || (rest == 2 && !strcmp(argv[i + 1], "--park")))) {
        snprintf(path, sizeof(path), "/servers/%s/drain", argv[i]);
        return admin_call(&k, "POST", path, rest == 2 ? "{\"then\": \"park\"}" : "{\"then\": \"remove\"}");
    }
    if (!strcmp(cmd, "enable") && rest == 1) {
        snprintf(path, sizeof(path), "/servers/%s/enable", argv[i]);
        return admin_call(&k, "POST", path, NULL);
    }
    if (!strcmp(cmd, "weight") && rest == 2) {
        snprintf(path, sizeof(path), "/servers/%s/weight", argv[i]);
        char *end;
        long w = strtol(argv[i + 1], &end, 10);
        if (*end || w < 1 || w > 1000) {
            fprintf(stderr, "agora ctl: weight must be 1..1000\n");
            return 2;
        }
        struct buf b = {0};
        jsonw_doc_int(&b, JSONW_SPACED, "weight", w);
        int rc = admin_call(&k, "PUT", path, buf_cstr(&b));
        buf_free(&b);
        return rc;
    }
    if (!strcmp(cmd, "server") && rest >= 1) {
        if (!strcmp(argv[i], "add") && rest == 1)
            return up_call(data, "add\n");
        if (!strcmp(argv[i], "list") && rest == 1)
            return up_call(data, "list\n");
        if (!strcmp(argv[i], "remove") && rest == 2) {
            char *end;
            long port = strtol(argv[i + 1], &end, 10);
            if (*end || port < 1 || port > 65535) {
                fprintf(stderr, "agora ctl: server remove needs a port number\n");
                return 2;
            }
            snprintf(body, sizeof(body), "remove %ld\n", port);
            return up_call(data, body);
        }
    }
    fprintf(stderr, "agora ctl: unknown or incomplete command '%s' (see --help)\n", cmd);
    return 2;
}
