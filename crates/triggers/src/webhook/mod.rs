//! Signed webhooks: verifying that a delivery came from whoever holds the trigger's secret.
//!
//! Three schemes, chosen per trigger:
//! - [`Scheme::StandardWebhooks`]: Standard Webhooks v1 (<https://www.standardwebhooks.com>),
//!   what we recommend to senders that let you choose; the id and timestamp are signed with the
//!   body, so both replay protection and idempotency come from the signature.
//! - [`Scheme::Github`]: GitHub's `X-Hub-Signature-256`. No timestamp: see [`github`].
//! - [`Scheme::Stripe`]: Stripe's `Stripe-Signature`, timestamped; the delivery id is the
//!   event's own `id`, read from the body once the signature has checked out.
//!
//! Everything here is pure: the time is a parameter (`now_unix_secs`) so tests pin it, and the
//! secrets are passed in by the caller, who loads and decrypts them.
//!
//! Rules shared by every scheme, and why:
//! - Signatures are compared in constant time on the decoded bytes, so a sender learns nothing
//!   from how long a refusal took, and textual variants (hex case) don't matter.
//! - A candidate signature that does not decode to exactly 32 bytes is simply not a match:
//!   truncated, padded or empty signatures can never pass (the reference Rust library for
//!   Standard Webhooks once accepted `v1,` with an empty signature).
//! - The timestamp is checked before any HMAC is computed, so stale replays cost us nothing.
//! - Several secrets may be passed: during a rotation's overlap both the new and the previous
//!   secret are accepted, and a delivery signed with either passes.
//! - Error messages are shown to senders and tenants: they name headers, never echo a
//!   signature or any secret material.

mod common;
mod error;
pub mod github;
pub mod standard;
pub mod stripe;

#[cfg(test)]
mod tests;

use base64::Engine as _;
use hmac::Mac as _;

pub use error::{SecretError, VerifyError};

/// Timestamps further than this from now (either way) are refused.
///
/// Five minutes, as Standard Webhooks and Stripe's own libraries use: long enough for clock
/// skew and a sender's retry queue, short enough that a captured request soon stops working.
pub const TOLERANCE_SECS: i64 = 300;

/// Longest delivery id accepted (it becomes part of an idempotency key).
pub const MAX_DELIVERY_ID: usize = 200;

/// The prefix of the secrets we generate and of every Stripe secret; optional on a Standard
/// Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Which signature scheme a webhook trigger verifies. serde: "standard_webhooks", "github", "stripe".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// Standard Webhooks v1: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// GitHub: `X-Hub-Signature-256` and `X-GitHub-Delivery`.
    Github,
    /// Stripe: `Stripe-Signature`, with the event id taken from the body.
    Stripe,
}

impl Scheme {
    /// Every scheme, for listings and tests.
    pub const ALL: [Scheme; 3] = [Scheme::StandardWebhooks, Scheme::Github, Scheme::Stripe];

    /// The name used in the API and the database (the same as serde's).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard_webhooks",
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
        }
    }

    /// The inverse of [`Scheme::as_str`]; `None` for anything else (exact, case-sensitive).
    pub fn parse(s: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|scheme| scheme.as_str() == s)
    }
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id for this delivery: 1..=[`MAX_DELIVERY_ID`] visible ASCII characters,
    /// safe to use in an idempotency key (for Standard Webhooks, never a `.`: see [`standard`]).
    pub delivery_id: String,
    /// The sender's timestamp when the scheme has one (not GitHub's).
    pub timestamp: Option<i64>,
}

/// Checks a delivery's signature.
///
/// `secrets`: every secret that may have signed (the current one, and during a rotation's
/// overlap the previous one); any match passes. An empty list is [`VerifyError::NoSecret`];
/// a stored secret that does not parse is [`VerifyError::BadSecret`] unless another secret
/// matched (both are our fault, not the sender's: see [`VerifyError::is_server_fault`]).
///
/// `now_unix_secs`: the time, passed in so tests pin it.
pub fn verify(
    scheme: Scheme,
    secrets: &[&str],
    headers: &http::HeaderMap,
    body: &[u8],
    now_unix_secs: i64,
) -> Result<Verified, VerifyError> {
    match scheme {
        Scheme::StandardWebhooks => standard::verify(secrets, headers, body, now_unix_secs),
        Scheme::Github => github::verify(secrets, headers, body),
        Scheme::Stripe => stripe::verify(secrets, headers, body, now_unix_secs),
    }
}

/// Signs like a sender would (for tests, benchmarks and the docs' signing example). Returns the
/// headers to send.
///
/// The secret is checked as [`check_secret`] does. The delivery id and timestamp are not
/// checked, so tests can sign requests that [`verify`] must refuse. For Stripe the delivery id
/// is not sent (Stripe's is the event's `id`, inside the body) and is ignored.
pub fn sign(
    scheme: Scheme,
    secret: &str,
    delivery_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(http::HeaderName, String)>, SecretError> {
    let key = signing_key(scheme, secret)?;
    Ok(match scheme {
        Scheme::StandardWebhooks => standard::sign(&key, delivery_id, timestamp, body),
        Scheme::Github => github::sign(&key, delivery_id, body),
        Scheme::Stripe => stripe::sign(&key, timestamp, body),
    })
}

/// A new secret: "whsec_" + standard base64 of 32 random bytes (getrandom). Used for every
/// scheme (GitHub accepts any string).
///
/// One format for all schemes means a secret we generate is valid wherever it is pasted, and
/// secret scanners recognise it by its prefix.
///
/// # Panics
///
/// If the operating system's random number generator fails. There is no safe fallback for a
/// secret, and on the platforms we run on this does not happen after boot.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random number generator failed: {e}");
    }
    let mut secret = String::with_capacity(SECRET_PREFIX.len() + 44);
    secret.push_str(SECRET_PREFIX);
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut secret);
    secret
}

/// Checks a secret a tenant supplies (Stripe generates its own signing secrets; GitHub's is
/// whatever the user typed).
///
/// - Standard Webhooks: standard base64 (padding optional) of 24..=64 bytes, as the spec
///   requires, after an optional `whsec_` (optional in every official library).
/// - GitHub: 1..=256 visible ASCII characters or spaces.
/// - Stripe: `whsec_` then visible ASCII, 7..=256 characters in all.
pub fn check_secret(scheme: Scheme, secret: &str) -> Result<(), SecretError> {
    signing_key(scheme, secret).map(drop)
}

/// The HMAC-SHA256 keyed for `scheme` with `secret`, ready to clone per message.
///
/// The one place a secret becomes a key, so [`sign`], [`verify`] and [`check_secret`] can't
/// disagree about which secrets are valid.
fn signing_key(scheme: Scheme, secret: &str) -> Result<common::HmacSha256, SecretError> {
    let key_bytes: Vec<u8> = match scheme {
        Scheme::StandardWebhooks => standard::decode_secret(secret)?,
        Scheme::Github => {
            github::check_secret(secret)?;
            secret.as_bytes().to_vec()
        }
        Scheme::Stripe => {
            stripe::check_secret(secret)?;
            secret.as_bytes().to_vec()
        }
    };
    // HMAC takes keys of any length; this arm is unreachable, but not worth a panic.
    common::HmacSha256::new_from_slice(&key_bytes).map_err(|_| SecretError::WrongLength {
        len: key_bytes.len(),
    })
}
