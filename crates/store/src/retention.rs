//! Retention: what the pruner removes from ended runs, in bounded batches.
//!
//! Two horizons per tenant: past the first, an ended run's data (its input, webhook bodies
//! included; its output; each step's output and logs) is blanked; past the second, the run
//! goes with its steps (its dead letter, its dead-letter notices and its idempotency key with
//! it). Each batch is one short transaction over at most `batch` runs, so no statement holds
//! its locks for long and the workers' writes interleave.

use std::time::{Duration, Instant};

use sqlx::Row;

use crate::{Store, StoreError};

/// What a data horizon leaves of a run's input.
const BLANK_INPUT: &str = "null";

/// What it leaves of a step's logs: the empty log (`airlock_runtime::Logs::default()`).
const BLANK_LOGS: &str = r#"{"lines":[],"dropped_bytes":0,"dropped_lines":0}"#;

/// The states a run is never pruned out of: only ended runs are.
const ENDED: &str = "state IN ('succeeded', 'dead', 'cancelled')";

/// What one pass did for a tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Runs whose data was blanked.
    pub blanked: u64,
    /// Runs removed.
    pub removed: u64,
    pub batches: u64,
    /// The longest batch (its transaction, locks included).
    pub longest_batch: Duration,
}

impl Store {
    /// Blanks the data of the tenant's runs that ended before `data_before` and removes those
    /// that ended before `runs_before` (both ms), `batch` runs a transaction.
    pub async fn prune_runs(
        &self,
        tenant_id: &str,
        data_before: i64,
        runs_before: i64,
        batch: i64,
    ) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        loop {
            let started = Instant::now();
            let removed = self.remove_batch(tenant_id, runs_before, batch).await?;
            pruned.note(started);
            pruned.removed += removed;
            if removed < u64::try_from(batch).unwrap_or(0) {
                break;
            }
        }
        loop {
            let started = Instant::now();
            let blanked = self.blank_batch(tenant_id, data_before, batch).await?;
            pruned.note(started);
            pruned.blanked += blanked;
            if blanked < u64::try_from(batch).unwrap_or(0) {
                break;
            }
        }
        Ok(pruned)
    }

    async fn ids(
        &self,
        tx: &mut crate::runs::Tx<'_>,
        tenant_id: &str,
        before: i64,
        extra: &str,
        batch: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT id FROM runs WHERE tenant_id = $1 AND finished_at IS NOT NULL \
             AND finished_at < $2 AND {ENDED} {extra} ORDER BY finished_at LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(before)
        .bind(batch)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("id")?))
            .collect()
    }

    async fn remove_batch(
        &self,
        tenant_id: &str,
        before: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let ids = self.ids(&mut tx, tenant_id, before, "", batch).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let list = placeholders(ids.len());
        for table_and_column in [
            ("dead_letter_notices", "run_id"),
            ("run_items", "run_id"),
            ("run_steps", "run_id"),
            ("runs", "id"),
        ] {
            let (table, column) = table_and_column;
            let sql = format!("DELETE FROM {table} WHERE tenant_id = $1 AND {column} IN ({list})");
            let mut query = sqlx::query(&sql).bind(tenant_id);
            for id in &ids {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn blank_batch(
        &self,
        tenant_id: &str,
        before: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let pending = format!(
            "AND (input <> '{BLANK_INPUT}' OR output IS NOT NULL OR EXISTS (SELECT 1 FROM \
             run_steps s WHERE s.tenant_id = runs.tenant_id AND s.run_id = runs.id AND \
             (s.output IS NOT NULL OR s.logs <> '{BLANK_LOGS}')) OR EXISTS (SELECT 1 FROM \
             run_items i WHERE i.tenant_id = runs.tenant_id AND i.run_id = runs.id AND \
             (i.output IS NOT NULL OR i.logs <> '{BLANK_LOGS}')))"
        );
        let ids = self
            .ids(&mut tx, tenant_id, before, &pending, batch)
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let list = placeholders(ids.len());
        let statements = [
            format!(
                "UPDATE runs SET input = '{BLANK_INPUT}', output = NULL \
                 WHERE tenant_id = $1 AND id IN ({list})"
            ),
            format!(
                "UPDATE run_steps SET output = NULL, logs = '{BLANK_LOGS}' \
                 WHERE tenant_id = $1 AND run_id IN ({list})"
            ),
            format!(
                "UPDATE run_items SET output = NULL, logs = '{BLANK_LOGS}' \
                 WHERE tenant_id = $1 AND run_id IN ({list})"
            ),
        ];
        for sql in &statements {
            let mut query = sqlx::query(sql).bind(tenant_id);
            for id in &ids {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }
}

impl Pruned {
    fn note(&mut self, started: Instant) {
        self.batches += 1;
        self.longest_batch = self.longest_batch.max(started.elapsed());
    }
}

/// `$2, $3, ...`: the ids follow the tenant.
fn placeholders(n: usize) -> String {
    (2..n + 2)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
