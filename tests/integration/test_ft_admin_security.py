"""agora lb: the admin API trusts no client by default (issue 9, item 5).

Every request must carry "Authorization: Bearer TOKEN". Without --admin-token the balancer
generates a token at start (256 random bits, hex) and writes it, mode 0600, to its token file
(--admin-token-file, default $XDG_RUNTIME_DIR/agora-admin-PORT.token or
/tmp/agora-UID/admin-PORT.token); `agora ctl` reads it from there. Before the token, the Host
header must name this machine by a loopback name or the admin address (DNS rebinding defence)
→ 403; after it, a body must be Content-Type: application/json → 415. After ten wrong tokens
from one address in a minute, further wrong tokens get 429 for the rest of that minute; the
right token is always accepted (no local process can lock the operator out). An admin
address that is not loopback needs a configured token or the balancer does not start.

The reproduction: a web page whose name an attacker re-points at 127.0.0.1 (DNS rebinding)
posts a text/plain body (no CORS preflight) that adds the attacker's server to the set.
"""

import json
import os
import stat
import subprocess

import pytest

from helpers import (
    LOCALHOST,
    admin_request,
    admin_token,
    admin_token_path,
    backend_url,
    free_port,
    http_request,
    lb_stats,
    parse_responses,
    raw_exchange,
    record_lines,
    silent_connections,
    start_process,
    wait_for,
)

HOST_REFUSED = ("admin API: the Host header must be localhost, a loopback address or the admin address "
                "(DNS rebinding defence)")
NO_TOKEN = ("admin API: missing bearer token (send Authorization: Bearer TOKEN; see agora lb --help for where "
            "the token is)")
WRONG_TOKEN = ("admin API: wrong bearer token (send Authorization: Bearer TOKEN; see agora lb --help for where "
               "the token is)")
NOT_JSON = "admin API: request bodies must be Content-Type: application/json"


@pytest.fixture
def admin_lb(testbackend_factory, lb_factory, tmp_path):
    """(lb, admin port, A, C, C's record file): A in the set; C, the attacker's server, running
    but not added (its --record file shows whether the balancer ever sent it anything)."""
    a = testbackend_factory("A")
    record = tmp_path / "c.txt"
    c = testbackend_factory("C", "--record", str(record))
    admin_port = free_port()
    lb = lb_factory([a], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    return lb, admin_port, a, c, record


def addresses(admin_port):
    status, doc = admin_request(admin_port, "GET", "/servers")
    assert status == 200
    return [s["address"] for s in doc["servers"]]


def call(admin_port, method, path, headers, body=b""):
    """One request with exactly these headers (http.client adds no Host when one is given)."""
    status, hdrs, raw = http_request(LOCALHOST, admin_port, method, path, headers=headers, body=body or None)
    return status, hdrs, json.loads(raw) if raw else None


def test_dns_rebinding_reproduction_is_refused(admin_lb):
    lb, admin_port, a, c, record = admin_lb
    body = json.dumps({"url": backend_url(c)}).encode()
    # As the attacker's page sends it: its own name as Host, a text/plain body, no token.
    status, headers, doc = call(admin_port, "POST", "/servers",
                                {"Host": "rebind.evil.example", "Content-Type": "text/plain"}, body)
    assert (status, doc) == (403, {"error": HOST_REFUSED})
    # The Host check does not depend on the rest: a right token and a JSON body are refused too.
    status, _, doc = call(admin_port, "POST", "/servers",
                          {"Host": "rebind.evil.example:%d" % admin_port, "Content-Type": "application/json",
                           "Authorization": "Bearer " + admin_token(admin_port)}, body)
    assert (status, doc) == (403, {"error": HOST_REFUSED})
    # Nothing changed, as the admin list and /stats show, and C never heard from the balancer.
    assert addresses(admin_port) == ["%s:%d" % (LOCALHOST, a.port)]
    assert [s["address"] for s in lb_stats(lb.port)["servers"]] == ["%s:%d" % (LOCALHOST, a.port)]
    assert record_lines(record) == []
    assert lb.wait_for_output("agora lb: admin: refused 127.0.0.1: Host 'rebind.evil.example' is not this "
                              "machine's admin address\n")


@pytest.mark.parametrize("host", [
    "rebind.evil.example",
    "127.0.0.1.evil.example",
    "localhost.evil.example",
    "evil.localhost",
    "127.1",             # not a dotted quad: a name as far as we know
    "0x7f.0.0.1",
    "[::1].evil.example",
    "[::2]",
    "192.0.2.7",          # an IP literal, but not this admin address (127.0.0.1)
    "localhost:80x",
    "[::1",
    "",
])
def test_hosts_that_do_not_name_the_admin_api_are_refused(admin_lb, host):
    lb, admin_port, a, c, _ = admin_lb
    status, _, doc = call(admin_port, "GET", "/servers",
                          {"Host": host, "Authorization": "Bearer " + admin_token(admin_port)})
    assert (status, doc) == (403, {"error": HOST_REFUSED})


@pytest.mark.parametrize("host", ["localhost", "LocalHost:{port}", "127.0.0.1", "127.0.0.1:{port}", "127.9.8.7",
                                  "[::1]", "[::1]:{port}", "[::ffff:127.0.0.1]:{port}"])
def test_loopback_hosts_are_accepted(admin_lb, host):
    lb, admin_port, a, c, _ = admin_lb
    status, _, doc = call(admin_port, "GET", "/servers",
                          {"Host": host.format(port=admin_port), "Authorization": "Bearer " + admin_token(admin_port)})
    assert status == 200
    assert [s["address"] for s in doc["servers"]] == ["%s:%d" % (LOCALHOST, a.port)]


def test_an_absolute_form_target_is_refused_whatever_its_host(admin_lb):
    lb, admin_port, a, c, _ = admin_lb
    for target in ("http://rebind.evil.example/servers", "http://127.0.0.1:%d/servers" % admin_port):
        raw = raw_exchange(admin_port, ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                                        "Connection: close\r\n\r\n" % (target, admin_token(admin_port))).encode())
        [(status, _, body)] = parse_responses(raw)
        assert (status, json.loads(body)) == (403, {"error": HOST_REFUSED})


