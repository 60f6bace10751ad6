//! The lease keeper: one task per process that holds the lease of every run the process
//! claimed, from its claim to its outcome.
//!
//! Every `heartbeat` (and at once when a cancel is asked for, in this process or another) it
//! renews all of the process's leases in one statement ([`Store::renew_leases`]) and tells
//! each run what it found: still held, cancel requested, or lost (the run is not among the
//! process's leases any more: expired and re-queued, claimed again elsewhere, finished). A
//! run's status is a `watch` channel its worker selects on while the guest runs, so a lost
//! lease or a cancel stops the guest at once, not at the end of the step.
//!
//! While the database does not answer, a run's lease is taken as lost once the last renewal
//! that reached the database (or the claim, or a journal write, each of which extends it)
//! is `lease` old: the reaper elsewhere may have re-queued it by then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use airlock_store::{Lease, LeaseStatus, Store};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type Key = (String, String);

pub(super) struct Leases {
    store: Store,
    owner: String,
    lease: Duration,
    heartbeat: Duration,
    held: Mutex<HashMap<Key, Entry>>,
}

struct Entry {
    epoch: i64,
    /// When this process started holding it: a renewal asked before it cannot have seen it.
    since: Instant,
    /// Until when the lease surely holds: the last extension that reached the database, plus
    /// the lease.
    until: Instant,
    status: watch::Sender<LeaseStatus>,
}

/// A run's lease as its worker sees it. Dropping it stops keeping the lease.
pub(super) struct Hold {
    leases: Arc<Leases>,
    key: Key,
    epoch: i64,
    status: watch::Receiver<LeaseStatus>,
    /// When the held run was created (ms): its age when it ends is the run-duration metric.
    pub(super) created_at: i64,
    /// The held run's trace, for its log lines.
    pub(super) trace_id: String,
}

impl Leases {
    pub(super) fn new(store: Store, owner: String, lease: Duration, heartbeat: Duration) -> Self {
        Leases {
            store,
            owner,
            lease,
            heartbeat,
            held: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    pub(super) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    fn held(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts keeping a lease just claimed (`claimed_at`: before the claim was sent).
    pub(super) fn hold(self: &Arc<Self>, lease: &Lease, claimed_at: Instant) -> Hold {
        let (status, receiver) = watch::channel(LeaseStatus::Held);
        let key = (lease.tenant_id.clone(), lease.run_id.clone());
        self.held().insert(
            key.clone(),
            Entry {
                epoch: lease.epoch,
                since: Instant::now(),
                until: claimed_at + self.lease,
                status,
            },
        );
        Hold {
            leases: self.clone(),
            key,
            epoch: lease.epoch,
            status: receiver,
            created_at: airlock_store::now_ms(),
            trace_id: String::new(),
        }
    }

    /// Renews every held lease every heartbeat, and at once when asked to check (a cancel),
    /// until `stop`.
    pub(super) async fn keep(self: Arc<Self>, stop: CancellationToken) {
        let checks = self.store.lease_checks().clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.heartbeat) => {}
                _ = checks.notified() => {}
            }
            self.renew().await;
        }
    }

    async fn renew(&self) {
        if self.held().is_empty() {
            return;
        }
        let asked = Instant::now();
        match self.store.renew_leases(&self.owner, self.lease_ms()).await {
            Ok(renewed) => {
                let renewed: HashMap<Key, (i64, bool)> = renewed
                    .into_iter()
                    .map(|l| ((l.tenant_id, l.run_id), (l.epoch, l.cancel_requested)))
                    .collect();
                for (key, entry) in self.held().iter_mut() {
                    match renewed.get(key) {
                        Some(&(epoch, cancel)) if epoch == entry.epoch => {
                            entry.until = asked + self.lease;
                            if cancel {
                                entry.status.send_replace(LeaseStatus::CancelRequested);
                            }
                        }
                        _ if entry.since < asked => {
                            entry.status.send_replace(LeaseStatus::Lost);
                        }
                        // Claimed while the renewal was on its way: judged next time.
                        _ => {}
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "renewing run leases failed");
                let now = Instant::now();
                for entry in self.held().values_mut() {
                    if now >= entry.until {
                        entry.status.send_replace(LeaseStatus::Lost);
                    }
                }
            }
        }
    }

    /// A fenced write that extends the lease reached the database (`asked`: before it was
    /// sent).
    fn extended(&self, key: &Key, epoch: i64, asked: Instant) {
        if let Some(entry) = self.held().get_mut(key)
            && entry.epoch == epoch
        {
            entry.until = entry.until.max(asked + self.lease);
        }
    }
}

impl Hold {
    /// What the keeper last found.
    pub(super) fn status(&self) -> LeaseStatus {
        *self.status.borrow()
    }

    /// A watch of the lease for one of several steps running at once (a `for_each`'s
    /// iterations).
    pub(super) fn watch(&self) -> Watch {
        Watch(self.status.clone())
    }

    /// A journal write extended the lease (`asked`: before it was sent).
    pub(super) fn extended(&self, asked: Instant) {
        self.leases.extended(&self.key, self.epoch, asked);
    }

    /// The lease is surely gone (a fenced write found it so): stop keeping it.
    pub(super) fn lost(&self) {
        if let Some(entry) = self.leases.held().get(&self.key)
            && entry.epoch == self.epoch
        {
            entry.status.send_replace(LeaseStatus::Lost);
        }
    }
}

/// Waits for what would stop a step: the lease lost or a cancel asked for.
pub(super) struct Watch(watch::Receiver<LeaseStatus>);

impl Watch {
    /// Waits until the lease is lost or a cancel is asked for, and says which.
    pub(super) async fn interrupted(&mut self) -> LeaseStatus {
        loop {
            let status = *self.0.borrow_and_update();
            if status != LeaseStatus::Held {
                return status;
            }
            if self.0.changed().await.is_err() {
                // The keeper is gone (shutdown): nothing will interrupt any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.leases.held();
        if held.get(&self.key).is_some_and(|e| e.epoch == self.epoch) {
            held.remove(&self.key);
        }
    }
}
