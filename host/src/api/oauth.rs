//! OAuth2 connections: the access token is refreshed by the host before an invocation when it
//! has expired or expires within [`EXPIRY_SKEW_MS`], single-flight.
//!
//! - Within a process, one `tokio::sync::Mutex` per connection: the first task refreshes, the
//!   others wait on the lock and then find the fresh token in the row (double-checked after
//!   acquiring), or, if the refresh failed, get its error without calling the endpoint again.
//! - Across processes sharing the database, a lease on the connection row
//!   (`refresh_lease_until`, `refresh_lease_owner`), taken by compare-and-swap: only the holder
//!   calls the token endpoint; the others poll the row until its token is fresh or the lease
//!   has expired (then one of them takes it).
//!
//! The token endpoint is called through the gate ([`crate::outbound::Gate::refresh_oauth2`]),
//! so the manifest's token URL meets the same scheme and address rules as guest traffic. The
//! new tokens are sealed into the connection's envelope like every other secret field.
//!
//! A 401 from the upstream is not retried: the guest sees it (and reports an auth error).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::AppState;
use super::connections::credential_from;
use super::error::ApiError;
use crate::outbound::{AuthSpec, Credential, REFRESH_TIMEOUT, RefreshRequest};
use crate::secrets::Secret;
use crate::store::{ConnectionRecord, now_ms};

/// A token expiring within this margin is refreshed before use: it could expire in flight.
pub const EXPIRY_SKEW_MS: i64 = 30_000;
/// How long a refresh lease holds; longer than one refresh may take.
const LEASE_MS: i64 = REFRESH_TIMEOUT.as_millis() as i64 + 10_000;
/// How often a waiter re-reads the row while another process refreshes.
const POLL: Duration = Duration::from_millis(50);

/// Per-connection locks of this process, keyed by tenant and connection id. An entry lives
/// while someone holds or waits for it.
#[derive(Default)]
pub(super) struct RefreshLocks {
    locks: Mutex<HashMap<ConnectionKey, ConnectionLock>>,
}

/// Tenant id and connection id.
type ConnectionKey = (String, String);
/// Guards the last refresh failure: the tasks that queued behind a failed refresh get its
/// error instead of each calling the token endpoint again.
type ConnectionLock = Arc<tokio::sync::Mutex<Option<LastFailure>>>;

struct LastFailure {
    at: Instant,
    message: String,
}

/// How long queued tasks reuse a refresh failure. The lock's entry goes once nobody waits,
/// so a later invocation tries again.
const FAILURE_REUSE: Duration = Duration::from_secs(5);

impl RefreshLocks {
    fn get(&self, tenant: &str, id: &str) -> ConnectionLock {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .entry((tenant.to_owned(), id.to_owned()))
            .or_default()
            .clone()
    }

    /// Drops the entry when nobody but the caller (and the map) refers to it.
    fn release(&self, tenant: &str, id: &str, lock: ConnectionLock) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&(tenant.to_owned(), id.to_owned()));
        }
    }
}

/// Whether the stored token must be refreshed before use.
fn needs_refresh(record: &ConnectionRecord, secrets: &BTreeMap<String, Secret>) -> bool {
    if !secrets.contains_key("access_token") {
        return secrets.contains_key("refresh_token");
    }
    match record.fields.get("expires_at").and_then(Value::as_i64) {
        Some(expires_at_s) => expires_at_s.saturating_mul(1000) <= now_ms() + EXPIRY_SKEW_MS,
        None => false,
    }
}

