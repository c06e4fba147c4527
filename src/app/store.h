/* store.h — the one interface between the application and its database.
 *
 * A store is a connection to one database, used by one thread at a time (each app worker opens
 * its own). The implementation is chosen by the URL in store_open(): "sqlite:PATH"
 * (store_sqlite.c) or "postgres://..." (store_postgres.c), each filling a
 * struct store_ops. Handlers call the store_* wrappers below and never see SQL; the store
 * returns plain structs and never formats JSON.
 *
 * Data model: accounts, sessions (only a hash of the token is stored; a session expires when it
 * has not been used for the session lifetime, see store_options), follows, posts, likes, and
 * the home-timeline table used for fan-out on write (see docs/TIMELINES.md). Ids are positive
 * 64-bit integers that grow with insertion order (with concurrent writers a higher id may commit
 * before a lower one; one author's posts commit in id order); timestamps are milliseconds since
 * the Unix epoch. Every write is one transaction that also maintains the denormalised counters,
 * and is retried whole when the database is busy or the transaction lost a conflict with another
 * (deadlock, serialization failure), so an acknowledged write (STORE_OK) is committed.
 *
 * Return codes of every function returning int: STORE_OK, or one of the negative codes below;
 * on STORE_ERROR/STORE_BUSY store_errmsg() describes the problem. OK, ERROR and BUSY are the shared
 * RC_OK, RC_ERROR and RC_AGAIN (core/rc.h); the others are the store's own outcomes, numbered from
 * RC_MODULE so they never equal a shared code.
 *
 * List functions stream rows to a callback instead of returning arrays: the row and every pointer
 * in it are valid only during the callback. The callback returns 0 to continue or non-zero to stop
 * early (not an error). Lists are bounded by a struct store_page. */
#ifndef AGORA_APP_STORE_H
#define AGORA_APP_STORE_H
#include <stddef.h>
#include <stdint.h>

#include "app/store_stats.h"
#include "core/rc.h"

#define STORE_OK        RC_OK
#define STORE_ERROR     RC_ERROR        /* unexpected database error (message in store_errmsg) */
#define STORE_BUSY      RC_AGAIN        /* not now: locked through every retry, or unreachable (try later) */
#define STORE_NOT_FOUND (RC_MODULE)     /* the account/post/session named does not exist */
#define STORE_CONFLICT  (RC_MODULE - 1) /* a unique value (username) is taken */
#define STORE_FORBIDDEN (RC_MODULE - 2) /* the caller may not do this (deleting another author's post) */
#define STORE_LIMITED   (RC_MODULE - 3) /* a throttle is full (store_throttle_take) */
#define STORE_FULL      (RC_MODULE - 4) /* the database or its disk is full: the write was not saved */

/* Authors with at least this many followers are not fanned out on write (their posts are merged
 * into home timelines at read time). */
#ifndef STORE_FANOUT_LIMIT
#define STORE_FANOUT_LIMIT 1000
#endif

#define STORE_USERNAME_MAX     30  /* bytes (usernames are ASCII) */
#define STORE_DISPLAY_NAME_MAX 50  /* code points, i.e. at most 200 bytes of UTF-8 */
#define STORE_HASH_MAX         128 /* password hash string incl. NUL (crypto_pwhash_STRBYTES) */
#define STORE_TOKEN_HASH_LEN   32  /* bytes of a session token hash */
#define STORE_BODY_HASH_LEN    32  /* bytes of the request-body hash kept with an Idempotency-Key */
#define STORE_USER_AGENT_MAX   200 /* bytes of User-Agent kept with a session (printable ASCII) */
/* Default session lifetime: a session not used for this long is gone (sliding expiry). */
#define STORE_SESSION_TTL_MS (30LL * 24 * 60 * 60 * 1000)

struct store_account {
    int64_t id;
    char username[STORE_USERNAME_MAX + 2];
    char display_name[4 * STORE_DISPLAY_NAME_MAX + 8];
    int64_t created_at; /* ms since the epoch */
    int64_t followers_count;
    int64_t following_count;
    int64_t posts_count;
};

