"""JSON API through the balancer: routing (404, 405 + Allow), X-Served-By and the spread over the
three servers, JSON-safety of hostile text, the static UI and path traversal, /health.

Every request goes through `agora lb` to one of three `agora server` processes sharing one SQLite
file (the module's api_cluster), except the /health checks of each server.
"""

import collections
import re

import pytest

from helpers import LOCALHOST, RawConnection, http_request, parse_responses

JSON_TYPE = "application/json; charset=utf-8"


def error_of(resp):
    assert resp.headers.get("content-type") == JSON_TYPE, resp.headers
    body = resp.json
    assert set(body) == {"error"}, body
    return body["error"]


# ---------------------------------------------------------------- routing

@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v2/posts", "/api", "/api/", "/api/v1/posts/1/likes",
                                  "/api/v1/accounts/", "/api/v1/accounts//follow", "/api/v1/posts/1/like/x"])
def test_unknown_api_route_is_404_json(api, path):
    resp = api.get(path)
    assert resp.status == 404, resp
    assert error_of(resp) == "no such API endpoint: " + path


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/api/v1/posts", "POST"),
    ("GET", "/api/v1/posts", "POST"),
    ("PATCH", "/api/v1/posts/1", "GET, HEAD, DELETE"),
    ("POST", "/api/v1/posts/1", "GET, HEAD, DELETE"),
    ("GET", "/api/v1/posts/1/like", "POST, DELETE"),
    ("DELETE", "/api/v1/posts/1/replies", "GET, HEAD"),
    ("GET", "/api/v1/accounts", "POST"),
    ("DELETE", "/api/v1/accounts/someone", "GET, HEAD"),
    ("GET", "/api/v1/accounts/someone/follow", "POST, DELETE"),
    ("POST", "/api/v1/accounts/someone/followers", "GET, HEAD"),
    ("PUT", "/api/v1/sessions", "GET, HEAD, POST, DELETE"),
    ("POST", "/api/v1/timelines/home", "GET, HEAD"),
])
def test_wrong_method_is_405_with_allow(api_cluster, api, method, path, allow):
    resp = api.request(method, path)
    assert resp.status == 405, resp
    assert resp.headers["allow"] == allow
    assert error_of(resp) == "method %s not allowed here (allowed: %s)" % (method, allow)
    assert resp.headers["x-served-by"] in api_cluster.names


@pytest.mark.parametrize("method, path", [("POST", "/"), ("DELETE", "/app.js"), ("PUT", "/index.html")])
def test_wrong_method_on_static_files_is_405(api, method, path):
    resp = api.request(method, path)
    assert resp.status == 405, resp
    assert resp.headers["allow"] == "GET, HEAD"
    assert error_of(resp) == "method not allowed (allowed: GET, HEAD)"


def test_head_of_an_api_resource_has_no_body(api_cluster, api):
    username = api_cluster.create_account("heady")[0]
    get = api.get("/api/v1/accounts/" + username)
    with RawConnection(api.port) as conn:
        conn.send(("HEAD /api/v1/accounts/%s HTTP/1.1\r\nHost: agora\r\n\r\n" % username).encode())
        status, headers, body = conn.read_response(head=True)
    assert status == 200 and body == b""
    assert headers["content-type"] == JSON_TYPE
    assert int(headers["content-length"]) == len(get.body)


# ---------------------------------------------------------------- X-Served-By and balancing

def test_every_answer_names_one_of_the_servers_and_all_three_answer(api_cluster, api):
    username = api_cluster.create_account("spread")[0]
    seen = collections.Counter()
    requests = [("GET", "/api/v1/accounts/" + username), ("GET", "/api/v1/nope"), ("GET", "/"),
                ("GET", "/api/v1/posts/999999999"), ("PUT", "/api/v1/posts"), ("GET", "/app.js"),
                ("GET", "/../etc/passwd"), ("POST", "/api/v1/posts")]
    for i in range(120):
        method, path = requests[i % len(requests)]
        resp = api.request(method, path)
        assert resp.status < 500, (method, path, resp)
        served_by = resp.headers.get("x-served-by")
        assert served_by in api_cluster.names, (method, path, resp.headers)
        seen[served_by] += 1
    assert set(seen) == set(api_cluster.names), seen  # least-conn breaks ties at random


