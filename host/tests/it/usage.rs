//! The runs-per-hour counter under concurrency: admissions are group-committed, and the limit
//! holds exactly across batches and across two stores on one database (two processes).

use airlock::store::{RunAdmission, Store, StoreOptions};

use crate::api_support::{Db, TestServer, on_both_databases};

on_both_databases!(concurrent_admissions_never_exceed_the_limit);

async fn concurrent_admissions_never_exceed_the_limit(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    // A second store on the same database stands in for a second `airlock serve`.
    let stores = [
        Store::connect(&server.database_url, &StoreOptions::default())
            .await
            .expect("first store"),
        Store::connect(&server.database_url, &StoreOptions::default())
            .await
            .expect("second store"),
    ];
    const LIMIT: u32 = 25;
    // Spawned all at once (collected before any is awaited), so batches hold several.
    let calls: Vec<_> = (0..80)
        .map(|i| {
            let store = stores[i % 2].clone();
            let tenant = if i % 4 == 3 { "other" } else { "acme" };
            tokio::spawn(async move { (tenant, store.admit_run(tenant, LIMIT).await) })
        })
        .collect();
    let mut admitted = std::collections::HashMap::<&str, Vec<i64>>::new();
    for call in calls {
        let (tenant, outcome) = call.await.expect("task");
        match outcome.expect("admission") {
            RunAdmission::Admitted { runs, .. } => admitted.entry(tenant).or_default().push(runs),
            RunAdmission::OverQuota { retry_after_s } => {
                assert!((1..=3600).contains(&retry_after_s), "{retry_after_s}");
            }
        }
    }
    // acme asked 60 times, other 20: acme stops at the limit, other is untouched by it, and
    // every admitted run got its own count.
    let mut acme = admitted.remove("acme").unwrap_or_default();
    acme.sort_unstable();
    assert_eq!(acme, (1..=i64::from(LIMIT)).collect::<Vec<_>>());
    assert_eq!(admitted.remove("other").map(|r| r.len()), Some(20));
    assert_eq!(stores[1].runs_this_hour("acme").await.expect("count"), 25);
    let refused = stores[0].admit_run("acme", LIMIT).await.expect("admission");
    assert!(
        matches!(refused, RunAdmission::OverQuota { .. }),
        "{refused:?}"
    );
    // A tenant at its limit bursting in the same batches as another: it gets refusals (429),
    // never an error, and the other tenant's runs are admitted alongside.
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let store = stores[i % 2].clone();
            let (tenant, limit) = if i % 4 == 3 {
                ("calm", 100)
            } else {
                ("acme", LIMIT)
            };
            tokio::spawn(async move { (tenant, store.admit_run(tenant, limit).await) })
        })
        .collect();
    for call in burst {
        let (tenant, outcome) = call.await.expect("task");
        match (tenant, outcome) {
            ("acme", Ok(RunAdmission::OverQuota { .. })) => {}
            ("calm", Ok(RunAdmission::Admitted { .. })) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stores[0].runs_this_hour("calm").await.expect("count"), 10);
    // A limit of zero admits nothing, even for a tenant with no row yet.
    let none = stores[0].admit_run("fresh", 0).await.expect("admission");
    assert!(matches!(none, RunAdmission::OverQuota { .. }), "{none:?}");
    for store in &stores {
        store.close().await;
    }
}

/// With the database stalled (another connection holds SQLite's write lock), admissions do
/// not pile up: the queue is bounded (`Busy`, the API's 503), and the stuck batch gives up at
/// its deadline (`Unavailable`) instead of holding its callers for as long as the stall lasts.
/// Once the lock is released, admissions succeed again, and a refunded run is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_fills_a_bounded_queue_and_batches_meet_their_deadline() {
    use std::time::Duration;

    use airlock::store::StoreError;
    use sqlx::Connection as _;

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db.sqlite").display()
    );
    let options = StoreOptions {
        admission_queue: 1,
        batch_deadline: Duration::from_millis(300),
        ..StoreOptions::default()
    };
    let store = Store::connect(&url, &options).await.expect("store");
    sqlx::any::install_default_drivers();
    let mut blocker = sqlx::AnyConnection::connect(&url).await.expect("blocker");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("write lock");

    let calls: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.admit_run("acme", 100).await })
        })
        .collect();
    let (mut busy, mut timed_out) = (0, 0);
    for call in calls {
        match call.await.expect("task") {
            Err(StoreError::Busy(_)) => busy += 1,
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("longer than"), "{message}");
                timed_out += 1;
            }
            other => panic!("no admission can commit while the lock is held: {other:?}"),
        }
    }
    assert!(busy >= 1, "the bounded queue refused none");
    assert!(timed_out >= 1, "no batch met its deadline");

    sqlx::query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("release");
    // The statement cut off at the deadline may hold the writer until SQLite's busy timeout,
    // and a queue of one is full while anything waits: retried until it goes through.
    let admit = || async {
        let started = std::time::Instant::now();
        loop {
            match store.admit_run("acme", 100).await {
                Ok(admitted) => break admitted,
                Err(error) if started.elapsed() < Duration::from_secs(30) => {
                    assert!(
                        matches!(error, StoreError::Busy(_) | StoreError::Unavailable(_)),
                        "{error}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("no recovery after the stall: {error}"),
            }
        }
    };
    let admitted = admit().await;
    let RunAdmission::Admitted { runs, hour } = admitted else {
        panic!("{admitted:?}");
    };
    assert_eq!(runs, 1);
    // A refund is committed with the next batch.
    store.refund_run("acme", hour);
    let next = admit().await;
    assert!(
        matches!(next, RunAdmission::Admitted { runs: 1, .. }),
        "{next:?}"
    );
    store.close().await;
}

/// `runs_per_hour` is a clock hour: a tenant at its limit one millisecond before the hour
/// turns is admitted again one millisecond later, with a count starting over. The clock is
/// moved, not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_quota_starts_over_when_the_clock_hour_turns() {
    use std::sync::Arc;

    use airlock::model::ManualClock;

    const HOUR_MS: i64 = 3_600_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db.sqlite").display()
    );
    let next_hour = (airlock::store::now_ms() / HOUR_MS + 1) * HOUR_MS;
    let clock = ManualClock::new(next_hour - 1);
    let options = StoreOptions {
        clock: Arc::new(clock.clone()),
        ..StoreOptions::default()
    };
    let store = Store::connect(&url, &options).await.expect("store");
    for expected in 1..=3 {
        let admitted = store.admit_run("acme", 3).await.expect("admission");
        assert!(
            matches!(admitted, RunAdmission::Admitted { runs, .. } if runs == expected),
            "{admitted:?}"
        );
    }
    let refused = store.admit_run("acme", 3).await.expect("admission");
    assert_eq!(refused, RunAdmission::OverQuota { retry_after_s: 1 });
    assert_eq!(store.runs_this_hour("acme").await.expect("count"), 3);

    clock.advance_ms(1);
    assert_eq!(store.runs_this_hour("acme").await.expect("count"), 0);
    let admitted = store.admit_run("acme", 3).await.expect("admission");
    assert!(
        matches!(admitted, RunAdmission::Admitted { runs: 1, hour } if hour * HOUR_MS == next_hour),
        "{admitted:?}"
    );
    store.close().await;
}
