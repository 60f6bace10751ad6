//! The one invocation pipeline through the API: which refusals charge a run, and guest state
//! scoped by connection. Both databases.

use serde_json::{Value, json};

use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};

on_both_databases!(
    refusals_before_admission_leave_usage_unchanged,
    guest_state_is_scoped_by_connection_and_tenant,
    a_connection_and_its_state_are_deleted_together,
);

const INVOKE_SLEEP: &str = "/v1/connectors/hostile/actions/sleep/invoke";

async fn runs_this_hour(server: &TestServer, token: &str) -> i64 {
    let usage = server.get("/v1/usage", token).await;
    assert_eq!(usage.status, 200, "{}", usage.text);
    usage.body["runs_this_hour"]
        .as_i64()
        .expect("runs_this_hour")
}

async fn refusals_before_admission_leave_usage_unchanged(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let uploaded = server.upload(&admin, airlock_test_artifacts::HOSTILE).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let limits = server
        .put(
            "/v1/tenants/acme/limits",
            &server.operator(),
            json!({"runs_per_hour": 2, "max_input_bytes": 64}),
        )
        .await;
    assert_eq!(limits.status, 200, "{}", limits.text);

    // Each refused before the guest could run: none may count.
    let unknown = server
        .post(
            "/v1/connectors/hostile/actions/no_such_action/invoke",
            &admin,
            json!({}),
        )
        .await;
    assert_problem(&unknown, 404, "not-found");
    let schema = server
        .post(INVOKE_SLEEP, &admin, json!({"input": {"ms": "soon"}}))
        .await;
    assert_problem(&schema, 422, "validation");
    assert_eq!(schema.body["field"], json!("/input/ms"), "{}", schema.text);
    let too_large = server
        .post(
            INVOKE_SLEEP,
            &admin,
            json!({"input": {"ms": 0, "pad": "x".repeat(100)}}),
        )
        .await;
    assert_problem(&too_large, 422, "validation");
    let no_version = server
        .post(
            INVOKE_SLEEP,
            &admin,
            json!({"input": {"ms": 0}, "version": "9.9.9"}),
        )
        .await;
    assert_problem(&no_version, 404, "not-found");
    let no_connection = server
        .post(
            INVOKE_SLEEP,
            &admin,
            json!({"input": {"ms": 0}, "connection": "conn_missing"}),
        )
        .await;
    assert_problem(&no_connection, 404, "not-found");
    assert_eq!(runs_this_hour(&server, &admin).await, 0);

    // Runs that passed their checks count, up to the limit; the refusals above still do not
    // count even at the limit, and are still answered as what they are (not 429).
    for expected in 1..=2 {
        let ran = server
            .post(INVOKE_SLEEP, &admin, json!({"input": {"ms": 0}}))
            .await;
        assert_eq!(ran.status, 200, "{}", ran.text);
        assert_eq!(runs_this_hour(&server, &admin).await, expected);
    }
    let schema = server
        .post(INVOKE_SLEEP, &admin, json!({"input": {"ms": "soon"}}))
        .await;
    assert_problem(&schema, 422, "validation");
    let over = server
        .post(INVOKE_SLEEP, &admin, json!({"input": {"ms": 0}}))
        .await;
    assert_problem(&over, 429, "quota-exceeded");
    assert_eq!(runs_this_hour(&server, &admin).await, 2);
}

