//! Stripe's `Stripe-Signature`.

use super::{headers, to_map, without};
use crate::webhook::{Scheme, SecretError, Verified, VerifyError, check_secret, sign, verify};

// Our own vectors, computed independently with Python's stdlib:
//   "v1=" + hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
// (the key is the whole secret string, `whsec_` included; `_` is not even base64).
const SECRET: &str = "whsec_test_airlock";
const PREVIOUS_SECRET: &str = "whsec_previous";
const TS: i64 = 1700000000;
const BODY: &[u8] = br#"{"id": "evt_1Airlock", "object": "event"}"#;
const EVENT_ID: &str = "evt_1Airlock";
const V1: &str = "v1=ecc8ad5671913a9a1927bb920cbaab2aa750377de5aabd3626fe46647bcf7c5c";
const PREVIOUS_V1: &str = "v1=d8efdd1341f67d4ebaafe9e1ee869b94b4126d74d0ed2eb09c2b64f575f5c421";
/// SECRET's signature over `{"id":"evt_1Airlock","object":"event"}`, BODY re-serialized.
const RESERIALIZED_V1: &str = "v1=03885faa991ed37ca8b596bfef7aa02aca184248322067d97b027a1f5dc445eb";

fn request(value: &str) -> http::HeaderMap {
    headers(&[("Stripe-Signature", value)])
}

fn signed(items: &str) -> http::HeaderMap {
    request(&format!("t=1700000000,{items}"))
}

fn check(headers: &http::HeaderMap) -> Result<Verified, VerifyError> {
    verify(Scheme::Stripe, &[SECRET], headers, BODY, TS)
}

fn passes() -> Verified {
    Verified {
        delivery_id: EVENT_ID.to_owned(),
        timestamp: Some(TS),
    }
}

/// `body` signed with SECRET at TS, and verified at TS.
fn check_body(body: &[u8]) -> Result<Verified, VerifyError> {
    let h = to_map(sign(Scheme::Stripe, SECRET, "ignored", TS, body).unwrap());
    verify(Scheme::Stripe, &[SECRET], &h, body, TS)
}

#[test]
fn python_vector_verifies_and_signs() {
    assert_eq!(check(&signed(V1)), Ok(passes()));
    let headers = sign(Scheme::Stripe, SECRET, "ignored", TS, BODY).unwrap();
    assert_eq!(to_map(headers), signed(V1));
}

#[test]
fn round_trips() {
    let body = br#"{"id":"evt_x","type":"charge.succeeded","data":{"object":{}}}"#;
    assert_eq!(
        check_body(body),
        Ok(Verified {
            delivery_id: "evt_x".to_owned(),
            timestamp: Some(TS)
        })
    );
}

