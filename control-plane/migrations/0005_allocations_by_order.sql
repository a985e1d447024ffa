-- Finding an order's allocation, failed attempts included (`allocation_by_order`, asked on
-- every sale): the unique index on live orders skips failed rows, so without this the
-- lookup walked the tenant's whole history — slower with every sale ever made.
CREATE INDEX allocations_by_order ON allocations (tenant, order_id, created_at);
