"""Integration tests for build/testbackend (tests/support/testbackend.c), the HTTP/1.1 origin
server that the load-balancer tests and benchmarks put behind `agora lb`, HAProxy and nginx.

Every endpoint is checked with exact expectations, plus keep-alive, pipelining, chunked and
100-continue uploads, HTTP/1.0, malformed requests and each command-line option.
Run: make build/testbackend && /usr/bin/python3 -m pytest tests/integration/test_testbackend.py
"""

import http.client
import json
import signal
import threading
import time

import pytest

from helpers import (
    LOCALHOST,
    RawConnection,
    free_port,
    http_request,
    parse_responses,
    pattern_bytes,
    raw_exchange,
    start_process,
    start_testbackend,
    wait_for,
)

MB = 1024 * 1024


def req(method, target, headers=(), body=b"", version="HTTP/1.1", host="test"):
    """Raw request bytes. headers is a sequence of (name, value); a Content-Length is added for a
    non-empty body unless headers already frame it."""
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: " + host)
    names = {n.lower() for n, _ in headers}
    lines += ["%s: %s" % hv for hv in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def record_lines(path):
    try:
        with open(path, encoding="latin-1") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@pytest.fixture(scope="module")
def binary(build_dir):
    path = build_dir / "testbackend"
    if not path.exists():
        pytest.fail("%s is missing: run `make build/testbackend` first" % path)
    return path


@pytest.fixture(scope="module")
def backend(binary, build_dir, tmp_path_factory):
    """One backend named tb1 shared by the tests that do not need special options; it records
    requests to backend.record (a path)."""
    record = tmp_path_factory.mktemp("tb1") / "record.txt"
    proc = start_testbackend(build_dir, "--record", record, name="tb1")
    proc.record = record
    yield proc
    assert proc.stop() == 0, proc.output()


@pytest.fixture
def start(binary, build_dir):
    """Starts extra backends for one test and stops them afterwards (checking they exit 0)."""
    procs = []

    def _start(*args, name=None):
        proc = start_testbackend(build_dir, *args, name=name)
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        if proc.poll() is None:
            assert proc.stop() == 0, proc.output()


def get(proc, path, method="GET", headers=None, body=None):
    return http_request(LOCALHOST, proc.port, method, path, headers, body)


def assert_backend_headers(headers, name, seq):
    assert headers["x-backend"] == name
    assert headers["x-conn-seq"] == str(seq)
    assert headers["x-conn-id"].isdigit() and int(headers["x-conn-id"]) >= 1


# ---------------------------------------------------------------- basic endpoints


def test_root_says_hello_with_exact_headers(backend):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/"))
        status, headers, body = c.read_response()
    assert status == 200
    assert body == b"hello from tb1\n"
    conn_id = headers["x-conn-id"]
    assert conn_id.isdigit()
    assert headers == {
        "content-type": "text/plain",
        "content-length": "15",
        "x-backend": "tb1",
        "x-conn-seq": "1",
        "x-conn-id": conn_id,
    }


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/no/such/path", "/healthz", "/echo/extra"])
def test_any_method_and_unknown_path_say_hello(backend, method, path):
    status, headers, body = get(backend, path, method, body=b"x" if method in ("POST", "PUT") else None)
    assert (status, body) == (200, b"hello from tb1\n")
    assert_backend_headers(headers, "tb1", 1)


def test_default_name_is_host_and_port(start):
    proc = start()
    status, headers, body = get(proc, "/")
    assert status == 200
    assert body == ("hello from 127.0.0.1:%d\n" % proc.port).encode()
    assert headers["x-backend"] == "127.0.0.1:%d" % proc.port


def test_explicit_port_and_host(binary):
    port = free_port()
    proc = start_process([binary, "--port", port, "--host", "127.0.0.1", "--name", "fixed"], "listening on")
    try:
        assert "listening on 127.0.0.1:%d\n" % port in proc.output()
        assert http_request(LOCALHOST, port, "GET", "/")[2] == b"hello from fixed\n"
    finally:
        assert proc.stop() == 0


def test_health_ok(backend):
    status, headers, body = get(backend, "/health")
    assert (status, body) == (200, b"ok")
    assert headers["content-length"] == "2"
    assert_backend_headers(headers, "tb1", 1)


def test_health_file_turns_health_503_while_it_exists(start, tmp_path):
    flag = tmp_path / "down"
    proc = start("--health-file", flag, name="hf")
    assert get(proc, "/health")[::2] == (200, b"ok")
    flag.write_text("")
    status, headers, body = get(proc, "/health")
    assert (status, body) == (503, b"unavailable")
    assert headers["x-backend"] == "hf"
    assert get(proc, "/")[::2] == (200, b"hello from hf\n")  # only /health is affected
    flag.unlink()
    assert get(proc, "/health")[::2] == (200, b"ok")


def test_echo_reports_request_exactly(backend):
    with RawConnection(backend.port) as c:
        c.send(
            b"POST /echo?q=1&r=%20 HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 10.0.0.1\r\n"
            b"X-Multi: a\r\nx-multi:   b  \r\nContent-Length: 5\r\n\r\nhello"
        )
        status, headers, body = c.read_response()
        local_port = c.sock.getsockname()[1]
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {
        "method": "POST",
        "target": "/echo?q=1&r=%20",
        "version": "HTTP/1.1",
        "peer": "127.0.0.1:%d" % local_port,
        "headers": [
            ["Host", "example.test"],
            ["X-Forwarded-For", "10.0.0.1"],
            ["X-Multi", "a"],
            ["x-multi", "b"],
            ["Content-Length", "5"],
        ],
        "body_length": 5,
        "chunked": False,
        "body_prefix": "hello",
    }


def test_echo_keeps_first_64_body_bytes_and_escapes(backend):
    body = bytes(range(256)) * 4
    status, _, data = get(backend, "/echo", "PUT", {"X-Odd": 'caf\xe9 "q" \\'}, body)
    doc = json.loads(data)
    assert status == 200
    assert doc["method"] == "PUT"
    assert doc["body_length"] == 1024
    assert doc["body_prefix"] == bytes(range(64)).decode("latin-1")
    assert ["X-Odd", 'caf\xe9 "q" \\'] in doc["headers"]


def test_echo_chunked_body_with_extensions_and_trailers(backend):
    chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    with RawConnection(backend.port) as c:
        c.send(req("POST", "/echo", [("Transfer-Encoding", "chunked")], chunked) + req("GET", "/"))
        status, headers, body = c.read_response()
        doc = json.loads(body)
        second = c.read_response()
    assert status == 200
    assert (doc["body_length"], doc["chunked"], doc["body_prefix"]) == (11, True, "hello world")
    assert ["Transfer-Encoding", "chunked"] in doc["headers"]
    assert second[0] == 200 and second[2] == b"hello from tb1\n"
    assert second[1]["x-conn-seq"] == "2"


def test_echo_absolute_form_target(backend):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "http://example.test/echo?x=1", host="example.test"))
        status, _, body = c.read_response()
    assert status == 200
    assert json.loads(body)["target"] == "http://example.test/echo?x=1"


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 1000, 131072, 131073, 1000003])
def test_bytes_content_length(backend, n):
    status, headers, body = get(backend, "/bytes?n=%d" % n)
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-length"] == str(n)
    assert "transfer-encoding" not in headers
    assert body == pattern_bytes(0, n)


