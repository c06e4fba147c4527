"""Review 14: read replicas — the lag bound a server that makes no writes relies on.

A server learns of new positions only from the replica's received LSN and its own writes
(replica.c's check). A standby whose stream from the primary stalls without the connection
closing (a cut link, a stuck WAL sender) still shows its WAL receiver as "streaming" (until
wal_receiver_timeout, 60 s) and its received LSN no longer moves: a server that does not write
measures a lag of 0 and kept reading there: a session revoked on another server (log-out) stayed
usable through it for 60 s, far beyond --replica-max-lag, which docs/CONFIG.md gives as the bound.
The replica's watcher of the primary (replica.c) now notes the primary's flushed position as seen,
so the stall shows as lag."""

import os
import signal
import time

import pytest

from helpers import ApiClient, start_agora_server, wait_for
from agora_test.db import psql
from test_replica import metrics, pair, replica_server, user  # noqa: F401 (fixtures)


def test_a_revoked_session_is_refused_within_the_lag_bound_when_the_stream_stalls(agora_bin, replica_server,
                                                                                  pair):  # noqa: F811
    srv_b, mport = replica_server("--replica-max-lag", "1s")
    primary_url, _ = srv_b.databases
    srv_a = start_agora_server(agora_bin, primary_url)
    try:
        me_b, name = user(srv_b.port)
        # B reads the session from the replica once it has it
        assert wait_for(lambda: me_b.get("/api/v1/me/sessions").status == 200, 10.0, 0.05)
        (sender,) = [int(x) for x in psql(pair.primary.url, "SELECT pid FROM pg_stat_replication").split()]
        os.kill(sender, signal.SIGSTOP)  # the stream stalls; the connection stays open
        try:
            me_a = ApiClient(srv_a.port).as_user(me_b.token)
            r = me_a.delete("/api/v1/sessions")
            assert r.status in (200, 204), r
            t0 = time.monotonic()
            # bound: --replica-max-lag (1 s) + a check (0.1 s) + slack
            ok = wait_for(lambda: me_b.get("/api/v1/me/sessions").status == 401, 6.0, 0.1)
            assert ok, "revoked session still accepted by server B after %.1f s" % (time.monotonic() - t0)
        finally:
            os.kill(sender, signal.SIGCONT)
    finally:
        srv_a.stop(timeout=10.0)
