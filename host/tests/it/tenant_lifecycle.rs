//! A tenant's lifecycle through the API: suspended, it is refused everywhere (tokens, hooks,
//! cron, claims) and keeps everything; resumed, it works as before; exported, it is one JSON
//! document without a secret; deleted, nothing of it is left in the database and the other
//! tenants are untouched. Both databases.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use airlock::api::Role;
use airlock::store::{Column, TENANT_TABLES};
use airlock::triggers::webhook::Scheme;
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::api_canary::every_cell;
use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};
use crate::runs_support::{create_workflow, ended, fast_workers, tenant_with_hostile, wait_for};
use crate::triggers::{deliver, signed, webhook};

on_both_databases!(
    a_suspended_tenant_is_refused_everywhere_and_resumes_whole,
    a_suspended_tenants_queued_runs_are_not_claimed,
    a_suspension_stops_cron_ticks_and_a_run_between_steps,
    an_export_has_everything_but_secrets,
    a_deleted_tenant_leaves_nothing_and_the_others_are_untouched,
    every_tenant_table_and_column_is_deleted_and_exported_or_withheld,
);

fn echo() -> Value {
    json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}])
}

async fn runs_of(server: &TestServer, tenant: &str) -> i64 {
    count(
        &server.raw_db().await,
        "SELECT COUNT(*) AS n FROM runs WHERE tenant_id = $1",
        tenant,
    )
    .await
}

