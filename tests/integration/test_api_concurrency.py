"""JSON API through the balancer: concurrent writers on three servers sharing one SQLite file lose
nothing and duplicate nothing (posts, likes, follows, unique usernames, idempotency keys).

Every request goes through `agora lb`, which spreads concurrent requests over the three
`agora server` processes (least-conn), so the writes really come from different processes.
"""

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

from helpers import API_PASSWORD, unique_username, walk_pages

THREADS = 3
POSTS_EACH = 30
LIKERS = 20


def run_together(fns):
    """Runs the callables in threads released at the same moment; returns their results in order
    (re-raising the first exception)."""
    barrier = threading.Barrier(len(fns))

    def call(fn):
        barrier.wait(timeout=30)
        return fn()

    with ThreadPoolExecutor(max_workers=len(fns)) as pool:
        return list(pool.map(call, fns))


def test_concurrent_posts_by_three_users_all_exist_exactly_once(api_cluster, api):
    users = api_cluster.new_users(THREADS, "writer")

    def write(user):
        outcomes = []
        for i in range(POSTS_EACH):
            resp = user.api.post("/api/v1/posts", {"text": "%s says %d" % (user.username, i)})
            outcomes.append((resp.status, resp.json if resp.status == 201 else resp.body,
                             resp.headers.get("x-served-by")))
        return outcomes

    results = run_together([lambda u=u: write(u) for u in users])
    served = collections.Counter()
    for user, outcomes in zip(users, results):
        assert [o[0] for o in outcomes] == [201] * POSTS_EACH, [o for o in outcomes if o[0] != 201]
        served.update(o[2] for o in outcomes)
        posted = [o[1] for o in outcomes]
        assert [p["text"] for p in posted] == ["%s says %d" % (user.username, i) for i in range(POSTS_EACH)]
        assert len({p["id"] for p in posted}) == POSTS_EACH
        # each user's posts, newest first, exactly the acknowledged ones
        assert api.get("/api/v1/accounts/" + user.username).json["posts_count"] == POSTS_EACH
        items, _ = walk_pages(api, "/api/v1/accounts/%s/posts?limit=7" % user.username)
        assert [p["id"] for p in items] == [p["id"] for p in reversed(posted)]
        home, _ = walk_pages(user.api, "/api/v1/timelines/home?limit=100")
        assert [p["id"] for p in home] == [p["id"] for p in reversed(posted)]
        for p in posted[::10]:
            resp = api.get("/api/v1/posts/" + p["id"])
            assert resp.status == 200 and resp.json["text"] == p["text"], resp
    assert set(served) <= set(api_cluster.names), served
    assert len(set(served)) >= 2, served  # the writes came from more than one server
    all_ids = [p["id"] for outcomes in results for _, p, _ in outcomes]
    assert len(set(all_ids)) == THREADS * POSTS_EACH


def test_concurrent_likes_from_twenty_users_are_all_counted(api_cluster, api):
    author = api_cluster.new_user("liked")
    post = author.api.post("/api/v1/posts", {"text": "like me, everyone"}).json
    likers = api_cluster.new_users(LIKERS, "liker")
    path = "/api/v1/posts/%s/like" % post["id"]

    results = run_together([lambda u=u: u.api.post(path) for u in likers])
    assert [r.status for r in results] == [200] * LIKERS, [r for r in results if r.status != 200]
    assert all(r.json["liked"] is True for r in results)
    assert sorted(r.json["likes_count"] for r in results)[-1] == LIKERS
    assert api.get("/api/v1/posts/" + post["id"]).json["likes_count"] == LIKERS
    # liking again, all at once, changes nothing
    results = run_together([lambda u=u: u.api.post(path) for u in likers])
    assert [(r.status, r.json["likes_count"], r.json["liked"]) for r in results] == [(200, LIKERS, True)] * LIKERS
    for u in likers[:5]:
        assert u.api.get("/api/v1/posts/" + post["id"]).json["liked"] is True
    assert author.api.get("/api/v1/posts/" + post["id"]).json["liked"] is False
    # half of them take it back at once
    results = run_together([lambda u=u: u.api.delete(path) for u in likers[::2]])
    assert [r.status for r in results] == [200] * (LIKERS // 2)
    assert api.get("/api/v1/posts/" + post["id"]).json["likes_count"] == LIKERS - LIKERS // 2

    # the same users all follow the author at once: every follow counted once
    follow = "/api/v1/accounts/%s/follow" % author.username
    results = run_together([lambda u=u: u.api.post(follow) for u in likers])
    assert [(r.status, r.json) for r in results] == [(200, {"following": True})] * LIKERS
    assert api.get("/api/v1/accounts/" + author.username).json["followers_count"] == LIKERS
    followers, pages = walk_pages(api, "/api/v1/accounts/%s/followers?limit=8" % author.username)
    assert sorted(a["username"] for a in followers) == sorted(u.username for u in likers)
    assert pages == [8, 8, 4]


def test_concurrent_sign_ups_of_one_name_make_one_account(api_cluster, api):
    username = unique_username("race")
    spellings = [username, username.upper(), username.lower(), username, username.swapcase(), username]
    results = run_together([lambda n=n: api.post("/api/v1/accounts", {"username": n, "password": API_PASSWORD})
                            for n in spellings])
    statuses = sorted(r.status for r in results)
    assert statuses == [201] + [409] * (len(spellings) - 1), results
    for r in results:
        if r.status == 409:
            assert r.json == {"error": "username: already taken"}
    winner = next(r.json for r in results if r.status == 201)
    assert api.get("/api/v1/accounts/" + username.lower()).json == winner


def test_concurrent_retries_with_one_idempotency_key_make_one_post(api_cluster, api):
    user = api_cluster.new_user("idemrace")
    key = {"Idempotency-Key": "race-" + unique_username("k")}
    results = run_together([lambda: user.api.post("/api/v1/posts", {"text": "exactly once"}, headers=key)
                            for _ in range(6)])
    assert [r.status for r in results] == [201] * 6, results
    assert len({r.json["id"] for r in results}) == 1, [r.json["id"] for r in results]
    assert api.get("/api/v1/accounts/" + user.username).json["posts_count"] == 1
    assert [p["id"] for p in api.get("/api/v1/accounts/%s/posts" % user.username).json] == [results[0].json["id"]]
