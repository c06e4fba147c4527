"""Review of spreading (src/http/server.h, "Spreading"), attacked: each test names the finding it
pins; test_lb_spread.py holds the change's own tests (its helpers are reused here)."""

import socket
import ssl
import time

from h2raw import H2
from test_lb_h2 import h2_lb  # noqa: F401 (a fixture)
from test_lb_spread import per_worker, scrape
from test_lb_tls import certs  # noqa: F401 (a fixture)

from helpers import LOCALHOST, free_port


def tls_get(port, ca, i, source):
    """A TLS connection and one request on it -> ("answered", sock), ("waiting", sock) when the
    handshake gets no answer within 1.5 s (the connection waits in a full worker's backlog), or
    ("dropped", error) when the balancer closed it unanswered."""
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection((LOCALHOST, port), timeout=1.5, source_address=(source, 0))
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
    except socket.timeout:
        return "waiting", raw
    except (ssl.SSLError, ConnectionResetError, OSError) as e:
        raw.close()
        return "dropped", repr(e)
    s.settimeout(10)
    try:
        s.sendall(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        data = s.recv(4096)
    except (ssl.SSLError, ConnectionResetError, OSError) as e:
        return "dropped", repr(e)
    if not data.startswith(b"HTTP/1.1 200 "):
        return "dropped", data[:100]
    return "answered", s


def test_no_connection_is_handed_to_a_worker_its_h2_streams_filled(h2_lb, testbackend_factory):
    """F1. --max-connections 4 per worker counts a worker's HTTP/2 streams with its connections
    (each may hold a backend descriptor), but the load spreading compares counted only
    connections. One h2 connection with 3 streams at the backend fills its worker (1 + 3 = 4):
    accepting pauses there, its new clients wait in the backlog. The other worker, holding 3
    connections, took its 4th (3 < 4), saw the full worker's load of 1 as 2 below its own, and
    handed the connection over; the full worker then closed it unread (spread_take: "full since
    it was chosen"). A client the accepting worker had room for was dropped. Now a full worker
    is not chosen: every connection is answered or waits, none is dropped."""
    backend = testbackend_factory("A")
    admin_port = free_port()
    lb = h2_lb("--max-connections", "4", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
               backends=[backend], workers=2)
    c = H2(lb.tls_port, lb.ca, source="127.0.0.2")
    for i in range(3):
        c.request("/delay?ms=20000&held=%d" % i)
    time.sleep(1.0)  # the 3 streams are at the backend
    before = per_worker(scrape(admin_port), "https")
    assert sorted(before.values()) == [0, 1], before
    outcomes, socks = [], []
    try:
        for i in range(14):
            what, got = tls_get(lb.tls_port, lb.ca, i, "127.0.0.%d" % (3 + i % 4))
            outcomes.append(what if what != "dropped" else (what, got))
            if what != "dropped":
                socks.append(got)
            if outcomes.count("answered") >= 5:
                break
        after = per_worker(scrape(admin_port), "https")
        assert [o for o in outcomes if o not in ("answered", "waiting")] == [], (before, after, outcomes)
        assert outcomes.count("answered") >= 4, outcomes  # the 4th on the worker with room was reached
    finally:
        for s in socks:
            s.close()
        c.close()
