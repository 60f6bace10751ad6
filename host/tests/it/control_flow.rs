//! Workflows with control flow, against real guests and a real local upstream: a `switch`
//! runs one branch, journals its choice, and a replay can start inside it; a `for_each`
//! runs each item with its own idempotency key, resumes only the items not journaled after
//! a failed attempt, and refuses more items than the tenant allows; a replay of a dead
//! `for_each` keeps the iterations it journaled, or runs again the ones it names; a `sleep` gives its
//! worker and its tenant's slot back until it is due; a run that goes dead queues its
//! workflow's `on_failure` steps once, and a handler's own death queues nothing. Both
//! databases.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::{Value, json};

use crate::api_support::{Db, TestServer, on_both_databases};
use crate::retries::server_with_http;
use crate::runs_support::{
    create_workflow, ended, put_limits, start, start_run, tenant_with_hostile, wait_for,
};
use crate::support::Server;

on_both_databases!(
    a_switch_takes_one_branch_and_a_replay_starts_inside_it,
    a_for_each_runs_each_item_once_and_resumes_only_what_is_not_journaled,
    a_replay_of_a_for_each_keeps_its_journaled_iterations_or_reruns_what_it_names,
    a_for_each_reads_its_item_and_keys_each_iteration,
    a_sleep_holds_no_worker_and_wakes_when_due,
    malformed_control_flow_is_refused_where_it_is_wrong,
    a_dead_run_queues_its_failure_handler_once_per_death,
    a_suspended_tenants_for_each_goes_back_to_the_queue_between_items,
);

const API: &str = "api.example.test";

/// Every request the upstream saw: (path, idempotency key).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An upstream that answers 503 to the first request for a path in `fail_once` (matched
/// against the path, or the key's end for items), 200 with `{"ok": true}` otherwise.
async fn upstream(fail_once: &'static [&'static str]) -> (Server, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let server = Server::start_tls(
        Router::new().route(
            "/{*path}",
            any(move |request: Request| {
                let record = record.clone();
                async move {
                    let path = request.uri().path().to_owned();
                    let key = request
                        .headers()
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut seen = record.lock().expect("lock");
                    let first = !seen.iter().any(|(p, k)| *p == path && *k == key);
                    seen.push((path.clone(), key.clone()));
                    let fails = fail_once
                        .iter()
                        .any(|f| path == *f || key.ends_with(&format!(":{f}")));
                    if first && fails {
                        (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
                    } else {
                        axum::Json(json!({"ok": true})).into_response()
                    }
                }
            }),
        ),
        &[API],
    )
    .await;
    (server, seen)
}

/// A POST (so the gate sends the step's `Idempotency-Key`).
fn request(id: &str, path: &str) -> Value {
    json!({"id": id, "connector": "http", "action": "request",
        "input": {"method": "POST", "url": format!("https://{API}{path}"), "json": {},
                  "error_for_status": true}})
}

fn count(seen: &Seen, path: &str) -> usize {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|(p, _)| p == path)
        .count()
}

