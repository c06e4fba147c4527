"""agora lb: how requests are spread over servers (round-robin, weights, least-connections) and
the balancer's own endpoints, GET /health and GET /stats.

Each test starts its own testbackends (X-Backend: A, B, C) and a one-worker balancer, so that
round-robin sequences and in-flight counts are exact. Run with `scripts/run-integration.sh` or
`/usr/bin/python3 -m pytest tests/integration/test_lb_basic.py` (AGORA_BIN selects the binary).
"""

import http.client
import threading
import time

import pytest

from helpers import LOCALHOST, RawConnection, backend_url, http_request, lb_stats, wait_for

STATS_SERVER_KEYS = [
    "url", "address", "state", "healthy", "admin", "weight", "in_flight", "requests", "errors",
    "latency_p50_ms", "latency_p99_ms", "last_check",
]


def start_abc(testbackend_factory, *args):
    return [testbackend_factory(name, *args) for name in "ABC"]


def backend_of(port, path="/"):
    """Sends GET path through the balancer on a new connection; returns the X-Backend name."""
    status, headers, body = http_request(LOCALHOST, port, "GET", path)
    assert status == 200, (status, body)
    return headers["x-backend"]


def requests_by_url(port):
    return {s["url"]: s["requests"] for s in lb_stats(port)["servers"]}


def test_round_robin_splits_exactly(testbackend_factory, lb_factory):
    backends = start_abc(testbackend_factory)
    lb = lb_factory(backends, "--policy", "round-robin")

    seen = [backend_of(lb.port) for _ in range(30)]

    assert seen == ["A", "B", "C"] * 10
    assert requests_by_url(lb.port) == {backend_url(b): 10 for b in backends}


def test_round_robin_honours_weights(testbackend_factory, lb_factory):
    a, b, c = start_abc(testbackend_factory)
    lb = lb_factory([(a, 3), (b, 1), (c, 1)], "--policy", "round-robin")

    seen = [backend_of(lb.port) for _ in range(20)]

    # Smooth weighted round robin: 3:1:1 interleaved, the same five picks in every cycle.
    assert seen == ["A", "B", "A", "C", "A"] * 4
    servers = lb_stats(lb.port)["servers"]
    assert [(s["weight"], s["requests"]) for s in servers] == [(3, 12), (1, 4), (1, 4)]


def test_least_conn_uses_every_idle_server(testbackend_factory, lb_factory):
    backends = start_abc(testbackend_factory)
    lb = lb_factory(backends, "--policy", "least-conn")

    seen = [backend_of(lb.port) for _ in range(60)]

    # Idle servers tie and ties are broken at random: each of the three gets some of the 60
    # (all three are missed together with probability 3 * (2/3)^60, about 1e-10).
    counts = {name: seen.count(name) for name in "ABC"}
    assert sum(counts.values()) == 60 and min(counts.values()) >= 1, counts
    assert requests_by_url(lb.port) == {backend_url(b): counts[b.name] for b in backends}


@pytest.mark.parametrize("workers", [1, 2])
def test_least_conn_avoids_servers_with_requests_in_flight(testbackend_factory, lb_factory, workers):
    # In-flight counts are shared by all workers: with 2, the connections may land on either.
    backends = start_abc(testbackend_factory)
    names = {backend_url(b): b.name for b in backends}
    lb = lb_factory(backends, "--policy", "least-conn", workers=workers)
    results = {}

    def slow(key):
        results[key] = http_request(LOCALHOST, lb.port, "GET", "/delay?ms=1500", timeout=10)

    def in_flight():
        return {names[url]: n for url, n in lb_stats(lb.port)["connections"].items()}

    threads = [threading.Thread(target=slow, args=(k,)) for k in (1, 2)]
    try:
        threads[0].start()
        assert wait_for(lambda: sum(in_flight().values()) == 1, 5), in_flight()
        threads[1].start()
        assert wait_for(lambda: sum(in_flight().values()) == 2, 5), in_flight()
        busy = in_flight()
        # The second long request went to another server than the first.
        assert sorted(busy.values()) == [0, 1, 1], busy
        idle = [name for name, n in busy.items() if n == 0][0]

        # With two servers busy and one idle, every new request goes to the idle one. (Before
        # each, the previous one must be counted out: with 2 workers that happens on another
        # thread, just after its response was sent.)
        seen = []
        for _ in range(12):
            assert wait_for(lambda: in_flight() == busy, 5), in_flight()
            seen.append(backend_of(lb.port))
        assert seen == [idle] * 12
    finally:
        for t in threads:
            t.join(timeout=10)

    pinned = sorted(results[k][1]["x-backend"] for k in (1, 2))
    assert [results[k][0] for k in (1, 2)] == [200, 200]
    assert [results[k][2] for k in (1, 2)] == [b"delayed 1500 ms\n"] * 2
    assert sorted(pinned + [idle]) == ["A", "B", "C"]
    assert wait_for(lambda: in_flight() == {"A": 0, "B": 0, "C": 0}, 5), in_flight()


