/* store.c — chooses the store implementation from the database URL; see store.h.
 * "sqlite:PATH" → store_sqlite.c; "postgres://..." or "postgresql://..." (a libpq URI, e.g.
 * postgresql:///db?host=/dir&user=u; the PG* environment variables fill what it leaves out) →
 * store_postgres.c. Also the default of the optional calls (store_session_home, ...): the calls they
 * stand for, one after the other; and store_redact, which hides a URL's password in what is shown
 * (messages, logs). */
#include "app/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/store_postgres.h"
#include "app/store_sqlite.h"
#include "core/alloc.h"

struct store *store_open(const char *url, const struct store_options *opts, char *err, size_t errlen)
{
    if (url == NULL || url[0] == '\0') {
        snprintf(err, errlen, "no database URL given (expected sqlite:PATH or postgres://...)");
        return NULL;
    }
    struct store *st = NULL;
    if (strncmp(url, "sqlite:", 7) == 0)
        st = store_sqlite_open(url + 7, opts, err, errlen);
    else if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        st = store_postgres_open(url, opts, err, errlen);
    else
        snprintf(err, errlen, "unsupported database URL \"%s\" (expected sqlite:PATH or postgres://...)", url);
    if (st == NULL)
        store_redact(url, err, errlen);
    return st;
}

/* Replaces every copy of the n bytes at secret in text (size bytes) by "***". */
static void hide(const char *secret, size_t n, char *text, size_t size)
{
    if (n == 0 || size == 0)
        return;
    char *needle = alloc_strndup(secret, n), *out = alloc_malloc(size);
    size_t o = 0;
    const char *p = text, *hit;
    while (o < size - 1 && (hit = strstr(p, needle)) != NULL) {
        o += (size_t)snprintf(out + o, size - o, "%.*s***", (int)(hit - p), p);
        p = hit + n;
    }
    if (o < size - 1)
        snprintf(out + o, size - o, "%s", p);
    out[size - 1] = '\0';
    memcpy(text, out, strlen(out) + 1);
    free(needle);
    free(out);
}

void store_redact(const char *url, char *text, size_t size)
{
    const char *scheme = strstr(url, "://");
    if (scheme != NULL) {
        /* scheme://user:password@host. libpq looks for the '@' up to the first '/' only, so a
         * password may hold a raw '?' or '#': the user part ends at the last '@' before a '/'. */
        const char *a = scheme + 3, *end = a + strcspn(a, "/"), *at = NULL, *colon;
        for (const char *p = a; p < end; p++)
            if (*p == '@')
                at = p;
        if (at != NULL && (colon = memchr(a, ':', (size_t)(at - a))) != NULL)
            hide(colon + 1, (size_t)(at - colon - 1), text, size);
    }
    static const char *const keys[] = {"password=", "sslpassword=" /* of the client's key */};
    for (int k = 0; k < 2; k++) { /* ?password=..., &password=..., a key=value string */
        size_t n = strlen(keys[k]);
        for (const char *p = url; (p = strstr(p, keys[k])) != NULL; p += n)
            if (p == url || p[-1] == '?' || p[-1] == '&' || p[-1] == ' ')
                hide(p + n, strcspn(p + n, "& #"), text, size);
    }
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
    struct store_account acc;
    if (me == NULL)
        me = &acc;
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
