//! The run engine under the conditions that broke it: runs longer than their lease made of
//! steps shorter than the heartbeat, tenants at their cap in front of one that is not, a
//! tenant allowed every worker, a cancel while a guest runs, and the database failing while
//! a run is loaded or journaled. Leases and heartbeats are scaled down with production's
//! ratio (30 s lease, 5 s heartbeat: 6 to 1).

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;

use crate::api_support::{Db, TestServer, on_both_databases};
use crate::runs_support::{
    create_workflow, ended, in_state, put_limits, start_run, tenant_with_hostile, wait_for,
};
use crate::support::options;

on_both_databases!(
    a_run_longer_than_its_lease_keeps_one_lease,
    a_step_longer_than_the_lease_keeps_it,
    a_tenant_below_its_cap_is_not_hidden_by_capped_ones,
    a_tenant_allowed_every_worker_leaves_room_for_another,
    a_cancel_stops_the_guest_without_waiting_for_a_heartbeat,
    a_database_error_while_loading_defers_the_run,
    a_journal_write_that_fails_is_tried_again_not_re_run,
);

/// Production's lease and heartbeat ratio (30 s : 5 s), shrunk: 600 ms and 100 ms.
fn scaled_leases(workers: usize) -> impl FnOnce(&mut airlock::config::Config) {
    move |config| {
        config.workers = workers;
        config.run_poll = Duration::from_millis(50);
        config.run_lease = Duration::from_millis(600);
        config.run_heartbeat = Duration::from_millis(100);
        config.run_reap_every = Duration::from_millis(100);
        config.worker_grace = Duration::from_secs(2);
    }
}

async fn start_engine(
    db: Db,
    pool: u32,
    configure: impl FnOnce(&mut airlock::config::Config),
) -> Option<TestServer> {
    let mut options = options();
    options.engine.pool_size = pool;
    TestServer::start_configured(db, options, configure).await
}

/// The run's fencing token: 1 when one claim held it from start to end.
async fn lease_epoch(server: &TestServer, tenant: &str, run: &str) -> i64 {
    let db = server.raw_db().await;
    sqlx::query("SELECT lease_epoch FROM runs WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(run)
        .fetch_one(&db)
        .await
        .expect("run row")
        .try_get("lease_epoch")
        .expect("lease_epoch")
}

fn naps(n: usize, ms: u64) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"id": format!("s{i}"), "connector": "hostile", "action": "sleep", "input": {"ms": ms}}))
            .collect(),
    )
}

/// The lease bug: the heartbeat lived inside each step and its first tick was consumed
/// before the loop, so steps shorter than the heartbeat never renewed the lease and a run
/// longer than the lease was reaped from its live worker. 40 steps of half a heartbeat make
/// a run of about six leases.
async fn a_run_longer_than_its_lease_keeps_one_lease(db: Db) {
    let Some(server) = start_engine(db, 8, scaled_leases(4)).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(&server, &admin, "long", naps(40, 50)).await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        lease_epoch(&server, "acme", &run).await,
        1,
        "claimed once: no step was run twice"
    );
    let steps = server.get(&format!("/v1/runs/{run}"), &admin).await;
    for step in steps.body["steps"].as_array().expect("steps") {
        assert_eq!(step["attempts"], 1, "{step}");
    }
}

/// One step of two and a half leases: the keeper renews while the guest runs.
async fn a_step_longer_than_the_lease_keeps_it(db: Db) {
    let Some(server) = start_engine(db, 8, scaled_leases(4)).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(&server, &admin, "nap", naps(1, 1_500)).await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(lease_epoch(&server, "acme", &run).await, 1);
}

