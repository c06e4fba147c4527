"""Hostile review of HTTP/2 at the balancer's edge (issue 14 item 2, src/http/h2.c, review h2review).

The h2-to-h1 desync class: what exactly reaches the backend for a body with and without
content-length, :authority against Host, a stream reset mid-upload (the half-sent request's backend
connection must never carry the next request); malformed and odd backend responses carried back;
flow-control changes mid-stream; a reload with streams open; and the resource bound on backend
connections (each stream is its own backend request: --max-connections does not bound them).
Run under ASan too: AGORA_BIN=build-asan/agora."""

import signal
import socket
import ssl
import struct
import threading
import time

import pytest

from agora_test.backends import CaptureBackend
from h2raw import (CANCEL, DATA, END_HEADERS, END_STREAM, FLOW_CONTROL_ERROR, H2, HEADERS, PROTOCOL_ERROR, RST_STREAM, SETTINGS,
                   WINDOW_UPDATE, frame)
from helpers import LOCALHOST, pattern_bytes, wait_for
from test_lb_h2 import h2_lb  # noqa: F401 (fixture)
from test_lb_reload import reload, write_config
from test_lb_tls import certs, tls_flags  # noqa: F401 (certs is a fixture)


def hdr(c, sid, fields, end):
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, c.block(fields))


def base(path="/", method="POST", authority="localhost"):
    return [(":method", method), (":scheme", "https"), (":path", path), (":authority", authority)]


@pytest.fixture
def capture():
    b = CaptureBackend()
    yield b
    b.stop()


def strip_ids(raw):
    """A captured request without its X-Request-Id value (random)."""
    out = []
    for line in raw.split(b"\r\n"):
        out.append(b"X-Request-Id: *" if line.startswith(b"X-Request-Id: ") else line)
    return b"\r\n".join(out)


FWD = b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Request-Id: *\r\n"


def test_backend_sees_exact_framing_and_one_host(h2_lb, capture):
    """A body with content-length goes with Content-Length (the client's own field is not passed
    twice), one without as chunked; :authority is the one Host even when a host field disagrees;
    all three on one pooled backend connection, framed so the backend parses them as three."""
    lb = h2_lb(backends=[capture.port])
    c = H2(lb.tls_port, lb.ca)
    c.send(hdr(c, 1, base("/cl") + [("content-length", "5")], False) + frame(DATA, END_STREAM, 1, b"hello"))
    assert c.wait_stream(1) == (200, b"captured\n", None)
    c.send(hdr(c, 3, base("/chunked"), False) + frame(DATA, 0, 3, b"hel") + frame(DATA, END_STREAM, 3, b"lo"))
    assert c.wait_stream(3) == (200, b"captured\n", None)
    c.send(hdr(c, 5, base("/auth", "GET", "a.example") + [("host", "evil.example")], True))
    assert c.wait_stream(5) == (200, b"captured\n", None)
    c.close()
    assert capture.requests == ["POST /cl HTTP/1.1", "POST /chunked HTTP/1.1", "GET /auth HTTP/1.1"]
    assert [strip_ids(bytes(x)) for x in capture.connections()] == [
        b"POST /cl HTTP/1.1\r\nhost: localhost\r\n" + FWD + b"Content-Length: 5\r\n\r\nhello"
        b"POST /chunked HTTP/1.1\r\nhost: localhost\r\n" + FWD + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
        b"GET /auth HTTP/1.1\r\nhost: a.example\r\n" + FWD + b"\r\n"]


