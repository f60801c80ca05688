#!/usr/bin/env bash
# Starts the backing services, idempotently: PostgreSQL (only if none answers at DATABASE_URLS),
# etcd and a single-node Kafka broker (KRaft); then creates the databases, applies migrations
# and creates the Kafka topics. Run ops/install.sh first (cluster-up.sh and test.sh do).
source "$(dirname "$0")/lib.sh"

# --- PostgreSQL (DB_HA=1: under Patroni, started after etcd below) -------------------------------
if [ "${DB_HA:-0}" != 1 ]; then
PG_HOST=$(DBU="${DATABASE_URLS%%,*}" bash -c 'u=${DBU#*://}; u=${u#*@}; echo "${u%%[:/]*}"')
PG_PORT=$(DBU="${DATABASE_URLS%%,*}" bash -c 'u=${DBU#*://}; u=${u#*@}; u=${u%%/*}; [[ $u == *:* ]] && echo "${u##*:}" || echo 5432')
if port_open "$PG_HOST" "$PG_PORT"; then
  say "postgresql: answering at $PG_HOST:$PG_PORT"
else
  command -v pg_ctlcluster >/dev/null 2>&1 || die "no PostgreSQL at $PG_HOST:$PG_PORT and none installed (run ops/install.sh)"
  ver=$(ls /etc/postgresql | sort -n | tail -n 1)
  say "postgresql: starting cluster $ver/main"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  wait_port postgresql "$PG_HOST" "$PG_PORT" 30
  # A freshly installed server knows only the postgres role and wants passwords over TCP:
  # give root a superuser role and trust loopback connections (local development only).
  if ! su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='root'\"" | grep -q 1; then
    su postgres -c "psql -qc 'CREATE ROLE root SUPERUSER LOGIN'"
    hba=$(su postgres -c "psql -tAc 'SHOW hba_file'")
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
    su postgres -c "psql -qc 'SELECT pg_reload_conf()'"
  fi
fi
fi

# --- etcd ---------------------------------------------------------------------------------------
if pid_alive etcd || port_open 127.0.0.1 "$ETCD_PORT"; then
  say "etcd: running on :$ETCD_PORT"
else
  say "etcd: starting on :$ETCD_PORT"
  start_bg etcd "$LOG_DIR/etcd.log" etcd --name local --data-dir "$DATA_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --logger zap --log-outputs stderr
  wait_port etcd 127.0.0.1 "$ETCD_PORT" 30 "$LOG_DIR/etcd.log"
fi

[ "${DB_HA:-0}" = 1 ] && bash "$ROOT/ops/db-ha-up.sh"

# --- Kafka (KRaft, combined broker + controller) ------------------------------------------------
JARS="$CACHE_DIR/kafka-jars"
[ -f "$JARS/.complete" ] || die "Kafka jars missing (run ops/install.sh)"
if pid_alive kafka || port_open 127.0.0.1 "$KAFKA_PORT"; then
  say "kafka: running on :$KAFKA_PORT"
else
  KAFKA_DATA="$DATA_DIR/kafka"
  CONF="$RUN_DIR/kafka-server.properties"
  sed -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" -e "s#@KAFKA_CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
    -e "s#@KAFKA_DATA@#$KAFKA_DATA#g" "$ROOT/ops/kafka/server.properties.template" >"$CONF"
  JAVA_CMD=(java "-Xmx$KAFKA_HEAP" "-Xms$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dorg.slf4j.simpleLogger.showDateTime=true
    -cp "$JARS/*")
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    cluster_id=$("${JAVA_CMD[@]}" kafka.tools.StorageTool random-uuid | tail -n 1)
    say "kafka: formatting storage (cluster $cluster_id)"
    "${JAVA_CMD[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >>"$LOG_DIR/kafka.log" 2>&1 ||
      { tail -n 30 "$LOG_DIR/kafka.log" >&2; die "kafka storage format failed"; }
  fi
  say "kafka: starting on :$KAFKA_PORT (heap $KAFKA_HEAP)"
  start_bg kafka "$LOG_DIR/kafka.log" "${JAVA_CMD[@]}" kafka.Kafka "$CONF"
  wait_port kafka 127.0.0.1 "$KAFKA_PORT" 60 "$LOG_DIR/kafka.log"
fi

# --- databases, migrations, topics --------------------------------------------------------------
"$(bun_bin)" "$ROOT/ops/prepare.ts"
say "services: ok"
