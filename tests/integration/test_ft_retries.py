"""agora lb: which failed requests are retried on another server.

- Nothing was sent (connection refused): retried on another server whatever the method.
- Sent, then the backend failed before answering: retried only when the request is safe to
  repeat (GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or any request with an Idempotency-Key header)
  and every byte of it is still in the replay buffer (--replay-buffer, default 64k), and the
  retry budget allows it (test_ft_limits.py). A failure on a reused pooled connection before
  any response byte (the backend closed an idle connection as we wrote to it) is retried without
  spending budget and without ejecting the server.
- --retries N bounds the extra attempts.

A Python CaptureBackend (helpers.py) plays the failing server: "reset" mode resets every request
after reading it all, "drop-second" closes a connection on its second request without answering.
Passive health is off where a failing server must stay in rotation.
"""

import pytest

from helpers import LOCALHOST, CaptureBackend, RawConnection, backend_url, http_request, lb_server_stats, record_lines

N = 10


def post(port, path, body=b"x", headers=None):
    return http_request(LOCALHOST, port, "POST", path, headers=headers, body=body)


def test_connection_refused_is_retried_for_any_method(testbackend_factory, lb_factory, tmp_path):
    records = [tmp_path / "a.txt", tmp_path / "b.txt"]
    a = testbackend_factory("A", "--record", str(records[0]))
    b = testbackend_factory("B", "--record", str(records[1]))
    # Checks every minute: after the first one A stays "healthy" although it is dead, so every
    # other request is first sent its way (round-robin) and refused.
    lb = lb_factory([a, b], "--policy", "round-robin", "--passive-health", "off", "--health-interval", "60s",
                    "--health-path", "/hc")
    a.popen.kill()
    a.popen.wait(timeout=5)

    answers = [post(lb.port, "/order-%d" % i) for i in range(N)]
    assert [(s, h["x-backend"]) for s, h, _ in answers] == [(200, "B")] * N
    assert [l for l in record_lines(records[1]) if l != "GET /hc"] == ["POST /order-%d" % i for i in range(N)]
    assert lb_server_stats(lb.port)[backend_url(a)]["errors"] == N // 2


def test_no_retries_at_all_with_retries_0(testbackend_factory, lb_factory):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    lb = lb_factory([a, b], "--policy", "round-robin", "--passive-health", "off", "--health-interval", "60s",
                    "--retries", "0")
    a.popen.kill()
    a.popen.wait(timeout=5)

    statuses = [http_request(LOCALHOST, lb.port, "GET", "/")[0] for _ in range(N)]
    assert sorted(statuses) == [200] * (N // 2) + [502] * (N // 2)  # round-robin: every other one to A


@pytest.fixture
def reset_and_good(testbackend_factory, lb_factory, tmp_path):
    """start(*flags) -> (lb, resetting CaptureBackend, good record path): a server that resets
    every request it reads and a testbackend B, passive health off."""
    started = []

    def start(*flags):
        bad = CaptureBackend(mode="reset")
        started.append(bad)
        record = tmp_path / "b.txt"
        good = testbackend_factory("B", "--record", str(record))
        lb = lb_factory([bad.port, good], "--policy", "round-robin", "--passive-health", "off", *flags)
        return lb, bad, record

    try:
        yield start
    finally:
        for bad in started:
            bad.stop()


def good_lines(record):
    """The record lines of everything but health checks."""
    return [l for l in record_lines(record) if l != "GET /health"]


def test_post_that_reached_a_backend_is_never_replayed(reset_and_good):
    lb, bad, record = reset_and_good("--retry-budget", "100")
    answers = [post(lb.port, "/order-%d" % i) for i in range(N)]

    statuses = [s for s, _, _ in answers]
    # Each POST was sent exactly once: those that went to the resetting server failed with 502.
    assert len(bad.requests) + len(good_lines(record)) == N
    assert statuses.count(502) == len(bad.requests) > 0
    assert statuses.count(200) == len(good_lines(record)) > 0


def test_post_with_idempotency_key_is_retried(reset_and_good):
    lb, bad, record = reset_and_good("--retry-budget", "100")
    answers = [post(lb.port, "/order-%d" % i, headers={"Idempotency-Key": "k-%d" % i}) for i in range(N)]

    assert [(s, h["x-backend"]) for s, h, _ in answers] == [(200, "B")] * N
    assert good_lines(record) == ["POST /order-%d" % i for i in range(N)]
    assert len(bad.requests) > 0  # those were replayed on B


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])
def test_idempotent_methods_are_retried(reset_and_good, method):
    lb, bad, record = reset_and_good("--retry-budget", "100")
    body = b"x" if method in ("PUT", "DELETE") else None
    answers = [http_request(LOCALHOST, lb.port, method, "/item-%d" % i, body=body) for i in range(N)]

    assert [(s, h["x-backend"]) for s, h, _ in answers] == [(200, "B")] * N
    assert good_lines(record) == ["%s /item-%d" % (method, i) for i in range(N)]
    assert len(bad.requests) > 0


