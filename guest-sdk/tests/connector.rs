//! The SDK end to end through `MockHost`: manifest generation, dispatch, input and error
//! mapping, the HTTP builder as the host sees it, state and logs.

use std::collections::BTreeMap;

use airlock_sdk::prelude::*;
use airlock_sdk::testing::{LogEntry, MockHost, MockResponse};
use airlock_sdk::{Level, StateError};
use serde_json::{Value, json};

struct Sample;

impl Connector for Sample {
    fn definition() -> Definition {
        Definition::new("sample", "1.2.3")
            .description("SDK test connector")
            .auth(Auth::api_key_header("X-Api-Key"))
            .host("api.sample.test")
            .host("*.cdn.test")
            .action(
                Action::new("add", add)
                    .description("Adds two numbers")
                    .timeout_ms(5_000)
                    .retry(Retry::attempts(3).initial_backoff_ms(500)),
            )
            .action(Action::new("fetch", fetch))
            .action(Action::new("send", send))
            .action(Action::new("count", count))
            .action(Action::new("fail", fail))
            .action(Action::new("key", key))
    }

    fn test_connection(cx: &Context) -> Result<(), ConnectorError> {
        cx.http()
            .get("https://api.sample.test/me")
            .send()?
            .error_for_status()?;
        Ok(())
    }
}

airlock_sdk::export_connector!(Sample);

#[derive(Deserialize, JsonSchema)]
struct AddInput {
    a: i64,
    /// Defaults to zero.
    #[serde(default)]
    b: i64,
}

