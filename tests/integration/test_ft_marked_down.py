"""agora lb: requests in flight on a server that is marked down, and the per-try timeout.

A cut link sends no reset: a request already sent to that host would wait for the response
timeout. So (HAProxy's `on-marked-down shutdown-sessions`, Envoy's per-try timeout):

- When the active health checks mark a server down, every request still waiting for its
  response head there may move at once to another server when a retry is allowed (safe method or
  Idempotency-Key, kept in the replay buffer, --retries and the retry budget allow).
  What cannot move stays, whatever the checks saw (a timeout, a 503, a refused or closed
  connection): they cannot tell a cut link or a dead host from a live server too busy to answer
  them, draining or not ready, which may still commit a POST and answer it. The request's own
  connection can: it is probed (TCP keep-alive probes, unanswered ones watched): a live server
  acknowledges and is left to finish; over a cut link nothing comes back and the connection fails
  within ~4 s: a request that may not move is answered 502, a response already begun is cut (the
  client connection closes).
  Passive ejection does none of this.
- --try-timeout D: a try without a response head D after its connection is up and the request
  is all in is abandoned and the request moved under the same rules when another server is
  there; a request that may not move keeps waiting, bounded by --response-timeout, which bounds
  the wait for the head over all tries together.

The hanging server is either a testbackend with --delay-ms (every request but /health waits)
and --health-file (its /health answers 503 while the file exists: an answered check), or a
CutBackend below that holds requests and can stop answering its health checks (a check that
times out: a server too busy for them) or have its link cut for real (nftables drops every packet
to and from its port: agora_test/netcut.py). The good one is a plain testbackend; all record what they received.
Health checks every 200 ms, fall 2, timeout 300 ms.
"""

import json
import socket
import time

import pytest

from helpers import (LOCALHOST, admin_token, backend_url, free_port, http_request, lb_server_stats, record_lines,
                     wait_for)
from agora_test.backends import ThreadedBackend
from agora_test.load import Calls
from agora_test.netcut import PortCut
from agora_test.prom import metric_or_zero, parse_metrics

HANG_MS = "20000"
RESPONSE_TIMEOUT = "30s"  # far above every bound asserted here


def lines(record):
    return [l for l in record_lines(record) if not l.startswith("GET /health")]


def metrics(lb):
    # The admin listener (off by default in lb_factory) serves /metrics, with its token.
    status, _, body = http_request(LOCALHOST, lb.admin_port, "GET", "/metrics",
                                   headers={"Authorization": "Bearer " + admin_token(lb.admin_port)})
    assert status == 200
    return parse_metrics(body.decode())


def retries(lb, reason):
    return metric_or_zero(metrics(lb), "agora_lb_retries_total", reason=reason)


class CutBackend(ThreadedBackend):
    """A backend on a link about to be cut: it reads each request and holds it (mode "hang": no
    answer; "partial": the head, Content-Length: 100, and 10 bytes of body, then nothing).
    /health answers 200 while .health == "ok", 503 for "503", nothing at all for "silent" (a
    check times out, as when the server is too busy). .cut() cuts its link for real (PortCut:
    nothing arrives, nothing comes back). .requests: the request lines held, in order;
    .release() answers the held ones 200 (X-Backend: C), as a busy server catching up would."""

    def __init__(self, mode="hang"):
        self.mode = mode
        self.health = "ok"
        self.requests = []
        self._held = []
        super().__init__()
        self._link = PortCut(self.port)

    def _serve(self, sock):
        try:
            line = self.read_head(sock)
            if line is None:
                return
            if line.startswith("GET /health "):
                if self.health == "silent":
                    self.drain(sock)
                    return
                status = b"200 OK" if self.health == "ok" else b"503 Service Unavailable"
                sock.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                sock.close()
                return
            self.requests.append(line)
            self._held.append(sock)
            if self.mode == "partial":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Backend: P\r\n\r\n0123456789")
            self.drain(sock)
        except OSError:
            return

    def release(self):
        for sock in self._held:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Backend: C\r\n\r\ndone")

    def cut(self):
        ok, why = PortCut.available()
        if not ok:
            pytest.skip(why)
        self._link.cut()

    def stop(self):
        self._link.restore()
        super().stop()


