"""agora lb: HTTP/2 to clients over TLS (issue 14 item 2; src/http/h2.c).

Real clients: curl --http2 and --http1.1 on the same listener, h2load (many streams on two
connections spread over two backends), streamed bodies both ways (a streaming echo backend here;
100 MiB up and down with the balancer's VmRSS sampled). Hostile clients with the raw-frame client
of h2raw.py, each with its exact outcome and then a fresh request that succeeds: rapid reset,
CONTINUATION flood, HPACK bomb, PING/SETTINGS/empty-DATA floods, too many streams, stream-id
exhaustion, connection-specific fields, CONNECT, Content-Length mismatch, HTTP/1.1 on an h2
connection, the h2 preface on an http/1.1 connection, idle timeout.
"""

import hashlib
import json
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from h2raw import (CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, H2, HEADERS, NO_ERROR,
                   PING, PREFACE, PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM, SETTINGS, frame, tls_socket)
from agora_test.backends import ThreadedBackend
from helpers import LOCALHOST, RssSampler, lb_stats, pattern_bytes, read_to_close, record_lines, rss_kib, wait_for
from test_lb_tls import certs, make_cert, s_client, tls_flags  # noqa: F401 (certs is a fixture)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("openssl") is None,
                                reason="curl or openssl is missing")

BIG = 100 * 1024 * 1024


@pytest.fixture
def h2_lb(lb_factory, testbackend_factory, certs, tmp_path):
    """start(*flags, backends=None) -> balancer with .tls_port, .ca and .backends (A, B recording
    their requests in .record)."""

    def start(*flags, backends=None, workers=1):
        if backends is None:
            backends = []
            for name in ("A", "B"):
                rec = tmp_path / ("record-%s" % name)
                b = testbackend_factory(name, "--record", str(rec))
                b.record = rec
                backends.append(b)
        port = socket.socket()
        port.bind((LOCALHOST, 0))
        tls_port = port.getsockname()[1]
        port.close()
        lb = lb_factory(backends, "--tls-listen", "%s:%d" % (LOCALHOST, tls_port), *tls_flags(certs, "a"), *flags,
                        workers=workers)
        lb.tls_port = tls_port
        lb.ca = certs["a"][0]
        lb.backends = backends
        return lb

    return start


def curl(lb, *args, http="--http2", stdin=None, input=None):
    p = subprocess.run(["curl", http, "-sS", "--max-time", "60", "--cacert", str(lb.ca), "--resolve",
                        "localhost:%d:127.0.0.1" % lb.tls_port] + [str(a) for a in args],
                       capture_output=True, timeout=90, stdin=stdin, input=input)
    return p.returncode, p.stdout, p.stderr.decode()


def url(lb, path):
    return "https://localhost:%d%s" % (lb.tls_port, path)


def fresh_request_works(lb):
    """A new HTTP/2 connection gets an exact answer: the balancer still serves."""
    c = H2(lb.tls_port, lb.ca)
    try:
        status, body, reset = c.wait_stream(c.request("/fresh"))
    finally:
        c.close()
    assert (status, reset) == (200, None)
    assert body in (b"hello from A\n", b"hello from B\n")


def header_dict(pairs):
    return {k.lower(): v for k, v in pairs}


# ---------------------------------------------------------------- answers


