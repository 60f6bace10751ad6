//! The declarative connector format, as uploaded (JSON, or YAML converted to JSON by the
//! host). `docs/declarative.md` describes every field; `schema/declarative.schema.json` is
//! its published JSON Schema, derived from these types with the `schema` feature (schemars;
//! `tests/schema.rs` keeps the file current). Field names follow the manifest's snake_case;
//! the names of the product's connector contract (`endpointTemplate`, `pathSchema`, ...) are
//! accepted as aliases, which the schema leaves out.
//!
//! The `schemars` attributes below repeat, for editors, rules that `compile.rs` enforces
//! (names, versions, `max_pages`, statuses, error kinds); the checks stay the authority.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The value of `format` every definition carries: what tells a definition from a manifest,
/// and the version of this format.
pub const FORMAT: &str = "airlock.declarative/v1";

/// A declarative connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(title = "Airlock declarative connector (airlock.declarative/v1)")
)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Where an editor finds the JSON Schema; ignored.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Always `airlock.declarative/v1`: what tells a definition from a manifest, and the
    /// version of the format the host reads.
    #[cfg_attr(feature = "schema", schemars(extend("const" = FORMAT)))]
    pub format: String,
    /// The connector's name: 1-64 of `a-z`, `0-9`, `-`, `_`, starting with a letter.
    #[cfg_attr(feature = "schema", schemars(pattern(NAME_PATTERN)))]
    pub name: String,
    /// A semantic version, `MAJOR.MINOR.PATCH`; the same name and version with other content
    /// is refused (versions are immutable).
    #[cfg_attr(
        feature = "schema",
        schemars(pattern(VERSION_PATTERN), length(max = 64))
    )]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The manifest's auth spec (`docs/manifest.md`): how the host attaches the connection's
    /// credential. `{"type": "none"}` when absent.
    #[serde(default = "no_auth")]
    pub auth: Value,
    /// Every request's URL starts here: `https://api.github.com`, or with a value of the
    /// connection's config in the host (`https://{config.subdomain}.zendesk.com/api/v2`,
    /// one DNS label) or the path (`/{config.region}`, encoded).
    #[serde(alias = "baseUrl")]
    pub base_url: String,
    /// Further hosts the connector may call (a next-page link to another host, say), written
    /// as in a manifest, where `{config.NAME}` stands for one DNS label of the config. The host
    /// of `base_url` is always included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// JSON Schema of the connection's non-secret config (base URL parts, region, account
    /// id): checked when a connection is created, stored in clear, readable in templates as
    /// `{config.NAME}`.
    #[serde(
        default,
        alias = "configSchema",
        skip_serializing_if = "Option::is_none"
    )]
    pub config_schema: Option<Value>,
    /// Headers sent with every action's requests (an action's own win), as header templates.
    #[serde(
        default,
        alias = "headersTemplate",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, String>,
    /// Error rules for every action, tried after the action's own and before the defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorRule>,
    /// What `test-connection` does: run this action with this input; it must succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestCall>,
    pub actions: Vec<ActionDef>,
}

fn no_auth() -> Value {
    serde_json::json!({"type": "none"})
}

/// One action: one request (or one per page), described as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ActionDef {
    /// 1-64 of `a-z`, `0-9`, `-`, `_`, starting with a letter; unique in the connector.
    #[cfg_attr(feature = "schema", schemars(pattern(NAME_PATTERN)))]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub method: Method,
    /// A URL template relative to `base_url`, in the RFC 6570 subset of `template.rs`:
    /// `/repos/{owner}/{repo}/issues{?state,per_page}`.
    #[serde(alias = "endpointTemplate")]
    pub endpoint: String,
    /// Header templates: literal text and `{name}` (from the input's `headers`) or
    /// `{config.NAME}`.
    #[serde(
        default,
        alias = "headersTemplate",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, String>,
    /// JSON Schema (an object) of the input's `path`: the endpoint's `{x}` and `{/x}`.
    #[serde(default, alias = "pathSchema", skip_serializing_if = "Option::is_none")]
    pub path_schema: Option<Value>,
    /// JSON Schema (an object) of the input's `query`: the endpoint's `{?x}` and `{&x}`.
    #[serde(
        default,
        alias = "querySchema",
        skip_serializing_if = "Option::is_none"
    )]
    pub query_schema: Option<Value>,
    /// JSON Schema (an object) of the input's `headers`: the header templates' `{x}`.
    #[serde(
        default,
        alias = "headersSchema",
        skip_serializing_if = "Option::is_none"
    )]
    pub headers_schema: Option<Value>,
    /// JSON Schema of the input's `body`.
    #[serde(default, alias = "bodySchema", skip_serializing_if = "Option::is_none")]
    pub body_schema: Option<Value>,
    /// Whether the input must carry a `body` (when the action has a `body_schema`); default
    /// true. An API whose body fields are all optional says `false`.
    #[serde(
        default = "yes",
        alias = "bodyRequired",
        skip_serializing_if = "is_true"
    )]
    pub body_required: bool,
    /// How the request body is built; without it, the input's `body` is sent as JSON when
    /// the action has a `body_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyDef>,
    /// JSON Schema of the action's output (after `output` and pagination).
    #[serde(
        default,
        alias = "outputSchema",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_schema: Option<Value>,
    /// A JSON Pointer into the response body: the output (`""`, the default: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Error rules tried before the connector's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// The action's wall-clock budget, clamped by the tenant's `timeout_ms`.
    #[serde(default, alias = "timeoutMs", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub timeout_ms: Option<u64>,
    /// The manifest's retry policy (`max_attempts`, `initial_backoff_ms`, `max_backoff_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    pub fn as_str(self) -> &'static str {
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

