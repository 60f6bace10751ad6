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
//!   acquiring), or, if the refresh failed, get its error without calling the endpoint again.
//! - Across processes sharing the database, a lease on the connection row
//!   (`refresh_lease_until`, `refresh_lease_owner`), taken by compare-and-swap: only the holder
//!   calls the token endpoint; the others poll the row until its token is fresh or the lease
//!   has expired (then one of them takes it).
//!
//! A refresh runs in a task of its own: an invocation that stops waiting for it (its timeout,
//! a client that went away) does not cancel it between the endpoint's answer and the write,
//! which would lose a rotated refresh token the endpoint has already replaced.
//!
//! The token endpoint is called through the gate ([`crate::outbound::Gate::refresh_oauth2`]),
//! so the manifest's token URL meets the same scheme and address rules as guest traffic, and
//! its host must be allowed by the tenant's outbound policy (read fresh for every refresh).
//! The manifest's scopes are sent. The new tokens are sealed into the connection's envelope
//! like every other secret field.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Value;

use super::AppState;
use super::connections::credential_from;
use super::error::ApiError;
use crate::outbound::{
    AuthSpec, Credential, REFRESH_TIMEOUT, RefreshAccessToken, RefreshRequest, TokenRefresher,
};
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
) -> bool {
    let Some(current) = secrets.get("access_token") else {
        return secrets.contains_key("refresh_token");
    };
    if rejected.is_some_and(|rejected| rejected.expose() == current.expose()) {
        return true;
    }
    match record.fields.get("expires_at").and_then(Value::as_i64) {
        Some(expires_at_s) => expires_at_s.saturating_mul(1000) <= now_ms() + EXPIRY_SKEW_MS,
        None => false,
    }
}

impl AppState {
    /// The credential to attach to one invocation of `record`'s connector (whose auth is
    /// `auth`): decrypted, and for OAuth2 refreshed first if it has expired, and carrying a
    /// refresher for the gate to use after a 401.
    pub(super) async fn invocation_credential(
        &self,
        tenant: &str,
        record: &ConnectionRecord,
        auth: &AuthSpec,
    ) -> Result<Credential, ApiError> {
        let secrets = self.decrypt_secrets(tenant, record)?;
        let endpoint = match auth {
            AuthSpec::OAuth2 {
                token_url, scopes, ..
            } if record.auth_type == "oauth2" => TokenEndpoint {
                url: token_url.clone(),
                scopes: scopes.clone(),
            },
            _ => return Ok(credential_from(record, &secrets)),
        };
        let credential = if needs_refresh(record, &secrets, None) {
            self.refresh_detached(tenant, &record.id, &endpoint, None)
                .await?
        } else {
            credential_from(record, &secrets)
        };
        Ok(match credential {
            Credential::OAuth2 { access_token, .. } => Credential::OAuth2 {
                access_token,
                refresher: Some(TokenRefresher::new(ConnectionRefresher {
                    state: self.clone(),
                    tenant: tenant.to_owned(),
                    connection: record.id.clone(),
                    endpoint,
                })),
            },
            other => other,
        })
    }

    /// [`AppState::refresh_connection`] in a task of its own, so that the caller giving up
    /// does not cut a refresh short.
    async fn refresh_detached(
        &self,
        tenant: &str,
        id: &str,
        endpoint: &TokenEndpoint,
        rejected: Option<Secret>,
    ) -> Result<Credential, ApiError> {
        let state = self.clone();
        let (tenant, id, endpoint) = (tenant.to_owned(), id.to_owned(), endpoint.clone());
        tokio::spawn(async move {
            state
                .refresh_connection(&tenant, &id, &endpoint, rejected.as_ref())
                .await
        })
        .await
        .unwrap_or_else(|err| {
            tracing::error!(error = %err, "an OAuth2 refresh task failed");
            Err(ApiError::Internal)
        })
    }

