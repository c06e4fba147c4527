"""A namespace cluster (scripts/cluster.sh) driven from a test: bring it up, act on its hosts,
run the client host's requests (netclient.py), and check that `down` left nothing behind."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "cluster.sh"
PG_FAILOVER = REPO_ROOT / "scripts" / "pg-failover.sh"
NETCLIENT = pathlib.Path(__file__).resolve().parent / "netclient.py"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def wait_until(fn, timeout, step=0.1, what="condition"):
    """Calls fn until it returns a true value (returned) or timeout seconds pass (AssertionError)."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() >= end:
            raise AssertionError("%s not reached within %.1f s" % (what, timeout))
        time.sleep(step)


class Load:
    """A netclient.py load running on the client host; result() waits and parses its tries."""

    def __init__(self, cluster, proc, stop_file):
        self.cluster, self.proc, self.stop_file = cluster, proc, stop_file

    def stop(self):
        pathlib.Path(self.stop_file).touch()

    def result(self, timeout=60):
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, "netclient failed: %s" % err.decode()
        return json.loads(out)["tries"]


class Job:
    """A netclient.py run on the client host; result() waits and parses its JSON document."""

    def __init__(self, proc):
        self.proc = proc

    def result(self, timeout=120):
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, "netclient failed: %s" % err.decode()
        return json.loads(out)


