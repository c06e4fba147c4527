/* store_sqlite_bulk.c — SQLite store: bulk loading for `agora seed`. See store.h.
 *
 * Loads into an empty database only (or one wiped first). One long BEGIN IMMEDIATE transaction with foreign-key
 * enforcement off (the loader produces consistent rows; checking each would triple the work); raw inserts; then
 * bulk_end derives everything else with a few set-based statements: counters, each new post's fan-out flag (same rule
 * as store_post_create: the author has fewer than fanout_limit followers) and the home rows, inserted in (owner, post)
 * order so the B-tree is appended to rather than shuffled. */
#include "app/store_sqlite.h"

#include <stdio.h>
#include <string.h>

static int exec(struct sq_store *s, const char *sql, const char *what)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sq_fail(s, what);
    return STORE_OK;
}

/* Binds the integer parameters vals[0..n) to ?1..?n of sql (prepared once, here) and runs it. */
static int exec_ints(struct sq_store *s, const char *sql, const int64_t *vals, int n, const char *what)
{
    sqlite3_stmt *q = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) {
        rc = sq_fail(s, what);
        goto out;
    }
    for (int i = 0; i < n; i++)
        sqlite3_bind_int64(q, i + 1, vals[i]);
    rc = sqlite3_step(q);
    rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? STORE_OK : sq_fail(s, what);
out:
    sqlite3_finalize(q);
    return rc;
}

static int64_t count(struct sq_store *s, const char *sql)
{
    sqlite3_stmt *q = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return n;
}

int sq_bulk_begin(struct store *st, int wipe)
{
    struct sq_store *s = (struct sq_store *)st;
    int rc;
    if (s->in_bulk) {
        snprintf(s->base.err, sizeof s->base.err, "bulk load already in progress");
        return STORE_ERROR;
    }
    /* must be set outside a transaction; restored by bulk_end */
    if ((rc = exec(s, "PRAGMA foreign_keys=OFF", "disabling foreign keys")) != STORE_OK ||
        (rc = exec(s, "PRAGMA cache_size=-1048576", "growing the page cache")) != STORE_OK)
        return rc;
    sqlite3_stmt *begin = sq_stmt(s, SQ_BEGIN);
    if (begin == NULL)
        return STORE_ERROR;
    for (int i = 0; i < 10; i++)
        if ((rc = sq_run(s, begin, "starting the bulk load")) != STORE_BUSY)
            break;
    if (rc != STORE_OK)
        goto fail;
    if (!wipe) {
        int64_t n = count(s, "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM posts)");
        if (n != 0) {
            snprintf(s->base.err, sizeof s->base.err, "bulk loading needs an empty database");
            rc = STORE_CONFLICT;
            goto fail;
        }
    }
    if (wipe && (rc = exec(s,
                           "DELETE FROM home; DELETE FROM likes; DELETE FROM sessions; DELETE FROM posts;"
                           "DELETE FROM follows; DELETE FROM accounts;",
                           "wiping the database")) != STORE_OK)
        goto fail;
    s->in_bulk = 1;
    s->bulk_first_post = 0;
    return STORE_OK;
fail:
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_exec(s->db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    sqlite3_exec(s->db, "PRAGMA cache_size=-32768", NULL, NULL, NULL);
    return rc;
}

int sq_bulk_account(struct store *st, const char *username, const char *display_name, const char *password_hash,
                    int64_t created_at, int64_t *id_out)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_ACC_INSERT);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_text(q, 1, username, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, display_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, password_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, created_at);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc == SQLITE_CONSTRAINT) {
        snprintf(s->base.err, sizeof s->base.err, "username %s already exists", username);
        return STORE_CONFLICT;
    }
    if (rc != SQLITE_DONE)
        return sq_fail(s, "inserting an account");
    *id_out = sqlite3_last_insert_rowid(s->db);
    return STORE_OK;
}

int sq_bulk_follow(struct store *st, int64_t follower, int64_t followee, int64_t created_at)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_BULK_FOLLOW);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, follower);
    sqlite3_bind_int64(q, 2, followee);
    sqlite3_bind_int64(q, 3, created_at);
    return sq_run(s, q, "inserting a follow");
}

