#!/bin/sh
# A PostgreSQL pair that survives its primary: pg_auto_failover (Debian's
# postgresql-15-auto-failover) with a monitor and two data nodes, synchronous replication.
#
#   pg-failover.sh up DIR [options]     create (first time) and start the three parts; print the URL
#   pg-failover.sh url DIR              print the multi-host URL for agora (--db)
#   pg-failover.sh status DIR [--json]  pg_autoctl show state (the monitor's view of the nodes)
#   pg-failover.sh primary DIR          print the name of the current primary (node1 or node2), if any
#   pg-failover.sh failover DIR         a planned switchover (pg_autoctl perform failover), waits for it
#   pg-failover.sh start|stop DIR PART  start or stop one part's pg_autoctl (monitor, node1, node2)
#   pg-failover.sh kill DIR PART        SIGKILL the part's pg_autoctl, PostgreSQL and backends (one
#                                       process group): the host dies, as far as the others can tell
#   pg-failover.sh down DIR             stop everything and remove DIR
#
# Options of up (only the first up of a DIR uses them; later commands read DIR/cluster.env):
#   --monitor ADDR[:PORT] --node1 ADDR[:PORT] --node2 ADDR[:PORT]
#        where each part listens (TCP on that address only); default 127.0.0.1 and a free port
#   --prefix-monitor CMD --prefix-node1 CMD --prefix-node2 CMD
#        a command put in front of everything run for that part, e.g. "ip netns exec db1"
#   --clients CIDR      the addresses agora's servers connect from (pg_hba.conf; default: any,
#                       still password-authenticated)
#   --connect-timeout S libpq connect_timeout in the printed URL (default 2: a host that does
#                       not answer costs at most that long before libpq tries the next)
#   --fast              short failure-detection timeouts on the monitor, for tests (see DEPLOY.md)
# An up that fails leaves what it started running, for its logs: down stops it.
#   -c name=value       a PostgreSQL setting for both data nodes (e.g. -c fsync=off)
#
# Layout: DIR/monitor, DIR/node1, DIR/node2 are the PGDATA directories; DIR/<part>.log the
# pg_autoctl logs (PostgreSQL's own under PGDATA/log); DIR/sock-<part> the Unix sockets;
# DIR/xdg the pg_autoctl state and configuration (XDG_* point there: nothing is written to the
# postgres user's home); DIR/cluster.env the addresses, ports and prefixes.
#
# Authentication: no trust over TCP. agora's role "agora" has a generated password (in the
# printed URL and DIR/agora.password); pg_auto_failover's own roles (autoctl_node,
# pgautofailover_replicator, pgautofailover_monitor) share another generated password, found
# through DIR/pgpass (PGPASSFILE). pg_hba.conf allows each role only from the addresses of the
# parts that need it (on loopback: 127.0.0.0/8), with scram-sha-256; trust only on the Unix sockets, whose directories
# belong to the postgres user (mode 0700). SSL is off (--no-ssl): the traffic stays on loopback or
# a private test bridge; DEPLOY.md says what to do on a real network.
#
# Synchronous replication: replication-quorum true on both nodes, so the primary's
# synchronous_standby_names names the standby and a commit returns only when the standby has it
# (synchronous_commit on). When the standby is gone the monitor moves the primary to
# wait_primary and writes go on unreplicated (pg_auto_failover's availability choice).
#
# PostgreSQL refuses to run as root: as root, everything runs as the postgres user.
set -e
cmd=$1
dir=$2
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,/^set -e/p' "$0" | sed '$d' >&2; exit 2; }
shift 2
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
autoctl=$(command -v pg_autoctl 2>/dev/null || true)
[ -n "$autoctl" ] || autoctl="$bindir/pg_autoctl"
need_autoctl() {
  [ -x "$autoctl" ] || { echo "pg-failover.sh: pg_autoctl is not installed (Debian: postgresql-15-auto-failover; make deps-test)" >&2; exit 1; }
}
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac

# quote VALUE: VALUE as one single-quoted shell word
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

