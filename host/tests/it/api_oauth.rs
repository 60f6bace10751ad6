//! OAuth2 connections: the host refreshes an expired access token before an invocation, and a
//! rejected one (401) inside the gate, which then re-sends the request once; against the
//! manifest's token URL (allowed by the tenant's policy, with the manifest's scopes), once for
//! any number of concurrent invocations (per-connection lock in a process, a lease on the row
//! across processes); stores the new tokens encrypted; and fails an invocation whose expired
//! token cannot be refreshed with an auth problem that quotes no secret.
//!
//! One local HTTPS server plays both `auth.example.test` (the token endpoint, which counts
//! refreshes, keeps the last form it got, and answers slowly so that concurrent callers
//! overlap) and `api.example.test` (which accepts only the newest access token, or none).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock::api::Role;
use airlock::config::Config;
use airlock::pipeline::ManualClock;
use airlock::runtime::RuntimeOptions;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};
use crate::support::{Server, options_for_tls};

const CLIENT_ID: &str = "client-1";
const CLIENT_SECRET: &str = "client-secret-b7f3c1";
const FIRST_REFRESH: &str = "refresh-0-5d1e7a";
const STALE_ACCESS: &str = "access-stale-0c92f4";
const INVOKE: &str = "/v1/connectors/oauth/actions/whoami/invoke";

/// The fake identity provider and API.
struct Upstream {
    refreshes: AtomicUsize,
    access: Mutex<String>,
    refresh: Mutex<String>,
    /// The token endpoint refuses every refresh.
    fail: AtomicBool,
    /// The API rejects every token.
    reject_all: AtomicBool,
    /// The API's answer quotes the Authorization it got (as a server echoing it would).
    echo: AtomicBool,
    /// The form of the last refresh.
    last_form: Mutex<HashMap<String, String>>,
}

impl Upstream {
    fn access(&self) -> String {
        self.access.lock().expect("lock").clone()
    }

    fn refresh(&self) -> String {
        self.refresh.lock().expect("lock").clone()
    }
}

async fn token(
    State(upstream): State<Arc<Upstream>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let n = upstream.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
    *upstream.last_form.lock().expect("lock") = form.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let field = |name: &str| form.get(name).map(String::as_str);
    let valid = field("grant_type") == Some("refresh_token")
        && field("client_id") == Some(CLIENT_ID)
        && field("client_secret") == Some(CLIENT_SECRET)
        && field("refresh_token") == Some(upstream.refresh().as_str());
    if upstream.fail.load(Ordering::SeqCst) || !valid {
        let body =
            json!({"error": "invalid_grant", "error_description": format!("bad {CLIENT_SECRET}")});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let access = format!("access-{n}-{nonce}");
    let refresh = format!("refresh-{n}-{nonce}");
    *upstream.access.lock().expect("lock") = access.clone();
    *upstream.refresh.lock().expect("lock") = refresh.clone();
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": refresh,
    }))
    .into_response()
}

