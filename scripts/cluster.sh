#!/bin/sh
# cluster.sh — the platform as separate hosts on one machine: network namespaces on a private
# bridge (issue 12). Needs root, iproute2, PostgreSQL 15 (Debian's postgresql), keepalived, curl.
#
#   sh scripts/cluster.sh [--name NAME] [--dir DIR] [--net A.B.C] [--bin AGORA] COMMAND
#
# Commands:
#   up                 create the hosts and start everything; waits until the virtual address
#                      answers (exit 1, everything stopped again, when it does not in time)
#   down               stop everything, remove the namespaces, veths, bridge and DIR
#   status             each host: address, processes (pid or "dead") and health
#   env                the cluster's facts as NAME=value lines (for scripts and tests)
#   add-web HOST       create web host HOST (web4 ... web9) live and start its `agora server`;
#                      its URL is appended to DIR/lb.ini (a reload keeps it) but the running
#                      balancers learn of it only through `agora ctl add` (see docs/DEPLOY.md)
#   start HOST         start whichever of HOST's processes is not running (after a crash)
#   stop HOST [SVC]    stop HOST's processes (or one: db, server, lb, keepalived) gracefully
#   kill HOST          SIGKILL every process in HOST's namespace: the host crashes (start brings
#                      its processes back; a database node rejoins the pair as the standby)
#   primary            which database host is the pair's primary now (db1 or db2; nothing while
#                      the monitor knows of none)
#   link HOST up|down  plug / unplug HOST's cable (its veth on the bridge)
#   exec HOST CMD...   run CMD inside HOST's namespace
#
# Hosts and addresses (NET defaults to 10.213.0; the script refuses a NET the machine already
# routes): db1 .10 and db2 .11 (the PostgreSQL pair's data nodes), mon .12 (its monitor), the
# virtual address .30, lb1 .31, lb2 .32, web1-web9 .21-.29, client .100. The bridge NAME-br has no
# address and no other port: nothing is routed to or from the rest of the machine or the world.
# Every namespace, veth and the bridge carry NAME (1-8 of [a-z0-9], starting with a letter;
# default "agc"), so runs with different names never collide; DIR defaults to
# /tmp/agora-cluster-NAME (a DIR given to up must be given to every later command too; down
# removes it). Each process runs inside its host's namespace:
#   mon, db1, db2  the database pair: pg_auto_failover (scripts/pg-failover.sh, its state in
#            DIR/pg) with the monitor on mon and the data nodes node1 on db1 (the first primary)
#            and node2 on db2, each on ADDR:5432, synchronous replication, --fast failure
#            detection (a dead primary is replaced within seconds). The nodes admit role agora
#            from NET.0/24 only, with scram-sha-256; its password is in DIR/pgpass (PGPASSFILE of
#            the servers); pg_auto_failover's own roles only from the pair's addresses.
#   webN     agora server --listen ADDR:8080 --db postgresql://agora@DB1:5432,DB2:5432/agora?
#            target_session_attrs=read-write (the primary, wherever it is) --db-replica
#            postgresql://agora@DB2:5432/agora (reads; while db2 is not a standby they go to the
#            primary); its /metrics on 127.0.0.1:9100, inside the host only
#   lbN      agora lb --config DIR/lb.ini (the same file on both; clients on :8000 of every
#            address of the host, the virtual one included; admin API on ADDR:8404, token in
#            DIR/admin.token) and keepalived (DIR/lbN/keepalived.conf, VRRP with unicast peers,
#            check script deploy/agora-lb-check, copied to DIR/check-lb.sh)
# Environment: AGORA_CLUSTER_PG_OPTS (extra "-c name=value" settings for the data nodes, e.g.
# fsync=off in tests), AGORA_CLUSTER_SERVER_OPTS (extra flags for every agora server), PGBIN
# (default /usr/lib/postgresql/15/bin).
set -eu

NAME=agc
DIR=
NET=
BIN=
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WEB_PORT=8080
LB_PORT=8000
ADMIN_PORT=8404
METRICS_PORT=9100
PG_PORT=5432

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

# die with the last lines of a log (an up that fails removes DIR, and its logs with it).
die_log() {
    echo "cluster.sh: $2; the end of $1:" >&2
    tail -n 8 "$1" 2>/dev/null | sed 's/^/    /' >&2
    exit 1
}

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'
    exit "${1:-2}"
}

