//! [`Scheduler`]: fires cron triggers' ticks, exactly once across every process.
//!
//! Every process with a scheduler polls for triggers with a tick due, sleeping until the
//! earliest tick (at most `poll`), or until a trigger changes in this process. It claims a
//! trigger's due ticks with [`airlock_store::Store::fire_ticks`], which moves the trigger's
//! `next_fire_at` by compare-and-swap in the transaction that creates the runs: of several
//! processes that see the same tick, one creates its run and the others change nothing.
//! Each tick costs one of the tenant's `runs_per_hour`, charged before the claim and refunded
//! when the claim is lost or the tick is skipped or refused.
//!
//! Triggers are claimed independently: one transaction each, up to [`CONCURRENT_CLAIMS`] at
//! once, so a claim that is slow (a lock wait, bounded by the store's lock timeout) does not
//! hold back the ticks of the others. A trigger whose row another transaction holds is not
//! claimed and is looked at again after [`HELD_RETRY_MS`].

use std::collections::HashMap;
use std::time::Duration;

use airlock_core::Charge;
use airlock_store::{Tick, TickPlan, TriggerRecord};
use airlock_telemetry::{CronTick, SpanKind};
use airlock_triggers::schedule::{self, MissedTicks, Schedule};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{Overlap, Runs, RunsError};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Fire cron ticks in this process.
    pub enabled: bool,
    /// The longest sleep between two looks at the triggers (a trigger created by another
    /// process is seen within it).
    pub poll: Duration,
    /// A tick at most this late is on time and fires whatever the missed-ticks policy; an
    /// older one was missed (the service was down) and follows the policy.
    pub grace: Duration,
    /// Triggers handled per look.
    pub batch: i64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(60),
            batch: 100,
        }
    }
}

/// The running scheduler of this process.
pub struct Scheduler {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

const PRUNE_EVERY_MS: i64 = 3_600_000;
const HOUR_MS: i64 = 3_600_000;
/// The longest stretch of ticks refused in one write when the tenant's hour is used up.
const MAX_JUMP_MS: i64 = 60_000;
/// A trigger whose claim failed is retried after this, doubling up to `MAX_BACKOFF_MS`.
const BACKOFF_MS: i64 = 500;
const MAX_BACKOFF_MS: i64 = 30_000;
/// Claims in flight at once in one process.
pub const CONCURRENT_CLAIMS: usize = 8;
/// A trigger whose row was held by another transaction is tried again after this (the claim
/// holding it may be stuck; the trigger catches up once it ends, under its missed-ticks
/// policy).
pub const HELD_RETRY_MS: i64 = 250;
/// The shortest sleep after a look that left work undone (a trigger failing or backing
/// off), so a failing trigger cannot make the loop spin.
const MIN_SLEEP_TROUBLED_MS: i64 = 200;

impl Scheduler {
    pub fn start(runs: Runs, options: SchedulerOptions) -> Scheduler {
        let stop = CancellationToken::new();
        let task = options
            .enabled
            .then(|| tokio::spawn(run(runs, options, stop.clone())));
        Scheduler { stop, task }
    }

