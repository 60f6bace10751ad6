-- A connection's non-secret config (base URL parts, region, account id, the hosts a generic
-- connector's credential is for): JSON text of an object, checked against the connector's
-- `config_schema` when saved, shown in the API, read by templates and `ctx.config()`.
ALTER TABLE connections ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
