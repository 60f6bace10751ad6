//! Workflows that decide: a webhook trigger's filter acknowledges the deliveries it does not
//! match (202, `filtered: true`) and they write nothing and cost nothing; malformed filters
//! are refused where they are wrong. A step whose `when` does not hold is skipped and
//! journaled; a later reference into it takes its `default` or fails by name. Both
//! databases.

use serde_json::{Value, json};

use crate::api_support::{Db, on_both_databases};
use crate::runs_support::{
    away_from_hour_turn, create_workflow, ended, put_limits, start, tenant_with_hostile, wait_for,
};
use crate::triggers::{deliver, signed};
use airlock::triggers::webhook::Scheme;

on_both_databases!(
    a_filter_acknowledges_what_it_does_not_match_and_it_costs_nothing,
    malformed_filters_are_refused_where_they_are_wrong,
    a_step_whose_condition_fails_is_skipped_and_journaled,
    a_cron_filter_lets_only_the_ticks_it_matches_fire,
);

fn paid_filter() -> Value {
    json!({"all": [
        {"eq": [{"$from": "/trigger/json/type"}, "invoice.paid"]},
        {"ne": [{"$from": "/trigger/headers/x-event-type"}, "skip"]},
        // Headers off the list are not a filter's to read (a proxy's secret, say).
        {"not": {"exists": "/trigger/headers/x-origin-secret"}},
        // Nor are the raw bytes: filters read the parsed body.
        {"not": {"exists": "/trigger/body_base64"}},
    ]})
}

async fn hook_count(raw: &sqlx::AnyPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(raw)
        .await
        .expect("count")
}

async fn a_filter_acknowledges_what_it_does_not_match_and_it_costs_nothing(db: Db) {
    away_from_hour_turn().await;
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    put_limits(&server, "acme", json!({"runs_per_hour": 1})).await;
    let workflow = create_workflow(
        &server,
        &admin,
        "paid",
        json!([{"id": "echo", "connector": "hostile", "action": "echo",
            "input": {"n": {"$from": "/trigger/json/amount"}}}]),
    )
    .await;
    let created = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            &admin,
            json!({"kind": "webhook", "filter": paid_filter()}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["filter"], paid_filter());
    let hook = created.body["webhook"]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    let trigger = created.body["id"].as_str().expect("id").to_owned();
    let shown = server.get(&format!("/v1/triggers/{trigger}"), &admin).await;
    assert_eq!(shown.body["filter"], paid_filter(), "{}", shown.text);
    let raw = server.raw_db().await;
    let now = airlock::store::now_ms() / 1000;
    let send = |id: &'static str, body: &'static [u8], extra: Option<(&str, &str)>| {
        let mut headers = signed(Scheme::StandardWebhooks, &secret, id, now, body);
        if let Some((name, value)) = extra {
            headers.push((name.to_owned(), value.to_owned()));
        }
        let (server, hook) = (&server, hook.clone());
        async move { deliver(server, &hook, &headers, body).await }
    };
    let created_event = br#"{"type": "invoice.created", "amount": 1}"#;
    let paid_event = br#"{"type": "invoice.paid", "amount": 2}"#;

    // Not matched: acknowledged, and nothing is written.
    for (id, body, extra) in [
        ("evt_created", &created_event[..], None),
        (
            "evt_skipped",
            &paid_event[..],
            Some(("x-event-type", "skip")),
        ),
        ("evt_created", &created_event[..], None),
    ] {
        let reply = send(id, body, extra).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        assert_eq!(reply.body["filtered"], json!(true), "{}", reply.text);
        assert_eq!(reply.body["run_id"], Value::Null, "{}", reply.text);
    }
    assert_eq!(hook_count(&raw).await, 0);

    // Matched: a run, which uses the tenant's one run of the hour.
    let reply = send("evt_paid", paid_event, Some(("x-origin-secret", "s3cr3t"))).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.body["filtered"], json!(false));
    let run = reply.body["run_id"].as_str().expect("a run").to_owned();
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"]["n"], json!(2), "{done}");

    // With the hour used up, what the filter drops is still acknowledged, not refused: it
    // never counted.
    let reply = send("evt_created_2", created_event, None).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.body["filtered"], json!(true));
    let refused = send("evt_paid_2", paid_event, None).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(hook_count(&raw).await, 1);

    // A forged delivery is refused before any filter reads it.
    let forged = signed(
        Scheme::StandardWebhooks,
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "evt_forged",
        now,
        created_event,
    );
    let reply = deliver(&server, &hook, &forged, created_event).await;
    assert_eq!(reply.status, 401, "{}", reply.text);

    let metrics = crate::metrics::scrape(&server).await;
    assert_eq!(
        crate::metrics::value(
            &metrics,
            r#"airlock_webhook_deliveries_total{outcome="filtered"}"#
        ),
        4.0,
        "{metrics}"
    );
}

