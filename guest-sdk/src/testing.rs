//! `MockHost`: runs a connector natively under `cargo test` with canned HTTP responses,
//! captured logs, in-memory state and the host's checks: declared hosts, and each action's
//! input and output against the schemas of its manifest.
//!
//! As on the host, an input that does not match the action's `input_schema` is refused with
//! an `invalid_input` error naming the failing field's JSON pointer, and the action is not
//! called; an output that does not match its `output_schema` is an `internal` error whose
//! message starts with `invalid_output` (the host's error kind for it), never a success.
//!
//! ```
//! # use airlock_sdk::prelude::*;
//! # use airlock_sdk::testing::{MockHost, MockResponse};
//! # use serde_json::json;
//! # struct Echo;
//! # impl Connector for Echo {
//! #     fn definition() -> Definition {
//! #         Definition::new("echo", "0.1.0").host("api.example.test").action(Action::new(
//! #             "get",
//! #             |cx: &Context, _: serde_json::Value| -> Result<serde_json::Value, ConnectorError> {
//! #                 cx.http().get("https://api.example.test/thing").send()?.error_for_status()?.json()
//! #             },
//! #         ))
//! #     }
//! # }
//! let host = MockHost::new()
//!     .on_get("https://api.example.test/thing", MockResponse::json(200, json!({"id": 1})));
//! assert_eq!(host.invoke::<Echo>("get", json!({})), Ok(json!({"id": 1})));
//! assert_eq!(host.requests()[0].method, "GET");
//! ```

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Connector;
use crate::error::ConnectorError;
use crate::export;
use crate::host::Host;
use crate::http::{HttpError, Request, Response};
use crate::log::Level;
use crate::state::StateError;

/// A canned answer: a response, or the transport error the host would report.
#[derive(Debug, Clone)]
pub struct MockResponse {
    result: Result<Response, HttpError>,
}

impl MockResponse {
    pub fn status(status: u16) -> Self {
        Self::bytes(status, Vec::new())
    }

    pub fn bytes(status: u16, body: impl Into<Vec<u8>>) -> Self {
        MockResponse {
            result: Ok(Response::new(status, Vec::new(), body.into())),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::bytes(status, body.into()).header("content-type", "text/plain")
    }

    pub fn json(status: u16, body: Value) -> Self {
        Self::bytes(status, body.to_string()).header("content-type", "application/json")
    }

    /// The host fails the request instead of answering (denied, timeout, ...).
    pub fn error(error: HttpError) -> Self {
        MockResponse { result: Err(error) }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Ok(response) = &mut self.result {
            response.push_header(name.into(), value.into());
        }
        self
    }
}

/// One line the connector logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: Level,
    pub message: String,
}

type Route = Box<dyn Fn(&Request) -> Option<MockResponse>>;

/// A stand-in for the Airlock host. Builder methods take and return `self`; everything else
/// takes `&self`, so one host can serve several invocations and be inspected between them.
#[derive(Clone, Default)]
pub struct MockHost {
    inner: Rc<Inner>,
}

struct Inner {
    routes: RefCell<Vec<Route>>,
    requests: RefCell<Vec<Request>>,
    logs: RefCell<Vec<LogEntry>>,
    state: RefCell<BTreeMap<String, Vec<u8>>>,
    state_failure: RefCell<Option<StateError>>,
    /// The running connector's declared hosts, as the real host's gate would check them.
    hosts: RefCell<Vec<String>>,
    idempotency_key: RefCell<Option<String>>,
    config: RefCell<Option<Value>>,
    /// Whether inputs and outputs are checked against the actions' schemas.
    check_schemas: Cell<bool>,
    /// Compiled schemas per connector type and action, built on first use.
    validators: RefCell<HashMap<(TypeId, String), Rc<Validators>>>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            routes: RefCell::default(),
            requests: RefCell::default(),
            logs: RefCell::default(),
            state: RefCell::default(),
            state_failure: RefCell::default(),
            hosts: RefCell::default(),
            idempotency_key: RefCell::default(),
            config: RefCell::default(),
            check_schemas: Cell::new(true),
            validators: RefCell::default(),
        }
    }
}

