//! Standard Webhooks v1.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::{headers, to_map, with, without};
use crate::webhook::{Scheme, SecretError, Verified, VerifyError, check_secret, sign, verify};

// The official vector, from the standard-webhooks repository's own library tests:
// github.com/standard-webhooks/standard-webhooks, libraries/go/webhook_test.go
// (`TestWebhookSign`); the same values are in libraries/javascript/src/webhook.test.ts,
// libraries/php/tests/WebhookTest.php and libraries/java/.../TestScenario.java.
const OFFICIAL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OFFICIAL_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const OFFICIAL_TS: i64 = 1614265330;
const OFFICIAL_BODY: &[u8] = br#"{"test": 2432232314}"#;
const OFFICIAL_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

// Our own vectors, computed independently with Python's stdlib:
//   key = base64.b64decode(secret[len("whsec_"):])
//   "v1," + base64.b64encode(hmac.new(key, f"{id}.{ts}.".encode() + body, hashlib.sha256).digest())
// SECRET is bytes 0..32, PREVIOUS_SECRET bytes 100..124 (24 bytes, unpadded base64).
const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const PREVIOUS_SECRET: &str = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7";
const ID: &str = "msg_airlock_1";
const TS: i64 = 1700000000;
const BODY: &[u8] = br#"{"hello": "world", "n": 1}"#;
const SIGNATURE: &str = "v1,MdRk11rdSMqVW/aR86ziC3IMluwuBvPI4xoU0GBFF0A=";
const PREVIOUS_SIGNATURE: &str = "v1,kMOzz3nrQSy5gE73vJMf3zygbDMipm4p7AX1E8b+wx8=";
/// SECRET's signature over `{"hello":"world","n":1}`, BODY re-serialized by serde_json.
const RESERIALIZED_SIGNATURE: &str = "v1,yMb8ezt5IHJpvPBQ7Phqn03bjoXqWK04GxN8NquKv1c=";

fn request(signature: &str) -> http::HeaderMap {
    headers(&[
        ("webhook-id", ID),
        ("webhook-timestamp", "1700000000"),
        ("webhook-signature", signature),
    ])
}

fn check(headers: &http::HeaderMap) -> Result<Verified, VerifyError> {
    verify(Scheme::StandardWebhooks, &[SECRET], headers, BODY, TS)
}

fn passes() -> Verified {
    Verified {
        delivery_id: ID.to_owned(),
        timestamp: Some(TS),
    }
}

/// The signature bytes of SIGNATURE, to build near misses from.
fn signature_bytes() -> Vec<u8> {
    B64.decode(&SIGNATURE["v1,".len()..]).unwrap()
}

