"""Cross-site writes (CSRF), Idempotency-Key reuse with another body, security headers, and text
that hides or reorders what it shows (issue 9, items 4 and 7), against three `agora server`
behind `agora lb` (the api_cluster fixture). Each refused request is checked in the database
itself: nothing was written."""
import json
import pathlib
import re

import pytest

from helpers import LOCALHOST, http_request, unique_username
from helpers import sql as db_sql

POSTS = "/api/v1/posts"
JSON_TYPE = "application/json; charset=utf-8"
CSRF_TYPE = ("cross-site request refused: a write authenticated by the agora_token cookie must send its body as "
             "Content-Type: application/json, not %s")
CSRF_NO_ORIGIN = ("cross-site request refused: a write authenticated by the agora_token cookie needs an Origin "
                  "header naming this site, or Sec-Fetch-Site: same-origin (use Authorization: Bearer outside a "
                  "browser)")
UI_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
          "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
WEB = pathlib.Path(__file__).resolve().parents[2] / "web"


def error_of(resp):
    assert resp.headers.get("content-type") == JSON_TYPE, resp.headers
    body = resp.json
    assert set(body) == {"error"}, body
    return body["error"]


def db_int(cluster, sql, *args):
    """One integer from the cluster's database, read with a connection of our own."""
    return db_sql(cluster.db, sql, *args)[0][0]


def posts_of(cluster, user):
    return db_int(cluster, "SELECT count(*) FROM posts WHERE author = ?", int(user.id))


def raw(port, method, path, headers, body=None):
    """A request with exactly these headers (no Authorization, no Content-Type added)."""
    from helpers import ApiResponse

    status, hdrs, data = http_request(LOCALHOST, port, method, path, headers=headers, body=body)
    return ApiResponse(status, hdrs, data)


@pytest.fixture
def victim(api_cluster):
    user = api_cluster.new_user("victim")
    user.cookie = {"Cookie": "agora_token=" + user.token}
    return user


def site(port):
    return "http://%s:%d" % (LOCALHOST, port)


# ---------------------------------------------------------------- item 4: CSRF

def test_reproduction_text_plain_form_with_the_cookie_creates_nothing(api_cluster, victim):
    """What a page on another port of the same host could make a logged-in browser send: a
    text/plain form whose body happens to be JSON, with the SameSite cookie (same site)."""
    lb = api_cluster.lb.port
    before = posts_of(api_cluster, victim)
    headers = dict(victim.cookie, **{"Content-Type": "text/plain", "Origin": "http://%s:%d" % (LOCALHOST, lb + 1)})
    resp = raw(lb, "POST", POSTS, headers, b'{"text": "pwned", "x": "="}')
    assert resp.status == 403, resp
    assert error_of(resp) == CSRF_TYPE % "text/plain"
    # the classic form encodings too, whatever the Origin
    for ctype, body in (("application/x-www-form-urlencoded", b'{"text":"pwned"}='),
                        ("multipart/form-data; boundary=x", b'--x\r\n\r\n{"text":"pwned"}\r\n--x--\r\n')):
        resp = raw(lb, "POST", POSTS, dict(victim.cookie, **{"Content-Type": ctype, "Origin": site(lb)}), body)
        assert resp.status == 403, resp
        assert error_of(resp) == CSRF_TYPE % ctype
    assert posts_of(api_cluster, victim) == before == 0
    assert victim.api.get("/api/v1/accounts/" + victim.username).json["posts_count"] == 0


def test_cross_origin_and_missing_origin_are_refused(api_cluster, victim):
    lb = api_cluster.lb.port
    json_cookie = dict(victim.cookie, **{"Content-Type": "application/json"})
    body = json.dumps({"text": "cross"}).encode()
    for origin in ("http://%s:%d" % (LOCALHOST, lb + 1), "http://evil.example", "null", "https://localhost:%d" % lb,
                   "http://%s:%d.evil.example" % (LOCALHOST, lb)):
        resp = raw(lb, "POST", POSTS, dict(json_cookie, Origin=origin), body)
        assert resp.status == 403, (origin, resp)
        assert error_of(resp) == ("cross-site request refused: Origin %s does not match this site (Host %s:%d)"
                                  % (origin, LOCALHOST, lb)), origin
    resp = raw(lb, "POST", POSTS, json_cookie, body)
    assert resp.status == 403, resp
    assert error_of(resp) == CSRF_NO_ORIGIN
    for sfs in ("cross-site", "same-site", "none"):
        resp = raw(lb, "POST", POSTS, dict(json_cookie, **{"Sec-Fetch-Site": sfs}), body)
        assert resp.status == 403, (sfs, resp)
        assert error_of(resp) == CSRF_NO_ORIGIN
    assert posts_of(api_cluster, victim) == 0


