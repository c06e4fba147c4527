"""`agora up` with PostgreSQL (issue 11 item 5): --postgres runs a private cluster in DATA/postgres
(initdb on the first run, reused after, restarted when it dies, stopped last and completely), and
--db URL runs the servers on an existing PostgreSQL. Each run's data directory is made under /tmp
itself: as root, PostgreSQL runs as the postgres user, which cannot pass pytest's 0700 base
directory (agora up refuses such a directory with a clear message, tested below too)."""

import os
import pathlib
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from agora_test.api import API_PASSWORD, ApiClient, unique_username
from agora_test.db import sql
from agora_test.pgtemp import backends_gone, pg_bindir
from agora_test.processes import LOCALHOST, accepts, start_process, up_port_run, wait_for

pytestmark = pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL is not installed")


@pytest.fixture
def data_dir():
    """A fresh data directory's path (not created) under a directory of /tmp, removed at the end."""
    top = tempfile.mkdtemp(prefix="agora-up-pg-")
    os.chmod(top, 0o755)
    try:
        yield pathlib.Path(top) / "data"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def start_up(agora_bin, data, *flags, env=None):
    base = up_port_run(2)
    up = start_process([agora_bin, "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", data, "--servers", "2",
                        "--lb-workers", "1"] + list(flags), ready_text="agora is up", timeout=90, env=env)
    up.port = base
    api = ApiClient(base, timeout=10)
    # "agora is up" comes once the balancer listens: wait until a server answers through it.
    assert wait_for(lambda: api_answers(api), 30.0, 0.2), up.output()
    return up, api


def api_answers(api):
    try:
        return api.get("/api/v1/accounts/nobody").status == 404
    except OSError:
        return False


def stop_up(up):
    """SIGTERM to `agora up`; its exit status (or None if it had to be killed)."""
    up.popen.send_signal(signal.SIGTERM)
    try:
        return up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        up.stop()
        return None


def sign_up_and_post(api, text):
    """A new account, logged in, with one post: (username, token, post)."""
    name = unique_username("pg")
    r = api.post("/api/v1/accounts", {"username": name, "password": API_PASSWORD})
    assert r.status == 201, r
    token = log_in(api, name)
    r = api.as_user(token).post("/api/v1/posts", {"text": text})
    assert r.status == 201, r
    return name, token, r.json


def log_in(api, name):
    r = api.post("/api/v1/sessions", {"username": name, "password": API_PASSWORD})
    assert r.status == 200, r
    return r.json["token"]


def home_ids(api, token):
    r = api.as_user(token).get("/api/v1/timelines/home")
    assert r.status == 200, r
    return [p["id"] for p in r.json]


def postmaster_pid(pgdata):
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def test_up_postgres_serves_survives_restarts_and_stops_clean(agora_bin, data_dir):
    pgdata = data_dir / "postgres"
    url = "postgresql:///agora?host=%s&user=agora" % pgdata
    up, api = start_up(agora_bin, data_dir, "--postgres")
    try:
        out = up.output()
        assert "created (initdb) a PostgreSQL cluster in %s" % pgdata in out, out
        assert "database: %s  (PostgreSQL run by agora up)" % url in out, out
        # The cluster: the postgres user's (agora up runs as root here), durable settings, no TCP.
        pid = postmaster_pid(pgdata)
        assert pid is not None
        if os.geteuid() == 0:
            assert os.stat("/proc/%d" % pid).st_uid == pwd_uid("postgres")
            assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o710
        assert stat.S_IMODE(os.stat(pgdata).st_mode) == 0o700
        settings = dict(sql(url, "SELECT name, setting FROM pg_settings WHERE name IN "
                                 "('fsync', 'synchronous_commit', 'listen_addresses', 'full_page_writes', "
                                 "'unix_socket_directories', 'max_connections')"))
        assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
                            "listen_addresses": "", "unix_socket_directories": str(pgdata),
                            "max_connections": 200}, settings
        assert sql(url, "SELECT current_user, current_database()") == [("agora", "agora")]
        # The API through the balancer.
        name, token, post = sign_up_and_post(api, "first run")
        assert home_ids(api, token) == [post["id"]]
    finally:
        status = stop_up(up)
    assert status == 0, up.output()
    out = up.output()
    assert "stopping PostgreSQL (fast shutdown)" in out and out.rstrip().endswith("agora up: stopped"), out
    assert backends_gone(pgdata)  # neither the postmaster nor any backend is left
    assert not (pgdata / ".s.PGSQL.5432").exists() and not (pgdata / "postmaster.pid").exists()

    # The second run reuses the cluster (no initdb) and finds the data of the first.
    up, api = start_up(agora_bin, data_dir, "--postgres")
    try:
        out = up.output()
        assert "using the PostgreSQL cluster in %s" % pgdata in out and "initdb" not in out, out
        token = log_in(api, name)
        assert home_ids(api, token) == [post["id"]]
        r = api.get("/api/v1/posts/%s" % post["id"])
        assert r.status == 200 and r.json["text"] == "first run", r

        # kill -9 of the postmaster: agora up restarts it, and the servers recover by themselves.
        old = postmaster_pid(pgdata)
        os.kill(old, signal.SIGKILL)
        assert up.wait_for_output("postgres (pid %d) killed by signal 9; restarting" % old, 10.0), up.output()
        assert wait_for(lambda: postmaster_pid(pgdata) not in (None, old), 30.0, 0.1), up.output()
        user = api.as_user(token)

        def posted():
            try:
                r = user.post("/api/v1/posts", {"text": "after the crash"})
            except OSError:
                return None
            return r.json if r.status == 201 else None

        again = wait_for(posted, 45.0, 0.5)
        assert again, up.output()
        assert home_ids(api, token) == [again["id"], post["id"]]
        assert up.poll() is None
    finally:
        status = stop_up(up)
    assert status == 0, up.output()
    assert backends_gone(pgdata)


