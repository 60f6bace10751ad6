//! The rows every invocation reads, cached in this process: a tenant's quota, the current
//! version of each of its connectors, and its connections. Without them an invoke made four
//! database round trips before the guest started (the run count is the one left), and parsed
//! every stored manifest of the connector each time.
//!
//! Freshness: every write goes through the pipeline ([`crate::Pipeline`]'s write methods),
//! which invalidates the entry before it answers, so the next invocation here sees it; no
//! handler has to remember to. A write through another process sharing the database is seen
//! here within [`TTL`]. A read that raced with an invalidation is not cached (the generation
//! check below), so an invalidation is never undone by a slower reader.
//!
//! A cached OAuth2 connection may hold a token that another task has since refreshed: the
//! refresh path re-reads the row under its lock before it calls the token endpoint, so a stale
//! copy costs a read, never a second refresh.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airlock_model::TenantQuota;
use airlock_store::{ConnectionRecord, ConnectorRecord};

use airlock_model::clock::Clock;

/// How long another process's write may go unseen here.
pub const TTL: Duration = Duration::from_secs(1);
const CAPACITY: u64 = 50_000;

pub(crate) struct HotRows {
    quotas: Cached<String, TenantQuota>,
    /// Keyed by tenant id and connector name.
    connectors: Cached<(String, String), Arc<ConnectorRecord>>,
    /// Keyed by tenant id and connection id.
    connections: Cached<(String, String), Arc<ConnectionRecord>>,
}

impl HotRows {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            quotas: Cached::new(clock.clone()),
            connectors: Cached::new(clock.clone()),
            connections: Cached::new(clock),
        }
    }
}

impl HotRows {
    pub(crate) async fn quota<E>(
        &self,
        tenant: &str,
        load: impl Future<Output = Result<TenantQuota, E>>,
    ) -> Result<TenantQuota, E> {
        self.quotas.get_or_load(tenant.to_owned(), load).await
    }

    pub(crate) fn forget_quota(&self, tenant: &str) {
        self.quotas.invalidate(&tenant.to_owned());
    }

    pub(crate) async fn current_connector<E>(
        &self,
        tenant: &str,
        name: &str,
        load: impl Future<Output = Result<ConnectorRecord, E>>,
    ) -> Result<Arc<ConnectorRecord>, E> {
        let key = (tenant.to_owned(), name.to_owned());
        self.connectors
            .get_or_load(key, async { load.await.map(Arc::new) })
            .await
    }

    /// After an upload or a deprecation: which version is current may have changed.
    pub(crate) fn forget_connector(&self, tenant: &str, name: &str) {
        self.connectors
            .invalidate(&(tenant.to_owned(), name.to_owned()));
    }

    pub(crate) async fn connection<E>(
        &self,
        tenant: &str,
        id: &str,
        load: impl Future<Output = Result<ConnectionRecord, E>>,
    ) -> Result<Arc<ConnectionRecord>, E> {
        let key = (tenant.to_owned(), id.to_owned());
        self.connections
            .get_or_load(key, async { load.await.map(Arc::new) })
            .await
    }

    pub(crate) fn forget_connection(&self, tenant: &str, id: &str) {
        self.connections
            .invalidate(&(tenant.to_owned(), id.to_owned()));
    }
}

struct Cached<K, V> {
    /// Each value with the time it was read (the clock's milliseconds): older than [`TTL`]
    /// is a miss. moka only bounds the memory.
    entries: moka::sync::Cache<K, (V, i64)>,
    /// Bumped by every invalidation; a load that saw it change does not fill.
    generation: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl<K, V> Cached<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            entries: moka::sync::Cache::builder().max_capacity(CAPACITY).build(),
            generation: AtomicU64::new(0),
            clock,
        }
    }

    async fn get_or_load<E>(
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

    fn invalidate(&self, key: &K) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use airlock_model::clock::ManualClock;

    fn cache() -> (Cached<String, u32>, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (Cached::new(Arc::new(clock.clone())), clock)
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
