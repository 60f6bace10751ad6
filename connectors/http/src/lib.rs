//! The `http` connector: one generic `request` action to any host the tenant allows.
//!
//! It declares `hosts: ["*", "{config.credential_hosts*}"]`: requests may go anywhere the
//! tenant's allowlist permits, and a connection's API key is attached only to the hosts its
//! config lists in `credential_hosts` (exact names or `*.suffix`, never `*`), redirects
//! included. How the key is sent is the connection's choice too: the header `auth_header`
//! (default `Authorization`) with the prefix `auth_prefix` (default `Bearer `), so one
//! connector covers `Authorization: Bearer …` and `X-Api-Key: …` APIs alike. Without a
//! connection nothing is attached. Transport failures (denied, timeout, ...) are connector
//! errors; HTTP statuses are data unless the caller asks for `error_for_status`.

use std::collections::BTreeMap;

use airlock_sdk::prelude::*;
use serde_json::{Value, json};

pub struct Http;

impl Connector for Http {
    fn definition() -> Definition {
        Definition::new("http", env!("CARGO_PKG_VERSION"))
            .description("Send an HTTP request to any host the tenant allows")
            .auth(Auth::api_key_header("{config.auth_header}").prefix("{config.auth_prefix}"))
            .config_schema(config_schema())
            .host("*")
            .host("{config.credential_hosts*}")
            .action(
                Action::new("request", request)
                    .description("Send one HTTP request and return its status, headers and body"),
            )
    }
}

airlock_sdk::export_connector!(Http);

/// A connection's config: where its credential may go and how it is sent.
fn config_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "credential_hosts": {
                "description": "Hosts the credential is sent to: exact names or `*.suffix` (at most 32; `*` alone is refused). Requests to other hosts go without it.",
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "maxItems": 32
            },
            "auth_header": {
                "description": "The header that carries the credential.",
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "default": "Authorization"
            },
            "auth_prefix": {
                "description": "Written before the credential in that header (`Bearer `, `Token `, or empty).",
                "type": "string",
                "maxLength": 128,
                "default": "Bearer "
            }
        }
    })
}

#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    /// Defaults to GET.
    #[serde(default)]
    pub method: Method,
    /// An absolute http(s) URL; it may already carry a query string.
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters appended to `url`, percent-encoded.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// A JSON body, sent with `content-type: application/json` unless `headers` sets one.
    /// Exclusive with `text`.
    #[serde(default)]
    pub json: Option<Value>,
    /// A text body, sent as is. Exclusive with `json`.
    #[serde(default)]
    pub text: Option<String>,
    /// Fail on a non-2xx status (401/403 -> auth, 404 -> not-found, 429 -> rate-limited,
    /// 5xx -> upstream) instead of returning it.
    #[serde(default)]
    pub error_for_status: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestOutput {
    pub status: u16,
    /// Header names in lowercase; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The body as JSON when it parses as JSON, otherwise as text.
    pub body: Value,
}