@pytest.mark.parametrize("n", [0, 7, 131072, 300001])
def test_bytes_chunked(backend, n):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/bytes?n=%d&chunked=1" % n) + req("GET", "/"))
        status, headers, body = c.read_response()
        assert c.read_response()[2] == b"hello from tb1\n"  # framing ended exactly
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert body == pattern_bytes(0, n)


def test_bytes_chunked_zero_is_just_the_last_chunk(backend):
    data = raw_exchange(backend.port, req("GET", "/bytes?n=0&chunked=1", [("Connection", "close")]))
    assert data.endswith(b"\r\n\r\n0\r\n\r\n")


@pytest.mark.parametrize("chunked", [False, True])
def test_bytes_large_is_streamed_exactly(backend, chunked):
    n = 50 * MB
    conn = http.client.HTTPConnection(LOCALHOST, backend.port, timeout=30)
    try:
        conn.request("GET", "/bytes?n=%d%s" % (n, "&chunked=1" if chunked else ""))
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Length") == (None if chunked else str(n))
        total = 0
        while True:
            block = resp.read(MB)
            if not block:
                break
            assert block == pattern_bytes(total, len(block))
            total += len(block)
        assert total == n
    finally:
        conn.close()


@pytest.mark.parametrize(
    "target, message",
    [
        ("/bytes", "/bytes needs n=0..1099511627776"),
        ("/bytes?n=abc", "/bytes needs n=0..1099511627776"),
        ("/bytes?n=-1", "/bytes needs n=0..1099511627776"),
        ("/bytes?n=5&chunked=yes", "chunked must be 0 or 1"),
        ("/status", "/status needs code=200..599"),
        ("/status?code=99", "/status needs code=200..599"),
        ("/status?code=600", "/status needs code=200..599"),
        ("/delay?ms=x", "/delay needs ms=0..600000"),
        ("/delay?ms=600001", "/delay needs ms=0..600000"),
    ],
)
def test_bad_parameters_answer_400_and_keep_the_connection(backend, target, message):
    with RawConnection(backend.port) as c:
        c.send(req("GET", target) + req("GET", "/"))
        status, headers, body = c.read_response()
        second = c.read_response()
    assert (status, body) == (400, ("Bad Request: %s\n" % message).encode())
    assert "connection" not in headers
    assert (second[0], second[1]["x-conn-seq"]) == (200, "2")


