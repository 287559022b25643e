#!/usr/bin/env bash
# A high-availability lab on one machine, all on 127.0.0.1 (docs/DEPLOYMENT.md):
#   - a pg_auto_failover monitor, a primary and a synchronous secondary (automatic failover);
#   - a read replica that pg_auto_failover keeps following whichever node is primary
#     (candidate priority 0: never promoted; not in the write quorum);
#   - PgBouncer in transaction mode in front of the primary of the moment `up` ran.
#
#   scripts/ha-lab.sh up        start everything, wait until ready, print the URLs
#   scripts/ha-lab.sh status    the formation as the monitor sees it
#   scripts/ha-lab.sh ready     wait (at most two minutes) until the formation is whole again
#   scripts/ha-lab.sh failover  kill -9 the current primary (its keeper and postmaster), return
#                               once the other node accepts writes, then restart the killed
#                               node so that it rejoins as the secondary
#   scripts/ha-lab.sh down      stop everything `up` started and remove the lab's files
#   scripts/ha-lab.sh urls      print the URLs again (of a lab that is up)
#
# `up` prints exactly three KEY=value lines on stdout (progress goes to stderr):
#   DATABASE_URL=       the multi-host read-write URL (libpq's target_session_attrs)
#   DATABASE_READ_URL=  the read replica
#   POOLER_URL=         PgBouncer in transaction mode
# Every wait is bounded; a step that does not finish in time fails the script.
set -euo pipefail

LAB="${OPSRUN_HA_LAB_DIR:-/tmp/opsrun-ha-lab}"
# Below the kernel's ephemeral range (32768-60999 by default): no outgoing connection of
# the tests or of the lab itself can hold a lab port at the moment its server binds it.
BASE_PORT="${OPSRUN_HA_LAB_PORT:-26100}"
MONITOR_PORT=$BASE_PORT
NODE_PORTS=($((BASE_PORT + 1)) $((BASE_PORT + 2)))
REPLICA_PORT=$((BASE_PORT + 3))
POOLER_PORT=$((BASE_PORT + 10))
DB=opsrun
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"

log() { echo "ha-lab: $*" >&2; }
die() { log "$*"; exit 1; }

# PostgreSQL refuses to run as root: everything runs as `postgres` then.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

# pg_autoctl keeps its configuration and state under the XDG directories: the lab's own.
autoctl() {
  as_owner env XDG_CONFIG_HOME="$LAB/xdg/config" XDG_DATA_HOME="$LAB/xdg/data" XDG_RUNTIME_DIR="$LAB/xdg/run" \
    PATH="$PG_BIN:/usr/bin:/bin" pg_autoctl "$@"
}

# Starts `pg_autoctl run` for a data directory in its own process group, so that
# `failover` can kill the keeper and its postmaster together.
run_keeper() {
  local pgdata=$1 name=$2
  as_owner env XDG_CONFIG_HOME="$LAB/xdg/config" XDG_DATA_HOME="$LAB/xdg/data" XDG_RUNTIME_DIR="$LAB/xdg/run" \
    PATH="$PG_BIN:/usr/bin:/bin" setsid pg_autoctl run --pgdata "$pgdata" >>"$LAB/$name.log" 2>&1 </dev/null &
  sleep 0.2
  # The session leader is the pg_autoctl process whose command line names this data directory.
  pgrep -f -o "pg_autoctl run --pgdata $pgdata\$" >"$LAB/$name.keeper-pid" || die "$name's keeper did not start"
}

psql_at() {
  local port=$1
  shift
  as_owner "$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$port" -U postgres "$@"
}

# Waits for `test` (a shell snippet) to succeed, at most `seconds`; on giving up, shows the
# end of `log` (optional), since `down` removes the lab and its logs with it.
wait_for() {
  local seconds=$1 what=$2 test=$3 log=${4:-}
  local deadline=$((SECONDS + seconds))
  until eval "$test" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      if [ -n "$log" ] && [ -f "$log" ]; then
        log "the end of $log:"
        tail -n 30 "$log" >&2
      fi
      die "gave up after ${seconds}s waiting for $what"
    fi
    sleep 0.2
  done
}

# Something already answers on 127.0.0.1:port.
port_taken() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

monitor_url="postgres://autoctl_node@127.0.0.1:$MONITOR_PORT/pg_auto_failover?sslmode=disable"

