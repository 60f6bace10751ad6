//! The runner against a fake transport: requests as built (URL, headers, body), responses as
//! read (error rules, defaults, output), and every pagination strategy with its guards.

use std::collections::VecDeque;

use airlock_contract::ConnectorErrorKind;
use airlock_declarative::Plan;
use airlock_declarative::run::{Request, Response, RunError, Transport, first_request, run};
use serde_json::{Value, json};

/// Records every request; answers from a closure given the request and its index.
struct Fake<F: FnMut(&Request, usize) -> Response> {
    requests: Vec<Request>,
    answer: F,
}

impl<F: FnMut(&Request, usize) -> Response> Transport for Fake<F> {
    fn send(&mut self, request: Request) -> Result<Response, RunError> {
        let response = (self.answer)(&request, self.requests.len());
        self.requests.push(request);
        Ok(response)
    }
}

fn fake<F: FnMut(&Request, usize) -> Response>(answer: F) -> Fake<F> {
    Fake {
        requests: Vec::new(),
        answer,
    }
}

/// Answers from a queue, then 500 when it runs dry.
fn queue(responses: Vec<Response>) -> Fake<impl FnMut(&Request, usize) -> Response> {
    let mut queue = VecDeque::from(responses);
    fake(move |_, _| queue.pop_front().unwrap_or_else(|| status(500, json!({}))))
}

fn status(code: u16, body: Value) -> Response {
    Response {
        status: code,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: serde_json::to_vec(&body).expect("JSON"),
    }
}

fn ok(body: Value) -> Response {
    status(200, body)
}

fn with_link(mut response: Response, link: &str) -> Response {
    response.headers.push(("Link".to_owned(), link.to_owned()));
    response
}

/// A plan on `https://api.test/v1` with this action (and optionally more plan fields).
fn action(action: Value) -> Plan {
    plan_with(json!({}), action)
}

fn plan_with(extra: Value, action: Value) -> Plan {
    let mut plan = json!({
        "base_url": "https://api.test/v1/",
        "hosts": [],
        "headers": {},
        "errors": [],
        "action": action,
    });
    if let (Some(plan), Value::Object(extra)) = (plan.as_object_mut(), extra) {
        plan.extend(extra);
    }
    serde_json::from_value(plan).expect("a plan")
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn body_json(request: &Request) -> Value {
    serde_json::from_slice(request.body.as_deref().expect("a body")).expect("JSON")
}

fn run_ok(plan: &Plan, input: Value, transport: &mut dyn Transport) -> Value {
    run(plan, &input, &json!({}), transport).expect("the action succeeds")
}

fn run_err(plan: &Plan, input: Value, transport: &mut dyn Transport) -> RunError {
    run(plan, &input, &json!({}), transport).expect_err("the action fails")
}

// ---- URL ----

#[test]
fn builds_the_url_from_path_query_and_config() {
    let plan = plan_with(
        json!({"base_url": "https://{config.sub}.api.test/{config.region}/"}),
        json!({
            "name": "list", "method": "GET",
            "endpoint": "/repos/{owner}/{repo}/issues{/n}{?state,per_page,labels*}{&config.tenant}"
        }),
    );
    let input = json!({
        "path": {"owner": "rust lang", "repo": "a/b", "n": 478},
        "query": {"state": "open", "per_page": 100, "labels": ["bug", "p 1"], "ignored": 1}
    });
    let config = json!({"sub": "acme", "region": "eu west", "tenant": "t&1"});
    let mut transport = queue(vec![ok(json!([]))]);
    run(&plan, &input, &config, &mut transport).expect("ok");
    assert_eq!(transport.requests.len(), 1);
    let request = &transport.requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.url,
        "https://acme.api.test/eu%20west/repos/rust%20lang/a%2Fb/issues/478\
         ?state=open&per_page=100&labels=bug&labels=p%201&tenant=t%261"
    );
    assert_eq!(request.body, None);
    assert_eq!(first_request(&plan, &input, &config).expect("ok"), *request);
}

