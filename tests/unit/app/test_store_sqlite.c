/* test_store_sqlite.c — what is particular to the SQLite store, looked at with SQLite itself:
 * schema migrations (from every released version, once, refusing a newer one), WAL mode, file
 * permissions, several openers of a new file, rowids (the first account is 1, bulk rows get one
 * id each, session ids come from AUTOINCREMENT, post ids never reuse a deleted newest one), and
 * the tables behind the contract: the home table holds exactly the fan-out invariant of
 * docs/TIMELINES.md, a deleted post leaves no likes or home rows, throttle rows are pruned.
 * The store.h contract itself (every operation's outcomes, on any store) is test_store.c. */
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
    assert_null(store_open("sqlite:", NULL, err, sizeof err));
    assert_null(store_open("sqlite:/nonexistent-dir/x/y.db", NULL, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
}

/* store_redact (store.c): a URL's password never reaches a message or a log line. */
static void check_redact(const char *url, const char *text, size_t size, const char *want)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    store_redact(url, buf, size);
    assert_string_equal(buf, want);
}

static void test_redact(void **state)
{
    const char *u = "postgres://bob:s3cr@t@db.example:5432/agora?sslmode=require";
    check_redact(u, u, 256, "postgres://bob:***@db.example:5432/agora?sslmode=require");
    check_redact(u, "token \"s3cr@t\" twice: s3cr@t.", 256, "token \"***\" twice: ***.");
    /* "***" is longer than "pw": the text is cut short, never showing a part of the secret */
    check_redact("postgres://u:pw@h/d", "pw pw pw", 9, "*** *** ");
    check_redact("postgresql:///a?host=/tmp&password=pw%41&user=u", "URI \"?password=pw%41&user=u\"", 256,
                 "URI \"?password=***&user=u\"");
    check_redact("postgres:///d?sslpassword=k3y&host=/x", "sslpassword=k3y", 256, "sslpassword=***");
    check_redact("postgres://bob@host/db", "postgres://bob@host/db", 256, "postgres://bob@host/db");
    check_redact("postgres://bob:@host/db", "postgres://bob:@host/db", 256, "postgres://bob:@host/db");
    check_redact("postgres://host/db?x=a@b:c", "a@b:c", 256, "a@b:c"); /* '@' after the authority */
    check_redact("sqlite:data/agora.db", "sqlite:data/agora.db", 256, "sqlite:data/agora.db");
    char err[256];
    assert_null(store_open("pgsql://bob:s3cr@t@host/db", NULL, err, sizeof err));
    assert_null(strstr(err, "s3cr@t"));
    assert_non_null(strstr(err, "pgsql://bob:***@host/db"));
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

/* Rowids: a new file's first account is 1, the bulk loader gets one id per row in order, and
 * session ids come from AUTOINCREMENT (the highest one deleted is not given again: next is +1). */
static void test_rowids(void **state)
{
    struct fx *f = *state;
    struct store_account a;
    struct store_session s;
    unsigned char t9[STORE_TOKEN_HASH_LEN];
    int64_t id;
    f->st = open_store(f, 0);
    assert_int_equal(store_bulk_begin(f->st, 0), STORE_OK);
    for (int u = 1; u <= 5; u++) {
        char name[16];
        snprintf(name, sizeof name, "user%d", u);
        assert_int_equal(store_bulk_account(f->st, name, name, "$h$", u, &id), STORE_OK);
        assert_int_equal(id, u);
    }
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(store_bulk_post(f->st, 1, "p", i, &id), STORE_OK);
        assert_int_equal(id, i);
    }
    assert_int_equal(store_bulk_end(f->st, 1, NULL), STORE_OK);
    assert_int_equal(store_bulk_begin(f->st, 1), STORE_OK); /* wiped: rowids start again */
    assert_int_equal(store_bulk_end(f->st, 1, NULL), STORE_OK);
    assert_int_equal(store_account_create(f->st, "Alice", "Alice A", "$hash$", 1234, &a), STORE_OK);
    assert_int_equal(a.id, 1);
    memset(t9, 9, sizeof t9);
    assert_int_equal(store_session_create(f->st, t9, a.id, "curl", 2), STORE_OK);
    assert_int_equal(store_session_account(f->st, t9, 2, &a, &s), STORE_OK);
    int64_t highest = s.id;
    assert_int_equal(highest, sql_int(f, "SELECT max(id) FROM sessions"));
    assert_int_equal(store_session_revoke(f->st, a.id, highest), STORE_OK);
    assert_int_equal(store_session_create(f->st, t9, a.id, "curl", 3), STORE_OK);
    assert_int_equal(store_session_account(f->st, t9, 3, &a, &s), STORE_OK);
    assert_int_equal(s.id, highest + 1);
}

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

