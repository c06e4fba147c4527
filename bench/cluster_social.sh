#!/bin/sh
# bench/cluster_social.sh — the social mix (bench/social.lua) through the namespace cluster
# (scripts/cluster.sh): wrk on the client host against the balancers' virtual address, three web
# hosts, the pg_auto_failover pair (synchronous replication; reads on the standby, --db-replica).
# Needs root (network namespaces), as scripts/cluster.sh does.
#
#   sh bench/cluster_social.sh [USERS [SECONDS [CONNECTIONS]]]     (defaults 1000 10 64)
#
# Steps: cluster.sh --name agbench up (fsync on: the durable defaults, unlike the tests); agora
# seed --users USERS --force into the primary (from web1, with the servers' PGPASSFILE); VACUUM
# ANALYZE; bench/social_login.py logs 200 seeded users in through the virtual address; wrk
# -t1 -cCONNECTIONS, a 2 s warm-up thrown away, then SECONDS measured: `wrk -t1 -cC -dSs --timeout
# 5s --latency -s bench/social.lua http://VIP:8000 -- sessions.lua 1 60,30,10`, run inside the
# client namespace. Prints the wrk output and bench/social_stats.py's one-line summary; the
# cluster is taken down at the end (also on failure). Raw files in build/bench/cluster-social/.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
USERS=${1:-1000}
SECS=${2:-10}
CONNS=${3:-64}
NAME=agbench
OUT=$root/build/bench/cluster-social
C="sh $root/scripts/cluster.sh --name $NAME"
[ "$(id -u)" -eq 0 ] || { echo "cluster_social.sh: needs root (network namespaces)" >&2; exit 1; }
mkdir -p "$OUT"
trap '$C down >/dev/null 2>&1 || true' EXIT
trap 'exit 1' INT TERM HUP
AGORA_CLUSTER_SERVER_OPTS="--signup-limit off" $C up
eval "$($C env | grep -E '^(DIR|VIP|LB_PORT|DB_URL|PG_DIR|PG_PORT)=' | sed "s/=\(.*\)/='\1'/")"
$C exec web1 env PGPASSFILE="$DIR/pgpass" "$root/build/agora" seed --users "$USERS" --posts-per-user 10 \
    --seed 1 --db "$DB_URL" --force >"$OUT/seed.log" 2>&1 || { tail "$OUT/seed.log" >&2; exit 1; }
primary=$($C primary)
sock=$PG_DIR/sock-$(case $primary in db1) echo node1 ;; *) echo node2 ;; esac)
runuser -u postgres -- psql -X -q -h "$sock" -p "$PG_PORT" -d agora -c "VACUUM ANALYZE" >/dev/null
url="http://$VIP:$LB_PORT"
sessions=$DIR/sessions.lua
$C exec client python3 "$root/bench/social_login.py" --url "$url" --users "$USERS" --count 200 --seed 1 \
    --parallel 3 --out "$sessions" >"$OUT/login.log" 2>&1 || { tail "$OUT/login.log" >&2; exit 1; }
cp "$sessions" "$OUT/sessions.lua"
$C exec client wrk -t1 -c"$CONNS" -d2s --timeout 5s --latency -s "$root/bench/social.lua" "$url" -- \
    "$sessions" 1 60,30,10 >"$OUT/warmup.wrk.txt" 2>&1
echo "command: wrk -t1 -c$CONNS -d${SECS}s --timeout 5s --latency -s bench/social.lua $url -- sessions.lua 1 60,30,10 (in the client namespace)"
$C exec client wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 5s --latency -s "$root/bench/social.lua" "$url" -- \
    "$sessions" 1 60,30,10 >"$OUT/measure.wrk.txt" 2>&1
cat "$OUT/measure.wrk.txt"
python3 "$root/bench/social_stats.py" parse "$OUT/measure.wrk.txt"
for w in web1 web2 web3; do
    echo "$w: $($C exec "$w" curl -fsS http://127.0.0.1:9100/metrics | grep '^agora_server_reads_total' | tr '\n' ' ')"
done
