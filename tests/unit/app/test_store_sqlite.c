/* test_store_sqlite.c — the SQLite store on its own: schema migrations, counters, idempotency,
 * concurrent openers and writers, and the hybrid home timeline (fan-out on write + merge at read
 * time) checked against a naive query on random graphs, for live writes and for bulk loads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>

#include "app/store.h"

struct fx {
    char dir[64];
    char path[128];
    char url[160];
    struct store *st;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/agora-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[200];
    store_close(f->st);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static struct store *open_store(struct fx *f, int fanout_limit)
{
    char err[256] = "";
    struct store_options o = {.fanout_limit = fanout_limit};
    struct store *st = store_open(f->url, &o, err, sizeof err);
    if (st == NULL)
        fail_msg("store_open: %s", err);
    return st;
}

/* Runs a query returning one integer on a separate raw connection. */
static int64_t sql_int(struct fx *f, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *q;
    int64_t v = -1;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    if (sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static int64_t mkacct(struct store *st, const char *name)
{
    struct store_account a;
    assert_int_equal(store_account_create(st, name, name, "$argon2id$fake", 1000, &a), STORE_OK);
    return a.id;
}

static int64_t mkpost(struct store *st, int64_t author, const char *text, int64_t reply_to)
{
    int64_t id = 0;
    assert_int_equal(store_post_create(st, author, text, strlen(text), reply_to, NULL, NULL, 2000, &id), STORE_OK);
    assert_true(id > 0);
    return id;
}

static int get_acct(void *ctx, const struct store_account *a)
{
    *(struct store_account *)ctx = *a;
    return 0;
}

static struct store_account account_of(struct store *st, const char *name)
{
    struct store_account a;
    assert_int_equal(store_account_by_name(st, name, &a), STORE_OK);
    return a;
}

struct post_copy {
    struct store_post p;
    char text[600];
};

static int get_post(void *ctx, const struct store_post *p)
{
    struct post_copy *c = ctx;
    c->p = *p;
    memcpy(c->text, p->text, p->text_len);
    c->text[p->text_len] = '\0';
    c->p.text = c->text;
    return 0;
}

static struct post_copy post(struct store *st, int64_t id, int64_t viewer)
{
    struct post_copy c;
    memset(&c, 0, sizeof c);
    assert_int_equal(store_post_get(st, id, viewer, get_post, &c), STORE_OK);
    return c;
}

struct ids {
    int64_t v[4096];
    int n;
};

static int collect(void *ctx, const struct store_post *p)
{
    struct ids *ids = ctx;
    assert_true(ids->n < 4096);
    ids->v[ids->n++] = p->id;
    return 0;
}

static int collect_acct(void *ctx, const struct store_account *a)
{
    struct ids *ids = ctx;
    ids->v[ids->n++] = a->id;
    return 0;
}

static void test_migrations_idempotent(void **state)
{
    struct fx *f = *state;
    f->st = open_store(f, 0);
    int64_t id = mkacct(f->st, "alice");
    store_close(f->st);
    f->st = open_store(f, 0); /* second open: nothing to migrate, data intact */
    assert_int_equal(sql_int(f, "PRAGMA user_version"), 5);
    assert_int_equal(account_of(f->st, "alice").id, id);
    /* eight tables (throttle and post_ids included) and sqlite_sequence (sessions' AUTOINCREMENT) */
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"), 9);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sqlite_schema WHERE name = 'posts_unfanned'"), 1);
    sqlite3 *db;
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* Undoes migrations 5, 4 and 3 on the closed database at f->path: no post id mark, no throttle
 * table, sessions without id, last use or user agent, posts without idem_hash; user_version 2. */
static void downgrade_to_v2(struct fx *f)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "DROP TABLE post_ids; DROP TABLE throttle;"
                                  "CREATE TABLE sessions_v2 (token_hash BLOB PRIMARY KEY,"
                                  "  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
                                  "  created_at INTEGER NOT NULL) WITHOUT ROWID;"
                                  "INSERT INTO sessions_v2 SELECT token_hash, account_id, created_at FROM sessions;"
                                  "DROP TABLE sessions; ALTER TABLE sessions_v2 RENAME TO sessions;"
                                  "CREATE INDEX sessions_account ON sessions(account_id);"
                                  "ALTER TABLE posts DROP COLUMN idem_hash; PRAGMA user_version = 2",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
}

/* A database left at schema version 1 (the first release: posts_author held only (author, id)) is
 * brought to the current version on open: the covering index replaces it (2), sessions get ids
 * and posts a body hash (3), the throttle table appears (4), the post id mark is the highest id
 * (5), and the data reads back. */
static void test_migration_from_version_1(void **state)
{
    struct fx *f = *state;
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "alice");
    int64_t p[3] = {mkpost(f->st, a, "one", 0), mkpost(f->st, a, "two", 0), mkpost(f->st, a, "three", 0)};
    store_close(f->st);
    f->st = NULL;
    downgrade_to_v2(f);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "DROP INDEX posts_by_author; CREATE INDEX posts_author ON posts(author, id);"
                                  "PRAGMA user_version = 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sqlite_schema WHERE name = 'posts_by_author'"), 0);

    f->st = open_store(f, 0);
    assert_int_equal(sql_int(f, "PRAGMA user_version"), 5);
    assert_int_equal(sql_int(f, "SELECT last FROM post_ids"), p[2]);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sqlite_schema WHERE name = 'posts_author'"), 0);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sqlite_schema WHERE name = 'posts_by_author'"), 1);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM pragma_index_info('posts_by_author')"), 8);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sqlite_schema WHERE name = 'throttle'"), 1);
    struct ids got = {.n = 0};
    struct store_page pg = {0, 0, 20};
    assert_int_equal(store_posts_by_author(f->st, a, 0, &pg, collect, &got), STORE_OK);
    assert_int_equal(got.n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(got.v[i], p[2 - i]);
    assert_string_equal(post(f->st, p[1], 0).text, "two");
}

