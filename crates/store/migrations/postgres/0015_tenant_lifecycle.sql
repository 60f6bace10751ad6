-- Tenant lifecycle: a suspended tenant keeps every row, but its tokens are refused, its
-- triggers create no runs and workers claim none of its runs (its `run_tenants.max_running`
-- is 0 while suspended). Only a suspended tenant can be deleted.
ALTER TABLE tenants ADD COLUMN suspended_at BIGINT;

-- Deleting a tenant removes its audit chain with every other row of it. The records stay
-- append-only while their tenant exists: UPDATE and TRUNCATE are refused as before, and a
-- DELETE only once the tenant's row is gone (in the same transaction), which is itself a
-- recorded act (the platform's chain keeps who deleted which tenant, and when).
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.tenant_id <> ''
       AND NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only';
END;
$$;
