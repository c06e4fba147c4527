#!/bin/sh
# Installs the Debian packages agora needs, only those missing. Idempotent; runs as root
# (or via sudo when available). Usage: install-deps.sh [test|bench]
set -e
base="pkg-config libsqlite3-dev libsodium-dev libjansson-dev libinih-dev libpq-dev libssl-dev libnghttp2-dev"
test_pkgs="libcmocka-dev nftables python3 python3-pytest python3-pytest-xdist python3-cryptography python3-h2 nghttp2-client curl openssl postgresql postgresql-15-auto-failover clang libclang-rt-14-dev chromium nodejs npm wrk prometheus keepalived"
bench_pkgs="haproxy nginx-light wrk nghttp2-client openssl"
want="$base"
case "$1" in
  test) want="$want $test_pkgs" ;;
  bench) want="$want $bench_pkgs" ;;
esac
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# node/npm may come from elsewhere on a developer machine: accept any working node + npm.
case "$missing" in *nodejs*|*npm*)
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    missing=$(echo "$missing" | sed -e 's/ nodejs//' -e 's/ npm//')
  fi ;;
esac
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
