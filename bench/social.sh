#!/usr/bin/env bash
# bench/social.sh — the social-network benchmark: the classic mix through `agora lb` to three
# `agora server`s sharing one seeded SQLite database, at 1 000 and at 100 000 users.
#
#   60%  GET  /api/v1/timelines/home         (Bearer token of a random logged-in user)
#   30%  GET  /api/v1/accounts/userK/posts   (K uniform over all seeded users)
#   10%  POST /api/v1/posts {"text": ...}    (Bearer token of a random logged-in user)
#
# For each graph size: `agora seed` fills a pristine database; one `agora server` on it logs in
# $BENCH_SOCIAL_SESSIONS seeded users (bench/social_login.py writes their tokens as a Lua table)
# and is stopped. Then for each configuration of $BENCH_SOCIAL_CONFIGS, $BENCH_SOCIAL_ROUNDS
# rounds, each of which runs every graph size in turn (1k, 100k, then 100k, 1k, then 1k, 100k ...:
# alternating, so that the machine's drifts weigh on all sizes alike and the ratio holds): a
# fresh copy of the graph's database, flushed to disk, served by three servers behind the
# balancer and driven by wrk with bench/social.lua, a discarded warm-up, then one measured run.
#
# Targets: >= $BENCH_SOCIAL_TARGET req/s at the smallest graph; at each larger graph at least
# $BENCH_SOCIAL_RATIO times that. For a graph whose target is missed (or every graph when
# BENCH_SOCIAL_DIAGNOSE=1), the fastest configuration is run again with each mix of
# $BENCH_SOCIAL_PARTS (by default reads only, then compose only) to show which part costs, and
# once more with `perf record -g` sampling the first server; the top symbols are printed.
#
# Exit status: 0; 1 on any failure, including any non-2xx answer or socket error during any run
# (the mix must have none), reported after the table; 3 when a target is missed under
# BENCH_STRICT=1 (as bench/run.sh's other scenarios do).
#
# Raw outputs in build/bench/social/: every wrk output (*.wrk.txt), runs.tsv (which file is which
# run), each process's log, the seed and login logs, the sessions used, commands.txt (every command
# line run), profile-*.txt (perf reports) and summary.txt (the tables). Usage: bash bench/social.sh
# after `make build`; knobs (BENCH_SOCIAL_*) below and in bench/RESULTS-social.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOCIAL_PY="$BENCH_DIR/social_stats.py"
SOCIAL_LUA="$BENCH_DIR/social.lua"
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_SOCIAL_DURATION:=3}" "${BENCH_SOCIAL_WARMUP:=1}" "${BENCH_SOCIAL_SESSIONS:=50}"
    : "${BENCH_SOCIAL_CONFIGS:=1:1:1:64}" "${BENCH_SOCIAL_DIAGNOSE:=0}" "${BENCH_SOCIAL_ROUNDS:=1}"
else
    : "${BENCH_SOCIAL_DURATION:=10}" "${BENCH_SOCIAL_WARMUP:=2}" "${BENCH_SOCIAL_SESSIONS:=200}"
    : "${BENCH_SOCIAL_CONFIGS:=1:1:1:64 2:1:1:64 1:2:1:64}" "${BENCH_SOCIAL_DIAGNOSE:=auto}"
    : "${BENCH_SOCIAL_ROUNDS:=3}"
fi
: "${BENCH_SOCIAL_USERS:=1000 100000}" "${BENCH_SOCIAL_POSTS:=10}" "${BENCH_SOCIAL_SEED:=1}"
: "${BENCH_SOCIAL_MIX:=60,30,10}" "${BENCH_SOCIAL_PARTS:=67,33,0 0,0,100}"
: "${BENCH_SOCIAL_PART_DURATION:=5}" "${BENCH_SOCIAL_PERF_SECONDS:=6}"
: "${BENCH_SOCIAL_TARGET:=10000}" "${BENCH_SOCIAL_RATIO:=0.8}"

CLK_TCK=$(getconf CLK_TCK)
TARGET_ARGS=(--target "$BENCH_SOCIAL_TARGET" --ratio "$BENCH_SOCIAL_RATIO")