#[test]
fn empty_v1_signature_fails() {
    assert_eq!(check(&signed("v1=")), Err(VerifyError::NoValidSignature));
    assert_eq!(
        check(&request("t=1700000000")),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn reserialized_json_signature_fails() {
    let value: serde_json::Value = serde_json::from_slice(BODY).unwrap();
    assert_eq!(
        serde_json::to_string(&value).unwrap(),
        r#"{"id":"evt_1Airlock","object":"event"}"#
    );
    assert_eq!(
        check(&signed(RESERIALIZED_V1)),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn truncated_and_extra_long_signatures_fail() {
    let short = &V1[..V1.len() - 2];
    let odd = &V1[..V1.len() - 1];
    let long = format!("{V1}00");
    for item in [short, odd, long.as_str()] {
        assert_eq!(
            check(&signed(item)),
            Err(VerifyError::NoValidSignature),
            "{item}"
        );
    }
}

#[test]
fn other_schemes_only_fail() {
    let hex = &V1["v1=".len()..];
    for items in [
        format!("v0={hex}"),
        format!("v2={hex}"),
        format!("V1={hex}"),
        format!("v0={hex},v2={hex}"),
        format!("v1,{hex}"),
    ] {
        assert_eq!(
            check(&signed(&items)),
            Err(VerifyError::NoValidSignature),
            "{items}"
        );
    }
}

#[test]
fn several_signatures_where_a_later_one_is_valid_pass() {
    let wrong = format!("v1={}", "ab".repeat(32));
    assert_eq!(check(&signed(&format!("{wrong},{V1}"))), Ok(passes()));
    assert_eq!(
        check(&signed(&format!("{PREVIOUS_V1},{V1},v0=00"))),
        Ok(passes())
    );
    // The order of items does not matter, and items that aren't key=value are skipped.
    assert_eq!(
        check(&request(&format!("{V1},junk,t=1700000000"))),
        Ok(passes())
    );
}

#[test]
fn uppercase_hex_passes() {
    let upper = format!("v1={}", V1["v1=".len()..].to_ascii_uppercase());
    assert_eq!(check(&signed(&upper)), Ok(passes()));
}

#[test]
fn missing_header_and_missing_or_repeated_t() {
    assert_eq!(
        check(&without(signed(V1), "stripe-signature")),
        Err(VerifyError::MissingHeader("stripe-signature"))
    );
    for value in [
        V1.to_owned(),
        format!("T=1700000000,{V1}"),
        format!("t=1700000000,t=1700000000,{V1}"),
        format!("t=1700000000,{V1},t=1"),
    ] {
        assert_eq!(
            check(&request(&value)),
            Err(VerifyError::MalformedHeader("stripe-signature")),
            "{value}"
        );
    }
}

#[test]
fn malformed_timestamps_are_refused() {
    for t in [
        "abc",
        "1700000000.5",
        "-1700000000",
        "+1700000000",
        "99999999999999999999",
        "1000000000000000000",
        "",
        " 1700000000",
        "1e9",
    ] {
        let h = request(&format!("t={t},{V1}"));
        assert_eq!(check(&h), Err(VerifyError::BadTimestamp), "{t:?}");
    }
}

#[test]
fn tolerance_is_300_seconds_both_ways() {
    let h = signed(V1);
    let at = |now| verify(Scheme::Stripe, &[SECRET], &h, BODY, now);
    assert_eq!(at(TS + 300), Ok(passes()));
    assert_eq!(at(TS - 300), Ok(passes()));
    assert_eq!(at(TS + 301), Err(VerifyError::TimestampOutOfTolerance));
    assert_eq!(at(TS - 301), Err(VerifyError::TimestampOutOfTolerance));
    assert_eq!(at(i64::MIN), Err(VerifyError::TimestampOutOfTolerance));
}

#[test]
fn the_timestamp_is_signed() {
    let h = request(&format!("t=1700000001,{V1}"));
    assert_eq!(check(&h), Err(VerifyError::NoValidSignature));
}

#[test]
fn timestamp_is_checked_before_the_secret_or_signature() {
    assert_eq!(
        verify(
            Scheme::Stripe,
            &["no prefix"],
            &signed("v1="),
            BODY,
            TS - 301
        ),
        Err(VerifyError::TimestampOutOfTolerance)
    );
}

#[test]
fn wrong_secret_fails() {
    assert_eq!(
        verify(Scheme::Stripe, &[PREVIOUS_SECRET], &signed(V1), BODY, TS),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn any_of_several_secrets_passes() {
    let h = signed(PREVIOUS_V1);
    assert_eq!(check(&h), Err(VerifyError::NoValidSignature));
    for secrets in [[SECRET, PREVIOUS_SECRET], [PREVIOUS_SECRET, SECRET]] {
        assert_eq!(verify(Scheme::Stripe, &secrets, &h, BODY, TS), Ok(passes()));
    }
}

#[test]
fn tampered_body_fails() {
    let mut body = BODY.to_vec();
    body[9] ^= 0x01;
    assert_eq!(
        verify(Scheme::Stripe, &[SECRET], &signed(V1), &body, TS),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn delivery_id_comes_from_the_verified_body() {
    assert_eq!(check_body(b"not json"), Err(VerifyError::MissingDeliveryId));
    assert_eq!(check_body(b""), Err(VerifyError::MissingDeliveryId));
    assert_eq!(
        check_body(br#"{"object":"event"}"#),
        Err(VerifyError::MissingDeliveryId)
    );
    assert_eq!(
        check_body(br#"{"id":7}"#),
        Err(VerifyError::MissingDeliveryId)
    );
    assert_eq!(
        check_body(br#"{"id":null}"#),
        Err(VerifyError::MissingDeliveryId)
    );
    assert_eq!(
        check_body(br#"["evt_1"]"#),
        Err(VerifyError::MissingDeliveryId)
    );
    assert_eq!(
        check_body(br#"{"data":{"id":"evt_nested"}}"#),
        Err(VerifyError::MissingDeliveryId)
    );
    assert_eq!(
        check_body(br#"{"id":"a","id":"b"}"#),
        Err(VerifyError::MissingDeliveryId)
    );
    assert_eq!(
        check_body(br#"{"id":"evt_1"} trailing"#),
        Err(VerifyError::MissingDeliveryId)
    );
    assert_eq!(
        check_body(br#"{"id":""}"#),
        Err(VerifyError::MalformedDeliveryId)
    );
    assert_eq!(
        check_body(br#"{"id":"evt 1"}"#),
        Err(VerifyError::MalformedDeliveryId)
    );
    assert_eq!(
        check_body("{\"id\":\"évt\"}".as_bytes()),
        Err(VerifyError::MalformedDeliveryId)
    );
    let too_long = format!(r#"{{"id":"{}"}}"#, "e".repeat(201));
    assert_eq!(
        check_body(too_long.as_bytes()),
        Err(VerifyError::MalformedDeliveryId)
    );
    let longest = format!(r#"{{"id":"{}"}}"#, "e".repeat(200));
    assert_eq!(
        check_body(longest.as_bytes()).map(|v| v.delivery_id),
        Ok("e".repeat(200))
    );
    // An unsigned body is never read: a bad signature is reported, not the missing id.
    assert_eq!(
        verify(Scheme::Stripe, &[SECRET], &signed(V1), b"not json", TS),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn stored_secret_faults_are_ours() {
    let h = signed(V1);
    for bad in ["test_airlock", "whsec_", "", "whsec_with space"] {
        assert_eq!(
            verify(Scheme::Stripe, &[bad], &h, BODY, TS),
            Err(VerifyError::BadSecret),
            "{bad:?}"
        );
    }
    assert_eq!(
        verify(Scheme::Stripe, &["nope", SECRET], &h, BODY, TS),
        Ok(passes())
    );
    assert_eq!(
        verify(Scheme::Stripe, &[], &h, BODY, TS),
        Err(VerifyError::NoSecret)
    );
}

#[test]
fn secret_rules() {
    let check = |s: &str| check_secret(Scheme::Stripe, s);
    assert_eq!(check(SECRET), Ok(()));
    assert_eq!(check("whsec_x"), Ok(()));
    assert_eq!(check(&crate::webhook::generate_secret()), Ok(()));
    assert_eq!(check(&format!("whsec_{}", "a".repeat(250))), Ok(()));
    assert_eq!(check(""), Err(SecretError::Empty));
    assert_eq!(check("test_airlock"), Err(SecretError::MissingPrefix));
    assert_eq!(check("sk_test_123"), Err(SecretError::MissingPrefix));
    assert_eq!(check("whsec_"), Err(SecretError::TooShort { min: 7 }));
    assert_eq!(
        check(&format!("whsec_{}", "a".repeat(251))),
        Err(SecretError::TooLong { max: 256 })
    );
    for bad in ["whsec_a b", "whsec_é", "whsec_\n"] {
        assert_eq!(check(bad), Err(SecretError::NotPrintable), "{bad:?}");
    }
    assert_eq!(
        sign(Scheme::Stripe, "sk_live", "id", TS, BODY),
        Err(SecretError::MissingPrefix)
    );
}

#[test]
fn signatures_one_bit_off_fail() {
    for at in [0, 15, 31] {
        let mut bytes = hex::decode(&V1["v1=".len()..]).unwrap();
        bytes[at] ^= 0x01;
        let near = format!("v1={}", hex::encode(bytes));
        assert_eq!(
            check(&signed(&near)),
            Err(VerifyError::NoValidSignature),
            "{at}"
        );
    }
}
