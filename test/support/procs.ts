/**
 * Runs real role processes (`bun src/main.ts <role>`) for integration tests, each on its own
 * port, against an isolated slice of the real services: fresh databases, unique Kafka topics
 * and consumer group, a unique etcd prefix.
 */
import type { Subprocess } from "bun";
import { join } from "node:path";
import { Etcd3 } from "etcd3";
import type { DueEntry } from "../../src/due-message.ts";
import { KafkaBus } from "../../src/kafka.ts";
import { ETCD, freshDatabases, KAFKA, requireService, testConfig, uniqueName } from "./env.ts";

const ROOT = join(import.meta.dir, "..", "..");
// Below the ephemeral range (32768+), where outgoing connections could already hold a port.
let nextPort = 21_000 + (process.pid % 500) * 20;

/** The next port in our range that nothing listens on right now. */
function freePort(): number {
  for (;;) {
    const port = nextPort++;
    if (nextPort >= 32_000) nextPort = 21_000;
    try {
      const probe = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
      probe.stop(true);
      return port;
    } catch {}
  }
}

export interface RoleProc {
  role: string;
  port: number;
  proc: Subprocess;
  logs: string[];
  url: string;
  kill(signal?: number): void;
  exited: Promise<number>;
}

export interface Slice {
  env: Record<string, string>;
  prefix: string;
  topicDue: string;
  topicDlq: string;
  bus: KafkaBus;
  etcd: Etcd3;
  procs: RoleProc[];
  start(role: string, extra?: Record<string, string>, bunArgs?: string[]): Promise<RoleProc>;
  close(): Promise<void>;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await Bun.sleep(everyMs);
  }
}

export async function slice(opts: { databases?: number; servers?: string[]; env?: Record<string, string> } = {}): Promise<Slice> {
  await Promise.all([opts.servers ? null : requireService("postgresql"), requireService("kafka"), requireService("etcd")]);
  const dbs = await freshDatabases(opts.databases ?? 1, { servers: opts.servers });
  const id = uniqueName("s");
  const env: Record<string, string> = {
    APP_MODE: "local",
    LOG_LEVEL: "info",
    DATABASE_URLS: dbs.urls.join(","),
    KAFKA_BROKERS: KAFKA,
    ETCD_ENDPOINTS: ETCD,
    ETCD_PREFIX: `/test/${id}`,
    KAFKA_TOPIC_DUE: `due.${id}`,
    KAFKA_TOPIC_DLQ: `dlq.${id}`,
    KAFKA_GROUP_ID: `executors.${id}`,
    KAFKA_PARTITIONS: "4",
    SHARD_COUNT: "8",
    DB_POOL_MAX: "4",
    KAFKAJS_NO_PARTITIONER_WARNING: "1",
    ...opts.env,
  };
  const config = testConfig(env);
  const bus = new KafkaBus(config.kafka);
  await bus.ensureTopics();
  const etcd = new Etcd3({ hosts: ETCD });
  const procs: RoleProc[] = [];

  const start = async (role: string, extra: Record<string, string> = {}, bunArgs: string[] = []): Promise<RoleProc> => {
    const port = freePort();
    const logs: string[] = [];
    const proc = Bun.spawn(["bun", ...bunArgs, "src/main.ts", role], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", ...env, ...extra, PORT: String(port) },
      stdout: "pipe",
      stderr: "pipe",
    });
    for (const stream of [proc.stdout, proc.stderr]) {
      void (async () => {
        const decoder = new TextDecoder();
        for await (const chunk of stream as ReadableStream<Uint8Array>) logs.push(...decoder.decode(chunk).split("\n").filter(Boolean));
      })();
    }
    const rp: RoleProc = { role, port, proc, logs, url: `http://127.0.0.1:${port}`, kill: (s = 15) => proc.kill(s), exited: proc.exited };
    procs.push(rp);
    await waitFor(`${role} on :${port} to be ready`, async () => {
      if (proc.exitCode !== null) throw new Error(`${role} exited with ${proc.exitCode}: ${logs.slice(-10).join("\n")}`);
      return (await fetch(`${rp.url}/readyz`)).ok;
    }, 60_000);
    return rp;
  };

  return {
    env,
    prefix: env.ETCD_PREFIX!,
    topicDue: env.KAFKA_TOPIC_DUE!,
    topicDlq: env.KAFKA_TOPIC_DLQ!,
    bus,
    etcd,
    procs,
    start,
    close: async () => {
      for (const p of procs) if (p.proc.exitCode === null) p.kill(9);
      await Promise.all(procs.map((p) => p.exited));
      await etcd.delete().prefix(env.ETCD_PREFIX!).catch(() => {});
      etcd.close();
      await dbs.drop();
    },
  };
}

