"""agora lb: WebSocket pass-through (issue 14, item 3).

A GET over HTTP/1.1 with Connection: Upgrade and Upgrade: websocket (and no body) is forwarded
with those fields; a 101 naming websocket is relayed and the connection becomes a tunnel, bytes
both ways, with backpressure, half-close, an idle timeout (--tunnel-timeout) and a cap
(--max-tunnels, then 503). Any other answer is an ordinary response and the connection goes on
as HTTP. Every other Upgrade (no Connection: upgrade, a body, HTTP/1.0, another protocol such as
h2c, another method) is forwarded as a plain request without its Upgrade field. Bytes after the
request reach the backend raw only after its 101: before, they are parsed as HTTP.

The backend is agora_test/websocket.py's echo server (a process of its own, asyncio), which
records every request head it gets (--record, JSON lines), so the tests see exactly what reached
it.
"""

import json
import os
import signal
import socket
import threading
import time

import pytest

from helpers import (LOCALHOST, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, CaptureBackend, RawConnection,
                     RssSampler, WsClient, admin_request, admin_token, free_port, frame, http_request, lb_server_stats,
                     metric, parse_metrics, raise_fd_limit, rss_kib, start_ws_backend, wait_for, ws_accept)

MIB = 1024 * 1024


@pytest.fixture
def ws_backend_factory(tmp_path):
    """start(*args) -> the echo backend Process with .port and .record (its --record file)."""
    started = []

    def start(*args):
        record = tmp_path / ("ws-%d.jsonl" % len(started))
        proc = start_ws_backend("--record", record, *args)
        proc.record = record
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


def records(backend):
    """What reached the backend: one dict per request head (not /health)."""
    if not backend.record.exists():
        return []
    return [json.loads(line) for line in backend.record.read_text().splitlines()]


