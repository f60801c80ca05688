/**
 * Everything that touches the Kafka client lives here, so kafkajs (unmaintained since 2.2.4)
 * could be swapped for another client by rewriting this one file.
 *
 * Settings chosen on purpose:
 * - topics are created explicitly (ensureTopics); the broker's auto-creation is never relied on;
 * - the producer is idempotent with acks from all in-sync replicas and one request in flight
 *   per broker (kafkajs reorders sequence numbers with concurrent requests). Retries are bounded
 *   so a dead broker surfaces as an error the caller handles, instead of an endless hang; a
 *   duplicate that bounded retries may cause is harmless (the executor's guarded claim drops it);
 * - consumers commit offsets by hand, only after the outcome of a message is durable in SQL;
 *   session and heartbeat timeouts are explicit so a dead executor's partitions move in ~10 s.
 */
import { Kafka, logLevel, Partitioners, type Consumer, type EachBatchPayload, type IHeaders, type Producer } from "kafkajs";
import type { Config } from "./config.ts";
import { log } from "./log.ts";

export interface OutMessage {
  key: string;
  value: string;
  headers?: Record<string, string>;
}

export interface InMessage {
  topic: string;
  partition: number;
  offset: string;
  /** Producer's create time (ms since the epoch). */
  timestamp: number;
  key: string | null;
  value: string;
  headers: Record<string, string>;
}

export interface Publisher {
  /** Resolves once every message is acknowledged by all in-sync replicas. */
  publish(topic: string, messages: OutMessage[]): Promise<void>;
  close(): Promise<void>;
}

export interface BatchContext {
  /** Marks everything up to and including `offset` as done and commits it. */
  commit(offset: string): Promise<void>;
  heartbeat(): Promise<void>;
  isRunning(): boolean;
}

export interface Subscription {
  stop(): Promise<void>;
}

export class KafkaBus {
  private readonly kafka: Kafka;

  constructor(private readonly cfg: Config["kafka"]) {
    this.kafka = new Kafka({
      clientId: cfg.clientId,
      brokers: cfg.brokers,
      connectionTimeout: 3_000,
      requestTimeout: 30_000,
      retry: { initialRetryTime: 200, maxRetryTime: 5_000, retries: 8 },
      logLevel: logLevel.WARN,
      logCreator: () => ({ level, namespace, log: entry }) => {
        const { message, timestamp: _ts, logger: _logger, ...rest } = entry as { message: string; [k: string]: unknown };
        const fields = { component: "kafka", namespace, ...rest };
        if (level <= logLevel.ERROR) log.error(message, fields);
        else log.warn(message, fields);
      },
    });
  }

