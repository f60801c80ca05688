/**
 * What an idle cluster costs: the whole machine's CPU busy over DURATION seconds (default 30)
 * while nothing is due, and the CPU seconds of each part (roles, Kafka, etcd, PostgreSQL
 * backends by role). Run it against a running cluster (`bash ops/cluster-up.sh`) after the
 * work has drained; a cluster that does nothing should cost next to nothing.
 *
 *   bash ops/cluster-up.sh && bun bench/idle.ts
 */
import { adminPg, machineBusySeconds, report } from "./lib.ts";

const DURATION = Number(process.env.DURATION ?? 30);
const CORES = navigator.hardwareConcurrency;
const { sql: pgAdmin, parts } = adminPg();

const before = await parts();
const busy0 = machineBusySeconds();
await Bun.sleep(DURATION * 1000);
const busy = machineBusySeconds() - busy0;
const after = await parts();
const byPart = Object.fromEntries(
  [...after]
    .map(([k, v]) => [k, Math.round(((v - (before.get(k) ?? 0)) / DURATION) * 1000) / 10] as const)
    .filter(([, v]) => v > 0)
    .sort((a, b) => b[1] - a[1]),
);
report("idle", {
  seconds: DURATION,
  machine_cpu_busy_percent: Math.round((busy / (DURATION * CORES)) * 1000) / 10,
  percent_of_one_core_by_part: byPart,
});
await pgAdmin.end();
