//! OAuth2 connections: the host keeps a connection's access token fresh, single-flight.
//!
//! A token is refreshed
//! - before an invocation, when it has expired or expires within [`EXPIRY_SKEW_MS`];
//! - during one, when an upstream answers 401 to it: the credential handed to the runtime
//!   carries a [`ConnectionRefresher`], which the gate asks for a token in place of the rejected
//!   one, and then re-sends that one request (`outbound::Session::send`). If the stored token
//!   is no longer the rejected one, another task or process has refreshed it already, and the
//!   stored token is returned without calling the token endpoint.
//!
//! Single flight:
//! - Within a process, one `tokio::sync::Mutex` per connection: the first task refreshes, the
//!   others wait on the lock and then find the fresh token in the row (double-checked after
//!   acquiring), or, if the refresh failed, meet its back-off without calling the endpoint.
//! - Across processes sharing the database, a lease on the connection row
//!   (`refresh_lease_until`, `refresh_lease_owner`), taken by compare-and-swap: only the holder
//!   calls the token endpoint; the others poll the row until its token is fresh or the lease
//!   has expired (then one of them takes it).
//!
//! Back-off: a failed refresh is remembered per connection; until its back-off ends (5 s,
//! doubling with each consecutive failure up to 5 min, reset by a success) every refresh of
//! that connection fails at once with the remembered cause, so a broken connection cannot
//! hammer its token endpoint, whoever invokes it and however often.
//!
//! A refresh runs in a task of its own, tracked by the pipeline: an invocation that stops
//! waiting for it (its timeout, a client that went away) does not cancel it between the
//! endpoint's answer and the write, which would lose a rotated refresh token the endpoint has
//! already replaced; and a graceful shutdown waits for it ([`crate::Pipeline::shutdown`]).
//!
//! The token endpoint is called through the gate (`airlock_runtime::outbound::Gate::refresh_oauth2`),
//! so the manifest's token URL meets the same scheme and address rules as guest traffic, and
//! its host must be allowed by the tenant's outbound policy (read fresh for every refresh).
//! The manifest's scopes are sent. The new tokens are sealed into the connection's envelope
//! like every other secret field.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airlock_model::{AuthSpec, AuthType, ConnectionId, TenantId};
use airlock_runtime::outbound::{
    Credential, REFRESH_TIMEOUT, RefreshAccessToken, RefreshRequest, TokenRefresher,
};
use airlock_secrets::Secret;
use airlock_store::ConnectionRecord;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::credentials::credential_from;
use crate::{CoreError, Pipeline};

/// A token expiring within this margin is refreshed before use: it could expire in flight.
pub const EXPIRY_SKEW_MS: i64 = 30_000;
/// How long a refresh lease holds; longer than one refresh may take.
const LEASE_MS: i64 = REFRESH_TIMEOUT.as_millis() as i64 + 10_000;
/// How often a waiter re-reads the row while another process refreshes.
const POLL: Duration = Duration::from_millis(50);
/// The first back-off after a failed refresh; doubled per consecutive failure.
pub const BACKOFF_BASE_MS: i64 = 5_000;
/// The longest back-off.
pub const BACKOFF_MAX_MS: i64 = 300_000;

/// Tenant id and connection id.
type ConnectionKey = (TenantId, ConnectionId);

/// Per-connection locks of this process and the back-off of connections whose last refresh
/// failed. A lock's entry lives while someone holds or waits for it.
#[derive(Default)]
pub(crate) struct RefreshLocks {
    locks: airlock_runtime::KeyedLocks<ConnectionKey>,
    failures: Mutex<HashMap<ConnectionKey, Failure>>,
}

#[derive(Debug, Clone)]
struct Failure {
    /// Consecutive failures.
    count: u32,
    /// No refresh before this time (clock milliseconds).
    until_ms: i64,
    message: String,
}

/// Failures remembered at most; beyond it the oldest back-offs are forgotten first.
const MAX_FAILURES: usize = 100_000;

impl RefreshLocks {
    /// Forgets a connection's failed refreshes: its credential was replaced.
    pub(crate) fn forget(&self, tenant: &str, id: &str) {
        let key = (TenantId::new(tenant), ConnectionId::new(id));
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// The refusal while the connection backs off after a failed refresh.
    fn backing_off(&self, key: &ConnectionKey, now_ms: i64) -> Option<CoreError> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let failure = failures.get(key).filter(|f| now_ms < f.until_ms)?;
        let wait_s = (failure.until_ms - now_ms + 999) / 1000;
        Some(CoreError::CredentialRefresh(format!(
            "{} (the last refresh failed; the next attempt is allowed in {wait_s} s)",
            failure.message
        )))
    }

