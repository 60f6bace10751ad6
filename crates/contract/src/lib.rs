//! The rules a connector and the host agree on, written once: the guest SDK checks a
//! manifest with them before a build ships, and the host refuses a manifest that breaks them.
//!
//! - [`names`]: the character rule for every user-, tenant- and guest-given name and key.
//! - [`connector`]: connector and action names, versions.
//! - [`ConnectorErrorKind`]: the kinds a connector reports, with their one spelling.
//!
//! This crate has no dependency beyond `thiserror`: it is compiled into every component.

pub mod connector;
pub mod names;

mod error_kind;

pub use error_kind::ConnectorErrorKind;
