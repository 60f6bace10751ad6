//! Webhook and cron triggers through the API with the server's own workers and scheduler:
//! signed deliveries start runs once per delivery id, bad ones leave nothing behind, secrets
//! rotate with an overlap, cron ticks fire once each with their policies, tenants are kept
//! apart. Both databases.

use std::time::Duration;

use airlock::api::Role;
use airlock::triggers::webhook::{Scheme, sign};
use serde_json::{Value, json};

use crate::api_support::{Db, Reply, TestServer, assert_problem, on_both_databases};
use crate::runs_support::{
    away_from_hour_turn, create_workflow, ended, put_limits, runs_this_hour, start,
    tenant_with_hostile, wait_for,
};

on_both_databases!(
    a_signed_delivery_starts_one_run_however_often_it_is_redelivered,
    three_concurrent_first_deliveries_of_one_id_make_one_run,
    a_new_workflow_version_or_its_deletion_reaches_the_next_delivery,
    bad_deliveries_are_refused_and_leave_nothing_behind,
    github_and_stripe_deliveries_verify,
    a_rotated_secret_keeps_the_old_one_for_the_overlap,
    a_paused_trigger_refuses_and_fires_nothing,
    deliveries_count_against_the_hourly_runs,
    a_cron_trigger_fires_each_tick_once_and_stops_when_deleted,
    missed_ticks_follow_the_trigger_policy,
    overlap_skip_starts_no_run_while_one_is_going,
    a_used_up_hour_refuses_a_minute_of_cron_ticks_in_one_write,
    triggers_are_kept_apart_by_tenant_and_role,
    webhook_secrets_are_shown_once_and_stored_sealed,
);

/// Header names and values, as a sender sets them.
type Headers = Vec<(String, String)>;

fn now_s() -> i64 {
    airlock::store::now_ms() / 1000
}

/// A workflow whose one step echoes `/trigger/json/count` (webhooks) or the scheduled time
/// (cron).
async fn echo_workflow(server: &TestServer, admin: &str, from: &str) -> String {
    create_workflow(
        server,
        admin,
        "echo",
        json!([{"id": "echo", "connector": "hostile", "action": "echo",
                "input": {"n": {"$from": from}}}]),
    )
    .await
}

async fn create_trigger(server: &TestServer, admin: &str, workflow: &str, body: Value) -> Value {
    let reply = server
        .post(&format!("/v1/workflows/{workflow}/triggers"), admin, body)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body
}

/// A webhook trigger of the standard scheme; returns (hook path, secret).
pub(crate) async fn webhook(server: &TestServer, admin: &str, workflow: &str) -> (String, String) {
    let trigger = create_trigger(server, admin, workflow, json!({"kind": "webhook"})).await;
    let secret = trigger["secret"].as_str().expect("secret shown").to_owned();
    assert!(secret.starts_with("whsec_"), "{trigger}");
    let url = trigger["webhook"]["url"].as_str().expect("url").to_owned();
    (url, secret)
}

pub(crate) async fn deliver(
    server: &TestServer,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.expect("delivery");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    Reply {
        status,
        content_type,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

pub(crate) fn signed(scheme: Scheme, secret: &str, id: &str, at: i64, body: &[u8]) -> Headers {
    sign(scheme, secret, id, at, body)
        .expect("sign")
        .into_iter()
        .map(|(name, value)| (name.as_str().to_owned(), value))
        .collect()
}

async fn run_count(server: &TestServer, admin: &str) -> usize {
    let listed = server.get("/v1/runs", admin).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    listed.body["runs"].as_array().expect("runs").len()
}

async fn a_signed_delivery_starts_one_run_however_often_it_is_redelivered(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let body = br#"{"count": 41, "pad":   "spaces kept"}"#;
    let headers = signed(Scheme::StandardWebhooks, &secret, "msg_1", now_s(), body);
    let first = deliver(&server, &hook, &headers, body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.body["duplicate"], false);
    let run = first.body["run_id"].as_str().expect("run id").to_owned();
    // The sender retries the same delivery three times at once: one run, the same id.
    let again =
        futures::future::join_all((0..3).map(|_| deliver(&server, &hook, &headers, body))).await;
    for reply in &again {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["run_id"], json!(run));
        assert_eq!(reply.body["duplicate"], true);
    }
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], json!({"n": 41}));
    let detail = server.get(&format!("/v1/runs/{run}"), &admin).await;
    let input = &detail.body["input"];
    assert_eq!(input["delivery_id"], "msg_1", "{}", detail.text);
    assert_eq!(input["source"], "webhook");
    // The raw bytes are kept as sent, not re-serialized.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(input["body_base64"].as_str().expect("raw body"))
        .expect("base64");
    assert_eq!(raw, body);
    assert_eq!(run_count(&server, &admin).await, 1);
    assert_eq!(runs_this_hour(&server, &admin).await, 1);
}