def test_no_token_and_wrong_tokens_get_401_with_www_authenticate(admin_lb):
    lb, admin_port, a, c, _ = admin_lb
    token = admin_token(admin_port)
    body = json.dumps({"url": backend_url(c)}).encode()
    status, headers, doc = call(admin_port, "POST", "/servers", {"Content-Type": "application/json"}, body)
    assert (status, doc) == (401, {"error": NO_TOKEN})
    assert headers["www-authenticate"] == 'Bearer realm="agora-admin"'
    for auth in ("Bearer wrong", "Bearer " + token[:-1], "Bearer " + token + "0", "Bearer " + token.upper(),
                 "Basic " + token, "Bearer  " + token, token):
        status, headers, doc = call(admin_port, "POST", "/servers",
                                    {"Content-Type": "application/json", "Authorization": auth}, body)
        assert (status, doc) == (401, {"error": WRONG_TOKEN}), auth
        assert headers["www-authenticate"] == 'Bearer realm="agora-admin", error="invalid_token"'
    assert addresses(admin_port) == ["%s:%d" % (LOCALHOST, a.port)]
    assert lb.wait_for_output("agora lb: admin: refused 127.0.0.1: no bearer token\n")
    assert lb.wait_for_output("agora lb: admin: refused 127.0.0.1: wrong bearer token (7 of 10 allowed a minute)\n")


def test_the_generated_token_file_is_private_and_its_token_works(admin_lb):
    lb, admin_port, a, c, record = admin_lb
    path = admin_token_path(admin_port)
    assert lb.wait_for_output("agora lb: admin API token generated, in %s (mode 0600)\n" % path)
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, os.geteuid())
    if not os.environ.get("XDG_RUNTIME_DIR", "").startswith("/"):
        dst = os.lstat(path.parent)
        assert stat.S_ISDIR(dst.st_mode) and stat.S_IMODE(dst.st_mode) == 0o700
    token = path.read_text()
    assert len(token) == 65 and token.endswith("\n") and int(token[:64], 16) >= 0  # 256 bits in hex
    status, doc = admin_request(admin_port, "POST", "/servers", {"url": backend_url(c)}, token=token.strip())
    assert (status, doc["added"]) == (201, backend_url(c))
    # The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
    status, _, doc = call(admin_port, "GET", "/servers", {"Authorization": "bearer " + token.strip()})
    assert status == 200 and len(doc["servers"]) == 2
    assert wait_for(lambda: "GET /health" in record_lines(record), 5.0)
    # A clean stop removes the file (the token dies with the balancer).
    assert lb.stop() == 0
    assert not path.exists()


