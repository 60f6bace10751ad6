-- Every change is audited (not only replays and cancels), with the target it changed and the
-- request that changed it, in a per-tenant hash chain: record `seq` holds the hash of record
-- `seq - 1` and its own, so an edited, removed or inserted record breaks the chain at that
-- point (`airlock audit verify`). Records written before this migration have no `seq` and
-- stand outside the chain. SQLite has no TRUNCATE; its UPDATE and DELETE triggers stay.
ALTER TABLE audit_log ADD COLUMN seq BIGINT;
ALTER TABLE audit_log ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_log_chain ON audit_log (tenant_id, seq);