root=$(cd "$(dirname "$0")/.." && pwd)
while [ $# -gt 0 ]; do
    case $1 in
    --name) NAME=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --net) NET=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    -h | --help) usage 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || usage
CMD=$1
shift
echo "$NAME" | grep -Eq '^[a-z][a-z0-9]{0,7}$' || die "--name: 1-8 of [a-z0-9], starting with a letter"
DIR=${DIR:-/tmp/agora-cluster-$NAME}
case $DIR in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
BR=$NAME-br
MARK=$DIR/.agora-cluster

# Facts of an existing cluster come from its marker file, so later commands need only --name.
if [ -f "$MARK" ]; then
    # shellcheck disable=SC1090
    . "$MARK"
fi
NET=${NET:-10.213.0}
BIN=${BIN:-$root/build/agora}
echo "$NET" | grep -Eq '^(10\.[0-9]{1,3}|172\.(1[6-9]|2[0-9]|3[01])|192\.168)\.[0-9]{1,3}$' ||
    die "--net: the first three octets of a private /24 (10.x.y, 172.16-31.y, 192.168.y), e.g. 10.213.0"

ns() { echo "$NAME-$1"; }

# The address of a host (the last octet after NET).
host_octet() {
    case $1 in
    db1) echo 10 ;;
    db2) echo 11 ;;
    mon) echo 12 ;;
    vip) echo 30 ;;
    lb1) echo 31 ;;
    lb2) echo 32 ;;
    web[1-9]) echo $((20 + ${1#web})) ;;
    client) echo 100 ;;
    *) die "unknown host $1 (mon, db1, db2, web1-web9, lb1, lb2, client)" ;;
    esac
}
addr() { echo "$NET.$(host_octet "$1")"; }
VIP=$(addr vip)

# Hosts of the cluster, in start order (DIR/hosts, one name a line).
hosts() { cat "$DIR/hosts" 2>/dev/null || true; }
is_host() { hosts | grep -qx "$1"; }
# The services of a host, in start order.
services() {
    case $1 in
    db* | mon) echo db ;;
    web*) echo server ;;
    lb*) echo "lb keepalived" ;;
    *) ;;
    esac
}

pidfile() { echo "$DIR/run/$1.$2.pid"; }
# The pg_auto_failover part on a database host (pg-failover.sh's names).
pg_part() {
    case $1 in db1) echo node1 ;; db2) echo node2 ;; mon) echo monitor ;; *) die "$1 is no database host" ;; esac
}
logfile() { # the database parts: pg_autoctl's log (PostgreSQL's own is under DIR/pg/PART/log)
    if [ "$2" = db ]; then echo "$DIR/pg/$(pg_part "$1").log"; else echo "$DIR/log/$1.$2.log"; fi
}

# The pid of HOST's SVC when it runs inside HOST's namespace, else nothing.
running_pid() {
    if [ "$2" = db ]; then
        f=$DIR/pg/$(pg_part "$1")/postmaster.pid
    else
        f=$(pidfile "$1" "$2")
    fi
    [ -f "$f" ] || return 0
    p=$(head -n 1 "$f")
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 0
    [ "$(ip netns identify "$p" 2>/dev/null)" = "$(ns "$1")" ] && echo "$p"
    return 0
}

# Runs "$@" in HOST's namespace in the background, in a session of its own, logging to the
# service's log; its pid (that of the program itself: every step execs) goes to the pid file,
# written from inside the namespace (so running_pid never sees it half-way).
start_bg() {
    h=$1 svc=$2
    shift 2
    f=$(pidfile "$h" "$svc")
    rm -f "$f"
    # shellcheck disable=SC2016 # $$ and $@ are the inner shell's
    setsid ip netns exec "$(ns "$h")" sh -c 'echo $$ >"$0"; exec "$@"' "$f" "$@" \
        >>"$(logfile "$h" "$svc")" 2>&1 </dev/null &
    i=0
    while [ ! -s "$f" ] && [ $i -lt 500 ]; do # a busy machine may take a while to fork
        sleep 0.02
        i=$((i + 1))
    done
    [ -s "$f" ] || die "$svc on $h did not start within 10 s"
}