/// One action's compiled input and output schemas.
struct Validators {
    input: jsonschema::Validator,
    output: jsonschema::Validator,
}

impl MockHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers requests with this method whose URL starts with `url_prefix`. Routes are tried
    /// in the order they were added; the first match answers.
    pub fn on(self, method: &str, url_prefix: impl Into<String>, response: MockResponse) -> Self {
        let method = method.to_ascii_uppercase();
        let prefix = url_prefix.into();
        self.on_request(move |req| {
            (req.method == method && req.url.starts_with(&prefix)).then(|| response.clone())
        })
    }

    pub fn on_get(self, url_prefix: impl Into<String>, response: MockResponse) -> Self {
        self.on("GET", url_prefix, response)
    }

    pub fn on_post(self, url_prefix: impl Into<String>, response: MockResponse) -> Self {
        self.on("POST", url_prefix, response)
    }

    pub fn on_put(self, url_prefix: impl Into<String>, response: MockResponse) -> Self {
        self.on("PUT", url_prefix, response)
    }

    pub fn on_patch(self, url_prefix: impl Into<String>, response: MockResponse) -> Self {
        self.on("PATCH", url_prefix, response)
    }

    pub fn on_delete(self, url_prefix: impl Into<String>, response: MockResponse) -> Self {
        self.on("DELETE", url_prefix, response)
    }

    /// The general route: return `Some` to answer the request, `None` to pass it on.
    pub fn on_request(self, route: impl Fn(&Request) -> Option<MockResponse> + 'static) -> Self {
        self.inner.routes.borrow_mut().push(Box::new(route));
        self
    }

    /// Invocations see this connection config (`ctx.config()`), as a connection's would be.
    pub fn with_config(self, config: Value) -> Self {
        *self.inner.config.borrow_mut() = Some(config);
        self
    }

    /// Invocations see this idempotency key, as a durable run's step does (`<run>:<step>`).
    pub fn with_idempotency_key(self, key: impl Into<String>) -> Self {
        *self.inner.idempotency_key.borrow_mut() = Some(key.into());
        self
    }

    pub fn with_state(self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.inner
            .state
            .borrow_mut()
            .insert(key.into(), value.into());
        self
    }

    pub fn with_state_json(self, key: impl Into<String>, value: Value) -> Self {
        self.with_state(key, value.to_string())
    }

    /// Makes every state operation fail with `error`.
    pub fn failing_state(self, error: StateError) -> Self {
        *self.inner.state_failure.borrow_mut() = Some(error);
        self
    }

    /// Hands every input to the action and returns every output without checking them
    /// against the action's schemas, which the real host always does. Only for testing the
    /// connector's own defensive checks behind the schema (a URL segment re-checked in code,
    /// say) with inputs the host would never let through.
    pub fn without_schema_checks(self) -> Self {
        self.inner.check_schemas.set(false);
        self
    }

    /// Runs one action the way the host would: the input is checked against the action's
    /// `input_schema` (a mismatch is `invalid_input`, naming the JSON pointer, and the action
    /// is not called), crosses as a JSON string, and the output is checked against its
    /// `output_schema` (a mismatch is an `internal` error starting with `invalid_output`)
    /// before it comes back parsed.
    pub fn invoke<C: Connector>(
        &self,
        action: &str,
        input: Value,
    ) -> Result<Value, ConnectorError> {
        let output = self.invoke_raw::<C>(action, &input.to_string())?;
        // The host would reject non-JSON output; a test should see that as an error too.
        serde_json::from_str(&output).map_err(|e| {
            ConnectorError::internal(format_args!("action returned invalid JSON: {e}"))
        })
    }

    /// Like [`MockHost::invoke`] with the input as raw text, for malformed-input tests.
    pub fn invoke_raw<C: Connector>(
        &self,
        action: &str,
        input: &str,
    ) -> Result<String, ConnectorError> {
        self.load::<C>();
        let validators = self.validators::<C>(action);
        if let Some(validators) = &validators {
            // The host's order: JSON first, then the schema, and only then the guest.
            let value: Value = serde_json::from_str(input).map_err(|e| {
                ConnectorError::invalid_input(format_args!("input is not JSON: {e}"))
            })?;
            if let Some((pointer, message)) = violation(&validators.input, &value) {
                return Err(ConnectorError::invalid_input(format_args!(
                    "input does not match the input_schema of `{action}` at {pointer}: {message}"
                )));
            }
        }
        let output = export::invoke::<C>(self.inner.clone(), action, input)?;
        if let Some(validators) = &validators {
            let value: Value = serde_json::from_str(&output).map_err(|e| {
                ConnectorError::internal(format_args!(
                    "invalid_output: the output of `{action}` is not JSON: {e}"
                ))
            })?;
            if let Some((pointer, message)) = violation(&validators.output, &value) {
                return Err(ConnectorError::internal(format_args!(
                    "invalid_output: the output of `{action}` does not match its output_schema \
                     at {pointer}: {message}"
                )));
            }
        }
        Ok(output)
    }

    pub fn test_connection<C: Connector>(&self) -> Result<(), ConnectorError> {
        self.load::<C>();
        export::test_connection::<C>(self.inner.clone())
    }

    /// The manifest exactly as the component would export it.
    ///
    /// # Panics
    /// When the definition breaks a rule the host would reject it for (bad names, no actions,
    /// duplicate actions, ...), so the connector's tests fail before a deploy does.
    pub fn manifest<C: Connector>(&self) -> Value {
        let problems = C::definition().problems();
        assert!(
            problems.is_empty(),
            "invalid connector manifest: {problems:#?}"
        );
        match serde_json::from_str(&export::manifest::<C>()) {
            Ok(manifest) => manifest,
            Err(e) => panic!("manifest is not JSON: {e}"),
        }
    }

    /// Every request the connector sent, in order (including refused ones).
    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.borrow().clone()
    }

    pub fn logs(&self) -> Vec<LogEntry> {
        self.inner.logs.borrow().clone()
    }

    pub fn state(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.state.borrow().get(key).cloned()
    }

    /// A state value parsed as JSON; `None` when absent or not JSON of type `T`.
    pub fn state_json<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.state(key)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }

    fn load<C: Connector>(&self) {
        *self.inner.hosts.borrow_mut() = C::definition().hosts().to_vec();
    }

    /// The compiled schemas of `action`, or `None` when unchecked: schema checks are off, or
    /// the definition does not list the action (the host refuses an unknown action before
    /// any schema; the SDK's own answer is `invalid_input` too).
    ///
    /// # Panics
    /// When a schema does not compile: the host would refuse to load the connector.
    fn validators<C: Connector>(&self, action: &str) -> Option<Rc<Validators>> {
        if !self.inner.check_schemas.get() {
            return None;
        }
        let key = (TypeId::of::<C>(), action.to_owned());
        if let Some(found) = self.inner.validators.borrow().get(&key) {
            return Some(found.clone());
        }
        let definition = C::definition();
        let (input, output) = definition.find_action(action)?.schemas();
        let compile = |which: &str, schema: &Value| match jsonschema::validator_for(schema) {
            Ok(validator) => validator,
            Err(e) => panic!(
                "the {which} of action `{action}` is not a valid JSON Schema (the host would \
                 refuse this connector): {e}"
            ),
        };
        let validators = Rc::new(Validators {
            input: compile("input_schema", &input),
            output: compile("output_schema", &output),
        });
        self.inner
            .validators
            .borrow_mut()
            .insert(key, validators.clone());
        Some(validators)
    }
}