def test_curl_http2_and_http11_on_one_listener(h2_lb):
    lb = h2_lb()
    rc, out, err = curl(lb, "-w", "\n%{http_version}", url(lb, "/echo?x=1"), "-H", "X-Custom: yes", "-H",
                        "Cookie: a=1", "-H", "Cookie: b=2")
    assert rc == 0, err
    body, _, version = out.rpartition(b"\n")
    assert version == b"2"
    doc = json.loads(body)
    hdrs = {k.lower(): v for k, v in doc["headers"]}
    assert (doc["method"], doc["target"], doc["version"]) == ("GET", "/echo?x=1", "HTTP/1.1")
    assert hdrs["host"] == "localhost:%d" % lb.tls_port
    assert hdrs["x-forwarded-proto"] == "https"
    assert hdrs["x-forwarded-for"] == "127.0.0.1"
    assert hdrs["x-custom"] == "yes"
    assert hdrs["cookie"] == "a=1; b=2"  # joined (RFC 9113 §8.2.3)
    assert "transfer-encoding" not in hdrs and "content-length" not in hdrs  # a GET without a body
    # A POST with a length: the backend gets Content-Length; without one (curl -T -): chunked.
    rc, out, err = curl(lb, "--data-binary", "x" * 100000, url(lb, "/echo"))
    doc = json.loads(out)
    assert (rc, doc["method"], doc["body_length"], doc["chunked"]) == (0, "POST", 100000, False), err
    rc, out, err = curl(lb, "-X", "POST", "-T", "-", url(lb, "/echo"), input=b"y" * 70000)
    doc = json.loads(out)
    assert (rc, doc["body_length"], doc["chunked"]) == (0, 70000, True), err
    assert ["Transfer-Encoding", "chunked"] in doc["headers"]
    # Status and headers come back as HTTP/2 (hop-by-hop fields dropped).
    rc, out, err = curl(lb, "-i", url(lb, "/status?code=404"))
    assert rc == 0 and out.startswith(b"HTTP/2 404"), (out, err)
    assert b"\nconnection:" not in out.lower() and b"keep-alive" not in out.lower()
    # A chunked response arrives whole, a large one too.
    rc, out, err = curl(lb, url(lb, "/bytes?n=3000001&chunked=1"))
    assert (rc, out == pattern_bytes(0, 3000001)) == (0, True), (len(out), err)
    # HEAD: the head only.
    rc, out, err = curl(lb, "-I", url(lb, "/bytes?n=5000"))
    assert rc == 0 and out.startswith(b"HTTP/2 200") and b"content-length: 5000" in out, out
    # The balancer's own /health.
    assert curl(lb, url(lb, "/health"))[:2] == (0, b"OK")
    # HTTP/1.1 on the same listener.
    rc, out, err = curl(lb, "-w", "\n%{http_version}", url(lb, "/"), http="--http1.1")
    assert rc == 0 and out in (b"hello from A\n\n1.1", b"hello from B\n\n1.1"), (out, err)
    fresh_request_works(lb)


def test_alpn_prefers_h2_and_http2_off(h2_lb):
    lb = h2_lb()
    assert "ALPN protocol: h2" in s_client(lb.tls_port, "-alpn", "http/1.1,h2")
    assert "ALPN protocol: http/1.1" in s_client(lb.tls_port, "-alpn", "http/1.1")
    off = h2_lb("--http2", "off")
    assert "ALPN protocol: http/1.1" in s_client(off.tls_port, "-alpn", "h2,http/1.1")
    rc, out, err = curl(off, "-w", "\n%{http_version}", url(off, "/"))
    assert rc == 0 and out.endswith(b"\n1.1"), (out, err)


def test_h2load_many_streams_spread_over_backends(h2_lb):
    if shutil.which("h2load") is None:
        pytest.skip("h2load (nghttp2-client) is missing")
    lb = h2_lb()
    p = subprocess.run(["h2load", "-n", "1000", "-c", "2", "-m", "20", url(lb, "/h2load")], capture_output=True,
                       timeout=120)
    out = p.stdout.decode()
    assert "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout" in out, out
    assert "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx" in out, out
    counts = [sum(1 for line in record_lines(b.record) if line == "GET /h2load") for b in lb.backends]
    assert sum(counts) == 1000 and min(counts) > 0, counts
    # The balancer's per-server request counts (/stats) saw each stream as a request.
    served = {s["url"]: s["requests"] for s in lb_stats(lb.port)["servers"]}
    assert sorted(served.values()) == sorted(counts), (served, counts)


class StreamingEcho(ThreadedBackend):
    """An HTTP/1.1 origin that sends the request body back while it arrives, each piece read as
    one chunk of a chunked response (so both directions stream at once); /health answers 200."""

    def __init__(self):
        super().__init__()

    def _serve(self, conn):
        buf = b""

        def more():
            nonlocal buf
            d = conn.recv(65536)
            if not d:
                raise EOFError
            buf += d

        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    more()
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
                if lines[0].split()[1] == "/health":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")

                def echo(piece):
                    if piece:
                        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))

                if hdrs.get("transfer-encoding") == "chunked":
                    while True:
                        while b"\r\n" not in buf:
                            more()
                        size_line, _, buf = buf.partition(b"\r\n")
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            while b"\r\n" not in buf:
                                more()
                            buf = buf.partition(b"\r\n")[2]  # no trailers from the balancer
                            break
                        while size > 0:
                            if not buf:
                                more()
                            piece, buf = buf[:size], buf[size:]
                            size -= len(piece)
                            echo(piece)
                        while len(buf) < 2:
                            more()
                        buf = buf[2:]
                else:
                    left = int(hdrs.get("content-length", "0"))
                    while left > 0:
                        if not buf:
                            more()
                        piece, buf = buf[:left], buf[left:]
                        left -= len(piece)
                        echo(piece)
                conn.sendall(b"0\r\n\r\n")
        except (EOFError, OSError):
            pass
        finally:
            conn.close()

    def close(self):
        self.close_listener()


