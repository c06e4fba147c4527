"""agora lb: per-address limits and the retry budget.

--rate-limit R --rate-burst B: a token bucket per client address (B tokens, R added per second);
a request that finds it empty gets 429 with Retry-After (whole seconds until a token is there,
at least 1) and the connection stays usable. --max-conns-per-ip N: the (N+1)th concurrent
connection from one address gets a fixed 503 "too many connections from your address\\n" and is
closed; closing one lets the next one in. Both are off by default.

The retry budget (--retry-budget P): a request that may have reached a backend is retried only
while the worker's budget holds a whole retry; the budget starts at 10 retries and every request
earns P/100 of one (at most 100 are saved). Without it, a backend outage would multiply the
traffic by 1 + --retries. Here three backends reset every /reset request after reading it, so
every attempt fails after sending and each retry must come out of the budget; the backends'
--record files count the attempts exactly. Passive health is off so that no server is ejected.
"""

import time

import pytest

from helpers import LOCALHOST, RawConnection, http_request, record_lines, wait_for

TOO_MANY_CONNS = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 39\r\n"
                  b"Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections from your address\n")


def get_on(conn, path="/"):
    conn.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    return conn.read_response()


# ---------------------------------------------------------------- rate limit


def test_rate_limit_answers_429_past_the_burst_then_recovers(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--rate-limit", "5", "--rate-burst", "5")
    # Starting the balancer polled /stats from this address, which spends tokens too: let the
    # bucket fill up again (5 tokens at 5 per second).
    time.sleep(1.2)

    with RawConnection(lb.port) as conn:
        answers = [get_on(conn) for _ in range(6)]
        assert [status for status, _, _ in answers] == [200] * 5 + [429]
        status, headers, body = answers[5]
        assert body == b"too many requests from your address: slow down\n"
        # An empty bucket refills at 5 tokens/s: the next token is at most 0.2 s away, which
        # rounds up to the minimum of one second.
        assert headers["retry-after"] == "1"
        assert "connection" not in headers  # the connection stays usable
        assert "x-backend" not in headers

        time.sleep(int(headers["retry-after"]))
        status, headers, body = get_on(conn)
        assert (status, headers["x-backend"], body) == (200, "A", b"hello from A\n")


def test_rate_limit_is_per_address_and_off_by_default(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    lb = lb_factory([backend])
    with RawConnection(lb.port) as conn:
        assert [get_on(conn)[0] for _ in range(50)] == [200] * 50


# ---------------------------------------------------------------- connections per address


def open_serving_connection(port):
    """A connection the balancer accepted and answered a request on, or None if it was refused."""
    conn = RawConnection(port)
    try:
        status, _, _ = get_on(conn)
    except (EOFError, ConnectionError, ValueError):
        conn.close()
        return None
    if status != 200:
        conn.close()
        return None
    return conn


def test_connections_per_address_are_capped(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--max-conns-per-ip", "3")

    conns = []
    try:
        # The balancer counts a connection until it has seen it close: connections made while
        # starting it may still be counted for a moment, hence the bounded retry.
        for _ in range(3):
            conn = wait_for(lambda: open_serving_connection(lb.port), timeout=5.0, interval=0.05)
            assert conn, "could not open connection %d of 3" % (len(conns) + 1)
            conns.append(conn)

        # The fourth is refused at once, without a request being read, and closed.
        with RawConnection(lb.port) as fourth:
            assert fourth.read_until_closed() == TOO_MANY_CONNS

        # The three accepted ones still work.
        assert [get_on(c)[0] for c in conns] == [200, 200, 200]

        # Closing one lets a new one in.
        conns.pop().close()
        conn = wait_for(lambda: open_serving_connection(lb.port), timeout=5.0, interval=0.05)
        assert conn
        conns.append(conn)
        with RawConnection(lb.port) as fifth:
            assert fifth.read_until_closed() == TOO_MANY_CONNS
    finally:
        for c in conns:
            c.close()


# ---------------------------------------------------------------- retry budget

N = 50
RETRIES = 2


def expected_attempts(n, percent, retries=RETRIES, initial_retries=10):
    """Backend attempts for n requests that all fail after sending, done one after another on
    one worker: each request earns percent/100 of a retry (in thousandths, as the balancer
    counts), then spends one whole retry per extra attempt while the budget has one."""
    milli, attempts = initial_retries * 1000, 0
    for _ in range(n):
        milli = min(milli + percent * 10, 100_000)
        attempts += 1
        for _ in range(retries):
            if milli < 1000:
                break
            milli -= 1000
            attempts += 1
    return attempts


def test_expected_attempts_arithmetic():
    # 20%: the 10 initial retries go to the first requests (2 each), then one retry per 5
    # requests: 10 + 50 * 0.2 = 20 retries.
    assert expected_attempts(50, 20) == 50 + 20
    assert expected_attempts(50, 0) == 50 + 10
    assert expected_attempts(50, 20, initial_retries=0) == 50 + 10
    assert expected_attempts(50, 100) == 50 + 10 * 2 + 40 * 1
    # No budget at all: every request tried on 1 + --retries servers.
    assert expected_attempts(50, 100, initial_retries=100) == 50 * 3


@pytest.fixture
def resetting_lb(testbackend_factory, lb_factory, tmp_path):
    """start(budget_percent) -> (lb, record paths): three backends behind one worker, every
    /reset request resets its connection after being recorded."""

    def start(*flags):
        paths = [tmp_path / ("%s.txt" % name) for name in "ABC"]
        backends = [testbackend_factory(name, "--record", str(p)) for name, p in zip("ABC", paths)]
        lb = lb_factory(backends, "--health-path", "/hc", "--passive-health", "off", "--retries", str(RETRIES),
                        "--workers", "1", *flags)
        return lb, paths

    return start


def attempts_for(lb, paths, n=N):
    statuses = [http_request(LOCALHOST, lb.port, "GET", "/reset")[0] for _ in range(n)]
    assert statuses == [502] * n
    return sum(1 for p in paths for line in record_lines(p) if line == "GET /reset")


def test_retry_budget_bounds_retries_after_sending(resetting_lb):
    lb, paths = resetting_lb("--retry-budget", "20")
    attempts = attempts_for(lb, paths)
    # At most N + 10 + 20% of N, far below the 3N that retrying everything would send.
    assert N <= attempts <= N + 10 + N * 20 // 100
    assert attempts < 3 * N


@pytest.mark.parametrize("percent", [20, 100])
def test_retry_budget_exact_count(resetting_lb, percent):
    lb, paths = resetting_lb("--retry-budget", str(percent))
    assert attempts_for(lb, paths) == expected_attempts(N, percent)


def test_budget_without_earnings_spends_only_the_initial_retries(resetting_lb):
    # --retry-budget 0 earns nothing: the initial 10 retries go to the first 5 requests (2 each),
    # then no failed request is tried again.
    lb, paths = resetting_lb("--retry-budget", "0")
    assert attempts_for(lb, paths) == expected_attempts(N, 0) == N + 10


def test_one_address_holds_at_most_1000_connections_by_default(testbackend_factory, lb_factory):
    """The review of issue 9 took the site down with 9,700 idle connections from one address (every
    descriptor the balancer may use); by default one address holds at most 1,000 and the next is
    refused with 503 at once, while other clients... (here: the same address after some close)
    are served."""
    import socket
    from test_ft_c10k import ensure_fd_limit, close_all
    ensure_fd_limit(4096)
    lb = lb_factory([testbackend_factory("A")])
    socks = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection((LOCALHOST, lb.port), timeout=5.0))
        # every one of them accepted and counted: a request on the last one is served
        socks[-1].sendall(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        assert socks[-1].recv(65536).startswith(b"HTTP/1.1 200 ")
        with RawConnection(lb.port) as extra:
            assert extra.read_until_closed() == TOO_MANY_CONNS
        close_all(socks[:10])
        del socks[:10]
        conn = wait_for(lambda: open_serving_connection(lb.port), timeout=5.0, interval=0.05)
        assert conn
        conn.close()
    finally:
        close_all(socks)
