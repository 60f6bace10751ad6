//! Access history: calls per token subject, route template and minute, readable by the
//! tenant's admins and by the operator (`?tenant=`), never by another tenant. Both databases.

use std::time::Duration;

use airlock_api::Role;
use serde_json::Value;

use crate::api_support::{Db, TestServer, on_both_databases};
use crate::runs_support::start;

on_both_databases!(calls_are_counted_per_subject_route_and_minute,);

/// Polls `/v1/access` until a row for `subject` appears (flushes come every few seconds).
async fn history(server: &TestServer, token: &str, path: &str, subject: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = server.get(path, token).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let rows = reply.body.as_array().cloned().unwrap_or_default();
        if rows.iter().any(|r| r["subject"] == subject) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access rows: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn calls_are_counted_per_subject_route_and_minute(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    server.tenant("acme").await;
    server.tenant("globex").await;
    let alice = server.token_for("alice@acme.test", Some("acme"), Role::Viewer);
    for _ in 0..3 {
        assert_eq!(server.get("/v1/workflows", &alice).await.status, 200);
    }
    let missing = server.get("/v1/workflows/wf_nope", &alice).await;
    assert_eq!(missing.status, 404);
    // An unauthenticated call has no subject to count.
    server
        .call(
            axum::http::Method::GET,
            "/v1/workflows",
            None,
            crate::api_support::Body::None,
        )
        .await;

    let admin = server.token_for("root@acme.test", Some("acme"), Role::Admin);
    let rows = history(&server, &admin, "/v1/access", "alice@acme.test").await;
    let row = |route: &str| {
        rows.iter()
            .find(|r| r["subject"] == "alice@acme.test" && r["route"] == route)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {route}: {rows:?}"))
    };
    let listed = row("/v1/workflows");
    assert_eq!(
        (listed["calls"].as_i64(), listed["errors"].as_i64()),
        (Some(3), Some(0))
    );
    assert_eq!(listed["method"], "GET");
    assert_eq!(listed["minute_ms"].as_i64().map(|m| m % 60_000), Some(0));
    let one = row("/v1/workflows/{id}");
    assert_eq!(
        (one["calls"].as_i64(), one["errors"].as_i64()),
        (Some(1), Some(1))
    );
    // The path itself is never stored, only its template.
    assert!(
        !serde_json::to_string(&rows)
            .unwrap_or_default()
            .contains("wf_nope")
    );

    // A viewer does not read it; the operator does, naming the tenant; another tenant sees
    // none of it.
    assert_eq!(server.get("/v1/access", &alice).await.status, 403);
    let operator_rows = history(
        &server,
        &server.operator(),
        "/v1/access?tenant=acme",
        "alice@acme.test",
    )
    .await;
    assert!(!operator_rows.is_empty());
    let globex = server.token_for("eve@globex.test", Some("globex"), Role::Admin);
    let theirs = server.get("/v1/access", &globex).await;
    assert!(!theirs.text.contains("alice@acme.test"), "{}", theirs.text);
    let sideways = server.get("/v1/access?tenant=acme", &globex).await;
    assert_eq!(sideways.status, 404, "{}", sideways.text);

    // Retention removes minutes before its horizon.
    let far = airlock::store::now_ms() / 60_000 + 1;
    let removed = server
        .state
        .store()
        .prune_access("acme", far)
        .await
        .expect("prune");
    assert!(removed >= 2, "{removed}");
    assert_eq!(
        server.get("/v1/access", &admin).await.body,
        serde_json::json!([])
    );
}