fn ids(run: &Value) -> Vec<String> {
    run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn a_switch_takes_one_branch_and_a_replay_starts_inside_it(db: Db) {
    let (upstream, seen) = upstream(&["/flaky"]).await;
    let Some((server, admin)) = server_with_http(db, &upstream).await else {
        return;
    };
    let workflow = create_workflow(
        &server,
        &admin,
        "routes",
        json!([
            request("check", "/check"),
            {"id": "route", "switch": {
                "cases": [
                    {"id": "big", "when": {"gt": [{"$from": "/trigger/n"}, 10]},
                     "steps": [request("call", "/flaky")]},
                    {"id": "small", "when": {"le": [{"$from": "/trigger/n"}, 10]},
                     "steps": [request("note", "/small")]},
                ],
                "default": [request("never", "/never")],
            }},
            request("after", "/after"),
        ]),
    )
    .await;

    // The small branch: its step runs, the others have no journal row.
    let run = start_run(&server, &admin, &workflow, json!({"n": 5})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(ids(&done), ["check", "route", "route.small.note", "after"]);
    assert_eq!(done["steps"][1]["output"], json!({"branch": "small"}));

    // The big branch's step fails once (503, no retry): the run is dead inside the branch.
    let run = start_run(&server, &admin, &workflow, json!({"n": 50})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["step"], "route.big.call", "{dead}");
    assert_eq!(dead["steps"][1]["output"], json!({"branch": "big"}));
    // Not from a branch the run did not take: its journaled decision ruled that out.
    let refused = server
        .post(
            &format!("/v1/runs/{run}/replay"),
            &admin,
            json!({"from_step": "route.small.note"}),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.body["field"], "from_step", "{}", refused.text);
    // Replayed from inside the branch: the steps before it keep their journal and are not
    // run again; the branch is not decided again.
    let replayed = server
        .post(
            &format!("/v1/runs/{run}/replay"),
            &admin,
            json!({"from_step": "route.big.call"}),
        )
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(ids(&done), ["check", "route", "route.big.call", "after"]);
    assert_eq!(count(&seen, "/check"), 2, "one per run, none on replay");
    assert_eq!(count(&seen, "/flaky"), 2);
    assert_eq!(count(&seen, "/small"), 1);
    assert_eq!(count(&seen, "/never"), 0);
    assert_eq!(count(&seen, "/after"), 2);
}

async fn a_for_each_runs_each_item_once_and_resumes_only_what_is_not_journaled(db: Db) {
    // Items 3 and 9 each fail their first request: each time the for_each's attempt fails,
    // the items already journaled stay, and the next attempt runs only the rest. The step
    // allows 2 attempts; the items between the two failures start the count again, so one
    // flaky item does not spend another's attempts.
    let (upstream, seen) = upstream(&["3", "9"]).await;
    let Some((server, admin)) = server_with_http(db, &upstream).await else {
        return;
    };
    let mut call = request("call", "/item");
    call["retry"] = json!({"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 10});
    let workflow = create_workflow(
        &server,
        &admin,
        "fan-out",
        json!([
            {"id": "each", "for_each": {"items": {"$from": "/trigger/items"}, "concurrency": 4,
                                         "steps": [call]}},
        ]),
    )
    .await;
    let items: Vec<usize> = (0..12).collect();
    let run = start_run(&server, &admin, &workflow, json!({"items": items})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"].as_array().map(Vec::len), Some(12), "{done}");
    assert_eq!(done["steps"][0]["status"], "succeeded", "{done}");
    let iterations = done["iterations"].as_array().expect("iterations");
    assert_eq!(iterations.len(), 12, "{done}");
    assert!(iterations.iter().all(|i| i["id"] == "each.call"));
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for (_, key) in seen.lock().expect("lock").iter() {
        *by_key.entry(key.clone()).or_default() += 1;
    }
    for item in 0..12 {
        let key = format!("{run}:each.call:{item}");
        let expected = if item == 3 || item == 9 { 2 } else { 1 };
        assert_eq!(by_key.get(&key), Some(&expected), "{key}: {by_key:?}");
    }
    assert_eq!(by_key.len(), 12, "{by_key:?}");
    // Every iteration, with its logs, page by page.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = server
            .get(
                &format!("/v1/runs/{run}/iterations?limit=5{cursor}"),
                &admin,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        let rows = page.body["iterations"].as_array().expect("iterations");
        assert!(rows.len() <= 5);
        assert!(
            rows.iter().all(|r| r["logs"]["lines"].is_array()),
            "{}",
            page.text
        );
        paged.extend(rows.iter().map(|r| r["item"].as_i64().expect("item")));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, (0..12).collect::<Vec<i64>>());
    assert!(
        iterations.iter().all(|i| i.get("logs").is_none()),
        "not in the run's document"
    );
    for bad in [
        "cursor=1.2",
        "cursor=a.b.c",
        "cursor=-1.0.0",
        "limit=0",
        "limit=1001",
    ] {
        let reply = server
            .get(&format!("/v1/runs/{run}/iterations?{bad}"), &admin)
            .await;
        assert_eq!(reply.status, 422, "{bad}: {}", reply.text);
    }
    let missing = server.get("/v1/runs/run_nope/iterations", &admin).await;
    assert_eq!(missing.status, 404, "{}", missing.text);

    // More items than the tenant allows: dead before any item runs.
    put_limits(&server, "acme", json!({"max_iterations": 5})).await;
    let before = seen.lock().expect("lock").len();
    let run = start_run(&server, &admin, &workflow, json!({"items": items})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["kind"], "too_many_items", "{dead}");
    assert_eq!(seen.lock().expect("lock").len(), before);
    // Items that are not an array: dead, named.
    let run = start_run(&server, &admin, &workflow, json!({"items": 3})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["error"]["kind"], "invalid_input", "{dead}");
    assert_eq!(seen.lock().expect("lock").len(), before);
}

/// Requests upstream per idempotency key.
fn by_key(seen: &Seen) -> BTreeMap<String, usize> {
    let mut by_key = BTreeMap::new();
    for (_, key) in seen.lock().expect("lock").iter() {
        *by_key.entry(key.clone()).or_default() += 1;
    }
    by_key
}

async fn replay(server: &TestServer, admin: &str, run: &str, body: Value) -> Value {
    let replayed = server
        .post(&format!("/v1/runs/{run}/replay"), admin, body)
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    wait_for(server, admin, run, ended).await
}

async fn a_replay_of_a_for_each_keeps_its_journaled_iterations_or_reruns_what_it_names(db: Db) {
    // Item 3's first request of each body step fails (503, no retry): the run dies in it.
    let (upstream, seen) = upstream(&["3"]).await;
    let Some((server, admin)) = server_with_http(db, &upstream).await else {
        return;
    };
    let each = |note: &str| {
        json!({"id": "each", "for_each": {"items": {"$from": "/trigger/items"},
            "concurrency": 1, "steps": [request("call", "/call"), request(note, "/note")]}})
    };
    let workflow = create_workflow(
        &server,
        &admin,
        "fan-out",
        json!([request("first", "/first"), each("note")]),
    )
    .await;
    let count = |run: &str, step: &str, item: usize| {
        by_key(&seen)
            .get(&format!("{run}:each.{step}:{item}"))
            .copied()
            .unwrap_or(0)
    };

    let run = start_run(
        &server,
        &admin,
        &workflow,
        json!({"items": [0, 1, 2, 3, 4, 5]}),
    )
    .await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!((count(&run, "call", 3), count(&run, "note", 2)), (1, 1));
    // Replayed where it stopped: items 0-2 are kept; item 3 runs again, gets through `call`
    // and dies in `note`.
    let dead = replay(&server, &admin, &run, json!({})).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["step"], "each.note", "{dead}");
    assert_eq!(dead["error"]["item"], 3, "{dead}");
    assert_eq!((count(&run, "call", 3), count(&run, "note", 3)), (2, 1));
    // From `each.note`, item 3 only: its `call` is kept; the items not done run.
    let done = replay(
        &server,
        &admin,
        &run,
        json!({"from_step": "each.note", "from_item": 3}),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"].as_array().map(Vec::len), Some(6), "{done}");
    for item in 0..6 {
        let twice = usize::from(item == 3) + 1;
        assert_eq!(
            count(&run, "call", item),
            twice,
            "call {item}: {:?}",
            by_key(&seen)
        );
        assert_eq!(
            count(&run, "note", item),
            twice,
            "note {item}: {:?}",
            by_key(&seen)
        );
    }
    assert_eq!(
        by_key(&seen).get(&format!("{run}:first")),
        Some(&1),
        "before the for_each"
    );

    // Another run dies in item 3; replayed from the `for_each` itself, every item runs again.
    let run = start_run(&server, &admin, &workflow, json!({"items": [0, 1, 2, 3]})).await;
    assert_eq!(
        wait_for(&server, &admin, &run, ended).await["state"],
        "dead"
    );
    let dead = replay(&server, &admin, &run, json!({"from_step": "each"})).await;
    assert_eq!(dead["state"], "dead", "item 3's `note` fails once: {dead}");
    assert_eq!((count(&run, "call", 0), count(&run, "note", 0)), (2, 2));
    assert_eq!((count(&run, "call", 3), count(&run, "note", 3)), (2, 1));

    // An item only names an item of a for_each.
    let refused = server
        .post(
            &format!("/v1/runs/{run}/replay"),
            &admin,
            json!({"from_step": "first", "from_item": 1}),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.body["field"], "from_item", "{}", refused.text);
    // A new version whose body is not the one the kept iterations ran: refused unless the
    // replay runs every item again.
    let changed = server
        .put(
            &format!("/v1/workflows/{workflow}"),
            &admin,
            json!({"steps": [request("first", "/first"), each("notify")]}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let refused = server
        .post(
            &format!("/v1/runs/{run}/replay"),
            &admin,
            json!({"workflow_version": "current"}),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(
        refused.body["field"], "workflow_version",
        "{}",
        refused.text
    );
    let again = replay(
        &server,
        &admin,
        &run,
        json!({"from_step": "each", "workflow_version": "current"}),
    )
    .await;
    assert_eq!(again["workflow_version"], 2, "{again}");
    assert_eq!((count(&run, "call", 0), count(&run, "notify", 0)), (3, 1));
}

async fn a_for_each_reads_its_item_and_keys_each_iteration(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "keys",
        json!([
            {"id": "each", "for_each": {"items": {"$from": "/trigger/users"}, "concurrency": 3,
              "steps": [
                {"id": "key", "connector": "hostile", "action": "step_key", "input": {}},
                {"id": "echo", "connector": "hostile", "action": "echo",
                 "when": {"ne": [{"$from": "/item/skip"}, true]},
                 "input": {"n": 1, "name": {"$from": "/item/name"},
                           "key": {"$from": "/steps/each.key/key"}}},
              ]}},
            {"id": "after", "connector": "hostile", "action": "echo",
             "input": {"n": {"$from": "/steps/each/2/n"}, "all": {"$from": "/steps/each"}}},
        ]),
    )
    .await;
    let users = json!([{"name": "ada"}, {"name": "bob", "skip": true}, {"name": "cy"}]);
    let run = start_run(&server, &admin, &workflow, json!({"users": users})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["output"]["all"],
        json!([
            {"n": 1, "name": "ada", "key": format!("{run}:each.key:0")},
            null,
            {"n": 1, "name": "cy", "key": format!("{run}:each.key:2")},
        ]),
        "{done}"
    );
    assert_eq!(done["output"]["n"], 1);
    let skipped: Vec<&Value> = done["iterations"]
        .as_array()
        .expect("iterations")
        .iter()
        .filter(|i| i["status"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{done}");
    assert_eq!(skipped[0]["item"], 1);
    assert_eq!(skipped[0]["id"], "each.echo");

    // The journal of a for_each is bounded whatever its item count: once its items'
    // outputs pass 8 MiB together it is dead, and the items after are never run.
    let big = create_workflow(
        &server,
        &admin,
        "big",
        json!([{"id": "each", "for_each": {"items": {"$from": "/trigger/items"}, "steps": [
            {"id": "big", "connector": "hostile", "action": "big_output",
             "input": {"bytes": 1_000_000}}]}}]),
    )
    .await;
    let items: Vec<usize> = (0..12).collect();
    let run = start_run(&server, &admin, &big, json!({"items": items})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{}", dead["error"]);
    assert_eq!(
        dead["error"]["kind"], "output_too_large",
        "{}",
        dead["error"]
    );
    assert_eq!(dead["error"]["item"], 8, "{}", dead["error"]);
    assert_eq!(dead["iterations"].as_array().map(Vec::len), Some(8));

    // `max_iterations` bounds a run's items in all: a second for_each may not buy more.
    put_limits(&server, "acme", json!({"max_iterations": 5})).await;
    let each = |id: &str| {
        json!({"id": id, "for_each": {"items": {"$from": "/trigger/items"},
        "steps": [{"id": "key", "connector": "hostile", "action": "step_key", "input": {}}]}})
    };
    let twice = create_workflow(&server, &admin, "twice", json!([each("one"), each("two")])).await;
    let run = start_run(&server, &admin, &twice, json!({"items": [1, 2, 3]})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["kind"], "too_many_items", "{dead}");
    assert_eq!(dead["error"]["step"], "two", "{dead}");
    assert_eq!(dead["iterations"].as_array().map(Vec::len), Some(3));
}

async fn a_sleep_holds_no_worker_and_wakes_when_due(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    put_limits(&server, "acme", json!({"max_concurrent_runs": 1})).await;
    let echo = |id: &str, n: Value| json!({"id": id, "connector": "hostile", "action": "echo", "input": {"n": n}});
    let sleeper = create_workflow(
        &server,
        &admin,
        "sleeper",
        json!([
            echo("first", json!(1)),
            {"id": "wait", "sleep": {"ms": 3000}},
            echo("last", json!({"$from": "/steps/wait/until_ms"})),
        ]),
    )
    .await;
    let quick = create_workflow(&server, &admin, "quick", json!([echo("only", json!(2))])).await;
    let run = start_run(&server, &admin, &sleeper, json!({})).await;
    let sleeping = wait_for(&server, &admin, &run, |r| {
        r["steps"].as_array().is_some_and(|s| s.len() == 2)
    })
    .await;
    assert_eq!(
        sleeping["state"], "queued",
        "a sleeping run holds no lease: {sleeping}"
    );
    let until = sleeping["steps"][1]["output"]["until_ms"]
        .as_i64()
        .expect("until_ms");
    // The tenant's one slot is free while it sleeps.
    let other = start_run(&server, &admin, &quick, json!({})).await;
    let other = wait_for(&server, &admin, &other, ended).await;
    assert_eq!(other["state"], "succeeded", "{other}");
    let still = server.get(&format!("/v1/runs/{run}"), &admin).await;
    assert_eq!(still.body["state"], "queued", "{}", still.text);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"]["n"], json!(until));
    assert!(
        done["steps"][2]["finished_at_ms"]
            .as_i64()
            .expect("finished")
            >= until,
        "woke before it was due: {done}"
    );

    // `until` from the trigger: a past instant does not wait; a bad one is a named error.
    let at = create_workflow(
        &server,
        &admin,
        "at",
        json!([{"id": "wait", "sleep": {"until": {"$from": "/trigger/at"}}}, echo("last", json!(3))]),
    )
    .await;
    let run = start_run(&server, &admin, &at, json!({"at": "2020-01-01T00:00:00Z"})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["steps"][0]["output"]["until_ms"],
        json!(1_577_836_800_000_i64)
    );
    for bad in [json!("tomorrow"), json!("2999-01-01T00:00:00Z")] {
        let run = start_run(&server, &admin, &at, json!({"at": bad})).await;
        let dead = wait_for(&server, &admin, &run, ended).await;
        assert_eq!(dead["state"], "dead", "{dead}");
        assert_eq!(dead["error"]["kind"], "invalid_input", "{dead}");
        assert_eq!(dead["error"]["step"], "wait", "{dead}");
    }
}

async fn malformed_control_flow_is_refused_where_it_is_wrong(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let echo = json!({"id": "e", "connector": "hostile", "action": "echo", "input": {"n": 1}});
    for (steps, field) in [
        (
            json!([{"id": "r", "switch": {"cases": [{"id": "c", "when": {"eq": [1]}}]}}]),
            "steps[0].switch.cases[0].when/eq",
        ),
        (
            json!([{"id": "r", "switch": {"cases": [{"id": "c", "when": true,
                "steps": [{"id": "x", "connector": "hostile", "action": "nope"}]}]}}]),
            "steps[0].switch.cases[0].steps[0].action",
        ),
        (
            json!([{"id": "each", "for_each": {"items": [1], "steps": [
                {"id": "w", "sleep": {"ms": 1}}]}}]),
            "steps[0].for_each.steps[0].sleep",
        ),
        (
            json!([{"id": "each", "for_each": {"items": [1], "concurrency": 65, "steps": [echo]}}]),
            "steps[0].for_each.concurrency",
        ),
        (
            json!([{"id": "w", "sleep": {"ms": 1, "until": "2030-01-01T00:00:00Z"}}]),
            "steps[0].sleep",
        ),
    ] {
        let reply = server
            .post(
                "/v1/workflows",
                &admin,
                json!({"name": "bad", "steps": steps}),
            )
            .await;
        assert_eq!(reply.status, 422, "{steps}: {}", reply.text);
        assert_eq!(reply.body["field"], json!(field), "{steps}: {}", reply.text);
    }
    let reply = server
        .post(
            "/v1/workflows",
            &admin,
            json!({"name": "bad", "steps": [{"id": "two", "sleep": {"ms": 1}, "switch": {"cases": []}}]}),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("one kind"), "{}", reply.text);
    let listed = server.get("/v1/workflows", &admin).await;
    assert_eq!(listed.body, json!([]), "{}", listed.text);
}

/// Waits until `n` failure-handler runs of `run` (a run of `workflow`) exist and have all
/// ended, and returns them; there are never more than `n`.
async fn ended_handlers(
    server: &TestServer,
    admin: &str,
    workflow: &str,
    run: &str,
    n: usize,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listed = server
            .get(&format!("/v1/runs?workflow={workflow}"), admin)
            .await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let found: Vec<Value> = listed.body["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["handles"] == json!(run))
            .cloned()
            .collect();
        assert!(found.len() <= n, "{found:?}");
        if found.len() == n && found.iter().all(ended) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} handlers of {run} did not end: {found:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn a_dead_run_queues_its_failure_handler_once_per_death(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let echo = |id: &str, input: Value| json!({"id": id, "connector": "hostile", "action": "echo", "input": input});
    let create = |name: &str, on_failure: Value| {
        let body = json!({"name": name, "steps": [
            echo("ok", json!({"n": 1})),
            // `echo` wants an integer `n`: dead at once, `invalid_input`.
            echo("boom", json!({"n": "not a number"})),
        ], "on_failure": on_failure});
        let server = &server;
        let admin = admin.clone();
        async move {
            let reply = server.post("/v1/workflows", &admin, body).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
            reply.body["id"].as_str().expect("id").to_owned()
        }
    };
    let runs_of = |workflow: String| {
        let server = &server;
        let admin = admin.clone();
        async move {
            let listed = server
                .get(&format!("/v1/runs?workflow={workflow}"), &admin)
                .await;
            assert_eq!(listed.status, 200, "{}", listed.text);
            listed.body["runs"].as_array().expect("runs").clone()
        }
    };

    let workflow = create(
        "guarded",
        json!([echo(
            "tell",
            json!({"n": 2, "kind": {"$from": "/trigger/error/kind"},
            "step": {"$from": "/trigger/failed_step"}, "run": {"$from": "/trigger/run_id"},
            "input": {"$from": "/trigger/trigger"}})
        )]),
    )
    .await;
    let shown = server
        .get(&format!("/v1/workflows/{workflow}"), &admin)
        .await;
    assert_eq!(shown.body["on_failure"][0]["id"], "tell", "{}", shown.text);
    let run = start_run(&server, &admin, &workflow, json!({"order": 7})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["handles"], Value::Null);
    let handler = ended_handlers(&server, &admin, &workflow, &run, 1)
        .await
        .remove(0);
    assert_eq!(handler["state"], "succeeded", "{handler}");
    assert_eq!(
        handler["output"],
        json!({"n": 2, "kind": "invalid_input", "step": "boom", "run": run, "input": {"order": 7}}),
        "{handler}"
    );
    assert_eq!(
        handler["trace_id"], dead["trace_id"],
        "the handler joins the run's trace"
    );

    // A replay that dies again is a second death: a second handler, with its own key.
    let replayed = server
        .post(&format!("/v1/runs/{run}/replay"), &admin, json!({}))
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    let again = wait_for(&server, &admin, &run, |r| r["state"] == "dead").await;
    assert_eq!(again["state"], "dead", "{again}");
    let found = ended_handlers(&server, &admin, &workflow, &run, 2).await;
    assert_ne!(
        found[0]["idempotency_key"], found[1]["idempotency_key"],
        "{found:?}"
    );

    // A handler that dies is recorded dead, and queues no handler of its own.
    let fragile = create("fragile", json!([echo("tell", json!({"n": "nope"}))])).await;
    let run = start_run(&server, &admin, &fragile, json!({})).await;
    wait_for(&server, &admin, &run, ended).await;
    let handler = ended_handlers(&server, &admin, &fragile, &run, 1)
        .await
        .remove(0);
    assert_eq!(handler["state"], "dead", "{handler}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = runs_of(fragile.clone()).await;
    assert_eq!(all.len(), 2, "no handler of a handler: {all:?}");

    // Handler steps read their own trigger, not the workflow's steps.
    let reply = server
        .post(
            "/v1/workflows",
            &admin,
            json!({"name": "bad", "steps": [echo("ok", json!({"n": 1}))],
                   "on_failure": [echo("tell", json!({"n": {"$from": "/steps/ok/n"}}))]}),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(
        reply.body["field"], "on_failure[0].input/n",
        "{}",
        reply.text
    );
}

async fn a_suspended_tenants_for_each_goes_back_to_the_queue_between_items(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let operator = server.operator();
    let workflow = create_workflow(
        &server,
        &admin,
        "naps",
        json!([{"id": "each", "for_each": {"items": {"$from": "/trigger/items"}, "steps": [
            {"id": "nap", "connector": "hostile", "action": "sleep", "input": {"ms": 150}}]}}]),
    )
    .await;
    let items: Vec<usize> = (0..60).collect();
    let run = start_run(&server, &admin, &workflow, json!({"items": items})).await;
    wait_for(&server, &admin, &run, |r| {
        r["iterations"].as_array().is_some_and(|i| i.len() >= 3)
    })
    .await;
    let suspended = server
        .post("/v1/tenants/acme/suspend", &operator, Value::Null)
        .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    // The tenant's tokens are refused now: the database says what the worker did.
    let raw = server.raw_db().await;
    let state = |raw: sqlx::AnyPool, run: String| async move {
        let state: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
            .bind(&run)
            .fetch_one(&raw)
            .await
            .expect("state");
        let items: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_items WHERE run_id = $1")
            .bind(&run)
            .fetch_one(&raw)
            .await
            .expect("items");
        (state, items)
    };
    // 60 items of 150 ms would take 9 s: the run is back in the queue long before.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let journaled = loop {
        let (now, items) = state(raw.clone(), run.clone()).await;
        if now == "queued" {
            break items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the suspended tenant's for_each went on: {now}, {items} items"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(journaled < 60, "{journaled}");
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        state(raw.clone(), run.clone()).await,
        ("queued".to_owned(), journaled),
        "nothing ran while suspended"
    );
    let resumed = server
        .post("/v1/tenants/acme/resume", &operator, Value::Null)
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{}", done["error"]);
    assert_eq!(done["output"].as_array().map(Vec::len), Some(60));
}
