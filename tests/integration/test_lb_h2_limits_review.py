"""Review of the h2ip change (issue 14): --max-conns-per-ip counting HTTP/2 streams, attacked.

Each test names the finding it pins; see test_lb_h2_limits.py for the change's own tests (its
fixtures and helpers are reused here). Clients connect from 127.0.0.3 (MAIN) and 127.0.0.2
(OTHER), never sharing slots with the balancer's start-up polls from 127.0.0.1."""

import signal
import struct

import pytest

from h2raw import END_STREAM, H2, HEADERS, NO_ERROR, REFUSED_STREAM, RST_STREAM, frame
from test_lb_h2 import h2_lb  # noqa: F401 (a fixture)
from test_lb_h2_limits import MAIN, OTHER, TOO_MANY, backend, ended, hold_streams, release, settle, status_of  # noqa: F401
from test_lb_tls import certs  # noqa: F401 (a fixture)
from helpers import LOCALHOST, admin_token, free_port, http_request, metric, parse_metrics, wait_for
from test_lb_h2_limits import H1, TOO_MANY_CONNS, wait_exact_room

SHUT_WINDOW = struct.pack(">HI", 4, 0)  # SETTINGS_INITIAL_WINDOW_SIZE 0: no response DATA ever


def refused_streams(c):
    return [f[2] for f in c.frames if f[0] == RST_STREAM and struct.unpack(">I", f[3])[0] == REFUSED_STREAM]


def test_refused_503_streams_do_not_take_the_workers_budget(h2_lb, backend):
    """F1. --max-connections 30 (the worker's budget of connections + streams, each of which may
    hold a backend descriptor), --max-conns-per-ip 2. MAIN holds its 2 slots (2 streams at the
    backend), then opens 40 more streams with its window shut (SETTINGS_INITIAL_WINDOW_SIZE 0):
    each is answered 503 here, but the answer's body can never be sent, so the stream stays open
    (until --client-send-timeout, 60 s). A 503'd stream holds no backend connection and no
    descriptor, yet each kept a unit of the budget: 1 connection + 2 + 27 stuck answers filled the
    30, and every stream of another address (OTHER, a connection opened before) was refused
    (REFUSED_STREAM), and the worker stopped accepting. One address within its limit of 2 took the
    whole worker. Now an answer made here gives its budget unit back: OTHER is served."""
    lb = h2_lb("--max-connections", "30", "--max-conns-per-ip", "2", backends=[backend.port])
    victim = H2(lb.tls_port, lb.ca, source=OTHER)
    c = H2(lb.tls_port, lb.ca, source=MAIN, settings=SHUT_WINDOW)
    tag, held = hold_streams(c, backend, 2)
    assert settle(c, backend, tag, held, 2) == (2, [])
    ids = [c.request("/fast?stuck=%d" % i) for i in range(40)]
    # Each answered 503 (HEADERS only: the body waits for a window that never opens), none refused.
    c.wait(lambda c: all(c.streams.get(s, {}).get("headers") for s in ids) or refused_streams(c), 10)
    assert [dict(c.streams[s]["headers"]).get(":status") if s in c.streams else None for s in ids] == ["503"] * 40
    assert refused_streams(c) == [] and not any(c.streams[s]["ended"] for s in ids)
    # Another address: a stream on its open connection, and a new connection, are served.
    sid = victim.request("/fast?victim=1")
    assert victim.wait_stream(sid, 10) == (200, b"ok\n", None)
    fresh = H2(lb.tls_port, lb.ca, source=OTHER, timeout=5)
    assert fresh.wait_stream(fresh.request("/fast?victim=2"), 10) == (200, b"ok\n", None)
    fresh.close()
    victim.close()
    c.close()


