"""agora lb: start-up errors and graceful stop.

SIGTERM stops accepting, lets requests in flight finish (up to --shutdown-timeout), closes idle
keep-alive connections at once and exits 0.
"""

import http.client
import signal
import socket
import threading

import pytest

from helpers import LOCALHOST, RawConnection, backend_url, free_port, http_request, lb_stats, start_process, wait_for

STOP_WAIT = 5.0  # seconds: a bound on how long stopping may take, not a speed target


def refuses_connections(port):
    try:
        socket.create_connection((LOCALHOST, port), timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        return True


def in_flight(lb):
    return sum(lb_stats(lb.port)["connections"].values())


def test_sigterm_lets_requests_in_flight_finish(testbackend_factory, lb_factory):
    lb = lb_factory([testbackend_factory("A")], "--shutdown-timeout", "30s")
    result = {}

    def slow():
        result["r"] = http_request(LOCALHOST, lb.port, "GET", "/delay?ms=1000", timeout=10)

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert wait_for(lambda: in_flight(lb) == 1, 5)
        lb.popen.send_signal(signal.SIGTERM)
        assert lb.wait_for_output("agora lb: stopping", 5)
        # No new clients while stopping...
        assert wait_for(lambda: refuses_connections(lb.port), 2)
    finally:
        thread.join(timeout=10)
    # ...but the request in flight got its whole response.
    status, headers, body = result["r"]
    assert (status, body) == (200, b"delayed 1000 ms\n")
    assert lb.wait(timeout=STOP_WAIT) == 0
    assert "agora lb: stopped" in lb.output()


def test_response_finished_while_stopping_announces_the_close(testbackend_factory, lb_factory):
    lb = lb_factory([testbackend_factory("A")], "--shutdown-timeout", "30s")
    with RawConnection(lb.port) as conn:
        conn.send(b"GET /delay?ms=500 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_for(lambda: in_flight(lb) == 1, 5)
        lb.popen.send_signal(signal.SIGTERM)
        status, headers, body = conn.read_response()
        assert (status, body) == (200, b"delayed 500 ms\n")
        assert conn.read_until_closed() == b""
    assert lb.wait(timeout=STOP_WAIT) == 0
    assert headers.get("connection") == "close"


def test_idle_keep_alive_connections_do_not_delay_the_stop(testbackend_factory, lb_factory):
    lb = lb_factory([testbackend_factory("A")], "--shutdown-timeout", "60s")
    conn = http.client.HTTPConnection(LOCALHOST, lb.port, timeout=5)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"hello from A\n")
        lb.popen.send_signal(signal.SIGTERM)
        assert lb.wait(timeout=STOP_WAIT) == 0  # not 60 s: the idle connection was closed
        assert conn.sock.recv(1) == b""
    finally:
        conn.close()


def test_shutdown_timeout_ends_requests_that_take_too_long(testbackend_factory, lb_factory):
    lb = lb_factory([testbackend_factory("A")], "--shutdown-timeout", "300ms")
    result = {}

    def slow():
        try:
            result["r"] = http_request(LOCALHOST, lb.port, "GET", "/delay?ms=20000", timeout=30)
        except (http.client.HTTPException, OSError) as err:
            result["r"] = err

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert wait_for(lambda: in_flight(lb) == 1, 5)
        lb.popen.send_signal(signal.SIGTERM)
        assert lb.wait(timeout=STOP_WAIT) == 0
    finally:
        thread.join(timeout=10)
    # Cut off: the client saw the connection close without a response.
    assert isinstance(result["r"], (http.client.RemoteDisconnected, ConnectionResetError)), result["r"]


@pytest.mark.parametrize("args, message", [
    (["--policy", "fastest"], "agora lb: unknown policy 'fastest'"),
    (["--backend", "ftp://127.0.0.1:1"], "only http:// backends are supported"),
    (["--health-interval", "soon"], "is not a duration"),
    (["--no-such-flag", "1"], "unknown option '--no-such-flag'"),
    (["--config", "/nonexistent/lb.ini"], "/nonexistent/lb.ini: cannot open"),
])
def test_bad_start_up_settings_are_refused(agora_bin, args, message):
    proc = start_process([agora_bin, "lb", "--listen", "127.0.0.1:%d" % free_port(), "--admin-listen", "off"] + args,
                         ready_text=None)
    try:
        assert proc.wait(timeout=5) != 0
        assert message in proc.output()
        assert "listening on" not in proc.output()
    finally:
        proc.stop()


def test_listen_address_in_use_is_refused(agora_bin, testbackend_factory):
    busy = testbackend_factory("busy")
    proc = start_process([agora_bin, "lb", "--listen", "127.0.0.1:%d" % busy.port, "--admin-listen", "off",
                          "--backend", backend_url(busy)], ready_text=None)
    try:
        assert proc.wait(timeout=5) == 1
        assert "agora lb: cannot listen on 127.0.0.1:%d: Address already in use" % busy.port in proc.output()
    finally:
        proc.stop()
