"""Hostile review of the pgcut2 change (issue 11): a plain post written by PG_POST_COUNT then
PG_POST_CREATE_PLAIN (no read-back statement: the answer is built from the counter update's row),
compose and the home page authenticated by the session alone (api_auth_id, PG_SESS_ONLY).

Runs on the module's api_cluster: SQLite by default, PostgreSQL with AGORA_TEST_STORE=postgres
(`sh scripts/with-pg.sh env AGORA_TEST_STORE=postgres sh scripts/run-integration.sh
tests/integration/test_pg_review_cut2.py`). What is asserted, on both stores:

- the 201 of a compose (plain, reply, with an Idempotency-Key, with a display name of several
  bytes per character) equals field by field a later GET of the post by its author, and its
  author equals a later GET of the account;
- a logged-out token cannot compose nor read a home page (401, and no post is written); a token
  of another account composes as that account;
- one author composing with every shape at once (plain, keyed, reply) from several threads while
  others follow and unfollow it: every 201 post exists once, posts_count equals the posts, and
  each other account's home page holds the author's posts exactly when it follows the author at
  the end (docs/TIMELINES.md: the posts of every account the owner follows now)."""

import subprocess
import threading
import uuid

import pytest

from helpers import walk_pages
from agora_test.api import API_PASSWORD, ApiUser, unique_username
from agora_test.db import psql_path, sql, store_kind
from agora_test.processes import wait_for

POSTS = "/api/v1/posts"


def test_compose_answer_equals_a_later_read(api_cluster):
    name = unique_username("c2eq")
    r = api_cluster.api.post("/api/v1/accounts", {"username": name, "password": API_PASSWORD,
                                                   "display_name": "Zo\u00eb \u540d\u524d \u2603"})
    assert r.status == 201, r
    token = api_cluster.log_in(name, API_PASSWORD)
    u = ApiUser(name, API_PASSWORD, r.json, token, api_cluster.api.as_user(token))
    other = api_cluster.new_user("c2eqo")
    assert other.api.post("/api/v1/accounts/%s/follow" % u.username).status == 200
    first = u.api.post(POSTS, {"text": "  plain one  "})
    assert first.status == 201, first
    created = [first,
               u.api.post(POSTS, {"text": "a reply", "reply_to": first.json["id"]}),
               u.api.post(POSTS, {"text": "keyed"}, headers={"Idempotency-Key": uuid.uuid4().hex}),
               u.api.post(POSTS, {"text": "plain \u00e9\u4e2d\U0001f600 two"})]
    for resp in created:
        assert resp.status == 201, resp
        assert resp.headers.get("location") == "/api/v1/posts/" + resp.json["id"], resp
        got = u.api.get(POSTS + "/" + resp.json["id"])
        assert got.status == 200, got
        later = got.json
        if resp is first:  # answered since: the reply counts
            later = dict(later, replies_count=0)
        # the author's posts_count as of that post: later posts raise it
        n = created.index(resp) + 1
        assert resp.json["author"]["posts_count"] == n, resp.json
        assert dict(resp.json, author=dict(resp.json["author"], posts_count=None)) == \
            dict(later, author=dict(later["author"], posts_count=None)), (resp.json, later)
    acc = u.api.get("/api/v1/accounts/" + u.username).json
    assert acc["display_name"] == "Zo\u00eb \u540d\u524d \u2603", acc
    assert created[-1].json["author"] == acc, (created[-1].json, acc)
    assert acc["posts_count"] == 4 and acc["followers_count"] == 1, acc
    assert created[0].json["text"] == "plain one"


def test_logged_out_token_cannot_compose_or_read_home(api_cluster):
    u = api_cluster.new_user("c2out")
    token = u.token
    assert u.api.post(POSTS, {"text": "before"}).status == 201
    assert u.api.delete("/api/v1/sessions").status == 204
    stale = api_cluster.api.as_user(token)
    r = stale.post(POSTS, {"text": "after logout"})
    assert r.status == 401, r
    r = stale.post(POSTS, {"text": "after logout"}, headers={"Idempotency-Key": "k-after"})
    assert r.status == 401, r
    assert stale.get("/api/v1/timelines/home").status == 401
    acc = api_cluster.api.get("/api/v1/accounts/" + u.username).json
    assert acc["posts_count"] == 1, acc
    page = api_cluster.api.get("/api/v1/accounts/%s/posts" % u.username).json
    assert [p["text"] for p in page] == ["before"], page
    # a made-up token of the right form
    fake = api_cluster.api.as_user("x" * len(token))
    assert fake.post(POSTS, {"text": "forged"}).status == 401
    assert fake.get("/api/v1/timelines/home").status == 401


