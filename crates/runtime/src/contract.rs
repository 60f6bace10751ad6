//! The WIT contract (`guest-sdk/wit/connector.wit`, inside the SDK crate so it travels with
//! it) on the host side: the one `bindgen!`, and the implementations of the `http`, `log`,
//! `state` and `invocation` imports over an invocation's state.

use airlock_contract::ConnectorErrorKind;

use super::error::ErrorKind;
use super::guest_state::{GuestState, GuestStateAccess};
use super::logs::LogLevel;
use super::state::{MAX_KEY_BYTES, StateError as StoreError};
use crate::outbound::{GuestRequest, HttpError as GateError};

wasmtime::component::bindgen!({
    path: "../../guest-sdk/wit",
    world: "connector",
    imports: { default: async },
    exports: { default: async },
});

// `self::`: under rustdoc the crate `airlock` is also in scope, and the generated module of the
// same name (from the WIT package `airlock:connector`) would be ambiguous.
pub use self::airlock::connector::types::ErrorKind as GuestErrorKind;
use self::airlock::connector::{http, invocation, log, state};

/// The interfaces of our own contract a component may import.
pub const CONTRACT_PREFIX: &str = "airlock:connector/";

impl From<GuestErrorKind> for ConnectorErrorKind {
    fn from(kind: GuestErrorKind) -> Self {
        match kind {
            GuestErrorKind::Auth => Self::Auth,
            GuestErrorKind::InvalidInput => Self::InvalidInput,
            GuestErrorKind::NotFound => Self::NotFound,
            GuestErrorKind::RateLimited => Self::RateLimited,
            GuestErrorKind::Upstream => Self::Upstream,
            GuestErrorKind::HttpDenied => Self::HttpDenied,
            GuestErrorKind::Internal => Self::Internal,
        }
    }
}

impl self::airlock::connector::types::Host for GuestState {}

impl http::Host for GuestState {
    async fn send(&mut self, req: http::Request) -> Result<http::Response, http::HttpError> {
        let Some(session) = self.outbound.as_mut() else {
            return Err(http::HttpError::Denied(
                "outbound HTTP is not available while a component is loaded".into(),
            ));
        };
        let request = GuestRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        match session.send(request).await {
            Ok(response) => Ok(http::Response {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(error) => Err(match error {
                GateError::Denied(m) => http::HttpError::Denied(m),
                GateError::Timeout => http::HttpError::Timeout,
                GateError::TooLarge(m) => http::HttpError::TooLarge(m),
                GateError::TooManyRequests => http::HttpError::TooManyRequests,
                GateError::ConnectFailed(m) => http::HttpError::ConnectFailed(m),
                GateError::InvalidRequest(m) => http::HttpError::InvalidRequest(m),
                GateError::Other(m) => http::HttpError::Other(m),
            }),
        }
    }
}

impl invocation::Host for GuestState {
    async fn idempotency_key(&mut self) -> Option<String> {
        self.outbound
            .as_ref()
            .and_then(|session| session.idempotency_key())
            .map(str::to_owned)
    }

    async fn retry_after(&mut self, ms: u64) {
        if let Some(session) = self.outbound.as_mut() {
            session.ask_retry_after(std::time::Duration::from_millis(ms));
        }
    }

    async fn config(&mut self) -> String {
        if self.about.config.is_empty() {
            "{}".to_owned()
        } else {
            self.about.config.to_string()
        }
    }

    async fn declarative_plan(&mut self) -> Option<String> {
        self.about.plan.as_deref().map(str::to_owned)
    }
}

impl log::Host for GuestState {
    async fn write(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.logs.log(level, message);
    }
}

impl state::Host for GuestState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, state::StateError> {
        self.check_key(&key)?;
        let access = self.state_access()?;
        access
            .store
            .get(&access.scope, &key)
            .await
            .map_err(|e| self.state_error(e))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        self.check_key(&key)?;
        let access = self.state_access()?;
        if value.len() as u64 > access.max_value_bytes {
            let message = format!(
                "value is {} bytes, more than the {} allowed",
                value.len(),
                access.max_value_bytes
            );
            self.record_limit(ErrorKind::StateLimit);
            return Err(state::StateError::TooLarge(message));
        }
        let result = access
            .store
            .set(&access.scope, &key, value, access.max_keys)
            .await;
        result.map_err(|e| self.state_error(e))
    }

    async fn delete(&mut self, key: String) -> Result<(), state::StateError> {
        self.check_key(&key)?;
        let access = self.state_access()?;
        access
            .store
            .delete(&access.scope, &key)
            .await
            .map_err(|e| self.state_error(e))
    }
}

impl GuestState {
    /// Keys follow the naming rule (`airlock_contract::names`) as well as the length cap: a NUL in a key
    /// is refused by PostgreSQL's text type, and a bad key must never reach the store as a
    /// statement that fails. The WIT contract has one error for a key, value or count the host
    /// refuses (`too-large`), so that is what a bad key gets.
    fn check_key(&mut self, key: &str) -> Result<(), state::StateError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            self.record_limit(ErrorKind::StateLimit);
            return Err(state::StateError::TooLarge(format!(
                "keys must be 1-{MAX_KEY_BYTES} bytes, this one is {}",
                key.len()
            )));
        }
        if let Err(error) = airlock_contract::names::check(key) {
            self.record_limit(ErrorKind::StateLimit);
            return Err(state::StateError::TooLarge(format!("the key {error}")));
        }
        Ok(())
    }

    /// A cheap clone of the access handle, so the store can be awaited without borrowing
    /// `self` (which the error path needs mutably).
    fn state_access(&self) -> Result<GuestStateAccess, state::StateError> {
        self.state.clone().ok_or_else(|| {
            state::StateError::Unavailable(
                "state is not available while a component is loaded".into(),
            )
        })
    }

    fn state_error(&mut self, error: StoreError) -> state::StateError {
        match error {
            StoreError::TooManyKeys { .. } => {
                self.record_limit(ErrorKind::StateLimit);
                state::StateError::TooLarge(error.to_string())
            }
            // The backend logged its cause; the guest learns only that the store failed.
            StoreError::Unavailable => state::StateError::Unavailable(error.to_string()),
        }
    }
}
