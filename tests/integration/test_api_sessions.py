"""Sessions and accounts (issue 9, item 6): sliding expiry (30 days, `--session-days`), the
caller's session list, revoking one or all others, changing the password (revokes every other
session), the password rule, and the modes of the database files and of `agora up`'s data
directory. Three `agora server` behind `agora lb` (api_cluster); expiry is driven by moving a
session's last use back in the database itself."""
import os
import stat
import subprocess
import time

import pytest

from helpers import (API_PASSWORD, LOCALHOST, ApiClient, accepts, free_port, is_postgres, up_port_run, rfc3339_ms,
                     sql, start_agora_server, start_process, wait_for)

ME_SESSIONS = "/api/v1/me/sessions"
PASSWORD = "/api/v1/me/password"
JSON_TYPE = "application/json; charset=utf-8"
DAY_MS = 24 * 3600 * 1000
SESSION_FIELDS = {"id", "created_at", "last_used_at", "expires_at", "user_agent", "current"}


def error_of(resp):
    assert resp.headers.get("content-type") == JSON_TYPE, resp.headers
    assert set(resp.json) == {"error"}, resp.json
    return resp.json["error"]


def now_ms():
    return int(time.time() * 1000)


def log_in(api, username, user_agent, password=API_PASSWORD):
    resp = api.post("/api/v1/sessions", {"username": username, "password": password},
                    headers={"User-Agent": user_agent})
    assert resp.status == 200, resp
    return resp.json["token"]


def works_everywhere(cluster, token):
    """The token's status on the balancer and on every server directly (no cache anywhere)."""
    ports = [cluster.lb.port] + [s.port for s in cluster.servers]
    return {ApiClient(p, token).get("/api/v1/sessions").status for p in ports}


# ---------------------------------------------------------------- list and revoke

def test_list_revoke_one_and_revoke_all_others(api_cluster, api):
    username, _ = api_cluster.create_account("sess")
    tokens = {ua: log_in(api, username, ua) for ua in ("phone", "laptop", "tablet")}
    laptop = api.as_user(tokens["laptop"])
    resp = laptop.get(ME_SESSIONS)
    assert resp.status == 200, resp
    sessions = resp.json
    assert [s["user_agent"] for s in sessions] == ["tablet", "laptop", "phone"]  # newest first
    for s in sessions:
        assert set(s) == SESSION_FIELDS, s
        assert s["current"] is (s["user_agent"] == "laptop")
        assert rfc3339_ms(s["expires_at"]) - rfc3339_ms(s["last_used_at"]) == 30 * DAY_MS
        assert abs(rfc3339_ms(s["created_at"]) - now_ms()) < 60000
        assert s["last_used_at"] == s["created_at"]
    assert not any(t.encode() in resp.body for t in tokens.values())  # tokens are never shown
    ids = {s["user_agent"]: s["id"] for s in sessions}
    # another account sees only its own, and cannot revoke ours
    other = api_cluster.new_user("sessother")
    assert [s["current"] for s in other.api.get(ME_SESSIONS).json] == [True]
    resp = other.api.delete(ME_SESSIONS + "/" + ids["phone"])
    assert resp.status == 404 and error_of(resp) == "session not found", resp
    assert works_everywhere(api_cluster, tokens["phone"]) == {200}

    resp = laptop.delete(ME_SESSIONS + "/" + ids["phone"])
    assert resp.status == 204 and resp.body == b"", resp
    assert "set-cookie" not in resp.headers
    assert works_everywhere(api_cluster, tokens["phone"]) == {401}
    assert laptop.delete(ME_SESSIONS + "/" + ids["phone"]).status == 404

    resp = laptop.delete(ME_SESSIONS)  # every other session: the tablet
    assert (resp.status, resp.json) == (200, {"revoked": 1}), resp
    assert works_everywhere(api_cluster, tokens["tablet"]) == {401}
    assert works_everywhere(api_cluster, tokens["laptop"]) == {200}
    assert works_everywhere(api_cluster, other.token) == {200}
    assert [s["id"] for s in laptop.get(ME_SESSIONS).json] == [ids["laptop"]]

    resp = laptop.delete(ME_SESSIONS + "/" + ids["laptop"])  # itself: logged out, cookie cleared
    assert resp.status == 204, resp
    assert resp.headers["set-cookie"] == "agora_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    assert works_everywhere(api_cluster, tokens["laptop"]) == {401}
    assert sql(api_cluster.db, "SELECT count(*) FROM sessions s JOIN accounts a ON a.id = s.account_id "
                               "WHERE a.username = ?", username) == [(0,)]


def test_session_routes_need_a_session(api):
    for method, path in (("GET", ME_SESSIONS), ("DELETE", ME_SESSIONS), ("DELETE", ME_SESSIONS + "/1"),
                         ("POST", PASSWORD)):
        resp = api.request(method, path, json_body={} if method == "POST" else ApiClient._DEFAULT)
        assert resp.status == 401, (method, path, resp)
    resp = api.request("PUT", ME_SESSIONS)
    assert resp.status == 405 and resp.headers["allow"] == "GET, HEAD, DELETE", resp


