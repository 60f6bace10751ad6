//! A worker's writes about the runs it holds: a step journaled, a failure recorded, a hold
//! ended. Each is fenced by the run's `lease_epoch` and changes nothing once the run was
//! claimed again, cancelled or finished; each extends or ends the lease; each that takes the
//! run out of `running` gives its tenant's slot back (`run_tenants.running`) in the same
//! transaction.
//!
//! They are group-committed: a commit is a log flush, and one per step capped a process at a
//! few hundred runs a second. Batchers (one on SQLite, whose one writer would serialize more;
//! a few on PostgreSQL, which runs them in parallel) take every write waiting, apply them in
//! one transaction (sorted by tenant and run, and the per-tenant rows written last in tenant
//! order, so two batchers never wait on each other's rows in opposite orders), commit once
//! and answer all. A batch that fails is retried write by write, so one bad write cannot
//! fail the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use sqlx::{AnyPool, Row};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use super::claim::{db_now, release_slots};
use super::json_rows::{JsonRows, Ty};
use super::runs::{
    AfterFailure, Cost, FailureHandler, Finish, ItemResult, Lease, LeaseStatus, RunState,
    StepResult, Tx, add_cost, bind_cost, notify_runs,
};
use super::{DbKind, Store, StoreError, now_ms};

/// The most writes one transaction applies.
const MAX_BATCH: usize = 256;
/// Writes that may wait for a batcher; beyond it callers wait to enqueue.
const QUEUE: usize = 8192;
/// Batchers on PostgreSQL.
const PG_BATCHERS: usize = 1;

#[derive(Debug)]
enum Write {
    Step {
        lease: Lease,
        result: StepResult,
        finish: Option<String>,
    },
    Failure {
        lease: Lease,
        result: StepResult,
        after: AfterFailure,
    },
    End {
        lease: Lease,
        finish: Finish,
    },
    Item {
        lease: Lease,
        item: ItemResult,
    },
    Sleep {
        lease: Lease,
        result: StepResult,
        run_at: i64,
    },
}

