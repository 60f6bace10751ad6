//! [`Workers`]: the dispatcher that claims runs in batches into free worker slots, the lease
//! keeper that holds each claimed run's lease from claim to outcome, the reaper, and one
//! run's execution (`run.rs`).
//!
//! One dispatcher per process waits for free slots and for runs to become claimable (a
//! wake-up from this process, a `NOTIFY` from another on PostgreSQL, or the poll), claims as
//! many runs as slots are free in one transaction, shared out among tenants by `share.rs`,
//! and starts each on its own task. The lease keeper (`lease.rs`) renews every lease the
//! process holds in one statement per heartbeat. Completion writes are group-committed by
//! the store, so neither the claim nor the journal costs a commit per run.

mod failure;
mod for_each;
mod lease;
mod log_budget;
mod run;
mod share;
mod sleep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_core::Pipeline;
use airlock_store::{Claimed, Store};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

pub use log_budget::{MARKER_LOG_BYTES, RUN_LOG_BUDGET_BYTES};
pub use run::step_key;

use lease::Leases;

/// How workers run.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Runs this process works on at once; 0: no workers (an API-only process).
    pub workers: usize,
    /// How long a claim holds without a renewal: a killed process's runs are claimable
    /// again this long after its last renewal (plus one reaper pass).
    pub lease: Duration,
    /// How often the process renews the leases of all the runs it holds.
    pub heartbeat: Duration,
    /// How often an idle process looks at the queue without being woken.
    pub poll: Duration,
    /// How often expired leases are re-queued.
    pub reap_every: Duration,
    /// At shutdown, how long running steps may take to finish before they are stopped and
    /// their runs released.
    pub grace: Duration,
    /// Sending dead-letter notices to tenants' webhooks (a process with workers sends them).
    pub notices: crate::NoticeOptions,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            // Half the default instance pool (64): a run's step is mostly waiting on its
            // upstream, so 8 left most of the pool idle while a burst of deliveries queued
            // (8,000 signed webhooks on PostgreSQL: received-to-started p95 8.6 s with 8,
            // 4.1 s with 32); the other half stays for synchronous invocations.
            workers: 32,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            reap_every: Duration::from_secs(5),
            grace: Duration::from_secs(10),
            notices: crate::NoticeOptions::default(),
        }
    }
}

/// Runs claimed in one round trip, at most.
const MAX_CLAIM: usize = 64;

/// The running workers of this process.
pub struct Workers {
    /// Stop claiming; finish the current step, then release the run.
    stop: CancellationToken,
    /// Stop the current step's guest now and release the run.
    abort: CancellationToken,
    /// The dispatcher and the runs it started.
    tasks: TaskTracker,
    /// The lease keeper, the reaper and the listener: stopped once every run is released.
    background: CancellationToken,
    background_tasks: TaskTracker,
    grace: Duration,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// What a run's task shares with the dispatcher.
pub(crate) struct Engine {
    pipeline: Pipeline,
    options: WorkerOptions,
    leases: Arc<Leases>,
    stop: CancellationToken,
    abort: CancellationToken,
    /// Runs this process holds, per tenant: what `share.rs` divides by.
    held: Mutex<HashMap<String, usize>>,
    /// Workflow definitions by (tenant, workflow, version): versions never change.
    definitions: run::Definitions,
}

impl Workers {
    /// Starts the dispatcher, the lease keeper, the reaper and (PostgreSQL) the listener for
    /// other processes' enqueues and cancels, on the current tokio runtime. With
    /// `options.workers == 0`, none of them.
    pub fn start(pipeline: Pipeline, options: WorkerOptions) -> Workers {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();
        let background_tasks = TaskTracker::new();
        let process = uuid::Uuid::new_v4().simple().to_string();
        if options.workers > 0 {
            let store = pipeline.store().clone();
            let leases = Arc::new(Leases::new(
                store.clone(),
                process,
                options.lease,
                options.heartbeat,
            ));
            let listen_stop = background.clone();
            let listener = store.clone();
            background_tasks.spawn(async move { listener.listen_for_runs(listen_stop).await });
            background_tasks.spawn(reaper(store, options.reap_every, background.clone()));
            background_tasks.spawn(leases.clone().keep(background.clone()));
            let engine = Arc::new(Engine {
                pipeline,
                options: options.clone(),
                leases,
                stop: stop.clone(),
                abort: abort.clone(),
                held: Mutex::new(HashMap::new()),
                definitions: run::Definitions::default(),
            });
            tasks.spawn(dispatch(engine, tasks.clone()));
        }
        background_tasks.close();
        Workers {
            stop,
            abort,
            tasks,
            background,
            background_tasks,
            grace: options.grace,
        }
    }

    /// Stops claiming at once (call it first thing at shutdown), without waiting.
    pub fn stop_claiming(&self) {
        self.stop.cancel();
    }

    /// Stops claiming, lets running steps finish for up to the grace period, then stops
    /// the rest; every run held is released to the queue for another process.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.abort.cancel();
            self.tasks.wait().await;
        }
        self.background.cancel();
        self.background_tasks.wait().await;
    }
}

async fn reaper(store: Store, every: Duration, stop: CancellationToken) {
    loop {
        match store.reap().await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "re-queued runs whose lease expired"),
            Err(error) => tracing::warn!(%error, "reaping expired run leases failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Claims runs into free slots until `stop`.
async fn dispatch(engine: Arc<Engine>, tasks: TaskTracker) {
    let workers = engine.options.workers;
    let slots = Arc::new(Semaphore::new(workers));
    let store = engine.pipeline.store().clone();
    loop {
        // Registered before the claim, so a wake-up between an empty claim and the wait is
        // not lost.
        let wakeup = store.wakeups().clone();
        let notified = wakeup.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let first = tokio::select! {
            _ = engine.stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let mut permits = vec![first];
        while permits.len() < MAX_CLAIM {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let free = permits.len();
        let held = engine.held_snapshot();
        let asked = Instant::now();
        let claimed = store
            .claim_runs(
                engine.leases.owner(),
                free,
                engine.leases.lease_ms(),
                |candidates| share::allot(candidates, &held, workers, free),
            )
            .await;
        let full = match claimed {
            Ok(claimed) => {
                let full = claimed.len() == free;
                for claimed in claimed {
                    let Some(permit) = permits.pop() else { break };
                    engine.start_run(&tasks, claimed, asked, permit);
                }
                full
            }
            Err(error) => {
                tracing::warn!(%error, "claiming runs failed");
                false
            }
        };
        drop(permits);
        if full {
            continue;
        }
        tokio::select! {
            _ = engine.stop.cancelled() => return,
            _ = &mut notified => {}
            _ = tokio::time::sleep(engine.options.poll) => {}
        }
    }
}

impl Engine {
    fn store(&self) -> &Store {
        self.pipeline.store()
    }

    fn held_snapshot(&self) -> HashMap<String, usize> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn start_run(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        claimed: Claimed,
        asked: Instant,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let tenant = claimed.lease.tenant_id.clone();
        *self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.clone())
            .or_default() += 1;
        let mut hold = self.leases.hold(&claimed.lease, asked);
        hold.created_at = claimed.run.created_at;
        hold.trace_id = claimed.run.trace_id.clone().unwrap_or_default();
        let engine = self.clone();
        let span = tracing::info_span!(
            "run",
            run = %claimed.lease.run_id,
            tenant = %claimed.lease.tenant_id
        );
        tasks.spawn(
            async move {
                engine.execute(claimed, hold).await;
                let mut held = engine.held.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = held.get_mut(&tenant) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        held.remove(&tenant);
                    }
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}
