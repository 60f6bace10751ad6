//! Durable runs through the API with the server's own workers: workflows saved and checked,
//! runs created (idempotency, quota), executed step by step, retried, dead-lettered,
//! replayed and cancelled; step idempotency keys reaching a real upstream; tenants kept
//! apart. Both databases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock::api::Role;
use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use serde_json::{Value, json};

use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};
use crate::runs_support::{
    away_from_hour_turn, create_workflow, ended, fast_workers, in_state, put_limits,
    runs_this_hour, start, start_run, tenant_with_hostile, wait_for,
};
use crate::support::{Server, options, options_for_tls};

on_both_databases!(
    a_two_step_workflow_runs_to_success_charged_once,
    definitions_are_checked_at_save,
    versions_are_immutable_and_runs_keep_theirs,
    an_idempotency_key_makes_one_run,
    retryable_failures_retry_then_dead_letter_and_replay_resumes,
    hopeless_failures_go_straight_to_the_dead_letters,
    a_replay_counts_against_runs_per_hour,
    cancel_stops_a_running_guest,
    steps_send_their_idempotency_key_upstream,
    a_step_reads_its_idempotency_key_through_the_contract,
    runs_are_kept_apart_by_tenant_and_role,
    the_workflow_quota_is_enforced,
    a_step_output_that_echoes_the_credential_never_shows_it,
    a_full_queue_is_refused_and_not_ready,
    a_backlog_does_not_starve_another_tenant,
    a_runs_journal_keeps_its_step_logs_within_the_run_log_budget,
);

const API: &str = "api.example.test";

/// Requests an upstream saw: (method, idempotency key).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn a_two_step_workflow_runs_to_success_charged_once(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "double echo",
        json!([
            {"id": "first", "connector": "hostile", "action": "echo",
             "input": {"n": {"$from": "/trigger/count"}}},
            {"id": "second", "connector": "hostile", "action": "echo",
             "input": {"n": {"$from": "/steps/first/n"}, "note": {"$literal": {"$from": "kept"}}}},
        ]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({"count": 7})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], json!({"n": 7, "note": {"$from": "kept"}}));
    assert_eq!(done["workflow_version"], 1);
    let steps = done["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{done}");
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step["index"], i);
        assert_eq!(step["status"], "succeeded");
        assert_eq!(step["attempts"], 1);
        assert!(step["stats"]["fuel_used"].as_i64().expect("fuel") > 0);
    }
    assert_eq!(steps[0]["output"], json!({"n": 7}));
    let run_fuel = done["stats"]["fuel_used"].as_i64().expect("fuel");
    let step_fuel: i64 = steps
        .iter()
        .map(|s| s["stats"]["fuel_used"].as_i64().expect("fuel"))
        .sum();
    assert_eq!(run_fuel, step_fuel, "the run's cost is its steps' sum");
    // One run counted against the hour, not one per step; usage per day has both.
    assert_eq!(runs_this_hour(&server, &admin).await, 1);
    let daily = server.get("/v1/usage/daily", &admin).await;
    assert_eq!(daily.body[0]["runs"], 1, "{}", daily.text);
    let today = daily.body[0]["day"].as_i64().expect("day");
    let date = daily.body[0]["date"].as_str().expect("date");
    assert_eq!(date.len(), 10, "YYYY-MM-DD: {date}");
    // The date is the day's: days since 1970 back from the date's own year, month and day.
    let (y, m, d): (i64, i64, i64) = (
        date[0..4].parse().expect("year"),
        date[5..7].parse().expect("month"),
        date[8..10].parse().expect("day"),
    );
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    assert_eq!(era * 146_097 + doe - 719_468, today, "{date}");
    assert_eq!(daily.body[0]["steps"], 2, "{}", daily.text);
    let listed = server
        .get(
            &format!("/v1/runs?workflow={workflow}&state=succeeded"),
            &admin,
        )
        .await;
    assert_eq!(listed.body["runs"][0]["id"], json!(run), "{}", listed.text);
}

