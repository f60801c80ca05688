/** The executor role: consumes due jobs from Kafka and runs them. */
import type { Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { Executor } from "../executor/executor.ts";
import { KafkaBus } from "../kafka.ts";
import { log } from "../log.ts";
import type { Component } from "./component.ts";

/** `onFatal`: the executor cannot consume any more (the process should exit non-zero). */
export async function startExecutor(config: Config, dbs: Databases, onFatal: (error: Error) => void): Promise<Component> {
  // Bun reads its fetch limit once, at start: calls past it queue in arrival order, whoever's
  // slot they hold, so a slow tenant's calls would delay everyone's (ops/cluster-up.sh sets it).
  const fetchCap = Number(process.env.BUN_CONFIG_MAX_HTTP_REQUESTS ?? 256);
  if (fetchCap < Math.min(config.executor.concurrency, 65_535)) {
    log.warn("BUN_CONFIG_MAX_HTTP_REQUESTS is below EXECUTOR_CONCURRENCY: HTTP calls past it queue inside Bun in arrival order; set it at start to the slot count", { fetch_cap: fetchCap, slots: config.executor.concurrency });
  }
  const bus = new KafkaBus(config.kafka);
  await bus.ensureTopics();
  const executor = new Executor(config, dbs, bus, onFatal);
  await executor.start();
  return { name: "executor", ready: () => executor.ready(), stop: () => executor.stop() };
}
