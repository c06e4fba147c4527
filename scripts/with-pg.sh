#!/bin/sh
# Runs a command with a private PostgreSQL for its tests: unless AGORA_TEST_PG is already set,
# starts a throw-away cluster with scripts/pg-temp.sh in a temporary directory (fsync off: only
# processes die in tests, never the machine), exports its URL as AGORA_TEST_PG, runs the command
# and destroys the cluster afterwards, whatever the command's outcome. Tests create their own
# databases in it. wal_keep_size keeps 1 GB of WAL: the test files run two at a time
# (run-integration.sh), and two pg_basebackups of this cluster at once (the standbys of
# integration-replica) each force a checkpoint, which could recycle a segment the other still had
# to stream ("requested WAL segment ... has already been removed"). Exit status: the command's.
#   usage: with-pg.sh COMMAND [ARG...]
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$AGORA_TEST_PG" ]; then
  exec "$@"
fi
dir=$(mktemp -d /tmp/agora-pg.XXXXXX) || exit 1
cleanup() { sh "$root/scripts/pg-temp.sh" destroy "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
AGORA_TEST_PG=$(sh "$root/scripts/pg-temp.sh" start "$dir" -c fsync=off -c wal_keep_size=1GB) || exit 1
export AGORA_TEST_PG
echo "with-pg: PostgreSQL for the tests at $AGORA_TEST_PG"
"$@"