async fn definitions_are_checked_at_save(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let echo = |id: &str, input: Value| json!({"id": id, "connector": "hostile", "action": "echo", "input": input});
    // What the tenant does not have is not found, naming the step's field.
    let missing = [
        (
            json!([{"id": "a", "connector": "nope", "action": "echo"}]),
            "steps[0].connector",
        ),
        (
            json!([{"id": "a", "connector": "hostile", "version": "9.9.9", "action": "echo"}]),
            "steps[0].version",
        ),
        (
            json!([{"id": "a", "connector": "hostile", "action": "echo", "connection": "conn_x"}]),
            "steps[0].connection",
        ),
    ];
    for (steps, field) in missing {
        let reply = server
            .post(
                "/v1/workflows",
                &admin,
                json!({"name": "w", "steps": steps}),
            )
            .await;
        assert_problem(&reply, 404, "not-found");
        assert!(
            reply.body["detail"]
                .as_str()
                .expect("detail")
                .starts_with(field),
            "{}",
            reply.text
        );
    }
    // What is wrong in the definition itself is invalid, naming the field.
    let cases = [
        (json!([]), "steps"),
        (
            json!([{"id": "a", "connector": "hostile", "action": "nope"}]),
            "steps[0].action",
        ),
        (
            json!([
                echo("a", json!({"n": {"$from": "/steps/b/n"}})),
                echo("b", json!({}))
            ]),
            "steps[0].input/n",
        ),
        (json!([echo("Bad Id", json!({}))]), "steps[0].id"),
        (
            json!([echo("a", json!({})), echo("a", json!({}))]),
            "steps[1].id",
        ),
        (
            json!([{"id": "a", "connector": "hostile", "action": "echo", "surprise": 1}]),
            "steps",
        ),
    ];
    for (steps, field) in cases {
        let reply = server
            .post(
                "/v1/workflows",
                &admin,
                json!({"name": "w", "steps": steps}),
            )
            .await;
        assert_problem(&reply, 422, "validation");
        assert_eq!(reply.body["field"], json!(field), "{}", reply.text);
    }
    let listed = server.get("/v1/workflows", &admin).await;
    assert_eq!(listed.body, json!([]), "refused definitions saved nothing");
}

