/* store_postgres_replica.c — PostgreSQL store: replication (store_position, store_replay). The
 * write positions themselves are read in store_postgres.c's batch_once, after each write's Sync
 * (store_postgres.h: PG_POSITION_SQL); here they are handed out, and a standby is asked where it
 * stands (PG_REPLAY_SQL, one round trip, reconnecting as every call does). */
#include "app/store_postgres.h"

int pg_position(struct store *st, uint64_t *pos)
{
    const struct pg_store *s = (const struct pg_store *)st;
    if (!s->positions || s->position == 0)
        return STORE_NOT_FOUND;
    *pos = s->position;
    return STORE_OK;
}

int pg_replay(struct store *st, struct store_replay *out)
{
    struct pg_q q;
    int rc = pg_run_ints((struct pg_store *)st, PG_REPLAY, 0, 0, 0, 0, PG_RESEND, "asking the replica", &q);
    if (rc == STORE_OK) {
        const PGresult *r = q.res;
        if (PQntuples(r) != 1 || PQnfields(r) != 5) {
            rc = pg_fail((struct pg_store *)st, STORE_ERROR, "asking the replica: unexpected answer");
        } else {
            out->standby = pg_bool(r, 0, 0);
            out->replayed = (uint64_t)pg_int(r, 0, 1);
            out->received = (uint64_t)pg_int(r, 0, 2);
            out->streaming = pg_bool(r, 0, 3);
            out->current = (uint64_t)pg_int(r, 0, 4);
        }
    }
    pg_q_clear(&q, 1);
    return rc;
}