/// The same delivery sent three times at once before any of them was answered: the copies
/// meet in one group-committed batch (SQLite) or in concurrent transactions (PostgreSQL),
/// and exactly one creates the run.
async fn three_concurrent_first_deliveries_of_one_id_make_one_run(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let body = br#"{"count": 7}"#;
    let headers = signed(Scheme::StandardWebhooks, &secret, "msg_once", now_s(), body);
    let replies =
        futures::future::join_all((0..3).map(|_| deliver(&server, &hook, &headers, body))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 202], "{replies:?}");
    let run = &replies[0].body["run_id"];
    assert!(run.is_string(), "{}", replies[0].text);
    for reply in &replies {
        assert_eq!(&reply.body["run_id"], run, "{}", reply.text);
    }
    assert_eq!(run_count(&server, &admin).await, 1);
    assert_eq!(runs_this_hour(&server, &admin).await, 1, "one charge");
}

/// Deliveries read their trigger and workflow through a cache; the API's writes in this
/// process reach the very next delivery.
async fn a_new_workflow_version_or_its_deletion_reaches_the_next_delivery(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let send = |id: &'static str| {
        let (server, hook, secret) = (&server, &hook, &secret);
        async move {
            let body = br#"{"count": 1}"#;
            let headers = signed(Scheme::StandardWebhooks, secret, id, now_s(), body);
            deliver(server, hook, &headers, body).await
        }
    };
    let first = send("v1").await;
    assert_eq!(first.status, 202, "{}", first.text);
    let run = first.body["run_id"].as_str().expect("run id").to_owned();
    assert_eq!(
        wait_for(&server, &admin, &run, ended).await["workflow_version"],
        1
    );
    let saved = server
        .put(
            &format!("/v1/workflows/{workflow}"),
            &admin,
            json!({"steps": [{"id": "echo", "connector": "hostile", "action": "echo", "input": {"n": 2}}]}),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    let second = send("v2").await;
    assert_eq!(second.status, 202, "{}", second.text);
    let run = second.body["run_id"].as_str().expect("run id").to_owned();
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(
        (done["workflow_version"].clone(), done["output"].clone()),
        (json!(2), json!({"n": 2})),
        "{done}"
    );
    let deleted = server
        .delete(&format!("/v1/workflows/{workflow}"), &admin)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = send("after-delete").await;
    assert_problem(&gone, 404, "not-found");
    assert_eq!(run_count(&server, &admin).await, 2);
}

