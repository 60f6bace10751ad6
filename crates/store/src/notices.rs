//! Dead-letter notices: a tenant's dead-letter webhook (`dead_letter_hooks`) and the outbox of
//! the notices it is owed (`dead_letter_notices`).
//!
//! A notice is written by the journal in the transaction that makes a run dead (so a crash
//! keeps both or neither), only while the tenant has a hook. Delivery claims due notices a
//! few per tenant at a time (one tenant's thousands of deaths, or its endpoint that hangs,
//! never holds the others' back), counting the attempt and moving `next_at` past the claim's
//! lease in the same statement: a process killed mid-delivery leaves the notice due again
//! once the lease is over, and a notice is never lost, only at worst sent twice (receivers
//! drop the repeat by its `webhook-id`). The write of an attempt's outcome is fenced on the
//! attempt it claimed, so a claim that outlived its lease changes nothing.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, findable};

/// A tenant's dead-letter webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterHook {
    pub tenant_id: String,
    pub id: String,
    pub url: String,
    /// One sealed envelope: `current`, and `previous` while `previous_until` is ahead.
    pub secret: String,
    pub previous_until: Option<i64>,
    /// One more at each change: what a change made from a read compares.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One notice of a run's death, as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeRecord {
    pub tenant_id: String,
    /// The `webhook-id`: `dead_<run>_<lease epoch>`.
    pub id: String,
    pub run_id: String,
    /// The event's `data` (JSON text).
    pub payload: String,
    /// `pending`, `delivered`, `failed` or `superseded` (the run died again first).
    pub state: String,
    /// Delivery attempts made (claimed) so far.
    pub attempts: i64,
    pub next_at: i64,
    /// The HTTP status of the last attempt, when it got one.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How a tenant's notices stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoticeCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub superseded: u64,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// The receiver answered 2xx.
    Delivered { status: i64 },
    /// Not delivered; due again at `at`.
    Retry {
        at: i64,
        status: Option<i64>,
        error: String,
    },
    /// Not delivered, and no attempt is left (or no hook to send it to).
    Failed { status: Option<i64>, error: String },
}

const HOOK_COLUMNS: &str =
    "tenant_id, id, url, secret, previous_until, version, created_at, updated_at";
const NOTICE_COLUMNS: &str = "tenant_id, id, run_id, payload, state, attempts, next_at, \
     last_status, last_error, created_at, updated_at";

