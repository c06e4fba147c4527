"""agora lb: GET /metrics on the admin listener, the Prometheus text format (issue 13, item 1).

Exact counter values after a known sequence of requests through round-robin (slow start off, so
the split is exact), the histogram's invariants, `promtool check metrics` (Debian's prometheus
package) on the output, the balancer's own answers and retries against a server that refuses
connections, and the admin API's rules (token, Host) applied to /metrics too.
"""

import shutil
import subprocess

import pytest

from helpers import LOCALHOST, admin_request, admin_token, free_port, http_request, metric, parse_metrics


def scrape(admin_port, token=None):
    """GET /metrics -> (status, headers, text)."""
    tok = token if token is not None else admin_token(admin_port)
    status, headers, body = http_request(LOCALHOST, admin_port, "GET", "/metrics",
                                         headers={"Authorization": "Bearer " + tok})
    return status, headers, body.decode()


parse = parse_metrics
value = metric


def addr(backend):
    return "%s:%d" % (LOCALHOST, backend.port)


@pytest.fixture
def two_and_admin(testbackend_factory, lb_factory):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    admin_port = free_port()
    lb = lb_factory([a, b], "--policy", "round-robin", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
                    "--health-interval", "60s")
    return lb, admin_port, a, b


def test_counts_after_known_requests(two_and_admin):
    lb, admin_port, a, b = two_and_admin
    paths = ["/"] * 6 + ["/status?code=404"] * 2 + ["/status?code=500"] * 2 + ["/bytes?n=1000"] * 2
    for p in paths:
        http_request(LOCALHOST, lb.port, "GET", p)
    status, headers, text = scrape(admin_port)
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = parse(text)
    assert value(m, "agora_lb_servers") == 2
    for s in (addr(a), addr(b)):
        # round-robin alternates: each server got half of every kind of request
        assert value(m, "agora_lb_server_requests_total", server=s) == 6
        assert value(m, "agora_lb_server_responses_total", server=s, code="2xx") == 4
        assert value(m, "agora_lb_server_responses_total", server=s, code="4xx") == 1
        assert value(m, "agora_lb_server_responses_total", server=s, code="5xx") == 1
        assert value(m, "agora_lb_server_responses_total", server=s, code="1xx") == 0
        assert value(m, "agora_lb_server_responses_total", server=s, code="3xx") == 0
        assert value(m, "agora_lb_server_errors_total", server=s) == 1  # the 5xx
        assert value(m, "agora_lb_server_in_flight", server=s) == 0
        assert value(m, "agora_lb_server_up", server=s) == 1
        assert value(m, "agora_lb_server_ejected", server=s) == 0
        assert value(m, "agora_lb_server_weight", server=s) == 1
        assert value(m, "agora_lb_server_admin_state", server=s, state="active") == 1
        assert value(m, "agora_lb_server_admin_state", server=s, state="draining") == 0
        assert value(m, "agora_lb_server_retries_total", server=s) == 0
        assert value(m, "agora_lb_server_connect_failures_total", server=s) == 0
        # one keep-alive connection per server, back in its pool between requests
        assert value(m, "agora_lb_server_connections", server=s, state="open") == 1
        assert value(m, "agora_lb_server_connections", server=s, state="idle") == 1
        # the histogram: cumulative, ends in +Inf, counts every response head
        buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items()
                          if k[0] == "agora_lb_server_response_seconds_bucket" and ("server", s) in k[1]))
        assert len(buckets) == 15 and buckets[-1][0] == float("inf")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        assert buckets[-1][1] == 6
        assert value(m, "agora_lb_server_response_seconds_count", server=s) == 6
        assert 0 < value(m, "agora_lb_server_response_seconds_sum", server=s) < 6 * 5.0
        # each request head went out, and 1000 body bytes came back for the /bytes one (plus heads)
        assert value(m, "agora_lb_server_sent_bytes_total", server=s) > 6 * len("GET / HTTP/1.1\r\n\r\n")
        assert value(m, "agora_lb_server_received_bytes_total", server=s) > 1000
    assert sum(v for k, v in m.items() if k[0] == "agora_lb_answers_total") == 0
    assert value(m, "agora_lb_retry_budget_refusals_total") == 0
    assert value(m, "agora_lb_reloads_total") == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is not installed")
