-- Idempotency keys: the fingerprint of the request that created a run (hex SHA-256 of the
-- workflow and the canonical input, or of a webhook delivery's body), so a key reused with
-- another request is refused instead of answered with the first run; NULL for runs created
-- before it was kept (such a run answers any request with its key, as before).
ALTER TABLE runs ADD COLUMN request_hash TEXT;

-- The periodic expiry clears `idempotency_key` of runs older than the keys' lifetime; this
-- finds them without scanning every run.
CREATE INDEX runs_keyed_created ON runs (created_at) WHERE idempotency_key IS NOT NULL;