async fn versions_are_immutable_and_runs_keep_theirs(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    // Version 1 sleeps long enough for the run to still be going when version 2 is saved.
    let workflow = create_workflow(
        &server,
        &admin,
        "versions",
        json!([{"id": "nap", "connector": "hostile", "action": "sleep", "input": {"ms": 600}}]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let saved = server
        .put(
            &format!("/v1/workflows/{workflow}"),
            &admin,
            json!({"steps": [{"id": "echo", "connector": "hostile", "action": "echo", "input": {"n": 1}}]}),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    assert_eq!(saved.body["version"], 2);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["workflow_version"], 1);
    assert_eq!(
        done["output"],
        json!({"slept_ms": 600}),
        "ran version 1's step"
    );
    let v1 = server
        .get(&format!("/v1/workflows/{workflow}?version=1"), &admin)
        .await;
    assert_eq!(v1.body["steps"][0]["id"], "nap", "{}", v1.text);
    let second = start_run(&server, &admin, &workflow, json!({})).await;
    let done = wait_for(&server, &admin, &second, ended).await;
    assert_eq!(
        (done["workflow_version"].clone(), done["output"].clone()),
        (json!(2), json!({"n": 1}))
    );
    // Deleted: no new runs.
    let deleted = server
        .delete(&format!("/v1/workflows/{workflow}"), &admin)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let refused = server
        .post(&format!("/v1/workflows/{workflow}/runs"), &admin, json!({}))
        .await;
    assert_problem(&refused, 404, "not-found");
}

async fn an_idempotency_key_makes_one_run(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "once",
        json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;
    let server = Arc::new(server);
    let path = format!("/v1/workflows/{workflow}/runs");
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let server = server.clone();
            let (path, admin) = (path.clone(), admin.clone());
            tokio::spawn(async move { keyed_post(&server, &path, &admin, "delivery-1").await })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for request in requests {
        let (status, body) = request.await.expect("join");
        statuses.push(status);
        ids.insert(body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "one run for one key: {ids:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 200),
        "{statuses:?}"
    );
    // Concurrent first requests each charged, and all but the winner are refunded; refunds
    // ride the run counter's next batch, so the count settles within moments.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runs_this_hour(&server, &admin).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a repeat stayed charged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = keyed_post(&server, &path, &admin, "delivery-1").await;
    assert_eq!(status, 200, "a later repeat finds the run");
    assert_eq!(
        runs_this_hour(&server, &admin).await,
        1,
        "and is not charged at all"
    );
    let (status, _) = keyed_post(&server, &path, &admin, "delivery-2").await;
    assert_eq!(status, 202);
    let (status, body) = keyed_post(&server, &path, &admin, "bad key with spaces").await;
    assert_eq!(status, 422, "{body}");
}

async fn keyed_post(server: &TestServer, path: &str, token: &str, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(json!({"input": {}}).to_string())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = serde_json::from_str(&response.text().await.expect("body")).unwrap_or(Value::Null);
    (status, body)
}

async fn retryable_failures_retry_then_dead_letter_and_replay_resumes(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    // The tenant's wall clock is too short for the second step: it times out (retryable)
    // on every attempt until the operator raises the limit.
    put_limits(&server, "acme", json!({"timeout_ms": 150})).await;
    let workflow = create_workflow(
        &server,
        &admin,
        "slow",
        json!([
            {"id": "quick", "connector": "hostile", "action": "echo", "input": {"n": 3}},
            {"id": "slow", "connector": "hostile", "action": "sleep", "input": {"ms": 600},
             "retry": {"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50}},
        ]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["step"], "slow");
    assert_eq!(dead["error"]["kind"], "timeout");
    assert_eq!(dead["error"]["attempts"], 3, "{dead}");
    assert_eq!(dead["next_step"], 1);
    let steps = dead["steps"].as_array().expect("steps").clone();
    assert_eq!(steps[0]["status"], "succeeded");
    assert_eq!(steps[1]["status"], "failed");
    assert_eq!(steps[1]["attempts"], 3);
    let letters = server.get("/v1/dead-letters", &admin).await;
    assert_eq!(
        letters.body["runs"][0]["id"],
        json!(run),
        "{}",
        letters.text
    );

    put_limits(&server, "acme", json!({"timeout_ms": 5000})).await;
    // The hot-row cache may hold the old limits for up to a second.
    tokio::time::sleep(airlock::pipeline::HOT_ROW_TTL).await;
    let replayed = server
        .post(&format!("/v1/runs/{run}/replay"), &admin, json!({}))
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let after = done["steps"].as_array().expect("steps");
    assert_eq!(
        after[0], steps[0],
        "the journaled first step was not run again"
    );
    assert_eq!(after[1]["status"], "succeeded");
    let again = server
        .post(&format!("/v1/runs/{run}/replay"), &admin, json!({}))
        .await;
    assert_problem(&again, 409, "conflict");
    let audit = server.get("/v1/audit", &admin).await;
    assert_eq!(audit.body[0]["action"], "replay", "{}", audit.text);
    assert_eq!(audit.body[0]["run_id"], json!(run));
    assert_eq!(audit.body[0]["actor"], "test");
    assert_eq!(
        runs_this_hour(&server, &admin).await,
        2,
        "the run and its replay; retries are not new runs"
    );
}

async fn hopeless_failures_go_straight_to_the_dead_letters(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "hopeless",
        json!([{"id": "bad", "connector": "hostile", "action": "echo",
                "input": {"n": {"$from": "/trigger/n"}},
                "retry": {"max_attempts": 5, "initial_backoff_ms": 10, "max_backoff_ms": 10}}]),
    )
    .await;
    // The schema wants an integer: invalid input, not worth a retry.
    let run = start_run(&server, &admin, &workflow, json!({"n": "seven"})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["kind"], "invalid_input");
    assert_eq!(dead["error"]["attempts"], 1);
    // A pointer that finds nothing is the same.
    let missing = start_run(&server, &admin, &workflow, json!({})).await;
    let dead = wait_for(&server, &admin, &missing, ended).await;
    assert_eq!(dead["error"]["kind"], "invalid_input", "{dead}");
    assert!(
        dead["error"]["message"]
            .as_str()
            .expect("message")
            .contains("/trigger/n"),
        "{dead}"
    );
}

/// A replay runs the workflow again: it counts as a run against `runs_per_hour`, and one the
/// hour cannot pay for is refused and changes nothing, alone or in a batch.
async fn a_replay_counts_against_runs_per_hour(db: Db) {
    away_from_hour_turn().await;
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    put_limits(&server, "acme", json!({"runs_per_hour": 2})).await;
    let workflow = create_workflow(
        &server,
        &admin,
        "hopeless",
        json!([{"id": "bad", "connector": "hostile", "action": "echo",
                "input": {"n": {"$from": "/trigger/n"}}}]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({"n": "seven"})).await;
    assert_eq!(
        wait_for(&server, &admin, &run, ended).await["state"],
        "dead"
    );
    assert_eq!(runs_this_hour(&server, &admin).await, 1);
    let path = format!("/v1/runs/{run}/replay");
    let replayed = server.post(&path, &admin, json!({})).await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    assert_eq!(replayed.body["state"], "queued", "{}", replayed.text);
    // The replay was committed before its answer: the run is queued, running or dead again.
    assert_eq!(
        wait_for(&server, &admin, &run, ended).await["state"],
        "dead"
    );
    assert_eq!(runs_this_hour(&server, &admin).await, 2);

    let refused = server.post(&path, &admin, json!({})).await;
    assert_problem(&refused, 429, "quota-exceeded");
    assert!(
        refused.headers.contains_key("retry-after"),
        "{:?}",
        refused.headers
    );
    let batch = server
        .post("/v1/dead-letters/replay", &admin, json!({"run_ids": [run]}))
        .await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(batch.body["replayed"], json!([]), "{}", batch.text);
    assert!(
        batch.body["refused"][0]["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("quota-exceeded")),
        "{}",
        batch.text
    );
    let still = server.get(&format!("/v1/runs/{run}"), &admin).await;
    assert_eq!(
        still.body["state"], "dead",
        "nothing replayed: {}",
        still.text
    );
    assert_eq!(runs_this_hour(&server, &admin).await, 2);
    let audit = server.get("/v1/audit", &admin).await;
    let replays = audit
        .body
        .as_array()
        .expect("audit")
        .iter()
        .filter(|r| r["action"] == "replay")
        .count();
    assert_eq!(
        replays, 1,
        "a refused replay writes no record: {}",
        audit.text
    );
}

async fn cancel_stops_a_running_guest(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "long",
        json!([{"id": "nap", "connector": "hostile", "action": "sleep", "input": {"ms": 20000}}]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    wait_for(&server, &admin, &run, in_state("running")).await;
    let asked = tokio::time::Instant::now();
    let cancelled = server
        .post(&format!("/v1/runs/{run}/cancel"), &admin, json!({}))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.body["cancel_requested"], true);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the guest was stopped, not waited for"
    );
    let again = server
        .post(&format!("/v1/runs/{run}/cancel"), &admin, json!({}))
        .await;
    assert_problem(&again, 409, "conflict");
    // A queued run is cancelled at once, and a cancelled run can be replayed.
    let audit = server.get("/v1/audit", &admin).await;
    assert_eq!(audit.body[0]["action"], "cancel", "{}", audit.text);
    assert_eq!(audit.body[0]["detail"]["previous_state"], "running");
}

async fn steps_send_their_idempotency_key_upstream(db: Db) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let upstream = Server::start_tls(
        Router::new().route(
            "/{*path}",
            any(move |request: Request| {
                let record = record.clone();
                async move {
                    let key = request
                        .headers()
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    record
                        .lock()
                        .expect("lock")
                        .push((request.method().to_string(), key));
                    axum::Json(json!({"ok": true}))
                }
            }),
        ),
        &[API],
    )
    .await;
    let mut options = options_for_tls(&upstream, &[API]);
    options.engine.pool_size = 8;
    let Some(server) = TestServer::start_configured(db, options, fast_workers).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "charge",
        json!([
            {"id": "look", "connector": "hostile", "action": "fetch",
             "input": {"url": format!("https://{API}/orders")}},
            {"id": "charge", "connector": "hostile", "action": "fetch",
             "input": {"method": "POST", "url": format!("https://{API}/charges"), "body": "{}"}},
        ]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [
            ("GET".to_owned(), None),
            (
                "POST".to_owned(),
                Some(airlock::runs::step_key(&run, "charge"))
            ),
        ]
    );
}

/// The `invocation` import: a step sees `<run>:<step>`, a synchronous invocation nothing.
async fn a_step_reads_its_idempotency_key_through_the_contract(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "keyed",
        json!([{"id": "mark", "connector": "hostile", "action": "step_key", "input": {}}]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], json!({"key": format!("{run}:mark")}));
    let direct = server
        .post(
            "/v1/connectors/hostile/actions/step_key/invoke",
            &admin,
            json!({"input": {}}),
        )
        .await;
    assert_eq!(direct.status, 200, "{}", direct.text);
    assert_eq!(
        direct.body["output"],
        json!({"key": null}),
        "{}",
        direct.text
    );
}

async fn runs_are_kept_apart_by_tenant_and_role(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let other = tenant_with_hostile(&server, "globex").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "mine",
        json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({"secret": "acme-only"})).await;
    wait_for(&server, &admin, &run, ended).await;
    for path in [
        format!("/v1/workflows/{workflow}"),
        format!("/v1/runs/{run}"),
    ] {
        assert_problem(&server.get(&path, &other).await, 404, "not-found");
    }
    for path in [
        format!("/v1/workflows/{workflow}/runs"),
        format!("/v1/runs/{run}/cancel"),
        format!("/v1/runs/{run}/replay"),
    ] {
        assert_problem(
            &server.post(&path, &other, json!({})).await,
            404,
            "not-found",
        );
    }
    let listed = server.get("/v1/runs", &other).await;
    assert_eq!(listed.body["runs"], json!([]), "{}", listed.text);
    assert!(!listed.text.contains("acme-only"));
    let batch = server
        .post("/v1/dead-letters/replay", &other, json!({"run_ids": [run]}))
        .await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(
        batch.body["refused"][0]["type"],
        "https://airlock.dev/problems/not-found"
    );
    // Viewers read; they do not start, cancel or replay.
    let viewer = server.token(Some("acme"), Role::Viewer);
    assert_eq!(
        server.get(&format!("/v1/runs/{run}"), &viewer).await.status,
        200
    );
    assert_problem(
        &server
            .post(
                &format!("/v1/workflows/{workflow}/runs"),
                &viewer,
                json!({}),
            )
            .await,
        403,
        "forbidden",
    );
    assert_problem(
        &server
            .post(&format!("/v1/runs/{run}/cancel"), &viewer, json!({}))
            .await,
        403,
        "forbidden",
    );
    // Operators read a tenant's runs by naming it, and change none of them.
    assert_problem(
        &server.get("/v1/runs", &server.operator()).await,
        422,
        "validation",
    );
    let named = server.get("/v1/runs?tenant=acme", &server.operator()).await;
    assert_eq!(named.status, 200, "{}", named.text);
    assert!(named.text.contains(&run), "{}", named.text);
    assert_problem(
        &server
            .post(
                &format!("/v1/runs/{run}/cancel"),
                &server.operator(),
                json!({}),
            )
            .await,
        403,
        "forbidden",
    );
}

async fn the_workflow_quota_is_enforced(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    put_limits(
        &server,
        "acme",
        json!({"max_workflows": 1, "runs_per_hour": 1}),
    )
    .await;
    tokio::time::sleep(airlock::pipeline::HOT_ROW_TTL).await;
    let steps = json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]);
    let workflow = create_workflow(&server, &admin, "one", steps.clone()).await;
    let second = server
        .post(
            "/v1/workflows",
            &admin,
            json!({"name": "two", "steps": steps}),
        )
        .await;
    assert_problem(&second, 429, "quota-exceeded");
    assert_eq!(second.body["quota"], "max_workflows", "{}", second.text);
    let duplicate = server
        .post(
            "/v1/workflows",
            &admin,
            json!({"name": "one", "steps": steps}),
        )
        .await;
    assert_problem(&duplicate, 429, "quota-exceeded");

    start_run(&server, &admin, &workflow, json!({})).await;
    let over = server
        .post(&format!("/v1/workflows/{workflow}/runs"), &admin, json!({}))
        .await;
    assert_problem(&over, 429, "quota-exceeded");
    assert_eq!(over.body["quota"], "runs_per_hour");
    assert!(
        over.headers.contains_key("retry-after"),
        "{:?}",
        over.headers
    );
    let listed = server.get("/v1/runs", &admin).await;
    assert_eq!(
        listed.body["runs"].as_array().map(Vec::len),
        Some(1),
        "a refused run writes nothing"
    );
}

async fn a_step_output_that_echoes_the_credential_never_shows_it(db: Db) {
    // The upstream echoes the Authorization header it got into its body and a header.
    let upstream = Server::start_tls(
        Router::new().route(
            "/{*path}",
            any(|request: Request| async move {
                let auth = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (
                    [("x-echo", auth.clone())],
                    axum::Json(json!({"you_sent": auth})),
                )
            }),
        ),
        &[API],
    )
    .await;
    let mut options = options_for_tls(&upstream, &[API]);
    options.engine.pool_size = 8;
    let Some(server) = TestServer::start_configured(db, options, fast_workers).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let connection = server
        .post(
            "/v1/connections",
            &admin,
            json!({"connector": "hostile", "name": "leaky", "credential": {"api_key": canary}}),
        )
        .await;
    assert_eq!(connection.status, 201, "{}", connection.text);
    let connection = connection.body["id"].as_str().expect("id").to_owned();
    let workflow = create_workflow(
        &server,
        &admin,
        "leak",
        json!([
            {"id": "leak", "connector": "hostile", "action": "echo_auth", "connection": connection,
             "input": {"url": format!("https://{API}/me")}},
            {"id": "pass_on", "connector": "hostile", "action": "echo",
             "input": {"n": 1, "got": {"$from": "/steps/leak/body"}}},
        ]),
    )
    .await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        upstream.hits(),
        1,
        "the step reached the upstream with the credential"
    );
    for path in [
        format!("/v1/runs/{run}"),
        "/v1/runs".to_owned(),
        "/v1/dead-letters".to_owned(),
    ] {
        let reply = server.get(&path, &admin).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(
            !reply.text.contains(&canary),
            "{path} shows the credential: {}",
            reply.text
        );
    }
    let raw = server.raw_db().await;
    for table in ["runs", "run_steps"] {
        let rows: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT COALESCE(output, '') || COALESCE(error, '') FROM {table}"
        ))
        .fetch_all(&raw)
        .await
        .expect("rows");
        assert!(
            rows.iter().all(|(text,)| !text.contains(&canary)),
            "{table} stores the credential"
        );
    }
}