impl Write {
    fn lease(&self) -> &Lease {
        match self {
            Write::Step { lease, .. }
            | Write::Failure { lease, .. }
            | Write::End { lease, .. }
            | Write::Item { lease, .. }
            | Write::Sleep { lease, .. } => lease,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Step(LeaseStatus),
    /// `false`: the lease was lost, nothing written.
    Written(bool),
}

struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The batchers' queue. Cheap to clone; the batchers end when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Journal {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

struct Context {
    writer: AnyPool,
    kind: DbKind,
    wakeups: Arc<Notify>,
}

impl Journal {
    pub(crate) fn start(writer: AnyPool, kind: DbKind, wakeups: Arc<Notify>) -> Journal {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let context = Arc::new(Context {
            writer,
            kind,
            wakeups,
        });
        let batchers = match kind {
            DbKind::Sqlite => 1,
            DbKind::Postgres => PG_BATCHERS,
        };
        for _ in 0..batchers {
            tokio::spawn(batcher(context.clone(), receiver.clone()));
        }
        Journal { queue }
    }

    async fn submit(&self, write: Write) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the run journal task has stopped".into())
}

impl Store {
    /// Journals a succeeded step and moves the run to the next one, fenced, extending the
    /// lease. [`LeaseStatus::Lost`]: nothing was written; [`LeaseStatus::CancelRequested`]:
    /// written, and the run should stop here.
    ///
    /// `finish`: the run's output when this was its last step. The run then ends in the same
    /// write (`succeeded`, or `cancelled` if a cancel was asked for meanwhile).
    pub async fn journal_step(
        &self,
        lease: &Lease,
        result: &StepResult,
        finish: Option<&str>,
    ) -> Result<LeaseStatus, StoreError> {
        let write = Write::Step {
            lease: lease.clone(),
            result: result.clone(),
            finish: finish.map(str::to_owned),
        };
        match self.journal.submit(write).await? {
            Outcome::Step(status) => Ok(status),
            Outcome::Written(_) => Err(StoreError::Corrupt("journal outcome".into())),
        }
    }

    /// Records a failed step attempt and what follows it (a retry, or the dead letters),
    /// fenced. `false`: the lease was lost, nothing written.
    pub async fn fail_step(
        &self,
        lease: &Lease,
        result: &StepResult,
        after: &AfterFailure,
    ) -> Result<bool, StoreError> {
        let write = Write::Failure {
            lease: lease.clone(),
            result: result.clone(),
            after: after.clone(),
        };
        written(self.journal.submit(write).await?)
    }

    /// Journals one finished step of one `for_each` iteration, fenced (the run must still
    /// be at the `for_each`), adding its cost to the run's and extending the lease. An item
    /// that moves on resets the `for_each`'s failed attempts: each item's failures count
    /// against its body step's policy, not every item's together.
    pub async fn journal_item(
        &self,
        lease: &Lease,
        item: &ItemResult,
    ) -> Result<LeaseStatus, StoreError> {
        let write = Write::Item {
            lease: lease.clone(),
            item: item.clone(),
        };
        match self.journal.submit(write).await? {
            Outcome::Step(status) => Ok(status),
            Outcome::Written(_) => Err(StoreError::Corrupt("journal outcome".into())),
        }
    }

    /// Journals a `sleep` step and puts the run back in the queue until `run_at`, in one
    /// fenced write: the wait holds no worker and no lease, and a crash cannot cut it short.
    /// [`LeaseStatus::CancelRequested`]: a cancel was asked for meanwhile, and the same write
    /// cancelled the run instead.
    pub async fn journal_sleep(
        &self,
        lease: &Lease,
        result: &StepResult,
        run_at: i64,
    ) -> Result<LeaseStatus, StoreError> {
        let write = Write::Sleep {
            lease: lease.clone(),
            result: result.clone(),
            run_at,
        };
        match self.journal.submit(write).await? {
            Outcome::Step(status) => Ok(status),
            Outcome::Written(_) => Err(StoreError::Corrupt("journal outcome".into())),
        }
    }

    /// Ends the worker's hold on the run (see [`Finish`]), fenced. `false`: lease lost.
    pub async fn finish_run(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        let write = Write::End {
            lease: lease.clone(),
            finish: finish.clone(),
        };
        written(self.journal.submit(write).await?)
    }
}

fn written(outcome: Outcome) -> Result<bool, StoreError> {
    match outcome {
        Outcome::Written(done) => Ok(done),
        Outcome::Step(_) => Err(StoreError::Corrupt("journal outcome".into())),
    }
}

async fn batcher(context: Arc<Context>, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = receiver.lock().await.recv_many(&mut batch, MAX_BATCH).await;
        if received == 0 {
            return;
        }
        batch.sort_by(|a, b| {
            let (a, b) = (a.write.lease(), b.write.lease());
            (&a.tenant_id, &a.run_id).cmp(&(&b.tenant_id, &b.run_id))
        });
        let writes: Vec<&Write> = batch.iter().map(|p| &p.write).collect();
        match apply_all(&context, &writes).await {
            Ok((outcomes, released)) => {
                drop(writes);
                if released {
                    context.wakeups.notify_waiters();
                }
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                drop(writes);
                if batch.len() > 1 {
                    tracing::debug!(%error, writes = batch.len(), "a journal batch failed; writing one by one");
                }
                for pending in batch.drain(..) {
                    let result = apply_all(&context, &[&pending.write]).await;
                    if let Ok((_, true)) = &result {
                        context.wakeups.notify_waiters();
                    }
                    let _ = pending.reply.send(result.map(|(mut outcomes, _)| {
                        outcomes.pop().unwrap_or(Outcome::Written(false))
                    }));
                }
            }
        }
    }
}

/// Per tenant: runs that left `running`, and what the journaled attempts add to its day.
#[derive(Default)]
struct TenantTotals {
    left: i64,
    steps: i64,
    cost: Cost,
}

impl TenantTotals {
    fn add_step(&mut self, cost: &Cost) {
        self.steps += 1;
        self.cost.fuel_used = self.cost.fuel_used.saturating_add(cost.fuel_used);
        self.cost.duration_us = self.cost.duration_us.saturating_add(cost.duration_us);
        self.cost.outbound_requests = self
            .cost
            .outbound_requests
            .saturating_add(cost.outbound_requests);
        self.cost.outbound_bytes = self.cost.outbound_bytes.saturating_add(cost.outbound_bytes);
    }
}

/// Applies `writes` in one transaction and commits. Returns each write's outcome, and
/// whether any run left `running` (a slot freed, or a run back in the queue).
async fn apply_all(
    context: &Context,
    writes: &[&Write],
) -> Result<(Vec<Outcome>, bool), StoreError> {
    let mut tx: Tx<'static> = match context.kind {
        DbKind::Sqlite => context.writer.begin_with("BEGIN IMMEDIATE").await?,
        DbKind::Postgres => context.writer.begin().await?,
    };
    let now = now_ms();
    let mut totals: BTreeMap<&str, TenantTotals> = BTreeMap::new();
    // Journaled steps, the write of every step of every run, go in two statements for the
    // whole batch; the rest (and a second write about one run, which only a stale worker
    // makes) one by one.
    let mut outcomes: Vec<Option<Outcome>> = vec![None; writes.len()];
    let mut bulk = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (at, write) in writes.iter().enumerate() {
        if let Write::Step { lease, .. } = write
            && seen.insert((lease.tenant_id.as_str(), lease.run_id.as_str()))
        {
            bulk.push(at);
        }
    }
    // Iteration steps, many per run in a busy `for_each`: one fenced update per run and
    // one insert for all of them.
    let items: Vec<(usize, &Lease, &ItemResult)> = writes
        .iter()
        .enumerate()
        .filter_map(|(at, write)| match write {
            Write::Item { lease, item } => Some((at, lease, item)),
            _ => None,
        })
        .collect();
    for chunk in items.chunks(BULK_ROWS) {
        for (at, status) in journal_items_bulk(&mut tx, context.kind, chunk, now).await? {
            outcomes[at] = Some(Outcome::Step(status));
        }
    }
    for chunk in bulk.chunks(BULK_ROWS) {
        let steps: Vec<BulkStep<'_>> = chunk
            .iter()
            .filter_map(|&at| match writes[at] {
                Write::Step {
                    lease,
                    result,
                    finish,
                } => Some(BulkStep {
                    at,
                    lease,
                    result,
                    finish: finish.as_deref(),
                }),
                _ => None,
            })
            .collect();
        for (at, status) in journal_bulk(&mut tx, context.kind, &steps, now).await? {
            outcomes[at] = Some(Outcome::Step(status));
        }
    }
    for (at, write) in writes.iter().enumerate() {
        if outcomes[at].is_some() {
            continue;
        }
        let lease = write.lease();
        outcomes[at] = Some(match write {
            Write::Step {
                lease,
                result,
                finish,
            } if !bulk.contains(&at) => {
                Outcome::Step(journal(&mut tx, context.kind, lease, result, finish, now).await?)
            }
            // A bulk write the fence refused.
            Write::Step { .. } => Outcome::Step(LeaseStatus::Lost),
            Write::Failure {
                lease: _,
                result,
                after,
            } => {
                let done = failure(&mut tx, lease, result, after, now).await?;
                Outcome::Written(done)
            }
            Write::End { lease: _, finish } => {
                Outcome::Written(end(&mut tx, lease, finish, now).await?)
            }
            // Written in bulk above.
            Write::Item { .. } => Outcome::Step(LeaseStatus::Lost),
            Write::Sleep {
                lease: _,
                result,
                run_at,
            } => Outcome::Step(sleep(&mut tx, lease, result, *run_at, now).await?),
        });
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Written(false)))
        .collect();
    for (write, outcome) in writes.iter().zip(&outcomes) {
        let (left, cost) = match (write, outcome) {
            (Write::Step { result, finish, .. }, Outcome::Step(status))
                if *status != LeaseStatus::Lost =>
            {
                (finish.is_some(), Some(&result.cost))
            }
            (Write::Failure { result, .. }, Outcome::Written(true)) => (true, Some(&result.cost)),
            (Write::End { .. }, Outcome::Written(true)) => (true, None),
            (Write::Item { item, .. }, Outcome::Step(status)) if *status != LeaseStatus::Lost => {
                (false, Some(&item.cost))
            }
            (Write::Sleep { .. }, Outcome::Step(status)) if *status != LeaseStatus::Lost => {
                (true, None)
            }
            _ => (false, None),
        };
        if left || cost.is_some() {
            let totals = totals.entry(write.lease().tenant_id.as_str()).or_default();
            totals.left += i64::from(left);
            if let Some(cost) = cost {
                totals.add_step(cost);
            }
        }
    }
    // Per tenant, in tenant order: slots given back, then the day's usage; one statement
    // each for the whole batch.
    let left: Vec<(&str, i64)> = totals
        .iter()
        .filter(|(_, t)| t.left > 0)
        .map(|(tenant, t)| (*tenant, t.left))
        .collect();
    let released = !left.is_empty();
    release_slots_bulk(&mut tx, context.kind, &left).await?;
    let used: Vec<(&str, &TenantTotals)> = totals
        .iter()
        .filter(|(_, t)| t.steps > 0)
        .map(|(tenant, t)| (*tenant, t))
        .collect();
    add_usage_bulk(&mut tx, context.kind, &used, now).await?;
    if released {
        // Other processes' workers: a tenant at its cap may start its next run now.
        notify_runs(&mut tx, context.kind).await?;
    }
    tx.commit().await?;
    Ok((outcomes, released))
}

