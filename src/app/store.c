/* store.c — chooses the store implementation from the database URL; see store.h.
 * "sqlite:PATH" → store_sqlite.c; "postgres://..." or "postgresql://..." (a libpq URI, e.g.
 * postgresql:///db?host=/dir&user=u; the PG* environment variables fill what it leaves out) →
 * store_postgres.c. store_redact hides a URL's password in what is shown (messages, logs). */
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
    if (scheme != NULL) { /* scheme://user:password@host: the authority ends at '/', '?' or '#' */
        const char *a = scheme + 3, *end = a + strcspn(a, "/?#"), *at = NULL, *colon;
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
