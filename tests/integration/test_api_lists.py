"""JSON API through the balancer: timelines, list order and pagination (?limit, ?max_id,
?since_id and the Link header) of every list.

Every request goes through `agora lb` to one of three `agora server` processes sharing one SQLite
file (the module's api_cluster). Each test uses accounts of its own (unique usernames).
"""

import pytest

from helpers import check_account, check_post, next_link, walk_pages

JSON_TYPE = "application/json; charset=utf-8"
BAD_LIMIT = "limit: must be an integer from 1 to 100"


def error_of(resp):
    assert resp.headers.get("content-type") == JSON_TYPE, resp.headers
    body = resp.json
    assert set(body) == {"error"}, body
    return body["error"]


def post(user, text, **extra):
    resp = user.api.post("/api/v1/posts", dict(text=text, **extra))
    assert resp.status == 201, resp
    return resp.json


def follow(user, other):
    resp = user.api.post("/api/v1/accounts/%s/follow" % other.username)
    assert resp.status == 200 and resp.json == {"following": True}, resp


def ids(items):
    return [item["id"] for item in items]


@pytest.fixture(scope="module")
def prolific(api_cluster):
    """A user with 25 posts (and their ids, newest first)."""
    user = api_cluster.new_user("prolific")
    posts = [post(user, "post number %d" % i) for i in range(25)]
    return user, ids(reversed(posts))


@pytest.fixture(scope="module")
def social(api_cluster):
    """Four users: P is followed by Q, R and S, and follows them all (in that order)."""
    p, q, r, s = api_cluster.new_users(4, "social")
    for other in (q, r, s):
        follow(other, p)
    for other in (q, r, s):
        follow(p, other)
    return p, q, r, s


# ---------------------------------------------------------------- timelines

def test_home_timeline_is_own_and_followed_posts_newest_first(api_cluster, api):
    me, friend, stranger = api_cluster.new_users(3, "home")
    mine1 = post(me, "mine 1")
    before_follow = post(friend, "friend before the follow")
    post(stranger, "stranger 1")
    follow(me, friend)
    friend1 = post(friend, "friend 1")
    post(stranger, "stranger 2")
    mine2 = post(me, "mine 2")
    friend_reply = post(friend, "friend replying to a stranger", reply_to=post(stranger, "stranger 3")["id"])
    resp = me.api.get("/api/v1/timelines/home")
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == JSON_TYPE
    for p in resp.json:
        check_post(p)
    assert ids(resp.json) == ids([friend_reply, mine2, friend1, before_follow, mine1])
    assert "link" not in resp.headers
    # the stranger's home is only the stranger's own posts; the friend's only the friend's
    assert {p["author"]["username"] for p in stranger.api.get("/api/v1/timelines/home").json} == {stranger.username}
    assert ids(friend.api.get("/api/v1/timelines/home").json) == ids([friend_reply, friend1, before_follow])
    # after unfollowing, the friend's posts leave the timeline
    resp = me.api.delete("/api/v1/accounts/%s/follow" % friend.username)
    assert resp.status == 200 and resp.json == {"following": False}, resp
    assert ids(me.api.get("/api/v1/timelines/home").json) == ids([mine2, mine1])
    # a deleted post leaves every timeline
    follow(me, friend)
    assert friend.api.delete("/api/v1/posts/" + friend1["id"]).status == 204
    assert ids(me.api.get("/api/v1/timelines/home").json) == ids([friend_reply, mine2, before_follow, mine1])


def test_home_timeline_needs_a_session(api):
    resp = api.get("/api/v1/timelines/home")
    assert resp.status == 401, resp
    assert error_of(resp) == "authentication required: send Authorization: Bearer <token> or the agora_token cookie"
    assert resp.headers.get("www-authenticate") == "Bearer"


def test_posts_of_an_account_newest_first(prolific, api):
    user, newest_first = prolific
    resp = api.get("/api/v1/accounts/%s/posts?limit=100" % user.username.upper())
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == JSON_TYPE
    assert ids(resp.json) == newest_first
    assert [p["text"] for p in resp.json] == ["post number %d" % i for i in reversed(range(25))]
    for p in resp.json:
        check_post(p)
        assert p["author"]["username"] == user.username and p["author"]["posts_count"] == 25
    assert "link" not in resp.headers


# ---------------------------------------------------------------- pagination

def test_default_page_is_20_with_a_link_to_the_rest(prolific, api):
    user, newest_first = prolific
    path = "/api/v1/accounts/%s/posts" % user.username
    resp = api.get(path)
    assert resp.status == 200, resp
    assert ids(resp.json) == newest_first[:20]
    assert resp.headers["link"] == '<%s?limit=20&max_id=%s>; rel="next"' % (path, newest_first[19])
    resp = api.get(next_link(resp.headers))
    assert resp.status == 200, resp
    assert ids(resp.json) == newest_first[20:]
    assert "link" not in resp.headers


@pytest.mark.parametrize("limit", [1, 2, 7, 12, 24, 25, 26, 100])
def test_walking_the_link_chain_yields_every_post_once_in_order(prolific, api, limit):
    user, newest_first = prolific
    items, pages = walk_pages(api, "/api/v1/accounts/%s/posts?limit=%d" % (user.username, limit))
    assert ids(items) == newest_first
    full, rest = divmod(25, limit)
    assert pages == [limit] * full + ([rest] if rest else [])


