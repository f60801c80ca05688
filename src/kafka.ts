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
 * - consumers commit offsets by hand, only for messages whose processing is durable (for the
 *   executor: its jobs' claims); session and heartbeat timeouts are explicit so a dead
 *   executor's partitions move in ~10 s.
 */
import { Kafka, logLevel, Partitioners, type Consumer, type EachBatchPayload, type IHeaders, type Producer } from "kafkajs";
import { TUNING, type Config } from "./config.ts";
import { log } from "./log.ts";
import { metrics } from "./metrics.ts";

export interface OutMessage {
  key: string;
  value: string;
  headers?: Record<string, string>;
  /** Where to publish; the partitions in turn when not given. */
  partition?: number;
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

/** Where a published message landed. */
export interface Placement {
  partition: number;
  /** The message's offset (int64 offsets stay exact as numbers below 2^53). */
  offset: number;
}

export interface Publisher {
  /**
   * Resolves once every message is acknowledged by all in-sync replicas, with where each one
   * landed (in the order given). Messages go to the topic's partitions in turn.
   */
  publish(topic: string, messages: OutMessage[]): Promise<Placement[]>;
  close(): Promise<void>;
}

/** A fetched batch of one partition, handed to a consumer's onBatch. */
export interface PartitionBatch {
  partition: number;
  messages: InMessage[];
  /** The partition's high watermark at this fetch: the offset its next message will take. */
  highWatermark: string;
  /** False once the partition may have moved to another member (a rebalance) or the consumer is stopping. */
  isRunning(): boolean;
}

export interface ConsumerHandlers {
  /**
   * Takes the batch's messages into processing, in order, and returns the offset of the last
   * one taken (null: none): fetching continues after it. Committing is separate (commit).
   */
  onBatch(batch: PartitionBatch): Promise<string | null>;
  /** The partitions this member holds after a rebalance. */
  onAssigned?(partitions: number[]): void;
  /** The client gave up for good (it will not restart by itself). */
  onCrash?(error: Error): void;
}

/** A partition's next offset to consume, and a note that travels with the commit. */
export interface CommitEntry {
  next: number;
  metadata: string | null;
}

export interface Subscription {
  /** Commits, for each partition, the next offset to consume (one request). */
  commit(next: Map<number, CommitEntry>): Promise<void>;
  /** Stops fetching (runs already handed out go on); the member stays in the group. */
  pause(): void;
  /**
   * Stops fetching one partition until `unhold`: what a handler does instead of waiting inside
   * onBatch, which would stall every partition (kafkajs fetches again only once all return).
   */
  hold(partition: number): void;
  unhold(partition: number): void;
  /** Joined the group and not crashed, stopped or disconnected since. */
  member(): boolean;
  /** Leaves the group and closes the connection. */
  stop(): Promise<void>;
}

export class KafkaBus {
  private readonly kafka: Kafka;

  constructor(private readonly cfg: Config["kafka"]) {
    this.kafka = new Kafka({
      clientId: cfg.clientId,
      brokers: cfg.brokers,
      connectionTimeout: TUNING.kafka.connectionTimeoutMs,
      requestTimeout: TUNING.kafka.requestTimeoutMs,
      retry: { ...TUNING.kafka.clientRetry },
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

  /** Partitions of a topic, from the broker's metadata. */
  async partitionCount(topic: string): Promise<number> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const meta = await admin.fetchTopicMetadata({ topics: [topic] });
      return meta.topics[0]!.partitions.length;
    } finally {
      await admin.disconnect();
    }
  }

  /** A publisher; the partitions of `topics` are looked up now, not on the first publish. */
  async publisher(topics = [this.cfg.topicDue, this.cfg.topicDlq]): Promise<Publisher> {
    const producer: Producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      // Partitions are chosen here (in turn), so every message's offset is known from the reply.
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { ...TUNING.kafka.producerRetry },
    });
    producer.on(producer.events.REQUEST, (e) => metrics.kafkaRequests.inc({ client: "producer", api: e.payload.apiName }));
    await producer.connect();
    const partitions = new Map<string, { count: number; next: number }>();
    const assign = async (topic: string): Promise<{ count: number; next: number }> => {
      let p = partitions.get(topic);
      if (!p) partitions.set(topic, (p = { count: await this.partitionCount(topic), next: 0 }));
      return p;
    };
    for (const t of topics) await assign(t).catch(() => {}); // a missing topic is looked up again when used
    // Group commit for the producer: while one request is in flight, later publish calls queue
    // up and go out together in the next request (one round trip for many callers, e.g. every
    // dispatch of a scheduler), each caller resolving when its own messages are acked.
    type Queued = { topic: string; messages: (OutMessage & { partition: number })[]; done: PromiseWithResolvers<Placement[]> };
    let queue: Queued[] = [];
    let sending = false;
    const pump = async () => {
      sending = true;
      while (queue.length > 0) {
        const batch = queue;
        queue = [];
        const byTopic = new Map<string, (OutMessage & { partition: number })[]>();
        for (const q of batch) {
          const list = byTopic.get(q.topic);
          if (list) list.push(...q.messages);
          else byTopic.set(q.topic, [...q.messages]);
        }
        try {
          const meta = await producer.sendBatch({
            acks: -1,
            timeout: 30_000,
            topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
          });
          // kafkajs sends a partition's messages in the order given, from its base offset.
          const next = new Map(meta.map((m) => [`${m.topicName}/${m.partition}`, Number(m.baseOffset)]));
          for (const q of batch) {
            q.done.resolve(
              q.messages.map((m) => {
                const key = `${q.topic}/${m.partition}`;
                const offset = next.get(key)!;
                next.set(key, offset + 1);
                return { partition: m.partition, offset };
              }),
            );
          }
        } catch (e) {
          for (const q of batch) q.done.reject(e);
        }
      }
      sending = false;
    };
    return {
      publish: async (topic, messages) => {
        if (messages.length === 0) return [];
        const p = await assign(topic);
        const placed = messages.map((m) => ({ ...m, partition: m.partition !== undefined && m.partition < p.count ? m.partition : p.next++ % p.count }));
        const done = Promise.withResolvers<Placement[]>();
        queue.push({ topic, messages: placed, done });
        if (!sending) void pump();
        return done.promise;
      },
      close: () => producer.disconnect(),
    };
  }

  /** Per partition of `topic`, the offset its next message will get (its high watermark). */
  async endOffsets(topic: string): Promise<Map<number, number>> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      return new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, Number(p.high)]));
    } finally {
      await admin.disconnect();
    }
  }

  /**
   * The consumer group's commits on a topic: per partition, the next offset it will consume and
   * the commit's note (partitions without a commit are left out). One admin connection, kept open.
   */
  async offsetReader(groupId: string, topic: string): Promise<{ read(): Promise<Map<number, CommitEntry>>; close(): Promise<void> }> {
    const admin = this.kafka.admin();
    admin.on(admin.events.REQUEST, (e) => metrics.kafkaRequests.inc({ client: "admin", api: e.payload.apiName }));
    await admin.connect();
    return {
      read: async () => {
        const [t] = await admin.fetchOffsets({ groupId, topics: [topic] });
        const out = new Map<number, CommitEntry>();
        for (const p of t?.partitions ?? []) if (Number(p.offset) >= 0) out.set(p.partition, { next: Number(p.offset), metadata: p.metadata || null });
        return out;
      },
      close: () => admin.disconnect(),
    };
  }

  /**
   * Consumes `topic` in the group `groupId` with manual commits: onBatch takes messages into
   * processing and the caller commits (Subscription.commit) only offsets whose processing is
   * durable. kafkajs fetches again only when every batch of the previous fetch returned, so
   * onBatch must return as soon as it has taken its messages, not when they are done.
   */
  async subscribe(groupId: string, topic: string, handlers: ConsumerHandlers, opts: { fromBeginning?: boolean } = {}): Promise<Subscription> {
    const consumer: Consumer = this.kafka.consumer({
      groupId,
      sessionTimeout: this.cfg.sessionTimeoutMs,
      rebalanceTimeout: TUNING.kafka.rebalanceTimeoutMs,
      heartbeatInterval: Math.min(TUNING.kafka.heartbeatIntervalMs, Math.floor(this.cfg.sessionTimeoutMs / 3)),
      maxWaitTimeInMs: TUNING.kafka.fetchMaxWaitMs,
      retry: { ...TUNING.kafka.clientRetry },
    });
    consumer.on(consumer.events.REQUEST, (e) => metrics.kafkaRequests.inc({ client: "consumer", api: e.payload.apiName }));
    // A member in the group, fetching: from each join until a crash (kafkajs may restart the
    // consumer after one, and it joins again), a stop or a disconnect.
    let member = false;
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      member = true;
      const partitions = e.payload.memberAssignment[topic] ?? [];
      metrics.partitionsAssigned.set(partitions.length);
      log.info("joined the consumer group", { group: groupId, member: e.payload.memberId, leader: e.payload.isLeader, partitions, join_ms: e.payload.duration });
      handlers.onAssigned?.(partitions);
    });
    consumer.on(consumer.events.REBALANCING, () => log.info("consumer group rebalancing", { group: groupId }));
    consumer.on(consumer.events.CRASH, (e) => {
      member = false;
      metrics.consumerCrashes.inc({ restart: String(e.payload.restart) });
      if (!e.payload.restart) handlers.onCrash?.(e.payload.error);
    });
    consumer.on(consumer.events.STOP, () => (member = false));
    consumer.on(consumer.events.DISCONNECT, () => (member = false));
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: opts.fromBeginning ?? true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: this.cfg.partitions,
      eachBatch: async (payload: EachBatchPayload) => {
        const { batch } = payload;
        const last = await handlers.onBatch({
          partition: batch.partition,
          messages: batch.messages.map((m) => ({
            topic: batch.topic,
            partition: batch.partition,
            offset: m.offset,
            timestamp: Number(m.timestamp),
            key: m.key?.toString() ?? null,
            value: m.value?.toString() ?? "",
            headers: decodeHeaders(m.headers),
          })),
          highWatermark: batch.highWatermark,
          isRunning: () => payload.isRunning() && !payload.isStale(),
        }).catch((err: unknown) => {
          metrics.consumerBatchErrors.inc();
          throw err;
        });
        // The fetch position moves past what was taken; the committed offset does not.
        if (last !== null) payload.resolveOffset(last);
      },
    });
    return {
      commit: async (next) => {
        if (next.size === 0) return;
        await consumer.commitOffsets([...next].map(([partition, c]) => ({ topic, partition, offset: String(c.next), metadata: c.metadata })));
      },
      pause: () => consumer.pause([{ topic }]),
      hold: (partition) => consumer.pause([{ topic, partitions: [partition] }]),
      unhold: (partition) => consumer.resume([{ topic, partitions: [partition] }]),
      member: () => member,
      stop: () => consumer.disconnect(),
    };
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
