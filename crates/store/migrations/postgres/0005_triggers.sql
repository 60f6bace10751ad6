-- Triggers: what creates runs of a workflow without a person asking. A webhook trigger
-- verifies signed requests to its public URL; a cron trigger fires on a schedule, each tick
-- exactly once across processes (claimed by moving `next_fire_at` forward, compare-and-swap,
-- in the transaction that creates the tick's run; `trigger_ticks` is unique per tick).

CREATE TABLE triggers (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    paused BIGINT NOT NULL DEFAULT 0,
    -- webhook: the scheme, one envelope holding the current secret (and the previous one
    -- while `previous_until` is ahead), the per-trigger rate limit
    scheme TEXT,
    secret TEXT,
    previous_until BIGINT,
    rate_per_minute BIGINT,
    -- cron: the schedule, its policies, the earliest tick not yet handled
    expression TEXT,
    time_zone TEXT,
    missed_policy TEXT,
    missed_cap BIGINT,
    overlap TEXT,
    next_fire_at BIGINT,
    last_fired_at BIGINT,
    last_run_id TEXT,
    fired BIGINT NOT NULL DEFAULT 0,
    missed BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    refused BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
-- The hook URL carries only the id.
CREATE UNIQUE INDEX triggers_id ON triggers (id);
CREATE INDEX triggers_due ON triggers (next_fire_at)
    WHERE kind = 'cron' AND paused = 0 AND deleted_at IS NULL;
CREATE INDEX triggers_workflow ON triggers (tenant_id, workflow_id);

CREATE TABLE trigger_ticks (
    trigger_id TEXT NOT NULL,
    scheduled_at BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    -- fired | skipped (overlap) | refused (a queue limit)
    outcome TEXT NOT NULL,
    run_id TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (trigger_id, scheduled_at)
);

ALTER TABLE runs ADD COLUMN trigger_id TEXT;
