"""A full disk under `agora server`: writes that cannot be saved answer 507 with a clear JSON
error (not a bare 500), reads go on, nothing acknowledged is lost, and writes work again once
there is room. The database lives on a 2 MiB tmpfs that the test mounts itself (root, as CI
runs); without the right to mount, the test is skipped."""
import json
import os
import re
import subprocess

import pytest

from helpers import LOCALHOST, ApiClient, free_port, http_request, metric, parse_metrics, start_agora_server, wait_for


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_full_disk_answers_507_and_loses_no_acknowledged_post(agora_bin, small_disk):
    db = small_disk / "agora.db"
    mport = free_port()
    server = start_agora_server(agora_bin, db, extra_args=("--signup-limit", "off", "--metrics-listen",
                                                           "%s:%d" % (LOCALHOST, mport)))
    try:
        api = ApiClient(server.port)
        assert api.post("/api/v1/accounts", {"username": "disk1", "password": "correct horse 1"}).status == 201
        token = api.post("/api/v1/sessions", {"username": "disk1", "password": "correct horse 1"}).json["token"]
        me = api.as_user(token)
        st = os.statvfs(str(small_disk))
        with open(str(small_disk / "filler"), "wb") as f:
            try:
                f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 65536))
            except OSError:
                pass
        acked, refused = [], None
        for i in range(400):
            resp = me.post("/api/v1/posts", {"text": "post %d %s" % (i, "x" * 400)})
            if resp.status == 201:
                acked.append(resp.json["id"])
                continue
            refused = resp
            break
        assert refused is not None, "the disk never filled up"
        assert refused.status == 507, refused
        assert refused.json == {"error": "the database's disk is full: nothing was saved"}
        # the server's log names the request (X-Request-Id, made by the server for a direct client)
        rid = refused.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert wait_for(lambda: "agora: [%s] database full: " % rid in server.output(), 5), server.output()
        # /metrics counts the failure by kind, and the answer under its route
        m = parse_metrics(http_request(LOCALHOST, mport, "GET", "/metrics")[2].decode())
        assert metric(m, "agora_server_db_errors_total", kind="full") == 1
        assert metric(m, "agora_server_db_errors_total", kind="error") == 0
        assert metric(m, "agora_server_requests_total", route="/api/v1/posts", method="POST", code="507") == 1
        assert metric(m, "agora_server_store_seconds_count", op="post_create") == len(acked) + 1
        assert api.get("/health").status == 200  # reads go on
        assert all(api.get("/api/v1/posts/%s" % i).status == 200 for i in acked)
        os.unlink(str(small_disk / "filler"))
        assert me.post("/api/v1/posts", {"text": "after freeing"}).status == 201
    finally:
        server.stop(timeout=10.0)
    server = start_agora_server(agora_bin, db)
    try:
        api = ApiClient(server.port)
        missing = [i for i in acked if api.get("/api/v1/posts/%s" % i).status != 200]
        assert missing == [], "acknowledged posts lost: %r" % missing
    finally:
        server.stop(timeout=10.0)