struct store_post {
    int64_t id;
    struct store_account author;
    const char *text; /* UTF-8, not NUL-terminated; valid during the callback only */
    size_t text_len;
    int64_t created_at;
    int64_t reply_to; /* 0 = not a reply (or the parent was deleted) */
    int64_t likes_count;
    int64_t replies_count;
    int liked; /* 1 if the viewer passed to the query likes it */
};

/* A log-in session (never its token, which the store does not know). */
struct store_session {
    int64_t id;
    int64_t account_id;
    int64_t created_at;
    int64_t last_used_at; /* as recorded: callers refresh it at most every so often */
    char user_agent[STORE_USER_AGENT_MAX + 1];
};

/* A window of a list: only ids < max_id and > since_id (0 = unbounded), at most limit rows. */
struct store_page {
    int64_t max_id;
    int64_t since_id;
    int limit;
};

enum store_account_list { STORE_FOLLOWERS, STORE_FOLLOWING };

typedef int (*store_post_cb)(void *ctx, const struct store_post *post);
typedef int (*store_account_cb)(void *ctx, const struct store_account *account);
typedef int (*store_session_cb)(void *ctx, const struct store_session *session);

/* What bulk_end found after loading (for agora seed's summary). */
struct store_bulk_stats {
    int64_t accounts, follows, posts;
    int64_t fanout_posts; /* posts delivered by fan-out on write */
    int64_t home_rows;    /* rows in the home-timeline table */
    int64_t big_accounts; /* accounts with >= fanout limit followers */
    int64_t max_followers;
};

/* One counter of store_throttle_take: at most limit events per window, counted from the first
 * event of the window (a fixed window: when it ends the count starts again from zero). */
struct store_throttle {
    const char *key;   /* e.g. "login/account/alice"; at most STORE_THROTTLE_KEY_MAX bytes */
    int limit;         /* <= 0: not limited (the key is skipped) */
    int64_t window_ms; /* > 0 */
};
#define STORE_THROTTLE_KEY_MAX 128

struct store_options {
    int fanout_limit;       /* <= 0: STORE_FANOUT_LIMIT; tests use small values */
    int64_t session_ttl_ms; /* <= 0: STORE_SESSION_TTL_MS */
    int positions;          /* 1: note each write's commit position (store_position) */
    int replica;            /* 1: a read-only standby: opened without migrating (store_replay) */
};

/* Where a replica is in the primary's history (store_replay). Positions are the database's own
 * (PostgreSQL: WAL LSNs as 64-bit numbers): they only grow, and a replica that has replayed
 * position p has every write whose store_position was <= p. */
struct store_replay {
    uint64_t replayed; /* every write up to here is visible on the replica */
    uint64_t received; /* the replica has received (not necessarily replayed) up to here */
    int standby;       /* 1: the database is a standby (in recovery), 0: it is a primary */
    int streaming;     /* 1: it streams from its primary now */
    uint64_t current;  /* a primary (standby 0): its WAL is flushed up to here; 0 on a standby */
};

struct store;

struct store_ops {
    const char *name;
    void (*close)(struct store *st);
    int (*ping)(struct store *st);
    int (*read_begin)(struct store *st);
    void (*read_end)(struct store *st);

    int (*account_create)(struct store *st, const char *username, const char *display_name, const char *password_hash,
                          int64_t now, struct store_account *out);
    int (*account_by_name)(struct store *st, const char *username, struct store_account *out);
    int (*account_credentials)(struct store *st, const char *username, struct store_account *out,
                               char hash[STORE_HASH_MAX]);

