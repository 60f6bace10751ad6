//! Stripe's `Stripe-Signature: t=<unix secs>,v1=<hex>[,v1=<hex>…][,v0=…]`
//! (<https://docs.stripe.com/webhooks#verify-manually>): HMAC-SHA256 of `{t}.{body}`, keyed
//! with the whole secret string, `whsec_` included (Stripe does not decode it).
//!
//! The delivery id is the event's `id` from the body, read only once the signature has checked
//! out, so an unsigned body is never parsed. Stripe resends an event under the same id, which
//! makes it the idempotency key; the timestamp bounds replays to the tolerance.

use super::common::{self, HmacSha256, Tag};
use super::{SECRET_PREFIX, Scheme, SecretError, Verified, VerifyError};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// The longest secret a tenant may supply, in characters.
pub const MAX_SECRET_LEN: usize = 256;

/// Stripe generates `whsec_` + visible ASCII; anything else was pasted wrong.
pub(super) fn check_secret(secret: &str) -> Result<(), SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    if !secret.starts_with(SECRET_PREFIX) {
        return Err(SecretError::MissingPrefix);
    }
    if !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(SecretError::NotPrintable);
    }
    let min = SECRET_PREFIX.len() + 1;
    if secret.len() < min {
        return Err(SecretError::TooShort { min });
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
    now: i64,
) -> Result<Verified, VerifyError> {
    let value = common::header(headers, SIGNATURE_HEADER)?;
    let mut timestamp_text = None;
    let mut candidates: Vec<Tag> = Vec::new();
    // Like Stripe's libraries: items that are not `key=value`, and schemes other than `v1`
    // (the legacy `v0`), are skipped.
    for (key, val) in value.split(',').filter_map(|item| item.split_once('=')) {
        match key {
            "t" => {
                // Two `t`s would leave the signed timestamp ambiguous.
                if timestamp_text.is_some() {
                    return Err(VerifyError::MalformedHeader(SIGNATURE_HEADER));
                }
                timestamp_text = Some(val);
            }
            "v1" => candidates.extend(common::decode_hex_tag(val)),
            _ => {}
        }
    }
    let timestamp_text = timestamp_text.ok_or(VerifyError::MalformedHeader(SIGNATURE_HEADER))?;
    let timestamp = common::parse_timestamp(timestamp_text)?;
    common::check_tolerance(timestamp, now)?;

    let timestamp_digits = timestamp.to_string();
    let message: [&[u8]; 3] = [timestamp_digits.as_bytes(), b".", body];
    common::match_any(Scheme::Stripe, secrets, &message, &candidates)?;

    let delivery_id = event_id(body)?;
    Ok(Verified {
        delivery_id,
        timestamp: Some(timestamp),
    })
}

/// The top-level `id` of the event. The whole body must be one JSON object: a body Stripe
/// signed that isn't is not an event we can key.
fn event_id(body: &[u8]) -> Result<String, VerifyError> {
    let EventId(id) = serde_json::from_slice(body).map_err(|_| VerifyError::MissingDeliveryId)?;
    if !common::is_valid_delivery_id(&id) {
        return Err(VerifyError::MalformedDeliveryId);
    }
    Ok(id)
}

/// An event's `id`, read without building the rest of the body in memory. Hand-written rather
/// than derived because a derived struct would also accept a JSON array (`["evt_1"]`).
struct EventId(String);

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventIdVisitor)
    }
}

struct EventIdVisitor;

impl<'de> serde::de::Visitor<'de> for EventIdVisitor {
    type Value = EventId;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object with a string id")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EventId, A::Error> {
        use serde::de::Error as _;
        let mut id = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "id" {
                // A repeated id would make the idempotency key depend on which one a parser keeps.
                if id.replace(map.next_value::<String>()?).is_some() {
                    return Err(A::Error::duplicate_field("id"));
                }
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        id.map(EventId).ok_or_else(|| A::Error::missing_field("id"))
    }
}

pub(super) fn sign(
    key: &HmacSha256,
    timestamp: i64,
    body: &[u8],
) -> Vec<(http::HeaderName, String)> {
    let timestamp_digits = timestamp.to_string();
    let tag = common::tag(key, &[timestamp_digits.as_bytes(), b".", body]);
    vec![(
        http::HeaderName::from_static(SIGNATURE_HEADER),
        format!("t={timestamp_digits},v1={}", hex::encode(tag)),
    )]
}
