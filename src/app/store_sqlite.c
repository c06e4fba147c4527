/* store_sqlite.c — SQLite store: connection, schema migrations, statement cache, write
 * transactions with retry, accounts, sessions and follows. See store_sqlite.h and store.h.
 * Over 1,000 lines, of which the statement table and the migrations are a third: posts and
 * timelines (store_sqlite_posts.c) and the bulk loader (store_sqlite_bulk.c) are already apart;
 * the statement cache and the retrying write transaction are what the rest here shares. */
#include "app/store_sqlite.h"
#include "app/sqlite_vfs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

#define BUSY_TIMEOUT_MS 5000
/* Per-connection settings. synchronous=NORMAL in WAL mode never loses a commit to a process crash
 * (only the fsync at checkpoints matters, for power loss); 32 MiB page cache; the database is
 * read through a memory map of up to 64 GiB (SQLite caps it at its compile-time limit) that the
 * "agora" VFS keeps across other processes' commits (sqlite_vfs.h). */
#define SETTINGS                                                                                                       \
    "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"                                     \
    "PRAGMA cache_size=-32768; PRAGMA mmap_size=68719476736;"
/* The database file grows in steps of this many bytes, so that other processes' maps rarely need
 * extending. */
#define DB_CHUNK_BYTES (4 << 20)
/* Checkpoints (see on_wal): a passive one each time the WAL has grown by WAL_STEP_FRAMES frames
 * (4 KiB pages), so that a page written many times in between is copied once; a restarting one at
 * WAL_RESTART_FRAMES, which waits for readers so that the next writer starts the WAL over. */
#define WAL_STEP_FRAMES    2000
#define WAL_RESTART_FRAMES 16000
#define WRITE_ATTEMPTS     8 /* each waits up to BUSY_TIMEOUT_MS for the lock */

#define POST_COLS                                                                                                      \
    "p.id, p.text, p.created_at, p.reply_to, p.likes_count, p.replies_count, "                                         \
    "l.account_id IS NOT NULL, " SQ_ACCOUNT_COLS

/* Schema migrations, applied in order; the database's PRAGMA user_version is the number applied.
 * Never edit an entry once released: append a new one. */
static const char *const migrations[] = {
    /* 1: initial schema */
    "CREATE TABLE accounts ("
    "  id INTEGER PRIMARY KEY,"
    "  username TEXT NOT NULL COLLATE NOCASE UNIQUE,"
    "  display_name TEXT NOT NULL,"
    "  password_hash TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  followers_count INTEGER NOT NULL DEFAULT 0,"
    "  following_count INTEGER NOT NULL DEFAULT 0,"
    "  posts_count INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE sessions ("
    "  token_hash BLOB PRIMARY KEY,"
    "  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX sessions_account ON sessions(account_id);"
    "CREATE TABLE follows ("
    "  follower INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
    "  followee INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (follower, followee),"
    "  CHECK (follower <> followee)) WITHOUT ROWID;"
    "CREATE INDEX follows_followee ON follows(followee, follower);"
    /* fanout: 1 = delivered into followers' home rows when written; 0 = merged at read time */
    "CREATE TABLE posts ("
    "  id INTEGER PRIMARY KEY,"
    "  author INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
    "  text TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  reply_to INTEGER REFERENCES posts(id) ON DELETE SET NULL,"
    "  likes_count INTEGER NOT NULL DEFAULT 0,"
    "  replies_count INTEGER NOT NULL DEFAULT 0,"
    "  fanout INTEGER NOT NULL DEFAULT 1,"
    "  idem_key TEXT);"
    "CREATE INDEX posts_author ON posts(author, id);"
    "CREATE INDEX posts_unfanned ON posts(author, id) WHERE fanout = 0;"
    "CREATE INDEX posts_reply ON posts(reply_to, id) WHERE reply_to IS NOT NULL;"
    "CREATE UNIQUE INDEX posts_idem ON posts(author, idem_key) WHERE idem_key IS NOT NULL;"
    "CREATE TABLE likes ("
    "  post_id INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,"
    "  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (post_id, account_id)) WITHOUT ROWID;"
    "CREATE INDEX likes_account ON likes(account_id);"
    /* home timelines filled by fan-out on write: (owner, post) for the owner's own posts and for
     * every fanout = 1 post of an account the owner follows */
    "CREATE TABLE home ("
    "  owner INTEGER NOT NULL,"
    "  post_id INTEGER NOT NULL,"
    "  PRIMARY KEY (owner, post_id)) WITHOUT ROWID;",
    /* 2: a user's page reads one range of this index instead of one table row per post, which
     * on a large table means one page per post (docs/TIMELINES.md); it also serves every lookup
     * posts_author served, by its first two columns */
    "DROP INDEX posts_author;"
    "CREATE INDEX posts_by_author ON posts(author, id, fanout, created_at, reply_to, likes_count, replies_count,"
    "  text);",
    /* 3: sessions get an id (to list and revoke them without showing the token's hash), the time
     * of their last use (sliding expiry) and the client's User-Agent; sessions that existed
     * before count as used at the migration, so an upgrade logs nobody out. AUTOINCREMENT: an id
     * once shown in a list never names a later session. Posts keep the hash of the request body
     * that came with an Idempotency-Key (NULL for older posts). */
    "CREATE TABLE sessions_v3 ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  token_hash BLOB NOT NULL UNIQUE,"
    "  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  last_used_at INTEGER NOT NULL,"
    "  user_agent TEXT NOT NULL DEFAULT '');"
    "INSERT INTO sessions_v3(token_hash, account_id, created_at, last_used_at)"
    "  SELECT token_hash, account_id, created_at,"
    "    max(created_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))"
    "  FROM sessions ORDER BY created_at;"
    "DROP TABLE sessions;"
    "ALTER TABLE sessions_v3 RENAME TO sessions;"
    "CREATE INDEX sessions_account ON sessions(account_id, id);"
    "ALTER TABLE posts ADD COLUMN idem_hash BLOB;",
    /* 4: throttles (failed log-ins per account and address, sign-ups per address), kept in the
     * database so that every server counts against the same limit; one row per running window */
    "CREATE TABLE throttle ("
    "  key TEXT PRIMARY KEY,"
    "  count INTEGER NOT NULL,"
    "  until INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX throttle_until ON throttle(until);",
    /* 5: the highest post id ever given out. A rowid is max(rowid) + 1, so deleting the newest
     * post would give its id to the next one (store.h: ids grow with insertion order; a client
     * polling with since_id = that id would miss the new post, and a repeated DELETE would
     * delete it); posts are inserted above this mark and a delete raises it. */
    ("CREATE TABLE post_ids (last INTEGER NOT NULL);"
     "INSERT INTO post_ids SELECT coalesce(max(id), 0) FROM posts;"),
};
#define NMIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

