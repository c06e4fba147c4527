/* store_postgres_bulk.c — PostgreSQL store: bulk loading for `agora seed`. See store.h.
 *
 * Loads into an empty database only (or one wiped first), in one transaction (BEGIN in
 * bulk_begin, COMMIT in bulk_end) with statement_timeout off. Ids come from the tables' own
 * sequences, reserved ID_BATCH at a time with nextval, so they are real ids whatever the
 * database saw before (a wipe does not restart the sequences). Rows are buffered in COPY's text
 * format and sent with COPY ... FROM STDIN whenever the buffers reach FLUSH_BYTES, accounts first,
 * then posts, then follows, so that the foreign keys of each batch point to rows already sent.
 * A taken username is reported (STORE_CONFLICT) by the call that sends its batch. bulk_end derives
 * counters, each post's fan-out flag (same rule as store_post_create: the author has fewer than
 * fanout_limit followers) and the home rows with set-based statements, then VACUUM (ANALYZE)s the
 * tables after the commit: the planner learns their sizes, and the visibility map lets index-only
 * scans (home timelines) skip the table. */
#include "app/store_postgres.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

#define ID_BATCH        1000
#define FLUSH_BYTES     (4u << 20)
#define BULK_TIMEOUT_MS (3600 * 1000)

struct rows {
    char *p;
    size_t n, cap;
};

struct ids {
    int64_t v[ID_BATCH];
    int pos, count;
};

struct pg_bulk {
    struct rows accounts, posts, follows;
    struct ids account_ids, post_ids;
    int64_t first_post; /* id of the first post loaded, 0 = none yet */
    int saved_timeout_ms;
};

static void rows_put(struct rows *r, const char *p, size_t n)
{
    if (r->n + n > r->cap) {
        r->cap = (r->n + n) * 2;
        r->p = alloc_realloc(r->p, r->cap);
    }
    memcpy(r->p + r->n, p, n);
    r->n += n;
}

/* Appends a text field in COPY's text format, followed by sep. */
static void rows_text(struct rows *r, const char *s, char sep)
{
    char tmp[256];
    size_t n = 0;
    for (; *s != '\0'; s++) {
        if (n + 2 >= sizeof tmp) {
            rows_put(r, tmp, n);
            n = 0;
        }
        char c = *s;
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            tmp[n++] = '\\';
            c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
        }
        tmp[n++] = c;
    }
    tmp[n++] = sep;
    rows_put(r, tmp, n);
}

static void rows_int(struct rows *r, int64_t v, char sep)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld%c", (long long)v, sep);
    rows_put(r, tmp, (size_t)n);
}

/* Sends the buffered rows, accounts, then posts, then follows. */
static int flush(struct pg_store *s)
{
    struct pg_bulk *b = s->bulk;
    int rc = STORE_OK;
    if (b->accounts.n > 0)
        rc = pg_copy(s, "COPY accounts(id, username, display_name, password_hash, created_at) FROM STDIN",
                     b->accounts.p, b->accounts.n, "loading accounts");
    if (rc == STORE_OK && b->posts.n > 0)
        rc = pg_copy(s, "COPY posts(id, author, text, created_at) FROM STDIN", b->posts.p, b->posts.n, "loading posts");
    if (rc == STORE_OK && b->follows.n > 0)
        rc = pg_copy(s, "COPY follows(follower, followee, created_at) FROM STDIN", b->follows.p, b->follows.n,
                     "loading follows");
    b->accounts.n = b->posts.n = b->follows.n = 0;
    return rc;
}

static int maybe_flush(struct pg_store *s)
{
    struct pg_bulk *b = s->bulk;
    return b->accounts.n + b->posts.n + b->follows.n >= FLUSH_BYTES ? flush(s) : STORE_OK;
}

/* Takes the next reserved id of table's sequence, reserving ID_BATCH more when none is left. */
static int next_id(struct pg_store *s, struct ids *ids, const char *table, int64_t *id)
{
    if (ids->pos == ids->count) {
        char sql[160];
        PGresult *r = NULL;
        snprintf(sql, sizeof sql, "SELECT nextval(pg_get_serial_sequence('%s', 'id')) FROM generate_series(1, %d)",
                 table, ID_BATCH);
        int rc = pg_exec(s, sql, "reserving ids", &r);
        if (rc == STORE_OK && PQntuples(r) != ID_BATCH)
            rc = pg_fail(s, STORE_ERROR, "reserving ids: %d rows", PQntuples(r));
        for (int i = 0; rc == STORE_OK && i < ID_BATCH; i++)
            ids->v[i] = pg_int(r, i, 0);
        PQclear(r);
        if (rc != STORE_OK)
            return rc;
        ids->pos = 0;
        ids->count = ID_BATCH;
    }
    *id = ids->v[ids->pos++];
    return STORE_OK;
}

