"""agora lb with several workers: connections spread by load, not only by the kernel's hash
(src/http/server.h, "Spreading").

Each worker has its own SO_REUSEPORT listening socket, so the kernel chooses a worker for a new
connection by a hash of its addresses: 40 connections can come out 27/13. A worker that holds more
connections than the least loaded one hands a new connection to it before reading it.
The workers' counts are read from /metrics (agora_lb_worker_client_connections). The
connections come from many source ports (and, for the hash, addresses 127.0.0.1-127.0.0.4), and
each is used before the next is opened, so every count is settled when it is read.
"""

import socket
import ssl
import threading

import pytest
from test_lb_tls import certs, client_ctx  # noqa: F401 (fixture)

from helpers import LOCALHOST, admin_token, free_port, http_request, parse_metrics


def scrape(admin_port):
    status, _, body = http_request(LOCALHOST, admin_port, "GET", "/metrics",
                                   headers={"Authorization": "Bearer " + admin_token(admin_port)})
    assert status == 200
    return parse_metrics(body.decode())


def per_worker(metrics, listener):
    out = {}
    for (name, pairs), v in metrics.items():
        labels = dict(pairs)
        if name == "agora_lb_worker_client_connections" and labels.get("listener") == listener:
            out[labels["worker"]] = int(v)
    return out


def family(metrics, name, **want):
    return [v for (n, pairs), v in metrics.items()
            if n == name and all(dict(pairs).get(k) == w for k, w in want.items())]


def open_used(port, n, wrap=None):
    """n keep-alive connections, each answered once before the next is opened."""
    socks = []
    for i in range(n):
        raw = socket.create_connection((LOCALHOST, port), timeout=10, source_address=("127.0.0.%d" % (1 + i % 4), 0))
        s = wrap(raw) if wrap else raw
        s.sendall(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data[:100]
        socks.append(s)
    return socks


def test_connections_are_spread_evenly_over_the_workers(lb_factory, testbackend_factory):
    """80 connections to 2 workers, then 40 to 4: the busiest worker holds at most one more than
    the least busy (the kernel's hash alone gave 27/13 and the like), connections were handed over
    to get there, and every connection still gets its answers."""
    backend = testbackend_factory("A")
    for workers, n in ((2, 80), (4, 40)):
        admin_port = free_port()
        lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), workers=workers)
        socks = open_used(lb.port, n)
        try:
            m = scrape(admin_port)
            counts = per_worker(m, "http")
            assert sorted(counts) == [str(w) for w in range(workers)], counts
            assert sum(counts.values()) == n, counts
            assert max(counts.values()) - min(counts.values()) <= 1, counts
            assert family(m, "agora_lb_connections_spread_total", listener="http")[0] > 0
            for i, s in enumerate(socks):  # each still served, by whichever worker holds it
                s.sendall(b"GET /echo?again=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                data = b""
                while b"again=%d" % i not in data:
                    chunk = s.recv(4096)
                    assert chunk, data
                    data += chunk
        finally:
            for s in socks:
                s.close()


def test_tls_connections_are_spread_before_their_handshake(lb_factory, testbackend_factory, certs):
    """The TLS listener's connections are handed over before a byte is read: the handshake runs on
    the worker that keeps the connection. 40 TLS connections to 2 workers come out within one."""
    backend = testbackend_factory("A")
    admin_port, tls_port = free_port(), free_port()
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), "--tls-listen",
                    "%s:%d" % (LOCALHOST, tls_port), "--tls-cert", certs["a"][0], "--tls-key", certs["a"][1],
                    workers=2)
    ctx = client_ctx(certs)
    socks = open_used(tls_port, 40, wrap=lambda raw: ctx.wrap_socket(raw, server_hostname="localhost"))
    try:
        m = scrape(admin_port)
        counts = per_worker(m, "https")
        assert sum(counts.values()) == 40 and max(counts.values()) - min(counts.values()) <= 1, counts
    finally:
        for s in socks:
            s.close()


def test_one_worker_has_no_spreading(lb_factory, testbackend_factory):
    """With one worker there is nothing to spread over: no per-worker counts and no handovers."""
    backend = testbackend_factory("A")
    admin_port = free_port()
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), workers=1)
    socks = open_used(lb.port, 5)
    try:
        m = scrape(admin_port)
        assert per_worker(m, "http") == {}
        assert family(m, "agora_lb_connections_spread_total") == []
    finally:
        for s in socks:
            s.close()


def test_connections_opened_at_once_from_many_threads_all_get_answers(lb_factory, testbackend_factory):
    """200 connections opened by 8 threads at once against 2 workers (handovers racing each other
    and the workers' own accepts): every one is answered, and the counts add up."""
    backend = testbackend_factory("A")
    admin_port = free_port()
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), workers=2)
    results, lock = [], threading.Lock()

    def client():
        socks = open_used(lb.port, 25)
        with lock:
            results.append(socks)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert len(results) == 8
        counts = per_worker(scrape(admin_port), "http")
        assert sum(counts.values()) == 200, counts
        assert max(counts.values()) - min(counts.values()) <= 1 + 8, counts  # 8 in flight at once at most
    finally:
        for socks in results:
            for s in socks:
                s.close()
