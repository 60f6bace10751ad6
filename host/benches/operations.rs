//! `cargo bench -p airlock --bench operations`: what operating features cost.
//!
//! 1. Invoke: the same action (the GitHub connector's `list_issues` against a local HTTPS
//!    fake: admission, instance, one outbound request, output checks) on two runtimes, one
//!    recording metrics and exporting spans (each call a sampled trace of its own: an
//!    invocation span and a client span, sent over OTLP/HTTP to a collector in this
//!    process) and one with both off, interleaved call by call; prints each side's
//!    percentiles and throughput, and the ratio (the goal: at most 3% slower).
//! 2. Webhook ingest: signed deliveries answered 202, on two API-only services (SQLite), one
//!    with metrics and span export on and one with both off, in alternating rounds from
//!    concurrent senders; deliveries per second each, and the ratio (the goal: at most 3%).
//! 3. Audit: appending one chained audit record (what a write request adds), p50/p99, on
//!    SQLite in a temporary directory, and on PostgreSQL when `AIRLOCK_BENCH_DATABASE_URL`
//!    names one (the goal: at most 2 ms at p99).
//!
//! `AIRLOCK_BENCH_ITERATIONS` sets the timed calls per side (default 3000; 30 under
//! `cargo test --benches`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use airlock::api::{OtlpExporter, OtlpOptions, Role, Service};
use airlock::config::Config;
use airlock::runtime::outbound::Credential;
use airlock::runtime::{InvokeRequest, Runtime, RuntimeOptions, SharedComponent};
use airlock::store::{AuditDraft, Store, StoreOptions};
use airlock_secrets::Secret;
use airlock_telemetry::{Metrics, TraceContext};
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn fake_github() -> Router {
    let page: Value = (1..=30)
        .map(|n| {
            json!({"number": n, "title": format!("Issue {n}"), "state": "open",
            "html_url": format!("https://github.com/octo/repo/issues/{n}"), "body": "text",
            "user": {"login": "octocat"}, "labels": [], "comments": 0,
            "created_at": "2026-12-01T10:00:00Z"})
        })
        .collect();
    Router::new().route(
        "/repos/{owner}/{repo}/issues",
        get(move || {
            let page = page.clone();
            async move { axum::Json(page) }
        }),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// A collector that takes every batch and counts its spans.
async fn collector() -> (String, Arc<AtomicU64>) {
    let spans = Arc::new(AtomicU64::new(0));
    let counted = spans.clone();
    let router = Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::Json<Value>| {
            let n = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .map_or(0, Vec::len);
            counted.fetch_add(n as u64, Ordering::Relaxed);
            async { axum::Json(json!({})) }
        }),
    );
    let addr = airlock_testkit::serve(router).await;
    (format!("http://{addr}"), spans)
}

async fn call(
    runtime: &Runtime,
    component: &SharedComponent,
    input: &str,
    traced: bool,
) -> Duration {
    let mut request = InvokeRequest::action("bench", "list_issues", input).with_credential(
        Credential::ApiKey(Secret::new("ghp_bench_token".to_owned())),
    );
    if traced {
        request.trace_context = Some(TraceContext::new_root(true));
    }
    let started = Instant::now();
    let outcome = runtime.invoke(component, request).await;
    let took = started.elapsed();
    if let Err(error) = &outcome.result {
        eprintln!("list_issues failed: {error:?}");
        std::process::exit(1);
    }
    took
}

