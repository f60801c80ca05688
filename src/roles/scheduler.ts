/** The scheduler role: a member of the etcd shard group, running one actor per owned shard. */
import type { Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { RetentionKeeper, StagedBatchKeeper, VacuumKeeper } from "../db/maintenance.ts";
import { TUNING } from "../config.ts";
import { KafkaBus } from "../kafka.ts";
import { ShardOwnership } from "../scheduler/shard-ownership.ts";
import type { Component } from "./component.ts";

export async function startScheduler(config: Config, dbs: Databases): Promise<Component & { ownership: ShardOwnership }> {
  const bus = new KafkaBus(config.kafka);
  await bus.ensureTopics();
  const publishers = { bulk: await bus.publisher(), onTime: await bus.publisher() };
  const ownership = new ShardOwnership(config, dbs, bus, publishers);
  await ownership.start();
  const m = config.maintenance;
  const keeper = new VacuumKeeper(dbs, m.vacuumDeadTuples, m.vacuumCheckMs);
  keeper.start();
  const retention = new RetentionKeeper(dbs, m.jobRetentionMs, m.idempotencyKeyTtlMs, m.retentionIntervalMs);
  retention.start();
  // Staged rows are stale well after any request that wrote them has been answered.
  const batches = new StagedBatchKeeper(dbs, 3 * config.api.requestTimeoutMs, TUNING.maintenance.stagedBatchesEveryMs);
  batches.start();
  return {
    name: "scheduler",
    ownership,
    ready: () => ownership.ready(),
    stop: async () => {
      await ownership.stop();
      await Promise.all([keeper.stop(), retention.stop(), batches.stop()]);
      await Promise.all([publishers.bulk.close(), publishers.onTime.close()]);
    },
  };
}