/// [`release_slots`] for several tenants (`(tenant, runs that left running)`, in tenant
/// order) in one statement.
async fn release_slots_bulk(
    tx: &mut Tx<'_>,
    kind: DbKind,
    left: &[(&str, i64)],
) -> Result<(), StoreError> {
    match left {
        [] => Ok(()),
        [(tenant_id, runs)] => release_slots(tx, tenant_id, *runs).await,
        _ => {
            const COLUMNS: &[(&str, Ty)] = &[("v_tenant", Ty::Text), ("v_left", Ty::Int)];
            let mut rows = JsonRows::new(COLUMNS);
            for (tenant_id, runs) in left {
                rows.push([Value::from(*tenant_id), Value::from(*runs)]);
            }
            let sql = format!(
                "UPDATE run_tenants SET running = CASE WHEN running > v.v_left \
                   THEN running - v.v_left ELSE 0 END \
                 FROM {v} WHERE run_tenants.tenant_id = v.v_tenant",
                v = rows.table(kind, 1, "v"),
            );
            sqlx::query(&sql)
                .bind(rows.param()?)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }
    }
}

/// What the batch's journaled attempts add to each tenant's day, in one statement.
async fn add_usage_bulk(
    tx: &mut Tx<'_>,
    kind: DbKind,
    used: &[(&str, &TenantTotals)],
    now: i64,
) -> Result<(), StoreError> {
    if used.is_empty() {
        return Ok(());
    }
    const COLUMNS: &[(&str, Ty)] = &[
        ("v_tenant", Ty::Text),
        ("v_steps", Ty::Int),
        ("v_fuel", Ty::Int),
        ("v_duration", Ty::Int),
        ("v_requests", Ty::Int),
        ("v_bytes", Ty::Int),
    ];
    let mut rows = JsonRows::new(COLUMNS);
    for (tenant_id, totals) in used {
        rows.push([
            Value::from(*tenant_id),
            Value::from(totals.steps),
            Value::from(totals.cost.fuel_used),
            Value::from(totals.cost.duration_us),
            Value::from(totals.cost.outbound_requests),
            Value::from(totals.cost.outbound_bytes),
        ]);
    }
    let sql = format!(
        "INSERT INTO usage_days (tenant_id, day, runs, steps, fuel_used, duration_us, \
           outbound_requests, outbound_bytes) \
         SELECT v.v_tenant, $2, 0, v.v_steps, v.v_fuel, v.v_duration, v.v_requests, v.v_bytes \
         FROM {v} WHERE true \
         ON CONFLICT (tenant_id, day) DO UPDATE SET runs = usage_days.runs + excluded.runs, \
           steps = usage_days.steps + excluded.steps, \
           fuel_used = usage_days.fuel_used + excluded.fuel_used, \
           duration_us = usage_days.duration_us + excluded.duration_us, \
           outbound_requests = usage_days.outbound_requests + excluded.outbound_requests, \
           outbound_bytes = usage_days.outbound_bytes + excluded.outbound_bytes",
        v = rows.table(kind, 1, "v"),
    );
    sqlx::query(&sql)
        .bind(rows.param()?)
        .bind(now.div_euclid(super::runs::DAY_MS))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A bulk `UPDATE runs ... FROM v`'s cost columns: a row's cost (`v_fuel`, `v_duration`,
/// `v_memory`, `v_requests`, `v_bytes`) added to the run's, the memory peak the higher.
const ADD_ROW_COST: &str = "fuel_used = fuel_used + v.v_fuel, \
    duration_us = duration_us + v.v_duration, \
    peak_memory_bytes = CASE WHEN peak_memory_bytes > v.v_memory \
      THEN peak_memory_bytes ELSE v.v_memory END, \
    outbound_requests = outbound_requests + v.v_requests, \
    outbound_bytes = outbound_bytes + v.v_bytes";

/// Rows per bulk statement: bounds one statement's parameter and the rows it locks.
const BULK_ROWS: usize = 256;

/// A journaled step in a bulk write, with its place in the batch.
struct BulkStep<'a> {
    at: usize,
    lease: &'a Lease,
    result: &'a StepResult,
    finish: Option<&'a str>,
}

/// [`journal`] for many runs at once (each at most once): one fenced `UPDATE ... FROM` for
/// every run, one multi-row upsert for the steps whose fence held. Returns each step's
/// place in the batch and its lease status.
async fn journal_bulk(
    tx: &mut Tx<'_>,
    kind: DbKind,
    steps: &[BulkStep<'_>],
    now: i64,
) -> Result<Vec<(usize, LeaseStatus)>, StoreError> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    const COLUMNS: &[(&str, Ty)] = &[
        ("v_tenant", Ty::Text),
        ("v_run", Ty::Text),
        ("v_epoch", Ty::Int),
        ("v_index", Ty::Int),
        ("v_fuel", Ty::Int),
        ("v_duration", Ty::Int),
        ("v_memory", Ty::Int),
        ("v_requests", Ty::Int),
        ("v_bytes", Ty::Int),
        ("v_last", Ty::Int),
        ("v_output", Ty::Text),
        ("v_lease_ms", Ty::Int),
        ("v_next", Ty::Int),
    ];
    let mut rows = JsonRows::new(COLUMNS);
    for step in steps {
        let cost = &step.result.cost;
        rows.push([
            Value::from(step.lease.tenant_id.as_str()),
            Value::from(step.lease.run_id.as_str()),
            Value::from(step.lease.epoch),
            Value::from(step.result.index),
            Value::from(cost.fuel_used),
            Value::from(cost.duration_us),
            Value::from(cost.peak_memory_bytes),
            Value::from(cost.outbound_requests),
            Value::from(cost.outbound_bytes),
            Value::from(i64::from(step.finish.is_some())),
            Value::from(step.finish),
            Value::from(step.lease.lease_ms),
            Value::from(step.result.next),
        ]);
    }
    // The values' columns are named apart from the runs' so the statement is unambiguous
    // in both databases (SQLite's RETURNING may not name the FROM table).
    let sql = format!(
        "UPDATE runs SET next_step = v.v_next, attempt = 0, updated_at = $2, \
           {add_cost}, \
           state = CASE WHEN v.v_last = 0 THEN state WHEN cancel_requested = 1 THEN 'cancelled' \
             ELSE 'succeeded' END, \
           output = CASE WHEN v.v_last = 1 AND cancel_requested = 0 THEN v.v_output \
             ELSE output END, \
           finished_at = CASE WHEN v.v_last = 1 THEN $2 ELSE finished_at END, \
           lease_owner = CASE WHEN v.v_last = 1 THEN NULL ELSE lease_owner END, \
           lease_until = CASE WHEN v.v_last = 1 THEN NULL ELSE {clock} + v.v_lease_ms END \
         FROM {v} \
         WHERE runs.tenant_id = v.v_tenant AND runs.id = v.v_run AND runs.lease_epoch = v.v_epoch \
           AND runs.state = 'running' AND runs.next_step = v.v_index \
         RETURNING tenant_id, id, cancel_requested",
        v = rows.table(kind, 1, "v"),
        clock = db_now(kind),
        add_cost = ADD_ROW_COST,
    );
    let rows = sqlx::query(&sql)
        .bind(rows.param()?)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    let mut fenced = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let tenant_id: String = row.try_get("tenant_id")?;
        let run_id: String = row.try_get("id")?;
        let cancel: i64 = row.try_get("cancel_requested")?;
        fenced.insert((tenant_id, run_id), cancel != 0);
    }
    let mut statuses = Vec::with_capacity(steps.len());
    let mut held = Vec::with_capacity(fenced.len());
    for step in steps {
        let key = (step.lease.tenant_id.clone(), step.lease.run_id.clone());
        let status = match fenced.get(&key) {
            None => LeaseStatus::Lost,
            Some(true) => LeaseStatus::CancelRequested,
            Some(false) => LeaseStatus::Held,
        };
        if status != LeaseStatus::Lost {
            held.push(step);
        }
        statuses.push((step.at, status));
    }
    write_steps_succeeded(tx, kind, &held, now).await?;
    Ok(statuses)
}