async fn invoke(iterations: usize) -> Result<(), String> {
    let (addr, ca) = airlock_testkit::serve_tls(fake_github(), &["api.github.com"]).await;
    let (endpoint, exported) = collector().await;
    let otlp = OtlpOptions::new(&endpoint, "airlock-bench", 1.0)?;
    let on = Arc::new(Metrics::default());
    on.record_spans(otlp.spans());
    let exporter = OtlpExporter::start(on.clone(), &otlp);
    let runtime = |metrics: Arc<Metrics>| -> Result<Runtime, String> {
        let mut options = RuntimeOptions {
            metrics,
            ..RuntimeOptions::default()
        };
        options.engine.pool_size = 4;
        options.outbound.allowed_private_ranges =
            vec!["127.0.0.0/8".parse().map_err(|e| format!("{e}"))?];
        options
            .outbound
            .resolve_overrides
            .insert("api.github.com".into(), vec![addr]);
        options.outbound.extra_root_certificates = vec![ca.clone()];
        Runtime::new(options).map_err(|e| e.to_string())
    };
    let sides = [
        ("both off", runtime(Arc::new(Metrics::disabled()))?),
        ("both on", runtime(on.clone())?),
    ];
    let bytes =
        std::fs::read(airlock_test_artifacts::CONNECTOR_GITHUB).map_err(|e| e.to_string())?;
    let mut components = Vec::new();
    for (_, runtime) in &sides {
        components.push(runtime.load(&bytes).await.map_err(|e| e.to_string())?);
    }
    let input =
        json!({"owner": "octo", "repo": "repo", "state": "open", "per_page": 30}).to_string();
    for _ in 0..50 {
        for (i, (_, runtime)) in sides.iter().enumerate() {
            call(runtime, &components[i], &input, i == 1).await;
        }
    }
    let mut times = [
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
    ];
    for _ in 0..iterations {
        for (i, (_, runtime)) in sides.iter().enumerate() {
            times[i].push(call(runtime, &components[i], &input, i == 1).await);
        }
    }
    println!("metrics and tracing overhead: list_issues, {iterations} calls per side, interleaved");
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>11}",
        "side", "p50 ms", "p99 ms", "mean ms", "calls/s"
    );
    let mut means = [0.0; 2];
    for (i, (name, _)) in sides.iter().enumerate() {
        let total: Duration = times[i].iter().sum();
        means[i] = ms(total) / times[i].len() as f64;
        times[i].sort();
        println!(
            "{:<12} {:>9.3} {:>9.3} {:>9.3} {:>11.0}",
            name,
            ms(percentile(&times[i], 0.50)),
            ms(percentile(&times[i], 0.99)),
            means[i],
            1_000.0 / means[i],
        );
    }
    println!(
        "on / off, mean time per call: {:.3} ({:+.1}%; goal at most +3%)",
        means[1] / means[0],
        (means[1] / means[0] - 1.0) * 100.0
    );
    exporter.shutdown().await;
    let dropped: f64 = on
        .encode()
        .lines()
        .filter(|l| l.starts_with("airlock_trace_spans_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, n| sum + n);
    println!(
        "spans exported: {}, dropped: {dropped}",
        exported.load(Ordering::Relaxed)
    );
    Ok(())
}

/// An API-only service on SQLite in `dir`, with a webhook trigger per tenant; returns the
/// base URL, its (hook path, secret) pairs and its stop.
async fn hook_service(
    dir: &std::path::Path,
    traced: Option<&str>,
    tenants: usize,
) -> Result<(String, Vec<(String, String)>, CancellationToken), String> {
    let mut config = Config::dev(dir.join("data"));
    config.workers = 0;
    config.no_scheduler = true;
    config.max_queued_runs_per_tenant = 1_000_000;
    config.max_queue_depth = 10_000_000;
    config.otlp_endpoint = traced.map(str::to_owned);
    let mut runtime = config.runtime_options();
    if traced.is_none() {
        runtime.metrics = Arc::new(Metrics::disabled());
    }
    let service = Service::start(config.service_options(runtime).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    let state = service.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let stop = CancellationToken::new();
    tokio::spawn(service.serve(listener, stop.clone()));
    let client = reqwest::Client::new();
    let token = |tenant: Option<&str>, role| {
        state
            .jwt()
            .issue("bench", tenant, role, Duration::from_secs(3600))
            .map_err(|e| e.to_string())
    };
    let operator = token(None, Role::Operator)?;
    let post = |path: String, bearer: String, body: Value| {
        let request = client
            .post(format!("{base}{path}"))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let text = response.text().await.map_err(|e| e.to_string())?;
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(format!("{path}: {status} {body}"));
            }
            Ok::<Value, String>(body)
        }
    };
    let mut hooks = Vec::new();
    for t in 0..tenants {
        let id = format!("hooks{t}");
        post(
            "/v1/tenants".into(),
            operator.clone(),
            json!({"id": id, "name": id}),
        )
        .await?;
        let response = client
            .put(format!("{base}/v1/tenants/{id}/limits"))
            .bearer_auth(&operator)
            .header("content-type", "application/json")
            .body(json!({"runs_per_hour": 500}).to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("limits: {}", response.status()));
        }
        let admin = token(Some(&id), Role::Admin)?;
        let wasm = std::fs::read(airlock_test_artifacts::CONNECTOR_TRANSFORM)
            .map_err(|e| e.to_string())?;
        let response = client
            .post(format!("{base}/v1/connectors"))
            .bearer_auth(&admin)
            .header("content-type", "application/wasm")
            .body(wasm)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("upload: {}", response.status()));
        }
        let workflow = post(
            "/v1/workflows".into(),
            admin.clone(),
            json!({"name": "pick", "steps": [{"id": "pick", "connector": "transform",
                "action": "pick", "input": {"data": {"$from": "/trigger"}, "fields": ["i"]}}]}),
        )
        .await?;
        let workflow = workflow["id"].as_str().unwrap_or_default().to_owned();
        let trigger = post(
            format!("/v1/workflows/{workflow}/triggers"),
            admin,
            json!({"kind": "webhook", "rate_per_minute": 600_000}),
        )
        .await?;
        hooks.push((
            trigger["webhook"]["url"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            trigger["secret"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    Ok((base, hooks, stop))
}

/// `n` signed deliveries from `senders` at once, numbered from `first`; how long they took.
async fn deliver(
    base: &str,
    hooks: &[(String, String)],
    first: usize,
    n: usize,
    senders: usize,
) -> Result<Duration, String> {
    use airlock::triggers::webhook::{Scheme, sign};
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(first));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, next, base, hooks) = (
            client.clone(),
            next.clone(),
            base.to_owned(),
            hooks.to_vec(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= first + n {
                    return Ok::<(), String>(());
                }
                let (hook, secret) = &hooks[i % hooks.len()];
                let body = json!({"i": i}).to_string().into_bytes();
                let now = airlock::store::now_ms() / 1000;
                let headers = sign(
                    Scheme::StandardWebhooks,
                    secret,
                    &format!("d{i}"),
                    now,
                    &body,
                )
                .map_err(|e| e.to_string())?;
                let mut request = client
                    .post(format!("{base}{hook}"))
                    .header("content-type", "application/json")
                    .header(
                        "traceparent",
                        format!("00-{:032x}-00f067aa0ba902b7-01", i + 1),
                    )
                    .body(body);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let response = request.send().await.map_err(|e| e.to_string())?;
                if response.status().as_u16() != 202 {
                    return Err(format!("delivery {i}: {}", response.status()));
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed())
}

async fn webhook_ingest(deliveries: usize) -> Result<(), String> {
    const TENANTS: usize = 8;
    const SENDERS: usize = 16;
    // Each tenant takes at most 500 runs an hour (the cap of `runs_per_hour`).
    let deliveries = deliveries.min(TENANTS * 480);
    let (endpoint, exported) = collector().await;
    let (off_dir, on_dir) = (
        tempfile::tempdir().map_err(|e| e.to_string())?,
        tempfile::tempdir().map_err(|e| e.to_string())?,
    );
    let off = hook_service(off_dir.path(), None, TENANTS).await?;
    let on = hook_service(on_dir.path(), Some(&endpoint), TENANTS).await?;
    let round = (deliveries / 10).max(1);
    let warm = round.min(40);
    deliver(&off.0, &off.1, 0, warm, SENDERS).await?;
    deliver(&on.0, &on.1, 0, warm, SENDERS).await?;
    let mut took = [Duration::ZERO; 2];
    let mut sent = warm;
    while sent + round <= deliveries {
        took[0] += deliver(&off.0, &off.1, sent, round, SENDERS).await?;
        took[1] += deliver(&on.0, &on.1, sent, round, SENDERS).await?;
        sent += round;
    }
    let timed = (sent - warm) as f64;
    // The exporter sends every second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    println!(
        "webhook ingest: {} deliveries per side in rounds of {round}, {SENDERS} senders, {TENANTS} triggers, API-only on SQLite",
        sent - warm
    );
    println!(
        "both off {:.0}/s, both on {:.0}/s: on / off time {:.3} ({:+.1}%; goal at most +3%); spans exported {}",
        timed / took[0].as_secs_f64(),
        timed / took[1].as_secs_f64(),
        took[1].as_secs_f64() / took[0].as_secs_f64(),
        (took[1].as_secs_f64() / took[0].as_secs_f64() - 1.0) * 100.0,
        exported.load(Ordering::Relaxed),
    );
    off.2.cancel();
    on.2.cancel();
    Ok(())
}

async fn audit(label: &str, url: &str, iterations: usize) -> Result<(), String> {
    let store = Store::connect(url, &StoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations + 50 {
        let draft = AuditDraft {
            tenant_id: format!("bench-{}", i % 4),
            actor: "alice@example.com".into(),
            action: "POST /v1/workflows".into(),
            target: format!("wf_{i}"),
            request_id: format!("req_{i}"),
            detail: json!({"role": "admin", "params": {}}),
        };
        let started = Instant::now();
        store
            .append_audit(&draft)
            .await
            .map_err(|e| e.to_string())?;
        if i >= 50 {
            times.push(started.elapsed());
        }
    }
    store.close().await;
    times.sort();
    println!(
        "audit append on {label}, {iterations} records: p50 {:.3} ms, p99 {:.3} ms (goal: p99 at most 2 ms)",
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
    );
    Ok(())
}

async fn run(iterations: usize) -> Result<(), String> {
    invoke(iterations).await?;
    webhook_ingest(iterations).await?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    audit("SQLite", &url, iterations).await?;
    if let Ok(url) = std::env::var("AIRLOCK_BENCH_DATABASE_URL") {
        audit("PostgreSQL", &url, iterations).await?;
    }
    Ok(())
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let iterations = std::env::var("AIRLOCK_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 30 } else { 3_000 });
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(run(iterations)));
    if let Err(error) = result {
        eprintln!("benchmark failed: {error}");
        std::process::exit(1);
    }
}