# The state every data node reports to the monitor, as `name:state` words.
node_states() {
  psql_at "$MONITOR_PORT" -d pg_auto_failover -c \
    "SELECT string_agg(nodename || ':' || reportedstate, ' ' ORDER BY nodeid) FROM pgautofailover.node"
}

# The formation is whole: a primary, a secondary and the replica, all as the monitor wants them.
formation_ready() {
  psql_at "$MONITOR_PORT" -d pg_auto_failover -c \
    "SELECT count(*) = 3 AND bool_and(reportedstate = goalstate)
            AND count(*) FILTER (WHERE reportedstate = 'primary') = 1
            AND count(*) FILTER (WHERE reportedstate = 'secondary') = 2
     FROM pgautofailover.node" | grep -qx t
}

accepts_writes() {
  timeout 3 "$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$1" -U postgres -d "$DB" \
    -c "SELECT pg_is_in_recovery()" -c "SELECT txid_current()" 2>/dev/null | head -1 | grep -qx f
}

primary_port() {
  for port in "${NODE_PORTS[@]}"; do
    if timeout 3 "$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$port" -U postgres -d "$DB" \
      -c "SELECT pg_is_in_recovery()" 2>/dev/null | grep -qx f; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

print_urls() {
  echo "DATABASE_URL=postgres://postgres@127.0.0.1:${NODE_PORTS[0]},127.0.0.1:${NODE_PORTS[1]}/$DB?target_session_attrs=read-write"
  echo "DATABASE_READ_URL=postgres://postgres@127.0.0.1:$REPLICA_PORT/$DB"
  echo "POOLER_URL=postgres://postgres@127.0.0.1:$POOLER_PORT/$DB"
}

create_node() {
  local name=$1 port=$2
  shift 2
  autoctl create postgres --pgdata "$LAB/$name" --pgport "$port" --pgctl "$PG_BIN/pg_ctl" \
    --hostname 127.0.0.1 --name "$name" --dbname "$DB" --monitor "$monitor_url" \
    --auth trust --no-ssl "$@" >>"$LAB/$name.log" 2>&1
  run_keeper "$LAB/$name" "$name"
}

up() {
  [ ! -e "$LAB" ] || die "$LAB exists: run \`$0 down\` first"
  command -v pg_autoctl >/dev/null || die "pg_autoctl is missing (Debian: postgresql-15-auto-failover pg-auto-failover-cli)"
  command -v pgbouncer >/dev/null || die "pgbouncer is missing (Debian: pgbouncer)"
  for port in "$MONITOR_PORT" "${NODE_PORTS[@]}" "$REPLICA_PORT" "$POOLER_PORT"; do
    ! port_taken "$port" || die "port $port is taken: stop what listens there, or set OPSRUN_HA_LAB_PORT"
  done
  mkdir -p "$LAB/xdg/config" "$LAB/xdg/data" "$LAB/xdg/run"
  chmod 700 "$LAB/xdg/run"
  [ "$(id -u)" != 0 ] || chown -R postgres "$LAB"

  log "monitor on $MONITOR_PORT"
  autoctl create monitor --pgdata "$LAB/monitor" --pgport "$MONITOR_PORT" --pgctl "$PG_BIN/pg_ctl" \
    --hostname 127.0.0.1 --auth trust --no-ssl >>"$LAB/monitor.log" 2>&1
  run_keeper "$LAB/monitor" monitor
  wait_for 60 "the monitor" "psql_at $MONITOR_PORT -d pg_auto_failover -c 'SELECT 1'" "$LAB/monitor.log"
  # Detect a dead primary in about three seconds instead of twenty: the lab's failovers
  # are measured, and production keeps the defaults unless it knows better.
  psql_at "$MONITOR_PORT" -d pg_auto_failover \
    -c "ALTER SYSTEM SET pgautofailover.health_check_period = 1000" \
    -c "ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000" \
    -c "ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1" \
    -c "ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500" \
    -c "ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 3000" \
    -c "SELECT pg_reload_conf()" >/dev/null

  # The primary's settings travel to the other nodes with their base backup.
  log "primary node1 on ${NODE_PORTS[0]}"
  as_owner "$PG_BIN/initdb" -D "$LAB/node1" -A trust -U postgres >>"$LAB/node1.log" 2>&1
  cat >>"$LAB/node1/postgresql.conf" <<EOF
max_connections = 500
shared_buffers = 256MB
shared_preload_libraries = 'pg_stat_statements'
EOF
  create_node node1 "${NODE_PORTS[0]}"
  wait_for 90 "node1 to be the primary" "node_states | grep -q 'node1:single'" "$LAB/node1.log"
  log "secondary node2 on ${NODE_PORTS[1]}"
  create_node node2 "${NODE_PORTS[1]}"
  wait_for 120 "node2 to be a secondary" "node_states | grep -q 'node2:secondary'" "$LAB/node2.log"
  log "read replica node3 on $REPLICA_PORT"
  create_node node3 "$REPLICA_PORT" --candidate-priority 0 --replication-quorum false
  wait_for 120 "the formation" formation_ready
  psql_at "${NODE_PORTS[0]}" -d "$DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

  log "PgBouncer (transaction mode) on $POOLER_PORT"
  cat >"$LAB/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=${NODE_PORTS[0]}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $POOLER_PORT
unix_socket_dir = $LAB
pool_mode = transaction
auth_type = trust
auth_file = $LAB/userlist.txt
admin_users = postgres
max_client_conn = 2000
default_pool_size = 20
max_db_connections = 100
server_reset_query =
; libpq's startup "options" (opsrun's statement timeout) cannot be kept per
; transaction: PgBouncer drops it, and connect_query sets it on each server connection.
ignore_startup_parameters = options,extra_float_digits
logfile = $LAB/pgbouncer.log
pidfile = $LAB/pgbouncer.pid
EOF
  echo '"postgres" ""' >"$LAB/userlist.txt"
  [ "$(id -u)" != 0 ] || chown postgres "$LAB/pgbouncer.ini" "$LAB/userlist.txt"
  as_owner pgbouncer -d "$LAB/pgbouncer.ini" 2>>"$LAB/pgbouncer.start.log"
  # PgBouncer starts even when its TCP port cannot be bound (it warns in its log and
  # serves its Unix socket only): the log is where such a failure shows.
  wait_for 30 "PgBouncer" "psql_at $POOLER_PORT -d $DB -c 'SELECT 1'" "$LAB/pgbouncer.log"
  log "ready"
  print_urls
}

