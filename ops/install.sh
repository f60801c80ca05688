#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine, idempotently: Bun (pinned, from
# npm), the JS packages, Debian's etcd-server, prometheus (for promtool), patroni and chromium
# (for the console's browser tests), PostgreSQL (only
# when none answers) and the Apache Kafka broker jars (from Maven Central, cached under
# .local/cache).
source "$(dirname "$0")/lib.sh"

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v bun >/dev/null 2>&1 || [ "$(bun --version)" != "$BUN_VERSION" ]; then
  say "installing bun@$BUN_VERSION from npm"
  npm install -g --silent "bun@$BUN_VERSION" >/dev/null
fi
BUN=$(bun_bin)
"$BUN" --version >/dev/null || die "bun is not runnable"

if [ ! -d "$ROOT/node_modules" ] || [ "$ROOT/bun.lock" -nt "$ROOT/node_modules" ]; then
  say "bun install"
  (cd "$ROOT" && "$BUN" install --frozen-lockfile >/dev/null)
  touch "$ROOT/node_modules"
fi

command -v etcd >/dev/null 2>&1 || apt_install etcd-server
# promtool, for the alert rules' unit tests (the package does not start a server here).
command -v promtool >/dev/null 2>&1 || apt_install prometheus
# Patroni, for DB_HA=1 (each shard database a primary + synchronous standby; test/failover.test.ts).
command -v patroni >/dev/null 2>&1 || apt_install patroni
# Chromium, for the web console's browser tests (test/console.test.ts drives it with playwright-core).
command -v chromium >/dev/null 2>&1 || apt_install chromium
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven

# PostgreSQL: install a server only when nothing answers and no server is installed.
command -v psql >/dev/null 2>&1 || apt_install postgresql-client
if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! port_open 127.0.0.1 5432; then
  apt_install postgresql
fi

JARS="$CACHE_DIR/kafka-jars"
if [ ! -f "$JARS/.complete" ]; then
  say "fetching Kafka broker jars from Maven Central"
  rm -rf "$JARS"
  mvn -q -B -f "$ROOT/ops/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$JARS" >"$LOG_DIR/kafka-fetch.log" 2>&1 ||
    { tail -n 30 "$LOG_DIR/kafka-fetch.log" >&2; die "could not fetch the Kafka jars"; }
  touch "$JARS/.complete"
fi
# Zipkin (the trace UI of `TRACING=zipkin`, and the tracing test's backend): one jar from Maven
# Central, run on the machine's Java 17.
ZIPKIN_JAR="$CACHE_DIR/zipkin-server-$ZIPKIN_VERSION-exec.jar"
if [ ! -f "$ZIPKIN_JAR" ]; then
  say "fetching zipkin-server $ZIPKIN_VERSION from Maven Central"
  mvn -q -B dependency:copy -Dartifact="io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec" \
    -DoutputDirectory="$CACHE_DIR" >"$LOG_DIR/zipkin-fetch.log" 2>&1 ||
    { tail -n 30 "$LOG_DIR/zipkin-fetch.log" >&2; die "could not fetch zipkin-server"; }
fi
say "install: ok"