async fn a_full_queue_is_refused_and_not_ready(db: Db) {
    let mut options = options();
    options.engine.pool_size = 8;
    let Some(server) = TestServer::start_configured(db, options, |config| {
        config.workers = 0; // nothing drains the queue
        config.max_queue_depth = 2;
        config.max_queued_runs_per_tenant = 1;
    })
    .await
    else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let other = tenant_with_hostile(&server, "globex").await;
    let steps = json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]);
    let mine = create_workflow(&server, &admin, "mine", steps.clone()).await;
    let theirs = create_workflow(&server, &other, "theirs", steps).await;
    start_run(&server, &admin, &mine, json!({})).await;
    // The tenant's own cap comes first: one waiting run each.
    let capped = server
        .post(&format!("/v1/workflows/{mine}/runs"), &admin, json!({}))
        .await;
    assert_problem(&capped, 429, "quota-exceeded");
    assert_eq!(capped.body["quota"], "max_queued_runs", "{}", capped.text);
    start_run(&server, &other, &theirs, json!({})).await;
    // The queue's depth is read at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let full = server
        .post(&format!("/v1/workflows/{theirs}/runs"), &other, json!({}))
        .await;
    assert_problem(&full, 503, "queue-full");
    assert!(
        full.headers.contains_key("retry-after"),
        "{:?}",
        full.headers
    );
    let ready = server
        .call(
            reqwest::Method::GET,
            "/readyz",
            None,
            crate::api_support::Body::None,
        )
        .await;
    assert_problem(&ready, 503, "queue-full");
    // Refusals were not charged.
    assert_eq!(runs_this_hour(&server, &other).await, 1);
}

