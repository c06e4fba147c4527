"""A PostgreSQL cluster a test stops, kills and restarts itself (scripts/pg-temp.sh); for a
database on the session's cluster use conftest's pg_cluster, for SQL agora_test.db.sql.

    PgTemp(dir).start(*settings)        initdb (first time) and start; .url
    PgTemp.stop() / .destroy()          fast shutdown / immediate stop and removal
    PgTemp.kill()                       SIGKILL the postmaster (a crash); returns its pid
    PgTemp.postmaster_pid()             the running postmaster's pid, or None
    pg_bindir()                         the newest /usr/lib/postgresql/*/bin, or None
    backends_gone(dir)                  no process (postmaster, backend) works in dir any more
"""

import glob
import os
import pathlib
import signal
import subprocess

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
PG_TEMP = REPO_ROOT / "scripts" / "pg-temp.sh"


def pg_bindir():
    """The newest installed PostgreSQL's bin directory, or None when there is none."""
    def key(path):
        return [int(p) if p.isdigit() else 0 for p in path.split("/")[-2].split(".")]

    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(d + "/initdb", os.X_OK)]
    return sorted(dirs, key=key)[-1] if dirs else None


class PgTemp:
    """A cluster of scripts/pg-temp.sh in dir (Unix socket there only)."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.url = None

    def _run(self, *args, timeout=120):
        r = subprocess.run(["sh", str(PG_TEMP)] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("pg-temp.sh %s failed (%d): %s%s" % (args[0], r.returncode, r.stdout, r.stderr))
        return r.stdout.strip()

    def start(self, *settings):
        """Starts the cluster (initdb the first time); settings are "name=value" for -c. Returns the URL."""
        args = []
        for s in settings:
            args += ["-c", s]
        self.url = self._run("start", self.dir, *args)
        return self.url

    def stop(self):
        self._run("stop", self.dir)

    def destroy(self):
        self._run("destroy", self.dir)

    def postmaster_pid(self):
        """The pid in postmaster.pid if that process lives, else None."""
        try:
            pid = int((self.dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def kill(self):
        """SIGKILLs the postmaster (its backends notice and exit by themselves). Returns its pid."""
        pid = self.postmaster_pid()
        assert pid is not None, "no postmaster running in %s" % self.dir
        os.kill(pid, signal.SIGKILL)
        return pid


def backends_gone(directory):
    """True when no process runs with a working directory in directory (a postmaster and its
    backends chdir into their PGDATA)."""
    directory = os.path.realpath(str(directory))
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if cwd == directory or cwd.startswith(directory + "/"):
            return False
    return True