#[test]
fn official_vector_verifies_and_signs() {
    let h = headers(&[
        ("webhook-id", OFFICIAL_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", OFFICIAL_SIGNATURE),
    ]);
    let verified = verify(
        Scheme::StandardWebhooks,
        &[OFFICIAL_SECRET],
        &h,
        OFFICIAL_BODY,
        OFFICIAL_TS,
    );
    assert_eq!(
        verified,
        Ok(Verified {
            delivery_id: OFFICIAL_ID.to_owned(),
            timestamp: Some(OFFICIAL_TS)
        })
    );
    let signed = sign(
        Scheme::StandardWebhooks,
        OFFICIAL_SECRET,
        OFFICIAL_ID,
        OFFICIAL_TS,
        OFFICIAL_BODY,
    )
    .unwrap();
    assert_eq!(to_map(signed), h);
}

#[test]
fn python_vector_verifies_and_signs() {
    assert_eq!(check(&request(SIGNATURE)), Ok(passes()));
    let signed = sign(Scheme::StandardWebhooks, SECRET, ID, TS, BODY).unwrap();
    assert_eq!(to_map(signed), request(SIGNATURE));
}

#[test]
fn round_trips() {
    let body = b"any bytes at all \x00\xff";
    let signed = to_map(sign(Scheme::StandardWebhooks, SECRET, "id-42", 12345, body).unwrap());
    assert_eq!(
        verify(Scheme::StandardWebhooks, &[SECRET], &signed, body, 12345),
        Ok(Verified {
            delivery_id: "id-42".to_owned(),
            timestamp: Some(12345)
        })
    );
}

#[test]
fn empty_v1_signature_fails() {
    assert_eq!(check(&request("v1,")), Err(VerifyError::NoValidSignature));
    assert_eq!(
        check(&request("v1, v1,")),
        Err(VerifyError::NoValidSignature)
    );
    assert_eq!(check(&request("")), Err(VerifyError::NoValidSignature));
}

#[test]
fn reserialized_json_signature_fails() {
    let value: serde_json::Value = serde_json::from_slice(BODY).unwrap();
    assert_eq!(
        serde_json::to_string(&value).unwrap(),
        r#"{"hello":"world","n":1}"#
    );
    assert_eq!(
        check(&request(RESERIALIZED_SIGNATURE)),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn truncated_signatures_fail() {
    let textually = &SIGNATURE[..SIGNATURE.len() - 4];
    let bytes = signature_bytes();
    let short = format!("v1,{}", B64.encode(&bytes[..31]));
    let unpadded = SIGNATURE.trim_end_matches('=');
    for signature in [textually, short.as_str(), unpadded] {
        assert_eq!(
            check(&request(signature)),
            Err(VerifyError::NoValidSignature),
            "{signature}"
        );
    }
}

#[test]
fn extra_long_signatures_fail() {
    let textually = format!("{SIGNATURE}AAAA");
    let mut bytes = signature_bytes();
    bytes.push(0);
    let long = format!("v1,{}", B64.encode(&bytes));
    for signature in [textually, long] {
        assert_eq!(
            check(&request(&signature)),
            Err(VerifyError::NoValidSignature),
            "{signature}"
        );
    }
}

#[test]
fn unknown_versions_only_fail() {
    let sig = &SIGNATURE["v1,".len()..];
    for signature in [
        format!("v1a,{sig}"),
        format!("v2,{sig}"),
        format!("V1,{sig}"),
        format!("v1={sig}"),
        sig.to_owned(),
        format!("v1a,{sig} v2,{sig}"),
    ] {
        assert_eq!(
            check(&request(&signature)),
            Err(VerifyError::NoValidSignature),
            "{signature}"
        );
    }
}

#[test]
fn unknown_versions_beside_a_valid_one_are_ignored() {
    let sig = &SIGNATURE["v1,".len()..];
    let mixed = format!("v1a,{sig} v2,garbage {SIGNATURE} nocomma");
    assert_eq!(check(&request(&mixed)), Ok(passes()));
}

#[test]
fn second_of_several_signatures_passes() {
    let wrong = format!("v1,{}", B64.encode([7u8; 32]));
    assert_eq!(
        check(&request(&format!("{wrong} {SIGNATURE}"))),
        Ok(passes())
    );
    assert_eq!(
        check(&request(&format!("{PREVIOUS_SIGNATURE} {SIGNATURE}"))),
        Ok(passes())
    );
    // Runs of spaces only make empty entries, which are skipped.
    assert_eq!(
        check(&request(&format!("{wrong}   {SIGNATURE}"))),
        Ok(passes())
    );
}

#[test]
fn each_missing_header_is_named() {
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let h = without(request(SIGNATURE), name);
        assert_eq!(check(&h), Err(VerifyError::MissingHeader(name)));
    }
    assert_eq!(
        check(&http::HeaderMap::new()),
        Err(VerifyError::MissingHeader("webhook-id"))
    );
}

#[test]
fn repeated_headers_are_malformed() {
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut h = request(SIGNATURE);
        let value = h.get(name).unwrap().clone();
        h.append(http::HeaderName::from_static(name), value);
        assert_eq!(check(&h), Err(VerifyError::MalformedHeader(name)), "{name}");
    }
}

#[test]
fn non_ascii_header_values_are_malformed() {
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut h = request(SIGNATURE);
        h.insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_bytes(b"msg_\xc3\xa9").unwrap(),
        );
        assert_eq!(check(&h), Err(VerifyError::MalformedHeader(name)), "{name}");
        h.insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_bytes(b"a\tb").unwrap(),
        );
        assert_eq!(check(&h), Err(VerifyError::MalformedHeader(name)), "{name}");
    }
}

#[test]
fn delivery_id_rules() {
    let too_long = "m".repeat(201);
    for id in ["", "msg 1", too_long.as_str()] {
        let h = with(request(SIGNATURE), "webhook-id", id);
        assert_eq!(
            check(&h),
            Err(VerifyError::MalformedHeader("webhook-id")),
            "{id:?}"
        );
    }
    // 200 visible ASCII characters, including punctuation, is the longest accepted.
    let longest = format!("{}!~", "m".repeat(198));
    let signed = to_map(sign(Scheme::StandardWebhooks, SECRET, &longest, TS, BODY).unwrap());
    assert_eq!(check(&signed).map(|v| v.delivery_id), Ok(longest.clone()));
}

#[test]
fn ids_with_a_full_stop_are_refused_even_when_signed() {
    for id in [".", "evt.", ".evt", "evt.1700000000", "a.b.c"] {
        let signed = to_map(sign(Scheme::StandardWebhooks, SECRET, id, TS, BODY).unwrap());
        assert_eq!(
            check(&signed),
            Err(VerifyError::MalformedHeader("webhook-id")),
            "{id:?}"
        );
    }
}

