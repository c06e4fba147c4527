# bench/lib.sh — shared helpers for the load-balancer benchmarks. Sourced by bench/lb.sh and
# shellcheck shell=bash
# bench/slow.sh, never run on its own.
#
# Contract: bench_init NAME must be called first. It creates a private temporary directory
# ($BENCH_TMP) and the raw-output directory $BENCH_OUT/NAME ($RAW), and installs traps so that
# every process started with bench_spawn is stopped (TERM, then KILL after 5 s) and $BENCH_TMP
# removed when the script exits for any reason: normal end, failure (set -e) or Ctrl-C/TERM.
# Helpers that fail call bench_die, which prints a message naming what failed and exits 1.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY=/usr/bin/python3
STATS="$BENCH_DIR/stats.py"
# Binaries under test; overridable so the scripts can be exercised against stand-ins.
AGORA=${BENCH_AGORA:-$BENCH_ROOT/build/agora}
TESTBACKEND=${BENCH_TESTBACKEND:-$BENCH_ROOT/build/testbackend}
HAPROXY=${BENCH_HAPROXY:-haproxy}
NGINX=${BENCH_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
BENCH_OUT=${BENCH_OUT:-$BENCH_ROOT/build/bench}

# Knobs (see bench/README.md). BENCH_QUICK=1 changes only the defaults.
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_ROUNDS:=3}" "${BENCH_DURATION:=1}" "${BENCH_SLOW_ROUNDS:=1}" "${BENCH_SLOW_DURATION:=1}"
    : "${BENCH_OPEN_ROUNDS:=1}" "${BENCH_OPEN_DURATION:=2}"
else
    : "${BENCH_ROUNDS:=5}" "${BENCH_DURATION:=5}" "${BENCH_SLOW_ROUNDS:=3}" "${BENCH_SLOW_DURATION:=5}"
    : "${BENCH_OPEN_ROUNDS:=3}" "${BENCH_OPEN_DURATION:=10}"
fi
: "${BENCH_WARMUP:=1}"
: "${BENCH_CONNS:=64}" "${BENCH_SLOW_CONNS:=16}" "${BENCH_THREADS:=1}"
: "${BENCH_WORKERS:=1 2}" "${BENCH_SLOW_WORKERS:=2}"
: "${BENCH_SLOW_POLICIES:=least-conn round-robin random-two peak-ewma hash}"
# Open loop (bench/openloop.sh): hash is left out, as it sends every request to one backend.
: "${BENCH_OPEN_POLICIES:=least-conn round-robin random-two peak-ewma}"
: "${BENCH_OPEN_LOAD:=0.7}" "${BENCH_OPEN_TIMEOUT:=10}"

BENCH_PIDS=()
declare -A BENCH_NAMES=()

bench_die() {
    echo "bench: error: $*" >&2
    exit 1
}

bench_log() {
    echo "[$(date +%H:%M:%S)] $*"
}

# Stops one process started by bench_spawn: TERM, wait up to 5 s, then KILL; reaps it.
bench_stop() {
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "bench: ${BENCH_NAMES[$pid]:-pid $pid} ignored TERM for 5 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    BENCH_PIDS=("${keep[@]}")
    unset "BENCH_NAMES[$pid]"
}

bench_cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    set +e
    for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
        bench_stop "${BENCH_PIDS[$i]}"
    done
    # A scenario's own cleanup (bench/social.sh: its PostgreSQL cluster), after its processes.
    ! declare -F bench_at_exit >/dev/null || bench_at_exit
    [ -n "${BENCH_TMP:-}" ] && rm -rf "$BENCH_TMP"
    exit "$status"
}

