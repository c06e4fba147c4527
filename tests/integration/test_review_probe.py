"""review-probe: a hostile look at fa979ef (a request that cannot move off a server marked down
stays and its backend connection is probed).

fa979ef probed with TCP keep-alive and TCP_USER_TIMEOUT = max(check timeout, 3 s). The promise:
"a live peer acknowledges and the exchange is left to finish". But TCP_USER_TIMEOUT also bounds
how long a live peer may keep its receive window closed while the balancer has data for it (Linux
>= 5.11, "tcp: fix TCP_USER_TIMEOUT with zero window"): a live, busy server that did not read a
request body for 3 s had its connection aborted (502), though it acknowledged every window probe;
and a probed connection went back to the pool with its user timeout, to do the same to a later
request on a server that was up again. Now (proxy.c on_px_probe_timer) no user timeout: keep-alive
probes, and the balancer looks at TCP_INFO: a probe or retransmission unanswered and nothing from
the peer for the probe time ends the exchange; a probed connection is never pooled again.

UploadBackend: a live server on loopback with a tiny receive buffer. /health answers 200 until
.busy is set, then 503 (a live server saying it is not ready: the checks mark it down). POST
/upload (/upload-quiet: without setting .busy) is held: its head is read, then nothing for HOLD_S
seconds (window closed), then the whole body is read and answered 200 "got N"; /upload-read reads
the body as it comes; /upload-never never reads it; GET /slow answers after 2 s; GET /big sends
BIG bytes. .cut() cuts its link for real (nftables, agora_test/netcut.py).
"""

import socket
import threading
import time

import pytest

from agora_test.backends import ThreadedBackend
from agora_test.netcut import PortCut
from agora_test.prom import metric_or_zero, parse_metrics
from helpers import LOCALHOST, admin_token, free_port, http_request, wait_for

HOLD_S = 7
BODY = 16 * 1024 * 1024
BIG = 32 * 1024 * 1024  # GET /big: a response far over every buffer on the way


class UploadBackend(ThreadedBackend):
    def __init__(self):
        self.busy = False
        self.got = []  # body sizes read, per upload
        self.heads = 0
        self.conns = 0  # connections that carried a request other than a check
        self.holds = []  # paths of GET /hold... received
        super().__init__(rcvbuf=4096)  # inherited by accepted sockets: an upload stays unread

    def _serve(self, sock):
        first = True
        try:
            while True:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(1)  # the head only, byte by byte: the body stays unread
                    if not data:
                        return
                    buf += data
                head = buf.decode()
                line = head.split("\r\n", 1)[0]
                if line.startswith("GET /health "):
                    status = b"503 Service Unavailable" if self.busy else b"200 OK"
                    sock.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    sock.close()
                    return
                length = 0
                for h in head.split("\r\n")[1:]:
                    if h.lower().startswith("content-length:"):
                        length = int(h.split(":", 1)[1])
                self.heads += 1
                if first:
                    self.conns += 1
                    first = False
                if line.startswith("POST /later"):
                    self.busy = True
                    time.sleep(5)  # answered 5 s later (below)
                if line.startswith("GET /hold"):
                    self.holds.append(line.split()[1])
                    time.sleep(60)  # held: never answered
                    return
                if line.startswith("GET /big"):
                    self.busy = True
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: A\r\n\r\n" % BIG + b"b" * BIG)
                    continue
                if line.startswith("POST /upload-never"):
                    self.busy = True
                    time.sleep(60)  # never reads the body (the link is cut meanwhile)
                    return
                if line.startswith("POST /upload-read"):
                    self.busy = True  # reads the body as it comes (below)
                elif line.startswith("POST /upload-quiet"):
                    time.sleep(HOLD_S)  # the body is not read for a while: the window stays closed
                elif line.startswith("POST /upload"):
                    self.busy = True
                    time.sleep(HOLD_S)  # busy: the body is not read, the window stays closed
                elif line.startswith("GET /slow"):
                    self.busy = True
                    time.sleep(2)  # answered late, after the checks marked the server down
                n = 0
                while n < length:
                    data = sock.recv(min(65536, length - n))
                    if not data:
                        return
                    n += len(data)
                self.got.append(n)
                body = b"got %d" % n
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: A\r\n\r\n" % len(body) + body)
        except OSError:
            return

    def cut(self):
        ok, why = PortCut.available()
        if not ok:
            pytest.skip(why)
        self.link = PortCut(self.port)
        self.link.cut()

    def stop(self):
        if getattr(self, "link", None):
            self.link.restore()
        super().stop()


