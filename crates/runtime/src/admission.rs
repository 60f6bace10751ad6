//! Admission: at most `pool_size` invocations run at once (one pool slot each), at most the
//! tenant's `max_concurrent_runs` of one tenant, and, while other tenants hold or want slots,
//! no more than its fair share of the pool. Callers that may not run wait in their tenant's
//! queue, each for at most `queue_timeout`. Waiters are bounded in total (`queue_capacity`)
//! and per tenant (`tenant_queue_capacity`); beyond either the caller is refused with
//! `overloaded` at once.
//!
//! The share rule. `reserve` = max(1, `pool_size` / 8) slots; `share` = max(1,
//! ceil((`pool_size` - `reserve`) / active)), where the active tenants are those holding a
//! slot or waiting for one. A tenant under its limit may take a free slot if it holds fewer
//! than its share, or if at least `reserve` slots stay free after it. So a tenant alone, or
//! a few tenants that want everything, leave the reserve free, and a tenant that arrives
//! finds a slot at once whatever the others' limits; the limit is a ceiling, the share is
//! what a tenant gets under contention. A freed slot goes to the waiting tenant holding the
//! fewest slots (equals in turn, round-robin), if the rule lets it in: a tenant that grew
//! past its share while it was alone shrinks to it as its invocations end, since running
//! invocations are never taken back. The price: one tenant alone, or a few saturating ones,
//! use `pool_size` - `reserve` slots, not all of them.
//!
//! A [`Permit`] returns its slot and its tenant's count when dropped. A waiter that gives up
//! (its timeout, or its future dropped because the client went away) leaves its queue; a
//! permit handed to it in that instant is dropped with its channel and so returned too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::{ErrorKind, InvokeError};

#[cfg(test)]
mod tests;

/// How many invocations run and wait, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionOptions {
    /// Invocations running at once, all tenants together (the pool's slots).
    pub pool_size: usize,
    /// Invocations waiting at once, all tenants together.
    pub queue_capacity: usize,
    /// Invocations of one tenant waiting at once, so one tenant cannot fill the queue.
    pub tenant_queue_capacity: usize,
    /// How long one invocation may wait.
    pub queue_timeout: Duration,
}

impl AdmissionOptions {
    /// Slots only a tenant under its share may take: what a newcomer finds free while
    /// others saturate the pool.
    fn reserve(&self) -> usize {
        (self.pool_size / 8).max(1)
    }

    /// Slots a tenant may hold before the reserve is closed to it, with `active` tenants
    /// holding or waiting (the pool less its reserve, divided among them).
    fn share(&self, active: usize) -> usize {
        self.pool_size
            .saturating_sub(self.reserve())
            .div_ceil(active.max(1))
            .max(1)
    }
}

#[derive(Debug)]
pub struct Admission {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    options: AdmissionOptions,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    waiting: usize,
    next_id: u64,
    /// The active tenants: those holding a slot or waiting for one (no others are kept).
    tenants: HashMap<Arc<str>, Tenant>,
    /// Tenants with at least one waiter, in turn order among those holding equally many.
    ring: VecDeque<Arc<str>>,
}

#[derive(Debug, Default)]
struct Tenant {
    running: usize,
    /// The limit of the tenant's latest caller: limits are read per invocation, so a change
    /// applies from the next one (including to the waiters already queued).
    limit: usize,
    waiters: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<Permit>,
}

/// One running invocation's slot. Dropping it frees the slot and hands it on.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    tenant: Arc<str>,
    /// `false` once its counts were taken back by hand (a grant nobody could receive).
    armed: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.shared.lock();
            state.release(&self.tenant);
            state.dispatch(&self.shared);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn permit(self: &Arc<Self>, tenant: Arc<str>) -> Permit {
        Permit {
            shared: self.clone(),
            tenant,
            armed: true,
        }
    }
}

