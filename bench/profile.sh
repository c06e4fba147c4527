#!/usr/bin/env bash
# bench/profile.sh — where agora lb spends its CPU under scenario 1's load (not part of `make
# bench`). Starts three testbackend --threads 1, one `agora lb --policy least-conn` (workers:
# $BENCH_WORKERS, first value), drives it with wrk and samples it with perf (cpu-clock, so it also
# works in VMs without hardware counters). Also records HAProxy under the same load for contrast.
# Outputs in build/bench/profile/: perf-*.txt (flat profile, then call graphs), wrk outputs.
# Usage: bash bench/profile.sh   (needs perf: apt-get install linux-perf)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init profile
command -v perf >/dev/null || bench_die "perf not found (apt-get install linux-perf)"
W=${BENCH_WORKERS%% *}
SECS=${BENCH_PROFILE_SECONDS:-10}

bench_ports B1 B2 B3 PA PH
bench_backend backend1 "$B1" --threads 1
bench_backend backend2 "$B2" --threads 1
bench_backend backend3 "$B3" --threads 1
bench_agora agora "$PA" least-conn "$W" "$B1" "$B2" "$B3"
PID_A=$SPAWNED
bench_haproxy haproxy "$PH" leastconn "$W" "$B1" "$B2" "$B3"
PID_H=$SPAWNED

# profile NAME PID PORT: wrk for $SECS s while perf samples PID for the middle part of the run.
profile() {
    local name=$1 pid=$2 port=$3
    bench_wrk "$RAW/warmup-$name.wrk.txt" "$port" "$BENCH_CONNS" "$BENCH_WARMUP"
    bench_wrk "$RAW/$name.wrk.txt" "$port" "$BENCH_CONNS" "$SECS" &
    local wrk_pid=$!
    sleep 1
    # Counting syscalls alongside the sampling: tracepoints cost a little, equally for both.
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait \
        -p "$pid" -o "$RAW/perf-stat-$name.csv" -- sleep $((SECS - 2)) >/dev/null 2>&1 &
    local stat_pid=$!
    perf record -q -e cpu-clock -F 1999 -g -p "$pid" -o "$BENCH_TMP/$name.data" -- sleep $((SECS - 2)) \
        >"$RAW/perf-record-$name.log" 2>&1 || { bench_tail "$RAW/perf-record-$name.log"; bench_die "perf record failed"; }
    wait "$stat_pid" || bench_die "perf stat failed (see $RAW/perf-stat-$name.csv)"
    wait "$wrk_pid"
    local rps per_req
    rps=$(sed -n 's/^Requests\/sec: *//p' "$RAW/$name.wrk.txt")
    per_req=$(awk -F, -v rps="$rps" -v secs=$((SECS - 2)) '
        $3 == "task-clock" { printf "CPU %.1f us/request (%.2f CPUs busy); ", $1 * 1000 / (rps * secs), $1 / (secs * 1000) }
        $3 == "context-switches" { printf "%.2f context switches/request; ", $1 / (rps * secs) }
        $3 == "raw_syscalls:sys_enter" { printf "%.2f syscalls/request; ", $1 / (rps * secs) }
        $3 == "syscalls:sys_enter_epoll_wait" { printf "%.2f epoll_wait/request", $1 / (rps * secs) }
    ' "$RAW/perf-stat-$name.csv")
    {
        echo "# agora bench/profile.sh: $name, workers=$W, wrk -c$BENCH_CONNS; $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# $("$PY" "$STATS" parse "$RAW/$name.wrk.txt")"
        echo "# $per_req"
        echo "## by binary"
        perf report -i "$BENCH_TMP/$name.data" --stdio --no-children --sort dso -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -n 8 || true
        echo "## flat profile (self time per symbol)"
        perf report -i "$BENCH_TMP/$name.data" --stdio --no-children --sort dso,symbol -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -n 60 || true
        echo "## call graphs (caller-based, children included)"
        perf report -i "$BENCH_TMP/$name.data" --stdio --children --sort symbol -g caller,0.5,callee --percent-limit 2 \
            2>/dev/null | grep -v '^$' | head -n 300 || true
    } >"$RAW/perf-$name.txt"
    echo "== $name: $("$PY" "$STATS" parse "$RAW/$name.wrk.txt")"
    sed -n '3,36p' "$RAW/perf-$name.txt" | cut -c1-130
}

profile agora "$PID_A" "$PA"
bench_alive agora "$PID_A" "$RAW/agora.log"
profile haproxy "$PID_H" "$PH"
echo "full profiles: $RAW/perf-agora.txt $RAW/perf-haproxy.txt"
