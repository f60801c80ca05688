/**
 * The error envelope every failure answers with:
 *   {"success": false, "error": {"code": "stable_snake_case", "message": "...", "details": ...}}
 * Codes are part of the API contract. A 500 never carries a stack, SQL or driver text; the
 * cause is logged with the trace id instead.
 */
import { Elysia, ValidationError } from "elysia";
import type { OpenAPIV3 } from "openapi-types";
import { isUnavailable } from "../db/databases.ts";
import { IdsUnavailableError } from "../ids.ts";
import { log } from "../log.ts";
import { inRequestSpan } from "./observe.ts";

/** Every error code of the API: its status and meaning. The OpenAPI document lists them per route. */
export const ERROR_CODES = {
  invalid_request: [400, "a parameter or body field is invalid or unknown; details name each"],
  malformed_body: [400, "the body is not JSON (content-type application/json) or nests deeper than 32 levels"],
  invalid_job_id: [400, "the job id is not a positive 64-bit integer"],
  invalid_cursor: [400, "the cursor is not a next_cursor this API gave"],
  invalid_idempotency_key: [400, "Idempotency-Key must be 1-255 visible ASCII characters"],
  unauthorized: [401, "missing, malformed, invalid or expired bearer token, or its user is disabled or deleted"],
  invalid_credentials: [401, "wrong username or password"],
  weight_requires_admin: [403, "only an operator may choose this job_weight"],
  user_disabled: [403, "the user is disabled"],
  not_found: [404, "no such job, user or target limit (another user's job or limit is not found either)"],
  route_not_found: [404, "no such route"],
  username_taken: [409, "the username is taken"],
  job_not_cancellable: [409, "the job has started or finished; details.status says which"],
  job_not_reschedulable: [409, "the job has started or finished; details.status says which"],
  job_not_retryable: [409, "only a failed job with fewer than 100 attempts can be retried; details.status says which"],
  too_many_target_limits: [409, "a user may keep at most 100 target limits; delete one first"],
  payload_too_large: [413, "the body exceeds API_MAX_BODY_BYTES"],
  idempotency_key_reused: [422, "this Idempotency-Key was used with a different body"],
  quota_exceeded: [429, "too many unfinished jobs (QUOTA_PENDING_JOBS); Retry-After says when to try again"],
  rate_limited: [429, "too many job creations per second (QUOTA_CREATES_PER_SECOND); see Retry-After"],
  too_many_attempts: [429, "too many failed logins for this username (LOGIN_ATTEMPTS_PER_MINUTE), or for too many different usernames from this address (LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE); see Retry-After"],
  internal: [500, "a bug; logged with the trace id, never detailed here"],
  unavailable: [503, "a database is down or restarting, or no answer within API_REQUEST_TIMEOUT; retry after Retry-After"],
} as const satisfies Record<string, readonly [number, string]>;
export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * OpenAPI `responses` for a route: its error codes (plus 413, 500 and 503, which any route can
 * answer), grouped by status, each with an example envelope.
 */
export function errorResponses(...codes: ErrorCode[]): OpenAPIV3.ResponsesObject {
  const all = [...new Set<ErrorCode>([...codes, "internal", "unavailable"])];
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of all) byStatus.set(ERROR_CODES[code][0], [...(byStatus.get(ERROR_CODES[code][0]) ?? []), code]);
  return Object.fromEntries(
    [...byStatus].map(([status, list]) => [
      String(status),
      {
        description: list.map((c) => `\`${c}\`: ${ERROR_CODES[c][1]}`).join("; "),
        content: {
          "application/json": {
            schema: ERROR_SCHEMA as unknown as OpenAPIV3.SchemaObject,
            examples: Object.fromEntries(list.map((c) => [c, { value: errorBody(c, ERROR_CODES[c][1]) }])),
          },
        },
      },
    ]),
  );
}

const ERROR_SCHEMA = {
  type: "object",
  required: ["success", "error"],
  properties: {
    success: { type: "boolean", const: false },
    error: {
      type: "object",
      required: ["code", "message"],
      properties: { code: { type: "string", enum: Object.keys(ERROR_CODES) }, message: { type: "string" }, details: {} },
    },
  },
} as const;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
    /** Sent as Retry-After (429, 503). */
    readonly retryAfterS?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/**
 * Requests whose body could not be used, and the error to answer (src/http/json-body.ts): the
 * parser records it and hands the route an empty body (an error thrown in a parser would become
 * Elysia's generic parse error); the route reports it after authentication, or when validation
 * meets the empty body.
 */
export const bodyProblems = new WeakMap<Request, ApiError>();

export const notFound = (what = "job") => new ApiError(404, "not_found", `${what} not found`);

