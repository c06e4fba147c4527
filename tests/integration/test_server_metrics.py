"""agora server: GET /metrics on --metrics-listen, the Prometheus text format (issue 13, item 1).

  - exact counters after a known sequence (N sign-ups, log-ins, home reads and posts, a 404 and a
    400): requests by route/method/status, the handler-time histograms (per route), the pools'
    queue-wait histograms, the store's per-operation histograms, all cumulative and monotonic with
    _count equal to the requests; `promtool check metrics` accepts the output;
  - a full hashing pool (--hash-threads 1 --hash-queue 1, a burst of concurrent sign-ups): every
    503 the clients saw is counted as a refusal of that pool and as an HTTP-layer 503;
  - the metrics listener answers at once while the only handler thread is stuck (the SQLite write
    lock held by the test) and shows it busy, with one request queued behind it;
  - the gate: a foreign Host is refused, a client from a non-loopback address is refused without a
    token, with --metrics-token every client must send it; a non-loopback --metrics-listen without
    a token does not start.
"""

import json
import os
import socket
import sqlite3
import threading
import time

import pytest

from helpers import (LOCALHOST, ApiClient, connect_from, exchange_from, free_port, get_from, histogram_buckets,
                     http_request, metric, metric_or_zero, new_session, own_outside_address, parse_metrics,
                     parse_responses, promtool_check, read_to_close, silent_connections, start_agora_server,
                     start_process, unique_username, wait_for)

PASSWORD = "correct horse battery staple"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
def start(agora_bin, tmp_path):
    """start(*args, metrics_listen=, token=): agora server (1 worker, throttles off) with a metrics
    listener -> (server, metrics port). At teardown each server gets SIGTERM and must exit 0."""
    started = []

    def run(*args, metrics_listen=None, token=None):
        srv, mport = start_server(agora_bin, tmp_path, *args, metrics_listen=metrics_listen, token=token)
        started.append(srv)
        return srv, mport

    yield run
    statuses = [(srv.stop(timeout=10.0), srv) for srv in started]
    for status, srv in statuses:
        assert status == 0, srv.output()


def start_server(agora_bin, tmp_path, *args, metrics_listen=None, token=None):
    mport = free_port()
    extra = ["--metrics-listen", metrics_listen or "%s:%d" % (LOCALHOST, mport), "--signup-limit", "off",
             "--login-limit", "off", "--login-address-limit", "off"] + list(args)
    if token:
        extra += ["--metrics-token", token]
    srv = start_agora_server(agora_bin, tmp_path / "db.sqlite", extra_args=extra)
    return srv, mport


def scrape(mport, token=None, host=None):
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    if host:
        headers["Host"] = host
    status, hdrs, body = http_request(LOCALHOST, mport, "GET", "/metrics", headers=headers)
    return status, hdrs, body.decode()


def metrics(mport, token=None):
    status, hdrs, text = scrape(mport, token)
    assert status == 200, text
    assert hdrs["content-type"] == CONTENT_TYPE
    return parse_metrics(text), text


def check_histogram(m, name, count, **labels):
    """The histogram's buckets are cumulative, monotonic, end in +Inf at count, and _count is count."""
    buckets = histogram_buckets(m, name, **labels)
    assert len(buckets) == 15 and buckets[-1][0] == float("inf"), buckets
    assert [b[0] for b in buckets] == [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                       10, float("inf")]
    values = [v for _, v in buckets]
    assert values == sorted(values), buckets
    assert values[-1] == count
    assert metric(m, name + "_count", **labels) == count
    assert 0 <= metric(m, name + "_sum", **labels) < 60 * max(count, 1)


