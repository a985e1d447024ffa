-- What the probes found, kept so every node answers alike and a restart forgets nothing
-- (`store::probes`): one probe record per allocation (its newest results and judgement),
-- gone with the allocation; hourly quality counters per agent, gone with the agent (and
-- pruned after a week by the nodes).
CREATE TABLE probe_tracks (
    allocation_id text PRIMARY KEY REFERENCES allocations (allocation_id) ON DELETE CASCADE,
    agent_id      text NOT NULL,
    track         jsonb NOT NULL
);
CREATE INDEX probe_tracks_by_agent ON probe_tracks (agent_id);

CREATE TABLE agent_quality (
    agent_id          text NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    hour              bigint NOT NULL,
    probes            bigint NOT NULL,
    probes_ok         bigint NOT NULL,
    latency           bigint[] NOT NULL,
    rotations         bigint NOT NULL,
    rotations_changed bigint NOT NULL,
    rotations_timed   bigint NOT NULL,
    rotation_ms_total bigint NOT NULL,
    replacements      bigint NOT NULL,
    PRIMARY KEY (agent_id, hour)
);
CREATE INDEX agent_quality_by_hour ON agent_quality (hour);
