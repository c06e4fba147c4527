#!/usr/bin/env bash
# bench/tls.sh — issue 14's TLS benchmark: agora lb's TLS termination against HAProxy and nginx,
# with one certificate generated here (openssl, into the temporary directory) and the same three
# build/testbackend processes, for each worker count in $BENCH_TLS_WORKERS and each certificate
# kind in $BENCH_TLS_CERTS (rsa2048, ecdsa256). The proxies listen plain (for the readiness check)
# and with TLS side by side; each round measures, for every proxy in an order rotated by one each
# round (agora haproxy nginx, nginx agora haproxy, ...):
#   full      build/tlsload: $BENCH_TLS_CLIENTS closed-loop clients, each a new connection at a
#             time: TLS 1.3 full handshake + one GET with Connection: close (connections/s)
#   resumed   the same, each connection offering the ticket its client received last
#   keepalive wrk over https, -t$BENCH_THREADS -c$BENCH_CONNS, keep-alive (requests/s, p50, p99)
#   h2        h2load -c$BENCH_H2_CONNS -m$BENCH_H2_STREAMS over h2, for the proxies whose ALPN
#             offers h2 (all three since agora's src/http/h2.c; one that does not is reported as
#             not measured)
#   keepalive-rate
#             HTTPS keep-alive at one offered rate for every proxy: build/openloop --tls
#             --preconnect --conns $BENCH_CONNS, each request timed from its due time, so a stall
#             or a proxy that falls behind shows in the percentiles. The rate is
#             $BENCH_TLS_RATE_SHARE of the lower of agora's and HAProxy's closed-loop rates in a
#             $BENCH_TLS_RATE_PROBE s wrk probe at the start of each worker/certificate block. A
#             closed loop measures each proxy's p99 at its own rate (the faster proxy drives the
#             client and the backends harder); this compares latency under the same load
# with the proxy's CPU time from /proc (bench_cpu_ticks) per connection or per request. The
# three proxies get the same TLS 1.2 list, TLS 1.3 suites and groups and all follow the client's
# order (HAProxy: prefer-client-ciphers), so each client gets the same cryptography from all
# three: tlsload offers only TLS_AES_128_GCM_SHA256 and X25519; wrk and h2load OpenSSL's default
# order (TLS_AES_256_GCM_SHA384 first, X25519). The negotiated parameters are logged at start.
# At two workers or more (up to the CPUs there are) every proxy pins its workers one per CPU
# (BENCH_TLS_PIN=0: none does).
# With BENCH_AGORA_BASE=PATH another agora build runs as a fourth proxy ("agora-base") in the same
# rounds, as in bench/lb.sh.
# Raw outputs: build/bench/tls/. Usage: bash bench/tls.sh (knobs below and in bench/README.md).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init tls

TLSLOAD=${BENCH_TLSLOAD:-$BENCH_ROOT/build/tlsload}
: "${BENCH_TLS_WORKERS:=1 2}" "${BENCH_TLS_CERTS:=rsa2048}" "${BENCH_TLS_ROUNDS:=$BENCH_ROUNDS}"
: "${BENCH_TLS_CLIENTS:=8}" "${BENCH_H2_CONNS:=16}" "${BENCH_H2_STREAMS:=10}"
: "${BENCH_TLS_MEASURES:=full resumed keepalive h2 keepalive-rate}"
: "${BENCH_TLS_RATE_SHARE:=0.7}" "${BENCH_TLS_RATE_PROBE:=3}" "${BENCH_TLS_PIN:=1}"
read -r -a ALLOWED_CPUS <<<"$("$PY" -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')"
OPENLOOP=${BENCH_OPENLOOP:-$BENCH_ROOT/build/openloop}
[ -x "$TLSLOAD" ] || bench_die "$TLSLOAD not found: build it with 'make build' (bench/tlsload.c)"
[ -x "$OPENLOOP" ] || bench_die "$OPENLOOP not found: build it with 'make build' (bench/openloop.c)"
awk -v s="$BENCH_TLS_RATE_SHARE" 'BEGIN { exit !(s + 0 > 0 && s + 0 <= 1) }' ||
    bench_die "BENCH_TLS_RATE_SHARE must be a number in (0, 1], not '$BENCH_TLS_RATE_SHARE'"
