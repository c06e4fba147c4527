#!/bin/sh
# Runs the store contract suite (tests/unit/app/test_store.c, built as BIN) on PostgreSQL: on the
# cluster AGORA_TEST_PG names when it is set (a superuser's URL; the suite makes and drops its own
# databases there), otherwise on a private cluster started here with scripts/pg-temp.sh (fsync off:
# only this test's data is at stake) in a temporary directory, destroyed at the end.
#   sh scripts/test-store-postgres.sh build/tests/app/test_store
set -e
bin=${1:?usage: test-store-postgres.sh TEST_BINARY}
if [ -n "$AGORA_TEST_PG" ]; then
  AGORA_TEST_DB_URL=$AGORA_TEST_PG exec "$bin"
fi
dir=$(mktemp -d /tmp/agora-store-pg-XXXXXX)
here=$(dirname "$0")
trap 'sh "$here/pg-temp.sh" destroy "$dir" >/dev/null 2>&1 || true' EXIT INT TERM
url=$(sh "$here/pg-temp.sh" start "$dir" -c fsync=off)
AGORA_TEST_DB_URL=$url "$bin"
