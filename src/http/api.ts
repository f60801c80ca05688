/** The API role's HTTP surface: users, auth, jobs and their OpenAPI reference at /docs, and the web console at /console. */
import { openapi } from "@elysiajs/openapi";
import type { Etcd3 } from "etcd3";
import { Elysia } from "elysia";
import type { IdGenerator } from "../ids.ts";
import type { Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { JobStore } from "../jobs/job-store.ts";
import { UserStore } from "../users/user-store.ts";
import { adminRoutes } from "./admin.routes.ts";
import { authRoutes } from "./auth.routes.ts";
import { TrustedProxies } from "./client-address.ts";
import { consoleRoutes } from "./console.ts";
import { jobsRoutes } from "./jobs.routes.ts";
import { CreateQuota, LoginThrottle } from "./limits.ts";
import { adminTargetRoutes, meTargetRoutes } from "./targets.routes.ts";
import { usersRoutes } from "./users.routes.ts";

export function apiRoutes(config: Config, dbs: Databases, ids: IdGenerator, etcd: Etcd3 | null = null) {
  const users = new UserStore(dbs.users);
  const jobs = new JobStore(dbs, ids);
  const quota = new CreateQuota(dbs, config.api.maxPendingPerUser, config.api.createsPerUserPerSecond);
  const logins = new LoginThrottle(config.api.loginAttemptsPerMinute, config.api.loginAttemptsPerAddressPerMinute);
  // The hook sees the document's routes only (local to this instance), not every API request.
  const docs = new Elysia({ name: "docs" }).onAfterHandle(({ response }) => dropPhantomDefaults(response))
    .use(
      openapi({
        path: "/docs",
        specPath: "/docs/json",
        documentation: {
          info: {
            title: "fairshare job scheduler API",
            version: "1",
            description: "Schedule one-time jobs that run at execute_at, with weighted fair share across users. Errors answer {\"success\": false, \"error\": {\"code\", \"message\", \"details\"}}.",
          },
          components: {
            securitySchemes: {
              bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" },
              admin: { type: "http", scheme: "bearer", description: "the operator's ADMIN_TOKEN" },
            },
          },
        },
        exclude: { paths: ["/healthz", "/readyz", "/metrics"] },
      }),
    );
  return new Elysia({ name: "api" })
    .use(docs)
    .use(usersRoutes(users, config))
    .use(authRoutes(users, logins, new TrustedProxies(config.api.trustedProxies), config.jwt))
    .use(jobsRoutes(jobs, users, quota, config))
    .use(adminRoutes(users, jobs, dbs, config, etcd))
    .use(meTargetRoutes(users, dbs.users, config))
    .use(adminTargetRoutes(users, dbs.users, config))
    .use(consoleRoutes(config));
}

/**
 * Elysia's t.Integer also accepts a numeric string, and documents that branch with `default: 0`,
 * which no request gets (an absent parameter stays absent; a body field too). The published
 * document drops that phantom default, so no client believes a missing `limit` means 0.
 */
export function dropPhantomDefaults(node: unknown): void {
  if (Array.isArray(node)) return node.forEach(dropPhantomDefaults);
  if (!node || typeof node !== "object") return;
  const o = node as Record<string, unknown>;
  if (o.type === "string" && (o.format === "integer" || o.format === "numeric") && o.default === 0) delete o.default;
  for (const v of Object.values(o)) dropPhantomDefaults(v);
}
