/* store_postgres_posts.c — PostgreSQL store: posts, likes, post lists and the hybrid home
 * timeline. Each call is one round trip (store_postgres.h); the SQL is in the statement table of
 * store_postgres.c. See store.h and docs/TIMELINES.md. */
#include "app/store_postgres.h"

#include <string.h>

#include "core/alloc.h"

static void stream_posts(const PGresult *r, int c, const struct store_account *author, store_post_cb cb, void *ctx);

int pg_post_create(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                   const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out)
{
    return pg_post_create_get(st, author, text, text_len, reply_to, idem_key, idem_hash, now, id_out, NULL, NULL);
}

/* A post that is no reply and has no Idempotency-Key (every compose of the social mix):
 * PG_POST_COUNT, whose row is the author, and PG_POST_CREATE_PLAIN, whose row is the new id; the
 * post as its author sees it is theirs with the call's text and time and zero counters. text is
 * NUL-terminated at text_len. */
static int create_plain(struct pg_store *s, int64_t author, const char *text, size_t text_len, int64_t now,
                        int64_t *id_out, store_post_cb cb, void *ctx)
{
    struct pg_q q[2] = {{.id = PG_POST_COUNT, .n = 1}, {.id = PG_POST_CREATE_PLAIN, .n = 4}};
    pg_q_int(&q[0], 0, author);
    pg_q_int(&q[1], 0, author);
    pg_q_text(&q[1], 1, text, text_len);
    pg_q_int(&q[1], 2, now);
    pg_q_int(&q[1], 3, s->base.fanout_limit);
    int rc = pg_batch(s, q, 2, PG_WRITE | PG_RACY, "creating a post");
    if (rc != STORE_OK)
        return rc;
    if (PQntuples(q[0].res) != 1 || PQntuples(q[1].res) != 1) {
        rc = STORE_NOT_FOUND; /* no such author */
    } else {
        *id_out = pg_int(q[1].res, 0, 0);
        if (cb != NULL) {
            struct store_post p = {.id = *id_out, .text = text, .text_len = text_len, .created_at = now};
            pg_read_account(q[0].res, 0, 0, &p.author);
            cb(ctx, &p);
        }
    }
    pg_q_clear(q, 2);
    return rc;
}

/* Any other post: PG_LOCK_ACCOUNT, PG_POST_CREATE and, with cb, PG_POST_CREATED reading the post
 * back as the third statement of the write's pipeline. text is NUL-terminated at text_len. */
static int create_general(struct pg_store *s, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                          const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out,
                          store_post_cb cb, void *ctx)
{
    struct pg_q q[3] = {
        {.id = PG_LOCK_ACCOUNT, .n = 1}, {.id = PG_POST_CREATE, .n = 7}, {.id = PG_POST_CREATED, .n = 2}};
    int nq = cb != NULL ? 3 : 2;
    pg_q_int(&q[0], 0, author);
    pg_q_int(&q[1], 0, author);
    pg_q_text(&q[1], 1, text, text_len);
    pg_q_int(&q[1], 2, now);
    if (reply_to != 0)
        pg_q_int(&q[1], 3, reply_to);
    pg_q_int(&q[1], 4, s->base.fanout_limit);
    pg_q_int(&q[2], 0, author);
    if (idem_key != NULL) {
        pg_q_text(&q[1], 5, idem_key, strlen(idem_key));
        pg_q_text(&q[2], 1, idem_key, strlen(idem_key));
    }
    if (idem_key != NULL && idem_hash != NULL)
        pg_q_bytes(&q[1], 6, idem_hash, STORE_BODY_HASH_LEN);
    /* PG_RACY: a parent deleted meanwhile (foreign key) or a key taken meanwhile (unique index)
     * is found by the next attempt */
    int rc = pg_batch(s, q, nq, PG_WRITE | PG_RACY, "creating a post");
    if (rc == STORE_OK) {
        const PGresult *r = q[1].res;
        if (!PQgetisnull(r, 0, 1)) { /* the key's post */
            *id_out = pg_int(r, 0, 1);
            rc = pg_bool(r, 0, 2) ? STORE_CONFLICT : STORE_OK;
        } else if (!PQgetisnull(r, 0, 0)) {
            *id_out = pg_int(r, 0, 0);
        } else {
            rc = STORE_NOT_FOUND; /* no such author, or no such parent */
        }
        if (rc == STORE_OK && cb != NULL)
            stream_posts(q[2].res, 0, NULL, cb, ctx);
    }
    pg_q_clear(q, nq);
    return rc;
}