def pwd_uid(name):
    import pwd

    return pwd.getpwnam(name).pw_uid


def test_up_db_url_runs_the_servers_on_an_existing_postgres(agora_bin, data_dir, pg_cluster):
    url = pg_cluster.create_database("up_db")
    dbname = url.split("?")[0].rsplit("/", 1)[1]
    up, api = start_up(agora_bin, data_dir, "--db", url)
    try:
        assert "database: %s\n" % url in up.output(), up.output()
        name, token, post = sign_up_and_post(api, "on an existing cluster")
        assert home_ids(api, token) == [post["id"]]
        # The servers hold connections to that database, and agora up made no cluster of its own.
        conns = sql(pg_cluster.url, "SELECT count(*) FROM pg_stat_activity WHERE datname = ?", dbname)
        assert conns[0][0] >= 2, conns
        assert not (data_dir / "postgres").exists()
    finally:
        status = stop_up(up)
    assert status == 0, up.output()
    assert wait_for(lambda: sql(pg_cluster.url, "SELECT count(*) FROM pg_stat_activity WHERE datname = ?",
                                dbname) == [(0,)], 10.0, 0.2)


def test_up_db_url_not_answering_fails_clearly(agora_bin, data_dir):
    missing = tempfile.mkdtemp(prefix="agora-nopg-")  # an empty socket directory: nobody listens
    try:
        base = up_port_run(2)
        url = "postgresql:///agora?host=%s&user=agora" % missing
        t0 = time.monotonic()
        r = subprocess.run([str(agora_bin), "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", str(data_dir),
                            "--db", url, "--db-wait", "1500ms"], capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert r.returncode == 1, r
        assert "agora up: the database %s: no answer from the server after 1500 ms" % url in r.stderr, r.stderr
        assert 1.5 <= took < 20
        assert not accepts(base) and not accepts(base + 1)  # nothing was started
    finally:
        os.rmdir(missing)


def test_up_redacts_the_password_of_a_db_url(agora_bin, data_dir):
    base = up_port_run(2)
    r = subprocess.run([str(agora_bin), "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", str(data_dir),
                        "--db", "postgres://agora:s3cret@127.0.0.1:1/agora?connect_timeout=1", "--db-wait", "1s"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r
    assert "postgres://agora:***@127.0.0.1:1/agora" in r.stderr and "s3cret" not in r.stdout + r.stderr, r


def test_up_postgres_and_db_exclude_each_other(agora_bin, data_dir):
    r = subprocess.run([str(agora_bin), "up", "--data", str(data_dir), "--postgres", "--db", "sqlite:x.db"],
                       capture_output=True, text=True, timeout=20)
    assert (r.returncode, r.stderr.strip().splitlines()[-1]) == (2, "agora up: --db and --postgres exclude each other")


def test_up_postgres_not_installed(agora_bin, data_dir):
    empty = tempfile.mkdtemp(prefix="agora-nopg-")
    try:
        env = dict(os.environ, AGORA_PG_LIB=empty)
        r = subprocess.run([str(agora_bin), "up", "--listen", "%s:%d" % (LOCALHOST, up_port_run(3)),
                            "--data", str(data_dir), "--postgres"], capture_output=True, text=True, timeout=20,
                           env=env)
        assert r.returncode == 1, r
        assert ("agora up: PostgreSQL is not installed: no %s/VERSION/bin with initdb and postgres (install "
                "Debian's postgresql package: apt-get install postgresql)" % empty) in r.stderr, r.stderr
        assert not (data_dir / "postgres").exists()
    finally:
        os.rmdir(empty)


def test_up_postgres_takes_the_newest_version_and_reports_initdb_failure(agora_bin, data_dir):
    fake = tempfile.mkdtemp(prefix="agora-fakepg-")
    os.chmod(fake, 0o755)
    try:
        for version in ("9.6", "15", "11"):
            bindir = pathlib.Path(fake) / version / "bin"
            bindir.mkdir(parents=True)
            for prog in ("initdb", "postgres"):
                (bindir / prog).write_text("#!/bin/sh\necho \"fake %s of %s\"\nexit 3\n" % (prog, version))
                (bindir / prog).chmod(0o755)
        env = dict(os.environ, AGORA_PG_LIB=fake)
        r = subprocess.run([str(agora_bin), "up", "--listen", "%s:%d" % (LOCALHOST, up_port_run(3)),
                            "--data", str(data_dir), "--postgres"], capture_output=True, text=True, timeout=20,
                           env=env)
        assert r.returncode == 1, r
        assert "agora up: initdb failed (exit status 3); its output is in %s/postgres.log" % data_dir in r.stderr, r
        assert "fake initdb of 15" in r.stderr and "of 11" not in r.stderr and "of 9.6" not in r.stderr, r.stderr
    finally:
        shutil.rmtree(fake)


def test_up_postgres_refuses_a_data_dir_the_postgres_user_cannot_reach(agora_bin):
    if os.geteuid() != 0:
        pytest.skip("only as root does PostgreSQL run as another user")
    top = tempfile.mkdtemp(prefix="agora-closed-")  # 0700, root's: as /root is
    try:
        r = subprocess.run([str(agora_bin), "up", "--data", top + "/data", "--postgres"], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 1, r
        assert ("PostgreSQL runs as the postgres user, which cannot reach %s/data/postgres" % top) in r.stderr, r
    finally:
        shutil.rmtree(top)