    /// Stops after the batch in hand (a claim is one transaction: all or nothing).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn run(runs: Runs, options: SchedulerOptions, stop: CancellationToken) {
    let store = runs.pipeline().store().clone();
    let wakeups = store.scheduler_wakeups().clone();
    let grace_ms = i64::try_from(options.grace.as_millis()).unwrap_or(i64::MAX);
    let poll_ms = i64::try_from(options.poll.as_millis()).unwrap_or(1_000);
    let mut pruned_at = 0;
    // Triggers whose last claim failed: when to try again, and how many failures in a row.
    let mut backoff: HashMap<String, (i64, u32)> = HashMap::new();
    loop {
        // Registered before the look, so a change made during it still wakes the sleep.
        let woken = wakeups.notified();
        let now = airlock_store::now_ms();
        let mut troubled = false;
        // Room for the backing-off triggers too, so they cannot fill the batch and starve
        // the others.
        let limit = options
            .batch
            .saturating_add(i64::try_from(backoff.len()).unwrap_or(i64::MAX));
        match store.due_triggers(now, limit).await {
            Ok(due) => {
                let mut waiting = Vec::with_capacity(due.len());
                for trigger in due {
                    if backoff.get(&trigger.id).is_some_and(|(at, _)| *at > now) {
                        troubled = true;
                    } else {
                        waiting.push(trigger);
                    }
                }
                let mut waiting = waiting.into_iter();
                let mut claims = tokio::task::JoinSet::new();
                loop {
                    while claims.len() < CONCURRENT_CLAIMS && !stop.is_cancelled() {
                        let Some(trigger) = waiting.next() else { break };
                        let runs = runs.clone();
                        claims.spawn(async move {
                            let outcome = fire(&runs, &trigger, grace_ms).await;
                            (trigger.id, outcome)
                        });
                    }
                    // A claim is one transaction: those in flight finish, even at shutdown.
                    let Some(joined) = claims.join_next().await else {
                        break;
                    };
                    let (id, outcome) = match joined {
                        Ok(done) => done,
                        Err(error) => {
                            troubled = true;
                            tracing::error!(%error, "a cron claim task failed");
                            continue;
                        }
                    };
                    match outcome {
                        Ok(Claim::Done) => {
                            backoff.remove(&id);
                        }
                        Ok(Claim::Held) => {
                            troubled = true;
                            let failures = backoff.get(&id).map_or(0, |(_, n)| *n);
                            backoff.insert(id, (now + HELD_RETRY_MS, failures));
                        }
                        Err(error) => {
                            troubled = true;
                            let failures = backoff.get(&id).map_or(0, |(_, n)| *n) + 1;
                            let wait = BACKOFF_MS
                                .saturating_mul(1 << failures.min(10))
                                .min(MAX_BACKOFF_MS);
                            tracing::warn!(trigger = %id, %error, retry_in_ms = wait, "cannot fire a cron tick");
                            backoff.insert(id, (now + wait, failures));
                        }
                    }
                }
                if stop.is_cancelled() {
                    return;
                }
            }
            Err(error) => {
                troubled = true;
                tracing::warn!(%error, "cannot read due cron triggers");
            }
        }
        // Forget triggers that were deleted or paused while backing off.
        backoff.retain(|_, (at, _)| *at > now - MAX_BACKOFF_MS);
        if now - pruned_at > PRUNE_EVERY_MS {
            pruned_at = now;
            if let Err(error) = store.prune_ticks(now).await {
                tracing::warn!(%error, "cannot prune old cron ticks");
            }
        }
        let floor = if troubled { MIN_SLEEP_TROUBLED_MS } else { 0 };
        let sleep_ms = match store.next_tick().await {
            Ok(Some(next)) => (next - airlock_store::now_ms()).clamp(floor, poll_ms.max(floor)),
            _ => poll_ms,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = woken => {}
            () = tokio::time::sleep(Duration::from_millis(sleep_ms.unsigned_abs())) => {}
        }
    }
}

/// What became of a look at one due trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Its due ticks were handled, here or by another process.
    Done,
    /// Nothing claimed: its row was held (PostgreSQL) or another process moved it first.
    /// Looked at again shortly (the lost race's trigger is no longer due then).
    Held,
}