def test_writes_without_a_body_need_the_origin_too(api_cluster, victim):
    lb = api_cluster.lb.port
    other = api_cluster.new_user("target")
    post = other.api.post(POSTS, {"text": "like me"}).json
    foreign = dict(victim.cookie, Origin="http://evil.example")
    for method, path in (("POST", "/api/v1/accounts/%s/follow" % other.username),
                         ("POST", "/api/v1/posts/%s/like" % post["id"]),
                         ("DELETE", "/api/v1/posts/%s" % post["id"]),
                         ("DELETE", "/api/v1/sessions"),
                         ("DELETE", "/api/v1/me/sessions")):
        for headers in (victim.cookie, foreign):
            resp = raw(lb, method, path, headers)
            assert resp.status == 403, (method, path, resp)
    assert db_int(api_cluster, "SELECT count(*) FROM follows WHERE follower = ?", int(victim.id)) == 0
    assert db_int(api_cluster, "SELECT count(*) FROM likes WHERE account_id = ?", int(victim.id)) == 0
    assert db_int(api_cluster, "SELECT count(*) FROM sessions WHERE account_id = ?", int(victim.id)) == 1
    # from the site itself: done
    same = dict(victim.cookie, Origin=site(lb))
    resp = raw(lb, "POST", "/api/v1/accounts/%s/follow" % other.username, same)
    assert (resp.status, resp.json) == (200, {"following": True})
    resp = raw(lb, "POST", "/api/v1/posts/%s/like" % post["id"], dict(victim.cookie, **{"Sec-Fetch-Site": "same-origin"}))
    assert (resp.status, resp.json["likes_count"], resp.json["liked"]) == (200, 1, True)


def test_what_the_ui_sends_passes_through_the_balancer_and_directly(api_cluster, victim):
    """Chromium's headers for the UI's fetch() calls: Origin of the page, Sec-Fetch-Site:
    same-origin, and Content-Type: application/json when there is a body."""
    targets = [api_cluster.lb.port] + [s.port for s in api_cluster.servers]
    for port in targets:
        headers = dict(victim.cookie, **{"Origin": site(port), "Sec-Fetch-Site": "same-origin",
                                         "Sec-Fetch-Mode": "cors", "Content-Type": "application/json",
                                         "Accept": "application/json"})
        resp = raw(port, "POST", POSTS, headers, json.dumps({"text": "from the UI on %d" % port}).encode())
        assert resp.status == 201, (port, resp)
    assert posts_of(api_cluster, victim) == len(targets)
    # Host with another spelling of the same site (case): still the same origin
    headers = dict(victim.cookie, **{"Host": "LOCALHOST:%d" % targets[0], "Origin": "http://localhost:%d" % targets[0],
                                     "Content-Type": "application/json"})
    assert raw(targets[0], "POST", POSTS, headers, b'{"text":"case"}').status == 201


def test_bearer_clients_are_not_affected(api_cluster, victim):
    lb = api_cluster.lb.port
    headers = {"Authorization": "Bearer " + victim.token, "Content-Type": "text/plain",
               "Origin": "http://evil.example"}
    resp = raw(lb, "POST", POSTS, headers, b'{"text": "bearer"}')
    assert resp.status == 201, resp
    resp = raw(lb, "POST", POSTS, {"Authorization": "Bearer " + victim.token}, b'{"text": "no type"}')
    assert resp.status == 201, resp
    assert posts_of(api_cluster, victim) == 2


def test_reads_with_the_cookie_need_no_origin(api_cluster, victim):
    resp = raw(api_cluster.lb.port, "GET", "/api/v1/sessions", victim.cookie)
    assert resp.status == 200 and resp.json["username"] == victim.username, resp


# ---------------------------------------------------------------- item 7: Idempotency-Key

def test_idempotency_key_reused_with_another_body_is_422(api_cluster):
    user = api_cluster.new_user("idem")
    key = {"Idempotency-Key": "key-" + unique_username("k")}
    first = user.api.post(POSTS, {"text": "the first"}, headers=key)
    assert first.status == 201, first
    # every server answers the same, with nothing created and the first post not shown
    for _ in range(6):
        resp = user.api.post(POSTS, {"text": "a different one"}, headers=key)
        assert resp.status == 422, resp
        assert error_of(resp) == "Idempotency-Key: already used for a request with another body; use a new key"
        assert b"the first" not in resp.body
    resp = user.api.post(POSTS, {"text": "the first", "reply_to": first.json["id"]}, headers=key)
    assert resp.status == 422, resp
    # the same body again: the first post, as before
    again = user.api.post(POSTS, {"text": "the first"}, headers=key)
    assert again.status == 201, again
    assert again.json == first.json
    assert posts_of(api_cluster, user) == 1
    # another key is another post
    assert user.api.post(POSTS, {"text": "a different one"}, headers={"Idempotency-Key": "other"}).status == 201
    assert posts_of(api_cluster, user) == 2


