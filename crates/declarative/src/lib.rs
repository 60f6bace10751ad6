//! Declarative HTTP connectors: connectors written as data and run by one generic runner.
//!
//! - [`format`]: the definition as uploaded (`docs/declarative.md`).
//! - [`compile`]: the checks a definition passes when saved, and what the host derives from
//!   it: the manifest (schemas, hosts, auth) and one [`Plan`] per action.
//! - [`template`]: URL and header templates (an RFC 6570 subset whose values cannot change a
//!   URL's structure).
//! - [`body`], [`response`], [`paginate`]: building a request body, reading a response
//!   (errors by status, extraction by JSON Pointer), following pages under a mandatory cap.
//! - [`run`]: one action from its plan, the input and the connection's config, over a
//!   [`run::Transport`]: the runner component's is the host's `http` import, the tests' a
//!   fake.
//!
//! There is no expression language: values move by JSON Pointer and templates only, so a
//! definition cannot compute, loop or reach anything the runner does not already give it.
//! This crate is compiled into the runner component as well as the host, so it depends on
//! serde only.

pub mod body;
pub mod compile;
pub mod format;
pub mod openapi;
pub mod paginate;
pub mod plan;
pub mod pointer;
pub mod response;
pub mod run;
pub mod template;

pub use compile::{Compiled, DefinitionError, compile, compile_json};
pub use format::{Definition, FORMAT};
pub use plan::Plan;
pub use run::{RunError, Transport};
