-- Node numbers of the API processes' id generators (src/ids.ts), leased (src/db/node-id.ts):
-- a row is a node number held until expires_at (the database's clock) by `holder`, renewed while
-- the process lives. A number is taken only when free or expired, so two live processes never
-- share one, however many starts there were (the sequence it replaces wrapped after 4,096).
CREATE TABLE id_nodes (
  node integer PRIMARY KEY CHECK (node BETWEEN 0 AND 4095),
  holder text NOT NULL,
  expires_at timestamptz NOT NULL
);
DROP SEQUENCE id_node_seq;
