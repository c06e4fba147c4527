/* test_admin.c — unit tests for the admin API's request checks and token files (src/lb/admin.c).
 *
 * Includes admin.c to reach its static helpers (as h2o's t/00unit does): the Host check (the
 * shared http/gate.h, set up as the admin API sets it up; tests/unit/http/test_gate.c has the rest) against
 * tables of names that must and must not pass (for a loopback, a specific and a wildcard admin
 * address), the Content-Type check, the token comparison, and the token file: atomic 0600 write
 * that replaces a symlink instead of following it, reading back, and the default path rules
 * (XDG_RUNTIME_DIR, else a private /tmp/agora-UID). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lb/admin.c"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void admin_for(struct lb_admin *a, struct lb_config *cfg, struct lb_shared *sh, const char *listen)
{
    memset(a, 0, sizeof(*a));
    memset(sh, 0, sizeof(*sh));
    lb_config_defaults(cfg);
    snprintf(cfg->admin_listen, sizeof(cfg->admin_listen), "%s", listen);
    sh->cfg = cfg;
    a->sh = sh;
    struct net_addr addr;
    assert_int_equal(net_parse_addr(listen, &addr), 0);
    http_gate_init(&a->gate, listen, &addr);
}

static int host_ok(const struct lb_admin *a, const char *host)
{
    return http_gate_host_allowed(&a->gate, host, strlen(host));
}

static void test_host_check_loopback_admin(void **state)
{
    struct lb_admin a;
    struct lb_config cfg;
    struct lb_shared sh;
    admin_for(&a, &cfg, &sh, "127.0.0.1:8404");
    static const char *const good[] = {
        "localhost",       "LOCALHOST", "localhost:8404", "127.0.0.1",         "127.0.0.1:1",
        "127.255.255.254", "[::1]",     "[::1]:8404",     "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]:8404"};
    static const char *const bad[] = {"rebind.evil.example",
                                      "rebind.evil.example:8404",
                                      "127.0.0.1.evil.example",
                                      "localhost.evil.example",
                                      "localhost.",
                                      "evil.localhost",
                                      "127.1",
                                      "0x7f.0.0.1",
                                      "2130706433",
                                      "0177.0.0.1",
                                      "128.0.0.1",
                                      "[::1].evil",
                                      "[::1",
                                      "::1",
                                      "[::2]",
                                      "[::ffff:10.0.0.1]",
                                      "localhost:",
                                      "localhost:80x",
                                      ":8404",
                                      "",
                                      "192.0.2.1",
                                      "[127.0.0.1]",
                                      "127.0.0.1:8404:1"};
    for (size_t i = 0; i < N(good); i++)
        if (!host_ok(&a, good[i]))
            fail_msg("Host '%s' should pass", good[i]);
    for (size_t i = 0; i < N(bad); i++)
        if (host_ok(&a, bad[i]))
            fail_msg("Host '%s' should be refused", bad[i]);
    lb_config_free(&cfg);
}

static void test_host_check_specific_and_wildcard_admin(void **state)
{
    struct lb_admin a;
    struct lb_config cfg;
    struct lb_shared sh;
    admin_for(&a, &cfg, &sh, "192.0.2.1:8404");
    assert_int_equal(a.gate.wildcard, 0);
    assert_true(host_ok(&a, "192.0.2.1:8404"));
    assert_true(host_ok(&a, "192.0.2.1"));
    assert_true(host_ok(&a, "localhost"));
    assert_false(host_ok(&a, "192.0.2.2"));
    assert_false(host_ok(&a, "admin.example"));
    lb_config_free(&cfg);

    admin_for(&a, &cfg, &sh, "[2001:db8::1]:8404");
    assert_true(host_ok(&a, "[2001:DB8::1]:8404"));
    assert_false(host_ok(&a, "2001:db8::1"));
    assert_false(host_ok(&a, "[2001:db8::2]"));
    lb_config_free(&cfg);

    /* A wildcard address: any IP literal names this host (an IP cannot be rebound), no name. */
    static const char *const wild[] = {"0.0.0.0:8404", ":8404", "[::]:8404"};
    for (size_t i = 0; i < N(wild); i++) {
        admin_for(&a, &cfg, &sh, wild[i]);
        assert_int_equal(a.gate.wildcard, 1);
        assert_true(host_ok(&a, "192.0.2.7:8404"));
        assert_true(host_ok(&a, "[2001:db8::7]"));
        assert_true(host_ok(&a, "localhost"));
        assert_false(host_ok(&a, "rebind.evil.example"));
        assert_false(host_ok(&a, "192.0.2.7.evil.example"));
        lb_config_free(&cfg);
    }
}

