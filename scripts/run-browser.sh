#!/bin/sh
# Runs the headless-Chromium UI test (tests/browser/*.test.mjs) with node's built-in test runner,
# from the repository root. Installs the pinned npm packages first when tests/browser/node_modules
# is missing (npm ci, from package-lock.json). Needs build/agora (make build) and Debian's
# /usr/bin/chromium. Exit status is non-zero when a test failed or something needed is missing.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v node >/dev/null 2>&1 || { echo "run-browser: node is not installed (make deps-test)" >&2; exit 1; }
if [ ! -x /usr/bin/chromium ]; then
  echo "run-browser: /usr/bin/chromium is missing (make deps-test installs Debian's chromium)" >&2
  exit 1
fi
if [ ! -d tests/browser/node_modules ]; then
  command -v npm >/dev/null 2>&1 || { echo "run-browser: npm is not installed (make deps-test)" >&2; exit 1; }
  echo "run-browser: installing npm packages in tests/browser"
  (cd tests/browser && npm ci --silent --no-audit --no-fund) || {
    echo "run-browser: npm ci failed in tests/browser" >&2
    exit 1
  }
fi

node --test tests/browser/
