-- Access history: which token subject called which route, per minute, with how many calls
-- and how many of them failed (status 400 and up). Aggregated in memory and flushed every
-- few seconds, so a busy tenant adds a row per subject, route and minute, not per request.
CREATE TABLE access_minutes (
    tenant_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    subject TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    calls BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, minute, subject, method, route)
);
