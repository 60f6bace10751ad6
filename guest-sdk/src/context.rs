//! `Context`, the handle an action gets to the host's capabilities: HTTP, logs, state, and
//! what the host knows of the invocation (its idempotency key).

use std::fmt;
use std::rc::Rc;

use crate::host::Host;
use crate::http::Http;
use crate::log::Log;
use crate::state::State;

/// Passed to every action and to `test_connection`. It owns no credential: the host adds
/// those to outbound requests itself.
pub struct Context {
    host: Rc<dyn Host>,
}

impl Context {
    pub(crate) fn new(host: Rc<dyn Host>) -> Self {
        Context { host }
    }

    /// The outbound HTTP client.
    pub fn http(&self) -> Http<'_> {
        Http::new(&*self.host)
    }

    /// The invocation's log (captured by the host, capped in size).
    pub fn log(&self) -> Log<'_> {
        Log::new(&*self.host)
    }

    /// The tenant- and connector-scoped key-value store.
    pub fn state(&self) -> State<'_> {
        State::new(&*self.host)
    }

    /// This invocation's idempotency key: for a step of a durable run, `<run id>:<step id>`,
    /// the same on every attempt and re-run of that step. Pass it to an upstream that dedupes
    /// by another name (a request field, a differently named header); requests other than
    /// GET, HEAD and OPTIONS already carry it as `Idempotency-Key`. `None` for a synchronous
    /// invocation.
    pub fn idempotency_key(&self) -> Option<String> {
        self.host.idempotency_key()
    }

    /// The connection's non-secret config (base URL parts, region, account id), valid
    /// against the manifest's `config_schema`: an empty object without a connection or a
    /// config.
    pub fn config(&self) -> serde_json::Value {
        serde_json::from_str(&self.host.config())
            .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new()))
    }

    /// The declarative runner's plan for this invocation; `None` in any other connector.
    #[doc(hidden)]
    pub fn declarative_plan(&self) -> Option<String> {
        self.host.declarative_plan()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Context")
    }
}