def test_link_is_sent_exactly_when_there_is_more(prolific, api):
    user, newest_first = prolific
    path = "/api/v1/accounts/%s/posts" % user.username
    assert "link" not in api.get(path + "?limit=25").headers
    assert "link" not in api.get(path + "?limit=26").headers
    assert next_link(api.get(path + "?limit=24").headers) == "%s?limit=24&max_id=%s" % (path, newest_first[23])
    # the last page of exactly `limit` items has no Link
    resp = api.get("%s?limit=5&max_id=%s" % (path, newest_first[19]))
    assert ids(resp.json) == newest_first[20:]
    assert "link" not in resp.headers


def test_max_id_and_since_id_bound_the_page(prolific, api):
    user, newest_first = prolific
    path = "/api/v1/accounts/%s/posts" % user.username
    resp = api.get("%s?max_id=%s&limit=3" % (path, newest_first[10]))
    assert ids(resp.json) == newest_first[11:14]
    resp = api.get("%s?since_id=%s&limit=100" % (path, newest_first[3]))
    assert ids(resp.json) == newest_first[:3]
    resp = api.get("%s?since_id=%s&max_id=%s" % (path, newest_first[9], newest_first[5]))
    assert ids(resp.json) == newest_first[6:9]
    resp = api.get("%s?max_id=%s" % (path, newest_first[-1]))
    assert resp.status == 200 and resp.json == [] and "link" not in resp.headers, resp


@pytest.mark.parametrize("query, message", [
    ("limit=0", BAD_LIMIT), ("limit=101", BAD_LIMIT), ("limit=-1", BAD_LIMIT), ("limit=abc", BAD_LIMIT),
    ("limit=", BAD_LIMIT), ("limit=1.5", BAD_LIMIT), ("limit=99999999999999999999", BAD_LIMIT),
    ("max_id=abc", "max_id: must be a positive integer id"), ("max_id=0", "max_id: must be a positive integer id"),
    ("max_id=-3", "max_id: must be a positive integer id"),
    ("since_id=x", "since_id: must be a positive integer id"),
])
def test_invalid_page_parameters_are_400_on_every_list(social, api, query, message):
    p = social[0]
    for path in ("/api/v1/accounts/%s/posts" % p.username, "/api/v1/accounts/%s/followers" % p.username,
                 "/api/v1/accounts/%s/following" % p.username, "/api/v1/posts/1/replies",
                 "/api/v1/timelines/home"):
        resp = p.api.get(path + "?" + query)
        assert resp.status == 400, (path, resp)
        assert error_of(resp) == message


def test_home_timeline_pages(api_cluster, api):
    me, friend = api_cluster.new_users(2, "homepages")
    follow(me, friend)
    expected = []
    for i in range(7):
        expected.append(post(me if i % 2 else friend, "home %d" % i)["id"])
    expected.reverse()
    items, pages = walk_pages(me.api, "/api/v1/timelines/home?limit=3")
    assert ids(items) == expected
    assert pages == [3, 3, 1]
    first = me.api.get("/api/v1/timelines/home?limit=3")
    assert first.headers["link"] == '</api/v1/timelines/home?limit=3&max_id=%s>; rel="next"' % expected[2]


def test_replies_pages_continue_with_since_id(api_cluster, api):
    author = api_cluster.new_user("threads")
    parent = post(author, "thread")
    replies = [post(author, "reply %d" % i, reply_to=parent["id"])["id"] for i in range(5)]
    path = "/api/v1/posts/%s/replies" % parent["id"]
    first = api.get(path + "?limit=2")
    assert ids(first.json) == replies[:2]
    assert first.headers["link"] == '<%s?limit=2&since_id=%s>; rel="next"' % (path, replies[1])
    for limit, pages in ((1, [1] * 5), (2, [2, 2, 1]), (5, [5]), (6, [5])):
        items, got = walk_pages(api, "%s?limit=%d" % (path, limit))
        assert ids(items) == replies
        assert got == pages


def test_followers_and_following_pages_highest_account_id_first(social, api):
    p, q, r, s = social
    by_id_desc = [u.username for u in sorted((q, r, s), key=lambda u: int(u.id), reverse=True)]
    for what in ("followers", "following"):
        path = "/api/v1/accounts/%s/%s" % (p.username, what)
        resp = api.get(path)
        assert resp.status == 200, resp
        for acc in resp.json:
            check_account(acc)
        assert [a["username"] for a in resp.json] == by_id_desc
        items, pages = walk_pages(api, path + "?limit=2")
        assert [a["username"] for a in items] == by_id_desc
        assert pages == [2, 1]
        resp = api.get(path + "?limit=1")
        assert resp.headers["link"] == '<%s?limit=1&max_id=%s>; rel="next"' % (path, resp.json[0]["id"])
    assert api.get("/api/v1/accounts/%s" % p.username).json["followers_count"] == 3
    assert api.get("/api/v1/accounts/%s" % p.username).json["following_count"] == 3
    for other in (q, r, s):
        resp = api.get("/api/v1/accounts/%s/followers" % other.username)
        assert [a["username"] for a in resp.json] == [p.username]
        resp = api.get("/api/v1/accounts/%s/following" % other.username)
        assert [a["username"] for a in resp.json] == [p.username]
