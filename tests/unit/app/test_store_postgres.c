/* test_store_postgres.c — what is particular to the PostgreSQL store (the store contract itself
 * is tests/unit/app/test_store.c's): migrations when many servers open a new database at once,
 * one round trip per call, home pages without the merge until a post is unfanned, error mapping
 * (taken usernames, statement timeouts), reconnection after the server closed the connections or
 * was killed and restarted, a server that turns read-only (a standby after a failover: writes
 * busy, reads from it), exact counters and timelines under concurrent writers, one post for
 * concurrent creates with one Idempotency-Key, and the bulk loader's ids.
 *
 * The cluster: AGORA_TEST_PG when set (a superuser URL; each test creates its own database),
 * otherwise one started here with scripts/pg-temp.sh in a temporary directory and destroyed at
 * the end. Without PostgreSQL installed every test is skipped with a message. The test that
 * kills the postmaster runs only on a cluster started here. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <pthread.h>

#include "app/store.h"
#include "app/store_postgres.h"

static char cluster_url[512]; /* superuser URL of the cluster ("" = none) */
static char own_dir[64];      /* the cluster started here, "" if AGORA_TEST_PG's */
static int db_counter;

struct fx {
    char url[600];
    struct store *st;
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The URL of database name on the cluster (replaces the path of cluster_url). */
static void url_of(const char *name, char *out, size_t size)
{
    const char *scheme_end = strstr(cluster_url, "://");
    const char *path = strchr(scheme_end + 3, '/');
    const char *query = strchr(cluster_url, '?');
    snprintf(out, size, "%.*s/%s%s", (int)(path - cluster_url), cluster_url, name, query ? query : "");
}

/* Runs sql on url with a connection of our own; returns the first column of the first row as an
 * integer (0 when there is none). Fails the test on an error. */
static int64_t raw_int(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect %s: %s", url, PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    int64_t v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    PQfinish(c);
    return v;
}

static int cluster_start(void)
{
    const char *env = getenv("AGORA_TEST_PG");
    if (env != NULL && env[0] != '\0') {
        snprintf(cluster_url, sizeof cluster_url, "%s", env);
        return 0;
    }
    if (system("ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1") != 0)
        return 0;
    strcpy(own_dir, "/tmp/agora-pgunit-XXXXXX");
    if (mkdtemp(own_dir) == NULL)
        return -1;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "sh scripts/pg-temp.sh start %s -c fsync=off", own_dir);
    FILE *p = popen(cmd, "r");
    if (p == NULL || fgets(cluster_url, sizeof cluster_url, p) == NULL) {
        if (p != NULL)
            pclose(p);
        fprintf(stderr, "test_store_postgres: pg-temp.sh did not start a cluster\n");
        cluster_url[0] = '\0';
        return -1;
    }
    pclose(p);
    cluster_url[strcspn(cluster_url, "\n")] = '\0';
    return 0;
}

static void cluster_destroy(void)
{
    if (own_dir[0] != '\0') {
        char cmd[256];
        /* rm -rf as well: pg-temp.sh destroy stops early when the postmaster is dead */
        snprintf(cmd, sizeof cmd, "sh scripts/pg-temp.sh destroy %s; rm -rf %s", own_dir, own_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_store_postgres: could not destroy %s\n", own_dir);
    }
}

static int setup(void **state)
{
    if (cluster_url[0] == '\0') {
        print_message("skipped: no PostgreSQL (set AGORA_TEST_PG or install postgresql)\n");
        skip();
    }
    struct fx *f = calloc(1, sizeof *f);
    char name[64], sql[128];
    snprintf(name, sizeof name, "unit_%d_%d", (int)getpid(), ++db_counter);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    raw_int(cluster_url, sql);
    url_of(name, f->url, sizeof f->url);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f == NULL)
        return 0;
    store_close(f->st);
    free(f);
    return 0;
}

static struct store *open_url(const char *url, int fanout_limit)
{
    char err[512] = "";
    struct store_options o = {.fanout_limit = fanout_limit};
    struct store *st = store_open(url, &o, err, sizeof err);
    if (st == NULL)
        fail_msg("store_open: %s", err);
    return st;
}

static int64_t account(struct store *st, const char *name)
{
    struct store_account a;
    int rc = store_account_create(st, name, name, "hash", 1000, &a);
    if (rc != STORE_OK)
        fail_msg("account_create %s: %d %s", name, rc, store_errmsg(st));
    return a.id;
}

static int64_t post(struct store *st, int64_t author, const char *text)
{
    int64_t id = 0;
    int rc = store_post_create(st, author, text, strlen(text), 0, NULL, NULL, 2000, &id);
    if (rc != STORE_OK)
        fail_msg("post_create: %d %s", rc, store_errmsg(st));
    return id;
}

/* ---- migrations ---- */

struct opener {
    const char *url;
    pthread_barrier_t *go;
    int ok;
    char err[512];
};

static void *open_at_once(void *arg)
{
    struct opener *o = arg;
    pthread_barrier_wait(o->go);
    struct store *st = store_open(o->url, NULL, o->err, sizeof o->err);
    o->ok = st != NULL && store_ping(st) == STORE_OK;
    store_close(st);
    return NULL;
}

/* n stores opened on url at the same moment (a barrier), each on its own thread; fails the test
 * if any open fails */
static void open_at_once_n(const char *url, int n)
{
    pthread_t t[16];
    struct opener o[16];
    pthread_barrier_t go;
    assert_true(n <= 16);
    pthread_barrier_init(&go, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        o[i] = (struct opener){.url = url, .go = &go};
        pthread_create(&t[i], NULL, open_at_once, &o[i]);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        if (!o[i].ok)
            fail_msg("opener %d: %s", i, o[i].err);
    }
    pthread_barrier_destroy(&go);
}

static void test_concurrent_open_migrates_once(void **state)
{
    struct fx *f = *state;
    open_at_once_n(f->url, 12);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM schema_version"), 1);
    assert_int_equal(raw_int(f->url, "SELECT version FROM schema_version"), 3);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), 10);
    /* a newer schema is refused */
    raw_int(f->url, "UPDATE schema_version SET version = 99");
    char err[512] = "";
    assert_null(store_open(f->url, NULL, err, sizeof err));
    assert_non_null(strstr(err, "newer"));
}

/* ---- round trips ---- */

static int count_post(void *ctx, const struct store_post *p)
{
    (*(int *)ctx)++;
    return 0;
}

static int count_session(void *ctx, const struct store_session *s)
{
    (*(int *)ctx)++;
    return 0;
}

static int count_account(void *ctx, const struct store_account *a)
{
    (*(int *)ctx)++;
    return 0;
}

#define ONE_TRIP(st, call)                                                                                             \
    do {                                                                                                               \
        long before_ = store_postgres_round_trips(st);                                                                 \
        int rc_ = (call);                                                                                              \
        long trips_ = store_postgres_round_trips(st) - before_;                                                        \
        print_message("  %-60.60s rc %d, %ld round trip(s)\n", #call, rc_, trips_);                                    \
        assert_int_equal(trips_, 1);                                                                                   \
    } while (0)

static void test_one_round_trip_per_call(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 0);
    struct store_account acc;
    struct store_session sess;
    unsigned char tok[STORE_TOKEN_HASH_LEN] = {1}, body[STORE_BODY_HASH_LEN] = {2};
    struct store_page page = {.limit = 20};
    struct store_throttle thr[2] = {{"login/a", 5, 60000}, {"login/b", 5, 60000}};
    int64_t alice = 0, bob = 0, p1 = 0, p2 = 0, n = 0, retry = 0;
    int rows = 0;
    ONE_TRIP(st, store_account_create(st, "alice", "Alice", "h", 1, &acc));
    alice = acc.id;
    ONE_TRIP(st, store_account_create(st, "bob", "Bob", "h", 1, &acc));
    bob = acc.id;
    ONE_TRIP(st, store_account_by_name(st, "ALICE", &acc));
    ONE_TRIP(st, store_session_create(st, tok, alice, "ua", 10));
    ONE_TRIP(st, store_session_account(st, tok, 11, &acc, &sess));
    ONE_TRIP(st, store_session_touch(st, sess.id, 12));
    ONE_TRIP(st, store_session_list(st, alice, 13, &page, count_session, &rows));
    ONE_TRIP(st, store_follow(st, alice, bob, 1, 14));
    ONE_TRIP(st, store_account_list(st, STORE_FOLLOWERS, bob, &page, count_account, &rows));
    ONE_TRIP(st, store_post_create(st, bob, "hello", 5, 0, "k1", body, 15, &p1));
    ONE_TRIP(st, store_post_create(st, bob, "hello", 5, 0, "k1", body, 15, &p2));
    assert_int_equal(p1, p2);
    ONE_TRIP(st, store_post_create(st, alice, "re", 2, p1, NULL, NULL, 16, &p2));
    ONE_TRIP(st, store_post_get(st, p1, alice, count_post, &rows));
    ONE_TRIP(st, store_like(st, p1, alice, 1, 17));
    ONE_TRIP(st, store_like(st, p1, alice, 0, 18));
    ONE_TRIP(st, store_home(st, alice, &page, count_post, &rows));
    rows = 0;
    ONE_TRIP(st, store_session_home(st, tok, 18, &page, &acc, &sess, count_post, &rows));
    assert_int_equal(rows, 2); /* bob's post and alice's reply */
    ONE_TRIP(st, store_post_create_get(st, bob, "again", 5, 0, "k1", body, 18, &p2, count_post, &rows));
    assert_int_equal(p2, p1);
    assert_int_equal(rows, 3);
    ONE_TRIP(st, store_posts_by_author(st, bob, alice, &page, count_post, &rows));
    rows = 0;
    ONE_TRIP(st, store_posts_by_name(st, "BOB", alice, &page, &acc, count_post, &rows));
    assert_int_equal(acc.id, bob);
    assert_int_equal(rows, 1);
    ONE_TRIP(st, store_replies(st, p1, alice, &page, count_post, &rows));
    ONE_TRIP(st, store_post_delete(st, p2, alice));
    ONE_TRIP(st, store_follow(st, alice, bob, 0, 19));
    ONE_TRIP(st, store_throttle_take(st, thr, 2, 20, &retry));
    ONE_TRIP(st, store_throttle_give(st, "login/a", 0));
    ONE_TRIP(st, store_password_set(st, alice, "h2", sess.id, &n));
    ONE_TRIP(st, store_session_revoke_others(st, alice, 0, &n));
    ONE_TRIP(st, store_count_accounts(st, &n));
    ONE_TRIP(st, store_ping(st));
    assert_int_equal(store_read_begin(st), STORE_OK); /* no-op: no round trip */
    store_read_end(st);
}

/* ---- home pages without the merge (pg_session_home) ---- */

struct idlist {
    int n;
    int64_t id[8];
    int liked[8];
};

static int collect_ids(void *ctx, const struct store_post *p)
{
    struct idlist *l = ctx;
    if (l->n < 8) {
        l->id[l->n] = p->id;
        l->liked[l->n] = p->liked;
    }
    l->n++;
    return 0;
}

