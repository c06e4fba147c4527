#!/bin/sh
# A private, throw-away PostgreSQL cluster for tests and benchmarks (Debian's postgresql package).
#
#   pg-temp.sh start DIR [-c name=value ...]   initdb into DIR/data (first time only), start the
#                                               server, print its URL on stdout
#   pg-temp.sh start-standby DIR PRIMARYDIR [-c name=value ...]
#                                               a streaming hot standby of the running cluster in
#                                               PRIMARYDIR: pg_basebackup -R into DIR/data (first
#                                               time only), start it, print its URL on stdout
#   pg-temp.sh url DIR                          print the URL of a running cluster
#   pg-temp.sh stop DIR                         stop it (fast shutdown); DIR stays
#   pg-temp.sh destroy DIR                      stop it and remove DIR
#
# The server listens only on a Unix socket in DIR (no TCP port, so nothing collides and nothing
# outside this machine can reach it); the superuser is "agora", trusted on that socket only, and
# a database "agora" exists. The URL has the form postgresql:///agora?host=DIR&user=agora.
# Extra -c settings go to the server (tests use -c fsync=off: safe when only processes die, not
# the machine; benchmarks keep the durable defaults). PostgreSQL refuses to run as root: as root,
# the cluster belongs to the "postgres" system user the package creates, and DIR is handed to it.
# The server's log is DIR/log. Exit status 0 on success; on failure the log's tail is printed.
# A standby replicates through the primary's socket as "agora" (initdb's default pg_hba.conf
# trusts local replication connections; wal_level replica and max_wal_senders are defaults);
# it is read-only (hot standby) and may be stopped, started and destroyed like any cluster.
set -e
cmd=$1
dir=$2
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pg-temp.sh start|start-standby|url|stop|destroy DIR [PRIMARYDIR] [-c name=value ...]" >&2; exit 2; }
shift 2
primary=
if [ "$cmd" = start-standby ]; then
  primary=$1
  [ -n "$primary" ] && [ -d "$primary" ] || { echo "pg-temp.sh: start-standby needs the primary's DIR" >&2; exit 2; }
  primary=$(cd "$primary" && pwd)
  shift
fi
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "pg-temp.sh: PostgreSQL is not installed (make deps-test installs it)" >&2; exit 1; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
url="postgresql:///agora?host=$dir&user=agora"
case $cmd in
  start|start-standby)
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    chmod 0700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ] && [ -n "$primary" ]; then
      as_owner "$bindir/pg_basebackup" -h "$primary" -U agora -D "$dir/data" -R -X stream -c fast \
        >"$dir/basebackup.log" 2>&1 \
        || { echo "pg-temp.sh: pg_basebackup failed:" >&2; tail -n 20 "$dir/basebackup.log" >&2; exit 1; }
    elif [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bindir/initdb" -D "$dir/data" -U agora --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { echo "pg-temp.sh: initdb failed:" >&2; tail -n 20 "$dir/initdb.log" >&2; exit 1; }
    fi
    opts="-c listen_addresses= -c unix_socket_directories=$dir -c max_connections=200"
    for a in "$@"; do opts="$opts $a"; done
    if ! as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 -o "$opts" start >/dev/null; then
      echo "pg-temp.sh: the server did not start:" >&2; tail -n 20 "$dir/log" >&2; exit 1
    fi
    if [ -z "$primary" ] && ! "$bindir/psql" -qAtX -h "$dir" -U agora -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'agora'" | grep -q 1; then
      "$bindir/createdb" -h "$dir" -U agora agora
    fi
    echo "$url"
    ;;
  url) echo "$url" ;;
  stop)
    [ -f "$dir/data/postmaster.pid" ] && as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    exit 0
    ;;
  destroy)
    # A postmaster killed earlier leaves its pid file behind: then pg_ctl fails, and that is fine.
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *) echo "pg-temp.sh: unknown command $cmd" >&2; exit 2 ;;
esac