static const char *const stmt_sql[SQ__COUNT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_BEGIN_READ] = "BEGIN",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_PING] = "SELECT 1 FROM accounts LIMIT 1",
    [SQ_ACC_INSERT] = "INSERT INTO accounts(username, display_name, password_hash, created_at) "
                      "VALUES(?1, ?2, ?3, ?4)",
    [SQ_ACC_BY_NAME] = "SELECT " SQ_ACCOUNT_COLS " FROM accounts a WHERE a.username = ?1",
    [SQ_ACC_CRED] = "SELECT " SQ_ACCOUNT_COLS ", a.password_hash FROM accounts a WHERE a.username = ?1",
    [SQ_ACC_BY_ID] = "SELECT " SQ_ACCOUNT_COLS " FROM accounts a WHERE a.id = ?1",
    [SQ_ACC_EXISTS] = "SELECT 1 FROM accounts WHERE id = ?1",
    [SQ_ACC_COUNT] = "SELECT count(*) FROM accounts",
    [SQ_ACC_ADD_FOLLOWERS] = "UPDATE accounts SET followers_count = followers_count + ?2 WHERE id = ?1",
    [SQ_ACC_ADD_FOLLOWING] = "UPDATE accounts SET following_count = following_count + ?2 WHERE id = ?1",
    [SQ_ACC_ADD_POSTS] = "UPDATE accounts SET posts_count = posts_count + ?2 WHERE id = ?1",
    [SQ_SESS_INSERT] = "INSERT INTO sessions(token_hash, account_id, created_at, last_used_at, user_agent) "
                       "VALUES(?1, ?2, ?3, ?3, ?4)",
    [SQ_SESS_ACCOUNT] = "SELECT " SQ_ACCOUNT_COLS ", s.id, s.created_at, s.last_used_at, s.user_agent "
                        "FROM sessions s JOIN accounts a ON a.id = s.account_id "
                        "WHERE s.token_hash = ?1 AND s.last_used_at > ?2",
    [SQ_SESS_DELETE] = "DELETE FROM sessions WHERE token_hash = ?1",
    [SQ_SESS_PURGE] = "DELETE FROM sessions WHERE account_id = ?1 AND last_used_at <= ?2",
    [SQ_SESS_TOUCH] = "UPDATE sessions SET last_used_at = ?2 WHERE id = ?1 AND last_used_at < ?2",
    [SQ_SESS_LIST] = "SELECT id, account_id, created_at, last_used_at, user_agent FROM sessions "
                     "WHERE account_id = ?1 AND last_used_at > ?5 AND id < ?2 AND id > ?3 ORDER BY id DESC LIMIT ?4",
    [SQ_SESS_REVOKE] = "DELETE FROM sessions WHERE id = ?1 AND account_id = ?2",
    [SQ_SESS_REVOKE_OTHERS] = "DELETE FROM sessions WHERE account_id = ?1 AND id <> ?2",
    [SQ_ACC_SET_PASSWORD] = "UPDATE accounts SET password_hash = ?2 WHERE id = ?1",
    [SQ_FOLLOW_INSERT] = "INSERT OR IGNORE INTO follows(follower, followee, created_at) VALUES(?1, ?2, ?3)",
    [SQ_FOLLOW_DELETE] = "DELETE FROM follows WHERE follower = ?1 AND followee = ?2",
    [SQ_HOME_BACKFILL] = "INSERT OR IGNORE INTO home(owner, post_id) "
                         "SELECT ?1, id FROM posts WHERE author = ?2 AND fanout = 1",
    [SQ_HOME_UNFILL] = "DELETE FROM home WHERE owner = ?1 AND post_id IN (SELECT id FROM posts WHERE author = ?2)",
    [SQ_LIST_FOLLOWERS] = "SELECT " SQ_ACCOUNT_COLS " FROM follows f JOIN accounts a ON a.id = f.follower "
                          "WHERE f.followee = ?1 AND f.follower < ?2 AND f.follower > ?3 "
                          "ORDER BY f.follower DESC LIMIT ?4",
    [SQ_LIST_FOLLOWING] = "SELECT " SQ_ACCOUNT_COLS " FROM follows f JOIN accounts a ON a.id = f.followee "
                          "WHERE f.follower = ?1 AND f.followee < ?2 AND f.followee > ?3 "
                          "ORDER BY f.followee DESC LIMIT ?4",
    [SQ_POST_INSERT] = "INSERT INTO posts(id, author, text, created_at, reply_to, fanout, idem_key, idem_hash) "
                       "VALUES((SELECT max(last, coalesce((SELECT max(id) FROM posts), 0)) + 1 FROM post_ids),"
                       " ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQ_POST_BY_KEY] = "SELECT id, idem_hash FROM posts WHERE author = ?1 AND idem_key = ?2 AND idem_key IS NOT NULL",
    [SQ_POST_EXISTS] = "SELECT 1 FROM posts WHERE id = ?1",
    [SQ_POST_META] = "SELECT author, reply_to FROM posts WHERE id = ?1",
    [SQ_POST_DELETE] = "DELETE FROM posts WHERE id = ?1",
    [SQ_POST_IDS_RAISE] = "UPDATE post_ids SET last = ?1 WHERE last < ?1",
    [SQ_POST_ADD_REPLIES] = "UPDATE posts SET replies_count = replies_count + ?2 WHERE id = ?1",
    [SQ_POST_ADD_LIKES] = "UPDATE posts SET likes_count = likes_count + ?2 WHERE id = ?1",
    [SQ_POST_GET] = "SELECT " POST_COLS " FROM posts p JOIN accounts a ON a.id = p.author "
                    "LEFT JOIN likes l ON l.post_id = p.id AND l.account_id = ?2 WHERE p.id = ?1",
    [SQ_HOME_FANOUT] = "INSERT OR IGNORE INTO home(owner, post_id) SELECT follower, ?2 FROM follows "
                       "WHERE followee = ?1",
    [SQ_HOME_OWN] = "INSERT OR IGNORE INTO home(owner, post_id) VALUES(?1, ?2)",
    [SQ_HOME_DELETE_POST] = "DELETE FROM home WHERE post_id = ?2 AND owner IN "
                            "(SELECT follower FROM follows WHERE followee = ?1 UNION ALL SELECT ?1)",
    [SQ_LIKE_INSERT] = "INSERT OR IGNORE INTO likes(post_id, account_id, created_at) VALUES(?1, ?2, ?3)",
    [SQ_LIKE_DELETE] = "DELETE FROM likes WHERE post_id = ?1 AND account_id = ?2",
    [SQ_LIST_AUTHOR] = "SELECT " POST_COLS " FROM posts p JOIN accounts a ON a.id = p.author "
                       "LEFT JOIN likes l ON l.post_id = p.id AND l.account_id = ?5 "
                       "WHERE p.author = ?1 AND p.id < ?2 AND p.id > ?3 ORDER BY p.id DESC LIMIT ?4",
    [SQ_LIST_REPLIES] = "SELECT " POST_COLS " FROM posts p JOIN accounts a ON a.id = p.author "
                        "LEFT JOIN likes l ON l.post_id = p.id AND l.account_id = ?5 "
                        "WHERE p.reply_to = ?1 AND p.id < ?2 AND p.id > ?3 ORDER BY p.id ASC LIMIT ?4",
    /* Hybrid home timeline (docs/TIMELINES.md): h = the newest ?4 rows of the owner's fan-out
     * table in the window; then, for each followed account whose posts were not fanned out, its
     * newest posts in the window (at most ?4 each, from the partial index) that are newer than
     * h's oldest row when h is full (older ones cannot make the page); the ids are merged and cut
     * to ?4 before the posts, authors and the owner's likes are joined. INDEXED BY, because the
     * planner would rather take posts_by_author, which also has fanout but holds every post: it
     * would read all posts of each followee instead of none for most of them. */
    [SQ_LIST_HOME] = "WITH h(id) AS (SELECT post_id FROM home WHERE owner = ?1 AND post_id < ?2"
                     "    AND post_id > ?3 ORDER BY post_id DESC LIMIT ?4),"
                     " lo(v) AS (SELECT CASE WHEN count(*) < ?4 THEN ?3 ELSE min(id) END FROM h),"
                     " ids(id) AS (SELECT id FROM h UNION ALL"
                     "  SELECT q.id FROM lo, follows f, posts q WHERE f.follower = ?1 AND q.id IN"
                     "    (SELECT r.id FROM posts r INDEXED BY posts_unfanned"
                     "     WHERE r.author = f.followee AND r.fanout = 0"
                     "     AND r.id < ?2 AND r.id > lo.v ORDER BY r.id DESC LIMIT ?4)),"
                     " top(id) AS (SELECT id FROM ids ORDER BY id DESC LIMIT ?4)"
                     "SELECT " POST_COLS " FROM top JOIN posts p ON p.id = top.id"
                     " JOIN accounts a ON a.id = p.author"
                     " LEFT JOIN likes l ON l.post_id = p.id AND l.account_id = ?1"
                     " ORDER BY p.id DESC",
    [SQ_BULK_FOLLOW] = "INSERT INTO follows(follower, followee, created_at) VALUES(?1, ?2, ?3)",
    [SQ_BULK_POST] = "INSERT INTO posts(author, text, created_at, fanout) VALUES(?1, ?2, ?3, 1)",
    [SQ_THR_PRUNE] = "DELETE FROM throttle WHERE until <= ?1",
    [SQ_THR_GET] = "SELECT count, until FROM throttle WHERE key = ?1",
    [SQ_THR_ADD] = "INSERT INTO throttle(key, count, until) VALUES(?1, 1, ?2) "
                   "ON CONFLICT(key) DO UPDATE SET count = count + 1",
    [SQ_THR_GIVE] = "UPDATE throttle SET count = count - 1 WHERE key = ?1 AND count > 0",
    [SQ_THR_FORGET] = "DELETE FROM throttle WHERE key = ?1",
};

