#!/usr/bin/env bash
# bench/social.sh — the social-network benchmark: the classic mix through `agora lb` to three
# `agora server`s sharing one seeded database, SQLite and PostgreSQL side by side, at 1 000 and at
# 100 000 users.
#
#   60%  GET  /api/v1/timelines/home         (Bearer token of a random logged-in user)
#   30%  GET  /api/v1/accounts/userK/posts   (K uniform over all seeded users)
#   10%  POST /api/v1/posts {"text": ...}    (Bearer token of a random logged-in user)
#
# For each store of $BENCH_SOCIAL_STORES (sqlite, postgres) and graph size: `agora seed` fills a
# pristine database; one `agora server` on it logs in $BENCH_SOCIAL_SESSIONS seeded users
# (bench/social_login.py writes their tokens as a Lua table) and is stopped. Then for each
# configuration of $BENCH_SOCIAL_CONFIGS, $BENCH_SOCIAL_ROUNDS rounds, each of which runs every
# graph size in turn (1k, 100k, then 100k, 1k, then 1k, 100k ...: alternating, so that the
# machine's drifts weigh on all sizes alike and the ratio holds) and each size on every store in
# turn (sqlite, postgres, then postgres, sqlite ...): a fresh copy of the graph's database,
# flushed to disk, served by three servers behind the balancer and driven by wrk with
# bench/social.lua, a discarded warm-up, then one measured run.
#
# PostgreSQL: one private cluster for the whole run (scripts/pg-temp.sh in a directory of /tmp,
# Unix socket only), with its durable defaults (fsync, synchronous_commit on) and only the
# settings of $BENCH_SOCIAL_PG_SETTINGS (default: pg_stat_statements loaded, max_connections 200;
# pg_stat_statements.track is 'none' except during the "calls" runs below: see pgss_track);
# every setting is printed in the notes. A graph's pristine database is seeded once (agora seed
# --db postgres://..., COPY in the store), VACUUM ANALYZEd, and copied for each run with CREATE
# DATABASE ... TEMPLATE (then CHECKPOINT, as SQLite's copy is synced). After the rounds, each
# request type runs alone on PostgreSQL ($BENCH_SOCIAL_CALL_MIXES) with pg_stat_statements reset
# just before the measured run: its statements per request are the round trips of that request
# type (calls-*.txt, and a table in the summary).
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
    : "${BENCH_SOCIAL_CALL_DURATION:=2}"
else
    : "${BENCH_SOCIAL_DURATION:=10}" "${BENCH_SOCIAL_WARMUP:=2}" "${BENCH_SOCIAL_SESSIONS:=200}"
    : "${BENCH_SOCIAL_CONFIGS:=1:1:1:64 2:1:1:64 1:2:1:64}" "${BENCH_SOCIAL_DIAGNOSE:=auto}"
    : "${BENCH_SOCIAL_ROUNDS:=3}"
fi
: "${BENCH_SOCIAL_USERS:=1000 100000}" "${BENCH_SOCIAL_POSTS:=10}" "${BENCH_SOCIAL_SEED:=1}"
: "${BENCH_SOCIAL_MIX:=60,30,10}" "${BENCH_SOCIAL_PARTS:=67,33,0 0,0,100}"
: "${BENCH_SOCIAL_PART_DURATION:=5}" "${BENCH_SOCIAL_PERF_SECONDS:=6}"
: "${BENCH_SOCIAL_TARGET:=10000}" "${BENCH_SOCIAL_RATIO:=0.8}"
PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "${BENCH_SOCIAL_STORES:-}" ]; then
    BENCH_SOCIAL_STORES=sqlite
    [ ! -x "$PG_BINDIR/initdb" ] || BENCH_SOCIAL_STORES="sqlite postgres"
fi
: "${BENCH_SOCIAL_PG_SETTINGS:=shared_preload_libraries=pg_stat_statements max_connections=200}"
: "${BENCH_SOCIAL_PG_SERVER_ARGS:=}" "${BENCH_SOCIAL_PG_RATIO:=0.6}" "${BENCH_SOCIAL_CALL_DURATION:=5}"
: "${BENCH_SOCIAL_SQLITE_SERVER_ARGS:=}" # extra `agora server` flags on SQLite, as _PG_ on PostgreSQL
: "${BENCH_SOCIAL_CALL_MIXES:=100,0,0 0,100,0 0,0,100}"

