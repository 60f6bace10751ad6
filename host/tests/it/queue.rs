//! The run queue in the store, without workers: fencing, lease expiry, fair claiming across
//! tenants within each tenant's concurrency quota, idempotency keys, replay and cancel
//! bookkeeping, and the append-only audit log. Both databases.

use airlock::quota::TenantQuota;
use airlock::store::{
    AfterFailure, Claimed, Cost, Enqueued, Finish, KeptItems, LeaseStatus, NewRun, ReplayAdmission,
    RunFilter, RunState, StepResult, Store, StoreError, StoreOptions,
};

/// Limits no replay here reaches.
const ADMIT: ReplayAdmission = ReplayAdmission {
    runs_per_hour: 1_000,
    max_queued: 1_000,
};

use crate::api_support::{Db, PgDatabase, on_both_databases};

on_both_databases!(
    a_worker_that_lost_its_lease_writes_nothing,
    claims_take_tenants_in_turn,
    claims_respect_each_tenants_concurrency_quota,
    one_run_per_idempotency_key_under_concurrency,
    replay_keeps_earlier_steps_and_is_audited,
    audit_records_cannot_be_changed,
    waiting_runs_per_tenant_are_capped,
    runs_created_at_once_are_capped_and_counted_exactly,
    the_last_journal_write_ends_the_run,
);

/// A store on a fresh database, and what keeps the database alive.
struct Fresh {
    store: Store,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn fresh(db: Db) -> Option<Fresh> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, pg) = match db {
        Db::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.path().join("q.db").display()),
            None,
        ),
        Db::Postgres => {
            let pg = PgDatabase::create().await?;
            (pg.url.clone(), Some(pg))
        }
    };
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .expect("store");
    Some(Fresh {
        store,
        _dir: dir,
        _pg: pg,
    })
}

async fn tenant(store: &Store, id: &str, max_concurrent_runs: u32) {
    store.create_tenant(id, id).await.expect("tenant");
    let mut quota = TenantQuota::default();
    quota.runtime.max_concurrent_runs = max_concurrent_runs;
    store.set_tenant_quota(id, &quota).await.expect("quota");
    store
        .create_workflow(id, "wf", "wf", r#"{"steps":[]}"#, 10)
        .await
        .expect("workflow");
}

fn new_run(id: &str, key: Option<&str>) -> NewRun {
    NewRun {
        id: id.to_owned(),
        workflow_id: "wf".into(),
        workflow_version: 1,
        input: "{}".into(),
        idempotency_key: key.map(str::to_owned),
        request_hash: None,
        trigger_id: None,
        trace_id: None,
        trace_parent: None,
        runs_per_hour: None,
        max_queued: 100_000,
    }
}

async fn enqueue(store: &Store, tenant: &str, id: &str) {
    match store.create_run(tenant, new_run(id, None)).await {
        Ok(Enqueued::Created(_)) => {}
        other => panic!("enqueue {id}: {other:?}"),
    }
}

fn step(index: i64, output: &str) -> StepResult {
    StepResult {
        index,
        next: index + 1,
        step_id: format!("s{index}"),
        skipped: false,
        output: Some(output.to_owned()),
        error: None,
        logs: "[]".into(),
        cost: Cost::default(),
    }
}

async fn claim(store: &Store, worker: &str, lease_ms: i64) -> Option<Claimed> {
    store.claim_run(worker, lease_ms).await.expect("claim")
}

async fn a_worker_that_lost_its_lease_writes_nothing(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "t1", 4).await;
    enqueue(store, "t1", "run_a").await;

    let old = claim(store, "w-old", 1).await.expect("claimed");
    assert_eq!(old.lease.epoch, 1);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        store.reap().await.expect("reap"),
        1,
        "the expired lease is re-queued"
    );
    assert_eq!(
        store
            .heartbeat(&old.lease, 10_000)
            .await
            .expect("heartbeat"),
        LeaseStatus::Lost
    );
    let new = claim(store, "w-new", 60_000).await.expect("claimed again");
    assert_eq!(new.lease.epoch, 2, "every claim grows the fencing token");

    // The old worker comes back: none of its writes land.
    assert_eq!(
        store
            .journal_step(&old.lease, &step(0, "1"), None)
            .await
            .expect("write"),
        LeaseStatus::Lost
    );
    let failed = AfterFailure::Dead {
        error: "{}".into(),
        handler: None,
        notice: "{}".into(),
    };
    assert!(
        !store
            .fail_step(&old.lease, &step(0, "1"), &failed)
            .await
            .expect("write")
    );
    assert!(
        !store
            .finish_run(&old.lease, &Finish::Succeeded { output: "1".into() })
            .await
            .expect("write")
    );
    assert!(
        store
            .run_steps("t1", "run_a")
            .await
            .expect("steps")
            .is_empty()
    );
    let run = store.run("t1", "run_a").await.expect("run");
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.next_step, 0);

    // The new holder's writes do.
    assert_eq!(
        store
            .journal_step(&new.lease, &step(0, "2"), None)
            .await
            .expect("write"),
        LeaseStatus::Held
    );
    assert_eq!(
        store
            .heartbeat(&new.lease, 10_000)
            .await
            .expect("heartbeat"),
        LeaseStatus::Held
    );
    assert!(
        store
            .finish_run(&new.lease, &Finish::Succeeded { output: "2".into() })
            .await
            .expect("write")
    );
    let run = store.run("t1", "run_a").await.expect("run");
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.output.as_deref(), Some("2"));
    let steps = store.run_steps("t1", "run_a").await.expect("steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].output.as_deref(), Some("2"));
    assert_eq!(steps[0].attempts, 1);
}