def test_live_server_not_reading_an_upload_keeps_it_when_marked_down(lb_factory):
    """A POST whose body a live, busy server does not read for HOLD_S s while the checks mark it
    down: the server acknowledges every window probe, so the request must finish 200 with the
    whole body delivered. With TCP_USER_TIMEOUT the kernel aborts the connection ~3 s after the
    window closed: the client gets 502 and the server a reset."""
    a = UploadBackend()
    try:
        lb = lb_factory([a.port], "--health-fall", "2", "--health-rise", "2", "--health-timeout", "300ms",
                        "--response-timeout", "30s")
        out = {}

        def call():
            t0 = time.monotonic()
            try:
                status, _, body = http_request(LOCALHOST, lb.port, "POST", "/upload", body=b"x" * BODY, timeout=40)
                out["r"] = (status, body, time.monotonic() - t0)
            except Exception as err:
                out["r"] = ("error", repr(err), time.monotonic() - t0)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        assert wait_for(lambda: a.busy, 5)
        # marked down (503 checks) while the upload is held
        assert wait_for(lambda: "r" in out, HOLD_S + 20)
        status, body, took = out["r"]
        assert (status, body) == (200, b"got %d" % BODY), (status, body, took)
        assert a.got == [BODY]
    finally:
        a.stop()


def test_probed_connection_back_in_the_pool_keeps_no_probe(lb_factory):
    """A GET that cannot move (the only server) is probed while the server is marked down, then
    answered: its connection goes back to the pool. The server comes back up; a later POST on that
    pooled connection whose body the server reads only after HOLD_S s must get 200. A probed
    connection that is pooled keeps its TCP_USER_TIMEOUT: the POST's connection is aborted ~3 s
    after its window closed, on a server that is up, and (a reused connection: "stale") 502."""
    a = UploadBackend()
    try:
        lb = lb_factory([a.port], "--health-fall", "2", "--health-rise", "2", "--health-timeout", "300ms",
                        "--response-timeout", "30s")
        status, _, body = http_request(LOCALHOST, lb.port, "GET", "/slow", timeout=20)
        assert (status, body) == (200, b"got 0")
        a.busy = False
        time.sleep(1.5)  # checks every 200 ms, rise 2: up again
        t0 = time.monotonic()
        try:
            status, _, body = http_request(LOCALHOST, lb.port, "POST", "/upload-quiet", body=b"x" * BODY, timeout=40)
        except OSError as err:
            status, body = "error", repr(err)
        took = time.monotonic() - t0
        assert a.conns == 2  # the probed connection was not pooled: the POST had a new one
        assert (status, body) == (200, b"got %d" % BODY), (status, body, took)
        assert a.got == [0, BODY]
    finally:
        a.stop()


def raw_upload(port, path, body_chunks, pause):
    """POSTs body_chunks (a list of bytes) on its own connection, pause s apart, while reading the
    answer -> (status line or "closed", seconds). Sending stops quietly once the balancer closed."""
    total = sum(len(c) for c in body_chunks)
    sock = socket.create_connection((LOCALHOST, port))
    sock.settimeout(60)
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), total))
    t0 = time.monotonic()

    def send():
        try:
            for c in body_chunks:
                sock.sendall(c)
                time.sleep(pause)
        except OSError:
            pass

    threading.Thread(target=send, daemon=True).start()
    data = b""
    try:
        while b"\r\n" not in data:
            got = sock.recv(4096)
            if not got:
                break
            data += got
    except OSError:
        pass
    took = time.monotonic() - t0
    sock.close()
    return (data.split(b"\r\n", 1)[0].decode() if data else "closed"), took


