"""agora lb: SIGHUP re-reads --config and applies a changed backend list without a restart.

Servers that stay keep their state and counters, new ones take traffic at once, removed ones
get no new requests but finish those in flight. A config that does not load leaves the running
set untouched and says "reload failed" on stderr.
"""

import os
import signal
import threading

import pytest

from helpers import LOCALHOST, backend_url, http_request, lb_stats, wait_for

RELOADED = "agora lb: reloaded: %d backend(s)"


def write_config(path, backends, extra=""):
    """Writes an INI config listing backends (testbackend Processes) and replaces path
    atomically, so a reload never reads a half-written file."""
    text = "[lb]\npolicy = round-robin\n\n[backends]\n"
    text += "".join("server = %s\n" % backend_url(b) for b in backends)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + extra)
    os.replace(tmp, path)


def reload(lb, count=1):
    """Sends SIGHUP and waits until the balancer has logged `count` reload results in all."""
    lb.popen.send_signal(signal.SIGHUP)
    assert wait_reloads(lb, count), lb.output()


def wait_reloads(lb, count, timeout=5.0):
    def results():
        out = lb.output()
        return out.count("agora lb: reloaded:") + out.count("agora lb: reload failed")

    return wait_for(lambda: results() >= count, timeout)


def names(port, n):
    return [http_request(LOCALHOST, port, "GET", "/")[1]["x-backend"] for _ in range(n)]


@pytest.fixture
def abc(testbackend_factory):
    return [testbackend_factory(name) for name in "ABC"]


def test_reload_applies_a_new_backend_list(abc, lb_factory, tmp_path):
    a, b, c = abc
    config = tmp_path / "lb.ini"
    write_config(config, [a, b])
    lb = lb_factory(None, "--config", config)
    assert lb_stats(lb.port)["policy"] == "round-robin"
    assert names(lb.port, 6) == ["A", "B"] * 3

    write_config(config, [b, c])
    reload(lb)
    assert RELOADED % 2 in lb.output()

    stats = lb_stats(lb.port)
    assert list(stats["health"]) == [backend_url(b), backend_url(c)]
    assert list(stats["connections"]) == [backend_url(b), backend_url(c)]
    assert [s["url"] for s in stats["servers"]] == [backend_url(b), backend_url(c)]
    # A new round-robin cycle over the new set.
    assert names(lb.port, 10) == ["B", "C"] * 5
    # B is the same server as before the reload: its counter went on from 3.
    assert [s["requests"] for s in lb_stats(lb.port)["servers"]] == [3 + 5, 5]


@pytest.mark.parametrize("bad", [
    "[backends]\nserver = ftp://127.0.0.1:1\n",
    "[backends]\nserver = http://127.0.0.1:1,weight=0\n",
    "[lb]\nno_such_setting = 1\n",
    "[health\ninterval = 1s\n",
    None,  # the file is gone
])
def test_bad_config_on_reload_keeps_the_running_set(abc, lb_factory, tmp_path, bad):
    a, b, _ = abc
    config = tmp_path / "lb.ini"
    write_config(config, [a, b])
    lb = lb_factory(None, "--config", config)

    if bad is None:
        config.unlink()
    else:
        config.write_text(bad)
    reload(lb)
    assert "agora lb: reload failed, keeping the running configuration: " in lb.output()
    assert "agora lb: reloaded" not in lb.output()

    stats = lb_stats(lb.port)
    assert [s["url"] for s in stats["servers"]] == [backend_url(a), backend_url(b)]
    assert sorted(names(lb.port, 4)) == ["A", "A", "B", "B"]


def test_duplicate_backend_on_reload_is_refused(abc, lb_factory, tmp_path):
    a, b, _ = abc
    config = tmp_path / "lb.ini"
    write_config(config, [a])
    lb = lb_factory(None, "--config", config)

    write_config(config, [b, b])
    reload(lb)
    assert "reload failed, keeping the running configuration: backend %s is listed twice" % backend_url(b) \
        in lb.output()
    assert [s["url"] for s in lb_stats(lb.port)["servers"]] == [backend_url(a)]


def test_removed_server_finishes_its_requests_in_flight(abc, lb_factory, tmp_path):
    a, b, c = abc
    config = tmp_path / "lb.ini"
    write_config(config, [a, b])
    lb = lb_factory(None, "--config", config)
    result = {}

    def slow():
        result["r"] = http_request(LOCALHOST, lb.port, "GET", "/delay?ms=1000", timeout=10)

    thread = threading.Thread(target=slow)
    thread.start()  # round-robin: the first request goes to A
    try:
        assert wait_for(lambda: lb_stats(lb.port)["connections"][backend_url(a)] == 1, 5)
        write_config(config, [b, c])
        reload(lb)
        assert [s["url"] for s in lb_stats(lb.port)["servers"]] == [backend_url(b), backend_url(c)]
        assert sorted(names(lb.port, 4)) == ["B", "B", "C", "C"]
    finally:
        thread.join(timeout=10)
    status, headers, body = result["r"]
    assert (status, headers["x-backend"], body) == (200, "A", b"delayed 1000 ms\n")


def test_settings_that_need_a_restart_are_reported(abc, lb_factory, tmp_path):
    a, b, _ = abc
    config = tmp_path / "lb.ini"
    write_config(config, [a])
    lb = lb_factory(None, "--config", config)

    config.write_text(config.read_text().replace("round-robin", "least-conn") + "server = %s\n" % backend_url(b))
    reload(lb)
    assert "agora lb: reload: listen, policy, workers and cpu-affinity changes need a restart" in lb.output()
    assert RELOADED % 2 in lb.output()
    stats = lb_stats(lb.port)
    assert stats["policy"] == "round-robin"
    assert [s["url"] for s in stats["servers"]] == [backend_url(a), backend_url(b)]