#[test]
fn a_missing_path_variable_is_refused_before_sending() {
    let plan =
        action(json!({"name": "get", "method": "GET", "endpoint": "/users/{id}/posts{/post}"}));
    let mut transport = queue(vec![]);
    for input in [
        json!({}),
        json!({"path": {"post": 1}}),
        json!({"path": {"id": null, "post": 1}}),
        json!({"path": {"id": 7}}),
        json!({"path": {"id": [], "post": 1}}),
    ] {
        let error = run_err(&plan, input.clone(), &mut transport);
        assert_eq!(error.code, "missing_path_variable", "{input}");
        assert_eq!(error.kind, ConnectorErrorKind::InvalidInput);
        assert!(!error.retryable);
    }
    let config_var = plan_with(
        json!({}),
        json!({"name": "get", "method": "GET", "endpoint": "/a/{config.account}"}),
    );
    assert_eq!(
        run_err(&config_var, json!({}), &mut transport).code,
        "missing_path_variable"
    );
    assert!(transport.requests.is_empty());
}

#[test]
fn values_that_cannot_expand_are_invalid_input_and_not_quoted() {
    let plan = action(json!({"name": "get", "method": "GET", "endpoint": "/users/{id}{?q}"}));
    let mut transport = queue(vec![]);
    for input in [
        json!({"path": {"id": ".."}}),
        json!({"path": {"id": {"secret-object": 1}}}),
        json!({"path": {"id": 1}, "query": {"q": [["secret-nested"]]}}),
    ] {
        let error = run_err(&plan, input, &mut transport);
        assert_eq!(
            (error.kind, error.code.as_str()),
            (ConnectorErrorKind::InvalidInput, "invalid_value")
        );
        assert!(!error.message.contains("secret"), "{}", error.message);
    }
    let broken = plan_with(
        json!({}),
        json!({"name": "get", "method": "GET", "endpoint": "/a/{+x}"}),
    );
    let error = run_err(&broken, json!({"path": {"x": 1}}), &mut transport);
    assert_eq!(
        (error.kind, error.code.as_str()),
        (ConnectorErrorKind::Internal, "invalid_definition")
    );
    // An endpoint that does not start the path could change the host: refused at run time too.
    let glued = action(json!({"name": "get", "method": "GET", "endpoint": "{x}"}));
    let error = run_err(&glued, json!({"path": {"x": ".evil.test"}}), &mut transport);
    assert_eq!(
        (error.kind, error.code.as_str()),
        (ConnectorErrorKind::Internal, "invalid_definition")
    );
    assert!(transport.requests.is_empty());
}

// ---- headers ----

