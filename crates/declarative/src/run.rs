//! One action, run from its [`Plan`]: build the request (templates, headers, body), send it
//! through a [`Transport`], read the response (error rules, output pointer), and follow the
//! pagination strategy under its cap.

use airlock_contract::ConnectorErrorKind;
use serde_json::Value;

use crate::plan::Plan;
use crate::template::{self, CONFIG_PREFIX, HeaderTemplate, Op, UrlTemplate, Vars};
use crate::{body, paginate, response};

/// A request as the runner builds it. Header names as the definition wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The values of every header named `name` (case-insensitive), in order.
    pub fn header_values<'r>(&'r self, name: &'r str) -> impl Iterator<Item = &'r str> + 'r {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the runner reaches the network: the host's `http` import in the runner component, a
/// fake in tests. A transport failure is already a connector error (denied, timeout, ...).
pub trait Transport {
    fn send(&mut self, request: Request) -> Result<Response, RunError>;
}

/// Why an action failed. `code` is a stable snake_case name (`pagination_max_pages`,
/// `status_404`, `missing_path_variable`, ...) that starts the message the caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    pub kind: ConnectorErrorKind,
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RunError {}

impl RunError {
    pub fn new(
        kind: ConnectorErrorKind,
        code: impl Into<String>,
        message: impl Into<String>,
        retryable: bool,
    ) -> Self {
        RunError {
            kind,
            code: code.into(),
            message: message.into(),
            retryable,
        }
    }

    /// The input cannot make a request (never retryable: the same input fails the same way).
    pub fn invalid_input(code: &str, message: impl Into<String>) -> Self {
        Self::new(ConnectorErrorKind::InvalidInput, code, message, false)
    }

    /// The plan is not one the checks would have let through (`invalid_definition`).
    pub fn invalid_definition(message: impl Into<String>) -> Self {
        Self::new(
            ConnectorErrorKind::Internal,
            "invalid_definition",
            message,
            false,
        )
    }

    /// The upstream answered something the runner cannot use.
    pub fn upstream(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self::new(ConnectorErrorKind::Upstream, code, message, retryable)
    }
}

/// Runs the action of `plan` with `input` (already checked by the host against the action's
/// input schema: `{"path": {...}, "query": {...}, "headers": {...}, "body": ...}`) and the
/// connection's `config`. Returns the output (the extracted value, or for a paginated action
/// the items of every page in order).
pub fn run(
    plan: &Plan,
    input: &Value,
    config: &Value,
    transport: &mut dyn Transport,
) -> Result<Value, RunError> {
    let request = build_request(plan, input, config)?;
    match &plan.action.pagination {
        None => {
            let response = transport.send(request)?;
            let body = response::read(&plan.errors, &response)?;
            response::extract(body, plan.action.output.as_deref())
        }
        Some(pagination) => paginate::run(plan, pagination, config, request, transport),
    }
}

/// The first request `run` would send, without sending it (for `testAction`'s preview and
/// for tests).
pub fn first_request(plan: &Plan, input: &Value, config: &Value) -> Result<Request, RunError> {
    let request = build_request(plan, input, config)?;
    match &plan.action.pagination {
        None => Ok(request),
        Some(pagination) => paginate::first_request(pagination, request),
    }
}

/// The request before pagination adds its parameters: URL, headers and body.
fn build_request(plan: &Plan, input: &Value, config: &Value) -> Result<Request, RunError> {
    let url = build_url(plan, input, config)?;
    let body = body::build(plan.action.method, plan.action.body.as_ref(), input, config)?;
    let headers = build_headers(plan, input, config, body.as_ref().map(|b| b.content_type))?;
    Ok(Request {
        method: plan.action.method.as_str().to_owned(),
        url,
        headers,
        body: body.map(|b| b.bytes),
    })
}

/// A URL template's variables: `config.NAME` from the config, `{x}` and `{/x}` from the
/// input's `path`, `{?x}` and `{&x}` from its `query`.
struct UrlVars<'a> {
    input: &'a Value,
    config: &'a Value,
}