@pytest.mark.parametrize("length", [True, False])
def test_post_body_streams_both_ways_with_equal_checksum(h2_lb, tmp_path, length):
    echo = StreamingEcho()
    try:
        lb = h2_lb(backends=[echo.port])
        data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 1234)  # about 3 MiB
        src = tmp_path / "body"
        src.write_bytes(data)
        if length:
            rc, out, err = curl(lb, "--data-binary", "@%s" % src, url(lb, "/echo"))
        else:  # no Content-Length: the backend gets it chunked
            with open(src, "rb") as f:
                rc, out, err = curl(lb, "-X", "POST", "-T", "-", url(lb, "/echo"), stdin=f)
        assert rc == 0, err
        assert (len(out), hashlib.sha256(out).hexdigest()) == (len(data), hashlib.sha256(data).hexdigest())
    finally:
        echo.close()


def test_100_mib_each_way_with_flat_memory(h2_lb, agora_bin):
    lb = h2_lb(backends=None)
    for _ in range(3):  # warm up: the pools and the TLS buffers exist
        assert curl(lb, url(lb, "/bytes?n=1000000"))[0] == 0
    before = rss_kib(lb.pid)
    results = {}

    def down():
        c = H2(lb.tls_port, lb.ca, timeout=60)
        sid = c.request("/bytes?n=%d" % BIG)
        n, ok = 0, True
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            c.wait(lambda c: c.streams.get(sid, {}).get("data") or c.streams.get(sid, {}).get("ended"), 5)
            st = c.streams.get(sid)
            if st is None:
                break
            chunk, st["data"] = st["data"], b""  # checked as it arrives, not kept
            ok = ok and chunk == pattern_bytes(n, len(chunk))
            n += len(chunk)
            if st["ended"] or st["reset"] is not None or c.closed:
                break
        results["down"] = (n, ok)
        c.close()

    def up():
        zeros = subprocess.Popen(["head", "-c", str(BIG), "/dev/zero"], stdout=subprocess.PIPE)
        rc, out, err = curl(lb, "-X", "POST", "-T", "-", url(lb, "/sink"), stdin=zeros.stdout)
        zeros.wait()
        results["up"] = (rc, out, err)

    with RssSampler(lb.pid) as rss:
        threads = [threading.Thread(target=down), threading.Thread(target=up)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    assert results["down"] == (BIG, True)
    rc, out, err = results["up"]
    assert (rc, json.loads(out)) == (0, {"received": BIG, "chunked": True}), err
    growth = rss.peak_kib - before
    if "asan" not in str(agora_bin):  # ASan's quarantine and redzones make resident memory meaningless
        assert growth < 32 * 1024, "VmRSS %d KiB before, peak %d KiB" % (before, rss.peak_kib)


def test_client_resets_a_stream_mid_response(h2_lb, tmp_path):
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    big = c.request("/bytes?n=%d" % BIG)
    small = [c.request("/bytes?n=200000") for _ in range(5)]
    assert c.wait(lambda c: len(c.streams.get(big, {}).get("data", b"")) > 100000)
    c.send(frame(RST_STREAM, 0, big, struct.pack(">I", CANCEL)))
    for sid in small:
        status, body, reset = c.wait_stream(sid, 20)
        assert (status, body == pattern_bytes(0, 200000), reset) == (200, True, None)
    # The reset stream gets nothing more after a moment (its backend request was cancelled).
    c.wait(lambda c: False, 0.5)
    got = len(c.streams[big]["data"])
    c.wait(lambda c: False, 0.5)
    assert len(c.streams[big]["data"]) == got and got < BIG
    status, body, reset = c.wait_stream(c.request("/after"))
    assert (status, reset) == (200, None)
    c.close()
    fresh_request_works(lb)


# ---------------------------------------------------------------- hostile clients


def flood(lb, payload):
    c = H2(lb.tls_port, lb.ca)
    c.send(payload(c))
    goaway = c.wait_goaway(15)
    closed = c.wait(lambda c: c.closed, 5)
    c.close()
    return goaway, closed


def req_block(c, path="/", method="GET"):
    return c.block([(":method", method), (":scheme", "https"), (":path", path), (":authority", "localhost")])


def test_rapid_reset_gets_goaway_enhance_your_calm(h2_lb):
    """CVE-2023-44487: requests opened and reset at once. Beyond H2_MAX_RESETS (200) per 10 s:
    GOAWAY ENHANCE_YOUR_CALM (naming the 201st reset stream the last) and the connection closes."""
    lb = h2_lb()

    def payload(c):
        out = b""
        for i in range(1000):
            sid = 1 + 2 * i
            out += frame(HEADERS, END_HEADERS | END_STREAM, sid, req_block(c, "/delay?ms=2000"))
            out += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
        return out

    goaway, closed = flood(lb, payload)
    assert goaway == (401, ENHANCE_YOUR_CALM) and closed  # the 201st reset: stream 401
    fresh_request_works(lb)


def test_continuation_flood_is_refused(h2_lb):
    """A header block that never ends: nghttp2 allows 8 CONTINUATION frames, then the connection
    ends with GOAWAY ENHANCE_YOUR_CALM."""
    lb = h2_lb()

    def payload(c):
        out = frame(HEADERS, 0, 1, req_block(c))
        return out + b"".join(frame(CONTINUATION, 0, 1, c.block([("x-a%d" % i, "v")])) for i in range(200))

    goaway, closed = flood(lb, payload)
    assert goaway == (1, ENHANCE_YOUR_CALM) and closed
    fresh_request_works(lb)


def test_hpack_bomb_is_refused(h2_lb):
    """A 4 KB field put in the dynamic table, then referenced 16,000 times (1 byte each, 64 MB
    decoded): past 4 x max_head the connection ends with GOAWAY ENHANCE_YOUR_CALM."""
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    blk = c.block([(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "localhost"),
                   ("bomb", "x" * 4000)])
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, blk))
    assert c.wait_stream(1)[0] == 200  # one such field is fine
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, req_block(c) + bytes([0x80 | 62]) * 16000))
    assert c.wait_goaway() == (3, ENHANCE_YOUR_CALM)
    assert c.wait(lambda c: c.closed, 5)
    c.close()
    fresh_request_works(lb)


