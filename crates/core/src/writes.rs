//! Writes that change what invocations read, each invalidating the pipeline's cached rows
//! before it returns (write-through): a caller cannot forget to.

use std::collections::BTreeMap;

use airlock_model::{AuthType, TenantQuota};
use airlock_runtime::SharedComponent;
use airlock_secrets::Secret;
use airlock_store::{
    AuditDraft, ConnectionChange, ConnectionRecord, ConnectorRecord, Deleted, LifecycleRefusal,
    NewConnection, NewCredential, PutOutcome, TenantRecord,
};
use serde_json::Value;

use crate::{CoreError, Pipeline};

/// A connection to create: its clear fields and the secret fields to seal.
#[derive(Debug)]
pub struct ConnectionDraft {
    pub connector: String,
    pub name: String,
    pub auth_type: AuthType,
    pub fields: Value,
    pub secrets: BTreeMap<String, Secret>,
    /// Checked by the caller against the connector's `config_schema`.
    pub config: Value,
}

impl Pipeline {
    /// Replaces a tenant's limits and quotas (validated by the caller against [`Pipeline::caps`]).
    pub async fn set_tenant_quota(
        &self,
        tenant: &str,
        quota: &TenantQuota,
    ) -> Result<(), CoreError> {
        let result = self
            .inner
            .store
            .set_tenant_quota(tenant, quota)
            .await
            .map_err(CoreError::or_not_found("tenant"));
        self.inner.hot.forget_quota(tenant);
        result
    }

    /// Changes some of a tenant's limits: `change` gets the stored ones and returns the new
    /// ones (checked by the caller) or a refusal, in one transaction (see
    /// `Store::change_tenant_quota`).
    pub async fn change_tenant_quota<E>(
        &self,
        tenant: &str,
        change: impl FnOnce(TenantQuota) -> Result<TenantQuota, E>,
    ) -> Result<Result<TenantQuota, E>, CoreError> {
        let result = self
            .inner
            .store
            .change_tenant_quota(tenant, change)
            .await
            .map_err(CoreError::or_not_found("tenant"));
        self.inner.hot.forget_quota(tenant);
        result
    }

    /// Suspends a tenant (see `Store::suspend_tenant`); this process refuses it at once,
    /// the others within [`crate::fresh::TTL`].
    pub async fn suspend_tenant(&self, tenant: &str) -> Result<TenantRecord, CoreError> {
        let result = self
            .inner
            .store
            .suspend_tenant(tenant)
            .await
            .map_err(CoreError::or_not_found("tenant"));
        self.inner.hot.forget_quota(tenant);
        result
    }

    /// Resumes a suspended tenant.
    pub async fn resume_tenant(&self, tenant: &str) -> Result<TenantRecord, CoreError> {
        let result = self
            .inner
            .store
            .resume_tenant(tenant)
            .await
            .map_err(CoreError::or_not_found("tenant"));
        self.inner.hot.forget_quota(tenant);
        result
    }

    /// Deletes a suspended tenant's every row, then the compiled code of components no other
    /// tenant holds (in this process's artifact cache and memory).
    pub async fn delete_tenant(
        &self,
        tenant: &str,
        record: &AuditDraft,
    ) -> Result<Result<Deleted, LifecycleRefusal>, CoreError> {
        let result = self
            .inner
            .store
            .delete_tenant(tenant, record)
            .await
            .map_err(CoreError::or_not_found("tenant"));
        self.inner.hot.forget_quota(tenant);
        if let Ok(Ok(deleted)) = &result {
            for digest in &deleted.orphaned_digests {
                self.inner.runtime.forget(digest);
            }
        }
        result
    }

    /// Stores an uploaded connector version whose component loaded (unkept), then keeps the
    /// component (artifact cache, memory): a refused upload leaves nothing behind.
    pub async fn put_connector_version(
        &self,
        tenant: &str,
        component: &SharedComponent,
        bytes: &[u8],
    ) -> Result<(ConnectorRecord, PutOutcome), CoreError> {
        let manifest = component.manifest().manifest();
        let stored = self
            .inner
            .store
            .put_connector(tenant, manifest, component.digest(), bytes)
            .await?;
        self.inner.runtime.keep(component).await;
        self.inner.hot.forget_connector(tenant, &manifest.name);
        Ok(stored)
    }

    /// Deprecates a version or takes the deprecation back: which version is current may
    /// change.
    pub async fn set_connector_deprecated(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        deprecated: bool,
    ) -> Result<(), CoreError> {
        let result = self
            .inner
            .store
            .set_connector_deprecated(tenant, name, version, deprecated)
            .await
            .map_err(CoreError::or_not_found("connector version"));
        self.inner.hot.forget_connector(tenant, name);
        result
    }

    /// Creates a connection, its secret fields sealed to its tenant and id.
    pub async fn create_connection(
        &self,
        tenant: &str,
        draft: ConnectionDraft,
    ) -> Result<ConnectionRecord, CoreError> {
        let id = format!("conn_{}", uuid::Uuid::new_v4().simple());
        let secret = if draft.secrets.is_empty() {
            None
        } else {
            Some(self.inner.credentials.seal(tenant, &id, &draft.secrets)?)
        };
        let new = NewConnection {
            id,
            connector: draft.connector,
            name: draft.name,
            auth_type: draft.auth_type,
            fields: draft.fields,
            secret,
            config: draft.config,
        };
        Ok(self.inner.store.create_connection(tenant, new).await?)
    }

    /// Seals a replacement credential for connection `id` under the current key, ready for
    /// [`Pipeline::update_connection`] or a test before it.
    pub fn seal_credential(
        &self,
        tenant: &str,
        id: &str,
        auth_type: AuthType,
        fields: Value,
        secrets: &BTreeMap<String, Secret>,
    ) -> Result<NewCredential, CoreError> {
        let secret = if secrets.is_empty() {
            None
        } else {
            Some(self.inner.credentials.seal(tenant, id, secrets)?)
        };
        Ok(NewCredential {
            auth_type,
            fields,
            secret,
        })
    }

    /// Changes a connection's name, credential or config. This process's next invocation
    /// reads the new row, and a failed token refresh of the old credential no longer holds
    /// the connection back; other processes see it within [`crate::fresh::TTL`].
    pub async fn update_connection(
        &self,
        tenant: &str,
        id: &str,
        change: ConnectionChange,
    ) -> Result<ConnectionRecord, CoreError> {
        let new_credential = change.credential.is_some();
        let result = self
            .inner
            .store
            .update_connection(tenant, id, change)
            .await
            .map_err(CoreError::or_not_found("connection"));
        self.inner.hot.forget_connection(tenant, id);
        if new_credential {
            self.inner.refresh_locks.forget(tenant, id);
        }
        result
    }

    /// Deletes a connection and its guest state.
    pub async fn delete_connection(&self, tenant: &str, id: &str) -> Result<(), CoreError> {
        let result = self
            .inner
            .store
            .delete_connection(tenant, id)
            .await
            .map_err(CoreError::or_not_found("connection"));
        self.inner.hot.forget_connection(tenant, id);
        result
    }
}
