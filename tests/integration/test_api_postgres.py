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

from helpers import (API_PASSWORD, ApiClient, PgCluster, _listens_on, free_port, sql, start_agora_server,
                     start_process, unique_username, wait_for)

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


SECRET = "Hunter2SeCrEt"


def with_password(url, where="userinfo"):
    """url (postgresql:///db?host=DIR&user=agora, a trust-authenticated cluster) with a password
    that the server ignores but that a careless program would print."""
    if where == "userinfo":
        return url.replace("postgresql:///", "postgresql://agora:%s@/" % SECRET, 1)
    return url + "&password=" + SECRET


def test_a_password_in_the_database_url_is_never_printed(agora_bin, pg_cluster):
    url = pg_cluster.create_database("secret")
    for variant in ("userinfo", "query"):
        server = start_agora_server(agora_bin, with_password(url, variant))
        try:
            api = ApiClient(server.port)
            health = api.get("/health")
            assert health.status == 200 and SECRET not in health.body.decode()
        finally:
            assert server.stop(timeout=10) == 0, server.output()
        assert "listening on" in server.output() and SECRET not in server.output(), server.output()

    first = seed(agora_bin, with_password(url))
    assert first.returncode == 0 and "seeded" in first.stdout, first.stderr
    again = seed(agora_bin, with_password(url))
    assert again.returncode == 1 and "already holds" in again.stderr, again.stderr
    for out in (first, again):
        assert SECRET not in out.stdout + out.stderr, out

    # URLs libpq or agora reject: their error messages quote the URL or a part of it
    for bad in ("postgresql://agora:%s@[::1/db" % SECRET,        # libpq quotes the whole URI
                "postgresql://agora:%s%%zz@/db" % SECRET,         # libpq quotes the bad token
                "pgsql://agora:%s@localhost/db" % SECRET):        # not a scheme agora knows
        for cmd in (["server", "--listen", "127.0.0.1:0"], ["seed", "--users", "1"]):
            out = subprocess.run([str(agora_bin)] + cmd + ["--db", bad], capture_output=True, text=True, timeout=30)
            assert out.returncode != 0, (bad, out)
            assert SECRET not in out.stdout + out.stderr, (bad, out.stdout + out.stderr)


class StallingPgProxy:
    """A TCP proxy in front of PostgreSQL. Mode "pass" forwards both ways; in mode "stall" a new
    connection is forwarded until the server's first ReadyForQuery (the log-in succeeded), after
    which the server's answers are swallowed: a database (or a pooler such as pgbouncer with every
    server connection taken) that accepts and authenticates, then never answers a query."""

    def __init__(self, pg_url):
        import socket
        import threading
        import urllib.parse
        parts = urllib.parse.urlsplit(pg_url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        port = parts.port or int(query.get("port", 5432))
        host = parts.hostname or query.get("host", "/var/run/postgresql")
        self.upstream = ((socket.AF_UNIX, "%s/.s.PGSQL.%d" % (host, port)) if host.startswith("/")
                         else (socket.AF_INET, (host, port)))
        self.mode = "pass"
        self.conns = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.user = parts.username or query.get("user", "agora")
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, dbname):
        return "postgresql://%s@127.0.0.1:%d/%s?sslmode=disable&gssencmode=disable" % (self.user, self.port, dbname)

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(self.upstream[0])
            server.connect(self.upstream[1])
            with self.lock:
                self.conns += [client, server]
            stall = self.mode == "stall"
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, stall), daemon=True).start()

    @staticmethod
    def _pump(src, dst, stall):
        seen = b""  # server to client: messages are a type byte and a length (4 bytes, itself included)
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        s.shutdown(2)
                    except OSError:
                        pass
                return
            if stall and seen is not None:
                seen += data
                at = 0
                while len(seen) - at >= 5:
                    if seen[at:at + 1] == b"Z":
                        end = at + 1 + int.from_bytes(seen[at + 1:at + 5], "big")
                        data = data[:len(data) - (len(seen) - end)]  # up to the ReadyForQuery
                        seen = None
                        break
                    at += 1 + int.from_bytes(seen[at + 1:at + 5], "big")
            elif stall:
                continue  # swallowed
            try:
                dst.sendall(data)
            except OSError:
                return

    def cut_all(self):
        """Closes every connection made so far (their owners see the database go away)."""
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(2)
            except OSError:
                pass

    def close(self):
        self.listener.close()
        self.cut_all()


