//! The audit log: one record per change, appended to a per-tenant hash chain.
//!
//! Record `seq` of a tenant stores `prev_hash` (the hash of record `seq - 1`, empty for the
//! first) and `hash = sha256(prev_hash, the record's fields)`. Appends of one tenant are
//! serialized (PostgreSQL: a transaction-scoped advisory lock on the tenant; SQLite: its one
//! writer), so the chain has no forks. [`verify`] walks a chain and names the first record
//! whose hash, link or number does not follow; the database's triggers refuse UPDATE,
//! DELETE and (PostgreSQL) TRUNCATE besides.
//!
//! Retention cuts a chain's head, never its middle: [`Store::prune_audit`] first appends an
//! [`PRUNED_ACTION`] record naming the last record it removes and that record's hash, and
//! the database lets a DELETE pass only for records such a later record covers. [`verify`]
//! then starts where the chain was cut, checking the cut against the prune record.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::runs::Tx;
use crate::{DbKind, Store, StoreError};

tokio::task_local! {
    /// The audit record of the API request this task serves, until the change commits it.
    static PENDING: Arc<Pending>;
}

struct Pending {
    draft: AuditDraft,
    written: AtomicBool,
}

/// Runs `change` (an API handler) with `draft` pending: the store write that commits the
/// request's change ([`Store::commit_change`]) appends it in its own transaction, so the
/// change and its record commit together (a crash cannot keep one without the other).
/// `draft.tenant_id` and `target` are filled in by that write, which knows them. Returns
/// `change`'s output and whether the record was written; when it was not (a change made
/// through a path that commits elsewhere), the caller writes it after the fact.
pub async fn with_pending_audit<F: Future>(draft: AuditDraft, change: F) -> (F::Output, bool) {
    let pending = Arc::new(Pending {
        draft,
        written: AtomicBool::new(false),
    });
    let output = PENDING.scope(pending.clone(), change).await;
    (output, pending.written.load(Ordering::Acquire))
}

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

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The action of the record retention appends to a chain before it cuts the chain's head.
pub const PRUNED_ACTION: &str = "audit.pruned";

/// What a prune record's detail says: records up to `through_seq` (whose hash was
/// `through_hash`) and unchained records older than `before_ms` were removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PruneMark {
    pub through_seq: i64,
    pub through_hash: String,
    pub before_ms: i64,
}

impl PruneMark {
    fn of(record: &AuditEntry) -> Option<PruneMark> {
        (record.action == PRUNED_ACTION)
            .then(|| serde_json::from_str(&record.detail).ok())
            .flatten()
    }
}

