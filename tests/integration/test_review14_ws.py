"""Review 14: hostile clients and backends against the balancer's WebSocket tunnels.

Accounting and resources after abrupt ends: the agora_lb_tunnels gauge, the balancer's
descriptors and its CPU while tunnels sit idle or half-closed."""

import os
import socket
import struct
import threading
import time

import pytest

from helpers import (LOCALHOST, OP_TEXT, CaptureBackend, RawConnection, WsClient, admin_request, admin_token,
                     free_port, frame, http_request, metric, parse_metrics, start_ws_backend, wait_for)


def scrape(admin_port):
    status, _, body = http_request(LOCALHOST, admin_port, "GET", "/metrics",
                                   headers={"Authorization": "Bearer " + admin_token(admin_port)})
    assert status == 200
    return parse_metrics(body.decode())


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rst(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def wsb():
    proc = start_ws_backend()
    try:
        yield proc
    finally:
        proc.stop()


def test_abrupt_ends_leave_no_tunnel_descriptor_or_gauge(wsb, lb_factory):
    """60 tunnels over 2 workers end in every abrupt way: client reset, client reset with bytes
    queued both ways, backend closing without a close frame, client half-close then reset. The
    gauge returns to 0, the descriptors to what they were, and nothing spins."""
    admin_port = free_port()
    lb = lb_factory([wsb], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), workers=2)
    scrape(admin_port)
    time.sleep(0.5)
    base = fds(lb.pid)
    clients = []
    for i in range(60):
        c = WsClient(lb.port, "/ws")
        status, _ = c.handshake()
        assert status == 101
        clients.append(c)
    assert metric(scrape(admin_port), "agora_lb_tunnels") == 60
    for i, c in enumerate(clients):
        kind = i % 4
        if kind == 0:
            rst(c.sock)
        elif kind == 1:
            c.send(OP_TEXT, b"x" * 200000)  # echoed back: queued in the balancer toward us
            rst(c.sock)
        elif kind == 2:
            c.send(OP_TEXT, b"bye")  # the backend closes its TCP connection
        else:
            c.sock.shutdown(socket.SHUT_WR)
            time.sleep(0.01)
            rst(c.sock)
    for i, c in enumerate(clients):
        if i % 4 == 2:
            assert c.ends(5) in ("eof", "reset", "data")
            c.close()
    assert wait_for(lambda: metric(scrape(admin_port), "agora_lb_tunnels") == 0, 10), scrape(admin_port)
    assert wait_for(lambda: fds(lb.pid) <= base + 2, 10), (fds(lb.pid), base)
    cpu0 = cpu_seconds(lb.pid)
    time.sleep(1.0)
    assert cpu_seconds(lb.pid) - cpu0 < 0.2
