/** The executor role: consumes due jobs from Kafka and runs them. */
import type { Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { Executor } from "../executor/executor.ts";
import { KafkaBus } from "../kafka.ts";
import type { Component } from "./component.ts";

/** `onFatal`: the executor cannot consume any more (the process should exit non-zero). */
export async function startExecutor(config: Config, dbs: Databases, onFatal: (error: Error) => void): Promise<Component> {
  const bus = new KafkaBus(config.kafka);
  await bus.ensureTopics();
  const executor = new Executor(config, dbs, bus, onFatal);
  await executor.start();
  return { name: "executor", ready: () => executor.ready(), stop: () => executor.stop() };
}
