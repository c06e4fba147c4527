"""agora lb --stats-access public|loopback|off: who gets the balancer's own GET /stats.

public (the default, for compatibility): every client. loopback: only clients whose TCP peer is
a loopback address; others get 403, as from an nginx `allow 127.0.0.1; deny all;` or a HAProxy
`http-request deny` on a stats page. off: /stats is not the balancer's any more; it is proxied
to the backends like any other path. /health stays the balancer's own in every mode.

A non-loopback peer without leaving the machine: a client socket bound to this host's own
non-loopback address (the one the kernel would use for an outside route) connecting to the
balancer on 127.0.0.1. The traffic stays on the loopback interface; the peer address is not
127.x. Skipped on a machine without such an address.
"""

import json

import pytest

from helpers import (LOCALHOST, connect_from, free_port, get_from, http_request, own_outside_address, parse_responses,
                     read_to_close, record_lines, start_process, wait_for)

HOST = {"Host": "x"}
FORBIDDEN = b"/stats is only available from loopback (--stats-access loopback)\n"


def exchange_from(source_ip, port, data):
    """Sends data from a socket bound to source_ip and returns all it gets until the close."""
    with connect_from(source_ip, port) as sock:
        sock.sendall(data)
        return read_to_close(sock)


@pytest.fixture
def outside_ip():
    ip = own_outside_address()
    if ip is None:
        pytest.skip("no non-loopback address on this machine")
    return ip


def test_default_is_public(testbackend_factory, lb_factory, outside_ip):
    a = testbackend_factory("A")
    lb = lb_factory([a])
    for source in (LOCALHOST, outside_ip):
        status, headers, body = get_from(source, lb.port, "/stats", HOST)
        assert status == 200 and "x-backend" not in headers
        assert [s["address"] for s in json.loads(body)["servers"]] == ["%s:%d" % (LOCALHOST, a.port)]


def test_loopback_answers_loopback_peers_and_refuses_others(testbackend_factory, lb_factory, outside_ip, tmp_path):
    record = tmp_path / "a.txt"
    a = testbackend_factory("A", "--record", str(record))
    lb = lb_factory([a], "--stats-access", "loopback")
    status, headers, body = get_from(LOCALHOST, lb.port, "/stats", HOST)
    assert status == 200 and json.loads(body)["servers"][0]["address"] == "%s:%d" % (LOCALHOST, a.port)
    status, headers, body = get_from(outside_ip, lb.port, "/stats", HOST)
    assert (status, body) == (403, FORBIDDEN)
    assert "x-backend" not in headers
    # /health stays the balancer's own, and other paths are proxied as before, for every peer.
    assert get_from(outside_ip, lb.port, "/health", HOST)[::2] == (200, b"OK")
    status, headers, _ = get_from(outside_ip, lb.port, "/", HOST)
    assert (status, headers["x-backend"]) == (200, "A")
    assert [line for line in record_lines(record) if line != "GET /health"] == ["GET /"]


def test_loopback_refusal_keeps_the_connection_usable(testbackend_factory, lb_factory, outside_ip):
    lb = lb_factory([testbackend_factory("A")], "--stats-access", "loopback")
    data = exchange_from(outside_ip, lb.port,
                         b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stats HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    responses = parse_responses(data, head=(1,))
    assert [(s, b) for s, _, b in responses] == [(403, FORBIDDEN), (403, b""), (200, responses[2][2])]
    assert responses[2][1]["x-backend"] == "A"


def test_off_proxies_stats_to_the_backends(testbackend_factory, lb_factory, tmp_path):
    record = tmp_path / "a.txt"
    a = testbackend_factory("A", "--record", str(record))
    # (lb_factory cannot wait for the first health check through /stats here: the record shows it.)
    lb = lb_factory([a], "--stats-access", "off", wait_checked=False)
    assert wait_for(lambda: "GET /health" in record_lines(record), 5.0)
    status, headers, _ = wait_for(lambda: (lambda r: r if r[0] != 503 else None)(
        http_request(LOCALHOST, lb.port, "GET", "/stats")), 5.0)
    assert (status, headers["x-backend"]) == (200, "A")
    assert [line for line in record_lines(record) if line != "GET /health"] == ["GET /stats"]
    # The balancer still answers its own /health.
    status, headers, body = http_request(LOCALHOST, lb.port, "GET", "/health")
    assert (status, body) == (200, b"OK") and "x-backend" not in headers


@pytest.mark.parametrize("value", ["private", "", "Loopback", "on"])
def test_bad_stats_access_values_are_refused(agora_bin, value):
    proc = start_process([agora_bin, "lb", "--listen", "%s:%d" % (LOCALHOST, free_port()), "--admin-listen", "off",
                          "--stats-access", value], ready_text=None)
    assert proc.wait(timeout=10) == 1
    assert proc.output() == "agora lb: stats-access must be public, loopback or off\n"
