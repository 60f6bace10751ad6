-- Tenants, their connectors (content-addressed components), connections with encrypted
-- credentials, guest state, and hourly run counters. Times are unix milliseconds; ids are
-- text. Every table but `tenants` is keyed by tenant first: every query names the tenant.

CREATE TABLE tenants (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    limits TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE component_blobs (
    tenant_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, digest)
);

CREATE TABLE connectors (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    manifest TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    deprecated BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE connections (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    connector TEXT NOT NULL,
    name TEXT NOT NULL,
    auth_type TEXT NOT NULL,
    fields TEXT NOT NULL,
    secret TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE connector_state (
    tenant_id TEXT NOT NULL,
    connector TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, connector, key)
);

CREATE TABLE usage_hours (
    tenant_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    runs BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, hour)
);
