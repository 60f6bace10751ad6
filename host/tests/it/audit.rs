//! The audit trail: every state-changing route of `/openapi.json` writes exactly one record
//! (a route the scenario below does not cover fails the test), with actor, tenant, action,
//! target and request id, in a hash chain that `airlock audit verify` checks; the database
//! refuses to change or remove records. A change and its record commit together: when the
//! record cannot be written, the change is not made. Both databases.

use std::collections::BTreeSet;
use std::process::Command;

use airlock_api::Role;
use axum::http::Method;
use serde_json::{Value, json};

use crate::api_support::{Body, Db, Reply, TestServer, on_both_databases};
use crate::runs_support::{create_workflow, ended, in_state, start, wait_for};

on_both_databases!(
    every_change_writes_one_chained_record_and_verify_finds_tampering,
    audit_records_cannot_be_updated_deleted_or_truncated,
    a_change_whose_record_cannot_be_written_is_not_made,
);

/// Every record, newest first, as the operator sees them.
async fn records(server: &TestServer) -> Vec<Value> {
    let reply = server.get("/v1/audit?limit=500", &server.operator()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body.as_array().expect("records").clone()
}

/// The routes of the document that change something, as `METHOD /template`.
async fn changing_routes(server: &TestServer) -> BTreeSet<String> {
    let doc = server.get("/openapi.json", &server.operator()).await.body;
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["post", "put", "patch", "delete"] {
            if item.get(method).is_some() && path.starts_with("/v1/") {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

struct Scenario<'a> {
    server: &'a TestServer,
    covered: BTreeSet<String>,
}

impl Scenario<'_> {
    /// Makes the call (which must succeed) and checks that exactly `records` new records
    /// appeared, each with `action`, the caller as actor, and the call's request id.
    async fn change(
        &mut self,
        route: &str,
        (method, path): (Method, String),
        token: &str,
        actor: &str,
        body: Body<'_>,
        (action, count): (&str, usize),
    ) -> Reply {
        let before = records(self.server).await.len();
        let reply = self.server.call(method, &path, Some(token), body).await;
        assert!(
            (200..300).contains(&reply.status),
            "{route}: {}",
            reply.text
        );
        let request_id = reply
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("every answer has a request id")
            .to_owned();
        let after = records(self.server).await;
        assert_eq!(
            after.len() - before,
            count,
            "{route} wrote {} records: {:#?}",
            after.len() - before,
            &after[..after.len() - before]
        );
        for record in &after[..count] {
            assert_eq!(record["action"], json!(action), "{route}: {record}");
            assert_eq!(record["actor"], json!(actor), "{route}: {record}");
            if !matches!(action, "cancel" | "replay") {
                assert_eq!(record["request_id"], json!(request_id), "{route}: {record}");
                assert_eq!(record["tenant_id"], json!("acme"), "{route}: {record}");
            }
        }
        self.covered.insert(route.to_owned());
        reply
    }
}

fn id(reply: &Reply) -> String {
    reply.body["id"].as_str().expect("id").to_owned()
}

async fn every_change_writes_one_chained_record_and_verify_finds_tampering(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let operator = server.token_for("ops@example.com", None, Role::Operator);
    let mut s = Scenario {
        server: &server,
        covered: BTreeSet::new(),
    };
    let post = |path: &str| (Method::POST, path.to_owned());
    let one = |action: &'static str| (action, 1usize);

    s.change(
        "POST /v1/tenants",
        post("/v1/tenants"),
        &operator,
        "ops@example.com",
        Body::Json(json!({"id": "acme", "name": "Acme"})),
        one("POST /v1/tenants"),
    )
    .await;
    s.change(
        "PUT /v1/tenants/{id}/limits",
        (Method::PUT, "/v1/tenants/acme/limits".into()),
        &operator,
        "ops@example.com",
        Body::Json(json!({"fuel": 5_000_000})),
        one("PUT /v1/tenants/{id}/limits"),
    )
    .await;
    s.change(
        "PATCH /v1/tenants/{id}/limits",
        (Method::PATCH, "/v1/tenants/acme/limits".into()),
        &operator,
        "ops@example.com",
        Body::Json(json!({"max_workflows": 20})),
        one("PATCH /v1/tenants/{id}/limits"),
    )
    .await;
    let alice = server.token_for("alice@acme.test", Some("acme"), Role::Admin);
    let a = "alice@acme.test";
    let wasm = |path: &str| std::fs::read(path).expect("guest built");
    let hostile = s
        .change(
            "POST /v1/connectors",
            post("/v1/connectors"),
            &alice,
            a,
            Body::Raw("application/wasm", wasm(airlock_test_artifacts::HOSTILE)),
            one("POST /v1/connectors"),
        )
        .await;
    let version = hostile.body["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let records_now = records(&server).await;
    assert_eq!(
        records_now[0]["target"],
        json!(format!("hostile@{version}")),
        "{:?}",
        records_now[0]
    );
    for verb in ["deprecate", "undeprecate"] {
        let route = format!("POST /v1/connectors/{{name}}/versions/{{version}}/{verb}");
        s.change(
            &route,
            post(&format!("/v1/connectors/hostile/versions/{version}/{verb}")),
            &alice,
            a,
            Body::None,
            (route.as_str(), 1),
        )
        .await;
    }
    s.change(
        "POST /v1/connectors",
        post("/v1/connectors"),
        &alice,
        a,
        Body::Raw(
            "application/wasm",
            wasm(airlock_test_artifacts::CONNECTOR_HTTP),
        ),
        one("POST /v1/connectors"),
    )
    .await;
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let connection = s
        .change(
            "POST /v1/connections",
            post("/v1/connections"),
            &alice,
            a,
            Body::Json(json!({"connector": "http", "name": "crm",
                "credential": {"api_key": canary},
                "config": {"credential_hosts": ["api.crm.test"]}})),
            one("POST /v1/connections"),
        )
        .await;
    let connection = id(&connection);
    let replaced = format!("canary-{}", uuid::Uuid::new_v4().simple());
    s.change(
        "PATCH /v1/connections/{id}",
        (Method::PATCH, format!("/v1/connections/{connection}")),
        &alice,
        a,
        Body::Json(json!({"credential": {"api_key": replaced}})),
        one("PATCH /v1/connections/{id}"),
    )
    .await;
    s.change(
        "DELETE /v1/connections/{id}",
        (Method::DELETE, format!("/v1/connections/{connection}")),
        &alice,
        a,
        Body::None,
        one("DELETE /v1/connections/{id}"),
    )
    .await;

    let steps = json!([{"id": "burn", "connector": "hostile", "action": "spin",
        "retry": {"max_attempts": 1}}]);
    let workflow = s
        .change(
            "POST /v1/workflows",
            post("/v1/workflows"),
            &alice,
            a,
            Body::Json(json!({"name": "burner", "steps": steps})),
            one("POST /v1/workflows"),
        )
        .await;
    let workflow = id(&workflow);
    s.change(
        "PUT /v1/workflows/{id}",
        (Method::PUT, format!("/v1/workflows/{workflow}")),
        &alice,
        a,
        Body::Json(json!({"name": "burner", "steps": steps})),
        one("PUT /v1/workflows/{id}"),
    )
    .await;
    let trigger = s
        .change(
            "POST /v1/workflows/{id}/triggers",
            post(&format!("/v1/workflows/{workflow}/triggers")),
            &alice,
            a,
            Body::Json(json!({"kind": "webhook"})),
            one("POST /v1/workflows/{id}/triggers"),
        )
        .await;
    let trigger = id(&trigger);
    // The secret shown once is not in the audit log.
    let secret = trigger_secret(&server, &alice, &trigger).await;
    for verb in ["pause", "resume", "rotate-secret"] {
        let route = format!("POST /v1/triggers/{{id}}/{verb}");
        s.change(
            &route,
            post(&format!("/v1/triggers/{trigger}/{verb}")),
            &alice,
            a,
            if verb == "rotate-secret" {
                Body::Json(json!({}))
            } else {
                Body::None
            },
            (route.as_str(), 1),
        )
        .await;
    }
    s.change(
        "DELETE /v1/triggers/{id}",
        (Method::DELETE, format!("/v1/triggers/{trigger}")),
        &alice,
        a,
        Body::None,
        one("DELETE /v1/triggers/{id}"),
    )
    .await;

    let run = s
        .change(
            "POST /v1/workflows/{id}/runs",
            post(&format!("/v1/workflows/{workflow}/runs")),
            &alice,
            a,
            Body::Json(json!({"input": {}})),
            one("POST /v1/workflows/{id}/runs"),
        )
        .await;
    let run = id(&run);
    assert_eq!(records(&server).await[0]["target"], json!(run));
    wait_for(&server, &alice, &run, in_state("dead")).await;
    s.change(
        "POST /v1/runs/{id}/replay",
        post(&format!("/v1/runs/{run}/replay")),
        &alice,
        a,
        Body::Json(json!({})),
        one("replay"),
    )
    .await;
    wait_for(&server, &alice, &run, in_state("dead")).await;
    s.change(
        "POST /v1/dead-letters/replay",
        post("/v1/dead-letters/replay"),
        &alice,
        a,
        Body::Json(json!({"run_ids": [run]})),
        one("replay"),
    )
    .await;
    wait_for(&server, &alice, &run, ended).await;

    let sleeper = create_workflow(
        &server,
        &alice,
        "sleeper",
        json!([{"id": "nap", "connector": "hostile", "action": "sleep", "input": {"ms": 30000}}]),
    )
    .await;
    let started = server
        .post(
            &format!("/v1/workflows/{sleeper}/runs"),
            &alice,
            json!({"input": {}}),
        )
        .await;
    let sleeping = id(&started);
    s.change(
        "POST /v1/runs/{id}/cancel",
        post(&format!("/v1/runs/{sleeping}/cancel")),
        &alice,
        a,
        Body::None,
        one("cancel"),
    )
    .await;
    s.change(
        "DELETE /v1/workflows/{id}",
        (Method::DELETE, format!("/v1/workflows/{workflow}")),
        &alice,
        a,
        Body::None,
        one("DELETE /v1/workflows/{id}"),
    )
    .await;
    let hook = s
        .change(
            "PUT /v1/dead-letters/webhook",
            (Method::PUT, "/v1/dead-letters/webhook".into()),
            &alice,
            a,
            Body::Json(json!({"url": "https://localhost/acme-dead-letters"})),
            one("PUT /v1/dead-letters/webhook"),
        )
        .await;
    assert_eq!(records(&server).await[0]["target"], hook.body["id"]);
    let rotated = s
        .change(
            "PUT /v1/dead-letters/webhook",
            (Method::PUT, "/v1/dead-letters/webhook".into()),
            &alice,
            a,
            Body::Json(
                json!({"url": "https://localhost/acme-dead-letters", "rotate_secret": true}),
            ),
            one("PUT /v1/dead-letters/webhook"),
        )
        .await;
    let record = &records(&server).await[0];
    let hook_secret = rotated.body["secret"].as_str().expect("the new secret");
    assert!(
        !record.to_string().contains(hook_secret),
        "no secret in the audit: {record}"
    );
    s.change(
        "DELETE /v1/dead-letters/webhook",
        (Method::DELETE, "/v1/dead-letters/webhook".into()),
        &alice,
        a,
        Body::None,
        one("DELETE /v1/dead-letters/webhook"),
    )
    .await;

    // The shared catalog is the platform's: its changes are in the platform's chain ("").
    let published = server
        .call(
            Method::POST,
            "/v1/catalog/connectors",
            Some(&operator),
            Body::Raw(
                "application/wasm",
                wasm(airlock_test_artifacts::CONNECTOR_TRANSFORM),
            ),
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.text);
    let shared = published.body["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let mut catalog_routes = vec![(
        "POST /v1/catalog/connectors".to_owned(),
        "POST /v1/catalog/connectors".to_owned(),
    )];
    for verb in ["deprecate", "undeprecate"] {
        let reply = server
            .post(
                &format!("/v1/catalog/connectors/transform/versions/{shared}/{verb}"),
                &operator,
                Value::Null,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let route = format!("POST /v1/catalog/connectors/{{name}}/versions/{{version}}/{verb}");
        catalog_routes.push((route.clone(), route));
    }
    let now = records(&server).await;
    for (i, (route, action)) in catalog_routes.iter().rev().enumerate() {
        let record = &now[i];
        assert_eq!(record["tenant_id"], "", "{route}: {record}");
        assert_eq!(record["action"], json!(action), "{route}: {record}");
        assert_eq!(record["actor"], "ops@example.com", "{route}: {record}");
        s.covered.insert(route.clone());
    }

    // Another tenant's lifecycle: suspend and resume are its own records; its deletion
    // removes its chain with the rest of it, and is the platform's record (tenant "").
    let made = server
        .post(
            "/v1/tenants",
            &operator,
            json!({"id": "gone", "name": "Gone"}),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text);
    for verb in ["suspend", "resume", "suspend"] {
        let reply = server
            .post(&format!("/v1/tenants/gone/{verb}"), &operator, Value::Null)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let record = &records(&server).await[0];
        assert_eq!(record["tenant_id"], "gone", "{record}");
        assert_eq!(
            record["action"],
            json!(format!("POST /v1/tenants/{{id}}/{verb}")),
            "{record}"
        );
        assert_eq!(record["actor"], "ops@example.com", "{record}");
        s.covered.insert(format!("POST /v1/tenants/{{id}}/{verb}"));
    }
    let deleted = server.delete("/v1/tenants/gone", &operator).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let after = records(&server).await;
    assert!(
        after.iter().all(|r| r["tenant_id"] != "gone"),
        "the deleted tenant's chain is left"
    );
    let record = &after[0];
    assert_eq!(
        (&record["tenant_id"], &record["action"], &record["target"]),
        (
            &json!(""),
            &json!("DELETE /v1/tenants/{id}"),
            &json!("gone")
        ),
        "{record}"
    );
    s.covered.insert("DELETE /v1/tenants/{id}".to_owned());

    // Calls that change nothing durable write nothing.
    let before = records(&server).await.len();
    let invoked = server
        .post(
            "/v1/connectors/hostile/actions/echo/invoke",
            &alice,
            json!({"input": {"n": 1}}),
        )
        .await;
    assert_eq!(invoked.status, 200, "{}", invoked.text);
    assert_eq!(records(&server).await.len(), before);
    for (method, route) in airlock_api::UNAUDITED {
        s.covered.insert(format!("{method} {route}"));
    }

    // Every changing route of the document is in the scenario: a new route without an
    // audit record (or without a line above) fails here.
    let missing: Vec<String> = changing_routes(&server)
        .await
        .difference(&s.covered)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "routes the audit scenario does not cover: {missing:?}"
    );

    // A tenant's admin reads its own records; naming another tenant is 404, as if it did not
    // exist.
    let own = server.get("/v1/audit?limit=500", &alice).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert!(
        own.body
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["tenant_id"] == "acme"))
    );
    let other = server.get("/v1/audit?tenant=other", &alice).await;
    assert_eq!(other.status, 404, "{}", other.text);
    let all = records(&server).await.to_vec();
    let text = serde_json::to_string(&all).expect("json");
    assert!(!text.contains(&canary), "a credential is in the audit log");
    assert!(
        !text.contains(&replaced),
        "a replaced credential is in the audit log"
    );
    assert!(
        !text.contains(&secret),
        "a webhook secret is in the audit log"
    );

    // The chain verifies; a record edited behind the database's back is found.
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["audit", "verify", "--database-url", &server.database_url])
            .arg("--data-dir")
            .arg(server.dir.path())
            .output()
            .expect("run airlock")
    };
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok: "), "{stdout}");
    let victim = all
        .iter()
        .find(|r| r["action"] == "DELETE /v1/connections/{id}")
        .expect("the deletion's record");
    tamper(&server, db, victim["id"].as_str().expect("id")).await;
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(victim["id"].as_str().unwrap_or_default()),
        "{stdout}"
    );
}