int sq_bulk_post(struct store *st, int64_t author, const char *text, int64_t created_at, int64_t *id_out)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_BULK_POST);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, author);
    sqlite3_bind_text(q, 2, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, created_at);
    int rc = sq_run(s, q, "inserting a post");
    if (rc != STORE_OK)
        return rc;
    *id_out = sqlite3_last_insert_rowid(s->db);
    if (s->bulk_first_post == 0)
        s->bulk_first_post = *id_out;
    return STORE_OK;
}

/* Derives counters, fan-out flags and home rows from the raw rows (see the file comment). */
static int finish(struct sq_store *s)
{
    int64_t args[2] = {s->bulk_first_post > 0 ? s->bulk_first_post : INT64_MAX, s->base.fanout_limit};
    int rc;
    if ((rc = exec(s,
                   "UPDATE accounts SET"
                   " followers_count = (SELECT count(*) FROM follows WHERE followee = accounts.id),"
                   " following_count = (SELECT count(*) FROM follows WHERE follower = accounts.id),"
                   " posts_count = (SELECT count(*) FROM posts WHERE author = accounts.id)",
                   "computing counters")) != STORE_OK)
        return rc;
    if ((rc = exec_ints(s,
                        "UPDATE posts SET fanout = 0 WHERE id >= ?1 AND author IN"
                        " (SELECT id FROM accounts WHERE followers_count >= ?2)",
                        args, 2, "deciding fan-out")) != STORE_OK)
        return rc;
    if ((rc = exec(s, "INSERT OR IGNORE INTO home(owner, post_id) SELECT author, id FROM posts ORDER BY author, id",
                   "filling own timelines")) != STORE_OK)
        return rc;
    /* every post of a followee below the limit was marked fanout = 1 above (the database was
     * empty when the load began); the covering index posts_by_author avoids reading the posts */
    return exec_ints(s,
                     "INSERT OR IGNORE INTO home(owner, post_id)"
                     " SELECT f.follower, p.id FROM follows f CROSS JOIN accounts a CROSS JOIN posts p"
                     " WHERE a.id = f.followee AND a.followers_count < ?2 AND p.author = f.followee"
                     " ORDER BY f.follower, p.id",
                     args, 2, "filling home timelines");
}

int sq_bulk_end(struct store *st, int commit, struct store_bulk_stats *stats)
{
    struct sq_store *s = (struct sq_store *)st;
    int rc = STORE_OK;
    if (!s->in_bulk) {
        snprintf(s->base.err, sizeof s->base.err, "no bulk load in progress");
        return STORE_ERROR;
    }
    s->in_bulk = 0;
    if (commit && (rc = finish(s)) == STORE_OK && stats != NULL) {
        int64_t lim = s->base.fanout_limit;
        char sql[160];
        memset(stats, 0, sizeof *stats);
        stats->accounts = count(s, "SELECT count(*) FROM accounts");
        stats->follows = count(s, "SELECT count(*) FROM follows");
        stats->posts = count(s, "SELECT count(*) FROM posts");
        stats->fanout_posts = count(s, "SELECT count(*) FROM posts WHERE fanout = 1");
        stats->home_rows = count(s, "SELECT count(*) FROM home");
        snprintf(sql, sizeof sql, "SELECT count(*) FROM accounts WHERE followers_count >= %lld", (long long)lim);
        stats->big_accounts = count(s, sql);
        stats->max_followers = count(s, "SELECT coalesce(max(followers_count), 0) FROM accounts");
    }
    if (commit && rc == STORE_OK) {
        sqlite3_stmt *c = sq_stmt(s, SQ_COMMIT);
        rc = c == NULL ? STORE_ERROR : sq_run(s, c, "committing the bulk load");
    }
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_exec(s->db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    sqlite3_exec(s->db, "PRAGMA cache_size=-32768", NULL, NULL, NULL);
    if (rc == STORE_OK && commit)
        sqlite3_exec(s->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    return rc;
}