int sq_fail(struct sq_store *s, const char *what)
{
    int code = sqlite3_errcode(s->db) & 0xff;
    snprintf(s->base.err, sizeof s->base.err, "%s: %s", what, sqlite3_errmsg(s->db));
    if (code == SQLITE_FULL)
        return STORE_FULL;
    return code == SQLITE_BUSY || code == SQLITE_LOCKED ? STORE_BUSY : STORE_ERROR;
}

sqlite3_stmt *sq_stmt(struct sq_store *s, enum sq_stmt id)
{
    if (s->stmt[id] == NULL &&
        sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[id], NULL) != SQLITE_OK) {
        sq_fail(s, "preparing a statement");
        s->stmt[id] = NULL;
    }
    return s->stmt[id];
}

int sq_run(struct sq_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_DONE || rc == SQLITE_ROW ? STORE_OK : sq_fail(s, what);
    sqlite3_reset(st);
    return ret;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs COMMIT, retrying while SQLite reports busy (the transaction stays open meanwhile). */
static int commit(struct sq_store *s)
{
    sqlite3_stmt *st = sq_stmt(s, SQ_COMMIT);
    int rc = STORE_ERROR;
    for (int i = 0; st != NULL && i < WRITE_ATTEMPTS; i++) {
        rc = sq_run(s, st, "commit");
        if (rc != STORE_BUSY)
            break;
    }
    return rc;
}

static void rollback(struct sq_store *s)
{
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_stmt *st = sq_stmt(s, SQ_ROLLBACK);
        if (st != NULL)
            sq_run(s, st, "rollback");
    }
}