/* store_session_home of the session tok on st into l; returns the round trips it took. */
static long home_trips(struct store *st, const unsigned char *tok, struct idlist *l)
{
    struct store_account me;
    struct store_session sess;
    struct store_page page = {.limit = 10};
    memset(l, 0, sizeof *l);
    long before = store_postgres_round_trips(st);
    assert_int_equal(store_session_home(st, tok, 100, &page, &me, &sess, collect_ids, l), STORE_OK);
    return store_postgres_round_trips(st) - before;
}

/* A store that has not seen unfanned_authors non-empty reads home pages without the merge, in one
 * round trip, while the table is empty (the liked flags the owner's, as always). Once another store made a post
 * unfanned (merged at read time), the first page with rows says so and is read again with the merge (two trips, the
 * merged post in it), and every page after that merges at once (one trip). An empty page cannot say: it is read again
 * with the merge each time, and teaches nothing. */
static void test_home_merges_once_a_post_is_unfanned(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 2), *other = open_url(f->url, 2);
    unsigned char tb[STORE_TOKEN_HASH_LEN] = {7}, tx[STORE_TOKEN_HASH_LEN] = {8};
    int64_t a = account(st, "a"), b = account(st, "b"), x = account(st, "x"), big = account(st, "big");
    struct idlist l;
    assert_int_equal(store_follow(st, b, a, 1, 10), STORE_OK);
    assert_int_equal(store_follow(st, b, big, 1, 10), STORE_OK);
    assert_int_equal(store_follow(st, x, big, 1, 10), STORE_OK);
    assert_int_equal(store_session_create(st, tb, b, "ua", 50), STORE_OK);
    assert_int_equal(store_session_create(st, tx, x, "ua", 50), STORE_OK);
    int64_t p1 = post(st, a, "fanned"); /* a: 1 follower, under the limit of 2 */
    assert_int_equal(home_trips(st, tb, &l), 1);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.id[0], p1);
    assert_false(l.liked[0]);
    int64_t p0 = post(st, b, "b's own"); /* liked by x, who likes nothing b sees: b's flags stay 0 */
    assert_int_equal(store_like(st, p0, x, 1, 60), STORE_OK);
    assert_int_equal(home_trips(st, tb, &l), 1);
    assert_int_equal(l.n, 2);
    assert_false(l.liked[0] || l.liked[1]);
    assert_int_equal(store_like(st, p1, b, 1, 60), STORE_OK); /* b's own like: the flag without the merge */
    assert_int_equal(home_trips(st, tb, &l), 1);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.id[0], p0);
    assert_int_equal(l.id[1], p1);
    assert_false(l.liked[0]);
    assert_true(l.liked[1]);
    assert_int_equal(home_trips(st, tx, &l), 2); /* empty, and nothing is unfanned */
    assert_int_equal(l.n, 0);
    int64_t p2 = post(other, big, "merged"); /* big: 2 followers, so merged at read time */
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM posts WHERE NOT fanout"), 1);
    assert_int_equal(home_trips(st, tx, &l), 2); /* x has no home rows: the merge brings p2 */
    assert_int_equal(l.n, 1);
    assert_int_equal(l.id[0], p2);
    assert_int_equal(home_trips(st, tx, &l), 2); /* nothing learned */
    assert_int_equal(home_trips(st, tb, &l), 2); /* b's rows say an author is unfanned */
    assert_int_equal(l.n, 3);
    assert_int_equal(l.id[0], p2);
    assert_int_equal(l.id[1], p0);
    assert_int_equal(l.id[2], p1);
    assert_true(!l.liked[0] && !l.liked[1] && l.liked[2]);
    assert_int_equal(home_trips(st, tx, &l), 1); /* learned: the merge at once */
    assert_int_equal(l.n, 1);
    assert_int_equal(l.id[0], p2);
    int64_t p3 = post(other, a, "fanned again");
    assert_int_equal(home_trips(st, tb, &l), 1);
    assert_int_equal(l.n, 4);
    assert_int_equal(l.id[0], p3);
    assert_int_equal(l.id[1], p2);
    assert_int_equal(l.id[2], p0);
    assert_int_equal(l.id[3], p1);
    assert_true(l.liked[3]);
    store_close(other);
}

/* ---- write positions (read replicas) ---- */

/* store_position with opts.positions: after each write, a position at or after that write's
 * commit record (pg_walinspect finds the commit of the row's xid before it), growing, read in the
 * write's own round trip; none before a write, none without opts.positions; store_replay on a
 * primary says it is not a standby. */
static void test_write_positions(void **state)
{
    struct fx *f = *state;
    char err[512] = "", sql[400];
    struct store_options o = {.positions = 1};
    struct store *st = f->st = store_open(f->url, &o, err, sizeof err);
    if (st == NULL)
        fail_msg("store_open: %s", err);
    struct store_account acc;
    uint64_t p1 = 0, p2 = 0, p3 = 0;
    assert_int_equal(store_position(st, &p1), STORE_NOT_FOUND);
    int64_t before = raw_int(f->url, "SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint");
    ONE_TRIP(st, store_account_create(st, "alice", "Alice", "h", 1, &acc));
    assert_int_equal(store_position(st, &p1), STORE_OK);
    assert_true(p1 > (uint64_t)before);
    raw_int(f->url, "CREATE EXTENSION IF NOT EXISTS pg_walinspect");
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_get_wal_records_info('%X/%X', '%X/%X') WHERE record_type = 'COMMIT'"
             " AND xid::text = (SELECT xmin::text FROM accounts WHERE id = %lld)"
             " AND end_lsn <= '%X/%X'",
             (unsigned)((uint64_t)before >> 32), (unsigned)before, (unsigned)(p1 >> 32), (unsigned)p1,
             (long long)acc.id, (unsigned)(p1 >> 32), (unsigned)p1);
    assert_int_equal(raw_int(f->url, sql), 1);
    ONE_TRIP(st, store_account_by_name(st, "alice", &acc)); /* a read: the position stays */
    assert_int_equal(store_position(st, &p2), STORE_OK);
    assert_true(p2 == p1);
    ONE_TRIP(st, store_post_create(st, acc.id, "hello", 5, 0, NULL, NULL, 2, &(int64_t){0}));
    assert_int_equal(store_position(st, &p2), STORE_OK);
    assert_true(p2 > p1);
    assert_true(p2 <= (uint64_t)raw_int(f->url, "SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint"));
    ONE_TRIP(st, store_account_create(st, "ALICE", "x", "h", 1, &acc)); /* a failed write */
    assert_int_equal(store_position(st, &p3), STORE_OK);
    assert_true(p3 >= p2);
    struct store_replay rp = {.standby = 1, .replayed = 9};
    assert_int_equal(store_replay(st, &rp), STORE_OK);
    assert_int_equal(rp.standby, 0);
    assert_true(rp.replayed == 0);
    /* without opts.positions there is none */
    struct store *plain = open_url(f->url, 0);
    assert_int_equal(store_account_create(plain, "bob", "Bob", "h", 1, &acc), STORE_OK);
    assert_int_equal(store_position(plain, &p3), STORE_NOT_FOUND);
    store_close(plain);
}

/* ---- errors ---- */

static void test_error_mapping(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 0);
    struct store_account acc;
    int64_t alice = account(st, "Alice");
    /* usernames unique ignoring ASCII case only */
    assert_int_equal(store_account_create(st, "aLICE", "x", "h", 1, &acc), STORE_CONFLICT);
    assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK);
    assert_int_equal(acc.id, alice);
    assert_string_equal(acc.username, "Alice");
    assert_int_equal(store_account_create(st, "\xc3\x84x", "x", "h", 1, &acc), STORE_OK); /* Äx */
    assert_int_equal(store_account_create(st, "\xc3\xa4x", "x", "h", 1, &acc), STORE_OK); /* äx: not folded */
    assert_int_equal(store_account_by_name(st, "\xc3\xa4X", &acc), STORE_OK);
    assert_string_equal(acc.username, "\xc3\xa4x");
    /* unknown rows */
    int64_t id = 0;
    assert_int_equal(store_post_create(st, alice, "x", 1, 999999, NULL, NULL, 1, &id), STORE_NOT_FOUND);
    assert_int_equal(store_follow(st, alice, 999999, 1, 1), STORE_NOT_FOUND);
    assert_int_equal(store_like(st, 999999, alice, 1, 1), STORE_NOT_FOUND);
    assert_int_equal(store_post_delete(st, 999999, alice), STORE_NOT_FOUND);
    /* a post of no such author (the plain path: no reply, no key) writes nothing */
    int rows = 0;
    int64_t posts = raw_int(f->url, "SELECT count(*) FROM posts");
    assert_int_equal(store_post_create(st, 999999, "x", 1, 0, NULL, NULL, 1, &id), STORE_NOT_FOUND);
    assert_int_equal(store_post_create_get(st, 999999, "x", 1, 0, NULL, NULL, 1, &id, count_post, &rows),
                     STORE_NOT_FOUND);
    assert_int_equal(rows, 0);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM posts"), posts);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM home"), raw_int(f->url, "SELECT count(*) FROM posts"));
    /* a text PostgreSQL cannot store */
    assert_int_equal(store_post_create(st, alice, "a\0b", 3, 0, NULL, NULL, 1, &id), STORE_ERROR);
    /* a huge text (the API allows far less) goes through whole */
    size_t big = 1 << 20;
    char *text = malloc(big);
    for (size_t i = 0; i < big; i++)
        text[i] = (char)('a' + i % 26);
    assert_int_equal(store_post_create(st, alice, text, big, 0, NULL, NULL, 1, &id), STORE_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT length(text) FROM posts WHERE id = %lld", (long long)id);
    assert_int_equal(raw_int(f->url, sql), (int64_t)big);
    free(text);
}

/* A statement that waits on a lock past statement_timeout gives STORE_BUSY, not a hang; the
 * store goes on working once the lock is gone. */
static void test_statement_timeout_is_busy(void **state)
{
    struct fx *f = *state;
    char url[700];
    snprintf(url, sizeof url, "%s&options=-c%%20statement_timeout%%3D300", f->url);
    struct store *st = f->st = open_url(url, 0);
    int64_t alice = account(st, "alice"), id = 0;
    PGconn *c = PQconnectdb(f->url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "BEGIN"));
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT 1 FROM accounts WHERE id = %lld FOR UPDATE", (long long)alice);
    PQclear(PQexec(c, sql));
    double t0 = now_s();
    assert_int_equal(store_post_create(st, alice, "x", 1, 0, NULL, NULL, 1, &id), STORE_BUSY);
    double took = now_s() - t0;
    assert_true(took >= 0.25 && took < 3.0);
    assert_non_null(strstr(store_errmsg(st), "57014"));
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
    assert_int_equal(store_post_create(st, alice, "x", 1, 0, NULL, NULL, 1, &id), STORE_OK);
    assert_int_equal(raw_int(f->url, "SELECT posts_count FROM accounts WHERE username = 'alice'"), 1);
}