/// [`write_step`] of [`Attempt::Succeeded`] for many steps, in one statement.
async fn write_steps_succeeded(
    tx: &mut Tx<'_>,
    kind: DbKind,
    steps: &[&BulkStep<'_>],
    now: i64,
) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    const COLUMNS: &[(&str, Ty)] = &[
        ("v_tenant", Ty::Text),
        ("v_run", Ty::Text),
        ("v_index", Ty::Int),
        ("v_step", Ty::Text),
        ("v_status", Ty::Text),
        ("v_output", Ty::Text),
        ("v_logs", Ty::Text),
        ("v_fuel", Ty::Int),
        ("v_duration", Ty::Int),
        ("v_memory", Ty::Int),
        ("v_requests", Ty::Int),
        ("v_bytes", Ty::Int),
    ];
    let mut rows = JsonRows::new(COLUMNS);
    for step in steps {
        let (result, cost) = (step.result, &step.result.cost);
        rows.push([
            Value::from(step.lease.tenant_id.as_str()),
            Value::from(step.lease.run_id.as_str()),
            Value::from(result.index),
            Value::from(result.step_id.as_str()),
            Value::from(if result.skipped {
                "skipped"
            } else {
                "succeeded"
            }),
            Value::from(result.output.as_deref()),
            Value::from(result.logs.as_str()),
            Value::from(cost.fuel_used),
            Value::from(cost.duration_us),
            Value::from(cost.peak_memory_bytes),
            Value::from(cost.outbound_requests),
            Value::from(cost.outbound_bytes),
        ]);
    }
    // `WHERE true`: SQLite reads `ON CONFLICT` after `INSERT ... SELECT ... FROM` as a
    // join's constraint without it.
    let sql = format!(
        "INSERT INTO run_steps (tenant_id, run_id, step_index, step_id, status, attempts, output, \
           error, logs, fuel_used, duration_us, peak_memory_bytes, outbound_requests, \
           outbound_bytes, finished_at) \
         SELECT v.v_tenant, v.v_run, v.v_index, v.v_step, v.v_status, 1, v.v_output, NULL, \
           v.v_logs, v.v_fuel, v.v_duration, v.v_memory, v.v_requests, v.v_bytes, $2 \
         FROM {v} WHERE true \
         ON CONFLICT (tenant_id, run_id, step_index) DO UPDATE SET \
           status = excluded.status, attempts = run_steps.attempts + 1, \
           output = excluded.output, error = excluded.error, logs = excluded.logs, \
           fuel_used = run_steps.fuel_used + excluded.fuel_used, \
           duration_us = run_steps.duration_us + excluded.duration_us, \
           peak_memory_bytes = excluded.peak_memory_bytes, \
           outbound_requests = run_steps.outbound_requests + excluded.outbound_requests, \
           outbound_bytes = run_steps.outbound_bytes + excluded.outbound_bytes, \
           finished_at = excluded.finished_at",
        v = rows.table(kind, 1, "v"),
    );
    sqlx::query(&sql)
        .bind(rows.param()?)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn journal(
    tx: &mut Tx<'_>,
    kind: DbKind,
    lease: &Lease,
    result: &StepResult,
    finish: &Option<String>,
    now: i64,
) -> Result<LeaseStatus, StoreError> {
    let sql = format!(
        "UPDATE runs SET next_step = $14, attempt = 0, updated_at = $5, {cost}, \
           state = CASE WHEN $11 = 0 THEN state WHEN cancel_requested = 1 THEN 'cancelled' \
             ELSE 'succeeded' END, \
           output = CASE WHEN $11 = 1 AND cancel_requested = 0 THEN $12 ELSE output END, \
           finished_at = CASE WHEN $11 = 1 THEN $5 ELSE finished_at END, \
           lease_owner = CASE WHEN $11 = 1 THEN NULL ELSE lease_owner END, \
           lease_until = CASE WHEN $11 = 1 THEN NULL ELSE {clock} + $13 END \
         WHERE tenant_id = $1 AND id = $2 AND lease_epoch = $3 AND state = 'running' \
           AND next_step = $4 \
         RETURNING cancel_requested",
        cost = add_cost(6),
        clock = db_now(kind),
    );
    let query = sqlx::query(&sql)
        .bind(&lease.tenant_id)
        .bind(&lease.run_id)
        .bind(lease.epoch)
        .bind(result.index)
        .bind(now);
    let fenced = bind_cost(query, &result.cost)
        .bind(i64::from(finish.is_some()))
        .bind(finish.as_deref())
        .bind(lease.lease_ms)
        .bind(result.next)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(fenced) = fenced else {
        return Ok(LeaseStatus::Lost);
    };
    let status = if fenced.try_get::<i64, _>("cancel_requested")? != 0 {
        LeaseStatus::CancelRequested
    } else {
        LeaseStatus::Held
    };
    write_step(tx, lease, result, Attempt::Succeeded, now).await?;
    Ok(status)
}

/// Journals iteration steps (`(place in the batch, lease, item)`) in two statements: one
/// fenced `UPDATE runs ... FROM` per run (its items' costs summed, its lease extended, its
/// failed attempts reset), one `run_items` upsert for the items whose run's fence held.
async fn journal_items_bulk(
    tx: &mut Tx<'_>,
    kind: DbKind,
    items: &[(usize, &Lease, &ItemResult)],
    now: i64,
) -> Result<Vec<(usize, LeaseStatus)>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // Per run and fence: the items' costs together.
    let mut runs: BTreeMap<(&str, &str, i64, i64), (Cost, i64)> = BTreeMap::new();
    for (_, lease, item) in items {
        let key = (
            lease.tenant_id.as_str(),
            lease.run_id.as_str(),
            lease.epoch,
            item.index,
        );
        let entry = runs.entry(key).or_insert((Cost::default(), lease.lease_ms));
        entry.0 = entry.0.plus(item.cost);
    }
    const RUN_COLUMNS: &[(&str, Ty)] = &[
        ("v_tenant", Ty::Text),
        ("v_run", Ty::Text),
        ("v_epoch", Ty::Int),
        ("v_index", Ty::Int),
        ("v_fuel", Ty::Int),
        ("v_duration", Ty::Int),
        ("v_memory", Ty::Int),
        ("v_requests", Ty::Int),
        ("v_bytes", Ty::Int),
        ("v_lease_ms", Ty::Int),
    ];
    let mut rows = JsonRows::new(RUN_COLUMNS);
    for ((tenant, run, epoch, index), (cost, lease_ms)) in &runs {
        rows.push([
            Value::from(*tenant),
            Value::from(*run),
            Value::from(*epoch),
            Value::from(*index),
            Value::from(cost.fuel_used),
            Value::from(cost.duration_us),
            Value::from(cost.peak_memory_bytes),
            Value::from(cost.outbound_requests),
            Value::from(cost.outbound_bytes),
            Value::from(*lease_ms),
        ]);
    }
    let sql = format!(
        "UPDATE runs SET updated_at = $2, attempt = 0, \
           {add_cost}, \
           lease_until = {clock} + v.v_lease_ms \
         FROM {v} \
         WHERE runs.tenant_id = v.v_tenant AND runs.id = v.v_run AND runs.lease_epoch = v.v_epoch \
           AND runs.state = 'running' AND runs.next_step = v.v_index \
         RETURNING tenant_id, id, lease_epoch, cancel_requested",
        v = rows.table(kind, 1, "v"),
        clock = db_now(kind),
        add_cost = ADD_ROW_COST,
    );
    let fenced_rows = sqlx::query(&sql)
        .bind(rows.param()?)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    let mut fenced = std::collections::HashMap::with_capacity(fenced_rows.len());
    for row in &fenced_rows {
        let tenant_id: String = row.try_get("tenant_id")?;
        let run_id: String = row.try_get("id")?;
        let epoch: i64 = row.try_get("lease_epoch")?;
        let cancel: i64 = row.try_get("cancel_requested")?;
        fenced.insert((tenant_id, run_id, epoch), cancel != 0);
    }
    const ITEM_COLUMNS: &[(&str, Ty)] = &[
        ("v_tenant", Ty::Text),
        ("v_run", Ty::Text),
        ("v_index", Ty::Int),
        ("v_item", Ty::Int),
        ("v_body", Ty::Int),
        ("v_step", Ty::Text),
        ("v_status", Ty::Text),
        ("v_output", Ty::Text),
        ("v_logs", Ty::Text),
        ("v_fuel", Ty::Int),
        ("v_duration", Ty::Int),
        ("v_memory", Ty::Int),
        ("v_requests", Ty::Int),
        ("v_bytes", Ty::Int),
    ];
    let mut held = JsonRows::new(ITEM_COLUMNS);
    let mut statuses = Vec::with_capacity(items.len());
    for (at, lease, item) in items {
        let key = (lease.tenant_id.clone(), lease.run_id.clone(), lease.epoch);
        let status = match fenced.get(&key) {
            None => LeaseStatus::Lost,
            Some(true) => LeaseStatus::CancelRequested,
            Some(false) => LeaseStatus::Held,
        };
        statuses.push((*at, status));
        if status == LeaseStatus::Lost {
            continue;
        }
        let cost = &item.cost;
        held.push([
            Value::from(lease.tenant_id.as_str()),
            Value::from(lease.run_id.as_str()),
            Value::from(item.index),
            Value::from(item.item),
            Value::from(item.body_index),
            Value::from(item.step_id.as_str()),
            Value::from(if item.skipped { "skipped" } else { "succeeded" }),
            Value::from(item.output.as_deref()),
            Value::from(item.logs.as_str()),
            Value::from(cost.fuel_used),
            Value::from(cost.duration_us),
            Value::from(cost.peak_memory_bytes),
            Value::from(cost.outbound_requests),
            Value::from(cost.outbound_bytes),
        ]);
    }
    if held.is_empty() {
        return Ok(statuses);
    }
    // `WHERE true`: SQLite reads `ON CONFLICT` after `INSERT ... SELECT ... FROM` as a
    // join's constraint without it.
    let sql = format!(
        "INSERT INTO run_items (tenant_id, run_id, step_index, item, body_index, step_id, \
           status, output, logs, fuel_used, duration_us, peak_memory_bytes, outbound_requests, \
           outbound_bytes, finished_at) \
         SELECT v.v_tenant, v.v_run, v.v_index, v.v_item, v.v_body, v.v_step, v.v_status, \
           v.v_output, v.v_logs, v.v_fuel, v.v_duration, v.v_memory, v.v_requests, v.v_bytes, $2 \
         FROM {v} WHERE true \
         ON CONFLICT (tenant_id, run_id, step_index, item, body_index) DO UPDATE SET \
           status = excluded.status, output = excluded.output, logs = excluded.logs, \
           fuel_used = run_items.fuel_used + excluded.fuel_used, \
           duration_us = run_items.duration_us + excluded.duration_us, \
           peak_memory_bytes = excluded.peak_memory_bytes, \
           outbound_requests = run_items.outbound_requests + excluded.outbound_requests, \
           outbound_bytes = run_items.outbound_bytes + excluded.outbound_bytes, \
           finished_at = excluded.finished_at",
        v = held.table(kind, 1, "v"),
    );
    sqlx::query(&sql)
        .bind(held.param()?)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(statuses)
}

