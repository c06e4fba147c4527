#!/usr/bin/env bash
# bench/idle.sh — scenario 4, "idle connections" (issue 15; `bash bench/run.sh idle`, part of
# `make bench`): what an idle keep-alive client connection costs agora lb, HAProxy and nginx,
# one worker/thread each, in front of the same three fast backends as scenario 1 (the same config
# writers from lib.sh, with the connection limits raised for 10,000 clients).
#
# 1. Memory: for each proxy, VmRSS (/proc/PID/status; nginx: its one worker process) is read
#    after a warm-up, then build/idlehold (bench/idlehold.c, its own process) opens 1,000
#    keep-alive connections, completes one GET on each and holds them idle; VmRSS again; a second
#    holder adds 9,000 more (10,000 in all); VmRSS again. Bytes per idle connection =
#    (VmRSS with N held - VmRSS before) / N.
# 2. Throughput: wrk (-c$BENCH_CONNS) against each proxy with no idle connections, then with
#    10,000 held by a holder (started before and stopped after that run), alternating
#    none/idle per proxy per round; the table gives the medians and the ratios idle/none.
#
# Descriptors: every process raises its soft limit to the hard limit (20,000 on the benchmark
# machine; checked below). 10,000 clients from one address: agora gets --max-conns-per-ip 0 (its
# per-address limit, 1,000 by default, is a defence this load test would trip) and
# --max-connections 12000 (its automatic figure for a 20,000 limit is 9,488 per worker);
# HAProxy maxconn 12000 with "no strict-limits" (it would ask for 24,017 descriptors, 2 x maxconn;
# the idle clients use no backend connections, so it runs with the 20,000 it gets); nginx
# worker_connections 12000 and worker_rlimit_nofile 20000.
# Raw outputs: build/bench/idle/. Knobs: BENCH_IDLE_N (10000), BENCH_IDLE_SMALL (1000),
# BENCH_IDLE_ROUNDS (3), BENCH_DURATION, BENCH_CONNS (see bench/README.md).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init idle

HOLD=${BENCH_IDLEHOLD:-$BENCH_ROOT/build/idlehold}
: "${BENCH_IDLE_N:=10000}" "${BENCH_IDLE_SMALL:=1000}" "${BENCH_IDLE_ROUNDS:=3}"
[ -x "$HOLD" ] || bench_die "$HOLD not found: build it with 'make build' (bench/idlehold.c)"
hard=$(ulimit -Hn)
ulimit -n "$hard"
need=$((BENCH_IDLE_N + 1100))
[ "$hard" = unlimited ] || [ "$hard" -ge "$need" ] ||
    bench_die "descriptor hard limit $hard is below the $need that $BENCH_IDLE_N idle connections need"
MAXC=$((BENCH_IDLE_N + 2000))
export BENCH_AGORA_EXTRA="--max-conns-per-ip 0 --max-connections $MAXC"
export BENCH_HAPROXY_MAXCONN=$MAXC BENCH_HAPROXY_LOOSE=1 BENCH_NGINX_CONNS=$MAXC BENCH_NGINX_RLIMIT=$hard

bench_ports B1 B2 B3 PA PH PN
bench_log "scenario 4: idle connections; descriptor limit $hard (soft raised to hard); backends $B1 $B2 $B3"
bench_backend backend1 "$B1" --threads 1
bench_backend backend2 "$B2" --threads 1
bench_backend backend3 "$B3" --threads 1
BENCH_DEFER=1
bench_agora agora "$PA" least-conn 1 "$B1" "$B2" "$B3"
PID_A=$SPAWNED
bench_haproxy haproxy "$PH" leastconn 1 "$B1" "$B2" "$B3"
PID_H=$SPAWNED
bench_nginx nginx "$PN" 1 "$B1" "$B2" "$B3"
PID_N=$SPAWNED
BENCH_DEFER=0
bench_wait_pending
NGINX_WORKER=$(pgrep -P "$PID_N" | head -n1) || bench_die "nginx has no worker process"
declare -A PORT=([agora]=$PA [haproxy]=$PH [nginx]=$PN)
declare -A PID=([agora]=$PID_A [haproxy]=$PID_H [nginx]=$PID_N)
declare -A MEMPID=([agora]=$PID_A [haproxy]=$PID_H [nginx]=$NGINX_WORKER)
declare -A LOGS=([agora]="$RAW/agora.log" [haproxy]="$RAW/haproxy.log" [nginx]="$RAW/nginx.log")

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# hold NAME PORT N: starts a holder and waits until its N connections are idle; sets HOLDER.
hold() {
    local name=$1 port=$2 n=$3 log="$RAW/$1.log" i
    bench_spawn "$name" "$log" "$HOLD" "$port" "$n"
    HOLDER=$SPAWNED
    for ((i = 0; i < 1200; i++)); do
        grep -q '^ready' "$log" 2>/dev/null && return 0
        kill -0 "$HOLDER" 2>/dev/null || { bench_tail "$log"; bench_die "$name failed (log: $log)"; }
        sleep 0.05
    done
    bench_die "$name: $n connections not ready within 60 s"
}