@pytest.mark.parametrize("how", ["cl-reset", "chunked-reset", "cl-short-end"])
def test_half_sent_upload_never_carries_the_next_request(h2_lb, capture, how):
    """A stream ends mid-upload (client RST_STREAM, or END_STREAM short of its content-length:
    nghttp2 resets it): the backend connection holding the half body is closed, never pooled, so
    the next stream's request cannot become the rest of that body (H2.CL / H2.TE desync)."""
    lb = h2_lb(backends=[capture.port])
    c = H2(lb.tls_port, lb.ca)
    fields = base("/up") + ([] if how == "chunked-reset" else [("content-length", "10")])
    c.send(hdr(c, 1, fields, False) + frame(DATA, 0, 1, b"abc"))
    assert wait_for(lambda: any(bytes(x).endswith(b"abc\r\n") or bytes(x).endswith(b"abc")
                                for x in capture.connections()), 5)
    if how == "cl-short-end":
        c.send(frame(DATA, END_STREAM, 1))
        assert c.wait_stream(1) == (None, b"", PROTOCOL_ERROR)
    else:
        c.send(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
    c.wait(lambda c: False, 0.3)
    c.next_id = 3
    assert c.wait_stream(c.request("/next")) == (200, b"captured\n", None)
    c.close()
    assert capture.requests == ["GET /next HTTP/1.1"]
    conns = [bytes(x) for x in capture.connections()]
    assert len(conns) == 2 and conns[1].startswith(b"GET /next HTTP/1.1\r\n") and b"/next" not in conns[0]


@pytest.mark.parametrize("resp,status,fields,body", [
    # 1xx dropped; Connection, the fields it names, Keep-Alive: dropped
    (b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, x-hop\r\n"
     b"X-Hop: 1\r\nKeep-Alive: 5\r\n\r\nok", 200, {"content-length": "2"}, b"ok"),
    # 204 never has a body nor a content-length
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", 204, {}, b""),
    # chunked with a content-length (smuggling-shaped): refused
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 502, None,
     None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Bad: a\x00b\r\n\r\nok", 502, None, None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Fold: a\r\n b\r\n\r\nok", 502, None, None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!", 502, None, None),
])
def test_odd_backend_responses(h2_lb, resp, status, fields, body):
    cap = CaptureBackend(response=resp)
    try:
        lb = h2_lb(backends=[cap.port])
        c = H2(lb.tls_port, lb.ca)
        for _ in range(2):  # and again: nothing left over on the connection
            got = c.wait_stream(c.request("/r"))
            sid = c.next_id - 2
            assert got[0] == status and got[2] is None
            if fields is not None:
                h = {k: v for k, v in c.streams[sid]["headers"] if k not in (":status", "x-request-id")}
                assert (h, got[1]) == (fields, body)
        c.close()
    finally:
        cap.stop()


def test_window_changes_mid_stream(h2_lb):
    """SETTINGS_INITIAL_WINDOW_SIZE 0 holds a response; raising it releases all of it. A
    WINDOW_UPDATE overflowing a stream's window resets that stream only (FLOW_CONTROL_ERROR)."""
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca, settings=struct.pack(">HI", 4, 0))
    sid = c.request("/bytes?n=300000")
    c.wait(lambda c: False, 1.0)
    assert c.streams.get(sid, {}).get("data", b"") == b""
    c.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)))
    status, data, reset = c.wait_stream(sid, 20)
    assert (status, len(data), data == pattern_bytes(0, 300000), reset) == (200, 300000, True, None)
    # overflow: a stream held open by a slow response, then 2^31-1 more window
    slow = c.request("/delay?ms=1500")
    c.send(frame(WINDOW_UPDATE, 0, slow, struct.pack(">I", 0x7FFFFFFF)))
    assert c.wait_stream(slow)[2] == FLOW_CONTROL_ERROR
    assert c.wait_stream(c.request("/after"))[0] == 200
    assert c.goaway is None
    c.close()


def test_body_over_max_size_mid_stream(h2_lb):
    """A chunked (no content-length) body passing --max-body-size mid-stream: 413 on that stream
    before any response, the next stream is served."""
    lb = h2_lb("--max-body-size", "100000")
    c = H2(lb.tls_port, lb.ca)
    sid = c.request("/echo", method="POST", body=b"x" * 200000)
    status, body, _ = c.wait_stream(sid)
    assert (status, body) == (413, b"request body too large\n")
    assert c.wait_stream(c.request("/"))[0] == 200
    c.close()