# ---------------------------------------------------------------- item 7: headers

def test_ui_files_get_a_strict_csp_and_api_answers_nosniff(api_cluster):
    lb = api_cluster.lb.port
    for path in ("/", "/index.html", "/app.js", "/js/api.js", "/style.css", "/favicon.svg", "/no-such-file"):
        status, headers, _ = http_request(LOCALHOST, lb, "GET", path)
        assert status in (200, 404), (path, status)
        assert headers.get("content-security-policy") == UI_CSP, (path, headers)
        assert headers.get("x-content-type-options") == "nosniff", (path, headers)
        assert headers.get("referrer-policy") == "no-referrer", (path, headers)
    server = api_cluster.servers[0].port  # the balancer answers its own /health
    for port, path in ((lb, "/api/v1/accounts/nobody_here"), (lb, "/api/v1/timelines/home"), (lb, "/api/v1/nothing"),
                       (server, "/health")):
        status, headers, _ = http_request(LOCALHOST, port, "GET", path)
        assert headers.get("x-content-type-options") == "nosniff", (path, headers)
        assert headers.get("content-security-policy") == API_CSP, (path, headers)
        assert headers.get("content-type") == JSON_TYPE, (path, headers)


def test_the_ui_has_no_inline_script_or_handler():
    """What the CSP would block: inline <script>, on* attributes, javascript: URLs, inline
    styles. (The browser test runs the UI under the CSP; this names the culprit.)"""
    for f in sorted(WEB.rglob("*.html")):
        html = f.read_text()
        for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I):
            assert "src=" in m.group(1) and m.group(2).strip() == "", (f.name, m.group(0)[:80])
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), f.name
        assert "javascript:" not in html.lower(), f.name
        assert not re.search(r"\sstyle\s*=", html, re.I), f.name
        assert "<style" not in html.lower(), f.name


# ---------------------------------------------------------------- item 7: bidi and invisible text

BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
BLANK = ["\u200b", "\u200b\u200c\u200d", " \u2060 \ufeff ", "\u3164", "\u00a0\u200b"]


@pytest.mark.parametrize("ch", BIDI)
def test_posts_and_display_names_refuse_bidi_controls(api_cluster, api, ch):
    user = api_cluster.new_user("bidi")
    resp = user.api.post(POSTS, {"text": "invoice_%sfdp.exe" % ch})
    assert resp.status == 422, resp
    assert error_of(resp) == ("text: must not contain bidirectional embedding, override or isolate controls "
                              "(U+202A-U+202E, U+2066-U+2069)")
    name = unique_username("bidin")
    resp = api.post("/api/v1/accounts", {"username": name, "password": "password123", "display_name": "adm%sn" % ch})
    assert resp.status == 422, resp
    assert error_of(resp) == ("display_name: must not contain bidirectional embedding, override or isolate "
                              "controls (U+202A-U+202E, U+2066-U+2069)")
    assert api.get("/api/v1/accounts/" + name).status == 404
    assert posts_of(api_cluster, user) == 0


@pytest.mark.parametrize("text", BLANK)
def test_invisible_only_content_is_refused(api_cluster, api, text):
    user = api_cluster.new_user("blank")
    resp = user.api.post(POSTS, {"text": text})
    assert resp.status == 422, resp
    assert error_of(resp) == "text: must contain a visible character (not only white space or zero-width characters)"
    name = unique_username("blankn")
    resp = api.post("/api/v1/accounts", {"username": name, "password": "password123", "display_name": text})
    assert resp.status == 422, resp
    assert error_of(resp) == ("display_name: must contain a visible character (not only white space or zero-width "
                              "characters)")
    assert posts_of(api_cluster, user) == 0
    # inside visible text they are kept as written (joiners in emoji, marks in mixed scripts)
    resp = user.api.post(POSTS, {"text": "a\u200db \u200e\u05d0 \U0001F469\u200d\U0001F4BB"})
    assert resp.status == 201, resp
    assert resp.json["text"] == "a\u200db \u200e\u05d0 \U0001F469\u200d\U0001F4BB"