command -v openssl >/dev/null || bench_die "openssl not found (run: sh scripts/install-deps.sh bench)"
HAVE_H2LOAD=0
declare -A TITLE=([full]="full handshakes" [resumed]="resumed handshakes" [keepalive]="https keep-alive" [h2]="h2"
    [keepalive-rate]="https keep-alive, set rate")
for measure in $BENCH_TLS_MEASURES; do
    [ -n "${TITLE[$measure]:-}" ] || bench_die "unknown measure '$measure' in BENCH_TLS_MEASURES (${!TITLE[*]})"
done
command -v h2load >/dev/null && HAVE_H2LOAD=1

# Mozilla "intermediate" TLS 1.2 list and OpenSSL's TLS 1.3 suites: agora's fixed settings
# (src/http/tls.c), given to HAProxy and nginx as well.
CIPHERS12=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305
SUITES13=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256

# make_cert KIND: writes $BENCH_TMP/KIND.pem (certificate), KIND.key, KIND.both (both, for HAProxy).
make_cert() {
    local kind=$1 key=()
    case "$kind" in
        rsa2048) key=(-newkey rsa:2048) ;;
        ecdsa256) key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
        *) bench_die "unknown certificate kind '$kind' in BENCH_TLS_CERTS (rsa2048 or ecdsa256)" ;;
    esac
    local cmd=(openssl req -x509 "${key[@]}" -nodes -sha256 -days 2 -subj /CN=localhost
        -addext subjectAltName=DNS:localhost -keyout "$BENCH_TMP/$kind.key" -out "$BENCH_TMP/$kind.pem")
    echo "cert: ${cmd[*]}" >>"$RAW/commands.txt"
    "${cmd[@]}" >"$RAW/cert-$kind.log" 2>&1 || { bench_tail "$RAW/cert-$kind.log"; bench_die "openssl could not make a $kind certificate"; }
    cat "$BENCH_TMP/$kind.pem" "$BENCH_TMP/$kind.key" >"$BENCH_TMP/$kind.both"
}

# 1 if the TLS server on PORT selects h2 by ALPN.
offers_h2() {
    echo | timeout 5 openssl s_client -connect "127.0.0.1:$1" -alpn h2 2>/dev/null | grep -q '^ALPN protocol: h2'
}

# tls_run GROUP LABEL ROUND MEASURE PORT PID LOG: one measured run; appends to $RAW/runs.tsv with
# the proxy's CPU ticks during the run and prints a one-line summary.
tls_run() {
    local group=$1 label=$2 round=$3 measure=$4 port=$5 pid=$6 log=$7 file cmd cpu0 cpu1
    file="$(printf '%s-%s-r%s' "$group" "$label" "$round" | tr -cs 'A-Za-z0-9.-' '_')"
    case "$measure" in
        full) cmd=("$TLSLOAD" --port "$port" --threads "$BENCH_TLS_CLIENTS" --seconds "$BENCH_DURATION") file+=.tlsload.txt ;;
        resumed) cmd=("$TLSLOAD" --port "$port" --threads "$BENCH_TLS_CLIENTS" --seconds "$BENCH_DURATION" --resume) file+=.tlsload.txt ;;
        keepalive) cmd=(wrk -t"$BENCH_THREADS" -c"$BENCH_CONNS" -d"${BENCH_DURATION}s" --timeout 5s --latency "https://127.0.0.1:$port/") file+=.wrk.txt ;;
        h2) # --log-file: every request's time, for p50 and p99 (bench/stats.py h2load_times)
            cmd=(h2load -t1 -c"$BENCH_H2_CONNS" -m"$BENCH_H2_STREAMS" -D "$BENCH_DURATION" --log-file "$RAW/$file.h2log.tsv" "https://127.0.0.1:$port/")
            file+=.h2load.txt ;;
        keepalive-rate)
            cmd=("$OPENLOOP" --tls --preconnect --conns "$BENCH_CONNS" --port "$port" --rate "$RATE_KA" --duration "$BENCH_DURATION" --timeout 5)
            file+=.openloop.txt ;;
    esac
    echo "$measure: ${cmd[*]} > $file" >>"$RAW/commands.txt"
    bench_alive "$label" "$pid" "$log"
    cpu0=$(bench_cpu_ticks "$pid")
    timeout --foreground $((BENCH_DURATION + 30)) "${cmd[@]}" >"$RAW/$file" 2>&1 || { bench_tail "$RAW/$file"; bench_die "$measure run failed against $label (port $port)"; }
    cpu1=$(bench_cpu_ticks "$pid")
    bench_alive "$label" "$pid" "$log"
    printf '%s\t%s\t%s\t%s\t\t%s\n' "$group" "$label" "$round" "$file" "$((cpu1 - cpu0))" >>"$RAW/runs.tsv"
    local summary
    summary=$("$PY" "$STATS" parse "$RAW/$file" --cpu-ticks "$((cpu1 - cpu0))")
    if [[ $file == *.tlsload.txt ]]; then
        summary="${summary//req\/s/conn\/s}"
        summary="${summary//us\/req/us\/conn}$(sed -n 's/^tlsload: connections=[0-9]* full=\([0-9]*\) resumed=\([0-9]*\).*/  (full \1, resumed \2)/p' "$RAW/$file")"
    fi
    printf '  %-34s %-8s round %s: %s\n' "$group" "$label" "$round" "$summary"
}