/* The server closes every connection (as at a restart): the next calls reconnect by themselves,
 * reads and writes alike, and nothing is lost. */
static void test_reconnect_after_terminate(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 0);
    struct store_account acc;
    int64_t alice = account(st, "alice");
    post(st, alice, "before");
    for (int round = 0; round < 3; round++) {
        raw_int(f->url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'agora' AND pid <> pg_backend_pid()");
        usleep(50 * 1000);
        if (round == 0)
            assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK);
        else if (round == 1)
            post(st, alice, "after"); /* a write that is not sent twice: the dead connection is seen first */
        else
            assert_int_equal(store_ping(st), STORE_OK);
    }
    assert_int_equal(raw_int(f->url, "SELECT posts_count FROM accounts WHERE username = 'alice'"), 2);
}

/* ---- a server that turns read-only (a standby after a failover) ---- */

/* The database name of url (its path up to the query). */
static void db_name(const char *url, char *out, size_t size)
{
    const char *p = strchr(strstr(url, "://") + 3, '/') + 1, *q = strchr(p, '?');
    snprintf(out, size, "%.*s", (int)(q ? q - p : (ptrdiff_t)strlen(p)), p);
}

/* Sets default_transaction_read_only of the test's database (on or RESET) and ends the store's
 * sessions, so that its next connection has the new setting. */
static void set_read_only(const char *url, int on)
{
    char name[128], sql[256];
    db_name(url, name, sizeof name);
    snprintf(sql, sizeof sql, "ALTER DATABASE %s %s", name,
             on ? "SET default_transaction_read_only = on" : "RESET default_transaction_read_only");
    raw_int(cluster_url, sql);
    raw_int(url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND application_name = 'agora' AND pid <> pg_backend_pid()");
}

/* raw_int(url, sql) once it equals want, polling for up to 3 s: a dropped connection's backend
 * leaves pg_stat_activity a moment after the client closed it. Returns the last value. */
static int64_t raw_int_soon(const char *url, const char *sql, int64_t want)
{
    int64_t v = raw_int(url, sql);
    for (int i = 0; i < 60 && v != want; i++) {
        usleep(50 * 1000);
        v = raw_int(url, sql);
    }
    return v;
}

static const char agora_backends[] = "SELECT count(*) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND application_name = 'agora'";
static const char agora_backend[] = "SELECT coalesce(max(pid), 0) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND application_name = 'agora'";

/* A plain URL on a read-only server (as a standby that a connection ends up on): reads work,
 * a write answers STORE_BUSY with 25006, nothing is written and the connection is dropped (not
 * kept for the next call); once the server accepts writes the very next write succeeds. */
static void test_read_only_server_gives_busy_and_drops_the_connection(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 0);
    struct store_account acc;
    int64_t alice = account(st, "alice"), id = 0;
    post(st, alice, "before");
    set_read_only(f->url, 1);
    assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK);
    assert_int_equal(acc.id, alice);
    assert_int_equal(store_post_create(st, alice, "ro", 2, 0, NULL, NULL, 3000, &id), STORE_BUSY);
    assert_non_null(strstr(store_errmsg(st), "25006"));
    assert_int_equal(store_follow(st, alice, alice + 1, 1, 3000), STORE_BUSY);
    assert_int_equal(raw_int_soon(f->url, agora_backends, 0), 0); /* dropped */
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM posts"), 1);
    set_read_only(f->url, 0);
    assert_int_equal(store_post_create(st, alice, "rw", 2, 0, NULL, NULL, 3000, &id), STORE_OK);
    assert_int_equal(raw_int(f->url, "SELECT posts_count FROM accounts WHERE username = 'alice'"), 2);
}

/* A URL with target_session_attrs=read-write while no server accepts writes (the switch of a
 * failover): reads go on over a connection to the read-only server; writes answer STORE_BUSY at
 * once (no waiting, nothing written); when the server takes writes again a write gets a
 * read-write connection within RECONNECT_PAUSE_MS, and reads leave the fallback too. */
static void test_read_write_url_reads_from_a_standby_during_the_switch(void **state)
{
    struct fx *f = *state;
    char url[700];
    snprintf(url, sizeof url, "%s%ctarget_session_attrs=read-write", f->url, strchr(f->url, '?') ? '&' : '?');
    struct store *st = f->st = open_url(url, 0);
    struct store_account acc;
    int64_t alice = account(st, "alice"), id = 0;
    post(st, alice, "before");
    set_read_only(f->url, 1);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK);
        assert_int_equal(acc.id, alice);
    }
    int64_t fallback = raw_int(f->url, agora_backend);
    assert_true(fallback > 0);
    double t0 = now_s();
    for (int i = 0; i < 20; i++) {
        assert_int_equal(store_post_create(st, alice, "ro", 2, 0, NULL, NULL, 3000, &id), STORE_BUSY);
        assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK); /* the fallback stays */
    }
    assert_true(now_s() - t0 < 2.0);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM posts"), 1);
    assert_int_equal(raw_int(f->url, agora_backend), fallback);
    /* writable again: reads leave the fallback within STANDBY_READS_MS (1 s) */
    char name[128], sql[192];
    db_name(f->url, name, sizeof name);
    snprintf(sql, sizeof sql, "ALTER DATABASE %s RESET default_transaction_read_only", name);
    raw_int(cluster_url, sql);
    usleep(1100 * 1000);
    assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK);
    int64_t primary = raw_int(f->url, agora_backend);
    assert_true(primary > 0 && primary != fallback);
    assert_int_equal(raw_int_soon(f->url, agora_backends, 1), 1);
    assert_int_equal(store_post_create(st, alice, "rw", 2, 0, NULL, NULL, 3000, &id), STORE_OK);
    /* and a write alone finds the writable server after RECONNECT_PAUSE_MS (250 ms) */
    set_read_only(f->url, 1);
    assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK); /* onto the fallback */
    raw_int(cluster_url, sql);
    usleep(300 * 1000);
    assert_int_equal(store_post_create(st, alice, "rw2", 3, 0, NULL, NULL, 3000, &id), STORE_OK);
    assert_int_equal(raw_int(f->url, "SELECT posts_count FROM accounts WHERE username = 'alice'"), 3);
}

static int64_t postmaster_pid(void)
{
    char path[128], line[32] = "";
    snprintf(path, sizeof path, "%s/data/postmaster.pid", own_dir);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return 0;
    if (fgets(line, sizeof line, fp) == NULL)
        line[0] = '\0';
    fclose(fp);
    return strtoll(line, NULL, 10);
}

/* The postmaster is killed mid-use: calls answer STORE_BUSY promptly (no hang), ping notices;
 * after a restart the same store works again without being reopened. */
static void test_server_killed_and_restarted(void **state)
{
    struct fx *f = *state;
    if (own_dir[0] == '\0') {
        print_message("skipped: needs a cluster of its own (AGORA_TEST_PG is set)\n");
        skip();
    }
    struct store *st = f->st = open_url(f->url, 0);
    struct store_account acc;
    int64_t alice = account(st, "alice"), id = 0;
    post(st, alice, "acknowledged");
    int64_t pid = postmaster_pid();
    assert_true(pid > 0);
    assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
    /* the backends notice their postmaster's death and exit at once */
    double t0 = now_s();
    int busy = 0;
    for (int i = 0; i < 50 && !busy; i++) {
        busy = store_ping(st) == STORE_BUSY;
        if (!busy)
            usleep(100 * 1000);
    }
    assert_true(busy);
    assert_int_equal(store_post_create(st, alice, "x", 1, 0, NULL, NULL, 1, &id), STORE_BUSY);
    assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_BUSY);
    assert_true(now_s() - t0 < 8.0);
    /* restart (the orphaned backends may take a moment to go) */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "sh scripts/pg-temp.sh start %s -c fsync=off >/dev/null 2>&1", own_dir);
    int started = 0;
    for (int i = 0; i < 20 && !started; i++) {
        started = system(cmd) == 0;
        if (!started)
            sleep(1);
    }
    assert_true(started);
    assert_int_equal(store_ping(st), STORE_OK);
    assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK);
    assert_int_equal(acc.posts_count, 1); /* the acknowledged post survived */
    post(st, alice, "after the restart");
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM posts"), 2);
}

/* The server stops answering in the middle of a call (the connection's backend frozen with
 * SIGSTOP, so statement_timeout cannot fire either). A read, and a write that may not be sent
 * twice, give up the connection after the client-side timeout (statement_timeout + 2 s) and answer
 * STORE_BUSY: the read is not sent again at once (a server that does not answer would make a new
 * connection wait too), and the calls right after answer STORE_BUSY without waiting. A moment
 * later the store works again on a new connection. (Whether that write was committed is unknown,
 * as after any lost connection: Idempotency-Key is the client's answer to that.) */
static int64_t backend_of(const char *url, const char *app)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT pid FROM pg_stat_activity WHERE application_name = '%s' ORDER BY backend_start DESC LIMIT 1", app);
    return raw_int(url, sql);
}

/* The store of the frozen-server tests: statement_timeout 300 ms (a reply timeout of 2.3 s) and
 * application_name "frozen" (backend_of). Skips the test without a cluster of its own. */
static struct store *frozen_store(struct fx *f)
{
    if (own_dir[0] == '\0') {
        print_message("skipped: needs a cluster of its own (AGORA_TEST_PG is set)\n");
        skip();
    }
    char url[700];
    snprintf(url, sizeof url, "%s&options=-c%%20statement_timeout%%3D300&application_name=frozen", f->url);
    return f->st = open_url(url, 0);
}

static void test_a_frozen_server_gives_busy_not_a_hang(void **state)
{
    struct fx *f = *state;
    struct store *st = frozen_store(f);
    struct store_account acc;
    int64_t alice = account(st, "alice"), id = 0;

    int64_t pid = backend_of(f->url, "frozen");
    assert_true(pid > 0);
    assert_int_equal(kill((pid_t)pid, SIGSTOP), 0);
    double t0 = now_s();
    int rc = store_account_by_name(st, "alice", &acc);
    double took = now_s() - t0;
    int rc2 = store_account_by_name(st, "alice", &acc);
    double took2 = now_s() - t0 - took;
    kill((pid_t)pid, SIGCONT);
    assert_int_equal(rc, STORE_BUSY);
    assert_true(took >= 2.0 && took < 4.0);
    assert_non_null(strstr(store_errmsg(st), "did not answer"));
    assert_int_equal(rc2, STORE_BUSY);
    assert_true(took2 < 0.2);
    usleep(300 * 1000); /* RECONNECT_PAUSE_MS */
    assert_int_equal(store_account_by_name(st, "alice", &acc), STORE_OK);

    int64_t pid2 = backend_of(f->url, "frozen");
    assert_true(pid2 > 0 && pid2 != pid);
    assert_int_equal(kill((pid_t)pid2, SIGSTOP), 0);
    t0 = now_s();
    rc = store_post_create(st, alice, "x", 1, 0, NULL, NULL, 1, &id);
    took = now_s() - t0;
    kill((pid_t)pid2, SIGCONT);
    assert_int_equal(rc, STORE_BUSY);
    assert_true(took >= 2.0 && took < 4.0);
    assert_non_null(strstr(store_errmsg(st), "did not answer"));
    usleep(300 * 1000);
    rc = store_account_by_name(st, "alice", &acc);
    if (rc != STORE_OK)
        fail_msg("after SIGCONT: %d %s", rc, store_errmsg(st));
}

