//! The example connectors of `connectors/declarative/` (GitHub, Slack, Stripe): each passes
//! the checks, and each action runs against a fake of its API that routes by method and path,
//! checks the request as that API reads it (URL, query, headers, body bytes) and answers as it
//! does, with pagination across pages and up to its cap, and the API's errors.

use std::collections::BTreeSet;
use std::path::Path;

use airlock_contract::ConnectorErrorKind;
use airlock_declarative::run::{Request, Response, RunError, Transport, run};
use airlock_declarative::{Compiled, compile_json};
use serde_json::{Value, json};

// ---- shared ----

/// A fake API: answers each request from a closure, records them all.
struct Api<F: FnMut(&Request) -> Response> {
    requests: Vec<Request>,
    answer: F,
}

impl<F: FnMut(&Request) -> Response> Transport for Api<F> {
    fn send(&mut self, request: Request) -> Result<Response, RunError> {
        let response = (self.answer)(&request);
        self.requests.push(request);
        Ok(response)
    }
}

fn api<F: FnMut(&Request) -> Response>(answer: F) -> Api<F> {
    Api {
        requests: Vec::new(),
        answer,
    }
}

impl<F: FnMut(&Request) -> Response> Api<F> {
    fn urls(&self) -> Vec<&str> {
        self.requests.iter().map(|r| r.url.as_str()).collect()
    }
}

/// An example as the host would take it: YAML or JSON text, parsed, then checked.
fn load(file: &str) -> Compiled {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../connectors/declarative")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let document: Value = if file.ends_with(".yaml") {
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"))
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"))
    };
    compile_json(&document.to_string()).unwrap_or_else(|e| panic!("{file} is refused: {e}"))
}

fn invoke(
    compiled: &Compiled,
    action: &str,
    input: Value,
    config: &Value,
    transport: &mut dyn Transport,
) -> Result<Value, RunError> {
    let plan = compiled
        .plans
        .get(action)
        .unwrap_or_else(|| panic!("no action `{action}`"));
    run(plan, &input, config, transport)
}

/// What `test-connection` runs: the definition's test call.
fn test_connection(compiled: &Compiled, transport: &mut dyn Transport) -> Result<Value, RunError> {
    let test = compiled.definition.test.as_ref().expect("a test call");
    invoke(
        compiled,
        &test.action,
        test.input.clone(),
        &json!({}),
        transport,
    )
}

fn fails(result: Result<Value, RunError>) -> RunError {
    match result {
        Ok(value) => panic!("expected an error, got {value}"),
        Err(error) => error,
    }
}

fn action_names(compiled: &Compiled) -> Vec<&str> {
    compiled.manifest["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["name"].as_str().expect("a name"))
        .collect()
}

fn action_spec<'m>(compiled: &'m Compiled, name: &str) -> &'m Value {
    compiled.manifest["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no action `{name}` in the manifest"))
}

fn json_response(status: u16, body: Value) -> Response {
    Response {
        status,
        headers: vec![(
            "Content-Type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        )],
        body: serde_json::to_vec(&body).expect("JSON"),
    }
}

fn with_header(mut response: Response, name: &str, value: &str) -> Response {
    response.headers.push((name.to_owned(), value.to_owned()));
    response
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The request's headers, names lowercased, sorted: what the API sees.
fn headers_of(request: &Request) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    headers.sort();
    headers
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    out.sort();
    out
}

fn body_text(request: &Request) -> &str {
    std::str::from_utf8(request.body.as_deref().expect("a body")).expect("UTF-8")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8")
}

/// Encodes as the runner does (RFC 3986 unreserved kept), for links the fakes write.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` below `origin`: its path and its decoded query pairs, in order.
fn split_url(url: &str, origin: &str) -> (String, Vec<(String, String)>) {
    let rest = url
        .strip_prefix(origin)
        .unwrap_or_else(|| panic!("{url} is not on {origin}"));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_owned(), query)
}

fn param<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A form body (`a=1&metadata[plan]=pro`) as decoded pairs.
fn form_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

// ---- GitHub ----

const GITHUB: &str = "https://api.github.com";
const ISSUES_URL: &str = "https://api.github.com/repos/octo/hello/issues";

/// The actions of the code connector: `connectors/github/src/lib.rs`, `Github::definition()`
/// (`Action::new("list_issues", ..)`, `Action::new("create_issue", ..)`).
const RUST_GITHUB_ACTIONS: &[&str] = &["list_issues", "create_issue"];

/// The code connector's auth (`Auth::api_key_header("Authorization").prefix("Bearer ")`), as
/// its manifest test (`connectors/github/src/tests.rs`) spells it.
fn rust_github_auth() -> Value {
    json!({"type": "api_key", "in": "header", "name": "Authorization", "prefix": "Bearer "})
}

fn github_issue(number: u64, state: &str, labels: &[&str]) -> Value {
    let labels: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"id": 208_045_946 + i, "node_id": "MDU6TGFiZWwyMDgwNDU5NDY=", "name": name,
                   "color": "f29513", "default": false, "description": null})
        })
        .collect();
    json!({
        "url": format!("https://api.github.com/repos/octo/hello/issues/{number}"),
        "id": 1_000_000 + number,
        "node_id": "I_kwDOA1b2c3",
        "number": number,
        "title": format!("Issue {number}"),
        "user": {"login": "octocat", "id": 1, "type": "User", "site_admin": false},
        "labels": labels,
        "state": state,
        "locked": false,
        "assignee": null,
        "comments": 2,
        "created_at": "2024-05-02T10:00:00Z",
        "html_url": format!("https://github.com/octo/hello/issues/{number}"),
        "body": "It does not work.",
        "author_association": "OWNER"
    })
}

fn github_error(status: u16, message: &str, documentation_url: &str) -> Response {
    json_response(
        status,
        json!({"message": message, "documentation_url": documentation_url, "status": status.to_string()}),
    )
}

