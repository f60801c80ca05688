/**
 * A database primary dies under load: nothing acknowledged is lost. Starts (or reuses) the shard
 * databases as Patroni clusters, primary + synchronous standby (`ops/db-ha-up.sh`), puts a fresh
 * pair of shard databases on them and runs a slice (api, scheduler, executor) against their
 * multi-host URLs. CLIENTS concurrent clients create single jobs through the public API (each
 * with an HTTP target this program serves, recording every call per (job, attempt)), due 2 s
 * later, for DURATION seconds. KILL_AT seconds in, the primary of cluster 0 (which also holds the
 * users) dies by kill -9: KILL=postgres kills its postmaster (a crashed server: Patroni fails over
 * to the synchronous standby at once), KILL=node also kills its Patroni (a lost machine: failover
 * when its leader key expires, ttl 20 s) and starts that member again 5 s later. Then it waits for
 * every acknowledged job to finish and for the old primary to rejoin, and prints:
 * acknowledged, missing (acknowledged but not in the promoted database), not succeeded,
 * duplicate calls per (job, attempt), acknowledged jobs never called, jobs that ran again because
 * a run was lost (a claim in flight at the kill), API answers by code (only
 * 201 and 503 with Retry-After are allowed), writes unavailable (the longest stretch without an
 * acknowledged create from the kill on; also the last refusal), the new primary, the old one's
 * rejoin time as a replica and as the synchronous standby, and whether it refuses a write. Exits
 * 1 when a correctness check fails.
 *
 *   bun bench/failover.ts                         # DURATION=40 KILL_AT=10 CLIENTS=8 KILL=postgres
 *   KILL=node DURATION=60 bun bench/failover.ts
 *   LOGS_DIR=/tmp/fo KILL=node DURATION=60 bun bench/failover.ts   # and keep the roles' logs
 */
import { connect } from "../src/db/databases.ts";
import { databaseName, splitDatabaseUrls, withDatabase } from "../src/db/pg-url.ts";
import { slice, waitFor } from "../test/support/procs.ts";
import { report, summary } from "./lib.ts";

const DURATION = Number(process.env.DURATION ?? 40);
const KILL_AT = Number(process.env.KILL_AT ?? 10);
const CLIENTS = Number(process.env.CLIENTS ?? 8);
const KILL = (process.env.KILL ?? "postgres") as "postgres" | "node";
const ROOT = new URL("..", import.meta.url).pathname;
const HA_DIR = `${ROOT}.local/patroni`;
const PG_PORT = Number(process.env.DB_HA_PG_PORT ?? 5441);
const REST_PORT = Number(process.env.DB_HA_REST_PORT ?? 8301);

