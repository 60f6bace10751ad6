//! What is not one scheme's: scheme names, generated secrets, error reasons and messages.

use base64::Engine as _;

use super::to_map;
use crate::webhook::{
    MAX_DELIVERY_ID, Scheme, SecretError, TOLERANCE_SECS, VerifyError, check_secret,
    generate_secret, sign, verify,
};

#[test]
fn constants() {
    assert_eq!(TOLERANCE_SECS, 300);
    assert_eq!(MAX_DELIVERY_ID, 200);
}

#[test]
fn scheme_names_round_trip() {
    let expected = [
        (Scheme::StandardWebhooks, "standard_webhooks"),
        (Scheme::Github, "github"),
        (Scheme::Stripe, "stripe"),
    ];
    for (scheme, name) in expected {
        assert_eq!(scheme.as_str(), name);
        assert_eq!(Scheme::parse(name), Some(scheme));
        assert_eq!(
            serde_json::to_string(&scheme).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(
            serde_json::from_str::<Scheme>(&format!("\"{name}\"")).unwrap(),
            scheme
        );
    }
    for other in [
        "",
        "GitHub",
        "standard-webhooks",
        "StandardWebhooks",
        "stripe ",
    ] {
        assert_eq!(Scheme::parse(other), None, "{other:?}");
        assert!(serde_json::from_str::<Scheme>(&format!("\"{other}\"")).is_err());
    }
}

#[test]
fn generated_secrets_are_whsec_base64_of_32_random_bytes() {
    let a = generate_secret();
    let b = generate_secret();
    assert_ne!(a, b);
    for secret in [&a, &b] {
        let encoded = secret.strip_prefix("whsec_").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes.len(), 32);
        for scheme in Scheme::ALL {
            assert_eq!(check_secret(scheme, secret), Ok(()), "{scheme:?}");
        }
    }
}

#[test]
fn a_generated_secret_signs_and_verifies_for_every_scheme() {
    let secret = generate_secret();
    let body = br#"{"id":"evt_gen"}"#;
    for scheme in Scheme::ALL {
        let h = to_map(sign(scheme, &secret, "evt_gen", 1000, body).unwrap());
        let verified = verify(scheme, &[secret.as_str()], &h, body, 1000).unwrap();
        assert_eq!(verified.delivery_id, "evt_gen", "{scheme:?}");
        let other = generate_secret();
        assert_eq!(
            verify(scheme, &[other.as_str()], &h, body, 1000),
            Err(VerifyError::NoValidSignature),
            "{scheme:?}"
        );
    }
}

fn every_verify_error() -> Vec<VerifyError> {
    vec![
        VerifyError::MissingHeader("webhook-id"),
        VerifyError::MalformedHeader("stripe-signature"),
        VerifyError::BadTimestamp,
        VerifyError::TimestampOutOfTolerance,
        VerifyError::NoValidSignature,
        VerifyError::MissingDeliveryId,
        VerifyError::MalformedDeliveryId,
        VerifyError::NoSecret,
        VerifyError::BadSecret,
    ]
}

#[test]
fn reasons_are_stable_snake_case() {
    let reasons: Vec<&str> = every_verify_error()
        .iter()
        .map(VerifyError::reason)
        .collect();
    assert_eq!(
        reasons,
        [
            "missing_header",
            "malformed_header",
            "bad_timestamp",
            "timestamp_out_of_tolerance",
            "no_valid_signature",
            "missing_delivery_id",
            "malformed_delivery_id",
            "no_secret",
            "bad_secret",
        ]
    );
}

#[test]
fn only_secret_problems_are_server_faults() {
    for err in every_verify_error() {
        let ours = matches!(err, VerifyError::NoSecret | VerifyError::BadSecret);
        assert_eq!(err.is_server_fault(), ours, "{err:?}");
    }
}

#[test]
fn messages_name_the_header_and_nothing_secret() {
    assert_eq!(
        VerifyError::MissingHeader("webhook-id").to_string(),
        "the webhook-id header is missing"
    );
    assert_eq!(
        VerifyError::MalformedHeader("stripe-signature").to_string(),
        "the stripe-signature header is malformed"
    );
    // Failures caused by a given secret and signature echo neither.
    let secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let signature = "v1,MdRk11rdSMqVW/aR86ziC3IMluwuBvPI4xoU0GBFF0A=";
    let h = super::headers(&[
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", "1000"),
        ("webhook-signature", signature),
    ]);
    let mut messages: Vec<String> = every_verify_error().iter().map(|e| e.to_string()).collect();
    for secrets in [[secret], ["whsec_broken secret"]] {
        let err = verify(Scheme::StandardWebhooks, &secrets, &h, b"{}", 1000).unwrap_err();
        messages.push(err.to_string());
    }
    let secret_errors = [
        SecretError::Empty,
        SecretError::TooLong { max: 256 },
        SecretError::TooShort { min: 7 },
        SecretError::NotPrintable,
        SecretError::MissingPrefix,
        SecretError::InvalidBase64,
        SecretError::WrongLength { len: 16 },
    ];
    messages.extend(secret_errors.iter().map(|e| e.to_string()));
    messages.push(
        check_secret(Scheme::StandardWebhooks, "whsec_s3cr3t!")
            .unwrap_err()
            .to_string(),
    );
    for message in &messages {
        assert!(!message.is_empty());
        for leak in ["MdRk11", "AAECAw", "broken", "s3cr3t"] {
            assert!(!message.contains(leak), "{message:?} contains {leak:?}");
        }
    }
}
