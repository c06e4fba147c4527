"""Review of spreading (src/http/server.h, "Spreading"), attacked: each test names the finding it
pins; test_lb_spread.py holds the change's own tests (its helpers are reused here)."""

import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from h2raw import H2
from test_lb_h2 import h2_lb  # noqa: F401 (a fixture)
from test_lb_websocket import ws_backend_factory  # noqa: F401 (a fixture)
from test_lb_spread import family, open_used, per_worker, scrape
from test_lb_tls import certs  # noqa: F401 (a fixture)

from helpers import LOCALHOST, admin_token, free_port, http_request, wait_for


def tls_get(port, ca, i, source, accepted=lambda: False):
    """A TLS connection and one request on it -> ("answered", sock), ("waiting", sock) when the
    handshake gets no answer within 1.5 s and accepted() says no worker took the connection (it
    waits in a full worker's backlog), or ("dropped", error) when the balancer closed it
    unanswered. A handshake a worker did take but has not finished in 1.5 s (a slow machine, a
    sanitizer build) is given 20 s more."""
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection((LOCALHOST, port), timeout=1.5, source_address=(source, 0))
    s = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    try:
        try:
            s.do_handshake()
        except socket.timeout:
            if not accepted():
                return "waiting", s
            s.settimeout(20)
            s.do_handshake()
    except (ssl.SSLError, ConnectionResetError, OSError) as e:
        s.close()
        return "dropped", repr(e)
    s.settimeout(20)
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
        for i in range(40):  # the kernel picks the worker: 40 tries reach the one with room 4 times
            def accepted():  # the workers hold more connections than the h2 one and those answered
                return sum(per_worker(scrape(admin_port), "https").values()) > 1 + outcomes.count("answered")
            what, got = tls_get(lb.tls_port, lb.ca, i, "127.0.0.%d" % (3 + i % 4), accepted)
            outcomes.append(what if what != "dropped" else (what, got))
            if what != "dropped":
                socks.append(got)
            if outcomes.count("answered") >= 4:
                break
        after = per_worker(scrape(admin_port), "https")
        assert [o for o in outcomes if o not in ("answered", "waiting")] == [], (before, after, outcomes)
        assert outcomes.count("answered") >= 4, outcomes  # the 4th on the worker with room was reached
    finally:
        for s in socks:
            s.close()
        c.close()


