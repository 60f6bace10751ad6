//! The tenant's dead-letter webhook: a run that goes dead is POSTed to it as a signed
//! `run.dead` event, through the outbound gate under the tenant's host policy, retried until
//! delivered, once per death; the setting's rules; the outbox's claims. A real local HTTPS
//! receiver, the `http` connector making runs die, both databases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

use airlock::store::{DeadLetterHook, NoticeOutcome, StoreError};
use airlock::triggers::webhook::{self, Scheme};

use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};
use crate::runs_support::{create_workflow, ended, fast_workers, put_limits, start_run, wait_for};
use crate::support::{Server, options_for_tls};

on_both_databases!(
    a_dead_run_is_posted_signed_once_and_retried_until_delivered,
    the_webhook_is_held_to_the_tenants_host_policy_at_save_and_at_send,
    a_rotated_secret_signs_beside_the_previous_one_and_a_removed_hook_fails_its_notices,
    notices_are_claimed_a_few_per_tenant_under_a_lease_and_written_once_per_claim,
    a_slow_receiver_holds_a_few_slots_and_other_tenants_notices_go_on,
);

const API: &str = "api.example.test";
const HOOKS: &str = "hooks.example.test";

/// What the receiver got: each request's headers and body.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver at `https://hooks.example.test/dead` that answers the first `refusals`
/// requests 503 and the rest 204; `https://api.example.test/fail` answers 500 (a step that
/// calls it dies: one attempt, by default).
async fn receiver(refusals: usize) -> (Server, Received) {
    let received: Received = Arc::default();
    let record = received.clone();
    let router = Router::new()
        .route(
            "/dead",
            post(move |headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                async move {
                    let mut seen = record.lock().expect("lock");
                    seen.push((headers, body));
                    if seen.len() <= refusals {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        )
        .route(
            "/fail",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        // A redirect to a host the tenant allows, but not the webhook's.
        .route(
            "/elsewhere",
            post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", format!("https://{API}/dead"))],
                )
            }),
        )
        // A receiver that takes 8 s to answer (the attempt's timeout is 10 s).
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(8)).await;
                StatusCode::NO_CONTENT
            }),
        );
    (Server::start_tls(router, &[API, HOOKS]).await, received)
}

/// A server whose tenant `acme` has the `http` connector, sending notices with short waits
/// (`backoff`) and polling often; returns it with acme's admin token.
async fn server(
    db: Db,
    upstream: &Server,
    backoff: &[u64],
    poll: u64,
) -> Option<(TestServer, String)> {
    let mut options = options_for_tls(upstream, &[API, HOOKS]);
    options.engine.pool_size = 8;
    let backoff: Vec<Duration> = backoff
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .collect();
    let server = TestServer::start_configured(db, options, |config| {
        fast_workers(config);
        config.dead_letter_poll = Duration::from_millis(poll);
        config.dead_letter_backoff = backoff;
    })
    .await?;
    let admin = server.tenant("acme").await;
    let uploaded = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    Some((server, admin))
}

