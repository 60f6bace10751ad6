//! GitHub's `X-Hub-Signature-256`.

use super::{headers, to_map, with, without};
use crate::webhook::{Scheme, SecretError, Verified, VerifyError, check_secret, sign, verify};

// GitHub's documented vector ("Testing the webhook payload validation" in
// docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries), confirmed with
// Python: hmac.new(b"It's a Secret to Everybody", b"Hello, World!", hashlib.sha256).hexdigest()
const DOCS_SECRET: &str = "It's a Secret to Everybody";
const DOCS_BODY: &[u8] = b"Hello, World!";
const DOCS_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

// Our own vectors, computed independently with Python's stdlib:
//   "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
const SECRET: &str = "airlock test secret";
const PREVIOUS_SECRET: &str = "previous secret";
const ID: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
const BODY: &[u8] = br#"{"action": "opened", "number": 7}"#;
const SIGNATURE: &str = "sha256=dfa7e58e6f14bc84102c8ab7c3a9af2bf53115741d4ac8e2fb40abbd3f3de05d";
const PREVIOUS_SIGNATURE: &str =
    "sha256=15f3cc8fa9a893e59353ee8fc063b6d7e2734118851b0db7d076af5e9c1cf6b2";
/// SECRET's signature over `{"action":"opened","number":7}`, BODY re-serialized by serde_json.
const RESERIALIZED_SIGNATURE: &str =
    "sha256=ac27bd5f3512a1e2b9fc5857f1db83915546d420aa9a2ee944e73effb58bd2af";

/// GitHub has no timestamp; any `now` gives the same answer.
const NOW: i64 = 1_700_000_000;

fn request(signature: &str) -> http::HeaderMap {
    headers(&[
        ("X-GitHub-Delivery", ID),
        ("X-Hub-Signature-256", signature),
    ])
}

fn check(headers: &http::HeaderMap) -> Result<Verified, VerifyError> {
    verify(Scheme::Github, &[SECRET], headers, BODY, NOW)
}

fn passes() -> Verified {
    Verified {
        delivery_id: ID.to_owned(),
        timestamp: None,
    }
}

#[test]
fn docs_vector_verifies_and_signs() {
    let h = request(DOCS_SIGNATURE);
    assert_eq!(
        verify(Scheme::Github, &[DOCS_SECRET], &h, DOCS_BODY, NOW),
        Ok(passes())
    );
    let signed = sign(Scheme::Github, DOCS_SECRET, ID, NOW, DOCS_BODY).unwrap();
    assert_eq!(to_map(signed), h);
}

#[test]
fn python_vector_verifies_and_signs() {
    assert_eq!(check(&request(SIGNATURE)), Ok(passes()));
    let signed = sign(Scheme::Github, SECRET, ID, 0, BODY).unwrap();
    assert_eq!(to_map(signed), request(SIGNATURE));
}

#[test]
fn round_trips_without_a_timestamp() {
    let body = b"\x00\x01 binary";
    let signed = to_map(sign(Scheme::Github, SECRET, "d-1", 5, body).unwrap());
    // The timestamp given to `sign` is not sent, and `now` does not matter.
    for now in [i64::MIN, 0, NOW, i64::MAX] {
        assert_eq!(
            verify(Scheme::Github, &[SECRET], &signed, body, now),
            Ok(Verified {
                delivery_id: "d-1".to_owned(),
                timestamp: None
            })
        );
    }
}

#[test]
fn uppercase_hex_passes() {
    let upper = format!(
        "sha256={}",
        SIGNATURE["sha256=".len()..].to_ascii_uppercase()
    );
    assert_eq!(check(&request(&upper)), Ok(passes()));
}

