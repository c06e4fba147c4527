"""agora lb: HTTP/1.1 proxying done right, observed from both ends.

The testbackend's /echo answers with the request exactly as it arrived (method, target,
version, header list in order, body length), so each test states the complete request the
backend must see. Also: keep-alive reuse of backend connections (X-Conn-Id / X-Conn-Seq), HEAD,
204/304, Expect: 100-continue, HTTP/1.0 clients and pipelining.
"""

import http.client
import json
import re
import threading

import pytest

from helpers import LOCALHOST, RawConnection, http_request, lb_stats, parse_responses, pattern_bytes, wait_for


def echo(port, method="GET", target="/echo", headers=(), body=b"", version="HTTP/1.1", host="lb.test"):
    """Sends one request with exactly these header lines on a new connection; returns the
    parsed /echo document."""
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: " + host)
    lines += ["%s: %s" % hv for hv in headers]
    if body:
        lines.append("Content-Length: %d" % len(body))
    with RawConnection(port) as conn:
        conn.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status, _, data = conn.read_response()
    assert status == 200, data
    return json.loads(data)


@pytest.fixture
def one_backend(testbackend_factory, lb_factory):
    """A balancer with one backend A: (lb, backend)."""
    backend = testbackend_factory("A")
    return lb_factory([backend]), backend


# ---------------------------------------------------------------- request headers


def without_request_id(headers):
    """headers less the one X-Request-Id the balancer adds last (32 hex digits, made by it)."""
    assert headers[-1][0] == "X-Request-Id" and re.fullmatch(r"[0-9a-f]{32}", headers[-1][1]), headers
    assert [n for n, _ in headers].count("X-Request-Id") == 1
    return headers[:-1]


