#!/usr/bin/env bash
# bench/run.sh — the load-balancer benchmarks (`make bench` runs this after building).
# Usage: bash bench/run.sh [lb|slow|openloop|social|idle|metrics|tls|all]   (default all; knobs in bench/README.md)
#   lb       scenario 1: agora lb vs HAProxy vs nginx in front of fast backends (bench/lb.sh)
#   slow     scenario 2: agora's policies vs HAProxy with serial, slow backends (bench/slow.sh)
#   openloop scenario 2's slow variant at a fixed rate, latency from due times (bench/openloop.sh)
#   idle     scenario 4: memory per idle connection (1,000 and 10,000 held) and throughput with
#            10,000 idle connections held vs none, agora lb vs HAProxy vs nginx (bench/idle.sh)
#   metrics  scenario 5: the cost of GET /metrics: one scrape at 100 servers, and throughput
#            with a scrape a second vs none (bench/metrics.sh)
#   tls      issue 14: TLS handshakes/s (full, resumed), HTTPS keep-alive req/s and HTTP/2 req/s,
#            agora lb vs HAProxy vs nginx with the same certificate and backends (bench/tls.sh)
# Installs missing packages, checks the binaries, runs the scenarios and prints their tables;
# raw outputs and the tables go to build/bench/ (summary.txt holds all tables of the last run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

case "${1:-all}" in
    lb) scenarios=(lb) ;;
    slow) scenarios=(slow) ;;
    openloop) scenarios=(openloop) ;;
    social) scenarios=(social) ;;
    idle) scenarios=(idle) ;;
    metrics) scenarios=(metrics) ;;
    tls) scenarios=(tls) ;;
    all) scenarios=(lb slow openloop social idle metrics tls) ;;
    *) bench_die "unknown scenario '$1' (expected lb, slow, openloop, social, idle, metrics, tls or all)" ;;
esac

sh scripts/install-deps.sh bench
for tool in wrk curl "$HAPROXY" "$NGINX"; do
    command -v "$tool" >/dev/null || bench_die "$tool not found after scripts/install-deps.sh bench"
done
[ -x "$TESTBACKEND" ] || bench_die "$TESTBACKEND not found: build it with 'make build' (tests/support/testbackend.c)"
[ -x "$AGORA" ] || bench_die "$AGORA not found: build it with 'make build'"
help=$("$AGORA" lb --help 2>&1) || bench_die "'$AGORA lb --help' failed: is the lb subcommand implemented?"
for opt in --listen --backend --policy --workers --health-interval --access-log; do
    grep -q -- "$opt" <<<"$help" || bench_die "'$AGORA lb --help' does not mention $opt, which the benchmark passes"
done

mkdir -p "$BENCH_OUT"
summary="$BENCH_OUT/summary.txt"
{
    echo "agora load-balancer benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
    bench_machine_notes
    echo "note: wrk, the proxies and the backends all share these CPUs; nothing is pinned."
    echo
} | tee "$summary"

status=0
for s in "${scenarios[@]}"; do
    rm -f "$BENCH_OUT/$s/summary.txt"
    rc=0
    bash "bench/$s.sh" || rc=$?
    # 3 = a target was missed under BENCH_STRICT=1: the tables are complete, keep going.
    [ "$rc" = 0 ] || [ "$rc" = 3 ] || exit "$rc"
    [ "$rc" = 0 ] || status=$rc
    cat "$BENCH_OUT/$s/summary.txt" >>"$summary"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$summary"
echo "raw outputs in $BENCH_OUT/; all tables in $summary"
exit "$status"
