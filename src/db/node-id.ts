import { NODE_BITS } from "../ids.ts";
import type { Sql } from "./databases.ts";

/** A node number for this process's id generator, drawn once from a shared sequence. */
export async function drawNodeId(users: Sql): Promise<number> {
  const [row] = await users<{ node: string }[]>`SELECT nextval('id_node_seq') % ${2 ** Number(NODE_BITS)} AS node`;
  return Number(row!.node);
}
