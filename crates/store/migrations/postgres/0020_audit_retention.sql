-- An expand step. Audit retention: the pruner removes the oldest records of a chain (those
-- past the tenant's `retain_audit_days`) only after appending an `audit.pruned` record to
-- that chain, whose detail names the last record it removes (`through_seq`, and its hash,
-- `through_hash`) and the horizon (`before_ms`, at least a day before the prune record). A
-- DELETE passes only for a record older than the horizon that such a later record covers,
-- so a removal is itself in the chain and never reaches the last day; UPDATE, TRUNCATE and any other DELETE are refused as before, and a tenant's whole
-- chain still goes only with the tenant's row.
CREATE INDEX audit_log_prune_marks ON audit_log (tenant_id, seq) WHERE action = 'audit.pruned';

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.tenant_id <> ''
       AND NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id) THEN
        RETURN OLD;
    END IF;
    -- Retention: a record older than the horizon of a later prune record of its chain,
    -- whose horizon is itself at least a day before that record (the shortest retention).
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM audit_log m
        WHERE m.tenant_id = OLD.tenant_id AND m.action = 'audit.pruned'
          AND (m.detail::jsonb ->> 'before_ms')::bigint <= m.at - 86400000
          AND OLD.at < (m.detail::jsonb ->> 'before_ms')::bigint
          AND CASE
                WHEN OLD.seq IS NOT NULL THEN
                    m.seq > OLD.seq AND (m.detail::jsonb ->> 'through_seq')::bigint >= OLD.seq
                ELSE true
              END) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only';
END;
$$;