# unhold PID NAME: stops a holder and checks that the proxy had closed none of its connections.
unhold() {
    bench_stop "$1"
    local closed
    closed=$(awk '/^closed_by_peer/ {print $2}' "$RAW/$2.log")
    [ "${closed:-x}" = 0 ] || bench_die "$2: the proxy closed ${closed:-?} held connections (log: $RAW/$2.log)"
}

# Warm-up (discarded): pools filled, health checks up.
for proxy in agora haproxy nginx; do
    bench_wrk "$RAW/warmup-$proxy.wrk.txt" "${PORT[$proxy]}" "$BENCH_CONNS" "$BENCH_WARMUP"
done

: >"$RAW/mem.tsv"
: >"$RAW/runs.tsv"
for proxy in agora haproxy nginx; do
    sleep 0.5
    r0=$(rss_kb "${MEMPID[$proxy]}")
    hold "hold-$proxy-a" "${PORT[$proxy]}" "$BENCH_IDLE_SMALL"
    ha=$HOLDER
    sleep 0.5
    r1=$(rss_kb "${MEMPID[$proxy]}")
    hold "hold-$proxy-b" "${PORT[$proxy]}" $((BENCH_IDLE_N - BENCH_IDLE_SMALL))
    hb=$HOLDER
    sleep 0.5
    r2=$(rss_kb "${MEMPID[$proxy]}")
    bench_alive "$proxy" "${PID[$proxy]}" "${LOGS[$proxy]}"
    unhold "$hb" "hold-$proxy-b"
    unhold "$ha" "hold-$proxy-a"
    printf '%s\t%s\t%s\t%s\n' "$proxy" "$r0" "$BENCH_IDLE_SMALL" "$r1" >>"$RAW/mem.tsv"
    printf '%s\t%s\t%s\t%s\n' "$proxy" "$r0" "$BENCH_IDLE_N" "$r2" >>"$RAW/mem.tsv"
    bench_log "$proxy: VmRSS $r0 kB idle-free, $r1 kB with $BENCH_IDLE_SMALL held, $r2 kB with $BENCH_IDLE_N held"
done

for ((round = 1; round <= BENCH_IDLE_ROUNDS; round++)); do
    for proxy in agora haproxy nginx; do
        bench_measure "$proxy" none "$round" "${PORT[$proxy]}" "$BENCH_CONNS" "$BENCH_DURATION" \
            "${PID[$proxy]}" "${LOGS[$proxy]}"
        hold "hold-$proxy-r$round" "${PORT[$proxy]}" "$BENCH_IDLE_N"
        h=$HOLDER
        bench_measure "$proxy" "idle$BENCH_IDLE_N" "$round" "${PORT[$proxy]}" "$BENCH_CONNS" "$BENCH_DURATION" \
            "${PID[$proxy]}" "${LOGS[$proxy]}"
        unhold "$h" "hold-$proxy-r$round"
    done
done

echo
"$PY" "$STATS" idle-table "$RAW/mem.tsv" "$RAW/runs.tsv" \
    --note "wrk -t$BENCH_THREADS -c$BENCH_CONNS -d${BENCH_DURATION}s, 1 worker/thread each" | tee "$RAW/summary.txt"
