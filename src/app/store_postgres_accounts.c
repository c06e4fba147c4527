/* store_postgres_accounts.c — PostgreSQL store: accounts, sessions, follows and throttles, one
 * round trip each (store_postgres.h); the SQL is in the statement table of store_postgres.c.
 * See store.h for what each call means. */
#include "app/store_postgres.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

/* Runs a one-account query with the username as its parameter. */
static int account_query(struct pg_store *s, enum pg_stmt id, const char *username, struct store_account *out,
                         char *hash)
{
    struct pg_q q = {.id = id, .n = 1};
    pg_q_text(&q, 0, username, strlen(username));
    int rc = pg_batch_row(s, &q, 1, PG_RESEND, "looking up an account");
    if (rc != STORE_OK)
        return rc;
    pg_read_account(q.res, 0, 0, out);
    if (hash != NULL)
        snprintf(hash, STORE_HASH_MAX, "%s", PQgetvalue(q.res, 0, 7));
    pg_q_clear(&q, 1);
    return STORE_OK;
}

int pg_account_by_name(struct store *st, const char *username, struct store_account *out)
{
    return account_query((struct pg_store *)st, PG_ACC_BY_NAME, username, out, NULL);
}

int pg_account_credentials(struct store *st, const char *username, struct store_account *out, char hash[STORE_HASH_MAX])
{
    return account_query((struct pg_store *)st, PG_ACC_CRED, username, out, hash);
}

int pg_account_create(struct store *st, const char *username, const char *display_name, const char *password_hash,
                      int64_t now, struct store_account *out)
{
    struct pg_store *s = (struct pg_store *)st;
    struct pg_q q = {.id = PG_ACC_INSERT, .n = 4};
    pg_q_text(&q, 0, username, strlen(username));
    pg_q_text(&q, 1, display_name, strlen(display_name));
    pg_q_text(&q, 2, password_hash, strlen(password_hash));
    pg_q_int(&q, 3, now);
    int rc = pg_batch(s, &q, 1, PG_WRITE, "creating an account");
    if (rc != STORE_OK)
        return rc;
    memset(out, 0, sizeof *out);
    out->id = pg_int(q.res, 0, 0);
    snprintf(out->username, sizeof out->username, "%s", username);
    snprintf(out->display_name, sizeof out->display_name, "%s", display_name);
    out->created_at = now;
    pg_q_clear(&q, 1);
    return STORE_OK;
}

int pg_count_accounts(struct store *st, int64_t *n)
{
    struct pg_q q;
    int rc = pg_run_ints((struct pg_store *)st, PG_ACC_COUNT, 0, 0, 0, 0, PG_RESEND, "counting accounts", &q);
    if (rc == STORE_OK)
        *n = pg_int(q.res, 0, 0);
    pg_q_clear(&q, 1);
    return rc;
}

int pg_session_create(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t account_id,
                      const char *user_agent, int64_t now)
{
    struct pg_store *s = (struct pg_store *)st;
    char ua[STORE_USER_AGENT_MAX + 1];
    size_t n = 0;
    /* printable ASCII only, so that whatever reads it back (JSON, a terminal) needs no care */
    for (const char *p = user_agent; p != NULL && *p != '\0' && n < STORE_USER_AGENT_MAX; p++)
        ua[n++] = *p >= 0x20 && *p <= 0x7e ? *p : '?';
    ua[n] = '\0';
    struct pg_q q = {.id = PG_SESS_CREATE, .n = 5};
    pg_q_bytes(&q, 0, hash, STORE_TOKEN_HASH_LEN);
    pg_q_int(&q, 1, account_id);
    pg_q_int(&q, 2, now);
    pg_q_text(&q, 3, ua, n);
    pg_q_int(&q, 4, now - s->base.session_ttl_ms);
    int rc = pg_batch(s, &q, 1, PG_WRITE, "creating a session");
    pg_q_clear(&q, 1);
    return rc;
}

void pg_read_session_cols(const PGresult *r, int row, int col, struct store_session *out)
{
    out->id = pg_int(r, row, col);
    out->account_id = pg_int(r, row, col + 1);
    out->created_at = pg_int(r, row, col + 2);
    out->last_used_at = pg_int(r, row, col + 3);
    pg_copy_text(r, row, col + 4, out->user_agent, sizeof out->user_agent);
}

int pg_session_account(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                       struct store_account *out, struct store_session *session)
{
    struct pg_store *s = (struct pg_store *)st;
    struct pg_q q = {.id = out != NULL ? PG_SESS_ACCOUNT : PG_SESS_ONLY, .n = 2};
    pg_q_bytes(&q, 0, hash, STORE_TOKEN_HASH_LEN);
    pg_q_int(&q, 1, now - s->base.session_ttl_ms);
    int rc = pg_batch_row(s, &q, 1, PG_RESEND, "looking up a session");
    if (rc != STORE_OK)
        return rc;
    if (out != NULL)
        pg_read_session(q.res, 0, out, session);
    else
        pg_read_session_cols(q.res, 0, 0, session);
    pg_q_clear(&q, 1);
    return STORE_OK;
}