/// A workflow of one step that dies (the upstream answers 500); returns the dead run's id.
async fn dead_run(server: &TestServer, token: &str) -> String {
    let workflow = create_workflow(
        server,
        token,
        &format!("dies-{}", uuid::Uuid::new_v4().simple()),
        json!([{"id": "call", "connector": "http", "action": "request",
            "input": {"method": "POST", "url": format!("https://{API}/fail"), "error_for_status": true}}]),
    )
    .await;
    let run = start_run(server, token, &workflow, json!({})).await;
    let done = wait_for(server, token, &run, ended).await;
    assert_eq!(done["state"], "dead", "{done}");
    run
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn notices(server: &TestServer, token: &str) -> Vec<Value> {
    let reply = server.get("/v1/dead-letters/webhook/notices", token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["notices"].as_array().expect("notices").clone()
}

fn verifies(secrets: &[&str], headers: &HeaderMap, body: &[u8]) -> bool {
    let now = airlock::store::now_ms() / 1000;
    webhook::verify(Scheme::StandardWebhooks, secrets, headers, body, now).is_ok()
}

async fn a_dead_run_is_posted_signed_once_and_retried_until_delivered(db: Db) {
    let (upstream, received) = receiver(1).await;
    let Some((server, admin)) = server(db, &upstream, &[300, 300], 50).await else {
        return;
    };
    let put = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": format!("https://{HOOKS}/dead")}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    let secret = put.body["secret"]
        .as_str()
        .expect("the secret, this once")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let shown = server.get("/v1/dead-letters/webhook", &admin).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert!(
        shown.body.get("secret").is_none(),
        "never shown again: {}",
        shown.text
    );

    // Another tenant, without a webhook: its deaths make no notice, and reach no one.
    let other = server.tenant("other").await;
    let uploaded = server
        .upload(&other, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    dead_run(&server, &other).await;

    let run = dead_run(&server, &admin).await;
    wait_until("the second attempt", async || {
        received.lock().expect("lock").len() >= 2
    })
    .await;
    wait_until("the notice delivered", async || {
        notices(&server, &admin)
            .await
            .first()
            .is_some_and(|n| n["state"] == "delivered")
    })
    .await;
    // Well past the waits: a delivered notice is not sent again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let seen = received.lock().expect("lock").clone();
    assert_eq!(
        seen.len(),
        2,
        "one refused attempt, one delivered, nothing more"
    );
    for (headers, body) in &seen {
        assert!(
            verifies(&[&secret], headers, body),
            "signed with the tenant's secret"
        );
        assert!(!verifies(
            &["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
            headers,
            body
        ));
        assert_eq!(headers["content-type"], "application/json");
    }
    assert_eq!(
        seen[0].0["webhook-id"], seen[1].0["webhook-id"],
        "one id across attempts, so a receiver drops a repeat"
    );
    let event: Value = serde_json::from_slice(&seen[1].1).expect("JSON");
    assert_eq!(event["type"], "run.dead");
    assert_eq!(event["data"]["run_id"], run.as_str());
    assert_eq!(event["data"]["failed_step"], "call");
    assert_eq!(event["data"]["error"]["step"], "call");
    assert!(
        event["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{event}"
    );
    assert!(
        event["data"].get("trigger").is_none(),
        "the run's input is not sent: {event}"
    );

    let listed = notices(&server, &admin).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["run_id"], run.as_str());
    assert_eq!(listed[0]["attempts"], 2);
    assert_eq!(listed[0]["last_status"], 204);
    assert_eq!(
        listed[0]["id"],
        seen[0].0["webhook-id"].to_str().expect("id")
    );
    assert!(
        notices(&server, &other).await.is_empty(),
        "no webhook, no notice"
    );
    let counts = server.get("/v1/dead-letters/webhook", &admin).await;
    assert_eq!(
        counts.body["notices"],
        json!({"pending": 0, "delivered": 1, "failed": 0, "superseded": 0})
    );

    // Viewers read; only admins set or remove the webhook.
    let viewer = server.token(Some("acme"), airlock::api::Role::Viewer);
    assert_eq!(
        server.get("/v1/dead-letters/webhook", &viewer).await.status,
        200
    );
    let editor = server.token(Some("acme"), airlock::api::Role::Editor);
    let refused = server
        .put(
            "/v1/dead-letters/webhook",
            &editor,
            json!({"url": format!("https://{HOOKS}/x")}),
        )
        .await;
    assert_problem(&refused, 403, "forbidden");
    assert_eq!(
        server
            .delete("/v1/dead-letters/webhook", &editor)
            .await
            .status,
        403
    );
}

async fn the_webhook_is_held_to_the_tenants_host_policy_at_save_and_at_send(db: Db) {
    let (upstream, received) = receiver(0).await;
    let Some((server, admin)) = server(db, &upstream, &[100], 50).await else {
        return;
    };
    let put = |url: String| {
        let (server, admin) = (&server, &admin);
        async move {
            server
                .put("/v1/dead-letters/webhook", admin, json!({"url": url}))
                .await
        }
    };
    for refused in [
        format!("http://{HOOKS}/dead"),
        format!("https://user:pw@{HOOKS}/dead"),
        "https://10.0.0.1/dead".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "ftp://hooks.example.test/dead".to_owned(),
        "not a url".to_owned(),
        format!("https://{HOOKS}/{}", "a".repeat(2_100)),
    ] {
        let reply = put(refused.clone()).await;
        assert_problem(&reply, 422, "validation");
        assert_eq!(reply.body["field"], "url", "{refused}: {}", reply.text);
    }
    let bad_secret = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": format!("https://{HOOKS}/dead"), "secret": "not base64!"}),
        )
        .await;
    assert_problem(&bad_secret, 422, "validation");
    assert_eq!(bad_secret.body["field"], "secret");
    assert_eq!(
        server.get("/v1/dead-letters/webhook", &admin).await.status,
        404,
        "nothing refused was saved"
    );

    put_limits(&server, "acme", json!({"allowed_hosts": [API]})).await;
    let outside = put(format!("https://{HOOKS}/dead")).await;
    assert_problem(&outside, 422, "validation");
    assert_eq!(outside.body["field"], "url");

    // Allowed when saved; the policy narrows after: the notice is refused at send, its
    // attempts spent, and nothing reaches the receiver.
    put_limits(&server, "acme", json!({"allowed_hosts": [API, HOOKS]})).await;
    // A receiver that redirects elsewhere is not followed there, even to a host the tenant
    // allows: a notice goes to the webhook's host only.
    assert_eq!(put(format!("https://{HOOKS}/elsewhere")).await.status, 201);
    let test = server
        .post("/v1/dead-letters/webhook/test", &admin, json!({}))
        .await;
    assert_eq!(test.body["delivered"], false, "{}", test.text);
    assert!(received.lock().expect("lock").is_empty(), "{}", test.text);
    assert_eq!(put(format!("https://{HOOKS}/dead")).await.status, 200);
    put_limits(&server, "acme", json!({"allowed_hosts": [API]})).await;
    dead_run(&server, &admin).await;
    wait_until("the notice failed", async || {
        notices(&server, &admin)
            .await
            .first()
            .is_some_and(|n| n["state"] == "failed")
    })
    .await;
    let listed = notices(&server, &admin).await;
    assert_eq!(
        listed[0]["attempts"], 2,
        "one wait, two attempts: {listed:?}"
    );
    let error = listed[0]["last_error"].as_str().expect("why");
    assert!(error.starts_with("refused"), "{error}");
    assert!(
        received.lock().expect("lock").is_empty(),
        "no request left the gate"
    );
    let failed = server
        .get(
            "/v1/dead-letters/webhook/notices?state=failed&limit=1",
            &admin,
        )
        .await;
    assert_eq!(failed.body["notices"].as_array().map(Vec::len), Some(1));
    let unknown = server
        .get("/v1/dead-letters/webhook/notices?state=lost", &admin)
        .await;
    assert_problem(&unknown, 400, "bad-request");
    for bad in ["?limit=0", "?limit=101"] {
        let reply = server
            .get(&format!("/v1/dead-letters/webhook/notices{bad}"), &admin)
            .await;
        assert_problem(&reply, 422, "validation");
    }
}

async fn a_rotated_secret_signs_beside_the_previous_one_and_a_removed_hook_fails_its_notices(
    db: Db,
) {
    let (upstream, received) = receiver(0).await;
    // Every attempt waits an hour: a notice stays pending for the removal below.
    let Some((server, admin)) = server(db, &upstream, &[3_600_000], 50).await else {
        return;
    };
    let url = format!("https://{HOOKS}/dead");
    let mine = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let first = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": url, "secret": mine}),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["secret"], mine);
    let same = server
        .put("/v1/dead-letters/webhook", &admin, json!({"url": url}))
        .await;
    assert_eq!(same.status, 200, "{}", same.text);
    assert!(
        same.body.get("secret").is_none(),
        "kept, not shown: {}",
        same.text
    );

    let rotated = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": url, "rotate_secret": true}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new = rotated.body["secret"]
        .as_str()
        .expect("the new secret")
        .to_owned();
    assert_ne!(new, mine);
    assert!(rotated.body["previous_secret_until_ms"].as_i64().is_some());
    let test = server
        .post("/v1/dead-letters/webhook/test", &admin, json!({}))
        .await;
    assert_eq!(test.status, 200, "{}", test.text);
    assert_eq!(test.body["delivered"], true, "{}", test.text);
    assert_eq!(test.body["status"], 204);
    {
        let seen = received.lock().expect("lock");
        let (headers, body) = seen.last().expect("the test event");
        assert_eq!(
            headers["webhook-id"],
            test.body["webhook_id"].as_str().expect("id")
        );
        assert!(verifies(&[&new], headers, body), "the new secret signs");
        assert!(
            verifies(&[mine], headers, body),
            "and the previous, during the overlap"
        );
        let event: Value = serde_json::from_slice(body).expect("JSON");
        assert_eq!(event["type"], "run.dead.test");
    }

    // A one-second overlap: both sign, then only the newest.
    let newest = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": url, "rotate_secret": true, "overlap_seconds": 1}),
        )
        .await;
    let newest_secret = newest.body["secret"].as_str().expect("secret").to_owned();
    let last_signed = async || {
        let reply = server
            .post("/v1/dead-letters/webhook/test", &admin, json!({}))
            .await;
        assert_eq!(reply.body["delivered"], true, "{}", reply.text);
        received
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("the test event")
    };
    let (headers, body) = last_signed().await;
    assert!(verifies(&[&newest_secret], &headers, &body));
    assert!(verifies(&[&new], &headers, &body), "within the overlap");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (headers, body) = last_signed().await;
    assert!(verifies(&[&newest_secret], &headers, &body));
    assert!(
        !verifies(&[&new], &headers, &body),
        "past the overlap, the previous stops"
    );
    assert!(!verifies(&[mine], &headers, &body));
    // Test sends are free to the tenant, so they are few: 6 a minute.
    let mut refused = None;
    for _ in 0..4 {
        let reply = server
            .post("/v1/dead-letters/webhook/test", &admin, json!({}))
            .await;
        if reply.status != 200 {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("the seventh test send of a minute is refused");
    // 3 sent above, 3 in the loop: the 7th (the loop's 4th) is refused.
    assert_problem(&refused, 429, "too-many-requests");
    assert!(
        refused.headers.contains_key("retry-after"),
        "{:?}",
        refused.headers
    );
    let too_long = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": url, "rotate_secret": true, "overlap_seconds": 604_801}),
        )
        .await;
    assert_problem(&too_long, 422, "validation");

    // The policy no longer allows the receiver: a notice's first attempt is refused and it
    // waits for its next; then the hook goes.
    put_limits(&server, "acme", json!({"allowed_hosts": [API]})).await;
    let run = dead_run(&server, &admin).await;
    wait_until("a failed first attempt", async || {
        notices(&server, &admin)
            .await
            .first()
            .is_some_and(|n| n["attempts"] == 1 && n["state"] == "pending")
    })
    .await;
    // The run is replayed and dies again before its notice got through: the later death's
    // notice supersedes it (a run has one pending, however often it is replayed).
    let replayed = server
        .post(&format!("/v1/runs/{run}/replay"), &admin, json!({}))
        .await;
    assert!(replayed.status < 300, "{}", replayed.text);
    wait_until("the second death's notice", async || {
        notices(&server, &admin).await.len() == 2
    })
    .await;
    let listed = notices(&server, &admin).await;
    assert_eq!(listed[0]["state"], "pending", "{listed:?}");
    assert_eq!(listed[1]["state"], "superseded", "{listed:?}");
    assert_ne!(listed[0]["id"], listed[1]["id"], "one id per death");
    assert!(listed.iter().all(|n| n["run_id"] == run.as_str()));
    assert_eq!(
        server.get("/v1/dead-letters/webhook", &admin).await.body["notices"]["superseded"],
        1
    );
    assert_eq!(
        server
            .delete("/v1/dead-letters/webhook", &admin)
            .await
            .status,
        204
    );
    let listed = notices(&server, &admin).await;
    assert_eq!(listed[0]["state"], "failed", "{listed:?}");
    assert_eq!(
        listed[0]["last_error"],
        "the dead-letter webhook was removed"
    );
    assert_eq!(
        server.get("/v1/dead-letters/webhook", &admin).await.status,
        404
    );
    assert_eq!(
        server
            .delete("/v1/dead-letters/webhook", &admin)
            .await
            .status,
        404
    );
    let test = server
        .post("/v1/dead-letters/webhook/test", &admin, json!({}))
        .await;
    assert_problem(&test, 404, "not-found");
}

async fn notices_are_claimed_a_few_per_tenant_under_a_lease_and_written_once_per_claim(db: Db) {
    let (upstream, _received) = receiver(0).await;
    // This server's sender looks once at start, then not for an hour: the test claims.
    let Some((server, admin)) = server(db, &upstream, &[100], 3_600_000).await else {
        return;
    };
    let put = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": format!("https://{HOOKS}/dead")}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    let run = dead_run(&server, &admin).await;
    let pool = server.raw_db().await;
    // Ten more of acme's, and one of another tenant's, due now.
    due_notices(&server, "acme", 10).await;
    due_notices(&server, "zeta", 1).await;
    let store = server.state.store();
    // A change made from a stale read of the webhook is refused, whatever it changes.
    let read = store.dead_letter_hook("acme").await.expect("hook");
    let moved = DeadLetterHook {
        url: format!("https://{HOOKS}/moved"),
        ..read.clone()
    };
    let changed = store.update_dead_letter_hook(&moved).await.expect("change");
    assert_eq!(changed.version, read.version + 1);
    let stale = DeadLetterHook {
        url: format!("https://{HOOKS}/other"),
        ..read.clone()
    };
    assert!(matches!(
        store.update_dead_letter_hook(&stale).await,
        Err(StoreError::Conflict)
    ));
    let now = airlock::store::now_ms();
    let claimed = store
        .claim_notices(now, 1_000, 4, 32, &[])
        .await
        .expect("claim");
    let of = |tenant: &str| claimed.iter().filter(|n| n.tenant_id == tenant).count();
    assert_eq!(
        (of("acme"), of("zeta")),
        (4, 1),
        "a few of each tenant, not all of one"
    );
    assert!(claimed.iter().all(|n| n.attempts == 1));
    assert!(
        store
            .claim_notices(now, 1_000, 32, 32, &[])
            .await
            .expect("claim")
            .iter()
            .all(|n| {
                !claimed
                    .iter()
                    .any(|c| c.id == n.id && c.tenant_id == n.tenant_id)
            }),
        "a claimed notice is not claimed again within its lease"
    );
    // Past the lease (the process that claimed was killed, say) the notice is due again,
    // and the first claim's outcome no longer writes.
    let later = store
        .claim_notices(now + 1_001, 1_000, 32, 32, &[])
        .await
        .expect("claim");
    let again = later
        .iter()
        .find(|n| n.id == claimed[0].id && n.tenant_id == claimed[0].tenant_id)
        .expect("due again after the lease");
    assert_eq!(again.attempts, 2);
    let delivered = NoticeOutcome::Delivered { status: 200 };
    let (tenant, id) = (&again.tenant_id, &again.id);
    assert!(
        !store
            .finish_notice(tenant, id, 1, &delivered)
            .await
            .expect("write")
    );
    assert!(
        store
            .finish_notice(tenant, id, 2, &delivered)
            .await
            .expect("write")
    );
    assert!(
        !store
            .finish_notice(tenant, id, 2, &delivered)
            .await
            .expect("write"),
        "an outcome is written once"
    );
    // The journal wrote the dead run's notice with the run's death: its id names the lease
    // epoch it died under.
    let (id, payload): (String, String) =
        sqlx::query_as("SELECT id, payload FROM dead_letter_notices WHERE run_id = $1")
            .bind(&run)
            .fetch_one(&pool)
            .await
            .expect("the run's notice");
    assert!(id.starts_with(&format!("dead_{run}_")), "{id}");
    let data: Value = serde_json::from_str(&payload).expect("JSON");
    assert_eq!(data["run_id"], run.as_str());
    assert_eq!(data["workflow_version"], 1);
}

/// Inserts `n` notices of `tenant`, due now, as the journal would have for `n` deaths.
async fn due_notices(server: &TestServer, tenant: &str, n: usize) {
    let pool = server.raw_db().await;
    for i in 0..n {
        sqlx::query(
            "INSERT INTO dead_letter_notices (tenant_id, id, run_id, payload, state, \
             attempts, next_at, created_at, updated_at) \
             VALUES ($1, $2, $3, '{}', 'pending', 0, 0, 0, 0)",
        )
        .bind(tenant)
        .bind(format!("dead_run_{tenant}{i}_1"))
        .bind(format!("run_{tenant}{i}"))
        .execute(&pool)
        .await
        .expect("insert");
    }
}

/// A tenant whose receiver takes 8 s per notice has 8 due: it holds 4 of the sender's
/// slots, no more, and another tenant's notice is claimed and delivered meanwhile, not after.
async fn a_slow_receiver_holds_a_few_slots_and_other_tenants_notices_go_on(db: Db) {
    let (upstream, _received) = receiver(0).await;
    let Some((server, admin)) = server(db, &upstream, &[300], 50).await else {
        return;
    };
    let slow = server.tenant("slow").await;
    for (token, path) in [(&slow, "slow"), (&admin, "dead")] {
        let url = format!("https://{HOOKS}/{path}");
        let put = server
            .put("/v1/dead-letters/webhook", token, json!({"url": url}))
            .await;
        assert_eq!(put.status, 201, "{}", put.text);
    }
    due_notices(&server, "slow", 8).await;
    let claimed = async || {
        notices(&server, &slow)
            .await
            .iter()
            .filter(|n| n["attempts"] == 1)
            .count()
    };
    wait_until("the slow tenant's first claim", async || {
        claimed().await > 0
    })
    .await;
    dead_run(&server, &admin).await;
    wait_until("acme's notice delivered", async || {
        notices(&server, &admin)
            .await
            .first()
            .is_some_and(|n| n["state"] == "delivered")
    })
    .await;
    let held = notices(&server, &slow).await;
    assert!(
        held.iter().all(|n| n["state"] == "pending"),
        "the slow receiver has answered nothing yet: {held:?}"
    );
    assert_eq!(claimed().await, 4, "a few slots, not all: {held:?}");
}