fn hook(row: &AnyRow) -> Result<DeadLetterHook, StoreError> {
    Ok(DeadLetterHook {
        tenant_id: row.try_get("tenant_id")?,
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        secret: row.try_get("secret")?,
        previous_until: row.try_get("previous_until")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn notice(row: &AnyRow) -> Result<NoticeRecord, StoreError> {
    Ok(NoticeRecord {
        tenant_id: row.try_get("tenant_id")?,
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        payload: row.try_get("payload")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_at: row.try_get("next_at")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// The tenant's dead-letter webhook; [`StoreError::NotFound`] when it has none.
    pub async fn dead_letter_hook(&self, tenant_id: &str) -> Result<DeadLetterHook, StoreError> {
        findable(&[tenant_id])?;
        let row = sqlx::query(&format!(
            "SELECT {HOOK_COLUMNS} FROM dead_letter_hooks WHERE tenant_id = $1"
        ))
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        hook(&row)
    }

    /// Gives the tenant its dead-letter webhook; [`StoreError::Conflict`] when it has one
    /// already (two first saves at once: one wins, the other's secret is never shown).
    pub async fn insert_dead_letter_hook(
        &self,
        record: &DeadLetterHook,
    ) -> Result<DeadLetterHook, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO dead_letter_hooks ({HOOK_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6) \
             RETURNING {HOOK_COLUMNS}"
        ))
        .bind(&record.tenant_id)
        .bind(&record.id)
        .bind(&record.url)
        .bind(&record.secret)
        .bind(record.previous_until)
        .bind(self.clock.now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let saved = hook(&row)?;
        self.commit_change(tx, &record.tenant_id, &record.id)
            .await?;
        Ok(saved)
    }

    /// Changes the tenant's webhook, compare-and-swap on the version read (`record.version`):
    /// of two changes made at once from the same read, one wins and the other is
    /// [`StoreError::Conflict`]; [`StoreError::NotFound`] when the hook is gone.
    pub async fn update_dead_letter_hook(
        &self,
        record: &DeadLetterHook,
    ) -> Result<DeadLetterHook, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "UPDATE dead_letter_hooks SET url = $3, secret = $4, previous_until = $5, \
               updated_at = $6, version = version + 1 \
             WHERE tenant_id = $1 AND id = $2 AND version = $7 RETURNING {HOOK_COLUMNS}"
        ))
        .bind(&record.tenant_id)
        .bind(&record.id)
        .bind(&record.url)
        .bind(&record.secret)
        .bind(record.previous_until)
        .bind(self.clock.now_ms())
        .bind(record.version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            self.dead_letter_hook(&record.tenant_id).await?;
            return Err(StoreError::Conflict);
        };
        let saved = hook(&row)?;
        self.commit_change(tx, &record.tenant_id, &record.id)
            .await?;
        Ok(saved)
    }

    /// Removes the tenant's webhook; its pending notices fail in the same transaction (they
    /// have nowhere to go, and a hook set later is not told of deaths from before it).
    /// [`StoreError::NotFound`] when it has none.
    pub async fn delete_dead_letter_hook(&self, tenant_id: &str) -> Result<(), StoreError> {
        findable(&[tenant_id])?;
        let mut tx = self.begin_write().await?;
        let gone = sqlx::query("DELETE FROM dead_letter_hooks WHERE tenant_id = $1 RETURNING id")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let id: String = gone.try_get("id")?;
        sqlx::query(
            "UPDATE dead_letter_notices SET state = 'failed', \
               last_error = 'the dead-letter webhook was removed', updated_at = $2 \
             WHERE tenant_id = $1 AND state = 'pending'",
        )
        .bind(tenant_id)
        .bind(self.clock.now_ms())
        .execute(&mut *tx)
        .await?;
        self.commit_change(tx, tenant_id, &id).await
    }

    /// Claims up to `limit` due notices, at most `per_tenant` of any one tenant and none of
    /// the tenants in `skip` (those whose notices this process is still sending), oldest due
    /// first: each is counted as one more attempt and not due again until `now + lease_ms`.
    pub async fn claim_notices(
        &self,
        now: i64,
        lease_ms: i64,
        per_tenant: i64,
        limit: i64,
        skip: &[&str],
    ) -> Result<Vec<NoticeRecord>, StoreError> {
        // Placeholders only, one per skipped tenant (at most the sender's slots).
        let skipped = if skip.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = (5..5 + skip.len()).map(|i| format!("${i}")).collect();
            format!("AND tenant_id NOT IN ({})", list.join(", "))
        };
        // The outer `state` and `next_at` checks are evaluated again on the locked row
        // (PostgreSQL), so of two processes claiming at once only one gets a notice.
        let sql = format!(
            "UPDATE dead_letter_notices SET attempts = attempts + 1, next_at = $2, \
               updated_at = $1 \
             WHERE state = 'pending' AND next_at <= $1 AND (tenant_id, id) IN ( \
               SELECT tenant_id, id FROM ( \
                 SELECT tenant_id, id, next_at, ROW_NUMBER() OVER ( \
                   PARTITION BY tenant_id ORDER BY next_at, id) AS turn \
                 FROM dead_letter_notices \
                 WHERE state = 'pending' AND next_at <= $1 {skipped}) due \
               WHERE turn <= $3 ORDER BY next_at, id LIMIT $4) \
             RETURNING {NOTICE_COLUMNS}"
        );
        let mut query = sqlx::query(&sql)
            .bind(now)
            .bind(now.saturating_add(lease_ms))
            .bind(per_tenant)
            .bind(limit);
        for tenant in skip {
            query = query.bind(*tenant);
        }
        let rows = query.fetch_all(&self.writer).await?;
        rows.iter().map(notice).collect()
    }

    /// Records what the attempt `attempts` of a notice came to. False (nothing written) when
    /// that attempt's claim is no longer the notice's: its lease ran out and another process
    /// claimed it, or it is no longer pending.
    pub async fn finish_notice(
        &self,
        tenant_id: &str,
        id: &str,
        attempts: i64,
        outcome: &NoticeOutcome,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let (state, next_at, status, error) = match outcome {
            NoticeOutcome::Delivered { status } => ("delivered", now, Some(*status), None),
            NoticeOutcome::Retry { at, status, error } => {
                ("pending", *at, *status, Some(error.as_str()))
            }
            NoticeOutcome::Failed { status, error } => {
                ("failed", now, *status, Some(error.as_str()))
            }
        };
        let done = sqlx::query(
            "UPDATE dead_letter_notices SET state = $4, next_at = $5, last_status = $6, \
               last_error = $7, updated_at = $8 \
             WHERE tenant_id = $1 AND id = $2 AND attempts = $3 AND state = 'pending'",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(attempts)
        .bind(state)
        .bind(next_at)
        .bind(status)
        .bind(error)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The tenant's notices, newest first, of one `state` or all; at most `limit`.
    pub async fn notices(
        &self,
        tenant_id: &str,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<NoticeRecord>, StoreError> {
        findable(&[tenant_id])?;
        let rows = sqlx::query(&format!(
            "SELECT {NOTICE_COLUMNS} FROM dead_letter_notices \
             WHERE tenant_id = $1 AND ($2 IS NULL OR state = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notice).collect()
    }

    /// How many of the tenant's notices are pending, delivered and failed.
    pub async fn notice_counts(&self, tenant_id: &str) -> Result<NoticeCounts, StoreError> {
        findable(&[tenant_id])?;
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM dead_letter_notices WHERE tenant_id = $1 \
             GROUP BY state",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = NoticeCounts::default();
        for row in &rows {
            let state: String = row.try_get("state")?;
            let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
            match state.as_str() {
                "pending" => counts.pending = n,
                "delivered" => counts.delivered = n,
                "failed" => counts.failed = n,
                "superseded" => counts.superseded = n,
                other => {
                    return Err(StoreError::Corrupt(format!("notice state {other:?}")));
                }
            }
        }
        Ok(counts)
    }
}
