//! Triggers: webhook and cron triggers of a workflow, and the claiming of cron ticks.
//!
//! A cron tick fires exactly once however many processes poll: a process claims the ticks
//! due by moving the trigger's `next_fire_at` from the value it read to the next tick
//! (compare-and-swap), and creates their runs in that same transaction. A process that lost
//! the swap changes nothing; a transaction that fails leaves `next_fire_at` where it was, so
//! the ticks are claimed again on the next poll. `trigger_ticks` (unique per trigger and
//! scheduled time) records each tick's outcome and refuses a tick already recorded, whatever
//! the clocks of the processes say.
//!
//! A claim never waits for another one (PostgreSQL): it skips a trigger whose row another
//! transaction holds (`FOR UPDATE SKIP LOCKED`: that trigger is being claimed, or is stuck in
//! a claim, and is tried again shortly), and gives up on any other lock after
//! [`CLAIM_LOCK_TIMEOUT`]. Each trigger is claimed in its own transaction, so a claim that
//! stalls (a process frozen inside it) costs that trigger's ticks until it ends, no one
//! else's. On SQLite there is one writer: a stalled write transaction stalls every write
//! (see `docs/reliability.md`).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::runs::{RunInserts, RunState, Tx};
use super::{DbKind, NewRun, RunRecord, Store, StoreError, findable, lock_tenant, now_ms};

/// The longest a cron claim waits for a row lock (PostgreSQL) before it gives up and the
/// scheduler tries again: a claim that waited longer than a tick is late anyway, and waiting
/// holds a pooled connection.
pub const CLAIM_LOCK_TIMEOUT: &str = "1s";

/// Ticks kept in `trigger_ticks` (they only guard against a clock running backwards).
pub const TICK_RETENTION_MS: i64 = 7 * 86_400_000;

/// A trigger as stored. Webhook fields are `None` on cron triggers and the other way round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRecord {
    pub tenant_id: String,
    pub id: String,
    pub workflow_id: String,
    /// `webhook` or `cron`.
    pub kind: String,
    pub paused: bool,
    pub scheme: Option<String>,
    /// One envelope holding the current secret and, during a rotation's overlap, the
    /// previous one.
    pub secret: Option<String>,
    /// Until when the previous secret still verifies.
    pub previous_until: Option<i64>,
    pub rate_per_minute: Option<i64>,
    pub expression: Option<String>,
    pub time_zone: Option<String>,
    pub missed_policy: Option<String>,
    pub missed_cap: Option<i64>,
    pub overlap: Option<String>,
    /// The predicate a delivery or tick must match to create a run (JSON text).
    pub filter: Option<String>,
    /// The earliest tick not yet handled.
    pub next_fire_at: Option<i64>,
    pub last_fired_at: Option<i64>,
    pub last_run_id: Option<String>,
    pub fired: i64,
    pub missed: i64,
    pub skipped: i64,
    pub refused: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "tenant_id, id, workflow_id, kind, paused, scheme, secret, previous_until, \
    rate_per_minute, expression, time_zone, missed_policy, missed_cap, overlap, next_fire_at, \
    last_fired_at, last_run_id, fired, missed, skipped, refused, created_at, updated_at, filter";

const LIVE: &str = "deleted_at IS NULL";

