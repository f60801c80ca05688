#!/usr/bin/env bash
# Stops exactly what ops/cluster-up.sh and ops/services-up.sh started (by pid file), roles
# first so they drain cleanly, then Zipkin, Kafka and etcd. PostgreSQL is left running: it was either
# there before us or is the machine's system service. --purge also deletes .local/data.
source "$(dirname "$0")/lib.sh"
for f in "$RUN_DIR"/api.pid "$RUN_DIR"/scheduler-*.pid "$RUN_DIR"/executor-*.pid; do
  [ -e "$f" ] && stop_pid "$(basename "$f" .pid)"
done
stop_pid zipkin
stop_ha
stop_pid kafka
stop_pid etcd
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$DATA_DIR" "$HA_DIR"
  say "deleted $DATA_DIR and $HA_DIR"
fi
