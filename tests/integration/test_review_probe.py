"""review-probe: a hostile look at fa979ef (a request that cannot move off a server marked down
stays and its backend connection is probed: net_probe_peer sets TCP keep-alive and
TCP_USER_TIMEOUT = max(check timeout, 3 s)).

The promise: "a live peer acknowledges and the exchange is left to finish". TCP_USER_TIMEOUT also
bounds how long a live peer may keep its receive window closed while the balancer has data for it
(Linux >= 5.11, "tcp: fix TCP_USER_TIMEOUT with zero window"): a live server that is busy and
does not read a request body for longer than the probe time gets its connection aborted
(ETIMEDOUT), though it acknowledges every window probe.

UploadBackend: a live server on loopback with a tiny receive buffer. /health answers 200 until
.busy is set, then 503 (a live server saying it is not ready: the checks mark it down). A POST
/upload is held: its head is read, then nothing for HOLD_S seconds (window closed), then the whole
body is read and answered 200 "got N".
"""

import socket
import threading
import time

from helpers import LOCALHOST, http_request, wait_for

HOLD_S = 7
BODY = 16 * 1024 * 1024


class UploadBackend:
    def __init__(self):
        self.busy = False
        self.got = []  # body sizes read, per upload
        self.heads = 0
        self.conns = 0  # connections that carried a request other than a check
        self._socks = []
        self._lis = socket.socket()
        self._lis.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lis.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accepted sockets
        self._lis.bind((LOCALHOST, 0))
        self._lis.listen(64)
        self.port = self._lis.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self._lis.accept()
            except OSError:
                return
            self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

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
                if line.startswith("POST /upload-quiet"):
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

    def stop(self):
        self._lis.close()
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


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
        assert a.conns == 1  # the POST went on the GET's pooled connection
        assert (status, body) == (200, b"got %d" % BODY), (status, body, took)
        assert a.got == [0, BODY]
    finally:
        a.stop()
