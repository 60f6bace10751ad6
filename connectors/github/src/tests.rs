//! The GitHub connector against `MockHost` with canned GitHub answers.

use airlock_sdk::HttpError;
use airlock_sdk::testing::{MockHost, MockResponse};
use serde_json::{Value, json};

use super::*;

const ISSUES_URL: &str = "https://api.github.com/repos/octo/hello/issues";

fn api_issue(number: u64) -> Value {
    json!({
        "number": number,
        "title": format!("Issue {number}"),
        "state": "open",
        "html_url": format!("https://github.com/octo/hello/issues/{number}"),
        "user": {"login": "octocat", "id": 1},
        "labels": [{"id": 3, "name": "bug", "color": "f00"}, "help wanted"],
        "body": "ignored",
        "comments": 2
    })
}

fn err(result: Result<Value, ConnectorError>) -> ConnectorError {
    match result {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

#[test]
fn manifest_declares_bearer_auth_for_api_github_com() {
    let m = MockHost::new().manifest::<Github>();
    assert_eq!(m["name"], "github");
    assert_eq!(m["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        m["auth"],
        json!({"type": "api_key", "in": "header", "name": "Authorization", "prefix": "Bearer "})
    );
    assert_eq!(m["hosts"], json!(["api.github.com"]));
    let list = &m["actions"][0];
    assert_eq!(list["name"], "list_issues");
    assert_eq!(list["timeout_ms"], 10_000);
    assert_eq!(list["retry"]["max_attempts"], 3);
    assert_eq!(list["input_schema"]["required"], json!(["owner", "repo"]));
    assert_eq!(
        list["input_schema"]["properties"]["owner"]["pattern"],
        NAME_PATTERN
    );
    assert_eq!(
        list["input_schema"]["properties"]["per_page"]["maximum"],
        100
    );
    let create = &m["actions"][1];
    assert_eq!(create["name"], "create_issue");
    assert!(create.get("retry").is_none());
    assert_eq!(
        create["input_schema"]["required"],
        json!(["owner", "repo", "title"])
    );
}

#[test]
fn list_issues_sends_filters_and_github_headers() {
    let host = MockHost::new().on_get(ISSUES_URL, MockResponse::json(200, json!([])));
    let out = host.invoke::<Github>(
        "list_issues",
        json!({"owner": "octo", "repo": "hello", "state": "all", "labels": ["bug", "p 1"], "per_page": 50, "page": 2}),
    );
    assert_eq!(out, Ok(json!([])));
    let req = &host.requests()[0];
    assert_eq!(req.method, "GET");
    assert_eq!(
        req.url,
        format!("{ISSUES_URL}?state=all&labels=bug%2Cp%201&per_page=50&page=2")
    );
    assert_eq!(req.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(req.header("user-agent"), Some("airlock-connector-github"));
    // The credential is the host's business.
    assert_eq!(req.header("authorization"), None);
}

#[test]
fn list_issues_without_filters_sends_no_query() {
    let host = MockHost::new().on_get(ISSUES_URL, MockResponse::json(200, json!([])));
    let out = host.invoke::<Github>("list_issues", json!({"owner": "octo", "repo": "hello"}));
    assert_eq!(out, Ok(json!([])));
    assert_eq!(host.requests()[0].url, ISSUES_URL);
}

#[test]
fn list_issues_flattens_github_issues() {
    let mut pr = api_issue(2);
    pr["pull_request"] = json!({"url": "https://api.github.com/repos/octo/hello/pulls/2"});
    pr["user"] = Value::Null;
    let host = MockHost::new().on_get(
        ISSUES_URL,
        MockResponse::json(200, json!([api_issue(1), pr])),
    );
    let out = host.invoke::<Github>("list_issues", json!({"owner": "octo", "repo": "hello"}));
    assert_eq!(
        out,
        Ok(json!([
            {
                "number": 1,
                "title": "Issue 1",
                "state": "open",
                "html_url": "https://github.com/octo/hello/issues/1",
                "user": "octocat",
                "labels": ["bug", "help wanted"],
                "is_pull_request": false
            },
            {
                "number": 2,
                "title": "Issue 2",
                "state": "open",
                "html_url": "https://github.com/octo/hello/issues/2",
                "user": null,
                "labels": ["bug", "help wanted"],
                "is_pull_request": true
            }
        ]))
    );
}

#[test]
fn names_that_would_bend_the_url_are_rejected_before_sending() {
    let host = MockHost::new();
    for (owner, repo) in [("..", "x"), ("octo", "a/b"), ("", "x"), ("octo", "x?y")] {
        let e = err(host.invoke::<Github>("list_issues", json!({"owner": owner, "repo": repo})));
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{owner}/{repo}");
    }
    assert!(host.requests().is_empty());
}

#[test]
fn create_issue_posts_only_the_given_fields() {
    let host = MockHost::new().on_post(ISSUES_URL, MockResponse::json(201, api_issue(7)));
    let out = host.invoke::<Github>(
        "create_issue",
        json!({"owner": "octo", "repo": "hello", "title": "Broken", "labels": ["bug"]}),
    );
    assert_eq!(out.map(|issue| issue["number"].clone()), Ok(json!(7)));
    let req = &host.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, ISSUES_URL);
    assert_eq!(
        req.body_json(),
        Some(json!({"title": "Broken", "labels": ["bug"]}))
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
}

#[test]
fn create_issue_rejects_a_blank_title() {
    let e = err(MockHost::new().invoke::<Github>(
        "create_issue",
        json!({"owner": "octo", "repo": "hello", "title": "  "}),
    ));
    assert_eq!(e.kind, ErrorKind::InvalidInput);
}

#[test]
fn github_errors_map_to_connector_errors() {
    let host = MockHost::new()
        .on_get(
            "https://api.github.com/repos/octo/missing/",
            MockResponse::json(404, json!({"message": "Not Found"})),
        )
        .on_post(
            ISSUES_URL,
            MockResponse::json(422, json!({"message": "Validation Failed"})),
        )
        .on_get(
            "https://api.github.com/repos/octo/limited/",
            MockResponse::json(403, json!({"message": "API rate limit exceeded"}))
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", "1700000000"),
        )
        .on_get(
            "https://api.github.com/repos/octo/forbidden/",
            MockResponse::json(403, json!({"message": "Resource not accessible"})),
        );
    let list =
        |repo: &str| host.invoke::<Github>("list_issues", json!({"owner": "octo", "repo": repo}));

    let e = err(list("missing"));
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("Not Found"), "{e}");
    let e = err(list("limited"));
    assert_eq!((e.kind, e.retryable), (ErrorKind::RateLimited, true));
    assert!(e.message.contains("1700000000"), "{e}");
    assert_eq!(err(list("forbidden")).kind, ErrorKind::Auth);
    let e = err(host.invoke::<Github>(
        "create_issue",
        json!({"owner": "octo", "repo": "hello", "title": "x"}),
    ));
    assert_eq!(e.kind, ErrorKind::InvalidInput);
}

#[test]
fn transport_failures_propagate() {
    let host = MockHost::new().on_get(
        ISSUES_URL,
        MockResponse::error(HttpError::Denied(
            "tenant policy forbids api.github.com".into(),
        )),
    );
    let e = err(host.invoke::<Github>("list_issues", json!({"owner": "octo", "repo": "hello"})));
    assert_eq!(e.kind, ErrorKind::HttpDenied);
}

#[test]
fn test_connection_asks_for_the_user() {
    let host = MockHost::new().on_get(
        "https://api.github.com/user",
        MockResponse::json(200, json!({"login": "octocat", "id": 1})),
    );
    assert_eq!(host.test_connection::<Github>(), Ok(()));
    let req = &host.requests()[0];
    assert_eq!(
        (req.method.as_str(), req.url.as_str()),
        ("GET", "https://api.github.com/user")
    );
    assert_eq!(host.logs()[0].message, "authenticated as octocat");
}

#[test]
fn test_connection_maps_401_to_auth() {
    let host = MockHost::new().on_get(
        "https://api.github.com/user",
        MockResponse::json(401, json!({"message": "Bad credentials"})),
    );
    let e = match host.test_connection::<Github>() {
        Ok(()) => panic!("a rejected token passed test_connection"),
        Err(e) => e,
    };
    assert_eq!((e.kind, e.retryable), (ErrorKind::Auth, false));
    assert!(e.message.contains("Bad credentials"), "{e}");
}
