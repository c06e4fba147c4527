"""Hostile review of 3592605 (a stale pooled connection on the only server left is retried on that
server, on a new connection).

A failure on a reused pooled connection is taken for a stale one (the backend closed an idle
connection as the balancer took it) and retried without retry budget and without a passive health
verdict, now on the same server too. docs/CONFIG.md allows a retry after sending only when "no
byte of the response came". These tests play backends that answer the first request of each
connection and misbehave on the second (the reused one), and check what the client gets and what
the backend saw, exactly.
"""

import socket
import threading
import time

from h2raw import H2
from agora_test.lb import admin_request
from helpers import LOCALHOST, RawConnection, backend_url, free_port, http_request, lb_server_stats
from test_lb_errors import ScriptBackend
from test_lb_h2 import h2_lb  # noqa: F401 (fixture)
from test_lb_tls import certs  # noqa: F401 (fixture)


class SecondRequestBackend(ScriptBackend):
    """Answers the first request on each connection with 200 "first\\n" (keep-alive); on the
    second one (a pooled connection reused) runs second(sock, request) and closes. Health checks
    (GET /health) get 200 and a close. .requests: (connection number, request line, body) of
    every other request, in arrival order."""

    def __init__(self, second):
        self.second = second
        self.requests = []
        self._lock = threading.Lock()
        self._nconn = 0
        super().__init__(None)  # listens and accepts, each connection on its own thread (_serve)

    @staticmethod
    def _read_head(sock, buf):
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return None, buf
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    @staticmethod
    def _read_body(sock, head, rest):
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                break
            rest += data
        return rest[:length], rest[length:]

    def _serve(self, sock):
        with sock:
            try:
                buf = b""
                served = 0
                conn = None
                while True:
                    head, buf = self._read_head(sock, buf)
                    if head is None:
                        return
                    line = head.split(b"\r\n", 1)[0].decode("latin-1")
                    if line.startswith("GET /health "):
                        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                        return
                    if conn is None:
                        with self._lock:
                            self._nconn += 1
                            conn = self._nconn
                    served += 1
                    if served == 2:
                        body = self.second(sock, head, buf)
                        with self._lock:
                            self.requests.append((conn, line, body))
                        return
                    body, buf = self._read_body(sock, head, buf)
                    with self._lock:
                        self.requests.append((conn, line, body))
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfirst\n")
            except OSError:
                return


