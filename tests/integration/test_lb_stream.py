"""agora lb: request and response bodies are streamed, chunked or not, in both directions.

100 MiB goes through the balancer each way while its resident memory (VmRSS) is sampled: it
must stay flat, far below the body size. Two backpressure tests make one side stall on purpose
(a client that stops reading, a backend that does not read yet), so that a balancer buffering
the body instead of pausing the other side would show it at once.
"""

import json
import threading
import time

import pytest

from helpers import LOCALHOST, PatternChecker, RawConnection, RssSampler, http_request, lb_stats, pattern_bytes, \
    rss_kib, send_pattern, wait_for

BIG = 100 * 1024 * 1024
RSS_LIMIT_KIB = 64 * 1024


@pytest.fixture
def lb_a(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    return lb_factory([backend])


def test_chunked_request_body(lb_a):
    status, _, body = http_request(LOCALHOST, lb_a.port, "POST", "/echo", body=iter([b"hello ", b"", b"world"]))
    doc = json.loads(body)
    assert status == 200
    assert (doc["chunked"], doc["body_length"], doc["body_prefix"]) == (True, 11, "hello world")
    assert ["Transfer-Encoding", "chunked"] in doc["headers"]


def test_chunk_extensions_and_trailers_are_dropped(lb_a):
    with RawConnection(lb_a.port) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5;name=value\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: yes\r\n\r\n")
        status, _, body = conn.read_response()
    doc = json.loads(body)
    assert (status, doc["body_length"], doc["body_prefix"]) == (200, 6, "hello!")


@pytest.mark.parametrize("chunked", [0, 1])
def test_response_bodies_keep_their_framing(lb_a, chunked):
    status, headers, body = http_request(LOCALHOST, lb_a.port, "GET", "/bytes?n=300001&chunked=%d" % chunked)
    assert (status, len(body)) == (200, 300001)
    assert body == pattern_bytes(0, 300001)
    if chunked:
        assert (headers["transfer-encoding"], "content-length" in headers) == ("chunked", False)
    else:
        assert (headers["content-length"], "transfer-encoding" in headers) == ("300001", False)


@pytest.mark.parametrize("chunked", [0, 1])
def test_large_download_streams_with_flat_memory(lb_a, chunked):
    with RssSampler(lb_a.pid) as rss, RawConnection(lb_a.port, timeout=10) as conn:
        conn.send(b"GET /bytes?n=%d&chunked=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (BIG, chunked))
        status, headers = conn.read_head()
        checker = PatternChecker()
        length = conn.stream_body(headers, checker)
    assert (status, length, checker.ok) == (200, BIG, True)
    assert ("transfer-encoding" in headers) == bool(chunked)
    assert 0 < rss.peak_kib < RSS_LIMIT_KIB, rss.peak_kib


@pytest.mark.parametrize("chunked", [False, True])
def test_large_upload_streams_with_flat_memory(lb_a, chunked):
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % BIG
    with RssSampler(lb_a.pid) as rss, RawConnection(lb_a.port, timeout=10) as conn:
        conn.send(b"POST /sink HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n\r\n")
        send_pattern(conn, BIG, chunked=chunked)
        status, _, body = conn.read_response()
    assert (status, json.loads(body)) == (200, {"received": BIG, "chunked": chunked})
    assert 0 < rss.peak_kib < RSS_LIMIT_KIB, rss.peak_kib


def test_client_that_stops_reading_pauses_the_backend(lb_a):
    with RawConnection(lb_a.port, timeout=10) as conn:
        conn.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % BIG)
        status, headers = conn.read_head()
        assert status == 200
        # The backend could send all 100 MiB in well under a second; the balancer must stop
        # reading it once its buffer towards this (not reading) client is full.
        with RssSampler(lb_a.pid) as rss:
            time.sleep(1.0)
        assert rss.peak_kib < RSS_LIMIT_KIB, rss.peak_kib
        checker = PatternChecker()
        assert conn.stream_body(headers, checker) == BIG
        assert checker.ok


def test_backend_that_does_not_read_pauses_the_client(testbackend_factory, lb_factory):
    # --serial: while /delay holds the backend's only slot, the upload's body is not read.
    backend = testbackend_factory("A", "--serial")
    lb = lb_factory([backend])
    results = {}

    def call(key, send):
        with RawConnection(lb.port, timeout=20) as conn:
            send(conn)
            results[key] = conn.read_response()

    def slow(conn):
        conn.send(b"GET /delay?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n")

    def upload(conn):
        conn.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % BIG)
        send_pattern(conn, BIG)

    threads = [threading.Thread(target=call, args=("slow", slow)), threading.Thread(target=call, args=("up", upload))]
    threads[0].start()
    assert wait_for(lambda: set(lb_stats(lb.port)["connections"].values()) == {1}, 5)
    with RssSampler(lb.pid) as rss:
        threads[1].start()
        time.sleep(1.0)  # the upload is stuck behind /delay meanwhile
        stuck = "up" not in results
        for t in threads:
            t.join(timeout=30)
    assert stuck
    assert results["slow"][::2] == (200, b"delayed 1500 ms\n")
    assert (results["up"][0], json.loads(results["up"][2])) == (200, {"received": BIG, "chunked": False})
    assert rss.peak_kib < RSS_LIMIT_KIB, rss.peak_kib
    assert rss_kib(lb.pid) < RSS_LIMIT_KIB
