"""Review 14: pg-failover.sh's generated passwords are never written down in clear by PostgreSQL.

The script sets them with ALTER/CREATE ROLE ... PASSWORD '...' over psql. pg_auto_failover loads
pg_stat_statements on the data nodes (and creates it in the agora database), which keeps utility
statements' texts as they are, and sets log_statement = ddl on the monitor. So the agora role's
password and the internal one (pgautofailover_replicator, a SUPERUSER, shares it) were readable
by any role with pg_read_all_stats / pg_monitor (docs/CONFIG.md suggests granting pg_monitor to
a replica role) through the pg_stat_statements view, and in clear in the monitor's log."""

import os
import re

import pytest

from agora_test.pgfailover import PgFailover

pytestmark = pytest.mark.skipif(not PgFailover.installed(), reason="pg_auto_failover is not installed")


def test_generated_passwords_are_not_in_stats_or_logs():
    with PgFailover.private("agora-r14-") as pair:
        agora_pw = (pair.dir / "agora.password").read_text().strip()
        internal = re.search(r":([0-9a-f]{36})$", (pair.dir / "pgpass").read_text().splitlines()[0]).group(1)
        secrets = {agora_pw: "agora's password", internal: "the internal roles' password"}
        # what the parts wrote (PostgreSQL's logs, pg_autoctl's, the statistics files: the texts
        # pg_stat_statements shows a pg_monitor role are in node1/pg_stat_tmp), but the
        # two files meant to hold them and pg_autoctl's own configuration
        found = []
        for root, _, files in os.walk(pair.dir):
            for name in files:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, pair.dir)
                if rel in ("agora.password", "pgpass") or rel.startswith("xdg/config/") or \
                        rel.startswith("xdg/data/") or "/pg_wal/" in path or "/base/" in path or \
                        "/global/" in path or "/pg_xact/" in path:
                    continue
                try:
                    data = open(path, "rb").read()
                except OSError:
                    continue
                for secret, what in secrets.items():
                    if secret.encode() in data:
                        found.append((rel, what))
        assert not found, found