void pg_read_session(const PGresult *r, int row, struct store_account *out, struct store_session *session)
{
    pg_read_account(r, row, 0, out);
    if (session != NULL) {
        session->id = pg_int(r, row, 7);
        session->account_id = out->id;
        session->created_at = pg_int(r, row, 8);
        session->last_used_at = pg_int(r, row, 9);
        pg_copy_text(r, row, 10, session->user_agent, sizeof session->user_agent);
    }
}

int pg_session_delete(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN])
{
    struct pg_q q = {.id = PG_SESS_DELETE, .n = 1};
    pg_q_bytes(&q, 0, hash, STORE_TOKEN_HASH_LEN);
    int rc = pg_batch((struct pg_store *)st, &q, 1, PG_WRITE | PG_RESEND, "deleting a session");
    pg_q_clear(&q, 1);
    return rc;
}

/* Runs a two-integer write and returns the number of rows it changed in *changes (may be NULL). */
static int write2(struct store *st, enum pg_stmt id, int64_t a, int64_t b, int64_t *changes, const char *what)
{
    struct pg_q q;
    int rc = pg_run_ints((struct pg_store *)st, id, 2, a, b, 0, PG_WRITE | PG_RESEND, what, &q);
    if (rc == STORE_OK && changes != NULL)
        *changes = strtoll(PQcmdTuples(q.res), NULL, 10);
    pg_q_clear(&q, 1);
    return rc;
}

int pg_session_touch(struct store *st, int64_t id, int64_t now)
{
    return write2(st, PG_SESS_TOUCH, id, now, NULL, "recording a session's use");
}

int pg_session_list(struct store *st, int64_t account_id, int64_t now, const struct store_page *page,
                    store_session_cb cb, void *ctx)
{
    struct pg_store *s = (struct pg_store *)st;
    struct pg_q q = {.id = PG_SESS_LIST, .n = 5};
    struct store_session sess;
    pg_q_int(&q, 0, account_id);
    pg_q_int(&q, 1, page->max_id > 0 ? page->max_id : INT64_MAX);
    pg_q_int(&q, 2, page->since_id > 0 ? page->since_id : 0);
    pg_q_int(&q, 3, page->limit > 0 ? page->limit : 1);
    pg_q_int(&q, 4, now - s->base.session_ttl_ms);
    int rc = pg_batch(s, &q, 1, PG_RESEND, "listing sessions");
    for (int i = 0; rc == STORE_OK && i < PQntuples(q.res); i++) {
        pg_read_session_cols(q.res, i, 0, &sess);
        if (cb(ctx, &sess) != 0)
            break;
    }
    pg_q_clear(&q, 1);
    return rc;
}

int pg_session_revoke(struct store *st, int64_t account_id, int64_t id)
{
    int64_t n = 0;
    int rc = write2(st, PG_SESS_REVOKE, id, account_id, &n, "deleting a session");
    return rc == STORE_OK && n == 0 ? STORE_NOT_FOUND : rc;
}

int pg_session_revoke_others(struct store *st, int64_t account_id, int64_t keep_id, int64_t *revoked)
{
    int64_t n = 0;
    int rc = write2(st, PG_SESS_REVOKE_OTHERS, account_id, keep_id, &n, "deleting sessions");
    if (revoked != NULL)
        *revoked = rc == STORE_OK ? n : 0;
    return rc;
}

int pg_password_set(struct store *st, int64_t account_id, const char *password_hash, int64_t keep_session_id,
                    int64_t *revoked)
{
    struct pg_q q = {.id = PG_PASSWORD_SET, .n = 3};
    pg_q_int(&q, 0, account_id);
    pg_q_text(&q, 1, password_hash, strlen(password_hash));
    pg_q_int(&q, 2, keep_session_id);
    int rc = pg_batch((struct pg_store *)st, &q, 1, PG_WRITE, "changing a password");
    if (rc == STORE_OK && pg_int(q.res, 0, 0) == 0)
        rc = STORE_NOT_FOUND;
    if (revoked != NULL)
        *revoked = rc == STORE_OK ? pg_int(q.res, 0, 1) : 0;
    pg_q_clear(&q, 1);
    return rc;
}

/* ---- follows ---- */

