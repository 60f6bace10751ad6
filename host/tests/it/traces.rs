//! W3C trace context: the `traceparent` a caller sends is kept with the run it creates, and
//! every step's upstream request carries that trace (a fresh span id each); a guest cannot
//! set its own; a call without one gets a new trace. With `--otlp-endpoint`, the spans of a
//! webhook's run, across processes, reach an OTLP receiver run here as one trace, and a
//! collector that is down costs dropped spans, never a request. Both databases.

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
    a_webhook_runs_spans_on_three_processes_reach_the_collector_as_one_trace,
    a_collector_that_is_down_costs_counted_spans_and_no_request,
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

/// Every span an OTLP/HTTP JSON receiver got, flattened.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Value>>>);

impl Collector {
    async fn start(&self) -> String {
        let spans = self.0.clone();
        let router = Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::Json<Value>| {
                let mut got = spans.lock().unwrap_or_else(|p| p.into_inner());
                for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                    for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                        got.extend(scope["spans"].as_array().into_iter().flatten().cloned());
                    }
                }
                async { axum::Json(json!({})) }
            }),
        );
        let server = Server::start(router).await;
        format!("http://{}", server.addr)
    }

    fn in_trace(&self, trace: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s["traceId"] == json!(trace))
            .cloned()
            .collect()
    }
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == json!(name)).collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == json!(key)))
        .map_or(&Value::Null, |kv| &kv["value"])
}

fn otlp(endpoint: String) -> impl FnOnce(&mut airlock::config::Config) {
    move |c| c.otlp_endpoint = Some(endpoint)
}

