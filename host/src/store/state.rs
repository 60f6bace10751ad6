//! Guest state in the `connector_state` table: the runtime's [`StateStore`] over the database,
//! scoped by tenant and connector.

use futures::future::BoxFuture;
use sqlx::Row;

use super::{Store, StoreError};
use crate::runtime::{StateError, StateScope, StateStore};

/// The database-backed state store the API gives every invocation.
#[derive(Debug, Clone)]
pub struct DbStateStore {
    store: Store,
}

impl DbStateStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// A storage failure reaches the guest as the fixed [`StateError::Unavailable`]; its cause (a
/// database error, which may quote the guest's key) goes to the host log only.
fn unavailable(error: impl Into<StoreError>) -> StateError {
    let error = error.into();
    tracing::warn!(%error, "the guest state store failed");
    StateError::Unavailable
}

impl Store {
    pub async fn state_get(
        &self,
        scope: &StateScope,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM connector_state WHERE tenant_id = $1 AND connector = $2 AND key = $3")
            .bind(&scope.tenant)
            .bind(&scope.connector)
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
    pub async fn state_set(
        &self,
        scope: &StateScope,
        key: &str,
        value: &[u8],
        max_keys: u32,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("UPDATE tenants SET id = id WHERE id = $1")
            .bind(&scope.tenant)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "INSERT INTO connector_state (tenant_id, connector, key, value) \
             SELECT $1, $2, $3, $4 \
             WHERE EXISTS (SELECT 1 FROM connector_state WHERE tenant_id = $1 AND connector = $2 AND key = $3) \
                OR (SELECT COUNT(*) FROM connector_state WHERE tenant_id = $1 AND connector = $2) < $5 \
             ON CONFLICT (tenant_id, connector, key) DO UPDATE SET value = excluded.value",
        )
        .bind(&scope.tenant)
        .bind(&scope.connector)
        .bind(key)
        .bind(value)
        .bind(i64::from(max_keys))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn state_delete(&self, scope: &StateScope, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM connector_state WHERE tenant_id = $1 AND connector = $2 AND key = $3",
        )
        .bind(&scope.tenant)
        .bind(&scope.connector)
        .bind(key)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

impl StateStore for DbStateStore {
    fn get<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StateError>> {
        Box::pin(async move { self.store.state_get(scope, key).await.map_err(unavailable) })
    }

    fn set<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
        value: Vec<u8>,
        max_keys: u32,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            match self.store.state_set(scope, key, &value, max_keys).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(StateError::TooManyKeys { max: max_keys }),
                Err(error) => Err(unavailable(error)),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.store
                .state_delete(scope, key)
                .await
                .map_err(unavailable)
        })
    }
}
