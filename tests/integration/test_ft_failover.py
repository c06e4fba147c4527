"""agora lb: failover under load and passive health (outlier ejection).

A backend killed with SIGKILL under sustained keep-alive load costs no client a failed request:
requests that meet the dead server before anything was sent (connection refused) are retried on
another server, and those in flight on it (reset) are safe GETs replayed from the replay buffer.
Passive health ejects the dead server at its first failure, so /stats shows it down well within
a second (a functional deadline: active checks alone would need fall x interval). Restarted on the
same port, it is let back in by active checks (rise) once its ejection time is over.

Ejection times double with each repeated ejection (--eject-time base, capped by --eject-max-time),
and --max-ejection caps the share of servers passive health may take out.
"""

import re
import time

from helpers import LOCALHOST, Load, backend_url, http_request, lb_server_stats, lb_stats, wait_for

EJECT_DEADLINE_S = 1.0


def kill(backend):
    backend.popen.kill()
    backend.popen.wait(timeout=5)


def server(lb, backend):
    return lb_server_stats(lb.port)[backend_url(backend)]


def test_sigkill_under_load_fails_no_request_and_ejects_within_a_second(testbackend_factory, lb_factory):
    a, b, c = [testbackend_factory(name) for name in "ABC"]
    lb = lb_factory([a, b, c], "--health-interval", "200ms", "--health-rise", "2", "--health-fall", "3",
                    "--eject-time", "500ms")
    stats = lb_stats(lb.port)
    assert all(s["healthy"] for s in stats["servers"])

    with Load(lb.port, threads=4) as load:
        assert load.wait_count(300)
        assert {r[3] for r in load.snapshot()} == {"A", "B", "C"}

        kill(b)
        killed_at = time.monotonic()
        down_at = None
        while time.monotonic() - killed_at < 5.0:  # bounded: the assertion below is the deadline
            if not server(lb, b)["healthy"]:
                down_at = time.monotonic()
                break
            time.sleep(0.05)
        assert down_at is not None, lb_stats(lb.port)
        # Functional deadline: passive health ejects at the first failure (the stats poll adds
        # up to 50 ms), far below fall x interval = 600 ms of active checks plus their timeout.
        assert down_at - killed_at <= EJECT_DEADLINE_S, "ejected %.3f s after the kill" % (down_at - killed_at)
        entry = server(lb, b)
        assert (entry["state"], entry["healthy"]) == ("down", False)
        assert entry["ejections"] >= 1

        # Traffic goes on without B (requests started once B was seen down).
        assert load.wait_count(load.count() + 200)
        after_down = [r for r in load.snapshot() if r[0] >= down_at]
        assert len(after_down) >= 100
        assert {r[3] for r in after_down} <= {"A", "C"}

        # Restarted on the same port: back after its ejection time, rise x interval.
        testbackend_factory("B", port=b.port)
        assert wait_for(lambda: server(lb, b)["healthy"], 5.0, 0.05), lb_stats(lb.port)
        back_at = time.monotonic()
        assert wait_for(lambda: any(r[3] == "B" and r[0] >= back_at for r in load.snapshot()), 5.0), "B got no traffic"
        time.sleep(max(0.0, 4.0 - (time.monotonic() - killed_at)))  # keep the load going ~4 s in all

    results = load.snapshot()
    assert len(results) > 1000
    assert load.failures() == []
    assert server(lb, b)["state"] == "up"
    # The ejection was announced on stderr with its reason.
    assert lb.wait_for_output("agora lb: server %s ejected for" % backend_url(b))
    line = re.search(r"agora lb: server %s ejected for (\d+) ms: (.*)" % re.escape(backend_url(b)), lb.output())
    assert line, lb.output()
    assert line.group(1) == "500"
    assert line.group(2) in ("connect failed", "connection reset")


def eject_5xx(lb):
    status, _, _ = http_request(LOCALHOST, lb.port, "GET", "/status?code=500")
    assert status == 500


