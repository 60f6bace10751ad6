-- An expand step. The journal of for_each iterations: one row per item and body step that
-- finished (succeeded or skipped), so a crash resumes the items not done. A for_each's own
-- row in run_steps holds the array of its iterations' outputs once every item is done.
CREATE TABLE run_items (
    tenant_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    item INTEGER NOT NULL,
    body_index INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    logs TEXT NOT NULL,
    fuel_used INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    outbound_requests INTEGER NOT NULL,
    outbound_bytes INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, run_id, step_index, item, body_index)
);
