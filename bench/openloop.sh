#!/usr/bin/env bash
# bench/openloop.sh — scenario 2's slow variant measured open loop (issue 13, item 5a).
# Three build/testbackend --serial backends (two take a random 1-20 ms per request, the third
# 5-100 ms), as in bench/slow.sh. wrk's closed loop hides stalls: a connection waiting on a slow
# answer sends nothing, so the requests users would have sent meanwhile are never timed
# (coordinated omission). Here build/openloop (bench/openloop.c) sends GET / at a fixed rate and
# times each request from its due time.
#
# 1. Capacity: a closed-loop wrk run (-c$BENCH_SLOW_CONNS, like scenario 2) through HAProxy
#    leastconn; the offered rate is $BENCH_OPEN_LOAD (0.7) of it, or $BENCH_OPEN_RATE if set.
# 2. The proxies — agora with each policy of $BENCH_OPEN_POLICIES, HAProxy leastconn and nginx
#    least_conn (with a shared zone, so its workers share the connection counts as HAProxy's
#    threads and agora's workers do), all with $BENCH_SLOW_WORKERS workers — run side by side;
#    after a discarded warm-up at the same rate, openloop alternates between them round by round.
#    After every run the backends' queues are drained (a direct GET / to each waits behind what is
#    queued), so a run that overloaded a backend does not slow down the next proxy's run.
# Table: p50/p99/p99.9/max per proxy (medians over rounds), p99 against HAProxy leastconn, the
# split between the backends, and the target (peak-ewma p99 <= 0.5x HAProxy leastconn's).
# Raw outputs: build/bench/openloop/. Usage: bash bench/openloop.sh (knobs: bench/README.md).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init openloop
OPENLOOP=${BENCH_OPENLOOP:-$BENCH_ROOT/build/openloop}
OSTATS="$BENCH_DIR/openloop_stats.py"
[ -x "$OPENLOOP" ] || bench_die "$OPENLOOP not found: build it with 'make build' (bench/openloop.c)"

W=$BENCH_SLOW_WORKERS
PROXIES=()
for policy in $BENCH_OPEN_POLICIES; do PROXIES+=("agora $policy"); done
PROXIES+=("haproxy leastconn" "nginx least_conn")

bench_ports B1 B2 B3
bench_log "open loop: serial backends on ports $B1 $B2 $B3 (1-20, 1-20, 5-100 ms)"
BENCH_RECORDS=("$RAW/backend1.requests" "$RAW/backend2.requests" "$RAW/backend3.requests")
bench_backend backend1 "$B1" --serial --delay-ms 1-20 --record "${BENCH_RECORDS[0]}"
bench_backend backend2 "$B2" --serial --delay-ms 1-20 --record "${BENCH_RECORDS[1]}"
bench_backend backend3 "$B3" --serial --delay-ms 5-100 --record "${BENCH_RECORDS[2]}"

declare -A PORT=() PID=()
read -r -a ports <<<"$("$PY" "$STATS" ports "${#PROXIES[@]}")"
[ "${#ports[@]}" -eq "${#PROXIES[@]}" ] || bench_die "cannot pick free ports"
BENCH_DEFER=1
for i in "${!PROXIES[@]}"; do
    proxy=${PROXIES[$i]}
    read -r kind algo <<<"$proxy"
    case $kind in
        agora) bench_agora "agora-$algo" "${ports[$i]}" "$algo" "$W" "$B1" "$B2" "$B3" ;;
        haproxy) bench_haproxy "haproxy-$algo" "${ports[$i]}" "$algo" "$W" "$B1" "$B2" "$B3" ;;
        nginx) BENCH_NGINX_ZONE=1 bench_nginx "nginx-$algo" "${ports[$i]}" "$W" "$B1" "$B2" "$B3" ;;
    esac
    PORT[$proxy]=${ports[$i]}
    PID[$proxy]=$SPAWNED
done
BENCH_DEFER=0
bench_wait_pending

# Waits until every backend has served what is queued on it (bounded by curl's --max-time).
drain() {
    local p
    for p in "$B1" "$B2" "$B3"; do
        curl -s -o /dev/null --max-time 120 "http://127.0.0.1:$p/" || bench_die "backend :$p did not drain within 120 s"
    done
}