    int (*session_create)(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t account_id,
                          const char *user_agent, int64_t now);
    int (*session_account)(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                           struct store_account *out, struct store_session *session);
    int (*session_delete)(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN]);
    int (*session_touch)(struct store *st, int64_t id, int64_t now);
    int (*session_list)(struct store *st, int64_t account_id, int64_t now, const struct store_page *page,
                        store_session_cb cb, void *ctx);
    int (*session_revoke)(struct store *st, int64_t account_id, int64_t id);
    int (*session_revoke_others)(struct store *st, int64_t account_id, int64_t keep_id, int64_t *revoked);
    int (*password_set)(struct store *st, int64_t account_id, const char *password_hash, int64_t keep_session_id,
                        int64_t *revoked);

    int (*follow)(struct store *st, int64_t follower, int64_t followee, int on, int64_t now);
    int (*account_list)(struct store *st, enum store_account_list which, int64_t account_id,
                        const struct store_page *page, store_account_cb cb, void *ctx);

    int (*post_create)(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                       const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out);
    int (*post_get)(struct store *st, int64_t id, int64_t viewer, store_post_cb cb, void *ctx);
    int (*post_delete)(struct store *st, int64_t id, int64_t author);
    int (*like)(struct store *st, int64_t post, int64_t account, int on, int64_t now);

    int (*posts_by_author)(struct store *st, int64_t author, int64_t viewer, const struct store_page *page,
                           store_post_cb cb, void *ctx);
    int (*replies)(struct store *st, int64_t post, int64_t viewer, const struct store_page *page, store_post_cb cb,
                   void *ctx);
    int (*home)(struct store *st, int64_t owner, const struct store_page *page, store_post_cb cb, void *ctx);
    /* Optional (NULL: store.c runs the two calls these stand for): one request's calls in one. */
    int (*session_home)(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                        const struct store_page *page, struct store_account *me, struct store_session *session,
                        store_post_cb cb, void *ctx);
    int (*posts_by_name)(struct store *st, const char *username, int64_t viewer, const struct store_page *page,
                         struct store_account *author, store_post_cb cb, void *ctx);
    int (*post_create_get)(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                           const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out,
                           store_post_cb cb, void *ctx);

    int (*bulk_begin)(struct store *st, int wipe);
    int (*bulk_account)(struct store *st, const char *username, const char *display_name, const char *password_hash,
                        int64_t created_at, int64_t *id_out);
    int (*bulk_follow)(struct store *st, int64_t follower, int64_t followee, int64_t created_at);
    int (*bulk_post)(struct store *st, int64_t author, const char *text, int64_t created_at, int64_t *id_out);
    int (*bulk_end)(struct store *st, int commit, struct store_bulk_stats *stats);
    int (*count_accounts)(struct store *st, int64_t *n);

    int (*throttle_take)(struct store *st, const struct store_throttle *t, int n, int64_t now, int64_t *retry_ms);
    int (*throttle_give)(struct store *st, const char *key, int forget);
    /* Optional (NULL: the store has no positions; SQLite): replication, see store_position. */
    int (*position)(struct store *st, uint64_t *pos);
    int (*replay)(struct store *st, struct store_replay *out);
};

/* Every implementation embeds this as its first member. */
struct store {
    const struct store_ops *ops;
    int fanout_limit;
    int64_t session_ttl_ms;
    char err[256];
    struct store_stats *stats; /* the calls' timing (store_stats.h); NULL (as opened): none */
};

/* Opens the database named by url ("sqlite:PATH", "postgres://..."), creating or migrating the schema, and returns
 * a store for the calling thread, or NULL with a message in err. opts may be NULL. */
struct store *store_open(const char *url, const struct store_options *opts, char *err, size_t errlen);
/* Closes the connection and frees the store. NULL is allowed. */
void store_close(struct store *st);
/* Hides the password of the database URL url wherever it appears in text (size bytes,
 * NUL-terminated), in place: each copy of the password of the URL's authority
 * (scheme://user:PASSWORD@host) or of a password=... or sslpassword=... parameter becomes "***". For anything that
 * shows the URL or a message about it (libpq's messages quote a URI they cannot parse). A URL
 * without a password leaves text as it is. */
void store_redact(const char *url, char *text, size_t size);
/* The message describing the last STORE_ERROR/STORE_BUSY. */
static inline const char *store_errmsg(const struct store *st) { return st->err; }