def test_end_to_end_headers_kept_hop_by_hop_removed(one_backend):
    lb, _ = one_backend
    doc = echo(lb.port, target="/echo?q=1&r=%20x", host="app.example:8080", headers=[
        ("Connection", "keep-alive, X-Hop-Custom"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
        ("X-Hop-Custom", "secret"),
        ("X-End-To-End", "kept"),
        ("X-Dup", "1"),
        ("Accept", "*/*"),
        ("X-Dup", "2"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
    ])
    assert doc["method"] == "GET"
    assert doc["target"] == "/echo?q=1&r=%20x"
    assert doc["version"] == "HTTP/1.1"
    # By default a client's X-Forwarded-For is not trusted: replaced by the client's address.
    assert without_request_id(doc["headers"]) == [
        ["Host", "app.example:8080"],
        ["X-End-To-End", "kept"],
        ["X-Dup", "1"],
        ["Accept", "*/*"],
        ["X-Dup", "2"],
        ["X-Forwarded-For", "127.0.0.1"],
        ["X-Forwarded-Proto", "http"],
    ]


def test_forwarded_for_is_appended_when_trusted(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--trust-forwarded", "on")

    doc = echo(lb.port, headers=[("X-Forwarded-For", "203.0.113.9, 198.51.100.7"),
                                 ("X-Forwarded-Proto", "https")])
    assert without_request_id(doc["headers"]) == [
        ["Host", "lb.test"],
        ["X-Forwarded-For", "203.0.113.9, 198.51.100.7, 127.0.0.1"],
        ["X-Forwarded-Proto", "http"],
    ]
    doc = echo(lb.port)
    assert without_request_id(doc["headers"]) == [
        ["Host", "lb.test"], ["X-Forwarded-For", "127.0.0.1"], ["X-Forwarded-Proto", "http"]]


def test_missing_host_gets_the_backend_address(one_backend):
    lb, backend = one_backend
    doc = echo(lb.port, version="HTTP/1.0", host=None)
    # The backend always gets HTTP/1.1 with a Host.
    assert doc["version"] == "HTTP/1.1"
    assert doc["headers"][0] == ["Host", "127.0.0.1:%d" % backend.port]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_every_method_reaches_the_backend_intact(one_backend, method):
    lb, _ = one_backend
    body = b"payload-for-" + method.encode() if method in ("POST", "PUT", "PATCH") else b""
    doc = echo(lb.port, method=method, target="/echo?m=%s" % method.lower(), body=body)
    assert (doc["method"], doc["target"]) == (method, "/echo?m=%s" % method.lower())
    assert (doc["body_length"], doc["body_prefix"]) == (len(body), body.decode())


# ---------------------------------------------------------------- response headers and bodies


def test_backend_connection_close_is_not_passed_to_the_client(one_backend):
    lb, _ = one_backend
    conn = http.client.HTTPConnection(LOCALHOST, lb.port, timeout=5)
    try:
        conn.request("GET", "/close")  # the backend answers with Connection: close
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"closing\n")
        assert resp.getheader("Connection") is None
        first_conn = resp.getheader("X-Conn-Id")
        assert not resp.will_close
        conn.request("GET", "/")  # same client connection
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"hello from A\n")
        # ...served on a new backend connection: the closed one was not reused.
        assert resp.getheader("X-Conn-Id") != first_conn
        assert resp.getheader("X-Conn-Seq") == "1"
    finally:
        conn.close()


def test_head_response_has_headers_but_no_body(one_backend):
    lb, _ = one_backend
    with RawConnection(lb.port) as conn:
        conn.send(b"HEAD /bytes?n=1000 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"HEAD /bytes?n=1000&chunked=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /bytes?n=12 HTTP/1.1\r\nHost: t\r\n\r\n")
        (s1, h1, b1), (s2, h2, b2) = [conn.read_response(head=True) for _ in range(2)]
        s3, h3, b3 = conn.read_response()
    assert (s1, h1["content-length"], b1) == (200, "1000", b"")
    # (Transfer-Encoding: chunked may be left out of a HEAD response, RFC 9112 6.1.)
    assert (s2, h2.get("transfer-encoding", "chunked"), "content-length" in h2, b2) == (200, "chunked", False, b"")
    # Had any body bytes followed the HEAD responses, this response would be garbled.
    assert (s3, b3) == (200, b"012345678901")


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_statuses(one_backend, code):
    lb, _ = one_backend
    with RawConnection(lb.port) as conn:
        conn.send(b"GET /status?code=%d HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n" % code)
        status, headers, _ = conn.read_response()
        assert status == code
        assert "transfer-encoding" not in headers
        assert headers.get("content-length", "0") == "0"
        assert conn.read_response()[::2] == (200, b"hello from A\n")


def test_backend_error_statuses_pass_through(one_backend):
    lb, _ = one_backend
    for code in (404, 500, 503):
        status, headers, body = http_request(LOCALHOST, lb.port, "GET", "/status?code=%d" % code)
        assert (status, headers["x-backend"]) == (code, "A")
        assert body == b"%d %s\n" % (code, http.client.responses[code].encode())


# ---------------------------------------------------------------- connection handling


def test_expect_100_continue(one_backend):
    lb, _ = one_backend
    with RawConnection(lb.port) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        assert conn.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.send(b"hello world")
        status, _, body = conn.read_response()
    doc = json.loads(body)
    assert status == 200
    assert (doc["method"], doc["body_length"], doc["body_prefix"]) == ("POST", 11, "hello world")


def test_http10_client_gets_close_semantics(one_backend):
    lb, _ = one_backend
    with RawConnection(lb.port) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        data = conn.read_until_closed()  # the balancer closes after the response
    [(status, headers, body)] = parse_responses(data)
    assert (status, body) == (200, b"hello from A\n")
    assert headers["connection"] == "close"

    # A chunked backend response reaches an HTTP/1.0 client unchunked, ended by the close.
    with RawConnection(lb.port) as conn:
        conn.send(b"GET /bytes?n=100000&chunked=1 HTTP/1.0\r\n\r\n")
        data = conn.read_until_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert body == pattern_bytes(0, 100000)


def test_http10_keep_alive(one_backend):
    lb, _ = one_backend
    with RawConnection(lb.port) as conn:
        conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = conn.read_response()
        assert (status, headers["connection"].lower(), body) == (200, "keep-alive", b"hello from A\n")
        conn.send(b"GET /echo HTTP/1.0\r\n\r\n")
        status, headers, body = conn.read_response()
        assert (status, json.loads(body)["method"]) == (200, "GET")
        assert conn.read_until_closed() == b""


def test_pipelined_requests_are_answered_in_order(testbackend_factory, lb_factory):
    backends = [testbackend_factory(name) for name in "ABC"]
    lb = lb_factory(backends, "--policy", "round-robin")
    with RawConnection(lb.port) as conn:
        conn.send(b"GET /delay?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody"
                  b"HEAD /bytes?n=5 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /status?code=201 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = conn.read_until_closed()
    responses = parse_responses(data, head=(2,))
    assert [(s, b) for s, _, b in responses][:1] == [(200, b"delayed 300 ms\n")]
    assert json.loads(responses[1][2])["body_prefix"] == "body"
    assert [(s, h.get("content-length"), b) for s, h, b in responses[2:]] == [
        (200, "5", b""), (201, "12", b"201 Created\n")]


def test_pipelined_requests_then_half_close_are_all_answered(testbackend_factory, lb_factory):
    """Regression: a client that pipelines requests and then half-closes (shutdown(SHUT_WR), as
    `nc -N` does) got only the first answer; the others, already sent, were dropped. Every
    request sent before the end of the stream is answered, in order; the last answer says
    Connection: close and the connection closes after it."""
    lb = lb_factory([testbackend_factory("A")])
    n = 8
    with RawConnection(lb.port) as conn:
        conn.send(b"".join(b"GET /delay?ms=20&i=%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(n)))
        conn.shutdown_write()
        data = conn.read_until_closed(timeout=10)
    responses = parse_responses(data)
    assert [(s, b) for s, _, b in responses] == [(200, b"delayed 20 ms\n")] * n
    assert responses[-1][1].get("connection") == "close"
    assert all(h.get("connection") != "close" for _, h, _ in responses[:-1])


# ---------------------------------------------------------------- keep-alive to backends


def test_one_client_connection_reuses_one_backend_connection(one_backend):
    lb, _ = one_backend
    conn = http.client.HTTPConnection(LOCALHOST, lb.port, timeout=5)
    seen = []
    try:
        for _ in range(10):
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"hello from A\n")
            seen.append((resp.getheader("X-Conn-Id"), int(resp.getheader("X-Conn-Seq"))))
    finally:
        conn.close()
    ids = {conn_id for conn_id, _ in seen}
    assert len(ids) == 1
    assert [seq for _, seq in seen] == list(range(1, 11))


def test_backend_connections_are_pooled_across_clients(testbackend_factory, lb_factory):
    backends = [testbackend_factory(name) for name in "ABC"]
    lb = lb_factory(backends)
    clients, per_client = 4, 25
    seen, errors = [], []

    def client():
        try:
            for _ in range(per_client):  # a new client connection for every request
                status, headers, _ = http_request(LOCALHOST, lb.port, "GET", "/")
                seen.append((status, headers["x-backend"], headers["x-conn-id"]))
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert len(seen) == clients * per_client and {s for s, _, _ in seen} == {200}
    # A backend connection is opened only when the pool has none idle for that server, i.e. when
    # all of them are busy: never more per server than requests in flight (at most `clients`).
    for name in "ABC":
        ids = {conn_id for _, n, conn_id in seen if n == name}
        assert len(ids) <= clients, (name, len(ids))
    assert len({(n, i) for _, n, i in seen}) <= 3 * clients  # vs. 100 requests
    assert wait_for(lambda: set(lb_stats(lb.port)["connections"].values()) == {0}, 5)
