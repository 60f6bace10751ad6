//! Refusals that must leave nothing behind and skip no check: refused uploads keep no compiled
//! artifact, a tenant's concurrent uploads are bounded, tokens of tenants that do not exist
//! write nothing, names and state keys with control, bidirectional or invisible characters
//! are refused before they reach the database, deprecation can be undone, and the data
//! directory is private.

use std::path::Path;

use airlock::api::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{Body, Db, TestServer, assert_problem, on_both_databases};

on_both_databases!(
    ghost_tenant_tokens_are_refused_and_write_nothing,
    names_with_control_bidi_or_invisible_characters_are_refused,
    state_keys_with_bad_characters_get_the_state_error,
    deprecation_can_be_undone,
);

/// A server whose artifact cache is its own empty directory (the shared test cache is
/// written by every other test at once).
async fn server_with_own_cache(db: Db) -> Option<(TestServer, tempfile::TempDir)> {
    let cache = tempfile::tempdir().expect("cache dir");
    let mut options = crate::support::options();
    options.engine.pool_size = 8;
    options.cache_dir = Some(cache.path().to_owned());
    let server = TestServer::start_with(db, options).await?;
    Some((server, cache))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `bytes` with a custom section appended: another digest, the very same manifest.
fn with_custom_section(bytes: &[u8]) -> Vec<u8> {
    let name = b"airlock-test";
    let payload = b"other bytes, same name and version";
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(1 + name.len() + payload.len()).expect("small section"));
    out.push(u8::try_from(name.len()).expect("small name"));
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_leave_no_compiled_artifact() {
    let (server, cache) = server_with_own_cache(Db::Sqlite).await.expect("sqlite");
    let admin = server.tenant("acme").await;
    let upload = |bytes: Vec<u8>| {
        server.call(
            Method::POST,
            "/v1/connectors",
            Some(&admin),
            Body::Raw("application/wasm", bytes),
        )
    };
    // A component that compiles and is then refused (an import outside the contract).
    let bad_import = std::fs::read(airlock_test_artifacts::BAD_IMPORT).expect("built");
    assert_problem(&upload(bad_import).await, 422, "invalid-component");
    assert_eq!(files_in(cache.path()), Vec::<String>::new());

    // An accepted upload keeps exactly one artifact.
    let hostile = std::fs::read(airlock_test_artifacts::HOSTILE).expect("built");
    let accepted = upload(hostile.clone()).await;
    assert_eq!(accepted.status, 201, "{}", accepted.text);
    let kept = files_in(cache.path());
    assert_eq!(kept.len(), 1, "{kept:?}");

    // The same name and version with other bytes compiles, is refused, and keeps nothing.
    let conflicting = upload(with_custom_section(&hostile)).await;
    assert_problem(&conflicting, 409, "conflict");
    assert_eq!(files_in(cache.path()), kept);
    // Nor is it kept in memory: uploading it again compiles it again and is refused again.
    assert_problem(
        &upload(with_custom_section(&hostile)).await,
        409,
        "conflict",
    );
    assert_eq!(files_in(cache.path()), kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_compile_bound_is_refused_while_another_compiles() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let busy = server.tenant("busy").await;
    let quiet = server.tenant("quiet").await;
    // Hold every slot of `busy`, as its own uploads still compiling would.
    let slots = server.state.compile_slots();
    let held: Vec<_> = (0..slots.per_tenant())
        .map(|_| slots.try_acquire("busy").expect("a free slot"))
        .collect();
    let refused = server
        .upload(&busy, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_problem(&refused, 429, "too-many-requests");
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let other = server
        .upload(&quiet, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_eq!(other.status, 201, "{}", other.text);
    drop(held);
    let later = server
        .upload(&busy, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_eq!(later.status, 201, "{}", later.text);
}

async fn count(server: &TestServer, table: &str, tenant: &str) -> i64 {
    use sqlx::Row as _;
    let db = server.raw_db().await;
    sqlx::query(&format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_one(&db)
    .await
    .expect("count")
    .try_get::<i64, _>("n")
    .expect("n")
}

async fn ghost_tenant_tokens_are_refused_and_write_nothing(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    // A real tenant with a connector, so that only the tenant's existence is at stake.
    let real = server.tenant("acme").await;
    let uploaded = server.upload(&real, airlock_test_artifacts::HOSTILE).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);

    let ghost = server.token(Some("ghost"), Role::Admin);
    let upload = server.upload(&ghost, airlock_test_artifacts::HOSTILE).await;
    assert_problem(&upload, 401, "unauthorized");
    let connection = server
        .post(
            "/v1/connections",
            &ghost,
            json!({"connector": "hostile", "name": "c", "credential": {"api_key": "k"}}),
        )
        .await;
    assert_problem(&connection, 401, "unauthorized");
    assert!(
        connection.text.contains("tenant does not exist"),
        "{}",
        connection.text
    );
    for (method, path) in [
        (Method::GET, "/v1/connectors"),
        (Method::GET, "/v1/connections"),
        (Method::GET, "/v1/usage"),
        (Method::GET, "/v1/tenants/ghost"),
        (
            Method::POST,
            "/v1/connectors/hostile/versions/0.1.0/deprecate",
        ),
    ] {
        let reply = server.call(method, path, Some(&ghost), Body::None).await;
        assert_problem(&reply, 401, "unauthorized");
    }
    let invoked = server
        .post(
            "/v1/connectors/hostile/actions/echo/invoke",
            &ghost,
            json!({"input": {"n": 1}}),
        )
        .await;
    assert_problem(&invoked, 401, "unauthorized");
    for table in [
        "connectors",
        "component_blobs",
        "connections",
        "usage_hours",
        "connector_state",
    ] {
        assert_eq!(count(&server, table, "ghost").await, 0, "{table}");
    }
    // A tenant id no tenant can have (a NUL) is refused the same way, without a query that
    // fails (PostgreSQL would answer 503 on the NUL).
    let malformed = server.token(Some("a\u{0}b"), Role::Admin);
    assert_problem(
        &server.get("/v1/connectors", &malformed).await,
        401,
        "unauthorized",
    );
    // The real tenant is untouched by all this.
    assert_eq!(server.get("/v1/connectors", &real).await.status, 200);
}

const BAD_NAMES: &[&str] = &[
    "a\u{0}b",
    "line\nbreak",
    "bell\u{7}",
    "invoice\u{202E}fdp.exe",
    "iso\u{2066}late\u{2069}",
    "zero\u{200B}width",
    "joiner\u{200D}",
    "\u{FEFF}bom",
];

async fn names_with_control_bidi_or_invisible_characters_are_refused(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let operator = server.operator();
    for name in BAD_NAMES {
        let reply = server
            .post("/v1/tenants", &operator, json!({"id": "t1", "name": name}))
            .await;
        assert_problem(&reply, 422, "validation");
        assert_eq!(reply.body["field"], json!("name"), "{name:?}");
    }
    assert_eq!(
        server
            .get("/v1/tenants", &operator)
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let admin = server.tenant("acme").await;
    let uploaded = server.upload(&admin, airlock_test_artifacts::HOSTILE).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    for name in BAD_NAMES {
        let reply = server
            .post(
                "/v1/connections",
                &admin,
                json!({"connector": "hostile", "name": name, "credential": {"api_key": "k"}}),
            )
            .await;
        assert_problem(&reply, 422, "validation");
        assert_eq!(reply.body["field"], json!("name"), "{name:?}");
        let reply = server
            .post(
                "/v1/connections",
                &admin,
                json!({"connector": name, "name": "ok", "credential": {"api_key": "k"}}),
            )
            .await;
        assert_problem(&reply, 422, "validation");
        assert_eq!(reply.body["field"], json!("connector"), "{name:?}");
    }
    assert_eq!(count(&server, "connections", "acme").await, 0);
    // Ordinary names in any script are fine.
    let fine = server
        .post(
            "/v1/connections",
            &admin,
            json!({"connector": "hostile", "name": "Überweisung – 数据", "credential": {"api_key": "k"}}),
        )
        .await;
    assert_eq!(fine.status, 201, "{}", fine.text);

    // Lookups by such names find nothing, on both databases, and never fail as a query.
    for path in [
        "/v1/connectors/a%00b/versions/0.1.0",
        "/v1/connectors/hostile/versions/0.1.0%00",
        "/v1/connections/conn%00x",
        "/v1/tenants/a%00b",
    ] {
        let reply = server.get(path, &admin).await;
        assert_problem(&reply, 404, "not-found");
    }
    let invoked = server
        .post(
            "/v1/connectors/hostile/actions/echo/invoke",
            &admin,
            json!({"input": {"n": 1}, "connection": "conn\u{0}", "version": "0.1.0"}),
        )
        .await;
    assert_problem(&invoked, 404, "not-found");
    let invoked = server
        .post(
            "/v1/connectors/hostile/actions/echo/invoke",
            &admin,
            json!({"input": {"n": 1}, "version": "0.1.0\u{0}"}),
        )
        .await;
    assert_problem(&invoked, 404, "not-found");
    let limits = server
        .put("/v1/tenants/a%00b/limits", &operator, json!({}))
        .await;
    assert_problem(&limits, 404, "not-found");
}

async fn state_keys_with_bad_characters_get_the_state_error(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let uploaded = server.upload(&admin, airlock_test_artifacts::HOSTILE).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    for key in ["a\u{0}b", "cursor\u{202E}", "zero\u{200B}width", "tab\tkey"] {
        let reply = server
            .post(
                "/v1/connectors/hostile/actions/state_roundtrip/invoke",
                &admin,
                json!({"input": {"key": key, "value": "v"}}),
            )
            .await;
        assert_eq!(reply.status, 200, "{key:?}: {}", reply.text);
        assert_eq!(reply.body["ok"], json!(false), "{key:?}: {}", reply.text);
        assert_eq!(
            reply.body["error"]["kind"],
            json!("state_limit"),
            "{key:?}: {}",
            reply.text
        );
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("too-large: the key contains U+"),
            "{key:?}: {message}"
        );
    }
    // The state store is untouched, and an ordinary key still works.
    assert_eq!(count(&server, "connector_state", "acme").await, 0);
    let reply = server
        .post(
            "/v1/connectors/hostile/actions/state_roundtrip/invoke",
            &admin,
            json!({"input": {"key": "cursor/é", "value": "v"}}),
        )
        .await;
    assert_eq!(
        reply.body["output"],
        json!({"value": "v"}),
        "{}",
        reply.text
    );
}

async fn deprecation_can_be_undone(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let viewer = server.token(Some("acme"), Role::Viewer);
    let uploaded = server.upload(&admin, airlock_test_artifacts::HOSTILE).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let current =
        |reply: &crate::api_support::Reply| -> Value { reply.body[0]["current_version"].clone() };
    let path = "/v1/connectors/hostile/versions/0.1.0";
    let deprecated = server
        .call(
            Method::POST,
            &format!("{path}/deprecate"),
            Some(&admin),
            Body::None,
        )
        .await;
    assert_eq!(
        deprecated.body["deprecated"],
        json!(true),
        "{}",
        deprecated.text
    );
    assert_eq!(
        current(&server.get("/v1/connectors", &admin).await),
        Value::Null
    );
    // Without a version named, nothing runs while it is deprecated.
    let invoke = |version: Option<&str>| {
        let mut body = json!({"input": {"n": 1}});
        if let Some(version) = version {
            body["version"] = json!(version);
        }
        server.post("/v1/connectors/hostile/actions/echo/invoke", &admin, body)
    };
    assert_problem(&invoke(None).await, 404, "not-found");

    let by_viewer = server
        .call(
            Method::POST,
            &format!("{path}/undeprecate"),
            Some(&viewer),
            Body::None,
        )
        .await;
    assert_problem(&by_viewer, 403, "forbidden");
    for _ in 0..2 {
        // Idempotent: undoing twice answers the same.
        let undone = server
            .call(
                Method::POST,
                &format!("{path}/undeprecate"),
                Some(&admin),
                Body::None,
            )
            .await;
        assert_eq!(undone.status, 200, "{}", undone.text);
        assert_eq!(undone.body["deprecated"], json!(false), "{}", undone.text);
    }
    assert_eq!(
        current(&server.get("/v1/connectors", &admin).await),
        json!("0.1.0")
    );
    let ran = invoke(None).await;
    assert_eq!(ran.status, 200, "{}", ran.text);
    assert_eq!(ran.body["ok"], json!(true), "{}", ran.text);
    let missing = server
        .call(
            Method::POST,
            "/v1/connectors/hostile/versions/9.9.9/undeprecate",
            Some(&admin),
            Body::None,
        )
        .await;
    assert_problem(&missing, 404, "not-found");
    let documented = server
        .call(Method::GET, "/openapi.json", None, Body::None)
        .await;
    assert!(
        documented.body["paths"]["/v1/connectors/{name}/versions/{version}/undeprecate"]["post"]
            .is_object(),
        "undeprecate is missing from the OpenAPI document"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = airlock::config::Config::dev(dir.path().join("data"));
    let service = config
        .start_service(config.runtime_options())
        .await
        .expect("service starts");
    // Write to the database (WAL and shared-memory files appear) and compile a component into
    // the artifact cache.
    service
        .state
        .store()
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    service
        .state
        .runtime()
        .load_file(airlock_test_artifacts::CONNECTOR_TRANSFORM.as_ref())
        .await
        .expect("loads");
    let mut seen = Vec::new();
    let mut pending = vec![config.data_dir.clone()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        let name = path.display().to_string();
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{name} is {mode:o}");
            for entry in std::fs::read_dir(&path).expect("read dir") {
                pending.push(entry.expect("entry").path());
            }
        } else {
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
        }
        seen.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    for expected in [
        "airlock.db",
        "airlock.db-wal",
        "airlock.db-shm",
        "jwt.key",
        "keys.json",
        "artifacts",
    ] {
        assert!(
            seen.iter().any(|n| n.as_deref() == Some(expected)),
            "{expected} not found in {seen:?}"
        );
    }
    service.state.store().close().await;
}
