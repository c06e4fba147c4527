"""The database tier of the namespace cluster: the pg_auto_failover pair (monitor on mon, node1 on
db1, node2 on db2, synchronous replication) behind web servers that write through a multi-host URL
(target_session_attrs=read-write) and read from db2 (--db-replica). One cluster for the module,
the tests in this order (the last one moves the primary):

- 200 posts with Idempotency-Key from the client host while web hosts' links are cut and restored:
  every post is acknowledged (the client retries with the same key), and exists exactly once;
- read-your-writes: 1,000 posts each read back at once through the virtual address with its
  Agora-Position, the replica delayed by 300 ms (recovery_min_apply_delay): every read sees its
  post; reads without a position, once the replica caught up, are all answered by the replica
  (the web servers' agora_server_reads_total, exact);
- db1, the primary's host, is killed (every process in its namespace, SIGKILL) under a write
  load with Idempotency-Key: db2 is promoted, the web servers (not restarted) write there, every
  acknowledged post exists exactly once on the new primary, none lost; the time without
  acknowledged writes is printed; reads then go to the primary (db2 is no standby any more);
  db1 comes back and rejoins as the standby;
- then db2, the primary now, loses its cable (a partition, not a crash: no reset reaches anyone,
  its PostgreSQL lives on and demotes itself): db1 is promoted, the web servers give up on their
  connections to db2 (statement_timeout plus slack) and write to db1, every acknowledged post is
  there exactly once; db2, plugged in again, rejoins as the standby, and reads go to it again
  (it is the --db-replica, a standby once more).
"""

import time
from collections import Counter

from netcluster import wait_until

WEBS = ("web1", "web2", "web3")
LBS = ("lb1", "lb2")
WRITES_BACK_S = 30.0  # after the primary's host dies, writes are acknowledged again within this
READS = 'agora_server_reads_total{db="%s",reason="%s"}'
READ_LABELS = (("replica", "ok"), ("primary", "position"), ("primary", "down"), ("primary", "lagging"),
               ("primary", "fallback"))


def reads(cluster):
    """The web servers' read counts, summed, by (db, reason)."""
    total = Counter()
    for w in WEBS:
        m = cluster.metrics(w)
        for db, reason in READ_LABELS:
            total[(db, reason)] += int(m[READS % (db, reason)])
    return total


def reads_delta(cluster, before):
    after = reads(cluster)
    return {k: after[k] - before[k] for k in READ_LABELS if after[k] != before[k]}


def all_up(cluster):
    addrs = ["%s:%s" % (cluster.addr(w), cluster.facts["WEB_PORT"]) for w in WEBS]
    return all(cluster.servers(lb)[a]["state"] == "up" for lb in LBS for a in addrs)


def check_exactly_once(cluster, doc, host):
    """Every post of doc (netclient posts) was acknowledged, and is on HOST exactly once, with the
    id the client got; there is no other post of those accounts."""
    posts = doc["posts"]
    lost = [p[:4] + p[7:] for p in posts if p[4] is None]
    assert not lost, "posts never acknowledged although retried: %s" % lost[:5]
    users = ",".join("'%s'" % u for u in doc["users"])
    rows = cluster.psql("SELECT p.text, count(*), min(p.id) FROM posts p JOIN accounts a ON a.id = p.author "
                        "WHERE a.username IN (%s) GROUP BY p.text" % users, host=host)
    stored = {text: (int(n), int(pid)) for text, n, pid in rows}
    acked = {p[3]: (1, int(p[4])) for p in posts}
    assert len(acked) == len(posts)
    dups = {t: v for t, v in stored.items() if v[0] != 1}
    assert not dups, "posts stored more than once: %s" % list(dups.items())[:5]
    assert stored == acked, ("missing: %s; unexpected: %s" % (sorted(set(acked) - set(stored))[:5],
                                                             sorted(set(stored) - set(acked))[:5]))