# One openloop run: openloop_run OUTFILE PORT RATE SECONDS (a run lasts at most SECONDS plus the
# timeout; `timeout` bounds it in case openloop itself hangs).
openloop_run() {
    local dest=$1 port=$2 rate=$3 secs=$4
    local cmd=("$OPENLOOP" --port "$port" --rate "$rate" --duration "$secs" --timeout "$BENCH_OPEN_TIMEOUT")
    echo "openloop: ${cmd[*]} > $dest" >>"$RAW/commands.txt"
    timeout --foreground $((${secs%%.*} + ${BENCH_OPEN_TIMEOUT%%.*} + 30)) "${cmd[@]}" >"$dest" 2>&1 ||
        { bench_tail "$dest"; bench_die "openloop failed against port $port"; }
}

# 1. Capacity, closed loop, through HAProxy leastconn (a discarded warm-up first).
bench_wrk "$RAW/capacity-warmup.wrk.txt" "${PORT[haproxy leastconn]}" "$BENCH_SLOW_CONNS" "$BENCH_WARMUP"
bench_wrk "$RAW/capacity.wrk.txt" "${PORT[haproxy leastconn]}" "$BENCH_SLOW_CONNS" "$BENCH_SLOW_DURATION"
CAPACITY=$("$PY" "$OSTATS" rps "$RAW/capacity.wrk.txt")
drain
if [ -n "${BENCH_OPEN_RATE:-}" ]; then
    RATE=$BENCH_OPEN_RATE
else
    RATE=$("$PY" -c "import sys; print('%.0f' % (float(sys.argv[1]) * float(sys.argv[2])))" "$CAPACITY" "$BENCH_OPEN_LOAD")
fi
bench_log "capacity (wrk -c$BENCH_SLOW_CONNS through HAProxy leastconn): $CAPACITY req/s; offering $RATE req/s"

# 2. Warm-up at the offered rate (gives peak-ewma its first samples), then alternating rounds.
for proxy in "${PROXIES[@]}"; do
    openloop_run "$RAW/warmup-${proxy/ /-}.txt" "${PORT[$proxy]}" "$RATE" "$BENCH_WARMUP"
    drain
done
for ((round = 1; round <= BENCH_OPEN_ROUNDS; round++)); do
    for proxy in "${PROXIES[@]}"; do
        file="${proxy/ /-}-r$round.txt"
        log="$RAW/${proxy/ /-}.log"
        bench_alive "$proxy" "${PID[$proxy]}" "$log"
        read -r -a before <<<"$(bench_counts)"
        cpu0=$(bench_cpu_ticks "${PID[$proxy]}")
        openloop_run "$RAW/$file" "${PORT[$proxy]}" "$RATE" "$BENCH_OPEN_DURATION"
        cpu1=$(bench_cpu_ticks "${PID[$proxy]}")
        read -r -a after <<<"$(bench_counts)"
        bench_alive "$proxy" "${PID[$proxy]}" "$log"
        split=()
        for i in "${!after[@]}"; do split+=($((after[i] - before[i]))); done
        printf '%s\t%s\t%s\t%s\t%s\n' "$proxy" "$round" "$file" "${split[*]}" "$((cpu1 - cpu0))" >>"$RAW/runs.tsv"
        printf '  %-20s round %s: %s  backends %s\n' "$proxy" "$round" "$("$PY" "$OSTATS" parse "$RAW/$file")" "${split[*]}"
        drain
    done
done
for proxy in "${PROXIES[@]}"; do bench_stop "${PID[$proxy]}"; done

echo
strict=()
[ "${BENCH_STRICT:-0}" = 1 ] && strict=(--strict)
NOTE="workers=$W, openloop ${BENCH_OPEN_DURATION}s per run, timeout ${BENCH_OPEN_TIMEOUT}s; capacity = wrk -c$BENCH_SLOW_CONNS through HAProxy leastconn"
"$PY" "$OSTATS" table "$RAW/runs.tsv" --note "$NOTE" --capacity "$CAPACITY" "${strict[@]}" | tee "$RAW/summary.txt"
exit "${PIPESTATUS[0]}"