def test_exact_counts_after_known_requests(start, tmp_path):
    srv, mport = start()
    api = ApiClient(srv.port)
    n = 3
    tokens = [new_session(api, "m", PASSWORD) for _ in range(n)]
    for tok in tokens:
        assert api.as_user(tok).get("/api/v1/timelines/home").status == 200
        assert api.as_user(tok).post("/api/v1/posts", {"text": "hello"}).status == 201
    assert api.get("/api/v1/no-such-thing").status == 404
    assert api.as_user(tokens[0]).post("/api/v1/posts", data=b"{not json").status == 400

    m, text = metrics(mport)
    req = "agora_server_requests_total"
    assert metric(m, req, route="/api/v1/accounts", method="POST", code="201") == n
    assert metric(m, req, route="/api/v1/sessions", method="POST", code="200") == n
    assert metric(m, req, route="/api/v1/timelines/home", method="GET", code="200") == n
    assert metric(m, req, route="/api/v1/posts", method="POST", code="201") == n
    assert metric(m, req, route="/api/v1/posts", method="POST", code="400") == 1
    assert metric(m, req, route="other", method="GET", code="404") == 1
    # nothing else was answered: the raw path never becomes a label
    assert sum(v for k, v in m.items() if k[0] == req) == 4 * n + 2
    assert "no-such-thing" not in text
    # handler time per route; _count is that route's requests
    h = "agora_server_handler_seconds"
    check_histogram(m, h, n, route="/api/v1/accounts")
    check_histogram(m, h, n, route="/api/v1/sessions")
    check_histogram(m, h, n, route="/api/v1/timelines/home")
    check_histogram(m, h, n + 1, route="/api/v1/posts")
    check_histogram(m, h, 1, route="other")
    # Argon2id takes milliseconds: no sign-up fits the first buckets
    assert histogram_buckets(m, h, route="/api/v1/accounts")[1][1] == 0
    # queue waits: the hashing pool ran the sign-ups and log-ins, the handler pool the rest
    check_histogram(m, "agora_server_pool_queue_wait_seconds", 2 * n, pool="hashing")
    check_histogram(m, "agora_server_pool_queue_wait_seconds", 2 * n + 2, pool="handler")
    # store calls by operation
    s = "agora_server_store_seconds"
    check_histogram(m, s, n, op="account_create")
    check_histogram(m, s, n, op="account_credentials")
    check_histogram(m, s, n, op="session_create")
    check_histogram(m, s, n, op="home")
    check_histogram(m, s, n, op="post_create")
    for kind in ("error", "busy", "full"):
        assert metric(m, "agora_server_db_errors_total", kind=kind) == 0
    for pool, threads in (("handler", None), ("hashing", None)):
        assert metric(m, "agora_server_pool_busy", pool=pool) == 0
        assert metric(m, "agora_server_pool_queued", pool=pool) == 0
        assert metric(m, "agora_server_pool_threads", pool=pool) >= 1
        assert metric(m, "agora_server_pool_refusals_total", pool=pool, reason="queue_full") == 0
        assert metric(m, "agora_server_pool_refusals_total", pool=pool, reason="wait_timeout") == 0
    assert sum(v for k, v in m.items() if k[0] == "agora_server_http_answers_total") == 0
    assert metric(m, "agora_server_db_up") == 1
    assert 0 <= metric(m, "agora_server_db_last_ok_ping_age_seconds") < 3
    ok, out = promtool_check(text)
    if ok is None:
        pytest.skip(out)
    assert ok, out