async fn bad_deliveries_are_refused_and_leave_nothing_behind(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let body = br#"{"count": 1}"#;
    let now = now_s();
    let good = signed(Scheme::StandardWebhooks, &secret, "msg_ok", now, body);
    let with = |name: &str, value: &str| -> Headers {
        good.iter()
            .map(|(n, v)| {
                if n == name {
                    (n.clone(), value.to_owned())
                } else {
                    (n.clone(), v.clone())
                }
            })
            .collect()
    };
    let other_secret = airlock::triggers::webhook::generate_secret();
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<Value>(br#"{ "count" : 1 }"#).expect("json"))
            .expect("json");
    let cases: Vec<(&str, Headers, Vec<u8>)> = vec![
        ("unsigned", Vec::new(), body.to_vec()),
        (
            "empty v1 signature",
            with("webhook-signature", "v1,"),
            body.to_vec(),
        ),
        (
            "wrong secret",
            signed(Scheme::StandardWebhooks, &other_secret, "msg_ok", now, body),
            body.to_vec(),
        ),
        (
            "stale",
            signed(Scheme::StandardWebhooks, &secret, "msg_ok", now - 301, body),
            body.to_vec(),
        ),
        (
            // Past the 300 s tolerance by more than the seconds this test may take to get
            // there (at +301 a loaded machine let it through once).
            "from the future",
            signed(Scheme::StandardWebhooks, &secret, "msg_ok", now + 330, body),
            body.to_vec(),
        ),
        (
            "fractional timestamp",
            with("webhook-timestamp", &format!("{now}.5")),
            body.to_vec(),
        ),
        ("tampered body", good.clone(), br#"{"count": 2}"#.to_vec()),
        (
            "signature of the re-serialized body",
            signed(
                Scheme::StandardWebhooks,
                &secret,
                "msg_ok",
                now,
                &reserialized,
            ),
            br#"{ "count" : 1 }"#.to_vec(),
        ),
    ];
    for (what, headers, body) in &cases {
        let reply = deliver(&server, &hook, headers, body).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.text);
        assert_problem(&reply, 401, "invalid-signature");
        assert!(
            reply.headers.get("www-authenticate").is_none(),
            "{what}: a sender signs, it does not log in"
        );
    }
    // Nothing stored, nothing charged; the refusals are counted, in this process only.
    assert_eq!(run_count(&server, &admin).await, 0);
    assert_eq!(runs_this_hour(&server, &admin).await, 0);
    let id = hook.trim_start_matches("/hooks/");
    let shown = server.get(&format!("/v1/triggers/{id}"), &admin).await;
    assert_eq!(
        shown.body["webhook"]["rejected_deliveries_here"],
        json!(cases.len()),
        "{}",
        shown.text
    );
    // Unknown hooks, and a body past the cap.
    let unknown = deliver(&server, "/hooks/trg_nope", &good, body).await;
    assert_problem(&unknown, 404, "not-found");
    let huge = vec![b' '; airlock::api::MAX_HOOK_BODY + 1];
    let too_big = deliver(
        &server,
        &hook,
        &signed(Scheme::StandardWebhooks, &secret, "big", now, &huge),
        &huge,
    )
    .await;
    assert_problem(&too_big, 413, "payload-too-large");
    // The hook's own cap, not the API's 64 KiB one: 100 KiB are accepted.
    let mut large = br#"{"count": 1, "pad": ""#.to_vec();
    large.extend(std::iter::repeat_n(b'x', 100 * 1024));
    large.extend(br#""}"#);
    let headers = signed(Scheme::StandardWebhooks, &secret, "large", now, &large);
    let accepted = deliver(&server, &hook, &headers, &large).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    // The good one still goes through.
    let ok = deliver(&server, &hook, &good, body).await;
    assert_eq!(ok.status, 202, "{}", ok.text);
}

async fn github_and_stripe_deliveries_verify(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    // GitHub: the secret is generated and shown; the delivery id is X-GitHub-Delivery.
    let github = create_trigger(
        &server,
        &admin,
        &workflow,
        json!({"kind": "webhook", "scheme": "github"}),
    )
    .await;
    let secret = github["secret"].as_str().expect("secret").to_owned();
    let hook = github["webhook"]["url"].as_str().expect("url").to_owned();
    let body = br#"{"count": 3}"#;
    let headers = signed(
        Scheme::Github,
        &secret,
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        now_s(),
        body,
    );
    let reply = deliver(&server, &hook, &headers, body).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let again = deliver(&server, &hook, &headers, body).await;
    assert_eq!(again.status, 200, "{}", again.text);
    let wrong = signed(
        Scheme::Github,
        "not the secret",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        now_s(),
        body,
    );
    assert_problem(
        &deliver(&server, &hook, &wrong, body).await,
        401,
        "invalid-signature",
    );
    // Stripe: the signing secret comes from Stripe, so it must be given.
    let refused = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            &admin,
            json!({"kind": "webhook", "scheme": "stripe"}),
        )
        .await;
    assert_problem(&refused, 422, "validation");
    let stripe_secret = "whsec_test_5f1c2b0a9e8d7c6b";
    let stripe = create_trigger(
        &server,
        &admin,
        &workflow,
        json!({"kind": "webhook", "scheme": "stripe", "secret": stripe_secret}),
    )
    .await;
    assert_eq!(stripe["secret"], stripe_secret, "shown back once");
    let hook = stripe["webhook"]["url"].as_str().expect("url").to_owned();
    let event = br#"{"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "count": 9}"#;
    let headers = signed(
        Scheme::Stripe,
        stripe_secret,
        "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        now_s(),
        event,
    );
    let reply = deliver(&server, &hook, &headers, event).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let done = wait_for(
        &server,
        &admin,
        reply.body["run_id"].as_str().expect("run"),
        ended,
    )
    .await;
    assert_eq!(done["output"], json!({"n": 9}), "{done}");
    assert_eq!(done["input"]["delivery_id"], "evt_1NG8Du2eZvKYlo2CUI79vXWy");
    // Trigger keys are the triggers': a caller cannot take a tick's or a delivery's key.
    for key in ["cron:trg_x:1000", "hook:trg_x:evt_1"] {
        let reply = reqwest::Client::new()
            .post(format!("{}/v1/workflows/{workflow}/runs", server.base))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body("{}")
            .send()
            .await
            .expect("request");
        assert_eq!(reply.status().as_u16(), 422, "{key}");
    }
    // A field of the other kind is refused.
    let mixed = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            &admin,
            json!({"kind": "webhook", "expression": "* * * * *"}),
        )
        .await;
    assert_problem(&mixed, 422, "validation");
}