/* A deleted post leaves no likes and no home rows behind (the author's and the followers'). */
static void test_delete_leaves_no_rows(void **state)
{
    struct fx *f = *state;
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "a"), b = mkacct(f->st, "b");
    assert_int_equal(store_follow(f->st, b, a, 1, 1), STORE_OK);
    int64_t p1 = mkpost(f->st, a, "first", 0);
    int64_t r1 = mkpost(f->st, b, "reply", p1);
    assert_int_equal(store_like(f->st, p1, b, 1, 2), STORE_OK);
    assert_int_equal(store_like(f->st, r1, a, 1, 2), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM home"), 3); /* p1 twice, r1 once */
    assert_int_equal(store_post_delete(f->st, p1, a), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM likes"), 1);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM home"), 1);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM posts WHERE reply_to IS NOT NULL"), 0);
    assert_int_equal(store_post_delete(f->st, r1, b), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM likes"), 0);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM home"), 0);
}

/* The home table holds exactly the fan-out invariant of docs/TIMELINES.md: (owner, post) for the
 * owner's own posts and for every fanout = 1 post of an account the owner follows; and each post's
 * fanout flag is the rule applied when it was written. Random graph, fan-out limit 3 (both paths
 * and threshold crossings), interleaved follows, unfollows, posts, replies and deletes, then a
 * bulk load on top of the same rule. */
static void check_home_table(struct fx *f)
{
    /* rows missing from home, and rows home should not have */
    assert_int_equal(sql_int(f, "SELECT count(*) FROM posts p JOIN accounts o ON o.id = p.author"
                                " OR (p.fanout = 1 AND EXISTS (SELECT 1 FROM follows WHERE follower = o.id"
                                " AND followee = p.author))"
                                " WHERE NOT EXISTS (SELECT 1 FROM home WHERE owner = o.id AND post_id = p.id)"),
                     0);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM home h JOIN posts p ON p.id = h.post_id"
                                " WHERE h.owner <> p.author AND NOT (p.fanout = 1 AND EXISTS (SELECT 1 FROM follows"
                                " WHERE follower = h.owner AND followee = p.author))"),
                     0);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM home WHERE post_id NOT IN (SELECT id FROM posts)"), 0);
}

static void test_home_table_invariant(void **state)
{
    struct fx *f = *state;
    enum { USERS = 14, STEPS = 700 };
    char name[16];
    uint64_t x = 42;
    int64_t posts[STEPS];
    int nposts = 0;
    f->st = open_store(f, 3);
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
            char sql[200]; /* the rule: fanned out when the author has fewer than 3 followers */
            snprintf(
                sql, sizeof sql,
                "SELECT fanout = ((SELECT count(*) FROM follows WHERE followee = %lld) < 3) FROM posts WHERE id = %lld",
                (long long)a, (long long)posts[nposts]);
            assert_int_equal(sql_int(f, sql), 1);
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
            check_home_table(f);
    }
    /* both delivery paths were used */
    assert_true(sql_int(f, "SELECT count(*) FROM posts WHERE fanout = 0") > 0);
    assert_true(sql_int(f, "SELECT count(*) FROM posts WHERE fanout = 1") > 0);
    /* a bulk load decides fan-out by the final follower counts, with the same invariant */
    assert_int_equal(store_bulk_begin(f->st, 1), STORE_OK);
    int64_t id, ids[USERS + 1];
    for (int u = 1; u <= USERS; u++) {
        snprintf(name, sizeof name, "b%d", u);
        assert_int_equal(store_bulk_account(f->st, name, name, "$h$", u, &ids[u]), STORE_OK);
    }
    for (int u = 1; u <= USERS; u++)
        for (int v = 1; v <= USERS; v++)
            if (u != v && (u * 7 + v * 3) % (v + 1) == 0)
                assert_int_equal(store_bulk_follow(f->st, ids[u], ids[v], 1), STORE_OK);
    for (int u = 1; u <= USERS; u++)
        assert_int_equal(store_bulk_post(f->st, ids[u], "seeded", 100 + u, &id), STORE_OK);
    assert_int_equal(store_bulk_end(f->st, 1, NULL), STORE_OK);
    check_home_table(f);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM posts p WHERE fanout <>"
                                " ((SELECT followers_count FROM accounts WHERE id = p.author) < 3)"),
                     0);
    assert_true(sql_int(f, "SELECT count(*) FROM posts WHERE fanout = 0") > 0);
    mkpost(f->st, ids[1], "live", 0);
    assert_int_equal(store_follow(f->st, ids[2], ids[USERS], 1, 5), STORE_OK);
    check_home_table(f);
}