failover() {
  local old new name
  old=$(primary_port) || die "no node is primary now"
  for i in 0 1; do
    if [ "${NODE_PORTS[$i]}" = "$old" ]; then name="node$((i + 1))"; else new=${NODE_PORTS[$i]}; fi
  done
  wait_for 120 "a secondary to fail over to" formation_ready
  log "killing $name (port $old): its keeper and its postmaster, with SIGKILL"
  local postmaster
  postmaster=$(head -1 "$LAB/$name/postmaster.pid")
  kill -9 -- "-$(cat "$LAB/$name.keeper-pid")" 2>/dev/null || true
  kill -9 "$postmaster" 2>/dev/null || true
  local started=$SECONDS
  wait_for 120 "port $new to accept writes" "accepts_writes $new"
  log "port $new accepts writes after $((SECONDS - started))s"
  # The killed node comes back as the secondary (pg_auto_failover rewinds it).
  run_keeper "$LAB/$name" "$name"
}

status() {
  autoctl show state --pgdata "$LAB/monitor"
}

down() {
  [ -e "$LAB" ] || { log "nothing to stop"; return 0; }
  if [ -f "$LAB/pgbouncer.pid" ]; then kill "$(cat "$LAB/pgbouncer.pid")" 2>/dev/null || true; fi
  for name in node3 node2 node1 monitor; do
    [ -f "$LAB/$name.keeper-pid" ] || continue
    kill -TERM -- "-$(cat "$LAB/$name.keeper-pid")" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 30))
  while pgrep -f "$LAB/" >/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  pkill -9 -f "$LAB/" 2>/dev/null || true
  for name in node1 node2 node3 monitor; do
    [ -f "$LAB/$name/postmaster.pid" ] && kill -9 "$(head -1 "$LAB/$name/postmaster.pid")" 2>/dev/null || true
  done
  rm -rf "$LAB"
  log "stopped and removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  failover) failover ;;
  status) status ;;
  ready) wait_for 120 "the formation" formation_ready ;;
  urls) print_urls ;;
  *) echo "usage: $0 up|down|failover|status|ready|urls" >&2; exit 2 ;;
esac
