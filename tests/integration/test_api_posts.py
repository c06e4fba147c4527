"""JSON API through the balancer: posts, idempotent creation, deletion, likes and replies.

Every request goes through `agora lb` to one of three `agora server` processes sharing one SQLite
file (the module's api_cluster). Each test uses accounts of its own (unique usernames).
"""

import time

import pytest

from helpers import check_post, rfc3339_ms, unique_username

POSTS = "/api/v1/posts"
JSON_TYPE = "application/json; charset=utf-8"
BAD_TEXT = "text: must be 1-500 characters after trimming white space"


def error_of(resp):
    assert resp.headers.get("content-type") == JSON_TYPE, resp.headers
    body = resp.json
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.fixture(scope="module")
def alice(api_cluster):
    return api_cluster.new_user("alice")


@pytest.fixture(scope="module")
def bob(api_cluster):
    return api_cluster.new_user("bob")


def account(api, username):
    resp = api.get("/api/v1/accounts/" + username)
    assert resp.status == 200, resp
    return resp.json


def new_post(user, text="hello", **extra):
    resp = user.api.post(POSTS, dict(text=text, **extra))
    assert resp.status == 201, resp
    return resp.json


def get_post(client, post_id):
    resp = client.get(POSTS + "/" + post_id)
    assert resp.status == 200, resp
    return resp.json


# ---------------------------------------------------------------- creating and reading

def test_create_post_answers_201_with_exactly_the_post_fields(api_cluster, api):
    user = api_cluster.new_user("poster")
    before = int(time.time() * 1000)
    resp = user.api.post(POSTS, {"text": "  \n hello, agora!\t "})
    after = int(time.time() * 1000)
    assert resp.status == 201, resp
    assert resp.headers["content-type"] == JSON_TYPE
    post = resp.json
    check_post(post)
    assert resp.headers["location"] == "/api/v1/posts/" + post["id"]
    assert post["text"] == "hello, agora!"  # trimmed
    assert post["reply_to"] is None
    assert (post["likes_count"], post["replies_count"], post["liked"]) == (0, 0, False)
    assert before - 1000 <= rfc3339_ms(post["created_at"]) <= after + 1000
    assert post["author"] == account(api, user.username)
    assert post["author"]["username"] == user.username and post["author"]["posts_count"] == 1
    # anyone reads it back the same, from whichever server answers
    for _ in range(3):
        assert get_post(api, post["id"]) == post
        assert get_post(user.api, post["id"]) == post


def test_text_is_counted_in_code_points(alice, api):
    emoji = "😀" * 500  # 2000 bytes of UTF-8, 1000 UTF-16 units, 500 code points
    post = new_post(alice, emoji)
    assert post["text"] == emoji
    assert get_post(api, post["id"])["text"] == emoji
    mixed = "é" * 250 + "a" * 249 + "ß"
    assert new_post(alice, "   " + mixed + "\n\n")["text"] == mixed
    for text in ("😀" * 501, "a" * 501, "é" * 501, " " + "a" * 501 + " "):
        resp = alice.api.post(POSTS, {"text": text})
        assert resp.status == 422, (len(text), resp)
        assert error_of(resp) == BAD_TEXT


@pytest.mark.parametrize("text", ["", " ", "\n\t \r\n", "\u00a0\u3000\u2003", "\u2028 \u2029"])
def test_empty_or_white_space_text_is_422(alice, text):
    resp = alice.api.post(POSTS, {"text": text})
    assert resp.status == 422, resp
    assert error_of(resp) == BAD_TEXT


def test_text_keeps_inner_white_space_and_unicode(alice, api):
    text = "line one\n\n  line two\tend — ünïcödé 中文 🚀"
    post = new_post(alice, "\n" + text + "  ")
    assert post["text"] == text
    assert get_post(api, post["id"])["text"] == text


@pytest.mark.parametrize("body, status, message", [
    ({}, 422, "text: is required"),
    ({"text": None}, 422, "text: is required"),
    ({"text": 5}, 400, "text: must be a string"),
    ({"text": ["a"]}, 400, "text: must be a string"),
    ({"text": "ok", "reply_to": 5}, 400, "reply_to: must be a post id string or null"),
    ({"text": "ok", "reply_to": True}, 400, "reply_to: must be a post id string or null"),
    ({"text": "ok", "reply_to": "999999999"}, 422, "reply_to: post not found"),
    ({"text": "ok", "reply_to": "abc"}, 422, "reply_to: post not found"),
    ({"text": "ok", "reply_to": "0"}, 422, "reply_to: post not found"),
    ({"text": "ok", "reply_to": "-1"}, 422, "reply_to: post not found"),
])
def test_invalid_post_bodies(alice, body, status, message):
    resp = alice.api.post(POSTS, body)
    assert resp.status == status, resp
    assert error_of(resp) == message


