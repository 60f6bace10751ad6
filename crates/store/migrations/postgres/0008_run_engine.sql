-- The run engine's per-tenant counters: `running` is kept with every change of a run into
-- and out of `running` (claim, journal, failure, finish, reap), in the same transaction, so
-- a claim excludes tenants at their cap without counting rows; `max_running` is the
-- tenant's `max_concurrent_runs`, written with its limits (NULL until first claimed or set).
ALTER TABLE run_tenants ADD COLUMN running BIGINT NOT NULL DEFAULT 0;
ALTER TABLE run_tenants ADD COLUMN max_running BIGINT;

UPDATE run_tenants SET running = (
    SELECT COUNT(*) FROM runs r WHERE r.tenant_id = run_tenants.tenant_id AND r.state = 'running'
);

-- Runs held by a process: the lease keeper renews them all in one statement.
CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE state = 'running';