@pytest.mark.parametrize("kind", ["ping", "settings", "empty-data"])
def test_control_frame_floods_are_refused(h2_lb, kind):
    """2,000 PINGs, SETTINGS or empty DATA frames: beyond 1,000 per 10 s, GOAWAY
    ENHANCE_YOUR_CALM (for PING and SETTINGS nghttp2's bound of 1,000 queued acks may come first:
    the same code)."""
    lb = h2_lb()

    def payload(c):
        if kind == "ping":
            return b"".join(frame(PING, 0, 0, b"12345678") for _ in range(2000))
        if kind == "settings":
            return b"".join(frame(SETTINGS, 0, 0) for _ in range(2000))
        return frame(HEADERS, END_HEADERS, 1, req_block(c, "/sink", "POST")) + b"".join(
            frame(DATA, 0, 1) for _ in range(2000))

    goaway, closed = flood(lb, payload)
    assert goaway is not None and goaway[1] == ENHANCE_YOUR_CALM and closed, goaway
    fresh_request_works(lb)


def test_too_many_concurrent_streams(h2_lb):
    """SETTINGS_MAX_CONCURRENT_STREAMS is 100: the 101st open stream is refused (REFUSED_STREAM),
    the 100 others are answered."""
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    ids = [c.request("/delay?ms=1000") for _ in range(101)]
    assert c.wait_stream(ids[-1], 10) == (None, b"", REFUSED_STREAM)
    answers = [c.wait_stream(sid, 10)[0] for sid in ids[:-1]]
    assert answers == [200] * 100
    c.close()
    fresh_request_works(lb)


def test_stream_id_exhaustion_ends_gracefully(h2_lb):
    """A stream id near 2^31: it is answered, with GOAWAY NO_ERROR naming it the last; then the
    connection closes (the client goes on on a new one)."""
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    sid = c.request("/", sid=0x7FFFFFFF)
    status, body, reset = c.wait_stream(sid)
    assert (status, reset) == (200, None)
    assert c.wait_goaway() == (0x7FFFFFFF, NO_ERROR)
    assert c.wait(lambda c: c.closed, 5)
    c.close()
    fresh_request_works(lb)