impl State {
    fn acquire(&mut self, tenant: &str) {
        self.running += 1;
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.running += 1;
        }
    }

    fn release(&mut self, tenant: &str) {
        self.running = self.running.saturating_sub(1);
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.running = t.running.saturating_sub(1);
        }
        self.forget_if_idle(tenant);
    }

    fn forget_if_idle(&mut self, tenant: &str) {
        if self
            .tenants
            .get(tenant)
            .is_some_and(|t| t.running == 0 && t.waiters.is_empty())
        {
            self.tenants.remove(tenant);
        }
    }

    /// Whether a tenant holding `held` slots may take a free one now, its limit aside: under
    /// its share it may take any; at or over it, only while `reserve` slots stay free after.
    fn may_take(&self, options: &AdmissionOptions, held: usize) -> bool {
        let free = options.pool_size.saturating_sub(self.running);
        free > 0 && (held < options.share(self.tenants.len()) || free > options.reserve())
    }

    /// The waiting tenant under its limit that holds the fewest slots, the first in turn
    /// among equals: its place in the ring and what it holds.
    fn next_in_line(&self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (at, name) in self.ring.iter().enumerate() {
            let Some(t) = self.tenants.get(name) else {
                continue;
            };
            if t.waiters.is_empty() || t.running >= t.limit {
                continue;
            }
            if best.is_none_or(|(_, held)| t.running < held) {
                best = Some((at, t.running));
                if t.running == 0 {
                    break;
                }
            }
        }
        best
    }

    /// Hands free slots to waiters, each to the tenant next in line. Runs after every change
    /// that may let a waiter in (a slot freed, a tenant gone so the shares grew, a limit
    /// raised), so no waiter that could run is left waiting while a slot is free.
    fn dispatch(&mut self, shared: &Arc<Shared>) {
        while let Some((at, held)) = self.next_in_line() {
            // The rule only tightens with what a tenant holds: if the tenant holding the
            // fewest may not take a slot, no waiter may.
            if !self.may_take(&shared.options, held) {
                break;
            }
            let Some(name) = self.ring.remove(at) else {
                break;
            };
            let Some(tenant) = self.tenants.get_mut(&name) else {
                continue;
            };
            let Some(waiter) = tenant.waiters.pop_front() else {
                continue;
            };
            // Served: behind the others that hold as many.
            if !tenant.waiters.is_empty() {
                self.ring.push_back(name.clone());
            }
            self.waiting = self.waiting.saturating_sub(1);
            self.acquire(&name);
            if let Err(mut permit) = waiter.grant.send(shared.permit(name.clone())) {
                // The receiver is gone. A waiter leaves its queue before dropping its
                // receiver, so this is not expected; take the counts back here, since the
                // permit's own drop would take this lock again.
                permit.armed = false;
                self.release(&name);
            }
        }
    }

    /// Removes waiter `id` of `tenant` if it is still queued.
    fn leave(&mut self, tenant: &str, id: u64, shared: &Arc<Shared>) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        let before = t.waiters.len();
        t.waiters.retain(|w| w.id != id);
        if t.waiters.len() < before {
            self.waiting = self.waiting.saturating_sub(1);
        }
        if t.waiters.is_empty() {
            self.ring.retain(|n| &**n != tenant);
        }
        self.forget_if_idle(tenant);
        // A tenant gone raises the others' shares, which may let a waiter into the reserve.
        self.dispatch(shared);
    }
}

/// A caller in a queue. Dropping it (timeout, or the invocation's future dropped) takes it
/// out of the queue first; only then is its receiver, with any permit in it, dropped.
struct Waiting {
    shared: Arc<Shared>,
    tenant: Arc<str>,
    id: u64,
    grant: oneshot::Receiver<Permit>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.shared
            .lock()
            .leave(&self.tenant, self.id, &self.shared);
    }
}

