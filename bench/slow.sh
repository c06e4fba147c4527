#!/usr/bin/env bash
# bench/slow.sh — scenario 2, "the starting design's own": balancing quality, not proxying cost.
# Three build/testbackend --serial backends (one request at a time, each delayed a random
# 1-20 ms), and a variant where the third is five times slower (5-100 ms). Every agora policy
# in $BENCH_SLOW_POLICIES and HAProxy roundrobin/leastconn take turns in front of them with a
# modest wrk concurrency; the serial backends, not the CPU, are the bottleneck, so queueing
# decisions decide p99 and throughput.
#
# The seven proxies of a variant run side by side and wrk alternates between them round by round,
# as in scenario 1. testbackend's /health bypasses the serial slot and idle pooled connections do
# not hold it, so the idle proxies do not disturb the measured one; a short pause between runs
# lets the backends drain requests left queued by the previous run. A discarded warm-up per proxy
# gives latency-aware policies (peak-ewma) their first samples. The backends record every
# request (--record), so the table also shows how each proxy split the requests between them.
# Raw outputs: build/bench/slow/.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init slow

W=$BENCH_SLOW_WORKERS
NOTE="workers=$W, wrk -t$BENCH_THREADS -c$BENCH_SLOW_CONNS -d${BENCH_SLOW_DURATION}s"
PROXIES=()
for policy in $BENCH_SLOW_POLICIES; do PROXIES+=("agora $policy"); done
PROXIES+=("haproxy roundrobin" "haproxy leastconn")

for variant in even slow; do
    if [ "$variant" = even ]; then
        group="even: 3 x delay 1-20 ms"
        third=1-20
    else
        group="slow: 2 x delay 1-20 ms + 1 x 5-100 ms"
        third=5-100
    fi
    bench_ports B1 B2 B3
    bench_log "scenario 2 ($group): serial backends on ports $B1 $B2 $B3"
    BENCH_RECORDS=("$RAW/$variant-backend1.requests" "$RAW/$variant-backend2.requests" "$RAW/$variant-backend3.requests")
    bench_backend "$variant-backend1" "$B1" --serial --delay-ms 1-20 --record "${BENCH_RECORDS[0]}"
    BP1=$SPAWNED
    bench_backend "$variant-backend2" "$B2" --serial --delay-ms 1-20 --record "${BENCH_RECORDS[1]}"
    BP2=$SPAWNED
    bench_backend "$variant-backend3" "$B3" --serial --delay-ms "$third" --record "${BENCH_RECORDS[2]}"
    BP3=$SPAWNED

    declare -A PORT=() PID=()
    # All ports at once: the proxies are not listening yet when the next one is started.
    read -r -a ports <<<"$("$PY" "$STATS" ports "${#PROXIES[@]}")"
    [ "${#ports[@]}" -eq "${#PROXIES[@]}" ] || bench_die "cannot pick free ports"
    BENCH_DEFER=1 # start them all, then wait for all: their first health checks overlap
    for i in "${!PROXIES[@]}"; do
        proxy=${PROXIES[$i]}
        read -r kind algo <<<"$proxy"
        name="$variant-$kind-$algo"
        if [ "$kind" = agora ]; then
            bench_agora "$name" "${ports[$i]}" "$algo" "$W" "$B1" "$B2" "$B3"
        else
            bench_haproxy "$name" "${ports[$i]}" "$algo" "$W" "$B1" "$B2" "$B3"
        fi
        PORT[$proxy]=${ports[$i]}
        PID[$proxy]=$SPAWNED
    done
    BENCH_DEFER=0
    bench_wait_pending
    for proxy in "${PROXIES[@]}"; do
        bench_wrk "$RAW/warmup-$variant-${proxy/ /-}.wrk.txt" "${PORT[$proxy]}" "$BENCH_SLOW_CONNS" "$BENCH_WARMUP"
        sleep 0.5
    done
    for ((round = 1; round <= BENCH_SLOW_ROUNDS; round++)); do
        for proxy in "${PROXIES[@]}"; do
            bench_measure "$group" "$proxy" "$round" "${PORT[$proxy]}" "$BENCH_SLOW_CONNS" \
                "$BENCH_SLOW_DURATION" "${PID[$proxy]}" "$RAW/$variant-${proxy/ /-}.log"
            sleep 0.5
        done
    done
    for proxy in "${PROXIES[@]}"; do bench_stop "${PID[$proxy]}"; done
    bench_stop "$BP1"
    bench_stop "$BP2"
    bench_stop "$BP3"
done

echo
strict=()
[ "${BENCH_STRICT:-0}" = 1 ] && strict=(--strict)
"$PY" "$STATS" slow-table "$RAW/runs.tsv" --note "$NOTE" "${strict[@]}" | tee "$RAW/summary.txt"
