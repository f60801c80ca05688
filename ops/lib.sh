# Shared settings and helpers for the ops/ scripts. Sourced, not run.
# Every path lives under one git-ignored folder, .local/ at the repository root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="${LOCAL_DIR:-$ROOT/.local}"
DATA_DIR="$LOCAL_DIR/data"
LOG_DIR="$LOCAL_DIR/logs"
RUN_DIR="$LOCAL_DIR/run"
CACHE_DIR="$LOCAL_DIR/cache"
mkdir -p "$DATA_DIR" "$LOG_DIR" "$RUN_DIR" "$CACHE_DIR"

BUN_VERSION="1.4.5"
ETCD_PORT="${ETCD_PORT:-2379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-2380}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
API_PORT="${API_PORT:-8080}"
ZIPKIN_VERSION="3.5.1"
ZIPKIN_PORT="${ZIPKIN_PORT:-9411}"
# DB_HA=1: every shard database is a Patroni cluster (primary + synchronous standby, ops/db-ha-up.sh)
# and the roles reach its primary through a multi-host URL.
HA_DIR="$LOCAL_DIR/patroni"
DB_HA_DATABASES="${DB_HA_DATABASES:-2}"
DB_HA_PG_PORT="${DB_HA_PG_PORT:-5441}"
DB_HA_REST_PORT="${DB_HA_REST_PORT:-8301}"
ha_urls() {
  local db urls=()
  for ((db = 0; db < DB_HA_DATABASES; db++)); do
    urls+=("postgres://root@127.0.0.1:$((DB_HA_PG_PORT + 2 * db)),127.0.0.1:$((DB_HA_PG_PORT + 2 * db + 1))/fairshare_$db?target_session_attrs=primary")
  done
  (IFS=,; echo "${urls[*]}")
}
if [ "${DB_HA:-0}" = 1 ]; then
  export DATABASE_URLS="${DATABASE_URLS:-$(ha_urls)}"
else
  export DATABASE_URLS="${DATABASE_URLS:-postgres://root@127.0.0.1:5432/fairshare}"
fi
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:$KAFKA_PORT}"
export ETCD_ENDPOINTS="${ETCD_ENDPOINTS:-http://127.0.0.1:$ETCD_PORT}"
# The local broker allows sessions down to 1 s (ops/kafka/server.properties.template): a killed
# executor's partitions move in ~3 s instead of the 6 s a default broker's minimum allows; and a
# killed scheduler's shards are taken over within 3 s of its last keep-alive.
export KAFKA_SESSION_TIMEOUT="${KAFKA_SESSION_TIMEOUT:-3s}"
export ETCD_LEASE_TTL_SECONDS="${ETCD_LEASE_TTL_SECONDS:-3}"

say() { printf '[ops] %s\n' "$*" >&2; }
die() { printf '[ops] ERROR: %s\n' "$*" >&2; exit 1; }

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port NAME HOST PORT SECONDS [LOGFILE]
wait_port() {
  local name=$1 host=$2 port=$3 secs=$4 logfile=${5:-}
  for ((i = 0; i < secs * 10; i++)); do
    port_open "$host" "$port" && return 0
    sleep 0.1
  done
  [ -n "$logfile" ] && tail -n 40 "$logfile" >&2
  die "$name did not open $host:$port within ${secs}s${logfile:+ (log: $logfile)}"
}

# pid_alive NAME: true when .local/run/NAME.pid names a live process.
# A killed process stays a zombie until reaped; kill -0 still succeeds on it, so look at its state.
pid_alive() {
  local f="$RUN_DIR/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# start_bg NAME LOGFILE CMD...: starts CMD detached in its own session and records its pid.
start_bg() {
  local name=$1 logfile=$2
  shift 2
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

# stop_pid NAME: SIGTERM, wait up to 30 s, then SIGKILL; removes the pid file.
stop_pid() {
  local name=$1 f="$RUN_DIR/$1.pid"
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name ($pid) did not stop in 30s; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $name ($pid)"
  fi
  rm -f "$f"
}

bun_bin() {
  if command -v bun >/dev/null 2>&1; then command -v bun; else echo "$(npm prefix -g)/bin/bun"; fi
}

# Stops the local Patroni members (DB_HA=1), each stopping its PostgreSQL cleanly on SIGTERM, and
# any PostgreSQL that Patroni was (re)starting as it stopped and that outlived it.
stop_ha() {
  for f in "$RUN_DIR"/patroni-*.pid; do
    [ -e "$f" ] && stop_pid "$(basename "$f" .pid)"
  done
  for d in "$HA_DIR"/db*/data; do
    [ -f "$d/postmaster.pid" ] && runuser -u postgres -- /usr/lib/postgresql/*/bin/pg_ctl stop -D "$d" -m fast -w >/dev/null 2>&1 || true
  done
}
