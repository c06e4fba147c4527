/* store.c — chooses the store implementation from the database URL; see store.h.
 * "sqlite:PATH" → store_sqlite.c; "postgres://..." or "postgresql://..." (a libpq URI, e.g.
 * postgresql:///db?host=/dir&user=u; the PG* environment variables fill what it leaves out) →
 * store_postgres.c. */
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