/// The last step's journal write ends the run in the same write: succeeded with its output,
/// or cancelled (no output) when a cancel was asked for while the step ran.
async fn the_last_journal_write_ends_the_run(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "t1", 4).await;
    enqueue(store, "t1", "run_ok").await;
    let ok = claim(store, "w", 60_000).await.expect("claimed");
    assert_eq!(
        store
            .journal_step(&ok.lease, &step(0, "7"), Some("7"))
            .await
            .expect("write"),
        LeaseStatus::Held
    );
    let run = store.run("t1", "run_ok").await.expect("run");
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.output.as_deref(), Some("7"));
    assert!(run.finished_at.is_some());
    // The run is over: the lease is gone, so no later write of the worker lands.
    assert_eq!(
        store.heartbeat(&ok.lease, 10_000).await.expect("heartbeat"),
        LeaseStatus::Lost
    );

    enqueue(store, "t1", "run_cancel").await;
    let c = claim(store, "w", 60_000).await.expect("claimed");
    store
        .cancel_run("t1", "run_cancel", "tester")
        .await
        .expect("cancel");
    assert_eq!(
        store
            .journal_step(&c.lease, &step(0, "8"), Some("8"))
            .await
            .expect("write"),
        LeaseStatus::CancelRequested
    );
    let run = store.run("t1", "run_cancel").await.expect("run");
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(run.output, None);
    let steps = store.run_steps("t1", "run_cancel").await.expect("steps");
    assert_eq!(
        steps[0].output.as_deref(),
        Some("8"),
        "the step is journaled all the same"
    );
}

async fn claims_take_tenants_in_turn(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "big", 1_000).await;
    tenant(store, "small", 1_000).await;
    for i in 0..60 {
        enqueue(store, "big", &format!("big_{i:03}")).await;
    }
    for i in 0..3 {
        enqueue(store, "small", &format!("small_{i}")).await;
    }
    // The small tenant enqueued last, behind 60 runs; oldest-first would serve it 61st.
    let mut order = Vec::new();
    for _ in 0..6 {
        let claimed = claim(store, "w", 60_000).await.expect("a run");
        order.push(claimed.lease.tenant_id);
    }
    let small = order.iter().filter(|t| *t == "small").count();
    assert_eq!(small, 3, "tenants alternate: {order:?}");
    // Within a tenant, oldest first.
    let next = claim(store, "w", 60_000).await.expect("a run");
    assert_eq!(next.lease.run_id, "big_003");
}

async fn claims_respect_each_tenants_concurrency_quota(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "capped", 2).await;
    for i in 0..5 {
        enqueue(store, "capped", &format!("c{i}")).await;
    }
    let first = claim(store, "w1", 60_000).await.expect("first");
    let _second = claim(store, "w2", 60_000).await.expect("second");
    assert!(
        claim(store, "w3", 60_000).await.is_none(),
        "a third run would put the tenant over its max_concurrent_runs of 2"
    );
    // Concurrent claimers cannot overshoot either.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_run(&format!("r{i}"), 60_000).await })
        })
        .collect();
    for racer in racers {
        assert!(racer.await.expect("join").expect("claim").is_none());
    }
    assert!(
        store
            .finish_run(
                &first.lease,
                &Finish::Succeeded {
                    output: "null".into()
                }
            )
            .await
            .expect("finish")
    );
    assert!(
        claim(store, "w3", 60_000).await.is_some(),
        "a slot freed up"
    );
}

