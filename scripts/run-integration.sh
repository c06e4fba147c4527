#!/bin/sh
# Runs the integration tests (tests/integration, pytest) from the repository root. Extra
# arguments go to pytest: options (-x, -k reload) and, instead of the whole directory, test
# files or node ids (tests/integration/test_lb_http.py::test_expect_100_continue). The tests
# drive build/agora (or $AGORA_BIN when set) and build/testbackend: `make build` first.
# The exit status is pytest's.
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
target=tests/integration
for arg in "$@"; do
  case $arg in
    -*) ;;
    *) if [ -e "${arg%%::*}" ]; then target=; fi ;;
  esac
done
exec /usr/bin/python3 -m pytest -q $target "$@"
