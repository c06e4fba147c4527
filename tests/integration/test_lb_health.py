"""agora lb: active health checks and failover.

A server whose backend dies is taken out (active checks: after `fall` failed checks; passive
health: at the first failed connection) while clients keep getting 200s, because a connection
that fails before anything was sent is retried on another server. With every server down the
balancer answers 503 itself. A backend that comes back is let in again after `rise` passes.

Checks run every 200 ms here (--health-interval 200ms --health-fall 2 --health-rise 2); waits
for a state change are bounded by a few seconds, not timed.
"""

import http.client
import signal
import threading

import pytest

from helpers import LOCALHOST, backend_url, http_request, lb_server_stats, lb_stats, wait_for

CHECKS = ("--health-fall", "2", "--health-rise", "2")
STATE_WAIT = 3.0  # seconds; fall x interval and rise x interval are 0.4 s


def healthy(lb, backend):
    return lb_server_stats(lb.port)[backend_url(backend)]["healthy"]


def kill(backend):
    backend.popen.kill()
    backend.popen.wait(timeout=5)


class Traffic:
    """Sends GET / through the balancer from a background thread, on one keep-alive connection
    and on fresh connections alternately, until stopped. Records (status, X-Backend)."""

    def __init__(self, port):
        self.port = port
        self.results = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=5)
        try:
            while not self._stop.is_set():
                try:
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    resp.read()
                    self.results.append((resp.status, resp.getheader("X-Backend")))
                    status, headers, _ = http_request(LOCALHOST, self.port, "GET", "/")
                    self.results.append((status, headers.get("x-backend")))
                except Exception as err:  # counted as a failure
                    self.results.append(("error", repr(err)))
                    conn.close()
                    conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=5)
        finally:
            conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def wait_count(self, n):
        assert wait_for(lambda: len(self.results) >= n, 10), len(self.results)


@pytest.mark.parametrize("passive", ["on", "off"])
def test_dead_backend_is_taken_out_without_failing_requests(testbackend_factory, lb_factory, passive):
    a, b, c = [testbackend_factory(name) for name in "ABC"]
    lb = lb_factory([a, b, c], *CHECKS, "--passive-health", passive)

    def attempts_on_b():
        return lb_server_stats(lb.port)[backend_url(b)]["requests"]

    with Traffic(lb.port) as traffic:
        traffic.wait_count(30)
        kill(b)
        before_kill = traffic.results[:30]
        assert wait_for(lambda: not healthy(lb, b), STATE_WAIT), lb_stats(lb.port)
        attempts = attempts_on_b()
        traffic.wait_count(len(traffic.results) + 60)
        # Once B is out, nothing is sent its way.
        assert attempts_on_b() == attempts

    # Not one request failed: those that met the dead server were retried on another one.
    assert [r for r in traffic.results if r[0] != 200] == []
    assert {name for _, name in before_kill} == {"A", "B", "C"}
    server = lb_server_stats(lb.port)[backend_url(b)]
    assert (server["healthy"], server["state"]) == (False, "down")
    # (Passive health may have ejected B before a check failed; the next check says why.)
    assert wait_for(lambda: lb_server_stats(lb.port)[backend_url(b)]["last_check"]
                    == "connect failed: Connection refused", STATE_WAIT)


def test_failing_health_checks_take_a_live_server_out(testbackend_factory, lb_factory, tmp_path):
    flag = tmp_path / "b-unhealthy"
    a = testbackend_factory("A")
    b = testbackend_factory("B", "--health-file", str(flag))
    lb = lb_factory([a, b], *CHECKS, "--passive-health", "off", "--policy", "round-robin")

    flag.touch()  # B's /health answers 503 from now on, but B still serves requests
    assert wait_for(lambda: not healthy(lb, b), STATE_WAIT), lb_stats(lb.port)
    seen = [http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] for _ in range(6)]
    assert seen == ["A"] * 6
    server = lb_server_stats(lb.port)[backend_url(b)]
    assert (server["state"], server["last_check"]) == ("down", "HTTP 503")

    flag.unlink()
    assert wait_for(lambda: healthy(lb, b), STATE_WAIT), lb_stats(lb.port)
    seen = [http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] for _ in range(6)]
    assert sorted(seen) == ["A"] * 3 + ["B"] * 3


def test_rise_and_fall_count_consecutive_checks(testbackend_factory, lb_factory, tmp_path):
    """Checks are driven one round at a time: the interval is an hour, and each SIGHUP (a reload
    that changes nothing) runs a round at once. B's --record file counts the checks it got."""
    flag = tmp_path / "b-unhealthy"
    record = tmp_path / "b-requests.txt"
    a = testbackend_factory("A")
    b = testbackend_factory("B", "--health-file", str(flag), "--record", str(record))
    lb = lb_factory([a, b], "--health-fall", "2", "--health-rise", "3", "--health-interval", "1h",
                    "--passive-health", "off")
    url = backend_url(b)

    def checks():
        return record.read_text().splitlines().count("GET /health")

    def check_round():
        """Runs one more check of B (a SIGHUP is ignored while a check is still running)."""
        want = checks() + 1
        for _ in range(5):
            lb.popen.send_signal(signal.SIGHUP)
            if wait_for(lambda: checks() >= want, 2):
                break
        assert checks() == want

    def server():
        return lb_server_stats(lb.port)[url]

    assert (checks(), server()["state"]) == (1, "up")  # the start-up check
    flag.touch()
    check_round()
    assert wait_for(lambda: server()["last_check"] == "HTTP 503", 5)
    assert server()["state"] == "up"  # one failure is not enough with fall 2
    check_round()
    assert wait_for(lambda: server()["state"] == "down", 5), server()

    flag.unlink()
    check_round()
    assert wait_for(lambda: server()["last_check"] == "HTTP 200", 5)
    assert server()["state"] == "down"  # rise 3: one pass...
    check_round()
    assert server()["state"] == "down"  # ...two...
    check_round()
    assert wait_for(lambda: server()["state"] == "up", 5), server()  # ...three
    assert "reload failed" not in lb.output()


