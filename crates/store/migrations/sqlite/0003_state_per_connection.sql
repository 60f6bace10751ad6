-- Guest state is scoped by connection as well as connector: two connections of one connector
-- (two accounts) keep their own polling cursors. '' is the scope of invocations without a
-- connection. Existing rows were shared by every connection of their connector: each
-- connection gets its own copy (so no connector starts its cursors over), and the shared
-- copy stays as the connection-less scope.
CREATE TABLE connector_state_v2 (
    tenant_id TEXT NOT NULL,
    connector TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tenant_id, connector, connection_id, key)
);
INSERT INTO connector_state_v2 (tenant_id, connector, connection_id, key, value)
    SELECT tenant_id, connector, '', key, value FROM connector_state;
INSERT INTO connector_state_v2 (tenant_id, connector, connection_id, key, value)
    SELECT s.tenant_id, s.connector, c.id, s.key, s.value
    FROM connector_state s
    JOIN connections c ON c.tenant_id = s.tenant_id AND c.connector = s.connector;
DROP TABLE connector_state;
ALTER TABLE connector_state_v2 RENAME TO connector_state;