/* Runs a trivial query; STORE_OK when the database answers now (and is still the one opened, as
 * far as the store can tell; a store whose connection was lost connects again). The readiness
 * thread (ready.h) calls it once a second, so it must stay cheap. */
static inline int store_ping(struct store *st) { return st->ops->ping(st); }

/* Marks the reads that follow, until store_read_end, as one request's: a store may run them in one
 * consistent snapshot (one read transaction instead of one per query), or do nothing when each
 * read is a single statement anyway. Only reads may happen in between. Returns STORE_OK, or
 * an error (then do not call store_read_end). */
static inline int store_read_begin(struct store *st) { return st->ops->read_begin(st); }
static inline void store_read_end(struct store *st) { st->ops->read_end(st); }

/* Creates an account (username unique ignoring ASCII case → STORE_CONFLICT) and fills *out. The
 * caller validates the fields. */
static inline int store_account_create(struct store *st, const char *username, const char *display_name,
                                       const char *password_hash, int64_t now, struct store_account *out)
{
    return STORE_TIMED(st, STORE_OP_account_create,
                       st->ops->account_create(st, username, display_name, password_hash, now, out));
}
/* Looks an account up by username, ignoring ASCII case. STORE_NOT_FOUND if none. */
static inline int store_account_by_name(struct store *st, const char *username, struct store_account *out)
{
    return STORE_TIMED(st, STORE_OP_account_by_name, st->ops->account_by_name(st, username, out));
}
/* Like store_account_by_name, also copying the password hash (NUL-terminated) into hash. */
static inline int store_account_credentials(struct store *st, const char *username, struct store_account *out,
                                            char hash[STORE_HASH_MAX])
{
    return STORE_TIMED(st, STORE_OP_account_credentials, st->ops->account_credentials(st, username, out, hash));
}

/* Stores a session identified by the hash of its token, used now from user_agent (NULL or "" =
 * unknown; only printable ASCII is kept, cut to STORE_USER_AGENT_MAX bytes). Also deletes the
 * account's expired sessions, so that they do not pile up. */
static inline int store_session_create(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN],
                                       int64_t account_id, const char *user_agent, int64_t now)
{
    return STORE_TIMED(st, STORE_OP_session_create, st->ops->session_create(st, hash, account_id, user_agent, now));
}
/* Finds the account of the session with this token hash, and the session itself into *session
 * (may be NULL). STORE_NOT_FOUND if there is none, or if it was last used a session lifetime or
 * more before now (expired). Only reads: refreshing last_used_at is store_session_touch's job.
 * out may be NULL when session is not (the caller needs only session->account_id): a store may
 * then skip reading the account's row. */
static inline int store_session_account(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                                        struct store_account *out, struct store_session *session)
{
    return STORE_TIMED(st, STORE_OP_session_account, st->ops->session_account(st, hash, now, out, session));
}
/* Deletes the session (STORE_OK also when it did not exist). */
static inline int store_session_delete(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN])
{
    return STORE_TIMED(st, STORE_OP_session_delete, st->ops->session_delete(st, hash));
}
/* Records that session id was used at now (a write; it never moves last_used_at back). STORE_OK
 * also when the session is gone. */
static inline int store_session_touch(struct store *st, int64_t id, int64_t now)
{
    return STORE_TIMED(st, STORE_OP_session_touch, st->ops->session_touch(st, id, now));
}
/* Streams account_id's sessions that have not expired at now, highest (newest) id first; page
 * bounds apply to session ids. */
static inline int store_session_list(struct store *st, int64_t account_id, int64_t now, const struct store_page *page,
                                     store_session_cb cb, void *ctx)
{
    return STORE_TIMED(st, STORE_OP_session_list, st->ops->session_list(st, account_id, now, page, cb, ctx));
}
/* Deletes session id if it belongs to account_id; STORE_NOT_FOUND otherwise. */
static inline int store_session_revoke(struct store *st, int64_t account_id, int64_t id)
{
    return STORE_TIMED(st, STORE_OP_session_revoke, st->ops->session_revoke(st, account_id, id));
}
/* Deletes every session of account_id except keep_id (0 = keep none); *revoked (may be NULL) gets
 * how many were deleted. */