async fn sleep(
    tx: &mut Tx<'_>,
    lease: &Lease,
    result: &StepResult,
    run_at: i64,
    now: i64,
) -> Result<LeaseStatus, StoreError> {
    let fenced = sqlx::query(
        "UPDATE runs SET next_step = $5, attempt = 0, run_at = $6, \
           state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END, \
           finished_at = CASE WHEN cancel_requested = 1 THEN $7 ELSE finished_at END, \
           lease_owner = NULL, lease_until = NULL, updated_at = $7 \
         WHERE tenant_id = $1 AND id = $2 AND lease_epoch = $3 AND state = 'running' \
           AND next_step = $4 \
         RETURNING cancel_requested",
    )
    .bind(&lease.tenant_id)
    .bind(&lease.run_id)
    .bind(lease.epoch)
    .bind(result.index)
    .bind(result.next)
    .bind(run_at)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(fenced) = fenced else {
        return Ok(LeaseStatus::Lost);
    };
    write_step(tx, lease, result, Attempt::Succeeded, now).await?;
    Ok(if fenced.try_get::<i64, _>("cancel_requested")? != 0 {
        LeaseStatus::CancelRequested
    } else {
        LeaseStatus::Held
    })
}

async fn failure(
    tx: &mut Tx<'_>,
    lease: &Lease,
    result: &StepResult,
    after: &AfterFailure,
    now: i64,
) -> Result<bool, StoreError> {
    let (state, run_at, error, finished_at) = match after {
        AfterFailure::Retry { run_at } => (RunState::Retrying, *run_at, None, None),
        AfterFailure::Dead { error, .. } => (RunState::Dead, now, Some(error.as_str()), Some(now)),
    };
    let sql = format!(
        "UPDATE runs SET state = $5, attempt = attempt + 1, run_at = $6, error = $7, \
           finished_at = $8, lease_owner = NULL, lease_until = NULL, updated_at = $9, {} \
         WHERE tenant_id = $1 AND id = $2 AND lease_epoch = $3 AND state = 'running' \
           AND next_step = $4 \
         RETURNING attempt",
        add_cost(10)
    );
    let query = sqlx::query(&sql)
        .bind(&lease.tenant_id)
        .bind(&lease.run_id)
        .bind(lease.epoch)
        .bind(result.index)
        .bind(state.as_str())
        .bind(run_at)
        .bind(error)
        .bind(finished_at)
        .bind(now);
    let row = bind_cost(query, &result.cost)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let attempts: i64 = row.try_get("attempt")?;
    write_step(tx, lease, result, Attempt::Failed { attempts }, now).await?;
    if let AfterFailure::Dead {
        handler, notice, ..
    } = after
    {
        if let Some(handler) = handler {
            queue_handler(tx, lease, handler, now).await?;
        }
        queue_notice(tx, lease, notice, now).await?;
    }
    Ok(true)
}

