//! Retention on a manual clock: an ended run keeps its data for `retain_run_data_days` and
//! itself for `retain_runs_days`; waiting runs and other tenants' runs are untouched; the
//! operator's policy change is audited. An audit chain loses its oldest records past
//! `retain_audit_days` only behind a prune record of its own, and still verifies. Both
//! databases.

use std::sync::Arc;

use airlock::model::{Clock as _, ManualClock};
use serde_json::json;

use crate::api_support::{Db, TestServer, on_both_databases};
use crate::runs_support::{
    create_workflow, ended, fast_workers, put_limits, start_run, tenant_with_hostile, wait_for,
};
use crate::support::options;

on_both_databases!(
    ended_runs_lose_their_data_then_go_at_each_tenants_horizons,
    audit_chains_lose_their_oldest_records_behind_a_prune_record,
);

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

async fn ended_runs_lose_their_data_then_go_at_each_tenants_horizons(db: Db) {
    let clock = ManualClock::new(airlock::store::now_ms());
    let mut runtime = options();
    runtime.engine.pool_size = 8;
    let Some(server) =
        TestServer::start_clocked(db, runtime, fast_workers, Some(Arc::new(clock.clone()))).await
    else {
        return;
    };
    let acme = tenant_with_hostile(&server, "acme").await;
    let other = tenant_with_hostile(&server, "other").await;
    // acme keeps data 2 days and runs 5; other keeps the defaults (30 and 90).
    put_limits(
        &server,
        "acme",
        json!({"retain_run_data_days": 2, "retain_runs_days": 5}),
    )
    .await;
    let steps = json!([{"id": "a", "connector": "hostile", "action": "echo",
        "input": {"n": {"$from": "/trigger/n"}}}]);
    let echo = create_workflow(&server, &acme, "echo", steps.clone()).await;
    let mut acme_runs = Vec::new();
    for i in 0..3 {
        let run = start_run(
            &server,
            &acme,
            &echo,
            json!({"n": i, "body": format!("personal-{i}")}),
        )
        .await;
        wait_for(&server, &acme, &run, ended).await;
        acme_runs.push(run);
    }
    let theirs = create_workflow(&server, &other, "echo", steps).await;
    let their_run = start_run(&server, &other, &theirs, json!({"n": 9, "body": "theirs"})).await;
    wait_for(&server, &other, &their_run, ended).await;

    // Nothing is due yet.
    let report = server.state.runs().prune().await.expect("prune");
    assert_eq!((report.blanked, report.removed), (0, 0), "{report:?}");

    // Past acme's data horizon: inputs, outputs and step logs blanked; the runs stay.
    clock.advance_ms(3 * DAY_MS);
    let report = server.state.runs().prune().await.expect("prune");
    assert_eq!((report.blanked, report.removed), (3, 0), "{report:?}");
    for run in &acme_runs {
        let read = server.get(&format!("/v1/runs/{run}"), &acme).await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert!(!read.text.contains("personal-"), "{}", read.text);
        assert_eq!(read.body["state"], "succeeded");
    }
    let theirs_read = server.get(&format!("/v1/runs/{their_run}"), &other).await;
    assert!(theirs_read.text.contains("theirs"), "{}", theirs_read.text);
    // A second pass finds nothing left to do.
    let again = server.state.runs().prune().await.expect("prune");
    assert_eq!((again.blanked, again.removed), (0, 0));

    // Each tenant has a dead-letter notice of one of its runs (as if it had died).
    let pool = server.raw_db().await;
    for (tenant, run) in [("acme", &acme_runs[0]), ("other", &their_run)] {
        sqlx::query(
            "INSERT INTO dead_letter_notices (tenant_id, id, run_id, payload, state, \
             attempts, next_at, created_at, updated_at) \
             VALUES ($1, $2, $3, '{}', 'delivered', 1, 0, 0, 0)",
        )
        .bind(tenant)
        .bind(format!("dead_{run}_1"))
        .bind(run)
        .execute(&pool)
        .await
        .expect("notice");
    }
    let notices = async |tenant: &str| -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM dead_letter_notices WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&pool)
            .await
            .expect("count")
    };

    // Past acme's run horizon: gone, with their steps and notices; the other tenant keeps
    // its run.
    clock.advance_ms(3 * DAY_MS);
    let report = server.state.runs().prune().await.expect("prune");
    assert_eq!(report.removed, 3, "{report:?}");
    for run in &acme_runs {
        let read = server.get(&format!("/v1/runs/{run}"), &acme).await;
        assert_eq!(read.status, 404, "{}", read.text);
    }
    assert_eq!((notices("acme").await, notices("other").await), (0, 1));
    let steps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_steps WHERE tenant_id = 'acme'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(steps, 0);
    assert_eq!(
        server
            .get(&format!("/v1/runs/{their_run}"), &other)
            .await
            .status,
        200
    );

    // The default horizons apply to the other tenant.
    clock.advance_ms(30 * DAY_MS);
    let report = server.state.runs().prune().await.expect("prune");
    assert_eq!((report.blanked, report.removed), (1, 0), "{report:?}");
    clock.advance_ms(60 * DAY_MS);
    let report = server.state.runs().prune().await.expect("prune");
    assert_eq!(report.removed, 1, "{report:?}");

    // The policy change is in the audit log, and a horizon of 0 days is refused.
    let audit = server
        .get("/v1/audit?tenant=acme&limit=500", &server.operator())
        .await;
    assert!(
        audit.body.as_array().is_some_and(|records| records
            .iter()
            .any(|r| r["action"] == "PUT /v1/tenants/{id}/limits")),
        "{}",
        audit.text
    );
    let refused = server
        .put(
            "/v1/tenants/acme/limits",
            &server.operator(),
            json!({"retain_runs_days": 0}),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
}