static inline int store_session_revoke_others(struct store *st, int64_t account_id, int64_t keep_id, int64_t *revoked)
{
    return STORE_TIMED(st, STORE_OP_session_revoke_others,
                       st->ops->session_revoke_others(st, account_id, keep_id, revoked));
}
/* Replaces account_id's password hash and, in the same transaction, deletes every session of the
 * account except keep_session_id (0 = keep none); *revoked (may be NULL) gets how many were
 * deleted. STORE_NOT_FOUND if the account does not exist. */
static inline int store_password_set(struct store *st, int64_t account_id, const char *password_hash,
                                     int64_t keep_session_id, int64_t *revoked)
{
    return STORE_TIMED(st, STORE_OP_password_set,
                       st->ops->password_set(st, account_id, password_hash, keep_session_id, revoked));
}

/* Makes follower follow (on = 1) or stop following (on = 0) followee; idempotent. Maintains the
 * counters and the follower's home timeline. STORE_NOT_FOUND if followee does not exist. The
 * caller rejects following oneself. */
static inline int store_follow(struct store *st, int64_t follower, int64_t followee, int on, int64_t now)
{
    return STORE_TIMED(st, STORE_OP_follow, st->ops->follow(st, follower, followee, on, now));
}
/* Streams the followers or followees of account_id, highest account id first; page bounds apply
 * to account ids. */
static inline int store_account_list(struct store *st, enum store_account_list which, int64_t account_id,
                                     const struct store_page *page, store_account_cb cb, void *ctx)
{
    return STORE_TIMED(st, STORE_OP_account_list, st->ops->account_list(st, which, account_id, page, cb, ctx));
}

/* Creates a post (text already validated; reply_to 0 = none) and sets *id_out. With an
 * idem_key (NULL = none), a post by the same author with the same key is returned instead of
 * creating another one (a UNIQUE constraint guarantees this across processes). idem_hash (NULL
 * or STORE_BODY_HASH_LEN bytes, the hash of the request that carried the key) is kept with the
 * key: when both the stored and the given hash exist and differ, the answer is STORE_CONFLICT
 * (the key was used for another request) and *id_out is set to the first post. STORE_NOT_FOUND
 * if reply_to names no post. */
static inline int store_post_create(struct store *st, int64_t author, const char *text, size_t text_len,
                                    int64_t reply_to, const char *idem_key, const unsigned char *idem_hash, int64_t now,
                                    int64_t *id_out)
{
    return STORE_TIMED(st, STORE_OP_post_create,
                       st->ops->post_create(st, author, text, text_len, reply_to, idem_key, idem_hash, now, id_out));
}
/* Calls cb once with the post (liked by viewer; 0 = anonymous). STORE_NOT_FOUND if none. */
static inline int store_post_get(struct store *st, int64_t id, int64_t viewer, store_post_cb cb, void *ctx)
{
    return STORE_TIMED(st, STORE_OP_post_get, st->ops->post_get(st, id, viewer, cb, ctx));
}
/* Deletes post id if author wrote it: STORE_NOT_FOUND if missing, STORE_FORBIDDEN if not theirs.
 * Replies to it keep existing with reply_to cleared. */
static inline int store_post_delete(struct store *st, int64_t id, int64_t author)
{
    return STORE_TIMED(st, STORE_OP_post_delete, st->ops->post_delete(st, id, author));
}
/* Likes (on = 1) or unlikes (on = 0) a post; idempotent. STORE_NOT_FOUND if the post is missing. */
static inline int store_like(struct store *st, int64_t post, int64_t account, int on, int64_t now)
{
    return STORE_TIMED(st, STORE_OP_like, st->ops->like(st, post, account, on, now));
}