/// GitHub as far as these actions go: the `octo/hello` repository with `issues` (newest
/// first), issue creation, `/user`. Checks the headers every request must carry.
fn github_api(issues: Vec<Value>) -> impl FnMut(&Request) -> Response {
    move |request| {
        assert_eq!(
            header(request, "accept"),
            Some("application/vnd.github+json")
        );
        assert_eq!(
            header(request, "user-agent"),
            Some("airlock-connector-github")
        );
        assert_eq!(header(request, "x-github-api-version"), Some("2022-11-28"));
        // The credential is the host's business.
        assert_eq!(header(request, "authorization"), None);
        let (path, query) = split_url(&request.url, GITHUB);
        match (request.method.as_str(), path.as_str()) {
            ("GET", "/repos/octo/hello/issues" | "/repositories/1296269/issues") => {
                assert_eq!(request.body, None);
                assert_eq!(header(request, "content-type"), None);
                github_list(&issues, &query)
            }
            ("POST", "/repos/octo/hello/issues") => {
                assert_eq!(header(request, "content-type"), Some("application/json"));
                let body: Value = serde_json::from_slice(request.body.as_deref().expect("a body"))
                    .expect("a JSON body");
                let Some(title) = body["title"].as_str() else {
                    return github_error(
                        422,
                        "Validation Failed",
                        "https://docs.github.com/rest/issues/issues#create-an-issue",
                    );
                };
                let labels: Vec<&str> = body["labels"]
                    .as_array()
                    .map(|l| l.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut issue = github_issue(7, "open", &labels);
                issue["title"] = json!(title);
                issue["body"] = body["body"].clone();
                json_response(201, issue)
            }
            ("GET", "/user") => json_response(
                200,
                json!({"login": "octocat", "id": 1, "type": "User", "name": "The Octocat"}),
            ),
            _ => github_error(404, "Not Found", "https://docs.github.com/rest"),
        }
    }
}

/// One page of issues, with GitHub's `Link` header (prev, next, last, first).
fn github_list(issues: &[Value], query: &[(String, String)]) -> Response {
    let state = param(query, "state").unwrap_or("open");
    let labels: Vec<&str> = param(query, "labels")
        .map(|l| l.split(',').collect())
        .unwrap_or_default();
    let per_page: usize = param(query, "per_page").map_or(30, |p| p.parse().expect("a number"));
    let page: usize = param(query, "page").map_or(1, |p| p.parse().expect("a number"));
    let matching: Vec<&Value> = issues
        .iter()
        .filter(|i| state == "all" || i["state"] == state)
        .filter(|i| {
            labels.iter().all(|l| {
                i["labels"]
                    .as_array()
                    .expect("labels")
                    .iter()
                    .any(|x| x["name"] == *l)
            })
        })
        .collect();
    let last = matching.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|i| (*i).clone())
        .collect();
    let link_to = |n: usize| {
        let mut q: Vec<String> = query
            .iter()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        q.push(format!("page={n}"));
        format!("<{GITHUB}/repositories/1296269/issues?{}>", q.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link_to(1)));
    }
    let response = with_header(
        json_response(200, Value::Array(items)),
        "X-RateLimit-Remaining",
        "4999",
    );
    if links.is_empty() {
        response
    } else {
        with_header(response, "Link", &links.join(", "))
    }
}

/// `count` open issues, newest first.
fn open_issues(count: u64) -> Vec<Value> {
    (1..=count)
        .rev()
        .map(|n| github_issue(n, "open", &["bug"]))
        .collect()
}

fn numbers(output: &Value) -> Vec<u64> {
    output
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| i["number"].as_u64().expect("a number"))
        .collect()
}

#[test]
fn github_has_the_code_connectors_actions_auth_and_policies() {
    let github = load("github.json");
    let manifest = &github.manifest;
    assert_eq!(manifest["name"], "github");
    assert_eq!(manifest["auth"], rust_github_auth());
    assert_eq!(manifest["hosts"], json!(["api.github.com"]));
    // The code connector's actions, in order, plus the one the test call needs (a test call
    // can only name an action of the connector; the code connector calls GET /user directly).
    let test_action = &github.definition.test.as_ref().expect("a test call").action;
    assert_eq!(test_action, "get_authenticated_user");
    let names = action_names(&github);
    let mut expected: Vec<&str> = RUST_GITHUB_ACTIONS.to_vec();
    expected.push(test_action);
    assert_eq!(names, expected);

    let list = action_spec(&github, "list_issues");
    assert_eq!(list["timeout_ms"], 10_000);
    assert_eq!(
        list["retry"],
        json!({"max_attempts": 3, "initial_backoff_ms": 1000, "max_backoff_ms": 60000})
    );
    let input = &list["input_schema"];
    assert_eq!(input["required"], json!(["path"]));
    assert_eq!(
        input["properties"]["path"]["required"],
        json!(["owner", "repo"])
    );
    assert_eq!(
        input["properties"]["query"]["properties"]["per_page"]["maximum"],
        100
    );
    assert_eq!(
        input["properties"]["query"]["properties"]["state"]["enum"],
        json!(["open", "closed", "all"])
    );
    let create = action_spec(&github, "create_issue");
    assert_eq!(create["timeout_ms"], 10_000);
    assert!(create.get("retry").is_none(), "a retry could open it twice");
    assert_eq!(create["input_schema"]["required"], json!(["path", "body"]));
    assert_eq!(
        create["input_schema"]["properties"]["body"]["required"],
        json!(["title"])
    );
}

#[test]
fn github_list_issues_sends_filters_and_github_headers() {
    let github = load("github.json");
    let mut issues = open_issues(3);
    for issue in &mut issues {
        issue["labels"] = json!([{"name": "bug"}, {"name": "p 1"}]);
    }
    issues.push(github_issue(9, "closed", &["bug"]));
    let mut transport = api(github_api(issues));
    let output = invoke(
        &github,
        "list_issues",
        json!({
            "path": {"owner": "octo", "repo": "hello"},
            "query": {"state": "all", "labels": ["bug", "p 1"], "per_page": 2, "page": 2}
        }),
        &json!({}),
        &mut transport,
    )
    .expect("listed");
    // Page 2 of 2 of the three issues with both labels: the last one, no next link.
    assert_eq!(numbers(&output), vec![1]);
    assert_eq!(
        transport.urls(),
        vec![format!(
            "{ISSUES_URL}?state=all&labels=bug,p%201&per_page=2&page=2"
        )]
    );
    let request = &transport.requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(
        headers_of(request),
        pairs(&[
            ("accept", "application/vnd.github+json"),
            ("user-agent", "airlock-connector-github"),
            ("x-github-api-version", "2022-11-28"),
        ])
    );
    assert_eq!(request.body, None);
}

#[test]
fn github_list_issues_without_filters_sends_no_query() {
    let github = load("github.json");
    let mut transport = api(github_api(vec![]));
    let output = invoke(
        &github,
        "list_issues",
        json!({"path": {"owner": "octo", "repo": "hello"}}),
        &json!({}),
        &mut transport,
    )
    .expect("listed");
    assert_eq!(output, json!([]));
    assert_eq!(transport.urls(), vec![ISSUES_URL]);
}