def test_sink_content_length_50mb(backend):
    n = 50 * MB
    block = b"x" * MB
    with RawConnection(backend.port, timeout=30) as c:
        c.send(req("POST", "/sink", [("Content-Length", str(n))]))
        for _ in range(n // MB):
            c.send(block)
        status, headers, body = c.read_response()
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body == b'{"received": 52428800, "chunked": false}\n'
    assert json.loads(body) == {"received": n, "chunked": False}


def test_sink_chunked_upload(backend):
    blocks = [b"a" * 65536, b"b" * 1, b"c" * 1000000] * 10

    status, _, body = http_request(LOCALHOST, backend.port, "PUT", "/sink", body=iter(blocks), timeout=30)
    assert status == 200
    assert json.loads(body) == {"received": sum(map(len, blocks)), "chunked": True}


def test_sink_without_body(backend):
    assert get(backend, "/sink")[::2] == (200, b'{"received": 0, "chunked": false}\n')


def test_expect_100_continue_comes_before_the_body_is_sent(backend):
    with RawConnection(backend.port) as c:
        c.send(req("POST", "/sink", [("Content-Length", "5"), ("Expect", "100-continue")]))
        assert c.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"hello")
        status, _, body = c.read_response()
        assert (status, json.loads(body)) == (200, {"received": 5, "chunked": False})
        c.send(req("PUT", "/sink", [("Transfer-Encoding", "chunked"), ("Expect", "100-Continue")]))
        assert c.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"3\r\nabc\r\n0\r\n\r\n")
        status, headers, body = c.read_response()
    assert (status, json.loads(body)) == (200, {"received": 3, "chunked": True})
    assert headers["x-conn-seq"] == "2"


def test_expect_100_continue_without_body_gets_no_interim_response(backend):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/", [("Expect", "100-continue")]))
        assert c.read_until(b"\r\n").startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("code", [200, 201, 202, 302, 404, 418, 500, 502, 503, 599])
def test_status(backend, code):
    status, headers, body = get(backend, "/status?code=%d" % code)
    reasons = {200: "OK", 201: "Created", 202: "Accepted", 302: "Found", 404: "Not Found", 500: "Internal Server Error",
               502: "Bad Gateway", 503: "Service Unavailable"}
    assert status == code
    assert body == ("%d %s\n" % (code, reasons.get(code, "Unknown"))).encode()
    assert_backend_headers(headers, "tb1", 1)


@pytest.mark.parametrize("code", [204, 304])
def test_status_without_body(backend, code):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/status?code=%d" % code) + req("GET", "/"))
        head = c.read_until(b"\r\n\r\n")
        status, _, body = c.read_response()
    assert head.startswith(b"HTTP/1.1 %d " % code)
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert (status, body) == (200, b"hello from tb1\n")


def test_status_205_has_empty_content(backend):
    status, headers, body = get(backend, "/status?code=205")
    assert (status, headers["content-length"], body) == (205, "0", b"")


def test_delay_answers_after_the_delay(backend):
    started = time.monotonic()
    status, headers, body = get(backend, "/delay?ms=150")
    assert time.monotonic() - started >= 0.15
    assert (status, body) == (200, b"delayed 150 ms\n")
    assert_backend_headers(headers, "tb1", 1)


