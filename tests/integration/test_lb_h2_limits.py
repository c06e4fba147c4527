"""agora lb: --max-conns-per-ip and --rate-limit count HTTP/2 streams (issue 14; src/http/h2.h).

Each HTTP/2 stream handed to the proxy may hold a backend connection until it ends, so it counts
against the address's --max-conns-per-ip as an HTTP/1.1 connection does: an HTTP/2 connection
holds max(1, its streams open) of the address's slots (its own, taken at accept, serves its first
stream). A stream past the limit is answered 503 "too many connections from your address" with
Retry-After: 1, as an HTTP/1.1 connection past the limit is, and never reaches a backend. Each
stream takes one --rate-limit token (429 + Retry-After past it). A slot comes back when its
stream ends, whichever way it ends.

The clients connect from 127.0.0.3 (MAIN) and 127.0.0.2 (OTHER): the balancer's start-up polls of
/stats come from 127.0.0.1 and never share their slots. The backend (HoldBackend) records every
request and holds /hold requests until its gate opens, so the tests see exactly how many streams
reached it; every count below is exact.
"""

import itertools
import socket
import struct
import threading
import time

import pytest

from h2raw import (CANCEL, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, GOAWAY, H2, HEADERS, NO_ERROR,
                   PROTOCOL_ERROR, RST_STREAM, frame)
from agora_test.backends import ThreadedBackend
from agora_test.http import _ResponseReader
from helpers import connect_from, wait_for
from test_lb_h2 import h2_lb  # noqa: F401 (a fixture)
from test_lb_tls import certs  # noqa: F401 (a fixture)

MAIN, OTHER = "127.0.0.3", "127.0.0.2"
TOO_MANY = b"too many connections from your address\n"
TOO_MANY_CONNS = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 39\r\n"
                  b"Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections from your address\n")
TAGS = itertools.count(1)


class HoldBackend(ThreadedBackend):
    """An HTTP/1.1 origin that records the target of every request but /health (.count(tag)),
    holds /hold... requests until .gate is set, closes the connection on /drop... without an
    answer, and answers anything else at once; each answer closes its connection."""

    def __init__(self):
        self.gate = threading.Event()
        self._lock = threading.Lock()
        self.targets = []
        super().__init__()

    def count(self, tag):
        with self._lock:
            return sum(1 for t in self.targets if ("t=%s&" % tag) in t or t.endswith("t=%s" % tag))

    def _serve(self, conn):
        try:
            line = self.read_head(conn)
            if line is None:
                return
            target = line.split(" ")[1]
            if target != "/health":
                with self._lock:
                    self.targets.append(target)
            if target.startswith("/drop"):
                return
            if target.startswith("/hold"):
                self.gate.wait(30)
            body = b"held\n" if target.startswith("/hold") else b"ok\n"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def backend():
    b = HoldBackend()
    yield b
    b.gate.set()
    b.stop()


class H1(_ResponseReader):
    """An HTTP/1.1 keep-alive connection to the plain port from source (RawConnection's reader)."""

    def __init__(self, port, source, timeout=10.0):
        super().__init__()
        self.timeout = timeout
        self.sock = connect_from(source, port, timeout=timeout)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from peer in time")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            self.closed_by_peer = True
            return False
        self.buf += data
        return True

    def get(self, path):
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())

    def close(self):
        self.sock.close()


def status_of(c, sid):
    st = c.streams.get(sid)
    s = dict(st["headers"]).get(":status") if st else None
    return int(s) if s else None


def ended(c, sid):
    st = c.streams.get(sid)
    return bool(st and (st["ended"] or st["reset"] is not None))


def hold_streams(c, backend, n, tag=None, method="GET", end=True):
    """Opens n /hold streams on c -> (tag, stream ids)."""
    tag = tag or next(TAGS)
    return tag, [c.request("/hold?t=%s&i=%d" % (tag, i), method=method, end=end) for i in range(n)]


def settle(c, backend, tag, ids, expected_total):
    """Waits until the streams answered at once (refused) and those the backend holds add up to
    expected_total, then a moment more (nothing else may arrive) -> (held by the backend,
    refused stream ids)."""
    c.wait(lambda c: sum(ended(c, s) for s in ids) + backend.count(tag) >= expected_total, 10)
    c.wait(lambda c: False, 0.3)
    return backend.count(tag), [s for s in ids if ended(c, s)]


