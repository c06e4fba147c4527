/* test_store.c — the contract of store.h, checked on any store through store.h alone.
 *
 * Every test opens the store under test with store_open(URL) and compares what it answers with a
 * small reference model kept in this file: plain arrays of accounts, follows (a bit matrix),
 * posts with their likes (a bit set), sessions and throttle windows. A home timeline is what its
 * definition says (the owner's posts and those of every account the owner follows now, newest
 * first); the model also records each post's fan-out decision (docs/TIMELINES.md: fanned out
 * when its author had fewer than fanout_limit followers) for the bulk load's statistics.
 *
 *  - Deterministic tests check each operation's outcomes and edge cases, asserting the exact
 *    values and comparing with the model as well (so that model and store cannot agree on a
 *    wrong answer unnoticed).
 *  - Random operation sequences (seeded; 1,500-2,000 operations over up to 60 accounts, some
 *    starting from a bulk load; fanout_limit 3 so both fan-out paths and threshold crossings
 *    occur; sessions living 5 s so they expire; each step through one of two connections;
 *    hostile keys and text) are applied to the store and the model, comparing every operation's
 *    return code and results, and every CHECK_EVERY steps every list of every account and every
 *    post. A mismatch prints "seed S step N", the connection and the operation. Replay with
 *    AGORA_TEST_SEED=S (AGORA_TEST_STEPS=N changes the length) and AGORA_TEST_ONLY=test_random_1
 *    (a cmocka filter; * allowed) to run that test alone.
 *
 * The database is a parameter, AGORA_TEST_DB_URL:
 *   unset (or "sqlite")  each test gets a fresh SQLite file in its own temporary directory;
 *   postgres://... or postgresql://...   the URL of a superuser on a throw-away cluster, such as
 *        `sh scripts/pg-temp.sh start DIR` prints. Each test creates its own database
 *        t_<pid>_<n> there with libpq (the only use of libpq here), opens the store on the same
 *        URL naming that database, and drops it afterwards.
 * Running it:
 *   make unit                 all unit tests, this one on SQLite
 *   make unit-postgres        this suite on PostgreSQL: on the cluster AGORA_TEST_PG names, or on
 *                             a private one started and destroyed by scripts/with-pg.sh
 *   AGORA_TEST_DB_URL='postgresql:///agora?host=DIR&user=agora' build/tests/app/test_store
 *
 * What the store's own files do beyond the contract (SQLite's schema migrations, VFS, file
 * permissions, table contents) is tested in test_store_sqlite.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <pthread.h>

#include "app/store.h"

#define DAY_MS      (24LL * 60 * 60 * 1000)
#define CHECK_EVERY 250 /* random sequences: full reads every so many steps */

/* ---- where the databases come from ---- */

/* Set up once by main: the PostgreSQL administration URL, or NULL for SQLite. */
struct suite {
    const char *pg_admin;
    int seq; /* databases made so far (their names) */
};

struct model;

struct fx {
    struct suite *suite;
    char dir[64];    /* SQLite: this test's temporary directory */
    char dbname[64]; /* PostgreSQL: this test's database */
    char url[1024];
    struct store *st;    /* closed by teardown */
    struct store *other; /* a second connection, closed by teardown */
    struct model *m;     /* freed by teardown */
};

/* Runs one statement as the PostgreSQL administrator (CREATE/DROP DATABASE). */
static void pg_admin_exec(const char *admin, const char *sql)
{
    char msg[600] = "";
    PGconn *c = PQconnectdb(admin);
    PGresult *r = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(msg, sizeof msg, "cannot connect to %s: %s", admin, PQerrorMessage(c));
        goto out;
    }
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        snprintf(msg, sizeof msg, "%s: %s", sql, PQerrorMessage(c));
out:
    PQclear(r);
    PQfinish(c);
    if (msg[0] != '\0')
        fail_msg("PostgreSQL administration: %s", msg);
}

/* Writes into out the URL url with its database name replaced by name:
 * postgresql://[user@host:port]/DB[?params] → postgresql://[user@host:port]/name[?params]. */
static void url_with_db(const char *url, const char *name, char *out, size_t size)
{
    const char *auth = strstr(url, "://") + 3;
    const char *end = auth + strcspn(auth, "/?"); /* end of user@host:port */
    const char *query = strchr(end, '?');
    if (query != NULL && (strstr(query, "dbname=") != NULL))
        fail_msg("AGORA_TEST_DB_URL must name its database in the path, not with dbname=");
    snprintf(out, size, "%.*s/%s%s", (int)(end - url), url, name, query != NULL ? query : "");
}

