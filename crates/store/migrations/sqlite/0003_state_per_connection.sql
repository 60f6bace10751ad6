-- Guest state is scoped by connection as well as connector: two connections of one connector
-- (two accounts) keep their own polling cursors. '' is the scope of invocations without a
-- connection. Existing rows move to that scope: they were shared by every connection.
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
DROP TABLE connector_state;
ALTER TABLE connector_state_v2 RENAME TO connector_state;
