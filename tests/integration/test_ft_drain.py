"""agora lb: draining servers under load (admin API, `agora ctl`) and `agora up`'s live add/remove.

POST /servers/{host:port}/drain answers 202 at once; from then on no new request goes to that
server, the requests in flight on it finish, and once none is left the server is removed from
the set (or parked, {"then": "park"}, until POST .../enable). Clients see no failure at all.
Load here is /delay?ms=20 from 4 keep-alive client threads, so at most 4 requests are ever in
flight: after the drain answer the drained backend's --record file may gain at most those, and
after the server left the set it gains nothing but (at most one last) health check.

`agora up --listen 127.0.0.1:P --data DIR` runs a balancer (admin API on P+404, its generated
token in DIR/admin.token) and three web servers; `agora ctl --data DIR server add` starts a fourth on P+4 and adds it, `server remove
PORT` drains it out of the balancer and then stops it.
"""

import json
import os
import signal
import stat
import subprocess
import time

from helpers import (
    LOCALHOST,
    Load,
    accepts,
    admin_request,
    free_port,
    up_port_run,
    http_request,
    record_lines,
    start_process,
    wait_for,
)

CLIENT_THREADS = 4
DELAY_PATH = "/delay?ms=20"


def work_lines(path):
    return [line for line in record_lines(path) if line != "GET /health"]


def servers_by_address(admin_port, token_file=None):
    status, doc = admin_request(admin_port, "GET", "/servers", token_file=token_file)
    assert status == 200
    return {s["address"]: s for s in doc["servers"]}


