/* store_postgres.h — the PostgreSQL implementation of store.h (internal to src/app/store_postgres*.c).
 *
 * One libpq connection per store (a store belongs to one thread). Opening connects, then runs
 * the schema migrations under pg_advisory_lock (table schema_version; servers starting together
 * on a new database migrate it exactly once), then prepares every statement of the table in
 * store_postgres.c in one pipelined round trip. A lost connection is reopened (and the statements
 * prepared again) by the next call that needs it. Texts are UTF-8: each connection's
 * client_encoding is UTF8 whatever PGCLIENTENCODING or the URL say, and a database whose encoding
 * is not UTF8 is refused (STORE_ERROR with a message).
 *
 * Round trips. Every store call is one round trip: the statements of a call are sent in libpq's
 * pipeline mode followed by one Sync, so they form one implicit transaction that commits at the
 * Sync (no BEGIN/COMMIT). Most calls are one statement (writes with their counters as
 * data-modifying CTEs). The writes that touch home timelines (post create and delete, follow,
 * unfollow) and throttle_take are two statements in that transaction: the first locks the
 * account row(s) (throttles: advisory locks on the keys; a post that is no reply and has no
 * Idempotency-Key: the update of its author's posts counter, which takes the same row lock and
 * leaves the second statement the rest of the work), the second does the work with a fresh
 * READ COMMITTED snapshot taken after the lock, so two such writes on the same author see each
 * other's effects (a post fanned out while its author gains a follower reaches that follower by
 * one path or the other; two creates with one Idempotency-Key see each other's post).
 * store_read_begin/end are no-ops: every list is one statement and so one snapshot, and a
 * transaction around a request's two reads would cost two more round trips. The calls that stand
 * for two (store.h) are one round trip too: store_session_home and store_posts_by_name are two
 * statements in one pipeline (the session's or the account's row, then the page: joining that
 * row to every post row cost PostgreSQL a quarter more work), store_post_create_get the create's
 * pipeline with a third statement reading the post back in the same transaction (a post that
 * is no reply and has no key: the write's own statement returns it). A home page asked without
 * its account (me NULL) reads the session alone, not the account's row.
 *
 * Failures: serialization failure (40001), deadlock (40P01), and for the writes that name other
 * rows a foreign-key or unique violation caused by a concurrent change, roll the whole transaction
 * back and retry it (bounded), so an acknowledged write is committed. disk_full → STORE_FULL.
 * A lost connection, a server that is down, starting or shutting down, too many connections, a
 * statement that ran past statement_timeout (5 s unless the URL or PGOPTIONS set one) and a reply
 * that did not come within the client-side timeout → STORE_BUSY; the connection is dropped and
 * the next call reconnects (when that fails, calls answer STORE_BUSY at once for 250 ms rather
 * than each waiting for its own attempt). A read (and an idempotent write) whose connection turns
 * out to be dead (closed or reset) is reconnected and sent again once; not one whose server did
 * not answer in time: a new connection would likely wait connect_timeout more on top, so that
 * call answers STORE_BUSY and the next ones at once for 250 ms. A write refused as read-only
 * (25006: the server became a standby) drops the connection and is sent again once on a new one
 * (nothing was committed). With target_session_attrs=read-write in the URL (several hosts: a
 * failover pair) reads fall back to a read-only server while none accepts writes
 * (store_postgres.c, "failover"; docs/CONFIG.md). Ids come from sequences: they grow in
 * insertion order, but two transactions may commit in the other order (one author's posts never
 * do: creating a post locks the author's row).
 *
 * The code: store_postgres.c (connection, migrations, statements, batches, errors),
 * store_postgres_accounts.c (accounts, sessions, follows, throttles), store_postgres_posts.c
 * (posts, likes, lists, home timeline), store_postgres_bulk.c and store_postgres_replica.c
 * (write positions and a standby's replay position, for read replicas: app/replica.h).
 *
 * Bulk loading (store_postgres_bulk.c): one transaction; ids reserved from the sequences in
 * batches (nextval), rows streamed with COPY ... FROM STDIN in batches; bulk_end derives
 * counters, fan-out flags and home rows set-wise, as the SQLite store does. */