# ---------------------------------------------------------------- hostile text

def test_html_in_a_post_is_returned_verbatim_as_json(api_cluster, api):
    user = api_cluster.new_user("xss")
    text = '<script>alert("pwned")</script><img src=x onerror=alert(1)> & &amp; \'quotes\' \\ </p>'
    resp = user.api.post("/api/v1/posts", {"text": text})
    assert resp.status == 201, resp
    assert resp.headers["content-type"] == JSON_TYPE
    assert resp.json["text"] == text
    got = api.get("/api/v1/posts/" + resp.json["id"])
    assert got.status == 200 and got.headers["content-type"] == JSON_TYPE
    assert got.json["text"] == text
    assert b"<script>alert(\\\"pwned\\\")</script>" in got.body  # not HTML-escaped: the UI escapes
    listed = api.get("/api/v1/accounts/%s/posts" % user.username)
    assert listed.headers["content-type"] == JSON_TYPE
    assert listed.json[0]["text"] == text


def test_control_characters_and_quotes_survive_the_json_round_trip(api_cluster):
    user = api_cluster.new_user("ctrl")
    text = 'a\x01b\x1fc"d\\e\u2028f\x7fg'
    resp = user.api.post("/api/v1/posts", {"text": text})
    assert resp.status == 201, resp
    assert resp.json["text"] == text
    assert b"\\u0001" in resp.body and b"\\u001f" in resp.body
    assert user.api.get("/api/v1/posts/" + resp.json["id"]).json["text"] == text
    # NUL cannot be stored in a C string: the JSON parser refuses it
    resp = user.api.post("/api/v1/posts", {"text": "nul\u0000byte"})
    assert resp.status == 400, resp
    assert error_of(resp).startswith("invalid JSON: "), resp


def test_sql_in_names_and_text_is_stored_verbatim(api_cluster, api):
    sql = "'; DROP TABLE posts; --"
    display = "Robert'); DROP TABLE accounts;--"
    username, acc = api_cluster.create_account("bobby", display_name=display)
    assert acc["display_name"] == display
    assert api.get("/api/v1/accounts/" + username).json["display_name"] == display
    token = api_cluster.log_in(username)
    resp = api.post("/api/v1/posts", {"text": sql}, token=token)
    assert resp.status == 201, resp
    assert resp.json["text"] == sql
    assert api.get("/api/v1/posts/" + resp.json["id"]).json["text"] == sql
    # SQL as a user name is not a valid name: refused before it gets near the database
    resp = api.post("/api/v1/accounts", {"username": sql, "password": "long enough password"})
    assert resp.status == 422, resp
    for name in ("' OR '1'='1", "admin'--", username + "' OR 1=1 --"):
        resp = api.post("/api/v1/sessions", {"username": name, "password": "' OR '1'='1"})
        assert resp.status == 401, (name, resp)
    resp = api.get("/api/v1/accounts/%27%20OR%20%271%27%3D%271")
    assert resp.status == 404, resp
    resp = api.get("/api/v1/accounts/%s/posts?max_id=1%%20OR%%201=1" % username)
    assert resp.status == 400, resp
    # the tables are all still there
    resp = api.get("/api/v1/accounts/%s/posts" % username)
    assert resp.status == 200 and [p["text"] for p in resp.json] == [sql], resp


# ---------------------------------------------------------------- static UI

def test_index_is_html_and_its_scripts_are_javascript(api):
    resp = api.get("/")
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    page = resp.body.decode("utf-8")
    assert "agora" in page
    assert api.get("/index.html").body == resp.body
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert scripts, page
    for src in scripts:
        js = api.get(src)
        assert js.status == 200, (src, js)
        assert js.headers["content-type"] in ("text/javascript; charset=utf-8", "application/javascript"), js.headers
        assert len(js.body) > 0
    css = api.get("/style.css")
    assert css.status == 200 and css.headers["content-type"] == "text/css; charset=utf-8", css


