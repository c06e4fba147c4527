/* ctl.c — `agora ctl`: runtime control of a running balancer (admin API, see lb/admin.h) and of
 * a running `agora up` (its control socket, see cli/up.c). */
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

static void usage(void)
{
    printf("usage: agora ctl [--admin ADDR] [--token TOKEN] COMMAND\n"
           "       agora ctl [--data DIR] server add|remove PORT|list\n\n"
           "Changes a running balancer without a restart, through its admin API (default\n"
           "127.0.0.1:8404; token from --token or AGORA_ADMIN_TOKEN).\n\n"
           "  list                      servers with state, weight, in-flight and counters\n"
           "  add URL [--weight N]      add a server (checked at once, slow start)\n"
           "  remove ADDR               remove a server now (in-flight requests finish)\n"
           "  drain ADDR [--park]       no new requests; removed (or parked) once idle\n"
           "  enable ADDR               put a drained or parked server back\n"
           "  weight ADDR N             set a server's weight\n\n"
           "With `agora up` running (data directory --data, default ./data):\n"
           "  server add                start one more web server and add it to the balancer\n"
           "  server remove PORT        drain the web server on PORT, then stop it\n"
           "  server list               the processes `agora up` supervises\n\n"
           "ADDR is host:port as shown by `list`.\n");
}

static int admin_call(const char *admin, const char *token, const char *method, const char *path, const char *body)
{
    int status = 0;
    struct buf out = {0};
    char err[300];
    if (cli_http(admin, method, path, token, body, 10000, &status, &out, err, sizeof(err)) < 0) {
        fprintf(stderr, "agora ctl: %s\n", err);
        return 1;
    }
    int ok = status >= 200 && status < 300;
    fprintf(ok ? stdout : stderr, "%s%s", ok ? "" : "agora ctl: ", buf_cstr(&out));
    buf_free(&out);
    return ok ? 0 : 1;
}

static int print_list(const char *admin, const char *token)
{
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

int cmd_ctl(int argc, char **argv)
{
    const char *admin = "127.0.0.1:8404", *token = getenv("AGORA_ADMIN_TOKEN"), *data = "data";
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        if (!strcmp(argv[i], "--help")) {
            usage();
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "agora ctl: %s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--admin"))
            admin = argv[++i];
        else if (!strcmp(argv[i], "--token"))
            token = argv[++i];
        else if (!strcmp(argv[i], "--data"))
            data = argv[++i];
        else {
            fprintf(stderr, "agora ctl: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        usage();
        return 2;
    }
    const char *cmd = argv[i++];
    int rest = argc - i;
    char path[512], body[700];
    if (!strcmp(cmd, "list") && rest == 0)
        return print_list(admin, token);
    if (!strcmp(cmd, "add") && (rest == 1 || (rest == 3 && !strcmp(argv[i + 1], "--weight")))) {
        json_t *j = json_pack("{s:s}", "url", argv[i]);
        if (rest == 3) {
            char *end;
            long w = strtol(argv[i + 2], &end, 10);
            if (*end || w < 1 || w > 1000) {
                fprintf(stderr, "agora ctl: --weight must be 1..1000\n");
                json_decref(j);
                return 2;
            }
            json_object_set_new(j, "weight", json_integer(w));
        }
        char *txt = json_dumps(j, 0);
        int rc = admin_call(admin, token, "POST", "/servers", txt);
        free(txt);
        json_decref(j);
        return rc;
    }
    if (!strcmp(cmd, "remove") && rest == 1) {
        snprintf(path, sizeof(path), "/servers/%s", argv[i]);
        return admin_call(admin, token, "DELETE", path, NULL);
    }
    if (!strcmp(cmd, "drain") && (rest == 1 || (rest == 2 && !strcmp(argv[i + 1], "--park")))) {
        snprintf(path, sizeof(path), "/servers/%s/drain", argv[i]);
        snprintf(body, sizeof(body), "{\"then\": \"%s\"}", rest == 2 ? "park" : "remove");
        return admin_call(admin, token, "POST", path, body);
    }
    if (!strcmp(cmd, "enable") && rest == 1) {
        snprintf(path, sizeof(path), "/servers/%s/enable", argv[i]);
        return admin_call(admin, token, "POST", path, NULL);
    }
    if (!strcmp(cmd, "weight") && rest == 2) {
        snprintf(path, sizeof(path), "/servers/%s/weight", argv[i]);
        char *end;
        long w = strtol(argv[i + 1], &end, 10);
        if (*end || w < 1 || w > 1000) {
            fprintf(stderr, "agora ctl: weight must be 1..1000\n");
            return 2;
        }
        snprintf(body, sizeof(body), "{\"weight\": %ld}", w);
        return admin_call(admin, token, "PUT", path, body);
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
