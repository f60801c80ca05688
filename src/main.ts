/**
 * The one entry point: `bun src/main.ts <api|scheduler|executor|all>`.
 *
 * Start: validate configuration (exit 2 naming the bad variables), migrate every database
 * (safe when several processes start at once), check the settings that decide where jobs live
 * against the cluster's (exit 2 on a mismatch), start the role's components, then listen.
 * SIGTERM/SIGINT: /readyz turns 503, the HTTP server stops accepting, components drain in
 * order (api, scheduler, executor), connections close; exit 0, or 1 past SHUTDOWN_TIMEOUT.
 */
import { ConfigError, loadConfig, parseRole, type Config, type Role } from "./config.ts";
import { openDatabases } from "./db/databases.ts";
import { checkAutovacuum } from "./db/maintenance.ts";
import { checkClusterSettings, clusterSettings } from "./db/cluster-settings.ts";
import { migrate, SchemaTooNewError } from "./db/migrate.ts";
import { listen, rootApp } from "./http/server.ts";
import { configureLog, log } from "./log.ts";
import { startApi } from "./roles/api.ts";
import type { Component } from "./roles/component.ts";
import { startExecutor } from "./roles/executor.ts";
import { startScheduler } from "./roles/scheduler.ts";
import { initTelemetry, shutdownTelemetry } from "./telemetry.ts";

let config: Config;
let role: Role;
try {
  role = parseRole(process.argv[2]);
  config = loadConfig();
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
  throw e;
}

configureLog(config.logLevel, { role, pid: process.pid });
initTelemetry(config.otel, role);
const runs = (r: Role) => role === r || role === "all";

const dbs = openDatabases(config.databaseUrls, config.shardCount, config.dbPoolMax, `fairshare-${role}`);
for (const sql of dbs.all) {
  await migrate(sql).catch((e) => {
    if (!(e instanceof SchemaTooNewError)) throw e;
    process.stderr.write(`${e.message}\n`);
    process.exit(2); // like a configuration error: restarting cannot help
  });
}
// Settings that decide where jobs live must match the cluster's (src/db/cluster-settings.ts).
const mismatches = await checkClusterSettings(dbs.users, clusterSettings(config));
if (mismatches.length > 0) {
  process.stderr.write(
    `refusing to start: settings differ from the ones this cluster was started with (they decide which database holds each job, and cannot change in place):\n  ${mismatches.join("\n  ")}\n` +
      `Start with the cluster's values (SHARD_COUNT, DATABASE_URLS in the same order, KAFKA_PARTITIONS); see docs/operations.md.\n`,
  );
  process.exit(2); // like a configuration error: restarting cannot help
}
const refusal = await checkAutovacuum(dbs, config);
if (refusal) {
  process.stderr.write(`${refusal}\n`);
  process.exit(2);
}

const components: Component[] = [];
const api = runs("api") ? await startApi(config, dbs) : null;
if (api) components.push(api.component);
if (runs("scheduler")) components.push(await startScheduler(config, dbs));
if (runs("executor")) components.push(await startExecutor(config, dbs, () => void shutdown("fatal", 1)));

const app = rootApp(config.api.maxBodyBytes, () => components, api?.routes);
// reusePort for the api role only: several api processes on one host may share the port (the
// kernel spreads connections); any other role must own its port, or /readyz would answer for
// whichever process the kernel picked.
listen(app, { port: config.port, hostname: config.host, reusePort: role === "api", timeoutMs: config.api.requestTimeoutMs });
log.info("started", { url: `http://${config.host}:${app.server?.port}`, components: components.map((c) => c.name) });

let stopping = false;
/** Drains and exits; `code` is 1 when a component cannot go on (a supervisor restarts the role). */
async function shutdown(signal: string, code = 0) {
  if (stopping) return;
  stopping = true;
  log.info("shutting down", { signal });
  const hard = setTimeout(() => {
    log.error("shutdown timed out; exiting", { timeout_ms: config.shutdownTimeoutMs });
    process.exit(1);
  }, config.shutdownTimeoutMs);
  try {
    for (const c of components) await c.stop();
    await app.stop();
    await dbs.close();
    await shutdownTelemetry();
    log.info("stopped");
    clearTimeout(hard);
    process.exit(code);
  } catch (e) {
    log.error("shutdown failed", { err: e as Error });
    process.exit(1);
  }
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
