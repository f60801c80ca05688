/** The api role: stateless HTTP; ready once its databases answer. */
import { IdGenerator, processName } from "../ids.ts";
import { TUNING, type Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { NodeLease } from "../db/node-id.ts";
import { etcdClient } from "../etcd.ts";
import { apiRoutes } from "../http/api.ts";
import { log } from "../log.ts";
import type { Component } from "./component.ts";

export async function startApi(config: Config, dbs: Databases) {
  const node = await NodeLease.take(dbs.users, processName(), TUNING.api.nodeLease);
  log.info("api: id generator ready", { node: node.current() });
  // For the operators' shard view; the client connects on first use.
  const etcd = etcdClient(config.etcd);
  const routes = apiRoutes(config, dbs, new IdGenerator(node), etcd);
  let draining = false;
  const component: Component = {
    name: "api",
    ready: () => !draining,
    stop: async () => {
      draining = true;
      etcd.close();
      await node.release();
    },
  };
  return { routes, component };
}