/* The whole server frozen (postmaster and backend: SIGSTOP, as a replica whose host hangs): a read
 * that may be sent again (PG_RESEND) waits for one reply timeout (statement_timeout 300 ms + 2 s)
 * and answers STORE_BUSY, rather than then waiting connect_timeout (3 s) more for a new connection
 * to the same frozen server (tests/integration/test_replica.py: a frozen replica's read must move
 * to the primary within a client's patience). Thawed, the store works again by itself. */
static void test_a_frozen_server_delays_a_read_by_one_timeout(void **state)
{
    struct fx *f = *state;
    struct store *st = frozen_store(f);
    struct store_account acc;
    account(st, "alice");
    int64_t backend = backend_of(f->url, "frozen"), postmaster = postmaster_pid();
    assert_true(backend > 0 && postmaster > 0);
    assert_int_equal(kill((pid_t)postmaster, SIGSTOP), 0);
    assert_int_equal(kill((pid_t)backend, SIGSTOP), 0);
    double t0 = now_s();
    int rc = store_account_by_name(st, "alice", &acc);
    double took = now_s() - t0;
    kill((pid_t)backend, SIGCONT);
    kill((pid_t)postmaster, SIGCONT);
    if (rc != STORE_BUSY || took >= 4.0)
        fail_msg("a read of a frozen server: %d after %.2f s (one timeout: 2.3 s): %s", rc, took, store_errmsg(st));
    assert_true(took >= 2.0);
    usleep(300 * 1000); /* RECONNECT_PAUSE_MS */
    rc = store_account_by_name(st, "alice", &acc);
    if (rc != STORE_OK)
        fail_msg("after SIGCONT: %d %s", rc, store_errmsg(st));
}

/* ---- concurrency ---- */

struct worker {
    const char *url;
    int64_t post, followee, first_account, accounts;
    int toggles;
    pthread_barrier_t *go;
    int failures;
    char err[300];
};

/* Each worker likes/unlikes one post and follows/unfollows one account with its own accounts. */
static void *toggler(void *arg)
{
    struct worker *w = arg;
    struct store *st = open_url(w->url, 3);
    pthread_barrier_wait(w->go);
    for (int i = 0; i < w->toggles; i++) {
        int64_t who = w->first_account + i % w->accounts;
        int on = (i / w->accounts) % 2 == 0;
        int rc = store_like(st, w->post, who, on, 1);
        if (rc == STORE_OK)
            rc = store_follow(st, who, w->followee, on, 1);
        if (rc != STORE_OK) {
            w->failures++;
            snprintf(w->err, sizeof w->err, "%d %s", rc, store_errmsg(st));
        }
    }
    store_close(st);
    return NULL;
}

/* The followee posts while others follow and unfollow it: the home rows must be exactly the
 * fan-out invariant afterwards (docs/TIMELINES.md). */
static void *poster(void *arg)
{
    struct worker *w = arg;
    struct store *st = open_url(w->url, 3);
    pthread_barrier_wait(w->go);
    for (int i = 0; i < w->toggles; i++) {
        int64_t id;
        int rc = store_post_create(st, w->followee, "p", 1, 0, NULL, NULL, 1, &id);
        if (rc == STORE_OK && i % 5 == 4)
            rc = store_post_delete(st, id, w->followee);
        if (rc != STORE_OK) {
            w->failures++;
            snprintf(w->err, sizeof w->err, "%d %s", rc, store_errmsg(st));
        }
    }
    store_close(st);
    return NULL;
}

static void test_concurrent_toggles_keep_counters_exact(void **state)
{
    struct fx *f = *state;
    enum { THREADS = 8, PER = 10, TOGGLES = 25, POSTERS = 4 }; /* 8 × 25 = 200 toggles of each kind */
    struct store *st = f->st = open_url(f->url, 3);
    char name[32];
    int64_t author = account(st, "author"), first = 0;
    for (int i = 0; i < THREADS * PER; i++) {
        snprintf(name, sizeof name, "u%d", i);
        int64_t id = account(st, name);
        if (i == 0)
            first = id;
    }
    int64_t p = post(st, author, "popular");
    pthread_t t[THREADS + POSTERS];
    struct worker w[THREADS + POSTERS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, THREADS + POSTERS);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){f->url, p, author, first + i * PER, PER, TOGGLES, &go, 0, ""};
        pthread_create(&t[i], NULL, toggler, &w[i]);
    }
    for (int i = THREADS; i < THREADS + POSTERS; i++) {
        w[i] = (struct worker){f->url, p, author, 0, 0, 40, &go, 0, ""};
        pthread_create(&t[i], NULL, poster, &w[i]);
    }
    for (int i = 0; i < THREADS + POSTERS; i++) {
        pthread_join(t[i], NULL);
        if (w[i].failures)
            fail_msg("worker %d: %d failures, last %s", i, w[i].failures, w[i].err);
    }
    pthread_barrier_destroy(&go);
    /* every account ends with toggles 20..24 "on" (i / 10 = 2): 5 of 10 per thread */
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM likes"), THREADS * 5);
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT likes_count FROM posts WHERE id = %lld", (long long)p);
    assert_int_equal(raw_int(f->url, sql), THREADS * 5);
    snprintf(sql, sizeof sql, "SELECT followers_count FROM accounts WHERE id = %lld", (long long)author);
    assert_int_equal(raw_int(f->url, sql), THREADS * 5);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM accounts a WHERE following_count <>"
                                     " (SELECT count(*) FROM follows WHERE follower = a.id)"),
                     0);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM accounts a WHERE posts_count <>"
                                     " (SELECT count(*) FROM posts WHERE author = a.id)"),
                     0);
    /* the fan-out invariant: home = own posts + fanout posts of current followees */
    const char *expected = "SELECT author, id FROM posts UNION SELECT f.follower, p.id FROM follows f"
                           " JOIN posts p ON p.author = f.followee AND p.fanout";
    snprintf(sql, sizeof sql, "SELECT count(*) FROM ((%s) EXCEPT SELECT owner, post_id FROM home) x", expected);
    assert_int_equal(raw_int(f->url, sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM (SELECT owner, post_id FROM home EXCEPT (%s)) x", expected);
    assert_int_equal(raw_int(f->url, sql), 0);
}

struct bg_post {
    const char *url;
    int64_t author, id;
    int rc;
};

static void *post_in_background(void *arg)
{
    struct bg_post *b = arg;
    struct store *st = open_url(b->url, 0);
    b->rc = store_post_create(st, b->author, "during", 6, 0, NULL, NULL, 1, &b->id);
    store_close(st);
    return NULL;
}

/* A follow of star by fan in progress on a connection of its own, as PG_LOCK_ACCOUNTS2 and
 * PG_FOLLOW leave it before the commit: both rows locked, the follow row and both counters
 * written, the transaction open. The caller commits (PQexec "COMMIT") and PQfinish-es it. */
static PGconn *follow_in_progress(const char *url, int64_t fan, int64_t star)
{
    char sql[256];
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "BEGIN"));
    snprintf(sql, sizeof sql, "SELECT 1 FROM accounts WHERE id IN (%lld, %lld) ORDER BY id FOR NO KEY UPDATE",
             (long long)star, (long long)fan);
    PQclear(PQexec(c, sql));
    snprintf(sql, sizeof sql,
             "INSERT INTO follows VALUES (%lld, %lld, 1); UPDATE accounts SET followers_count = 1 WHERE id = %lld;"
             "UPDATE accounts SET following_count = 1 WHERE id = %lld",
             (long long)fan, (long long)star, (long long)star, (long long)fan);
    PQclear(PQexec(c, sql));
    return c;
}

/* Deterministic form of the race the lock statement closes: a follow is in progress (the
 * followee's row locked, the follow row written, the backfill done from a snapshot that cannot
 * see the new post) while the followee posts. The post must wait for the follow and then fan out
 * to the new follower; without the lock its fan-out would read the follows from a snapshot taken
 * before the follow committed, and the follower would never get the post. */
static void test_post_during_a_follow_reaches_the_follower(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 0);
    int64_t star = account(st, "star"), fan = account(st, "fan");
    char sql[256];
    PGconn *c = follow_in_progress(f->url, fan, star);
    struct bg_post b = {f->url, star, 0, -99};
    pthread_t t;
    pthread_create(&t, NULL, post_in_background, &b);
    usleep(300 * 1000); /* the post is now waiting for the lock */
    snprintf(sql, sizeof sql,
             "INSERT INTO home SELECT %lld, id FROM posts WHERE author = %lld AND fanout ON CONFLICT DO NOTHING",
             (long long)fan, (long long)star);
    PQclear(PQexec(c, sql));
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
    pthread_join(t, NULL);
    assert_int_equal(b.rc, STORE_OK);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM home WHERE owner = %lld AND post_id = %lld", (long long)fan,
             (long long)b.id);
    assert_int_equal(raw_int(f->url, sql), 1);
}

struct creator {
    const char *url;
    int64_t author;
    pthread_barrier_t *go;
    int64_t id;
    int rc;
};

static void *create_with_key(void *arg)
{
    struct creator *c = arg;
    unsigned char h[STORE_BODY_HASH_LEN] = {7};
    struct store *st = open_url(c->url, 0);
    pthread_barrier_wait(c->go);
    c->rc = store_post_create(st, c->author, "once", 4, 0, "the-key", h, 1, &c->id);
    store_close(st);
    return NULL;
}

static void test_concurrent_idempotent_creates_make_one_post(void **state)
{
    struct fx *f = *state;
    enum { N = 10 };
    struct store *st = f->st = open_url(f->url, 0);
    int64_t author = account(st, "author");
    pthread_t t[N];
    struct creator c[N];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    for (int i = 0; i < N; i++) {
        c[i] = (struct creator){f->url, author, &go, 0, -99};
        pthread_create(&t[i], NULL, create_with_key, &c[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].rc, STORE_OK);
        assert_int_equal(c[i].id, c[0].id);
    }
    pthread_barrier_destroy(&go);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM posts"), 1);
    assert_int_equal(raw_int(f->url, "SELECT posts_count FROM accounts"), 1);
    /* the same key with another body: STORE_CONFLICT naming the first post */
    unsigned char other[STORE_BODY_HASH_LEN] = {8};
    int64_t id = 0;
    assert_int_equal(store_post_create(st, author, "twice", 5, 0, "the-key", other, 1, &id), STORE_CONFLICT);
    assert_int_equal(id, c[0].id);
}

