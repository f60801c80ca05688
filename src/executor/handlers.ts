/**
 * Job handlers, one per kind (the job's `kind` column), registered in HANDLERS below: a new kind
 * is a function here (or its own file) plus its line there, and its name in JOB_KINDS
 * (src/jobs/job-input.ts) with whatever its input needs checked.
 * `log`: the message is the work; it is written to the log.
 * `http`: the message is sent as the body to the target URL, signed with the job owner's key so
 * receivers can verify it (src/executor/signing.ts).
 * Targets that resolve to loopback, private, link-local or otherwise internal addresses, in any
 * spelling, are refused (a permanent error) unless HTTP_TARGET_ALLOW_PRIVATE is set; the host is
 * resolved once and the call connects to the address checked (DNS rebinding cannot swap it); a
 * name that does not resolve is never called. Redirects are not followed, so a public URL cannot
 * bounce the call to an internal one.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import ipaddr from "ipaddr.js";
import type { ClaimedJob } from "../jobs/job-row.ts";
import { classifyHttpStatus, type RunResult } from "../../actors/outcome.ts";
import type { JobKind } from "../jobs/job-input.ts";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { log } from "../log.ts";
import { failed, injectContext, tracer, recordingActive } from "../telemetry.ts";
import { signatureHeader } from "./signing.ts";

export interface HandlerSettings {
  allowPrivate: boolean;
  /** The keys of the user's calls, newest first (none: the user was deleted). */
  signingKeys(userId: string): Promise<string[]>;
  defaultTimeoutMs: number;
}

/**
 * True for addresses a public webhook must never reach: anything but plain global unicast, in
 * every spelling (ipaddr.js parses dotted, hex, IPv4-mapped and -compatible IPv6). IPv6 forms
 * that carry an IPv4 address (mapped, translated, NAT64, 6to4, Teredo) count as internal: they
 * route to that address by other means.
 */
export function isInternalAddress(ip: string): boolean {
  if (!ipaddr.isValid(ip)) return true;
  const addr = ipaddr.process(ip); // IPv4-mapped IPv6 becomes the IPv4 address
  if (addr.kind() === "ipv4") {
    const [a, b] = (addr as ipaddr.IPv4).octets;
    // unicast by ipaddr's table, less what it does not name: benchmarking 198.18/15, IETF 192.0.0/24.
    return addr.range() !== "unicast" || (a === 198 && (b === 18 || b === 19)) || (a === 192 && b === 0);
  }
  const v6 = addr as ipaddr.IPv6;
  // ::a.b.c.d (IPv4-compatible, deprecated) is not named by ipaddr: the first 96 bits are zero.
  if (v6.parts.slice(0, 6).every((p) => p === 0)) return true;
  return v6.range() !== "unicast";
}

/**
 * Resolves the target's host once and checks every address; the call then connects to the
 * address that was checked (no second lookup a rebinding DNS could answer differently). A name
 * that does not resolve is a retryable failure, never a call.
 */
async function resolveTarget(host: string, allowPrivate: boolean): Promise<{ address: string } | { error: string; retryable: boolean }> {
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  } catch (e) {
    return { error: `cannot resolve ${host}: ${(e as Error).message}`, retryable: true };
  }
  if (addresses.length === 0) return { error: `cannot resolve ${host}`, retryable: true };
  const internal = allowPrivate ? undefined : addresses.find(isInternalAddress);
  if (internal) return { error: `target ${host} resolves to internal address ${internal}; refused (set HTTP_TARGET_ALLOW_PRIVATE to allow)`, retryable: false };
  return { address: addresses[0]! };
}

