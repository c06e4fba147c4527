/* up_pg.h — the PostgreSQL of `agora up`: a private cluster it creates and runs, or a check of
 * an existing one.
 *
 * `agora up --postgres` keeps a cluster in DATA/postgres (the PGDATA directory, created with
 * initdb on the first run and reused after): the server listens on a Unix socket in that
 * directory only (no TCP), the superuser is "agora", trusted on the socket only (TCP would be
 * rejected even if enabled), and a database "agora" exists. Its output goes to
 * DATA/postgres.log. PostgreSQL's binaries are those of the newest version under
 * /usr/lib/postgresql/VERSION/bin (or the version that made the cluster, if it is installed);
 * the environment variable AGORA_PG_LIB replaces /usr/lib/postgresql (tests use it). PostgreSQL
 * refuses to run as root: when `agora up` runs as root, initdb and the server run as the
 * `postgres` system user, which owns DATA/postgres, and DATA is made group-postgres, mode 0710
 * (the postgres user may pass through it, no one else may read it). Settings are PostgreSQL's
 * durable defaults (fsync, synchronous_commit on) except max_connections = 200, written to the
 * cluster's postgresql.conf at initdb (editable there); the socket's place and listening on no
 * TCP address are given on the command line at each start, so they always hold.
 *
 * up.c supervises the server process like its other children (restarted with back-off, stopped
 * last with a fast shutdown): it runs argv in a child after up_pg_child_setup.
 *
 * Functions return 0 or -1 with a message in err, unless said otherwise. Single-threaded. */
#ifndef AGORA_CLI_UP_PG_H
#define AGORA_CLI_UP_PG_H
#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#define UP_PG_MAX_ARGS 16

struct up_pg {
    char bindir[PATH_MAX];
    char dir[PATH_MAX];          /* absolute: PGDATA and the socket's directory */
    char log[PATH_MAX + 16];     /* DATA/postgres.log */
    char url[3 * PATH_MAX + 64]; /* postgresql:///agora?host=DIR&user=agora, DIR %-encoded */
    char exe[PATH_MAX + 16];     /* BINDIR/postgres */
    char *argv[UP_PG_MAX_ARGS];  /* the server's command line (strings owned by this struct) */
    int drop;                    /* run as uid/gid (up runs as root) */
    uid_t uid;
    gid_t gid;
    int created; /* initdb ran in up_pg_prepare */
};

/* Finds the binaries and the user, prepares DATA (which must exist, absolute or relative) and
 * DATA/postgres, and runs initdb there if the cluster does not exist yet (blocking, its output
 * in the log). Fills pg. Clear errors: PostgreSQL not installed, no postgres user, a directory
 * that is neither empty nor a cluster. On failure pg may hold allocations: up_pg_free it. */
int up_pg_prepare(struct up_pg *pg, const char *data, char *err, size_t errlen);

/* In a forked child, before exec: output to the log, working directory pg->dir, and the
 * postgres user's identity when pg->drop. Returns 0 or -1 (a message on stderr). */
int up_pg_child_setup(const struct up_pg *pg);

/* Waits until the server accepts connections (PQping), at most ms, while pid (the server, a
 * child of this process) runs: if it exits, its status goes to *exited (else *exited = -1) and
 * -1 is returned. Then creates the database "agora" if it does not exist. */
int up_pg_wait_ready(const struct up_pg *pg, pid_t pid, unsigned ms, int *exited, char *err, size_t errlen);

/* Prints the last lines of the log to stderr (after a failure). */
void up_pg_log_tail(const struct up_pg *pg, int lines);

/* Frees what pg holds (not pg). */
void up_pg_free(struct up_pg *pg);

/* Waits up to ms until the database at url (a PostgreSQL URL, for `agora up --db`) accepts
 * connections. Returns 0, or -1 with the reason in err. */
int up_db_ping(const char *url, unsigned ms, char *err, size_t errlen);

/* Copies url to out with any password replaced by "***" (for printing). */
void up_db_redact(const char *url, char *out, size_t outlen);

#endif