def test_reload_with_streams_open(h2_lb, testbackend_factory, tmp_path):
    """SIGHUP while streams wait on their backend: they finish, new streams on the same connection
    are served (by the new backend list)."""
    a, b = testbackend_factory("A"), testbackend_factory("B")
    config = tmp_path / "lb.ini"
    write_config(config, [a])
    lb = h2_lb("--config", config, backends=[])
    c = H2(lb.tls_port, lb.ca)
    held = [c.request("/delay?ms=1500") for _ in range(5)]
    c.wait(lambda c: False, 0.3)
    write_config(config, [b])
    reload(lb)
    for sid in held:
        assert c.wait_stream(sid)[:2] == (200, b"delayed 1500 ms\n")
    sid = c.request("/")
    assert c.wait_stream(sid)[:2] == (200, b"hello from B\n")
    c.close()


class HoldBackend:
    """Accepts connections and never answers (health checks get 200): counts connections."""

    def __init__(self):
        self.count = 0
        self.socks = []
        self.lock = threading.Lock()
        self.listener = socket.create_server((LOCALHOST, 0), backlog=1024)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            d = s.recv(4096)
            if d.startswith(b"GET /health ") or d.startswith(b"GET /victim "):
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                s.close()
                return
            with self.lock:
                self.count += 1
                self.socks.append(s)
        except OSError:
            s.close()

    def release(self):
        """Closes the held connections (the listener stays)."""
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            s.close()

    def close(self):
        self.listener.close()
        self.release()


def test_backend_connections_bounded_like_http11(h2_lb):
    """--max-connections 4 bounds an HTTP/1.1 client to 4 backend connections at once (one
    request each). Over HTTP/2 one connection opened 100 streams, each a backend connection, so
    two connections held 200 (review h2review F1). Now streams count as connections: 2
    connections + 2 streams, the other 198 streams RST_STREAM REFUSED_STREAM (not processed: a
    client retries them), and no GOAWAY (refusals are not the client's misbehaviour)."""
    from h2raw import REFUSED_STREAM
    hold = HoldBackend()
    try:
        lb = h2_lb("--max-connections", "4", backends=[hold.port])
        conns = [H2(lb.tls_port, lb.ca) for _ in range(2)]
        for c in conns:
            for _ in range(100):
                c.request("/held")
        refused = lambda: sum(1 for c in conns for f in c.frames  # noqa: E731
                              if f[0] == RST_STREAM and struct.unpack(">I", f[3])[0] == REFUSED_STREAM)
        for c in conns:
            c.wait(lambda c: refused() >= 198, 10)
        time.sleep(0.5)
        got = hold.count
        assert (got, refused()) == (2, 198)
        assert all(c.goaway is None for c in conns)
        for c in conns:
            c.close()
    finally:
        hold.close()



