//! Admission's rules, driven by hand: slots, per-tenant limits and queues, round-robin
//! service, give-ups, and the share rule (the reserve a newcomer finds, freed slots to the
//! tenant holding the fewest, no tenant over its share while others wait).

use std::future::Future;
use std::pin::Pin;

use futures::FutureExt;

use super::*;

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

type Entering = Pin<Box<dyn Future<Output = Result<Permit, InvokeError>> + Send>>;

/// Callers of numbered tenants driven by hand, on the test's thread: each [`Callers::ask`]
/// is an `enter` polled at once, and [`Callers::poll`] polls every waiting one again, so a
/// test decides when slots are freed and sees at once who got them, with no task timing.
struct Callers {
    admission: Arc<Admission>,
    /// Waiting callers: tenant, and its `enter`.
    pending: Vec<(usize, Entering)>,
    /// Permits held, per tenant, oldest first.
    held: Vec<VecDeque<Permit>>,
    refused: usize,
}

impl Callers {
    fn new(admission: &Arc<Admission>, tenants: usize) -> Self {
        Self {
            admission: admission.clone(),
            pending: Vec::new(),
            held: (0..tenants).map(|_| VecDeque::new()).collect(),
            refused: 0,
        }
    }

    /// One more caller of `tenant`; returns whether it got a slot at once.
    fn ask(&mut self, tenant: usize, limit: u32) -> bool {
        let admission = self.admission.clone();
        let name = format!("t{tenant}");
        // Out of tokio's cooperative budget: the test polls hundreds of these without ever
        // yielding, and a spent budget would make a granted caller look still waiting.
        let mut entering: Entering = Box::pin(tokio::task::unconstrained(async move {
            admission.enter(&name, limit).await
        }));
        match (&mut entering).now_or_never() {
            Some(Ok(permit)) => {
                self.held[tenant].push_back(permit);
                true
            }
            Some(Err(_)) => {
                self.refused += 1;
                false
            }
            None => {
                self.pending.push((tenant, entering));
                false
            }
        }
    }

    /// Polls the waiting callers until none is answered (a caller that gives up may let
    /// another in); returns the tenants that got a slot.
    fn poll(&mut self) -> Vec<usize> {
        let mut granted = Vec::new();
        loop {
            let before = self.pending.len();
            for (tenant, mut entering) in std::mem::take(&mut self.pending) {
                match (&mut entering).now_or_never() {
                    Some(Ok(permit)) => {
                        self.held[tenant].push_back(permit);
                        granted.push(tenant);
                    }
                    Some(Err(_)) => self.refused += 1,
                    None => self.pending.push((tenant, entering)),
                }
            }
            if self.pending.len() == before {
                return granted;
            }
        }
    }

    /// Ends `tenant`'s oldest invocation and polls; returns the tenants that got a slot.
    fn finish_oldest(&mut self, tenant: usize) -> Vec<usize> {
        drop(
            self.held[tenant]
                .pop_front()
                .expect("the tenant holds a slot"),
        );
        self.poll()
    }

    fn holds(&self, tenant: usize) -> usize {
        self.held[tenant].len()
    }

    fn waiting_of(&self, tenant: usize) -> usize {
        self.pending.iter().filter(|(t, _)| *t == tenant).count()
    }

    fn holding(&self) -> usize {
        self.held.iter().map(VecDeque::len).sum()
    }
}

