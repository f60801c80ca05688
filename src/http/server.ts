/** The root HTTP app of a process: error envelope, observability, health, and the API if served. */
import { Elysia } from "elysia";
import { errorHandler } from "./errors.ts";
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
 * Listens. Bun's own body limit would answer 413 with an empty body, so it is set out of the
 * way; the root app enforces API_MAX_BODY_BYTES with the error envelope (src/http/json-body.ts).
 */
export function listen(app: Elysia<any, any, any, any, any, any, any>, opts: { port: number; hostname: string; reusePort: boolean }) {
  return app.listen({ ...opts, maxRequestBodySize: Number.MAX_SAFE_INTEGER });
}
