-- The plane's tables on PostgreSQL: the sled trees of `store`, one table each, with the
-- invariants the allocator keeps in code written down as constraints, so no node (and no
-- race between nodes) can break them.

CREATE TABLE api_keys (
    key_hash     bytea PRIMARY KEY,
    key_id       text NOT NULL UNIQUE,
    record       jsonb NOT NULL,
    -- Unix seconds of the last authentication (to the minute).
    last_used_s  bigint
);

CREATE TABLE enrollment_tokens (
    token_hash bytea PRIMARY KEY,
    token_id   text NOT NULL UNIQUE,
    label      text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used       boolean NOT NULL DEFAULT false,
    agent_id   text
);

CREATE TABLE agents (
    agent_id    text PRIMARY KEY,
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    label       text NOT NULL,
    hostname    text NOT NULL,
    enrolled_at timestamptz NOT NULL,
    revoked     boolean NOT NULL DEFAULT false,
    approved    boolean NOT NULL DEFAULT true
);

-- The modems agents report, with each one's capacity: what allocation choice reads on
-- every node, and what the capacity trigger below counts against.
CREATE TABLE modems (
    agent_id   text NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    imei       text NOT NULL,
    capacity   integer NOT NULL CHECK (capacity >= 0),
    view       jsonb NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (agent_id, imei)
);

CREATE TABLE allocations (
    allocation_id text PRIMARY KEY,
    tenant        text NOT NULL,
    order_id      text NOT NULL,
    state         text NOT NULL CHECK (state IN
                    ('pending', 'active', 'releasing', 'released', 'failed', 'replaced')),
    agent_id      text NOT NULL,
    imei          text NOT NULL,
    host          text,
    http_port     integer CHECK (http_port BETWEEN 1 AND 65535),
    socks_port    integer CHECK (socks_port BETWEEN 1 AND 65535),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    record        jsonb NOT NULL,
    -- A live allocation has not ended; an ended one has.
    CHECK ((state IN ('released', 'failed')) = (ended_at IS NOT NULL))
);

-- One allocation per order id and tenant, failed attempts aside (an order may be retried
-- after a failure, never sold twice).
CREATE UNIQUE INDEX allocations_one_per_order
    ON allocations (tenant, order_id) WHERE state <> 'failed';
-- No two allocations holding a port share one on a box.
CREATE UNIQUE INDEX allocations_http_port_once
    ON allocations (agent_id, http_port)
    WHERE state IN ('pending', 'active', 'releasing', 'replaced') AND http_port IS NOT NULL;
CREATE UNIQUE INDEX allocations_socks_port_once
    ON allocations (agent_id, socks_port)
    WHERE state IN ('pending', 'active', 'releasing', 'replaced') AND socks_port IS NOT NULL;
CREATE INDEX allocations_by_agent ON allocations (agent_id)
    WHERE state IN ('pending', 'active', 'releasing', 'replaced');
CREATE INDEX allocations_by_expiry ON allocations (expires_at)
    WHERE state IN ('active', 'replaced');
CREATE INDEX allocations_by_tenant ON allocations (tenant, created_at, allocation_id);
CREATE INDEX allocations_ended ON allocations (ended_at) WHERE ended_at IS NOT NULL;

-- Capacity is never exceeded: a modem holds at most its capacity of allocations that hold
-- a port. The modem's row is locked first, so two nodes selling its last slot at once are
-- serialised and the second sees the first.
CREATE FUNCTION allocations_capacity_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cap  integer;
    held integer;
BEGIN
    IF NEW.state NOT IN ('pending', 'active', 'releasing', 'replaced') THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state IN ('pending', 'active', 'releasing', 'replaced')
        AND OLD.agent_id = NEW.agent_id AND OLD.imei = NEW.imei THEN
        RETURN NEW;
    END IF;
    SELECT capacity INTO cap FROM modems
        WHERE agent_id = NEW.agent_id AND imei = NEW.imei FOR UPDATE;
    IF cap IS NULL THEN
        RAISE EXCEPTION 'modem % of agent % is not known', NEW.imei, NEW.agent_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT count(*) INTO held FROM allocations
        WHERE agent_id = NEW.agent_id AND imei = NEW.imei
          AND allocation_id <> NEW.allocation_id
          AND state IN ('pending', 'active', 'releasing', 'replaced');
    IF held >= cap THEN
        RAISE EXCEPTION 'modem % of agent % is at its capacity (%)', NEW.imei, NEW.agent_id, cap
            USING ERRCODE = 'check_violation', CONSTRAINT = 'allocations_capacity';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER allocations_capacity
    BEFORE INSERT OR UPDATE ON allocations
    FOR EACH ROW EXECUTE FUNCTION allocations_capacity_check();

CREATE TABLE allocation_usage (
    allocation_id  text NOT NULL,
    agent_id       text NOT NULL,
    bytes_in       bigint NOT NULL CHECK (bytes_in >= 0),
    bytes_out      bigint NOT NULL CHECK (bytes_out >= 0),
    measured_at_ms bigint NOT NULL,
    PRIMARY KEY (allocation_id, agent_id)
);

CREATE TABLE modem_rotations (
    agent_id  text NOT NULL,
    imei      text NOT NULL,
    at_ms     bigint NOT NULL,
    old_ip    text,
    new_ip    text,
    changed   boolean NOT NULL,
    automatic boolean NOT NULL,
    PRIMARY KEY (agent_id, imei)
);
CREATE INDEX modem_rotations_by_time ON modem_rotations (at_ms);

CREATE TABLE modem_owners (
    imei     text PRIMARY KEY,
    agent_id text NOT NULL
);

-- The command outbox: the durable truth of what an agent must still do. A node that holds
-- the agent's session is woken by NOTIFY; the row is what it acts on.
CREATE TABLE pending_commands (
    agent_id    text NOT NULL,
    command_id  text NOT NULL,
    deadline_ms bigint NOT NULL,
    body        jsonb NOT NULL,
    PRIMARY KEY (agent_id, command_id)
);

CREATE TABLE audit (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    details jsonb NOT NULL
);
CREATE INDEX audit_by_time ON audit (at);

CREATE TABLE webhook_endpoints (
    webhook_id text PRIMARY KEY,
    -- NULL: an operator's endpoint (every event).
    tenant     text,
    record     jsonb NOT NULL
);

-- Deliveries are the outbox of events: written in the transaction of the change they
-- report, claimed by one node at a time (`lease_until`, FOR UPDATE SKIP LOCKED).
CREATE TABLE webhook_deliveries (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      text NOT NULL REFERENCES webhook_endpoints (webhook_id) ON DELETE CASCADE,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz,
    finished_at     timestamptz,
    last_status     integer,
    last_error      text,
    body            text NOT NULL,
    lease_until     timestamptz,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, seq);

CREATE TABLE webhook_expiring (
    allocation_id text PRIMARY KEY,
    -- The expiry (Unix ms) an `allocation.expiring` was sent for.
    expires_at_ms bigint NOT NULL
);

-- Cluster membership: who holds each agent's session. A new session takes the row with a
-- higher epoch; a node whose epoch is no longer the row's may not act for the agent.
CREATE TABLE agent_sessions (
    agent_id    text PRIMARY KEY,
    node_id     text NOT NULL,
    epoch       bigint NOT NULL,
    lease_until timestamptz NOT NULL
);

CREATE TABLE nodes (
    node_id      text PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