CLK_TCK=$(getconf CLK_TCK)
TARGET_ARGS=(--target "$BENCH_SOCIAL_TARGET" --ratio "$BENCH_SOCIAL_RATIO" --pg-ratio "$BENCH_SOCIAL_PG_RATIO")

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
for st in $BENCH_SOCIAL_STORES; do
    case "$st" in sqlite) ;; postgres) [ -x "$PG_BINDIR/initdb" ] ||
        bench_die "BENCH_SOCIAL_STORES has postgres, but PostgreSQL is not installed (sh scripts/install-deps.sh test)" ;;
    *) bench_die "BENCH_SOCIAL_STORES: '$st' is not sqlite or postgres" ;; esac
done
for s in $BENCH_SOCIAL_PG_SETTINGS; do
    [[ $s =~ ^[a-z_.]+=[^[:space:]]+$ ]] || bench_die "BENCH_SOCIAL_PG_SETTINGS: '$s' is not name=value"
done
for m in $BENCH_SOCIAL_MIX $BENCH_SOCIAL_PARTS $BENCH_SOCIAL_CALL_MIXES; do
    if ! [[ $m =~ ^[0-9]+,[0-9]+,[0-9]+$ ]] || [ $((${m//,/+})) != 100 ]; then
        bench_die "mix '$m' is not HOME,USER,COMPOSE percentages adding up to 100"
    fi
done
case "$BENCH_SOCIAL_DIAGNOSE" in auto | 0 | 1) ;; *) bench_die "BENCH_SOCIAL_DIAGNOSE must be auto, 0 or 1" ;; esac
for n in BENCH_SOCIAL_DURATION BENCH_SOCIAL_WARMUP BENCH_SOCIAL_SESSIONS BENCH_SOCIAL_ROUNDS \
    BENCH_SOCIAL_PART_DURATION BENCH_SOCIAL_PERF_SECONDS BENCH_SOCIAL_CALL_DURATION; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || bench_die "$n must be a whole number >= 1 (got '${!n}')"
done
for n in BENCH_SOCIAL_TARGET BENCH_SOCIAL_RATIO BENCH_SOCIAL_PG_RATIO; do
    [[ ${!n} =~ ^[0-9]+(\.[0-9]+)?$ ]] || bench_die "$n must be a number (got '${!n}')"
done
[[ $BENCH_SOCIAL_POSTS =~ ^[0-9]+$ ]] || bench_die "BENCH_SOCIAL_POSTS must be a whole number (got '$BENCH_SOCIAL_POSTS')"
bench_init social
RUNS="$RAW/runs.tsv"
: >"$RUNS"

# ---- PostgreSQL: one cluster for the run, in a directory of /tmp (the postgres user, which
# runs it when we are root, cannot pass $BENCH_TMP), destroyed at exit (lib.sh's bench_at_exit).
PG_DIR=""
PG_URL=""
bench_at_exit() {
    [ -z "$PG_DIR" ] || sh "$BENCH_ROOT/scripts/pg-temp.sh" destroy "$PG_DIR" >/dev/null 2>&1 || true
}
# pg_url DBNAME: the URL of that database in the cluster.
pg_url() { echo "postgresql:///$1?host=$PG_DIR&user=agora"; }
# pg_sql DBNAME SQL: runs SQL there (psql, stop at the first error); rows on stdout.
pg_sql() { PGOPTIONS="-c client_min_messages=warning" "$PG_BINDIR/psql" -qAtX -F $'\t' -v ON_ERROR_STOP=1 -d "$(pg_url "$1")" -c "$2"; }
pg_start() {
    local args=() s
    PG_DIR=$(mktemp -d /tmp/agora-bench-pg.XXXXXX) || bench_die "mktemp failed"
    for s in $BENCH_SOCIAL_PG_SETTINGS; do args+=(-c "$s"); done
    echo "pg-temp: sh scripts/pg-temp.sh start $PG_DIR ${args[*]}" >>"$RAW/commands.txt"
    PG_URL=$(sh "$BENCH_ROOT/scripts/pg-temp.sh" start "$PG_DIR" "${args[@]}") || bench_die "PostgreSQL did not start"
    pg_sql agora "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null ||
        bench_die "pg_stat_statements is not available (is it in shared_preload_libraries?)"
    pgss_track none
}
# pgss_track none|top: pg_stat_statements tracks nothing during the measured runs (it is the
# bench's own instrument, which SQLite's side has no counterpart of, and PostgreSQL as installed
# does not load it), and every top-level statement during the "calls" runs. A reload reaches each
# backend at its next command; the short sleep lets the signal land first.
pgss_track() {
    pg_sql agora "ALTER SYSTEM SET pg_stat_statements.track = '$1'" >/dev/null &&
        pg_sql agora "SELECT pg_reload_conf()" >/dev/null || bench_die "could not set pg_stat_statements.track"
    sleep 0.5
}
# The settings that differ from PostgreSQL's defaults, as "name=value (source)".
pg_settings() {
    pg_sql agora "SELECT name || '=' || current_setting(name) || ' (' || source || ')' FROM pg_settings
        WHERE source NOT IN ('default', 'override', 'client', 'session')
        AND name !~* '^(lc_|datestyle|timezone|log_timezone|default_text_search_config)' ORDER BY name" |
        tr '\n' ' '
}
# db_url STORE USERS WHICH: the URL of the graph's database (WHICH = pristine or run).
db_url() {
    local gdir="$BENCH_TMP/$1-g$2"
    case "$1/$3" in
        sqlite/pristine) echo "sqlite:$gdir/pristine.db" ;;
        sqlite/run) echo "sqlite:$gdir/run.db" ;;
        postgres/pristine) pg_url "g$2" ;;
        postgres/run) pg_url "run" ;;
    esac
}

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

