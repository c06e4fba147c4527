"""HTTP on the wire: one request with http.client, or exact bytes on a raw socket.

    http_request(host, port, method, path, headers, body, timeout) -> (status, headers, body)
    raw_exchange(port, data, timeout)   send raw bytes, return everything read until close/timeout
    RawConnection                       a raw socket for step-by-step exchanges (100-continue, ...);
                                        read_head() + stream_body(headers, sink) stream big bodies
    parse_responses(data, head=...)     split raw bytes into (status, headers, body) tuples
    connect_from(source_ip, port)       a socket bound to source_ip (127.0.0.2, the outside address)
    read_to_close(sock)                 every byte until the peer closes
    exchange_from(source_ip, port, req) raw request from source_ip -> its one (status, headers, body)
    get_from(source_ip, port, path, h)  GET with headers (a dict) from source_ip -> (status, headers, body)
    silent_connections(source_ip, port, n)  n connections sending nothing; yields how many were refused
    pattern_bytes(offset, length)       expected slice of a testbackend /bytes body
    send_pattern(conn, total, chunked)  upload `total` pattern bytes without holding them
    PatternChecker()                    stream_body() sink checking the /bytes pattern

Headers come back as a dict with lower-case names; a repeated header's values are joined with
", ". Bodies are bytes, already de-chunked. Every wait is bounded by a timeout.
"""

import contextlib
import json
import http.client
import socket
import time

from .processes import LOCALHOST


def _header_dict(pairs):
    headers = {}
    for name, value in pairs:
        name = name.lower()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return headers


def http_request(host, port, method, path, headers=None, body=None, timeout=5.0):
    """Sends one request on a fresh connection with http.client and returns (status, headers,
    body). http.client adds Host (unless headers has one), Accept-Encoding: identity and, for a
    bytes body, Content-Length; an iterable body is sent chunked."""
    headers = dict(headers or {})
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        chunked = body is not None and not isinstance(body, (bytes, bytearray, str))
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, _header_dict(resp.getheaders()), data
    finally:
        conn.close()


