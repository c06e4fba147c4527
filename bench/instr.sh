#!/usr/bin/env bash
# bench/instr.sh — instructions per proxied request of `agora lb`, counted by valgrind's
# callgrind: repeatable whatever else the (shared, noisy) machine is doing, so two builds can be
# compared exactly where a throughput ratio would drown in noise.
#
#   bash bench/instr.sh [OLD_AGORA] [NEW_AGORA]     (default NEW: build/agora; OLD optional)
#
# For each binary: `agora lb --workers 1` under callgrind in front of one testbackend; a Python
# client sends N1 then (in a second run) N2 keep-alive GET requests over 8 connections; the
# per-request cost is (Ir(N2) - Ir(N1)) / (N2 - N1), which cancels start-up and shutdown. Health
# checks are every 60 s (none during the run). Prints one line per binary.
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
REQ=$'GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: instr\r\nAccept: */*\r\n\r\n'

# run BIN N: Ir of one callgrind run of BIN proxying N requests.
run() {
    local port
    port=$(free_port)
    instr_ir "$port" "$2" "$REQ" "$tmp/lb.log" "$1" lb --listen "127.0.0.1:$port" --workers 1 \
        --backend "http://127.0.0.1:$BP" --health-interval 60s --access-log off --admin-listen off \
        --slow-start 0
}

# shellcheck disable=SC2086 # OLD is empty or one path
instr_compare "proxied request" run $OLD $NEW
