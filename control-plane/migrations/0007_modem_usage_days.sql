-- Traffic per modem per day (UTC), a seller's payout basis (`store::usage_days`): each usage
-- report adds what an allocation's totals grew by to its modem's day, in the same statement
-- as the totals. Gone with the agent; pruned after `financial_days` by the retention sweep.
CREATE TABLE modem_usage_days (
    agent_id  text NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    imei      text NOT NULL,
    day       bigint NOT NULL,
    bytes_in  bigint NOT NULL CHECK (bytes_in >= 0),
    bytes_out bigint NOT NULL CHECK (bytes_out >= 0),
    PRIMARY KEY (agent_id, imei, day)
);
CREATE INDEX modem_usage_days_by_day ON modem_usage_days (day);