#[test]
fn headers_are_templated_omitted_when_undefined_and_defaulted() {
    let plan = plan_with(
        json!({"headers": {
            "X-Request-Id": "req-{request_id}",
            "X-Account": "{config.account}",
            "X-Optional": "{optional}",
            "X-Static": "yes"
        }}),
        json!({"name": "create", "method": "POST", "endpoint": "/items"}),
    );
    let input = json!({"headers": {"request_id": 478}, "body": {"a": 1}});
    let mut transport = queue(vec![ok(json!({}))]);
    run(&plan, &input, &json!({"account": "acme"}), &mut transport).expect("ok");
    let request = &transport.requests[0];
    assert_eq!(
        request.headers,
        vec![
            ("X-Account".to_owned(), "acme".to_owned()),
            ("X-Request-Id".to_owned(), "req-478".to_owned()),
            ("X-Static".to_owned(), "yes".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]
    );

    // The plan's own Accept and Content-Type win, whatever their case.
    let own = plan_with(
        json!({"headers": {"ACCEPT": "text/csv", "Content-type": "application/vnd.api+json"}}),
        json!({"name": "create", "method": "POST", "endpoint": "/items"}),
    );
    let mut transport = queue(vec![ok(json!({}))]);
    run_ok(&own, json!({"body": {"a": 1}}), &mut transport);
    assert_eq!(
        transport.requests[0].headers,
        vec![
            ("ACCEPT".to_owned(), "text/csv".to_owned()),
            (
                "Content-type".to_owned(),
                "application/vnd.api+json".to_owned()
            ),
        ]
    );

    // No body, no content type.
    let get = action(json!({"name": "get", "method": "GET", "endpoint": "/items"}));
    let mut transport = queue(vec![ok(json!({}))]);
    run_ok(&get, json!({"body": {"ignored": true}}), &mut transport);
    assert_eq!(header(&transport.requests[0], "content-type"), None);
    assert_eq!(transport.requests[0].body, None);
}

#[test]
fn header_errors_never_quote_the_value() {
    let plan = plan_with(
        json!({"headers": {"Authorization": "Bearer {token}"}}),
        json!({"name": "get", "method": "GET", "endpoint": "/me"}),
    );
    let mut transport = queue(vec![]);
    let error = run_err(
        &plan,
        json!({"headers": {"token": "s3cr3t\r\nX-Evil: 1"}}),
        &mut transport,
    );
    assert_eq!(
        (error.kind, error.code.as_str()),
        (ConnectorErrorKind::InvalidInput, "invalid_value")
    );
    assert!(!error.message.contains("s3cr3t") && !error.to_string().contains("Evil"));
    assert!(transport.requests.is_empty());
}

// ---- body ----

#[test]
fn the_input_body_is_sent_as_json() {
    let plan = action(json!({"name": "create", "method": "POST", "endpoint": "/items"}));
    let body = json!({"n": 478, "s": "478", "nested": {"l": [true, null, 1.5]}});
    let mut transport = queue(vec![ok(json!({}))]);
    run_ok(&plan, json!({"body": body}), &mut transport);
    assert_eq!(body_json(&transport.requests[0]), body);
    assert_eq!(
        header(&transport.requests[0], "content-type"),
        Some("application/json")
    );

    let mut transport = queue(vec![ok(json!({}))]);
    run_ok(&plan, json!({}), &mut transport);
    assert_eq!(transport.requests[0].body, None);
    assert_eq!(header(&transport.requests[0], "content-type"), None);
}

#[test]
fn body_templates_take_input_and_config_keeping_types() {
    let plan = action(json!({
        "name": "post_message", "method": "POST", "endpoint": "/chat.postMessage",
        "body": {"template": {
            "channel": {"$input": "/path/channel"},
            "text": {"$input": "/body/text"},
            "count": {"$input": "/body/count"},
            "count_text": {"$input": "/body/count_text"},
            "thread_ts": {"$input": "/body/thread_ts"},
            "workspace": {"$config": "/workspace"},
            "blocks": [{"$input": "/body/missing"}, {"type": "section"}],
            "fixed": 1
        }}
    }));
    let input = json!({
        "path": {"channel": "C1"},
        "body": {"text": "hi", "count": 478, "count_text": "478"}
    });
    let mut transport = queue(vec![ok(json!({"ok": true}))]);
    run(&plan, &input, &json!({"workspace": "acme"}), &mut transport).expect("ok");
    assert_eq!(
        body_json(&transport.requests[0]),
        json!({
            "channel": "C1",
            "text": "hi",
            "count": 478,
            "count_text": "478",
            "workspace": "acme",
            "blocks": [null, {"type": "section"}],
            "fixed": 1
        })
    );
}

#[test]
fn form_bodies_nest_in_brackets() {
    let plan = action(json!({
        "name": "create_customer", "method": "POST", "endpoint": "/customers",
        "body": {"encoding": "form"}
    }));
    let input = json!({"body": {
        "email": "a+b@example.test",
        "metadata": {"plan": "pro"},
        "items": [{"price": "p_1", "quantity": 2}],
        "tax_exempt": null,
        "livemode": false
    }});
    let mut transport = queue(vec![ok(json!({"id": "cus_1"}))]);
    run_ok(&plan, input, &mut transport);
    let request = &transport.requests[0];
    assert_eq!(
        header(request, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8(request.body.clone().expect("a body")).expect("text"),
        "email=a%2Bb%40example.test&items[0][price]=p_1&items[0][quantity]=2\
         &livemode=false&metadata[plan]=pro"
    );
    let mut transport = queue(vec![]);
    let error = run_err(
        &plan,
        json!({"body": ["not", "an", "object"]}),
        &mut transport,
    );
    assert_eq!(
        (error.kind, error.code.as_str()),
        (ConnectorErrorKind::InvalidInput, "invalid_body")
    );
    assert!(transport.requests.is_empty());
}

// ---- responses ----

#[test]
fn default_errors_by_status() {
    use ConnectorErrorKind::*;
    let plan = action(json!({"name": "get", "method": "GET", "endpoint": "/x"}));
    for (code, kind, retryable) in [
        (400, InvalidInput, false),
        (401, Auth, false),
        (403, Auth, false),
        (404, NotFound, false),
        (408, Upstream, true),
        (409, InvalidInput, false),
        (410, NotFound, false),
        (422, InvalidInput, false),
        (429, RateLimited, true),
        (500, Upstream, true),
        (502, Upstream, true),
        (304, Upstream, false),
        (451, Upstream, false),
    ] {
        let mut transport = queue(vec![status(code, json!({"message": "told you"}))]);
        let error = run_err(&plan, json!({}), &mut transport);
        assert_eq!((error.kind, error.retryable), (kind, retryable), "{code}");
        assert_eq!(error.code, format!("status_{code}"));
        assert_eq!(error.message, format!("upstream answered {code}: told you"));
    }
}

#[test]
fn error_rules_come_first_slack_style() {
    let plan = plan_with(
        json!({"errors": [
            {"when": {"pointer": "/error", "equals": "channel_not_found"}, "kind": "not_found", "message": "/error"},
            {"when": {"pointer": "/error", "equals": "ratelimited"}, "kind": "rate_limited"},
            {"when": {"pointer": "/ok", "equals": false}, "kind": "invalid_input", "message": "/error"},
            {"status": 404, "kind": "success"},
            {"status": ["5xx", 418], "kind": "upstream", "retryable": false, "message": "/detail"}
        ]}),
        json!({"name": "post", "method": "POST", "endpoint": "/chat.postMessage"}),
    );
    let cases = [
        (
            ok(json!({"ok": false, "error": "channel_not_found"})),
            Some((
                ConnectorErrorKind::NotFound,
                "upstream_error",
                false,
                "upstream answered 200: channel_not_found",
            )),
        ),
        (
            ok(json!({"ok": false, "error": "ratelimited"})),
            Some((
                ConnectorErrorKind::RateLimited,
                "upstream_error",
                true,
                "upstream answered 200",
            )),
        ),
        (
            ok(json!({"ok": false, "error": "invalid_blocks"})),
            Some((
                ConnectorErrorKind::InvalidInput,
                "upstream_error",
                false,
                "upstream answered 200: invalid_blocks",
            )),
        ),
        (ok(json!({"ok": true})), None),
        (status(404, json!({"gone": true})), None),
        (
            status(503, json!({"detail": "maintenance"})),
            Some((
                ConnectorErrorKind::Upstream,
                "status_503",
                false,
                "upstream answered 503: maintenance",
            )),
        ),
        (
            status(418, json!({})),
            Some((
                ConnectorErrorKind::Upstream,
                "status_418",
                false,
                "upstream answered 418",
            )),
        ),
        (
            status(401, json!({})),
            Some((
                ConnectorErrorKind::Auth,
                "status_401",
                false,
                "upstream answered 401",
            )),
        ),
    ];
    for (response, expected) in cases {
        let mut transport = queue(vec![response.clone()]);
        let result = run(&plan, &json!({}), &json!({}), &mut transport);
        match expected {
            None => assert!(result.is_ok(), "{response:?}: {result:?}"),
            Some((kind, code, retryable, message)) => {
                let error = result.expect_err("an error");
                assert_eq!(
                    (
                        error.kind,
                        error.code.as_str(),
                        error.retryable,
                        error.message.as_str()
                    ),
                    (kind, code, retryable, message)
                );
            }
        }
    }
}

#[test]
fn output_is_extracted_by_pointer() {
    let plan =
        action(json!({"name": "get", "method": "GET", "endpoint": "/x", "output": "/data/user"}));
    let mut transport = queue(vec![ok(json!({"data": {"user": {"id": 478}}}))]);
    assert_eq!(run_ok(&plan, json!({}), &mut transport), json!({"id": 478}));

    let mut transport = queue(vec![ok(json!({"data": {}}))]);
    let error = run_err(&plan, json!({}), &mut transport);
    assert_eq!(
        (error.kind, error.code.as_str(), error.retryable),
        (ConnectorErrorKind::Upstream, "output_missing", false)
    );
    assert!(error.message.contains("/data/user"));

    let whole = action(json!({"name": "get", "method": "GET", "endpoint": "/x"}));
    let mut transport = queue(vec![Response {
        status: 204,
        headers: vec![],
        body: vec![],
    }]);
    assert_eq!(run_ok(&whole, json!({}), &mut transport), Value::Null);
    let mut transport = queue(vec![Response {
        status: 200,
        headers: vec![("Content-Type".to_owned(), "text/plain".to_owned())],
        body: b"pong".to_vec(),
    }]);
    assert_eq!(run_ok(&whole, json!({}), &mut transport), json!("pong"));
    let mut transport = queue(vec![Response {
        status: 200,
        headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
        body: b"{not json".to_vec(),
    }]);
    assert_eq!(
        run_err(&whole, json!({}), &mut transport).code,
        "invalid_json"
    );
}

#[test]
fn transport_errors_pass_through() {
    struct Denied;
    impl Transport for Denied {
        fn send(&mut self, _: Request) -> Result<Response, RunError> {
            Err(RunError::new(
                ConnectorErrorKind::HttpDenied,
                "http_denied",
                "no",
                false,
            ))
        }
    }
    let plan = action(json!({"name": "get", "method": "GET", "endpoint": "/x"}));
    assert_eq!(run_err(&plan, json!({}), &mut Denied).code, "http_denied");
}

// ---- pagination ----

fn items(range: std::ops::Range<u32>) -> Value {
    Value::Array(range.map(|i| json!({"id": i})).collect())
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[test]
fn page_numbers_until_an_empty_page() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items?page=9&per_page=1{&state}",
        "pagination": {"type": "page", "param": "page", "size_param": "per_page", "size": 2, "items": "/data", "max_pages": 10}
    }));
    let mut transport = fake(|request, _| {
        let page: u32 = query_param(&request.url, "page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        ok(json!({"data": if page <= 3 { items(page * 2..page * 2 + 2) } else { json!([]) }}))
    });
    let input = json!({"query": {"state": "open"}});
    let output = run_ok(&plan, input.clone(), &mut transport);
    assert_eq!(output, items(2..8));
    let urls: Vec<&str> = transport.requests.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://api.test/v1/items?page=1&per_page=2&state=open",
            "https://api.test/v1/items?page=2&per_page=2&state=open",
            "https://api.test/v1/items?page=3&per_page=2&state=open",
            "https://api.test/v1/items?page=4&per_page=2&state=open",
        ]
    );
    assert_eq!(
        first_request(&plan, &input, &json!({})).expect("ok"),
        transport.requests[0]
    );
}