void pg_bulk_free(struct pg_store *s)
{
    if (s->bulk == NULL)
        return;
    free(s->bulk->accounts.p);
    free(s->bulk->posts.p);
    free(s->bulk->follows.p);
    free(s->bulk);
    s->bulk = NULL;
}

int pg_bulk_begin(struct store *st, int wipe)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *r = NULL;
    int rc;
    if (s->in_bulk)
        return pg_fail(s, STORE_ERROR, "bulk load already in progress");
    if ((rc = st->ops->ping(st)) != STORE_OK) /* (re)connects */
        return rc;
    if ((rc = pg_exec(s, "BEGIN; SET LOCAL statement_timeout = 0", "starting the bulk load", NULL)) != STORE_OK)
        goto fail;
    if (!wipe) {
        rc = pg_exec(s, "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM posts)", "counting rows", &r);
        if (rc == STORE_OK && pg_int(r, 0, 0) != 0)
            rc = pg_fail(s, STORE_CONFLICT, "bulk loading needs an empty database");
        PQclear(r);
        if (rc != STORE_OK)
            goto fail;
    }
    if (wipe &&
        (rc = pg_exec(s, "TRUNCATE home, likes, sessions, posts, unfanned_follows, follows, accounts, unfanned_authors",
                      "wiping the database", NULL)) != STORE_OK)
        goto fail;
    s->bulk = alloc_calloc(1, sizeof *s->bulk);
    s->bulk->saved_timeout_ms = s->timeout_ms;
    s->timeout_ms = BULK_TIMEOUT_MS;
    s->in_bulk = 1;
    return STORE_OK;
fail:
    if (s->conn != NULL)
        pg_exec(s, "ROLLBACK", "rollback", NULL);
    return rc;
}

int pg_bulk_account(struct store *st, const char *username, const char *display_name, const char *password_hash,
                    int64_t created_at, int64_t *id_out)
{
    struct pg_store *s = (struct pg_store *)st;
    int rc;
    if (!s->in_bulk)
        return pg_fail(s, STORE_ERROR, "no bulk load in progress");
    if ((rc = next_id(s, &s->bulk->account_ids, "accounts", id_out)) != STORE_OK)
        return rc;
    struct rows *r = &s->bulk->accounts;
    rows_int(r, *id_out, '\t');
    rows_text(r, username, '\t');
    rows_text(r, display_name, '\t');
    rows_text(r, password_hash, '\t');
    rows_int(r, created_at, '\n');
    return maybe_flush(s);
}

int pg_bulk_follow(struct store *st, int64_t follower, int64_t followee, int64_t created_at)
{
    struct pg_store *s = (struct pg_store *)st;
    if (!s->in_bulk)
        return pg_fail(s, STORE_ERROR, "no bulk load in progress");
    struct rows *r = &s->bulk->follows;
    rows_int(r, follower, '\t');
    rows_int(r, followee, '\t');
    rows_int(r, created_at, '\n');
    return maybe_flush(s);
}

int pg_bulk_post(struct store *st, int64_t author, const char *text, int64_t created_at, int64_t *id_out)
{
    struct pg_store *s = (struct pg_store *)st;
    int rc;
    if (!s->in_bulk)
        return pg_fail(s, STORE_ERROR, "no bulk load in progress");
    if ((rc = next_id(s, &s->bulk->post_ids, "posts", id_out)) != STORE_OK)
        return rc;
    if (s->bulk->first_post == 0)
        s->bulk->first_post = *id_out;
    struct rows *r = &s->bulk->posts;
    rows_int(r, *id_out, '\t');
    rows_int(r, author, '\t');
    rows_text(r, text, '\t');
    rows_int(r, created_at, '\n');
    return maybe_flush(s);
}