# Check everything before bench_init, which empties the raw-output directory.
[ -x "$AGORA" ] || bench_die "$AGORA not found: build it with 'make build'"
for sub in seed server lb; do
    "$AGORA" "$sub" --help >/dev/null 2>&1 || bench_die "'$AGORA $sub --help' failed"
done
grep -q -- --posts-per-user <<<"$("$AGORA" seed --help 2>&1)" || bench_die "'$AGORA seed --help' lists no --posts-per-user"
for c in $BENCH_SOCIAL_CONFIGS; do
    [[ $c =~ ^[1-9][0-9]*:[1-9][0-9]*:[1-9][0-9]*:[1-9][0-9]*$ ]] ||
        bench_die "BENCH_SOCIAL_CONFIGS: '$c' is not SERVER_WORKERS:LB_WORKERS:WRK_THREADS:CONNECTIONS"
done
for u in $BENCH_SOCIAL_USERS; do
    [[ $u =~ ^[1-9][0-9]*$ ]] || bench_die "BENCH_SOCIAL_USERS: '$u' is not a number of users"
done
for m in $BENCH_SOCIAL_MIX $BENCH_SOCIAL_PARTS; do
    if ! [[ $m =~ ^[0-9]+,[0-9]+,[0-9]+$ ]] || [ $((${m//,/+})) != 100 ]; then
        bench_die "mix '$m' is not HOME,USER,COMPOSE percentages adding up to 100"
    fi
done
case "$BENCH_SOCIAL_DIAGNOSE" in auto | 0 | 1) ;; *) bench_die "BENCH_SOCIAL_DIAGNOSE must be auto, 0 or 1" ;; esac
for n in BENCH_SOCIAL_DURATION BENCH_SOCIAL_WARMUP BENCH_SOCIAL_SESSIONS BENCH_SOCIAL_ROUNDS \
    BENCH_SOCIAL_PART_DURATION BENCH_SOCIAL_PERF_SECONDS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || bench_die "$n must be a whole number >= 1 (got '${!n}')"
done
for n in BENCH_SOCIAL_TARGET BENCH_SOCIAL_RATIO; do
    [[ ${!n} =~ ^[0-9]+(\.[0-9]+)?$ ]] || bench_die "$n must be a number (got '${!n}')"
done
[[ $BENCH_SOCIAL_POSTS =~ ^[0-9]+$ ]] || bench_die "BENCH_SOCIAL_POSTS must be a whole number (got '$BENCH_SOCIAL_POSTS')"
bench_init social
RUNS="$RAW/runs.tsv"
: >"$RUNS"

describe() {
    local sw lw t c
    IFS=: read -r sw lw t c <<<"$1"
    echo "3 servers x ${sw}w, lb ${lw}w, wrk -t$t -c$c"
}

# spawn_wait NAME LOG CMD...: runs CMD as bench_spawn does and waits for it, so that TERM or INT
# interrupts the wait at once and the cleanup stops CMD; returns CMD's exit status.
spawn_wait() {
    local rc=0
    bench_spawn "$@"
    wait "$SPAWNED" || rc=$?
    bench_stop "$SPAWNED"
    return "$rc"
}

# cpu_seconds PID...: user + system CPU seconds the processes have used so far.
cpu_seconds() {
    local ticks=0 pid t
    for pid in "$@"; do
        # After the ")" that closes the command name, utime and stime are the 12th and 13th fields.
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') || t=0
        ticks=$((ticks + t))
    done
    awk -v t="$ticks" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'
}

# stack_start USERS CONFIG TAG: copies the graph's pristine database and starts three servers and
# the balancer on it (logs named after TAG); sets DB, LB_PORT, LB_PID, LB_LOG, SRV_PIDS, SRV_LOGS.
stack_start() {
    local users=$1 config=$2 tag=$3 sw lw i=0 name log port s1 s2 s3 backends=()
    local gdir="$BENCH_TMP/g$users"
    IFS=: read -r sw lw _ _ <<<"$config"
    DB="$gdir/run.db"
    rm -f "$DB" "$DB-wal" "$DB-shm"
    cp "$gdir/pristine.db" "$DB"
    [ ! -f "$gdir/pristine.db-wal" ] || cp "$gdir/pristine.db-wal" "$DB-wal"
    # Written back now rather than by the kernel during the measured run (100k users: ~0.5 GB).
    sync "$DB"
    bench_ports s1 s2 s3 LB_PORT
    SRV_PIDS=()
    SRV_LOGS=()
    for port in "$s1" "$s2" "$s3"; do
        name="server$((++i))-$tag"
        log="$RAW/$name.log"
        bench_spawn "$name" "$log" "$AGORA" server --listen "127.0.0.1:$port" --db "sqlite:$DB" --workers "$sw"
        bench_wait_port "$name" "$SPAWNED" "$port" "$log"
        SRV_PIDS+=("$SPAWNED")
        SRV_LOGS+=("$log")
        backends+=(--backend "http://127.0.0.1:$port")
    done
    name="lb-$tag"
    LB_LOG="$RAW/$name.log"
    # No admin listener (its default port is fixed), no access log, and no weight ramp: the three
    # servers are equal and start together, and a 10 s slow start would outlast the warm-up.
    bench_spawn "$name" "$LB_LOG" "$AGORA" lb --listen "127.0.0.1:$LB_PORT" "${backends[@]}" --workers "$lw" \
        --admin-listen off --access-log off --slow-start 0 --health-interval 1s
    LB_PID=$SPAWNED
    # The balancer answers /health itself: ask for an account, which a server must answer.
    bench_wait_http "$name" "$LB_PID" "http://127.0.0.1:$LB_PORT/api/v1/accounts/user1" "$LB_LOG"
}

stack_alive() {
    local i
    bench_alive "agora lb" "$LB_PID" "$LB_LOG"
    for i in "${!SRV_PIDS[@]}"; do bench_alive "agora server $((i + 1))" "${SRV_PIDS[$i]}" "${SRV_LOGS[$i]}"; done
}

stack_stop() {
    local pid
    bench_stop "$LB_PID"
    for pid in "${SRV_PIDS[@]}"; do bench_stop "$pid"; done
}

# wrk_cmd USERS CONFIG MIX SECONDS: sets WRK_CMD to the command line of one wrk run against the
# balancer (bounded by `timeout` in case wrk itself hangs).
wrk_cmd() {
    local users=$1 config=$2 mix=$3 secs=$4 threads conns
    IFS=: read -r _ _ threads conns <<<"$config"
    WRK_CMD=(timeout --foreground $((secs + 30)) wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency
        -s "$SOCIAL_LUA" "http://127.0.0.1:$LB_PORT" -- "$BENCH_TMP/g$users/sessions.lua" "$BENCH_SOCIAL_SEED" "$mix")
}

# run USERS CONFIG MIX KIND FILE SECONDS: one wrk run on the running stack, output in $RAW/FILE,
# recorded in runs.tsv with the CPU the balancer and the servers used and the WAL size after it.
run() {
    local users=$1 config=$2 mix=$3 kind=$4 file=$5 secs=$6 lb0 srv0 lb1 srv1 wal=0
    stack_alive
    lb0=$(cpu_seconds "$LB_PID")
    srv0=$(cpu_seconds "${SRV_PIDS[@]}")
    wrk_cmd "$users" "$config" "$mix" "$secs"
    spawn_wait "wrk" "$RAW/$file" "${WRK_CMD[@]}" ||
        { bench_tail "$RAW/$file"; bench_die "wrk failed against agora lb (port $LB_PORT)"; }
    lb1=$(cpu_seconds "$LB_PID")
    srv1=$(cpu_seconds "${SRV_PIDS[@]}")
    stack_alive
    [ ! -f "$DB-wal" ] || wal=$(stat -c %s "$DB-wal")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$users" "$config" "$mix" "$kind" "$file" "$secs" \
        "$(awk -v a="$lb0" -v b="$lb1" 'BEGIN { print b - a }')" \
        "$(awk -v a="$srv0" -v b="$srv1" 'BEGIN { print b - a }')" "$wal" >>"$RUNS"
    [ "$kind" = warmup ] ||
        printf '  %7s users  %-11s %-9s %-7s %s\n' "$users" "$config" "$mix" "$kind" "$("$PY" "$SOCIAL_PY" parse "$RAW/$file")"
}

# prepare USERS: seeds the graph's pristine database and logs the benchmark's users in.
prepare() {
    local users=$1 gdir="$BENCH_TMP/g$1" port log pid sessions=$BENCH_SOCIAL_SESSIONS
    mkdir -p "$gdir"
    bench_log "$users users: seeding ($BENCH_SOCIAL_POSTS posts each, seed $BENCH_SOCIAL_SEED)"
    spawn_wait "seed" "$RAW/seed-u$users.log" timeout 900 "$AGORA" seed --users "$users" \
        --posts-per-user "$BENCH_SOCIAL_POSTS" --seed "$BENCH_SOCIAL_SEED" --db "sqlite:$gdir/pristine.db" ||
        { bench_tail "$RAW/seed-u$users.log"; bench_die "agora seed --users $users failed"; }
    sed 's/^/  /' "$RAW/seed-u$users.log"

    [ "$sessions" -le "$users" ] || sessions=$users
    bench_ports port
    log="$RAW/login-server-u$users.log"
    bench_spawn "login-server-u$users" "$log" "$AGORA" server --listen "127.0.0.1:$port" \
        --db "sqlite:$gdir/pristine.db" --workers 2
    pid=$SPAWNED
    bench_wait_http "login server" "$pid" "http://127.0.0.1:$port/health" "$log"
    bench_log "$users users: logging $sessions of them in"
    spawn_wait "login" "$RAW/login-u$users.log" "$PY" "$BENCH_DIR/social_login.py" --url "http://127.0.0.1:$port" \
        --users "$users" --count "$sessions" --seed "$BENCH_SOCIAL_SEED" --parallel 3 --out "$gdir/sessions.lua" ||
        { bench_tail "$RAW/login-u$users.log"; bench_die "logging in failed"; }
    sed 's/^/  /' "$RAW/login-u$users.log"
    cp "$gdir/sessions.lua" "$RAW/sessions-u$users.lua"
    bench_stop "$pid"
}

# measure USERS CONFIG MIX KIND SECONDS ROUND: a fresh stack, a discarded warm-up, then the measured run.
measure() {
    local users=$1 config=$2 mix=$3 kind=$4 secs=$5 round=$6
    local tag="u$users-${config//:/-}"
    [ "$kind" = measure ] || tag+="-mix${mix//,/-}"
    tag+="-r$round"
    stack_start "$users" "$config" "$tag"
    run "$users" "$config" "$mix" warmup "warmup-$tag.wrk.txt" "$BENCH_SOCIAL_WARMUP"
    run "$users" "$config" "$mix" "$kind" "$tag.wrk.txt" "$secs"
    stack_stop
}

# profile USERS CONFIG: the mix once more while perf samples the first server (cpu-clock, so it
# works in VMs without hardware counters); the report goes to $RAW/profile-TAG.txt.
profile() {
    local users=$1 config=$2 secs=$BENCH_SOCIAL_PERF_SECONDS
    local tag="u$users-${config//:/-}-perf" data="$BENCH_TMP/perf.data" out
    bench_log "$users users: perf record -g on one agora server during the mix ($(describe "$config"))"
    stack_start "$users" "$config" "$tag"
    run "$users" "$config" "$BENCH_SOCIAL_MIX" warmup "warmup-$tag.wrk.txt" "$BENCH_SOCIAL_WARMUP"
    # perf starts 1 s into the wrk run and stops 1 s before its end.
    bench_spawn "perf" "$RAW/perf-record-$tag.log" bash -c 'sleep 1 && exec "$@"' perf \
        perf record -q -e cpu-clock -F 1999 -g -p "${SRV_PIDS[0]}" -o "$data" -- sleep "$secs"
    local perf_pid=$SPAWNED
    run "$users" "$config" "$BENCH_SOCIAL_MIX" perf "$tag.wrk.txt" $((secs + 2))
    wait "$perf_pid" || { bench_tail "$RAW/perf-record-$tag.log"; bench_die "perf record failed"; }
    bench_stop "$perf_pid"
    stack_stop
    out="$RAW/profile-$tag.txt"
    {
        echo "# bench/social.sh: server 1 of 3, $users users, $(describe "$config"), mix $BENCH_SOCIAL_MIX"
        echo "# wrk during perf (perturbed by it): $("$PY" "$SOCIAL_PY" parse "$RAW/$tag.wrk.txt")"
        echo "## by shared object (self time)"
        perf report -i "$data" --stdio --no-children --sort dso -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -n 10
        echo "## flat profile (self time per symbol)"
        perf report -i "$data" --stdio --no-children --sort dso,symbol -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -n 60
        echo "## call graphs (caller-based, children included; frame pointers only, so partial)"
        perf report -i "$data" --stdio --children --sort symbol -g caller,0.5,callee --percent-limit 3 \
            2>/dev/null | grep -v '^$' | head -n 400
    } >"$out" || true
    rm -f "$data"
}

{
    echo "agora social-network benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "versions: $("$AGORA" --version 2>&1 | head -n1); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2); sqlite $("$PY" -c 'import sqlite3; print(sqlite3.sqlite_version)')"
    echo "mix home,user,compose = $BENCH_SOCIAL_MIX %; $BENCH_SOCIAL_SESSIONS logged-in users; ${BENCH_SOCIAL_DURATION}s runs after ${BENCH_SOCIAL_WARMUP}s warm-up, $BENCH_SOCIAL_ROUNDS round(s); graphs of $BENCH_SOCIAL_USERS users x $BENCH_SOCIAL_POSTS posts"
    echo "note: wrk, the balancer and the servers all share these CPUs; nothing is pinned."
} | tee "$RAW/notes.txt"

for users in $BENCH_SOCIAL_USERS; do
    prepare "$users"
done
# Rounds alternate the order too (1k, 100k | 100k, 1k | 1k, 100k ...), so that a steady drift
# of the machine's speed favours neither size.
SIZES_REVERSED=$(printf '%s\n' $BENCH_SOCIAL_USERS | tac | tr '\n' ' ')
for config in $BENCH_SOCIAL_CONFIGS; do
    for ((round = 1; round <= BENCH_SOCIAL_ROUNDS; round++)); do
        sizes=$BENCH_SOCIAL_USERS
        [ $((round % 2)) = 1 ] || sizes=$SIZES_REVERSED
        for users in $sizes; do
            bench_log "$users users: $(describe "$config"), round $round of $BENCH_SOCIAL_ROUNDS"
            measure "$users" "$config" "$BENCH_SOCIAL_MIX" measure "$BENCH_SOCIAL_DURATION" "$round"
        done
    done
done

if [ "$BENCH_SOCIAL_DIAGNOSE" != 0 ]; then
    for users in $BENCH_SOCIAL_USERS; do
        read -r config verdict < <("$PY" "$SOCIAL_PY" best "$RUNS" "$users" "${TARGET_ARGS[@]}") || continue
        [ "$BENCH_SOCIAL_DIAGNOSE" = 1 ] || [ "$verdict" = MISSED ] || continue
        bench_log "$users users: target $verdict; where the time goes ($(describe "$config"))"
        for mix in $BENCH_SOCIAL_PARTS; do
            measure "$users" "$config" "$mix" part "$BENCH_SOCIAL_PART_DURATION" 1
        done
        if command -v perf >/dev/null; then
            profile "$users" "$config"
        else
            echo "  perf not found (Debian package linux-perf): no profile"
        fi
    done
fi

status=0
strict=()
[ "${BENCH_STRICT:-0}" != 1 ] || strict=(--strict)
"$PY" "$SOCIAL_PY" table "$RUNS" "${TARGET_ARGS[@]}" "${strict[@]}" >"$BENCH_TMP/table.txt" || status=$?
echo
{
    cat "$RAW/notes.txt"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    cat "$BENCH_TMP/table.txt"
    for f in "$RAW"/profile-*.txt; do
        [ -f "$f" ] || continue
        echo
        echo "Profile of $(head -n1 "$f" | sed 's/^# bench\/social.sh: //') (top symbols; all in $f):"
        sed -n '/^## by shared object/,/^## flat/p' "$f" | sed '1d;$d' | head -n 5 | sed 's/^ */  /'
        sed -n '/^## flat profile/,/^## call graphs/p' "$f" | sed '1d;$d' | head -n 15 | sed 's/^ */  /'
    done
    echo
} | tee "$RAW/summary.txt"
case "$status" in
    0 | 3) ;;
    *) bench_die "the social mix had failed requests (non-2xx answers or socket errors), or its outputs could not be read: see above" ;;
esac
echo "raw outputs in $RAW/"
exit "$status"
