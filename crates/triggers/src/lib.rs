//! What starts a run without a person asking: signed webhooks and cron schedules.
//!
//! Pure logic, no I/O and no clock: every function that depends on the time takes it as a
//! parameter, so tests pin it. The database side (trigger rows, claiming cron ticks) is
//! `airlock-store`'s; the loop that fires ticks and the webhook ingest are `airlock-runs`'.
//!
//! - [`webhook`]: verifiers for Standard Webhooks v1, GitHub and Stripe signatures, and the
//!   `whsec_` secrets we generate.
//! - [`schedule`]: cron expressions (5 or 6 fields) in an IANA time zone, next fire times,
//!   and what to fire after downtime (the missed-ticks policy).

pub mod schedule;
pub mod webhook;
