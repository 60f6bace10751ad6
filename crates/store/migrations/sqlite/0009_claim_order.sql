-- A claim takes a tenant's waiting runs oldest first (`ORDER BY run_at, id LIMIT n`): with
-- `id` in the index that is a scan of the first n entries, where `(tenant_id, run_at)`
-- sorted every waiting run of the tenant on each claim (a 10,000-run backlog sorted
-- 10,000 rows to take 64).
CREATE INDEX runs_claim_order ON runs (tenant_id, run_at, id) WHERE state IN ('queued', 'retrying');
DROP INDEX runs_claimable;