/* Throttle rows: only running windows are kept (expired ones are deleted as they are met), and a
 * counter with limit <= 0 writes no row. */
static void test_throttle_rows(void **state)
{
    struct fx *f = *state;
    int64_t retry;
    f->st = open_store(f, 0);
    struct store_throttle acct = {"login/account/alice", 3, 60000}, addr = {"login/address/10.0.0.1", 5, 120000};
    struct store_throttle both[2] = {acct, addr}, off = {"signup/address/x", 0, 1000};
    assert_int_equal(store_throttle_take(f->st, both, 2, 1000, &retry), STORE_OK);
    assert_int_equal(store_throttle_take(f->st, both, 2, 2000, &retry), STORE_OK);
    assert_int_equal(store_throttle_take(f->st, both, 2, 3000, &retry), STORE_OK);
    assert_int_equal(store_throttle_take(f->st, both, 2, 4000, &retry), STORE_LIMITED);
    assert_int_equal(sql_int(f, "SELECT count FROM throttle WHERE key = 'login/address/10.0.0.1'"), 3);
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_throttle_take(f->st, &off, 1, 8000, &retry), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM throttle WHERE key = 'signup/address/x'"), 0);
    assert_int_equal(store_throttle_take(f->st, &addr, 1, 1000 + 60000, &retry), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM throttle"), 1); /* the account's window ended */
    assert_int_equal(store_throttle_take(f->st, both, 2, 1000 + 120000, &retry), STORE_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM throttle"), 2);
    assert_int_equal(sql_int(f, "SELECT count FROM throttle WHERE key = 'login/address/10.0.0.1'"), 1);
}

/* SQLite's store_read_begin/end is one read transaction: the reads in between see one snapshot,
 * whatever another connection commits meanwhile; afterwards the new state is seen. */
static void test_read_snapshot(void **state)
{
    struct fx *f = *state;
    struct store_account b;
    int64_t n = 0, id = 0;
    f->st = open_store(f, 0);
    int64_t a = mkacct(f->st, "a");
    mkpost(f->st, a, "one", 0);
    struct store *w = open_store(f, 0);
    assert_int_equal(store_read_begin(f->st), STORE_OK);
    assert_int_equal(account_of(f->st, "a").posts_count, 1);
    assert_int_equal(store_post_create(w, a, "two", 3, 0, NULL, NULL, 2, &id), STORE_OK);
    assert_int_equal(store_account_create(w, "b", "b", "$h$", 3, &b), STORE_OK);
    assert_int_equal(account_of(f->st, "a").posts_count, 1);
    assert_int_equal(store_count_accounts(f->st, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_read_end(f->st);
    assert_int_equal(account_of(f->st, "a").posts_count, 2);
    assert_int_equal(store_count_accounts(f->st, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(store_follow(f->st, a, b.id, 1, 4), STORE_OK);
    assert_int_equal(account_of(w, "b").followers_count, 1);
    store_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_version_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_version_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_permissions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_urls, setup, teardown),
        cmocka_unit_test(test_redact),
        cmocka_unit_test_setup_teardown(test_concurrent_open_new_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rowids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_id_mark, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_leaves_no_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_home_table_invariant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_snapshot, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