def release(c, backend, ids):
    """Opens the gate until every stream in ids has ended -> their statuses; closes it again."""
    backend.gate.set()
    try:
        for sid in ids:
            c.wait_stream(sid, 10)
        return [status_of(c, sid) for sid in ids]
    finally:
        backend.gate.clear()


def check_refused(c, sid, body_open=False):
    """Stream sid was answered 503 for want of a slot. body_open: the client had not ended its
    request, so RST_STREAM NO_ERROR may follow the answer (RFC 9113 §8.1)."""
    st = c.streams[sid]
    hdrs = dict(st["headers"])
    assert (hdrs[":status"], hdrs.get("retry-after"), st["data"], st["ended"]) == ("503", "1", TOO_MANY, True), st
    assert st["reset"] in ((None, NO_ERROR) if body_open else (None,)), st


def exact_room(lb, backend, source, n):
    """One new HTTP/2 connection from source opens n + 1 held streams: True when exactly n reach
    the backend and the last is refused (the address held nothing before). False too when the
    connection itself is refused (closed at accept: the address is full)."""
    try:
        c = H2(lb.tls_port, lb.ca, source=source)
    except (OSError, AssertionError):
        return False
    try:
        tag, ids = hold_streams(c, backend, n + 1)
        held, refused = settle(c, backend, tag, ids, n + 1)
        statuses = release(c, backend, ids)
        return held == n and refused == [ids[-1]] and statuses == [200] * n + [503]
    finally:
        c.close()


def wait_exact_room(lb, backend, source, n):
    """The address gets exactly n streams through again: what ended was all given back. The
    balancer sees a client's close a moment after the client made it, hence the bounded retry; a
    slot lost for good fails here."""
    assert wait_for(lambda: exact_room(lb, backend, source, n), timeout=20, interval=0.2), \
        "address %s does not get exactly %d streams through" % (source, n)


# ---------------------------------------------------------------- counting