#[test]
fn a_dotted_id_would_replay_as_another_delivery() {
    // Why the spec forbids `.` in the id: the bytes signed for id `evt.{TS}` at `TS + 10` are
    // the bytes of id `evt` at `TS` with the body `{TS + 10}.{BODY}`. Only the first request
    // is refused; the second is, byte for byte, a delivery the holder of the secret signed
    // (so a sender whose ids had a `.` could never have had that first delivery accepted).
    let dotted = to_map(
        sign(
            Scheme::StandardWebhooks,
            SECRET,
            &format!("evt.{TS}"),
            TS + 10,
            BODY,
        )
        .unwrap(),
    );
    assert_eq!(
        check(&dotted),
        Err(VerifyError::MalformedHeader("webhook-id"))
    );
    let signature = dotted.get("webhook-signature").unwrap().to_str().unwrap();
    let replay = headers(&[
        ("webhook-id", "evt"),
        ("webhook-timestamp", &TS.to_string()),
        ("webhook-signature", signature),
    ]);
    let shifted_body = [format!("{}.", TS + 10).as_bytes(), BODY].concat();
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &[SECRET],
            &replay,
            &shifted_body,
            TS
        ),
        Ok(Verified {
            delivery_id: "evt".to_owned(),
            timestamp: Some(TS)
        })
    );
}

#[test]
fn a_secret_without_its_prefix_is_the_same_key() {
    // The official vector and ours, with the secret as some senders hand it out: no `whsec_`.
    let h = headers(&[
        ("webhook-id", OFFICIAL_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", OFFICIAL_SIGNATURE),
    ]);
    let bare_official = &OFFICIAL_SECRET["whsec_".len()..];
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &[bare_official],
            &h,
            OFFICIAL_BODY,
            OFFICIAL_TS
        )
        .map(|v| v.delivery_id),
        Ok(OFFICIAL_ID.to_owned())
    );
    let bare = &SECRET["whsec_".len()..];
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &[bare],
            &request(SIGNATURE),
            BODY,
            TS
        ),
        Ok(passes())
    );
    let signed = sign(Scheme::StandardWebhooks, bare, ID, TS, BODY).unwrap();
    assert_eq!(to_map(signed), request(SIGNATURE));
}

#[test]
fn the_id_and_timestamp_are_signed() {
    let other_id = with(request(SIGNATURE), "webhook-id", "msg_airlock_2");
    assert_eq!(check(&other_id), Err(VerifyError::NoValidSignature));
    let other_ts = with(request(SIGNATURE), "webhook-timestamp", "1700000001");
    assert_eq!(check(&other_ts), Err(VerifyError::NoValidSignature));
}

#[test]
fn malformed_timestamps_are_refused() {
    for ts in [
        "abc",
        "1700000000.5",
        "1700000000.0",
        "-1700000000",
        "+1700000000",
        "99999999999999999999",
        "1000000000000000000",
        "",
        " 1700000000",
        "1700000000 ",
        "17000 00000",
        "1e9",
        "0x6553f100",
    ] {
        let h = with(request(SIGNATURE), "webhook-timestamp", ts);
        assert_eq!(check(&h), Err(VerifyError::BadTimestamp), "{ts:?}");
    }
}

#[test]
fn eighteen_digit_timestamps_parse_and_are_out_of_tolerance() {
    let h = with(
        request(SIGNATURE),
        "webhook-timestamp",
        "999999999999999999",
    );
    assert_eq!(check(&h), Err(VerifyError::TimestampOutOfTolerance));
}

#[test]
fn leading_zeros_are_the_same_number() {
    // The signed content uses the number, as the reference libraries do.
    let h = with(request(SIGNATURE), "webhook-timestamp", "0001700000000");
    assert_eq!(check(&h), Ok(passes()));
}

#[test]
fn tolerance_is_300_seconds_both_ways() {
    let h = request(SIGNATURE);
    let at = |now| verify(Scheme::StandardWebhooks, &[SECRET], &h, BODY, now);
    assert_eq!(at(TS + 300), Ok(passes()));
    assert_eq!(at(TS - 300), Ok(passes()));
    assert_eq!(at(TS + 301), Err(VerifyError::TimestampOutOfTolerance));
    assert_eq!(at(TS - 301), Err(VerifyError::TimestampOutOfTolerance));
    assert_eq!(at(i64::MIN), Err(VerifyError::TimestampOutOfTolerance));
    assert_eq!(at(i64::MAX), Err(VerifyError::TimestampOutOfTolerance));
}