    fn record(&self, key: &ConnectionKey, result: &Result<Credential, CoreError>, now_ms: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Err(CoreError::CredentialRefresh(message)) => {
                if failures.len() >= MAX_FAILURES {
                    failures.retain(|_, f| f.until_ms > now_ms);
                }
                let count = failures.get(key).map_or(0, |f| f.count).saturating_add(1);
                let backoff = BACKOFF_BASE_MS
                    .saturating_mul(1_i64 << (count - 1).min(16))
                    .min(BACKOFF_MAX_MS);
                failures.insert(
                    key.clone(),
                    Failure {
                        count,
                        until_ms: now_ms.saturating_add(backoff),
                        message: message.clone(),
                    },
                );
            }
            Ok(_) => {
                failures.remove(key);
            }
            Err(_) => {}
        }
    }
}

/// The connector manifest's token endpoint.
#[derive(Debug, Clone)]
struct TokenEndpoint {
    url: String,
    scopes: Vec<String>,
}

/// Whether the stored token must be refreshed before use: it is missing, it expires within the
/// skew, or it is `rejected` (an upstream answered 401 to it).
fn needs_refresh(
    record: &ConnectionRecord,
    secrets: &BTreeMap<String, Secret>,
    rejected: Option<&Secret>,
    now_ms: i64,
) -> bool {
    let Some(current) = secrets.get("access_token") else {
        return secrets.contains_key("refresh_token");
    };
    if rejected.is_some_and(|rejected| rejected.expose() == current.expose()) {
        return true;
    }
    match record.fields.get("expires_at").and_then(Value::as_i64) {
        Some(expires_at_s) => expires_at_s.saturating_mul(1000) <= now_ms + EXPIRY_SKEW_MS,
        None => false,
    }
}

impl Pipeline {
    /// The credential to attach to one invocation of `record`'s connector (whose auth is
    /// `auth`): decrypted, and for OAuth2 refreshed first if it has expired, and carrying a
    /// refresher for the gate to use after a 401.
    pub(crate) async fn invocation_credential(
        &self,
        tenant: &TenantId,
        record: &ConnectionRecord,
        auth: &AuthSpec,
    ) -> Result<Credential, CoreError> {
        let secrets = self.inner.credentials.open(tenant.as_str(), record)?;
        let endpoint = match auth {
            AuthSpec::OAuth2 {
                token_url, scopes, ..
            } if record.auth_type == AuthType::OAuth2 => TokenEndpoint {
                url: token_url.clone(),
                scopes: scopes.clone(),
            },
            _ => return Ok(credential_from(record, &secrets)),
        };
        let key = (tenant.clone(), ConnectionId::new(&record.id));
        let credential = if needs_refresh(record, &secrets, None, self.now_ms()) {
            self.refresh_detached(&key, &endpoint, None).await?
        } else {
            credential_from(record, &secrets)
        };
        Ok(match credential {
            Credential::OAuth2 { access_token, .. } => Credential::OAuth2 {
                access_token,
                refresher: Some(TokenRefresher::new(ConnectionRefresher {
                    pipeline: self.clone(),
                    key,
                    endpoint,
                })),
            },
            other => other,
        })
    }

    /// [`Pipeline::refresh_connection`] in a tracked task of its own, so that the caller
    /// giving up does not cut a refresh short, and shutdown waits for it.
    async fn refresh_detached(
        &self,
        key: &ConnectionKey,
        endpoint: &TokenEndpoint,
        rejected: Option<Secret>,
    ) -> Result<Credential, CoreError> {
        let pipeline = self.clone();
        let (key, endpoint) = (key.clone(), endpoint.clone());
        let task = self.inner.tasks.spawn(async move {
            pipeline
                .refresh_connection(&key, &endpoint, rejected.as_ref())
                .await
        });
        task.await.unwrap_or_else(|err| {
            tracing::error!(error = %err, "an OAuth2 refresh task failed");
            Err(CoreError::Internal)
        })
    }