async fn audit_count(pool: &sqlx::AnyPool, tenant: &str, action: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE tenant_id = $1 AND ($2 = '' OR action = $2)",
    )
    .bind(tenant)
    .bind(action.unwrap_or(""))
    .fetch_one(pool)
    .await
    .expect("count")
}

/// `airlock audit verify --tenant <tenant>` against the server's database.
fn verify(server: &TestServer, tenant: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args([
            "audit",
            "verify",
            "--tenant",
            tenant,
            "--database-url",
            &server.database_url,
        ])
        .arg("--data-dir")
        .arg(server.dir.path())
        .output()
        .expect("airlock audit verify")
}

/// What `verify` printed, having checked that it passed.
fn verified(server: &TestServer, tenant: &str) -> String {
    let out = verify(server, tenant);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn audit_chains_lose_their_oldest_records_behind_a_prune_record(db: Db) {
    let start = airlock::store::now_ms();
    let clock = ManualClock::new(start);
    let Some(server) =
        TestServer::start_clocked(db, options(), fast_workers, Some(Arc::new(clock.clone()))).await
    else {
        return;
    };
    // Audit records are timed by the service's clock, which this test moves.
    let acme = tenant_with_hostile(&server, "acme").await;
    tenant_with_hostile(&server, "other").await;
    put_limits(&server, "other", json!({"retain_audit_days": 3650})).await;
    let steps = json!([{"id": "a", "connector": "hostile", "action": "echo", "input": {}}]);
    for i in 0..5 {
        create_workflow(&server, &acme, &format!("old-{i}"), steps.clone()).await;
    }
    let pool = server.raw_db().await;
    let old = audit_count(&pool, "acme", None).await;
    clock.advance_ms(2 * DAY_MS);
    let cut = start + DAY_MS;
    for i in 0..3 {
        create_workflow(&server, &acme, &format!("new-{i}"), steps.clone()).await;
    }

    // The records before the cut go, two a batch, after the prune record that names them;
    // the chain verifies from the cut.
    let store = server.state.pipeline().store();
    let pruned = store.prune_audit("acme", cut, 0, 2).await.expect("prune");
    assert_eq!(
        pruned.removed,
        u64::try_from(old).expect("count"),
        "{pruned:?}"
    );
    assert!(pruned.batches >= 3, "{pruned:?}");
    assert_eq!(audit_count(&pool, "acme", None).await, 3 + 1);
    let marks = airlock::store::PRUNED_ACTION;
    assert_eq!(audit_count(&pool, "acme", Some(marks)).await, 1);
    assert!(verified(&server, "acme").contains("ok: 4 record(s)"));
    // Nothing more is due at the same horizon: no second prune record.
    let again = store.prune_audit("acme", cut, 0, 2).await.expect("prune");
    assert_eq!(again.removed, 0);
    assert_eq!(audit_count(&pool, "acme", Some(marks)).await, 1);

    // What no prune record covers stays append-only.
    for statement in [
        "DELETE FROM audit_log WHERE tenant_id = 'acme'",
        "DELETE FROM audit_log WHERE tenant_id = 'acme' AND action <> 'audit.pruned'",
        "UPDATE audit_log SET detail = '{\"through_seq\": 1000000}' WHERE action = 'audit.pruned'",
    ] {
        let error = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err(statement)
            .to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    assert_eq!(audit_count(&pool, "acme", None).await, 4);

    // A year and a day's slack on, by each tenant's policy: acme's default year is past,
    // other keeps ten.
    let others = audit_count(&pool, "other", None).await;
    clock.advance_ms(367 * DAY_MS);
    let report = server.state.runs().prune().await.expect("prune");
    assert_eq!(report.audit_records, 4, "{report:?}");
    assert_eq!(
        audit_count(&pool, "acme", None).await,
        1,
        "only the new prune record"
    );
    assert!(verified(&server, "acme").contains("ok: 1 record(s)"));
    assert_eq!(audit_count(&pool, "other", None).await, others);
    // The chain goes on from the cut.
    create_workflow(&server, &acme, "after", steps).await;
    assert!(verified(&server, "acme").contains("ok: 2 record(s)"));
    assert!(verified(&server, "other").starts_with("ok"));

    // Two passes at once (two processes) cut once: one prune record, not two.
    clock.advance_ms(367 * DAY_MS);
    let horizon = clock.now_ms() - 365 * DAY_MS;
    let before = audit_count(&pool, "acme", Some(marks)).await;
    let (a, b) = tokio::join!(
        store.prune_audit("acme", horizon, DAY_MS, 500),
        store.prune_audit("acme", horizon, DAY_MS, 500),
    );
    assert_eq!(a.expect("prune").removed + b.expect("prune").removed, 2);
    assert_eq!(audit_count(&pool, "acme", Some(marks)).await, before);
    assert_eq!(audit_count(&pool, "acme", None).await, 1);
    assert!(verified(&server, "acme").contains("ok: 1 record(s)"));

    // Whoever can insert rows cannot erase a chain with a prune record of their own: one
    // that claims the last day covers nothing, and verify names it.
    let now = clock.now_ms();
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, id, at, actor, action, run_id, detail, seq) \
         VALUES ('other', 'aud_forged', $1, 'mallory', 'audit.pruned', '', $2, 1000000)",
    )
    .bind(now)
    .bind(
        json!({"through_seq": 999_999, "through_hash": "", "before_ms": now + DAY_MS}).to_string(),
    )
    .execute(&pool)
    .await
    .expect("insert");
    let error =
        sqlx::query("DELETE FROM audit_log WHERE tenant_id = 'other' AND id <> 'aud_forged'")
            .execute(&pool)
            .await
            .expect_err("a forged prune record covers nothing")
            .to_string();
    assert!(error.contains("append-only"), "{error}");
    let out = verify(&server, "other");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("aud_forged"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