/// Fires one trigger's due ticks. Charges each tick to `runs_per_hour` first; a tick the
/// tenant cannot pay for, or that the queue refuses, is refused and counted.
async fn fire(runs: &Runs, trigger: &TriggerRecord, grace_ms: i64) -> Result<Claim, RunsError> {
    let (Some(expression), Some(zone), Some(next)) = (
        &trigger.expression,
        &trigger.time_zone,
        trigger.next_fire_at,
    ) else {
        return Ok(Claim::Done);
    };
    let schedule = Schedule::parse(expression, zone).map_err(|e| RunsError::Invalid {
        field: "expression".into(),
        detail: e.to_string(),
    })?;
    let policy = trigger
        .missed_policy
        .as_deref()
        .and_then(MissedTicks::parse)
        .unwrap_or_default();
    let cap = trigger
        .missed_cap
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(crate::triggers::DEFAULT_MISSED_CAP);
    let now = airlock_store::now_ms();
    let due = schedule::due(&schedule, next, now, policy, cap, grace_ms);
    let pipeline = runs.pipeline();
    let t = trigger.tenant_id.as_str();
    let quota = pipeline.quota(t).await?;
    let queue_full = runs
        .queue_depth()
        .await
        .map(|depth| depth >= runs.options.max_queue_depth)
        .unwrap_or(false);
    let mut charges = Vec::with_capacity(due.fire.len());
    let mut ticks = Vec::with_capacity(due.fire.len());
    let mut refused = 0u64;
    let mut next_fire_at = due.next;
    let mut blocked = false;
    // A filter the trigger was saved with (checked then); one that no longer parses
    // filters nothing out.
    let filter = trigger
        .filter
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|value| airlock_model::Predicate::parse(&value).ok());
    let mut filtered = 0u64;
    for at in due.fire {
        let input = json!({
            "source": "cron",
            "trigger_id": trigger.id,
            "scheduled_at": at,
        });
        // A tick the filter does not match makes no run and costs nothing, like a
        // delivery a webhook's filter drops; the schedule moves past it all the same.
        if let Some(filter) = &filter {
            let steps = std::collections::BTreeMap::new();
            if !filter.eval(airlock_model::predicate::Context::new(&input, &steps)) {
                filtered += 1;
                continue;
            }
        }
        // A suspended tenant's ticks are refused, not kept for later: resuming does not
        // fire a burst of what came due meanwhile.
        if queue_full || blocked || quota.suspended {
            refused += 1;
            continue;
        }
        match pipeline.charge(t, &quota, Charge::Run).await {
            Ok(charged) => charges.push(charged),
            Err(airlock_core::CoreError::QuotaExceeded { retry_after_s, .. }) => {
                // The hour is used up: jump to its end in this one write, counting the
                // ticks in between as refused, rather than claiming (and writing) each.
                blocked = true;
                refused += 1;
                // `runs_per_hour` is a clock-hour window and Retry-After is rounded up to
                // whole seconds: the hour's turn is the start of the hour it lands in.
                let retry_at = now.saturating_add(
                    i64::try_from(retry_after_s.saturating_mul(1000)).unwrap_or(i64::MAX),
                );
                let hour_turn = (retry_at - retry_at.rem_euclid(HOUR_MS)).max(now + 1);
                // At most a minute at a time: this process's refusal may be a moment's (other
                // processes' charges for the same tick, refunded when they lose the claim).
                let until = hour_turn.min(now + MAX_JUMP_MS);
                let (skipped, next) = ticks_before(&schedule, due.next, until);
                refused += skipped;
                next_fire_at = next;
                continue;
            }
            Err(other) => {
                refund_all(runs, t, charges);
                return Err(other.into());
            }
        }
        let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
        // A tick starts a trace: the run's steps are children of its span.
        let mut span = runs
            .metrics()
            .spans()
            .start_entry("cron.tick", SpanKind::Producer, None);
        span.set("airlock.tenant", t);
        span.set("airlock.trigger", trigger.id.as_str());
        span.set("airlock.run", run_id.as_str());
        span.set("airlock.scheduled_at_ms", at);
        ticks.push(Tick {
            scheduled_at: at,
            run_id,
            input: input.to_string(),
            idempotency_key: format!("cron:{}:{at}", trigger.id),
            trace_id: Some(span.context().trace_id.to_string()),
            trace_parent: Some(span.context().stored_parent()),
        });
    }
    let plan = TickPlan {
        ticks,
        missed: due.missed,
        next_fire_at,
        skip_overlap: trigger.overlap.as_deref().and_then(Overlap::parse) == Some(Overlap::Skip),
        max_queued: runs.options.max_queued_per_tenant,
        refused,
    };
    match pipeline.store().fire_ticks(trigger, &plan).await {
        Ok(Some(fired)) => {
            let metrics = runs.metrics();
            let created = fired.created.len() as u64;
            let late = (plan
                .ticks
                .iter()
                .filter(|tick| now.saturating_sub(tick.scheduled_at) > grace_ms)
                .count() as u64)
                .min(created);
            metrics.cron_ticks(CronTick::Late, late);
            metrics.cron_ticks(CronTick::Fired, created - late);
            metrics.runs_created_n("cron", created);
            let missed = due
                .missed
                .saturating_add(plan.refused)
                .saturating_add(fired.refused);
            metrics.cron_ticks(CronTick::Missed, missed);
            metrics.cron_ticks(CronTick::Filtered, filtered);
            if plan.refused + fired.refused > 0 {
                tracing::info!(trigger = %trigger.id, tenant = t, refused = plan.refused + fired.refused, "cron ticks refused (runs_per_hour, a full queue, or the tenant's waiting runs)");
            }
            // Skipped and refused ticks were charged and made no run.
            let unused = charges.len().saturating_sub(fired.created.len());
            refund_all(runs, t, charges.into_iter().take(unused).collect());
            if due.missed > 0 {
                tracing::info!(trigger = %trigger.id, missed = due.missed, truncated = due.missed_truncated, "cron ticks missed while no process ran");
            }
            Ok(Claim::Done)
        }
        Ok(None) => {
            refund_all(runs, t, charges);
            Ok(Claim::Held)
        }
        Err(error) => {
            refund_all(runs, t, charges);
            Err(error.into())
        }
    }
}

/// Most ticks counted when jumping over an hour the tenant cannot pay for (an every-second
/// schedule has 3,600).
const MAX_JUMP_COUNT: u64 = 100_000;

/// The ticks from `from` up to (not including) `until`, counted (at most
/// [`MAX_JUMP_COUNT`]), and the first tick at or after `until`.
fn ticks_before(schedule: &Schedule, from: Option<i64>, until: i64) -> (u64, Option<i64>) {
    let mut count = 0;
    let mut at = from;
    while let Some(t) = at
        && t < until
        && count < MAX_JUMP_COUNT
    {
        count += 1;
        at = schedule.next_after(t);
    }
    match at {
        Some(t) if t < until => (count, schedule.next_after(until - 1)),
        other => (count, other),
    }
}

fn refund_all(runs: &Runs, tenant: &str, charges: Vec<Option<i64>>) {
    for charged in charges {
        runs.pipeline().refund(tenant, charged);
    }
}