const sh = (cmd: string) => {
  const r = Bun.spawnSync(["bash", "-c", cmd], { cwd: ROOT, env: { ...process.env, DB_HA: "1" }, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: exit ${r.exitCode}`);
};
/** Member m (0: a, 1: b) of cluster db. */
const member = (db: number, m: number) => ({
  name: `db${db}-${"ab"[m]}`,
  pg: PG_PORT + 2 * db + m,
  rest: `http://127.0.0.1:${REST_PORT + 2 * db + m}`,
});
const answers = async (url: string) => (await fetch(url, { signal: AbortSignal.timeout(2_000) }).catch(() => null))?.status === 200;
const primaryOf = async (db: number) => {
  for (const m of [0, 1]) if (await answers(`${member(db, m).rest}/primary`)) return member(db, m);
  return null;
};

sh("bash ops/db-ha-up.sh");
const servers = [0, 1].map((db) => `postgres://root@127.0.0.1:${member(db, 0).pg},127.0.0.1:${member(db, 1).pg}/postgres?target_session_attrs=primary`);
// Calls per (job, attempt), from the targets.
const calls = new Map<string, number>();
const target = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch(req) {
    const key = `${req.headers.get("x-job-id")}/${req.headers.get("x-job-attempt")}`;
    calls.set(key, (calls.get(key) ?? 0) + 1);
    return new Response("ok");
  },
});
const s = await slice({ databases: 2, servers, env: { SHARD_COUNT: "4", LOG_LEVEL: "warn", JOB_RUN_GRACE: "2s", RESCUE_INTERVAL: "1s" } });
let failed = false;
try {
  const api = await s.start("api");
  await s.start("scheduler");
  await s.start("executor");
  const post = (path: string, body: unknown, token?: string) =>
    fetch(api.url + path, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
  await post("/api/v1/users", { username: "failover", password: "password123" });
  const token = ((await (await post("/api/v1/auth/login", { username: "failover", password: "password123" })).json()) as any).data.token as string;

  const acked: string[] = [];
  const codes = new Map<string, number>();
  const refusedAt: number[] = [];
  const createMs: number[] = [];
  const ackedAt: number[] = [];
  const t0 = Date.now();
  const until = t0 + DURATION * 1_000;
  let seq = 0;
  const client = async () => {
    while (Date.now() < until) {
      const sent = Date.now();
      const body = { message: `f${seq++}`, execute_at: new Date(sent + 2_000).toISOString(), target: { url: `http://127.0.0.1:${target.port}/t`, timeout_ms: 2_000 } };
      const r = await post("/api/v1/me/jobs", body, token).catch(() => null);
      const code = r === null ? "no answer" : r.status === 503 && r.headers.get("retry-after") ? "503 + Retry-After" : String(r.status);
      codes.set(code, (codes.get(code) ?? 0) + 1);
      if (r?.status === 201) {
        acked.push(((await r.json()) as any).data.id);
        createMs.push(Date.now() - sent);
        ackedAt.push(Date.now());
      } else {
        refusedAt.push(Date.now());
        await Bun.sleep(100); // a client honouring Retry-After would wait longer; this one measures
      }
    }
  };
  const load = Promise.all(Array.from({ length: CLIENTS }, client));

  await Bun.sleep(KILL_AT * 1_000);
  const old = await primaryOf(0);
  if (!old) throw new Error("cluster 0 has no primary before the kill");
  const postmaster = Number((await Bun.file(`${HA_DIR}/${old.name}/data/postmaster.pid`).text()).split("\n")[0]);
  const patroni = Number((await Bun.file(`${ROOT}.local/run/patroni-${old.name}.pid`).text()).trim());
  const killedAt = Date.now();
  if (KILL === "node") sh(`pkill -9 -P ${patroni}; kill -9 ${patroni}`); // runuser and the patroni under it
  process.kill(postmaster, "SIGKILL");
  console.error(`[failover] kill -9 ${KILL === "node" ? "Patroni and PostgreSQL" : "PostgreSQL"} of ${old.name}, the primary of cluster 0`);
  // The old primary's return, watched from the kill on: as a replica, then as the synchronous standby.
  const rejoin = (role: "replica" | "sync") =>
    waitFor(`the old primary to be ${role}`, async () => ((await answers(`${old.rest}/${role}`)) ? Date.now() : null), 180_000, 200).catch(() => NaN);
  const rejoined = rejoin("replica");
  const syncAgainAt = rejoin("sync");
  const promoted = await waitFor("a new primary", async () => {
    const p = await primaryOf(0);
    return p && p.name !== old.name ? { ...p, at: Date.now() } : null;
  }, 90_000, 100);
  if (KILL === "node") {
    await Bun.sleep(5_000);
    sh("bash ops/db-ha-up.sh >/dev/null 2>&1 || true"); // the member's machine is back: its Patroni starts again
  }
  await load;

  // Every acknowledged job is in the promoted databases and ran once per attempt.
  const urls = splitDatabaseUrls(s.env.DATABASE_URLS!);
  const dbs = urls.map((u) => connect(u, 2));
  const status = new Map<string, string>();
  const attempts = new Map<string, number>();
  await waitFor("every acknowledged job to finish", async () => {
    status.clear();
    for (const sql of dbs) for (const r of await sql`SELECT id::text, status::text, attempt FROM all_jobs WHERE id = ANY(${acked}::bigint[])`) {
      status.set(r.id, r.status);
      attempts.set(r.id, r.attempt);
    }
    return acked.every((id) => status.get(id) === "succeeded" || status.get(id) === "failed") || null;
  }, 120_000, 1_000).catch(() => null);
  await Promise.all(dbs.map((d) => d.end()));

  // The old primary rejoins as a replica (rewound), then as the synchronous standby, and refuses writes.
  const replicaAt = await rejoined;
  const syncAgain = await syncAgainAt;
  const direct = connect(withDatabase(`postgres://root@127.0.0.1:${old.pg}/postgres`, databaseName(urls[0]!)), 1);
  const refusesWrite = await direct`UPDATE shard_fences SET epoch = epoch`.then(() => false, (e) => (e as { code?: string }).code === "25006");
  await direct.end();

  const missing = acked.filter((id) => !status.has(id));
  const notSucceeded = acked.filter((id) => status.has(id) && status.get(id) !== "succeeded");
  const duplicates = [...calls].filter(([, n]) => n > 1);
  const calledIds = new Set([...calls.keys()].map((k) => k.split("/")[0]!));
  const neverCalled = acked.filter((id) => !calledIds.has(id));
  // A claim in flight at the kill may be on the standby without its executor knowing: that run
  // is given up as lost after its deadline and the job runs again as attempt 2 (at least once).
  const rerun = acked.filter((id) => (attempts.get(id) ?? 1) > 1);
  const afterKill = refusedAt.filter((t) => t >= killedAt);
  // Writes unavailable: the longest stretch without an acknowledged create, from the kill on.
  const oks = [killedAt, ...ackedAt.filter((t) => t > killedAt)].sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < oks.length; i++) gap = Math.max(gap, oks[i]! - oks[i - 1]!);
  const badCodes = [...codes.keys()].filter((c) => c !== "201" && c !== "503 + Retry-After");
  const figures = {
    kill: KILL,
    acknowledged: acked.length,
    missing: missing.length,
    not_succeeded: notSucceeded.length,
    duplicate_calls_per_job_attempt: duplicates.length,
    acknowledged_never_called: neverCalled.length,
    ran_again_after_a_lost_run: rerun.length,
    not_succeeded_by_status_attempt: Object.fromEntries(Object.entries(Object.groupBy(notSucceeded, (id) => `${status.get(id)}@${attempts.get(id)}`)).map(([k, v]) => [k, v!.length])),
    api_answers: Object.fromEntries(codes),
    create_ms: summary(createMs),
    old_primary: old.name,
    new_primary: promoted.name,
    promoted_after_s: Math.round((promoted.at - killedAt) / 100) / 10,
    writes_unavailable_s: Math.round(gap / 100) / 10,
    refused_after_kill: afterKill.length,
    last_refusal_after_s: afterKill.length ? Math.round((Math.max(...afterKill) - killedAt) / 100) / 10 : 0,
    old_primary_replica_after_s: Math.round((replicaAt - killedAt) / 100) / 10,
    old_primary_sync_standby_after_s: Math.round((syncAgain - killedAt) / 100) / 10,
    old_primary_refuses_writes: refusesWrite,
  };
  report(`failover: kill -9 of a primary (${KILL})`, figures);
  failed = missing.length > 0 || notSucceeded.length > 0 || duplicates.length > 0 || neverCalled.length > 0 || badCodes.length > 0 || !refusesWrite || Number.isNaN(syncAgain);
  if (failed) console.error(`[failover] FAILED: ${JSON.stringify({ missing: missing.slice(0, 5), notSucceeded: notSucceeded.slice(0, 5), duplicates: duplicates.slice(0, 5), badCodes })}`);
} finally {
  target.stop(true);
  // LOGS_DIR: the roles' logs (warnings and up) are kept there, one file per process.
  if (process.env.LOGS_DIR) for (const [i, p] of s.procs.entries()) await Bun.write(`${process.env.LOGS_DIR}/${p.role}-${i}.log`, p.logs.join("\n"));
  await s.close();
}
process.exit(failed ? 1 : 0);
