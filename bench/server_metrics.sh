#!/usr/bin/env bash
# bench/server_metrics.sh — what the web server's metrics cost (issue 13, `agora server`):
#   (a) instructions per request of an authenticated home-timeline read (GET
#       /api/v1/timelines/home, the social mix's commonest request), counted by valgrind's
#       callgrind for OLD (a build without the counting) and NEW: repeatable on a shared, noisy
#       machine where a throughput ratio would drown in noise. As bench/instr.sh does for the
#       balancer: (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown.
#   (b) the CPU time of one scrape of NEW's /metrics (utime+stime of the process from /proc over
#       SCRAPES scrapes on one keep-alive connection, after traffic on every kind of route so
#       that the families have their series) and its size.
#
#   bash bench/server_metrics.sh [OLD_AGORA] [NEW_AGORA]    (default NEW: build/agora; OLD optional)
#
# The server runs with --workers 1 --threads 1 --hash-threads 1 on a SQLite file prepared once
# (one account, logged in, 20 posts), copied for every run.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${INSTR_N1:-1000}
N2=${INSTR_N2:-5000}
SCRAPES=${BENCH_SCRAPES:-500}
NEW=${2:-${1:-build/agora}}
OLD=${2:+$1}
# shellcheck source=bench/instr_lib.sh
. bench/instr_lib.sh
instr_init server_metrics.sh
SERVER_ARGS=(--workers 1 --threads 1 --hash-threads 1 --signup-limit off --login-limit off --login-address-limit off)

# ---- the database and a session token, made once with NEW
P=$(free_port)
"$NEW" server --listen "127.0.0.1:$P" --db "sqlite:$tmp/seed.db" "${SERVER_ARGS[@]}" >"$tmp/seed.log" 2>&1 &
SEEDPID=$!
pids+=($SEEDPID)
wait_port "$P"
TOKEN=$(python3 - "$P" <<'EOF'
import http.client, json, sys
port = int(sys.argv[1])
def call(method, path, body=None, token=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    return r.status, r.read()
assert call("POST", "/api/v1/accounts", {"username": "bench", "password": "correct horse battery"})[0] == 201
st, b = call("POST", "/api/v1/sessions", {"username": "bench", "password": "correct horse battery"})
tok = json.loads(b)["token"]
for i in range(20):
    assert call("POST", "/api/v1/posts", {"text": "post %d" % i}, tok)[0] == 201
print(tok)
EOF
)
kill -TERM "$SEEDPID"
wait "$SEEDPID" || true

REQ=$'GET /api/v1/timelines/home HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer '"$TOKEN"$'\r\n\r\n'

# run BIN N: Ir of one callgrind run of BIN serving N home reads.
run() {
    local port
    port=$(free_port)
    cp "$tmp/seed.db" "$tmp/run.db"
    rm -f "$tmp/run.db-wal" "$tmp/run.db-shm"
    instr_ir "$port" "$2" "$REQ" "$tmp/server.log" "$1" server --listen "127.0.0.1:$port" \
        --db "sqlite:$tmp/run.db" "${SERVER_ARGS[@]}"
}

echo "(a) instructions per home-timeline read (callgrind, N1=$N1, N2=$N2)"
# shellcheck disable=SC2086 # OLD is empty or one path
instr_compare request run $OLD $NEW

echo "(b) one scrape of $NEW's /metrics ($SCRAPES scrapes, one keep-alive connection)"
P=$(free_port)
MP=$(free_port)
cp "$tmp/seed.db" "$tmp/run.db"
rm -f "$tmp/run.db-wal" "$tmp/run.db-shm"
"$NEW" server --listen "127.0.0.1:$P" --db "sqlite:$tmp/run.db" "${SERVER_ARGS[@]}" \
    --metrics-listen "127.0.0.1:$MP" >"$tmp/scrape.log" 2>&1 &
SPID=$!
pids+=($SPID)
wait_port "$P"
instr_load "$P" 2000 "$REQ"
python3 - "$P" "$MP" "$SPID" "$SCRAPES" "$TOKEN" <<'EOF'
import http.client, json, os, sys, time
port, mport, pid, n, tok = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def call(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    r = c.getresponse(); r.read(); return r.status
# traffic on the other kinds of routes, so that their series exist
for path in ("/api/v1/accounts/bench", "/api/v1/accounts/bench/posts", "/api/v1/accounts/bench/followers",
             "/api/v1/me/sessions", "/api/v1/nope", "/health", "/"):
    call("GET", path)
call("POST", "/api/v1/posts", json.dumps({"text": "x"}))
call("POST", "/api/v1/posts", "{bad")
def ticks():
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=10)
def scrape():
    conn.request("GET", "/metrics")
    r = conn.getresponse(); body = r.read(); assert r.status == 200; return body
for _ in range(20):
    scrape()
t0, c0 = time.perf_counter(), ticks()
for _ in range(n):
    body = scrape()
wall, cpu = time.perf_counter() - t0, ticks() - c0
hz = os.sysconf("SC_CLK_TCK")
lines = [l for l in body.decode().splitlines() if l and not l.startswith("#")]
print("%d scrapes: %.3f ms wall per scrape, %.3f ms CPU per scrape (server utime+stime), %d bytes, %d samples"
      % (n, wall * 1000 / n, cpu * 1000.0 / hz / n, len(body), len(lines)))
EOF
