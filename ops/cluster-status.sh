#!/usr/bin/env bash
# Shows what runs: each process started from .local/run, its port and readiness.
source "$(dirname "$0")/lib.sh"
printf '%-14s %-8s %-8s %-9s %s\n' NAME PID ROLE_PID RESTARTS STATE
for f in "$RUN_DIR"/*.pid; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .pid)
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then state=running; else state="dead (stale pid file)"; fi
  # Roles run under ops/supervise.sh: PID is the supervisor, ROLE_PID the role it restarts.
  child=$(cat "$RUN_DIR/$name.child" 2>/dev/null || echo -)
  restarts=$(cat "$RUN_DIR/$name.restarts" 2>/dev/null || echo -)
  printf '%-14s %-8s %-8s %-9s %s\n' "$name" "$pid" "$child" "$restarts" "$state"
done
port_open 127.0.0.1 "$ETCD_PORT" && echo "etcd      :$ETCD_PORT answering" || echo "etcd      :$ETCD_PORT not answering"
port_open 127.0.0.1 "$KAFKA_PORT" && echo "kafka     :$KAFKA_PORT answering" || echo "kafka     :$KAFKA_PORT not answering"
port_open 127.0.0.1 5432 && echo "postgres  :5432 answering" || echo "postgres  :5432 not answering"
if curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then echo "api       :$API_PORT ready"; else echo "api       :$API_PORT not ready"; fi