/* ---- pgcut2 review: a plain post's two statements against the other write shapes ---- */

struct shaper {
    const char *url;
    int64_t author, replier, parent, first_fan;
    int kind; /* 0 plain (create_get), 1 keyed, 2 the author's reply, 3 another's reply, 4 follow toggles */
    int n, done;
    pthread_barrier_t *go;
    int failures;
    char err[300];
};

struct seen_post {
    int64_t author, posts_count;
    int calls;
};

static int note_post(void *ctx, const struct store_post *p)
{
    struct seen_post *s = ctx;
    s->author = p->author.id;
    s->posts_count = p->author.posts_count;
    s->calls++;
    return 0;
}

static void *shape_worker(void *arg)
{
    struct shaper *w = arg;
    struct store *st = open_url(w->url, 3);
    pthread_barrier_wait(w->go);
    for (int i = 0; i < w->n; i++) {
        int64_t id = 0;
        int rc = STORE_OK;
        char key[32];
        unsigned char h[STORE_BODY_HASH_LEN] = {1};
        struct seen_post s = {0, 0, 0};
        switch (w->kind) {
        case 0:
            rc = store_post_create_get(st, w->author, "plain", 5, 0, NULL, NULL, 1, &id, note_post, &s);
            if (rc == STORE_OK && (s.calls != 1 || s.author != w->author || s.posts_count < 1))
                rc = -1000;
            break;
        case 1:
            snprintf(key, sizeof key, "k%d", i);
            rc = store_post_create(st, w->author, "keyed", 5, 0, key, h, 1, &id);
            break;
        case 2:
            rc = store_post_create(st, w->author, "self-reply", 10, w->parent, NULL, NULL, 1, &id);
            break;
        case 3:
            rc = store_post_create(st, w->replier, "reply", 5, w->parent, NULL, NULL, 1, &id);
            break;
        default:
            rc = store_follow(st, w->first_fan + i % 5, w->author, (i / 5) % 2 == 0, 1);
            break;
        }
        if (rc == STORE_OK)
            w->done++;
        else {
            w->failures++;
            snprintf(w->err, sizeof w->err, "%d %s", rc, store_errmsg(st));
        }
    }
    store_close(st);
    return NULL;
}

/* unfanned_follows holds exactly the follows of the authors in unfanned_authors (migration 3) */
static void assert_unfanned_follows_exact(const char *url)
{
    const char *expected =
        "SELECT f.follower, f.followee FROM follows f JOIN unfanned_authors u ON u.author = f.followee";
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM ((%s) EXCEPT SELECT follower, followee FROM unfanned_follows) x",
             expected);
    assert_int_equal(raw_int(url, sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM (SELECT follower, followee FROM unfanned_follows EXCEPT (%s)) x",
             expected);
    assert_int_equal(raw_int(url, sql), 0);
}

/* One author writes with every statement shape at once (plain posts: PG_POST_COUNT first; keyed
 * posts and replies: PG_LOCK_ACCOUNT first; a reply of another account locks the other account
 * and then the author's post) while five accounts follow and unfollow it across the fan-out
 * limit (3): no call may fail (a deadlock or serialization failure is retried whole), and the
 * counters, the fan-out invariant and unfanned_authors are exact afterwards. */
static void test_every_post_shape_of_one_author_at_once(void **state)
{
    struct fx *f = *state;
    enum { KINDS = 6, N = 40 };
    struct store *st = f->st = open_url(f->url, 3);
    int64_t author = account(st, "author"), replier = account(st, "replier"), first_fan = 0;
    char name[32];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "fan%d", i);
        int64_t id = account(st, name);
        if (i == 0)
            first_fan = id;
    }
    int64_t parent = post(st, author, "parent");
    int kinds[KINDS] = {0, 0, 1, 2, 3, 4};
    pthread_t t[KINDS];
    struct shaper w[KINDS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, KINDS);
    for (int i = 0; i < KINDS; i++) {
        w[i] = (struct shaper){f->url, author, replier, parent, first_fan, kinds[i], N, 0, &go, 0, ""};
        pthread_create(&t[i], NULL, shape_worker, &w[i]);
    }
    for (int i = 0; i < KINDS; i++) {
        pthread_join(t[i], NULL);
        if (w[i].failures)
            fail_msg("worker %d (kind %d): %d failures, last %s", i, kinds[i], w[i].failures, w[i].err);
        assert_int_equal(w[i].done, N);
    }
    pthread_barrier_destroy(&go);
    char sql[512];
    /* 1 parent + 2 × 40 plain + 40 keyed + 40 self-replies; the replier 40 */
    snprintf(sql, sizeof sql, "SELECT posts_count FROM accounts WHERE id = %lld", (long long)author);
    assert_int_equal(raw_int(f->url, sql), 1 + 4 * N);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM posts WHERE author = %lld", (long long)author);
    assert_int_equal(raw_int(f->url, sql), 1 + 4 * N);
    snprintf(sql, sizeof sql, "SELECT replies_count FROM posts WHERE id = %lld", (long long)parent);
    assert_int_equal(raw_int(f->url, sql), 2 * N);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM accounts a WHERE posts_count <>"
                                     " (SELECT count(*) FROM posts WHERE author = a.id)"
                                     " OR followers_count <> (SELECT count(*) FROM follows WHERE followee = a.id)"
                                     " OR following_count <> (SELECT count(*) FROM follows WHERE follower = a.id)"),
                     0);
    /* i = 39: (39 / 5) % 2 = 1, every fan ends unfollowed; in between 5 > 3 followers */
    snprintf(sql, sizeof sql, "SELECT followers_count FROM accounts WHERE id = %lld", (long long)author);
    assert_int_equal(raw_int(f->url, sql), 0);
    const char *expected = "SELECT author, id FROM posts UNION SELECT f.follower, p.id FROM follows f"
                           " JOIN posts p ON p.author = f.followee AND p.fanout";
    snprintf(sql, sizeof sql, "SELECT count(*) FROM ((%s) EXCEPT SELECT owner, post_id FROM home) x", expected);
    assert_int_equal(raw_int(f->url, sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM (SELECT owner, post_id FROM home EXCEPT (%s)) x", expected);
    assert_int_equal(raw_int(f->url, sql), 0);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM posts p WHERE NOT fanout AND NOT EXISTS"
                                     " (SELECT 1 FROM unfanned_authors u WHERE u.author = p.author)"),
                     0);
    assert_unfanned_follows_exact(f->url);
}

struct bg_get {
    const char *url;
    int64_t author, id;
    struct seen_post seen;
    int64_t followers;
    int rc;
};

static int note_followers(void *ctx, const struct store_post *p)
{
    struct bg_get *b = ctx;
    b->followers = p->author.followers_count;
    b->seen.posts_count = p->author.posts_count;
    b->seen.calls++;
    return 0;
}

static void *post_get_in_background(void *arg)
{
    struct bg_get *b = arg;
    struct store *st = open_url(b->url, 1);
    b->rc = store_post_create_get(st, b->author, "crossing", 8, 0, NULL, NULL, 1, &b->id, note_followers, b);
    store_close(st);
    return NULL;
}

struct home_ids {
    int64_t ids[8];
    int n;
};

static int note_home(void *ctx, const struct store_post *p)
{
    struct home_ids *h = ctx;
    if (h->n < 8)
        h->ids[h->n++] = p->id;
    return 0;
}

/* The author crosses the fan-out limit (1) while its plain post waits: the follow making its
 * first follower holds the author's row; the post, once it has the row, must see that follower
 * (the insert's fresh snapshot): it is unfanned, its author is in unfanned_authors, the follower's
 * home page has it (merged on read), and the post as returned counts the follower, as a later read
 * of the author does. */
static void test_plain_post_crossing_the_fanout_limit_during_a_follow(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 1);
    int64_t star = account(st, "star"), fan = account(st, "fan");
    char sql[256];
    PGconn *c = follow_in_progress(f->url, fan, star);
    struct bg_get b = {f->url, star, 0, {0, 0, 0}, -1, -99};
    pthread_t t;
    pthread_create(&t, NULL, post_get_in_background, &b);
    usleep(300 * 1000); /* the post now waits for the author's row */
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
    pthread_join(t, NULL);
    assert_int_equal(b.rc, STORE_OK);
    assert_int_equal(b.seen.calls, 1);
    assert_int_equal(b.followers, 1);
    assert_int_equal(b.seen.posts_count, 1);
    snprintf(sql, sizeof sql, "SELECT fanout::int FROM posts WHERE id = %lld", (long long)b.id);
    assert_int_equal(raw_int(f->url, sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM unfanned_authors WHERE author = %lld", (long long)star);
    assert_int_equal(raw_int(f->url, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM unfanned_follows WHERE follower = %lld AND followee = %lld",
             (long long)fan, (long long)star);
    assert_int_equal(raw_int(f->url, sql), 1);
    struct store *fresh = open_url(f->url, 1); /* its s->unfanned starts at 0: the merge must be found */
    struct home_ids h = {{0}, 0};
    struct store_page pg = {0, 0, 10};
    assert_int_equal(store_home(fresh, fan, &pg, note_home, &h), STORE_OK);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.ids[0], b.id);
    store_close(fresh);
}

/* unfanned_follows follows the follows (migration 3): an author's first unfanned post lists all
 * its follows, a later follow of that author adds its row, an unfollow drops it (the cascade),
 * and a home page merges through it, the new follower's included. */
static void test_unfanned_follows_track_follows(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 2);
    int64_t big = account(st, "big"), a = account(st, "a"), b = account(st, "b"), c = account(st, "c");
    struct store_page pg = {0, 0, 10};
    struct home_ids h = {{0}, 0};
    assert_int_equal(store_follow(st, a, big, 1, 10), STORE_OK);
    assert_int_equal(store_follow(st, b, big, 1, 10), STORE_OK);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 0); /* nothing unfanned yet */
    int64_t p1 = post(st, big, "merged");
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 2);
    assert_unfanned_follows_exact(f->url);
    assert_int_equal(store_follow(st, c, big, 1, 20), STORE_OK);
    assert_int_equal(store_follow(st, c, a, 1, 20), STORE_OK); /* a is not unfanned: no row */
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 3);
    assert_unfanned_follows_exact(f->url);
    assert_int_equal(store_home(st, c, &pg, note_home, &h), STORE_OK);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.ids[0], p1);
    assert_int_equal(store_follow(st, a, big, 0, 30), STORE_OK);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 2);
    assert_unfanned_follows_exact(f->url);
    h.n = 0;
    assert_int_equal(store_home(st, a, &pg, note_home, &h), STORE_OK);
    assert_int_equal(h.n, 0);
    int64_t p2 = post(st, big, "merged again"); /* already listed: nothing added twice */
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 2);
    h.n = 0;
    assert_int_equal(store_home(st, b, &pg, note_home, &h), STORE_OK);
    assert_int_equal(h.n, 2);
    assert_int_equal(h.ids[0], p2);
    assert_int_equal(h.ids[1], p1);
}

