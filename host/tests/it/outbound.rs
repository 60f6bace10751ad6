//! The outbound gate as guests meet it: deny-by-default destinations, request caps, and the
//! credential that reaches the upstream but never the guest.

use airlock::outbound::Credential;
use airlock::runtime::{ErrorKind, InvokeRequest, Runtime, TenantLimits};
use airlock::secrets::Secret;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::json;

use crate::support::{Server, error_kind, hostile, options_reaching, run, runtime};

async fn fetch(rt: &Runtime, url: &str) -> airlock::runtime::InvokeOutcome {
    let guest = hostile(rt).await;
    run(
        rt,
        &guest,
        "fetch",
        json!({"url": url}),
        TenantLimits::default(),
    )
    .await
}

#[tokio::test]
async fn with_default_settings_private_and_metadata_addresses_are_denied() {
    let rt = runtime();
    for url in [
        "https://127.0.0.1/",
        "https://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/",
        "https://localhost/",
    ] {
        let outcome = fetch(&rt, url).await;
        assert_eq!(
            error_kind(&outcome),
            Some(ErrorKind::HttpDenied),
            "{url}: {:?}",
            outcome.result
        );
        assert_eq!(outcome.stats.limit_hit, Some(ErrorKind::HttpDenied));
    }
}

#[tokio::test]
async fn a_declared_host_resolving_to_loopback_is_denied_without_a_connection() {
    let server = Server::start(Router::new().route("/", get(|| async { "hello" }))).await;
    // rebind.example.test is declared by the guest and resolves to the loopback server, but
    // the operator allowed no private range: the gate must refuse after resolution.
    let mut opts = options_reaching(server.addr, &["rebind.example.test"]);
    opts.outbound.allowed_private_ranges.clear();
    let rt = Runtime::new(opts).expect("runtime");
    let outcome = fetch(&rt, &server.url("rebind.example.test", "/")).await;
    assert_eq!(
        error_kind(&outcome),
        Some(ErrorKind::HttpDenied),
        "{:?}",
        outcome.result
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn the_same_request_succeeds_when_the_operator_allows_the_range() {
    // Control for the tests above: the server is reachable once loopback is allowed.
    let server = Server::start(Router::new().route("/", get(|| async { "hello" }))).await;
    let rt = Runtime::new(options_reaching(server.addr, &["api.example.test"])).expect("runtime");
    let outcome = fetch(&rt, &server.url("api.example.test", "/")).await;
    let output = outcome.result.expect("reachable");
    assert_eq!(output["status"], json!(200));
    assert_eq!(output["body"], json!("hello"));
    assert_eq!(server.hits(), 1);
    assert_eq!(outcome.stats.outbound_requests, 1);
}

#[tokio::test]
async fn undeclared_hosts_and_hosts_outside_the_tenant_policy_are_denied() {
    let server = Server::start(Router::new().route("/", get(|| async { "hello" }))).await;
    let rt = Runtime::new(options_reaching(
        server.addr,
        &["api.example.test", "evil.example.test"],
    ))
    .expect("runtime");
    let undeclared = fetch(&rt, &server.url("evil.example.test", "/")).await;
    assert_eq!(error_kind(&undeclared), Some(ErrorKind::HttpDenied));

    let guest = hostile(&rt).await;
    let policy = TenantLimits {
        allowed_hosts: vec!["rebind.example.test".into()],
        ..TenantLimits::default()
    };
    let outside_policy = run(
        &rt,
        &guest,
        "fetch",
        json!({"url": server.url("api.example.test", "/")}),
        policy,
    )
    .await;
    assert_eq!(error_kind(&outside_policy), Some(ErrorKind::HttpDenied));
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn an_outbound_flood_stops_at_the_request_cap() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        max_requests: 5,
        ..TenantLimits::default()
    };
    let outcome = run(&rt, &guest, "flood", json!({"count": 100}), limits).await;
    assert_eq!(
        error_kind(&outcome),
        Some(ErrorKind::OutboundLimit),
        "{:?}",
        outcome.result
    );
    assert!(outcome.stats.outbound_requests <= 5, "{:?}", outcome.stats);
}

#[tokio::test]
async fn a_response_past_the_cap_never_reaches_the_guest() {
    let big = "x".repeat(256 * 1024);
    let server = Server::start(Router::new().route("/big", get(move || async move { big }))).await;
    let rt = Runtime::new(options_reaching(server.addr, &["api.example.test"])).expect("runtime");
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        max_response_body_bytes: 64 * 1024,
        ..TenantLimits::default()
    };
    let outcome = run(
        &rt,
        &guest,
        "fetch",
        json!({"url": server.url("api.example.test", "/big")}),
        limits,
    )
    .await;
    assert_eq!(
        error_kind(&outcome),
        Some(ErrorKind::OutboundLimit),
        "{:?}",
        outcome.result
    );
    assert!(
        outcome.stats.outbound_bytes_in <= 64 * 1024 + 16 * 1024,
        "{:?}",
        outcome.stats
    );
}

#[tokio::test]
async fn the_timeout_covers_time_spent_in_host_calls() {
    let server = Server::start(Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            "late"
        }),
    ))
    .await;
    let rt = Runtime::new(options_reaching(server.addr, &["api.example.test"])).expect("runtime");
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        timeout_ms: 300,
        request_timeout_ms: 60_000,
        ..TenantLimits::default()
    };
    let outcome = run(
        &rt,
        &guest,
        "fetch",
        json!({"url": server.url("api.example.test", "/slow")}),
        limits,
    )
    .await;
    assert_eq!(
        error_kind(&outcome),
        Some(ErrorKind::Timeout),
        "{:?}",
        outcome.result
    );
}

const CANARY: &str = "canary-7d1e9b2f-secret-value";

/// Echoes the Authorization header back in the body and in a response header, as a careless
/// or malicious upstream might.
fn echo_server() -> Router {
    Router::new().route(
        "/echo",
        get(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            ([("x-echo-auth", auth.clone())], format!("you sent: {auth}"))
        }),
    )
}

#[tokio::test]
async fn the_credential_reaches_the_upstream_but_never_the_guest_its_logs_or_output() {
    let server = Server::start(echo_server()).await;
    let rt = Runtime::new(options_reaching(server.addr, &["api.example.test"])).expect("runtime");
    let guest = hostile(&rt).await;
    let request = InvokeRequest::action(
        "t1",
        "echo_auth",
        json!({"url": server.url("api.example.test", "/echo")}).to_string(),
    )
    .with_credential(Credential::ApiKey(Secret::new(CANARY)));
    let outcome = rt.invoke(&guest, request).await;
    let output = outcome.result.as_ref().expect("echo");
    let everything = format!("{output} {:?}", outcome.logs);
    assert!(
        everything.contains("Bearer ***"),
        "the upstream saw the credential: {everything}"
    );
    assert!(
        !everything.contains(CANARY),
        "the secret leaked to the guest: {everything}"
    );
    assert!(!format!("{outcome:?}").contains(CANARY));
    assert_eq!(server.hits(), 1);
}
