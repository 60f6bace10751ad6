//! Airlock: a multi-tenant connector runtime. Connectors are WebAssembly components run in
//! wasmtime behind the WIT contract in `wit/`, each invocation in a fresh sandbox under the
//! tenant's limits. See `docs/ARCHITECTURE.md` for the codemap.

pub mod api;
pub mod benchmark;
pub mod cli;
pub mod config;
pub mod names;
pub mod outbound;
pub mod quota;
pub mod runtime;
pub mod secrets;
pub mod store;
