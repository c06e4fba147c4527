"""agora lb: the admin API (--admin-listen) and `agora ctl --admin ADDR`, exact answers.

GET /servers is the /stats document; POST /servers {"url", "weight"?} adds a server (201, 409 if
it is there, 422 if the URL is bad, 400 if the body is not what is expected); DELETE
/servers/{host:port} removes one (200, then 404); PUT /servers/{host:port}/weight {"weight": N}
(1..1000) re-weights it. Round-robin with slow start off (lb_factory's default) makes the effect
of each change on the traffic exact. Drain, park and enable: test_ft_drain.py. Every call carries
the token the balancer generated (admin_request reads its token file; `agora ctl` finds it by
itself). Host check, token, body type and throttling: test_ft_admin_security.py.
"""

import json
import subprocess

import pytest

from helpers import (
    LOCALHOST,
    admin_request,
    admin_token_path,
    backend_url,
    free_port,
    http_request,
    lb_stats,
    wait_for,
)


@pytest.fixture
def two_and_admin(testbackend_factory, lb_factory):
    """(lb, admin port, A, B, C): A and B in the set, C running but not added."""
    a, b, c = [testbackend_factory(name) for name in "ABC"]
    admin_port = free_port()
    lb = lb_factory([a, b], "--policy", "round-robin", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    return lb, admin_port, a, b, c


def addr(backend):
    return "%s:%d" % (LOCALHOST, backend.port)


def served_by(lb, n):
    return [http_request(LOCALHOST, lb.port, "GET", "/")[1]["x-backend"] for _ in range(n)]


def ctl(agora_bin, admin_port, *args):
    proc = subprocess.run([str(agora_bin), "ctl", "--admin", "%s:%d" % (LOCALHOST, admin_port), *args],
                          capture_output=True, text=True, timeout=20)
    return proc.returncode, proc.stdout, proc.stderr


def test_get_servers_is_the_stats_document(two_and_admin):
    lb, admin_port, a, b, _ = two_and_admin
    status, doc = admin_request(admin_port, "GET", "/servers")
    assert status == 200
    assert doc["health"] == {backend_url(a): True, backend_url(b): True}
    assert [s["address"] for s in doc["servers"]] == [addr(a), addr(b)]
    assert set(doc) == set(lb_stats(lb.port))


def test_add_reweight_and_remove(two_and_admin):
    lb, admin_port, a, b, c = two_and_admin

    status, answer = admin_request(admin_port, "POST", "/servers", {"url": backend_url(c), "weight": 2})
    assert (status, answer) == (201, {"added": backend_url(c), "address": addr(c), "weight": 2})
    assert wait_for(lambda: lb_stats(lb.port)["health"].get(backend_url(c)), 5.0)
    assert sorted(served_by(lb, 8)) == ["A"] * 2 + ["B"] * 2 + ["C"] * 4

    status, answer = admin_request(admin_port, "POST", "/servers", {"url": backend_url(c)})
    assert (status, answer) == (409, {"error": "server already in the set"})

    status, answer = admin_request(admin_port, "PUT", "/servers/%s/weight" % addr(a), {"weight": 4})
    assert (status, answer) == (200, {"address": addr(a), "weight": 4})
    assert sorted(served_by(lb, 7)) == ["A"] * 4 + ["B"] + ["C"] * 2

    status, answer = admin_request(admin_port, "DELETE", "/servers/%s" % addr(c))
    assert (status, answer) == (200, {"removed": backend_url(c)})
    assert sorted(served_by(lb, 5)) == ["A"] * 4 + ["B"]
    status, answer = admin_request(admin_port, "DELETE", "/servers/%s" % addr(c))
    assert status == 404
    assert lb.wait_for_output("agora lb: admin: added %s\n" % backend_url(c))
    assert lb.wait_for_output("agora lb: admin: removed %s\n" % backend_url(c))


def test_new_server_that_fails_its_first_check_gets_no_traffic(two_and_admin):
    lb, admin_port, a, b, c = two_and_admin
    c.popen.kill()
    c.popen.wait(timeout=5)
    status, _ = admin_request(admin_port, "POST", "/servers", {"url": backend_url(c)})
    assert status == 201
    assert wait_for(lambda: lb_stats(lb.port)["servers"][2]["last_check"] != "not checked yet", 5.0)
    assert lb_stats(lb.port)["health"][backend_url(c)] is False
    assert sorted(served_by(lb, 6)) == ["A"] * 3 + ["B"] * 3


@pytest.mark.parametrize("method,path,body,status,error", [
    ("POST", "/servers", {"url": "ftp://127.0.0.1:1"}, 422, "backend 'ftp://127.0.0.1:1': only http:// backends are supported"),
    # Regression: the message quotes the client's text; quotes, backslashes and control characters are escaped.
    ("POST", "/servers", {"url": 'ftp://"q"\\\x01\n\t'}, 422,
     "backend 'ftp://\"q\"\\\x01\n\t': only http:// backends are supported"),
    ("POST", "/servers", {"url": "http://127.0.0.1:1", "weight": 0}, 422,
     "backend 'http://127.0.0.1:1,weight=0': weight must be an integer from 1 to 1000"),
    ("POST", "/servers", {"weight": 1}, 400, 'expected {"url": string, "weight": integer}'),
    ("POST", "/servers", {"url": "http://127.0.0.1:1", "weight": "2"}, 400, 'expected {"url": string, "weight": integer}'),
    ("POST", "/servers", [1], 400, "request body must be a JSON object"),
    ("PUT", "/servers/{a}/weight", {"weight": 0}, 422, "weight must be an integer from 1 to 1000"),
    ("PUT", "/servers/{a}/weight", {"weight": 1001}, 422, "weight must be an integer from 1 to 1000"),
    ("POST", "/servers/{a}/drain", {"then": "explode"}, 422, 'then must be "remove" or "park"'),
    ("GET", "/servers/{a}/weight", None, 405, "method not allowed"),
    ("DELETE", "/servers", None, 405, "method not allowed"),
    ("GET", "/nothing", None, 404, "no such admin route"),
    ("POST", "/servers/{a}/explode", {}, 404, "no such admin route"),
    ("DELETE", "/servers/127.0.0.1:1", None, 404, "no such server in the set (use host:port as shown by GET /servers)"),
])
def test_bad_admin_requests(two_and_admin, method, path, body, status, error):
    lb, admin_port, a, b, _ = two_and_admin
    got = admin_request(admin_port, method, path.format(a=addr(a)), body)
    assert got == (status, {"error": error})
    # Nothing changed.
    assert [s["address"] for s in lb_stats(lb.port)["servers"]] == [addr(a), addr(b)]
    assert [s["weight"] for s in lb_stats(lb.port)["servers"]] == [1, 1]


def test_agora_ctl_add_weight_remove(agora_bin, two_and_admin):
    lb, admin_port, a, b, c = two_and_admin

    rc, out, err = ctl(agora_bin, admin_port, "add", backend_url(c), "--weight", "3")
    assert (rc, json.loads(out), err) == (0, {"added": backend_url(c), "address": addr(c), "weight": 3}, "")
    assert wait_for(lambda: lb_stats(lb.port)["health"].get(backend_url(c)), 5.0)
    assert sorted(served_by(lb, 5)) == ["A", "B", "C", "C", "C"]

    rc, out, err = ctl(agora_bin, admin_port, "weight", addr(c), "1")
    assert (rc, json.loads(out), err) == (0, {"address": addr(c), "weight": 1}, "")
    assert sorted(served_by(lb, 3)) == ["A", "B", "C"]

    rc, out, err = ctl(agora_bin, admin_port, "remove", addr(c))
    assert (rc, json.loads(out), err) == (0, {"removed": backend_url(c)}, "")
    rc, out, err = ctl(agora_bin, admin_port, "remove", addr(c))
    assert rc == 1 and out == ""
    assert "no such server in the set" in err

    rc, out, err = ctl(agora_bin, admin_port, "weight", addr(a), "0")
    assert (rc, out, err) == (2, "", "agora ctl: weight must be 1..1000\n")


def test_agora_ctl_reports_an_unreachable_admin_api(agora_bin):
    rc, out, err = ctl(agora_bin, free_port(), "list")
    assert (rc, out) == (1, "")
    assert err.startswith("agora ctl: ")


def test_a_configured_token_is_required_from_loopback_too(testbackend_factory, lb_factory):
    # --admin-token (or AGORA_ADMIN_TOKEN) replaces the generated token; loopback clients are
    # not exempt (any local process, or a browser page, is a loopback client). No file is written.
    admin_port = free_port()
    token = "s3cret-s3cret-s3cret"
    lb = lb_factory([testbackend_factory("A")], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
                    "--admin-token", token)
    assert lb.wait_for_output("agora lb: admin API on %s:%d\n" % (LOCALHOST, admin_port))
    assert admin_request(admin_port, "GET", "/servers", token=None)[0] == 401
    assert admin_request(admin_port, "GET", "/servers", token="wrong")[0] == 401
    assert admin_request(admin_port, "GET", "/servers", token=token[:-1])[0] == 401
    assert admin_request(admin_port, "GET", "/servers", token=token)[0] == 200
    assert not admin_token_path(admin_port).exists()
    assert "token generated" not in lb.output()
