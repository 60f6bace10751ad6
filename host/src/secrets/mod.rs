//! Credentials: redacting types for plaintext that are overwritten when dropped.

mod secret;

pub use secret::{REDACTED, Secret};
