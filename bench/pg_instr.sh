#!/usr/bin/env bash
# bench/pg_instr.sh — instructions PostgreSQL executes per API request of `agora server`, counted
# by valgrind's callgrind in the database's backend processes: repeatable whatever else the
# (shared, noisy) machine is doing, so two builds' SQL can be compared exactly where the social
# benchmark's throughput ratio would drown in noise.
#
#   bash bench/pg_instr.sh [OLD_AGORA] [NEW_AGORA]     (default NEW: build/agora; OLD optional)
#   PG_INSTR_SERVER=1 bash bench/pg_instr.sh ...       (the agora server's instructions too)
#   PG_INSTR_KINDS="home" bash bench/pg_instr.sh ...   (some request types only)
#   PG_INSTR_PG_SETTINGS="shared_preload_libraries=pg_stat_statements" bash bench/pg_instr.sh ...
#                                                      (-c settings for the postmaster counted)
#
# A private cluster (scripts/pg-temp.sh) is seeded as bench/social.sh seeds its 1 000-user graph
# (agora seed --users 1000 --posts-per-user 10 --seed 1, VACUUM ANALYZE), given 20 sessions whose
# tokens the script knows (rows as a log-in writes them: the token's BLAKE2b hash, last used now;
# logging in through the API would hash 20 passwords, minutes under valgrind) and stopped; its
# postmaster is started again under callgrind (--trace-children: every backend is counted, and
# writes its counts when it exits). For each binary and request type (home, user page, compose):
# `agora server --threads 1 --workers 1` on it, then one keep-alive client sends N1 requests (home
# and compose with those tokens, user pages anonymously: as bench/social.lua) and, in a second
# run, N2; the server is stopped, which ends its backends, and the
# instructions of the backends that ended are summed. Per request: (Ir(N2) - Ir(N1)) / (N2 - N1),
# which cancels connecting and preparing statements. The background processes (WAL writer,
# checkpointer) are not counted: a compose's commit flush is not in its figure. Composes add
# posts, so each type runs on a fresh copy of the seeded cluster.
#
# With PG_INSTR_SERVER=1 the server itself runs under callgrind too (all its threads: the event
# loop, the handler thread, readiness), and its instructions per request are printed the same way
# on a second line: the agora half of a request on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${PG_INSTR_N1:-50}
N2=${PG_INSTR_N2:-350}
SERVER=${PG_INSTR_SERVER:-0}
KINDS=${PG_INSTR_KINDS:-home user compose}
PGSET=()
for s in ${PG_INSTR_PG_SETTINGS:-}; do PGSET+=(-c "$s"); done
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
# 20 sessions of users 37, 74, ... 740: their tokens into $tmp/tokens, their rows into the cluster
python3 - "$tmp/tokens" >"$tmp/sessions.sql" <<'EOF'
import base64, hashlib, sys, time
now = int(time.time() * 1000)
with open(sys.argv[1], "w") as out:
    for i in range(1, 21):
        raw = hashlib.sha256(b"pg_instr %d" % i).digest()
        out.write(base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "\n")
        print("INSERT INTO sessions(token_hash, account_id, created_at, last_used_at) SELECT '\\x%s', id, %d, %d"
              " FROM accounts WHERE username = 'user%d';" % (hashlib.blake2b(raw, digest_size=32).hexdigest(), now, now,
                                                             i * 37))
EOF
psql -q -v ON_ERROR_STOP=1 "$url" -f "$tmp/sessions.sql" >/dev/null
sh scripts/pg-temp.sh stop "$seed" >/dev/null

# cluster: a copy of the seeded cluster, its postmaster under callgrind; sets $vg, $vgurl, $pm.
cluster() {
    vg="$tmp/vg.$RANDOM"
    mkdir "$vg"
    cp -a "$seed/data" "$vg/data"
    [ "$(id -u)" -ne 0 ] || chown -R postgres: "$vg"
    rm -f "$vg/data/postmaster.pid"
    as_pg valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$vg/cg.%p" "$BIN/postgres" \
        -D "$vg/data" -k "$vg" -c listen_addresses= -c autovacuum=off "${PGSET[@]}" >"$vg/log" 2>&1 &
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

# run AGORA KIND N: the instructions of the backends of one server run making N requests of KIND;
# with SERVER=1, then (on the same line) those of the server.
run() {
    local port before srvout="$tmp/srv.cg" srvcg=()
    port=$(free_port)
    before=$(ls "$vg"/cg.* 2>/dev/null | sort || true)
    rm -f "$srvout"
    [ "$SERVER" = 0 ] || srvcg=(valgrind --tool=callgrind --callgrind-out-file="$srvout")
    python3 - "$1" "$vgurl" "$port" "$2" "$3" "$tmp/server.log" "$tmp/tokens" "${srvcg[@]}" <<'EOF'
import http.client, json, random, subprocess, sys, time
agora, url, port, kind, n, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
tokens = open(sys.argv[7]).read().split()
srv = subprocess.Popen(sys.argv[8:] + [agora, "server", "--db", url, "--listen", "127.0.0.1:%d" % port, "--threads", "1",
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
random.seed(1)
c = conn()
for i in range(n):
    h = {"Authorization": "Bearer " + tokens[i % 20]}
    if kind == "home":
        c.request("GET", "/api/v1/timelines/home", headers=h)
    elif kind == "user": # anonymous, as bench/social.lua sends them
        c.request("GET", "/api/v1/accounts/user%d/posts" % random.randint(1, 1000))
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
    if [ "$SERVER" = 0 ]; then
        echo "$total"
    else
        echo "$total $(grep -m1 '^summary:' "$srvout" | awk '{print $2}')"
    fi
}

for kind in $KINDS; do
    # shellcheck disable=SC2086 # OLD is empty or one path
    for bin in $OLD $NEW; do
        cluster
        out1=$(run "$bin" "$kind" "$N1") # (an assignment: a failed run stops the script)
        out2=$(run "$bin" "$kind" "$N2")
        read -r a sa <<<"$out1"
        read -r b sb <<<"$out2"
        echo "$bin: $kind: $(((b - a) / (N2 - N1))) PostgreSQL instructions per request (Ir $a for $N1, $b for $N2)"
        [ "$SERVER" = 0 ] ||
            echo "$bin: $kind: $(((sb - sa) / (N2 - N1))) agora server instructions per request (Ir $sa for $N1, $sb for $N2)"
        as_pg "$BIN/pg_ctl" -D "$vg/data" stop -m fast -w -t 120 >/dev/null 2>&1 || kill "$pm" 2>/dev/null || true
        wait "$pm" 2>/dev/null || true
        rm -rf "$vg"
    done
done
