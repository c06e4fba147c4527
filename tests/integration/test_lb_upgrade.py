"""agora lb: upgrades without a dropped request (issue 13, item 4).

A balancer started with --upgrade-socket PATH offers its listening sockets there; a new balancer
(a new binary or configuration) started with --upgrade-from PATH takes them, serves them, and
tells the old one, which stops accepting and finishes its connections. The kernel's accept
queues are the same sockets, so no connection waiting in them is lost; idle keep-alive
connections of the old process get a short grace, so a request already on its way is answered.
Under continuous load (keep-alive clients and a new connection per request), the test counts
zero failures across two upgrades in a row.
"""

import http.client
import os
import socket
import subprocess
import time

from helpers import LOCALHOST, Load, backend_url, start_lb, wait_for


class Traffic:
    """Clients sending GET / continuously until finished (agora_test's Load): `keep` keep-alive
    ones (a new connection only when the server says Connection: close) and `fresh` ones opening
    a connection per request. A failure is any exception, any status but 200, or a body that
    does not start with prefix."""

    def __init__(self, port, keep=4, fresh=2, prefix=b"hello"):
        self.loads = [Load(port, threads=keep, body_prefix=prefix),
                      Load(port, threads=fresh, headers={"Connection": "close"}, body_prefix=prefix)]
        for load in self.loads:
            load.start()

    @property
    def ok(self):
        return sum(1 for load in self.loads for r in load.snapshot() if r[2] == 200)

    @property
    def failures(self):
        return [r for load in self.loads for r in load.failures()]

    def finish(self):
        for load in self.loads:
            load.stop()


def start_on(agora_bin, port, args):
    """Starts `agora lb ARGS` on this exact port (start_lb picks one; here the port is given)."""
    from helpers import start_process

    argv = [str(agora_bin), "lb", *map(str, args), "--listen", "%s:%d" % (LOCALHOST, port)]
    proc = start_process(argv, "agora lb: ", 10)
    proc.port = port
    return proc


def test_two_upgrades_under_load_drop_nothing(agora_bin, testbackend_factory, tmp_path):
    backends = [testbackend_factory(n) for n in "AB"]
    sock = tmp_path / "upgrade.sock"
    args = ["--admin-listen", "off", "--slow-start", "0", "--workers", "2", "--health-interval", "1s",
            "--upgrade-socket", sock]
    for b in backends:
        args += ["--backend", backend_url(b)]
    first = start_lb(agora_bin, args)
    assert wait_for(lambda: sock.exists(), 5)
    assert (os.stat(sock).st_mode & 0o777) == 0o600
    load = Traffic(first.port)
    procs = [first]
    try:
        time.sleep(0.5)
        for _ in range(2):
            old = procs[-1]
            new = start_on(agora_bin, first.port, args + ["--upgrade-from", sock])
            procs.append(new)
            assert new.wait_for_output("serving the listening sockets of the previous process", 10), new.output()
            assert old.wait(timeout=15) == 0, old.output()  # drained and stopped by itself
            assert "upgrade: the new process serves the listening sockets" in old.output()
            before = load.ok
            time.sleep(0.5)
            assert load.ok > before  # the new one answers
    finally:
        load.finish()
        for p in procs:
            if p.poll() is None:
                p.stop()
    assert load.failures == [], load.failures[:10]
    assert load.ok > 100
    assert procs[-1].poll() is not None  # stopped above, cleanly
    assert not sock.exists()  # the last one removed its socket at its stop


def test_no_offer_there_is_a_clear_error(agora_bin, tmp_path):
    proc = subprocess.run([str(agora_bin), "lb", "--backend", "http://127.0.0.1:9", "--admin-listen", "off",
                           "--upgrade-from", str(tmp_path / "nothing.sock")], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 1
    assert "upgrade: cannot reach a running process at %s" % (tmp_path / "nothing.sock") in proc.stderr


def test_a_successor_that_goes_away_leaves_the_old_one_serving(agora_bin, testbackend_factory, tmp_path):
    backend = testbackend_factory("A")
    sock = tmp_path / "upgrade.sock"
    lb = start_lb(agora_bin, ["--admin-listen", "off", "--backend", backend_url(backend), "--upgrade-socket", sock])
    try:
        assert wait_for(lambda: sock.exists(), 5)
        # A "successor" that takes the sockets and disappears without saying READY.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(sock))
        msg, fds, _, _ = socket.recv_fds(s, 64, 16)
        assert msg.startswith(b"AGORA-HANDOFF 1 ") and len(fds) == int(msg.split()[2])
        for fd in fds:
            os.close(fd)
        s.close()
        assert wait_for(lambda: "went away before serving; still serving" in lb.output(), 5), lb.output()
        conn = http.client.HTTPConnection(LOCALHOST, lb.port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        assert lb.poll() is None
    finally:
        lb.stop()


def test_agora_ctl_upgrade_replaces_agora_ups_balancer_under_load(agora_bin, tmp_path):
    from helpers import start_process, up_port_run

    data = tmp_path / "data"
    base = up_port_run(3)
    up = start_process([agora_bin, "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", data, "--servers", "2",
                        "--lb-workers", "1"], ready_text="agora is up", timeout=30)
    load = None
    try:
        def healthy():
            try:
                conn = http.client.HTTPConnection(LOCALHOST, base, timeout=2)
                conn.request("GET", "/health")
                ok = conn.getresponse().status == 200
                conn.close()
                return ok
            except OSError:
                return False

        assert wait_for(healthy, 20, 0.1), up.output()
        load = Traffic(base, keep=3, fresh=1, prefix=b"<!doctype html>")
        time.sleep(0.5)
        proc = subprocess.run([str(agora_bin), "ctl", "--data", str(data), "upgrade"], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert '"pid"' in proc.stdout and '"upgrading_from_pid"' in proc.stdout
        assert up.wait_for_output("agora up: balancer upgraded", 20), up.output()
        before = load.ok
        time.sleep(0.5)
        assert load.ok > before
        # A second upgrade right after the first works too (restarts bind afresh, not from the old socket).
        proc = subprocess.run([str(agora_bin), "ctl", "--data", str(data), "upgrade"], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert wait_for(lambda: up.output().count("agora up: balancer upgraded") == 2, 20), up.output()
        load.finish()
        assert load.failures == [], load.failures[:10]
        assert load.ok > 50
        listed = subprocess.run([str(agora_bin), "ctl", "--data", str(data), "server", "list"], capture_output=True,
                                text=True, timeout=20)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.count('"running"') == 3  # two web servers and the one balancer
    finally:
        if load:
            load.finish()
        up.popen.send_signal(__import__("signal").SIGTERM)
        assert up.wait(timeout=30) == 0, up.output()
