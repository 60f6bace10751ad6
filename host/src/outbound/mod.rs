//! The outbound gate: the one door through which guest HTTP requests reach the network.
//!
//! This commit brings its building blocks: host patterns and the allowlist decision (`policy`),
//! IP classification (`address`), the checking DNS resolver (`resolve`), auth types and
//! credential application (`credential`), secret scrubbing (`scrub`) and errors (`error`).

mod address;
mod credential;
mod error;
mod policy;
mod resolve;
mod scrub;

pub use credential::{ApiKeyLocation, AuthSpec, Credential, CredentialError};
pub use error::{HttpError, LimitHit, OutboundError, OutboundLimit};
pub use policy::{HostPattern, HostPatternError};
pub use scrub::Scrubber;
