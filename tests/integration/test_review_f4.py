"""review-f4: a hostile look at what the balancer does with what is in flight on a server marked
down. The review of 50f6325 (the marking check said GONE, SILENT or ANSWERED, and a server silent
for `fall` more checks or refusing one was marked GONE, which ended its POSTs) found that this
ended POSTs a live server was still committing: one draining (its listener closed: checks
refused), one streaming an answer while too busy for its checks. Now what cannot move is left to
its server and its connection is probed instead (proxy.c px_server_down): here every server is a
live process on loopback, which acknowledges the probes, so nothing it holds is ended; a real cut
link is in test_ft_marked_down.py.

Server A is a ScriptBackend: it holds every request but /health and /fail (a POST there may still
be committed: .release() answers them 200, X-Backend: A), /fail answers 500 at once, and each
/health check takes the next verdict of .script ("ok", "503", "silent": no answer, the check times
out; "close": the connection closed without an answer), or .health when the script is empty.
B is a plain testbackend. Checks every 200 ms, timeout 300 ms, fall 2, rise 2, response timeout
30 s unless said otherwise.
"""

import socket
import threading
import time

import pytest

from agora_test.backends import ThreadedBackend
from agora_test.load import Calls
from helpers import LOCALHOST, backend_url, http_request, lb_server_stats, record_lines, wait_for

RESPONSE_TIMEOUT = "30s"
STREAM_CHUNKS = 40  # /stream: 400 bytes over 4 s


def lines(record):
    return [l for l in record_lines(record) if not l.startswith("GET /health")]


class ScriptBackend(ThreadedBackend):
    def __init__(self):
        self.health = "ok"
        self.script = []
        self.checks = []  # verdicts served, in order
        self.requests = []  # request lines held
        self.tunnels = 0
        self._lock = threading.Lock()
        self._held = []
        super().__init__()

    def run_script(self, verdicts):
        with self._lock:
            self.script = list(verdicts)
            self.mark = len(self.checks)

    def script_done(self):
        with self._lock:
            return not self.script

    def _verdict(self):
        with self._lock:
            v = self.script.pop(0) if self.script else self.health
            self.checks.append(v)
            return v

    def _serve(self, sock):
        try:
            line = self.read_head(sock)
            if line is None:
                return
            if line.startswith("GET /health "):
                v = self._verdict()
                if v == "silent":
                    self.drain(sock)
                elif v == "close":
                    pass
                else:
                    status = b"200 OK" if v == "ok" else b"503 Service Unavailable"
                    sock.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                sock.close()
                return
            if line.split()[1] == "/ws":  # a tunnel: 101, then every byte echoed
                self.tunnels += 1
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"X-Backend: A\r\n\r\n")
                while True:
                    data = sock.recv(4096)
                    if not data:
                        return
                    sock.sendall(data)
            if line.split()[1] == "/fail":
                sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nX-Backend: A\r\n"
                             b"Connection: close\r\n\r\n")
                sock.close()
                return
            self.requests.append(line)
            if line.split()[1].startswith("/stream"):  # a response that keeps coming, 10 bytes/100 ms
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: A\r\n\r\n" % (STREAM_CHUNKS * 10))
                for _ in range(STREAM_CHUNKS):
                    time.sleep(0.1)
                    sock.sendall(b"0123456789")
                return
            self._held.append(sock)
            self.drain(sock)
        except OSError:
            return

    def release(self):
        for sock in self._held:
            try:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Backend: A\r\n\r\ndone")
            except OSError:
                pass


@pytest.fixture
def script_pair(testbackend_factory, lb_factory, tmp_path):
    """start(*flags, b_args=()) -> (lb, ScriptBackend A, B's record): round-robin over A and B."""
    made = []

    def start(*flags, b_args=()):
        a = ScriptBackend()
        made.append(a)
        rec_b = tmp_path / "b.txt"
        good = testbackend_factory("B", "--record", str(rec_b), *b_args)
        lb = lb_factory([a.port, good], "--policy", "round-robin", "--health-fall", "2", "--health-rise", "2",
                        "--health-timeout", "300ms", "--response-timeout", RESPONSE_TIMEOUT, *flags)
        return lb, a, rec_b

    try:
        yield start
    finally:
        for a in made:
            a.stop()


