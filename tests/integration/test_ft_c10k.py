"""agora lb and agora server hold many idle keep-alive connections (C10k) and stay healthy.

Issue 9 item 2: the balancer's main loop (health checks, admin API) could only watch descriptors
below 1024, so once the workers held more than about 1,000 connections every health check failed
with "too many open files", every server was marked down and every request got 503.

- test_1100_idle_connections_keep_servers_up: the reproduction (failed before the fix: both
  servers down, GET / 503 "No healthy servers available").
- test_soak_10k_idle: 10,000 idle keep-alive connections held for 30 s while a client sends 1,000
  ordinary requests: every one answers 200 and no server is ever marked down (/stats polled
  throughout; the backends' records show the health checks kept reaching them). Also reports the
  balancer's RSS with 10,000 idle connections.
- test_server_10k_idle: the same 10,000 idle connections to one `agora server`; /health and the
  API still answer.
- test_descriptor_exhaustion_pauses_accepting: a balancer run with a 300-descriptor limit and no
  connection cap: accept() fails with EMFILE; accepting pauses (no busy loop: little CPU), health
  checks that cannot get a descriptor are no verdict (servers stay up), and once descriptors are
  free again new clients are served.

Descriptors: the 10k tests need RLIMIT_NOFILE of at least 12,000 for this process (10,000 client
sockets) and for the server or balancer, which inherit it. They raise the soft limit to the hard
one, and the hard one to 32,768 when allowed (root with CAP_SYS_RESOURCE); they are skipped, with
that reason, when the hard limit stays below 12,000. With the automatic --max-connections the
balancer promises two descriptors per client (its own and a backend connection), so it holds
10,000 clients from a limit of 21,024 up; below that (e.g. a hard limit of 20,000 that cannot be
raised) the soak passes --max-connections 9000 (per worker) explicitly and says so.
Connections are opened non-blocking in batches of 500 (a few seconds for 10,000).
"""

import errno
import http.client
import json
import os
import re
import resource
import selectors
import socket
import struct
import threading
import time

import pytest

from helpers import (
    LOCALHOST,
    accepts,
    backend_url,
    free_port,
    http_request,
    lb_server_stats,
    record_lines,
    rss_kib,
    start_process,
    wait_for,
)

NEED_FDS = 12000  # 10,000 sockets and what the processes use besides
WANT_FDS = 32768  # raised to when allowed
AUTO_FDS = 2 * 10000 + 1024  # the balancer's automatic --max-connections holds 10,000 from here
REQ = b"GET /idle HTTP/1.1\r\nHost: c10k\r\n\r\n"


def ensure_fd_limit(need, want=None):
    """Raises this process's RLIMIT_NOFILE (children inherit it): the hard limit to `want` when
    allowed, the soft one to the hard one. Returns the limit in force; skips the test when it is
    below `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want and hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            soft = hard = want
        except (ValueError, OSError):
            pass  # not allowed (no CAP_SYS_RESOURCE): keep the hard limit
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip("needs RLIMIT_NOFILE >= %d (hard limit is %d and cannot be raised: ulimit -Hn, as root)"
                    % (need, hard))
    return hard


def _response_complete(data):
    """(status, rest) once data holds a whole response with Content-Length, else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end].decode("latin-1")
    m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
    length = int(m.group(1)) if m else 0
    if len(data) < end + 4 + length:
        return None
    return int(head.split(" ", 2)[1]), data[end + 4 + length:]


def open_idle(port, n, request=REQ, batch=500, timeout=30.0):
    """Opens n keep-alive connections to 127.0.0.1:port and completes one request on each
    (non-blocking, `batch` at a time). Returns the sockets, idle, in non-blocking mode; raises
    AssertionError if any response is not 200 or a batch does not finish within timeout."""
    sel = selectors.DefaultSelector()
    done = []
    try:
        for first in range(0, n, batch):
            state = {}
            for _ in range(first, min(n, first + batch)):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                rc = s.connect_ex((LOCALHOST, port))
                assert rc in (0, errno.EINPROGRESS), os.strerror(rc)
                state[s] = b""
                sel.register(s, selectors.EVENT_WRITE)
            deadline = time.monotonic() + timeout
            while state:
                assert time.monotonic() < deadline, "%d connections of batch %d unanswered" % (len(state), first)
                for key, ev in sel.select(timeout=0.5):
                    s = key.fileobj
                    if ev & selectors.EVENT_WRITE:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        assert err == 0, "connect failed: %s" % os.strerror(err)
                        assert s.send(request) == len(request)
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    chunk = s.recv(65536)
                    assert chunk, "connection %d closed before its response" % (len(done) + 1)
                    state[s] += chunk
                    got = _response_complete(state[s])
                    if got:
                        assert got[0] == 200, state[s][:200]
                        assert got[1] == b""
                        sel.unregister(s)
                        del state[s]
                        done.append(s)
    except BaseException:
        for s in done:
            s.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        raise
    finally:
        sel.close()
    return done


