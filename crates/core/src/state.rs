//! The runtime's `StateStore` over the database: guest state scoped by tenant, connector and
//! connection.

use airlock_model::StateScope;
use airlock_runtime::{StateError, StateStore};
use airlock_store::{Store, StoreError};
use futures::future::BoxFuture;

/// The database-backed state store the pipeline gives every invocation.
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
fn unavailable(error: StoreError) -> StateError {
    tracing::warn!(%error, "the guest state store failed");
    StateError::Unavailable
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