fn request(cx: &Context, input: RequestInput) -> Result<RequestOutput, ConnectorError> {
    let mut builder = cx.http().request(input.method.as_str(), input.url);
    for (key, value) in &input.query {
        builder = builder.query(key, value);
    }
    for (name, value) in input.headers {
        builder = builder.header(name, value);
    }
    builder = match (input.json, input.text) {
        (Some(_), Some(_)) => {
            return Err(ConnectorError::invalid_input(
                "set at most one of `json` and `text`",
            ));
        }
        (Some(json), None) => builder.json(&json),
        (None, Some(text)) => builder.body(text),
        (None, None) => builder,
    };
    let mut response = builder.send()?;
    if input.error_for_status {
        response = response.error_for_status()?;
    }

    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in response.headers() {
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    let body =
        serde_json::from_slice(response.bytes()).unwrap_or_else(|_| Value::String(response.text()));
    Ok(RequestOutput {
        status: response.status(),
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_sdk::HttpError;
    use airlock_sdk::testing::{MockHost, MockResponse};
    use serde_json::json;

    fn err(result: Result<Value, ConnectorError>) -> ConnectorError {
        match result {
            Ok(v) => panic!("expected an error, got {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn manifest_allows_any_host_and_binds_the_key_to_the_connections_hosts() {
        let m = MockHost::new().manifest::<Http>();
        assert_eq!(m["name"], "http");
        assert_eq!(m["hosts"], json!(["*", "{config.credential_hosts*}"]));
        assert_eq!(
            m["auth"],
            json!({"type": "api_key", "in": "header", "name": "{config.auth_header}",
                "prefix": "{config.auth_prefix}"})
        );
        let config = &m["config_schema"]["properties"];
        assert_eq!(config["auth_header"]["default"], json!("Authorization"));
        assert_eq!(config["auth_prefix"]["default"], json!("Bearer "));
        let method = &m["actions"][0]["input_schema"]["$defs"]["Method"];
        assert_eq!(
            method["enum"],
            json!(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        );
    }

    #[test]
    fn sends_method_url_query_headers_and_json_body() {
        let host = MockHost::new().on_post(
            "https://api.example.test/items",
            MockResponse::json(201, json!({"id": 9})).header("X-Request-Id", "abc"),
        );
        let out = host.invoke::<Http>(
            "request",
            json!({
                "method": "POST",
                "url": "https://api.example.test/items",
                "query": {"dry run": "yes"},
                "headers": {"x-trace": "1"},
                "json": {"name": "widget"}
            }),
        );
        assert_eq!(
            out,
            Ok(json!({
                "status": 201,
                "headers": {"content-type": "application/json", "x-request-id": "abc"},
                "body": {"id": 9}
            }))
        );
        let req = &host.requests()[0];
        assert_eq!(req.url, "https://api.example.test/items?dry%20run=yes");
        assert_eq!(req.header("x-trace"), Some("1"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.body_json(), Some(json!({"name": "widget"})));
    }

    #[test]
    fn text_bodies_and_non_json_responses_stay_text() {
        let host = MockHost::new().on_put(
            "https://a.test/",
            MockResponse::text(200, "plain answer")
                .header("set-cookie", "a=1")
                .header("Set-Cookie", "b=2"),
        );
        let out = host.invoke::<Http>(
            "request",
            json!({"method": "PUT", "url": "https://a.test/x", "text": "hello"}),
        );
        let out = out.unwrap_or_default();
        assert_eq!(out["body"], "plain answer");
        assert_eq!(out["headers"]["set-cookie"], "a=1, b=2");
        assert_eq!(host.requests()[0].body.as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn statuses_are_data_unless_error_for_status_is_set() {
        let host = MockHost::new().on_get("https://a.test/", MockResponse::status(404));
        let out = host.invoke::<Http>("request", json!({"url": "https://a.test/x"}));
        assert_eq!(out.map(|o| o["status"].clone()), Ok(json!(404)));

        let e = err(host.invoke::<Http>(
            "request",
            json!({"url": "https://a.test/x", "error_for_status": true}),
        ));
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[test]
    fn host_refusals_and_timeouts_are_errors_not_responses() {
        let host = MockHost::new()
            .on_get(
                "https://internal.test/",
                MockResponse::error(HttpError::Denied("private address".into())),
            )
            .on_get(
                "https://slow.test/",
                MockResponse::error(HttpError::Timeout),
            );
        let e = err(host.invoke::<Http>("request", json!({"url": "https://internal.test/"})));
        assert_eq!((e.kind, e.retryable), (ErrorKind::HttpDenied, false));
        assert_eq!(e.message, "private address");
        let e = err(host.invoke::<Http>("request", json!({"url": "https://slow.test/"})));
        assert_eq!((e.kind, e.retryable), (ErrorKind::Upstream, true));
    }

    #[test]
    fn json_and_text_together_are_invalid_input() {
        let e = err(MockHost::new().invoke::<Http>(
            "request",
            json!({"url": "https://a.test/", "json": {}, "text": "x"}),
        ));
        assert_eq!(e.kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn unknown_methods_are_invalid_input() {
        let e = err(MockHost::new().invoke::<Http>(
            "request",
            json!({"method": "BREW", "url": "https://a.test/"}),
        ));
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        // Refused by the input schema, as the host refuses it, before the action runs.
        assert!(e.message.contains("`/method`"), "{e}");
        assert!(e.message.contains("\"BREW\" is not one of"), "{e}");
    }
}
