"""The database survives its primary (issue 12 item 4): pg_auto_failover under agora.

A pair of PostgreSQL nodes with a monitor (scripts/pg-failover.sh --fast, synchronous
replication; agora_test.pgfailover.PgFailover), two `agora server` on its multi-host URL
(target_session_attrs=read-write) behind `agora lb`. Writers post steadily, each post with an
Idempotency-Key and retried with that key after a 503 until acknowledged; readers read home
timelines and user pages. Then the primary goes away:

- (a) a planned switchover (pg_autoctl perform failover);
- (b) the primary's host dies: its pg_autoctl, postmaster and backends SIGKILLed at once; later its
  pg_autoctl is started again and the old primary must rejoin as the standby;
- (c) only the primary's postmaster is SIGKILLed: its pg_autoctl restarts it (no failover needed).

Asserted each time: every answer within REQUEST_BOUND_S and 200/201 or 503 with Retry-After
(server 503s a JSON error without internals), never a 500 or a hang; writes succeed again within
WRITES_BACK_S without restarting agora (the same processes); every acknowledged post exists
exactly once, with its text and the id it was acknowledged with, on the new primary, and (the
replication is synchronous) on the standby too; the roles changed as they should. The time
without writes and the reads answered meanwhile are printed."""

import json
import shutil
import tempfile
import threading
import time

import pytest

from agora_test.api import API_PASSWORD, unique_username
from agora_test.cluster import AgoraCluster
from agora_test.db import sql
from agora_test.http import timed_api_request
from agora_test.pgfailover import PgFailover
from agora_test.processes import LOCALHOST, wait_for

pytestmark = pytest.mark.skipif(not PgFailover.installed(),
                                reason="pg_auto_failover is not installed (Debian: postgresql-15-auto-failover; "
                                       "sh scripts/install-deps.sh test)")

WRITERS, READERS = 3, 2
REQUEST_BOUND_S = 5.0  # no request may take longer (the client gives up at +3 s and records an error)
WRITES_BACK_S = 30.0  # after the trigger, writes succeed again within this (measured: about 2-8 s)
FORBIDDEN_IN_BODIES = ("select ", "insert ", "sqlstate", "fatal", "libpq", "postgres", "read-only",
                       "25006", "57p01", "connection to server", "terminating")


@pytest.fixture(scope="module")
def pair():
    with PgFailover.private("agora-pgf-") as p:
        yield p


@pytest.fixture(scope="module")
def web(agora_bin, pair):
    top = tempfile.mkdtemp(prefix="agora-pgf-web-")
    cluster = AgoraCluster.start(agora_bin, top, servers=2, db=pair.url)
    try:
        yield cluster
    finally:
        complaints = cluster.stop()
        shutil.rmtree(top, ignore_errors=True)
        assert not complaints, complaints


def request(port, method, path, token=None, body=None, key=None):
    return timed_api_request(port, method, path, REQUEST_BOUND_S, token, body, key)