free_port() { # ADDR: a TCP port free on ADDR right now (the kernel's choice)
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

load_env() {
  [ -f "$dir/cluster.env" ] || { echo "pg-failover.sh: no cluster in $dir (run up first)" >&2; exit 1; }
  . "$dir/cluster.env"
}

# as PART CMD...: runs CMD for PART (monitor, node1, node2): under its prefix, as postgres when
# we are root, with pg_autoctl's environment pointing into DIR.
as() {
  part=$1; shift
  eval "prefix=\${prefix_$part}"
  user=""
  [ "$(id -u)" -eq 0 ] && user="runuser -u postgres --"
  # shellcheck disable=SC2086
  $prefix $user env XDG_CONFIG_HOME="$dir/xdg/config" XDG_DATA_HOME="$dir/xdg/data" XDG_RUNTIME_DIR="$dir/xdg/run" \
    PG_REGRESS_SOCK_DIR="$dir/sock-$part" PGHOST="$dir/sock-$part" PGPASSFILE="$dir/pgpass" \
    PG_CONFIG="$bindir/pg_config" PATH="$bindir:$PATH" "$@"
}

# psql_local PART DB SQL: runs SQL on PART's server over its Unix socket, as the superuser; each
# statement on its own (ALTER SYSTEM refuses a transaction block)
psql_local() {
  eval "port=\${port_$1}"
  printf '%s\n' "$3" | as "$1" "$bindir/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$dir/sock-$1" -p "$port" -d "$2" -f -
}

pid_of() { # PART: the pid of its running pg_autoctl, or nothing
  f=$(find "$dir/xdg/run" -path "*/$1/pg_autoctl.pid" 2>/dev/null | head -n 1)
  [ -n "$f" ] || return 0
  p=$(head -n 1 "$f" 2>/dev/null)
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
  return 0
}

start_part() { # PART: pg_autoctl run in the background, detached, its output in DIR/PART.log
  [ -n "$(pid_of "$1")" ] && return 0
  eval "addr=\${addr_$1} port=\${port_$1}"
  # a subshell whose descriptors are the log only: nothing of ours (a caller's pipe) stays open
  (
    exec >>"$dir/$1.log" 2>&1 </dev/null
    as "$1" setsid "$autoctl" run --pgdata "$dir/$1"
  ) &
  i=0
  until as "$1" "$bindir/pg_isready" -q -h "$dir/sock-$1" -p "$port" -t 1; do
    i=$((i + 1))
    [ $i -lt 300 ] || { echo "pg-failover.sh: $1 did not start; its log:" >&2; tail -n 30 "$dir/$1.log" >&2; exit 1; }
    sleep 0.1
  done
}

stop_part() { # PART: stops its pg_autoctl and PostgreSQL (fast), then anything left (immediate)
  p=$(pid_of "$1")
  if [ -n "$p" ]; then
    as "$1" "$autoctl" stop --pgdata "$dir/$1" >/dev/null 2>&1 || kill "$p" 2>/dev/null || true
    i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    /bin/kill -s KILL -- "-$p" 2>/dev/null || true # its process group (start_part: setsid)
  fi
  if [ -f "$dir/$1/postmaster.pid" ]; then
    as "$1" "$bindir/pg_ctl" -D "$dir/$1" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    pm=$(head -n 1 "$dir/$1/postmaster.pid" 2>/dev/null || true)
    [ -n "$pm" ] && kill -9 "$pm" 2>/dev/null || true
    # a postmaster killed with SIGKILL leaves its System V segment: remove it once unattached
    shm=$(sed -n 7p "$dir/$1/postmaster.pid" 2>/dev/null | awk '{print $2}')
    [ -n "$shm" ] && ipcrm -m "$shm" 2>/dev/null || true
    rm -f "$dir/$1/postmaster.pid"
  fi
}

# from ADDR: the pg_hba.conf address of connections from the part at ADDR. On loopback the
# source address of a connection is not the part's own (127.0.0.1 speaks to 127.0.0.3): any
# loopback address then, which only this machine can use.
from() { case $1 in 127.*) echo 127.0.0.0/8 ;; *) echo "$1/32" ;; esac; }

write_hba() { # PART: pg_hba.conf of a part (the data nodes share theirs)
  {
    echo "# written by scripts/pg-failover.sh: trust on the Unix socket only, scram-sha-256 over TCP"
    echo "local all all trust"
    echo "local replication all trust"
    if [ "$1" = monitor ]; then
      for a in $(printf '%s\n' "$(from "$addr_node1")" "$(from "$addr_node2")" "$(from "$addr_monitor")" | sort -u); do
        echo "host pg_auto_failover autoctl_node $a scram-sha-256"
      done
    else
      for a in $(printf '%s\n' "$(from "$addr_node1")" "$(from "$addr_node2")" | sort -u); do
        echo "host replication pgautofailover_replicator $a scram-sha-256"
        echo "host all pgautofailover_replicator $a scram-sha-256"
      done
      echo "host all pgautofailover_monitor $(from "$addr_monitor") scram-sha-256"
      echo "host agora agora $clients scram-sha-256"
    fi
  } >"$dir/$1/pg_hba.conf"
}