/// (a) and (b): a tenant whose limit is past the pool size, alone, takes all but the
/// reserve and then waits; a newcomer is admitted at once beside it, and the slots the hog
/// frees go to the newcomer until both hold their share.
#[tokio::test]
async fn a_hog_alone_leaves_the_reserve_and_a_newcomer_gets_a_slot_at_once() {
    const HOG: usize = 0;
    const QUIET: usize = 1;
    // 16 slots: a reserve of 2; one tenant's share is 14, two tenants' 7 each.
    let admission = admission(16, 64, 32);
    let mut callers = Callers::new(&admission, 2);
    for _ in 0..20 {
        callers.ask(HOG, 256);
    }
    assert_eq!(
        callers.holds(HOG),
        14,
        "alone, the hog takes all but the reserve"
    );
    assert_eq!(callers.waiting_of(HOG), 6);
    assert_eq!(admission.available(), 2);

    assert!(
        callers.ask(QUIET, 16),
        "a newcomer is admitted at once beside the hog"
    );
    assert!(callers.ask(QUIET, 16), "and so is its second invocation");
    for _ in 0..8 {
        assert!(!callers.ask(QUIET, 16), "the pool is full");
    }
    admission.assert_consistent();

    // The hog's invocations end one by one: each freed slot goes to the tenant holding
    // fewer, the quiet one, until it holds its share.
    for _ in 0..5 {
        assert_eq!(callers.finish_oldest(HOG), [QUIET]);
    }
    assert_eq!((callers.holds(HOG), callers.holds(QUIET)), (9, 7));
    // Both at or over their share: freed slots refill the reserve and stay free.
    assert_eq!(callers.finish_oldest(HOG), Vec::<usize>::new());
    assert_eq!(callers.finish_oldest(HOG), Vec::<usize>::new());
    assert_eq!((callers.holds(HOG), callers.holds(QUIET)), (7, 7));
    assert_eq!(admission.available(), 2, "the reserve is free again");
    // Under its share again, the hog's own waiter gets the next slot it frees.
    assert_eq!(callers.finish_oldest(HOG), [HOG]);
    assert_eq!(callers.finish_oldest(QUIET), [QUIET]);
    assert_eq!((callers.holds(HOG), callers.holds(QUIET)), (7, 7));
    admission.assert_consistent();
}

/// (c) Fifty tenants that each want more than the pool, whose invocations last from one to
/// forty-one rounds: once the first hoards have drained, every tenant holds one or two
/// slots (its share is two) and every slot is busy; a slow tenant does not hold slots in
/// proportion to how long its invocations last. Then all but seven stop: those seven hold
/// their share (8) each, the reserve stays free, and a newcomer is admitted at once.
#[tokio::test]
async fn fifty_saturating_tenants_each_hold_about_their_share() {
    const TENANTS: usize = 50;
    const POOL: usize = 64;
    const RESERVE: usize = POOL / 8;
    let admission = admission(POOL, 1024, 8);
    let lasts = |tenant: usize| 1 + (tenant % 5) * 10;
    let mut callers = Callers::new(&admission, TENANTS + 1);
    // When each held permit ends, per tenant, oldest first (in step with `callers.held`).
    let mut ends: Vec<VecDeque<usize>> = vec![VecDeque::new(); TENANTS];
    // Ends the invocations due by `round`, keeps 8 callers of each of the first `saturating`
    // tenants waiting (as many as a tenant may end in a round, so it never lacks a waiter
    // for a slot it just freed), and gives each new slot its end.
    let step = |callers: &mut Callers, ends: &mut Vec<VecDeque<usize>>, round, saturating| {
        for (tenant, due) in ends.iter_mut().enumerate() {
            while due.front().is_some_and(|end| *end <= round) {
                due.pop_front();
                drop(callers.held[tenant].pop_front());
            }
        }
        loop {
            callers.poll();
            let mut asked = false;
            for tenant in 0..saturating {
                while callers.waiting_of(tenant) < 8 {
                    callers.ask(tenant, 256);
                    asked = true;
                }
            }
            if !asked {
                break;
            }
        }
        for (tenant, due) in ends.iter_mut().enumerate() {
            while due.len() < callers.holds(tenant) {
                due.push_back(round + lasts(tenant));
            }
        }
        admission.assert_consistent();
    };

    let share = (POOL - RESERVE).div_ceil(TENANTS);
    assert_eq!(share, 2);
    for round in 0..400 {
        step(&mut callers, &mut ends, round, TENANTS);
        // By then every first hoard (at most 41 rounds long) has ended.
        if round >= 100 {
            assert_eq!(callers.holding(), POOL, "round {round}: a slot idles");
            for tenant in 0..TENANTS {
                let holds = callers.holds(tenant);
                assert!(
                    (1..=share).contains(&holds),
                    "round {round}: tenant {tenant} holds {holds}"
                );
            }
        }
    }

    const LEFT: usize = 7;
    let share = (POOL - RESERVE).div_ceil(LEFT);
    assert_eq!(share, 8);
    callers.pending.retain(|(tenant, _)| *tenant < LEFT);
    for round in 400..500 {
        step(&mut callers, &mut ends, round, LEFT);
        if round >= 450 {
            for tenant in 0..LEFT {
                assert_eq!(
                    callers.holds(tenant),
                    share,
                    "round {round}: tenant {tenant}"
                );
            }
            assert_eq!(admission.available(), RESERVE, "round {round}: the reserve");
        }
    }
    assert!(callers.ask(TENANTS, 256), "a newcomer is admitted at once");
    assert_eq!(callers.refused, 0);
}

