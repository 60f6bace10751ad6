//! What every layer of Airlock shares, as plain data with its validation: no engine, no
//! database, no network.
//!
//! - [`manifest`]: a connector's manifest, parsed and validated, with its JSON Schemas compiled.
//! - [`limits`]: [`TenantLimits`] (what one invocation may use), their caps, and the outbound
//!   limits derived from them; [`quota`]: the tenant's limits plus its quotas, in one JSON form.
//! - [`hosts`]: host patterns and the allow decision for a request's host.
//! - [`auth`]: the manifest's auth spec and a connection's [`AuthType`].
//! - [`ids`]: typed ids and the guest state scope; [`clock`]: the injectable clock.
//! - [`workflow`]: a workflow's steps, their input mapping by JSON Pointer and retry policy.
//!
//! Depends only on `airlock-contract` (the rules shared with guests) and serde, jsonschema,
//! url: storage and the runtime both build on it without depending on each other.

pub mod auth;
pub mod clock;
pub mod host_entry;
pub mod hosts;
pub mod ids;
pub mod limits;
pub mod manifest;
pub mod predicate;
pub mod program;
pub mod quota;
pub mod workflow;

pub use airlock_contract::names;
pub use auth::{ApiKeyLocation, AuthSpec, AuthType};
pub use clock::{Clock, ManualClock, SystemClock};
pub use host_entry::{HostEntry, HostEntryError};
pub use hosts::{HostPattern, HostPatternError};
pub use ids::{ConnectionId, ConnectorName, StateScope, TenantId};
pub use limits::{LimitBound, LimitCaps, LimitError, OutboundLimits, TenantLimits};
pub use manifest::{
    ActionSpec, CompiledAction, Manifest, ManifestError, RetryPolicy, SchemaViolation,
    ValidatedManifest,
};
pub use predicate::{Predicate, PredicateError};
pub use program::Program;
pub use quota::TenantQuota;
pub use workflow::{ActionStep, MappingError, StepKind, StepSpec, WorkflowError, WorkflowSpec};