def count_closed(socks):
    """How many of the idle sockets the peer has closed (readable at EOF) or reset."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    try:
        for key, _ in sel.select(timeout=0.2):
            try:
                if key.fileobj.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except ConnectionError:
                closed += 1
    finally:
        sel.close()
    return closed


def exchange_on(socks, request=REQ, timeout=10.0):
    """Sends one more request on each idle socket; returns the list of statuses."""
    statuses = []
    for s in socks:
        s.setblocking(True)
        s.settimeout(timeout)
        s.sendall(request)
        data = b""
        while not _response_complete(data):
            chunk = s.recv(65536)
            assert chunk, "closed before the response"
            data += chunk
        statuses.append(_response_complete(data)[0])
        s.setblocking(False)
    return statuses


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    """utime + stime of process pid (all threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def close_all(socks):
    """Closes with a reset (SO_LINGER 0): 10,000 connections would otherwise leave as many
    TIME_WAIT entries behind on a machine shared with other tests."""
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.close()


# ---------------------------------------------------------------- the reproduction

def test_1100_idle_connections_keep_servers_up(lb_factory, testbackend_factory):
    """1,100 keep-alive connections, one request completed on each, left idle: after more than
    two health intervals (and past `fall` failures) a fresh GET / answers 200 and /stats shows
    every server up with a passing last check. Before the fix: 503 "No healthy servers
    available", every server down with "too many open files"."""
    ensure_fd_limit(4096)
    a = testbackend_factory("a")
    b = testbackend_factory("b")
    lb = lb_factory([a, b], "--health-timeout", "1s", "--max-conns-per-ip", "0", workers=2, health_interval="200ms")
    socks = open_idle(lb.port, 1100)
    try:
        assert open_fds(lb.pid) > 1100
        time.sleep(1.5)  # 7 health intervals: fall (3) would have been reached long ago
        status, headers, body = http_request(LOCALHOST, lb.port, "GET", "/")
        assert status == 200, (status, body)
        assert body in (b"hello from a\n", b"hello from b\n")
        servers = lb_server_stats(lb.port)
        for url in (backend_url(a), backend_url(b)):
            assert servers[url]["state"] == "up", servers[url]
            assert servers[url]["last_check"] == "HTTP 200", servers[url]
        assert count_closed(socks) == 0
        assert exchange_on(socks[:50]) == [200] * 50  # the idle connections still work
    finally:
        close_all(socks)


# ---------------------------------------------------------------- the soak

SOAK_CONNS = 10000
SOAK_S = 30.0
SOAK_REQUESTS = 1000
HEALTH_INTERVAL_S = 0.2


def test_soak_10k_idle(lb_factory, testbackend_factory, tmp_path):
    """10,000 idle keep-alive connections held for 30 s while a client sends 1,000 ordinary
    requests (one every 30 ms; every tenth on a new connection): every one answers 200, /stats
    (polled every 100 ms) never shows a server down or a failed check, and the health checks kept
    reaching both backends throughout (their records). The connections are all still open at the
    end and still serve requests. Prints the balancer's RSS with 10,000 idle connections."""
    limit = ensure_fd_limit(NEED_FDS, WANT_FDS)
    rec_a, rec_b = tmp_path / "a.log", tmp_path / "b.log"
    a = testbackend_factory("a", "--record", str(rec_a))
    b = testbackend_factory("b", "--record", str(rec_b))
    # one client address holds them all: past the default per-address limit (1,000)
    flags = ["--health-timeout", "1s", "--client-idle-timeout", "300s", "--max-conns-per-ip", "0"]
    if limit < AUTO_FDS:
        # The automatic cap would be (limit - 1024) / 2 in all; one descriptor per idle client
        # is enough here (the backends see one request at a time).
        print("\nC10k: descriptor limit %d < %d: --max-connections 9000 per worker" % (limit, AUTO_FDS))
        flags += ["--max-connections", "9000"]
    lb = lb_factory([a, b], *flags, workers=2, health_interval="%dms" % (HEALTH_INTERVAL_S * 1000))
    assert "agora lb: descriptor limit %d" % limit in lb.output()
    rss_before = rss_kib(lb.pid)
    t0 = time.monotonic()
    socks = open_idle(lb.port, SOAK_CONNS)
    opened_s = time.monotonic() - t0
    try:
        assert open_fds(lb.pid) >= SOAK_CONNS
        rss_idle = rss_kib(lb.pid)
        print("\nC10k: opened %d connections in %.1f s; agora lb RSS %d KiB before, %d KiB with them idle "
              "(%.2f KiB per connection)" % (SOAK_CONNS, opened_s, rss_before, rss_idle,
                                             (rss_idle - rss_before) / SOAK_CONNS))
        checks_before = sum(1 for l in record_lines(rec_a) + record_lines(rec_b) if l == "GET /health")

        results = []
        stop = threading.Event()

        def client():
            conn = None
            start = time.monotonic()
            for i in range(SOAK_REQUESTS):
                if conn is None or i % 10 == 0:
                    if conn is not None:
                        conn.close()
                    conn = http.client.HTTPConnection(LOCALHOST, lb.port, timeout=5.0)
                try:
                    conn.request("GET", "/soak-%d" % i)
                    resp = conn.getresponse()
                    results.append((resp.status, resp.read()))
                except Exception as err:  # kept as a failure
                    results.append(("error: %r" % err, b""))
                    conn.close()
                    conn = None
                wait = start + (i + 1) * SOAK_S / SOAK_REQUESTS - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            if conn is not None:
                conn.close()

        bad_stats = []
        polls = 0
        th = threading.Thread(target=client, daemon=True)
        th.start()
        deadline = time.monotonic() + SOAK_S
        while time.monotonic() < deadline:
            servers = lb_server_stats(lb.port)
            polls += 1
            for s in servers.values():
                if s["state"] != "up" or s["last_check"] != "HTTP 200":
                    bad_stats.append((s["url"], s["state"], s["last_check"]))
            time.sleep(0.1)
        th.join(timeout=20.0)
        stop.set()

        assert not bad_stats, bad_stats[:10]
        assert polls > 100
        assert len(results) == SOAK_REQUESTS
        failures = [r for r in results if r[0] != 200 or r[1] not in (b"hello from a\n", b"hello from b\n")]
        assert not failures, failures[:10]
        checks = sum(1 for l in record_lines(rec_a) + record_lines(rec_b) if l == "GET /health") - checks_before
        # Two servers, one check each per interval: far more than this many ran during the soak.
        assert checks >= 2 * SOAK_S / HEALTH_INTERVAL_S / 2, checks
        assert count_closed(socks) == 0
        assert open_fds(lb.pid) >= SOAK_CONNS
        sample = socks[::100]
        assert exchange_on(sample) == [200] * len(sample)
    finally:
        close_all(socks)


# ---------------------------------------------------------------- agora server directly

def test_server_10k_idle(agora_server_factory, tmp_path):
    """10,000 idle keep-alive connections (one GET /health completed on each) to one `agora
    server`: /health and an API request (a database lookup) on fresh connections still answer, the idle connections
    are all still open and still serve requests."""
    ensure_fd_limit(NEED_FDS, WANT_FDS)
    srv = agora_server_factory(free_port(), tmp_path / "c10k.db", workers=2)
    assert "agora server: descriptor limit" in srv.output()
    socks = open_idle(srv.port, SOAK_CONNS, request=b"GET /health HTTP/1.1\r\nHost: c10k\r\n\r\n")
    try:
        assert open_fds(srv.pid) >= SOAK_CONNS
        print("\nC10k: agora server RSS %d KiB with %d idle connections" % (rss_kib(srv.pid), SOAK_CONNS))
        status, _, body = http_request(LOCALHOST, srv.port, "GET", "/health")
        assert status == 200, (status, body)
        # A request that reaches the database: no such account.
        status, _, body = http_request(LOCALHOST, srv.port, "GET", "/api/v1/accounts/nobody-c10k")
        assert status == 404, (status, body)
        assert "error" in json.loads(body), body
        assert count_closed(socks) == 0
        sample = socks[::200]
        assert exchange_on(sample, request=b"GET /health HTTP/1.1\r\nHost: c10k\r\n\r\n") == [200] * len(sample)
    finally:
        close_all(socks)


# ---------------------------------------------------------------- out of descriptors

FD_LIMIT = 300


def start_lb_short_of_descriptors(agora_bin, testbackend_factory):
    """`agora lb` under `prlimit --nofile=FD_LIMIT` with --max-connections far above that, in front
    of two testbackends, once both passed a check -> (a, b, port, lb). --health-rise 1000: a
    server marked down could not come back during a test."""
    ensure_fd_limit(4096)
    a = testbackend_factory("a")
    b = testbackend_factory("b")
    port = free_port()
    lb = start_process(["prlimit", "--nofile=%d:%d" % (FD_LIMIT, FD_LIMIT), agora_bin, "lb", "--listen",
                        "%s:%d" % (LOCALHOST, port), "--backend", backend_url(a), "--backend", backend_url(b),
                        "--admin-listen", "off", "--workers", "1", "--max-connections", "100000",
                        "--health-interval", "100ms", "--health-timeout", "1s", "--health-rise", "1000"],
                       "agora lb: listening on")
    try:
        # the message comes before the listening socket is bound
        assert wait_for(lambda: accepts(port), 10.0), lb.output()
        assert wait_for(lambda: all(s["last_check"] == "HTTP 200" for s in lb_server_stats(port).values()), 10.0)
    except BaseException:
        lb.stop(timeout=10.0)
        raise
    return a, b, port, lb


def test_descriptor_exhaustion_pauses_accepting(agora_bin, testbackend_factory):
    """`agora lb` run under `prlimit --nofile=300:300` with --max-connections far above that, so
    that accept() itself runs out of descriptors: 400 clients connect (the ones past the limit
    wait in the backlog). Accepting pauses instead of spinning on the listening socket (the
    balancer uses little CPU meanwhile), health checks that cannot get a descriptor are no verdict
    (with --health-rise 1000 a server marked down could not come back during the test: both are
    still up afterwards), both are logged, and once clients leave, new ones are served."""
    a, b, port, lb = start_lb_short_of_descriptors(agora_bin, testbackend_factory)
    socks = []
    try:
        assert "descriptor limit %d; warning" % FD_LIMIT in lb.output()
        for _ in range(400):
            s = socket.create_connection((LOCALHOST, port), timeout=5.0)
            socks.append(s)
        time.sleep(0.5)
        cpu0, t0 = cpu_seconds(lb.pid), time.monotonic()
        time.sleep(2.0)
        cpu = (cpu_seconds(lb.pid) - cpu0) / (time.monotonic() - t0)
        assert cpu < 0.25, "the balancer used %.0f%% of a CPU while out of descriptors" % (cpu * 100)
        out = lb.output()
        assert out.count("accept: Too many open files; not accepting for 100 ms") == 1, out  # one per 10 s
        assert out.count("not run: Too many open files; server states kept") == 1, out
        close_all(socks[:200])
        del socks[:200]
        # Descriptors free again: the waiting clients are accepted and new ones served.
        status, _, body = http_request(LOCALHOST, port, "GET", "/", timeout=5.0)
        assert status == 200, (status, body)
        servers = lb_server_stats(port)
        for url in (backend_url(a), backend_url(b)):
            assert servers[url]["state"] == "up", servers[url]
    finally:
        close_all(socks)
        lb.stop(timeout=10.0)


def test_backend_connect_without_a_descriptor_is_503_and_no_ejection(agora_bin, testbackend_factory):
    """A request that needs a new backend connection while the balancer has no descriptor left is
    answered 503 (with Retry-After: the balancer is short, not the server) and ejects nothing:
    EMFILE on connect() is no verdict on the server, and retrying on the other one would fail the
    same way. Before, it counted as a connect failure: the server was ejected and the client got
    502. No request ran before, so no pooled backend connection exists."""
    a, b, port, lb = start_lb_short_of_descriptors(agora_bin, testbackend_factory)
    socks = []
    try:
        for _ in range(400):
            socks.append(socket.create_connection((LOCALHOST, port), timeout=5.0))
        time.sleep(0.5)  # every descriptor of the balancer is taken by now
        first = socks[0]  # accepted first, so held by the balancer
        first.sendall(REQ)
        data = b""
        first.settimeout(5.0)
        while b"\r\n\r\n" not in data:
            chunk = first.recv(65536)
            assert chunk, "connection closed without an answer"
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert head.startswith("HTTP/1.1 503 "), head
        assert "\r\nRetry-After: 1" in head, head
        assert b"Balancer out of resources (descriptors or memory), try again" in data
        close_all(socks[:200])
        del socks[:200]
        status, _, _ = http_request(LOCALHOST, port, "GET", "/", timeout=5.0)
        assert status == 200
        servers = lb_server_stats(port)
        for url in (backend_url(a), backend_url(b)):
            assert servers[url]["state"] == "up", servers[url]
            assert servers[url]["ejections"] == 0, servers[url]
    finally:
        close_all(socks)
        lb.stop(timeout=10.0)