/// The request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BodyDef {
    #[serde(default)]
    pub encoding: BodyEncoding,
    /// The body as JSON in which `{"$input": "<pointer>"}` stands for the value at that
    /// pointer of the input (`/body/text`, `/path/owner`) and `{"$config": "<pointer>"}` for
    /// one of the connection's config; a value that is absent drops its member (or is `null`
    /// in an array). Without a template, the input's `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    /// `application/json`.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`, nested values in brackets (`metadata[plan]=pro`,
    /// `items[0][price]=p_1`), as Stripe and Slack read them.
    Form,
}

/// When a response is an error, and which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// The statuses it covers: a number (`404`), a class (`"4xx"`), or a list of those.
    /// Absent: any status (with `when`, for an API that answers 200 with `{"ok": false}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusMatch>,
    /// And only when the JSON body has this value at this pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<BodyMatch>,
    /// And only when the response carries this header with this value (GitHub's rate-limit
    /// 403 says `x-ratelimit-remaining: 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_header: Option<HeaderMatch>,
    /// The connector error kind (`auth`, `invalid_input`, `not_found`, `rate_limited`,
    /// `upstream`, `internal`), or `success` to treat a matching response as success.
    #[cfg_attr(
        feature = "schema",
        schemars(extend("enum" = ["success", "auth", "invalid_input", "not_found", "rate_limited", "upstream", "internal"]))
    )]
    pub kind: String,
    /// Whether a durable run retries it; defaults by kind (`rate_limited` and `upstream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// A JSON Pointer to the upstream's own message in the body, quoted in the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum StatusMatch {
    One(StatusPattern),
    Any(Vec<StatusPattern>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum StatusPattern {
    /// One status, 100 to 599.
    Code(#[cfg_attr(feature = "schema", schemars(range(min = 100, max = 599)))] u16),
    /// `"1xx"` to `"5xx"`.
    Class(#[cfg_attr(feature = "schema", schemars(pattern(r"^[1-5][xX][xX]$")))] String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BodyMatch {
    pub pointer: String,
    pub equals: Value,
}

/// A response header's value, compared as text after trimming; the name ignores case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub equals: String,
}

/// How an action reads more than one page. Every strategy has a mandatory `max_pages`, stops
/// on an empty page, and refuses a repeated cursor or link and a link off the declared hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// `?page=1`, `?page=2`, ...
    Page {
        param: String,
        #[serde(default = "one")]
        start: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_param: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(default)]
        items: String,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_PAGES_CAP)))]
        max_pages: u32,
        #[serde(default)]
        on_max_pages: OnMaxPages,
    },
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, ...
    Offset {
        param: String,
        limit_param: String,
        #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
        limit: u64,
        #[serde(default)]
        items: String,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_PAGES_CAP)))]
        max_pages: u32,
        #[serde(default)]
        on_max_pages: OnMaxPages,
    },
    /// The next page's `?param=` comes from the body: at `cursor` (a pointer into the page),
    /// or, with `cursor_from_last_item`, at that pointer into the page's last item (Stripe's
    /// `starting_after`). `has_more`: a pointer to a boolean that says whether to go on.
    Cursor {
        param: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor_from_last_item: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        has_more: Option<String>,
        #[serde(default)]
        items: String,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_PAGES_CAP)))]
        max_pages: u32,
        #[serde(default)]
        on_max_pages: OnMaxPages,
    },
    /// The next page is a URL: the `Link` header's `rel="next"` (`from: "header"`), or the
    /// string at `pointer` in the body (`from: "body"`). It must stay on the declared hosts.
    NextLink {
        #[serde(default)]
        from: LinkSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pointer: Option<String>,
        #[serde(default)]
        items: String,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_PAGES_CAP)))]
        max_pages: u32,
        #[serde(default)]
        on_max_pages: OnMaxPages,
    },
}

fn one() -> u64 {
    1
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

impl Pagination {
    pub fn max_pages(&self) -> u32 {
        match self {
            Pagination::Page { max_pages, .. }
            | Pagination::Offset { max_pages, .. }
            | Pagination::Cursor { max_pages, .. }
            | Pagination::NextLink { max_pages, .. } => *max_pages,
        }
    }

    /// The pointer to each page's items (`""`: the page is the array).
    pub fn items(&self) -> &str {
        match self {
            Pagination::Page { items, .. }
            | Pagination::Offset { items, .. }
            | Pagination::Cursor { items, .. }
            | Pagination::NextLink { items, .. } => items,
        }
    }

    pub fn on_max_pages(&self) -> OnMaxPages {
        match self {
            Pagination::Page { on_max_pages, .. }
            | Pagination::Offset { on_max_pages, .. }
            | Pagination::Cursor { on_max_pages, .. }
            | Pagination::NextLink { on_max_pages, .. } => *on_max_pages,
        }
    }
}

/// What reaching `max_pages` with more pages to read does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnMaxPages {
    /// Fail with `pagination_max_pages`: a partial list is not passed off as the whole.
    #[default]
    Error,
    /// Return the pages read so far.
    Stop,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LinkSource {
    #[default]
    Header,
    Body,
}

/// `test-connection`: an action and its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TestCall {
    pub action: String,
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The most pages any action may declare; a tenant's `max_requests` per invocation bounds it
/// further at run time.
pub const MAX_PAGES_CAP: u32 = 1_000;

/// `airlock_contract::connector::check_name` as a JSON Schema pattern (for the schema only).
#[cfg(feature = "schema")]
const NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,63}$";

/// `airlock_contract::connector::check_version` as a JSON Schema pattern (for the schema
/// only; the length is a separate `maxLength`).
#[cfg(feature = "schema")]
const VERSION_PATTERN: &str = r"^[0-9]+\.[0-9]+\.[0-9]+([-+][A-Za-z0-9.+-]*)?$";