impl Vars for UrlVars<'_> {
    fn get(&self, op: Op, name: &str) -> Option<&Value> {
        if let Some(key) = name.strip_prefix(CONFIG_PREFIX) {
            return self.config.get(key);
        }
        let group = match op {
            Op::Simple | Op::Segment => "path",
            Op::Query | Op::QueryContinue => "query",
        };
        self.input.get(group)?.get(name)
    }
}

/// A header template's variables: `config.NAME` from the config, others from the input's
/// `headers`.
struct HeaderVars<'a> {
    input: &'a Value,
    config: &'a Value,
}

impl Vars for HeaderVars<'_> {
    fn get(&self, _op: Op, name: &str) -> Option<&Value> {
        if let Some(key) = name.strip_prefix(CONFIG_PREFIX) {
            return self.config.get(key);
        }
        self.input.get("headers")?.get(name)
    }
}

fn expand_error(error: template::ExpandError) -> RunError {
    RunError::invalid_input("invalid_value", error.to_string())
}

/// Whether a variable's value leaves it undefined for a template (absent, `null`, or a list
/// with nothing but nulls in it).
fn is_undefined(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_null),
        Some(_) => false,
    }
}

/// The base URL (its `{config.NAME}` expanded, one trailing `/` removed).
pub(crate) fn base_url(plan: &Plan, config: &Value) -> Result<String, RunError> {
    let mut base = template::expand_base_url(&plan.base_url, config).map_err(expand_error)?;
    if base.ends_with('/') {
        base.pop();
    }
    Ok(base)
}

fn build_url(plan: &Plan, input: &Value, config: &Value) -> Result<String, RunError> {
    let mut url = base_url(plan, config)?;
    let endpoint = UrlTemplate::parse(&plan.action.endpoint).map_err(|e| {
        RunError::invalid_definition(format!("the action's endpoint does not parse: {e}"))
    })?;
    // The checks refuse such an endpoint when the definition is saved; a plan that skipped
    // them must not glue a value onto the base URL's host (`https://api.test` + `.evil.test`).
    if !endpoint.is_relative_path() {
        return Err(RunError::invalid_definition(
            "the action's endpoint must start with `/`, `?`, `{/x}` or `{?x}`",
        ));
    }
    let vars = UrlVars { input, config };
    for (op, var) in endpoint.variables() {
        if matches!(op, Op::Simple | Op::Segment) && is_undefined(vars.get(op, &var.name)) {
            let message = match var.name.strip_prefix(CONFIG_PREFIX) {
                Some(key) => format!("`{key}` is not set in the connection's config"),
                None => format!("the path variable `{}` is missing", var.name),
            };
            return Err(RunError::invalid_input("missing_path_variable", message));
        }
    }
    url.push_str(&endpoint.expand(&vars).map_err(expand_error)?);
    Ok(url)
}

/// An HTTP header name: a non-empty RFC 9110 token.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn build_headers(
    plan: &Plan,
    input: &Value,
    config: &Value,
    content_type: Option<&'static str>,
) -> Result<Vec<(String, String)>, RunError> {
    let vars = HeaderVars { input, config };
    let mut headers = Vec::with_capacity(plan.headers.len() + 2);
    for (name, text) in &plan.headers {
        if !is_header_name(name) {
            return Err(RunError::invalid_definition(format!(
                "{name:?} is not a header name"
            )));
        }
        let template = HeaderTemplate::parse(text).map_err(|e| {
            RunError::invalid_definition(format!("the header `{name}` does not parse: {e}"))
        })?;
        if let Some(value) = template.expand(&vars).map_err(expand_error)? {
            headers.push((name.clone(), value));
        }
    }
    let has = |headers: &[(String, String)], wanted: &str| {
        headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(wanted))
    };
    if !has(&headers, "accept") {
        headers.push(("accept".to_owned(), "application/json".to_owned()));
    }
    if let Some(content_type) = content_type
        && !has(&headers, "content-type")
    {
        headers.push(("content-type".to_owned(), content_type.to_owned()));
    }
    Ok(headers)
}
