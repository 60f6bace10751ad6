//! A tenant's dead-letter webhook: where Airlock POSTs a `run.dead` event, signed with Standard
//! Webhooks, each time one of the tenant's runs goes dead.
//!
//! This module owns the setting (saving, reading, rotating, removing, a test send); the
//! journal writes the notices in the transaction that makes a run dead, and [`deliver`]
//! sends them, through the outbound gate under the tenant's host policy, with retries.
//!
//! The URL is checked when it is saved (scheme, host allowed by the tenant's policy, no
//! literal address in a blocked range) and every hop again when a notice is sent, as a
//! guest's requests are: a tenant cannot use the notices to reach what its connectors may
//! not.

pub mod deliver;

use std::collections::BTreeMap;

use airlock_model::TenantId;
use airlock_model::hosts::HostPattern;
use airlock_secrets::Secret;
use airlock_store::{DeadLetterHook, NoticeCounts, NoticeRecord, StoreError};
use airlock_triggers::webhook::{self, Scheme};

use crate::{Runs, RunsError};

pub use deliver::{NoticeOptions, Notices, TestDelivery};

/// Longest webhook URL.
pub const MAX_URL_BYTES: usize = 2048;
/// Default and longest overlap of a rotated secret: the previous one keeps signing beside
/// the new one this long, so receivers can switch without missing a notice.
pub const DEFAULT_OVERLAP_SECONDS: u64 = 24 * 60 * 60;
pub const MAX_OVERLAP_SECONDS: u64 = 7 * 24 * 60 * 60;
/// Most notices one listing shows.
pub const MAX_LISTED: i64 = 100;

/// What a tenant asks for (`PUT /v1/dead-letters/webhook`).
#[derive(Debug, Clone, Default)]
pub struct HookSpec {
    pub url: String,
    /// The signing secret, when the tenant makes it (Standard Webhooks: base64 of 24 to 64
    /// bytes, `whsec_` optional). Absent: kept, or made on the first save.
    pub secret: Option<Secret>,
    /// A new secret even though none is given.
    pub rotate_secret: bool,
    /// How long the previous secret keeps signing after a new one is set.
    pub overlap_seconds: Option<u64>,
}

/// The hook as the API shows it.
#[derive(Debug, Clone)]
pub struct HookView {
    pub record: DeadLetterHook,
    /// The signing secret: only when this call made or set it.
    pub secret: Option<Secret>,
    pub counts: NoticeCounts,
}

impl Runs {
    /// Saves the tenant's dead-letter webhook; true when it is new. A new hook, a given
    /// `secret` or `rotate_secret` sets a secret, shown this once; the previous one keeps
    /// signing for the overlap. Audited.
    pub async fn put_dead_letter_hook(
        &self,
        tenant: &TenantId,
        spec: HookSpec,
    ) -> Result<(HookView, bool), RunsError> {
        let t = tenant.as_str();
        let hosts = self.pipeline.tenant_hosts(t).await?;
        check_url(self, &spec.url, &hosts)?;
        let overlap = spec.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
        if overlap > MAX_OVERLAP_SECONDS {
            return Err(RunsError::Invalid {
                field: "overlap_seconds".into(),
                detail: format!("at most {MAX_OVERLAP_SECONDS} (7 days)"),
            });
        }
        if let Some(secret) = &spec.secret {
            webhook::check_secret(Scheme::StandardWebhooks, secret.expose()).map_err(|e| {
                RunsError::Invalid {
                    field: "secret".into(),
                    detail: e.to_string(),
                }
            })?;
        }
        let now = self.pipeline.clock().now_ms();
        let store = self.pipeline.store();
        let existing = match store.dead_letter_hook(t).await {
            Ok(hook) => Some(hook),
            Err(StoreError::NotFound) => None,
            Err(other) => return Err(other.into()),
        };
        let fresh = || {
            spec.secret
                .clone()
                .unwrap_or_else(|| Secret::new(webhook::generate_secret()))
        };
        let Some(old) = existing else {
            let id = format!("dlh_{}", uuid::Uuid::new_v4().simple());
            let secret = fresh();
            let record = DeadLetterHook {
                tenant_id: t.to_owned(),
                secret: self.seal_secrets(t, &id, &secret, None)?,
                id,
                url: spec.url,
                previous_until: None,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            let saved = match store.insert_dead_letter_hook(&record).await {
                Err(StoreError::Conflict) => {
                    return Err(RunsError::Conflict(
                        "the dead-letter webhook was created by another request meanwhile; \
                         read it and try again"
                            .into(),
                    ));
                }
                other => other?,
            };
            let view = self.hook_view(saved, Some(secret)).await?;
            return Ok((view, true));
        };
        let (sealed, previous_until, shown) = if spec.secret.is_some() || spec.rotate_secret {
            let secret = fresh();
            // A secret that no longer opens (its key retired) is replaced, not kept signing.
            let opened = self.open_hook(&old).unwrap_or_else(|error| {
                tracing::warn!(tenant = t, %error, "the dead-letter webhook's previous secret does not open; it stops signing");
                BTreeMap::new()
            });
            let previous = opened.get("current").filter(|_| overlap > 0);
            let until = previous.map(|_| {
                now.saturating_add(
                    i64::try_from(overlap)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1000),
                )
            });
            (
                self.seal_secrets(t, &old.id, &secret, previous)?,
                until,
                Some(secret),
            )
        } else {
            (old.secret.clone(), old.previous_until, None)
        };
        let record = DeadLetterHook {
            url: spec.url,
            secret: sealed,
            previous_until,
            updated_at: now,
            ..old.clone()
        };
        let saved = match store.update_dead_letter_hook(&record).await {
            Err(StoreError::Conflict) => {
                return Err(RunsError::Conflict(
                    "the dead-letter webhook was changed by another request meanwhile; read it \
                     and try again"
                        .into(),
                ));
            }
            Err(StoreError::NotFound) => {
                return Err(RunsError::NotFound {
                    what: "dead-letter webhook",
                });
            }
            other => other?,
        };
        Ok((self.hook_view(saved, shown).await?, false))
    }