def test_requests_per_connection_are_bounded(h2_lb):
    """After --h2-max-requests streams on one connection (100,000 by default; 2,000 here): GOAWAY
    NO_ERROR naming the last, which is answered; h2load sees exactly 2,000 succeed and the rest
    fail (h2load does not open another connection)."""
    if shutil.which("h2load") is None:
        pytest.skip("h2load (nghttp2-client) is missing")
    lb = h2_lb("--h2-max-requests", "2000")
    p = subprocess.run(["h2load", "-n", "2100", "-c", "1", "-m", "1", url(lb, "/")], capture_output=True,
                       timeout=120)
    out = p.stdout.decode()
    assert "2000 succeeded, 100 failed" in out and "status codes: 2000 2xx" in out, out
    c = H2(lb.tls_port, lb.ca)  # the same with a raw client: the 2,000th stream is named the last
    for i in range(2000):
        c.request("/", sid=1 + 2 * i)
        c.wait(lambda c: c.streams.get(1 + 2 * i, {}).get("ended"), 5)
    assert c.wait_goaway() == (3999, NO_ERROR)
    assert c.wait(lambda c: c.closed, 5)
    c.close()
    fresh_request_works(lb)


@pytest.mark.parametrize("field", [("connection", "keep-alive"), ("keep-alive", "1"), ("proxy-connection", "x"),
                                   ("transfer-encoding", "chunked"), ("upgrade", "websocket"), ("te", "gzip"),
                                   ("X-Upper", "x"), (":unknown", "x")])
def test_malformed_requests_reset_the_stream_only(h2_lb, field):
    """RFC 9113 §8.2: connection-specific fields (and Upgrade: no WebSocket over h2), TE other
    than trailers, upper-case names, unknown pseudo-headers: RST_STREAM PROTOCOL_ERROR on that
    stream; the next stream on the same connection is answered."""
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    assert c.wait_stream(c.request("/", extra=[field])) == (None, b"", PROTOCOL_ERROR)
    assert c.wait_stream(c.request("/"))[0] == 200
    assert c.goaway is None
    c.close()


def test_connect_and_extended_connect_are_refused(h2_lb):
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    c.send(frame(HEADERS, END_HEADERS, 1, c.block([(":method", "CONNECT"), (":authority", "localhost:443")])))
    status, body, _ = c.wait_stream(1)
    assert (status, body) == (501, b"not implemented: CONNECT is not supported\n")
    # Extended CONNECT (RFC 8441, WebSocket over h2): not offered (no SETTINGS_ENABLE_CONNECT_PROTOCOL).
    c.send(frame(HEADERS, END_HEADERS, 3, c.block([(":method", "CONNECT"), (":protocol", "websocket"),
                                                   (":scheme", "https"), (":path", "/ws"),
                                                   (":authority", "localhost")])))
    assert c.wait_stream(3) == (None, b"", PROTOCOL_ERROR)
    c.next_id = 5
    assert c.wait_stream(c.request("/"))[0] == 200
    c.close()


def test_content_length_mismatch_resets_the_stream(h2_lb):
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    sid = c.request("/echo", method="POST", body=b"abc", extra=[("content-length", "10")])
    assert c.wait_stream(sid) == (None, b"", PROTOCOL_ERROR)
    assert c.wait_stream(c.request("/"))[0] == 200
    c.close()


def test_bad_path_and_missing_pseudo_headers(h2_lb):
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                 c.block([(":method", "GET"), (":scheme", "https"), (":authority", "localhost")])))
    assert c.wait_stream(1) == (None, b"", PROTOCOL_ERROR)
    c.next_id = 3
    assert c.wait_stream(c.request("relative"))[2] == PROTOCOL_ERROR  # nghttp2's check
    for bad in ("/a\x01b", "/a b", "/a\x7fb", "*"):  # nghttp2's checks ("*" is for OPTIONS only)
        assert c.wait_stream(c.request(bad)) == (None, b"", PROTOCOL_ERROR), bad
    assert c.wait_stream(c.request("/a#b"))[:2] == (400, b"bad request: malformed HTTP/2 request\n")  # ours
    assert c.wait_stream(c.request("*", method="OPTIONS"))[0] == 200
    assert c.wait_stream(c.request("/ok"))[0] == 200
    c.close()