/// The first error `validator` finds in `value`: where (a JSON pointer, as the host reports
/// it) and what.
fn violation(validator: &jsonschema::Validator, value: &Value) -> Option<(String, String)> {
    let error = validator.validate(value).err()?;
    let pointer = error.instance_path().to_string();
    let pointer = if pointer.is_empty() {
        "the top level".to_owned()
    } else {
        format!("`{pointer}`")
    };
    Some((pointer, error.to_string()))
}

impl Inner {
    fn state_op<T>(
        &self,
        op: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> T,
    ) -> Result<T, StateError> {
        match &*self.state_failure.borrow() {
            Some(err) => Err(err.clone()),
            None => Ok(op(&mut self.state.borrow_mut())),
        }
    }
}

/// The declared hosts with the config filled in, as the host resolves them per connection:
/// `{config.NAME}` takes the config's string, `{config.NAME*}` stands for the config's list.
/// An entry whose config value is missing stands for nothing. (The host also checks that a
/// label is one DNS label and a listed pattern explicit; `airlock manifest` and an upload do.)
fn resolve_hosts(patterns: &[String], config: &Value) -> Vec<String> {
    let mut resolved = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        if !pattern.contains("{config.") {
            resolved.push(pattern.clone());
            continue;
        }
        if let Some(name) = pattern
            .strip_prefix("{config.")
            .and_then(|rest| rest.strip_suffix("*}"))
        {
            if let Some(list) = config.get(name).and_then(Value::as_array) {
                resolved.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            continue;
        }
        let mut out = String::new();
        let mut rest = pattern.as_str();
        let mut complete = true;
        while let Some(start) = rest.find("{config.") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{config.".len()..];
            let Some(end) = after.find('}') else {
                complete = false;
                break;
            };
            match config.get(&after[..end]).and_then(Value::as_str) {
                Some(value) => out.push_str(value),
                None => complete = false,
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        if complete {
            resolved.push(out);
        }
    }
    resolved
}

impl Host for Inner {
    fn send(&self, request: Request) -> Result<Response, HttpError> {
        self.requests.borrow_mut().push(request.clone());
        let host = url_host(&request.url).ok_or_else(|| {
            HttpError::InvalidRequest(format!("no host in url {:?}", request.url))
        })?;
        let config = self.config.borrow().clone().unwrap_or(Value::Null);
        if !resolve_hosts(&self.hosts.borrow(), &config)
            .iter()
            .any(|pattern| host_allowed(pattern, &host))
        {
            return Err(HttpError::Denied(format!(
                "host {host} is not declared in the connector's manifest"
            )));
        }
        let answer = self
            .routes
            .borrow()
            .iter()
            .find_map(|route| route(&request));
        match answer {
            Some(answer) => answer.result,
            // A request nobody planned for is a broken test, not a behaviour to assert on.
            None => panic!(
                "MockHost has no route for {} {}; add one with on_get/on_post/on_request",
                request.method, request.url
            ),
        }
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push(LogEntry {
            level,
            message: message.to_string(),
        });
    }

    fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.state_op(|state| state.get(key).cloned())
    }

    fn state_set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.state_op(|state| {
            state.insert(key.to_string(), value.to_vec());
        })
    }

    fn state_delete(&self, key: &str) -> Result<(), StateError> {
        self.state_op(|state| {
            state.remove(key);
        })
    }

    fn idempotency_key(&self) -> Option<String> {
        self.idempotency_key.borrow().clone()
    }

    fn config(&self) -> String {
        match &*self.config.borrow() {
            Some(config) => config.to_string(),
            None => "{}".to_owned(),
        }
    }

    fn declarative_plan(&self) -> Option<String> {
        None
    }
}

