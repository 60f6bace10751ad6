//! Airlock: a multi-tenant connector runtime. Connectors are WebAssembly components run in
//! wasmtime behind the WIT contract in `guest-sdk/wit/`, each invocation in a fresh sandbox
//! under the tenant's limits. See `docs/ARCHITECTURE.md` for the codemap and the crate graph.
//!
//! This crate is the `airlock` binary's: the command line ([`cli`]), the service's
//! configuration ([`config`]), the benchmark ([`benchmark`]). It re-exports the workspace
//! crates under their layer names, so a test or tool can reach every layer from one place.

pub mod benchmark;
pub mod cli;
pub mod config;
pub mod units;

pub use airlock_api as api;
pub use airlock_contract::names;
pub use airlock_core as pipeline;
pub use airlock_model as model;
pub use airlock_model::quota;
pub use airlock_runs as runs;
pub use airlock_runtime as runtime;
pub use airlock_runtime::outbound;
pub use airlock_secrets as secrets;
pub use airlock_store as store;
pub use airlock_triggers as triggers;
