//! Properties of the templates and the request builder under hostile values: CR/LF, dot
//! segments, `%2F`, `/`, `?`, `#`, `@`, `:`, absolute URLs, unicode, and now and then a
//! string of about a megabyte. Cases: `AIRLOCK_PROPTEST_CASES` (20,000 by default).

use airlock_declarative::run::first_request;
use airlock_declarative::template::{HeaderTemplate, Op, UrlTemplate, Vars};
use airlock_declarative::{Plan, paginate};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};

fn config() -> Config {
    let cases = std::env::var("AIRLOCK_PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(20_000);
    Config {
        cases,
        // Nothing written into the source tree; a failure prints its seed and minimal case.
        failure_persistence: None,
        ..Config::default()
    }
}

const TOKENS: &[&str] = &[
    "\r\n",
    "\r",
    "\n",
    "\0",
    "\t",
    " ",
    "..",
    ".",
    "%2F",
    "%2e%2e",
    "%",
    "/",
    "\\",
    "?",
    "#",
    "@",
    ":",
    "&",
    "=",
    "+",
    ",",
    "{x}",
    "}",
    "https://evil.test/",
    "//evil.test",
    "http:",
    "javascript:alert(1)",
    "é",
    "😀",
    "\u{202e}",
    "\u{feff}",
    "a",
    "Z9",
    "-_.~",
];

/// A string made of hostile pieces and random text; one in a thousand is long (up to 20 kB,
/// or one time in ten about a megabyte) and made of one piece repeated.
fn hostile() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        4 => prop::sample::select(TOKENS).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "[a-z0-9]{0,12}",
    ];
    let small = prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat());
    let bytes = prop_oneof![9 => 1_000usize..=20_000, 1 => 900_000usize..=1_100_000];
    let big = (prop::sample::select(TOKENS), bytes)
        .prop_map(|(token, bytes)| token.repeat(bytes / token.len().max(1)));
    prop_oneof![999 => small, 1 => big].boxed()
}

/// Mostly hostile strings, sometimes another JSON value a variable may hold.
fn value() -> BoxedStrategy<Value> {
    prop_oneof![
        12 => hostile().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => prop::collection::vec(hostile().prop_map(Value::String), 0..4).prop_map(Value::Array),
    ]
    .boxed()
}

/// Every variable the templates use, each defined or not.
fn vars() -> impl Strategy<Value = Map<String, Value>> {
    let names = [
        "a",
        "b",
        "owner",
        "repo",
        "q",
        "r",
        "state",
        "token",
        "config.acct",
    ];
    prop::collection::vec(prop::option::weighted(0.85, value()), names.len()).prop_map(
        move |values| {
            names
                .iter()
                .zip(values)
                .filter_map(|(name, value)| Some(((*name).to_owned(), value?)))
                .collect()
        },
    )
}

struct Flat<'a>(&'a Map<String, Value>);

impl Vars for Flat<'_> {
    fn get(&self, _op: Op, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
}

const URL_TEMPLATES: &[&str] = &[
    "/repos/{owner}/{repo}/issues{?state,q}",
    "/x{/a}{/b}/y{?q}{&r}",
    "/files/{a},{b}/raw?fixed=1{&q,r}",
    "{/a}/tail{?q*}",
    "/search{?q}",
    "/acct/{config.acct}/v{/owner}",
];

const HEADER_TEMPLATES: &[&str] = &["Bearer {token}", "{a}", "x-{a}-{config.acct}-{b}", "plain"];

/// Whether a value leaves its variable undefined (the template then writes nothing for it).
fn undefined(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_null),
        Some(_) => false,
    }
}

/// What a template's structure predicts: its literal prefix, the `/` of its path (literal
/// ones and one per defined value of a `{/x}`), and whether the URL has a `?`.
struct Shape {
    prefix: String,
    slashes: usize,
    query: bool,
}

fn shape(template: &str, vars: &Map<String, Value>) -> Shape {
    let prefix = template.split('{').next().unwrap_or_default().to_owned();
    let mut slashes = 0;
    let mut query = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '{' {
            let end = rest.find('}').expect("templates are well-formed");
            let expr = &rest[1..end];
            let (op, list) = match expr.as_bytes()[0] {
                b'/' | b'?' | b'&' => (expr.as_bytes()[0], &expr[1..]),
                _ => (b' ', expr),
            };
            let defined = list
                .split(',')
                .any(|name| !undefined(vars.get(name.trim_end_matches('*'))));
            match op {
                b'/' if defined => {
                    slashes += list
                        .split(',')
                        .filter(|name| !undefined(vars.get(*name)))
                        .count()
                }
                // A defined `{?x}` or `{&x}` opens the query if nothing before did.
                b'?' | b'&' if defined => query = true,
                _ => {}
            }
            rest = &rest[end + 1..];
        } else {
            if c == '?' {
                query = true;
            }
            if c == '/' && !query {
                slashes += 1;
            }
            rest = &rest[c.len_utf8()..];
        }
    }
    Shape {
        prefix,
        slashes,
        query,
    }
}

