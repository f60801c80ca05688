/** The root HTTP app of a process: error envelope, observability, health, and the API if served. */
import { Elysia } from "elysia";
import { errorHandler } from "./errors.ts";
import { healthRoutes, type Readiness } from "./health.ts";
import { observe } from "./observe.ts";

export function rootApp(maxBodyBytes: number, components: () => Readiness[], api?: Elysia<any, any, any, any, any, any, any>) {
  const app = new Elysia({ name: "root" }).use(errorHandler).use(observe(maxBodyBytes)).use(healthRoutes(components));
  return api ? app.use(api) : app;
}
