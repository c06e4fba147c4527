"""agora lb: the live dashboard's admin routes (issue 13, item 2).

GET /dashboard (and its files under /dashboard/) is the page: served without the token, since
it holds no data, with a strict Content-Security-Policy, but behind the Host check like every
admin route. The data it draws needs the token: GET /series (per-second points per server and
for the cluster) and GET /events (the bounded event log). Tested here: their exact JSON after a
known sequence (requests, health changes, admin actions, a reload), the since= paging, the
ring's bounds, and the refusals (no or wrong token from a loopback and a non-loopback address,
a foreign Host) for the data routes and /metrics. `agora up` prints the dashboard's address.
The browser side is tests/browser/dashboard.test.mjs.
"""

import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from helpers import (LOCALHOST, admin_request, free_port, get_from, http_request, own_outside_address, up_port_run,
                     wait_for)

TOKEN = "dashboard-test-token-0123456789abcdef"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
COLUMNS = ["seq", "time_ms", "requests", "rps", "in_flight", "p50_ms", "p99_ms", "errors"]


def addr(backend):
    return "%s:%d" % (LOCALHOST, backend.port)


def call(admin_port, method, path, body=None):
    return admin_request(admin_port, method, path, body=body, token=TOKEN)


def series(admin_port, since=None):
    status, doc = call(admin_port, "GET", "/series" if since is None else "/series?since=%d" % since)
    assert status == 200, doc
    return doc


def events(admin_port, since=None):
    status, doc = call(admin_port, "GET", "/events" if since is None else "/events?since=%d" % since)
    assert status == 200, doc
    return doc


def wait_seq(admin_port, at_least):
    assert wait_for(lambda: series(admin_port)["seq"] >= at_least, 5.0, 0.05)


@pytest.fixture
def two(testbackend_factory, lb_factory):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    admin_port = free_port()
    lb = lb_factory([a, b], "--policy", "round-robin", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
                    "--admin-token", TOKEN)
    return lb, admin_port, a, b


# ---------------------------------------------------------------- the page


def test_the_page_is_served_without_the_token_with_a_strict_policy(two):
    _, admin_port, a, _ = two
    for path in ("/dashboard", "/dashboard/"):
        st, hdrs, body = http_request(LOCALHOST, admin_port, "GET", path)
        assert st == 200
        assert hdrs["content-type"] == "text/html; charset=utf-8"
        assert hdrs["content-security-policy"] == CSP
        assert hdrs["x-content-type-options"] == "nosniff"
        assert hdrs["referrer-policy"] == "no-referrer"
        assert hdrs["cache-control"] == "no-cache"
        html = body.decode()
        # only the page's own files; no inline script or style, nothing from elsewhere
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/dashboard/dashboard.js" defer>']
        assert "<style" not in html and " style=" not in html and " on" not in re.sub(r"\s+", " ", html).replace(
            " one", "").replace(" only", "")
        assert "http://" not in html and "https://" not in html
        # no data in it
        assert addr(a) not in html
    for path, ctype in (("/dashboard/dashboard.js", "text/javascript; charset=utf-8"),
                        ("/dashboard/dashboard.css", "text/css; charset=utf-8"),
                        ("/dashboard/favicon.svg", "image/svg+xml")):
        st, hdrs, body = http_request(LOCALHOST, admin_port, "GET", path)
        assert (st, hdrs["content-type"], hdrs["content-security-policy"]) == (200, ctype, CSP)
        assert len(body) > 100
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "src", "lb", path.lstrip("/")), "rb") as f:
            assert body == f.read()  # the files as they are in the tree, compiled in
    st, hdrs, body = http_request(LOCALHOST, admin_port, "HEAD", "/dashboard")
    assert (st, body) == (200, b"") and int(hdrs["content-length"]) > 1000
    assert call(admin_port, "POST", "/dashboard", {})[0] == 405
    # anything else under /dashboard/ is an admin route like any other: the token first
    st, _, _ = http_request(LOCALHOST, admin_port, "GET", "/dashboard/../servers")
    assert st in (400, 401, 404)
    assert http_request(LOCALHOST, admin_port, "GET", "/dashboard/other.js")[0] == 401
    assert call(admin_port, "GET", "/dashboard/other.js") == (404, {"error": "no such admin route"})


def test_the_page_is_refused_with_a_foreign_host(two):
    _, admin_port, _, _ = two
    for host in ("evil.example", "evil.example:%d" % admin_port, "localhost.evil.example"):
        st, _, body = http_request(LOCALHOST, admin_port, "GET", "/dashboard", headers={"Host": host})
        assert st == 403
        assert b"<html" not in body