#[derive(Serialize, JsonSchema)]
struct AddOutput {
    sum: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn add(cx: &Context, input: AddInput) -> Result<AddOutput, ConnectorError> {
    cx.log()
        .debug(format_args!("adding {} and {}", input.a, input.b));
    let sum = input
        .a
        .checked_add(input.b)
        .ok_or_else(|| ConnectorError::invalid_input("overflow"))?;
    Ok(AddOutput { sum, note: None })
}

#[derive(Deserialize, JsonSchema)]
struct FetchInput {
    url: String,
}

fn fetch(cx: &Context, input: FetchInput) -> Result<Value, ConnectorError> {
    cx.http().get(input.url).send()?.error_for_status()?.json()
}

#[derive(Deserialize, JsonSchema)]
struct SendInput {
    body: Value,
    #[serde(default)]
    content_type: Option<String>,
}

fn send(cx: &Context, input: SendInput) -> Result<u16, ConnectorError> {
    let mut request = cx
        .http()
        .post("https://api.sample.test/items?existing=1")
        .query("q", "a b&c")
        .query("n", 5)
        .header("x-trace", "t1")
        .json(&input.body);
    if let Some(ct) = input.content_type {
        request = request.header("content-type", ct);
    }
    Ok(request.send()?.status())
}

#[derive(Deserialize, JsonSchema)]
struct Empty {}

#[derive(Serialize, Deserialize, JsonSchema, Default)]
struct Counter {
    n: u32,
}

fn count(cx: &Context, _: Empty) -> Result<Counter, ConnectorError> {
    let state = cx.state();
    let mut counter: Counter = state.get_json("counter")?.unwrap_or_default();
    counter.n += 1;
    state.set_json("counter", &counter)?;
    cx.log().info(format_args!("count is {}", counter.n));
    Ok(counter)
}

fn key(cx: &Context, _: Empty) -> Result<Option<String>, ConnectorError> {
    Ok(cx.idempotency_key())
}

fn fail(_cx: &Context, _: Empty) -> Result<(), ConnectorError> {
    Err(ConnectorError::upstream("boom").retryable(false))
}

fn err(result: Result<Value, ConnectorError>) -> ConnectorError {
    match result {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

#[test]
fn manifest_has_the_documented_shape() {
    let m = MockHost::new().manifest::<Sample>();
    assert_eq!(m["name"], "sample");
    assert_eq!(m["version"], "1.2.3");
    assert_eq!(m["description"], "SDK test connector");
    assert_eq!(
        m["auth"],
        json!({"type": "api_key", "in": "header", "name": "X-Api-Key"})
    );
    assert_eq!(m["hosts"], json!(["api.sample.test", "*.cdn.test"]));
    let add = &m["actions"][0];
    assert_eq!(add["name"], "add");
    assert_eq!(add["description"], "Adds two numbers");
    assert_eq!(add["timeout_ms"], 5_000);
    assert_eq!(
        add["retry"],
        json!({"max_attempts": 3, "initial_backoff_ms": 500, "max_backoff_ms": 60_000})
    );
    // Optional fields are left out rather than written as null.
    assert!(m["actions"][1].get("timeout_ms").is_none());
    assert!(m["actions"][1].get("retry").is_none());
}

#[test]
fn schemas_follow_each_direction_of_serde() {
    let m = MockHost::new().manifest::<Sample>();
    let input = &m["actions"][0]["input_schema"];
    assert_eq!(
        input["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(input["type"], "object");
    assert_eq!(input["properties"]["a"]["type"], "integer");
    assert_eq!(input["properties"]["b"]["description"], "Defaults to zero.");
    // `#[serde(default)]` makes `b` optional on input ...
    assert_eq!(input["required"], json!(["a"]));
    // ... and `skip_serializing_if` makes `note` optional on output.
    let output = &m["actions"][0]["output_schema"];
    assert_eq!(output["required"], json!(["sum"]));
}

#[test]
fn schemas_are_objects_without_external_refs() {
    fn check(v: &Value, path: &str) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref") {
                    let r = r.as_str().unwrap_or_default();
                    assert!(r.starts_with("#/"), "{path}: external $ref {r}");
                }
                for (k, v) in map {
                    check(v, &format!("{path}/{k}"));
                }
            }
            Value::Array(items) => items.iter().for_each(|v| check(v, path)),
            _ => {}
        }
    }
    let m = MockHost::new().manifest::<Sample>();
    for action in m["actions"].as_array().into_iter().flatten() {
        assert!(action["input_schema"].is_object(), "{}", action["name"]);
        assert!(action["output_schema"].is_object(), "{}", action["name"]);
        check(action, &action["name"].to_string());
    }
}

#[test]
fn invoke_routes_to_the_named_action() {
    let host = MockHost::new();
    assert_eq!(
        host.invoke::<Sample>("add", json!({"a": 2, "b": 40})),
        Ok(json!({"sum": 42}))
    );
    assert_eq!(
        host.invoke::<Sample>("count", json!({})),
        Ok(json!({"n": 1}))
    );
}

#[test]
fn the_idempotency_key_is_the_hosts() {
    assert_eq!(
        MockHost::new().invoke::<Sample>("key", json!({})),
        Ok(Value::Null),
        "a synchronous invocation has none"
    );
    let host = MockHost::new().with_idempotency_key("run_1:charge");
    assert_eq!(
        host.invoke::<Sample>("key", json!({})),
        Ok(json!("run_1:charge"))
    );
}

#[test]
fn unknown_action_is_invalid_input() {
    let e = err(MockHost::new().invoke::<Sample>("nope", json!({})));
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert_eq!(e.message, "unknown action \"nope\"");
}

#[test]
fn input_that_fails_the_schema_is_refused_before_the_action_runs() {
    let host = MockHost::new();
    let e = err(host.invoke::<Sample>("add", json!({"a": "two"})));
    assert_eq!((e.kind, e.retryable), (ErrorKind::InvalidInput, false));
    // The host's message, naming the field by its JSON pointer.
    assert!(e.message.contains("at `/a`"), "{e}");
    assert!(
        e.message.contains(r#""two" is not of type "integer""#),
        "{e}"
    );

    let e = err(host.invoke::<Sample>("add", json!({"b": 1})));
    assert!(e.message.contains("at the top level"), "{e}");
    assert!(e.message.contains(r#""a" is a required property"#), "{e}");
    let e = err(host.invoke::<Sample>("fetch", json!({"url": ["https://api.sample.test/"]})));
    assert!(e.message.contains("at `/url`"), "{e}");
    // `add` logs when it runs, `fetch` sends: neither was called.
    assert!(host.logs().is_empty(), "{:?}", host.logs());
    assert!(host.requests().is_empty());

    let e = match host.invoke_raw::<Sample>("add", "{not json") {
        Ok(v) => panic!("accepted malformed input: {v}"),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert!(e.message.starts_with("input is not JSON"), "{e}");
}

#[test]
fn input_the_schema_allows_but_serde_cannot_decode_is_invalid_input_with_the_serde_message() {
    // `1e30` is an integer to JSON Schema (no fraction) but not an `i64` to serde.
    let host = MockHost::new();
    let e = err(host.invoke::<Sample>("add", json!({"a": 1e30})));
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert!(e.message.contains("expected i64"), "{e}");
    assert!(host.logs().is_empty());

    // Without the schema checks the action's own decoding answers, as it would for a host
    // that did not check.
    let unchecked = MockHost::new().without_schema_checks();
    let e = err(unchecked.invoke::<Sample>("add", json!({"a": "two"})));
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert!(
        e.message
            .contains("invalid type: string \"two\", expected i64"),
        "{e}"
    );
}

/// A connector whose schemas promise more than its code keeps: the output's `name` must not
/// be empty and `count` is at most 10.
struct Promises;

#[derive(Deserialize, JsonSchema)]
struct Make {
    name: String,
    count: u32,
}

#[derive(Serialize, JsonSchema)]
struct Made {
    #[schemars(length(min = 1))]
    name: String,
    #[schemars(range(max = 10))]
    count: u32,
}

fn make(_: &Context, input: Make) -> Result<Made, ConnectorError> {
    Ok(Made {
        name: input.name,
        count: input.count,
    })
}

impl Connector for Promises {
    fn definition() -> Definition {
        Definition::new("promises", "0.1.0").action(Action::new("make", make))
    }
}

#[test]
fn output_that_fails_the_schema_is_an_invalid_output_error() {
    let host = MockHost::new();
    assert_eq!(
        host.invoke::<Promises>("make", json!({"name": "a", "count": 10})),
        Ok(json!({"name": "a", "count": 10}))
    );
    let e = err(host.invoke::<Promises>("make", json!({"name": "a", "count": 11})));
    // The host reports `invalid_output`, never retried; the SDK's closest kind is `internal`.
    assert_eq!((e.kind, e.retryable), (ErrorKind::Internal, false));
    assert!(e.message.starts_with("invalid_output"), "{e}");
    assert!(e.message.contains("at `/count`"), "{e}");
    let e = err(host.invoke::<Promises>("make", json!({"name": "", "count": 1})));
    assert!(e.message.contains("at `/name`"), "{e}");
    assert!(matches!(
        host.invoke_raw::<Promises>("make", r#"{"name": "", "count": 1}"#),
        Err(ConnectorError {
            kind: ErrorKind::Internal,
            ..
        })
    ));

    let unchecked = MockHost::new().without_schema_checks();
    assert_eq!(
        unchecked.invoke::<Promises>("make", json!({"name": "", "count": 11})),
        Ok(json!({"name": "", "count": 11}))
    );
}

#[test]
fn action_errors_cross_unchanged() {
    let e = err(MockHost::new().invoke::<Sample>("fail", json!({})));
    assert_eq!(e, ConnectorError::new(ErrorKind::Upstream, "boom", false));
    let e = err(MockHost::new().invoke::<Sample>("add", json!({"a": i64::MAX, "b": 1})));
    assert_eq!(e.kind, ErrorKind::InvalidInput);
}

#[test]
fn request_builder_sends_query_headers_and_json_body() {
    let host = MockHost::new().on_post("https://api.sample.test/items", MockResponse::status(201));
    assert_eq!(
        host.invoke::<Sample>("send", json!({"body": {"title": "hi"}})),
        Ok(json!(201))
    );
    let requests = host.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.url,
        "https://api.sample.test/items?existing=1&q=a%20b%26c&n=5"
    );
    assert_eq!(req.header("X-Trace"), Some("t1"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.body_json(), Some(json!({"title": "hi"})));
}

#[test]
fn explicit_content_type_wins_over_the_json_default() {
    let host = MockHost::new().on_post("https://api.sample.test/", MockResponse::status(200));
    let input = json!({"body": [1], "content_type": "application/merge-patch+json"});
    assert_eq!(host.invoke::<Sample>("send", input), Ok(json!(200)));
    let req = &host.requests()[0];
    let content_types: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(content_types, ["application/merge-patch+json"]);
}

#[test]
fn responses_parse_as_json_and_statuses_map_to_errors() {
    let host = MockHost::new()
        .on_get(
            "https://api.sample.test/ok",
            MockResponse::json(200, json!({"id": 7})),
        )
        .on_get(
            "https://api.sample.test/missing",
            MockResponse::json(404, json!({"message": "Not Found"})),
        )
        .on_get(
            "https://api.sample.test/busy",
            MockResponse::status(429).header("Retry-After", "5"),
        )
        .on_get(
            "https://x.cdn.test/garbage",
            MockResponse::text(200, "<html>"),
        );
    let fetch = |url: &str| host.invoke::<Sample>("fetch", json!({ "url": url }));

    assert_eq!(fetch("https://api.sample.test/ok"), Ok(json!({"id": 7})));
    let e = err(fetch("https://api.sample.test/missing"));
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.message
            .contains("GET https://api.sample.test/missing returned 404"),
        "{e}"
    );
    let e = err(fetch("https://api.sample.test/busy"));
    assert_eq!((e.kind, e.retryable), (ErrorKind::RateLimited, true));
    assert!(e.message.contains("retry after 5"), "{e}");
    let e = err(fetch("https://x.cdn.test/garbage"));
    assert_eq!((e.kind, e.retryable), (ErrorKind::Upstream, false));
}

#[test]
fn host_failures_become_connector_errors_through_question_mark() {
    let host = MockHost::new().on_get(
        "https://api.sample.test/slow",
        MockResponse::error(HttpError::Timeout),
    );
    let e = err(host.invoke::<Sample>("fetch", json!({"url": "https://api.sample.test/slow"})));
    assert_eq!((e.kind, e.retryable), (ErrorKind::Upstream, true));

    // Undeclared hosts are refused the way the host's gate refuses them.
    let e = err(host.invoke::<Sample>("fetch", json!({"url": "https://evil.test/x"})));
    assert_eq!((e.kind, e.retryable), (ErrorKind::HttpDenied, false));
    assert!(e.message.contains("evil.test"), "{e}");
    // The refused request is still recorded, so tests can see what was attempted.
    assert_eq!(host.requests().len(), 2);
}

#[test]
fn state_persists_across_invocations_and_failures_map_to_internal() {
    let host = MockHost::new().with_state_json("counter", json!({"n": 41}));
    assert_eq!(
        host.invoke::<Sample>("count", json!({})),
        Ok(json!({"n": 42}))
    );
    assert_eq!(
        host.invoke::<Sample>("count", json!({})),
        Ok(json!({"n": 43}))
    );
    assert_eq!(
        host.state_json::<BTreeMap<String, u32>>("counter")
            .map(|m| m["n"]),
        Some(43)
    );

    let broken = MockHost::new().with_state("counter", "not json");
    let e = err(broken.invoke::<Sample>("count", json!({})));
    assert_eq!((e.kind, e.retryable), (ErrorKind::Internal, false));

    let down = MockHost::new().failing_state(StateError::Unavailable("db".into()));
    let e = err(down.invoke::<Sample>("count", json!({})));
    assert_eq!((e.kind, e.retryable), (ErrorKind::Internal, true));
}

#[test]
fn logs_are_captured_with_levels() {
    let host = MockHost::new();
    host.invoke::<Sample>("add", json!({"a": 1, "b": 2})).ok();
    host.invoke::<Sample>("count", json!({})).ok();
    assert_eq!(
        host.logs(),
        [
            LogEntry {
                level: Level::Debug,
                message: "adding 1 and 2".into()
            },
            LogEntry {
                level: Level::Info,
                message: "count is 1".into()
            },
        ]
    );
}

#[test]
fn test_connection_runs_the_connectors_check() {
    let ok = MockHost::new().on_get("https://api.sample.test/me", MockResponse::status(200));
    assert_eq!(ok.test_connection::<Sample>(), Ok(()));
    let rejected = MockHost::new().on_get("https://api.sample.test/me", MockResponse::status(401));
    assert_eq!(
        rejected.test_connection::<Sample>().map_err(|e| e.kind),
        Err(ErrorKind::Auth)
    );
}

struct NoAuthCheck;

impl Connector for NoAuthCheck {
    fn definition() -> Definition {
        Definition::new("plain", "0.1.0").action(Action::new("fail", fail))
    }
}

#[test]
fn default_test_connection_accepts() {
    assert_eq!(MockHost::new().test_connection::<NoAuthCheck>(), Ok(()));
}

struct Broken;

impl Connector for Broken {
    fn definition() -> Definition {
        Definition::new("Bad Name", "1.0")
            .host("api.*.test")
            .action(Action::new("dup", fail))
            .action(Action::new("dup", fail).retry(Retry::attempts(0)))
    }
}

#[test]
fn definition_problems_name_every_broken_rule() {
    let problems = Broken::definition().problems();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(Sample::definition().problems().is_empty());
}

#[test]
#[should_panic(expected = "invalid connector manifest")]
fn mock_manifest_rejects_a_broken_definition() {
    MockHost::new().manifest::<Broken>();
}

/// A connector whose hosts come from the connection's config.
struct Configured;

impl Connector for Configured {
    fn definition() -> Definition {
        Definition::new("configured", "1.0.0")
            .host("{config.subdomain}.crm.test")
            .host("{config.hosts*}")
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "subdomain": {"type": "string"},
                    "hosts": {"type": "array", "items": {"type": "string"}}
                }
            }))
            .action(Action::new("fetch", fetch))
    }
}

#[test]
fn mock_host_resolves_config_hosts_as_the_host_does() {
    let mock = || {
        MockHost::new()
            .on_get("https://", MockResponse::json(200, json!({"ok": true})))
            .with_config(json!({"subdomain": "acme", "hosts": ["api.extra.test"]}))
    };
    for url in ["https://acme.crm.test/x", "https://api.extra.test/y"] {
        let output = mock().invoke::<Configured>("fetch", json!({"url": url}));
        assert_eq!(output.expect(url), json!({"ok": true}));
    }
    for url in ["https://other.crm.test/x", "https://evil.test/"] {
        let error = mock()
            .invoke::<Configured>("fetch", json!({"url": url}))
            .expect_err(url);
        assert_eq!(error.kind, ErrorKind::HttpDenied, "{url}");
    }
    // Without a config the templated entries stand for no host at all.
    let error = MockHost::new()
        .invoke::<Configured>("fetch", json!({"url": "https://acme.crm.test/x"}))
        .expect_err("no config");
    assert_eq!(error.kind, ErrorKind::HttpDenied);
}