#[test]
fn empty_signature_fails() {
    assert_eq!(
        check(&request("sha256=")),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn reserialized_json_signature_fails() {
    let value: serde_json::Value = serde_json::from_slice(BODY).unwrap();
    assert_eq!(
        serde_json::to_string(&value).unwrap(),
        r#"{"action":"opened","number":7}"#
    );
    assert_eq!(
        check(&request(RESERIALIZED_SIGNATURE)),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn truncated_and_extra_long_signatures_fail() {
    let odd = &SIGNATURE[..SIGNATURE.len() - 1];
    let short = &SIGNATURE[..SIGNATURE.len() - 2];
    let long = format!("{SIGNATURE}00");
    let longer = format!("{SIGNATURE}0");
    let not_hex = format!("{}zz", &SIGNATURE[..SIGNATURE.len() - 2]);
    for signature in [odd, short, long.as_str(), longer.as_str(), not_hex.as_str()] {
        assert_eq!(
            check(&request(signature)),
            Err(VerifyError::NoValidSignature),
            "{signature}"
        );
    }
}

#[test]
fn other_algorithms_are_malformed() {
    let hex = &SIGNATURE["sha256=".len()..];
    for signature in [
        format!("sha1={hex}"),
        format!("sha512={hex}"),
        format!("SHA256={hex}"),
        hex.to_owned(),
        format!("v1={hex}"),
    ] {
        assert_eq!(
            check(&request(&signature)),
            Err(VerifyError::MalformedHeader("x-hub-signature-256")),
            "{signature}"
        );
    }
}

#[test]
fn each_missing_header_is_named() {
    for name in ["x-github-delivery", "x-hub-signature-256"] {
        let h = without(request(SIGNATURE), name);
        assert_eq!(check(&h), Err(VerifyError::MissingHeader(name)));
    }
}

#[test]
fn the_sha1_header_alone_is_not_enough() {
    let h = headers(&[
        ("X-GitHub-Delivery", ID),
        (
            "X-Hub-Signature",
            "sha1=0000000000000000000000000000000000000000",
        ),
    ]);
    assert_eq!(
        check(&h),
        Err(VerifyError::MissingHeader("x-hub-signature-256"))
    );
}

#[test]
fn delivery_id_rules() {
    let too_long = "d".repeat(201);
    for id in ["", "a b", too_long.as_str()] {
        let h = with(request(SIGNATURE), "x-github-delivery", id);
        assert_eq!(
            check(&h),
            Err(VerifyError::MalformedHeader("x-github-delivery")),
            "{id:?}"
        );
    }
    let mut h = request(SIGNATURE);
    h.insert(
        "x-github-delivery",
        http::HeaderValue::from_bytes(b"id\xff").unwrap(),
    );
    assert_eq!(
        check(&h),
        Err(VerifyError::MalformedHeader("x-github-delivery"))
    );
    // The delivery id is not signed: another valid id passes (see the module's doc on replay).
    let h = with(request(SIGNATURE), "x-github-delivery", &"d".repeat(200));
    assert_eq!(check(&h).map(|v| v.delivery_id), Ok("d".repeat(200)));
}

#[test]
fn repeated_signature_header_is_malformed() {
    let h = headers(&[
        ("X-GitHub-Delivery", ID),
        ("X-Hub-Signature-256", PREVIOUS_SIGNATURE),
        ("X-Hub-Signature-256", SIGNATURE),
    ]);
    assert_eq!(
        check(&h),
        Err(VerifyError::MalformedHeader("x-hub-signature-256"))
    );
}

#[test]
fn wrong_secret_fails() {
    assert_eq!(
        verify(
            Scheme::Github,
            &[DOCS_SECRET],
            &request(SIGNATURE),
            BODY,
            NOW
        ),
        Err(VerifyError::NoValidSignature)
    );
    // The secret is used as typed: a `whsec_` secret is not base64-decoded for GitHub.
    assert_eq!(
        verify(
            Scheme::Github,
            &["airlock test secret "],
            &request(SIGNATURE),
            BODY,
            NOW
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
            verify(Scheme::Github, &secrets, &h, BODY, NOW),
            Ok(passes())
        );
    }
}

#[test]
fn tampered_body_fails() {
    let mut body = BODY.to_vec();
    body[3] ^= 0x20;
    assert_eq!(
        verify(Scheme::Github, &[SECRET], &request(SIGNATURE), &body, NOW),
        Err(VerifyError::NoValidSignature)
    );
    assert_eq!(
        verify(
            Scheme::Github,
            &[SECRET],
            &request(SIGNATURE),
            &BODY[1..],
            NOW
        ),
        Err(VerifyError::NoValidSignature)
    );
}

#[test]
fn stored_secret_faults_are_ours() {
    let h = request(SIGNATURE);
    assert_eq!(
        verify(Scheme::Github, &[""], &h, BODY, NOW),
        Err(VerifyError::BadSecret)
    );
    assert_eq!(
        verify(Scheme::Github, &["", SECRET], &h, BODY, NOW),
        Ok(passes())
    );
    assert_eq!(
        verify(Scheme::Github, &[], &h, BODY, NOW),
        Err(VerifyError::NoSecret)
    );
}

#[test]
fn secret_rules() {
    let check = |s: &str| check_secret(Scheme::Github, s);
    assert_eq!(check(DOCS_SECRET), Ok(()));
    assert_eq!(check(" spaces are fine "), Ok(()));
    assert_eq!(check("x"), Ok(()));
    assert_eq!(check(&"~".repeat(256)), Ok(()));
    assert_eq!(check(&crate::webhook::generate_secret()), Ok(()));
    assert_eq!(check(""), Err(SecretError::Empty));
    assert_eq!(
        check(&"a".repeat(257)),
        Err(SecretError::TooLong { max: 256 })
    );
    for bad in ["tab\there", "new\nline", "café", "nul\0"] {
        assert_eq!(check(bad), Err(SecretError::NotPrintable), "{bad:?}");
    }
    assert_eq!(
        sign(Scheme::Github, "", ID, NOW, BODY),
        Err(SecretError::Empty)
    );
}

#[test]
fn signatures_one_bit_off_fail() {
    for at in [0, 15, 31] {
        let mut bytes = hex::decode(&SIGNATURE["sha256=".len()..]).unwrap();
        bytes[at] ^= 0x01;
        let near = format!("sha256={}", hex::encode(bytes));
        assert_eq!(
            check(&request(&near)),
            Err(VerifyError::NoValidSignature),
            "{at}"
        );
    }
}