class Load:
    """Writers and readers through the balancer. rows: (kind, t0, t1, status, headers, body,
    key); acked: key -> (post id, text) of the posts answered 201."""

    def __init__(self, port, users, tag):
        self.port, self.users, self.tag = port, users, tag
        self.lock = threading.Lock()
        self.rows = []
        self.acked = {}
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self.writer, args=(u,)) for u in users[:WRITERS]]
        self.threads += [threading.Thread(target=self.reader, args=(i,)) for i in range(READERS)]

    def add(self, row):
        with self.lock:
            self.rows.append(row)

    def writer(self, user):
        seq = 0
        while not self.stop_ev.is_set():
            seq += 1
            key = "%s-%s-%d" % (self.tag, user["name"], seq)
            text = "failover %s" % key
            while not self.stop_ev.is_set():  # the same key until acknowledged
                row = request(self.port, "POST", "/api/v1/posts", user["token"], {"text": text}, key)
                self.add(("post",) + row + (key,))
                if row[2] == 201:
                    with self.lock:
                        self.acked[key] = (int(json.loads(row[4])["id"]), text)
                    time.sleep(0.02)  # steady, not flat out: the machine is shared
                    break
                time.sleep(0.1)

    def reader(self, i):
        n = 0
        while not self.stop_ev.is_set():
            n += 1
            u = self.users[(i + n) % len(self.users)]
            if n % 2:
                row = request(self.port, "GET", "/api/v1/timelines/home", u["token"])
            else:
                row = request(self.port, "GET", "/api/v1/accounts/%s/posts" % u["name"])
            self.add(("read",) + row + (None,))
            time.sleep(0.02 if row[2] == 200 else 0.1)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=REQUEST_BOUND_S + 10)

    def of(self, kind):
        with self.lock:
            return [r for r in self.rows if r[0] == kind]

    def acked_after(self, t):
        return [r for r in self.of("post") if r[3] == 201 and r[1] > t]


def users_for(web, n):
    users = []
    for _ in range(n):
        name = unique_username("pgf")
        assert web.api.post("/api/v1/accounts", {"username": name, "password": API_PASSWORD}).status == 201
        r = web.api.post("/api/v1/sessions", {"username": name, "password": API_PASSWORD})
        assert r.status == 200, r
        users.append({"name": name, "token": r.json["token"]})
    return users


def check_answers(load):
    rows = load.of("post") + load.of("read")
    for r in rows:
        assert r[2] - r[1] <= REQUEST_BOUND_S, ("took %.1f s" % (r[2] - r[1]), r[:5])
        assert r[3] in (200, 201, 503), r[:6]
        if r[3] == 503:
            assert r[4].get("retry-after", "").isdigit(), r[:6]
            if "x-served-by" in r[4]:  # the server's own answer; else the balancer's plain text
                doc = json.loads(r[5])
                assert list(doc) == ["error"] and doc["error"], r[:6]
                low = r[5].decode().lower()
                assert not any(w in low for w in FORBIDDEN_IN_BODIES), r[:6]
    return rows


def write_gap(load, t_from):
    """The longest time without an acknowledged write from t_from - 1 s on."""
    ends = sorted(r[2] for r in load.of("post") if r[3] == 201 and r[2] > t_from - 1.0)
    return max((b - a for a, b in zip(ends, ends[1:])), default=0.0)


def posts_on(url, tag):
    return sql(url, "SELECT idem_key, id, text FROM posts WHERE idem_key LIKE ?", tag + "-%")


def check_exactly_once(pair, load, tag, node, wait_s=0.0):
    """Every acknowledged post of the load is on node once, with its id and text; no key twice."""
    url = pair.node_url(node)

    def complete():
        rows = posts_on(url, tag)
        keys = {k for k, _, _ in rows}
        return rows if set(load.acked) <= keys else None

    rows = wait_for(complete, wait_s, 0.2) if wait_s else complete()
    assert rows, "%s lacks acknowledged posts: %r" % (node, sorted(set(load.acked) - {k for k, _, _ in
                                                                                        posts_on(url, tag)})[:5])
    by_key = {}
    for key, pid, text in rows:
        assert key not in by_key, "key %s stored twice on %s" % (key, node)
        by_key[key] = (pid, text)
    texts = [t for _, _, t in rows]
    assert len(texts) == len(set(texts)), "a text stored twice on %s" % node
    for key, (pid, text) in load.acked.items():
        assert by_key[key] == (pid, text), (key, by_key[key], (pid, text))
    return len(rows)


