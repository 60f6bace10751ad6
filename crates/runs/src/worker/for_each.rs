//! A `for_each` step: its body run once per item, `concurrency` items at a time, each body
//! step of each item journaled as it finishes (`run_items`, fenced like every journal
//! write), so a crash or a retry resumes only what is not journaled; an item's steps keep
//! their idempotency keys (`<run>:<body step>:<item>`) across attempts and processes.
//!
//! Items wait for the tenant's invocation slots like any invocation; a for_each whose
//! concurrency (with the tenant's other runs) outgrows them waits for a slot instead of
//! failing as `overloaded`.
//!
//! The first failure stops new items from starting; the items already running finish and
//! are journaled; then the failure is recorded against the `for_each` (retried by the
//! failing body step's policy, or dead-lettered naming the item).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use airlock_model::predicate::Context;
use airlock_model::program::{BodyStep, Op};
use airlock_model::workflow::build_template;
use airlock_store::{Cost, ItemResult, Lease, LeaseStatus};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::Value;

use super::Engine;
use super::failure::mapping_error;
use super::lease::Hold;
use super::log_budget::LogBudget;
use super::run::{Attempt, Done, Step, Stop, index_i64, no_logs};
use crate::retry::StepError;

/// The longest wait for a free invocation slot between two tries of an item's step.
const MAX_BUSY_WAIT: Duration = Duration::from_millis(500);

/// The most output a `for_each`'s items journal together (every body step's), and so the
/// most its own output (their array) can hold.
pub const MAX_FOR_EACH_OUTPUT_BYTES: usize = 8 * 1024 * 1024;

/// A `for_each` node's parts.
pub(super) struct Iterate<'a> {
    pub(super) items: &'a Value,
    pub(super) max_items: Option<u32>,
    pub(super) concurrency: Option<u32>,
    pub(super) body: &'a [BodyStep],
}

/// How one item ended in this hold.
enum ItemEnd {
    /// Every body step journaled: the item's output (its last body step's).
    Done(Value),
    /// Not started: an earlier failure or stop came first.
    NotRun,
    Stopped(Stop),
    Failed {
        body_index: usize,
        error: StepError,
        cost: Cost,
        logs: String,
    },
}

/// What the items of one `for_each` share in this hold.
struct Shared<'b> {
    /// Set by the first failure or stop: items not started yet do not start.
    halt: AtomicBool,
    budget: Mutex<&'b mut LogBudget>,
    /// Bytes of output the `for_each`'s items have journaled: past
    /// [`MAX_FOR_EACH_OUTPUT_BYTES`] it fails (`output_too_large`) at once, so its journal
    /// stays bounded whatever its item count.
    bytes: AtomicUsize,
    /// An item step was journaled in this hold: the run's failed attempts were reset.
    progressed: AtomicBool,
}

/// What one item runs with.
struct Item<'a> {
    index: usize,
    value: &'a Value,
    /// Its body steps journaled before (by body index: output, `None` if skipped).
    journaled: BTreeMap<usize, Option<Value>>,
}

