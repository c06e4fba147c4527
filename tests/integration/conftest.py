"""pytest fixtures shared by agora's integration tests. Reusable helpers live in the agora_test package
(one module per concern), re-exported by helpers.py."""

import pathlib

import pytest

from helpers import agora_binary, backend_url, start_lb, start_testbackend, wait_health_checked

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir():
    """The build output directory (repo_root/build), where `make build` puts the binaries."""
    return REPO_ROOT / "build"


# ---------------------------------------------------------------- agora lb (test_lb_*.py)

@pytest.fixture(scope="session")
def agora_bin(build_dir):
    """The agora binary under test: $AGORA_BIN if set, else build/agora (`make build`)."""
    path = agora_binary(build_dir)
    if not path.exists():
        pytest.fail("%s is missing: run `make build` or set AGORA_BIN" % path)
    return path


@pytest.fixture
def testbackend_factory(build_dir):
    """start(name, *args, port=0) starts build/testbackend (X-Backend: name) -> Process with
    .port. Every backend started is stopped at teardown, also when the test failed."""
    if not (build_dir / "testbackend").exists():
        pytest.fail("%s is missing: run `make build`" % (build_dir / "testbackend"))
    started = []

    def start(name=None, *args, port=0):
        proc = start_testbackend(build_dir, *args, name=name, port=port)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def lb_factory(agora_bin):
    """start(backends, *flags, workers=1, health_interval="200ms", wait_checked=True) starts
    `agora lb` in front of backends (testbackend Processes, ports, or (backend, weight) pairs;
    None: no --backend flag, e.g. with --config) -> Process with .port. wait_checked waits for
    the first health check of every server, which decides its state. The admin API is off and
    so is slow start (every server gets its full weight at once, so distributions are exact);
    flags given later override these. At teardown each balancer gets SIGTERM and must exit with
    status 0 (a crash fails the test); set proc.expect_status to another value (or None: any)
    when a test ends it differently."""
    started = []

    def start(backends, *flags, workers=1, health_interval="200ms", wait_checked=True):
        args = ["--admin-listen", "off", "--slow-start", "0"]
        for b in backends or ():
            args += ["--backend", backend_url(*b) if isinstance(b, tuple) else backend_url(b)]
        if workers is not None:
            args += ["--workers", workers]
        if health_interval is not None:
            args += ["--health-interval", health_interval]
        proc = start_lb(agora_bin, args + list(flags))
        proc.expect_status = 0
        started.append(proc)
        if wait_checked:
            wait_health_checked(proc.port)
        return proc

    failures = []
    try:
        yield start
    finally:
        for proc in started:
            status = proc.stop(timeout=10.0)
            if proc.expect_status is not None and status != proc.expect_status:
                failures.append("agora lb exited with %r (expected %r); output:\n%s"
                                % (status, proc.expect_status, proc.output()))
    if failures:
        pytest.fail("\n".join(failures))


# ---------------------------------------------------------------- agora server (test_ft_*.py)

@pytest.fixture
def agora_server_factory(agora_bin):
    """start(port, db_path, workers=1) starts `agora server --listen 127.0.0.1:PORT --db
    sqlite:DB_PATH --workers N` (db_path may also be a postgres:// URL: store_db) and waits until it listens -> Process with .port. Every server
    started is stopped at teardown (SIGTERM, then SIGKILL), also when the test failed."""
    from helpers import LOCALHOST, accepts, db_url, start_process, wait_for

    started = []

    def start(port, db_path, workers=1):
        proc = start_process([agora_bin, "server", "--listen", "%s:%d" % (LOCALHOST, port),
                              "--db", db_url(db_path), "--workers", workers],
                             "agora server: listening on", timeout=15.0)
        started.append(proc)
        proc.port = port
        proc.name = "%s:%d" % (LOCALHOST, port)
        # The message comes before the socket is bound: wait for the port too.
        if not wait_for(lambda: proc.poll() is not None or accepts(port), 10.0) or proc.poll() is not None:
            raise RuntimeError("agora server on port %d did not start; output:\n%s" % (port, proc.output()))
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop(timeout=10.0)


# ---------------------------------------------------------------- JSON API (test_api_*.py)

# ---------------------------------------------------------------- the database (agora_test/db.py)
# AGORA_TEST_STORE=postgres runs the API suites on PostgreSQL: a private cluster for the session
# (scripts/pg-temp.sh, fsync off, destroyed at the end), or the one AGORA_TEST_PG names; each
# cluster of servers gets a database of its own (CREATE DATABASE).