def test_an_upload_over_a_cut_link_gets_502(lb_factory):
    """A POST whose body is still being sent (unacknowledged data) when its server is marked down
    and then its link cut: the retransmissions go unanswered and the request is answered 502
    within a few seconds (probe time 3 s), not left to hang."""
    a = UploadBackend()
    try:
        lb = lb_factory([a.port], "--health-fall", "2", "--health-rise", "2", "--health-timeout", "300ms",
                        "--response-timeout", "60s")
        out = {}
        chunks = [b"y" * 1024] * 400  # 40 s at 1 KB / 100 ms
        t = threading.Thread(target=lambda: out.update(r=raw_upload(lb.port, "/upload-read", chunks, 0.1)),
                             daemon=True)
        t.start()
        assert wait_for(lambda: a.busy, 5)
        time.sleep(1.0)  # marked down (503 checks): the POST stays, probed
        a.cut()
        t0 = time.monotonic()
        t.join(30)
        assert "r" in out
        status, _ = out["r"]
        assert status == "HTTP/1.1 502 Bad Gateway", out
        assert time.monotonic() - t0 < 12
    finally:
        a.stop()


def test_a_closed_window_over_a_cut_link_gets_502(lb_factory):
    """A POST whose body a busy server does not read (its window closed) when its link is cut:
    the window probes go unanswered and the request is answered 502, bounded (the probes back
    off: within tens of seconds), not left to the response timeout (60 s)."""
    a = UploadBackend()
    try:
        lb = lb_factory([a.port], "--health-fall", "2", "--health-rise", "2", "--health-timeout", "300ms",
                        "--response-timeout", "60s")
        out = {}
        chunks = [b"z" * 65536] * 256  # 16 MB, as fast as it goes
        t = threading.Thread(target=lambda: out.update(r=raw_upload(lb.port, "/upload-never", chunks, 0)),
                             daemon=True)
        t.start()
        assert wait_for(lambda: a.busy, 5)
        time.sleep(2.0)  # marked down, the window closed for a while: the probes back off
        a.cut()
        t0 = time.monotonic()
        t.join(45)
        assert "r" in out
        status, _ = out["r"]
        assert status == "HTTP/1.1 502 Bad Gateway", out
        print("closed window over a cut link: 502 after %.1f s" % (time.monotonic() - t0))
        assert time.monotonic() - t0 < 40
    finally:
        a.stop()


def slow_get_big(port, stall, cut=None):
    """GET /big from a client that reads nothing for `stall` s (the balancer parks the backend
    connection: backpressure), calling cut() after 1 s of it, then reads all it can -> (status
    line, body bytes received, seconds)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((LOCALHOST, port))
    sock.settimeout(30)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    t0 = time.monotonic()
    time.sleep(1)
    if cut:
        cut()
    time.sleep(stall - 1)
    data = bytearray()  # 32 MB in reads of a few KB: appended in place, the head looked for once
    head_end = -1
    try:
        while True:
            got = sock.recv(1 << 20)
            if not got:
                break
            data += got
            if head_end < 0:
                head_end = data.find(b"\r\n\r\n")
            if head_end >= 0 and len(data) - head_end - 4 >= BIG:
                break
    except OSError:
        pass
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), len(body), time.monotonic() - t0


def test_a_response_parked_by_a_slow_client_on_a_live_server_is_not_cut(lb_factory):
    """A response streamed to a client that reads nothing for 8 s (the backend connection parked)
    while the checks mark its live server down: the server acknowledges the probes, so the whole
    body arrives."""
    a = UploadBackend()
    try:
        lb = lb_factory([a.port], "--health-fall", "2", "--health-rise", "2", "--health-timeout", "300ms",
                        "--response-timeout", "30s")
        status, n, took = slow_get_big(lb.port, 8)
        assert (status, n) == ("HTTP/1.1 200 OK", BIG), took
    finally:
        a.stop()


def test_a_response_parked_by_a_slow_client_over_a_cut_link_is_cut(lb_factory):
    """The same with the server's link cut 1 s into the stall: the probes go unanswered and the
    client's connection is cut (it gets what was buffered, then the close), not left to the
    response timeout's gap (30 s)."""
    a = UploadBackend()
    try:
        lb = lb_factory([a.port], "--health-fall", "2", "--health-rise", "2", "--health-timeout", "300ms",
                        "--response-timeout", "30s")
        status, n, took = slow_get_big(lb.port, 10, cut=a.cut)
        assert status == "HTTP/1.1 200 OK"
        assert n < BIG
        assert took < 15
    finally:
        a.stop()