impl AppState {
    /// The credential to attach to one invocation of `record`'s connector (whose auth is
    /// `auth`): decrypted, and for OAuth2 refreshed first if it has expired.
    pub(super) async fn invocation_credential(
        &self,
        tenant: &str,
        record: &ConnectionRecord,
        auth: &AuthSpec,
    ) -> Result<Credential, ApiError> {
        let secrets = self.decrypt_secrets(tenant, record)?;
        let token_url = match auth {
            AuthSpec::OAuth2 { token_url, .. } if record.auth_type == "oauth2" => token_url,
            _ => return Ok(credential_from(record, &secrets)),
        };
        if !needs_refresh(record, &secrets) {
            return Ok(credential_from(record, &secrets));
        }
        let lock = self.inner.refresh_locks.get(tenant, &record.id);
        let result = {
            let mut last_failure = lock.lock().await;
            match last_failure.as_ref() {
                Some(failure) if failure.at.elapsed() < FAILURE_REUSE => {
                    Err(ApiError::CredentialRefresh(failure.message.clone()))
                }
                _ => {
                    let result = self
                        .refresh_single_flight(tenant, &record.id, token_url)
                        .await;
                    *last_failure = match &result {
                        Err(ApiError::CredentialRefresh(message)) => Some(LastFailure {
                            at: Instant::now(),
                            message: message.clone(),
                        }),
                        _ => None,
                    };
                    result
                }
            }
        };
        self.inner.refresh_locks.release(tenant, &record.id, lock);
        result
    }

    /// Holding this process's lock for the connection: returns a fresh credential, refreshing
    /// it under the row's lease unless another task or process already did.
    async fn refresh_single_flight(
        &self,
        tenant: &str,
        id: &str,
        token_url: &str,
    ) -> Result<Credential, ApiError> {
        let store = self.store();
        let owner = &self.inner.instance_id;
        let deadline = Instant::now() + Duration::from_millis(LEASE_MS as u64) + POLL * 4;
        loop {
            // Double-checked: whoever held the lock (here or elsewhere) may have refreshed.
            let (record, secrets) = self.read_connection(tenant, id).await?;
            if !needs_refresh(&record, &secrets) {
                return Ok(credential_from(&record, &secrets));
            }
            let now = now_ms();
            if store
                .try_refresh_lease(tenant, id, owner, now, now + LEASE_MS)
                .await?
            {
                // Read again under the lease: the previous holder may have written and
                // released between the read above and the lease.
                let (record, secrets) = self.read_connection(tenant, id).await?;
                if !needs_refresh(&record, &secrets) {
                    store.release_refresh_lease(tenant, id, owner).await?;
                    return Ok(credential_from(&record, &secrets));
                }
                let result = self
                    .refresh_under_lease(tenant, &record, secrets, token_url)
                    .await;
                if result.is_err() {
                    store.release_refresh_lease(tenant, id, owner).await?;
                }
                return result;
            }
            if Instant::now() >= deadline {
                return Err(ApiError::CredentialRefresh(
                    "timed out waiting for another process to refresh the connection's access token"
                        .into(),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Calls the token endpoint and stores the new tokens, sealed. The caller holds the lease.
    /// The connection's row as stored now, with its secrets decrypted.
    async fn read_connection(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<(ConnectionRecord, BTreeMap<String, Secret>), ApiError> {
        let record = self
            .store()
            .connection(tenant, id)
            .await
            .map_err(super::connections::not_found)?;
        let secrets = self.decrypt_secrets(tenant, &record)?;
        Ok((record, secrets))
    }

    async fn refresh_under_lease(
        &self,
        tenant: &str,
        record: &ConnectionRecord,
        mut secrets: BTreeMap<String, Secret>,
        token_url: &str,
    ) -> Result<Credential, ApiError> {
        let Some(refresh_token) = secrets.get("refresh_token").cloned() else {
            return Err(ApiError::CredentialRefresh(
                "the connection's access token has expired and it holds no refresh token".into(),
            ));
        };
        let client_id = record
            .fields
            .get("client_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let client_secret = secrets.get("client_secret").cloned().unwrap_or_default();
        let grant = self
            .runtime()
            .gate()
            .refresh_oauth2(
                token_url,
                RefreshRequest {
                    client_id: &client_id,
                    client_secret: &client_secret,
                    refresh_token: &refresh_token,
                },
            )
            .await
            .map_err(|err| {
                tracing::warn!(connection = %record.id, error = %err, "OAuth2 token refresh failed");
                ApiError::CredentialRefresh(format!(
                    "the connection's access token has expired and refreshing it failed: {err}"
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
                    let expires_at =
                        now_ms() / 1000 + i64::try_from(seconds).unwrap_or(i64::MAX / 2_000);
                    fields.insert("expires_at".into(), Value::from(expires_at));
                }
                None => {
                    fields.remove("expires_at");
                }
            }
        }
        let envelope = self.seal(tenant, &record.id, &secrets)?;
        let written = self
            .store()
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