async fn a_suspended_tenant_is_refused_everywhere_and_resumes_whole(db: Db) {
    let Some(server) =
        TestServer::start_configured(db, crate::support::options(), fast_workers).await
    else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let other = tenant_with_hostile(&server, "other").await;
    let operator = server.operator();
    let workflow = create_workflow(&server, &admin, "echo", echo()).await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let other_workflow = create_workflow(&server, &other, "echo", echo()).await;

    // A member cannot suspend, not even its own tenant.
    let refused = server
        .post("/v1/tenants/acme/suspend", &admin, json!({}))
        .await;
    assert_problem(&refused, 403, "forbidden");

    let suspended = server
        .post("/v1/tenants/acme/suspend", &operator, Value::Null)
        .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    let at = suspended.body["suspended_at_ms"].as_i64().expect("a time");
    // Suspending again keeps the first time.
    let again = server
        .post("/v1/tenants/acme/suspend", &operator, Value::Null)
        .await;
    assert_eq!(again.body["suspended_at_ms"], json!(at), "{}", again.text);

    // Every token of the tenant, whatever its role, is refused with a clear problem.
    for role in [Role::Viewer, Role::Editor, Role::Admin] {
        let token = server.token(Some("acme"), role);
        let reply = server.get("/v1/workflows", &token).await;
        assert_problem(&reply, 403, "tenant-suspended");
        let reply = server
            .post(
                &format!("/v1/workflows/{workflow}/runs"),
                &token,
                json!({"input": {}}),
            )
            .await;
        assert_problem(&reply, 403, "tenant-suspended");
    }
    // Its webhook answers 503 (the sender keeps the delivery) and creates no run.
    let now_s = airlock::store::now_ms() / 1000;
    let body = br#"{"n": 1}"#;
    let headers = signed(Scheme::StandardWebhooks, &secret, "evt_1", now_s, body);
    let delivered = deliver(&server, &hook, &headers, body).await;
    assert_problem(&delivered, 503, "tenant-suspended");
    assert!(
        delivered.headers.get("retry-after").is_some(),
        "{:?}",
        delivered.headers
    );
    assert_eq!(runs_of(&server, "acme").await, 0);
    // The operator still reads it; nothing was deleted.
    let runs = server.get("/v1/runs?tenant=acme", &operator).await;
    assert_eq!(runs.status, 200, "{}", runs.text);
    let shown = server.get("/v1/tenants/acme", &operator).await;
    assert_eq!(shown.body["suspended_at_ms"], json!(at), "{}", shown.text);
    // Another tenant is untouched.
    let run = crate::runs_support::start_run(&server, &other, &other_workflow, json!({})).await;
    let done = wait_for(&server, &other, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    let resumed = server
        .post("/v1/tenants/acme/resume", &operator, Value::Null)
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    assert_eq!(resumed.body["suspended_at_ms"], Value::Null);
    // The same delivery now lands and runs; the same tokens work.
    let headers = signed(Scheme::StandardWebhooks, &secret, "evt_1", now_s, body);
    let delivered = deliver(&server, &hook, &headers, body).await;
    assert_eq!(delivered.status, 202, "{}", delivered.text);
    let run = delivered.body["run_id"].as_str().expect("run").to_owned();
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    for path in [
        "/v1/tenants/no-such/suspend",
        "/v1/tenants/no-such/resume",
        "/v1/tenants/NOT%20AN%20ID/suspend",
    ] {
        let missing = server.post(path, &operator, Value::Null).await;
        assert_problem(&missing, 404, "not-found");
    }
}

/// No workers in this server: the test claims by hand, as a worker of another process would.
async fn a_suspended_tenants_queued_runs_are_not_claimed(db: Db) {
    let Some(server) =
        TestServer::start_configured(db, crate::support::options(), |c| c.workers = 0).await
    else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(&server, &admin, "echo", echo()).await;
    let run = crate::runs_support::start_run(&server, &admin, &workflow, json!({})).await;
    let operator = server.operator();
    let suspended = server
        .post("/v1/tenants/acme/suspend", &operator, Value::Null)
        .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    let store = server.state.store().clone();
    let claimed = store.claim_run("a-worker", 30_000).await.expect("claim");
    assert!(claimed.is_none(), "a suspended tenant's run was claimed");
    // Limits changed while suspended do not lift the suspension.
    let patched = server
        .patch(
            "/v1/tenants/acme/limits",
            &operator,
            json!({"max_concurrent_runs": 32}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let claimed = store.claim_run("a-worker", 30_000).await.expect("claim");
    assert!(claimed.is_none(), "a limits change lifted the suspension");

    let resumed = server
        .post("/v1/tenants/acme/resume", &operator, Value::Null)
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    let claimed = store
        .claim_run("a-worker", 30_000)
        .await
        .expect("claim")
        .expect("resumed: the run is claimed");
    assert_eq!(claimed.lease.run_id, run);
}

/// The `n` that `sql` (one `$1`, bound to `bind`) counts.
async fn count(pool: &sqlx::AnyPool, sql: &str, bind: &str) -> i64 {
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

async fn a_suspension_stops_cron_ticks_and_a_run_between_steps(db: Db) {
    let Some(server) =
        TestServer::start_configured(db, crate::support::options(), fast_workers).await
    else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let operator = server.operator();
    let two = create_workflow(
        &server,
        &admin,
        "two",
        json!([{"id": "nap", "connector": "hostile", "action": "sleep", "input": {"ms": 1500}},
               {"id": "after", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;
    let ticking = create_workflow(&server, &admin, "ticking", echo()).await;
    let cron = server
        .post(
            &format!("/v1/workflows/{ticking}/triggers"),
            &admin,
            json!({"kind": "cron", "expression": "* * * * * *"}),
        )
        .await;
    assert_eq!(cron.status, 201, "{}", cron.text);
    let cron = cron.body["id"].as_str().expect("id").to_owned();
    let run = crate::runs_support::start_run(&server, &admin, &two, json!({})).await;
    wait_for(
        &server,
        &admin,
        &run,
        crate::runs_support::in_state("running"),
    )
    .await;

    let suspended = server
        .post("/v1/tenants/acme/suspend", &operator, Value::Null)
        .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    let runs_then = runs_of(&server, "acme").await;
    // The step in flight may still write: the tenant cannot be deleted under it.
    let early = server.delete("/v1/tenants/acme", &operator).await;
    assert_problem(&early, 409, "conflict");
    assert!(early.text.contains("in a step"), "{}", early.text);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    // The step in flight finished and was journaled; the run went back to the queue before
    // its second step, and stays there.
    let pool = server.raw_db().await;
    let row = sqlx::query("SELECT state, next_step, attempt FROM runs WHERE id = $1")
        .bind(&run)
        .fetch_one(&pool)
        .await
        .expect("run");
    let state: String = row.try_get("state").expect("state");
    let next_step: i64 = row.try_get("next_step").expect("next_step");
    assert_eq!((state.as_str(), next_step), ("queued", 1));
    // No tick made a run; they were counted as refused.
    assert_eq!(
        runs_of(&server, "acme").await,
        runs_then,
        "a suspended tenant's cron fired"
    );
    let refused = count(
        &pool,
        "SELECT refused AS n FROM triggers WHERE id = $1",
        &cron,
    )
    .await;
    assert!(refused >= 1, "no tick was refused");

    let resumed = server
        .post("/v1/tenants/acme/resume", &operator, Value::Null)
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    // The first step ran once: the resumed run went on from the second.
    assert_eq!(done["steps"][0]["attempts"], json!(1), "{done}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs_of(&server, "acme").await == runs_then {
        assert!(
            std::time::Instant::now() < deadline,
            "the cron trigger did not fire after the resume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn an_export_has_everything_but_secrets(db: Db) {
    let Some(server) =
        TestServer::start_configured(db, crate::support::options(), fast_workers).await
    else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let _other = tenant_with_hostile(&server, "other").await;
    let operator = server.operator();
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let uploaded = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let connection = server
        .post(
            "/v1/connections",
            &admin,
            json!({"connector": "http", "name": "crm", "credential": {"api_key": canary},
                "config": {"credential_hosts": ["api.crm.test"]}}),
        )
        .await;
    assert_eq!(connection.status, 201, "{}", connection.text);
    let workflow = create_workflow(&server, &admin, "echo", echo()).await;
    let (_hook, secret) = webhook(&server, &admin, &workflow).await;
    let mut runs = BTreeSet::new();
    for _ in 0..3 {
        let run = crate::runs_support::start_run(&server, &admin, &workflow, json!({})).await;
        wait_for(&server, &admin, &run, ended).await;
        runs.insert(run);
    }

    let export = server.get("/v1/tenants/acme/export", &operator).await;
    assert_eq!(export.status, 200, "{}", export.text);
    assert!(
        export.content_type.starts_with("application/json"),
        "{}",
        export.content_type
    );
    let doc = &export.body;
    assert_eq!(doc["format"], "airlock.tenant-export.v1", "{}", export.text);
    assert_eq!(doc["tenant"]["id"], "acme");
    assert!(
        doc["tenant"]["limits"]["fuel"].is_u64(),
        "{}",
        doc["tenant"]
    );
    let exported_runs: BTreeSet<String> = doc["tables"]["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(exported_runs, runs);
    let steps = doc["tables"]["run_steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3, "{}", export.text);
    assert_eq!(steps[0]["output"], json!({"n": 1}), "{}", steps[0]);
    let connections = doc["tables"]["connections"]
        .as_array()
        .expect("connections");
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0]["name"], "crm");
    assert!(connections[0].get("secret").is_none(), "{}", connections[0]);
    assert_eq!(doc["tables"]["workflows"][0]["id"], json!(workflow));
    assert!(doc["tables"]["workflow_versions"][0]["definition"]["steps"].is_array());
    assert_eq!(
        doc["withheld"]["connections.secret"], "a sealed secret",
        "{}",
        doc["withheld"]
    );
    // Only acme's rows; no secret, clear or sealed.
    assert!(!export.text.contains("\"other\""), "another tenant's rows");
    assert!(!export.text.contains(&canary), "a credential in the export");
    assert!(
        !export.text.contains(&secret),
        "a webhook secret in the export"
    );
    let pool = server.raw_db().await;
    for (table, column) in [("connections", "secret"), ("triggers", "secret")] {
        let sealed: Vec<String> = sqlx::query(&format!(
            "SELECT {column} AS s FROM {table} WHERE tenant_id = 'acme' AND {column} IS NOT NULL"
        ))
        .fetch_all(&pool)
        .await
        .expect("sealed")
        .iter()
        .map(|r| r.try_get("s").expect("s"))
        .collect();
        assert!(!sealed.is_empty(), "{table}.{column}");
        for sealed in sealed {
            assert!(
                !export.text.contains(&sealed),
                "a sealed {table}.{column} in the export"
            );
        }
    }
    // Members cannot export, not even their own tenant.
    let refused = server.get("/v1/tenants/acme/export", &admin).await;
    assert_problem(&refused, 403, "forbidden");
    let missing = server.get("/v1/tenants/no-such/export", &operator).await;
    assert_problem(&missing, 404, "not-found");
}

/// Rows per table of `tenant`, all tables with a `tenant_id`.
async fn row_counts(server: &TestServer, tenant: &str) -> BTreeMap<&'static str, i64> {
    let pool = server.raw_db().await;
    let mut counts = BTreeMap::new();
    for table in TENANT_TABLES {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {} WHERE tenant_id = $1",
            table.name
        );
        counts.insert(table.name, count(&pool, &sql, tenant).await);
    }
    counts
}

async fn a_deleted_tenant_leaves_nothing_and_the_others_are_untouched(db: Db) {
    let Some(server) =
        TestServer::start_configured(db, crate::support::options(), fast_workers).await
    else {
        return;
    };
    let doomed = format!(
        "doomed-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let operator = server.token_for("ops@example.com", None, Role::Operator);
    // Both tenants hold the same things: connectors, a connection with a credential, a
    // workflow with runs, a webhook and a cron trigger, state, usage, audit records.
    let mut admins = Vec::new();
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    for tenant in [doomed.as_str(), "keeper"] {
        let admin = tenant_with_hostile(&server, tenant).await;
        let uploaded = server
            .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
            .await;
        assert_eq!(uploaded.status, 201, "{}", uploaded.text);
        let connection = server
            .post(
                "/v1/connections",
                &admin,
                json!({"connector": "http", "name": "crm",
                    "credential": {"api_key": format!("{canary}-{tenant}")},
                    "config": {"credential_hosts": ["api.crm.test"]}}),
            )
            .await;
        assert_eq!(connection.status, 201, "{}", connection.text);
        let workflow = create_workflow(&server, &admin, "echo", echo()).await;
        webhook(&server, &admin, &workflow).await;
        let cron = server
            .post(
                &format!("/v1/workflows/{workflow}/triggers"),
                &admin,
                json!({"kind": "cron", "expression": "0 0 1 1 *"}),
            )
            .await;
        assert_eq!(cron.status, 201, "{}", cron.text);
        let run = crate::runs_support::start_run(&server, &admin, &workflow, json!({})).await;
        let done = wait_for(&server, &admin, &run, ended).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let stateful = server
            .post(
                "/v1/connectors/hostile/actions/state_roundtrip/invoke",
                &admin,
                json!({"input": {"key": "k", "value": tenant}}),
            )
            .await;
        assert_eq!(stateful.status, 200, "{}", stateful.text);
        admins.push(admin);
    }
    let keeper_before = row_counts(&server, "keeper").await;
    let doomed_before = row_counts(&server, &doomed).await;
    for table in ["runs", "run_steps", "connections", "triggers", "audit_log"] {
        assert!(doomed_before[table] > 0, "{table}: {doomed_before:?}");
    }

    // Only a suspended tenant can be deleted.
    let path = format!("/v1/tenants/{doomed}");
    let early = server.delete(&path, &operator).await;
    assert_problem(&early, 409, "conflict");
    let refused = server.delete(&path, &admins[0]).await;
    assert_problem(&refused, 403, "forbidden");
    let suspended = server
        .post(&format!("{path}/suspend"), &operator, Value::Null)
        .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    let deleted = server.delete(&path, &operator).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let request_id = deleted
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_owned();

    // Gone from the API: its tokens no longer name a tenant, a second delete finds nothing.
    assert_problem(&server.get(&path, &operator).await, 404, "not-found");
    assert_problem(&server.delete(&path, &operator).await, 404, "not-found");
    assert_problem(
        &server.get("/v1/workflows", &admins[0]).await,
        401,
        "unauthorized",
    );
    // Past the access history's flush, so that a late flush would show.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = row_counts(&server, &doomed).await;
    assert!(after.values().all(|n| *n == 0), "rows left: {after:?}");
    // The keeper's own calls reach its access history a flush later: every other count is
    // as it was.
    let without_access = |mut counts: BTreeMap<&'static str, i64>| {
        counts.remove("access_minutes");
        counts
    };
    assert_eq!(
        without_access(row_counts(&server, "keeper").await),
        without_access(keeper_before)
    );

    // Not one cell of the database names it, but the platform's record of its deletion.
    let pool = server.raw_db().await;
    let record = sqlx::query(
        "SELECT id, tenant_id, actor, action, target, request_id FROM audit_log \
         WHERE target = $1",
    )
    .bind(&doomed)
    .fetch_all(&pool)
    .await
    .expect("records");
    assert_eq!(record.len(), 1, "the deletion is recorded once");
    let field = |name: &str| record[0].try_get::<String, _>(name).expect("field");
    assert_eq!(field("tenant_id"), "");
    assert_eq!(field("actor"), "ops@example.com");
    assert_eq!(field("action"), "DELETE /v1/tenants/{id}");
    assert_eq!(field("request_id"), request_id);
    let (cells, _) = every_cell(&server, db).await;
    let left: Vec<&str> = cells
        .lines()
        .filter(|line| {
            line.contains(doomed.as_str()) || line.contains(&format!("{canary}-{doomed}"))
        })
        // The deletion's record: cell by cell (SQLite), or a row with its id (PostgreSQL).
        .filter(|line| {
            !line.starts_with("audit_log.target")
                && !line.starts_with("audit_log.detail")
                && !line.contains(&field("id"))
        })
        .collect();
    assert!(left.is_empty(), "the deleted tenant is still in: {left:#?}");
    let platform: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE tenant_id = ''")
        .fetch_one(&pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n");
    assert_eq!(platform, 1);
    // The platform's record is as append-only as any.
    let erase = sqlx::query("DELETE FROM audit_log WHERE tenant_id = ''")
        .execute(&pool)
        .await;
    assert!(erase.is_err(), "the platform's audit record was deleted");
    // A live tenant's records stay append-only.
    let erase = sqlx::query("DELETE FROM audit_log WHERE tenant_id = 'keeper'")
        .execute(&pool)
        .await;
    assert!(erase.is_err(), "a live tenant's audit record was deleted");

    // A write that raced with the deletion left a row behind (as a guest's late state write
    // would): creating the id again starts from nothing, audit chain included.
    sqlx::query(
        "INSERT INTO connector_state (tenant_id, connector, connection_id, key, value) \
         VALUES ($1, 'hostile', '', 'k', $2)",
    )
    .bind(&doomed)
    .bind(b"late".to_vec())
    .execute(&pool)
    .await
    .expect("a late row");
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, id, at, actor, action, run_id, detail) \
         VALUES ($1, 'aud_late', 0, 'late', 'late', '', '{}')",
    )
    .bind(&doomed)
    .execute(&pool)
    .await
    .expect("a late record");
    let again = server
        .post(
            "/v1/tenants",
            &operator,
            json!({"id": doomed, "name": "again"}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    let reborn = row_counts(&server, &doomed).await;
    assert_eq!(reborn["connector_state"], 0, "{reborn:?}");
    assert_eq!(
        reborn["audit_log"], 1,
        "only the creation's own record: {reborn:?}"
    );

    // The other tenant works on, and every audit chain verifies.
    let keeper = &admins[1];
    let workflows = server.get("/v1/workflows", keeper).await;
    let workflow = workflows.body[0]["id"]
        .as_str()
        .expect("workflow")
        .to_owned();
    let run = crate::runs_support::start_run(&server, keeper, &workflow, json!({})).await;
    let done = wait_for(&server, keeper, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["audit", "verify", "--database-url", &server.database_url])
        .arg("--data-dir")
        .arg(server.dir.path())
        .output()
        .expect("run airlock");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The schema and [`TENANT_TABLES`] agree: every table with a `tenant_id` is listed (so
/// delete reaches it), and every one of its columns is exported or withheld with a reason
/// (so a new secret column cannot reach an export unseen).
async fn every_tenant_table_and_column_is_deleted_and_exported_or_withheld(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let pool = server.raw_db().await;
    let rows = match db {
        Db::Sqlite => sqlx::query(
            "SELECT m.name AS t, p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE '\\_%' ESCAPE '\\' \
             AND m.name NOT LIKE 'sqlite%'",
        )
        .fetch_all(&pool)
        .await
        .expect("schema"),
        Db::Postgres => sqlx::query(
            "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_%'",
        )
        .fetch_all(&pool)
        .await
        .expect("schema"),
    };
    let mut schema: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        schema
            .entry(row.try_get("t").expect("table"))
            .or_default()
            .insert(row.try_get("c").expect("column"));
    }
    let with_tenant: BTreeSet<&String> = schema
        .iter()
        .filter(|(_, columns)| columns.contains("tenant_id"))
        .map(|(table, _)| table)
        .collect();
    let listed: BTreeSet<String> = TENANT_TABLES.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(
        with_tenant,
        listed.iter().collect::<BTreeSet<_>>(),
        "tables with a tenant_id vs TENANT_TABLES"
    );
    for table in TENANT_TABLES {
        let mut columns: BTreeSet<String> =
            table.columns.iter().map(|c| c.name().to_owned()).collect();
        columns.insert("tenant_id".into());
        assert_eq!(
            schema[table.name], columns,
            "{}: the schema's columns vs TENANT_TABLES",
            table.name
        );
        for column in table.columns {
            if let Column::Withheld(name, why) = column {
                assert!(
                    !why.is_empty(),
                    "{}.{name} is withheld without a reason",
                    table.name
                );
            }
        }
    }
}
