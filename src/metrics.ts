/**
 * Metrics, with prom-client: its default process metrics (CPU seconds, resident memory, heap,
 * event-loop lag, open handles; GC durations are not reported on Bun) and the system's own,
 * served in the Prometheus text format at GET /metrics of every role. Names follow the seed's
 * monitors; ops/prometheus/alerts.yml and ops/grafana use them, and test/observability.test.ts
 * checks that each one they name is in a real scrape.
 */
import client from "prom-client";

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

const LATENCY_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
  new client.Counter<L>({ name, help, labelNames, registers: [registry] });
const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
  new client.Gauge<L>({ name, help, labelNames, registers: [registry] });
const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: readonly L[] = []) =>
  new client.Histogram<L>({ name, help, buckets, labelNames, registers: [registry] });

/**
 * Per-user counts for the users with the most recent volume only, so cardinality stays bounded
 * however many users there are. Each user's count is exact since this process first saw it (a
 * series continues where it left off); a user's series is exported while it is among the `top`
 * users by recent volume (decayed with a one-minute half-life at each increment, so scrapes do
 * not change it) or started something within the last ten minutes after having been exported.
 * Users are remembered up to `remember`; the least recently active go first.
 */
export class TopUsers {
  private users = new Map<string, { count: number; recent: number; at: number; exported: boolean }>();
  constructor(
    private readonly top = 20,
    private readonly remember = 10_000,
  ) {}
  inc(user: string, by = 1): void {
    const now = Date.now();
    let u = this.users.get(user);
    if (u) this.users.delete(user); // re-insert: the map's order is least recently active first
    else u = { count: 0, recent: 0, at: now, exported: false };
    u.recent = u.recent * 2 ** (-(now - u.at) / 60_000) + by;
    u.count += by;
    u.at = now;
    this.users.set(user, u);
    if (this.users.size > this.remember) this.users.delete(this.users.keys().next().value!);
  }
  get(user: string): number {
    return this.users.get(user)?.count ?? 0;
  }
  /** The users to export now, with their counts. */
  exported(now = Date.now()): [string, number][] {
    const decayed = (u: { recent: number; at: number }) => u.recent * 2 ** (-(now - u.at) / 60_000);
    const top = new Set([...this.users].sort((a, b) => decayed(b[1]) - decayed(a[1])).slice(0, this.top).map(([k]) => k));
    const out: [string, number][] = [];
    for (const [user, u] of this.users) {
      u.exported = top.has(user) || (u.exported && now - u.at < 600_000);
      if (u.exported) out.push([user, u.count]);
    }
    return out;
  }
}

const startsByUser = new TopUsers();
// Exported at each scrape from startsByUser: only the top users' series.
new client.Counter({
  name: "jobs_started_total",
  help: "Job runs started (claimed) by the executor, per user, for the users with the most recent starts.",
  labelNames: ["user_id"] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const [user, n] of startsByUser.exported()) this.inc({ user_id: user }, n);
  },
});