def test_delay_does_not_block_other_connections(backend):
    with RawConnection(backend.port) as slow:
        slow.send(req("GET", "/delay?ms=5000&mark=nonblocking"))
        assert wait_for(lambda: "GET /delay?ms=5000&mark=nonblocking" in record_lines(backend.record))
        assert get(backend, "/delay?ms=10")[::2] == (200, b"delayed 10 ms\n")
        assert get(backend, "/")[0] == 200
        assert not slow.has_data()


def test_close_answers_then_closes(backend):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/close") + req("GET", "/"))  # the second request is never answered
        data = c.read_until_closed()
    [(status, headers, body)] = parse_responses(data)
    assert (status, headers["connection"], body) == (200, "close", b"closing\n")


def test_reset_aborts_the_connection(backend):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/reset"))
        with pytest.raises(ConnectionResetError):
            c.read_until_closed()
    assert get(backend, "/")[0] == 200


def test_crash_exits_with_status_1(start):
    proc = start()
    with RawConnection(proc.port) as c:
        c.send(req("GET", "/crash"))
        try:
            assert c.read_until_closed() == b""
        except ConnectionResetError:
            pass
    assert proc.wait(timeout=5) == 1


def test_head_sends_headers_without_body(backend):
    with RawConnection(backend.port) as c:
        c.send(
            req("HEAD", "/")
            + req("HEAD", "/bytes?n=1000000")
            + req("HEAD", "/bytes?n=10&chunked=1")
            + req("HEAD", "/status?code=404")
            + req("HEAD", "/health")
            + req("GET", "/")
        )
        responses = [c.read_response(head=i < 5) for i in range(6)]
    assert [(s, h.get("content-length"), h.get("transfer-encoding")) for s, h, _ in responses] == [
        (200, "15", None),
        (200, "1000000", None),
        (200, None, "chunked"),
        (404, "14", None),
        (200, "2", None),
        (200, "15", None),
    ]
    assert responses[5][2] == b"hello from tb1\n"  # so nothing was sent after the HEAD heads
    assert [h["x-conn-seq"] for _, h, _ in responses] == ["1", "2", "3", "4", "5", "6"]


# ---------------------------------------------------------------- connections


def test_keep_alive_counts_requests_per_connection(backend):
    conn = http.client.HTTPConnection(LOCALHOST, backend.port, timeout=5)
    seen = []
    try:
        for path in ["/", "/health", "/echo", "/status?code=404"]:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            seen.append((resp.getheader("X-Conn-Seq"), resp.getheader("X-Conn-Id")))
    finally:
        conn.close()
    assert [s for s, _ in seen] == ["1", "2", "3", "4"]
    assert len({i for _, i in seen}) == 1
    _, headers, _ = get(backend, "/")
    assert headers["x-conn-seq"] == "1"
    assert int(headers["x-conn-id"]) > int(seen[0][1])


def test_pipelined_requests_are_answered_in_order(backend):
    with RawConnection(backend.port) as c:
        c.send(
            req("GET", "/delay?ms=100")
            + req("GET", "/status?code=201")
            + req("POST", "/sink", body=b"12345")
            + req("GET", "/bytes?n=3")
        )
        responses = [c.read_response() for _ in range(4)]
    assert [(s, b) for s, _, b in responses] == [
        (200, b"delayed 100 ms\n"),
        (201, b"201 Created\n"),
        (200, b'{"received": 5, "chunked": false}\n'),
        (200, b"012"),
    ]
    assert [h["x-conn-seq"] for _, h, _ in responses] == ["1", "2", "3", "4"]


def test_many_pipelined_requests_in_one_write(backend):
    n = 200
    with RawConnection(backend.port) as c:
        c.send(b"".join(req("GET", "/echo?i=%d" % i) for i in range(n)))
        responses = [c.read_response() for _ in range(n)]
    assert [json.loads(b)["target"] for _, _, b in responses] == ["/echo?i=%d" % i for i in range(n)]
    assert [h["x-conn-seq"] for _, h, _ in responses] == [str(i + 1) for i in range(n)]


def test_request_split_across_writes(backend):
    data = req("POST", "/echo", [("Transfer-Encoding", "chunked")], b"4\r\nabcd\r\n0\r\n\r\n")
    with RawConnection(backend.port) as c:
        for i in range(len(data)):
            c.send(data[i : i + 1])
        status, _, body = c.read_response()
    assert status == 200
    assert (json.loads(body)["body_prefix"], json.loads(body)["body_length"]) == ("abcd", 4)