def one_post_held_on_a(lb, a, rec_b, n=2, headers=None):
    """n POSTs (round-robin: about half are held by A); returns (Calls, paths, the path A holds)."""
    paths = ["/order-%d" % i for i in range(n)]
    calls = Calls(lb.port, [("POST", p, headers, b"x") for p in paths])
    assert wait_for(lambda: len(a.requests) + len(lines(rec_b)) == n, 5), (a.requests, lines(rec_b))
    assert len(a.requests) >= 1
    return calls, paths, a.requests[0].split()[1]


def a_stats(lb, a):
    return lb_server_stats(lb.port)[backend_url(a.port)]



@pytest.mark.parametrize("how", ["silent", "503", "close", "drain"])
def test_a_post_on_a_live_server_marked_down_is_left_to_finish(script_pair, how):
    # However A's checks fail (time out: too busy; 503: not ready; closed without an answer;
    # refused: draining, its listener closed) for longer than the probe time (3 s), A is alive and
    # may still commit the POST: it is left to A, which answers it.
    lb, a, rec_b = script_pair("--passive-health", "off")
    calls, paths, held = one_post_held_on_a(lb, a, rec_b, n=1)
    if how == "drain":
        a.close_listener()
    else:
        a.health = how
    assert wait_for(lambda: a_stats(lb, a)["healthy"] is False, 5)
    time.sleep(4.5)  # past the probe time: the connection is alive
    assert calls.results[0] is None, calls.results
    a.release()
    assert calls.join()[0][:2] == (200, "A")
    assert lines(rec_b) == []  # reached A only


def test_a_check_passing_during_an_ejection_leaves_the_post_to_its_server(script_pair):
    # A POST held by A, which is then ejected by passive health (one 500, --eject-5xx 1) and
    # marked down by two checks that time out; the checks then go silent, ok, silent, ok...: the
    # POST is left to A, which answers it.
    lb, a, rec_b = script_pair("--eject-5xx", "1", "--eject-time", "60s")
    calls, paths, held = one_post_held_on_a(lb, a, rec_b, n=1)
    for i in range(6):  # round-robin: the next request or the one after goes to A
        status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/fail")
        if headers.get("x-backend") == "A":
            assert status == 500
            break
    assert wait_for(lambda: a_stats(lb, a)["ejections"] == 1, 2), a_stats(lb, a)
    a.run_script(["silent", "silent"] + ["silent", "ok"] * 4)
    assert wait_for(a.script_done, 15), a.checks
    time.sleep(0.3)
    assert a_stats(lb, a)["healthy"] is False
    assert calls.results[0] is None, calls.results  # still left to A
    a.release()
    assert calls.join()[0][:2] == (200, "A")
    assert [l for l in lines(rec_b) if l != "GET /fail"] == []  # the POST reached A only


def test_a_post_moved_off_a_silent_server_is_not_touched_by_what_follows(script_pair):
    # B holds every request 3 s. A keyed POST held by A moves to B when A is marked down; A's
    # checks then keep failing, refused at the end (A's listener closed): B's try goes on and
    # answers 200, the POST reached B exactly once and A once.
    lb, a, rec_b = script_pair("--passive-health", "off", "--retry-budget", "100", b_args=("--delay-ms", "3000"))
    calls, paths, held = one_post_held_on_a(lb, a, rec_b, n=2, headers={"Idempotency-Key": "k-1"})
    a.health = "silent"
    assert wait_for(lambda: a_stats(lb, a)["healthy"] is False, 5)
    a.close_listener()
    results = calls.join()
    assert [r[:2] for r in results] == [(200, "B"), (200, "B")], results
    assert sorted(lines(rec_b)) == sorted("POST " + p for p in paths)
    assert [l.split()[1] for l in a.requests] == [held]