# Waits up to $1 seconds for "$2..." to succeed.
wait_for() {
    t=$(($1 * 10))
    shift
    while [ $t -gt 0 ]; do
        r=0
        ("$@") >/dev/null 2>&1 || r=$?
        [ $r -eq 0 ] && return 0
        [ $r -eq 2 ] && return 1 # the thing waited for is gone
        sleep 0.1
        t=$((t - 1))
    done
    return 1
}

in_ns() {
    h=$1
    shift
    ip netns exec "$(ns "$h")" "$@"
}

http_ok() { # HOST URL: a 2xx from URL, asked from inside HOST
    in_ns "$1" curl -fsS -o /dev/null -m 2 "$2"
}

# HOST's SVC answers URL with a 2xx; a process that exited makes the wait end (exit 2).
up_and_ok() {
    [ -n "$(running_pid "$1" "$2")" ] || exit 2
    http_ok "$1" "$3"
}

# ---- the network ----

net_up() {
    ip link show "$BR" >/dev/null 2>&1 || {
        ip link add "$BR" type bridge
        # No address on the bridge: the root namespace takes no part in the cluster's subnet.
        (echo 1 >"/proc/sys/net/ipv6/conf/$BR/disable_ipv6") 2>/dev/null || true
        ip link set "$BR" up
    }
}

# Creates HOST's namespace, its cable (veth NAME-HOST on the bridge, eth0 inside) and address.
host_net_up() {
    h=$1 n=$(ns "$1")
    ip netns add "$n"
    ip link add "$n" type veth peer name eth0 netns "$n"
    ip link set "$n" master "$BR"
    (echo 1 >"/proc/sys/net/ipv6/conf/$n/disable_ipv6") 2>/dev/null || true
    ip link set "$n" up
    in_ns "$h" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6' 2>/dev/null || true
    in_ns "$h" ip link set lo up
    in_ns "$h" ip addr add "$(addr "$h")/24" dev eth0
    in_ns "$h" ip link set eth0 up
    echo "$h" >>"$DIR/hosts"
}

# ---- the database pair: mon, db1, db2 ----

# pg_auto_failover through scripts/pg-failover.sh (DIR/pg; as root it runs everything as the
# postgres user), each part under the prefix "ip netns exec NAME-HOST", so each runs on its host.
# DIR/pg belongs to the postgres user (mode 0700): DIR is 0711 for it to pass through.
pgf() { sh "$root/scripts/pg-failover.sh" "$@"; }

