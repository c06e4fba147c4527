"""JSON API through the balancer: sign-up, log-in and log-out, accounts, following.

Every request goes through `agora lb` to one of three `agora server` processes sharing one SQLite
file (the module's api_cluster). Each test uses accounts of its own (unique usernames).
"""

import collections
import json
import time

import pytest

from helpers import API_PASSWORD, RawConnection, check_account, rfc3339_ms, unique_username

ACCOUNTS = "/api/v1/accounts"
SESSIONS = "/api/v1/sessions"
JSON_TYPE = "application/json; charset=utf-8"
AUTH_REQUIRED = "authentication required: send Authorization: Bearer <token> or the agora_token cookie"
BAD_USERNAME = "username: must be 1-30 characters of A-Z, a-z, 0-9 and _"
BAD_PASSWORD = "password: must be at least 8 characters and at most 128 bytes long"
BAD_LOGIN = "invalid username or password"


def error_of(resp):
    """The {"error": message} body of an error answer (asserting its shape) -> message."""
    assert resp.headers.get("content-type") == JSON_TYPE, resp.headers
    body = resp.json
    assert set(body) == {"error"}, body
    return body["error"]


# ---------------------------------------------------------------- sign-up

def test_sign_up_answers_201_with_exactly_the_account_fields(api):
    username = unique_username("signup")
    before = int(time.time() * 1000)
    resp = api.post(ACCOUNTS, {"username": username, "password": API_PASSWORD, "display_name": "Ada Lovelace 🚀"})
    after = int(time.time() * 1000)
    assert resp.status == 201, resp
    assert resp.headers["content-type"] == JSON_TYPE
    assert resp.headers["location"] == "/api/v1/accounts/" + username
    acc = resp.json
    check_account(acc)
    assert acc["username"] == username
    assert acc["display_name"] == "Ada Lovelace 🚀"
    assert (acc["followers_count"], acc["following_count"], acc["posts_count"]) == (0, 0, 0)
    assert acc["created_at"].endswith("Z")
    assert before - 1000 <= rfc3339_ms(acc["created_at"]) <= after + 1000
    # the account reads back the same from whichever server answers
    got = api.get(ACCOUNTS + "/" + username)
    assert got.status == 200, got
    assert got.json == acc


def test_display_name_defaults_to_the_username(api):
    username = unique_username("noname")
    resp = api.post(ACCOUNTS, {"username": username, "password": API_PASSWORD})
    assert resp.status == 201, resp
    assert resp.json["display_name"] == username
    resp = api.post(ACCOUNTS, {"username": unique_username("nullname"), "password": API_PASSWORD,
                               "display_name": None})
    assert resp.status == 201, resp
    assert resp.json["display_name"] == resp.json["username"]


def test_username_of_30_characters_and_of_1_character_are_accepted(api):
    longest = unique_username("L" * 16).ljust(30, "x")
    assert len(longest) == 30
    resp = api.post(ACCOUNTS, {"username": longest, "password": API_PASSWORD})
    assert resp.status == 201, resp
    assert resp.json["username"] == longest
    # one-character names are few: this one is only taken by this test in this module's database
    resp = api.post(ACCOUNTS, {"username": "Q", "password": API_PASSWORD})
    assert resp.status == 201, resp
    assert resp.json["username"] == "Q"


@pytest.mark.parametrize("username", [
    "", "a" * 31, "with space", "dash-name", "dot.name", "ünïcode", "semi;colon", "x'; DROP TABLE posts; --",
    "tab\t", "slash/name",
])
def test_invalid_username_is_422(api, username):
    resp = api.post(ACCOUNTS, {"username": username, "password": API_PASSWORD})
    assert resp.status == 422, resp
    assert error_of(resp) == BAD_USERNAME


def test_missing_username_or_password_is_422(api):
    resp = api.post(ACCOUNTS, {"password": API_PASSWORD})
    assert resp.status == 422, resp
    assert error_of(resp) == "username: is required"
    resp = api.post(ACCOUNTS, {"username": unique_username("nopw")})
    assert resp.status == 422, resp
    assert error_of(resp) == "password: is required"
    resp = api.post(ACCOUNTS, {"username": None, "password": API_PASSWORD})
    assert resp.status == 422, resp
    assert error_of(resp) == "username: is required"


