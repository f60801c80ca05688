/**
 * A small Prometheus registry (counters, gauges, histograms with labels) rendered in the text
 * exposition format at GET /metrics. Metric names follow the seed's monitors; see
 * ops/prometheus/alerts.yml and ops/grafana for their use.
 */
type Labels = Record<string, string>;
const key = (labels: Labels) => JSON.stringify(Object.entries(labels).sort());
const fmtLabels = (labels: Labels, extra?: [string, string]) => {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, "_")}"`);
  if (extra) parts.push(`${extra[0]}="${extra[1]}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
};

interface Metric {
  render(): string;
}
const registry: Metric[] = [];

export class Counter implements Metric {
  private values = new Map<string, { labels: Labels; v: number }>();
  constructor(readonly name: string, readonly help: string) {
    registry.push(this);
  }
  inc(labels: Labels = {}, by = 1): void {
    const k = key(labels);
    const cur = this.values.get(k);
    if (cur) cur.v += by;
    else this.values.set(k, { labels, v: by });
  }
  get(labels: Labels = {}): number {
    return this.values.get(key(labels))?.v ?? 0;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const { labels, v } of this.values.values()) lines.push(`${this.name}${fmtLabels(labels)} ${v}`);
    return lines.join("\n");
  }
}

export class Gauge implements Metric {
  private values = new Map<string, { labels: Labels; v: number }>();
  constructor(readonly name: string, readonly help: string, private readonly collect?: () => number) {
    registry.push(this);
  }
  set(v: number, labels: Labels = {}): void {
    this.values.set(key(labels), { labels, v });
  }
  render(): string {
    if (this.collect) this.set(this.collect());
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    for (const { labels, v } of this.values.values()) lines.push(`${this.name}${fmtLabels(labels)} ${v}`);
    return lines.join("\n");
  }
}

export class Histogram implements Metric {
  private series = new Map<string, { labels: Labels; counts: number[]; sum: number; n: number }>();
  constructor(readonly name: string, readonly help: string, readonly buckets: number[]) {
    registry.push(this);
  }
  observe(v: number, labels: Labels = {}): void {
    const k = key(labels);
    let s = this.series.get(k);
    if (!s) this.series.set(k, (s = { labels, counts: this.buckets.map(() => 0), sum: 0, n: 0 }));
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) s.counts[i]!++;
    s.sum += v;
    s.n++;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket${fmtLabels(s.labels, ["le", String(b)])} ${s.counts[i]}`));
      lines.push(`${this.name}_bucket${fmtLabels(s.labels, ["le", "+Inf"])} ${s.n}`);
      lines.push(`${this.name}_sum${fmtLabels(s.labels)} ${s.sum}`);
      lines.push(`${this.name}_count${fmtLabels(s.labels)} ${s.n}`);
    }
    return lines.join("\n");
  }
}

/**
 * A counter per user for the users with the most recent volume only, so cardinality stays
 * bounded however many users there are. Each user's count is exact since it was first seen by
 * this process (a series continues where it left off); a user's series is exported while it is
 * among the `top` users by recent volume (decayed with a one-minute half-life at each increment,
 * so scrapes do not change it) or started something within the last ten minutes after having
 * been exported. Users are remembered up to `remember`; the least recently active go first.
 */
export class TopUsersCounter implements Metric {
  private users = new Map<string, { count: number; recent: number; at: number; exported: boolean }>();
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly label: string,
    private readonly top = 20,
    private readonly remember = 10_000,
  ) {
    registry.push(this);
  }
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
  render(): string {
    const now = Date.now();
    const decayed = (u: { recent: number; at: number }) => u.recent * 2 ** (-(now - u.at) / 60_000);
    const top = new Set([...this.users].sort((a, b) => decayed(b[1]) - decayed(a[1])).slice(0, this.top).map(([k]) => k));
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [user, u] of this.users) {
      u.exported = top.has(user) || (u.exported && now - u.at < 600_000);
      if (u.exported) lines.push(`${this.name}${fmtLabels({ [this.label]: user })} ${u.count}`);
    }
    return lines.join("\n");
  }
}

export function renderMetrics(): string {
  return registry.map((m) => m.render()).join("\n") + "\n";
}

const LATENCY_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

// Process health (the seed's CPU and RAM dashboards).
let lastCpu = process.cpuUsage();
let lastAt = performance.now();
new Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", () => process.memoryUsage().rss);
new Gauge("process_cpu_ratio", "CPU time used per wall-clock second since the last scrape.", () => {
  const cpu = process.cpuUsage(lastCpu);
  const now = performance.now();
  const ratio = (cpu.user + cpu.system) / 1000 / Math.max(1, now - lastAt);
  lastCpu = process.cpuUsage();
  lastAt = now;
  return ratio;
});

export const metrics = {
  httpRequests: new Counter("http_requests_total", "HTTP requests by route, method and status."),
  httpDuration: new Histogram("http_request_duration_seconds", "HTTP request latency by route.", LATENCY_S),
  jobsCreated: new Counter("jobs_created_total", "Jobs accepted by the API."),
  jobsDispatched: new Counter("jobs_dispatched_total", "Jobs published to the due topic, by shard."),
  dispatchLateness: new Histogram("job_dispatch_lateness_seconds", "Publish time minus execute_at.", LATENCY_S),
  jobsLoaded: new Counter("scheduler_loaded_jobs_total", "Waiting jobs read by the shard actors' loads (a job re-read counts again)."),
  dispatchStep: new Histogram("scheduler_dispatch_step_seconds", "Time of each dispatch step (load and mark in SQL, publish to Kafka).", [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]),
  executorStep: new Histogram("executor_step_seconds", "Time of each batched executor statement (claim, record) and Kafka batch.", [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
  claimDelay: new Histogram("executor_claim_delay_seconds", "Publish time of a due message to its jobs' claims being durable (the wait in the topic and the claim).", LATENCY_S),
  jobsProcessed: new Counter("jobs_processed_total", "Job runs finished by the executor, by outcome."),
  jobsStarted: new TopUsersCounter("jobs_started_total", "Job runs started (claimed) by the executor, per user, for the users with the most recent starts.", "user_id"),
  jobLatency: new Histogram("job_latency_seconds", "Finish time minus execute_at of completed runs.", LATENCY_S),
  jobsDeadLettered: new Counter("jobs_dead_lettered_total", "Jobs written to the dead-letter topic."),
  kafkaRequests: new Counter("kafka_requests_total", "Requests this process sent to Kafka brokers, by client and API."),
  shardsOwned: new Gauge("scheduler_shards_owned", "Shards this scheduler owns."),
  inFlightWindow: new Gauge("scheduler_inflight_window_jobs", "Dispatched-but-unstarted jobs this scheduler may have out (start rate x target delay)."),
  inFlightJobs: new Gauge("scheduler_inflight_jobs", "This scheduler's jobs dispatched and not yet seen started."),
  startDelay: new Histogram("scheduler_start_delay_seconds", "Publish to start (seen through the executors' commits), per due message.", LATENCY_S),
  deadTuples: new Gauge("db_dead_tuples", "Dead row versions not yet vacuumed, by database and table."),
  vacuums: new Counter("db_vacuums_total", "Vacuums this process ran, by database and table."),
  retentionDeleted: new Counter("retention_deleted_total", "Rows the retention loop deleted, by table: finished jobs past JOB_RETENTION (with their attempts) and expired idempotency keys."),
};
