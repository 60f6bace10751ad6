-- Guest state is scoped by connection as well as connector: two connections of one connector
-- (two accounts) keep their own polling cursors. '' is the scope of invocations without a
-- connection. Existing rows were shared by every connection of their connector: each
-- connection gets its own copy (so no connector starts its cursors over), and the shared
-- copy stays as the connection-less scope.
ALTER TABLE connector_state ADD COLUMN connection_id TEXT NOT NULL DEFAULT '';
ALTER TABLE connector_state DROP CONSTRAINT connector_state_pkey;
ALTER TABLE connector_state ADD PRIMARY KEY (tenant_id, connector, connection_id, key);
ALTER TABLE connector_state ALTER COLUMN connection_id DROP DEFAULT;
INSERT INTO connector_state (tenant_id, connector, connection_id, key, value)
    SELECT s.tenant_id, s.connector, c.id, s.key, s.value
    FROM connector_state s
    JOIN connections c ON c.tenant_id = s.tenant_id AND c.connector = s.connector
    WHERE s.connection_id = '';