/// Tenants at their `max_concurrent_runs` with backlogs, served before the quiet tenant
/// (their turns are older), filled the claim's window of candidates: the quiet tenant,
/// with room and idle workers, waited for their steps to end.
async fn a_tenant_below_its_cap_is_not_hidden_by_capped_ones(db: Db) {
    const CAPPED: usize = 50;
    let Some(server) = start_engine(db, 64, |config| {
        config.workers = 64;
        config.run_poll = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let quiet = tenant_with_hostile(&server, "quiet").await;
    let echo = create_workflow(
        &server,
        &quiet,
        "echo",
        json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;
    let mut capped = Vec::new();
    for i in 0..CAPPED {
        let tenant = format!("capped{i:02}");
        let admin = tenant_with_hostile(&server, &tenant).await;
        put_limits(&server, &tenant, json!({"max_concurrent_runs": 1})).await;
        let workflow = create_workflow(&server, &admin, "slow", naps(1, 30_000)).await;
        let first = start_run(&server, &admin, &workflow, json!({})).await;
        capped.push((admin, workflow, first));
    }
    for (admin, _, first) in &capped {
        wait_for(&server, admin, first, in_state("running")).await;
    }
    // The quiet tenant is served after them: its turn is now the newest.
    let warm = start_run(&server, &quiet, &echo, json!({})).await;
    wait_for(&server, &quiet, &warm, ended).await;
    // Backlogs behind every capped tenant.
    for (admin, workflow, _) in &capped {
        start_run(&server, admin, workflow, json!({})).await;
    }
    let run = start_run(&server, &quiet, &echo, json!({})).await;
    let done = wait_for(&server, &quiet, &run, ended).await;
    let waited = done["started_at_ms"].as_i64().expect("started")
        - done["created_at_ms"].as_i64().expect("created");
    println!("quiet tenant behind {CAPPED} capped tenants: started {waited} ms after creation");
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        waited < 5_000,
        "the quiet tenant waited {waited} ms: hidden behind capped tenants until their steps end"
    );
    // The capped tenants' backlogs wait: each still runs one at a time.
    for (i, (admin, _, _)) in capped.iter().enumerate() {
        let running = server.get("/v1/runs?state=running", admin).await;
        let n = running.body["runs"].as_array().map_or(0, Vec::len);
        assert!(n <= 1, "capped{i:02} runs {n} at once: {}", running.text);
    }
}

/// A tenant whose `max_concurrent_runs` exceeds the process's workers took every worker, and
/// another tenant's run waited for the hog's steps to end. The hog now leaves a worker free.
async fn a_tenant_allowed_every_worker_leaves_room_for_another(db: Db) {
    let Some(server) = start_engine(db, 16, |config| {
        config.workers = 8;
        config.run_poll = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let hog = tenant_with_hostile(&server, "hog").await;
    put_limits(&server, "hog", json!({"max_concurrent_runs": 256})).await;
    let slow = create_workflow(&server, &hog, "slow", naps(1, 30_000)).await;
    let mut hogs = Vec::new();
    for _ in 0..20 {
        hogs.push(start_run(&server, &hog, &slow, json!({})).await);
    }
    // Wait for the hog to hold what it can.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let running = server.get("/v1/runs?state=running&limit=100", &hog).await;
        let n = running.body["runs"].as_array().map_or(0, Vec::len);
        if n >= 7 {
            assert!(n < 8, "the hog holds every worker: {n}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hog never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = server.get("/v1/runs?state=running&limit=100", &hog).await;
    assert_eq!(
        running.body["runs"].as_array().map_or(0, Vec::len),
        7,
        "one of 8 workers stays free while the hog has a backlog"
    );
    let other = tenant_with_hostile(&server, "other").await;
    let echo = create_workflow(
        &server,
        &other,
        "echo",
        json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;
    let run = start_run(&server, &other, &echo, json!({})).await;
    let done = wait_for(&server, &other, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let waited = done["started_at_ms"].as_i64().expect("started")
        - done["created_at_ms"].as_i64().expect("created");
    println!("other tenant beside a hog allowed 256: started {waited} ms after creation");
    assert!(waited < 5_000, "waited {waited} ms for the hog's steps");
}

/// With production's heartbeat (5 s), a cancel was noticed at the next heartbeat. It is now
/// pushed to the worker (in process; by `NOTIFY` between processes on PostgreSQL).
async fn a_cancel_stops_the_guest_without_waiting_for_a_heartbeat(db: Db) {
    let Some(server) = start_engine(db, 8, |config| {
        config.workers = 4;
        config.run_poll = Duration::from_millis(50);
        config.run_lease = Duration::from_secs(30);
        config.run_heartbeat = Duration::from_secs(5);
    })
    .await
    else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(&server, &admin, "long", naps(1, 20_000)).await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    wait_for(&server, &admin, &run, in_state("running")).await;
    // Past a heartbeat's start, so the next one is seconds away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = tokio::time::Instant::now();
    let cancelled = server
        .post(&format!("/v1/runs/{run}/cancel"), &admin, json!({}))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    let done = wait_for(&server, &admin, &run, ended).await;
    let took = asked.elapsed();
    println!("cancel of a running guest took {} ms", took.as_millis());
    assert_eq!(done["state"], "cancelled", "{done}");
    assert!(
        took < Duration::from_millis(2_500),
        "the cancel waited for a heartbeat: {took:?}"
    );
}

/// Renames a table for a while, so statements on it fail as a database error would, then
/// puts it back.
async fn hide_table(server: &TestServer, table: &str) {
    let db = server.raw_db().await;
    sqlx::query(&format!("ALTER TABLE {table} RENAME TO {table}_hidden"))
        .execute(&db)
        .await
        .expect("hide");
}

async fn restore_table(server: &TestServer, table: &str) {
    let db = server.raw_db().await;
    sqlx::query(&format!("ALTER TABLE {table}_hidden RENAME TO {table}"))
        .execute(&db)
        .await
        .expect("restore");
}

/// A database error while a worker loads a run dead-lettered it, with the driver's text in
/// `runs.error`. It now goes back to the queue and succeeds once the database answers.
async fn a_database_error_while_loading_defers_the_run(db: Db) {
    let Some(server) = start_engine(db, 8, scaled_leases(2)).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    put_limits(&server, "acme", json!({"max_concurrent_runs": 1})).await;
    let blocker = create_workflow(&server, &admin, "blocker", naps(1, 500)).await;
    let echo = create_workflow(
        &server,
        &admin,
        "echo",
        json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;
    // The blocker holds the tenant's one slot while the run is created; the run is claimed
    // when it ends, with its workflow's versions out of reach.
    let first = start_run(&server, &admin, &blocker, json!({})).await;
    wait_for(&server, &admin, &first, in_state("running")).await;
    let run = start_run(&server, &admin, &echo, json!({})).await;
    hide_table(&server, "workflow_versions").await;
    wait_for(&server, &admin, &first, ended).await;
    let deferred = wait_for(&server, &admin, &run, |run| {
        run["state"] == "queued" && !run["started_at_ms"].is_null()
    })
    .await;
    assert!(deferred["error"].is_null(), "{deferred}");
    assert_eq!(deferred["attempt"], 0, "{deferred}");
    restore_table(&server, "workflow_versions").await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 0, "{done}");
    assert!(done["error"].is_null(), "{done}");
}

/// A journal write that failed left the run for the reaper, which re-ran the step. It is
/// now tried again while the lease holds, and the step runs once.
async fn a_journal_write_that_fails_is_tried_again_not_re_run(db: Db) {
    let Some(server) = start_engine(db, 8, scaled_leases(2)).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let steps = json!([
        {"id": "nap", "connector": "hostile", "action": "sleep", "input": {"ms": 500}},
        {"id": "after", "connector": "hostile", "action": "echo", "input": {"n": 2}},
    ]);
    let workflow = create_workflow(&server, &admin, "nap", steps).await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    wait_for(&server, &admin, &run, in_state("running")).await;
    hide_table(&server, "run_steps").await;
    // The step ends while the journal is gone; its write fails and is tried again, for
    // less than the lease (600 ms): the worker keeps the lease meanwhile.
    tokio::time::sleep(Duration::from_millis(900)).await;
    restore_table(&server, "run_steps").await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        lease_epoch(&server, "acme", &run).await,
        1,
        "the step was journaled by its worker, not run again after a reap"
    );
}
