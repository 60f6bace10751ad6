//! Cron claims never wait for one another (PostgreSQL): a trigger whose row another
//! transaction holds (a process frozen inside its claim) is skipped, and every other trigger
//! keeps firing each tick on time; the held one catches up, each tick once, when the lock goes.

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection as _, Row as _};

use crate::api_support::{Db, TestServer};
use crate::runs_support::{create_workflow, start, tenant_with_hostile};

/// How long the other connection holds the trigger's row: several ticks.
const HOLD: Duration = Duration::from_secs(6);
/// How late a tick may be claimed and still be on time here: loose for a loaded 2-core
/// machine, well under `HOLD` (before claims skipped held rows, the free trigger's ticks
/// waited behind the held one for the whole hold).
const ON_TIME_MS: i64 = 2_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_trigger_row_costs_no_other_trigger_a_tick() {
    let Some(server) = start(Db::Postgres).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "echo",
        json!([{"id": "echo", "connector": "hostile", "action": "echo",
                "input": {"n": {"$from": "/trigger/scheduled_at"}}}]),
    )
    .await;
    let held = every_second(&server, &admin, &workflow).await;
    let free = every_second(&server, &admin, &workflow).await;
    let db = server.raw_db().await;
    // Both firing before the lock is taken.
    wait_for_ticks(&db, &free, 2).await;

    let mut locker = sqlx::PgConnection::connect(&server.database_url)
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    sqlx::query("SELECT id FROM triggers WHERE id = $1 FOR UPDATE")
        .bind(&held)
        .fetch_one(&mut locker)
        .await
        .expect("lock the trigger's row");
    let locked_at = airlock::store::now_ms();
    tokio::time::sleep(HOLD).await;
    let held_ticks_while_locked = ticks(&db, &held).await;
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("rollback");
    let released_at = airlock::store::now_ms();

    // The free trigger: every second of the hold has its tick, claimed on time.
    let window = (locked_at / 1000 + 1) * 1000..=(released_at / 1000 - 1) * 1000;
    let free_ticks = ticks(&db, &free).await;
    for second in window.clone().step_by(1000) {
        let tick = free_ticks.iter().find(|(at, _)| *at == second);
        let Some((at, claimed)) = tick else {
            panic!("the free trigger lost its tick at {second}: {free_ticks:?}");
        };
        assert!(
            claimed - at <= ON_TIME_MS,
            "the free trigger's tick at {at} was claimed {} ms late: {free_ticks:?}",
            claimed - at
        );
    }
    // The held one fired nothing while its row was held...
    assert!(
        held_ticks_while_locked
            .iter()
            .all(|(at, _)| *at <= locked_at),
        "a tick of the held trigger was claimed under the lock: {held_ticks_while_locked:?}"
    );
    // ... and catches up once it is free (its ticks are late by less than the scheduler's
    // grace, so each fires), each tick once.
    let caught_up = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let now = ticks(&db, &held).await;
            if window
                .clone()
                .step_by(1000)
                .all(|second| now.iter().any(|(at, _)| *at == second))
            {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the held trigger caught up on the ticks of the hold");
    for trigger in [&held, &free] {
        let twice = sqlx::query(
            "SELECT idempotency_key, COUNT(*) AS n FROM runs WHERE trigger_id = $1 \
             GROUP BY idempotency_key HAVING COUNT(*) > 1",
        )
        .bind(trigger)
        .fetch_all(&db)
        .await
        .expect("runs");
        assert!(twice.is_empty(), "a tick of {trigger} fired twice");
    }
    let fired = sqlx::query("SELECT COUNT(*) AS n FROM runs WHERE trigger_id = $1")
        .bind(&held)
        .fetch_one(&db)
        .await
        .expect("runs")
        .try_get::<i64, _>("n")
        .expect("n");
    assert!(
        fired >= i64::try_from(caught_up.len()).unwrap_or(i64::MAX),
        "every recorded tick of the held trigger made its run ({fired} runs, {caught_up:?})"
    );
}

/// A cron trigger firing every second; its id.
async fn every_second(server: &TestServer, admin: &str, workflow: &str) -> String {
    let reply = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            admin,
            json!({"kind": "cron", "expression": "* * * * * *"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_str().expect("id").to_owned()
}

/// The trigger's recorded ticks: scheduled time and when they were claimed (ms).
async fn ticks(db: &sqlx::AnyPool, trigger: &str) -> Vec<(i64, i64)> {
    let rows = sqlx::query(
        "SELECT scheduled_at, created_at FROM trigger_ticks WHERE trigger_id = $1 \
         ORDER BY scheduled_at",
    )
    .bind(trigger)
    .fetch_all(db)
    .await
    .expect("ticks");
    rows.iter()
        .map(|row| {
            (
                row.try_get("scheduled_at").expect("scheduled_at"),
                row.try_get("created_at").expect("created_at"),
            )
        })
        .collect()
}

async fn wait_for_ticks(db: &sqlx::AnyPool, trigger: &str, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while ticks(db, trigger).await.len() < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the trigger fires");
}
