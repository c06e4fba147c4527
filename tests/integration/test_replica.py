"""agora server --db-replica: read replicas with read-your-writes (issue 12, item 3), on a real
PostgreSQL primary and a streaming hot standby (scripts/pg-temp.sh start / start-standby, Unix
sockets in directories of this module's own under /tmp).

- A client that writes and at once reads its own page, sending back the position the write
  answered with (Agora-Position header, or the agora_pos cookie), sees its write every time, 200
  times in a row, while the replica applies WAL 400 ms late (recovery_min_apply_delay); the same
  reads without a position went to the replica and were stale (counted by /metrics, and seen).
- Once the replica has replayed a write, reads carrying its position go to the replica.
- The same across two servers and from many threads at once: a position one server handed out
  is honoured by the other.
- A replica whose replay is paused beyond --replica-max-lag is skipped (reads answer fresh data
  from the primary, counted as "lagging"), and used again once it has caught up.
- The replica stopped under a stream of reads: zero errors (reads move to the primary); started
  again: reads return to it by themselves.
- The replica frozen (SIGSTOP: connections open, no answers, as a cut link): every read is
  answered, those already sent to it within the reply timeout, the others at once from the
  primary once its check is stale (1 s); thawed, it is used again.
- Hostile positions (garbage, signs, far in the future, a 10 KB cookie) get normal answers and
  cause no check of the replica per request.
- --db-replica needs PostgreSQL on both sides: a clear error otherwise; a "replica" that is a
  primary (not in recovery) is never read from; a replica role that may only SELECT is enough.
"""

import subprocess
import tempfile
import threading
import time

import pytest

from helpers import (LOCALHOST, ApiClient, free_port, http_request, parse_metrics, start_agora_server,
                     unique_username, wait_for)
from agora_test.db import PG_TEMP, psql, with_database
from agora_test.pgtemp import PgTemp

PASSWORD = "correct horse battery staple"