#[test]
fn offsets_advance_by_the_items_received() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "offset", "param": "offset", "limit_param": "limit", "limit": 3, "max_pages": 10}
    }));
    // Three full pages and a short one, then empty.
    let all = items(0..10);
    let mut transport = fake(move |request, _| {
        let offset: usize = query_param(&request.url, "offset")
            .and_then(|p| p.parse().ok())
            .unwrap_or(99);
        let list = all.as_array().cloned().unwrap_or_default();
        ok(Value::Array(
            list.into_iter().skip(offset).take(3).collect(),
        ))
    });
    assert_eq!(run_ok(&plan, json!({}), &mut transport), items(0..10));
    let offsets: Vec<String> = transport
        .requests
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                query_param(&r.url, "offset").unwrap_or_default(),
                query_param(&r.url, "limit").unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(offsets, ["0/3", "3/3", "6/3", "9/3", "10/3"]);
}

#[test]
fn cursors_from_the_body_until_has_more_is_false() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items{?limit}",
        "pagination": {"type": "cursor", "param": "cursor", "cursor": "/meta/next", "has_more": "/meta/has_more", "items": "/data", "max_pages": 10}
    }));
    let mut transport = queue(vec![
        ok(json!({"data": items(0..2), "meta": {"next": "c 1", "has_more": true}})),
        ok(json!({"data": items(2..4), "meta": {"next": 2, "has_more": true}})),
        // has_more false wins over a cursor that is still there.
        ok(json!({"data": items(4..5), "meta": {"next": "c3", "has_more": false}})),
    ]);
    assert_eq!(
        run_ok(&plan, json!({"query": {"limit": 2}}), &mut transport),
        items(0..5)
    );
    let urls: Vec<&str> = transport.requests.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://api.test/v1/items?limit=2",
            "https://api.test/v1/items?limit=2&cursor=c%201",
            "https://api.test/v1/items?limit=2&cursor=2",
        ]
    );
    // Without has_more, a null, absent or empty cursor ends the list.
    let plan = plan_without_has_more();
    for end in [json!({"next": null}), json!({}), json!({"next": ""})] {
        let mut transport = queue(vec![
            ok(json!({"data": items(0..1), "meta": {"next": "a"}})),
            ok(json!({"data": items(1..2), "meta": end})),
        ]);
        assert_eq!(run_ok(&plan, json!({}), &mut transport), items(0..2));
        assert_eq!(transport.requests.len(), 2);
    }
}

