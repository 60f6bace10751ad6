-- An expand step. Audit retention: the pruner removes the oldest records of a chain (those
-- past the tenant's `retain_audit_days`) only after appending an `audit.pruned` record to
-- that chain, whose detail names the last record it removes (`through_seq`, and its hash,
-- `through_hash`) and the horizon (`before_ms`, for records from before the chain). A
-- DELETE passes for a record such a later record covers, so a removal is itself in the
-- chain; UPDATE and any other DELETE are refused as before, and a tenant's whole chain
-- still goes only with the tenant's row.
CREATE INDEX audit_log_prune_marks ON audit_log (tenant_id, seq) WHERE action = 'audit.pruned';

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN (OLD.tenant_id = '' OR EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id))
 AND NOT EXISTS (
    SELECT 1 FROM audit_log m
    WHERE m.tenant_id = OLD.tenant_id AND m.action = 'audit.pruned'
      AND CASE
            WHEN OLD.seq IS NOT NULL THEN
                m.seq > OLD.seq AND json_extract(m.detail, '$.through_seq') >= OLD.seq
            ELSE json_extract(m.detail, '$.before_ms') > OLD.at
          END)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
