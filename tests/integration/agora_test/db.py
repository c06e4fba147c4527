"""The database a test runs against: SQLite (a file) or PostgreSQL (a URL), chosen by the
environment variable AGORA_TEST_STORE (sqlite, the default, or postgres).

    store_kind()                  "sqlite" or "postgres"
    db_url(db)                    the --db argument for a database: a path → sqlite:PATH, a URL as is
    is_postgres(db)               whether db is a PostgreSQL URL
    PgCluster.start(dir) / .stop  a private cluster (scripts/pg-temp.sh, fsync off), or
    PgCluster.existing(url)       one that runs already (AGORA_TEST_PG)
    PgCluster.private(prefix)     with-block: a private cluster in a fresh /tmp directory, removed after
    PgCluster.installed()         whether PostgreSQL is installed (callers skip their test if not)
    cluster.create_database()     a fresh, empty database on it -> its URL
    sql(db, query, *args)         rows of a query (? placeholders) on either kind, read with a
                                  connection of our own (sqlite3, or psql for PostgreSQL)
"""

import contextlib
import itertools
import os
import pathlib
import shutil
import subprocess
import tempfile
import urllib.parse

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
PG_TEMP = REPO_ROOT / "scripts" / "pg-temp.sh"
_counter = itertools.count(1)


def store_kind():
    kind = os.environ.get("AGORA_TEST_STORE", "sqlite")
    if kind not in ("sqlite", "postgres"):
        raise RuntimeError("AGORA_TEST_STORE must be sqlite or postgres, not %r" % kind)
    return kind


def is_postgres(db):
    return isinstance(db, str) and db.startswith(("postgres://", "postgresql://"))


def db_url(db):
    if isinstance(db, str) and (is_postgres(db) or db.startswith("sqlite:")):
        return db
    return "sqlite:%s" % db


def psql_path():
    found = shutil.which("psql")
    if found:
        return found
    bins = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/psql"))
    if not bins:
        raise RuntimeError("psql not found: is PostgreSQL installed?")
    return str(bins[-1])


def with_database(url, name):
    """The same server URL naming database name instead."""
    parts = urllib.parse.urlsplit(url)
    # not urlunsplit: it drops the empty host of postgresql:///db?host=/dir
    return "%s://%s/%s%s" % (parts.scheme, parts.netloc, name, "?" + parts.query if parts.query else "")


def psql(url, command, timeout=60):
    """Runs one psql command; returns its stdout (unaligned, fields separated by 0x1f)."""
    out = subprocess.run([psql_path(), "-X", "-q", "-A", "-t", "-F", "\x1f", "-v", "ON_ERROR_STOP=1",
                          "-d", url, "-c", command], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("psql %r failed: %s" % (command, out.stderr))
    return out.stdout


class PgCluster:
    def __init__(self, url, directory=None):
        self.url = url
        self.directory = directory

    @classmethod
    def start(cls, directory):
        out = subprocess.run(["sh", str(PG_TEMP), "start", str(directory), "-c", "fsync=off"],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("pg-temp.sh start failed: %s%s" % (out.stdout, out.stderr))
        return cls(out.stdout.strip().splitlines()[-1], directory)

    @classmethod
    def existing(cls, url):
        return cls(url)

    @staticmethod
    def installed():
        """Whether a PostgreSQL server is installed (an initdb under /usr/lib/postgresql)."""
        return bool(list(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb")))

    @classmethod
    @contextlib.contextmanager
    def private(cls, prefix):
        """A cluster of the caller's alone, started (start) in a fresh directory named prefix...
        under /tmp itself (as root the cluster runs as the postgres user, who cannot enter pytest's
        owner-only temporary directories); stopped and removed when the with-block ends."""
        cluster = cls.start(tempfile.mkdtemp(prefix=prefix))
        try:
            yield cluster
        finally:
            cluster.stop()

    def stop(self):
        if self.directory is not None:
            subprocess.run(["sh", str(PG_TEMP), "destroy", str(self.directory)], capture_output=True, timeout=120)
            # pg-temp.sh destroy stops early when the postmaster was killed (a test does that)
            shutil.rmtree(str(self.directory), ignore_errors=True)

    def create_database(self, prefix="t"):
        name = "%s_%d_%d" % (prefix, os.getpid(), next(_counter))
        psql(self.url, "CREATE DATABASE %s" % name)
        return with_database(self.url, name)


def _literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return "'\\x%s'::bytea" % value.hex()
    return "'%s'" % str(value).replace("'", "''")


def _value(text):
    try:
        return int(text)
    except ValueError:
        return text


def sql(db, query, *args):
    """Rows of query (with ? placeholders for args) as a list of tuples; integers come back as
    int. Writes are committed."""
    if is_postgres(db):
        parts = query.split("?")
        if len(parts) != len(args) + 1:
            raise ValueError("%d placeholders for %d arguments" % (len(parts) - 1, len(args)))
        text = parts[0] + "".join(_literal(a) + p for a, p in zip(args, parts[1:]))
        out = psql(db, text)
        return [tuple(_value(v) for v in line.split("\x1f")) for line in out.splitlines() if line != ""]
    import sqlite3
    con = sqlite3.connect(str(db), timeout=10)
    try:
        rows = con.execute(query, args).fetchall()
        con.commit()
        return rows
    finally:
        con.close()