#[test]
fn timestamp_is_checked_before_the_secret_or_signature() {
    // A stale request is refused as stale even when nothing else could have passed.
    let h = request("v1,");
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &["not a secret"],
            &h,
            BODY,
            TS + 301
        ),
        Err(VerifyError::TimestampOutOfTolerance)
    );
}

#[test]
fn wrong_secret_fails() {
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &[OFFICIAL_SECRET],
            &request(SIGNATURE),
            BODY,
            TS
        ),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn any_of_several_secrets_passes() {
    let h = request(PREVIOUS_SIGNATURE);
    assert_eq!(check(&h), Err(VerifyError::NoValidSignature));
    for secrets in [[SECRET, PREVIOUS_SECRET], [PREVIOUS_SECRET, SECRET]] {
        assert_eq!(
            verify(Scheme::StandardWebhooks, &secrets, &h, BODY, TS),
            Ok(passes())
        );
    }
}

#[test]
fn tampered_body_fails() {
    let mut body = BODY.to_vec();
    body[10] ^= 0x01;
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &[SECRET],
            &request(SIGNATURE),
            &body,
            TS
        ),
        Err(VerifyError::NoValidSignature)
    );
    let mut longer = BODY.to_vec();
    longer.push(b' ');
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &[SECRET],
            &request(SIGNATURE),
            &longer,
            TS
        ),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn stored_secret_faults_are_ours() {
    let h = request(SIGNATURE);
    for bad in ["not*base64", "whsec_not*base64", "whsec_", ""] {
        let err = verify(Scheme::StandardWebhooks, &[bad], &h, BODY, TS).unwrap_err();
        assert_eq!(err, VerifyError::BadSecret, "{bad:?}");
        assert!(err.is_server_fault());
    }
    // During a rotation a bad secret does not stop the good one from matching...
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &["whsec_!!", SECRET],
            &h,
            BODY,
            TS
        ),
        Ok(passes())
    );
    // ...but when nothing matched, the bad one is what gets reported.
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &[PREVIOUS_SECRET, "whsec_!!"],
            &h,
            BODY,
            TS
        ),
        Err(VerifyError::BadSecret)
    );
    assert_eq!(
        verify(Scheme::StandardWebhooks, &[], &h, BODY, TS),
        Err(VerifyError::NoSecret)
    );
}

#[test]
fn secret_rules() {
    let check = |s: &str| check_secret(Scheme::StandardWebhooks, s);
    assert_eq!(check(SECRET), Ok(()));
    assert_eq!(check(PREVIOUS_SECRET), Ok(()));
    assert_eq!(check(OFFICIAL_SECRET), Ok(()));
    // Padding is optional.
    assert_eq!(check(SECRET.trim_end_matches('=')), Ok(()));
    assert_eq!(check(""), Err(SecretError::Empty));
    // The prefix is optional, as in every official library; what follows must still be
    // base64 (a prefix in another case is not a prefix, and `_` is not base64).
    assert_eq!(check(&SECRET[6..]), Ok(()));
    assert_eq!(check(&OFFICIAL_SECRET[6..]), Ok(()));
    assert_eq!(check("WHSEC_AAAA"), Err(SecretError::InvalidBase64));
    assert_eq!(check("whsec_whsec_AAAA"), Err(SecretError::InvalidBase64));
    assert_eq!(check("whsec_not*base64"), Err(SecretError::InvalidBase64));
    assert_eq!(check("whsec_AAAA AAAA"), Err(SecretError::InvalidBase64));
    assert_eq!(check("whsec_-_-_"), Err(SecretError::InvalidBase64));
    let sized = |n: usize| format!("whsec_{}", B64.encode(vec![9u8; n]));
    assert_eq!(check(&sized(24)), Ok(()));
    assert_eq!(check(&sized(64)), Ok(()));
    assert_eq!(check(&sized(23)), Err(SecretError::WrongLength { len: 23 }));
    assert_eq!(check(&sized(65)), Err(SecretError::WrongLength { len: 65 }));
    assert_eq!(check("whsec_"), Err(SecretError::WrongLength { len: 0 }));
    assert_eq!(
        sign(Scheme::StandardWebhooks, "whsec_short", ID, TS, BODY),
        Err(SecretError::InvalidBase64)
    );
}

#[test]
fn signatures_one_bit_off_fail() {
    for at in [0, 15, 31] {
        let mut bytes = signature_bytes();
        bytes[at] ^= 0x01;
        let near = format!("v1,{}", B64.encode(&bytes));
        assert_eq!(
            check(&request(&near)),
            Err(VerifyError::NoValidSignature),
            "{at}"
        );
    }
}
