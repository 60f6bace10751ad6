//! Runs per tenant per clock hour: the counter behind the `runs_per_hour` quota.
//!
//! Every invocation writes its run before the guest starts, so this is the one write on the
//! invoke path. A commit costs a flush of the write-ahead log (SQLite with `synchronous =
//! FULL` manages about 2,400 a second here, whatever the CPU), so admissions are
//! group-committed: one task takes every admission waiting, counts them in one transaction
//! (one statement per batch when the tenants differ), commits once, and answers them all. A run is admitted only
//! once its count is durable; if the commit fails, every run in the batch is refused.

use std::sync::Arc;
use std::time::Duration;

use airlock_model::Clock;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};

pub(crate) const HOUR_MS: i64 = 3_600_000;
/// The most admissions one transaction holds: bounds how long it keeps the write lock.
const MAX_BATCH: usize = 256;

/// Whether a run was admitted, and the hour's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAdmission {
    Admitted {
        runs: i64,
        /// The clock hour (unix ms / 3,600,000) the run was counted in: what
        /// [`Store::refund_run`] takes back.
        hour: i64,
    },
    /// The hour's quota is used up; `retry_after_s` is the time until the next hour.
    OverQuota { retry_after_s: u64 },
}

struct Pending {
    tenant_id: String,
    limit: u32,
    reply: oneshot::Sender<Result<RunAdmission, StoreError>>,
}

/// A run counted, then refused before its guest started (no slot): uncounted in the same
/// group commit as admissions, unanswered.
struct Refund {
    tenant_id: String,
    hour: i64,
}

enum Request {
    Admit(Pending),
    Refund(Refund),
}

/// The sending side of the group-commit task. The task ends when the last [`Store`] clone
/// holding this is dropped. The queue is bounded: an admission that finds it full is refused
/// as [`StoreError::Busy`] (the API's 503 with Retry-After) instead of waiting without bound.
#[derive(Debug, Clone)]
pub(super) struct RunCounter {
    queue: mpsc::Sender<Request>,
    clock: Arc<dyn Clock>,
}

impl RunCounter {
    /// Starts the group-commit task on the current tokio runtime.
    pub(super) fn start(
        pool: AnyPool,
        capacity: usize,
        deadline: Duration,
        clock: Arc<dyn Clock>,
    ) -> RunCounter {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        tokio::spawn(group_commit(pool, receiver, deadline, clock.clone()));
        RunCounter { queue, clock }
    }

    /// Whether the task has ended: every admission would fail, so the service is not ready.
    pub(super) fn stopped(&self) -> bool {
        self.queue.is_closed()
    }
}