def test_username_is_unique_ignoring_case(api):
    username = unique_username("Case")
    resp = api.post(ACCOUNTS, {"username": username, "password": API_PASSWORD})
    assert resp.status == 201, resp
    for other in (username, username.lower(), username.upper(), username.swapcase()):
        resp = api.post(ACCOUNTS, {"username": other, "password": "another password"})
        assert resp.status == 409, (other, resp)
        assert error_of(resp) == "username: already taken"
    # the original account is untouched: its password still works
    resp = api.post(SESSIONS, {"username": username, "password": API_PASSWORD})
    assert resp.status == 200, resp


@pytest.mark.parametrize("password", ["", "1234567", "é" * 3 + "a", "éééé", "日本語のパス", "a" * 129,
                                      "é" * 64 + "a"])
def test_password_under_8_characters_or_over_128_bytes_is_422(api, password):
    resp = api.post(ACCOUNTS, {"username": unique_username("pw"), "password": password})
    assert resp.status == 422, (len(password.encode()), resp)
    assert error_of(resp) == BAD_PASSWORD


@pytest.mark.parametrize("password", [" " * 8, " \t\n\r\u3000\u00a0\u2003 ", "\u2028" * 10])
def test_password_of_only_white_space_is_422(api, password):
    username = unique_username("pwsp")
    resp = api.post(ACCOUNTS, {"username": username, "password": password})
    assert resp.status == 422, resp
    assert error_of(resp) == "password: must not be only white space"
    assert api.get(ACCOUNTS + "/" + username).status == 404


def test_password_minimum_counts_characters_maximum_counts_bytes(api):
    # 8 characters (16 bytes of UTF-8); 64 characters, 128 bytes; spaces inside are fine
    for password in ("éééééééé", "é" * 64, " a      "):
        username = unique_username("pwok")
        resp = api.post(ACCOUNTS, {"username": username, "password": password})
        assert resp.status == 201, resp
        resp = api.post(SESSIONS, {"username": username, "password": password})
        assert resp.status == 200, resp
        assert resp.json["account"]["username"] == username


def test_display_name_of_50_code_points_is_accepted(api):
    resp = api.post(ACCOUNTS, {"username": unique_username("dn50"), "password": API_PASSWORD,
                               "display_name": "😀" * 50})
    assert resp.status == 201, resp
    assert resp.json["display_name"] == "😀" * 50


def test_display_name_over_50_characters_or_with_control_characters_is_422(api):
    resp = api.post(ACCOUNTS, {"username": unique_username("dn"), "password": API_PASSWORD, "display_name": "ü" * 51})
    assert resp.status == 422, resp
    assert error_of(resp) == "display_name: must be at most 50 characters"
    resp = api.post(ACCOUNTS, {"username": unique_username("dn"), "password": API_PASSWORD,
                               "display_name": "bell\x07"})
    assert resp.status == 422, resp
    assert error_of(resp) == "display_name: must not contain control characters"


@pytest.mark.parametrize("data", [b"{", b'{"username": "x",}', b"not json", b'{"username": "a", "username": "b"}'])
def test_malformed_json_is_400(api, data):
    resp = api.post(ACCOUNTS, data=data)
    assert resp.status == 400, resp
    assert error_of(resp).startswith("invalid JSON: "), resp


@pytest.mark.parametrize("data", [b"", b"[]", b'[{"username": "x"}]', b'"text"', b"42", b"null"])
def test_body_that_is_not_an_object_is_400(api, data):
    resp = api.post(ACCOUNTS, data=data)
    assert resp.status == 400, resp
    message = error_of(resp)
    if data[:1] in (b"", b"["):
        assert message == "request body must be a JSON object"
    else:  # the JSON parser refuses a bare scalar itself
        assert message == "request body must be a JSON object" or message.startswith("invalid JSON: "), message


def test_body_that_is_not_utf8_is_400(api):
    resp = api.post(ACCOUNTS, data=b'{"username": "caf\xe9", "password": "12345678"}')
    assert resp.status == 400, resp
    assert error_of(resp) == "request body is not valid UTF-8"


