/* store_sqlite.h — the SQLite implementation of store.h (internal to src/app/store_sqlite*.c).
 *
 * One connection per store, opened with SQLITE_OPEN_NOMUTEX (a store belongs to one thread).
 * WAL journal, synchronous=NORMAL, foreign keys on, a 5 s busy timeout, and every write in a
 * BEGIN IMMEDIATE transaction retried as a whole while the database stays busy, so several server
 * processes can share one file without losing an acknowledged write. The schema is created and
 * migrated on open (PRAGMA user_version, migrations applied in order inside BEGIN IMMEDIATE, so
 * servers starting together on a new file migrate it exactly once). Every statement is prepared
 * once per connection, on first use, and reused.
 *
 * The code is split by topic: store_sqlite.c (connection, schema, transactions, accounts,
 * sessions, follows), store_sqlite_posts.c (posts, likes, lists, home timeline) and
 * store_sqlite_bulk.c (bulk loading for agora seed). */
#ifndef AGORA_APP_STORE_SQLITE_H
#define AGORA_APP_STORE_SQLITE_H
#include <sqlite3.h>
#include <sys/types.h>

#include "app/store.h"

/* Opens (creating if needed) the SQLite database at path. See store_open(). */
struct store *store_sqlite_open(const char *path, const struct store_options *opts, char *err, size_t errlen);

/* ---- internal to the store_sqlite*.c files ---- */

enum sq_stmt {
    SQ_BEGIN,
    SQ_BEGIN_READ,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_PING,
    SQ_ACC_INSERT,
    SQ_ACC_BY_NAME,
    SQ_ACC_CRED,
    SQ_ACC_BY_ID,
    SQ_ACC_EXISTS,
    SQ_ACC_COUNT,
    SQ_ACC_ADD_FOLLOWERS,
    SQ_ACC_ADD_FOLLOWING,
    SQ_ACC_ADD_POSTS,
    SQ_SESS_INSERT,
    SQ_SESS_ACCOUNT,
    SQ_SESS_DELETE,
    SQ_SESS_PURGE,
    SQ_SESS_TOUCH,
    SQ_SESS_LIST,
    SQ_SESS_REVOKE,
    SQ_SESS_REVOKE_OTHERS,
    SQ_ACC_SET_PASSWORD,
    SQ_FOLLOW_INSERT,
    SQ_FOLLOW_DELETE,
    SQ_HOME_BACKFILL,
    SQ_HOME_UNFILL,
    SQ_LIST_FOLLOWERS,
    SQ_LIST_FOLLOWING,
    SQ_POST_INSERT,
    SQ_POST_BY_KEY,
    SQ_POST_EXISTS,
    SQ_POST_META,
    SQ_POST_DELETE,
    SQ_POST_IDS_RAISE,
    SQ_POST_ADD_REPLIES,
    SQ_POST_ADD_LIKES,
    SQ_POST_GET,
    SQ_HOME_FANOUT,
    SQ_HOME_OWN,
    SQ_HOME_DELETE_POST,
    SQ_LIKE_INSERT,
    SQ_LIKE_DELETE,
    SQ_LIST_AUTHOR,
    SQ_LIST_REPLIES,
    SQ_LIST_HOME,
    SQ_BULK_FOLLOW,
    SQ_BULK_POST,
    SQ_THR_PRUNE,
    SQ_THR_GET,
    SQ_THR_ADD,
    SQ_THR_GIVE,
    SQ_THR_FORGET,
    SQ__COUNT
};

struct sq_store {
    struct store base;
    sqlite3 *db;
    sqlite3_stmt *stmt[SQ__COUNT];
    int in_bulk;             /* inside store_bulk_begin/end */
    int ckpt_next;           /* WAL size in frames at which on_wal next checkpoints */
    int64_t bulk_first_post; /* id of the first post inserted by the bulk load, 0 = none yet */
    dev_t dev;               /* the database file opened (for ping: still the file at its path?) */
    ino_t ino;
    struct sq_writer *writer; /* the file's write turn in this process (store_sqlite.c) */
};

/* Returns the prepared statement id (preparing it on first use), or NULL with the message set. */
sqlite3_stmt *sq_stmt(struct sq_store *s, enum sq_stmt id);
/* Records the connection's last error prefixed by what; returns STORE_BUSY for SQLITE_BUSY and
 * SQLITE_LOCKED, otherwise STORE_ERROR. */
int sq_fail(struct sq_store *s, const char *what);
/* Steps a statement that returns no rows to completion and resets it: STORE_OK or sq_fail(). */
int sq_run(struct sq_store *s, sqlite3_stmt *st, const char *what);
/* Runs fn(s, arg) inside BEGIN IMMEDIATE ... COMMIT. When the database is busy the whole
 * transaction is rolled back and retried (bounded); any other failure of fn (its return code,
 * which must not be STORE_OK) rolls back and is returned. */
int sq_write(struct sq_store *s, int (*fn)(struct sq_store *s, void *arg), void *arg);
/* Reads the 7 account columns starting at column col. */
void sq_read_account(sqlite3_stmt *st, int col, struct store_account *out);
/* Binds a page's bounds as ?max, ?since and ?limit parameters at the given indexes. */
void sq_bind_page(sqlite3_stmt *st, int imax, int isince, int ilimit, const struct store_page *page);

/* The columns sq_read_account expects, for accounts aliased "a". */
#define SQ_ACCOUNT_COLS                                                                                                \
    "a.id, a.username, a.display_name, a.created_at, a.followers_count, "                                              \
    "a.following_count, a.posts_count"

int sq_post_create(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                   const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out);
int sq_post_get(struct store *st, int64_t id, int64_t viewer, store_post_cb cb, void *ctx);
int sq_post_delete(struct store *st, int64_t id, int64_t author);
int sq_like(struct store *st, int64_t post, int64_t account, int on, int64_t now);
int sq_posts_by_author(struct store *st, int64_t author, int64_t viewer, const struct store_page *page,
                       store_post_cb cb, void *ctx);
int sq_replies(struct store *st, int64_t post, int64_t viewer, const struct store_page *page, store_post_cb cb,
               void *ctx);
int sq_home(struct store *st, int64_t owner, const struct store_page *page, store_post_cb cb, void *ctx);

int sq_bulk_begin(struct store *st, int wipe);
int sq_bulk_account(struct store *st, const char *username, const char *display_name, const char *password_hash,
                    int64_t created_at, int64_t *id_out);
int sq_bulk_follow(struct store *st, int64_t follower, int64_t followee, int64_t created_at);
int sq_bulk_post(struct store *st, int64_t author, const char *text, int64_t created_at, int64_t *id_out);
int sq_bulk_end(struct store *st, int commit, struct store_bulk_stats *stats);

#endif
