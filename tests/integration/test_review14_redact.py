"""Review 14: a database URL's password is never shown, whatever characters it holds.

libpq takes the user part of postgres://user:password@host up to the first '@' before any '/',
so a password may hold a raw '?' or '#'; store_redact used to end the authority at '?' or '#'
and printed such a password in clear (agora up's and agora server's messages)."""

import subprocess

import pytest

from helpers import LOCALHOST
from test_up_postgres import up_port_run


@pytest.mark.parametrize("secret", ["s3#cret", "s3?cret", "a#b?c"])
def test_a_password_with_question_mark_or_hash_is_redacted(agora_bin, tmp_path, secret):
    data_dir = tmp_path / "data"
    base = up_port_run(2)
    url = "postgres://agora:%s@127.0.0.1:1/agora?connect_timeout=1" % secret
    r = subprocess.run([str(agora_bin), "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", str(data_dir),
                        "--db", url, "--db-wait", "1s"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r
    assert "postgres://agora:***@127.0.0.1:1/agora?connect_timeout=1" in r.stderr, r.stderr
    assert secret not in r.stdout + r.stderr, r