# Creates the pair (monitor, node1 primary, node2 synchronous standby) and waits until it is
# settled; role agora's password goes to DIR/pgpass (mode 0600; the web servers' PGPASSFILE).
db_pair_up() {
    [ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 is not installed ($PGBIN; Debian's postgresql)"
    id postgres >/dev/null 2>&1 || die "no postgres user (Debian's postgresql package creates it)"
    # its output ends with the URL, password included: for root's eyes only
    (umask 077 && : >"$DIR/log/pg-up.log")
    # shellcheck disable=SC2086 # AGORA_CLUSTER_PG_OPTS: "-c name=value" words
    if ! pgf up "$DIR/pg" --fast --clients "$NET.0/24" \
        --monitor "$(addr mon):$PG_PORT" --node1 "$(addr db1):$PG_PORT" --node2 "$(addr db2):$PG_PORT" \
        --prefix-monitor "ip netns exec $(ns mon)" --prefix-node1 "ip netns exec $(ns db1)" \
        --prefix-node2 "ip netns exec $(ns db2)" ${AGORA_CLUSTER_PG_OPTS:-} >"$DIR/log/pg-up.log" 2>&1; then
        # the first packets between two hosts: a host firewall that filters bridged traffic stops here
        if ! in_ns db1 "$PGBIN/pg_isready" -q -t 2 -h "$(addr mon)" -p $PG_PORT; then
            die "db1 cannot reach the monitor on mon across the bridge: is bridged traffic filtered" \
                "on this machine (sysctl net.bridge.bridge-nf-call-iptables = 1 and a FORWARD policy of" \
                "DROP, e.g. Docker's)? Allow forwarding on $BR, or set that sysctl to 0"
        fi
        die_log "$DIR/log/pg-up.log" "the database pair did not come up"
    fi
    pw=$(cat "$DIR/pg/agora.password")
    (umask 077 && printf '%s:%s:agora:agora:%s\n' "$(addr db1)" $PG_PORT "$pw" "$(addr db2)" $PG_PORT "$pw" >"$DIR/pgpass")
}

# The web servers' URLs: the primary wherever it is, and the replica (db2, the first standby).
db_url() {
    echo "postgresql://agora@$(addr db1):$PG_PORT,$(addr db2):$PG_PORT/agora?target_session_attrs=read-write&connect_timeout=2"
}
db_replica_url() { echo "postgresql://agora@$(addr db2):$PG_PORT/agora?connect_timeout=2"; }

# The database host whose node the monitor has settled as the writable one (db1, db2), else
# nothing: "primary" with its standby, "wait_primary" while it has none (after a failover, until
# the old primary rejoins: writes go on, unreplicated), "single" before the standby first joined.
db_primary() {
    pgf status "$DIR/pg" --json 2>/dev/null | python3 -c '
import json, sys
try:
    nodes = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for n in nodes:
    if n["current_group_state"] == n["assigned_group_state"] in ("primary", "wait_primary", "single"):
        print({"node1": "db1", "node2": "db2"}.get(n["nodename"], ""))
' 2>/dev/null | head -n 1
}

# Starts database host HOST's part (its pg_autoctl, which starts its PostgreSQL) when not running.
db_start() {
    [ -n "$(running_pid "$1" db)" ] && return 0
    pgf start "$DIR/pg" "$(pg_part "$1")" || die_log "$(logfile "$1" db)" "the database on $1 did not start"
}

db_stop() {
    [ -f "$DIR/pg/cluster.env" ] || return 0
    pgf stop "$DIR/pg" "$(pg_part "$1")" || true
}

# ---- web hosts ----

# Starts HOST's agora server and waits until it is healthy; with a second argument "nowait", only
# starts it (server_wait later).
server_start() {
    h=$1
    [ -n "$(running_pid "$h" server)" ] && return 0
    # The balancers' own addresses are the only proxies whose X-Forwarded-For is believed.
    # shellcheck disable=SC2086
    start_bg "$h" server env PGPASSFILE="$DIR/pgpass" "$BIN" server --listen "$(addr "$h"):$WEB_PORT" \
        --db "$(db_url)" --db-replica "$(db_replica_url)" --served-by "$h" --web "$root/web" \
        --trusted-proxy "$(addr lb1),$(addr lb2)" --metrics-listen "127.0.0.1:$METRICS_PORT" \
        ${AGORA_CLUSTER_SERVER_OPTS:-}
    [ "${2:-}" = nowait ] || server_wait "$h"
}

server_wait() {
    wait_for 30 up_and_ok "$1" server "http://$(addr "$1"):$WEB_PORT/health" ||
        die_log "$(logfile "$1" server)" "agora server on $1 is not healthy (30 s) or exited"
}

# ---- balancer hosts ----

write_lb_config() {
    token=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    (umask 077 && echo "$token" >"$DIR/admin.token")
    (
        umask 077
        cat <<EOF
# The balancers' configuration, the same file for lb1 and lb2 (cluster.sh). Each host adds only
# --admin-listen with its own address. [backends] comes last: add-web appends to it.
[lb]
listen = 0.0.0.0:$LB_PORT      ; every address of the host: its own and the virtual one
workers = 1
policy = round-robin
stats_access = loopback        ; /stats for the keepalived check (127.0.0.1) only

[health]
interval = 1s
timeout = 1s
rise = 2
fall = 2
slow_start = 5s

[retries]
retries = 2

[timeouts]
backend_connect = 1s
backend_response = 10s
shutdown = 2s

[limits]
max_conns_per_ip = 0

[admin]
token = $token

[backends]
EOF
        for w in web1 web2 web3; do
            echo "server = http://$(addr "$w"):$WEB_PORT"
        done
    ) >"$DIR/lb.ini"
    # The check shipped in deploy/, so that what the tests run is what is deployed.
    cp "$root/deploy/agora-lb-check" "$DIR/check-lb.sh"
    chmod 755 "$DIR/check-lb.sh"
}

write_keepalived_config() {
    h=$1 peer=lb2 prio=150
    [ "$h" = lb2 ] && peer=lb1 prio=100
    mkdir -p "$DIR/$h"
    cat >"$DIR/$h/keepalived.conf" <<EOF
# keepalived of $h (cluster.sh): VRRP for the balancers' virtual address $VIP; see
# deploy/keepalived.conf.example for the commented version.
global_defs {
    router_id ${NAME}_$h
    script_user nobody nogroup
    enable_script_security
    vrrp_version 3
}
vrrp_script agora_lb {
    script "$DIR/check-lb.sh $LB_PORT"
    interval 1
    timeout 1
    fall 2
    rise 2
}
vrrp_instance agora {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int 0.5
    unicast_src_ip $(addr "$h")
    unicast_peer {
        $(addr "$peer")
    }
    virtual_ipaddress {
        $VIP/24 dev eth0
    }
    track_script {
        agora_lb
    }
}
EOF
}

lb_start() {
    h=$1
    if [ -z "$(running_pid "$h" lb)" ]; then
        start_bg "$h" lb "$BIN" lb --config "$DIR/lb.ini" --admin-listen "$(addr "$h"):$ADMIN_PORT"
        wait_for 15 up_and_ok "$h" lb "http://127.0.0.1:$LB_PORT/health" ||
            die_log "$(logfile "$h" lb)" "agora lb on $h does not answer (15 s) or exited"
    fi
}

keepalived_start() {
    h=$1
    [ -n "$(running_pid "$h" keepalived)" ] && return 0
    [ -f "$DIR/$h/keepalived.conf" ] || write_keepalived_config "$h"
    command -v keepalived >/dev/null || die "keepalived is not installed (Debian's keepalived)"
    # -n: stay in the foreground (our pid file holds the parent); -P: VRRP only, no LVS.
    start_bg "$h" keepalived keepalived -n -l -D -P -f "$DIR/$h/keepalived.conf" \
        -p "$DIR/$h/keepalived.pid" -r "$DIR/$h/vrrp.pid" -c "$DIR/$h/checkers.pid"
}

# Which balancer holds the virtual address (none, lb1, lb2 or "lb1 lb2").
vip_holder() {
    out=
    for h in lb1 lb2; do
        if in_ns "$h" ip -4 -o addr show dev eth0 2>/dev/null | grep -q " $VIP/"; then
            out="${out:+$out }$h"
        fi
    done
    echo "${out:-none}"
}
vip_held() { case $(vip_holder) in lb1 | lb2) return 0 ;; *) return 1 ;; esac }