async fn me(State(upstream): State<Arc<Upstream>>, headers: HeaderMap) -> Response {
    let expected = format!("Bearer {}", upstream.access());
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given == expected && !upstream.reject_all.load(Ordering::SeqCst) {
        if upstream.echo.load(Ordering::SeqCst) {
            return Json(json!({"user": "alice", "authorization": given})).into_response();
        }
        Json(json!({"user": "alice"})).into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

/// The fake upstream over HTTPS and runtime options whose gate reaches it.
async fn upstream() -> (Arc<Upstream>, Server, RuntimeOptions) {
    let upstream = Arc::new(Upstream {
        refreshes: AtomicUsize::new(0),
        access: Mutex::new(String::new()),
        refresh: Mutex::new(FIRST_REFRESH.to_owned()),
        fail: AtomicBool::new(false),
        reject_all: AtomicBool::new(false),
        echo: AtomicBool::new(false),
        last_form: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route("/token", post(token))
        .route("/me", get(me))
        .with_state(upstream.clone());
    let names = ["auth.example.test", "api.example.test"];
    let server = Server::start_tls(router, &names).await;
    let options = options_for_tls(&server, &names);
    (upstream, server, options)
}

fn unix_s() -> i64 {
    airlock::store::now_ms() / 1000
}

/// A tenant with the oauth connector and a connection whose access token expired; returns an
/// editor token and the connection id.
async fn expired_connection(server: &TestServer) -> (String, String) {
    connection_expiring_at(server, unix_s() - 60).await
}

/// Like [`expired_connection`], but the access token is valid for another hour by its
/// expiry, and the API does not take it: revoked.
async fn revoked_connection(server: &TestServer) -> (String, String) {
    connection_expiring_at(server, unix_s() + 3600).await
}

async fn connection_expiring_at(server: &TestServer, expires_at: i64) -> (String, String) {
    let admin = server.tenant("acme").await;
    let uploaded = server.upload(&admin, airlock_test_artifacts::OAUTH).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let created = server
        .post(
            "/v1/connections",
            &admin,
            json!({
                "connector": "oauth",
                "name": "alice",
                "credential": {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "refresh_token": FIRST_REFRESH,
                    "access_token": STALE_ACCESS,
                    "expires_at": expires_at,
                },
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().expect("id").to_owned();
    (server.token(Some("acme"), Role::Editor), id)
}

fn assert_whoami(status: u16, body: &Value, text: &str) {
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["ok"], json!(true), "{text}");
    assert_eq!(body["output"], json!({"user": "alice"}), "{text}");
}

/// The row holds neither the new tokens nor the old secrets in plaintext, and the expiry moved.
async fn assert_stored_encrypted(server: &TestServer, upstream: &Upstream) {
    let db = server.raw_db().await;
    let row = sqlx::query("SELECT secret, fields FROM connections")
        .fetch_one(&db)
        .await
        .expect("row");
    let secret: String = row.try_get("secret").expect("secret");
    let fields: String = row.try_get("fields").expect("fields");
    for plain in [
        upstream.access(),
        upstream.refresh(),
        CLIENT_SECRET.to_owned(),
    ] {
        assert!(!secret.contains(&plain) && !fields.contains(&plain));
    }
    let fields: Value = serde_json::from_str(&fields).expect("fields JSON");
    let expires_at = fields["expires_at"].as_i64().expect("expires_at");
    assert!(expires_at > unix_s() + 3000, "{fields}");
}

async fn concurrent_invocations_refresh_once(db: Db) {
    let (upstream, _server, options) = upstream().await;
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let (editor, connection) = expired_connection(&server).await;
    let body = json!({"connection": connection, "input": {}});
    let replies =
        futures::future::join_all((0..20).map(|_| server.post(INVOKE, &editor, body.clone())))
            .await;
    for reply in &replies {
        assert_whoami(reply.status, &reply.body, &reply.text);
    }
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    assert_stored_encrypted(&server, &upstream).await;

    // The stored token is fresh now: no further refresh.
    let reply = server.post(INVOKE, &editor, body).await;
    assert_whoami(reply.status, &reply.body, &reply.text);
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    let shown = server
        .get(&format!("/v1/connections/{connection}"), &editor)
        .await;
    assert!(!shown.text.contains(&upstream.access()), "{}", shown.text);
    assert!(!shown.text.contains(&upstream.refresh()), "{}", shown.text);
}

async fn failed_refresh_is_an_auth_problem_without_secrets(db: Db) {
    let (upstream, _server, options) = upstream().await;
    upstream.fail.store(true, Ordering::SeqCst);
    let clock = ManualClock::new(airlock::store::now_ms());
    let Some(server) =
        TestServer::start_clocked(db, options, |_| {}, Some(Arc::new(clock.clone()))).await
    else {
        return;
    };
    let (editor, connection) = expired_connection(&server).await;
    let body = json!({"connection": connection, "input": {}});
    // Those queued behind the failed refresh share its answer instead of retrying it.
    let replies =
        futures::future::join_all((0..5).map(|_| server.post(INVOKE, &editor, body.clone()))).await;
    for reply in &replies {
        assert_problem(reply, 502, "credential-refresh-failed");
        let detail = reply.body["detail"].as_str().expect("detail");
        assert!(detail.contains("invalid_grant"), "{detail}");
        for secret in [CLIENT_SECRET, FIRST_REFRESH, STALE_ACCESS] {
            assert!(!reply.text.contains(secret), "{}", reply.text);
        }
    }
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);

    // A broken connection invoked in a loop does not hammer its token endpoint: until the
    // back-off ends, every invocation fails at once with the remembered cause.
    upstream.fail.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        let reply = server.post(INVOKE, &editor, body.clone()).await;
        assert_problem(&reply, 502, "credential-refresh-failed");
        let detail = reply.body["detail"].as_str().expect("detail");
        assert!(detail.contains("next attempt"), "{detail}");
    }
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    // The refresh comes after run admission: each of those invocations was charged, so a
    // broken connection meets the hourly quota like any other.
    let usage = server.get("/v1/usage", &editor).await;
    assert_eq!(usage.body["runs_this_hour"], json!(8), "{}", usage.text);

    // The lease was released: once the back-off has passed, the next invocation refreshes.
    clock.advance_ms(airlock::pipeline::BACKOFF_BASE_MS);
    let reply = server
        .post(
            INVOKE,
            &editor,
            json!({"connection": connection, "input": {}}),
        )
        .await;
    assert_whoami(reply.status, &reply.body, &reply.text);
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 2);
}

/// The guest's answer to a 401 it was given: its own `auth` error.
fn assert_guest_saw_401(reply: &crate::api_support::Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["ok"], json!(false), "{}", reply.text);
    assert_eq!(
        reply.body["error"]["kind"],
        json!("connector_error"),
        "{}",
        reply.text
    );
    assert_eq!(
        reply.body["error"]["connector_kind"],
        json!("auth"),
        "{}",
        reply.text
    );
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("401")),
        "{}",
        reply.text
    );
}