# probe_rate PROXY: a closed-loop wrk of $BENCH_TLS_RATE_PROBE s against PROXY's TLS port (the
# keep-alive load); prints its requests per second. Output kept in $RAW.
probe_rate() {
    local probe_file="$RAW/probe-$CERT-w$W-$1.wrk.txt" rate
    local cmd=(wrk -t"$BENCH_THREADS" -c"$BENCH_CONNS" -d"${BENCH_TLS_RATE_PROBE}s" "https://127.0.0.1:${TPORT[$1]}/")
    echo "probe: ${cmd[*]} > ${probe_file##*/}" >>"$RAW/commands.txt"
    timeout --foreground $((BENCH_TLS_RATE_PROBE + 30)) "${cmd[@]}" >"$probe_file" 2>&1 || { bench_tail "$probe_file"; bench_die "the rate probe against $1 failed"; }
    rate=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$probe_file")
    [ -n "$rate" ] || bench_die "no rate in the probe's output ($probe_file)"
    echo "$rate"
}

bench_ports B1 B2 B3
bench_log "TLS: fast backends on ports $B1 $B2 $B3 (testbackend --threads 1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
bench_backend backend1 "$B1" --threads 1
bench_backend backend2 "$B2" --threads 1
bench_backend backend3 "$B3" --threads 1

