"""Backends for the balancer: build/testbackend, and a raw Python one that keeps every byte.

    start_testbackend(build_dir, *args) start build/testbackend on a port of its choosing -> Process
    record_lines(path)                  a testbackend --record file as a list of lines
    CaptureBackend(...)                 a raw Python backend keeping every byte it receives
    ThreadedBackend                     the base of tests' own raw backends: a listener on
                                        127.0.0.1:.port, a thread per connection calling
                                        ._serve(sock); .stop() closes everything
"""

import pathlib
import socket
import threading

from .processes import LOCALHOST, start_process


def start_testbackend(build_dir, *args, name=None, port=0, timeout=10.0):
    """Starts build_dir/testbackend (tests/support/testbackend.c) on 127.0.0.1 and waits until it
    listens. port=0 lets the backend pick a free port itself (no race). Extra args pass through,
    e.g. start_testbackend(build_dir, "--serial", "--delay-ms", "5-10"). Returns the Process with
    .port and .name (its X-Backend value) set."""
    argv = [pathlib.Path(build_dir) / "testbackend", "--port", str(port)]
    if name is not None:
        argv += ["--name", name]
    proc = start_process(argv + list(args), "listening on", timeout)
    line = next(l for l in proc.output().splitlines() if l.startswith("listening on "))
    proc.port = int(line.rsplit(":", 1)[1])
    proc.name = name if name is not None else "127.0.0.1:%d" % proc.port
    return proc


def record_lines(path):
    """The lines of a testbackend --record file ([] while it does not exist)."""
    path = pathlib.Path(path)
    return path.read_text().splitlines() if path.exists() else []


class ThreadedBackend:
    """A listening socket on 127.0.0.1 (.port) whose accepted connections each run
    self._serve(sock) on a thread of their own (a subclass defines it: hold requests, answer
    health checks its own way...). rcvbuf: SO_RCVBUF of the listener, which accepted sockets
    inherit (a small one keeps an upload unread). .stop() closes the listener and shuts every
    connection down; .close_listener() only stops accepting (new connections are refused), as a
    server draining after SIGTERM does."""

    def __init__(self, rcvbuf=None):
        self._socks = []
        self._lis = socket.socket()
        self._lis.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self._lis.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
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
        raise NotImplementedError

    @staticmethod
    def read_head(sock):
        """Reads sock up to the end of a request head; its request line (str), or None when the
        peer closed first. Bytes past the head are not kept (these backends hold or answer one
        request per connection)."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(4096)
            if not data:
                return None
            buf += data
        return buf.split(b"\r\n", 1)[0].decode()

    @staticmethod
    def drain(sock):
        """Reads and drops whatever sock receives until the peer closes it."""
        while sock.recv(4096):
            pass

    def close_listener(self):
        self._lis.close()

    def stop(self):
        self._lis.close()
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


class CaptureBackend:
    """A raw HTTP backend written in Python, for tests that need to see exactly what reached a
    backend or to misbehave in ways testbackend cannot. It listens on 127.0.0.1:.port and keeps
    every byte each connection sent it (.connections(): list of bytes, one per connection, in
    accept order). Health checks (GET /health) get 200 "ok" and are not kept.

    Requests are framed by Content-Length or chunked encoding (a body ends at the first
    "0\\r\\n\\r\\n"); a complete request is answered according to `mode`:
        "answer"       200 "captured\\n" (keep-alive)
        "reset"        no answer: the connection is reset (SO_LINGER 0)
        "drop-second"  the first request on a connection is answered, the second one is read and
                       the connection closed without an answer (a pooled connection going stale)
    `response` (bytes) replaces the answer of mode "answer", for responses testbackend cannot make.
    .requests holds the request line of every complete non-health request, in arrival order.
    Usable as a context manager (stops on exit)."""

    def __init__(self, mode="answer", response=None):
        self.mode = mode
        self.response = response
        self.requests = []
        self._conns = []
        self._lock = threading.Lock()
        self._socks = set()
        self._stopped = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOCALHOST, 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.name = "capture:%d" % self.port
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopped:
                    sock.close()
                    return
                self._socks.add(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    @staticmethod
    def _request_end(buf):
        """Length of the first complete request in buf, or None while it is incomplete."""
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = buf[:head_end].decode("latin-1").lower()
        body_start = head_end + 4
        if "\r\ntransfer-encoding:" in head:
            end = buf.find(b"0\r\n\r\n", body_start)
            return None if end < 0 else end + 5
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip() == "content-length":
                length = int(value.strip())
        return body_start + length if len(buf) >= body_start + length else None

    def _serve(self, sock):
        kept = bytearray()
        record = None  # index in self._conns once we know it is not a health check
        buf = b""
        served = 0
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
                kept += data
                if record is None and b"\r\n" in kept and not kept.startswith(b"GET /health "):
                    with self._lock:
                        self._conns.append(kept)
                        record = len(self._conns) - 1
                while True:
                    end = self._request_end(buf)
                    if end is None:
                        break
                    request, buf = buf[:end], buf[end:]
                    line = request.split(b"\r\n", 1)[0].decode("latin-1")
                    if line.startswith("GET /health "):
                        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                        return
                    served += 1
                    with self._lock:
                        self.requests.append(line)
                    if self.mode == "reset" or (self.mode == "drop-second" and served == 2):
                        if self.mode == "reset":
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        return
                    sock.sendall(self.response or b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Backend: %s\r\n\r\n"
                                 b"captured\n" % self.name.encode())
        except OSError:
            return
        finally:
            with self._lock:
                self._socks.discard(sock)
            sock.close()

    def connections(self):
        """The bytes of every non-health connection so far (a copy), in accept order."""
        with self._lock:
            return [bytes(c) for c in self._conns]

    def stop(self):
        with self._lock:
            self._stopped = True
            socks = list(self._socks)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._listener.close()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