/** Shard -> owner member id, as etcd says now. */
export async function owners(s: Slice): Promise<Map<number, string>> {
  const kv = await s.etcd.getAll().prefix(`${s.prefix}/shards/`).strings();
  return new Map(Object.entries(kv).map(([k, v]) => [Number(k.slice(k.lastIndexOf("/") + 1)), v]));
}

/** Reads every message on a topic from the beginning until `until` says stop (or timeout). */
export async function collect<T>(s: Slice, topic: string, until: (all: T[]) => boolean, timeoutMs = 30_000): Promise<{ value: T; timestamp: number; headers: Record<string, string> }[]> {
  const out: { value: T; timestamp: number; headers: Record<string, string> }[] = [];
  const done = Promise.withResolvers<void>();
  const sub = await s.bus.subscribe(uniqueName("reader"), topic, {
    onBatch: async ({ messages }) => {
      for (const m of messages) out.push({ value: JSON.parse(m.value), timestamp: m.timestamp, headers: m.headers });
      if (until(out.map((o) => o.value))) done.resolve();
      return messages.at(-1)?.offset ?? null;
    },
  });
  await Promise.race([done.promise, Bun.sleep(timeoutMs)]);
  await sub.stop();
  return out;
}

/** Every job entry published on the due topic (messages carry several), with its publish time. */
export async function collectDue(s: Slice, until: (all: DueEntry[]) => boolean, timeoutMs = 30_000): Promise<{ value: DueEntry; timestamp: number }[]> {
  const flat = (msgs: { value: { jobs?: DueEntry[] } & Partial<DueEntry>; timestamp: number }[]) =>
    msgs.flatMap((m) => (m.value.jobs ?? [m.value as DueEntry]).map((value) => ({ value, timestamp: m.timestamp })));
  let entries: DueEntry[] = [];
  const msgs = await collect<{ jobs?: DueEntry[] } & Partial<DueEntry>>(s, s.topicDue, (all) => {
    entries = all.flatMap((v) => v.jobs ?? [v as DueEntry]);
    return until(entries);
  }, timeoutMs);
  return flat(msgs);
}

/** A scrape as {series -> value}; series with labels as written, e.g. `jobs_processed_total{outcome="succeeded"}`. */
export async function scrape(role: RoleProc): Promise<{ series: Map<string, number>; types: Set<string> }> {
  const text = await (await fetch(`${role.url}/metrics`)).text();
  const series = new Map<string, number>();
  const types = new Set<string>();
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) types.add(line.split(" ")[2]!);
    else if (line && !line.startsWith("#")) {
      const at = line.lastIndexOf(" ");
      series.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
  }
  return { series, types };
}
/** The sum of every series of `name` whose labels include each of `labels`. */
export function total(m: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [k, v] of m) {
    const base = k.includes("{") ? k.slice(0, k.indexOf("{")) : k;
    if (base === name && Object.entries(labels).every(([l, want]) => k.includes(`${l}="${want}"`))) sum += v;
  }
  return sum;
}

/** The sum of `name`'s series (with `labels`) in a role's metrics now. */
export async function metric(role: RoleProc, name: string, labels: Record<string, string> = {}): Promise<number> {
  return total((await scrape(role)).series, name, labels);
}

/** A request to a role's API; the JSON answer, or an error naming the request on any non-2xx. */
export async function callApi(role: RoleProc, method: string, path: string, body?: unknown, token?: string): Promise<any> {
  const res = await fetch(role.url + path, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json: any = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** A user signed up (with `weight`) and logged in through the role's API: its token and id. */
export async function apiUser(api: RoleProc, name: string, weight = 1): Promise<{ token: string; id: string }> {
  const created = await callApi(api, "POST", "/api/v1/users", { username: name, password: "password123", job_weight: weight });
  const token = (await callApi(api, "POST", "/api/v1/auth/login", { username: name, password: "password123" })).data.token;
  return { token, id: String(created.data.id) };
}
