"""agora server and agora seed on PostgreSQL (issue 11, item 2): what only PostgreSQL has.

- `agora seed --db postgres://...` loads the same graph as on SQLite (same counts), refuses a
  non-empty database, and with --force loads again with ids that no longer start at 1 (the store
  hands them out), after which the API serves the seeded accounts.
- The database server is killed (SIGKILL of the postmaster) under a running `agora server`:
  requests answer 503 with Retry-After promptly (no hang, no 500), /health reports the outage,
  and after PostgreSQL is started again the same server recovers by itself with every
  acknowledged post kept.
The API suites themselves run on PostgreSQL with AGORA_TEST_STORE=postgres (conftest.py).
"""

import re
import subprocess
import time

import pytest

from helpers import API_PASSWORD, ApiClient, PgCluster, sql, start_agora_server, unique_username, wait_for

SEED_LINE = re.compile(r"(\d+) accounts .* (\d+) follows .* (\d+) posts \((\d+) fanned out on write\), "
                       r"(\d+) home-timeline rows")


def seed(agora_bin, db, *args):
    return subprocess.run([str(agora_bin), "seed", "--db", db, "--users", "60", "--posts-per-user", "2"] + list(args),
                          capture_output=True, text=True, timeout=120)


def test_seed_on_postgres_matches_sqlite_and_ids_come_from_the_store(agora_bin, pg_cluster, tmp_path):
    lite = seed(agora_bin, "sqlite:%s" % (tmp_path / "s.db"))
    assert lite.returncode == 0, lite.stderr
    url = pg_cluster.create_database("seed")
    pg = seed(agora_bin, url)
    assert pg.returncode == 0, pg.stderr
    assert SEED_LINE.search(pg.stdout).groups() == SEED_LINE.search(lite.stdout).groups(), (pg.stdout, lite.stdout)
    assert sql(url, "SELECT min(id), max(id), count(*) FROM accounts") == [(1, 60, 60)]

    again = seed(agora_bin, url)
    assert again.returncode == 1 and "already holds 60 accounts" in again.stderr, again.stderr

    forced = seed(agora_bin, url, "--force")
    assert forced.returncode == 0, forced.stderr
    assert SEED_LINE.search(forced.stdout).groups() == SEED_LINE.search(lite.stdout).groups()
    [(first, last, count)] = sql(url, "SELECT min(id), max(id), count(*) FROM accounts")
    assert first > 60 and last - first == 59 and count == 60  # not 1..60 again: the sequence goes on
    # counters and follows name the new ids
    assert sql(url, "SELECT count(*) FROM follows WHERE follower < ? OR followee < ?", first, first) == [(0,)]
    assert sql(url, "SELECT count(*) FROM accounts a WHERE followers_count <> "
                    "(SELECT count(*) FROM follows WHERE followee = a.id)") == [(0,)]

    server = start_agora_server(agora_bin, url)
    try:
        api = ApiClient(server.port)
        resp = api.post("/api/v1/sessions", {"username": "user7", "password": "password123"})
        assert resp.status == 200, resp
        me = api.as_user(resp.json["token"])
        home = me.get("/api/v1/timelines/home?limit=5")
        assert home.status == 200 and len(home.json) == 5, home
        assert me.get("/api/v1/accounts/user7").json["id"] == str(first + 6)
    finally:
        assert server.stop(timeout=10) == 0, server.output()


@pytest.fixture
def own_pg():
    """A PostgreSQL cluster of this test alone (it gets killed)."""
    if not PgCluster.installed():
        pytest.skip("PostgreSQL is not installed")
    with PgCluster.private("agora-pgkill-") as cluster:
        yield cluster


def postmaster_pid(cluster):
    with open("%s/data/postmaster.pid" % cluster.directory) as f:
        return int(f.readline())


def test_a_killed_database_gives_503_promptly_and_the_server_recovers(agora_bin, own_pg):
    url = own_pg.create_database("outage")
    server = start_agora_server(agora_bin, url, extra_args=("--signup-limit", "off"))
    try:
        api = ApiClient(server.port)
        username = unique_username("out")
        assert api.post("/api/v1/accounts", {"username": username, "password": API_PASSWORD}).status == 201
        token = api.post("/api/v1/sessions", {"username": username, "password": API_PASSWORD}).json["token"]
        me = api.as_user(token)
        acked = [me.post("/api/v1/posts", {"text": "before %d" % i}).json["id"] for i in range(5)]

        subprocess.run(["kill", "-KILL", str(postmaster_pid(own_pg))], check=True)
        # the backends exit when they notice their postmaster's death, within moments
        killed = time.monotonic()
        assert wait_for(lambda: me.get("/api/v1/timelines/home").status == 503, 5.0, 0.05)
        print("first 503 after %.2f s" % (time.monotonic() - killed))
        for _ in range(6):
            t0 = time.monotonic()
            for resp in (me.get("/api/v1/timelines/home"), me.post("/api/v1/posts", {"text": "during"})):
                assert resp.status == 503, resp
                assert resp.headers.get("retry-after") == "1", resp.headers
                assert "internal" not in resp.body.decode(), resp
            assert time.monotonic() - t0 < 8.0
        assert wait_for(lambda: api.get("/health").status == 503, 15.0, 0.2)

        # start it again: the same server recovers by itself (wait until the old backends are gone)
        restarted = None
        for _ in range(20):
            out = subprocess.run(["sh", "scripts/pg-temp.sh", "start", own_pg.directory, "-c", "fsync=off"],
                                 capture_output=True, text=True, timeout=120)
            if out.returncode == 0:
                restarted = out
                break
            time.sleep(1)
        assert restarted is not None
        assert wait_for(lambda: api.get("/health").status == 200, 15.0, 0.2)
        assert wait_for(lambda: me.get("/api/v1/timelines/home").status == 200, 10.0, 0.1)
        resp = me.post("/api/v1/posts", {"text": "after"})
        assert resp.status == 201, resp
        listed = [p["id"] for p in me.get("/api/v1/accounts/%s/posts?limit=50" % username).json]
        assert listed == [resp.json["id"]] + acked[::-1]
    finally:
        status = server.stop(timeout=10)
    assert status == 0, server.output()