export function errorBody(code: ErrorCode, message: string, details?: unknown) {
  return { success: false as const, error: details === undefined ? { code, message } : { code, message, details } };
}

type Schema = { type?: string; properties?: Record<string, Schema>; additionalProperties?: unknown; items?: Schema; anyOf?: Schema[] };

/**
 * Paths of properties a schema does not name (`additionalProperties: false`), however deep:
 * the validator stops at a union (e.g. a nullable object) and names only the union's path.
 */
export function unknownProperties(schema: Schema | undefined, value: unknown, path = ""): string[] {
  if (!schema || value === null || typeof value !== "object") return [];
  if (schema.anyOf) return schema.anyOf.flatMap((branch) => unknownProperties(branch, value, path));
  if (Array.isArray(value)) return schema.type === "array" ? value.flatMap((v, i) => unknownProperties(schema.items, v, `${path}/${i}`)) : [];
  if (schema.type !== "object" || !schema.properties) return [];
  return Object.entries(value).flatMap(([k, v]) => {
    const known = schema.properties![k];
    if (known) return unknownProperties(known, v, `${path}/${k}`);
    return schema.additionalProperties === false ? [`${path}/${k}`] : [];
  });
}

function validationDetails(e: ValidationError): { path: string; message: string }[] {
  try {
    const schema = (e.validator as { schema?: Schema } | undefined)?.schema;
    const unknown = unknownProperties(schema, e.value).map((path) => ({ path, message: `unknown property '${path.slice(path.lastIndexOf("/") + 1)}'` }));
    // A field's own `error` (its rule in words, set in its schema) wins over the validator's
    // wording, which for a pattern is the regular expression itself.
    const own = (v: object) => ("schema" in v && v.schema && typeof (v.schema as { error?: unknown }).error === "string" ? (v.schema as { error: string }).error : null);
    return [...unknown, ...e.all.filter((v) => !unknown.some((u) => "path" in v && u.path === v.path))].slice(0, 20).map((v) => ({
      path: ("path" in v && typeof v.path === "string" && v.path) || "/",
      message: own(v) ?? (("summary" in v && typeof v.summary === "string" && v.summary) || v.message),
    }));
  } catch {
    return [];
  }
}

/** Maps every thrown error to the envelope; registered globally on the root app. */
export const errorHandler = new Elysia({ name: "errors" }).onError({ as: "global" }, ({ code, error, set, request }) => {
  const reply = (status: number, errCode: ErrorCode, message: string, details?: unknown) => {
    set.status = status;
    set.headers["content-type"] = "application/json";
    return errorBody(errCode, message, details);
  };
  if (error instanceof ApiError) {
    if (error.retryAfterS !== undefined) set.headers["retry-after"] = String(error.retryAfterS);
    return reply(error.status, error.code, error.message, error.details);
  }
  switch (code) {
    case "VALIDATION": {
      const problem = bodyProblems.get(request);
      if (problem) return reply(problem.status, problem.code, problem.message);
      const where = (error as ValidationError).type;
      const what = where === "query" ? "query parameters" : where === "params" ? "path parameters" : where === "headers" ? "headers" : "request body";
      return reply(400, "invalid_request", `invalid ${what}`, validationDetails(error as ValidationError));
    }
    case "PARSE":
      return reply(400, "malformed_body", "the request body could not be parsed; send JSON with content-type application/json");
    case "NOT_FOUND":
      return reply(404, "route_not_found", `no route for ${request.method} ${new URL(request.url).pathname}`);
    case "INVALID_COOKIE_SIGNATURE":
      return reply(400, "invalid_request", "invalid cookie");
  }
  const status = (error as { status?: unknown }).status;
  if (typeof status === "number" && status >= 400 && status < 500) {
    // Elysia's own 4xx errors (e.g. an unsupported content type).
    return reply(status, status === 413 ? "payload_too_large" : "invalid_request", status === 413 ? "request body too large" : "invalid request");
  }
  if (isUnavailable(error) || error instanceof IdsUnavailableError) {
    // The database is down or restarting. A create whose commit was cut off may or may not have
    // landed: clients retry with an Idempotency-Key to be sure.
    inRequestSpan(request, () => log.warn("database unavailable", { err: error as Error, path: new URL(request.url).pathname }));
    set.headers["retry-after"] = "1";
    return reply(503, "unavailable", "the service is temporarily unavailable; retry after a second");
  }
  // In the request's span: the line carries its trace id.
  inRequestSpan(request, () => log.error("unhandled error", { err: error as Error, path: new URL(request.url).pathname, code: String(code) }));
  return reply(500, "internal", "internal error; it has been logged");
});