async fn one_run_per_idempotency_key_under_concurrency(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "t1", 4).await;
    tenant(store, "t2", 4).await;
    let racers: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_run("t1", new_run(&format!("run_{i}"), Some("order-42")))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for racer in racers {
        match racer.await.expect("join").expect("create") {
            Enqueued::Created(run) => {
                created += 1;
                ids.insert(run.id);
            }
            Enqueued::Existing(run) => {
                ids.insert(run.id);
            }
        }
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "every request got the same run: {ids:?}");
    // Keys are per tenant.
    assert!(matches!(
        store
            .create_run("t2", new_run("run_t2", Some("order-42")))
            .await,
        Ok(Enqueued::Created(_))
    ));
}

async fn replay_keeps_earlier_steps_and_is_audited(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "t1", 4).await;
    enqueue(store, "t1", "run_r").await;
    let c = claim(store, "w", 60_000).await.expect("claimed");
    assert_eq!(
        store
            .journal_step(&c.lease, &step(0, "\"first\""), None)
            .await
            .expect("journal"),
        LeaseStatus::Held
    );
    let mut failed = step(1, "");
    failed.output = None;
    failed.error = Some(r#"{"kind":"timeout"}"#.into());
    let dead = AfterFailure::Dead {
        error: r#"{"step":"s1"}"#.into(),
        handler: None,
        notice: "{}".into(),
    };
    assert!(
        store
            .fail_step(&c.lease, &failed, &dead)
            .await
            .expect("fail")
    );
    let run = store.run("t1", "run_r").await.expect("run");
    assert_eq!(run.state, RunState::Dead);
    assert_eq!(run.next_step, 1);
    let first_step = store.run_steps("t1", "run_r").await.expect("steps")[0].clone();

    // Replaying past the step that failed would skip it: refused.
    assert!(
        store
            .replay_run(
                "t1",
                "run_r",
                Some(2),
                KeptItems::None,
                None,
                ADMIT,
                "alice"
            )
            .await
            .expect("replay")
            .is_err()
    );
    // A replay is held to the tenant's limits as a new run is, and refused writes nothing.
    for (admit, refused) in [
        (
            ReplayAdmission {
                max_queued: 0,
                ..ADMIT
            },
            "max_queued_runs",
        ),
        (
            ReplayAdmission {
                runs_per_hour: 0,
                ..ADMIT
            },
            "runs_per_hour",
        ),
    ] {
        let outcome = store
            .replay_run("t1", "run_r", None, KeptItems::All, None, admit, "alice")
            .await;
        match (refused, outcome) {
            ("max_queued_runs", Err(StoreError::LimitReached { quota, .. })) => {
                assert_eq!(quota, "max_queued_runs");
            }
            ("runs_per_hour", Err(StoreError::OverQuota { .. })) => {}
            (_, other) => panic!("{refused}: {other:?}"),
        }
        assert_eq!(
            store.run("t1", "run_r").await.expect("run").state,
            RunState::Dead
        );
    }
    let replayed = store
        .replay_run("t1", "run_r", None, KeptItems::All, None, ADMIT, "alice")
        .await
        .expect("replay")
        .expect("replayable");
    assert_eq!(replayed.state, RunState::Queued);
    assert_eq!(replayed.next_step, 1);
    let steps = store.run_steps("t1", "run_r").await.expect("steps");
    assert_eq!(
        steps.len(),
        1,
        "the failed step's row is cleared, the first kept"
    );
    assert_eq!(steps[0].finished_at, first_step.finished_at);
    assert_eq!(steps[0].output, first_step.output);
    // Only dead and cancelled runs replay.
    assert!(
        store
            .replay_run("t1", "run_r", None, KeptItems::All, None, ADMIT, "alice")
            .await
            .expect("replay")
            .is_err()
    );
    let audit = store.audit_records("t1", 10).await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].actor.as_str(),
            audit[0].action.as_str(),
            audit[0].run_id.as_str()
        ),
        ("alice", "replay", "run_r")
    );
    assert!(
        store
            .audit_records("t2", 10)
            .await
            .expect("audit")
            .is_empty()
    );
}

