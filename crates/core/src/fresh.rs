//! A per-process cache of database rows that is never staler than [`TTL`]: the hot rows of
//! every invocation ([`crate::Pipeline`]) and the triggers every webhook delivery reads.
//!
//! Whoever writes a cached row in this process invalidates it before answering, so the next
//! read here sees the write; a write through another process sharing the database is seen
//! within [`TTL`]. A load that raced with an invalidation is not kept (the generation check
//! in [`FreshCache::get_or_load`]), so an invalidation is never undone by a slower reader.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airlock_model::clock::Clock;

/// How long another process's write may go unseen here.
pub const TTL: Duration = Duration::from_secs(1);
const CAPACITY: u64 = 50_000;

pub struct FreshCache<K, V> {
    /// Each value with the time it was read (the clock's milliseconds): older than [`TTL`]
    /// is a miss. moka only bounds the memory.
    entries: moka::sync::Cache<K, (V, i64)>,
    /// Bumped by every invalidation; a load that saw it change does not fill.
    generation: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl<K, V> FreshCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with(
            clock,
            moka::sync::Cache::builder().max_capacity(CAPACITY).build(),
        )
    }

    /// Bounded by the sum of `weigh(value)` (bytes, say) instead of a count: for values
    /// whose sizes vary by orders of magnitude.
    pub fn weighed(
        clock: Arc<dyn Clock>,
        max_weight: u64,
        weigh: impl Fn(&V) -> u32 + Send + Sync + 'static,
    ) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_weight)
            .weigher(move |_key: &K, (value, _): &(V, i64)| weigh(value))
            .build();
        Self::with(clock, entries)
    }

    fn with(clock: Arc<dyn Clock>, entries: moka::sync::Cache<K, (V, i64)>) -> Self {
        Self {
            entries,
            generation: AtomicU64::new(0),
            clock,
        }
    }

    /// The cached value of `key` if younger than [`TTL`], else what `load` reads (kept
    /// unless an invalidation happened meanwhile). Errors are not cached.
    pub async fn get_or_load<E>(
        &self,
        key: K,
        load: impl Future<Output = Result<V, E>>,
    ) -> Result<V, E> {
        let now = self.clock.now_ms();
        if let Some((value, read_at)) = self.entries.get(&key)
            && now.saturating_sub(read_at) < TTL.as_millis() as i64
        {
            return Ok(value);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let value = load.await?;
        if self.generation.load(Ordering::Acquire) == generation {
            self.entries.insert(key.clone(), (value.clone(), now));
            // An invalidation between the check and the insert bumped the generation first:
            // undo the insert rather than serve the old row until the TTL.
            if self.generation.load(Ordering::Acquire) != generation {
                self.entries.invalidate(&key);
            }
        }
        Ok(value)
    }

    pub fn invalidate(&self, key: &K) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(key);
    }

    /// Forgets every entry: for a write that may change many of them.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }
}

impl<K, V> std::fmt::Debug for FreshCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshCache").finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use airlock_model::clock::ManualClock;

    fn cache() -> (FreshCache<String, u32>, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (FreshCache::new(Arc::new(clock.clone())), clock)
    }

    #[tokio::test]
    async fn serves_from_memory_until_invalidated() {
        let (cache, _clock) = cache();
        let load = |v: u32| async move { Ok::<_, ()>(v) };
        assert_eq!(cache.get_or_load("a".into(), load(1)).await, Ok(1));
        assert_eq!(cache.get_or_load("a".into(), load(2)).await, Ok(1));
        cache.invalidate(&"a".into());
        assert_eq!(cache.get_or_load("a".into(), load(3)).await, Ok(3));
        // Errors are not cached.
        let failed = cache
            .get_or_load("b".into(), async { Err::<u32, _>("down") })
            .await;
        assert_eq!(failed, Err("down"));
        assert_eq!(
            cache
                .get_or_load("b".into(), async { Ok::<_, &str>(4) })
                .await,
            Ok(4)
        );
    }

    #[tokio::test]
    async fn a_load_that_raced_an_invalidation_is_not_kept() {
        let (cache, _clock) = cache();
        // The load reads the old value; the write lands and invalidates while it is in flight.
        let stale = cache
            .get_or_load("a".into(), async {
                cache.invalidate(&"a".into());
                Ok::<_, ()>(1)
            })
            .await;
        assert_eq!(stale, Ok(1));
        assert_eq!(
            cache
                .get_or_load("a".into(), async { Ok::<_, ()>(2) })
                .await,
            Ok(2)
        );
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let (cache, clock) = cache();
        cache
            .get_or_load("a".into(), async { Ok::<_, ()>(1) })
            .await
            .unwrap();
        clock.advance_ms(TTL.as_millis() as i64 - 1);
        assert_eq!(
            cache
                .get_or_load("a".into(), async { Ok::<_, ()>(2) })
                .await,
            Ok(1),
            "fresh until the TTL"
        );
        clock.advance_ms(1);
        assert_eq!(
            cache
                .get_or_load("a".into(), async { Ok::<_, ()>(2) })
                .await,
            Ok(2)
        );
    }
}