write_conf() { # PART: our settings, after pg_auto_failover's (postgresql.conf includes those first)
  f="$dir/$1/postgresql.conf"
  sed -i '/^# pg-failover.sh begin/,/^# pg-failover.sh end/d' "$f"
  {
    echo "# pg-failover.sh begin"
    echo "unix_socket_directories = '$dir/sock-$1'"
    echo "shared_buffers = '128MB'"
    echo "work_mem = '4MB'"
    echo "maintenance_work_mem = '64MB'"
    echo "max_connections = 200"
    echo "password_encryption = 'scram-sha-256'"
    if [ "$1" != monitor ]; then
      # a standby whose primary restarted reconnects within 0.5 s (default 5 s), and commits on
      # the primary wait for it (synchronous replication) meanwhile
      echo "wal_retrieve_retry_interval = '500ms'"
      for s in $settings; do echo "$s" | sed 's/=/ = /'; done
    fi
    echo "# pg-failover.sh end"
  } >>"$f"
}

url_of() {
  echo "postgresql://agora:$(cat "$dir/agora.password")@$addr_node1:$port_node1,$addr_node2:$port_node2/agora?target_session_attrs=read-write&connect_timeout=$connect_timeout"
}

monitor_uri() {
  echo "postgres://autoctl_node@$addr_monitor:$port_monitor/pg_auto_failover?sslmode=disable"
}

show_state() { as monitor "$autoctl" show state --pgdata "$dir/monitor" "$@"; }

primary_name() { # the node the monitor has as primary, else nothing
  show_state --json 2>/dev/null | python3 -c '
import json, sys
try:
    nodes = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for n in nodes:
    if n.get("current_group_state") == "primary" and n.get("assigned_group_state") == "primary":
        print(n["nodename"])
'
}

wait_states() { # SECONDS WANT...: until the monitor shows these (node:state) pairs, reported = assigned
  t=$1; shift
  i=0
  while :; do
    got=$(show_state --json 2>/dev/null | python3 -c '
import json, sys
try:
    nodes = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
print(" ".join(sorted("%s:%s" % (n["nodename"], n["current_group_state"]) for n in nodes
                      if n["current_group_state"] == n["assigned_group_state"])))
')
    ok=1
    for w in "$@"; do case " $got " in *" $w "*) ;; *) ok=0 ;; esac; done
    [ $ok = 1 ] && return 0
    i=$((i + 1))
    [ $i -lt $((t * 5)) ] || { echo "pg-failover.sh: waited $t s for $*; the monitor says: $got" >&2; return 1; }
    sleep 0.2
  done
}

secret() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

