-- Retention: ended runs are found by when they ended, per tenant, so the pruner's batches
-- read an index range rather than every run of the tenant.
CREATE INDEX runs_finished ON runs (tenant_id, finished_at) WHERE finished_at IS NOT NULL;