#[test]
fn github_list_issues_follows_the_link_header_and_keeps_githubs_issue_shape() {
    let github = load("github.json");
    let mut issues = open_issues(7);
    issues[1]["pull_request"] = json!({"url": "https://api.github.com/repos/octo/hello/pulls/6"});
    issues[2]["user"] = Value::Null;
    issues.push(github_issue(100, "closed", &[]));
    let mut transport = api(github_api(issues));
    let output = invoke(
        &github,
        "list_issues",
        json!({"path": {"owner": "octo", "repo": "hello"}, "query": {"per_page": 3}}),
        &json!({}),
        &mut transport,
    )
    .expect("listed");
    assert_eq!(numbers(&output), vec![7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(
        transport.urls(),
        vec![
            format!("{ISSUES_URL}?per_page=3"),
            format!("{GITHUB}/repositories/1296269/issues?per_page=3&page=2"),
            format!("{GITHUB}/repositories/1296269/issues?per_page=3&page=3"),
        ]
    );
    // Not flattened as the code connector does: GitHub's objects as they come.
    let first = &output[0];
    assert_eq!(first["user"]["login"], "octocat");
    assert_eq!(first["labels"][0]["name"], "bug");
    assert_eq!(first["html_url"], "https://github.com/octo/hello/issues/7");
    assert!(first.get("pull_request").is_none());
    assert!(output[1].get("pull_request").is_some());
    assert_eq!(output[2]["user"], Value::Null);
}

#[test]
fn github_list_issues_reads_at_most_ten_pages() {
    let github = load("github.json");
    let input = json!({"path": {"owner": "octo", "repo": "hello"}, "query": {"per_page": 1}});

    // Ten pages: the last has no next link, so all of them are read.
    let mut transport = api(github_api(open_issues(10)));
    let output = invoke(
        &github,
        "list_issues",
        input.clone(),
        &json!({}),
        &mut transport,
    )
    .expect("ten pages fit");
    assert_eq!(numbers(&output), (1..=10).rev().collect::<Vec<_>>());
    assert_eq!(transport.requests.len(), 10);

    // Eleven: the tenth page still links to a next one; a partial list is not the whole.
    let mut transport = api(github_api(open_issues(11)));
    let error = fails(invoke(
        &github,
        "list_issues",
        input,
        &json!({}),
        &mut transport,
    ));
    assert_eq!(
        (error.kind, error.code.as_str(), error.retryable),
        (ConnectorErrorKind::Upstream, "pagination_max_pages", false)
    );
    assert_eq!(transport.requests.len(), 10);
    assert_eq!(
        transport.requests[9].url,
        format!("{GITHUB}/repositories/1296269/issues?per_page=1&page=10")
    );
}

#[test]
fn github_list_issues_keeps_names_from_bending_the_url() {
    let github = load("github.json");
    let mut transport = api(github_api(open_issues(1)));
    for (owner, repo) in [("..", "hello"), ("octo", ".")] {
        let error = fails(invoke(
            &github,
            "list_issues",
            json!({"path": {"owner": owner, "repo": repo}}),
            &json!({}),
            &mut transport,
        ));
        assert_eq!(
            (error.kind, error.code.as_str()),
            (ConnectorErrorKind::InvalidInput, "invalid_value"),
            "{owner}/{repo}"
        );
    }
    assert!(transport.requests.is_empty());
    // The schema refuses these before the runner sees them; were one to pass, it stays one
    // encoded segment (and GitHub knows no such repository).
    let error = fails(invoke(
        &github,
        "list_issues",
        json!({"path": {"owner": "octo", "repo": "hello/../x?y"}}),
        &json!({}),
        &mut transport,
    ));
    assert_eq!(error.kind, ConnectorErrorKind::NotFound);
    assert_eq!(
        transport.urls(),
        vec!["https://api.github.com/repos/octo/hello%2F..%2Fx%3Fy/issues"]
    );
    let path = &action_spec(&github, "list_issues")["input_schema"]["properties"]["path"];
    assert_eq!(
        path["properties"]["owner"]["pattern"],
        "^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$"
    );
}

#[test]
fn github_create_issue_posts_only_the_given_fields() {
    let github = load("github.json");
    let mut transport = api(github_api(vec![]));
    let output = invoke(
        &github,
        "create_issue",
        json!({"path": {"owner": "octo", "repo": "hello"}, "body": {"title": "Broken", "labels": ["bug"]}}),
        &json!({}),
        &mut transport,
    )
    .expect("created");
    assert_eq!(output["number"], 7);
    assert_eq!(output["title"], "Broken");
    assert_eq!(output["labels"][0]["name"], "bug");
    assert_eq!(output["state"], "open");
    let request = &transport.requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, ISSUES_URL);
    assert_eq!(body_text(request), r#"{"labels":["bug"],"title":"Broken"}"#);
    assert_eq!(
        headers_of(request),
        pairs(&[
            ("accept", "application/vnd.github+json"),
            ("content-type", "application/json"),
            ("user-agent", "airlock-connector-github"),
            ("x-github-api-version", "2022-11-28"),
        ])
    );
}

#[test]
fn github_errors_map_like_the_code_connector() {
    let github = load("github.json");
    let mut transport = api(|request: &Request| {
        let (path, _) = split_url(&request.url, GITHUB);
        match path.as_str() {
            "/repos/octo/missing/issues" => github_error(
                404,
                "Not Found",
                "https://docs.github.com/rest/issues/issues#list-repository-issues",
            ),
            "/repos/octo/gone/issues" => github_error(
                410,
                "Issues are disabled for this repo",
                "https://docs.github.com/v3/issues/",
            ),
            "/repos/octo/limited/issues" => with_header(
                with_header(
                    github_error(
                        403,
                        "API rate limit exceeded for user ID 1.",
                        "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
                    ),
                    "x-ratelimit-remaining",
                    "0",
                ),
                "x-ratelimit-reset",
                "1700000000",
            ),
            "/repos/octo/secondary/issues" => github_error(
                403,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#secondary-rate-limits",
            ),
            "/repos/octo/toomany/issues" => {
                github_error(429, "Too many requests", "https://docs.github.com/rest")
            }
            "/repos/octo/forbidden/issues" => github_error(
                403,
                "Resource not accessible by integration",
                "https://docs.github.com/rest/issues/issues#list-repository-issues",
            ),
            "/repos/octo/broken/issues" => Response {
                status: 502,
                headers: vec![("content-type".to_owned(), "text/html".to_owned())],
                body: b"<html>Bad Gateway</html>".to_vec(),
            },
            "/repos/octo/hello/issues" => github_error(
                422,
                "Validation Failed",
                "https://docs.github.com/rest/issues/issues#create-an-issue",
            ),
            _ => github_error(401, "Bad credentials", "https://docs.github.com/rest"),
        }
    });
    let mut list = |repo: &str| {
        fails(invoke(
            &github,
            "list_issues",
            json!({"path": {"owner": "octo", "repo": repo}}),
            &json!({}),
            &mut transport,
        ))
    };
    use ConnectorErrorKind::*;
    for (repo, kind, retryable, quoted) in [
        ("missing", NotFound, false, "Not Found"),
        ("gone", NotFound, false, "Issues are disabled"),
        ("limited", RateLimited, true, "API rate limit exceeded"),
        ("secondary", RateLimited, true, "secondary rate limit"),
        ("toomany", RateLimited, true, "Too many requests"),
        ("forbidden", Auth, false, "Resource not accessible"),
        // An HTML body has no `/message` to quote (the code connector quotes the body).
        ("broken", Upstream, true, "upstream answered 502"),
        ("unauthorized", Auth, false, "Bad credentials"),
    ] {
        let error = list(repo);
        assert_eq!(
            (error.kind, error.retryable),
            (kind, retryable),
            "{repo}: {error}"
        );
        assert!(error.message.contains(quoted), "{repo}: {error}");
    }
    let error = fails(invoke(
        &github,
        "create_issue",
        json!({"path": {"owner": "octo", "repo": "hello"}, "body": {"title": "x"}}),
        &json!({}),
        &mut transport,
    ));
    assert_eq!(
        (error.kind, error.code.as_str(), error.retryable),
        (InvalidInput, "status_422", false)
    );
    assert_eq!(error.message, "upstream answered 422: Validation Failed");
}

/// As the code connector does: a 403 with `x-ratelimit-remaining: 0` is a rate limit whatever
/// its `documentation_url`; the same 403 with quota left is an auth error.
#[test]
fn github_reads_the_rate_limit_header_on_a_403() {
    let github = load("github.json");
    for (remaining, expected) in [
        ("0", ConnectorErrorKind::RateLimited),
        ("12", ConnectorErrorKind::Auth),
    ] {
        let mut transport = api(move |_: &Request| {
            with_header(
                github_error(
                    403,
                    "API rate limit exceeded for user ID 1.",
                    "https://docs.github.com/some/future/page",
                ),
                "x-ratelimit-remaining",
                remaining,
            )
        });
        let error = fails(invoke(
            &github,
            "list_issues",
            json!({"path": {"owner": "octo", "repo": "hello"}}),
            &json!({}),
            &mut transport,
        ));
        assert_eq!(error.kind, expected, "x-ratelimit-remaining: {remaining}");
    }
}

#[test]
fn github_test_connection_asks_for_the_user() {
    let github = load("github.json");
    let mut transport = api(github_api(vec![]));
    let output = test_connection(&github, &mut transport).expect("connected");
    assert_eq!(output["login"], "octocat");
    assert_eq!(transport.urls(), vec!["https://api.github.com/user"]);
    assert_eq!(transport.requests[0].method, "GET");
    assert_eq!(transport.requests[0].body, None);

    let mut rejected =
        api(|_: &Request| github_error(401, "Bad credentials", "https://docs.github.com/rest"));
    let error = fails(test_connection(&github, &mut rejected));
    assert_eq!(
        (error.kind, error.retryable),
        (ConnectorErrorKind::Auth, false)
    );
    assert!(error.message.contains("Bad credentials"), "{error}");
}

// ---- Slack ----

const SLACK: &str = "https://slack.com/api";

fn slack_channel(i: usize) -> Value {
    json!({
        "id": format!("C{:010}", i),
        "name": format!("channel-{i}"),
        "is_channel": true,
        "is_group": false,
        "is_im": false,
        "is_private": false,
        "is_archived": false,
        "is_general": i == 0,
        "created": 1_449_252_889,
        "creator": "U012A3CDE",
        "is_member": true,
        "topic": {"value": "", "creator": "", "last_set": 0},
        "num_members": 4
    })
}

/// Slack's cursors are opaque base64 (`dGVhbTpDMDYxRkE1UEI=`): these end in `=`, which the
/// runner must encode.
fn slack_cursor(index: usize) -> String {
    format!("dGVhbTpD{index:04}=")
}

fn slack_error(code: &str) -> Response {
    json_response(200, json!({"ok": false, "error": code}))
}

/// Slack's Web API for these methods: a workspace with `channels`; `C0123456789` is the one
/// channel a message can be posted to.
fn slack_api(channels: Vec<Value>) -> impl FnMut(&Request) -> Response {
    move |request| {
        assert_eq!(header(request, "authorization"), None);
        assert_eq!(header(request, "accept"), Some("application/json"));
        let (path, query) = split_url(&request.url, SLACK);
        match (request.method.as_str(), path.as_str()) {
            ("POST", "/chat.postMessage") => {
                assert_eq!(
                    header(request, "content-type"),
                    Some("application/json; charset=utf-8")
                );
                let body: Value = serde_json::from_str(body_text(request)).expect("JSON");
                let Some(channel) = body["channel"].as_str() else {
                    return slack_error("channel_not_found");
                };
                if channel != "C0123456789" {
                    return slack_error("channel_not_found");
                }
                let Some(text) = body["text"].as_str() else {
                    return slack_error("no_text");
                };
                let mut message = json!({
                    "type": "message", "subtype": "bot_message", "text": text,
                    "ts": "1712345678.000200", "bot_id": "B0123ABCD", "user": "U0123BOT"
                });
                if let Some(thread_ts) = body.get("thread_ts") {
                    message["thread_ts"] = thread_ts.clone();
                }
                if let Some(blocks) = body.get("blocks") {
                    message["blocks"] = blocks.clone();
                }
                json_response(
                    200,
                    json!({"ok": true, "channel": channel, "ts": "1712345678.000200", "message": message}),
                )
            }
            ("GET", "/conversations.list") => {
                assert_eq!(request.body, None);
                let limit: usize =
                    param(&query, "limit").map_or(100, |l| l.parse().expect("a number"));
                let start = match param(&query, "cursor") {
                    None => 0,
                    Some(cursor) => match cursor
                        .strip_prefix("dGVhbTpD")
                        .and_then(|c| c.strip_suffix('='))
                        .and_then(|c| c.parse().ok())
                    {
                        Some(index) => index,
                        None => return slack_error("invalid_cursor"),
                    },
                };
                let page: Vec<Value> = channels.iter().skip(start).take(limit).cloned().collect();
                let next = if start + limit < channels.len() {
                    slack_cursor(start + limit)
                } else {
                    String::new()
                };
                json_response(
                    200,
                    json!({"ok": true, "channels": page, "response_metadata": {"next_cursor": next}}),
                )
            }
            ("POST", "/auth.test") => {
                assert_eq!(request.body, None);
                assert_eq!(header(request, "content-type"), None);
                json_response(
                    200,
                    json!({
                        "ok": true, "url": "https://acme.slack.com/", "team": "Acme",
                        "user": "airlock", "team_id": "T0123ABCD", "user_id": "U0123BOT",
                        "bot_id": "B0123ABCD", "is_enterprise_install": false
                    }),
                )
            }
            _ => json_response(404, json!({"ok": false, "error": "unknown_method"})),
        }
    }
}

#[test]
fn slack_yaml_compiles_to_its_manifest() {
    let slack = load("slack.yaml");
    assert_eq!(slack.manifest["name"], "slack");
    assert_eq!(
        slack.manifest["auth"],
        json!({"type": "api_key", "in": "header", "name": "Authorization", "prefix": "Bearer "})
    );
    assert_eq!(slack.manifest["hosts"], json!(["slack.com"]));
    assert_eq!(
        action_names(&slack),
        vec!["post_message", "list_conversations", "auth_test"]
    );
    let post = action_spec(&slack, "post_message");
    assert_eq!(post["input_schema"]["required"], json!(["body"]));
    assert_eq!(
        post["input_schema"]["properties"]["body"]["required"],
        json!(["channel", "text"])
    );
    assert!(post.get("retry").is_none(), "a retry could post twice");
    assert_eq!(
        slack.definition.test.as_ref().expect("a test call").action,
        "auth_test"
    );
}

#[test]
fn slack_post_message_sends_json_with_a_charset_and_returns_the_ts() {
    let slack_def = load("slack.yaml");
    let mut transport = api(slack_api(vec![]));
    let output = invoke(
        &slack_def,
        "post_message",
        json!({"body": {"channel": "C0123456789", "text": "Deploy finished"}}),
        &json!({}),
        &mut transport,
    )
    .expect("posted");
    assert_eq!(output["ts"], "1712345678.000200");
    assert_eq!(output["channel"], "C0123456789");
    assert_eq!(output["ok"], true);
    let request = &transport.requests[0];
    assert_eq!(
        (request.method.as_str(), request.url.as_str()),
        ("POST", "https://slack.com/api/chat.postMessage")
    );
    // Absent optional members are left out, not sent as null.
    assert_eq!(
        body_text(request),
        r#"{"channel":"C0123456789","text":"Deploy finished"}"#
    );
    assert_eq!(
        headers_of(request),
        pairs(&[
            ("accept", "application/json"),
            ("content-type", "application/json; charset=utf-8"),
        ])
    );

    // In a thread, with blocks.
    let blocks =
        json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* finished"}}]);
    let output = invoke(
        &slack_def,
        "post_message",
        json!({"body": {"channel": "C0123456789", "text": "Deploy finished",
                        "thread_ts": "1712340000.000100", "blocks": blocks}}),
        &json!({}),
        &mut transport,
    )
    .expect("posted");
    assert_eq!(output["message"]["thread_ts"], "1712340000.000100");
    assert_eq!(
        body_text(&transport.requests[1]),
        r#"{"blocks":[{"text":{"text":"*Deploy* finished","type":"mrkdwn"},"type":"section"}],"channel":"C0123456789","text":"Deploy finished","thread_ts":"1712340000.000100"}"#
    );
}

#[test]
fn slack_ok_false_answers_are_errors_by_their_code() {
    let slack_def = load("slack.yaml");
    use ConnectorErrorKind::*;
    for (code, kind, retryable) in [
        ("invalid_auth", Auth, false),
        ("not_authed", Auth, false),
        ("account_inactive", Auth, false),
        ("token_revoked", Auth, false),
        ("token_expired", Auth, false),
        ("missing_scope", Auth, false),
        ("not_allowed_token_type", Auth, false),
        ("channel_not_found", NotFound, false),
        ("ratelimited", RateLimited, true),
        ("rate_limited", RateLimited, true),
        ("internal_error", Upstream, true),
        ("fatal_error", Upstream, true),
        ("service_unavailable", Upstream, true),
        ("not_in_channel", InvalidInput, false),
        ("is_archived", InvalidInput, false),
        ("msg_too_long", InvalidInput, false),
        ("invalid_blocks", InvalidInput, false),
    ] {
        let mut transport = api(|_: &Request| slack_error(code));
        let error = fails(invoke(
            &slack_def,
            "post_message",
            json!({"body": {"channel": "C0123456789", "text": "hi"}}),
            &json!({}),
            &mut transport,
        ));
        assert_eq!(
            (error.kind, error.retryable, error.code.as_str()),
            (kind, retryable, "upstream_error"),
            "{code}"
        );
        assert_eq!(error.message, format!("upstream answered 200: {code}"));
    }

    // The real fake: an unknown channel.
    let mut transport = api(slack_api(vec![]));
    let error = fails(invoke(
        &slack_def,
        "post_message",
        json!({"body": {"channel": "C9999999999", "text": "hi"}}),
        &json!({}),
        &mut transport,
    ));
    assert_eq!(error.kind, NotFound);

    // Slack's HTTP 429 carries `ratelimited` too; the status stays in the code.
    let mut transport = api(|_: &Request| {
        with_header(
            json_response(429, json!({"ok": false, "error": "ratelimited"})),
            "Retry-After",
            "30",
        )
    });
    let error = fails(invoke(
        &slack_def,
        "post_message",
        json!({"body": {"channel": "C0123456789", "text": "hi"}}),
        &json!({}),
        &mut transport,
    ));
    assert_eq!(
        (error.kind, error.retryable, error.code.as_str()),
        (RateLimited, true, "status_429")
    );

    // `ok: true` with a warning is a success.
    let mut transport = api(|_: &Request| {
        json_response(
            200,
            json!({"ok": true, "channel": "C0123456789", "ts": "1.2", "warning": "missing_charset",
                   "response_metadata": {"warnings": ["missing_charset"]}}),
        )
    });
    let output = invoke(
        &slack_def,
        "post_message",
        json!({"body": {"channel": "C0123456789", "text": "hi"}}),
        &json!({}),
        &mut transport,
    )
    .expect("a success");
    assert_eq!(output["ts"], "1.2");
}

#[test]
fn slack_list_conversations_follows_next_cursor_until_it_is_empty() {
    let slack_def = load("slack.yaml");
    let mut transport = api(slack_api((0..5).map(slack_channel).collect()));
    let output = invoke(
        &slack_def,
        "list_conversations",
        json!({"query": {"types": ["public_channel", "private_channel"], "exclude_archived": true, "limit": 2}}),
        &json!({}),
        &mut transport,
    )
    .expect("listed");
    let ids: Vec<&str> = output
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| c["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(
        ids,
        vec![
            "C0000000000",
            "C0000000001",
            "C0000000002",
            "C0000000003",
            "C0000000004"
        ]
    );
    let first = "https://slack.com/api/conversations.list?types=public_channel,private_channel&exclude_archived=true&limit=2";
    assert_eq!(
        transport.urls(),
        vec![
            first.to_owned(),
            format!("{first}&cursor=dGVhbTpD0002%3D"),
            format!("{first}&cursor=dGVhbTpD0004%3D"),
        ]
    );
    for request in &transport.requests {
        assert_eq!(request.method, "GET");
        assert_eq!(
            headers_of(request),
            pairs(&[("accept", "application/json")])
        );
    }
}

#[test]
fn slack_list_conversations_reads_at_most_twenty_pages() {
    let slack_def = load("slack.yaml");
    let input = json!({"query": {"limit": 1}});
    let mut transport = api(slack_api((0..20).map(slack_channel).collect()));
    let output = invoke(
        &slack_def,
        "list_conversations",
        input.clone(),
        &json!({}),
        &mut transport,
    )
    .expect("twenty pages fit");
    assert_eq!(output.as_array().expect("a list").len(), 20);
    assert_eq!(transport.requests.len(), 20);

    let mut transport = api(slack_api((0..21).map(slack_channel).collect()));
    let error = fails(invoke(
        &slack_def,
        "list_conversations",
        input,
        &json!({}),
        &mut transport,
    ));
    assert_eq!(error.code, "pagination_max_pages");
    assert_eq!(transport.requests.len(), 20);
}

#[test]
fn slack_an_error_on_a_later_page_fails_the_list() {
    let slack_def = load("slack.yaml");
    let mut transport = api(|request: &Request| {
        if request.url.contains("cursor=") {
            slack_error("invalid_cursor")
        } else {
            json_response(
                200,
                json!({"ok": true, "channels": [slack_channel(0)],
                       "response_metadata": {"next_cursor": "bogus"}}),
            )
        }
    });
    let error = fails(invoke(
        &slack_def,
        "list_conversations",
        json!({}),
        &json!({}),
        &mut transport,
    ));
    assert_eq!(
        (error.kind, error.message.as_str()),
        (
            ConnectorErrorKind::InvalidInput,
            "upstream answered 200: invalid_cursor"
        )
    );
    assert_eq!(
        transport.urls(),
        vec![
            "https://slack.com/api/conversations.list",
            "https://slack.com/api/conversations.list?cursor=bogus"
        ]
    );
}

#[test]
fn slack_test_connection_calls_auth_test() {
    let slack_def = load("slack.yaml");
    let mut transport = api(slack_api(vec![]));
    let output = test_connection(&slack_def, &mut transport).expect("connected");
    assert_eq!(output["user_id"], "U0123BOT");
    assert_eq!(transport.urls(), vec!["https://slack.com/api/auth.test"]);
    assert_eq!(transport.requests[0].method, "POST");

    let mut rejected = api(|_: &Request| slack_error("invalid_auth"));
    let error = fails(test_connection(&slack_def, &mut rejected));
    assert_eq!(error.kind, ConnectorErrorKind::Auth);
}

// ---- Stripe ----

const STRIPE: &str = "https://api.stripe.com/v1";

fn stripe_customer(id: &str, email: &str, name: &str) -> Value {
    json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": 1_680_893_993,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "discount": null,
        "email": email,
        "invoice_prefix": "0759376C",
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
        "livemode": false,
        "metadata": {},
        "name": name,
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null
    })
}