fn plan_without_has_more() -> Plan {
    action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "cursor", "param": "cursor", "cursor": "/meta/next", "items": "/data", "max_pages": 10}
    }))
}

#[test]
fn cursors_from_the_last_item_stripe_style() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/customers",
        "pagination": {"type": "cursor", "param": "starting_after", "cursor_from_last_item": "/id", "has_more": "/has_more", "items": "/data", "max_pages": 10}
    }));
    let mut transport = queue(vec![
        ok(json!({"data": [{"id": "cus_1"}, {"id": "cus_2"}], "has_more": true})),
        ok(json!({"data": [{"id": "cus_3"}], "has_more": false})),
    ]);
    assert_eq!(
        run_ok(&plan, json!({}), &mut transport),
        json!([{"id": "cus_1"}, {"id": "cus_2"}, {"id": "cus_3"}])
    );
    assert_eq!(
        transport.requests[1].url,
        "https://api.test/v1/customers?starting_after=cus_2"
    );
}

#[test]
fn a_repeated_cursor_is_refused() {
    let plan = plan_without_has_more();
    let mut transport = fake(|_, _| ok(json!({"data": items(0..1), "meta": {"next": "same"}})));
    let error = run_err(&plan, json!({}), &mut transport);
    assert_eq!(
        (error.kind, error.code.as_str(), error.retryable),
        (
            ConnectorErrorKind::Upstream,
            "pagination_cursor_repeated",
            false
        )
    );
    assert_eq!(transport.requests.len(), 2);
}