#ifndef AGORA_APP_STORE_POSTGRES_H
#define AGORA_APP_STORE_POSTGRES_H
#include <libpq-fe.h>

#include "app/store.h"

/* Opens a store on the PostgreSQL database named by url (a libpq URI or connection string). See
 * store_open(). */
struct store *store_postgres_open(const char *url, const struct store_options *opts, char *err, size_t errlen);
/* Round trips to the server this store has made so far (tests and measurements). */
long store_postgres_round_trips(const struct store *st);

/* ---- internal to the store_postgres*.c files ---- */

enum pg_stmt {
    PG_PING,
    PG_ACC_INSERT,
    PG_ACC_BY_NAME,
    PG_ACC_CRED,
    PG_ACC_COUNT,
    PG_LOCK_ACCOUNT,
    PG_LOCK_ACCOUNTS2,
    PG_SESS_CREATE,
    PG_SESS_ACCOUNT,
    PG_SESS_ONLY,
    PG_SESS_DELETE,
    PG_SESS_TOUCH,
    PG_SESS_LIST,
    PG_SESS_REVOKE,
    PG_SESS_REVOKE_OTHERS,
    PG_PASSWORD_SET,
    PG_FOLLOW,
    PG_UNFOLLOW,
    PG_LIST_FOLLOWERS,
    PG_LIST_FOLLOWING,
    PG_THR_LOCK,
    PG_THR_TAKE,
    PG_THR_GIVE,
    PG_THR_FORGET,
    PG_POST_CREATE,
    PG_POST_COUNT,
    PG_POST_CREATE_PLAIN,
    PG_POST_DELETE,
    PG_POST_GET,
    PG_LIKE,
    PG_UNLIKE,
    PG_LIST_AUTHOR,
    PG_LIST_REPLIES,
    PG_LIST_HOME,
    PG_SESS_HOME,
    PG_SESS_HOME_FANNED,
    PG_LIST_NAME,
    PG_LIST_NAME_ANON,
    PG_POST_CREATED,
    PG_REPLAY, /* store_postgres_replica.c */
    PG__COUNT
};

#define PG_MAX_PARAMS 8

/* One statement of a batch: its parameters (text format unless fmt says binary) and, after
 * pg_batch, its result. */
struct pg_q {
    enum pg_stmt id;
    int n;
    const char *v[PG_MAX_PARAMS];
    int len[PG_MAX_PARAMS];
    int fmt[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][24];
    PGresult *res;
};

/* pg_batch flags */
#define PG_RESEND 1 /* the batch may be sent again on a new connection if the old one was closed */
#define PG_WRITE  2 /* retry serialization failures and deadlocks */
#define PG_RACY   4 /* also retry foreign-key (23503) and unique (23505) violations */

struct pg_store {
    struct store base;
    PGconn *conn;
    char *url;
    long round_trips;
    int timeout_ms;      /* how long to wait for a reply before giving the connection up */
    int64_t retry_at_us; /* no new connection attempt before this (CLOCK_MONOTONIC) */
    int positions;       /* read the WAL position after each write (store_postgres_replica.c) */
    uint64_t position;   /* the last write's, 0 = none yet */
    int unfanned;        /* unfanned_authors was seen non-empty: home pages merge (pg_session_home) */
    /* bulk loading (store_postgres_bulk.c) */
    int in_bulk;
    struct pg_bulk *bulk;
};

