"""Review of issue 15 (idle connections hold no buffers) and what came with it: attacks on the
per-worker block pools of `agora lb`, the lazily re-armed timers and the graceful stop.

- test_idle_timeout_pushed_back_many_times: a connection whose idle timer is pushed back by
  requests spaced just under the idle timeout stays open through all of them, then times out
  after silence at the right moment (not early, not much late).
- test_heads_at_block_and_limit_boundaries: request heads of max_head - 1, max_head and
  max_head + 1 bytes, and of exactly one and two 16 KB blocks' worth of pipelined bytes.
- test_pipelined_second_head_straddles_block: the second head of a pipelined pair starts a few
  bytes before the 16 KB block boundary.
- test_rss_plateaus_under_mixed_traffic: rounds of pipelined, half-closed and aborted (RST)
  connections: the balancer's VmRSS after the later rounds is not above the first's by more than
  noise.
- test_graceful_stop_with_connections_in_every_state: SIGTERM with idle, partial-head, mid-body
  and waiting-for-backend connections: the requests under way are answered, the idle one is
  closed, the process exits 0 in time.
"""

import json
import signal
import socket
import struct
import time

import pytest

from helpers import LOCALHOST, RawConnection, rss_kib


@pytest.fixture
def backend(testbackend_factory):
    return testbackend_factory("A")


def _read_all(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _head_of_size(size, target=b"/"):
    """A GET head of exactly size bytes (padding in one header)."""
    base = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nX-Pad: \r\n\r\n"
    assert size >= len(base)
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (size - len(base)))