static int setup(void **state)
{
    struct suite *s = *state;
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->suite = s;
    if (s->pg_admin == NULL) {
        strcpy(f->dir, "/tmp/agora-store-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->url, sizeof f->url, "sqlite:%s/t.db", f->dir);
    } else {
        char sql[128];
        snprintf(f->dbname, sizeof f->dbname, "t_%ld_%d", (long)getpid(), ++s->seq);
        url_with_db(s->pg_admin, f->dbname, f->url, sizeof f->url);
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", f->dbname);
        pg_admin_exec(s->pg_admin, sql);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_close(f->st);
    store_close(f->other);
    f->st = f->other = NULL;
    free(f->m);
    if (f->dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
    }
    if (f->dbname[0] != '\0') {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->dbname);
        pg_admin_exec(f->suite->pg_admin, sql);
    }
    free(f);
    return 0;
}

static struct store *open_store(struct fx *f, int fanout_limit, int64_t ttl)
{
    char err[512] = "";
    struct store_options o = {.fanout_limit = fanout_limit, .session_ttl_ms = ttl};
    struct store *st = store_open(f->url, &o, err, sizeof err);
    if (st == NULL)
        fail_msg("store_open(%s): %s", f->url, err);
    return st;
}

/* ---- the reference model ---- */

/* TEXT_MAX: a post is at most 500 code points (api_posts.c), 2,000 bytes of UTF-8 */
enum { M_ACCTS = 64, M_POSTS = 6000, M_SESS = 1024, M_THR = 16, TEXT_MAX = 2048 };

struct m_acct {
    int64_t id;
    char name[STORE_USERNAME_MAX + 2];
    char display[4 * STORE_DISPLAY_NAME_MAX + 8];
    char hash[STORE_HASH_MAX];
    int64_t created_at;
    int64_t posts; /* live posts */
};

struct m_post {
    int64_t id;
    int author; /* index into model.acct */
    char text[TEXT_MAX];
    size_t len;
    int64_t created_at;
    int64_t reply_to; /* 0 when none or when the parent was deleted */
    int64_t replies;  /* live posts replying to it */
    int fanout;       /* the hybrid fan-out's decision when it was written */
    int live;
    int bulk; /* written by the bulk load in progress: fan-out decided at bulk_end */
    int has_key, has_hash;
    char key[130]; /* an Idempotency-Key is at most 128 bytes (api_posts.c) */
    unsigned char hash[STORE_BODY_HASH_LEN];
    uint64_t likes; /* bit i: account index i likes it */
};

struct m_sess {
    int64_t id;
    int acct;
    unsigned char tok[STORE_TOKEN_HASH_LEN];
    int64_t created_at, last_used;
    char ua[STORE_USER_AGENT_MAX + 1];
    int live; /* still stored (not deleted, revoked or purged); it may have expired */
};

struct m_thr {
    char key[STORE_THROTTLE_KEY_MAX + 1];
    int64_t count, until;
    int used;
};

struct model {
    int fanout_limit;
    int64_t ttl;
    int nacct, npost, nsess;
    struct m_acct acct[M_ACCTS];
    uint64_t follows[M_ACCTS]; /* bit j of follows[i]: account i follows account j */
    struct m_post post[M_POSTS];
    struct m_sess sess[M_SESS];
    struct m_thr thr[M_THR];
    int64_t top_acct, top_post, top_sess; /* the highest ids the store has given out */
};

static struct model *model_new(int fanout_limit, int64_t ttl)
{
    struct model *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->fanout_limit = fanout_limit > 0 ? fanout_limit : STORE_FANOUT_LIMIT;
    m->ttl = ttl > 0 ? ttl : STORE_SESSION_TTL_MS;
    return m;
}

static int m_acct_by_id(const struct model *m, int64_t id)
{
    for (int i = 0; i < m->nacct; i++)
        if (m->acct[i].id == id)
            return i;
    return -1;
}

static int m_acct_by_name(const struct model *m, const char *name)
{
    for (int i = 0; i < m->nacct; i++)
        if (strcasecmp(m->acct[i].name, name) == 0)
            return i;
    return -1;
}

/* Index of post id (live or deleted), or -1; posts are kept in id order. */
static int m_post_idx(const struct model *m, int64_t id)
{
    int lo = 0, hi = m->npost - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (m->post[mid].id == id)
            return mid;
        if (m->post[mid].id < id)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static int m_live_post(const struct model *m, int64_t id)
{
    int i = m_post_idx(m, id);
    return i >= 0 && m->post[i].live ? i : -1;
}

static int64_t m_followers(const struct model *m, int j)
{
    int64_t n = 0;
    for (int i = 0; i < m->nacct; i++)
        n += (m->follows[i] >> j) & 1;
    return n;
}

static int m_follows(const struct model *m, int i, int j) { return (int)((m->follows[i] >> j) & 1); }

static void m_account_view(const struct model *m, int i, struct store_account *out)
{
    const struct m_acct *a = &m->acct[i];
    memset(out, 0, sizeof *out);
    out->id = a->id;
    snprintf(out->username, sizeof out->username, "%s", a->name);
    snprintf(out->display_name, sizeof out->display_name, "%s", a->display);
    out->created_at = a->created_at;
    out->followers_count = m_followers(m, i);
    out->following_count = __builtin_popcountll(m->follows[i]);
    out->posts_count = a->posts;
}

static void m_post_view(const struct model *m, int pi, int64_t viewer, struct store_post *out)
{
    const struct m_post *p = &m->post[pi];
    int v = viewer != 0 ? m_acct_by_id(m, viewer) : -1;
    memset(out, 0, sizeof *out);
    out->id = p->id;
    m_account_view(m, p->author, &out->author);
    out->text = p->text;
    out->text_len = p->len;
    out->created_at = p->created_at;
    out->reply_to = p->reply_to;
    out->likes_count = __builtin_popcountll(p->likes);
    out->replies_count = p->replies;
    out->liked = v >= 0 && ((p->likes >> v) & 1);
}

static int m_add_acct(struct model *m, int64_t id, const char *name, const char *display, const char *hash,
                      int64_t created_at)
{
    assert_true(m->nacct < M_ACCTS);
    struct m_acct *a = &m->acct[m->nacct];
    memset(a, 0, sizeof *a);
    a->id = id;
    snprintf(a->name, sizeof a->name, "%s", name);
    snprintf(a->display, sizeof a->display, "%s", display);
    snprintf(a->hash, sizeof a->hash, "%s", hash);
    a->created_at = created_at;
    return m->nacct++;
}

static int m_add_post(struct model *m, int64_t id, int author, const char *text, size_t len, int64_t reply_to,
                      const char *key, const unsigned char *hash, int64_t now)
{
    assert_true(m->npost < M_POSTS);
    assert_true(len < TEXT_MAX);
    struct m_post *p = &m->post[m->npost];
    memset(p, 0, sizeof *p);
    p->id = id;
    p->author = author;
    memcpy(p->text, text, len);
    p->len = len;
    p->created_at = now;
    p->reply_to = reply_to;
    p->fanout = m_followers(m, author) < m->fanout_limit;
    p->live = 1;
    if (key != NULL) {
        p->has_key = 1;
        snprintf(p->key, sizeof p->key, "%s", key);
        if (hash != NULL) {
            p->has_hash = 1;
            memcpy(p->hash, hash, STORE_BODY_HASH_LEN);
        }
    }
    m->acct[author].posts++;
    if (reply_to != 0)
        m->post[m_post_idx(m, reply_to)].replies++;
    return m->npost++;
}

/* The session with this token still stored, or -1. */
static int m_sess_by_tok(const struct model *m, const unsigned char *tok)
{
    for (int i = 0; i < m->nsess; i++)
        if (m->sess[i].live && memcmp(m->sess[i].tok, tok, STORE_TOKEN_HASH_LEN) == 0)
            return i;
    return -1;
}

static int m_sess_by_id(const struct model *m, int64_t id)
{
    for (int i = 0; i < m->nsess; i++)
        if (m->sess[i].live && m->sess[i].id == id)
            return i;
    return -1;
}

static int m_sess_alive(const struct model *m, int i, int64_t now) { return m->sess[i].last_used > now - m->ttl; }

static void m_sess_view(const struct model *m, int i, struct store_session *out)
{
    memset(out, 0, sizeof *out);
    out->id = m->sess[i].id;
    out->account_id = m->acct[m->sess[i].acct].id;
    out->created_at = m->sess[i].created_at;
    out->last_used_at = m->sess[i].last_used;
    snprintf(out->user_agent, sizeof out->user_agent, "%s", m->sess[i].ua);
}

/* Deletes account a's stored sessions other than keep; returns how many. */
static int64_t m_sess_revoke_others(struct model *m, int a, int64_t keep)
{
    int64_t n = 0;
    for (int i = 0; i < m->nsess; i++)
        if (m->sess[i].live && m->sess[i].acct == a && m->sess[i].id != keep) {
            m->sess[i].live = 0;
            n++;
        }
    return n;
}

/* ---- checking the store against the model ---- */

struct tc {
    struct store *st;
    struct model *m;
    char where[96]; /* "seed S step N" or the test's name */
    char op[400];   /* the operation being checked */
    int posts;      /* t_post calls so far: every other one reads the post back (store_post_create_get) */
    int homes;      /* t_session_home calls so far: every other one passes no account (me NULL) */
};

static void op(struct tc *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void op(struct tc *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->op, sizeof t->op, fmt, ap);
    va_end(ap);
}

static void mismatch(struct tc *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mismatch(struct tc *t, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail_msg("%s: %s: %s", t->where, t->op, msg);
}

static const char *rc_name(int rc)
{
    switch (rc) {
    case STORE_OK:
        return "OK";
    case STORE_ERROR:
        return "ERROR";
    case STORE_BUSY:
        return "BUSY";
    case STORE_NOT_FOUND:
        return "NOT_FOUND";
    case STORE_CONFLICT:
        return "CONFLICT";
    case STORE_FORBIDDEN:
        return "FORBIDDEN";
    case STORE_LIMITED:
        return "LIMITED";
    case STORE_FULL:
        return "FULL";
    }
    return "?";
}

static void expect_rc(struct tc *t, int want, int got)
{
    if (want != got)
        mismatch(t, "expected %s, got %s%s%s", rc_name(want), rc_name(got),
                 got == STORE_ERROR || got == STORE_BUSY ? ": " : "",
                 got == STORE_ERROR || got == STORE_BUSY ? store_errmsg(t->st) : "");
}

static void expect_int(struct tc *t, const char *what, int64_t want, int64_t got)
{
    if (want != got)
        mismatch(t, "%s: expected %lld, got %lld", what, (long long)want, (long long)got);
}

static void expect_str(struct tc *t, const char *what, const char *want, const char *got)
{
    if (strcmp(want, got) != 0)
        mismatch(t, "%s: expected \"%s\", got \"%s\"", what, want, got);
}

/* A new id must be above every id of its kind given out before. */
static void new_id(struct tc *t, const char *what, int64_t *top, int64_t id)
{
    if (id <= 0 || id <= *top)
        mismatch(t, "new %s id %lld is not above %lld, the highest given out before (ids grow with insertion order)",
                 what, (long long)id, (long long)*top);
    *top = id;
}

static void cmp_account(struct tc *t, const char *what, const struct store_account *w, const struct store_account *g)
{
    char f[160];
    snprintf(f, sizeof f, "%s: id", what);
    expect_int(t, f, w->id, g->id);
    snprintf(f, sizeof f, "%s %lld: username", what, (long long)w->id);
    expect_str(t, f, w->username, g->username);
    snprintf(f, sizeof f, "%s %lld: display_name", what, (long long)w->id);
    expect_str(t, f, w->display_name, g->display_name);
    snprintf(f, sizeof f, "%s %lld: created_at", what, (long long)w->id);
    expect_int(t, f, w->created_at, g->created_at);
    snprintf(f, sizeof f, "%s %lld: followers_count", what, (long long)w->id);
    expect_int(t, f, w->followers_count, g->followers_count);
    snprintf(f, sizeof f, "%s %lld: following_count", what, (long long)w->id);
    expect_int(t, f, w->following_count, g->following_count);
    snprintf(f, sizeof f, "%s %lld: posts_count", what, (long long)w->id);
    expect_int(t, f, w->posts_count, g->posts_count);
}

static void cmp_post(struct tc *t, const char *what, const struct store_post *w, const struct store_post *g)
{
    char f[160];
    snprintf(f, sizeof f, "%s: id", what);
    expect_int(t, f, w->id, g->id);
    snprintf(f, sizeof f, "%s %lld: author", what, (long long)w->id);
    cmp_account(t, f, &w->author, &g->author);
    if (w->text_len != g->text_len || memcmp(w->text, g->text, w->text_len) != 0)
        mismatch(t, "%s %lld: text: expected \"%.*s\", got \"%.*s\"", what, (long long)w->id, (int)w->text_len, w->text,
                 (int)g->text_len, g->text);
    snprintf(f, sizeof f, "%s %lld: created_at", what, (long long)w->id);
    expect_int(t, f, w->created_at, g->created_at);
    snprintf(f, sizeof f, "%s %lld: reply_to", what, (long long)w->id);
    expect_int(t, f, w->reply_to, g->reply_to);
    snprintf(f, sizeof f, "%s %lld: likes_count", what, (long long)w->id);
    expect_int(t, f, w->likes_count, g->likes_count);
    snprintf(f, sizeof f, "%s %lld: replies_count", what, (long long)w->id);
    expect_int(t, f, w->replies_count, g->replies_count);
    snprintf(f, sizeof f, "%s %lld: liked", what, (long long)w->id);
    expect_int(t, f, w->liked, g->liked != 0);
}

static void cmp_session(struct tc *t, const char *what, const struct store_session *w, const struct store_session *g)
{
    char f[160];
    snprintf(f, sizeof f, "%s: id", what);
    expect_int(t, f, w->id, g->id);
    snprintf(f, sizeof f, "%s %lld: account_id", what, (long long)w->id);
    expect_int(t, f, w->account_id, g->account_id);
    snprintf(f, sizeof f, "%s %lld: created_at", what, (long long)w->id);
    expect_int(t, f, w->created_at, g->created_at);
    snprintf(f, sizeof f, "%s %lld: last_used_at", what, (long long)w->id);
    expect_int(t, f, w->last_used_at, g->last_used_at);
    snprintf(f, sizeof f, "%s %lld: user_agent", what, (long long)w->id);
    expect_str(t, f, w->user_agent, g->user_agent);
}

/* Rows copied out of a list callback (their pointers are valid only during the callback). */
struct row {
    struct store_post p;
    char text[TEXT_MAX + 1];
    struct store_account a;
    struct store_session s;
};

struct rows {
    struct row *v;
    int n, cap;
    int more; /* rows beyond cap were offered */
};

static struct row *row_next(struct rows *r)
{
    if (r->n >= r->cap) {
        r->more = 1;
        return NULL;
    }
    return &r->v[r->n++];
}

static int collect_post(void *ctx, const struct store_post *p)
{
    struct row *w = row_next(ctx);
    if (w == NULL)
        return 1;
    w->p = *p;
    size_t n = p->text_len < TEXT_MAX ? p->text_len : TEXT_MAX;
    memcpy(w->text, p->text, n);
    w->text[n] = '\0';
    w->p.text = w->text;
    w->p.text_len = n;
    return 0;
}

static int collect_account(void *ctx, const struct store_account *a)
{
    struct row *w = row_next(ctx);
    if (w == NULL)
        return 1;
    w->a = *a;
    return 0;
}

static int collect_session(void *ctx, const struct store_session *s)
{
    struct row *w = row_next(ctx);
    if (w == NULL)
        return 1;
    w->s = *s;
    return 0;
}

static int in_page(int64_t id, const struct store_page *pg)
{
    return (pg->max_id <= 0 || id < pg->max_id) && (pg->since_id <= 0 || id > pg->since_id);
}

enum list_kind { L_AUTHOR, L_REPLIES, L_HOME, L_FOLLOWERS, L_FOLLOWING, L_SESSIONS };
static const char *const list_names[] = {"posts_by_author", "replies", "home", "followers", "following", "sessions"};

/* Model: the indexes (posts, accounts or sessions) that list kind of key shows in page pg. */
static int m_list(const struct model *m, enum list_kind kind, int64_t key, int64_t now, const struct store_page *pg,
                  int *out)
{
    int n = 0, k = m_acct_by_id(m, key);
    switch (kind) {
    case L_AUTHOR:
    case L_HOME:
        for (int i = m->npost - 1; i >= 0 && n < pg->limit; i--) {
            const struct m_post *p = &m->post[i];
            if (!p->live || !in_page(p->id, pg) || k < 0)
                continue;
            if (p->author == k || (kind == L_HOME && m_follows(m, k, p->author)))
                out[n++] = i;
        }
        break;
    case L_REPLIES:
        for (int i = 0; i < m->npost && n < pg->limit; i++)
            if (m->post[i].live && m->post[i].reply_to == key && in_page(m->post[i].id, pg))
                out[n++] = i;
        break;
    case L_FOLLOWERS:
    case L_FOLLOWING:
        for (int i = m->nacct - 1; i >= 0 && n < pg->limit && k >= 0; i--)
            if (in_page(m->acct[i].id, pg) && (kind == L_FOLLOWERS ? m_follows(m, i, k) : m_follows(m, k, i)))
                out[n++] = i;
        break;
    case L_SESSIONS:
        for (int i = m->nsess - 1; i >= 0 && n < pg->limit && k >= 0; i--)
            if (m->sess[i].live && m->sess[i].acct == k && m_sess_alive(m, i, now) && in_page(m->sess[i].id, pg))
                out[n++] = i;
        break;
    }
    return n;
}

/* Reads one page of a list from the store and compares it, row by row, with the model. viewer
 * applies to post lists other than home (whose viewer is the owner); now to sessions. Returns
 * the number of rows, and the last row's id in *last. */
static int t_list(struct tc *t, enum list_kind kind, int64_t key, int64_t viewer, int64_t now,
                  const struct store_page *pg, int64_t *last)
{
    int cap = pg->limit < M_POSTS ? pg->limit : M_POSTS;
    int *want = calloc((size_t)cap, sizeof *want);
    int rc = STORE_ERROR;
    assert_non_null(want);
    op(t, "%s(%lld, viewer=%lld, max_id=%lld, since_id=%lld, limit=%d%s)", list_names[kind], (long long)key,
       (long long)viewer, (long long)pg->max_id, (long long)pg->since_id, pg->limit,
       kind == L_SESSIONS ? ", at now" : "");
    struct store_page page = *pg;
    page.limit = cap;
    int n = m_list(t->m, kind, key, now, &page, want);
    /* room for one row more than expected, to see a store that returns too many */
    struct rows got = {calloc((size_t)n + 1, sizeof(struct row)), 0, n + 1, 0};
    assert_non_null(got.v);
    switch (kind) {
    case L_AUTHOR:
        rc = store_posts_by_author(t->st, key, viewer, &page, collect_post, &got);
        break;
    case L_REPLIES:
        rc = store_replies(t->st, key, viewer, &page, collect_post, &got);
        break;
    case L_HOME:
        rc = store_home(t->st, key, &page, collect_post, &got);
        viewer = key;
        break;
    case L_FOLLOWERS:
    case L_FOLLOWING:
        rc = store_account_list(t->st, kind == L_FOLLOWERS ? STORE_FOLLOWERS : STORE_FOLLOWING, key, &page,
                                collect_account, &got);
        break;
    case L_SESSIONS:
        rc = store_session_list(t->st, key, now, &page, collect_session, &got);
        break;
    }
    expect_rc(t, STORE_OK, rc);
    for (int i = 0; i < n && i < got.n; i++) {
        char what[32];
        snprintf(what, sizeof what, "row %d", i);
        if (kind <= L_HOME) {
            struct store_post w;
            m_post_view(t->m, want[i], viewer, &w);
            cmp_post(t, what, &w, &got.v[i].p);
        } else if (kind <= L_FOLLOWING) {
            struct store_account w;
            m_account_view(t->m, want[i], &w);
            cmp_account(t, what, &w, &got.v[i].a);
        } else {
            struct store_session w;
            m_sess_view(t->m, want[i], &w);
            cmp_session(t, what, &w, &got.v[i].s);
        }
    }
    if (got.n != n) {
        int64_t extra = 0;
        if (got.n > n)
            extra = kind <= L_HOME ? got.v[n].p.id : kind <= L_FOLLOWING ? got.v[n].a.id : got.v[n].s.id;
        mismatch(t, "expected %d rows, got %d%s (first unexpected id %lld)", n, got.n, got.more ? " or more" : "",
                 (long long)extra);
    }
    if (last != NULL && n > 0)
        *last = kind <= L_HOME ? got.v[n - 1].p.id : kind <= L_FOLLOWING ? got.v[n - 1].a.id : got.v[n - 1].s.id;
    free(want);
    free(got.v);
    return n;
}

/* Walks a whole list page by page (limit per page, each next page below the last id seen;
 * replies go up from it), comparing each page; returns the rows seen. */
static int t_walk(struct tc *t, enum list_kind kind, int64_t key, int64_t viewer, int64_t now, int limit)
{
    struct store_page pg = {0, 0, limit};
    int total = 0;
    for (int pages = 0; pages < M_POSTS; pages++) {
        int64_t last = 0;
        int n = t_list(t, kind, key, viewer, now, &pg, &last);
        total += n;
        if (n < limit)
            return total;
        if (kind == L_REPLIES)
            pg.since_id = last;
        else
            pg.max_id = last;
    }
    fail_msg("%s: %s never ended", t->where, list_names[kind]);
    return total;
}

/* ---- operations, applied to the store and the model and compared ---- */

static int t_account_create(struct tc *t, const char *name, const char *display, const char *hash, int64_t now,
                            int64_t *id)
{
    struct store_account got, w;
    memset(&got, 0, sizeof got);
    op(t, "account_create(\"%s\", now=%lld)", name, (long long)now);
    int want = m_acct_by_name(t->m, name) >= 0 ? STORE_CONFLICT : STORE_OK;
    int rc = store_account_create(t->st, name, display, hash, now, &got);
    expect_rc(t, want, rc);
    if (rc == STORE_OK) {
        new_id(t, "account", &t->m->top_acct, got.id);
        int i = m_add_acct(t->m, got.id, name, display, hash, now);
        m_account_view(t->m, i, &w);
        cmp_account(t, "the account returned", &w, &got);
        if (id != NULL)
            *id = got.id;
    }
    return rc;
}

/* store_account_by_name, or store_account_credentials when cred is set. */
static int t_account_by_name(struct tc *t, const char *name, int cred)
{
    struct store_account got, w;
    char hash[STORE_HASH_MAX] = "";
    op(t, "account_%s(\"%s\")", cred ? "credentials" : "by_name", name);
    int i = m_acct_by_name(t->m, name);
    int rc = cred ? store_account_credentials(t->st, name, &got, hash) : store_account_by_name(t->st, name, &got);
    expect_rc(t, i >= 0 ? STORE_OK : STORE_NOT_FOUND, rc);
    if (rc == STORE_OK) {
        m_account_view(t->m, i, &w);
        cmp_account(t, "account", &w, &got);
        if (cred)
            expect_str(t, "password hash", t->m->acct[i].hash, hash);
    }
    return rc;
}

/* store_posts_by_name: the account (as store_account_by_name) and then one page of its posts
 * (as store_posts_by_author), compared with the model. */
static int t_posts_by_name(struct tc *t, const char *name, int64_t viewer, const struct store_page *pg)
{
    struct model *m = t->m;
    struct store_account got, w;
    op(t, "posts_by_name(\"%s\", viewer=%lld, max_id=%lld, since_id=%lld, limit=%d)", name, (long long)viewer,
       (long long)pg->max_id, (long long)pg->since_id, pg->limit);
    int i = m_acct_by_name(m, name);
    struct store_page page = *pg;
    page.limit = pg->limit < M_POSTS ? pg->limit : M_POSTS;
    int *want = calloc((size_t)page.limit, sizeof *want);
    assert_non_null(want);
    int n = i >= 0 ? m_list(m, L_AUTHOR, m->acct[i].id, 0, &page, want) : 0;
    struct rows rows = {calloc((size_t)n + 1, sizeof(struct row)), 0, n + 1, 0};
    assert_non_null(rows.v);
    int rc = store_posts_by_name(t->st, name, viewer, &page, &got, collect_post, &rows);
    expect_rc(t, i >= 0 ? STORE_OK : STORE_NOT_FOUND, rc);
    if (rc == STORE_OK) {
        m_account_view(m, i, &w);
        cmp_account(t, "account", &w, &got);
    }
    for (int k = 0; k < n && k < rows.n; k++) {
        char what[32];
        struct store_post wp;
        snprintf(what, sizeof what, "row %d", k);
        m_post_view(m, want[k], viewer, &wp);
        cmp_post(t, what, &wp, &rows.v[k].p);
    }
    if (rows.n != n)
        mismatch(t, "expected %d rows, got %d%s", n, rows.n, rows.more ? " or more" : "");
    free(want);
    free(rows.v);
    return rc;
}

static void t_count_accounts(struct tc *t)
{
    int64_t n = -1;
    op(t, "count_accounts()");
    expect_rc(t, STORE_OK, store_count_accounts(t->st, &n));
    expect_int(t, "accounts", t->m->nacct, n);
}

static int t_follow(struct tc *t, int64_t follower, int64_t followee, int on, int64_t now)
{
    op(t, "follow(%lld, %lld, on=%d)", (long long)follower, (long long)followee, on);
    int a = m_acct_by_id(t->m, follower), b = m_acct_by_id(t->m, followee);
    assert_true(a >= 0 && follower != followee); /* the caller's part of the contract */
    int rc = store_follow(t->st, follower, followee, on, now);
    expect_rc(t, b >= 0 ? STORE_OK : STORE_NOT_FOUND, rc);
    if (rc == STORE_OK) {
        if (on)
            t->m->follows[a] |= 1ull << b;
        else
            t->m->follows[a] &= ~(1ull << b);
    }
    return rc;
}

static int t_post(struct tc *t, int64_t author, const char *text, size_t len, int64_t reply_to, const char *key,
                  const unsigned char *hash, int64_t now, int64_t *id)
{
    struct model *m = t->m;
    int a = m_acct_by_id(m, author), want = STORE_OK, create = 1;
    int64_t want_id = 0, got = -1;
    assert_true(a >= 0);
    int get = t->posts++ % 2; /* store_post_create_get: store_post_create, then the post as its author sees it */
    op(t, "post_create%s(author=%lld, \"%.*s\", reply_to=%lld, key=%s, hash=%s)", get ? "_get" : "", (long long)author,
       (int)len, text, (long long)reply_to, key ? key : "NULL", hash ? (hash[0] == 2 ? "h2" : "h1") : "NULL");
    for (int i = 0; key != NULL && i < m->npost && create; i++) {
        const struct m_post *p = &m->post[i];
        if (p->live && p->author == a && p->has_key && strcmp(p->key, key) == 0) {
            create = 0;
            want_id = p->id;
            if (hash != NULL && p->has_hash && memcmp(hash, p->hash, STORE_BODY_HASH_LEN) != 0)
                want = STORE_CONFLICT;
        }
    }
    if (create && reply_to != 0 && m_live_post(m, reply_to) < 0)
        want = STORE_NOT_FOUND;
    struct row r;
    struct rows back = {&r, 0, 1, 0};
    int rc = get ? store_post_create_get(t->st, author, text, len, reply_to, key, hash, now, &got, collect_post, &back)
                 : store_post_create(t->st, author, text, len, reply_to, key, hash, now, &got);
    expect_rc(t, want, rc);
    if (rc == STORE_OK && create) {
        new_id(t, "post", &m->top_post, got);
        m_add_post(m, got, a, text, len, reply_to, key, hash, now);
    } else if (rc == STORE_OK || rc == STORE_CONFLICT) {
        expect_int(t, "the post of that Idempotency-Key", want_id, got);
    }
    if (get) {
        expect_int(t, "posts read back", rc == STORE_OK, back.n);
        if (rc == STORE_OK && back.n == 1) {
            struct store_post w;
            m_post_view(m, m_post_idx(m, got), author, &w);
            cmp_post(t, "the post read back", &w, &r.p);
        }
    }
    if (id != NULL)
        *id = got;
    return rc;
}

static int t_post_get(struct tc *t, int64_t id, int64_t viewer)
{
    struct row r;
    struct rows got = {&r, 0, 1, 0};
    op(t, "post_get(%lld, viewer=%lld)", (long long)id, (long long)viewer);
    int i = m_live_post(t->m, id);
    int rc = store_post_get(t->st, id, viewer, collect_post, &got);
    expect_rc(t, i >= 0 ? STORE_OK : STORE_NOT_FOUND, rc);
    if (rc == STORE_OK) {
        struct store_post w;
        expect_int(t, "rows", 1, got.n);
        m_post_view(t->m, i, viewer, &w);
        cmp_post(t, "post", &w, &r.p);
    }
    return rc;
}

static int t_delete(struct tc *t, int64_t id, int64_t author)
{
    struct model *m = t->m;
    op(t, "post_delete(%lld, author=%lld)", (long long)id, (long long)author);
    int i = m_live_post(m, id);
    int want = i < 0 ? STORE_NOT_FOUND : m->acct[m->post[i].author].id != author ? STORE_FORBIDDEN : STORE_OK;
    int rc = store_post_delete(t->st, id, author);
    expect_rc(t, want, rc);
    if (rc == STORE_OK) {
        struct m_post *p = &m->post[i];
        p->live = 0;
        p->likes = 0;
        m->acct[p->author].posts--;
        if (p->reply_to != 0)
            m->post[m_post_idx(m, p->reply_to)].replies--;
        for (int j = i + 1; j < m->npost; j++)
            if (m->post[j].reply_to == id)
                m->post[j].reply_to = 0;
    }
    return rc;
}

static int t_like(struct tc *t, int64_t post, int64_t account, int on, int64_t now)
{
    op(t, "like(%lld, account=%lld, on=%d)", (long long)post, (long long)account, on);
    int i = m_live_post(t->m, post), a = m_acct_by_id(t->m, account);
    assert_true(a >= 0);
    int rc = store_like(t->st, post, account, on, now);
    expect_rc(t, i >= 0 ? STORE_OK : STORE_NOT_FOUND, rc);
    if (rc == STORE_OK) {
        if (on)
            t->m->post[i].likes |= 1ull << a;
        else
            t->m->post[i].likes &= ~(1ull << a);
    }
    return rc;
}

/* A token hash made from a number. */
static void token(unsigned char tok[STORE_TOKEN_HASH_LEN], int64_t n)
{
    memset(tok, 0x5a, STORE_TOKEN_HASH_LEN);
    memcpy(tok, &n, sizeof n);
}

/* store_session_create; then learns the new session's id from store_session_account (the store
 * returns none) and checks it is above every session id before. Returns the id. */
static int64_t t_session_create(struct tc *t, int64_t tokn, int64_t account, const char *ua, int64_t now)
{
    struct model *m = t->m;
    unsigned char tok[STORE_TOKEN_HASH_LEN];
    struct store_account a;
    struct store_session s;
    int ai = m_acct_by_id(m, account);
    assert_true(ai >= 0 && m->nsess < M_SESS);
    token(tok, tokn);
    op(t, "session_create(token %lld, account=%lld, \"%.20s\", now=%lld)", (long long)tokn, (long long)account,
       ua ? ua : "(null)", (long long)now);
    expect_rc(t, STORE_OK, store_session_create(t->st, tok, account, ua, now));
    for (int i = 0; i < m->nsess; i++) /* the account's expired sessions are deleted */
        if (m->sess[i].live && m->sess[i].acct == ai && !m_sess_alive(m, i, now))
            m->sess[i].live = 0;
    expect_rc(t, STORE_OK, store_session_account(t->st, tok, now, &a, &s));
    new_id(t, "session", &m->top_sess, s.id);
    struct m_sess *ms = &m->sess[m->nsess++];
    memset(ms, 0, sizeof *ms);
    ms->id = s.id;
    ms->acct = ai;
    memcpy(ms->tok, tok, sizeof tok);
    ms->created_at = ms->last_used = now;
    ms->live = 1;
    size_t n = 0;
    for (const char *p = ua; p != NULL && *p != '\0' && n < STORE_USER_AGENT_MAX; p++)
        ms->ua[n++] = *p >= 0x20 && *p <= 0x7e ? *p : '?';
    ms->ua[n] = '\0';
    struct store_session w;
    m_sess_view(m, m->nsess - 1, &w);
    cmp_session(t, "the new session", &w, &s);
    return s.id;
}

static int t_session_account(struct tc *t, int64_t tokn, int64_t now)
{
    unsigned char tok[STORE_TOKEN_HASH_LEN];
    struct store_account a, wa;
    struct store_session s, ws;
    token(tok, tokn);
    op(t, "session_account(token %lld, now=%lld)", (long long)tokn, (long long)now);
    int i = m_sess_by_tok(t->m, tok);
    int want = i >= 0 && m_sess_alive(t->m, i, now) ? STORE_OK : STORE_NOT_FOUND;
    int rc = store_session_account(t->st, tok, now, &a, &s);
    expect_rc(t, want, rc);
    if (rc == STORE_OK) {
        m_account_view(t->m, t->m->sess[i].acct, &wa);
        cmp_account(t, "session's account", &wa, &a);
        m_sess_view(t->m, i, &ws);
        cmp_session(t, "session", &ws, &s);
        memset(&a, 0, sizeof a);
        expect_rc(t, STORE_OK, store_session_account(t->st, tok, now, &a, NULL)); /* session may be NULL */
        cmp_account(t, "session's account (no session asked)", &wa, &a);
        memset(&s, 0, sizeof s);
        expect_rc(t, STORE_OK, store_session_account(t->st, tok, now, NULL, &s)); /* or the account */
        cmp_session(t, "session (no account asked)", &ws, &s);
    }
    return rc;
}

/* store_session_home: the session's account and session (as store_session_account) and then
 * one page of its account's home timeline (as store_home), compared with the model; every other
 * call without the account (me NULL: the session alone, whose account_id names it). */
static int t_session_home(struct tc *t, int64_t tokn, int64_t now, const struct store_page *pg)
{
    struct model *m = t->m;
    unsigned char tok[STORE_TOKEN_HASH_LEN];
    struct store_account a, wa;
    struct store_session s, ws;
    token(tok, tokn);
    op(t, "session_home(token %lld, now=%lld, max_id=%lld, since_id=%lld, limit=%d)", (long long)tokn, (long long)now,
       (long long)pg->max_id, (long long)pg->since_id, pg->limit);
    int i = m_sess_by_tok(m, tok);
    int alive = i >= 0 && m_sess_alive(m, i, now);
    struct store_page page = *pg;
    page.limit = pg->limit < M_POSTS ? pg->limit : M_POSTS;
    int *want = calloc((size_t)page.limit, sizeof *want);
    assert_non_null(want);
    int n = alive ? m_list(m, L_HOME, m->acct[m->sess[i].acct].id, now, &page, want) : 0;
    struct rows got = {calloc((size_t)n + 1, sizeof(struct row)), 0, n + 1, 0};
    assert_non_null(got.v);
    int with_me = t->homes++ % 2 == 0;
    memset(&s, 0, sizeof s);
    int rc = store_session_home(t->st, tok, now, &page, with_me ? &a : NULL, &s, collect_post, &got);
    expect_rc(t, alive ? STORE_OK : STORE_NOT_FOUND, rc);
    if (rc == STORE_OK) {
        m_account_view(m, m->sess[i].acct, &wa);
        if (with_me)
            cmp_account(t, "session's account", &wa, &a);
        else
            a.id = s.account_id;
        m_sess_view(m, i, &ws);
        cmp_session(t, "session", &ws, &s);
    }
    for (int k = 0; k < n && k < got.n; k++) {
        char what[32];
        struct store_post w;
        snprintf(what, sizeof what, "row %d", k);
        m_post_view(m, want[k], a.id, &w);
        cmp_post(t, what, &w, &got.v[k].p);
    }
    if (got.n != n)
        mismatch(t, "expected %d rows, got %d%s", n, got.n, got.more ? " or more" : "");
    free(want);
    free(got.v);
    return rc;
}

static void t_session_delete(struct tc *t, int64_t tokn)
{
    unsigned char tok[STORE_TOKEN_HASH_LEN];
    token(tok, tokn);
    op(t, "session_delete(token %lld)", (long long)tokn);
    int i = m_sess_by_tok(t->m, tok);
    expect_rc(t, STORE_OK, store_session_delete(t->st, tok));
    if (i >= 0)
        t->m->sess[i].live = 0;
}

static void t_touch(struct tc *t, int64_t id, int64_t now)
{
    op(t, "session_touch(%lld, now=%lld)", (long long)id, (long long)now);
    int i = m_sess_by_id(t->m, id);
    expect_rc(t, STORE_OK, store_session_touch(t->st, id, now));
    if (i >= 0 && now > t->m->sess[i].last_used)
        t->m->sess[i].last_used = now;
}

static int t_revoke(struct tc *t, int64_t account, int64_t id)
{
    op(t, "session_revoke(account=%lld, %lld)", (long long)account, (long long)id);
    int i = m_sess_by_id(t->m, id);
    int ok = i >= 0 && t->m->acct[t->m->sess[i].acct].id == account;
    int rc = store_session_revoke(t->st, account, id);
    expect_rc(t, ok ? STORE_OK : STORE_NOT_FOUND, rc);
    if (rc == STORE_OK)
        t->m->sess[i].live = 0;
    return rc;
}

static int64_t t_revoke_others(struct tc *t, int64_t account, int64_t keep)
{
    int64_t n = -1;
    op(t, "session_revoke_others(account=%lld, keep=%lld)", (long long)account, (long long)keep);
    int a = m_acct_by_id(t->m, account);
    assert_true(a >= 0);
    expect_rc(t, STORE_OK, store_session_revoke_others(t->st, account, keep, &n));
    expect_int(t, "sessions revoked", m_sess_revoke_others(t->m, a, keep), n);
    return n;
}

static int t_password_set(struct tc *t, int64_t account, const char *hash, int64_t keep, int64_t *revoked)
{
    int64_t n = -1;
    op(t, "password_set(account=%lld, \"%s\", keep=%lld)", (long long)account, hash, (long long)keep);
    int a = m_acct_by_id(t->m, account);
    int rc = store_password_set(t->st, account, hash, keep, &n);
    expect_rc(t, a >= 0 ? STORE_OK : STORE_NOT_FOUND, rc);
    if (rc == STORE_OK) {
        snprintf(t->m->acct[a].hash, sizeof t->m->acct[a].hash, "%s", hash);
        expect_int(t, "sessions revoked", m_sess_revoke_others(t->m, a, keep), n);
    }
    if (revoked != NULL)
        *revoked = n;
    return rc;
}

static struct m_thr *m_thr_find(struct model *m, const char *key)
{
    for (int i = 0; i < M_THR; i++)
        if (m->thr[i].used && strcmp(m->thr[i].key, key) == 0)
            return &m->thr[i];
    return NULL;
}

static int t_throttle_take(struct tc *t, const struct store_throttle *th, int n, int64_t now, int64_t *retry_out)
{
    struct model *m = t->m;
    int64_t retry = -1, want_retry = 0;
    int limited = 0;
    op(t, "throttle_take(%s limit %d window %lld%s, now=%lld)", th[0].key, th[0].limit, (long long)th[0].window_ms,
       n > 1 ? " and more" : "", (long long)now);
    for (int i = 0; i < M_THR; i++) /* windows that have ended are gone */
        if (m->thr[i].used && m->thr[i].until <= now)
            m->thr[i].used = 0;
    for (int i = 0; i < n; i++) {
        struct m_thr *w = m_thr_find(m, th[i].key);
        if (th[i].limit > 0 && w != NULL && w->count >= th[i].limit) {
            limited = 1;
            if (w->until - now > want_retry)
                want_retry = w->until - now;
        }
    }
    int rc = store_throttle_take(t->st, th, n, now, &retry);
    expect_rc(t, limited ? STORE_LIMITED : STORE_OK, rc);
    if (rc == STORE_LIMITED)
        expect_int(t, "retry_ms", want_retry, retry);
    for (int i = 0; rc == STORE_OK && i < n; i++) {
        if (th[i].limit <= 0)
            continue;
        struct m_thr *w = m_thr_find(m, th[i].key);
        if (w == NULL) {
            for (int j = 0; j < M_THR && w == NULL; j++)
                if (!m->thr[j].used)
                    w = &m->thr[j];
            assert_non_null(w);
            w->used = 1;
            snprintf(w->key, sizeof w->key, "%s", th[i].key);
            w->count = 0;
            w->until = now + th[i].window_ms;
        }
        w->count++;
    }
    if (retry_out != NULL)
        *retry_out = retry;
    return rc;
}

static void t_throttle_give(struct tc *t, const char *key, int forget)
{
    op(t, "throttle_give(%s, forget=%d)", key, forget);
    expect_rc(t, STORE_OK, store_throttle_give(t->st, key, forget));
    struct m_thr *w = m_thr_find(t->m, key);
    if (w != NULL && forget)
        w->used = 0;
    else if (w != NULL && w->count > 0)
        w->count--;
}

/* Everything the store shows, compared with the model: every account (by name in another case,
 * with credentials), its posts, home timeline (whole and page by page), followers, followees
 * and sessions; every post ever made (deleted ones must be gone) and the replies to it. */
static void t_check_all(struct tc *t, int64_t now)
{
    struct model *m = t->m;
    char name[STORE_USERNAME_MAX + 2];
    t_count_accounts(t);
    for (int i = 0; i < m->nacct; i++) {
        int64_t id = m->acct[i].id, viewer = m->acct[(i + 1) % m->nacct].id;
        snprintf(name, sizeof name, "%s", m->acct[i].name);
        for (char *c = name; *c != '\0'; c++) /* swap the ASCII case */
            *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        t_account_by_name(t, name, i % 2);
        struct store_page all = {0, 0, M_POSTS - 1}, few = {0, 0, 2};
        t_posts_by_name(t, name, i % 3 ? viewer : 0, i % 2 ? &all : &few);
        t_list(t, L_AUTHOR, id, viewer, now, &all, NULL);
        t_list(t, L_HOME, id, 0, now, &all, NULL);
        t_walk(t, L_HOME, id, 0, now, 4);
        t_list(t, L_FOLLOWERS, id, 0, now, &all, NULL);
        t_list(t, L_FOLLOWING, id, 0, now, &all, NULL);
        t_list(t, L_SESSIONS, id, 0, now, &all, NULL);
    }
    for (int i = 0; i < m->npost; i++) {
        int64_t viewer = m->nacct > 0 ? m->acct[i % m->nacct].id : 0;
        t_post_get(t, m->post[i].id, i % 3 == 0 ? 0 : viewer);
        if (m->post[i].live && m->post[i].replies > 0) {
            struct store_page all = {0, 0, M_POSTS - 1};
            t_list(t, L_REPLIES, m->post[i].id, viewer, now, &all, NULL);
        }
    }
    for (int i = 0; i < m->nsess; i++)
        if (m->sess[i].live) {
            int64_t n;
            memcpy(&n, m->sess[i].tok, sizeof n);
            t_session_account(t, n, now);
            struct store_page all = {0, 0, M_POSTS - 1}, few = {0, 0, 2};
            t_session_home(t, n, now, i % 2 ? &all : &few);
        }
}

/* A test's checker: the store f->st (opened here) and a model with the same options. */
static struct tc tc_open(struct fx *f, const char *where, int fanout_limit, int64_t ttl)
{
    struct tc t;
    memset(&t, 0, sizeof t);
    f->st = open_store(f, fanout_limit, ttl);
    f->m = model_new(fanout_limit, ttl);
    t.st = f->st;
    t.m = f->m;
    snprintf(t.where, sizeof t.where, "%s", where);
    return t;
}

static int64_t mk(struct tc *t, const char *name)
{
    int64_t id = 0;
    assert_int_equal(t_account_create(t, name, name, "$argon2id$fake", 1000, &id), STORE_OK);
    return id;
}

static int64_t mkpost(struct tc *t, int64_t author, const char *text, int64_t reply_to, int64_t now)
{
    int64_t id = 0;
    assert_int_equal(t_post(t, author, text, strlen(text), reply_to, NULL, NULL, now, &id), STORE_OK);
    return id;
}

/* Ids of a post list page, straight from the store (for the tests' own assertions). */
struct ids {
    int64_t v[64];
    int n;
};

static int collect_id(void *ctx, const struct store_post *p)
{
    struct ids *ids = ctx;
    assert_true(ids->n < 64);
    ids->v[ids->n++] = p->id;
    return 0;
}

static struct ids home_ids(struct store *st, int64_t owner, int64_t max_id, int64_t since_id, int limit)
{
    struct ids ids = {.n = 0};
    struct store_page pg = {max_id, since_id, limit};
    assert_int_equal(store_home(st, owner, &pg, collect_id, &ids), STORE_OK);
    return ids;
}

static void assert_ids(struct ids got, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    if (got.n != n)
        fail_msg("expected %d ids, got %d", n, got.n);
    for (int i = 0; i < n; i++) {
        int64_t want = va_arg(ap, int64_t);
        if (got.v[i] != want)
            fail_msg("id %d: expected %lld, got %lld", i, (long long)want, (long long)got.v[i]);
    }
    va_end(ap);
}

static struct store_account account_of(struct store *st, const char *name)
{
    struct store_account a;
    assert_int_equal(store_account_by_name(st, name, &a), STORE_OK);
    return a;
}

static struct row post_of(struct store *st, int64_t id, int64_t viewer)
{
    struct row r;
    struct rows got = {&r, 0, 1, 0};
    memset(&r, 0, sizeof r);
    assert_int_equal(store_post_get(st, id, viewer, collect_post, &got), STORE_OK);
    return r;
}

/* A seeded random number generator (splitmix64) and a number below n from it. */
static uint64_t rnd(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int rn(uint64_t *x, int n) { return (int)(rnd(x) % (uint64_t)n); }

/* ---- deterministic tests ---- */

static void test_open_and_ping(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    assert_null(store_open("mysql://x", NULL, err, sizeof err));
    assert_non_null(strstr(err, "unsupported database URL"));
    assert_null(store_open("", NULL, err, sizeof err));
    struct tc t = tc_open(f, "open", 0, 0);
    assert_int_equal(store_ping(f->st), STORE_OK);
    t_count_accounts(&t);
    /* a second connection sees what the first wrote */
    mk(&t, "alice");
    f->other = open_store(f, 0, 0);
    int64_t n = 0;
    assert_int_equal(store_count_accounts(f->other, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_ping(f->other), STORE_OK);
    store_close(NULL);
}

static void test_accounts(void **state)
{
    struct fx *f = *state;
    struct store_account a;
    char hash[STORE_HASH_MAX];
    struct tc t = tc_open(f, "accounts", 0, 0);
    int64_t alice = 0, bob = 0;
    assert_int_equal(t_account_create(&t, "Alice", "Alice A", "$hash$", 1234, &alice), STORE_OK);
    assert_true(alice > 0);
    assert_int_equal(t_account_create(&t, "aLICE", "x", "$hash$", 1, NULL), STORE_CONFLICT);
    assert_int_equal(t_account_create(&t, "ALICE", "x", "$hash$", 1, NULL), STORE_CONFLICT);
    assert_int_equal(store_account_by_name(f->st, "ALICE", &a), STORE_OK);
    assert_string_equal(a.username, "Alice");
    assert_string_equal(a.display_name, "Alice A");
    assert_int_equal(a.created_at, 1234);
    assert_int_equal(a.followers_count + a.following_count + a.posts_count, 0);
    assert_int_equal(store_account_by_name(f->st, "bob", &a), STORE_NOT_FOUND);
    assert_int_equal(store_account_by_name(f->st, "alic", &a), STORE_NOT_FOUND);
    assert_int_equal(store_account_by_name(f->st, "alice_", &a), STORE_NOT_FOUND);
    assert_int_equal(store_account_credentials(f->st, "alice", &a, hash), STORE_OK);
    assert_string_equal(hash, "$hash$");
    assert_int_equal(a.id, alice);
    assert_int_equal(store_account_credentials(f->st, "nobody", &a, hash), STORE_NOT_FOUND);
    /* ids grow; the longest username and display name (50 code points of 4 bytes) come back whole */
    char longname[STORE_USERNAME_MAX + 1], display[4 * STORE_DISPLAY_NAME_MAX + 1] = "";
    memset(longname, 'z', STORE_USERNAME_MAX);
    longname[STORE_USERNAME_MAX] = '\0';
    for (int i = 0; i < STORE_DISPLAY_NAME_MAX; i++)
        strcat(display, "\xf0\x9f\x98\x80"); /* U+1F600 */
    char longhash[STORE_HASH_MAX];           /* the longest hash string there is room for */
    memset(longhash, 'h', STORE_HASH_MAX - 1);
    memcpy(longhash, "$argon2id$", 10);
    longhash[STORE_HASH_MAX - 1] = '\0';
    assert_int_equal(t_account_create(&t, longname, display, longhash, 5, &bob), STORE_OK);
    assert_int_equal(store_account_credentials(f->st, longname, &a, hash), STORE_OK);
    assert_string_equal(hash, longhash);
    assert_true(bob > alice);
    assert_int_equal(store_account_by_name(f->st, longname, &a), STORE_OK);
    assert_string_equal(a.display_name, display);
    assert_int_equal(strlen(a.display_name), 200);
    /* a username that differs only by case from one of another length is not a conflict */
    assert_int_equal(t_account_create(&t, "Alice2", "Alice Two", "$h$", 6, NULL), STORE_OK);
    t_account_by_name(&t, "aLiCe2", 1);
    t_account_by_name(&t, "nobody", 1);
    t_check_all(&t, 10);
}

/* Session basics: created for an account, found by its token hash, deleted (also twice). */
static void test_sessions(void **state)
{
    struct fx *f = *state;
    struct store_account a;
    struct store_session s;
    unsigned char tok[STORE_TOKEN_HASH_LEN];
    struct tc t = tc_open(f, "sessions", 0, 0);
    int64_t alice = mk(&t, "alice");
    mk(&t, "bob");
    int64_t id = t_session_create(&t, 7, alice, NULL, 99);
    token(tok, 7);
    assert_int_equal(store_session_account(f->st, tok, 100, &a, &s), STORE_OK);
    assert_int_equal(a.id, alice);
    assert_string_equal(a.username, "alice");
    assert_int_equal(s.id, id);
    assert_int_equal(s.account_id, alice);
    assert_int_equal(s.created_at, 99);
    assert_int_equal(s.last_used_at, 99);
    assert_string_equal(s.user_agent, "");
    assert_int_equal(t_session_account(&t, 8, 100), STORE_NOT_FOUND);
    t_session_delete(&t, 7);
    assert_int_equal(t_session_account(&t, 7, 100), STORE_NOT_FOUND);
    t_session_delete(&t, 7);
    assert_int_equal(t_revoke(&t, alice, id), STORE_NOT_FOUND);
    t_check_all(&t, 100);
}

/* Sliding expiry (default 30 days, and a configured lifetime), exactly at the lifetime; touch,
 * listing, revoking one, all but one, and the purge of expired sessions at log-in (seen in how
 * many sessions a later revocation deletes). */
static void test_session_expiry_and_revocation(void **state)
{
    struct fx *f = *state;
    struct store_account a;
    struct store_session s;
    unsigned char t1[STORE_TOKEN_HASH_LEN];
    int64_t t0 = 1000 * DAY_MS;
    struct tc t = tc_open(f, "session expiry", 0, 0);
    int64_t alice = mk(&t, "alice"), bob = mk(&t, "bob");
    /* control characters and anything not printable ASCII become '?'; the length is capped */
    char ua[400];
    memset(ua, 'u', sizeof ua - 1);
    ua[sizeof ua - 1] = '\0';
    memcpy(ua, "Firefox\t\xc3\xa9", 10);
    int64_t id1 = t_session_create(&t, 1, alice, ua, t0);
    int64_t id2 = t_session_create(&t, 2, alice, NULL, t0 + 1);
    int64_t id3 = t_session_create(&t, 3, bob, "curl", t0 + 2);
    assert_true(id1 < id2 && id2 < id3);

    token(t1, 1);
    assert_int_equal(store_session_account(f->st, t1, t0 + 30 * DAY_MS - 1, &a, &s), STORE_OK);
    assert_int_equal(a.id, alice);
    assert_int_equal(s.created_at, t0);
    assert_int_equal(s.last_used_at, t0);
    assert_int_equal(strlen(s.user_agent), STORE_USER_AGENT_MAX);
    assert_memory_equal(s.user_agent, "Firefox???uu", 12);
    /* 30 days without use: gone, exactly at the lifetime */
    assert_int_equal(t_session_account(&t, 1, t0 + 30 * DAY_MS), STORE_NOT_FOUND);
    /* a use on day 20 moves the end to day 50; touching never goes back in time */
    t_touch(&t, id1, t0 + 20 * DAY_MS);
    t_touch(&t, id1, t0 + 10 * DAY_MS);
    assert_int_equal(t_session_account(&t, 1, t0 + 50 * DAY_MS - 1), STORE_OK);
    assert_int_equal(store_session_account(f->st, t1, t0 + 50 * DAY_MS - 1, &a, &s), STORE_OK);
    assert_int_equal(s.last_used_at, t0 + 20 * DAY_MS);
    assert_int_equal(t_session_account(&t, 1, t0 + 50 * DAY_MS), STORE_NOT_FOUND);
    /* session_account only reads: the use at day 49 did not extend the session */
    assert_int_equal(t_session_account(&t, 1, t0 + 50 * DAY_MS + 1), STORE_NOT_FOUND);
    t_touch(&t, 999999, t0); /* a session that does not exist: OK */

    /* listing: alice's live sessions only, newest first */
    assert_int_equal(t_walk(&t, L_SESSIONS, alice, 0, t0 + 2 * DAY_MS, 16), 2);
    assert_int_equal(t_walk(&t, L_SESSIONS, alice, 0, t0 + 2 * DAY_MS, 1), 2);
    assert_int_equal(t_walk(&t, L_SESSIONS, alice, 0, t0 + 40 * DAY_MS, 16), 1); /* t2 expired on day 30 */
    struct store_page pg = {id2, 0, 10};
    assert_int_equal(t_list(&t, L_SESSIONS, alice, 0, t0, &pg, NULL), 1);
    pg = (struct store_page){0, id1, 10};
    assert_int_equal(t_list(&t, L_SESSIONS, alice, 0, t0, &pg, NULL), 1);
    assert_int_equal(t_walk(&t, L_SESSIONS, bob + alice + 100, 0, t0, 16), 0);

    /* ids are never reused, even the highest one after it is deleted */
    int64_t id9 = t_session_create(&t, 9, bob, "curl", t0 + 2);
    assert_int_equal(t_revoke(&t, bob, id9), STORE_OK);
    int64_t id10 = t_session_create(&t, 10, bob, "curl", t0 + 2);
    assert_true(id10 > id9);
    assert_int_equal(t_revoke(&t, bob, id10), STORE_OK);
    /* a log-in purges the account's expired sessions (t2), not other accounts' (t3) */
    t_session_create(&t, 4, alice, "new", t0 + 40 * DAY_MS);
    assert_int_equal(t_session_account(&t, 2, t0), STORE_NOT_FOUND);
    assert_int_equal(t_session_account(&t, 3, t0), STORE_OK);
    assert_int_equal(t_revoke(&t, alice, id2), STORE_NOT_FOUND); /* purged */
    /* the purge takes sessions last used exactly a lifetime ago, and nothing younger */
    int64_t carol = mk(&t, "carol");
    int64_t id6 = t_session_create(&t, 6, carol, "six", t0 + 100 * DAY_MS);
    int64_t id7 = t_session_create(&t, 7, carol, "seven", t0 + 100 * DAY_MS + 1);
    t_session_create(&t, 8, carol, "eight", t0 + 130 * DAY_MS);
    assert_int_equal(t_revoke(&t, carol, id6), STORE_NOT_FOUND);
    assert_int_equal(t_revoke(&t, carol, id7), STORE_OK);

    /* revoking: only one's own sessions */
    assert_int_equal(t_revoke(&t, alice, id3), STORE_NOT_FOUND);
    assert_int_equal(t_session_account(&t, 3, t0), STORE_OK);
    assert_int_equal(t_revoke(&t, alice, id1), STORE_OK);
    assert_int_equal(t_session_account(&t, 1, t0 + 40 * DAY_MS), STORE_NOT_FOUND);
    assert_int_equal(t_revoke(&t, alice, id1), STORE_NOT_FOUND);

    /* all but one */
    int64_t id5 = t_session_create(&t, 5, alice, "five", t0 + 40 * DAY_MS);
    assert_int_equal(t_revoke_others(&t, alice, id5), 1);
    assert_int_equal(t_session_account(&t, 4, t0 + 40 * DAY_MS), STORE_NOT_FOUND);
    assert_int_equal(t_session_account(&t, 5, t0 + 40 * DAY_MS), STORE_OK);
    assert_int_equal(t_session_account(&t, 3, t0), STORE_OK);
    assert_int_equal(t_revoke_others(&t, alice, 0), 1);
    assert_int_equal(t_session_account(&t, 5, t0 + 40 * DAY_MS), STORE_NOT_FOUND);
    assert_int_equal(t_revoke_others(&t, alice, 0), 0);
    assert_int_equal(store_session_revoke_others(f->st, alice, 0, NULL), STORE_OK); /* revoked may be NULL */
    t_check_all(&t, t0 + 3);
    store_close(f->st);

    /* a configured lifetime of one day, exactly */
    char err[256];
    struct store_options o = {.session_ttl_ms = DAY_MS};
    f->st = store_open(f->url, &o, err, sizeof err);
    assert_non_null(f->st);
    t.st = f->st;
    t.m->ttl = DAY_MS;
    assert_int_equal(t_session_account(&t, 3, t0 + 2 + DAY_MS - 1), STORE_OK);
    assert_int_equal(t_session_account(&t, 3, t0 + 2 + DAY_MS), STORE_NOT_FOUND);
    assert_int_equal(t_walk(&t, L_SESSIONS, bob, 0, t0 + 2 + DAY_MS - 1, 5), 1);
    assert_int_equal(t_walk(&t, L_SESSIONS, bob, 0, t0 + 2 + DAY_MS, 5), 0);
}

static void test_password_set_revokes_others(void **state)
{
    struct fx *f = *state;
    int64_t n = -1;
    struct tc t = tc_open(f, "password_set", 0, 0);
    int64_t alice = mk(&t, "alice"), bob = mk(&t, "bob");
    t_session_create(&t, 1, alice, NULL, 10);
    int64_t s2 = t_session_create(&t, 2, alice, NULL, 10);
    t_session_create(&t, 3, bob, NULL, 10);
    assert_int_equal(t_password_set(&t, alice, "$new$", s2, &n), STORE_OK);
    assert_int_equal(n, 1);
    t_account_by_name(&t, "alice", 1);
    t_account_by_name(&t, "bob", 1);
    assert_int_equal(t_session_account(&t, 1, 20), STORE_NOT_FOUND);
    assert_int_equal(t_session_account(&t, 2, 20), STORE_OK);
    assert_int_equal(t_session_account(&t, 3, 20), STORE_OK);
    assert_int_equal(t_password_set(&t, 999999, "$x$", 0, &n), STORE_NOT_FOUND);
    assert_int_equal(t_password_set(&t, bob, "$b2$", 0, &n), STORE_OK); /* keep none */
    assert_int_equal(n, 1);
    assert_int_equal(store_password_set(f->st, alice, "$n3$", 0, NULL), STORE_OK); /* revoked may be NULL */
    snprintf(t.m->acct[0].hash, sizeof t.m->acct[0].hash, "$n3$");
    m_sess_revoke_others(t.m, 0, 0);
    assert_int_equal(t_session_account(&t, 2, 20), STORE_NOT_FOUND);
    assert_int_equal(t_revoke_others(&t, alice, 0), 0);
    t_check_all(&t, 20);
}

static void test_follow_counters(void **state)
{
    struct fx *f = *state;
    struct tc t = tc_open(f, "follows", 0, 0);
    int64_t a = mk(&t, "a"), b = mk(&t, "b"), c = mk(&t, "c");
    assert_int_equal(t_follow(&t, a, b, 1, 5), STORE_OK);
    assert_int_equal(t_follow(&t, a, b, 1, 5), STORE_OK); /* idempotent */
    assert_int_equal(t_follow(&t, c, b, 1, 5), STORE_OK);
    assert_int_equal(t_follow(&t, a, c + 1000, 1, 5), STORE_NOT_FOUND);
    assert_int_equal(t_follow(&t, a, c + 1000, 0, 5), STORE_NOT_FOUND);
    assert_int_equal(account_of(f->st, "b").followers_count, 2);
    assert_int_equal(account_of(f->st, "a").following_count, 1);
    struct store_page pg = {0, 0, 10};
    int64_t last = 0;
    assert_int_equal(t_list(&t, L_FOLLOWERS, b, 0, 0, &pg, &last), 2);
    assert_int_equal(last, a); /* highest id first: c, a */
    pg.max_id = c;
    assert_int_equal(t_list(&t, L_FOLLOWERS, b, 0, 0, &pg, &last), 1);
    assert_int_equal(last, a);
    pg = (struct store_page){0, a, 10};
    assert_int_equal(t_list(&t, L_FOLLOWERS, b, 0, 0, &pg, &last), 1);
    assert_int_equal(last, c);
    pg = (struct store_page){0, 0, 1};
    assert_int_equal(t_list(&t, L_FOLLOWERS, b, 0, 0, &pg, &last), 1);
    assert_int_equal(last, c);
    assert_int_equal(t_follow(&t, a, b, 0, 5), STORE_OK);
    assert_int_equal(t_follow(&t, a, b, 0, 5), STORE_OK);
    assert_int_equal(t_follow(&t, a, c, 0, 5), STORE_OK); /* never followed */
    assert_int_equal(account_of(f->st, "b").followers_count, 1);
    assert_int_equal(account_of(f->st, "a").following_count, 0);
    pg = (struct store_page){0, 0, 10};
    assert_int_equal(t_list(&t, L_FOLLOWING, c, 0, 0, &pg, &last), 1);
    assert_int_equal(last, b);
    assert_int_equal(t_list(&t, L_FOLLOWING, a, 0, 0, &pg, NULL), 0);
    t_check_all(&t, 10);
}

static void test_posts_likes_replies(void **state)
{
    struct fx *f = *state;
    int64_t id;
    struct tc t = tc_open(f, "posts", 0, 0);
    int64_t a = mk(&t, "a"), b = mk(&t, "b");
    int64_t p1 = mkpost(&t, a, "first", 0, 100);
    int64_t r1 = mkpost(&t, b, "reply one", p1, 101);
    int64_t r2 = mkpost(&t, a, "reply two", p1, 102);
    assert_true(p1 < r1 && r1 < r2);
    assert_int_equal(t_post(&t, a, "x", 1, r2 + 1000, NULL, NULL, 1, &id), STORE_NOT_FOUND);
    struct row c = post_of(f->st, p1, 0);
    assert_string_equal(c.text, "first");
    assert_int_equal(c.p.created_at, 100);
    assert_int_equal(c.p.replies_count, 2);
    assert_int_equal(c.p.reply_to, 0);
    assert_string_equal(c.p.author.username, "a");
    assert_int_equal(c.p.author.posts_count, 2);
    assert_int_equal(post_of(f->st, r1, 0).p.reply_to, p1);
    /* text_len bytes are the text, NUL or not after them; any UTF-8 comes back as it was */
    int64_t p2 = 0;
    assert_int_equal(t_post(&t, b, "hello world", 5, 0, NULL, NULL, 103, &p2), STORE_OK);
    assert_string_equal(post_of(f->st, p2, 0).text, "hello");
    const char *utf8 = "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \"quotes\" 'and' \\ % _";
    mkpost(&t, b, utf8, 0, 104);
    char big[2001] = ""; /* the longest post: 500 code points of 4 bytes */
    for (int i = 0; i < 500; i++)
        strcat(big, "\xf0\x9f\x98\x80");
    int64_t pbig = mkpost(&t, a, big, 0, 105);
    assert_int_equal(post_of(f->st, pbig, 0).p.text_len, 2000);

    assert_int_equal(t_like(&t, p1, b, 1, 9), STORE_OK);
    assert_int_equal(t_like(&t, p1, b, 1, 9), STORE_OK);
    assert_int_equal(t_like(&t, p1, a, 1, 9), STORE_OK);
    assert_int_equal(t_like(&t, r2 + 1000, a, 1, 9), STORE_NOT_FOUND);
    assert_int_equal(t_like(&t, r2 + 1000, a, 0, 9), STORE_NOT_FOUND);
    assert_int_equal(post_of(f->st, p1, b).p.likes_count, 2);
    assert_int_equal(post_of(f->st, p1, b).p.liked, 1);
    assert_int_equal(post_of(f->st, p1, 0).p.liked, 0);
    assert_int_equal(t_like(&t, p1, b, 0, 9), STORE_OK);
    assert_int_equal(t_like(&t, p1, b, 0, 9), STORE_OK);
    assert_int_equal(t_like(&t, r1, b, 0, 9), STORE_OK); /* never liked */
    assert_int_equal(post_of(f->st, p1, b).p.likes_count, 1);
    assert_int_equal(post_of(f->st, p1, b).p.liked, 0);
    assert_int_equal(post_of(f->st, p1, a).p.liked, 1);
    t_like(&t, r1, a, 1, 9);

    struct store_page pg = {0, 0, 10};
    int64_t last = 0;
    assert_int_equal(t_list(&t, L_REPLIES, p1, b, 0, &pg, &last), 2);
    assert_int_equal(last, r2); /* oldest first */
    pg.since_id = r1;
    assert_int_equal(t_list(&t, L_REPLIES, p1, a, 0, &pg, &last), 1);
    assert_int_equal(last, r2);
    pg = (struct store_page){r2, 0, 10};
    assert_int_equal(t_list(&t, L_REPLIES, p1, a, 0, &pg, &last), 1);
    assert_int_equal(last, r1);
    pg = (struct store_page){0, 0, 1};
    assert_int_equal(t_list(&t, L_REPLIES, p1, a, 0, &pg, &last), 1);
    assert_int_equal(last, r1);
    t_check_all(&t, 10);

    /* deleting: only the author; counters follow; replies survive with reply_to cleared */
    assert_int_equal(t_delete(&t, p1, b), STORE_FORBIDDEN);
    assert_int_equal(t_delete(&t, r2 + 1000, a), STORE_NOT_FOUND);
    assert_int_equal(t_delete(&t, r2, a), STORE_OK);
    assert_int_equal(t_delete(&t, r2, a), STORE_NOT_FOUND);
    assert_int_equal(post_of(f->st, p1, 0).p.replies_count, 1);
    assert_int_equal(t_delete(&t, p1, a), STORE_OK);
    assert_int_equal(t_post_get(&t, p1, 0), STORE_NOT_FOUND);
    assert_int_equal(post_of(f->st, r1, 0).p.reply_to, 0);
    assert_int_equal(post_of(f->st, r1, a).p.liked, 1);
    assert_int_equal(account_of(f->st, "a").posts_count, 1);
    assert_int_equal(account_of(f->st, "b").posts_count, 3);
    assert_int_equal(t_like(&t, p1, b, 1, 9), STORE_NOT_FOUND);
    assert_int_equal(t_post(&t, b, "late reply", 10, p1, NULL, NULL, 1, &id), STORE_NOT_FOUND);
    pg = (struct store_page){0, 0, 10};
    assert_int_equal(t_list(&t, L_REPLIES, p1, a, 0, &pg, NULL), 0);
    t_check_all(&t, 10);
}

static void test_idempotency_key(void **state)
{
    struct fx *f = *state;
    int64_t id1 = 0, id2 = 0, id3 = 0, id4 = 0, id5 = 0;
    struct tc t = tc_open(f, "idempotency", 0, 0);
    int64_t a = mk(&t, "a"), b = mk(&t, "b");
    assert_int_equal(t_post(&t, a, "hello", 5, 0, "key-1", NULL, 1, &id1), STORE_OK);
    assert_int_equal(t_post(&t, a, "hello again", 11, 0, "key-1", NULL, 2, &id2), STORE_OK);
    assert_int_equal(id1, id2);
    assert_int_equal(t_post(&t, b, "hello", 5, 0, "key-1", NULL, 3, &id3), STORE_OK);
    assert_true(id3 != id1); /* keys are per author */
    assert_int_equal(t_post(&t, a, "hello", 5, 0, "key-2", NULL, 4, &id4), STORE_OK);
    assert_true(id4 != id1);
    /* the first answer stands even if the repeated request names a parent that is gone */
    assert_int_equal(t_post(&t, a, "hello", 5, id4 + 1000, "key-1", NULL, 5, &id5), STORE_OK);
    assert_int_equal(id5, id1);
    assert_int_equal(account_of(f->st, "a").posts_count, 2);
    assert_string_equal(post_of(f->st, id1, 0).text, "hello");
    assert_int_equal(post_of(f->st, id1, 0).p.created_at, 1);
    /* once the post is deleted the key is free again */
    assert_int_equal(t_delete(&t, id1, a), STORE_OK);
    assert_int_equal(t_post(&t, a, "anew", 4, 0, "key-1", NULL, 6, &id5), STORE_OK);
    assert_true(id5 > id4);
    t_check_all(&t, 10);
}

/* An Idempotency-Key is bound to the hash of the body it first came with. */
static void test_idempotency_body_hash(void **state)
{
    struct fx *f = *state;
    unsigned char h1[STORE_BODY_HASH_LEN], h2[STORE_BODY_HASH_LEN];
    int64_t id1 = 0, id2 = 0, id3 = 0, id4 = 0;
    memset(h1, 1, sizeof h1);
    memset(h2, 2, sizeof h2);
    struct tc t = tc_open(f, "idempotency hash", 0, 0);
    int64_t a = mk(&t, "alice");
    assert_int_equal(t_post(&t, a, "one", 3, 0, "k", h1, 1, &id1), STORE_OK);
    assert_int_equal(t_post(&t, a, "one", 3, 0, "k", h1, 2, &id2), STORE_OK);
    assert_int_equal(id2, id1);
    assert_int_equal(t_post(&t, a, "two", 3, 0, "k", h2, 3, &id3), STORE_CONFLICT);
    assert_int_equal(id3, id1);
    assert_int_equal(t_post(&t, a, "two", 3, 0, "k", NULL, 3, &id3), STORE_OK); /* no hash given: the same */
    assert_int_equal(id3, id1);
    /* a key first used without a hash answers any body */
    assert_int_equal(t_post(&t, a, "three", 5, 0, "k2", NULL, 4, &id4), STORE_OK);
    assert_int_equal(t_post(&t, a, "four", 4, 0, "k2", h2, 5, &id2), STORE_OK);
    assert_int_equal(id2, id4);
    assert_int_equal(account_of(f->st, "alice").posts_count, 2);
    assert_string_equal(post_of(f->st, id1, 0).text, "one");
    struct store_page all = {0, 0, 10};
    assert_int_equal(t_list(&t, L_AUTHOR, a, 0, 0, &all, NULL), 2);
    t_check_all(&t, 10);
}

static void test_lists_by_author(void **state)
{
    struct fx *f = *state;
    struct tc t = tc_open(f, "posts_by_author", 0, 0);
    int64_t a = mk(&t, "a"), b = mk(&t, "b"), p[5], last = 0;
    for (int i = 0; i < 5; i++) {
        p[i] = mkpost(&t, a, "x", 0, 10 + i);
        mkpost(&t, b, "y", 0, 20 + i);
    }
    t_like(&t, p[2], b, 1, 30);
    struct store_page pg = {p[3], p[0], 10};
    assert_int_equal(t_list(&t, L_AUTHOR, a, b, 0, &pg, &last), 2); /* p2, p1 */
    assert_int_equal(last, p[1]);
    pg = (struct store_page){0, 0, 2};
    assert_int_equal(t_list(&t, L_AUTHOR, a, 0, 0, &pg, &last), 2);
    assert_int_equal(last, p[3]);
    pg = (struct store_page){p[0], 0, 10};
    assert_int_equal(t_list(&t, L_AUTHOR, a, 0, 0, &pg, NULL), 0);
    pg = (struct store_page){0, p[4], 10};
    assert_int_equal(t_list(&t, L_AUTHOR, a, 0, 0, &pg, NULL), 0);
    pg = (struct store_page){INT64_MAX, 0, 10}; /* the highest bound there is: everything */
    assert_int_equal(t_list(&t, L_AUTHOR, a, 0, 0, &pg, NULL), 5);
    pg = (struct store_page){p[2], p[1], 10}; /* an empty window */
    assert_int_equal(t_list(&t, L_AUTHOR, a, 0, 0, &pg, NULL), 0);
    assert_int_equal(t_walk(&t, L_AUTHOR, a, b, 0, 1), 5);
    assert_int_equal(t_walk(&t, L_AUTHOR, a + b + 100, 0, 0, 3), 0); /* no such author */
    /* the newest post deleted, the next one still gets a higher id (never a used one) */
    int64_t newest = mkpost(&t, a, "newest", 0, 40);
    assert_int_equal(t_delete(&t, newest, a), STORE_OK);
    int64_t next = mkpost(&t, a, "next", 0, 41);
    assert_true(next > newest);
    assert_int_equal(t_post_get(&t, newest, 0), STORE_NOT_FOUND);
    t_check_all(&t, 50);
}

/* The hybrid fan-out with fanout_limit 2: posts written while the author had 0 or 1 follower
 * are fanned out, later ones are merged at read time; the home timeline shows both, newest
 * first, across follows and unfollows (backfill and removal), deletes and page boundaries. */
static void test_home_fanout_crossing(void **state)
{
    struct fx *f = *state;
    struct tc t = tc_open(f, "fan-out crossing", 2, 0);
    int64_t a = mk(&t, "a"), b = mk(&t, "b"), c = mk(&t, "c"), d = mk(&t, "d"), e = mk(&t, "e");
    const int64_t everyone[] = {a, b, c, d, e};
    t_follow(&t, b, a, 1, 1);
    int64_t p1 = mkpost(&t, a, "fanned", 0, 10); /* 1 follower < 2: fanned out */
    int64_t q1 = mkpost(&t, b, "b's own", 0, 11);
    t_follow(&t, c, a, 1, 12);
    int64_t p2 = mkpost(&t, a, "merged", 0, 13); /* 2 followers: merged at read time */
    assert_true(t.m->post[m_post_idx(t.m, p1)].fanout && !t.m->post[m_post_idx(t.m, p2)].fanout);
    assert_ids(home_ids(f->st, b, 0, 0, 10), 3, p2, q1, p1);
    assert_ids(home_ids(f->st, c, 0, 0, 10), 2, p2, p1);
    assert_ids(home_ids(f->st, a, 0, 0, 10), 2, p2, p1);
    /* page boundaries across the two paths */
    assert_ids(home_ids(f->st, b, 0, 0, 1), 1, p2);
    assert_ids(home_ids(f->st, b, p2, 0, 1), 1, q1);
    assert_ids(home_ids(f->st, b, q1, 0, 1), 1, p1);
    assert_ids(home_ids(f->st, b, p1, 0, 1), 0);
    assert_ids(home_ids(f->st, b, 0, p1, 10), 2, p2, q1);
    assert_ids(home_ids(f->st, b, 0, q1, 10), 1, p2);
    assert_ids(home_ids(f->st, b, p2, p1, 10), 1, q1);
    /* a new follower sees the fanned-out post (backfill) and the merged one */
    t_follow(&t, d, a, 1, 14);
    assert_ids(home_ids(f->st, d, 0, 0, 10), 2, p2, p1);
    /* unfollowing removes both; following again brings both back */
    t_follow(&t, b, a, 0, 15);
    assert_ids(home_ids(f->st, b, 0, 0, 10), 1, q1);
    t_follow(&t, b, a, 1, 16);
    assert_ids(home_ids(f->st, b, 0, 0, 10), 3, p2, q1, p1);
    /* the liked flag is the owner's */
    t_like(&t, p1, b, 1, 17);
    t_like(&t, p2, c, 1, 17);
    t_check_all(&t, 20);
    /* back under the limit: a's next post is fanned out again, old ones keep their path */
    t_follow(&t, b, a, 0, 18);
    t_follow(&t, c, a, 0, 18);
    int64_t p3 = mkpost(&t, a, "fanned again", 0, 19); /* 1 follower (d) */
    assert_true(t.m->post[m_post_idx(t.m, p3)].fanout);
    t_follow(&t, e, a, 1, 20);
    t_follow(&t, c, a, 1, 20);
    assert_ids(home_ids(f->st, e, 0, 0, 10), 3, p3, p2, p1);
    assert_ids(home_ids(f->st, d, 0, 0, 10), 3, p3, p2, p1);
    assert_ids(home_ids(f->st, b, 0, 0, 10), 1, q1);
    /* deleting posts of either path removes them from every timeline */
    assert_int_equal(t_delete(&t, p2, a), STORE_OK);
    assert_ids(home_ids(f->st, e, 0, 0, 10), 2, p3, p1);
    assert_int_equal(t_delete(&t, p1, a), STORE_OK);
    assert_ids(home_ids(f->st, d, 0, 0, 10), 1, p3);
    assert_ids(home_ids(f->st, a, 0, 0, 10), 1, p3);
    t_check_all(&t, 30);
    /* an author far over the limit, with many merged posts, read in small pages */
    for (int i = 0; i < 12; i++) {
        mkpost(&t, i % 2 ? a : e, "burst", 0, 40 + i);
        if (i % 4 == 0)
            mkpost(&t, c, "c between", 0, 40 + i);
    }
    for (int i = 0; i < 5; i++)
        for (int limit = 1; limit <= 5; limit += 2)
            t_walk(&t, L_HOME, everyone[i], 0, 0, limit);
    t_check_all(&t, 60);
}

/* Throttles: a fixed window per key, charged all-or-none, exact at the limit, shared by two
 * connections (two servers on one database), given back and forgotten, restarting when the
 * window ends. */
static void test_throttle(void **state)
{
    struct fx *f = *state;
    struct tc t = tc_open(f, "throttle", 0, 0);
    struct tc u = t; /* the same model through another connection */
    u.st = f->other = open_store(f, 0, 0);
    struct store_throttle acct = {"login/account/alice", 3, 60000}, addr = {"login/address/10.0.0.1", 5, 120000};
    struct store_throttle both[2] = {acct, addr};
    int64_t retry = -1;
    assert_int_equal(t_throttle_take(&t, both, 2, 1000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&u, both, 2, 2000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, both, 2, 3000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&u, both, 2, 4000, &retry), STORE_LIMITED);
    assert_int_equal(retry, 1000 + 60000 - 4000); /* the window began at the first charge */
    /* all or none: the refused attempt did not charge the address, which has room for two */
    assert_int_equal(t_throttle_take(&t, &addr, 1, 5000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &addr, 1, 5000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &addr, 1, 5000, &retry), STORE_LIMITED);
    assert_int_equal(retry, 1000 + 120000 - 5000);
    /* both full: the retry is the later end */
    assert_int_equal(t_throttle_take(&u, both, 2, 5500, &retry), STORE_LIMITED);
    assert_int_equal(retry, 1000 + 120000 - 5500);
    /* giving one back makes room for one; forgetting clears the account */
    t_throttle_give(&u, addr.key, 0);
    assert_int_equal(t_throttle_take(&t, &addr, 1, 6000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &addr, 1, 6000, &retry), STORE_LIMITED);
    t_throttle_give(&u, acct.key, 1);
    t_throttle_give(&u, "no/such/key", 1);
    t_throttle_give(&u, "no/such/key", 0);
    assert_int_equal(t_throttle_take(&t, &acct, 1, 7000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &acct, 1, 7000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &acct, 1, 7000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &acct, 1, 7000, &retry), STORE_LIMITED);
    assert_int_equal(retry, 60000); /* a new window began at 7000 */
    /* given back below zero stays at zero: still three charges to the limit */
    t_throttle_give(&t, acct.key, 1);
    t_throttle_give(&t, acct.key, 0);
    assert_int_equal(t_throttle_take(&t, &acct, 1, 8000, &retry), STORE_OK);
    t_throttle_give(&t, acct.key, 0);
    t_throttle_give(&t, acct.key, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(t_throttle_take(&t, &acct, 1, 8000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &acct, 1, 8000, &retry), STORE_LIMITED);
    assert_int_equal(retry, 60000); /* the window of 8000 kept running at zero */
    /* a limit <= 0 is skipped: it is never refused and charges nothing */
    struct store_throttle off = {"signup/address/x", 0, 1000}, on1 = {"signup/address/x", 1, 1000};
    for (int i = 0; i < 5; i++)
        assert_int_equal(t_throttle_take(&t, &off, 1, 8000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &on1, 1, 8000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &on1, 1, 8500, &retry), STORE_LIMITED);
    assert_int_equal(retry, 500);
    /* exactly when a window ends counting starts again */
    assert_int_equal(t_throttle_take(&t, &on1, 1, 9000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &on1, 1, 9999, &retry), STORE_LIMITED);
    assert_int_equal(retry, 1);
    assert_int_equal(t_throttle_take(&t, both, 2, 1000 + 120000, &retry), STORE_OK);
    assert_int_equal(t_throttle_take(&t, &addr, 1, 1000 + 120000, &retry), STORE_OK);
}

/* store_read_begin/end mark one request's reads (a store may run them in one snapshot, or do
 * nothing, store.h): reads in between answer as usual, and writes work again afterwards. Whether
 * another connection's commit is seen in between is the store's choice (SQLite's snapshot is
 * tested in test_store_sqlite.c). */
static void test_read_begin_end(void **state)
{
    struct fx *f = *state;
    struct tc t = tc_open(f, "read_begin", 0, 0);
    int64_t a = mk(&t, "a"), b = mk(&t, "b");
    mkpost(&t, a, "one", 0, 1);
    t_follow(&t, b, a, 1, 2);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(store_read_begin(f->st), STORE_OK);
        t_account_by_name(&t, "a", 0);
        struct store_page pg = {0, 0, 10};
        t_list(&t, L_HOME, b, 0, 0, &pg, NULL);
        t_list(&t, L_AUTHOR, a, b, 0, &pg, NULL);
        t_list(&t, L_FOLLOWERS, a, 0, 0, &pg, NULL);
        t_post_get(&t, t.m->post[0].id, b);
        t_count_accounts(&t);
        store_read_end(f->st);
        mkpost(&t, round % 2 ? a : b, "more", 0, 10 + round);
        t_like(&t, t.m->post[0].id, b, round % 2, 20);
    }
    t_check_all(&t, 30);
}

struct writer {
    const char *url;
    int64_t author, target, followee;
    int ok;
    char err[512];
};

static void *write_thread(void *arg)
{
    struct writer *w = arg;
    char text[32];
    struct store *st = store_open(w->url, NULL, w->err, sizeof w->err);
    w->ok = st != NULL;
    for (int i = 0; w->ok && i < 25; i++) {
        int64_t id;
        snprintf(text, sizeof text, "post %d", i);
        int rc = store_post_create(st, w->author, text, strlen(text), 0, NULL, NULL, i, &id);
        if (rc == STORE_OK)
            rc = store_like(st, w->target, w->author, i % 2 == 0, i);
        if (rc == STORE_OK)
            rc = store_follow(st, w->author, w->followee, i % 2, i);
        if (rc != STORE_OK) {
            snprintf(w->err, sizeof w->err, "step %d: %s: %s", i, rc_name(rc), store_errmsg(st));
            w->ok = 0;
        }
    }
    store_close(st);
    return NULL;
}

/* Four connections writing at once (posts, likes of one post, follows of one account): every
 * acknowledged write is there, with exact counters. */
static void test_concurrent_writers(void **state)
{
    struct fx *f = *state;
    pthread_t th[4];
    struct writer w[4];
    char name[16];
    struct tc t = tc_open(f, "concurrent writers", 0, 0);
    int64_t author[4];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "w%d", i);
        author[i] = mk(&t, name);
    }
    int64_t target = mkpost(&t, author[0], "target", 0, 1);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){f->url, author[i], target, author[i == 0 ? 1 : 0], 0, ""};
        assert_int_equal(pthread_create(&th[i], NULL, write_thread, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        if (!w[i].ok)
            fail_msg("writer %d: %s", i, w[i].err);
    }
    int64_t total = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "w%d", i);
        struct store_account a = account_of(f->st, name);
        assert_int_equal(a.posts_count, i == 0 ? 26 : 25);
        /* each writer's last step (i = 24) unfollowed */
        assert_int_equal(a.following_count, 0);
        assert_int_equal(a.followers_count, 0);
        total += a.posts_count;
        struct ids ids = {.n = 0};
        struct store_page pg = {0, 0, 30};
        assert_int_equal(store_posts_by_author(f->st, author[i], 0, &pg, collect_id, &ids), STORE_OK);
        assert_int_equal(ids.n, a.posts_count);
    }
    assert_int_equal(total, 101);
    assert_int_equal(post_of(f->st, target, 0).p.likes_count, 4); /* the last step (i = 24) likes */
}

/* Racing connections, released together by a barrier. */
struct racer {
    const char *url;
    pthread_barrier_t *go;
    const char *name; /* account_create: the username */
    int64_t author;   /* post_create: the author, key and hash */
    const char *key;
    const unsigned char *hash;
    int rc;
    int64_t id;
    char err[512];
};

static void *race_thread(void *arg)
{
    struct racer *r = arg;
    struct store *st = store_open(r->url, NULL, r->err, sizeof r->err);
    struct store_account a;
    pthread_barrier_wait(r->go);
    if (st == NULL) {
        r->rc = -1000;
        return NULL;
    }
    if (r->name != NULL) {
        r->rc = store_account_create(st, r->name, r->name, "$h$", 5, &a);
        r->id = a.id;
    } else {
        r->rc = store_post_create(st, r->author, "raced", 5, 0, r->key, r->hash, 6, &r->id);
    }
    if (r->rc != STORE_OK)
        snprintf(r->err, sizeof r->err, "%s: %s", rc_name(r->rc), store_errmsg(st));
    store_close(st);
    return NULL;
}

static void race(struct racer *r, int n)
{
    pthread_t th[8];
    pthread_barrier_t go;
    assert_true(n <= 8);
    assert_int_equal(pthread_barrier_init(&go, NULL, (unsigned)n), 0);
    for (int i = 0; i < n; i++) {
        r[i].go = &go;
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &r[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
}

/* Signing up the same name (in four cases) on four connections at once: exactly one account. The
 * same Idempotency-Key on four connections at once: one post, every answer naming it (and with
 * different body hashes, the others STORE_CONFLICT naming it). */
static void test_concurrent_unique(void **state)
{
    struct fx *f = *state;
    static const char *const names[3][4] = {
        {"Racer", "RACER", "racer", "rAcEr"}, {"two", "TWO", "Two", "tWO"}, {"Three", "tHREE", "three", "THREE"}};
    unsigned char h[2][STORE_BODY_HASH_LEN];
    struct racer r[6];
    int64_t n = 0;
    memset(h[0], 7, sizeof h[0]);
    memset(h[1], 8, sizeof h[1]);
    for (int round = 0; round < 3; round++) {
        int ok = 0;
        memset(r, 0, sizeof r);
        for (int i = 0; i < 4; i++) {
            r[i].url = f->url;
            r[i].name = names[round][i];
        }
        race(r, 4);
        for (int i = 0; i < 4; i++) {
            if (r[i].rc == STORE_OK)
                ok++;
            else if (r[i].rc != STORE_CONFLICT)
                fail_msg("round %d racer %d: %s", round, i, r[i].err);
        }
        assert_int_equal(ok, 1);
    }
    f->st = open_store(f, 0, 0);
    assert_int_equal(store_count_accounts(f->st, &n), STORE_OK);
    assert_int_equal(n, 3);
    int64_t author = account_of(f->st, "racer").id;
    for (int round = 0; round < 2; round++) {
        memset(r, 0, sizeof r);
        for (int i = 0; i < 6; i++) {
            r[i].url = f->url;
            r[i].author = author;
            r[i].key = round == 0 ? "same-key" : "another-key";
            r[i].hash = round == 0 ? h[0] : h[i % 2];
        }
        race(r, 6);
        int conflicts = 0;
        for (int i = 0; i < 6; i++) {
            if (r[i].rc == STORE_CONFLICT)
                conflicts++;
            else if (r[i].rc != STORE_OK)
                fail_msg("post round %d racer %d: %s", round, i, r[i].err);
            if (r[i].id != r[0].id)
                fail_msg("post round %d: racer %d got post %lld, racer 0 post %lld", round, i, (long long)r[i].id,
                         (long long)r[0].id);
        }
        if (round == 0)
            assert_int_equal(conflicts, 0);
        else
            assert_int_equal(conflicts, 3); /* whichever hash won, the three others differ */
    }
    assert_int_equal(account_of(f->st, "racer").posts_count, 2);
    assert_int_equal(home_ids(f->st, author, 0, 0, 10).n, 2);
}

/* Posts, deletes, follows, likes and replies racing on eight connections (fan-out limit 3, so
 * authors cross it while followers come and go): a post's fan-out and a follow's backfill must
 * not miss each other, a like or a reply racing with the delete of its post either lands or is
 * STORE_NOT_FOUND, and the counters stay exact. The model is then read back from the store (every
 * account's posts, followees, each post's likers) and every timeline, counter and list must agree
 * with it. */
struct churner {
    const char *url;
    pthread_barrier_t *go;
    const int64_t *acct; /* CHURN_ACCTS accounts; 0 and 1 are the authors */
    int who, ok;
    char err[512];
};

enum { CHURN_ACCTS = 8, CHURN_STEPS = 120 };

/* One of an author's newest posts (0 if none). */
static int64_t recent_post(struct store *st, int64_t author, uint64_t *x)
{
    struct ids ids = {.n = 0};
    struct store_page pg = {0, 0, 4};
    if (store_posts_by_author(st, author, 0, &pg, collect_id, &ids) != STORE_OK || ids.n == 0)
        return 0;
    return ids.v[rn(x, ids.n)];
}

static void *churn_thread(void *arg)
{
    struct churner *c = arg;
    struct store_options o = {.fanout_limit = 3};
    struct store *st = store_open(c->url, &o, c->err, sizeof c->err);
    uint64_t x = 1000 + (uint64_t)c->who;
    c->ok = st != NULL;
    pthread_barrier_wait(c->go);
    for (int i = 0; c->ok && i < CHURN_STEPS; i++) {
        int rc, racy = 0;
        int64_t id, me = c->acct[c->who], author = c->acct[rn(&x, 2)];
        if (c->who < 2 && i % 4 == 3 && (id = recent_post(st, me, &x)) != 0) {
            rc = store_post_delete(st, id, me); /* only its author deletes it: no race to lose */
        } else if (c->who < 2) {
            rc = store_post_create(st, me, "churn", 5, 0, NULL, NULL, i, &id);
        } else if (c->who < 6) {
            rc = store_follow(st, me, author, rn(&x, 3) != 0, i);
        } else if ((id = recent_post(st, author, &x)) == 0) {
            continue;
        } else {
            racy = 1; /* the post may be deleted meanwhile */
            if (i % 3 == 0)
                rc = store_post_create(st, me, "reply", 5, id, NULL, NULL, i, &id);
            else
                rc = store_like(st, id, me, c->who == 6 || i % 3 == 1, i); /* 6 only likes */
        }
        if (rc != STORE_OK && !(racy && rc == STORE_NOT_FOUND)) {
            snprintf(c->err, sizeof c->err, "step %d: %s: %s", i, rc_name(rc), store_errmsg(st));
            c->ok = 0;
        }
    }
    store_close(st);
    return NULL;
}

static int collect_following(void *ctx, const struct store_account *a)
{
    struct ids *ids = ctx;
    assert_true(ids->n < 64);
    ids->v[ids->n++] = a->id;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_concurrent_fanout(void **state)
{
    struct fx *f = *state;
    pthread_t th[CHURN_ACCTS];
    struct churner c[CHURN_ACCTS];
    int64_t acct[CHURN_ACCTS];
    char name[16];
    struct tc t = tc_open(f, "concurrent fan-out", 3, 0);
    for (int i = 0; i < CHURN_ACCTS; i++) {
        snprintf(name, sizeof name, "c%d", i);
        acct[i] = mk(&t, name);
    }
    for (int i = 0; i < 2 * 8; i++) { /* something to like and reply to from the start */
        int64_t id;
        assert_int_equal(store_post_create(f->st, acct[i % 2], "first", 5, 0, NULL, NULL, 0, &id), STORE_OK);
    }
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, CHURN_ACCTS), 0);
    for (int i = 0; i < CHURN_ACCTS; i++) {
        c[i] = (struct churner){f->url, &go, acct, i, 0, ""};
        assert_int_equal(pthread_create(&th[i], NULL, churn_thread, &c[i]), 0);
    }
    for (int i = 0; i < CHURN_ACCTS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < CHURN_ACCTS; i++)
        if (!c[i].ok)
            fail_msg("churner %d: %s", i, c[i].err);
    /* the model, from what the store says was committed */
    struct model *m = t.m;
    int64_t *posts = calloc(M_POSTS, sizeof *posts);
    int np = 0;
    assert_non_null(posts);
    for (int a = 0; a < CHURN_ACCTS; a++) {
        struct ids page = {.n = 0};
        struct store_page pg = {0, 0, 64};
        for (;;) {
            page.n = 0;
            assert_int_equal(store_posts_by_author(f->st, acct[a], 0, &pg, collect_id, &page), STORE_OK);
            for (int i = 0; i < page.n; i++)
                posts[np++] = page.v[i];
            if (page.n < 64)
                break;
            pg.max_id = page.v[page.n - 1];
        }
    }
    qsort(posts, (size_t)np, sizeof *posts, cmp_i64); /* parents before their replies */
    int likes = 0, replies = 0;
    for (int i = 0; i < np; i++) {
        struct row r = post_of(f->st, posts[i], 0);
        int pi = m_add_post(m, posts[i], m_acct_by_id(m, r.p.author.id), r.text, r.p.text_len, r.p.reply_to, NULL, NULL,
                            r.p.created_at);
        replies += r.p.reply_to != 0;
        for (int v = 0; v < CHURN_ACCTS; v++)
            if (post_of(f->st, posts[i], acct[v]).p.liked) {
                m->post[pi].likes |= 1ull << v;
                likes++;
            }
    }
    for (int i = 0; i < CHURN_ACCTS; i++) {
        struct ids following = {.n = 0};
        struct store_page pg = {0, 0, 64};
        assert_int_equal(store_account_list(f->st, STORE_FOLLOWING, acct[i], &pg, collect_following, &following),
                         STORE_OK);
        for (int j = 0; j < following.n; j++)
            m->follows[i] |= 1ull << m_acct_by_id(m, following.v[j]);
    }
    free(posts);
    if (np < 100 || likes == 0 || replies == 0) /* the race had something in it */
        fail_msg("%d posts, %d likes, %d replies", np, likes, replies);
    t_check_all(&t, 1000);
}

struct opener {
    const char *url;
    int ok;
    char err[512];
};

static void *open_thread(void *arg)
{
    struct opener *o = arg;
    struct store *st = store_open(o->url, NULL, o->err, sizeof o->err);
    o->ok = st != NULL;
    if (st != NULL) {
        int64_t n = -1;
        o->ok = store_count_accounts(st, &n) == STORE_OK && n == 0;
        if (!o->ok)
            snprintf(o->err, sizeof o->err, "count_accounts: %lld: %s", (long long)n, store_errmsg(st));
    }
    store_close(st);
    return NULL;
}

/* Servers starting together on a new database: each opens it (creating the schema once). */
static void test_concurrent_open(void **state)
{
    struct fx *f = *state;
    pthread_t th[3];
    struct opener o[3];
    for (int i = 0; i < 3; i++) {
        o[i] = (struct opener){f->url, 0, ""};
        assert_int_equal(pthread_create(&th[i], NULL, open_thread, &o[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        if (!o[i].ok)
            fail_msg("opener %d: %s", i, o[i].err);
    }
    struct tc t = tc_open(f, "after concurrent open", 0, 0);
    mk(&t, "a");
    t_check_all(&t, 1);
}

/* ---- bulk loading ---- */

static int t_bulk_begin(struct tc *t, int wipe, struct model **saved)
{
    struct model *m = t->m;
    op(t, "bulk_begin(wipe=%d)", wipe);
    int empty = m->nacct == 0;
    int rc = store_bulk_begin(t->st, wipe);
    expect_rc(t, wipe || empty ? STORE_OK : STORE_CONFLICT, rc);
    if (rc != STORE_OK)
        return rc;
    *saved = malloc(sizeof **saved);
    assert_non_null(*saved);
    memcpy(*saved, m, sizeof *m);
    if (wipe) { /* every row goes; ids may start again (a SQLite file's do) */
        struct model *fresh = model_new(m->fanout_limit, m->ttl);
        memcpy(fresh->thr, m->thr, sizeof m->thr);
        memcpy(m, fresh, sizeof *m);
        free(fresh);
    }
    return rc;
}

static int64_t t_bulk_account(struct tc *t, const char *name, int64_t created_at)
{
    int64_t id = 0;
    op(t, "bulk_account(\"%s\")", name);
    int want = m_acct_by_name(t->m, name) >= 0 ? STORE_CONFLICT : STORE_OK;
    int rc = store_bulk_account(t->st, name, name, "$bulk$", created_at, &id);
    expect_rc(t, want, rc);
    if (rc != STORE_OK)
        return 0;
    new_id(t, "account", &t->m->top_acct, id);
    m_add_acct(t->m, id, name, name, "$bulk$", created_at);
    return id;
}

static void t_bulk_follow(struct tc *t, int64_t follower, int64_t followee)
{
    op(t, "bulk_follow(%lld, %lld)", (long long)follower, (long long)followee);
    int a = m_acct_by_id(t->m, follower), b = m_acct_by_id(t->m, followee);
    assert_true(a >= 0 && b >= 0 && a != b && !m_follows(t->m, a, b));
    expect_rc(t, STORE_OK, store_bulk_follow(t->st, follower, followee, 1));
    t->m->follows[a] |= 1ull << b;
}

static int64_t t_bulk_post(struct tc *t, int64_t author, const char *text, int64_t created_at)
{
    int64_t id = 0;
    op(t, "bulk_post(%lld, \"%s\")", (long long)author, text);
    int a = m_acct_by_id(t->m, author);
    assert_true(a >= 0);
    expect_rc(t, STORE_OK, store_bulk_post(t->st, author, text, created_at, &id));
    new_id(t, "post", &t->m->top_post, id);
    int i = m_add_post(t->m, id, a, text, strlen(text), 0, NULL, NULL, created_at);
    t->m->post[i].bulk = 1;
    return id;
}

/* bulk_end: commits (deciding the loaded posts' fan-out from the final follower counts, and
 * checking the statistics) or rolls back to *saved. */
static void t_bulk_end(struct tc *t, int commit, struct model **saved)
{
    struct model *m = t->m;
    struct store_bulk_stats got, want;
    memset(&got, 0xff, sizeof got);
    op(t, "bulk_end(commit=%d)", commit);
    expect_rc(t, STORE_OK, store_bulk_end(t->st, commit, &got));
    if (!commit) {
        memcpy(m, *saved, sizeof *m);
    } else {
        memset(&want, 0, sizeof want);
        for (int i = 0; i < m->npost; i++)
            if (m->post[i].bulk) {
                m->post[i].bulk = 0;
                m->post[i].fanout = m_followers(m, m->post[i].author) < m->fanout_limit;
            }
        want.accounts = m->nacct;
        for (int i = 0; i < m->nacct; i++) {
            int64_t n = m_followers(m, i);
            want.follows += n;
            want.big_accounts += n >= m->fanout_limit;
            if (n > want.max_followers)
                want.max_followers = n;
        }
        for (int i = 0; i < m->npost; i++) {
            if (!m->post[i].live)
                continue;
            want.posts++;
            want.fanout_posts += m->post[i].fanout;
            want.home_rows += 1 + (m->post[i].fanout ? m_followers(m, m->post[i].author) : 0);
        }
        expect_int(t, "stats.accounts", want.accounts, got.accounts);
        expect_int(t, "stats.follows", want.follows, got.follows);
        expect_int(t, "stats.posts", want.posts, got.posts);
        expect_int(t, "stats.fanout_posts", want.fanout_posts, got.fanout_posts);
        expect_int(t, "stats.home_rows", want.home_rows, got.home_rows);
        expect_int(t, "stats.big_accounts", want.big_accounts, got.big_accounts);
        expect_int(t, "stats.max_followers", want.max_followers, got.max_followers);
    }
    free(*saved);
    *saved = NULL;
}

/* A bulk-loaded graph (fan-out limit 4, so some authors are over it) reads back as the model
 * says, stays exact under live writes, and a second load is refused unless wiping. */
static void test_bulk_load(void **state)
{
    struct fx *f = *state;
    enum { USERS = 30 };
    char name[16];
    int64_t id[USERS + 1];
    struct model *saved = NULL;
    struct tc t = tc_open(f, "bulk load", 4, 0);
    assert_int_equal(t_bulk_begin(&t, 0, &saved), STORE_OK);
    for (int u = 1; u <= USERS; u++) {
        snprintf(name, sizeof name, "user%d", u);
        id[u] = t_bulk_account(&t, name, u);
    }
    for (int u = 1; u <= USERS; u++) /* user v is followed by everyone below v*v/8-ish */
        for (int v = 1; v <= USERS; v++)
            if (u != v && (u * 7 + v * 3) % (v + 1) == 0)
                t_bulk_follow(&t, id[u], id[v]);
    for (int j = 0; j < 3; j++)
        for (int u = 1; u <= USERS; u++)
            t_bulk_post(&t, id[u], "seeded", 100 + j * USERS + u);
    t_bulk_end(&t, 1, &saved);
    int fanned = 0, big = 0;
    for (int i = 0; i < t.m->npost; i++)
        fanned += t.m->post[i].fanout;
    for (int i = 0; i < t.m->nacct; i++)
        big += m_followers(t.m, i) >= 4;
    assert_true(big > 0 && fanned > 0 && fanned < t.m->npost); /* both paths are in the graph */
    t_check_all(&t, 1000);
    /* live writes on top of the loaded graph keep everything exact */
    mkpost(&t, id[1], "live", 0, 2000);
    mkpost(&t, id[USERS], "live", 0, 2001);
    t_follow(&t, id[2], id[USERS], 1, 2002);
    t_follow(&t, id[3], id[1], 0, 2003);
    t_follow(&t, id[3], id[USERS], 0, 2003);
    t_like(&t, t.m->post[0].id, id[5], 1, 2004);
    t_delete(&t, t.m->post[1].id, t.m->acct[t.m->post[1].author].id);
    t_session_create(&t, 1, id[7], "after load", 2005);
    t_check_all(&t, 2006);
    /* a second load is refused unless wiping; wiping empties everything */
    assert_int_equal(t_bulk_begin(&t, 0, &saved), STORE_CONFLICT);
    assert_int_equal(t_bulk_begin(&t, 1, &saved), STORE_OK);
    t_bulk_end(&t, 1, &saved);
    t_check_all(&t, 3000);
    assert_int_equal(t_session_account(&t, 1, 2006), STORE_NOT_FOUND);
    /* and the empty database loads again, then takes live writes */
    assert_int_equal(t_bulk_begin(&t, 0, &saved), STORE_OK);
    int64_t x = t_bulk_account(&t, "x", 1), y = t_bulk_account(&t, "y", 1);
    t_bulk_follow(&t, y, x);
    t_bulk_post(&t, x, "loaded", 5);
    /* what a bulk format must escape (PostgreSQL's COPY: tab, newline, CR, backslash, \N, \.)
     * comes back byte for byte */
    int64_t z = t_bulk_account(&t, "z\\.\t\\N\r\n", 1);
    t_bulk_post(&t, z, "\\.\n\\N\ta\\tb\r\n\\", 6);
    t_bulk_end(&t, 1, &saved);
    mkpost(&t, x, "live", 0, 3001);
    t_check_all(&t, 3002);
}

/* A load rolled back leaves nothing. A username taken twice in one load (in another case) is
 * STORE_CONFLICT, from that bulk_account or from a later call of the load (store.h: a store may
 * send rows in batches); either way nothing of the load is kept. */
static void test_bulk_rollback(void **state)
{
    struct fx *f = *state;
    struct model *saved = NULL;
    struct tc t = tc_open(f, "bulk rollback", 0, 0);
    int64_t id = 0;
    assert_int_equal(t_bulk_begin(&t, 0, &saved), STORE_OK);
    int64_t x = t_bulk_account(&t, "x", 1);
    assert_true(x > 0);
    int rc = store_bulk_account(f->st, "X", "X", "$h$", 1, &id);
    if (rc == STORE_OK) { /* reported later, at the latest by bulk_end */
        rc = store_bulk_post(f->st, x, "p", 2, &id);
        if (rc == STORE_OK)
            rc = store_bulk_end(f->st, 1, NULL);
        else
            store_bulk_end(f->st, 0, NULL);
    } else {
        assert_int_equal(store_bulk_end(f->st, 0, NULL), STORE_OK);
    }
    assert_int_equal(rc, STORE_CONFLICT);
    memcpy(t.m, saved, sizeof *t.m);
    free(saved);
    saved = NULL;
    t_check_all(&t, 1);
    /* the connection is usable normally afterwards, for live writes and for another load */
    mk(&t, "y");
    t_check_all(&t, 2);
    /* a load with rows, rolled back, leaves nothing */
    assert_int_equal(t_bulk_begin(&t, 1, &saved), STORE_OK);
    int64_t z = t_bulk_account(&t, "z", 1), w = t_bulk_account(&t, "w", 1);
    t_bulk_follow(&t, z, w);
    t_bulk_post(&t, w, "gone", 1);
    t_bulk_end(&t, 0, &saved);
    t_check_all(&t, 3);
    mkpost(&t, t.m->acct[0].id, "live", 0, 4);
    t_check_all(&t, 5);
}

/* ---- random operation sequences ---- */

/* What a random sequence met, so that a run cannot pass without exercising the contract. */
struct seen {
    int rc[8]; /* by -rc + RC_MODULE offset: OK, NOT_FOUND, CONFLICT, FORBIDDEN, LIMITED */
    int fanned, merged, expired, idem_same;
};

static void saw(struct seen *s, int rc)
{
    int i = rc == STORE_OK ? 0 : rc == STORE_NOT_FOUND ? 1 : rc == STORE_CONFLICT ? 2 : rc == STORE_FORBIDDEN ? 3 : 4;
    s->rc[i]++;
}

/* A random existing account id (or, rarely, one that does not exist when allow_missing). */
static int64_t any_account(struct model *m, uint64_t *x, int allow_missing)
{
    if (m->nacct == 0 || (allow_missing && rn(x, 40) == 0))
        return m->top_acct + 1 + rn(x, 1000);
    return m->acct[rn(x, m->nacct)].id;
}

/* A random post id: mostly one made (live or deleted), sometimes one never made. */
static int64_t any_post(struct model *m, uint64_t *x)
{
    if (m->npost == 0 || rn(x, 30) == 0)
        return m->top_post + 1 + rn(x, 1000);
    if (rn(x, 2)) /* favour recent posts */
        return m->post[m->npost - 1 - rn(x, m->npost < 20 ? m->npost : 20)].id;
    return m->post[rn(x, m->npost)].id;
}

static void random_page(uint64_t *x, int64_t top, struct store_page *pg)
{
    pg->max_id = rn(x, 3) == 0 ? 1 + rn(x, (int)(top > 0 ? top + 2 : 2)) : 0;
    pg->since_id = rn(x, 4) == 0 ? rn(x, (int)(top > 0 ? top + 1 : 1)) : 0;
    pg->limit = 1 + rn(x, 8);
}

static void random_text(uint64_t *x, char *out, size_t *len)
{
    static const char *const bits[] = {"a", "b",  "c",  " ", "post", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80",
                                       "'", "\"", "\\", "%"};
    size_t n = 0;
    int parts = 1 + rn(x, 8);
    for (int i = 0; i < parts; i++) {
        const char *b = bits[rn(x, (int)(sizeof bits / sizeof bits[0]))];
        memcpy(out + n, b, strlen(b));
        n += strlen(b);
    }
    out[n] = '\0';
    *len = n;
}

/* Applies steps random operations to the store (fanout_limit 3, sessions living 5 s, ids from
 * the store) and to the model, comparing each; optionally starting from a random bulk load. */
static void random_run(struct fx *f, uint64_t seed, int steps, int bulk_first)
{
    static const char *const uas[] = {NULL, "", "Mozilla/5.0 \"quoted\" \\", "del\x7f", "tab\there", "caf\xc3\xa9"};
    static const char *const keys[] = {
        "k0", "K0", "k'1\"\\%_,{}NULL ",
        "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
        "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk128" /* 128 bytes */};
    static const char *const tkeys[] = {
        "login/account/a\"b\\c,{d} NULL", "login/address/2001:db8::1",
        "signup/address/tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
        "tttttttttttttttttttttttttttttttttttttttttttttt128" /* 128 bytes */};
    unsigned char h1[STORE_BODY_HASH_LEN], h2[STORE_BODY_HASH_LEN];
    uint64_t x = seed;
    int64_t now = 1000000, tokens = 0;
    struct seen seen;
    struct model *saved = NULL;
    char where[64];
    memset(&seen, 0, sizeof seen);
    memset(h1, 0, sizeof h1); /* zero bytes in a hash are bytes like any other */
    h1[STORE_BODY_HASH_LEN - 1] = 1;
    memset(h2, 2, sizeof h2);
    snprintf(where, sizeof where, "seed %llu setup", (unsigned long long)seed);
    struct tc t = tc_open(f, where, 3, 5000);
    struct model *m = t.m;
    f->other = open_store(f, 3, 5000); /* each step goes through one of two connections */

    if (bulk_first) {
        int n = 8 + rn(&x, 16);
        char name[32];
        assert_int_equal(t_bulk_begin(&t, 0, &saved), STORE_OK);
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "Bulk%d", i);
            t_bulk_account(&t, name, now);
        }
        for (int i = 0; i < n * 3; i++) {
            int a = rn(&x, n), b = rn(&x, i % 3 == 0 ? 3 : n); /* a few popular accounts */
            if (a != b && !m_follows(m, a, b))
                t_bulk_follow(&t, m->acct[a].id, m->acct[b].id);
        }
        for (int i = 0; i < n * 2; i++)
            t_bulk_post(&t, m->acct[rn(&x, n)].id, "seeded", now - 1000 + i);
        t_bulk_end(&t, 1, &saved);
        t_check_all(&t, now);
    }

    for (int step = 0; step < steps; step++) {
        t.st = rn(&x, 2) ? f->st : f->other;
        snprintf(t.where, sizeof t.where, "seed %llu step %d (connection %d)", (unsigned long long)seed, step,
                 t.st == f->st ? 1 : 2);
        now += rn(&x, 60);
        int kind = m->nacct < 3 ? 0 : rn(&x, 100);
        if (kind < 4) { /* a new account, or a name taken in another case */
            char name[32];
            int k = rn(&x, 40);
            snprintf(name, sizeof name, rn(&x, 2) ? "user%d" : "USER%d", k);
            if (m->nacct < M_ACCTS - 1 || m_acct_by_name(m, name) >= 0)
                saw(&seen, t_account_create(&t, name, name + 1, "$h$", now, NULL));
        } else if (kind < 7) {
            char name[32];
            int i = rn(&x, m->nacct + 1);
            snprintf(name, sizeof name, "%s", i < m->nacct ? m->acct[i].name : "nobody");
            name[0] = (char)(rn(&x, 2) && name[0] >= 'a' && name[0] <= 'z' ? name[0] - 32 : name[0]);
            if (rn(&x, 3)) {
                saw(&seen, t_account_by_name(&t, name, rn(&x, 2)));
            } else {
                struct store_page pg;
                random_page(&x, m->top_post, &pg);
                saw(&seen, t_posts_by_name(&t, name, rn(&x, 2) ? any_account(m, &x, 1) : 0, &pg));
            }
        } else if (kind < 22) { /* follows: popular accounts get more followers */
            int64_t a = any_account(m, &x, 0);
            int64_t b = rn(&x, 2) ? m->acct[rn(&x, m->nacct < 4 ? m->nacct : 4)].id : any_account(m, &x, 1);
            if (a != b)
                saw(&seen, t_follow(&t, a, b, rn(&x, 4) != 0, now));
        } else if (kind < 40) { /* posts, replies, idempotency keys */
            char text[128];
            size_t len;
            random_text(&x, text, &len);
            int64_t author = any_account(m, &x, 0), reply_to = rn(&x, 4) == 0 ? any_post(m, &x) : 0;
            const char *key = rn(&x, 4) == 0 ? keys[rn(&x, 4)] : NULL;
            const unsigned char *hash = key == NULL ? NULL : rn(&x, 3) == 0 ? NULL : rn(&x, 2) ? h1 : h2;
            int before = m->npost;
            int rc = t_post(&t, author, text, len, reply_to, key, hash, now, NULL);
            saw(&seen, rc);
            if (m->npost > before)
                ++*(m->post[m->npost - 1].fanout ? &seen.fanned : &seen.merged);
            else if (rc == STORE_OK)
                seen.idem_same++;
        } else if (kind < 46) {
            int64_t id = any_post(m, &x);
            int i = m_post_idx(m, id);
            int64_t author = i >= 0 && rn(&x, 4) != 0 ? m->acct[m->post[i].author].id : any_account(m, &x, 0);
            saw(&seen, t_delete(&t, id, author));
        } else if (kind < 56) {
            saw(&seen, t_like(&t, any_post(m, &x), any_account(m, &x, 0), rn(&x, 3) != 0, now));
        } else if (kind < 60) {
            saw(&seen, t_post_get(&t, any_post(m, &x), rn(&x, 3) ? any_account(m, &x, 1) : 0));
        } else if (kind < 70) { /* one page of a list */
            struct store_page pg;
            enum list_kind lk = (enum list_kind)rn(&x, 6);
            int64_t key = lk == L_REPLIES ? any_post(m, &x) : any_account(m, &x, 1);
            int64_t top = lk <= L_HOME ? m->top_post : lk <= L_FOLLOWING ? m->top_acct : m->top_sess;
            random_page(&x, top, &pg);
            t_list(&t, lk, key, rn(&x, 2) ? any_account(m, &x, 0) : 0, now, &pg, NULL);
        } else if (kind < 76) {
            t_session_create(&t, ++tokens, any_account(m, &x, 0), uas[rn(&x, 6)], now);
        } else if (kind < 82) {
            int64_t tok = tokens > 0 ? 1 + rn(&x, (int)tokens + 1) : 1;
            struct store_page pg;
            random_page(&x, m->top_post, &pg);
            int rc = rn(&x, 2) ? t_session_account(&t, tok, now) : t_session_home(&t, tok, now, &pg);
            saw(&seen, rc);
            int i = -1;
            unsigned char th[STORE_TOKEN_HASH_LEN];
            token(th, tok);
            if (rc == STORE_NOT_FOUND && (i = m_sess_by_tok(m, th)) >= 0)
                seen.expired++;
            if (rc == STORE_OK && rn(&x, 2)) { /* a request using it records the use */
                i = m_sess_by_tok(m, th);
                t_touch(&t, m->sess[i].id, now - rn(&x, 2) * rn(&x, 100));
            }
        } else if (kind < 84) {
            t_session_delete(&t, tokens > 0 ? 1 + rn(&x, (int)tokens) : 1);
        } else if (kind < 87) {
            int64_t id = m->nsess > 0 && rn(&x, 5) ? m->sess[rn(&x, m->nsess)].id : m->top_sess + 1;
            int i = m_sess_by_id(m, id);
            int64_t acct = i >= 0 && rn(&x, 3) ? m->acct[m->sess[i].acct].id : any_account(m, &x, 0);
            saw(&seen, t_revoke(&t, acct, id));
        } else if (kind < 89) {
            int64_t acct = any_account(m, &x, 0);
            int64_t keep = m->nsess > 0 && rn(&x, 2) ? m->sess[rn(&x, m->nsess)].id : 0;
            if (rn(&x, 2)) {
                t_revoke_others(&t, acct, keep);
            } else {
                char hash[32];
                snprintf(hash, sizeof hash, "$h%d$", step);
                saw(&seen, t_password_set(&t, rn(&x, 30) ? acct : m->top_acct + 5, hash, keep, NULL));
            }
        } else if (kind < 96) {
            struct store_throttle th[2];
            int n = 1 + rn(&x, 2), k = rn(&x, 3);
            for (int i = 0; i < n; i++)
                th[i] = (struct store_throttle){tkeys[(k + i) % 3], rn(&x, 8) - 1, 100 + 100 * rn(&x, 20)};
            saw(&seen, t_throttle_take(&t, th, n, now, NULL));
        } else if (kind < 98) {
            t_throttle_give(&t, tkeys[rn(&x, 3)], rn(&x, 3) == 0);
        } else {
            t_count_accounts(&t);
        }
        if (step % CHECK_EVERY == CHECK_EVERY - 1) {
            snprintf(t.where, sizeof t.where, "seed %llu full check after step %d", (unsigned long long)seed, step);
            t_check_all(&t, now);
        }
    }
    snprintf(t.where, sizeof t.where, "seed %llu final check", (unsigned long long)seed);
    t_check_all(&t, now);
    if (steps >= 1000) { /* the sequence met every outcome and both fan-out paths */
        for (int i = 0; i < 5; i++)
            if (seen.rc[i] == 0)
                fail_msg("seed %llu: no operation returned outcome %d (OK, NOT_FOUND, CONFLICT, FORBIDDEN, LIMITED)",
                         (unsigned long long)seed, i);
        if (seen.fanned == 0 || seen.merged == 0 || seen.expired == 0 || seen.idem_same == 0)
            fail_msg("seed %llu: fanned %d, merged %d, expired sessions %d, repeated keys %d", (unsigned long long)seed,
                     seen.fanned, seen.merged, seen.expired, seen.idem_same);
    }
    store_close(f->st);
    store_close(f->other);
    f->st = f->other = NULL;
    free(f->m);
    f->m = NULL;
}

/* One random sequence on this test's database; AGORA_TEST_SEED (and AGORA_TEST_STEPS) replace
 * the test's own seed and length, to replay a failure. */
static void random_one(void **state, uint64_t seed, int steps, int bulk_first)
{
    const char *env = getenv("AGORA_TEST_SEED"), *envsteps = getenv("AGORA_TEST_STEPS");
    if (envsteps != NULL && envsteps[0] != '\0')
        steps = atoi(envsteps);
    if (env != NULL && env[0] != '\0')
        seed = strtoull(env, NULL, 10);
    random_run(*state, seed, steps, bulk_first);
}

static void test_random_1(void **state) { random_one(state, 1, 2000, 0); }
static void test_random_42(void **state) { random_one(state, 42, 2000, 0); }
static void test_random_20261203(void **state) { random_one(state, 20261203, 2000, 0); }
static void test_random_after_bulk_7(void **state) { random_one(state, 7, 1500, 1); }
static void test_random_after_bulk_99(void **state) { random_one(state, 99, 1500, 1); }

int main(void)
{
    struct suite suite = {NULL, 0};
    const char *url = getenv("AGORA_TEST_DB_URL");
    if (url != NULL && (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)) {
        suite.pg_admin = url;
    } else if (url != NULL && url[0] != '\0' && strcmp(url, "sqlite") != 0) {
        fprintf(stderr, "AGORA_TEST_DB_URL: expected unset, \"sqlite\", postgres://... or postgresql://...\n");
        return 2;
    }
    printf("test_store: on %s\n", suite.pg_admin != NULL ? suite.pg_admin : "SQLite (a new file per test)");
    const char *only = getenv("AGORA_TEST_ONLY");
    if (only != NULL && only[0] != '\0')
        cmocka_set_test_filter(only);
#define T(fn) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &suite)
    const struct CMUnitTest tests[] = {
        T(test_open_and_ping),
        T(test_accounts),
        T(test_sessions),
        T(test_session_expiry_and_revocation),
        T(test_password_set_revokes_others),
        T(test_follow_counters),
        T(test_posts_likes_replies),
        T(test_idempotency_key),
        T(test_idempotency_body_hash),
        T(test_lists_by_author),
        T(test_home_fanout_crossing),
        T(test_throttle),
        T(test_read_begin_end),
        T(test_concurrent_writers),
        T(test_concurrent_open),
        T(test_concurrent_unique),
        T(test_concurrent_fanout),
        T(test_bulk_load),
        T(test_bulk_rollback),
        T(test_random_1),
        T(test_random_42),
        T(test_random_20261203),
        T(test_random_after_bulk_7),
        T(test_random_after_bulk_99),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