fn stripe_error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        ));
    }
    with_header(
        json_response(status, json!({"error": error})),
        "Request-Id",
        "req_1234567890abcd",
    )
}

fn no_such_customer(id: &str) -> Response {
    stripe_error(
        404,
        "invalid_request_error",
        Some("resource_missing"),
        &format!("No such customer: '{id}'"),
    )
}

/// Stripe's customers API over `customers` (newest first); deleted ones answer as Stripe's do.
fn stripe_api(mut customers: Vec<Value>) -> impl FnMut(&Request) -> Response {
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    move |request| {
        assert_eq!(header(request, "authorization"), None);
        assert_eq!(header(request, "accept"), Some("application/json"));
        let (path, query) = split_url(&request.url, STRIPE);
        let id = path.strip_prefix("/customers/").map(str::to_owned);
        match (request.method.as_str(), path.as_str(), id) {
            ("POST", "/customers", None) => {
                assert_eq!(
                    header(request, "content-type"),
                    Some("application/x-www-form-urlencoded")
                );
                let mut customer = stripe_customer("cus_NffrFeUfNV2Hib", "", "");
                customer["email"] = Value::Null;
                customer["name"] = Value::Null;
                for (key, value) in form_pairs(body_text(request)) {
                    if let Some(meta) = key
                        .strip_prefix("metadata[")
                        .and_then(|k| k.strip_suffix(']'))
                    {
                        customer["metadata"][meta] = json!(value);
                    } else if ["description", "email", "name", "phone"].contains(&key.as_str()) {
                        if key == "email" && !value.contains('@') {
                            return stripe_error(
                                400,
                                "invalid_request_error",
                                Some("email_invalid"),
                                &format!("Invalid email address: {value}"),
                            );
                        }
                        customer[key.as_str()] = json!(value);
                    } else {
                        return stripe_error(
                            400,
                            "invalid_request_error",
                            Some("parameter_unknown"),
                            &format!("Received unknown parameter: {key}"),
                        );
                    }
                }
                customers.insert(0, customer.clone());
                json_response(200, customer)
            }
            ("GET", "/customers", None) => {
                assert_eq!(request.body, None);
                let limit: usize =
                    param(&query, "limit").map_or(10, |l| l.parse().expect("a number"));
                let email = param(&query, "email");
                let matching: Vec<&Value> = customers
                    .iter()
                    .filter(|c| email.is_none_or(|e| c["email"] == e))
                    .collect();
                let start = match param(&query, "starting_after") {
                    None => 0,
                    Some(after) => match matching.iter().position(|c| c["id"] == after) {
                        Some(i) => i + 1,
                        None => return no_such_customer(after),
                    },
                };
                let data: Vec<Value> = matching
                    .iter()
                    .skip(start)
                    .take(limit)
                    .map(|c| (*c).clone())
                    .collect();
                json_response(
                    200,
                    json!({"object": "list", "url": "/v1/customers",
                           "has_more": start + limit < matching.len(), "data": data}),
                )
            }
            (method @ ("GET" | "DELETE"), _, Some(id)) => {
                assert_eq!(request.body, None);
                assert_eq!(header(request, "content-type"), None);
                if deleted.contains(&id) {
                    return json_response(
                        200,
                        json!({"id": id, "object": "customer", "deleted": true}),
                    );
                }
                let Some(at) = customers.iter().position(|c| c["id"] == id.as_str()) else {
                    return no_such_customer(&id);
                };
                if method == "GET" {
                    return json_response(200, customers[at].clone());
                }
                customers.remove(at);
                deleted.insert(id.clone());
                json_response(
                    200,
                    json!({"id": id, "object": "customer", "deleted": true}),
                )
            }
            (method, path, _) => stripe_error(
                404,
                "invalid_request_error",
                None,
                &format!("Unrecognized request URL ({method}: /v1{path})."),
            ),
        }
    }
}

