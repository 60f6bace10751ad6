//! The audit log: one record per change, appended to a per-tenant hash chain.
//!
//! Record `seq` of a tenant stores `prev_hash` (the hash of record `seq - 1`, empty for the
//! first) and `hash = sha256(prev_hash, the record's fields)`. Appends of one tenant are
//! serialized (PostgreSQL: a transaction-scoped advisory lock on the tenant; SQLite: its one
//! writer), so the chain has no forks. [`verify`] walks a chain and names the first record
//! whose hash, link or number does not follow; the database's triggers refuse UPDATE,
//! DELETE and (PostgreSQL) TRUNCATE besides.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::runs::Tx;
use crate::{DbKind, Store, StoreError, now_ms};

/// A change to record. `tenant_id` is empty for changes outside any tenant (key rotation).
#[derive(Debug, Clone, Default)]
pub struct AuditDraft {
    pub tenant_id: String,
    /// The token subject (a person, with `airlock token issue --subject`), or `cli:<user>`.
    pub actor: String,
    /// `METHOD /route/template` for API calls; `cancel`, `replay`, `keys.rotate`, ...
    pub action: String,
    /// What it changed: the id of the resource (the run for cancels and replays).
    pub target: String,
    pub request_id: String,
    pub detail: Value,
}

/// One stored record, with its place in the chain.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: String,
    pub tenant_id: String,
    pub seq: Option<i64>,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The run a cancel or replay was about (empty for other changes).
    pub run_id: String,
    pub request_id: String,
    pub detail: String,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// Where a chain stops following.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub tenant_id: String,
    /// The first record that does not follow (its id), and its `seq`.
    pub id: String,
    pub seq: i64,
    pub reason: &'static str,
}

fn hash(entry: &AuditEntry, prev_hash: &str) -> String {
    // A JSON array: every field delimited and escaped, so no two records hash alike by
    // moving text from one field into the next.
    let fields = serde_json::json!([
        entry.tenant_id,
        entry.id,
        entry.seq,
        entry.at,
        entry.actor,
        entry.action,
        entry.target,
        entry.run_id,
        entry.request_id,
        entry.detail,
        prev_hash,
    ]);
    hex::encode(Sha256::digest(fields.to_string().as_bytes()))
}

/// Appends `draft` in `tx`, after the tenant's last chained record.
pub(crate) async fn append(
    tx: &mut Tx<'_>,
    kind: DbKind,
    draft: &AuditDraft,
    run_id: &str,
) -> Result<AuditEntry, StoreError> {
    if kind == DbKind::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7411))")
            .bind(format!("audit:{}", draft.tenant_id))
            .execute(&mut **tx)
            .await?;
    }
    let last = sqlx::query(
        "SELECT seq, hash FROM audit_log WHERE tenant_id = $1 AND seq IS NOT NULL \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(&draft.tenant_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (seq, prev_hash) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")?.saturating_add(1),
            row.try_get::<Option<String>, _>("hash")?
                .unwrap_or_default(),
        ),
        None => (1, String::new()),
    };
    let mut entry = AuditEntry {
        id: format!("aud_{}", uuid::Uuid::new_v4().simple()),
        tenant_id: draft.tenant_id.clone(),
        seq: Some(seq),
        at: now_ms(),
        actor: draft.actor.clone(),
        action: draft.action.clone(),
        target: draft.target.clone(),
        run_id: run_id.to_owned(),
        request_id: draft.request_id.clone(),
        detail: draft.detail.to_string(),
        prev_hash: Some(prev_hash.clone()),
        hash: None,
    };
    let own = hash(&entry, &prev_hash);
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, id, at, actor, action, run_id, detail, seq, target, \
           request_id, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&entry.tenant_id)
    .bind(&entry.id)
    .bind(entry.at)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.run_id)
    .bind(&entry.detail)
    .bind(seq)
    .bind(&entry.target)
    .bind(&entry.request_id)
    .bind(&prev_hash)
    .bind(&own)
    .execute(&mut **tx)
    .await?;
    entry.hash = Some(own);
    Ok(entry)
}

