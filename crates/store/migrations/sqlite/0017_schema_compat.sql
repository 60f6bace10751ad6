-- Upgrades without downtime: migrations are expand steps (new tables, new nullable columns,
-- new indexes: a binary that does not know them keeps working) or contract steps (removing
-- or changing what an older binary reads). A binary starts on a database migrated by a newer
-- one as long as its own newest migration is at least `oldest_reader`; only a contract step
-- raises it, to the newest migration of the oldest release that can still read the schema.
CREATE TABLE schema_compat (
    id BIGINT NOT NULL PRIMARY KEY,
    oldest_reader BIGINT NOT NULL
);
INSERT INTO schema_compat (id, oldest_reader) VALUES (1, 17);
