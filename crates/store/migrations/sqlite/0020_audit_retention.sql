-- An expand step. Audit retention: the pruner removes the oldest records of a chain (those
-- past the tenant's `retain_audit_days`) only after appending an `audit.pruned` record to
-- that chain, whose detail names the last record it removes (`through_seq`, and its hash,
-- `through_hash`) and the horizon (`before_ms`, at least a day before the prune record). A
-- DELETE passes only for a record older than the horizon that such a later record covers,
-- so a removal is itself in the chain and never reaches the last day; UPDATE and any other DELETE are refused as before, and a tenant's whole chain
-- still goes only with the tenant's row.
CREATE INDEX audit_log_prune_marks ON audit_log (tenant_id, seq) WHERE action = 'audit.pruned';

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN (OLD.tenant_id = '' OR EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id))
 AND NOT EXISTS (
    SELECT 1 FROM audit_log m
    WHERE m.tenant_id = OLD.tenant_id AND m.action = 'audit.pruned'
      AND json_extract(m.detail, '$.before_ms') <= m.at - 86400000
      AND OLD.at < json_extract(m.detail, '$.before_ms')
      AND (OLD.seq IS NULL
           OR (m.seq > OLD.seq AND json_extract(m.detail, '$.through_seq') >= OLD.seq)))
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