def test_idempotent_posts_while_web_hosts_are_cut(cluster, report):
    """200 posts (4 clients x 50, one every 0.15 s each) while web1's, then also web2's cable is
    pulled and both are plugged in again: each post is tried (same key, same body) until
    acknowledged; all 200 are, each exactly once in the primary."""
    assert cluster.primary() == "db1"
    wait_until(lambda: all_up(cluster), 15, what="web1-web3 up on both balancers")
    job = cluster.posts(clients=4, count=50, interval=0.15, timeout=3.0, retry_for=60)
    t0 = time.time()
    steps = ((0.5, "web1", "down"), (2.5, "web2", "down"), (4.5, "web1", "up"), (6.0, "web2", "up"))
    for at, host, state in steps:
        time.sleep(max(0.0, t0 + at - time.time()))
        cluster.sh("link", host, state)
    t_restored = time.time()
    doc = job.result(timeout=180)
    posts = doc["posts"]
    assert len(posts) == 200
    during = [p for p in posts if t0 + 0.5 <= p[5] <= t_restored]
    assert len(during) >= 20, "only %d posts were sent while a web host was cut" % len(during)
    check_exactly_once(cluster, doc, cluster.primary())
    retried = [p for p in posts if len(p[7]) > 1]
    statuses = Counter(s for p in posts for s in p[7])
    wait_until(lambda: all_up(cluster), 15, what="web1-web3 up again on both balancers")
    report("200 idempotent posts while web1, web2 were cut: %d sent during the cuts, %d tried more than once "
           "(tries by status %s), 200 acknowledged, each exactly once in the primary"
           % (len(during), len(retried), dict(sorted(statuses.items()))))


def test_read_your_writes_with_a_delayed_replica(cluster, report):
    """1,000 post-then-read tries (8 clients x 125) with the replica applying WAL 300 ms late:
    every read, sent with the post's Agora-Position, shows the post first. Then, the replica
    caught up, 90 reads without a position: all 90 answered by the replica."""
    cluster.psql("ALTER SYSTEM SET recovery_min_apply_delay = '300ms'", host="db2")
    cluster.psql("SELECT pg_reload_conf()", host="db2")
    try:
        wait_until(lambda: cluster.psql("SHOW recovery_min_apply_delay", host="db2") == [["300ms"]], 5,
                   what="the replica's delay in effect")
        before = reads(cluster)
        t0 = time.time()
        doc = cluster.ryw(clients=8, count=125).result(timeout=180)
        took = time.time() - t0
        assert doc["tries"] == 1000, doc
        assert doc["bad"] == [] and doc["seen"] == 1000, doc["bad"]
        assert doc["positions"] == 1000
        delta = reads_delta(cluster, before)
        assert sum(delta.values()) == 1000, delta
        # the delay mattered: most reads came before the replica had their post, and went to the primary
        assert delta.get(("primary", "position"), 0) >= 500, delta
        # caught up: no write for longer than the delay, every server's monitor sees no lag
        wait_until(lambda: all(cluster.metrics(w)["agora_server_replica_lag_seconds"] == 0 for w in WEBS), 10,
                   what="the replica caught up (as the web servers see it)")
        path = "/api/v1/accounts/%s/posts" % doc["users"][0]
        before2 = reads(cluster)
        tries = cluster.load(path, duration=60, interval=0, count=90).result()
        assert [t[3] for t in tries] == [200] * 90, [t for t in tries if t[3] != 200][:5]
        delta2 = reads_delta(cluster, before2)
        assert delta2 == {("replica", "ok"): 90}, delta2
    finally:
        cluster.psql("ALTER SYSTEM RESET recovery_min_apply_delay", host="db2")
        cluster.psql("SELECT pg_reload_conf()", host="db2")
    report("read-your-writes, replica delayed 300 ms: 1000 post+read tries in %.1f s, 1000 saw their post; "
           "reads by route %s; then 90 reads without a position: %s"
           % (took, {"%s/%s" % k: v for k, v in sorted(delta.items())},
              {"%s/%s" % k: v for k, v in delta2.items()}))


def posts_through_failover(cluster, fault, old, new, timeout):
    """Posts (4 clients x 60, one every 0.2 s each, tried until acknowledged) while fault() takes
    the primary OLD away: NEW is promoted, every post is acknowledged and is on NEW exactly once;
    no try was answered 500; the web servers are the same processes. Returns (seconds from the
    fault to NEW's promotion, the longest time without an acknowledged write, tries by status)."""
    assert cluster.primary() == old
    wait_until(lambda: all_up(cluster), 15, what="web1-web3 up on both balancers")
    servers = {w: cluster.pid(w, "server") for w in WEBS}
    job = cluster.posts(clients=4, count=60, interval=0.2, timeout=timeout, retry_for=90)
    time.sleep(2.0)
    t_fault = time.time()
    fault()
    wait_until(lambda: cluster.primary() == new, WRITES_BACK_S, step=0.2, what="%s promoted" % new)
    promoted = time.time() - t_fault
    doc = job.result(timeout=240)
    posts = doc["posts"]
    assert len(posts) == 240
    acks = sorted(p[6] for p in posts if p[6] is not None)
    assert len([a for a in acks if a < t_fault]) >= 10, "the load had not started before the fault"
    assert [a for a in acks if a >= t_fault], "no write acknowledged after the fault"
    window = [a for a in acks if a >= t_fault - 1.0]
    gap = max(b - a for a, b in zip(window, window[1:]))
    assert gap < WRITES_BACK_S, "no write acknowledged for %.1f s" % gap
    check_exactly_once(cluster, doc, new)
    statuses = Counter(s for p in posts for s in p[7])
    assert 500 not in statuses, statuses
    assert {w: cluster.pid(w, "server") for w in WEBS} == servers, "a web server was restarted"
    return promoted, gap, statuses, doc