@pytest.mark.parametrize("body, message", [
    ({"username": 5, "password": API_PASSWORD}, "username: must be a string"),
    ({"username": ["a"], "password": API_PASSWORD}, "username: must be a string"),
    ({"username": "typed", "password": True}, "password: must be a string"),
    ({"username": "typed", "password": 12345678}, "password: must be a string"),
    ({"username": "typed", "password": API_PASSWORD, "display_name": {"a": 1}}, "display_name: must be a string"),
])
def test_wrong_types_are_400(api, body, message):
    resp = api.post(ACCOUNTS, body)
    assert resp.status == 400, resp
    assert error_of(resp) == message


def test_body_of_64_kib_is_read(api):
    base = json.dumps({"username": "bad name", "password": API_PASSWORD}).encode()
    exactly = base[:-1] + b" " * (65536 - len(base)) + b"}"
    assert len(exactly) == 65536
    resp = api.post(ACCOUNTS, data=exactly)
    assert resp.status == 422, resp  # read and validated, not refused for its size
    assert error_of(resp) == BAD_USERNAME


def oversized_post(port, body, chunked=False, expect_continue=False):
    """POSTs body to /api/v1/accounts on a raw connection -> (status, headers, body). The body
    is not sent when expect_continue is set and the answer comes first."""
    head = "POST %s HTTP/1.1\r\nHost: agora\r\nContent-Type: application/json\r\n" % ACCOUNTS
    head += "Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: %d\r\n" % len(body)
    if expect_continue:
        head += "Expect: 100-continue\r\n"
    with RawConnection(port, timeout=10.0) as conn:
        conn.send(head.encode() + b"\r\n")
        if expect_continue:
            return conn.read_response()
        try:
            conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body)
        except OSError:
            pass  # the answer may come (and the connection close) before the whole body is sent
        return conn.read_response()


def test_body_over_64_kib_is_413(api_cluster, api):
    """Answered by the server's HTTP layer from the request head (so not with the router's longer
    message "request body too large (at most 65536 bytes)"). Sent straight to a server: through
    the balancer see test_body_over_64_kib_is_413_through_the_balancer."""
    server = api_cluster.servers[0]
    for size in (65537, 100000):
        body = b"{" + b" " * (size - 2) + b"}"
        for chunked in (False, True):
            status, headers, raw = oversized_post(server.port, body, chunked)
            assert status == 413, (size, chunked, raw)
            assert headers["content-type"].startswith("application/json"), headers
            assert json.loads(raw) == {"error": "request body too large"}


def test_body_over_64_kib_with_expect_100_continue_is_413_through_the_balancer(api_cluster, api):
    status, headers, raw = oversized_post(api.port, b" " * 100000, expect_continue=True)
    assert status == 413, raw
    assert json.loads(raw) == {"error": "request body too large"}


def test_body_over_64_kib_is_413_through_the_balancer(api_cluster, api):
    outcomes = []
    for i in range(40):  # the 502 comes from a race: most of the time, not always
        status, _, raw = oversized_post(api.port, b"{" + b" " * 199998 + b"}", chunked=bool(i % 2))
        outcomes.append((status, raw))
    counts = collections.Counter(outcomes)
    assert counts == {(413, b'{"error":"request body too large"}\n'): 40}, counts


def test_413_carries_x_served_by_like_every_answer(api_cluster):
    server = api_cluster.servers[0]
    status, headers, raw = oversized_post(server.port, b"{" + b" " * 70000 + b"}")
    assert status == 413, raw
    assert headers.get("x-served-by") == server.name, headers
    assert headers["content-type"] == JSON_TYPE


# ---------------------------------------------------------------- sessions