/// The lowercased host of an absolute URL, without userinfo or port.
fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The manifest's host rule: exact, `*.suffix` (subdomains only) or `*`.
fn host_allowed(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*") {
        Some("") => true,
        Some(suffix) if suffix.starts_with('.') => host.ends_with(&suffix.to_ascii_lowercase()),
        _ => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_extracts_the_host() {
        assert_eq!(
            url_host("https://API.github.com/user").as_deref(),
            Some("api.github.com")
        );
        assert_eq!(
            url_host("http://u:p@a.test:8080/x?y").as_deref(),
            Some("a.test")
        );
        assert_eq!(url_host("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(url_host("https://a.test?x=1").as_deref(), Some("a.test"));
        assert_eq!(url_host("not a url"), None);
        assert_eq!(url_host("https:///path"), None);
    }

    #[test]
    fn host_patterns_follow_the_manifest_rules() {
        assert!(host_allowed("*", "anything.test"));
        assert!(host_allowed("api.github.com", "api.github.com"));
        assert!(!host_allowed("api.github.com", "evil.github.com"));
        assert!(host_allowed("*.slack.com", "hooks.slack.com"));
        assert!(!host_allowed("*.slack.com", "slack.com"));
        assert!(!host_allowed("*.slack.com", "evilslack.com"));
    }
}