def test_one_connection_gets_exactly_n_streams(h2_lb, backend):
    """--max-conns-per-ip 5, one connection with 8 concurrent held streams: the first 5 reach
    the backend (the first on the connection's own slot), the last 3 are answered 503 at once;
    answered, they give their slots back and the same connection gets exactly 5 again."""
    lb = h2_lb("--max-conns-per-ip", "5", backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, ids = hold_streams(c, backend, 8)
    held, refused = settle(c, backend, tag, ids, 8)
    assert (held, refused) == (5, ids[5:])
    for sid in ids[5:]:
        check_refused(c, sid)
    assert release(c, backend, ids[:5]) == [200] * 5
    assert [c.streams[s]["data"] for s in ids[:5]] == [b"held\n"] * 5
    # The slots came back: the same connection, 5 + 1 again.
    tag, ids = hold_streams(c, backend, 6)
    assert settle(c, backend, tag, ids, 6) == (5, [ids[5]])
    assert release(c, backend, ids[:5]) == [200] * 5
    assert c.goaway is None
    c.close()
    wait_exact_room(lb, backend, MAIN, 5)


def test_http11_connections_and_h2_streams_share_the_limit(h2_lb, backend):
    """--max-conns-per-ip 5: two idle HTTP/1.1 keep-alive connections leave an HTTP/2 connection 3
    streams (its own slot and two); meanwhile a third HTTP/1.1 connection is refused; another
    address is not touched. Once the streams end the address holds 3 (2 + the idle HTTP/2
    connection): two more HTTP/1.1 connections get in, a third is refused, and the idle HTTP/2
    connection still gets one stream (on its own slot), not two."""
    lb = h2_lb("--max-conns-per-ip", "5", backends=[backend.port])
    h1 = [H1(lb.port, MAIN) for _ in range(2)]
    for conn in h1:
        conn.get("/fast")
        assert conn.read_response()[0] == 200
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, ids = hold_streams(c, backend, 5)
    assert settle(c, backend, tag, ids, 5) == (3, ids[3:])
    for sid in ids[3:]:
        check_refused(c, sid)
    extra = H1(lb.port, MAIN)
    assert extra.read_until_closed() == TOO_MANY_CONNS
    extra.close()
    # Another address: its own 5 (one HTTP/2 connection, 5 streams), and its HTTP/1.1 works.
    o = H2(lb.tls_port, lb.ca, source=OTHER)
    otag, oids = hold_streams(o, backend, 5)
    assert settle(o, backend, otag, oids, 5) == (5, [])
    assert release(o, backend, oids) == [200] * 5
    o.close()
    assert release(c, backend, ids[:3]) == [200] * 3
    # MAIN holds 2 + 1 (the idle HTTP/2 connection) = 3: two more HTTP/1.1 connections get in,
    # each holding a request at the backend.
    tag2 = next(TAGS)
    more = [H1(lb.port, MAIN) for _ in range(2)]
    for i, conn in enumerate(more):
        conn.get("/hold?t=%s&i=%d" % (tag2, i))
    assert wait_for(lambda: backend.count(tag2) == 2, 10)
    extra = H1(lb.port, MAIN)
    assert extra.read_until_closed() == TOO_MANY_CONNS
    extra.close()
    # The HTTP/2 connection's first stream rides on its own slot; a second finds none.
    tag, ids = hold_streams(c, backend, 2)
    assert settle(c, backend, tag, ids, 2) == (1, [ids[1]])
    check_refused(c, ids[1])
    backend.gate.set()
    try:
        assert [conn.read_response()[:3:2] for conn in more] == [(200, b"held\n")] * 2
        assert c.wait_stream(ids[0])[0] == 200
    finally:
        backend.gate.clear()
    for conn in h1 + more:
        conn.close()
    c.close()
    wait_exact_room(lb, backend, MAIN, 5)
    wait_exact_room(lb, backend, OTHER, 5)


def test_many_connections_with_many_streams(h2_lb, backend):
    """An attacker's shape: --max-conns-per-ip 10, three HTTP/2 connections from one address, 8
    held streams on each. The first gets 8 (3 connections + 7 more slots = 10); the others get one
    each on their own slot and 7 refused: exactly 10 requests reach the backend. A fourth
    connection is refused at accept (closed without a TLS answer)."""
    lb = h2_lb("--max-conns-per-ip", "10", backends=[backend.port])
    conns = [H2(lb.tls_port, lb.ca, source=MAIN) for _ in range(3)]
    got = []
    all_ids = []
    for c in conns:
        tag, ids = hold_streams(c, backend, 8)
        held, refused = settle(c, backend, tag, ids, 8)
        got.append(held)
        all_ids.append(ids)
        for sid in refused:
            check_refused(c, sid)
        assert refused == ids[held:]
    assert got == [8, 1, 1]
    with pytest.raises((OSError, AssertionError)):
        H2(lb.tls_port, lb.ca, source=MAIN, timeout=5).close()
    backend.gate.set()
    try:
        for c, ids, held in zip(conns, all_ids, got):
            assert [c.wait_stream(s)[0] for s in ids[:held]] == [200] * held
    finally:
        backend.gate.clear()
    for c in conns:
        c.close()
    wait_exact_room(lb, backend, MAIN, 10)


# ---------------------------------------------------------------- every way a stream ends


def rst_all(c, ids, code=CANCEL):
    c.send(b"".join(frame(RST_STREAM, 0, sid, struct.pack(">I", code)) for sid in ids))


def abrupt_close(c):
    """Closes with a TCP reset (SO_LINGER 0), no TLS close_notify."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()


def full_hold(lb, backend, n, **kw):
    """A new connection from MAIN with n streams held at the backend -> (connection, tag, ids)."""
    c = H2(lb.tls_port, lb.ca, source=MAIN, **kw)
    tag, ids = hold_streams(c, backend, n)
    assert settle(c, backend, tag, ids, n) == (n, [])
    return c, tag, ids


def test_slots_come_back_whichever_way_the_streams_end(h2_lb, backend):
    """--max-conns-per-ip 4; many streams end in every way there is, each time with the address
    full: answered, reset by the client (in a loop), the client's GOAWAY and close, a TCP reset,
    the server's GOAWAY PROTOCOL_ERROR (session teardown), a rapid-reset flood (GOAWAY
    ENHANCE_YOUR_CALM), a stalled body (408), a body over --max-body-size (413), a backend that
    drops the request (502), a window the client keeps shut (the connection closed at
    --client-send-timeout). After each the address gets exactly 4 again (a 429 gives its slot
    back at once: test_rate_limit_counts_streams and the unit tests)."""
    n = 4
    lb = h2_lb("--max-conns-per-ip", str(n), "--client-body-timeout", "500ms", "--max-body-size", "1k",
               "--client-send-timeout", "1s", "--retries", "0", backends=[backend.port])
    # Answered, three rounds.
    for _ in range(3):
        wait_exact_room(lb, backend, MAIN, n)
    # Reset by the client, 10 rounds on one connection (40 resets: under the flood bound).
    c, tag, ids = full_hold(lb, backend, n)
    for _ in range(10):
        rst_all(c, ids)
        tag, ids = hold_streams(c, backend, n)
        assert settle(c, backend, tag, ids, n) == (n, []), "the reset streams' slots came back"
    rst_all(c, ids)
    c.wait(lambda c: False, 0.3)
    assert c.goaway is None
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    # The client's GOAWAY, then its close, with the streams open.
    c, tag, ids = full_hold(lb, backend, n)
    c.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    # A TCP reset.
    c, tag, ids = full_hold(lb, backend, n)
    abrupt_close(c)
    wait_exact_room(lb, backend, MAIN, n)
    # The server tears the session down (DATA on stream 0: GOAWAY PROTOCOL_ERROR) with them open.
    c, tag, ids = full_hold(lb, backend, n)
    c.send(frame(DATA, 0, 0, b"x"))
    assert c.wait_goaway()[1] == PROTOCOL_ERROR
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    # A rapid-reset flood with the address full: the flood's streams are refused (503), their
    # resets still count as a flood (GOAWAY ENHANCE_YOUR_CALM), and the session ends.
    c, tag, ids = full_hold(lb, backend, n)
    blk = c.block([(":method", "GET"), (":scheme", "https"), (":path", "/hold?t=flood"), (":authority", "localhost")])
    flood = b""
    for i in range(300):
        sid = c.next_id + 2 * i
        flood += frame(HEADERS, END_HEADERS | END_STREAM, sid, blk) + frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
    c.send(flood)
    assert c.wait_goaway(15)[1] == ENHANCE_YOUR_CALM
    assert backend.count("flood") == 0
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    # Stalled bodies: 408 on each stream after 500 ms without DATA.
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, ids = hold_streams(c, backend, n, method="POST", end=False)
    assert [c.wait_stream(s, 10)[0] for s in ids] == [408] * n
    assert backend.count(tag) == n
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    # Bodies over --max-body-size (no content-length, 2 KiB of DATA): 413 on each stream.
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, ids = hold_streams(c, backend, n, method="POST", end=False)
    c.send(b"".join(frame(DATA, END_STREAM, s, b"x" * 2048) for s in ids))
    assert [c.wait_stream(s, 10)[0] for s in ids] == [413] * n
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    # A backend that drops the requests: 502 (no retries here).
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag = next(TAGS)
    ids = [c.request("/drop?t=%s&i=%d" % (tag, i)) for i in range(n)]
    assert [c.wait_stream(s, 10)[0] for s in ids] == [502] * n
    assert backend.count(tag) == n
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    # A window the client keeps shut (SETTINGS_INITIAL_WINDOW_SIZE 0): the answers cannot be
    # sent, and the connection is closed at --client-send-timeout with the streams open.
    c = H2(lb.tls_port, lb.ca, source=MAIN, settings=struct.pack(">HI", 4, 0))
    tag = next(TAGS)
    ids = [c.request("/fast?t=%s&i=%d" % (tag, i)) for i in range(n)]
    assert c.wait(lambda c: c.closed, 10)
    assert backend.count(tag) == n and not any(c.streams.get(s, {}).get("data") for s in ids)
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    wait_exact_room(lb, backend, OTHER, n)


# ---------------------------------------------------------------- the hostile client


def test_refused_streams_do_not_count_as_resets(h2_lb, backend):
    """--max-conns-per-ip 2, one connection holding 2 streams; 300 more (past the 200 resets per
    10 s that end a connection), half of them with a body still open, are each answered 503: a
    refusal is an answer, not a reset, so the honest connection goes on and is served."""
    lb = h2_lb("--max-conns-per-ip", "2", backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, held = hold_streams(c, backend, 2)
    assert settle(c, backend, tag, held, 2) == (2, [])
    for batch in range(6):
        ids = [c.request("/hold?t=%s&b=%d" % (tag, i), method="POST" if i % 2 else "GET", end=not i % 2)
               for i in range(50)]
        for sid in ids:
            c.wait_stream(sid, 10)
        for i, sid in enumerate(ids):
            check_refused(c, sid, body_open=i % 2)
    assert backend.count(tag) == 2 and c.goaway is None and not c.closed
    assert release(c, backend, held) == [200, 200]
    status, body, reset = c.wait_stream(c.request("/fast"))
    assert (status, body, reset, c.goaway) == (200, b"ok\n", None, None)
    c.close()


def test_rapid_reset_loop_neither_leaks_nor_bypasses(h2_lb, backend):
    """--max-conns-per-ip 3: a client that opens a stream and resets it, 150 times on one
    connection (under the flood bound), leaves nothing counted: the address gets exactly 3 again.
    With the address full (2 streams held on one connection, 1 on a second), the same loop on the
    second connection reaches the backend not once: a reset frees no slot it did not hold."""
    n = 3
    lb = h2_lb("--max-conns-per-ip", str(n), backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag = next(TAGS)
    for i in range(150):
        sid = c.request("/hold?t=%s&i=%d" % (tag, i))
        rst_all(c, [sid])
    c.wait(lambda c: False, 0.5)
    assert c.goaway is None
    c.close()
    wait_exact_room(lb, backend, MAIN, n)
    # The holder: its own slot and one more; the looper: its own slot, serving its first stream.
    holder = H2(lb.tls_port, lb.ca, source=MAIN)
    htag, hids = hold_streams(holder, backend, n - 1)
    assert settle(holder, backend, htag, hids, n - 1) == (n - 1, [])
    looper = H2(lb.tls_port, lb.ca, source=MAIN)  # the third slot: its own
    ltag = next(TAGS)
    _, lh = hold_streams(looper, backend, 1, tag=ltag)
    assert settle(looper, backend, ltag, lh, 1) == (1, [])
    for i in range(150):
        sid = looper.request("/hold?t=%s&i=x%d" % (ltag, i))
        rst_all(looper, [sid])
    looper.wait(lambda c: False, 0.5)
    assert backend.count(ltag) == 1 and looper.goaway is None
    backend.gate.set()
    try:
        assert [holder.wait_stream(s)[0] for s in hids] + [looper.wait_stream(lh[0])[0]] == [200] * n
    finally:
        backend.gate.clear()
    holder.close()
    looper.close()
    wait_exact_room(lb, backend, MAIN, n)


# ---------------------------------------------------------------- rate limit


def test_rate_limit_counts_streams(h2_lb, backend):
    """--rate-limit 1 --rate-burst 5 (no connection limit): six streams sent at once on one
    connection: five reach the backend, the sixth is answered 429 with Retry-After: 1 (the
    bucket's figure, as on HTTP/1.1). From another address, three HTTP/1.1 requests and three
    streams share one bucket: five answered, the last 429."""
    lb = h2_lb("--rate-limit", "1", "--rate-burst", "5", "--max-conns-per-ip", "0", backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag = next(TAGS)
    blocks = b"".join(
        frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i,
              c.block([(":method", "GET"), (":scheme", "https"), (":path", "/fast?t=%s&i=%d" % (tag, i)),
                       (":authority", "localhost")])) for i in range(6))
    c.send(blocks)
    c.next_id = 13
    got = [c.wait_stream(1 + 2 * i) for i in range(6)]
    assert [g[0] for g in got] == [200] * 5 + [429]
    last = dict(c.streams[11]["headers"])
    assert (last["retry-after"], got[5][1]) == ("1", b"too many requests from your address: slow down\n")
    assert backend.count(tag) == 5
    c.close()
    o = H1(lb.port, OTHER)
    otag = next(TAGS)
    for i in range(3):
        o.get("/fast?t=%s&i=%d" % (otag, i))
        assert o.read_response()[0] == 200
    o.close()
    c = H2(lb.tls_port, lb.ca, source=OTHER)
    ids = [c.request("/fast?t=%s&j=%d" % (otag, i)) for i in range(3)]
    assert [c.wait_stream(s)[0] for s in ids] == [200, 200, 429]
    assert backend.count(otag) == 5
    c.close()


def test_streams_refused_for_a_slot_take_no_token(h2_lb, backend):
    """--max-conns-per-ip 1 --rate-limit 1 --rate-burst 20: one held stream (a token), then 40
    streams refused 503 for want of a slot: had they taken tokens the bucket would be empty;
    after the release 10 streams one after another are all answered 200."""
    lb = h2_lb("--max-conns-per-ip", "1", "--rate-limit", "1", "--rate-burst", "20", backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, held = hold_streams(c, backend, 1)
    assert settle(c, backend, tag, held, 1) == (1, [])
    ids = [c.request("/fast?r=%d" % i) for i in range(40)]
    for sid in ids:
        c.wait_stream(sid, 10)
        check_refused(c, sid)
    assert release(c, backend, held) == [200]
    statuses = [c.wait_stream(c.request("/fast?after=%d" % i))[0] for i in range(10)]
    assert statuses == [200] * 10
    c.close()
