//! Scrape time and series count at 1,000 tenants × 20 connectors of activity, and the cost
//! of recording one event. `cargo bench -p airlock-telemetry --bench scrape`.

use std::time::{Duration, Instant};

use airlock_telemetry::{CronTick, Metrics, RunOutcome, WebhookOutcome};

const TENANTS: usize = 1_000;
const CONNECTORS: usize = 20;
const SCRAPES: usize = 200;

fn main() {
    let metrics = Metrics::default();
    let kinds = ["ok", "timeout", "fuel_exhausted", "upstream", "auth"];
    let routes = [
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/workflows/{id}/runs",
        "/v1/connectors/{name}/actions/{action}/invoke",
        "/hooks/{id}",
    ];
    let started = Instant::now();
    let mut events = 0u64;
    for t in 0..TENANTS {
        let tenant = format!("tenant-{t:04}");
        for c in 0..CONNECTORS {
            let kind = kinds[(t + c) % kinds.len()];
            let error = (kind != "ok").then_some(kind);
            metrics.invocation(&tenant, error);
            metrics.step_attempt(error);
            if let Some(kind) = error {
                metrics.limit_hit(&tenant, kind);
                metrics.step_retry(kind);
            }
            metrics.outbound(Some(200 + 100 * (c % 4) as u16));
            metrics.http_request(
                routes[c % routes.len()],
                "POST",
                202,
                Duration::from_millis(2),
            );
            events += 6;
        }
        metrics.run_created("webhook");
        metrics.run_finished(&tenant, RunOutcome::Succeeded, Duration::from_secs(1));
        metrics.run_finished(&tenant, RunOutcome::Dead, Duration::from_secs(3));
        metrics.webhook(WebhookOutcome::Accepted);
        metrics.cron_ticks(CronTick::Fired, 1);
        events += 5;
    }
    let record_ns = started.elapsed().as_nanos() as f64 / events as f64;

    let mut times: Vec<Duration> = Vec::with_capacity(SCRAPES);
    let mut bytes = 0;
    let mut series = 0;
    for _ in 0..SCRAPES {
        let start = Instant::now();
        let text = metrics.encode();
        times.push(start.elapsed());
        bytes = text.len();
        series = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .count();
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!("activity: {TENANTS} tenants x {CONNECTORS} connectors, {events} events recorded");
    println!("record: {record_ns:.0} ns/event (mean, first touch of each series included)");
    println!(
        "series exposed: {series} (bucket lines included), {} KiB a scrape",
        bytes / 1024
    );
    println!(
        "scrape (encode): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {SCRAPES} scrapes (goal p99 < 100 ms)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}