/* ---- the write turn: one writer per file in this process ----
 *
 * SQLite has one writer at a time per file, and a connection that finds the write lock taken
 * polls for it in the busy handler (naps of 50 µs to 2 ms): with several handler threads per
 * server, writers of the same process would poll against each other, each nap a sleep and a
 * wake-up, and the lock would often sit free while they nap. So the connections of one process
 * to one file take a mutex around each write transaction first: they queue on it and are woken
 * the moment the previous writer commits, and only one of them at a time polls against the other
 * processes. The mutexes live in a list keyed by device and inode — process-wide, as SQLite's
 * own table of open files is, for the same reason (POSIX locks belong to the process). */
struct sq_writer {
    dev_t dev;
    ino_t ino;
    unsigned refs; /* under writers_mu */
    pthread_mutex_t mu;
    struct sq_writer *next;
};

static pthread_mutex_t writers_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sq_writer *writers;

static struct sq_writer *writer_get(dev_t dev, ino_t ino)
{
    pthread_mutex_lock(&writers_mu);
    struct sq_writer *w = writers;
    while (w != NULL && (w->dev != dev || w->ino != ino))
        w = w->next;
    if (w == NULL) {
        w = alloc_calloc(1, sizeof *w);
        w->dev = dev;
        w->ino = ino;
        pthread_mutex_init(&w->mu, NULL);
        w->next = writers;
        writers = w;
    }
    w->refs++;
    pthread_mutex_unlock(&writers_mu);
    return w;
}

static void writer_put(struct sq_writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&writers_mu);
    if (--w->refs == 0) {
        struct sq_writer **pp = &writers;
        while (*pp != w)
            pp = &(*pp)->next;
        *pp = w->next;
        pthread_mutex_destroy(&w->mu);
        free(w);
    }
    pthread_mutex_unlock(&writers_mu);
}

/* sq_write's attempts, with the write turn held. */
static int write_attempts(struct sq_store *s, sqlite3_stmt *begin, int (*fn)(struct sq_store *s, void *arg), void *arg)
{
    int rc = STORE_BUSY;
    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        if (attempt > 0)
            nap_ms(attempt * 10);
        rc = sq_run(s, begin, "begin");
        if (rc == STORE_BUSY)
            continue;
        if (rc != STORE_OK)
            return rc;
        rc = fn(s, arg);
        if (rc == STORE_OK)
            rc = commit(s);
        if (rc == STORE_OK)
            return STORE_OK;
        rollback(s);
        if (rc != STORE_BUSY)
            return rc;
    }
    return rc;
}

int sq_write(struct sq_store *s, int (*fn)(struct sq_store *s, void *arg), void *arg)
{
    if (s->in_bulk) /* already inside the bulk transaction */
        return fn(s, arg);
    sqlite3_stmt *begin = sq_stmt(s, SQ_BEGIN);
    if (begin == NULL)
        return STORE_ERROR;
    pthread_mutex_lock(&s->writer->mu);
    int rc = write_attempts(s, begin, fn, arg);
    pthread_mutex_unlock(&s->writer->mu);
    return rc;
}

/* Copies text column col into out (size bytes), truncating and NUL-terminating. */
static void copy_text(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n = t != NULL ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= size)
        n = size - 1;
    memcpy(out, t != NULL ? (const char *)t : "", n);
    out[n] = '\0';
}

void sq_read_account(sqlite3_stmt *st, int col, struct store_account *out)
{
    out->id = sqlite3_column_int64(st, col);
    copy_text(st, col + 1, out->username, sizeof out->username);
    copy_text(st, col + 2, out->display_name, sizeof out->display_name);
    out->created_at = sqlite3_column_int64(st, col + 3);
    out->followers_count = sqlite3_column_int64(st, col + 4);
    out->following_count = sqlite3_column_int64(st, col + 5);
    out->posts_count = sqlite3_column_int64(st, col + 6);
}

void sq_bind_page(sqlite3_stmt *st, int imax, int isince, int ilimit, const struct store_page *page)
{
    sqlite3_bind_int64(st, imax, page->max_id > 0 ? page->max_id : INT64_MAX);
    sqlite3_bind_int64(st, isince, page->since_id > 0 ? page->since_id : 0);
    sqlite3_bind_int(st, ilimit, page->limit > 0 ? page->limit : 1);
}

/* ---- connection and schema ---- */

/* Runs a PRAGMA (or other statement) through sqlite3_exec, retrying while busy. */
static int exec_retry(struct sq_store *s, const char *sql)
{
    for (int i = 0; i < 200; i++) {
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return STORE_OK;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            break;
        nap_ms(25);
    }
    return sq_fail(s, sql);
}

static int user_version(struct sq_store *s, int *v)
{
    sqlite3_stmt *st = NULL;
    int rc = STORE_ERROR;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) {
        rc = sq_fail(s, "reading the schema version");
        goto out;
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = sq_fail(s, "reading the schema version");
        goto out;
    }
    *v = sqlite3_column_int(st, 0);
    rc = STORE_OK;
out:
    sqlite3_finalize(st);
    return rc;
}

/* Applies the missing migrations in one BEGIN IMMEDIATE transaction: the first server to get the
 * write lock migrates, the others wait for it, then find nothing to do. */