# ---------------------------------------------------------------- expiry

def test_sessions_expire_after_30_days_unused_and_each_use_extends(api_cluster):
    user = api_cluster.new_user("expiry")
    sid = user.api.get(ME_SESSIONS).json[0]["id"]

    def last_used():
        return sql(api_cluster.db, "SELECT last_used_at FROM sessions WHERE id = ?", int(sid))[0][0]

    def set_last_used(ms):
        sql(api_cluster.db, "UPDATE sessions SET last_used_at = ? WHERE id = ?", ms, int(sid))

    # used 10 minutes ago: valid, and not written again (reads stay reads)
    ten_min_ago = now_ms() - 600 * 1000
    set_last_used(ten_min_ago)
    assert works_everywhere(api_cluster, user.token) == {200}
    assert last_used() == ten_min_ago
    # used 29 days ago: valid, and the use is recorded: 30 more days from now
    set_last_used(now_ms() - 29 * DAY_MS)
    before = now_ms()
    assert user.api.get("/api/v1/timelines/home").status == 200
    assert before <= last_used() <= now_ms()
    listed = user.api.get(ME_SESSIONS).json[0]
    assert rfc3339_ms(listed["expires_at"]) >= before + 30 * DAY_MS - 1000
    # unused for 30 days: gone on every server, for reads and writes, and not revived
    dead = now_ms() - 30 * DAY_MS - 1000
    set_last_used(dead)
    assert works_everywhere(api_cluster, user.token) == {401}
    assert user.api.post("/api/v1/posts", {"text": "too late"}).status == 401
    assert last_used() == dead
    # a new log-in works, and clears the expired session from the table
    token = log_in(ApiClient(api_cluster.lb.port), user.username, "again")
    assert works_everywhere(api_cluster, token) == {200}
    assert sql(api_cluster.db, "SELECT count(*) FROM sessions WHERE id = ?", int(sid)) == [(0,)]


def test_session_days_option(agora_bin, tmp_path):
    db = tmp_path / "agora.db"
    proc = start_process([agora_bin, "server", "--listen", "%s:0" % LOCALHOST, "--db", "sqlite:%s" % db,
                          "--session-days", "0"], ready_text=None)
    assert proc.wait(timeout=10) == 2
    assert "--session-days must be 1..3650" in proc.output()
    server = start_agora_server(agora_bin, db)  # creates the schema, 30 days
    server.stop()
    out = subprocess.run([str(agora_bin), "server", "--help"], capture_output=True, text=True).stdout
    assert "--session-days N" in out

    port = free_port()
    proc = start_process([agora_bin, "server", "--listen", "%s:%d" % (LOCALHOST, port), "--db", "sqlite:%s" % db,
                          "--workers", "1", "--session-days", "1"], "agora server: listening on", timeout=15)
    try:
        api = ApiClient(port)
        # the message comes before the socket is bound: wait for the port too
        assert wait_for(lambda: proc.poll() is not None or accepts(port), 10.0, 0.05) and proc.poll() is None
        assert api.get("/health").status == 200
        assert api.post("/api/v1/accounts", {"username": "oneday", "password": API_PASSWORD}).status == 201
        token = log_in(api, "oneday", "x")
        me = api.as_user(token)
        assert rfc3339_ms(me.get(ME_SESSIONS).json[0]["expires_at"]) - now_ms() <= DAY_MS
        sql(db, "UPDATE sessions SET last_used_at = ?", now_ms() - 23 * 3600 * 1000)
        assert me.get("/api/v1/sessions").status == 200
        sql(db, "UPDATE sessions SET last_used_at = ?", now_ms() - 25 * 3600 * 1000)
        assert me.get("/api/v1/sessions").status == 401
    finally:
        proc.stop()


# ---------------------------------------------------------------- password change

