//! What the three schemes share: reading headers, delivery ids, timestamps, and matching
//! candidate signatures against every secret in constant time.

use hmac::Mac as _;
use subtle::ConstantTimeEq as _;

use super::{MAX_DELIVERY_ID, Scheme, TOLERANCE_SECS, VerifyError};

pub(super) type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A decoded candidate signature: HMAC-SHA256 output is always 32 bytes.
pub(super) type Tag = [u8; 32];

/// Timestamps longer than this are refused before parsing: 18 digits always fit in an `i64`,
/// so parsing can't overflow, and no real timestamp is anywhere near that long.
const MAX_TIMESTAMP_DIGITS: usize = 18;

/// The single value of a required header, as text.
///
/// Refused: absent (`MissingHeader`); repeated, since a proxy and we might each pick a different
/// copy; or containing anything but visible ASCII and spaces (`MalformedHeader`).
pub(super) fn header<'a>(
    headers: &'a http::HeaderMap,
    name: &'static str,
) -> Result<&'a str, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(VerifyError::MissingHeader(name))?;
    if values.next().is_some() {
        return Err(VerifyError::MalformedHeader(name));
    }
    let bytes = value.as_bytes();
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(VerifyError::MalformedHeader(name));
    }
    std::str::from_utf8(bytes).map_err(|_| VerifyError::MalformedHeader(name))
}

/// Whether `id` may be a delivery id: 1..=[`MAX_DELIVERY_ID`] bytes of visible ASCII, so it can
/// go into an idempotency key, a log line or a URL without escaping surprises.
pub(super) fn is_valid_delivery_id(id: &str) -> bool {
    (1..=MAX_DELIVERY_ID).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// A timestamp header: ASCII digits only (no sign, fraction, spaces or exponent), at most
/// [`MAX_TIMESTAMP_DIGITS`] of them.
pub(super) fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    if text.is_empty()
        || text.len() > MAX_TIMESTAMP_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(VerifyError::BadTimestamp);
    }
    text.parse().map_err(|_| VerifyError::BadTimestamp)
}

/// Refuses a timestamp more than [`TOLERANCE_SECS`] from now, either way (exactly 300 passes).
/// `abs_diff` can't overflow, whatever `now` is.
pub(super) fn check_tolerance(timestamp: i64, now: i64) -> Result<(), VerifyError> {
    if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    Ok(())
}

/// Decodes a hex candidate (either case); `None` unless it is exactly 32 bytes.
pub(super) fn decode_hex_tag(text: &str) -> Option<Tag> {
    let mut tag = [0u8; 32];
    hex::decode_to_slice(text, &mut tag).ok()?;
    Some(tag)
}

/// Passes when the HMAC of `message` under any of `secrets` equals any candidate.
///
/// Each secret's tag is computed once and compared with every candidate in constant time. A
/// stored secret that does not parse is skipped so that, during a rotation, the other may still
/// match; if none matched, the bad secret is reported (`BadSecret`) ahead of the sender's
/// fault, since it would fail every delivery.
pub(super) fn match_any(
    scheme: Scheme,
    secrets: &[&str],
    message: &[&[u8]],
    candidates: &[Tag],
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let mut bad_secret = false;
    for secret in secrets {
        let Ok(key) = super::signing_key(scheme, secret) else {
            bad_secret = true;
            continue;
        };
        let expected = tag(&key, message);
        if candidates
            .iter()
            .any(|candidate| bool::from(expected.ct_eq(candidate)))
        {
            return Ok(());
        }
    }
    Err(if bad_secret {
        VerifyError::BadSecret
    } else {
        VerifyError::NoValidSignature
    })
}

/// The HMAC of the concatenated `parts` (no copy of the body is made).
pub(super) fn tag(key: &HmacSha256, parts: &[&[u8]]) -> Tag {
    let mut mac = key.clone();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