def test_empty_lines_before_request_and_bare_lf(backend):
    with RawConnection(backend.port) as c:
        c.send(b"\r\n\n\r\nGET / HTTP/1.1\nHost: x\n\n")
        status, _, body = c.read_response()
    assert (status, body) == (200, b"hello from tb1\n")


def test_connection_close_request_header(backend):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/", [("Connection", "Keep-Alive, close")]))
        [(status, headers, body)] = parse_responses(c.read_until_closed())
    assert (status, headers["connection"], body) == (200, "close", b"hello from tb1\n")


def test_client_half_close_still_gets_the_answer(backend):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/delay?ms=50") + req("GET", "/"))
        c.shutdown_write()
        responses = parse_responses(c.read_until_closed())
    assert [(s, b) for s, _, b in responses] == [(200, b"delayed 50 ms\n"), (200, b"hello from tb1\n")]


def test_http10_closes_by_default(backend):
    with RawConnection(backend.port) as c:
        c.send(b"GET /bytes?n=12&chunked=1 HTTP/1.0\r\n\r\n")
        [(status, headers, body)] = parse_responses(c.read_until_closed())
    assert (status, body) == (200, b"012345678901")
    assert headers["connection"] == "close"
    assert headers["content-length"] == "12"  # no chunked framing for HTTP/1.0
    assert "transfer-encoding" not in headers


def test_http10_keep_alive(backend):
    with RawConnection(backend.port) as c:
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = c.read_response()
        c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        second = c.read_response()
    assert [(s, h["connection"], h["x-conn-seq"], b) for s, h, b in (first, second)] == [
        (200, "keep-alive", "1", b"hello from tb1\n"),
        (200, "keep-alive", "2", b"ok"),
    ]


