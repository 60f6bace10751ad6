//! What the durable-run and trigger tests share: a server with fast workers, a tenant with
//! the hostile connector, workflows, runs and waiting for them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::api_support::{Db, TestServer};
use crate::support::options;

pub fn fast_workers(config: &mut airlock::config::Config) {
    config.run_poll = Duration::from_millis(50);
    config.run_heartbeat = Duration::from_millis(100);
    config.run_lease = Duration::from_secs(5);
    config.run_reap_every = Duration::from_millis(200);
    config.worker_grace = Duration::from_secs(2);
}

pub async fn start(db: Db) -> Option<TestServer> {
    let mut options = options();
    options.engine.pool_size = 8;
    TestServer::start_configured(db, options, fast_workers).await
}

/// A tenant with the hostile connector uploaded; returns its admin token.
pub async fn tenant_with_hostile(server: &TestServer, id: &str) -> String {
    let admin = server.tenant(id).await;
    let uploaded = server.upload(&admin, airlock_test_artifacts::HOSTILE).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    admin
}

pub async fn create_workflow(server: &TestServer, token: &str, name: &str, steps: Value) -> String {
    let reply = server
        .post(
            "/v1/workflows",
            token,
            json!({"name": name, "steps": steps}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_str().expect("id").to_owned()
}

pub async fn start_run(server: &TestServer, token: &str, workflow: &str, input: Value) -> String {
    let reply = server
        .post(
            &format!("/v1/workflows/{workflow}/runs"),
            token,
            json!({"input": input}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["id"].as_str().expect("id").to_owned()
}

/// Polls the run until `done` holds (30 s at most).
pub async fn wait_for(
    server: &TestServer,
    token: &str,
    run: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = server.get(&format!("/v1/runs/{run}"), token).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if done(&reply.body) {
            return reply.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run never got there: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn in_state(state: &'static str) -> impl Fn(&Value) -> bool {
    move |run| run["state"] == state
}

pub fn ended(run: &Value) -> bool {
    matches!(
        run["state"].as_str(),
        Some("succeeded" | "dead" | "cancelled")
    )
}

pub async fn runs_this_hour(server: &TestServer, token: &str) -> i64 {
    let usage = server.get("/v1/usage", token).await;
    usage.body["runs_this_hour"]
        .as_i64()
        .expect("runs_this_hour")
}

/// The operator sets `tenant`'s limits (the fields given; the rest take their defaults).
pub async fn put_limits(server: &TestServer, tenant: &str, limits: Value) {
    let reply = server
        .put(
            &format!("/v1/tenants/{tenant}/limits"),
            &server.operator(),
            limits,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Waits until the clock hour has at least three minutes left: `runs_per_hour` starts again
/// at the hour's turn, and a test counting against it must not straddle one.
pub async fn away_from_hour_turn() {
    while airlock::store::now_ms() % 3_600_000 > 3_420_000 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
