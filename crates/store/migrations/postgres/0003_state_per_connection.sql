-- Guest state is scoped by connection as well as connector: two connections of one connector
-- (two accounts) keep their own polling cursors. '' is the scope of invocations without a
-- connection. Existing rows move to that scope: they were shared by every connection.
ALTER TABLE connector_state ADD COLUMN connection_id TEXT NOT NULL DEFAULT '';
ALTER TABLE connector_state DROP CONSTRAINT connector_state_pkey;
ALTER TABLE connector_state ADD PRIMARY KEY (tenant_id, connector, connection_id, key);
ALTER TABLE connector_state ALTER COLUMN connection_id DROP DEFAULT;