def test_log_in_returns_token_account_and_a_strict_httponly_cookie(api_cluster, api):
    username, account = api_cluster.create_account("login")
    resp = api.post(SESSIONS, {"username": username, "password": API_PASSWORD})
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == JSON_TYPE
    assert resp.headers.get("cache-control") == "no-store"
    body = resp.json
    assert set(body) == {"token", "account"}
    token = body["token"]
    assert isinstance(token, str) and len(token) == 43, token
    assert body["account"] == account
    cookie = resp.headers["set-cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert attrs[0] == "agora_token=" + token
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs, cookie
    # the token identifies the account
    me = api.get(SESSIONS, token=token)
    assert me.status == 200, me
    assert me.json == account
    # logging in again gives another token; the user name is matched ignoring case
    again = api.post(SESSIONS, {"username": username.upper(), "password": API_PASSWORD})
    assert again.status == 200, again
    assert again.json["token"] != token
    assert again.json["account"]["username"] == username


def test_wrong_password_and_unknown_user_are_401_alike(api_cluster, api):
    username, _ = api_cluster.create_account("badpw")
    for body in ({"username": username, "password": API_PASSWORD + "x"},
                 {"username": unique_username("ghost"), "password": API_PASSWORD},
                 {"username": "not a valid name", "password": API_PASSWORD}):
        resp = api.post(SESSIONS, body)
        assert resp.status == 401, (body, resp)
        assert error_of(resp) == BAD_LOGIN
        assert resp.headers.get("www-authenticate") == "Bearer"
        assert "set-cookie" not in resp.headers
    resp = api.post(SESSIONS, {"username": username})
    assert resp.status == 422, resp
    assert error_of(resp) == "password: is required"


def test_log_out_ends_only_that_session(api_cluster, api):
    user = api_cluster.new_user("logout")
    other_token = api_cluster.log_in(user.username)
    resp = user.api.delete(SESSIONS)
    assert resp.status == 204, resp
    assert resp.body == b""
    cookie = [a.strip() for a in resp.headers["set-cookie"].split(";")]
    assert cookie[0] == "agora_token=" and "Max-Age=0" in cookie, cookie
    # the token no longer works, on any server
    for _ in range(6):
        resp = user.api.get(SESSIONS)
        assert resp.status == 401, resp
        assert error_of(resp) == AUTH_REQUIRED
    resp = user.api.post("/api/v1/posts", {"text": "after log-out"})
    assert resp.status == 401, resp
    resp = user.api.delete(SESSIONS)
    assert resp.status == 401, resp
    # the other session of the same account still works
    resp = api.get(SESSIONS, token=other_token)
    assert resp.status == 200, resp
    assert resp.json["username"] == user.username


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/v1/posts", {"text": "hello"}),
    ("DELETE", "/api/v1/posts/1", None),
    ("POST", "/api/v1/posts/1/like", None),
    ("DELETE", "/api/v1/posts/1/like", None),
    ("POST", "/api/v1/accounts/Q/follow", None),
    ("DELETE", "/api/v1/accounts/Q/follow", None),
    ("GET", "/api/v1/timelines/home", None),
    ("GET", "/api/v1/sessions", None),
    ("DELETE", "/api/v1/sessions", None),
])
@pytest.mark.parametrize("auth", [None, "Bearer " + "A" * 43, "Bearer nonsense", "Basic dXNlcjpwYXNz"])
def test_requests_needing_a_session_are_401_without_a_valid_token(api, method, path, body, auth):
    headers = {} if auth is None else {"Authorization": auth}
    kw = {} if body is None else {"json_body": body}
    resp = api.request(method, path, headers=headers, **kw)
    assert resp.status == 401, resp
    assert error_of(resp) == AUTH_REQUIRED
    assert resp.headers.get("www-authenticate") == "Bearer"


def test_the_cookie_works_instead_of_the_header(api_cluster, api):
    user = api_cluster.new_user("cookie")
    cookie = {"Cookie": "theme=dark; agora_token=%s; other=1" % user.token}
    resp = api.get(SESSIONS, headers=cookie)
    assert resp.status == 200, resp
    assert resp.json["username"] == user.username
    # a write with the cookie comes from the site's own page: JSON and its Origin (see
    # test_api_security.py for what happens otherwise)
    site = dict(cookie, Origin="http://127.0.0.1:%d" % api.port)
    resp = api.post("/api/v1/posts", {"text": "posted with a cookie"}, headers=site)
    assert resp.status == 201, resp
    assert resp.json["author"]["username"] == user.username
    resp = api.get(SESSIONS, headers={"Cookie": "agora_token=" + "B" * 43})
    assert resp.status == 401, resp
    resp = api.delete(SESSIONS, headers=site)
    assert resp.status == 204, resp
    resp = api.get(SESSIONS, headers=cookie)
    assert resp.status == 401, resp