/* The database keeps unfanned_follows whoever writes (migration 3's triggers): the statements
 * of a binary older than migration 3, still running during an upgrade (a handoff's draining
 * process), know nothing of the table, yet a follow of a listed author gets its row and an author
 * newly listed gets all its follows; a multi-row insert as well as a COPY. Without the triggers
 * these rows were missing for good and those followers' home pages lost the author's posts. */
static void test_unfanned_follows_kept_for_writers_that_do_not_know_it(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 2);
    int64_t star = account(st, "star"), rising = account(st, "rising"), a = account(st, "a"), b = account(st, "b"),
            c = account(st, "c");
    char sql[512];
    /* what an older binary's post writes when star is unfanned: the author listed */
    snprintf(sql, sizeof sql,
             "INSERT INTO follows VALUES (%lld, %lld, 1), (%lld, %lld, 1);"
             " INSERT INTO unfanned_authors VALUES (%lld) ON CONFLICT DO NOTHING; SELECT 0",
             (long long)a, (long long)star, (long long)b, (long long)star, (long long)star);
    raw_int(f->url, sql);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 2);
    /* an older binary's follow of a listed author, two rows in one statement */
    snprintf(sql, sizeof sql, "INSERT INTO follows VALUES (%lld, %lld, 2), (%lld, %lld, 2); SELECT 0", (long long)c,
             (long long)star, (long long)c, (long long)rising);
    raw_int(f->url, sql);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 3);
    /* a COPY (agora seed's way) */
    PGconn *conn = PQconnectdb(f->url);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    PGresult *r = PQexec(conn, "COPY follows FROM STDIN");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    snprintf(sql, sizeof sql, "%lld\t%lld\t3\n%lld\t%lld\t3\n", (long long)b, (long long)rising, (long long)star,
             (long long)rising);
    assert_int_equal(PQputCopyData(conn, sql, (int)strlen(sql)), 1);
    assert_int_equal(PQputCopyEnd(conn, NULL), 1);
    r = PQgetResult(conn);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(conn);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 3); /* rising is not listed */
    /* rising becomes unfanned: its three follows are listed */
    snprintf(sql, sizeof sql, "INSERT INTO unfanned_authors VALUES (%lld); SELECT 0", (long long)rising);
    raw_int(f->url, sql);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 6);
    assert_unfanned_follows_exact(f->url);
}

/* pg_terminate_backend while plain posts are being written: every post acknowledged (STORE_OK)
 * exists once, none exists twice (a lost write is never sent again), a failed one is STORE_BUSY,
 * and posts_count equals the posts. */
struct killer {
    const char *url;
    atomic_int stop; /* set by the main thread when the writers are done */
    int kills;
};

static void *kill_agora_backends(void *arg)
{
    struct killer *k = arg;
    PGconn *c = PQconnectdb(k->url);
    for (int i = 0; i < 1000 && !atomic_load(&k->stop); i++) {
        PGresult *r = PQexec(c, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND application_name = 'agora'"
                                " AND pid <> pg_backend_pid()) x");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            k->kills += atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        usleep(25000 + (i % 7) * 5000); /* a reconnect is let finish most times */
    }
    PQfinish(c);
    return NULL;
}

static void test_plain_posts_under_backend_kills(void **state)
{
    struct fx *f = *state;
    enum { N = 300 };
    struct store *st = f->st = open_url(f->url, 3);
    int64_t author = account(st, "author");
    int64_t fans[2] = {account(st, "fan0"), account(st, "fan1")};
    for (int i = 0; i < 2; i++)
        assert_int_equal(store_follow(st, fans[i], author, 1, 1), STORE_OK);
    struct store *w = open_url(f->url, 3);
    struct killer k = {f->url, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, kill_agora_backends, &k);
    int ok = 0, busy = 0;
    char text[32], sql[256];
    static int64_t acked[N];
    for (int i = 0; i < N; i++) {
        int64_t id = 0;
        snprintf(text, sizeof text, "t%d", i);
        int rc = store_post_create(w, author, text, strlen(text), 0, NULL, NULL, 1, &id);
        if (rc == STORE_OK)
            acked[ok++] = id;
        else if (rc == STORE_BUSY)
            busy++;
        else
            fail_msg("post %d: %d %s", i, rc, store_errmsg(w));
        usleep(1000);
    }
    atomic_store(&k.stop, 1);
    pthread_join(t, NULL);
    store_close(w);
    print_message("  %d acknowledged, %d busy, %d backends killed\n", ok, busy, k.kills);
    assert_true(ok > 0);
    for (int i = 0; i < ok; i++) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM posts WHERE id = %lld AND author = %lld", (long long)acked[i],
                 (long long)author);
        assert_int_equal(raw_int(f->url, sql), 1);
    }
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM (SELECT text FROM posts WHERE author = %lld GROUP BY text"
             " HAVING count(*) > 1) x",
             (long long)author);
    assert_int_equal(raw_int(f->url, sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM posts WHERE author = %lld", (long long)author);
    int64_t posts = raw_int(f->url, sql);
    assert_true(posts >= ok && posts <= ok + busy);
    snprintf(sql, sizeof sql, "SELECT posts_count FROM accounts WHERE id = %lld", (long long)author);
    assert_int_equal(raw_int(f->url, sql), posts);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM home WHERE owner IN (%lld, %lld)", (long long)fans[0],
             (long long)fans[1]);
    assert_int_equal(raw_int(f->url, sql), 2 * posts);
}

/* A plain post's backend is terminated while its PG_POST_COUNT waits for the author's row (held
 * by another transaction): the call answers STORE_BUSY, is not sent again (it was a write), and
 * nothing of it is written; the next call reconnects and succeeds. */
static void test_plain_post_killed_while_waiting_for_the_author(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 3);
    int64_t star = account(st, "star"), fan = account(st, "fan");
    assert_int_equal(store_follow(st, fan, star, 1, 1), STORE_OK);
    char sql[256];
    PGconn *c = PQconnectdb(f->url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "BEGIN"));
    snprintf(sql, sizeof sql, "SELECT 1 FROM accounts WHERE id = %lld FOR NO KEY UPDATE", (long long)star);
    PQclear(PQexec(c, sql));
    struct bg_post b = {f->url, star, 0, -99};
    pthread_t t;
    pthread_create(&t, NULL, post_in_background, &b);
    assert_int_equal(raw_int_soon(f->url,
                                  "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                  " AND application_name = 'agora' AND wait_event_type = 'Lock'",
                                  1),
                     1);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                     " WHERE datname = current_database() AND application_name = 'agora'"
                                     " AND wait_event_type = 'Lock') x"),
                     1);
    pthread_join(t, NULL);
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
    assert_int_equal(b.rc, STORE_BUSY);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM posts WHERE author = %lld", (long long)star);
    assert_int_equal(raw_int(f->url, sql), 0);
    snprintf(sql, sizeof sql, "SELECT posts_count FROM accounts WHERE id = %lld", (long long)star);
    assert_int_equal(raw_int(f->url, sql), 0);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM home"), 0);
    int64_t id = post(st, star, "after");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM home WHERE post_id = %lld", (long long)id);
    assert_int_equal(raw_int(f->url, sql), 2);
}

/* ---- bulk loading ---- */

static void test_bulk_ids_come_from_the_store(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 2);
    struct store_bulk_stats stats;
    int64_t ids[4], posts[4];
    account(st, "early"); /* the sequences no longer start at 1 */
    assert_int_equal(store_bulk_begin(st, 0), STORE_CONFLICT);
    assert_int_equal(store_bulk_begin(st, 1), STORE_OK);
    const char *names[4] = {"a\tb", "c\\d", "e", "f"}; /* COPY's special characters */
    for (int i = 0; i < 4; i++)
        assert_int_equal(store_bulk_account(st, names[i], "D\nx", "h", 1, &ids[i]), STORE_OK);
    assert_true(ids[0] > 1);
    for (int i = 1; i < 4; i++)
        assert_int_equal(store_bulk_follow(st, ids[i], ids[0], 1), STORE_OK); /* 3 ≥ limit 2: no fan-out */
    assert_int_equal(store_bulk_follow(st, ids[0], ids[1], 1), STORE_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(store_bulk_post(st, ids[i], "t\\x\ty", 1, &posts[i]), STORE_OK);
    assert_int_equal(store_bulk_end(st, 1, &stats), STORE_OK);
    assert_int_equal(stats.accounts, 4);
    assert_int_equal(stats.follows, 4);
    assert_int_equal(stats.posts, 4);
    assert_int_equal(stats.fanout_posts, 3);
    assert_int_equal(stats.home_rows, 4 + 1);
    assert_int_equal(stats.big_accounts, 1);
    assert_int_equal(stats.max_followers, 3);
    struct store_account acc;
    assert_int_equal(store_account_by_name(st, "a\tb", &acc), STORE_OK);
    assert_int_equal(acc.id, ids[0]);
    assert_string_equal(acc.display_name, "D\nx");
    assert_int_equal(acc.followers_count, 3);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM posts WHERE id = %lld AND text = E't\\\\x\\ty'",
             (long long)posts[3]);
    assert_int_equal(raw_int(f->url, sql), 1);
    /* live writes go on from the sequences */
    int64_t later = account(st, "later");
    assert_true(later > ids[3]);
}

/* ---- ufreview: unfanned_follows (migration 3) under attack ---- */

enum { UFR_FANS = 4, UFR_ROUNDS = 25, UFR_THREADS = UFR_FANS + 2 };

struct ufr_worker {
    const char *url;
    int64_t *authors, first_fan;
    int kind; /* < UFR_FANS: fan index (follow storm); UFR_FANS: plain poster; UFR_FANS + 1: keyed poster */
    pthread_barrier_t *go;
    int failures;
    char err[300];
};

static void ufr_fail(struct ufr_worker *w, struct store *st, int rc)
{
    w->failures++;
    snprintf(w->err, sizeof w->err, "%d %s", rc, store_errmsg(st));
}

/* Each round a fresh author (no follower yet, fan-out limit 2): the fans follow it (some unfollow
 * and follow again, some end unfollowed) while its first posts, plain (PG_POST_COUNT then
 * PG_POST_CREATE_PLAIN) and keyed (PG_LOCK_ACCOUNT then PG_POST_CREATE), cross the limit: its
 * first unfanned post races the follows in both lock orders. */