static int migrate(struct sq_store *s)
{
    int v = 0, rc;
    char sql[64];
    if ((rc = user_version(s, &v)) != STORE_OK)
        return rc;
    if (v == NMIGRATIONS)
        return STORE_OK;
    if ((rc = exec_retry(s, "BEGIN IMMEDIATE")) != STORE_OK)
        return rc;
    if ((rc = user_version(s, &v)) != STORE_OK)
        goto fail;
    if (v > NMIGRATIONS) {
        snprintf(s->base.err, sizeof s->base.err, "database schema version %d is newer than this program supports (%d)",
                 v, NMIGRATIONS);
        rc = STORE_ERROR;
        goto fail;
    }
    for (; v < NMIGRATIONS; v++) {
        if (sqlite3_exec(s->db, migrations[v], NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(sql, sizeof sql, "migration %d", v + 1);
            rc = sq_fail(s, sql);
            goto fail;
        }
    }
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", NMIGRATIONS);
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        rc = sq_fail(s, "setting the schema version");
        goto fail;
    }
    return exec_retry(s, "COMMIT");
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Switches to WAL (persistent in the file); several processes may race to do it on a new file. */
static int enable_wal(struct sq_store *s)
{
    for (int i = 0; i < 200; i++) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const unsigned char *mode = sqlite3_column_text(st, 0);
            int wal = mode != NULL && strcmp((const char *)mode, "wal") == 0;
            sqlite3_finalize(st);
            if (wal)
                return STORE_OK;
            snprintf(s->base.err, sizeof s->base.err, "cannot switch the database to WAL mode");
            return STORE_ERROR;
        }
        sqlite3_finalize(st);
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            return sq_fail(s, "enabling WAL mode");
        nap_ms(25);
    }
    return sq_fail(s, "enabling WAL mode");
}

static void sq_close(struct store *st)
{
    struct sq_store *s = (struct sq_store *)st;
    for (int i = 0; i < SQ__COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    if (s->db != NULL) {
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(s->db);
    }
    writer_put(s->writer);
    free(s);
}

/* A query, and the file at the database's path must still be the one this connection has open:
 * a file removed or replaced under running servers would give every connection opened later (a
 * restarted server) another, new database, while the open ones go on with the old one. */
static int sq_ping(struct store *st)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_PING);
    int rc = q == NULL ? STORE_ERROR : sq_run(s, q, "ping");
    if (rc != STORE_OK)
        return rc;
    const char *path = sqlite3_db_filename(s->db, "main");
    struct stat sb;
    if (path == NULL || stat(path, &sb) != 0 || sb.st_dev != s->dev || sb.st_ino != s->ino) {
        snprintf(s->base.err, sizeof(s->base.err), "ping: the database file %s was removed or replaced",
                 path ? path : "?");
        return STORE_ERROR;
    }
    return STORE_OK;
}

static int sq_read_begin(struct store *st)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_BEGIN_READ);
    return q == NULL ? STORE_ERROR : sq_run(s, q, "begin");
}

static void sq_read_end(struct store *st)
{
    struct sq_store *s = (struct sq_store *)st;
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_stmt *q = sq_stmt(s, SQ_COMMIT);
        if (q == NULL || sq_run(s, q, "ending a read") != STORE_OK)
            rollback(s);
    }
}

/* ---- accounts and sessions ---- */

/* Runs a prepared single-account query; STORE_NOT_FOUND when it returns no row. When hash is
 * not NULL the 8th column (password hash) is copied into it. */
static int account_query(struct sq_store *s, sqlite3_stmt *q, struct store_account *out, char *hash)
{
    int rc = sqlite3_step(q), ret;
    if (rc == SQLITE_ROW) {
        sq_read_account(q, 0, out);
        if (hash != NULL) {
            const unsigned char *h = sqlite3_column_text(q, 7);
            snprintf(hash, STORE_HASH_MAX, "%s", h ? (const char *)h : "");
        }
        ret = STORE_OK;
    } else {
        ret = rc == SQLITE_DONE ? STORE_NOT_FOUND : sq_fail(s, "looking up an account");
    }
    sqlite3_reset(q);
    return ret;
}

struct account_args {
    const char *username, *display_name, *hash;
    int64_t now;
    struct store_account *out;
};

static int account_create_tx(struct sq_store *s, void *arg)
{
    struct account_args *a = arg;
    sqlite3_stmt *q = sq_stmt(s, SQ_ACC_INSERT);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_text(q, 1, a->username, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, a->display_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, a->hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, a->now);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc == SQLITE_CONSTRAINT)
        return STORE_CONFLICT;
    if (rc != SQLITE_DONE)
        return sq_fail(s, "creating an account");
    memset(a->out, 0, sizeof *a->out);
    a->out->id = sqlite3_last_insert_rowid(s->db);
    snprintf(a->out->username, sizeof a->out->username, "%s", a->username);
    snprintf(a->out->display_name, sizeof a->out->display_name, "%s", a->display_name);
    a->out->created_at = a->now;
    return STORE_OK;
}

static int sq_account_create(struct store *st, const char *username, const char *display_name,
                             const char *password_hash, int64_t now, struct store_account *out)
{
    struct account_args a = {username, display_name, password_hash, now, out};
    return sq_write((struct sq_store *)st, account_create_tx, &a);
}

static int sq_account_by_name(struct store *st, const char *username, struct store_account *out)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_ACC_BY_NAME);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_text(q, 1, username, -1, SQLITE_STATIC);
    return account_query(s, q, out, NULL);
}

static int sq_account_credentials(struct store *st, const char *username, struct store_account *out,
                                  char hash[STORE_HASH_MAX])
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_ACC_CRED);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_text(q, 1, username, -1, SQLITE_STATIC);
    return account_query(s, q, out, hash);
}

static int sq_count_accounts(struct store *st, int64_t *n)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_ACC_COUNT);
    if (q == NULL)
        return STORE_ERROR;
    int rc = sqlite3_step(q), ret = STORE_OK;
    if (rc == SQLITE_ROW)
        *n = sqlite3_column_int64(q, 0);
    else
        ret = sq_fail(s, "counting accounts");
    sqlite3_reset(q);
    return ret;
}

struct session_args {
    const unsigned char *hash;
    int64_t account_id, now;
    const char *user_agent;
};

static int session_create_tx(struct sq_store *s, void *arg)
{
    struct session_args *a = arg;
    sqlite3_stmt *q = sq_stmt(s, SQ_SESS_PURGE);
    int rc;
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a->account_id);
    sqlite3_bind_int64(q, 2, a->now - s->base.session_ttl_ms);
    if ((rc = sq_run(s, q, "deleting expired sessions")) != STORE_OK)
        return rc;
    if ((q = sq_stmt(s, SQ_SESS_INSERT)) == NULL)
        return STORE_ERROR;
    sqlite3_bind_blob(q, 1, a->hash, STORE_TOKEN_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, a->account_id);
    sqlite3_bind_int64(q, 3, a->now);
    sqlite3_bind_text(q, 4, a->user_agent, -1, SQLITE_STATIC);
    return sq_run(s, q, "creating a session");
}

