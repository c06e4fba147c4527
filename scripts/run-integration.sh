#!/bin/sh
# Runs the integration tests (tests/integration, pytest) from the repository root. Extra
# arguments go to pytest: options (-x, -k reload) and, instead of the whole directory, test
# files or node ids (tests/integration/test_lb_http.py::test_expect_100_continue). The tests
# drive build/agora (or $AGORA_BIN when set) and build/testbackend: `make build` first.
# The exit status is pytest's.
#
# The files run in AGORA_TEST_JOBS pytest processes at once (default 2; pytest-xdist, each file
# whole in one process): most of a test's time is waiting (timeouts, health checks, a database
# failing over), not CPU. Every test takes ephemeral ports and its own temporary directory and
# database, so tests of different files do not meet. AGORA_TEST_JOBS=1 runs them one by one
# (also when xdist is not installed, or with -s / --pdb, which need the terminal).
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
target=tests/integration
jobs=${AGORA_TEST_JOBS:-2}
for arg in "$@"; do
  case $arg in
    -s|--capture=no|--pdb) jobs=1 ;;
    -*) ;;
    *) if [ -e "${arg%%::*}" ]; then target=; fi ;;
  esac
done
if [ "$jobs" -gt 1 ] && /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
  set -- -n "$jobs" --dist loadfile "$@"
fi
exec /usr/bin/python3 -m pytest -q $target "$@"