def test_password_change_revokes_every_other_session(api_cluster, api):
    username, _ = api_cluster.create_account("pwchange")
    mine = api.as_user(log_in(api, username, "mine"))
    others = [log_in(api, username, "other %d" % i) for i in range(3)]
    bystander = api_cluster.new_user("bystander")

    def change(client, current, new):
        return client.post(PASSWORD, {"current_password": current, "new_password": new})

    resp = change(mine, "wrong password", "brand new password")
    assert resp.status == 403 and error_of(resp) == "current_password: is not the account's password", resp
    for bad, message in (("short", "new_password: must be at least 8 characters and at most 128 bytes long"),
                         ("ééé", "new_password: must be at least 8 characters and at most 128 bytes long"),
                         ("x" * 129, "new_password: must be at least 8 characters and at most 128 bytes long"),
                         (" " * 12, "new_password: must not be only white space"),
                         ("\t\u3000\u00a0 \n \u2003\u2009\u205f", "new_password: must not be only white space")):
        resp = change(mine, API_PASSWORD, bad)
        assert resp.status == 422 and error_of(resp) == message, (bad, resp)
    resp = mine.post(PASSWORD, {"new_password": "brand new password"})
    assert resp.status == 422 and error_of(resp) == "current_password: is required", resp
    resp = mine.post(PASSWORD, {"current_password": API_PASSWORD, "new_password": 12345678})
    assert resp.status == 400 and error_of(resp) == "new_password: must be a string", resp
    assert all(works_everywhere(api_cluster, t) == {200} for t in others)  # nothing changed so far

    resp = change(mine, API_PASSWORD, "brand new password")
    assert (resp.status, resp.json) == (200, {"revoked": 3}), resp
    assert resp.headers.get("cache-control") == "no-store"
    for t in others:
        assert works_everywhere(api_cluster, t) == {401}
    assert works_everywhere(api_cluster, mine.token) == {200}
    assert works_everywhere(api_cluster, bystander.token) == {200}
    assert [s["user_agent"] for s in mine.get(ME_SESSIONS).json] == ["mine"]
    resp = api.post("/api/v1/sessions", {"username": username, "password": API_PASSWORD})
    assert resp.status == 401, resp
    log_in(api, username, "new", password="brand new password")


def test_wrong_current_passwords_count_as_failed_log_ins(api_cluster, api):
    """A stolen session cannot guess the password faster than the log-in route allows: wrong
    current passwords charge the account's failed-log-in window (default 10 per 15 min), then
    429 before any hash; the right one is refused too while the window is full."""
    user = api_cluster.new_user("pwguess")
    me = api.as_user(user.token)
    for i in range(10):
        resp = me.post(PASSWORD, {"current_password": "guess number %d" % i, "new_password": "brand new password"})
        assert resp.status == 403 and error_of(resp) == "current_password: is not the account's password", (i, resp)
    resp = me.post(PASSWORD, {"current_password": API_PASSWORD, "new_password": "brand new password"})
    assert resp.status == 429, resp
    assert 1 <= int(resp.headers["retry-after"]) <= 15 * 60
    resp = api.post("/api/v1/sessions", {"username": user.username, "password": API_PASSWORD})
    assert resp.status == 429, resp  # the same window as the log-in route


def test_password_change_with_the_cookie_is_a_checked_write(api_cluster, api):
    user = api_cluster.new_user("pwcookie")
    cookie = {"Cookie": "agora_token=" + user.token}
    body = {"current_password": API_PASSWORD, "new_password": "changed by csrf"}
    resp = api.post(PASSWORD, body, headers=cookie)
    assert resp.status == 403, resp
    api_cluster.log_in(user.username)  # the password is unchanged
    resp = api.post(PASSWORD, body, headers=dict(cookie, Origin="http://%s:%d" % (LOCALHOST, api.port)))
    assert resp.status == 200, resp
    api_cluster.log_in(user.username, "changed by csrf")


# ---------------------------------------------------------------- file modes

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def skip_unless_sqlite(cluster):
    if is_postgres(cluster.db):
        pytest.skip("SQLite's files (WAL, locks, modes): not used on PostgreSQL")


def test_a_reader_closing_its_connection_never_removes_the_wal(api_cluster):
    """Regression: creating the file 0600 with open()+close() in every store_open dropped the POSIX
    locks that the server's other connections (workers, hashing threads) held on the database, so
    another process closing its last connection believed it was alone, checkpointed and deleted
    the WAL; later commits went to the deleted file and no new reader saw them."""
    skip_unless_sqlite(api_cluster)
    for i in range(3):
        sql(api_cluster.db, "SELECT count(*) FROM accounts")  # opens and closes a connection
        user = api_cluster.new_user("walkeep%d" % i)  # sign-up and log-in commit on hashing threads
        assert os.path.exists(str(api_cluster.db) + "-wal")
        assert sql(api_cluster.db, "SELECT count(*) FROM sessions WHERE account_id = ?", int(user.id)) == [(1,)]


def test_database_files_are_owner_only(api_cluster):
    skip_unless_sqlite(api_cluster)
    for suffix in ("", "-wal", "-shm"):
        path = str(api_cluster.db) + suffix
        assert mode(path) == 0o600, (path, oct(mode(path)))


def test_agora_up_makes_an_owner_only_data_directory(agora_bin, tmp_path):
    data = tmp_path / "data"
    base = up_port_run(3)
    old = os.umask(0o022)
    try:
        up = start_process([agora_bin, "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", data,
                            "--lb-workers", "1"], ready_text="agora is up", timeout=30)
    finally:
        os.umask(old)
    try:
        assert mode(data) == 0o700
        db = data / "agora.db"
        assert wait_for(lambda: all(os.path.exists(str(db) + s) for s in ("", "-wal", "-shm")), 15.0, 0.1), \
            sorted(os.listdir(data))
        for suffix in ("", "-wal", "-shm"):
            assert mode(str(db) + suffix) == 0o600, suffix
    finally:
        assert up.stop(timeout=20) == 0, up.output()