def test_h2_streams_keep_within_the_descriptor_budget(agora_bin, certs, tmp_path):
    """The balancer at a descriptor limit of 300: auto --max-connections is 112 client connections,
    each promised a backend descriptor (lb_auto_max_connections). One client opens 4 HTTP/2
    connections with 100 streams each on a backend that holds them unanswered. Before the fix: 286
    backend connections (every descriptor: backend connects and accepts failed with EMFILE), and
    another client's GET timed out. Now the streams count as connections: 4 + 108 = 112, the rest
    refused; once the attacker leaves, service resumes."""
    from agora_test.lb import backend_url, start_lb
    from helpers import http_request
    hold = HoldBackend()
    wrapper = tmp_path / "agora-lowfd"
    wrapper.write_text("#!/bin/sh\nexec prlimit --nofile=300:300 -- %s \"$@\"\n" % agora_bin)
    wrapper.chmod(0o755)
    s = socket.socket()
    s.bind((LOCALHOST, 0))
    tls_port = s.getsockname()[1]
    s.close()
    lb = start_lb(wrapper, ["--admin-listen", "off", "--workers", "1", "--slow-start", "0",
                            "--backend", backend_url(hold.port), "--tls-listen", "%s:%d" % (LOCALHOST, tls_port)]
                  + tls_flags(certs, "a"))
    attackers = []
    try:
        assert "up to 112 client connections per worker" in lb.output(), lb.output()
        attackers = [H2(tls_port, certs["a"][0]) for _ in range(4)]
        for c in attackers:
            for _ in range(100):
                c.request("/held")
        wait_for(lambda: hold.count >= 400, 5)
        time.sleep(0.5)
        held = hold.count
        for c in attackers:
            c.close()
        hold.release()

        def served():
            try:
                return http_request(LOCALHOST, lb.port, "GET", "/victim", timeout=2)[0] == 200
            except OSError:
                return False

        assert wait_for(served, 15)
        assert held == 108, "%d backend connections at a budget of 112 (4 client connections)" % held
    finally:
        for c in attackers:
            c.close()
        lb.stop()
        hold.close()


def test_resets_goaway_and_sigterm_with_uploads_held(h2_lb):
    """Streams whose upload the backend does not read (their body paused in the balancer, DATA
    kept), then: one reset by the client, a client GOAWAY, and SIGTERM with the rest still open.
    Under ASan this is the use-after-free hunt; the balancer must exit 0 (the fixture checks)."""
    from test_lb_h2 import HeldBackend
    held = HeldBackend()
    try:
        lb = h2_lb(backends=[held.port])
        c = H2(lb.tls_port, lb.ca)
        sids = [c.request("/up", method="POST", body=b"z" * 200000, end=False) for _ in range(6)]
        c.wait(lambda c: False, 1.0)
        c.send(frame(RST_STREAM, 0, sids[0], struct.pack(">I", CANCEL)))
        c.wait(lambda c: False, 0.3)
        c.send(frame(7, 0, 0, struct.pack(">II", sids[-1], 0)))  # GOAWAY NO_ERROR from the client
        c.wait(lambda c: False, 0.3)
        d = H2(lb.tls_port, lb.ca)
        more = [d.request("/up2", method="POST", body=b"y" * 100000, end=False) for _ in range(3)]
        d.wait(lambda c: False, 0.5)
        lb.popen.send_signal(signal.SIGTERM)
        held.release.set()  # the backend reads and answers now; the streams still lack their END_STREAM
        for sid in more:
            d.send(frame(DATA, END_STREAM, sid))
        for sid in more:
            status, body, reset = d.wait_stream(sid, 20)
            assert (status, reset) == (200, None) and int(body) > 100000, (status, body, reset)  # body + chunk framing
        assert lb.popen.wait(20) == 0
        c.close()
        d.close()
    finally:
        held.close()



