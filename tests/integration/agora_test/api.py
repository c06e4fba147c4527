"""The JSON API of `agora server` (test_api_*.py).

    start_agora_server(agora, db_path)  `agora server` on a free 127.0.0.1 port -> Process (.port, .name)
    ApiClient(port, token)              JSON requests -> ApiResponse (.status, .headers, .body, .json)
    unique_username(prefix)             a fresh valid username (at most 30 of [A-Za-z0-9_])
    new_session(api, prefix)            sign up and log in a fresh account -> its session token
    next_link(headers)                  the target of a Link header's rel="next", or None
    walk_pages(client, path)            every page of a list by following rel="next"
    check_account(obj), check_post(obj) assert the exact fields and their forms
    rfc3339_ms(text)                    an RFC 3339 UTC time ("...Z") as ms since the epoch
"""

import json
import threading

from .db import db_url
from .http import http_request
from .processes import LOCALHOST, _listens_on, free_port, start_process, wait_for


API_PASSWORD = "correct horse battery staple"


def start_agora_server(agora, db_path, workers=1, timeout=15.0, attempts=5, extra_args=()):
    """Starts `agora server --listen 127.0.0.1:PORT --db sqlite:DB_PATH --workers N` (then
    extra_args; db_path may also be a postgres:// URL, agora_test.db.db_url) on a free port and waits until the port accepts connections. A port taken between
    choosing and binding it is retried with another one. Returns the Process with .port and .name
    (its X-Served-By value, host:port); raises RuntimeError with the server's output on any other
    failure."""
    for attempt in range(attempts):
        port = free_port()
        proc = start_process([agora, "server", "--listen", "%s:%d" % (LOCALHOST, port),
                              "--db", db_url(db_path), "--workers", workers] + list(extra_args),
                             "agora server: listening on", timeout)
        # The message comes before the socket is bound: wait for the port too.
        wait_for(lambda: proc.poll() is not None or _listens_on(proc.pid, port), timeout)
        if proc.poll() is None and _listens_on(proc.pid, port):
            proc.port = port
            proc.name = "%s:%d" % (LOCALHOST, port)
            return proc
        proc.stop()
        if "in use" not in proc.output() or attempt + 1 == attempts:
            raise RuntimeError("agora server on port %d did not start; output:\n%s" % (port, proc.output()))
    raise RuntimeError("agora server: no free port after %d attempts" % attempts)


class ApiResponse:
    """One answer of the JSON API: .status, .headers (lower-case names), .body (bytes) and
    .json (the decoded body; ValueError if it is not JSON)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


class Positions:
    """Read-your-writes through read replicas (agora server --db-replica): while .on, every
    ApiClient sends back the newest Agora-Position any of them was answered with, as one browser's
    cookie jar would, so the test process reads its own writes (conftest turns it on with
    AGORA_TEST_REPLICA=1)."""

    on = False
    last = None
    _value = -1
    _lock = threading.Lock()

    @classmethod
    def note(cls, text):
        try:
            hi, lo = text.split("/")
            value = int(hi, 16) << 32 | int(lo, 16)
        except ValueError:
            return
        with cls._lock:
            if value > cls._value:
                cls._value, cls.last = value, text

    @staticmethod
    def strip_cookie(headers):
        """Takes the agora_pos cookie out of headers' (merged) Set-Cookie: the jar's business, so
        that the suites' exact checks of the session cookie hold with a replica too."""
        import re

        kept = [c for c in re.split(r", (?=[A-Za-z_]+=)", headers.get("set-cookie", ""))
                if c and not c.startswith("agora_pos=")]
        if kept:
            headers["set-cookie"] = ", ".join(kept)
        else:
            headers.pop("set-cookie", None)