static int sq_session_create(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t account_id,
                             const char *user_agent, int64_t now)
{
    char ua[STORE_USER_AGENT_MAX + 1];
    size_t n = 0;
    /* printable ASCII only, so that whatever reads it back (JSON, a terminal) needs no care */
    for (const char *p = user_agent; p != NULL && *p != '\0' && n < STORE_USER_AGENT_MAX; p++)
        ua[n++] = *p >= 0x20 && *p <= 0x7e ? *p : '?';
    ua[n] = '\0';
    struct session_args a = {hash, account_id, now, ua};
    return sq_write((struct sq_store *)st, session_create_tx, &a);
}

static void read_session(sqlite3_stmt *q, int col, struct store_session *out)
{
    out->id = sqlite3_column_int64(q, col);
    out->account_id = sqlite3_column_int64(q, col + 1);
    out->created_at = sqlite3_column_int64(q, col + 2);
    out->last_used_at = sqlite3_column_int64(q, col + 3);
    copy_text(q, col + 4, out->user_agent, sizeof out->user_agent);
}

static int sq_session_account(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                              struct store_account *out, struct store_session *session)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_SESS_ACCOUNT);
    struct store_account acc;
    int rc, ret;
    if (out == NULL) /* the account is read anyway: one statement */
        out = &acc;
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_blob(q, 1, hash, STORE_TOKEN_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, now - s->base.session_ttl_ms);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        sq_read_account(q, 0, out);
        if (session != NULL) {
            /* columns 7-10: s.id, s.created_at, s.last_used_at, s.user_agent */
            session->id = sqlite3_column_int64(q, 7);
            session->account_id = out->id;
            session->created_at = sqlite3_column_int64(q, 8);
            session->last_used_at = sqlite3_column_int64(q, 9);
            copy_text(q, 10, session->user_agent, sizeof session->user_agent);
        }
        ret = STORE_OK;
    } else {
        ret = rc == SQLITE_DONE ? STORE_NOT_FOUND : sq_fail(s, "looking up a session");
    }
    sqlite3_reset(q);
    return ret;
}

static int session_delete_tx(struct sq_store *s, void *arg)
{
    struct session_args *a = arg;
    sqlite3_stmt *q = sq_stmt(s, SQ_SESS_DELETE);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_blob(q, 1, a->hash, STORE_TOKEN_HASH_LEN, SQLITE_STATIC);
    return sq_run(s, q, "deleting a session");
}

static int sq_session_delete(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN])
{
    struct session_args a = {hash, 0, 0, NULL};
    return sq_write((struct sq_store *)st, session_delete_tx, &a);
}

/* Arguments of the statements below that bind ?1 and ?2 as integers and report rows changed. */
struct ids_args {
    enum sq_stmt stmt;
    int64_t a, b;
    const char *hash; /* password_set: the new hash */
    int64_t *changes;
    const char *what;
};

static int ids_tx(struct sq_store *s, void *arg)
{
    struct ids_args *a = arg;
    sqlite3_stmt *q = sq_stmt(s, a->stmt);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a->a);
    sqlite3_bind_int64(q, 2, a->b);
    int rc = sq_run(s, q, a->what);
    if (rc == STORE_OK && a->changes != NULL)
        *a->changes = sqlite3_changes(s->db);
    return rc;
}

static int sq_session_touch(struct store *st, int64_t id, int64_t now)
{
    struct ids_args a = {SQ_SESS_TOUCH, id, now, NULL, NULL, "recording a session's use"};
    return sq_write((struct sq_store *)st, ids_tx, &a);
}

static int sq_session_list(struct store *st, int64_t account_id, int64_t now, const struct store_page *page,
                           store_session_cb cb, void *ctx)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, SQ_SESS_LIST);
    struct store_session sess;
    int rc;
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, account_id);
    sq_bind_page(q, 2, 3, 4, page);
    sqlite3_bind_int64(q, 5, now - s->base.session_ttl_ms);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        read_session(q, 0, &sess);
        if (cb(ctx, &sess) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    int ret = rc == SQLITE_DONE ? STORE_OK : sq_fail(s, "listing sessions");
    sqlite3_reset(q);
    return ret;
}

static int sq_session_revoke(struct store *st, int64_t account_id, int64_t id)
{
    int64_t n = 0;
    struct ids_args a = {SQ_SESS_REVOKE, id, account_id, NULL, &n, "deleting a session"};
    int rc = sq_write((struct sq_store *)st, ids_tx, &a);
    return rc == STORE_OK && n == 0 ? STORE_NOT_FOUND : rc;
}

static int sq_session_revoke_others(struct store *st, int64_t account_id, int64_t keep_id, int64_t *revoked)
{
    int64_t n = 0;
    struct ids_args a = {SQ_SESS_REVOKE_OTHERS, account_id, keep_id, NULL, &n, "deleting sessions"};
    int rc = sq_write((struct sq_store *)st, ids_tx, &a);
    if (revoked != NULL)
        *revoked = rc == STORE_OK ? n : 0;
    return rc;
}

static int password_set_tx(struct sq_store *s, void *arg)
{
    struct ids_args *a = arg;
    sqlite3_stmt *q = sq_stmt(s, SQ_ACC_SET_PASSWORD);
    int rc;
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a->a);
    sqlite3_bind_text(q, 2, a->hash, -1, SQLITE_STATIC);
    if ((rc = sq_run(s, q, "changing a password")) != STORE_OK)
        return rc;
    if (sqlite3_changes(s->db) == 0)
        return STORE_NOT_FOUND;
    struct ids_args del = {SQ_SESS_REVOKE_OTHERS, a->a, a->b, NULL, a->changes, "deleting sessions"};
    return ids_tx(s, &del);
}

static int sq_password_set(struct store *st, int64_t account_id, const char *password_hash, int64_t keep_session_id,
                           int64_t *revoked)
{
    int64_t n = 0;
    struct ids_args a = {SQ_ACC_SET_PASSWORD, account_id, keep_session_id, password_hash, &n, "changing a password"};
    int rc = sq_write((struct sq_store *)st, password_set_tx, &a);
    if (revoked != NULL)
        *revoked = rc == STORE_OK ? n : 0;
    return rc;
}