    /// The tenant's dead-letter webhook (never its secret) and how its notices stand.
    pub async fn dead_letter_hook(&self, tenant: &TenantId) -> Result<HookView, RunsError> {
        let record = self.stored_hook(tenant.as_str()).await?;
        self.hook_view(record, None).await
    }

    /// Removes the tenant's dead-letter webhook; its pending notices fail. Audited.
    pub async fn delete_dead_letter_hook(&self, tenant: &TenantId) -> Result<(), RunsError> {
        match self
            .pipeline
            .store()
            .delete_dead_letter_hook(tenant.as_str())
            .await
        {
            Err(StoreError::NotFound) => Err(RunsError::NotFound {
                what: "dead-letter webhook",
            }),
            other => Ok(other?),
        }
    }

    /// The tenant's notices, newest first: of one `state` or all, at most [`MAX_LISTED`].
    pub async fn dead_letter_notices(
        &self,
        tenant: &TenantId,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<NoticeRecord>, RunsError> {
        if let Some(state) = state
            && !["pending", "delivered", "failed", "superseded"].contains(&state)
        {
            return Err(RunsError::Invalid {
                field: "state".into(),
                detail: "one of `pending`, `delivered`, `failed`, `superseded`".into(),
            });
        }
        if !(1..=MAX_LISTED).contains(&limit) {
            return Err(RunsError::Invalid {
                field: "limit".into(),
                detail: format!("1 to {MAX_LISTED}"),
            });
        }
        Ok(self
            .pipeline
            .store()
            .notices(tenant.as_str(), state, limit)
            .await?)
    }

    async fn stored_hook(&self, tenant: &str) -> Result<DeadLetterHook, RunsError> {
        match self.pipeline.store().dead_letter_hook(tenant).await {
            Err(StoreError::NotFound) => Err(RunsError::NotFound {
                what: "dead-letter webhook",
            }),
            other => Ok(other?),
        }
    }

    async fn hook_view(
        &self,
        record: DeadLetterHook,
        secret: Option<Secret>,
    ) -> Result<HookView, RunsError> {
        let counts = self
            .pipeline
            .store()
            .notice_counts(&record.tenant_id)
            .await?;
        Ok(HookView {
            record,
            secret,
            counts,
        })
    }

    pub(crate) fn open_hook(
        &self,
        hook: &DeadLetterHook,
    ) -> Result<BTreeMap<String, Secret>, RunsError> {
        self.open_secrets(&hook.tenant_id, &hook.id, &hook.secret)
    }
}

fn check_url(runs: &Runs, url: &str, hosts: &[HostPattern]) -> Result<(), RunsError> {
    let invalid = |detail: String| RunsError::Invalid {
        field: "url".into(),
        detail,
    };
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(format!("longer than {MAX_URL_BYTES} bytes")));
    }
    runs.pipeline
        .runtime()
        .gate()
        .check_host_url(url, hosts)
        .map(drop)
        .map_err(|reason| {
            invalid(format!(
                "not a URL Airlock may call for this tenant: {reason}"
            ))
        })
}
