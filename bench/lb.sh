#!/usr/bin/env bash
# bench/lb.sh — scenario 1, "fast backends": raw proxying cost of agora lb (least-conn) against
# HAProxy (leastconn) and nginx (least_conn), all in front of the same three single-threaded
# build/testbackend processes, for each worker count in $BENCH_WORKERS. The three proxies run
# side by side (idle ones cost nothing but a health check a second) and wrk alternates between
# them round by round, so slow drifts of the shared machine hit all three alike. With
# BENCH_AGORA_BASE=PATH another agora build runs as a fourth proxy ("agora-base") in the same
# rounds, for before/after comparisons. Every run records the proxy's CPU time per request.
# Raw outputs: build/bench/lb/. Usage: bash bench/lb.sh (knobs: see bench/README.md).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init lb

bench_ports B1 B2 B3
bench_log "scenario 1: fast backends on ports $B1 $B2 $B3 (testbackend --threads 1)"
bench_backend backend1 "$B1" --threads 1
bench_backend backend2 "$B2" --threads 1
bench_backend backend3 "$B3" --threads 1

NOTE="wrk -t$BENCH_THREADS -c$BENCH_CONNS -d${BENCH_DURATION}s"
for W in $BENCH_WORKERS; do
    bench_ports PA PH PN
    bench_log "workers=$W: agora :$PA, haproxy :$PH, nginx :$PN"
    BENCH_DEFER=1
    bench_agora "agora-w$W" "$PA" least-conn "$W" "$B1" "$B2" "$B3"
    PID_A=$SPAWNED
    PROXIES=(agora haproxy nginx)
    declare -A PORT=([agora]=$PA [haproxy]=$PH [nginx]=$PN)
    if [ -n "${BENCH_AGORA_BASE:-}" ]; then
        # Another build, measured in the same rounds (the before of a before/after comparison).
        bench_ports PB
        BENCH_BIN=$BENCH_AGORA_BASE bench_agora "agora-base-w$W" "$PB" least-conn "$W" "$B1" "$B2" "$B3"
        PID_B=$SPAWNED
        PROXIES+=(agora-base)
        PORT[agora-base]=$PB
    fi
    bench_haproxy "haproxy-w$W" "$PH" leastconn "$W" "$B1" "$B2" "$B3"
    PID_H=$SPAWNED
    bench_nginx "nginx-w$W" "$PN" "$W" "$B1" "$B2" "$B3"
    PID_N=$SPAWNED
    BENCH_DEFER=0
    bench_wait_pending
    declare -A PID=([agora]=$PID_A [haproxy]=$PID_H [nginx]=$PID_N)
    [ -z "${BENCH_AGORA_BASE:-}" ] || PID[agora-base]=$PID_B

    # Warm-up (discarded): fills connection pools and lets every health check mark servers up.
    for proxy in "${PROXIES[@]}"; do
        bench_wrk "$RAW/warmup-w$W-$proxy.wrk.txt" "${PORT[$proxy]}" "$BENCH_CONNS" "$BENCH_WARMUP"
    done
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        for proxy in "${PROXIES[@]}"; do
            bench_measure "workers=$W" "$proxy" "$round" "${PORT[$proxy]}" "$BENCH_CONNS" \
                "$BENCH_DURATION" "${PID[$proxy]}" "$RAW/$proxy-w$W.log"
        done
    done
    bench_stop "$PID_A"
    bench_stop "$PID_H"
    bench_stop "$PID_N"
    [ -z "${BENCH_AGORA_BASE:-}" ] || bench_stop "$PID_B"
done

echo
"$PY" "$STATS" lb-table "$RAW/runs.tsv" --note "$NOTE" | tee "$RAW/summary.txt"