def header(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def scrape(admin_port):
    status, _, body = http_request(LOCALHOST, admin_port, "GET", "/metrics",
                                   headers={"Authorization": "Bearer " + admin_token(admin_port)})
    assert status == 200
    return parse_metrics(body.decode())


@pytest.fixture
def ws(ws_backend_factory, lb_factory):
    """One echo backend behind a balancer with its admin API (metrics) on."""
    backend = ws_backend_factory()
    admin_port = free_port()
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    lb.admin_port = admin_port
    return lb, backend


def open_tunnel(port, path="/ws"):
    c = WsClient(port, path)
    status, headers = c.handshake()
    assert status == 101, (status, headers)
    return c


# ---------------------------------------------------------------- the handshake and the echo


def test_handshake_headers_are_exact(ws):
    lb, backend = ws
    with WsClient(lb.port, "/ws", headers={"Sec-WebSocket-Protocol": "chat",
                                           "Sec-WebSocket-Extensions": "permessage-deflate"}) as c:
        status, headers = c.handshake()
        assert status == 101
        names = [k for k, _ in headers]
        assert names == ["Sec-WebSocket-Accept", "X-Request-Id", "Connection", "Upgrade"]
        assert header(headers, "Sec-WebSocket-Accept") == [ws_accept(c.key)]
        assert header(headers, "Connection") == ["Upgrade"]
        assert header(headers, "Upgrade") == ["websocket"]
        assert len(header(headers, "X-Request-Id")[0]) == 32
    (seen,) = records(backend)
    assert (seen["method"], seen["target"], seen["upgrade"], seen["connection"]) == ("GET", "/ws", "websocket",
                                                                                     "upgrade")
    got = {k.lower(): v for k, v in seen["headers"]}
    assert got["sec-websocket-key"] == c.key
    assert got["sec-websocket-version"] == "13"
    assert got["sec-websocket-protocol"] == "chat"
    assert got["sec-websocket-extensions"] == "permessage-deflate"
    assert got["x-forwarded-for"] == LOCALHOST


def test_echo_text_binary_fragments_and_ping(ws):
    lb, _ = ws
    with open_tunnel(lb.port, "/ws?greet=1") as c:
        assert c.recv() == (OP_TEXT, b"hello")  # sent by the backend in the same write as its 101
        c.send(OP_TEXT, "héllo wörld".encode())
        assert c.recv() == (OP_TEXT, "héllo wörld".encode())
        blob = bytes(range(256)) * 300
        c.send(OP_BINARY, blob)
        assert c.recv() == (OP_BINARY, blob)
        c.send(OP_TEXT, b"frag-", fin=False)
        c.send(0, b"ment")
        assert c.recv() == (OP_TEXT, b"frag-")
        assert c.recv() == (0, b"ment")
        c.send(OP_PING, b"p")
        assert c.recv() == (OP_PONG, b"p")
        c.send(OP_CLOSE, b"\x03\xe8")
        assert c.recv() == (OP_CLOSE, b"\x03\xe8")
        assert c.ends(5) == "eof"


def test_frames_sent_before_the_101_are_delivered_after_it(ws):
    """A client may send frames right behind its upgrade request (same packet): they wait in the
    balancer, unparsed, and reach the backend once the 101 came."""
    lb, backend = ws
    c = WsClient(lb.port, "/ws", send=False)
    c.sock.sendall(c.request + frame(OP_TEXT, b"early") + frame(OP_BINARY, b"\x00\x01"))
    with c:
        assert c.handshake()[0] == 101
        assert c.recv() == (OP_TEXT, b"early")
        assert c.recv() == (OP_BINARY, b"\x00\x01")
    assert len(records(backend)) == 1


@pytest.mark.parametrize("direction", ["slow-client", "slow-backend"])
def test_10_mib_message_with_bounded_memory(ws, agora_bin, direction):
    """10 MiB each way through one tunnel while one side does not read for a while: the
    balancer pauses the other side instead of buffering (its RSS grows by far less than the
    message: 2 MiB, or 8 MiB under ASan, whose allocator keeps freed buffers in quarantine)."""
    lb, _ = ws
    payload = os.urandom(10 * MIB)
    path = "/ws?pause_ms=1500" if direction == "slow-backend" else "/ws"
    base = rss_kib(lb.pid)
    with RssSampler(lb.pid) as rss, open_tunnel(lb.port, path) as c:
        sender = threading.Thread(target=c.send, args=(OP_BINARY, payload))
        sender.start()
        if direction == "slow-client":
            time.sleep(1.5)  # the echo comes back while nobody reads it
        op, data = c.recv()
        sender.join(10)
    assert (op, len(data), data == payload) == (OP_BINARY, len(payload), True)
    bound = 8 * 1024 if "asan" in str(agora_bin) else 2 * 1024
    assert rss.peak_kib - base < bound, (base, rss.peak_kib)


# ---------------------------------------------------------------- ends of a tunnel


def test_client_half_close_keeps_the_other_direction(ws):
    lb, _ = ws
    with open_tunnel(lb.port) as c:
        c.send(OP_TEXT, b"last words")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.recv() == (OP_TEXT, b"last words")
        assert c.recv() == (OP_TEXT, b"eof")  # the backend saw our end of stream, and still wrote
        assert c.ends(5) == "eof"
    assert wait_for(lambda: scrape(lb.admin_port)[("agora_lb_tunnels", frozenset())] == 0, 5)


def test_backend_closing_ends_the_tunnel(ws):
    lb, _ = ws
    with open_tunnel(lb.port) as c:
        c.send(OP_TEXT, b"bye")
        assert c.ends(5) == "eof"
    m = wait_for(lambda: (lambda m: m if m[("agora_lb_tunnels", frozenset())] == 0 else None)(scrape(lb.admin_port)), 5)
    assert m and metric(m, "agora_lb_tunnels_total") == 1


def test_backend_dying_mid_tunnel_ends_it(ws_backend_factory, lb_factory):
    backend = ws_backend_factory()
    lb = lb_factory([backend])
    with open_tunnel(lb.port) as c:
        c.send(OP_TEXT, b"ping")
        assert c.recv() == (OP_TEXT, b"ping")
        os.kill(backend.pid, signal.SIGKILL)
        t0 = time.monotonic()
        assert c.ends(5) in ("eof", "reset")
        assert time.monotonic() - t0 < 2
    status, _, _ = http_request(LOCALHOST, lb.port, "GET", "/health")  # the balancer itself serves on
    assert status in (200, 503)
    assert lb.poll() is None


def test_idle_timeout_closes_both_sides(ws_backend_factory, lb_factory):
    backend = ws_backend_factory()
    admin_port = free_port()
    lb = lb_factory([backend], "--tunnel-timeout", "1s", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    key = "%s:%d" % (LOCALHOST, backend.port)
    with open_tunnel(lb.port) as c:
        # Activity keeps it open past the timeout ...
        for _ in range(4):
            time.sleep(0.5)
            c.send(OP_PING, b"k")
            assert c.recv() == (OP_PONG, b"k")
        t0 = time.monotonic()
        # ... then 1 s of silence closes the client side and the backend side.
        assert c.ends(5) == "eof"
        elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed <= 2.0, elapsed
    m = scrape(admin_port)
    assert metric(m, "agora_lb_server_connections", server=key, state="open") == 0
    assert metric(m, "agora_lb_tunnels") == 0


def cpu_seconds(pid):
    """User + system CPU time of process pid so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_hang_up_both_ways_while_the_backend_is_slow_does_not_spin(ws):
    """The backend ends its side at once and then reads nothing for 3 s; the client sends 6 MiB
    and ends its side too. The balancer pauses reading the client (the backend's queue is full)
    while that socket is shut both ways, which epoll reports as a hang-up whatever the mask: it
    must wait without spinning (it stops watching that socket until the backend drains), then
    deliver every byte and close."""
    lb, backend = ws
    payload = b"\xa5" * (6 * MIB)
    with open_tunnel(lb.port, "/ws?halfclose=1&pause_ms=3000") as c:
        assert c.ends(5) == "eof"  # the backend's end of stream, passed on
        sender = threading.Thread(target=c.sock.sendall, args=(payload,))
        sender.start()
        sender.join(2)
        assert not sender.is_alive()  # in the balancer's and the kernel's buffers
        c.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.3)
        cpu0 = cpu_seconds(lb.pid)
        time.sleep(1.0)
        assert cpu_seconds(lb.pid) - cpu0 < 0.2
    assert wait_for(lambda: {"drained": len(payload)} in records(backend), 10)
    assert wait_for(lambda: metric(scrape(lb.admin_port), "agora_lb_tunnels") == 0, 5)


def test_backend_hang_up_while_the_client_is_slow_does_not_spin(ws):
    """The mirror case: the client ends its side and reads nothing for 2 s; the backend then sends
    5 MiB and ends its side. The balancer stops reading the backend (the client's queue is full)
    on a socket shut both ways, with bytes waiting in it: it must wait without spinning (it
    stops watching that socket until the client drains), then deliver every byte and the end."""
    lb, _ = ws
    n = 5 * MIB
    with open_tunnel(lb.port, "/ws?flood=%d" % n) as c:
        c.sock.shutdown(socket.SHUT_WR)
        time.sleep(1.0)
        cpu0 = cpu_seconds(lb.pid)
        time.sleep(1.0)
        assert cpu_seconds(lb.pid) - cpu0 < 0.2
        op, data = c.recv()
        assert (op, len(data), data.count(b"\x5a")) == (OP_BINARY, n, n)
        assert c.ends(5) == "eof"


# ---------------------------------------------------------------- limits


def test_max_tunnels_refuses_with_503(ws_backend_factory, lb_factory):
    backend = ws_backend_factory()
    admin_port = free_port()
    lb = lb_factory([backend], "--max-tunnels", "2", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    first, second = open_tunnel(lb.port), open_tunnel(lb.port)
    third = WsClient(lb.port, "/ws")
    status, headers = third.handshake()
    body = third.read_body(headers)
    assert (status, body) == (503, b"Too many WebSocket connections open (max_tunnels), try again later\n")
    assert header(headers, "Retry-After") == ["1"]
    # The refused connection goes on as HTTP.
    third.sock.sendall(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers = third.handshake()
    assert (status, third.read_body(headers)) == (200, b"plain GET /plain\n")
    assert len(records(backend)) == 3  # two upgrades and /plain: never the refused one
    m = scrape(admin_port)
    assert (metric(m, "agora_lb_tunnels"), metric(m, "agora_lb_tunnels_refused_total")) == (2, 1)
    first.close()
    assert wait_for(lambda: scrape(admin_port)[("agora_lb_tunnels", frozenset())] == 1, 5)
    with open_tunnel(lb.port) as fourth:
        fourth.send(OP_TEXT, b"room again")
        assert fourth.recv() == (OP_TEXT, b"room again")
    second.close()
    third.close()


def test_an_upgrade_is_never_retried_once_sent(lb_factory):
    """Two backends that reset the connection after reading a request: a plain GET is retried on
    the other one (it is safe to repeat), an upgrade is not: 502, and exactly one backend saw it."""
    with CaptureBackend(mode="reset") as a, CaptureBackend(mode="reset") as b:
        lb = lb_factory([a.port, b.port], "--passive-health", "off", "--retries", "2")
        status, _, _ = http_request(LOCALHOST, lb.port, "GET", "/plain")
        assert status == 502
        assert len(a.requests) + len(b.requests) == 2  # tried on both
        with WsClient(lb.port, "/ws") as c:
            status, headers = c.handshake()
            assert (status, c.read_body(headers)) == (502, b"Error communicating with backend server\n")
        assert len(a.requests) + len(b.requests) == 3


def test_tunnel_timeout_must_be_positive(agora_bin):
    import subprocess

    proc = subprocess.run([str(agora_bin), "lb", "--tunnel-timeout", "0", "--admin-listen", "off"],
                          capture_output=True, text=True, timeout=10)
    assert (proc.returncode, proc.stderr.strip()) == (1, "agora lb: tunnel-timeout must be greater than 0")


# ---------------------------------------------------------------- no 101: plain HTTP goes on


@pytest.mark.parametrize("status", [400, 200, 426])
def test_backend_refusing_the_upgrade_continues_as_http(ws, status):
    lb, backend = ws
    with WsClient(lb.port, "/ws?status=%d" % status, send=False) as c:
        # The upgrade request and a pipelined one in the same packet.
        c.sock.sendall(c.request + b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        got, headers = c.handshake()
        assert (got, c.read_body(headers)) == (status, b"no upgrade: %d\n" % status)
        assert header(headers, "Upgrade") == []
        assert header(headers, "Connection") == []  # kept alive
        got, headers = c.handshake()
        assert (got, c.read_body(headers)) == (200, b"plain GET /next\n")
    seen = records(backend)
    assert [r["target"] for r in seen] == ["/ws?status=%d" % status, "/next"]
    assert seen[1]["upgrade"] is None
    assert ["X-Forwarded-For", LOCALHOST] in seen[1]["headers"]  # parsed and rewritten by the balancer


def test_backend_switching_to_another_protocol_is_502(ws):
    lb, _ = ws
    with WsClient(lb.port, "/ws?protocol=h2c") as c:
        status, headers = c.handshake()
        assert (status, c.read_body(headers)) == (502, b"Backend switched to a protocol other than the WebSocket asked "
                                                       b"for\n")


# ---------------------------------------------------------------- hostile and odd requests


@pytest.mark.parametrize("name,request_head", [
    ("no Connection: upgrade", b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"),
    ("h2c", b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
    ("HTTP/1.0", b"GET /ws HTTP/1.0\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"),
    ("POST", b"POST /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n"),
    ("two protocols", b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\n"),
])
def test_other_upgrades_go_as_plain_requests(ws, name, request_head):
    """No tunnel: the backend gets a plain request without Upgrade (and HTTP2-Settings, which
    Connection lists), and the bytes sent after it are parsed as HTTP by the balancer: a
    WebSocket frame there is a 400, and never reaches the backend."""
    lb, backend = ws
    with RawConnection(lb.port) as conn:
        conn.send(request_head + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" + frame(OP_TEXT, b"x" * 40))
        status, headers, body = conn.read_response()
        assert (status, body) == (200, b"plain %s /ws\n" % request_head.split(b" ")[0])
        assert "upgrade" not in headers
        if name == "HTTP/1.0":
            assert conn.read_until_closed() == b""  # not kept alive: the frame is never read as anything
        else:
            status, _, _ = conn.read_response()
            assert status == 400  # the frame, read as a request head
    (seen,) = records(backend)
    assert (seen["upgrade"], seen["connection"]) == (None, None)
    assert "HTTP2-Settings" not in [k for k, _ in seen["headers"]]


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\n\r\nhello", b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"])
def test_upgrade_with_a_body_is_a_plain_request_and_cannot_smuggle(ws, framing):
    """An upgrade request with a body (the smuggling attempt: a proxy that tunnelled it would pass
    the bytes after the body raw to a backend that did not switch) is forwarded as a plain request
    with its body; what follows is parsed by the balancer as the next request."""
    lb, backend = ws
    with RawConnection(lb.port) as conn:
        conn.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + framing +
                  b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
        assert conn.read_response()[0::2] == (200, b"plain GET /ws\n")
        assert conn.read_response()[0::2] == (200, b"plain GET /smuggled\n")
    first, second = records(backend)
    assert (first["upgrade"], first["body"]) == (None, 5)
    assert second["target"] == "/smuggled"
    assert ["X-Forwarded-For", LOCALHOST] in second["headers"]


def test_101_to_a_request_that_did_not_ask_is_never_a_tunnel(lb_factory):
    """A backend answering 101 to a plain request: the balancer treats it as an interim answer
    and waits for a final one (none comes: 504); the client's later bytes never reach the backend
    raw."""
    with CaptureBackend(response=b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\n\r\n") as backend:
        lb = lb_factory([backend.port], "--response-timeout", "1s")
        with RawConnection(lb.port) as conn:
            conn.send(b"GET /plain HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\r\n" + frame(OP_TEXT, b"raw bytes"))
            status, _, _ = conn.read_response()
            assert status == 504
        (sent,) = backend.connections()
        assert sent.startswith(b"GET /plain HTTP/1.1\r\n") and b"raw bytes" not in sent
        assert b"upgrade" not in sent.lower()


def test_web_server_still_refuses_upgrades(tmp_path, agora_server_factory):
    port = free_port()
    agora_server_factory(port, tmp_path / "agora.db")
    with WsClient(port, "/ws") as c:
        status, headers = c.handshake()
        assert status == 501


# ---------------------------------------------------------------- balancing, drains, stops


def test_least_conn_counts_a_tunnel_as_in_flight(ws_backend_factory, lb_factory):
    a, b = ws_backend_factory(), ws_backend_factory()
    lb = lb_factory([a, b], "--policy", "least-conn")
    with open_tunnel(lb.port) as c:
        stats = lb_server_stats(lb.port)
        busy = [url for url, s in stats.items() if s["in_flight"] == 1]
        assert len(busy) == 1
        other = b if busy[0].endswith(":%d" % a.port) else a
        for _ in range(20):
            status, headers, body = http_request(LOCALHOST, lb.port, "GET", "/plain")
            assert (status, headers["x-backend"]) == (200, "ws:%d" % other.port)
        c.send(OP_TEXT, b"still here")
        assert c.recv() == (OP_TEXT, b"still here")
    assert wait_for(lambda: all(s["in_flight"] == 0 for s in lb_server_stats(lb.port).values()), 5)


def test_drain_lets_tunnels_run_for_the_shutdown_timeout(ws_backend_factory, lb_factory):
    backend = ws_backend_factory()
    admin_port = free_port()
    lb = lb_factory([backend], "--shutdown-timeout", "2s", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    key = "%s:%d" % (LOCALHOST, backend.port)
    with open_tunnel(lb.port) as c:
        status, doc = admin_request(admin_port, "POST", "/servers/%s/drain" % key, body={})
        assert (status, doc["in_flight"]) == (202, 1)
        t0 = time.monotonic()
        time.sleep(0.5)
        c.send(OP_TEXT, b"during the drain")
        assert c.recv() == (OP_TEXT, b"during the drain")
        assert c.ends(6) == "eof"
        elapsed = time.monotonic() - t0
    assert 2.0 <= elapsed <= 3.6, elapsed  # shutdown timeout, seen within the once-a-second check
    status, doc = admin_request(admin_port, "GET", "/servers")
    assert wait_for(lambda: admin_request(admin_port, "GET", "/servers")[1]["servers"] == [], 3)


def test_graceful_stop_lets_tunnels_finish_then_closes_them(ws_backend_factory, lb_factory):
    backend = ws_backend_factory()
    lb = lb_factory([backend], "--shutdown-timeout", "2s")
    with open_tunnel(lb.port) as c:
        lb.popen.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        time.sleep(0.5)
        c.send(OP_TEXT, b"while stopping")
        assert c.recv() == (OP_TEXT, b"while stopping")
        assert c.ends(6) == "eof"
        assert 1.8 <= time.monotonic() - t0 <= 4.0
    assert lb.wait(5) == 0


# ---------------------------------------------------------------- metrics and the access log


def test_metrics_and_access_log_line(ws_backend_factory, lb_factory, tmp_path):
    backend = ws_backend_factory()
    admin_port = free_port()
    log = tmp_path / "access.log"
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), "--access-log", log,
                    "--access-log-format", "json")
    sent = [frame(OP_TEXT, b"abc"), frame(OP_BINARY, b"\x01" * 1000), frame(OP_CLOSE, b"\x03\xe8")]
    with open_tunnel(lb.port) as c:
        m = scrape(admin_port)
        assert (metric(m, "agora_lb_tunnels"), metric(m, "agora_lb_tunnels_total")) == (1, 1)
        for f in sent:
            c.sock.sendall(f)
        assert c.recv() == (OP_TEXT, b"abc")
        assert c.recv() == (OP_BINARY, b"\x01" * 1000)
        time.sleep(0.3)
        assert c.recv() == (OP_CLOSE, b"\x03\xe8")
        assert c.ends(5) == "eof"
    to_server = sum(len(f) for f in sent)
    to_client = (2 + 3) + (4 + 1000) + (2 + 2)  # the echo, unmasked
    m = wait_for(lambda: (lambda m: m if m[("agora_lb_tunnels", frozenset())] == 0 else None)(scrape(admin_port)), 5)
    assert metric(m, "agora_lb_tunnel_bytes_total", direction="to_server") == to_server
    assert metric(m, "agora_lb_tunnel_bytes_total", direction="to_client") == to_client
    assert wait_for(lambda: log.exists() and log.read_text().strip(), 3)
    (line,) = [json.loads(l) for l in log.read_text().splitlines()]
    assert (line["status"], line["request"], line["bytes"], line["tunnel_to_server"]) == (
        101, "GET /ws HTTP/1.1", to_client, to_server)
    assert line["total_ms"] >= 300


# ---------------------------------------------------------------- many tunnels


def test_1000_idle_tunnels_while_normal_traffic_is_served(ws_backend_factory, lb_factory, agora_bin):
    raise_fd_limit(4096)  # before the backend starts: it inherits the limit
    backend = ws_backend_factory()
    admin_port = free_port()
    # All from one address: past the default per-address limit of 1000 connections.
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), "--max-conns-per-ip", "2000")
    tunnels = []
    try:
        tunnels.append(open_tunnel(lb.port))
        base = rss_kib(lb.pid)
        for _ in range(999):
            tunnels.append(open_tunnel(lb.port))
        assert metric(scrape(admin_port), "agora_lb_tunnels") == 1000
        # About 6 KB each (the exchange, both connections' state; no buffer while idle). Not under
        # ASan, whose redzones and quarantine make resident memory meaningless here.
        if "asan" not in str(agora_bin):
            assert rss_kib(lb.pid) - base < 10 * 1024
        worst = 0.0
        for i in range(200):
            t0 = time.monotonic()
            status, _, body = http_request(LOCALHOST, lb.port, "GET", "/plain/%d" % i)
            worst = max(worst, time.monotonic() - t0)
            assert (status, body) == (200, b"plain GET /plain/%d\n" % i)
        assert worst < 0.5, worst
        for c in (tunnels[0], tunnels[499], tunnels[-1]):
            c.send(OP_TEXT, b"alive")
            assert c.recv() == (OP_TEXT, b"alive")
    finally:
        for c in tunnels:
            c.close()
    assert wait_for(lambda: metric(scrape(admin_port), "agora_lb_tunnels") == 0, 10)