# ---------------------------------------------------------------- GET /series


def test_series_counts_exactly_what_was_sent(two):
    lb, admin_port, a, b = two
    wait_seq(admin_port, 1)  # the first sample: every later request falls in a later point
    for path in ["/"] * 8 + ["/status?code=500"] * 2:
        http_request(LOCALHOST, lb.port, "GET", path)
    start = series(admin_port)["seq"]
    wait_seq(admin_port, start + 1)
    doc = series(admin_port)
    assert list(doc) == ["seq", "interval_ms", "slow_start_ms", "policy", "columns", "totals", "servers"]
    assert (doc["interval_ms"], doc["slow_start_ms"], doc["policy"], doc["columns"]) == (1000, 0, "round-robin",
                                                                                          COLUMNS)
    seq = doc["seq"]
    totals = doc["totals"]
    assert {k: v for k, v in totals.items() if k != "points"} == {"servers": 2, "up": 2, "in_flight": 0,
                                                                  "requests": 10}
    assert sum(p[2] for p in totals["points"]) == 10
    assert sum(p[7] for p in totals["points"]) == 2  # the two 500s
    for s, backend in zip(doc["servers"], (a, b)):
        points = s.pop("points")
        assert s == {"address": addr(backend), "url": "http://" + addr(backend), "state": "up", "weight": 1,
                     "in_flight": 0, "requests": 5, "errors": 1, "ejections": 0, "ejected_for_ms": 0,
                     "last_check": "HTTP 200"}
        assert [p[0] for p in points] == list(range(1, seq + 1))  # every second since the first
        assert sum(p[2] for p in points) == 5 and sum(p[7] for p in points) == 1
        for p in points:
            assert len(p) == len(COLUMNS) and p[4] == 0
            if p[2]:
                assert 0 < p[5] <= p[6] < 5000 and p[3] > 0
            else:
                assert p[5] is None and p[6] is None and p[3] == 0
        times = [p[1] for p in points]
        assert times == sorted(times) and abs(times[-1] / 1000 - time.time()) < 5
    # since: only newer points
    later = series(admin_port, seq)
    newer = later["seq"] - seq
    assert all(len(s["points"]) == newer for s in later["servers"])
    assert len(later["totals"]["points"]) == newer
    assert [p[0] for p in series(admin_port, later["seq"] - 1)["servers"][0]["points"]] == [later["seq"]]


@pytest.mark.parametrize("query", ["since=", "since=x", "since=-1", "since=1&x=1", "x=1", "since=1234567890123456789"])
def test_series_and_events_refuse_other_queries(two, query):
    _, admin_port, _, _ = two
    for route in ("/series", "/events"):
        assert call(admin_port, "GET", "%s?%s" % (route, query)) == (
            400, {"error": "the query may only be since=N (a decimal number)"})
        assert call(admin_port, "POST", route, {})[0] == 405


def test_series_states_follow_the_servers(testbackend_factory, lb_factory):
    a, b, c = testbackend_factory("A"), testbackend_factory("B"), testbackend_factory("C")
    admin_port = free_port()
    lb_factory([a, b, c], "--policy", "round-robin", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
               "--admin-token", TOKEN, "--slow-start", "1h", "--health-fall", "1")
    assert call(admin_port, "POST", "/servers/%s/drain" % addr(b), {"then": "park"})[0] == 202
    c.stop()

    def states():
        return [s["state"] for s in series(admin_port)["servers"]]
    # A: in its hour of slow start (servers start in it); B: parked; C: down after its next check
    assert wait_for(lambda: states() == ["slow start", "parked", "down"], 5.0, 0.05), states()
    assert series(admin_port)["totals"]["up"] == 1


def test_an_ejected_server_says_for_how_long(testbackend_factory, lb_factory):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    admin_port = free_port()
    lb = lb_factory([a, b], "--policy", "round-robin", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
                    "--admin-token", TOKEN, "--health-interval", "60s", "--eject-time", "30s")
    b.stop()
    for _ in range(2):
        assert http_request(LOCALHOST, lb.port, "GET", "/")[0] == 200  # the second one retried on A
    s = series(admin_port)["servers"][1]
    assert s["state"] == "ejected" and 25000 < s["ejected_for_ms"] <= 30000 and s["ejections"] == 1
    [ev] = events(admin_port)["events"]
    assert (ev["kind"], ev["server"], ev["detail"]) == ("ejected", addr(b), "for 30000 ms: connect failed")


# ---------------------------------------------------------------- GET /events