/// Queues the notice of a run's death for the tenant's dead-letter webhook, if it has one
/// (see `notices.rs`); its id names the lease epoch, so a write tried again adds nothing.
/// The run's notice of an earlier death not yet delivered is superseded: a run has at most
/// one pending, so replays that die again cannot pile them up.
async fn queue_notice(
    tx: &mut Tx<'_>,
    lease: &Lease,
    notice: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dead_letter_notices SET state = 'superseded', updated_at = $3 \
         WHERE tenant_id = $1 AND run_id = $2 AND state = 'pending'",
    )
    .bind(&lease.tenant_id)
    .bind(&lease.run_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO dead_letter_notices (tenant_id, id, run_id, payload, state, attempts, \
           next_at, created_at, updated_at) \
         SELECT tenant_id, $3, $2, $4, 'pending', 0, $5, $5, $5 \
         FROM dead_letter_hooks WHERE tenant_id = $1 \
         ON CONFLICT (tenant_id, id) DO NOTHING",
    )
    .bind(&lease.tenant_id)
    .bind(&lease.run_id)
    .bind(format!("dead_{}_{}", lease.run_id, lease.epoch))
    .bind(notice)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Queues a dead run's failure handler, once per death (its key names the lease epoch the
/// run died under, so a write tried again queues nothing more).
async fn queue_handler(
    tx: &mut Tx<'_>,
    lease: &Lease,
    handler: &FailureHandler,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO runs (tenant_id, id, workflow_id, workflow_version, state, input, \
           idempotency_key, trace_id, trace_parent, run_at, created_at, updated_at, handles) \
         SELECT tenant_id, $3, workflow_id, workflow_version, 'queued', $4, $5, trace_id, \
           trace_parent, $6, $6, $6, id \
         FROM runs WHERE tenant_id = $1 AND id = $2 \
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
    )
    .bind(&lease.tenant_id)
    .bind(&lease.run_id)
    .bind(&handler.id)
    .bind(&handler.input)
    .bind(format!("failure:{}:{}", lease.run_id, lease.epoch))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO run_tenants (tenant_id, last_turn) VALUES ($1, 0) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(&lease.tenant_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn end(
    tx: &mut Tx<'_>,
    lease: &Lease,
    finish: &Finish,
    now: i64,
) -> Result<bool, StoreError> {
    let (state, output, finished_at, run_at) = match finish {
        Finish::Succeeded { output } => {
            (RunState::Succeeded, Some(output.as_str()), Some(now), now)
        }
        Finish::Cancelled => (RunState::Cancelled, None, Some(now), now),
        Finish::Released => (RunState::Queued, None, None, now),
        Finish::Deferred { delay_ms } => {
            (RunState::Queued, None, None, now.saturating_add(*delay_ms))
        }
    };
    let done = sqlx::query(
        "UPDATE runs SET state = $4, output = COALESCE($5, output), finished_at = $6, \
           run_at = $7, lease_owner = NULL, lease_until = NULL, updated_at = $8 \
         WHERE tenant_id = $1 AND id = $2 AND lease_epoch = $3 AND state = 'running'",
    )
    .bind(&lease.tenant_id)
    .bind(&lease.run_id)
    .bind(lease.epoch)
    .bind(state.as_str())
    .bind(output)
    .bind(finished_at)
    .bind(run_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How a step's journal row counts the attempt being written.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    /// It succeeded: one more than the failed attempts already in the row, if any.
    Succeeded,
    /// It failed: the run's count of failed attempts, after this one.
    Failed { attempts: i64 },
}

/// Writes (or overwrites) the step's journal row; costs add up over attempts.
async fn write_step(
    tx: &mut Tx<'_>,
    lease: &Lease,
    result: &StepResult,
    attempt: Attempt,
    now: i64,
) -> Result<(), StoreError> {
    let (status, attempts, one_more) = match attempt {
        Attempt::Succeeded if result.skipped => ("skipped", 1, 1_i64),
        Attempt::Succeeded => ("succeeded", 1, 1_i64),
        Attempt::Failed { attempts } => ("failed", attempts, 0),
    };
    sqlx::query(
        "INSERT INTO run_steps (tenant_id, run_id, step_index, step_id, status, attempts, output, \
           error, logs, fuel_used, duration_us, peak_memory_bytes, outbound_requests, \
           outbound_bytes, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (tenant_id, run_id, step_index) DO UPDATE SET \
           status = excluded.status, \
           attempts = CASE WHEN $16 = 1 THEN run_steps.attempts + 1 ELSE excluded.attempts END, \
           output = excluded.output, error = excluded.error, logs = excluded.logs, \
           fuel_used = run_steps.fuel_used + excluded.fuel_used, \
           duration_us = run_steps.duration_us + excluded.duration_us, \
           peak_memory_bytes = excluded.peak_memory_bytes, \
           outbound_requests = run_steps.outbound_requests + excluded.outbound_requests, \
           outbound_bytes = run_steps.outbound_bytes + excluded.outbound_bytes, \
           finished_at = excluded.finished_at",
    )
    .bind(&lease.tenant_id)
    .bind(&lease.run_id)
    .bind(result.index)
    .bind(&result.step_id)
    .bind(status)
    .bind(attempts)
    .bind(result.output.as_deref())
    .bind(result.error.as_deref())
    .bind(&result.logs)
    .bind(result.cost.fuel_used)
    .bind(result.cost.duration_us)
    .bind(result.cost.peak_memory_bytes)
    .bind(result.cost.outbound_requests)
    .bind(result.cost.outbound_bytes)
    .bind(now)
    .bind(one_more)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
