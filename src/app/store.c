/* store.c — chooses the store implementation from the database URL; see store.h.
 * "sqlite:PATH" → store_sqlite.c; "postgres://..." or "postgresql://..." (a libpq URI, e.g.
 * postgresql:///db?host=/dir&user=u; the PG* environment variables fill what it leaves out) →
 * store_postgres.c. Also the default of the optional calls (store_session_home, ...): the calls they
 * stand for, one after the other. */
#include "app/store.h"

#include <stdio.h>
#include <string.h>

#include "app/store_postgres.h"
#include "app/store_sqlite.h"

struct store *store_open(const char *url, const struct store_options *opts, char *err, size_t errlen)
{
    if (url == NULL || url[0] == '\0') {
        snprintf(err, errlen, "no database URL given (expected sqlite:PATH or postgres://...)");
        return NULL;
    }
    if (strncmp(url, "sqlite:", 7) == 0)
        return store_sqlite_open(url + 7, opts, err, errlen);
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return store_postgres_open(url, opts, err, errlen);
    snprintf(err, errlen, "unsupported database URL \"%s\" (expected sqlite:PATH or postgres://...)", url);
    return NULL;
}

void store_close(struct store *st)
{
    if (st != NULL)
        st->ops->close(st);
}

int store_session_home_calls(struct store *st, const unsigned char hash[STORE_TOKEN_HASH_LEN], int64_t now,
                             const struct store_page *page, struct store_account *me, struct store_session *session,
                             store_post_cb cb, void *ctx)
{
    int rc = st->ops->session_account(st, hash, now, me, session);
    return rc != STORE_OK ? rc : st->ops->home(st, me->id, page, cb, ctx);
}

int store_post_create_get_calls(struct store *st, int64_t author, const char *text, size_t text_len, int64_t reply_to,
                                const char *idem_key, const unsigned char *idem_hash, int64_t now, int64_t *id_out,
                                store_post_cb cb, void *ctx)
{
    int rc = st->ops->post_create(st, author, text, text_len, reply_to, idem_key, idem_hash, now, id_out);
    if (rc != STORE_OK)
        return rc;
    rc = st->ops->post_get(st, *id_out, author, cb, ctx);
    return rc == STORE_NOT_FOUND ? STORE_OK : rc; /* created, then deleted before the read */
}

int store_posts_by_name_calls(struct store *st, const char *username, int64_t viewer, const struct store_page *page,
                              struct store_account *author, store_post_cb cb, void *ctx)
{
    int rc = st->ops->account_by_name(st, username, author);
    return rc != STORE_OK ? rc : st->ops->posts_by_author(st, author->id, viewer, page, cb, ctx);
}
