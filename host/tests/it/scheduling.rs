//! Scheduling: spinning guests yield so others are served, load beyond the pool and its
//! queue is refused as `overloaded`, and a tenant at its concurrency limit leaves the other
//! slots to other tenants.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use airlock::runtime::{ErrorKind, InvokeRequest, Runtime, TenantLimits};
use serde_json::json;

use crate::support::{error_kind, hostile, options};

/// On a single-threaded executor a guest that never yielded would keep every other task
/// waiting until it stopped. Here the benign invocations must all finish while the spinners
/// are still running: the order of completion proves the yielding, not a timing threshold.
#[tokio::test(flavor = "current_thread")]
async fn benign_invocations_complete_while_spinners_run() {
    let rt = Arc::new(Runtime::new(options()).expect("runtime"));
    let guest = hostile(&rt).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let spin_limits = TenantLimits {
        fuel: 100_000_000_000,
        timeout_ms: 10_000,
        ..TenantLimits::default()
    };

    let mut spinners = Vec::new();
    for _ in 0..2 {
        let (rt, guest, finished, limits) = (
            rt.clone(),
            guest.clone(),
            finished.clone(),
            spin_limits.clone(),
        );
        spinners.push(tokio::spawn(async move {
            let request = InvokeRequest::action("spinner", "spin", "{}").with_limits(limits);
            let outcome = rt.invoke(&guest, request).await;
            (finished.fetch_add(1, Ordering::SeqCst), outcome)
        }));
    }
    // Let the spinners start running wasm before the benign work arrives.
    tokio::task::yield_now().await;

    let mut benign = Vec::new();
    for n in 0..20 {
        let (rt, guest, finished) = (rt.clone(), guest.clone(), finished.clone());
        benign.push(tokio::spawn(async move {
            let request = InvokeRequest::action("benign", "echo", json!({"n": n}).to_string());
            let outcome = rt.invoke(&guest, request).await;
            (finished.fetch_add(1, Ordering::SeqCst), outcome)
        }));
    }
    for task in benign {
        let (position, outcome) = task.await.expect("join");
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert!(
            position < 20,
            "a benign invocation finished after a spinner (position {position})"
        );
    }
    for task in spinners {
        let (position, outcome) = task.await.expect("join");
        assert!(position >= 20);
        assert_eq!(error_kind(&outcome), Some(ErrorKind::Timeout));
    }
}

#[tokio::test]
async fn beyond_the_pool_and_its_queue_invocations_are_overloaded() {
    let mut opts = options();
    opts.engine.pool_size = 1;
    opts.queue_capacity = 0;
    let rt = Arc::new(Runtime::new(opts).expect("runtime"));
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        fuel: 100_000_000_000,
        timeout_ms: 2_000,
        ..TenantLimits::default()
    };
    let spinner = {
        let (rt, guest) = (rt.clone(), guest.clone());
        tokio::spawn(async move {
            rt.invoke(
                &guest,
                InvokeRequest::action("a", "spin", "{}").with_limits(limits),
            )
            .await
        })
    };
    // Wait until the spinner holds the only slot.
    while rt.available_slots() > 0 {
        tokio::task::yield_now().await;
    }
    let refused = rt
        .invoke(&guest, InvokeRequest::action("b", "echo", r#"{"n":1}"#))
        .await;
    assert_eq!(error_kind(&refused), Some(ErrorKind::Overloaded));
    assert!(refused.result.as_ref().expect_err("overloaded").retryable);
    let spun = spinner.await.expect("join");
    assert_eq!(error_kind(&spun), Some(ErrorKind::Timeout));
    // Once the slot is free again, work is accepted.
    let accepted = rt
        .invoke(&guest, InvokeRequest::action("b", "echo", r#"{"n":1}"#))
        .await;
    assert!(accepted.result.is_ok(), "{:?}", accepted.result);
}

/// Tenant "noisy" may run one invocation at a time: its second waits in its own queue and
/// leaves the other slot to tenant "quiet", whose invocation completes while both of the
/// noisy ones are still sleeping. Without a per-tenant limit the two sleepers would hold both
/// slots and the quiet tenant would wait for one of them to time out.
#[tokio::test]
async fn a_tenant_at_its_concurrency_limit_leaves_free_slots_to_other_tenants() {
    let mut opts = options();
    opts.engine.pool_size = 2;
    let rt = Arc::new(Runtime::new(opts).expect("runtime"));
    let guest = hostile(&rt).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let noisy_limits = TenantLimits {
        timeout_ms: 1_000,
        max_concurrent_runs: 1,
        ..TenantLimits::default()
    };
    let mut sleepers = Vec::new();
    for _ in 0..2 {
        let (rt, guest, finished, limits) = (
            rt.clone(),
            guest.clone(),
            finished.clone(),
            noisy_limits.clone(),
        );
        sleepers.push(tokio::spawn(async move {
            let request =
                InvokeRequest::action("noisy", "sleep", r#"{"ms": 60000}"#).with_limits(limits);
            let outcome = rt.invoke(&guest, request).await;
            (finished.fetch_add(1, Ordering::SeqCst), outcome)
        }));
    }
    // Wait until both noisy invocations are either running or queued.
    while 2 - rt.available_slots() + rt.queued_invocations() < 2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        rt.available_slots(),
        1,
        "the noisy tenant holds one slot only"
    );
    assert_eq!(rt.queued_invocations(), 1);

    let quiet = rt
        .invoke(&guest, InvokeRequest::action("quiet", "echo", r#"{"n":1}"#))
        .await;
    assert!(quiet.result.is_ok(), "{:?}", quiet.result);
    assert_eq!(
        finished.fetch_add(1, Ordering::SeqCst),
        0,
        "the quiet tenant finished after a noisy one"
    );
    for task in sleepers {
        let (position, outcome) = task.await.expect("join");
        assert!(position >= 1);
        assert_eq!(error_kind(&outcome), Some(ErrorKind::Timeout));
    }
    assert_eq!(rt.available_slots(), 2);
    assert_eq!(rt.queued_invocations(), 0);
}