int pg_post_create_get(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                       const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out,
                       store_post_cb cb, void *ctx)
{
    struct pg_store *s = (struct pg_store *)st;
    if (memchr(text, '\0', text_len) != NULL) /* PostgreSQL's text cannot hold NUL */
        return pg_fail(s, STORE_ERROR, "creating a post: the text contains a NUL character");
    /* text parameters are NUL-terminated: copy when the caller's text is not */
    char small[1024], *copy = text_len < sizeof small ? small : NULL;
    if (copy == NULL)
        copy = alloc_malloc(text_len + 1);
    memcpy(copy, text, text_len);
    copy[text_len] = '\0';
    int rc = reply_to == 0 && idem_key == NULL
                 ? create_plain(s, author, copy, text_len, now, id_out, cb, ctx)
                 : create_general(s, author, copy, text_len, reply_to, idem_key, idem_hash, now, id_out, cb, ctx);
    if (copy != small)
        free(copy);
    return rc;
}

int pg_post_delete(struct store *st, int64_t id, int64_t author)
{
    struct pg_q q[2] = {{.id = PG_LOCK_ACCOUNT, .n = 1}, {.id = PG_POST_DELETE, .n = 2}};
    pg_q_int(&q[0], 0, author);
    pg_q_int(&q[1], 0, id);
    pg_q_int(&q[1], 1, author);
    /* not sent again after a lost connection: a post deleted by the first sending would then
     * read as not found */
    int rc = pg_batch((struct pg_store *)st, q, 2, PG_WRITE | PG_RACY, "deleting a post");
    if (rc == STORE_OK) {
        if (PQgetisnull(q[1].res, 0, 0))
            rc = STORE_NOT_FOUND;
        else if (pg_int(q[1].res, 0, 0) != author)
            rc = STORE_FORBIDDEN;
    }
    pg_q_clear(q, 2);
    return rc;
}

int pg_like(struct store *st, int64_t post, int64_t account, int on, int64_t now)
{
    struct pg_q q = {.id = on ? PG_LIKE : PG_UNLIKE, .n = on ? 3 : 2};
    pg_q_int(&q, 0, post);
    pg_q_int(&q, 1, account);
    if (on)
        pg_q_int(&q, 2, now);
    int rc = pg_batch((struct pg_store *)st, &q, 1, PG_WRITE | PG_RACY | PG_RESEND, on ? "liking" : "unliking");
    if (rc == STORE_OK && !pg_bool(q.res, 0, 0))
        rc = STORE_NOT_FOUND;
    pg_q_clear(&q, 1);
    return rc;
}

/* Calls cb for each post row of r until it returns non-zero: POST_COLS from column c, or with
 * author, POST_OWN_COLS (or POST_OWN_COLS_UNLIKED: nothing liked) and every post's author is
 * *author. */
static void stream_posts(const PGresult *r, int c, const struct store_account *author, store_post_cb cb, void *ctx)
{
    struct store_post p;
    int liked = author == NULL || PQnfields(r) > c + 6; /* a liked column */
    if (author != NULL)
        p.author = *author;
    for (int i = 0; i < PQntuples(r); i++) {
        p.id = pg_int(r, i, c);
        p.text = PQgetvalue(r, i, c + 1);
        p.text_len = (size_t)PQgetlength(r, i, c + 1);
        p.created_at = pg_int(r, i, c + 2);
        p.reply_to = pg_int(r, i, c + 3); /* NULL reads as 0 */
        p.likes_count = pg_int(r, i, c + 4);
        p.replies_count = pg_int(r, i, c + 5);
        p.liked = liked && pg_bool(r, i, c + 6);
        if (author == NULL)
            pg_read_account(r, i, c + 7, &p.author);
        if (cb(ctx, &p) != 0)
            break;
    }
}

int pg_post_get(struct store *st, int64_t id, int64_t viewer, store_post_cb cb, void *ctx)
{
    struct pg_q q = {.id = PG_POST_GET, .n = 2};
    pg_q_int(&q, 0, id);
    pg_q_int(&q, 1, viewer);
    int rc = pg_batch_row((struct pg_store *)st, &q, 1, PG_RESEND, "reading a post");
    if (rc != STORE_OK)
        return rc;
    stream_posts(q.res, 0, NULL, cb, ctx);
    pg_q_clear(&q, 1);
    return STORE_OK;
}

/* Sets a list statement's $2 max_id, $3 since_id and $4 limit from page. */
static void page_params(struct pg_q *q, const struct store_page *page)
{
    pg_q_int(q, 1, page->max_id > 0 ? page->max_id : INT64_MAX);
    pg_q_int(q, 2, page->since_id > 0 ? page->since_id : 0);
    pg_q_int(q, 3, page->limit > 0 ? page->limit : 1);
}

