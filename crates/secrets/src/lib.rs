//! Credentials: redacting types for plaintext, and encryption at rest under a rotating keyring.
//!
//! Connection credentials are stored as [`Envelope`]s: AES-256-GCM with a fresh random 96-bit
//! nonce per encryption, the tenant and connection ids as associated data (so an envelope
//! copied to another row does not decrypt), and the id of the key that sealed it. Plaintext
//! exists only in memory, in [`Secret`] or [`SecretBytes`], on its way to the outbound gate.
//!
//! Keys live in a [`Keyring`] loaded from a key file (JSON, mode 0600):
//!
//! ```json
//! {
//!   "current": "k2",
//!   "keys": {
//!     "k1": "<base64 of 32 random bytes>",
//!     "k2": "<base64 of 32 random bytes, e.g. from `openssl rand -base64 32`>"
//!   },
//!   "retired": []
//! }
//! ```
//!
//! Rotation without downtime: [`Keyring::rotate`] adds a key and makes it current; envelopes
//! under older keys still decrypt, and [`Keyring::reencrypt`] moves them to the current key one
//! at a time; [`Keyring::retire`] then drops an old key once nothing is sealed under it.
//!
//! Also owns [`private_dir`]: every file the service keeps (keys, database, compiled code) is
//! created owner-only.

mod envelope;
mod error;
pub mod key_file;
mod keyring;
pub mod private_dir;
mod secret;

#[cfg(test)]
mod tests;

pub use envelope::{Aad, Envelope, KeyId};
pub use error::SecretsError;
pub use keyring::Keyring;
pub use secret::{REDACTED, Secret, SecretBytes};
