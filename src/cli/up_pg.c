/* up_pg.c — the PostgreSQL of `agora up`: finding it, initdb, the server's command line, readiness;
 * see up_pg.h. The same steps as scripts/pg-temp.sh, done here so that `agora up` needs no shell. */
#include "cli/up_pg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

#define SOCKET_NAME "/.s.PGSQL.5432"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int is_version(const char *s)
{
    if (*s < '0' || *s > '9')
        return 0;
    for (; *s; s++)
        if ((*s < '0' || *s > '9') && *s != '.')
            return 0;
    return 1;
}

/* The bin directory of PostgreSQL under root: ROOT/want/bin if want is given and installed,
 * else the newest ROOT/VERSION/bin with initdb and postgres. 0, or -1 with err. */
static int find_bindir(const char *root, const char *want, char *out, size_t outlen, char *err, size_t errlen)
{
    char best[256] = "", path[PATH_MAX + 300];
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (!is_version(e->d_name) || strlen(e->d_name) >= sizeof(best))
            continue;
        snprintf(path, sizeof(path), "%s/%s/bin/initdb", root, e->d_name);
        if (access(path, X_OK) < 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s/bin/postgres", root, e->d_name);
        if (access(path, X_OK) < 0)
            continue;
        if (want && !strcmp(want, e->d_name)) {
            snprintf(best, sizeof(best), "%s", e->d_name);
            break;
        }
        if (!best[0] || strverscmp(e->d_name, best) > 0)
            snprintf(best, sizeof(best), "%s", e->d_name);
    }
    if (d)
        closedir(d);
    if (!best[0]) {
        snprintf(err, errlen,
                 "PostgreSQL is not installed: no %s/VERSION/bin with initdb and postgres (install Debian's "
                 "postgresql package: apt-get install postgresql)",
                 root);
        return -1;
    }
    if (want && strcmp(want, best)) {
        snprintf(err, errlen,
                 "the cluster was made by PostgreSQL %s, which is not installed (found %s under %s); install "
                 "postgresql-%s or move the cluster away",
                 want, best, root, want);
        return -1;
    }
    snprintf(out, outlen, "%s/%s/bin", root, best);
    return 0;
}

/* Percent-encodes s into out, keeping RFC 3986's unreserved characters and '/'. */
static void url_encode(const char *s, char *out, size_t outlen)
{
    size_t n = 0;
    for (; *s && n + 4 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~/", c))
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, outlen - n, "%%%02X", c);
    }
    out[n] = '\0';
}

