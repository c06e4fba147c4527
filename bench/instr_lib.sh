# bench/instr_lib.sh — instructions per request counted by valgrind's callgrind, shared by
# bench/instr.sh (`agora lb`) and bench/server_metrics.sh (`agora server`); sourced, never run.
# shellcheck shell=bash
#
# Contract: the sourcing script calls instr_init NAME first: it checks valgrind is there, makes the
# private temporary directory $tmp and the array pids, and installs an exit trap that kills every
# pid in pids and removes $tmp; every process started here, or by the script, goes into pids. The
# per-request cost is (Ir(N2) - Ir(N1)) / (N2 - N1), which cancels start-up and shutdown.

# instr_init NAME: as above; NAME (the script's) prefixes the message when valgrind is missing.
instr_init() {
    command -v valgrind >/dev/null || { echo "$1: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
    tmp=$(mktemp -d)
    pids=()
    trap instr_cleanup EXIT
}

instr_cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}

# Prints a free loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: waits until 127.0.0.1:PORT accepts connections (up to 30 s); 1 if it never does.
wait_port() {
    for _ in $(seq 300); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1)).close()" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# instr_load PORT N REQUEST: sends the raw request REQUEST (its bytes, e.g. $'GET / HTTP/1.1\r\n...
# \r\n\r\n') N times over 8 keep-alive connections, checking every answer is a 200.
instr_load() {
    python3 - "$1" "$2" "$3" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
req = sys.argv[3].encode()
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

# instr_ir PORT N REQUEST LOG CMD...: runs CMD (which must listen on 127.0.0.1:PORT) under
# callgrind with output to LOG, sends it N requests (instr_load, or the function named by
# INSTR_LOAD_FN, called with the same PORT N REQUEST), stops it with TERM and prints
# the instructions (Ir) the whole run executed.
instr_ir() {
    local port=$1 n=$2 req=$3 log=$4 out pid
    shift 4
    out="${tmp:?}/cg.$RANDOM"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_port "$port" || { echo "instr: nothing listens on $port (see $log)" >&2; cat "$log" >&2; return 1; }
    "${INSTR_LOAD_FN:-instr_load}" "$port" "$n" "$req" || { echo "instr: the load failed" >&2; kill -TERM "$pid"; return 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    grep -m1 '^summary:' "$out" | awk '{print $2}'
}

# instr_compare WHAT FN BIN...: for each BIN, calls `FN BIN N` (which prints Ir, as instr_ir
# does) for N1 and N2 requests and prints one line: BIN's instructions per WHAT.
instr_compare() {
    local what=$1 fn=$2 bin a b
    shift 2
    for bin in "$@"; do
        a=$("$fn" "$bin" "$N1")
        b=$("$fn" "$bin" "$N2")
        echo "$bin: $(((b - a) / (N2 - N1))) instructions per $what (Ir $a for $N1, $b for $N2 requests)"
    done
}