void pg_q_int(struct pg_q *q, int i, int64_t v);
void pg_q_text(struct pg_q *q, int i, const char *s, size_t len);  /* s NULL: SQL NULL */
void pg_q_bytes(struct pg_q *q, int i, const void *p, size_t len); /* p NULL: SQL NULL */
/* Sends the statements q[0..n) as one transaction in one round trip (reconnecting first if
 * needed) and waits for their results. Returns STORE_OK with each q[i].res holding its rows (free
 * them with pg_q_clear), or an error code with the message in s->base.err (what names the
 * operation) and no results kept; with PG_WRITE the transaction is retried as store_postgres.h
 * says. */
int pg_batch(struct pg_store *s, struct pg_q *q, int n, int flags, const char *what);

/* pg_batch, then STORE_NOT_FOUND when the first statement returned no row (the lookups: a
 * session, an account, a post). On any outcome but STORE_OK the results are already cleared. */
int pg_batch_row(struct pg_store *s, struct pg_q *q, int n, int flags, const char *what);
void pg_q_clear(struct pg_q *q, int n);
/* Integer value of a result cell (NULL and non-numbers read as 0); boolean 't' reads as 1. */
int64_t pg_int(const PGresult *r, int row, int col);
int pg_bool(const PGresult *r, int row, int col);
/* Copies a text value into out (size > 0 bytes), cut to size - 1 bytes, NUL-terminated. */
void pg_copy_text(const PGresult *r, int row, int col, char *out, size_t size);
/* Reads the 7 account columns starting at col (PG_ACCOUNT_COLS). */
void pg_read_account(const PGresult *r, int row, int col, struct store_account *out);
/* Reads PG_SESSION_COLS (11 columns from col 0: the account, then the session); session may be NULL. */
void pg_read_session(const PGresult *r, int row, struct store_account *out, struct store_session *session);
/* Reads a session's id, account_id, created_at, last_used_at and user_agent from column col. */
void pg_read_session_cols(const PGresult *r, int row, int col, struct store_session *out);
/* Records a message and returns code. */
int pg_fail(struct pg_store *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Maps the outcome of a result (or of the connection when r is NULL) to a store code, recording
 * the message; STORE_OK for a successful result. */
int pg_result_rc(struct pg_store *s, const PGresult *r, const char *what);
/* Runs sql with the simple query protocol (no parameters; several statements form one implicit
 * transaction unless they contain BEGIN) and waits for the results; with out, the last result
 * with rows is kept there (PQclear it). */
int pg_exec(struct pg_store *s, const char *sql, const char *what, PGresult **out);
/* Sends rows (COPY text format, each line ending in a newline) with the COPY statement sql. */
int pg_copy(struct pg_store *s, const char *sql, const char *rows, size_t len, const char *what);

/* The columns pg_read_account expects, for accounts aliased "a". */
#define PG_ACCOUNT_COLS                                                                                                \
    "a.id, a.username, a.display_name, a.created_at, a.followers_count, a.following_count, a.posts_count"

/* The columns pg_read_session expects: a session "s" and its account "a". */
#define PG_SESSION_COLS PG_ACCOUNT_COLS ", s.id, s.created_at, s.last_used_at, s.user_agent"

/* Runs statement id with the integer parameters a, b, c (the first nparams of them) as one
 * batch (pg_batch); q receives the result. */
int pg_run_ints(struct pg_store *s, enum pg_stmt id, int nparams, int64_t a, int64_t b, int64_t c, int flags,
                const char *what, struct pg_q *q);

/* store_postgres_accounts.c: the store_ops of accounts, sessions, follows and throttles */
int pg_account_create(struct store *st, const char *username, const char *display_name, const char *password_hash,
                      int64_t now, struct store_account *out);
int pg_account_by_name(struct store *st, const char *username, struct store_account *out);
int pg_account_credentials(struct store *st, const char *username, struct store_account *out,
                           char hash[STORE_HASH_MAX]);
int pg_count_accounts(struct store *st, int64_t *n);
int pg_session_create(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t account_id,
                      const char *user_agent, int64_t now);
int pg_session_account(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                       struct store_account *out, struct store_session *session);
int pg_session_delete(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN]);
int pg_session_touch(struct store *st, int64_t id, int64_t now);
int pg_session_list(struct store *st, int64_t account_id, int64_t now, const struct store_page *page,
                    store_session_cb cb, void *ctx);