/* Reads the first line of path into out (no newline). 0, or -1 when there is no such file. */
static int read_line(const char *path, char *out, size_t outlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    if (!fgets(out, (int)outlen, f))
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

static int dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int empty = 1;
    while (d && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = 0;
    if (d)
        closedir(d);
    return empty;
}

int up_pg_child_setup(const struct up_pg *pg)
{
    int fd = open(pg->log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "agora up: cannot open %s: %s\n", pg->log, strerror(errno));
        return -1;
    }
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        close(null);
    }
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    if (chdir(pg->dir) < 0) {
        fprintf(stderr, "agora up: cannot enter %s: %s\n", pg->dir, strerror(errno));
        return -1;
    }
    if (pg->drop && (initgroups("postgres", pg->gid) < 0 || setgid(pg->gid) < 0 || setuid(pg->uid) < 0)) {
        fprintf(stderr, "agora up: cannot become the postgres user: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

/* Runs argv (a PostgreSQL program) as the cluster's owner and waits for it. Returns its exit
 * status (127: could not run it). */
static int run(const struct up_pg *pg, char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return 127;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (up_pg_child_setup(pg) == 0)
            execv(argv[0], argv);
        fprintf(stderr, "agora up: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 127;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* 1 if the postgres user can use pg->dir (every directory above it must let it pass: /root,
 * for one, does not), else 0. Checked in a child that takes the user's identity. */
static int owner_reaches(const struct up_pg *pg)
{
    pid_t pid = fork();
    if (pid < 0)
        return 1; /* no verdict: initdb will say */
    if (pid == 0) {
        if (initgroups("postgres", pg->gid) < 0 || setgid(pg->gid) < 0 || setuid(pg->uid) < 0)
            _exit(2);
        _exit(access(pg->dir, R_OK | W_OK | X_OK) == 0 ? 0 : 1);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void up_pg_log_tail(const struct up_pg *pg, int lines)
{
    FILE *f = fopen(pg->log, "r");
    if (!f)
        return;
    char ring[20][512];
    int n = 0;
    lines = lines > 20 ? 20 : lines;
    while (fgets(ring[n % lines], sizeof(ring[0]), f))
        n++;
    fclose(f);
    fprintf(stderr, "agora up: the last lines of %s:\n", pg->log);
    for (int i = n > lines ? n - lines : 0; i < n; i++)
        fprintf(stderr, "  %s", ring[i % lines]);
}

static void add_arg(struct up_pg *pg, int *argc, const char *fmt, const char *val)
{
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof(tmp), fmt, val);
    if (*argc < UP_PG_MAX_ARGS - 1)
        pg->argv[(*argc)++] = alloc_strdup(tmp);
    pg->argv[*argc] = NULL;
}

int up_pg_prepare(struct up_pg *pg, const char *data, char *err, size_t errlen)
{
    char abs[PATH_MAX], version[64] = "", path[PATH_MAX + 32];
    const char *root = getenv("AGORA_PG_LIB");
    memset(pg, 0, sizeof(*pg));
    if (!root || !*root)
        root = "/usr/lib/postgresql";
    if (!realpath(data, abs)) {
        snprintf(err, errlen, "data directory %s: %s", data, strerror(errno));
        return -1;
    }
    int n = snprintf(pg->dir, sizeof(pg->dir), "%s/postgres", abs);
    if (n < 0 || (size_t)n + sizeof(SOCKET_NAME) > sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(err, errlen,
                 "the data directory's path is too long for PostgreSQL's socket (%s%s: at most %zu "
                 "characters); use a shorter --data",
                 pg->dir, SOCKET_NAME, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return -1;
    }
    if (strpbrk(pg->dir, ",\"' \t\n\\")) {
        snprintf(err, errlen, "the data directory's path %s has a character PostgreSQL's settings cannot hold", abs);
        return -1;
    }
    snprintf(pg->log, sizeof(pg->log), "%s/postgres.log", abs);
    snprintf(path, sizeof(path), "%s/PG_VERSION", pg->dir);
    int exists = read_line(path, version, sizeof(version)) == 0;
    if (find_bindir(root, exists ? version : NULL, pg->bindir, sizeof(pg->bindir), err, errlen) < 0)
        return -1;
    snprintf(pg->exe, sizeof(pg->exe), "%s/postgres", pg->bindir);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw) {
            snprintf(err, errlen,
                     "PostgreSQL refuses to run as root, and there is no 'postgres' user to run it as "
                     "(install Debian's postgresql package, which creates it, or run agora up as another user)");
            return -1;
        }
        pg->drop = 1;
        pg->uid = pw->pw_uid;
        pg->gid = pw->pw_gid;
        /* The postgres user must reach DATA/postgres, and nothing else in DATA. */
        if (chown(abs, (uid_t)-1, pg->gid) < 0 || chmod(abs, 0710) < 0) {
            snprintf(err, errlen, "cannot give the postgres user access to %s: %s", abs, strerror(errno));
            return -1;
        }
    }
    if (mkdir(pg->dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", pg->dir, strerror(errno));
        return -1;
    }
    if ((pg->drop && chown(pg->dir, pg->uid, pg->gid) < 0) || chmod(pg->dir, 0700) < 0) {
        snprintf(err, errlen, "cannot hand %s to the postgres user: %s", pg->dir, strerror(errno));
        return -1;
    }
    if (pg->drop && !owner_reaches(pg)) {
        snprintf(err, errlen,
                 "PostgreSQL runs as the postgres user, which cannot reach %s (a directory above it is closed "
                 "to other users, as /root is): use a --data directory outside it, e.g. /var/lib/agora",
                 pg->dir);
        return -1;
    }
    int fd = open(pg->log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", pg->log, strerror(errno));
        return -1;
    }
    close(fd);
    if (!exists) {
        if (!dir_is_empty(pg->dir)) {
            snprintf(err, errlen,
                     "%s is not empty but holds no PostgreSQL cluster (no PG_VERSION); move it away to "
                     "start afresh",
                     pg->dir);
            return -1;
        }
        char initdb[PATH_MAX + 16];
        snprintf(initdb, sizeof(initdb), "%s/initdb", pg->bindir);
        char *argv[] = {initdb,
                        "-D",
                        pg->dir,
                        "-U",
                        "agora",
                        "--auth-local=trust",
                        "--auth-host=reject",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        NULL};
        int st = run(pg, argv);
        if (st != 0) {
            snprintf(err, errlen, "initdb failed (exit status %d); its output is in %s", st, pg->log);
            return -1;
        }
        /* Room for every thread of up to ~10 servers; a setting of the cluster, editable. */
        snprintf(path, sizeof(path), "%s/postgresql.conf", pg->dir);
        FILE *f = fopen(path, "a");
        if (!f || fputs("\n# agora up\nmax_connections = 200\n", f) < 0 || fclose(f) != 0) {
            snprintf(err, errlen, "cannot write %s", path);
            return -1;
        }
        pg->created = 1;
    }
    int argc = 0;
    add_arg(pg, &argc, "%s", "postgres");
    add_arg(pg, &argc, "%s", "-D");
    add_arg(pg, &argc, "%s", pg->dir);
    add_arg(pg, &argc, "%s", "-c");
    add_arg(pg, &argc, "listen_addresses=%s", "");
    add_arg(pg, &argc, "%s", "-c");
    add_arg(pg, &argc, "unix_socket_directories=%s", pg->dir);
    add_arg(pg, &argc, "%s", "-c");
    add_arg(pg, &argc, "unix_socket_permissions=%s", "0700");
    char enc[3 * PATH_MAX];
    url_encode(pg->dir, enc, sizeof(enc));
    snprintf(pg->url, sizeof(pg->url), "postgresql:///agora?host=%s&user=agora", enc);
    return 0;
}

int up_pg_wait_ready(const struct up_pg *pg, pid_t pid, unsigned ms, int *exited, char *err, size_t errlen)
{
    char conninfo[3 * PATH_MAX + 64];
    char enc[3 * PATH_MAX];
    url_encode(pg->dir, enc, sizeof(enc));
    snprintf(conninfo, sizeof(conninfo), "postgresql:///postgres?host=%s&user=agora&connect_timeout=2", enc);
    *exited = -1;
    uint64_t end = now_ms() + ms;
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            *exited = status;
            snprintf(err, errlen, "PostgreSQL exited at start (%s %d); its log is %s",
                     WIFEXITED(status) ? "status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), pg->log);
            return -1;
        }
        if (PQping(conninfo) == PQPING_OK)
            break;
        if (now_ms() >= end) {
            snprintf(err, errlen, "PostgreSQL does not accept connections after %u s; its log is %s", ms / 1000,
                     pg->log);
            return -1;
        }
        sleep_ms(100);
    }
    int rc = -1;
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        goto out;
    }
    r = PQexec(c, "SELECT 1 FROM pg_database WHERE datname = 'agora'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "PostgreSQL: %s", PQerrorMessage(c));
        goto out;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        r = PQexec(c, "CREATE DATABASE agora");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "PostgreSQL: CREATE DATABASE agora: %s", PQerrorMessage(c));
            goto out;
        }
    }
    rc = 0;
out:
    PQclear(r);
    PQfinish(c);
    if (rc < 0)
        err[strcspn(err, "\n")] = '\0';
    return rc;
}

void up_pg_free(struct up_pg *pg)
{
    for (int i = 0; i < UP_PG_MAX_ARGS; i++) {
        free(pg->argv[i]);
        pg->argv[i] = NULL;
    }
}

int up_db_ping(const char *url, unsigned ms, char *err, size_t errlen)
{
    uint64_t end = now_ms() + ms;
    for (;;) {
        PGPing p = PQping(url);
        if (p == PQPING_OK)
            return 0;
        if (p == PQPING_NO_ATTEMPT) {
            snprintf(err, errlen, "not a valid PostgreSQL URL");
            return -1;
        }
        if (now_ms() >= end) {
            snprintf(err, errlen, "%s after %u %s",
                     p == PQPING_REJECT ? "the server rejects connections (starting up or shutting down?)"
                                        : "no answer from the server",
                     ms % 1000 ? ms : ms / 1000, ms % 1000 ? "ms" : "s");
            return -1;
        }
        sleep_ms(200);
    }
}
