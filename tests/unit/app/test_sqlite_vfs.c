/* test_sqlite_vfs.c — the "agora" SQLite VFS (src/app/sqlite_vfs.c) against real files and real
 * processes: what one connection commits through it is in the file for a plain unix-VFS
 * connection at once; a reader that keeps its memory maps sees what other processes wrote after
 * every kind of change (new pages in the WAL, a checkpoint that grows the database past the map,
 * a WAL started over at offset 0); a transaction that spilled frames and rolled back leaves
 * nothing behind; and the database passes integrity_check throughout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "app/sqlite_vfs.h"

struct fx {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/agora-vfs-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg != NULL ? msg : "?");
}

/* Opens path through vfs (NULL: SQLite's default unix VFS) in WAL mode, with the memory map on. */
static sqlite3 *open_db(const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    exec_ok(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;"
                "PRAGMA mmap_size=1073741824");
    return db;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static const char *query_text(sqlite3 *db, const char *sql, char *out, size_t size)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

/* Inserts rows [from, to) of n-byte blobs whose bytes are derived from the row id, in one
 * transaction. */
static void insert_rows(sqlite3 *db, int from, int to, int n)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE r(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM r WHERE i + 1 < %d) "
             "INSERT INTO t(id, v) SELECT i, printf('%%X', i * 7919) || printf('%%.%dc', char(65 + i %% 26)) FROM r",
             from, to, n);
    exec_ok(db, "BEGIN IMMEDIATE");
    exec_ok(db, sql);
    exec_ok(db, "COMMIT");
}

/* What every row [0, n) of insert_rows() adds up to: a checksum over ids and contents. */
static int64_t expected_sum(int n, int len)
{
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        char hex[32], first;
        int h = snprintf(hex, sizeof hex, "%X", i * 7919);
        first = hex[0];
        sum += (int64_t)i * 31 + (h + len) * 7 + first + (65 + i % 26);
    }
    return sum;
}

#define SUM_SQL "SELECT coalesce(sum(id * 31 + length(v) * 7 + unicode(v) + unicode(substr(v, -1))), 0) FROM t"

static void test_registers_once(void **state)
{
    (void)state;
    const char *a = sqlite_vfs_agora(), *b = sqlite_vfs_agora();
    assert_non_null(a);
    assert_string_equal(a, SQLITE_VFS_AGORA);
    assert_ptr_equal(a, b);
    assert_non_null(sqlite3_vfs_find(SQLITE_VFS_AGORA));
    assert_ptr_not_equal(sqlite3_vfs_find(NULL), sqlite3_vfs_find(SQLITE_VFS_AGORA)); /* not the default */
}

/* A commit of several hundred KiB of frames (several gathered writes) is in the WAL file as soon
 * as COMMIT returns: a connection through the plain unix VFS reads every byte of it. */
static void test_commit_is_in_the_file(void **state)
{
    struct fx *f = *state;
    sqlite3 *a = open_db(f->path, sqlite_vfs_agora());
    exec_ok(a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    insert_rows(a, 0, 300, 3000); /* ~300 pages: about ten 120 KiB writes */
    sqlite3 *plain = open_db(f->path, NULL);
    assert_int_equal(query_int(plain, "SELECT count(*) FROM t"), 300);
    assert_int_equal(query_int(plain, SUM_SQL), expected_sum(300, 3000));
    char ok[64];
    assert_string_equal(query_text(plain, "PRAGMA integrity_check", ok, sizeof ok), "ok");
    /* the WAL holds all of it, nothing has been checkpointed */
    struct stat st;
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_int_equal(stat(wal, &st), 0);
    assert_true(st.st_size > 300 * 3000);
    sqlite3_close(plain);
    sqlite3_close(a);
}

/* Runs insert_rows(from, to, len) and then a checkpoint of the given mode ("" for none) in a child
 * process through the agora VFS, and waits for it. */
static void child_writes(const char *path, int from, int to, int len, const char *checkpoint)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *db = open_db(path, sqlite_vfs_agora());
        insert_rows(db, from, to, len);
        if (checkpoint[0] != '\0') {
            int log = -1, done = -1;
            int mode = strcmp(checkpoint, "RESTART") == 0 ? SQLITE_CHECKPOINT_RESTART : SQLITE_CHECKPOINT_PASSIVE;
            if (sqlite3_wal_checkpoint_v2(db, "main", mode, &log, &done) != SQLITE_OK || log != done)
                _exit(2);
        }
        _exit(sqlite3_close(db) == SQLITE_OK ? 0 : 3);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* The reader keeps its maps for its whole life while another process writes, checkpoints (the
 * database file grows from a few pages to megabytes, far past the reader's first map) and starts
 * the WAL over (new frames at offsets the reader has already read). After each step the reader
 * sees exactly what was committed. */
static void test_reader_follows_other_processes(void **state)
{
    struct fx *f = *state;
    sqlite3 *r = open_db(f->path, sqlite_vfs_agora());
    exec_ok(r, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    insert_rows(r, 0, 10, 100);
    assert_int_equal(query_int(r, SUM_SQL), expected_sum(10, 100));
    struct {
        int to;
        const char *checkpoint;
    } steps[] = {
        {200, ""},         /* new frames in the WAL only */
        {400, "PASSIVE"},  /* all of it copied into the database file: it grows past the map */
        {2400, "PASSIVE"}, /* megabytes more */
        {2600, "RESTART"}, /* everything copied; the next writer starts the WAL over */
        {2700, ""},        /* ... here: frames at offsets the reader read before */
        {2800, "PASSIVE"},
    };
    int from = 10;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        child_writes(f->path, from, steps[i].to, 1500, steps[i].checkpoint);
        from = steps[i].to;
        int64_t want = expected_sum(10, 100) - expected_sum(10, 1500) + expected_sum(from, 1500);
        assert_int_equal(query_int(r, "SELECT count(*) FROM t"), from);
        assert_int_equal(query_int(r, SUM_SQL), want);
    }
    char ok[64];
    assert_string_equal(query_text(r, "PRAGMA integrity_check", ok, sizeof ok), "ok");
    sqlite3_close(r);
}

/* A transaction larger than the page cache spills frames into the WAL before its end; rolled
 * back, none of it shows, and the next transaction writes over those frames correctly. */
static void test_spilled_transaction_rolled_back(void **state)
{
    struct fx *f = *state;
    sqlite3 *a = open_db(f->path, sqlite_vfs_agora());
    exec_ok(a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); PRAGMA cache_size=10");
    insert_rows(a, 0, 5, 100);
    exec_ok(a, "BEGIN IMMEDIATE");
    exec_ok(a, "WITH RECURSIVE r(i) AS (SELECT 1000 UNION ALL SELECT i + 1 FROM r WHERE i < 1400) "
               "INSERT INTO t(id, v) SELECT i, printf('%.3000c', 'x') FROM r");
    exec_ok(a, "ROLLBACK");
    insert_rows(a, 5, 50, 2000);
    sqlite3 *plain = open_db(f->path, NULL);
    assert_int_equal(query_int(plain, "SELECT count(*) FROM t"), 50);
    assert_int_equal(query_int(plain, SUM_SQL), expected_sum(5, 100) + expected_sum(50, 2000) - expected_sum(5, 2000));
    char ok[64];
    assert_string_equal(query_text(plain, "PRAGMA integrity_check", ok, sizeof ok), "ok");
    sqlite3_close(plain);
    sqlite3_close(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registers_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_is_in_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_follows_other_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spilled_transaction_rolled_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
