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
command -v valgrind >/dev/null || { echo "instr.sh: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BP=$(free_port)
build/testbackend --port "$BP" --threads 1 >"$tmp/backend.log" 2>&1 &
pids+=($!)

# Sends n requests over 8 keep-alive connections, checking every answer is a 200.
load() {
    python3 - "$1" "$2" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: instr\r\nAccept: */*\r\n\r\n"
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
bufs = [b""] * 8
done = 0
while done < n:
    k = min(8, n - done)
    for i in range(k):
        conns[i].sendall(req)
    for i in range(k):
        while True:
            h = bufs[i].find(b"\r\n\r\n")
            if h >= 0:
                head = bufs[i][:h].decode()
                ln = int([l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")][0])
                if len(bufs[i]) >= h + 4 + ln:
                    assert head.startswith("HTTP/1.1 200"), head
                    bufs[i] = bufs[i][h + 4 + ln:]
                    break
            bufs[i] += conns[i].recv(65536)
    done += k
EOF
}

# Ir of one callgrind run of binary $1 with $2 requests.
run() {
    local bin=$1 n=$2 port out
    port=$(free_port)
    out="$tmp/cg.$RANDOM"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" lb --listen "127.0.0.1:$port" --workers 1 \
        --backend "http://127.0.0.1:$BP" --health-interval 60s --access-log off --admin-listen off \
        --slow-start 0 >"$tmp/lb.log" 2>&1 &
    local pid=$!
    pids+=($pid)
    for _ in $(seq 200); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" 2>/dev/null && break
        sleep 0.1
    done
    load "$port" "$n"
    kill -TERM "$pid"
    wait "$pid" || true
    grep -m1 '^summary:' "$out" | awk '{print $2}'
}

for bin in $OLD $NEW; do
    a=$(run "$bin" "$N1")
    b=$(run "$bin" "$N2")
    echo "$bin: $(( (b - a) / (N2 - N1) )) instructions per proxied request (Ir $a for $N1, $b for $N2 requests)"
done