def test_header_list_over_the_limit_is_431_on_that_stream(h2_lb):
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    status, body, _ = c.wait_stream(c.request("/", extra=[("x-big", "y" * 20000)]))
    assert status == 431
    status, _, _ = c.wait_stream(c.request("/", extra=[("x-f%d" % i, "v") for i in range(120)]))
    assert status == 431
    assert c.wait_stream(c.request("/"))[0] == 200
    c.close()


def test_http11_request_on_an_h2_connection(h2_lb):
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca, preface=False)
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert c.wait_goaway() == (0, PROTOCOL_ERROR)
    assert c.wait(lambda c: c.closed, 5)
    c.close()
    fresh_request_works(lb)


def test_h2_preface_on_an_http11_connection(h2_lb):
    lb = h2_lb()
    s = tls_socket(lb.tls_port, lb.ca, alpn=("http/1.1",))
    assert s.selected_alpn_protocol() == "http/1.1"
    s.sendall(PREFACE)
    data = read_to_close(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), data[:100]
    fresh_request_works(lb)


def test_idle_h2_connection_is_closed(h2_lb):
    lb = h2_lb("--client-idle-timeout", "1s")
    c = H2(lb.tls_port, lb.ca)
    assert c.wait_stream(c.request("/"))[0] == 200
    t0 = time.monotonic()
    assert c.wait(lambda c: c.closed, 5)
    assert 0.5 < time.monotonic() - t0 < 3
    c.close()
    # A connection with a stream open is not idle: a 1.5 s response on a 1 s idle timeout.
    c = H2(lb.tls_port, lb.ca)
    assert c.wait_stream(c.request("/delay?ms=1500"))[0] == 200
    c.close()


def test_window_kept_shut_is_closed_at_the_send_timeout(h2_lb):
    """A client that opens no flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0) on a response,
    while it keeps the connection busy with PINGs: closed after the send timeout, as an HTTP/1.1
    client that reads nothing."""
    lb = h2_lb("--client-send-timeout", "1s")
    c = H2(lb.tls_port, lb.ca, settings=struct.pack(">HI", 4, 0))
    c.request("/bytes?n=1000000")
    t0 = time.monotonic()
    while not c.closed and time.monotonic() - t0 < 5:
        c.send(frame(PING, 0, 0, b"stillhere"[:8]))
        c.wait(lambda c: False, 0.2)
    assert c.closed and 0.8 < time.monotonic() - t0 < 3, time.monotonic() - t0
    c.close()
    fresh_request_works(lb)


def test_access_log_has_one_line_per_stream(h2_lb, tmp_path):
    log = tmp_path / "access.log"
    lb = h2_lb("--access-log", str(log))
    c = H2(lb.tls_port, lb.ca)
    ids = [c.request("/one"), c.request("/status?code=404"), c.request("/sink", method="POST", body=b"x" * 1000)]
    assert [c.wait_stream(sid)[0] for sid in ids] == [200, 404, 200]
    c.close()
    assert wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, 5)
    lines = sorted(log.read_text().splitlines())
    assert len(lines) == 3
    assert ['"GET /one HTTP/2.0" 200' in l for l in lines].count(True) == 1, lines
    assert ['"GET /status?code=404 HTTP/2.0" 404' in l for l in lines].count(True) == 1, lines
    assert ['"POST /sink HTTP/2.0" 200' in l for l in lines].count(True) == 1, lines


def test_sigterm_finishes_the_open_streams_with_goaway(h2_lb):
    lb = h2_lb("--shutdown-timeout", "10s")
    c = H2(lb.tls_port, lb.ca)
    sid = c.request("/delay?ms=1000")
    time.sleep(0.3)
    lb.popen.send_signal(signal.SIGTERM)
    status, body, reset = c.wait_stream(sid, 10)
    assert (status, body, reset) == (200, b"delayed 1000 ms\n", None)
    assert c.wait_goaway() == (sid, NO_ERROR)
    assert c.wait(lambda c: c.closed, 5)
    c.close()
    assert lb.wait(timeout=15) == 0