impl Admission {
    pub fn new(options: AdmissionOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                options,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Waits for a slot for one invocation of `tenant`, whose concurrency limit is `limit`
    /// (at least 1).
    pub async fn enter(&self, tenant: &str, limit: u32) -> Result<Permit, InvokeError> {
        let options = self.shared.options;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
        let mut waiting = {
            let mut state = self.shared.lock();
            let name: Arc<str> = match state.tenants.get_key_value(tenant) {
                Some((name, _)) => name.clone(),
                None => tenant.into(),
            };
            // Kept from here on (a newcomer counts among the active tenants at once), until
            // it holds and waits for nothing.
            let entry = state.tenants.entry(name.clone()).or_default();
            entry.limit = limit;
            let (held, queued) = (entry.running, entry.waiters.len());
            // Behind its own waiters, never past them.
            if queued == 0 && held < limit && state.may_take(&options, held) {
                state.acquire(&name);
                return Ok(self.shared.permit(name));
            }
            if queued >= options.tenant_queue_capacity || state.waiting >= options.queue_capacity {
                state.forget_if_idle(&name);
                // Refused, but a raised limit may still let the tenant's waiters in.
                state.dispatch(&self.shared);
                let message = if queued >= options.tenant_queue_capacity {
                    format!(
                        "this tenant already has {held} invocations running and {queued} waiting"
                    )
                } else {
                    format!(
                        "all instance slots are busy and {} invocations are already waiting",
                        state.waiting
                    )
                };
                return Err(InvokeError::new(ErrorKind::Overloaded, message));
            }
            let id = state.next_id;
            state.next_id += 1;
            let (grant, receiver) = oneshot::channel();
            if let Some(entry) = state.tenants.get_mut(&name) {
                entry.waiters.push_back(Waiter { id, grant });
                if entry.waiters.len() == 1 {
                    state.ring.push_back(name.clone());
                }
            }
            state.waiting += 1;
            // A raised limit may let this tenant's waiters (this one included) in at once.
            state.dispatch(&self.shared);
            Waiting {
                shared: self.shared.clone(),
                tenant: name,
                id,
                grant: receiver,
            }
        };
        match tokio::time::timeout(options.queue_timeout, &mut waiting.grant).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(InvokeError::new(
                ErrorKind::Overloaded,
                "the invocation left the admission queue without a slot",
            )),
            Err(_elapsed) => {
                // A slot may have been handed over just as the wait ran out: leave the queue,
                // then take it rather than refuse with a slot in hand.
                self.shared
                    .lock()
                    .leave(&waiting.tenant, waiting.id, &self.shared);
                match waiting.grant.try_recv() {
                    Ok(permit) => Ok(permit),
                    Err(_) => Err(InvokeError::new(
                        ErrorKind::Overloaded,
                        format!(
                            "no instance slot became free within {} ms",
                            options.queue_timeout.as_millis()
                        ),
                    )),
                }
            }
        }
    }

    /// Pool slots free right now.
    pub fn available(&self) -> usize {
        let state = self.shared.lock();
        self.shared.options.pool_size.saturating_sub(state.running)
    }

    /// Callers waiting right now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiting
    }

    #[cfg(test)]
    fn tenants_tracked(&self) -> usize {
        self.shared.lock().tenants.len()
    }

    /// Panics unless the counts agree with the queues and no waiter that could run waits
    /// while a slot is free.
    #[cfg(test)]
    fn assert_consistent(&self) {
        let state = self.shared.lock();
        let running: usize = state.tenants.values().map(|t| t.running).sum();
        assert_eq!(state.running, running, "pool count against tenants' counts");
        let waiting: usize = state.tenants.values().map(|t| t.waiters.len()).sum();
        assert_eq!(state.waiting, waiting, "waiting count against the queues");
        assert!(
            state
                .tenants
                .values()
                .all(|t| t.running > 0 || !t.waiters.is_empty()),
            "an idle tenant is still kept"
        );
        let mut ring: Vec<&str> = state.ring.iter().map(|n| &**n).collect();
        ring.sort_unstable();
        let mut queued: Vec<&str> = state
            .tenants
            .iter()
            .filter(|(_, t)| !t.waiters.is_empty())
            .map(|(n, _)| &**n)
            .collect();
        queued.sort_unstable();
        assert_eq!(ring, queued, "the ring holds each tenant with waiters once");
        if let Some((_, held)) = state.next_in_line() {
            assert!(
                !state.may_take(&self.shared.options, held),
                "a waiter that may run is waiting beside a free slot"
            );
        }
    }
}