@pytest.mark.parametrize("path", [
    "/../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E/%2E%2E/etc/passwd", "/js/../../etc/passwd",
    "/..%2f..%2fetc%2fpasswd", "/%2f..%2f..%2fetc%2fpasswd", "/js/..%2f..%2f..%2fetc/passwd",
    "/....//....//etc/passwd", "/..\\..\\etc\\passwd", "/%5c..%5c..%5cetc%5cpasswd", "/.%2e/.%2e/etc/passwd",
    "//etc/passwd", "/%00/etc/passwd", "/index.html%00.js", "/.git/config", "/../Makefile", "/%2e%2e/Makefile",
    "/../src/app/app.c",
])
def test_path_traversal_never_serves_a_file_outside_web(api, path):
    with RawConnection(api.port) as conn:  # the exact bytes: no client-side normalisation
        conn.send(("GET %s HTTP/1.1\r\nHost: agora\r\n\r\n" % path).encode())
        status, headers, body = conn.read_response()
    assert status in (400, 404), (path, status, body[:200])
    assert b"root:" not in body and b"CFLAGS" not in body and b"#include" not in body


def test_missing_static_file_is_404_json(api):
    resp = api.get("/no-such-file.js")
    assert resp.status == 404, resp
    assert error_of(resp) == "not found"


# ---------------------------------------------------------------- /health

def test_health_of_each_server_and_of_the_balancer(api_cluster, api):
    for server in api_cluster.servers:
        status, headers, body = http_request(LOCALHOST, server.port, "GET", "/health")
        assert status == 200, body
        assert headers["content-type"] == JSON_TYPE
        assert headers["x-served-by"] == server.name
        assert body == b'{"status":"ok"}'
        status, headers, body = http_request(LOCALHOST, server.port, "POST", "/health", body=b"")
        assert status == 405 and headers["allow"] == "GET, HEAD", (status, headers)
    # through the balancer, /health is the balancer's own answer
    resp = api.get("/health")
    assert resp.status == 200, resp
    assert resp.body == b"OK"
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    assert "x-served-by" not in resp.headers


def test_pipelined_logins_then_half_close_are_all_answered(api_cluster):
    """Regression (the balancer's twin is in test_lb_http.py): log-ins go to the hashing pool,
    so the end of the client's stream arrives while the first is still being handled. Every
    request sent before it is answered, in order, by the server directly; the last says close."""
    server = api_cluster.servers[0]
    body = b'{"username": "nobody-here", "password": "wrong-password-1"}'
    one = (b"POST /api/v1/sessions HTTP/1.1\r\nHost: agora\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    get = b"GET /api/v1/accounts/nobody-here HTTP/1.1\r\nHost: agora\r\n\r\n"
    with RawConnection(server.port) as conn:
        conn.send(one + get + one)
        conn.shutdown_write()
        data = conn.read_until_closed(timeout=15)
    responses = parse_responses(data)
    assert [s for s, _, _ in responses] == [401, 404, 401]
    assert responses[-1][1].get("connection") == "close"
    assert all(h.get("connection") != "close" for _, h, _ in responses[:-1])


def test_request_ids_are_kept_from_the_balancer_and_echoed(api_cluster, api):
    """X-Request-Id: a trusted proxy's (loopback by default) is kept and echoed; one that is not
    sane is replaced; through the balancer the client sees the id the balancer made."""
    server = api_cluster.servers[0]
    with RawConnection(server.port) as conn:
        conn.send(b"GET /health HTTP/1.1\r\nHost: agora\r\nX-Request-Id: from-the-lb.1\r\n\r\n")
        status, headers, _ = conn.read_response()
    assert (status, headers["x-request-id"]) == (200, "from-the-lb.1")
    with RawConnection(server.port) as conn:
        conn.send(b"GET /health HTTP/1.1\r\nHost: agora\r\nX-Request-Id: not sane\r\n\r\n")
        status, headers, _ = conn.read_response()
    assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    resp = api.get("/api/v1/accounts/nobody-at-all")
    assert resp.status == 404
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["x-request-id"])