static void *ufr_storm(void *arg)
{
    struct ufr_worker *w = arg;
    struct store *st = open_url(w->url, 2);
    for (int r = 0; r < UFR_ROUNDS; r++) {
        pthread_barrier_wait(w->go);
        int64_t a = w->authors[r], id = 0;
        int rc;
        if (w->kind < UFR_FANS) {
            int64_t fan = w->first_fan + w->kind;
            if ((rc = store_follow(st, fan, a, 1, 1)) != STORE_OK)
                ufr_fail(w, st, rc);
            if ((r + w->kind) % 3 != 2 && (rc = store_follow(st, fan, a, 0, 2)) != STORE_OK)
                ufr_fail(w, st, rc);
            if ((r + w->kind) % 3 == 0 && (rc = store_follow(st, fan, a, 1, 3)) != STORE_OK)
                ufr_fail(w, st, rc);
        } else {
            for (int i = 0; i < 3; i++) {
                char key[32];
                unsigned char h[STORE_BODY_HASH_LEN] = {2};
                snprintf(key, sizeof key, "r%d-%d", r, i);
                if (w->kind == UFR_FANS)
                    rc = store_post_create(st, a, "plain", 5, 0, NULL, NULL, 1, &id);
                else
                    rc = store_post_create(st, a, "keyed", 5, 0, key, h, 1, &id);
                if (rc != STORE_OK)
                    ufr_fail(w, st, rc);
            }
        }
    }
    store_close(st);
    return NULL;
}

struct ufr_sum {
    int64_t n, sum;
};

static int ufr_note(void *ctx, const struct store_post *p)
{
    struct ufr_sum *s = ctx;
    s->n++;
    s->sum += p->id;
    return 0;
}

/* every fan's home page holds exactly the posts of its followees (brute force), through a fresh
 * store (its unfanned flag starts clear) and the one that wrote */
static void ufr_assert_homes(const char *url, struct store *st, int64_t first_fan, int fans)
{
    struct store *fresh = open_url(url, 2);
    for (int i = 0; i < fans; i++) {
        int64_t fan = first_fan + i;
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM posts WHERE author = %lld OR author IN"
                 " (SELECT followee FROM follows WHERE follower = %lld)",
                 (long long)fan, (long long)fan);
        int64_t n = raw_int(url, sql);
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(sum(id), 0) FROM posts WHERE author = %lld OR author IN"
                 " (SELECT followee FROM follows WHERE follower = %lld)",
                 (long long)fan, (long long)fan);
        int64_t sum = raw_int(url, sql);
        struct store *each[2] = {st, fresh};
        for (int k = 0; k < 2; k++) {
            struct ufr_sum s = {0, 0};
            struct store_page pg = {0, 0, 1000};
            assert_int_equal(store_home(each[k], fan, &pg, ufr_note, &s), STORE_OK);
            if (s.n != n || s.sum != sum)
                fail_msg("fan %d (store %d): home has %lld posts (id sum %lld), its followees %lld (%lld)", i, k,
                         (long long)s.n, (long long)s.sum, (long long)n, (long long)sum);
        }
    }
    store_close(fresh);
}

static void test_ufr_first_unfanned_post_races_follows(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 2);
    int64_t authors[UFR_ROUNDS], first_fan = 0;
    char name[32];
    for (int i = 0; i < UFR_FANS; i++) {
        snprintf(name, sizeof name, "fan%d", i);
        int64_t id = account(st, name);
        if (i == 0)
            first_fan = id;
        assert_int_equal(id, first_fan + i);
    }
    for (int r = 0; r < UFR_ROUNDS; r++) {
        snprintf(name, sizeof name, "author%d", r);
        authors[r] = account(st, name);
    }
    pthread_t t[UFR_THREADS];
    struct ufr_worker w[UFR_THREADS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, UFR_THREADS);
    for (int i = 0; i < UFR_THREADS; i++) {
        w[i] = (struct ufr_worker){f->url, authors, first_fan, i, &go, 0, ""};
        pthread_create(&t[i], NULL, ufr_storm, &w[i]);
    }
    for (int i = 0; i < UFR_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < UFR_THREADS; i++)
        if (w[i].failures)
            fail_msg("worker %d: %d failures, last %s", i, w[i].failures, w[i].err);
    /* the storm did make authors unfanned with followers listed */
    assert_true(raw_int(f->url, "SELECT count(*) FROM unfanned_authors") > 0);
    assert_true(raw_int(f->url, "SELECT count(*) FROM unfanned_follows") > 0);
    assert_unfanned_follows_exact(f->url);
    ufr_assert_homes(f->url, st, first_fan, UFR_FANS);
}

/* Migration 3 on a database at schema 2 with data: drop what migration 3 made, set the version
 * back to 2, and let several stores open it at once (the advisory lock: one migrates): the rows
 * are exactly follows JOIN unfanned_authors and the home pages merge through them. */
static void test_ufr_migration_3_on_a_v2_database(void **state)
{
    struct fx *f = *state;
    struct store *st = open_url(f->url, 2);
    int64_t big = account(st, "big"), mid = account(st, "mid"), first_fan = 0;
    char name[32];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "fan%d", i);
        int64_t id = account(st, name);
        if (i == 0)
            first_fan = id;
        assert_int_equal(store_follow(st, id, big, 1, 1), STORE_OK);
        if (i % 2 == 0)
            assert_int_equal(store_follow(st, id, mid, 1, 1), STORE_OK);
    }
    post(st, big, "unfanned"); /* 4 followers >= 2 */
    post(st, mid, "unfanned too");
    assert_int_equal(store_follow(st, first_fan + 1, mid, 1, 5), STORE_OK); /* after mid was listed */
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 4 + 3);
    store_close(st);
    raw_int(f->url, "DROP TABLE unfanned_follows; DROP FUNCTION agora_follows_added CASCADE;"
                    " DROP FUNCTION agora_author_unfanned CASCADE; UPDATE schema_version SET version = 2");
    open_at_once_n(f->url, 6);
    assert_int_equal(raw_int(f->url, "SELECT version FROM schema_version"), 3);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 4 + 3);
    assert_unfanned_follows_exact(f->url);
    st = f->st = open_url(f->url, 2);
    ufr_assert_homes(f->url, st, first_fan, 4);
    /* the cascade of the migrated FK */
    assert_int_equal(store_follow(st, first_fan, big, 0, 9), STORE_OK);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 4 + 3 - 1);
    assert_unfanned_follows_exact(f->url);
}

/* agora seed with wipe into a database that has live unfanned_follows rows: the wipe empties it
 * (TRUNCATE with its FK), the load lists exactly the follows of the authors it made unfanned, the
 * home pages merge through them, and the table is VACUUM (ANALYZE)d with the others (bulk_end's
 * contract: statistics for the planner, the visibility map for the home merge's index-only probe
 * of unfanned_follows; before the fix it was left to autovacuum: reltuples -1, relallvisible 0). */
static void test_ufr_bulk_wipe_lists_and_vacuums_unfanned_follows(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 2);
    int64_t old = account(st, "old"), ids[6], p = 0;
    for (int i = 0; i < 2; i++) {
        char name[32];
        snprintf(name, sizeof name, "oldfan%d", i);
        assert_int_equal(store_follow(st, account(st, name), old, 1, 1), STORE_OK);
    }
    post(st, old, "unfanned before the wipe");
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 2);
    assert_int_equal(store_bulk_begin(st, 1), STORE_OK);
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "u%d", i);
        assert_int_equal(store_bulk_account(st, name, name, "h", 1, &ids[i]), STORE_OK);
    }
    for (int i = 1; i < 6; i++) /* ids[0]: 5 followers >= 2, unfanned; ids[1]: 1 follower, fanned */
        assert_int_equal(store_bulk_follow(st, ids[i], ids[0], 1), STORE_OK);
    assert_int_equal(store_bulk_follow(st, ids[2], ids[1], 1), STORE_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(store_bulk_post(st, ids[i], "seeded", 1, &p), STORE_OK);
    assert_int_equal(store_bulk_end(st, 1, NULL), STORE_OK);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 5);
    assert_unfanned_follows_exact(f->url);
    ufr_assert_homes(f->url, st, ids[1], 5);
    assert_true(raw_int(f->url, "SELECT reltuples::bigint FROM pg_class WHERE relname = 'unfanned_follows'") == 5);
    assert_true(raw_int(f->url, "SELECT relallvisible FROM pg_class WHERE relname = 'unfanned_follows'") > 0);
}

struct ufr_toggler {
    const char *url;
    int64_t author, first_fan;
    int idx;
    pthread_barrier_t *go;
    int failures;
    char err[300];
};

/* follows and unfollows the author by overlapping fans (two threads share each fan: the same
 * pair's follow and unfollow race), or (idx 4) posts as the author: an already unfanned author's
 * follow rows come and go while its posts are written */
static void *ufr_toggle(void *arg)
{
    struct ufr_toggler *w = arg;
    struct store *st = open_url(w->url, 2);
    pthread_barrier_wait(w->go);
    for (int i = 0; i < 40; i++) {
        int64_t id = 0;
        int rc = w->idx == 4 ? store_post_create(st, w->author, "more", 4, 0, NULL, NULL, 1, &id)
                             : store_follow(st, w->first_fan + (w->idx + i) % 3, w->author, (i + w->idx) % 2, i);
        if (rc != STORE_OK && !(rc == STORE_NOT_FOUND && w->idx != 4)) {
            w->failures++;
            snprintf(w->err, sizeof w->err, "%d %s", rc, store_errmsg(st));
        }
    }
    store_close(st);
    return NULL;
}

/* An unfanned author (limit 2) whose fans follow and unfollow it concurrently, the same pair from
 * two threads, while it posts: no error (a duplicate key in unfanned_follows would be one), and
 * afterwards unfanned_follows and the home pages are exact. */
static void test_ufr_same_pair_toggles_on_an_unfanned_author(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 2);
    int64_t author = account(st, "star"), first_fan = account(st, "fan0");
    assert_int_equal(account(st, "fan1"), first_fan + 1);
    assert_int_equal(account(st, "fan2"), first_fan + 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(store_follow(st, first_fan + i, author, 1, 1), STORE_OK);
    post(st, author, "unfanned");
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 3);
    enum { T = 7 };
    pthread_t t[T];
    struct ufr_toggler w[T];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, T);
    for (int i = 0; i < T; i++) {
        w[i] = (struct ufr_toggler){f->url, author, first_fan, i < 4 ? i : 4, &go, 0, ""};
        pthread_create(&t[i], NULL, ufr_toggle, &w[i]);
    }
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < T; i++)
        if (w[i].failures)
            fail_msg("thread %d: %d failures, last %s", i, w[i].failures, w[i].err);
    assert_unfanned_follows_exact(f->url);
    ufr_assert_homes(f->url, st, first_fan, 3);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM accounts a WHERE"
                                     " followers_count <> (SELECT count(*) FROM follows WHERE followee = a.id)"
                                     " OR following_count <> (SELECT count(*) FROM follows WHERE follower = a.id)"),
                     0);
}

/* ---- trigreview: migration 3's triggers (transition tables, snapshots, privileges) ---- */

/* Runs sql on c, failing the test on an error; returns the first column of the first row. */
static int64_t trg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    int64_t v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return v;
}

static int64_t trg_pair(const char *url, int64_t follower, int64_t followee)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM unfanned_follows WHERE follower = %lld AND followee = %lld",
             (long long)follower, (long long)followee);
    return raw_int(url, sql);
}