def test_each_start_generates_another_token(testbackend_factory, lb_factory):
    admin_port = free_port()
    backend = testbackend_factory("A")
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    first = admin_token(admin_port)
    assert lb.stop() == 0
    lb = lb_factory([backend], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
    second = admin_token(admin_port)
    assert first != second
    assert admin_request(admin_port, "GET", "/servers", token=first)[0] == 401
    assert admin_request(admin_port, "GET", "/servers", token=second)[0] == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None,
                                          "application/jsonx", "multipart/form-data; boundary=x"])
def test_bodies_that_are_not_declared_json_get_415(admin_lb, content_type):
    lb, admin_port, a, c, record = admin_lb
    headers = {"Authorization": "Bearer " + admin_token(admin_port)}
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps({"url": backend_url(c)}).encode()
    status, _, doc = call(admin_port, "POST", "/servers", headers, body)
    assert (status, doc) == (415, {"error": NOT_JSON})
    status, _, doc = call(admin_port, "PUT", "/servers/%s:%d/weight" % (LOCALHOST, a.port), headers, b'{"weight": 5}')
    assert (status, doc) == (415, {"error": NOT_JSON})
    status, doc = admin_request(admin_port, "GET", "/servers")
    assert [(s["address"], s["weight"]) for s in doc["servers"]] == [("%s:%d" % (LOCALHOST, a.port), 1)]
    assert record_lines(record) == []


def test_json_with_parameters_and_bodiless_posts_are_accepted(admin_lb):
    lb, admin_port, a, c, _ = admin_lb
    auth = {"Authorization": "Bearer " + admin_token(admin_port)}
    status, _, doc = call(admin_port, "POST", "/servers", dict(auth, **{"Content-Type": "Application/JSON; charset=utf-8"}),
                          json.dumps({"url": backend_url(c)}).encode())
    assert (status, doc["added"]) == (201, backend_url(c))
    # enable has no body: no Content-Type needed.
    status, _, doc = call(admin_port, "POST", "/servers/%s:%d/enable" % (LOCALHOST, c.port), auth)
    assert (status, doc) == (200, {"enabled": "%s:%d" % (LOCALHOST, c.port)})


def test_requests_without_a_token_do_not_lock_the_operator_out(admin_lb):
    # Any web page can make a browser send token-less requests to 127.0.0.1:8404; they are
    # refused and logged, never counted towards the throttle.
    lb, admin_port, a, c, _ = admin_lb
    for _ in range(25):
        assert admin_request(admin_port, "GET", "/servers", token=None)[0] == 401
    assert admin_request(admin_port, "GET", "/servers")[0] == 200
    assert "throttling" not in lb.output()


def test_wrong_tokens_are_throttled_per_address(admin_lb):
    lb, admin_port, a, c, _ = admin_lb
    token = admin_token(admin_port)
    for i in range(10):
        assert admin_request(admin_port, "GET", "/servers", token="guess%d" % i)[0] == 401
    assert lb.wait_for_output("agora lb: admin: throttling 127.0.0.1 for 60 s\n")
    # From now on wrong tokens from this address get 429 for the rest of the minute...
    status, headers, doc = call(admin_port, "GET", "/servers", {"Authorization": "Bearer guess10"})
    assert status == 429
    assert 55 <= int(headers["retry-after"]) <= 60
    assert doc == {"error": "admin API: too many failed attempts from 127.0.0.1; retry in %s s"
                   % headers["retry-after"]}
    # ...but the right token still works. Regression: it got 429 too, so any local process could
    # lock the operator and `agora up` out with ten wrong tokens a minute.
    status, _, doc = call(admin_port, "GET", "/servers", {"Authorization": "Bearer " + token})
    assert status == 200, doc
    # The proxy itself is not affected.
    assert http_request(LOCALHOST, lb.port, "GET", "/")[0] == 200


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", ":{port}", "[::]:{port}", "192.0.2.9:{port}"])
def test_a_non_loopback_admin_address_without_a_token_refuses_to_start(agora_bin, listen):
    admin = listen.format(port=free_port())
    env = {k: v for k, v in os.environ.items() if k != "AGORA_ADMIN_TOKEN"}
    proc = start_process([agora_bin, "lb", "--listen", "%s:%d" % (LOCALHOST, free_port()), "--admin-listen", admin,
                          "--backend", "http://127.0.0.1:1"], ready_text=None, env=env)
    assert proc.wait(timeout=10) == 1
    assert proc.output() == ("agora lb: the admin API on %s (not a loopback address) needs a token: set "
                             "--admin-token, [admin] token or AGORA_ADMIN_TOKEN, or bind it to 127.0.0.1\n" % admin)