async fn a_401_is_refreshed_in_the_gate_and_the_request_resent(db: Db) {
    let (upstream, _server, options) = upstream().await;
    upstream.echo.store(true, Ordering::SeqCst);
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let (editor, connection) = revoked_connection(&server).await;
    let body = json!({"connection": connection, "input": {}});
    let reply = server.post(INVOKE, &editor, body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // The API saw the new token; the guest sees it scrubbed.
    assert_eq!(
        reply.body["output"],
        json!({"user": "alice", "authorization": "Bearer ***"}),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains(&upstream.access()), "{}", reply.text);
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    // The 401 and the retry: two requests against the tenant's limits.
    assert_eq!(
        reply.body["stats"]["outbound_requests"],
        json!(2),
        "{}",
        reply.text
    );
    assert_stored_encrypted(&server, &upstream).await;

    // The stored token is the new one: the next invocation needs no refresh and no retry.
    let reply = server.post(INVOKE, &editor, body).await;
    assert_eq!(reply.body["stats"]["outbound_requests"], json!(1));
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
}

async fn concurrent_401s_refresh_once(db: Db) {
    let (upstream, _server, options) = upstream().await;
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let (editor, connection) = revoked_connection(&server).await;
    let body = json!({"connection": connection, "input": {}});
    let replies =
        futures::future::join_all((0..20).map(|_| server.post(INVOKE, &editor, body.clone())))
            .await;
    for reply in &replies {
        assert_whoami(reply.status, &reply.body, &reply.text);
    }
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    assert_stored_encrypted(&server, &upstream).await;
}

async fn an_upstream_that_always_401s_gets_one_refresh_and_no_loop(db: Db) {
    let (upstream, _server, options) = upstream().await;
    upstream.reject_all.store(true, Ordering::SeqCst);
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let (editor, connection) = revoked_connection(&server).await;
    let reply = server
        .post(
            INVOKE,
            &editor,
            json!({"connection": connection, "input": {}}),
        )
        .await;
    assert_guest_saw_401(&reply);
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(
        reply.body["stats"]["outbound_requests"],
        json!(2),
        "{}",
        reply.text
    );
}

async fn a_failed_refresh_after_a_401_gives_the_guest_the_401(db: Db) {
    let (upstream, _server, options) = upstream().await;
    upstream.fail.store(true, Ordering::SeqCst);
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let (editor, connection) = revoked_connection(&server).await;
    let reply = server
        .post(
            INVOKE,
            &editor,
            json!({"connection": connection, "input": {}}),
        )
        .await;
    assert_guest_saw_401(&reply);
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(reply.body["stats"]["outbound_requests"], json!(1));
    for secret in [CLIENT_SECRET, FIRST_REFRESH, STALE_ACCESS] {
        assert!(!reply.text.contains(secret), "{}", reply.text);
    }
}

async fn a_token_host_outside_the_tenant_policy_is_never_called(db: Db) {
    let (upstream, _server, options) = upstream().await;
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let (editor, expired) = expired_connection(&server).await;
    // The API is allowed, the token endpoint is not.
    let limits = json!({"allowed_hosts": ["api.example.test"]});
    let put = server
        .put("/v1/tenants/acme/limits", &server.operator(), limits)
        .await;
    assert_eq!(put.status, 200, "{}", put.text);

    // Expired: the refresh before the invocation is refused, as a failed refresh is.
    let reply = server
        .post(INVOKE, &editor, json!({"connection": expired, "input": {}}))
        .await;
    assert_problem(&reply, 502, "credential-refresh-failed");
    let detail = reply.body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("host auth.example.test is not allowed by the tenant's outbound policy"),
        "{detail}"
    );

    // Revoked: the refresh after the 401 is refused, and the guest gets the 401.
    let admin = server.token(Some("acme"), Role::Admin);
    let created = server
        .post(
            "/v1/connections",
            &admin,
            json!({
                "connector": "oauth",
                "name": "bob",
                "credential": {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "refresh_token": FIRST_REFRESH,
                    "access_token": STALE_ACCESS,
                    "expires_at": unix_s() + 3600,
                },
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let revoked = created.body["id"].as_str().expect("id");
    let reply = server
        .post(INVOKE, &editor, json!({"connection": revoked, "input": {}}))
        .await;
    assert_guest_saw_401(&reply);
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 0);
}

async fn the_refresh_sends_the_manifests_scopes(db: Db) {
    let (upstream, _server, options) = upstream().await;
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let (editor, connection) = expired_connection(&server).await;
    let reply = server
        .post(
            INVOKE,
            &editor,
            json!({"connection": connection, "input": {}}),
        )
        .await;
    assert_whoami(reply.status, &reply.body, &reply.text);
    let form = upstream.last_form.lock().expect("lock").clone();
    // As the oauth guest's manifest declares them, space-separated.
    assert_eq!(
        form.get("scope").map(String::as_str),
        Some("profile email:read")
    );
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
}

on_both_databases!(
    concurrent_invocations_refresh_once,
    failed_refresh_is_an_auth_problem_without_secrets,
    a_401_is_refreshed_in_the_gate_and_the_request_resent,
    concurrent_401s_refresh_once,
    an_upstream_that_always_401s_gets_one_refresh_and_no_loop,
    a_failed_refresh_after_a_401_gives_the_guest_the_401,
    a_token_host_outside_the_tenant_policy_is_never_called,
    the_refresh_sends_the_manifests_scopes,
    a_refresh_in_flight_at_shutdown_finishes_and_is_stored,
);

/// A client that gives up mid-refresh, then a graceful shutdown: the refresh (whose endpoint
/// has already rotated the refresh token) still completes and is written before the database
/// closes, because the pipeline tracks it and shutdown waits for it.
async fn a_refresh_in_flight_at_shutdown_finishes_and_is_stored(db: Db) {
    let (upstream, _server, options) = upstream().await;
    let Some(mut server) = TestServer::start_with(db, options).await else {
        return;
    };
    let (editor, connection) = expired_connection(&server).await;
    let url = format!("{}{INVOKE}", server.base);
    let request = tokio::spawn(
        reqwest::Client::new()
            .post(url)
            .bearer_auth(&editor)
            .header("content-type", "application/json")
            .body(json!({"connection": connection, "input": {}}).to_string())
            .send(),
    );
    // The token endpoint has the request (it answers 200 ms later): the client goes away.
    while upstream.refreshes.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    request.abort();
    server.shut_down();
    (&mut server.serving)
        .await
        .expect("server task")
        .expect("served");
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    // The rotated tokens reached the row before the pool closed.
    assert_stored_encrypted(&server, &upstream).await;
}

/// A second `airlock serve` on the first one's PostgreSQL database and key files, sharing
/// nothing in memory with it. Returns its base URL.
async fn second_service(
    first: &TestServer,
    mut options: RuntimeOptions,
    shutdown: &CancellationToken,
) -> String {
    let mut config = Config::dev(first.dir.path().join("data"));
    config.database_url = Some(first.database_url.clone());
    options.engine.pool_size = 8;
    let service = config
        .start_service(options)
        .await
        .expect("second service starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(service.serve(listener, shutdown.clone()));
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_on_one_postgres_refresh_once() {
    two_services_refresh_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_on_one_postgres_refresh_once_after_401s() {
    two_services_refresh_once(true).await;
}

/// Ten invocations on each of two services, of one connection whose token has expired, or
/// (`revoked`) is rejected by the API before its expiry: one refresh in all.
async fn two_services_refresh_once(revoked: bool) {
    let (upstream, _server, options) = upstream().await;
    let Some(first) = TestServer::start_with(Db::Postgres, options.clone()).await else {
        return;
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let second = second_service(&first, options, &shutdown).await;
    let (editor, connection) = if revoked {
        revoked_connection(&first).await
    } else {
        expired_connection(&first).await
    };
    let body = json!({"connection": connection, "input": {}});
    let client = reqwest::Client::new();
    let on_second = |body: Value| {
        let request = client
            .post(format!("{second}{INVOKE}"))
            .bearer_auth(&editor)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            (status, text)
        }
    };
    let (first_replies, second_replies) = tokio::join!(
        futures::future::join_all((0..10).map(|_| first.post(INVOKE, &editor, body.clone()))),
        futures::future::join_all((0..10).map(|_| on_second(body.clone()))),
    );
    for reply in &first_replies {
        assert_whoami(reply.status, &reply.body, &reply.text);
    }
    for (status, text) in &second_replies {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        assert_whoami(*status, &body, text);
    }
    assert_eq!(upstream.refreshes.load(Ordering::SeqCst), 1);
    assert_stored_encrypted(&first, &upstream).await;
}