def test_request_trailers_are_dropped_and_bounded(h2_lb):
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    sid = c.request("/echo", method="POST", body=b"abc", end=False)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, c.block([("x-trailer", "yes")])))
    status, body, reset = c.wait_stream(sid)
    doc = json.loads(body)
    assert (status, reset, doc["body_length"], doc["chunked"], doc["body_prefix"]) == (200, None, 3, True, "abc")
    assert not any(k.lower() == "x-trailer" for k, _ in doc["headers"])
    # A trailer section counts toward the HPACK-bomb bound as the head does.
    c.send(frame(HEADERS, END_HEADERS, 3, req_block(c, "/sink", "POST")) + frame(DATA, 0, 3, b"x"))
    c.send(frame(HEADERS, END_HEADERS, 5, c.block([(":method", "POST"), (":scheme", "https"), (":path", "/sink"),
                                                   (":authority", "localhost"), ("bomb", "x" * 4000)])))
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 5, bytes([0x80 | 62]) * 16000))  # the bomb, 16,000 times
    assert c.wait_goaway() == (5, ENHANCE_YOUR_CALM)
    c.close()
    fresh_request_works(lb)


def test_h2c_prior_knowledge_on_the_plain_listener(h2_lb):
    lb = h2_lb("--h2c", "on")
    base = "http://127.0.0.1:%d" % lb.port
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}", base + "/echo"],
                       capture_output=True, timeout=30)
    body, _, version = p.stdout.rpartition(b"\n")
    assert (p.returncode, version) == (0, b"2"), p.stderr
    hdrs = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert hdrs["x-forwarded-proto"] == "http"
    # HTTP/1.1 on the same port still.
    p = subprocess.run(["curl", "-sS", "--http1.1", "-w", "\n%{http_version}", base + "/"], capture_output=True,
                       timeout=30)
    assert p.stdout.endswith(b"\n1.1") and p.stdout.startswith(b"hello from "), p.stdout
    if shutil.which("h2load"):
        p = subprocess.run(["h2load", "-n", "500", "-c", "2", "-m", "10", base + "/"], capture_output=True,
                           timeout=60)
        assert "500 succeeded, 0 failed" in p.stdout.decode(), p.stdout.decode()
    # Off (the default): the preface is an HTTP/1.1 error, HTTP/2 is not spoken.
    off = h2_lb()
    with socket.create_connection((LOCALHOST, off.port), timeout=5) as s:
        s.sendall(PREFACE)
        assert read_to_close(s).startswith(b"HTTP/1.1 505 ")


class HeldBackend(ThreadedBackend):
    """An HTTP/1.1 origin that reads a request head, then nothing more until .release is set; then
    it reads the (chunked) body to its end and answers 200 with the count of body bytes."""

    def __init__(self):
        self.release = threading.Event()
        super().__init__()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = conn.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                if head.split(b" ")[1] == b"/health":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                self.release.wait(30)
                total = len(buf)  # what came with the head
                while not buf.endswith(b"0\r\n\r\n") or total == 0:  # the chunked body, roughly
                    d = conn.recv(1 << 20)
                    if not d:
                        return
                    buf = (buf + d)[-16:]
                    total += len(d)
                answer = b"%d" % total
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                buf = b""
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.close_listener()


def test_request_body_backpressure_holds_the_client(h2_lb, agora_bin):
    """A backend that reads nothing of a 64 MiB upload for 2 s: the balancer stops giving the
    client's window back, so the client (which respects flow control, python3-h2) has sent a
    bounded part of it meanwhile; released, the whole body arrives."""
    import h2.config
    import h2.connection
    import h2.events

    backend = HeldBackend()
    try:
        lb = h2_lb(backends=[backend.port])
        before = rss_kib(lb.pid)
        s = tls_socket(lb.tls_port, lb.ca)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":path", "/held"),
                                (":authority", "localhost")])
        total, sent, body, done = 64 * 1024 * 1024, 0, b"", False
        chunk = b"x" * 16384
        t0 = time.monotonic()
        held_sent = None
        with RssSampler(lb.pid) as rss:
            while not done and time.monotonic() - t0 < 60:
                if held_sent is None and time.monotonic() - t0 > 2:
                    held_sent = sent
                    backend.release.set()
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size) if sent < total else 0
                if window > 0:
                    n = min(window, total - sent)
                    conn.send_data(sid, chunk[:n], end_stream=sent + n == total)
                    sent += n
                s.sendall(conn.data_to_send())
                s.settimeout(0.0 if window > 0 else 0.2)
                try:
                    data = s.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError, BlockingIOError):
                    data = None
                if data == b"":
                    break
                for ev in conn.receive_data(data) if data else []:
                    if isinstance(ev, h2.events.DataReceived):
                        body += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        done = True
                s.sendall(conn.data_to_send())
        s.close()
        assert done and body.isdigit() and int(body) >= total, body  # the count includes chunk framing
        # Held: at most the stream window, the balancer's buffer and the kernel's socket buffers.
        assert held_sent is not None and held_sent < 16 * 1024 * 1024, held_sent  # 4.5 MiB seen
        if "asan" not in str(agora_bin):
            assert rss.peak_kib - before < 32 * 1024, (before, rss.peak_kib)
    finally:
        backend.release.set()
        backend.close()


