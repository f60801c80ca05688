#!/usr/bin/env bash
# supervise.sh NAME CMD...: runs a role and runs it again when it exits, with backoff (1 s,
# doubling to 30 s; back to 1 s after a run of a minute or more), until it is sent TERM/INT,
# which it passes on to the role and waits for. A configuration error (exit 2) is not retried.
# Writes the role's pid to .local/run/NAME.child and its restart count to NAME.restarts;
# every restart is logged as a JSON line in the role's log. ops/cluster-status.sh shows both.
source "$(dirname "$0")/lib.sh"
name=$1
shift
child=0
stopping=0
trap 'stopping=1; [ "$child" -gt 0 ] && kill -TERM "$child" 2>/dev/null' TERM INT
restarts=0
delay=1
echo 0 >"$RUN_DIR/$name.restarts"
while :; do
  started=$(date +%s)
  "$@" &
  child=$!
  echo "$child" >"$RUN_DIR/$name.child"
  code=0
  wait "$child" || code=$?
  # A trapped signal ends `wait` early: wait for the role itself to finish draining.
  while kill -0 "$child" 2>/dev/null; do wait "$child" || code=$?; done
  [ "$stopping" = 1 ] && break
  if [ "$code" = 2 ]; then
    echo "{\"ts\":\"$(date -u +%FT%TZ)\",\"level\":\"error\",\"msg\":\"supervisor: configuration error; not restarting\",\"name\":\"$name\"}"
    rm -f "$RUN_DIR/$name.child"
    exit 2
  fi
  [ $(($(date +%s) - started)) -ge 60 ] && delay=1
  restarts=$((restarts + 1))
  echo "$restarts" >"$RUN_DIR/$name.restarts"
  echo "{\"ts\":\"$(date -u +%FT%TZ)\",\"level\":\"error\",\"msg\":\"supervisor: role exited; restarting\",\"name\":\"$name\",\"exit_code\":$code,\"restarts\":$restarts,\"delay_s\":$delay}"
  sleep "$delay" &
  wait $! || true
  [ "$stopping" = 1 ] && break
  delay=$((delay * 2 > 30 ? 30 : delay * 2))
done
rm -f "$RUN_DIR/$name.child"
