#!/usr/bin/env bash
# The whole test suite from scratch: install, start the backing services, typecheck, test.
# Tests create their own databases, topics and etcd prefixes, so they can run while a local
# cluster is up.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/ops/install.sh"
bash "$ROOT/ops/services-up.sh"
BUN=$(bun_bin)
cd "$ROOT"
say "typecheck"
"$BUN" x tsc --noEmit -p .
"$BUN" x tsc --noEmit -p src/console
say "bun test"
"$BUN" test "$@"
