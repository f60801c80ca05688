/** The root HTTP app of a process: error envelope, observability, health, and the API if served. */
import { Elysia } from "elysia";
import { log } from "../log.ts";
import { errorBody, errorHandler } from "./errors.ts";
import { bodies } from "./json-body.ts";
import { healthRoutes, type Readiness } from "./health.ts";
import { observe } from "./observe.ts";

/**
 * `normalize: false`: Elysia would otherwise drop properties a schema does not name, and a
 * misspelt field (`job_eight`) would pass silently; every body schema says
 * `additionalProperties: false`, so an unknown field is a 400 naming it.
 */
export function rootApp(maxBodyBytes: number, components: () => Readiness[], api?: Elysia<any, any, any, any, any, any, any>) {
  const app = new Elysia({ name: "root", normalize: false }).use(errorHandler).use(observe()).use(bodies(maxBodyBytes)).use(healthRoutes(components));
  return api ? app.use(api) : app;
}

/**
 * Listens (Bun.serve with the app's fetch for every path: Elysia's own listen would also hand
 * Bun its static routes, which bypass the time bound below). Bun's own body limit would answer 413 with an empty body, so it is set out of the
 * way; the root app enforces API_MAX_BODY_BYTES with the error envelope (src/http/json-body.ts).
 * Every request is answered within `timeoutMs`: the `postgres` client keeps a query waiting
 * while it retries connecting to a database that refuses connections, with a backoff that grows
 * to 20 s, so without this bound a request could hang for as long as the database is down.
 * Such a request gets 503 `unavailable`; its work may still complete later (a create should be
 * retried with its Idempotency-Key).
 */
export function listen(app: Elysia<any, any, any, any, any, any, any>, opts: { port: number; hostname: string; reusePort: boolean; timeoutMs: number }) {
  const { timeoutMs, ...where } = opts;
  const server = Bun.serve({
    ...where,
    maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    idleTimeout: 30,
    fetch: (request: Request) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<Response>((resolve) => {
        timer = setTimeout(() => {
          log.warn("request timed out; answered 503", { path: new URL(request.url).pathname, timeout_ms: timeoutMs });
          resolve(Response.json(errorBody("unavailable", `no answer within ${timeoutMs} ms (a database may be unreachable); retry after a second`), { status: 503, headers: { "retry-after": "1" } }));
        }, timeoutMs);
      });
      return Promise.race([Promise.resolve(app.fetch(request)).finally(() => clearTimeout(timer)), late]);
    },
  });
  // The app's handlers see this server (e.g. the client address for the login throttle).
  (app as unknown as { server: typeof server }).server = server;
  return { server, stop: (force = false) => server.stop(force) };
}
