//! Claiming runs in batches, keeping their leases, and re-queueing expired ones.
//!
//! A run is claimed by one process at a time under a lease (`lease_until`) and a fencing
//! token (`lease_epoch`, incremented by every claim). Every write a worker makes about a run
//! names the epoch it claimed with and changes nothing unless the run is still `running`
//! under that epoch (`journal.rs`). A process renews every lease it holds in one statement
//! ([`Store::renew_leases`]); every fenced journal write extends its run's lease too. Expired
//! leases are re-queued by [`Store::reap`]. Lease times are read from the database's clock
//! (PostgreSQL's `clock_timestamp()`), so processes on hosts with skewed clocks agree on
//! when a lease expired.
//!
//! Claiming is fair across tenants: tenants take turns (the one claimed from longest ago
//! first, `run_tenants.last_turn`), and a tenant's runs in `running` never exceed its
//! `max_concurrent_runs`, across every process. `run_tenants.running` is kept with every
//! change of a run into and out of `running`, in the same transaction, so the claim excludes
//! tenants at their cap in its query instead of looking at a window of candidates that
//! capped tenants could fill. The claimer decides how many runs each candidate gets (the
//! process's fair share, `allot`); the tenant rows are locked for the claim
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so claimers skip a tenant another is claiming
//! for; on SQLite the one writer serializes claims).

use std::collections::HashMap;

use serde_json::Value;
use sqlx::Row;

use super::json_rows::{JsonRows, Ty};
use super::runs::{Claimed, Lease, LeaseStatus, RUN_COLUMNS, WAITING, run};
use super::{DbKind, Store, StoreError, now_ms};

/// A tenant with runs it may start now, as the claim found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCandidate {
    pub tenant_id: String,
    /// Its runs in `running`, every process.
    pub running: i64,
    /// Its `max_concurrent_runs`.
    pub max_running: i64,
}

impl ClaimCandidate {
    /// How many more runs the tenant may start, every process.
    pub fn room(&self) -> usize {
        usize::try_from(self.max_running.saturating_sub(self.running)).unwrap_or(0)
    }
}

/// One lease a process holds, as its renewal found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub tenant_id: String,
    pub run_id: String,
    pub epoch: i64,
    pub cancel_requested: bool,
}

/// Tenants looked at per claim, at most: a claim serves a few tenants per round trip.
const MAX_CANDIDATES: usize = 64;