fn trigger(row: &AnyRow) -> Result<TriggerRecord, StoreError> {
    Ok(TriggerRecord {
        tenant_id: row.try_get("tenant_id")?,
        id: row.try_get("id")?,
        workflow_id: row.try_get("workflow_id")?,
        kind: row.try_get("kind")?,
        paused: row.try_get::<i64, _>("paused")? != 0,
        scheme: row.try_get("scheme")?,
        secret: row.try_get("secret")?,
        previous_until: row.try_get("previous_until")?,
        rate_per_minute: row.try_get("rate_per_minute")?,
        expression: row.try_get("expression")?,
        time_zone: row.try_get("time_zone")?,
        missed_policy: row.try_get("missed_policy")?,
        missed_cap: row.try_get("missed_cap")?,
        overlap: row.try_get("overlap")?,
        filter: row.try_get("filter")?,
        next_fire_at: row.try_get("next_fire_at")?,
        last_fired_at: row.try_get("last_fired_at")?,
        last_run_id: row.try_get("last_run_id")?,
        fired: row.try_get("fired")?,
        missed: row.try_get("missed")?,
        skipped: row.try_get("skipped")?,
        refused: row.try_get("refused")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One tick to fire: its scheduled time and the run it creates.
#[derive(Debug, Clone)]
pub struct Tick {
    pub scheduled_at: i64,
    pub run_id: String,
    pub input: String,
    pub idempotency_key: String,
    /// The new trace of the tick's run, and the span its steps are children of.
    pub trace_id: Option<String>,
    pub trace_parent: Option<String>,
}

/// What [`Store::fire_ticks`] is to do, decided from the schedule and the trigger's policies.
#[derive(Debug, Clone)]
pub struct TickPlan {
    /// Ascending.
    pub ticks: Vec<Tick>,
    /// Late ticks the missed-ticks policy drops, counted.
    pub missed: u64,
    /// The trigger's next tick after these (`None`: the schedule never fires again).
    pub next_fire_at: Option<i64>,
    /// Skip a tick while the trigger's previous run has not ended (the overlap policy).
    pub skip_overlap: bool,
    /// The tenant's cap on waiting runs.
    pub max_queued: u64,
    /// Ticks refused before the claim (the tenant's `runs_per_hour`, a full queue), counted.
    pub refused: u64,
}

/// What became of a claimed batch of ticks.
#[derive(Debug, Clone, Default)]
pub struct Fired {
    pub created: Vec<RunRecord>,
    /// Skipped because the previous run was still going.
    pub skipped: u64,
    /// Refused by the tenant's cap on waiting runs, or because the workflow is gone.
    pub refused: u64,
}

impl Store {
    /// Creates a trigger, unless the tenant has `max_triggers` live ones already
    /// ([`StoreError::LimitReached`]) or its workflow does not exist (not found). Counted
    /// under the tenant's row lock, as workflows are.
    pub async fn create_trigger(
        &self,
        record: &TriggerRecord,
        max_triggers: u32,
    ) -> Result<TriggerRecord, StoreError> {
        findable(&[&record.tenant_id, &record.workflow_id])?;
        let mut tx = self.begin_write().await?;
        lock_tenant(&mut tx, &record.tenant_id).await?;
        let workflow = sqlx::query(
            "SELECT id FROM workflows WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(&record.tenant_id)
        .bind(&record.workflow_id)
        .fetch_optional(&mut *tx)
        .await?;
        if workflow.is_none() {
            return Err(StoreError::NotFound);
        }
        let live: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM triggers WHERE tenant_id = $1 AND {LIVE}"
        ))
        .bind(&record.tenant_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if live >= i64::from(max_triggers) {
            return Err(StoreError::LimitReached {
                quota: "max_triggers",
                limit: u64::from(max_triggers),
            });
        }
        let row = sqlx::query(&format!(
            "INSERT INTO triggers (tenant_id, id, workflow_id, kind, paused, scheme, secret, \
               previous_until, rate_per_minute, expression, time_zone, missed_policy, missed_cap, \
               overlap, next_fire_at, created_at, updated_at, filter) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, \
               $17) \
             RETURNING {COLUMNS}"
        ))
        .bind(&record.tenant_id)
        .bind(&record.id)
        .bind(&record.workflow_id)
        .bind(&record.kind)
        .bind(i64::from(record.paused))
        .bind(record.scheme.as_deref())
        .bind(record.secret.as_deref())
        .bind(record.previous_until)
        .bind(record.rate_per_minute)
        .bind(record.expression.as_deref())
        .bind(record.time_zone.as_deref())
        .bind(record.missed_policy.as_deref())
        .bind(record.missed_cap)
        .bind(record.overlap.as_deref())
        .bind(record.next_fire_at)
        .bind(now_ms())
        .bind(record.filter.as_deref())
        .fetch_one(&mut *tx)
        .await?;
        let created = trigger(&row)?;
        self.commit_change(tx, &record.tenant_id, &record.id)
            .await?;
        Ok(created)
    }

    /// One of the tenant's live triggers.
    pub async fn trigger(&self, tenant_id: &str, id: &str) -> Result<TriggerRecord, StoreError> {
        findable(&[tenant_id, id])?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM triggers WHERE tenant_id = $1 AND id = $2 AND {LIVE}"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        trigger(&row)
    }

    /// A live webhook trigger by id alone: the public hook URL names no tenant. `None`
    /// without a query for an id no trigger could have.
    pub async fn hook_trigger(&self, id: &str) -> Result<Option<TriggerRecord>, StoreError> {
        if findable(&[id]).is_err() {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM triggers WHERE id = $1 AND kind = 'webhook' AND {LIVE}"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(trigger).transpose()
    }

    /// The tenant's live triggers, oldest first; of one workflow when `workflow_id` is given.
    pub async fn list_triggers(
        &self,
        tenant_id: &str,
        workflow_id: Option<&str>,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        let of_workflow = if workflow_id.is_some() {
            "AND workflow_id = $2"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM triggers WHERE tenant_id = $1 AND {LIVE} {of_workflow} \
             ORDER BY created_at, id"
        );
        let mut query = sqlx::query(&sql).bind(tenant_id);
        if let Some(workflow_id) = workflow_id {
            query = query.bind(workflow_id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(trigger).collect()
    }

    /// Pauses or resumes a trigger. A resumed cron trigger starts from `next_fire_at`: the
    /// ticks of the pause are not missed ticks, they were not wanted.
    pub async fn set_trigger_paused(
        &self,
        tenant_id: &str,
        id: &str,
        paused: bool,
        next_fire_at: Option<i64>,
    ) -> Result<TriggerRecord, StoreError> {
        findable(&[tenant_id, id])?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "UPDATE triggers SET paused = $3, \
               next_fire_at = CASE WHEN kind = 'cron' AND paused = 1 AND $3 = 0 THEN $4 \
                 ELSE next_fire_at END, \
               updated_at = $5 \
             WHERE tenant_id = $1 AND id = $2 AND {LIVE} RETURNING {COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(i64::from(paused))
        .bind(next_fire_at)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let record = trigger(&row)?;
        self.commit_change(tx, tenant_id, id).await?;
        Ok(record)
    }

    /// Replaces a webhook trigger's secret envelope (which now holds the new secret and the
    /// previous one) and when the previous one stops verifying. Compare-and-swap on the
    /// envelope read (`expected`): of two concurrent rotations one wins, the other is
    /// [`StoreError::Conflict`] (its secret would otherwise be shown and never stored).
    pub async fn rotate_trigger_secret(
        &self,
        tenant_id: &str,
        id: &str,
        expected: &str,
        secret: &str,
        previous_until: Option<i64>,
    ) -> Result<TriggerRecord, StoreError> {
        findable(&[tenant_id, id])?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "UPDATE triggers SET secret = $4, previous_until = $5, updated_at = $6 \
             WHERE tenant_id = $1 AND id = $2 AND secret = $3 AND kind = 'webhook' AND {LIVE} \
             RETURNING {COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(expected)
        .bind(secret)
        .bind(previous_until)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some(row) => {
                let record = trigger(&row)?;
                self.commit_change(tx, tenant_id, id).await?;
                Ok(record)
            }
            None => {
                drop(tx);
                self.trigger(tenant_id, id).await?;
                Err(StoreError::Conflict)
            }
        }
    }

    /// Deletes a trigger: no tick fires from the next poll on, in every process; hook
    /// requests are refused from the next one on in the process that deleted it, and within
    /// the trigger cache's second in the others (`airlock_runs`).
    pub async fn delete_trigger(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        findable(&[tenant_id, id])?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(&format!(
            "UPDATE triggers SET deleted_at = $3, updated_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND {LIVE}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.commit_change(tx, tenant_id, id).await
    }

    /// Cron triggers with a tick due at `now`, longest overdue first, across tenants.
    pub async fn due_triggers(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM triggers \
             WHERE kind = 'cron' AND paused = 0 AND {LIVE} AND next_fire_at <= $1 \
             ORDER BY next_fire_at LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trigger).collect()
    }

    /// The earliest tick of any live, unpaused cron trigger (for the scheduler's sleep).
    pub async fn next_tick(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT MIN(next_fire_at) AS t FROM triggers \
             WHERE kind = 'cron' AND paused = 0 AND {LIVE}"
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("t")?)
    }

    /// Claims and fires `trigger`'s due ticks as `plan` says, in one transaction: moves
    /// `next_fire_at` from the value `trigger` holds (`None` back: another process claimed
    /// them first, the trigger was paused or deleted meanwhile, or on PostgreSQL another
    /// transaction holds its row right now), records each tick and creates its run.
    pub async fn fire_ticks(
        &self,
        trigger: &TriggerRecord,
        plan: &TickPlan,
    ) -> Result<Option<Fired>, StoreError> {
        let tenant_id = trigger.tenant_id.as_str();
        let mut tx = self.begin_write().await?;
        if self.kind == DbKind::Postgres {
            // `SET LOCAL` takes no parameters; the value is a constant.
            sqlx::query(&format!("SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT}'"))
                .execute(&mut *tx)
                .await?;
            // A row another transaction holds is a claim of this trigger in progress (or
            // stuck): leave it to that one rather than queue behind it.
            let free = sqlx::query(
                "SELECT id FROM triggers WHERE tenant_id = $1 AND id = $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(tenant_id)
            .bind(&trigger.id)
            .fetch_optional(&mut *tx)
            .await?;
            if free.is_none() {
                return Ok(None);
            }
        }
        // Read once the writer is ours: a run that ended while this waited is seen as ended.
        let now = now_ms();
        let claimed = sqlx::query(&format!(
            "UPDATE triggers SET next_fire_at = $4, missed = missed + $5, updated_at = $6 \
             WHERE tenant_id = $1 AND id = $2 AND next_fire_at = $3 AND kind = 'cron' \
               AND paused = 0 AND {LIVE}"
        ))
        .bind(tenant_id)
        .bind(&trigger.id)
        .bind(trigger.next_fire_at)
        .bind(plan.next_fire_at)
        .bind(i64::try_from(plan.missed).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Ok(None);
        }
        let version: Option<i64> = sqlx::query(
            "SELECT current_version FROM workflows \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant_id)
        .bind(&trigger.workflow_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.try_get("current_version"))
        .transpose()?;
        let mut going = match (&trigger.last_run_id, plan.skip_overlap) {
            (Some(run_id), true) => run_going(&mut tx, tenant_id, run_id).await?,
            _ => false,
        };
        let mut fired = Fired {
            refused: plan.refused,
            ..Fired::default()
        };
        let mut last_fired = None;
        // Charged before the claim (`runs_per_hour: None`): the hour is not read here.
        let mut inserts = RunInserts::new(now, now);
        for tick in &plan.ticks {
            let outcome = if going {
                "skipped"
            } else if version.is_none() {
                "refused"
            } else {
                "fired"
            };
            let recorded = sqlx::query(
                "INSERT INTO trigger_ticks (trigger_id, scheduled_at, tenant_id, outcome, run_id, \
                   created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (trigger_id, scheduled_at) DO NOTHING",
            )
            .bind(&trigger.id)
            .bind(tick.scheduled_at)
            .bind(tenant_id)
            .bind(outcome)
            .bind((outcome == "fired").then_some(tick.run_id.as_str()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if recorded.rows_affected() == 0 {
                continue;
            }
            let Some(version) = version.filter(|_| outcome == "fired") else {
                match outcome {
                    "skipped" => fired.skipped += 1,
                    _ => fired.refused += 1,
                }
                continue;
            };
            let new = NewRun {
                id: tick.run_id.clone(),
                workflow_id: trigger.workflow_id.clone(),
                workflow_version: version,
                input: tick.input.clone(),
                idempotency_key: Some(tick.idempotency_key.clone()),
                // Only the scheduler makes tick keys, one run each: nothing to tell apart.
                request_hash: None,
                trigger_id: Some(trigger.id.clone()),
                trace_id: tick.trace_id.clone(),
                trace_parent: tick.trace_parent.clone(),
                runs_per_hour: None,
                max_queued: plan.max_queued,
            };
            match inserts.insert(&mut tx, tenant_id, &new).await {
                // A run holding this tick's key already (possible only if its tick record
                // was pruned): refused, without failing the transaction.
                Ok(None) => {
                    mark_tick(&mut tx, &trigger.id, tick.scheduled_at, "refused").await?;
                    fired.refused += 1;
                }
                Ok(Some(run)) => {
                    last_fired = Some(tick.scheduled_at);
                    fired.created.push(run);
                    going = plan.skip_overlap;
                }
                Err(StoreError::LimitReached { .. }) => {
                    mark_tick(&mut tx, &trigger.id, tick.scheduled_at, "refused").await?;
                    fired.refused += 1;
                }
                Err(other) => return Err(other),
            }
        }
        inserts.finish(&mut tx).await?;
        sqlx::query(
            "UPDATE triggers SET fired = fired + $3, skipped = skipped + $4, \
               refused = refused + $5, \
               last_fired_at = COALESCE($6, last_fired_at), \
               last_run_id = COALESCE($7, last_run_id) \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(&trigger.id)
        .bind(i64::try_from(fired.created.len()).unwrap_or(i64::MAX))
        .bind(i64::try_from(fired.skipped).unwrap_or(i64::MAX))
        .bind(i64::try_from(fired.refused).unwrap_or(i64::MAX))
        .bind(last_fired)
        .bind(fired.created.last().map(|run| run.id.as_str()))
        .execute(&mut *tx)
        .await?;
        if !fired.created.is_empty() {
            self.notify_in(&mut tx).await?;
        }
        tx.commit().await?;
        if !fired.created.is_empty() {
            self.wake_workers();
        }
        Ok(Some(fired))
    }

    /// How many runs each outcome of a trigger's ticks has, by scheduled time (for tests and
    /// the chaos script: a tick fired twice would show as two rows of one time).
    pub async fn trigger_ticks(
        &self,
        tenant_id: &str,
        trigger_id: &str,
    ) -> Result<Vec<(i64, String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT scheduled_at, outcome, run_id FROM trigger_ticks \
             WHERE tenant_id = $1 AND trigger_id = $2 ORDER BY scheduled_at",
        )
        .bind(tenant_id)
        .bind(trigger_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("scheduled_at")?,
                    row.try_get("outcome")?,
                    row.try_get("run_id")?,
                ))
            })
            .collect()
    }

    /// Wakes this process's scheduler (a trigger changed here).
    pub fn wake_scheduler(&self) {
        self.scheduler_wakeups.notify_waiters();
    }

    pub fn scheduler_wakeups(&self) -> &std::sync::Arc<tokio::sync::Notify> {
        &self.scheduler_wakeups
    }

    /// Forgets tick records older than [`TICK_RETENTION_MS`].
    pub async fn prune_ticks(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM trigger_ticks WHERE scheduled_at < $1")
            .bind(now - TICK_RETENTION_MS)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Records a tick as not fired (`refused`), without a run.
async fn mark_tick(
    tx: &mut Tx<'_>,
    trigger_id: &str,
    scheduled_at: i64,
    outcome: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE trigger_ticks SET outcome = $3, run_id = NULL \
         WHERE trigger_id = $1 AND scheduled_at = $2",
    )
    .bind(trigger_id)
    .bind(scheduled_at)
    .bind(outcome)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether the run has not ended yet (queued, running or waiting to retry).
async fn run_going(tx: &mut Tx<'_>, tenant_id: &str, run_id: &str) -> Result<bool, StoreError> {
    let state: Option<String> =
        sqlx::query("SELECT state FROM runs WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get("state"))
            .transpose()?;
    Ok(state
        .as_deref()
        .and_then(RunState::parse)
        .is_some_and(|state| !state.is_terminal()))
}