/* Version 2 → 5: sessions made before keep working (with an id, counted as used at the migration,
 * so an upgrade logs nobody out) and posts made with a key before keep answering that key
 * whatever the body (their body hash is unknown). */
static void test_migration_from_version_2(void **state)
{
    struct fx *f = *state;
    struct store_account a;
    struct store_session s;
    unsigned char th[STORE_TOKEN_HASH_LEN], hb[STORE_BODY_HASH_LEN];
    int64_t id = 0, again = 0;
    memset(th, 3, sizeof th);
    memset(hb, 4, sizeof hb);
    f->st = open_store(f, 0);
    int64_t alice = mkacct(f->st, "alice");
    assert_int_equal(store_session_create(f->st, th, alice, "old", 5000), STORE_OK);
    assert_int_equal(store_post_create(f->st, alice, "keyed", 5, 0, "k1", NULL, 6000, &id), STORE_OK);
    store_close(f->st);
    f->st = NULL;
    downgrade_to_v2(f);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM pragma_table_info('sessions') WHERE name = 'last_used_at'"), 0);

    time_t before = time(NULL);
    f->st = open_store(f, 0);
    assert_int_equal(sql_int(f, "PRAGMA user_version"), 5);
    int64_t now = (int64_t)time(NULL) * 1000;
    /* created long ago (5000 ms after the epoch), yet alive: last use = the migration */
    assert_int_equal(store_session_account(f->st, th, now, &a, &s), STORE_OK);
    assert_int_equal(a.id, alice);
    assert_true(s.id > 0);
    assert_int_equal(s.created_at, 5000);
    assert_true(s.last_used_at >= (int64_t)before * 1000 && s.last_used_at <= now + 1000);
    assert_string_equal(s.user_agent, "");
    assert_int_equal(store_post_create(f->st, alice, "other", 5, 0, "k1", hb, 7000, &again), STORE_OK);
    assert_int_equal(again, id);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM posts"), 1);
}

static void test_newer_schema_refused(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    f->st = open_store(f, 0);
    store_close(f->st);
    f->st = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_null(store_open(f->url, NULL, err, sizeof err));
    assert_non_null(strstr(err, "schema version 99 is newer"));
}