def test_stalled_request_body_is_408_on_that_stream(h2_lb):
    """--client-body-timeout on HTTP/2 as on HTTP/1.1: a stream whose body stops (no DATA, no
    END_STREAM) gets 408 after the timeout while the connection and its other streams go on; a
    body trickled in DATA frames closer together than the timeout is not cut (every frame pushes
    the deadline back) and reaches the backend whole."""
    lb = h2_lb("--client-body-timeout", "1s")
    c = H2(lb.tls_port, lb.ca)
    t0 = time.monotonic()
    stalled = c.request("/echo", method="POST", body=b"abc", end=False)
    status, data, reset = c.wait_stream(stalled, 6)
    took = time.monotonic() - t0
    assert status == 408 and b"request body timeout" in data, (status, data, reset)
    assert 0.8 < took < 3, took
    # The client's later DATA on that stream is dropped; the connection serves the next stream.
    c.send(frame(DATA, 0, stalled, b"late"))
    assert c.wait_stream(c.request("/"))[0] == 200
    # Trickled: 6 DATA frames 0.4 s apart (2 s in all, twice the timeout), then the end.
    sid = c.request("/echo", method="POST", body=b"", end=False)
    for i in range(6):
        time.sleep(0.4)
        c.send(frame(DATA, END_STREAM if i == 5 else 0, sid, b"part%d;" % i))
    status, data, reset = c.wait_stream(sid, 6)
    assert (status, reset) == (200, None), (status, data, reset)
    echoed = json.loads(data)
    assert echoed["body_length"] == 36 and echoed["body_prefix"] == "part0;part1;part2;part3;part4;part5;", echoed
    c.close()


def test_response_head_with_long_field_names_arrives_whole(h2_lb):
    """A backend response head whose field names alone are far over the 2 KiB h2.c lowers on its
    stack (60 names of 100 characters, mixed case): every field reaches the h2 client, the names in
    lower case, the values as sent, and the connection serves the next stream."""
    from test_lb_errors import ScriptBackend

    names = ["X-Long-%02d-" % i + "Ab" * 45 for i in range(60)]
    head = "".join("%s: value-%d\r\n" % (n, i) for i, n in enumerate(names))

    def answer(sock):
        sock.sendall(("HTTP/1.1 200 OK\r\n%sContent-Length: 2\r\n\r\nok" % head).encode())
        sock.close()

    backend = ScriptBackend(answer)
    try:
        lb = h2_lb(backends=[backend.port])
        c = H2(lb.tls_port, lb.ca)
        for _ in range(2):  # the second on a spare stream
            sid = c.request("/long")
            status, data, reset = c.wait_stream(sid)
            assert (status, data, reset) == (200, b"ok", None)
            got = [(k, v) for k, v in c.streams[sid]["headers"] if k.startswith("x-long-")]
            assert got == [(n.lower(), "value-%d" % i) for i, n in enumerate(names)]
        c.close()
    finally:
        backend.close()


def test_streams_after_the_spares_are_freed(h2_lb):
    """A burst of 30 concurrent streams leaves up to 16 freed ones for reuse (H2_SPARE_STREAMS);
    1.5 s without a stream frees them (H2_SPARE_MS); the bursts after that, and one on the spares
    of the previous one, are all answered whole from both backends."""
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    for pause in (0, 1.5, 0):
        time.sleep(pause)
        sids = [c.request("/bytes?n=%d" % (1000 + i)) for i in range(30)]
        for i, sid in enumerate(sids):
            status, data, reset = c.wait_stream(sid)
            assert (status, len(data), reset) == (200, 1000 + i, None)
    c.close()
