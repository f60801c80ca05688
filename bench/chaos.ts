/**
 * Faults under steady load, measured as a user sees them (first part of the fault suite: role
 * deaths). Starts its own local cluster (`ops/cluster-up.sh` with 2 schedulers and 2 executors,
 * each role supervised), streams `log` jobs through the public API due evenly at RATE per second
 * (default 200) for DURATION seconds (default 60), and kill -9s one role at a time at FAULT_GAP
 * intervals: executor-1, then scheduler-1. Prints jobs acknowledged, lost (not finished within
 * 2 minutes of the end), started early, re-run (attempt > 1), and per fault the worst start
 * lateness of the jobs due in the 20 s after it and the recovery time: from the fault to the
 * last start more than 1 s late among those jobs. Stops the cluster at the end.
 *
 *   bun bench/chaos.ts
 */
import { ApiClient, ms } from "./api-client.ts";
import { report, summary } from "./lib.ts";

const RATE = Number(process.env.RATE ?? 200);
const DURATION = Number(process.env.DURATION ?? 60);
const FAULT_GAP = Number(process.env.FAULT_GAP ?? 20);
const USERS = 4;
const ROOT = new URL("..", import.meta.url).pathname;
const RUN = `${ROOT}.local/run`;

const sh = (cmd: string, env: Record<string, string> = {}) => {
  const r = Bun.spawnSync(["bash", "-c", cmd], { cwd: ROOT, env: { ...process.env, ...env }, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: exit ${r.exitCode}`);
};
const rolePid = async (name: string) => Number((await Bun.file(`${RUN}/${name}.child`).text()).trim());

sh("bash ops/cluster-down.sh >/dev/null 2>&1 || true");
sh("bash ops/cluster-up.sh", { SCHEDULERS: "2", EXECUTORS: "2" });
try {
  const client = new ApiClient();
  const tokens = await Promise.all(Array.from({ length: USERS }, (_, u) => client.user(`chaos${u}`)));
  const total = RATE * DURATION;
  const per = Math.ceil(total / USERS);
  const t0 = Date.now() + 8_000;
  const lasts = await Promise.all(tokens.map((t, u) => client.create(t, (i) => t0 + ((i * USERS + u) * 1000) / RATE, per, "chaos")));
  await Bun.sleep(t0 - Date.now());
  const faults: { name: string; at: number }[] = [];
  for (const name of ["executor-1", "scheduler-1"]) {
    await Bun.sleep(FAULT_GAP * 1000);
    const pid = await rolePid(name);
    process.kill(pid, "SIGKILL");
    faults.push({ name, at: Date.now() });
    console.error(`[chaos] kill -9 ${name} (pid ${pid})`);
  }
  await Bun.sleep(Math.max(0, t0 + DURATION * 1000 - Date.now()));
  await client.waitFinished(lasts, 120_000).catch(() => {});
  const jobs = (await Promise.all(tokens.map((t) => client.finished(t, per)))).flat();
  const late = (j: (typeof jobs)[number]) => ms(j.started_at) - ms(j.execute_at);
  const byFault = Object.fromEntries(
    faults.map((f) => {
      const hit = jobs.filter((j) => ms(j.execute_at) >= f.at - 1_000 && ms(j.execute_at) < f.at + 20_000);
      const slow = hit.filter((j) => late(j) > 1_000);
      const recovery = slow.length ? Math.max(...slow.map((j) => ms(j.started_at))) - f.at : 0;
      return [f.name, { start_lateness_ms: summary(hit.map(late)), recovery_s: Math.round(recovery / 100) / 10 }];
    }),
  );
  report("chaos: role deaths under steady load", {
    rate_per_s: RATE,
    acknowledged: per * USERS,
    finished: jobs.length,
    lost: per * USERS - jobs.length,
    started_early: jobs.filter((j) => late(j) < 0).length,
    rerun: jobs.filter((j) => j.attempt > 1).length,
    failed: jobs.filter((j) => j.status !== "succeeded").length,
    by_fault: byFault,
  });
} finally {
  sh("bash ops/cluster-status.sh || true");
  sh("bash ops/cluster-down.sh >/dev/null");
}
