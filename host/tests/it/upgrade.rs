//! Rolling upgrades: this release keeps running (and restarts) on a database a newer release
//! migrated with expand steps, and refuses, with a clear error, one a contract step made
//! unreadable for it. The newer release is simulated: its migration is applied by hand, as
//! its binary would (an extra column, an extra table, a row in `_sqlx_migrations`). Both
//! databases.

use serde_json::json;

use crate::api_support::{Db, TestServer, on_both_databases};
use crate::runs_support::{create_workflow, ended, fast_workers, tenant_with_hostile, wait_for};

on_both_databases!(an_older_release_runs_on_an_expanded_schema_and_refuses_a_contracted_one);

/// The version of the newer release's migration: past any of this one's.
const NEWER: i64 = 99_990_001;

async fn an_older_release_runs_on_an_expanded_schema_and_refuses_a_contracted_one(db: Db) {
    let Some(first) =
        TestServer::start_configured(db, crate::support::options(), fast_workers).await
    else {
        return;
    };
    let admin = tenant_with_hostile(&first, "acme").await;
    let workflow = create_workflow(
        &first,
        &admin,
        "echo",
        json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;

    // The newer release migrates while this one runs: expand steps only.
    let pool = first.raw_db().await;
    for statement in [
        "ALTER TABLE runs ADD COLUMN priority BIGINT",
        "CREATE TABLE shared_connectors (name TEXT NOT NULL PRIMARY KEY, version TEXT NOT NULL)",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'a newer release: expand', $2, $3, 0)",
    )
    .bind(NEWER)
    .bind(true)
    .bind(vec![0u8; 48])
    .execute(&pool)
    .await
    .expect("record the newer migration");

    // The running process goes on, and a process of this release starting now starts.
    let run = crate::runs_support::start_run(&first, &admin, &workflow, json!({})).await;
    assert_eq!(
        wait_for(&first, &admin, &run, ended).await["state"],
        "succeeded"
    );
    let url = first.database_url.clone();
    let restarted = TestServer::start_configured(Db::Sqlite, crate::support::options(), |c| {
        fast_workers(c);
        c.database_url = Some(url.clone());
    })
    .await
    .expect("this release starts on the expanded schema");
    let admin = restarted.token(Some("acme"), airlock::api::Role::Admin);
    let run = crate::runs_support::start_run(&restarted, &admin, &workflow, json!({})).await;
    assert_eq!(
        wait_for(&restarted, &admin, &run, ended).await["state"],
        "succeeded"
    );
    let ready = restarted.get("/readyz", &admin).await;
    assert_eq!(ready.status, 200, "{}", ready.text);

    // A contract step: the schema is no longer readable by this release.
    sqlx::query("UPDATE schema_compat SET oldest_reader = $1 WHERE id = 1")
        .bind(NEWER)
        .execute(&pool)
        .await
        .expect("contract");
    let refused = airlock::store::Store::connect(&url, &airlock::store::StoreOptions::default())
        .await
        .expect_err("a contracted schema is refused");
    let message = refused.to_string();
    assert!(
        message.contains("migrated by a newer release") && message.contains(&NEWER.to_string()),
        "{message}"
    );
}
