//! [`KeyedLocks`]: one task at a time per key, for work that every concurrent caller would
//! otherwise repeat (compiling a component nobody has in memory yet, refreshing one OAuth2
//! token). The task that waited re-checks what the first one produced instead of redoing it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Slot = Arc<tokio::sync::Mutex<()>>;

/// Async locks by key, created on first use and forgotten when nobody holds or waits for
/// them, so the map holds only keys in use.
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Slot>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K> std::fmt::Debug for KeyedLocks<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLocks").finish_non_exhaustive()
    }
}

/// `key`'s lock, held until dropped (also when the holding future is cancelled).
pub struct KeyedGuard<'a, K: Hash + Eq> {
    owner: &'a KeyedLocks<K>,
    key: Option<K>,
    slot: Slot,
    held: Option<OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    /// Waits for `key`'s turn.
    pub async fn lock(&self, key: &K) -> KeyedGuard<'_, K> {
        let slot = self.map().entry(key.clone()).or_default().clone();
        // Built before the wait: a caller cancelled while waiting still drops its claim on
        // the entry.
        let mut guard = KeyedGuard {
            owner: self,
            key: Some(key.clone()),
            slot,
            held: None,
        };
        guard.held = Some(guard.slot.clone().lock_owned().await);
        guard
    }

    /// Keys with a holder or a waiter.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Hash + Eq> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut map = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Clones are taken under the map's lock, so 2 (the map's and ours) means nobody
        // else holds or waits for this key.
        if Arc::strong_count(&self.slot) == 2
            && let Some(key) = self.key.take()
        {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_the_map_empties() {
        let locks = Arc::new(KeyedLocks::<String>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside, most) = (locks.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = locks.lock(&"digest".to_owned()).await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn other_keys_do_not_wait_and_a_cancelled_waiter_leaves_nothing() {
        let locks = KeyedLocks::<u32>::default();
        let first = locks.lock(&1).await;
        // Another key is free while 1 is held.
        drop(locks.lock(&2).await);
        // A waiter on 1 given up (its future dropped) before its turn.
        let waiting = tokio::time::timeout(Duration::from_millis(10), locks.lock(&1)).await;
        assert!(waiting.is_err());
        assert_eq!(locks.len(), 1);
        drop(first);
        assert!(locks.is_empty());
    }
}