def warm_then(conn, request):
    """Sends GET /warm (the backend's first request on its connection: answered, and the connection
    pooled), then request, which the balancer sends on that pooled connection; -> its response."""
    conn.send(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
    assert conn.read_response()[::2] == (200, b"first\n")
    conn.send(request)
    return conn.read_response()


def hint_then_close(sock, head, rest):
    """The backend has the request and begins answering (103 Early Hints), then dies."""
    sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    return b""


def continue_then_close(sock, head, rest):
    """100 Continue, reads the whole body (the request was processed), then dies unanswered."""
    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    body, _ = SecondRequestBackend._read_body(sock, head, rest)
    return body


def read_then_close(sock, head, rest):
    """Reads the whole request, then closes without a byte (what a stale connection looks like)."""
    body, _ = SecondRequestBackend._read_body(sock, head, rest)
    return body


LB_FLAGS = ("--passive-health", "off", "--retries", "2")


def test_an_interim_response_then_a_close_is_not_a_stale_connection(lb_factory):
    # 103 Early Hints on the reused connection says the backend has the request and works on it:
    # "no byte of the response came" no longer holds, and this is no idle connection closed as it
    # was taken. Alone, the server is not tried again (before: replayed there without budget).
    backend = SecondRequestBackend(hint_then_close)
    try:
        lb = lb_factory([backend.port], *LB_FLAGS)
        with RawConnection(lb.port, timeout=5) as conn:
            status, _, _ = warm_then(conn, b"GET /hinted HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 502
        assert [(c, line) for c, line, _ in backend.requests] == [(1, "GET /warm HTTP/1.1"),
                                                                  (1, "GET /hinted HTTP/1.1")]
    finally:
        backend.close()


def test_a_100_continue_then_a_close_is_not_a_stale_connection(lb_factory):
    # A PUT (idempotent) with Expect: 100-continue: the backend asks for the body, reads it, and
    # dies before answering. It had the whole request; the client got the 100 from it. No stale
    # connection: the only server is not sent the PUT again.
    backend = SecondRequestBackend(continue_then_close)
    try:
        lb = lb_factory([backend.port], *LB_FLAGS)
        with RawConnection(lb.port, timeout=5) as conn:
            conn.send(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
            assert conn.read_response()[::2] == (200, b"first\n")
            conn.send(b"PUT /doc HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            assert conn.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue\r\n")
            conn.send(b"hello")
            status, _, _ = conn.read_response()
        assert status == 502
        assert backend.requests == [(1, "GET /warm HTTP/1.1", b""), (1, "PUT /doc HTTP/1.1", b"hello")]
    finally:
        backend.close()


def test_a_post_on_a_stale_connection_is_not_replayed_on_the_same_server(lb_factory):
    # A POST without Idempotency-Key that reached the backend may have been processed: never
    # sent again, not even on a new connection to the same server.
    backend = SecondRequestBackend(read_then_close)
    try:
        lb = lb_factory([backend.port], *LB_FLAGS)
        with RawConnection(lb.port, timeout=5) as conn:
            status, _, _ = warm_then(conn, b"POST /pay HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n100")
        assert status == 502
        assert backend.requests == [(1, "GET /warm HTTP/1.1", b""), (1, "POST /pay HTTP/1.1", b"100")]
    finally:
        backend.close()


def test_a_stale_connection_with_retries_0_is_not_retried(lb_factory):
    # --retries 0: no extra attempt at all, a stale connection's included.
    backend = SecondRequestBackend(read_then_close)
    try:
        lb = lb_factory([backend.port], "--passive-health", "off", "--retries", "0")
        with RawConnection(lb.port, timeout=5) as conn:
            status, _, _ = warm_then(conn, b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 502
        assert [(c, line) for c, line, _ in backend.requests] == [(1, "GET /warm HTTP/1.1"), (1, "GET /again HTTP/1.1")]
    finally:
        backend.close()


def test_a_stale_get_goes_once_more_on_a_new_connection_never_more(lb_factory):
    # Every reused connection dies: each request after the first is sent exactly twice (the
    # second time on a new connection), whatever --retries allows: no loop on the same server.
    backend = SecondRequestBackend(read_then_close)
    try:
        lb = lb_factory([backend.port], "--passive-health", "off", "--retries", "8", "--retry-budget", "0")
        with RawConnection(lb.port, timeout=5) as conn:
            for i in range(4):
                conn.send(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
                assert conn.read_response()[::2] == (200, b"first\n")
        # Connection k answers p(k-1) and dies on p(k), which connection k+1 answers.
        assert [(c, line) for c, line, _ in backend.requests] == [(1, "GET /p0 HTTP/1.1")] + [
            (c, "GET /p%d HTTP/1.1" % i) for i in range(1, 4) for c in (i, i + 1)]
    finally:
        backend.close()


def head_then_close(sock, head, rest):
    """Reads the head only, then closes: the body (if any) never reached it."""
    return rest


def test_a_websocket_upgrade_takes_a_new_connection_never_a_pooled_one(lb_factory):
    # An upgrade is never sent twice (px->safe), so one that met a dead pooled connection got
    # 502 where any other GET is sent again: it takes a new connection at once (the backend here
    # answers it with a plain 200: no tunnel opens). Before: 502 after conn 1 read it.
    backend = SecondRequestBackend(read_then_close)
    try:
        lb = lb_factory([backend.port], *LB_FLAGS)
        with RawConnection(lb.port, timeout=5) as conn:
            conn.send(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
            assert conn.read_response()[::2] == (200, b"first\n")
            conn.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            assert conn.read_response()[::2] == (200, b"first\n")
        assert [(c, line) for c, line, _ in backend.requests] == [(1, "GET /warm HTTP/1.1"), (2, "GET /ws HTTP/1.1")]
    finally:
        backend.close()


def test_an_expect_continue_put_on_a_stale_connection_is_sent_whole_on_a_new_one(lb_factory):
    # The PUT's head (Expect: 100-continue) meets a dead pooled connection before its body left
    # the client: the head goes again on a new connection, and the body, sent by the client
    # when no 100 came, follows it there whole.
    backend = SecondRequestBackend(head_then_close)
    try:
        lb = lb_factory([backend.port], *LB_FLAGS)
        with RawConnection(lb.port, timeout=5) as conn:
            conn.send(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
            assert conn.read_response()[::2] == (200, b"first\n")
            conn.send(b"PUT /doc HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            time.sleep(0.3)  # no 100 Continue: a client sends its body anyway after a while
            conn.send(b"hello")
            assert conn.read_response()[::2] == (200, b"first\n")
        assert backend.requests == [(1, "GET /warm HTTP/1.1", b""), (1, "PUT /doc HTTP/1.1", b""),
                                    (2, "PUT /doc HTTP/1.1", b"hello")]
    finally:
        backend.close()


def cut_mid_body(sock, head, rest):
    """Answers with a head and part of the body, then dies."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    return b""


def test_a_response_cut_mid_body_on_a_reused_connection_is_a_server_failure(lb_factory):
    # Only a connection that dies before any byte of answer is stale (no verdict on the server).
    # One that dies in the middle of a response is a failing server, reused connection or not:
    # passive health ejects it as it does after a reset (before: "stale", never ejected).
    a = SecondRequestBackend(cut_mid_body)
    b = SecondRequestBackend(read_then_close)
    try:
        lb = lb_factory([a.port, b.port], "--policy", "round-robin", "--retries", "2")
        with RawConnection(lb.port, timeout=5) as conn:
            for path in (b"/a0", b"/b0"):  # one pooled connection at each
                conn.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
                assert conn.read_response()[::2] == (200, b"first\n")
            conn.send(b"GET /a1 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert conn.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
            assert conn.read_until_closed() == b"0123456789"  # the response cannot be completed
        assert [(c, line) for c, line, _ in a.requests] == [(1, "GET /a0 HTTP/1.1"), (1, "GET /a1 HTTP/1.1")]
        server = lb_server_stats(lb.port)[backend_url(a.port)]
        assert (server["healthy"], server["ejections"]) == (False, 1)
    finally:
        a.close()
        b.close()


def test_h2_streams_at_once_on_a_backend_dropping_every_reused_connection(h2_lb):
    # Rounds of 6 streams at once on one HTTP/2 connection; the only backend drops every pooled
    # connection it is sent a request on. Every stream is answered from a new connection: a
    # stream that met a pooled one is sent once more (new connection), never a third time.
    backend = SecondRequestBackend(read_then_close)
    try:
        lb = h2_lb("--passive-health", "off", "--retries", "2", "--retry-budget", "0", backends=[backend.port])
        c = H2(lb.tls_port, lb.ca)
        try:
            for r in range(4):
                sids = {c.request("/r%d-%d" % (r, k)): k for k in range(6)}
                got = [c.wait_stream(sid)[:2] for sid in sids]
                assert got == [(200, b"first\n")] * 6, r
        finally:
            c.close()
        seen = {}
        for conn, line, _ in backend.requests:
            seen.setdefault(line, []).append(conn)
        first_of = {}
        for conn, line, _ in backend.requests:
            first_of.setdefault(conn, line)
        assert sorted(seen) == sorted("GET /r%d-%d HTTP/1.1" % (r, k) for r in range(4) for k in range(6))
        for line, conns in seen.items():
            # Once, on a new connection; or first on a pooled one, then on a new one.
            assert len(conns) in (1, 2) and first_of[conns[-1]] == line, (line, conns)
        assert max(len(v) for v in seen.values()) == 2  # pooled connections were met, and dropped
    finally:
        backend.close()


def test_a_server_removed_while_its_request_waits_gets_no_stale_retry(lb_factory):
    # A request waits on a pooled connection to A; the admin API removes A and another request
    # makes the worker take the new set; then A drops the connection unanswered. A is out of the
    # set: the request is not sent there again (before: retried on the removed A, 200).
    gate, held = threading.Event(), threading.Event()

    def hold_then_close(sock, head, rest):
        held.set()
        gate.wait(10)
        return b""

    a = SecondRequestBackend(hold_then_close)
    dead = free_port()  # B: refused, down from its first check; no panic mode
    admin_port = free_port()
    try:
        lb = lb_factory([a.port, dead], "--passive-health", "off", "--retries", "2", "--panic-threshold", "0",
                        "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
        with RawConnection(lb.port, timeout=5) as conn:
            conn.send(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
            assert conn.read_response()[::2] == (200, b"first\n")
            conn.send(b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n")
            assert held.wait(5)
            assert admin_request(admin_port, "DELETE", "/servers/%s:%d" % (LOCALHOST, a.port))[0] == 200
            # Another client: the worker takes the set without A (B is down: 503).
            assert http_request(LOCALHOST, lb.port, "GET", "/other")[0] == 503
            gate.set()
            status, _, _ = conn.read_response()
        assert status == 502
        assert [(c, line) for c, line, _ in a.requests] == [(1, "GET /warm HTTP/1.1"), (1, "GET /held HTTP/1.1")]
    finally:
        gate.set()
        a.close()
