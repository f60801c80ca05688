#!/usr/bin/env bash
# The whole test suite from scratch: install, start the backing services, typecheck, test.
# Tests create their own databases, topics and etcd prefixes, so they can run while a local
# cluster is up. It leaves Kafka and etcd running (ops/services-up.sh; ops/cluster-down.sh stops
# them), and stops the Patroni members the failover test started unless they ran before.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/ops/install.sh"
bash "$ROOT/ops/services-up.sh"
BUN=$(bun_bin)
cd "$ROOT"
ha_before=0
for f in "$RUN_DIR"/patroni-*.pid; do [ -e "$f" ] && ha_before=1; done
[ "$ha_before" -eq 1 ] || trap stop_ha EXIT
say "typecheck"
"$BUN" x tsc --noEmit -p .
"$BUN" x tsc --noEmit -p src/console
say "bun test"
"$BUN" test "$@"
