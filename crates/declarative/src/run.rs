//! One action, run from its [`Plan`]: build the request (templates, headers, body), send it
//! through a [`Transport`], read the response (error rules, output pointer), and follow the
//! pagination strategy under its cap.

use airlock_contract::ConnectorErrorKind;
use serde_json::Value;

use crate::plan::Plan;

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
    let _ = (plan, input, config, transport);
    todo!("runner")
}

/// The first request `run` would send, without sending it (for `testAction`'s preview and
/// for tests).
pub fn first_request(plan: &Plan, input: &Value, config: &Value) -> Result<Request, RunError> {
    let _ = (plan, input, config);
    todo!("runner")
}