class Cluster:
    def __init__(self, name, agora_bin):
        self.name = name
        self.agora_bin = str(agora_bin)
        self.dir = "/tmp/agora-cluster-" + name
        self.facts = {}

    # ---- cluster.sh ----
    def sh(self, *args, check=True, timeout=120, env=None):
        env_more = env
        # fsync off: only processes die in these tests, never the machine; synchronous_commit stays
        # on (the pair's synchronous replication: an acknowledged write is on both nodes). The
        # tests sign up more accounts from the client host than the default 5 per 10 minutes.
        env = dict(os.environ, AGORA_CLUSTER_PG_OPTS="-c fsync=off", AGORA_CLUSTER_SERVER_OPTS="--signup-limit off")
        env.update(env_more or {})
        r = subprocess.run(["sh", str(SCRIPT), "--name", self.name, "--bin", self.agora_bin, *args],
                           capture_output=True, text=True, timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise AssertionError("cluster.sh %s: exit %d\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def up(self):
        self.sh("up")
        self.up_time = time.time()
        self.refresh()

    def refresh(self):
        self.facts = dict(line.split("=", 1) for line in self.sh("env").stdout.splitlines())

    def addr(self, host):
        return self.facts["HOST_" + host].split()[1]

    def ns(self, host):
        return "%s-%s" % (self.name, host)

    @property
    def vip_url(self):
        return "http://%s:%s" % (self.facts["VIP"], self.facts["LB_PORT"])

    def web_url(self, host):
        return "http://%s:%s" % (self.addr(host), self.facts["WEB_PORT"])

    def admin_addr(self, lb):
        return "%s:%s" % (self.addr(lb), self.facts["ADMIN_PORT"])

    # ---- hosts ----
    def exec(self, host, *cmd, check=True, timeout=30):
        r = subprocess.run(["ip", "netns", "exec", self.ns(host), *cmd], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s on %s: exit %d\n%s%s" % (cmd, host, r.returncode, r.stdout, r.stderr))
        return r

    def pid(self, host, svc):
        return int(pathlib.Path(self.dir, "run", "%s.%s.pid" % (host, svc)).read_text().strip())

    def kill(self, host, svc, sig=signal.SIGKILL):
        """Crashes HOST's SVC (no goodbye: SIGKILL by default) and waits until it is gone."""
        pid = self.pid(host, svc)
        os.kill(pid, sig)
        wait_until(lambda: not os.path.exists("/proc/%d" % pid) or _zombie(pid), 10, what="%s %s gone" % (host, svc))

    def vip_holders(self):
        """The balancers whose eth0 holds the virtual address (normally exactly one)."""
        held = []
        for lb in ("lb1", "lb2"):
            r = self.exec(lb, "ip", "-4", "-o", "addr", "show", "dev", "eth0", check=False)
            if " %s/" % self.facts["VIP"] in r.stdout:
                held.append(lb)
        return held

    def active_lb(self):
        held = wait_until(lambda: self.vip_holders() if len(self.vip_holders()) == 1 else None, 20,
                          what="exactly one balancer holding the virtual address")
        return held[0]

    # ---- admin API, across hosts (from the client host, over the bridge) ----
    def ctl(self, lb, *args, check=True):
        return self.exec("client", self.agora_bin, "ctl", "--admin", self.admin_addr(lb), "--token-file",
                         self.facts["ADMIN_TOKEN_FILE"], *args, check=check)

    def servers(self, lb):
        """The balancer's /servers document (admin API, with the token), by server address."""
        token = pathlib.Path(self.facts["ADMIN_TOKEN_FILE"]).read_text().strip()
        r = self.exec("client", "curl", "-fsS", "-m", "3", "-H", "Authorization: Bearer " + token,
                      "http://%s/servers" % self.admin_addr(lb))
        return {s["address"]: s for s in json.loads(r.stdout)["servers"]}

    # ---- the client host ----
    def load(self, path="/", duration=10, interval=0.05, timeout=1.0, retry_for=0.0, count=0, clients=1):
        stop_file = os.path.join(self.dir, "load-stop-%d" % time.monotonic_ns())
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns("client"), PYTHON, str(NETCLIENT), "load",
                                 self.vip_url + path, "--duration", str(duration), "--interval", str(interval),
                                 "--timeout", str(timeout), "--retry-for", str(retry_for), "--count", str(count),
                                 "--clients", str(clients),
                                 "--stop-file", stop_file],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return Load(self, proc, stop_file)

    def posts(self, clients, count, interval=0.0, timeout=5.0, retry_for=60.0):
        """netclient.py posts on the client host, started now; returns when its accounts exist and
        it begins to post (at most 60 s): .result(timeout) -> its document."""
        ready = os.path.join(self.dir, "posts-ready-%d" % time.monotonic_ns())
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns("client"), PYTHON, str(NETCLIENT), "posts",
                                 self.vip_url, "--clients", str(clients), "--count", str(count), "--interval",
                                 str(interval), "--timeout", str(timeout), "--retry-for", str(retry_for),
                                 "--ready-file", ready], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(lambda: os.path.exists(ready) or proc.poll() is not None, 60, what="the posting clients ready")
        return Job(proc)

    def ryw(self, clients, count):
        """netclient.py ryw on the client host, started now: .result(timeout) -> its document."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns("client"), PYTHON, str(NETCLIENT), "ryw",
                                 self.vip_url, "--clients", str(clients), "--count", str(count)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return Job(proc)

    def social(self):
        r = self.exec("client", PYTHON, str(NETCLIENT), "social", self.vip_url, timeout=60)
        return json.loads(r.stdout)

    def primary(self):
        """The database host the pair's monitor has as the settled primary (db1, db2), or None."""
        return self.sh("primary").stdout.strip() or None

    def db_states(self):
        """{node1|node2: state} of the nodes settled in the state the monitor assigned them."""
        r = subprocess.run(["sh", str(PG_FAILOVER), "status", self.facts["PG_DIR"], "--json"], capture_output=True,
                           text=True, timeout=30)
        try:
            nodes = json.loads(r.stdout)
        except ValueError:
            return {}
        return {n["nodename"]: n["current_group_state"] for n in nodes
                if n["current_group_state"] == n["assigned_group_state"]}

    def psql(self, sql, host=None):
        """A query on database host HOST (default: the primary now) as the postgres user, over its
        Unix socket in DIR/pg -> rows of tab-separated text."""
        host = host or wait_until(self.primary, 30, what="a database primary")
        sock = os.path.join(self.facts["PG_DIR"], "sock-" + {"db1": "node1", "db2": "node2"}[host])
        r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-F", "\t", "-h", sock,
                            "-p", self.facts["PG_PORT"], "-U", "postgres", "-d", "agora", "-v", "ON_ERROR_STOP=1",
                            "-c", sql], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def metrics(self, host):
        """HOST's agora server /metrics (on its loopback, asked inside the host) -> {sample: value}."""
        r = self.exec(host, "curl", "-fsS", "-m", "3", "http://127.0.0.1:%s/metrics" % self.facts["METRICS_PORT"])
        out = {}
        for line in r.stdout.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    # ---- down ----
    def namespace_pids(self):
        """Every process in the cluster's namespaces now."""
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        pids = set()
        for l in out.splitlines():
            if l.startswith(self.name + "-"):
                r = subprocess.run(["ip", "netns", "pids", l.split()[0]], capture_output=True, text=True)
                pids.update(int(p) for p in r.stdout.split())
        return pids

    def leftovers(self, pids=()):
        """What of this cluster still exists: namespaces, links, processes (pids, taken from its
        namespaces before down, and any naming its directory), its directory."""
        left = ["process %d" % p for p in sorted(pids) if not _zombie(p)]
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        left += ["netns " + l.split()[0] for l in out.splitlines() if l.startswith(self.name + "-")]
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        for l in out.splitlines():
            dev = l.split(": ")[1].split("@")[0]
            if dev.startswith(self.name + "-"):
                left.append("link " + dev)
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                cmd = pathlib.Path("/proc", p, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.dir in cmd and int(p) != os.getpid():
                left.append("process %s: %s" % (p, cmd.strip()))
        if os.path.exists(self.dir):
            left.append("directory " + self.dir)
        return left


def _zombie(pid):
    try:
        return pathlib.Path("/proc/%d/stat" % pid).read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def outage(tries, since):
    """From the load's tries after time since: (failed tries, seconds from since to the first
    success after the last failure; 0 when nothing failed)."""
    after = [t for t in tries if t[0] >= since]
    failed = [t for t in after if not 200 <= t[3] < 300]
    if not failed:
        return 0, 0.0
    last_fail = max(t[1] for t in failed)
    ok_after = [t for t in after if 200 <= t[3] < 300 and t[0] >= last_fail]
    assert ok_after, "no success after the last failure: %s" % failed[-3:]
    return len(failed), min(t[1] for t in ok_after) - since
