-- Tenant lifecycle: a suspended tenant keeps every row, but its tokens are refused, its
-- triggers create no runs and workers claim none of its runs (its `run_tenants.max_running`
-- is 0 while suspended). Only a suspended tenant can be deleted.
ALTER TABLE tenants ADD COLUMN suspended_at INTEGER;

-- Deleting a tenant removes its audit chain with every other row of it. The records stay
-- append-only while their tenant exists: a DELETE passes only once the tenant's row is gone
-- (in the same transaction), which is itself a recorded act in the platform's chain.
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.tenant_id = '' OR EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
