//! Retries of durable runs against a real local upstream: the upstream's `Retry-After` sets
//! the next attempt, and an action whose manifest and step say nothing about `retry` is
//! attempted once. The `http` connector (connectors/http), both databases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::{Value, json};

use crate::api_support::{Db, TestServer, on_both_databases};
use crate::runs_support::{create_workflow, ended, fast_workers, start_run, wait_for};
use crate::support::{Server, options_for_tls};

on_both_databases!(
    retry_after_on_a_429_sets_the_next_attempt,
    an_action_without_retry_is_attempted_once,
);

const API: &str = "api.example.test";

/// A server whose tenant `acme` has the `http` connector; returns it with the admin token.
pub(crate) async fn server_with_http(db: Db, upstream: &Server) -> Option<(TestServer, String)> {
    let mut options = options_for_tls(upstream, &[API]);
    options.engine.pool_size = 8;
    let server = TestServer::start_configured(db, options, fast_workers).await?;
    let admin = server.tenant("acme").await;
    let uploaded = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    Some((server, admin))
}

fn request_step(id: &str, retry: Option<Value>) -> Value {
    let mut step = json!({"id": id, "connector": "http", "action": "request",
        "input": {"url": format!("https://{API}/{id}"), "error_for_status": true}});
    if let Some(retry) = retry {
        step["retry"] = retry;
    }
    step
}

/// The upstream answers the first request 429 with `Retry-After: 3`, then 200. The step's
/// own backoff is 10 ms: without the header the second attempt would come at once.
async fn retry_after_on_a_429_sets_the_next_attempt(db: Db) {
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let record = seen.clone();
    let upstream = Server::start_tls(
        Router::new().route(
            "/{*path}",
            any(move || {
                let record = record.clone();
                async move {
                    let mut seen = record.lock().expect("lock");
                    seen.push(Instant::now());
                    if seen.len() == 1 {
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "3")],
                            "slow down",
                        )
                            .into_response()
                    } else {
                        axum::Json(json!({"ok": true})).into_response()
                    }
                }
            }),
        ),
        &[API],
    )
    .await;
    let Some((server, admin)) = server_with_http(db, &upstream).await else {
        return;
    };
    let workflow = create_workflow(
        &server,
        &admin,
        "limited",
        json!([request_step(
            "call",
            Some(json!({"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 10_000}))
        )]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["steps"][0]["attempts"], 2, "{done}");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "two attempts reached the upstream");
    let gap = seen[1] - seen[0];
    assert!(
        gap >= Duration::from_secs(3),
        "the second attempt came {gap:?} after the first, before the 3 s asked for"
    );
    // The run's own record agrees: it finished at least 3 s after it started.
    let started = done["started_at_ms"].as_i64().expect("started_at_ms");
    let finished = done["finished_at_ms"].as_i64().expect("finished_at_ms");
    assert!(finished - started >= 3_000, "{done}");
}

/// An upstream that always answers 503 (without `Retry-After`). The `http` connector's
/// `request` declares no `retry`: a step without one is attempted once and is dead; a step
/// with a policy is attempted as often as it says.
async fn an_action_without_retry_is_attempted_once(db: Db) {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let upstream = Server::start_tls(
        Router::new().route(
            "/{*path}",
            any(move || {
                count.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::SERVICE_UNAVAILABLE, "down").into_response() }
            }),
        ),
        &[API],
    )
    .await;
    let Some((server, admin)) = server_with_http(db, &upstream).await else {
        return;
    };
    let once = create_workflow(&server, &admin, "once", json!([request_step("once", None)])).await;
    let run = start_run(&server, &admin, &once, json!({})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["attempts"], 1, "{dead}");
    assert_eq!(dead["error"]["retryable"], true, "{dead}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let retried = create_workflow(
        &server,
        &admin,
        "retried",
        json!([request_step(
            "retried",
            Some(json!({"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 20}))
        )]),
    )
    .await;
    let run = start_run(&server, &admin, &retried, json!({})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["attempts"], 3, "{dead}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}
