//! Guest key-value state: the `StateStore` trait the `state` import is backed by, scoped by the
//! host to one tenant and one connector, and the in-memory implementation.

use std::collections::HashMap;
use std::sync::Mutex;

use airlock_model::StateScope;
use futures::future::BoxFuture;

/// Longest key a guest may use, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the scope already holds {max} keys")]
    TooManyKeys { max: u32 },
    /// The backend failed. Its cause is logged by the backend; the guest sees only this
    /// fixed text, never a database error.
    #[error("the state store is unavailable")]
    Unavailable,
}

/// A backend for guest state. Implementations enforce the key count atomically; key and value
/// sizes are checked by the host before a call reaches the backend.
pub trait StateStore: Send + Sync {
    fn get<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StateError>>;

    /// Stores `value`, refusing a new key when the scope already holds `max_keys`.
    fn set<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
        value: Vec<u8>,
        max_keys: u32,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    fn delete<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>>;
}

/// State kept in process memory; lost on restart. The CLI and tests use it.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    scopes: Mutex<HashMap<StateScope, HashMap<String, Vec<u8>>>>,
}

impl MemoryStateStore {
    fn with<R>(
        &self,
        f: impl FnOnce(&mut HashMap<StateScope, HashMap<String, Vec<u8>>>) -> R,
    ) -> R {
        // A poisoned lock only means another thread panicked mid-update of a plain map;
        // the map itself is still consistent.
        let mut guard = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl StateStore for MemoryStateStore {
    fn get<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StateError>> {
        let value = self.with(|s| s.get(scope).and_then(|keys| keys.get(key)).cloned());
        Box::pin(async move { Ok(value) })
    }

    fn set<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
        value: Vec<u8>,
        max_keys: u32,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let result = self.with(|s| {
            let keys = s.entry(scope.clone()).or_default();
            let count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
            if !keys.contains_key(key) && count >= max_keys {
                return Err(StateError::TooManyKeys { max: max_keys });
            }
            keys.insert(key.to_owned(), value);
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn delete<'a>(
        &'a self,
        scope: &'a StateScope,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        self.with(|s| s.get_mut(scope).map(|keys| keys.remove(key)));
        Box::pin(async move { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(tenant: &str) -> StateScope {
        StateScope {
            tenant: tenant.into(),
            connector: "c".into(),
            connection: None,
        }
    }

    #[tokio::test]
    async fn scopes_are_separate_and_the_key_count_is_capped() {
        let store = MemoryStateStore::default();
        store
            .set(&scope("a"), "k", b"1".to_vec(), 1)
            .await
            .expect("first key");
        assert_eq!(store.get(&scope("b"), "k").await, Ok(None));
        let other_connection = StateScope {
            connection: Some("conn_2".into()),
            ..scope("a")
        };
        assert_eq!(store.get(&other_connection, "k").await, Ok(None));
        assert_eq!(
            store.set(&scope("a"), "k2", b"2".to_vec(), 1).await,
            Err(StateError::TooManyKeys { max: 1 })
        );
        // Overwriting an existing key does not count as a new one.
        store
            .set(&scope("a"), "k", b"3".to_vec(), 1)
            .await
            .expect("overwrite");
        assert_eq!(store.get(&scope("a"), "k").await, Ok(Some(b"3".to_vec())));
        store.delete(&scope("a"), "k").await.expect("delete");
        assert_eq!(store.get(&scope("a"), "k").await, Ok(None));
    }
}
