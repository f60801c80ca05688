#!/usr/bin/env bash
# Brings up a working local cluster: installs what is missing, starts PostgreSQL/etcd/Kafka,
# then the roles as separate processes (one api, SCHEDULERS scheduler and EXECUTORS executor
# processes; 1 each by default). Idempotent: roles already running are left alone.
# TRACING=zipkin also starts Zipkin and has every role export its spans there. DB_HA=1 runs each
# shard database as a Patroni primary + synchronous standby (ops/db-ha-up.sh).
#   bash ops/cluster-up.sh              # then: curl http://127.0.0.1:8080/readyz
#   TRACING=zipkin bash ops/cluster-up.sh
source "$(dirname "$0")/lib.sh"
bash "$ROOT/ops/install.sh"
bash "$ROOT/ops/services-up.sh"
BUN=$(bun_bin)
if [ "${TRACING:-}" = zipkin ]; then
  bash "$ROOT/ops/zipkin-up.sh"
  export OTEL_TRACES_EXPORTER=zipkin OTEL_EXPORTER_ZIPKIN_ENDPOINT="http://127.0.0.1:$ZIPKIN_PORT/api/v2/spans"
elif [ -n "${TRACING:-}" ]; then
  die "TRACING=$TRACING: expected zipkin (or unset; compose uses Jaeger over OTLP)"
fi
# The operator's token (admin API, the console's operator view): made once per checkout, kept in
# .local/admin-token (only this user can read it), unless ADMIN_TOKEN is set.
if [ -z "${ADMIN_TOKEN:-}" ]; then
  if [ ! -s "$LOCAL_DIR/admin-token" ]; then
    (umask 077 && openssl rand -hex 32 >"$LOCAL_DIR/admin-token")
  fi
  ADMIN_TOKEN=$(cat "$LOCAL_DIR/admin-token")
fi
export ADMIN_TOKEN
if [ "${TRACING:-}" = zipkin ]; then
  export CONSOLE_TRACE_URL="${CONSOLE_TRACE_URL:-http://127.0.0.1:$ZIPKIN_PORT/zipkin/traces/{trace_id}}"
fi
SCHEDULERS="${SCHEDULERS:-1}"
EXECUTORS="${EXECUTORS:-1}"

# start_role NAME ROLE PORT
start_role() {
  local name=$1 role=$2 port=$3
  if pid_alive "$name"; then
    say "$name: running (pid $(cat "$RUN_DIR/$name.pid"))"
    return
  fi
  say "$name: starting ($role on :$port)"
  # Supervised: a role that exits is started again (ops/supervise.sh). Bun's fetch keeps at most
  # BUN_CONFIG_MAX_HTTP_REQUESTS calls in flight (256 unless set at start) and queues the rest in
  # arrival order: an executor's HTTP calls get as many as it has run slots (at most 65,535).
  local fetch_cap=$(( ${EXECUTOR_CONCURRENCY:-4000} > 65535 ? 65535 : ${EXECUTOR_CONCURRENCY:-4000} ))
  (cd "$ROOT" && BUN_CONFIG_MAX_HTTP_REQUESTS="${BUN_CONFIG_MAX_HTTP_REQUESTS:-$fetch_cap}" PORT=$port start_bg "$name" "$LOG_DIR/$name.log" bash "$ROOT/ops/supervise.sh" "$name" "$BUN" src/main.ts "$role")
}

start_role api api "$API_PORT"
for ((i = 1; i <= SCHEDULERS; i++)); do start_role "scheduler-$i" scheduler $((API_PORT + 10 + i)); done
for ((i = 1; i <= EXECUTORS; i++)); do start_role "executor-$i" executor $((API_PORT + 20 + i)); done

# Wait until every role answers /readyz.
wait_ready() {
  local name=$1 port=$2
  for ((t = 0; t < 300; t++)); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    pid_alive "$name" || { tail -n 30 "$LOG_DIR/$name.log" >&2; die "$name exited during start (log: $LOG_DIR/$name.log)"; }
    sleep 0.2
  done
  die "$name not ready on :$port after 60s (log: $LOG_DIR/$name.log)"
}
wait_ready api "$API_PORT"
for ((i = 1; i <= SCHEDULERS; i++)); do wait_ready "scheduler-$i" $((API_PORT + 10 + i)); done
for ((i = 1; i <= EXECUTORS; i++)); do wait_ready "executor-$i" $((API_PORT + 20 + i)); done

cat <<MSG

Local cluster is up.
  API:         http://127.0.0.1:$API_PORT/api/v1   (reference: http://127.0.0.1:$API_PORT/docs)
  console:     http://127.0.0.1:$API_PORT/console/   (operator token: $([ -s "$LOCAL_DIR/admin-token" ] && echo "cat $LOCAL_DIR/admin-token" || echo "\$ADMIN_TOKEN"))
  health:      http://127.0.0.1:$API_PORT/readyz   metrics: http://127.0.0.1:$API_PORT/metrics
  schedulers:  $SCHEDULERS (ports $((API_PORT + 11))..)   executors: $EXECUTORS (ports $((API_PORT + 21))..)
  services:    PostgreSQL ${DATABASE_URLS}, Kafka $KAFKA_BROKERS, etcd $ETCD_ENDPOINTS
  traces:      ${OTEL_TRACES_EXPORTER:-none}$([ "${TRACING:-}" = zipkin ] && echo " (UI http://127.0.0.1:$ZIPKIN_PORT/zipkin/)")
  logs:        $LOG_DIR
  stop:        bash ops/cluster-down.sh
MSG