def test_queue_full_refusals_counted(start, tmp_path):
    srv, mport = start("--hash-threads", "1", "--hash-queue", "1")
    k = 10
    body = [json.dumps({"username": unique_username("q"), "password": PASSWORD}).encode() for _ in range(k)]
    conns = [socket.create_connection((LOCALHOST, srv.port), timeout=30) for _ in range(k)]
    statuses = [None] * k
    go = threading.Barrier(k)

    def sign_up(i):
        c = conns[i]
        req = (b"POST /api/v1/accounts HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body[i])) + body[i]
        go.wait()
        c.sendall(req)
        [(status, _, _)] = parse_responses(read_to_close(c))
        statuses[i] = status

    threads = [threading.Thread(target=sign_up, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in conns:
        c.close()
    assert all(s in (201, 503) for s in statuses), statuses
    refused, created = statuses.count(503), statuses.count(201)
    assert refused >= 1 and created >= 1, statuses  # one hashes, at most one waits
    m, text = metrics(mport)
    full = metric(m, "agora_server_pool_refusals_total", pool="hashing", reason="queue_full")
    late = metric(m, "agora_server_pool_refusals_total", pool="hashing", reason="wait_timeout")
    assert full + late == refused and full >= 1
    assert metric(m, "agora_server_http_answers_total", code="503") == refused
    assert metric(m, "agora_server_requests_total", route="/api/v1/accounts", method="POST", code="201") == created
    check_histogram(m, "agora_server_pool_queue_wait_seconds", created, pool="hashing")
    assert metric(m, "agora_server_pool_refusals_total", pool="handler", reason="queue_full") == 0
    ok, out = promtool_check(text)
    assert ok is not False, out


def test_answers_while_the_handler_thread_is_stuck(start, tmp_path):
    srv, mport = start("--threads", "1", "--queue", "4")
    api = ApiClient(srv.port)
    user = api.as_user(new_session(api, "b", PASSWORD))
    # Hold SQLite's write lock: the post waits for it on the only handler thread, a read queues.
    db = sqlite3.connect(str(tmp_path / "db.sqlite"), isolation_level=None, timeout=10)
    db.execute("BEGIN IMMEDIATE")
    results = {}
    writer = threading.Thread(target=lambda: results.setdefault("post", user.post("/api/v1/posts", {"text": "x"})))
    writer.start()
    m0, reader = None, None
    try:
        assert wait_for(lambda: metric(metrics(mport)[0], "agora_server_pool_busy", pool="handler") == 1, 10)
        reader = threading.Thread(target=lambda: results.setdefault("home", user.get("/api/v1/timelines/home")))
        reader.start()
        assert wait_for(lambda: metric(metrics(mport)[0], "agora_server_pool_queued", pool="handler") == 1, 10)
        # every handler thread is busy until the COMMIT below: a scrape queued behind them could
        # not be answered before it; the event loop answers at once (bound generous for ASan)
        t0 = time.monotonic()
        m0, _ = metrics(mport)
        assert time.monotonic() - t0 < 2.0
        st, _, body = http_request(LOCALHOST, mport, "GET", "/health")
        assert st == 200 and json.loads(body) == {"status": "ok"}
        time.sleep(0.3)  # the queued read waits at least this long
    finally:
        db.execute("COMMIT")
        db.close()
    writer.join(30)
    if reader:
        reader.join(30)
    assert results["post"].status == 201 and results["home"].status == 200
    assert metric(m0, "agora_server_pool_busy", pool="handler") == 1
    assert metric(m0, "agora_server_pool_queued", pool="handler") == 1
    m, _ = metrics(mport)
    assert metric(m, "agora_server_pool_busy", pool="handler") == 0
    assert metric(m, "agora_server_pool_queued", pool="handler") == 0
    # the read waited behind the post: one queue wait of 0.3 s or more
    buckets = dict(histogram_buckets(m, "agora_server_pool_queue_wait_seconds", pool="handler"))
    assert buckets[float("inf")] - buckets[0.25] >= 1
    assert metric(m, "agora_server_pool_queue_wait_seconds_sum", pool="handler") >= 0.3
    check_histogram(m, "agora_server_store_seconds", 1, op="post_create")
    assert histogram_buckets(m, "agora_server_store_seconds", op="post_create")[8][1] == 0  # > 0.25 s: it waited


def test_gate_without_token(start, tmp_path):
    srv, mport = start()
    status, _, _ = scrape(mport)
    assert status == 200
    st, hdrs, text = scrape(mport, host="rebind.evil.example")
    assert st == 403 and "agora_server" not in text
    assert "DNS rebinding" in json.loads(text)["error"]
    st, hdrs, body = http_request(LOCALHOST, mport, "POST", "/metrics", body=b"")
    assert st == 405 and hdrs["allow"] == "GET, HEAD"
    st, _, body = http_request(LOCALHOST, mport, "GET", "/api/v1/timelines/home")
    assert st == 404
    # the API's port does not serve /metrics
    st, _, body = http_request(LOCALHOST, srv.port, "GET", "/metrics")
    assert st != 200 and b"agora_server" not in body
    outside = own_outside_address()
    if outside is None:
        pytest.skip("no non-loopback address on this machine")
    st, _, body = get_from(outside, mport, "/metrics", {"Host": "127.0.0.1"})
    assert st == 403 and b"agora_server" not in body
    assert "only loopback clients" in json.loads(body)["error"]
    assert wait_for(lambda: "refused %s: not a loopback client" % outside in srv.output(), 5), srv.output()


def test_gate_with_token(start):
    token = "t0ken-0123456789abcdef0123456789"
    mport = free_port()
    srv, _ = start(metrics_listen="0.0.0.0:%d" % mport, token=token)
    st, hdrs, text = scrape(mport)
    assert st == 401 and hdrs["www-authenticate"] == 'Bearer realm="agora-metrics"'
    assert "agora_server" not in text
    st, hdrs, text = scrape(mport, token="wrong")
    assert st == 401 and hdrs["www-authenticate"] == 'Bearer realm="agora-metrics", error="invalid_token"'
    st, _, text = scrape(mport, token=token, host="evil.example")
    assert st == 403 and "agora_server" not in text
    st, _, text = scrape(mport, token=token)
    assert st == 200 and "agora_server_requests_total" in text
    outside = own_outside_address()
    if outside is None:
        pytest.skip("no non-loopback address on this machine")
    st, _, body = get_from(outside, mport, "/metrics", {"Host": "127.0.0.1"})
    assert st == 401
    st, _, body = get_from(outside, mport, "/metrics", {"Host": "127.0.0.1", "Authorization": "Bearer " + token})
    assert st == 200 and b"agora_server_db_up 1" in body


def test_outside_address_needs_a_token(agora_bin, tmp_path):
    proc = start_process([agora_bin, "server", "--listen", "%s:%d" % (LOCALHOST, free_port()), "--db",
                          "sqlite:%s" % (tmp_path / "db.sqlite"), "--metrics-listen", "0.0.0.0:%d" % free_port()],
                         "is not a loopback address", timeout=10)
    try:
        assert proc.wait(10) == 1
        assert "give a --metrics-token" in proc.output()
    finally:
        proc.stop()


def timed_scrape(mport, source_ip=LOCALHOST, timeout=3.0):
    """A scrape from source_ip with a deadline: its status, or None when it was not answered in time."""
    sock = connect_from(source_ip, mport)
    sock.settimeout(timeout)
    try:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        [(status, _, _)] = parse_responses(read_to_close(sock))
        return status
    except socket.timeout:
        return None
    finally:
        sock.close()


def test_refused_clients_cannot_hold_the_listener(start):
    """Review of issue 13: a client the gate refuses (foreign Host, no or wrong token) was kept
    alive, so 16 of them, each sending one refused request a minute, held every connection of the
    listener and no scrape got through. A refusal now closes its connection."""
    srv, mport = start()
    held = []
    try:
        for _ in range(40):
            sock = connect_from("127.0.0.2", mport)
            held.append(sock)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: rebind.evil.example\r\n\r\n")
            data = read_to_close(sock)  # the server must close after its 403
            [(status, hdrs, _)] = parse_responses(data)
            assert status == 403 and hdrs["connection"] == "close"
        assert timed_scrape(mport) == 200
    finally:
        for sock in held:
            sock.close()


def test_one_address_cannot_take_every_connection(start):
    """Review of issue 13: one address opening silent connections (slowloris) took all 16 of the
    listener's; each lasted its 10 s header timeout and the scrapes waited behind them. One
    address now has at most a few connections, the others are refused at once."""
    srv, mport = start()
    with silent_connections("127.0.0.2", mport, 40) as refused:
        assert refused >= 40 - 8, refused
        assert timed_scrape(mport) == 200


def test_exact_counts_under_concurrency(start):
    """Review of issue 13: many threads on two workers (keep-alive reads, posts, unknown paths, a
    pipelined burst, clients that reset mid-request) while four threads scrape without pause:
    every counter read by a scraper only grows, every histogram is cumulative with +Inf equal to
    _count, and afterwards each counter holds exactly the requests the clients were answered."""
    srv, mport = start("--workers", "2")
    api = ApiClient(srv.port)
    users = 6
    tokens = [new_session(api, "c", PASSWORD) for _ in range(users)]
    rounds = 25
    stop = threading.Event()
    problems = []
    seen = {"home": 0, "post": 0, "other": 0}
    lock = threading.Lock()

    def user(tok):
        me = api.as_user(tok)
        counts = {"home": 0, "post": 0, "other": 0}
        for i in range(rounds):
            r = me.get("/api/v1/timelines/home")
            counts["home"] += r.status == 200
            r = me.post("/api/v1/posts", {"text": "load %d" % i})
            counts["post"] += r.status == 201
            r = me.get("/api/v1/no/such/%d/\"quote\\" % i)
            counts["other"] += r.status == 404
        with lock:
            for k, v in counts.items():
                seen[k] += v

    def scraper():
        last = {}
        while not stop.is_set():
            st, _, text = scrape(mport)
            if st != 200:
                problems.append("scrape %d" % st)
                return
            m = parse_metrics(text)
            for key, v in m.items():
                if key[0].endswith("_total") or key[0].endswith("_count") or key[0].endswith("_bucket"):
                    if v < last.get(key, 0):
                        problems.append("%r went from %s to %s" % (key, last[key], v))
                    last[key] = v
            for key, v in m.items():
                if key[0] == "agora_server_handler_seconds_count":
                    labels = dict(key[1])
                    b = histogram_buckets(m, "agora_server_handler_seconds", **labels)
                    vals = [x for _, x in b]
                    if vals != sorted(vals) or vals[-1] != v:
                        problems.append("histogram %r: %r, count %s" % (labels, b, v))

    def resetter():
        for _ in range(20):
            sock = socket.create_connection((LOCALHOST, srv.port), timeout=5)
            sock.sendall(b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"te")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # RST with the body unfinished

    scrapers = [threading.Thread(target=scraper) for _ in range(4)]
    workers = [threading.Thread(target=user, args=(t,)) for t in tokens] + [threading.Thread(target=resetter)]
    for t in scrapers + workers:
        t.start()
    # a pipelined burst of /health (answered on the loop) on one connection
    pipelined = 30
    sock = socket.create_connection((LOCALHOST, srv.port), timeout=10)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * (pipelined - 1) +
                 b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = read_to_close(sock)
    sock.close()
    assert [st for st, _, _ in parse_responses(data)] == [200] * pipelined
    for t in workers:
        t.join(60)
    stop.set()
    for t in scrapers:
        t.join(30)
    assert not problems, problems[:5]
    assert seen == {"home": users * rounds, "post": users * rounds, "other": users * rounds}

    m, text = metrics(mport)
    req = "agora_server_requests_total"
    assert metric(m, req, route="/api/v1/timelines/home", method="GET", code="200") == users * rounds
    assert metric(m, req, route="/api/v1/posts", method="POST", code="201") == users * rounds
    assert metric(m, req, route="other", method="GET", code="404") == users * rounds
    assert metric(m, req, route="/health", method="GET", code="200") == pipelined
    # sign-ups and log-ins before, and nothing else: the reset requests never reached a handler
    assert sum(v for k, v in m.items() if k[0] == req) == 2 * users + 3 * users * rounds + pipelined
    check_histogram(m, "agora_server_handler_seconds", users * rounds, route="/api/v1/posts")
    check_histogram(m, "agora_server_store_seconds", users * rounds, op="home")
    assert "quote" not in text
    ok, out = promtool_check(text)
    assert ok is not False, out


def test_refusals_do_not_flood_the_log(start):
    """Review of issue 13: every refused request wrote a line to stderr, 14 000 a second from one
    loopback client (1.3 MB/s, any client can do it to a token-protected listener): the refusal
    lines are now at most 20 a second, then one line counts those left out."""
    srv, mport = start()
    flood = 400
    for _ in range(flood):
        sock = connect_from(LOCALHOST, mport)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: rebind.evil.example\r\n\r\n")
        while sock.recv(65536):
            pass
        sock.close()
    time.sleep(1.1)
    assert scrape(mport, host="rebind.evil.example")[0] == 403  # a new second: says what was left out
    assert wait_for(lambda: "more refusal(s) not logged" in srv.output(), 5), srv.output()[-2000:]
    logged = srv.output().count("Host 'rebind.evil.example' is not this machine's metrics address")
    assert 1 <= logged <= 20 * 4, logged  # the flood lasts at most a few seconds
    left_out = sum(int(line.split()[3]) for line in srv.output().splitlines() if "not logged" in line)
    assert logged + left_out == flood + 1


def test_a_token_too_long_in_the_environment_does_not_start(agora_bin, tmp_path):
    """Review of issue 13: AGORA_METRICS_TOKEN longer than 127 characters was cut silently (the
    flag refuses it), so the scraper's whole token never matched: now it does not start."""
    env = dict(os.environ, AGORA_METRICS_TOKEN="x" * 200)
    proc = start_process([agora_bin, "server", "--listen", "%s:%d" % (LOCALHOST, free_port()), "--db",
                          "sqlite:%s" % (tmp_path / "db.sqlite"), "--metrics-listen", "%s:0" % LOCALHOST],
                         "AGORA_METRICS_TOKEN", timeout=10, env=env)
    try:
        assert proc.wait(10) == 1
        assert "AGORA_METRICS_TOKEN: value too long (at most 127 characters)" in proc.output()
    finally:
        proc.stop()


def raw_exchange(port, request, source_ip=LOCALHOST):
    """request's one answer from source_ip -> (status, body)."""
    status, _, body = exchange_from(source_ip, port, request)
    return status, body


def test_gate_holds_against_header_tricks(start):
    """Review of issue 13 (these held): Host spellings, duplicate or absent Host, absolute-form
    targets, forwarding headers from a non-loopback client, and the token in the query string."""
    srv, mport = start()
    end = b"Connection: close\r\n\r\n"
    cases = [
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n", 200),
        (b"GET /metrics HTTP/1.1\r\nHost: LocalHost:9\r\n", 200),
        (b"GET /metrics HTTP/1.1\r\nHost: [::1]:9\r\n", 200),
        (b"GET /metrics HTTP/1.1\r\nHost: localhost.\r\n", 403),
        (b"GET /metrics HTTP/1.1\r\nHost: 127.1\r\n", 403),
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\n", 403),
        (b"GET /metrics HTTP/1.1\r\nHost: ::1\r\n", 403),
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:\r\n", 403),
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9:9\r\n", 403),
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n", 400),
        (b"GET /metrics HTTP/1.0\r\n", 403),
        (b"GET http://127.0.0.1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n", 403),
        (b"GET /metrics/ HTTP/1.1\r\nHost: 127.0.0.1\r\n", 404),
    ]
    for head, want in cases:
        status, body = raw_exchange(mport, head + end)
        assert status == want, (head, status, body)
        assert (b"agora_server" in body) == (want == 200), head
    outside = own_outside_address()
    if outside is None:
        pytest.skip("no non-loopback address on this machine")
    for forged in (b"X-Forwarded-For: 127.0.0.1\r\n", b"Forwarded: for=127.0.0.1\r\n", b"X-Real-IP: 127.0.0.1\r\n"):
        status, body = raw_exchange(mport, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n" + forged + end, outside)
        assert status == 403 and b"agora_server" not in body, forged


def test_token_only_in_the_authorization_header(start):
    token = "t0ken-0123456789abcdef0123456789"
    srv, mport = start(token=token)
    end = b"Connection: close\r\n\r\n"
    for head in (b"GET /metrics?token=" + token.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                 b"GET /metrics?access_token=" + token.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                 b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: token=" + token.encode() + b"\r\n",
                 b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic " + token.encode() + b"\r\n",
                 b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token[:-1].encode() + b"\r\n",
                 b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode() + b"x\r\n"):
        status, body = raw_exchange(mport, head + end)
        assert status == 401 and b"agora_server" not in body, head
    status, body = raw_exchange(mport, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: bearer " +
                                token.encode() + b"\r\n" + end)
    assert status == 200 and b"agora_server_requests_total" in body
