//! The rows every invocation reads, cached in this process: a tenant's quota, the current
//! version of each of its connectors, and its connections. Without them an invoke made four
//! database round trips before the guest started (the run count is the one left), and parsed
//! every stored manifest of the connector each time.
//!
//! Freshness: every write goes through the pipeline ([`crate::Pipeline`]'s write methods),
//! which invalidates the entry before it answers, so the next invocation here sees it; no
//! handler has to remember to. A write through another process sharing the database is seen
//! here within [`crate::fresh::TTL`]. A read that raced with an invalidation is not cached (the generation
//! check below), so an invalidation is never undone by a slower reader.
//!
//! A cached OAuth2 connection may hold a token that another task has since refreshed: the
//! refresh path re-reads the row under its lock before it calls the token endpoint, so a stale
//! copy costs a read, never a second refresh.

use std::future::Future;
use std::sync::Arc;

use airlock_model::TenantQuota;
use airlock_model::clock::Clock;
use airlock_store::{ConnectionRecord, ConnectorRecord};

use crate::fresh::FreshCache as Cached;

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

    /// After an upload or a deprecation: which version is current may have changed. A
    /// change of the shared catalog may change it in every tenant that uses it.
    pub(crate) fn forget_connector(&self, tenant: &str, name: &str) {
        if tenant == airlock_store::CATALOG {
            self.connectors.invalidate_all();
        } else {
            self.connectors
                .invalidate(&(tenant.to_owned(), name.to_owned()));
        }
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