def run_phase(pair, web, tag, trigger, settle):
    """Load, trigger() after a steady start, then until writes are back; returns (load, t_trigger,
    t_back). settle() runs after the load (it may restart nodes)."""
    users = users_for(web, WRITERS)
    pids = [s.pid for s in web.servers]
    with Load(web.lb.port, users, tag) as load:
        assert wait_for(lambda: len(load.acked) >= 5, 15.0, 0.05), "no writes before the trigger"
        t_trigger = time.monotonic()
        trigger()
        back = wait_for(lambda: len(load.acked_after(t_trigger + 0.3)) >= 3, WRITES_BACK_S, 0.05)
        t_back = time.monotonic()
        time.sleep(1.0)
    assert back, "writes not back within %.0f s; states %r" % (WRITES_BACK_S, pair.states())
    check_answers(load)
    assert [s.pid for s in web.servers] == pids and all(s.poll() is None for s in web.servers)
    settle()
    gap = write_gap(load, t_trigger)
    reads = [r for r in load.of("read") if t_trigger < r[1] < t_trigger + gap]
    posts = load.of("post")
    print("%s: %d posts acknowledged, %d answers 503 (%d from the balancer); longest time without a write "
          "%.1f s; reads meanwhile: %d answered 200 of %d; slowest post %.2f s, read %.2f s" %
          (tag, len(load.acked), len([r for r in posts + load.of("read") if r[3] == 503]),
           len([r for r in posts + load.of("read") if r[3] == 503 and "x-served-by" not in r[4]]), gap,
           len([r for r in reads if r[3] == 200]), len(reads), max(r[2] - r[1] for r in posts),
           max(r[2] - r[1] for r in load.of("read"))))
    assert gap < WRITES_BACK_S
    return load, reads


def settled(pair):
    """Waits until the pair has a primary and a secondary, both settled -> (primary, standby);
    checks that the primary's commits wait for the standby (synchronous replication)."""
    assert wait_for(lambda: pair.primary() and pair.standby(), 60.0, 0.2), pair.states()
    primary, standby = pair.primary(), pair.standby()
    [(names, commit)] = sql(pair.node_url(primary), "SELECT current_setting('synchronous_standby_names'), "
                                                    "current_setting('synchronous_commit')")
    assert names.startswith("ANY 1 (pgautofailover_standby_") and commit == "on", (names, commit)
    return primary, standby


def test_planned_switchover_under_load(pair, web):
    old, new = settled(pair)
    load, reads = run_phase(pair, web, "sw", pair.failover,
                            lambda: pair.wait_states({new: "primary", old: "secondary"}))
    assert reads and len([r for r in reads if r[3] == 200]) >= len(reads) / 2, [r[:4] for r in reads[:10]]
    n = check_exactly_once(pair, load, "sw", new)
    check_exactly_once(pair, load, "sw", old, wait_s=15.0)
    assert n >= len(load.acked) >= 5


def test_primary_host_killed_under_load_and_rejoins(pair, web):
    old, new = settled(pair)

    def settle():
        assert pair.states()[new][0] in ("wait_primary", "primary"), pair.states()
        assert pair.postmaster_pid(old) is None
        pair.start(old)  # the dead host comes back: it rejoins as the standby
        pair.wait_states({new: "primary", old: "secondary"}, 60.0)

    load, reads = run_phase(pair, web, "kill", lambda: pair.kill(old), settle)
    assert settled(pair) == (new, old)
    check_exactly_once(pair, load, "kill", new)
    check_exactly_once(pair, load, "kill", old, wait_s=15.0)
    # the reads went on while nothing could be written: from the standby, before its promotion
    assert reads and len([r for r in reads if r[3] == 200]) >= len(reads) / 2, [r[:4] for r in reads[:10]]


def test_primary_postmaster_killed_is_restarted(pair, web):
    old, _ = settled(pair)
    load, _ = run_phase(pair, web, "pm", lambda: pair.kill_postmaster(old),
                     lambda: wait_for(lambda: pair.primary() is not None and pair.standby() is not None, 60.0, 0.2))
    check_exactly_once(pair, load, "pm", pair.primary())
    check_exactly_once(pair, load, "pm", pair.standby(), wait_s=15.0)