def test_promtool_accepts_the_output(two_and_admin):
    lb, admin_port, _, _ = two_and_admin
    for _ in range(4):
        http_request(LOCALHOST, lb.port, "GET", "/")
    status, _, text = scrape(admin_port)
    assert status == 200
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_connect_failures_retries_and_own_answers(testbackend_factory, lb_factory):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    admin_port = free_port()
    # Health checks once a minute: after the first (both up), only passive health notices B go.
    lb = lb_factory([a, b], "--policy", "round-robin", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
                    "--health-interval", "60s")
    b.stop()
    for _ in range(6):
        st, hdrs, _ = http_request(LOCALHOST, lb.port, "GET", "/")
        assert st == 200 and hdrs["x-backend"] == "A"
    m = parse(scrape(admin_port)[2])
    # Round-robin sent the second request to B: its connect failed, B was ejected at once (the
    # default), and the request was retried on A. Nothing else went to B.
    assert value(m, "agora_lb_server_requests_total", server=addr(b)) == 1
    assert value(m, "agora_lb_server_connect_failures_total", server=addr(b)) == 1
    assert value(m, "agora_lb_server_retries_total", server=addr(b)) == 1
    assert value(m, "agora_lb_server_ejections_total", server=addr(b)) == 1
    assert value(m, "agora_lb_server_ejected", server=addr(b)) == 1
    assert value(m, "agora_lb_server_connections", server=addr(b), state="open") == 0
    assert value(m, "agora_lb_server_requests_total", server=addr(a)) == 6
    assert value(m, "agora_lb_server_responses_total", server=addr(a), code="2xx") == 6
    assert value(m, "agora_lb_server_retries_total", server=addr(a)) == 0
    assert sum(v for k, v in m.items() if k[0] == "agora_lb_answers_total") == 0
    # Now nothing can answer: the balancer answers itself (502, or 503 once no server is usable)
    # and counts each answer under its status.
    a.stop()
    answers = {}
    for _ in range(3):
        st, _, _ = http_request(LOCALHOST, lb.port, "GET", "/")
        assert st in (502, 503)
        answers[st] = answers.get(st, 0) + 1
    m = parse(scrape(admin_port)[2])
    for code in ("502", "503"):
        assert value(m, "agora_lb_answers_total", code=code) == answers.get(int(code), 0)
    assert sum(v for k, v in m.items() if k[0] == "agora_lb_answers_total") == 3


def test_refused_without_token_or_with_foreign_host(two_and_admin):
    _, admin_port, _, _ = two_and_admin
    st, _, body = http_request(LOCALHOST, admin_port, "GET", "/metrics")
    assert st == 401
    assert b"agora_lb" not in body
    st, _, body = http_request(LOCALHOST, admin_port, "GET", "/metrics",
                               headers={"Authorization": "Bearer " + admin_token(admin_port),
                                        "Host": "evil.example"})
    assert st in (403, 421)
    assert b"agora_lb" not in body
    st, _ = admin_request(admin_port, "POST", "/metrics", body={})
    assert st == 405


def test_http_layer_answers_and_client_connections(two_and_admin):
    lb, admin_port, _, _ = two_and_admin
    from helpers import RawConnection

    held = [RawConnection(lb.port) for _ in range(5)]
    try:
        for c in held:  # each completes one request and stays open
            c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert c.read_response()[0] == 200
        m = parse(scrape(admin_port)[2])
        assert value(m, "agora_lb_client_connections") == 5
        # answers made by the HTTP layer before the balancer sees a request
        with RawConnection(lb.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
            assert c.read_response()[0] == 431
        with RawConnection(lb.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
            assert c.read_response()[0] == 400
        with RawConnection(lb.port) as c:
            c.send(b"GET / HTTP/9.9\r\nHost: t\r\n\r\n")
            assert c.read_response()[0] == 505
        m = parse(scrape(admin_port)[2])
        assert value(m, "agora_lb_answers_total", code="431") == 1
        assert value(m, "agora_lb_answers_total", code="400") == 1
        assert value(m, "agora_lb_answers_total", code="505") == 1
        assert sum(v for k, v in m.items() if k[0] == "agora_lb_answers_total") == 3
    finally:
        for c in held:
            c.close()
    from helpers import wait_for

    assert wait_for(lambda: value(parse(scrape(admin_port)[2]), "agora_lb_client_connections") == 0, 5)