/// `count` customers, newest (`cus_{count}`) first.
fn some_customers(count: usize) -> Vec<Value> {
    (1..=count)
        .rev()
        .map(|i| {
            stripe_customer(
                &format!("cus_{i}"),
                &format!("user{i}@example.com"),
                &format!("User {i}"),
            )
        })
        .collect()
}

fn ids(output: &Value) -> Vec<&str> {
    output
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| c["id"].as_str().expect("an id"))
        .collect()
}

#[test]
fn stripe_compiles_to_its_manifest() {
    let stripe = load("stripe.json");
    assert_eq!(stripe.manifest["name"], "stripe");
    assert_eq!(
        stripe.manifest["auth"],
        json!({"type": "api_key", "in": "header", "name": "Authorization", "prefix": "Bearer "})
    );
    assert_eq!(stripe.manifest["hosts"], json!(["api.stripe.com"]));
    assert_eq!(
        action_names(&stripe),
        vec![
            "create_customer",
            "get_customer",
            "list_customers",
            "delete_customer"
        ]
    );
    assert!(stripe.manifest["config_schema"]["properties"]["stripe_version"].is_object());
    let create = action_spec(&stripe, "create_customer");
    assert!(
        create.get("retry").is_none(),
        "a retry could create it twice"
    );
    assert_eq!(create["input_schema"]["required"], json!(["body"]));
    assert!(
        create["input_schema"]["properties"]["headers"]["properties"]["idempotency_key"]
            .is_object()
    );
}

