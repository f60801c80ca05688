#!/usr/bin/env bash
# Starts Zipkin (in-memory storage; UI and API on :$ZIPKIN_PORT, Zipkin v2 JSON on /api/v2/spans)
# unless something already answers there. Used by `TRACING=zipkin bash ops/cluster-up.sh` and by
# the tracing test; stopped by ops/cluster-down.sh.
source "$(dirname "$0")/lib.sh"
JAR="$CACHE_DIR/zipkin-server-$ZIPKIN_VERSION-exec.jar"
[ -f "$JAR" ] || bash "$ROOT/ops/install.sh"
if ! port_open 127.0.0.1 "$ZIPKIN_PORT"; then
  say "starting zipkin on :$ZIPKIN_PORT"
  # In-memory storage, sized for a local cluster: 200,000 spans (~20,000 traced jobs) fit in the heap.
  start_bg zipkin "$LOG_DIR/zipkin.log" java -Xms128m -Xmx768m -XX:+UseSerialGC -jar "$JAR" \
    --server.port="$ZIPKIN_PORT" --zipkin.storage.mem.max-spans=200000
  wait_port zipkin 127.0.0.1 "$ZIPKIN_PORT" 90 "$LOG_DIR/zipkin.log"
fi
for ((i = 0; i < 300; i++)); do
  curl -fsS "http://127.0.0.1:$ZIPKIN_PORT/health" >/dev/null 2>&1 && { say "zipkin: ok (UI http://127.0.0.1:$ZIPKIN_PORT/zipkin/)"; exit 0; }
  sleep 0.2
done
die "zipkin did not report healthy within 60s (log: $LOG_DIR/zipkin.log)"