# ---------------------------------------------------------------- accounts

def test_get_account_ignores_case_and_unknown_is_404(api_cluster, api):
    username, account = api_cluster.create_account("MixedCase")
    for name in (username, username.lower(), username.upper()):
        resp = api.get(ACCOUNTS + "/" + name)
        assert resp.status == 200, (name, resp)
        assert resp.headers["content-type"] == JSON_TYPE
        assert resp.json == account
    for name in (unique_username("nobody"), "no-such-name", "a" * 31, "%27%3B%20DROP"):
        resp = api.get(ACCOUNTS + "/" + name)
        assert resp.status == 404, (name, resp)
        assert error_of(resp) == "account not found"


def account(api, username):
    resp = api.get(ACCOUNTS + "/" + username)
    assert resp.status == 200, resp
    return resp.json


def usernames(resp):
    assert resp.status == 200, resp
    for acc in resp.json:
        check_account(acc)
    return [acc["username"] for acc in resp.json]


def test_follow_and_unfollow_are_idempotent_and_update_counts_and_lists(api_cluster, api):
    alice, bob = api_cluster.new_users(2, "follow")
    path = "%s/%s/follow" % (ACCOUNTS, bob.username)
    for _ in range(2):
        resp = alice.api.post(path)
        assert resp.status == 200, resp
        assert resp.headers["content-type"] == JSON_TYPE
        assert resp.json == {"following": True}
        assert account(api, bob.username)["followers_count"] == 1
        assert account(api, alice.username)["following_count"] == 1
        assert account(api, bob.username)["following_count"] == 0
        assert account(api, alice.username)["followers_count"] == 0
    assert usernames(api.get("%s/%s/followers" % (ACCOUNTS, bob.username))) == [alice.username]
    assert usernames(api.get("%s/%s/following" % (ACCOUNTS, alice.username))) == [bob.username]
    assert usernames(api.get("%s/%s/followers" % (ACCOUNTS, alice.username))) == []
    assert usernames(api.get("%s/%s/following" % (ACCOUNTS, bob.username))) == []
    # the entries of the lists are the accounts with their current counts
    followers = api.get("%s/%s/followers" % (ACCOUNTS, bob.username)).json
    assert followers == [account(api, alice.username)]
    # following by another spelling of the name is the same follow
    resp = alice.api.post("%s/%s/follow" % (ACCOUNTS, bob.username.upper()))
    assert resp.status == 200 and resp.json == {"following": True}, resp
    assert account(api, bob.username)["followers_count"] == 1
    for _ in range(2):
        resp = alice.api.delete(path)
        assert resp.status == 200, resp
        assert resp.json == {"following": False}
        assert account(api, bob.username)["followers_count"] == 0
        assert account(api, alice.username)["following_count"] == 0
    assert usernames(api.get("%s/%s/followers" % (ACCOUNTS, bob.username))) == []
    assert usernames(api.get("%s/%s/following" % (ACCOUNTS, alice.username))) == []


def test_following_yourself_is_422_and_unknown_accounts_are_404(api_cluster, api):
    user = api_cluster.new_user("selfish")
    for name in (user.username, user.username.upper()):
        resp = user.api.post("%s/%s/follow" % (ACCOUNTS, name))
        assert resp.status == 422, resp
        assert error_of(resp) == "cannot follow yourself"
    assert account(api, user.username)["followers_count"] == 0
    assert account(api, user.username)["following_count"] == 0
    ghost = unique_username("ghost")
    for method in ("POST", "DELETE"):
        resp = user.api.request(method, "%s/%s/follow" % (ACCOUNTS, ghost))
        assert resp.status == 404, resp
        assert error_of(resp) == "account not found"
    for what in ("followers", "following", "posts"):
        resp = api.get("%s/%s/%s" % (ACCOUNTS, ghost, what))
        assert resp.status == 404, resp
        assert error_of(resp) == "account not found"