async fn a_rotated_secret_keeps_the_old_one_for_the_overlap(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    let (hook, old) = webhook(&server, &admin, &workflow).await;
    let id = hook.trim_start_matches("/hooks/").to_owned();
    let body = br#"{"count": 5}"#;
    let rotated = server
        .post(
            &format!("/v1/triggers/{id}/rotate-secret"),
            &admin,
            json!({"overlap_seconds": 600}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new = rotated.body["secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    assert_ne!(new, old);
    assert!(
        rotated.body["webhook"]["previous_secret_until_ms"]
            .as_i64()
            .is_some()
    );
    for (n, secret) in [&old, &new].into_iter().enumerate() {
        let headers = signed(
            Scheme::StandardWebhooks,
            secret,
            &format!("m{n}"),
            now_s(),
            body,
        );
        let reply = deliver(&server, &hook, &headers, body).await;
        assert_eq!(
            reply.status, 202,
            "secret {n} during the overlap: {}",
            reply.text
        );
    }
    // A rotation without overlap: the secret before it stops verifying at once.
    let rotated = server
        .post(
            &format!("/v1/triggers/{id}/rotate-secret"),
            &admin,
            json!({"overlap_seconds": 0}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let newest = rotated.body["secret"].as_str().expect("secret").to_owned();
    let stale = signed(Scheme::StandardWebhooks, &new, "m3", now_s(), body);
    assert_problem(
        &deliver(&server, &hook, &stale, body).await,
        401,
        "invalid-signature",
    );
    let fresh = signed(Scheme::StandardWebhooks, &newest, "m4", now_s(), body);
    assert_eq!(deliver(&server, &hook, &fresh, body).await.status, 202);
    // Overlaps past a week are refused; cron triggers have no secret.
    let long = server
        .post(
            &format!("/v1/triggers/{id}/rotate-secret"),
            &admin,
            json!({"overlap_seconds": 604801}),
        )
        .await;
    assert_problem(&long, 422, "validation");
}

async fn a_paused_trigger_refuses_and_fires_nothing(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/scheduled_at").await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let id = hook.trim_start_matches("/hooks/").to_owned();
    let early_body = br#"{"count": 0}"#;
    let early = signed(Scheme::StandardWebhooks, &secret, "p0", now_s(), early_body);
    let accepted = deliver(&server, &hook, &early, early_body).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let paused = server
        .post(&format!("/v1/triggers/{id}/pause"), &admin, json!({}))
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.body["paused"], true);
    let body = br#"{"count": 1}"#;
    let headers = signed(Scheme::StandardWebhooks, &secret, "p1", now_s(), body);
    assert_problem(
        &deliver(&server, &hook, &headers, body).await,
        409,
        "conflict",
    );
    // A delivery accepted before the pause, redelivered: its run (200), not a refusal.
    let again = deliver(&server, &hook, &early, early_body).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["run_id"], accepted.body["run_id"]);
    // An unsigned request learns nothing about the state: 401 first.
    assert_problem(
        &deliver(&server, &hook, &[], body).await,
        401,
        "invalid-signature",
    );
    let cron = create_trigger(
        &server,
        &admin,
        &workflow,
        json!({"kind": "cron", "expression": "* * * * * *"}),
    )
    .await;
    let cron_id = cron["id"].as_str().expect("id").to_owned();
    assert_eq!(
        cron["cron"]["next_fire_times_ms"]
            .as_array()
            .expect("times")
            .len(),
        5,
        "{cron}"
    );
    let paused = server
        .post(&format!("/v1/triggers/{cron_id}/pause"), &admin, json!({}))
        .await;
    assert_eq!(
        paused.body["cron"]["next_fire_times_ms"],
        json!([]),
        "{}",
        paused.text
    );
    let before = run_count(&server, &admin).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        run_count(&server, &admin).await,
        before,
        "a paused cron trigger fired"
    );
    let resumed = server
        .post(&format!("/v1/triggers/{cron_id}/resume"), &admin, json!({}))
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    // The pause's ticks are not caught up: the next tick is in the future.
    let next = resumed.body["cron"]["next_fire_times_ms"][0]
        .as_i64()
        .expect("next");
    assert!(next > airlock::store::now_ms() - 1_000, "{}", resumed.text);
    assert_eq!(
        deliver(&server, &hook, &headers, body).await.status,
        409,
        "the webhook is still paused"
    );
    // Resuming a running trigger changes nothing (it must not skip or repeat a tick).
    let far = 4_102_444_800_000_i64; // 2100-01-01
    let raw = server.raw_db().await;
    sqlx::query("UPDATE triggers SET next_fire_at = $1 WHERE id = $2")
        .bind(far)
        .bind(&cron_id)
        .execute(&raw)
        .await
        .expect("move");
    let again = server
        .post(&format!("/v1/triggers/{cron_id}/resume"), &admin, json!({}))
        .await;
    assert_eq!(
        again.body["cron"]["next_fire_times_ms"][0],
        json!(far),
        "{}",
        again.text
    );
    sqlx::query("UPDATE triggers SET next_fire_at = $1 WHERE id = $2")
        .bind(next)
        .bind(&cron_id)
        .execute(&raw)
        .await
        .expect("move back");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while run_count(&server, &admin).await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed cron trigger never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deliveries_count_against_the_hourly_runs(db: Db) {
    away_from_hour_turn().await;
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    put_limits(&server, "acme", json!({"runs_per_hour": 2})).await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let body = br#"{"count": 1}"#;
    for n in 0..2 {
        let headers = signed(
            Scheme::StandardWebhooks,
            &secret,
            &format!("q{n}"),
            now_s(),
            body,
        );
        assert_eq!(deliver(&server, &hook, &headers, body).await.status, 202);
    }
    let headers = signed(Scheme::StandardWebhooks, &secret, "q2", now_s(), body);
    let refused = deliver(&server, &hook, &headers, body).await;
    assert_problem(&refused, 429, "quota-exceeded");
    assert!(refused.headers.get("retry-after").is_some());
    // A redelivery of an accepted one is not a new run: still answered.
    let headers = signed(Scheme::StandardWebhooks, &secret, "q0", now_s(), body);
    assert_eq!(deliver(&server, &hook, &headers, body).await.status, 200);
    // The per-trigger rate: a trigger accepting one delivery a minute refuses the second.
    put_limits(&server, "acme", json!({"runs_per_hour": 100})).await;
    let slow = create_trigger(
        &server,
        &admin,
        &workflow,
        json!({"kind": "webhook", "rate_per_minute": 1}),
    )
    .await;
    let slow_hook = slow["webhook"]["url"].as_str().expect("url").to_owned();
    let slow_secret = slow["secret"].as_str().expect("secret").to_owned();
    let first = signed(Scheme::StandardWebhooks, &slow_secret, "r0", now_s(), body);
    let accepted = deliver(&server, &slow_hook, &first, body).await;
    assert_eq!(accepted.status, 202);
    let second = signed(Scheme::StandardWebhooks, &slow_secret, "r1", now_s(), body);
    let limited = deliver(&server, &slow_hook, &second, body).await;
    assert_problem(&limited, 429, "too-many-requests");
    assert!(limited.headers.get("retry-after").is_some());
    // A redelivery of the accepted one still gets its run (200), rate or not.
    let again = deliver(&server, &slow_hook, &first, body).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["run_id"], accepted.body["run_id"]);
}

/// (scheduled time, outcome) of each recorded tick of a trigger.
async fn ticks(
    server: &TestServer,
    tenant: &str,
    trigger: &str,
) -> Vec<(i64, String, Option<String>)> {
    server
        .state
        .store()
        .trigger_ticks(tenant, trigger)
        .await
        .expect("ticks")
}

async fn a_cron_trigger_fires_each_tick_once_and_stops_when_deleted(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/scheduled_at").await;
    let trigger = create_trigger(
        &server,
        &admin,
        &workflow,
        json!({"kind": "cron", "expression": "* * * * * *", "time_zone": "Europe/Berlin"}),
    )
    .await;
    let id = trigger["id"].as_str().expect("id").to_owned();
    let times = trigger["cron"]["next_fire_times_ms"]
        .as_array()
        .expect("times");
    for pair in times.windows(2) {
        assert_eq!(
            pair[1].as_i64().expect("t") - pair[0].as_i64().expect("t"),
            1_000,
            "{trigger}"
        );
    }
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let deleted = server.delete(&format!("/v1/triggers/{id}"), &admin).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let recorded = ticks(&server, "acme", &id).await;
    assert!(recorded.len() >= 2, "{recorded:?}");
    for pair in recorded.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            1_000,
            "one tick a second, none twice, none lost: {recorded:?}"
        );
    }
    for (at, outcome, run) in &recorded {
        assert_eq!(outcome, "fired");
        let run = run.as_deref().expect("a fired tick has its run");
        let done = wait_for(&server, &admin, run, ended).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["output"], json!({"n": at}));
        assert_eq!(done["idempotency_key"], format!("cron:{id}:{at}"));
    }
    assert_eq!(run_count(&server, &admin).await, recorded.len());
    // Deleted: nothing more fires.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(ticks(&server, "acme", &id).await.len(), recorded.len());
    assert_eq!(run_count(&server, &admin).await, recorded.len());
    // Bad schedules are refused with the field named.
    for (body, field) in [
        (json!({"kind": "cron", "expression": "* * *"}), "expression"),
        (
            json!({"kind": "cron", "expression": "0 0 30 2 *"}),
            "expression",
        ),
        (
            json!({"kind": "cron", "expression": "* * * * *", "time_zone": "Mars/Olympus"}),
            "time_zone",
        ),
        (json!({"kind": "cron"}), "expression"),
        (
            json!({"kind": "cron", "expression": "* * * * *", "secret": "whsec_x"}),
            "secret",
        ),
    ] {
        let reply = server
            .post(
                &format!("/v1/workflows/{workflow}/triggers"),
                &admin,
                body.clone(),
            )
            .await;
        assert_problem(&reply, 422, "validation");
        assert_eq!(reply.body["field"], field, "{body}: {}", reply.text);
    }
}

