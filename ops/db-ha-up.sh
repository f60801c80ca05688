#!/usr/bin/env bash
# Starts each shard database as a Patroni cluster of two PostgreSQL instances, a primary and a
# synchronous standby (synchronous_mode_strict: a commit returns only once the standby has the
# WAL), on the project's etcd. Idempotent: members already running are left alone.
#   DB_HA=1 bash ops/cluster-up.sh     # the usual way: services-up.sh calls this
# Layout (DB_HA_DATABASES shard databases, 2 by default; database i is Patroni scope
# fairshare-db<i>, members db<i>-a and db<i>-b):
#   PostgreSQL  127.0.0.1:$((DB_HA_PG_PORT + 2i)) and +1     (5441/5442, 5443/5444, ...)
#   Patroni API 127.0.0.1:$((DB_HA_REST_PORT + 2i)) and +1   (8301/8302, ...)
#   data, config and logs under .local/patroni/ (owned by postgres: PostgreSQL refuses root)
# Clients reach the primary through multi-host URLs with target_session_attrs=primary (printed
# by ops/lib.sh as DATABASE_URLS when DB_HA=1).
source "$(dirname "$0")/lib.sh"
command -v patroni >/dev/null 2>&1 || die "patroni is not installed (run ops/install.sh)"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
mkdir -p "$HA_DIR"
chown postgres:postgres "$HA_DIR"
# The clusters' state in etcd belongs to these data directories: a namespace made with them, so
# a new .local/ (another checkout, a purge) never meets a stale cluster of the same name.
[ -s "$HA_DIR/namespace" ] || echo "/fairshare-patroni-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')/" >"$HA_DIR/namespace"
NAMESPACE=$(cat "$HA_DIR/namespace")
# PostgreSQL runs as postgres: it must be able to pass through every folder above its data.
d="$LOCAL_DIR"
while [ "$d" != / ]; do
  runuser -u postgres -- test -x "$d" || { say "letting postgres pass through $d (chmod o+x)"; chmod o+x "$d"; }
  d=$(dirname "$d")
done

member_config() { # db member pg_port rest_port
  local db=$1 m=$2 pg=$3 rest=$4 dir="$HA_DIR/db$1-$2"
  cat <<YAML
scope: fairshare-db$db
namespace: $NAMESPACE
name: db$db-$m
log: {level: WARNING}
restapi: {listen: 127.0.0.1:$rest, connect_address: 127.0.0.1:$rest}
etcd3: {hosts: 127.0.0.1:$ETCD_PORT}
bootstrap:
  dcs:
    # Failover timing. ttl 20 s is Patroni's minimum (a whole node lost is noticed when its
    # leader key expires); loop_wait + 2 * retry_timeout <= ttl. master_start_timeout 0: a
    # primary whose PostgreSQL crashed fails over at once to the synchronous standby, which
    # has every acknowledged commit, instead of restarting in place.
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    master_start_timeout: 0
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 300
        shared_buffers: 256MB
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        synchronous_commit: "on"
        wal_keep_size: 256MB
  initdb: [{encoding: UTF8}, {locale: C.UTF-8}]
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  authentication:
    superuser: {username: postgres, password: postgres}
    replication: {username: replicator, password: replicator}
    rewind: {username: rewinder, password: rewinder}
  parameters:
    unix_socket_directories: $dir
watchdog: {mode: off}
YAML
}

for ((db = 0; db < DB_HA_DATABASES; db++)); do
  for m in a b; do
    i=$([ "$m" = a ] && echo 0 || echo 1)
    pg=$((DB_HA_PG_PORT + 2 * db + i)) rest=$((DB_HA_REST_PORT + 2 * db + i)) dir="$HA_DIR/db$db-$m"
    name="patroni-db$db-$m"
    if pid_alive "$name"; then say "$name: running"; continue; fi
    mkdir -p "$dir"
    member_config "$db" "$m" "$pg" "$rest" >"$dir/patroni.yml"
    chown -R postgres:postgres "$dir"
    say "$name: starting (PostgreSQL :$pg, Patroni API :$rest)"
    start_bg "$name" "$LOG_DIR/$name.log" runuser -u postgres -- patroni "$dir/patroni.yml"
  done
done

# Each cluster has a primary that takes writes and a synchronous standby.
for ((db = 0; db < DB_HA_DATABASES; db++)); do
  a=$((DB_HA_REST_PORT + 2 * db)) b=$((DB_HA_REST_PORT + 2 * db + 1))
  ok=0
  for ((t = 0; t < 600; t++)); do
    primary="" sync=""
    for r in $a $b; do
      curl -fs -o /dev/null "http://127.0.0.1:$r/primary" 2>/dev/null && primary=$r
      curl -fs -o /dev/null "http://127.0.0.1:$r/sync" 2>/dev/null && sync=$r
    done
    if [ -n "$primary" ] && [ -n "$sync" ]; then ok=1; break; fi
    sleep 0.2
  done
  [ $ok = 1 ] || { tail -n 30 "$LOG_DIR"/patroni-db$db-*.log >&2; die "fairshare-db$db: no primary with a synchronous standby within 120s"; }
  pg=$((DB_HA_PG_PORT + primary - DB_HA_REST_PORT)) # a member's PostgreSQL port sits where its REST port does
  # The roles connect as root, as to the system server.
  psql -h 127.0.0.1 -p "$pg" -U postgres -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'root'" | grep -q 1 ||
    psql -h 127.0.0.1 -p "$pg" -U postgres -d postgres -qc "CREATE ROLE root SUPERUSER LOGIN"
  say "fairshare-db$db: primary on :$pg, synchronous standby ready"
done
