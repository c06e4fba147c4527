#!/usr/bin/env bash
# bench/instr.sh — instructions per proxied request of `agora lb`, counted by valgrind's
# callgrind: repeatable whatever else the (shared, noisy) machine is doing, so two builds can be
# compared exactly where a throughput ratio would drown in noise.
#
#   bash bench/instr.sh [OLD_AGORA] [NEW_AGORA]     (default NEW: build/agora; OLD optional)
#   INSTR_MODE=h2 bash bench/instr.sh [OLD] [NEW]   (HTTP/2: h2c prior knowledge, h2load)
#
# For each binary: `agora lb --workers 1` under callgrind in front of one testbackend; a Python
# client sends N1 then (in a second run) N2 keep-alive GET requests over 8 connections; the
# per-request cost is (Ir(N2) - Ir(N1)) / (N2 - N1), which cancels start-up and shutdown. Health
# checks are every 60 s (none during the run). Prints one line per binary.
# INSTR_MODE=h2: the balancer runs with --h2c and `h2load -c8 -m10` sends the requests as HTTP/2
# streams (8 connections, 10 concurrent streams each; every answer checked to be a 2xx).
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${INSTR_N1:-2000}
N2=${INSTR_N2:-12000}
NEW=${2:-${1:-build/agora}}
OLD=${2:+$1}
# shellcheck source=bench/instr_lib.sh
. bench/instr_lib.sh
instr_init instr.sh

BP=$(free_port)
build/testbackend --port "$BP" --threads 1 >"$tmp/backend.log" 2>&1 &
pids+=($!)
MODE=${INSTR_MODE:-h1}
EXTRA=()
if [ "$MODE" = h2 ]; then
    command -v h2load >/dev/null || { echo "instr.sh: h2load is needed (nghttp2-client)" >&2; exit 1; }
    EXTRA=(--h2c on)
    # h2_load PORT N REQUEST: N GET streams over h2c with h2load; fails unless all N got a 2xx.
    h2_load() {
        local out
        out=$(h2load -c8 -m10 -n"$2" "http://127.0.0.1:$1/bench" 2>&1)
        echo "$out" | grep -q "status codes: $2 2xx" || { echo "$out" >&2; return 1; }
    }
    INSTR_LOAD_FN=h2_load
fi
REQ=$'GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: instr\r\nAccept: */*\r\n\r\n'

# run BIN N: Ir of one callgrind run of BIN proxying N requests.
run() {
    local port
    port=$(free_port)
    instr_ir "$port" "$2" "$REQ" "$tmp/lb.log" "$1" lb --listen "127.0.0.1:$port" --workers 1 \
        --backend "http://127.0.0.1:$BP" --health-interval 60s --access-log off --admin-listen off \
        --slow-start 0 "${EXTRA[@]}"
}

WHAT="proxied request"
[ "$MODE" = h1 ] || WHAT="proxied $MODE request"
# shellcheck disable=SC2086 # OLD is empty or one path
instr_compare "$WHAT" run $OLD $NEW