def test_idle_timeout_pushed_back_many_times(backend, lb_factory):
    lb = lb_factory([backend], "--client-idle-timeout", "600ms", "--max-conns-per-ip", "0")
    with RawConnection(lb.port) as conn:
        for i in range(12):
            conn.send(b"GET /?i=%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            status, _, _ = conn.read_response()
            assert status == 200, "request %d" % i
            time.sleep(0.45)  # just under the idle timeout, so it is pushed back each time
        conn.send(b"GET /last HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, _ = conn.read_response()
        assert status == 200
        t0 = time.monotonic()
        conn.sock.settimeout(5)
        assert conn.sock.recv(1) == b""
        waited = time.monotonic() - t0
    assert 0.55 <= waited <= 1.0, "idle connection closed after %.3f s (idle timeout 0.6 s)" % waited


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_heads_at_block_and_limit_boundaries(backend, lb_factory, delta):
    lb = lb_factory([backend], "--max-conns-per-ip", "0")
    head = _head_of_size(16384 + delta)
    with socket.create_connection((LOCALHOST, lb.port), timeout=5) as s:
        s.sendall(head)
        s.shutdown(socket.SHUT_WR)
        data = _read_all(s)
    if delta <= 0:
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    else:
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]


@pytest.mark.parametrize("first", [16384 - 40, 16384 - 1, 16384, 16384 + 1, 32768 - 20])
def test_pipelined_second_head_straddles_block(backend, lb_factory, first):
    """Requests pipelined so that a head starts right before, at or after a 16 KB block edge;
    every answer comes, in order, with its own target."""
    lb = lb_factory([backend], "--max-conns-per-ip", "0")
    reqs = []
    total = 0
    i = 0
    # Fill up to `first` bytes with echo POSTs whose bodies pad the stream, then a few more.
    while total < first:
        left = first - total
        base = b"POST /echo?i=%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
        body_len = max(0, min(8000, left - len(base % (i, 0000))))
        r = base % (i, body_len) + b"b" * body_len
        reqs.append(r)
        total += len(r)
        i += 1
    for j in range(3):
        reqs.append(b"GET /echo?i=%d HTTP/1.1\r\nHost: t\r\nX-Long: %s\r\n\r\n" % (i, b"h" * 900))
        i += 1
    stream = b"".join(reqs)
    with RawConnection(lb.port) as conn:
        # Sent in pieces cut at the block edges.
        cuts = sorted({0, 16383, 16384, 16385, first, len(stream)})
        for a, b in zip(cuts, cuts[1:]):
            if a < b:
                conn.send(stream[a:b])
                time.sleep(0.01)
        for k in range(i):
            status, _, body = conn.read_response()
            assert status == 200, k
            assert json.loads(body)["target"] == "/echo?i=%d" % k


def _mixed_round(port, n_conns):
    """n_conns connections: pipelined keep-alive, half-closed after pipelined requests, aborted
    with a reset mid-head, mid-body and while waiting for the answer."""
    ok = 0
    for k in range(n_conns):
        kind = k % 5
        s = socket.create_connection((LOCALHOST, port), timeout=5)
        try:
            if kind in (0, 1):
                reqs = b"".join(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" for _ in range(20))
                if kind == 1:
                    s.sendall(reqs)
                    s.shutdown(socket.SHUT_WR)
                    data = _read_all(s)
                    ok += data.count(b"HTTP/1.1 200 ")
                    continue
                reader = RawConnection.__new__(RawConnection)
                RawConnection.__init__(reader, port)
                try:
                    reader.send(reqs)
                    for _ in range(20):
                        ok += reader.read_response()[0] == 200
                finally:
                    reader.close()
                continue
            if kind == 2:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Partial: " + b"p" * 3000)
            elif kind == 3:
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 20000)
            else:
                s.sendall(b"GET /delay?ms=20 HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.001)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            s.close()
    return ok


def test_rss_plateaus_under_mixed_traffic(backend, lb_factory, agora_bin):
    if "asan" in str(agora_bin):
        pytest.skip("ASan's quarantine makes resident memory meaningless here")
    lb = lb_factory([backend], "--max-conns-per-ip", "0")
    rounds = []
    for r in range(5):
        ok = _mixed_round(lb.port, 500)
        assert ok == 500 // 5 * 2 * 20
        time.sleep(0.3)
        rounds.append(rss_kib(lb.pid))
    # After the first round has warmed the pools and the allocator, memory must plateau.
    assert rounds[-1] - rounds[1] < 2048, "VmRSS per round (KiB): %s" % rounds


def test_graceful_stop_with_connections_in_every_state(backend, lb_factory):
    lb = lb_factory([backend], "--max-conns-per-ip", "0")
    lb.expect_status = None  # stopped here
    idle = RawConnection(lb.port)
    idle.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert idle.read_response()[0] == 200
    partial = socket.create_connection((LOCALHOST, lb.port), timeout=5)
    partial.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
    body = socket.create_connection((LOCALHOST, lb.port), timeout=5)
    body.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345")
    waiting = socket.create_connection((LOCALHOST, lb.port), timeout=5)
    waiting.sendall(b"GET /delay?ms=700 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.3)
    t0 = time.monotonic()
    lb.popen.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    body.sendall(b"67890")
    partial.sendall(b"\r\n")
    got_body = _read_all(body)
    got_partial = _read_all(partial)
    got_waiting = _read_all(waiting)
    idle.sock.settimeout(5)
    assert idle.sock.recv(1) == b""
    assert got_body.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in got_body, got_body[:300]
    assert got_partial.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in got_partial, got_partial[:300]
    assert got_waiting.startswith(b"HTTP/1.1 200 "), got_waiting[:300]
    assert lb.popen.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    for s in (partial, body, waiting):
        s.close()
    idle.close()


def test_graceful_stop_closes_keepalive_connection_once_its_queued_response_is_out(backend, lb_factory):
    """SIGTERM while a complete keep-alive response is still queued for a slow reader (the
    connection is between requests, its output not empty): once the client has read it, the
    connection is closed and the balancer exits, instead of waiting for the idle timeout."""
    lb = lb_factory([backend], "--max-conns-per-ip", "0", "--client-idle-timeout", "20s")
    lb.expect_status = None  # stopped here
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect((LOCALHOST, lb.port))
    n = 1200000
    s.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
    time.sleep(0.5)  # the whole response is read from the backend and queued: request done
    t0 = time.monotonic()
    lb.popen.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    data = _read_all(s, timeout=8)
    closed_after = time.monotonic() - t0
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and len(body) == n, (head, len(body))
    assert closed_after < 3, "connection closed %.1f s after SIGTERM" % closed_after
    assert lb.popen.wait(timeout=10) == 0


def test_resets_at_every_stage_leave_the_balancer_clean(backend, lb_factory):
    """Mixed rounds under any build (ASan sees a use after give-back: the pools poison cached
    blocks), plus a slow reader holding a large response that resets mid-way and one that
    closes mid-way: later requests on fresh connections are answered whole."""
    lb = lb_factory([backend], "--max-conns-per-ip", "0")
    assert _mixed_round(lb.port, 200) == 200 // 5 * 2 * 20
    for how in ("rst", "close", "rst", "close"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect((LOCALHOST, lb.port))
        s.sendall(b"GET /bytes?n=8000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)
        got = s.recv(30000)
        assert got.startswith(b"HTTP/1.1 200 ")
        time.sleep(0.1)
        if how == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    # A body streamed through a client the balancer pauses (a slow backend read): sent in
    # pieces with the connection half-closed after the body.
    with socket.create_connection((LOCALHOST, lb.port), timeout=5) as s:
        total = 3 * 1024 * 1024
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        piece = b"z" * 65536
        for _ in range(total // len(piece)):
            s.sendall(piece)
        s.shutdown(socket.SHUT_WR)
        data = _read_all(s)
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    for i in range(20):
        with RawConnection(lb.port) as conn:
            conn.send(b"POST /echo?after=%d HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok" % i)
            status, _, body = conn.read_response()
            assert status == 200 and json.loads(body)["target"] == "/echo?after=%d" % i


def test_buffered_server_pipelined_then_half_closed(tmp_path, agora_server_factory):
    """`agora server` (the buffered adapter, requests on the handler pool): pipelined API
    requests with bodies, a head near a block's size among them, then a half-close: every one is
    answered in order, none but the last with Connection: close, then the connection closes."""
    from helpers import free_port

    srv = agora_server_factory(free_port(), tmp_path / "db.sqlite")
    reqs = []
    for i in range(8):
        pad = b"q" * (15000 if i == 3 else 10)
        reqs.append(b"GET /api/v1/accounts/nobody%d HTTP/1.1\r\nHost: t\r\nX-Pad: %s\r\n\r\n" % (i, pad))
        reqs.append(b"POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\n\r\n{}")
    with RawConnection(srv.port, timeout=10) as conn:
        conn.send(b"".join(reqs))
        conn.shutdown_write()
        answers = [conn.read_response() for _ in range(len(reqs))]
        conn.sock.settimeout(5)
        assert conn.sock.recv(1) == b""
    statuses = [a[0] for a in answers]
    assert statuses[0::2] == [404] * 8, statuses
    assert all(s in (400, 422) for s in statuses[1::2]), statuses
    closes = [a[1].get("connection", "").lower() == "close" for a in answers]
    # None before the last says close. The last says it when the server read the end of stream
    # before that answer was done; the end comes in a read of its own, which may be the loop's
    # next iteration, after the handler finished (seen in CI): the close then follows unannounced.
    assert closes[:-1] == [False] * (len(reqs) - 1), closes