def test_admin_token_file_is_written_atomically_and_never_through_a_symlink(testbackend_factory, lb_factory,
                                                                             tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    path = tmp_path / "admin.token"
    path.symlink_to(victim)  # an attacker's link where the token goes
    admin_port = free_port()
    lb = lb_factory([testbackend_factory("A")], "--admin-listen", "%s:%d" % (LOCALHOST, admin_port),
                    "--admin-token-file", str(path))
    assert lb.wait_for_output("agora lb: admin API token generated, in %s (mode 0600)\n" % path)
    assert victim.read_text() == "keep me\n"
    assert not path.is_symlink() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin.token", "victim"]  # no temporary left
    assert admin_request(admin_port, "GET", "/servers", token_file=path)[0] == 200
    assert not admin_token_path(admin_port).exists()  # the default place is not used


def test_agora_ctl_finds_the_token_or_says_why_it_was_refused(agora_bin, admin_lb, tmp_path):
    lb, admin_port, a, c, _ = admin_lb
    env = {k: v for k, v in os.environ.items() if k != "AGORA_ADMIN_TOKEN"}

    def ctl(*args):
        proc = subprocess.run([str(agora_bin), "ctl", "--admin", "%s:%d" % (LOCALHOST, admin_port), *args],
                              capture_output=True, text=True, timeout=20, env=env)
        return proc.returncode, proc.stdout, proc.stderr

    rc, out, err = ctl("list")  # the default token file
    assert (rc, err) == (0, "") and "%s:%d" % (LOCALHOST, a.port) in out
    copy = tmp_path / "copy.token"
    copy.write_text(admin_token(admin_port) + "\n")
    rc, out, err = ctl("--token-file", str(copy), "list")
    assert (rc, err) == (0, "")
    rc, out, err = ctl("--token", "wrong", "list")
    assert (rc, out) == (1, "")
    assert err == ("agora ctl: unexpected answer (401): {\"error\": \"%s\"}\n"
                   "agora ctl: the admin API refused the token (from --token)\n" % WRONG_TOKEN)
    rc, out, err = ctl("--token-file", str(tmp_path / "missing"), "list")
    assert (rc, out, err) == (2, "", "agora ctl: cannot read a token from %s: No such file or directory\n"
                              % (tmp_path / "missing"))


def test_one_address_cannot_take_every_admin_connection(admin_lb):
    """Review of issue 13: one address opening silent connections took all 64 of the admin
    listener's (each lasted the 30 s header timeout, then was opened again), so the operator's
    calls, the dashboard and the scrapes of /metrics waited behind them. One address now has at
    most 16; the rest are answered 503 at once."""
    lb, admin_port, a, c, _ = admin_lb
    with silent_connections("127.0.0.2", admin_port, 80) as refused:
        assert refused >= 80 - 16, refused
        assert admin_request(admin_port, "GET", "/servers", timeout=3.0)[0] == 200


def test_an_admin_token_too_long_in_the_environment_does_not_start(agora_bin):
    """Review of issue 13: AGORA_ADMIN_TOKEN longer than 127 characters was cut silently, so an
    operator sending the whole token never matched: now the balancer does not start."""
    env = dict(os.environ, AGORA_ADMIN_TOKEN="x" * 200)
    r = subprocess.run([str(agora_bin), "lb", "--listen", "%s:%d" % (LOCALHOST, free_port()),
                        "--backend", "http://127.0.0.1:1"], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1, r
    assert "AGORA_ADMIN_TOKEN: value too long (at most 127 characters)" in r.stderr, r.stderr