/* Streams author's posts, newest first. */
static inline int store_posts_by_author(struct store *st, int64_t author, int64_t viewer, const struct store_page *page,
                                        store_post_cb cb, void *ctx)
{
    return STORE_TIMED(st, STORE_OP_posts_by_author, st->ops->posts_by_author(st, author, viewer, page, cb, ctx));
}
/* Streams the replies to post, oldest first. */
static inline int store_replies(struct store *st, int64_t post, int64_t viewer, const struct store_page *page,
                                store_post_cb cb, void *ctx)
{
    return STORE_TIMED(st, STORE_OP_replies, st->ops->replies(st, post, viewer, page, cb, ctx));
}
/* Streams owner's home timeline (own posts and those of every account owner follows), newest
 * first, with liked relative to owner. */
static inline int store_home(struct store *st, int64_t owner, const struct store_page *page, store_post_cb cb,
                             void *ctx)
{
    return STORE_TIMED(st, STORE_OP_home, st->ops->home(st, owner, page, cb, ctx));
}

/* Two calls in one, for the requests that make them in a row (a store may answer them in one
 * round trip; the default, in store.c, simply makes both). Their time is counted under the op of
 * the request's main call (home, posts_by_author, post_create: store_stats.h).
 *
 * store_session_home authenticates and reads the home timeline: store_session_account(hash, now,
 * me, session) and then, only when that found the session, store_home(me->id, page, cb, ctx).
 * STORE_NOT_FOUND when the session does not exist or has expired (cb is not called); otherwise
 * the home call's outcome. session may be NULL, as for store_session_account; me may be NULL
 * when the caller needs only the account's id (session->account_id): a store may then skip
 * reading the account's row. */
int store_session_home_calls(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                             const struct store_page *page, struct store_account *me, struct store_session *session,
                             store_post_cb cb, void *ctx);
static inline int store_session_home(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                                     const struct store_page *page, struct store_account *me,
                                     struct store_session *session, store_post_cb cb, void *ctx)
{
    return STORE_TIMED(st, STORE_OP_home,
                       st->ops->session_home != NULL
                           ? st->ops->session_home(st, hash, now, page, me, session, cb, ctx)
                           : store_session_home_calls(st, hash, now, page, me, session, cb, ctx));
}
/* store_account_by_name(username, author) and then, when it found the account,
 * store_posts_by_author(author->id, viewer, page, cb, ctx). STORE_NOT_FOUND when there is no such
 * account (cb is not called); otherwise the list's outcome. */
int store_posts_by_name_calls(struct store *st, const char *username, int64_t viewer, const struct store_page *page,
                              struct store_account *author, store_post_cb cb, void *ctx);
static inline int store_posts_by_name(struct store *st, const char *username, int64_t viewer,
                                      const struct store_page *page, struct store_account *author, store_post_cb cb,
                                      void *ctx)
{
    return STORE_TIMED(st, STORE_OP_posts_by_author,
                       st->ops->posts_by_name != NULL
                           ? st->ops->posts_by_name(st, username, viewer, page, author, cb, ctx)
                           : store_posts_by_name_calls(st, username, viewer, page, author, cb, ctx));
}
/* store_post_create and then, when it returned STORE_OK, store_post_get(*id_out, author, cb, ctx):
 * the post created (or the one of the Idempotency-Key) as its author sees it. Outcomes: those of
 * store_post_create (cb not called); or, once it succeeded (*id_out set), those of the read, except
 * that a post already gone again (deleted meanwhile) is STORE_OK without a call of cb. A store may
 * read in the write's transaction (then the post is never gone). */
int store_post_create_get_calls(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                                const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out,
                                store_post_cb cb, void *ctx);
static inline int store_post_create_get(struct store *st, int64_t author, const char *text, size_t text_len,
                                        int64_t reply_to, const char *idem_key, const unsigned char *idem_hash,
                                        int64_t now, int64_t *id_out, store_post_cb cb, void *ctx)
{
    return STORE_TIMED(
        st, STORE_OP_post_create,
        st->ops->post_create_get != NULL
            ? st->ops->post_create_get(st, author, text, text_len, reply_to, idem_key, idem_hash, now, id_out, cb, ctx)
            : store_post_create_get_calls(st, author, text, text_len, reply_to, idem_key, idem_hash, now, id_out, cb,
                                          ctx));
}