def ctl(agora_bin, *args, timeout=20):
    proc = subprocess.run([str(agora_bin), "ctl", *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def start_three(testbackend_factory, lb_factory, tmp_path):
    records = {name: tmp_path / ("%s.txt" % name) for name in "ABC"}
    backends = {name: testbackend_factory(name, "--record", str(records[name])) for name in "ABC"}
    admin_port = free_port()
    lb = lb_factory([backends[n] for n in "ABC"], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
                    "--health-interval", "200ms")
    return lb, admin_port, backends, records


def test_drain_under_load_via_admin_api(testbackend_factory, lb_factory, tmp_path):
    lb, admin_port, backends, records = start_three(testbackend_factory, lb_factory, tmp_path)
    b_addr = "%s:%d" % (LOCALHOST, backends["B"].port)

    with Load(lb.port, path=DELAY_PATH, threads=CLIENT_THREADS) as load:
        assert load.wait_count(60)
        assert wait_for(lambda: len(work_lines(records["B"])) >= 5, 5.0)

        status, answer = admin_request(admin_port, "POST", "/servers/%s/drain" % b_addr, {})
        answered_at = time.monotonic()
        lines_at_answer = len(work_lines(records["B"]))
        assert status == 202
        assert (answer["draining"], answer["then"]) == (b_addr, "remove")
        assert 0 <= answer["in_flight"] <= CLIENT_THREADS

        assert wait_for(lambda: b_addr not in servers_by_address(admin_port), 5.0, 0.02)
        lines_at_removal = len(work_lines(records["B"]))
        count = load.count()
        assert load.wait_count(count + 100)

    assert load.failures() == []
    # Only requests already in flight when the drain was answered could still reach B...
    assert lines_at_removal - lines_at_answer <= CLIENT_THREADS
    # ...and nothing after it left the set.
    assert len(work_lines(records["B"])) == lines_at_removal
    # Every request sent after the drain answer was served by A or C.
    assert {r[3] for r in load.snapshot() if r[0] >= answered_at} == {"A", "C"}
    assert sorted(servers_by_address(admin_port)) == sorted(
        "%s:%d" % (LOCALHOST, backends[n].port) for n in "AC")
    assert lb.wait_for_output("agora lb: admin: http://%s drained and removed\n" % b_addr)


def test_drain_and_park_then_enable_via_agora_ctl(agora_bin, testbackend_factory, lb_factory, tmp_path):
    lb, admin_port, backends, records = start_three(testbackend_factory, lb_factory, tmp_path)
    admin = "%s:%d" % (LOCALHOST, admin_port)
    b_addr = "%s:%d" % (LOCALHOST, backends["B"].port)

    with Load(lb.port, path=DELAY_PATH, threads=CLIENT_THREADS) as load:
        assert load.wait_count(60)
        rc, out, err = ctl(agora_bin, "--admin", admin, "drain", b_addr, "--park")
        drained_at = time.monotonic()
        assert (rc, err) == (0, "")
        answer = json.loads(out)
        assert (answer["draining"], answer["then"]) == (b_addr, "park")

        assert wait_for(lambda: servers_by_address(admin_port)[b_addr]["state"] == "parked", 5.0, 0.02)
        lines_when_parked = len(work_lines(records["B"]))
        rc, out, err = ctl(agora_bin, "--admin", admin, "list")
        assert rc == 0
        rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
        assert out.splitlines()[0].split() == ["ADDRESS", "STATE", "WEIGHT", "IN-FLIGHT", "REQUESTS", "ERRORS",
                                               "P50(ms)", "P99(ms)"]
        assert rows[b_addr] == "parked"
        assert sorted(rows.values()) == ["parked", "up", "up"]

        count = load.count()
        assert load.wait_count(count + 100)
        # Parked: still in the set and health-checked, but no requests.
        assert len(work_lines(records["B"])) == lines_when_parked

        # Taken before the call: the balancer enables B before it answers, and `agora ctl` may
        # take a while to exit after that (longer still under ASan), so a time taken after the
        # call would count requests B rightly served after the enable as "between".
        enabled_at = time.monotonic()
        rc, out, err = ctl(agora_bin, "--admin", admin, "enable", b_addr)
        assert (rc, out, err) == (0, '{"enabled": "%s"}\n' % b_addr, "")
        assert wait_for(lambda: len(work_lines(records["B"])) > lines_when_parked, 5.0)
        assert servers_by_address(admin_port)[b_addr]["state"] == "up"

    assert load.failures() == []
    between = {r[3] for r in load.snapshot() if drained_at <= r[0] and r[1] < enabled_at}
    assert between == {"A", "C"}


def test_drain_of_an_unknown_server_is_404(testbackend_factory, lb_factory, tmp_path, agora_bin):
    lb, admin_port, _, _ = start_three(testbackend_factory, lb_factory, tmp_path)
    status, answer = admin_request(admin_port, "POST", "/servers/127.0.0.1:1/drain", {})
    assert (status, answer) == (404, {"error": "no such server in the set (use host:port as shown by GET /servers)"})
    rc, out, err = ctl(agora_bin, "--admin", "%s:%d" % (LOCALHOST, admin_port), "drain", "127.0.0.1:1")
    assert (rc, out) == (1, "")
    assert err.startswith("agora ctl: {\"error\": \"no such server in the set")


# ---------------------------------------------------------------- agora up


def stop_up(up):
    """SIGTERM to `agora up`, as Ctrl-C would be; its exit status (SIGKILL after 30 s: then not 0)."""
    up.popen.send_signal(signal.SIGTERM)
    try:
        return up.wait(timeout=30)
    except subprocess.TimeoutExpired:
        return up.stop()


def up_call(agora_bin, data, *args):
    rc, out, err = ctl(agora_bin, "--data", str(data), "server", *args, timeout=40)
    assert (rc, err) == (0, ""), (rc, out, err)
    return json.loads(out)


def test_agora_up_server_add_and_remove(agora_bin, tmp_path):
    data = tmp_path / "data"
    base = up_port_run(3, spare=1)
    admin_port = base + 404
    token_file = data / "admin.token"  # the balancer `agora up` runs writes its token there
    up = start_process([agora_bin, "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", data,
                        "--lb-workers", "1"], ready_text="agora is up", timeout=30)
    try:
        # `agora up` says it is up once it started its children: the balancer and its admin API
        # may still be starting.
        assert wait_for(lambda: _all_healthy(admin_port, token_file), 15.0, 0.1), up.output()
        initial = ["%s:%d" % (LOCALHOST, base + k) for k in (1, 2, 3)]
        assert sorted(servers_by_address(admin_port, token_file)) == initial
        assert _served_by(base) in initial  # the web servers answer through the balancer
        # The balancer's generated token is in the data directory, for this user only, and
        # `agora ctl` finds it there by itself (no --token flag, no environment variable).
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        env = {k: v for k, v in os.environ.items() if k != "AGORA_ADMIN_TOKEN"}
        listed = subprocess.run([str(agora_bin), "ctl", "--admin", "%s:%d" % (LOCALHOST, admin_port), "--data",
                                 str(data), "list"], capture_output=True, text=True, timeout=20, env=env)
        assert (listed.returncode, listed.stderr) == (0, "")
        assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == initial

        added = up_call(agora_bin, data, "add")
        new_addr = "%s:%d" % (LOCALHOST, base + 4)
        assert added["added"] == "http://" + new_addr
        assert sorted(servers_by_address(admin_port, token_file)) == sorted(initial + [new_addr])
        assert wait_for(lambda: servers_by_address(admin_port, token_file)[new_addr]["healthy"], 10.0, 0.1)
        # The new server takes requests (in slow start: about 10% of its share at first).
        assert wait_for(lambda: _served_by(base) == new_addr, 10.0, 0.0)

        listed = up_call(agora_bin, data, "list")
        states = {p["name"]: p["state"] for p in listed["processes"]}
        assert list(states.values()).count("running") == 5  # four web servers and the balancer

        removed = up_call(agora_bin, data, "remove", str(base + 4))
        assert removed == {"draining": "http://" + new_addr}
        assert wait_for(lambda: new_addr not in servers_by_address(admin_port, token_file), 10.0, 0.1)
        assert sorted(servers_by_address(admin_port, token_file)) == initial
        # `agora up` stops the drained server's process and does not restart it.
        assert wait_for(lambda: "removed" in [p["state"] for p in up_call(agora_bin, data, "list")["processes"]],
                        10.0, 0.2)
        assert wait_for(lambda: not accepts(base + 4), 10.0, 0.1)
        assert {_served_by(base) for _ in range(20)} <= set(initial)
    finally:
        status = stop_up(up)
    assert status == 0, up.output()
    assert not token_file.exists()  # the balancer's clean stop removed it


def _served_by(port):
    """The X-Served-By of a GET /api/v1/accounts/nobody (404) through the balancer on port."""
    status, headers, _ = http_request(LOCALHOST, port, "GET", "/api/v1/accounts/nobody")
    assert status == 404
    return headers.get("x-served-by")


def _all_healthy(admin_port, token_file):
    try:  # also before the balancer wrote its token file (FileNotFoundError)
        servers = servers_by_address(admin_port, token_file)
    except OSError:
        return False
    return len(servers) == 3 and all(s["healthy"] for s in servers.values())


def test_agora_up_server_add_refused_by_the_balancer_leaves_no_process(agora_bin, tmp_path):
    """Regression (review of issue 9): when the balancer refused the new server (here: `agora up`
    reads a wrong token from the data directory, so the balancer answers 401), the web server
    `agora up` had started stayed running and supervised, serving nobody."""
    data = tmp_path / "data"
    base = up_port_run(3, spare=1)
    admin_port = base + 404
    token_file = data / "admin.token"
    env = {k: v for k, v in os.environ.items() if k != "AGORA_ADMIN_TOKEN"}
    up = start_process([agora_bin, "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", data,
                        "--lb-workers", "1"], ready_text="agora is up", timeout=30, env=env)
    try:
        assert wait_for(lambda: _all_healthy(admin_port, token_file), 15.0, 0.1), up.output()
        token = token_file.read_text()
        token_file.write_text("0" * len(token))  # what `agora up` now sends is wrong
        rc, out, err = ctl(agora_bin, "--data", str(data), "server", "add", timeout=40)
        assert rc != 0 and "balancer refused the new server (status 401)" in err, (rc, out, err)
        token_file.write_text(token)
        assert wait_for(lambda: not accepts(base + 4), 10.0, 0.1)
        states = [p["state"] for p in up_call(agora_bin, data, "list")["processes"]]
        assert states.count("running") == 4 and "removed" in states, states
        time.sleep(1.0)  # no restart either
        assert not accepts(base + 4)
    finally:
        status = stop_up(up)
    assert status == 0, up.output()