def test_events_record_what_happened_in_order(testbackend_factory, lb_factory, tmp_path):
    a, b, c = testbackend_factory("A"), testbackend_factory("B"), testbackend_factory("C")
    admin_port = free_port()
    config = tmp_path / "lb.ini"
    config.write_text("[backends]\nserver = http://%s\nserver = http://%s\n" % (addr(a), addr(b)))
    lb = lb_factory(None, "--config", str(config), "--policy", "round-robin", "--admin-listen",
                    "%s:%d" % (LOCALHOST, admin_port), "--admin-token", TOKEN, "--health-fall", "1",
                    "--health-rise", "1", wait_checked=False)
    assert wait_for(lambda: all(s["last_check"] == "HTTP 200" for s in series(admin_port)["servers"]), 5.0)
    t0 = time.time() * 1000
    assert events(admin_port) == {"first": 1, "last": 0, "events": []}  # all up from the start: nothing
    assert call(admin_port, "POST", "/servers", {"url": "http://" + addr(c), "weight": 2})[0] == 201
    assert wait_for(lambda: len(events(admin_port)["events"]) == 2, 5.0)  # added, then up (its first check)
    assert call(admin_port, "PUT", "/servers/%s/weight" % addr(a), {"weight": 7})[0] == 200
    assert call(admin_port, "POST", "/servers/%s/drain" % addr(b), {"then": "park"})[0] == 202
    assert wait_for(lambda: len(events(admin_port)["events"]) == 5, 5.0)  # drained (parked) by the timer
    assert call(admin_port, "POST", "/servers/%s/enable" % addr(b))[0] == 200
    assert call(admin_port, "POST", "/servers/%s/enable" % addr(b))[0] == 200  # already active: no event
    assert call(admin_port, "POST", "/servers/%s/drain" % addr(c), {})[0] == 202  # then removed
    assert wait_for(lambda: len(events(admin_port)["events"]) == 8, 5.0)
    a.stop()
    assert wait_for(lambda: len(events(admin_port)["events"]) == 9, 5.0)  # down
    lb.popen.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(events(admin_port)["events"]) == 10, 5.0)
    doc = events(admin_port)
    got = [(e["id"], e["kind"], e["server"], e["detail"]) for e in doc["events"]]
    # A stopped between two checks refuses the next one; stopped while a check is in flight (the
    # checks run every 200 ms), that one sees the connection closed: both are what happened
    if got[8][3] == "connection closed before a response":
        got[8] = got[8][:3] + ("connect failed: Connection refused",)
    assert got == [
        (1, "added", addr(c), "weight 2"),
        (2, "up", addr(c), "first check: HTTP 200"),
        (3, "weight", addr(a), "1 -> 7"),
        (4, "draining", addr(b), "then park; 0 in flight"),
        (5, "drained", addr(b), "parked"),
        (6, "enabled", addr(b), "was parked"),
        (7, "draining", addr(c), "then remove; 0 in flight"),
        (8, "drained", addr(c), "removed"),
        (9, "down", addr(a), "connect failed: Connection refused"),
        (10, "reload", "", "2 server(s)"),
    ], got
    assert (doc["first"], doc["last"]) == (1, 10)
    assert all(list(e) == ["id", "time_ms", "kind", "server", "detail"] for e in doc["events"])
    times = [e["time_ms"] for e in doc["events"]]
    assert times == sorted(times) and t0 - 1000 <= times[0] and times[-1] <= time.time() * 1000 + 1000
    # since: what came after an id
    assert [e["id"] for e in events(admin_port, 7)["events"]] == [8, 9, 10]
    assert events(admin_port, 10) == {"first": 1, "last": 10, "events": []}
    assert events(admin_port, 99)["events"] == []


def test_the_event_ring_keeps_the_last_256(two):
    _, admin_port, a, _ = two
    for k in range(300):
        assert call(admin_port, "PUT", "/servers/%s/weight" % addr(a), {"weight": 1 + k % 2 + 1})[0] == 200
    doc = events(admin_port)
    assert (doc["first"], doc["last"]) == (45, 300)
    assert [e["id"] for e in doc["events"]] == list(range(45, 301))
    assert events(admin_port, 10)["events"][0]["id"] == 45  # 11..44 were dropped: first says so
    assert [e["id"] for e in events(admin_port, 298)["events"]] == [299, 300]
    assert events(admin_port, 300)["events"] == []


# ---------------------------------------------------------------- refusals


DATA_ROUTES = ["/series", "/events", "/metrics", "/servers"]


