"""agora lb: --access-log writes one Combined Log Format line per proxied request, followed by
the backend's address (or "-" when none was used) and the request's time in milliseconds:

    127.0.0.1 - - [24/Nov/2026:00:24:14 +0000] "GET /p HTTP/1.1" 200 1234 "referer" "agent" 127.0.0.1:8001 0.328

Lines are written at least once a second, so each test waits (bounded) for them to appear.
"""

import re

import pytest

from helpers import LOCALHOST, http_request, wait_for

LINE = re.compile(
    r'^(?P<client>127\.0\.0\.1) - - \[(?P<date>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" '
    r'(?P<backend>\S+) (?P<ms>\d+\.\d{3})$'
)


def log_lines(path, n, timeout=5.0):
    """Waits until the log holds at least n lines; returns them all."""
    def lines():
        text = path.read_text() if path.exists() else ""
        return text.splitlines() if len(text.splitlines()) >= n else None

    found = wait_for(lines, timeout, 0.05)
    assert found, "fewer than %d lines in %s: %r" % (n, path, path.read_text() if path.exists() else None)
    return found


def parse(line):
    m = LINE.match(line)
    assert m, "not a Combined Log Format line with backend and time: %r" % line
    return m.groupdict()


def test_access_log_lines(testbackend_factory, lb_factory, tmp_path):
    log = tmp_path / "access.log"
    a, b = testbackend_factory("A"), testbackend_factory("B")
    address = {"A": "127.0.0.1:%d" % a.port, "B": "127.0.0.1:%d" % b.port}
    lb = lb_factory([a, b], "--policy", "round-robin", "--access-log", str(log))

    served = [
        http_request(LOCALHOST, lb.port, "GET", "/echo?x=1",
                     headers={"User-Agent": "agora-test/1.0", "Referer": "http://ref.example/page"}),
        http_request(LOCALHOST, lb.port, "POST", "/sink", body=b"0123456789"),
        http_request(LOCALHOST, lb.port, "GET", "/status?code=404"),
        http_request(LOCALHOST, lb.port, "GET", "/delay?ms=200"),
    ]
    http_request(LOCALHOST, lb.port, "GET", "/stats")  # answered by the balancer: not logged

    entries = [parse(line) for line in log_lines(log, 4)]
    assert len(entries) == 4
    assert [(e["request"], e["status"]) for e in entries] == [
        ("GET /echo?x=1 HTTP/1.1", "200"),
        ("POST /sink HTTP/1.1", "200"),
        ("GET /status?code=404 HTTP/1.1", "404"),
        ("GET /delay?ms=200 HTTP/1.1", "200"),
    ]
    assert [(e["referer"], e["agent"]) for e in entries] == [
        ("http://ref.example/page", "agora-test/1.0"), ("-", "-"), ("-", "-"), ("-", "-")]
    # The backend that served each request, as X-Backend told the client.
    assert [e["backend"] for e in entries] == [address[h["x-backend"]] for _, h, _ in served]
    assert [e["backend"] for e in entries] == [address[n] for n in "ABAB"]
    # The time includes the backend's 200 ms service time.
    assert float(entries[3]["ms"]) >= 200.0
    assert all(0 <= float(e["ms"]) < float(entries[3]["ms"]) for e in entries[:3])


def test_requests_without_a_backend_are_logged_with_a_dash(testbackend_factory, lb_factory, tmp_path):
    log = tmp_path / "access.log"
    a = testbackend_factory("A")
    lb = lb_factory([a], "--access-log", str(log))
    a.stop()
    assert wait_for(lambda: http_request(LOCALHOST, lb.port, "GET", "/")[0] == 503, 5)

    entry = parse(log_lines(log, 1)[-1])
    assert (entry["request"], entry["status"], entry["backend"]) == ("GET / HTTP/1.1", "503", "-")


def test_access_log_to_stdout(testbackend_factory, lb_factory):
    lb = lb_factory([testbackend_factory("A")], "--access-log", "stdout")
    assert http_request(LOCALHOST, lb.port, "GET", "/?from=stdout")[0] == 200

    assert lb.wait_for_output('"GET /?from=stdout HTTP/1.1" 200 ', 5), lb.output()
    line = next(l for l in lb.output().splitlines() if "/?from=stdout" in l)
    assert parse(line)["backend"] != "-"


def test_access_log_bytes_are_the_body_size(testbackend_factory, lb_factory, tmp_path):
    log = tmp_path / "access.log"
    lb = lb_factory([testbackend_factory("A")], "--access-log", str(log))
    assert len(http_request(LOCALHOST, lb.port, "GET", "/bytes?n=1234")[2]) == 1234

    assert parse(log_lines(log, 1)[0])["bytes"] == "1234"