@pytest.mark.parametrize(
    "data, status, why",
    [
        (b"BLAH\r\n\r\n", 400, "malformed request line"),
        (b"GET /\r\n\r\n", 400, "malformed request target"),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed request target"),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "malformed HTTP version"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host header"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host header"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX : x\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400, "malformed header field"),
        (b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400, "both Content-Length and Transfer-Encoding"),
        (b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc", 400, "invalid Content-Length"),
        (b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
         "conflicting Content-Length"),
        (b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "unsupported transfer coding"),
        (b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400,
         "chunked must be the final transfer coding"),
        (b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "malformed chunked body"),
        (b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX", 400,
         "malformed chunked body"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "only HTTP/1.x is supported"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417, "only 100-continue is supported"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 128 + b"\r\n", 431, "too many header fields"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000, 431, "request head larger than 65536 bytes"),
    ],
)
def test_bad_requests_get_an_error_and_a_close(backend, data, status, why):
    reasons = {400: "Bad Request", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
               505: "HTTP Version Not Supported"}
    with RawConnection(backend.port) as c:
        c.send(data)
        got, headers, body = c.read_response()
        assert c.read_until_closed() == b""
    assert (got, body) == (status, ("%s: %s\n" % (reasons[status], why)).encode())
    assert headers["connection"] == "close"
    assert_backend_headers(headers, "tb1", 1)
    assert get(backend, "/")[0] == 200


def test_error_after_pipelined_good_request(backend):
    with RawConnection(backend.port) as c:
        c.send(req("GET", "/") + b"NOT HTTP\r\n\r\n" + req("GET", "/"))
        responses = parse_responses(c.read_until_closed())
    assert [(s, h["x-conn-seq"]) for s, h, _ in responses] == [(200, "1"), (400, "2")]


# ---------------------------------------------------------------- options


def test_record_appends_method_and_target_per_request(start, tmp_path):
    record = tmp_path / "rec.txt"
    record.write_text("earlier line\n")
    proc = start("--record", record)
    get(proc, "/")
    get(proc, "/echo?x=1&y=%20", "POST", body=b"abc")
    get(proc, "/bytes?n=1", "HEAD")
    with RawConnection(proc.port) as c:  # pipelined, absolute-form, then a malformed one
        c.send(req("DELETE", "http://h/p?q") + req("GET", "/health") + b"BROKEN\r\n\r\n")
        c.read_until_closed()
    assert record_lines(record) == [
        "earlier line",
        "GET /",
        "POST /echo?x=1&y=%20",
        "HEAD /bytes?n=1",
        "DELETE http://h/p?q",
        "GET /health",
    ]


def test_serial_serves_one_request_at_a_time(start):
    proc = start("--serial")
    results = []

    def fetch():
        results.append(get(proc, "/delay?ms=200"))

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert time.monotonic() - started >= 0.4
    assert [(s, b) for s, _, b in results] == [(200, b"delayed 200 ms\n")] * 2
    assert len({h["x-conn-id"] for _, h, _ in results}) == 2


def test_serial_ignores_threads(start):
    proc = start("--serial", "--threads", "4")
    assert "--serial serves one request at a time: using one thread" in proc.output()
    results = []
    threads = [threading.Thread(target=lambda: results.append(get(proc, "/delay?ms=150"))) for _ in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert time.monotonic() - started >= 0.45
    assert [s for s, _, _ in results] == [200, 200, 200]


def test_serial_queues_other_connections_but_not_health(start, tmp_path):
    record = tmp_path / "rec.txt"
    proc = start("--serial", "--record", record)
    with RawConnection(proc.port) as slow, RawConnection(proc.port) as waiting:
        slow.send(req("GET", "/delay?ms=1500"))
        assert wait_for(lambda: record_lines(record) == ["GET /delay?ms=1500"])
        waiting.send(req("POST", "/sink", body=b"abc"))
        assert wait_for(lambda: len(record_lines(record)) == 2)
        assert get(proc, "/health")[::2] == (200, b"ok")  # /health bypasses the slot
        assert not waiting.has_data(wait=0.2)
        assert slow.read_response()[2] == b"delayed 1500 ms\n"
        assert waiting.read_response()[2] == b'{"received": 3, "chunked": false}\n'


def test_delay_ms_option_delays_every_request(start):
    proc = start("--delay-ms", "120-150")
    for path in ["/", "/status?code=404", "/delay?ms=30"]:
        started = time.monotonic()
        status, _, _ = get(proc, path)
        elapsed = time.monotonic() - started
        assert status in (200, 404)
        assert elapsed >= (0.15 if path.startswith("/delay") else 0.12)


def test_delay_ms_option_skips_health(start):
    proc = start("--delay-ms", "5000")
    with RawConnection(proc.port) as slow:
        slow.send(req("GET", "/"))
        assert get(proc, "/health")[::2] == (200, b"ok")
        assert not slow.has_data()


def test_threads_share_one_connection_counter(start):
    proc = start("--threads", "4")
    ids = []
    for _ in range(40):
        status, headers, _ = get(proc, "/")
        assert status == 200
        ids.append(int(headers["x-conn-id"]))
    assert sorted(ids) == list(range(1, 41))


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signals_exit_zero(start, sig):
    proc = start()
    with RawConnection(proc.port) as idle:
        idle.send(req("GET", "/delay?ms=10000"))
        proc.popen.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=5) == 0


@pytest.mark.parametrize(
    "args, status, message",
    [
        ([], 2, "--port is required"),
        (["--port", "70000"], 2, "--port must be an integer in 0..65535"),
        (["--port", "0", "--threads", "0"], 2, "--threads must be an integer in 1..256"),
        (["--port", "0", "--delay-ms", "5-1"], 2, "--delay-ms MAX is smaller than MIN"),
        (["--port", "0", "--delay-ms", "x"], 2, "--delay-ms MIN must be an integer"),
        (["--port", "0", "--bogus"], 2, "usage: testbackend"),
        (["--port", "0", "--record", "/nonexistent/dir/file"], 1, "cannot open record file"),
        (["--port", "0", "--host", "no.such.host.invalid"], 1, "cannot resolve no.such.host.invalid"),
    ],
)
def test_bad_arguments(binary, args, status, message):
    proc = start_process([binary] + args, ready_text=None)
    assert proc.wait(timeout=5) == status
    assert message in proc.output()


@pytest.mark.parametrize("threads", ["1", "3"])
def test_port_in_use_fails(start, binary, threads):
    other = start()
    proc = start_process([binary, "--port", other.port, "--threads", threads], ready_text=None)
    assert proc.wait(timeout=5) == 1
    assert "cannot listen on 127.0.0.1:%d" % other.port in proc.output()


def test_help(binary):
    proc = start_process([binary, "--help"], ready_text=None)
    assert proc.wait(timeout=5) == 0
    assert proc.output().startswith("usage: testbackend --port N")