def test_body_larger_than_the_replay_buffer_is_not_retried(reset_and_good):
    lb, bad, record = reset_and_good("--retry-budget", "100", "--replay-buffer", "1k")
    big = b"y" * 4096
    answers = [post(lb.port, "/upload-%d" % i, body=big, headers={"Idempotency-Key": "u-%d" % i}) for i in range(N)]

    statuses = [s for s, _, _ in answers]
    assert len(bad.requests) + len(good_lines(record)) == N
    assert statuses.count(502) == len(bad.requests) > 0
    # The same requests with a body that fits are retried.
    small = [post(lb.port, "/upload-small-%d" % i, body=b"y" * 512, headers={"Idempotency-Key": "s-%d" % i})
             for i in range(N)]
    assert [s for s, _, _ in small] == [200] * N


def test_stale_pooled_connection_on_the_only_server_is_retried_on_a_new_connection(lb_factory):
    # The same flaky server, alone: no other server is left to try, so the request goes to the
    # same server again, on a new connection (not another pooled one, which may be as stale).
    # Before, the client got 502 (seen in CI with a backend that closed after each answer).
    with CaptureBackend(mode="drop-second") as flaky:
        lb = lb_factory([flaky.port], "--retry-budget", "0")
        with RawConnection(lb.port) as conn:
            answers = []
            for i in range(6):
                conn.send(b"GET /page-%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
                answers.append(conn.read_response())
        assert [(s, h["x-backend"]) for s, h, _ in answers] == [(200, flaky.name)] * 6
        # Each page after the first meets the pooled connection of the one before, is dropped,
        # then answered on a new connection.
        assert flaky.requests == ["GET /page-0 HTTP/1.1"] + [
            "GET /page-%d HTTP/1.1" % i for i in range(1, 6) for _ in range(2)]
        server = lb_server_stats(lb.port)[backend_url(flaky.port)]
        assert (server["healthy"], server["ejections"]) == (True, 0)


def test_stale_pooled_connection_is_retried_without_budget(testbackend_factory, lb_factory, tmp_path):
    # The flaky server answers the first request on each connection and closes the connection
    # on the second one without a byte of answer: what a backend closing an idle keep-alive
    # connection as the balancer reuses it looks like. With --retry-budget 0 no retry after
    # sending could be paid for, yet none of these may fail, and the server is not ejected.
    record = tmp_path / "b.txt"
    with CaptureBackend(mode="drop-second") as flaky:
        good = testbackend_factory("B", "--record", str(record))
        lb = lb_factory([flaky.port, good], "--policy", "round-robin", "--retry-budget", "0")

        with RawConnection(lb.port) as conn:
            answers = []
            for i in range(12):
                conn.send(b"GET /page-%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
                answers.append(conn.read_response())
        assert [s for s, _, _ in answers] == [200] * 12
        # Round-robin sends the even pages to the flaky server; every second one of them meets a
        # reused connection and is dropped, then retried on B.
        assert flaky.requests == ["GET /page-%d HTTP/1.1" % i for i in range(0, 12, 2)]
        answered_by_flaky = [i for i, (_, h, _) in enumerate(answers) if h["x-backend"] == flaky.name]
        assert answered_by_flaky == [0, 4, 8]
        assert [l for l in record_lines(record) if l != "GET /health"] == [
            "GET /page-%d" % i for i in range(12) if i not in (0, 4, 8)]
        server = lb_server_stats(lb.port)[backend_url(flaky.port)]
        assert (server["healthy"], server["ejections"]) == (True, 0)
