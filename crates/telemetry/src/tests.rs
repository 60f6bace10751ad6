#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::collections::HashSet;
use std::time::Duration;

use super::*;

/// The distinct values of `label` among the series of `metric` in `text`.
fn label_values(text: &str, metric: &str, label: &str) -> HashSet<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .filter_map(|line| {
            let start = line.find(&needle)? + needle.len();
            let end = line[start..].find('"')?;
            Some(line[start..start + end].to_owned())
        })
        .collect()
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn counters_move_and_encode_as_openmetrics() {
    let metrics = Metrics::default();
    metrics.http_request("/v1/runs/{id}", "GET", 200, Duration::from_millis(3));
    metrics.http_request("/v1/runs/{id}", "GET", 200, Duration::from_millis(3));
    metrics.run_finished("acme", RunOutcome::Dead, Duration::from_secs(2));
    metrics.webhook(WebhookOutcome::InvalidSignature);
    metrics.set_queue(7, Duration::from_millis(1500));
    let text = metrics.encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        value(
            &text,
            r#"airlock_http_requests_total{route="/v1/runs/{id}",method="GET",status="200"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"airlock_runs_finished_total{tenant="acme",outcome="dead"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"airlock_webhook_deliveries_total{outcome="invalid_signature"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "airlock_queue_depth"), Some(7.0));
    assert_eq!(
        value(&text, "airlock_queue_oldest_waiting_seconds"),
        Some(1.5)
    );
    assert!(text.contains(r#"airlock_build_info{version=""#), "{text}");
}

#[test]
fn the_tenant_cap_holds_with_2000_tenants_and_counts_the_rest_under_overflow() {
    let metrics = Metrics::new(500);
    for i in 0..2_000 {
        let tenant = format!("t{i}");
        metrics.run_finished(&tenant, RunOutcome::Succeeded, Duration::from_secs(1));
        metrics.invocation(&tenant, None);
        metrics.limit_hit(&tenant, "fuel_exhausted");
    }
    let text = metrics.encode();
    for metric in [
        "airlock_runs_finished_total",
        "airlock_invocations_total",
        "airlock_tenant_limit_hits_total",
    ] {
        let tenants = label_values(&text, metric, "tenant");
        assert_eq!(tenants.len(), 501, "{metric}");
        assert!(tenants.contains(OVERFLOW), "{metric}");
        assert!(
            tenants.contains("t0") && !tenants.contains("t500"),
            "{metric}"
        );
    }
    assert_eq!(
        value(
            &text,
            r#"airlock_runs_finished_total{tenant="_other",outcome="succeeded"}"#
        ),
        Some(1_500.0)
    );
    // A tenant kept before the cap filled keeps its own series afterwards.
    metrics.run_finished("t0", RunOutcome::Succeeded, Duration::from_secs(1));
    let text = metrics.encode();
    assert_eq!(
        value(
            &text,
            r#"airlock_runs_finished_total{tenant="t0",outcome="succeeded"}"#
        ),
        Some(2.0)
    );
}

#[test]
fn label_values_from_callers_stay_in_closed_sets() {
    let metrics = Metrics::default();
    for i in 0..100 {
        metrics.step_attempt(Some(&format!("made_up_{i}")));
        metrics.dead_letter(&format!("made_up_{i}"));
        metrics.http_request("/v1/runs", &format!("M{i}"), 200, Duration::ZERO);
        metrics.outbound(Some(600 + i));
    }
    metrics.step_attempt(Some("timeout"));
    metrics.step_attempt(None);
    let text = metrics.encode();
    assert_eq!(
        label_values(&text, "airlock_step_attempts_total", "result"),
        HashSet::from(["other".to_owned(), "timeout".to_owned(), "ok".to_owned()])
    );
    assert_eq!(
        label_values(&text, "airlock_dead_letters_total", "kind"),
        HashSet::from(["other".to_owned()])
    );
    assert_eq!(
        label_values(&text, "airlock_http_requests_total", "method"),
        HashSet::from(["other".to_owned()])
    );
    assert_eq!(
        label_values(&text, "airlock_outbound_requests_total", "class"),
        HashSet::from(["other".to_owned()])
    );
}

#[test]
fn every_family_the_alerts_and_dashboard_name_is_exposed() {
    let metrics = Metrics::default();
    // One of everything, since a family without a series is not written.
    metrics.http_request("/v1/runs", "GET", 200, Duration::ZERO);
    metrics.run_created("api");
    metrics.run_started(Duration::ZERO);
    metrics.run_finished("t", RunOutcome::Succeeded, Duration::ZERO);
    metrics.step_attempt(None);
    metrics.step_retry("timeout");
    metrics.dead_letter("timeout");
    metrics.set_queue(0, Duration::ZERO);
    metrics.invocation("t", Some("timeout"));
    metrics.limit_hit("t", "timeout");
    metrics.outbound(Some(200));
    metrics.webhook(WebhookOutcome::Accepted);
    metrics.cron_ticks(CronTick::Fired, 1);
    metrics.set_pool(0, 1);
    metrics.admission_wait(Duration::ZERO);
    metrics.set_db_pool(0, 0, 1);
    metrics.db_acquire(Duration::ZERO);
    metrics.set_ready(true);
    let text = metrics.encode();
    let listed = include_str!("../../../ops/metrics.txt");
    let names: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(names.len() >= 20);
    for name in names {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "ops/metrics.txt names {name}, which /metrics does not expose:\n{text}"
        );
    }
}