class ApiClient:
    """Sends requests to the JSON API on 127.0.0.1:port, one fresh connection each.
    `json_body` (any JSON value) is encoded as the body; `data` (bytes) is sent as is instead.
    The token, if any, goes in "Authorization: Bearer" (pass token=None to a call to send none)."""

    _DEFAULT = object()

    def __init__(self, port, token=None, timeout=10.0):
        self.port = port
        self.token = token
        self.timeout = timeout

    def as_user(self, token):
        """A client for the same server that sends token."""
        return ApiClient(self.port, token, self.timeout)

    def request(self, method, path, json_body=_DEFAULT, data=None, headers=None, token=_DEFAULT):
        hdrs = {}
        token = self.token if token is ApiClient._DEFAULT else token
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if json_body is not ApiClient._DEFAULT:
            data = json.dumps(json_body).encode()
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        if Positions.on and Positions.last:
            hdrs["Agora-Position"] = Positions.last
        hdrs.update(headers or {})
        status, rhdrs, body = http_request(LOCALHOST, self.port, method, path, headers=hdrs,
                                           body=data, timeout=self.timeout)
        if Positions.on and "agora-position" in rhdrs:
            Positions.note(rhdrs.pop("agora-position"))
            Positions.strip_cookie(rhdrs)
        return ApiResponse(status, rhdrs, body)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=_DEFAULT, **kw):
        return self.request("POST", path, json_body=json_body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


_username_lock = threading.Lock()


_username_count = [0]


def unique_username(prefix="u"):
    """A username no other call in this process returns: prefix (cut to 16 characters), a
    counter and random hex, 30 characters at most of [A-Za-z0-9_]."""
    import uuid

    with _username_lock:
        _username_count[0] += 1
        n = _username_count[0]
    name = "%s_%d_%s" % (prefix[:16], n, uuid.uuid4().hex)
    return name[:30]


def new_session(api, prefix="u", password=API_PASSWORD):
    """Signs up a fresh account (unique_username(prefix)) through the ApiClient api and logs it in;
    asserts the answers are 201 and 200 and returns the session token."""
    name = unique_username(prefix)
    r = api.post("/api/v1/accounts", {"username": name, "password": password})
    assert r.status == 201, r
    r = api.post("/api/v1/sessions", {"username": name, "password": password})
    assert r.status == 200, r
    return r.json["token"]


def next_link(headers):
    """The URL of the rel="next" entry of a Link header, or None when there is none."""
    import re

    m = re.search(r'<([^>]*)>\s*;\s*rel="next"', headers.get("link", ""))
    return m.group(1) if m else None


def walk_pages(client, path, max_pages=200):
    """GETs path and every page after it by following rel="next". Returns (items, pages): every
    item in order, and the list of page sizes. Raises AssertionError on a non-200 answer."""
    items, pages = [], []
    while path is not None:
        if len(pages) >= max_pages:
            raise AssertionError("more than %d pages: a Link loop?" % max_pages)
        resp = client.get(path)
        if resp.status != 200:
            raise AssertionError("GET %s answered %r" % (path, resp))
        page = resp.json
        items += page
        pages.append(len(page))
        path = next_link(resp.headers)
    return items, pages


class ApiUser:
    """An account with a session: .username, .password, .account (as created), .id, .token and
    .api (an ApiClient sending the token)."""

    def __init__(self, username, password, account, token, api):
        self.username = username
        self.password = password
        self.account = account
        self.id = account["id"]
        self.token = token
        self.api = api


ACCOUNT_FIELDS = {"id", "username", "display_name", "created_at", "followers_count", "following_count",
                  "posts_count"}


POST_FIELDS = {"id", "author", "text", "created_at", "reply_to", "likes_count", "replies_count", "liked"}


RFC3339_UTC = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z"


def rfc3339_ms(text):
    """Milliseconds since the epoch of an RFC 3339 UTC time ("...Z"); ValueError if malformed."""
    import datetime
    import re

    if not re.fullmatch(RFC3339_UTC, text):
        raise ValueError("not an RFC 3339 UTC time: %r" % text)
    base, _, frac = text[:-1].partition(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 1000 + int((frac + "000")[:3])


def check_account(acc):
    """Asserts that acc has exactly the account fields, with the right types and forms."""
    assert set(acc) == ACCOUNT_FIELDS, acc
    assert isinstance(acc["id"], str) and acc["id"].isdigit() and int(acc["id"]) > 0, acc
    assert isinstance(acc["username"], str) and isinstance(acc["display_name"], str), acc
    rfc3339_ms(acc["created_at"])
    for k in ("followers_count", "following_count", "posts_count"):
        assert type(acc[k]) is int and acc[k] >= 0, acc


def check_post(post):
    """Asserts that post has exactly the post fields, with the right types and forms."""
    assert set(post) == POST_FIELDS, post
    assert isinstance(post["id"], str) and post["id"].isdigit() and int(post["id"]) > 0, post
    check_account(post["author"])
    assert isinstance(post["text"], str), post
    rfc3339_ms(post["created_at"])
    assert post["reply_to"] is None or (isinstance(post["reply_to"], str) and post["reply_to"].isdigit()), post
    assert type(post["likes_count"]) is int and type(post["replies_count"]) is int, post
    assert type(post["liked"]) is bool, post