/* A follow that already exists (ON CONFLICT DO NOTHING inserts nothing: the statement trigger
 * fires with an empty transition table), duplicates inside one data-modifying CTE, and a follow
 * statement rolled back and retried whole (what a deadlock or serialization failure's retry does):
 * no error, exactly one unfanned_follows row per follow of a listed author. */
static void test_trg_conflicts_and_retries(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 1);
    int64_t star = account(st, "star"), a = account(st, "a"), b = account(st, "b"), c = account(st, "c");
    assert_int_equal(store_follow(st, a, star, 1, 1), STORE_OK);
    post(st, star, "p1");
    post(st, star, "p2"); /* past the limit of 1: star is listed */
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_authors"), 1);
    assert_int_equal(trg_pair(f->url, a, star), 1);
    assert_int_equal(store_follow(st, a, star, 1, 2), STORE_OK); /* already there: empty transition table */
    assert_int_equal(trg_pair(f->url, a, star), 1);
    char sql[512];
    PGconn *conn = PQconnectdb(f->url);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    /* the same pair twice and an existing one in one CTE statement: b's row once, a's untouched */
    snprintf(sql, sizeof sql,
             "WITH i AS (INSERT INTO follows VALUES (%lld, %lld, 3), (%lld, %lld, 3), (%lld, %lld, 3)"
             " ON CONFLICT DO NOTHING RETURNING followee) SELECT count(*) FROM i",
             (long long)b, (long long)star, (long long)b, (long long)star, (long long)a, (long long)star);
    assert_int_equal(trg_exec(conn, sql), 1);
    assert_int_equal(trg_pair(f->url, b, star), 1);
    assert_int_equal(trg_pair(f->url, a, star), 1);
    /* c's follow made, rolled back (the row goes with it), then retried whole and committed */
    snprintf(sql, sizeof sql,
             "WITH i AS (INSERT INTO follows VALUES (%lld, %lld, 4) ON CONFLICT DO NOTHING RETURNING followee)"
             " SELECT count(*) FROM i",
             (long long)c, (long long)star);
    trg_exec(conn, "BEGIN");
    assert_int_equal(trg_exec(conn, sql), 1);
    snprintf(sql + 400, 100, "SELECT count(*) FROM unfanned_follows WHERE follower = %lld", (long long)c);
    assert_int_equal(trg_exec(conn, sql + 400), 1); /* its own transaction sees the trigger's row */
    trg_exec(conn, "ROLLBACK");
    assert_int_equal(trg_pair(f->url, c, star), 0);
    trg_exec(conn, "BEGIN");
    assert_int_equal(trg_exec(conn, sql), 1);
    trg_exec(conn, "COMMIT");
    assert_int_equal(trg_exec(conn, sql), 0); /* and once more: already there, no error */
    PQfinish(conn);
    assert_int_equal(trg_pair(f->url, c, star), 1);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 3);
    assert_unfanned_follows_exact(f->url);
}

/* The trigger's INSERT ... SELECT (plpgsql, READ COMMITTED) takes a snapshot of its own: one
 * statement whose snapshot was taken before the other writer committed (it waited for the
 * author's row lock inside the same statement) still lists the pair. first_lists: the first
 * transaction lists the author (its first unfanned post) and the follow waits; else the follow
 * is first and the listing waits. */
static void trg_crossing(const char *url, struct store *st, int first_lists)
{
    int64_t star = account(st, first_lists ? "star1" : "star2"), fan = account(st, first_lists ? "fan1" : "fan2");
    char sql[512];
    PGconn *c1 = PQconnectdb(url), *c2 = PQconnectdb(url);
    assert_int_equal(PQstatus(c1), CONNECTION_OK);
    assert_int_equal(PQstatus(c2), CONNECTION_OK);
    trg_exec(c1, "BEGIN");
    snprintf(sql, sizeof sql, "SELECT 1 FROM accounts WHERE id = %lld FOR NO KEY UPDATE", (long long)star);
    trg_exec(c1, sql);
    if (first_lists)
        snprintf(sql, sizeof sql, "INSERT INTO unfanned_authors VALUES (%lld)", (long long)star);
    else
        snprintf(sql, sizeof sql, "INSERT INTO follows VALUES (%lld, %lld, 1)", (long long)fan, (long long)star);
    trg_exec(c1, sql);
    /* one statement: its snapshot is taken now, then it waits for star's row */
    if (first_lists)
        snprintf(sql, sizeof sql,
                 "WITH l AS (SELECT id FROM accounts WHERE id = %lld FOR NO KEY UPDATE)"
                 " INSERT INTO follows SELECT %lld, id, 1 FROM l ON CONFLICT DO NOTHING",
                 (long long)star, (long long)fan);
    else
        snprintf(sql, sizeof sql,
                 "WITH l AS (SELECT id FROM accounts WHERE id = %lld FOR NO KEY UPDATE)"
                 " INSERT INTO unfanned_authors SELECT id FROM l ON CONFLICT DO NOTHING",
                 (long long)star);
    assert_int_equal(PQsendQuery(c2, sql), 1);
    usleep(300 * 1000);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()");
    assert_int_equal(raw_int(url, sql), 1); /* c2 really waits */
    trg_exec(c1, "COMMIT");
    PGresult *r;
    int results = 0;
    while ((r = PQgetResult(c2)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fail_msg("%s", PQerrorMessage(c2));
        results++;
        PQclear(r);
    }
    assert_int_equal(results, 1);
    PQfinish(c1);
    PQfinish(c2);
    assert_int_equal(trg_pair(url, fan, star), 1);
    assert_unfanned_follows_exact(url);
}

static void test_trg_trigger_sees_a_commit_after_its_statement_began(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 1);
    trg_crossing(f->url, st, 1);
    trg_crossing(f->url, st, 0);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_follows"), 2);
}

/* The store run by a non-superuser that owns its database: migrations 1-3 (plpgsql functions and
 * triggers) succeed and the triggers keep unfanned_follows for that role. */
static void test_trg_non_superuser_owner(void **state)
{
    struct fx *f = *state;
    char name[64], user[80], sql[256], url[700];
    snprintf(name, sizeof name, "trg_owner_%d", (int)getpid()); /* database and role */
    snprintf(user, sizeof user, "user=%s", name);
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN", name);
    raw_int(cluster_url, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s OWNER %s", name, name);
    raw_int(cluster_url, sql);
    url_of(name, url, sizeof url);
    char *at = strstr(url, "user=agora");
    assert_non_null(at);
    memmove(at + strlen(user), at + strlen("user=agora"), strlen(at + strlen("user=agora")) + 1);
    memcpy(at, user, strlen(user));
    assert_int_equal(raw_int(url, "SELECT rolsuper::int FROM pg_roles WHERE rolname = current_user"), 0);
    struct store *st = f->st = open_url(url, 1);
    assert_int_equal(raw_int(url, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'unfanned_follows_of_%'"), 2);
    int64_t star = account(st, "star"), a = account(st, "a"), b = account(st, "b");
    assert_int_equal(store_follow(st, a, star, 1, 1), STORE_OK);
    post(st, star, "p1");
    post(st, star, "p2");
    assert_int_equal(store_follow(st, b, star, 1, 2), STORE_OK);
    assert_int_equal(trg_pair(url, a, star), 1);
    assert_int_equal(trg_pair(url, b, star), 1);
    assert_int_equal(raw_int(url, "SELECT count(*) FROM unfanned_follows"), 2);
    store_close(st);
    f->st = NULL;
    snprintf(sql, sizeof sql, "DROP DATABASE %s", name);
    raw_int(cluster_url, sql);
    snprintf(sql, sizeof sql, "DROP ROLE %s", name);
    raw_int(cluster_url, sql);
}

/* A writer whose search_path differs from the store's (a tool, a maintenance session, a role
 * whose "$user" schema holds a table of the same name) inserting into the store's follows: the
 * trigger functions name their tables unqualified, so they resolve through the caller's
 * search_path. Wanted: the row lands in the store's own unfanned_follows, never elsewhere, and an
 * insert with only pg_catalog on the path does not fail. */
static void test_trg_search_path_of_the_writer(void **state)
{
    struct fx *f = *state;
    struct store *st = f->st = open_url(f->url, 1);
    int64_t star = account(st, "star"), a = account(st, "a"), b = account(st, "b"), c0 = account(st, "c0");
    assert_int_equal(store_follow(st, c0, star, 1, 1), STORE_OK); /* one follower: past the limit of 1 */
    post(st, star, "p1");
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM unfanned_authors"), 1);
    char sql[512];
    snprintf(sql, sizeof sql,
             "CREATE SCHEMA shadow; CREATE TABLE shadow.unfanned_follows (follower bigint, followee bigint);"
             " CREATE TABLE shadow.unfanned_authors (author bigint); INSERT INTO shadow.unfanned_authors VALUES (%lld);"
             " SET search_path = shadow, public; INSERT INTO public.follows VALUES (%lld, %lld, 1); SELECT 0",
             (long long)star, (long long)a, (long long)star);
    raw_int(f->url, sql);
    assert_int_equal(raw_int(f->url, "SELECT count(*) FROM shadow.unfanned_follows"), 0);
    assert_int_equal(trg_pair(f->url, a, star), 1);
    PGconn *c = PQconnectdb(f->url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    trg_exec(c, "SET search_path = pg_catalog");
    snprintf(sql, sizeof sql, "INSERT INTO public.follows VALUES (%lld, %lld, 1)", (long long)b, (long long)star);
    trg_exec(c, sql);
    PQfinish(c);
    assert_int_equal(trg_pair(f->url, b, star), 1);
    assert_unfanned_follows_exact(f->url);
}

int main(void)
{
    if (cluster_start() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_concurrent_open_migrates_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_round_trip_per_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_home_merges_once_a_post_is_unfanned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unfanned_follows_track_follows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unfanned_follows_kept_for_writers_that_do_not_know_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_timeout_is_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_after_terminate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_server_gives_busy_and_drops_the_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_write_url_reads_from_a_standby_during_the_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_toggles_keep_counters_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_during_a_follow_reaches_the_follower, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_idempotent_creates_make_one_post, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk_ids_come_from_the_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_post_shape_of_one_author_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_post_crossing_the_fanout_limit_during_a_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_posts_under_backend_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_post_killed_while_waiting_for_the_author, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_frozen_server_gives_busy_not_a_hang, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_frozen_server_delays_a_read_by_one_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_killed_and_restarted, setup, teardown),
        /* ufreview */
        cmocka_unit_test_setup_teardown(test_ufr_first_unfanned_post_races_follows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ufr_migration_3_on_a_v2_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ufr_bulk_wipe_lists_and_vacuums_unfanned_follows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ufr_same_pair_toggles_on_an_unfanned_author, setup, teardown),
        /* trigreview */
        cmocka_unit_test_setup_teardown(test_trg_conflicts_and_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trg_trigger_sees_a_commit_after_its_statement_began, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trg_non_superuser_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trg_search_path_of_the_writer, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    cluster_destroy();
    return failed;
}
