-- The fleet across nodes: the node holding an agent's session publishes what it knows of
-- the agent (its modems, site, health: `fleet::AgentSnapshot`) on the session's row, and
-- every other node mirrors it, so any node lists and sells every connected agent's modems.
-- A new claim clears it until the new holder publishes.
ALTER TABLE agent_sessions ADD COLUMN view jsonb;
