/**
 * Request bodies, read and parsed in one place for every route: at most API_MAX_BODY_BYTES
 * (413 `payload_too_large` with the envelope, however large: a declared length is refused
 * before anything is read, a chunked body as soon as it passes the limit), JSON only. A body nested deeper than
 * MAX_JSON_DEPTH is refused before JSON.parse and before validation: the check is one pass over
 * the text, while validating a 20,000-deep array took ~13 s of a single-threaded process (every
 * other request waited) and parsing one deep enough overflowed the stack (a 500).
 * A body that cannot be used is recorded (bodyProblems), not thrown: authenticated routes
 * answer 401 for a bad token whatever the body, and only then 400 `malformed_body`
 * (src/http/auth.ts); elsewhere validation meets an empty body and the error handler names it.
 */
import { Elysia } from "elysia";
import { TUNING } from "../config.ts";
import { ApiError, bodyProblems } from "./errors.ts";

/** The deepest nesting any request of this API needs is 4 (batch > jobs > job > target > headers). */
export const MAX_JSON_DEPTH = TUNING.api.maxJsonDepth;


/** Whether brackets nest deeper than `max` outside strings; one pass, stops at the first excess. */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > max) return true;
    } else if (c === 125 || c === 93) depth--;
  }
  return false;
}

/** The parsed body, or why it cannot be used. */
export function parseJsonBody(text: string): { value: unknown } | { malformed: string } {
  if (text.trim() === "") return { value: {} };
  if (nestsDeeperThan(text, MAX_JSON_DEPTH)) return { malformed: `the request body nests deeper than ${MAX_JSON_DEPTH} levels` };
  try {
    return { value: JSON.parse(text) };
  } catch {
    return { malformed: "the request body could not be parsed; send JSON with content-type application/json" };
  }
}

const tooLarge = (max: number) => new ApiError(413, "payload_too_large", `request body exceeds ${max} bytes`);

/** The body as text; null once it passes `max` bytes (a chunked body is not read further). */
async function readText(request: Request, max: number): Promise<string | null> {
  if (!request.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}

/** Registered on the root app: every route's body goes through here. */
export function bodies(maxBodyBytes: number) {
  return new Elysia({ name: "bodies" })
    .onRequest(({ request }) => {
      if (Number(request.headers.get("content-length") ?? 0) > maxBodyBytes) throw tooLarge(maxBodyBytes);
    })
    .onParse({ as: "global" }, async ({ request, contentType }) => {
      const text = await readText(request, maxBodyBytes);
      if (text === null) {
        bodyProblems.set(request, tooLarge(maxBodyBytes));
        return {};
      }
      const parsed = contentType.toLowerCase().startsWith("application/json") || text.trim() === "" ? parseJsonBody(text) : { malformed: "send the request body as JSON with content-type application/json" };
      if ("value" in parsed) return parsed.value;
      bodyProblems.set(request, new ApiError(400, "malformed_body", parsed.malformed));
      return {};
    });
}