def metrics(lb):
    status, _, body = http_request(LOCALHOST, lb.admin_port, "GET", "/metrics",
                                   headers={"Authorization": "Bearer " + admin_token(lb.admin_port)})
    assert status == 200
    return parse_metrics(body.decode())


def test_a_dead_pooled_connection_is_no_stale_retry_past_the_budget(testbackend_factory, lb_factory):
    """The retry budget is spent (--retry-budget 0: 10 retries, spent by try timeouts). A GET held
    by A on a REUSED pooled connection cannot move when A is marked down (budget refused), so its
    connection is probed; the link is cut and the probe fails. fa979ef took that failure for a
    stale pooled connection (LB_FAIL_IO with uses > 1: no budget) and replayed the GET on B past
    the budget; as on a fresh connection (test_ft_marked_down
    test_spent_budget_no_retry_by_try_timeout_nor_marked_down) it must be 502, the budget refusing
    again."""
    a = UploadBackend()
    try:
        b = testbackend_factory("B")
        admin_port = free_port()
        lb = lb_factory([a.port, b], "--policy", "round-robin", "--health-fall", "2", "--health-rise", "2",
                        "--health-timeout", "300ms", "--response-timeout", "30s", "--passive-health", "off",
                        "--retry-budget", "0", "--try-timeout", "200ms", "--admin-listen",
                        "%s:%d" % (LOCALHOST, admin_port))
        lb.admin_port = admin_port

        def retries(reason):
            return metric_or_zero(metrics(lb), "agora_lb_retries_total", reason=reason)

        for i in range(40):  # spend the budget: GETs held by A move to B on their try timeout
            if retries("try_timeout") == 10:
                break
            status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/hold-spend-%d" % i)
            assert (status, headers["x-backend"]) == (200, "B")
        assert retries("try_timeout") == 10
        conns = a.conns
        for i in range(4):  # one answered by A: its connection goes back to the pool
            status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/quick-%d" % i)
            assert status == 200
            if headers["x-backend"] == "A":
                break
        assert a.conns == conns + 1
        out = {}
        for i in range(4):  # a GET held by A, on that pooled connection
            held = len(a.holds)
            t = threading.Thread(target=lambda p="/hold-late-%d" % i: out.update(
                r=http_request(LOCALHOST, lb.port, "GET", p, timeout=40)), daemon=True)
            t.start()
            if wait_for(lambda: len(a.holds) > held, 1):
                break
            t.join(5)
        assert a.holds[-1].startswith("/hold-late")
        assert a.conns == conns + 1  # reused
        time.sleep(0.5)  # its try timeout: refused by the budget
        refusals = metric_or_zero(metrics(lb), "agora_lb_retry_budget_refusals_total")
        assert refusals >= 1
        a.cut()  # marked down (budget refuses the move), probed, the probe fails
        t0 = time.monotonic()
        t.join(20)
        assert "r" in out
        status, headers, _ = out["r"]
        assert (status, headers.get("x-backend")) == (502, None), (status, headers, time.monotonic() - t0)
        assert retries("error") == 0
        assert retries("marked_down") == 0
        assert metric_or_zero(metrics(lb), "agora_lb_retry_budget_refusals_total") == refusals + 2
    finally:
        a.stop()


def test_a_link_cut_for_a_moment_keeps_the_request(lb_factory):
    """A POST held by a live server marked down (503 checks), its link cut for 1 s and restored
    before the probe time (3 s) passes: the connection survives and the answer, sent after the
    restore, reaches the client."""
    a = UploadBackend()
    try:
        lb = lb_factory([a.port], "--health-fall", "2", "--health-rise", "2", "--health-timeout", "300ms",
                        "--response-timeout", "30s")
        out = {}
        t = threading.Thread(target=lambda: out.update(
            r=http_request(LOCALHOST, lb.port, "POST", "/later", body=b"k", timeout=20)), daemon=True)
        t.start()
        assert wait_for(lambda: a.busy, 5)
        time.sleep(1.5)  # marked down, probed
        a.cut()
        time.sleep(1.0)
        a.link.restore()
        t.join(20)
        assert "r" in out
        status, headers, body = out["r"]
        assert (status, headers.get("x-backend"), body) == (200, "A", b"got 1")
    finally:
        a.stop()