async fn group_commit(
    pool: AnyPool,
    mut receiver: mpsc::Receiver<Request>,
    deadline: Duration,
    clock: Arc<dyn Clock>,
) {
    let mut requests = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut requests, MAX_BATCH).await > 0 {
        let mut batch = Vec::with_capacity(requests.len());
        let mut refunds = Vec::new();
        for request in requests.drain(..) {
            match request {
                Request::Admit(pending) => batch.push(pending),
                Request::Refund(refund) => refunds.push(refund),
            }
        }
        // The same order in every process, so two transactions on PostgreSQL lock tenant
        // rows in the same order and never deadlock.
        batch.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        refunds.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        let now = clock.now_ms();
        // A batch that outlives its deadline (a stalled database) is rolled back and refused,
        // so admissions waiting behind it are answered instead of piling up.
        let outcome = tokio::time::timeout(deadline, admit_batch(&pool, &batch, &refunds, now))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "a run admission batch took longer than {deadline:?}"
                )))
            });
        match outcome {
            Ok(outcomes) => {
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                if !refunds.is_empty() {
                    tracing::warn!(%error, refunds = refunds.len(), "run refunds were lost with a failed batch");
                }
                let message = error.to_string();
                for pending in batch.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// Every admission of the batch in one transaction, in rounds: round `r` counts the `r`-th
/// admission of each tenant in one statement, so a batch of distinct tenants is a single
/// statement, and later admissions of a tenant see the earlier ones' counts: the limit holds
/// exactly.
async fn admit_batch(
    pool: &AnyPool,
    batch: &[Pending],
    refunds: &[Refund],
    now: i64,
) -> Result<Vec<RunAdmission>, StoreError> {
    let hour = now.div_euclid(HOUR_MS);
    let left_ms = (hour + 1) * HOUR_MS - now;
    let over = RunAdmission::OverQuota {
        retry_after_s: u64::try_from(left_ms / 1000 + 1).unwrap_or(1),
    };
    // The batch is sorted by tenant: each group is a run of equal ids.
    let groups: Vec<&[Pending]> = batch.chunk_by(|a, b| a.tenant_id == b.tenant_id).collect();
    // Per group, the outcomes decided so far; a group stops asking at its first refusal.
    let mut decided: Vec<Vec<RunAdmission>> = vec![Vec::new(); groups.len()];
    if !refunds.is_empty() {
        // A transaction of their own, in tenant order like the admissions': one transaction
        // locking rows for both in two sorted passes could lock B then A while another
        // process's batch locks A then B (a deadlock PostgreSQL would break by failing one).
        let mut tx = pool.begin().await?;
        for refund in refunds {
            sqlx::query(
                "UPDATE usage_hours SET runs = runs - 1 WHERE tenant_id = $1 AND hour = $2 AND runs > 0",
            )
            .bind(refund.tenant_id.as_str())
            .bind(refund.hour)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    let mut tx = pool.begin().await?;
    for round in 0.. {
        let asking: Vec<usize> = (0..groups.len())
            .filter(|&g| {
                groups[g].len() > round
                    && !matches!(decided[g].last(), Some(RunAdmission::OverQuota { .. }))
            })
            .collect();
        if asking.is_empty() {
            // Every group is done or at its limit: the rest are refused below.
            break;
        }
        let pending: Vec<&Pending> = asking.iter().map(|&g| &groups[g][round]).collect();
        let counted = count_round(&mut tx, &pending, hour).await?;
        for (&g, asked) in asking.iter().zip(&pending) {
            decided[g].push(match counted.iter().find(|(t, _)| *t == asked.tenant_id) {
                Some((_, runs)) => RunAdmission::Admitted { runs: *runs, hour },
                None => over,
            });
        }
    }
    tx.commit().await?;
    Ok(groups
        .iter()
        .zip(decided)
        .flat_map(|(group, decided)| {
            decided
                .into_iter()
                .chain(std::iter::repeat(over))
                .take(group.len())
        })
        .collect())
}

/// One conditional increment per (distinct) tenant of `asking`, in one statement; returns the
/// tenants counted with their new counts. A tenant at its limit, or with a limit of zero, is
/// not in the answer.
async fn count_round(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    asking: &[&Pending],
    hour: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let values: Vec<String> = (0..asking.len())
        .map(|i| {
            format!(
                "(CAST(${} AS TEXT), CAST(${} AS BIGINT))",
                2 * i + 1,
                2 * i + 2
            )
        })
        .collect();
    let sql = format!(
        "WITH batch (t, lim) AS (VALUES {}) \
         INSERT INTO usage_hours (tenant_id, hour, runs) SELECT t, ${}, 1 FROM batch WHERE lim > 0 \
         ON CONFLICT (tenant_id, hour) DO UPDATE SET runs = usage_hours.runs + 1 \
         WHERE usage_hours.runs < (SELECT lim FROM batch WHERE batch.t = usage_hours.tenant_id) \
         RETURNING tenant_id, runs",
        values.join(", "),
        2 * asking.len() + 1
    );
    // The text changes with the batch size: not worth a slot in the statement cache.
    let mut query = sqlx::query(&sql).persistent(false);
    for pending in asking {
        query = query
            .bind(pending.tenant_id.as_str())
            .bind(i64::from(pending.limit));
    }
    let rows = query.bind(hour).fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| Ok((row.try_get("tenant_id")?, row.try_get("runs")?)))
        .collect()
}

/// Counts one run against the tenant's hour at `now` inside `tx` (the durable-run enqueue,
/// which commits the count with the run), only below `limit`: the group commit's statement
/// for one tenant. [`StoreError::OverQuota`] when the hour is used up.
pub(crate) async fn count_run(
    tx: &mut super::runs::Tx<'_>,
    tenant_id: &str,
    limit: u32,
    now: i64,
) -> Result<(), StoreError> {
    let hour = now.div_euclid(HOUR_MS);
    let counted = sqlx::query(
        "INSERT INTO usage_hours (tenant_id, hour, runs) SELECT $1, $2, 1 WHERE $3 > 0 \
         ON CONFLICT (tenant_id, hour) DO UPDATE SET runs = usage_hours.runs + 1 \
         WHERE usage_hours.runs < $3 RETURNING runs",
    )
    .bind(tenant_id)
    .bind(hour)
    .bind(i64::from(limit))
    .fetch_optional(&mut **tx)
    .await?;
    if counted.is_none() {
        return Err(over_quota(limit, now));
    }
    Ok(())
}

/// The refusal of a run past `limit` runs in the clock hour of `now`, retried at its end.
pub(crate) fn over_quota(limit: u32, now: i64) -> StoreError {
    let left_ms = (now.div_euclid(HOUR_MS) + 1) * HOUR_MS - now;
    StoreError::OverQuota {
        limit,
        retry_after_s: u64::try_from(left_ms / 1000 + 1).unwrap_or(1),
    }
}

impl Store {
    /// Counts one run against the tenant's current hour; the increment happens only below
    /// `limit`, so concurrent callers, in this process or others, never exceed it. Returns
    /// once the count is committed.
    pub async fn admit_run(&self, tenant_id: &str, limit: u32) -> Result<RunAdmission, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            tenant_id: tenant_id.to_owned(),
            limit,
            reply,
        };
        match self.runs.queue.try_send(Request::Admit(pending)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(StoreError::Busy("the run admission queue is full"));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(StoreError::Unavailable(
                    "the run counter has stopped".into(),
                ));
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the run counter has stopped".into(),
            ))
        })
    }

    /// Takes back a run counted in `hour` whose guest never started (the runtime had no slot
    /// for it). Committed with the next admission batch; not answered. A full queue drops
    /// the refund (logged), and the run then stays counted: under overload a tenant may be
    /// charged for a refused run, never given runs beyond its limit.
    pub fn refund_run(&self, tenant_id: &str, hour: i64) {
        let refund = Request::Refund(Refund {
            tenant_id: tenant_id.to_owned(),
            hour,
        });
        if self.runs.queue.try_send(refund).is_err() {
            tracing::warn!(
                tenant = tenant_id,
                "a run refund was dropped: the admission queue is full"
            );
        }
    }

    /// Runs counted in the tenant's current hour.
    pub async fn runs_this_hour(&self, tenant_id: &str) -> Result<i64, StoreError> {
        let hour = self.runs.clock.now_ms().div_euclid(HOUR_MS);
        let row = sqlx::query("SELECT runs FROM usage_hours WHERE tenant_id = $1 AND hour = $2")
            .bind(tenant_id)
            .bind(hour)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("runs")?,
            None => 0,
        })
    }
}
