//! The invocation pool's fair share, through the API: a tenant whose `max_concurrent_runs`
//! is past the pool size fills all but the pool's reserve with slow invocations, and another
//! tenant's invocation is still admitted at once (not after the hog's, nor refused after the
//! queue timeout, as when the limit alone decided).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api_support::{Db, TestServer, on_both_databases};
use crate::runs_support::{put_limits, tenant_with_hostile};

on_both_databases!(a_quiet_tenant_is_admitted_beside_a_hog_at_limit_256);

const HOG_INVOCATIONS: usize = 12;

async fn a_quiet_tenant_is_admitted_beside_a_hog_at_limit_256(db: Db) {
    // 8 slots: a reserve of 1, so the hog, alone, may hold 7.
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let hog = tenant_with_hostile(&server, "hog").await;
    let quiet = tenant_with_hostile(&server, "quiet").await;
    put_limits(&server, "hog", json!({"max_concurrent_runs": 256})).await;
    let server = Arc::new(server);
    let finished = Arc::new(AtomicUsize::new(0));
    for _ in 0..HOG_INVOCATIONS {
        let (server, hog, finished) = (server.clone(), hog.clone(), finished.clone());
        // Ended with the test's runtime, long before they would wake.
        tokio::spawn(async move {
            server
                .post(
                    "/v1/connectors/hostile/actions/sleep/invoke",
                    &hog,
                    json!({"input": {"ms": 25_000}}),
                )
                .await;
            finished.fetch_add(1, Ordering::SeqCst);
        });
    }
    // Every hog invocation is running or waiting, and the hog holds all but the reserve.
    let runtime = server.state.runtime();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (runtime.available_slots(), runtime.queued_invocations()) != (1, HOG_INVOCATIONS - 7) {
        assert!(
            Instant::now() < deadline,
            "the hog's invocations did not all arrive: {} free, {} waiting",
            runtime.available_slots(),
            runtime.queued_invocations()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let reply = server
        .post(
            "/v1/connectors/hostile/actions/echo/invoke",
            &quiet,
            json!({"input": {"n": 1}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["ok"], json!(true), "{}", reply.text);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the quiet tenant was answered only after a hog invocation ended"
    );
    assert_eq!(
        runtime.queued_invocations(),
        HOG_INVOCATIONS - 7,
        "the hog's waiters still wait"
    );
}