/* Runs a list statement of the form ($1 key, $2 max_id, $3 since_id, $4 limit[, $5 viewer]). */
static int list(struct pg_store *s, enum pg_stmt id, int nparams, int64_t key, int64_t viewer,
                const struct store_page *page, store_post_cb cb, void *ctx)
{
    struct pg_q q = {.id = id, .n = nparams};
    pg_q_int(&q, 0, key);
    page_params(&q, page);
    if (nparams >= 5)
        pg_q_int(&q, 4, viewer);
    int rc = pg_batch(s, &q, 1, PG_RESEND, "reading posts");
    if (rc == STORE_OK)
        stream_posts(q.res, 0, NULL, cb, ctx);
    pg_q_clear(&q, 1);
    return rc;
}

int pg_posts_by_author(struct store *st, int64_t author, int64_t viewer, const struct store_page *page,
                       store_post_cb cb, void *ctx)
{
    return list((struct pg_store *)st, PG_LIST_AUTHOR, 5, author, viewer, page, cb, ctx);
}

int pg_replies(struct store *st, int64_t post, int64_t viewer, const struct store_page *page, store_post_cb cb,
               void *ctx)
{
    return list((struct pg_store *)st, PG_LIST_REPLIES, 5, post, viewer, page, cb, ctx);
}

int pg_home(struct store *st, int64_t owner, const struct store_page *page, store_post_cb cb, void *ctx)
{
    return list((struct pg_store *)st, PG_LIST_HOME, 4, owner, owner, page, cb, ctx);
}

/* The session (PG_SESS_ACCOUNT, or without me PG_SESS_ONLY) and its home page in one pipeline.
 * The page is PG_SESS_HOME's; while s->unfanned is 0 it is asked of PG_SESS_HOME_FANNED instead,
 * whose last column says whether that was the same page (no unfanned author): when it was not,
 * or when the page came back empty (no row to say), both statements are sent again with
 * PG_SESS_HOME, a second round trip. unfanned_authors is never pruned, so once seen non-empty
 * the store merges from then on. */
int pg_session_home(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                    const struct store_page *page, struct store_account *me, struct store_session *session,
                    store_post_cb cb, void *ctx)
{
    struct pg_store *s = (struct pg_store *)st;
    int64_t oldest = now - s->base.session_ttl_ms;
    int merge = s->unfanned;
    for (;;) {
        struct pg_q q[2] = {{.id = me != NULL ? PG_SESS_ACCOUNT : PG_SESS_ONLY, .n = 2},
                            {.id = merge ? PG_SESS_HOME : PG_SESS_HOME_FANNED, .n = 5}};
        pg_q_bytes(&q[0], 0, hash, STORE_TOKEN_HASH_LEN);
        pg_q_int(&q[0], 1, oldest);
        pg_q_bytes(&q[1], 0, hash, STORE_TOKEN_HASH_LEN);
        page_params(&q[1], page);
        pg_q_int(&q[1], 4, oldest);
        int rc = pg_batch_row(s, q, 2, PG_RESEND, "reading the home timeline");
        if (rc != STORE_OK)
            return rc;
        int rows = PQntuples(q[1].res);
        if (!merge && (rows == 0 || pg_bool(q[1].res, 0, PQnfields(q[1].res) - 1))) {
            if (rows > 0)
                s->unfanned = 1;
            pg_q_clear(q, 2);
            merge = 1;
            continue;
        }
        if (me != NULL)
            pg_read_session(q[0].res, 0, me, session);
        else if (session != NULL)
            pg_read_session_cols(q[0].res, 0, 0, session);
        stream_posts(q[1].res, 0, NULL, cb, ctx);
        pg_q_clear(q, 2);
        return STORE_OK;
    }
}

/* The account (PG_ACC_BY_NAME) and its posts (PG_LIST_NAME, or PG_LIST_NAME_ANON for no viewer)
 * in one pipeline. */
int pg_posts_by_name(struct store *st, const char *username, int64_t viewer, const struct store_page *page,
                     struct store_account *author, store_post_cb cb, void *ctx)
{
    size_t n = strlen(username);
    struct pg_q q[2] = {{.id = PG_ACC_BY_NAME, .n = 1},
                        {.id = viewer > 0 ? PG_LIST_NAME : PG_LIST_NAME_ANON, .n = viewer > 0 ? 5 : 4}};
    pg_q_text(&q[0], 0, username, n);
    pg_q_text(&q[1], 0, username, n);
    page_params(&q[1], page);
    if (viewer > 0)
        pg_q_int(&q[1], 4, viewer);
    int rc = pg_batch_row((struct pg_store *)st, q, 2, PG_RESEND, "reading posts");
    if (rc != STORE_OK)
        return rc;
    pg_read_account(q[0].res, 0, 0, author);
    stream_posts(q[1].res, 0, author, cb, ctx);
    pg_q_clear(q, 2);
    return STORE_OK;
}
