//! Admission: at most `pool_size` invocations run at once (one pool slot each), and at most
//! the tenant's `max_concurrent_runs` of one tenant. Callers beyond either wait in their
//! tenant's queue, each for at most `queue_timeout`; a freed slot goes round-robin to the
//! next tenant that has a waiter and is under its own limit, so a noisy tenant queues behind
//! itself. Waiters are bounded in total (`queue_capacity`) and per tenant
//! (`tenant_queue_capacity`); beyond either the caller is refused with `overloaded` at once.
//!
//! A [`Permit`] returns its slot and its tenant's count when dropped. A waiter that gives up
//! (its timeout, or its future dropped because the client went away) leaves its queue; a
//! permit handed to it in that instant is dropped with its channel and so returned too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::{ErrorKind, InvokeError};

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
    tenants: HashMap<Arc<str>, Tenant>,
    /// Tenants with at least one waiter, in the order they are next served.
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

    /// Hands free slots to waiters, one per tenant in turn, skipping tenants at their limit.
    /// Runs after every change that may let a waiter in, so no waiter that could run is left
    /// waiting while a slot is free.
    fn dispatch(&mut self, shared: &Arc<Shared>) {
        let mut idle_turns = 0;
        while self.running < shared.options.pool_size && idle_turns < self.ring.len() {
            let Some(name) = self.ring.pop_front() else {
                break;
            };
            let Some(tenant) = self.tenants.get_mut(&name) else {
                continue;
            };
            if tenant.running >= tenant.limit {
                self.ring.push_back(name);
                idle_turns += 1;
                continue;
            }
            let Some(waiter) = tenant.waiters.pop_front() else {
                continue;
            };
            self.waiting = self.waiting.saturating_sub(1);
            if !tenant.waiters.is_empty() {
                self.ring.push_back(name.clone());
            }
            idle_turns = 0;
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
    fn leave(&mut self, tenant: &str, id: u64) {
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
        self.shared.lock().leave(&self.tenant, self.id);
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
            let running = state.running;
            let name: Arc<str> = match state.tenants.get_key_value(tenant) {
                Some((name, _)) => name.clone(),
                None => tenant.into(),
            };
            let entry = state.tenants.entry(name.clone()).or_default();
            entry.limit = limit;
            if entry.waiters.is_empty() && entry.running < limit && running < options.pool_size {
                state.acquire(&name);
                return Ok(self.shared.permit(name));
            }
            let queued = entry.waiters.len();
            if queued >= options.tenant_queue_capacity || state.waiting >= options.queue_capacity {
                state.forget_if_idle(&name);
                let message = if queued >= options.tenant_queue_capacity {
                    format!(
                        "this tenant already has {} invocations running and {queued} waiting",
                        entry_running(&state, &name)
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
                self.shared.lock().leave(&waiting.tenant, waiting.id);
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
}

fn entry_running(state: &State, tenant: &str) -> usize {
    state.tenants.get(tenant).map_or(0, |t| t.running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn admission(pool_size: usize, queue_capacity: usize, tenant_queue: usize) -> Arc<Admission> {
        Arc::new(Admission::new(AdmissionOptions {
            pool_size,
            queue_capacity,
            tenant_queue_capacity: tenant_queue,
            queue_timeout: Duration::from_secs(60),
        }))
    }

    /// Queues one caller of `tenant` in a task, and returns once it is in its queue.
    async fn queue(
        admission: &Arc<Admission>,
        tenant: &'static str,
        limit: u32,
        on_grant: impl FnOnce() + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<(), ErrorKind>> {
        let before = admission.waiting();
        let task = tokio::spawn({
            let admission = admission.clone();
            async move {
                let permit = admission.enter(tenant, limit).await.map_err(|e| e.kind)?;
                on_grant();
                drop(permit);
                Ok(())
            }
        });
        while admission.waiting() == before {
            tokio::task::yield_now().await;
        }
        task
    }

    #[tokio::test]
    async fn beyond_slots_callers_queue_then_are_refused() {
        let admission = admission(1, 1, 8);
        let held = admission.enter("a", 4).await.expect("first slot");
        let queued = queue(&admission, "b", 4, || ()).await;
        let refused = admission.enter("c", 4).await.expect_err("queue is full");
        assert_eq!(refused.kind, ErrorKind::Overloaded);
        drop(held);
        queued
            .await
            .expect("join")
            .expect("queued caller gets the slot once it is free");
        assert_eq!(admission.available(), 1);
        assert_eq!(admission.tenants_tracked(), 0);
    }

    #[tokio::test]
    async fn a_queued_caller_gives_up_after_the_queue_timeout() {
        let admission = Admission::new(AdmissionOptions {
            pool_size: 1,
            queue_capacity: 8,
            tenant_queue_capacity: 8,
            queue_timeout: Duration::from_millis(20),
        });
        let _held = admission.enter("a", 4).await.expect("first slot");
        let error = admission.enter("b", 4).await.expect_err("times out");
        assert_eq!(error.kind, ErrorKind::Overloaded);
        assert_eq!(admission.waiting(), 0);
        assert_eq!(admission.tenants_tracked(), 1);
    }

    #[tokio::test]
    async fn a_tenant_at_its_limit_waits_while_others_take_free_slots() {
        let admission = admission(4, 16, 16);
        let first = admission.enter("noisy", 2).await.expect("slot");
        let _second = admission.enter("noisy", 2).await.expect("slot");
        let third = queue(&admission, "noisy", 2, || ()).await;
        assert_eq!(
            admission.available(),
            2,
            "the noisy tenant's third call waits"
        );
        let quiet = admission
            .enter("quiet", 2)
            .now_or_never()
            .expect("a tenant under its limit is admitted at once")
            .expect("slot");
        assert_eq!(admission.available(), 1);
        drop(first);
        third
            .await
            .expect("join")
            .expect("admitted once under its limit");
        drop(quiet);
    }

    #[tokio::test]
    async fn freed_slots_go_round_robin_across_tenants() {
        let admission = admission(1, 16, 16);
        let held = admission.enter("x", 1).await.expect("slot");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (tenant, name) in [
            ("a", "a1"),
            ("a", "a2"),
            ("a", "a3"),
            ("b", "b1"),
            ("c", "c1"),
        ] {
            let order = order.clone();
            let record = move || order.lock().unwrap_or_else(|p| p.into_inner()).push(name);
            tasks.push(queue(&admission, tenant, 8, record).await);
        }
        drop(held);
        for task in tasks {
            task.await.expect("join").expect("admitted");
        }
        let order = order.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "a3"]);
    }

    #[tokio::test]
    async fn a_noisy_tenants_full_queue_does_not_refuse_a_quiet_tenant() {
        // The whole queue has room for 4; one tenant may hold 2 of them.
        let admission = admission(1, 4, 2);
        let held = admission.enter("noisy", 8).await.expect("slot");
        let noisy: Vec<_> = [
            queue(&admission, "noisy", 8, || ()).await,
            queue(&admission, "noisy", 8, || ()).await,
        ]
        .into();
        let refused = admission
            .enter("noisy", 8)
            .await
            .expect_err("its queue is full");
        assert_eq!(refused.kind, ErrorKind::Overloaded);
        let quiet = queue(&admission, "quiet", 8, || ()).await;
        assert_eq!(admission.waiting(), 3);
        drop(held);
        quiet
            .await
            .expect("join")
            .expect("the quiet tenant is served");
        for task in noisy {
            task.await.expect("join").expect("admitted");
        }
        assert_eq!(admission.tenants_tracked(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_its_queue_and_leaks_nothing() {
        let admission = admission(1, 8, 8);
        let held = admission.enter("x", 1).await.expect("slot");

        // Dropped while queued: the client went away.
        assert!(admission.enter("a", 1).now_or_never().is_none());
        assert_eq!(admission.waiting(), 0);
        assert_eq!(admission.tenants_tracked(), 1, "only x remains");

        // Dropped after a slot was handed to it but before it looked: the slot comes back.
        let mut pending = Box::pin(admission.enter("a", 1));
        assert!((&mut pending).now_or_never().is_none());
        assert_eq!(admission.waiting(), 1);
        drop(held);
        assert_eq!(admission.available(), 0, "handed to the waiter");
        drop(pending);
        assert_eq!(admission.available(), 1);
        assert_eq!(admission.waiting(), 0);
        assert_eq!(admission.tenants_tracked(), 0);

        // Both slot and tenant count are whole again: a limit of 1 admits at once.
        let again = admission.enter("a", 1).now_or_never().expect("at once");
        assert!(again.is_ok());
    }

    #[tokio::test]
    async fn a_raised_limit_lets_queued_callers_in() {
        let admission = admission(4, 8, 8);
        let _first = admission.enter("a", 1).await.expect("slot");
        let second = queue(&admission, "a", 1, || ()).await;
        let _third = admission
            .enter("a", 3)
            .await
            .expect("the new limit applies at once");
        second
            .await
            .expect("join")
            .expect("admitted under the raised limit");
    }
}
