#!/usr/bin/env bash
# bench/pg_instr.sh — instructions PostgreSQL executes per API request of `agora server`, counted
# by valgrind's callgrind in the database's backend processes: repeatable whatever else the
# (shared, noisy) machine is doing, so two builds' SQL can be compared exactly where the social
# benchmark's throughput ratio would drown in noise.
#
#   bash bench/pg_instr.sh [OLD_AGORA] [NEW_AGORA]     (default NEW: build/agora; OLD optional)
#
# A private cluster (scripts/pg-temp.sh) is seeded as bench/social.sh seeds its 1 000-user graph
# (agora seed --users 1000 --posts-per-user 10 --seed 1, VACUUM ANALYZE) and stopped; its
# postmaster is started again under callgrind (--trace-children: every backend is counted, and
# writes its counts when it exits). For each binary and request type (home, user page, compose):
# `agora server --threads 1 --workers 1` on it, 20 users log in, then one keep-alive client sends
# N1 requests and, in a second run, N2; the server is stopped, which ends its backends, and the
# instructions of the backends that ended are summed. Per request: (Ir(N2) - Ir(N1)) / (N2 - N1),
# which cancels connecting, preparing statements and logging in. The background processes (WAL
# writer, checkpointer) are not counted: a compose's commit flush is not in its figure. Composes
# add posts, so each type runs on a fresh copy of the seeded cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${PG_INSTR_N1:-50}
N2=${PG_INSTR_N2:-350}
NEW=${2:-${1:-build/agora}}
OLD=${2:+$1}
# shellcheck source=bench/instr_lib.sh
. bench/instr_lib.sh
instr_init pg_instr.sh
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$BIN/postgres" ] || { echo "pg_instr.sh: PostgreSQL is not installed (make deps-test)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

chmod 0755 "$tmp" # PostgreSQL runs as the postgres user when we are root
seed="$tmp/seed"
url=$(sh scripts/pg-temp.sh start "$seed")
"$NEW" seed --users 1000 --posts-per-user 10 --seed 1 --db "$url" >"$tmp/seed.log" 2>&1
psql -q "$url" -c "VACUUM ANALYZE" >/dev/null
sh scripts/pg-temp.sh stop "$seed" >/dev/null

# cluster: a copy of the seeded cluster, its postmaster under callgrind; sets $vg, $vgurl, $pm.
cluster() {
    vg="$tmp/vg.$RANDOM"
    mkdir "$vg"
    cp -a "$seed/data" "$vg/data"
    [ "$(id -u)" -ne 0 ] || chown -R postgres: "$vg"
    rm -f "$vg/data/postmaster.pid"
    as_pg valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$vg/cg.%p" "$BIN/postgres" \
        -D "$vg/data" -k "$vg" -c listen_addresses= -c autovacuum=off >"$vg/log" 2>&1 &
    pm=$!
    pids+=("$pm")
    vgurl="postgresql:///agora?host=$vg&user=agora"
    for _ in $(seq 600); do
        psql -q "$vgurl" -c "SELECT 1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "pg_instr.sh: the postmaster under callgrind did not start:" >&2
    tail "$vg/log" >&2
    exit 1
}

# run AGORA KIND N: the instructions of the backends of one server run making N requests of KIND.
run() {
    local port before
    port=$(free_port)
    before=$(ls "$vg"/cg.* 2>/dev/null | sort || true)
    python3 - "$1" "$vgurl" "$port" "$2" "$3" "$tmp/server.log" <<'EOF'
import http.client, json, random, subprocess, sys, time
agora, url, port, kind, n, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
srv = subprocess.Popen([agora, "server", "--db", url, "--listen", "127.0.0.1:%d" % port, "--threads", "1",
                        "--hash-threads", "1", "--workers", "1"], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=300)
for _ in range(1200):
    try:
        c = conn(); c.request("GET", "/health"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except OSError: pass
    time.sleep(0.1)
else:
    sys.exit("pg_instr.sh: the server did not become ready (see %s)" % log)
tokens = []
for i in range(1, 21):
    c = conn()
    c.request("POST", "/api/v1/sessions", body=json.dumps({"username": "user%d" % (i * 37), "password": "password123"}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse(); tokens.append(json.loads(r.read())["token"])
random.seed(1)
c = conn()
for i in range(n):
    h = {"Authorization": "Bearer " + tokens[i % 20]}
    if kind == "home":
        c.request("GET", "/api/v1/timelines/home", headers=h)
    elif kind == "user":
        c.request("GET", "/api/v1/accounts/user%d/posts" % random.randint(1, 1000), headers=h)
    else:
        h["Content-Type"] = "application/json"
        c.request("POST", "/api/v1/posts", body=json.dumps({"text": "post %d" % i}), headers=h)
    r = c.getresponse(); body = r.read()
    if r.status not in (200, 201):
        sys.exit("pg_instr.sh: %s answered %d: %s" % (kind, r.status, body[:200]))
srv.terminate()
srv.wait()
EOF
    # the backends write their counts as they exit, just after the server's connections close
    local files total=0 f
    sleep 3
    files=$(comm -13 <(echo "$before") <(ls "$vg"/cg.* | sort))
    for f in $files; do
        total=$((total + $(grep -m1 -E '^(summary|totals):' "$f" | awk '{print $2}')))
        rm -f "$f"
    done
    echo "$total"
}

for kind in home user compose; do
    # shellcheck disable=SC2086 # OLD is empty or one path
    for bin in $OLD $NEW; do
        cluster
        a=$(run "$bin" "$kind" "$N1")
        b=$(run "$bin" "$kind" "$N2")
        echo "$bin: $kind: $(((b - a) / (N2 - N1))) PostgreSQL instructions per request (Ir $a for $N1, $b for $N2)"
        as_pg "$BIN/pg_ctl" -D "$vg/data" stop -m fast -w -t 120 >/dev/null 2>&1 || kill "$pm" 2>/dev/null || true
        wait "$pm" 2>/dev/null || true
        rm -rf "$vg"
    done
done