  /** Creates the topics the system uses when missing; safe to call from every process. */
  async ensureTopics(topics = [this.cfg.topicDue, this.cfg.topicDlq]): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const existing = new Set(await admin.listTopics());
      const missing = topics.filter((t) => !existing.has(t));
      if (missing.length > 0) {
        await admin
          .createTopics({
            waitForLeaders: true,
            topics: missing.map((topic) => ({ topic, numPartitions: this.cfg.partitions, replicationFactor: this.cfg.replicationFactor })),
          })
          .catch((e: Error & { retriable?: boolean }) => {
            // TOPIC_ALREADY_EXISTS: another process won the race. A retriable error here (a
            // broker that just started answers UNKNOWN_TOPIC_OR_PARTITION while it loads the
            // new partitions) is settled by waiting for the leaders below.
            if (!/already exists/i.test(e.message) && !e.retriable) throw e;
          });
      }
      await this.awaitMetadata(admin, topics);
    } finally {
      await admin.disconnect();
    }
  }

  /**
   * Waits until the broker serves metadata for every topic (right after a broker start or a
   * topic creation it can briefly answer UNKNOWN_TOPIC_OR_PARTITION), up to 30 s.
   */
  private async awaitMetadata(admin: ReturnType<Kafka["admin"]>, topics: string[]): Promise<void> {
    const until = Date.now() + 30_000;
    for (;;) {
      try {
        const meta = await admin.fetchTopicMetadata({ topics });
        if (meta.topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return;
      } catch (e) {
        if (Date.now() > until) throw e;
      }
      if (Date.now() > until) throw new Error(`topics ${topics.join(", ")} have no leaders after 30 s`);
      await Bun.sleep(200);
    }
  }

  /** Partition count and per-partition high watermarks of a topic (tests, benchmarks, ops). */
  async topicOffsets(topic: string): Promise<{ partition: number; high: string; low: string }[]> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      return (await admin.fetchTopicOffsets(topic)).map((p) => ({ partition: p.partition, high: p.high, low: p.low }));
    } finally {
      await admin.disconnect();
    }
  }

  async publisher(): Promise<Publisher> {
    const producer: Producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      // Murmur2 on the key (the job id), as the Java client does: spreads jobs over partitions.
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { initialRetryTime: 100, maxRetryTime: 2_000, retries: 10 },
    });
    await producer.connect();
    // Group commit for the producer: while one request is in flight, later publish calls queue
    // up and go out together in the next request (one round trip for many callers, e.g. all
    // shard actors of a scheduler), each caller resolving when its own messages are acked.
    let queue: { topic: string; messages: OutMessage[]; done: PromiseWithResolvers<void> }[] = [];
    let sending = false;
    const pump = async () => {
      sending = true;
      while (queue.length > 0) {
        const batch = queue;
        queue = [];
        const byTopic = new Map<string, OutMessage[]>();
        for (const q of batch) {
          const list = byTopic.get(q.topic);
          if (list) list.push(...q.messages);
          else byTopic.set(q.topic, [...q.messages]);
        }
        try {
          await producer.sendBatch({
            acks: -1,
            timeout: 30_000,
            topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
          });
          for (const q of batch) q.done.resolve();
        } catch (e) {
          for (const q of batch) q.done.reject(e);
        }
      }
      sending = false;
    };
    return {
      publish: (topic, messages) => {
        if (messages.length === 0) return Promise.resolve();
        const done = Promise.withResolvers<void>();
        queue.push({ topic, messages, done });
        if (!sending) void pump();
        return done.promise;
      },
      close: () => producer.disconnect(),
    };
  }

  /**
   * Consumes `topic` in the group `groupId`, one batch at a time per partition, with manual
   * commits. `onBatch` must commit (ctx.commit) only offsets whose outcome is durable.
   */
  async subscribe(
    groupId: string,
    topic: string,
    onBatch: (messages: InMessage[], ctx: BatchContext) => Promise<void>,
    opts: { partitionsConcurrently?: number; fromBeginning?: boolean } = {},
  ): Promise<Subscription> {
    const consumer: Consumer = this.kafka.consumer({
      groupId,
      sessionTimeout: 10_000,
      rebalanceTimeout: 30_000,
      heartbeatInterval: 1_000,
      maxWaitTimeInMs: 100,
      retry: { initialRetryTime: 200, maxRetryTime: 5_000, retries: 8 },
    });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: opts.fromBeginning ?? true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: opts.partitionsConcurrently ?? 4,
      eachBatch: async (payload: EachBatchPayload) => {
        const { batch } = payload;
        const messages: InMessage[] = batch.messages.map((m) => ({
          topic: batch.topic,
          partition: batch.partition,
          offset: m.offset,
          timestamp: Number(m.timestamp),
          key: m.key?.toString() ?? null,
          value: m.value?.toString() ?? "",
          headers: decodeHeaders(m.headers),
        }));
        await onBatch(messages, {
          commit: async (offset) => {
            payload.resolveOffset(offset);
            await consumer.commitOffsets([
              { topic: batch.topic, partition: batch.partition, offset: (BigInt(offset) + 1n).toString() },
            ]);
          },
          heartbeat: () => payload.heartbeat(),
          isRunning: () => payload.isRunning() && !payload.isStale(),
        });
      },
    });
    return { stop: () => consumer.disconnect() };
  }
}

function decodeHeaders(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? String(v[0]) : v.toString();
  }
  return out;
}
