"""agora lb over TLS: reading ahead (src/http/tls.c, "Reading ahead").

Once a handshake is done, OpenSSL reads what the socket holds in one read(2) and may keep whole
records the socket no longer reports; the balancer must decrypt them before it goes back to its
level-triggered loop, or a request sits in OpenSSL's buffer until the client sends something
else. Each test here writes TLS records the way a client can, with Python's ssl.MemoryBIO so the
test chooses which records leave in one write, and asserts every request is answered:
- many records in one write (HTTP/1.1 pipelined, one request per record; HTTP/2 frames, one per
  record), more than OpenSSL's 16 KB buffer and more than one read of the balancer holds;
- a request in the same write as the client's Finished (the handshake must not read it ahead);
- a record split over two writes with a pause between (OpenSSL keeps half a record);
- a request followed by close_notify and then nothing (the end is seen by the next read).
"""

import re
import socket
import ssl
import time

import pytest
from h2raw import END_HEADERS, END_STREAM, HEADERS, PREFACE, SETTINGS, frame
from hpack import Decoder, Encoder
from test_lb_tls import certs, client_ctx, tls_lb  # noqa: F401 (fixtures)

from helpers import LOCALHOST


class MemTLS:
    """A TLS client whose records leave only when flush() is called: every write() is one record
    (Python's SSLObject writes one record per call, for data under 16 KB)."""

    def __init__(self, port, ctx, send_finished=True):
        self.raw = socket.create_connection((LOCALHOST, port), timeout=10)
        self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                data = self.raw.recv(65536)
                assert data, "the balancer closed during the handshake"
                self.inc.write(data)
        if send_finished:
            self.flush()

    def write(self, data):
        self.obj.write(data)

    def pending(self):
        return self.out.pending

    def flush(self):
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def read_until(self, pred, timeout=10.0, keep=None):
        """Reads decrypted bytes until pred(all so far) holds or the connection ends; with keep,
        only the last keep bytes are kept (and given to pred): for answers of many megabytes."""
        got = b""
        deadline = time.monotonic() + timeout
        while not pred(got):
            try:
                chunk = self.obj.read(65536)
                if not chunk:
                    break
                got = (got + chunk)[-keep:] if keep else got + chunk
                continue
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            left = deadline - time.monotonic()
            assert left > 0, "no answer within %.0f s; got %d bytes: %r" % (timeout, len(got), got[-200:])
            self.raw.settimeout(left)
            try:
                data = self.raw.recv(65536)
            except socket.timeout:
                raise AssertionError("no answer within %.0f s; got %d bytes: %r" % (timeout, len(got), got[-200:]))
            if not data:
                self.inc.write_eof()
            else:
                self.inc.write(data)
        return got

    def close(self):
        self.raw.close()


def answered(n):
    return lambda got: got.count(b"HTTP/1.1 200 OK\r\n") >= n