def test_a_post_left_on_a_silent_server_gets_504_at_the_response_timeout(script_pair):
    # The POST is left to A, which never answers: the 1.2 s response timeout ends it: 504, not
    # 502, not a hang.
    lb, a, rec_b = script_pair("--passive-health", "off", "--response-timeout", "1200ms")
    calls, paths, held = one_post_held_on_a(lb, a, rec_b, n=1)
    a.health = "silent"
    r = calls.join()[0]
    assert r[:2] == (504, None), r
    assert 1.1 <= r[2] < 2.0, r


@pytest.mark.parametrize("value, message", [
    ("0", "agora up: --db-wait must be 1ms..1h (got '0')"),
    ("0s", "agora up: --db-wait must be 1ms..1h (got '0s')"),
    ("2h", "agora up: --db-wait must be 1ms..1h (got '2h')"),  # the row's maximum was not checked
    ("3601s", "agora up: --db-wait must be 1ms..1h (got '3601s')"),
    ("99999999999h", "agora up: --db-wait: '99999999999h' is not a duration (e.g. 500ms, 10s, 2m)"),
    ("soon", "agora up: --db-wait: 'soon' is not a duration (e.g. 500ms, 10s, 2m)"),
    ("-1s", "agora up: --db-wait: '-1s' is not a duration (e.g. 500ms, 10s, 2m)"),
    ("", "agora up: --db-wait: '' is not a duration (e.g. 500ms, 10s, 2m)"),
])
def test_up_db_wait_bad_values_are_refused_clearly(agora_bin, tmp_path, value, message):
    import subprocess

    out = subprocess.run([str(agora_bin), "up", "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--db",
                          "postgresql:///agora?host=%s&user=agora" % tmp_path, "--db-wait", value],
                         capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stderr.strip().splitlines()[0]) == (2, message), out.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made


@pytest.fixture
def panic_trio(testbackend_factory, lb_factory, tmp_path):
    """start(*flags) -> (lb, A, D, B's record): round-robin over ScriptBackends A and D and a good
    testbackend B; D's checks answer 503 (down) all along."""
    made = []

    def start(*flags):
        a, d = ScriptBackend(), ScriptBackend()
        made.extend([a, d])
        d.health = "503"
        rec_b = tmp_path / "b.txt"
        good = testbackend_factory("B", "--record", str(rec_b))
        lb = lb_factory([a.port, d.port, good], "--policy", "round-robin", "--health-fall", "2", "--health-rise",
                        "2", "--health-timeout", "300ms", "--response-timeout", RESPONSE_TIMEOUT, "--passive-health",
                        "off", *flags)
        assert wait_for(lambda: lb_server_stats(lb.port)[backend_url(d.port)]["healthy"] is False, 5)
        return lb, a, d, rec_b

    try:
        yield start
    finally:
        for s in made:
            s.stop()


def post_in_panic_on_a(lb, a, d, rec_b):
    """A answering 503 too: only B is up (1 of 3, below the 50 % panic threshold), so POSTs go to
    every server; returns (Calls, the path A holds)."""
    a.health = "503"
    assert wait_for(lambda: a_stats(lb, a)["healthy"] is False, 5)
    paths = ["/order-%d" % i for i in range(3)]
    calls = Calls(lb.port, [("POST", p, None, b"x") for p in paths])
    assert wait_for(lambda: len(a.requests) + len(d.requests) + len(lines(rec_b)) == 3, 5)
    assert len(a.requests) == 1, (a.requests, d.requests, lines(rec_b))  # panic mode: A got one
    return calls, paths, a.requests[0].split()[1]


def test_a_post_sent_in_panic_mode_is_left_to_its_server(panic_trio):
    # The POST went to A while A was down (panic): A's checks then time out, and later A comes
    # back up and goes down again (its check connections closed without an answer). A is alive
    # all along: the POST is left to A, which answers it.
    lb, a, d, rec_b = panic_trio()
    calls, paths, held = post_in_panic_on_a(lb, a, d, rec_b)
    a.health = "silent"
    time.sleep(1.0)
    a.health = "ok"
    assert wait_for(lambda: a_stats(lb, a)["healthy"] is True, 5)
    a.health = "close"
    assert wait_for(lambda: a_stats(lb, a)["healthy"] is False, 5)
    time.sleep(0.5)
    assert calls.results[paths.index(held)] is None
    a.release()
    d.release()
    assert calls.join()[paths.index(held)][:2] == (200, "A")