/// One tenant has thousands of runs waiting; another's few runs start within moments, not
/// after the backlog (the bench measures the figure; this bound is loose on purpose).
async fn a_backlog_does_not_starve_another_tenant(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let big = tenant_with_hostile(&server, "big").await;
    let small = tenant_with_hostile(&server, "small").await;
    // The backlog's steps take 100 ms: the server's 8 workers need 25 s to drain it, longer
    // than the five small runs may take at their bound (5 x 5 s), so a loaded machine slows
    // the measurement without draining the backlog under it.
    let slow =
        json!([{"id": "s", "connector": "hostile", "action": "sleep", "input": {"ms": 100}}]);
    let quick = json!([{"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}}]);
    let big_workflow = create_workflow(&server, &big, "bulk", slow).await;
    let small_workflow = create_workflow(&server, &small, "few", quick).await;
    let store = server.state.store();
    const BACKLOG: usize = 2_000;
    for i in 0..BACKLOG {
        let run = airlock::store::NewRun {
            id: format!("run_big_{i:05}"),
            workflow_id: big_workflow.clone(),
            workflow_version: 1,
            input: "{}".into(),
            idempotency_key: None,
            request_hash: None,
            trigger_id: None,
            trace_id: None,
            trace_parent: None,
            runs_per_hour: None,
            max_queued: u64::MAX,
        };
        store.create_run("big", run).await.expect("backlog");
    }
    let mut waits = Vec::new();
    for _ in 0..5 {
        let run = start_run(&server, &small, &small_workflow, json!({})).await;
        let done = wait_for(&server, &small, &run, ended).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let waited = done["started_at_ms"].as_i64().expect("started")
            - done["created_at_ms"].as_i64().expect("created");
        waits.push(waited);
    }
    let left = server
        .get("/v1/runs?state=queued&limit=500", &big)
        .await
        .body["runs"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        left > 0,
        "the backlog drained before the test could measure behind it"
    );
    assert!(
        waits.iter().all(|w| *w < 5_000),
        "the small tenant waited behind the backlog: {waits:?} ms"
    );
}

/// A step that logs about the per-invocation cap: 1,000 lines of 200 bytes, ~250 KB of JSON.
fn flooding_step(id: &str) -> Value {
    json!({"id": id, "connector": "hostile", "action": "log_flood",
           "input": {"count": 1000, "message_bytes": 200, "stdout_lines": 0}})
}

/// The logs a run's journal holds (bytes of stored JSON, as stored), step by step.
async fn stored_logs(server: &TestServer, run: &str) -> Vec<String> {
    let raw = server.raw_db().await;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT logs FROM run_steps WHERE tenant_id = $1 AND run_id = $2 ORDER BY step_index",
    )
    .bind("acme")
    .bind(run)
    .fetch_all(&raw)
    .await
    .expect("run_steps");
    rows.into_iter().map(|(logs,)| logs).collect()
}

/// Every step's log was kept whole, to the per-step cap: a run at the caps stored ~9 MB of
/// logs. The run's steps now share one budget, and what earlier claims stored counts.
async fn a_runs_journal_keeps_its_step_logs_within_the_run_log_budget(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let budget = airlock::runs::RUN_LOG_BUDGET_BYTES;
    let past_budget = airlock::runs::MARKER_LOG_BYTES;
    let admin = tenant_with_hostile(&server, "acme").await;
    let steps: Vec<Value> = (0..8).map(|i| flooding_step(&format!("s{i}"))).collect();
    let workflow = create_workflow(&server, &admin, "chatty", json!(steps)).await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let stored = stored_logs(&server, &run).await;
    assert_eq!(stored.len(), 8);
    let sizes: Vec<u64> = stored.iter().map(|l| l.len() as u64).collect();
    let whole = sizes[0];
    assert!(
        whole * 8 > budget + 8 * past_budget,
        "the steps must log past the budget: {whole} bytes each"
    );
    assert!(
        sizes.iter().sum::<u64>() <= budget + 8 * past_budget,
        "{sizes:?}"
    );
    let marker = format!("[logs truncated: run log budget of {budget} bytes reached]");
    assert!(!stored[0].contains(&marker));
    assert!(stored[7].contains(&marker), "{}", stored[7]);
    // The API shows the cut log as a log: its lines, the marker last, the drops counted.
    let last = &done["steps"][7]["logs"];
    let lines = last["lines"].as_array().expect("lines");
    assert_eq!(lines.last().expect("marker")["message"], json!(marker));
    assert!(
        last["dropped_lines"].as_u64().expect("dropped") >= 999,
        "{last}"
    );

    // A run resumed by a second claim counts what the first one stored: three floods, a
    // step that dies of the tenant's wall clock, then a replay and three more floods.
    put_limits(&server, "acme", json!({"timeout_ms": 400})).await;
    let mut steps: Vec<Value> = (0..3).map(|i| flooding_step(&format!("a{i}"))).collect();
    steps.push(
        json!({"id": "slow", "connector": "hostile", "action": "sleep",
                      "input": {"ms": 2000}}),
    );
    steps.extend((0..3).map(|i| flooding_step(&format!("b{i}"))));
    let workflow = create_workflow(&server, &admin, "resumed", json!(steps)).await;
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["next_step"], 3, "{dead}");
    put_limits(&server, "acme", json!({"timeout_ms": 5000})).await;
    tokio::time::sleep(airlock::pipeline::HOT_ROW_TTL).await;
    let replayed = server
        .post(&format!("/v1/runs/{run}/replay"), &admin, json!({}))
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let stored = stored_logs(&server, &run).await;
    assert_eq!(stored.len(), 7);
    let sizes: Vec<u64> = stored.iter().map(|l| l.len() as u64).collect();
    assert!(
        sizes.iter().sum::<u64>() <= budget + 7 * past_budget,
        "{sizes:?}"
    );
    assert!(stored[6].contains(&marker), "{}", stored[6]);
}