/* Parses a request head (must be complete) into h. */
static void parse(const char *text, struct http_head *h)
{
    if (http_parse_request(text, strlen(text), NULL, h) <= 0)
        fail_msg("request did not parse: %s", text);
}

static void test_json_and_token_checks(void **state)
{
    struct lb_admin a;
    struct lb_config cfg;
    struct lb_shared sh;
    admin_for(&a, &cfg, &sh, "127.0.0.1:8404");
    snprintf(a.gate.token, sizeof(a.gate.token), "%s", "0123456789abcdef0123456789abcdef");
    static struct http_head h;
    struct http_request req = {.head = &h, .body = "", .remote_addr = "127.0.0.1"};
    static const struct {
        const char *type;
        int json;
    } types[] = {
        {"application/json", 1},
        {"Application/JSON", 1},
        {"application/json; charset=utf-8", 1},
        {"application/json ;x=y", 1},
        {"text/plain", 0},
        {"application/jsonx", 0},
        {"application/json-seq", 0},
        {"application/x-www-form-urlencoded", 0},
        {"multipart/form-data", 0},
        {"json", 0},
    };
    char text[300];
    for (size_t i = 0; i < N(types); i++) {
        snprintf(text, sizeof(text), "POST /servers HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n\r\n", types[i].type);
        parse(text, &h);
        if (is_json(&req) != types[i].json)
            fail_msg("Content-Type '%s': is_json should be %d", types[i].type, types[i].json);
    }
    parse("POST /servers HTTP/1.1\r\nHost: x\r\n\r\n", &h);
    assert_int_equal(is_json(&req), 0);

    static const struct {
        const char *auth; /* NULL: no header */
        int ok, present;
    } auths[] = {
        {NULL, 0, 0},
        {"Bearer 0123456789abcdef0123456789abcdef", 1, 1},
        {"bearer 0123456789abcdef0123456789abcdef", 1, 1},
        {"BEARER 0123456789abcdef0123456789abcdef", 1, 1},
        {"Bearer 0123456789abcdef0123456789abcdeF", 0, 1},
        {"Bearer 0123456789abcdef0123456789abcde", 0, 1},
        {"Bearer 0123456789abcdef0123456789abcdef0", 0, 1},
        {"Basic 0123456789abcdef0123456789abcdef", 0, 1},
        {"0123456789abcdef0123456789abcdef", 0, 1},
        {"Bearer", 0, 1},
    };
    for (size_t i = 0; i < N(auths); i++) {
        if (auths[i].auth)
            snprintf(text, sizeof(text), "GET /servers HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n",
                     auths[i].auth);
        else
            snprintf(text, sizeof(text), "GET /servers HTTP/1.1\r\nHost: x\r\n\r\n");
        parse(text, &h);
        int present = -1;
        if (http_gate_token_ok(&a.gate, &req, &present) != auths[i].ok || present != auths[i].present)
            fail_msg("Authorization '%s': expected ok %d present %d", auths[i].auth ? auths[i].auth : "(none)",
                     auths[i].ok, auths[i].present);
    }
    /* An empty token never matches (a balancer always has one, but the check must not rely on it). */
    a.gate.token[0] = '\0';
    parse("GET /servers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \r\n\r\n", &h);
    int present;
    assert_int_equal(http_gate_token_ok(&a.gate, &req, &present), 0);
    lb_config_free(&cfg);
}

