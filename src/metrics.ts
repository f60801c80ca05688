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
  dispatchStep: new Histogram("scheduler_dispatch_step_seconds", "Time of each dispatch step (mark in SQL, publish to Kafka).", [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]),
  executorStep: new Histogram("executor_step_seconds", "Time of each batched executor statement (claim, record) and Kafka batch.", [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
  jobsProcessed: new Counter("jobs_processed_total", "Job runs finished by the executor, by outcome."),
  jobLatency: new Histogram("job_latency_seconds", "Finish time minus execute_at of completed runs.", LATENCY_S),
  jobsDeadLettered: new Counter("jobs_dead_lettered_total", "Jobs written to the dead-letter topic."),
  shardsOwned: new Gauge("scheduler_shards_owned", "Shards this scheduler owns."),
};