@pytest.mark.parametrize("count", [10, 400, 1500])
def test_pipelined_requests_one_record_each_in_one_write_are_all_answered(tls_lb, certs, count):
    """count requests, each its own record, written at once: 10 fit one read; 400 (about 28 KB of
    records) pass OpenSSL's buffer and the balancer's read of 16 KB; 1,500 (100 KB) fill the socket
    several times over. Every one is answered, in order."""
    lb = tls_lb(workers=1)
    c = MemTLS(lb.tls_port, client_ctx(certs))
    for i in range(count):
        c.write(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
    records = c.pending()
    assert records > count * 22, records  # one record (5-byte header, 16-byte tag, type) per request
    c.flush()
    got = c.read_until(answered(count), timeout=30)
    c.close()
    targets = re.findall(rb'"target":"/echo\?i=(\d+)"', got)
    assert [int(t) for t in targets] == list(range(count))


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_request_in_the_same_write_as_the_finished_is_answered(tls_lb, certs, version):
    """The client's last handshake record and its first request leave together: the handshake
    reads only what it needs (no read-ahead yet), so the request is still in the socket, where
    the loop sees it."""
    lb = tls_lb(workers=1)
    ctx = client_ctx(certs)
    ctx.minimum_version = ctx.maximum_version = version
    c = MemTLS(lb.tls_port, ctx, send_finished=False)
    c.write(b"GET /echo?first HTTP/1.1\r\nHost: x\r\n\r\n")
    c.flush()
    got = c.read_until(answered(1))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:200]
    assert b'"target":"/echo?first"' in got
    c.write(b"GET /echo?second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    c.flush()
    got = c.read_until(lambda g: b'"target":"/echo?second"' in g)
    assert b'"target":"/echo?second"' in got
    c.close()


def test_a_record_split_over_two_writes_is_answered_when_its_rest_comes(tls_lb, certs):
    """Three whole records and the first half of a fourth in one write, the rest 300 ms later:
    the three are answered at once, the fourth once its rest arrives."""
    lb = tls_lb(workers=1)
    c = MemTLS(lb.tls_port, client_ctx(certs))
    for i in range(3):
        c.write(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
    whole = c.out.read()
    c.write(b"GET /echo?i=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    last = c.out.read()
    c.raw.sendall(whole + last[:len(last) // 2])
    got = c.read_until(answered(3), timeout=5)
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 3, got
    time.sleep(0.3)
    c.raw.sendall(last[len(last) // 2:])
    got = c.read_until(answered(1), timeout=5)
    assert b'"target":"/echo?i=3"' in got
    c.close()


def test_a_request_then_close_notify_in_one_write(tls_lb, certs):
    """A request and the client's close_notify in one write, the TCP connection left open: the
    request is answered, then the balancer closes (the end is met again by the next read)."""
    lb = tls_lb(workers=1)
    c = MemTLS(lb.tls_port, client_ctx(certs))
    c.write(b"GET /echo?bye HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        c.obj.unwrap()
    except ssl.SSLWantReadError:
        pass  # our close_notify is written; the balancer's comes later
    c.flush()
    got = c.read_until(lambda g: False, timeout=10)  # to the end of the stream
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:200]
    assert b'"target":"/echo?bye"' in got
    c.close()


def test_h2_frames_one_record_each_in_one_write_are_all_answered(tls_lb, certs):
    """An HTTP/2 client's preface, SETTINGS and 50 requests' HEADERS, each its own record, in one
    write (what h2load does with -m): all 50 streams are answered."""
    lb = tls_lb(workers=1)
    ctx = client_ctx(certs, alpn=["h2"])
    c = MemTLS(lb.tls_port, ctx)
    assert c.obj.selected_alpn_protocol() == "h2"
    enc = Encoder()
    c.write(PREFACE)
    c.write(frame(SETTINGS, 0, 0))
    n = 50
    for k in range(n):
        block = enc.encode([(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                            (":path", "/echo?s=%d" % k)])
        c.write(frame(HEADERS, END_STREAM | END_HEADERS, 2 * k + 1, block))
    c.flush()
    dec = Decoder()
    statuses = {}
    buf = b""
    deadline = time.monotonic() + 15
    while len(statuses) < n:
        assert time.monotonic() < deadline, "answered streams: %s" % sorted(statuses)
        buf += c.read_until(lambda g: len(g) > 0, timeout=15)
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, sid, payload = buf[3], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + length]
            buf = buf[9 + length:]
            if ftype == HEADERS:
                statuses[sid] = dict(dec.decode(payload))[":status"]
    c.close()
    assert statuses == {2 * k + 1: "200" for k in range(n)}


def test_bodies_of_whole_records_in_one_write_are_all_read(tls_lb, certs):
    """Request bodies of 16 KB records (the largest) around multiples of the balancer's read, each
    request with its body in one write: a read that reaches its limit may leave the body's last
    record decrypted-to-be in OpenSSL with nothing more in the socket. Every body arrives whole."""
    lb = tls_lb(workers=1)
    c = MemTLS(lb.tls_port, client_ctx(certs))
    sizes = [16384 * k + d for k in (1, 2, 3, 4, 5, 8) for d in (-1, 0, 1, 300)]
    for n in sizes:
        c.write(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
        body = bytes(n)
        for off in range(0, n, 16384):
            c.write(body[off:off + 16384])
        c.flush()
        got = c.read_until(lambda g: g.endswith(b"}\n"), timeout=10)
        assert got.endswith(b'{"received": %d, "chunked": false}\n' % n), (n, got[-200:])
    c.close()