def test_no_host_and_h2c_upgrade(h2_lb, capture):
    """No :authority nor host, or an empty :authority: the stream is reset (an HTTP/1.1 request
    without Host is 400 too), nothing reaches the backend. With --h2c on, an HTTP/1.1 Upgrade: h2c
    (h2c smuggling) is not taken: the request is forwarded as plain HTTP/1.1 without Upgrade,
    Connection and HTTP2-Settings."""
    lb = h2_lb("--h2c", "on", backends=[capture.port])
    c = H2(lb.tls_port, lb.ca)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block([(":method", "GET"), (":scheme", "https"),
                                                                 (":path", "/nohost")])))
    assert c.wait_stream(1) == (None, b"", PROTOCOL_ERROR)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, c.block([(":method", "GET"), (":scheme", "https"),
                                                                 (":path", "/emptyauth"), (":authority", "")])))
    assert c.wait_stream(3) == (None, b"", PROTOCOL_ERROR)
    c.close()
    with socket.create_connection((LOCALHOST, lb.port), timeout=5) as s:
        s.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        got = b""
        while not got.endswith(b"captured\n"):
            d = s.recv(1000)
            if not d:
                break
            got += d
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\ncaptured\n")
    assert [strip_ids(bytes(x)) for x in capture.connections()] == [
        b"GET /up HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        b"X-Request-Id: *\r\n\r\n"]



def test_server_resets_the_client_provokes_are_bounded(h2_lb):
    """MadeYouReset (CVE-2025-8671): instead of resetting its own streams (bounded: 200 per 10 s),
    the client makes the server reset them (here a WINDOW_UPDATE overflowing each stream's window:
    FLOW_CONTROL_ERROR), so each stream's slot is freed at once after it started a backend request.
    Batches of 50 such streams, each batch once the last was reset: before the fix 12 batches (600
    streams, 600 backend requests started) got no GOAWAY. Now those resets count with the client's:
    GOAWAY ENHANCE_YOUR_CALM after 200, close."""
    from h2raw import ENHANCE_YOUR_CALM
    from test_lb_h2 import fresh_request_works
    lb = h2_lb()
    c = H2(lb.tls_port, lb.ca)
    flow_resets = lambda c: sum(1 for f in c.frames  # noqa: E731
                                if f[0] == RST_STREAM and struct.unpack(">I", f[3])[0] == FLOW_CONTROL_ERROR)
    for batch in range(12):
        out = b""
        for i in range(50):
            sid = 1 + 2 * (50 * batch + i)
            out += hdr(c, sid, base("/delay?ms=3000", "GET"), True) + frame(WINDOW_UPDATE, 0, sid,
                                                                            struct.pack(">I", 0x7FFFFFFF))
        c.send(out)
        if not c.wait(lambda c: flow_resets(c) >= 50 * (batch + 1) or c.goaway is not None, 10) or c.goaway:
            break
    goaway = c.wait_goaway(15)
    assert goaway is not None and goaway[1] == ENHANCE_YOUR_CALM, (goaway, flow_resets(c))
    assert 200 <= flow_resets(c) <= 201, flow_resets(c)
    assert c.wait(lambda c: c.closed, 5)
    c.close()
    fresh_request_works(lb)


def test_long_method_path_and_quotes_in_the_access_log(h2_lb, capture, tmp_path):
    """An HTTP/2 request head may be longer than an HTTP/1.1 request line (--max-line-size 8 KiB):
    a 15,000-byte :path and a 1,000-byte :method reach the backend unchanged (its own limits
    decide) and the access log line stays one line. A '"' or '\\' in the target (allowed over h2
    and HTTP/1.1 alike) broke the log's quoting ("GET /q"x\\y HTTP/2.0"): now written as ' as
    the User-Agent and Referer already were."""
    log = tmp_path / "access.log"
    lb = h2_lb("--access-log", str(log), backends=[capture.port])
    c = H2(lb.tls_port, lb.ca)
    path = "/" + "p" * 15000
    method = "M" * 1000
    assert c.wait_stream(c.request(path, method=method))[:2] == (200, b"captured\n")
    q = '/q"x\\y'
    assert c.wait_stream(c.request(q, extra=[("user-agent", 'ua"\\ x'), ("referer", 'r"')]))[:2] == (200, b"captured\n")
    c.close()
    with socket.create_connection((LOCALHOST, lb.port), timeout=5) as s:
        s.sendall(b'GET /h1"q\\ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        while s.recv(4096):
            pass
    assert capture.requests == ["%s %s HTTP/1.1" % (method, path), "GET %s HTTP/1.1" % q, 'GET /h1"q\\ HTTP/1.1']
    assert wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, 5)
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].split('"')[1] == "M" * 159 and lines[0].count('"') == 6, lines[0]  # request: 159 bytes at most
    assert lines[1].split('"')[1:6:2] == ["GET /q'x'y HTTP/2.0", "r'", "ua'' x"], lines[1]
    assert lines[2].split('"')[1] == "GET /h1'q' HTTP/1.1", lines[2]