def test_promtool_accepts_the_per_worker_families(h2_lb, testbackend_factory):
    """A check (no finding): with 2 workers and both listeners, /metrics (per-worker connection
    gauges of both listeners, the handover counters) passes `promtool check metrics`."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed")
    backend = testbackend_factory("A")
    admin_port = free_port()
    lb = h2_lb("--admin-listen", "%s:%d" % (LOCALHOST, admin_port), backends=[backend], workers=2)
    socks = open_used(lb.port, 8)
    try:
        status, _, body = http_request(LOCALHOST, admin_port, "GET", "/metrics",
                                       headers={"Authorization": "Bearer " + admin_token(admin_port)})
        assert status == 200
        text = body.decode()
        assert 'agora_lb_worker_client_connections{listener="https",worker="1"}' in text
        assert 'agora_lb_connections_spread_total{listener="https"}' in text
        proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", \
            proc.stdout + proc.stderr
    finally:
        for s in socks:
            s.close()


def storm(port, stop, errors, answered, n_quit=300, quiet=None):
    """Connections closed at once (some unread, some with a request never read), and every 10th
    a request whose answer must come whole."""
    quiet = quiet or stop
    i = 0
    while not stop.is_set() and i < n_quit:
        i += 1
        try:
            s = socket.create_connection((LOCALHOST, port), timeout=10,
                                         source_address=("127.0.0.%d" % (2 + i % 5), 0))
        except OSError:
            continue  # refused: the listener closed (a stop)
        try:
            if i % 10 == 0:
                s.sendall(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"HTTP/1.1 200 "):
                    answered.append(i)
                elif not quiet.is_set():
                    errors.append(data[:80])
            elif i % 3 == 0:
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError as e:
            if not quiet.is_set():
                errors.append(repr(e))
        finally:
            s.close()


def test_a_storm_of_instant_closes_leaves_every_count_at_zero_then_a_stop_mid_storm(lb_factory,
                                                                                     testbackend_factory):
    """A check (no finding): 4 workers, 8 threads opening connections that close at once (the
    loads oscillate, handovers race the closes): the requests made among them are all answered,
    and afterwards every worker's count is back to 0 (no drift, no wrap below 0: the counts are
    unsigned). Then a second storm with SIGTERM in its middle: the balancer exits 0 (under
    build-tsan/ or build-asan/ agora, AGORA_BIN, a report makes that exit fail)."""
    backend = testbackend_factory("A")
    admin_port = free_port()
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), workers=4)
    stop, errors, answered = threading.Event(), [], []
    threads = [threading.Thread(target=storm, args=(lb.port, stop, errors, answered)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(answered) >= 8 * 25, (errors[:5], len(answered))
    m = scrape(admin_port)
    assert family(m, "agora_lb_connections_spread_total", listener="http")[0] > 0
    assert wait_for(lambda: sum(per_worker(scrape(admin_port), "http").values()) == 0, 10), \
        per_worker(scrape(admin_port), "http")
    stop2, quiet, errors2, answered2 = threading.Event(), threading.Event(), [], []
    threads = [threading.Thread(target=storm, args=(lb.port, stop2, errors2, answered2, 100000, quiet))
               for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    quiet.set()  # from here a reset is a connection the closed listening sockets' backlogs held
    lb.popen.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the storm goes on through the stop
    stop2.set()
    for t in threads:
        t.join(timeout=60)
    assert lb.wait(timeout=20) == 0, lb.output()[-3000:]
    assert errors2 == [], errors2[:5]


def burst(port, n):
    """n connections opened at once (a barrier), each sending a request -> their outcomes:
    "answered", "waiting" (no answer within 0.5 s: in a full worker's backlog) or "dropped". A
    connection dropped is closed as soon as a worker's loop takes it, well within the 0.5 s; the
    connect itself is given 5 s (a listen backlog on a loaded machine)."""
    bar, res, socks, lock = threading.Barrier(n), [], [], threading.Lock()

    def client(i):
        bar.wait()
        try:
            s = socket.create_connection((LOCALHOST, port), timeout=5, source_address=("127.0.0.%d" % (2 + i % 6), 0))
            s.settimeout(0.5)
        except OSError:
            res.append("dropped")
            return
        with lock:
            socks.append(s)
        try:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            d = s.recv(4096)
            res.append("answered" if d.startswith(b"HTTP/1.1 200 ") else "dropped")
        except socket.timeout:
            res.append("waiting")
        except OSError:
            res.append("dropped")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for s in socks:
        s.close()
    return res


def test_a_connection_handed_to_a_worker_filled_meanwhile_is_not_dropped(lb_factory, testbackend_factory):
    """F2. --max-connections 6 per worker, 2 workers, bursts of 14 connections at once (12 fit,
    2 wait in a backlog). A worker chosen while it had room could fill with its own accepts before
    its loop took the connection handed to it, and then closed that connection unread
    (spread_take: "full since it was chosen"): 8 of 420 clients were dropped, clients the worker
    that accepted them had room for. Now the handed connection is served (a few over the limit,
    each chosen while there was room): none is dropped."""
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--max-connections", "6", workers=2)
    outcomes = []
    for _ in range(30):
        outcomes += burst(lb.port, 14)
        time.sleep(0.2)  # the closes are seen: the next burst starts from empty workers
    assert outcomes.count("dropped") == 0, {k: outcomes.count(k) for k in ("answered", "waiting", "dropped")}


def test_per_address_limit_and_failed_handshakes_across_handovers(h2_lb, testbackend_factory):
    """A check (no finding): --max-conns-per-ip 6 with 2 workers. 10 connections from one address
    (handed over or not): 6 served, 4 answered 503 by whichever worker adopted them; closed, the
    address gets its 6 slots back. On the TLS listener, 12 connections that fail their handshake
    (plain bytes), 6 h2 connections with a stream each, then all closed: every worker's counts
    are back to 0, none wrapped below."""
    backend = testbackend_factory("A")
    admin_port = free_port()
    lb = h2_lb("--max-conns-per-ip", "6", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
               backends=[backend], workers=2)
    for _ in range(2):
        socks, statuses = [], []
        for i in range(10):
            s = socket.create_connection((LOCALHOST, lb.port), timeout=10, source_address=("127.0.0.7", 0))
            s.sendall(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            statuses.append(s.recv(4096)[:12])
            socks.append(s)
        assert sorted(statuses) == [b"HTTP/1.1 200"] * 6 + [b"HTTP/1.1 503"] * 4, statuses
        for s in socks:
            s.close()
        assert wait_for(lambda: sum(per_worker(scrape(admin_port), "http").values()) == 0, 5)
        time.sleep(0.2)
    bad = []
    for i in range(12):
        s = socket.create_connection((LOCALHOST, lb.tls_port), timeout=10, source_address=("127.0.0.8", 0))
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        bad.append(s)
    conns = [H2(lb.tls_port, lb.ca, source="127.0.0.%d" % (2 + i % 4)) for i in range(6)]
    for c in conns:
        assert c.wait_stream(c.request("/echo"), 10)[0] == 200
    for c in conns:
        c.close()
    for s in bad:
        s.close()

    def settled():
        counts = per_worker(scrape(admin_port), "https")
        return sum(counts.values()) == 0 and all(v < 1 << 31 for v in counts.values())

    assert wait_for(settled, 5), per_worker(scrape(admin_port), "https")


def test_every_worker_of_many_is_in_the_group_and_in_metrics(lb_factory, testbackend_factory):
    """F3. --workers accepts up to 256, but a group held 64 servers (SPREAD_MAX) and /metrics read
    64: with --workers 80, workers 64-79 never joined, so they were never handed a connection
    however idle, and agora_lb_worker_client_connections ("each worker") left them out. Now all
    80 are listed."""
    backend = testbackend_factory("A")
    admin_port = free_port()
    lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), workers=80)
    counts = per_worker(scrape(admin_port), "http")
    assert sorted(counts, key=int) == [str(w) for w in range(80)], sorted(counts, key=int)


def test_websocket_tunnels_are_spread_and_counted_until_they_end(ws_backend_factory, lb_factory):
    """A check (no finding): 12 WebSocket tunnels over 2 workers (each one's connection handed
    over or not, before its handshake) echo, the workers hold 6 each within one; closed,
    every count is back to 0."""
    from test_lb_websocket import open_tunnel

    from helpers import OP_TEXT

    backend = ws_backend_factory()
    admin_port = free_port()
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), workers=2)
    tunnels = [open_tunnel(lb.port) for _ in range(12)]
    try:
        counts = per_worker(scrape(admin_port), "http")
        assert sum(counts.values()) == 12 and max(counts.values()) - min(counts.values()) <= 1, counts
        for i, t in enumerate(tunnels):
            t.send(OP_TEXT, b"hi %d" % i)
            assert t.recv()[1] == b"hi %d" % i
    finally:
        for t in tunnels:
            t.close()
    assert wait_for(lambda: sum(per_worker(scrape(admin_port), "http").values()) == 0, 5), \
        per_worker(scrape(admin_port), "http")