/// A webhook delivery whose two steps run on two processes (the first stops between
/// them, the second takes over), while a third takes the delivery: the receiver gets one
/// trace under the sender's span, request → enqueue → a claim per process → step →
/// invoke → upstream request, and each upstream request's `traceparent` is its span.
async fn a_webhook_runs_spans_on_three_processes_reach_the_collector_as_one_trace(db: Db) {
    use airlock::triggers::webhook::Scheme;
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let reached_one = Arc::new(tokio::sync::Notify::new());
    let upstream = {
        let (seen, reached_one) = (seen.clone(), reached_one.clone());
        Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
            let traceparent = headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let first = uri.path() == "/one" && traceparent.contains(TRACE);
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(traceparent);
            if first {
                reached_one.notify_one();
            }
            async move {
                if first {
                    // Time for the test to stop this step's process before it answers.
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                axum::Json(json!({"ok": true}))
            }
        })
    };
    let upstream = Server::start_tls(upstream, &[API]).await;
    let Some(front) = TestServer::start_configured(db, options_for_tls(&upstream, &[API]), |c| {
        c.workers = 0;
        otlp(endpoint.clone())(c);
    })
    .await
    else {
        return;
    };
    let admin = front.tenant("acme").await;
    let uploaded = front
        .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let steps = json!([
        {"id": "one", "connector": "http", "action": "request",
            "input": {"url": format!("https://{API}/one")}},
        {"id": "two", "connector": "http", "action": "request",
            "input": {"url": format!("https://{API}/two")}}
    ]);
    let workflow = create_workflow(&front, &admin, "spanned", steps).await;
    let (hook, secret) = crate::triggers::webhook(&front, &admin, &workflow).await;
    let url = front.database_url.clone();
    let worker = |endpoint: String| {
        let url = url.clone();
        move |c: &mut airlock::config::Config| {
            fast_workers(c);
            c.database_url = Some(url);
            otlp(endpoint)(c);
        }
    };

    // An unsampled sender is followed: nothing of its trace is recorded.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let body = br#"{"event": "invoice.created"}"#;
    let now_s = airlock::store::now_ms() / 1000;
    let mut headers =
        crate::triggers::signed(Scheme::StandardWebhooks, &secret, "evt_quiet", now_s, body);
    headers.push((
        "traceparent".into(),
        format!("00-{unsampled}-b7ad6b7169203331-00"),
    ));
    let quiet = crate::triggers::deliver(&front, &hook, &headers, body).await;
    assert_eq!(quiet.status, 202, "{}", quiet.text);
    let quiet_run = quiet.body["run_id"].as_str().expect("run").to_owned();
    let first = TestServer::start_configured(
        Db::Sqlite,
        options_for_tls(&upstream, &[API]),
        worker(endpoint.clone()),
    )
    .await
    .expect("a worker process");
    let token = first.token(Some("acme"), airlock::api::Role::Admin);
    let done = wait_for(&first, &token, &quiet_run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The first worker process runs step one of this one, and is stopped while that step
    // waits on its upstream: it journals the step and lets the run go.
    let body = br#"{"event": "invoice.paid"}"#;
    let mut headers = crate::triggers::signed(
        Scheme::StandardWebhooks,
        &secret,
        "evt_spanned",
        now_s,
        body,
    );
    headers.push((
        "traceparent".into(),
        format!("00-{TRACE}-00f067aa0ba902b7-01"),
    ));
    let delivered = crate::triggers::deliver(&front, &hook, &headers, body).await;
    assert_eq!(delivered.status, 202, "{}", delivered.text);
    let run = delivered.body["run_id"].as_str().expect("run").to_owned();

    reached_one.notified().await;
    first.shut_down();
    let second = TestServer::start_configured(
        Db::Sqlite,
        options_for_tls(&upstream, &[API]),
        worker(endpoint.clone()),
    )
    .await
    .expect("a second worker process");
    let token = second.token(Some("acme"), airlock::api::Role::Admin);
    let done = wait_for(&second, &token, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["trace_id"], json!(TRACE), "{done}");

    // Spans leave each process within a second or so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let spans = loop {
        let spans = collector.in_trace(TRACE);
        if named(&spans, "connector.invoke").len() >= 2 && named(&spans, "run.claim").len() >= 2
            || std::time::Instant::now() > deadline
        {
            break spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let id = |s: &Value| s["spanId"].as_str().unwrap_or_default().to_owned();
    let parent = |s: &Value| s["parentSpanId"].as_str().unwrap_or_default().to_owned();

    let server = named(&spans, "POST /hooks/{id}");
    assert_eq!(server.len(), 1, "{spans:#?}");
    assert_eq!(server[0]["kind"], 2);
    assert_eq!(
        parent(server[0]),
        "00f067aa0ba902b7",
        "under the sender's span"
    );
    assert_eq!(
        attr(server[0], "http.response.status_code")["intValue"],
        "202"
    );
    let enqueue = named(&spans, "run.enqueue");
    assert_eq!(enqueue.len(), 1, "{spans:#?}");
    assert_eq!(parent(enqueue[0]), id(server[0]));
    assert_eq!(attr(enqueue[0], "airlock.run")["stringValue"], json!(run));

    let claims = named(&spans, "run.claim");
    assert_eq!(claims.len(), 2, "one claim per process: {spans:#?}");
    assert!(claims.iter().all(|c| parent(c) == id(enqueue[0])));
    let steps = named(&spans, "run.step");
    assert_eq!(steps.len(), 2, "{spans:#?}");
    let step = |name: &str| {
        *steps
            .iter()
            .find(|s| attr(s, "airlock.step")["stringValue"] == json!(name))
            .expect("the step's span")
    };
    let (one, two) = (step("one"), step("two"));
    assert_ne!(
        parent(one),
        parent(two),
        "the steps ran under different claims"
    );
    for step in [one, two] {
        assert!(claims.iter().any(|c| id(c) == parent(step)));
    }
    let invokes = named(&spans, "connector.invoke");
    assert_eq!(invokes.len(), 2, "{spans:#?}");
    for invoke in &invokes {
        assert!([id(one), id(two)].contains(&parent(invoke)));
        assert_eq!(attr(invoke, "airlock.connector")["stringValue"], "http");
    }
    let clients: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    assert_eq!(clients.len(), 2, "{spans:#?}");
    let got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for client in &clients {
        assert!(invokes.iter().any(|i| id(i) == parent(client)));
        assert_eq!(attr(client, "server.address")["stringValue"], API);
        // The upstream saw this span as its parent, sampled.
        let sent = format!("00-{TRACE}-{}-01", id(client));
        assert!(got.contains(&sent), "{sent} not in {got:?}");
    }
    assert!(collector.in_trace(unsampled).is_empty());
    assert!(
        got.iter()
            .any(|t| t.starts_with(&format!("00-{unsampled}-")) && t.ends_with("-00")),
        "{got:?}"
    );
}

/// Spans for a collector that refuses every batch are dropped and counted; the API answers
/// as if there were none.
async fn a_collector_that_is_down_costs_counted_spans_and_no_request(db: Db) {
    let refusing = Server::start(
        Router::new().fallback(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
    )
    .await;
    let Some(server) = TestServer::start_configured(
        db,
        crate::support::options(),
        otlp(format!("http://{}", refusing.addr)),
    )
    .await
    else {
        return;
    };
    let admin = server.tenant("acme").await;
    for _ in 0..20 {
        let reply = server.get("/v1/workflows", &admin).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = crate::metrics::scrape(&server).await;
        let dropped = crate::metrics::value(
            &text,
            "airlock_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        if dropped >= 20.0 {
            assert_eq!(
                crate::metrics::value(&text, "airlock_trace_spans_exported_total"),
                0.0
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no export failure counted: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
