-- Commands across nodes: the node that waits for a command's result (`origin_node`), and
-- results that arrived at the node holding the agent's session on their way to it. The
-- origin is woken by NOTIFY farmhand_results; the row is what it reads. A result whose
-- origin died is taken by another node as a late result.
ALTER TABLE pending_commands ADD COLUMN origin_node text;

CREATE TABLE command_results (
    command_id  text PRIMARY KEY,
    agent_id    text NOT NULL,
    origin_node text NOT NULL,
    result      jsonb NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX command_results_by_origin ON command_results (origin_node, at);

-- Facts every node must agree on, checked when a node starts: `credentials_check` is a
-- value sealed with the credential key, so a node with another `credentials.key` refuses
-- to start instead of failing to open every buyer password the others sealed.
CREATE TABLE cluster_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
