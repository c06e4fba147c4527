"""The deployment files of deploy/ (docs/DEPLOY.md) do what they say.

- The systemd units are valid (`systemd-analyze verify`), hardened (`systemd-analyze security`
  rates their exposure OK), and their ExecStart lines, with the example environment files' values
  moved to loopback, start a working `agora server` and `agora lb`.
- The firewall (deploy/nftables.conf), loaded for real into a web host made of network
  namespaces: the balancer reaches the API, the monitoring host the metrics, and nothing else gets
  through (an outsider's connection to the API, the balancer's to PostgreSQL's port).
"""

import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import uuid

import pytest

from helpers import ApiClient, LB_READY_TEXT, LOCALHOST, accepts, free_port, read_to_close, start_process, wait_for


DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
UNITS = ["agora-server.service", "agora-lb.service"]


def env_file(name):
    """The KEY=VALUE lines of deploy/NAME as a dict (comments and blanks skipped)."""
    values = {}
    for line in (DEPLOY / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def unit_keys(name):
    """The unit file's Key=Value settings as a dict of lists."""
    keys = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.startswith("#") and not line.startswith("["):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def exec_start(name, env, agora_bin):
    """The unit's ExecStart as argv, ${VAR} taken from env, the installed path replaced."""
    line = unit_keys(name)["ExecStart"][0]
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
    argv = shlex.split(line)
    assert argv[0] == "/usr/local/bin/agora"
    return [str(agora_bin)] + argv[1:]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_valid_and_hardened(unit, agora_bin, tmp_path):
    # verify needs the ExecStart binary to exist: a copy pointing at the build
    copy = tmp_path / unit
    copy.write_text((DEPLOY / unit).read_text().replace("/usr/local/bin/agora", str(agora_bin)))
    out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [l for l in (out.stdout + out.stderr).splitlines() if unit in l]
    assert out.returncode == 0 and complaints == [], out.stdout + out.stderr
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(copy)], capture_output=True,
                         text=True, timeout=60)
    m = re.search(r"Overall exposure level for %s: ([0-9.]+) (\w+)" % re.escape(unit), out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0 and m.group(2) == "OK", m.group(0)
    keys = unit_keys(unit)
    assert keys["User"] == ["agora"] and keys["NoNewPrivileges"] == ["yes"]
    assert keys["ProtectSystem"] == ["strict"] and keys["CapabilityBoundingSet"] == [""]


def test_server_unit_command_serves(agora_bin, tmp_path):
    """agora-server.service's ExecStart with server.env.example's settings on loopback."""
    env = env_file("server.env.example")
    assert set(env) >= {"AGORA_LISTEN", "AGORA_DB", "PGPASSWORD", "AGORA_METRICS_LISTEN", "AGORA_METRICS_TOKEN"}
    assert "change-me" not in env["AGORA_DB"] and ":" not in env["AGORA_DB"].split("@")[0].split("//")[1], \
        "the example URL must not carry the password (ps shows the command line)"
    port, mport = free_port(), free_port()
    env.update(AGORA_LISTEN="%s:%d" % (LOCALHOST, port), AGORA_DB="sqlite:%s" % (tmp_path / "agora.db"),
               AGORA_METRICS_LISTEN="%s:%d" % (LOCALHOST, mport))
    argv = exec_start("agora-server.service", env, agora_bin)
    web = pathlib.Path(__file__).resolve().parents[2] / "web"
    argv[argv.index("--web") + 1] = str(web)  # the unit's installed copy of web/
    proc = start_process(argv, "listening on", env=dict(os.environ, AGORA_METRICS_TOKEN=env["AGORA_METRICS_TOKEN"]))
    try:
        # the message comes before the sockets are bound
        assert wait_for(lambda: accepts(port) and accepts(mport), timeout=10), proc.output()
        api = ApiClient(port)
        r = api.post("/api/v1/accounts", {"username": "deploy_" + uuid.uuid4().hex[:8], "password": "password123"})
        assert r.status == 201, r
        ok = api.get("/health")
        assert ok.status == 200
        s = socket.create_connection((LOCALHOST, mport), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
                  % env["AGORA_METRICS_TOKEN"].encode())
        data = read_to_close(s)
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert b'agora_server_requests_total{route="/api/v1/accounts",method="POST",code="201"} 1' in data
    finally:
        assert proc.stop() == 0, proc.output()


def test_lb_unit_command_serves(agora_bin, tmp_path, testbackend_factory):
    """agora-lb.service's ExecStart reads lb.ini.example; on loopback (flags override the
    listen and backend lines, as the docs say flags do) it balances and answers its admin API
    with the token of lb.env.example."""
    env = env_file("lb.env.example")
    assert set(env) == {"AGORA_ADMIN_TOKEN"}
    ini = tmp_path / "lb.ini"
    ini.write_text((DEPLOY / "lb.ini.example").read_text())
    argv = exec_start("agora-lb.service", env, agora_bin)
    argv[argv.index("--config") + 1] = str(ini)
    backend = testbackend_factory("web1")
    port, aport = free_port(), free_port()
    argv += ["--listen", "%s:%d" % (LOCALHOST, port), "--backend", "http://%s:%d" % (LOCALHOST, backend.port),
             "--admin-listen", "%s:%d" % (LOCALHOST, aport), "--slow-start", "0"]
    proc = start_process(argv, LB_READY_TEXT, env=dict(os.environ, AGORA_ADMIN_TOKEN=env["AGORA_ADMIN_TOKEN"]))
    try:
        def served():
            try:
                return ApiClient(port).get("/x").headers.get("x-backend") == "web1"
            except OSError:
                return False
        assert wait_for(served, timeout=10)
        assert wait_for(lambda: accepts(aport), timeout=10), proc.output()  # bound after the ready text
        admin = ApiClient(aport, token=env["AGORA_ADMIN_TOKEN"])
        r = admin.get("/servers")
        assert r.status == 200 and len(r.json["servers"]) == 1, r
        assert ApiClient(aport, token="wrong").get("/servers").status == 401
    finally:
        assert proc.stop() == 0, proc.output()


# ---------------------------------------------------------------- the firewall, for real

def _run(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def fw_hosts():
    """Five namespaces: a switch (a bridge, inside its own namespace: nothing outside is
    touched) and four hosts on it with deploy/nftables.conf's addresses: web (10.0.0.21, with
    the firewall loaded), lb (10.0.0.31), monitoring (10.0.0.41) and outsider (10.0.0.99).
    Yields {role: namespace}; removes everything."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("needs root, ip and nft (nftables) to build namespace hosts")
    tag = uuid.uuid4().hex[:6]
    switch = "fw%s-sw" % tag
    hosts = {"web": "10.0.0.21", "lb": "10.0.0.31", "mon": "10.0.0.41", "out": "10.0.0.99"}
    names = {role: "fw%s-%s" % (tag, role) for role in hosts}
    made = []
    try:
        _run("ip", "netns", "add", switch)
        made.append(switch)
        _run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", switch, "link", "set", "br0", "up")
        for i, (role, addr) in enumerate(hosts.items()):
            ns = names[role]
            _run("ip", "netns", "add", ns)
            made.append(ns)
            _run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "p%d" % i, "netns", switch)
            _run("ip", "-n", switch, "link", "set", "p%d" % i, "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "netns", "exec", names["web"], "nft", "-f", str(DEPLOY / "nftables.conf"))
        yield names
    finally:
        for ns in reversed(made):
            _run("ip", "netns", "del", ns, check=False)


def _listen_in(ns, ports):
    """A Python process in ns accepting (and closing) connections on 0.0.0.0:port for each port."""
    code = ("import socket, select\n"
            "ss = []\n"
            "for p in %r:\n"
            "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "    s.bind(('0.0.0.0', p)); s.listen(16); ss.append(s)\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    for s in select.select(ss, [], [], 60)[0]:\n"
            "        s.accept()[0].close()\n") % (list(ports),)
    return start_process(["ip", "netns", "exec", ns, "python3", "-c", code], "ready")


def _connects(ns, addr, port):
    """'open' when a TCP connection from ns to addr:port is accepted, 'closed' when refused,
    'dropped' when nothing answers within 1 s."""
    code = ("import socket\n"
            "try:\n"
            "    socket.create_connection((%r, %d), timeout=1).close(); print('open')\n"
            "except ConnectionRefusedError:\n"
            "    print('closed')\n"
            "except OSError:\n"
            "    print('dropped')\n") % (addr, port)
    return _run("ip", "netns", "exec", ns, "python3", "-c", code).stdout.strip()


def test_firewall_lets_only_the_roles_through(fw_hosts):
    ns = fw_hosts
    web = "10.0.0.21"
    listener = _listen_in(ns["web"], [8000, 8001, 8404, 5432, 9001])
    try:
        got = {(src, port): _connects(ns[src], web, port)
               for src in ("lb", "mon", "out") for port in (8001, 9001, 5432, 8404)}
        assert got == {
            ("lb", 8001): "open", ("lb", 9001): "dropped", ("lb", 5432): "dropped", ("lb", 8404): "dropped",
            ("mon", 8001): "dropped", ("mon", 9001): "open", ("mon", 5432): "dropped", ("mon", 8404): "dropped",
            ("out", 8001): "dropped", ("out", 9001): "dropped", ("out", 5432): "dropped", ("out", 8404): "dropped",
        }
        # the public port of the balancers is open to anyone; loopback is never filtered
        assert _connects(ns["out"], web, 8000) == "open"
        assert _connects(ns["web"], "127.0.0.1", 8404) == "open"
    finally:
        listener.stop()