async fn malformed_filters_are_refused_where_they_are_wrong(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "w",
        json!([{"id": "echo", "connector": "hostile", "action": "echo", "input": {}}]),
    )
    .await;
    let path = format!("/v1/workflows/{workflow}/triggers");
    for (body, field) in [
        (
            json!({"kind": "webhook", "filter": {"eq": [1]}}),
            "filter/eq",
        ),
        (
            json!({"kind": "webhook", "filter": {"all": [{"xor": []}]}}),
            "filter/all/0",
        ),
        (
            json!({"kind": "webhook", "filter": {"matches": [{"$from": "/trigger/json/a"}, "(a)\\1"]}}),
            "filter/matches/1",
        ),
        (
            json!({"kind": "webhook", "filter": {"exists": "/steps/echo/x"}}),
            "filter",
        ),
        (
            json!({"kind": "cron", "expression": "* * * * *", "filter": {"exists": "/steps/x/y"}}),
            "filter",
        ),
    ] {
        let reply = server.post(&path, &admin, body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        assert_eq!(reply.body["field"], json!(field), "{body}: {}", reply.text);
    }
    let listed = server.get("/v1/triggers", &admin).await;
    assert_eq!(listed.body, json!([]), "{}", listed.text);
}

async fn a_step_whose_condition_fails_is_skipped_and_journaled(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let echo = |id: &str, input: Value| json!({"id": id, "connector": "hostile", "action": "echo", "input": input});
    let big = json!({"gt": [{"$from": "/trigger/n"}, 10]});
    let mut when_big = echo("big", json!({"n": 7}));
    when_big["when"] = big.clone();
    let workflow = create_workflow(
        &server,
        &admin,
        "decides",
        json!([
            echo("check", json!({"n": {"$from": "/trigger/n"}})),
            when_big,
            echo(
                "after",
                json!({
                    "big": {"$from": "/steps/big/n", "default": 0},
                    "n": {"$from": "/steps/check/n"},
                })
            ),
        ]),
    )
    .await;
    for (n, ran, big_seen) in [(5, false, 0), (50, true, 7)] {
        let run = crate::runs_support::start_run(&server, &admin, &workflow, json!({"n": n})).await;
        let done = wait_for(&server, &admin, &run, ended).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["output"], json!({"big": big_seen, "n": n}), "{done}");
        let steps = done["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 3, "{done}");
        let big = &steps[1];
        assert_eq!(big["id"], "big");
        if ran {
            assert_eq!(big["status"], "succeeded", "{done}");
        } else {
            assert_eq!(big["status"], "skipped", "{done}");
            assert_eq!(big["output"], Value::Null, "{done}");
        }
    }

    // Without a default, a reference into a skipped step fails the step that makes it.
    let mut when_never = echo("never", json!({"n": 1}));
    when_never["when"] = json!(false);
    let strict = create_workflow(
        &server,
        &admin,
        "strict",
        json!([
            when_never,
            echo("reads", json!({"n": {"$from": "/steps/never/n"}}))
        ]),
    )
    .await;
    let run = crate::runs_support::start_run(&server, &admin, &strict, json!({})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"]["kind"], "skipped_step", "{dead}");
    assert_eq!(dead["error"]["step"], "reads", "{dead}");

    // A skipped last step ends the run, its output null.
    let mut last = echo("last", json!({"n": 2}));
    last["when"] = json!({"exists": "/trigger/go"});
    let tail = create_workflow(
        &server,
        &admin,
        "tail",
        json!([echo("first", json!({"n": 1})), last]),
    )
    .await;
    let run = crate::runs_support::start_run(&server, &admin, &tail, json!({})).await;
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], Value::Null, "{done}");
    assert_eq!(done["steps"][1]["status"], "skipped", "{done}");

    // A condition may read only the trigger and earlier steps, and must be a predicate.
    for (when, field) in [
        (json!({"exists": "/steps/later/x"}), "steps[0].when"),
        (json!({"eq": [1]}), "steps[0].when"),
    ] {
        let mut first = echo("first", json!({}));
        first["when"] = when.clone();
        let reply = server
            .post(
                "/v1/workflows",
                &admin,
                json!({"name": "bad", "steps": [first, echo("later", json!({}))]}),
            )
            .await;
        assert_eq!(reply.status, 422, "{when}: {}", reply.text);
        assert!(
            reply.body["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{when}: {}",
            reply.text
        );
    }
}

/// A cron trigger's filter reads the tick (`/trigger/scheduled_at`): ticks it does not
/// match make no run and are counted `filtered`; the schedule goes on past them.
async fn a_cron_filter_lets_only_the_ticks_it_matches_fire(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "ticks",
        json!([{"id": "echo", "connector": "hostile", "action": "echo", "input": {"n": 1}}]),
    )
    .await;
    let from = airlock::store::now_ms() + 2_500;
    let created = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            &admin,
            json!({"kind": "cron", "expression": "* * * * * *",
                   "filter": {"ge": [{"$from": "/trigger/scheduled_at"}, from]}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let trigger = created.body["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let runs = loop {
        let listed = server
            .get(&format!("/v1/runs?workflow={workflow}"), &admin)
            .await;
        let runs = listed.body["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() >= 2 {
            break runs;
        }
        assert!(std::time::Instant::now() < deadline, "{}", listed.text);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let deleted = server
        .delete(&format!("/v1/triggers/{trigger}"), &admin)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    for run in &runs {
        let at = run["input"]["scheduled_at"].as_i64().expect("scheduled_at");
        assert!(at >= from, "a tick before the filter's time fired: {run}");
    }
    let metrics = crate::metrics::scrape(&server).await;
    assert!(
        crate::metrics::value(&metrics, r#"airlock_cron_ticks_total{outcome="filtered"}"#) >= 1.0,
        "{metrics}"
    );
}
