"""agora lb: request ids (X-Request-Id) and the JSON access log (issue 13, item 3).

Every proxied request gets an id: a trusted client's (--trust-forwarded, as for X-Forwarded-For)
when it is 1-64 characters of [A-Za-z0-9._:+/=-], else 32 hex digits made by the balancer. The
backend receives exactly one X-Request-Id, and the client gets the same one back.
`--access-log-format json` writes one JSON object per request with the id, the server, the
retries and the upstream times.
"""

import json
import re
import subprocess

from helpers import LOCALHOST, RawConnection, wait_for

HEX32 = re.compile(r"[0-9a-f]{32}")


def exchange(port, headers=(), target="/echo"):
    """GET target with these extra header lines -> (status, response headers, body)."""
    lines = ["GET %s HTTP/1.1" % target, "Host: lb.test"] + ["%s: %s" % hv for hv in headers]
    with RawConnection(port) as conn:
        conn.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return conn.read_response()


def backend_ids(body):
    return [v for n, v in json.loads(body)["headers"] if n.lower() == "x-request-id"]


def test_generated_ids_reach_the_backend_and_come_back(testbackend_factory, lb_factory):
    lb = lb_factory([testbackend_factory("A")])
    seen = set()
    for _ in range(20):
        status, headers, body = exchange(lb.port)
        assert status == 200
        rid = headers["x-request-id"]
        assert HEX32.fullmatch(rid)
        assert backend_ids(body) == [rid]
        seen.add(rid)
    assert len(seen) == 20


def test_client_ids_kept_only_when_trusted_and_sane(testbackend_factory, lb_factory):
    backend = testbackend_factory("A")
    untrusted = lb_factory([backend])
    trusted = lb_factory([backend], "--trust-forwarded", "on")
    sane = "req-7f3a.b:c+d/e=f"
    # Not trusted: the client's id (and a second one) is dropped, the balancer makes its own.
    status, headers, body = exchange(untrusted.port, [("X-Request-Id", sane), ("X-Request-Id", "two")])
    assert status == 200 and HEX32.fullmatch(headers["x-request-id"])
    assert backend_ids(body) == [headers["x-request-id"]]
    # Trusted and sane: kept, passed on once, echoed.
    status, headers, body = exchange(trusted.port, [("X-Request-Id", sane)])
    assert (status, headers["x-request-id"], backend_ids(body)) == (200, sane, [sane])
    # Trusted but not sane (too long, a space, a quote, empty): replaced.
    for bad in ["a" * 65, "has space", 'quote"d', ""]:
        status, headers, body = exchange(trusted.port, [("X-Request-Id", bad)])
        assert status == 200 and HEX32.fullmatch(headers["x-request-id"]), bad
        assert backend_ids(body) == [headers["x-request-id"]]


def read_json_lines(path, n):
    def lines():
        text = path.read_text() if path.exists() else ""
        got = [json.loads(line) for line in text.splitlines()]
        return got if len(got) >= n else None

    found = wait_for(lines, 5.0, 0.05)
    assert found, path.read_text() if path.exists() else "no log"
    return found


def test_json_access_log(testbackend_factory, lb_factory, tmp_path):
    a, b = testbackend_factory("A"), testbackend_factory("B")
    log = tmp_path / "access.json"
    lb = lb_factory([a, b], "--policy", "round-robin", "--health-interval", "60s", "--access-log", str(log),
                    "--access-log-format", "json")
    status, h1, _ = exchange(lb.port, target="/status?code=201")
    assert status == 201
    b.stop()  # round-robin's next pick: its connect fails and the request is retried on A
    status, h2, _ = exchange(lb.port, [("User-Agent", 'agent "x"\\y')], target="/bytes?n=7")
    assert status == 200
    entries = read_json_lines(log, 2)
    assert len(entries) == 2
    first, second = entries
    assert set(first) == {"time", "client", "request_id", "request", "status", "bytes", "referer", "agent",
                          "server", "retries", "retry_reasons", "connect_ms", "header_ms", "total_ms"}
    assert first["retry_reasons"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["client"] == LOCALHOST
    assert first["request_id"] == h1["x-request-id"]
    assert first["request"] == "GET /status?code=201 HTTP/1.1"
    assert (first["status"], first["server"], first["retries"]) == (201, "%s:%d" % (LOCALHOST, a.port), 0)
    assert 0 <= first["connect_ms"] <= first["header_ms"] <= first["total_ms"]
    assert second["request_id"] == h2["x-request-id"]
    assert (second["status"], second["bytes"], second["retries"], second["retry_reasons"]) == (200, 7, 1, ["connect"])
    assert second["server"] == "%s:%d" % (LOCALHOST, a.port)
    assert second["agent"] == "agent 'x''y"  # as in the combined format: quotes and backslashes made '
    assert 0 <= second["connect_ms"] <= second["header_ms"] <= second["total_ms"]
    # No server at all: the balancer's own 503; nothing upstream happened.
    a.stop()
    status, h3, _ = exchange(lb.port)
    assert status in (502, 503)
    third = read_json_lines(log, 3)[2]
    assert third["status"] == status
    assert third["header_ms"] is None
    assert third["total_ms"] >= 0


def test_bad_format_is_refused(agora_bin):
    proc = subprocess.run([str(agora_bin), "lb", "--backend", "http://127.0.0.1:9", "--access-log-format", "xml"],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0
    assert "access-log-format must be combined or json" in proc.stderr