#[test]
fn next_links_from_the_header() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/repos/{owner}/issues{?per_page}",
        "pagination": {"type": "next_link", "from": "header", "max_pages": 10}
    }));
    let mut transport = queue(vec![
        with_link(
            ok(items(0..2)),
            "<https://api.test/v1/repos/o/issues?per_page=2&page=1>; rel=\"prev\", \
             <https://API.test/v1/repos/o/issues?per_page=2&page=2>; rel=\"next last\"",
        ),
        with_link(
            ok(items(2..4)),
            "</v1/repos/o/issues?per_page=2&page=3>; REL=Next",
        ),
        with_link(
            ok(items(4..5)),
            "<https://api.test/v1/repos/o/issues?page=1>; rel=\"first\"",
        ),
    ]);
    let output = run_ok(
        &plan,
        json!({"path": {"owner": "o"}, "query": {"per_page": 2}}),
        &mut transport,
    );
    assert_eq!(output, items(0..5));
    let urls: Vec<&str> = transport.requests.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://api.test/v1/repos/o/issues?per_page=2",
            "https://api.test/v1/repos/o/issues?per_page=2&page=2",
            "https://api.test/v1/repos/o/issues?per_page=2&page=3",
        ]
    );
    // Headers go with every page.
    assert!(
        transport
            .requests
            .iter()
            .all(|r| header(r, "accept") == Some("application/json"))
    );
}

#[test]
fn next_links_from_the_body_on_declared_hosts() {
    let plan = plan_with(
        json!({"hosts": ["*.files.test", "{config.region}.api.test"]}),
        json!({
            "name": "list", "method": "GET", "endpoint": "/items",
            "pagination": {"type": "next_link", "from": "body", "pointer": "/links/next", "items": "/items", "max_pages": 10}
        }),
    );
    let mut transport = queue(vec![
        ok(json!({"items": items(0..1), "links": {"next": "https://a.b.files.test/p2"}})),
        ok(json!({"items": items(1..2), "links": {"next": "https://eu.api.test:443/p3"}})),
        ok(json!({"items": items(2..3), "links": {"next": "p4?x=1"}})),
        ok(json!({"items": items(3..4), "links": {"next": null}})),
    ]);
    let output = run(&plan, &json!({}), &json!({"region": "eu"}), &mut transport).expect("ok");
    assert_eq!(output, items(0..4));
    let urls: Vec<&str> = transport.requests.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://api.test/v1/items",
            "https://a.b.files.test/p2",
            "https://eu.api.test:443/p3",
            "https://eu.api.test:443/p4?x=1",
        ]
    );
}

