/**
 * Signatures of HTTP target calls, with the job owner's own key (users.signing_secret): a
 * receiver that checks them knows the call came from this scheduler, for this job, to this URL,
 * and was not replayed from another user's job or from long ago.
 *
 *   X-Signature-Timestamp: <unix seconds>
 *   X-Job-Id:              <job id>
 *   X-Signature:           v1=<hex HMAC-SHA256(key, "<timestamp>.<job id>.<METHOD>.<url>.<body>")>[,v1=<...>]
 *
 * During a key rotation's grace period the header carries one signature per valid key, the
 * newest first; a receiver accepts the call if any of them verifies with a key it holds.
 * `verifySignature` is what a receiver runs (README has the same in a dozen lines).
 */
import { createHmac, timingSafeEqual } from "node:crypto";

export interface SignedCall {
  timestamp: string;
  jobId: string;
  method: string;
  url: string;
  body: string;
}

export function signedText(c: SignedCall): string {
  return `${c.timestamp}.${c.jobId}.${c.method.toUpperCase()}.${c.url}.${c.body}`;
}

/** The X-Signature header value: one `v1=` signature per key. */
export function signatureHeader(keys: readonly string[], c: SignedCall): string {
  const text = signedText(c);
  return keys.map((k) => `v1=${createHmac("sha256", k).update(text).digest("hex")}`).join(",");
}

/** A receiver's check: some signature matches `key`, and the timestamp is within `toleranceS` of now. */
export function verifySignature(header: string, key: string, c: SignedCall, toleranceS = 300, nowS = Date.now() / 1000): boolean {
  const ts = Number(c.timestamp);
  if (!/^\d+$/.test(c.timestamp) || Math.abs(nowS - ts) > toleranceS) return false;
  const want = createHmac("sha256", key).update(signedText(c)).digest();
  return header.split(",").some((part) => {
    const m = /^v1=([0-9a-f]{64})$/.exec(part.trim());
    return m !== null && timingSafeEqual(Buffer.from(m[1]!, "hex"), want);
  });
}