async fn trigger_secret(server: &TestServer, token: &str, trigger: &str) -> String {
    let rotated = server
        .post(
            &format!("/v1/triggers/{trigger}/rotate-secret"),
            token,
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    rotated.body["secret"]
        .as_str()
        .unwrap_or("no-secret")
        .to_owned()
}

/// What an attacker with the database's owner rights does: lift the guard, rewrite a record.
async fn tamper(server: &TestServer, db: Db, id: &str) {
    let pool = server.raw_db().await;
    let statements: &[&str] = match db {
        Db::Sqlite => &[
            "DROP TRIGGER audit_log_no_update",
            "UPDATE audit_log SET actor = 'nobody' WHERE id = $1",
        ],
        Db::Postgres => &[
            "ALTER TABLE audit_log DISABLE TRIGGER USER",
            "UPDATE audit_log SET actor = 'nobody' WHERE id = $1",
        ],
    };
    for statement in statements {
        sqlx::query(statement)
            .bind(id)
            .execute(&pool)
            .await
            .expect("tamper");
    }
}

async fn audit_records_cannot_be_updated_deleted_or_truncated(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    server.tenant("acme").await;
    assert!(!records(&server).await.is_empty());
    let pool = server.raw_db().await;
    let mut refused = vec![
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log",
    ];
    if db == Db::Postgres {
        refused.push("TRUNCATE audit_log");
    }
    for statement in refused {
        let result = sqlx::query(statement).execute(&pool).await;
        let error = result.expect_err(statement).to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    assert!(!records(&server).await.is_empty());
}

/// The record is appended in the change's own transaction: a database that refuses the
/// record (here a trigger refusing one actor's records, standing in for a crash between
/// the two writes) leaves no change behind, where a record written after the commit would
/// leave an unrecorded change.
async fn a_change_whose_record_cannot_be_written_is_not_made(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = crate::runs_support::tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "kept",
        json!([{"id": "a", "connector": "hostile", "action": "echo", "input": {}}]),
    )
    .await;
    let pool = server.raw_db().await;
    let statements: &[&str] = match db {
        Db::Sqlite => &["CREATE TRIGGER refuse_mallory BEFORE INSERT ON audit_log \
             WHEN NEW.actor = 'mallory@acme.test' \
             BEGIN SELECT RAISE(ABORT, 'no record for mallory'); END"],
        Db::Postgres => &[
            "CREATE FUNCTION refuse_mallory() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.actor = 'mallory@acme.test' THEN \
             RAISE EXCEPTION 'no record for mallory'; END IF; RETURN NEW; END; $$",
            "CREATE TRIGGER refuse_mallory BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION refuse_mallory()",
        ],
    };
    for statement in statements {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    let before = records(&server).await.len();
    let mallory = server.token_for("mallory@acme.test", Some("acme"), Role::Admin);
    let steps = json!([{"id": "a", "connector": "hostile", "action": "echo", "input": {}}]);
    let attempts = [
        (
            Method::POST,
            "/v1/workflows".to_owned(),
            json!({"name": "unrecorded", "steps": steps}),
        ),
        (
            Method::PUT,
            format!("/v1/workflows/{workflow}"),
            json!({"name": "renamed", "steps": steps}),
        ),
        (
            Method::POST,
            format!("/v1/workflows/{workflow}/triggers"),
            json!({"kind": "webhook"}),
        ),
        (
            Method::DELETE,
            format!("/v1/workflows/{workflow}"),
            Value::Null,
        ),
    ];
    for (method, path, body) in attempts {
        let body = if body.is_null() {
            Body::None
        } else {
            Body::Json(body)
        };
        let reply = server
            .call(method.clone(), &path, Some(&mallory), body)
            .await;
        assert!(
            reply.status >= 500,
            "{method} {path}: {} {}",
            reply.status,
            reply.text
        );
    }
    let listed = server.get("/v1/workflows", &admin).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let names: Vec<&str> = listed.body["workflows"]
        .as_array()
        .or(listed.body.as_array())
        .into_iter()
        .flatten()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["kept"], "{}", listed.text);
    let shown = server
        .get(&format!("/v1/workflows/{workflow}"), &admin)
        .await;
    assert_eq!(shown.body["version"], 1, "{}", shown.text);
    let triggers = server.get("/v1/triggers", &admin).await;
    assert_eq!(triggers.status, 200, "{}", triggers.text);
    assert!(
        !triggers.text.contains("whsec_") && !triggers.text.contains("trg_"),
        "{}",
        triggers.text
    );
    assert_eq!(records(&server).await.len(), before);

    // Anyone else's changes are recorded as ever.
    let reply = server
        .put(
            &format!("/v1/workflows/{workflow}"),
            &admin,
            json!({"name": "renamed", "steps": steps}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(records(&server).await.len(), before + 1);
}