/// The database's clock in unix milliseconds, as SQL: leases are set and compared on one
/// clock for every process. SQLite is one host's file, so its clock is that host's.
pub(crate) fn db_now(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        DbKind::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

impl Store {
    /// Claims the next run for `owner`: tenants in turn, each within its concurrency quota.
    /// `None` when no tenant has a claimable run it may start now.
    pub async fn claim_run(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<Claimed>, StoreError> {
        let mut claimed = self
            .claim_runs(owner, 1, lease_ms, |candidates| {
                candidates.iter().map(|_| 1).collect()
            })
            .await?;
        Ok(claimed.pop())
    }

    /// Claims up to `want` runs for `owner` in one transaction. `allot` is given the tenants
    /// that have runs they may start now (below their `max_concurrent_runs`), longest
    /// unserved first, and says how many runs each gets; it is capped by each tenant's room
    /// and by `want`, in the candidates' order. Each tenant's runs are taken oldest first.
    pub async fn claim_runs(
        &self,
        owner: &str,
        want: usize,
        lease_ms: i64,
        allot: impl FnOnce(&[ClaimCandidate]) -> Vec<usize>,
    ) -> Result<Vec<Claimed>, StoreError> {
        if want == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        // Idle workers poll: a read on the shared pool answers "nothing to do" without
        // taking the writer (SQLite's one connection, which run creation also waits for).
        let any = sqlx::query(&format!(
            "SELECT 1 AS one FROM runs WHERE {WAITING} AND run_at <= $1 LIMIT 1"
        ))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let lock = match self.kind {
            DbKind::Postgres => " FOR UPDATE OF t SKIP LOCKED",
            DbKind::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "SELECT t.tenant_id, t.running, t.max_running FROM run_tenants t \
             WHERE (t.max_running IS NULL OR t.running < t.max_running) AND EXISTS ( \
               SELECT 1 FROM runs r WHERE r.tenant_id = t.tenant_id AND r.{WAITING} \
               AND r.run_at <= $1) \
             ORDER BY t.last_turn, t.tenant_id LIMIT $2{lock}"
        ))
        .bind(now)
        .bind(i64::try_from(MAX_CANDIDATES).unwrap_or(64))
        .fetch_all(&mut *tx)
        .await?;
        let mut candidates = Vec::with_capacity(rows.len());
        for row in rows {
            let tenant_id: String = row.try_get("tenant_id")?;
            let running: i64 = row.try_get("running")?;
            let max_running = match row.try_get::<Option<i64>, _>("max_running")? {
                Some(max) => max,
                // First claim since the engine learned to keep the limit here.
                None => match tenant_max_running(&mut tx, &tenant_id).await? {
                    Some(max) => {
                        sqlx::query("UPDATE run_tenants SET max_running = $2 WHERE tenant_id = $1")
                            .bind(&tenant_id)
                            .bind(max)
                            .execute(&mut *tx)
                            .await?;
                        max
                    }
                    None => continue, // the tenant is gone
                },
            };
            if running < max_running {
                candidates.push(ClaimCandidate {
                    tenant_id,
                    running,
                    max_running,
                });
            }
        }
        let asked = allot(&candidates);
        let mut left = want;
        let mut claimed = Vec::new();
        let mut served = Vec::new();
        for (candidate, asked) in candidates.iter().zip(asked) {
            let take = asked.min(candidate.room()).min(left);
            if take == 0 {
                continue;
            }
            // The ids first (locked on PostgreSQL, so they stay waiting until the commit),
            // then the update by primary key alone. As one statement (`id IN (SELECT ...
            // LIMIT n)`), or with the waiting test repeated in the update, PostgreSQL
            // without fresh statistics walked every waiting run of the tenant on each claim.
            let picked = sqlx::query(&format!(
                "SELECT id FROM runs WHERE tenant_id = $1 AND {WAITING} AND run_at <= $2 \
                 ORDER BY run_at, id LIMIT $3{row_lock}",
                row_lock = match self.kind {
                    DbKind::Postgres => " FOR UPDATE",
                    DbKind::Sqlite => "",
                }
            ))
            .bind(&candidate.tenant_id)
            .bind(now)
            .bind(i64::try_from(take).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
            if picked.is_empty() {
                continue;
            }
            let picked: Vec<String> = picked
                .iter()
                .map(|row| row.try_get("id"))
                .collect::<Result<_, _>>()?;
            let mut ids = JsonRows::new(&[("v_id", Ty::Text)]);
            for id in &picked {
                ids.push([Value::from(id.as_str())]);
            }
            // An array on PostgreSQL: `id = ANY` is an index condition on the primary key
            // whatever the planner guesses of the rows' count.
            let v = ids.table(self.kind, 5, "v");
            let picked_ids = match self.kind {
                DbKind::Postgres => format!("id = ANY(ARRAY(SELECT v.v_id FROM {v}))"),
                DbKind::Sqlite => format!("id IN (SELECT v.v_id FROM {v})"),
            };
            let sql = format!(
                "UPDATE runs SET state = 'running', lease_epoch = lease_epoch + 1, \
                   lease_owner = $2, lease_until = {clock} + $3, \
                   started_at = COALESCE(started_at, $4), updated_at = $4 \
                 WHERE tenant_id = $1 AND {picked_ids} \
                 RETURNING {RUN_COLUMNS}",
                clock = db_now(self.kind),
            );
            let update = sqlx::query(&sql)
                .bind(&candidate.tenant_id)
                .bind(owner)
                .bind(lease_ms)
                .bind(now)
                .bind(ids.param()?);
            let mut rows = update.fetch_all(&mut *tx).await?;
            // Oldest first, as picked (RETURNING follows no order).
            let order: HashMap<&str, usize> = picked
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i))
                .collect();
            rows.sort_by_key(|row| {
                row.try_get::<String, _>("id")
                    .ok()
                    .and_then(|id| order.get(id.as_str()).copied())
                    .unwrap_or(usize::MAX)
            });
            if rows.is_empty() {
                continue;
            }
            left -= rows.len();
            served.push((candidate.tenant_id.clone(), rows.len()));
            for row in &rows {
                let record = run(row)?;
                claimed.push(Claimed {
                    lease: Lease {
                        tenant_id: candidate.tenant_id.clone(),
                        run_id: record.id.clone(),
                        epoch: record.lease_epoch,
                        lease_ms,
                    },
                    run: record,
                });
            }
            if left == 0 {
                break;
            }
        }
        if !served.is_empty() {
            // Turns are a sequence, not a time: two claims in one millisecond still take
            // turns. The tenants served follow the highest turn given so far, in the order
            // served, in one statement.
            const COLUMNS: &[(&str, Ty)] = &[
                ("v_tenant", Ty::Text),
                ("v_runs", Ty::Int),
                ("v_turn", Ty::Int),
            ];
            let mut rows = JsonRows::new(COLUMNS);
            for (turn, (tenant_id, runs)) in served.iter().enumerate() {
                rows.push([
                    Value::from(tenant_id.as_str()),
                    Value::from(*runs),
                    Value::from(turn + 1),
                ]);
            }
            sqlx::query(&format!(
                "UPDATE run_tenants SET running = running + v.v_runs, \
                   last_turn = (SELECT COALESCE(MAX(last_turn), 0) FROM run_tenants) + v.v_turn \
                 FROM {v} WHERE run_tenants.tenant_id = v.v_tenant",
                v = rows.table(self.kind, 1, "v"),
            ))
            .bind(rows.param()?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Extends one lease to `lease_ms` from now, if still held.
    pub async fn heartbeat(&self, lease: &Lease, lease_ms: i64) -> Result<LeaseStatus, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE runs SET lease_until = {} + $4 \
             WHERE tenant_id = $1 AND id = $2 AND lease_epoch = $3 AND state = 'running' \
             RETURNING cancel_requested",
            db_now(self.kind)
        ))
        .bind(&lease.tenant_id)
        .bind(&lease.run_id)
        .bind(lease.epoch)
        .bind(lease_ms)
        .fetch_optional(&self.writer)
        .await?;
        Ok(match row {
            None => LeaseStatus::Lost,
            Some(row) if row.try_get::<i64, _>("cancel_requested")? != 0 => {
                LeaseStatus::CancelRequested
            }
            Some(_) => LeaseStatus::Held,
        })
    }

    /// Extends every lease `owner` holds to `lease_ms` from now, in one statement, and
    /// returns them: a run `owner` thinks it holds and that is not among them was lost.
    pub async fn renew_leases(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Vec<HeldLease>, StoreError> {
        let rows = sqlx::query(&format!(
            "UPDATE runs SET lease_until = {} + $2 \
             WHERE lease_owner = $1 AND state = 'running' \
             RETURNING tenant_id, id, lease_epoch, cancel_requested",
            db_now(self.kind)
        ))
        .bind(owner)
        .bind(lease_ms)
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(HeldLease {
                    tenant_id: row.try_get("tenant_id")?,
                    run_id: row.try_get("id")?,
                    epoch: row.try_get("lease_epoch")?,
                    cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
                })
            })
            .collect()
    }

    /// Re-queues every run whose lease expired (its process died or stalled), or cancels it
    /// if a cancel was asked for. Returns how many it moved.
    pub async fn reap(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "UPDATE runs SET \
               state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END, \
               finished_at = CASE WHEN cancel_requested = 1 THEN $1 ELSE NULL END, \
               run_at = $1, lease_owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE state = 'running' AND lease_until < {} \
             RETURNING tenant_id",
            db_now(self.kind)
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut per_tenant: HashMap<String, i64> = HashMap::new();
        for row in &rows {
            *per_tenant.entry(row.try_get("tenant_id")?).or_default() += 1;
        }
        let mut per_tenant: Vec<_> = per_tenant.into_iter().collect();
        per_tenant.sort_unstable();
        for (tenant_id, left) in per_tenant {
            release_slots(&mut tx, &tenant_id, left).await?;
        }
        if !rows.is_empty() {
            self.notify_in(&mut tx).await?;
        }
        tx.commit().await?;
        let moved = rows.len() as u64;
        if moved > 0 {
            self.wake_workers();
        }
        Ok(moved)
    }
}

/// Takes `runs` off the tenant's count of running runs (they left `running` in `tx`).
pub(crate) async fn release_slots(
    tx: &mut super::runs::Tx<'_>,
    tenant_id: &str,
    runs: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE run_tenants SET running = CASE WHEN running > $2 THEN running - $2 ELSE 0 END \
         WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(runs)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn tenant_max_running(
    tx: &mut super::runs::Tx<'_>,
    tenant_id: &str,
) -> Result<Option<i64>, StoreError> {
    let Some(row) = sqlx::query("SELECT limits, suspended_at FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let quota = super::tenants::quota(&row)?;
    Ok(Some(if quota.suspended {
        0
    } else {
        i64::from(quota.runtime.max_concurrent_runs)
    }))
}