class Pair:
    """A primary and its streaming standby (pg-temp.sh), each in a directory of its own."""

    def __init__(self):
        self.primary_dir = tempfile.mkdtemp(prefix="agora-rep-p-")
        self.standby_dir = tempfile.mkdtemp(prefix="agora-rep-s-")
        self.primary = PgTemp(self.primary_dir)
        self.standby = PgTemp(self.standby_dir)

    def start(self):
        self.primary.start("fsync=off")
        out = subprocess.run(["sh", str(PG_TEMP), "start-standby", self.standby_dir, self.primary_dir,
                              "-c", "fsync=off"], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("pg-temp.sh start-standby failed: %s%s" % (out.stdout, out.stderr))
        self.standby.url = out.stdout.strip().splitlines()[-1]

    def standby_sql(self, command):
        return psql(with_database(self.standby.url, "postgres"), command)

    def databases(self, prefix="rep"):
        """A fresh database on the primary -> (its URL, the same database's URL on the standby),
        once the standby has it."""
        name = unique_username(prefix).lower()
        psql(self.primary.url, "CREATE DATABASE %s" % name)
        primary, replica = with_database(self.primary.url, name), with_database(self.standby.url, name)
        assert wait_for(lambda: self.standby_sql("SELECT count(*) FROM pg_database WHERE datname = '%s'"
                                                 % name).strip() == "1", 15.0, 0.05)
        return primary, replica

    def destroy(self):
        for cluster in (self.standby, self.primary):
            try:
                cluster.destroy()
            except RuntimeError:
                pass


@pytest.fixture(scope="module")
def pair():
    from helpers import PgCluster

    if not PgCluster.installed():
        pytest.skip("PostgreSQL is not installed (make deps-test)")
    p = Pair()
    try:
        p.start()
        yield p
    finally:
        p.destroy()


@pytest.fixture
def replica_server(agora_bin, pair):
    """start(*args) -> (server, metrics port): agora server (1 worker, throttles off) on a fresh
    database of the primary with --db-replica on the standby, once the replica is up (metrics). At
    teardown every server gets SIGTERM and must exit 0; the standby's replay is resumed and its
    apply delay reset, whatever the test did."""
    started = []

    def start(*args, databases=None):
        primary, replica = databases or pair.databases()
        mport = free_port()
        srv = start_agora_server(agora_bin, primary, extra_args=[
            "--db-replica", replica, "--metrics-listen", "%s:%d" % (LOCALHOST, mport), "--signup-limit", "off",
            "--login-limit", "off", "--login-address-limit", "off"] + list(args))
        started.append(srv)
        srv.databases = (primary, replica)
        assert wait_for(lambda: metrics(mport)[("agora_server_replica_up", frozenset())] == 1, 15.0, 0.05), \
            srv.output()
        return srv, mport

    try:
        yield start
    finally:
        pair.standby_sql("SELECT pg_wal_replay_resume()")
        pair.standby_sql("ALTER SYSTEM RESET recovery_min_apply_delay")
        pair.standby_sql("SELECT pg_reload_conf()")
        statuses = [(srv.stop(timeout=10.0), srv) for srv in started]
        for status, srv in statuses:
            assert status == 0, srv.output()


def metrics(mport):
    status, _, body = http_request(LOCALHOST, mport, "GET", "/metrics")
    assert status == 200, body
    return parse_metrics(body.decode())


def reads(mport):
    """{reason: count} of agora_server_reads_total (ok = the replica)."""
    m = metrics(mport)
    return {dict(k[1])["reason"]: int(v) for k, v in m.items() if k[0] == "agora_server_reads_total"}


def delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


def busy_retried(call, tries=10):
    """call() again while it answers 503 (every handler busy hashing passwords on a loaded
    machine: the server says so with Retry-After, and a client waits and retries), up to tries
    times -> the last response."""
    for _ in range(tries):
        r = call()
        if r.status != 503:
            return r
        time.sleep(float(r.headers.get("retry-after", "1")))
    return r


def user(port):
    """A fresh account, logged in -> (ApiClient with its token, username)."""
    api = ApiClient(port)
    name = unique_username("rep")
    r = busy_retried(lambda: api.post("/api/v1/accounts", {"username": name, "password": PASSWORD}))
    assert r.status == 201, r
    r = busy_retried(lambda: api.post("/api/v1/sessions", {"username": name, "password": PASSWORD}))
    assert r.status == 200, r
    return api.as_user(r.json["token"]), name


def lsn(text):
    hi, lo = text.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


def post(me, text):
    """Posts text -> (post id, the position the answer carried)."""
    r = me.post("/api/v1/posts", {"text": text})
    assert r.status == 201, r
    pos = r.headers["agora-position"]
    cookie = r.headers["set-cookie"]
    assert cookie == "agora_pos=%s; Max-Age=60; Path=/; HttpOnly; SameSite=Lax" % pos, cookie
    return r.json["id"], pos


def newest(me, name, headers=None):
    r = me.get("/api/v1/accounts/%s/posts?limit=1" % name, headers=headers)
    assert r.status == 200, r
    return r.json[0]["id"] if r.json else None


def test_a_client_reads_its_writes_every_time_from_a_delayed_replica(replica_server, pair):
    srv, mport = replica_server()
    me, name = user(srv.port)
    pair.standby_sql("ALTER SYSTEM SET recovery_min_apply_delay = '400ms'")
    pair.standby_sql("SELECT pg_reload_conf()")
    time.sleep(0.3)
    before = reads(mport)
    seen, stale, n = 0, 0, 200
    for i in range(n):
        pid, pos = post(me, "write %d" % i)
        # half send the header, half the cookie, as a browser would
        hdr = {"Agora-Position": pos} if i % 2 == 0 else {"Cookie": "agora_pos=%s" % pos}
        if newest(me, name, hdr) == pid:
            seen += 1
        if newest(me, name) != pid:  # no position: the replica, 400 ms behind
            stale += 1
    d = delta(reads(mport), before)
    assert seen == n
    # every read without a position went to the replica (it is within the 5 s bound), and nearly
    # all of them were stale; those with one went to the primary unless already replayed
    assert d["ok"] >= n and d["ok"] + d["position"] == 2 * n, d
    assert d["down"] == d["lagging"] == d["fallback"] == 0, d
    assert d["position"] >= n - 10, d
    assert stale >= n - 10, stale


def test_positions_hold_across_servers_and_threads(replica_server, pair):
    a, ma = replica_server()
    b, mb = replica_server(databases=a.databases)
    pair.standby_sql("ALTER SYSTEM SET recovery_min_apply_delay = '200ms'")
    pair.standby_sql("SELECT pg_reload_conf()")
    time.sleep(0.3)
    failures, done = [], [0]

    def client(k):
        me, name = user(a.port)
        other = ApiClient(b.port, me.token)
        for i in range(40):
            writer, reader = (me, other) if i % 2 == 0 else (other, me)
            pid, pos = post(writer, "thread %d write %d" % (k, i))
            got = newest(reader, name, {"Agora-Position": pos})
            if got != pid:
                failures.append((k, i, pid, got))
        done[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert done[0] == 6 and failures == [], failures[:5]
    ra, rb = reads(ma), reads(mb)
    assert ra["position"] + ra["ok"] + rb["position"] + rb["ok"] == 240, (ra, rb)
    assert ra["fallback"] == rb["fallback"] == ra["down"] == rb["down"] == 0, (ra, rb)


def test_reads_go_to_the_replica_once_it_has_replayed_the_position(replica_server, pair):
    srv, mport = replica_server()
    me, name = user(srv.port)
    pid, pos = post(me, "hello")
    assert wait_for(lambda: metrics(mport)[("agora_server_replica_replayed_bytes", frozenset())] >= lsn(pos), 5.0)
    before = reads(mport)
    for _ in range(20):
        assert newest(me, name, {"Agora-Position": pos}) == pid
    d = delta(reads(mport), before)
    assert d == {"ok": 20, "position": 0, "down": 0, "lagging": 0, "fallback": 0}, d

    # reads without a position do go to the replica: with its replay paused they do not see a new post
    pair.standby_sql("SELECT pg_wal_replay_pause()")
    pid2, pos2 = post(me, "unseen on the replica")
    time.sleep(0.3)
    assert newest(me, name) == pid  # stale, as allowed without a position
    assert newest(me, name, {"Agora-Position": pos2}) == pid2
    assert newest(me, name, {"Cookie": "a=b; agora_pos=%s; c=d" % pos2}) == pid2
    pair.standby_sql("SELECT pg_wal_replay_resume()")
    assert wait_for(lambda: newest(me, name) == pid2, 5.0, 0.02)


def test_a_replica_lagging_beyond_the_bound_is_skipped(replica_server, pair):
    srv, mport = replica_server("--replica-max-lag", "500ms")
    me, name = user(srv.port)
    pair.standby_sql("SELECT pg_wal_replay_pause()")
    pid, _ = post(me, "while the replica is paused")
    assert wait_for(lambda: metrics(mport)[("agora_server_replica_lagging", frozenset())] == 1, 5.0, 0.05)
    m = metrics(mport)
    assert m[("agora_server_replica_up", frozenset())] == 0
    assert m[("agora_server_replica_lag_seconds", frozenset())] >= 0.5
    before = reads(mport)
    for _ in range(10):
        assert newest(me, name) == pid  # no position, yet fresh: the primary
    assert delta(reads(mport), before) == {"ok": 0, "position": 0, "down": 0, "lagging": 10, "fallback": 0}
    pair.standby_sql("SELECT pg_wal_replay_resume()")
    assert wait_for(lambda: metrics(mport)[("agora_server_replica_up", frozenset())] == 1, 5.0, 0.05)
    before = reads(mport)
    for _ in range(10):
        assert newest(me, name) == pid
    assert delta(reads(mport), before)["ok"] == 10
    assert "replica lagging" in srv.output() and "replica up" in srv.output()


def test_a_stopped_replica_costs_no_request_and_is_used_again_when_back(replica_server, pair):
    srv, mport = replica_server()
    me, name = user(srv.port)
    pid, _ = post(me, "before the outage")
    assert wait_for(lambda: newest(me, name) == pid, 5.0, 0.02)
    failures, answered, stop = [], [0], threading.Event()

    def reader():
        client = ApiClient(srv.port, me.token)
        while not stop.is_set() and answered[0] < 5000:
            r = client.get("/api/v1/accounts/%s/posts?limit=1" % name)
            if r.status != 200 or r.json[0]["id"] != pid:
                failures.append(r)
            answered[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        pair.standby.stop()
        assert wait_for(lambda: metrics(mport)[("agora_server_replica_up", frozenset())] == 0, 5.0, 0.05)
        at_stop = reads(mport)
        time.sleep(1.0)
        during = delta(reads(mport), at_stop)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == [], failures[:3]
    assert answered[0] > 50
    assert during["ok"] == 0 and during["down"] > 0, during
    # writes and reads keep working while it is down
    pid2, _ = post(me, "during the outage")
    assert newest(me, name) == pid2

    pair.standby.start("fsync=off")
    assert wait_for(lambda: metrics(mport)[("agora_server_replica_up", frozenset())] == 1, 15.0, 0.1), srv.output()
    assert wait_for(lambda: newest(me, name) == pid2, 5.0, 0.02)
    before = reads(mport)
    for _ in range(10):
        assert newest(me, name) == pid2
    assert delta(reads(mport), before)["ok"] == 10
    assert "replica down" in srv.output()


def standby_pids(directory):
    """The processes (postmaster, backends) working in the standby's directory."""
    import os

    directory = os.path.realpath(str(directory))
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cwd = os.readlink("/proc/%s/cwd" % pid)
            except OSError:
                continue
            if cwd == directory or cwd.startswith(directory + "/"):
                pids.append(int(pid))
    return pids


def test_a_frozen_replica_delays_only_the_reads_sent_to_it(replica_server, pair):
    import os
    import signal

    srv, mport = replica_server()
    me, name = user(srv.port)
    pid, _ = post(me, "before the freeze")
    assert wait_for(lambda: newest(me, name) == pid, 5.0, 0.02)
    frozen = standby_pids(pair.standby_dir)
    assert frozen
    for p in frozen:
        os.kill(p, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        slow = []
        while time.monotonic() - t0 < 2.5:
            t = time.monotonic()
            assert newest(me, name) == pid
            slow.append(time.monotonic() - t)
        # a read stuck on the replica waits for the reply timeout (statement_timeout 5 s + 2 s)
        print("reads during the freeze: %d, slowest %.2f s" % (len(slow), max(slow)))
        assert max(slow) < 8.0, slow
        assert wait_for(lambda: metrics(mport)[("agora_server_replica_up", frozenset())] == 0, 3.0, 0.05)
        before = reads(mport)
        for _ in range(20):
            t = time.monotonic()
            assert newest(me, name) == pid
            assert time.monotonic() - t < 1.0
        d = delta(reads(mport), before)
        assert d["ok"] == 0 and d["down"] == 20, d
    finally:
        for p in frozen:
            os.kill(p, signal.SIGCONT)
    assert wait_for(lambda: metrics(mport)[("agora_server_replica_up", frozenset())] == 1, 15.0, 0.1)
    # each handler thread may find its replica connection dead once, and keeps off it for a second
    time.sleep(1.2)
    before = reads(mport)
    for _ in range(10):
        assert newest(me, name) == pid
    assert delta(reads(mport), before)["ok"] == 10


HOSTILE = ["", "garbage", "-1/5", "0/-5", "1/2/3", "0x10/0", " 0/1", "0/1 ", "+1/1", "123456789/0", "0/123456789",
           "G/0", "/", "0/", "/0", "%30/1", "\u00e9/1", "A" * 10240]
FUTURE = ["FFFFFFFF/FFFFFFFF", "7fffffff/0", "FFFF/0"]


def test_hostile_positions_get_normal_answers_and_no_check_per_request(replica_server):
    srv, mport = replica_server()
    me, name = user(srv.port)
    pid, pos = post(me, "hostile")
    assert wait_for(lambda: metrics(mport)[("agora_server_replica_replayed_bytes", frozenset())] >= lsn(pos), 5.0)
    before, checks0, t0 = reads(mport), metrics(mport)[("agora_server_replica_checks_total", frozenset())], \
        time.monotonic()
    n = 0
    for value in HOSTILE:
        for hdr in ({"Agora-Position": value}, {"Cookie": "agora_pos=" + value}):
            if not all(ord(c) < 128 for c in value):
                hdr = {k: v.encode("utf-8").decode("latin-1") for k, v in hdr.items()}
            assert newest(me, name, hdr) == pid, (value[:20], hdr.keys())
            n += 1
    # garbage is no position: the replica (it has the post)
    d = delta(reads(mport), before)
    assert d == {"ok": n, "position": 0, "down": 0, "lagging": 0, "fallback": 0}, d

    before = reads(mport)
    m = 0
    for _ in range(50):
        for value in FUTURE:
            for hdr in ({"Agora-Position": value}, {"Cookie": "agora_pos=" + value}):
                assert newest(me, name, hdr) == pid
                m += 1
    elapsed = time.monotonic() - t0
    d = delta(reads(mport), before)
    # from the future: the primary, and no check asked for
    assert d == {"ok": 0, "position": m, "down": 0, "lagging": 0, "fallback": 0}, d
    checks = metrics(mport)[("agora_server_replica_checks_total", frozenset())] - checks0
    assert checks <= elapsed / 0.1 + 5, (checks, elapsed)
    # an absurd position with a real one: the larger counts, still answered
    assert newest(me, name, {"Agora-Position": "FFFFFFFF/FFFFFFFF", "Cookie": "agora_pos=" + pos}) == pid
    # a 10 KB cookie of other names around the position
    big = "x=" + "y" * 10000 + "; agora_pos=" + pos
    assert newest(me, name, {"Cookie": big}) == pid


def test_db_replica_needs_postgresql(agora_bin, tmp_path, pair):
    for args, message in [
        (["--db", "sqlite:%s" % (tmp_path / "a.db"), "--db-replica", pair.standby.url],
         "--db-replica needs a PostgreSQL --db"),
        (["--db", pair.primary.url, "--db-replica", "sqlite:%s" % (tmp_path / "b.db")],
         "a read replica must be PostgreSQL"),
    ]:
        out = subprocess.run([str(agora_bin), "server", "--listen", "%s:%d" % (LOCALHOST, free_port())] + args,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1, out
        assert message in out.stderr, out.stderr


def test_a_replica_role_that_may_only_read_is_enough(agora_bin, pair):
    """No superuser, no pg_read_all_stats: only SELECT on the tables (the WAL receiver's status
    is hidden from such a role: unknown counts as streaming)."""
    primary, replica = pair.databases()
    psql(primary, "DO $$ BEGIN CREATE ROLE agora_reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    mport = free_port()
    srv = start_agora_server(agora_bin, primary, extra_args=[
        "--db-replica", replica.replace("user=agora", "user=agora_reader"), "--metrics-listen",
        "%s:%d" % (LOCALHOST, mport), "--signup-limit", "off", "--replica-max-lag", "200ms"])
    try:
        psql(primary, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO agora_reader")
        assert wait_for(lambda: metrics(mport)[("agora_server_replica_up", frozenset())] == 1, 10.0, 0.05), \
            srv.output()
        me, name = user(srv.port)
        pid, _ = post(me, "read by a reader")
        assert wait_for(lambda: newest(me, name) == pid, 5.0, 0.02)
        before = reads(mport)
        for _ in range(10):
            assert newest(me, name) == pid
        assert delta(reads(mport), before)["ok"] == 10
        time.sleep(0.5)  # still up: not taken for a standby cut off from its primary
        assert metrics(mport)[("agora_server_replica_up", frozenset())] == 1
    finally:
        assert srv.stop(timeout=10.0) == 0, srv.output()


def test_a_replica_url_naming_a_primary_is_never_read_from(agora_bin, pair):
    primary, _ = pair.databases()
    mport = free_port()
    srv = start_agora_server(agora_bin, primary, extra_args=[
        "--db-replica", primary, "--metrics-listen", "%s:%d" % (LOCALHOST, mport), "--signup-limit", "off"])
    try:
        me, name = user(srv.port)
        pid, _ = post(me, "on the primary")
        assert wait_for(lambda: "not a standby" in srv.output(), 5.0, 0.05), srv.output()
        before = reads(mport)
        for _ in range(10):
            assert newest(me, name) == pid
        assert delta(reads(mport), before) == {"ok": 0, "position": 0, "down": 10, "lagging": 0, "fallback": 0}
        assert metrics(mport)[("agora_server_replica_up", frozenset())] == 0
    finally:
        assert srv.stop(timeout=10.0) == 0, srv.output()
