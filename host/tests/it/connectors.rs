//! The example connectors, end to end: real components, real HTTPS to local fakes.

use std::sync::{Arc, Mutex};

use airlock::outbound::Credential;
use airlock::runtime::{ErrorKind, InvokeRequest, Runtime, TenantLimits};
use airlock::secrets::Secret;
use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

use crate::support::{Server, error_kind, load, options_for_tls, options_reaching, run, runtime};

const TOKEN: &str = "ghp_test_token_5b1c0de";

/// The parts of api.github.com the connector uses. Requests without the bearer token get 401,
/// like the real API; every authorized request body is recorded.
fn fake_github(seen: Arc<Mutex<Vec<Value>>>) -> Router {
    fn authorized(headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"))
    }
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials"})),
        )
    };
    Router::new()
        .route(
            "/user",
            get(move |headers: HeaderMap| async move {
                if authorized(&headers) { Ok(Json(json!({"login": "octocat"}))) } else { Err(unauthorized()) }
            }),
        )
        .route(
            "/repos/{owner}/{repo}/issues",
            get(move |Path((owner, repo)): Path<(String, String)>, headers: HeaderMap| async move {
                if !authorized(&headers) {
                    return Err(unauthorized());
                }
                Ok(Json(json!([
                    {"number": 1, "title": "First", "state": "open",
                     "html_url": format!("https://github.com/{owner}/{repo}/issues/1"),
                     "user": {"login": "octocat"}, "labels": [{"name": "bug"}]},
                    {"number": 2, "title": "A PR", "state": "open",
                     "html_url": format!("https://github.com/{owner}/{repo}/pull/2"),
                     "user": null, "labels": [], "pull_request": {}}
                ])))
            })
            .post(move |headers: HeaderMap, Json(body): Json<Value>| {
                let seen = seen.clone();
                async move {
                    if !authorized(&headers) {
                        return Err(unauthorized());
                    }
                    let title = body["title"].clone();
                    seen.lock().expect("lock").push(body);
                    Ok((StatusCode::CREATED, Json(json!({"number": 3, "title": title, "state": "open",
                        "html_url": "https://github.com/o/r/issues/3", "user": {"login": "octocat"}, "labels": []}))))
                }
            }),
        )
}

async fn github() -> (
    Runtime,
    airlock::runtime::SharedComponent,
    Server,
    Arc<Mutex<Vec<Value>>>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = Server::start_tls(fake_github(seen.clone()), &["api.github.com"]).await;
    let rt = Runtime::new(options_for_tls(&server, &["api.github.com"])).expect("runtime");
    let component = load(&rt, airlock_test_artifacts::CONNECTOR_GITHUB).await;
    (rt, component, server, seen)
}

fn with_token(request: InvokeRequest) -> InvokeRequest {
    request.with_credential(Credential::ApiKey(Secret::new(TOKEN)))
}

#[tokio::test]
async fn github_lists_and_creates_issues_over_https_with_the_token_added_by_the_host() {
    let (rt, github, server, seen) = github().await;
    let list = rt
        .invoke(
            &github,
            with_token(InvokeRequest::action(
                "t1",
                "list_issues",
                json!({"owner": "o", "repo": "r"}).to_string(),
            )),
        )
        .await;
    let issues = list.result.expect("list_issues");
    assert_eq!(issues[0]["number"], json!(1));
    assert_eq!(issues[0]["labels"], json!(["bug"]));
    assert_eq!(issues[1]["is_pull_request"], json!(true));
    assert_eq!(list.stats.outbound_requests, 1);

    let create = rt
        .invoke(
            &github,
            with_token(InvokeRequest::action(
                "t1",
                "create_issue",
                json!({"owner": "o", "repo": "r", "title": "New", "body": "b"}).to_string(),
            )),
        )
        .await;
    assert_eq!(create.result.expect("create_issue")["number"], json!(3));
    assert_eq!(seen.lock().expect("lock")[0]["title"], json!("New"));
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn github_test_connection_reports_a_bad_token_as_an_auth_error() {
    let (rt, github, _server, _) = github().await;
    let ok = rt
        .invoke(&github, with_token(InvokeRequest::test_connection("t1")))
        .await;
    assert!(ok.result.is_ok(), "{:?}", ok.result);

    let bad = InvokeRequest::test_connection("t1")
        .with_credential(Credential::ApiKey(Secret::new("wrong")));
    let outcome = rt.invoke(&github, bad).await;
    let error = outcome.result.expect_err("401");
    assert_eq!(error.kind, ErrorKind::ConnectorError);
    assert_eq!(error.connector_kind.as_deref(), Some("auth"));
    assert!(!error.retryable);
}

#[tokio::test]
async fn github_input_is_validated_against_the_generated_schema() {
    let (rt, github, server, _) = github().await;
    let outcome = run(
        &rt,
        &github,
        "list_issues",
        json!({"owner": "../etc", "repo": "r"}),
        TenantLimits::default(),
    )
    .await;
    let error = outcome.result.expect_err("pattern");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert_eq!(error.pointer.as_deref(), Some("/owner"));
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn transform_maps_json_without_any_network() {
    let rt = runtime();
    let transform = load(&rt, airlock_test_artifacts::CONNECTOR_TRANSFORM).await;
    let manifest = transform.manifest().manifest();
    assert!(manifest.hosts.is_empty());
    let input = json!({"data": {"user": {"login": "octocat"}, "n": [1, 2]},
        "mapping": {"who": "/user/login", "second": "/n/1", "missing": "/nope"}});
    let outcome = run(&rt, &transform, "map", input, TenantLimits::default()).await;
    assert_eq!(
        outcome.result.expect("map"),
        json!({"who": "octocat", "second": 2, "missing": null})
    );
    assert_eq!(outcome.stats.outbound_requests, 0);

    let strict = json!({"data": {}, "mapping": {"x": "/nope"}, "strict": true});
    let outcome = run(&rt, &transform, "map", strict, TenantLimits::default()).await;
    let error = outcome.result.expect_err("strict");
    assert_eq!(error.connector_kind.as_deref(), Some("invalid_input"));
}

#[tokio::test]
async fn http_connector_sends_a_request_and_parses_json_responses() {
    let server = Server::start(Router::new().route(
        "/things",
        get(|| async { Json(json!({"things": [1, 2, 3]})) }),
    ))
    .await;
    let rt =
        Runtime::new(options_reaching(server.addr, &["things.example.test"])).expect("runtime");
    let http = load(&rt, airlock_test_artifacts::CONNECTOR_HTTP).await;
    let input = json!({"method": "GET", "url": server.url("things.example.test", "/things")});
    let outcome = run(&rt, &http, "request", input, TenantLimits::default()).await;
    let output = outcome.result.expect("request");
    assert_eq!(output["status"], json!(200));
    assert_eq!(output["body"]["things"], json!([1, 2, 3]), "{output}");

    let denied = run(
        &rt,
        &http,
        "request",
        json!({"method": "GET", "url": "https://169.254.169.254/"}),
        TenantLimits::default(),
    )
    .await;
    assert_eq!(error_kind(&denied), Some(ErrorKind::HttpDenied));
}