async fn audit_records_cannot_be_changed(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "t1", 4).await;
    enqueue(store, "t1", "run_c").await;
    assert_eq!(
        store
            .cancel_run("t1", "run_c", "bob")
            .await
            .expect("cancel"),
        airlock::store::Cancelled::Now
    );
    assert_eq!(store.audit_records("t1", 10).await.expect("audit").len(), 1);
    for sql in [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
    ] {
        let refused = sqlx::query(sql).execute(store.pool()).await;
        assert!(refused.is_err(), "{sql} was allowed");
    }
    let audit = store.audit_records("t1", 10).await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "bob");
}

/// Runs created at the same moment: on SQLite they share a group-committed transaction, in
/// which each tenant's waiting runs are counted once and then kept in memory; on PostgreSQL
/// each is its own transaction and the hourly count a guarded statement. Either way the
/// hourly limit holds exactly, a refused run leaves no row, and the day's usage counts the
/// runs created.
async fn runs_created_at_once_are_capped_and_counted_exactly(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "t1", 4).await;
    tenant(store, "t2", 4).await;
    let all = RunFilter {
        limit: 100,
        ..RunFilter::default()
    };
    let attempts = (0..8).map(|i| {
        let mut run = new_run(&format!("h{i}"), None);
        run.runs_per_hour = Some(3);
        store.create_run("t1", run)
    });
    let outcomes = futures::future::join_all(attempts).await;
    let made = created(&outcomes);
    let over = outcomes
        .iter()
        .filter(|o| matches!(o, Err(StoreError::OverQuota { limit: 3, .. })))
        .count();
    assert_eq!((made, over), (3, 5), "{outcomes:?}");
    assert_eq!(store.runs_this_hour("t1").await.expect("count"), 3);
    let days = store.usage_days("t1", 1).await.expect("usage");
    assert_eq!(days[0].runs, 3, "only created runs are counted");
    let rows = store.list_runs("t1", &all).await.expect("list");
    assert_eq!(rows.len(), 3, "refused runs leave no row");
    // The same key twice at once, over the hour's limit: both refused, and the second is not
    // told that the first's run (inserted, refused, deleted) exists.
    let twins = (0..2).map(|i| {
        let mut run = new_run(&format!("twin{i}"), Some("same-key"));
        run.runs_per_hour = Some(3);
        store.create_run("t1", run)
    });
    for outcome in futures::future::join_all(twins).await {
        assert!(
            matches!(outcome, Err(StoreError::OverQuota { limit: 3, .. })),
            "{outcome:?}"
        );
    }
    assert!(
        store
            .run_by_key("t1", "same-key")
            .await
            .expect("read")
            .is_none(),
        "no run holds the key"
    );
    if db == Db::Sqlite {
        // One writer makes the queue cap exact too. (PostgreSQL counts waiting runs without
        // a lock, so concurrent creations may pass it by up to their number: a soft cap.)
        let attempts = (0..8).map(|i| {
            let mut run = new_run(&format!("q{i}"), None);
            run.max_queued = 3;
            store.create_run("t2", run)
        });
        let outcomes = futures::future::join_all(attempts).await;
        assert_eq!(created(&outcomes), 3, "{outcomes:?}");
        let rows = store.list_runs("t2", &all).await.expect("list");
        assert_eq!(rows.len(), 3);
    }
}

/// How many of `outcomes` created their run.
fn created(outcomes: &[Result<Enqueued, StoreError>]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Enqueued::Created(_))))
        .count()
}

async fn waiting_runs_per_tenant_are_capped(db: Db) {
    let Some(f) = fresh(db).await else { return };
    let store = &f.store;
    tenant(store, "t1", 4).await;
    for i in 0..3 {
        let mut run = new_run(&format!("q{i}"), None);
        run.max_queued = 3;
        assert!(matches!(
            store.create_run("t1", run).await,
            Ok(Enqueued::Created(_))
        ));
    }
    let mut fourth = new_run("q3", None);
    fourth.max_queued = 3;
    assert!(matches!(
        store.create_run("t1", fourth).await,
        Err(StoreError::LimitReached {
            quota: "max_queued_runs",
            limit: 3
        })
    ));
    assert!(
        store.run("t1", "q3").await.is_err(),
        "a refused run writes nothing"
    );
}
