/**
 * Job handlers. `log` (no target): the message is the work; it is written to the log.
 * `http` (a target): the message is sent as the body to the target URL, signed so receivers
 * can verify it came from this scheduler:
 *   X-Signature-Timestamp: <unix seconds>
 *   X-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
 * Targets that resolve to loopback, private, link-local or otherwise internal addresses are
 * refused (a permanent error) unless HTTP_TARGET_ALLOW_PRIVATE is set. Redirects are not
 * followed, so a public URL cannot bounce the call to an internal one.
 */
import { createHmac } from "node:crypto";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { ClaimedJob } from "../../actors/job-run.machine.ts";
import { classifyHttpStatus, type RunResult } from "../../actors/outcome.ts";
import { log } from "../log.ts";

export interface HandlerSettings {
  allowPrivate: boolean;
  signingSecret: string;
  defaultTimeoutMs: number;
}

export function sign(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

/** True for addresses a public webhook must never reach. */
export function isInternalAddress(ip: string): boolean {
  if (isIP(ip) === 4) {
    const [a, b] = ip.split(".").map(Number) as [number, number];
    return a === 0 || a === 10 || a === 127 || (a === 100 && b >= 64 && b <= 127) || (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 198 && (b === 18 || b === 19)) || a >= 224;
  }
  const v6 = ip.toLowerCase();
  if (v6 === "::" || v6 === "::1") return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v6);
  if (mapped) return isInternalAddress(mapped[1]!);
  return /^(fc|fd|fe8|fe9|fea|feb|ff)/.test(v6);
}

async function refusedTarget(url: URL): Promise<string | null> {
  const host = url.hostname.replace(/^\[|\]$/g, "");
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  } catch {
    return null; // unresolvable: let the request fail as a (retryable) connection error
  }
  const internal = addresses.find(isInternalAddress);
  return internal ? `target ${host} resolves to internal address ${internal}; refused (set HTTP_TARGET_ALLOW_PRIVATE to allow)` : null;
}

export async function runHttp(job: ClaimedJob, s: HandlerSettings): Promise<RunResult> {
  const target = job.target!;
  let url: URL;
  try {
    url = new URL(target.url);
  } catch {
    return { ok: false, retryable: false, error: "invalid target url" };
  }
  if (!s.allowPrivate) {
    const refused = await refusedTarget(url);
    if (refused) return { ok: false, retryable: false, error: refused };
  }
  const timestamp = String(Math.floor(Date.now() / 1000));
  const body = target.method === "GET" || target.method === "DELETE" ? "" : job.message;
  const timeoutMs = target.timeout_ms ?? s.defaultTimeoutMs;
  try {
    const res = await fetch(url, {
      method: target.method,
      headers: {
        "content-type": "text/plain; charset=utf-8",
        ...target.headers,
        "x-job-id": job.id,
        "x-job-attempt": String(job.attempt),
        "x-signature-timestamp": timestamp,
        "x-signature": sign(s.signingSecret, timestamp, body),
      },
      body: body === "" ? undefined : body,
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body?.cancel().catch(() => {});
    return classifyHttpStatus(res.status);
  } catch (e) {
    const err = e as Error;
    if (err.name === "TimeoutError" || err.name === "AbortError") return { ok: false, retryable: true, error: `timed out after ${timeoutMs} ms` };
    return { ok: false, retryable: true, error: `connection error: ${err.message}` };
  }
}

export async function runLog(job: ClaimedJob): Promise<RunResult> {
  log.info("job executed", { job_id: job.id, shard: job.shard_id, user_id: job.user_id, attempt: job.attempt, message: job.message });
  return { ok: true };
}

export function runJob(job: ClaimedJob, s: HandlerSettings): Promise<RunResult> {
  return job.target ? runHttp(job, s) : runLog(job);
}