# ---- per host ----

svc_start() {
    case $2 in
    db) db_start "$1" ;;
    server) server_start "$1" ;;
    lb) lb_start "$1" ;;
    keepalived) keepalived_start "$1" ;;
    esac
}

svc_stop() {
    h=$1 svc=$2
    if [ "$svc" = db ]; then
        db_stop "$h"
        return 0
    fi
    p=$(running_pid "$h" "$svc")
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$p" 2>/dev/null || true
    rm -f "$(pidfile "$h" "$svc")"
}

host_start() {
    for s in $(services "$1"); do
        svc_start "$1" "$s"
    done
}

host_stop() {
    for s in $(services "$1" | tr ' ' '\n' | sed -n '1!G;h;$p'); do
        svc_stop "$1" "$s"
    done
}

# Ends whatever still runs in the namespaces "$@" (a process the cluster did not start has no
# business there: TERM, then KILL after 3 s), then removes them; their veths go with them.
ns_remove() {
    pids=
    for n in "$@"; do pids="$pids $(ip netns pids "$n" 2>/dev/null || true)"; done
    if case $pids in *[0-9]*) true ;; *) false ;; esac then
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || true
        i=0
        while [ $i -lt 30 ]; do
            alive=
            for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
            [ -z "$alive" ] && break
            sleep 0.1
            i=$((i + 1))
        done
        for n in "$@"; do # only what is still in them (a pid may have been reused meanwhile)
            # shellcheck disable=SC2046
            kill -KILL $(ip netns pids "$n" 2>/dev/null || true) 2>/dev/null || true
        done
    fi
    for n in "$@"; do ip netns del "$n" 2>/dev/null || true; done
}

# ---- commands ----

