/* store_sqlite_posts.c — SQLite store: posts, likes, post lists and the hybrid home timeline.
 * See store_sqlite.h, store.h and docs/TIMELINES.md. */
#include "app/store_sqlite.h"

#include <string.h>

/* Binds ?1 and ?2 and steps a statement that returns no rows; *changes gets the rows changed. */
static int run2(struct sq_store *s, enum sq_stmt id, int64_t a, int64_t b, int *changes, const char *what)
{
    sqlite3_stmt *q = sq_stmt(s, id);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a);
    sqlite3_bind_int64(q, 2, b);
    int rc = sq_run(s, q, what);
    if (changes != NULL)
        *changes = sqlite3_changes(s->db);
    return rc;
}

/* Runs a one-row lookup with ?1 = a. Returns STORE_OK with the first two integer columns in *c0
 * and *c1 (either may be NULL), or STORE_NOT_FOUND. */
static int lookup(struct sq_store *s, enum sq_stmt id, int64_t a, int64_t *c0, int64_t *c1)
{
    sqlite3_stmt *q = sq_stmt(s, id);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a);
    int rc = sqlite3_step(q), ret;
    if (rc == SQLITE_ROW) {
        if (c0 != NULL)
            *c0 = sqlite3_column_int64(q, 0);
        if (c1 != NULL)
            *c1 = sqlite3_column_int64(q, 1);
        ret = STORE_OK;
    } else {
        ret = rc == SQLITE_DONE ? STORE_NOT_FOUND : sq_fail(s, "looking up a post");
    }
    sqlite3_reset(q);
    return ret;
}

struct post_args {
    int64_t author;
    const char *text;
    size_t text_len;
    int64_t reply_to;
    const char *key;
    const unsigned char *hash;
    int64_t now;
    int64_t *id_out;
};

/* Looks for author's post with Idempotency-Key key. Returns STORE_NOT_FOUND, STORE_OK with *id
 * (the same request again), or STORE_CONFLICT with *id when both that post and this request have
 * a body hash and they differ. */
static int by_key(struct sq_store *s, const struct post_args *a, int64_t *id)
{
    sqlite3_stmt *q = sq_stmt(s, SQ_POST_BY_KEY);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a->author);
    sqlite3_bind_text(q, 2, a->key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q), ret;
    if (rc == SQLITE_ROW) {
        const void *h = sqlite3_column_blob(q, 1);
        int hn = sqlite3_column_bytes(q, 1);
        *id = sqlite3_column_int64(q, 0);
        ret = STORE_OK;
        if (a->hash != NULL && h != NULL && (hn != STORE_BODY_HASH_LEN || memcmp(h, a->hash, STORE_BODY_HASH_LEN) != 0))
            ret = STORE_CONFLICT;
    } else {
        ret = rc == SQLITE_DONE ? STORE_NOT_FOUND : sq_fail(s, "looking up a post");
    }
    sqlite3_reset(q);
    return ret;
}

static int post_create_tx(struct sq_store *s, void *arg)
{
    struct post_args *a = arg;
    int64_t id = 0, followers = 0;
    int rc;
    if (a->key != NULL) {
        rc = by_key(s, a, &id);
        if (rc == STORE_OK || rc == STORE_CONFLICT)
            *a->id_out = id;
        if (rc != STORE_NOT_FOUND)
            return rc;
    }
    if (a->reply_to != 0 && (rc = lookup(s, SQ_POST_EXISTS, a->reply_to, NULL, NULL)) != STORE_OK)
        return rc;
    sqlite3_stmt *q = sq_stmt(s, SQ_ACC_BY_ID);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a->author);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        followers = sqlite3_column_int64(q, 4);
    sqlite3_reset(q);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? STORE_NOT_FOUND : sq_fail(s, "looking up the author");
    int fanout = followers < s->base.fanout_limit;

    if ((q = sq_stmt(s, SQ_POST_INSERT)) == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a->author);
    sqlite3_bind_text(q, 2, a->text, (int)a->text_len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, a->now);
    if (a->reply_to != 0)
        sqlite3_bind_int64(q, 4, a->reply_to);
    else
        sqlite3_bind_null(q, 4);
    sqlite3_bind_int(q, 5, fanout);
    if (a->key != NULL)
        sqlite3_bind_text(q, 6, a->key, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 6);
    if (a->key != NULL && a->hash != NULL)
        sqlite3_bind_blob(q, 7, a->hash, STORE_BODY_HASH_LEN, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 7);
    if ((rc = sq_run(s, q, "creating a post")) != STORE_OK)
        return rc;
    id = sqlite3_last_insert_rowid(s->db);
    if ((rc = run2(s, SQ_ACC_ADD_POSTS, a->author, 1, NULL, "counting posts")) != STORE_OK ||
        (a->reply_to != 0 &&
         (rc = run2(s, SQ_POST_ADD_REPLIES, a->reply_to, 1, NULL, "counting replies")) != STORE_OK) ||
        (rc = run2(s, SQ_HOME_OWN, a->author, id, NULL, "adding to the home timeline")) != STORE_OK ||
        (fanout && (rc = run2(s, SQ_HOME_FANOUT, a->author, id, NULL, "fanning out")) != STORE_OK))
        return rc;
    *a->id_out = id;
    return STORE_OK;
}

int sq_post_create(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                   const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out)
{
    struct post_args a = {author, text, text_len, reply_to, idem_key, idem_hash, now, id_out};
    return sq_write((struct sq_store *)st, post_create_tx, &a);
}

struct delete_args {
    int64_t id, author;
};