/* Bulk loading (agora seed) into an empty database. bulk_begin opens one long write transaction
 * (wipe = 1 first deletes every row; otherwise a non-empty database is STORE_CONFLICT);
 * bulk_account/bulk_follow/bulk_post insert raw rows without maintaining counters or timelines; bulk_end(commit = 1)
 * recomputes every counter, decides each post's fan-out with the same rule as store_post_create, fills the home
 * timelines, commits and fills *stats (may be NULL); commit = 0 rolls back. Follows must not repeat or point to
 * oneself. Ids are the store's own (use the ones returned; they need not start at 1); a taken username is
 * STORE_CONFLICT, from its bulk_account or from a later call of the same load. */
static inline int store_bulk_begin(struct store *st, int wipe) { return st->ops->bulk_begin(st, wipe); }
static inline int store_bulk_account(struct store *st, const char *username, const char *display_name,
                                     const char *password_hash, int64_t created_at, int64_t *id_out)
{
    return st->ops->bulk_account(st, username, display_name, password_hash, created_at, id_out);
}
static inline int store_bulk_follow(struct store *st, int64_t follower, int64_t followee, int64_t created_at)
{
    return st->ops->bulk_follow(st, follower, followee, created_at);
}
static inline int store_bulk_post(struct store *st, int64_t author, const char *text, int64_t created_at,
                                  int64_t *id_out)
{
    return st->ops->bulk_post(st, author, text, created_at, id_out);
}
static inline int store_bulk_end(struct store *st, int commit, struct store_bulk_stats *stats)
{
    return st->ops->bulk_end(st, commit, stats);
}
/* Throttles (failed log-ins, sign-ups), shared by every server on the database. Charges one event
 * to each of the n counters, all or none, in one transaction: STORE_OK when every counter was
 * below its limit (each is now one higher; a counter with no current window starts one of
 * window_ms at now), STORE_LIMITED when one is full (nothing is charged; *retry_ms is the time
 * until the last full one's window ends). Expired windows are deleted as they are met, so the
 * table holds only the windows still running. */
static inline int store_throttle_take(struct store *st, const struct store_throttle *t, int n, int64_t now,
                                      int64_t *retry_ms)
{
    return STORE_TIMED(st, STORE_OP_throttle_take, st->ops->throttle_take(st, t, n, now, retry_ms));
}
/* Gives back one event charged to key (forget = 0), or forgets its window (forget = 1), e.g.
 * after a successful log-in. STORE_OK also when the key has no window. */
static inline int store_throttle_give(struct store *st, const char *key, int forget)
{
    return STORE_TIMED(st, STORE_OP_throttle_give, st->ops->throttle_give(st, key, forget));
}

/* Replication (PostgreSQL only; read replicas, app/replica.h). store_position sets *pos to the
 * commit position of the last write made through st (a store opened with opts->positions): a
 * position at or after that write's commit, so a replica that has replayed it sees the write.
 * STORE_NOT_FOUND when there is none: no write yet, positions not asked for, or a store without
 * positions (SQLite). store_replay asks the database (one round trip) where it stands as a
 * replica; STORE_NOT_FOUND for a store without replication, else STORE_OK or a failure. */
static inline int store_position(struct store *st, uint64_t *pos)
{
    return st->ops->position != NULL ? st->ops->position(st, pos) : STORE_NOT_FOUND;
}
static inline int store_replay(struct store *st, struct store_replay *out)
{
    return st->ops->replay != NULL ? st->ops->replay(st, out) : STORE_NOT_FOUND;
}

/* Sets *n to the number of accounts. */
static inline int store_count_accounts(struct store *st, int64_t *n)
{
    return STORE_TIMED(st, STORE_OP_count_accounts, st->ops->count_accounts(st, n));
}

#endif