cmd_down() {
    # Every process but PostgreSQL at once (each may take its graceful-stop time), then PostgreSQL.
    pids=
    for h in $(hosts); do
        for s in $(services "$h"); do
            [ "$s" = db ] && continue
            p=$(running_pid "$h" "$s")
            [ -n "$p" ] && kill -TERM "$p" 2>/dev/null && pids="$pids $p"
        done
    done
    i=0
    while [ $i -lt 50 ]; do
        alive=
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.1
        i=$((i + 1))
    done
    for p in $pids; do # still ours (in one of our namespaces), not a reused pid
        case $(ip netns identify "$p" 2>/dev/null) in "$NAME"-*) kill -KILL "$p" 2>/dev/null || true ;; esac
    done
    # the database pair: its three parts at once, each gracefully (immediate when that fails)
    if [ -f "$DIR/pg/cluster.env" ]; then
        for part in node2 node1 monitor; do pgf stop "$DIR/pg" $part & done
        wait
    fi
    # (and what an interrupted up left: a pg_autoctl create of a part)
    if [ -d "$DIR/pg" ]; then pgf down "$DIR/pg" || true; fi
    # Whatever the state file says, every namespace, veth and the bridge of this NAME go.
    # shellcheck disable=SC2046
    ns_remove $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NAME-" || true)
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^$NAME-" || true); do
        ip link del "$l" 2>/dev/null || true
    done
    if [ -f "$MARK" ]; then
        rm -rf "$DIR"
    elif [ -d "$DIR" ]; then
        # Empty: what a pg_autoctl of a cluster whose directory was lost made again on its way out.
        rmdir "$DIR" 2>/dev/null ||
            echo "cluster.sh: $DIR is not a cluster's directory (no .agora-cluster): left as it is" >&2
    fi
}

cmd_up() {
    [ -f "$MARK" ] && die "cluster $NAME exists ($DIR): down first"
    [ -x "$BIN" ] || die "$BIN not found: make build"
    if [ -n "$(ip netns list | grep "^$NAME-" || true)" ] || ip link show "$BR" >/dev/null 2>&1; then
        die "namespaces or a bridge named $NAME-* exist already: cluster.sh --name $NAME down"
    fi
    # The cluster's hosts have no route out, so a subnet in use elsewhere could not leak; but a
    # subnet this machine already routes (besides the default route) would confuse whoever looks.
    if [ -n "$(ip -4 route show match "$NET.0/24" | grep -v '^default' || true)" ]; then
        die "$NET.0/24 is routed on this machine already ($(ip -4 route show match "$NET.0/24" | grep -v '^default' | head -n 1)): pick another with --net"
    fi
    if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "$DIR exists and is not empty"
    fi
    mkdir -p "$DIR/run" "$DIR/log"
    chmod 711 "$DIR" # the postgres user passes through to DIR/pg, reads nothing else
    printf 'NET=%s\nBIN=%s\n' "$NET" "$BIN" >"$MARK"
    : >"$DIR/hosts"
    trap 'echo "cluster.sh: up failed, taking it down" >&2; cmd_down' EXIT
    trap 'exit 1' INT TERM HUP # interrupted: the EXIT trap takes down what was made
    net_up
    for h in mon db1 db2 web1 web2 web3 lb1 lb2 client; do
        host_net_up "$h"
    done
    write_lb_config
    # The balancers first: they need nothing else to start, and their keepalived pair settles while
    # the database pair is made (the address is taken once a web server is up: the check script).
    lb_start lb1
    lb_start lb2
    keepalived_start lb1
    keepalived_start lb2
    db_pair_up
    for h in web1 web2 web3; do
        server_start "$h" nowait
    done
    for h in web1 web2 web3; do
        server_wait "$h"
    done
    wait_for 20 vip_held || die_log "$(logfile lb1 keepalived)" "no balancer took the virtual address $VIP within 20 s"
    wait_for 10 http_ok client "http://$VIP:$LB_PORT/health" || die "the client cannot reach $VIP"
    trap - EXIT INT TERM HUP
    echo "cluster $NAME up: virtual address $VIP:$LB_PORT (held by $(vip_holder)), state in $DIR"
}