def test_data_routes_refuse_requests_without_the_token_or_with_a_foreign_host(two):
    _, admin_port, a, _ = two
    for path in DATA_ROUTES:
        st, hdrs, body = http_request(LOCALHOST, admin_port, "GET", path)
        assert st == 401 and hdrs["www-authenticate"] == 'Bearer realm="agora-admin"'
        assert addr(a).encode() not in body
        st, _, body = http_request(LOCALHOST, admin_port, "GET", path, headers={"Authorization": "Bearer nope"})
        assert st == 401 and addr(a).encode() not in body
        st, _, body = http_request(LOCALHOST, admin_port, "GET", path,
                                   headers={"Authorization": "Bearer " + TOKEN, "Host": "evil.example"})
        assert st == 403 and addr(a).encode() not in body
        assert call(admin_port, "GET", path)[0] == 200


def test_from_a_non_loopback_address(testbackend_factory, lb_factory):
    ip = own_outside_address()
    if ip is None:
        pytest.skip("no non-loopback address on this machine")
    a = testbackend_factory("A")
    admin_port = free_port(ip)
    lb_factory([a], "--admin-listen", "%s:%d" % (ip, admin_port), "--admin-token", TOKEN)
    named = {"Host": "%s:%d" % (ip, admin_port)}
    for path in DATA_ROUTES:
        st, _, body = get_from(ip, admin_port, path, named, host=ip)
        assert st == 401 and addr(a).encode() not in body, (path, st, body)
        st, _, body = get_from(ip, admin_port, path, dict(named, Authorization="Bearer wrong-token"), host=ip)
        assert st == 401 and addr(a).encode() not in body
        st, _, body = get_from(ip, admin_port, path, {"Host": "evil.example", "Authorization": "Bearer " + TOKEN},
                               host=ip)
        assert st == 403 and addr(a).encode() not in body
        st, _, body = get_from(ip, admin_port, path, dict(named, Authorization="Bearer " + TOKEN), host=ip)
        assert st == 200 and (path == "/events" or addr(a).encode() in body)
    # the page itself holds no data: served, but only under a Host that names this API
    st, _, body = get_from(ip, admin_port, "/dashboard", named, host=ip)
    assert st == 200 and b"<html" in body and addr(a).encode() not in body
    assert get_from(ip, admin_port, "/dashboard", {"Host": "evil.example"}, host=ip)[0] == 403


# ---------------------------------------------------------------- agora up


def run_up(agora_bin, tmp_path, base, stdout):
    return subprocess.Popen([str(agora_bin), "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data",
                             str(tmp_path / "data"), "--lb-workers", "1"], stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.DEVNULL)


def read_line_with(fd, text, timeout):
    """Reads fd (bounded by timeout: select before each read) until a whole line holding text came."""
    out, deadline = b"", time.monotonic() + timeout
    while not re.search(re.escape(text) + rb"[^\n]*\n", out):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode()


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.mark.parametrize("tty", [True, False])
def test_agora_up_prints_the_dashboard_address(agora_bin, tmp_path, tty):
    base = up_port_run(3)
    admin = "%s:%d" % (LOCALHOST, base + 404)
    if tty:
        master, slave = pty.openpty()
        proc = run_up(agora_bin, tmp_path, base, slave)
        os.close(slave)
        fd = master
    else:
        proc = run_up(agora_bin, tmp_path, base, subprocess.PIPE)
        fd = proc.stdout.fileno()
    try:
        out = read_line_with(fd, b"dashboard: ", 30)
        line = [ln for ln in out.splitlines() if ln.startswith("dashboard: ")]
        token = (tmp_path / "data" / "admin.token").read_text().strip()
        if tty:  # for the operator at the terminal: a link that opens it
            assert line == ["dashboard: http://%s/dashboard#token=%s" % (admin, token)], out
        else:  # stdout may be a log: no token in it
            assert line == ["dashboard: http://%s/dashboard  (admin token: %s)" % (admin, tmp_path / "data" /
                                                                                     "admin.token")], out
            assert token not in out
        st, _, body = http_request(LOCALHOST, base + 404, "GET", "/dashboard")
        assert st == 200 and b"dashboard.js" in body
        status, doc = admin_request(base + 404, "GET", "/series", token=token)
        assert status == 200 and len(doc["servers"]) == 3
        # each web server's /metrics on its port + 1000, loopback only, printed before the dashboard
        assert ("server metrics: http://127.0.0.1:%d/metrics ... :%d/metrics  (each web server's port + 1000; "
                "loopback only)" % (base + 1001, base + 1003)) in out.splitlines(), out
        for k in (1001, 1002, 1003):
            st, _, body = http_request(LOCALHOST, base + k, "GET", "/metrics")
            assert st == 200 and b"agora_server_requests_total" in body, (k, st, body[:200])
    finally:
        assert stop(proc) == 0
        if tty:
            os.close(master)