/// What pruning one chain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditPruned {
    pub removed: u64,
    pub batches: u64,
    pub longest_batch: Duration,
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
/// `(kind, at)`: the database, and the record's time ([`Store::audit_at`]).
pub(crate) async fn append(
    tx: &mut Tx<'_>,
    (kind, at): (DbKind, i64),
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
        at,
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

/// Checks one tenant's chain, records in `seq` order: numbers without gaps, each linking
/// the previous hash, each hash recomputed. The chain starts at 1, or where retention cut
/// it: then a prune record in the chain must cover every record before the first, and the
/// record it names as the last removed (if still there, a cut half done) must have the hash
/// it names. `Ok(records checked)`.
pub fn verify(chain: &[AuditEntry]) -> Result<usize, BrokenLink> {
    let Some(first) = chain.first() else {
        return Ok(0);
    };
    let broken = |record: &AuditEntry, reason| BrokenLink {
        tenant_id: record.tenant_id.clone(),
        id: record.id.clone(),
        seq: record.seq.unwrap_or(0),
        reason,
    };
    let mut cut: Option<PruneMark> = None;
    for record in chain {
        let Some(mark) = PruneMark::of(record) else {
            continue;
        };
        // What the database lets a prune record remove: records before it, older than a
        // horizon at least a day before it. One that claims more was not retention's.
        if mark.before_ms > record.at.saturating_sub(DAY_MS)
            || record.seq.is_none_or(|seq| mark.through_seq >= seq)
        {
            return Err(broken(
                record,
                "its prune record claims records from its last day or after it",
            ));
        }
        if cut
            .as_ref()
            .is_none_or(|c| mark.through_seq > c.through_seq)
        {
            cut = Some(mark);
        }
    }
    let start = first.seq.unwrap_or(0);
    let mut prev = String::new();
    if start != 1 {
        match &cut {
            Some(mark) if start > 1 && mark.through_seq >= start - 1 => {
                if mark.through_seq == start - 1
                    && first.prev_hash.as_deref() != Some(mark.through_hash.as_str())
                {
                    return Err(broken(
                        first,
                        "it does not link the hash its chain's prune record names",
                    ));
                }
                prev = first.prev_hash.clone().unwrap_or_default();
            }
            _ => {
                return Err(broken(
                    first,
                    "records before this one are missing and no prune record covers them",
                ));
            }
        }
    }
    for (index, record) in chain.iter().enumerate() {
        let expected = i64::try_from(index)
            .unwrap_or(i64::MAX)
            .saturating_add(start);
        if record.seq != Some(expected) {
            return Err(broken(record, "a record is missing before this one"));
        }
        if record.prev_hash.as_deref() != Some(prev.as_str()) {
            return Err(broken(
                record,
                "it does not link the previous record's hash",
            ));
        }
        let own = hash(record, &prev);
        if record.hash.as_deref() != Some(own.as_str()) {
            return Err(broken(record, "its content does not match its hash"));
        }
        if let Some(mark) = &cut
            && record.seq == Some(mark.through_seq)
            && own != mark.through_hash
        {
            return Err(broken(
                record,
                "its hash is not the one its chain's prune record names",
            ));
        }
        prev = own;
    }
    Ok(chain.len())
}

impl Store {
    /// The database kind, and the time an audit record appended now gets: the store's
    /// clock (the system's; a test's manual one), the clock retention's horizons use.
    pub(crate) fn audit_at(&self) -> (DbKind, i64) {
        (self.kind, self.clock.now_ms())
    }

    /// Commits `tx`, the change of `target` in `tenant_id` (`""`: the platform's), with the
    /// audit record of the API request this task serves when one is pending and not yet
    /// written ([`with_pending_audit`]); a plain commit otherwise (the CLI, a worker).
    pub(crate) async fn commit_change(
        &self,
        mut tx: Tx<'_>,
        tenant_id: &str,
        target: &str,
    ) -> Result<(), StoreError> {
        let pending = PENDING
            .try_with(Arc::clone)
            .ok()
            .filter(|p| !p.written.load(Ordering::Acquire));
        let Some(pending) = pending else {
            tx.commit().await?;
            return Ok(());
        };
        let draft = AuditDraft {
            tenant_id: tenant_id.to_owned(),
            target: target.to_owned(),
            ..pending.draft.clone()
        };
        append(&mut tx, self.audit_at(), &draft, "").await?;
        tx.commit().await?;
        pending.written.store(true, Ordering::Release);
        Ok(())
    }

    /// Appends one audit record in a transaction of its own.
    pub async fn append_audit(&self, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
        let mut tx = self.writer.begin().await?;
        let entry = append(&mut tx, self.audit_at(), draft, "").await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Cuts the head of `tenant_id`'s chain: the records older than `before` (ms), up to the
    /// last of them, and unchained records (from before the chain) older than `before`. Only
    /// once the oldest record is older than `before - slack`, so a chain is cut about once
    /// per `slack`, each cut one prune record. The prune record is appended first, in its
    /// own transaction; the records go after, `batch` a transaction, and a pass cut short
    /// (a crash) is finished by the next.
    pub async fn prune_audit(
        &self,
        tenant_id: &str,
        before: i64,
        slack: i64,
        batch: i64,
    ) -> Result<AuditPruned, StoreError> {
        let marks =
            sqlx::query("SELECT detail FROM audit_log WHERE tenant_id = $1 AND action = $2")
                .bind(tenant_id)
                .bind(PRUNED_ACTION)
                .fetch_all(&self.pool)
                .await?;
        let mut covered = marks
            .iter()
            .filter_map(|row| row.try_get::<String, _>("detail").ok())
            .filter_map(|detail| serde_json::from_str::<PruneMark>(&detail).ok())
            .max_by_key(|mark| mark.through_seq);
        // The oldest record no cut covers yet.
        let oldest: Option<i64> = sqlx::query(
            "SELECT MIN(at) AS oldest FROM audit_log WHERE tenant_id = $1 \
             AND ((seq IS NOT NULL AND seq > $2) OR (seq IS NULL AND at >= $3))",
        )
        .bind(tenant_id)
        .bind(covered.as_ref().map_or(0, |mark| mark.through_seq))
        .bind(covered.as_ref().map_or(i64::MIN, |mark| mark.before_ms))
        .fetch_one(&self.pool)
        .await?
        .try_get("oldest")?;
        if oldest.is_some_and(|oldest| oldest < before.saturating_sub(slack)) {
            covered = Some(self.mark_cut(tenant_id, before, slack, covered).await?);
        }
        let mut pruned = AuditPruned::default();
        let Some(mark) = covered else {
            return Ok(pruned);
        };
        self.delete_in_batches(
            &mut pruned,
            "DELETE FROM audit_log WHERE tenant_id = $1 AND seq IN ( \
               SELECT seq FROM audit_log WHERE tenant_id = $1 AND seq <= $2 \
               ORDER BY seq LIMIT $3)",
            tenant_id,
            mark.through_seq,
            batch,
        )
        .await?;
        self.delete_in_batches(
            &mut pruned,
            "DELETE FROM audit_log WHERE tenant_id = $1 AND id IN ( \
               SELECT id FROM audit_log WHERE tenant_id = $1 AND seq IS NULL AND at < $2 \
               LIMIT $3)",
            tenant_id,
            mark.before_ms,
            batch,
        )
        .await?;
        Ok(pruned)
    }

    /// Runs `delete` (`$1` the tenant, `$2` `bound`, `$3` the batch size), one transaction
    /// each, until a batch removes fewer than `batch` records.
    async fn delete_in_batches(
        &self,
        pruned: &mut AuditPruned,
        delete: &str,
        tenant_id: &str,
        bound: i64,
        batch: i64,
    ) -> Result<(), StoreError> {
        loop {
            let started = Instant::now();
            let removed = sqlx::query(delete)
                .bind(tenant_id)
                .bind(bound)
                .bind(batch)
                .execute(&self.writer)
                .await?
                .rows_affected();
            pruned.note(started, removed);
            if removed < u64::try_from(batch).unwrap_or(0) {
                return Ok(());
            }
        }
    }

    /// Appends the prune record of a cut at `before`: through the last chained record older
    /// than it (or no further than an earlier cut).
    async fn mark_cut(
        &self,
        tenant_id: &str,
        before: i64,
        slack: i64,
        earlier: Option<PruneMark>,
    ) -> Result<PruneMark, StoreError> {
        let mut tx = self.begin_write().await?;
        // Serialized with the chain's appends (PostgreSQL: their lock; SQLite: the write
        // lock `begin_write` takes), so of two passes at once the second sees the first's
        // cut and appends none of its own.
        if self.kind == DbKind::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7411))")
                .bind(format!("audit:{tenant_id}"))
                .execute(&mut *tx)
                .await?;
        }
        let latest = sqlx::query(
            "SELECT detail FROM audit_log WHERE tenant_id = $1 AND action = $2 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(PRUNED_ACTION)
        .fetch_optional(&mut *tx)
        .await?
        .and_then(|row| row.try_get::<String, _>("detail").ok())
        .and_then(|detail| serde_json::from_str::<PruneMark>(&detail).ok());
        if let Some(latest) = latest
            && latest.before_ms >= before.saturating_sub(slack)
        {
            return Ok(latest);
        }
        // The longest head of the chain older than the horizon throughout (a clock that
        // stepped back leaves a newer record inside it, which the database would refuse).
        let newer: Option<i64> = sqlx::query(
            "SELECT MIN(seq) AS seq FROM audit_log WHERE tenant_id = $1 AND seq IS NOT NULL \
             AND at >= $2",
        )
        .bind(tenant_id)
        .bind(before)
        .fetch_one(&mut *tx)
        .await?
        .try_get("seq")?;
        let last = sqlx::query(
            "SELECT seq, hash FROM audit_log WHERE tenant_id = $1 AND seq IS NOT NULL \
             AND seq < $2 ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(newer.unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        let (through_seq, through_hash) = match last {
            Some(row) => (
                row.try_get::<i64, _>("seq")?,
                row.try_get::<Option<String>, _>("hash")?
                    .unwrap_or_default(),
            ),
            None => (0, String::new()),
        };
        let mark = match earlier {
            Some(earlier) if earlier.through_seq >= through_seq => PruneMark {
                before_ms: before.max(earlier.before_ms),
                ..earlier
            },
            _ => PruneMark {
                through_seq,
                through_hash,
                before_ms: before,
            },
        };
        let draft = AuditDraft {
            tenant_id: tenant_id.to_owned(),
            actor: "airlock:retention".into(),
            action: PRUNED_ACTION.into(),
            target: format!("seq {}", mark.through_seq),
            request_id: String::new(),
            detail: serde_json::to_value(&mark).unwrap_or(Value::Null),
        };
        append(&mut tx, self.audit_at(), &draft, "").await?;
        tx.commit().await?;
        Ok(mark)
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

impl AuditPruned {
    fn note(&mut self, started: Instant, removed: u64) {
        self.batches += 1;
        self.removed += removed;
        self.longest_batch = self.longest_batch.max(started.elapsed());
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

    /// `chain(n)` with a prune record appended (cutting through `through`), then the records
    /// up to `through` removed.
    fn cut(n: i64, through: i64) -> Vec<AuditEntry> {
        cut_at(n, through, DAY_MS)
    }

    /// [`cut`] with the prune record's horizon at `before_ms` (it is appended at 10 days).
    fn cut_at(n: i64, through: i64, before_ms: i64) -> Vec<AuditEntry> {
        let mut records = chain(n);
        let last = records.last().cloned().expect("records");
        let mark = PruneMark {
            through_seq: through,
            through_hash: records[usize::try_from(through - 1).expect("index")]
                .hash
                .clone()
                .unwrap_or_default(),
            before_ms,
        };
        let prev = last.hash.clone().unwrap_or_default();
        let mut record = AuditEntry {
            id: "aud_cut".into(),
            seq: Some(n + 1),
            at: 10 * DAY_MS,
            action: PRUNED_ACTION.into(),
            detail: serde_json::to_string(&mark).expect("json"),
            prev_hash: Some(prev.clone()),
            hash: None,
            ..last
        };
        record.hash = Some(hash(&record, &prev));
        records.push(record);
        records.drain(..usize::try_from(through).expect("index"));
        records
    }

    #[test]
    fn a_chain_cut_by_retention_verifies_from_the_cut_and_only_there() {
        let pruned = cut(6, 4);
        assert_eq!(verify(&pruned), Ok(3));
        // Every record removed: the prune record alone.
        assert_eq!(verify(&cut(6, 6)), Ok(1));

        // One more record gone after the cut: not retention's doing.
        let mut gap = pruned.clone();
        gap.remove(0);
        assert_eq!(
            verify(&gap).map_err(|b| (b.seq, b.reason)),
            Err((
                6,
                "records before this one are missing and no prune record covers them"
            ))
        );

        // The head gone without a prune record.
        let mut headless = chain(5);
        headless.drain(..2);
        assert_eq!(verify(&headless).map_err(|b| b.seq), Err(3));

        // A cut half done (a crash between batches): the records left still follow, and the
        // last one the prune record names has the hash it names.
        let mut full = chain(6);
        let mut half = cut(6, 4);
        half.insert(0, full.remove(3));
        half.insert(0, full.remove(2));
        assert_eq!(verify(&half), Ok(5));
        half[1].actor = "mallory".into();
        assert!(verify(&half).is_err());

        // A prune record that claims its own last day (what anyone able to insert one could
        // write, to erase a chain) is not retention's: the database would refuse its deletes,
        // and verify refuses it.
        let forged = cut_at(6, 6, 10 * DAY_MS);
        assert_eq!(
            verify(&forged).map_err(|b| (b.seq, b.reason)),
            Err((
                7,
                "its prune record claims records from its last day or after it"
            ))
        );
    }
}