def test_first_check_decides_at_once(testbackend_factory, lb_factory, tmp_path):
    flag = tmp_path / "unhealthy"
    flag.touch()
    a = testbackend_factory("A")
    b = testbackend_factory("B", "--health-file", str(flag))
    dead = testbackend_factory("dead")
    dead.stop()
    # fall 5 at 1 h intervals: only the first check can have taken these servers out. (No
    # panic mode: with one server in three healthy it would balance over all of them.)
    lb = lb_factory([a, b, dead.port], "--health-fall", "5", "--health-interval", "1h",
                    "--passive-health", "off", "--panic-threshold", "0")

    servers = lb_stats(lb.port)["servers"]
    assert [(s["healthy"], s["state"], s["last_check"]) for s in servers] == [
        (True, "up", "HTTP 200"),
        (False, "down", "HTTP 503"),
        (False, "down", "connect failed: Connection refused"),
    ]
    seen = {http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] for _ in range(10)}
    assert seen == {"A"}


@pytest.mark.parametrize("threshold, expected", [("50", {"A", "B", "C"}), ("0", {"A"})])
def test_panic_mode_balances_over_all_servers(testbackend_factory, lb_factory, tmp_path, threshold, expected):
    flag = tmp_path / "unhealthy"
    flag.touch()
    a = testbackend_factory("A")
    b, c = [testbackend_factory(name, "--health-file", str(flag)) for name in "BC"]
    lb = lb_factory([a, b, c], "--panic-threshold", threshold, "--passive-health", "off",
                    "--policy", "round-robin")
    assert list(lb_stats(lb.port)["health"].values()) == [True, False, False]

    # One server in three is healthy: below a 50 % threshold every server takes traffic (the
    # health verdict is presumed wrong), with the threshold off only the healthy one does.
    seen = [http_request(LOCALHOST, lb.port, "GET", "/") for _ in range(9)]
    assert [s for s, _, _ in seen] == [200] * 9
    assert {h["x-backend"] for _, h, _ in seen} == expected


def test_all_servers_down_answers_503(testbackend_factory, lb_factory):
    backends = [testbackend_factory(name) for name in "AB"]
    lb = lb_factory(backends, *CHECKS)
    assert http_request(LOCALHOST, lb.port, "GET", "/")[0] == 200

    for b in backends:
        kill(b)
    assert wait_for(lambda: not any(lb_stats(lb.port)["health"].values()), STATE_WAIT), lb_stats(lb.port)

    for method, path in [("GET", "/"), ("POST", "/sink"), ("GET", "/echo?x=1")]:
        status, headers, body = http_request(LOCALHOST, lb.port, method, path, body=b"x" if method == "POST" else None)
        assert (status, body) == (503, b"No healthy servers available\n")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["content-length"] == str(len(body))
        assert headers["retry-after"] == "1"
    # The balancer itself is fine.
    assert http_request(LOCALHOST, lb.port, "GET", "/health")[::2] == (200, b"OK")


def test_all_backends_dead_before_any_check_noticed(testbackend_factory, lb_factory):
    backends = [testbackend_factory(name) for name in "ABC"]
    # One check at start, then none for an hour: the servers stay "up" until requests fail.
    lb = lb_factory(backends, "--health-interval", "1h")

    for b in backends:
        kill(b)
    # Every server is tried (1 + 2 retries), each refuses: 502.
    status, _, body = http_request(LOCALHOST, lb.port, "GET", "/")
    assert (status, body) == (502, b"Error communicating with backend server\n")
    servers = lb_stats(lb.port)["servers"]
    assert [s["requests"] for s in servers] == [1, 1, 1]
    # Passive health ejects at most half of the servers (--max-ejection 50): one of three.
    assert [s["healthy"] for s in servers].count(False) == 1
    status, _, body = http_request(LOCALHOST, lb.port, "GET", "/")
    assert (status, body) == (502, b"Error communicating with backend server\n")


def test_restarted_backend_comes_back(testbackend_factory, lb_factory):
    a, b, c = [testbackend_factory(name) for name in "ABC"]
    lb = lb_factory([a, b, c], *CHECKS, "--passive-health", "off", "--policy", "round-robin")

    kill(b)
    assert wait_for(lambda: not healthy(lb, b), STATE_WAIT), lb_stats(lb.port)
    seen = [http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] for _ in range(6)]
    assert sorted(seen) == ["A"] * 3 + ["C"] * 3

    testbackend_factory("B", port=b.port)  # the same address again
    assert wait_for(lambda: healthy(lb, b), STATE_WAIT), lb_stats(lb.port)
    server = lb_server_stats(lb.port)[backend_url(b)]
    assert (server["state"], server["last_check"]) == ("up", "HTTP 200")
    seen = [http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] for _ in range(9)]
    assert sorted(seen) == ["A"] * 3 + ["B"] * 3 + ["C"] * 3