def test_ejection_time_doubles_and_is_capped(testbackend_factory, lb_factory):
    # One server, which may be ejected (--max-ejection 100) by a single 5xx (--eject-5xx 1).
    # Each time it comes back (first passing check after the ejection time, rise 1) it is
    # ejected again at once: 300, 600, then the 1000 ms cap, twice.
    a = testbackend_factory("A")
    lb = lb_factory([a], "--max-ejection", "100", "--eject-5xx", "1", "--eject-time", "300ms",
                    "--eject-max-time", "1s", "--health-interval", "50ms", "--health-rise", "1")
    for k in range(4):
        eject_5xx(lb)
        entry = server(lb, a)
        assert (entry["healthy"], entry["state"], entry["ejections"]) == (False, "down", k + 1)
        # While ejected, passing checks do not count; with no healthy server the balancer answers
        # 503 itself.
        assert wait_for(lambda: server(lb, a)["last_check"] == "HTTP 200 (ejected)", 2.0, 0.01)
        assert http_request(LOCALHOST, lb.port, "GET", "/")[0] == 503
        assert wait_for(lambda: server(lb, a)["healthy"], 3.0, 0.02), lb_stats(lb.port)

    assert lb.wait_for_output("ejected for 1000 ms")
    time.sleep(0.2)  # let the last lines arrive
    times = re.findall(r"agora lb: server %s ejected for (\d+) ms: consecutive 5xx responses"
                       % re.escape(backend_url(a)), lb.output())
    assert times == ["300", "600", "1000", "1000"]


def test_max_ejection_caps_passive_ejections(testbackend_factory, lb_factory):
    # Four servers, three of them dead: passive health may take out at most 50% (two); the third
    # dead one stays in (active checks, every minute here, have not noticed). Requests that meet
    # a dead server are refused before anything was sent and retried elsewhere.
    backends = [testbackend_factory(name) for name in "ABCD"]
    lb = lb_factory(backends, "--policy", "round-robin", "--health-interval", "60s", "--retries", "3")
    for dead in backends[:3]:
        kill(dead)

    answers = [http_request(LOCALHOST, lb.port, "GET", "/") for _ in range(20)]
    assert [(s, h["x-backend"]) for s, h, _ in answers] == [(200, "D")] * 20
    entries = lb_server_stats(lb.port)
    states = [entries[backend_url(x)]["state"] for x in backends]
    assert states.count("down") == 2
    assert states[3] == "up"
    assert sorted(entries[backend_url(x)]["ejections"] for x in backends) == [0, 0, 1, 1]
    assert lb.wait_for_output("connect failed\n")
    time.sleep(0.2)  # let any further line arrive before counting
    assert len(re.findall(r"ejected for \d+ ms: connect failed", lb.output())) == 2


def test_reset_and_response_timeout_eject_at_once(testbackend_factory, lb_factory):
    # Two servers (max-ejection 50% allows one out), no retries: the one request that fails
    # ejects the server that got it for the base ejection time (default 2 s), whatever active
    # checks say (they pass: /health is fine).
    a, b = testbackend_factory("A"), testbackend_factory("B")
    lb = lb_factory([a, b], "--retries", "0", "--response-timeout", "300ms")

    status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/reset")
    assert status == 502
    down = [x for x in (a, b) if not server(lb, x)["healthy"]]
    assert len(down) == 1
    assert (server(lb, down[0])["state"], server(lb, down[0])["ejections"]) == ("down", 1)
    assert lb.wait_for_output("agora lb: server %s ejected for 2000 ms: connection reset\n" % backend_url(down[0]))

    # The other one now takes everything; a response timeout would eject it too, but the cap
    # of 50% keeps it in: it answers 504 and stays up.
    up = b if down[0] is a else a
    status, _, _ = http_request(LOCALHOST, lb.port, "GET", "/delay?ms=2000", timeout=10)
    assert status == 504
    assert server(lb, up)["healthy"] is True
    assert "ejected for 2000 ms: response timeout" not in lb.output()


def test_response_timeout_ejects(testbackend_factory, lb_factory):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    lb = lb_factory([a, b], "--retries", "0", "--response-timeout", "300ms", "--eject-time", "1s")

    status, _, _ = http_request(LOCALHOST, lb.port, "GET", "/delay?ms=2000", timeout=10)
    assert status == 504
    down = [x for x in (a, b) if not server(lb, x)["healthy"]]
    assert len(down) == 1
    assert lb.wait_for_output("agora lb: server %s ejected for 1000 ms: response timeout\n" % backend_url(down[0]))
    # The other one serves; the ejected one comes back after its time (checks every 200 ms).
    assert {http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] for _ in range(4)} == {
        ({a, b} - set(down)).pop().name}
    assert wait_for(lambda: server(lb, down[0])["healthy"], 5.0, 0.05)
