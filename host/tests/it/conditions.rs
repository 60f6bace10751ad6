//! Workflows that decide: a webhook trigger's filter acknowledges the deliveries it does not
//! match (202, `filtered: true`) and they write nothing and cost nothing; malformed filters
//! are refused where they are wrong. Both databases.

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
);

fn paid_filter() -> Value {
    json!({"all": [
        {"eq": [{"$from": "/trigger/json/type"}, "invoice.paid"]},
        {"ne": [{"$from": "/trigger/headers/x-test"}, "skip"]},
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
        ("evt_skipped", &paid_event[..], Some(("x-test", "skip"))),
        ("evt_created", &created_event[..], None),
    ] {
        let reply = send(id, body, extra).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        assert_eq!(reply.body["filtered"], json!(true), "{}", reply.text);
        assert_eq!(reply.body["run_id"], Value::Null, "{}", reply.text);
    }
    assert_eq!(hook_count(&raw).await, 0);

    // Matched: a run, which uses the tenant's one run of the hour.
    let reply = send("evt_paid", paid_event, None).await;
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
            json!({"kind": "cron", "expression": "* * * * *", "filter": true}),
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