class _ResponseReader:
    """Buffered reading and response parsing over a byte source; subclasses define _fill()."""

    timeout = 5.0

    def __init__(self):
        self.buf = b""
        self.closed_by_peer = False

    def _fill(self, deadline):
        """Appends more bytes to self.buf. Returns False at end of input; raises TimeoutError."""
        raise NotImplementedError

    def read_until(self, marker, timeout=None):
        """Returns the bytes up to and including marker (consumed from the buffer)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while marker not in self.buf:
            if not self._fill(deadline):
                raise EOFError("connection closed before %r; got %r" % (marker, self.buf[:200]))
        end = self.buf.index(marker) + len(marker)
        data, self.buf = self.buf[:end], self.buf[end:]
        return data

    def read_exact(self, n, timeout=None):
        """Returns exactly n bytes."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError("connection closed after %d of %d bytes" % (len(self.buf), n))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_until_closed(self, timeout=None):
        """Returns all remaining bytes once the peer closes; raises TimeoutError if it does not."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def read_response(self, head=False, timeout=None):
        """Reads one final response (skipping 1xx) and returns (status, headers, body). The body
        is framed by chunked encoding, Content-Length or the connection closing; there is none
        for HEAD (head=True), 204 and 304."""
        timeout = timeout or self.timeout
        status, headers = self._read_head(timeout)
        while 100 <= status < 200:
            status, headers = self._read_head(timeout)
        if head or status in (204, 304):
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, headers, self._read_chunked(timeout)
        if "content-length" in headers:
            return status, headers, self.read_exact(int(headers["content-length"]), timeout)
        return status, headers, self.read_until_closed(timeout)

    def _read_head(self, timeout):
        head = self.read_until(b"\r\n\r\n", timeout).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError("malformed status line %r" % lines[0])
        pairs = [line.split(":", 1) for line in lines[1:] if line]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("malformed header in %r" % head)
        return int(parts[1]), _header_dict((n.strip(), v.strip()) for n, v in pairs)

    def _read_chunked(self, timeout):
        parts = []
        while True:
            size = int(self.read_until(b"\r\n", timeout).split(b";")[0].strip(), 16)
            if size == 0:
                while self.read_until(b"\r\n", timeout) != b"\r\n":  # trailer fields
                    pass
                return b"".join(parts)
            parts.append(self.read_exact(size, timeout))
            if self.read_exact(2, timeout) != b"\r\n":
                raise ValueError("chunk data not followed by CRLF")


class RawConnection(_ResponseReader):
    """A plain TCP connection for tests that need exact bytes on the wire (pipelining,
    100-continue, malformed requests). Reads are buffered, so read_response() can be called once
    per pipelined response. Usable as a context manager."""

    def __init__(self, port, host=LOCALHOST, timeout=5.0):
        super().__init__()
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def send(self, data):
        self.sock.sendall(data)

    def shutdown_write(self):
        """Half-closes: the peer reads EOF, and we can still read its answer."""
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from peer in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from peer in time") from None
        if not data:
            self.closed_by_peer = True
            return False
        self.buf += data
        return True

    def has_data(self, wait=0.0):
        """True if bytes or EOF are readable within `wait` seconds; consumes nothing."""
        if self.buf:
            return True
        self.sock.settimeout(wait if wait > 0 else 0.0)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
            return True
        except (BlockingIOError, socket.timeout):
            return False
        finally:
            self.sock.settimeout(self.timeout)

    def read_head(self, timeout=None):
        """Reads one final response head (1xx interim responses are skipped): (status, headers)."""
        timeout = timeout or self.timeout
        status, headers = self._read_head(timeout)
        while 100 <= status < 200:
            status, headers = self._read_head(timeout)
        return status, headers


    def stream(self, n, sink, timeout=None):
        """Passes exactly n bytes to sink(bytes) as they arrive, without accumulating them. The
        timeout bounds each wait for data, not the whole transfer."""
        timeout = timeout or self.timeout
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            sink(data)
            n -= len(data)
        while n > 0:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(min(n, 1 << 20))
            except socket.timeout:
                raise TimeoutError("no data from peer in time (%d bytes still expected)" % n) from None
            if not data:
                self.closed_by_peer = True
                raise EOFError("connection closed with %d bytes still expected" % n)
            sink(data)
            n -= len(data)


    def stream_body(self, headers, sink, timeout=None):
        """Streams the body of a response whose head was read with read_head() to sink(bytes):
        de-chunked, or Content-Length bytes, or until the peer closes. Returns the body length.
        (No body for HEAD, 204 or 304: don't call it for those.)"""
        timeout = timeout or self.timeout
        total = 0

        def counting(data):
            nonlocal total
            total += len(data)
            sink(data)

        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.read_until(b"\r\n", timeout).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.read_until(b"\r\n", timeout) != b"\r\n":
                        pass
                    return total
                self.stream(size, counting, timeout)
                if self.read_exact(2, timeout) != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
        if "content-length" in headers:
            self.stream(int(headers["content-length"]), counting, timeout)
            return total
        if self.buf:
            counting(self.buf)
            self.buf = b""
        while True:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError("no data from peer in time") from None
            if not data:
                self.closed_by_peer = True
                return total
            counting(data)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _BytesReader(_ResponseReader):
    def __init__(self, data):
        super().__init__()
        self.buf = bytes(data)

    def _fill(self, deadline):
        self.closed_by_peer = True
        return False


def raw_exchange(port, data, timeout=5.0, host=LOCALHOST):
    """Connects, sends data, and returns every byte received until the peer closes the connection
    or `timeout` seconds pass (whichever comes first). A reset after some data still returns it."""
    with RawConnection(port, host=host, timeout=timeout) as conn:
        conn.send(data)
        deadline = time.monotonic() + timeout
        try:
            while conn._fill(deadline):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
        return conn.buf


def parse_responses(data, head=()):
    """Splits raw bytes holding consecutive responses into a list of (status, headers, body).
    head holds the indexes of responses that answer HEAD requests (no body). 1xx interim
    responses are skipped. Raises ValueError on malformed or truncated input."""
    reader = _BytesReader(data)
    responses = []
    try:
        while reader.buf:
            responses.append(reader.read_response(head=len(responses) in head))
    except EOFError as err:
        raise ValueError("truncated response: %s" % err) from None
    return responses


def pattern_bytes(offset, length):
    """The /bytes body slice [offset, offset+length): byte i is b"0123456789"[i % 10]."""
    start = offset % 10
    reps = (start + length) // 10 + 1
    return (b"0123456789" * reps)[start : start + length]


_PATTERN_PERIOD = b"0123456789"


_PATTERN_BLOCK = _PATTERN_PERIOD * (1024 * 1024 // 10 + 2)  # > 1 MiB + one period


def send_pattern(conn, total, chunked=False, piece=1024 * 1024):
    """Sends `total` bytes of the /bytes pattern on conn (a RawConnection) as a request body,
    in chunks of `piece` bytes (chunked framing, ended by the last chunk, when chunked), without
    holding more than one piece in memory."""
    piece -= piece % 10
    data = _PATTERN_BLOCK[:piece]
    left = total
    while left > 0:
        k = min(piece, left)
        if chunked:
            conn.send(b"%x\r\n" % k + data[:k] + b"\r\n")
        else:
            conn.send(data[:k])
        left -= k
    if chunked:
        conn.send(b"0\r\n\r\n")


class PatternChecker:
    """A sink for RawConnection.stream_body() that checks the bytes against the /bytes pattern
    as they arrive, holding none of them. .length is the byte count seen, .ok whether every byte
    matched."""

    def __init__(self):
        self.length = 0
        self.ok = True

    def __call__(self, data):
        start = self.length % 10
        if self.ok and _PATTERN_BLOCK[start : start + len(data)] != data:
            self.ok = False
        self.length += len(data)


def connect_from(source_ip, port, host=LOCALHOST, timeout=5.0):
    """A TCP connection to host:port from a socket bound to source_ip (another loopback address
    such as 127.0.0.2, or the machine's outside address), with `timeout` on every operation."""
    return socket.create_connection((host, port), timeout=timeout, source_address=(source_ip, 0))


def read_to_close(sock):
    """Every byte received on sock until the peer closes it; each read is bounded by sock's timeout
    (socket.timeout propagates)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def exchange_from(source_ip, port, request, host=LOCALHOST):
    """Sends the raw bytes request from source_ip, reads until the server closes, and returns the
    one response -> (status, headers, body); ValueError unless exactly one whole response came."""
    sock = connect_from(source_ip, port, host)
    try:
        sock.sendall(request)
        data = read_to_close(sock)
    finally:
        sock.close()
    [response] = parse_responses(data)
    return response


def get_from(source_ip, port, path, headers=None, host=LOCALHOST):
    """GET path on host:port from source_ip with headers (a dict, in its order; no Host unless it
    has one) and Connection: close -> (status, headers, body)."""
    lines = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    request = "GET %s HTTP/1.1\r\n%sConnection: close\r\n\r\n" % (path, lines)
    return exchange_from(source_ip, port, request.encode(), host)


@contextlib.contextmanager
def silent_connections(source_ip, port, n, host=LOCALHOST):
    """Opens n connections from source_ip that send nothing (a slowloris) and yields how many of
    them the server refused at once: answered within 0.2 s, and then only with a 503 "too many
    connections from your address" (any other answer fails the test). Closes them all on exit."""
    held = []
    try:
        for _ in range(n):
            held.append(connect_from(source_ip, port, host))
        refused = 0
        for sock in held:
            sock.settimeout(0.2)
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            assert data.startswith(b"HTTP/1.1 503 ") and b"too many connections from your address" in data
            refused += 1
        yield refused
    finally:
        for sock in held:
            sock.close()


def timed_api_request(port, method, path, bound_s, token=None, body=None, key=None):
    """One JSON API request on 127.0.0.1:port that gives up bound_s + 3 s after it was sent (the
    outage and failover tests' bound) -> (t0, t1, status, headers, body): status is the error's
    repr string when the request failed (refused, reset, timed out)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = "Bearer " + token
    if key:
        headers["Idempotency-Key"] = key
    t0 = time.monotonic()
    try:
        status, hdrs, data = http_request(LOCALHOST, port, method, path, headers=headers,
                                          body=None if body is None else json.dumps(body).encode(),
                                          timeout=bound_s + 3)
    except OSError as e:
        status, hdrs, data = "error: %r" % e, {}, b""
    return t0, time.monotonic(), status, hdrs, data