export const metrics = {
  httpRequests: counter("http_requests_total", "HTTP requests of the API, by route, method and status (health and metrics routes excluded).", ["route", "method", "status"]),
  httpDuration: histogram("http_request_duration_seconds", "HTTP request latency of the API by route (health and metrics routes excluded).", LATENCY_S, ["route", "method"]),
  jobsCreated: counter("jobs_created_total", "Jobs accepted by the API."),
  jobsDispatched: counter("jobs_dispatched_total", "Jobs published to the due topic, by shard.", ["shard"]),
  dispatchLateness: histogram("job_dispatch_lateness_seconds", "Publish time minus due time.", LATENCY_S),
  jobsLoaded: counter("scheduler_loaded_jobs_total", "Waiting jobs read by the shard actors' loads (a job re-read counts again)."),
  dispatchStep: histogram("scheduler_dispatch_step_seconds", "Time of each dispatch step (load and mark in SQL, publish to Kafka).", [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], ["step"]),
  executorStep: histogram("executor_step_seconds", "Time of each batched executor statement (claim, record) and Kafka batch.", [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], ["step"]),
  claimDelay: histogram("executor_claim_delay_seconds", "Publish time of a due message to its jobs' claims being durable (the wait in the topic and the claim).", LATENCY_S),
  jobsProcessed: counter("jobs_processed_total", "Job runs finished by the executor, by outcome.", ["outcome"]),
  claimsRefusedEarly: counter("executor_claims_refused_early_total", "Claims refused because the job was not yet due by the database's clock (its message came early): the job went back to waiting, to be dispatched again at its due time."),
  jobsStarted: startsByUser,
  startLateness: histogram("job_start_lateness_seconds", "Start (claim) time minus the time the attempt was due: execute_at for a first attempt, the retry time after.", LATENCY_S),
  jobLatency: histogram("job_latency_seconds", "Finish time minus due time of completed runs.", LATENCY_S),
  jobsDeadLettered: counter("jobs_dead_lettered_total", "Jobs written to the dead-letter topic, by reason.", ["reason"]),
  awaitingDatabase: gauge("executor_awaiting_database_jobs", "Jobs whose claim their database failed (it is out), set aside until it answers; their messages are committed."),
  slotsWaiting: gauge("executor_slot_waiting_jobs", "Jobs taken from the due topic and waiting for a run slot (their user holds its share of the slots: see actors/slots.ts)."),
  targetWaiting: gauge("executor_target_waiting_jobs", "Jobs waiting here for a target limit's permits (briefly: longer waits are deferred to the database)."),
  targetDeferred: counter("executor_target_deferred_jobs_total", "Jobs put back to waiting, unrun and with their attempt unchanged, because their target's limit was full (actors/target-limits.ts)."),
  targetPermits: gauge("executor_target_permits", "This executor's leased permits per limited target and bound (c: calls at once, r: calls per second), for the targets in use.", ["key", "bound"]),
  partitionsHeld: gauge("executor_partitions_held", "Partitions not fetched because too many of their jobs wait for a run slot (they resume at half)."),
  slotLimit: gauge("executor_slot_limit", "Slots users at or above their guard may fill: the capacity, less while the event loop lags (pressure)."),
  slotUsers: gauge("executor_slot_active_users", "Users active at this executor (holding or waiting for a slot, or within their guard's time)."),
  noisyUsers: gauge("executor_noisy_users", "Users holding more run slots than their weighted share while another user's jobs wait for one (actors/slots.ts, noisy)."),
  userExcessSlots: gauge("executor_user_excess_slots", "Slots a noisy user holds beyond its weighted share while others wait (at most 10 users, the largest, refreshed every second).", ["user"]),
  userRunning: gauge("executor_user_running_jobs", "Run slots held per user, for the users holding the most (at most 10 users, refreshed every second).", ["user"]),
  consumerLag: gauge("executor_consumer_lag_messages", "Messages in the due topic not yet taken by this executor, by partition (high watermark minus next offset, at the last fetch).", ["partition"]),
  partitionsAssigned: gauge("executor_partitions_assigned", "Partitions of the due topic assigned to this executor at its last group join."),
  consumerBatchErrors: counter("kafka_consumer_batch_errors_total", "Batches whose handler threw (kafkajs retries them, then restarts the consumer)."),
  consumerCrashes: counter("kafka_consumer_crashes_total", "Consumer crashes, by whether kafkajs restarts the consumer (restart=\"false\": the process exits).", ["restart"]),
  kafkaRequests: counter("kafka_requests_total", "Requests this process sent to Kafka brokers, by client and API.", ["client", "api"]),
  shardsOwned: gauge("scheduler_shards_owned", "Shards this scheduler owns."),
  leaseLosses: counter("scheduler_lease_losses_total", "Times this scheduler lost its etcd lease and gave up every shard at once."),
  shardsGivenUp: counter("scheduler_shards_given_up_total", "Shards this scheduler stopped dispatching: released in order or given up on a lease loss."),
  takenBack: counter("scheduler_taken_back_jobs_total", "Jobs a new owner took back because the shard's previous owner marked them and died before releasing the shard, by shard.", ["shard"]),
  weightsStale: gauge("scheduler_weights_stale", "Users whose jobs are ordered at a fallback weight (the default) because the users database could not be read for them yet; each gets its real weight at the next refresh that reads it."),
  shardsTotal: gauge("scheduler_shards_total", "Shards of the system (SHARD_COUNT): every one should be owned by some scheduler."),
  dueBacklog: gauge("scheduler_due_backlog_jobs", "Jobs due and not yet dispatched, loaded in this scheduler, by shard (a lower bound while a user has more waiting than a load takes).", ["shard"]),
  dueOldest: gauge("scheduler_due_backlog_oldest_seconds", "Age of the oldest job due and not yet dispatched in this scheduler, by shard (0: none).", ["shard"]),
  inFlightWindow: gauge("scheduler_inflight_window_jobs", "Dispatched-but-unstarted jobs this scheduler may have out (start rate x target delay)."),
  inFlightJobs: gauge("scheduler_inflight_jobs", "This scheduler's jobs dispatched and not yet seen started."),
  inFlightParts: gauge("scheduler_inflight_parts_jobs", "The window's parts: published and not seen started (outstanding), popped while due and not yet published (pending_due), marked ahead and waiting for their due time (pending_early). Each returns to 0 when nothing is queued or out.", ["part"]),
  clusterShare: gauge("scheduler_cluster_share", "This scheduler's part of the cluster's window: its weighted demand over every process's (1 when alone or when no other process's report could be read)."),
  clusterPeers: gauge("scheduler_cluster_peers", "Other scheduler processes whose demand reports this one uses (their reports are fresh)."),
  clusterRate: gauge("scheduler_cluster_start_rate", "Jobs per second the executors start for the whole cluster, from every scheduler's report."),
  demandExchangeFailures: counter("scheduler_demand_exchange_failures_total", "Demand reports that could not be written or read (the users database did not answer); the process keeps the last reports it read until they expire, then orders alone."),
  queuedJobs: gauge("scheduler_queued_jobs", "Jobs this scheduler holds in its fair queue (due or within the look-ahead)."),
  parkedUsers: gauge("scheduler_parked_users", "Users whose queued jobs wait in this scheduler: paused, or at their concurrency cap (max_running, USER_MAX_RUNNING).", ["reason"]),
  executorSlots: gauge("scheduler_executor_slots", "Run slots of the live executors, as they last reported."),
  saturatedUsers: gauge("scheduler_saturated_users", "Users with jobs waiting for an executor slot (they hold their share of the slots): their dispatch waits here until none waits."),
  parkedJobs: gauge("scheduler_parked_jobs", "Jobs queued in this scheduler of users that are paused or at their concurrency cap."),
  queuedUsers: gauge("scheduler_queued_users", "Users this scheduler holds state for in its fair queue."),
  dbClockOffset: gauge("scheduler_db_clock_offset_seconds", "The database's clock minus this process's, as estimated from loads (due decisions use the database's)."),
  startDelay: histogram("scheduler_start_delay_seconds", "Publish to start (seen through the executors' commits), per due message.", LATENCY_S),
  deadTuples: gauge("db_dead_tuples", "Dead row versions not yet vacuumed, by database and table.", ["database", "table"]),
  vacuums: counter("db_vacuums_total", "Vacuums this process ran, by database and table.", ["database", "table"]),
  retentionDeleted: counter("retention_deleted_total", "Rows the retention loop deleted, by table: finished jobs past JOB_RETENTION (with their attempts) and expired idempotency keys.", ["database", "table"]),
};

export function renderMetrics(): Promise<string> {
  return registry.metrics();
}