int pg_session_revoke(struct store *st, int64_t account_id, int64_t id);
int pg_session_revoke_others(struct store *st, int64_t account_id, int64_t keep_id, int64_t *revoked);
int pg_password_set(struct store *st, int64_t account_id, const char *password_hash, int64_t keep_session_id,
                    int64_t *revoked);
int pg_follow(struct store *st, int64_t follower, int64_t followee, int on, int64_t now);
int pg_account_list(struct store *st, enum store_account_list which, int64_t account_id, const struct store_page *page,
                    store_account_cb cb, void *ctx);
int pg_throttle_take(struct store *st, const struct store_throttle *t, int n, int64_t now, int64_t *retry_ms);
int pg_throttle_give(struct store *st, const char *key, int forget);

/* store_postgres_posts.c */
int pg_post_create(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                   const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out);
int pg_post_get(struct store *st, int64_t id, int64_t viewer, store_post_cb cb, void *ctx);
int pg_post_delete(struct store *st, int64_t id, int64_t author);
int pg_like(struct store *st, int64_t post, int64_t account, int on, int64_t now);
int pg_posts_by_author(struct store *st, int64_t author, int64_t viewer, const struct store_page *page,
                       store_post_cb cb, void *ctx);
int pg_replies(struct store *st, int64_t post, int64_t viewer, const struct store_page *page, store_post_cb cb,
               void *ctx);
int pg_home(struct store *st, int64_t owner, const struct store_page *page, store_post_cb cb, void *ctx);
int pg_session_home(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                    const struct store_page *page, struct store_account *me, struct store_session *session,
                    store_post_cb cb, void *ctx);
int pg_posts_by_name(struct store *st, const char *username, int64_t viewer, const struct store_page *page,
                     struct store_account *author, store_post_cb cb, void *ctx);
int pg_post_create_get(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                       const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out,
                       store_post_cb cb, void *ctx);

/* store_postgres_replica.c: replication. The position of a write is pg_current_wal_insert_lsn()
 * read right after the write's commit, by PG_POSITION_SQL sent as an implicit transaction of its
 * own after the write's Sync, in the same flush (no extra round trip): its LSN is past the write's
 * commit record. */
#define PG_POSITION_SQL "SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint"
/* Where a standby stands: in recovery?, replayed and received LSNs (0: none), streaming now? (no
 * WAL receiver: no; its status is shown only to roles with pg_read_all_stats, and an unknown one
 * counts as streaming) */
#define PG_REPLAY_SQL                                                                                                  \
    "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() - '0/0', 0)::bigint,"                               \
    " coalesce(pg_last_wal_receive_lsn() - '0/0', 0)::bigint,"                                                         \
    " coalesce((SELECT coalesce(status = 'streaming', true) FROM pg_stat_wal_receiver LIMIT 1), false),"               \
    " CASE WHEN pg_is_in_recovery() THEN 0 ELSE (pg_current_wal_flush_lsn() - '0/0')::bigint END"
int pg_position(struct store *st, uint64_t *pos);
int pg_replay(struct store *st, struct store_replay *out);

int pg_bulk_begin(struct store *st, int wipe);
int pg_bulk_account(struct store *st, const char *username, const char *display_name, const char *password_hash,
                    int64_t created_at, int64_t *id_out);
int pg_bulk_follow(struct store *st, int64_t follower, int64_t followee, int64_t created_at);
int pg_bulk_post(struct store *st, int64_t author, const char *text, int64_t created_at, int64_t *id_out);
int pg_bulk_end(struct store *st, int commit, struct store_bulk_stats *stats);
void pg_bulk_free(struct pg_store *s);

#endif