def test_least_conn_sends_concurrent_load_past_a_slow_server(testbackend_factory, lb_factory):
    a = testbackend_factory("A", "--delay-ms", "300")
    b, c = testbackend_factory("B"), testbackend_factory("C")
    lb = lb_factory([a, b, c], "--policy", "least-conn")
    seen = [[], []]  # per client: (X-Backend, X-Conn-Id)
    errors = []
    duration = 1.5

    def client(out):
        conn = http.client.HTTPConnection(LOCALHOST, lb.port, timeout=10)
        deadline = time.monotonic() + duration
        try:
            while time.monotonic() < deadline:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    errors.append((resp.status, body))
                out.append((resp.getheader("X-Backend"), resp.getheader("X-Conn-Id")))
        except Exception as err:  # reported below; the thread must not die silently
            errors.append(err)
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - started

    assert errors == []
    answers = seen[0] + seen[1]
    on_a = [conn_id for name, conn_id in answers if name == "A"]
    others = len(answers) - len(on_a)
    # Two clients, three servers: while one client waits on A, the other always finds B or C
    # with nothing in flight, so A never has two requests at once. The balancer therefore never
    # needs a second connection to A, and A's requests (300 ms each) run one after another.
    assert len(set(on_a)) <= 1, on_a
    assert len(on_a) <= elapsed / 0.3 + 1, (len(on_a), elapsed)
    # Meanwhile the fast servers take the bulk of the requests.
    assert others >= 5 * max(len(on_a), 1), (len(on_a), others)


def test_health_endpoint_is_answered_by_the_balancer(testbackend_factory, lb_factory, tmp_path):
    record = tmp_path / "requests.txt"
    backend = testbackend_factory("A", "--record", str(record))
    lb = lb_factory([backend], "--health-path", "/hc")

    status, headers, body = http_request(LOCALHOST, lb.port, "GET", "/health")
    assert (status, body) == (200, b"OK")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == "2"
    assert "x-backend" not in headers

    with RawConnection(lb.port) as conn:
        conn.send(b"HEAD /health HTTP/1.1\r\nHost: lb\r\n\r\nGET /health HTTP/1.1\r\nHost: lb\r\n\r\n")
        status, headers, body = conn.read_response(head=True)
        assert (status, headers["content-length"], body) == (200, "2", b"")
        assert conn.read_response()[::2] == (200, b"OK")

    # The backends only ever saw the balancer's own health checks (on /hc).
    lines = record.read_text().splitlines()
    assert lines and set(lines) == {"GET /hc"}


def test_stats_shape_and_counters(testbackend_factory, lb_factory):
    backends = start_abc(testbackend_factory)
    lb = lb_factory(backends, "--policy", "round-robin")
    urls = [backend_url(b) for b in backends]

    for _ in range(9):
        backend_of(lb.port)
    status, headers, body = http_request(LOCALHOST, lb.port, "GET", "/stats")
    assert status == 200
    assert headers["content-type"] == "application/json"
    stats = lb_stats(lb.port)

    assert list(stats) == ["health", "connections", "policy", "servers"]
    assert stats["health"] == {url: True for url in urls}
    assert list(stats["health"]) == urls
    assert stats["connections"] == {url: 0 for url in urls}
    assert list(stats["connections"]) == urls
    assert stats["policy"] == "round-robin"
    assert [s["url"] for s in stats["servers"]] == urls
    for server, backend in zip(stats["servers"], backends):
        # The documented fields, in this order (others may follow or sit between them).
        assert [k for k in server if k in STATS_SERVER_KEYS] == STATS_SERVER_KEYS
        p50, p99 = server["latency_p50_ms"], server["latency_p99_ms"]
        assert isinstance(p50, float) and isinstance(p99, float) and 0 < p50 <= p99, server
        assert {k: v for k, v in server.items() if k in STATS_SERVER_KEYS and not k.startswith("latency")} == {
            "url": backend_url(backend),
            "address": "127.0.0.1:%d" % backend.port,
            "state": "up",
            "healthy": True,
            "admin": "active",
            "weight": 1,
            "in_flight": 0,
            "requests": 3,
            "errors": 0,
            "last_check": "HTTP 200",
        }


@pytest.mark.parametrize("key, header", [
    ("header:X-User", lambda user: {"X-User": user}),
    ("cookie:sid", lambda user: {"Cookie": "theme=dark; sid=%s; lang=en" % user}),
])
def test_hash_policy_keeps_a_key_on_one_server(testbackend_factory, lb_factory, key, header):
    backends = start_abc(testbackend_factory)
    lb = lb_factory(backends, "--policy", "hash", "--hash-key", key)

    placement = {}
    for user in ["user%d" % i for i in range(30)]:
        seen = {http_request(LOCALHOST, lb.port, "GET", "/", headers=header(user))[1]["x-backend"]
                for _ in range(3)}
        assert len(seen) == 1, (user, seen)
        placement[user] = seen.pop()
    # 30 keys spread over the ring: all on one server has probability about 3 * 3^-30.
    assert len(set(placement.values())) >= 2, placement


def test_counters_add_up_over_several_workers(testbackend_factory, lb_factory):
    backends = start_abc(testbackend_factory)
    lb = lb_factory(backends, workers=2)
    statuses = []

    def client():
        statuses.extend(http_request(LOCALHOST, lb.port, "GET", "/")[0] for _ in range(20))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert statuses == [200] * 80
    servers = lb_stats(lb.port)["servers"]
    assert sum(s["requests"] for s in servers) == 80
    assert wait_for(lambda: [s["in_flight"] for s in lb_stats(lb.port)["servers"]] == [0, 0, 0], 5)
