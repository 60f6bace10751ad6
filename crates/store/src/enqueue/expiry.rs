//! Idempotency keys that expire, and claim-rotation rows of tenants gone quiet.
//!
//! A key holds its run for a period (the runs crate's `idempotency_ttl`, 24 h by default):
//! after it, the same key makes a new run. Creation checks the age of the run holding a key
//! and releases an expired one ([`Store::release_key`]) before it tries again; a periodic
//! sweep ([`Store::expire_keys`]) clears the keys of every run past the period, so the unique
//! index on `(tenant_id, idempotency_key)` does not grow with every key ever used. The same
//! sweep removes the `run_tenants` row of a tenant with no run waiting or running and none
//! created within the period ([`Store::remove_dormant_run_tenants`]); its next run writes
//! the row again.

use crate::runs::WAITING;
use crate::{DbKind, Store, StoreError, findable};

/// Rows one sweep statement changes at most: bounds how long it holds SQLite's write lock.
const SWEEP_BATCH: i64 = 1_000;

impl Store {
    /// Clears the idempotency key of run `run_id` if it still holds `key`: the key expired,
    /// and a new request may take it. `false` when the key had already moved on.
    pub async fn release_key(
        &self,
        tenant_id: &str,
        key: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        findable(&[tenant_id, key, run_id])?;
        let mut tx = self.begin_write().await?;
        let released = sqlx::query(
            "UPDATE runs SET idempotency_key = NULL \
             WHERE tenant_id = $1 AND id = $2 AND idempotency_key = $3",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(released > 0)
    }

    /// Clears the idempotency keys of runs created before `before` (unix ms), in statements of
    /// at most [`SWEEP_BATCH`] runs each, and returns how many it cleared.
    pub async fn expire_keys(&self, before: i64) -> Result<u64, StoreError> {
        let mut cleared = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let n = sqlx::query(
                "UPDATE runs SET idempotency_key = NULL WHERE (tenant_id, id) IN ( \
                   SELECT tenant_id, id FROM runs \
                   WHERE idempotency_key IS NOT NULL AND created_at < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(SWEEP_BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            cleared += n;
            if n < u64::try_from(SWEEP_BATCH).unwrap_or(u64::MAX) {
                return Ok(cleared);
            }
        }
    }

    /// Removes the claim-rotation row of every tenant with no run waiting or running and
    /// none created since `before` (unix ms); returns how many it removed. `None`: on
    /// PostgreSQL the table lock was not granted at once (claims and creations were writing
    /// it), and this round removed nothing.
    ///
    /// A creation writes the row with `ON CONFLICT DO NOTHING` after inserting its run, which
    /// locks nothing: on PostgreSQL a delete that did not see a run not yet committed would
    /// leave it without a row, never to be claimed. So the delete holds the table in
    /// `EXCLUSIVE` mode (reads go on; every writer of the table waits or has committed), and
    /// its own statement, which starts after the lock is granted, sees every run whose
    /// creation wrote the table before. A creation that writes it after waits for this
    /// commit and writes the row again. The lock is asked for with a short timeout so that
    /// claims never queue behind it for long. On SQLite the one writer does the same.
    pub async fn remove_dormant_run_tenants(&self, before: i64) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.kind() == DbKind::Postgres {
            sqlx::query("SET LOCAL lock_timeout = '100ms'")
                .execute(&mut *tx)
                .await?;
            let locked = sqlx::query("LOCK TABLE run_tenants IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await;
            if let Err(error) = locked {
                return match error {
                    // 55P03 lock_not_available: busy now, try next round.
                    sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => Ok(None),
                    other => Err(other.into()),
                };
            }
        }
        let removed = sqlx::query(&format!(
            "DELETE FROM run_tenants WHERE NOT EXISTS ( \
               SELECT 1 FROM runs r WHERE r.tenant_id = run_tenants.tenant_id AND r.{WAITING}) \
             AND NOT EXISTS ( \
               SELECT 1 FROM runs r WHERE r.tenant_id = run_tenants.tenant_id \
               AND r.state = 'running') \
             AND NOT EXISTS ( \
               SELECT 1 FROM runs r WHERE r.tenant_id = run_tenants.tenant_id \
               AND r.created_at >= $1)"
        ))
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Some(removed))
    }
}
