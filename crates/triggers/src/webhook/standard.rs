//! Standard Webhooks v1 (<https://www.standardwebhooks.com>; the spec is
//! `spec/standard-webhooks.md` in github.com/standard-webhooks/standard-webhooks).
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, so the id and the timestamp
//! are authenticated with the body: a captured delivery can't be replayed later (tolerance) nor
//! under another id (the id is our idempotency key).
//!
//! That only holds while the fields can't be re-split: the spec forbids `.` in the id. Were it
//! allowed, a delivery with id `evt.1700000000` at timestamp `T` signs
//! `evt.1700000000.T.{body}`, the very bytes of id `evt` at timestamp `1700000000` with body
//! `T.{body}`: a second, valid delivery under a new id, so a second run. The timestamp is
//! digits only, so with no `.` in the id the first two `.` are the delimiters, always.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::common::{self, HmacSha256, Tag};
use super::{SECRET_PREFIX, Scheme, SecretError, Verified, VerifyError};

/// The delivery id header.
pub const ID_HEADER: &str = "webhook-id";
/// The timestamp header (integer Unix seconds).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signature header: space-separated `v1,<base64>` entries.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The spec's bounds on the decoded key (192 to 512 bits).
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// Secrets are base64 that some senders pad and some don't (24-byte keys never need padding);
/// we accept both, but nothing else non-standard.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The key bytes of a secret: standard base64, after an optional `whsec_`.
///
/// The prefix is optional because every official library (Go, JavaScript, Python, Rust, Java,
/// PHP) strips it when present and decodes what is left either way, so senders hand out both
/// forms. The prefix itself can't be mistaken for base64 (`_` is not in the alphabet).
pub(super) fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = SECRET_BASE64
        .decode(encoded)
        .map_err(|_| SecretError::InvalidBase64)?;
    if !KEY_BYTES.contains(&key.len()) {
        return Err(SecretError::WrongLength { len: key.len() });
    }
    Ok(key)
}

pub(super) fn verify(
    secrets: &[&str],
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    let id = common::header(headers, ID_HEADER)?;
    let timestamp_text = common::header(headers, TIMESTAMP_HEADER)?;
    let signatures = common::header(headers, SIGNATURE_HEADER)?;
    if !common::is_valid_delivery_id(id) || id.contains('.') {
        return Err(VerifyError::MalformedHeader(ID_HEADER));
    }
    let timestamp = common::parse_timestamp(timestamp_text)?;
    common::check_tolerance(timestamp, now)?;

    // Other versions (`v1a,` asymmetric, future `v2,`) are skipped, not errors: a sender may
    // send several kinds side by side.
    let candidates: Vec<Tag> = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(decode_signature)
        .collect();
    let timestamp_digits = timestamp.to_string();
    let message: [&[u8]; 5] = [id.as_bytes(), b".", timestamp_digits.as_bytes(), b".", body];
    common::match_any(Scheme::StandardWebhooks, secrets, &message, &candidates)?;
    Ok(Verified {
        delivery_id: id.to_owned(),
        timestamp: Some(timestamp),
    })
}

/// A `v1` signature's bytes; `None` (not a match) unless it is canonical padded base64 of
/// exactly 32 bytes, so empty, truncated and extended signatures all fail.
fn decode_signature(text: &str) -> Option<Tag> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    bytes.try_into().ok()
}

pub(super) fn sign(
    key: &HmacSha256,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(http::HeaderName, String)> {
    let timestamp_digits = timestamp.to_string();
    let tag = common::tag(
        key,
        &[id.as_bytes(), b".", timestamp_digits.as_bytes(), b".", body],
    );
    let signature = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    );
    vec![
        (http::HeaderName::from_static(ID_HEADER), id.to_owned()),
        (
            http::HeaderName::from_static(TIMESTAMP_HEADER),
            timestamp_digits,
        ),
        (http::HeaderName::from_static(SIGNATURE_HEADER), signature),
    ]
}
