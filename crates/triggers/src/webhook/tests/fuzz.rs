//! Property tests: arbitrary requests never pass (nor panic), and no single flipped body byte
//! survives verification.

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::to_map;
use crate::webhook::{Scheme, VerifyError, sign, verify};

const NOW: i64 = 1_700_000_000;

/// A secret valid for every scheme, from 32 random bytes.
fn secret(bytes: [u8; 32]) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Raw bytes, printable text, or text shaped like the scheme's header so parsing gets past its
/// first checks and the HMAC comparison runs.
fn value(shaped: &'static str) -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(
        0.9,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..100),
            "[ -~]{0,100}".prop_map(String::into_bytes),
            shaped.prop_map(String::into_bytes),
        ],
    )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        r#"\{"id":"[ -~]{0,30}"(,"x":[0-9]{1,5})?\}"#.prop_map(String::into_bytes),
    ]
}

fn now() -> impl Strategy<Value = i64> {
    prop_oneof![Just(NOW), NOW - 400..NOW + 400, any::<i64>()]
}

/// Headers from the generated values; a value `http` would not accept is left out (as a
/// server would never hand it to us).
fn header_map(pairs: &[(&'static str, &Option<Vec<u8>>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Some(Ok(value)) = value.as_deref().map(HeaderValue::from_bytes) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    map
}

const NOW_TEXT: &str = "1700000000";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn standard_webhooks_never_passes_arbitrary_requests(
        key in any::<[u8; 32]>(),
        id in value("msg_[a-zA-Z0-9]{0,20}"),
        timestamp in value("1700000[0-9]{3}|17000000000|-?[0-9]{0,20}(\\.[0-9])?"),
        signature in value("((v1|v1a|v2),[A-Za-z0-9+/=]{0,48} ?){0,3}"),
        body in body(),
        now in now(),
    ) {
        let secret = secret(key);
        let h = header_map(&[
            ("webhook-id", &id),
            ("webhook-timestamp", &timestamp),
            ("webhook-signature", &signature),
        ]);
        let result = verify(Scheme::StandardWebhooks, &[secret.as_str()], &h, &body, now);
        prop_assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn github_never_passes_arbitrary_requests(
        key in any::<[u8; 32]>(),
        id in value("[0-9a-f-]{1,40}"),
        signature in value("sha256=[0-9a-fA-F]{0,70}"),
        body in body(),
        now in now(),
    ) {
        let secret = secret(key);
        let h = header_map(&[("x-github-delivery", &id), ("x-hub-signature-256", &signature)]);
        let result = verify(Scheme::Github, &[secret.as_str()], &h, &body, now);
        prop_assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn stripe_never_passes_arbitrary_requests(
        key in any::<[u8; 32]>(),
        signature in value("(t=(1700000[0-9]{3}|[0-9-]{0,20}),?)?((v1|v0|t)=[0-9a-fA-F]{0,66},?){0,3}"),
        body in body(),
        now in now(),
    ) {
        let secret = secret(key);
        let h = header_map(&[("stripe-signature", &signature)]);
        let result = verify(Scheme::Stripe, &[secret.as_str()], &h, &body, now);
        prop_assert!(result.is_err(), "{result:?}");
    }
}

/// For Stripe the body must carry an event id to verify at all; other schemes sign any bytes.
fn signable_body(scheme: Scheme, bytes: Vec<u8>) -> Vec<u8> {
    match scheme {
        Scheme::Stripe => {
            format!(r#"{{"id":"evt_1","pad":"{}"}}"#, hex::encode(bytes)).into_bytes()
        }
        Scheme::StandardWebhooks | Scheme::Github => bytes,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn any_single_flipped_body_byte_is_refused(
        scheme in prop::sample::select(Scheme::ALL.to_vec()),
        key in any::<[u8; 32]>(),
        bytes in prop::collection::vec(any::<u8>(), 1..300),
        index in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let secret = secret(key);
        let mut body = signable_body(scheme, bytes);
        let h = to_map(sign(scheme, &secret, "delivery-1", NOW, &body).unwrap());
        prop_assert!(verify(scheme, &[secret.as_str()], &h, &body, NOW).is_ok());
        let at = index.index(body.len());
        body[at] ^= mask;
        prop_assert_eq!(
            verify(scheme, &[secret.as_str()], &h, &body, NOW),
            Err(VerifyError::NoValidSignature)
        );
    }
}

#[test]
fn shaped_now_text_matches_now() {
    // The shaped strategies above aim at NOW; keep them in step.
    assert_eq!(NOW.to_string(), NOW_TEXT);
}
