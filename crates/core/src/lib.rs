//! The one invocation pipeline: every caller that runs a connector (the API's invoke and
//! test-connection, the CLI, and next the durable-run workers and triggers) goes through
//! [`Pipeline`], so lookups, credentials, run accounting and limits are the same for all.
//!
//! It owns:
//! - the rows every invocation reads (tenant quota, current connector version, connection),
//!   cached per process and written through: [`Pipeline`]'s write methods invalidate them, so
//!   no caller has to remember to ([`hot_rows`]);
//! - credentials: sealing, opening, OAuth2 refresh (single flight, back-off after a failure)
//!   ([`credentials`], [`oauth`]);
//! - run admission (the hourly quota), charged only for requests that passed their checks;
//! - the component lookup (the runtime's one in-memory cache, then the stored bytes);
//! - the call into the runtime, and the split of its result into [`CoreError`] (refused
//!   before the guest ran) and [`Ran`] (the guest ran: outcome, logs, stats);
//! - background tasks (refreshes), tracked and drained by [`Pipeline::shutdown`].
//!
//! Order of an invocation ([`Pipeline::invoke`]): look up (quota, connector, connection) ->
//! component (in memory) -> check action and input (no guest, nothing charged) -> admit
//! (charge the run) -> credential (decrypt, refresh) -> run (slot, instance, call). A run
//! refused for want of a slot is refunded. A component not in memory is loaded only after
//! the charge (loading runs the guest's `manifest()`), with the action checked against the
//! stored manifest first and a refund if the input then fails its checks.

pub mod credentials;
pub mod definitions;
mod error;
pub mod fresh;
mod hot_rows;
pub mod local;
mod oauth;
mod pipeline;
mod state;
pub mod writes;

pub use airlock_model::clock::{Clock, ManualClock, SystemClock};
pub use error::CoreError;
pub use fresh::TTL as HOT_ROW_TTL;
pub use oauth::{BACKOFF_BASE_MS, BACKOFF_MAX_MS, EXPIRY_SKEW_MS};
pub use pipeline::{Charge, Invocation, Pipeline, PipelineOptions, Ran};
pub use state::DbStateStore;
pub use writes::ConnectionDraft;
