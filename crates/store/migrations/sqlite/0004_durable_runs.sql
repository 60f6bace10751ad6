-- Durable runs: workflows (immutable versions), runs with their lease and fencing epoch, the
-- step journal, the per-tenant claim cursor, the append-only audit log and daily usage.

CREATE TABLE workflows (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX workflows_live_name ON workflows (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE workflow_versions (
    tenant_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, workflow_id, version)
);

CREATE TABLE runs (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    input TEXT NOT NULL,
    idempotency_key TEXT,
    next_step INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL,
    lease_epoch INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    error TEXT,
    fuel_used INTEGER NOT NULL DEFAULT 0,
    duration_us INTEGER NOT NULL DEFAULT 0,
    peak_memory_bytes INTEGER NOT NULL DEFAULT 0,
    outbound_requests INTEGER NOT NULL DEFAULT 0,
    outbound_bytes INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX runs_idempotency ON runs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_claimable ON runs (tenant_id, run_at) WHERE state IN ('queued', 'retrying');
CREATE INDEX runs_running ON runs (tenant_id, lease_until) WHERE state = 'running';
CREATE INDEX runs_listing ON runs (tenant_id, created_at, id);

CREATE TABLE run_steps (
    tenant_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    output TEXT,
    error TEXT,
    logs TEXT NOT NULL,
    fuel_used INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    outbound_requests INTEGER NOT NULL,
    outbound_bytes INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, run_id, step_index)
);

CREATE TABLE run_tenants (
    tenant_id TEXT NOT NULL PRIMARY KEY,
    last_turn INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX run_tenants_turn ON run_tenants (last_turn);

CREATE TABLE audit_log (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    run_id TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_time ON audit_log (tenant_id, at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

CREATE TABLE usage_days (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    fuel_used INTEGER NOT NULL DEFAULT 0,
    duration_us INTEGER NOT NULL DEFAULT 0,
    outbound_requests INTEGER NOT NULL DEFAULT 0,
    outbound_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);
