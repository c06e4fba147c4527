"""A PostgreSQL pair that survives its primary (scripts/pg-failover.sh: pg_auto_failover, a monitor
and two data nodes node1 and node2, synchronous replication), for tests that switch or kill the
primary. The nodes listen on TCP (127.0.0.1 and free ports unless told otherwise) with
scram-sha-256; .url is the multi-host URL agora's servers take.

    PgFailover.installed()               whether pg_autoctl is installed (callers skip if not)
    PgFailover.up(dir, fast=True, ...)   create and start it -> PgFailover (.url, .dir)
    PgFailover.private(prefix, ...)      with-block: in a fresh directory under /tmp, down after
    .states()                            {node: (reported state, assigned state)}, from the monitor
    .primary() / .standby()              the settled primary / secondary's name, or None
    .wait_states(want, timeout)          until every node of want ({node: state}) is settled there
    .failover()                          a planned switchover (pg_autoctl perform failover)
    .kill(node)                          SIGKILL the node's pg_autoctl, PostgreSQL and backends: the
                                         host is gone as far as the others can tell
    .kill_postmaster(node)               SIGKILL its postmaster only (its pg_autoctl restarts it)
    .start(node)                         start its pg_autoctl again (an old primary rejoins as standby)
    .node_url(node)                      agora's URL of that node alone (read-only on a standby)
    .down()                              stop everything and remove the directory
"""

import contextlib
import glob
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
PG_FAILOVER = REPO_ROOT / "scripts" / "pg-failover.sh"


class PgFailover:
    NODES = ("node1", "node2")

    def __init__(self, directory, url):
        self.dir = pathlib.Path(directory)
        self.url = url
        self.env = self._read_env()

    @staticmethod
    def installed():
        """Whether pg_autoctl (Debian's postgresql-15-auto-failover) and a PostgreSQL server are there."""
        found = shutil.which("pg_autoctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_autoctl")
        return bool(found) and bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))

    @staticmethod
    def _script(*args, timeout=180):
        r = subprocess.run(["sh", str(PG_FAILOVER)] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("pg-failover.sh %s failed (%d): %s%s" % (args[0], r.returncode, r.stdout, r.stderr))
        return r.stdout.strip()

    @classmethod
    def up(cls, directory, fast=True, settings=("fsync=off",), options=()):
        """Creates and starts the pair in directory (fast: failures detected in about a second;
        settings: PostgreSQL settings of the data nodes, fsync=off by default: only processes die
        in tests, not the machine; options: more pg-failover.sh up options)."""
        args = ["up", directory] + (["--fast"] if fast else [])
        for s in settings:
            args += ["-c", s]
        url = cls._script(*(args + list(options))).splitlines()[-1]
        return cls(directory, url)

    @classmethod
    @contextlib.contextmanager
    def private(cls, prefix, **kw):
        """A pair of the caller's alone in a fresh directory named prefix... under /tmp itself (as
        root it runs as the postgres user, who cannot enter pytest's owner-only directories);
        down (everything stopped, the directory removed) when the with-block ends."""
        directory = tempfile.mkdtemp(prefix=prefix)
        pair = None
        try:
            pair = cls.up(directory, **kw)
            yield pair
        finally:
            if pair is not None:
                pair.down()
            else:
                subprocess.run(["sh", str(PG_FAILOVER), "down", directory], capture_output=True, timeout=180)
                shutil.rmtree(directory, ignore_errors=True)

    def _read_env(self):
        env = {}
        for line in (self.dir / "cluster.env").read_text().splitlines():
            key, _, value = line.partition("=")
            words = shlex.split(value)
            env[key] = words[0] if words else ""
        return env

    def address(self, part):
        """(address, port) of monitor, node1 or node2."""
        return self.env["addr_" + part], int(self.env["port_" + part])

    def node_url(self, node):
        password = (self.dir / "agora.password").read_text().strip()
        host, port = self.address(node)
        return "postgresql://agora:%s@%s:%d/agora?connect_timeout=2" % (password, host, port)

    def states(self):
        out = self._script("status", self.dir, "--json", timeout=30)
        return {n["nodename"]: (n["current_group_state"], n["assigned_group_state"]) for n in json.loads(out)}

    def _settled(self, state):
        for node, (reported, assigned) in self.states().items():
            if reported == assigned == state:
                return node
        return None

    def primary(self):
        return self._settled("primary")

    def standby(self):
        return self._settled("secondary")

    def wait_states(self, want, timeout=60.0):
        """Waits until each node of want ({node: state}) reports the state the monitor assigned it.
        Returns the last states seen; raises AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.states()
            except (RuntimeError, ValueError, subprocess.TimeoutExpired):
                got = {}
            if all(got.get(n) == (s, s) for n, s in want.items()):
                return got
            if time.monotonic() >= deadline:
                raise AssertionError("waited %.0f s for %r; the monitor says %r" % (timeout, want, got))
            time.sleep(0.2)

    def failover(self):
        """A planned switchover; returns pg-failover.sh's line "primary: A -> B". The monitor
        refuses one while it holds the standby for unhealthy (a busy machine can make it think
        so for a moment): then, once both nodes are settled again, it is asked once more."""
        try:
            return self._script("failover", self.dir, timeout=120)
        except RuntimeError as e:
            print("failover refused, asking again once the pair is settled: %s" % e)
            deadline = time.monotonic() + 60
            while not (self.primary() and self.standby()) and time.monotonic() < deadline:
                time.sleep(0.2)
            return self._script("failover", self.dir, timeout=120)

    def kill(self, node):
        self._script("kill", self.dir, node, timeout=30)

    def postmaster_pid(self, node):
        try:
            pid = int((self.dir / node / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def kill_postmaster(self, node):
        pid = self.postmaster_pid(node)
        assert pid is not None, "no postmaster running for %s" % node
        os.kill(pid, signal.SIGKILL)
        return pid

    def start(self, node):
        self._script("start", self.dir, node, timeout=120)

    def down(self):
        self._script("down", self.dir, timeout=180)