def test_malformed_json_post_is_400(alice):
    resp = alice.api.post(POSTS, data=b'{"text": "unterminated')
    assert resp.status == 400, resp
    assert error_of(resp).startswith("invalid JSON: ")


def test_rejected_posts_are_not_stored(api_cluster, api):
    user = api_cluster.new_user("rejected")
    for body in ({"text": ""}, {"text": "a" * 501}, {"text": 1}, {"text": "x", "reply_to": "999999999"}):
        assert user.api.post(POSTS, body).status in (400, 422)
    assert account(api, user.username)["posts_count"] == 0
    resp = api.get("/api/v1/accounts/%s/posts" % user.username)
    assert resp.status == 200 and resp.json == [], resp


@pytest.mark.parametrize("path", [POSTS + "/999999999", POSTS + "/abc", POSTS + "/0", POSTS + "/-5",
                                  POSTS + "/1.5", POSTS + "/99999999999999999999999"])
def test_missing_post_is_404(api, path):
    resp = api.get(path)
    assert resp.status == 404, resp
    assert error_of(resp) == "post not found"


# ---------------------------------------------------------------- Idempotency-Key

def test_same_idempotency_key_twice_gives_the_same_post_once(api_cluster, api):
    user = api_cluster.new_user("idem")
    key = {"Idempotency-Key": "idem-" + unique_username("k")}
    first = user.api.post(POSTS, {"text": "only once"}, headers=key)
    assert first.status == 201, first
    # the retries may land on other servers: all of them answer with the stored post
    for _ in range(4):
        again = user.api.post(POSTS, {"text": "only once"}, headers=key)
        assert again.status == 201, again
        assert again.json["id"] == first.json["id"]
        assert again.json["text"] == "only once"
    assert account(api, user.username)["posts_count"] == 1
    resp = api.get("/api/v1/accounts/%s/posts" % user.username)
    assert [p["id"] for p in resp.json] == [first.json["id"]]
    # another key (or none) makes another post
    other = user.api.post(POSTS, {"text": "only once"}, headers={"Idempotency-Key": key["Idempotency-Key"] + "2"})
    assert other.status == 201 and other.json["id"] != first.json["id"], other
    plain = user.api.post(POSTS, {"text": "only once"})
    assert plain.status == 201 and plain.json["id"] not in (first.json["id"], other.json["id"]), plain
    assert account(api, user.username)["posts_count"] == 3