/* Derives counters, fan-out flags and home rows from the raw rows (see the file comment). */
static int finish(struct pg_store *s)
{
    char sql[1024];
    long long first = s->bulk->first_post > 0 ? (long long)s->bulk->first_post : (long long)INT64_MAX;
    int lim = s->base.fanout_limit;
    int rc = pg_exec(s,
                     "UPDATE accounts a SET followers_count = c.fr, following_count = c.fg, posts_count = c.po"
                     " FROM (SELECT x.id, coalesce(fr.n, 0) AS fr, coalesce(fg.n, 0) AS fg, coalesce(po.n, 0) AS po"
                     "  FROM accounts x"
                     "  LEFT JOIN (SELECT followee AS id, count(*) AS n FROM follows GROUP BY 1) fr USING (id)"
                     "  LEFT JOIN (SELECT follower AS id, count(*) AS n FROM follows GROUP BY 1) fg USING (id)"
                     "  LEFT JOIN (SELECT author AS id, count(*) AS n FROM posts GROUP BY 1) po USING (id)) c"
                     " WHERE c.id = a.id AND (a.followers_count, a.following_count, a.posts_count)"
                     "  IS DISTINCT FROM (c.fr, c.fg, c.po)",
                     "computing counters", NULL);
    if (rc != STORE_OK)
        return rc;
    snprintf(sql, sizeof sql,
             "UPDATE posts SET fanout = false WHERE id >= %lld AND author IN"
             " (SELECT id FROM accounts WHERE followers_count >= %d)",
             first, lim);
    if ((rc = pg_exec(s, sql, "deciding fan-out", NULL)) != STORE_OK)
        return rc;
    if ((rc = pg_exec(s,
                      "INSERT INTO unfanned_authors SELECT DISTINCT author FROM posts WHERE NOT fanout"
                      " ON CONFLICT DO NOTHING",
                      "listing the authors merged at read time", NULL)) != STORE_OK)
        return rc;
    if ((rc = pg_exec(s, "INSERT INTO home(owner, post_id) SELECT author, id FROM posts ORDER BY 1, 2",
                      "filling own timelines", NULL)) != STORE_OK)
        return rc;
    /* every post of a followee below the limit was marked fanout = true above (the database was
     * empty when the load began); no row can repeat (follows are unique and never to oneself), so
     * no ON CONFLICT, whose speculative insertion costs about a third more */
    snprintf(sql, sizeof sql,
             "INSERT INTO home(owner, post_id) SELECT f.follower, p.id FROM follows f"
             " JOIN accounts a ON a.id = f.followee AND a.followers_count < %d"
             " JOIN posts p ON p.author = f.followee ORDER BY 1, 2",
             lim);
    return pg_exec(s, sql, "filling home timelines", NULL);
}

static int stats_of(struct pg_store *s, struct store_bulk_stats *stats)
{
    char sql[640];
    PGresult *r = NULL;
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM follows), (SELECT count(*) FROM posts),"
             " (SELECT count(*) FROM posts WHERE fanout), (SELECT count(*) FROM home),"
             " (SELECT count(*) FROM accounts WHERE followers_count >= %d),"
             " (SELECT coalesce(max(followers_count), 0) FROM accounts)",
             s->base.fanout_limit);
    int rc = pg_exec(s, sql, "counting rows", &r);
    if (rc == STORE_OK) {
        memset(stats, 0, sizeof *stats);
        stats->accounts = pg_int(r, 0, 0);
        stats->follows = pg_int(r, 0, 1);
        stats->posts = pg_int(r, 0, 2);
        stats->fanout_posts = pg_int(r, 0, 3);
        stats->home_rows = pg_int(r, 0, 4);
        stats->big_accounts = pg_int(r, 0, 5);
        stats->max_followers = pg_int(r, 0, 6);
    }
    PQclear(r);
    return rc;
}

int pg_bulk_end(struct store *st, int commit, struct store_bulk_stats *stats)
{
    struct pg_store *s = (struct pg_store *)st;
    int rc = STORE_OK;
    if (!s->in_bulk)
        return pg_fail(s, STORE_ERROR, "no bulk load in progress");
    if (commit && (rc = flush(s)) == STORE_OK && (rc = finish(s)) == STORE_OK && stats != NULL)
        rc = stats_of(s, stats);
    if (commit && rc == STORE_OK)
        rc = pg_exec(s, "COMMIT", "committing the bulk load", NULL);
    else if (s->conn != NULL)
        pg_exec(s, "ROLLBACK", "rollback", NULL);
    if (commit && rc == STORE_OK)
        /* unfanned_follows too: the home merge probes it per page (index-only once visible) */
        pg_exec(s, "VACUUM (ANALYZE) accounts, follows, posts, home, unfanned_follows", "vacuuming", NULL);
    s->timeout_ms = s->bulk->saved_timeout_ms;
    s->in_bulk = 0;
    pg_bulk_free(s);
    return rc;
}