/* ---- follows ---- */

/* Binds ?1 = a, ?2 = b (and ?3 = c when the statement has it), runs it, and returns STORE_OK with
 * *changes set to the number of rows changed. */
static int run_ids(struct sq_store *s, enum sq_stmt id, int64_t a, int64_t b, int64_t c, int *changes, const char *what)
{
    sqlite3_stmt *q = sq_stmt(s, id);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a);
    sqlite3_bind_int64(q, 2, b);
    if (sqlite3_bind_parameter_count(q) >= 3)
        sqlite3_bind_int64(q, 3, c);
    int rc = sq_run(s, q, what);
    if (changes != NULL)
        *changes = sqlite3_changes(s->db);
    return rc;
}

struct follow_args {
    int64_t follower, followee, now;
    int on;
};

static int follow_tx(struct sq_store *s, void *arg)
{
    struct follow_args *a = arg;
    int changed = 0, rc, dummy;
    sqlite3_stmt *q = sq_stmt(s, SQ_ACC_EXISTS);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, a->followee);
    rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc == SQLITE_DONE)
        return STORE_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return sq_fail(s, "looking up an account");
    if (a->on)
        rc = run_ids(s, SQ_FOLLOW_INSERT, a->follower, a->followee, a->now, &changed, "following");
    else
        rc = run_ids(s, SQ_FOLLOW_DELETE, a->follower, a->followee, 0, &changed, "unfollowing");
    if (rc != STORE_OK || changed == 0)
        return rc;
    int64_t d = a->on ? 1 : -1;
    if ((rc = run_ids(s, SQ_ACC_ADD_FOLLOWERS, a->followee, d, 0, NULL, "counting followers")) != STORE_OK ||
        (rc = run_ids(s, SQ_ACC_ADD_FOLLOWING, a->follower, d, 0, NULL, "counting followees")) != STORE_OK)
        return rc;
    /* keep the follower's fan-out rows exact: the followee's fanned-out posts appear or vanish */
    return run_ids(s, a->on ? SQ_HOME_BACKFILL : SQ_HOME_UNFILL, a->follower, a->followee, 0, &dummy,
                   "updating the home timeline");
}

static int sq_follow(struct store *st, int64_t follower, int64_t followee, int on, int64_t now)
{
    struct follow_args a = {follower, followee, now, on};
    return sq_write((struct sq_store *)st, follow_tx, &a);
}

static int sq_account_list(struct store *st, enum store_account_list which, int64_t account_id,
                           const struct store_page *page, store_account_cb cb, void *ctx)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *q = sq_stmt(s, which == STORE_FOLLOWERS ? SQ_LIST_FOLLOWERS : SQ_LIST_FOLLOWING);
    struct store_account acc;
    int rc;
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(q, 1, account_id);
    sq_bind_page(q, 2, 3, 4, page);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        sq_read_account(q, 0, &acc);
        if (cb(ctx, &acc) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    int ret = rc == SQLITE_DONE ? STORE_OK : sq_fail(s, "listing accounts");
    sqlite3_reset(q);
    return ret;
}

/* ---- throttles ---- */

struct throttle_args {
    const struct store_throttle *t;
    int n;
    int64_t now;
    int64_t *retry_ms;
    const char *key;
    int forget;
};