impl Engine {
    /// Runs a `for_each`; `None` when the run does not go on in this hold.
    pub(super) async fn for_each(
        &self,
        lease: &Lease,
        hold: &Hold,
        step: &Step<'_>,
        each: &Iterate<'_>,
        context: Context<'_>,
        log_budget: &mut LogBudget,
    ) -> Option<Done> {
        let items = match build_template(each.items, context) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(_) => Err(StepError::new(
                "invalid_input",
                "for_each `items` is not an array",
                false,
            )),
            Err(error) => Err(mapping_error(&error)),
        };
        let quota = match self.pipeline.quota(&lease.tenant_id).await {
            Ok(quota) => quota,
            Err(_) => {
                self.stopped(lease, hold, Stop::StoreDown).await;
                return None;
            }
        };
        let cap = each.max_items.unwrap_or(u32::MAX).min(quota.max_iterations);
        // `max_iterations` bounds the run's items in all, its earlier for_eachs' included:
        // one charged run cannot buy more invocations than that by repeating for_eachs.
        let before: usize = step
            .program
            .nodes
            .iter()
            .take(step.index)
            .filter(|node| matches!(node.op, Op::ForEach { .. }))
            .filter_map(|node| context.steps.get(&node.id))
            .map(|output| output.as_array().map_or(0, Vec::len))
            .sum();
        let run_cap = usize::try_from(quota.max_iterations).unwrap_or(usize::MAX);
        let items = items.and_then(|items| {
            if items.len() > usize::try_from(cap).unwrap_or(usize::MAX) {
                Err(StepError::new(
                    "too_many_items",
                    format!(
                        "for_each has {} items; at most {cap} (the step's `max_items` and the tenant's `max_iterations`)",
                        items.len()
                    ),
                    false,
                ))
            } else if before.saturating_add(items.len()) > run_cap {
                Err(StepError::new(
                    "too_many_items",
                    format!(
                        "for_each has {} items after {before} in the run's earlier for_eachs; a run has at most {run_cap} (the tenant's `max_iterations`)",
                        items.len()
                    ),
                    false,
                ))
            } else {
                Ok(items)
            }
        });
        let items = match items {
            Ok(items) => items,
            Err(error) => {
                self.dead_now(lease, hold, step, &error).await;
                return None;
            }
        };
        let concurrency = each
            .concurrency
            .unwrap_or(1)
            .min(quota.runtime.max_concurrent_runs)
            .max(1);
        let journaled = match self
            .store()
            .run_items(
                &lease.tenant_id,
                &lease.run_id,
                Some(index_i64(step.index)),
                None,
            )
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "loading a for_each's iterations failed; the run goes back to the queue");
                self.stopped(lease, hold, Stop::StoreDown).await;
                return None;
            }
        };
        let mut done: Vec<BTreeMap<usize, Option<Value>>> = vec![BTreeMap::new(); items.len()];
        let mut bytes = 0_usize;
        for (_, row) in journaled {
            bytes = bytes.saturating_add(row.output.as_deref().map_or(0, str::len));
            let (Ok(item), Ok(body_index)) =
                (usize::try_from(row.item), usize::try_from(row.body_index))
            else {
                continue;
            };
            let output = match row.output.as_deref().map(serde_json::from_str::<Value>) {
                Some(Ok(output)) if row.status == "succeeded" => Some(output),
                Some(Err(_)) => {
                    let error =
                        StepError::new("internal", "a journaled iteration does not parse", false);
                    self.dead_now(lease, hold, step, &error).await;
                    return None;
                }
                _ => None,
            };
            if let Some(slot) = done.get_mut(item) {
                slot.insert(body_index, output);
            }
        }
        let shared = Shared {
            halt: AtomicBool::new(false),
            budget: Mutex::new(log_budget),
            bytes: AtomicUsize::new(bytes),
            progressed: AtomicBool::new(false),
        };
        // Up to `concurrency` items at once, polled in this run's task: the guests' work
        // is the runtime's, each item waiting on its own invocation and journal write.
        let concurrency = usize::try_from(concurrency).unwrap_or(1);
        let mut waiting = items.iter().zip(done).enumerate();
        let mut running = FuturesUnordered::new();
        let mut ends: Vec<(usize, ItemEnd)> = Vec::with_capacity(items.len());
        loop {
            while running.len() < concurrency {
                let Some((index, (value, journaled))) = waiting.next() else {
                    break;
                };
                let item = Item {
                    index,
                    value,
                    journaled,
                };
                running.push(self.iteration(lease, hold, step, each.body, item, context, &shared));
            }
            match running.next().await {
                Some(end) => ends.push(end),
                None => break,
            }
        }
        let mut outputs = vec![Value::Null; items.len()];
        let mut failed: Option<(usize, usize, StepError, Cost, String)> = None;
        let mut stop: Option<Stop> = None;
        for (index, end) in ends {
            match end {
                ItemEnd::Done(output) => {
                    if let Some(slot) = outputs.get_mut(index) {
                        *slot = output;
                    }
                }
                ItemEnd::NotRun => {}
                // The most drastic stop wins: a lost lease writes nothing at all.
                ItemEnd::Stopped(why) => stop = Some(stop.map_or(why, |s| s.min(why))),
                ItemEnd::Failed {
                    body_index,
                    error,
                    cost,
                    logs,
                } => {
                    // The lowest item's failure is the one recorded; every failed item's
                    // cost is charged with it.
                    failed = match failed {
                        Some((i, b, e, c, l)) if i < index => Some((i, b, e, c.plus(cost), l)),
                        Some((.., c, _)) => Some((index, body_index, error, c.plus(cost), logs)),
                        None => Some((index, body_index, error, cost, logs)),
                    };
                }
            }
        }
        if let Some(stop) = stop {
            if stop == Stop::Lost {
                hold.lost();
            }
            self.stopped(lease, hold, stop).await;
            return None;
        }
        if let Some((item, body_index, error, cost, logs)) = failed {
            let body = &each.body[body_index];
            // Items journaled in this hold reset the run's failed attempts (`journal_item`):
            // this failure is the first since.
            let fresh = Step {
                attempt_failures: if shared.progressed.load(Ordering::Relaxed) {
                    0
                } else {
                    step.attempt_failures
                },
                ..*step
            };
            self.fail_with_policy(
                lease,
                hold,
                &fresh,
                &body.action,
                &body.id,
                Some(item),
                error,
                cost,
                logs,
            )
            .await;
            return None;
        }
        let output = Value::Array(outputs);
        if output.to_string().len() > MAX_FOR_EACH_OUTPUT_BYTES {
            self.dead_now(lease, hold, step, &too_large()).await;
            return None;
        }
        Some(Done {
            output,
            cost: Cost::default(),
            logs: no_logs(),
        })
    }

    /// One item: its body steps in order, each journaled as it finishes.
    #[allow(clippy::too_many_arguments)]
    async fn iteration(
        &self,
        lease: &Lease,
        hold: &Hold,
        step: &Step<'_>,
        body: &[BodyStep],
        item: Item<'_>,
        context: Context<'_>,
        shared: &Shared<'_>,
    ) -> (usize, ItemEnd) {
        let index = item.index;
        (
            index,
            self.iterate(lease, hold, step, body, item, context, shared)
                .await,
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn iterate(
        &self,
        lease: &Lease,
        hold: &Hold,
        step: &Step<'_>,
        body: &[BodyStep],
        item: Item<'_>,
        context: Context<'_>,
        shared: &Shared<'_>,
    ) -> ItemEnd {
        let halt = &shared.halt;
        let mut locals = BTreeMap::new();
        let mut last = Value::Null;
        for (body_index, body_step) in body.iter().enumerate() {
            if let Some(journaled) = item.journaled.get(&body_index) {
                last = journaled.clone().unwrap_or(Value::Null);
                if let Some(output) = journaled {
                    locals.insert(body_step.id.clone(), output.clone());
                }
                continue;
            }
            if halt.load(Ordering::Relaxed) {
                return ItemEnd::NotRun;
            }
            if self.stop.is_cancelled() {
                // Shutting down: the items not done are another process's.
                halt.store(true, Ordering::Relaxed);
                return ItemEnd::Stopped(Stop::Aborted);
            }
            if self.suspended(&lease.tenant_id).await {
                // As between steps: back to the queue until the operator resumes the tenant.
                halt.store(true, Ordering::Relaxed);
                return ItemEnd::Stopped(Stop::Aborted);
            }
            let here = context.iteration(item.value, &locals);
            let mut result = ItemResult {
                index: index_i64(step.index),
                item: index_i64(item.index),
                body_index: index_i64(body_index),
                step_id: body_step.id.clone(),
                skipped: true,
                output: None,
                logs: no_logs(),
                cost: Cost::default(),
            };
            let mut output = Value::Null;
            if body_step.when.as_ref().is_none_or(|when| when.eval(here)) {
                let input = match body_step.action.build_input(here) {
                    Ok(input) => input,
                    Err(error) => {
                        halt.store(true, Ordering::Relaxed);
                        return ItemEnd::Failed {
                            body_index,
                            error: mapping_error(&error),
                            cost: Cost::default(),
                            logs: no_logs(),
                        };
                    }
                };
                let key = item_key(&lease.run_id, &body_step.id, item.index);
                let mut waited = Duration::from_millis(20);
                let attempt = loop {
                    let attempt = self
                        .attempt(
                            lease,
                            hold,
                            step,
                            &body_step.id,
                            Some(item.index),
                            &body_step.action,
                            input.clone(),
                            key.clone(),
                        )
                        .await;
                    // The tenant's invocations are all taken (this for_each's own items
                    // among them, up to its concurrency): back-pressure, not a failure. No
                    // guest ran; wait for a slot, no attempt counted.
                    let busy = matches!(&attempt, Attempt::Ran { result: Err(error), .. }
                        if error.kind == "overloaded");
                    if !busy {
                        break attempt;
                    }
                    match hold.status() {
                        LeaseStatus::Held => {}
                        LeaseStatus::CancelRequested => break Attempt::Stopped(Stop::Cancel),
                        LeaseStatus::Lost => break Attempt::Stopped(Stop::Lost),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(waited) => {}
                        _ = self.abort.cancelled() => break Attempt::Stopped(Stop::Aborted),
                    }
                    waited = (waited * 2).min(MAX_BUSY_WAIT);
                };
                let journal = |logs| {
                    shared
                        .budget
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .journal(logs)
                };
                match attempt {
                    Attempt::Stopped(stop) => {
                        halt.store(true, Ordering::Relaxed);
                        return ItemEnd::Stopped(stop);
                    }
                    Attempt::Ran {
                        result: Err(error),
                        cost,
                        logs,
                    } => {
                        halt.store(true, Ordering::Relaxed);
                        return ItemEnd::Failed {
                            body_index,
                            error,
                            cost,
                            logs: journal(&logs),
                        };
                    }
                    Attempt::Ran {
                        result: Ok(value),
                        cost,
                        logs,
                    } => {
                        let text = value.to_string();
                        let total = shared
                            .bytes
                            .fetch_add(text.len(), Ordering::Relaxed)
                            .saturating_add(text.len());
                        if total > MAX_FOR_EACH_OUTPUT_BYTES {
                            halt.store(true, Ordering::Relaxed);
                            return ItemEnd::Failed {
                                body_index,
                                error: too_large(),
                                cost,
                                logs: journal(&logs),
                            };
                        }
                        result.skipped = false;
                        result.output = Some(text);
                        result.logs = journal(&logs);
                        result.cost = cost;
                        output = value;
                    }
                }
            }
            let written = self
                .persist(hold, "journaling an iteration", || {
                    self.store().journal_item(lease, &result)
                })
                .await;
            match written {
                Some(LeaseStatus::Held) => shared.progressed.store(true, Ordering::Relaxed),
                Some(LeaseStatus::CancelRequested) => {
                    halt.store(true, Ordering::Relaxed);
                    return ItemEnd::Stopped(Stop::Cancel);
                }
                Some(LeaseStatus::Lost) => {
                    halt.store(true, Ordering::Relaxed);
                    return ItemEnd::Stopped(Stop::Lost);
                }
                None => {
                    halt.store(true, Ordering::Relaxed);
                    return ItemEnd::Stopped(Stop::Gone);
                }
            }
            if !result.skipped {
                locals.insert(body_step.id.clone(), output.clone());
            }
            last = output;
        }
        ItemEnd::Done(last)
    }
}

fn too_large() -> StepError {
    StepError::new(
        "output_too_large",
        format!(
            "the outputs the for_each's items journaled are over {MAX_FOR_EACH_OUTPUT_BYTES} bytes together"
        ),
        false,
    )
}

/// The idempotency key of one item's body step: the same on every attempt, in every
/// process, so an upstream can recognise the repeat of an item re-run after a crash.
pub fn item_key(run_id: &str, step_id: &str, item: usize) -> String {
    format!("{run_id}:{step_id}:{item}")
}
