//! `cargo bench -p airlock --bench declarative`: what running an action as data costs
//! against the same action written in Rust. The GitHub code connector
//! (`connectors/github`) and its declarative twin (`connectors/declarative/github.json`)
//! run `list_issues` (one page of 30 issues) and `create_issue` against one local HTTPS fake
//! of GitHub, interleaved call by call in one process, same runtime, same credential. Prints
//! each side's latency percentiles and the difference at p50 (the goal: at most +1 ms).
//!
//! `AIRLOCK_BENCH_ITERATIONS` sets the timed calls per side and action (default 2000; 50
//! under `cargo test --benches`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::runtime::outbound::Credential;
use airlock::runtime::{InvokeRequest, Runtime, RuntimeOptions, SharedComponent};
use airlock_secrets::Secret;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

fn issue(number: u64) -> Value {
    json!({
        "number": number,
        "title": format!("Issue {number}: something is off"),
        "state": "open",
        "html_url": format!("https://github.com/octo/repo/issues/{number}"),
        "body": "A paragraph of text describing the problem in a few sentences, as issues do.",
        "user": {"login": "octocat", "id": 1},
        "labels": [{"name": "bug"}, {"name": "p-1"}],
        "comments": 3,
        "created_at": "2026-12-01T10:00:00Z",
    })
}

fn fake_github() -> Router {
    let page: Value = (1..=30).map(issue).collect();
    Router::new().route(
        "/repos/{owner}/{repo}/issues",
        get(move || {
            let page = page.clone();
            async move { axum::Json(page) }
        })
        .post(|| async { (axum::http::StatusCode::CREATED, axum::Json(issue(31))) }),
    )
}

struct Side {
    name: &'static str,
    component: SharedComponent,
    list: String,
    create: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

async fn call(runtime: &Runtime, side: &Side, action: &str, input: &str) -> Duration {
    let request = InvokeRequest::action("bench", action, input).with_credential(
        Credential::ApiKey(Secret::new("ghp_bench_token".to_owned())),
    );
    let started = Instant::now();
    let outcome = runtime.invoke(&side.component, request).await;
    let took = started.elapsed();
    if let Err(error) = &outcome.result {
        eprintln!("{} {action} failed: {error:?}", side.name);
        std::process::exit(1);
    }
    took
}

async fn run(iterations: usize) -> Result<(), String> {
    let (addr, ca) = airlock_testkit::serve_tls(fake_github(), &["api.github.com"]).await;
    let mut options = RuntimeOptions::default();
    options.engine.pool_size = 4;
    options.outbound.allowed_private_ranges =
        vec!["127.0.0.0/8".parse().map_err(|e| format!("{e}"))?];
    options
        .outbound
        .resolve_overrides
        .insert("api.github.com".into(), vec![addr]);
    options.outbound.extra_root_certificates = vec![ca];
    let runtime = Runtime::new(options).map_err(|e| e.to_string())?;

    let rust =
        std::fs::read(airlock_test_artifacts::CONNECTOR_GITHUB).map_err(|e| e.to_string())?;
    let definition = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../connectors/declarative/github.json"
    ))
    .map_err(|e| e.to_string())?;
    let sides = [
        Side {
            name: "rust",
            component: runtime.load(&rust).await.map_err(|e| e.to_string())?,
            list: json!({"owner": "octo", "repo": "repo", "state": "open", "per_page": 30})
                .to_string(),
            create:
                json!({"owner": "octo", "repo": "repo", "title": "Found a bug", "body": "Steps"})
                    .to_string(),
        },
        Side {
            name: "declarative",
            component: runtime.load(&definition).await.map_err(|e| e.to_string())?,
            list: json!({"path": {"owner": "octo", "repo": "repo"},
                "query": {"state": "open", "per_page": 30}})
            .to_string(),
            create: json!({"path": {"owner": "octo", "repo": "repo"},
                "body": {"title": "Found a bug", "body": "Steps"}})
            .to_string(),
        },
    ];
    let runtime = Arc::new(runtime);
    // Warm both: connections, the pool's slots, the allocator.
    for side in &sides {
        for _ in 0..20 {
            call(&runtime, side, "list_issues", &side.list).await;
            call(&runtime, side, "create_issue", &side.create).await;
        }
    }
    println!("declarative overhead, {iterations} calls per side and action, interleaved");
    println!(
        "{:<13} {:<13} {:>9} {:>9} {:>9}",
        "action", "side", "p50 ms", "p95 ms", "p99 ms"
    );
    for (action, pick) in [
        (
            "list_issues",
            (|s: &Side| s.list.clone()) as fn(&Side) -> String,
        ),
        ("create_issue", |s: &Side| s.create.clone()),
    ] {
        let mut times = [
            Vec::with_capacity(iterations),
            Vec::with_capacity(iterations),
        ];
        for _ in 0..iterations {
            for (i, side) in sides.iter().enumerate() {
                times[i].push(call(&runtime, side, action, &pick(side)).await);
            }
        }
        let mut p50 = [Duration::ZERO; 2];
        for (i, side) in sides.iter().enumerate() {
            times[i].sort();
            p50[i] = percentile(&times[i], 0.50);
            println!(
                "{:<13} {:<13} {:>9.3} {:>9.3} {:>9.3}",
                action,
                side.name,
                ms(p50[i]),
                ms(percentile(&times[i], 0.95)),
                ms(percentile(&times[i], 0.99)),
            );
        }
        println!(
            "{:<13} declarative - rust at p50: {:+.3} ms (ratio {:.2})",
            action,
            ms(p50[1]) - ms(p50[0]),
            ms(p50[1]) / ms(p50[0]),
        );
    }
    Ok(())
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let iterations = std::env::var("AIRLOCK_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 50 } else { 2_000 });
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