#[test]
fn next_links_must_stay_on_the_declared_hosts() {
    let plan = plan_with(
        json!({"hosts": ["*.files.test", "{config.region}.api.test"]}),
        json!({
            "name": "list", "method": "GET", "endpoint": "/items",
            "pagination": {"type": "next_link", "from": "body", "pointer": "/next", "items": "/items", "max_pages": 10}
        }),
    );
    for evil in [
        "https://evil.test/p2",
        "https://api.test@evil.test/p2",
        "https://api.test:x@evil.test/",
        "http://api.test/v1/items?page=2",
        "//evil.test/p2",
        "https://files.test/p2",
        "https://api.test.evil.test/",
        "https://us.api.test/p2",
        "https://evil.test%2F@api.test/",
        "https:evil.test/p2",
        "ftp://api.test/p2",
        "https://[::1]/p2",
        "https://127.0.0.1/p2",
    ] {
        let mut transport = queue(vec![ok(json!({"items": items(0..1), "next": evil}))]);
        let error =
            run(&plan, &json!({}), &json!({"region": "eu"}), &mut transport).expect_err("refused");
        assert_eq!(
            (error.kind, error.code.as_str(), error.retryable),
            (
                ConnectorErrorKind::HttpDenied,
                "pagination_left_hosts",
                false
            ),
            "{evil}"
        );
        assert_eq!(transport.requests.len(), 1, "{evil}");
    }
}

#[test]
fn http_links_are_fine_when_the_base_url_is_http() {
    let plan = plan_with(
        json!({"base_url": "http://localhost:8080"}),
        json!({
            "name": "list", "method": "GET", "endpoint": "/items",
            "pagination": {"type": "next_link", "from": "body", "pointer": "/next", "items": "/items", "max_pages": 10}
        }),
    );
    let mut transport = queue(vec![
        ok(json!({"items": items(0..1), "next": "http://localhost:8080/items?p=2"})),
        ok(json!({"items": []})),
    ]);
    assert_eq!(run_ok(&plan, json!({}), &mut transport), items(0..1));
    assert_eq!(transport.requests.len(), 2);
}

#[test]
fn a_repeated_link_is_refused() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "next_link", "max_pages": 10}
    }));
    // Page 2 links back to page 1 (in other case: still the same URL).
    let mut transport = queue(vec![
        with_link(ok(items(0..1)), "</v1/items?page=2>; rel=next"),
        with_link(ok(items(1..2)), "<HTTPS://Api.Test/v1/items>; rel=next"),
    ]);
    let error = run_err(&plan, json!({}), &mut transport);
    assert_eq!(
        (error.kind, error.code.as_str(), error.retryable),
        (
            ConnectorErrorKind::Upstream,
            "pagination_link_repeated",
            false
        )
    );
    assert_eq!(transport.requests.len(), 2);
}

fn endless(on_max_pages: &str) -> Plan {
    action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "page", "param": "page", "max_pages": 3, "on_max_pages": on_max_pages}
    }))
}

#[test]
fn a_list_that_never_ends_stops_at_max_pages() {
    let mut transport = fake(|_, i| ok(items(i as u32..i as u32 + 1)));
    let error = run_err(&endless("error"), json!({}), &mut transport);
    assert_eq!(
        (error.kind, error.code.as_str(), error.retryable),
        (ConnectorErrorKind::Upstream, "pagination_max_pages", false)
    );
    assert!(error.message.contains('3'), "{}", error.message);
    assert_eq!(transport.requests.len(), 3);

    let mut transport = fake(|_, i| ok(items(i as u32..i as u32 + 1)));
    assert_eq!(
        run_ok(&endless("stop"), json!({}), &mut transport),
        items(0..3)
    );
    assert_eq!(transport.requests.len(), 3);

    // A last page at exactly max_pages is no error.
    let mut transport = fake(|_, i| {
        with_link(
            ok(items(i as u32..i as u32 + 1)),
            if i < 2 {
                "</v1/next>; rel=\"next\""
            } else {
                ""
            },
        )
    });
    let links = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "next_link", "max_pages": 3}
    }));
    let error = run_err(&links, json!({}), &mut transport);
    // The second page's link repeats the first's: refused before a third request.
    assert_eq!(error.code, "pagination_link_repeated");
    let mut transport = fake(|_, i| {
        with_link(
            ok(items(i as u32..i as u32 + 1)),
            &if i < 2 {
                format!("</v1/p{i}>; rel=\"next\"")
            } else {
                String::new()
            },
        )
    });
    assert_eq!(run_ok(&links, json!({}), &mut transport), items(0..3));
    assert_eq!(transport.requests.len(), 3);
}