async fn missed_ticks_follow_the_trigger_policy(db: Db) {
    // A tick more than a second late counts as missed (the default grace is a minute).
    let configure = |config: &mut airlock::config::Config| {
        crate::runs_support::fast_workers(config);
        config.cron_grace = Duration::from_secs(1);
    };
    let mut options = crate::support::options();
    options.engine.pool_size = 8;
    let Some(server) = TestServer::start_configured(db, options, configure).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/scheduled_at").await;
    let raw = server.raw_db().await;
    // Away from a minute's turn (set-up and the wait take some seconds), so this minute's
    // tick is late too: 11 late ticks.
    while !(3_000..45_000).contains(&(airlock::store::now_ms() % 60_000)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut expected = Vec::new();
    for (policy, cap, fired) in [("skip", 10, 0usize), ("latest", 10, 1), ("all", 3, 3)] {
        let trigger = create_trigger(
            &server,
            &admin,
            &workflow,
            json!({"kind": "cron", "expression": "0 * * * * *", "missed_ticks": policy, "missed_cap": cap}),
        )
        .await;
        let id = trigger["id"].as_str().expect("id").to_owned();
        // As if no process ran for ten minutes: the next tick is ten minutes ago.
        let now = airlock::store::now_ms();
        let ten_minutes_ago = now - now % 60_000 - 600_000;
        sqlx::query("UPDATE triggers SET next_fire_at = $1 WHERE id = $2")
            .bind(ten_minutes_ago)
            .bind(&id)
            .execute(&raw)
            .await
            .expect("rewind");
        expected.push((id, policy, fired));
    }
    server.state.store().wake_scheduler();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for (id, policy, fired) in expected {
        let shown = server.get(&format!("/v1/triggers/{id}"), &admin).await;
        let cron = &shown.body["cron"];
        assert_eq!(cron["fired"], json!(fired), "{policy}: {}", shown.text);
        assert_eq!(
            cron["fired"].as_i64().expect("fired") + cron["missed"].as_i64().expect("missed"),
            11,
            "{policy}: every late tick fired or counted missed: {}",
            shown.text
        );
        assert!(
            cron["next_fire_times_ms"][0].as_i64().expect("next")
                > airlock::store::now_ms() - 1_000
        );
        let recorded = ticks(&server, "acme", &id).await;
        assert_eq!(recorded.len(), fired, "{policy}: {recorded:?}");
        // `latest` fires the most recent late tick; `all` the most recent `cap`, in order.
        let now = airlock::store::now_ms();
        let this_minute = now - now % 60_000;
        let want: Vec<i64> = (0..fired as i64)
            .rev()
            .map(|k| this_minute - 60_000 * k)
            .collect();
        let got: Vec<i64> = recorded.iter().map(|t| t.0).collect();
        assert_eq!(got, want, "{policy}");
    }
}

async fn overlap_skip_starts_no_run_while_one_is_going(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = create_workflow(
        &server,
        &admin,
        "slow",
        json!([{"id": "nap", "connector": "hostile", "action": "sleep", "input": {"ms": 2500}}]),
    )
    .await;
    let trigger = create_trigger(
        &server,
        &admin,
        &workflow,
        json!({"kind": "cron", "expression": "* * * * * *", "overlap": "skip"}),
    )
    .await;
    let id = trigger["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let paused = server
        .post(&format!("/v1/triggers/{id}/pause"), &admin, json!({}))
        .await;
    let cron = &paused.body["cron"];
    assert!(
        cron["fired"].as_i64().expect("fired") >= 1,
        "{}",
        paused.text
    );
    assert!(
        cron["skipped"].as_i64().expect("skipped") >= 1,
        "{}",
        paused.text
    );
    let recorded = ticks(&server, "acme", &id).await;
    let skipped = recorded.iter().filter(|t| t.1 == "skipped").count();
    assert_eq!(json!(skipped), cron["skipped"], "{recorded:?}");
    // No two of its runs were ever going at once: each started after the one before ended.
    let listed = server
        .get(&format!("/v1/runs?workflow={workflow}"), &admin)
        .await;
    let mut runs: Vec<Value> = Vec::new();
    for run in listed.body["runs"].as_array().expect("runs") {
        let id = run["id"].as_str().expect("id");
        runs.push(wait_for(&server, &admin, id, ended).await);
    }
    runs.sort_by_key(|r| r["created_at_ms"].as_i64());
    for pair in runs.windows(2) {
        let ended_at = pair[0]["finished_at_ms"].as_i64().expect("finished");
        let created = pair[1]["created_at_ms"].as_i64().expect("created");
        assert!(created >= ended_at, "overlap: {} and {}", pair[0], pair[1]);
    }
}

async fn a_used_up_hour_refuses_a_minute_of_cron_ticks_in_one_write(db: Db) {
    away_from_hour_turn().await;
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    put_limits(&server, "acme", json!({"runs_per_hour": 2})).await;
    let workflow = echo_workflow(&server, &admin, "/trigger/scheduled_at").await;
    let trigger = create_trigger(
        &server,
        &admin,
        &workflow,
        json!({"kind": "cron", "expression": "* * * * * *"}),
    )
    .await;
    let id = trigger["id"].as_str().expect("id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let shown = server.get(&format!("/v1/triggers/{id}"), &admin).await;
        if shown.body["cron"]["refused"].as_i64().unwrap_or(0) > 0 {
            break shown;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused: {}",
            shown.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cron = &shown.body["cron"];
    assert_eq!(cron["fired"], 2, "{}", shown.text);
    // The next minute of ticks is refused at once and the next tick is a minute on: the
    // scheduler does not claim (and write) a refused tick every second.
    let updated = shown.body["updated_at_ms"].as_i64().expect("updated");
    let next = cron["next_fire_times_ms"][0].as_i64().expect("next");
    // About a minute after the refusal (the write lands a moment after the decision).
    assert!(
        (updated + 50_000..=updated + 61_000).contains(&next),
        "{}",
        shown.text
    );
    assert!(
        cron["refused"].as_i64().expect("refused") >= 50,
        "{}",
        shown.text
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let later = server.get(&format!("/v1/triggers/{id}"), &admin).await;
    assert_eq!(
        later.body["updated_at_ms"],
        json!(updated),
        "no write meanwhile: {}",
        later.text
    );
    assert_eq!(ticks(&server, "acme", &id).await.len(), 2);
}

async fn triggers_are_kept_apart_by_tenant_and_role(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let other = server.tenant("globex").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    let (hook, _) = webhook(&server, &admin, &workflow).await;
    let id = hook.trim_start_matches("/hooks/").to_owned();
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/triggers/{id}")),
        (reqwest::Method::POST, format!("/v1/triggers/{id}/pause")),
        (reqwest::Method::POST, format!("/v1/triggers/{id}/resume")),
        (
            reqwest::Method::POST,
            format!("/v1/triggers/{id}/rotate-secret"),
        ),
        (reqwest::Method::DELETE, format!("/v1/triggers/{id}")),
        (
            reqwest::Method::POST,
            format!("/v1/workflows/{workflow}/triggers"),
        ),
    ] {
        let body = if path.ends_with("/triggers") {
            json!({"kind": "webhook"})
        } else {
            json!({})
        };
        let body = crate::api_support::Body::Json(body);
        let reply = server.call(method.clone(), &path, Some(&other), body).await;
        assert_problem(&reply, 404, "not-found");
    }
    let listed = server.get("/v1/triggers", &other).await;
    assert_eq!(listed.body, json!([]), "{}", listed.text);
    let viewer = server.token(Some("acme"), Role::Viewer);
    let create = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            &viewer,
            json!({"kind": "webhook"}),
        )
        .await;
    assert_problem(&create, 403, "forbidden");
    let rotate = server
        .post(
            &format!("/v1/triggers/{id}/rotate-secret"),
            &viewer,
            json!({}),
        )
        .await;
    assert_problem(&rotate, 403, "forbidden");
    let shown = server.get(&format!("/v1/triggers/{id}"), &viewer).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    // Deleting the workflow deletes its triggers.
    let removed = server
        .delete(&format!("/v1/workflows/{workflow}"), &admin)
        .await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert_problem(
        &server.get(&format!("/v1/triggers/{id}"), &admin).await,
        404,
        "not-found",
    );
}

async fn webhook_secrets_are_shown_once_and_stored_sealed(db: Db) {
    let Some(server) = start(db).await else {
        return;
    };
    let admin = tenant_with_hostile(&server, "acme").await;
    let workflow = echo_workflow(&server, &admin, "/trigger/json/count").await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    let id = hook.trim_start_matches("/hooks/").to_owned();
    let shown = server.get(&format!("/v1/triggers/{id}"), &admin).await;
    let listed = server.get("/v1/triggers", &admin).await;
    for reply in [&shown, &listed] {
        assert!(!reply.text.contains(&secret), "{}", reply.text);
        assert!(!reply.text.contains("\"secret\""), "{}", reply.text);
    }
    let body = br#"{"count": 1}"#;
    let headers = signed(Scheme::StandardWebhooks, &secret, "c1", now_s(), body);
    let run = deliver(&server, &hook, &headers, body).await.body["run_id"]
        .as_str()
        .expect("run")
        .to_owned();
    let done = wait_for(&server, &admin, &run, ended).await;
    assert!(!done.to_string().contains(&secret));
    // At rest: the column holds an envelope, not the secret or its key material.
    let raw = server.raw_db().await;
    let stored: String = sqlx::query_scalar("SELECT secret FROM triggers WHERE id = $1")
        .bind(&id)
        .fetch_one(&raw)
        .await
        .expect("row");
    assert!(stored.starts_with("v1."), "{stored}");
    assert!(!stored.contains(&secret) && !stored.contains(secret.trim_start_matches("whsec_")));
    // The tenant cap on triggers.
    let at_cap = airlock::runs::MAX_TRIGGERS_PER_TENANT as usize;
    for _ in 1..at_cap {
        let reply = server
            .post(
                &format!("/v1/workflows/{workflow}/triggers"),
                &admin,
                json!({"kind": "cron", "expression": "0 0 1 1 *"}),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    let over = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            &admin,
            json!({"kind": "webhook"}),
        )
        .await;
    assert_problem(&over, 429, "quota-exceeded");
    assert_eq!(over.body["quota"], "max_triggers");
}