def test_streams_beyond_the_goaway_of_h2_max_requests_reach_no_server(h2_lb, backend):
    """A check (no finding). --h2-max-requests 2, four POSTs sent in one write (streams 1, 3, 5, 7). The second
    stream's HEADERS makes the GOAWAY NO_ERROR naming stream 3 (docs/CONFIG.md: "streams it had
    opened beyond are refused and safe to retry"). Streams 5 and 7 must then reach no server: a
    client retries them on a new connection, and a POST that did reach one would be done twice.
    Their slots are not held either: the address gets its 3 again."""
    lb = h2_lb("--h2-max-requests", "2", "--max-conns-per-ip", "3", backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    blk = lambda i: c.block([(":method", "POST"), (":scheme", "https"), (":path", "/fast?t=gw&i=%d" % i),  # noqa: E731
                             (":authority", "localhost"), ("content-length", "0")])
    c.send(b"".join(frame(HEADERS, END_STREAM | 0x4, 1 + 2 * i, blk(i)) for i in range(4)))
    c.next_id = 9
    assert c.wait_goaway(10) == (3, 0)
    assert [c.wait_stream(s, 5)[0] for s in (1, 3)] == [200, 200]
    assert (backend.count("gw"), [status_of(c, s) for s in (5, 7)]) == (2, [None, None])
    c.close()


def test_refused_stream_framing_and_metrics(h2_lb, backend):
    """A check. --max-conns-per-ip 2: a refused stream's 503 is framed as the balancer's other
    answers (content-type, content-length 39, retry-after, the body, END_STREAM on its last frame),
    counted in agora_lb_answers_total{code="503"} as the HTTP/1.1 connection refused at accept is,
    and the connection goes on (a stream after them is served)."""
    admin_port = free_port()
    lb = h2_lb("--max-conns-per-ip", "2", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
               backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, held = hold_streams(c, backend, 2)
    assert settle(c, backend, tag, held, 2) == (2, [])
    ids = [c.request("/fast?r=%d" % i, method="HEAD" if i == 4 else "GET") for i in range(5)]
    for sid in ids:
        c.wait_stream(sid, 10)
    h1 = H1(lb.port, MAIN)
    assert h1.read_until_closed() == TOO_MANY_CONNS
    h1.close()
    for sid in ids:
        st = c.streams[sid]
        hdrs = dict(st["headers"])
        head = sid == ids[-1]
        assert (hdrs[":status"], hdrs["content-type"], hdrs["content-length"], hdrs["retry-after"]) == \
            ("503", "text/plain; charset=utf-8", "39", "1")
        assert (st["data"], st["ended"], st["reset"]) == (b"" if head else TOO_MANY, True, None)
        last = [f for f in c.frames if f[2] == sid][-1]
        assert last[1] & END_STREAM
    status, _, text = http_request(LOCALHOST, admin_port, "GET", "/metrics",
                                   headers={"Authorization": "Bearer " + admin_token(admin_port)})
    assert status == 200
    assert metric(parse_metrics(text.decode()), "agora_lb_answers_total", code="503") == 6
    assert release(c, backend, held) == [200, 200]
    assert c.wait_stream(c.request("/fast?after=1"), 10) == (200, b"ok\n", None)
    assert c.goaway is None
    c.close()


def test_streams_racing_on_two_workers_get_exactly_n(h2_lb, backend):
    """A check (the table is shared by the workers, one lock per stripe). --workers 2,
    --max-conns-per-ip 10: six connections from one address (spread over both workers), each
    sending 10 held streams in one write, all at once: exactly 10 reach the backend, the other 50
    are 503, in every one of three rounds (the slots all come back between rounds)."""
    n = 10
    lb = h2_lb("--max-conns-per-ip", str(n), backends=[backend.port], workers=2)
    conns = [H2(lb.tls_port, lb.ca, source=MAIN) for _ in range(6)]
    for rnd in range(3):
        tag = "race%d" % rnd
        blk = lambda c, j, i: c.block([(":method", "GET"), (":scheme", "https"),  # noqa: E731
                                       (":path", "/hold?t=%s&c=%d&i=%d" % (tag, j, i)), (":authority", "localhost")])
        ids = []
        writes = []
        for j, c in enumerate(conns):
            first = c.next_id
            ids.append([first + 2 * i for i in range(n)])
            writes.append(b"".join(frame(HEADERS, END_STREAM | 0x4, first + 2 * i, blk(c, j, i)) for i in range(n)))
            c.next_id = first + 2 * n
        for c, w in zip(conns, writes):
            c.send(w)
        def answered():
            return sum(1 for c, cids in zip(conns, ids) for s in cids if ended(c, s))

        for _ in range(100):  # at most ~10 s
            if backend.count(tag) + answered() >= 6 * n:
                break
            for c in conns:
                c.wait(lambda c: False, 0.02)
        for c in conns:
            c.wait(lambda c: False, 0.05)
        refused = sum(1 for c, cids in zip(conns, ids) for s in cids if status_of(c, s) == 503)
        assert (backend.count(tag), refused) == (n, 5 * n)
        backend.gate.set()
        for c, cids in zip(conns, ids):
            for s in cids:
                c.wait_stream(s, 10)
        backend.gate.clear()
        assert sorted(status_of(c, s) for c, cids in zip(conns, ids) for s in cids) == [200] * n + [503] * 5 * n
    for c in conns:
        c.close()


def test_one_slot_per_address(h2_lb, backend):
    """A check, --max-conns-per-ip 1: an HTTP/2 connection's first stream rides on its own slot
    (never refused), a second at once is 503, one after another they are all served; an HTTP/1.1
    connection meanwhile is refused at accept; once the HTTP/2 connection is gone the HTTP/1.1
    connection gets in and then an HTTP/2 connection is refused at accept."""
    lb = h2_lb("--max-conns-per-ip", "1", backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, ids = hold_streams(c, backend, 2)
    assert settle(c, backend, tag, ids, 2) == (1, [ids[1]])
    assert status_of(c, ids[1]) == 503
    h1 = H1(lb.port, MAIN)
    assert h1.read_until_closed() == TOO_MANY_CONNS
    h1.close()
    assert release(c, backend, ids[:1]) == [200]
    assert [c.wait_stream(c.request("/fast?seq=%d" % i), 10)[0] for i in range(5)] == [200] * 5
    c.close()

    def h1_gets_in():
        conn = H1(lb.port, MAIN)
        try:
            conn.get("/fast")
            return conn.read_response()[0] == 200
        except OSError:
            return False
        finally:
            conn.close()

    assert wait_for(h1_gets_in, 10)
    h1 = H1(lb.port, MAIN)
    h1.get("/fast")
    assert h1.read_response()[0] == 200
    with pytest.raises((OSError, AssertionError)):
        H2(lb.tls_port, lb.ca, source=MAIN, timeout=5).wait_stream(1, 1)
    h1.close()


def test_sighup_reload_with_streams_open(h2_lb, backend):
    """A check. --max-conns-per-ip 4, a connection holding 4 streams: SIGHUP reloads (the table is
    kept); the streams are still counted (a fifth is 503), then answered, and the address gets
    exactly 4 again."""
    lb = h2_lb("--max-conns-per-ip", "4", backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, ids = hold_streams(c, backend, 4)
    assert settle(c, backend, tag, ids, 4) == (4, [])
    lb.popen.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "agora lb: reloaded:" in lb.output(), 5), lb.output()
    extra = c.request("/fast?extra=1")
    assert c.wait_stream(extra, 10)[0] == 503
    assert release(c, backend, ids) == [200] * 4
    c.close()
    wait_exact_room(lb, backend, MAIN, 4)


def test_refused_uploads_sending_their_bodies_are_not_a_flood(h2_lb, backend):
    """A check (the honest uploader). --max-conns-per-ip 1, one held stream; then 250 POSTs (over
    the 200 resets per 10 s that end a connection), each with its whole 20 KB body sent after its
    HEADERS without waiting: each is answered 503 (then RST_STREAM NO_ERROR, the body not wanted),
    the DATA that arrives after is dropped without a reset of the client's making, and the
    connection goes on: no GOAWAY, and a stream after them is served."""
    lb = h2_lb("--max-conns-per-ip", "1", backends=[backend.port])
    c = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, held = hold_streams(c, backend, 1)
    assert settle(c, backend, tag, held, 1) == (1, [])
    for batch in range(5):
        ids = [c.request("/fast?up=%d" % i, method="POST", body=b"u" * 20000,
                         extra=[("content-length", "20000")]) for i in range(50)]
        for sid in ids:
            c.wait_stream(sid, 10)
        assert [status_of(c, s) for s in ids] == [503] * 50
        assert {c.streams[s]["reset"] for s in ids} <= {None, NO_ERROR}
    c.wait(lambda c: False, 0.3)
    assert (c.goaway, c.closed) == (None, False)
    assert release(c, backend, held) == [200]
    assert c.wait_stream(c.request("/fast?after=1"), 10) == (200, b"ok\n", None)
    c.close()


def h2c(port, source):
    """An HTTP/2 connection with prior knowledge on the plain port (h2raw.H2 without TLS)."""
    from hpack import Decoder, Encoder
    from h2raw import PREFACE, SETTINGS
    from helpers import connect_from
    c = H2.__new__(H2)
    c.sock = connect_from(source, port, timeout=10)
    c.enc, c.dec = Encoder(), Decoder()
    c.buf, c.frames, c.streams, c.goaway, c.closed, c.next_id = b"", [], {}, None, False, 1
    c.send(PREFACE + frame(SETTINGS, 0, 0))
    return c


def test_h2c_streams_share_the_limit_with_tls(h2_lb, backend):
    """A check, --h2c on --max-conns-per-ip 4: an h2c connection (prior knowledge, plain port) and
    a TLS h2 connection from one address: 2 held streams on each reach the backend (2 + 2), a fifth
    stream on either is 503; closed, the address gets exactly 4 again."""
    lb = h2_lb("--h2c", "on", "--max-conns-per-ip", "4", backends=[backend.port])
    plain = h2c(lb.port, MAIN)
    tls = H2(lb.tls_port, lb.ca, source=MAIN)
    tag, pids = hold_streams(plain, backend, 2)
    assert settle(plain, backend, tag, pids, 2) == (2, [])
    tag2, tids = hold_streams(tls, backend, 2)
    assert settle(tls, backend, tag2, tids, 2) == (2, [])
    assert plain.wait_stream(plain.request("/fast?x=1"), 10)[0] == 503
    assert tls.wait_stream(tls.request("/fast?x=2"), 10)[0] == 503
    assert release(plain, backend, pids) == [200, 200]
    assert release(tls, backend, tids) == [200, 200]
    plain.close()
    tls.close()
    wait_exact_room(lb, backend, MAIN, 4)