@pytest.mark.parametrize("key", ["", "k" * 129, "tab\there", "naïve"])
def test_malformed_idempotency_key_is_400(alice, key):
    resp = alice.api.request("POST", POSTS, json_body={"text": "x"},
                             headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
    assert resp.status == 400, resp
    assert error_of(resp) == "Idempotency-Key: must be 1-128 printable ASCII characters"


# ---------------------------------------------------------------- deleting

def test_only_the_author_deletes_a_post(api_cluster, api):
    author, other = api_cluster.new_users(2, "deleter")
    post = new_post(author, "delete me")
    path = POSTS + "/" + post["id"]
    resp = other.api.delete(path)
    assert resp.status == 403, resp
    assert error_of(resp) == "you can only delete your own posts"
    assert get_post(api, post["id"]) == post
    resp = api.delete(path)
    assert resp.status == 401, resp
    resp = author.api.delete(path)
    assert resp.status == 204, resp
    assert resp.body == b"" and "content-type" not in resp.headers, resp.headers
    for _ in range(3):
        resp = api.get(path)
        assert resp.status == 404, resp
        assert error_of(resp) == "post not found"
    resp = author.api.delete(path)
    assert resp.status == 404, resp
    assert error_of(resp) == "post not found"
    assert account(api, author.username)["posts_count"] == 0
    resp = api.get("/api/v1/accounts/%s/posts" % author.username)
    assert resp.json == []
    resp = author.api.post(path + "/like")
    assert resp.status == 404, resp


# ---------------------------------------------------------------- likes

def test_likes_are_idempotent_and_liked_is_per_reader(alice, bob, api):
    post = new_post(alice, "like me")
    path = POSTS + "/" + post["id"] + "/like"
    for _ in range(2):
        resp = bob.api.post(path)
        assert resp.status == 200, resp
        assert resp.headers["content-type"] == JSON_TYPE
        liked = resp.json
        check_post(liked)
        assert liked["id"] == post["id"]
        assert (liked["likes_count"], liked["liked"]) == (1, True)
    assert {k: v for k, v in liked.items() if k not in ("likes_count", "liked", "author")} == \
        {k: v for k, v in post.items() if k not in ("likes_count", "liked", "author")}
    # the like is bob's: anonymous readers and other users see liked false
    assert (get_post(api, post["id"])["likes_count"], get_post(api, post["id"])["liked"]) == (1, False)
    assert (get_post(alice.api, post["id"])["likes_count"], get_post(alice.api, post["id"])["liked"]) == (1, False)
    assert get_post(bob.api, post["id"])["liked"] is True
    listed = api.get("/api/v1/accounts/%s/posts?limit=1" % alice.username).json[0]
    assert (listed["id"], listed["likes_count"], listed["liked"]) == (post["id"], 1, False)
    listed = bob.api.get("/api/v1/accounts/%s/posts?limit=1" % alice.username).json[0]
    assert (listed["id"], listed["likes_count"], listed["liked"]) == (post["id"], 1, True)
    # the author likes it too: two likes
    resp = alice.api.post(path)
    assert (resp.status, resp.json["likes_count"], resp.json["liked"]) == (200, 2, True)
    for _ in range(2):
        resp = bob.api.delete(path)
        assert resp.status == 200, resp
        assert (resp.json["likes_count"], resp.json["liked"]) == (1, False)
    assert get_post(alice.api, post["id"])["liked"] is True
    resp = alice.api.delete(path)
    assert (resp.status, resp.json["likes_count"], resp.json["liked"]) == (200, 0, False)


def test_liking_needs_a_session_and_an_existing_post(alice, api):
    post = new_post(alice, "not for anonymous likes")
    resp = api.post(POSTS + "/" + post["id"] + "/like")
    assert resp.status == 401, resp
    for path in (POSTS + "/999999999/like", POSTS + "/nope/like"):
        for method in ("POST", "DELETE"):
            resp = alice.api.request(method, path)
            assert resp.status == 404, resp
            assert error_of(resp) == "post not found"
    assert get_post(api, post["id"])["likes_count"] == 0


# ---------------------------------------------------------------- replies

def test_replies_are_listed_oldest_first_and_counted(alice, bob, api):
    parent = new_post(alice, "a question")
    replies = []
    for user, text in ((bob, "first answer"), (alice, "second answer"), (bob, "third answer")):
        reply = new_post(user, text, reply_to=parent["id"])
        check_post(reply)
        assert reply["reply_to"] == parent["id"]
        replies.append(reply)
    resp = api.get(POSTS + "/" + parent["id"] + "/replies")
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == JSON_TYPE
    assert [r["id"] for r in resp.json] == [r["id"] for r in replies]
    assert [r["text"] for r in resp.json] == ["first answer", "second answer", "third answer"]
    assert [r["author"]["username"] for r in resp.json] == [bob.username, alice.username, bob.username]
    assert "link" not in resp.headers
    assert get_post(api, parent["id"])["replies_count"] == 3
    for r in replies:
        assert get_post(api, r["id"])["replies_count"] == 0
    # a reply to a reply counts on its own parent only
    nested = new_post(alice, "nested", reply_to=replies[0]["id"])
    assert get_post(api, replies[0]["id"])["replies_count"] == 1
    assert get_post(api, parent["id"])["replies_count"] == 3
    assert [r["id"] for r in api.get(POSTS + "/" + replies[0]["id"] + "/replies").json] == [nested["id"]]
    # deleting a reply takes it out of the list and the count
    assert bob.api.delete(POSTS + "/" + replies[2]["id"]).status == 204
    assert [r["id"] for r in api.get(POSTS + "/" + parent["id"] + "/replies").json] == \
        [replies[0]["id"], replies[1]["id"]]
    assert get_post(api, parent["id"])["replies_count"] == 2


def test_replies_of_a_post_without_replies_and_of_a_missing_post(alice, api):
    post = new_post(alice, "nobody answers")
    resp = api.get(POSTS + "/" + post["id"] + "/replies")
    assert resp.status == 200 and resp.json == [], resp
    resp = api.get(POSTS + "/999999999/replies")
    assert resp.status == 404, resp
    assert error_of(resp) == "post not found"


def test_deleting_a_parent_keeps_its_replies_without_reply_to(alice, bob, api):
    parent = new_post(alice, "soon gone")
    reply = new_post(bob, "still here", reply_to=parent["id"])
    assert alice.api.delete(POSTS + "/" + parent["id"]).status == 204
    kept = get_post(api, reply["id"])
    assert kept["text"] == "still here" and kept["reply_to"] is None, kept
    resp = api.get(POSTS + "/" + parent["id"] + "/replies")
    assert resp.status == 404, resp
    resp = bob.api.post(POSTS, {"text": "too late", "reply_to": parent["id"]})
    assert resp.status == 422, resp
    assert error_of(resp) == "reply_to: post not found"