up() {
  need_autoctl
  addr_monitor=127.0.0.1 addr_node1=127.0.0.1 addr_node2=127.0.0.1
  port_monitor="" port_node1="" port_node2=""
  prefix_monitor="" prefix_node1="" prefix_node2=""
  clients=all connect_timeout=2 fast=0 settings=""
  while [ $# -gt 0 ]; do
    case $1 in
      --monitor|--node1|--node2)
        p=${1#--}
        eval "addr_$p=\${2%%:*}"
        case $2 in *:*) eval "port_$p=\${2##*:}" ;; esac
        shift 2 ;;
      --prefix-monitor|--prefix-node1|--prefix-node2) eval "prefix_${1#--prefix-}=\$2"; shift 2 ;;
      --clients) clients=$2; shift 2 ;;
      --connect-timeout) connect_timeout=$2; shift 2 ;;
      --fast) fast=1; shift ;;
      -c) settings="$settings $2"; shift 2 ;;
      *) echo "pg-failover.sh: unknown option $1" >&2; exit 2 ;;
    esac
  done
  if [ -f "$dir/cluster.env" ]; then # created before: start what is not running
    load_env
    for part in monitor node1 node2; do start_part $part; done
    url_of
    return 0
  fi
  for p in monitor node1 node2; do
    eval "[ -n \"\$port_$p\" ] || port_$p=\$(free_port \"\$addr_$p\")"
  done
  mkdir -p "$dir"
  chmod 0700 "$dir"
  mkdir -p "$dir/xdg/config" "$dir/xdg/data" "$dir/xdg/run" "$dir/sock-monitor" "$dir/sock-node1" "$dir/sock-node2"
  secret >"$dir/agora.password"
  internal=$(secret)
  {
    for u in autoctl_node pgautofailover_replicator pgautofailover_monitor; do echo "*:*:*:$u:$internal"; done
  } >"$dir/pgpass"
  chmod 0600 "$dir/pgpass" "$dir/agora.password"
  {
    for v in addr_monitor addr_node1 addr_node2 port_monitor port_node1 port_node2 prefix_monitor prefix_node1 \
      prefix_node2 clients connect_timeout fast settings; do
      eval "echo $v=\$(quote \"\$$v\")"
    done
  } >"$dir/cluster.env"
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir"
  pgctl="$bindir/pg_ctl"

  # the monitor
  as monitor "$autoctl" create monitor --pgdata "$dir/monitor" --pgport "$port_monitor" --hostname "$addr_monitor" \
    --listen "$addr_monitor" --skip-pg-hba --no-ssl --pgctl "$pgctl" >>"$dir/monitor.log" 2>&1 \
    || { echo "pg-failover.sh: creating the monitor failed:" >&2; tail -n 20 "$dir/monitor.log" >&2; exit 1; }
  write_hba monitor
  write_conf monitor
  start_part monitor
  psql_local monitor pg_auto_failover "ALTER ROLE autoctl_node PASSWORD '$internal'"
  if [ "$fast" = 1 ]; then
    # a dead primary is noticed in a few seconds instead of ~30 s (defaults: period 5 s, timeout
    # 5 s, 2 retries 2 s apart, unhealthy after 20 s without a keeper report); not shorter: on a
    # busy machine a live node would be taken for dead
    psql_local monitor pg_auto_failover "ALTER SYSTEM SET pgautofailover.health_check_period = 500;
      ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000;
      ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1;
      ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500;
      ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 3000;
      ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 3000;
      ALTER SYSTEM SET pgautofailover.startup_grace_period = 1000;
      SELECT pg_reload_conf()" >/dev/null
  fi
  muri=$(monitor_uri)

  # node1: created first, it is the primary
  for n in node1 node2; do
    eval "addr=\${addr_$n} port=\${port_$n}"
    as $n "$autoctl" create postgres --pgdata "$dir/$n" --pgport "$port" --hostname "$addr" --listen "$addr" \
      --name "$n" --dbname agora --monitor "$muri" --skip-pg-hba --no-ssl --pgctl "$pgctl" \
      --replication-quorum true --candidate-priority 50 >>"$dir/$n.log" 2>&1 \
      || { echo "pg-failover.sh: creating $n failed:" >&2; tail -n 30 "$dir/$n.log" >&2; exit 1; }
    write_hba $n
    write_conf $n
    if [ "$fast" = 1 ]; then
      for kv in timeout.network_partition_timeout=2 timeout.prepare_promotion_catchup=5 \
        timeout.prepare_promotion_walreceiver=2 timeout.postgresql_restart_failure_timeout=5; do
        as $n "$autoctl" config set --pgdata "$dir/$n" "${kv%%=*}" "${kv#*=}" >/dev/null
      done
    fi
    start_part $n
    if [ $n = node1 ]; then
      wait_states 60 node1:single
      pw=$(cat "$dir/agora.password")
      psql_local node1 postgres "ALTER ROLE pgautofailover_replicator PASSWORD '$internal';
        ALTER ROLE pgautofailover_monitor PASSWORD '$internal';
        CREATE ROLE agora LOGIN PASSWORD '$pw';
        ALTER DATABASE agora OWNER TO agora"
    fi
  done
  wait_states 120 node1:primary node2:secondary
  url_of
}

down() {
  if [ -f "$dir/cluster.env" ]; then
    load_env
    for part in node2 node1 monitor; do stop_part $part; done
  fi
  # what an interrupted up may have left: a pg_autoctl create, or its PostgreSQL, on a PGDATA here
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case "$c" in *"--pgdata $dir/"* | *"-D $dir/"*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
  done
  rm -rf "$dir"
}

case $cmd in
  up) up "$@" ;;
  url) load_env; url_of ;;
  status) load_env; need_autoctl; show_state "$@" ;;
  primary) load_env; need_autoctl; primary_name ;;
  failover)
    load_env; need_autoctl
    before=$(primary_name)
    as monitor "$autoctl" perform failover --pgdata "$dir/monitor" --wait 60 >>"$dir/monitor.log" 2>&1 \
      || { echo "pg-failover.sh: perform failover failed:" >&2; tail -n 20 "$dir/monitor.log" >&2; exit 1; }
    after=$(primary_name)
    echo "primary: $before -> $after"
    ;;
  start) load_env; need_autoctl; start_part "$1" ;;
  kill)
    load_env
    p=$(pid_of "$1")
    [ -n "$p" ] || { echo "pg-failover.sh: $1 is not running" >&2; exit 1; }
    /bin/kill -s KILL -- "-$p" # start_part ran it under setsid: its pid is its process group
    ;;
  stop) load_env; stop_part "$1" ;;
  down) down ;;
  *) echo "pg-failover.sh: unknown command $cmd" >&2; exit 2 ;;
esac
