//! The REST API end to end, each scenario on SQLite and on PostgreSQL: the quick-start flow,
//! live limits, tenant isolation and roles, problem documents, secrets at rest, readiness.

use airlock::api::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{Body, Db, TestServer, assert_problem, on_both_databases};

on_both_databases!(
    quick_start_flow,
    limits_apply_to_the_next_invocation,
    other_tenants_resources_are_not_found_and_roles_are_enforced,
    errors_are_problem_documents,
    secrets_are_masked_and_encrypted_at_rest,
    health_readiness_and_openapi,
    state_store_caps_keys_per_scope,
    key_rotation_reencrypts_while_the_server_serves,
);

async fn quick_start_flow(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;

    let uploaded = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    assert_eq!(uploaded.body["name"], json!("transform"));
    let version = uploaded.body["version"]
        .as_str()
        .expect("version")
        .to_owned();
    assert!(
        uploaded.body["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    // The same bytes again are the same version: idempotent.
    let again = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_eq!(again.status, 200, "{}", again.text);

    let list = server.get("/v1/connectors", &admin).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body[0]["name"], json!("transform"));
    assert_eq!(list.body[0]["current_version"], json!(version));
    let manifest = server
        .get(
            &format!("/v1/connectors/transform/versions/{version}"),
            &admin,
        )
        .await;
    assert_eq!(manifest.status, 200, "{}", manifest.text);
    assert!(
        manifest.body["manifest"]["actions"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );

    let connection = server
        .post(
            "/v1/connections",
            &admin,
            json!({"connector": "transform", "name": "main"}),
        )
        .await;
    assert_eq!(connection.status, 201, "{}", connection.text);
    let id = connection.body["id"].as_str().expect("id").to_owned();
    let listed = server.get("/v1/connections", &admin).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );

    let input = json!({"data": {"user": {"login": "octocat"}}, "mapping": {"who": "/user/login"}});
    let invoked = server
        .post(
            "/v1/connectors/transform/actions/map/invoke",
            &admin,
            json!({"connection": id, "input": input}),
        )
        .await;
    assert_eq!(invoked.status, 200, "{}", invoked.text);
    assert_eq!(invoked.body["ok"], json!(true), "{}", invoked.text);
    assert_eq!(invoked.body["output"], json!({"who": "octocat"}));
    assert!(
        invoked.body["stats"]["fuel_used"].as_u64().unwrap_or(0) > 0,
        "{}",
        invoked.text
    );
    assert_eq!(invoked.body["connector"]["version"], json!(version));

    let tested = server
        .call(
            Method::POST,
            &format!("/v1/connections/{id}/test"),
            Some(&admin),
            Body::None,
        )
        .await;
    assert_eq!(tested.status, 200, "{}", tested.text);
    // transform keeps the SDK's default test, which passes without a network call.
    assert_eq!(tested.body["ok"], json!(true), "{}", tested.text);
    assert_eq!(tested.body["error"], Value::Null, "{}", tested.text);
    assert_eq!(tested.body["connector"]["name"], json!("transform"));
    assert_eq!(tested.body["stats"]["outbound_requests"], json!(0));

    let usage = server.get("/v1/usage", &admin).await;
    assert_eq!(usage.body["runs_this_hour"], json!(1), "{}", usage.text);
    assert_eq!(usage.body["runs_per_hour"], json!(100));

    // Bad input names the field; an unknown action is not found.
    let bad = server
        .post(
            "/v1/connectors/transform/actions/map/invoke",
            &admin,
            json!({"input": {"data": 1}}),
        )
        .await;
    assert_problem(&bad, 422, "validation");
    let unknown = server
        .post(
            "/v1/connectors/transform/actions/nope/invoke",
            &admin,
            json!({}),
        )
        .await;
    assert_problem(&unknown, 404, "not-found");
    // Inputs above the 64 KiB JSON limit reach the runtime, which applies the tenant's own.
    let big = json!({"input": {"data": {"a": "x".repeat(200 * 1024)}, "fields": ["b"]}});
    let big = server
        .post("/v1/connectors/transform/actions/pick/invoke", &admin, big)
        .await;
    assert_eq!(big.body["ok"], json!(true), "{}", big.text);

    // Just before the deprecation, the version runs by default, with the connection (both
    // fresh in any cache: a removal below must still be seen at once).
    let current = server
        .post(
            "/v1/connectors/transform/actions/map/invoke",
            &admin,
            json!({"connection": id, "input": input}),
        )
        .await;
    assert_eq!(current.body["ok"], json!(true), "{}", current.text);
    let deprecated = server
        .call(
            Method::POST,
            &format!("/v1/connectors/transform/versions/{version}/deprecate"),
            Some(&admin),
            Body::None,
        )
        .await;
    assert_eq!(deprecated.status, 200, "{}", deprecated.text);
    assert_eq!(deprecated.body["deprecated"], json!(true));
    // With its only version deprecated, the connector still runs when the version is named.
    let named = server
        .post(
            "/v1/connectors/transform/actions/map/invoke",
            &admin,
            json!({"input": input, "version": version}),
        )
        .await;
    assert_eq!(named.body["ok"], json!(true), "{}", named.text);
    // Without a version there is none to run, at once: the invocation before the deprecation
    // must not have left the old answer cached.
    assert_problem(
        &server
            .post(
                "/v1/connectors/transform/actions/map/invoke",
                &admin,
                json!({"input": input}),
            )
            .await,
        404,
        "not-found",
    );

    let deleted = server
        .call(
            Method::DELETE,
            &format!("/v1/connections/{id}"),
            Some(&admin),
            Body::None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_problem(
        &server.get(&format!("/v1/connections/{id}"), &admin).await,
        404,
        "not-found",
    );
    // A deleted connection is not used again, though invocations above read it.
    assert_problem(
        &server
            .post(
                "/v1/connectors/transform/actions/map/invoke",
                &admin,
                json!({"connection": id, "input": input, "version": version}),
            )
            .await,
        404,
        "not-found",
    );
}

async fn limits_apply_to_the_next_invocation(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let operator = server.operator();
    assert_eq!(
        server
            .upload(&admin, airlock_test_artifacts::CONNECTOR_TRANSFORM)
            .await
            .status,
        201
    );
    let invoke = || {
        server.post(
            "/v1/connectors/transform/actions/pick/invoke",
            &admin,
            json!({"input": {"data": {"a": 1, "b": 2}, "fields": ["a"]}}),
        )
    };
    assert_eq!(invoke().await.body["ok"], json!(true));

    let limits = server.get("/v1/tenants/acme/limits", &operator).await;
    assert_eq!(limits.body["runs_per_hour"], json!(100), "{}", limits.text);
    assert_eq!(limits.body["max_workflows"], json!(50));

    let put = server
        .put("/v1/tenants/acme/limits", &operator, json!({"fuel": 1000}))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.body["fuel"], json!(1000));
    let starved = invoke().await;
    assert_eq!(starved.status, 200, "{}", starved.text);
    assert_eq!(starved.body["ok"], json!(false));
    assert_eq!(
        starved.body["error"]["kind"],
        json!("fuel_exhausted"),
        "{}",
        starved.text
    );

    // Back to defaults, then a runs-per-hour quota the tenant has already used up.
    assert_eq!(
        server
            .put("/v1/tenants/acme/limits", &operator, json!({}))
            .await
            .status,
        200
    );
    assert_eq!(invoke().await.body["ok"], json!(true));
    let used = server.get("/v1/usage", &admin).await.body["runs_this_hour"].clone();
    assert_eq!(
        server
            .put(
                "/v1/tenants/acme/limits",
                &operator,
                json!({"runs_per_hour": used})
            )
            .await
            .status,
        200
    );
    let over = invoke().await;
    assert_problem(&over, 429, "quota-exceeded");
    assert!(over.headers.get("retry-after").is_some());

    for (body, field) in [
        (json!({"timeout_ms": 300_001}), "timeout_ms"),
        (json!({"runs_per_hour": 501}), "runs_per_hour"),
        (json!({"max_workflows": 201}), "max_workflows"),
        (json!({"fuel": 0}), "fuel"),
    ] {
        let refused = server.put("/v1/tenants/acme/limits", &operator, body).await;
        assert_problem(&refused, 422, "validation");
        assert_eq!(refused.body["field"], json!(field), "{}", refused.text);
    }
    assert_problem(
        &server
            .put("/v1/tenants/acme/limits", &operator, json!({"fule": 1}))
            .await,
        422,
        "validation",
    );
    assert_problem(
        &server
            .put("/v1/tenants/nobody/limits", &operator, json!({}))
            .await,
        404,
        "not-found",
    );

    // PATCH changes the fields it names and keeps the others; null takes a field back to
    // its default; the result is checked as a PUT is, and a refused change changes nothing.
    let set = server
        .put(
            "/v1/tenants/acme/limits",
            &operator,
            json!({"fuel": 5_000_000, "runs_per_hour": 300}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    let patched = server
        .patch(
            "/v1/tenants/acme/limits",
            &operator,
            json!({"max_workflows": 7}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["max_workflows"], json!(7));
    assert_eq!(patched.body["fuel"], json!(5_000_000), "{}", patched.text);
    assert_eq!(
        patched.body["runs_per_hour"],
        json!(300),
        "{}",
        patched.text
    );
    let reset = server
        .patch(
            "/v1/tenants/acme/limits",
            &operator,
            json!({"runs_per_hour": null}),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.text);
    assert_eq!(reset.body["runs_per_hour"], json!(100), "{}", reset.text);
    assert_eq!(reset.body["max_workflows"], json!(7));
    for (body, field) in [
        (json!({"timeout_ms": 300_001}), Some("timeout_ms")),
        (json!({"fule": 1}), None),
        (json!({"fule": null}), Some("fule")),
    ] {
        let refused = server
            .patch("/v1/tenants/acme/limits", &operator, body)
            .await;
        assert_problem(&refused, 422, "validation");
        if let Some(field) = field {
            assert_eq!(refused.body["field"], json!(field), "{}", refused.text);
        }
    }
    assert_problem(
        &server
            .patch("/v1/tenants/acme/limits", &operator, json!([1]))
            .await,
        422,
        "validation",
    );
    let kept = server.get("/v1/tenants/acme/limits", &operator).await;
    assert_eq!(kept.body, reset.body, "a refused PATCH changed the limits");
    // PATCHes of different fields at once all land: none writes back a stale copy.
    let fields = [
        ("max_workflows", 9),
        ("runs_per_hour", 250),
        ("fuel", 4_000_000),
        ("max_log_lines", 500),
        ("retain_runs_days", 40),
        ("retain_access_days", 20),
    ];
    let patches = fields.iter().map(|(field, value)| {
        server.patch(
            "/v1/tenants/acme/limits",
            &operator,
            json!({ *field: value }),
        )
    });
    for reply in futures::future::join_all(patches).await {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let all = server.get("/v1/tenants/acme/limits", &operator).await;
    for (field, value) in fields {
        assert_eq!(
            all.body[field],
            json!(value),
            "{field} was lost: {}",
            all.text
        );
    }
    assert_problem(
        &server
            .patch("/v1/tenants/nobody/limits", &operator, json!({}))
            .await,
        404,
        "not-found",
    );
    assert_problem(
        &server
            .patch("/v1/tenants/acme/limits", &admin, json!({"fuel": 1}))
            .await,
        403,
        "forbidden",
    );
}

async fn other_tenants_resources_are_not_found_and_roles_are_enforced(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let a_admin = server.tenant("tenant-a").await;
    let b_admin = server.tenant("tenant-b").await;
    let a_viewer = server.token(Some("tenant-a"), Role::Viewer);
    let a_editor = server.token(Some("tenant-a"), Role::Editor);

    // Editors upload; viewers cannot.
    assert_problem(
        &server
            .upload(&a_viewer, airlock_test_artifacts::CONNECTOR_TRANSFORM)
            .await,
        403,
        "forbidden",
    );
    let uploaded = server
        .upload(&a_editor, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let version = uploaded.body["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let connection = server
        .post(
            "/v1/connections",
            &a_admin,
            json!({"connector": "transform", "name": "c"}),
        )
        .await;
    assert_eq!(connection.status, 201, "{}", connection.text);
    let id = connection.body["id"].as_str().expect("id").to_owned();

    // Tenant B sees none of A's resources: 404, never A's data.
    for path in [
        format!("/v1/connections/{id}"),
        format!("/v1/connectors/transform/versions/{version}"),
        "/v1/tenants/tenant-a".to_owned(),
        "/v1/tenants/tenant-a/limits".to_owned(),
    ] {
        assert_problem(&server.get(&path, &b_admin).await, 404, "not-found");
    }
    assert_eq!(
        server.get("/v1/connections", &b_admin).await.body,
        json!([])
    );
    assert_eq!(server.get("/v1/connectors", &b_admin).await.body, json!([]));
    let invoke = json!({"connection": id, "input": {"data": {}, "fields": []}});
    assert_problem(
        &server
            .post(
                "/v1/connectors/transform/actions/pick/invoke",
                &b_admin,
                invoke.clone(),
            )
            .await,
        404,
        "not-found",
    );
    assert_problem(
        &server
            .call(
                Method::DELETE,
                &format!("/v1/connections/{id}"),
                Some(&b_admin),
                Body::None,
            )
            .await,
        404,
        "not-found",
    );
    assert_problem(
        &server
            .call(
                Method::POST,
                &format!("/v1/connections/{id}/test"),
                Some(&b_admin),
                Body::None,
            )
            .await,
        404,
        "not-found",
    );
    // B has its own connector of the same name: its connection is still A's, so not found.
    assert_eq!(
        server
            .upload(&b_admin, airlock_test_artifacts::CONNECTOR_TRANSFORM)
            .await
            .status,
        201
    );
    assert_problem(
        &server
            .post(
                "/v1/connectors/transform/actions/pick/invoke",
                &b_admin,
                invoke.clone(),
            )
            .await,
        404,
        "not-found",
    );

    // Viewers read but do not write or invoke.
    assert_eq!(server.get("/v1/connections", &a_viewer).await.status, 200);
    assert_problem(
        &server
            .post(
                "/v1/connections",
                &a_viewer,
                json!({"connector": "transform", "name": "v"}),
            )
            .await,
        403,
        "forbidden",
    );
    assert_problem(
        &server
            .post(
                "/v1/connectors/transform/actions/pick/invoke",
                &a_viewer,
                invoke.clone(),
            )
            .await,
        403,
        "forbidden",
    );
    assert_problem(
        &server
            .call(
                Method::DELETE,
                &format!("/v1/connections/{id}"),
                Some(&a_viewer),
                Body::None,
            )
            .await,
        403,
        "forbidden",
    );
    // Admins do not touch limits or tenants; operators do not act inside a tenant.
    assert_problem(
        &server
            .put("/v1/tenants/tenant-a/limits", &a_admin, json!({"fuel": 1}))
            .await,
        403,
        "forbidden",
    );
    assert_problem(
        &server
            .post("/v1/tenants", &a_admin, json!({"name": "x"}))
            .await,
        403,
        "forbidden",
    );
    assert_problem(&server.get("/v1/tenants", &a_admin).await, 403, "forbidden");
    assert_problem(
        &server.get("/v1/connections", &server.operator()).await,
        403,
        "forbidden",
    );
    // Members read their own tenant.
    assert_eq!(
        server.get("/v1/tenants/tenant-a", &a_viewer).await.status,
        200
    );
}

async fn errors_are_problem_documents(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let operator = server.operator();

    assert_problem(
        &server.get("/v1/nothing-here", &admin).await,
        404,
        "not-found",
    );
    assert_problem(&server.get("/nothing", &admin).await, 404, "not-found");
    assert_problem(
        &server
            .call(Method::DELETE, "/v1/tenants", Some(&operator), Body::None)
            .await,
        405,
        "method-not-allowed",
    );
    assert_problem(
        &server
            .call(Method::PATCH, "/healthz", None, Body::None)
            .await,
        405,
        "method-not-allowed",
    );

    let malformed = server
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&operator),
            Body::Raw("application/json", b"{\"name\": ".to_vec()),
        )
        .await;
    assert_problem(&malformed, 400, "bad-request");
    let wrong_shape = server
        .post("/v1/tenants", &operator, json!({"name": 7}))
        .await;
    assert_problem(&wrong_shape, 422, "validation");
    let not_json = server
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&operator),
            Body::Raw("text/plain", b"hi".to_vec()),
        )
        .await;
    assert_problem(&not_json, 415, "unsupported-media-type");
    let huge = json!({"name": "x".repeat(100 * 1024)});
    assert_problem(
        &server.post("/v1/tenants", &operator, huge).await,
        413,
        "payload-too-large",
    );

    let missing = server
        .call(Method::GET, "/v1/connectors", None, Body::None)
        .await;
    assert_problem(&missing, 401, "unauthorized");
    assert_eq!(
        missing
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_problem(
        &server.get("/v1/connectors", "not-a-token").await,
        401,
        "unauthorized",
    );
    let forged = airlock::api::JwtKeys::new(&airlock::secrets::Secret::new(
        "another-key-another-key-another-key",
    ))
    .issue(
        "x",
        None,
        Role::Operator,
        std::time::Duration::from_secs(60),
    )
    .expect("token");
    assert_problem(
        &server.get("/v1/tenants", &forged).await,
        401,
        "unauthorized",
    );

    let garbage = server
        .call(
            Method::POST,
            "/v1/connectors",
            Some(&admin),
            Body::Raw("application/wasm", b"\0asm not really".to_vec()),
        )
        .await;
    assert_problem(&garbage, 422, "invalid-component");
    let bad_import = server
        .upload(&admin, airlock_test_artifacts::BAD_IMPORT)
        .await;
    assert_problem(&bad_import, 422, "invalid-component");
    let wrong_type = server
        .call(
            Method::POST,
            "/v1/connectors",
            Some(&admin),
            Body::Raw("application/octet-stream", vec![0; 8]),
        )
        .await;
    assert_problem(&wrong_type, 415, "unsupported-media-type");
    assert_problem(
        &server
            .post(
                "/v1/tenants",
                &operator,
                json!({"id": "acme", "name": "again"}),
            )
            .await,
        409,
        "conflict",
    );

    // Nothing internal leaks into any of these.
    for reply in [&malformed, &wrong_shape, &garbage, &bad_import] {
        let text = reply.text.to_lowercase();
        for needle in [
            "select ",
            "insert ",
            "sqlx",
            server.dir.path().to_string_lossy().as_ref(),
            "/work/",
            "/tmp/",
        ] {
            assert!(
                !text.contains(&needle.to_lowercase()),
                "{needle:?} in {}",
                reply.text
            );
        }
    }
}

async fn secrets_are_masked_and_encrypted_at_rest(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    assert_eq!(
        server
            .upload(&admin, airlock_test_artifacts::CONNECTOR_GITHUB)
            .await
            .status,
        201
    );
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());

    let wrong = server
        .post(
            "/v1/connections",
            &admin,
            json!({"connector": "github", "name": "gh", "credential": {"password": canary}}),
        )
        .await;
    assert_problem(&wrong, 422, "validation");
    assert!(!wrong.text.contains(&canary));

    let created = server
        .post(
            "/v1/connections",
            &admin,
            json!({"connector": "github", "name": "gh", "credential": {"api_key": canary}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["credential"], json!({"api_key": "***"}));
    assert_eq!(created.body["auth_type"], json!("api_key"));
    let id = created.body["id"].as_str().expect("id").to_owned();
    for reply in [
        server.get(&format!("/v1/connections/{id}"), &admin).await,
        server.get("/v1/connections", &admin).await,
    ] {
        assert_eq!(reply.status, 200);
        assert!(!reply.text.contains(&canary), "{}", reply.text);
        assert!(reply.text.contains("***"));
    }

    let pool = server.raw_db().await;
    let rows = sqlx::query("SELECT fields, secret FROM connections")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    use sqlx::Row as _;
    let secret: String = rows[0].try_get("secret").expect("secret");
    let fields: String = rows[0].try_get("fields").expect("fields");
    assert!(
        !secret.contains(&canary) && !fields.contains(&canary),
        "plaintext in the row"
    );
    assert!(!secret.is_empty());
    pool.close().await;
    if db == Db::Sqlite {
        for file in ["airlock.db", "airlock.db-wal"] {
            let bytes =
                std::fs::read(server.dir.path().join("data").join(file)).unwrap_or_default();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "plaintext in {file}"
            );
        }
    }
}

async fn health_readiness_and_openapi(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let health = server.call(Method::GET, "/healthz", None, Body::None).await;
    assert_eq!(
        (health.status, health.body["status"].clone()),
        (200, json!("ok"))
    );
    let ready = server.call(Method::GET, "/readyz", None, Body::None).await;
    assert_eq!(
        (ready.status, ready.body["status"].clone()),
        (200, json!("ready")),
        "{}",
        ready.text
    );

    let doc = server
        .call(Method::GET, "/openapi.json", None, Body::None)
        .await;
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().expect("paths");
    for path in [
        "/v1/tenants",
        "/v1/tenants/{id}",
        "/v1/tenants/{id}/limits",
        "/v1/connectors",
        "/v1/connectors/{name}/versions/{version}",
        "/v1/connectors/{name}/versions/{version}/deprecate",
        "/v1/connections",
        "/v1/connections/{id}",
        "/v1/connections/{id}/test",
        "/v1/connectors/{name}/actions/{action}/invoke",
        "/v1/usage",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from /openapi.json"
        );
    }
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());

    // Not ready once the database is gone.
    if db == Db::Sqlite {
        let pool = server.raw_db().await;
        sqlx::query("DROP TABLE _sqlx_migrations")
            .execute(&pool)
            .await
            .expect("drop");
        pool.close().await;
        assert_problem(
            &server.call(Method::GET, "/readyz", None, Body::None).await,
            503,
            "unavailable",
        );
    }
}

async fn state_store_caps_keys_per_scope(db: Db) {
    use airlock::runtime::{StateError, StateScope, StateStore};
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    server.tenant("acme").await;
    server.tenant("other").await;
    let store = airlock::store::Store::connect(&server.database_url, &Default::default())
        .await
        .expect("store");
    let state = airlock::pipeline::DbStateStore::new(store);
    // A tenant that does not exist (or was deleted under a guest still writing) keeps nothing.
    assert!(
        state
            .set(
                &StateScope {
                    tenant: "ghost".into(),
                    connector: "c".into(),
                    connection: None,
                },
                "k",
                b"v".to_vec(),
                2
            )
            .await
            .is_err()
    );
    let scope = |tenant: &str| StateScope {
        tenant: tenant.into(),
        connector: "c".into(),
        connection: None,
    };
    state
        .set(&scope("acme"), "k1", b"1".to_vec(), 2)
        .await
        .expect("k1");
    state
        .set(&scope("acme"), "k2", b"2".to_vec(), 2)
        .await
        .expect("k2");
    assert_eq!(
        state.set(&scope("acme"), "k3", b"3".to_vec(), 2).await,
        Err(StateError::TooManyKeys { max: 2 })
    );
    state
        .set(&scope("acme"), "k1", b"one".to_vec(), 2)
        .await
        .expect("overwrite");
    assert_eq!(
        state.get(&scope("acme"), "k1").await,
        Ok(Some(b"one".to_vec()))
    );
    assert_eq!(state.get(&scope("other"), "k1").await, Ok(None));
    let other_connection = StateScope {
        connection: Some("conn_other".into()),
        ..scope("acme")
    };
    assert_eq!(state.get(&other_connection, "k1").await, Ok(None));
    state
        .set(&scope("other"), "k1", b"x".to_vec(), 2)
        .await
        .expect("other scope");
    state.delete(&scope("acme"), "k2").await.expect("delete");
    state
        .set(&scope("acme"), "k3", b"3".to_vec(), 2)
        .await
        .expect("room again");
    // Concurrent new keys never exceed the cap.
    let writes = (0..10).map(|i| {
        let state = state.clone();
        async move {
            state
                .set(
                    &StateScope {
                        tenant: "acme".into(),
                        connector: "race".into(),
                        connection: None,
                    },
                    &format!("k{i}"),
                    vec![1],
                    3,
                )
                .await
        }
    });
    let results = futures::future::join_all(writes).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
}

async fn test_connection(server: &TestServer, token: &str, id: &str) -> crate::api_support::Reply {
    let path = format!("/v1/connections/{id}/test");
    server
        .call(Method::POST, &path, Some(token), Body::None)
        .await
}

async fn key_rotation_reencrypts_while_the_server_serves(db: Db) {
    use airlock::secrets::{Envelope, Keyring};
    use sqlx::Row as _;
    // Rows rewritten behind the server's back, as another process would: the server sees
    // them once its cached copy is older than the hot-row TTL, moved on a manual clock.
    let clock = airlock::pipeline::ManualClock::new(airlock::store::now_ms());
    let mut options = crate::support::options();
    options.engine.pool_size = 8;
    let Some(server) = TestServer::start_clocked(
        db,
        options,
        |_| {},
        Some(std::sync::Arc::new(clock.clone())),
    )
    .await
    else {
        return;
    };
    let admin = server.tenant("acme").await;
    // A dead-letter webhook's secret is sealed too, and re-encrypted with the rest.
    let hook = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": "https://localhost/acme-dead-letters"}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    // No host is allowed, so testing a connection never leaves the machine.
    let limits = json!({"allowed_hosts": []});
    assert_eq!(
        server
            .put("/v1/tenants/acme/limits", &server.operator(), limits)
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .upload(&admin, airlock_test_artifacts::CONNECTOR_GITHUB)
            .await
            .status,
        201
    );
    let mut ids = Vec::new();
    for name in ["gh1", "gh2"] {
        let body = json!({"connector": "github", "name": name, "credential": {"api_key": format!("key-{name}")}});
        let created = server.post("/v1/connections", &admin, body).await;
        assert_eq!(created.status, 201, "{}", created.text);
        ids.push(created.body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(test_connection(&server, &admin, &ids[0]).await.status, 200);

    // Rotate the key file the server loaded at start, and re-encrypt in pages of one.
    let keys_path = server.dir.path().join("data").join("keys.json");
    let mut keyring = Keyring::load(&keys_path).expect("key file");
    let new_key = keyring.rotate().expect("rotate");
    keyring.save(&keys_path).expect("save");
    let store = airlock::store::Store::connect(&server.database_url, &Default::default())
        .await
        .expect("store");
    let report = airlock::store::reencrypt_secrets(&store, &keyring, 1)
        .await
        .expect("pass");
    assert_eq!((report.reencrypted, report.failed), (3, 0), "{report:?}");
    let again = airlock::store::reencrypt_secrets(&store, &keyring, 1)
        .await
        .expect("second pass");
    assert_eq!(again.reencrypted, 0);

    let pool = server.raw_db().await;
    let rows = sqlx::query("SELECT id, secret FROM connections ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("rows");
    let secrets: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("secret").expect("secret"))
        .collect();
    assert!(
        secrets
            .iter()
            .all(|s| s.starts_with(&Envelope::prefix(&new_key))),
        "{secrets:?}"
    );
    let hook_secret: String = sqlx::query("SELECT secret FROM dead_letter_hooks")
        .fetch_one(&pool)
        .await
        .expect("the hook")
        .try_get("secret")
        .expect("secret");
    assert!(hook_secret.starts_with(&Envelope::prefix(&new_key)));

    // The server still holds the old keyring: it reloads the file on the new key id.
    clock.advance_ms(airlock::pipeline::HOT_ROW_TTL.as_millis() as i64);
    let after = test_connection(&server, &admin, &ids[0]).await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert!(after.body["ok"].is_boolean());

    // An envelope moved to another connection's row does not decrypt (associated data).
    let moved = if rows[0].try_get::<String, _>("id").expect("id") == ids[0] {
        &secrets[1]
    } else {
        &secrets[0]
    };
    sqlx::query("UPDATE connections SET secret = $1 WHERE id = $2")
        .bind(moved)
        .bind(&ids[0])
        .execute(&pool)
        .await
        .expect("move envelope");
    pool.close().await;
    clock.advance_ms(airlock::pipeline::HOT_ROW_TTL.as_millis() as i64);
    let refused = test_connection(&server, &admin, &ids[0]).await;
    assert_problem(&refused, 500, "internal");
    assert!(!refused.text.contains("key-gh"), "{}", refused.text);
}