@pytest.fixture(scope="session")
def pg_cluster():
    """The PostgreSQL cluster of the session (agora_test.db.PgCluster): AGORA_TEST_PG's, or one
    started on first use; skips the test when PostgreSQL is not installed."""
    import os

    from helpers import PgCluster

    if os.environ.get("AGORA_TEST_PG"):
        yield PgCluster.existing(os.environ["AGORA_TEST_PG"])
        return
    if not PgCluster.installed():
        pytest.skip("PostgreSQL is not installed (make deps-test)")
    with PgCluster.private("agora-pg-") as cluster:
        yield cluster


@pytest.fixture
def store_db(request, tmp_path):
    """The database of one test: tmp_path/agora.db, or with AGORA_TEST_STORE=postgres the URL of
    a fresh PostgreSQL database. Pass it to agora_server_factory or agora_test.db.sql."""
    from helpers import store_kind

    if store_kind() == "postgres":
        return request.getfixturevalue("pg_cluster").create_database()
    return tmp_path / "agora.db"


@pytest.fixture(scope="session")
def pg_standby(pg_cluster):
    """With AGORA_TEST_REPLICA=1 (and AGORA_TEST_STORE=postgres): a streaming hot standby of the
    session's cluster (scripts/pg-temp.sh start-standby; the cluster must be a pg-temp.sh one, its
    socket directory in the URL), whose URL api_cluster's servers get as --db-replica; and every
    ApiClient sends back the newest Agora-Position (agora_test.api.Positions). None otherwise."""
    import os
    import subprocess
    import tempfile
    import urllib.parse

    from agora_test.api import Positions
    from agora_test.db import PG_TEMP
    from agora_test.pgtemp import PgTemp

    if os.environ.get("AGORA_TEST_REPLICA") != "1":
        yield None
        return
    primary = urllib.parse.parse_qs(urllib.parse.urlsplit(pg_cluster.url).query)["host"][0]
    standby = PgTemp(tempfile.mkdtemp(prefix="agora-standby-"))
    try:
        out = subprocess.run(["sh", str(PG_TEMP), "start-standby", str(standby.dir), primary, "-c", "fsync=off"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        standby.url = out.stdout.strip().splitlines()[-1]
        Positions.on = True
        yield standby
    finally:
        Positions.on = False
        standby.destroy()


@pytest.fixture(scope="module")
def api_cluster(agora_bin, tmp_path_factory, request):
    """One database (SQLite file, or with AGORA_TEST_STORE=postgres a fresh PostgreSQL
    database), three `agora server --workers 1` on it and `agora lb` in front (see
    helpers.AgoraCluster), shared by the tests of a module: tests keep to their own accounts
    (unique usernames) so they do not depend on each other's data. With AGORA_TEST_REPLICA=1 the
    servers read from a standby (pg_standby). At teardown every process gets SIGTERM and must exit
    with status 0."""
    from agora_test.db import psql, with_database
    from helpers import AgoraCluster, store_kind, wait_for

    db = request.getfixturevalue("pg_cluster").create_database() if store_kind() == "postgres" else None
    args = AgoraCluster.SERVER_ARGS
    standby = request.getfixturevalue("pg_standby") if db is not None else None
    if standby is not None:
        name = db.split("?")[0].rsplit("/", 1)[1]
        assert wait_for(lambda: psql(with_database(standby.url, "postgres"), "SELECT count(*) FROM pg_database "
                                     "WHERE datname = '%s'" % name).strip() == "1", 15.0, 0.05)
        args = args + ("--db-replica", with_database(standby.url, name))
    cluster = AgoraCluster.start(agora_bin, tmp_path_factory.mktemp("api"), db=db, server_args=args)
    try:
        yield cluster
    finally:
        complaints = cluster.stop()
    if standby is not None:  # the replica did answer reads: its own statistics count table scans there
        scans = psql(with_database(standby.url, name), "SELECT coalesce(sum(coalesce(seq_scan, 0) + "
                     "coalesce(idx_scan, 0)), 0) FROM pg_stat_user_tables").strip()
        print("replica: %s table scans on the standby" % scans)
        if int(scans) == 0:
            complaints.append("no read reached the replica")
    if complaints:
        pytest.fail("\n".join(complaints))


@pytest.fixture(scope="module")
def api(api_cluster):
    """An anonymous ApiClient talking to the balancer of api_cluster."""
    return api_cluster.api

