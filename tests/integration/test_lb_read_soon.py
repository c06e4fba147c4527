"""Answers a backend gives in awkward shapes, with one worker and many connections. Written for the
balancer's former read_soon (a read of a backend connection at the end of the loop iteration that
wrote its request; removed: bench/RESULTS.md, "Reading ahead"), they hold for every read path: an
answer and the backend's close arriving together, an answer that comes later (epoll brings it),
and one worker with many busy connections over HTTP/1.1 and HTTP/2, where every request must get
its own answer. Latency itself is measured by the benchmarks, not here."""

import http.client
import shutil
import subprocess
import threading
import time

import pytest

from helpers import LOCALHOST, RawConnection
from test_lb_errors import ScriptBackend


def test_answer_and_close_at_once_complete_a_close_delimited_body(lb_factory):
    """The backend answers without a length and closes at once: the read that follows the
    request may take the answer and the end of stream together. Every response is whole and
    ends (chunked to the client), and the client's connection stays usable."""

    def answer(sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe whole body")
        sock.close()

    backend = ScriptBackend(answer)
    try:
        lb = lb_factory([backend.port])
        with RawConnection(lb.port) as conn:
            for _ in range(30):
                conn.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
                status, headers, body = conn.read_response()
                assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"the whole body")
    finally:
        backend.close()


def test_an_answer_that_comes_later_is_read_through_epoll(lb_factory):
    """The backend answers 200 ms after the request: the read at the end of the iteration finds
    nothing, and the answer must still arrive, once, complete."""

    def answer(sock):
        time.sleep(0.2)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlater")
        sock.close()

    backend = ScriptBackend(answer)
    try:
        lb = lb_factory([backend.port])
        with RawConnection(lb.port) as conn:
            for _ in range(3):
                conn.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
                status, headers, body = conn.read_response()
                assert (status, headers["content-length"], body) == (200, "5", b"later")
    finally:
        backend.close()


def test_one_worker_many_connections_every_request_gets_its_answer(testbackend_factory, lb_factory):
    """One worker, 64 keep-alive connections sending at once (the load where the answers are read
    in the iteration that sent them): each of the 64 x 40 requests gets a 200 with its own target
    echoed back, none lost, none swapped between connections."""
    backends = [testbackend_factory("b%d" % i) for i in range(3)]
    lb = lb_factory(backends, workers=1)
    errors = []
    ok = [0] * 64

    def client(i):
        conn = http.client.HTTPConnection(LOCALHOST, lb.port, timeout=20)
        try:
            for j in range(40):
                path = "/echo?c=%d&r=%d" % (i, j)
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or path.encode() not in body:
                    errors.append((i, j, resp.status, body[:80]))
                    return
                ok[i] += 1
        except OSError as e:
            errors.append((i, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert ok == [40] * 64


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is needed")
def test_one_worker_many_h2_streams_every_stream_gets_its_answer(testbackend_factory, lb_factory):
    """The same over HTTP/2 (h2c prior knowledge): 16 connections x 10 concurrent streams, 4,000
    requests, every one a 2xx; an answer read at the end of an iteration goes out with that
    iteration's deferred HTTP/2 sends."""
    backends = [testbackend_factory("b%d" % i) for i in range(3)]
    lb = lb_factory(backends, "--h2c", "on", workers=1)
    out = subprocess.run(
        ["h2load", "-c16", "-m10", "-n4000", "http://%s:%d/" % (LOCALHOST, lb.port)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "4000 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 4000 2xx" in out, out
