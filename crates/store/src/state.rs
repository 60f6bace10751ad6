//! Guest state in the `connector_state` table, scoped by tenant, connector and connection
//! ([`StateScope`]). The pipeline (`airlock-core`) adapts it to the runtime's `StateStore`.

use airlock_model::StateScope;
use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    pub async fn state_get(
        &self,
        scope: &StateScope,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM connector_state WHERE tenant_id = $1 AND connector = $2 AND connection_id = $3 AND key = $4")
            .bind(scope.tenant.as_str())
            .bind(scope.connector.as_str())
            .bind(scope.connection_key())
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("value")?),
            None => None,
        })
    }

    /// Writes `value`; a new key is refused when the scope holds `max_keys` already. The
    /// transaction first writes the tenant's row, which serializes concurrent writers of one
    /// tenant on PostgreSQL (row lock) and SQLite (one writer), so the count cannot be raced.
    ///
    /// A write for a connection that no longer exists (deleted while its guest ran) stores
    /// nothing: the tenant-row lock orders it against `delete_connection`, which takes it too.
    ///
    /// Guest writes first take a place in the state lane: on SQLite one at a time waits for
    /// the writer connection, so however chatty the guests, a run admission batch waits behind
    /// at most one of their writes.
    pub async fn state_set(
        &self,
        scope: &StateScope,
        key: &str,
        value: &[u8],
        max_keys: u32,
    ) -> Result<bool, StoreError> {
        let _lane = self.state_lane().await?;
        let mut tx = self.begin_write().await?;
        super::lock_tenant(&mut tx, scope.tenant.as_str()).await?;
        let done = sqlx::query(
            "INSERT INTO connector_state (tenant_id, connector, connection_id, key, value) \
             SELECT $1, $2, $3, $4, $5 \
             WHERE ($3 = '' OR EXISTS (SELECT 1 FROM connections WHERE tenant_id = $1 AND id = $3)) \
               AND (EXISTS (SELECT 1 FROM connector_state WHERE tenant_id = $1 AND connector = $2 AND connection_id = $3 AND key = $4) \
                OR (SELECT COUNT(*) FROM connector_state WHERE tenant_id = $1 AND connector = $2 AND connection_id = $3) < $6) \
             ON CONFLICT (tenant_id, connector, connection_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(scope.tenant.as_str())
        .bind(scope.connector.as_str())
        .bind(scope.connection_key())
        .bind(key)
        .bind(value)
        .bind(i64::from(max_keys))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn state_delete(&self, scope: &StateScope, key: &str) -> Result<(), StoreError> {
        let _lane = self.state_lane().await?;
        sqlx::query(
            "DELETE FROM connector_state WHERE tenant_id = $1 AND connector = $2 AND connection_id = $3 AND key = $4",
        )
        .bind(scope.tenant.as_str())
        .bind(scope.connector.as_str())
        .bind(scope.connection_key())
        .bind(key)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn state_lane(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        self.state_lane
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use sqlx::{Connection as _, Row as _};

    /// Migration 0003 on a database holding state from before it: every connection of the
    /// connector gets its own copy of the shared rows, and the shared copy stays as the
    /// connection-less scope, so no polling connector starts its cursors over.
    #[tokio::test]
    async fn migration_0003_copies_shared_state_to_every_connection() {
        sqlx::any::install_default_drivers();
        let mut db = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        for sql in [
            include_str!("../migrations/sqlite/0001_tenant_service.sql"),
            include_str!("../migrations/sqlite/0002_oauth_refresh_lease.sql"),
        ] {
            sqlx::raw_sql(sql).execute(&mut db).await.unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO tenants (id, name, limits, created_at) VALUES ('t', 't', '{}', 0); \
             INSERT INTO connections (tenant_id, id, connector, name, auth_type, fields, secret, created_at, updated_at) \
                 VALUES ('t', 'conn_a', 'github', 'a', 'api_key', '{}', NULL, 0, 0), \
                        ('t', 'conn_b', 'github', 'b', 'api_key', '{}', NULL, 0, 0), \
                        ('t', 'conn_c', 'other', 'c', 'none', '{}', NULL, 0, 0); \
             INSERT INTO connector_state (tenant_id, connector, key, value) VALUES ('t', 'github', 'cursor', x'07');",
        )
        .execute(&mut db)
        .await
        .unwrap();
        sqlx::raw_sql(include_str!(
            "../migrations/sqlite/0003_state_per_connection.sql"
        ))
        .execute(&mut db)
        .await
        .unwrap();
        let rows = sqlx::query(
            "SELECT connector, connection_id, key FROM connector_state ORDER BY connection_id",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        let rows: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r.try_get("connector").unwrap(),
                    r.try_get("connection_id").unwrap(),
                    r.try_get("key").unwrap(),
                )
            })
            .collect();
        let row = |connection: &str| {
            (
                "github".to_owned(),
                connection.to_owned(),
                "cursor".to_owned(),
            )
        };
        assert_eq!(rows, vec![row(""), row("conn_a"), row("conn_b")]);
    }
}