export async function runHttp(job: ClaimedJob, s: HandlerSettings): Promise<RunResult> {
  const target = job.target!;
  let url: URL;
  try {
    url = new URL(target.url);
  } catch {
    return { ok: false, retryable: false, error: "invalid target url", errorClass: "target_refused" };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return { ok: false, retryable: false, error: "target url must be http or https", errorClass: "target_refused" };
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const resolved = await resolveTarget(host, s.allowPrivate);
  if ("error" in resolved) return { ok: false, retryable: resolved.retryable, error: resolved.error, errorClass: resolved.retryable ? "dns" : "target_refused" };
  // Connect to the checked address; the name still goes out as Host (and as SNI and the name
  // the certificate must carry, for https).
  const pinned = new URL(url);
  pinned.hostname = isIP(resolved.address) === 6 ? `[${resolved.address}]` : resolved.address;
  const keys = await s.signingKeys(job.user_id);
  if (keys.length === 0) return { ok: false, retryable: false, error: "the job's owner no longer exists; not called", errorClass: "target_refused" };
  const timestamp = String(Math.floor(Date.now() / 1000));
  const body = target.method === "GET" || target.method === "DELETE" ? "" : job.message;
  const timeoutMs = target.timeout_ms ?? s.defaultTimeoutMs;
  // The call is an HTTP client span of the job's trace, and the target gets its `traceparent`
  // (with tracing off, the job's own trace context, so the receiver still sees the trace id).
  const span = recordingActive()
    ? tracer().startSpan(target.method, {
        kind: SpanKind.CLIENT,
        attributes: { "http.request.method": target.method, "url.full": target.url, "server.address": url.hostname, "server.port": Number(url.port || (url.protocol === "https:" ? 443 : 80)), "http.request.resend_count": job.attempt - 1 },
      })
    : null;
  const traceHeaders = span ? injectContext(trace.setSpan(context.active(), span)) : (job.trace_context ?? {});
  try {
    const res = await fetch(pinned, {
      method: target.method,
      headers: {
        "content-type": "text/plain; charset=utf-8",
        ...target.headers,
        ...traceHeaders,
        host: url.host,
        "x-job-id": job.id,
        "x-job-attempt": String(job.attempt),
        "x-signature-timestamp": timestamp,
        "x-signature": signatureHeader(keys, { timestamp, jobId: job.id, method: target.method, url: target.url, body }),
      },
      body: body === "" ? undefined : body,
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
      ...(url.protocol === "https:" && !isIP(host)
        ? { tls: { serverName: host, checkServerIdentity: (_: string, cert: PeerCertificate) => checkServerIdentity(host, cert) } }
        : {}),
    });
    await res.body?.cancel().catch(() => {});
    span?.setAttribute("http.response.status_code", res.status);
    const result = classifyHttpStatus(res.status);
    if (!result.ok) span?.setStatus({ code: SpanStatusCode.ERROR, message: result.error });
    return result;
  } catch (e) {
    const err = e as Error;
    if (span) failed(span, err);
    if (err.name === "TimeoutError" || err.name === "AbortError") return { ok: false, retryable: true, error: `timed out after ${timeoutMs} ms`, errorClass: "timeout" };
    return { ok: false, retryable: true, error: `connection error: ${err.message}`, errorClass: "connection" };
  } finally {
    span?.end();
  }
}

export async function runLog(job: ClaimedJob): Promise<RunResult> {
  log.info("job executed", { job_id: job.id, shard: job.shard_id, user_id: job.user_id, attempt: job.attempt, message: job.message });
  return { ok: true };
}

type Handler = (job: ClaimedJob, s: HandlerSettings) => Promise<RunResult>;

const HANDLERS: Record<JobKind, Handler> = {
  log: runLog,
  http: runHttp,
};

export function runJob(job: ClaimedJob, s: HandlerSettings): Promise<RunResult> {
  const handler = (HANDLERS as Record<string, Handler | undefined>)[job.kind];
  if (!handler) return Promise.resolve({ ok: false, retryable: false, error: `no handler for kind ${JSON.stringify(job.kind)}`, errorClass: "handler" });
  return handler(job, s);
}
