//! `cargo bench -p airlock --bench operations`: what operating features cost.
//!
//! 1. Metrics: the same action (the GitHub connector's `list_issues` against a local HTTPS
//!    fake: admission, instance, one outbound request, output checks) on two runtimes, one
//!    recording metrics and one with recording off, interleaved call by call; prints each
//!    side's percentiles and throughput, and the ratio (the goal: at most 3% slower).
//! 2. Audit: appending one chained audit record (what a write request adds), p50/p99, on
//!    SQLite in a temporary directory, and on PostgreSQL when `AIRLOCK_BENCH_DATABASE_URL`
//!    names one (the goal: at most 2 ms at p99).
//!
//! `AIRLOCK_BENCH_ITERATIONS` sets the timed calls per side (default 3000; 30 under
//! `cargo test --benches`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::runtime::outbound::Credential;
use airlock::runtime::{InvokeRequest, Runtime, RuntimeOptions, SharedComponent};
use airlock::store::{AuditDraft, Store, StoreOptions};
use airlock_secrets::Secret;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

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

async fn call(runtime: &Runtime, component: &SharedComponent, input: &str) -> Duration {
    let request = InvokeRequest::action("bench", "list_issues", input).with_credential(
        Credential::ApiKey(Secret::new("ghp_bench_token".to_owned())),
    );
    let started = Instant::now();
    let outcome = runtime.invoke(component, request).await;
    let took = started.elapsed();
    if let Err(error) = &outcome.result {
        eprintln!("list_issues failed: {error:?}");
        std::process::exit(1);
    }
    took
}

async fn metrics(iterations: usize) -> Result<(), String> {
    let (addr, ca) = airlock_testkit::serve_tls(fake_github(), &["api.github.com"]).await;
    let runtime = |metrics: airlock_telemetry::Metrics| -> Result<Runtime, String> {
        let mut options = RuntimeOptions {
            metrics: Arc::new(metrics),
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
        (
            "metrics off",
            runtime(airlock_telemetry::Metrics::disabled())?,
        ),
        (
            "metrics on",
            runtime(airlock_telemetry::Metrics::default())?,
        ),
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
            call(runtime, &components[i], &input).await;
        }
    }
    let mut times = [
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
    ];
    for _ in 0..iterations {
        for (i, (_, runtime)) in sides.iter().enumerate() {
            times[i].push(call(runtime, &components[i], &input).await);
        }
    }
    println!("metrics overhead: list_issues, {iterations} calls per side, interleaved");
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
        "metrics on / off, mean time per call: {:.3} ({:+.1}%; goal at most +3%)",
        means[1] / means[0],
        (means[1] / means[0] - 1.0) * 100.0
    );
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
            detail: json!({"status": 201, "role": "admin", "params": {}}),
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
    metrics(iterations).await?;
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