static int post_delete_tx(struct sq_store *s, void *arg)
{
    struct delete_args *a = arg;
    int64_t author = 0, reply_to = 0;
    int rc = lookup(s, SQ_POST_META, a->id, &author, &reply_to);
    if (rc != STORE_OK)
        return rc;
    if (author != a->author)
        return STORE_FORBIDDEN;
    /* home rows exist exactly for the author and the current followers (fan-out invariant) */
    if ((rc = run2(s, SQ_HOME_DELETE_POST, author, a->id, NULL, "removing from home timelines")) != STORE_OK ||
        (rc = run2(s, SQ_POST_DELETE, a->id, 0, NULL, "deleting a post")) != STORE_OK ||
        (rc = run2(s, SQ_POST_IDS_RAISE, a->id, 0, NULL, "keeping the post id")) != STORE_OK ||
        (rc = run2(s, SQ_ACC_ADD_POSTS, author, -1, NULL, "counting posts")) != STORE_OK)
        return rc;
    if (reply_to != 0)
        rc = run2(s, SQ_POST_ADD_REPLIES, reply_to, -1, NULL, "counting replies");
    return rc;
}

int sq_post_delete(struct store *st, int64_t id, int64_t author)
{
    struct delete_args a = {id, author};
    return sq_write((struct sq_store *)st, post_delete_tx, &a);
}

struct like_args {
    int64_t post, account, now;
    int on;
};

static int like_tx(struct sq_store *s, void *arg)
{
    struct like_args *a = arg;
    int changed = 0;
    int rc = lookup(s, SQ_POST_EXISTS, a->post, NULL, NULL);
    if (rc != STORE_OK)
        return rc;
    if (a->on) {
        sqlite3_stmt *q = sq_stmt(s, SQ_LIKE_INSERT);
        if (q == NULL)
            return STORE_ERROR;
        sqlite3_bind_int64(q, 1, a->post);
        sqlite3_bind_int64(q, 2, a->account);
        sqlite3_bind_int64(q, 3, a->now);
        rc = sq_run(s, q, "liking");
        changed = sqlite3_changes(s->db);
    } else {
        rc = run2(s, SQ_LIKE_DELETE, a->post, a->account, &changed, "unliking");
    }
    if (rc != STORE_OK || changed == 0)
        return rc;
    return run2(s, SQ_POST_ADD_LIKES, a->post, a->on ? 1 : -1, NULL, "counting likes");
}

int sq_like(struct store *st, int64_t post, int64_t account, int on, int64_t now)
{
    struct like_args a = {post, account, now, on};
    return sq_write((struct sq_store *)st, like_tx, &a);
}

/* Steps q (parameters bound) and calls cb for each post row until it returns non-zero. Returns
 * STORE_OK, or STORE_NOT_FOUND when want_row is set and there was no row. Resets q. */
static int stream_posts(struct sq_store *s, sqlite3_stmt *q, store_post_cb cb, void *ctx, int want_row)
{
    struct store_post p;
    int rc, rows = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        rows++;
        p.id = sqlite3_column_int64(q, 0);
        p.text = (const char *)sqlite3_column_text(q, 1);
        p.text_len = (size_t)sqlite3_column_bytes(q, 1);
        if (p.text == NULL)
            p.text = "";
        p.created_at = sqlite3_column_int64(q, 2);
        p.reply_to = sqlite3_column_int64(q, 3); /* NULL reads as 0 */
        p.likes_count = sqlite3_column_int64(q, 4);
        p.replies_count = sqlite3_column_int64(q, 5);
        p.liked = sqlite3_column_int(q, 6);
        sq_read_account(q, 7, &p.author);
        if (cb(ctx, &p) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    int ret = rc == SQLITE_DONE ? STORE_OK : sq_fail(s, "reading posts");
    sqlite3_reset(q);
    if (ret == STORE_OK && want_row && rows == 0)
        ret = STORE_NOT_FOUND;
    return ret;
}

int sq_post_get(struct store *st, int64_t id, int64_t viewer, store_post_cb cb, void *ctx)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_POST_GET);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_int64(q, 2, viewer);
    return stream_posts(s, q, cb, ctx, 1);
}

/* Runs a list statement of the form (?1 key, ?2 max_id, ?3 since_id, ?4 limit[, ?5 viewer]). */
static int list(struct sq_store *s, enum sq_stmt id, int64_t key, int64_t viewer, const struct store_page *page,
                store_post_cb cb, void *ctx)
{
    sqlite3_stmt *q = sq_stmt(s, id);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, key);
    sq_bind_page(q, 2, 3, 4, page);
    if (sqlite3_bind_parameter_count(q) >= 5)
        sqlite3_bind_int64(q, 5, viewer);
    return stream_posts(s, q, cb, ctx, 0);
}

int sq_posts_by_author(struct store *st, int64_t author, int64_t viewer, const struct store_page *page,
                       store_post_cb cb, void *ctx)
{
    return list((struct sq_store *)st, SQ_LIST_AUTHOR, author, viewer, page, cb, ctx);
}

int sq_replies(struct store *st, int64_t post, int64_t viewer, const struct store_page *page, store_post_cb cb,
               void *ctx)
{
    return list((struct sq_store *)st, SQ_LIST_REPLIES, post, viewer, page, cb, ctx);
}

int sq_home(struct store *st, int64_t owner, const struct store_page *page, store_post_cb cb, void *ctx)
{
    return list((struct sq_store *)st, SQ_LIST_HOME, owner, owner, page, cb, ctx);
}