#[test]
fn every_strategy_respects_max_pages() {
    let plans = [
        json!({"type": "page", "param": "page", "max_pages": 4}),
        json!({"type": "offset", "param": "o", "limit_param": "l", "limit": 1, "max_pages": 4}),
        json!({"type": "cursor", "param": "c", "cursor_from_last_item": "/id", "max_pages": 4}),
        json!({"type": "next_link", "from": "body", "pointer": "/0/next", "max_pages": 4}),
    ];
    for pagination in plans {
        let plan = action(
            json!({"name": "list", "method": "GET", "endpoint": "/items", "pagination": pagination.clone()}),
        );
        let mut transport = fake(|_, i| ok(json!([{"id": i, "next": format!("/v1/items/{i}")}])));
        let error = run_err(&plan, json!({}), &mut transport);
        assert_eq!(error.code, "pagination_max_pages", "{pagination}");
        assert_eq!(transport.requests.len(), 4, "{pagination}");
    }
}

#[test]
fn pages_must_hold_a_list() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "page", "param": "page", "items": "/data", "max_pages": 5}
    }));
    for body in [json!({"data": {"a": 1}}), json!({}), json!([1])] {
        let mut transport = queue(vec![ok(body)]);
        let error = run_err(&plan, json!({}), &mut transport);
        assert_eq!(
            (error.kind, error.code.as_str()),
            (ConnectorErrorKind::Upstream, "pagination_items_not_array")
        );
    }
}

#[test]
fn error_rules_apply_to_every_page() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "page", "param": "page", "max_pages": 5}
    }));
    let mut transport = queue(vec![
        ok(items(0..1)),
        status(429, json!({"message": "slow down"})),
    ]);
    let error = run_err(&plan, json!({}), &mut transport);
    assert_eq!(
        (error.kind, error.code.as_str(), error.retryable),
        (ConnectorErrorKind::RateLimited, "status_429", true)
    );
    assert_eq!(transport.requests.len(), 2);
}

#[test]
fn too_many_items_stop_the_list() {
    let page = |_: &Request, _: usize| ok(Value::Array(vec![json!(1); 40_000]));
    let error_plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "page", "param": "page", "max_pages": 10}
    }));
    let mut transport = fake(page);
    let error = run_err(&error_plan, json!({}), &mut transport);
    assert_eq!(
        (error.code.as_str(), error.retryable),
        ("pagination_too_many_items", false)
    );
    assert_eq!(transport.requests.len(), 3);
    let stop_plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "page", "param": "page", "max_pages": 10, "on_max_pages": "stop"}
    }));
    let mut transport = fake(page);
    let output = run_ok(&stop_plan, json!({}), &mut transport);
    assert_eq!(output.as_array().map(Vec::len), Some(100_000));
    assert_eq!(transport.requests.len(), 3);
}

#[test]
fn a_plan_with_max_pages_zero_sends_nothing() {
    let plan = action(json!({
        "name": "list", "method": "GET", "endpoint": "/items",
        "pagination": {"type": "page", "param": "page", "max_pages": 0}
    }));
    let mut transport = fake(|_, _| ok(items(0..1)));
    let error = run_err(&plan, json!({}), &mut transport);
    assert_eq!(
        (error.kind, error.code.as_str()),
        (ConnectorErrorKind::Internal, "invalid_definition")
    );
    assert!(transport.requests.is_empty());
}

#[test]
fn first_request_has_the_first_pages_params() {
    let plan = action(json!({
        "name": "list", "method": "POST", "endpoint": "/search",
        "pagination": {"type": "offset", "param": "offset", "limit_param": "limit", "limit": 50, "max_pages": 5}
    }));
    let request = first_request(&plan, &json!({"body": {"q": "x"}}), &json!({})).expect("ok");
    assert_eq!(request.url, "https://api.test/v1/search?offset=0&limit=50");
    assert_eq!(request.body.as_deref(), Some(&b"{\"q\":\"x\"}"[..]));
    // A paginated POST sends its body with every page.
    let mut transport = queue(vec![ok(items(0..1)), ok(json!([]))]);
    run_ok(&plan, json!({"body": {"q": "x"}}), &mut transport);
    assert!(
        transport
            .requests
            .iter()
            .all(|r| r.body.as_deref() == Some(&b"{\"q\":\"x\"}"[..]))
    );
}
