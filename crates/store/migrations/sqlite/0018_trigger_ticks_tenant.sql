-- An expand step (schema_compat.oldest_reader stays): trigger_ticks is the one table of
-- tenant rows whose key does not start with tenant_id, so deleting a tenant, or creating an
-- id again (which clears a deleted tenant's leftovers), scanned all of it.
CREATE INDEX trigger_ticks_tenant ON trigger_ticks (tenant_id);