/// (d) The limit stays a ceiling: a tenant whose share is larger stops at its limit while
/// slots are free, and another tenant takes them.
#[tokio::test]
async fn the_limit_caps_a_tenant_below_its_share() {
    let admission = admission(64, 64, 32);
    let mut callers = Callers::new(&admission, 2);
    for _ in 0..5 {
        callers.ask(0, 3);
    }
    assert_eq!(callers.holds(0), 3);
    assert_eq!(callers.waiting_of(0), 2);
    assert_eq!(admission.available(), 61);
    for _ in 0..10 {
        assert!(callers.ask(1, 256));
    }
    assert_eq!(
        callers.finish_oldest(0),
        [0],
        "its next waiter takes the freed slot"
    );
    assert_eq!(callers.holds(0), 3);
    admission.assert_consistent();
}

/// (e) Many random asks, finishes, give-ups and timeouts, checked after each step: the counts
/// agree with the queues, no waiter that could run waits beside a free slot, and at the end
/// every slot is free and no tenant is kept.
#[tokio::test]
async fn no_slot_is_lost_across_asks_finishes_and_give_ups() {
    const POOL: usize = 6;
    let admission = Arc::new(Admission::new(AdmissionOptions {
        pool_size: POOL,
        queue_capacity: 10,
        tenant_queue_capacity: 4,
        queue_timeout: Duration::from_millis(2),
    }));
    let mut callers = Callers::new(&admission, 4);
    // A fixed linear congruential sequence: the same run every time.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |below: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).expect("31 bits") % below
    };
    let mut timeouts = 0;
    for _ in 0..3_000 {
        let tenant = next(4);
        match next(10) {
            0..=3 => {
                let limit = u32::try_from(1 + next(8)).expect("small");
                callers.ask(tenant, limit);
            }
            4..=6 => {
                if !callers.held[tenant].is_empty() {
                    let at = next(callers.held[tenant].len());
                    drop(callers.held[tenant].remove(at));
                }
            }
            7 | 8 => {
                // The client went away while waiting.
                if !callers.pending.is_empty() {
                    let at = next(callers.pending.len());
                    drop(callers.pending.remove(at));
                }
            }
            _ => {
                // Long enough for every waiter's timeout to run out.
                tokio::time::sleep(Duration::from_millis(3)).await;
                timeouts += 1;
            }
        }
        callers.poll();
        admission.assert_consistent();
        assert_eq!(admission.available(), POOL - callers.holding());
        assert_eq!(admission.waiting(), callers.pending.len());
    }
    assert!(timeouts > 0 && callers.refused > 0, "some waits ran out");
    callers.pending.clear();
    callers.held.clear();
    assert_eq!(admission.available(), POOL);
    assert_eq!(admission.waiting(), 0);
    assert_eq!(admission.tenants_tracked(), 0);
}
