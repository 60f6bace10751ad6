//! `GET /metrics`: who may read it, and figures that move as the API, the workers, the
//! sandbox and the webhook endpoint act. Both databases.

use axum::http::Method;
use serde_json::json;

use crate::api_support::{Body, Db, TestServer, on_both_databases};
use crate::runs_support::{
    create_workflow, ended, put_limits, start, start_run, tenant_with_hostile, wait_for,
};

on_both_databases!(
    metrics_need_an_operator_and_count_by_route_template,
    figures_move_with_runs_limits_and_refused_webhooks,
);

/// The value of the series written exactly as `series` (name and labels), 0 when absent.
pub(crate) fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub(crate) async fn scrape(server: &TestServer) -> String {
    let reply = server
        .call(
            Method::GET,
            "/metrics",
            Some(&server.operator()),
            Body::None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        reply.content_type
    );
    reply.text
}

async fn metrics_need_an_operator_and_count_by_route_template(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let anonymous = server.call(Method::GET, "/metrics", None, Body::None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    // A tenant's admin does not read other tenants' figures.
    let tenant = server
        .call(Method::GET, "/metrics", Some(&admin), Body::None)
        .await;
    assert_eq!(tenant.status, 403, "{}", tenant.text);

    let text = scrape(&server).await;
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(value(&text, "airlock_ready"), 1.0, "{text}");
    assert!(value(&text, r#"airlock_db_pool_connections{state="max"}"#) >= 1.0);
    assert_eq!(value(&text, "airlock_pool_slots"), 8.0);
    // The request that created the tenant, under its route template.
    assert_eq!(
        value(
            &text,
            r#"airlock_http_requests_total{route="/v1/tenants",method="POST",status="201"}"#
        ),
        1.0,
        "{text}"
    );
    // A path no route matches never becomes a series of its own.
    server
        .call(
            Method::GET,
            "/v1/no/such/path/7f3a",
            Some(&admin),
            Body::None,
        )
        .await;
    let text = scrape(&server).await;
    assert!(!text.contains("7f3a"), "{text}");
    assert!(
        value(
            &text,
            r#"airlock_http_requests_total{route="unmatched",method="GET",status="404"}"#
        ) >= 1.0
    );
}

async fn figures_move_with_runs_limits_and_refused_webhooks(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let before = scrape(&server).await;

    // A run that succeeds, and one that dies on its first attempt.
    let good = create_workflow(
        &server,
        &admin,
        "good",
        json!([{"id": "a", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;
    let run = start_run(&server, &admin, &good, json!({})).await;
    assert_eq!(
        wait_for(&server, &admin, &run, ended).await["state"],
        "succeeded"
    );
    put_limits(&server, "acme", json!({"fuel": 5_000_000})).await;
    let bad = create_workflow(
        &server,
        &admin,
        "bad",
        json!([{"id": "burn", "connector": "hostile", "action": "spin",
            "retry": {"max_attempts": 1}}]),
    )
    .await;
    let run = start_run(&server, &admin, &bad, json!({})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");

    // Webhooks refused before anything is stored.
    let unknown = server
        .call(
            Method::POST,
            "/hooks/trg_nope",
            None,
            Body::Raw("application/json", b"{}".to_vec()),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let huge = server
        .call(
            Method::POST,
            "/hooks/trg_nope",
            None,
            Body::Raw(
                "application/json",
                vec![b' '; airlock_api::MAX_HOOK_BODY + 1],
            ),
        )
        .await;
    assert_eq!(huge.status, 413, "{}", huge.text);

    let after = scrape(&server).await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        moved(r#"airlock_runs_created_total{trigger="api"}"#),
        2.0,
        "{after}"
    );
    assert_eq!(
        moved(r#"airlock_runs_finished_total{tenant="acme",outcome="succeeded"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"airlock_runs_finished_total{tenant="acme",outcome="dead"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"airlock_dead_letters_total{kind="fuel_exhausted"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"airlock_limit_hits_total{kind="fuel_exhausted"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"airlock_tenant_limit_hits_total{tenant="acme"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"airlock_invocations_total{tenant="acme",outcome="error"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"airlock_invocation_errors_total{kind="fuel_exhausted"}"#),
        1.0
    );
    assert_eq!(moved(r#"airlock_step_attempts_total{result="ok"}"#), 1.0);
    assert_eq!(
        moved(r#"airlock_step_attempts_total{result="fuel_exhausted"}"#),
        1.0
    );
    assert_eq!(moved("airlock_runs_started_total"), 2.0);
    assert_eq!(moved("airlock_run_schedule_to_start_seconds_count"), 2.0);
    assert_eq!(
        moved(r#"airlock_webhook_deliveries_total{outcome="unknown_trigger"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"airlock_webhook_deliveries_total{outcome="too_large"}"#),
        1.0
    );
    assert_eq!(value(&after, "airlock_queue_depth"), 0.0);
}