# stack_start STORE USERS CONFIG TAG: copies the graph's pristine database and starts three servers
# and the balancer on it (logs named after TAG); sets STORE, DB (the SQLite file, or empty),
# LB_PORT, LB_PID, LB_LOG, SRV_PIDS, SRV_LOGS.
stack_start() {
    local store=$1 users=$2 config=$3 tag=$4 sw lw i=0 name log port s1 s2 s3 backends=() extra=()
    local gdir="$BENCH_TMP/$store-g$users" url
    IFS=: read -r sw lw _ _ <<<"$config"
    STORE=$store
    url=$(db_url "$store" "$users" run)
    if [ "$store" = sqlite ]; then
        DB="$gdir/run.db"
        # shellcheck disable=SC2206 # words on purpose
        extra=($BENCH_SOCIAL_SQLITE_SERVER_ARGS)
        rm -f "$DB" "$DB-wal" "$DB-shm"
        cp "$gdir/pristine.db" "$DB"
        [ ! -f "$gdir/pristine.db-wal" ] || cp "$gdir/pristine.db-wal" "$DB-wal"
        # Written back now rather than by the kernel during the measured run (100k users: ~0.5 GB).
        sync "$DB"
    else
        DB=""
        # shellcheck disable=SC2206 # words on purpose
        extra=($BENCH_SOCIAL_PG_SERVER_ARGS)
        pg_sql agora "DROP DATABASE IF EXISTS run WITH (FORCE)" >/dev/null
        # A file copy of the template (with a checkpoint before it), then one after it: the copy
        # is on disk before the run, as SQLite's is.
        pg_sql agora "CREATE DATABASE run TEMPLATE g$users STRATEGY FILE_COPY" >/dev/null ||
            bench_die "cannot copy the database g$users"
        pg_sql agora "CHECKPOINT" >/dev/null
    fi
    bench_ports s1 s2 s3 LB_PORT
    SRV_PIDS=()
    SRV_LOGS=()
    for port in "$s1" "$s2" "$s3"; do
        name="server$((++i))-$tag"
        log="$RAW/$name.log"
        bench_spawn "$name" "$log" "$AGORA" server --listen "127.0.0.1:$port" --db "$url" --workers "$sw" "${extra[@]}"
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
# balancer (bounded by `timeout` in case wrk itself hangs), with the sessions of $STORE's graph.
wrk_cmd() {
    local users=$1 config=$2 mix=$3 secs=$4 threads conns
    IFS=: read -r _ _ threads conns <<<"$config"
    WRK_CMD=(timeout --foreground $((secs + 30)) wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency
        -s "$SOCIAL_LUA" "http://127.0.0.1:$LB_PORT" -- "$BENCH_TMP/$STORE-g$users/sessions.lua" "$BENCH_SOCIAL_SEED"
        "$mix")
}

# pg_cpu_seconds: CPU seconds the PostgreSQL cluster's processes (the postmaster and its
# children: the servers' backends among them) have used so far; 0 for SQLite.
pg_cpu_seconds() {
    local pm pids
    [ "$STORE" = postgres ] || { echo 0; return; }
    pm=$(head -n 1 "$PG_DIR/data/postmaster.pid")
    pids=$(ps -o pid= --ppid "$pm" | tr '\n' ' ')
    # shellcheck disable=SC2086 # a list of pids
    cpu_seconds "$pm" $pids
}

# run USERS CONFIG MIX KIND FILE SECONDS: one wrk run on the running stack, output in $RAW/FILE,
# recorded in runs.tsv with the CPU the balancer, the servers and PostgreSQL used and the WAL size
# after it (SQLite's -wal file; for PostgreSQL the WAL written during the run). With kind "calls"
# (PostgreSQL), pg_stat_statements is reset just before and written to $RAW/calls-FILE after
# (calls, rows, mean execution time in µs, statement).
run() {
    local users=$1 config=$2 mix=$3 kind=$4 file=$5 secs=$6 lb0 srv0 lb1 srv1 pg0 pg1 wal=0 lsn0=""
    stack_alive
    if [ "$STORE" = postgres ]; then
        [ "$kind" != calls ] || { pgss_track top && pg_sql agora "SELECT pg_stat_statements_reset()" >/dev/null; }
        lsn0=$(pg_sql agora "SELECT pg_current_wal_lsn()")
    fi
    lb0=$(cpu_seconds "$LB_PID")
    srv0=$(cpu_seconds "${SRV_PIDS[@]}")
    pg0=$(pg_cpu_seconds)
    wrk_cmd "$users" "$config" "$mix" "$secs"
    spawn_wait "wrk" "$RAW/$file" "${WRK_CMD[@]}" ||
        { bench_tail "$RAW/$file"; bench_die "wrk failed against agora lb (port $LB_PORT)"; }
    lb1=$(cpu_seconds "$LB_PID")
    srv1=$(cpu_seconds "${SRV_PIDS[@]}")
    pg1=$(pg_cpu_seconds)
    stack_alive
    if [ "$STORE" = postgres ]; then
        wal=$(pg_sql agora "SELECT pg_current_wal_lsn() - '$lsn0'::pg_lsn")
        [ "$kind" != calls ] || pg_sql agora "SELECT s.calls, s.rows, round(s.mean_exec_time::numeric * 1000), regexp_replace(s.query, '\s+', ' ', 'g')
            FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
            WHERE d.datname = 'run' ORDER BY s.calls DESC" >"$RAW/calls-${file%.wrk.txt}.tsv"
        [ "$kind" != calls ] || pgss_track none
    else
        [ ! -f "$DB-wal" ] || wal=$(stat -c %s "$DB-wal")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$users" "$config" "$mix" "$kind" "$file" "$secs" \
        "$(awk -v a="$lb0" -v b="$lb1" 'BEGIN { print b - a }')" \
        "$(awk -v a="$srv0" -v b="$srv1" 'BEGIN { print b - a }')" "$wal" "$STORE" \
        "$(awk -v a="$pg0" -v b="$pg1" 'BEGIN { print b - a }')" >>"$RUNS"
    [ "$kind" = warmup ] ||
        printf '  %-8s %7s users  %-11s %-9s %-7s %s\n' "$STORE" "$users" "$config" "$mix" "$kind" \
            "$("$PY" "$SOCIAL_PY" parse "$RAW/$file")"
}

# prepare STORE USERS: seeds the graph's pristine database and logs the benchmark's users in.
prepare() {
    local store=$1 users=$2 gdir="$BENCH_TMP/$1-g$2" port log pid sessions=$BENCH_SOCIAL_SESSIONS url t0
    mkdir -p "$gdir"
    url=$(db_url "$store" "$users" pristine)
    [ "$store" = sqlite ] || pg_sql agora "CREATE DATABASE g$users" >/dev/null || bench_die "CREATE DATABASE g$users failed"
    bench_log "$store, $users users: seeding ($BENCH_SOCIAL_POSTS posts each, seed $BENCH_SOCIAL_SEED)"
    t0=$(date +%s.%N)
    spawn_wait "seed" "$RAW/seed-$store-u$users.log" timeout 900 "$AGORA" seed --users "$users" \
        --posts-per-user "$BENCH_SOCIAL_POSTS" --seed "$BENCH_SOCIAL_SEED" --db "$url" ||
        { bench_tail "$RAW/seed-$store-u$users.log"; bench_die "agora seed --users $users failed ($store)"; }
    sed 's/^/  /' "$RAW/seed-$store-u$users.log"
    echo "  seed wall time: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" |
        tee -a "$RAW/seed-$store-u$users.log"
    if [ "$store" = postgres ]; then
        # What autovacuum would do soon after a bulk load: planner statistics and the visibility map.
        pg_sql "g$users" "VACUUM ANALYZE" >/dev/null
        echo "  $(pg_sql "g$users" "SELECT pg_size_pretty(pg_database_size(current_database()))") on disk after VACUUM ANALYZE"
    fi

    [ "$sessions" -le "$users" ] || sessions=$users
    bench_ports port
    log="$RAW/login-server-$store-u$users.log"
    bench_spawn "login-server-$store-u$users" "$log" "$AGORA" server --listen "127.0.0.1:$port" \
        --db "$url" --workers 2
    pid=$SPAWNED
    bench_wait_http "login server" "$pid" "http://127.0.0.1:$port/health" "$log"
    bench_log "$store, $users users: logging $sessions of them in"
    spawn_wait "login" "$RAW/login-$store-u$users.log" "$PY" "$BENCH_DIR/social_login.py" \
        --url "http://127.0.0.1:$port" --users "$users" --count "$sessions" --seed "$BENCH_SOCIAL_SEED" --parallel 3 \
        --out "$gdir/sessions.lua" || { bench_tail "$RAW/login-$store-u$users.log"; bench_die "logging in failed"; }
    sed 's/^/  /' "$RAW/login-$store-u$users.log"
    cp "$gdir/sessions.lua" "$RAW/sessions-$store-u$users.lua"
    bench_stop "$pid"
}

# measure STORE USERS CONFIG MIX KIND SECONDS ROUND: a fresh stack, a discarded warm-up, then the
# measured run.
measure() {
    local store=$1 users=$2 config=$3 mix=$4 kind=$5 secs=$6 round=$7
    local tag="$store-u$users-${config//:/-}"
    [ "$kind" = measure ] || tag+="-mix${mix//,/-}"
    tag+="-r$round"
    stack_start "$store" "$users" "$config" "$tag"
    run "$users" "$config" "$mix" warmup "warmup-$tag.wrk.txt" "$BENCH_SOCIAL_WARMUP"
    run "$users" "$config" "$mix" "$kind" "$tag.wrk.txt" "$secs"
    stack_stop
}

# profile STORE USERS CONFIG: the mix once more while perf samples the first server (cpu-clock, so
# it works in VMs without hardware counters); the report goes to $RAW/profile-TAG.txt.
profile() {
    local store=$1 users=$2 config=$3 secs=$BENCH_SOCIAL_PERF_SECONDS
    local tag="$store-u$users-${config//:/-}-perf" data="$BENCH_TMP/perf.data" out
    bench_log "$store, $users users: perf record -g on one agora server during the mix ($(describe "$config"))"
    stack_start "$store" "$users" "$config" "$tag"
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
        echo "# bench/social.sh: server 1 of 3, $store, $users users, $(describe "$config"), mix $BENCH_SOCIAL_MIX"
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
    echo "mix home,user,compose = $BENCH_SOCIAL_MIX %; $BENCH_SOCIAL_SESSIONS logged-in users; ${BENCH_SOCIAL_DURATION}s runs after ${BENCH_SOCIAL_WARMUP}s warm-up, $BENCH_SOCIAL_ROUNDS round(s); graphs of $BENCH_SOCIAL_USERS users x $BENCH_SOCIAL_POSTS posts; stores: $BENCH_SOCIAL_STORES"
    echo "note: wrk, the balancer, the servers and PostgreSQL all share these CPUs; nothing is pinned."
} | tee "$RAW/notes.txt"

if [[ " $BENCH_SOCIAL_STORES " == *" postgres "* ]]; then
    pg_start
    {
        echo "PostgreSQL: $("$PG_BINDIR/postgres" --version), cluster $PG_DIR (Unix socket only), -c settings: $BENCH_SOCIAL_PG_SETTINGS; agora server flags on it: ${BENCH_SOCIAL_PG_SERVER_ARGS:-none}; on SQLite: ${BENCH_SOCIAL_SQLITE_SERVER_ARGS:-none}"
        echo "PostgreSQL settings not at their defaults: $(pg_settings)"
        echo "PostgreSQL durability: $(pg_sql agora "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers')")"
    } | tee -a "$RAW/notes.txt"
fi
for store in $BENCH_SOCIAL_STORES; do
    for users in $BENCH_SOCIAL_USERS; do
        prepare "$store" "$users"
    done
done
# Rounds alternate the order too (1k, 100k | 100k, 1k | 1k, 100k ...), so that a steady drift
# of the machine's speed favours neither size.
SIZES_REVERSED=$(printf '%s\n' $BENCH_SOCIAL_USERS | tac | tr '\n' ' ')
STORES_REVERSED=$(printf '%s\n' $BENCH_SOCIAL_STORES | tac | tr '\n' ' ')
for config in $BENCH_SOCIAL_CONFIGS; do
    for ((round = 1; round <= BENCH_SOCIAL_ROUNDS; round++)); do
        sizes=$BENCH_SOCIAL_USERS
        stores=$BENCH_SOCIAL_STORES
        [ $((round % 2)) = 1 ] || { sizes=$SIZES_REVERSED; stores=$STORES_REVERSED; }
        for users in $sizes; do
            for store in $stores; do
                bench_log "$store, $users users: $(describe "$config"), round $round of $BENCH_SOCIAL_ROUNDS"
                measure "$store" "$users" "$config" "$BENCH_SOCIAL_MIX" measure "$BENCH_SOCIAL_DURATION" "$round"
            done
        done
    done
done

# Round trips per request type on PostgreSQL: each type alone, statements counted.
if [[ " $BENCH_SOCIAL_STORES " == *" postgres "* ]]; then
    config=${BENCH_SOCIAL_CONFIGS%% *}
    for users in $BENCH_SOCIAL_USERS; do
        for mix in $BENCH_SOCIAL_CALL_MIXES; do
            bench_log "postgres, $users users: statements per request, mix $mix"
            measure postgres "$users" "$config" "$mix" calls "$BENCH_SOCIAL_CALL_DURATION" 1
        done
    done
fi

if [ "$BENCH_SOCIAL_DIAGNOSE" != 0 ]; then
    for store in $BENCH_SOCIAL_STORES; do
        for users in $BENCH_SOCIAL_USERS; do
            read -r config verdict < <("$PY" "$SOCIAL_PY" best "$RUNS" "$users" --store "$store" "${TARGET_ARGS[@]}") ||
                continue
            [ "$BENCH_SOCIAL_DIAGNOSE" = 1 ] || [ "$verdict" = MISSED ] || continue
            bench_log "$store, $users users: target $verdict; where the time goes ($(describe "$config"))"
            for mix in $BENCH_SOCIAL_PARTS; do
                measure "$store" "$users" "$config" "$mix" part "$BENCH_SOCIAL_PART_DURATION" 1
            done
            if command -v perf >/dev/null; then
                profile "$store" "$users" "$config"
            else
                echo "  perf not found (Debian package linux-perf): no profile"
            fi
        done
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