static void test_bad_urls(void **state)
{
    char err[256];
    assert_null(store_open("mysql://x", NULL, err, sizeof err));
    assert_non_null(strstr(err, "unsupported database URL"));
    assert_null(store_open("sqlite:", NULL, err, sizeof err));
    assert_null(store_open("sqlite:/nonexistent-dir/x/y.db", NULL, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
}

struct opener {
    const char *url;
    int ok;
};

static void *open_thread(void *arg)
{
    struct opener *o = arg;
    char err[256];
    struct store *st = store_open(o->url, NULL, err, sizeof err);
    o->ok = st != NULL;
    if (st != NULL) {
        int64_t n = -1;
        o->ok = store_count_accounts(st, &n) == STORE_OK && n == 0;
    }
    store_close(st);
    return NULL;
}

static void test_concurrent_open_new_file(void **state)
{
    struct fx *f = *state;
    pthread_t t[3];
    struct opener o[3];
    for (int i = 0; i < 3; i++) {
        o[i].url = f->url;
        o[i].ok = 0;
        assert_int_equal(pthread_create(&t[i], NULL, open_thread, &o[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_true(o[i].ok);
    }
    assert_int_equal(sql_int(f, "PRAGMA user_version"), 5);
}

static void test_accounts_and_sessions(void **state)
{
    struct fx *f = *state;
    struct store_account a;
    char hash[STORE_HASH_MAX];
    unsigned char th[STORE_TOKEN_HASH_LEN], other[STORE_TOKEN_HASH_LEN];
    f->st = open_store(f, 0);
    assert_int_equal(store_account_create(f->st, "Alice", "Alice A", "$hash$", 1234, &a), STORE_OK);
    assert_int_equal(a.id, 1);
    assert_string_equal(a.username, "Alice");
    assert_int_equal(a.created_at, 1234);
    assert_int_equal(store_account_create(f->st, "aLICE", "x", "$hash$", 1, &a), STORE_CONFLICT);
    assert_int_equal(store_account_by_name(f->st, "ALICE", &a), STORE_OK);
    assert_string_equal(a.username, "Alice");
    assert_string_equal(a.display_name, "Alice A");
    assert_int_equal(store_account_by_name(f->st, "bob", &a), STORE_NOT_FOUND);
    assert_int_equal(store_account_credentials(f->st, "alice", &a, hash), STORE_OK);
    assert_string_equal(hash, "$hash$");
    assert_int_equal(store_account_credentials(f->st, "nobody", &a, hash), STORE_NOT_FOUND);

    memset(th, 7, sizeof th);
    memset(other, 8, sizeof other);
    assert_int_equal(store_session_create(f->st, th, 1, NULL, 99), STORE_OK);
    assert_int_equal(store_session_account(f->st, th, 100, &a, NULL), STORE_OK);
    assert_int_equal(a.id, 1);
    assert_int_equal(store_session_account(f->st, other, 100, &a, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_session_delete(f->st, th), STORE_OK);
    assert_int_equal(store_session_account(f->st, th, 100, &a, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_session_delete(f->st, th), STORE_OK);
    int64_t n = 0;
    assert_int_equal(store_count_accounts(f->st, &n), STORE_OK);
    assert_int_equal(n, 1);
}

#define DAY_MS (24LL * 60 * 60 * 1000)

struct sess_ids {
    int64_t v[16];
    char ua[16][STORE_USER_AGENT_MAX + 1];
    int n;
};

static int collect_sess(void *ctx, const struct store_session *s)
{
    struct sess_ids *ids = ctx;
    assert_true(ids->n < 16);
    snprintf(ids->ua[ids->n], sizeof ids->ua[0], "%s", s->user_agent);
    ids->v[ids->n++] = s->id;
    return 0;
}

static struct sess_ids sessions_of(struct store *st, int64_t account, int64_t now)
{
    struct sess_ids ids = {.n = 0};
    struct store_page pg = {0, 0, 16};
    assert_int_equal(store_session_list(st, account, now, &pg, collect_sess, &ids), STORE_OK);
    return ids;
}

/* Sliding expiry (default 30 days, and a configured lifetime), touch, listing, revoking one, all
 * but one, and the purge of expired sessions at log-in. */
static void test_session_expiry_and_revocation(void **state)
{
    struct fx *f = *state;
    struct store_account a;
    struct store_session s;
    unsigned char t1[STORE_TOKEN_HASH_LEN], t2[STORE_TOKEN_HASH_LEN], t3[STORE_TOKEN_HASH_LEN];
    int64_t t0 = 1000 * DAY_MS, n = -1;
    memset(t1, 1, sizeof t1);
    memset(t2, 2, sizeof t2);
    memset(t3, 3, sizeof t3);
    f->st = open_store(f, 0);
    int64_t alice = mkacct(f->st, "alice"), bob = mkacct(f->st, "bob");
    /* control characters and anything not printable ASCII become '?'; the length is capped */
    char ua[400];
    memset(ua, 'u', sizeof ua - 1);
    ua[sizeof ua - 1] = '\0';
    memcpy(ua, "Firefox\t\xc3\xa9", 10);
    assert_int_equal(store_session_create(f->st, t1, alice, ua, t0), STORE_OK);
    assert_int_equal(store_session_create(f->st, t2, alice, NULL, t0 + 1), STORE_OK);
    assert_int_equal(store_session_create(f->st, t3, bob, "curl", t0 + 2), STORE_OK);

    assert_int_equal(store_session_account(f->st, t1, t0 + 30 * DAY_MS - 1, &a, &s), STORE_OK);
    assert_int_equal(a.id, alice);
    assert_int_equal(s.created_at, t0);
    assert_int_equal(s.last_used_at, t0);
    assert_int_equal(strlen(s.user_agent), STORE_USER_AGENT_MAX);
    assert_memory_equal(s.user_agent, "Firefox???uu", 12);
    int64_t id1 = s.id;
    /* 30 days without use: gone, though still in the table */
    assert_int_equal(store_session_account(f->st, t1, t0 + 30 * DAY_MS, &a, &s), STORE_NOT_FOUND);
    /* a use on day 20 moves the end to day 50; touching never goes back in time */
    assert_int_equal(store_session_touch(f->st, id1, t0 + 20 * DAY_MS), STORE_OK);
    assert_int_equal(store_session_touch(f->st, id1, t0 + 10 * DAY_MS), STORE_OK);
    assert_int_equal(store_session_account(f->st, t1, t0 + 50 * DAY_MS - 1, &a, &s), STORE_OK);
    assert_int_equal(s.last_used_at, t0 + 20 * DAY_MS);
    assert_int_equal(store_session_account(f->st, t1, t0 + 50 * DAY_MS, &a, NULL), STORE_NOT_FOUND);

    /* listing: alice's live sessions only, newest first */
    struct sess_ids l = sessions_of(f->st, alice, t0 + 2 * DAY_MS);
    assert_int_equal(l.n, 2);
    assert_true(l.v[0] > l.v[1]);
    assert_int_equal(l.v[1], id1);
    assert_string_equal(l.ua[0], "");
    l = sessions_of(f->st, alice, t0 + 40 * DAY_MS); /* t2 expired on day 30 */
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0], id1);

    /* a log-in purges the account's expired sessions (t2), not other accounts' (t3); ids are
     * never reused, even the highest one after it is deleted */
    unsigned char t9[STORE_TOKEN_HASH_LEN];
    memset(t9, 9, sizeof t9);
    assert_int_equal(store_session_create(f->st, t9, bob, "curl", t0 + 2), STORE_OK);
    assert_int_equal(store_session_account(f->st, t9, t0 + 2, &a, &s), STORE_OK);
    int64_t highest = s.id;
    assert_int_equal(highest, sql_int(f, "SELECT max(id) FROM sessions"));
    assert_int_equal(store_session_revoke(f->st, bob, highest), STORE_OK);
    assert_int_equal(store_session_create(f->st, t9, bob, "curl", t0 + 2), STORE_OK);
    assert_int_equal(store_session_account(f->st, t9, t0 + 2, &a, &s), STORE_OK);
    assert_int_equal(s.id, highest + 1);
    assert_int_equal(store_session_revoke(f->st, bob, s.id), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sessions"), 3);
    unsigned char t4[STORE_TOKEN_HASH_LEN];
    memset(t4, 4, sizeof t4);
    assert_int_equal(store_session_create(f->st, t4, alice, "new", t0 + 40 * DAY_MS), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sessions"), 3);
    assert_int_equal(store_session_account(f->st, t2, t0, &a, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_session_account(f->st, t3, t0, &a, NULL), STORE_OK);

    /* revoking: only one's own sessions */
    assert_int_equal(store_session_account(f->st, t3, t0, &a, &s), STORE_OK);
    assert_int_equal(store_session_revoke(f->st, alice, s.id), STORE_NOT_FOUND);
    assert_int_equal(store_session_account(f->st, t3, t0, &a, NULL), STORE_OK);
    assert_int_equal(store_session_revoke(f->st, alice, id1), STORE_OK);
    assert_int_equal(store_session_account(f->st, t1, t0 + 40 * DAY_MS, &a, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_session_revoke(f->st, alice, id1), STORE_NOT_FOUND);

    /* all but one */
    unsigned char t5[STORE_TOKEN_HASH_LEN];
    memset(t5, 5, sizeof t5);
    assert_int_equal(store_session_create(f->st, t5, alice, "five", t0 + 40 * DAY_MS), STORE_OK);
    assert_int_equal(store_session_account(f->st, t5, t0 + 40 * DAY_MS, &a, &s), STORE_OK);
    assert_int_equal(store_session_revoke_others(f->st, alice, s.id, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_session_account(f->st, t4, t0 + 40 * DAY_MS, &a, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_session_account(f->st, t5, t0 + 40 * DAY_MS, &a, NULL), STORE_OK);
    assert_int_equal(store_session_account(f->st, t3, t0, &a, NULL), STORE_OK);
    assert_int_equal(store_session_revoke_others(f->st, alice, 0, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_session_account(f->st, t5, t0 + 40 * DAY_MS, &a, NULL), STORE_NOT_FOUND);
    store_close(f->st);

    /* a configured lifetime of one day */
    char err[256];
    struct store_options o = {.session_ttl_ms = DAY_MS};
    f->st = store_open(f->url, &o, err, sizeof err);
    assert_non_null(f->st);
    assert_int_equal(store_session_account(f->st, t3, t0 + 2 + DAY_MS - 1, &a, NULL), STORE_OK);
    assert_int_equal(store_session_account(f->st, t3, t0 + 2 + DAY_MS, &a, NULL), STORE_NOT_FOUND);
}

static void test_password_set_revokes_others(void **state)
{
    struct fx *f = *state;
    struct store_account a;
    struct store_session s;
    char hash[STORE_HASH_MAX];
    unsigned char t1[STORE_TOKEN_HASH_LEN], t2[STORE_TOKEN_HASH_LEN], t3[STORE_TOKEN_HASH_LEN];
    int64_t n = -1;
    memset(t1, 1, sizeof t1);
    memset(t2, 2, sizeof t2);
    memset(t3, 3, sizeof t3);
    f->st = open_store(f, 0);
    int64_t alice = mkacct(f->st, "alice"), bob = mkacct(f->st, "bob");
    assert_int_equal(store_session_create(f->st, t1, alice, NULL, 10), STORE_OK);
    assert_int_equal(store_session_create(f->st, t2, alice, NULL, 10), STORE_OK);
    assert_int_equal(store_session_create(f->st, t3, bob, NULL, 10), STORE_OK);
    assert_int_equal(store_session_account(f->st, t2, 20, &a, &s), STORE_OK);
    assert_int_equal(store_password_set(f->st, alice, "$new$", s.id, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_account_credentials(f->st, "alice", &a, hash), STORE_OK);
    assert_string_equal(hash, "$new$");
    assert_int_equal(store_account_credentials(f->st, "bob", &a, hash), STORE_OK);
    assert_string_equal(hash, "$argon2id$fake");
    assert_int_equal(store_session_account(f->st, t1, 20, &a, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_session_account(f->st, t2, 20, &a, NULL), STORE_OK);
    assert_int_equal(store_session_account(f->st, t3, 20, &a, NULL), STORE_OK);
    assert_int_equal(store_password_set(f->st, 999, "$x$", 0, &n), STORE_NOT_FOUND);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM sessions"), 2);
}

/* An Idempotency-Key is bound to the hash of the body it first came with. */
static void test_idempotency_body_hash(void **state)
{
    struct fx *f = *state;
    unsigned char h1[STORE_BODY_HASH_LEN], h2[STORE_BODY_HASH_LEN];
    int64_t id1 = 0, id2 = 0, id3 = 0;
    memset(h1, 1, sizeof h1);
    memset(h2, 2, sizeof h2);
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "alice");
    assert_int_equal(store_post_create(f->st, a, "one", 3, 0, "k", h1, 1, &id1), STORE_OK);
    assert_int_equal(store_post_create(f->st, a, "one", 3, 0, "k", h1, 2, &id2), STORE_OK);
    assert_int_equal(id2, id1);
    assert_int_equal(store_post_create(f->st, a, "two", 3, 0, "k", h2, 3, &id3), STORE_CONFLICT);
    assert_int_equal(id3, id1);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM posts"), 1);
    assert_int_equal(account_of(f->st, "alice").posts_count, 1);
    assert_string_equal(post(f->st, id1, 0).text, "one");
}

/* A new database file, and the WAL and shared-memory files SQLite makes next to it, are 0600
 * whatever the umask lets through. */
static void test_file_permissions(void **state)
{
    struct fx *f = *state;
    char p[200];
    struct stat st;
    mode_t old = umask(022);
    f->st = open_store(f, 0);
    mkacct(f->st, "alice");
    umask(old);
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        assert_int_equal(stat(p, &st), 0);
        if ((st.st_mode & 0777) != 0600)
            fail_msg("%s has mode %o", p, (unsigned)(st.st_mode & 0777));
    }
}

static void test_follow_counters(void **state)
{
    struct fx *f = *state;
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "a"), b = mkacct(f->st, "b"), c = mkacct(f->st, "c");
    assert_int_equal(store_follow(f->st, a, b, 1, 5), STORE_OK);
    assert_int_equal(store_follow(f->st, a, b, 1, 5), STORE_OK); /* idempotent */
    assert_int_equal(store_follow(f->st, c, b, 1, 5), STORE_OK);
    assert_int_equal(store_follow(f->st, a, 999, 1, 5), STORE_NOT_FOUND);
    assert_int_equal(account_of(f->st, "b").followers_count, 2);
    assert_int_equal(account_of(f->st, "a").following_count, 1);
    struct ids ids = {.n = 0};
    struct store_page pg = {0, 0, 10};
    assert_int_equal(store_account_list(f->st, STORE_FOLLOWERS, b, &pg, collect_acct, &ids), STORE_OK);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.v[0], c); /* highest id first */
    assert_int_equal(ids.v[1], a);
    pg.max_id = c;
    ids.n = 0;
    assert_int_equal(store_account_list(f->st, STORE_FOLLOWERS, b, &pg, collect_acct, &ids), STORE_OK);
    assert_int_equal(ids.n, 1);
    assert_int_equal(ids.v[0], a);
    assert_int_equal(store_follow(f->st, a, b, 0, 5), STORE_OK);
    assert_int_equal(store_follow(f->st, a, b, 0, 5), STORE_OK);
    assert_int_equal(account_of(f->st, "b").followers_count, 1);
    assert_int_equal(account_of(f->st, "a").following_count, 0);
    ids.n = 0;
    pg.max_id = 0;
    assert_int_equal(store_account_list(f->st, STORE_FOLLOWING, c, &pg, collect_acct, &ids), STORE_OK);
    assert_int_equal(ids.n, 1);
    assert_int_equal(ids.v[0], b);
    struct store_account got;
    ids.n = 0;
    assert_int_equal(store_account_list(f->st, STORE_FOLLOWING, c, &pg, get_acct, &got), STORE_OK);
    assert_string_equal(got.username, "b");
    assert_int_equal(got.followers_count, 1);
}

static void test_posts_likes_replies(void **state)
{
    struct fx *f = *state;
    int64_t id;
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "a"), b = mkacct(f->st, "b");
    int64_t p1 = mkpost(f->st, a, "first", 0);
    int64_t r1 = mkpost(f->st, b, "reply one", p1);
    int64_t r2 = mkpost(f->st, a, "reply two", p1);
    assert_int_equal(store_post_create(f->st, a, "x", 1, 12345, NULL, NULL, 1, &id), STORE_NOT_FOUND);
    struct post_copy c = post(f->st, p1, 0);
    assert_string_equal(c.text, "first");
    assert_int_equal(c.p.replies_count, 2);
    assert_int_equal(c.p.reply_to, 0);
    assert_string_equal(c.p.author.username, "a");
    assert_int_equal(c.p.author.posts_count, 2);
    assert_int_equal(post(f->st, r1, 0).p.reply_to, p1);

    assert_int_equal(store_like(f->st, p1, b, 1, 9), STORE_OK);
    assert_int_equal(store_like(f->st, p1, b, 1, 9), STORE_OK);
    assert_int_equal(store_like(f->st, p1, a, 1, 9), STORE_OK);
    assert_int_equal(store_like(f->st, 999, a, 1, 9), STORE_NOT_FOUND);
    assert_int_equal(post(f->st, p1, b).p.likes_count, 2);
    assert_int_equal(post(f->st, p1, b).p.liked, 1);
    assert_int_equal(post(f->st, p1, 0).p.liked, 0);
    assert_int_equal(store_like(f->st, p1, b, 0, 9), STORE_OK);
    assert_int_equal(store_like(f->st, p1, b, 0, 9), STORE_OK);
    assert_int_equal(post(f->st, p1, b).p.likes_count, 1);
    assert_int_equal(post(f->st, p1, b).p.liked, 0);

    struct ids ids = {.n = 0};
    struct store_page pg = {0, 0, 10};
    assert_int_equal(store_replies(f->st, p1, 0, &pg, collect, &ids), STORE_OK);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.v[0], r1); /* oldest first */
    assert_int_equal(ids.v[1], r2);
    pg.since_id = r1;
    ids.n = 0;
    assert_int_equal(store_replies(f->st, p1, 0, &pg, collect, &ids), STORE_OK);
    assert_int_equal(ids.n, 1);
    assert_int_equal(ids.v[0], r2);

    /* deleting: only the author; counters follow; replies survive with reply_to cleared */
    assert_int_equal(store_post_delete(f->st, p1, b), STORE_FORBIDDEN);
    assert_int_equal(store_post_delete(f->st, 999, a), STORE_NOT_FOUND);
    assert_int_equal(store_post_delete(f->st, r2, a), STORE_OK);
    assert_int_equal(post(f->st, p1, 0).p.replies_count, 1);
    assert_int_equal(store_post_delete(f->st, p1, a), STORE_OK);
    assert_int_equal(store_post_get(f->st, p1, 0, get_post, &c), STORE_NOT_FOUND);
    assert_int_equal(post(f->st, r1, 0).p.reply_to, 0);
    assert_int_equal(account_of(f->st, "a").posts_count, 0);
    assert_int_equal(account_of(f->st, "b").posts_count, 1);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM likes"), 0);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM home"), 1);
}

static void test_idempotency_key(void **state)
{
    struct fx *f = *state;
    int64_t id1 = 0, id2 = 0, id3 = 0, id4 = 0;
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "a"), b = mkacct(f->st, "b");
    assert_int_equal(store_post_create(f->st, a, "hello", 5, 0, "key-1", NULL, 1, &id1), STORE_OK);
    assert_int_equal(store_post_create(f->st, a, "hello again", 11, 0, "key-1", NULL, 2, &id2), STORE_OK);
    assert_int_equal(id1, id2);
    assert_int_equal(store_post_create(f->st, b, "hello", 5, 0, "key-1", NULL, 3, &id3), STORE_OK);
    assert_true(id3 != id1); /* keys are per author */
    assert_int_equal(store_post_create(f->st, a, "hello", 5, 0, "key-2", NULL, 4, &id4), STORE_OK);
    assert_true(id4 != id1);
    assert_int_equal(account_of(f->st, "a").posts_count, 2);
    assert_string_equal(post(f->st, id1, 0).text, "hello");
}

struct writer {
    const char *url;
    int64_t author;
    int ok;
};

static void *write_thread(void *arg)
{
    struct writer *w = arg;
    char err[256], text[32];
    struct store *st = store_open(w->url, NULL, err, sizeof err);
    w->ok = st != NULL;
    for (int i = 0; w->ok && i < 25; i++) {
        int64_t id;
        snprintf(text, sizeof text, "post %d", i);
        w->ok = store_post_create(st, w->author, text, strlen(text), 0, NULL, NULL, i, &id) == STORE_OK &&
                store_like(st, 1, w->author, i % 2 == 0, i) == STORE_OK;
    }
    store_close(st);
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    struct fx *f = *state;
    pthread_t t[4];
    struct writer w[4];
    char name[16];
    f->st = open_store(f, 0);
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "w%d", i);
        w[i].author = mkacct(f->st, name);
    }
    mkpost(f->st, 1, "target", 0);
    for (int i = 0; i < 4; i++) {
        w[i].url = f->url;
        assert_int_equal(pthread_create(&t[i], NULL, write_thread, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(w[i].ok);
    }
    assert_int_equal(sql_int(f, "SELECT count(*) FROM posts"), 101);
    assert_int_equal(sql_int(f, "SELECT sum(posts_count) FROM accounts"), 101);
    assert_int_equal(sql_int(f, "SELECT likes_count FROM posts WHERE id = 1"), 4); /* last op (i=24) likes */
}

/* ---- the home timeline against a naive query ---- */

/* Reads owner's whole timeline with the naive definition: own posts and followees' posts. */
static void naive_home(struct fx *f, sqlite3 *db, int64_t owner, struct ids *out)
{
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT id FROM posts WHERE author = ?1 OR author IN"
                                        " (SELECT followee FROM follows WHERE follower = ?1) ORDER BY id DESC",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(q, 1, owner);
    out->n = 0;
    while (sqlite3_step(q) == SQLITE_ROW)
        out->v[out->n++] = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
}

/* Reads owner's timeline through the store, page by page (limit 3, max_id = last id). */
static void paged_home(struct store *st, int64_t owner, struct ids *out)
{
    struct store_page pg = {0, 0, 3};
    out->n = 0;
    for (;;) {
        int before = out->n;
        assert_int_equal(store_home(st, owner, &pg, collect, out), STORE_OK);
        if (out->n - before < 3)
            break;
        pg.max_id = out->v[out->n - 1];
    }
}

static void check_timelines(struct fx *f, struct store *st, int users)
{
    sqlite3 *db;
    struct ids *want = malloc(sizeof *want), *got = malloc(sizeof *got);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    for (int u = 1; u <= users; u++) {
        naive_home(f, db, u, want);
        paged_home(st, u, got);
        assert_int_equal(got->n, want->n);
        for (int i = 0; i < want->n; i++)
            assert_int_equal(got->v[i], want->v[i]);
    }
    sqlite3_close(db);
    free(want);
    free(got);
}

static void test_home_matches_naive_random_graph(void **state)
{
    struct fx *f = *state;
    enum { USERS = 14, STEPS = 700 };
    char name[16];
    uint64_t x = 42;
    int64_t posts[STEPS];
    int nposts = 0;
    f->st = open_store(f, 3); /* tiny fan-out limit: both paths and the crossing are exercised */
    for (int u = 1; u <= USERS; u++) {
        snprintf(name, sizeof name, "u%d", u);
        mkacct(f->st, name);
    }
    for (int step = 0; step < STEPS; step++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(x >> 33);
        int64_t a = 1 + r % USERS, b = 1 + (r / USERS) % USERS;
        switch ((r >> 20) % 8) {
        case 0:
        case 1:
        case 2:
            if (a != b)
                assert_int_equal(store_follow(f->st, a, b, 1, step), STORE_OK);
            break;
        case 3:
            assert_int_equal(store_follow(f->st, a, b, 0, step), STORE_OK);
            break;
        case 4:
        case 5:
        case 6: {
            int64_t parent = nposts > 0 && r % 5 == 0 ? posts[r % nposts] : 0;
            struct post_copy pc;
            if (parent != 0 && store_post_get(f->st, parent, 0, get_post, &pc) != STORE_OK)
                parent = 0;
            posts[nposts] = mkpost(f->st, a, "p", parent);
            nposts++;
            break;
        }
        case 7:
            if (nposts > 0) {
                int64_t victim = posts[r % nposts];
                struct post_copy c;
                if (store_post_get(f->st, victim, 0, get_post, &c) == STORE_OK)
                    assert_int_equal(store_post_delete(f->st, victim, c.p.author.id), STORE_OK);
            }
            break;
        }
        if (step % 100 == 99)
            check_timelines(f, f->st, USERS);
    }
    /* both delivery paths were used */
    assert_true(sql_int(f, "SELECT count(*) FROM posts WHERE fanout = 0") > 0);
    assert_true(sql_int(f, "SELECT count(*) FROM posts WHERE fanout = 1") > 0);
    /* counters equal the truth */
    assert_int_equal(sql_int(f, "SELECT count(*) FROM accounts a WHERE followers_count !="
                                " (SELECT count(*) FROM follows WHERE followee = a.id) OR following_count !="
                                " (SELECT count(*) FROM follows WHERE follower = a.id) OR posts_count !="
                                " (SELECT count(*) FROM posts WHERE author = a.id)"),
                     0);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM posts p WHERE replies_count !="
                                " (SELECT count(*) FROM posts r WHERE r.reply_to = p.id)"),
                     0);
}

static void test_bulk_load_matches_naive(void **state)
{
    struct fx *f = *state;
    enum { USERS = 30 };
    char name[16];
    int64_t id;
    struct store_bulk_stats stats;
    f->st = open_store(f, 4);
    assert_int_equal(store_bulk_begin(f->st, 0), STORE_OK);
    for (int u = 1; u <= USERS; u++) {
        snprintf(name, sizeof name, "user%d", u);
        assert_int_equal(store_bulk_account(f->st, name, name, "$h$", u, &id), STORE_OK);
        assert_int_equal(id, u);
    }
    for (int u = 1; u <= USERS; u++) /* user v is followed by everyone below v*v/8-ish */
        for (int v = 1; v <= USERS; v++)
            if (u != v && (u * 7 + v * 3) % (v + 1) == 0)
                assert_int_equal(store_bulk_follow(f->st, u, v, 1), STORE_OK);
    for (int j = 0; j < 3; j++)
        for (int u = 1; u <= USERS; u++)
            assert_int_equal(store_bulk_post(f->st, u, "seeded", 100 + j * USERS + u, &id), STORE_OK);
    assert_int_equal(store_bulk_end(f->st, 1, &stats), STORE_OK);
    assert_int_equal(stats.accounts, USERS);
    assert_int_equal(stats.posts, 3 * USERS);
    assert_int_equal(stats.follows, sql_int(f, "SELECT count(*) FROM follows"));
    assert_true(stats.big_accounts > 0);
    assert_true(stats.fanout_posts > 0 && stats.fanout_posts < stats.posts);
    assert_int_equal(stats.home_rows, sql_int(f, "SELECT count(*) FROM home"));
    check_timelines(f, f->st, USERS);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM accounts a WHERE followers_count !="
                                " (SELECT count(*) FROM follows WHERE followee = a.id) OR posts_count != 3"),
                     0);
    /* live writes on top of the loaded graph keep the timelines exact */
    mkpost(f->st, 1, "live", 0);
    mkpost(f->st, USERS, "live", 0);
    assert_int_equal(store_follow(f->st, 2, USERS, 1, 5), STORE_OK);
    assert_int_equal(store_follow(f->st, 3, 1, 0, 5), STORE_OK);
    check_timelines(f, f->st, USERS);
    /* a second load is refused unless wiping */
    assert_int_equal(store_bulk_begin(f->st, 0), STORE_CONFLICT);
    assert_int_equal(store_bulk_begin(f->st, 1), STORE_OK);
    assert_int_equal(store_bulk_end(f->st, 1, NULL), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM accounts"), 0);
}

static void test_bulk_rollback(void **state)
{
    struct fx *f = *state;
    int64_t id;
    f->st = open_store(f, 0);
    assert_int_equal(store_bulk_begin(f->st, 0), STORE_OK);
    assert_int_equal(store_bulk_account(f->st, "x", "x", "$h$", 1, &id), STORE_OK);
    assert_int_equal(store_bulk_account(f->st, "X", "x", "$h$", 1, &id), STORE_CONFLICT);
    assert_int_equal(store_bulk_end(f->st, 0, NULL), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM accounts"), 0);
    /* the connection is usable normally afterwards */
    mkacct(f->st, "y");
    assert_int_equal(sql_int(f, "SELECT count(*) FROM accounts"), 1);
}

static void test_lists_by_author(void **state)
{
    struct fx *f = *state;
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "a"), b = mkacct(f->st, "b"), p[5];
    for (int i = 0; i < 5; i++) {
        p[i] = mkpost(f->st, a, "x", 0);
        mkpost(f->st, b, "y", 0);
    }
    struct ids ids = {.n = 0};
    struct store_page pg = {p[3], p[0], 10};
    assert_int_equal(store_posts_by_author(f->st, a, 0, &pg, collect, &ids), STORE_OK);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.v[0], p[2]);
    assert_int_equal(ids.v[1], p[1]);
    pg = (struct store_page){0, 0, 2};
    ids.n = 0;
    assert_int_equal(store_posts_by_author(f->st, a, 0, &pg, collect, &ids), STORE_OK);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.v[0], p[4]);
}