const COLUMNS: &str = "id, tenant_id, seq, at, actor, action, target, run_id, request_id, detail, \
    prev_hash, hash";

fn entry(row: &sqlx::any::AnyRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        run_id: row.try_get("run_id")?,
        request_id: row.try_get("request_id")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Checks one tenant's chain, records in `seq` order: numbers without gaps from 1, each
/// linking the previous hash, each hash recomputed. `Ok(records checked)`.
pub fn verify(chain: &[AuditEntry]) -> Result<usize, BrokenLink> {
    let mut prev = String::new();
    for (index, record) in chain.iter().enumerate() {
        let broken = |reason| BrokenLink {
            tenant_id: record.tenant_id.clone(),
            id: record.id.clone(),
            seq: record.seq.unwrap_or(0),
            reason,
        };
        let expected = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        if record.seq != Some(expected) {
            return Err(broken("a record is missing before this one"));
        }
        if record.prev_hash.as_deref() != Some(prev.as_str()) {
            return Err(broken("it does not link the previous record's hash"));
        }
        let own = hash(record, &prev);
        if record.hash.as_deref() != Some(own.as_str()) {
            return Err(broken("its content does not match its hash"));
        }
        prev = own;
    }
    Ok(chain.len())
}

impl Store {
    /// Appends one audit record in a transaction of its own.
    pub async fn append_audit(&self, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
        let mut tx = self.writer.begin().await?;
        let entry = append(&mut tx, self.kind, draft, "").await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Audit records, newest first: one tenant's, or (`None`, an operator's view) every
    /// tenant's. Keyset-paged by `before` (an `at` in ms).
    pub async fn audit_log(
        &self,
        tenant_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = match tenant_id {
            Some(tenant) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 \
                     ORDER BY at DESC, id DESC LIMIT $2"
                ))
                .bind(tenant)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM audit_log ORDER BY at DESC, id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(entry).collect()
    }

    /// The tenants that have chained audit records.
    pub async fn audit_tenants(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT tenant_id FROM audit_log WHERE seq IS NOT NULL ORDER BY tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("tenant_id")?))
            .collect()
    }

    /// One tenant's chain in `seq` order.
    pub async fn audit_chain(&self, tenant_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq IS NOT NULL ORDER BY seq"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let mut record = AuditEntry {
                    id: format!("aud_{seq}"),
                    tenant_id: "acme".into(),
                    seq: Some(seq),
                    at: 1_000 + seq,
                    actor: "alice".into(),
                    action: "POST /v1/workflows".into(),
                    target: format!("wf_{seq}"),
                    run_id: String::new(),
                    request_id: format!("req_{seq}"),
                    detail: "{}".into(),
                    prev_hash: Some(prev.clone()),
                    hash: None,
                };
                let own = hash(&record, &prev);
                record.hash = Some(own.clone());
                prev = own;
                record
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_found_where_it_is() {
        let good = chain(5);
        assert_eq!(verify(&good), Ok(5));

        let mut edited = good.clone();
        edited[2].actor = "mallory".into();
        assert_eq!(
            verify(&edited).map_err(|b| (b.seq, b.reason)),
            Err((3, "its content does not match its hash"))
        );

        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify(&removed).map_err(|b| b.seq), Err(3));

        // Rewriting a record and its own hash still breaks the next link.
        let mut rehashed = good.clone();
        rehashed[1].target = "wf_other".into();
        let prev = rehashed[0].hash.clone().unwrap_or_default();
        rehashed[1].hash = Some(hash(&rehashed[1], &prev));
        assert_eq!(
            verify(&rehashed).map_err(|b| (b.seq, b.reason)),
            Err((3, "it does not link the previous record's hash"))
        );

        // Moving text between fields changes the hash.
        let mut shifted = good;
        shifted[0].action = "POST /v1/workflows wf".into();
        shifted[0].target = "_1".into();
        assert_eq!(verify(&shifted).map_err(|b| b.seq), Err(1));
    }
}
