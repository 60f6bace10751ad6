//! GitHub's `X-Hub-Signature-256`: `sha256=` + the hex HMAC-SHA256 of the raw body, keyed with
//! the secret's UTF-8 bytes
//! (<https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>).
//!
//! # Replay
//!
//! GitHub signs the body only: there is no timestamp, so [`super::Verified::timestamp`] is
//! `None` and no tolerance applies. Replay protection comes from the delivery id
//! (`X-GitHub-Delivery`) being the run's idempotency key: the same delivery sent twice, by
//! GitHub's redelivery or by someone who captured it, starts at most one run. The delivery id
//! itself is not signed, so a captured request resent under a fresh id would pass; that is
//! GitHub's design, and the reason to prefer Standard Webhooks where the sender allows it.

use super::common::{self, HmacSha256, Tag};
use super::{Scheme, SecretError, Verified, VerifyError};

/// The delivery id header (a GUID GitHub assigns; reused on redelivery).
pub const DELIVERY_HEADER: &str = "x-github-delivery";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The longest secret a tenant may supply, in characters.
pub const MAX_SECRET_LEN: usize = 256;

/// GitHub takes any string; we take 1..=256 visible ASCII characters or spaces, which covers
/// anything a person types or a generator prints, and nothing that could hide in a form field.
pub(super) fn check_secret(secret: &str) -> Result<(), SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    if !secret.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(SecretError::NotPrintable);
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(SecretError::TooLong {
            max: MAX_SECRET_LEN,
        });
    }
    Ok(())
}

pub(super) fn verify(
    secrets: &[&str],
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    let id = common::header(headers, DELIVERY_HEADER)?;
    let signature = common::header(headers, SIGNATURE_HEADER)?;
    if !common::is_valid_delivery_id(id) {
        return Err(VerifyError::MalformedHeader(DELIVERY_HEADER));
    }
    // The header carries one algorithm by definition; anything but `sha256=` is not this form.
    let hex = signature
        .strip_prefix("sha256=")
        .ok_or(VerifyError::MalformedHeader(SIGNATURE_HEADER))?;
    let candidates: Vec<Tag> = common::decode_hex_tag(hex).into_iter().collect();
    common::match_any(Scheme::Github, secrets, &[body], &candidates)?;
    Ok(Verified {
        delivery_id: id.to_owned(),
        timestamp: None,
    })
}

pub(super) fn sign(key: &HmacSha256, id: &str, body: &[u8]) -> Vec<(http::HeaderName, String)> {
    let signature = format!("sha256={}", hex::encode(common::tag(key, &[body])));
    vec![
        (
            http::HeaderName::from_static(DELIVERY_HEADER),
            id.to_owned(),
        ),
        (http::HeaderName::from_static(SIGNATURE_HEADER), signature),
    ]
}