def next_goes_to_a(lb):
    """Round-robin over A and B (one worker): probes with GET /fail (A answers 500, B 200) until
    the last probe went to B, so that the next request goes to A."""
    for _ in range(3):
        status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/fail")
        if headers.get("x-backend") == "B":
            return
    raise AssertionError("round-robin never reached B")


def read_responses(sock, timeout=10.0):
    """Every response on sock until it closes: [(status, X-Backend, body)]; the socket is read to
    its end (within timeout)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines_ = head.decode("latin-1").split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines_[1:])}
        n = int(hdrs.get("content-length", "0"))
        out.append((int(lines_[0].split()[1]), hdrs.get("x-backend"), rest[:n]))
        data = rest[n:]
    return out


PIPELINED = (b"POST /p1 HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"
             b"GET /g2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("how", ["silent", "close"])
def test_pipelined_post_left_on_a_down_server_then_the_next_request_goes_on(script_pair, how):
    # POST /p1 (held by A) and GET /g2 pipelined behind it. A's checks time out or are closed
    # without an answer: the POST is left to A, which answers it; then GET /g2 goes to B. Each
    # answered once, in order.
    lb, a, rec_b = script_pair("--passive-health", "off")
    next_goes_to_a(lb)
    sock = socket.create_connection((LOCALHOST, lb.port), timeout=10)
    sock.sendall(PIPELINED)
    assert wait_for(lambda: len(a.requests) == 1, 5)
    a.health = how
    assert wait_for(lambda: a_stats(lb, a)["healthy"] is False, 5)
    time.sleep(0.2)
    a.release()
    got = read_responses(sock)
    sock.close()
    assert got == [(200, "A", b"done"), (200, "B", got[1][2] if len(got) > 1 else None)], got
    assert a.requests == ["POST /p1 HTTP/1.1"]
    assert [l for l in lines(rec_b) if l != "GET /fail"] == ["GET /g2"]


def test_a_tunnel_on_a_server_marked_down_goes_on(script_pair):
    # A WebSocket tunnel to A goes on when A is marked down (its checks' connections are closed
    # without an answer) and its connection probed: bytes still go both ways.
    lb, a, rec_b = script_pair("--passive-health", "off")
    next_goes_to_a(lb)
    sock = socket.create_connection((LOCALHOST, lb.port), timeout=10)
    try:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert a.tunnels == 1
        sock.sendall(b"one")
        assert sock.recv(4096) == b"one"
        a.health = "close"
        assert wait_for(lambda: a_stats(lb, a)["healthy"] is False, 5)
        time.sleep(4.5)  # past the probe time
        sock.sendall(b"two")
        assert sock.recv(4096) == b"two"
    finally:
        sock.close()


def test_a_response_still_coming_from_a_server_too_busy_for_its_checks_is_not_cut(script_pair):
    # A streams a 400-byte response over 4 s (a POST's answer, say: it was committed) while its
    # checks time out: down after ~0.6 s. Bytes keep arriving all along, so the server is alive;
    # cutting the response there would make the client see a broken answer to a write that
    # happened (and repeat it). The response timeout between body reads bounds one that stops.
    lb, a, rec_b = script_pair("--passive-health", "off")
    next_goes_to_a(lb)
    sock = socket.create_connection((LOCALHOST, lb.port), timeout=10)
    sock.sendall(b"POST /stream HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
    assert wait_for(lambda: len(a.requests) == 1, 5)
    a.health = "silent"
    got = read_responses(sock)
    sock.close()
    assert a_stats(lb, a)["healthy"] is False
    assert [(st, b, len(body)) for st, b, body in got] == [(200, "A", STREAM_CHUNKS * 10)]