def test_token_of_another_account_composes_as_that_account(api_cluster):
    a = api_cluster.new_user("c2a")
    b = api_cluster.new_user("c2b")
    r = api_cluster.api.as_user(b.token).post(POSTS, {"text": "by b"})
    assert r.status == 201, r
    assert r.json["author"]["id"] == b.id and r.json["author"]["username"] == b.username, r.json
    assert api_cluster.api.get("/api/v1/accounts/" + a.username).json["posts_count"] == 0
    home = b.api.get("/api/v1/timelines/home")
    assert home.status == 200 and [p["id"] for p in home.json] == [r.json["id"]], home


def test_one_author_every_shape_while_followers_toggle(api_cluster):
    author = api_cluster.new_user("c2auth")
    fans = api_cluster.new_users(4, "c2fan")
    parent = author.api.post(POSTS, {"text": "parent"})
    assert parent.status == 201
    acked, errors, lock = [parent.json["id"]], [], threading.Lock()
    PER = 12

    def composer(kind):
        for i in range(PER):
            body = {"text": "%s-%d" % (kind, i)}
            headers = None
            if kind == "reply":
                body["reply_to"] = parent.json["id"]
            if kind == "keyed":
                headers = {"Idempotency-Key": "k-%d" % i}
            r = author.api.post(POSTS, body, headers=headers)
            with lock:
                if r.status == 201:
                    acked.append(r.json["id"])
                else:
                    errors.append((kind, i, r.status, r.body))

    def toggler(fan, n):
        for i in range(n):
            path = "/api/v1/accounts/%s/follow" % author.username
            r = fan.api.post(path) if i % 2 == 0 else fan.api.delete(path)
            with lock:
                if r.status != 200:
                    errors.append(("follow", i, r.status, r.body))

    # fans 0, 1 toggle an odd number of times (end following), fans 2, 3 an even number (end not)
    threads = [threading.Thread(target=composer, args=(k,)) for k in ("plain", "plain", "keyed", "reply")]
    threads += [threading.Thread(target=toggler, args=(f, 9 if j < 2 else 10)) for j, f in enumerate(fans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    assert errors == []
    # "plain" ran twice with the same texts; the keys k-0.. were each used once
    assert len(acked) == 1 + 4 * PER and len(set(acked)) == len(acked)
    acc = api_cluster.api.get("/api/v1/accounts/" + author.username).json
    assert acc["posts_count"] == len(acked) and acc["followers_count"] == 2, acc
    own = [p["id"] for p in walk_pages(api_cluster.api, "/api/v1/accounts/%s/posts?limit=100" % author.username)[0]]
    assert sorted(own, key=int) == sorted(acked, key=int)
    want = sorted(acked, key=int, reverse=True)
    for j, fan in enumerate(fans):
        home = [p["id"] for p in walk_pages(fan.api, "/api/v1/timelines/home?limit=100")[0]]
        assert home == (want if j < 2 else []), (j, len(home))


@pytest.mark.skipif(store_kind() != "postgres", reason="holds a PostgreSQL row lock with psql")
@pytest.mark.parametrize("shape", ["plain", "keyed", "reply"])
def test_compose_whose_account_is_deleted_meanwhile(api_cluster, shape):
    """The session is found (api_auth_id), then the account is deleted (by an operator: the API has
    no account deletion; its sessions go with it) before the post's write takes the author's row.
    Nothing may be written, and the answer must not blame a reply_to the request does not have:
    401, as for any request whose session is gone."""
    u = api_cluster.new_user("c2del")
    other = api_cluster.new_user("c2delp")
    parent = other.api.post(POSTS, {"text": "parent"})
    assert parent.status == 201, parent
    holder = subprocess.Popen([psql_path(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", api_cluster.db],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        holder.stdin.write("BEGIN;\nDELETE FROM accounts WHERE id = %d;\n\\echo deleted\n" % int(u.id))
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "deleted"
        out = {}
        headers = {"Idempotency-Key": "k-del"} if shape == "keyed" else None
        body = {"text": "orphan", "reply_to": parent.json["id"]} if shape == "reply" else {"text": "orphan"}
        t = threading.Thread(target=lambda: out.update(r=u.api.post(POSTS, body, headers=headers)))
        t.start()
        # the compose waits for the author's row (the DELETE holds it) once it is past the session
        assert wait_for(lambda: sql(api_cluster.db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type"
                                    " = 'Lock' AND datname = current_database()") == [(1,)], 10.0, 0.05)
        holder.stdin.write("COMMIT;\n\\echo committed\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "committed"
        t.join(15)
        assert not t.is_alive()
    finally:
        holder.stdin.close()
        holder.wait(15)
    r = out["r"]
    assert r.status == 401, r
    assert r.json["error"].startswith("authentication required"), r
    assert sql(api_cluster.db, "SELECT count(*) FROM posts WHERE author = ?", int(u.id)) == [(0,)]
    assert other.api.get(POSTS + "/" + parent.json["id"]).json["replies_count"] == 0