#[test]
fn stripe_create_customer_sends_a_form_with_bracketed_metadata() {
    let stripe_def = load("stripe.json");
    let mut transport = api(stripe_api(vec![]));
    let output = invoke(
        &stripe_def,
        "create_customer",
        json!({"body": {"name": "Jane Doe", "email": "jane+vip@example.com",
                        "description": "VIP since 2019 & co",
                        "metadata": {"plan": "pro", "seats": "5", "account id": "a/1"}}}),
        &json!({}),
        &mut transport,
    )
    .expect("created");
    assert_eq!(output["id"], "cus_NffrFeUfNV2Hib");
    assert_eq!(output["name"], "Jane Doe");
    assert_eq!(output["email"], "jane+vip@example.com");
    assert_eq!(
        output["metadata"],
        json!({"plan": "pro", "seats": "5", "account id": "a/1"})
    );
    let request = &transport.requests[0];
    assert_eq!(
        (request.method.as_str(), request.url.as_str()),
        ("POST", "https://api.stripe.com/v1/customers")
    );
    assert_eq!(
        body_text(request),
        "description=VIP%20since%202019%20%26%20co&email=jane%2Bvip%40example.com\
         &metadata[account%20id]=a%2F1&metadata[plan]=pro&metadata[seats]=5&name=Jane%20Doe"
    );
    // No idempotency key, no config: only the defaults.
    assert_eq!(
        headers_of(request),
        pairs(&[
            ("accept", "application/json"),
            ("content-type", "application/x-www-form-urlencoded"),
        ])
    );

    // An idempotency key from the input, the API version and account from the config.
    let config = json!({"stripe_version": "2024-06-20", "account": "acct_1Nv0FGQ9RKHgCVdK"});
    let output = invoke(
        &stripe_def,
        "create_customer",
        json!({"headers": {"idempotency_key": "order-478"}, "body": {"email": "max@example.com"}}),
        &config,
        &mut transport,
    )
    .expect("created");
    assert_eq!(output["email"], "max@example.com");
    let request = &transport.requests[1];
    assert_eq!(body_text(request), "email=max%40example.com");
    assert_eq!(
        headers_of(request),
        pairs(&[
            ("accept", "application/json"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("idempotency-key", "order-478"),
            ("stripe-account", "acct_1Nv0FGQ9RKHgCVdK"),
            ("stripe-version", "2024-06-20"),
        ])
    );
}

#[test]
fn stripe_get_and_delete_customer() {
    let stripe_def = load("stripe.json");
    let mut transport = api(stripe_api(some_customers(2)));
    let get = |transport: &mut dyn Transport, id: &str| {
        invoke(
            &stripe_def,
            "get_customer",
            json!({"path": {"id": id}}),
            &json!({}),
            transport,
        )
    };
    let customer = get(&mut transport, "cus_2").expect("found");
    assert_eq!(
        (customer["id"].as_str(), customer["email"].as_str()),
        (Some("cus_2"), Some("user2@example.com"))
    );
    assert_eq!(
        transport.requests[0].url,
        "https://api.stripe.com/v1/customers/cus_2"
    );
    assert_eq!(transport.requests[0].method, "GET");

    let output = invoke(
        &stripe_def,
        "delete_customer",
        json!({"path": {"id": "cus_2"}}),
        &json!({}),
        &mut transport,
    )
    .expect("deleted");
    assert_eq!(
        output,
        json!({"id": "cus_2", "object": "customer", "deleted": true})
    );
    let request = &transport.requests[1];
    assert_eq!(
        (
            request.method.as_str(),
            request.url.as_str(),
            request.body.as_deref()
        ),
        ("DELETE", "https://api.stripe.com/v1/customers/cus_2", None)
    );
    assert_eq!(
        headers_of(request),
        pairs(&[("accept", "application/json")])
    );

    // Stripe still answers 200 for a deleted customer: the action says not_found.
    let error = fails(get(&mut transport, "cus_2"));
    assert_eq!(
        (error.kind, error.code.as_str(), error.message.as_str()),
        (
            ConnectorErrorKind::NotFound,
            "upstream_error",
            "upstream answered 200: cus_2"
        )
    );
    // Deleting one is still a success (the rule is `get_customer`'s only).
    invoke(
        &stripe_def,
        "delete_customer",
        json!({"path": {"id": "cus_2"}}),
        &json!({}),
        &mut transport,
    )
    .expect("deleting again answers deleted");

    let error = fails(get(&mut transport, "cus_nope"));
    assert_eq!(
        (error.kind, error.code.as_str(), error.retryable),
        (ConnectorErrorKind::NotFound, "status_404", false)
    );
    assert_eq!(
        error.message,
        "upstream answered 404: No such customer: 'cus_nope'"
    );
}

#[test]
fn stripe_list_customers_pages_with_starting_after_the_last_id() {
    let stripe_def = load("stripe.json");
    let mut transport = api(stripe_api(some_customers(5)));
    let output = invoke(
        &stripe_def,
        "list_customers",
        json!({"query": {"limit": 2}}),
        &json!({}),
        &mut transport,
    )
    .expect("listed");
    assert_eq!(
        ids(&output),
        vec!["cus_5", "cus_4", "cus_3", "cus_2", "cus_1"]
    );
    assert_eq!(
        transport.urls(),
        vec![
            "https://api.stripe.com/v1/customers?limit=2",
            "https://api.stripe.com/v1/customers?limit=2&starting_after=cus_4",
            "https://api.stripe.com/v1/customers?limit=2&starting_after=cus_2",
        ]
    );

    // `has_more: false` ends the list even on a full page.
    let mut transport = api(stripe_api(some_customers(4)));
    let output = invoke(
        &stripe_def,
        "list_customers",
        json!({"query": {"limit": 2}}),
        &json!({}),
        &mut transport,
    )
    .expect("listed");
    assert_eq!(ids(&output), vec!["cus_4", "cus_3", "cus_2", "cus_1"]);
    assert_eq!(transport.requests.len(), 2);

    // A filter goes in the query of every page.
    let mut transport = api(stripe_api(some_customers(3)));
    let output = invoke(
        &stripe_def,
        "list_customers",
        json!({"query": {"email": "user2@example.com"}}),
        &json!({}),
        &mut transport,
    )
    .expect("listed");
    assert_eq!(ids(&output), vec!["cus_2"]);
    assert_eq!(
        transport.urls(),
        vec!["https://api.stripe.com/v1/customers?email=user2%40example.com"]
    );
}

#[test]
fn stripe_list_customers_reads_at_most_fifty_pages() {
    let stripe_def = load("stripe.json");
    let input = json!({"query": {"limit": 1}});
    let mut transport = api(stripe_api(some_customers(50)));
    let output = invoke(
        &stripe_def,
        "list_customers",
        input.clone(),
        &json!({}),
        &mut transport,
    )
    .expect("fifty pages fit");
    assert_eq!(output.as_array().expect("a list").len(), 50);
    assert_eq!(transport.requests.len(), 50);

    let mut transport = api(stripe_api(some_customers(51)));
    let error = fails(invoke(
        &stripe_def,
        "list_customers",
        input,
        &json!({}),
        &mut transport,
    ));
    assert_eq!(error.code, "pagination_max_pages");
    assert_eq!(transport.requests.len(), 50);
    assert_eq!(
        transport.requests[49].url,
        "https://api.stripe.com/v1/customers?limit=1&starting_after=cus_3"
    );
}

#[test]
fn stripe_errors_quote_the_error_message() {
    let stripe_def = load("stripe.json");
    use ConnectorErrorKind::*;
    for (response, kind, retryable) in [
        (
            stripe_error(
                402,
                "card_error",
                Some("card_declined"),
                "Your card was declined.",
            ),
            InvalidInput,
            false,
        ),
        (
            stripe_error(
                400,
                "invalid_request_error",
                Some("parameter_missing"),
                "Missing required param: id.",
            ),
            InvalidInput,
            false,
        ),
        (
            stripe_error(
                401,
                "invalid_request_error",
                None,
                "Invalid API Key provided: sk_test_****1234",
            ),
            Auth,
            false,
        ),
        (
            stripe_error(
                403,
                "invalid_request_error",
                None,
                "The provided key does not have the required permissions.",
            ),
            Auth,
            false,
        ),
        (
            stripe_error(
                409,
                "idempotency_error",
                None,
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            ),
            InvalidInput,
            false,
        ),
        (
            stripe_error(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests made to the API too quickly",
            ),
            RateLimited,
            true,
        ),
        (
            stripe_error(500, "api_error", None, "An unknown error occurred"),
            Upstream,
            true,
        ),
    ] {
        let status = response.status;
        let message: Value = serde_json::from_slice(&response.body).expect("JSON");
        let message = message["error"]["message"]
            .as_str()
            .expect("a message")
            .to_owned();
        let mut transport = api(move |_: &Request| response.clone());
        let error = fails(invoke(
            &stripe_def,
            "create_customer",
            json!({"body": {"email": "jane@example.com"}}),
            &json!({}),
            &mut transport,
        ));
        assert_eq!((error.kind, error.retryable), (kind, retryable), "{status}");
        assert_eq!(error.code, format!("status_{status}"));
        assert_eq!(
            error.message,
            format!("upstream answered {status}: {message}")
        );
    }

    // The fake's own validation, as Stripe answers it.
    let mut transport = api(stripe_api(vec![]));
    let error = fails(invoke(
        &stripe_def,
        "create_customer",
        json!({"body": {"email": "not-an-email"}}),
        &json!({}),
        &mut transport,
    ));
    assert_eq!(error.kind, InvalidInput);
    assert_eq!(
        error.message,
        "upstream answered 400: Invalid email address: not-an-email"
    );
}

#[test]
fn stripe_test_connection_reads_one_empty_page() {
    let stripe_def = load("stripe.json");
    let mut transport = api(stripe_api(some_customers(30)));
    let output = test_connection(&stripe_def, &mut transport).expect("connected");
    assert_eq!(output, json!([]));
    assert_eq!(
        transport.urls(),
        vec![
            "https://api.stripe.com/v1/customers?limit=1&email=airlock-connection-test%40example.invalid"
        ]
    );

    let mut rejected = api(|_: &Request| {
        stripe_error(
            401,
            "invalid_request_error",
            None,
            "Invalid API Key provided: sk_test_****1234",
        )
    });
    let error = fails(test_connection(&stripe_def, &mut rejected));
    assert_eq!(error.kind, ConnectorErrorKind::Auth);
}
