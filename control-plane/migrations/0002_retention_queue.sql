-- Records by the start of their retention window, per kind (as sled's `retention_queue`):
-- written in the statement that starts the window (an allocation ending, a rotation, a
-- delivery, a token issued), walked from the front by the sweeper, which stops at the
-- first young entry. `record` is the record's key: an allocation id, `agent/IMEI`, a
-- delivery's seq (8 bytes, big-endian), a token's hash.
CREATE TABLE retention_queue (
    kind       text NOT NULL CHECK (kind IN ('credentials', 'allocation_detail',
                 'allocation_record', 'rotation', 'webhook_delivery', 'enrollment_token')),
    started_ms bigint NOT NULL,
    record     bytea NOT NULL,
    PRIMARY KEY (kind, started_ms, record)
);
