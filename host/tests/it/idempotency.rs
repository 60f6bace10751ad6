//! Idempotency keys of run creation through the API, both databases: a key reused with
//! another request is refused (422 for `Idempotency-Key`, 409 for a webhook delivery id),
//! the same request gets its run (200), keys expire after `--idempotency-ttl`, and the
//! sweep that expires them also removes the claim-rotation rows of tenants gone quiet.

use std::time::Duration;

use airlock::triggers::webhook::Scheme;
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::api_support::{Db, Reply, TestServer, assert_problem, on_both_databases};
use crate::runs_support::{create_workflow, ended, fast_workers, tenant_with_hostile, wait_for};
use crate::support::options;
use crate::triggers::{deliver, signed, webhook};

on_both_databases!(
    a_key_reused_with_another_request_is_422,
    a_delivery_id_reused_with_another_body_is_409,
    keys_expire_and_quiet_tenants_leave_the_rotation,
);

async fn start_with_ttl(db: Db, ttl: Duration) -> Option<TestServer> {
    let mut options = options();
    options.engine.pool_size = 8;
    TestServer::start_configured(db, options, |config| {
        fast_workers(config);
        config.idempotency_ttl = ttl;
    })
    .await
}

fn echo(id: &str) -> Value {
    json!([{"id": id, "connector": "hostile", "action": "echo",
            "input": {"n": {"$from": "/trigger/n"}}}])
}

/// `POST /v1/workflows/{workflow}/runs` with `Idempotency-Key: key`.
async fn post_run(
    server: &TestServer,
    token: &str,
    workflow: &str,
    key: &str,
    input: Value,
) -> Reply {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/workflows/{workflow}/runs", server.base))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(json!({"input": input}).to_string())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    Reply {
        status,
        content_type,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

async fn a_key_reused_with_another_request_is_422(db: Db) {
    let Some(server) = start_with_ttl(db, Duration::from_secs(3600)).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let first = create_workflow(&server, &admin, "first", echo("a")).await;
    let second = create_workflow(&server, &admin, "second", echo("b")).await;

    let created = post_run(
        &server,
        &admin,
        &first,
        "order-7",
        json!({"n": 1, "m": [1, 2]}),
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.text);
    let run = created.body["id"].clone();

    // The same request, its members in another order: the same run, nothing new.
    let again = post_run(
        &server,
        &admin,
        &first,
        "order-7",
        json!({"m": [1, 2], "n": 1}),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["id"], run);

    // Another body.
    let other_body = post_run(
        &server,
        &admin,
        &first,
        "order-7",
        json!({"n": 2, "m": [1, 2]}),
    )
    .await;
    assert_problem(&other_body, 422, "validation");
    assert_eq!(
        other_body.body["field"], "Idempotency-Key",
        "{}",
        other_body.text
    );
    assert!(
        other_body.text.contains("another request"),
        "{}",
        other_body.text
    );
    assert_ne!(other_body.body["id"], run);

    // Another workflow, the same body.
    let other_workflow = post_run(
        &server,
        &admin,
        &second,
        "order-7",
        json!({"n": 1, "m": [1, 2]}),
    )
    .await;
    assert_problem(&other_workflow, 422, "validation");

    // Nothing was created by the refusals, and the first request still gets its run.
    let listed = server.get("/v1/runs", &admin).await;
    assert_eq!(
        listed.body["runs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
    let again = post_run(
        &server,
        &admin,
        &first,
        "order-7",
        json!({"n": 1, "m": [1, 2]}),
    )
    .await;
    assert_eq!(
        (again.status, &again.body["id"]),
        (200, &run),
        "{}",
        again.text
    );
}

async fn a_delivery_id_reused_with_another_body_is_409(db: Db) {
    let Some(server) = start_with_ttl(db, Duration::from_secs(3600)).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(&server, &admin, "hooked", echo("a")).await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let now_s = airlock::store::now_ms() / 1000;

    let body = br#"{"n": 1}"#;
    let headers = signed(Scheme::StandardWebhooks, &secret, "evt_1", now_s, body);
    let first = deliver(&server, &hook, &headers, body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let run = first.body["run_id"].clone();

    // A redelivery: the same id and body, signed again later.
    let headers = signed(Scheme::StandardWebhooks, &secret, "evt_1", now_s + 1, body);
    let again = deliver(&server, &hook, &headers, body).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(
        (&again.body["run_id"], &again.body["duplicate"]),
        (&run, &json!(true))
    );

    // The same id with another body, correctly signed: refused, never answered with the run.
    let changed = br#"{"n": 2}"#;
    let headers = signed(Scheme::StandardWebhooks, &secret, "evt_1", now_s, changed);
    let reused = deliver(&server, &hook, &headers, changed).await;
    assert_problem(&reused, 409, "conflict");
    assert!(reused.text.contains("another body"), "{}", reused.text);
    assert!(reused.body.get("run_id").is_none(), "{}", reused.text);
    let listed = server.get("/v1/runs", &admin).await;
    assert_eq!(
        listed.body["runs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
}

async fn keys_expire_and_quiet_tenants_leave_the_rotation(db: Db) {
    let ttl = Duration::from_secs(2);
    let Some(server) = start_with_ttl(db, ttl).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(&server, &admin, "once", echo("a")).await;
    let created = post_run(&server, &admin, &workflow, "k-1", json!({"n": 1})).await;
    assert_eq!(created.status, 202, "{}", created.text);
    let first = created.body["id"].as_str().expect("id").to_owned();
    let done = wait_for(&server, &admin, &first, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let again = post_run(&server, &admin, &workflow, "k-1", json!({"n": 1})).await;
    assert_eq!(
        (again.status, again.body["id"].as_str()),
        (200, Some(first.as_str()))
    );

    let pool = server.raw_db().await;
    let rotation = || async {
        sqlx::query("SELECT tenant_id FROM run_tenants WHERE tenant_id = 'acme'")
            .fetch_optional(&pool)
            .await
            .expect("run_tenants")
            .is_some()
    };
    assert!(rotation().await, "a tenant with runs has its row");

    // Past the lifetime (and a sweep or two), the key is free and the quiet tenant's row gone.
    let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(10);
    loop {
        let key: Option<String> = sqlx::query("SELECT idempotency_key FROM runs WHERE id = $1")
            .bind(&first)
            .fetch_one(&pool)
            .await
            .expect("run")
            .try_get("idempotency_key")
            .expect("key");
        if key.is_none() && !rotation().await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep never cleared the key ({key:?}) or the tenant's row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The same key, even with another body, now makes a new run; the tenant gets its row
    // back and the run runs.
    let renewed = post_run(&server, &admin, &workflow, "k-1", json!({"n": 2})).await;
    assert_eq!(renewed.status, 202, "{}", renewed.text);
    let second = renewed.body["id"].as_str().expect("id").to_owned();
    assert_ne!(second, first);
    assert!(rotation().await, "a new run writes the row again");
    let done = wait_for(&server, &admin, &second, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
}