    /// A fresh credential for the connection, refreshed unless the stored token is fresh (and
    /// not `rejected`): one refresh per connection at a time in this process, none while the
    /// connection backs off after a failure.
    async fn refresh_connection(
        &self,
        key: &ConnectionKey,
        endpoint: &TokenEndpoint,
        rejected: Option<&Secret>,
    ) -> Result<Credential, CoreError> {
        let locks = &self.inner.refresh_locks;
        if let Some(refusal) = locks.backing_off(key, self.now_ms()) {
            return Err(refusal);
        }
        let result = {
            let _held = locks.locks.lock(key).await;
            // A task that queued behind a failed refresh meets its back-off here.
            match locks.backing_off(key, self.now_ms()) {
                Some(refusal) => Err(refusal),
                None => {
                    let result = self.refresh_single_flight(key, endpoint, rejected).await;
                    locks.record(key, &result, self.now_ms());
                    result
                }
            }
        };
        if result.is_ok() {
            // The row holds a newer token than any cached copy: the next invocation reads it
            // instead of meeting the old token's 401 again.
            self.inner
                .hot
                .forget_connection(key.0.as_str(), key.1.as_str());
        }
        result
    }

    /// Holding this process's lock for the connection: returns a fresh credential, refreshing
    /// it under the row's lease unless another task or process already did.
    async fn refresh_single_flight(
        &self,
        key: &ConnectionKey,
        endpoint: &TokenEndpoint,
        rejected: Option<&Secret>,
    ) -> Result<Credential, CoreError> {
        let (tenant, id) = (key.0.as_str(), key.1.as_str());
        let store = &self.inner.store;
        let owner = &self.inner.instance_id;
        let deadline = Instant::now() + Duration::from_millis(LEASE_MS as u64) + POLL * 4;
        loop {
            // Double-checked: whoever held the lock (here or elsewhere) may have refreshed.
            let (record, secrets) = self.read_connection(tenant, id).await?;
            if !needs_refresh(&record, &secrets, rejected, self.now_ms()) {
                return Ok(credential_from(&record, &secrets));
            }
            // The lease is compared with other processes' clocks: wall time, not the
            // pipeline's injectable clock.
            let now = airlock_store::now_ms();
            if store
                .try_refresh_lease(tenant, id, owner, now, now + LEASE_MS)
                .await?
            {
                // Read again under the lease: the previous holder may have written and
                // released between the read above and the lease.
                let (record, secrets) = self.read_connection(tenant, id).await?;
                if !needs_refresh(&record, &secrets, rejected, self.now_ms()) {
                    store.release_refresh_lease(tenant, id, owner).await?;
                    return Ok(credential_from(&record, &secrets));
                }
                let result = self
                    .refresh_under_lease(tenant, &record, secrets, endpoint)
                    .await;
                if result.is_err() {
                    store.release_refresh_lease(tenant, id, owner).await?;
                }
                return result;
            }
            if Instant::now() >= deadline {
                return Err(CoreError::CredentialRefresh(
                    "timed out waiting for another process to refresh the connection's access token"
                        .into(),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The connection's row as stored now, with its secrets decrypted.
    async fn read_connection(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<(ConnectionRecord, BTreeMap<String, Secret>), CoreError> {
        let record = self
            .inner
            .store
            .connection(tenant, id)
            .await
            .map_err(CoreError::or_not_found("connection"))?;
        let secrets = self.inner.credentials.open(tenant, &record)?;
        Ok((record, secrets))
    }

    /// Calls the token endpoint and stores the new tokens, sealed. The caller holds the lease.
    async fn refresh_under_lease(
        &self,
        tenant: &str,
        record: &ConnectionRecord,
        mut secrets: BTreeMap<String, Secret>,
        endpoint: &TokenEndpoint,
    ) -> Result<Credential, CoreError> {
        let Some(refresh_token) = secrets.get("refresh_token").cloned() else {
            return Err(CoreError::CredentialRefresh(
                "the connection's access token has expired or was rejected, \
                 and the connection holds no refresh token"
                    .into(),
            ));
        };
        let tenant_hosts = self.tenant_hosts(tenant).await?;
        let client_id = record
            .fields
            .get("client_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let client_secret = secrets.get("client_secret").cloned().unwrap_or_default();
        let grant = self
            .inner
            .runtime
            .gate()
            .refresh_oauth2(
                &endpoint.url,
                &tenant_hosts,
                RefreshRequest {
                    client_id: &client_id,
                    client_secret: &client_secret,
                    refresh_token: &refresh_token,
                    scopes: &endpoint.scopes,
                },
            )
            .await
            .map_err(|err| {
                tracing::warn!(connection = %record.id, error = %err, "OAuth2 token refresh failed");
                CoreError::CredentialRefresh(format!(
                    "the connection's access token has expired or was rejected, \
                     and refreshing it failed: {err}"
                ))
            })?;
        secrets.insert("access_token".to_owned(), grant.access_token);
        if let Some(rotated) = grant.refresh_token {
            secrets.insert("refresh_token".to_owned(), rotated);
        }
        let mut updated = record.clone();
        if let Value::Object(fields) = &mut updated.fields {
            match grant.expires_in {
                Some(seconds) => {
                    // The endpoint is the tenant's to choose: no value may overflow.
                    let expires_at = (self.now_ms() / 1000)
                        .saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
                    fields.insert("expires_at".into(), Value::from(expires_at));
                }
                None => {
                    fields.remove("expires_at");
                }
            }
        }
        let envelope = self.inner.credentials.seal(tenant, &record.id, &secrets)?;
        let written = self
            .inner
            .store
            .finish_refresh(
                tenant,
                &record.id,
                &self.inner.instance_id,
                &updated.fields,
                &envelope,
            )
            .await?;
        if !written {
            // The lease expired and another process took it; this token is still valid for
            // this invocation, and the other process stores its own.
            tracing::warn!(connection = %record.id, "OAuth2 refresh lease lost before the write");
        }
        tracing::info!(connection = %record.id, "refreshed an OAuth2 access token");
        Ok(credential_from(&updated, &secrets))
    }
}

/// What the gate calls after an upstream answered 401 to one connection's access token.
struct ConnectionRefresher {
    pipeline: Pipeline,
    key: ConnectionKey,
    endpoint: TokenEndpoint,
}

impl RefreshAccessToken for ConnectionRefresher {
    fn refresh<'a>(&'a self, rejected: &'a Secret) -> BoxFuture<'a, Result<Secret, String>> {
        Box::pin(async move {
            let refreshed = self
                .pipeline
                .refresh_detached(&self.key, &self.endpoint, Some(rejected.clone()))
                .await;
            match refreshed {
                Ok(Credential::OAuth2 { access_token, .. }) => Ok(access_token),
                Ok(_) => Err("the connection holds no access token".to_owned()),
                Err(err) => Err(err.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ConnectionKey {
        (TenantId::new("t"), ConnectionId::new("conn_1"))
    }

    fn failed() -> Result<Credential, CoreError> {
        Err(CoreError::CredentialRefresh("the endpoint said no".into()))
    }

    #[test]
    fn a_failed_refresh_backs_off_doubling_until_a_success() {
        let locks = RefreshLocks::default();
        let t0 = 1_000_000;
        assert!(locks.backing_off(&key(), t0).is_none());
        locks.record(&key(), &failed(), t0);
        let refusal = locks.backing_off(&key(), t0 + BACKOFF_BASE_MS - 1);
        assert!(
            matches!(&refusal, Some(CoreError::CredentialRefresh(m)) if m.contains("the endpoint said no")),
            "{refusal:?}"
        );
        assert!(locks.backing_off(&key(), t0 + BACKOFF_BASE_MS).is_none());
        // A second failure in a row waits twice as long.
        let t1 = t0 + BACKOFF_BASE_MS;
        locks.record(&key(), &failed(), t1);
        assert!(
            locks
                .backing_off(&key(), t1 + 2 * BACKOFF_BASE_MS - 1)
                .is_some()
        );
        assert!(
            locks
                .backing_off(&key(), t1 + 2 * BACKOFF_BASE_MS)
                .is_none()
        );
        // Many failures are capped.
        for _ in 0..40 {
            locks.record(&key(), &failed(), t1);
        }
        assert!(locks.backing_off(&key(), t1 + BACKOFF_MAX_MS).is_none());
        // A success forgets the failures: the next failure starts over at the base.
        locks.record(&key(), &Ok(Credential::None), t1);
        assert!(locks.backing_off(&key(), t1).is_none());
        locks.record(&key(), &failed(), t1);
        assert!(locks.backing_off(&key(), t1 + BACKOFF_BASE_MS).is_none());
        // Other connections are not affected.
        let other = (TenantId::new("t"), ConnectionId::new("conn_2"));
        locks.record(&key(), &failed(), t1);
        assert!(locks.backing_off(&other, t1).is_none());
    }
}