for CERT in $BENCH_TLS_CERTS; do
    make_cert "$CERT"
    for W in $BENCH_TLS_WORKERS; do
        bench_ports PA PH PN TA TH TN
        bench_log "workers=$W cert=$CERT: agora :$PA/:$TA, haproxy :$PH/:$TH, nginx :$PN/:$TN (plain/TLS)"
        # Two workers or more, one per CPU (BENCH_TLS_PIN=1, the default): each proxy pins worker
        # i to the i-th CPU this script may run on, as an operator of a dedicated machine would
        # (agora --cpu-affinity, HAProxy cpu-map, nginx worker_cpu_affinity); one worker is not.
        export BENCH_PIN_CPUS=
        if [ "$BENCH_TLS_PIN" = 1 ] && [ "$W" -ge 2 ] && [ "$W" -le "${#ALLOWED_CPUS[@]}" ]; then
            BENCH_PIN_CPUS=$(IFS=,; echo "${ALLOWED_CPUS[*]:0:W}")
            bench_log "  workers pinned to CPUs $BENCH_PIN_CPUS (BENCH_TLS_PIN=0: not pinned)"
            echo "w$W: every proxy's workers pinned one per CPU ($BENCH_PIN_CPUS): agora --cpu-affinity, HAProxy cpu-map, nginx worker_cpu_affinity" >>"$RAW/notes.txt"
        fi
        BENCH_DEFER=1
        BENCH_AGORA_EXTRA="--tls-listen 127.0.0.1:$TA --tls-cert $BENCH_TMP/$CERT.pem --tls-key $BENCH_TMP/$CERT.key" \
            bench_agora "agora-$CERT-w$W" "$PA" least-conn "$W" "$B1" "$B2" "$B3"
        PID_A=$SPAWNED
        if [ -n "${BENCH_AGORA_BASE:-}" ]; then
            # Another build in the same rounds ("agora-base"), for before/after comparisons.
            bench_ports PB TB
            BENCH_BIN=$BENCH_AGORA_BASE BENCH_AGORA_EXTRA="--tls-listen 127.0.0.1:$TB --tls-cert $BENCH_TMP/$CERT.pem --tls-key $BENCH_TMP/$CERT.key" \
                bench_agora "agora-base-$CERT-w$W" "$PB" least-conn "$W" "$B1" "$B2" "$B3"
            PID_B=$SPAWNED
        fi
        # HAProxy: the same suites and groups, client preference as agora and nginx, tickets on
        # (its default) and its shared session cache (default 20,000 sessions).
        BENCH_HAPROXY_GLOBAL=$(printf '    ssl-default-bind-ciphers %s\n    ssl-default-bind-ciphersuites %s\n    ssl-default-bind-curves X25519:P-256:P-384\n    ssl-default-bind-options ssl-min-ver TLSv1.2 prefer-client-ciphers\n    tune.ssl.lifetime 3600' "$CIPHERS12" "$SUITES13") \
            BENCH_HAPROXY_FRONTEND="    bind 127.0.0.1:$TH ssl crt $BENCH_TMP/$CERT.both alpn h2,http/1.1" \
            bench_haproxy "haproxy-$CERT-w$W" "$PH" leastconn "$W" "$B1" "$B2" "$B3"
        PID_H=$SPAWNED
        BENCH_NGINX_HTTP=$(printf '    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_ciphers %s;\n    ssl_conf_command Ciphersuites %s;\n    ssl_ecdh_curve X25519:prime256v1:secp384r1;\n    ssl_session_cache shared:SSL:10m;\n    ssl_session_timeout 1h;\n    ssl_session_tickets on;\n    ssl_certificate %s;\n    ssl_certificate_key %s;' "$CIPHERS12" "$SUITES13" "$BENCH_TMP/$CERT.pem" "$BENCH_TMP/$CERT.key") \
            BENCH_NGINX_SERVER="        listen 127.0.0.1:$TN ssl http2;" \
            bench_nginx "nginx-$CERT-w$W" "$PN" "$W" "$B1" "$B2" "$B3"
        PID_N=$SPAWNED
        BENCH_DEFER=0
        bench_wait_pending
        PROXIES=(agora haproxy nginx)
        declare -A PID=([agora]=$PID_A [haproxy]=$PID_H [nginx]=$PID_N)
        declare -A TPORT=([agora]=$TA [haproxy]=$TH [nginx]=$TN)
        declare -A LOG=([agora]="$RAW/agora-$CERT-w$W.log" [haproxy]="$RAW/haproxy-$CERT-w$W.log" [nginx]="$RAW/nginx-$CERT-w$W.log")
        if [ -n "${BENCH_AGORA_BASE:-}" ]; then
            PROXIES+=(agora-base)
            PID[agora-base]=$PID_B
            TPORT[agora-base]=$TB
            LOG[agora-base]="$RAW/agora-base-$CERT-w$W.log"
        fi
        declare -A H2=()
        for proxy in "${PROXIES[@]}"; do
            code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "https://127.0.0.1:${TPORT[$proxy]}/") || true
            [ "$code" = 200 ] || bench_die "$proxy did not answer 200 over TLS on :${TPORT[$proxy]} (got ${code:-none})"
            H2[$proxy]=0
            if [ "$HAVE_H2LOAD" = 1 ] && offers_h2 "${TPORT[$proxy]}"; then H2[$proxy]=1; fi
            bench_log "  $proxy: $(echo | timeout 5 openssl s_client -connect "127.0.0.1:${TPORT[$proxy]}" -alpn h2,http/1.1 2>/dev/null |
                grep -aE '^(New|ALPN|Server Temp Key)' | tr '\n' ' ')"
        done
        if [ -n "$BENCH_PIN_CPUS" ]; then # what each proxy's threads (nginx: its processes) may run on
            for proxy in "${PROXIES[@]}"; do
                pinned=$(bench_pinned "${PID[$proxy]}")
                bench_log "  $proxy: threads' CPUs $pinned"
                echo "w$W $CERT: $proxy threads' (nginx: processes') CPUs: $pinned" >>"$RAW/notes.txt"
            done
        fi
        # Warm-up (discarded): pools filled, health checks passed, code paths paged in.
        for proxy in "${PROXIES[@]}"; do
            wrk -t1 -c"$BENCH_CONNS" -d"${BENCH_WARMUP}s" "https://127.0.0.1:${TPORT[$proxy]}/" >"$RAW/warmup-$CERT-w$W-$proxy.wrk.txt" 2>&1 || true
            "$TLSLOAD" --port "${TPORT[$proxy]}" --threads 2 --seconds "$BENCH_WARMUP" --resume >"$RAW/warmup-$CERT-w$W-$proxy.tlsload.txt" 2>&1 || true
        done
        # The set rate: a share of the lower of agora's and HAProxy's closed-loop rates.
        RATE_KA=
        if [[ " ${BENCH_TLS_MEASURES//[[:space:]]/ } " == *" keepalive-rate "* ]]; then
            ra=$(probe_rate agora)
            rh=$(probe_rate haproxy)
            RATE_KA=$(awk -v a="$ra" -v h="$rh" -v s="$BENCH_TLS_RATE_SHARE" 'BEGIN { printf "%d", (a < h ? a : h) * s }')
            [ "$RATE_KA" -gt 0 ] || bench_die "set rate of 0 req/s (probes: agora $ra, HAProxy $rh req/s)"
            bench_log "  set rate: closed-loop probes ${BENCH_TLS_RATE_PROBE}s: agora $ra, HAProxy $rh req/s; every proxy is offered $BENCH_TLS_RATE_SHARE x the lower = $RATE_KA req/s"
            echo "w$W $CERT: set rate $RATE_KA req/s (probes: agora $ra, HAProxy $rh req/s)" >>"$RAW/notes.txt"
        fi
        for ((round = 1; round <= BENCH_TLS_ROUNDS; round++)); do
            # Rotated by one each round: ABC, CAB, BCA, ...
            n=${#PROXIES[@]}
            order=()
            for ((i = 0; i < n; i++)); do order+=("${PROXIES[(i - round + 1 + 3 * n) % n]}"); done
            for measure in $BENCH_TLS_MEASURES; do
                for proxy in "${order[@]}"; do
                    if [ "$measure" = h2 ] && [ "${H2[$proxy]}" = 0 ]; then continue; fi
                    tls_run "w$W $CERT: ${TITLE[$measure]}" "$proxy" "$round" "$measure" "${TPORT[$proxy]}" "${PID[$proxy]}" "${LOG[$proxy]}"
                done
            done
        done
        for proxy in "${PROXIES[@]}"; do
            [ "${H2[$proxy]}" = 1 ] || echo "$proxy: no ALPN h2 (h2 not measured)" >>"$RAW/notes.txt"
        done
        bench_stop "$PID_A"
        bench_stop "$PID_H"
        bench_stop "$PID_N"
        [ -z "${BENCH_AGORA_BASE:-}" ] || bench_stop "$PID_B"
        unset PID TPORT LOG H2
    done
done

echo
{
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    [ -f "$RAW/notes.txt" ] && sort -u "$RAW/notes.txt"
    NOTE="full/resumed: tlsload --threads $BENCH_TLS_CLIENTS, TLS 1.3 + 1 GET per connection; keepalive: wrk -t$BENCH_THREADS -c$BENCH_CONNS https; h2: h2load -c$BENCH_H2_CONNS -m$BENCH_H2_STREAMS; set rate: openloop --tls --preconnect --conns $BENCH_CONNS at $BENCH_TLS_RATE_SHARE x the lower closed-loop rate of agora and HAProxy, latency from due time; ${BENCH_DURATION}s runs"
    "$PY" "$STATS" tls-table "$RAW/runs.tsv" --note "$NOTE"
} | tee "$RAW/summary.txt"