int pg_follow(struct store *st, int64_t follower, int64_t followee, int on, int64_t now)
{
    struct pg_q q[2] = {{.id = PG_LOCK_ACCOUNTS2, .n = 2}, {.id = on ? PG_FOLLOW : PG_UNFOLLOW, .n = on ? 3 : 2}};
    pg_q_int(&q[0], 0, follower);
    pg_q_int(&q[0], 1, followee);
    pg_q_int(&q[1], 0, follower);
    pg_q_int(&q[1], 1, followee);
    if (on)
        pg_q_int(&q[1], 2, now);
    /* idempotent: sending it again after a lost connection changes nothing more */
    int rc = pg_batch((struct pg_store *)st, q, 2, PG_WRITE | PG_RACY | PG_RESEND, on ? "following" : "unfollowing");
    if (rc == STORE_OK && !pg_bool(q[1].res, 0, 0))
        rc = STORE_NOT_FOUND;
    pg_q_clear(q, 2);
    return rc;
}

int pg_account_list(struct store *st, enum store_account_list which, int64_t account_id, const struct store_page *page,
                    store_account_cb cb, void *ctx)
{
    struct pg_q q = {.id = which == STORE_FOLLOWERS ? PG_LIST_FOLLOWERS : PG_LIST_FOLLOWING, .n = 4};
    struct store_account acc;
    pg_q_int(&q, 0, account_id);
    pg_q_int(&q, 1, page->max_id > 0 ? page->max_id : INT64_MAX);
    pg_q_int(&q, 2, page->since_id > 0 ? page->since_id : 0);
    pg_q_int(&q, 3, page->limit > 0 ? page->limit : 1);
    int rc = pg_batch((struct pg_store *)st, &q, 1, PG_RESEND, "listing accounts");
    for (int i = 0; rc == STORE_OK && i < PQntuples(q.res); i++) {
        pg_read_account(q.res, i, 0, &acc);
        if (cb(ctx, &acc) != 0)
            break;
    }
    pg_q_clear(&q, 1);
    return rc;
}

/* ---- throttles ---- */

/* Builds the three array literals ({"k1","k2"}, {l1,l2}, {w1,w2}) of the limited counters. */
int pg_throttle_take(struct store *st, const struct store_throttle *t, int n, int64_t now, int64_t *retry_ms)
{
    struct pg_store *s = (struct pg_store *)st;
    /* keys are at most STORE_THROTTLE_KEY_MAX bytes, each escaped at most twice as long */
    size_t ksize = 16 + (size_t)n * (2 * STORE_THROTTLE_KEY_MAX + 4), lsize = 16 + (size_t)n * 24;
    char *keys = alloc_malloc(ksize), *lims = alloc_malloc(lsize), *wins = alloc_malloc(lsize);
    size_t kn = 0, ln = 0, wn = 0;
    int used = 0, rc = STORE_OK;
    keys[kn++] = '{', lims[ln++] = '{', wins[wn++] = '{';
    for (int i = 0; i < n; i++) {
        if (t[i].limit <= 0)
            continue;
        if (used++ > 0)
            keys[kn++] = ',', lims[ln++] = ',', wins[wn++] = ',';
        keys[kn++] = '"';
        for (const char *p = t[i].key; *p != '\0' && p - t[i].key < STORE_THROTTLE_KEY_MAX; p++) {
            if (*p == '"' || *p == '\\')
                keys[kn++] = '\\';
            keys[kn++] = *p;
        }
        keys[kn++] = '"';
        ln += (size_t)snprintf(lims + ln, lsize - ln, "%d", t[i].limit);
        wn += (size_t)snprintf(wins + wn, lsize - wn, "%lld", (long long)t[i].window_ms);
    }
    keys[kn++] = '}', lims[ln++] = '}', wins[wn++] = '}';
    keys[kn] = lims[ln] = wins[wn] = '\0';
    if (retry_ms != NULL)
        *retry_ms = 0;
    if (used > 0) {
        struct pg_q q[2] = {{.id = PG_THR_LOCK, .n = 1}, {.id = PG_THR_TAKE, .n = 4}};
        pg_q_text(&q[0], 0, keys, kn);
        pg_q_int(&q[1], 0, now);
        pg_q_text(&q[1], 1, keys, kn);
        pg_q_text(&q[1], 2, lims, ln);
        pg_q_text(&q[1], 3, wins, wn);
        rc = pg_batch(s, q, 2, PG_WRITE | PG_RACY, "charging a throttle");
        if (rc == STORE_OK && PQntuples(q[1].res) == 1 && !PQgetisnull(q[1].res, 0, 0)) {
            rc = STORE_LIMITED;
            if (retry_ms != NULL)
                *retry_ms = pg_int(q[1].res, 0, 0);
        }
        pg_q_clear(q, 2);
    }
    free(keys);
    free(lims);
    free(wins);
    return rc;
}

int pg_throttle_give(struct store *st, const char *key, int forget)
{
    struct pg_q q = {.id = forget ? PG_THR_FORGET : PG_THR_GIVE, .n = 1};
    pg_q_text(&q, 0, key, strlen(key));
    int rc = pg_batch((struct pg_store *)st, &q, 1, PG_WRITE | (forget ? PG_RESEND : 0), "giving back a throttle");
    pg_q_clear(&q, 1);
    return rc;
}
