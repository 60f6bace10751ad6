//! The wasm32 side: the one `wit_bindgen::generate!` for the connector world, the `Host`
//! implementation over its imports, and the entry points `export_connector!` calls.

use std::rc::Rc;

use crate::Connector;
use crate::error::{ConnectorError, ErrorKind};
use crate::export;
use crate::host::Host;
use crate::http::{HttpError, Request, Response};
use crate::log::Level;
use crate::state::StateError;

/// Generated bindings. `pub_export_macro` lets connector crates expand the export glue, and
/// `default_bindings_module` is the path they reach these bindings by.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "connector",
        pub_export_macro: true,
        default_bindings_module: "airlock_sdk::__private::bindings",
    });
}

use bindings::airlock::connector::{
    http as wit_http, invocation as wit_invocation, log as wit_log, state as wit_state, types,
};

struct WasmHost;

impl Host for WasmHost {
    fn send(&self, request: Request) -> Result<Response, HttpError> {
        let request = wit_http::Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        match wit_http::send(&request) {
            Ok(r) => Ok(Response::new(r.status, r.headers, r.body)),
            Err(e) => Err(match e {
                wit_http::HttpError::Denied(why) => HttpError::Denied(why),
                wit_http::HttpError::Timeout => HttpError::Timeout,
                wit_http::HttpError::TooLarge(why) => HttpError::TooLarge(why),
                wit_http::HttpError::TooManyRequests => HttpError::TooManyRequests,
                wit_http::HttpError::ConnectFailed(why) => HttpError::ConnectFailed(why),
                wit_http::HttpError::InvalidRequest(why) => HttpError::InvalidRequest(why),
                wit_http::HttpError::Other(why) => HttpError::Other(why),
            }),
        }
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit_log::Level::Trace,
            Level::Debug => wit_log::Level::Debug,
            Level::Info => wit_log::Level::Info,
            Level::Warn => wit_log::Level::Warn,
            Level::Error => wit_log::Level::Error,
        };
        wit_log::write(level, message);
    }

    fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        wit_state::get(key).map_err(state_error)
    }

    fn state_set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        wit_state::set(key, value).map_err(state_error)
    }

    fn state_delete(&self, key: &str) -> Result<(), StateError> {
        wit_state::delete(key).map_err(state_error)
    }

    fn idempotency_key(&self) -> Option<String> {
        wit_invocation::idempotency_key()
    }

    fn config(&self) -> String {
        wit_invocation::config()
    }

    fn declarative_plan(&self) -> Option<String> {
        wit_invocation::declarative_plan()
    }
}

fn state_error(err: wit_state::StateError) -> StateError {
    match err {
        wit_state::StateError::TooLarge(why) => StateError::TooLarge(why),
        wit_state::StateError::Unavailable(why) => StateError::Unavailable(why),
    }
}

fn wit_error(err: ConnectorError) -> types::ConnectorError {
    if let Some(wait) = err.retry_after {
        // Told to the host before the error is returned: the record itself has no room for
        // it without breaking components built against the first `connector-error`.
        wit_invocation::retry_after(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    }
    let kind = match err.kind {
        ErrorKind::Auth => types::ErrorKind::Auth,
        ErrorKind::InvalidInput => types::ErrorKind::InvalidInput,
        ErrorKind::NotFound => types::ErrorKind::NotFound,
        ErrorKind::RateLimited => types::ErrorKind::RateLimited,
        ErrorKind::Upstream => types::ErrorKind::Upstream,
        ErrorKind::HttpDenied => types::ErrorKind::HttpDenied,
        ErrorKind::Internal => types::ErrorKind::Internal,
    };
    types::ConnectorError {
        kind,
        message: err.message,
        retryable: err.retryable,
    }
}

pub fn guest_manifest<C: Connector>() -> String {
    export::manifest::<C>()
}

pub fn guest_invoke<C: Connector>(
    action: &str,
    input: &str,
) -> Result<String, types::ConnectorError> {
    export::invoke::<C>(Rc::new(WasmHost), action, input).map_err(wit_error)
}

pub fn guest_test_connection<C: Connector>() -> Result<(), types::ConnectorError> {
    export::test_connection::<C>(Rc::new(WasmHost)).map_err(wit_error)
}