async fn connection(server: &TestServer, token: &str, name: &str) -> String {
    let created = server
        .post(
            "/v1/connections",
            token,
            json!({"connector": "hostile", "name": name, "credential": {"api_key": "k"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.body["id"].as_str().expect("id").to_owned()
}

async fn state_call(
    server: &TestServer,
    token: &str,
    action: &str,
    connection: Option<&str>,
    input: Value,
) -> Value {
    let mut body = json!({ "input": input });
    if let Some(connection) = connection {
        body["connection"] = json!(connection);
    }
    let reply = server
        .post(
            &format!("/v1/connectors/hostile/actions/{action}/invoke"),
            token,
            body,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["ok"], json!(true), "{}", reply.text);
    reply.body["output"]["value"].clone()
}

async fn guest_state_is_scoped_by_connection_and_tenant(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let acme = server.tenant("acme").await;
    let other = server.tenant("other").await;
    for token in [&acme, &other] {
        let uploaded = server.upload(token, airlock_test_artifacts::HOSTILE).await;
        assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    }
    let first = connection(&server, &acme, "first account").await;
    let second = connection(&server, &acme, "second account").await;
    let theirs = connection(&server, &other, "their account").await;

    let cursor = json!({"key": "cursor", "value": "page-7"});
    let written = state_call(&server, &acme, "state_roundtrip", Some(&first), cursor).await;
    assert_eq!(written, json!("page-7"));
    let read = || json!({"key": "cursor"});
    // The same connection reads its cursor back...
    assert_eq!(
        state_call(&server, &acme, "state_get", Some(&first), read()).await,
        json!("page-7")
    );
    // ...another connection of the same connector does not see it, nor do invocations
    // without a connection, nor another tenant.
    assert_eq!(
        state_call(&server, &acme, "state_get", Some(&second), read()).await,
        Value::Null
    );
    assert_eq!(
        state_call(&server, &acme, "state_get", None, read()).await,
        Value::Null
    );
    assert_eq!(
        state_call(&server, &other, "state_get", Some(&theirs), read()).await,
        Value::Null
    );
    // The second connection keeps its own value under the same key.
    let own = json!({"key": "cursor", "value": "page-1"});
    state_call(&server, &acme, "state_roundtrip", Some(&second), own).await;
    assert_eq!(
        state_call(&server, &acme, "state_get", Some(&first), read()).await,
        json!("page-7")
    );
}

async fn a_connection_and_its_state_are_deleted_together(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let acme = server.tenant("acme").await;
    let uploaded = server.upload(&acme, airlock_test_artifacts::HOSTILE).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let kept = connection(&server, &acme, "kept").await;
    let dropped = connection(&server, &acme, "dropped").await;
    for id in [&kept, &dropped] {
        state_call(
            &server,
            &acme,
            "state_roundtrip",
            Some(id),
            json!({"key": "k", "value": "v"}),
        )
        .await;
    }
    let deleted = server
        .delete(&format!("/v1/connections/{dropped}"), &acme)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    use sqlx::Row as _;
    let db = server.raw_db().await;
    let rows: Vec<String> =
        sqlx::query("SELECT connection_id FROM connector_state WHERE tenant_id = $1")
            .bind("acme")
            .fetch_all(&db)
            .await
            .expect("rows")
            .iter()
            .map(|row| row.try_get("connection_id").expect("connection_id"))
            .collect();
    assert_eq!(rows, vec![kept.clone()]);

    // A guest of the deleted connection still running cannot bring its state back.
    use airlock::runtime::StateStore as _;
    let store = airlock::store::Store::connect(&server.database_url, &Default::default())
        .await
        .expect("store");
    let state = airlock::pipeline::DbStateStore::new(store);
    let scope = |connection: &str| airlock::model::StateScope {
        tenant: "acme".into(),
        connector: "hostile".into(),
        connection: Some(connection.into()),
    };
    assert!(
        state
            .set(&scope(&dropped), "late", b"v".to_vec(), 10)
            .await
            .is_err()
    );
    state
        .set(&scope(&kept), "late", b"v".to_vec(), 10)
        .await
        .expect("a live connection's write");
    let orphans: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM connector_state WHERE tenant_id = $1 AND connection_id = $2",
    )
    .bind("acme")
    .bind(&dropped)
    .fetch_one(&db)
    .await
    .expect("count")
    .try_get("n")
    .expect("n");
    assert_eq!(orphans, 0);
}