/// The string values of the variables, long enough not to be in an error's own words.
fn quotable(vars: &Map<String, Value>) -> Vec<&str> {
    vars.values()
        .filter_map(Value::as_str)
        .filter(|text| text.len() >= 12)
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn url_values_never_change_the_structure(vars in vars()) {
        for text in URL_TEMPLATES {
            let template = UrlTemplate::parse(text).expect("a well-formed template");
            let expected = shape(text, &vars);
            match template.expand(&Flat(&vars)) {
                Err(error) => {
                    let shown = error.to_string();
                    for value in quotable(&vars) {
                        prop_assert!(!shown.contains(value), "{text}: the error quotes a value");
                    }
                }
                Ok(url) => {
                    prop_assert!(url.starts_with(&expected.prefix), "{text} -> {url}");
                    prop_assert!(
                        url.bytes().all(|b| b.is_ascii_graphic()),
                        "{text} -> {url}: a byte outside printable ASCII"
                    );
                    let path = url.split('?').next().unwrap_or_default();
                    prop_assert_eq!(path.matches('/').count(), expected.slashes, "{} -> {}", text, url);
                    prop_assert_eq!(url.matches('?').count(), usize::from(expected.query), "{} -> {}", text, url);
                    prop_assert!(!url.contains('#'), "{text} -> {url}");
                    // Nothing in the path reads as a dot segment.
                    prop_assert!(path.split('/').all(|segment| segment != "." && segment != ".."), "{text} -> {url}");
                }
            }
        }
    }

    #[test]
    fn header_values_never_carry_control_characters(vars in vars()) {
        for text in HEADER_TEMPLATES {
            let template = HeaderTemplate::parse(text).expect("a well-formed template");
            match template.expand(&Flat(&vars)) {
                Err(error) => {
                    let shown = error.to_string();
                    for value in quotable(&vars) {
                        prop_assert!(!shown.contains(value), "{text}: the error quotes a value");
                    }
                }
                Ok(None) => {}
                Ok(Some(header)) => prop_assert!(
                    !header.contains(['\r', '\n', '\0']) && header.chars().all(|c| c == '\t' || !c.is_control()),
                    "{text} -> {header:?}"
                ),
            }
        }
    }

    #[test]
    fn link_handling_never_panics(
        header in hostile(),
        link in prop_oneof![hostile(), hostile().prop_map(|tail| format!("https://api.test{tail}"))],
        name in hostile(),
        value in hostile(),
    ) {
        let _ = paginate::next_link_in_header(&header);
        let _ = paginate::next_link_in_header(&format!("<{link}>; rel=\"{header}\", {header}"));
        let current = "https://api.test/v1/items?page=1";
        if let Ok(url) = paginate::resolve(current, &link) {
            prop_assert!(!url.contains(['\r', '\n', '\0', ' ', '\\', '#']), "{url:?}");
        }
        let url = paginate::set_query_param(current, &name, &value);
        prop_assert!(url.starts_with("https://api.test/v1/items?"), "{url}");
        prop_assert_eq!(url.matches('?').count(), 1);
        prop_assert!(url.bytes().all(|b| b.is_ascii_graphic()), "{}", url);
    }

    #[test]
    fn first_request_never_panics(input in input(), acct in prop::option::of(value())) {
        let config = match acct {
            Some(acct) => json!({"acct": acct}),
            None => json!({}),
        };
        for plan in plans() {
            if let Ok(request) = first_request(&plan, &input, &config) {
                prop_assert!(request.url.starts_with("https://api.test/v1"), "{}", request.url);
                prop_assert!(request.url.bytes().all(|b| b.is_ascii_graphic()), "{}", request.url);
                for (name, value) in &request.headers {
                    prop_assert!(!value.contains(['\r', '\n', '\0']), "{name}: {value:?}");
                }
            }
        }
    }
}

/// Arbitrary JSON, nested a little, with the names the plans read among its keys.
fn json_value() -> BoxedStrategy<Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec!["owner", "repo", "state", "labels", "token", "x", "body", "path", "query", "headers"]).prop_map(str::to_owned),
        1 => hostile(),
    ];
    value()
        .prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
        .boxed()
}

/// An input document: usually `{"path", "query", "headers", "body"}` with any of them
/// missing or odd, sometimes any JSON at all.
fn input() -> impl Strategy<Value = Value> {
    let group = prop::option::of(json_value());
    prop_oneof![
        6 => (group.clone(), group.clone(), group.clone(), group).prop_map(|(path, query, headers, body)| {
            let mut input = Map::new();
            for (name, value) in [("path", path), ("query", query), ("headers", headers), ("body", body)] {
                if let Some(value) = value {
                    input.insert(name.to_owned(), value);
                }
            }
            Value::Object(input)
        }),
        1 => json_value(),
    ]
}

fn plans() -> Vec<Plan> {
    let base = |action: Value| -> Plan {
        serde_json::from_value(json!({
            "base_url": "https://api.test/v1",
            "hosts": ["*.api.test"],
            "headers": {"Authorization": "Bearer {token}", "X-Account": "{config.acct}"},
            "errors": [],
            "action": action
        }))
        .expect("a plan")
    };
    vec![
        base(
            json!({"name": "list", "method": "GET", "endpoint": "/repos/{owner}/{repo}/issues{?state,labels*}"}),
        ),
        base(json!({
            "name": "create", "method": "POST", "endpoint": "/acct/{config.acct}/items{/owner}",
            "body": {"encoding": "form", "template": {
                "x": {"$input": "/body/x"}, "acct": {"$config": "/acct"},
                "list": [{"$input": "/path/owner"}, {"$input": "/body"}], "fixed": {"n": 1}
            }}
        })),
        base(json!({
            "name": "search", "method": "POST", "endpoint": "/search?fixed=1{&state}",
            "pagination": {"type": "page", "param": "page", "size_param": "state", "size": 10, "max_pages": 5}
        })),
        base(json!({
            "name": "put", "method": "PUT", "endpoint": "/things/{owner}",
            "body": {"template": {"$input": "/body"}},
            "pagination": {"type": "offset", "param": "o", "limit_param": "l", "limit": 3, "max_pages": 5}
        })),
    ]
}