/* Throttles: a fixed window per key, charged all-or-none, exact at the limit, shared by two
 * connections (two servers on one file), given back and forgotten, expired windows pruned. */
/* Post ids: a rowid would be max(rowid) + 1, giving a deleted newest post's id to the next post;
 * the post_ids mark (migration 5) is raised by every delete and posts are inserted above it. */
static void test_post_id_mark(void **state)
{
    struct fx *f = *state;
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "a");
    int64_t p1 = mkpost(f->st, a, "one", 0), p2 = mkpost(f->st, a, "two", 0);
    assert_int_equal(sql_int(f, "SELECT last FROM post_ids"), 0); /* only deletes raise it */
    assert_int_equal(store_post_delete(f->st, p2, a), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT last FROM post_ids"), p2);
    assert_int_equal(store_post_delete(f->st, p1, a), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT last FROM post_ids"), p2);
    int64_t p3 = mkpost(f->st, a, "three", 0);
    assert_int_equal(p3, p2 + 1);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM post_ids"), 1);
}

static void test_throttle(void **state)
{
    struct fx *f = *state;
    f->st = open_store(f, 0);
    struct store *other = open_store(f, 0);
    struct store_throttle acct = {"login/account/alice", 3, 60000}, addr = {"login/address/10.0.0.1", 5, 120000};
    struct store_throttle both[2] = {acct, addr};
    int64_t retry = -1;
    /* three charges spread over the two connections, then the account is full */
    assert_int_equal(store_throttle_take(f->st, both, 2, 1000, &retry), STORE_OK);
    assert_int_equal(store_throttle_take(other, both, 2, 2000, &retry), STORE_OK);
    assert_int_equal(store_throttle_take(f->st, both, 2, 3000, &retry), STORE_OK);
    assert_int_equal(store_throttle_take(other, both, 2, 4000, &retry), STORE_LIMITED);
    assert_int_equal(retry, 1000 + 60000 - 4000); /* the window began at the first charge */
    /* all or none: the refused attempt did not charge the address */
    assert_int_equal(sql_int(f, "SELECT count FROM throttle WHERE key = 'login/address/10.0.0.1'"), 3);
    /* the address alone still has room for two */
    assert_int_equal(store_throttle_take(f->st, &addr, 1, 5000, &retry), STORE_OK);
    assert_int_equal(store_throttle_take(f->st, &addr, 1, 5000, &retry), STORE_OK);
    assert_int_equal(store_throttle_take(f->st, &addr, 1, 5000, &retry), STORE_LIMITED);
    assert_int_equal(retry, 1000 + 120000 - 5000);
    /* giving one back makes room for one; forgetting clears the account */
    assert_int_equal(store_throttle_give(other, addr.key, 0), STORE_OK);
    assert_int_equal(store_throttle_take(f->st, &addr, 1, 6000, &retry), STORE_OK);
    assert_int_equal(store_throttle_give(other, acct.key, 1), STORE_OK);
    assert_int_equal(store_throttle_give(other, "no/such/key", 1), STORE_OK);
    assert_int_equal(store_throttle_give(other, "no/such/key", 0), STORE_OK);
    assert_int_equal(store_throttle_take(f->st, &acct, 1, 7000, &retry), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count FROM throttle WHERE key = 'login/account/alice'"), 1);
    /* a limit <= 0 is skipped */
    struct store_throttle off = {"signup/address/x", 0, 1000};
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_throttle_take(f->st, &off, 1, 8000, &retry), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM throttle WHERE key = 'signup/address/x'"), 0);
    /* when the windows end the rows are pruned and counting starts again */
    assert_int_equal(store_throttle_take(f->st, both, 2, 1000 + 120000, &retry), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM throttle"), 2);
    assert_int_equal(sql_int(f, "SELECT count FROM throttle WHERE key = 'login/address/10.0.0.1'"), 1);
    store_close(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_version_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_version_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_expiry_and_revocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_set_revokes_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_body_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_permissions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_open_new_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accounts_and_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_posts_likes_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_home_matches_naive_random_graph, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk_load_matches_naive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists_by_author, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_id_mark, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