def test_stalled_upload_is_answered_at_the_response_timeout(h2_lb):
    """A stream whose head came without END_STREAM and then nothing: the client body timeout does
    not apply per stream (SECURITY.md); the response timeout must end it (504), not hold the backend
    connection forever."""
    lb = h2_lb("--response-timeout", "1s")
    c = H2(lb.tls_port, lb.ca)
    t0 = time.monotonic()
    sid = c.request("/echo", method="POST", end=False)
    status, _, reset = c.wait_stream(sid, 10)
    took = time.monotonic() - t0
    assert (status, reset) == (504, 0), (status, reset)  # then RST_STREAM NO_ERROR: the client may stop
    assert 0.8 < took < 3, took
    assert c.wait_stream(c.request("/"))[0] == 200
    c.close()



def test_reset_of_a_paused_upload_gives_the_connection_window_back(h2_lb):
    """A stream whose upload the balancer holds paused (the backend reads nothing: up to a stream
    window of DATA kept in the balancer, not yet given back to the client's connection window),
    reset by the client: those bytes must be given back to the connection window, or each such
    reset shrinks the window of the whole connection (1 MiB) for good and, after a few, every
    upload on it stalls. 6 held-and-reset uploads, then a 2 MiB upload on the same connection: before
    the fix (stream_free gives the kept bytes back) the connection window was 0 and it sent nothing."""
    import h2.config
    import h2.connection
    import h2.events
    from h2raw import tls_socket
    from test_lb_h2 import HeldBackend

    backend = HeldBackend()
    try:
        lb = h2_lb(backends=[backend.port])
        s = tls_socket(lb.tls_port, lb.ca)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        chunk = b"x" * 16384
        state = {"body": b"", "ended": set(), "reset": set()}

        def pump(sid, total, sent, until):
            """Sends sid's body as the windows allow; returns (sent, seconds since the last progress)."""
            last = time.monotonic()
            while time.monotonic() < until:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size) if sent < total else 0
                if window > 0:
                    n = min(window, total - sent)
                    conn.send_data(sid, chunk[:n], end_stream=sent + n == total)
                    sent += n
                    last = time.monotonic()
                s.sendall(conn.data_to_send())
                s.settimeout(0.0 if window > 0 else 0.1)
                try:
                    data = s.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError, BlockingIOError):
                    data = None
                for ev in conn.receive_data(data) if data else []:
                    if isinstance(ev, h2.events.DataReceived):
                        state["body"] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        state["ended"].add(ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        state["reset"].add(ev.stream_id)
                s.sendall(conn.data_to_send())
                if sid in state["ended"] or sid in state["reset"] or time.monotonic() - last > 1.0:
                    break
            return sent, time.monotonic() - last

        def start(path):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":path", path),
                                    (":authority", "localhost")])
            return sid

        for _ in range(6):
            sid = start("/held")
            sent, idle = pump(sid, 64 * 1024 * 1024, 0, time.monotonic() + 30)
            assert idle > 1.0 and sent < 32 * 1024 * 1024, (sent, idle)  # held by the backend
            conn.reset_stream(sid, 8)  # CANCEL
            s.sendall(conn.data_to_send())
        backend.release.set()
        sid = start("/held")
        sent, idle = pump(sid, 2 * 1024 * 1024, 0, time.monotonic() + 30)
        if sid not in state["ended"]:
            pump(sid, 2 * 1024 * 1024, sent, time.monotonic() + 10)
        s.close()
        assert sent == 2 * 1024 * 1024 and sid in state["ended"], (sent, conn.outbound_flow_control_window)
        assert int(state["body"]) >= 2 * 1024 * 1024
    finally:
        backend.release.set()
        backend.close()