@pytest.fixture
def cut_pair(testbackend_factory, lb_factory, tmp_path):
    """start(mode, *flags) -> (lb, CutBackend, good record): a CutBackend and a good testbackend B
    behind one worker, round-robin, checks every 200 ms with fall 2 and a 300 ms timeout."""
    cuts = []

    def start(mode, *flags):
        cut = CutBackend(mode)
        cuts.append(cut)
        rec_b = tmp_path / "b.txt"
        good = testbackend_factory("B", "--record", str(rec_b))
        admin_port = free_port()
        lb = lb_factory([cut.port, good], "--policy", "round-robin", "--health-fall", "2", "--health-timeout",
                        "300ms", "--response-timeout", RESPONSE_TIMEOUT, "--admin-listen",
                        "%s:%d" % (LOCALHOST, admin_port), *flags)
        lb.admin_port = admin_port
        return lb, cut, rec_b

    try:
        yield start
    finally:
        for cut in cuts:
            cut.stop()


def start_pair(testbackend_factory, lb_factory, tmp_path, *flags):
    """(lb, hanging backend, its health file, its record, good record)."""
    health_file = tmp_path / "hang-down"
    rec_h, rec_b = tmp_path / "h.txt", tmp_path / "b.txt"
    hang = testbackend_factory("H", "--delay-ms", HANG_MS, "--health-file", str(health_file), "--record", str(rec_h))
    good = testbackend_factory("B", "--record", str(rec_b))
    admin_port = free_port()
    lb = lb_factory([hang, good], "--policy", "round-robin", "--health-fall", "2", "--response-timeout",
                    RESPONSE_TIMEOUT, "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), *flags)
    lb.admin_port = admin_port
    return lb, hang, health_file, rec_h, rec_b


def wait_sent(record, n, timeout=5.0):
    """Waits until record holds n request lines (health checks aside)."""
    assert wait_for(lambda: len(lines(record)) >= n, timeout), lines(record)


def test_gets_in_flight_move_when_their_server_is_marked_down(testbackend_factory, lb_factory, tmp_path):
    lb, hang, health_file, rec_h, rec_b = start_pair(testbackend_factory, lb_factory, tmp_path, "--passive-health",
                                                     "off", "--access-log", str(tmp_path / "access.log"),
                                                     "--access-log-format", "json")
    n = 6
    calls = Calls(lb.port, [("GET", "/page-%d" % i, None, None) for i in range(n)])
    wait_sent(rec_h, n // 2)  # round-robin: every other one is waiting on H
    assert wait_for(lambda: len(lines(rec_b)) == n // 2, 5)
    time.sleep(0.3)
    marked = time.monotonic()
    health_file.touch()
    results = calls.join()
    took = time.monotonic() - marked

    assert [(s, b) for s, b, _ in results] == [(200, "B")] * n
    assert took < 3.0  # down after 2 failed checks (~0.6 s), far below the 30 s response timeout
    on_h = sorted(lines(rec_h))
    assert len(on_h) == n // 2
    # Every page reached B exactly once: the ones H held were moved there, none twice.
    assert sorted(lines(rec_b)) == sorted("GET /page-%d" % i for i in range(n))
    assert retries(lb, "marked_down") == n // 2
    assert retries(lb, "try_timeout") == 0
    lb.stop()  # flushes the access log
    log = [json.loads(l) for l in (tmp_path / "access.log").read_text().splitlines()]
    moved = sorted(e["request"].split()[1] for e in log if e["retry_reasons"] == ["marked_down"])
    assert moved == sorted(l.split()[1] for l in on_h)
    assert all(e["retries"] == 1 for e in log if e["retry_reasons"])
    assert sum(1 for e in log if e["retry_reasons"] == []) == n - n // 2


def test_try_timeout_moves_a_get_to_another_server(testbackend_factory, lb_factory, tmp_path):
    lb, hang, health_file, rec_h, rec_b = start_pair(testbackend_factory, lb_factory, tmp_path, "--passive-health",
                                                     "off", "--try-timeout", "300ms", "--retry-budget", "100")
    took = {}
    for i in range(6):
        t0 = time.monotonic()
        status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/item-%d" % i)
        took["/item-%d" % i] = time.monotonic() - t0
        assert (status, headers["x-backend"]) == (200, "B")
    on_h = [l.split()[1] for l in lines(rec_h)]
    assert len(on_h) >= 2  # round-robin sends some to H first
    for path, t in took.items():
        if path in on_h:
            assert 0.28 <= t < 1.5, (path, t)  # about the try timeout, not the response timeout
        else:
            assert t < 0.28, (path, t)
    assert sorted(lines(rec_b)) == sorted("GET /item-%d" % i for i in range(6))  # each exactly once
    assert retries(lb, "try_timeout") == len(on_h)
    assert retries(lb, "marked_down") == 0


def test_try_timeout_never_fails_a_post_by_itself(testbackend_factory, lb_factory, tmp_path):
    # A POST without a key may not move: past the try timeout it waits on, until the response
    # timeout (1.5 s here) answers 504. It reached one server only.
    lb, hang, health_file, rec_h, rec_b = start_pair(testbackend_factory, lb_factory, tmp_path, "--passive-health",
                                                     "off", "--try-timeout", "300ms", "--response-timeout", "1500ms")
    calls = Calls(lb.port, [("POST", "/order-%d" % i, None, b"x") for i in range(2)])
    results = calls.join()
    on_h = [l.split()[1] for l in lines(rec_h)]
    assert len(on_h) == 1
    i_h = int(on_h[0].rsplit("-", 1)[1])
    status, backend, t = results[i_h]
    assert (status, backend) == (504, None)
    assert 1.4 <= t < 3.0
    assert results[1 - i_h][:2] == (200, "B")
    assert lines(rec_b) == ["POST /order-%d" % (1 - i_h)]
    assert retries(lb, "try_timeout") == 0


def test_response_timeout_bounds_all_tries_together(testbackend_factory, lb_factory, tmp_path):
    # Two servers that both hold every request: the GET moves from the first to the second after
    # the 400 ms try timeout, waits there (no third server), and the 1 s response timeout,
    # counted from the first try, answers 504 at about 1 s, not 1.4 s.
    recs = [tmp_path / "h1.txt", tmp_path / "h2.txt"]
    hangs = [testbackend_factory("H%d" % i, "--delay-ms", HANG_MS, "--record", str(recs[i])) for i in range(2)]
    admin_port = free_port()
    lb = lb_factory(hangs, "--policy", "round-robin", "--passive-health", "off", "--try-timeout", "400ms",
                    "--response-timeout", "1s", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    lb.admin_port = admin_port
    t0 = time.monotonic()
    status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/slow", timeout=10)
    took = time.monotonic() - t0
    assert status == 504
    assert 0.95 <= took < 1.3, took
    assert [lines(r) for r in recs] == [["GET /slow"], ["GET /slow"]]
    assert retries(lb, "try_timeout") == 1


def test_a_slow_upload_does_not_count_against_the_try_timeout(testbackend_factory, lb_factory, tmp_path):
    # The try timer starts once the client's request is all in: a PUT whose body takes 1.2 s to
    # arrive is answered by the first server it went to, never moved by the 300 ms try timeout.
    recs = [tmp_path / "b.txt", tmp_path / "c.txt"]
    goods = [testbackend_factory(n, "--record", str(r)) for n, r in zip("BC", recs)]
    admin_port = free_port()
    lb = lb_factory(goods, "--policy", "round-robin", "--try-timeout", "300ms", "--retry-budget", "100",
                    "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    lb.admin_port = admin_port
    sock = socket.create_connection((LOCALHOST, lb.port), timeout=10)
    sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
    for piece in (b"a", b"b", b"c", b"d"):
        time.sleep(0.3)
        sock.sendall(piece)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert sorted(len(lines(r)) for r in recs) == [0, 1]
    assert retries(lb, "try_timeout") == 0


def test_a_try_timeout_is_one_5xx_for_passive_health_not_an_ejection(testbackend_factory, lb_factory, tmp_path):
    # Passive health on (the default, --eject-5xx 5): one try timeout on H moves the GET and
    # leaves H in rotation; five in a row eject it, as five 5xx would.
    lb, hang, health_file, rec_h, rec_b = start_pair(testbackend_factory, lb_factory, tmp_path, "--try-timeout",
                                                     "200ms", "--retry-budget", "100")
    i = 0
    while len(lines(rec_h)) < 1 and i < 4:
        status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/one-%d" % i)
        assert (status, headers["x-backend"]) == (200, "B")
        i += 1
    assert len(lines(rec_h)) == 1
    h = lb_server_stats(lb.port)[backend_url(hang)]
    assert (h["healthy"], h["ejections"]) == (True, 0)
    while len(lines(rec_h)) < 5 and i < 40:
        status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/more-%d" % i)
        assert (status, headers["x-backend"]) == (200, "B")
        i += 1
    assert len(lines(rec_h)) == 5
    h = lb_server_stats(lb.port)[backend_url(hang)]
    assert (h["healthy"], h["ejections"]) == (False, 1)
    assert retries(lb, "try_timeout") == 5


def wait_held(cut, n, timeout=5.0):
    assert wait_for(lambda: len(cut.requests) >= n, timeout), cut.requests


def test_post_on_a_cut_server_gets_502_once_it_stays_silent_keyed_ones_move(cut_pair):
    lb, cut, rec_b = cut_pair("hang", "--passive-health", "off", "--retry-budget", "100")
    calls = Calls(lb.port, [("POST", "/order-%d" % i, None, b"x") for i in range(2)]
                  + [("POST", "/keyed-%d" % i, {"Idempotency-Key": "k-%d" % i}, b"y") for i in range(2)])
    wait_held(cut, 2)
    assert wait_for(lambda: len(lines(rec_b)) == 2, 5)
    time.sleep(0.3)
    marked = time.monotonic()
    cut.cut()  # checks time out from now on, and the held connections hear nothing
    results = calls.join()
    took = time.monotonic() - marked

    # Two checks timing out (300 ms each) mark it down, the probes of the held connections fail
    # ~1 s + 3 s later: not the 30 s response timeout.
    assert 2.5 < took < 9.0
    held = [l.split()[1] for l in cut.requests]
    assert len(held) == 2
    by_path = dict(zip(["/order-0", "/order-1", "/keyed-0", "/keyed-1"], results))
    for path in held:
        if path.startswith("/order-"):
            assert by_path[path][:2] == (502, None)  # not safe to repeat: an error once the probe failed
        else:
            assert by_path[path][:2] == (200, "B")  # Idempotency-Key: replayed on B when it went down
    b_lines = lines(rec_b)
    for i in range(2):
        # A POST without a key reached exactly one server; a keyed one reached B once.
        assert ("/order-%d" % i in held) + (("POST /order-%d" % i) in b_lines) == 1
        assert b_lines.count("POST /keyed-%d" % i) == 1
    assert retries(lb, "marked_down") == sum(1 for p in held if p.startswith("/keyed-"))
    assert lb_server_stats(lb.port)[backend_url(cut.port)]["healthy"] is False


def test_a_post_on_a_server_too_busy_for_its_checks_is_left_to_finish(cut_pair):
    # review12 F4: checks that time out may be a server too busy to answer them in time, not a cut
    # link. A POST it holds may still be committed there, so marking it down does not answer that
    # POST 502 (the client would repeat a write that happened): it is left to the server, whose
    # connection answers the probes, and which answers the POST here well past the probe time.
    lb, cut, rec_b = cut_pair("hang", "--passive-health", "off")
    calls = Calls(lb.port, [("POST", "/order-%d" % i, None, b"x") for i in range(2)])
    wait_held(cut, 1)
    assert wait_for(lambda: len(lines(rec_b)) == 1, 5)
    cut.health = "silent"
    url = backend_url(cut.port)
    assert wait_for(lambda: lb_server_stats(lb.port)[url]["healthy"] is False, 5.0)
    time.sleep(4.5)
    assert calls.results[["/order-0", "/order-1"].index(cut.requests[0].split()[1])] is None  # still left
    cut.release()
    results = calls.join()
    held = cut.requests[0].split()[1]
    by_path = dict(zip(["/order-0", "/order-1"], results))
    assert by_path[held][:2] == (200, "C")
    other = "/order-1" if held == "/order-0" else "/order-0"
    assert by_path[other][:2] == (200, "B")
    assert lines(rec_b) == ["POST " + other]
    assert retries(lb, "marked_down") == 0
    assert lb_server_stats(lb.port)[url]["healthy"] is False


def test_a_server_answering_not_ready_finishes_what_cannot_move(testbackend_factory, lb_factory, tmp_path):
    # H's checks are answered (503: a live server whose database is down, say): the GETs held
    # there move to B at once, a POST without a key is left to H, which answers it itself.
    health_file = tmp_path / "h-down"
    rec_h, rec_b = tmp_path / "h.txt", tmp_path / "b.txt"
    hang = testbackend_factory("H", "--delay-ms", "2500", "--health-file", str(health_file), "--record", str(rec_h))
    good = testbackend_factory("B", "--record", str(rec_b))
    admin_port = free_port()
    lb = lb_factory([hang, good], "--policy", "round-robin", "--health-fall", "2", "--passive-health", "off",
                    "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    lb.admin_port = admin_port
    calls = Calls(lb.port, [("GET", "/page-%d" % i, None, None) for i in range(2)]
                  + [("POST", "/order-%d" % i, None, b"x") for i in range(2)])
    wait_sent(rec_h, 2)
    assert wait_for(lambda: len(lines(rec_b)) == 2, 5)
    marked = time.monotonic()
    health_file.touch()
    assert wait_for(lambda: retries(lb, "marked_down") >= 1, 2.0)
    results = calls.join()
    by_path = dict(zip(["/page-0", "/page-1", "/order-0", "/order-1"], results))
    for line in lines(rec_h):
        method, path = line.split()
        if method == "GET":
            assert by_path[path][:2] == (200, "B")
            assert by_path[path][2] < 2.0  # moved when H went down, not H's 2.5 s
        else:
            assert by_path[path][:2] == (200, "H")  # H answered it after all
    assert time.monotonic() - marked < 5.0
    assert retries(lb, "marked_down") == sum(1 for l in lines(rec_h) if l.startswith("GET "))


def test_spent_budget_no_retry_by_try_timeout_nor_marked_down(cut_pair):
    # --retry-budget 0: the worker starts with 10 retries and earns none. The try timeout spends
    # them on GETs held by the cut server; after that a GET held there is not moved: past the try
    # timeout it keeps waiting, and when the link is cut the server is marked down (the budget
    # refuses the move again) and the probe of its connection fails: 502.
    lb, cut, rec_b = cut_pair("hang", "--passive-health", "off", "--retry-budget", "0", "--try-timeout", "200ms")
    for i in range(40):
        if retries(lb, "try_timeout") == 10:
            break
        status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/spend-%d" % i)
        assert (status, headers["x-backend"]) == (200, "B")
    assert retries(lb, "try_timeout") == 10
    assert len(cut.requests) == 10
    calls = Calls(lb.port, [("GET", "/late-%d" % i, None, None) for i in range(2)])
    wait_held(cut, 11)
    time.sleep(0.6)  # three try timeouts: refused by the budget, the try goes on
    assert metric_or_zero(metrics(lb), "agora_lb_retry_budget_refusals_total") == 1
    late = cut.requests[10].split()[1]
    i_late = int(late.rsplit("-", 1)[1])
    assert calls.results[i_late] is None  # still waiting
    marked = time.monotonic()
    cut.cut()
    results = calls.join()
    assert time.monotonic() - marked < 9.0
    assert results[i_late][:2] == (502, None)
    assert results[1 - i_late][:2] == (200, "B")
    assert retries(lb, "try_timeout") == 10
    assert retries(lb, "marked_down") == 0
    # Refused once more when it was marked down, and once more when the probe failed.
    assert metric_or_zero(metrics(lb), "agora_lb_retry_budget_refusals_total") == 3
    assert "GET " + late not in lines(rec_b)


def test_response_begun_on_a_cut_server_is_cut(cut_pair):
    lb, cut, rec_b = cut_pair("partial", "--passive-health", "off")
    got = None
    for i in range(2):  # round-robin: one of two GETs goes to the cut server
        sock = socket.create_connection((LOCALHOST, lb.port), timeout=10)
        sock.sendall(b"GET /doc-%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        if b"x-backend: p" in data.lower():
            got = (sock, data)
            break
        sock.close()
    assert got is not None
    sock, data = got
    while not data.endswith(b"0123456789"):
        data += sock.recv(4096)
    marked = time.monotonic()
    cut.cut()
    rest = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    took = time.monotonic() - marked
    sock.close()
    assert rest == b""  # the body stops short of its Content-Length: the client sees a cut
    assert took < 9.0  # down after two silent checks, the probe failed ~4 s later
    assert len(cut.requests) == 1
    assert "GET " + cut.requests[0].split()[1] not in lines(rec_b)  # not retried
    assert retries(lb, "marked_down") == 0
