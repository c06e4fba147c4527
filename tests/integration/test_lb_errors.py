"""agora lb: what clients get when a backend fails, and what the balancer counts.

502 "Error communicating with backend server\\n" when the backend resets or dies mid-request,
504 "Backend server timed out\\n" past --response-timeout, 413 past --max-body-size; after each,
the balancer keeps serving. A request that may have reached a backend is never replayed unless
it is safe to repeat.
"""

import os
import socket
import struct
import threading
import time

import pytest

from helpers import LOCALHOST, CaptureBackend, RawConnection, backend_url, http_request, lb_server_stats, lb_stats, wait_for

BAD_GATEWAY = b"Error communicating with backend server\n"
TIMED_OUT = b"Backend server timed out\n"


def records(path):
    return path.read_text().splitlines() if path.exists() else []


def assert_error(response, status, body):
    got_status, headers, got_body = response
    assert (got_status, got_body) == (status, body)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(body))
    assert "x-backend" not in headers


def test_backend_reset_gives_502(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--passive-health", "off")

    assert_error(http_request(LOCALHOST, lb.port, "GET", "/reset"), 502, BAD_GATEWAY)
    assert http_request(LOCALHOST, lb.port, "GET", "/")[::2] == (200, b"hello from A\n")


def test_backend_crash_gives_502_and_traffic_moves_on(testbackend_factory, lb_factory):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    lb = lb_factory([a, b], "--policy", "round-robin")

    assert_error(http_request(LOCALHOST, lb.port, "POST", "/crash", body=b"x"), 502, BAD_GATEWAY)
    assert a.popen.wait(timeout=5) == 1  # round-robin sent the first request to A, which died
    seen = [http_request(LOCALHOST, lb.port, "GET", "/") for _ in range(6)]
    assert [(s, h["x-backend"]) for s, h, _ in seen] == [(200, "B")] * 6


def test_unsafe_request_is_never_replayed(testbackend_factory, lb_factory, tmp_path):
    paths = [tmp_path / ("%s.txt" % name) for name in "ABC"]
    backends = [testbackend_factory(name, "--record", str(p)) for name, p in zip("ABC", paths)]
    lb = lb_factory(backends, "--health-path", "/hc")

    assert_error(http_request(LOCALHOST, lb.port, "POST", "/reset", body=b"order=1"), 502, BAD_GATEWAY)
    # The POST reached one backend, which may have acted on it: it was not sent again.
    sent = [line for p in paths for line in records(p) if line != "GET /hc"]
    assert sent == ["POST /reset"]


def test_safe_request_is_retried_on_the_other_servers(testbackend_factory, lb_factory, tmp_path):
    paths = [tmp_path / ("%s.txt" % name) for name in "ABC"]
    backends = [testbackend_factory(name, "--record", str(p)) for name, p in zip("ABC", paths)]
    lb = lb_factory(backends, "--health-path", "/hc")
    for _ in range(50):  # each request earns 20 % of a retry (--retry-budget 20)
        assert http_request(LOCALHOST, lb.port, "GET", "/")[0] == 200

    assert_error(http_request(LOCALHOST, lb.port, "GET", "/reset"), 502, BAD_GATEWAY)
    # A GET may be repeated: after A, B or C reset it, the two others were tried, once each.
    assert [[line for line in records(p) if line == "GET /reset"] for p in paths] == [["GET /reset"]] * 3


def test_retry_budget_starts_with_ten_retries(testbackend_factory, lb_factory, tmp_path):
    paths = [tmp_path / ("%s.txt" % name) for name in "ABC"]
    backends = [testbackend_factory(name, "--record", str(p)) for name, p in zip("ABC", paths)]
    lb = lb_factory(backends, "--health-path", "/hc")

    assert_error(http_request(LOCALHOST, lb.port, "GET", "/reset"), 502, BAD_GATEWAY)
    assert [[line for line in records(p) if line == "GET /reset"] for p in paths] == [["GET /reset"]] * 3


def test_response_timeout_gives_504(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--response-timeout", "300ms", "--passive-health", "off")

    assert_error(http_request(LOCALHOST, lb.port, "GET", "/delay?ms=2000", timeout=10), 504, TIMED_OUT)
    assert http_request(LOCALHOST, lb.port, "GET", "/delay?ms=100")[::2] == (200, b"delayed 100 ms\n")
    assert lb_server_stats(lb.port)[backend_url(backend)]["in_flight"] == 0


class ScriptBackend:
    """A raw backend: health checks get 200 and a close; every other request runs
    answer(sock) on its own thread."""

    def __init__(self, answer):
        self.answer = answer
        self.listener = socket.create_server((LOCALHOST, 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                sock.close()
                return
            head += data
        if head.startswith(b"GET /health "):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            sock.close()
            return
        try:
            self.answer(sock)
        except OSError:
            sock.close()

    def close(self):
        self.listener.close()


def reset(sock):
    """Closes with a TCP reset (RST) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def drip_backend(pieces, gaps):
    """A raw backend that answers each non-health request with a Content-Length head and then
    its body one piece at a time, sleeping `gaps[i]` seconds before piece i."""

    def answer(sock):
        with sock:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b"".join(pieces)))
            for piece, gap in zip(pieces, gaps):
                time.sleep(gap)
                sock.sendall(piece)
            time.sleep(1)

    return ScriptBackend(answer)


def test_response_timeout_is_the_longest_gap_in_a_body(lb_factory):
    """Regression: --response-timeout ("response head, and gaps in its body", docs/CONFIG.md) was
    armed once, at the response head, so a body that kept flowing was cut once the timeout had
    passed since the head, whatever its gaps."""
    pieces = [b"%d" % i * 10 for i in range(8)]
    steady = drip_backend(pieces, [0.15] * 8)  # 1.2 s in all, never 0.5 s without a byte
    stalled = drip_backend(pieces[:3], [0.15, 0.15, 1.5])  # the third piece comes after 1.5 s
    try:
        lb = lb_factory([steady.port], "--response-timeout", "500ms", "--passive-health", "off")
        status, _, body = http_request(LOCALHOST, lb.port, "GET", "/drip", timeout=10)
        assert (status, body) == (200, b"".join(pieces))

        lb = lb_factory([stalled.port], "--response-timeout", "500ms", "--passive-health", "off")
        with RawConnection(lb.port, timeout=5) as conn:
            conn.send(b"GET /drip HTTP/1.1\r\nHost: t\r\n\r\n")
            start = time.monotonic()
            head = conn.read_until(b"\r\n\r\n")
            rest = conn.read_until_closed()  # the balancer cuts the response it cannot complete
            elapsed = time.monotonic() - start
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 30\r\n" in head
        assert rest == pieces[0] + pieces[1]
        assert 0.6 < elapsed < 1.4, elapsed  # 0.3 s of pieces, then 0.5 s of silence
    finally:
        steady.close()
        stalled.close()


def test_response_timeout_does_not_run_while_a_slow_client_holds_the_body(lb_factory):
    """Regression: while the client's queue is full the balancer stops reading the backend, and
    the response timer went on running: a slow client reading a large body for longer than
    --response-timeout after the head had its response cut (the backend was not late; the
    client's own --client-send-timeout is what bounds a client that stops reading)."""
    body = b"0123456789abcdef" * (1 << 20)  # 16 MiB: far more than the socket buffers hold
    backend = CaptureBackend(response=b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    try:
        lb = lb_factory([backend.port], "--response-timeout", "300ms", "--passive-health", "off")
        with RawConnection(lb.port, timeout=10) as conn:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            conn.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            head = conn.read_until(b"\r\n\r\n")
            got, start = len(conn.buf), time.monotonic()
            conn.buf = b""
            while got < len(body):
                time.sleep(0.004)  # about 16 MB/s at most: the transfer takes over a second
                data = conn.sock.recv(65536)
                if not data:
                    break
                got += len(data)
            elapsed = time.monotonic() - start
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert got == len(body), "cut after %d of %d bytes, %.2f s" % (got, len(body), elapsed)
        assert elapsed > 0.6  # the client was slower than the response timeout for a while
    finally:
        backend.stop()


def test_request_body_at_the_limit_is_forwarded(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--max-body-size", "1k")

    status, _, body = http_request(LOCALHOST, lb.port, "POST", "/sink", body=b"x" * 1024)
    assert (status, body) == (200, b'{"received": 1024, "chunked": false}\n')
    status, _, body = http_request(LOCALHOST, lb.port, "POST", "/sink", body=iter([b"x" * 1000, b"y" * 24]))
    assert (status, body) == (200, b'{"received": 1024, "chunked": true}\n')


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_body_over_the_limit_gives_413(testbackend_factory, lb_factory, tmp_path, framing):
    record = tmp_path / "a.txt"
    backend = testbackend_factory("A", "--record", str(record))
    lb = lb_factory([backend], "--max-body-size", "1k", "--health-path", "/hc")

    with RawConnection(lb.port) as conn:
        if framing == "content-length":
            # The head alone says it is too large: the answer comes before the body is sent.
            conn.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n")
        else:
            conn.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"401\r\n" + b"x" * 1025 + b"\r\n")
        status, headers, body = conn.read_response()
    assert (status, body) == (413, b"request body too large\n")
    assert headers["connection"] == "close"
    assert [line for line in records(record) if line != "GET /hc"] in ([], ["POST /sink"])


def test_upgrade_request_to_a_backend_that_does_not_switch_is_answered_as_http(testbackend_factory, lb_factory):
    """WebSocket upgrades are forwarded (test_lb_websocket.py); testbackend does not switch, so its
    ordinary answer is relayed and the connection goes on as HTTP. CONNECT is still 501."""
    lb = lb_factory([testbackend_factory("A")])
    with RawConnection(lb.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        status, _, body = conn.read_response()
        assert (status, body) == (200, b"hello from A\n")
        conn.send(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
        status, _, body = conn.read_response()
    assert (status, body) == (501, b"not implemented: CONNECT and protocol upgrades are not supported\n")


@pytest.mark.parametrize("path, status", [("/reset", 502), ("/delay?ms=2000", 504)])
def test_errors_counter_counts_each_failed_request_once(testbackend_factory, lb_factory, path, status):
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--response-timeout", "300ms", "--passive-health", "off", "--retries", "0")

    assert http_request(LOCALHOST, lb.port, "GET", path, timeout=10)[0] == status
    server = lb_server_stats(lb.port)[backend_url(backend)]
    assert (server["requests"], server["errors"]) == (1, 1)


def test_backend_5xx_counts_as_an_error(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    lb = lb_factory([backend])

    for path in ("/status?code=500", "/", "/status?code=404"):
        http_request(LOCALHOST, lb.port, "GET", path)
    server = lb_server_stats(lb.port)[backend_url(backend)]
    assert (server["requests"], server["errors"], server["healthy"]) == (3, 1, True)


def test_consecutive_5xx_eject_a_server(testbackend_factory, lb_factory):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    lb = lb_factory([a, b], "--policy", "round-robin", "--eject-5xx", "3", "--eject-time", "1h")

    # Round-robin alternates A, B: A answers three 500s in a row, B three 200s.
    for _ in range(3):
        assert http_request(LOCALHOST, lb.port, "GET", "/status?code=500")[1]["x-backend"] == "A"
        assert http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] == "B"
    assert wait_for(lambda: not lb_server_stats(lb.port)[backend_url(a)]["healthy"], 2), lb_stats(lb.port)
    seen = [http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] for _ in range(4)]
    assert seen == ["B"] * 4
    assert lb.wait_for_output("agora lb: server %s ejected for " % backend_url(a), 5), lb.output()


@pytest.mark.parametrize("retry_after", [True, False])
def test_a_503_with_retry_after_is_load_shedding_not_a_failure(lb_factory, retry_after):
    """A server whose queue is full answers 503 with Retry-After (agora server's pools do, under a
    flood of log-ins): that is a live server shedding load, so passive health does not eject it
    (it neither extends nor ends a 5xx streak). A bare 503 still counts."""
    extra = b"Retry-After: 1\r\n" if retry_after else b""

    def answer(sock):
        sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\n" + extra +
                     b"Content-Length: 4\r\nConnection: close\r\n\r\nbusy")
        sock.close()

    backend = ScriptBackend(answer)
    try:
        lb = lb_factory([backend.port], "--eject-5xx", "3", "--eject-time", "1h", "--max-ejection", "100",
                        "--retries", "0")
        for _ in range(6):
            assert http_request(LOCALHOST, lb.port, "GET", "/")[0] == 503
        server = lb_server_stats(lb.port)[backend_url(backend.port)]
        # with Retry-After: six answers from the server, still in; without: ejected after three
        assert (server["healthy"], server["ejections"], server["requests"]) == (
            (True, 0, 6) if retry_after else (False, 1, 3)), server
    finally:
        backend.close()


@pytest.mark.parametrize("ending", ["fin", "rst"])
def test_only_a_clean_close_completes_a_close_delimited_body(lb_factory, ending):
    """Regression: a reset ended a close-delimited body as if complete (an HTTP/1.1 client got the
    last chunk, "0\\r\\n\\r\\n", for a body cut short). A FIN completes it; a reset cuts the client."""

    def answer(sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\n\r\nsome of the body")
        time.sleep(0.3)
        if ending == "rst":
            reset(sock)
        else:
            sock.close()

    backend = ScriptBackend(answer)
    try:
        lb = lb_factory([backend.port])
        with RawConnection(lb.port) as conn:
            conn.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            data = conn.read_until_closed(timeout=10) if ending == "rst" else None
            if ending == "fin":
                status, headers, body = conn.read_response()
                assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"some of the body")
        if ending == "rst":
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"some of the body" in data
            assert not data.endswith(b"0\r\n\r\n")  # never told the body is complete
    finally:
        backend.close()


def test_backend_reset_while_the_client_is_full_does_not_spin(lb_factory):
    """Regression: when the backend reset the connection while reads from it were paused (the
    client's queue was full), the kernel's level-triggered error came back at once, forever: the
    worker spun at 100 % CPU until the client drained. Now the exchange fails at once (the
    client is cut). Checked by the balancer's CPU time over 1.5 s: a spin uses all of it."""

    def answer(sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
        sock.settimeout(2)
        try:
            sock.sendall(b"z" * (32 << 20))  # more than the client's queue and the buffers take
        except OSError:
            pass
        reset(sock)

    backend = ScriptBackend(answer)
    try:
        lb = lb_factory([backend.port], "--health-interval", "60s")
        client = socket.create_connection((LOCALHOST, lb.port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.recv(12) == b"HTTP/1.1 200"
        time.sleep(3)  # the backend gives up sending after 2 s and resets
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu():
            fields = open("/proc/%d/stat" % lb.pid).read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        before = cpu()
        time.sleep(1.5)
        assert cpu() - before < 0.5
        client.close()
    finally:
        backend.close()
