//! `airlock-sdk`: write Airlock connectors as typed Rust functions; the SDK owns the manifest,
//! the JSON at the boundary, error mapping and the WIT glue.
//!
//! ```
//! use airlock_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Greet {
//!     name: String,
//! }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Greeting {
//!     text: String,
//! }
//!
//! fn greet(cx: &Context, input: Greet) -> Result<Greeting, ConnectorError> {
//!     cx.log().info(format_args!("greeting {}", input.name));
//!     Ok(Greeting { text: format!("Hello, {}!", input.name) })
//! }
//!
//! struct Hello;
//!
//! impl Connector for Hello {
//!     fn definition() -> Definition {
//!         Definition::new("hello", "0.1.0")
//!             .description("Says hello")
//!             .action(Action::new("greet", greet).description("Greets someone"))
//!     }
//! }
//!
//! airlock_sdk::export_connector!(Hello);
//! ```

mod auth;
mod context;
mod error;
mod export;
mod host;
mod http;
mod log;
mod manifest;
mod state;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use auth::{ApiKey, Auth, KeyLocation, OAuth2};
pub use context::Context;
pub use error::{ConnectorError, ErrorKind};
pub use http::{Http, HttpError, Request, RequestBuilder, Response};
pub use log::{Level, Log};
pub use manifest::{Action, Definition, Retry};
pub use state::{State, StateError};

/// A connector: a type that declares its actions and, optionally, how to check a credential.
/// Make it the component's implementation with [`export_connector!`].
pub trait Connector: 'static {
    /// Name, version, auth, hosts and actions. Called for every export, so keep it cheap: it
    /// only builds a description (schemas are generated lazily, for the manifest alone).
    fn definition() -> Definition;

    /// Checks that the connection's credential works, typically with one cheap authenticated
    /// request. The default accepts every connection, which fits connectors without auth.
    fn test_connection(cx: &Context) -> Result<(), ConnectorError> {
        let _ = cx;
        Ok(())
    }
}

/// Everything a connector file usually needs, including the derive macros for its types.
pub mod prelude {
    pub use crate::{
        Action, Auth, Connector, ConnectorError, Context, Definition, ErrorKind, HttpError,
        Response, Retry,
    };
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
}

/// Used by `export_connector!`; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm::{bindings, guest_invoke, guest_manifest, guest_test_connection};

    pub fn assert_connector<C: crate::Connector>() {}
}