def test_a_database_that_authenticates_then_never_answers_gives_503_not_a_hang(agora_bin, pg_cluster):
    """A reconnect that logs in but gets no answer to its statements (an overloaded database, a
    pooler waiting for a free server connection) is bounded by the reply timeout (statement_timeout
    5 s + 2 s), not by the 120 s allowed for the schema migrations at start."""
    url = pg_cluster.create_database("stall")
    proxy = StallingPgProxy(url)
    dbname = url.split("?")[0].rsplit("/", 1)[1]
    server = start_agora_server(agora_bin, proxy.url(dbname), extra_args=("--threads", "1", "--hash-threads", "1"))
    try:
        api = ApiClient(server.port, timeout=40.0)
        assert api.get("/api/v1/accounts/nobody").status == 404
        proxy.mode = "stall"
        proxy.cut_all()
        t0 = time.monotonic()
        resp = api.get("/api/v1/accounts/nobody")
        waited = time.monotonic() - t0
        assert resp.status == 503 and resp.headers.get("retry-after"), resp
        assert waited < 12.0, waited
        assert wait_for(lambda: api.get("/health").status == 503, 10.0, 0.2)
        # the database answers again: the same server recovers by itself
        proxy.mode = "pass"
        proxy.cut_all()
        assert wait_for(lambda: api.get("/health").status == 200, 30.0, 0.2)
        assert wait_for(lambda: api.get("/api/v1/accounts/nobody").status == 404, 30.0, 0.2)
    finally:
        proxy.mode = "pass"
        proxy.cut_all()
        status = server.stop(timeout=30)
        proxy.close()
    assert status == 0, server.output()


def test_text_is_stored_as_utf8_whatever_the_environment_says(agora_bin, pg_cluster):
    """PGCLIENTENCODING in a server's environment must not make it store mojibake (another server
    without it would then read other bytes), and a database that cannot hold UTF-8 is refused at
    start with a message rather than failing requests later."""
    import os
    url = pg_cluster.create_database("enc")
    env = dict(os.environ, PGCLIENTENCODING="LATIN1")
    port = free_port()
    server = start_process([agora_bin, "server", "--listen", "127.0.0.1:%d" % port, "--db", url, "--workers", "1"],
                           "agora server: listening on", 15.0, env=env)
    try:
        # the message comes before the socket is bound
        assert wait_for(lambda: server.poll() is not None or _listens_on(server.pid, port), 15.0)
        assert ApiClient(port).get("/health").status == 200, server.output()
        name = unique_username("enc")
        resp = ApiClient(port).post("/api/v1/accounts", {"username": name, "password": API_PASSWORD,
                                                         "display_name": "Zo\u00eb \U0001F600"})
        assert resp.status == 201 and resp.json["display_name"] == "Zo\u00eb \U0001F600", resp
    finally:
        assert server.stop(timeout=10) == 0, server.output()
    assert sql(url, "SELECT length(display_name), octet_length(display_name) FROM accounts WHERE username = ?",
               name) == [(5, 9)]

    latin1 = url.replace("/enc_", "/latin1_", 1)
    dbname = latin1.split("?")[0].rsplit("/", 1)[1]
    sql(url, "CREATE DATABASE %s ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'" % dbname)
    out = subprocess.run([str(agora_bin), "server", "--listen", "127.0.0.1:0", "--db", latin1],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "UTF8" in out.stderr, out.stderr
