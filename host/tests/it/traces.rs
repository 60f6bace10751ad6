//! W3C trace context: the `traceparent` a caller sends is kept with the run it creates, and
//! every step's upstream request carries that trace (a fresh span id each); a guest cannot
//! set its own; a call without one gets a new trace. Both databases.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::api_support::{Db, TestServer, on_both_databases};
use crate::runs_support::{create_workflow, ended, fast_workers, wait_for};
use crate::support::{Server, options_for_tls};

on_both_databases!(
    a_runs_trace_reaches_every_upstream_request_and_guests_cannot_set_one,
    a_webhooks_trace_reaches_upstream_from_a_run_another_process_runs,
);

const API: &str = "api.example.test";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The `traceparent` of every request the upstream gets.
fn recorder(seen: Arc<Mutex<Vec<String>>>) -> Router {
    Router::new().fallback(move |headers: HeaderMap| {
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(traceparent);
        async { axum::Json(json!({"ok": true})) }
    })
}

fn trace_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

async fn post_traced(server: &TestServer, path: &str, token: &str, body: Value) -> Value {
    let reply = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(token)
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert!(reply.status().is_success(), "{}", reply.status());
    let text = reply.text().await.expect("body");
    serde_json::from_str(&text).expect("json")
}

async fn a_runs_trace_reaches_every_upstream_request_and_guests_cannot_set_one(db: Db) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let upstream = Server::start_tls(recorder(seen.clone()), &[API]).await;
    let mut options = options_for_tls(&upstream, &[API]);
    options.engine.pool_size = 4;
    let Some(server) = TestServer::start_configured(db, options, fast_workers).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let uploaded = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let steps = json!([
        {"id": "one", "connector": "http", "action": "request",
            "input": {"url": format!("https://{API}/one")}},
        // The guest tries to continue a trace of its own choosing.
        {"id": "two", "connector": "http", "action": "request",
            "input": {"url": format!("https://{API}/two"),
                "headers": {"traceparent": "00-ffffffffffffffffffffffffffffffff-1111111111111111-01",
                    "tracestate": "vendor=leak"}}}
    ]);
    let workflow = create_workflow(&server, &admin, "traced", steps).await;

    // A run created with a traceparent keeps the trace and sends it from every step.
    let run = post_traced(
        &server,
        &format!("/v1/workflows/{workflow}/runs"),
        &admin,
        json!({"input": {}}),
    )
    .await;
    assert_eq!(run["trace_id"], json!(TRACE), "{run}");
    let id = run["id"].as_str().expect("id");
    let done = wait_for(&server, &admin, id, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(got.len(), 2, "{got:?}");
    for traceparent in &got {
        assert_eq!(trace_of(traceparent), TRACE, "{got:?}");
        // Never the caller's span, never sampled on the caller's say-so.
        assert!(!traceparent.contains("00f067aa0ba902b7"), "{traceparent}");
        assert!(traceparent.ends_with("-00"), "{traceparent}");
    }
    assert_ne!(got[0], got[1], "each request is a span of its own");

    // A run created without one gets a trace of its own, which its steps send.
    let reply = server
        .post(
            &format!("/v1/workflows/{workflow}/runs"),
            &admin,
            json!({"input": {}}),
        )
        .await;
    let fresh = reply.body["trace_id"].as_str().expect("a trace").to_owned();
    assert_eq!(fresh.len(), 32);
    assert_ne!(fresh, TRACE);
    let id = reply.body["id"].as_str().expect("id").to_owned();
    wait_for(&server, &admin, &id, ended).await;
    let got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(got[2..].iter().all(|t| trace_of(t) == fresh), "{got:?}");

    // A direct invocation carries the request's trace too.
    let invoked = post_traced(
        &server,
        "/v1/connectors/http/actions/request/invoke",
        &admin,
        json!({"input": {"url": format!("https://{API}/direct")}}),
    )
    .await;
    assert_eq!(invoked["ok"], json!(true), "{invoked}");
    let got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(got.last().map(|t| trace_of(t)), Some(TRACE), "{got:?}");
}

/// A webhook sender's `traceparent` is the run's trace, and a step that another process runs
/// (this one has no workers) sends it upstream.
async fn a_webhooks_trace_reaches_upstream_from_a_run_another_process_runs(db: Db) {
    use airlock::triggers::webhook::Scheme;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let upstream = Server::start_tls(recorder(seen.clone()), &[API]).await;
    let Some(front) =
        TestServer::start_configured(db, options_for_tls(&upstream, &[API]), |c| c.workers = 0)
            .await
    else {
        return;
    };
    let admin = front.tenant("acme").await;
    let uploaded = front
        .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let steps = json!([{"id": "one", "connector": "http", "action": "request",
        "input": {"url": format!("https://{API}/hooked")}}]);
    let workflow = create_workflow(&front, &admin, "hooked", steps).await;
    let (hook, secret) = crate::triggers::webhook(&front, &admin, &workflow).await;
    let body = br#"{"event": "invoice.paid"}"#;
    let now_s = airlock::store::now_ms() / 1000;
    let mut headers =
        crate::triggers::signed(Scheme::StandardWebhooks, &secret, "evt_traced", now_s, body);
    headers.push((
        "traceparent".into(),
        format!("00-{TRACE}-00f067aa0ba902b7-01"),
    ));
    let delivered = crate::triggers::deliver(&front, &hook, &headers, body).await;
    assert_eq!(delivered.status, 202, "{}", delivered.text);
    let run = delivered.body["run_id"].as_str().expect("run").to_owned();

    // The workers are another process's, on the same database.
    let url = front.database_url.clone();
    let back = TestServer::start_configured(Db::Sqlite, options_for_tls(&upstream, &[API]), |c| {
        fast_workers(c);
        c.database_url = Some(url.clone());
    })
    .await
    .expect("a second process");
    let token = back.token(Some("acme"), airlock::api::Role::Admin);
    let done = wait_for(&back, &token, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["trace_id"], json!(TRACE), "{done}");
    let got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(trace_of(&got[0]), TRACE, "{got:?}");
    assert!(!got[0].contains("00f067aa0ba902b7"), "{got:?}");
}