    /// A fresh credential for the connection, refreshed unless the stored token is fresh (and
    /// not `rejected`): one refresh per connection at a time in this process, and a failure
    /// shared with the tasks queued behind it.
    async fn refresh_connection(
        &self,
        tenant: &str,
        id: &str,
        endpoint: &TokenEndpoint,
        rejected: Option<&Secret>,
    ) -> Result<Credential, ApiError> {
        let lock = self.inner.refresh_locks.get(tenant, id);
        let result = {
            let mut last_failure = lock.lock().await;
            match last_failure.as_ref() {
                Some(failure) if failure.at.elapsed() < FAILURE_REUSE => {
                    Err(ApiError::CredentialRefresh(failure.message.clone()))
                }
                _ => {
                    let result = self
                        .refresh_single_flight(tenant, id, endpoint, rejected)
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
        self.inner.refresh_locks.release(tenant, id, lock);
        if result.is_ok() {
            // The row holds a newer token than any cached copy: the next invocation reads it
            // instead of meeting the old token's 401 again.
            self.inner.hot.forget_connection(tenant, id);
        }
        result
    }

    /// Holding this process's lock for the connection: returns a fresh credential, refreshing
    /// it under the row's lease unless another task or process already did.
    async fn refresh_single_flight(
        &self,
        tenant: &str,
        id: &str,
        endpoint: &TokenEndpoint,
        rejected: Option<&Secret>,
    ) -> Result<Credential, ApiError> {
        let store = self.store();
        let owner = &self.inner.instance_id;
        let deadline = Instant::now() + Duration::from_millis(LEASE_MS as u64) + POLL * 4;
        loop {
            // Double-checked: whoever held the lock (here or elsewhere) may have refreshed.
            let (record, secrets) = self.read_connection(tenant, id).await?;
            if !needs_refresh(&record, &secrets, rejected) {
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
                if !needs_refresh(&record, &secrets, rejected) {
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
                return Err(ApiError::CredentialRefresh(
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
    ) -> Result<(ConnectionRecord, BTreeMap<String, Secret>), ApiError> {
        let record = self
            .store()
            .connection(tenant, id)
            .await
            .map_err(ApiError::or_not_found("connection"))?;
        let secrets = self.decrypt_secrets(tenant, &record)?;
        Ok((record, secrets))
    }

    /// Calls the token endpoint and stores the new tokens, sealed. The caller holds the lease.
    async fn refresh_under_lease(
        &self,
        tenant: &str,
        record: &ConnectionRecord,
        mut secrets: BTreeMap<String, Secret>,
        endpoint: &TokenEndpoint,
    ) -> Result<Credential, ApiError> {
        let Some(refresh_token) = secrets.get("refresh_token").cloned() else {
            return Err(ApiError::CredentialRefresh(
                "the connection's access token has expired or was rejected, \
                 and the connection holds no refresh token"
                    .into(),
            ));
        };
        let tenant_hosts = self
            .store()
            .tenant_quota(tenant)
            .await?
            .runtime
            .host_patterns()
            .map_err(|err| {
                tracing::error!(error = %err, "a stored tenant policy does not parse");
                ApiError::Internal
            })?;
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
                ApiError::CredentialRefresh(format!(
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

/// What the gate calls after an upstream answered 401 to one connection's access token.
struct ConnectionRefresher {
    state: AppState,
    tenant: String,
    connection: String,
    endpoint: TokenEndpoint,
}

impl RefreshAccessToken for ConnectionRefresher {
    fn refresh<'a>(&'a self, rejected: &'a Secret) -> BoxFuture<'a, Result<Secret, String>> {
        Box::pin(async move {
            let refreshed = self
                .state
                .refresh_detached(
                    &self.tenant,
                    &self.connection,
                    &self.endpoint,
                    Some(rejected.clone()),
                )
                .await;
            match refreshed {
                Ok(Credential::OAuth2 { access_token, .. }) => Ok(access_token),
                Ok(_) => Err("the connection holds no access token".to_owned()),
                Err(err) => Err(err.to_string()),
            }
        })
    }
}