# bench_init NAME: temp dir, raw-output dir $RAW (emptied), traps.
bench_init() {
    RAW="$BENCH_OUT/$1"
    mkdir -p "$RAW" || bench_die "cannot create $RAW"
    rm -f "$RAW"/*
    BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/agora-bench.XXXXXX") || bench_die "mktemp failed"
    trap bench_cleanup EXIT
    trap 'echo "bench: interrupted" >&2; exit 130' INT
    trap 'echo "bench: terminated" >&2; exit 143' TERM
    command -v wrk >/dev/null || bench_die "wrk not found (run: sh scripts/install-deps.sh bench)"
    [ -x "$PY" ] || bench_die "$PY not found"
}

# bench_spawn NAME LOGFILE CMD...: starts CMD in the background with stdout+stderr to LOGFILE;
# sets SPAWNED to its pid. The process is stopped by bench_cleanup unless bench_stop ran first.
bench_spawn() {
    local name=$1 log=$2
    shift 2
    echo "$name: $*" >>"$RAW/commands.txt"
    "$@" >"$log" 2>&1 </dev/null &
    SPAWNED=$!
    BENCH_PIDS+=("$SPAWNED")
    BENCH_NAMES[$SPAWNED]=$name
}

# bench_ports VAR...: sets each named variable to a distinct free loopback port.
bench_ports() {
    local ports
    ports=$("$PY" "$STATS" ports $#) || bench_die "cannot pick free ports"
    read -r "$@" <<<"$ports"
}

# Prints the last lines of a log file, indented, to stderr.
bench_tail() {
    [ -f "$1" ] && sed 's/^/    | /' "$1" | tail -n 20 >&2
    return 0
}

# bench_wait_port NAME PID PORT LOG [SECONDS]: waits until 127.0.0.1:PORT accepts connections,
# failing if the process exits first or the time runs out (default 10 s).
bench_wait_port() {
    local name=$1 pid=$2 port=$3 log=$4 secs=${5:-10} i
    for ((i = 0; i < secs * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || { bench_tail "$log"; bench_die "$name exited during startup (log: $log)"; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    bench_tail "$log"
    bench_die "$name did not listen on 127.0.0.1:$port within ${secs}s (log: $log)"
}

# bench_wait_http NAME PID URL LOG [SECONDS]: waits until GET URL answers 200 (a proxy whose
# backends are not yet marked up answers 5xx), failing as bench_wait_port does (default 15 s).
bench_wait_http() {
    local name=$1 pid=$2 url=$3 log=$4 secs=${5:-15} i code=""
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { bench_tail "$log"; bench_die "$name exited during startup (log: $log)"; }
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null) || true
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    bench_tail "$log"
    bench_die "$name did not answer 200 at $url within ${secs}s (last status: ${code:-none}; log: $log)"
}

# Proxies whose readiness check was deferred (BENCH_DEFER=1): "name pid url log" entries.
BENCH_PENDING=()

# bench_ready NAME PID URL LOG: waits for a proxy to serve (bench_wait_http) now, or, when
# BENCH_DEFER=1, queues the check for bench_wait_pending so that several proxies start together.
bench_ready() {
    if [ "${BENCH_DEFER:-0}" = 1 ]; then
        BENCH_PENDING+=("$1 $2 $3 $4")
    else
        bench_wait_http "$@"
    fi
}

# Runs every deferred readiness check.
bench_wait_pending() {
    local entry
    for entry in "${BENCH_PENDING[@]}"; do
        # shellcheck disable=SC2086 # the fields contain no spaces
        bench_wait_http $entry
    done
    BENCH_PENDING=()
}

# bench_alive NAME PID LOG: fails if the process has exited (checked after every run).
bench_alive() {
    kill -0 "$2" 2>/dev/null && return 0
    bench_tail "$3"
    bench_die "$1 died during the benchmark (log: $3)"
}

# bench_backend NAME PORT ARGS...: starts build/testbackend on PORT and waits for it.
bench_backend() {
    local name=$1 port=$2
    shift 2
    local log="$RAW/$name.log"
    bench_spawn "$name" "$log" "$TESTBACKEND" --port "$port" --name "$name" "$@"
    bench_wait_port "$name" "$SPAWNED" "$port" "$log"
}

# bench_pinned PID: the CPUs each thread of PID and of its children may run on ("0-1 0 1"), to
# show that a proxy really pinned its workers.
bench_pinned() {
    local t c status=()
    for t in /proc/"$1"/task/*; do
        status+=("$t/status")
        for c in $(cat "$t/children" 2>/dev/null); do status+=("/proc/$c/status"); done
    done
    awk '/^Cpus_allowed_list/ { printf "%s%s", sep, $2; sep = " " } END { print "" }' "${status[@]}" 2>/dev/null
}

# bench_agora NAME PORT POLICY WORKERS BACKEND_PORT...: starts `agora lb` ($BENCH_BIN if set, else
# $AGORA) and waits until it serves GET / with 200.
bench_agora() {
    local name=$1 port=$2 policy=$3 workers=$4 p
    shift 4
    local args=(lb --listen "127.0.0.1:$port" --policy "$policy" --workers "$workers"
        --health-interval 1s --access-log off)
    for p in "$@"; do args+=(--backend "http://127.0.0.1:$p"); done
    # Where this agora has them: no admin listener (several agora lb run at once, and its default
    # port is fixed), and no slow start (a weight ramp after start-up that HAProxy is not given
    # and that would outlast the warm-up).
    local bin=${BENCH_BIN:-$AGORA} help
    help=$("$bin" lb --help 2>&1) || true
    grep -q -- --admin-listen <<<"$help" && args+=(--admin-listen off)
    grep -q -- --slow-start <<<"$help" && args+=(--slow-start 0)
    # BENCH_PIN_CPUS (a comma list): worker i on its i-th CPU, as HAProxy's cpu-map and nginx's
    # worker_cpu_affinity below do.
    if [ -n "${BENCH_PIN_CPUS:-}" ] && grep -q -- --cpu-affinity <<<"$help"; then
        args+=(--cpu-affinity "$BENCH_PIN_CPUS")
    elif [ -n "${BENCH_PIN_CPUS:-}" ]; then
        bench_log "  $name: this build has no --cpu-affinity: its workers are NOT pinned, the others' are"
        echo "$name: NOT pinned (the build has no --cpu-affinity)" >>"$RAW/notes.txt"
    fi
    # Extra options of one scenario (bench/idle.sh: the connection limits), word-split.
    # shellcheck disable=SC2206
    [ -z "${BENCH_AGORA_EXTRA:-}" ] || args+=($BENCH_AGORA_EXTRA)
    local log="$RAW/$name.log"
    bench_spawn "$name" "$log" "$bin" "${args[@]}"
    bench_ready "$name" "$SPAWNED" "http://127.0.0.1:$port/" "$log"
}

# bench_haproxy NAME PORT BALANCE THREADS BACKEND_PORT...: writes a config to $BENCH_TMP (copied
# to $RAW), starts HAProxy in the foreground and waits until it serves GET / with 200.
bench_haproxy() {
    local name=$1 port=$2 balance=$3 threads=$4 p i=0
    shift 4
    local cfg="$BENCH_TMP/$name.cfg"
    {
        printf 'global\n    nbthread %s\n    maxconn %s\n' "$threads" "${BENCH_HAPROXY_MAXCONN:-8192}"
        # bench/idle.sh: 10,000 idle clients need a maxconn whose computed descriptor need
        # (2 x maxconn) exceeds the hard limit; they do not use backend connections, so HAProxy may
        # run with the limit it gets instead of refusing to start.
        [ "${BENCH_HAPROXY_LOOSE:-0}" = 0 ] || printf '    no strict-limits\n'
        # bench/tls.sh: extra global lines (TLS defaults) and frontend lines (the ssl bind), verbatim.
        [ -z "${BENCH_HAPROXY_GLOBAL:-}" ] || printf '%s\n' "$BENCH_HAPROXY_GLOBAL"
        # HAProxy 2.6 ignores per-thread "cpu-map 1/N CPU" lines once one names thread 1 (a review
        # found its threads unpinned); "auto:" maps thread i to the i-th CPU of the list.
        [ -z "${BENCH_PIN_CPUS:-}" ] || printf '    cpu-map auto:1/1-%s %s\n' "$threads" "${BENCH_PIN_CPUS//,/ }"
        printf '\n'
        printf 'defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n'
        printf '    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n'
        printf '    timeout http-keep-alive 30s\n\n'
        printf 'frontend fe\n    bind 127.0.0.1:%s\n' "$port"
        [ -z "${BENCH_HAPROXY_FRONTEND:-}" ] || printf '%s\n' "$BENCH_HAPROXY_FRONTEND"
        printf '    default_backend be\n\n'
        printf 'backend be\n    balance %s\n    option httpchk GET /health\n' "$balance"
        printf '    default-server check inter 1s fall 3 rise 2\n'
        for p in "$@"; do printf '    server b%d 127.0.0.1:%s\n' $((++i)) "$p"; done
    } >"$cfg"
    cp "$cfg" "$RAW/"
    local log="$RAW/$name.log"
    "$HAPROXY" -c -q -f "$cfg" >"$log" 2>&1 || { bench_tail "$log"; bench_die "$name: invalid config $cfg"; }
    bench_spawn "$name" "$log" "$HAPROXY" -db -f "$cfg"
    bench_ready "$name" "$SPAWNED" "http://127.0.0.1:$port/" "$log"
}

# bench_nginx NAME PORT WORKERS BACKEND_PORT...: same for nginx (least_conn upstream with an
# idle keep-alive pool; keepalive_requests raised so that neither side closes connections every
# 1000 requests, which HAProxy and agora do not do either). With BENCH_NGINX_ZONE=1 the upstream
# gets a shared memory zone, so that least_conn counts every worker's connections (without one,
# each worker balances on its own counts only).
bench_nginx() {
    local name=$1 port=$2 workers=$3 p cpus i
    shift 3
    local dir="$BENCH_TMP/$name"
    mkdir -p "$dir/tmp"
    {
        printf 'worker_processes %s;\ndaemon off;\nmaster_process on;\n' "$workers"
        printf 'pid %s/nginx.pid;\nerror_log %s/error.log warn;\n' "$dir" "$dir"
        [ "$(id -u)" = 0 ] && printf 'user root;\n'
        [ -z "${BENCH_NGINX_RLIMIT:-}" ] || printf 'worker_rlimit_nofile %s;\n' "$BENCH_NGINX_RLIMIT"
        if [ -n "${BENCH_PIN_CPUS:-}" ]; then # one bit mask per worker, CPU 0 the rightmost bit
            IFS=, read -r -a cpus <<<"$BENCH_PIN_CPUS"
            printf 'worker_cpu_affinity'
            for ((i = 0; i < workers; i++)); do printf ' 1%s' "$(printf '%*s' "${cpus[i % ${#cpus[@]}]}" '' | tr ' ' 0)"; done
            printf ';\n'
        fi
        printf 'events { worker_connections %s; }\n\nhttp {\n' "${BENCH_NGINX_CONNS:-4096}"
        printf '    access_log off;\n    keepalive_requests 1000000;\n    keepalive_timeout 60s;\n'
        printf '    client_body_temp_path %s/tmp/body;\n    proxy_temp_path %s/tmp/proxy;\n' "$dir" "$dir"
        printf '    fastcgi_temp_path %s/tmp/fastcgi;\n    uwsgi_temp_path %s/tmp/uwsgi;\n' "$dir" "$dir"
        printf '    scgi_temp_path %s/tmp/scgi;\n\n' "$dir"
        # bench/tls.sh: extra http-level lines (TLS settings) and server-level lines (listen ssl).
        [ -z "${BENCH_NGINX_HTTP:-}" ] || printf '%s\n' "$BENCH_NGINX_HTTP"
        printf '    upstream be {\n        least_conn;\n'
        if [ "${BENCH_NGINX_ZONE:-0}" = 1 ]; then printf '        zone be 256k;\n'; fi
        for p in "$@"; do printf '        server 127.0.0.1:%s;\n' "$p"; done
        printf '        keepalive 64;\n        keepalive_requests 1000000;\n    }\n\n'
        printf '    server {\n        listen 127.0.0.1:%s;\n' "$port"
        [ -z "${BENCH_NGINX_SERVER:-}" ] || printf '%s\n' "$BENCH_NGINX_SERVER"
        printf '        location / {\n'
        printf '            proxy_pass http://be;\n            proxy_http_version 1.1;\n'
        printf '            proxy_set_header Connection "";\n        }\n    }\n}\n'
    } >"$dir/nginx.conf"
    cp "$dir/nginx.conf" "$RAW/$name.conf"
    local log="$RAW/$name.log"
    "$NGINX" -t -q -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" >"$log" 2>&1 ||
        { bench_tail "$log"; bench_die "$name: invalid config $dir/nginx.conf"; }
    bench_spawn "$name" "$log" "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf"
    bench_ready "$name" "$SPAWNED" "http://127.0.0.1:$port/" "$log"
}

# bench_wrk OUTFILE PORT CONNS SECONDS: one wrk run against http://127.0.0.1:PORT/, output kept
# in OUTFILE. Bounded by `timeout` in case wrk itself hangs.
bench_wrk() {
    local out=$1 port=$2 conns=$3 secs=$4
    local cmd=(wrk -t"$BENCH_THREADS" -c"$conns" -d"${secs}s" --timeout 5s --latency "http://127.0.0.1:$port/")
    echo "wrk: ${cmd[*]} > $out" >>"$RAW/commands.txt"
    timeout --foreground $((secs + 30)) "${cmd[@]}" >"$out" 2>&1 || { bench_tail "$out"; bench_die "wrk failed against port $port"; }
}

# Backend --record files (testbackend appends "METHOD TARGET" per request). When set, every
# measured run also counts how many of its requests (GET /) each backend received.
BENCH_RECORDS=()

# Prints, space-separated, the number of "GET /" lines in each of $BENCH_RECORDS.
bench_counts() {
    local f n out=()
    for f in "${BENCH_RECORDS[@]}"; do
        n=$(grep -cx 'GET /' "$f" 2>/dev/null) || n=${n:-0}
        out+=("$n")
    done
    echo "${out[*]}"
}

# Prints the CPU time (user + system, in clock ticks) used so far by process PID, its threads
# and its child processes (nginx's workers are children of its master).
bench_cpu_ticks() {
    local pid=$1 p total=0 stat rest
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        rest=${stat##*) } # fields from 3 on (the command name may hold spaces)
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12])) # utime, stime: fields 14 and 15
    done
    echo "$total"
}

# bench_measure GROUP LABEL ROUND PORT CONNS SECONDS PID LOG: a measured wrk run; appends it to
# $RAW/runs.tsv (with the per-backend request counts when $BENCH_RECORDS is set, and the proxy's
# CPU time during the run in clock ticks), prints a one-line summary and checks the proxy
# survived.
bench_measure() {
    local group=$1 label=$2 round=$3 port=$4 conns=$5 secs=$6 pid=$7 log=$8
    local file before=() after=() split=() i line cpu0 cpu1
    file="$(printf '%s-%s-r%s' "$group" "$label" "$round" | tr -cs 'A-Za-z0-9.-' '_').wrk.txt"
    bench_alive "$label" "$pid" "$log"
    read -r -a before <<<"$(bench_counts)"
    cpu0=$(bench_cpu_ticks "$pid")
    bench_wrk "$RAW/$file" "$port" "$conns" "$secs"
    cpu1=$(bench_cpu_ticks "$pid")
    read -r -a after <<<"$(bench_counts)"
    bench_alive "$label" "$pid" "$log"
    for i in "${!after[@]}"; do split+=($((after[i] - before[i]))); done
    line=$(printf '%s\t%s\t%s\t%s\t%s\t%s' "$group" "$label" "$round" "$file" "${split[*]}" "$((cpu1 - cpu0))")
    echo "$line" >>"$RAW/runs.tsv"
    printf '  %-10s %-20s round %s: %s%s\n' "${group%%:*}" "$label" "$round" \
        "$("$PY" "$STATS" parse "$RAW/$file" --cpu-ticks "$((cpu1 - cpu0))")" "${split[*]:+  backends ${split[*]}}"
}

# Prints the machine state that matters for reading the figures.
bench_machine_notes() {
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "versions: $("$HAPROXY" -v 2>/dev/null | head -n1 | cut -d' ' -f1-3); $("$NGINX" -v 2>&1); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
}