cmd_status() {
    [ -f "$MARK" ] || die "no cluster $NAME ($DIR)"
    printf '%-8s %-14s %-24s %s\n' HOST ADDRESS PROCESSES HEALTH
    for h in $(hosts); do
        procs='' health=''
        for s in $(services "$h"); do
            p=$(running_pid "$h" "$s")
            procs="${procs:+$procs }$s:${p:-dead}"
        done
        case $h in
        db* | mon)
            if in_ns "$h" "$PGBIN/pg_isready" -q -t 2 -h "$(addr "$h")" -p $PG_PORT; then health=accepting; else health=down; fi
            [ "$h" != mon ] && [ "$h" = "$(db_primary)" ] && health="$health, primary"
            ;;
        web*) if http_ok "$h" "http://$(addr "$h"):$WEB_PORT/health"; then health=ok; else health=down; fi ;;
        lb*)
            health=down
            if http_ok "$h" "http://127.0.0.1:$LB_PORT/health"; then
                health=ok
                in_ns "$h" sh "$DIR/check-lb.sh" || health="ok (no server up)"
            fi
            case " $(vip_holder) " in *" $h "*) health="$health, holds $VIP" ;; esac
            ;;
        client) health=- ;;
        esac
        printf '%-8s %-14s %-24s %s\n' "$h" "$(addr "$h")" "${procs:--}" "$health"
    done
    echo "virtual address $VIP:$LB_PORT held by $(vip_holder)"
    echo "database primary: $(db_primary | grep . || echo none)"
}

cmd_env() {
    [ -f "$MARK" ] || die "no cluster $NAME ($DIR)"
    echo "NAME=$NAME"
    echo "DIR=$DIR"
    echo "NET=$NET"
    echo "BRIDGE=$BR"
    echo "VIP=$VIP"
    echo "LB_PORT=$LB_PORT"
    echo "WEB_PORT=$WEB_PORT"
    echo "ADMIN_PORT=$ADMIN_PORT"
    echo "METRICS_PORT=$METRICS_PORT"
    echo "ADMIN_TOKEN_FILE=$DIR/admin.token"
    echo "DB_URL=$(db_url)"
    echo "DB_REPLICA_URL=$(db_replica_url)"
    echo "PG_DIR=$DIR/pg"
    echo "PG_PORT=$PG_PORT"
    echo "PGPASSFILE=$DIR/pgpass"
    echo "VIP_HOLDER=$(vip_holder | tr ' ' ',')"
    for h in $(hosts); do
        echo "HOST_$h=$(ns "$h") $(addr "$h")"
    done
}

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
case $CMD in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
add-web)
    [ $# -eq 1 ] || die "usage: add-web HOST (web4 ... web9)"
    case $1 in web[1-9]) ;; *) die "add-web: a web host is web1 ... web9" ;; esac
    is_host "$1" && die "$1 exists already"
    host_octet "$1" >/dev/null
    host_net_up "$1"
    server_start "$1"
    echo "server = http://$(addr "$1"):$WEB_PORT" >>"$DIR/lb.ini"
    echo "$1 up: http://$(addr "$1"):$WEB_PORT (add it to the balancers with agora ctl add)"
    ;;
start)
    if [ $# -ne 1 ] || ! is_host "$1"; then die "usage: start HOST (one of: $(hosts | tr '\n' ' '))"; fi
    host_start "$1"
    ;;
stop)
    if [ $# -lt 1 ] || ! is_host "$1"; then die "usage: stop HOST [SERVICE]"; fi
    if [ $# -ge 2 ]; then svc_stop "$1" "$2"; else host_stop "$1"; fi
    ;;
link)
    if [ $# -ne 2 ] || ! is_host "$1"; then die "usage: link HOST up|down"; fi
    case $2 in up | down) ip link set "$(ns "$1")" "$2" ;; *) die "usage: link HOST up|down" ;; esac
    ;;
kill)
    if [ $# -ne 1 ] || ! is_host "$1"; then die "usage: kill HOST"; fi
    # shellcheck disable=SC2046
    kill -KILL $(ip netns pids "$(ns "$1")") 2>/dev/null || true
    i=0
    while [ -n "$(ip netns pids "$(ns "$1")")" ] && [ $i -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    ;;
primary) db_primary ;;
exec)
    if [ $# -lt 2 ] || ! is_host "$1"; then die "usage: exec HOST COMMAND..."; fi
    h=$1
    shift
    exec ip netns exec "$(ns "$h")" "$@"
    ;;
*) usage ;;
esac