static void test_token_file_write_and_read(void **state)
{
    char dir[] = "/tmp/agora-test-admin-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], victim[128], err[400], tok[LB_ADMIN_TOKEN_MAX];
    snprintf(path, sizeof(path), "%s/admin.token", dir);
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    FILE *f = fopen(victim, "w");
    assert_non_null(f);
    fputs("keep me\n", f);
    fclose(f);
    assert_int_equal(symlink(victim, path), 0);
    mode_t old = umask(0); /* a permissive umask must not widen the file */
    int r = write_token_file(path, "abc123", err, sizeof(err));
    umask(old);
    assert_int_equal(r, 0);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(lb_admin_read_token(path, tok, sizeof(tok)), 0);
    assert_string_equal(tok, "abc123");
    assert_int_equal(lb_admin_read_token(victim, tok, sizeof(tok)), -EINVAL); /* "keep me": a space */
    /* Replaced again: the new token, no temporary left behind. */
    assert_int_equal(write_token_file(path, "def456", err, sizeof(err)), 0);
    assert_int_equal(lb_admin_read_token(path, tok, sizeof(tok)), 0);
    assert_string_equal(tok, "def456");
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    assert_int_equal(access(tmp, F_OK), -1);
    /* Reading: missing file, empty file, too long a token. */
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/none", dir);
    assert_int_equal(lb_admin_read_token(missing, tok, sizeof(tok)), -ENOENT);
    f = fopen(victim, "w");
    fputs("\n", f);
    fclose(f);
    assert_int_equal(lb_admin_read_token(victim, tok, sizeof(tok)), -EINVAL);
    f = fopen(victim, "w");
    for (int i = 0; i < LB_ADMIN_TOKEN_MAX; i++)
        fputc('a', f);
    fclose(f);
    assert_int_equal(lb_admin_read_token(victim, tok, sizeof(tok)), -EINVAL);
    /* A directory that does not exist: a clear error. */
    snprintf(missing, sizeof(missing), "%s/no/such/dir/t", dir);
    assert_int_equal(write_token_file(missing, "x", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file or directory"));
    unlink(path);
    unlink(victim);
    assert_int_equal(rmdir(dir), 0);
}

static void test_default_token_path(void **state)
{
    char out[600], err[400];
    const char *saved = getenv("XDG_RUNTIME_DIR");
    char keep[512] = "";
    if (saved)
        snprintf(keep, sizeof(keep), "%s", saved);
    setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
    assert_int_equal(lb_admin_default_token_path(8404, 0, out, sizeof(out), err, sizeof(err)), 0);
    assert_string_equal(out, "/run/user/4242/agora-admin-8404.token");
    setenv("XDG_RUNTIME_DIR", "relative/dir", 1); /* not absolute: ignored */
    assert_int_equal(lb_admin_default_token_path(8404, 1, out, sizeof(out), err, sizeof(err)), 0);
    char want[128];
    snprintf(want, sizeof(want), "/tmp/agora-%u/admin-8404.token", (unsigned)geteuid());
    assert_string_equal(out, want);
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/agora-%u", (unsigned)geteuid());
    struct stat st;
    assert_int_equal(lstat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700 && st.st_uid == geteuid());
    /* (Its refusal when others may enter it is not exercised here: chmod-ing the shared
     * /tmp/agora-UID would break balancers of other tests running at the same time.) */
    if (keep[0])
        setenv("XDG_RUNTIME_DIR", keep, 1);
    else
        unsetenv("XDG_RUNTIME_DIR");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_check_loopback_admin), cmocka_unit_test(test_host_check_specific_and_wildcard_admin),
        cmocka_unit_test(test_json_and_token_checks),     cmocka_unit_test(test_token_file_write_and_read),
        cmocka_unit_test(test_default_token_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
