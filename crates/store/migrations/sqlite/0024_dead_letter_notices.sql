-- An expand step. A tenant's dead-letter webhook: where a notice is POSTed, signed with
-- Standard Webhooks, each time one of its runs goes dead. `secret` is one sealed envelope
-- holding the current secret and, while `previous_until` is ahead, the previous one (both
-- sign during a rotation's overlap), sealed to `(tenant_id, id)` as every secret is. One hook
-- per tenant for now; the id keeps room for more.
CREATE TABLE dead_letter_hooks (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_until INTEGER,
    -- One more at each change: the compare-and-swap of a change made from a read.
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX dead_letter_hooks_tenant ON dead_letter_hooks (tenant_id);

-- The outbox of those notices: one row per death of a run whose tenant had a hook then,
-- written in the transaction that makes the run dead, so a crash keeps both or neither.
-- `id` is the notice's `webhook-id` (`dead_<run>_<lease epoch>`): one per death, stable
-- across delivery attempts. `state`: pending, delivered, failed (out of attempts, or the
-- hook removed) or superseded (the run died again before it was delivered).
-- A pending row is due at `next_at`; claiming it moves `next_at` past the claim's lease
-- and counts the attempt, so a process killed mid-delivery leaves it due again, not lost.
-- A run has at most one pending notice, so replays cannot pile them up.
CREATE TABLE dead_letter_notices (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX dead_letter_notices_due ON dead_letter_notices (next_at) WHERE state = 'pending';
CREATE INDEX dead_letter_notices_run ON dead_letter_notices (tenant_id, run_id);
CREATE INDEX dead_letter_notices_recent ON dead_letter_notices (tenant_id, created_at);
CREATE INDEX dead_letter_notices_state ON dead_letter_notices (tenant_id, state);