static int throttle_take_tx(struct sq_store *s, void *arg)
{
    struct throttle_args *a = arg;
    sqlite3_stmt *prune = sq_stmt(s, SQ_THR_PRUNE), *get = sq_stmt(s, SQ_THR_GET), *add = sq_stmt(s, SQ_THR_ADD);
    int rc, limited = 0;
    if (prune == NULL || get == NULL || add == NULL)
        return STORE_ERROR;
    sqlite3_bind_int64(prune, 1, a->now);
    if ((rc = sq_run(s, prune, "pruning throttles")) != STORE_OK)
        return rc;
    *a->retry_ms = 0;
    for (int i = 0; i < a->n; i++) {
        if (a->t[i].limit <= 0)
            continue;
        sqlite3_bind_text(get, 1, a->t[i].key, -1, SQLITE_STATIC);
        rc = sqlite3_step(get);
        if (rc == SQLITE_ROW && sqlite3_column_int64(get, 0) >= a->t[i].limit) {
            int64_t left = sqlite3_column_int64(get, 1) - a->now;
            limited = 1;
            if (left > *a->retry_ms)
                *a->retry_ms = left;
        }
        sqlite3_reset(get);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return sq_fail(s, "reading a throttle");
    }
    if (limited)
        return STORE_LIMITED; /* rolls back: nothing charged */
    for (int i = 0; i < a->n; i++) {
        if (a->t[i].limit <= 0)
            continue;
        sqlite3_bind_text(add, 1, a->t[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(add, 2, a->now + a->t[i].window_ms);
        if ((rc = sq_run(s, add, "charging a throttle")) != STORE_OK)
            return rc;
    }
    return STORE_OK;
}

static int sq_throttle_take(struct store *st, const struct store_throttle *t, int n, int64_t now, int64_t *retry_ms)
{
    int64_t dummy;
    struct throttle_args a = {t, n, now, retry_ms ? retry_ms : &dummy, NULL, 0};
    return sq_write((struct sq_store *)st, throttle_take_tx, &a);
}

static int throttle_give_tx(struct sq_store *s, void *arg)
{
    struct throttle_args *a = arg;
    sqlite3_stmt *q = sq_stmt(s, a->forget ? SQ_THR_FORGET : SQ_THR_GIVE);
    if (q == NULL)
        return STORE_ERROR;
    sqlite3_bind_text(q, 1, a->key, -1, SQLITE_STATIC);
    return sq_run(s, q, "giving back a throttle");
}

static int sq_throttle_give(struct store *st, const char *key, int forget)
{
    struct throttle_args a = {NULL, 0, 0, NULL, key, forget};
    return sq_write((struct sq_store *)st, throttle_give_tx, &a);
}

static const struct store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .read_begin = sq_read_begin,
    .read_end = sq_read_end,
    .account_create = sq_account_create,
    .account_by_name = sq_account_by_name,
    .account_credentials = sq_account_credentials,
    .session_create = sq_session_create,
    .session_account = sq_session_account,
    .session_delete = sq_session_delete,
    .session_touch = sq_session_touch,
    .session_list = sq_session_list,
    .session_revoke = sq_session_revoke,
    .session_revoke_others = sq_session_revoke_others,
    .password_set = sq_password_set,
    .follow = sq_follow,
    .account_list = sq_account_list,
    .post_create = sq_post_create,
    .post_get = sq_post_get,
    .post_delete = sq_post_delete,
    .like = sq_like,
    .posts_by_author = sq_posts_by_author,
    .replies = sq_replies,
    .home = sq_home,
    .bulk_begin = sq_bulk_begin,
    .bulk_account = sq_bulk_account,
    .bulk_follow = sq_bulk_follow,
    .bulk_post = sq_bulk_post,
    .bulk_end = sq_bulk_end,
    .count_accounts = sq_count_accounts,
    .throttle_take = sq_throttle_take,
    .throttle_give = sq_throttle_give,
};

/* Busy handler: the lock another process holds is released within a transaction's time (well
 * under a millisecond here), so wait in short naps — 50 µs doubling to 2 ms — rather than
 * SQLite's default steps of up to 100 ms, which would stall this worker's whole event loop.
 * Gives up (SQLITE_BUSY) after about BUSY_TIMEOUT_MS. */
static int on_busy(void *arg, int count)
{
    (void)arg;
    long us = count < 6 ? 50L << count : 2000; /* 50, 100, ... 1600, then 2000 */
    /* time waited so far: 50·(2^k − 1) for the first 6 naps, then 2 ms each */
    long waited = count < 6 ? 50L * ((1L << count) - 1) : 3150L + 2000L * (count - 6);
    if (waited >= BUSY_TIMEOUT_MS * 1000L)
        return 0;
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
    return 1;
}

/* WAL hook, run after each commit with the WAL's size in frames; replaces SQLite's
 * auto-checkpoint (which would run a passive checkpoint of a few frames after every commit once
 * the WAL passes 1000 frames, copying a page again each time it is written).
 *  - Passive, each WAL_STEP_FRAMES: copies what no reader needs any more without blocking anyone.
 *  - Restart, at WAL_RESTART_FRAMES: several servers always have a reader open, so passive
 *    checkpoints alone never let the WAL start over and it would grow without bound. RESTART
 *    waits (busy handler) until readers have moved past the WAL; the next writer then writes it
 *    from the start again. The file keeps its size instead of being truncated: writing over pages
 *    the OS already holds is cheaper than growing a file, and other processes' WAL maps stay
 *    valid. A failed checkpoint is left for a later commit; the commit itself has succeeded. */
static int on_wal(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct sq_store *s = arg;
    if (frames < s->ckpt_next - WAL_STEP_FRAMES) /* the WAL started over since the last call */
        s->ckpt_next = WAL_STEP_FRAMES;
    if (frames >= WAL_RESTART_FRAMES) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
        s->ckpt_next = WAL_STEP_FRAMES;
    } else if (frames >= s->ckpt_next) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        s->ckpt_next = frames + WAL_STEP_FRAMES;
    }
    return SQLITE_OK;
}

/* Process-wide SQLite settings, applied once before SQLite initialises (sqlite3_config() refuses
 * them afterwards, harmlessly, e.g. when a test opened a database first). Memory statistics off:
 * nothing here reads them, and keeping them takes a global mutex around every allocation SQLite
 * makes, about 8 % of a home-timeline read (50 against 55 µs, docs/TIMELINES.md). */
static void sqlite_process_config(void) { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

struct store *store_sqlite_open(const char *path, const struct store_options *opts, char *err, size_t errlen)
{
    static pthread_once_t config_once = PTHREAD_ONCE_INIT;
    pthread_once(&config_once, sqlite_process_config);
    struct sq_store *s = alloc_calloc(1, sizeof *s);
    s->base.ops = &sqlite_ops;
    s->ckpt_next = WAL_STEP_FRAMES;
    s->base.fanout_limit = opts != NULL && opts->fanout_limit > 0 ? opts->fanout_limit : STORE_FANOUT_LIMIT;
    s->base.session_ttl_ms = opts != NULL && opts->session_ttl_ms > 0 ? opts->session_ttl_ms : STORE_SESSION_TTL_MS;
    if (path[0] == '\0') {
        snprintf(err, errlen, "sqlite: empty database path");
        goto fail;
    }
    /* A new file is made readable by its owner only, before the WAL and shared-memory files exist
     * (SQLite gives them the database file's permissions); an existing file keeps its own. By
     * path, never by opening the file ourselves: closing any descriptor of the database would drop
     * the POSIX locks that this process's other connections hold on it (fcntl locks belong to the
     * process), and another process closing its last connection would then believe it is alone,
     * checkpoint and delete the WAL under us. */
    struct stat st;
    int existed = stat(path, &st) == 0;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        sqlite_vfs_agora()) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: cannot open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    if (!existed && chmod(path, 0600) != 0) {
        snprintf(err, errlen, "sqlite: cannot make %s private: %s", path, strerror(errno));
        goto fail;
    }
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "sqlite: %s: %s", path, strerror(errno));
        goto fail;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->writer = writer_get(st.st_dev, st.st_ino);
    sqlite3_busy_handler(s->db, on_busy, s);
    sqlite3_wal_hook(s->db, on_wal, s);
    sqlite3_extended_result_codes(s->db, 0);
    if (enable_wal(s) != STORE_OK || exec_retry(s, SETTINGS) != STORE_OK || migrate(s) != STORE_OK) {
        snprintf(err, errlen, "sqlite: %s: %s", path, s->base.err);
        goto fail;
    }
    int chunk = DB_CHUNK_BYTES;
    sqlite3_file_control(s->db, "main", SQLITE_FCNTL_CHUNK_SIZE, &chunk);
    return &s->base;
fail:
    sq_close(&s->base);
    return NULL;
}