def test_primary_host_killed_under_write_load(cluster, report):
    """db1 (the primary) dies under 4 clients' posts with Idempotency-Key: db2 is promoted, the
    web servers (same processes) write there, all 240 posts are acknowledged and each is on db2
    exactly once; no try was answered 500. Reads after go to the primary."""
    promoted, gap, statuses, doc = posts_through_failover(cluster, lambda: cluster.sh("kill", "db1"), "db1", "db2",
                                                          timeout=5.0)
    # db2, the replica, is the primary now: the servers' monitors see no standby there, so reads go
    # to the primary (reason "down") and none to the replica
    wait_until(lambda: all(cluster.metrics(w)["agora_server_replica_up"] == 0 for w in WEBS), 10,
               what="the replica (db2, now primary) no longer used for reads")
    path = "/api/v1/accounts/%s/posts" % doc["users"][0]
    before = reads(cluster)
    tries = cluster.load(path, duration=60, interval=0, count=30).result()
    assert [t[3] for t in tries] == [200] * 30
    delta = reads_delta(cluster, before)
    assert delta == {("primary", "down"): 30}, delta
    # db1 comes back: it rejoins as the standby of db2
    t_start = time.time()
    cluster.sh("start", "db1")
    wait_until(lambda: cluster.db_states() == {"node1": "secondary", "node2": "primary"}, 90, step=0.5,
               what="db1 rejoined as the standby")
    rejoined = time.time() - t_start
    report("primary db1 killed under 4 writers: db2 promoted %.1f s after the kill; longest time without an "
           "acknowledged write %.1f s; 240 posts acknowledged, each exactly once on db2; tries by status %s; "
           "web servers not restarted; reads after: %s; db1 rejoined as standby %.1f s after its start"
           % (promoted, gap, dict(sorted(statuses.items())),
              {"%s/%s" % k: v for k, v in delta.items()}, rejoined))


def test_primary_cable_pulled_under_write_load(cluster, report):
    """db2 (the primary since the previous test) loses its cable under 4 clients' posts: db1 is
    promoted, all 240 posts are acknowledged and each is on db1 exactly once, no 500. Plugged in
    again, db2 rejoins as the standby and reads without a position go to it again."""
    promoted, gap, statuses, doc = posts_through_failover(cluster, lambda: cluster.sh("link", "db2", "down"), "db2",
                                                          "db1", timeout=10.0)
    t_plug = time.time()
    cluster.sh("link", "db2", "up")
    wait_until(lambda: cluster.db_states() == {"node1": "primary", "node2": "secondary"}, 90, step=0.5,
               what="db2 rejoined as the standby")
    rejoined = time.time() - t_plug
    wait_until(lambda: all(cluster.metrics(w)["agora_server_replica_up"] == 1 for w in WEBS), 15,
               what="the replica (db2, a standby again) used for reads")
    path = "/api/v1/accounts/%s/posts" % doc["users"][0]
    before = reads(cluster)
    tries = cluster.load(path, duration=60, interval=0, count=30).result()
    assert [t[3] for t in tries] == [200] * 30
    delta = reads_delta(cluster, before)
    assert delta == {("replica", "ok"): 30}, delta
    report("primary db2's cable pulled under 4 writers: db1 promoted %.1f s after; longest time without an "
           "acknowledged write %.1f s; 240 posts acknowledged, each exactly once on db1; tries by status %s "
           "(0: no answer within the client's 10 s); plugged in again, db2 rejoined as standby after %.1f s and "
           "reads went to it again: %s"
           % (promoted, gap, dict(sorted(statuses.items())), rejoined, {"%s/%s" % k: v for k, v in delta.items()}))
